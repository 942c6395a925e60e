"""A deterministic judge of 64x64 scenes: which shape of which colour sits in each of the 9 cells.

Scenes (``omniflex.data.scenes``) place at most one object in each cell of a 3x3 grid, so a scene
is fully described, up to size, position jitter and rotation, by 9 cell labels: empty, or a
(kind, colour) pair. The judge is a small CNN that predicts those 9 labels from pixels. It checks
that an image tokenizer's reconstructions, and later the omni model's generated images, show the
right shapes in the right colours in the right number: ``matches(image, scene)`` is true only
when all 9 cells are right.

It does not judge size or the exact place inside a cell. It is trained once
(``train_scene_judge(out)``), on rendered scenes of every (colour, kind) pair, including those
held out from the omni model's training data, with flips/transposes (cell labels permuted to
match) and mild blur, noise and gain, so that a slightly soft image of a correct scene still
passes. It ships as flex16 weights in ``omniflex/assets/scene_judge/``; its accuracy
on held-out original scenes is in the shipped metadata (99.8% of 500 scenes, 99.98% of cells).
Small stars, hexagons and circles (radius 6 px) are the hard cases; a judge far below 99% scene
accuracy on originals would not be trustworthy.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F
from tqdm import tqdm

from omniflex.common.folder import load_folder, save_folder
from omniflex.common.schedule import cosine_decay
from omniflex.data.scenes import (
    COLS,
    ROWS,
    SCENE_COLOURS,
    SCENE_KINDS,
    Scene,
    render_scene,
    sample_scene,
)
from omniflex.flex.serialize import pack_state_dict, unpack_state_dict
from omniflex.tokenizers.image_train import held_out_scenes

__all__ = [
    "JUDGE_ASSETS",
    "CellLabel",
    "SceneJudge",
    "SceneJudgeConfig",
    "judge_accuracy",
    "scene_cells",
    "train_scene_judge",
]

JUDGE_ASSETS = Path(__file__).resolve().parent.parent / "assets" / "scene_judge"
IMAGE_SIZE = 64
CellLabel = tuple[str, str] | None  # (kind, colour), or None for an empty cell

_KIND_CLASSES = ("empty", *SCENE_KINDS)  # 9
_TRAIN_STREAM = 0x5CE7_1D6E  # seed stream of the judge's training scenes


@dataclass(frozen=True)
class SceneJudgeConfig:
    """Conv widths at 64x64, 32x32 and 16x16; ``hidden`` is the per-cell head's width."""

    channels: tuple[int, int, int] = (16, 48, 96)
    hidden: int = 128

    def __post_init__(self) -> None:
        if isinstance(self.channels, list):
            object.__setattr__(self, "channels", tuple(self.channels))
        if len(self.channels) != 3 or any(c < 1 for c in self.channels) or self.hidden < 1:
            raise ValueError(
                f"channels must be 3 widths >= 1 and hidden >= 1, got {self.channels}, "
                f"{self.hidden}"
            )


def scene_cells(scene: Scene) -> list[CellLabel]:
    """Ground truth: 9 labels, row-major from top left, ``(kind, colour)`` or ``None``."""
    cells: list[CellLabel] = [None] * 9
    for o in scene.objects:
        cells[ROWS.index(o.row) * 3 + COLS.index(o.col)] = (o.kind, o.colour)
    return cells


def _cell_targets(scenes: Sequence[Scene]) -> tuple[torch.Tensor, torch.Tensor]:
    """Kind classes ``(N, 3, 3)`` (0 = empty) and colour classes ``(N, 3, 3)`` (-1 = empty)."""
    kinds = torch.zeros(len(scenes), 9, dtype=torch.long)
    colours = torch.full((len(scenes), 9), -1, dtype=torch.long)
    for i, scene in enumerate(scenes):
        for c, label in enumerate(scene_cells(scene)):
            if label is not None:
                kinds[i, c] = _KIND_CLASSES.index(label[0])
                colours[i, c] = SCENE_COLOURS.index(label[1])
    return kinds.view(-1, 3, 3), colours.view(-1, 3, 3)


def _conv(c_in: int, c_out: int, stride: int = 1) -> list[nn.Module]:
    """3x3 conv, batch norm, SiLU."""
    return [
        nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(c_out),
        nn.SiLU(),
    ]


class SceneJudge(nn.Module):
    """``(B, 3, 64, 64)`` images in [0, 1] -> per-cell kind and colour logits."""

    def __init__(self, config: SceneJudgeConfig | None = None) -> None:
        super().__init__()
        self.config = config or SceneJudgeConfig()
        self.metadata: dict[str, Any] = {}
        c1, c2, c3 = self.config.channels
        self.features = nn.Sequential(
            *_conv(3, c1), *_conv(c1, c1),  # 64x64: small shapes need full-resolution detail
            *_conv(c1, c2, stride=2), *_conv(c2, c2), *_conv(c2, c2),  # 32x32
            *_conv(c2, c3, stride=2), *_conv(c3, c3), *_conv(c3, c3),  # 16x16
        )  # fmt: skip
        self.head = nn.Sequential(
            nn.Conv2d(2 * c3, self.config.hidden, 1),
            nn.SiLU(),
            nn.Conv2d(self.config.hidden, len(_KIND_CLASSES) + len(SCENE_COLOURS), 1),
        )

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Returns kind logits ``(B, 9, 3, 3)`` (class 0 = empty) and colour logits
        ``(B, 7, 3, 3)``."""
        h = self.features(x * 2 - 1)  # (B, C, 16, 16)
        # Mean and max over each cell's area: the mean sees the whole shape, the max its colour.
        pooled = torch.cat([F.adaptive_avg_pool2d(h, 3), F.adaptive_max_pool2d(h, 3)], 1)
        logits = self.head(pooled)  # (B, 9 + 7, 3, 3)
        return logits[:, : len(_KIND_CLASSES)], logits[:, len(_KIND_CLASSES) :]

    # ------------------------------------------------------------------ judging
    @torch.no_grad()
    def predict(self, images: np.ndarray | Sequence[np.ndarray]) -> list[list[CellLabel]]:
        """uint8 ``(64, 64, 3)`` or ``(B, 64, 64, 3)`` -> per image, 9 cell labels (row-major
        from top left): ``(kind, colour)`` or ``None``."""
        x = _to_tensor(images)
        out: list[list[CellLabel]] = []
        was_training = self.training
        self.eval()  # batch norm must use its running statistics: judging is deterministic
        for chunk in x.split(128):
            kind_logits, colour_logits = self(chunk)
            kinds = kind_logits.argmax(1).flatten(1).tolist()  # (b, 9)
            colours = colour_logits.argmax(1).flatten(1).tolist()
            for k_row, c_row in zip(kinds, colours, strict=True):
                out.append(
                    [
                        None if k == 0 else (_KIND_CLASSES[k], SCENE_COLOURS[c])
                        for k, c in zip(k_row, c_row, strict=True)
                    ]
                )
        self.train(was_training)
        return out

    def matches(self, image: np.ndarray, scene: Scene) -> bool:
        """True when every cell of ``image`` holds ``scene``'s object (kind and colour), or is
        empty where ``scene``'s is: shapes, colours and count all right."""
        if getattr(image, "ndim", None) != 3:
            raise ValueError(
                f"matches() takes one (64, 64, 3) image, got shape {getattr(image, 'shape', '?')}; "
                "use match_rate() for a batch"
            )
        return self.predict(image)[0] == scene_cells(scene)

    def match_rate(self, images: np.ndarray, scenes: Sequence[Scene]) -> float:
        """Share of ``images`` ``(B, 64, 64, 3)`` that match their ``scenes``."""
        if len(images) != len(scenes):
            raise ValueError(f"{len(images)} images but {len(scenes)} scenes")
        if not len(scenes):
            raise ValueError("match_rate needs at least one image")
        predicted = self.predict(images)
        return sum(p == scene_cells(s) for p, s in zip(predicted, scenes, strict=True)) / len(
            scenes
        )

    # ------------------------------------------------------------------ files
    def save(self, directory: str | Path) -> Path:
        """Write ``config.json`` and flex16 ``model.safetensors`` into ``directory``."""
        state = {k: v.detach().cpu() for k, v in self.state_dict().items()}
        return save_folder(
            directory,
            {"config": dataclasses.asdict(self.config), "metadata": self.metadata},
            pack_state_dict(state),
            metadata={"format": "flex16+5"},
        )

    @classmethod
    def load(cls, directory: str | Path | None = None) -> SceneJudge:
        """Read a judge folder; by default the shipped one (``omniflex/assets/scene_judge``)."""
        directory = Path(directory) if directory is not None else JUDGE_ASSETS
        data, tensors = load_folder(
            directory,
            what="a scene judge",
            fix="train one with omniflex.eval.scene_judge.train_scene_judge",
        )
        judge = cls(SceneJudgeConfig(**data["config"]))
        judge.metadata = data.get("metadata", {})
        judge.load_state_dict(unpack_state_dict(tensors))
        return judge.eval()


def _to_tensor(images: np.ndarray | Sequence[np.ndarray]) -> torch.Tensor:
    """uint8 images -> ``(B, 3, 64, 64)`` float in [0, 1]."""
    if isinstance(images, (list, tuple)):
        images = np.stack(images) if images else np.zeros((0, IMAGE_SIZE, IMAGE_SIZE, 3), np.uint8)
    if not isinstance(images, np.ndarray) or images.dtype != np.uint8:
        raise ValueError(
            f"the scene judge takes uint8 RGB arrays, got {type(images).__name__} "
            f"{getattr(images, 'dtype', '')}"
        )
    if images.ndim == 3:
        images = images[None]
    if images.ndim != 4 or images.shape[1:] != (IMAGE_SIZE, IMAGE_SIZE, 3):
        raise ValueError(
            f"the scene judge takes (64, 64, 3) or (B, 64, 64, 3) images, got {images.shape}"
        )
    writable = np.array(images, copy=True)  # torch warns on read-only arrays
    return torch.from_numpy(writable).permute(0, 3, 1, 2).float() / 255


# ---------------------------------------------------------------------- training


def _judge_scenes(stream: int, n: int, seed: int) -> list[Scene]:
    """Scenes of every (colour, kind) pair: half drawn the held-out way, up to 6 objects."""
    scenes = []
    for i in range(n):
        rng = np.random.default_rng([stream, seed, i])
        scenes.append(sample_scene(rng, held_out=bool(i % 2), max_objects=4 + 2 * (i % 3 == 0)))
    return scenes


def _dihedral(
    x: torch.Tensor, kinds: torch.Tensor, colours: torch.Tensor, k: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """View ``k`` (0..7: bit 0 flips left-right, bit 1 up-down, bit 2 transposes) of images
    ``(B, 3, 64, 64)`` and of their cell labels ``(B, 3, 3)`` alike."""
    for bit, dims in ((1, (-1,)), (2, (-2,))):
        if k & bit:
            x, kinds, colours = x.flip(dims), kinds.flip(dims), colours.flip(dims)
    if k & 4:
        x, kinds, colours = x.transpose(-1, -2), kinds.transpose(-1, -2), colours.transpose(-1, -2)
    return x, kinds.contiguous(), colours.contiguous()


def _augment(
    x: torch.Tensor, kinds: torch.Tensor, colours: torch.Tensor, gen: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """A random view (``_dihedral``), then per image: blur (half of them, sigma < 1.2), gain
    within 6% and gaussian noise up to std 4/255."""
    k = int(torch.randint(0, 8, (1,), generator=gen))
    x, kinds, colours = _dihedral(x, kinds, colours, k)
    b = len(x)
    sigma = torch.rand(b, generator=gen) * 1.2 * (torch.rand(b, generator=gen) < 0.5)
    x = _blur(x, sigma)
    gain = 1 + 0.06 * (torch.rand(b, 1, 1, 1, generator=gen) * 2 - 1)
    noise = torch.randn(x.shape, generator=gen) * (4 / 255) * torch.rand(b, 1, 1, 1, generator=gen)
    return (x * gain + noise).clamp(0, 1), kinds, colours


def _blur(x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """Gaussian blur of each image ``(B, 3, H, W)`` with its own ``sigma`` (0: unchanged)."""
    t = torch.arange(-2, 3, dtype=torch.float32)
    s = sigma.clamp_min(1e-3)[:, None]
    k1 = torch.exp(-(t[None] ** 2) / (2 * s**2))
    k1 = k1 / k1.sum(1, keepdim=True)  # (B, 5)
    b, c, h, w = x.shape
    weight = (k1[:, :, None] * k1[:, None, :]).repeat_interleave(c, 0)[:, None]  # (B*C, 1, 5, 5)
    y = F.conv2d(F.pad(x.reshape(1, b * c, h, w), (2, 2, 2, 2), mode="replicate"), weight,
                 groups=b * c)  # fmt: skip
    return y.view(b, c, h, w)


def judge_accuracy(judge: SceneJudge, scenes: Sequence[Scene]) -> dict[str, float]:
    """Scene match rate and per-cell accuracy of ``judge`` on the original renderings."""
    images = np.stack([render_scene(s) for s in scenes])
    predicted = judge.predict(images)
    truth = [scene_cells(s) for s in scenes]
    cells = sum(
        p == t for pr, tr in zip(predicted, truth, strict=True) for p, t in zip(pr, tr, strict=True)
    )
    return {
        "scene_match_rate": sum(p == t for p, t in zip(predicted, truth, strict=True))
        / len(scenes),
        "cell_accuracy": cells / (9 * len(scenes)),
    }


def train_scene_judge(
    out: str | Path | None = None,
    *,
    config: SceneJudgeConfig | None = None,
    n_scenes: int = 6000,
    steps: int = 2000,
    batch_size: int = 32,
    lr: float = 2e-3,
    threads: int = 1,
    seed: int = 0,
    test_scenes: Sequence[Scene] | None = None,
    progress: bool = True,
) -> SceneJudge:
    """Train a ``SceneJudge`` on ``n_scenes`` rendered scenes; save it to ``out`` (unless None).

    Training scenes come from a seed stream of their own; ``test_scenes`` (default: the first
    500 of the image tokenizer's held-out test scenes) give the accuracy written into the
    metadata, measured after the flex16 round trip that saving applies.
    """
    if steps < 1 or batch_size < 1 or n_scenes < 1 or threads < 1 or lr <= 0:
        raise ValueError(
            f"need steps, batch_size, n_scenes, threads >= 1 and lr > 0; got steps={steps}, "
            f"batch_size={batch_size}, n_scenes={n_scenes}, threads={threads}, lr={lr}"
        )
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        start = time.perf_counter()
        torch.manual_seed(seed)
        gen = torch.Generator().manual_seed(seed)
        scenes = _judge_scenes(_TRAIN_STREAM, n_scenes, seed)
        images = np.stack(
            [render_scene(s) for s in tqdm(scenes, desc="render scenes", disable=not progress)]
        )
        x_all = torch.from_numpy(images).permute(0, 3, 1, 2).contiguous()  # (N, 3, 64, 64) u8
        kinds_all, colours_all = _cell_targets(scenes)  # (N, 3, 3) each

        judge = SceneJudge(config)
        opt = torch.optim.AdamW(judge.parameters(), lr=lr, weight_decay=1e-4)
        judge.train()
        bar = tqdm(range(steps), desc="scene judge", disable=not progress)
        for step in bar:
            frac = step / steps
            for group in opt.param_groups:
                warm = min(1.0, (step + 1) / 100)
                group["lr"] = lr * warm * cosine_decay(frac, end=0.01)
            idx = torch.randint(0, len(x_all), (batch_size,), generator=gen)
            x, kinds, colours = _augment(
                x_all[idx].float() / 255, kinds_all[idx], colours_all[idx], gen
            )
            kind_logits, colour_logits = judge(x)
            loss = F.cross_entropy(kind_logits, kinds) + F.cross_entropy(
                colour_logits, colours, ignore_index=-1
            )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if (step + 1) % 50 == 0:
                bar.set_postfix(loss=f"{loss.item():.4f}")
        seconds = time.perf_counter() - start

        judge.eval()
        # Measure what ships: the flex16 weights, not the float32 ones.
        judge.load_state_dict(unpack_state_dict(pack_state_dict(judge.state_dict())))
        test = list(test_scenes) if test_scenes is not None else held_out_scenes(500)
        accuracy = judge_accuracy(judge, test)
        judge.metadata = {
            "training": {
                "n_scenes": n_scenes,
                "steps": steps,
                "batch_size": batch_size,
                "lr": lr,
                "seed": seed,
                "threads": threads,
                "seconds": round(seconds, 1),
            },
            "test": {"scenes": len(test), **{k: round(v, 4) for k, v in accuracy.items()}},
        }
        if out is not None:
            judge.save(out)
        return judge
    finally:
        torch.set_num_threads(previous_threads)
