"""LSTM track following: triplet seeds, extended layer by layer with a next-hit predictor.

The track finding of the LSTM tracker (HEP.TrkX, arXiv:1810.06111): :func:`find_seeds`
builds hit triplets on the innermost layers that a charged particle from the beam line
could have made, and :func:`follow_tracks` extends every seed outwards at once. At each
step the network (:class:`hepml.models.lstm_tracker.LSTMTracker`, or any module with the
same ``forward(x, lengths) -> [M, 4]``) reads the track so far, as the features of
:func:`hepml.representations.track_sequences.track_features`, and predicts the next hit's
Δφ and z with a standard deviation; the hit on the searched layer of the same event with
the smallest χ² inside the gate is added. A track that finds nothing skips the layer (up
to ``max_skip`` layers in a row), else it stops. Finally every hit goes to the longest
track that holds it, and tracks left with too few hits are dropped.

Everything runs on arrays of all seeds of a chunk of events at once (numpy for the
seeds, torch on the model's device for the following): the loops go over layers and
follower steps only.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from hepml.errors import BadValueError, ConfigError
from hepml.io import expressions
from hepml.representations.hits import HitArrays, layer_pair_edges, window_ranges, wrap_phi
from hepml.representations.track_sequences import TrackSequenceConfig, track_features
from hepml.training.device import supports_float64

log = logging.getLogger(__name__)

__all__ = ["find_seeds", "follow_tracks", "layer_radii_of", "resolve_shared_hits"]

_TWO_PI = 2 * np.pi
#: Width of the φ range of one (event, layer) block in the sorted search key (> 2π).
_BLOCK = 8.0


def find_seeds(
    hits: HitArrays,
    *,
    layers: Sequence[Sequence[int]] = ((0, 1, 2), (1, 2, 3)),
    phi_slope_max: float = 0.0006,
    z0_max: float = 200.0,
    dphi_slope_max: float = 2e-4,
    dcot_max: float = 0.02,
    eta_max: float | None = None,
) -> np.ndarray:
    """Hit triplets on the given layer triples that fit a track from the beam line.

    Doublets on (inner, middle) and (middle, outer) come from
    :func:`~hepml.representations.hits.layer_pair_edges` (``|Δφ/Δr| < phi_slope_max``,
    ``|z0| < z0_max``, optional ``|η| < eta_max``) and are joined on their shared middle
    hit. A triplet is kept when its two doublets point the same way:

    - ``|Δφ/Δr (inner) - Δφ/Δr (outer)| < dphi_slope_max`` (rad/mm). A helix from the
      beam line has Δφ/Δr = -q/(2R) on every segment (within 1 % below r = 200 mm
      for pT > 0.5 GeV), so the difference comes from the hit resolution and from multiple
      scattering on the middle layer. On the TrackML layers 0-1-2 (r = 32, 72, 116 mm) a
      resolution of 0.05 mm in rφ gives σ ≈ 5e-5 rad/mm, and a kink of 3.3 mrad (pT =
      0.5 GeV, 2 % X0 per layer) another 3e-5 rad/mm; the default 2e-4 keeps 3σ of both,
      while a random middle-outer doublet (uniform in ±``phi_slope_max``) passes with a
      probability of about a third.
    - ``|Δz/Δr (inner) - Δz/Δr (outer)| < dcot_max (1 + cot²θ)^(3/4)``, with cot θ the
      mean of the two. A resolution of 0.1 mm in z gives σ ≈ 6e-3 on layers 0-1-2 and the
      kink above 3.3e-3 at η = 0; multiple scattering grows as (1 + cot²θ)^(3/4) with the
      polar angle (the deflection as 1/(pT √cosh η), its effect on cot θ as cosh²η), so
      the default 0.02 keeps 3σ over the whole barrel.

    The second default layer triple (1, 2, 3) seeds particles that leave no hit on
    layer 0; a particle with hits on layers 0-3 gives two seeds, and the longer track
    they grow into wins its hits in :func:`follow_tracks`.

    Args:
        hits: The hits of a chunk of events.
        layers: Layer triples (inner, middle, outer), each increasing.
        phi_slope_max: Doublets' largest ``|Δφ/Δr|`` (rad/mm), see ``layer_pair_edges``.
        z0_max: Doublets' largest ``|z0|`` on the beam line (mm).
        eta_max: Doublets' optional largest ``|η|``.
        dphi_slope_max: Largest difference of the two doublets' Δφ/Δr (rad/mm).
        dcot_max: Largest difference of the two doublets' Δz/Δr at η = 0.

    Returns:
        ``[S, 3]`` int64 hit indices (inner, middle, outer), rows sorted; all hits of a
        seed belong to one event.
    """
    triples = []
    for triple in layers:
        t = tuple(int(v) for v in triple)
        if len(t) != 3 or not (0 <= t[0] < t[1] < t[2]):
            raise ConfigError(f"find_seeds: layers must be increasing triples of layer "
                              f"numbers such as (0, 1, 2), got {tuple(triple)!r}")
        triples.append(t)
    if dphi_slope_max <= 0 or dcot_max <= 0:
        raise ConfigError(f"find_seeds: dphi_slope_max and dcot_max must be positive, got "
                          f"{dphi_slope_max} and {dcot_max}")
    doublets: dict[tuple[int, int], tuple[np.ndarray, np.ndarray]] = {}

    def pair(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        if (a, b) not in doublets:
            doublets[a, b] = layer_pair_edges(hits, [(a, b)], phi_slope_max=phi_slope_max,
                                              z0_max=z0_max, eta_max=eta_max)
        return doublets[a, b]

    r = hits.r.astype(np.float64)
    phi = hits.phi.astype(np.float64)
    z = hits.z.astype(np.float64)
    seeds = []
    for a, b, c in triples:
        ia, ib = pair(a, b)
        jb, jc = pair(b, c)
        order = np.argsort(jb, kind="stable")
        jb, jc = jb[order], jc[order]
        owner, pos = window_ranges(np.searchsorted(jb, ib, side="left"),
                             np.searchsorted(jb, ib, side="right"))
        h0, h1, h2 = ia[owner], ib[owner], jc[pos]
        dr1, dr2 = r[h1] - r[h0], r[h2] - r[h1]
        slope1 = wrap_phi(phi[h1] - phi[h0]) / dr1
        slope2 = wrap_phi(phi[h2] - phi[h1]) / dr2
        cot1, cot2 = (z[h1] - z[h0]) / dr1, (z[h2] - z[h1]) / dr2
        cot = 0.5 * (cot1 + cot2)
        keep = np.abs(slope1 - slope2) < dphi_slope_max
        keep &= np.abs(cot1 - cot2) < dcot_max * (1 + cot * cot) ** 0.75
        seeds.append(np.stack([h0[keep], h1[keep], h2[keep]], axis=1))
    out = np.concatenate(seeds) if seeds else np.zeros((0, 3), dtype=np.int64)
    out = out[np.lexsort(out.T[::-1])] if len(out) else out
    log.debug("%d triplet seeds in %d events", len(out), hits.n_events)
    return out.astype(np.int64).reshape(-1, 3)


def layer_radii_of(hits: HitArrays, n_layers: int) -> np.ndarray:
    """Median hit radius of each layer ``[n_layers]`` (mm); NaN for a layer without hits."""
    radii = np.full(n_layers, np.nan)
    for layer in range(n_layers):
        r = hits.r[hits.layer == layer]
        if len(r):
            radii[layer] = float(np.median(r))
    return radii


def _expand(lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """For windows ``[lo_i, hi_i)``: the owner ``i`` and the position of every element."""
    n = (hi - lo).clamp(min=0)
    owner = torch.repeat_interleave(torch.arange(len(lo), device=lo.device), n)
    start = torch.cumsum(n, 0) - n
    pos = torch.arange(len(owner), device=lo.device) - start[owner] + lo[owner]
    return owner, pos


def resolve_shared_hits(track_hits: torch.Tensor, n_hits: torch.Tensor, mean_chi2: torch.Tensor,
                        n_total: int, *, min_hits: int) -> torch.Tensor:
    """Give every hit to one track and number the tracks that keep enough hits.

    Each hit goes to the best track that holds it: the longest, then the one with the
    smaller mean χ², then the earlier one. A track left with fewer than ``min_hits`` hits
    is dropped and its hits go to the next best tracks. This is the result of accepting
    the tracks one by one from the best, each with the hits no accepted track took,
    reached in a few vectorized rounds: a round drops the failing tracks that lost hits
    only to tracks that keep enough (those stay whatever else is dropped, so the drop is
    final), and the best failing track is always among them.

    Args:
        track_hits: Hit indices of each track ``[S, K]``, -1 after the track's hits.
        n_hits: Hits of each track before the resolution ``[S]``.
        mean_chi2: Mean χ² of the hits the follower added ``[S]``.
        n_total: Number of hits of the chunk.
        min_hits: Fewest hits a kept track may have.

    Returns:
        ``[n_total]`` int64 track id of every hit (-1: none), ids ``0 .. n_kept - 1``
        numbered in the order of the tracks; on the device of ``track_hits``.
    """
    dev = track_hits.device
    s = track_hits.shape[0]
    out = torch.full((n_total,), -1, dtype=torch.long, device=dev)
    if s == 0:
        return out
    order = torch.argsort(mean_chi2, stable=True)
    order = order[torch.argsort(-n_hits[order], stable=True)]
    rank = torch.empty(s, dtype=torch.long, device=dev)
    rank[order] = torch.arange(s, device=dev)
    by_rank = order
    alive = n_hits >= min_hits
    slot_track, slot = torch.nonzero(track_hits >= 0, as_tuple=True)
    slot_hit = track_hits[slot_track, slot]
    while True:
        live = alive[slot_track]
        t, h = slot_track[live], slot_hit[live]
        best = torch.full((n_total,), s, dtype=torch.long, device=dev)
        best.scatter_reduce_(0, h, rank[t], reduce="amin")
        own = rank[t] == best[h]
        kept = torch.bincount(t[own], minlength=s)
        failing = alive & (kept < min_hits)
        if not bool(failing.any()):
            break
        # a failing track that lost a hit to another failing track may yet keep enough
        lost_to_failing = ~own & failing[by_rank[best[h]]]
        waits = torch.zeros(s, dtype=torch.bool, device=dev)
        waits[t[lost_to_failing]] = True
        alive &= ~(failing & ~waits)
    new_id = torch.cumsum(alive.long(), 0) - 1
    out[h[own]] = new_id[t[own]]
    return out


def _model_device(model: nn.Module) -> torch.device:
    for p in model.parameters():
        return p.device
    return torch.device("cpu")


@torch.no_grad()
def follow_tracks(
    model: nn.Module,
    hits: HitArrays,
    seeds: np.ndarray,
    *,
    sequences: TrackSequenceConfig | None = None,
    layer_radii: Sequence[float] | np.ndarray | None = None,
    gate: float = 3.0,
    max_skip: int = 1,
    min_hits: int = 4,
    device: str | torch.device | None = None,
    batch_size: int = 4096,
) -> np.ndarray:
    """Extend every seed layer by layer with the next-hit predictor; one track id per hit.

    For all growing tracks at once: the track's hits, with ``r_next`` of its last hit set
    to the radius of the layer to be searched, go through ``model`` (in batches of
    ``batch_size`` tracks), which predicts the next hit's ``μ_Δφ, μ_z, log σ_Δφ,
    log σ_z`` in the units of ``sequences``. The hits of the searched layer in the
    track's event are found with ``searchsorted`` on a key sorted by (event, layer, φ)
    in the window ``|Δφ| < gate σ_Δφ`` (across the wrap at ±π); of those with
    ``|Δz| < gate σ_z`` the one with the smallest ``χ² = (Δφ/σ_Δφ)² + (Δz/σ_z)²`` is added.
    A track without one tries the next layer out, up to ``max_skip`` layers, and else
    stops. Then :func:`resolve_shared_hits` gives every hit to one track.

    Args:
        model: Module with ``forward(x [M, T, 4], lengths [M]) -> [M, 4]``, on ``device``
            (e.g. a trained :class:`~hepml.models.lstm_tracker.LSTMTracker`); set to
            eval mode for the call and restored after.
        hits: The hits of a chunk of events.
        seeds: ``[S, k]`` hit indices of each seed, inner to outer, one event per seed
            (e.g. from :func:`find_seeds`).
        sequences: The feature scales and layer count the model was trained with
            (default :class:`TrackSequenceConfig`); pass the training representation's
            config.
        layer_radii: Radius of each layer (mm) used as ``r_next`` when searching it;
            default: the median hit radius of each layer of ``hits``.
        gate: Search window and χ² gate in standard deviations of each coordinate.
        max_skip: Layers a track may skip in a row when it finds no hit.
        min_hits: Tracks keeping fewer hits after the shared-hit resolution are dropped.
        device: Where the following runs; default: the device of the model's parameters
            (CPU for a module without parameters).
        batch_size: Tracks per model call.

    Returns:
        ``[len(hits)]`` int64 track id of every hit (-1: in no track); ids are unique over
        the chunk, ``0 .. n_tracks - 1``.

    Raises:
        BadValueError: The seeds are not ``[S, k]`` indices of hits on the tracker's
            layers, or ``layer_radii`` does not give one radius per layer.
        ConfigError: ``gate``, ``max_skip``, ``min_hits`` or ``batch_size`` is out of range.
    """
    cfg = sequences if sequences is not None else TrackSequenceConfig()
    n_layers = cfg.n_layers
    if gate <= 0 or max_skip < 0 or min_hits < 1 or batch_size < 1:
        raise ConfigError(f"follow_tracks: need gate > 0, max_skip >= 0, min_hits >= 1 and "
                          f"batch_size >= 1, got {gate}, {max_skip}, {min_hits}, {batch_size}")
    seeds = np.asarray(seeds)
    if seeds.ndim != 2 or seeds.shape[1] < 1 or seeds.dtype.kind not in "iu":
        raise BadValueError(f"follow_tracks: seeds must be an integer array [S, k] of hit "
                            f"indices, got shape {seeds.shape} and dtype {seeds.dtype}")
    if seeds.shape[1] > n_layers:
        raise BadValueError(f"follow_tracks: seeds of {seeds.shape[1]} hits do not fit on "
                            f"{n_layers} layers")
    if len(seeds) and (seeds.min() < 0 or seeds.max() >= len(hits)):
        raise BadValueError(f"follow_tracks: seed hit indices must lie in [0, {len(hits)}); "
                            "the seeds were made from other hits")
    if len(seeds) and not np.all((hits.layer[seeds] >= 0) & (hits.layer[seeds] < n_layers)):
        raise BadValueError(f"follow_tracks: every seed hit must lie on a layer 0..{n_layers - 1}")
    if len(seeds) and not np.all(hits.event[seeds] == hits.event[seeds[:, :1]]):
        raise BadValueError("follow_tracks: the hits of a seed must belong to one event")
    radii = layer_radii_of(hits, n_layers) if layer_radii is None else np.asarray(
        layer_radii, dtype=np.float64)
    if radii.shape != (n_layers,):
        raise BadValueError(f"follow_tracks: layer_radii must give {n_layers} radii (one per "
                            f"layer), got shape {radii.shape}")
    dev = torch.device(device) if device is not None else _model_device(model)
    if not supports_float64(dev):
        # hits are addressed by float64 keys (event, layer, phi): no float32 substitute
        log.info("track following runs on the CPU: %s has no float64", dev)
        dev = torch.device("cpu")
        model = copy.deepcopy(model).to(dev)
    n_total = len(hits)
    s, k = seeds.shape
    if s == 0 or n_total == 0:
        return np.full(n_total, -1, dtype=np.int64)

    def tensor(a: np.ndarray, dtype: torch.dtype) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(a), device=dev).to(dtype)

    r, phi, z = (tensor(a, torch.float64) for a in (hits.r, hits.phi, hits.z))
    layer, event = tensor(hits.layer, torch.long), tensor(hits.event, torch.long)
    radii_t = tensor(radii, torch.float64)
    usable = torch.nonzero((layer >= 0) & (layer < n_layers)).squeeze(1)
    key = (event[usable] * n_layers + layer[usable]).double() * _BLOCK + (phi[usable] + torch.pi)
    key, by_key = torch.sort(key)
    key_hit = usable[by_key]

    track = torch.full((s, n_layers), -1, dtype=torch.long, device=dev)
    track[:, :k] = tensor(seeds, torch.long)
    n_hits = torch.full((s,), k, dtype=torch.long, device=dev)
    last_layer = layer[track[:, k - 1]]
    track_event = event[track[:, 0]]
    chi2_sum = torch.zeros(s, dtype=torch.float64, device=dev)
    n_added = torch.zeros(s, dtype=torch.long, device=dev)
    active = last_layer < n_layers - 1

    def search(t: torch.Tensor, target: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Best hit on layer ``target`` for tracks ``t`` (-1: none), and its χ²."""
        length = n_hits[t]
        width = int(length.max())
        ids = track[t, :width]
        hit = ids.clamp(min=0)
        hr, hphi, hz = r[hit], phi[hit], z[hit]
        rows = torch.arange(len(t), device=dev)
        r_next = torch.zeros_like(hr)
        r_next[:, :-1] = hr[:, 1:]
        r_next[rows, length - 1] = radii_t[target]
        x = track_features(hr, hphi, hz, r_next, length, r_scale=cfg.r_scale,
                           z_scale=cfg.z_scale)
        out = model(x, length).double()
        mu_phi = expressions.wrap_phi(hphi[:, 0] + out[:, 0])
        mu_z = out[:, 1] * cfg.z_scale
        sig_phi = torch.exp(out[:, 2])
        sig_z = torch.exp(out[:, 3]) * cfg.z_scale
        w = torch.nan_to_num(gate * sig_phi, nan=0.0).clamp(max=np.pi - 1e-9)
        w = torch.where(torch.isfinite(mu_phi) & torch.isfinite(mu_z), w, torch.zeros_like(w))
        base = (track_event[t] * n_layers + target).double() * _BLOCK
        low, high = mu_phi - w, mu_phi + w
        windows = [  # (from, to, used): the window, and its parts across the wrap
            ((low + torch.pi).clamp(min=0), (high + torch.pi).clamp(max=_TWO_PI), w > 0),
            (low + 3 * torch.pi, torch.full_like(w, _TWO_PI), low < -torch.pi),
            (torch.zeros_like(w), high - torch.pi, high > torch.pi),
        ]
        owners, cands = [], []
        for lo_phi, hi_phi, used in windows:
            lo = torch.searchsorted(key, base + lo_phi, side="left")
            hi = torch.searchsorted(key, base + hi_phi, side="right")
            owner, pos = _expand(lo, torch.where(used, hi, lo))
            owners.append(owner)
            cands.append(key_hit[pos])
        owner, cand = torch.cat(owners), torch.cat(cands)
        dphi = expressions.wrap_phi(phi[cand] - mu_phi[owner])
        dz = z[cand] - mu_z[owner]
        ok = (dphi.abs() < gate * sig_phi[owner]) & (dz.abs() < gate * sig_z[owner])
        owner, cand = owner[ok], cand[ok]
        chi2 = (dphi[ok] / sig_phi[owner]).square() + (dz[ok] / sig_z[owner]).square()
        best = torch.full((len(t),), torch.inf, dtype=torch.float64, device=dev)
        best.scatter_reduce_(0, owner, chi2, reduce="amin")
        at_best = chi2 == best[owner]
        found = torch.full((len(t),), n_total, dtype=torch.long, device=dev)
        found.scatter_reduce_(0, owner[at_best], cand[at_best], reduce="amin")
        found = torch.where(found == n_total, torch.full_like(found, -1), found)
        return found, best

    was_training = model.training
    model.eval()
    try:
        steps = 0
        while bool(active.any()):
            steps += 1
            pending = torch.nonzero(active).squeeze(1)
            extended = torch.zeros(s, dtype=torch.bool, device=dev)
            for skip in range(max_skip + 1):
                target = last_layer[pending] + 1 + skip
                inside = target < n_layers
                pending, target = pending[inside], target[inside]
                if not len(pending):
                    break
                found, chi2 = [], []
                for start in range(0, len(pending), batch_size):
                    f, c = search(pending[start:start + batch_size],
                                  target[start:start + batch_size])
                    found.append(f)
                    chi2.append(c)
                f, c = torch.cat(found), torch.cat(chi2)
                got = f >= 0
                t = pending[got]
                track[t, n_hits[t]] = f[got]
                n_hits[t] += 1
                last_layer[t] = target[got]
                chi2_sum[t] += c[got]
                n_added[t] += 1
                extended[t] = True
                pending = pending[~got]
            active = extended & (last_layer < n_layers - 1)
    finally:
        model.train(was_training)
    mean_chi2 = chi2_sum / n_added.clamp(min=1)
    hit_track = resolve_shared_hits(track, n_hits, mean_chi2, n_total, min_hits=min_hits)
    out = hit_track.cpu().numpy()
    log.debug("%d seeds followed in %d steps: %d tracks", s, steps, int(out.max(initial=-1)) + 1)
    return out
