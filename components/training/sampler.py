"""Length-bucketed batches: similar lengths share a batch, so dynamic padding wastes little compute.

Each epoch: shuffle all indices (seeded by seed + epoch, so a resumed run replays the same order), cut them into
pools of `batch_size * pool_batches`, sort each pool by length, slice it into batches, then shuffle the batch order.
Under DDP every rank takes every `world_size`-th batch of the same sequence; the sequence is padded with its own first
batches to a multiple of `world_size` so all ranks step the same number of times (as torch's DistributedSampler does).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import torch
from torch.utils.data import Sampler


class BucketBatchSampler(Sampler[list[int]]):
    def __init__(
        self,
        lengths: Sequence[int],
        batch_size: int,
        *,
        shuffle: bool = True,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        pool_batches: int = 50,
    ):
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.world_size = world_size
        self.pool_batches = pool_batches
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _all_batches(self) -> list[list[int]]:
        n = len(self.lengths)
        if not self.shuffle:
            # Evaluation: file order, no bucketing, so predictions line up with the examples.
            return [list(range(i, min(i + self.batch_size, n))) for i in range(0, n, self.batch_size)]
        generator = torch.Generator().manual_seed(self.seed + self.epoch)
        order = torch.randperm(n, generator=generator).tolist()
        pool = self.batch_size * self.pool_batches
        batches: list[list[int]] = []
        for start in range(0, n, pool):
            chunk = sorted(order[start : start + pool], key=lambda i: self.lengths[i])
            batches += [chunk[i : i + self.batch_size] for i in range(0, len(chunk), self.batch_size)]
        permutation = torch.randperm(len(batches), generator=generator).tolist()
        batches = [batches[i] for i in permutation]
        if self.world_size > 1 and len(batches) % self.world_size:
            batches += batches[: self.world_size - len(batches) % self.world_size]
        return batches

    def __iter__(self) -> Iterator[list[int]]:
        yield from self._all_batches()[self.rank :: self.world_size]

    def __len__(self) -> int:
        n_batches = -(-len(self.lengths) // self.batch_size)
        if not self.shuffle:
            return n_batches
        # Pools can leave one short batch each; count exactly rather than estimate.
        pool = self.batch_size * self.pool_batches
        n_batches = sum(
            -(-min(pool, len(self.lengths) - s) // self.batch_size) for s in range(0, len(self.lengths), pool)
        )
        if self.world_size > 1:
            n_batches = -(-n_batches // self.world_size) * self.world_size
        return n_batches // self.world_size
