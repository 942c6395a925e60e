"""``CorpusLoader``: conversations from shards, shuffled across shards, resumable by position."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np

from omniflex.data.shards import ShardSample, read_shard

__all__ = ["CorpusLoader"]


class CorpusLoader:
    """Iterate the samples of ``root/<split>-*.tar`` forever (or for ``epochs``).

    Each epoch visits the shards in a seeded random order and shuffles samples within a buffer of
    ``buffer`` samples; ``state_dict()`` / ``load_state_dict()`` resume at the exact sample.
    """

    def __init__(
        self,
        root: str | Path,
        split: str = "train",
        *,
        seed: int = 0,
        shuffle: bool = True,
        buffer: int = 256,
        epochs: int | None = None,
    ) -> None:
        self.root = Path(root)
        if not self.root.is_dir():
            raise FileNotFoundError(
                f"corpus folder {self.root} does not exist; build it with `omniflex data build`"
            )
        self.shards = sorted(self.root.glob(f"{split}-*.tar"))
        if not self.shards:
            raise FileNotFoundError(
                f"no '{split}-*.tar' shards in {self.root}; "
                f"build them with `omniflex data build --out {self.root}`"
            )
        self.split, self.seed, self.shuffle, self.buffer, self.epochs = (
            split,
            seed,
            shuffle,
            buffer,
            epochs,
        )
        self.epoch = 0
        self.position = 0  # samples yielded in the current epoch

    def _epoch_order(self, epoch: int) -> Iterator[ShardSample]:
        rng = np.random.default_rng([self.seed, epoch])
        order = rng.permutation(len(self.shards)) if self.shuffle else np.arange(len(self.shards))
        pool: list[ShardSample] = []
        for i in order:
            for sample in read_shard(self.shards[i]):
                pool.append(sample)
                if len(pool) >= self.buffer:
                    yield pool.pop(int(rng.integers(len(pool))) if self.shuffle else 0)
        while pool:
            yield pool.pop(int(rng.integers(len(pool))) if self.shuffle else 0)

    def __iter__(self) -> Iterator[ShardSample]:
        while self.epochs is None or self.epoch < self.epochs:
            for i, sample in enumerate(self._epoch_order(self.epoch)):
                if i < self.position:
                    continue  # resuming: skip what was already yielded
                self.position = i + 1
                yield sample
            self.epoch += 1
            self.position = 0

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "split": self.split,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if (
            state.get("split", self.split) != self.split
            or state.get("seed", self.seed) != self.seed
        ):
            raise ValueError(
                f"loader state is for split={state.get('split')} seed={state.get('seed')}, "
                f"this loader is split={self.split} seed={self.seed}"
            )
        self.epoch, self.position = int(state["epoch"]), int(state["position"])

    def __len__(self) -> int:
        return sum(1 for shard in self.shards for _ in read_shard(shard))
