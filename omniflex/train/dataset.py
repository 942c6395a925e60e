"""``TokenDataset``: pre-tokenized documents packed into fixed-length training blocks.

It reads a token cache (``omniflex.model.token_cache``: every document's ids and loss mask, and
beside it each document's task). Training reads blocks of ``seq_len + 1`` tokens (inputs are
the first ``seq_len``, targets the last ``seq_len``), packed one of two ways (``packing``):

* ``"stream"``: documents run on across block boundaries, as in GPT-style packing, so no token
  is padding. Each epoch starts the blocks at a seeded offset in ``[0, seq_len)`` (so block
  boundaries move between epochs) and visits them in a seeded order. A block may start in the
  middle of a conversation, and attention runs across documents.
* ``"documents"``: whole documents only. Each epoch shuffles the documents and packs them
  first-fit into rows (at most ``ROW_WINDOW`` rows open at a time), padding the rest of a row
  with ``<|pad|>`` (no loss). Each block also carries per-token ``segments`` (the document's
  place in its row, -1 for padding) and ``positions`` restarting at 0 in each document, which
  the model turns into a block-diagonal causal mask and RoPE positions: no example starts or
  ends mid-conversation, and no token sees another document. A document longer than a block
  cannot be trained whole and is left out (counted in ``skipped_documents``).

A cache written with continuous input features (``<|mel|>``/``<|patch|>`` placeholders and
their rows; ``omniflex.model.token_cache``) needs ``"documents"`` packing: each block then
carries its documents' rows, and a batch hands them to the model as ``InputFeatures``.

``(seed, epoch)`` fixes every choice. The position — epoch and blocks consumed — is all the
state there is: ``state_dict()`` / ``load_state_dict()`` resume at the exact next block.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, NamedTuple

import numpy as np
import torch

from omniflex.model.encoders import InputFeatures
from omniflex.model.token_cache import CACHE_VERSION, read_sidecar, write_token_cache
from omniflex.tokenizers import special

__all__ = [
    "CACHE_VERSION",
    "ROW_WINDOW",
    "Batch",
    "Block",
    "Packing",
    "TokenDataset",
    "write_token_cache",  # re-exported from omniflex.model.token_cache, its owner
]

Packing = Literal["stream", "documents"]
ROW_WINDOW = 16  # rows open at once while packing whole documents (first fit among them)
_PAD_ID = 0  # <|pad|> (omniflex.tokenizers.special); its targets carry no loss


class Block(NamedTuple):
    """One training row of ``T + 1`` tokens (inputs ``[:-1]``, targets ``[1:]``)."""

    ids: np.ndarray  # (T + 1,) int32
    loss_mask: np.ndarray  # (T + 1,) uint8
    segments: np.ndarray | None = None  # (T + 1,) int64 document in the row, -1 padding
    positions: np.ndarray | None = None  # (T + 1,) int64, restarting per document
    tasks: np.ndarray | None = None  # (T + 1,) int64 index into TokenDataset.tasks, -1 none
    mel: np.ndarray | None = None  # (M, 320) float16 rows of the row's <|mel|> placeholders
    patches: np.ndarray | None = None  # (P, 192) uint8 rows of its <|patch|> placeholders


@dataclass
class Batch:
    """One batch of packed sequences.

    ``loss_mask[b, t]`` says whether ``targets[b, t]`` is trained on (assistant turns only).
    """

    input_ids: torch.Tensor  # (B, T) int64
    targets: torch.Tensor  # (B, T) int64
    loss_mask: torch.Tensor  # (B, T) bool
    positions: torch.Tensor | None = None  # (B, T) int64, packed documents only
    segments: torch.Tensor | None = None  # (B, T) int64, packed documents only
    tasks: torch.Tensor | None = None  # (B, T) int64 task of each target, -1 none
    loss_weight: torch.Tensor | None = None  # (B, T) float32 per-target weight (task weights)
    features: InputFeatures | None = None  # rows of the inputs' placeholders, in order

    def to(self, device: torch.device | str) -> Batch:
        def move(t: torch.Tensor | None) -> torch.Tensor | None:
            return None if t is None else t.to(device, non_blocking=True)

        return Batch(
            *(move(t) for t in (*self.as_tuple(), self.positions, self.segments, self.tasks,
                                self.loss_weight)),
            None if self.features is None else self.features.to(device),
        )  # fmt: skip

    @property
    def loss_weights(self) -> torch.Tensor:
        """(B, T) float: each target's weight in the loss (0 where it carries none)."""
        mask = self.loss_mask.float()
        return mask if self.loss_weight is None else mask * self.loss_weight

    def as_tuple(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return self.input_ids, self.targets, self.loss_mask

    def model_kwargs(self) -> dict[str, Any]:
        """What the model needs beyond ids, targets and mask: positions and segments of packed
        documents and the rows of input features (nothing for a plain stream, so any model
        still fits)."""
        kwargs: dict[str, Any] = {}
        if self.segments is not None:
            kwargs.update(positions=self.positions, segments=self.segments)
        if self.features is not None:
            kwargs["features"] = self.features
        return kwargs

    def model_loss_mask(self) -> torch.Tensor:
        """What the model's loss masks (and weighs) targets with."""
        return self.loss_mask if self.loss_weight is None else self.loss_weights

    @property
    def num_loss_tokens(self) -> int:
        return int(self.loss_mask.sum())

    @property
    def loss_weight_sum(self) -> float:
        """The loss's denominator: the number of loss tokens, or their summed weights."""
        if self.loss_weight is None:
            return float(self.num_loss_tokens)
        return float(self.loss_weights.sum())


class TokenDataset:
    """Fixed-length blocks from a token cache, in a deterministic, resumable order.

    Args:
        path: a folder written by ``write_token_cache``.
        seq_len: tokens per sequence (T); each block holds ``T + 1`` tokens.
        seed: fixes each epoch's block offset and order.
        shuffle: visit blocks in a seeded random order (off: in stream order, offset 0 —
            the choice for validation).
        packing: ``"stream"`` or ``"documents"`` (whole documents; see the module docstring).
        task_weights: loss weight per task name (others 1.0); needs the cache's sidecar
            ``<path>.json`` (``omniflex data tokenize`` writes it), which names each
            document's task. Blocks then carry each token's task, for weights and logging.
        task_rates: how often each task's documents are visited per epoch (others 1.0;
            ``"documents"`` packing, shuffled data only). ``3`` packs each document three
            times an epoch, ``0.25`` a seeded quarter of them (a different quarter each
            epoch), ``0`` none: the rate moves compute, where a loss weight only scales the
            gradient of what is computed anyway. Needs the sidecar, like ``task_weights``.
    """

    def __init__(
        self,
        path: str | Path,
        seq_len: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        packing: Packing = "stream",
        task_weights: dict[str, float] | None = None,
        task_rates: dict[str, float] | None = None,
    ):
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
        if packing not in ("stream", "documents"):
            raise ValueError(f"packing must be 'stream' or 'documents', got {packing!r}")
        self.packing: Packing = packing
        if packing == "stream" and self.num_tokens < seq_len + 1:
            raise ValueError(
                f"token cache {self.path} holds {len(self.ids)} tokens, fewer than one block of "
                f"seq_len + 1 = {seq_len + 1}; lower seq_len or write more documents"
            )
        lengths = np.diff(self.offsets)
        self._whole = np.flatnonzero(lengths <= seq_len + 1)  # documents that fit a block
        self.skipped_documents = (
            int(self.num_documents - len(self._whole)) if packing == "documents" else 0
        )
        if packing == "documents" and not len(self._whole):
            raise ValueError(
                f"token cache {self.path}: no document fits a block of seq_len + 1 = "
                f"{seq_len + 1} tokens (the shortest has {int(lengths.min())}); raise seq_len"
            )
        self.mel = self.patches = self.mel_offsets = self.patch_offsets = None
        if (self.path / "mel_offsets.npy").is_file():
            if packing != "documents":
                raise ValueError(
                    f"token cache {self.path} holds input features (<|mel|>/<|patch|> rows), "
                    "which only whole documents keep aligned; use packing='documents'"
                )
            self.mel = np.load(self.path / "mel.npy", mmap_mode="r")  # (M, 320) float16
            self.patches = np.load(self.path / "patches.npy", mmap_mode="r")  # (P, 192) uint8
            self.mel_offsets = np.load(self.path / "mel_offsets.npy")  # (D + 1,)
            self.patch_offsets = np.load(self.path / "patch_offsets.npy")  # (D + 1,)
        self._rows: list[np.ndarray] = []
        self.sidecar = read_sidecar(self.path)
        self.tasks, self.doc_tasks = _tasks_of(self.sidecar, self.path, self.num_documents)
        self.task_weights = self._weights(task_weights or {}, "task_weights")
        self.task_rates = self._weights(task_rates or {}, "task_rates")
        if self.task_rates is not None and (packing != "documents" or not shuffle):
            raise ValueError(
                f"task_rates resample whole documents of a shuffled training stream; token cache "
                f"{self.path} is read with packing={packing!r}, shuffle={shuffle}: use "
                "packing='documents' for training data, and no rates for validation"
            )
        self.epoch = 0
        self.position = 0  # blocks consumed in the current epoch
        self._order_epoch = -1
        self._order: np.ndarray | None = None
        self._start = 0

    def _weights(self, weights: dict[str, float], name: str) -> np.ndarray | None:
        """Per task index, the loss weight or visiting rate (None: 1 for every task)."""
        if not weights:
            return None
        if not self.tasks:
            raise ValueError(
                f"{name} need each document's task, but token cache {self.path} has no "
                f"sidecar {self.path}.json naming them; rebuild it with `omniflex data tokenize`"
            )
        unknown = sorted(set(weights) - set(self.tasks))
        if unknown:
            raise ValueError(
                f"{name} name tasks {unknown} that token cache {self.path} does not hold; "
                f"its tasks: {', '.join(self.tasks)}"
            )
        bad = {k: w for k, w in weights.items() if not (np.isfinite(w) and w >= 0)}
        if bad:
            raise ValueError(f"{name} must be finite and >= 0, got {bad}")
        return np.array([float(weights.get(t, 1.0)) for t in self.tasks], dtype=np.float32)

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
        if self.packing == "documents":
            self._epoch_order(epoch)
            return len(self._rows)
        return (self.num_tokens - self._epoch_start(epoch) - 1) // self.seq_len

    def _pack_rows(self, epoch: int) -> list[np.ndarray]:
        """Whole documents packed into rows of ``seq_len + 1`` tokens, first fit among the last
        ``ROW_WINDOW`` open rows, in a seeded document order; each row an array of documents."""
        docs = self._epoch_documents(epoch)
        if self.shuffle:
            docs = np.random.default_rng([self.seed, epoch, 2]).permutation(docs)
        lengths = np.diff(self.offsets)
        capacity = self.seq_len + 1
        rows: list[list[int]] = []
        room: list[int] = []
        first_open = 0
        for d in docs.tolist():
            n = int(lengths[d])
            for r in range(first_open, len(rows)):
                if room[r] >= n:
                    rows[r].append(d)
                    room[r] -= n
                    break
            else:
                rows.append([d])
                room.append(capacity - n)
                first_open = max(first_open, len(rows) - ROW_WINDOW)
        return [np.asarray(r, dtype=np.int64) for r in rows]

    def _epoch_documents(self, epoch: int) -> np.ndarray:
        """The whole documents ``epoch`` visits: each once, or as often as its task's rate says
        (``floor(rate)`` times, plus once more with probability ``rate - floor(rate)``)."""
        docs = self._whole
        if self.task_rates is None:
            return docs
        rates = self.task_rates[self.doc_tasks[docs]].astype(np.float64)
        whole = np.floor(rates)
        extra = np.random.default_rng([self.seed, epoch, 3]).random(len(docs)) < rates - whole
        copies = (whole + extra).astype(np.int64)
        if not copies.any():
            raise ValueError(
                f"task_rates leave no document of token cache {self.path} to train on; "
                "give some task a rate above 0"
            )
        return np.repeat(docs, copies)

    def __len__(self) -> int:
        """Blocks in the first epoch (later epochs may hold one fewer)."""
        return self.blocks_in_epoch(0)

    def _epoch_order(self, epoch: int) -> np.ndarray:
        """Block indices of ``epoch`` in visiting order (cached for the current epoch)."""
        if self._order is None or self._order_epoch != epoch:
            if self.packing == "documents":
                self._rows = self._pack_rows(epoch)
                n = len(self._rows)
            else:
                n = self.blocks_in_epoch(epoch)
            rng = np.random.default_rng([self.seed, epoch, 1])
            self._order = rng.permutation(n) if self.shuffle else np.arange(n)
            self._start = self._epoch_start(epoch)
            self._order_epoch = epoch
        return self._order

    def block(self, epoch: int, index: int) -> Block:
        """The ``index``-th block visited in ``epoch``: tokens and mask, each ``(T + 1,)``, and
        for packed documents their segments and positions as well."""
        order = self._epoch_order(epoch)
        if self.packing == "documents":
            return self._document_row(self._rows[int(order[index])])
        start = self._start + int(order[index]) * self.seq_len
        stop = start + self.seq_len + 1
        tasks = None
        if self.doc_tasks is not None:
            docs = np.searchsorted(self.offsets, np.arange(start, stop), side="right") - 1
            tasks = self.doc_tasks[docs]
        return Block(self.ids[start:stop], self.loss_mask[start:stop], tasks=tasks)

    def _document_row(self, docs: np.ndarray) -> Block:
        size = self.seq_len + 1
        ids = np.full(size, _PAD_ID, dtype=np.int32)
        mask = np.zeros(size, dtype=np.uint8)
        segments = np.full(size, -1, dtype=np.int64)
        positions = np.zeros(size, dtype=np.int64)
        tasks = np.full(size, -1, dtype=np.int64) if self.doc_tasks is not None else None
        at = 0
        for i, d in enumerate(docs.tolist()):
            lo, hi = int(self.offsets[d]), int(self.offsets[d + 1])
            n = hi - lo
            ids[at : at + n] = self.ids[lo:hi]
            mask[at : at + n] = self.loss_mask[lo:hi]
            segments[at : at + n] = i
            positions[at : at + n] = np.arange(n)
            if tasks is not None:
                tasks[at : at + n] = self.doc_tasks[d]
            at += n
        positions[at:] = np.arange(size - at)  # padding: a document of its own
        mel = patches = None
        if self.mel_offsets is not None:
            mel = np.concatenate(
                [self.mel[self.mel_offsets[d] : self.mel_offsets[d + 1]] for d in docs.tolist()]
            )
            patches = np.concatenate(
                [self.patches[self.patch_offsets[d] : self.patch_offsets[d + 1]]
                 for d in docs.tolist()]
            )  # fmt: skip
        return Block(ids, mask, segments, positions, tasks, mel, patches)

    # ----------------------------------------------------------------- reading
    def next_blocks(self, count: int) -> list[Block]:
        """The next ``count`` blocks of the stream, moving to the next epoch when one ends."""
        out = []
        for _ in range(count):
            if self.position >= self.blocks_in_epoch(self.epoch):
                self.epoch, self.position = self.epoch + 1, 0
            out.append(self.block(self.epoch, self.position))
            self.position += 1
        return out

    @staticmethod
    def loss_weight_of(block: Block, task_weights: np.ndarray | None = None) -> float:
        """The loss weight ``block``'s targets carry, as ``collate`` counts it: the number of
        loss tokens, or with ``task_weights`` their summed weights."""
        mask = np.asarray(block.loss_mask[1:], dtype=bool)
        if block.segments is not None:
            mask &= block.segments[1:] == block.segments[:-1]
        if task_weights is None:
            return float(mask.sum())
        return float(_weights_of(block.tasks[1:], task_weights)[mask].sum())

    @staticmethod
    def collate(blocks: Sequence[Block], task_weights: np.ndarray | None = None) -> Batch:
        """Stack blocks into a ``Batch`` (inputs: tokens ``[:-1]``; targets: tokens ``[1:]``).
        Packed documents: a target in another document than its input carries no loss.
        ``task_weights`` (per task index) weigh each target by its document's task."""

        def stack(field: int, dtype: Any) -> torch.Tensor:
            return torch.from_numpy(np.stack([np.asarray(b[field]) for b in blocks]).astype(dtype))

        tokens, mask = stack(0, np.int64), stack(1, np.bool_)  # (B, T + 1)
        first = blocks[0]
        tasks = stack(4, np.int64) if first.tasks is not None else None
        weight = None
        if task_weights is not None:
            if tasks is None:
                raise ValueError("task weights need blocks that carry their tokens' tasks")
            weight = torch.from_numpy(_weights_of(tasks[:, 1:].numpy(), task_weights))
        if first.segments is None:
            return Batch(tokens[:, :-1], tokens[:, 1:], mask[:, 1:],
                         tasks=None if tasks is None else tasks[:, 1:],
                         loss_weight=weight)  # fmt: skip
        segments, positions = stack(2, np.int64), stack(3, np.int64)
        same = segments[:, 1:] == segments[:, :-1]
        return Batch(
            tokens[:, :-1], tokens[:, 1:], mask[:, 1:] & same,
            positions[:, :-1], segments[:, :-1],
            None if tasks is None else tasks[:, 1:], weight, _features(blocks),
        )  # fmt: skip

    def first_blocks(self, count: int) -> list[Block]:
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
            "packing": self.packing,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at a saved position; the cache and seq_len must be the ones it was saved with."""
        if state.get("packing", "stream") != self.packing:
            raise ValueError(
                f"data position was saved with packing={state.get('packing', 'stream')!r}, but "
                f"this dataset packs {self.packing!r}; resume with the same packing"
            )
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


def _features(blocks: Sequence[Block]) -> InputFeatures | None:
    """The blocks' placeholder rows as model inputs. A row's last token is only a target, so
    a placeholder there (its document ends the row) has no input position: its row is dropped."""
    if blocks[0].mel is None:
        return None
    mel_id, patch_id = special.special_index(special.MEL), special.special_index(special.PATCH)
    mels, patches, places = [], [], []
    for b in blocks:
        n_mel = int((b.ids[:-1] == mel_id).sum())
        n_patch = int((b.ids[:-1] == patch_id).sum())
        mels.append(torch.from_numpy(np.asarray(b.mel[:n_mel], dtype=np.float32)))
        patches.append(torch.from_numpy(np.array(b.patches[:n_patch], dtype=np.uint8)))
        places.append(InputFeatures.places(n_patch))  # a document's pictures are whole
    return InputFeatures(torch.cat(mels), torch.cat(patches), torch.cat(places))


def _weights_of(tasks: np.ndarray, task_weights: np.ndarray) -> np.ndarray:
    """Per-token weights from per-token task indices (-1, padding or unknown: weight 0)."""
    table = np.append(task_weights, np.float32(0.0))  # index -1 -> the appended 0
    return table[tasks].astype(np.float32)


def _tasks_of(
    sidecar: dict[str, Any], path: Path, documents: int
) -> tuple[tuple[str, ...], np.ndarray | None]:
    """The task names and each document's task index (none recorded: ``((), None)``)."""
    if "tasks" not in sidecar or "doc_tasks" not in sidecar:
        return (), None
    doc_tasks = np.asarray(sidecar["doc_tasks"], dtype=np.int64)
    if len(doc_tasks) != documents:
        raise ValueError(
            f"{path}.json names the tasks of {len(doc_tasks)} documents, but the cache beside "
            f"it holds {documents}; rebuild both with `omniflex data tokenize`"
        )
    return tuple(sidecar["tasks"]), doc_tasks
