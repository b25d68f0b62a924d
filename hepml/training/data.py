"""Batches for the trainer, built chunk by chunk so memory follows the chunk size.

A :class:`ChunkedDataset` holds one loader per chunk of input entries (a callable that
reads the chunk and builds the model inputs and targets). Each epoch visits the chunks
in an order and shuffles the entries inside each chunk with a generator seeded by
``(seed, epoch)`` alone, so the order of an epoch does not depend on what ran before it:
a run resumed from a checkpoint sees exactly the batches the uninterrupted run saw.
Under torchrun the chunks are shared out among the ranks once (longest first to the rank
with the fewest entries, the same on every rank), so each rank reads only its own part of
the files; each rank then shuffles and batches its own chunks. When there are fewer
chunks than ranks, every rank reads every chunk and takes every ``world_size``-th entry.
For training, ranks with fewer batches repeat their first ones, so that every rank runs
the same number of steps (DistributedDataParallel needs that, as DistributedSampler's
padding does).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch.utils.data import IterableDataset

from hepml.training import distributed
from hepml.training.device import float_dtype

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
        shard: Under torchrun, give each rank its share of the chunks (training,
            validation); ``False`` gives every rank all entries in order (prediction,
            which :meth:`hepml.training.Trainer.predict` shares out itself).
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
        #: Under torchrun, every rank yields as many batches as the busiest one (the
        #: trainer sets this for training data).
        self.even_batches = False
        #: Yield batches in page-locked memory, so that copies to a CUDA device with
        #: ``non_blocking=True`` overlap with the GPU's work (the trainer sets this).
        self.pin_memory = False
        self._cache: dict[int, tuple[torch.Tensor, ...]] = {}

    def _rank(self) -> tuple[int, int]:
        return (distributed.world_size(), distributed.rank()) if self.shard else (1, 0)

    def partition(self, world_size: int) -> list[list[int]] | None:
        """The chunks of each of ``world_size`` ranks, or ``None`` to stride entries.

        Longest chunk first to the rank with the fewest entries so far (ties to the lower
        rank), the same on every rank. ``None`` when there are fewer non-empty chunks than
        ranks.
        """
        nonempty = [i for i, n in enumerate(self.lengths) if n > 0]
        if world_size <= 1 or len(nonempty) < world_size:
            return None
        loads, parts = [0] * world_size, [[] for _ in range(world_size)]
        for i in sorted(nonempty, key=lambda i: (-self.lengths[i], i)):
            r = min(range(world_size), key=lambda r: (loads[r], r))
            parts[r].append(i)
            loads[r] += self.lengths[i]
        return [sorted(p) for p in parts]

    def _plan(self, world_size: int, rank: int) -> tuple[list[int], int]:
        """``(chunks this rank reads, entry stride)`` for a rank."""
        parts = self.partition(world_size)
        if parts is None:
            return list(range(len(self.loaders))), world_size
        return parts[rank], 1

    def _entries(self, world_size: int, rank: int) -> list[int]:
        """Entries a rank takes from each of its chunks."""
        chunks, stride = self._plan(world_size, rank)
        offset = rank if stride > 1 else 0
        return [len(range(offset, self.lengths[i], stride)) for i in chunks]

    def _num_batches(self, world_size: int, rank: int) -> int:
        per_rank = max(1, self.batch_size // world_size)
        return sum(-(-n // per_rank) for n in self._entries(world_size, rank))

    def __len__(self) -> int:
        """Entries this rank sees per epoch (repeated batches not counted)."""
        return sum(self._entries(*self._rank()))

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

    def chunk_batches(self, i: int) -> Iterator[tuple[torch.Tensor, ...]]:
        """The entries of chunk ``i`` in order, in batches of ``batch_size`` (no sharding)."""
        if self.lengths[i] == 0:
            return
        tensors = self._chunk(i)
        for start in range(0, len(tensors[0]), self.batch_size):
            yield self._out(tuple(t[start:start + self.batch_size] for t in tensors))

    def _out(self, batch: tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        if not self.pin_memory:
            return batch
        return tuple(t.pin_memory() if t.device.type == "cpu" else t for t in batch)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, ...]]:
        ws, r = self._rank()
        chunks, stride = self._plan(ws, r)
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + self.epoch)
        if self.shuffle:
            chunks = [chunks[k] for k in torch.randperm(len(chunks), generator=gen).tolist()]
        per_rank = max(1, self.batch_size // ws)
        offset = r if stride > 1 else 0
        plan: list[tuple[int, torch.Tensor]] = []
        for i in chunks:
            if self.lengths[i] == 0:
                continue
            tensors = self._chunk(i)
            n = len(tensors[0])
            idx = torch.randperm(n, generator=gen) if self.shuffle else torch.arange(n)
            idx = idx[offset::stride]
            for start in range(0, len(idx), per_rank):
                sel = idx[start : start + per_rank]
                if self.even_batches:
                    plan.append((i, sel))
                yield self._out(tuple(t[sel] for t in tensors))
        if self.even_batches and ws > 1 and plan:
            # repeat this rank's first batches until it has as many as the busiest rank
            missing = max(self._num_batches(ws, k) for k in range(ws)) - len(plan)
            loaded, tensors = -1, ()
            for k in range(missing):
                i, sel = plan[k % len(plan)]
                if i != loaded:
                    tensors, loaded = self._chunk(i), i
                yield self._out(tuple(t[sel] for t in tensors))


def chunk_moments(chunks: Iterable[torch.Tensor], *, ddof: int = 0
                  ) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """Element-wise mean and standard deviation over the entries of data seen chunk by chunk.

    Each chunk is ``[n, ...]``; the moments run over the first axis. Chunks are merged with
    the pairwise update of Chan, Golub and LeVeque in float64 (float32 on MPS), so the
    result does not depend on how the entries are cut into chunks and no chunk is held
    after its turn.

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
        x = x.to(float_dtype(x.device))
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
