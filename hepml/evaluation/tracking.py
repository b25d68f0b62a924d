"""Tracking metrics computed with torch on the device of the input tensors.

Hits and particles of many events are given as flat tensors with an event index:

* per hit: ``hit_event`` (event number or index), ``hit_particle`` (the id of the
  particle that made the hit, **0 for noise**), ``hit_track`` (the reconstructed track
  the hit was assigned to, **negative (-1) when it is in no track**);
* per particle: ``particle_event``, ``particle_id`` and the truth quantities
  (``particle_pt``, ``particle_eta``, ``particle_nhits``, ``particle_vz``).

A track is the pair ``(event, track id)`` and a particle the pair ``(event, particle
id)``: ids may repeat from one event to the next (TrackML numbers its tracks per event)
or be unique over the whole sample; both work. Usually a hit is in at most one track
and has one row. A tracker that shares hits between tracks lists such a hit once per
track it is in and passes ``hit_id`` (unique per event), so that each particle's hits are
counted once.

**Matching** (:func:`match_tracks`) is the "double majority" rule of the TrackML
challenge (Amrouche et al., arXiv:1904.06778) and of ATLAS/ACTS: a track's *majority
particle* is the particle with most hits on the track (noise hits never count as a
particle; ties go to the smallest particle id); the track **matches** it when strictly
more than half of the track's hits belong to it **and** strictly more than half of the
particle's hits are on the track. The particle's hits are counted among the hits given
(so a particle whose hits were partly dropped, e.g. outside the barrel, is judged on the
hits that remain). A track matches at most one particle; a particle can be matched by
several tracks (duplicates) only when tracks share hits: with one track per hit, two
tracks cannot both hold more than half of a particle's hits.

**Rates** (:func:`tracking_metrics`), after dropping tracks with fewer than
``min_track_hits`` hits:

* efficiency = reconstructable particles matched by at least one track / reconstructable
  particles, where *reconstructable* means ``pT > min_pt``, ``particle_nhits >=
  min_hits`` and, optionally, ``|eta| < max_abs_eta``;
* fake rate = tracks that match no particle / all tracks, whatever the particle content;
* signal fake rate = tracks that match no particle / (those + tracks that match a
  reconstructable particle): tracks that correctly find a particle outside the
  selection (e.g. below ``min_pt``) count neither as fake nor as signal there;
* duplicate rate = matched tracks beyond the first of each particle / matched tracks,
  over all particles.

Ratios with a zero denominator (no particle, no track) are NaN, returned as ``null`` in
the JSON-ready dict (see :func:`~hepml.evaluation.json_safe`), with their counts (0) beside
them. Uncertainties are binomial, ``sqrt(p (1 - p) / n)`` (0 at p = 0 or 1).

**TrackML score** (:func:`trackml_weights`, :func:`trackml_score`): per event, the summed
weight of the hits shared by each matched track and its particle, over the summed weight
of all hits of the event. The hit weights follow the TrackML library
(``trackml/weights.py`` and ``trackml/score.py`` of LAL/trackml-library), see
:func:`trackml_weights`.

No Python loop runs over hits, tracks or particles: ids are turned into dense indices with
``torch.unique``, counts with ``bincount`` and majorities with ``scatter_reduce``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from hepml.errors import BadValueError, EmptyInputError
from hepml.evaluation.metrics import (
    _check_finite,
    _check_labels,
    _check_scores,
    binary_confusion_matrix,
    json_safe,
    roc_auc,
)
from hepml.training.device import float_dtype

__all__ = [
    "TrackMatch",
    "BinnedEfficiency",
    "TrackmlScore",
    "match_tracks",
    "reconstructable",
    "tracking_metrics",
    "efficiency_vs",
    "edge_metrics",
    "trackml_pt_weight",
    "trackml_order_weights",
    "trackml_weights",
    "trackml_score",
    "TRACKML_ORDER_PROPOSAL",
]

#: Relative weights of the hits along a particle's trajectory, first to last, before they
#: are stretched over the particle's number of hits (TrackML library ``ORDER_PROPOSAL``).
TRACKML_ORDER_PROPOSAL = (10.0, 8.0, 6.0, 5.0, 3.0, 3.0, 3.0, 5.0, 6.0)
_ORDER_MIN_HITS = 4
_ORDER_MAX_HITS = 20


class TrackMatch(NamedTuple):
    """Result of :func:`match_tracks`.

    Tracks are sorted by ``(event, track id)``; particles are in the order of the particle
    table when one was given, else sorted by ``(event, particle id)``.

    Attributes:
        track_event: Event of each track ``[T]``.
        track_id: Track id ``[T]``.
        track_particle: Id of the majority particle ``[T]``; 0 when the track holds only
            noise hits.
        n_shared: Hits of the track that belong to its majority particle ``[T]``.
        n_track_hits: Hits on the track ``[T]``.
        n_particle_hits: Hits of the majority particle among all hits given ``[T]``.
        matched: Double-majority match ``[T]`` (bool).
        particle_event: Event of each particle ``[P]``.
        particle_id: Particle id ``[P]``.
        particle_n_hits: Hits of the particle among the hits given ``[P]``.
        particle_n_matched: Number of tracks that match the particle ``[P]``.
    """

    track_event: torch.Tensor
    track_id: torch.Tensor
    track_particle: torch.Tensor
    n_shared: torch.Tensor
    n_track_hits: torch.Tensor
    n_particle_hits: torch.Tensor
    matched: torch.Tensor
    particle_event: torch.Tensor
    particle_id: torch.Tensor
    particle_n_hits: torch.Tensor
    particle_n_matched: torch.Tensor


class BinnedEfficiency(NamedTuple):
    """Result of :func:`efficiency_vs`; float64 tensors except the counts.

    Attributes:
        edges: Bin edges ``[B + 1]``.
        efficiency: Passed / total per bin ``[B]``; NaN in an empty bin.
        uncertainty: Binomial ``sqrt(eff (1 - eff) / total)`` ``[B]``; NaN in an empty bin.
        total: Entries per bin ``[B]`` (long).
        passed: Matched entries per bin ``[B]`` (long).
    """

    edges: torch.Tensor
    efficiency: torch.Tensor
    uncertainty: torch.Tensor
    total: torch.Tensor
    passed: torch.Tensor


class TrackmlScore(NamedTuple):
    """Result of :func:`trackml_score`.

    Attributes:
        events: The distinct values of ``hit_event``, increasing ``[E]``.
        scores: Score of each event ``[E]`` (float64); NaN where the event's hits weigh 0.
        mean: Mean score over the events with a defined score; NaN if there is none.
    """

    events: torch.Tensor
    scores: torch.Tensor
    mean: float


# --------------------------------------------------------------------------- validation


def _ids(x: Any, name: str, n: int | None = None,
         device: torch.device | None = None) -> torch.Tensor:
    """``x`` as a 1-D int64 tensor, checked for dtype, length and device."""
    if not isinstance(x, torch.Tensor):
        try:
            x = torch.as_tensor(x)
        except (TypeError, ValueError, RuntimeError) as err:
            raise BadValueError(f"{name}: cannot make a tensor from {type(x).__name__}: "
                                f"{err}") from err
    if x.dim() != 1:
        raise BadValueError(f"{name} must be one-dimensional, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or torch.is_floating_point(x) or x.is_complex():
        raise BadValueError(f"{name} must hold integer ids, got dtype {x.dtype}; convert "
                            "with .long() if the values are whole numbers")
    _check_size_device(x, name, n, device)
    return x.long()


def _values(x: Any, name: str, n: int | None = None,
            device: torch.device | None = None) -> torch.Tensor:
    """``x`` as a finite 1-D float64 tensor, checked for length and device."""
    x = torch.as_tensor(x)
    if x.dim() != 1:
        raise BadValueError(f"{name} must be one-dimensional, got shape {tuple(x.shape)}")
    if x.dtype == torch.bool or x.is_complex():
        raise BadValueError(f"{name} must be real numbers, got dtype {x.dtype}")
    _check_size_device(x, name, n, device)
    x = x.to(float_dtype(x.device))
    _check_finite(x, name)
    return x


def _check_size_device(x: torch.Tensor, name: str, n: int | None,
                       device: torch.device | None) -> None:
    if n is not None and x.shape[0] != n:
        raise BadValueError(f"{name} has {x.shape[0]} entries but the arrays it goes with have "
                            f"{n}; give one value per hit (hit_*) or per particle (particle_*)")
    if device is not None and x.device != device:
        raise BadValueError(f"{name} is on {x.device} but the hits are on {device}; move all "
                            "inputs to the same device")


def _hits(hit_event: Any, hit_particle: Any, hit_track: Any | None = None
          ) -> tuple[torch.Tensor, ...]:
    he = _ids(hit_event, "hit_event")
    n, dev = he.shape[0], he.device
    hp = _ids(hit_particle, "hit_particle", n, dev)
    if hit_track is None:
        return he, hp
    return he, hp, _ids(hit_track, "hit_track", n, dev)


def _particles(particle_event: Any, particle_id: Any, device: torch.device
               ) -> tuple[torch.Tensor, torch.Tensor]:
    pe = _ids(particle_event, "particle_event", device=device)
    pid = _ids(particle_id, "particle_id", pe.shape[0], device)
    return pe, pid


def _binomial(passed: float, total: float) -> tuple[float, float]:
    if total <= 0:
        return math.nan, math.nan
    p = passed / total
    return p, math.sqrt(max(p * (1.0 - p), 0.0) / total)


# ------------------------------------------------------------------------------ matching


def _pairs(a: torch.Tensor, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The distinct pairs ``(a, b)``, sorted, and the index of each input pair among them.

    Returns ``[U, 2]`` pairs in lexicographic order and ``[N]`` indices, as
    ``torch.unique(torch.stack([a, b], 1), dim=0, return_inverse=True)`` does, but with
    three one-dimensional ``unique`` calls, several times faster: each column is made
    dense first, so that one int64 key per pair cannot overflow.
    """
    values_a, index_a = torch.unique(a, return_inverse=True)
    values_b, index_b = torch.unique(b, return_inverse=True)
    width = max(values_b.numel(), 1)
    keys, inverse = torch.unique(index_a * width + index_b, return_inverse=True)
    return torch.stack([values_a[keys // width], values_b[keys % width]], 1), inverse


class _Matching(NamedTuple):
    """Dense indices behind :class:`TrackMatch` (internal)."""

    keys: torch.Tensor  # [U, 2] (event, particle id) of every particle seen, sorted
    hit_p: torch.Tensor  # [N] dense particle index of each hit, -1 for noise
    table_p: torch.Tensor | None  # [P] dense index of each particle-table row
    p_nhits: torch.Tensor  # [U] hits per particle
    track_keys: torch.Tensor  # [T, 2] (event, track id), sorted
    hit_t: torch.Tensor  # [N] dense track index of each hit, -1 outside tracks
    n_track_hits: torch.Tensor  # [T]
    best: torch.Tensor  # [T] dense index of the majority particle, -1 for none
    n_shared: torch.Tensor  # [T]
    matched: torch.Tensor  # [T] bool


def _match(he: torch.Tensor, hp: torch.Tensor, ht: torch.Tensor,
           pe: torch.Tensor | None = None, pid: torch.Tensor | None = None,
           hid: torch.Tensor | None = None) -> _Matching:
    long = dict(dtype=torch.long, device=he.device)
    n = he.shape[0]
    real = hp != 0
    n_real = int(real.sum())
    if pe is None:
        keys, inverse = _pairs(he[real], hp[real])
    else:
        keys, inverse = _pairs(torch.cat([he[real], pe]), torch.cat([hp[real], pid]))
    n_p = keys.shape[0]
    hit_p = torch.full((n,), -1, **long)
    hit_p[real] = inverse[:n_real]
    table_p = inverse[n_real:] if pe is not None else None
    if hid is None:
        p_nhits = torch.bincount(inverse[:n_real], minlength=n_p)
    else:  # a hit listed once per track it is in counts once for its particle
        _, hit_idx = _pairs(he, hid)
        first = torch.full((int(hit_idx.max()) + 1 if n else 0,), n, **long)
        first = first.scatter_reduce_(0, hit_idx, torch.arange(n, **long), "amin")
        once = hit_p[first]
        p_nhits = torch.bincount(once[once >= 0], minlength=n_p)

    in_track = ht >= 0
    track_keys, t_inverse = _pairs(he[in_track], ht[in_track])
    n_t = track_keys.shape[0]
    hit_t = torch.full((n,), -1, **long)
    hit_t[in_track] = t_inverse
    n_track_hits = torch.bincount(t_inverse, minlength=n_t)

    # hits per (track, particle) pair, noise left out; one int64 key per pair
    both = in_track & real
    pairs, n_pair = torch.unique(hit_t[both] * max(n_p, 1) + hit_p[both], return_counts=True)
    pair_t, pair_p = pairs // max(n_p, 1), pairs % max(n_p, 1)
    n_shared = torch.zeros(n_t, **long).scatter_reduce_(0, pair_t, n_pair, "amax")
    top = n_pair == n_shared[pair_t]
    # the dense particle order is (event, id): the smallest index is the smallest id
    best = torch.full((n_t,), n_p, **long).scatter_reduce_(0, pair_t[top], pair_p[top], "amin")
    has = n_shared > 0
    best = torch.where(has, best, -1)
    n_part = torch.where(has, p_nhits[best.clamp(min=0)], 0) if n_p else torch.zeros_like(best)
    matched = has & (2 * n_shared > n_track_hits) & (2 * n_shared > n_part)
    return _Matching(keys, hit_p, table_p, p_nhits, track_keys, hit_t, n_track_hits, best,
                     n_shared, matched)


def match_tracks(hit_event: torch.Tensor, hit_particle: torch.Tensor, hit_track: torch.Tensor,
                 particle_event: torch.Tensor | None = None,
                 particle_id: torch.Tensor | None = None, *,
                 hit_id: torch.Tensor | None = None) -> TrackMatch:
    """Match reconstructed tracks to particles by the double-majority rule.

    A track's majority particle is the particle with most hits on it (noise, particle id
    0, never counts; ties go to the smallest id). The track matches it when
    ``n_shared > n_track_hits / 2`` and ``n_shared > n_particle_hits / 2``, both strict:
    a track holding exactly half of its hits from one particle matches nothing. Particle
    hit counts are taken from ``hit_particle``, i.e. over the hits given.

    Args:
        hit_event: Event of each hit.
        hit_particle: Particle id of each hit, 0 for noise.
        hit_track: Track id of each hit, negative (-1) for hits in no track. Ids are
            per event (the same id in two events is two tracks) or global.
        particle_event: Event of each particle of a particle table (optional).
        particle_id: Id of each particle of the table (optional, with ``particle_event``).
            With a table, the per-particle results follow its rows (particles without
            hits included); without one, they cover the particles that have hits.
        hit_id: Hit id of each row, needed only when a hit is listed once per track it
            is in (tracks sharing hits): rows with the same ``(event, hit_id)`` are one
            hit when the particle's hits are counted.

    Returns:
        A :class:`TrackMatch` on the device of ``hit_event``.

    Shapes:
        hit_*: ``[N]``; particle_*: ``[P]``.

    Raises:
        BadValueError: Non-integer ids, arrays of different lengths or devices, or only
            one of ``particle_event`` and ``particle_id``.
    """
    he, hp, ht = _hits(hit_event, hit_particle, hit_track)
    if (particle_event is None) != (particle_id is None):
        raise BadValueError("match_tracks: give both particle_event and particle_id, or neither")
    pe = pid = None
    if particle_event is not None:
        pe, pid = _particles(particle_event, particle_id, he.device)
    hid = None if hit_id is None else _ids(hit_id, "hit_id", he.shape[0], he.device)
    m = _match(he, hp, ht, pe, pid, hid)
    n_p = m.keys.shape[0]
    n_matched = torch.bincount(m.best[m.matched], minlength=n_p)
    safe = m.best.clamp(min=0)
    has = m.best >= 0
    zero = torch.zeros_like(m.best)
    if pe is None:
        p_rows = torch.arange(n_p, device=he.device)
        pe, pid = m.keys[:, 0], m.keys[:, 1]
    else:
        p_rows = m.table_p
    return TrackMatch(
        track_event=m.track_keys[:, 0], track_id=m.track_keys[:, 1],
        track_particle=torch.where(has, m.keys[safe, 1], zero) if n_p else zero,
        n_shared=m.n_shared, n_track_hits=m.n_track_hits,
        n_particle_hits=torch.where(has, m.p_nhits[safe], zero) if n_p else zero,
        matched=m.matched, particle_event=pe, particle_id=pid,
        particle_n_hits=m.p_nhits[p_rows], particle_n_matched=n_matched[p_rows],
    )


def reconstructable(particle_pt: torch.Tensor, particle_nhits: torch.Tensor,
                    particle_eta: torch.Tensor | None = None, *, min_pt: float = 1.0,
                    min_hits: int = 5, max_abs_eta: float | None = None) -> torch.Tensor:
    """Which particles count in the efficiency (reconstructable particles).

    A particle is reconstructable with ``pT > min_pt`` and ``nhits >= min_hits`` and,
    when ``max_abs_eta`` is given, ``|eta| < max_abs_eta``.

    Args:
        particle_pt: Transverse momentum (GeV).
        particle_nhits: Number of hits of the particle.
        particle_eta: Pseudorapidity; needed only with ``max_abs_eta``.
        min_pt: Lower pT cut (strict).
        min_hits: Fewest hits.
        max_abs_eta: Upper |eta| cut (strict), or ``None`` for none.

    Returns:
        A bool tensor ``[P]``.
    """
    pt = torch.as_tensor(particle_pt)
    keep = (pt > min_pt) & (torch.as_tensor(particle_nhits, device=pt.device) >= min_hits)
    if max_abs_eta is not None:
        if particle_eta is None:
            raise BadValueError("reconstructable: max_abs_eta needs particle_eta")
        keep &= torch.as_tensor(particle_eta, device=pt.device).abs() < max_abs_eta
    return keep


def tracking_metrics(hit_event: torch.Tensor, hit_particle: torch.Tensor,
                     hit_track: torch.Tensor, particle_event: torch.Tensor,
                     particle_id: torch.Tensor, particle_pt: torch.Tensor,
                     particle_eta: torch.Tensor, particle_nhits: torch.Tensor, *,
                     min_pt: float = 1.0, min_hits: int = 5, max_abs_eta: float | None = None,
                     min_track_hits: int = 3,
                     hit_id: torch.Tensor | None = None) -> dict[str, Any]:
    """Track efficiency, fake and duplicate rates, on the device of the hits.

    Tracks with fewer than ``min_track_hits`` hits are dropped first (counted as
    ``n_tracks_short``, nothing else). Then, with matching as in :func:`match_tracks`:

    * ``efficiency`` = ``n_reconstructable_matched / n_reconstructable``: reconstructable
      particles (see :func:`reconstructable`; ``particle_nhits`` is the table's value)
      matched by at least one track;
    * ``fake_rate`` = ``n_fake_tracks / n_tracks``: tracks matching no particle among all
      tracks (noise-only tracks and 50/50 mixtures are fake);
    * ``fake_rate_signal`` = ``n_fake_tracks / n_tracks_signal`` with ``n_tracks_signal``
      = fake tracks + tracks matching a reconstructable particle: tracks that find a
      particle outside the selection count in neither;
    * ``duplicate_rate`` = ``n_duplicate_tracks / n_matched_tracks``, with
      ``n_duplicate_tracks`` = matched tracks − distinct particles matched, over all
      particles.

    Each rate has a binomial ``*_uncertainty``. A zero denominator (no reconstructable
    particle, no track) gives ``null`` (NaN, listed under ``non_finite``) with the count 0
    beside it; nothing raises for empty events.

    Args:
        hit_event: Event of each hit.
        hit_particle: Particle id of each hit, 0 for noise.
        hit_track: Track id of each hit, negative for none (see :func:`match_tracks`).
        particle_event: Event of each particle.
        particle_id: Id of each particle (one row per particle and event).
        particle_pt: Transverse momentum (GeV).
        particle_eta: Pseudorapidity.
        particle_nhits: Hits of the particle (for the ``min_hits`` cut).
        min_pt: Reconstructable particles have ``pT > min_pt``.
        min_hits: Reconstructable particles have at least this many hits.
        max_abs_eta: Optional ``|eta| <`` cut on reconstructable particles.
        min_track_hits: Shorter tracks are ignored.
        hit_id: Hit id of each row when tracks share hits (see :func:`match_tracks`).

    Returns:
        JSON-ready dict (see :func:`~hepml.evaluation.json_safe`) with the rates, their
        uncertainties, the counts ``n_events``, ``n_particles``, ``n_reconstructable``,
        ``n_reconstructable_matched``, ``n_matched_particles``, ``n_tracks``,
        ``n_tracks_short``, ``n_matched_tracks``, ``n_fake_tracks``,
        ``n_duplicate_tracks``, ``n_tracks_signal``, the ``selection`` and the ``device``.

    Shapes:
        hit_*: ``[N]``; particle_*: ``[P]``.
    """
    he, hp, ht = _hits(hit_event, hit_particle, hit_track)
    dev = he.device
    pe, pid = _particles(particle_event, particle_id, dev)
    n_part = pe.shape[0]
    pt = _values(particle_pt, "particle_pt", n_part, dev)
    eta = _values(particle_eta, "particle_eta", n_part, dev)
    nhits = _ids(particle_nhits, "particle_nhits", n_part, dev)
    hid = None if hit_id is None else _ids(hit_id, "hit_id", he.shape[0], dev)
    m = _match(he, hp, ht, pe, pid, hid)
    n_p = m.keys.shape[0]
    long_track = m.n_track_hits >= min_track_hits
    matched = m.matched & long_track
    n_matched = torch.bincount(m.best[matched], minlength=n_p)
    reco_rows = reconstructable(pt, nhits, eta, min_pt=min_pt, min_hits=min_hits,
                                max_abs_eta=max_abs_eta)
    reco = torch.zeros(n_p, dtype=torch.bool, device=dev)
    reco[m.table_p[reco_rows]] = True  # dense indices: a particle listed twice counts once
    n_reco = int(reco.sum())
    n_reco_matched = int((reco & (n_matched > 0)).sum())
    n_tracks = int(long_track.sum())
    n_matched_tracks = int(matched.sum())
    n_fake = n_tracks - n_matched_tracks
    n_matched_particles = int((n_matched > 0).sum())
    n_signal_tracks = n_fake + int(reco[m.best[matched]].sum())
    n_dup = n_matched_tracks - n_matched_particles
    eff, eff_err = _binomial(n_reco_matched, n_reco)
    fake, fake_err = _binomial(n_fake, n_tracks)
    fake_s, fake_s_err = _binomial(n_fake, n_signal_tracks)
    dup, dup_err = _binomial(n_dup, n_matched_tracks)
    n_events = int(torch.unique(torch.cat([he, pe])).numel())
    return json_safe({
        "efficiency": eff, "efficiency_uncertainty": eff_err,
        "fake_rate": fake, "fake_rate_uncertainty": fake_err,
        "fake_rate_signal": fake_s, "fake_rate_signal_uncertainty": fake_s_err,
        "duplicate_rate": dup, "duplicate_rate_uncertainty": dup_err,
        "n_events": n_events, "n_particles": int(n_part),
        "n_reconstructable": n_reco, "n_reconstructable_matched": n_reco_matched,
        "n_matched_particles": n_matched_particles,
        "n_tracks": n_tracks, "n_tracks_short": int((~long_track).sum()),
        "n_matched_tracks": n_matched_tracks, "n_fake_tracks": n_fake,
        "n_duplicate_tracks": n_dup, "n_tracks_signal": n_signal_tracks,
        "selection": {"min_pt": float(min_pt), "min_hits": int(min_hits),
                      "max_abs_eta": None if max_abs_eta is None else float(max_abs_eta),
                      "min_track_hits": int(min_track_hits)},
        "device": str(dev),
    })


# ------------------------------------------------------------------- binned efficiencies


def efficiency_vs(variable: torch.Tensor, matched: torch.Tensor,
                  bins: int | Sequence[float] | torch.Tensor = 10) -> BinnedEfficiency:
    """Efficiency in bins of a variable (e.g. particle pT or eta), with binomial errors.

    Bins are ``[lo, hi)``, the last one closed, as in ``numpy.histogram``; values outside
    the edges are left out.

    Args:
        variable: The binned quantity per entry (e.g. of each reconstructable particle).
        matched: Whether each entry passed: bool, or numbers where ``> 0`` means passed
            (e.g. ``TrackMatch.particle_n_matched``).
        bins: Number of equal bins over the range of ``variable``, or increasing edges.

    Returns:
        A :class:`BinnedEfficiency` on the device of ``variable``. An empty bin has NaN
        efficiency and uncertainty; a bin at 0 or 1 has uncertainty 0.

    Shapes:
        variable, matched: ``[N]``.
    """
    x = _values(variable, "variable")
    dev = x.device
    passed = torch.as_tensor(matched)
    if passed.dim() != 1 or passed.shape[0] != x.shape[0] or passed.device != dev:
        raise BadValueError(f"efficiency_vs: matched must be a 1-D tensor of {x.shape[0]} "
                            f"entries on {dev} like variable, got shape {tuple(passed.shape)} "
                            f"on {passed.device}")
    passed = passed > 0 if passed.dtype != torch.bool else passed
    if isinstance(bins, int):
        if bins < 1:
            raise BadValueError(f"efficiency_vs: need at least one bin, got {bins}")
        lo, hi = (float(x.min()), float(x.max())) if x.numel() else (0.0, 1.0)
        if hi <= lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = torch.linspace(lo, hi, bins + 1, dtype=float_dtype(dev), device=dev)
    else:
        edges = torch.as_tensor(bins, dtype=float_dtype(dev)).to(dev).reshape(-1)
        if edges.numel() < 2 or not bool((edges[1:] > edges[:-1]).all()):
            raise BadValueError(f"efficiency_vs: bin edges must increase, at least two, got "
                                f"{edges.tolist()}")
    n_bins = edges.numel() - 1
    idx = torch.bucketize(x, edges, right=True) - 1
    idx = torch.where(x == edges[-1], n_bins - 1, idx)
    inside = (idx >= 0) & (idx < n_bins)
    total = torch.bincount(idx[inside], minlength=n_bins)
    n_pass = torch.bincount(idx[inside & passed], minlength=n_bins)
    tot = total.to(edges.dtype)
    eff = n_pass / tot.where(total > 0, math.nan)
    err = torch.sqrt((eff * (1 - eff)).clamp(min=0) / tot)
    return BinnedEfficiency(edges, eff, err, total, n_pass)


def edge_metrics(scores: torch.Tensor, truth: torch.Tensor,
                 threshold: float = 0.5) -> dict[str, Any]:
    """Edge-classifier metrics of a hit graph at a score threshold, and its ROC AUC.

    An edge is kept when ``score >= threshold``. ``efficiency`` is the fraction of true
    edges kept (recall, TP / (TP + FN)); ``purity`` the fraction of kept edges that are
    true (precision, TP / (TP + FP)). The AUC comes from
    :func:`~hepml.evaluation.roc_auc`; for the curve itself call
    :func:`~hepml.evaluation.roc_curve` with the same arguments.

    Args:
        scores: Edge scores (probabilities or logits; larger = more likely true).
        truth: 1/True for true edges (both hits from the same particle), 0/False otherwise.
        threshold: The cut.

    Returns:
        JSON-ready dict: ``efficiency``, ``efficiency_uncertainty``, ``purity``,
        ``purity_uncertainty``, ``auc`` (``null`` when one class has no edge),
        ``threshold``, ``n_edges``, ``n_true``, ``n_false``, ``TP``, ``FP``, ``FN``,
        ``TN``, ``device``.

    Shapes:
        scores, truth: ``[E]``.

    Raises:
        EmptyInputError: No edges.
        BadValueError: NaN/inf scores, truth other than 0/1.
    """
    scores = _check_scores(scores)
    if scores.numel() == 0:
        raise EmptyInputError("edge_metrics: no edges given; the graphs hold no edge to "
                              "evaluate")
    is_true = _check_labels(truth, scores.shape[0], scores.device)
    (tn, fp), (fn, tp) = binary_confusion_matrix(scores, is_true, threshold).tolist()
    eff, eff_err = _binomial(tp, tp + fn)
    pur, pur_err = _binomial(tp, tp + fp)
    n_true = tp + fn
    both = 0 < n_true < scores.numel()
    return json_safe({
        "efficiency": eff, "efficiency_uncertainty": eff_err,
        "purity": pur, "purity_uncertainty": pur_err,
        "auc": roc_auc(scores, is_true) if both else math.nan,
        "threshold": float(threshold), "n_edges": int(scores.numel()),
        "n_true": int(n_true), "n_false": int(tn + fp),
        "TP": int(tp), "FP": int(fp), "FN": int(fn), "TN": int(tn),
        "device": str(scores.device),
    })


# ---------------------------------------------------------------------------- TrackML


def trackml_pt_weight(pt: torch.Tensor) -> torch.Tensor:
    """TrackML's pT weight of a particle's hits.

    0.2 up to 0.5 GeV, rising linearly to 1 at 3 GeV, 1 above; 0 below 0.05 GeV. This is
    ``numpy.interp(pt, [0.05, 0.5, 3], [0.2, 0.2, 1], left=0, right=1)``, the
    ``weight_pt`` of the TrackML library.

    Args:
        pt: Transverse momentum in GeV.

    Returns:
        float64 weights of the shape of ``pt``.
    """
    pt = torch.as_tensor(pt)
    pt = pt.to(float_dtype(pt.device))
    ramp = 0.2 + 0.8 * (pt - 0.5) / 2.5
    w = torch.where(pt <= 0.5, 0.2, torch.where(pt < 3.0, ramp, 1.0))
    return torch.where(pt < 0.05, 0.0, w)


def trackml_order_weights(device: torch.device | str | None = None) -> torch.Tensor:
    """TrackML's hit-order weight matrix ``W[nhits, ihit]``, float64 ``[21, 20]``.

    For a particle with ``4 <= nhits <= 20`` hits, the proposal
    :data:`TRACKML_ORDER_PROPOSAL` (10, 8, 6, 5, 3, 3, 3, 5, 6: first and last hits weigh
    most) is stretched linearly over the hits, ``W[nhits, i] ∝ proposal(8 i / (nhits -
    1))`` with linear interpolation between the nine proposal points, and each row is
    normalised to sum 1. Rows below 4 hits are 0.
    """
    wide = float_dtype(device if device is not None else "cpu")
    proposal = torch.tensor(TRACKML_ORDER_PROPOSAL, dtype=wide, device=device)
    last = proposal.numel() - 1
    nh = torch.arange(_ORDER_MAX_HITS + 1, dtype=wide, device=device)[:, None]
    i = torch.arange(_ORDER_MAX_HITS, dtype=wide, device=device)[None, :]
    u = i * last / (nh - 1).clamp(min=1)
    lo = u.floor().clamp(0, last - 1).long()
    frac = (u - lo).clamp(0, 1)
    w = proposal[lo] * (1 - frac) + proposal[lo + 1] * frac
    valid = (i < nh) & (nh >= _ORDER_MIN_HITS)
    w = torch.where(valid, w, 0.0)
    total = w.sum(1, keepdim=True)
    return w / torch.where(total > 0, total, 1.0)


def trackml_weights(hit_event: torch.Tensor, hit_particle: torch.Tensor, hit_z: torch.Tensor,
                    particle_event: torch.Tensor, particle_id: torch.Tensor,
                    particle_pt: torch.Tensor, particle_vz: torch.Tensor, *,
                    min_pt: float | None = None) -> torch.Tensor:
    """Per-hit weights of the TrackML score, normalised to sum 1 in every event.

    As in the TrackML library (``trackml/weights.py``, LAL/trackml-library; Amrouche et
    al., arXiv:1904.06778), a hit of a particle weighs
    ``w_order(ihit, nhits) * w_pt(pT)``, then the weights of each event are divided by
    their sum:

    * ``w_pt`` is :func:`trackml_pt_weight` (0.2 for pT <= 0.5 GeV, linear to 1 at
      3 GeV, 1 above, 0 below 0.05 GeV);
    * ``nhits`` is the particle's number of hits and ``ihit`` the position of the hit
      when the particle's hits are sorted by ``|z_hit - vz|``, the distance along the
      beam from the production vertex (ties get the library's average rank, rounded
      down); ``w_order`` is :func:`trackml_order_weights`: 0 for particles with fewer
      than 4 hits, long particles use the 20-hit row and their hits beyond the 20th
      weigh 0;
    * noise hits (particle 0) and hits of particles missing from the particle table
      weigh 0; with ``min_pt``, so do the hits of particles with ``pT <= min_pt`` (a
      score "for pT > min_pt").

    Differences from the library, by construction of the inputs: ``nhits`` is counted
    among the hits given (the library's phase-1 version reads ``nhits`` from
    ``particles.csv``, its first version counted the truth rows; for a complete TrackML
    event all three agree), and the hit's measured ``z`` stands in for the true ``tz``
    of ``truth.csv`` (the order changes only when two hits of a particle lie within the
    detector resolution of each other along z). An event whose hits all weigh 0 keeps
    weights 0 (the library would divide by zero).

    Args:
        hit_event: Event of each hit.
        hit_particle: Particle id of each hit, 0 for noise.
        hit_z: z of each hit (mm).
        particle_event: Event of each particle.
        particle_id: Id of each particle (one row per particle and event).
        particle_pt: Transverse momentum (GeV).
        particle_vz: z of the production vertex (mm).
        min_pt: Optional: particles with ``pT <= min_pt`` weigh 0.

    Returns:
        float64 weights ``[N]`` on the device of the hits.

    Shapes:
        hit_*: ``[N]``; particle_*: ``[P]``.

    Raises:
        BadValueError: Bad dtypes, lengths or devices; NaN/inf values; a particle listed
            twice in one event.
    """
    he, hp = _hits(hit_event, hit_particle)
    n, dev = he.shape[0], he.device
    z = _values(hit_z, "hit_z", n, dev)
    pe, pid = _particles(particle_event, particle_id, dev)
    n_table = pe.shape[0]
    pt = _values(particle_pt, "particle_pt", n_table, dev)
    vz = _values(particle_vz, "particle_vz", n_table, dev)
    long = dict(dtype=torch.long, device=dev)

    real = hp != 0
    n_real = int(real.sum())
    keys, inverse = _pairs(torch.cat([he[real], pe]), torch.cat([hp[real], pid]))
    n_p = keys.shape[0]
    table_p = inverse[n_real:]
    counts = torch.bincount(table_p, minlength=n_p)
    if bool((counts > 1).any()):
        first = int((counts[table_p] > 1).nonzero()[0, 0])
        raise BadValueError(f"trackml_weights: particle {int(pid[first])} of event "
                            f"{int(pe[first])} is listed {int(counts[table_p[first]])} times "
                            "in the particle table; give each particle once per event")
    row = torch.full((n_p,), -1, **long)
    row[table_p] = torch.arange(n_table, **long)
    hit_p = inverse[:n_real]
    hit_row = row[hit_p]
    known = hit_row >= 0
    safe_row = hit_row.clamp(min=0)
    w_pt = torch.where(known, trackml_pt_weight(pt)[safe_row], 0.0)
    if min_pt is not None:
        w_pt = torch.where(pt[safe_row] > min_pt, w_pt, 0.0)

    # order of the hits along each particle: sort by |dz|, then (stably) by particle
    dz = torch.where(known, (z[real] - vz[safe_row]).abs(), 0.0)
    by_dz = torch.argsort(dz, stable=True)
    order = by_dz[torch.argsort(hit_p[by_dz], stable=True)]
    p_sorted, dz_sorted = hit_p[order], dz[order]
    nhits = torch.bincount(hit_p, minlength=n_p)
    start = torch.cumsum(nhits, 0) - nhits
    position = torch.arange(n_real, **long) - start[p_sorted]
    # ties in |dz|: the average of the tied positions, rounded down (pandas rank)
    new_run = torch.ones(n_real, dtype=torch.bool, device=dev)
    new_run[1:] = (p_sorted[1:] != p_sorted[:-1]) | (dz_sorted[1:] != dz_sorted[:-1])
    run = torch.cumsum(new_run, 0) - 1
    n_runs = int(run[-1]) + 1 if n_real else 0
    lo = torch.zeros(n_runs, **long).scatter_reduce_(0, run, position, "amin", include_self=False)
    hi = torch.zeros(n_runs, **long).scatter_reduce_(0, run, position, "amax", include_self=False)
    ihit = torch.empty(n_real, **long)
    ihit[order] = torch.div(lo[run] + hi[run], 2, rounding_mode="floor")

    table = trackml_order_weights(dev)
    nh = nhits[hit_p].clamp(max=_ORDER_MAX_HITS)
    w_order = torch.where(ihit < _ORDER_MAX_HITS, table[nh, ihit.clamp(max=_ORDER_MAX_HITS - 1)],
                          0.0)
    weights = torch.zeros(n, dtype=float_dtype(dev), device=dev)
    weights[real] = w_pt * w_order
    events, event_idx = torch.unique(he, return_inverse=True)
    total = torch.zeros(events.numel(), dtype=weights.dtype, device=dev).index_add_(
        0, event_idx, weights)
    return weights / torch.where(total > 0, total, 1.0)[event_idx]


def trackml_score(hit_event: torch.Tensor, hit_particle: torch.Tensor, hit_track: torch.Tensor,
                  hit_weight: torch.Tensor) -> TrackmlScore:
    """The TrackML score of every event, and their mean.

    Per event: the summed ``hit_weight`` of the hits that a matched track (double majority,
    :func:`match_tracks`) shares with its particle, divided by the summed weight of all
    hits of the event (1 for weights from :func:`trackml_weights`). A perfect
    reconstruction scores 1; hits in no track, fake tracks and the hits of a good track
    that belong to other particles add nothing. Every track counts, whatever its length
    (as in the challenge). Each hit has one row (it is in at most one track).

    Args:
        hit_event: Event of each hit.
        hit_particle: Particle id of each hit, 0 for noise.
        hit_track: Track id of each hit, negative for none.
        hit_weight: Weight of each hit (from :func:`trackml_weights` or the ``weight``
            column of TrackML's ``truth.csv``).

    Returns:
        A :class:`TrackmlScore`: the events (distinct ``hit_event`` values, increasing),
        their scores (NaN for an event whose hits weigh 0 in total) and the mean over the
        events with a score (NaN if none).

    Shapes:
        all: ``[N]``.
    """
    he, hp, ht = _hits(hit_event, hit_particle, hit_track)
    w = _values(hit_weight, "hit_weight", he.shape[0], he.device)
    m = _match(he, hp, ht)
    events, event_idx = torch.unique(he, return_inverse=True)
    t = m.hit_t.clamp(min=0)
    good = (m.hit_t >= 0) & (m.hit_p >= 0)
    if m.best.numel():  # no track at all: nothing is good
        good &= m.matched[t] & (m.hit_p == m.best[t])
    n_e = events.numel()
    zeros = torch.zeros(n_e, dtype=w.dtype, device=he.device)
    total = zeros.index_add(0, event_idx, w)
    passed = zeros.index_add(0, event_idx, torch.where(good, w, 0.0))
    scores = passed / torch.where(total != 0, total, math.nan)
    defined = ~torch.isnan(scores)
    mean = float(scores[defined].mean()) if bool(defined.any()) else math.nan
    return TrackmlScore(events, scores, mean)
