"""Hit graphs: the tracker hits of a chunk of events -> padded graphs for an edge classifier.

The input of the GNN tracker (Exa.TrkX style: X. Ju et al., arXiv:2103.06995; G. DeZoort
et al., arXiv:2103.16701). Every event becomes one graph:

- **Nodes** are all hits of the event, in input order: node ``i`` of event ``b`` is hit
  ``i`` of the event's jagged ``hit_*`` lists, so a result per node maps straight back
  to the input (and to ``hit_id``). Hits with ``hit_layer == -1`` are nodes without edges.
- **Edges** are the candidate segments of :func:`~hepml.representations.hits.layer_pair_edges`:
  pairs (inner, outer) of hits on layers ``l`` and ``l + 1 + s`` for ``s <= max_skip``
  (so a track survives ``max_skip`` missing hits in a row) that pass the φ-slope, z0 and
  optional η windows. They are directed outwards and ordered by (inner hit, outer hit).
- **Truth** ``y`` is 1 for an edge joining two hits of one particle (``edge_labels:
  same_particle``, the default), or only for an edge joining consecutive hits of one
  particle (``consecutive``, :func:`~hepml.representations.hits.edge_truth`), else 0.
  With ``consecutive`` labels an edge that jumps over a hit of its own particle is a
  negative example that looks exactly like a positive one except for the hit it skips;
  on the shipped ttbar sample with pile-up these are as many as the true segments, and
  they keep the classifier from separating the classes. Track building prefers the
  shorter of two good edges (see :mod:`hepml.tasks.tracking.graph_building`), so the
  skipping edges of a particle do not cost it hits.

Output of :class:`HitGraphs` for ``N`` events, padded to the largest event of the chunk
(``H`` hits, ``E`` edges), in the argument order of
:class:`hepml.models.hit_gnn.EdgeClassifierIN`:

- ``x``         ``[N, H, 3]``  float32 node features (:data:`HIT_NODE_FEATURES`), 0 for padding
- ``edges``     ``[N, E, 2]``  int64 local hit indices (inner, outer), -1 for padding
- ``edge_attr`` ``[N, E, 6]``  float32 edge features (:data:`HIT_EDGE_FEATURES`), 0 for padding
- ``y``         ``[N, E]``     float32 truth, -1 for padding (only with ``truth=True``)
- ``n_hits``    ``[N]``        int64 hits per event (the real nodes are the first ``n_hits``)
- ``n_edges``   ``[N]``        int64 edges per event (the real edges are the first ``n_edges``)

``H`` and ``E`` change from chunk to chunk; every tensor has the event as first
dimension, so slicing events (as :class:`hepml.training.ChunkedDataset` does) keeps the
graphs whole. :func:`unpad` gives back flat edge lists over the whole chunk: the global
index of a hit is ``local index + offset of its event`` (``offset = cumsum(n_hits)``
before the event), which is also its index in :class:`~hepml.representations.hits.HitArrays`
and in ``ak.flatten(events["hit_x"])``.

Node features, with ``φ = atan2(y, x)`` and ``r = hypot(x, y)``:
``r / r_scale``, ``φ / π``, ``z / z_scale``.

Edge features, Δ taken outer minus inner (Δr > 0 for every edge):

- ``dr``: Δr / r_scale
- ``dphi``: Δφ wrapped to [-π, π) (rad)
- ``dz``: Δz / z_scale
- ``dR``: hypot(Δη, Δφ) with the hit pseudorapidity η = asinh(z / r) seen from the origin
- ``phi_slope``: Δφ / Δr · r_scale (rad per r_scale; below ``phi_slope_max · r_scale``)
- ``z0``: (z_inner − r_inner Δz / Δr) / z_scale, the segment extrapolated to the beam line

Events without hits are graphs with no nodes and no edges (their rows are padding only);
a chunk of such events only gives ``H = E = 0``. A NaN or infinite coordinate raises
:class:`~hepml.errors.BadValueError` naming the field and the first bad event, and so does
a ``hit_layer`` outside ``-1 .. n_layers - 1``.

Everything is computed for the whole chunk at once (numpy): the hits are flattened, the
candidate edges found by sorted φ windows per layer pair, sorted, and scattered into the
padded output at (event, slot). The only Python loop runs over layer pairs.
"""

from __future__ import annotations

import dataclasses
import logging
import typing
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml.errors import BadValueError, ConfigError
from hepml.representations._arrays import _field
from hepml.representations._transform import ConfigMixin, Transform
from hepml.representations.hits import (
    HIT_FIELDS,
    TRUTH_FIELDS,
    HitArrays,
    edge_truth,
    layer_pair_edges,
    layer_pairs,
    wrap_phi,
)

log = logging.getLogger(__name__)

__all__ = ["HIT_EDGE_FEATURES", "HIT_NODE_FEATURES", "HitGraphConfig", "HitGraphs",
           "make_hit_graphs", "unpad"]

#: Node feature -> what it is (the columns of ``x``, in order).
HIT_NODE_FEATURES: dict[str, str] = {
    "r": "r / r_scale, r = hypot(x, y)",
    "phi": "φ / π, φ = atan2(y, x)",
    "z": "z / z_scale",
}
#: Edge feature -> what it is (the columns of ``edge_attr``, in order); Δ = outer − inner.
HIT_EDGE_FEATURES: dict[str, str] = {
    "dr": "Δr / r_scale",
    "dphi": "Δφ wrapped to [-π, π) (rad)",
    "dz": "Δz / z_scale",
    "dR": "hypot(Δη, Δφ), η = asinh(z / r) of each hit",
    "phi_slope": "Δφ / Δr · r_scale",
    "z0": "(z_inner − r_inner Δz / Δr) / z_scale",
}

#: Floor (mm) of r in a hit's η = asinh(z / r), so that a hit on the axis stays finite.
_R_FLOOR = 1e-6


def _positive_number(key: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
            or not np.isfinite(value) or value <= 0:
        raise ConfigError(f"representation.{key}: expected a positive number, got {value!r}")
    return float(value)


def _integer(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"representation.{key}: expected an integer >= {low}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class HitGraphConfig(ConfigMixin):
    """How hit graphs are made; checked when constructed.

    Attributes:
        n_layers: Barrel layers, numbered 0 (innermost) to ``n_layers - 1`` in ``hit_layer``.
        max_skip: Layers an edge may jump over: edges join layer ``l`` to ``l + 1``, ...,
            ``l + 1 + max_skip``. 1 (the default) keeps a track whole across one missing hit.
        phi_slope_max: Largest |Δφ / Δr| of an edge (rad/mm); the bending of a track from
            the beam line is about ``0.3 B / (2 pT)``: 0.0006 keeps pT down to about 0.5 GeV
            at 2 T.
        z0_max: Largest |z0| (mm) of an edge extrapolated to the beam line (the luminous
            region is a few σz long).
        eta_max: Optional largest |η| of an edge's direction (``None``: no cut).
        r_scale: Length (mm) that divides r and Δr in the features.
        z_scale: Length (mm) that divides z, Δz and z0 in the features.
        edge_labels: ``same_particle`` (an edge is true when both hits belong to one
            particle) or ``consecutive`` (also no hit of the particle lies between them).
    """

    n_layers: int = 10
    max_skip: int = 1
    phi_slope_max: float = 0.0006
    z0_max: float = 200.0
    eta_max: float | None = None
    r_scale: float = 1000.0
    z_scale: float = 1000.0
    edge_labels: typing.Literal["same_particle", "consecutive"] = "same_particle"

    def __post_init__(self) -> None:
        n_layers = _integer("n_layers", self.n_layers, 2)
        max_skip = _integer("max_skip", self.max_skip, 0)
        if max_skip > n_layers - 2:
            raise ConfigError(f"representation.max_skip: {max_skip} skips more layers than "
                              f"{n_layers} layers allow; use at most {n_layers - 2}")
        object.__setattr__(self, "n_layers", n_layers)
        object.__setattr__(self, "max_skip", max_skip)
        for key in ("phi_slope_max", "z0_max", "r_scale", "z_scale"):
            object.__setattr__(self, key, _positive_number(key, getattr(self, key)))
        if self.eta_max is not None:
            object.__setattr__(self, "eta_max", _positive_number("eta_max", self.eta_max))

    def fields(self, *, truth: bool = True) -> tuple[str, ...]:
        """The input fields read: the hit fields, and ``hit_particle_id`` with ``truth``."""
        return HIT_FIELDS + (TRUTH_FIELDS if truth else ())

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The input fields read to train: hit fields and the truth particle of each hit."""
        return self.fields(truth=True)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the columns of ``x``."""
        return tuple(HIT_NODE_FEATURES)

    @property
    def edge_feature_names(self) -> tuple[str, ...]:
        """Names of the columns of ``edge_attr``."""
        return tuple(HIT_EDGE_FEATURES)

    @property
    def pairs(self) -> list[tuple[int, int]]:
        """The layer pairs (inner, outer) that edges join."""
        return layer_pairs(self.n_layers, self.max_skip)

    @property
    def shapes(self) -> dict[str, tuple[int | None, ...]]:
        """Shape of one event's outputs; ``None`` where the size depends on the chunk."""
        return {"x": (None, len(HIT_NODE_FEATURES)), "edges": (None, 2),
                "edge_attr": (None, len(HIT_EDGE_FEATURES)), "y": (None,),
                "n_hits": (), "n_edges": ()}


def _check_layers(hits: HitArrays, n_layers: int) -> None:
    bad = (hits.layer < -1) | (hits.layer >= n_layers)
    if bad.any():
        first = int(np.argmax(bad))
        exc = BadValueError(
            f"field 'hit_layer': {int(bad.sum())} value(s) outside -1 .. {n_layers - 1}, the "
            f"first ({int(hits.layer[first])}) in event {int(hits.event[first])} (entry index "
            f"within this chunk). Number the barrel layers 0 .. n_layers - 1 from the inside "
            f"out (-1 for hits not used), or set representation.n_layers.")
        exc.branch, exc.count, exc.event_index = "hit_layer", int(bad.sum()), int(hits.event[first])
        raise exc


def _edge_features(hits: HitArrays, src: np.ndarray, dst: np.ndarray,
                   cfg: HitGraphConfig) -> np.ndarray:
    """``[n_edges, 6]`` float32 features of the edges ``src -> dst`` (HIT_EDGE_FEATURES)."""
    eta = np.arcsinh(hits.z / np.maximum(hits.r, np.float32(_R_FLOOR)))  # per hit, once
    out = np.empty((len(src), len(HIT_EDGE_FEATURES)), dtype=np.float32)
    r_in, z_in = hits.r[src], hits.z[src]
    dr = hits.r[dst] - r_in  # > 0 for every candidate edge
    dz = hits.z[dst] - z_in
    dphi = wrap_phi(hits.phi[dst] - hits.phi[src])
    out[:, 0] = dr / np.float32(cfg.r_scale)
    out[:, 1] = dphi
    out[:, 2] = dz / np.float32(cfg.z_scale)
    out[:, 3] = np.hypot(eta[dst] - eta[src], dphi)
    out[:, 4] = dphi / dr * np.float32(cfg.r_scale)
    out[:, 5] = (z_in - r_in * (dz / dr)) / np.float32(cfg.z_scale)
    return out


def make_hit_graphs(events: ak.Array | Mapping[str, Any] | HitArrays,
                    config: HitGraphConfig | None = None, *,
                    truth: bool = True) -> dict[str, torch.Tensor]:
    """Build the padded hit graphs of a whole chunk at once.

    Args:
        events: One entry per event with the jagged fields of ``config.fields(truth=...)``
            (an awkward record array or a mapping of field name to array), or the
            :class:`~hepml.representations.hits.HitArrays` already made from them. Not
            modified.
        config: Layers, windows and scales (default: :class:`HitGraphConfig`).
        truth: Read ``hit_particle_id`` and return the edge truth ``y``.

    Returns:
        ``{"x", "edges", "edge_attr", "y", "n_hits", "n_edges"}`` (no ``"y"`` without
        truth), CPU tensors; shapes and padding in the module docstring.

    Raises:
        MissingBranchError: A required field is missing (a ``KeyError``).
        BadValueError: The hit fields of an event differ in length, a coordinate is NaN
            or infinite, or ``hit_layer`` lies outside ``-1 .. n_layers - 1``.
    """
    cfg = config if config is not None else HitGraphConfig()
    if isinstance(events, HitArrays):
        hits = events
        if truth and hits.particle is None:
            raise BadValueError("hit graphs with truth need the truth particle of each hit: "
                                "make the HitArrays with truth=True, or call with truth=False")
    else:
        hits = HitArrays.from_awkward(events, truth=truth)
    _check_layers(hits, cfg.n_layers)
    n_events = hits.n_events
    offsets = hits.offsets

    src, dst = layer_pair_edges(hits, cfg.pairs, phi_slope_max=cfg.phi_slope_max,
                                z0_max=cfg.z0_max, eta_max=cfg.eta_max)
    # by (inner, outer); hits are event-major, so this also sorts by event
    order = np.argsort(src * np.int64(len(hits) + 1) + dst)
    src, dst = src[order], dst[order]

    n_hits = np.asarray(hits.counts, dtype=np.int64)
    h_max = int(n_hits.max()) if n_events else 0
    local = np.arange(len(hits)) - offsets[hits.event]
    x = np.zeros((n_events, h_max, len(HIT_NODE_FEATURES)), dtype=np.float32)
    x[hits.event, local] = np.stack([hits.r / cfg.r_scale, hits.phi / np.pi,
                                     hits.z / cfg.z_scale], axis=1)

    ev = hits.event[src]
    n_edges = np.bincount(ev, minlength=n_events).astype(np.int64)
    e_max = int(n_edges.max()) if n_events else 0
    # position in the flattened [N * E] padded layout
    flat = np.arange(len(src)) + (ev * e_max - (np.cumsum(n_edges) - n_edges)[ev])
    edges = np.full((n_events * e_max, 2), -1, dtype=np.int64)
    base = offsets[ev]
    edges[flat, 0] = src - base
    edges[flat, 1] = dst - base
    edge_attr = np.zeros((n_events * e_max, len(HIT_EDGE_FEATURES)), dtype=np.float32)
    edge_attr[flat] = _edge_features(hits, src, dst, cfg)
    edges = edges.reshape(n_events, e_max, 2)
    edge_attr = edge_attr.reshape(n_events, e_max, len(HIT_EDGE_FEATURES))

    out = {"x": torch.from_numpy(x), "edges": torch.from_numpy(edges),
           "edge_attr": torch.from_numpy(edge_attr)}
    if truth:
        y = np.full(n_events * e_max, -1.0, dtype=np.float32)
        if cfg.edge_labels == "consecutive":
            y[flat] = edge_truth(hits, src, dst)
        else:
            y[flat] = ((hits.particle[src] == hits.particle[dst])
                       & (hits.particle[src] != 0)).astype(np.float32)
        out["y"] = torch.from_numpy(y.reshape(n_events, e_max))
    out["n_hits"] = torch.from_numpy(n_hits.copy())
    out["n_edges"] = torch.from_numpy(n_edges)
    log.debug("%d hit graphs: %d hits, %d edges (at most %d and %d per event)", n_events,
              len(hits), len(src), h_max, e_max)
    return out


def unpad(edges: torch.Tensor, n_hits: torch.Tensor, *per_edge: torch.Tensor
          ) -> tuple[torch.Tensor, ...]:
    """Padded graphs -> flat edge lists over all events, with global hit indices.

    The global index of a hit is its local index plus the number of hits of the events
    before it (``cumsum(n_hits)``), i.e. its index in the flat hits of the chunk. Edges
    come out event after event, in slot order; padding slots (-1) are dropped.

    Args:
        edges: ``[N, E, 2]`` local (inner, outer) indices, -1 for padding.
        n_hits: ``[N]`` hits per event.
        per_edge: Any ``[N, E, ...]`` tensors (scores, ``y``, ``edge_attr``) to flatten
            the same way.

    Returns:
        ``(src, dst, *flat)``: ``src``/``dst`` ``[n_edges]`` int64 global hit indices,
        then each of ``per_edge`` as ``[n_edges, ...]``.

    Raises:
        BadValueError: The shapes do not match.
    """
    if edges.dim() != 3 or edges.shape[-1] != 2:
        raise BadValueError(f"edges: expected [N, E, 2], got shape {tuple(edges.shape)}")
    if n_hits.shape != edges.shape[:1]:
        raise BadValueError(f"n_hits: expected [{edges.shape[0]}] to match edges, got shape "
                            f"{tuple(n_hits.shape)}")
    for i, t in enumerate(per_edge):
        if t.shape[:2] != edges.shape[:2]:
            raise BadValueError(f"per_edge[{i}]: expected [{edges.shape[0]}, {edges.shape[1]}, "
                                f"...] to match edges, got shape {tuple(t.shape)}")
    n_hits = n_hits.to(device=edges.device, dtype=torch.long)
    base = torch.cumsum(n_hits, 0) - n_hits
    valid = (edges >= 0).all(-1)
    flat = (edges + base[:, None, None])[valid]
    return (flat[:, 0], flat[:, 1], *(t[valid.to(t.device)] for t in per_edge))


class HitGraphs(Transform):
    """Transform: a chunk of events -> padded hit graphs (see :func:`make_hit_graphs`).

    Pure: the input arrays are not modified and the output depends only on them and on
    the configuration, which :meth:`to_dict` records. Calling it returns ``{"x",
    "edges", "edge_attr", "y", "n_hits", "n_edges"}``; the model takes
    ``model(graphs["x"], graphs["edges"], graphs["edge_attr"])``.

    Args:
        config: The graph configuration (default: :class:`HitGraphConfig`), or a plain
            mapping that :meth:`HitGraphConfig.from_dict` accepts.
    """

    config_class = HitGraphConfig
    empty_description = "events have no hits; their graphs are empty"

    def __call__(self, events: ak.Array | Mapping[str, Any] | HitArrays, *,
                 truth: bool = True) -> dict[str, torch.Tensor]:
        """Graphs of ``events``; with ``truth`` also the edge truth ``y``."""
        return make_hit_graphs(events, self.config, truth=truth)

    def fields(self, *, truth: bool = True) -> tuple[str, ...]:
        """The input fields read, with or without the truth field."""
        return self.config.fields(truth=truth)

    @property
    def output_shape(self) -> dict[str, tuple[int | None, ...]]:
        """Shape of one event's outputs (``None``: the chunk's largest event decides)."""
        return self.config.shapes

    def count_empty(self, events: ak.Array | Mapping[str, Any]) -> int:
        """Number of events without hits."""
        arr = _field(events, "hit_x")
        counts = np.asarray(ak.num(arr if isinstance(arr, ak.Array) else ak.Array(arr), axis=1))
        return int(np.count_nonzero(counts == 0))
