"""Stage 0 of an omni model: its speech encoder pretrained to spell what it hears (CTC).

Trained end to end with everything else, the omni model learned the ASR clips it saw by heart
and not to hear: a clip's transcript is a handful of loss tokens at the end of a long row, so
the encoder under it gets a sparse signal from few clips. This stage trains the same encoder
(``omniflex.model.encoders.SpeechEncoder``, in the model's precision) on the heard clips of a
token cache alone, with a connectionist temporal classification loss over letters at every
40 ms row: many clips a step at a small fraction of the model's cost, and a dense signal. The
letter head is thrown away; the encoder's weights and Autoflex states start the next stage
(``TrainConfig.init_speech_from``), where it keeps training with the whole model.

A saved stage-0 folder holds ``config.json`` (the model config it fits, the training record and
its validation scores), ``model.safetensors`` and ``autoflex.json``, keyed as in the omni model
(``encoders.speech.*``).
"""

from __future__ import annotations

import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from omniflex.common.files import read_json
from omniflex.common.folder import save_folder
from omniflex.common.schedule import warmup_cosine
from omniflex.flex import FlexConfig, convert_to_flex
from omniflex.model.config import ModelConfig
from omniflex.model.encoders import SpeechEncoder
from omniflex.model.mel_augment import augment_rows
from omniflex.model.pretrained import AUTOFLEX_FILE, model_folder_state
from omniflex.model.token_cache import read_sidecar
from omniflex.tokenizers import load_tokenizer, special
from omniflex.train.optim import build_optimizer

__all__ = [
    "LETTERS",
    "HeardClips",
    "SpeechCTC",
    "load_speech_encoder_state",
    "pretrain_speech_encoder",
]

#: The CTC alphabet; id 0 is the blank, letter ``i`` is id ``i + 1``.
LETTERS = " abcdefghijklmnopqrstuvwxyz'"
_LETTER_ID = {c: i + 1 for i, c in enumerate(LETTERS)}
_PREFIX = "encoders.speech."
_HEARD_TASKS = ("asr", "speech_asr")


def letters_only(text: str) -> str:
    """Lower case, letters, apostrophes and single spaces only: what the encoder spells."""
    return " ".join(re.sub(r"[^a-z' ]+", " ", text.lower().replace("\u2019", "'")).split())


def spell(text: str) -> list[int]:
    """Text -> CTC target ids (``letters_only``, each letter ``LETTERS.index + 1``)."""
    return [_LETTER_ID[c] for c in letters_only(text)]


@dataclass
class HeardClips:
    """The heard clips of a token cache: each clip's log-mel rows (a view of its ``mel.npy``)
    and the transcript its document answers with."""

    rows: np.ndarray  # (M, 320) float16, memory-mapped
    spans: list[tuple[int, int]]  # clip i is rows[start:stop]
    texts: list[str]

    @classmethod
    def from_cache(
        cls, path: str | Path, tasks: tuple[str, ...] = _HEARD_TASKS, limit: int | None = None
    ) -> HeardClips:
        """The clips of ``path``'s documents of ``tasks`` (a clip: the first run of
        ``<|mel|>`` placeholders; its transcript: the answer's text tokens)."""
        path = Path(path)
        sidecar = read_sidecar(path)
        if not (path / "mel_offsets.npy").is_file() or "doc_tasks" not in sidecar:
            raise ValueError(
                f"token cache {path} has no log-mel rows or no task sidecar; write it with "
                "`omniflex data tokenize` (input features are the default)"
            )
        wanted = {i for i, t in enumerate(sidecar["tasks"]) if t in tasks}
        if not wanted:
            raise ValueError(
                f"token cache {path} holds no documents of tasks {list(tasks)}; its tasks: "
                f"{', '.join(sidecar['tasks'])}"
            )
        ids = np.load(path / "ids.npy", mmap_mode="r")
        mask = np.load(path / "loss_mask.npy", mmap_mode="r")
        offsets = np.load(path / "offsets.npy")
        mel_offsets = np.load(path / "mel_offsets.npy")
        text = load_tokenizer("text")
        mel_id = special.special_index(special.MEL)
        spans: list[tuple[int, int]] = []
        texts: list[str] = []
        for d, task in enumerate(sidecar["doc_tasks"]):
            if task not in wanted:
                continue
            doc = np.asarray(ids[offsets[d] : offsets[d + 1]])
            is_mel = doc == mel_id
            if not is_mel.any():
                continue
            first = int(np.argmax(is_mel))
            run = int(np.argmin(is_mel[first:])) if not is_mel[first:].all() else len(doc) - first
            answer = doc[np.asarray(mask[offsets[d] : offsets[d + 1]]).astype(bool)]
            answer = answer[(answer >= special.NUM_SPECIAL) & (answer < text.vocab_size)]
            transcript = text.decode(answer.tolist())
            if not spell(transcript):
                continue
            start = int(mel_offsets[d])  # the first run's rows come first in the document
            spans.append((start, start + run))
            texts.append(transcript)
            if limit is not None and len(spans) >= limit:
                break
        return cls(np.load(path / "mel.npy", mmap_mode="r"), spans, texts)

    def __len__(self) -> int:
        return len(self.spans)

    def batch(self, indices: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, list[int]]:
        """Rows of clips ``indices`` one after another, the mask of each clip's first row, and
        each clip's row count."""
        parts = [
            np.asarray(self.rows[a:b], dtype=np.float32)
            for a, b in (self.spans[i] for i in indices)
        ]
        lengths = [len(p) for p in parts]
        starts = np.zeros(sum(lengths), dtype=bool)
        starts[np.cumsum([0, *lengths[:-1]])] = True
        return torch.from_numpy(np.concatenate(parts)), torch.from_numpy(starts), lengths


class SpeechCTC(nn.Module):
    """An omni model's speech encoder (at the same module path, ``encoders.speech``) under a
    letter head, in the model's precision. The head spells ``upsample`` CTC frames per 40 ms
    row: espeak-ng's fast voices say up to 20 letters a second, and CTC needs a frame per
    letter plus a blank between doubled ones (25 frames a second cannot spell them)."""

    def __init__(self, config: ModelConfig, upsample: int = 2) -> None:
        super().__init__()
        if upsample < 1:
            raise ValueError(f"SpeechCTC needs upsample >= 1, got {upsample}")
        self.upsample = upsample
        self.encoders = nn.Module()
        self.encoders.speech = SpeechEncoder(
            config.dim, layers=config.speech_layers, width=config.speech_width,
            kernel=config.speech_kernel, ffn=config.speech_ffn,
        )  # fmt: skip
        self.letters = nn.Linear(config.dim, upsample * (len(LETTERS) + 1))
        if config.precision.startswith("flex"):
            convert_to_flex(self, config=FlexConfig.from_recipe_name(config.precision))

    def forward(self, rows: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        """``(M, 320)`` rows -> ``(M * upsample, letters + 1)`` log-probabilities, the
        frames of row ``r`` at ``r * upsample ...``."""
        logits = self.letters(self.encoders.speech.project(rows, starts)).float()
        return F.log_softmax(logits.reshape(-1, len(LETTERS) + 1), -1)

    def encoder_state(self) -> dict[str, Any]:
        return {k: v for k, v in self.state_dict().items() if k.startswith(_PREFIX)}


def _padded(log_probs: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """Flat ``(M, C)`` -> ``(T, B, C)`` for ``ctc_loss``."""
    parts = torch.split(log_probs, lengths)
    return nn.utils.rnn.pad_sequence(parts)  # (T, B, C)


def greedy_spelling(log_probs: torch.Tensor) -> str:
    """Best path of one clip's ``(T, C)`` log-probabilities: repeats merged, blanks dropped."""
    best = log_probs.argmax(-1).tolist()
    out, last = [], 0
    for k in best:
        if k != last and k != 0:
            out.append(LETTERS[k - 1])
        last = k
    return " ".join("".join(out).split())


@torch.no_grad()
def score(model: SpeechCTC, clips: HeardClips, batch_size: int = 64) -> dict[str, Any]:
    """Greedy spelling of every clip: word and letter error rates against the transcripts."""
    import jiwer

    model.eval()
    hyps: list[str] = []
    for at in range(0, len(clips), batch_size):
        rows, starts, lengths = clips.batch(np.arange(at, min(at + batch_size, len(clips))))
        for part in torch.split(model(rows, starts), [n * model.upsample for n in lengths]):
            hyps.append(greedy_spelling(part))
    model.train()
    refs = [letters_only(t) for t in clips.texts]
    return {
        "wer": round(float(jiwer.wer(refs, hyps)), 4),
        "cer": round(float(jiwer.cer(refs, hyps)), 4),
        "clips": len(clips),
        "examples": [[r, h] for r, h in zip(refs[:3], hyps[:3], strict=True)],
    }


def pretrain_speech_encoder(
    config: ModelConfig,
    train_cache: str | Path,
    val_cache: str | Path,
    out: str | Path,
    *,
    steps: int = 2000,
    batch_size: int = 48,
    lr: float = 2e-3,
    warmup: int = 100,
    val_every: int = 250,
    val_clips: int = 200,
    upsample: int = 2,
    augment: bool = True,
    seed: int = 0,
    threads: int | None = None,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``config``'s speech encoder with CTC on the heard clips of ``train_cache`` (ASR
    and speech-as-ASR documents), score it on ``val_cache``'s ASR clips (held-out voices), and
    save the encoder with the best validation WER to ``out``. Returns the training record.

    ``upsample``: CTC frames the letter head spells per row (``SpeechCTC``). ``augment``: each
    training batch seen through ``omniflex.model.mel_augment.augment_rows`` (mel-axis warp,
    band and frame masks), which is what lets it hear voices it never trained on."""
    if config.speech_layers < 1:
        raise ValueError(
            "pretraining the speech encoder needs a model with speech_layers >= 1 (a single "
            f"Linear per row has nothing to learn alone); got speech_layers={config.speech_layers}"
        )
    if threads:
        torch.set_num_threads(threads)
    log = (lambda msg: print(msg, file=sys.stderr, flush=True)) if progress else (lambda _: None)
    clips = HeardClips.from_cache(train_cache)
    val = HeardClips.from_cache(val_cache, tasks=("asr",), limit=val_clips)
    hours = sum(b - a for a, b in clips.spans) * 0.04 / 3600
    log(f"stage 0: {len(clips)} heard clips ({hours:.1f} h) from {train_cache}; "
        f"{len(val)} validation clips from {val_cache}")  # fmt: skip
    torch.manual_seed(seed)
    model = SpeechCTC(config, upsample=upsample)
    gen = torch.Generator().manual_seed(seed)
    optimizer = build_optimizer(model, lr=lr, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.01)
    rng = np.random.default_rng(seed)
    targets = [torch.tensor(spell(t)) for t in clips.texts]
    history: list[dict[str, Any]] = []
    best: dict[str, Any] | None = None
    best_state: dict[str, Any] = {}
    start = time.perf_counter()
    losses: list[float] = []
    for step in range(steps):
        for group in optimizer.param_groups:
            group["lr"] = warmup_cosine(step, lr=lr, warmup=warmup, steps=steps, min_ratio=0.05)
        pick = rng.choice(len(clips), size=min(batch_size, len(clips)), replace=False)
        rows, starts, lengths = clips.batch(pick)
        if augment:
            rows = augment_rows(rows, lengths, gen)
        log_probs = _padded(model(rows, starts), [n * upsample for n in lengths])
        target = [targets[i] for i in pick]
        loss = F.ctc_loss(
            log_probs, torch.cat(target), torch.tensor(lengths) * upsample,
            torch.tensor([len(t) for t in target]), zero_infinity=True,
        )  # fmt: skip
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        losses.append(loss.item())
        if (step + 1) % val_every == 0 or step + 1 == steps:
            scores = score(model, val)
            entry = {"step": step + 1, "loss": round(float(np.mean(losses)), 4),
                     "val_wer": scores["wer"], "val_cer": scores["cer"],
                     "seconds": round(time.perf_counter() - start, 1)}  # fmt: skip
            losses = []
            history.append(entry)
            log(f"step {step + 1}/{steps}  ctc {entry['loss']:.3f}  val WER {scores['wer']:.3f} "
                f"CER {scores['cer']:.3f}  {entry['seconds']:.0f} s  "
                f"e.g. {scores['examples'][0]}")  # fmt: skip
            if best is None or scores["wer"] < best["val"]["wer"]:
                best = {"step": step + 1, "val": scores}
                best_state = {k: (v.detach().clone() if isinstance(v, torch.Tensor) else v)
                              for k, v in model.encoder_state().items()}  # fmt: skip
    assert best is not None
    record = {
        "model": config.to_dict(),
        "training": {
            "train_cache": str(train_cache),
            "val_cache": str(val_cache),
            "clips": len(clips),
            "hours": round(hours, 2),
            "steps": steps,
            "batch_size": batch_size,
            "lr": lr,
            "upsample": upsample,
            "augment": augment,
            "warmup": warmup,
            "seed": seed,
            "seconds": round(time.perf_counter() - start, 1),
            "history": history,
            "best_step": best["step"],
        },
        "val": best["val"],
    }
    tensors = {
        k: v.detach().cpu().clone() for k, v in best_state.items() if isinstance(v, torch.Tensor)
    }
    extra = {k: v for k, v in best_state.items() if not isinstance(v, torch.Tensor)}
    save_folder(out, record, tensors, extra={AUTOFLEX_FILE: extra}, indent=1, sort_keys=False)
    log(
        f"saved the speech encoder of step {best['step']} (val WER "
        f"{best['val']['wer']:.3f}) to {out}"
    )
    return record


def load_speech_encoder_state(folder: str | Path, config: ModelConfig) -> dict[str, Any]:
    """The ``encoders.speech.*`` state a stage-0 folder holds, checked against ``config``."""
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(
            f"init_speech_from={str(folder)!r} is not a stage-0 folder (no config.json); make "
            "one with `omniflex train speech-encoder`"
        )
    saved = ModelConfig.from_dict(read_json(folder / "config.json")["model"])
    keys = ("dim", "precision", "speech_layers", "speech_width", "speech_kernel", "speech_ffn")
    diffs = {k: (getattr(saved, k), getattr(config, k)) for k in keys
             if getattr(saved, k) != getattr(config, k)}  # fmt: skip
    if diffs:
        raise ValueError(
            f"the speech encoder in {folder} was trained for another model (saved vs this "
            f"recipe: {diffs}); pretrain it with this recipe's model"
        )
    return model_folder_state(folder)
