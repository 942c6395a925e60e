"""``TokenDataset``: pre-tokenized documents packed into fixed-length training blocks.

The chat template turns each corpus conversation into ``(ids, loss_mask)``; ``write_token_cache``
stores a split of them as one folder of memory-mappable arrays::

    <path>/ids.npy        int32  (N,)         every document's ids, concatenated
    <path>/loss_mask.npy  uint8  (N,)         1 where the token is a training target
    <path>/offsets.npy    int64  (D + 1,)     document d is ids[offsets[d]:offsets[d + 1]]
    <path>/meta.json      format version, token and document counts, largest id

Training reads the token stream in blocks of ``seq_len + 1`` tokens (inputs are the first
``seq_len``, targets the last ``seq_len``); documents run on across block boundaries, as in
GPT-style packing, so no token is padding. Each epoch starts the blocks at a seeded offset in
``[0, seq_len)`` (so block boundaries move between epochs) and visits them in a seeded order;
``(seed, epoch)`` fixes both. The position — epoch and blocks consumed — is all the state there
is: ``state_dict()`` / ``load_state_dict()`` resume at the exact next block.
"""

from __future__ import annotations

import json
import os
import shutil
from array import array
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["CACHE_VERSION", "Batch", "TokenDataset", "write_token_cache"]

CACHE_VERSION = 1
_ID_LIMIT = 2**31 - 1


@dataclass
class Batch:
    """One batch of packed sequences.

    ``loss_mask[b, t]`` says whether ``targets[b, t]`` is trained on (assistant turns only).
    """

    input_ids: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64
    loss_mask: torch.Tensor  # (B, T) bool

    def to(self, device: torch.device | str) -> Batch:
        return Batch(*(t.to(device, non_blocking=True) for t in self.as_tuple()))

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids, self.targets, self.loss_mask

    @property
    def num_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())


def write_token_cache(
    path: str | Path, docs: Iterable[tuple[Sequence[int], Sequence[int]]]
) -> dict[str, Any]:
    """Write ``(ids, loss_mask)`` documents as a token cache folder at ``path``; returns its meta.

    The folder is written beside ``path`` and renamed into place, so a reader never sees half a
    cache. An existing cache at ``path`` is replaced.
    """
    path = Path(path)
    ids_buf, mask_buf, offsets = array("i"), array("B"), array("q", [0])
    max_id = -1
    for d, (ids, mask) in enumerate(docs):
        if len(ids) != len(mask):
            raise ValueError(
                f"document {d}: ids has {len(ids)} tokens but loss_mask has {len(mask)}; the "
                "template must give one mask value per token"
            )
        if len(ids) == 0:
            continue
        doc_ids = np.asarray(ids, dtype=np.int64)
        doc_mask = np.asarray(mask)
        if doc_ids.min() < 0 or doc_ids.max() > _ID_LIMIT:
            raise ValueError(
                f"document {d}: token ids must be in [0, 2**31), "
                f"got {doc_ids.min()}..{doc_ids.max()}"
            )
        if not np.isin(doc_mask, (0, 1)).all():
            raise ValueError(f"document {d}: loss_mask values must be 0 or 1 (or bool)")
        ids_buf.extend(doc_ids.astype(np.int32).tolist())
        mask_buf.extend(doc_mask.astype(np.uint8).tolist())
        offsets.append(len(ids_buf))
        max_id = max(max_id, int(doc_ids.max()))
    if len(offsets) == 1:
        raise ValueError(f"no non-empty documents to write to {path}")
    meta = {
        "version": CACHE_VERSION,
        "tokens": len(ids_buf),
        "documents": len(offsets) - 1,
        "loss_tokens": int(sum(mask_buf)),
        "max_id": max_id,
    }
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    np.save(tmp / "ids.npy", np.frombuffer(ids_buf, dtype=np.int32))
    np.save(tmp / "loss_mask.npy", np.frombuffer(mask_buf, dtype=np.uint8))
    np.save(tmp / "offsets.npy", np.frombuffer(offsets, dtype=np.int64))
    (tmp / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    if path.exists():
        shutil.rmtree(path)
    os.replace(tmp, path)
    return meta


class TokenDataset:
    """Fixed-length blocks from a token cache, in a deterministic, resumable order.

    Args:
        path: a folder written by ``write_token_cache``.
        seq_len: tokens per sequence (T); each block holds ``T + 1`` tokens.
        seed: fixes each epoch's block offset and order.
        shuffle: visit blocks in a seeded random order (off: in stream order, offset 0 —
            the choice for validation).
    """

    def __init__(self, path: str | Path, seq_len: int, *, seed: int = 0, shuffle: bool = True):
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.is_file():
            raise FileNotFoundError(
                f"token cache {self.path} not found (no meta.json); build it with `omniflex data "
                "tokenize --corpus CORPUS` (caches in CORPUS/tokens/{split}), or write one with "
                "omniflex.train.write_token_cache(path, docs), or point train_data/val_data at an "
                "existing cache"
            )
        self.meta = json.loads(meta_path.read_text())
        if self.meta.get("version") != CACHE_VERSION:
            raise ValueError(
                f"token cache {self.path} has version {self.meta.get('version')}, this code "
                f"reads version {CACHE_VERSION}; rewrite it with write_token_cache"
            )
        if seq_len < 1:
            raise ValueError(f"seq_len must be >= 1, got {seq_len}")
        self.ids = np.load(self.path / "ids.npy", mmap_mode="r")  # (N,) int32
        self.loss_mask = np.load(self.path / "loss_mask.npy", mmap_mode="r")  # (N,) uint8
        self.offsets = np.load(self.path / "offsets.npy")  # (D + 1,) int64
        self.seq_len, self.seed, self.shuffle = seq_len, seed, shuffle
        if self.num_tokens < seq_len + 1:
            raise ValueError(
                f"token cache {self.path} holds {len(self.ids)} tokens, fewer than one block of "
                f"seq_len + 1 = {seq_len + 1}; lower seq_len or write more documents"
            )
        self.epoch = 0
        self.position = 0  # blocks consumed in the current epoch
        self._order_epoch = -1
        self._order: np.ndarray | None = None
        self._start = 0

    # ----------------------------------------------------------------- layout
    @property
    def num_tokens(self) -> int:
        return len(self.ids)

    @property
    def num_documents(self) -> int:
        return len(self.offsets) - 1

    @property
    def max_id(self) -> int:
        return int(self.meta["max_id"])

    def _epoch_start(self, epoch: int) -> int:
        if not self.shuffle:
            return 0
        rng = np.random.default_rng([self.seed, epoch, 0])
        # Never so far in that the epoch loses its only block.
        return int(rng.integers(0, min(self.seq_len, self.num_tokens - self.seq_len)))

    def blocks_in_epoch(self, epoch: int) -> int:
        return (self.num_tokens - self._epoch_start(epoch) - 1) // self.seq_len

    def __len__(self) -> int:
        """Blocks in the first epoch (later epochs may hold one fewer)."""
        return self.blocks_in_epoch(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Block indices of ``epoch`` in visiting order (cached for the current epoch)."""
        if self._order is None or self._order_epoch != epoch:
            n = self.blocks_in_epoch(epoch)
            rng = np.random.default_rng([self.seed, epoch, 1])
            self._order = rng.permutation(n) if self.shuffle else np.arange(n)
            self._start = self._epoch_start(epoch)
            self._order_epoch = epoch
        return self._order

    def block(self, epoch: int, index: int) -> tuple[np.ndarray, np.ndarray]:
        """Tokens and mask of the ``index``-th block visited in ``epoch``, each ``(T + 1,)``."""
        order = self._epoch_order(epoch)
        start = self._start + int(order[index]) * self.seq_len
        stop = start + self.seq_len + 1
        return self.ids[start:stop], self.loss_mask[start:stop]

    # ----------------------------------------------------------------- reading
    def next_blocks(self, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The next ``count`` blocks of the stream, moving to the next epoch when one ends."""
        out = []
        for _ in range(count):
            if self.position >= self.blocks_in_epoch(self.epoch):
                self.epoch, self.position = self.epoch + 1, 0
            out.append(self.block(self.epoch, self.position))
            self.position += 1
        return out

    @staticmethod
    def collate(blocks: Sequence[tuple[np.ndarray, np.ndarray]]) -> Batch:
        """Stack blocks into a ``Batch`` (inputs: tokens ``[:-1]``; targets: tokens ``[1:]``)."""
        tokens = torch.from_numpy(np.stack([np.asarray(ids) for ids, _ in blocks]).astype(np.int64))
        mask = torch.from_numpy(np.stack([np.asarray(m) for _, m in blocks]).astype(np.bool_))
        return Batch(tokens[:, :-1], tokens[:, 1:], mask[:, 1:])  # (B, T) each

    def first_blocks(self, count: int) -> list[tuple[np.ndarray, np.ndarray]]:
        """The first ``count`` blocks of epoch 0 without moving the position (validation)."""
        count = min(count, self.blocks_in_epoch(0))
        return [self.block(0, i) for i in range(count)]

    # ----------------------------------------------------------------- resume
    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "seq_len": self.seq_len,
            "tokens": self.num_tokens,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a saved position; the cache and seq_len must be the ones it was saved with."""
        for key, mine in (("seq_len", self.seq_len), ("tokens", self.num_tokens)):
            if int(state[key]) != mine:
                raise ValueError(
                    f"data position was saved with {key}={state[key]}, but this dataset "
                    f"({self.path}) has {key}={mine}; resume with the same seq_len and token cache"
                )
        self.seed = int(state["seed"])
        self.epoch = int(state["epoch"])
        self.position = int(state["position"])
        self._order_epoch = -1
