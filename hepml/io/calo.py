"""Calorimeter showers: the layered layout, an in-memory container, and the file formats.

A shower is the energy deposited in each cell of a few calorimeter layers, plus the energy
of the incident particle. :class:`CaloLayout` describes the layers (cell grid, cell pitch,
depth); :data:`CALOGAN` is the three-layer lead / liquid-argon calorimeter of CaloGAN.
:class:`Showers` holds a batch of showers in memory, always in GeV.

Files on disk follow the CaloGAN convention: the incident ``energy`` in GeV, the cells
(``layer_0`` ... ``layer_{L-1}``) and the per-layer ``overflow`` in MeV.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

__all__ = ["CALOGAN", "CaloLayout", "Showers", "PARTICLES", "MEV"]

#: One MeV in GeV: file cells are in MeV, :class:`Showers` in GeV.
MEV = 1e-3

#: Particle names and their PDG ids (0: not recorded).
PARTICLES: dict[str, int] = {"eplus": -11, "eminus": 11, "gamma": 22, "piplus": 211,
                             "piminus": -211, "unknown": 0}


@dataclass(frozen=True)
class CaloLayout:
    """The readout of a layered calorimeter.

    Attributes:
        name: Short name (``calogan``).
        shapes: Cells per layer as (rows, columns), front layer first.
        cell_sizes_mm: Cell pitch per layer as (row pitch, column pitch) in mm; rows run
            along y, columns along x, the beam along z.
        depths_mm: Thickness of each layer along z in mm.
    """

    name: str
    shapes: tuple[tuple[int, int], ...]
    cell_sizes_mm: tuple[tuple[float, float], ...]
    depths_mm: tuple[float, ...]

    def __post_init__(self) -> None:
        n = len(self.shapes)
        if not (len(self.cell_sizes_mm) == len(self.depths_mm) == n):
            raise ValueError(f"layout {self.name}: shapes, cell sizes and depths differ in length")

    @property
    def n_layers(self) -> int:
        """Number of layers."""
        return len(self.shapes)

    @property
    def n_cells(self) -> tuple[int, ...]:
        """Cells per layer."""
        return tuple(r * c for r, c in self.shapes)

    @property
    def layer_edges_mm(self) -> np.ndarray:
        """z of the layer boundaries in mm, from the front face (``n_layers + 1`` values)."""
        return np.concatenate([[0.0], np.cumsum(self.depths_mm)])

    def cell_centres_mm(self, layer: int) -> tuple[np.ndarray, np.ndarray]:
        """Row (y) and column (x) centres of ``layer``'s cells in mm, the layer centred on 0."""
        (rows, cols), (dy, dx) = self.shapes[layer], self.cell_sizes_mm[layer]
        y = (np.arange(rows) - (rows - 1) / 2) * dy
        x = (np.arange(cols) - (cols - 1) / 2) * dx
        return y, x


#: CaloGAN's calorimeter: a 480 mm cube of lead / liquid argon read out in three layers.
CALOGAN = CaloLayout(
    name="calogan",
    shapes=((3, 96), (12, 12), (12, 6)),
    cell_sizes_mm=((160.0, 5.0), (40.0, 40.0), (40.0, 80.0)),
    depths_mm=(90.0, 347.0, 43.0),
)


@dataclass
class Showers:
    """A batch of showers, in GeV.

    Attributes:
        energy: Incident energy per shower, shape (N,), GeV.
        layers: One array per layer, shape (N, rows, columns), GeV.
        overflow: Energy deposited outside each layer's cells, shape (N, n_layers), GeV.
        particle: PDG id of the incident particle per shower, shape (N,); 0 if unknown.
        source: Where the showers came from (a file name), for messages.
    """

    energy: np.ndarray
    layers: tuple[np.ndarray, ...]
    overflow: np.ndarray
    particle: np.ndarray
    source: str = field(default="showers")

    def __post_init__(self) -> None:
        self.energy = np.asarray(self.energy, dtype=np.float32).reshape(-1)
        self.layers = tuple(np.asarray(x, dtype=np.float32) for x in self.layers)
        n = len(self.energy)
        self.overflow = np.asarray(self.overflow, dtype=np.float32).reshape(n, -1)
        self.particle = np.asarray(self.particle, dtype=np.int32).reshape(-1)
        for i, x in enumerate(self.layers):
            if x.ndim != 3 or len(x) != n:
                raise ValueError(f"{self.source}: layer_{i} has shape {x.shape}, expected "
                                 f"({n}, rows, columns) for {n} showers")
        if len(self.particle) != n:
            raise ValueError(f"{self.source}: {len(self.particle)} particle ids for {n} showers")
        if self.overflow.shape[1] != len(self.layers):
            raise ValueError(f"{self.source}: overflow has {self.overflow.shape[1]} values per "
                             f"shower for {len(self.layers)} layers")

    def __len__(self) -> int:
        return len(self.energy)

    @property
    def shapes(self) -> tuple[tuple[int, int], ...]:
        """Cells per layer as (rows, columns)."""
        return tuple(x.shape[1:] for x in self.layers)  # type: ignore[misc]

    def layer_energies(self) -> np.ndarray:
        """Energy in each layer's cells, shape (N, n_layers), GeV."""
        return np.stack([x.sum(axis=(1, 2)) for x in self.layers], axis=1)

    def select(self, index: np.ndarray | slice) -> Showers:
        """The showers at ``index`` (a slice, integer indices or a boolean mask)."""
        return Showers(self.energy[index], tuple(x[index] for x in self.layers),
                       self.overflow[index], self.particle[index], source=self.source)

    @classmethod
    def concatenate(cls, parts: Sequence[Showers]) -> Showers:
        """Showers of several batches with the same layer shapes, one after the other."""
        if not parts:
            raise ValueError("no showers to concatenate")
        shapes = {p.shapes for p in parts}
        if len(shapes) > 1:
            raise ValueError(f"showers with different layer shapes: {sorted(shapes)}")
        return cls(np.concatenate([p.energy for p in parts]),
                   tuple(np.concatenate([p.layers[i] for p in parts])
                         for i in range(len(parts[0].layers))),
                   np.concatenate([p.overflow for p in parts]),
                   np.concatenate([p.particle for p in parts]),
                   source=parts[0].source if len(parts) == 1 else f"{len(parts)} files")
