"""Boosted jets from Pythia 8 events clustered with FastJet, written in the JetClass layout.

Three processes are available:

``qcd``
    ``HardQCD:all``: light-quark and gluon jets (plus g → cc̄/bb̄ splittings), label
    ``label_QCD``. No truth matching.
``top``
    Hadronic tt̄ (``Top:gg2ttbar``, ``Top:qqbar2ttbar``; W → quarks only), label
    ``label_Tbqq``. A jet is kept when the top (its last copy in the event record, after
    recoils) and its three decay quarks (the b from t → Wb and the two quarks from the W)
    all lie within ``match_dr`` of the jet axis.
``w``
    Boosted hadronic W from a heavy W' → WZ with W → qq̄' and Z → νν̄, so that the W is
    the only visible heavy object; label ``label_Wqq``. A jet is kept when the W (last copy)
    and both its decay quarks lie within ``match_dr`` of the jet axis. With the default W'
    mass of 1300 GeV the W has a transverse momentum up to about 640 GeV (two-body decay),
    which fills the default 550–650 GeV jet window.

The jets are anti-kt jets (radius ``jet_r``) of the visible final-state particles (status
> 0, without neutrinos and other particles Pythia marks invisible, such as the lightest
neutralino). Of each event, the ``max_jets_per_event`` leading jets in pT are candidates;
a candidate is kept if its pT lies in ``[jet_pt_min, jet_pt_max)``, ``|eta| < jet_eta_max``
and, for signal, it is truth-matched.

Output branches, one entry per jet (JetClass names):

* ``jet_pt jet_eta jet_phi jet_energy jet_mass`` (float32): the full jet, E-scheme sum of
  all its constituents; ``jet_eta`` is the pseudorapidity;
* ``jet_nparticles`` (int32): the number of constituents of the jet (all of them, also
  when ``max_constituents`` stores fewer);
* ``part_px part_py part_pz part_energy part_deta part_dphi part_charge part_pid``
  (float32, jagged with counter ``npart``): constituents sorted by pT, highest first;
  ``part_deta = eta - jet_eta`` (pseudorapidity) and ``part_dphi`` wrapped to [-pi, pi);
  at most ``max_constituents`` of them when that is set;
* ``label_QCD label_Tbqq label_Wqq`` (int32, 0 or 1): one-hot class flags;
* ``event_number`` (int64, index of the event in its worker's stream, counted from 0),
  ``jet_index`` (int32, rank of the jet in its event by pT, 0 = leading), ``worker``
  (int32) and ``seed`` (int64, the worker's Pythia seed): with these, any jet can be traced
  back to the event that made it.

Generation runs in ``n_workers`` processes, each with its own Pythia instance seeded with
``seed * 1000 + worker + 1`` and producing a fixed share of the jets, so the output depends
only on ``(config, n_jets)``: the same configuration always gives the same file content.
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

from hepml.errors import ConfigError, EmptyInputError, GenerationError
from hepml.io.expressions import wrap_phi
from hepml.simulation._pythia import (
    MAX_SEED,
    GeneratorConfig,
    ParticleTable,
    WorkerRun,
    antikt,
    check_count,
    concat,
    flat_record,
    pt_eta_phi,
    run_metadata,
    run_workers,
    to_jagged,
    worker_seeds,
    write_mixture,
)

log = logging.getLogger(__name__)

__all__ = [
    "MAX_SEED",
    "PROCESSES",
    "LABELS",
    "JetGenerationConfig",
    "generate_jets",
    "generate_jet_arrays",
    "generate_mixture",
    "worker_seeds",
]

#: Processes that :class:`JetGenerationConfig` knows.
PROCESSES = ("qcd", "top", "w")

#: Label branch of each process (JetClass names).
LABELS = {"qcd": "label_QCD", "top": "label_Tbqq", "w": "label_Wqq"}

#: Default hard-process pT range (GeV) for the 2 → 2 processes, a compromise between
#: efficiency and bias for 550–650 GeV jets: in a study with pthat 300–1000 GeV about 90 %
#: of the selected jets came from events with pthat in 400–800 GeV (the rest mostly from
#: lower pthat, jets pushed up by ISR and the underlying event); 450–750 kept only about
#: 80 % (qcd) and 88 % (top). See data_samples/README.md.
DEFAULT_PTHAT = {"qcd": (400.0, 800.0), "top": (400.0, 800.0)}

_PART_FIELDS = ("px", "py", "pz", "energy", "deta", "dphi", "charge", "pid")
# Give up when this many events in a worker yielded no jet at all.
_MAX_EVENTS_WITHOUT_JETS = 5000


@dataclass(frozen=True)
class JetGenerationConfig(GeneratorConfig):
    """How to generate one class of jets. Validated on construction.

    Attributes:
        process: ``"qcd"``, ``"top"`` or ``"w"`` (see the module docstring).
        sqrt_s: Proton-proton centre-of-mass energy in GeV.
        pthat_min: Lower cut on the hard-process pT (GeV), ``PhaseSpace:pTHatMin``; None
            takes the process default (400 GeV for qcd and top). Not used for ``w``
            (a 2 → 1 process).
        pthat_max: Upper cut on the hard-process pT (GeV); None takes the process default
            (800 GeV for qcd and top); not used for ``w``.
        jet_r: Anti-kt radius parameter.
        jet_pt_min: Lowest jet pT kept (GeV, inclusive).
        jet_pt_max: Highest jet pT kept (GeV, exclusive).
        jet_eta_max: Largest |pseudorapidity| of a kept jet.
        match_dr: Signal jets need the top (W) and all its decay quarks within this
            Delta R (in eta-phi) of the jet axis. Ignored for qcd.
        max_jets_per_event: Only the this many leading jets (by pT) of each event are
            candidates; None makes every jet a candidate. Default 2, as in the
            top-tagging reference sample: the two hardest jets of a 2 → 2 process.
        max_constituents: Store at most this many constituents per jet (the leading ones
            in pT); None stores all. The jet four-momentum is always that of the full jet.
        mpi: Multiparton interactions (the underlying event), ``PartonLevel:MPI``.
        isr: Initial-state radiation, ``PartonLevel:ISR``.
        fsr: Final-state radiation, ``PartonLevel:FSR``.
        tune: Pythia ``Tune:pp`` number; 14 (Monash 2013) is Pythia's default.
        wprime_mass: W' mass in GeV for process ``w``.
        extra_settings: Raw Pythia setting strings applied last (they override the
            settings above), e.g. ``("TimeShower:alphaSvalue = 0.13",)``.
        seed: Master seed, 0 to 899998; worker ``i`` uses Pythia seed
            ``seed * 1000 + i + 1``.
        n_workers: Number of processes generating in parallel (1 runs in this process).
        batch_size: Events per ``Pythia.nextBatch`` call; affects speed and memory only,
            never the output.
    """

    process: str = "qcd"
    sqrt_s: float = 14000.0
    pthat_min: float | None = None
    pthat_max: float | None = None
    jet_r: float = 0.8
    jet_pt_min: float = 550.0
    jet_pt_max: float = 650.0
    jet_eta_max: float = 2.0
    match_dr: float = 0.8
    max_jets_per_event: int | None = 2
    max_constituents: int | None = None
    mpi: bool = True
    isr: bool = True
    fsr: bool = True
    tune: int = 14
    wprime_mass: float = 1300.0
    extra_settings: tuple[str, ...] = field(default_factory=tuple)
    seed: int = 1
    n_workers: int = 1
    batch_size: int = 100

    def __post_init__(self) -> None:
        self._check_process(PROCESSES)
        self._normalise_settings()
        if self.process in DEFAULT_PTHAT:
            lo, hi = DEFAULT_PTHAT[self.process]
            if self.pthat_min is None:
                object.__setattr__(self, "pthat_min", lo)
            if self.pthat_max is None:
                object.__setattr__(self, "pthat_max", hi)
        self._check_positive("jet_r", self.jet_r)
        self._check_positive("jet_eta_max", self.jet_eta_max)
        self._check_positive("match_dr", self.match_dr)
        self._check_positive("wprime_mass", self.wprime_mass)
        self._check_number("jet_pt_min", self.jet_pt_min, minimum=0.0)
        self._check_number("jet_pt_max", self.jet_pt_max, minimum=0.0)
        if self.jet_pt_max <= self.jet_pt_min:
            raise ConfigError(
                f"JetGenerationConfig: jet_pt_max ({self.jet_pt_max}) must be larger than "
                f"jet_pt_min ({self.jet_pt_min})"
            )
        if self.pthat_min is not None:
            self._check_number("pthat_min", self.pthat_min, minimum=0.0)
        if self.pthat_max is not None:
            self._check_number("pthat_max", self.pthat_max, minimum=0.0)
            if self.pthat_max != 0 and self.pthat_max <= (self.pthat_min or 0.0):
                raise ConfigError(
                    f"JetGenerationConfig: pthat_max ({self.pthat_max}) must be larger than "
                    f"pthat_min ({self.pthat_min}); use 0 for no upper cut"
                )
        if self.jet_r > 3.0:
            raise ConfigError(
                f"JetGenerationConfig.jet_r = {self.jet_r} is too large; use 0 < jet_r <= 3"
            )
        self._check_int("max_jets_per_event", self.max_jets_per_event, 1, None, allow_none=True)
        self._check_int("max_constituents", self.max_constituents, 1, None, allow_none=True)
        self._check_run()

    @property
    def label(self) -> str:
        """The label branch set to 1 for this process."""
        return LABELS[self.process]

    def pythia_settings(self, worker_seed: int) -> list[str]:
        """Return every Pythia setting string used by a worker with Pythia seed ``worker_seed``."""
        s = []
        if self.process == "qcd":
            s.append("HardQCD:all = on")
        elif self.process == "top":
            s += [
                "Top:gg2ttbar = on",
                "Top:qqbar2ttbar = on",
                "24:onMode = off",
                "24:onIfAny = 1 2 3 4 5",
            ]
        else:  # w
            s += [
                "NewGaugeBoson:ffbar2Wprime = on",
                f"34:m0 = {self.wprime_mass:g}",
                "Wprime:coup2WZ = 1.",
                "34:onMode = off",
                "34:onIfAll = 23 24",
                "24:onMode = off",
                "24:onIfAny = 1 2 3 4 5",
                "23:onMode = off",
                "23:onIfAny = 12 14 16",
            ]
        if self.process in DEFAULT_PTHAT:
            s.append(f"PhaseSpace:pTHatMin = {self.pthat_min:g}")
            s.append(f"PhaseSpace:pTHatMax = {self.pthat_max:g}")
        return self._settings(s, worker_seed)


def _signal_partons(prt: ak.Array, process: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Find the resonances to match and their decay quarks, vectorised over the batch.

    Returns:
        ``event`` (index in the batch of each resonance), ``eta`` and ``phi`` of shape
        (n_resonances, 1 + n_quarks): the resonance first, then its decay quarks.
    """
    counts = ak.to_numpy(ak.num(prt.id))
    offsets = np.concatenate([[0], np.cumsum(counts)[:-1]])
    event_of = np.repeat(np.arange(len(counts)), counts)
    flat = ak.flatten(prt)
    pid = ak.to_numpy(flat.id).astype(np.int64)
    d1 = ak.to_numpy(flat.daughter1).astype(np.int64) + offsets[event_of]
    d2 = ak.to_numpy(flat.daughter2).astype(np.int64) + offsets[event_of]
    has_d = ak.to_numpy(flat.daughter1) > 0
    apid = np.abs(pid)
    p = flat.p
    px, py, pz = (ak.to_numpy(p.px), ak.to_numpy(p.py), ak.to_numpy(p.pz))
    _, eta, phi = pt_eta_phi(px, py, pz)

    def last_copy(idx: np.ndarray) -> np.ndarray:
        # Follow the "carbon copies" (recoils): a copy has one daughter with the same id.
        for _ in range(200):
            nxt = d1[idx]
            is_copy = has_d[idx] & (d1[idx] == d2[idx]) & (pid[nxt] == pid[idx])
            if not is_copy.any():
                return idx
            idx = np.where(is_copy, nxt, idx)
        raise GenerationError("could not follow a particle's copies in the Pythia event record")

    def decay_pair(idx: np.ndarray, want: int) -> tuple[np.ndarray, np.ndarray]:
        # idx decays to two particles d1, d2 (d1 < d2, consecutive); return (the one
        # with |id| == want, the other).
        a, b = d1[idx], d2[idx]
        a_is = apid[a] == want
        return np.where(a_is, a, b), np.where(a_is, b, a)

    res_id = 6 if process == "top" else 24
    first = np.flatnonzero(apid == res_id)
    # Keep one entry per physical resonance: the last copy, which decays.
    last = np.unique(last_copy(first))
    decays = has_d[last] & (d2[last] > d1[last])
    last = last[decays]
    if process == "top":
        w, q_top = decay_pair(last, 24)
        w = last_copy(w)
        q1, q2 = d1[w], d2[w]
        members = np.stack([last, q_top, q1, q2], axis=1)
        quark_ok = (apid[q_top] <= 5) & (apid[q1] <= 5) & (apid[q2] <= 5) & (apid[w] == 24)
    else:
        q1, q2 = d1[last], d2[last]
        members = np.stack([last, q1, q2], axis=1)
        quark_ok = (apid[q1] <= 5) & (apid[q2] <= 5)
    members = members[quark_ok]
    return event_of[members[:, 0]], eta[members], phi[members]


def _process_batch(
    batch: ak.Array,
    config: JetGenerationConfig,
    table: ParticleTable,
    first_event: int,
) -> dict[str, Any]:
    """Cluster one batch of events and select jets; returns branch arrays (jets in event order)."""
    prt = batch["prt"]
    rec = flat_record(prt, table)
    n_events = rec.n_events
    keep = rec.final
    n_keep = np.bincount(rec.event_of[keep], minlength=n_events)
    fpx, fpy, fpz, fe = rec.px[keep], rec.py[keep], rec.pz[keep], rec.e[keep]
    fpid, fcharge = rec.pid[keep].astype(np.float32), rec.charge[keep]
    offsets = np.concatenate([[0], np.cumsum(n_keep)[:-1]])

    cs = antikt(fpx, fpy, fpz, fe, n_keep, config.jet_r)
    # Only jets above jet_pt_min can pass; the N leading jets above it are the N leading
    # jets of the event as far as any kept jet is concerned.
    jets = cs.inclusive_jets(min_pt=float(config.jet_pt_min))
    cidx = cs.constituent_index(min_pt=float(config.jet_pt_min))

    jpx, jpy, jpz, je = jets.px, jets.py, jets.pz, jets.E
    jpt = np.hypot(jpx, jpy)
    order = ak.argsort(jpt, axis=1, ascending=False)
    if config.max_jets_per_event is not None:
        order = order[:, : config.max_jets_per_event]
    jpx, jpy, jpz, je, jpt, cidx = (a[order] for a in (jpx, jpy, jpz, je, jpt, cidx))
    rank = ak.local_index(jpt, axis=1)
    jeta = np.arcsinh(jpz / jpt)
    jphi = np.arctan2(jpy, jpx)
    sel = (jpt >= config.jet_pt_min) & (jpt < config.jet_pt_max) & (abs(jeta) < config.jet_eta_max)

    if config.process != "qcd":
        ev, peta, pphi = _signal_partons(prt, config.process)
        nres = np.bincount(ev, minlength=n_events)
        obj = ak.unflatten(ak.zip({"eta": peta, "phi": pphi}, depth_limit=1), nres)
        jet_dir = ak.zip({"eta": jeta, "phi": jphi})
        pairs = ak.cartesian({"j": jet_dir, "o": obj}, axis=1, nested=True)
        deta = pairs.o.eta - pairs.j.eta  # broadcasts the jet over the resonance's members
        dphi = wrap_phi(pairs.o.phi - pairs.j.phi)
        dr2 = deta**2 + dphi**2
        matched = ak.any(ak.all(dr2 < config.match_dr**2, axis=-1), axis=-1)
        sel = sel & matched

    n_sel = ak.to_numpy(ak.sum(sel, axis=1))
    jet_event = np.repeat(np.arange(n_events), n_sel)
    jpx, jpy, jpz, je, jpt, jeta, jphi, rank, cidx = (
        ak.flatten(a[sel], axis=1) for a in (jpx, jpy, jpz, je, jpt, jeta, jphi, rank, cidx)
    )
    jpx, jpy, jpz, je, jpt, jeta, jphi = (
        ak.to_numpy(a).astype(np.float64) for a in (jpx, jpy, jpz, je, jpt, jeta, jphi)
    )
    m2 = je**2 - jpx**2 - jpy**2 - jpz**2
    jmass = np.sqrt(np.clip(m2, 0.0, None))

    # Constituents: global indices into the flat particle arrays, sorted by pT per jet.
    ncon = ak.to_numpy(ak.num(cidx, axis=1))
    gidx = ak.to_numpy(ak.flatten(cidx)).astype(np.int64) + np.repeat(offsets[jet_event], ncon)
    cpt = np.hypot(fpx[gidx], fpy[gidx])
    jet_of_con = np.repeat(np.arange(len(ncon)), ncon)
    srt = np.lexsort((-cpt, jet_of_con))  # by jet, then pT descending
    gidx = gidx[srt]
    stored = ncon
    if config.max_constituents is not None:
        rank_in_jet = np.arange(len(gidx)) - np.repeat(np.cumsum(ncon) - ncon, ncon)
        gidx = gidx[rank_in_jet < config.max_constituents]
        stored = np.minimum(ncon, config.max_constituents)
    cpx, cpy, cpz = fpx[gidx], fpy[gidx], fpz[gidx]
    _, ceta, cphi = pt_eta_phi(cpx, cpy, cpz)
    jet_rep = np.repeat(np.arange(len(stored)), stored)
    part = {
        "px": cpx,
        "py": cpy,
        "pz": cpz,
        "energy": fe[gidx],
        "deta": ceta - jeta[jet_rep],
        "dphi": wrap_phi(cphi - jphi[jet_rep]),
        "charge": fcharge[gidx],
        "pid": fpid[gidx],
    }
    n_jets = len(jpt)
    out: dict[str, Any] = {
        "jet_pt": jpt.astype(np.float32),
        "jet_eta": jeta.astype(np.float32),
        "jet_phi": jphi.astype(np.float32),
        "jet_energy": je.astype(np.float32),
        "jet_mass": jmass.astype(np.float32),
        "jet_nparticles": ncon.astype(np.int32),
    }
    for name in _PART_FIELDS:
        out[f"part_{name}"] = (np.asarray(part[name], dtype=np.float32), stored)
    for proc, label in LABELS.items():
        out[label] = np.full(n_jets, int(proc == config.process), dtype=np.int32)
    out["event_number"] = (first_event + jet_event).astype(np.int64)
    out["jet_index"] = ak.to_numpy(rank).astype(np.int32)
    return out


# --------------------------------------------------------------------------- workers


def _run_worker(
    config: JetGenerationConfig,
    worker: int,
    n_target: int,
    report: Callable[[int, int], None] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``n_target`` jets with worker ``worker``'s seed; return (branches, info)."""
    run = WorkerRun(config, worker, report)
    seed = run.seed
    pieces: list[dict[str, Any]] = []
    n_have = n_events = n_used_events = 0
    while n_have < n_target:
        batch = run.pythia.nextBatch(config.batch_size)
        if len(batch) == 0:
            raise GenerationError(
                f"Pythia produced no events in a batch of {config.batch_size} "
                f"(process {config.process!r}, seed {seed}); check the settings"
            )
        out = _process_batch(batch, config, run.table, n_events)
        n_events += len(batch)
        got = len(out["jet_pt"])
        if got:
            pieces.append(out)
            # Events needed to reach the target (for the efficiency): up to the event of
            # the last jet kept.
            need = n_target - n_have
            last_event = out["event_number"][min(need, got) - 1]
            n_used_events = int(last_event) + 1 if got >= need else n_events
            n_have += got
            run.report(min(got, need))
        else:
            n_used_events = n_events
        if n_have == 0 and n_events >= _MAX_EVENTS_WITHOUT_JETS:
            raise EmptyInputError(
                f"no jet passed the selection in {n_events} {config.process} events "
                f"(pT {config.jet_pt_min}-{config.jet_pt_max} GeV, |eta| < {config.jet_eta_max}, "
                f"pthat {config.pthat_min}-{config.pthat_max}); widen the jet window or move "
                "the pthat range to cover it"
            )
    branches = concat(pieces, n_target) if pieces else {}
    n = len(branches["jet_pt"]) if branches else 0
    if n:
        branches["worker"] = np.full(n, worker, dtype=np.int32)
        branches["seed"] = np.full(n, seed, dtype=np.int64)
    summary = run.summary(
        n_jets=n,
        n_events_generated=n_events,
        n_events_used=n_used_events,
        n_jets_selected_total=sum(len(p["jet_pt"]) for p in pieces),
    )
    return branches, summary


def generate_jet_arrays(
    config: JetGenerationConfig,
    n_jets: int,
    *,
    progress: bool = True,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Generate ``n_jets`` jets in memory.

    Args:
        config: What to generate.
        n_jets: Number of jets; worker ``i`` makes ``n_jets // n_workers`` of them (plus one
            for the first ``n_jets % n_workers`` workers), concatenated in worker order.
        progress: Show a tqdm progress bar counting jets.

    With ``n_workers > 1`` the workers are started with the ``spawn`` method: a script
    that calls this must guard its top level with ``if __name__ == "__main__":``.

    Returns:
        ``(branches, metadata)``: branch name to array (jagged ``part_*`` branches as
        awkward arrays) and a JSON-serialisable description of the run.

    Raises:
        GenerationError: Pythia refused a setting or failed to initialise.
        EmptyInputError: The selection keeps no jet.
    """
    n_jets = check_count("n_jets", n_jets)
    results, elapsed = run_workers(_run_worker, config, n_jets, unit="jet", progress=progress)
    branches = to_jagged(concat([r[0] for r in results if r[0]]))
    summaries = [r[1] for r in results]
    n_events = sum(s["n_events_used"] for s in summaries)
    meta = {
        "generator": "hepml.simulation.jets",
        "process": config.process,
        "n_jets": n_jets,
        "config": config.to_dict(),
        **run_metadata(summaries, elapsed),
        "n_events": n_events,
        "selection_efficiency": n_jets / n_events if n_events else 0.0,
        "selection_efficiency_note": "selected jets per generated event, counting the events "
        "up to the last one a kept jet came from",
        "sigma_gen_mb_note": "Pythia's estimate of the cross-section of the generated "
        "process (within the pthat range), averaged over workers",
    }
    log.info(
        "%d %s jets from %d events (efficiency %.3f jets/event) in %.1f s",
        n_jets, config.process, n_events, meta["selection_efficiency"], elapsed,
    )
    return branches, meta


def generate_jets(
    config: JetGenerationConfig,
    out_path: str | os.PathLike,
    n_jets: int,
    *,
    progress: bool = True,
    tree: str = "tree",
) -> Path:
    """Generate ``n_jets`` jets and write them as a TTree (see the module docstring for branches).

    Args:
        config: What to generate.
        out_path: Output ROOT file, written atomically.
        n_jets: Number of jets.
        progress: Show a progress bar counting jets.
        tree: Name of the TTree.

    Returns:
        The path written.
    """
    from hepml.io.atomic import check_writable
    from hepml.io.writing import write_tree

    check_writable(Path(out_path).parent)  # before generating
    branches, meta = generate_jet_arrays(config, n_jets, progress=progress)
    return write_tree(out_path, branches, tree=tree, metadata=meta)


def generate_mixture(
    configs: Sequence[JetGenerationConfig],
    n_jets: Sequence[int],
    out_path: str | os.PathLike,
    *,
    shuffle_seed: int | None = None,
    progress: bool = True,
    tree: str = "tree",
) -> Path:
    """Generate several classes of jets into one file, mixed in a fixed random order.

    Args:
        configs: One configuration per class (give them different seeds so that the
            classes use different random-number streams).
        n_jets: Number of jets of each class.
        out_path: Output ROOT file.
        shuffle_seed: Seed of the permutation that mixes the classes; None uses the first
            configuration's seed.
        progress: Show progress bars.
        tree: Name of the TTree.

    Returns:
        The path written. The metadata holds each class's metadata under ``"classes"``.
    """
    return write_mixture(
        generate_jet_arrays, configs, n_jets, out_path, unit="jet",
        generator="hepml.simulation.jets.generate_mixture", shuffle_seed=shuffle_seed,
        progress=progress, tree=tree,
    )
