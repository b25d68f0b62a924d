"""Detector-monitoring (DQM) runs: lumisections of occupancy histograms with labelled faults.

A run is a sequence of lumisections (LS). Each LS holds two detector histograms filled
from simulated proton-proton collisions, and some LS carry an injected fault whose type
and touched channels are stored with them, so that monitoring methods can be trained on
good LS and scored on the faulty ones.

Collision pool
    ``pool_size`` (2000) Pythia 8 minimum-bias collisions (``SoftQCD:inelastic``,
    sqrt(s) = 13.6 TeV, default tune, multiparton interactions and showers on; particles
    with cτ > 10 mm stable) are made once per run and reduced to what the histograms need
    (:class:`CollisionPool`): the calorimeter deposits and the tracker hits of each
    collision, as flat numpy arrays with per-collision offsets.
Calorimeter deposits
    Every visible final-state particle (no neutrinos) with |η| < ``eta_max`` (3) deposits
    its energy in the calorimeter; muons deposit a fixed ``muon_energy`` (0.3 GeV, a
    minimum-ionising particle). The front face is a barrel cylinder of radius
    ``calo_radius`` (1.2 m) closed by endcap discs at |z| = ``calo_z`` (3.2 m); a charged
    particle reaches it at the transverse distance r = min(calo_radius, calo_z / |sinh η|)
    on its helix in the solenoid field (``b_field``, 2 T) and is recorded at the azimuth
    of that point, φ - q asin(r / 2R) with R = pT / (0.3 |q| B); a charged particle that
    curls up first (2R < r) deposits nothing. The cell is found from the particle's η
    and that azimuth (the vertex displacement is neglected); the deposit enters the
    threshold as transverse energy E / cosh η.
Tracker hits
    Charged final-state particles with pT > ``track_pt_min`` (0.1 GeV) and
    |η| < ``track_eta_max`` (4) are propagated through the ten barrel layers of the TrackML
    detector (:class:`~hepml.simulation.tracker.TrackerGeometry`) with
    :func:`~hepml.simulation.tracker.propagate`: helices in the 2 T field, multiple
    scattering and smearing, each collision at its own vertex z ~ N(0, ``vertex_sigma_z``
    = 50 mm). The pool keeps every hit's layer and azimuth; the layers' inefficiency
    (0.01) and noise (a Poisson mean of 20 hits per layer and crossing) are applied per
    lumisection.
Lumisections
    LS ``i`` (0-based, ``n_lumis`` in all) has pile-up μ_i = ``pileup_start`` ·
    (``pileup_end`` / ``pileup_start``)^(i / (n_lumis - 1)): an exponential luminosity
    decay over the fill, by default from μ = 40 to μ = 20. It records ``n_events`` bunch
    crossings (zero-bias events kept by a prescaled trigger), n_events ~
    Poisson(``mean_crossings`` = 150) (exactly ``mean_crossings`` rounded when
    ``poisson_crossings`` is off). Each crossing holds Poisson(μ_i) collisions drawn from
    the pool with replacement; each drawn collision is rotated by a uniform random angle
    in φ and mirrored η → -η with probability 1/2, so repeated pool collisions do not
    repeat patterns (the tracker hits keep their layer and only rotate: mirroring in z
    leaves the transverse motion unchanged).
``calo_occupancy``
    η-φ grid of ``n_eta`` × ``n_phi`` (30 × 36) cells, η in [-3, 3) in bins of 0.2 and φ
    in [-π, π) in 36 bins. In each crossing the transverse energies of all particles of
    its collisions are summed per cell; the cell fires when the sum exceeds
    ``calo_threshold`` (1.0 GeV). ``calo_occupancy`` counts the crossings in which a
    cell fired, so it lies between 0 and ``n_events``.
``tracker_occupancy``
    ``n_layers`` × ``n_phi`` (10 × 36, the calorimeter's φ edges): the number of hits per
    layer and φ bin in the LS, after the inefficiency, plus the noise hits, uniform in φ.

All of it is accumulated from sampled crossings and collisions, not drawn around a
template: a calorimeter cell's occupancy is binomial in the crossings, a tracker bin's
count compound Poisson in the collisions.

Faults (:data:`FAULTS`; the code of a fault is its index, 0 = good)
    A fraction ``fault_fraction`` (0.2) of the LS is faulty. Faults come in episodes of 1
    to ``max_episode_length`` (4) consecutive LS with one type and location; the types are
    equally likely, the location and magnitude are drawn per episode, and episodes are
    separated by at least one good LS whenever there are enough good LS. Magnitudes are
    drawn uniformly from the ranges below (config fields):

    ``dead_region``
        A ``dead_size`` × ``dead_size`` (4 × 4) block of calorimeter cells reads nothing
        (16 cells; the block may wrap around in φ).
    ``hot_channel``
        One calorimeter cell fires in a fraction ``hot_fraction`` (0.3 to 0.8) of the
        crossings regardless of its energy (in addition to its own firing).
    ``noisy_layer``
        One tracker layer gets extra noise hits, uniform in φ: on average
        ``noisy_extra`` (0.2 to 0.5) times its normal occupancy (hits from collisions
        after the inefficiency, plus noise) at the LS's pile-up.
    ``gain_drift``
        The calorimeter energy scale of one η half (η > 0 or η < 0) rises linearly through
        the episode from ``gain_start`` (1.10 to 1.15) in its first LS to ``gain_end``
        (1.25 to 1.30) in its last, so more cells pass the threshold.
    ``timing``
        One φ sector of 30° (3 of the 36 φ bins, sectors aligned to multiples of 30°) is
        desynchronised: its calorimeter energies are sampled off the pulse peak and
        scaled by ``timing_calo_scale`` (0.4 to 0.6), and its tracker hits (all layers)
        fall outside the readout window with probability ``timing_tracker_loss`` (0.4 to
        0.6).

    The faults are detectable by design: each touches its channels by many standard
    deviations of the LS-to-LS fluctuation (see ``data_samples/README.md`` for a check).

Output: one TTree ``lumis``, one entry per LS in LS order:

==============================  ===========================  ==============================
branch                          type                         meaning
==============================  ===========================  ==============================
``run``                         int32                        run number (``run``, 1)
``lumi``                        int32                        LS number, from 1
``n_events``                    int32                        crossings recorded
``pileup``                      float32                      μ of the LS
``fault``                       int32                        fault code, 0 = good
``calo_occupancy``              int32[n_eta][n_phi]          crossings in which a cell fired
``tracker_occupancy``           int32[n_layers][n_phi]       hits per layer and φ bin
``calo_occupancy_fault``        uint8[n_eta][n_phi]          1 on the cells the fault touches
``tracker_occupancy_fault``     uint8[n_layers][n_phi]       1 on the bins the fault touches
==============================  ===========================  ==============================

The fault masks are 1 on the 16 dead cells, the hot cell, the noisy layer's φ bins, all
cells of the drifting η half, and the desynchronised sector's φ bins in the calorimeter
and in every tracker layer; all 0 for good LS. The metadata (``hepml_metadata``) holds
the histograms' axes (``"histograms"``), the fault names in code order (``"faults"``),
the fault episodes with their first and last LS, location and parameters
(``"episodes"``), the configuration, the pool's summary and the Pythia settings, seeds
and software versions.

Random numbers: the pool's Pythia worker ``i`` uses seed ``seed * 1000 + i + 1``; the
pool's detector simulation (vertices, scattering, smearing) uses a numpy generator seeded
with ``[seed, 0]``, the run's schedule (crossings per LS, fault episodes) ``[seed, 1]``,
and LS number ``lumi`` its own ``[seed, 2, lumi]``. The output depends only on the
configuration (``n_workers`` included, as every worker has its own Pythia seed).
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepml.errors import BadValueError, ConfigError, GenerationError
from hepml.io.expressions import wrap_phi
from hepml.simulation._pythia import (
    MAX_SEED,
    GeneratorConfig,
    ParticleTable,
    WorkerRun,
    flat_record,
    pt_eta_phi,
    run_metadata,
    run_workers,
)
from hepml.simulation.tracker import TrackerGeometry, propagate

log = logging.getLogger(__name__)

__all__ = [
    "FAULTS",
    "MAX_SEED",
    "CollisionPool",
    "DQMConfig",
    "DetectorCondition",
    "FaultEpisode",
    "accumulate_lumisection",
    "build_pool",
    "draw_episodes",
    "generate_dqm",
    "generate_dqm_arrays",
    "make_pool",
    "pileup_schedule",
    "simulate_run",
    "toy_pool",
]

#: Fault names; a fault's code (the ``fault`` branch) is its index here.
FAULTS = ("good", "dead_region", "hot_channel", "noisy_layer", "gain_drift", "timing")

#: Number of φ sectors the ``timing`` fault chooses from (30° each).
N_SECTORS = 12

#: Pythia settings of the pool: minimum bias, particles with cτ > 10 mm stable.
_PROCESS_SETTINGS = (
    "SoftQCD:inelastic = on",
    "ParticleDecays:limitTau0 = on",
    "ParticleDecays:tau0Max = 10",
)

_INT32_MAX = 2**31 - 1

#: Names of the magnitude ranges of :class:`DQMConfig` (pairs lo, hi).
_RANGES = ("hot_fraction", "noisy_extra", "gain_start", "gain_end", "timing_calo_scale",
           "timing_tracker_loss")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class DQMConfig(GeneratorConfig):
    """How to simulate a monitoring run. Validated on construction.

    Attributes:
        n_lumis: Lumisections in the run.
        run: Run number written to every entry.
        pool_size: Minimum-bias collisions generated with Pythia for the pool.
        mean_crossings: Mean number of crossings recorded per LS.
        poisson_crossings: Draw each LS's crossings from Poisson(``mean_crossings``);
            off: every LS records ``round(mean_crossings)`` crossings.
        pileup_start: Pile-up μ of the first LS.
        pileup_end: Pile-up μ of the last LS (exponential decay in between; equal to
            ``pileup_start`` for a constant μ).
        fault_fraction: Fraction of the LS that are faulty, 0 to 1.
        max_episode_length: Longest fault episode in LS (lengths 1 to this, uniform).
        n_eta: Calorimeter η bins (even, so that the η halves are whole bins).
        eta_max: The calorimeter covers |η| < eta_max.
        n_phi: φ bins of both histograms (a multiple of 12, for the 30° sectors).
        calo_threshold: A cell fires when the transverse energy summed over one
            crossing exceeds this (GeV).
        muon_energy: Energy a muon deposits in the calorimeter (GeV).
        calo_radius: Radius of the calorimeter's barrel front face (mm).
        calo_z: |z| of its endcap front faces (mm).
        b_field: Solenoid field along +z (T), for the tracker and the bending in front of
            the calorimeter.
        geometry: Tracker layers; each layer's ``inefficiency`` and ``noise`` (the mean
            number of noise hits per crossing, Poisson) are used.
        track_pt_min: Charged particles need pT above this (GeV) to make tracker hits.
        track_eta_max: ... and |η| below this.
        vertex_sigma_z: Width of the collision vertex z distribution (mm).
        dead_size: Side of the dead block of calorimeter cells (``dead_region``).
        hot_fraction: Range of the fraction of crossings in which a hot cell fires.
        noisy_extra: Range of the extra noise of a noisy layer, as a fraction of its
            normal occupancy.
        gain_start: Range of the gain of a drifting η half in the episode's first LS.
        gain_end: Range of its gain in the episode's last LS.
        timing_calo_scale: Range of the energy scale of a desynchronised sector.
        timing_tracker_loss: Range of the probability that a hit of a desynchronised
            sector is lost.
        process: ``"minbias"`` (``SoftQCD:inelastic``), the only choice.
        sqrt_s: Proton-proton centre-of-mass energy (GeV).
        mpi, isr, fsr: Multiparton interactions, initial- and final-state showers.
        tune: Pythia ``Tune:pp`` number; 14 (Monash 2013) is Pythia's default.
        extra_settings: Raw Pythia settings applied last.
        seed: Master seed, 0 to 899998 (see the module docstring).
        n_workers: Processes generating the pool in parallel (1 runs in this process).
        batch_size: Collisions per ``Pythia.nextBatch`` call; speed and memory only.
    """

    n_lumis: int = 600
    run: int = 1
    pool_size: int = 2000
    mean_crossings: float = 150.0
    poisson_crossings: bool = True
    pileup_start: float = 40.0
    pileup_end: float = 20.0
    fault_fraction: float = 0.2
    max_episode_length: int = 4
    n_eta: int = 30
    eta_max: float = 3.0
    n_phi: int = 36
    calo_threshold: float = 1.0
    muon_energy: float = 0.3
    calo_radius: float = 1200.0
    calo_z: float = 3200.0
    b_field: float = 2.0
    geometry: TrackerGeometry = field(default_factory=TrackerGeometry.default)
    track_pt_min: float = 0.1
    track_eta_max: float = 4.0
    vertex_sigma_z: float = 50.0
    dead_size: int = 4
    hot_fraction: tuple[float, float] = (0.3, 0.8)
    noisy_extra: tuple[float, float] = (0.2, 0.5)
    gain_start: tuple[float, float] = (1.10, 1.15)
    gain_end: tuple[float, float] = (1.25, 1.30)
    timing_calo_scale: tuple[float, float] = (0.4, 0.6)
    timing_tracker_loss: tuple[float, float] = (0.4, 0.6)
    process: str = "minbias"
    sqrt_s: float = 13600.0
    mpi: bool = True
    isr: bool = True
    fsr: bool = True
    tune: int = 14
    extra_settings: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 1
    n_workers: int = 1
    batch_size: int = 100

    def __post_init__(self) -> None:
        name = type(self).__name__
        self._check_process(("minbias",))
        self._normalise_settings()
        if not isinstance(self.geometry, TrackerGeometry):
            raise ConfigError(
                f"{name}.geometry = {self.geometry!r} must be a TrackerGeometry, e.g. "
                "TrackerGeometry.default() or TrackerGeometry.from_dict({'layers': [...]})"
            )
        self._check_int("n_lumis", self.n_lumis, 1, None)
        self._check_int("run", self.run, 0, _INT32_MAX)
        self._check_int("pool_size", self.pool_size, 1, None)
        self._check_int("max_episode_length", self.max_episode_length, 1, None)
        self._check_int("n_eta", self.n_eta, 2, None)
        self._check_int("n_phi", self.n_phi, N_SECTORS, None)
        self._check_int("dead_size", self.dead_size, 1, None)
        if self.n_eta % 2:
            raise ConfigError(
                f"{name}.n_eta = {self.n_eta} must be even, so that the η halves of the "
                "gain_drift fault are whole bins"
            )
        if self.n_phi % N_SECTORS:
            raise ConfigError(
                f"{name}.n_phi = {self.n_phi} must be a multiple of {N_SECTORS}, so that a "
                "30° sector of the timing fault is whole bins (e.g. 36)"
            )
        if self.dead_size > min(self.n_eta, self.n_phi):
            raise ConfigError(
                f"{name}.dead_size = {self.dead_size} does not fit into the {self.n_eta} x "
                f"{self.n_phi} calorimeter grid; use at most {min(self.n_eta, self.n_phi)}"
            )
        if not isinstance(self.poisson_crossings, bool):
            raise ConfigError(f"{name}.poisson_crossings = {self.poisson_crossings!r} must "
                              "be true or false")
        for field_name in ("mean_crossings", "pileup_start", "pileup_end", "eta_max",
                           "calo_threshold", "calo_radius", "calo_z"):
            self._check_positive(field_name, getattr(self, field_name))
        if self.mean_crossings > 1e6:
            raise ConfigError(f"{name}.mean_crossings = {self.mean_crossings} is too large; "
                              "use at most 1e6 crossings per LS")
        for field_name in ("muon_energy", "b_field", "track_pt_min", "vertex_sigma_z"):
            self._check_number(field_name, getattr(self, field_name), minimum=0.0)
        self._check_positive("track_eta_max", self.track_eta_max)
        self._check_number("fault_fraction", self.fault_fraction, minimum=0.0)
        if self.fault_fraction > 1:
            raise ConfigError(f"{name}.fault_fraction = {self.fault_fraction} must lie in "
                              "[0, 1]: it is the fraction of faulty LS")
        bounds = {"hot_fraction": (0.0, 1.0), "noisy_extra": (0.0, math.inf),
                  "gain_start": (0.0, math.inf), "gain_end": (0.0, math.inf),
                  "timing_calo_scale": (0.0, 1.0), "timing_tracker_loss": (0.0, 1.0)}
        for field_name in _RANGES:
            lo, hi = bounds[field_name]
            object.__setattr__(self, field_name, self._range(field_name, lo, hi))
        self._check_run()

    def _range(self, name: str, lo: float, hi: float) -> tuple[float, float]:
        value = getattr(self, name)
        owner = type(self).__name__
        try:
            a, b = (float(v) for v in value)
        except (TypeError, ValueError):
            raise ConfigError(f"{owner}.{name} = {value!r} must be a pair of numbers "
                              "(low, high)") from None
        if not (math.isfinite(a) and math.isfinite(b)) or a > b or a < lo or b > hi:
            upper = f" <= {hi:g}" if math.isfinite(hi) else ""
            raise ConfigError(f"{owner}.{name} = {value!r} must be a range (low, high) with "
                              f"{lo:g} <= low <= high{upper}")
        return (a, b)

    @property
    def n_layers(self) -> int:
        """Number of tracker layers."""
        return len(self.geometry)

    @property
    def eta_edges(self) -> np.ndarray:
        """The calorimeter's η bin edges (``n_eta + 1``)."""
        return np.linspace(-self.eta_max, self.eta_max, self.n_eta + 1)

    @property
    def phi_edges(self) -> np.ndarray:
        """The φ bin edges of both histograms (``n_phi + 1``, from -π to π)."""
        return np.linspace(-np.pi, np.pi, self.n_phi + 1)

    def pythia_settings(self, worker_seed: int) -> list[str]:
        """Return every Pythia setting string used by a worker with Pythia seed ``worker_seed``."""
        return self._settings(list(_PROCESS_SETTINGS), worker_seed)

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-serialisable values."""
        d = super().to_dict()
        d["geometry"] = self.geometry.to_dict()
        for name in _RANGES:
            d[name] = list(getattr(self, name))
        return d


def pileup_schedule(config: DQMConfig) -> np.ndarray:
    """Pile-up μ of each LS: exponential from ``pileup_start`` to ``pileup_end``."""
    n = config.n_lumis
    t = np.arange(n) / (n - 1) if n > 1 else np.zeros(1)
    return config.pileup_start * (config.pileup_end / config.pileup_start) ** t


# --------------------------------------------------------------------------- pool


def _offsets(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


@dataclass
class CollisionPool:
    """What the histograms need of each pool collision, as flat arrays with offsets.

    Collision ``k``'s calorimeter deposits are entries ``calo_offsets[k]`` to
    ``calo_offsets[k + 1]`` of the ``calo_*`` arrays, its tracker hits entries
    ``hit_offsets[k]`` to ``hit_offsets[k + 1]`` of the ``hit_*`` arrays. Checked on
    construction; treat the arrays as read-only afterwards (their binned form is cached).

    Attributes:
        calo_offsets: int64, ``n_collisions + 1`` entries, from 0, non-decreasing.
        calo_eta: Pseudorapidity of each deposit.
        calo_phi: Azimuth at which it reaches the calorimeter, in [-π, π).
        calo_energy: Deposited energy (GeV, >= 0).
        hit_offsets: int64, ``n_collisions + 1`` entries.
        hit_layer: Tracker layer of each hit (0 = innermost).
        hit_phi: Azimuth of the hit on its layer.
    """

    calo_offsets: np.ndarray
    calo_eta: np.ndarray
    calo_phi: np.ndarray
    calo_energy: np.ndarray
    hit_offsets: np.ndarray
    hit_layer: np.ndarray
    hit_phi: np.ndarray
    calo_et: np.ndarray = field(init=False, repr=False)
    _binned_cache: dict[Any, Any] = field(init=False, repr=False, compare=False,
                                          default_factory=dict)

    def __post_init__(self) -> None:
        self.calo_offsets = np.asarray(self.calo_offsets, dtype=np.int64)
        self.hit_offsets = np.asarray(self.hit_offsets, dtype=np.int64)
        for name in ("calo_eta", "calo_phi", "calo_energy", "hit_phi"):
            setattr(self, name, np.asarray(getattr(self, name), dtype=np.float64))
        self.hit_layer = np.asarray(self.hit_layer, dtype=np.int64)
        for kind, names in (("calo", ("calo_eta", "calo_phi", "calo_energy")),
                            ("hit", ("hit_layer", "hit_phi"))):
            off = getattr(self, f"{kind}_offsets")
            if off.ndim != 1 or len(off) < 2 or off[0] != 0 or np.any(np.diff(off) < 0):
                raise BadValueError(
                    f"CollisionPool.{kind}_offsets must be 1-d, start at 0, never decrease "
                    "and have one entry more than there are collisions (at least one)"
                )
            for name in names:
                arr = getattr(self, name)
                if arr.ndim != 1 or len(arr) != off[-1]:
                    raise BadValueError(
                        f"CollisionPool.{name} has shape {arr.shape}, but {kind}_offsets "
                        f"ends at {off[-1]}: give one value per entry"
                    )
                if not np.all(np.isfinite(arr)):
                    raise BadValueError(f"CollisionPool.{name} holds NaN or infinite values")
        if len(self.calo_offsets) != len(self.hit_offsets):
            raise BadValueError(
                f"CollisionPool: calo_offsets describe {len(self.calo_offsets) - 1} "
                f"collisions, hit_offsets {len(self.hit_offsets) - 1}; they must agree"
            )
        if np.any(self.calo_energy < 0):
            raise BadValueError("CollisionPool.calo_energy must be >= 0 (GeV)")
        if np.any(self.hit_layer < 0):
            raise BadValueError("CollisionPool.hit_layer must be >= 0")
        self.calo_et = self.calo_energy / np.cosh(self.calo_eta)

    @classmethod
    def from_counts(
        cls, calo_counts: Any, calo_eta: Any, calo_phi: Any, calo_energy: Any,
        hit_counts: Any, hit_layer: Any, hit_phi: Any,
    ) -> CollisionPool:
        """Build a pool from the number of deposits and hits of each collision."""
        return cls(_offsets(np.asarray(calo_counts)), calo_eta, calo_phi, calo_energy,
                   _offsets(np.asarray(hit_counts)), hit_layer, hit_phi)

    @property
    def n_collisions(self) -> int:
        """Collisions in the pool."""
        return len(self.calo_offsets) - 1

    def mean_hits_per_layer(self, n_layers: int) -> np.ndarray:
        """Mean number of hits per collision on each of ``n_layers`` layers."""
        return np.bincount(self.hit_layer, minlength=n_layers)[:n_layers] / self.n_collisions

    def summary(self, n_layers: int) -> dict[str, Any]:
        """Means per collision, for the metadata."""
        n = self.n_collisions
        return {
            "n_collisions": n,
            "calo_deposits_per_collision": float(self.calo_offsets[-1] / n),
            "calo_energy_per_collision_gev": float(self.calo_energy.sum() / n),
            "calo_et_per_collision_gev": float(self.calo_et.sum() / n),
            "hits_per_collision": float(self.hit_offsets[-1] / n),
            "hits_per_collision_by_layer": self.mean_hits_per_layer(n_layers).tolist(),
            "empty_collisions": int(np.count_nonzero(
                (np.diff(self.calo_offsets) == 0) & (np.diff(self.hit_offsets) == 0))),
        }


def toy_pool(n_collisions: int, seed: int = 0, *, n_layers: int = 10,
             eta_max: float = 3.0) -> CollisionPool:
    """A small pool of toy collisions, made without Pythia (for tests and examples).

    Each collision has Poisson(3) clusters with Poisson(5) particles each around a
    random axis (η uniform in ±``eta_max``, spread 0.15 in η and φ); a particle deposits
    an exponential transverse energy of mean 0.5 GeV, and two thirds of the particles
    make one hit on each layer, at the particle's φ plus a random bending that grows with
    the layer. The clusters make the hits of one collision cluster in φ.
    """
    rng = np.random.default_rng(seed)
    n_clusters = rng.poisson(3.0, n_collisions)
    cl_owner = np.repeat(np.arange(n_collisions), n_clusters)
    n_cl = len(cl_owner)
    cl_eta = rng.uniform(-eta_max, eta_max, n_cl)
    cl_phi = rng.uniform(-np.pi, np.pi, n_cl)
    n_part = rng.poisson(5.0, n_cl)
    owner_cl = np.repeat(np.arange(n_cl), n_part)
    m = len(owner_cl)
    eta = np.clip(cl_eta[owner_cl] + rng.normal(0.0, 0.15, m), -eta_max + 1e-6,
                  eta_max - 1e-6)
    phi = wrap_phi(cl_phi[owner_cl] + rng.normal(0.0, 0.15, m))
    et = rng.exponential(0.5, m)
    collision = cl_owner[owner_cl]  # sorted: clusters and particles are in collision order
    calo_counts = np.bincount(collision, minlength=n_collisions)
    charged = np.flatnonzero(rng.random(m) < 2.0 / 3.0)
    bend = rng.normal(0.0, 0.05, len(charged))
    layers = np.arange(n_layers)
    hit_phi = wrap_phi(phi[charged][:, None] + bend[:, None] * (layers + 1)[None, :])
    hit_layer = np.broadcast_to(layers, hit_phi.shape)
    hit_counts = np.bincount(collision[charged], minlength=n_collisions) * n_layers
    return CollisionPool.from_counts(calo_counts, eta, phi, et * np.cosh(eta), hit_counts,
                                     hit_layer.ravel(), hit_phi.ravel())


def build_pool(
    particles: dict[str, np.ndarray], n_collisions: int, config: DQMConfig,
    rng: np.random.Generator,
) -> CollisionPool:
    """Turn the final-state particles of ``n_collisions`` collisions into a pool.

    Args:
        particles: Flat arrays ``collision`` (0 .. n_collisions-1, non-decreasing),
            ``pid``, ``charge``, ``mass``, ``px py pz e`` (GeV) and the production vertex
            ``vx vy vz`` (mm) of the visible final-state particles (no neutrinos).
        n_collisions: Number of collisions (also those without particles).
        config: Calorimeter, field, tracker cuts and geometry.
        rng: Random numbers for the vertices, scattering and smearing.

    Returns:
        The pool: calorimeter deposits and tracker hits of each collision (module
        docstring).
    """
    collision = np.asarray(particles["collision"], dtype=np.int64)
    if len(collision) and (np.any(np.diff(collision) < 0) or collision[0] < 0
                           or collision[-1] >= n_collisions):
        raise BadValueError(
            f"build_pool: particle collisions must be sorted and within 0..{n_collisions - 1}"
        )
    px, py, pz, e = (np.asarray(particles[k], dtype=np.float64) for k in ("px", "py", "pz", "e"))
    q = np.asarray(particles["charge"], dtype=np.float64)
    pid = np.asarray(particles["pid"])
    pt, eta, phi = pt_eta_phi(px, py, pz)

    # calorimeter: visible particles within the acceptance that reach the front face
    with np.errstate(divide="ignore", over="ignore"):
        r_face = np.minimum(config.calo_radius, config.calo_z / np.abs(np.sinh(eta)))
    two_r = np.full(len(pt), np.inf)  # twice the radius of the transverse circle
    bent = (q != 0) & (config.b_field > 0)
    two_r[bent] = 2.0 * 1000.0 * pt[bent] / (0.3 * np.abs(q[bent]) * config.b_field)
    calo = (np.abs(eta) < config.eta_max) & (pt > 0) & (r_face < two_r)
    bend = np.arcsin(np.minimum(r_face / two_r, 1.0))  # 0 for straight lines
    calo_phi = wrap_phi(phi - np.sign(q) * bend)
    energy = np.where(np.abs(pid) == 13, config.muon_energy, e)
    calo_counts = np.bincount(collision[calo], minlength=n_collisions)

    # tracker: charged particles through the barrel, each collision at its own vertex
    trk = np.flatnonzero((q != 0) & (pt > config.track_pt_min)
                         & (np.abs(eta) < config.track_eta_max))
    vz0 = rng.normal(0.0, config.vertex_sigma_z, n_collisions)
    geometry = config.geometry.with_layers(inefficiency=0.0)  # applied per LS
    hits = propagate(
        px[trk], py[trk], pz[trk], q[trk], np.asarray(particles["mass"])[trk],
        np.asarray(particles["vx"])[trk], np.asarray(particles["vy"])[trk],
        np.asarray(particles["vz"])[trk] + vz0[collision[trk]],
        geometry, rng, b_field=config.b_field,
    )
    hit_collision = collision[trk][hits.particle]
    order = np.argsort(hit_collision, kind="stable")
    return CollisionPool.from_counts(
        calo_counts, eta[calo], calo_phi[calo], energy[calo],
        np.bincount(hit_collision, minlength=n_collisions), hits.layer[order],
        np.arctan2(hits.y, hits.x)[order],
    )


def _visible_particles(prt: ak.Array, table: ParticleTable) -> dict[str, np.ndarray]:
    """Visible final-state particles of a batch of Pythia records, as flat arrays."""
    rec = flat_record(prt, table)
    keep = np.flatnonzero(rec.final)
    flat = ak.flatten(prt[["m", "vProd"]])
    vprod = flat.vProd
    vertex = [ak.to_numpy(ak.fill_none(vprod[c], 0.0))[keep] for c in ("px", "py", "pz")]
    return {
        "collision": rec.event_of[keep].astype(np.int64),
        "pid": rec.pid[keep],
        "charge": np.rint(rec.charge[keep]).astype(np.int32),
        "mass": ak.to_numpy(flat.m)[keep],
        "px": rec.px[keep], "py": rec.py[keep], "pz": rec.pz[keep], "e": rec.e[keep],
        "vx": vertex[0], "vy": vertex[1], "vz": vertex[2],
    }


def _pool_worker(
    config: DQMConfig,
    worker: int,
    n_target: int,
    report: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``n_target`` minimum-bias collisions; return (particles, summary)."""
    if n_target == 0:
        return {}, {"worker": worker, "n_collisions": 0}
    run = WorkerRun(config, worker, report)
    pieces, n_have = [], 0
    while n_have < n_target:
        n_ask = min(config.batch_size, n_target - n_have)
        batch = run.pythia.nextBatch(n_ask)
        n_b = min(len(batch), n_target - n_have)
        if n_b == 0:
            raise GenerationError(
                f"Pythia produced no minimum-bias collisions in a batch of {n_ask} "
                f"(seed {run.seed}); check the settings"
            )
        part = _visible_particles(batch["prt"], run.table)
        keep = part["collision"] < n_b
        part = {k: v[keep] for k, v in part.items()}
        part["collision"] = part["collision"] + n_have
        pieces.append(part)
        n_have += n_b
        run.report(n_b)
    out = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    out["n_collisions"] = n_have
    return out, run.summary(n_collisions=n_have)


def make_pool(config: DQMConfig, *, progress: bool = True) -> tuple[CollisionPool, dict[str, Any]]:
    """Generate the run's pool of ``config.pool_size`` minimum-bias collisions with Pythia.

    Args:
        config: What to generate.
        progress: Show a progress bar counting collisions.

    With ``n_workers > 1`` the workers are started with the ``spawn`` method: a script
    that calls this must guard its top level with ``if __name__ == "__main__":``.

    Returns:
        ``(pool, metadata)``: the pool and the Pythia settings, seeds, versions, timings
        and the pool's summary.

    Raises:
        GenerationError: Pythia refused a setting or failed to initialise.
    """
    results, elapsed = run_workers(_pool_worker, config, config.pool_size, unit="collision",
                                   progress=progress)
    results = [r for r in results if r[0]]
    pieces, n_before = [], 0
    for part, _ in results:
        n = part.pop("n_collisions")
        part["collision"] = part["collision"] + n_before
        pieces.append(part)
        n_before += n
    particles = {k: np.concatenate([p[k] for p in pieces]) for k in pieces[0]}
    t0 = time.perf_counter()
    pool = build_pool(particles, n_before, config, np.random.default_rng([config.seed, 0]))
    meta = run_metadata([r[1] for r in results], elapsed)
    meta["pool_build_seconds"] = time.perf_counter() - t0
    meta["pool"] = pool.summary(config.n_layers)
    return pool, meta


# --------------------------------------------------------------------------- faults


@dataclass
class DetectorCondition:
    """The state of the detector in one LS: what a fault changes, and where.

    Attributes:
        fault: Fault code (index in :data:`FAULTS`), 0 for good.
        calo_gain: (n_eta, n_phi) multiplier of the deposited energies.
        calo_dead: (n_eta, n_phi) True where a cell reads nothing.
        calo_hot: (n_eta, n_phi) probability that a cell fires regardless of its energy.
        tracker_keep: (n_layers, n_phi) probability that a hit is read out in time
            (multiplies the layer's efficiency).
        tracker_extra: (n_layers,) extra noise hits as a fraction of the layer's normal
            occupancy.
        calo_mask: (n_eta, n_phi) True on the cells the fault touches.
        tracker_mask: (n_layers, n_phi) True on the bins the fault touches.
    """

    fault: int
    calo_gain: np.ndarray
    calo_dead: np.ndarray
    calo_hot: np.ndarray
    tracker_keep: np.ndarray
    tracker_extra: np.ndarray
    calo_mask: np.ndarray
    tracker_mask: np.ndarray

    @classmethod
    def good(cls, config: DQMConfig) -> DetectorCondition:
        """A detector without fault."""
        calo, trk = (config.n_eta, config.n_phi), (config.n_layers, config.n_phi)
        return cls(0, np.ones(calo), np.zeros(calo, bool), np.zeros(calo), np.ones(trk),
                   np.zeros(config.n_layers), np.zeros(calo, bool), np.zeros(trk, bool))


@dataclass(frozen=True)
class FaultEpisode:
    """A fault of one type and location over consecutive LS ``first_lumi..last_lumi``.

    Attributes:
        fault: Fault name (one of :data:`FAULTS` but ``"good"``).
        first_lumi: First LS (1-based).
        last_lumi: Last LS (inclusive).
        location: Where: ``dead_region`` ``{"eta_bin", "phi_bin", "size"}`` (the block's
            first bins; it spans ``size`` bins up in η and in φ, wrapping in φ);
            ``hot_channel`` ``{"eta_bin", "phi_bin"}``; ``noisy_layer`` ``{"layer"}``;
            ``gain_drift`` ``{"eta_side"}`` (+1: η > 0, -1: η < 0); ``timing``
            ``{"sector", "phi_bins"}``.
        parameters: How strong: ``hot_channel`` ``{"fire_fraction"}``; ``noisy_layer``
            ``{"extra_fraction"}``; ``gain_drift`` ``{"gain_start", "gain_end"}``;
            ``timing`` ``{"calo_scale", "tracker_loss"}``; ``dead_region`` none.
    """

    fault: str
    first_lumi: int
    last_lumi: int
    location: dict[str, Any] = field(default_factory=dict)
    parameters: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.fault not in FAULTS[1:]:
            raise ConfigError(f"FaultEpisode.fault = {self.fault!r} is not known; use one of "
                              f"{', '.join(FAULTS[1:])}")
        if not 1 <= self.first_lumi <= self.last_lumi:
            raise ConfigError(f"FaultEpisode: LS {self.first_lumi}..{self.last_lumi} is not a "
                              "range of LS numbers (1-based, first <= last)")

    @property
    def code(self) -> int:
        """The fault's code."""
        return FAULTS.index(self.fault)

    @property
    def length(self) -> int:
        """Number of LS."""
        return self.last_lumi - self.first_lumi + 1

    def gain(self, lumi: int) -> float:
        """The drifting gain in LS ``lumi`` (``gain_drift`` only)."""
        a, b = self.parameters["gain_start"], self.parameters["gain_end"]
        t = (lumi - self.first_lumi) / (self.length - 1) if self.length > 1 else 0.0
        return float(a + (b - a) * t)

    def condition(self, lumi: int, config: DQMConfig) -> DetectorCondition:
        """The detector's condition in LS ``lumi`` of this episode."""
        c = DetectorCondition.good(config)
        c.fault = self.code
        loc, par = self.location, self.parameters
        try:
            if self.fault == "dead_region":
                size = loc.get("size", config.dead_size)
                rows = np.arange(loc["eta_bin"], loc["eta_bin"] + size)
                cols = np.arange(loc["phi_bin"], loc["phi_bin"] + size) % config.n_phi
                c.calo_mask[np.ix_(rows, cols)] = True
                c.calo_dead[:] = c.calo_mask
            elif self.fault == "hot_channel":
                c.calo_mask[loc["eta_bin"], loc["phi_bin"]] = True
                c.calo_hot[c.calo_mask] = par["fire_fraction"]
            elif self.fault == "noisy_layer":
                c.tracker_mask[loc["layer"]] = True
                c.tracker_extra[loc["layer"]] = par["extra_fraction"]
            elif self.fault == "gain_drift":
                half = config.n_eta // 2
                rows = slice(half, None) if loc["eta_side"] > 0 else slice(None, half)
                c.calo_mask[rows] = True
                c.calo_gain[c.calo_mask] = self.gain(lumi)
            else:  # timing
                cols = _sector_bins(loc["sector"], config.n_phi)
                c.calo_mask[:, cols] = True
                c.tracker_mask[:, cols] = True
                c.calo_gain[c.calo_mask] = par["calo_scale"]
                c.tracker_keep[c.tracker_mask] = 1.0 - par["tracker_loss"]
        except (KeyError, IndexError) as exc:
            raise ConfigError(
                f"FaultEpisode {self.fault} (LS {self.first_lumi}..{self.last_lumi}): bad "
                f"location {loc} or parameters {par} for a {config.n_eta} x {config.n_phi} "
                f"calorimeter and {config.n_layers} layers ({exc!r}); see FaultEpisode"
            ) from None
        return c

    def to_dict(self) -> dict[str, Any]:
        """JSON-serialisable form (for the metadata)."""
        return {"fault": self.fault, "code": self.code, "first_lumi": self.first_lumi,
                "last_lumi": self.last_lumi, "location": dict(self.location),
                "parameters": dict(self.parameters)}


def _sector_bins(sector: int, n_phi: int) -> list[int]:
    width = n_phi // N_SECTORS
    return list(range(sector * width, (sector + 1) * width))


def _draw_episode(fault: str, first: int, last: int, config: DQMConfig,
                  rng: np.random.Generator) -> FaultEpisode:
    def uniform(name: str) -> float:
        lo, hi = getattr(config, name)
        return round(float(rng.uniform(lo, hi)), 4)

    if fault == "dead_region":
        s = config.dead_size
        loc = {"eta_bin": int(rng.integers(0, config.n_eta - s + 1)),
               "phi_bin": int(rng.integers(0, config.n_phi)), "size": s}
        par: dict[str, Any] = {}
    elif fault == "hot_channel":
        loc = {"eta_bin": int(rng.integers(0, config.n_eta)),
               "phi_bin": int(rng.integers(0, config.n_phi))}
        par = {"fire_fraction": uniform("hot_fraction")}
    elif fault == "noisy_layer":
        loc = {"layer": int(rng.integers(0, config.n_layers))}
        par = {"extra_fraction": uniform("noisy_extra")}
    elif fault == "gain_drift":
        loc = {"eta_side": int(rng.choice([-1, 1]))}
        par = {"gain_start": uniform("gain_start"), "gain_end": uniform("gain_end")}
    else:  # timing
        sector = int(rng.integers(0, N_SECTORS))
        loc = {"sector": sector, "phi_bins": _sector_bins(sector, config.n_phi)}
        par = {"calo_scale": uniform("timing_calo_scale"),
               "tracker_loss": uniform("timing_tracker_loss")}
    return FaultEpisode(fault, first, last, loc, par)


def draw_episodes(config: DQMConfig, rng: np.random.Generator) -> list[FaultEpisode]:
    """Draw the run's fault episodes.

    ``round(fault_fraction * n_lumis)`` LS are faulty, in episodes of 1 to
    ``max_episode_length`` LS (uniform; the last one cut to the total); the types are
    equally likely; the good LS are spread at random over the gaps, keeping at least one
    between episodes where there are enough. Locations and magnitudes: module docstring.
    """
    n_faulty = int(math.floor(config.fault_fraction * config.n_lumis + 0.5))
    lengths: list[int] = []
    while sum(lengths) < n_faulty:
        k = int(rng.integers(1, config.max_episode_length + 1))
        lengths.append(min(k, n_faulty - sum(lengths)))
    n_ep = len(lengths)
    if not n_ep:
        return []
    n_good = config.n_lumis - n_faulty
    min_gap = 1 if n_good >= n_ep - 1 else 0
    gaps = rng.multinomial(n_good - min_gap * (n_ep - 1), np.full(n_ep + 1, 1.0 / (n_ep + 1)))
    gaps[1:-1] += min_gap
    faults = rng.integers(1, len(FAULTS), n_ep)
    episodes, lumi = [], 1
    for i, length in enumerate(lengths):
        lumi += int(gaps[i])
        episodes.append(_draw_episode(FAULTS[faults[i]], lumi, lumi + length - 1, config, rng))
        lumi += length
    return episodes


# --------------------------------------------------------------------------- accumulation


def _binned(pool: CollisionPool, config: DQMConfig) -> dict[str, np.ndarray]:
    """The pool's entries in units of the histograms' bins (cached per binning).

    Calorimeter deposits appear twice, as recorded and mirrored (η → -η), so that a
    mirrored collision is a shifted slice. ``calo_row`` is the η row times 2 n_phi (row
    ``n_eta`` for deposits outside the acceptance), ``hit_row`` the layer times 2 n_phi;
    ``*_phi`` the azimuth in bins, in [0, n_phi). A rotation by ``s`` bins (0 <= s <
    n_phi) puts an entry into column ``floor(phi + s)`` of a row 2 n_phi wide, and
    folding the two halves of the row gives the φ bin.
    """
    key = (config.n_eta, config.eta_max, config.n_phi, config.n_layers)
    cache = pool._binned_cache
    if key in cache:
        return cache[key]
    n_eta, n_phi, width = config.n_eta, config.n_phi, 2 * config.n_phi

    def phi_bins(phi: np.ndarray) -> np.ndarray:
        u = np.mod((phi + np.pi) * (n_phi / (2.0 * np.pi)), n_phi)
        return np.where(u >= n_phi, 0.0, u)

    rows = []
    for eta in (pool.calo_eta, -pool.calo_eta):
        ieta = np.floor((eta + config.eta_max) * (n_eta / (2.0 * config.eta_max)))
        ieta = np.where(np.abs(eta) < config.eta_max, np.clip(ieta, 0, n_eta - 1), n_eta)
        rows.append(ieta.astype(np.int64) * width)
    calo_phi = phi_bins(pool.calo_phi)
    layer = pool.hit_layer
    if len(layer) and int(layer.max()) >= config.n_layers:
        raise ConfigError(
            f"the collision pool has hits on layer {int(layer.max())}, but the configuration's "
            f"tracker geometry has {config.n_layers} layers; build the pool with the same "
            "geometry"
        )
    out = {
        "calo_row": np.concatenate(rows),
        "calo_phi": np.concatenate([calo_phi, calo_phi]),
        "calo_et": np.concatenate([pool.calo_et, pool.calo_et]),
        "hit_row": layer * width,
        "hit_phi": phi_bins(pool.hit_phi),
    }
    cache.clear()
    cache[key] = out
    return out


def _gather(offsets: np.ndarray, starts: np.ndarray, idx: np.ndarray
            ) -> tuple[np.ndarray, np.ndarray]:
    """Flat entry indices of the drawn collisions ``idx``, reading from ``starts``.

    Returns:
        ``(counts, pos)``: entries of each drawn collision and the index of every entry
        (the collisions one after another).
    """
    counts = offsets[idx + 1] - offsets[idx]
    first = np.cumsum(counts) - counts
    return counts, np.arange(int(counts.sum())) + np.repeat(starts - first, counts)


def _fold(counts: np.ndarray, n_phi: int) -> np.ndarray:
    """Sum the two halves of rows 2 n_phi wide: (..., 2 n_phi) -> (..., n_phi)."""
    c = counts.reshape(*counts.shape[:-1], 2, n_phi)
    return c[..., 0, :] + c[..., 1, :]


def accumulate_lumisection(
    pool: CollisionPool,
    config: DQMConfig,
    n_events: int,
    pileup: float,
    rng: np.random.Generator,
    condition: DetectorCondition | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Fill one LS's histograms from ``n_events`` crossings of pool collisions.

    Each crossing holds Poisson(``pileup``) collisions drawn from ``pool`` with
    replacement, each rotated by a uniform angle in φ and mirrored in η with probability
    1/2. A calorimeter cell fires in a crossing when the transverse energy of the
    crossing's deposits in it, times the condition's gain, exceeds
    ``config.calo_threshold``. A tracker hit is read out with the layer's efficiency
    (times the condition's read-out probability), independently of the others, so the
    hits kept in a bin are binomial in the hits there; noise hits are Poisson per layer
    and crossing, uniform in φ. Vectorised over all collisions of the LS.

    The random numbers of the fault (lost hits of a desynchronised sector, hot cells,
    extra noise) are drawn after all others, so the same ``rng`` state gives identical
    counts outside the fault's channels with and without the fault.

    Args:
        pool: The collisions to draw from.
        config: Binning, threshold, tracker efficiency and noise.
        n_events: Crossings recorded.
        pileup: Mean collisions per crossing, μ.
        rng: Random numbers of this LS.
        condition: The detector's state (default: no fault).

    Returns:
        ``(calo_occupancy, tracker_occupancy)`` as int32 arrays of shape (n_eta, n_phi)
        and (n_layers, n_phi).
    """
    n_eta, n_phi, n_layers = config.n_eta, config.n_phi, config.n_layers
    cond = condition if condition is not None else DetectorCondition.good(config)
    n_events = int(n_events)
    if n_events < 0 or not math.isfinite(pileup) or pileup < 0:
        raise ConfigError(f"accumulate_lumisection: n_events = {n_events} and pileup = "
                          f"{pileup} must be >= 0")
    b = _binned(pool, config)
    width = 2 * n_phi
    row_size = (n_eta + 1) * width  # one crossing: n_eta rows and the overflow row

    per_crossing = rng.poisson(pileup, n_events)
    k = int(per_crossing.sum())
    crossing = np.repeat(np.arange(n_events), per_crossing)
    idx = rng.integers(0, pool.n_collisions, k)
    shift = rng.random(k) * n_phi  # rotation in units of bins
    mirror = rng.random(k) < 0.5

    # calorimeter: transverse energy summed per crossing and cell, then the threshold
    starts = pool.calo_offsets[idx] + np.where(mirror, pool.calo_offsets[-1], 0)
    counts, pos = _gather(pool.calo_offsets, starts, idx)
    col = np.minimum((b["calo_phi"][pos] + np.repeat(shift, counts)).astype(np.int64),
                     width - 1)
    key = b["calo_row"][pos] + col + np.repeat(crossing * row_size, counts)
    sums = np.bincount(key, weights=b["calo_et"][pos], minlength=n_events * row_size)
    sums = _fold(sums.reshape(n_events, n_eta + 1, width)[:, :n_eta], n_phi)
    fired = sums * cond.calo_gain > config.calo_threshold  # (n_events, n_eta, n_phi)
    fired[:, cond.calo_dead] = False

    # tracker: hits of the drawn collisions per bin, read-out efficiency, noise
    counts, pos = _gather(pool.hit_offsets, pool.hit_offsets[idx], idx)
    col = np.minimum((b["hit_phi"][pos] + np.repeat(shift, counts)).astype(np.int64),
                     width - 1)
    hits = _fold(np.bincount(b["hit_row"][pos] + col, minlength=n_layers * width)
                 .reshape(n_layers, width), n_phi)
    eff = 1.0 - config.geometry.column("inefficiency")
    kept = rng.binomial(hits, np.broadcast_to(eff[:, None], hits.shape))
    noise_mean = config.geometry.column("noise")
    n_noise = rng.poisson(noise_mean, (n_events, n_layers)).sum(axis=0)
    noise_key = np.repeat(np.arange(n_layers) * n_phi, n_noise)
    noise_key += rng.integers(0, n_phi, len(noise_key))
    noise = np.bincount(noise_key, minlength=n_layers * n_phi).reshape(n_layers, n_phi)

    # the fault's own random numbers, last
    late = cond.tracker_keep < 1.0
    if late.any():  # collision hits outside the read-out window (noise hits stay)
        kept[late] = rng.binomial(kept[late], cond.tracker_keep[late])
    tracker = kept + noise
    hot = cond.calo_hot > 0
    if hot.any():
        fired[:, hot] |= rng.random((n_events, int(hot.sum()))) < cond.calo_hot[hot]
    noisy = np.flatnonzero(cond.tracker_extra > 0)
    if len(noisy):
        normal = (pileup * pool.mean_hits_per_layer(n_layers) * eff + noise_mean)[noisy]
        n_extra = rng.poisson(cond.tracker_extra[noisy] * normal,
                              (n_events, len(noisy))).sum(axis=0)
        extra_key = np.repeat(noisy * n_phi, n_extra)
        extra_key += rng.integers(0, n_phi, len(extra_key))
        tracker += np.bincount(extra_key, minlength=n_layers * n_phi).reshape(n_layers, n_phi)

    return fired.sum(axis=0).astype(np.int32), tracker.astype(np.int32)


# --------------------------------------------------------------------------- runs


def _histogram_axes(config: DQMConfig) -> dict[str, Any]:
    phi = [float(x) for x in config.phi_edges]
    return {
        "calo_occupancy": {
            "axes": [{"name": "eta", "edges": [float(x) for x in config.eta_edges]},
                     {"name": "phi", "edges": phi}],
            "content": "crossings in which the cell's summed transverse energy exceeded "
                       f"{config.calo_threshold:g} GeV",
        },
        "tracker_occupancy": {
            "axes": [{"name": "layer", "edges": list(range(config.n_layers + 1))},
                     {"name": "phi", "edges": phi}],
            "content": "hits per barrel layer and phi bin",
        },
    }


def simulate_run(
    pool: CollisionPool,
    config: DQMConfig,
    *,
    episodes: Sequence[FaultEpisode] | None = None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Simulate the run's lumisections from a pool (no Pythia involved).

    Args:
        pool: The collisions (from :func:`make_pool`, or e.g. :func:`toy_pool`).
        config: The run: LS count, crossings, pile-up, binning, faults.
        episodes: The fault episodes; default: drawn with :func:`draw_episodes`.
            Episodes must not overlap and must lie within the run.
        progress: Show a progress bar over the lumisections.

    Returns:
        ``(branches, metadata)``: the branches of the ``lumis`` tree (module docstring)
        and a JSON-serialisable description (axes, fault names, episodes, configuration).
    """
    from tqdm.auto import tqdm

    n = config.n_lumis
    pileup = pileup_schedule(config)
    rng_run = np.random.default_rng([config.seed, 1])
    if config.poisson_crossings:
        n_events = rng_run.poisson(config.mean_crossings, n)
    else:
        n_events = np.full(n, int(round(config.mean_crossings)))
    drawn = draw_episodes(config, rng_run)
    episodes = list(drawn if episodes is None else episodes)
    episode_of = np.full(n + 1, -1)
    for i, ep in enumerate(episodes):
        if ep.last_lumi > n:
            raise ConfigError(f"fault episode LS {ep.first_lumi}..{ep.last_lumi} lies beyond "
                              f"the run's {n} LS")
        if np.any(episode_of[ep.first_lumi : ep.last_lumi + 1] >= 0):
            raise ConfigError(f"fault episode LS {ep.first_lumi}..{ep.last_lumi} overlaps "
                              "another episode")
        episode_of[ep.first_lumi : ep.last_lumi + 1] = i

    calo_shape, trk_shape = (config.n_eta, config.n_phi), (config.n_layers, config.n_phi)
    out = {
        "run": np.full(n, config.run, dtype=np.int32),
        "lumi": np.arange(1, n + 1, dtype=np.int32),
        "n_events": n_events.astype(np.int32),
        "pileup": pileup.astype(np.float32),
        "fault": np.zeros(n, dtype=np.int32),
        "calo_occupancy": np.zeros((n, *calo_shape), dtype=np.int32),
        "tracker_occupancy": np.zeros((n, *trk_shape), dtype=np.int32),
        "calo_occupancy_fault": np.zeros((n, *calo_shape), dtype=np.uint8),
        "tracker_occupancy_fault": np.zeros((n, *trk_shape), dtype=np.uint8),
    }
    good = DetectorCondition.good(config)
    t0 = time.perf_counter()
    for i in tqdm(range(n), desc="lumisections", unit="LS", disable=not progress):
        lumi = i + 1
        e = episode_of[lumi]
        cond = episodes[e].condition(lumi, config) if e >= 0 else good
        calo, trk = accumulate_lumisection(pool, config, int(n_events[i]), float(pileup[i]),
                                           np.random.default_rng([config.seed, 2, lumi]), cond)
        out["calo_occupancy"][i] = calo
        out["tracker_occupancy"][i] = trk
        out["fault"][i] = cond.fault
        out["calo_occupancy_fault"][i] = cond.calo_mask
        out["tracker_occupancy_fault"][i] = cond.tracker_mask
    elapsed = time.perf_counter() - t0
    counts = np.bincount(out["fault"], minlength=len(FAULTS))
    meta = {
        "generator": "hepml.simulation.dqm",
        "tree": "lumis",
        "run": config.run,
        "n_lumis": n,
        "histograms": _histogram_axes(config),
        "faults": list(FAULTS),
        "episodes": [ep.to_dict() for ep in episodes],
        "lumis_per_fault": {name: int(c) for name, c in zip(FAULTS, counts, strict=True)},
        "config": config.to_dict(),
        "pileup_model": "mu_i = pileup_start * (pileup_end / pileup_start) ** (i / (n_lumis "
                        "- 1)), i = lumi - 1",
        "units": {"energy": "GeV", "length": "mm", "field": "T"},
        "pool": pool.summary(config.n_layers),
        "lumi_seconds": elapsed,
        "mean_crossings_recorded": float(n_events.mean()),
    }
    return out, meta


def _generate(config: DQMConfig, pool: CollisionPool | None,
              progress: bool) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    pool_meta: dict[str, Any] = {}
    if pool is None:
        pool, pool_meta = make_pool(config, progress=progress)
    branches, meta = simulate_run(pool, config, progress=progress)
    meta.update({k: v for k, v in pool_meta.items() if k != "pool"})
    meta["pool_source"] = "pythia" if pool_meta else "given"
    log.info("%d lumisections (%s) from a pool of %d collisions", config.n_lumis,
             ", ".join(f"{v} {k}" for k, v in meta["lumis_per_fault"].items()),
             pool.n_collisions)
    return branches, meta


def generate_dqm_arrays(
    config: DQMConfig, *, pool: CollisionPool | None = None, progress: bool = True,
) -> dict[str, np.ndarray]:
    """Simulate a monitoring run in memory.

    Args:
        config: What to generate.
        pool: Collisions to use instead of generating ``config.pool_size`` with Pythia
            (e.g. :func:`toy_pool` for quick tests).
        progress: Show progress bars (pool collisions, lumisections).

    Returns:
        The branches of the ``lumis`` tree (module docstring), one entry per LS.

    Raises:
        GenerationError: Pythia refused a setting or failed to initialise.
    """
    return _generate(config, pool, progress)[0]


def generate_dqm(
    config: DQMConfig,
    out_path: str | os.PathLike,
    *,
    pool: CollisionPool | None = None,
    progress: bool = True,
    tree: str = "lumis",
) -> Path:
    """Simulate a monitoring run and write it as a TTree with its metadata.

    Args:
        config: What to generate.
        out_path: Output ROOT file, written atomically.
        pool: Collisions to use instead of generating them with Pythia.
        progress: Show progress bars.
        tree: Name of the TTree.

    Returns:
        The path written.
    """
    from hepml.io.atomic import check_writable
    from hepml.io.writing import write_tree

    check_writable(Path(out_path).parent)  # before generating
    branches, meta = _generate(config, pool, progress)
    return write_tree(out_path, branches, tree=tree, metadata=meta)
