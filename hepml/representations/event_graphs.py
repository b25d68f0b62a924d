"""Event graphs: the reconstructed objects of each event (awkward) -> padded graph tensors.

Each event becomes one graph whose nodes are its reconstructed objects (jets, electrons,
muons, photons, ...) and, optionally, one node for the missing transverse momentum (MET).
The input holds, per event, jagged ``<collection>_px``, ``_py``, ``_pz``, ``_energy``
for every collection of :attr:`EventGraphConfig.collections`, optional per-object extra
fields ``<collection>_<name>`` (e.g. ``jet_btag``, ``muon_charge``), and the scalars
``met_px``, ``met_py``. Files with other branch names are read through a workflow's
``branches:`` mapping (e.g. ``muon_px: Muon_Px``).

Output, in the argument order of :class:`hepml.models.EventGNN`:

- ``x``         ``[B, N, F]``    float32 node features
- ``neighbors`` ``[B, N, K]``    int64, ``neighbors[b, i, s]`` is the index of a node ``j``
  sending a message to the centre ``i``; -1 where the slot holds no neighbour
- ``edge_attr`` ``[B, N, K, E]`` float32 features of the edge ``j -> i``; 0 where no edge
- ``mask``      ``[B, N]``       bool, True for a real node

with ``N = max_nodes`` for every chunk, so chunks concatenate.

Nodes:

- **MET first.** With ``met=True`` slot 0 of every event is the MET node, a massless
  transverse vector: ``(px, py, pz, E) = (met_px, met_py, 0, hypot(met_px, met_py))``,
  with η = 0 by definition. It is always kept.
- **Objects by pT.** The objects of all collections follow, hardest first. Of objects
  with equal pT, the one of the collection listed first in ``collections`` comes first,
  then input order.
- **Dropping.** An event keeps its ``max_nodes`` hardest objects (``max_nodes - 1`` with
  the MET node); softer ones are dropped, whatever their collection.
- **Empty events.** An event without objects is the MET node alone, or, with
  ``met=False``, an empty graph: every mask entry False, no edges, all zeros. An event
  with one node has no edges.

Node features ``x`` are, in this order: the kinematic features ``node_features`` from
:data:`EVENT_NODE_FEATURES`; a one-hot of the object type, one slot per collection in
``collections`` order, plus one for MET when ``met`` is on (always appended); the extra
fields of ``extras``, in ``collections`` order then list order, 0 for nodes of other
collections and for MET. :attr:`EventGraphConfig.feature_names` names every column.

Edges:

- ``edges="full"``: every ordered pair of distinct real nodes, ``K = max_nodes - 1``.
  The slots of centre ``i`` list the other nodes in slot order.
- ``edges="knn"``: the ``k`` nearest real nodes in (η, φ), Δφ wrapped to [-π, π], with
  the tie-breaking of :func:`hepml.representations.knn.knn_indices` (equal distances:
  the smaller node index first), ``K = k``. A centre with fewer than ``k`` other nodes
  has -1 in the remaining slots. The MET node takes part at η = 0.

Edge features ``edge_attr`` (:data:`EVENT_EDGE_FEATURES`) are computed for the edge from
the neighbour ``j`` to the centre ``i``: Δη = η_j - η_i, Δφ = φ_j - φ_i wrapped to
[-π, π), ΔR = hypot(Δη, Δφ), and the invariant mass of the pair from the summed
four-vectors (m² clipped at 0).

Kinematics: pT = hypot(px, py), φ = atan2(py, px), η = asinh(pz / pT) with pT floored at
``LOG_FLOOR`` (finite for pT = 0), m = sqrt(max(E² - |p|², 0)). Logarithms of pT and E are
taken of ``max(x, LOG_FLOOR)``; masses use ``log1p``. All arithmetic is in float64.

The whole chunk is built at once with numpy (plus torch for the kNN selection): the
collections are flattened and concatenated, ordered by ``np.lexsort`` on (event, -pT,
position), and scattered into the padded output at (event, slot); edge features are
computed on the real edges only (``np.nonzero`` of the valid slots) and scattered back.
There is no Python loop over events or objects; the loops run over collections and
feature names.

Bad input: a missing field raises :class:`~hepml.errors.MissingBranchError` (the reader,
:class:`hepml.io.Source`, raises it already for a file), a NaN or infinite value a
:class:`~hepml.errors.BadValueError` naming the field and the first bad event.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from collections.abc import Callable, Mapping
from typing import Any, Literal

import awkward as ak
import numpy as np
import torch

from hepml.errors import BadValueError, ConfigError, MissingBranchError, UnknownKeyError
from hepml.io.expressions import wrap_phi
from hepml.representations._arrays import check_finite
from hepml.representations._transform import ConfigMixin, Transform, check_names
from hepml.representations.knn import knn_indices, node_mask

log = logging.getLogger(__name__)

__all__ = ["COLLECTIONS", "EVENT_EDGE_FEATURES", "EVENT_NODE_FEATURES", "LOG_FLOOR",
           "EventGraphConfig", "EventGraphs", "make_event_graphs", "padded_to_sparse",
           "to_pyg"]

#: Floor applied before the logarithms of pT, E and kT (GeV), and to pT in η.
LOG_FLOOR = 1e-8

#: Object collections an event graph can hold; the input fields are
#: ``<collection>_px``, ``_py``, ``_pz``, ``_energy``.
COLLECTIONS: dict[str, str] = {
    "jet": "hadronic jets",
    "electron": "electrons",
    "muon": "muons",
    "photon": "photons",
    "tau": "hadronically decaying tau leptons",
    "fatjet": "large-radius jets",
}
_MOMENTUM = ("px", "py", "pz", "energy")
_MET_FIELDS = ("met_px", "met_py")


@dataclasses.dataclass(frozen=True)
class _Feature:
    description: str
    compute: Callable[[dict[str, np.ndarray]], np.ndarray]


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, LOG_FLOOR))


def _mass(e: np.ndarray, px: np.ndarray, py: np.ndarray, pz: np.ndarray) -> np.ndarray:
    return np.sqrt(np.maximum(e * e - (px * px + py * py + pz * pz), 0.0))


#: Node feature name -> what it is and how it is computed from the node's kinematics
#: (``px py pz energy pt eta phi mass``, float64 arrays).
EVENT_NODE_FEATURES: dict[str, _Feature] = {
    "log_pt": _Feature("log pT (GeV)", lambda v: _log(v["pt"])),
    "log_energy": _Feature("log E (GeV)", lambda v: _log(v["energy"])),
    "eta": _Feature("pseudorapidity asinh(pz / pT); 0 for MET", lambda v: v["eta"]),
    "phi": _Feature("azimuth atan2(py, px)", lambda v: v["phi"]),
    "cos_phi": _Feature("cos φ", lambda v: np.cos(v["phi"])),
    "sin_phi": _Feature("sin φ", lambda v: np.sin(v["phi"])),
    "log_mass": _Feature("log1p of m = sqrt(max(E² - |p|², 0)) (GeV)",
                         lambda v: np.log1p(v["mass"])),
    "mass": _Feature("m = sqrt(max(E² - |p|², 0)) (GeV)", lambda v: v["mass"]),
    "pt": _Feature("pT (GeV)", lambda v: v["pt"]),
    "px": _Feature("px (GeV)", lambda v: v["px"]),
    "py": _Feature("py (GeV)", lambda v: v["py"]),
    "pz": _Feature("pz (GeV)", lambda v: v["pz"]),
    "energy": _Feature("E (GeV)", lambda v: v["energy"]),
}


def _pair_mass(v: dict[str, np.ndarray]) -> np.ndarray:
    if "_mass" not in v:
        v["_mass"] = _mass(v["energy_i"] + v["energy_j"], v["px_i"] + v["px_j"],
                           v["py_i"] + v["py_j"], v["pz_i"] + v["pz_j"])
    return v["_mass"]


def _delta_r(v: dict[str, np.ndarray]) -> np.ndarray:
    return np.hypot(v["eta_j"] - v["eta_i"], wrap_phi(v["phi_j"] - v["phi_i"]))


#: Edge feature name -> what it is and how it is computed for the edge from the
#: neighbour ``j`` to the centre ``i`` (quantities of both ends, suffixed ``_i``/``_j``).
EVENT_EDGE_FEATURES: dict[str, _Feature] = {
    "delta_eta": _Feature("η_j - η_i", lambda v: v["eta_j"] - v["eta_i"]),
    "delta_phi": _Feature("φ_j - φ_i wrapped to [-π, π)",
                          lambda v: wrap_phi(v["phi_j"] - v["phi_i"])),
    "delta_r": _Feature("hypot(Δη, Δφ), Δφ wrapped", _delta_r),
    "log_mass": _Feature("log1p of the pair's invariant mass (summed four-vectors, m² "
                         "clipped at 0)", lambda v: np.log1p(_pair_mass(v))),
    "mass": _Feature("invariant mass of the pair (GeV)", _pair_mass),
    "log_kt": _Feature("log(min(pT_i, pT_j) ΔR)",
                       lambda v: _log(np.minimum(v["pt_i"], v["pt_j"]) * _delta_r(v))),
    "z": _Feature("min(pT_i, pT_j) / (pT_i + pT_j)",
                  lambda v: np.minimum(v["pt_i"], v["pt_j"])
                  / np.maximum(v["pt_i"] + v["pt_j"], LOG_FLOOR)),
}

_NODE_DEFAULT = ("log_pt", "log_energy", "eta", "cos_phi", "sin_phi", "log_mass")
_EDGES = ("full", "knn")
_NAME = re.compile(r"^[A-Za-z0-9_]+$")


def _positive_int(key: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{key}: expected a positive integer, got {value!r}")
    return int(value)


def _extras(value: Any, collections: tuple[str, ...]) -> dict[str, tuple[str, ...]]:
    if not isinstance(value, Mapping):
        raise ConfigError(f"extras: expected a mapping of collection to a list of field "
                          f"names (e.g. {{jet: [btag]}}), got {value!r}")
    out: dict[str, tuple[str, ...]] = {}
    for coll in value:
        if coll not in collections:
            raise UnknownKeyError(str(coll), collections, where="representation.extras "
                                  "(a collection of representation.collections)")
    for coll in collections:  # a fixed order: that of the collections
        if coll not in value:
            continue
        names = value[coll]
        names = (names,) if isinstance(names, str) else names
        if not isinstance(names, (list, tuple)):
            raise ConfigError(f"extras.{coll}: expected a list of field names, got {names!r}")
        for name in names:
            if not isinstance(name, str) or not _NAME.match(name) or name in _MOMENTUM:
                raise ConfigError(
                    f"extras.{coll}: {name!r} is not an extra field name (letters, digits "
                    f"and _; not one of {', '.join(_MOMENTUM)}); the field read is "
                    f"'{coll}_<name>'")
        if len(set(names)) != len(names):
            raise ConfigError(f"extras.{coll}: {list(names)} lists a field twice")
        if names:
            out[coll] = tuple(names)
    return out


@dataclasses.dataclass(frozen=True)
class EventGraphConfig(ConfigMixin):
    """How event graphs are made; checked when constructed.

    Attributes:
        collections: Object collections that become nodes, from :data:`COLLECTIONS`;
            their order fixes the one-hot slots and the order of equal-pT objects.
        met: Add the MET node (slot 0 of every event).
        extras: Collection -> extra per-object fields appended to the node features,
            e.g. ``{"jet": ["btag"], "muon": ["charge"]}`` reads ``jet_btag`` and
            ``muon_charge``; 0 for nodes of other collections.
        max_nodes: Nodes per event (``N``), the MET node included; the softest objects
            are dropped beyond it.
        node_features: Kinematic node features from :data:`EVENT_NODE_FEATURES`.
        edges: ``"full"`` (every ordered pair of distinct nodes) or ``"knn"`` (the ``k``
            nearest in (η, φ)).
        k: Neighbours per node with ``edges="knn"``.
        edge_features: Edge features from :data:`EVENT_EDGE_FEATURES`.
    """

    collections: tuple[str, ...] = ("jet", "electron", "muon", "photon")
    met: bool = True
    extras: dict = dataclasses.field(default_factory=dict)
    max_nodes: int = 20
    node_features: tuple[str, ...] = _NODE_DEFAULT
    edges: Literal["full", "knn"] = "full"
    k: int = 8
    edge_features: tuple[str, ...] = ("delta_r", "log_mass")

    def __post_init__(self) -> None:
        collections = check_names("collections", self.collections, COLLECTIONS, allow_empty=True)
        if not isinstance(self.met, bool):
            raise ConfigError(f"met: expected true or false, got {self.met!r}")
        if not collections and not self.met:
            raise ConfigError("collections: give at least one collection (or met: true); "
                              "the graphs would have no nodes")
        object.__setattr__(self, "collections", collections)
        object.__setattr__(self, "extras", _extras(self.extras, collections))
        object.__setattr__(self, "max_nodes", _positive_int("max_nodes", self.max_nodes))
        object.__setattr__(self, "k", _positive_int("k", self.k))
        object.__setattr__(self, "node_features",
                           check_names("node_features", self.node_features, EVENT_NODE_FEATURES,
                                       allow_empty=True))
        object.__setattr__(self, "edge_features",
                           check_names("edge_features", self.edge_features, EVENT_EDGE_FEATURES,
                                       allow_empty=True))
        if self.edges not in _EDGES:
            raise ConfigError(f"edges: {self.edges!r} is not one of "
                              f"{', '.join(map(repr, _EDGES))}")

    def __hash__(self) -> int:
        return hash((self.collections, self.met, tuple(self.extras.items()), self.max_nodes,
                     self.node_features, self.edges, self.k, self.edge_features))

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The input fields the graphs are made from."""
        fields = [f"{c}_{q}" for c in self.collections for q in _MOMENTUM]
        fields += [f"{c}_{e}" for c, names in self.extras.items() for e in names]
        if self.met:
            fields += list(_MET_FIELDS)
        return tuple(fields)

    @property
    def num_neighbors(self) -> int:
        """Neighbour slots per node (``K``)."""
        return self.max_nodes - 1 if self.edges == "full" else self.k

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the columns of ``x``: features, ``is_<type>`` one-hot, extras."""
        types = [f"is_{c}" for c in self.collections] + (["is_met"] if self.met else [])
        extras = [f"{c}_{e}" for c, names in self.extras.items() for e in names]
        return (*self.node_features, *types, *extras)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one event's ``x``, ``neighbors``, ``edge_attr`` and ``mask``."""
        n, k = self.max_nodes, self.num_neighbors
        return {"x": (n, len(self.feature_names)), "neighbors": (n, k),
                "edge_attr": (n, k, len(self.edge_features)), "mask": (n,)}


def _get(arrays: Any, name: str) -> ak.Array:
    fields = arrays.fields if isinstance(arrays, ak.Array) else list(arrays)
    if name not in fields:
        raise MissingBranchError("input arrays", "events", name, fields)
    arr = arrays[name]
    return arr if isinstance(arr, ak.Array) else ak.Array(arr)


def _numbers(arr: ak.Array, name: str, what: str) -> np.ndarray:
    try:
        values = ak.to_numpy(arr, allow_missing=False)
    except (ValueError, TypeError):
        values = None
    if values is None or values.ndim != 1 or values.dtype.kind not in "biuf":
        raise BadValueError(f"field {name!r}: expected {what}, got type {arr.type} "
                            "(missing values or records)")
    return values


def _check_finite(name: str, values: np.ndarray, event_of: np.ndarray | None) -> None:
    check_finite(name, values, event_of, entry="event", making="event graphs")


def _read_collection(arrays: Any, coll: str, extras: tuple[str, ...], n_events: int | None,
                     ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-event object counts and the flat float64 values of each field of ``coll``."""
    counts: np.ndarray | None = None
    first = ""
    flat: dict[str, np.ndarray] = {}
    for q in (*_MOMENTUM, *extras):
        name = f"{coll}_{q}"
        arr = _get(arrays, name)
        if arr.ndim != 2:
            raise BadValueError(f"field {name!r}: expected one list of values per event (a "
                                f"jagged branch), got type {arr.type}")
        num = np.asarray(ak.num(arr, axis=1), dtype=np.int64)
        if n_events is not None and len(num) != n_events:
            raise BadValueError(f"field {name!r} has {len(num)} entries but other fields "
                                f"have {n_events}: the fields do not belong together")
        if counts is None:
            counts, first = num, name
        elif not np.array_equal(num, counts):
            bad = int(np.flatnonzero(num != counts)[0])
            raise BadValueError(
                f"field {name!r} has {num[bad]} values in event {bad} but {first!r} has "
                f"{counts[bad]}: the fields of a collection must have one value per object")
        values = _numbers(ak.flatten(arr, axis=1), name, "numbers for every object")
        _check_finite(name, values, np.repeat(np.arange(len(num)), num))
        flat[q] = values.astype(np.float64)
    assert counts is not None  # the four momentum fields are always read
    return counts, flat


def _kinematics(px: np.ndarray, py: np.ndarray, pz: np.ndarray,
                energy: np.ndarray) -> dict[str, np.ndarray]:
    pt = np.hypot(px, py)
    return {"px": px, "py": py, "pz": pz, "energy": energy, "pt": pt,
            "eta": np.arcsinh(pz / np.maximum(pt, LOG_FLOOR)), "phi": np.arctan2(py, px),
            "mass": _mass(energy, px, py, pz)}


def _full_neighbors(mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Every other node, in slot order: ``j = s + (s >= i)``; valid where both are real.

    The real nodes of an event fill its first slots, so ``j`` is real when ``j < n``.
    """
    b, n = mask.shape
    s = np.arange(n - 1)
    idx = s[None, :] + (s[None, :] >= np.arange(n)[:, None])  # [N, N-1]
    n_real = mask.sum(1)
    valid = mask[:, :, None] & (idx[None] < n_real[:, None, None])
    return np.ascontiguousarray(np.broadcast_to(idx, (b, n, n - 1))), valid


def make_event_graphs(arrays: ak.Array | Mapping[str, Any],
                      config: EventGraphConfig | None = None) -> dict[str, torch.Tensor]:
    """Build the padded event graphs of a whole chunk at once.

    Args:
        arrays: One entry per event with the fields of ``config.required_fields``; an
            awkward record array or a mapping of field name to array. Not modified.
        config: Collections, features, edges and size (default: :class:`EventGraphConfig`).

    Returns:
        ``{"x", "neighbors", "edge_attr", "mask"}``, CPU tensors (float32, int64, float32,
        bool), in the argument order of :class:`hepml.models.EventGNN`.

    Shapes:
        - x: ``[B, N, F]``, ``N = config.max_nodes``, ``F = len(config.feature_names)``
        - neighbors: ``[B, N, K]``, ``K = config.num_neighbors``; -1 where no neighbour
        - edge_attr: ``[B, N, K, len(config.edge_features)]``; 0 where no neighbour
        - mask: ``[B, N]``

    Raises:
        MissingBranchError: A required field is missing (a ``KeyError``).
        BadValueError: A field has the wrong type, the fields of a collection disagree in
            length, or a value is NaN or infinite; the error names the field and has
            attributes ``branch``, ``count`` and ``event_index`` (the first bad event).
    """
    cfg = config if config is not None else EventGraphConfig()
    n_events: int | None = None
    met: tuple[np.ndarray, np.ndarray] | None = None
    if cfg.met:
        met_values = []
        for name in _MET_FIELDS:
            values = _numbers(_get(arrays, name), name, "one number per event")
            if n_events is not None and len(values) != n_events:
                raise BadValueError(f"field {name!r} has {len(values)} entries but "
                                    f"'met_px' has {n_events}")
            n_events = len(values)
            _check_finite(name, values, None)
            met_values.append(values.astype(np.float64))
        met = (met_values[0], met_values[1])

    # all objects of all collections, concatenated collection after collection
    n_extra = sum(len(v) for v in cfg.extras.values())
    p4_parts, event_parts, type_parts, extra_parts = [], [], [], []
    column = 0
    for t, coll in enumerate(cfg.collections):  # a handful of collections
        names = cfg.extras.get(coll, ())
        counts, flat = _read_collection(arrays, coll, names, n_events)
        n_events = len(counts)
        total = len(flat["px"])
        p4_parts.append(np.stack([flat[q] for q in _MOMENTUM], axis=1))
        event_parts.append(np.repeat(np.arange(n_events), counts))
        type_parts.append(np.full(total, t, dtype=np.int64))
        ext = np.zeros((total, n_extra))
        for e in names:
            ext[:, column] = flat[e]
            column += 1
        extra_parts.append(ext)
    assert n_events is not None  # config checks: a collection or the MET node
    b, n = n_events, cfg.max_nodes
    if cfg.collections:
        p4 = np.concatenate(p4_parts)
        event = np.concatenate(event_parts)
        otype = np.concatenate(type_parts)
        extra = np.concatenate(extra_parts)
    else:
        p4, event = np.zeros((0, 4)), np.zeros(0, dtype=np.int64)
        otype, extra = np.zeros(0, dtype=np.int64), np.zeros((0, n_extra))
    total = len(event)

    # order: by event, then hardest first, then position (collection order, input order)
    pt = np.hypot(p4[:, 0], p4[:, 1])
    order = np.lexsort((np.arange(total), -pt, event))
    ev_sorted = event[order]
    n_objects = np.bincount(event, minlength=b)
    start = np.cumsum(n_objects) - n_objects
    rank = np.arange(total) - start[ev_sorted]
    offset = 1 if cfg.met else 0
    keep = rank < n - offset
    src, dst_ev, dst_slot = order[keep], ev_sorted[keep], rank[keep] + offset

    n_types = len(cfg.collections) + offset
    node_p4 = np.zeros((b, n, 4))
    node_type = np.full((b, n), -1, dtype=np.int64)
    node_extra = np.zeros((b, n, n_extra))
    mask = np.zeros((b, n), dtype=bool)
    node_p4[dst_ev, dst_slot] = p4[src]
    node_type[dst_ev, dst_slot] = otype[src]
    node_extra[dst_ev, dst_slot] = extra[src]
    mask[dst_ev, dst_slot] = True
    if met is not None:
        node_p4[:, 0] = np.stack([met[0], met[1], np.zeros(b), np.hypot(met[0], met[1])], 1)
        node_type[:, 0] = n_types - 1
        mask[:, 0] = True

    kin = _kinematics(*(node_p4[..., c] for c in range(4)))
    if met is not None:
        kin["eta"][:, 0] = 0.0  # by definition: a transverse vector
    feats = [np.asarray(EVENT_NODE_FEATURES[f].compute(kin), dtype=np.float64)
             for f in cfg.node_features]
    x = np.concatenate([np.stack(feats, -1) if feats else np.zeros((b, n, 0)),
                        node_type[..., None] == np.arange(n_types), node_extra], axis=-1)
    x = np.where(mask[..., None], x, 0.0).astype(np.float32)

    # edges
    if cfg.edges == "full":
        nbr, valid = _full_neighbors(mask)
    else:
        coords = torch.from_numpy(np.stack([kin["eta"], kin["phi"]], -1))
        found = knn_indices(coords, cfg.k, torch.from_numpy(mask), periodic_dims=[1])
        nbr, valid = found.indices.numpy(), found.valid.numpy()
    kk = nbr.shape[-1]
    ev, centre, slot = np.nonzero(valid)  # the real edges only: features computed on them
    sender = nbr[ev, centre, slot]
    pair: dict[str, np.ndarray] = {}
    for q in ("px", "py", "pz", "energy", "pt", "eta", "phi"):
        pair[f"{q}_i"], pair[f"{q}_j"] = kin[q][ev, centre], kin[q][ev, sender]
    edge_attr = np.zeros((b, n, kk, len(cfg.edge_features)), dtype=np.float32)
    for c, name in enumerate(cfg.edge_features):  # a few features, not events
        edge_attr[ev, centre, slot, c] = EVENT_EDGE_FEATURES[name].compute(pair)
    neighbors = np.where(valid, nbr, -1).astype(np.int64)

    log.debug("%d event graphs of %d slots: %d of %d objects kept, %d events without objects",
              b, n, int(keep.sum()), total, int(np.count_nonzero(n_objects == 0)))
    return {"x": torch.from_numpy(x), "neighbors": torch.from_numpy(neighbors),
            "edge_attr": torch.from_numpy(edge_attr), "mask": torch.from_numpy(mask)}


def padded_to_sparse(x: torch.Tensor, neighbors: torch.Tensor, edge_attr: torch.Tensor | None,
                     mask: torch.Tensor | None = None,
                     ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """Padded graphs -> PyG's flat layout: real nodes only, edges with remapped indices.

    Vectorised (boolean indexing and a cumulative sum, no loop over events). Nodes are
    kept event after event, in slot order; edges are ordered by target node, then slot.
    A slot is an edge when it is not -1 and both of its ends are real nodes.

    Args:
        x: Node features.
        neighbors: Index of the node ``j`` that sends to centre ``i``; -1 for no edge.
        edge_attr: Edge features, or ``None``.
        mask: True for real nodes (``None``: all).

    Returns:
        ``(x_flat, edge_index, edge_attr_flat, batch)``: ``edge_index`` row 0 the source
        ``j``, row 1 the target ``i`` (PyG's ``flow="source_to_target"``), indices into
        ``x_flat``; ``batch`` the event of each node; ``edge_attr_flat`` is ``None`` when
        ``edge_attr`` is.

    Shapes:
        - x: ``[B, N, F]``; neighbors: ``[B, N, K]``; edge_attr: ``[B, N, K, E]``;
          mask: ``[B, N]``
        - x_flat: ``[n_valid, F]``; edge_index: ``[2, n_edges]``; edge_attr_flat:
          ``[n_edges, E]``; batch: ``[n_valid]``

    Raises:
        BadValueError: The shapes do not match, or a neighbour index is out of range.
    """
    if x.dim() != 3:
        raise BadValueError(f"x: expected [B, N, F], got shape {tuple(x.shape)}")
    b, n, f = x.shape
    device = x.device
    if neighbors.dim() != 3 or neighbors.shape[:2] != (b, n):
        raise BadValueError(f"neighbors: expected [{b}, {n}, K] to match x, got shape "
                            f"{tuple(neighbors.shape)}")
    k = neighbors.shape[2]
    if edge_attr is not None and (edge_attr.dim() != 4 or edge_attr.shape[:3] != (b, n, k)):
        raise BadValueError(f"edge_attr: expected [{b}, {n}, {k}, E] to match neighbors, got "
                            f"shape {tuple(edge_attr.shape)}")
    mask = node_mask(mask, b, n, device, against="x")
    neighbors = neighbors.to(device=device, dtype=torch.long)
    if neighbors.numel() and (int(neighbors.min()) < -1 or int(neighbors.max()) >= n):
        raise BadValueError(f"neighbors: indices must lie in [-1, {n - 1}], got "
                            f"{int(neighbors.min())} to {int(neighbors.max())}")
    flat_mask = mask.reshape(-1)
    new_index = torch.cumsum(flat_mask, 0) - 1  # position among the real nodes
    base = (torch.arange(b, device=device) * n).view(b, 1, 1)
    source = neighbors.clamp(min=0) + base  # [B, N, K], positions in the padded batch
    target = torch.arange(b * n, device=device).view(b, n, 1).expand(b, n, k)
    edge = (neighbors >= 0) & mask.unsqueeze(-1) & flat_mask[source]
    edge_index = torch.stack([new_index[source[edge]], new_index[target[edge]]])
    x_flat = x.reshape(b * n, f)[flat_mask]
    attr = edge_attr[edge] if edge_attr is not None else None
    batch = torch.repeat_interleave(torch.arange(b, device=device), mask.sum(1))
    return x_flat, edge_index, attr, batch


def to_pyg(graphs: Mapping[str, torch.Tensor]) -> Any:
    """Turn padded event graphs into a PyG ``Batch`` of one graph per event.

    Built directly from :func:`padded_to_sparse` (no ``Batch.from_data_list``, no loop);
    the slicing bookkeeping is filled in, so ``batch[i]`` and ``to_data_list()`` work.

    Args:
        graphs: The output of :func:`make_event_graphs`.

    Returns:
        ``torch_geometric.data.Batch`` with ``x`` ``[n_tot, F]``, ``edge_index``
        ``[2, n_edges]``, ``edge_attr`` ``[n_edges, E]``, ``batch`` ``[n_tot]`` and ``ptr``
        ``[B + 1]``; events without nodes are graphs with no nodes.
    """
    from torch_geometric.data import Batch, Data  # heavy: imported only when used

    mask = graphs["mask"].bool()
    x, edge_index, edge_attr, batch = padded_to_sparse(graphs["x"], graphs["neighbors"],
                                                       graphs["edge_attr"], mask)
    b = mask.shape[0]
    zero = torch.zeros(1, dtype=torch.long)
    ptr = torch.cat([zero, torch.cumsum(mask.sum(1), 0)])
    edge_counts = torch.bincount(batch[edge_index[1]], minlength=b)
    eptr = torch.cat([zero, torch.cumsum(edge_counts, 0)])
    out = Batch(x=x, edge_index=edge_index, edge_attr=edge_attr, batch=batch, ptr=ptr)
    out._num_graphs = b
    out._batch_cls = Data  # what to_data_list / indexing rebuild
    out._slice_dict = {"x": ptr, "edge_index": eptr, "edge_attr": eptr}
    out._inc_dict = {"x": torch.zeros(b, dtype=torch.long), "edge_index": ptr[:-1],
                     "edge_attr": torch.zeros(b, dtype=torch.long)}
    return out


class EventGraphs(Transform):
    """Transform: a chunk of events -> padded event graphs (see :func:`make_event_graphs`).

    Pure: the input arrays are not modified and the output depends only on them and on
    the configuration, which :meth:`to_dict` records. Calling it returns
    ``{"x", "neighbors", "edge_attr", "mask"}``; :class:`hepml.models.EventGNN` takes them
    as ``model(**graphs)`` or positionally in that order.

    Args:
        config: The graph configuration (default: :class:`EventGraphConfig`), or a plain
            mapping that :meth:`EventGraphConfig.from_dict` accepts.

    Shapes:
        - input: ``B`` events
        - output: ``x [B, N, F]``, ``neighbors [B, N, K]``, ``edge_attr [B, N, K, E]``,
          ``mask [B, N]``
    """

    config_class = EventGraphConfig

    def __call__(self, arrays: ak.Array | Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Graphs of ``arrays``: ``{"x", "neighbors", "edge_attr", "mask"}``."""
        return make_event_graphs(arrays, self.config)

    @property
    def output_shape(self) -> dict[str, tuple[int, ...]]:
        """Shape of one event's ``x``, ``neighbors``, ``edge_attr`` and ``mask``."""
        return self.config.shapes

    empty_description = "events have no objects; their graphs are empty"

    def count_empty(self, arrays: ak.Array | Mapping[str, Any]) -> int:
        """Number of events whose graph has no node (0 with the MET node on)."""
        if self.config.met:
            return 0
        total = sum(np.asarray(ak.num(_get(arrays, f"{c}_px"), axis=1), dtype=np.int64)
                    for c in self.config.collections)
        return int(np.count_nonzero(np.asarray(total) == 0))

    def to_pyg(self, arrays: ak.Array | Mapping[str, Any]) -> Any:
        """Graphs of ``arrays`` as a PyG ``Batch`` without padding (see :func:`to_pyg`)."""
        return to_pyg(self(arrays))
