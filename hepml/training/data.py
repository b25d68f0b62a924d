"""Batches for the trainer, built chunk by chunk so memory follows the chunk size.

A :class:`ChunkedDataset` holds one loader per chunk of input entries (a callable that
reads the chunk and builds the model inputs and targets). Each epoch visits the chunks
in an order and shuffles the entries inside each chunk with a generator seeded by
``(seed, epoch)`` alone, so the order of an epoch does not depend on what ran before it:
a run resumed from a checkpoint sees exactly the batches the uninterrupted run saw.
Under torchrun each rank takes every ``world_size``-th entry of each shuffled chunk.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from hepml.training import distributed

__all__ = ["ChunkedDataset", "ChunkLoader", "chunk_moments"]

#: Returns the tensors of one chunk: inputs first, targets last.
ChunkLoader = Callable[[], tuple[torch.Tensor, ...]]


class ChunkedDataset(IterableDataset):
    """Mini-batches over chunks of data.

    Args:
        loaders: One callable per chunk returning a tuple of tensors of equal length.
        lengths: Number of entries each loader returns (for progress and epoch sizes).
        batch_size: Global batch size; each of ``world_size`` ranks takes its share.
        shuffle: Shuffle chunk order and entries within chunks every epoch.
        seed: Base seed of the shuffling.
        cache: Keep built chunks in memory after the first epoch (for data that fit).
        shard: Under torchrun, give each rank its share of the entries (training,
            validation); ``False`` gives every rank all entries in order (prediction).
    """

    def __init__(
        self,
        loaders: Sequence[ChunkLoader],
        lengths: Sequence[int],
        *,
        batch_size: int,
        shuffle: bool = False,
        seed: int = 0,
        cache: bool = True,
        shard: bool = True,
    ) -> None:
        super().__init__()
        self.loaders = list(loaders)
        self.lengths = list(lengths)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.cache = cache
        self.shard = shard
        self.epoch = 0
        self._cache: dict[int, tuple[torch.Tensor, ...]] = {}

    def _rank(self) -> tuple[int, int]:
        return (distributed.world_size(), distributed.rank()) if self.shard else (1, 0)

    def __len__(self) -> int:
        """Entries this rank sees per epoch."""
        ws, r = self._rank()
        return sum(len(range(r, n, ws)) for n in self.lengths)

    def set_epoch(self, epoch: int) -> None:
        """Select the shuffling of ``epoch``."""
        self.epoch = epoch

    def _chunk(self, i: int) -> tuple[torch.Tensor, ...]:
        if i in self._cache:
            return self._cache[i]
        tensors = self.loaders[i]()
        if self.cache:
            self._cache[i] = tensors
        return tensors

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        order = torch.randperm(len(self.loaders), generator=gen) if self.shuffle else torch.arange(len(self.loaders))
        ws, r = self._rank()
        per_rank = max(1, self.batch_size // ws)
        for i in order.tolist():
            if self.lengths[i] == 0:
                continue
            tensors = self._chunk(i)
            n = len(tensors[0])
            idx = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
            idx = idx[r::ws]
            for start in range(0, len(idx), per_rank):
                sel = idx[start : start + per_rank]
                yield tuple(t[sel] for t in tensors)


def chunk_moments(chunks: Iterable[torch.Tensor], *, ddof: int = 0
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """Element-wise mean and standard deviation over the entries of data seen chunk by chunk.

    Each chunk is ``[n, ...]``; the moments run over the first axis. Chunks are merged with
    the pairwise update of Chan, Golub and LeVeque in float64, so the result does not
    depend on how the entries are cut into chunks and no chunk is held after its turn.

    Args:
        chunks: The data, one tensor per chunk (empty chunks are skipped).
        ddof: 0 for the population standard deviation, 1 for the sample one.

    Returns:
        ``(mean, std, n)``; ``(None, None, 0)`` when there are no entries.
    """
    n, mean, m2 = 0, None, None
    for x in chunks:
        if len(x) == 0:
            continue
        x = x.double()
        nb, mb = len(x), x.mean(0)
        m2b = ((x - mb) ** 2).sum(0)
        if mean is None:
            n, mean, m2 = nb, mb, m2b
        else:
            delta = mb - mean
            total = n + nb
            mean = mean + delta * nb / total
            m2 = m2 + m2b + delta ** 2 * n * nb / total
            n = total
    if mean is None:
        return None, None, 0
    return mean, (m2 / max(n - ddof, 1)).sqrt(), n
