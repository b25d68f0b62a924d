"""Calorimeter showers → the tensors a shower generator trains on.

A batch of :class:`hepml.io.calo.Showers` becomes three tensors: every cell of every layer
flattened and concatenated (front layer first, row-major within a layer) in GeV, the
incident energy in GeV, and the index of each shower's particle in a list of PDG ids.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from hepml.io.calo import Showers

__all__ = ["flatten_cells", "particle_indices", "shower_tensors", "unflatten_cells"]


def flatten_cells(layers: Sequence[np.ndarray]) -> np.ndarray:
    """Layers (N, rows, columns) → cells (N, sum of cells), float32."""
    return np.concatenate([np.asarray(x, dtype=np.float32).reshape(len(x), -1) for x in layers],
                          axis=1)


def unflatten_cells(cells: np.ndarray, shapes: Sequence[tuple[int, int]]) -> tuple[np.ndarray, ...]:
    """Cells (N, sum of cells) → one (N, rows, columns) array per layer."""
    sizes = [r * c for r, c in shapes]
    if cells.shape[1] != sum(sizes):
        raise ValueError(f"{cells.shape[1]} cells per shower do not fill layers {list(shapes)}")
    parts = np.split(cells, np.cumsum(sizes)[:-1], axis=1)
    return tuple(p.reshape(len(p), *s) for p, s in zip(parts, shapes, strict=True))


def particle_indices(pdg: np.ndarray, particles: Sequence[int], *, source: str = "showers"
                     ) -> np.ndarray:
    """Index of each PDG id in ``particles``; an id not in the list is an error."""
    known = np.asarray(list(particles))
    match = np.asarray(pdg).reshape(-1, 1) == known.reshape(1, -1)
    missing = ~match.any(axis=1)
    if missing.any():
        raise ValueError(f"{source}: particle id(s) "
                         f"{sorted(set(np.asarray(pdg)[missing].tolist()))}"
                         f" are not among {list(particles)}")
    return match.argmax(axis=1).astype(np.int64)


def shower_tensors(showers: Showers, particles: Sequence[int]
                   ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(cells (N, sum of cells) GeV, incident energy (N,) GeV, particle index (N,))."""
    return (torch.from_numpy(flatten_cells(showers.layers)),
            torch.from_numpy(showers.energy.astype(np.float32)),
            torch.from_numpy(particle_indices(showers.particle, particles, source=showers.source)))
