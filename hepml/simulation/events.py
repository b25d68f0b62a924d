"""Whole collision events from Pythia 8, reduced to reconstructed objects, one entry per event.

Four processes are available (proton-proton, default sqrt(s) = 13 TeV); the label branch of
each is ``label_<process>``:

``ttbar``
    Inclusive top-pair production (``Top:gg2ttbar``, ``Top:qqbar2ttbar``), all top and W
    decays as in Pythia's defaults.
``wjets``
    W + jet (``WeakBosonAndParton:qqbar2Wg``, ``WeakBosonAndParton:qg2Wq``) with
    W → e ν, μ ν, τ ν only (``24:onIfAny = 11 13 15``), hard-process pT above ``pthat_min``
    (``PhaseSpace:pTHatMin``, default 30 GeV).
``zjets``
    γ*/Z + jet (``WeakBosonAndParton:qqbar2gmZg``, ``WeakBosonAndParton:qg2gmZq``) with
    γ*/Z → ee, μμ, ττ, the same pT-hat cut, and the γ*/Z mass limited to
    :data:`ZJETS_MASS_RANGE` (60–120 GeV, ``23:mMin``/``23:mMax``): without it about a
    quarter of the events would be low-mass γ* → ℓℓ from the photon pole
    (``PhaseSpace:mHatMin`` acts on the mass of the whole 2 → 2 system and leaves the γ*/Z
    mass alone).
``higgs``
    Gluon-fusion Higgs production (``HiggsSM:gg2H``, m_H = 125 GeV) with H → Z Z* and
    Z → ee or μμ: four charged leptons.

Objects are built from the visible final-state particles of each event: status > 0 and not
invisible in Pythia's particle data (no neutrinos), momenta in GeV. No detector is simulated
and there is no pile-up: these are particle-level objects.

* **Electrons, muons** (|id| 11, 13) with pT > ``electron_pt_min``/``muon_pt_min``
  (10 GeV), |η| < ``electron_eta_max``/``muon_eta_max`` (2.5) and relative isolation below
  ``iso_max`` (0.15). The isolation of an object is the scalar pT sum of all *other*
  visible final-state particles within ΔR < ``iso_dr`` (0.3) of it, divided by its own pT;
  ΔR is measured in pseudorapidity and azimuth. Leptons are bare (photons they radiated
  are not added back).
* **Photons** (id 22) with pT > ``photon_pt_min`` (15 GeV), |η| < ``photon_eta_max``
  (2.5) and the same isolation, which photons from π⁰ decays inside jets mostly fail.
* **Jets**: anti-kt, R = ``jet_r`` (0.4, FastJet, E-scheme), clustered from the visible
  final-state particles without the selected electrons, muons and photons; kept with
  pT > ``jet_pt_min`` (25 GeV) and |η| < ``jet_eta_max`` (4.5). A jet is b-tagged
  (``jet_btag = 1``) when a b-hadron with pT > ``btag_hadron_pt_min`` (5 GeV) lies within
  ΔR < ``btag_dr`` (0.4) of its axis. The b-hadrons are taken from the full event record
  (Pythia keeps the decayed hadrons): hadrons containing a b quark, without bottomonia,
  that are the last b-hadron of their decay chain (no b-hadron among their decay products:
  the weakly decaying B⁰, B⁺, B_s, B_c and b-baryons after any B* → B γ or B⁰–B̄⁰ mixing).
* **Missing transverse momentum**: minus the vector sum of the transverse momenta of all
  visible final-state particles with |η| < ``met_eta_max`` (4.9).

Each collection is sorted by pT, highest first. Every generated event is kept, also one
with no object at all.

Output branches, one entry per event (momenta in GeV):

=================================================  ==========  =============================
branch                                             type        meaning
=================================================  ==========  =============================
``jet_px jet_py jet_pz jet_energy``                float32[]   jet four-momenta
``jet_btag``                                       int32[]     1 if b-tagged, else 0
``electron_px electron_py electron_pz``            float32[]   electron four-momenta
``electron_energy``                                float32[]
``electron_charge``                                int32[]     −1 or +1
``muon_px muon_py muon_pz muon_energy``            float32[]   muon four-momenta
``muon_charge``                                    int32[]     −1 or +1
``photon_px photon_py photon_pz photon_energy``    float32[]   photon four-momenta
``met_px met_py``                                  float32     missing transverse momentum
``label_ttbar label_wjets label_zjets``            int32       one-hot process flags
``label_higgs``                                    int32
``event_number``                                   int64       event index in its worker
``worker``                                         int32       worker that made the event
``seed``                                           int64       the worker's Pythia seed
=================================================  ==========  =============================

The collections are jagged; the branches of one collection share one counter in the ROOT
file (``njet``, ``nelectron``, ``nmuon``, ``nphoton``). ``event_number`` counts the events
of one worker from 0; with ``worker``, ``seed`` and the label it identifies the event.

Generation runs in ``n_workers`` processes, each with its own Pythia instance seeded with
``seed * 1000 + worker + 1`` and producing a fixed share of the events, so the output depends
only on ``(config, n_events)``. Reconstruction is vectorised over each batch of events
(one FastJet call per batch).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np

from hepml.errors import ConfigError, GenerationError
from hepml.io.expressions import wrap_phi
from hepml.simulation._pythia import (
    MAX_SEED,
    GeneratorConfig,
    ParticleTable,
    Record,
    WorkerRun,
    antikt,
    check_count,
    concat,
    flat_record,
    pt_eta_phi,
    run_metadata,
    run_workers,
    to_jagged,
    write_mixture,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SEED",
    "PROCESSES",
    "LABELS",
    "ZJETS_MASS_RANGE",
    "HIGGS_MASS",
    "EventGenerationConfig",
    "generate_event_arrays",
    "generate_events",
    "generate_event_mixture",
]

#: Processes that :class:`EventGenerationConfig` knows.
PROCESSES = ("ttbar", "wjets", "zjets", "higgs")

#: Label branch of each process.
LABELS = {p: f"label_{p}" for p in PROCESSES}

#: γ*/Z mass range (GeV) of the ``zjets`` process.
ZJETS_MASS_RANGE = (60.0, 120.0)

#: Higgs boson mass (GeV) of the ``higgs`` process.
HIGGS_MASS = 125.0

_MOMENTA = ("px", "py", "pz", "energy")


@dataclass(frozen=True)
class EventGenerationConfig(GeneratorConfig):
    """How to generate one class of events. Validated on construction.

    Attributes:
        process: ``"ttbar"``, ``"wjets"``, ``"zjets"`` or ``"higgs"`` (see the module
            docstring).
        sqrt_s: Proton-proton centre-of-mass energy in GeV.
        pthat_min: Lower cut on the hard-process pT (GeV), ``PhaseSpace:pTHatMin``, for
            ``wjets`` and ``zjets`` (their cross-sections diverge at low pT); unused
            otherwise.
        electron_pt_min: Electrons need pT above this (GeV).
        electron_eta_max: Electrons need |pseudorapidity| below this.
        muon_pt_min: Muons need pT above this (GeV).
        muon_eta_max: Muons need |pseudorapidity| below this.
        photon_pt_min: Photons need pT above this (GeV).
        photon_eta_max: Photons need |pseudorapidity| below this.
        iso_dr: Cone radius (ΔR in eta-phi) of the isolation sum.
        iso_max: Electrons, muons and photons need a relative isolation below this.
        jet_r: Anti-kt radius parameter.
        jet_pt_min: Jets need pT above this (GeV).
        jet_eta_max: Jets need |pseudorapidity| below this.
        btag_dr: A jet is b-tagged with a b-hadron within this ΔR of its axis.
        btag_hadron_pt_min: Only b-hadrons with pT above this (GeV) tag jets.
        met_eta_max: Particles with |pseudorapidity| below this enter the missing
            transverse momentum.
        mpi: Multiparton interactions (the underlying event), ``PartonLevel:MPI``.
        isr: Initial-state radiation, ``PartonLevel:ISR``.
        fsr: Final-state radiation, ``PartonLevel:FSR``.
        tune: Pythia ``Tune:pp`` number; 14 (Monash 2013) is Pythia's default.
        extra_settings: Raw Pythia setting strings applied last (they override the
            settings above), e.g. ``("23:mMin = 40",)``.
        seed: Master seed, 0 to 899998; worker ``i`` uses Pythia seed
            ``seed * 1000 + i + 1``.
        n_workers: Number of processes generating in parallel (1 runs in this process).
        batch_size: Events per ``Pythia.nextBatch`` call; affects speed and memory only,
            never the output.
    """

    process: str = "ttbar"
    sqrt_s: float = 13000.0
    pthat_min: float = 30.0
    electron_pt_min: float = 10.0
    electron_eta_max: float = 2.5
    muon_pt_min: float = 10.0
    muon_eta_max: float = 2.5
    photon_pt_min: float = 15.0
    photon_eta_max: float = 2.5
    iso_dr: float = 0.3
    iso_max: float = 0.15
    jet_r: float = 0.4
    jet_pt_min: float = 25.0
    jet_eta_max: float = 4.5
    btag_dr: float = 0.4
    btag_hadron_pt_min: float = 5.0
    met_eta_max: float = 4.9
    mpi: bool = True
    isr: bool = True
    fsr: bool = True
    tune: int = 14
    extra_settings: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 1
    n_workers: int = 1
    batch_size: int = 100

    def __post_init__(self) -> None:
        self._check_process(PROCESSES)
        self._normalise_settings()
        self._check_positive("pthat_min", self.pthat_min)
        for name in ("electron_pt_min", "muon_pt_min", "photon_pt_min", "jet_pt_min",
                     "btag_hadron_pt_min"):
            self._check_number(name, getattr(self, name), minimum=0.0)
        for name in ("electron_eta_max", "muon_eta_max", "photon_eta_max", "jet_eta_max",
                     "met_eta_max", "iso_dr", "iso_max", "jet_r", "btag_dr"):
            self._check_positive(name, getattr(self, name))
        if self.jet_r > 3.0:
            raise ConfigError(
                f"EventGenerationConfig.jet_r = {self.jet_r} is too large; use 0 < jet_r <= 3"
            )
        self._check_run()

    @property
    def label(self) -> str:
        """The label branch set to 1 for this process."""
        return LABELS[self.process]

    def pythia_settings(self, worker_seed: int) -> list[str]:
        """Return every Pythia setting string used by a worker with Pythia seed ``worker_seed``."""
        pthat = [f"PhaseSpace:pTHatMin = {self.pthat_min:g}"]
        if self.process == "ttbar":
            s = ["Top:gg2ttbar = on", "Top:qqbar2ttbar = on"]
        elif self.process == "wjets":
            s = [
                "WeakBosonAndParton:qqbar2Wg = on",
                "WeakBosonAndParton:qg2Wq = on",
                "24:onMode = off",
                "24:onIfAny = 11 13 15",
                *pthat,
            ]
        elif self.process == "zjets":
            s = [
                "WeakBosonAndParton:qqbar2gmZg = on",
                "WeakBosonAndParton:qg2gmZq = on",
                "23:onMode = off",
                "23:onIfAny = 11 13 15",
                f"23:mMin = {ZJETS_MASS_RANGE[0]:g}",
                f"23:mMax = {ZJETS_MASS_RANGE[1]:g}",
                *pthat,
            ]
        else:  # higgs
            s = [
                "HiggsSM:gg2H = on",
                f"25:m0 = {HIGGS_MASS:g}",
                "25:onMode = off",
                "25:onIfMatch = 23 23",
                "23:onMode = off",
                "23:onIfAny = 11 13",
            ]
        return self._settings(s, worker_seed)


# --------------------------------------------------------------------------- reconstruction


def _same_event_pairs(
    event_a: np.ndarray, start_b: np.ndarray, count_b: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Every pair (a, b) of objects in the same event.

    Args:
        event_a: Event of each object a.
        start_b: Index of each event's first b in the flat b arrays (b sorted by event).
        count_b: Number of b objects in each event.

    Returns:
        ``(ia, ib)``: flat indices of the a and b of each pair.
    """
    n = count_b[event_a]
    ia = np.repeat(np.arange(len(event_a)), n)
    first = np.repeat(np.cumsum(n) - n, n)
    ib = np.arange(int(n.sum())) - first + np.repeat(start_b[event_a], n)
    return ia, ib


def _delta_r2(eta1: np.ndarray, phi1: np.ndarray, eta2: np.ndarray, phi2: np.ndarray) -> Any:
    return (eta1 - eta2) ** 2 + wrap_phi(phi1 - phi2) ** 2


def _starts(counts: np.ndarray) -> np.ndarray:
    return np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)


def _is_b_hadron(pid: np.ndarray) -> np.ndarray:
    """Hadrons with a b quark, from the digits of the PDG code; bottomonia excluded."""
    a = np.abs(pid)
    nq1, nq2, nq3 = a // 1000 % 10, a // 100 % 10, a // 10 % 10
    baryon = (nq1 == 5) & (nq3 > 0)  # nq3 == 0: a diquark
    meson = (nq1 == 0) & (nq2 == 5) & (nq3 > 0) & (nq3 < 5)  # nq3 == 5: b b-bar
    return (a < 1_000_000) & (baryon | meson)


def _last_b_hadrons(rec: Record, pt_min: float) -> np.ndarray:
    """Record indices of the b-hadrons that decay into no other b-hadron, with pT > pt_min."""
    is_b = _is_b_hadron(rec.pid)
    b_idx = np.flatnonzero(is_b)
    mother = rec.mother1[b_idx]
    child = b_idx[mother > 0]
    parent = rec.offsets[rec.event_of[child]] + mother[mother > 0]
    has_b_daughter = np.zeros(len(rec.pid), dtype=bool)
    has_b_daughter[parent[is_b[parent]]] = True
    keep = b_idx[~has_b_daughter[b_idx]]
    return keep[np.hypot(rec.px[keep], rec.py[keep]) > pt_min]


class _Particles:
    """The visible final-state particles of a batch, flat and in event order."""

    def __init__(self, rec: Record) -> None:
        idx = np.flatnonzero(rec.final)
        self.n_events = rec.n_events
        self.event = rec.event_of[idx]
        self.counts = np.bincount(self.event, minlength=rec.n_events)
        self.starts = _starts(self.counts)
        self.px, self.py, self.pz, self.e = rec.px[idx], rec.py[idx], rec.pz[idx], rec.e[idx]
        self.pid = rec.pid[idx]
        self.charge = rec.charge[idx]
        self.pt, self.eta, self.phi = pt_eta_phi(self.px, self.py, self.pz)

    def isolated(self, mask: np.ndarray, pt_min: float, eta_max: float,
                 config: EventGenerationConfig) -> np.ndarray:
        """Indices of the particles in ``mask`` that pass the pT, |eta| and isolation cuts."""
        cand = np.flatnonzero(mask & (self.pt > pt_min) & (np.abs(self.eta) < eta_max))
        ia, ib = _same_event_pairs(self.event[cand], self.starts, self.counts)
        c = cand[ia]
        near = (ib != c) & (
            _delta_r2(self.eta[c], self.phi[c], self.eta[ib], self.phi[ib]) < config.iso_dr**2
        )
        cone = np.bincount(ia, weights=np.where(near, self.pt[ib], 0.0), minlength=len(cand))
        return cand[cone < config.iso_max * self.pt[cand]]

    def collection(self, idx: np.ndarray, name: str, *, charge: bool) -> dict[str, Any]:
        """Branches of the particles ``idx`` as one collection, pT-sorted in each event."""
        idx = idx[np.lexsort((-self.pt[idx], self.event[idx]))]
        counts = np.bincount(self.event[idx], minlength=self.n_events)
        out = _momenta(name, self.px[idx], self.py[idx], self.pz[idx], self.e[idx], counts)
        if charge:
            out[f"{name}_charge"] = (self.charge[idx].astype(np.int32), counts)
        return out


def _momenta(
    name: str, px: np.ndarray, py: np.ndarray, pz: np.ndarray, e: np.ndarray, counts: np.ndarray
) -> dict[str, Any]:
    return {f"{name}_{k}": (np.asarray(v, dtype=np.float32), counts)
            for k, v in zip(_MOMENTA, (px, py, pz, e), strict=True)}


def _jets(
    parts: _Particles, used: np.ndarray, rec: Record, config: EventGenerationConfig
) -> dict[str, Any]:
    """Anti-kt jets of the particles not in ``used``, with their b-tags; pT-sorted."""
    free = np.ones(len(parts.pt), dtype=bool)
    free[used] = False
    counts = np.bincount(parts.event[free], minlength=parts.n_events)
    cs = antikt(parts.px[free], parts.py[free], parts.pz[free], parts.e[free], counts,
                config.jet_r)
    jets = cs.inclusive_jets(min_pt=float(config.jet_pt_min))
    n_jets = ak.to_numpy(ak.num(jets.px))
    event = np.repeat(np.arange(parts.n_events), n_jets)
    px, py, pz, e = (ak.to_numpy(ak.flatten(a)).astype(np.float64)
                     for a in (jets.px, jets.py, jets.pz, jets.E))
    pt, eta, phi = pt_eta_phi(px, py, pz)
    keep = np.flatnonzero((pt > config.jet_pt_min) & (np.abs(eta) < config.jet_eta_max))
    keep = keep[np.lexsort((-pt[keep], event[keep]))]
    event, px, py, pz, e, eta, phi = (a[keep] for a in (event, px, py, pz, e, eta, phi))
    counts = np.bincount(event, minlength=parts.n_events)

    bh = _last_b_hadrons(rec, config.btag_hadron_pt_min)
    _, b_eta, b_phi = pt_eta_phi(rec.px[bh], rec.py[bh], rec.pz[bh])
    b_counts = np.bincount(rec.event_of[bh], minlength=parts.n_events)
    ia, ib = _same_event_pairs(event, _starts(b_counts), b_counts)
    near = _delta_r2(eta[ia], phi[ia], b_eta[ib], b_phi[ib]) < config.btag_dr**2
    btag = np.bincount(ia, weights=near, minlength=len(event)) > 0

    out = _momenta("jet", px, py, pz, e, counts)
    out["jet_btag"] = (btag.astype(np.int32), counts)
    return out


def _reconstruct(
    batch: ak.Array, config: EventGenerationConfig, table: ParticleTable
) -> dict[str, Any]:
    """Objects of one batch of events: branch name to array, jagged ones as (flat, counts)."""
    rec = flat_record(batch["prt"], table)
    parts = _Particles(rec)
    apid = np.abs(parts.pid)
    electrons = parts.isolated(apid == 11, config.electron_pt_min, config.electron_eta_max,
                               config)
    muons = parts.isolated(apid == 13, config.muon_pt_min, config.muon_eta_max, config)
    photons = parts.isolated(parts.pid == 22, config.photon_pt_min, config.photon_eta_max,
                             config)
    out = _jets(parts, np.concatenate([electrons, muons, photons]), rec, config)
    out |= parts.collection(electrons, "electron", charge=True)
    out |= parts.collection(muons, "muon", charge=True)
    out |= parts.collection(photons, "photon", charge=False)
    central = np.abs(parts.eta) < config.met_eta_max
    for axis, p in (("px", parts.px), ("py", parts.py)):
        total = np.bincount(parts.event[central], weights=p[central], minlength=rec.n_events)
        out[f"met_{axis}"] = (-total).astype(np.float32)
    for proc, label in LABELS.items():
        out[label] = np.full(rec.n_events, int(proc == config.process), dtype=np.int32)
    return out


# --------------------------------------------------------------------------- workers


def _run_worker(
    config: EventGenerationConfig,
    worker: int,
    n_target: int,
    report: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``n_target`` events with worker ``worker``'s seed; return (branches, info)."""
    if n_target == 0:
        return {}, {"worker": worker, "n_events": 0}
    run = WorkerRun(config, worker, report)
    pieces: list[dict[str, Any]] = []
    n_have = 0
    while n_have < n_target:
        n_ask = min(config.batch_size, n_target - n_have)
        batch = run.pythia.nextBatch(n_ask)
        if len(batch) == 0:
            raise GenerationError(
                f"Pythia produced no events in a batch of {n_ask} "
                f"(process {config.process!r}, seed {run.seed}); check the settings"
            )
        out = _reconstruct(batch, config, run.table)
        out["event_number"] = np.arange(n_have, n_have + len(batch), dtype=np.int64)
        pieces.append(out)
        n_have += len(batch)
        run.report(len(batch))
    branches = concat(pieces)
    branches["worker"] = np.full(n_have, worker, dtype=np.int32)
    branches["seed"] = np.full(n_have, run.seed, dtype=np.int64)
    return branches, run.summary(n_events=n_have)


def generate_event_arrays(
    config: EventGenerationConfig,
    n_events: int,
    *,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``n_events`` events in memory.

    Args:
        config: What to generate.
        n_events: Number of events; worker ``i`` makes ``n_events // n_workers`` of them
            (plus one for the first ``n_events % n_workers`` workers), concatenated in
            worker order.
        progress: Show a tqdm progress bar counting events.

    With ``n_workers > 1`` the workers are started with the ``spawn`` method: a script
    that calls this must guard its top level with ``if __name__ == "__main__":``.

    Returns:
        ``(branches, metadata)``: branch name to array (the object collections as jagged
        awkward arrays) and a JSON-serialisable description of the run.

    Raises:
        GenerationError: Pythia refused a setting or failed to initialise.
    """
    n_events = check_count("n_events", n_events)
    results, elapsed = run_workers(_run_worker, config, n_events, unit="event",
                                   progress=progress)
    branches = to_jagged(concat([r[0] for r in results if r[0]]))
    summaries = [r[1] for r in results if r[0]]
    multiplicity = {name: float(ak.mean(ak.num(branches[f"{name}_px"])))
                    for name in ("jet", "electron", "muon", "photon")}
    multiplicity["btag"] = float(ak.mean(ak.sum(branches["jet_btag"], axis=1)))
    meta = {
        "generator": "hepml.simulation.events",
        "process": config.process,
        "n_events": n_events,
        "config": config.to_dict(),
        **run_metadata(summaries, elapsed),
        "sigma_gen_mb_note": "Pythia's estimate of the cross-section of the generated "
        "process (with the decays allowed and the pthat cut), averaged over workers",
        "mean_multiplicity": multiplicity,
    }
    log.info(
        "%d %s events in %.1f s; per event: %s",
        n_events, config.process, elapsed,
        ", ".join(f"{v:.2f} {k}" for k, v in multiplicity.items()),
    )
    return branches, meta


def generate_events(
    config: EventGenerationConfig,
    out_path: str | os.PathLike,
    n_events: int,
    *,
    progress: bool = True,
    tree: str = "tree",
) -> Path:
    """Generate ``n_events`` events and write them as a TTree (branches: module docstring).

    Args:
        config: What to generate.
        out_path: Output ROOT file, written atomically.
        n_events: Number of events.
        progress: Show a progress bar counting events.
        tree: Name of the TTree.

    Returns:
        The path written.
    """
    from hepml.io.atomic import check_writable
    from hepml.io.writing import write_tree

    check_writable(Path(out_path).parent)  # before generating
    branches, meta = generate_event_arrays(config, n_events, progress=progress)
    return write_tree(out_path, branches, tree=tree, metadata=meta)


def generate_event_mixture(
    configs: Sequence[EventGenerationConfig],
    n_events: Sequence[int],
    out_path: str | os.PathLike,
    *,
    shuffle_seed: int | None = None,
    progress: bool = True,
    tree: str = "tree",
) -> Path:
    """Generate several processes into one file, the events mixed in a fixed random order.

    Args:
        configs: One configuration per process (give them different seeds so that the
            processes use different random-number streams).
        n_events: Number of events of each process.
        out_path: Output ROOT file.
        shuffle_seed: Seed of the permutation that mixes the processes; None uses the
            first configuration's seed.
        progress: Show progress bars.
        tree: Name of the TTree.

    Returns:
        The path written. The metadata holds each process's metadata under ``"classes"``.
    """
    return write_mixture(
        generate_event_arrays, configs, n_events, out_path, unit="event",
        generator="hepml.simulation.events.generate_event_mixture",
        shuffle_seed=shuffle_seed, progress=progress, tree=tree,
    )
