"""Hits of charged particles in a barrel silicon tracker, from Pythia 8 events with pile-up.

Events
    Proton-proton collisions (default sqrt(s) = 13 TeV) from Pythia 8 with multiparton
    interactions and hadronisation on. ``process`` is ``"ttbar"`` (``Top:gg2ttbar``,
    ``Top:qqbar2ttbar``) or ``"minbias"`` (``SoftQCD:nonDiffractive``). Particles with
    cτ > 10 mm are stable (``ParticleDecays:limitTau0 = on``, ``tau0Max = 10``), the usual
    LHC definition of a final-state particle; shorter-lived ones decay inside Pythia and
    their daughters start at Pythia's decay vertex.
Pile-up
    Each hard event is overlaid with Poisson(``pileup``) minimum-bias interactions
    (``SoftQCD:nonDiffractive``) from a second Pythia instance of the same worker. Every
    interaction gets its own primary vertex, z ~ N(0, ``vertex_sigma_z`` = 50 mm) and
    x, y ~ N(0, ``vertex_sigma_xy`` = 0.015 mm); a particle starts at its interaction's
    vertex plus Pythia's production vertex ``vProd`` (mm).
Propagation
    Every final-state charged particle with pT > ``pt_min`` (0.1 GeV) and |η| < ``eta_max``
    (4) at production moves on a helix in a uniform solenoidal field B along +z
    (``b_field``, 2 T): transverse radius R[mm] = 1000 pT[GeV] / (0.3 |q| B[T]); a positive
    charge turns clockwise seen from +z; B = 0 gives straight lines. Energy loss is
    ignored: |p| stays constant, only multiple scattering changes the direction.
    The crossing with each cylindrical layer is the analytic intersection of the
    particle's transverse circle with the layer circle, the first one along the direction
    of motion; z advances by s pz/pT with s the transverse arc length. Layers are visited
    in order of radius. A particle stops for good when it does not reach the next layer
    (a looper: only its outgoing half-turn is simulated, and a particle that a scattering
    turns back inwards stops too), or when |z| at a crossing exceeds that layer's
    half-length (it leaves the barrel). A particle produced outside a layer skips it.
Multiple scattering
    At each crossing the direction is deflected by two independent Gaussian angles of width
    :func:`highland_theta0` in two orthogonal planes containing it, with the layer's
    x/X0 divided by |cos α| (α: angle between the direction and the radial layer normal),
    β from the particle's mass in the Pythia record; |p| is kept and the particle goes on
    on the new helix from the crossing point.
Hits
    The true crossing is smeared along the layer in rφ (and put back on the radius) and
    in z with the layer's resolution; each true hit is then lost with the layer's
    inefficiency (the particle still scatters there). Each layer also gets ``noise``
    random hits per event, uniform in φ and in z within its half-length. The truth
    momentum of a hit (``hit_tpx tpy tpz``) is the momentum arriving at the layer, before
    its scattering, as in TrackML.

The default detector (:meth:`TrackerGeometry.default`) is the barrel of the TrackML
detector: ten layers at radii 32, 72, 116, 172 mm (pixels, volume 8, half-length 491 mm,
σ(rφ) = 0.015 mm, σ(z) = 0.05 mm), 260, 360, 500, 660 mm (short strips, volume 13,
half-length 1082 mm, 0.025 mm, 0.35 mm) and 820, 1020 mm (long strips, volume 17,
half-length 1082 mm, 0.025 mm, 3.1 mm), layer_id 2, 4, 6, 8 within each volume, x/X0 =
0.015 (pixels) and 0.025 (strips) per layer, inefficiency 0.01 and 20 noise hits per layer.
``module_id`` is a TrackML-like φ–z segmentation, ``iphi * n_z + iz + 1`` with ``n_phi``
× ``n_z`` modules per layer, not TrackML's module map.

Output: one TTree ``hits``, one entry per event (every event, also one without a hit);
lengths in mm, momenta in GeV:

==========================================  ==========  ====================================
branch                                      type        meaning
==========================================  ==========  ====================================
``hit_id``                                  int64[]     1..n within the event
``hit_x hit_y hit_z``                       float32[]   measured (smeared) position
``hit_tx hit_ty hit_tz``                    float32[]   true crossing (noise: = measured)
``hit_volume_id hit_layer_id``              int32[]     TrackML volume and layer ids
``hit_module_id``                           int32[]     φ–z module index, from 1
``hit_layer``                               int32[]     barrel layer 0..9 by radius
``hit_particle_id``                         int64[]     the particle's id, 0 for noise
``hit_tpx hit_tpy hit_tpz``                 float32[]   true momentum at the layer (noise: 0)
``particle_id``                             int64[]     ``vertex * 100000 + record index``
``particle_q particle_pdgid``               int32[]     charge, PDG id
``particle_px particle_py particle_pz``      float32[]   momentum at production
``particle_pt particle_eta particle_phi``   float32[]
``particle_vx particle_vy particle_vz``     float32[]   production vertex
``particle_nhits``                          int32[]     hits written for it
``particle_vertex``                         int32[]     0: hard interaction, k: pile-up k
``vertex_x vertex_y vertex_z``              float32[]   primary vertex of each interaction
``n_pileup``                                int32       pile-up interactions in the event
``event_number``                            int64       event index in its worker
``worker``                                  int32       worker that made the event
``seed``                                    int64       the worker's Pythia seed
==========================================  ==========  ====================================

Hits of an event are sorted by layer and then by measured φ, so their order reveals no
truth. ``particle_id`` is unique within an event: the interaction index times 100000 plus
the particle's index in that interaction's Pythia record. The particles are the
propagated ones only (charged, above the pT and |η| cuts). The jagged collections share
one counter each in the file (``nhit``, ``nparticle``, ``nvertex``).

Generation runs in ``n_workers`` processes; worker ``i`` seeds its hard-process Pythia with
``seed * 1000 + i + 1``, its pile-up Pythia with 900 000 000 minus that, and the detector
simulation (vertices, pile-up counts, scattering, smearing, inefficiency, noise) with a
numpy generator seeded with the hard-process seed, so the output depends only on
``(config, n_events)``. The detector simulation draws its random numbers batch by batch,
so ``batch_size`` changes them (not the Pythia events): keep it fixed to reproduce a file.
Propagation is vectorised over all particles of a batch of events; the only Python loop
runs over the layers.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepml.errors import BadValueError, ConfigError, GenerationError, UnknownKeyError
from hepml.simulation._pythia import (
    MAX_SEED,
    GeneratorConfig,
    ParticleTable,
    WorkerRun,
    check_count,
    concat,
    flat_record,
    make_pythia,
    pt_eta_phi,
    run_metadata,
    run_workers,
    to_jagged,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SEED",
    "PROCESSES",
    "PARTICLE_ID_STRIDE",
    "Layer",
    "TrackerGeometry",
    "HitSimulationConfig",
    "TruthParticles",
    "PropagatedHits",
    "highland_theta0",
    "propagate",
    "noise_hits",
    "event_branches",
    "generate_hit_arrays",
    "generate_hits",
]

#: Processes that :class:`HitSimulationConfig` knows.
PROCESSES = ("ttbar", "minbias")

#: ``particle_id = interaction * PARTICLE_ID_STRIDE + index in the Pythia record``.
PARTICLE_ID_STRIDE = 100_000

#: Pythia settings that make particles with cτ > 10 mm stable.
STABLE_SETTINGS = ("ParticleDecays:limitTau0 = on", "ParticleDecays:tau0Max = 10")

_PROCESS_SETTINGS = {
    "ttbar": ("Top:gg2ttbar = on", "Top:qqbar2ttbar = on"),
    "minbias": ("SoftQCD:nonDiffractive = on",),
}

#: Pile-up events asked of Pythia at once (bounds the memory of one ``nextBatch``).
_PILEUP_CHUNK = 200

_PYTHIA_SEED_MAX = 900_000_000


# --------------------------------------------------------------------------- geometry


def _check_number(owner: str, name: str, value: Any, *, minimum: float,
                  strict: bool = False, maximum: float | None = None) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)):
        raise ConfigError(f"{owner}.{name} = {value!r} must be a finite number")
    if value < minimum or (strict and value == minimum):
        rel = ">" if strict else ">="
        raise ConfigError(f"{owner}.{name} = {value!r} must be {rel} {minimum}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{owner}.{name} = {value!r} must be <= {maximum}")


def _check_integer(owner: str, name: str, value: Any, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{owner}.{name} = {value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{owner}.{name} = {value!r} must be >= {minimum}")


@dataclass(frozen=True)
class Layer:
    """One cylindrical barrel layer centred on the beam line. Validated on construction.

    Attributes:
        radius: Radius in mm.
        half_length: The layer covers |z| <= half_length (mm).
        volume_id: TrackML volume id written with its hits.
        layer_id: TrackML layer id within the volume.
        sigma_rphi: Resolution along the layer in rφ (mm).
        sigma_z: Resolution in z (mm).
        x_over_x0: Thickness in radiation lengths at normal incidence.
        inefficiency: Probability that a true hit is lost (0 to 1).
        noise: Random hits per event on this layer.
        n_phi: Modules around φ.
        n_z: Modules along z.
    """

    radius: float
    half_length: float
    volume_id: int
    layer_id: int
    sigma_rphi: float
    sigma_z: float
    x_over_x0: float
    inefficiency: float = 0.01
    noise: int = 20
    n_phi: int = 1
    n_z: int = 1

    def __post_init__(self) -> None:
        owner = "Layer"
        _check_number(owner, "radius", self.radius, minimum=0.0, strict=True)
        _check_number(owner, "half_length", self.half_length, minimum=0.0, strict=True)
        for name in ("sigma_rphi", "sigma_z", "x_over_x0"):
            _check_number(owner, name, getattr(self, name), minimum=0.0)
        _check_number(owner, "inefficiency", self.inefficiency, minimum=0.0, maximum=1.0)
        for name in ("volume_id", "layer_id", "noise"):
            _check_integer(owner, name, getattr(self, name), minimum=0)
        for name in ("n_phi", "n_z"):
            _check_integer(owner, name, getattr(self, name), minimum=1)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], *, where: str = "layer") -> Layer:
        """Build a layer from a mapping of its field names; unknown keys are rejected."""
        if not isinstance(d, Mapping):
            raise ConfigError(f"{where} must be a mapping of layer fields, not {d!r}")
        names = [f.name for f in dataclasses.fields(cls)]
        for key in d:
            if key not in names:
                raise UnknownKeyError(str(key), names, where=where)
        try:
            return cls(**d)
        except TypeError as exc:  # a required field is missing
            raise ConfigError(f"{where}: {exc}; required fields: {', '.join(names[:7])}"
                              ) from None


@dataclass(frozen=True)
class TrackerGeometry:
    """Barrel layers ordered by increasing radius.

    Attributes:
        layers: The layers; ``hit_layer`` is the position of a layer in this tuple.
    """

    layers: tuple[Layer, ...]

    def __post_init__(self) -> None:
        layers = self.layers
        if isinstance(layers, (Layer, Mapping)) or not isinstance(layers, Sequence):
            raise ConfigError("TrackerGeometry.layers must be a list of layers")
        layers = tuple(lay if isinstance(lay, Layer) else Layer.from_dict(lay, where=f"layer {i}")
                       for i, lay in enumerate(layers))
        object.__setattr__(self, "layers", layers)
        if not layers:
            raise ConfigError("TrackerGeometry needs at least one layer")
        radii = [lay.radius for lay in layers]
        if any(b <= a for a, b in zip(radii, radii[1:], strict=False)):
            raise ConfigError(
                f"TrackerGeometry.layers must have strictly increasing radii; got {radii} mm. "
                "List the layers from the innermost outwards"
            )

    @classmethod
    def default(cls, *, inefficiency: float = 0.01, noise_per_layer: int = 20) -> TrackerGeometry:
        """The TrackML barrel (see the module docstring) with the given inefficiency and noise."""
        pixel = {"volume_id": 8, "half_length": 491.0, "sigma_rphi": 0.015, "sigma_z": 0.05,
                 "x_over_x0": 0.015, "n_z": 14}
        short = {"volume_id": 13, "half_length": 1082.0, "sigma_rphi": 0.025, "sigma_z": 0.35,
                 "x_over_x0": 0.025, "n_z": 21}
        long = {"volume_id": 17, "half_length": 1082.0, "sigma_rphi": 0.025, "sigma_z": 3.1,
                "x_over_x0": 0.025, "n_z": 12}
        table = [
            (32.0, 16, pixel), (72.0, 32, pixel), (116.0, 52, pixel), (172.0, 78, pixel),
            (260.0, 40, short), (360.0, 56, short), (500.0, 78, short), (660.0, 102, short),
            (820.0, 64, long), (1020.0, 80, long),
        ]
        layers = []
        for i, (radius, n_phi, kind) in enumerate(table):
            layers.append(Layer(radius=radius, layer_id=2 * (i % 4 + 1), n_phi=n_phi,
                                inefficiency=inefficiency, noise=noise_per_layer, **kind))
        return cls(tuple(layers))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | Sequence[Any]) -> TrackerGeometry:
        """Build from ``{"layers": [{...}, ...]}`` or a plain list of layer mappings."""
        if isinstance(d, Mapping):
            extra = set(d) - {"layers"}
            if extra:
                raise UnknownKeyError(sorted(extra)[0], ["layers"], where="tracker geometry")
            if "layers" not in d:
                raise ConfigError("tracker geometry: missing key 'layers' (a list of layers)")
            d = d["layers"]
        return cls(tuple(d))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> TrackerGeometry:
        """Read a geometry written by :meth:`to_dict` (or by hand) from a JSON file."""
        import json

        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise ConfigError(f"cannot read the tracker geometry file {path}: {exc}") from None
        try:
            d = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{path} is not valid JSON: {exc}") from None
        try:
            return cls.from_dict(d)
        except ConfigError as exc:
            raise exc.with_context(str(path)) from None

    def to_dict(self) -> dict[str, Any]:
        """The geometry as plain JSON-serialisable values."""
        return {"layers": [dataclasses.asdict(lay) for lay in self.layers]}

    def with_layers(self, **changes: Any) -> TrackerGeometry:
        """A copy with the same changes (e.g. ``noise=0``) made to every layer."""
        return TrackerGeometry(tuple(dataclasses.replace(lay, **changes) for lay in self.layers))

    def column(self, name: str, dtype: Any = np.float64) -> np.ndarray:
        """One field of every layer as an array, e.g. ``column("radius")``."""
        return np.array([getattr(lay, name) for lay in self.layers], dtype=dtype)

    def __len__(self) -> int:
        return len(self.layers)


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class HitSimulationConfig(GeneratorConfig):
    """How to generate tracker hits. Validated on construction.

    Attributes:
        process: ``"ttbar"`` or ``"minbias"`` (the hard interaction).
        sqrt_s: Proton-proton centre-of-mass energy in GeV.
        pileup: Mean number μ of minimum-bias interactions added to each event (Poisson).
        b_field: Solenoid field along +z in tesla (0: straight tracks).
        pt_min: Charged particles need pT above this (GeV) to be propagated.
        eta_max: ... and |pseudorapidity| below this.
        geometry: The barrel layers (a :class:`TrackerGeometry` or its ``to_dict`` form).
        multiple_scattering: Deflect particles in the layers' material.
        smearing: Smear the hit positions with the layers' resolution.
        vertex_sigma_z: Width of the primary-vertex z distribution (mm).
        vertex_sigma_xy: Width of the primary-vertex x and y distributions (mm).
        mpi, isr, fsr: Multiparton interactions, initial- and final-state showers.
        tune: Pythia ``Tune:pp`` number; 14 (Monash 2013) is Pythia's default.
        extra_settings: Raw Pythia settings applied last, to the hard and the pile-up
            instance alike.
        seed: Master seed, 0 to 899998 (see the module docstring).
        n_workers: Number of processes generating in parallel (1 runs in this process).
        batch_size: Hard events per ``Pythia.nextBatch`` call and per vectorised
            propagation. The Pythia events do not depend on it, the detector simulation's
            random numbers (vertices, pile-up counts, scattering, smearing, noise) do.
    """

    process: str = "ttbar"
    sqrt_s: float = 13000.0
    pileup: float = 0.0
    b_field: float = 2.0
    pt_min: float = 0.1
    eta_max: float = 4.0
    geometry: TrackerGeometry = field(default_factory=TrackerGeometry.default)
    multiple_scattering: bool = True
    smearing: bool = True
    vertex_sigma_z: float = 50.0
    vertex_sigma_xy: float = 0.015
    mpi: bool = True
    isr: bool = True
    fsr: bool = True
    tune: int = 14
    extra_settings: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 1
    n_workers: int = 1
    batch_size: int = 20

    def __post_init__(self) -> None:
        self._check_process(PROCESSES)
        self._normalise_settings()
        if not isinstance(self.geometry, TrackerGeometry):
            if not isinstance(self.geometry, (Mapping, Sequence)) or isinstance(self.geometry, str):
                raise ConfigError(
                    f"HitSimulationConfig.geometry = {self.geometry!r} must be a "
                    "TrackerGeometry or a mapping {'layers': [...]}"
                )
            object.__setattr__(self, "geometry", TrackerGeometry.from_dict(self.geometry))
        self._check_number("pileup", self.pileup, minimum=-math.inf)
        if self.pileup < 0:
            raise ConfigError(
                f"HitSimulationConfig.pileup = {self.pileup!r} must be >= 0: it is the mean "
                "number of pile-up interactions per event (0 for none)"
            )
        self._check_number("b_field", self.b_field, minimum=-math.inf)
        if self.b_field < 0:
            raise ConfigError(
                f"HitSimulationConfig.b_field = {self.b_field!r} must be >= 0: the field "
                "points along +z; give its magnitude in tesla (0 for straight tracks)"
            )
        self._check_number("pt_min", self.pt_min, minimum=0.0)
        self._check_positive("eta_max", self.eta_max)
        self._check_number("vertex_sigma_z", self.vertex_sigma_z, minimum=0.0)
        self._check_number("vertex_sigma_xy", self.vertex_sigma_xy, minimum=0.0)
        for name in ("multiple_scattering", "smearing"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(
                    f"HitSimulationConfig.{name} = {getattr(self, name)!r} must be true or false"
                )
        self._check_run()

    def pythia_settings(self, worker_seed: int) -> list[str]:
        """Return every Pythia setting string used by a worker with Pythia seed ``worker_seed``."""
        return self._settings([*_PROCESS_SETTINGS[self.process], *STABLE_SETTINGS], worker_seed)

    def pileup_config(self) -> HitSimulationConfig:
        """The configuration of the pile-up Pythia instance (minimum bias)."""
        return dataclasses.replace(self, process="minbias")

    def to_dict(self) -> dict[str, Any]:
        """Return the configuration as plain JSON-serialisable values."""
        d = super().to_dict()
        d["geometry"] = self.geometry.to_dict()
        return d


def pileup_seed(worker_seed: int) -> int:
    """The Pythia seed of a worker's pile-up instance: 900 000 000 minus its hard seed."""
    return _PYTHIA_SEED_MAX - worker_seed


# --------------------------------------------------------------------------- physics


def highland_theta0(
    p: Any, mass: Any, charge: Any, x_over_x0: Any
) -> np.ndarray:
    """Width of the projected multiple-scattering angle (PDG's Highland formula), radians.

    θ0 = 13.6 MeV / (β c p) · |z| · sqrt(x/X0) · [1 + 0.038 ln(x/X0 · z² / β²)]

    Args:
        p: Momentum in GeV.
        mass: Mass in GeV (gives β = p / E).
        charge: Charge in units of e.
        x_over_x0: Material traversed, in radiation lengths (already divided by the cosine
            of the incidence angle); 0 gives θ0 = 0.

    Returns:
        θ0 as an array (broadcast over the arguments).
    """
    p, mass, z, x = (np.asarray(a, dtype=np.float64) for a in (p, mass, charge, x_over_x0))
    beta = p / np.sqrt(p * p + mass * mass)
    z = np.abs(z)
    with np.errstate(divide="ignore", invalid="ignore"):
        theta = 0.0136 / (beta * p) * z * np.sqrt(x) * (1.0 + 0.038 * np.log(x * z * z / beta**2))
    return np.where((x > 0) & (z > 0), theta, 0.0)


@dataclass
class PropagatedHits:
    """Hits made by :func:`propagate`, ordered by layer and then by particle.

    Attributes:
        particle: Index of the particle in the input arrays (int64).
        layer: Index of the layer in the geometry (int32).
        x, y, z: Measured position (mm), smeared if smearing is on.
        tx, ty, tz: True crossing point (mm).
        tpx, tpy, tpz: True momentum arriving at the layer (GeV).
    """

    particle: np.ndarray
    layer: np.ndarray
    x: np.ndarray
    y: np.ndarray
    z: np.ndarray
    tx: np.ndarray
    ty: np.ndarray
    tz: np.ndarray
    tpx: np.ndarray
    tpy: np.ndarray
    tpz: np.ndarray

    def __len__(self) -> int:
        return len(self.particle)

    def select(self, keep: np.ndarray) -> PropagatedHits:
        """The hits selected by a mask or index array."""
        return PropagatedHits(**{f.name: getattr(self, f.name)[keep]
                                 for f in dataclasses.fields(self)})


def _as_arrays(**arrays: Any) -> dict[str, np.ndarray]:
    """Check that the inputs are 1-d, equally long and finite; return them as float64."""
    out = {k: np.asarray(v, dtype=np.float64) for k, v in arrays.items()}
    n = len(out["px"]) if out["px"].ndim == 1 else -1
    for name, a in out.items():
        if a.ndim != 1 or len(a) != n:
            shapes = ", ".join(f"{k} {v.shape}" for k, v in out.items())
            raise BadValueError(
                f"propagate: the particle arrays must be 1-d and equally long; got {shapes}"
            )
        bad = ~np.isfinite(a)
        if bad.any():
            raise BadValueError(
                f"propagate: {name} holds {int(bad.sum())} NaN or infinite value(s), the "
                f"first for particle {int(np.flatnonzero(bad)[0])}; remove or fix these "
                "particles before propagating"
            )
    if np.any(out["mass"] < 0):
        raise BadValueError(
            f"propagate: mass is negative for particle {int(np.flatnonzero(out['mass'] < 0)[0])}"
            "; masses are in GeV and >= 0"
        )
    if np.any(out["q"] != np.round(out["q"])):
        raise BadValueError("propagate: q must hold whole charges in units of e")
    return out


def _first_crossing(
    x: np.ndarray, y: np.ndarray, ux: np.ndarray, uy: np.ndarray, radius_mm: np.ndarray,
    h: np.ndarray, r_layer: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Turning angle φ and transverse arc length s to the first crossing of a layer.

    The particle starts at (x, y), strictly inside the layer circle, moving along the unit
    vector (ux, uy) on a circle of radius ``radius_mm`` (inf: a straight line), turning
    counter-clockwise for h = +1 and clockwise for h = -1. With t = tan(φ/2), the point
    reached after turning φ lies on the layer circle when

        (2 B - k) t² + 2 A t - k = 0,  A = P·u, B = h P·n + R, k = (r_layer² - |P|²) / (2R),

    n = (-uy, ux) the left normal: two roots, the two intersections of the circles (none
    when the particle cannot reach the layer). The smaller turning angle in (0, 2π) is the
    first crossing. A straight line has s² + 2 A s - (r_layer² - |P|²) = 0.

    Returns:
        ``(phi, s)``; NaN where the layer is not reached.
    """
    a = x * ux + y * uy
    d = r_layer * r_layer - (x * x + y * y)
    line = np.isinf(radius_mm)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        s_line = d / (a + np.sqrt(a * a + d))
        r = np.where(line, 1.0, radius_mm)
        k = d / (2.0 * r)
        a2 = 2.0 * (h * (x * -uy + y * ux) + r) - k
        disc = a * a + a2 * k
        root = np.sqrt(disc)
        t1 = k / (a + root)
        t2 = -(a + root) / a2
        phis = [2.0 * np.arctan(t) for t in (t1, t2)]
        phis = [np.where(ph > 0, ph, ph + 2.0 * np.pi) for ph in phis]
        phis = [np.where(np.isfinite(ph), ph, np.inf) for ph in phis]
        phi = np.minimum(phis[0], phis[1])
        phi = np.where((disc >= 0) & np.isfinite(phi), phi, np.nan)
        s = np.where(line, s_line, r * phi)
    return np.where(line, 0.0, phi), s


def propagate(
    px: Any, py: Any, pz: Any, q: Any, mass: Any, vx: Any, vy: Any, vz: Any,
    geometry: TrackerGeometry,
    rng: np.random.Generator,
    *,
    b_field: float = 2.0,
    multiple_scattering: bool = True,
    smearing: bool = True,
) -> PropagatedHits:
    """Propagate particles through the barrel layers and return their hits.

    Pure numpy, vectorised over the particles (the only loop is over the layers). The
    physics is described in the module docstring: helices in a field along +z, first
    crossing of each layer in order of radius, multiple scattering, smearing and
    inefficiency; energy loss is ignored. Neutral particles and particles with pT = 0
    make no hits. Noise hits are made separately by :func:`noise_hits`.

    Args:
        px: Momentum at production along x (GeV).
        py: ... along y.
        pz: ... along z.
        q: Charge in units of e.
        mass: Mass (GeV), for β in the multiple scattering.
        vx: Production vertex x (mm).
        vy: ... y.
        vz: ... z.
        geometry: The layers.
        rng: Random numbers for scattering, smearing and inefficiency.
        b_field: Field along +z (T); 0 gives straight lines.
        multiple_scattering: Deflect the particles in the layers.
        smearing: Smear the measured positions with the layers' resolution.

    Returns:
        The hits, ordered by layer and then by particle.

    Raises:
        BadValueError: An input holds NaN or infinite values, the arrays differ in length,
            a mass is negative or a charge is not whole.
        ConfigError: ``b_field`` is negative or not finite.
    """
    _check_number("propagate", "b_field", b_field, minimum=0.0)
    arr = _as_arrays(px=px, py=py, pz=pz, q=q, mass=mass, vx=vx, vy=vy, vz=vz)
    q_, mass_ = arr["q"], arr["mass"]
    x, y, z = arr["vx"].copy(), arr["vy"].copy(), arr["vz"].copy()
    px_, py_, pz_ = arr["px"].copy(), arr["py"].copy(), arr["pz"].copy()
    p = np.sqrt(px_ * px_ + py_ * py_ + pz_ * pz_)  # kept: no energy loss
    alive = (q_ != 0) & (np.hypot(px_, py_) > 0)
    h = -np.sign(q_)  # +q turns clockwise seen from +z
    pieces: list[dict[str, np.ndarray]] = []

    for ilayer, layer in enumerate(geometry.layers):
        rl = layer.radius
        idx = np.flatnonzero(alive & (x * x + y * y < rl * rl))
        if not len(idx):
            continue
        pt = np.hypot(px_[idx], py_[idx])
        ux, uy = px_[idx] / pt, py_[idx] / pt
        if b_field > 0:
            radius = 1000.0 * pt / (0.3 * np.abs(q_[idx]) * b_field)
        else:
            radius = np.full(len(idx), np.inf)
        phi, s = _first_crossing(x[idx], y[idx], ux, uy, radius, h[idx], rl)
        reached = np.isfinite(s)
        zc = z[idx] + s * pz_[idx] / pt
        inside = reached & (np.abs(zc) <= layer.half_length)
        alive[idx[~inside]] = False  # a looper or a particle leaving the barrel
        idx, phi, s, zc, ux, uy, pt = (a[inside] for a in (idx, phi, s, zc, ux, uy, pt))
        radius = np.where(np.isinf(radius[inside]), 0.0, radius[inside])
        hh = h[idx]
        sin_phi, one_minus_cos = np.sin(phi), 2.0 * np.sin(phi / 2.0) ** 2
        nx, ny = -uy, ux
        straight = radius == 0.0
        along = np.where(straight, s, radius * sin_phi)
        side = np.where(straight, 0.0, hh * radius * one_minus_cos)
        xc = x[idx] + along * ux + side * nx
        yc = y[idx] + along * uy + side * ny
        scale = rl / np.hypot(xc, yc)  # put the crossing exactly on the layer
        xc, yc = xc * scale, yc * scale
        cos_phi = 1.0 - one_minus_cos
        ux2 = cos_phi * ux + hh * sin_phi * nx
        uy2 = cos_phi * uy + hh * sin_phi * ny
        tpx, tpy, tpz = pt * ux2, pt * uy2, pz_[idx].copy()
        x[idx], y[idx], z[idx] = xc, yc, zc

        mx, my, mz = xc, yc, zc
        if smearing:
            dphi = rng.normal(0.0, layer.sigma_rphi, len(idx)) / rl
            ang = np.arctan2(yc, xc) + dphi
            mx, my = rl * np.cos(ang), rl * np.sin(ang)
            mz = zc + rng.normal(0.0, layer.sigma_z, len(idx))
        pieces.append({
            "particle": idx, "layer": np.full(len(idx), ilayer, dtype=np.int32),
            "x": mx, "y": my, "z": mz, "tx": xc, "ty": yc, "tz": zc,
            "tpx": tpx, "tpy": tpy, "tpz": tpz,
            "lost": rng.random(len(idx)) < layer.inefficiency if layer.inefficiency > 0
            else np.zeros(len(idx), dtype=bool),
        })

        px_[idx], py_[idx] = tpx, tpy
        if multiple_scattering and layer.x_over_x0 > 0:
            pi = p[idx]
            dx, dy, dz = tpx / pi, tpy / pi, tpz / pi
            cos_alpha = np.abs(dx * xc + dy * yc) / rl
            theta0 = highland_theta0(pi, mass_[idx], q_[idx], layer.x_over_x0 / cos_alpha)
            th1 = np.clip(rng.normal(0.0, 1.0, len(idx)) * theta0, -1.5, 1.5)
            th2 = np.clip(rng.normal(0.0, 1.0, len(idx)) * theta0, -1.5, 1.5)
            dt = np.hypot(dx, dy)
            e1x, e1y = -dy / dt, dx / dt  # z × d: transverse, perpendicular to d
            e2x, e2y, e2z = -dz * e1y, dz * e1x, dx * e1y - dy * e1x  # d × e1
            t1, t2 = np.tan(th1), np.tan(th2)
            nx3 = dx + t1 * e1x + t2 * e2x
            ny3 = dy + t1 * e1y + t2 * e2y
            nz3 = dz + t2 * e2z
            norm = pi / np.sqrt(nx3 * nx3 + ny3 * ny3 + nz3 * nz3)
            px_[idx], py_[idx], pz_[idx] = nx3 * norm, ny3 * norm, nz3 * norm
            # only the outgoing half-turn: a particle turned back inwards stops
            inward = (px_[idx] * xc + py_[idx] * yc <= 0) | (np.hypot(px_[idx], py_[idx]) == 0)
            alive[idx[inward]] = False

    if not pieces:
        empty = np.zeros(0)
        return PropagatedHits(np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int32),
                              *(empty,) * 9)
    cat = {k: np.concatenate([pc[k] for pc in pieces]) for k in pieces[0]}
    keep = ~cat.pop("lost")
    cat["particle"] = cat["particle"].astype(np.int64)
    return PropagatedHits(**cat).select(keep)


def noise_hits(
    geometry: TrackerGeometry, n_events: int, rng: np.random.Generator
) -> tuple[np.ndarray, PropagatedHits]:
    """Random hits on every layer: ``layer.noise`` per event, uniform in φ and in z.

    Returns:
        ``(event, hits)``: the event of each noise hit and the hits, whose ``particle`` is -1,
        true position equal to the measured one and true momentum 0.
    """
    counts = geometry.column("noise", np.int64)
    per_event = int(counts.sum())
    n = per_event * n_events
    layer = np.tile(np.repeat(np.arange(len(geometry), dtype=np.int32), counts), n_events)
    event = np.repeat(np.arange(n_events, dtype=np.int64), per_event)
    radius = geometry.column("radius")[layer]
    half = geometry.column("half_length")[layer]
    phi = rng.uniform(-np.pi, np.pi, n)
    z = rng.uniform(-1.0, 1.0, n) * half
    x, y = radius * np.cos(phi), radius * np.sin(phi)
    zero = np.zeros(n)
    return event, PropagatedHits(np.full(n, -1, dtype=np.int64), layer, x, y, z, x, y, z,
                                 zero, zero, zero)


# --------------------------------------------------------------------------- events


@dataclass
class TruthParticles:
    """Flat particle arrays of several events, ordered by event (input of :func:`event_branches`).

    Attributes:
        event: Event of each particle, 0 .. n_events-1, non-decreasing.
        vertex: Interaction of each particle (0: hard, k >= 1: pile-up k).
        index: Index of the particle in its interaction's Pythia record.
        pid: PDG id.
        charge: Charge in units of e.
        mass: Mass (GeV).
        px, py, pz: Momentum at production (GeV).
        vx, vy, vz: Production vertex (mm), interaction vertex included.
    """

    event: np.ndarray
    vertex: np.ndarray
    index: np.ndarray
    pid: np.ndarray
    charge: np.ndarray
    mass: np.ndarray
    px: np.ndarray
    py: np.ndarray
    pz: np.ndarray
    vx: np.ndarray
    vy: np.ndarray
    vz: np.ndarray

    def __len__(self) -> int:
        return len(self.event)

    def select(self, keep: np.ndarray) -> TruthParticles:
        """The particles selected by a mask or index array."""
        return TruthParticles(**{f.name: np.asarray(getattr(self, f.name))[keep]
                                 for f in dataclasses.fields(self)})


def _module_id(geometry: TrackerGeometry, layer: np.ndarray, x: np.ndarray, y: np.ndarray,
               z: np.ndarray) -> np.ndarray:
    n_phi = geometry.column("n_phi", np.int64)[layer]
    n_z = geometry.column("n_z", np.int64)[layer]
    half = geometry.column("half_length")[layer]
    frac_phi = (np.arctan2(y, x) + np.pi) / (2.0 * np.pi)
    iphi = np.clip((frac_phi * n_phi).astype(np.int64), 0, n_phi - 1)
    iz = np.clip(((z + half) / (2.0 * half) * n_z).astype(np.int64), 0, n_z - 1)
    return (iphi * n_z + iz + 1).astype(np.int32)


def event_branches(
    particles: TruthParticles,
    n_events: int,
    config: HitSimulationConfig,
    rng: np.random.Generator,
) -> dict[str, Any]:
    """Select, propagate and add noise for ``n_events`` events; return their branches.

    The charged particles with pT > ``config.pt_min`` and |η| < ``config.eta_max`` are
    propagated through ``config.geometry``; noise is added; each event's hits are sorted by
    layer and φ and numbered from 1.

    Args:
        particles: Final-state particles of the events (any charge, pT, η).
        n_events: Number of events; events without particles give empty entries.
        config: Field, cuts, geometry and switches.
        rng: Random numbers of the detector simulation.

    Returns:
        Branch name to array; jagged branches as ``(flat, counts)`` pairs
        (:func:`hepml.simulation._pythia.to_jagged` turns them into awkward arrays).
    """
    event = np.asarray(particles.event, dtype=np.int64)
    if len(event) and (np.any(np.diff(event) < 0) or event[0] < 0 or event[-1] >= n_events):
        raise BadValueError(
            f"event_branches: particle events must be sorted and within 0..{n_events - 1}"
        )
    pt, eta, phi = pt_eta_phi(np.asarray(particles.px, dtype=np.float64),
                              np.asarray(particles.py, dtype=np.float64),
                              np.asarray(particles.pz, dtype=np.float64))
    keep = (np.asarray(particles.charge) != 0) & (pt > config.pt_min) & (
        np.abs(eta) < config.eta_max)
    sel = particles.select(keep)
    pt, eta, phi = pt[keep], eta[keep], phi[keep]
    if len(sel) and int(np.max(sel.index)) >= PARTICLE_ID_STRIDE:
        raise GenerationError(
            f"a Pythia record has more than {PARTICLE_ID_STRIDE} entries: particle_id "
            "(vertex * 100000 + index) would not be unique; use fewer or smaller events"
        )
    geometry = config.geometry
    hits = propagate(sel.px, sel.py, sel.pz, sel.charge, sel.mass, sel.vx, sel.vy, sel.vz,
                     geometry, rng, b_field=config.b_field,
                     multiple_scattering=config.multiple_scattering, smearing=config.smearing)
    pid_of = (np.asarray(sel.vertex, dtype=np.int64) * PARTICLE_ID_STRIDE
              + np.asarray(sel.index, dtype=np.int64))
    noise_event, noise = noise_hits(geometry, n_events, rng)

    hit_event = np.concatenate([sel.event[hits.particle].astype(np.int64), noise_event])
    cols = {f.name: np.concatenate([getattr(hits, f.name), getattr(noise, f.name)])
            for f in dataclasses.fields(PropagatedHits)}
    particle_id = np.concatenate([pid_of[hits.particle], np.zeros(len(noise), np.int64)])
    layer = cols["layer"].astype(np.int64)
    hit_phi = np.arctan2(cols["y"], cols["x"])
    order = np.lexsort((hit_phi, layer, hit_event))
    hit_event, particle_id, layer = hit_event[order], particle_id[order], layer[order]
    cols = {k: v[order] for k, v in cols.items()}
    hit_counts = np.bincount(hit_event, minlength=n_events)
    starts = np.concatenate([[0], np.cumsum(hit_counts)[:-1]])
    hit_id = np.arange(len(hit_event), dtype=np.int64) - starts[hit_event] + 1

    f32 = np.float32
    out: dict[str, Any] = {
        "hit_id": hit_id,
        "hit_x": cols["x"].astype(f32), "hit_y": cols["y"].astype(f32),
        "hit_z": cols["z"].astype(f32),
        "hit_tx": cols["tx"].astype(f32), "hit_ty": cols["ty"].astype(f32),
        "hit_tz": cols["tz"].astype(f32),
        "hit_volume_id": geometry.column("volume_id", np.int32)[layer],
        "hit_layer_id": geometry.column("layer_id", np.int32)[layer],
        "hit_module_id": _module_id(geometry, layer, cols["x"], cols["y"], cols["z"]),
        "hit_layer": layer.astype(np.int32),
        "hit_particle_id": particle_id,
        "hit_tpx": cols["tpx"].astype(f32), "hit_tpy": cols["tpy"].astype(f32),
        "hit_tpz": cols["tpz"].astype(f32),
    }
    out = {k: (v, hit_counts) for k, v in out.items()}

    part_counts = np.bincount(sel.event.astype(np.int64), minlength=n_events)
    nhits = np.bincount(hits.particle, minlength=len(sel)).astype(np.int32)
    part = {
        "particle_id": pid_of,
        "particle_q": np.asarray(sel.charge).astype(np.int32),
        "particle_pdgid": np.asarray(sel.pid).astype(np.int32),
        "particle_px": sel.px.astype(f32), "particle_py": sel.py.astype(f32),
        "particle_pz": sel.pz.astype(f32),
        "particle_pt": pt.astype(f32), "particle_eta": eta.astype(f32),
        "particle_phi": phi.astype(f32),
        "particle_vx": sel.vx.astype(f32), "particle_vy": sel.vy.astype(f32),
        "particle_vz": sel.vz.astype(f32),
        "particle_nhits": nhits,
        "particle_vertex": np.asarray(sel.vertex).astype(np.int32),
    }
    out |= {k: (v, part_counts) for k, v in part.items()}
    return out


# --------------------------------------------------------------------------- Pythia


def _final_charged(prt: ak.Array, table: ParticleTable) -> dict[str, np.ndarray]:
    """Final-state charged particles of a batch of Pythia records, as flat arrays."""
    rec = flat_record(prt, table)
    keep = np.flatnonzero(rec.final & (rec.charge != 0))
    flat = ak.flatten(prt[["m", "vProd"]])
    vprod = flat.vProd
    vertex = [ak.to_numpy(ak.fill_none(vprod[c], 0.0))[keep] for c in ("px", "py", "pz")]
    return {
        "event": rec.event_of[keep].astype(np.int64),
        "index": (keep - rec.offsets[rec.event_of[keep]]).astype(np.int64),
        "pid": rec.pid[keep],
        "charge": np.rint(rec.charge[keep]).astype(np.int32),
        "mass": ak.to_numpy(flat.m)[keep],
        "px": rec.px[keep], "py": rec.py[keep], "pz": rec.pz[keep],
        "vx": vertex[0], "vy": vertex[1], "vz": vertex[2],
    }


def _pileup_particles(
    pythia: Any, table: ParticleTable, n: int, seed: int
) -> dict[str, np.ndarray]:
    """``n`` minimum-bias events' charged particles; ``event`` numbers them 0..n-1."""
    pieces, n_have = [], 0
    while n_have < n:
        n_ask = min(_PILEUP_CHUNK, n - n_have)
        batch = pythia.nextBatch(n_ask)
        if len(batch) == 0:
            raise GenerationError(
                f"Pythia produced no pile-up events in a batch of {n_ask} (seed {seed}); "
                "check the settings"
            )
        part = _final_charged(batch["prt"], table)
        part["event"] = part["event"] + n_have
        pieces.append(part)
        n_have += len(batch)
    if not pieces:
        return {}
    out = {k: np.concatenate([pc[k] for pc in pieces]) for k in pieces[0]}
    if n_have > n:  # never expected: keep exactly n events
        keep = out["event"] < n
        out = {k: v[keep] for k, v in out.items()}
    return out


def _overlay(
    hard: dict[str, np.ndarray], pileup: dict[str, np.ndarray], n_pileup: np.ndarray,
    config: HitSimulationConfig, rng: np.random.Generator,
) -> tuple[TruthParticles, dict[str, Any]]:
    """Put the hard and pile-up interactions of each event at their own primary vertices."""
    n_events = len(n_pileup)
    n_pu = int(n_pileup.sum())
    first_pu = np.concatenate([[0], np.cumsum(n_pileup)[:-1]]).astype(np.int64)
    # one row per interaction: hard ones first, then the pile-up ones in order
    row_event = np.concatenate([np.arange(n_events), np.repeat(np.arange(n_events), n_pileup)])
    row_k = np.concatenate([np.zeros(n_events, np.int64),
                            np.arange(n_pu) - np.repeat(first_pu, n_pileup) + 1])
    n_rows = len(row_event)
    pv = np.stack([rng.normal(0.0, config.vertex_sigma_xy, n_rows),
                   rng.normal(0.0, config.vertex_sigma_xy, n_rows),
                   rng.normal(0.0, config.vertex_sigma_z, n_rows)])

    parts = [hard] + ([pileup] if pileup else [])
    row = np.concatenate([hard["event"]] + ([pileup["event"] + n_events] if pileup else []))
    cat = {k: np.concatenate([p[k] for p in parts]) for k in hard if k != "event"}
    event, vertex = row_event[row], row_k[row]
    order = np.lexsort((cat["index"], vertex, event))
    truth = TruthParticles(
        event=event[order], vertex=vertex[order].astype(np.int32), index=cat["index"][order],
        pid=cat["pid"][order], charge=cat["charge"][order], mass=cat["mass"][order],
        px=cat["px"][order], py=cat["py"][order], pz=cat["pz"][order],
        vx=(cat["vx"] + pv[0][row])[order], vy=(cat["vy"] + pv[1][row])[order],
        vz=(cat["vz"] + pv[2][row])[order],
    )
    vorder = np.lexsort((row_k, row_event))
    v_counts = (n_pileup + 1).astype(np.int64)
    vertices = {f"vertex_{c}": (pv[i][vorder].astype(np.float32), v_counts)
                for i, c in enumerate("xyz")}
    return truth, vertices


def _run_worker(
    config: HitSimulationConfig,
    worker: int,
    n_target: int,
    report: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``n_target`` events with worker ``worker``'s seeds; return (branches, info)."""
    if n_target == 0:
        return {}, {"worker": worker, "n_events": 0}
    run = WorkerRun(config, worker, report)
    rng = np.random.default_rng(run.seed)
    pu_pythia = pu_table = None
    pu_seed = pileup_seed(run.seed)
    if config.pileup > 0:
        pu_pythia, _ = make_pythia(config.pileup_config(), pu_seed)
        pu_table = ParticleTable(pu_pythia.particleData)
    pieces: list[dict[str, Any]] = []
    n_have = 0
    while n_have < n_target:
        n_ask = min(config.batch_size, n_target - n_have)
        batch = run.pythia.nextBatch(n_ask)
        n_b = len(batch)
        if n_b == 0:
            raise GenerationError(
                f"Pythia produced no events in a batch of {n_ask} "
                f"(process {config.process!r}, seed {run.seed}); check the settings"
            )
        hard = _final_charged(batch["prt"], run.table)
        n_pileup = (rng.poisson(config.pileup, n_b) if config.pileup > 0
                    else np.zeros(n_b, dtype=np.int64))
        pileup = (_pileup_particles(pu_pythia, pu_table, int(n_pileup.sum()), pu_seed)
                  if n_pileup.sum() else {})
        truth, vertices = _overlay(hard, pileup, n_pileup, config, rng)
        out = event_branches(truth, n_b, config, rng)
        out |= vertices
        out["n_pileup"] = n_pileup.astype(np.int32)
        out["event_number"] = np.arange(n_have, n_have + n_b, dtype=np.int64)
        pieces.append(out)
        n_have += n_b
        run.report(n_b)
    branches = concat(pieces)
    branches["worker"] = np.full(n_have, worker, dtype=np.int32)
    branches["seed"] = np.full(n_have, run.seed, dtype=np.int64)
    summary = run.summary(n_events=n_have)
    summary["pileup_seed"] = pu_seed if pu_pythia is not None else None
    summary["n_pileup_events"] = int(branches["n_pileup"].sum())
    return branches, summary


def generate_hit_arrays(
    config: HitSimulationConfig,
    n_events: int,
    *,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``n_events`` events of tracker hits in memory.

    Args:
        config: What to generate.
        n_events: Number of events; worker ``i`` makes ``n_events // n_workers`` of them
            (plus one for the first ``n_events % n_workers`` workers), concatenated in
            worker order.
        progress: Show a tqdm progress bar counting events.

    With ``n_workers > 1`` the workers are started with the ``spawn`` method: a script
    that calls this must guard its top level with ``if __name__ == "__main__":``.

    Returns:
        ``(branches, metadata)``: branch name to array (collections as jagged awkward
        arrays) and a JSON-serialisable description of the run, geometry included.

    Raises:
        ConfigError: ``n_events`` is not a positive integer.
        GenerationError: Pythia refused a setting or failed to initialise.
    """
    n_events = check_count("n_events", n_events)
    results, elapsed = run_workers(_run_worker, config, n_events, unit="event",
                                   progress=progress)
    branches = to_jagged(concat([r[0] for r in results if r[0]]))
    summaries = [r[1] for r in results if r[0]]
    n_hits = ak.num(branches["hit_id"])
    n_true = ak.sum(branches["hit_particle_id"] != 0, axis=1)
    per_event = {
        "hits": float(ak.mean(n_hits)),
        "true_hits": float(ak.mean(n_true)),
        "particles": float(ak.mean(ak.num(branches["particle_id"]))),
        "pileup": float(np.mean(branches["n_pileup"])),
    }
    meta = {
        "generator": "hepml.simulation.tracker",
        "process": config.process,
        "n_events": n_events,
        "pileup": config.pileup,
        "b_field_tesla": config.b_field,
        "geometry": config.geometry.to_dict(),
        "config": config.to_dict(),
        "units": {"length": "mm", "momentum": "GeV", "field": "T"},
        "particle_id": f"vertex * {PARTICLE_ID_STRIDE} + index in the interaction's Pythia "
        "record; 0 for noise hits",
        "pileup_pythia_settings": config.pileup_config().pythia_settings(
            pileup_seed(summaries[0]["seed"])) if config.pileup > 0 else None,
        **run_metadata(summaries, elapsed),
        "mean_per_event": per_event,
    }
    log.info(
        "%d %s events (pile-up %g) in %.1f s; per event: %s",
        n_events, config.process, config.pileup, elapsed,
        ", ".join(f"{v:.1f} {k}" for k, v in per_event.items()),
    )
    return branches, meta


def generate_hits(
    config: HitSimulationConfig,
    out_path: str | os.PathLike,
    n_events: int,
    *,
    progress: bool = True,
    tree: str = "hits",
) -> Path:
    """Generate ``n_events`` events of tracker hits and write them as a TTree.

    Args:
        config: What to generate.
        out_path: Output ROOT file, written atomically.
        n_events: Number of events.
        progress: Show a progress bar counting events.
        tree: Name of the TTree (branches: module docstring).

    Returns:
        The path written.
    """
    from hepml.io.atomic import check_writable
    from hepml.io.writing import write_tree

    check_writable(Path(out_path).parent)  # before generating
    branches, meta = generate_hit_arrays(config, n_events, progress=progress)
    return write_tree(out_path, branches, tree=tree, metadata=meta)
