"""A stand-in language model with ``OmniModel``'s call signature, and synthetic token caches.

Small enough that a flex16+5 training step takes milliseconds, with the parts the trainer must
handle: an embedding, linear layers (flex-converted), a 1-D gain (no weight decay) and a masked
token-mean loss.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from omniflex.flex import FlexConfig, convert_to_flex
from omniflex.train import TrainConfig, write_token_cache

VOCAB = 48


@dataclass
class Output:
    logits: torch.Tensor  # (B, T, V)
    loss: torch.Tensor | None


class TinyLM(nn.Module):
    def __init__(
        self, vocab: int = VOCAB, dim: int = 16, hidden: int = 32, dropout: float = 0.0
    ) -> None:
        super().__init__()
        self.emb = nn.Embedding(vocab, dim)
        self.drop = nn.Dropout(dropout)  # draws from the torch RNG: resume must restore it
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.gain = nn.Parameter(torch.ones(dim))
        self.head = nn.Linear(dim, vocab, bias=False)

    @classmethod
    def build(cls, precision: str = "float32", dropout: float = 0.0) -> TinyLM:
        model = cls(dropout=dropout)
        if precision.startswith("flex"):
            convert_to_flex(model, config=FlexConfig.from_recipe_name(precision))
        return model

    def forward(self, input_ids, targets=None, loss_mask=None) -> Output:
        x = self.emb(input_ids)  # (B, T, C)
        x = x + self.drop(self.fc2(F.gelu(self.fc1(x))))
        logits = self.head(x * self.gain).float()  # (B, T, V)
        loss = None
        if targets is not None:
            ce = F.cross_entropy(logits.flatten(0, 1), targets.flatten(), reduction="none")
            weight = torch.ones_like(ce) if loss_mask is None else loss_mask.flatten().to(ce.dtype)
            loss = (ce * weight).sum() / weight.sum().clamp(min=1.0)
        return Output(logits, loss)


def build_standin(config: TrainConfig) -> TinyLM:
    return TinyLM.build(config.precision, **config.model_overrides)


def synthetic_docs(n_docs: int, seed: int = 0) -> list[tuple[list[int], list[int]]]:
    """Documents with a learnable pattern (each token is often the previous one plus one);
    the first third of each is a "prompt" with loss mask 0."""
    rng = np.random.default_rng(seed)
    docs = []
    for _ in range(n_docs):
        length = int(rng.integers(5, 40))
        ids = [int(rng.integers(0, VOCAB))]
        for _ in range(length - 1):
            step = 1 if rng.random() < 0.8 else int(rng.integers(0, VOCAB))
            ids.append((ids[-1] + step) % VOCAB)
        cut = length // 3
        docs.append((ids, [0] * cut + [1] * (length - cut)))
    return docs


def make_caches(root: Path, n_train: int = 120, n_val: int = 30) -> tuple[Path, Path]:
    train, val = root / "tokens" / "train", root / "tokens" / "val"
    write_token_cache(train, synthetic_docs(n_train, seed=1))
    write_token_cache(val, synthetic_docs(n_val, seed=2))
    return train, val


def tiny_config(root: Path, **changes) -> TrainConfig:
    """A config for the stand-in: seq_len 8, global batch 4, a few steps, no progress bar."""
    train, val = (
        make_caches(root)
        if not (root / "tokens").exists()
        else (
            root / "tokens" / "train",
            root / "tokens" / "val",
        )
    )
    base = dict(
        precision="float32", train_data=str(train), val_data=str(val), seq_len=8, batch_size=4,
        grad_accum=1, lr=1e-2, min_lr=1e-3, warmup=2, steps=6, weight_decay=0.1, grad_clip=1.0,
        val_every=3, val_batches=2, ckpt_every=3, keep_last=2, log_every=1, seed=0,
        out_dir=str(root / "run"), progress=False, threads=1,
    )  # fmt: skip
    base.update(changes)
    return TrainConfig(**base)
