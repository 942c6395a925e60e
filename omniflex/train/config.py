"""``TrainConfig``: everything one training run needs, as one frozen dataclass with YAML I/O.

A recipe (``recipes/*.yaml``) is a ``TrainConfig`` written down; ``load_recipe`` reads one and
applies ``key=value`` overrides. Values from YAML or the command line are coerced to each field's
type here (YAML reads ``3e-4`` as a string, for instance), and every check raises ``ValueError``
naming the field, what it got, and what it accepts.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from omniflex.common.configs import (
    coerce_fields,
    config_from_dict,
    dump_yaml,
    field_names,
    load_yaml,
)
from omniflex.train.dataset import Packing

__all__ = ["PRECISIONS", "TrainConfig"]

# The model's precisions (omniflex.model.config.PRECISIONS, kept in step by a test): flex16+5
# is the paper's (weights only as int16 mantissas + exponent), flex16+5-master keeps float32
# master weights, bfloat16 emulates bfloat16 rounding at the places flex quantises.
PRECISIONS = ("flex16+5", "flex16+5-master", "float32", "bfloat16")

Parallel = Literal["ddp", "fsdp"]
Device = Literal["auto", "cpu", "cuda"]


@dataclass(frozen=True)
class TrainConfig:
    """One training run.

    Model:
        model: a ``ModelConfig`` size name (``ModelConfig.from_name``), e.g. ``"tiny"``.
        model_overrides: fields of that ``ModelConfig`` to replace, e.g. ``{"n_layer": 2}``.
        precision: ``"flex16+5"`` (the paper: weights, activations, gradients and optimizer
            state in Flexpoint), another flex recipe, ``"float32"`` or ``"bfloat16"``.

    Data (token caches written by ``write_token_cache``):
        train_data, val_data: cache folders; ``val_data`` may be empty (no validation).
        seq_len: tokens per training sequence (each block holds ``seq_len + 1`` tokens).
        packing: ``"stream"`` (documents run on across blocks, attention across them) or
            ``"documents"`` (whole documents only, block-diagonal attention, positions
            restarting per document; see ``omniflex.train.dataset``).
        task_weights: loss weight per task (``{"asr": 4, "tts": 0.5}``; others 1): a target
            counts by its document's task. The trainer logs each task's and modality's share
            of the loss (``omniflex.train.balance``).
        task_rates: how often each task's documents are visited per epoch (others 1; needs
            ``packing: documents``): ``{"asr": 3, "text_to_image": 0.25}`` moves compute
            from drawing pictures to hearing, which a loss weight cannot.

    Optimisation:
        batch_size: *global* sequences per optimizer step, over all ranks and micro-steps, so
            a recipe means the same thing on 1 CPU or 8 GPUs.
        grad_accum: micro-steps per optimizer step; each rank runs micro-batches of
            ``batch_size // (grad_accum * world_size)`` sequences.
        lr, min_lr, warmup, steps: cosine schedule (see ``CosineSchedule``); ``steps`` counts
            optimizer steps.
        weight_decay, betas, eps: AdamW (decoupled decay on matrices only).
        grad_clip: clip the global gradient norm to this; ``0`` turns clipping off.

    Bookkeeping:
        val_every, val_batches: validate every ``val_every`` steps on ``val_batches`` batches
            of ``batch_size`` sequences (``val_every=0``: only at the end).
        ckpt_every, keep_last: checkpoint every ``ckpt_every`` steps (and at the end), keeping
            the newest ``keep_last``.
        log_every: write a metrics record every ``log_every`` steps.
        seed: model initialisation and data order.
        init_from: start the weights (and their Autoflex states) from another run's latest
            checkpoint (a run folder, or one ``checkpoints/step_*``) of the same model: a
            training *stage*. Optimizer, step and schedule start fresh; empty: random weights.
            A model folder (``omniflex model export``'s, or a shipped name such as ``tiny``)
            works too.
        init_speech_from: a stage-0 folder (``omniflex train speech-encoder``): the speech
            encoder's weights and Autoflex states come from it, the rest from ``init_from``,
            whose model may then differ in the speech encoder's fields only.
        out_dir: run folder (``metrics.jsonl``, ``tb/``, ``checkpoints/``, ``config.yaml``).

    Runtime:
        device: ``"auto"`` (CUDA when there is one), ``"cpu"`` or ``"cuda"``.
        parallel: ``"ddp"`` or ``"fsdp"`` (float32/bfloat16 models) with several processes.
        threads: ``torch.set_num_threads`` per process; ``0`` leaves torch's default.
        tensorboard, progress: write TensorBoard event files; show a progress bar (rank 0).
    """

    model: str = "tiny"
    model_overrides: dict[str, Any] = field(default_factory=dict)
    precision: str = "flex16+5"
    train_data: str = "data/tiny/tokens/train"
    val_data: str = "data/tiny/tokens/val"
    seq_len: int = 256
    packing: Packing = "stream"
    task_weights: dict[str, float] = field(default_factory=dict)
    task_rates: dict[str, float] = field(default_factory=dict)
    batch_size: int = 16
    grad_accum: int = 1
    lr: float = 3e-3
    min_lr: float = 3e-4
    warmup: int = 100
    steps: int = 2000
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    val_every: int = 250
    val_batches: int = 8
    ckpt_every: int = 500
    keep_last: int = 3
    log_every: int = 10
    seed: int = 0
    init_from: str = ""
    init_speech_from: str = ""
    out_dir: str = "runs/tiny"
    device: Device = "auto"
    parallel: Parallel = "ddp"
    threads: int = 0
    tensorboard: bool = True
    progress: bool = True

    def __post_init__(self) -> None:
        coerce_fields(self)
        for name in ("task_weights", "task_rates"):
            if not all(math.isfinite(v) and v >= 0 for v in getattr(self, name).values()):
                raise ValueError(f"TrainConfig.{name} values must be finite and >= 0")
        positive = ("seq_len", "batch_size", "grad_accum", "steps", "val_batches", "log_every")
        for name in positive:
            if getattr(self, name) < 1:
                raise ValueError(f"TrainConfig.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("warmup", "val_every", "ckpt_every", "seed", "threads"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if self.keep_last < 1:
            raise ValueError(
                f"TrainConfig.keep_last must be >= 1 (the newest checkpoint is always kept), "
                f"got {self.keep_last}"
            )
        if self.precision not in PRECISIONS:
            raise ValueError(
                f"TrainConfig.precision={self.precision!r} is unknown; choose one of {PRECISIONS}"
            )
        if not self.lr > 0 or not 0 <= self.min_lr <= self.lr:
            raise ValueError(
                f"TrainConfig needs lr > 0 and 0 <= min_lr <= lr; got lr={self.lr}, "
                f"min_lr={self.min_lr}"
            )
        if self.warmup > self.steps:
            raise ValueError(
                f"TrainConfig.warmup={self.warmup} exceeds steps={self.steps}; lower warmup"
            )
        if not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"TrainConfig.betas must each be in [0, 1), got {self.betas}")
        for name in ("weight_decay", "grad_clip"):
            if getattr(self, name) < 0:
                raise ValueError(f"TrainConfig.{name} must be >= 0, got {getattr(self, name)}")
        if not self.eps > 0:
            raise ValueError(f"TrainConfig.eps must be > 0, got {self.eps}")
        if self.batch_size % self.grad_accum:
            raise ValueError(
                f"TrainConfig.batch_size={self.batch_size} is not divisible by "
                f"grad_accum={self.grad_accum}; pick a batch_size that is a multiple of it"
            )
        if not self.train_data:
            raise ValueError("TrainConfig.train_data is empty; give the training token cache")
        if self.task_rates and self.packing != "documents":
            raise ValueError(
                "TrainConfig.task_rates resample whole documents; set packing: documents"
            )

    # ------------------------------------------------------------------ derived
    def micro_batch_size(self, world_size: int) -> int:
        """Sequences per forward pass on each rank; raises if the global batch does not split."""
        per_step = self.grad_accum * world_size
        if self.batch_size % per_step:
            raise ValueError(
                f"batch_size={self.batch_size} does not split over grad_accum={self.grad_accum} "
                f"x {world_size} processes; make batch_size a multiple of {per_step} or change "
                "grad_accum"
            )
        return self.batch_size // per_step

    @property
    def tokens_per_step(self) -> int:
        return self.batch_size * self.seq_len

    @classmethod
    def field_names(cls) -> list[str]:
        return field_names(cls)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with fields replaced (validated again)."""
        return dataclasses.replace(self, **changes)

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["betas"] = list(self.betas)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any], *, source: str = "config") -> TrainConfig:
        """Build from a mapping; unknown keys raise and list the valid ones."""
        return config_from_dict(cls, data, source=source)

    def to_yaml(self, path: str | Path | None = None) -> str:
        """The config as YAML text; also written to ``path`` when given."""
        return dump_yaml(self.to_dict(), path)

    @classmethod
    def from_yaml(cls, path: str | Path) -> TrainConfig:
        """Load from a YAML file (an empty file is the defaults)."""
        data = load_yaml(Path(path))
        return cls.from_dict(data or {}, source=str(path))
