"""Track sequences: the hits of each truth particle, layer by layer, as next-hit examples.

The training input of an LSTM tracker in the spirit of HEP.TrkX (S. Farrell et al.,
"Novel deep learning methods for track reconstruction", arXiv:1810.06111): a network
reads the first hits of a track and predicts where the next hit lies, with a Gaussian
uncertainty. Each truth particle of an event gives its hits ordered by layer (one hit per
layer: of two hits of a particle on one layer, the one at the smaller radius), and every
prefix of at least ``seed_length`` hits that has a next hit is one example:

- ``x``       ``[M, T, 4]`` float32, per hit of the prefix (zeros after ``lengths``):
  ``r / r_scale``, ``Δφ`` (the hit's φ minus the φ of the track's first hit, wrapped
  into [-π, π)), ``z / z_scale`` and ``r_next / r_scale``, the radius of the hit that
  follows it on the track; for the last hit of the prefix that is the hit to be
  predicted, so the network knows how far ahead it must predict (a skipped layer is one
  step further out);
- ``lengths`` ``[M]`` int64, hits in each prefix (``seed_length <= L <= T``);
- ``target``  ``[M, 2]`` float32: ``Δφ`` of the next hit (relative to the track's first
  hit, wrapped) and ``z_next / z_scale``;
- ``event``   ``[M]`` int64, the event (index within the chunk) of each example,

with ``T = n_layers - 1``, the longest prefix that has a next hit. Examples are ordered by
event, particle id and prefix length. Noise hits (particle 0), hits without a layer
(``hit_layer`` -1 or ``>= n_layers``) and particles with fewer than ``min_hits`` hits (or
below ``min_pt``) give no examples; a chunk without any gives ``M = 0``.

The whole chunk is built at once: the usable hits are ordered with one ``np.lexsort`` by
(event, particle, layer, radius), the first hit of every (event, particle, layer) is kept,
and the prefixes are cut from each particle's run of hits by index arithmetic; there is
no Python loop over hits, particles or events. :func:`track_features` makes the same
per-hit features in torch, so a track follower feeds the network exactly what it was
trained on.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Mapping
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml.errors import BadValueError, ConfigError
from hepml.io import expressions
from hepml.representations._arrays import _flatten, check_finite
from hepml.representations._transform import ConfigMixin, Transform
from hepml.representations.hits import HIT_FIELDS, TRUTH_FIELDS, HitArrays, wrap_phi

log = logging.getLogger(__name__)

__all__ = ["SEQUENCE_FEATURES", "TrackSequenceConfig", "TrackSequences",
           "make_track_sequences", "track_features"]

#: The per-hit input features, in column order.
SEQUENCE_FEATURES = ("r", "dphi", "z", "r_next")
_PT_FIELDS = ("particle_id", "particle_pt")


def _int_at_least(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
        raise ConfigError(f"representation.{key}: expected an integer >= {low}, got {value!r}")
    return int(value)


@dataclasses.dataclass(frozen=True)
class TrackSequenceConfig(ConfigMixin):
    """How track sequences are made; checked when constructed.

    Attributes:
        n_layers: Barrel layers (``hit_layer`` 0 .. n_layers - 1); hits on other layers are
            ignored. Fixes the padded length ``T = n_layers - 1``.
        seed_length: Hits of the shortest prefix (the seed the network starts from).
        min_hits: Particles with fewer hits (one per layer) give no examples; at least
            ``seed_length + 1`` hits are needed for one example whatever this says.
        min_pt: Only particles with ``particle_pt`` (GeV) of at least this give examples;
            0 (the default) selects by hits alone and reads no particle branch.
        r_scale: Radii are divided by this (mm).
        z_scale: z is divided by this (mm).
    """

    n_layers: int = 10
    seed_length: int = 3
    min_hits: int = 4
    min_pt: float = 0.0
    r_scale: float = 1000.0
    z_scale: float = 1000.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "n_layers", _int_at_least("n_layers", self.n_layers, 2))
        object.__setattr__(self, "seed_length",
                           _int_at_least("seed_length", self.seed_length, 1))
        object.__setattr__(self, "min_hits", _int_at_least("min_hits", self.min_hits, 1))
        if self.seed_length >= self.n_layers:
            raise ConfigError(f"representation.seed_length ({self.seed_length}) must be smaller "
                              f"than n_layers ({self.n_layers}): a seed needs a next hit")
        if self.min_hits > self.n_layers:
            raise ConfigError(f"representation.min_hits ({self.min_hits}) exceeds n_layers "
                              f"({self.n_layers}): no particle could pass; lower min_hits")
        for key in ("min_pt", "r_scale", "z_scale"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.floating)) \
                    or not np.isfinite(value):
                raise ConfigError(f"representation.{key}: expected a number, got {value!r}")
            object.__setattr__(self, key, float(value))
        if self.min_pt < 0:
            raise ConfigError(f"representation.min_pt must be >= 0, got {self.min_pt}")
        if self.r_scale <= 0 or self.z_scale <= 0:
            raise ConfigError(f"representation.r_scale and z_scale must be positive, got "
                              f"{self.r_scale} and {self.z_scale}")

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The input branches the sequences are made from."""
        return HIT_FIELDS + TRUTH_FIELDS + (_PT_FIELDS if self.min_pt > 0 else ())

    @property
    def max_length(self) -> int:
        """Padded prefix length ``T``: the longest prefix that still has a next hit."""
        return self.n_layers - 1

    @property
    def input_dims(self) -> int:
        """Features per hit (the model's ``input_dims``)."""
        return len(SEQUENCE_FEATURES)

    @property
    def shapes(self) -> dict[str, tuple[int, ...]]:
        """Shape of one example's ``x``, ``lengths``, ``target`` and ``event``."""
        return {"x": (self.max_length, self.input_dims), "lengths": (), "target": (2,),
                "event": ()}


def track_features(r: torch.Tensor, phi: torch.Tensor, z: torch.Tensor, r_next: torch.Tensor,
                   lengths: torch.Tensor, *, r_scale: float, z_scale: float) -> torch.Tensor:
    """The per-hit network inputs of padded tracks (see :data:`SEQUENCE_FEATURES`).

    Args:
        r: Radius of each hit ``[M, T]`` (mm); column 0 is the track's first hit.
        phi: Azimuth of each hit ``[M, T]`` (rad).
        z: z of each hit ``[M, T]`` (mm).
        r_next: Radius of the hit that follows each hit ``[M, T]`` (for the last hit of a
            track: the radius at which the next hit is to be predicted).
        lengths: Hits of each track ``[M]``; entries from ``lengths`` on are padding.
        r_scale: Divisor of the radii (mm).
        z_scale: Divisor of z (mm).

    Returns:
        ``[M, T, 4]`` float32 on the device of ``r``: ``r / r_scale``, ``Δφ`` to the first
        hit wrapped into [-π, π), ``z / z_scale``, ``r_next / r_scale``; zeros in padding.
    """
    dphi = expressions.wrap_phi(phi - phi[:, :1])
    x = torch.stack([r / r_scale, dphi, z / z_scale, r_next / r_scale], dim=-1)
    steps = torch.arange(r.shape[1], device=r.device)
    valid = steps[None, :] < lengths.to(r.device)[:, None]
    return torch.where(valid[..., None], x, torch.zeros((), dtype=x.dtype, device=x.device)
                       ).to(torch.float32)


def _hit_pt(events: Any, hits: HitArrays) -> np.ndarray:
    """``particle_pt`` of the truth particle of every hit (NaN for noise hits)."""
    counts, flat = _flatten(events, _PT_FIELDS)
    p_event = np.repeat(np.arange(len(counts)), counts)
    check_finite("particle_pt", flat["particle_pt"], p_event, entry="event",
                 making="track sequences")
    if len(counts) != hits.n_events:
        raise BadValueError(f"branch 'particle_id' has {len(counts)} events but the hit "
                            f"branches have {hits.n_events}: the branches do not belong together")
    p_id = flat["particle_id"].astype(np.int64)
    # dense ids over hits and particles, so (event, id) fits one int64 key
    uniq, inverse = np.unique(np.concatenate([hits.particle, p_id]), return_inverse=True)
    n_ids = np.int64(len(uniq))
    hit_key = hits.event * n_ids + inverse[:len(hits)]
    p_key = p_event * n_ids + inverse[len(hits):]
    order = np.argsort(p_key, kind="stable")
    p_key, p_pt = p_key[order], flat["particle_pt"][order].astype(np.float64)
    pos = np.clip(np.searchsorted(p_key, hit_key), 0, max(len(p_key) - 1, 0))
    found = (p_key[pos] == hit_key) if len(p_key) else np.zeros(len(hits), dtype=bool)
    truth = hits.particle != 0
    missing = truth & ~found
    if missing.any():
        first = int(np.argmax(missing))
        raise BadValueError(
            f"{int(missing.sum())} hit(s) belong to particles missing from particle_id, the "
            f"first in event {int(hits.event[first])} (particle {int(hits.particle[first])}, "
            "entry index within this chunk): hit_particle_id and particle_id do not match; "
            "fix the input or set representation.min_pt: 0")
    pt = np.full(len(hits), np.nan)
    pt[found] = p_pt[pos[found]]
    return pt


def make_track_sequences(events: ak.Array | Mapping[str, Any],
                         config: TrackSequenceConfig | None = None) -> dict[str, torch.Tensor]:
    """Build the next-hit training examples of a whole chunk at once.

    Args:
        events: One entry per event with jagged ``hit_x, hit_y, hit_z, hit_layer,
            hit_particle_id`` (and ``particle_id, particle_pt`` when ``min_pt > 0``); an
            awkward record array or a mapping of field name to array. Not modified.
        config: Layers, seed length, selection and scales (default
            :class:`TrackSequenceConfig`).

    Returns:
        ``{"x", "lengths", "target", "event"}``, CPU tensors (float32, int64, float32,
        int64); see the module docstring.

    Shapes:
        - x: ``[M, T, 4]``, ``T = n_layers - 1``
        - lengths: ``[M]``
        - target: ``[M, 2]``
        - event: ``[M]``

    Raises:
        MissingBranchError: A required branch is missing (a ``KeyError``).
        BadValueError: A coordinate or ``particle_pt`` is NaN or infinite, the branches
            disagree in length, or a hit's particle is missing from ``particle_id``.
    """
    cfg = config if config is not None else TrackSequenceConfig()
    hits = HitArrays.from_awkward(events, truth=True)
    particle = hits.particle if hits.particle is not None else np.zeros(len(hits), np.int64)
    use = (particle != 0) & (hits.layer >= 0) & (hits.layer < cfg.n_layers)
    if cfg.min_pt > 0:
        use &= _hit_pt(events, hits) >= cfg.min_pt  # NaN (noise) compares False
    idx = np.flatnonzero(use)
    order = np.lexsort((hits.r[idx], hits.layer[idx], particle[idx], hits.event[idx]))
    idx = idx[order]
    ev, pid, lay = hits.event[idx], particle[idx], hits.layer[idx]
    new_track = np.ones(len(idx), dtype=bool)
    new_track[1:] = (ev[1:] != ev[:-1]) | (pid[1:] != pid[:-1])
    first_on_layer = new_track.copy()
    first_on_layer[1:] |= lay[1:] != lay[:-1]
    idx, new_track = idx[first_on_layer], new_track[first_on_layer]

    # runs of hits of one particle: start in idx and count
    start = np.flatnonzero(new_track)
    count = np.diff(np.append(start, len(idx)))
    keep = count >= max(cfg.min_hits, cfg.seed_length + 1)
    start, count = start[keep], count[keep]

    # one example per prefix length L = seed_length .. count - 1
    per_track = count - cfg.seed_length
    ex_start = np.repeat(start, per_track)
    ex_len = cfg.seed_length + (np.arange(per_track.sum()) - np.repeat(
        np.cumsum(per_track) - per_track, per_track))
    m, t = len(ex_len), cfg.max_length

    # every (example, step) slot of the prefixes, then the padded coordinates
    owner = np.repeat(np.arange(m), ex_len)
    step = np.arange(len(owner)) - np.repeat(np.cumsum(ex_len) - ex_len, ex_len)
    hit = idx[ex_start[owner] + step]
    nxt = idx[ex_start[owner] + step + 1]
    pad = {name: np.zeros((m, t), dtype=np.float64) for name in ("r", "phi", "z", "r_next")}
    pad["r"][owner, step] = hits.r[hit]
    pad["phi"][owner, step] = hits.phi[hit]
    pad["z"][owner, step] = hits.z[hit]
    pad["r_next"][owner, step] = hits.r[nxt]
    lengths = torch.from_numpy(ex_len.astype(np.int64))
    x = track_features(*(torch.from_numpy(pad[k]) for k in ("r", "phi", "z", "r_next")),
                       lengths, r_scale=cfg.r_scale, z_scale=cfg.z_scale)

    first, target_hit = idx[ex_start], idx[ex_start + ex_len]
    target = np.stack([wrap_phi(hits.phi[target_hit].astype(np.float64)
                                - hits.phi[first].astype(np.float64)),
                       hits.z[target_hit].astype(np.float64) / cfg.z_scale], axis=1)
    log.debug("%d track sequences from %d particles in %d events", m, len(start), hits.n_events)
    return {"x": x, "lengths": lengths,
            "target": torch.from_numpy(target.astype(np.float32).reshape(m, 2)),
            "event": torch.from_numpy(hits.event[first].astype(np.int64))}


class TrackSequences(Transform):
    """Transform: a chunk of events -> next-hit examples (see :func:`make_track_sequences`).

    Pure: the input arrays are not modified and the output depends only on them and on
    the configuration, which :meth:`to_dict` records for checkpoints and run metadata.
    The trainer takes ``(out["x"], out["lengths"], out["target"])``; the model is called
    as ``model(x, lengths)``.

    Args:
        config: The sequence configuration (default: :class:`TrackSequenceConfig`), or a
            plain mapping that :meth:`TrackSequenceConfig.from_dict` accepts.

    Shapes:
        - input: ``N`` events
        - output: ``x [M, T, 4]``, ``lengths [M]``, ``target [M, 2]``, ``event [M]``
    """

    config_class = TrackSequenceConfig
    empty_description = "events give no track sequence (no particle with enough hits)"

    def __call__(self, events: ak.Array | Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Examples of ``events``: ``{"x", "lengths", "target", "event"}``."""
        return make_track_sequences(events, self.config)

    @property
    def output_shape(self) -> dict[str, tuple[int, ...]]:
        """Shape of one example's ``x``, ``lengths``, ``target`` and ``event``."""
        return self.config.shapes

    @property
    def input_dims(self) -> int:
        """Features per hit: the ``input_dims`` of the LSTM tracker."""
        return self.config.input_dims

    def count_empty(self, events: ak.Array | Mapping[str, Any]) -> int:
        """Number of events of ``events`` that give no example."""
        n = len(events[HIT_FIELDS[0]]) if not isinstance(events, ak.Array) else len(events)
        made = np.unique(self(events)["event"].numpy())
        return int(n - len(made))
