"""Calorimeter showers: the layered layout, an in-memory container, and the file formats.

A shower is the energy deposited in each cell of a few calorimeter layers, plus the energy
of the incident particle. :class:`CaloLayout` describes the layers (cell grid, cell pitch,
depth); :data:`CALOGAN` is the three-layer lead / liquid-argon calorimeter of CaloGAN.
:class:`Showers` holds a batch of showers in memory, always in GeV.

Files on disk follow the CaloGAN convention: the incident ``energy`` in GeV, the cells
(``layer_0`` ... ``layer_{L-1}``) and the per-layer ``overflow`` in MeV. Three formats are
read and written:

* hepml's ROOT layout, a TTree ``showers`` with the branches ``energy`` (float32, GeV),
  ``layer_0`` ... ``layer_{L-1}`` (float32[rows][columns], MeV), ``overflow``
  (float32[L], MeV) and ``particle`` (int32, PDG id, 0: unknown), plus a metadata string
  (:func:`write_showers`, :func:`read_showers_root`);
* CaloGAN's HDF5 files (one per particle, which they do not record): datasets ``energy``
  (N,) or (N, 1) in GeV, ``layer_0`` (N, 3, 96), ``layer_1`` (N, 12, 12), ``layer_2``
  (N, 12, 6) and ``overflow`` (N, 3) in MeV (:func:`write_calogan_hdf5`,
  :func:`read_calogan_hdf5`);
* the HDF5 files of the Fast Calorimeter Simulation Challenge 2022: ``incident_energies``
  (N, 1) and ``showers`` (N, voxels), both in MeV, the voxels layer after layer, each
  layer row (angular bin) by row, column (radial bin) by column; the layers of the
  challenge's datasets are known from the voxel count (:data:`CHALLENGE_LAYERS`), others
  must be given (:func:`write_calochallenge_hdf5`, :func:`read_calochallenge_hdf5`).

:func:`read_showers` tells the formats apart by the file's first bytes and datasets, not
its name; :func:`iter_showers` reads a large file chunk by chunk and the writers take such
chunks one after the other. Writers replace the output only once it is complete.

Every reader checks the file before using it, with messages naming the file, the dataset
or branch and the entries: a missing, truncated or foreign file raises
:class:`~hepml.errors.InputFileError`; a missing dataset
:class:`~hepml.errors.MissingColumnError` (a missing branch
:class:`~hepml.errors.MissingBranchError`), listing those present; datasets of different
lengths, layer shapes other than expected, NaN, infinite or negative energies
:class:`~hepml.errors.BadValueError`; no showers :class:`~hepml.errors.EmptyInputError`.
A file without overflow reads as overflow 0, which is logged.
"""

from __future__ import annotations

import itertools
import logging
import os
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h5py
import numpy as np

from hepml.errors import (
    BadValueError,
    ConfigError,
    EmptyInputError,
    InputFileError,
    MissingBranchError,
    MissingColumnError,
    closest,
)
from hepml.io.atomic import atomic_path
from hepml.io.reading import open_tree
from hepml.io.writing import write_tree, write_tree_batches

__all__ = [
    "CALOGAN",
    "CaloLayout",
    "Showers",
    "PARTICLES",
    "MEV",
    "CHALLENGE_LAYERS",
    "FORMATS",
    "ShowerFile",
    "count_showers",
    "inspect_showers",
    "iter_showers",
    "parse_layer_shapes",
    "parse_particle",
    "read_calochallenge_hdf5",
    "read_calogan_hdf5",
    "read_showers",
    "read_showers_root",
    "shower_format",
    "write_calochallenge_hdf5",
    "write_calogan_hdf5",
    "write_showers",
]

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
        """Depth z of the layer boundaries in mm, from the front face (``n_layers + 1`` values)."""
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


# ------------------------------------------------------------------------------ file formats

log = logging.getLogger(__name__)

#: Voxels per shower of the Fast Calorimeter Simulation Challenge 2022 datasets -> the
#: (rows, columns) of each layer, rows being angular bins and columns radial bins.
CHALLENGE_LAYERS: dict[int, tuple[tuple[int, int], ...]] = {
    368: ((1, 8), (10, 16), (10, 19), (1, 5), (1, 5)),  # dataset 1, photons
    533: ((1, 8), (10, 10), (10, 10), (1, 5), (10, 15), (10, 16), (1, 10)),  # dataset 1, pions
    6480: ((16, 9),) * 45,  # dataset 2
    40500: ((50, 18),) * 45,  # dataset 3
}

#: The formats :func:`read_showers` tells apart.
FORMATS = ("root", "calogan", "calochallenge")

_ROOT_MAGIC = b"root"
_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MEV_PER_GEV = np.float32(round(1 / MEV))
_LAYER = re.compile(r"^layer_(\d+)$")
_ALIASES = {"e+": "eplus", "positron": "eplus", "e-": "eminus", "electron": "eminus",
            "photon": "gamma", "pi+": "piplus", "pi-": "piminus"}
#: Cells read per chunk by :func:`iter_showers` unless told otherwise (64 MB of float32).
_CHUNK_CELLS = 1 << 24
_UNITS = {"energy": "GeV", "layer_*": "MeV", "overflow": "MeV", "particle": "PDG id"}


def _gev(values: np.ndarray) -> np.ndarray:
    """MeV -> GeV as float32 (float64 input is divided before rounding)."""
    return np.asarray(values / _MEV_PER_GEV).astype(np.float32, copy=False)


def _mev(values: np.ndarray) -> np.ndarray:
    """GeV -> MeV as float32."""
    return np.asarray(values * _MEV_PER_GEV).astype(np.float32, copy=False)


def parse_particle(value: str | int | None) -> int:
    """The PDG id of a particle given by name (a key of :data:`PARTICLES`) or by PDG id.

    ``None`` gives 0 (unknown); a number or a string of digits (``"-11"``) is taken as a
    PDG id; names are case-insensitive, and ``e+``, ``positron``, ``e-``, ``electron``,
    ``photon``, ``pi+`` and ``pi-`` are understood too.

    Raises:
        ConfigError: An unknown name (the closest known one is suggested).
    """
    if value is None:
        return 0
    if isinstance(value, (bool, np.bool_)):
        raise ConfigError(f"particle {value!r}: give a name ({', '.join(PARTICLES)}) or a PDG id")
    if isinstance(value, (int, np.integer)):
        return int(value)
    text = str(value).strip()
    if re.fullmatch(r"[+-]?\d+", text):
        return int(text)
    name = _ALIASES.get(text.lower(), text.lower())
    if name in PARTICLES:
        return PARTICLES[name]
    hits = closest(text, list(PARTICLES) + list(_ALIASES))
    hint = f" Did you mean {_ALIASES.get(hits[0], hits[0])!r}?" if hits else ""
    raise ConfigError(f"unknown particle {value!r}.{hint} Known particles: "
                      f"{', '.join(PARTICLES)}, or give a PDG id (e.g. 22).")


def parse_layer_shapes(text: str | Sequence[Sequence[int]]) -> tuple[tuple[int, int], ...]:
    """Layer shapes from ``"1x8,10x16,10x19"`` (``45*16x9`` repeats a shape) or from pairs.

    Raises:
        ConfigError: The text or a shape is malformed, or a size is not positive.
    """
    if isinstance(text, str):
        shapes: list[tuple[int, int]] = []
        for part in (p.strip() for p in text.split(",")):
            m = re.fullmatch(r"(?:(\d+)\s*\*\s*)?(\d+)\s*[xX]\s*(\d+)", part)
            if not m:
                raise ConfigError(f"layer shapes {text!r}: {part!r} is not ROWSxCOLUMNS (e.g. "
                                  "'1x8,10x16,10x19,1x5,1x5'; '45*16x9' repeats a shape)")
            shapes += [(int(m.group(2)), int(m.group(3)))] * int(m.group(1) or 1)
    else:
        try:
            shapes = [(int(r), int(c)) for r, c in text]
        except (TypeError, ValueError):
            raise ConfigError(f"layer shapes {text!r}: expected (rows, columns) pairs"
                              ) from None
    if not shapes or any(r <= 0 or c <= 0 for r, c in shapes):
        raise ConfigError(f"layer shapes {text!r}: expected at least one layer, every size "
                          "positive")
    return tuple(shapes)


def _shapes_text(shapes: Sequence[tuple[int, int]]) -> str:
    return ",".join(f"{r}x{c}" for r, c in shapes)


# ---------------------------------------------------------------------------- inspecting


@dataclass(frozen=True)
class ShowerFile:
    """What a shower file holds, found without reading its cells.

    Attributes:
        path: The file.
        format: One of :data:`FORMATS`.
        n_showers: Number of showers.
        layer_shapes: (rows, columns) of each layer.
        has_overflow: Whether the file stores the overflow (otherwise it reads as 0).
        has_particle: Whether the file stores particle ids (only hepml's ROOT layout does).
    """

    path: str
    format: str
    n_showers: int
    layer_shapes: tuple[tuple[int, int], ...]
    has_overflow: bool
    has_particle: bool


def _check_exists(path: str) -> None:
    if not os.path.exists(path):
        raise InputFileError(f"{path}: no such file")
    if os.path.isdir(path):
        raise InputFileError(f"{path}: is a directory, not a shower file")
    if os.path.getsize(path) == 0:
        raise InputFileError(f"{path}: the file is empty (0 bytes); regenerate or re-copy it")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0]}" if text else type(exc).__name__


def _kind(path: str) -> str:
    """``root`` or ``hdf5`` from the first bytes of ``path``."""
    _check_exists(path)
    with open(path, "rb") as fh:
        magic = fh.read(8)
    if magic[:4] == _ROOT_MAGIC:
        return "root"
    if magic == _HDF5_MAGIC or h5py.is_hdf5(path):  # is_hdf5 also finds a user block
        return "hdf5"
    raise InputFileError(
        f"{path}: neither a ROOT nor an HDF5 file (it starts with {magic!r}; ROOT files start "
        f"with {_ROOT_MAGIC!r}, HDF5 files with {_HDF5_MAGIC!r})"
    )


def _open_hdf5(path: str) -> h5py.File:
    _check_exists(path)
    try:
        return h5py.File(path, "r")
    except Exception as exc:  # h5py raises OSError for truncated and non-HDF5 files
        with open(path, "rb") as fh:
            magic = fh.read(8)
        if magic == _HDF5_MAGIC:
            what = "it is probably truncated or corrupt"
        elif magic[:4] == _ROOT_MAGIC:
            what = "it is a ROOT file, not HDF5 (read_showers reads both)"
        else:
            what = f"it is not an HDF5 file (it starts with {magic!r}, HDF5 with {_HDF5_MAGIC!r})"
        raise InputFileError(f"{path}: cannot open the HDF5 file; {what} ({_first_line(exc)}). "
                             "Re-copy or regenerate it.") from None


def _hdf5_format(path: str, keys: Sequence[str]) -> str:
    if any(_LAYER.match(k) for k in keys):
        return "calogan"
    if "showers" in keys:
        return "calochallenge"
    raise InputFileError(
        f"{path}: an HDF5 file in no known shower layout: CaloGAN files hold energy, "
        "layer_0, layer_1, ... and overflow; Fast Calorimeter Simulation Challenge files "
        f"hold incident_energies and showers. Datasets found: {', '.join(keys) or 'none'}"
    )


def shower_format(path: str | os.PathLike) -> str:
    """The format of a shower file: ``"root"``, ``"calogan"`` or ``"calochallenge"``.

    Told from the file's first bytes (not its name) and, for HDF5, its datasets: a
    ``layer_N`` dataset means CaloGAN, a ``showers`` dataset the challenge layout.

    Raises:
        InputFileError: The file is missing, empty, not ROOT or HDF5, cannot be opened,
            or is HDF5 in neither layout (the message lists its datasets).
    """
    path = str(path)
    if _kind(path) == "root":
        return "root"
    with _open_hdf5(path) as f:
        return _hdf5_format(path, list(f.keys()))


class _Input:
    """An open, structurally checked shower file: reads entry ranges as :class:`Showers`."""

    path: str
    format: str
    n: int
    shapes: tuple[tuple[int, int], ...]
    has_overflow: bool
    has_particle: bool = False

    def info(self) -> ShowerFile:
        return ShowerFile(self.path, self.format, self.n, self.shapes, self.has_overflow,
                          self.has_particle)

    def range(self, entry_start: int | None, entry_stop: int | None) -> tuple[int, int]:
        """The entry range to read, as uproot reads it (negative counts from the end)."""
        n = self.n
        start = 0 if entry_start is None else int(entry_start)
        stop = n if entry_stop is None else int(entry_stop)
        start, stop = (min(max(x + n if x < 0 else x, 0), n) for x in (start, stop))
        if start >= stop:
            asked = f"{0 if entry_start is None else entry_start}-" \
                f"{'end' if entry_stop is None else entry_stop}"
            raise EmptyInputError(f"{self.path}: entries {asked} select no showers; the file "
                                  f"holds {n} (entries 0-{n - 1})")
        return start, stop

    def check_layout(self, layout: CaloLayout | None) -> None:
        if layout is not None and tuple(layout.shapes) != self.shapes:
            raise BadValueError(
                f"{self.path}: layers of {_shapes_text(self.shapes)} cells, layout "
                f"{layout.name} expects {_shapes_text(layout.shapes)}"
            )

    def read(self, start: int, stop: int, particle: int) -> Showers:  # pragma: no cover
        raise NotImplementedError

    def close(self) -> None:
        """Release the file."""

    def __enter__(self) -> _Input:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _empty(path: str, where: str) -> EmptyInputError:
    return EmptyInputError(f"{path}: {where} holds 0 showers (0 entries)")


def _check_values(path: str, name: str, values: np.ndarray, start: int, what: str) -> None:
    """NaN, infinite and negative energies -> :class:`BadValueError` naming the entry."""
    axes = tuple(range(1, values.ndim))
    for bad, kind in ((lambda v: ~np.isfinite(v), "NaN or infinite"),
                      (lambda v: v < 0, "negative")):
        mask = bad(values)
        if not mask.any():
            continue
        per_entry = mask.any(axis=axes) if axes else mask
        entries = np.flatnonzero(per_entry)
        first = int(entries[0])
        value = values[first][mask[first]][0] if axes else values[first]
        raise BadValueError(
            f"{path}: {what} {name!r} has {int(mask.sum())} {kind} values in {entries.size} "
            f"of {len(values)} entries read ({start}-{start + len(values)}), first at entry "
            f"{start + first} ({value}). Energies must be finite and not negative; fix or "
            "filter the file."
        )


def _read_dataset(path: str, ds: h5py.Dataset, start: int, stop: int) -> np.ndarray:
    try:
        return np.asarray(ds[start:stop])
    except Exception as exc:
        raise InputFileError(
            f"{path}: cannot read entries {start}-{stop} of dataset {ds.name.lstrip('/')!r}; "
            f"the file is probably truncated or corrupt ({_first_line(exc)})"
        ) from None


def _dataset(path: str, f: h5py.File, name: str, keys: Sequence[str], hint: str) -> h5py.Dataset:
    if name not in keys:
        raise MissingColumnError(path, name, keys, hint=hint)
    ds = f[name]
    if not isinstance(ds, h5py.Dataset) or ds.dtype.kind not in "fiu" or ds.ndim == 0:
        what = ("a group" if not isinstance(ds, h5py.Dataset) else
                "a single value" if ds.ndim == 0 else f"of type {ds.dtype}")
        raise BadValueError(f"{path}: {name!r} is {what}, expected a numeric dataset "
                            "with one row per shower")
    return ds


def _check_lengths(path: str, datasets: Mapping[str, h5py.Dataset | None]) -> int:
    lengths = {k: len(d) for k, d in datasets.items() if d is not None}
    if len(set(lengths.values())) > 1:
        shown = ", ".join(f"{k}: {v}" for k, v in lengths.items())
        raise BadValueError(f"{path}: datasets with different numbers of showers ({shown}); "
                            "every dataset needs one row per shower")
    return next(iter(lengths.values()))


def _check_energy_shape(path: str, ds: h5py.Dataset) -> None:
    if not (ds.ndim == 1 or (ds.ndim == 2 and ds.shape[1] == 1)):
        raise BadValueError(f"{path}: dataset {ds.name.lstrip('/')!r} has shape {ds.shape}, "
                            "expected (N,) or (N, 1): one incident energy per shower")


class _CaloganInput(_Input):
    format = "calogan"
    _hint = ("A CaloGAN file holds energy (GeV), layer_0, layer_1, ... (cells, MeV) and "
             "overflow (MeV).")

    def __init__(self, path: str, layout: CaloLayout | None) -> None:
        self.path, self.file = path, _open_hdf5(path)
        try:
            self._setup(layout)
        except BaseException:
            self.file.close()
            raise

    def _setup(self, layout: CaloLayout | None) -> None:
        path, f = self.path, self.file
        keys = list(f.keys())
        found = sorted(int(m.group(1)) for m in map(_LAYER.match, keys) if m)
        if layout is not None:
            wanted = layout.n_layers
            extra = [i for i in found if i >= wanted]
            if extra:
                raise BadValueError(
                    f"{path}: holds layer_{extra[0]}, but layout {layout.name} has "
                    f"{wanted} layers (layer_0 to layer_{wanted - 1}); read it with "
                    "layout=None to take every layer as it is"
                )
        else:
            wanted = found[-1] + 1 if found else 1
        self.energy = _dataset(path, f, "energy", keys, self._hint)
        self.layers = [_dataset(path, f, f"layer_{i}", keys, self._hint) for i in range(wanted)]
        self.overflow = _dataset(path, f, "overflow", keys, self._hint) \
            if "overflow" in keys else None
        _check_energy_shape(path, self.energy)
        for i, ds in enumerate(self.layers):
            if ds.ndim != 3:
                raise BadValueError(f"{path}: dataset 'layer_{i}' has shape {ds.shape}, "
                                    "expected (N, rows, columns)")
            if layout is not None and ds.shape[1:] != tuple(layout.shapes[i]):
                raise BadValueError(
                    f"{path}: dataset 'layer_{i}' has {ds.shape[1]}x{ds.shape[2]} cells per "
                    f"shower, layout {layout.name} expects "
                    f"{layout.shapes[i][0]}x{layout.shapes[i][1]}"
                )
        self.shapes = tuple((int(d.shape[1]), int(d.shape[2])) for d in self.layers)
        n_layers = len(self.layers)
        if self.overflow is not None and self.overflow.shape[1:] != (n_layers,) and not (
                n_layers == 1 and self.overflow.ndim == 1):
            raise BadValueError(f"{path}: dataset 'overflow' has shape {self.overflow.shape}, "
                                f"expected (N, {n_layers}): one value per shower and layer")
        self.has_overflow = self.overflow is not None
        self.n = _check_lengths(path, {"energy": self.energy, "overflow": self.overflow,
                                       **{f"layer_{i}": d for i, d in enumerate(self.layers)}})
        if self.n == 0:
            raise _empty(path, "the file")

    def read(self, start: int, stop: int, particle: int) -> Showers:
        path = self.path
        energy = _read_dataset(path, self.energy, start, stop).reshape(-1)
        _check_values(path, "energy", energy, start, "dataset")
        layers = []
        for i, ds in enumerate(self.layers):
            cells = _read_dataset(path, ds, start, stop)
            _check_values(path, f"layer_{i}", cells, start, "dataset")
            layers.append(_gev(cells))
        n = stop - start
        if self.overflow is None:
            overflow = np.zeros((n, len(layers)), np.float32)
        else:
            overflow = _read_dataset(path, self.overflow, start, stop).reshape(n, -1)
            _check_values(path, "overflow", overflow, start, "dataset")
            overflow = _gev(overflow)
        return Showers(energy, tuple(layers), overflow, np.full(n, particle, np.int32),
                       source=path)

    def close(self) -> None:
        self.file.close()


class _ChallengeInput(_Input):
    format = "calochallenge"
    _hint = ("A Fast Calorimeter Simulation Challenge file holds incident_energies (MeV) "
             "and showers (MeV, one row of voxels per shower).")

    def __init__(self, path: str, layer_shapes: Sequence[Sequence[int]] | str | None,
                 need_layers: bool = True) -> None:
        self.path, self.file, self.need_layers = path, _open_hdf5(path), need_layers
        try:
            self._setup(layer_shapes)
        except BaseException:
            self.file.close()
            raise

    def _setup(self, layer_shapes: Sequence[Sequence[int]] | str | None) -> None:
        path, f = self.path, self.file
        keys = list(f.keys())
        self.energy = _dataset(path, f, "incident_energies", keys, self._hint)
        self.showers = _dataset(path, f, "showers", keys, self._hint)
        _check_energy_shape(path, self.energy)
        if self.showers.ndim != 2:
            raise BadValueError(f"{path}: dataset 'showers' has shape {self.showers.shape}, "
                                "expected (N, voxels)")
        n_voxels = int(self.showers.shape[1])
        stored = f.attrs.get("layer_shapes")
        if layer_shapes is not None:
            shapes, said = parse_layer_shapes(layer_shapes), "the layer shapes given"
        elif stored is not None:
            shapes, said = parse_layer_shapes(np.asarray(stored).tolist()), \
                "the layer shapes stored in the file"
        elif n_voxels in CHALLENGE_LAYERS:
            shapes, said = CHALLENGE_LAYERS[n_voxels], "the challenge's layers"
        elif not self.need_layers:  # counting only: the split does not matter
            shapes, said = ((1, n_voxels),), "one layer"
        else:
            known = ", ".join(str(k) for k in CHALLENGE_LAYERS)
            raise BadValueError(
                f"{path}: dataset 'showers' has {n_voxels} voxels per shower, not one of the "
                f"challenge's known counts ({known}); give the layer shapes (rows x columns "
                "per layer, e.g. '1x8,10x16,10x19,1x5,1x5')"
            )
        total = sum(r * c for r, c in shapes)
        if total != n_voxels:
            raise BadValueError(
                f"{path}: dataset 'showers' has {n_voxels} voxels per shower, but "
                f"{said} ({_shapes_text(shapes)}) add up to {total}"
            )
        self.shapes = tuple(shapes)
        self.has_overflow = False
        self.n = _check_lengths(path, {"incident_energies": self.energy,
                                       "showers": self.showers})
        if self.n == 0:
            raise _empty(path, "the file")

    def read(self, start: int, stop: int, particle: int) -> Showers:
        path = self.path
        energy = _read_dataset(path, self.energy, start, stop).reshape(-1)
        _check_values(path, "incident_energies", energy, start, "dataset")
        voxels = _read_dataset(path, self.showers, start, stop)
        _check_values(path, "showers", voxels, start, "dataset")
        voxels = _gev(voxels)
        n, layers, offset = stop - start, [], 0
        for r, c in self.shapes:
            layers.append(voxels[:, offset:offset + r * c].reshape(n, r, c))
            offset += r * c
        return Showers(_gev(energy), tuple(layers),
                       np.zeros((n, len(layers)), np.float32), np.full(n, particle, np.int32),
                       source=path)

    def close(self) -> None:
        self.file.close()


class _RootInput(_Input):
    format = "root"

    def __init__(self, path: str, tree: str, layout: CaloLayout | None) -> None:
        self.path, self.tree = path, tree
        t = self.t = open_tree(path, tree)
        keys = [str(k) for k in t.keys()]
        found = sorted(int(m.group(1)) for m in map(_LAYER.match, keys) if m)
        wanted = max(found[-1] + 1 if found else 1, layout.n_layers if layout else 0)
        for name in ["energy"] + [f"layer_{i}" for i in range(wanted)]:
            if name not in keys:
                raise MissingBranchError(path, tree, name, keys)
        self.layers = [f"layer_{i}" for i in range(wanted)]
        self.has_overflow = "overflow" in keys
        self.has_particle = "particle" in keys
        shapes = {name: self._inner_shape(name) for name in
                  ["energy", *self.layers] + ["overflow"] * self.has_overflow}
        for name in self.layers:
            if len(shapes[name]) != 2:
                raise BadValueError(f"{path}:{tree}: branch {name!r} is "
                                    f"{t[name].typename}, expected float[rows][columns]")
        if shapes["energy"] not in ((), (1,)):
            raise BadValueError(f"{path}:{tree}: branch 'energy' is {t['energy'].typename}, "
                                "expected float (one incident energy per shower)")
        if self.has_overflow and shapes["overflow"] != (wanted,):
            raise BadValueError(f"{path}:{tree}: branch 'overflow' is "
                                f"{t['overflow'].typename}, expected float[{wanted}]")
        self.shapes = tuple(shapes[name] for name in self.layers)  # type: ignore[misc]
        self.n = int(t.num_entries)
        if self.n == 0:
            raise _empty(path, f"tree {tree!r}")

    def _inner_shape(self, name: str) -> tuple[int, ...]:
        interp = self.t[name].interpretation
        shape = getattr(interp, "inner_shape", None)
        dtype = getattr(interp, "from_dtype", None)
        if shape is None or dtype is None or np.dtype(dtype).base.kind not in "fiu":
            raise BadValueError(f"{self.path}:{self.tree}: branch {name!r} is "
                                f"{self.t[name].typename}; expected numbers of a fixed size "
                                "per shower (hepml's shower layout)")
        return tuple(int(x) for x in shape)

    def read(self, start: int, stop: int, particle: int) -> Showers:
        path, where = self.path, f"{self.path}:{self.tree}"
        names = ["energy", *self.layers] + ["overflow"] * self.has_overflow \
            + ["particle"] * self.has_particle
        try:
            arrays = self.t.arrays(names, entry_start=start, entry_stop=stop, library="np")
        except Exception as exc:
            raise InputFileError(f"{where}: cannot read entries {start}-{stop}; the file is "
                                 f"probably truncated or corrupt ({_first_line(exc)})") from None
        n = stop - start
        for name in names[:-1] if self.has_particle else names:
            _check_values(where, name, arrays[name], start, "branch")
        overflow = _gev(arrays["overflow"]) \
            if self.has_overflow else np.zeros((n, len(self.layers)), np.float32)
        pid = arrays["particle"] if self.has_particle else np.full(n, particle, np.int32)
        return Showers(arrays["energy"].reshape(-1),
                       tuple(_gev(arrays[name]) for name in self.layers),
                       overflow, pid, source=path)


def _open(path: str | os.PathLike, fmt: str | None = None, *, tree: str = "showers",
          layout: CaloLayout | None = None,
          layer_shapes: Sequence[Sequence[int]] | str | None = None,
          quiet: bool = False, need_layers: bool = True) -> _Input:
    path = str(path)
    if fmt is None:
        fmt = shower_format(path)
    if fmt == "root":
        inp: _Input = _RootInput(path, tree, layout)
    elif fmt == "calogan":
        inp = _CaloganInput(path, layout)
    elif fmt == "calochallenge":
        if layer_shapes is None and layout is not None:
            layer_shapes = layout.shapes
        inp = _ChallengeInput(path, layer_shapes, need_layers)
    else:
        raise ConfigError(f"unknown shower format {fmt!r}; known: {', '.join(FORMATS)}")
    try:
        inp.check_layout(layout)
    except BaseException:
        inp.close()
        raise
    if quiet:
        pass
    elif inp.format == "calochallenge":
        log.info("%s: the challenge layout stores no overflow; it reads as 0", path)
    elif not inp.has_overflow:
        where = f"{path}:{tree}: no 'overflow' branch" if inp.format == "root" else \
            f"{path}: no 'overflow' dataset"
        log.warning("%s; the overflow of every layer reads as 0", where)
    return inp


# ------------------------------------------------------------------------------- reading


def _read(inp: _Input, particle: str | int | None, entry_start: int | None,
          entry_stop: int | None) -> Showers:
    with inp:
        start, stop = inp.range(entry_start, entry_stop)
        return inp.read(start, stop, parse_particle(particle))


def read_showers_root(path: str | os.PathLike, *, tree: str = "showers",
                      entry_start: int | None = None, entry_stop: int | None = None,
                      particle: str | int | None = None) -> Showers:
    """Read showers from hepml's ROOT layout (see the module docstring).

    Args:
        path: The ROOT file.
        tree: The TTree.
        entry_start: First entry to read (negative: from the end); default 0.
        entry_stop: One past the last entry to read; default the end.
        particle: Particle id for files without a ``particle`` branch (else 0).

    Raises:
        InputFileError: The file is missing, truncated or not ROOT.
        MissingTreeError: No tree of that name.
        MissingBranchError: ``energy`` or a ``layer_N`` below the highest one is missing.
        BadValueError: A branch of the wrong shape; NaN, infinite or negative energies.
        EmptyInputError: No entries (in the file or in the requested range).
    """
    return _read(_open(path, "root", tree=tree), particle, entry_start, entry_stop)


def read_calogan_hdf5(path: str | os.PathLike, *, particle: str | int | None = None,
                      layout: CaloLayout | None = CALOGAN, entry_start: int | None = None,
                      entry_stop: int | None = None) -> Showers:
    """Read showers from a CaloGAN HDF5 file (energy in GeV, cells and overflow in MeV).

    Args:
        path: The HDF5 file.
        particle: Name or PDG id of the particle (CaloGAN files do not record it); 0 if
            not given.
        layout: The layers the file must hold (``layer_0`` ... with these shapes); None
            takes every ``layer_N`` as it is.
        entry_start: First shower to read (negative: from the end); default 0.
        entry_stop: One past the last shower to read; default the end.

    Raises:
        InputFileError: The file is missing, truncated or not HDF5.
        MissingColumnError: ``energy`` or a layer is missing (the message lists the
            datasets present).
        BadValueError: Datasets of different lengths, a layer shape that differs from
            ``layout``; NaN, infinite or negative energies.
        EmptyInputError: No showers (in the file or in the requested range).
        ConfigError: An unknown particle name.
    """
    return _read(_open(path, "calogan", layout=layout), particle, entry_start, entry_stop)


def read_calochallenge_hdf5(path: str | os.PathLike, *, particle: str | int | None = None,
                            layer_shapes: Sequence[tuple[int, int]] | str | None = None,
                            entry_start: int | None = None,
                            entry_stop: int | None = None) -> Showers:
    """Read showers from a Fast Calorimeter Simulation Challenge 2022 HDF5 file.

    The voxels of each shower are split into layers in file order, each layer's voxels
    row by row (row: angular bin, column: radial bin).

    Args:
        path: The HDF5 file.
        particle: Name or PDG id of the particle (the files do not record it); 0 if not
            given.
        layer_shapes: (rows, columns) of each layer, or text such as ``"1x8,10x16"``.
            Without it, the shapes stored by :func:`write_calochallenge_hdf5` are used,
            else those of the challenge dataset with the file's voxel count
            (:data:`CHALLENGE_LAYERS`).
        entry_start: First shower to read (negative: from the end); default 0.
        entry_stop: One past the last shower to read; default the end.

    Raises:
        InputFileError: The file is missing, truncated or not HDF5.
        MissingColumnError: ``incident_energies`` or ``showers`` is missing.
        BadValueError: Datasets of different lengths, a voxel count that is not the sum of
            the layer shapes or, without them, not a known one; NaN, infinite or negative
            energies.
        EmptyInputError: No showers (in the file or in the requested range).
        ConfigError: An unknown particle name or malformed layer shapes.
    """
    inp = _open(path, "calochallenge", layer_shapes=layer_shapes)
    return _read(inp, particle, entry_start, entry_stop)


def read_showers(path: str | os.PathLike, *, tree: str = "showers",
                 particle: str | int | None = None, layout: CaloLayout | None = None,
                 layer_shapes: Sequence[tuple[int, int]] | str | None = None,
                 entry_start: int | None = None, entry_stop: int | None = None) -> Showers:
    """Read showers from a file in any of :data:`FORMATS`, told apart by its content.

    Args:
        path: A hepml ROOT file, a CaloGAN or a challenge HDF5 file (see
            :func:`shower_format`).
        tree: The TTree of a ROOT file.
        particle: Particle name or PDG id for files that do not record it.
        layout: If given, the layer shapes the file must have (any format).
        layer_shapes: The layers of a challenge file (see :func:`read_calochallenge_hdf5`;
            default: ``layout``'s shapes, else the stored or known ones).
        entry_start: First shower to read (negative: from the end); default 0.
        entry_stop: One past the last shower to read; default the end.

    Raises:
        The errors of the reader of the file's format.
    """
    inp = _open(path, tree=tree, layout=layout, layer_shapes=layer_shapes)
    return _read(inp, particle, entry_start, entry_stop)


def inspect_showers(path: str | os.PathLike, *, tree: str = "showers",
                    layout: CaloLayout | None = None,
                    layer_shapes: Sequence[tuple[int, int]] | str | None = None) -> ShowerFile:
    """Check a shower file's structure (datasets or branches, shapes) without its cells.

    Arguments and errors as :func:`read_showers`, less those about values.
    """
    with _open(path, tree=tree, layout=layout, layer_shapes=layer_shapes, quiet=True) as inp:
        return inp.info()


def count_showers(path: str | os.PathLike, *, tree: str = "showers") -> int:
    """Number of showers in a file of any of :data:`FORMATS`, without reading the cells.

    The file's structure is checked as by :func:`inspect_showers`, except that the voxels
    of a challenge file need not split into known layers.
    """
    with _open(path, tree=tree, quiet=True, need_layers=False) as inp:
        return inp.n


def iter_showers(path: str | os.PathLike, *, chunk_size: int | None = None,
                 tree: str = "showers", particle: str | int | None = None,
                 layout: CaloLayout | None = None,
                 layer_shapes: Sequence[tuple[int, int]] | str | None = None,
                 entry_start: int | None = None,
                 entry_stop: int | None = None) -> Iterator[Showers]:
    """Read a shower file chunk by chunk, for files larger than memory.

    The file is opened and its structure checked when this is called, not at the first
    chunk. Arguments and errors as :func:`read_showers`.

    Args:
        path: The file.
        chunk_size: Showers per chunk; by default about 16 million cells.
        tree: As :func:`read_showers`.
        particle: As :func:`read_showers`.
        layout: As :func:`read_showers`.
        layer_shapes: As :func:`read_showers`.
        entry_start: As :func:`read_showers`.
        entry_stop: As :func:`read_showers`.

    Returns:
        An iterator over :class:`Showers` in file order.
    """
    pid = parse_particle(particle)
    inp = _open(path, tree=tree, layout=layout, layer_shapes=layer_shapes)
    try:
        start, stop = inp.range(entry_start, entry_stop)
        cells = max(sum(r * c for r, c in inp.shapes), 1)
        step = int(chunk_size) if chunk_size else max(_CHUNK_CELLS // cells, 1)
        if step <= 0:
            raise ConfigError(f"chunk_size must be positive, got {chunk_size}")
    except BaseException:
        inp.close()
        raise
    return _chunks(inp, start, stop, step, pid)


def _chunks(inp: _Input, start: int, stop: int, step: int, pid: int) -> Iterator[Showers]:
    with inp:
        for first in range(start, stop, step):
            yield inp.read(first, min(first + step, stop), pid)


# ------------------------------------------------------------------------------- writing


def _as_parts(showers: Showers | Iterable[Showers]) -> Iterator[Showers]:
    """The showers to write, one batch after the other, all with the same layers."""
    parts = iter([showers] if isinstance(showers, Showers) else showers)
    first = next(parts, None)
    if first is None:
        raise EmptyInputError("no showers to write")
    yield first
    for part in parts:
        if part.shapes != first.shapes:
            raise BadValueError(
                f"{part.source}: showers with layers of {_shapes_text(part.shapes)} cells "
                f"cannot follow {first.source}'s {_shapes_text(first.shapes)} in one file"
            )
        yield part


def _root_branches(s: Showers) -> dict[str, np.ndarray]:
    out = {"energy": s.energy.astype(np.float32)}
    out.update({f"layer_{i}": _mev(x)
                for i, x in enumerate(s.layers)})
    out["overflow"] = _mev(s.overflow)
    out["particle"] = s.particle.astype(np.int32)
    return out


def write_showers(path: str | os.PathLike, showers: Showers | Iterable[Showers], *,
                  metadata: Mapping[str, Any] | None = None, tree: str = "showers") -> Path:
    """Write showers to hepml's ROOT layout (see the module docstring), atomically.

    Args:
        path: Output file; replaced only once the new file is complete.
        showers: The showers, or batches of showers with the same layers (e.g. from
            :func:`iter_showers`), written one after the other without holding them all.
        metadata: JSON-serialisable description (source files, particle ...), stored
            with the units and layer shapes (see :func:`hepml.io.writing.read_metadata`).
        tree: Name of the TTree.

    Returns:
        The path written.

    Raises:
        EmptyInputError: An empty iterable of batches.
        BadValueError: Batches with different layer shapes.
    """
    path = Path(path)
    parts = _as_parts(showers)
    first = next(parts)

    def describe(n: int) -> dict[str, Any]:
        return {"content": "calorimeter showers", "units": _UNITS, "n_showers": n,
                "layer_shapes": [list(s) for s in first.shapes], **dict(metadata or {})}

    if isinstance(showers, Showers):
        return write_tree(path, _root_branches(first), tree=tree, metadata=describe(len(first)))
    # batches: the same file as write_tree makes, written batch by batch
    return write_tree_batches(path, (_root_branches(p) for p in itertools.chain([first], parts)),
                              tree=tree, metadata=describe)


def _write_hdf5(path: str | os.PathLike, showers: Showers | Iterable[Showers],
                datasets: Callable[[Showers], dict[str, np.ndarray]],
                attrs: Callable[[Showers], dict[str, Any]]) -> tuple[Path, int, Showers]:
    """Write the ``datasets`` of every batch into a new HDF5 file, atomically."""
    path = Path(path)
    parts = _as_parts(showers)
    first = next(parts)
    n = 0
    with atomic_path(path) as tmp, h5py.File(tmp, "w") as f:
        f.attrs.update(attrs(first))
        for part in itertools.chain([first], parts):
            for name, values in datasets(part).items():
                if name not in f:
                    row = max(int(np.prod(values.shape[1:])), 1)
                    f.create_dataset(name, shape=(0, *values.shape[1:]),
                                     maxshape=(None, *values.shape[1:]), dtype=values.dtype,
                                     chunks=(max(min(1 << 16, (1 << 20) // row), 1),
                                             *values.shape[1:]))
                ds = f[name]
                ds.resize(n + len(values), axis=0)
                ds[n:] = values
            n += len(part)
    return path, n, first


def write_calogan_hdf5(path: str | os.PathLike,
                       showers: Showers | Iterable[Showers]) -> Path:
    """Write showers as a CaloGAN HDF5 file, atomically.

    Datasets: ``energy`` (N, 1) in GeV, ``layer_0`` ... (N, rows, columns) and
    ``overflow`` (N, layers) in MeV, all float32. The particle ids are not stored (the
    format has no place for them). Any layer shapes are written, not only CaloGAN's.

    Args:
        path: Output file; replaced only once the new file is complete.
        showers: The showers, or batches of them with the same layers.

    Returns:
        The path written.
    """
    def datasets(s: Showers) -> dict[str, np.ndarray]:
        out = {"energy": s.energy.reshape(-1, 1).astype(np.float32)}
        out.update({f"layer_{i}": _mev(x)
                    for i, x in enumerate(s.layers)})
        out["overflow"] = _mev(s.overflow)
        return out

    out, n, _ = _write_hdf5(path, showers, datasets, lambda s: {})
    log.info("wrote %d showers to %s (CaloGAN layout)", n, out)
    return out


def write_calochallenge_hdf5(path: str | os.PathLike,
                             showers: Showers | Iterable[Showers]) -> Path:
    """Write showers as a Fast Calorimeter Simulation Challenge 2022 HDF5 file, atomically.

    Datasets: ``incident_energies`` (N, 1) and ``showers`` (N, voxels), in MeV, float32;
    the voxels layer after layer, each layer row by row. The layer shapes are kept as the
    file attribute ``layer_shapes``, which :func:`read_calochallenge_hdf5` uses. The
    layout has no place for the overflow or the particle ids; they are not written.

    Args:
        path: Output file; replaced only once the new file is complete.
        showers: The showers, or batches of them with the same layers.

    Returns:
        The path written.
    """
    dropped = 0.0

    def datasets(s: Showers) -> dict[str, np.ndarray]:
        nonlocal dropped
        dropped += float(s.overflow.sum(dtype=np.float64))
        flat = np.concatenate([x.reshape(len(s), -1) for x in s.layers], axis=1)
        return {"incident_energies": _mev(s.energy.reshape(-1, 1)),
                "showers": _mev(flat)}

    def attrs(s: Showers) -> dict[str, Any]:
        return {"layer_shapes": np.asarray(s.shapes, dtype=np.int64).reshape(-1, 2)}

    out, n, _ = _write_hdf5(path, showers, datasets, attrs)
    if dropped:
        log.info("%s: the challenge layout has no overflow; %.6g GeV of overflow not written",
                 out, dropped)
    log.info("wrote %d showers to %s (challenge layout)", n, out)
    return out
