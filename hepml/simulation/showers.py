"""A fast reference simulation of calorimeter showers: GFlash-style energy spots.

Showers of electrons, positrons, photons and charged pions are simulated in the CaloGAN
calorimeter (:data:`hepml.io.calo.CALOGAN`) as clouds of *energy spots*: points carrying a
share of the shower's energy, drawn from parametrised longitudinal and radial profiles
and read out into the cells of the three layers. Everything is vectorised with numpy over
the showers and spots of a block; there is no Python loop over spots.

Geometry
    A 480 mm cube of alternating lead (2 mm) and liquid argon (4 mm), the beam along +z,
    the front face at z = 0 centred on x = y = 0. Three readout layers of depths 90, 347
    and 43 mm with 3 × 96 cells (160 mm in y × 5 mm in x), 12 × 12 (40 × 40 mm) and 12 × 6
    (40 mm in y × 80 mm in x); rows run along y, columns along x (:class:`CaloLayout`).
    The Pb/LAr layers are not resolved: the showers develop in the homogeneous effective
    medium below, with the sampling structure entering through the sampling fluctuations
    and, optionally, GFlash's sampling corrections (F_S, ê).

Material (:data:`PB_LAR`, computed by :func:`sampling_material`)
    PDG constants (Review of Particle Physics, "Atomic and nuclear properties of
    materials"): lead Z = 82, A = 207.2, ρ = 11.35 g/cm³, X0 = 6.37 g/cm², E_c = 7.43 MeV,
    λ_I = 199.6 g/cm², minimum dE/dx = 1.122 MeV cm²/g; liquid argon Z = 18, A = 39.95,
    ρ = 1.396 g/cm³, X0 = 19.55 g/cm², E_c = 32.84 MeV, λ_I = 119.7 g/cm², minimum
    dE/dx = 1.519 MeV cm²/g. Mass fractions of one 2 mm + 4 mm period: w_Pb = 0.803,
    w_LAr = 0.197; mean density 4.71 g/cm³. Mixture rules (as in Geant4's
    ``GFlashSamplingShowerParameterisation``): 1/X0 = Σ w_i / X0_i; the Molière radius
    from 1/R_M = (1/E_s) Σ w_i E_c,i / X0,i with E_s = 21.2 MeV (for a single element
    R_M = E_s X0 / E_c); the critical energy as the X0-weighted combination
    E_c = X0 Σ w_i E_c,i / X0,i (so that R_M = E_s X0 / E_c holds for the mixture too);
    1/λ_I = Σ w_i / λ_I,i; Z_eff = Σ w_i Z_i, A_eff = Σ w_i A_i; dE/dx = Σ w_i (dE/dx)_i.
    Results: X0 = 15.59 mm (the cube is 30.8 X0 deep), R_M = 35.5 mm, E_c = 9.32 MeV,
    λ_I = 374 mm (1.28 λ_I deep), Z_eff = 69.4, dE/dx = 0.566 MeV/mm (272 MeV for a
    minimum-ionising particle crossing the cube). Sampling frequency
    F_S = X0 / (d_Pb + d_LAr) = 2.60 and ê = 1 / (1 + 0.007 (Z_Pb − Z_LAr)) = 0.691
    (Grindhammer & Peters). The sampling fraction for a minimum-ionising particle is
    f_mip = 0.250 (the LAr share of the dE/dx per period); it is only reported: cells
    hold energy at the electromagnetic scale (visible energy divided by the electron
    sampling fraction), so a contained electron shower sums to its energy on average.

Electromagnetic showers (G. Grindhammer and S. Peters, hep-ex/0001020, homogeneous-medium
version by default, sampling-calorimeter version optional; coefficients as in Geant4's
``GVFlashHomoShowerTuning`` and ``GFlashSamplingShowerTuning``)
    With y = E / E_c and Z = Z_eff, per shower:

    * homogeneous means T_hom = ln y − 0.812, α_hom = 0.81 + (0.458 + 2.26 / Z) ln y;
      sampling means T = T_hom − 0.55 / F_S − 0.69 (1 − ê), α = α_hom − 0.476 / F_S
      (each floored at e^0.1 as in Geant4); ⟨ln T⟩ = ln T, ⟨ln α⟩ = ln α;
    * σ(ln T) = 1 / (−2.5 + 1.25 ln y), σ(ln α) = 1 / (−0.82 + 0.79 ln y) (both capped at
      0.5, also where the denominator is not positive), correlation
      ρ = 0.784 − 0.023 ln y;
    * correlated log-normal draw: ln T = ⟨ln T⟩ + σ_T (√((1+ρ)/2) z1 + √((1−ρ)/2) z2),
      ln α = ⟨ln α⟩ + σ_α (√((1+ρ)/2) z1 − √((1−ρ)/2) z2) with z1, z2 ~ N(0, 1);
      T ≥ 1 and α ≥ 1.1; β = (α − 1) / T;
    * longitudinal profile dE/dt = E Γ(t; α, β), t in X0 from the shower start;
    * N_spot = ceil((10.3 / a) (E/GeV)^0.959) spots (the sampling-calorimeter spot count
      of GFlash, a the stochastic term), all of equal energy before fluctuations, each at
      a depth drawn from the shower's own Γ(α, β). (GFlash draws the spot depths from a
      slightly different Γ and weights spots by the energy profile; here the spot
      density *is* the energy profile.)
    * radial profile, r in units of R_M, at τ = (t / T) ((α − 1) / α) (ᾱ / (ᾱ − 1)) with
      ᾱ = exp⟨ln α⟩: f(r) = p 2r R_C² / (r² + R_C²)² + (1 − p) 2r R_T² / (r² + R_T²)²,
      R_C = 0.0251 + 0.00319 ln E + (0.1162 − 0.000381 Z) τ − 0.0203 (1 − ê)
      + 0.0397 e^−τ / F_S;
      R_T = (0.659 − 0.00309 Z) (e^(−2.59 (τ − 0.645)) + e^(k4 (τ − 0.645)))
      − 0.14 (1 − ê) − 0.495 e^−τ / F_S, k4 = 0.3585 + 0.0412 ln E;
      p = p1 exp(q − e^q) + (1 − ê)(0.348 − 0.642 e^(−(τ−1)²) / F_S),
      q = (p2 − τ) / p3, p1 = 2.632 − 0.00094 Z, p2 = 0.401 + 0.00187 Z,
      p3 = 1.313 − 0.0686 ln E (E in GeV); p clipped to [0, 1], radii floored at 0.001.
      A spot picks the core with probability p, then r = R_M R √(u / (1 − u)) with u
      uniform (the inverse of the component's cumulative r² / (r² + R²)); azimuth
      uniform.
    * sampling fluctuations: each spot's energy e is replaced by a Gamma variate of mean
      e and variance a² e (GeV), as Geant4's ``ApplySampling``; summed over a shower this
      gives exactly σ/E = a / √(E/GeV) (default a = 0.10, ATLAS-LAr-like), no constant or
      noise term. Longitudinal and lateral leakage add to it in the readout.

    :func:`as_homogeneous` turns the sampling corrections off (F_S → ∞, ê = 1, and the
    homogeneous-medium σ and ρ coefficients), which gives GFlash's homogeneous-medium
    version. **This is the default** (``ShowerSimulationConfig.sampling_corrections =
    False``): the peak of the mean profile of electrons then lies about 5 % before the
    Rossi value ln(E/E_c) − 0.5; with the sampling version (``sampling_corrections=True``)
    it lies 0.43 X0, about 10 %, before it.

    e⁺ and e⁻ start at the entry point on the front face; a photon converts after a
    depth drawn from an exponential of mean 9/7 X0 (PDG pair-production mean free path)
    and the pair showers as an electron of the photon's energy.

Charged pions (a simple non-compensating hadron model; own choice of numbers)
    * First interaction after an exponential path of mean λ_I (374 mm). Up to it, or to
      the back face (z = 480 mm) if it comes later, or until the pion has lost all its
      energy, the pion is a minimum-ionising track on the axis depositing the mixture's
      dE/dx, one spot per 6 mm (one Pb/LAr period), with the same Gamma sampling
      fluctuations as the electromagnetic spots. A pion that does not interact before the
      back face punches through: a fraction exp(−480 mm / λ_I) = 0.277 at normal
      incidence. The energy at the interaction is E_h = E − dE/dx · path (rest mass
      neglected).
    * Electromagnetic fraction (Groom, PDG review "Calorimetry"):
      ⟨f_em⟩ = 1 − (E_h / E0)^(k − 1) with E0 = 1 GeV and k = 0.82 (0 below E0); per
      shower f_em is drawn from a Beta distribution of that mean and variance
      ⟨f_em⟩(1 − ⟨f_em⟩) / (1 + 8) (σ = 0.17 at ⟨f_em⟩ = 0.5; the width is a choice). The
      electromagnetic part showers as one GFlash electron shower of energy f_em E_h
      starting at the interaction point.
    * Non-electromagnetic part: visible energy (h/e)(1 − f_em) E_h at the
      electromagnetic scale with h/e = 0.65 (e/h ≈ 1.5, typical of non-compensating
      lead/LAr calorimeters), in spots of 25 MeV whose energies fluctuate as Gamma
      variates of variance 0.5² e (GeV) (a stochastic term of 50 %/√E on this part).
      Longitudinally a Γ profile in λ_I from the interaction point with its maximum at
      0.2 ln(E_h/GeV) + 0.7 λ_I and an exponential fall-off of slope
      λ_att = λ_I (E_h/GeV)^0.13 (the whole-shower figures quoted by Fabjan & Gianotti,
      Rev. Mod. Phys. 75 (2003) 1243, here applied from the interaction point):
      β_h = 1/λ_att, α_h = 1 + β_h t_max. Radially one component
      2r R_h² / (r² + R_h²)² with R_h = λ_I / √19 = 86 mm, so that 95 % lies within one
      λ_I (the usual rule of thumb for lateral containment of hadron showers).

Incidence
    Impact point uniform in a square of half-width ``position_spread_mm`` around x = y = 0
    on the front face; polar angle uniform in [0, ``angle_max_deg``], azimuth uniform; the
    shower axis follows the direction and spots are placed around it in the plane
    perpendicular to it.

Readout (:func:`deposit`)
    A spot goes to the layer containing its z and to the cell containing its (x, y);
    spots outside a layer's 480 × 480 mm face go to that layer's ``overflow``; spots with
    z ≥ 480 mm leak out of the back and are lost (at oblique incidence the rare spots
    placed in front of the front face, z < 0, are counted with them). Cells hold GeV.

Random numbers
    Showers are simulated in fixed blocks of :data:`BLOCK_SIZE` showers; block ``b`` uses
    ``numpy.random.default_rng(SeedSequence(seed, spawn_key=(b,)))``, i.e. the b-th child
    of ``SeedSequence(seed).spawn``. The output depends on the configuration and not on
    ``batch_size``, which only sets how many blocks are read out at once. Within a block
    the spots of all showers are drawn together, array by array.
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from hepml.errors import ConfigError, closest
from hepml.io.calo import CALOGAN, PARTICLES, CaloLayout, Showers

__all__ = [
    "BLOCK_SIZE",
    "KIND_EM",
    "KIND_HADRONIC",
    "KIND_TRACK",
    "LEAD",
    "LIQUID_ARGON",
    "PB_LAR",
    "Element",
    "Material",
    "ShowerSimulationConfig",
    "as_homogeneous",
    "shower_material",
    "Spots",
    "deposit",
    "em_longitudinal_parameters",
    "sampling_material",
    "simulate_showers",
    "simulate_spots",
]

#: Showers per random-number block (each block has its own generator).
BLOCK_SIZE = 16

#: Kinds of spots (:attr:`Spots.kind`).
KIND_EM, KIND_TRACK, KIND_HADRONIC = 0, 1, 2

#: E_s of the Molière radius, GeV.
SCALE_ENERGY_GEV = 0.0212

# GFlash homogeneous-medium coefficients (hep-ex/0001020; Geant4 GVFlashHomoShowerTuning).
_T1_HOM = -0.812
_A1_HOM, _A2_HOM, _A3_HOM = 0.81, 0.458, 2.26
_SIGT1_HOM, _SIGT2_HOM = -1.4, 1.26
_SIGA1_HOM, _SIGA2_HOM = -0.58, 0.86
_RHO1_HOM, _RHO2_HOM = 0.705, -0.023
# Sampling-calorimeter corrections (Geant4 GFlashSamplingShowerTuning).
_T1_SAM, _T2_SAM, _A1_SAM = -0.55, -0.69, -0.476
_SIGT1, _SIGT2 = -2.5, 1.25
_SIGA1, _SIGA2 = -0.82, 0.79
_RHO1, _RHO2 = 0.784, -0.023
_NSPOT1, _NSPOT2 = 10.3, 0.959
# Radial profile.
_RC1, _RC2, _RC3, _RC4 = 0.0251, 0.00319, 0.1162, -0.000381
_RT1, _RT2, _RT3, _RT4, _RT5, _RT6 = 0.659, -0.00309, 0.645, -2.59, 0.3585, 0.0412
_WC1, _WC2, _WC3, _WC4, _WC5, _WC6 = 2.632, -0.00094, 0.401, 0.00187, 1.313, -0.0686
_RC1_SAM, _RC2_SAM = -0.0203, 0.0397
_RT1_SAM, _RT2_SAM = -0.14, -0.495
_WC1_SAM, _WC2_SAM = 0.348, -0.642

#: Mean photon conversion depth in X0.
PHOTON_CONVERSION_X0 = 9.0 / 7.0

# Pion model.
GROOM_E0_GEV = 1.0
GROOM_K = 0.82
FEM_CONCENTRATION = 8.0
H_OVER_E = 0.65
HADRONIC_STOCHASTIC = 0.5
HADRONIC_SPOT_GEV = 0.025
TRACK_STEP_MM = 6.0

_PION_IDS = (211, -211)
_ELECTRON_IDS = (11, -11)
_PHOTON_ID = 22


# --------------------------------------------------------------------------- material


@dataclass(frozen=True)
class Element:
    """A pure material with its PDG constants.

    Attributes:
        name: Name.
        z: Atomic number.
        a: Atomic mass (g/mol).
        density: g/cm³.
        x0_gcm2: Radiation length, g/cm².
        critical_energy_mev: Critical energy (Rossi definition), MeV.
        lambda_int_gcm2: Nuclear interaction length, g/cm².
        dedx_min_mev_cm2_g: Minimum ionisation energy loss, MeV cm²/g.
    """

    name: str
    z: float
    a: float
    density: float
    x0_gcm2: float
    critical_energy_mev: float
    lambda_int_gcm2: float
    dedx_min_mev_cm2_g: float

    @property
    def moliere_radius_gcm2(self) -> float:
        """R_M = E_s X0 / E_c, g/cm²."""
        return SCALE_ENERGY_GEV * 1e3 * self.x0_gcm2 / self.critical_energy_mev


#: Lead (PDG).
LEAD = Element("Pb", 82, 207.2, 11.35, 6.37, 7.43, 199.6, 1.122)
#: Liquid argon (PDG).
LIQUID_ARGON = Element("LAr", 18, 39.95, 1.396, 19.55, 32.84, 119.7, 1.519)


@dataclass(frozen=True)
class Material:
    """The effective homogeneous medium of a sampling calorimeter.

    Attributes:
        name: Name.
        x0_mm: Radiation length, mm.
        moliere_radius_mm: Molière radius, mm.
        critical_energy_gev: Critical energy, GeV.
        lambda_int_mm: Nuclear interaction length, mm.
        z_eff: Mass-weighted atomic number.
        a_eff: Mass-weighted atomic mass.
        density: Mean density, g/cm³.
        dedx_gev_per_mm: Minimum-ionisation energy loss, GeV/mm.
        sampling_fraction: Share of a minimum-ionising particle's energy loss in the
            active layers.
        sampling_frequency: F_S = X0 / (absorber + active thickness).
        ehat: ê = 1 / (1 + 0.007 (Z_absorber − Z_active)).
        absorber_mm: Absorber thickness per period, mm.
        active_mm: Active thickness per period, mm.
    """

    name: str
    x0_mm: float
    moliere_radius_mm: float
    critical_energy_gev: float
    lambda_int_mm: float
    z_eff: float
    a_eff: float
    density: float
    dedx_gev_per_mm: float
    sampling_fraction: float
    sampling_frequency: float
    ehat: float
    absorber_mm: float
    active_mm: float

    @property
    def is_sampling(self) -> bool:
        """Whether GFlash's sampling-calorimeter corrections apply (finite F_S)."""
        return math.isfinite(self.sampling_frequency)

    def to_dict(self) -> dict[str, Any]:
        """The fields as JSON-serialisable values (an infinite F_S becomes None)."""
        return {k: (v if isinstance(v, str) else float(v) if math.isfinite(v) else None)
                for k, v in dataclasses.asdict(self).items()}


def sampling_material(absorber: Element, active: Element, absorber_mm: float,
                      active_mm: float, *, name: str | None = None) -> Material:
    """The effective medium of alternating ``absorber`` and ``active`` layers.

    Args:
        absorber: The passive material.
        active: The active material.
        absorber_mm: Absorber thickness per period, mm.
        active_mm: Active thickness per period, mm.
        name: Name of the mixture; default ``"<absorber>/<active>"``.

    Returns:
        The mixture's constants (mixing rules in the module docstring).
    """
    if absorber_mm <= 0 or active_mm <= 0:
        raise ConfigError("layer thicknesses must be > 0, got "
                          f"{absorber_mm!r} mm and {active_mm!r} mm")
    es_mev = SCALE_ENERGY_GEV * 1e3
    m1, m2 = absorber_mm * absorber.density, active_mm * active.density
    w1, w2 = m1 / (m1 + m2), m2 / (m1 + m2)
    density = (m1 + m2) / (absorber_mm + active_mm)
    x0 = 1.0 / (w1 / absorber.x0_gcm2 + w2 / active.x0_gcm2)  # g/cm²
    ec_over_x0 = (w1 * absorber.critical_energy_mev / absorber.x0_gcm2
                  + w2 * active.critical_energy_mev / active.x0_gcm2)
    rm = es_mev / ec_over_x0  # g/cm²
    ec = x0 * ec_over_x0  # MeV
    lam = 1.0 / (w1 / absorber.lambda_int_gcm2 + w2 / active.lambda_int_gcm2)
    dedx = w1 * absorber.dedx_min_mev_cm2_g + w2 * active.dedx_min_mev_cm2_g
    loss1 = m1 * absorber.dedx_min_mev_cm2_g
    loss2 = m2 * active.dedx_min_mev_cm2_g
    cm = 10.0 / density  # mm per (g/cm²)
    x0_mm = x0 * cm
    return Material(
        name=name or f"{absorber.name}/{active.name}",
        x0_mm=x0_mm,
        moliere_radius_mm=rm * cm,
        critical_energy_gev=ec * 1e-3,
        lambda_int_mm=lam * cm,
        z_eff=w1 * absorber.z + w2 * active.z,
        a_eff=w1 * absorber.a + w2 * active.a,
        density=density,
        dedx_gev_per_mm=dedx * density * 0.1 * 1e-3,
        sampling_fraction=loss2 / (loss1 + loss2),
        sampling_frequency=x0_mm / (absorber_mm + active_mm),
        ehat=1.0 / (1.0 + 0.007 * (absorber.z - active.z)),
        absorber_mm=absorber_mm,
        active_mm=active_mm,
    )


def as_homogeneous(material: Material) -> Material:
    """The same medium with GFlash's sampling corrections switched off.

    F_S → ∞ and ê = 1 make every sampling term of the longitudinal and radial
    parametrisation vanish, and the fluctuations of ln T and ln α take GFlash's
    homogeneous-medium coefficients (σ(ln T) = 1 / (−1.4 + 1.26 ln y),
    σ(ln α) = 1 / (−0.58 + 0.86 ln y), ρ = 0.705 − 0.023 ln y): GFlash's
    homogeneous-medium version. The spot count and the sampling fluctuations are unchanged.
    """
    return dataclasses.replace(material, name=f"{material.name} (homogeneous)",
                               sampling_frequency=math.inf, ehat=1.0)


#: CaloGAN's 2 mm lead / 4 mm liquid argon mixture.
PB_LAR = sampling_material(LEAD, LIQUID_ARGON, 2.0, 4.0, name="Pb(2mm)/LAr(4mm)")


# --------------------------------------------------------------------------- configuration


@dataclass(frozen=True)
class ShowerSimulationConfig:
    """What to simulate. Validated on construction.

    Attributes:
        n_showers: Number of showers.
        particles: Particle names from :data:`hepml.io.calo.PARTICLES` (not ``unknown``);
            each shower draws one of them uniformly.
        energy_min: Lower end of the uniform incident energy range, GeV.
        energy_max: Upper end, GeV (at most 1000).
        energy: A fixed incident energy in GeV; overrides the range.
        position_spread_mm: Half-width of the square of impact points around x = y = 0.
        angle_max_deg: Largest polar angle of incidence, degrees (uniform in [0, max]).
        stochastic_term: Sampling resolution a of σ/E = a / √(E/GeV), in [0.05, 1].
        seed: Master seed (a non-negative integer).
        sampling_corrections: Use GFlash's sampling-calorimeter version of the
            electromagnetic profiles (``PB_LAR``); by default the homogeneous-medium version
            in the effective Pb/LAr medium (``as_homogeneous(PB_LAR)``), whose shower
            maximum follows the textbook value ln(E/E_c) − 0.5 more closely.
        batch_size: Showers read out at once, rounded up to a multiple of
            :data:`BLOCK_SIZE` (memory only; the output does not depend on it).
    """

    n_showers: int = 1000
    particles: tuple[str, ...] = ("eplus",)
    energy_min: float = 1.0
    energy_max: float = 100.0
    energy: float | None = None
    position_spread_mm: float = 0.0
    angle_max_deg: float = 0.0
    stochastic_term: float = 0.10
    seed: int = 0
    sampling_corrections: bool = False
    batch_size: int = 256

    def __post_init__(self) -> None:
        owner = "ShowerSimulationConfig"
        _check_int(owner, "n_showers", self.n_showers, 1)
        _check_int(owner, "seed", self.seed, 0)
        _check_int(owner, "batch_size", self.batch_size, 1)
        particles = self.particles
        if isinstance(particles, str):
            particles = (particles,)
        if not isinstance(particles, (tuple, list)) or not particles:
            raise ConfigError(f"{owner}.particles = {self.particles!r} must be a non-empty "
                              "tuple of particle names")
        valid = [p for p in PARTICLES if p != "unknown"]
        for p in particles:
            if p not in valid:
                hits = closest(str(p), valid)
                hint = f" Did you mean {hits[0]!r}?" if hits else ""
                raise ConfigError(f"{owner}.particles: unknown particle {p!r}.{hint} "
                                  f"Valid: {', '.join(valid)}.")
        object.__setattr__(self, "particles", tuple(particles))
        _check_float(owner, "energy_min", self.energy_min, 0.0, 1000.0, strict=True)
        _check_float(owner, "energy_max", self.energy_max, 0.0, 1000.0, strict=True)
        if self.energy_min > self.energy_max:
            raise ConfigError(f"{owner}.energy_min = {self.energy_min!r} GeV is above "
                              f"energy_max = {self.energy_max!r} GeV")
        if self.energy is not None:
            _check_float(owner, "energy", self.energy, 0.0, 1000.0, strict=True)
        _check_float(owner, "position_spread_mm", self.position_spread_mm, 0.0, 1e4)
        _check_float(owner, "angle_max_deg", self.angle_max_deg, 0.0, 80.0)
        if not isinstance(self.sampling_corrections, bool):
            raise ConfigError(f"{owner}.sampling_corrections must be true or false, got "
                              f"{self.sampling_corrections!r}")
        if self.angle_max_deg >= 80.0:
            raise ConfigError(f"{owner}.angle_max_deg = {self.angle_max_deg!r} must be in "
                              "[0, 80) degrees")
        _check_float(owner, "stochastic_term", self.stochastic_term, 0.05, 1.0)

    def to_dict(self) -> dict[str, Any]:
        """The settings as JSON-serialisable values."""
        d = dataclasses.asdict(self)
        d["particles"] = list(self.particles)
        return d


def _check_int(owner: str, name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"{owner}.{name} = {value!r} must be an integer")
    if value < minimum:
        raise ConfigError(f"{owner}.{name} = {value!r} must be >= {minimum}")


def _check_float(owner: str, name: str, value: Any, lo: float, hi: float, *,
                 strict: bool = False) -> None:
    if (isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating))
            or not math.isfinite(value)):
        raise ConfigError(f"{owner}.{name} = {value!r} must be a finite number")
    if value < lo or (strict and value == lo) or value > hi:
        left = "(" if strict else "["
        raise ConfigError(f"{owner}.{name} = {value!r} must be in {left}{lo:g}, {hi:g}]")


# --------------------------------------------------------------------------- spots


@dataclass
class Spots:
    """Energy spots of a set of showers, before readout.

    Flat per-spot arrays (all of one length), then per-shower arrays.

    Attributes:
        shower: Index of the spot's shower (0 .. n_showers - 1).
        x_mm: x of the spot, mm.
        y_mm: y, mm.
        z_mm: z (depth from the front face), mm.
        energy_gev: Energy at the electromagnetic scale, GeV.
        t_x0: Path along the shower axis from the entry point on the front face to the
            spot's projection on the axis, in X0 of the material (for a photon it includes
            the conversion depth, for a pion the depth of the interaction).
        r_mm: Distance from the shower axis, mm.
        kind: :data:`KIND_EM`, :data:`KIND_TRACK` (a pion's ionisation before its
            interaction) or :data:`KIND_HADRONIC`.
        start_mm: Per shower: path along the axis from the entry point to the start of
            the shower (0 for e±, the conversion for γ, the first interaction for π±; inf
            for a pion that does not interact inside the calorimeter).
    """

    shower: np.ndarray
    x_mm: np.ndarray
    y_mm: np.ndarray
    z_mm: np.ndarray
    energy_gev: np.ndarray
    t_x0: np.ndarray
    r_mm: np.ndarray
    kind: np.ndarray
    start_mm: np.ndarray

    def __len__(self) -> int:
        return len(self.shower)

    @property
    def n_showers(self) -> int:
        """Number of showers."""
        return len(self.start_mm)

    def shower_energy(self) -> np.ndarray:
        """Sum of the spot energies per shower, GeV."""
        return np.bincount(self.shower, weights=self.energy_gev, minlength=self.n_showers)


def em_longitudinal_parameters(energy: np.ndarray, material: Material = PB_LAR
                               ) -> dict[str, np.ndarray]:
    """GFlash's distribution of the longitudinal parameters.

    The sampling-calorimeter version for a material with finite F_S, the homogeneous one
    otherwise (:func:`as_homogeneous`).

    Args:
        energy: Shower energies, GeV.
        material: The medium.

    Returns:
        Arrays ``mean_log_t``, ``mean_log_alpha``, ``sigma_log_t``, ``sigma_log_alpha``
        and ``rho`` (correlation of ln T and ln α), one value per energy.
    """
    energy = np.asarray(energy, dtype=np.float64)
    lny = np.log(energy / material.critical_energy_gev)
    inv_fs = 1.0 / material.sampling_frequency
    t_hom = np.maximum(lny + _T1_HOM, 0.1)
    a_hom = np.maximum(_A1_HOM + (_A2_HOM + _A3_HOM / material.z_eff) * lny, 0.1)
    floor = math.exp(0.1)
    t_sam = np.maximum(t_hom + _T1_SAM * inv_fs + _T2_SAM * (1.0 - material.ehat), floor)
    a_sam = np.maximum(a_hom + _A1_SAM * inv_fs, floor)

    def _sigma(c1: float, c2: float) -> np.ndarray:
        d = c1 + c2 * lny
        return np.where(d > 2.0, 1.0 / np.maximum(d, 2.0), 0.5)

    if material.is_sampling:
        sig_t, sig_a, rho = (_SIGT1, _SIGT2), (_SIGA1, _SIGA2), (_RHO1, _RHO2)
    else:
        sig_t, sig_a, rho = (_SIGT1_HOM, _SIGT2_HOM), (_SIGA1_HOM, _SIGA2_HOM), (_RHO1_HOM,
                                                                                _RHO2_HOM)
    return {
        "mean_log_t": np.log(t_sam),
        "mean_log_alpha": np.log(a_sam),
        "sigma_log_t": _sigma(*sig_t),
        "sigma_log_alpha": _sigma(*sig_a),
        "rho": np.clip(rho[0] + rho[1] * lny, -1.0, 1.0),
    }


def _group_offsets(counts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Index of the group of each element and its position within the group."""
    total = int(counts.sum())
    group = np.repeat(np.arange(len(counts)), counts)
    starts = np.cumsum(counts) - counts
    within = np.arange(total) - starts[group]
    return group, within


def _fluctuate(energy: np.ndarray, a: float, rng: np.random.Generator) -> np.ndarray:
    """Gamma variates of mean ``energy`` and variance a² · energy (GeV)."""
    a2 = a * a
    return rng.standard_gamma(energy / a2) * a2


def _em_spots(energy: np.ndarray, material: Material, a: float, rng: np.random.Generator
              ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """GFlash spots of electron showers of ``energy`` (GeV) starting at t = 0.

    Returns:
        (sub-shower index, depth t in X0 from the shower start, r in mm, energy in GeV)
        per spot.
    """
    m = len(energy)
    par = em_longitudinal_parameters(energy, material)
    z1, z2 = rng.standard_normal((2, m))
    c1 = np.sqrt((1.0 + par["rho"]) / 2.0)
    c2 = np.sqrt((1.0 - par["rho"]) / 2.0)
    t_max = np.maximum(1.0, np.exp(par["mean_log_t"] + par["sigma_log_t"] * (c1 * z1 + c2 * z2)))
    alpha = np.maximum(1.1, np.exp(par["mean_log_alpha"]
                                   + par["sigma_log_alpha"] * (c1 * z1 - c2 * z2)))
    beta = (alpha - 1.0) / t_max
    n_spot = np.ceil(_NSPOT1 / a * energy**_NSPOT2).astype(np.int64)
    idx = np.repeat(np.arange(m), n_spot)
    t = rng.standard_gamma(alpha[idx]) / beta[idx]

    # Radial profile at τ = t / <t>_shower * <α>/(<α> - 1), per spot.
    a_mean = np.exp(par["mean_log_alpha"])
    tau_scale = (alpha - 1.0) / alpha * a_mean / (a_mean - 1.0) / t_max
    tau = t * tau_scale[idx]
    ln_e = np.log(energy)
    zeff, inv_fs, one_m_ehat = material.z_eff, 1.0 / material.sampling_frequency, 1 - material.ehat
    exp_mtau = np.exp(-tau)
    r_core = ((_RC1 + _RC2 * ln_e)[idx] + (_RC3 + _RC4 * zeff) * tau
              + _RC1_SAM * one_m_ehat + _RC2_SAM * inv_fs * exp_mtau)
    k4 = (_RT5 + _RT6 * ln_e)[idx]
    dtau = tau - _RT3
    r_tail = ((_RT1 + _RT2 * zeff) * (np.exp(_RT4 * dtau) + np.exp(k4 * dtau))
              + _RT1_SAM * one_m_ehat + _RT2_SAM * inv_fs * exp_mtau)
    q = (_WC3 + _WC4 * zeff - tau) / (_WC5 + _WC6 * ln_e)[idx]
    p_core = ((_WC1 + _WC2 * zeff) * np.exp(q - np.exp(q))
              + one_m_ehat * (_WC1_SAM + _WC2_SAM * inv_fs * np.exp(-((tau - 1.0) ** 2))))
    u_pick, u_r = rng.random((2, len(idx)))
    radius = np.where(u_pick < np.clip(p_core, 0.0, 1.0), r_core, r_tail)
    r = material.moliere_radius_mm * np.maximum(radius, 1e-3) * np.sqrt(u_r / (1.0 - u_r))
    e = _fluctuate((energy / n_spot)[idx], a, rng)
    return idx, t, r, e


def simulate_spots(energy: np.ndarray, pdg: np.ndarray, rng: np.random.Generator, *,
                   material: Material = PB_LAR, direction: np.ndarray | None = None,
                   impact_mm: np.ndarray | None = None, stochastic_term: float = 0.10,
                   depth_mm: float | None = None) -> Spots:
    """The energy spots of each shower, before readout (physics in the module docstring).

    Args:
        energy: Incident energies, shape (N,), GeV.
        pdg: PDG ids, shape (N,): ±11, 22 or ±211.
        rng: Source of all random numbers; the draws happen in a fixed order, so the
            same generator state gives the same spots.
        material: The calorimeter medium.
        direction: Unit vectors of the incident directions, shape (N, 3); default +z.
        impact_mm: Impact points (x, y) on the front face, shape (N, 2), mm; default 0.
        stochastic_term: Sampling term a of σ/E = a / √(E/GeV) of the spots.
        depth_mm: Depth of the calorimeter along z (default: CaloGAN's 480 mm); a pion
            that has not interacted when it reaches it punches through.

    Returns:
        The spots; :attr:`Spots.t_x0` is measured along the axis from the entry point.
    """
    energy = np.asarray(energy, dtype=np.float64).reshape(-1)
    pdg = np.asarray(pdg).astype(np.int64).reshape(-1)
    n = len(energy)
    if len(pdg) != n:
        raise ConfigError(f"{len(pdg)} particle ids for {n} energies")
    if n and (not np.all(np.isfinite(energy)) or np.any(energy <= 0)):
        raise ConfigError("incident energies must be finite and > 0 GeV")
    known = np.isin(pdg, (*_ELECTRON_IDS, _PHOTON_ID, *_PION_IDS))
    if not np.all(known):
        raise ConfigError(f"no shower model for PDG id {int(pdg[~known][0])}; "
                          "use ±11, 22 or ±211")
    if not 0 < stochastic_term <= 1:
        raise ConfigError(f"stochastic_term = {stochastic_term!r} must be in (0, 1]")
    if direction is None:
        direction = np.tile([0.0, 0.0, 1.0], (n, 1))
    direction = np.asarray(direction, dtype=np.float64).reshape(n, 3)
    direction = direction / np.linalg.norm(direction, axis=1, keepdims=True)
    if np.any(direction[:, 2] <= 0.05):
        raise ConfigError("directions must point into the calorimeter (+z, below 87 degrees)")
    impact = (np.zeros((n, 2)) if impact_mm is None
              else np.asarray(impact_mm, dtype=np.float64).reshape(n, 2))
    depth = float(CALOGAN.layer_edges_mm[-1] if depth_mm is None else depth_mm)
    a = float(stochastic_term)
    x0 = material.x0_mm

    # Sub-showers and tracks, as (shower, path of the spot along the axis, r, energy, kind).
    start = np.zeros(n)
    is_gamma = pdg == _PHOTON_ID
    is_pion = np.isin(pdg, _PION_IDS)
    start[is_gamma] = rng.exponential(PHOTON_CONVERSION_X0 * x0, int(is_gamma.sum()))
    em_owner = [np.flatnonzero(~is_pion)]
    em_energy = [energy[~is_pion]]
    em_start = [start[~is_pion]]

    parts: list[tuple[np.ndarray, ...]] = []
    pions = np.flatnonzero(is_pion)
    had = None
    if len(pions):
        e_pi = energy[pions]
        cos_t = direction[pions, 2]
        s_int = rng.exponential(material.lambda_int_mm, len(pions))
        s_exit = depth / cos_t
        s_range = e_pi / material.dedx_gev_per_mm
        interacts = s_int < np.minimum(s_exit, s_range)
        s_stop = np.minimum(s_int, np.minimum(s_exit, s_range))
        start[pions] = np.where(interacts, s_int, np.inf)
        # Ionisation track up to the interaction (or the back face).
        n_step = np.ceil(s_stop / TRACK_STEP_MM).astype(np.int64)
        g, k = _group_offsets(n_step)
        lo = k * TRACK_STEP_MM
        hi = np.minimum(lo + TRACK_STEP_MM, s_stop[g])
        e_trk = _fluctuate(material.dedx_gev_per_mm * (hi - lo), a, rng)
        parts.append((pions[g], 0.5 * (lo + hi), np.zeros(len(g)), e_trk,
                      np.full(len(g), KIND_TRACK)))
        # The interaction: electromagnetic and hadronic parts.
        who = pions[interacts]
        s0 = s_int[interacts]
        e_h = e_pi[interacts] - material.dedx_gev_per_mm * s0
        mu = 1.0 - np.maximum(e_h / GROOM_E0_GEV, 1.0) ** (GROOM_K - 1.0)
        mu = np.clip(mu, 1e-4, 1.0 - 1e-4)
        f_em = rng.beta(mu * FEM_CONCENTRATION, (1.0 - mu) * FEM_CONCENTRATION)
        e_em = f_em * e_h
        em_owner.append(who)
        em_energy.append(e_em)
        em_start.append(s0)
        had = (who, s0, e_h, H_OVER_E * (1.0 - f_em) * e_h)

    owner = np.concatenate(em_owner)
    e_sub = np.concatenate(em_energy)
    s_sub = np.concatenate(em_start)
    keep = e_sub > 1e-9
    owner, e_sub, s_sub = owner[keep], e_sub[keep], s_sub[keep]
    if len(owner):
        sub, t, r, e = _em_spots(e_sub, material, a, rng)
        parts.append((owner[sub], s_sub[sub] + t * x0, r, e, np.full(len(sub), KIND_EM)))

    if had is not None and len(had[0]):
        who, s0, e_h, e_vis = had
        lam = material.lambda_int_mm
        ln_e = np.log(np.maximum(e_h, 1e-3))
        t_peak = np.maximum(0.2 * ln_e + 0.7, 0.0)  # in λ_I
        beta_h = np.exp(-0.13 * ln_e)  # 1 / λ_att in 1/λ_I
        alpha_h = 1.0 + beta_h * t_peak
        n_h = np.ceil(e_vis / HADRONIC_SPOT_GEV).astype(np.int64)
        g = np.repeat(np.arange(len(who)), n_h)
        depth_h = rng.standard_gamma(alpha_h[g]) / beta_h[g] * lam
        u_r = rng.random(len(g))
        r = lam / math.sqrt(19.0) * np.sqrt(u_r / (1.0 - u_r))
        e = _fluctuate((e_vis / np.maximum(n_h, 1))[g], HADRONIC_STOCHASTIC, rng)
        parts.append((who[g], s0[g] + depth_h, r, e, np.full(len(g), KIND_HADRONIC)))

    if parts:
        shower, s, r, e, kind = (np.concatenate(c) for c in zip(*parts, strict=True))
    else:
        shower, s, r, e, kind = (np.zeros(0, dtype=t_) for t_ in
                                 (np.int64, float, float, float, np.int64))
    shower = shower.astype(np.int64)
    psi = rng.random(len(shower), dtype=np.float32) * np.float32(2.0 * math.pi)

    # Place the spots around each shower's axis: position = impact + s d + r (cos ψ u +
    # sin ψ v) with u = (cos θ cos φ, cos θ sin φ, −sin θ) and v = (−sin φ, cos φ, 0).
    ru, rv = r * np.cos(psi), r * np.sin(psi)
    if np.any(direction[:, 2] < 1.0):
        sin_t = np.hypot(direction[:, 0], direction[:, 1])
        phi = np.arctan2(direction[:, 1], direction[:, 0])
        cos_t, cos_p, sin_p = direction[:, 2], np.cos(phi), np.sin(phi)
        x = (impact[:, 0][shower] + s * direction[:, 0][shower]
             + ru * (cos_t * cos_p)[shower] - rv * sin_p[shower])
        y = (impact[:, 1][shower] + s * direction[:, 1][shower]
             + ru * (cos_t * sin_p)[shower] + rv * cos_p[shower])
        z = s * cos_t[shower] - ru * sin_t[shower]
    else:  # normal incidence: u = x̂, v = ŷ
        x = impact[:, 0][shower] + ru
        y = impact[:, 1][shower] + rv
        z = s
    return Spots(shower=shower, x_mm=x, y_mm=y, z_mm=z, energy_gev=e, t_x0=s / x0, r_mm=r,
                 kind=kind.astype(np.int8), start_mm=start)


# --------------------------------------------------------------------------- readout


def deposit(spots: Spots, n_showers: int, *, layout: CaloLayout = CALOGAN
            ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Read the spots out into the layers' cells.

    Args:
        spots: The spots (:attr:`Spots.shower` in ``0 .. n_showers - 1``).
        n_showers: Number of showers.
        layout: The readout; layers are centred on x = y = 0, rows along y, columns
            along x, the first row and column at the most negative y and x.

    Returns:
        ``(layers, overflow, leakage)``: one array (N, rows, cols) per layer, the energy
        outside each layer's face (N, n_layers) and the energy leaving through the back
        (N,) (with the rare spots in front of the front face at oblique incidence), all
        in GeV (float64). Their sum per shower equals the sum of the spot energies.
    """
    n = int(n_showers)
    if len(spots) and (spots.shower.min() < 0 or spots.shower.max() >= n):
        raise ValueError(f"spot shower indices outside 0..{n - 1}")
    stride = sum(layout.n_cells) + layout.n_layers + 1
    flat = spots.shower.astype(np.int64) * stride + _readout_index(spots, layout)
    return _accumulate(flat, spots.energy_gev, n, layout)


def _readout_index(spots: Spots, layout: CaloLayout) -> np.ndarray:
    """Readout slot per spot: cell, overflow or leakage.

    The slot is the cell's index counted over all layers, ``n_cells + layer`` for the
    layer's overflow, or ``n_cells + n_layers`` for leakage.
    """
    n_layers = layout.n_layers
    offsets = np.concatenate([[0], np.cumsum(layout.n_cells)])
    total_cells = int(offsets[-1])
    rows = np.array([s[0] for s in layout.shapes])
    cols = np.array([s[1] for s in layout.shapes])
    inv_dy = 1.0 / np.array([c[0] for c in layout.cell_sizes_mm], dtype=np.float64)
    inv_dx = 1.0 / np.array([c[1] for c in layout.cell_sizes_mm], dtype=np.float64)

    layer = np.searchsorted(layout.layer_edges_mm, spots.z_mm, side="right") - 1
    inside = (layer >= 0) & (layer < n_layers)
    lay = np.clip(layer, 0, n_layers - 1)
    row = np.floor(spots.y_mm * inv_dy[lay] + rows[lay] / 2.0)
    col = np.floor(spots.x_mm * inv_dx[lay] + cols[lay] / 2.0)
    on_face = (row >= 0) & (row < rows[lay]) & (col >= 0) & (col < cols[lay])
    cell = offsets[lay] + np.where(on_face, row * cols[lay] + col, 0).astype(np.int64)
    return np.where(inside, np.where(on_face, cell, total_cells + lay), total_cells + n_layers)


def _accumulate(flat: np.ndarray, energy: np.ndarray, n: int, layout: CaloLayout
                ) -> tuple[tuple[np.ndarray, ...], np.ndarray, np.ndarray]:
    """Sum the spot energies at ``flat = shower * stride + readout index``."""
    n_layers = layout.n_layers
    offsets = np.concatenate([[0], np.cumsum(layout.n_cells)])
    total_cells = int(offsets[-1])
    stride = total_cells + n_layers + 1
    summed = np.bincount(flat, weights=energy, minlength=n * stride)
    summed = summed[: n * stride].reshape(n, stride)
    layers = tuple(summed[:, offsets[i]: offsets[i + 1]].reshape(n, *layout.shapes[i])
                   for i in range(n_layers))
    overflow = summed[:, total_cells: total_cells + n_layers].copy()
    return layers, overflow, summed[:, -1].copy()


# --------------------------------------------------------------------------- driver


def _block_rng(seed: int, block: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(block,)))


def _draw_block(config: ShowerSimulationConfig, m: int, rng: np.random.Generator
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Energy, PDG id, direction and impact point of ``m`` showers."""
    ids = np.array([PARTICLES[p] for p in config.particles])
    pdg = ids[rng.integers(len(ids), size=m)]
    if config.energy is not None:
        energy = np.full(m, float(config.energy))
    else:
        energy = rng.uniform(config.energy_min, config.energy_max, m)
    h = config.position_spread_mm
    impact = rng.uniform(-h, h, (m, 2)) if h > 0 else np.zeros((m, 2))
    if config.angle_max_deg > 0:
        theta = np.radians(rng.uniform(0.0, config.angle_max_deg, m))
        phi = rng.uniform(0.0, 2.0 * math.pi, m)
        direction = np.stack([np.sin(theta) * np.cos(phi), np.sin(theta) * np.sin(phi),
                              np.cos(theta)], axis=1)
    else:
        direction = np.tile([0.0, 0.0, 1.0], (m, 1))
    return energy, pdg, direction, impact


def shower_material(config: ShowerSimulationConfig) -> Material:
    """The medium ``config`` simulates in: Pb/LAr with or without the sampling corrections."""
    return PB_LAR if config.sampling_corrections else as_homogeneous(PB_LAR)


def simulate_showers(config: ShowerSimulationConfig, *, layout: CaloLayout = CALOGAN,
                     material: Material | None = None, progress: bool = False
                     ) -> tuple[Showers, dict]:
    """Simulate showers and read them out.

    Args:
        config: What to simulate.
        layout: The readout layers.
        material: The calorimeter medium (default: :func:`shower_material` of ``config``).
        progress: Show a tqdm progress bar counting showers.

    Returns:
        ``(showers, metadata)``: the showers in GeV with ``particle`` the PDG id, and a
        JSON-serialisable description (settings, material, parametrisations, leakage).
    """
    from tqdm.auto import tqdm

    import hepml

    material = shower_material(config) if material is None else material
    n = config.n_showers
    n_blocks = -(-n // BLOCK_SIZE)
    per_batch = max(1, -(-config.batch_size // BLOCK_SIZE))
    depth = float(layout.layer_edges_mm[-1])
    stride = sum(layout.n_cells) + layout.n_layers + 1
    energy_all = np.empty(n)
    pdg_all = np.empty(n, dtype=np.int64)
    layers_all = [np.empty((n, *s), dtype=np.float32) for s in layout.shapes]
    overflow_all = np.empty((n, layout.n_layers), dtype=np.float32)
    leak_all = np.empty(n)
    punch = 0
    t0 = time.perf_counter()
    bar = tqdm(total=n, desc="showers", unit="shower", disable=not progress)
    try:
        for b0 in range(0, n_blocks, per_batch):
            blocks = range(b0, min(b0 + per_batch, n_blocks))
            lo = blocks[0] * BLOCK_SIZE
            hi = min((blocks[-1] + 1) * BLOCK_SIZE, n)
            flat_parts, energy_parts = [], []
            for b in blocks:
                s, e = b * BLOCK_SIZE, min((b + 1) * BLOCK_SIZE, n)
                rng = _block_rng(config.seed, b)
                energy, pdg, direction, impact = _draw_block(config, e - s, rng)
                spots = simulate_spots(energy, pdg, rng, material=material,
                                       direction=direction, impact_mm=impact,
                                       stochastic_term=config.stochastic_term,
                                       depth_mm=depth)
                energy_all[s:e], pdg_all[s:e] = energy, pdg
                punch += int(np.sum(np.isinf(spots.start_mm)))
                flat_parts.append((spots.shower + (s - lo)) * stride
                                  + _readout_index(spots, layout))
                energy_parts.append(spots.energy_gev)
            layers, overflow, leak = _accumulate(np.concatenate(flat_parts),
                                                 np.concatenate(energy_parts), hi - lo, layout)
            for i, x in enumerate(layers):
                layers_all[i][lo:hi] = x
            overflow_all[lo:hi] = overflow
            leak_all[lo:hi] = leak
            bar.update(hi - lo)
    finally:
        bar.close()
    elapsed = time.perf_counter() - t0

    showers = Showers(energy_all, tuple(layers_all), overflow_all, pdg_all,
                      source=f"gflash seed {config.seed}")
    n_pions = int(np.isin(pdg_all, _PION_IDS).sum())
    leak_fraction = {}
    for name in config.particles:
        sel = pdg_all == PARTICLES[name]
        if sel.any():
            leak_fraction[name] = float(leak_all[sel].sum() / energy_all[sel].sum())
    metadata = {
        "generator": "hepml.simulation.showers",
        "version": hepml.__version__,
        "config": config.to_dict(),
        "seed": config.seed,
        "n_showers": n,
        "block_size": BLOCK_SIZE,
        "random_numbers": "block b of BLOCK_SIZE showers: default_rng(SeedSequence(seed, "
                          "spawn_key=(b,)))",
        "layout": {"name": layout.name, "shapes": [list(s) for s in layout.shapes],
                   "cell_sizes_mm": [list(c) for c in layout.cell_sizes_mm],
                   "depths_mm": list(layout.depths_mm)},
        "material": material.to_dict(),
        "parametrisations": {
            "electromagnetic": "GFlash (Grindhammer & Peters, hep-ex/0001020), "
                               + ("sampling-calorimeter" if math.isfinite(
                                   material.sampling_frequency) else "homogeneous-medium")
                               + " version, Geant4 tuning",
            "photon_conversion": "exponential, mean 9/7 X0",
            "spot_count": "ceil(10.3 / a * (E/GeV)^0.959)",
            "sampling_fluctuations": "Gamma per spot, variance a^2 e",
            "pion": "exponential first interaction in lambda_I, MIP track before it; "
                    "Groom f_em = 1 - (E/1 GeV)^(0.82-1) with Beta fluctuations (nu = 8) "
                    "as a GFlash shower; hadronic part h/e = 0.65, Gamma profile in "
                    "lambda_I (t_max = 0.2 ln E + 0.7, lambda_att = lambda_I E^0.13), "
                    "radial R_h = lambda_I / sqrt(19), 50 %/sqrt(E) fluctuations",
        },
        "stochastic_term": config.stochastic_term,
        "back_leakage_fraction": float(leak_all.sum() / energy_all.sum()),
        "back_leakage_fraction_by_particle": leak_fraction,
        "punch_through_fraction": (punch / n_pions) if n_pions else None,
        "seconds": elapsed,
        "showers_per_second": n / elapsed if elapsed > 0 else None,
    }
    return showers, metadata
