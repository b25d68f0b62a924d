"""The train/validation/test assignment of entries (or events, or showers).

Each entry gets a split id by a permutation seeded with the data section's
``split_seed``, or with the workflow ``seed`` when that is not set (as before the key
existed). A fixed ``split_seed`` keeps the same test entries while the training seed
varies, so that a spread over seeds measures training, not the choice of test set.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["SPLIT_NAMES", "assign_split", "split_seed"]

SPLIT_NAMES = ("train", "validation", "test")


def split_seed(data: object, seed: int) -> int:
    """The seed of the split: ``data.split_seed`` if set, else the workflow ``seed``."""
    given = getattr(data, "split_seed", None)
    return int(seed if given is None else given)


def assign_split(n: int, fractions: Sequence[float], seed: int) -> np.ndarray:
    """Split id (0 train, 1 validation, 2 test) of each of ``n`` entries, fixed by ``seed``.

    Example:
        >>> assign_split(5, (0.6, 0.2, 0.2), seed=0).tolist()
        [1, 2, 0, 0, 0]
    """
    order = np.random.default_rng(seed).permutation(n)
    bounds = np.round(np.cumsum(fractions) * n).astype(np.int64)
    split = np.empty(n, dtype=np.int8)
    start = 0
    for i, stop in enumerate(bounds):
        split[order[start:stop]] = i
        start = stop
    return split
