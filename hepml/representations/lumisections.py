"""Lumisection maps: per-lumisection detector histograms -> one ``[N, 1, H, W]`` tensor.

Data-quality monitoring looks at the occupancy histograms that the detector fills during a
lumisection (LS), one fixed-size 2-D histogram per LS and sub-detector, e.g.
``calo_occupancy[eta][phi]`` and ``tracker_occupancy[layer][phi]``. This representation
stacks the histograms named in ``histograms`` along their first axis into one map per LS,

    map = [calo_occupancy; tracker_occupancy]          shape (30 + 10, 36)

so every column is one phi wedge of the whole detector and a convolutional autoencoder sees
the detector as one image. All histograms must therefore share the last axis (the phi
bins): the same number of bins and, where the file records them, the same edges.

With ``normalize="per_event"`` (the default) each LS's counts are divided by its number of
recorded crossings (``events_branch``), giving a rate per crossing that does not change with
the length of the LS; ``"none"`` keeps the counts.

**Binning.** A representation is *bound* to a binning (:meth:`LumisectionMaps.bind`): the
shape of each histogram and, when the file metadata has them, its axis names and edges.
The binning is part of :meth:`~LumisectionMaps.to_dict`, so a checkpoint records what its
model was trained on; a chunk or file with another shape or other edges is refused with a
:class:`~hepml.errors.BadValueError` naming the histogram and both binnings.

**Bad values.** NaN or infinite bins, negative counts and negative or non-finite event
counts raise :class:`~hepml.errors.BadValueError` naming the run, the lumisection and the
histogram. A lumisection with ``n_events == 0`` recorded no crossings and has no rate: its
map is all zero and :meth:`LumisectionMaps.empty_mask` marks it, so that the task can leave
it out of training and scoring (its score is NaN) and list it.

The whole chunk is built at once with numpy; there is no loop over lumisections.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar, Literal

import awkward as ak
import numpy as np
import torch

from hepml.errors import BadValueError, ConfigError, MissingBranchError
from hepml.representations._transform import ConfigMixin, Transform

log = logging.getLogger(__name__)

__all__ = ["LumisectionMapConfig", "LumisectionMaps", "HistogramLayout", "NORMALIZATIONS",
           "binning_from_metadata"]

#: Accepted values of ``LumisectionMapConfig.normalize``.
NORMALIZATIONS = ("per_event", "none")

#: Relative tolerance when comparing bin edges of two binnings.
_EDGE_RTOL = 1e-6


@dataclasses.dataclass(frozen=True)
class HistogramLayout:
    """Where one histogram lies in the stacked map.

    Attributes:
        name: The histogram (branch) name.
        row_start: First row of the stacked map that holds it.
        shape: ``(rows, columns)`` of the histogram.
        axis_names: Names of its two axes (``("axis0", "axis1")`` when unknown).
        edges: Bin edges of the two axes (bin indices ``0..n`` when unknown).
    """

    name: str
    row_start: int
    shape: tuple[int, int]
    axis_names: tuple[str, str]
    edges: tuple[np.ndarray, np.ndarray]

    @property
    def row_stop(self) -> int:
        """One past the last row of the histogram in the stacked map."""
        return self.row_start + self.shape[0]

    def centers(self, i: int, j: int) -> dict[str, float]:
        """Bin centres of bin ``(i, j)``, keyed by axis name."""
        return {self.axis_names[0]: float(0.5 * (self.edges[0][i] + self.edges[0][i + 1])),
                self.axis_names[1]: float(0.5 * (self.edges[1][j] + self.edges[1][j + 1]))}


@dataclasses.dataclass(frozen=True)
class LumisectionMapConfig(ConfigMixin):
    """How lumisection maps are made; checked when constructed.

    Attributes:
        histograms: Fixed-size 2-D histogram branches, stacked in this order along their
            first axis; all must have the same last axis. Default
            ``("calo_occupancy", "tracker_occupancy")``.
        events_branch: Branch with the number of recorded crossings of the LS. Default
            ``"n_events"``.
        normalize: ``"per_event"`` (counts / ``events_branch``, default) or ``"none"``.
        run_branch: Branch with the run number, for messages and outputs.
        lumi_branch: Branch with the lumisection number, for messages and outputs.
        binning: The binning the maps are bound to (filled by :meth:`LumisectionMaps.bind`,
            stored in checkpoints): histogram -> ``{"shape": [rows, cols], "axes":
            [{"name": ..., "edges": [...]}, ...]}`` (``axes`` only when known). Empty:
            not bound yet, any shape is accepted.
        dtype: ``"float32"`` (default) or ``"float64"``, the dtype of the output tensor.
    """

    histograms: tuple[str, ...] = ("calo_occupancy", "tracker_occupancy")
    events_branch: str = "n_events"
    normalize: Literal["per_event", "none"] = "per_event"
    run_branch: str = "run"
    lumi_branch: str = "lumi"
    binning: dict = dataclasses.field(default_factory=dict)
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        names = self.histograms
        if isinstance(names, str):
            names = (names,)
        if not isinstance(names, (list, tuple)) or not names or not all(
                isinstance(n, str) and n for n in names):
            raise ConfigError(f"representation.histograms: expected a non-empty list of "
                              f"histogram branch names, got {self.histograms!r}")
        if len(set(names)) != len(names):
            raise ConfigError(f"representation.histograms: {list(names)} lists a name twice")
        object.__setattr__(self, "histograms", tuple(names))
        if self.normalize not in NORMALIZATIONS:
            raise ConfigError(f"representation.normalize: {self.normalize!r} is not one of "
                              f"{', '.join(map(repr, NORMALIZATIONS))}")
        other = {self.events_branch, self.run_branch, self.lumi_branch}
        if other & set(names):
            raise ConfigError(f"representation.histograms: {sorted(other & set(names))} is also "
                              "used as the events, run or lumi branch")
        if self.binning:
            object.__setattr__(self, "binning", _clean_binning(self.binning, self.histograms))

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The branches read: the histograms, the event count, run and lumi numbers."""
        return (*self.histograms, self.events_branch, self.run_branch, self.lumi_branch)


def _clean_binning(binning: Mapping[str, Any], histograms: Sequence[str]) -> dict[str, Any]:
    """A binning as plain data, checked: one entry per histogram, shapes of two ints."""
    if not isinstance(binning, Mapping):
        raise ConfigError(f"representation.binning: expected a mapping, got {binning!r}")
    missing = [h for h in histograms if h not in binning]
    if missing:
        raise ConfigError(f"representation.binning: no binning for {missing}; it must describe "
                          f"every histogram of {list(histograms)}")
    out: dict[str, Any] = {}
    for name in histograms:
        entry = binning[name]
        shape = entry.get("shape") if isinstance(entry, Mapping) else None
        if (not isinstance(shape, (list, tuple)) or len(shape) != 2
                or not all(isinstance(k, (int, np.integer)) and k > 0 for k in shape)):
            raise ConfigError(f"representation.binning.{name}.shape: expected two positive "
                              f"integers, got {shape!r}")
        clean: dict[str, Any] = {"shape": [int(shape[0]), int(shape[1])]}
        axes = entry.get("axes")
        if axes:
            if len(axes) != 2:
                raise ConfigError(f"representation.binning.{name}.axes: expected two axes")
            clean["axes"] = []
            for k, axis in enumerate(axes):
                edges = [float(e) for e in axis["edges"]]
                if len(edges) != clean["shape"][k] + 1:
                    raise ConfigError(
                        f"representation.binning.{name}: axis {axis.get('name', k)!r} has "
                        f"{len(edges)} edges for {clean['shape'][k]} bins")
                clean["axes"].append({"name": str(axis.get("name", f"axis{k}")), "edges": edges})
        out[name] = clean
    return out


def binning_from_metadata(metadata: Mapping[str, Any] | None, histograms: Sequence[str]
                          ) -> dict[str, list[dict[str, Any]]]:
    """The axes (names and edges) of ``histograms`` recorded in a file's hepml metadata.

    Args:
        metadata: As from :func:`hepml.io.read_metadata`; its ``"histograms"`` entry maps a
            histogram name to ``{"axes": [{"name": ..., "edges": [...]}, ...]}``.
        histograms: The histograms wanted.

    Returns:
        Histogram -> its two axes, for the histograms the metadata describes.
    """
    described = (metadata or {}).get("histograms") or {}
    out = {}
    for name in histograms:
        axes = (described.get(name) or {}).get("axes")
        if axes and len(axes) == 2 and all("edges" in a for a in axes):
            out[name] = [{"name": str(a.get("name", f"axis{k}")),
                          "edges": [float(e) for e in a["edges"]]} for k, a in enumerate(axes)]
    return out


def _describe(entry: Mapping[str, Any]) -> str:
    """One-line text of one histogram's binning, for error messages."""
    shape = entry["shape"]
    axes = entry.get("axes")
    if not axes:
        return f"{shape[0]} x {shape[1]} bins (edges unknown)"
    parts = [f"{a['name']}: {len(a['edges']) - 1} bins [{a['edges'][0]:g}, {a['edges'][-1]:g}]"
             for a in axes]
    return ", ".join(parts)


class LumisectionMaps(Transform):
    """A chunk of lumisections -> stacked, optionally per-crossing histogram maps.

    ``__call__(arrays)`` returns a ``[N, 1, H_total, W]`` tensor, ``H_total`` the sum of
    the histograms' first dimensions and ``W`` their shared last dimension.

    Example:
        >>> maps = LumisectionMaps({"histograms": ["calo_occupancy"]})
        >>> maps.required_fields
        ('calo_occupancy', 'n_events', 'run', 'lumi')
    """

    config_class: ClassVar[type] = LumisectionMapConfig
    empty_description: ClassVar[str] = ("lumisections have n_events == 0 (no crossings "
                                         "recorded); they are excluded and scored NaN")

    # ------------------------------------------------------------------ binning
    @property
    def bound(self) -> bool:
        """Whether the representation records a binning."""
        return bool(self.config.binning)

    def observed_binning(self, arrays: ak.Array, metadata: Mapping[str, Any] | None = None,
                         *, where: str = "input") -> dict[str, Any]:
        """The binning of the histograms in ``arrays`` (and axes from ``metadata``).

        Raises:
            BadValueError: A histogram is not a fixed-size 2-D branch, or the histograms do
                not share their last axis (the phi bins).
        """
        axes = binning_from_metadata(metadata, self.config.histograms)
        out: dict[str, Any] = {}
        for name in self.config.histograms:
            values = self._histogram(arrays, name, where)
            entry: dict[str, Any] = {"shape": [int(values.shape[1]), int(values.shape[2])]}
            if name in axes:
                for k, axis in enumerate(axes[name]):
                    if len(axis["edges"]) != entry["shape"][k] + 1:
                        raise BadValueError(
                            f"{where}: the file metadata gives axis {axis['name']!r} of histogram "
                            f"{name!r} {len(axis['edges']) - 1} bins, but the branch has "
                            f"{entry['shape'][k]}: the file is inconsistent")
                entry["axes"] = axes[name]
            out[name] = entry
        self._check_shared_axis(out, where)
        return out

    def _check_shared_axis(self, binning: Mapping[str, Any], where: str) -> None:
        names = list(self.config.histograms)
        first = names[0]
        for name in names[1:]:
            a, b = binning[first], binning[name]
            if a["shape"][1] != b["shape"][1]:
                raise BadValueError(
                    f"{where}: histograms {first!r} ({a['shape'][0]} x {a['shape'][1]}) and "
                    f"{name!r} ({b['shape'][0]} x {b['shape'][1]}) do not share their last axis "
                    "(the phi bins): lumisection maps stack the histograms along their first "
                    "axis, so every histogram needs the same number of bins in its last axis. "
                    "List only histograms with the same phi binning in representation.histograms.")
            if a.get("axes") and b.get("axes") and not np.allclose(
                    a["axes"][1]["edges"], b["axes"][1]["edges"], rtol=_EDGE_RTOL, atol=0):
                raise BadValueError(
                    f"{where}: histograms {first!r} and {name!r} have {a['shape'][1]} bins in "
                    "their last axis but different edges; they cannot be stacked into one "
                    "map of shared phi wedges")

    def check_binning(self, observed: Mapping[str, Any], *, where: str = "input") -> None:
        """Refuse ``observed`` if it differs from the bound binning.

        Shapes are always compared; edges when both binnings have them.

        Raises:
            BadValueError: Naming the histogram and both binnings.
        """
        if not self.bound:
            return
        for name in self.config.histograms:
            want, got = self.config.binning[name], observed[name]
            same = list(want["shape"]) == list(got["shape"])
            if same and want.get("axes") and got.get("axes"):
                same = all(
                    len(wa["edges"]) == len(ga["edges"])
                    and np.allclose(wa["edges"], ga["edges"], rtol=_EDGE_RTOL, atol=1e-12)
                    for wa, ga in zip(want["axes"], got["axes"], strict=True))
            if not same:
                raise BadValueError(
                    f"{where}: histogram {name!r} has binning {_describe(got)}, but the model "
                    f"was trained on {_describe(want)}. Score files with the binning of the "
                    "training run, or train a model on this binning.")

    def bind(self, observed: Mapping[str, Any], *, where: str = "input") -> LumisectionMaps:
        """This representation bound to ``observed`` (checked against it if already bound).

        Axis edges that are known in ``observed`` but not in the bound binning are not
        added; a bound representation never changes.
        """
        if self.bound:
            self.check_binning(observed, where=where)
            return self
        self._check_shared_axis(observed, where)
        return LumisectionMaps(dataclasses.replace(self.config, binning=dict(observed)))

    @property
    def layout(self) -> list[HistogramLayout]:
        """Where each histogram lies in the stacked map (needs a bound binning)."""
        if not self.bound:
            raise ConfigError("lumisection maps: the layout is known once the maps are bound "
                              "to a binning (LumisectionMaps.bind)")
        out, row = [], 0
        for name in self.config.histograms:
            entry = self.config.binning[name]
            shape = (int(entry["shape"][0]), int(entry["shape"][1]))
            axes = entry.get("axes")
            if axes:
                names = (axes[0]["name"], axes[1]["name"])
                edges = (np.asarray(axes[0]["edges"], float), np.asarray(axes[1]["edges"], float))
            else:
                names = ("axis0", "axis1")
                edges = (np.arange(shape[0] + 1, dtype=float), np.arange(shape[1] + 1, dtype=float))
            out.append(HistogramLayout(name, row, shape, names, edges))
            row += shape[0]
        return out

    @property
    def output_shape(self) -> tuple[int, int, int] | None:
        """``(1, H_total, W)`` of one map, or ``None`` before binding."""
        if not self.bound:
            return None
        shapes = [self.config.binning[n]["shape"] for n in self.config.histograms]
        return (1, int(sum(s[0] for s in shapes)), int(shapes[0][1]))

    def channel(self, row: int, col: int) -> tuple[HistogramLayout, int, int]:
        """The histogram and its bin ``(i, j)`` behind cell ``(row, col)`` of the map."""
        for lay in self.layout:
            if lay.row_start <= row < lay.row_stop:
                return lay, row - lay.row_start, col
        raise IndexError(f"row {row} lies outside the map")

    # ------------------------------------------------------------------ building
    def _histogram(self, arrays: Any, name: str, where: str) -> np.ndarray:
        fields = arrays.fields if isinstance(arrays, ak.Array) else list(arrays)
        if name not in fields:
            raise MissingBranchError(where, "lumisections", name, fields)
        arr = arrays[name]
        try:
            values = ak.to_numpy(arr) if isinstance(arr, ak.Array) else np.asarray(arr)
        except (ValueError, TypeError):
            values = None
        if values is None or values.ndim != 3 or values.dtype.kind not in "biuf":
            kind = ak.type(arr) if isinstance(arr, ak.Array) else getattr(values, "shape", "?")
            raise BadValueError(
                f"{where}: branch {name!r} must be a fixed-size 2-D histogram of numbers per "
                f"lumisection (e.g. int32[30][36]), got {kind}")
        return values

    def ids(self, arrays: Any) -> tuple[np.ndarray, np.ndarray]:
        """Run and lumisection numbers of every entry (int64)."""
        c = self.config
        fields = arrays.fields if isinstance(arrays, ak.Array) else list(arrays)
        for name in (c.run_branch, c.lumi_branch):
            if name not in fields:
                raise MissingBranchError("input arrays", "lumisections", name, fields)
        return (np.asarray(ak.to_numpy(arrays[c.run_branch])).astype(np.int64),
                np.asarray(ak.to_numpy(arrays[c.lumi_branch])).astype(np.int64))

    def n_events(self, arrays: Any) -> np.ndarray:
        """The checked number of crossings of each lumisection (float64).

        Raises:
            BadValueError: A negative, NaN or infinite count, naming run and lumisection.
        """
        c = self.config
        fields = arrays.fields if isinstance(arrays, ak.Array) else list(arrays)
        if c.events_branch not in fields:
            raise MissingBranchError("input arrays", "lumisections", c.events_branch, fields)
        n = np.asarray(ak.to_numpy(arrays[c.events_branch])).astype(np.float64)
        bad = ~np.isfinite(n) | (n < 0)
        if bad.any():
            run, lumi = self.ids(arrays)
            k = int(np.flatnonzero(bad)[0])
            raise BadValueError(
                f"run {run[k]} lumi {lumi[k]}: {c.events_branch!r} is {float(n[k]):g} "
                f"({int(bad.sum())} lumisection(s) with a negative, NaN or infinite event "
                "count); fix or drop these lumisections")
        return n

    def empty_mask(self, arrays: Any) -> np.ndarray:
        """``True`` for lumisections with ``n_events == 0`` (no rate, excluded)."""
        return self.n_events(arrays) == 0

    def count_empty(self, arrays: Any) -> int:
        """Number of lumisections with ``n_events == 0``."""
        return int(self.empty_mask(arrays).sum())

    def stack(self, arrays: Any, names: Sequence[str], *, where: str = "input",
              check: bool = True) -> np.ndarray:
        """Histograms ``names`` of every entry stacked along their first axis, ``[N, H, W]``.

        Also serves the per-channel fault masks, which have the histograms' shapes
        (``names`` = the mask branches, in the order of ``histograms``). With ``check``,
        NaN/inf and negative bins raise :class:`BadValueError` naming run, lumi and branch.
        """
        parts = []
        width = None
        for name in names:
            values = self._histogram(arrays, name, where)
            if width is not None and values.shape[2] != width:
                raise BadValueError(
                    f"{where}: branch {name!r} has {values.shape[2]} bins in its last axis but "
                    f"{names[0]!r} has {width}; the histograms must share their last axis "
                    "(the phi bins) to be stacked")
            width = values.shape[2]
            if check:
                self._check_values(arrays, name, values, where)
            parts.append(values)
        return np.concatenate(parts, axis=1)

    def _check_values(self, arrays: Any, name: str, values: np.ndarray, where: str) -> None:
        if values.dtype.kind == "f":
            bad = ~np.isfinite(values).reshape(len(values), -1)
            per_ls = bad.any(axis=1)
            if per_ls.any():
                run, lumi = self.ids(arrays)
                k = int(np.flatnonzero(per_ls)[0])
                raise BadValueError(
                    f"{where}: run {run[k]} lumi {lumi[k]}: histogram {name!r} has "
                    f"{int(bad[k].sum())} NaN or infinite bins ({int(per_ls.sum())} "
                    "lumisection(s) affected in this chunk); fix the input or drop these "
                    "lumisections (hepml does not guess replacements)")
        if values.dtype.kind in "if":
            neg = (values < 0).reshape(len(values), -1).any(axis=1)
            if neg.any():
                run, lumi = self.ids(arrays)
                k = int(np.flatnonzero(neg)[0])
                raise BadValueError(
                    f"{where}: run {run[k]} lumi {lumi[k]}: histogram {name!r} has negative "
                    f"bins ({int(neg.sum())} lumisection(s) in this chunk); occupancies "
                    "count hits and cannot be negative")

    def __call__(self, arrays: Any, *, where: str = "input") -> torch.Tensor:
        """Maps of every lumisection of ``arrays``: ``[N, 1, H_total, W]``.

        Lumisections with ``n_events == 0`` get an all-zero map; see :meth:`empty_mask`.

        Raises:
            BadValueError: Bad values (see the module docstring), histograms that do not
                share their last axis, or a shape that differs from the bound binning.
        """
        c = self.config
        counts = self.stack(arrays, c.histograms, where=where)
        if self.bound:
            observed = {}
            for name in c.histograms:
                shape = self._histogram(arrays, name, where).shape[1:]
                observed[name] = {"shape": [int(shape[0]), int(shape[1])]}
            self.check_binning(observed, where=where)
        n = self.n_events(arrays)
        dtype = np.float32 if c.dtype == "float32" else np.float64
        maps = counts.astype(np.float64)
        if c.normalize == "per_event":
            scale = np.divide(1.0, n, out=np.zeros_like(n), where=n > 0)
            maps *= scale[:, None, None]
        else:
            maps[n == 0] = 0.0
        return torch.from_numpy(maps.astype(dtype, copy=False)[:, None])

    def describe_channel(self, row: int, col: int) -> str:
        """Human text of map cell ``(row, col)``: ``"calo_occupancy eta=1.27 phi=0.52"``."""
        lay, i, j = self.channel(row, col)
        centers = lay.centers(i, j)
        return lay.name + " " + " ".join(f"{k}={v:.4g}" for k, v in centers.items())
