"""Tracker hits of a chunk of events as flat arrays, and the windowed search for hit pairs.

Both trackers start here: :class:`HitArrays` flattens the jagged hit branches of a chunk
(one entry per event, TrackML-like columns, see ``docs/tracking.md``) into numpy arrays
with an event index, and :func:`layer_pair_edges` finds every pair of hits on two layers
that a charged particle from the beam line could have made, by a search in φ windows
(sorted keys and ``searchsorted``), for all events and all hits at once.

Coordinates are in mm, momenta in GeV, as in TrackML.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

import numpy as np

from hepml.errors import BadValueError, ConfigError
from hepml.representations._arrays import _flatten, check_finite

__all__ = ["HIT_FIELDS", "TRUTH_FIELDS", "PARTICLE_FIELDS", "HitArrays", "layer_pairs",
           "layer_pair_edges", "window_ranges", "wrap_phi", "true_segments", "edge_truth"]

#: Hit branches every tracker reads.
HIT_FIELDS = ("hit_x", "hit_y", "hit_z", "hit_layer")
#: Per-hit truth, needed to train and to evaluate (not to apply a trained tracker).
TRUTH_FIELDS = ("hit_particle_id",)
#: Per-particle truth used by the evaluation.
PARTICLE_FIELDS = ("particle_id", "particle_pt", "particle_eta", "particle_nhits")


def wrap_phi(dphi: np.ndarray) -> np.ndarray:
    """Angle differences mapped into [-π, π).

    Not :func:`hepml.io.expressions.wrap_phi`, hepml's wrapping elsewhere: this formula
    returns a difference that is already inside exactly (the other rounds it through
    ``(Δφ + π) - π``) and is faster than ``%``; hit graphs, track-sequence targets and
    track following are built on it, and their results would move in the last bits.
    """
    return dphi - (2 * np.pi) * np.floor((dphi + np.pi) / (2 * np.pi))  # faster than %


@dataclasses.dataclass
class HitArrays:
    """The hits of a chunk of events, flat, with cylindrical coordinates.

    Attributes:
        counts: Hits per event ``[n_events]``.
        event: Event index (within the chunk) of each hit.
        x, y, z, r, phi: Position of each hit (mm, rad).
        layer: Sequential barrel layer (0 = innermost); -1 for hits no tracker uses.
        particle: Truth particle id (0 = noise), or ``None`` without truth.
    """

    counts: np.ndarray
    event: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    r: np.ndarray
    phi: np.ndarray
    layer: np.ndarray
    particle: np.ndarray | None = None

    @property
    def n_events(self) -> int:
        """Events in the chunk."""
        return len(self.counts)

    @property
    def offsets(self) -> np.ndarray:
        """Index of each event's first hit, and the total at the end ``[n_events + 1]``."""
        return np.concatenate([[0], np.cumsum(self.counts)])

    def __len__(self) -> int:
        return len(self.x)

    @classmethod
    def from_awkward(cls, events: Any, *, truth: bool = True) -> HitArrays:
        """Flatten the hit branches of ``events`` (one entry per event).

        Args:
            events: Awkward array (or mapping) with the jagged ``hit_*`` fields.
            truth: Read ``hit_particle_id`` as well.

        Raises:
            MissingBranchError: A hit field is missing.
            BadValueError: The fields have different lengths in an event, or a coordinate
                is NaN or infinite.
        """
        fields = HIT_FIELDS + (TRUTH_FIELDS if truth else ())
        counts, flat = _flatten(events, fields)
        event = np.repeat(np.arange(len(counts)), counts)
        for name in ("hit_x", "hit_y", "hit_z"):
            check_finite(name, flat[name], event, entry="event", making="hit graphs or "
                         "track sequences")
        x = flat["hit_x"].astype(np.float32)
        y = flat["hit_y"].astype(np.float32)
        z = flat["hit_z"].astype(np.float32)
        r = np.hypot(x, y)
        phi = np.arctan2(y, x)
        layer = flat["hit_layer"].astype(np.int64)
        particle = flat["hit_particle_id"].astype(np.int64) if truth else None
        return cls(counts=counts, event=event, x=x, y=y, z=z, r=r, phi=phi, layer=layer,
                   particle=particle)


def layer_pairs(n_layers: int, max_skip: int = 1) -> list[tuple[int, int]]:
    """Ordered layer pairs ``(inner, outer)`` with up to ``max_skip`` layers skipped between."""
    if n_layers < 2:
        raise ConfigError(f"a tracker needs at least two layers, got {n_layers}")
    if max_skip < 0:
        raise ConfigError(f"max_skip must be >= 0, got {max_skip}")
    return [(a, a + 1 + s) for a in range(n_layers) for s in range(max_skip + 1)
            if a + 1 + s < n_layers]


def window_ranges(lo: np.ndarray, hi: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The owner and position of every element of the windows of a sorted array.

    For windows ``[lo_i, hi_i)`` of a sorted array: the owner ``i`` and position of every
    element.
    """
    n = np.maximum(hi - lo, 0)
    owner = np.repeat(np.arange(len(lo)), n)
    start = np.cumsum(n) - n
    pos = np.arange(n.sum()) - np.repeat(start, n) + np.repeat(lo, n)
    return owner, pos


def layer_pair_edges(
    hits: HitArrays,
    pairs: Sequence[tuple[int, int]],
    *,
    phi_slope_max: float,
    z0_max: float,
    eta_max: float | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Hit pairs (inner, outer) on the given layer pairs that pass the geometric windows.

    A pair is kept when, with Δ taken outer minus inner:

    - ``|Δφ / Δr| < phi_slope_max`` (rad/mm): the bending of a track from the beam line,
      about ``0.3 B / (2 pT)``, so 0.0006 keeps tracks down to pT ≈ 0.5 GeV at 2 T;
    - ``|z0| < z0_max`` (mm), with ``z0 = z_in - r_in Δz/Δr`` the line through both hits
      extrapolated to the beam line (the luminous region's length);
    - optionally ``|η| < eta_max`` for the pair's direction.

    Runs over all events of ``hits`` at once: outer hits are sorted by (event, φ) and each
    inner hit's φ window is found with ``searchsorted`` (hits within the window of the
    wrap at ±π are searched in both places).

    Returns:
        ``(inner, outer)``: indices into ``hits`` of every kept pair, inner first.
    """
    if phi_slope_max <= 0 or z0_max <= 0:
        raise ConfigError(f"phi_slope_max and z0_max must be positive, got {phi_slope_max} "
                          f"and {z0_max}")
    srcs, dsts = [], []
    layer_index = {int(v): np.flatnonzero(hits.layer == v) for v in np.unique(hits.layer) if v >= 0}
    empty = np.zeros(0, dtype=np.int64)
    for a, b in pairs:
        inner, outer = layer_index.get(a, empty), layer_index.get(b, empty)
        if not len(inner) or not len(outer):
            continue
        dr_max = float(hits.r[outer].max() - hits.r[inner].min())
        if dr_max <= 0:
            raise BadValueError(f"layer {b} is not outside layer {a}: hit_layer must number "
                                "the layers from the innermost outwards")
        window = min(phi_slope_max * dr_max, np.pi)
        # outer hits, plus copies shifted by ±2π of those within the window of the wrap
        phi_o = hits.phi[outer].astype(np.float64)
        low, high = phi_o < -np.pi + window, phi_o > np.pi - window
        cand = np.concatenate([outer, outer[low], outer[high]])
        phi_c = np.concatenate([phi_o, phi_o[low] + 2 * np.pi, phi_o[high] - 2 * np.pi])
        span = 4 * np.pi + 1.0  # keys of different events never overlap
        key = hits.event[cand] * span + (phi_c + 2 * np.pi)
        order = np.argsort(key, kind="stable")
        key, cand = key[order], cand[order]
        base = hits.event[inner] * span + (hits.phi[inner].astype(np.float64) + 2 * np.pi)
        lo = np.searchsorted(key, base - window, side="left")
        hi = np.searchsorted(key, base + window, side="right")
        owner, pos = window_ranges(lo, hi)
        src, dst = inner[owner], cand[pos]
        dr = hits.r[dst] - hits.r[src]
        dz = hits.z[dst] - hits.z[src]
        dphi = wrap_phi(hits.phi[dst] - hits.phi[src])
        keep = dr > 0
        with np.errstate(divide="ignore", invalid="ignore"):
            keep &= np.abs(dphi) < phi_slope_max * dr
            keep &= np.abs(hits.z[src] - hits.r[src] * dz / dr) < z0_max
            if eta_max is not None:
                keep &= np.abs(np.arcsinh(dz / dr)) < eta_max
        srcs.append(src[keep])
        dsts.append(dst[keep])
    if not srcs:
        return empty, empty.copy()
    return np.concatenate(srcs).astype(np.int64), np.concatenate(dsts).astype(np.int64)


def true_segments(hits: HitArrays) -> tuple[np.ndarray, np.ndarray]:
    """Consecutive hits of each truth particle, ordered by layer: the edges a tracker should find.

    Hits of one particle on the same layer (overlapping sensors) are ordered by radius.
    Noise hits (particle 0) and hits without a layer (-1) take no part.

    Returns:
        ``(inner, outer)`` indices into ``hits``.
    """
    if hits.particle is None:
        raise BadValueError("true segments need the truth particle of each hit (hit_particle_id)")
    use = np.flatnonzero((hits.particle != 0) & (hits.layer >= 0))
    order = np.lexsort((hits.r[use], hits.layer[use], hits.particle[use], hits.event[use]))
    idx = use[order]
    same = ((hits.event[idx[1:]] == hits.event[idx[:-1]])
            & (hits.particle[idx[1:]] == hits.particle[idx[:-1]]))
    return idx[:-1][same], idx[1:][same]


def edge_truth(hits: HitArrays, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """1 for edges that join consecutive hits of one particle, else 0 (float32)."""
    t_src, t_dst = true_segments(hits)
    n = np.int64(len(hits) + 1)
    true_keys = np.sort(t_src * n + t_dst)
    keys = src.astype(np.int64) * n + dst.astype(np.int64)
    pos = np.clip(np.searchsorted(true_keys, keys), 0, max(len(true_keys) - 1, 0))
    if not len(true_keys):
        return np.zeros(len(keys), dtype=np.float32)
    return (true_keys[pos] == keys).astype(np.float32)


