"""``hepml generate``: make input data with Pythia 8 + FastJet.

``hepml generate jets`` writes boosted jets in the JetClass layout, one entry per jet;
``hepml generate events`` writes whole events as collections of reconstructed objects
(jets with b-tags, electrons, muons, photons, missing transverse momentum), one entry per
event; ``hepml generate hits`` writes the hits of charged particles in a barrel silicon
tracker (TrackML layout, with pile-up), one entry per event; ``hepml generate dqm`` writes a
detector-monitoring run, one entry per lumisection holding calorimeter and tracker
occupancy histograms accumulated from minimum-bias collisions, some with injected,
labelled faults.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``generate`` and its sub-subcommands on ``subparsers``."""
    parser = subparsers.add_parser(
        "generate",
        help="generate input data (jets, events, tracker hits or DQM runs from Pythia 8; "
        "calorimeter showers from the GFlash parametrisation)",
        description="Generate input data and write it as ROOT files.",
    )
    kinds = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    _add_jets(kinds)
    _add_events(kinds)
    _add_hits(kinds)
    _add_dqm(kinds)
    _add_showers(kinds)
    return parser


def _add_common_options(
    p: argparse.ArgumentParser,
    processes: tuple[str, ...],
    unit: str,
    *,
    sqrt_s: float,
    process_help: str,
    mixture: bool = True,
    batch_size: int = 100,
    batch_help: str = "events per Pythia.nextBatch call, for speed and memory only",
) -> None:
    """Add the options every Pythia generator takes.

    These are the processes and counts, output, seeds, workers, beam energy, shower
    switches and raw Pythia settings. With ``mixture=False`` one process and one count
    are taken.
    """
    from hepml.simulation.jets import MAX_SEED

    if mixture:
        p.add_argument("--process", nargs="+", choices=processes, default=[processes[0]],
                       help=f"process(es): {process_help}; several are mixed into one "
                       f"shuffled file (default: {processes[0]})")
        p.add_argument(f"--n-{unit}s", nargs="+", type=int, required=True, metavar="N",
                       help=f"number of {unit}s, one value for all processes or one per "
                       "process")
        seed_help = "worker i of process k uses Pythia seed (seed + k) * 1000 + i + 1"
    else:
        p.add_argument("--process", choices=processes, default=processes[0],
                       help=f"process: {process_help} (default: %(default)s)")
        p.add_argument(f"--n-{unit}s", type=int, required=True, metavar="N",
                       help=f"number of {unit}s")
        seed_help = "worker i uses Pythia seed seed * 1000 + i + 1"
    p.add_argument("--out", required=True, metavar="FILE.root", help="output ROOT file")
    p.add_argument("--seed", type=int, default=1,
                   help=f"master seed (0..{MAX_SEED}); {seed_help} (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel worker processes; the output depends on this number "
                   "(default: %(default)s)")
    p.add_argument("--sqrt-s", type=float, default=sqrt_s,
                   help="proton-proton centre-of-mass energy in GeV (default: %(default)s)")
    p.add_argument("--no-mpi", action="store_true",
                   help="switch off multiparton interactions (the underlying event)")
    p.add_argument("--no-isr", action="store_true", help="switch off initial-state radiation")
    p.add_argument("--no-fsr", action="store_true", help="switch off final-state radiation")
    p.add_argument("--tune", type=int, default=14,
                   help="Pythia Tune:pp number (default: %(default)s, Monash 2013)")
    p.add_argument("--set", dest="settings", action="append", default=[],
                   metavar='"Name:key = value"',
                   help="extra Pythia setting, applied last; repeat for several")
    p.add_argument("--batch-size", type=int, default=batch_size,
                   help=f"{batch_help} (default: %(default)s)")


def _pythia_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """Configuration fields shared by the generators, from the options above."""
    return {
        "sqrt_s": args.sqrt_s,
        "mpi": not args.no_mpi,
        "isr": not args.no_isr,
        "fsr": not args.no_fsr,
        "tune": args.tune,
        "extra_settings": tuple(args.settings),
        "n_workers": args.workers,
        "batch_size": args.batch_size,
    }


def _counts(processes: list[str], counts: list[int], flag: str) -> list[int]:
    """One count per process (a single value serves all); processes must be distinct."""
    from hepml.errors import ConfigError

    if len(set(processes)) != len(processes):
        raise ConfigError(f"--process lists a process twice: {' '.join(processes)}")
    if len(counts) == 1:
        counts = counts * len(processes)
    if len(counts) != len(processes):
        raise ConfigError(
            f"{flag} takes one value or one per process; got {len(counts)} values for "
            f"{len(processes)} processes"
        )
    if any(n < 1 for n in counts):
        raise ConfigError(f"{flag} must be positive; got {' '.join(map(str, counts))}")
    return counts


def _write(
    one: Callable[..., Any],
    mixture: Callable[..., Any],
    configs: list[Any],
    counts: list[int],
    args: argparse.Namespace,
    what: str,
) -> int:
    """Write one process with ``one`` or several mixed with ``mixture``; print the result."""
    progress = not os.environ.get("TQDM_DISABLE")
    if len(configs) == 1:
        path = one(configs[0], args.out, counts[0], progress=progress)
    else:
        path = mixture(configs, counts, args.out, shuffle_seed=args.seed, progress=progress)
    parts = ", ".join(f"{n} {c.process}" for c, n in zip(configs, counts, strict=True))
    print(f"wrote {sum(counts)} {what} ({parts}) to {path}")
    return 0


def _add_jets(kinds: Any) -> None:
    from hepml.simulation.jets import PROCESSES

    p = kinds.add_parser(
        "jets",
        help="boosted jets (QCD, top, W) in the JetClass layout",
        description=(
            "Generate proton-proton events with Pythia 8, cluster the visible final-state "
            "particles into anti-kt jets with FastJet, keep jets in a pT and |eta| window "
            "(signal jets truth-matched to the top or W and its decay quarks) and write "
            "them with JetClass branch names (jet_*, part_*, label_*) to a ROOT TTree "
            "named 'tree'. Several processes given together are mixed into one file in "
            "a fixed random order. The same arguments always give the same file content."
        ),
    )
    _add_common_options(
        p, PROCESSES, "jet", sqrt_s=14000.0,
        process_help="qcd (HardQCD:all, label_QCD), top (hadronic ttbar, label_Tbqq), "
        "w (W' -> WZ, W -> qq, Z -> nunu, label_Wqq)",
    )
    p.add_argument("--pt-min", type=float, default=550.0,
                   help="lowest jet pT in GeV (default: %(default)s)")
    p.add_argument("--pt-max", type=float, default=650.0,
                   help="highest jet pT in GeV, exclusive (default: %(default)s)")
    p.add_argument("--eta-max", type=float, default=2.0,
                   help="largest jet |eta| (default: %(default)s)")
    p.add_argument("--jet-r", type=float, default=0.8,
                   help="anti-kt radius parameter (default: %(default)s)")
    p.add_argument("--match-dr", type=float, default=0.8,
                   help="signal jets need the top/W and all its decay quarks within this "
                   "Delta R of the jet axis (default: %(default)s)")
    p.add_argument("--pthat-min", type=float, default=None,
                   help="lower cut on the hard-process pT in GeV, qcd and top only "
                   "(default: 400)")
    p.add_argument("--pthat-max", type=float, default=None,
                   help="upper cut on the hard-process pT in GeV, qcd and top only; "
                   "0 for none (default: 800)")
    p.add_argument("--wprime-mass", type=float, default=1300.0,
                   help="W' mass in GeV for process w; the W pT reaches about half of it "
                   "(default: %(default)s)")
    p.add_argument("--max-jets-per-event", type=int, default=2,
                   help="only this many leading jets of each event are candidates; 0 for "
                   "all (default: %(default)s)")
    p.add_argument("--max-constituents", type=int, default=None, metavar="N",
                   help="store at most N leading-pT constituents per jet (default: all)")
    p.set_defaults(func=_run_jets)


def _run_jets(args: argparse.Namespace) -> int:
    from hepml.simulation.jets import JetGenerationConfig, generate_jets, generate_mixture

    processes = list(args.process)
    counts = _counts(processes, list(args.n_jets), "--n-jets")
    configs = [
        JetGenerationConfig(
            process=proc,
            pthat_min=args.pthat_min,
            pthat_max=args.pthat_max,
            jet_r=args.jet_r,
            jet_pt_min=args.pt_min,
            jet_pt_max=args.pt_max,
            jet_eta_max=args.eta_max,
            match_dr=args.match_dr,
            max_jets_per_event=args.max_jets_per_event or None,
            max_constituents=args.max_constituents,
            wprime_mass=args.wprime_mass,
            seed=args.seed + k,
            **_pythia_kwargs(args),
        )
        for k, proc in enumerate(processes)
    ]
    return _write(generate_jets, generate_mixture, configs, counts, args, "jets")


def _add_events(kinds: Any) -> None:
    from hepml.simulation.events import PROCESSES, EventGenerationConfig

    d = EventGenerationConfig()
    p = kinds.add_parser(
        "events",
        help="whole events as reconstructed objects (ttbar, W/Z + jet, H -> 4 leptons)",
        description=(
            "Generate proton-proton events with Pythia 8 and reduce each to reconstructed "
            "objects built from its visible final-state particles: isolated electrons, "
            "muons and photons, anti-kt jets (FastJet) of the remaining particles with a "
            "b-tag from b-hadrons near the jet axis, and the missing transverse momentum. "
            "Writes one entry per event (every event, also one with no object) to a ROOT "
            "TTree named 'tree': jet_*, electron_*, muon_*, photon_* collections sorted by "
            "pT, met_px, met_py and one-hot label_<process> flags. Several processes given "
            "together are mixed into one file in a fixed random order. The same arguments "
            "always give the same file content."
        ),
    )
    _add_common_options(
        p, PROCESSES, "event", sqrt_s=d.sqrt_s,
        process_help="ttbar (inclusive top pairs), wjets (W + jet, W -> e/mu/tau nu), "
        "zjets (Z/gamma* + jet, Z -> ee/mumu/tautau, 60-120 GeV), higgs (gg -> H -> ZZ* "
        "-> 4 e/mu)",
    )
    p.add_argument("--pthat-min", type=float, default=d.pthat_min,
                   help="lower cut on the hard-process pT in GeV, wjets and zjets only "
                   "(default: %(default)s)")
    for obj, what in (("electron", "electrons"), ("muon", "muons"), ("photon", "photons"),
                      ("jet", "jets")):
        p.add_argument(f"--{obj}-pt-min", type=float, default=getattr(d, f"{obj}_pt_min"),
                       help=f"{what} need pT above this, GeV (default: %(default)s)")
        p.add_argument(f"--{obj}-eta-max", type=float, default=getattr(d, f"{obj}_eta_max"),
                       help=f"{what} need |eta| below this (default: %(default)s)")
    p.add_argument("--iso-dr", type=float, default=d.iso_dr,
                   help="isolation cone radius Delta R (default: %(default)s)")
    p.add_argument("--iso-max", type=float, default=d.iso_max,
                   help="electrons, muons and photons need (scalar pT sum of the other "
                   "visible particles in the cone) / pT below this (default: %(default)s)")
    p.add_argument("--jet-r", type=float, default=d.jet_r,
                   help="anti-kt radius parameter (default: %(default)s)")
    p.add_argument("--btag-dr", type=float, default=d.btag_dr,
                   help="a jet is b-tagged with a b-hadron within this Delta R of its axis "
                   "(default: %(default)s)")
    p.add_argument("--btag-hadron-pt-min", type=float, default=d.btag_hadron_pt_min,
                   help="only b-hadrons above this pT in GeV tag jets (default: %(default)s)")
    p.add_argument("--met-eta-max", type=float, default=d.met_eta_max,
                   help="particles with |eta| below this enter the missing transverse "
                   "momentum (default: %(default)s)")
    p.set_defaults(func=_run_events)


def _run_events(args: argparse.Namespace) -> int:
    from hepml.simulation.events import (
        EventGenerationConfig,
        generate_event_mixture,
        generate_events,
    )

    processes = list(args.process)
    counts = _counts(processes, list(args.n_events), "--n-events")
    cuts = ("pthat_min", "electron_pt_min", "electron_eta_max", "muon_pt_min", "muon_eta_max",
            "photon_pt_min", "photon_eta_max", "jet_pt_min", "jet_eta_max", "iso_dr",
            "iso_max", "jet_r", "btag_dr", "btag_hadron_pt_min", "met_eta_max")
    configs = [
        EventGenerationConfig(
            process=proc,
            seed=args.seed + k,
            **{name: getattr(args, name) for name in cuts},
            **_pythia_kwargs(args),
        )
        for k, proc in enumerate(processes)
    ]
    return _write(generate_events, generate_event_mixture, configs, counts, args, "events")


def _add_hits(kinds: Any) -> None:
    from hepml.simulation.tracker import PROCESSES, HitSimulationConfig

    d = HitSimulationConfig()
    p = kinds.add_parser(
        "hits",
        help="hits of charged particles in a barrel silicon tracker (TrackML layout)",
        description=(
            "Generate proton-proton events with Pythia 8 (particles with c*tau > 10 mm "
            "stable), overlay Poisson-distributed minimum-bias pile-up interactions, each "
            "at its own primary vertex, and propagate every charged final-state particle "
            "with pT and |eta| above the cuts as a helix in a solenoidal field through the "
            "ten barrel layers of the TrackML detector: multiple scattering (Highland) in "
            "each layer, no energy loss, Gaussian hit smearing, per-layer inefficiency and "
            "random noise hits. Writes one entry per event to a ROOT TTree named 'hits': "
            "hit_* (positions in mm, TrackML volume/layer/module ids, particle_id, true "
            "momentum at the hit), particle_* (truth of the propagated particles), vertex_* "
            "and n_pileup. The geometry and all settings are stored in the file's metadata. "
            "The same arguments always give the same file content."
        ),
    )
    _add_common_options(
        p, PROCESSES, "event", sqrt_s=d.sqrt_s, mixture=False, batch_size=d.batch_size,
        batch_help="events per Pythia.nextBatch call and per vectorised propagation; the "
        "Pythia events do not depend on it, the detector simulation's random numbers do",
        process_help="ttbar (inclusive top pairs), minbias (SoftQCD:nonDiffractive)",
    )
    p.add_argument("--pileup", type=float, default=d.pileup, metavar="MU",
                   help="mean number of minimum-bias interactions overlaid on each event "
                   "(Poisson; default: %(default)s)")
    p.add_argument("--field", type=float, default=d.b_field, metavar="TESLA",
                   help="solenoid field along +z in tesla; 0 for straight tracks "
                   "(default: %(default)s)")
    p.add_argument("--pt-min", type=float, default=d.pt_min,
                   help="charged particles need pT above this, GeV (default: %(default)s)")
    p.add_argument("--eta-max", type=float, default=d.eta_max,
                   help="charged particles need |eta| below this (default: %(default)s)")
    p.add_argument("--geometry", metavar="FILE.json", default=None,
                   help='tracker layers as JSON, {"layers": [{"radius": ..., "half_length": '
                   '..., "volume_id": ..., "layer_id": ..., "sigma_rphi": ..., "sigma_z": '
                   '..., "x_over_x0": ..., "inefficiency": ..., "noise": ..., "n_phi": ..., '
                   '"n_z": ...}, ...]} in mm, innermost first (default: the TrackML barrel)')
    p.add_argument("--noise-per-layer", type=int, default=None, metavar="N",
                   help="random noise hits per layer and event, for every layer (default: "
                   "the geometry's, 20)")
    p.add_argument("--inefficiency", type=float, default=None, metavar="F",
                   help="probability that a true hit is lost, for every layer (default: "
                   "the geometry's, 0.01)")
    p.add_argument("--no-scattering", action="store_true",
                   help="switch off multiple scattering in the layers")
    p.add_argument("--no-smearing", action="store_true",
                   help="store the true crossing points as the measured hit positions")
    p.add_argument("--vertex-sigma-z", type=float, default=d.vertex_sigma_z, metavar="MM",
                   help="width of the primary-vertex z distribution in mm "
                   "(default: %(default)s)")
    p.add_argument("--vertex-sigma-xy", type=float, default=d.vertex_sigma_xy, metavar="MM",
                   help="width of the primary-vertex x and y distributions in mm "
                   "(default: %(default)s)")
    p.set_defaults(func=_run_hits)


def _run_hits(args: argparse.Namespace) -> int:
    from hepml.errors import ConfigError
    from hepml.simulation.tracker import HitSimulationConfig, TrackerGeometry, generate_hits

    if args.n_events < 1:
        raise ConfigError(f"--n-events must be positive; got {args.n_events}")
    geometry = (TrackerGeometry.from_json(args.geometry) if args.geometry
                else TrackerGeometry.default())
    changes: dict[str, Any] = {}
    if args.noise_per_layer is not None:
        changes["noise"] = args.noise_per_layer
    if args.inefficiency is not None:
        changes["inefficiency"] = args.inefficiency
    if changes:
        geometry = geometry.with_layers(**changes)
    config = HitSimulationConfig(
        process=args.process,
        pileup=args.pileup,
        b_field=args.field,
        pt_min=args.pt_min,
        eta_max=args.eta_max,
        geometry=geometry,
        multiple_scattering=not args.no_scattering,
        smearing=not args.no_smearing,
        vertex_sigma_z=args.vertex_sigma_z,
        vertex_sigma_xy=args.vertex_sigma_xy,
        seed=args.seed,
        **_pythia_kwargs(args),
    )
    progress = not os.environ.get("TQDM_DISABLE")
    path = generate_hits(config, args.out, args.n_events, progress=progress)
    print(f"wrote {args.n_events} {config.process} events (pile-up mu = {config.pileup:g}) "
          f"to {path}")
    return 0


def _add_dqm(kinds: Any) -> None:
    from hepml.simulation.dqm import FAULTS, MAX_SEED, DQMConfig

    d = DQMConfig()
    p = kinds.add_parser(
        "dqm",
        help="a detector-monitoring run: lumisections of occupancy histograms with faults",
        description=(
            "Simulate a data-quality-monitoring run. A pool of minimum-bias collisions "
            "(Pythia 8, SoftQCD:inelastic) is generated once and reduced to calorimeter "
            "deposits and tracker hits (TrackML barrel, 2 T). Each lumisection records "
            "Poisson-distributed bunch crossings, each holding Poisson(mu) collisions drawn "
            "from the pool, rotated in phi and mirrored in eta at random; mu decays "
            "exponentially over the run. Histograms per lumisection: calo_occupancy "
            "(eta x phi cells, crossings in which the cell's transverse energy passed the "
            "threshold) and tracker_occupancy (layer x phi, hits). A fraction of the "
            "lumisections carries injected faults, in episodes of 1 to "
            "--max-episode-length consecutive lumisections: "
            f"{', '.join(FAULTS[1:])}; the fault code and the touched channels "
            "(calo_occupancy_fault, tracker_occupancy_fault) are stored with each "
            "lumisection. Writes one entry per lumisection to a ROOT TTree named 'lumis'; "
            "the histogram axes, the fault episodes and all settings are in the file's "
            "metadata. The same arguments always give the same file content."
        ),
    )
    p.add_argument("--n-lumis", type=int, required=True, metavar="N",
                   help="number of lumisections")
    p.add_argument("--out", required=True, metavar="FILE.root", help="output ROOT file")
    p.add_argument("--seed", type=int, default=d.seed,
                   help=f"master seed (0..{MAX_SEED}); Pythia worker i uses seed * 1000 + i + 1, "
                   "the detector simulation, the fault schedule and the lumisections "
                   "use numpy generators seeded from it (default: %(default)s)")
    p.add_argument("--run", type=int, default=d.run, help="run number (default: %(default)s)")
    p.add_argument("--pool-size", type=int, default=d.pool_size, metavar="N",
                   help="minimum-bias collisions generated for the pool "
                   "(default: %(default)s)")
    p.add_argument("--mean-crossings", type=float, default=d.mean_crossings, metavar="N",
                   help="mean number of bunch crossings recorded per lumisection, Poisson "
                   "(default: %(default)s)")
    p.add_argument("--fixed-crossings", action="store_true",
                   help="record exactly --mean-crossings crossings in every lumisection")
    p.add_argument("--pileup-start", type=float, default=d.pileup_start, metavar="MU",
                   help="pile-up mu of the first lumisection (default: %(default)s)")
    p.add_argument("--pileup-end", type=float, default=d.pileup_end, metavar="MU",
                   help="pile-up mu of the last lumisection, exponential decay in between; "
                   "equal to --pileup-start for a constant mu (default: %(default)s)")
    p.add_argument("--fault-fraction", type=float, default=d.fault_fraction, metavar="F",
                   help="fraction of faulty lumisections, 0 to 1 (default: %(default)s)")
    p.add_argument("--max-episode-length", type=int, default=d.max_episode_length,
                   metavar="N",
                   help="longest fault episode in lumisections (default: %(default)s)")
    p.add_argument("--calo-threshold", type=float, default=d.calo_threshold, metavar="GEV",
                   help="a calorimeter cell fires when its transverse energy summed over a "
                   "crossing exceeds this (default: %(default)s)")
    p.add_argument("--workers", type=int, default=d.n_workers,
                   help="parallel processes generating the pool; the output depends on this "
                   "number (default: %(default)s)")
    p.add_argument("--sqrt-s", type=float, default=d.sqrt_s,
                   help="proton-proton centre-of-mass energy in GeV (default: %(default)s)")
    p.add_argument("--no-mpi", action="store_true",
                   help="switch off multiparton interactions (the underlying event)")
    p.add_argument("--no-isr", action="store_true", help="switch off initial-state radiation")
    p.add_argument("--no-fsr", action="store_true", help="switch off final-state radiation")
    p.add_argument("--tune", type=int, default=d.tune,
                   help="Pythia Tune:pp number (default: %(default)s, Monash 2013)")
    p.add_argument("--set", dest="settings", action="append", default=[],
                   metavar='"Name:key = value"',
                   help="extra Pythia setting, applied last; repeat for several")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help="collisions per Pythia.nextBatch call, for speed and memory only "
                   "(default: %(default)s)")
    p.set_defaults(func=_run_dqm)


def _run_dqm(args: argparse.Namespace) -> int:
    from hepml.io.writing import read_metadata
    from hepml.simulation.dqm import FAULTS, DQMConfig, generate_dqm

    config = DQMConfig(
        n_lumis=args.n_lumis,
        run=args.run,
        pool_size=args.pool_size,
        mean_crossings=args.mean_crossings,
        poisson_crossings=not args.fixed_crossings,
        pileup_start=args.pileup_start,
        pileup_end=args.pileup_end,
        fault_fraction=args.fault_fraction,
        max_episode_length=args.max_episode_length,
        calo_threshold=args.calo_threshold,
        seed=args.seed,
        **_pythia_kwargs(args),
    )
    progress = not os.environ.get("TQDM_DISABLE")
    path = generate_dqm(config, args.out, progress=progress)
    counts = read_metadata(path)["lumis_per_fault"]
    parts = ", ".join(f"{counts[name]} {name}" for name in FAULTS)
    print(f"wrote {config.n_lumis} lumisections of run {config.run} ({parts}) to {path}")
    return 0


def _add_showers(kinds: Any) -> None:
    from hepml.simulation.showers import ShowerSimulationConfig

    d = ShowerSimulationConfig()
    p = kinds.add_parser(
        "showers",
        help="calorimeter showers in the CaloGAN calorimeter (GFlash parametrisation)",
        description=(
            "Simulate showers of single particles in CaloGAN's calorimeter: a 480 mm cube of "
            "lead (2 mm) and liquid argon (4 mm) read out in three layers of 3x96, 12x12 and "
            "12x6 cells, 90, 347 and 43 mm deep, with one overflow value per layer (energy "
            "outside the layer's cells). Electromagnetic showers (eplus, eminus, gamma) follow "
            "the GFlash parametrisation (homogeneous-medium version in the effective Pb/LAr "
            "medium by default): correlated log-normal Gamma-profile parameters, the "
            "two-component radial profile, energy spots with sampling fluctuations; a photon "
            "first converts after an exponential depth of mean 9/7 X0. Charged pions (piplus, "
            "piminus) use a hadronic parametrisation (see docs/calogan.md). Incident energies "
            "are uniform in [--energy-min, --energy-max] GeV or fixed with --energy. Writes "
            "the tree 'showers': energy (GeV), layer_0..2 and overflow (MeV), particle (PDG "
            "id), with all settings in the file's metadata. The same arguments always give "
            "the same file."
        ),
    )
    p.add_argument("--n", type=int, required=True, help="number of showers")
    p.add_argument("--out", required=True, metavar="FILE.root", help="output ROOT file")
    p.add_argument("--particle", action="append", dest="particles", metavar="NAME",
                   help="eplus, eminus, gamma, piplus or piminus; repeat to mix (each shower "
                   f"draws one uniformly; default: {d.particles[0]})")
    p.add_argument("--energy-min", type=float, default=d.energy_min, metavar="GEV",
                   help="lowest incident energy (default: %(default)s)")
    p.add_argument("--energy-max", type=float, default=d.energy_max, metavar="GEV",
                   help="highest incident energy (default: %(default)s)")
    p.add_argument("--energy", type=float, metavar="GEV",
                   help="one incident energy for all showers (overrides the range)")
    p.add_argument("--position-spread", type=float, default=d.position_spread_mm, metavar="MM",
                   help="impact point uniform in a square of this half-width around the centre "
                   "(default: %(default)s)")
    p.add_argument("--angle-max", type=float, default=d.angle_max_deg, metavar="DEG",
                   help="polar angle of incidence uniform in [0, DEG], azimuth uniform "
                   "(default: %(default)s, normal incidence)")
    p.add_argument("--stochastic-term", type=float, default=d.stochastic_term, metavar="A",
                   help="sampling resolution a in a/sqrt(E/GeV) (default: %(default)s)")
    p.add_argument("--sampling-corrections", action="store_true",
                   help="use GFlash's sampling-calorimeter version of the electromagnetic "
                   "profiles instead of the homogeneous-medium version in the effective Pb/LAr "
                   "medium (the maximum moves 0.43 X0 forward)")
    p.add_argument("--seed", type=int, default=d.seed, help="seed (default: %(default)s)")
    p.set_defaults(func=_run_showers)


def _run_showers(args: argparse.Namespace) -> int:
    from hepml.io.atomic import check_writable
    from hepml.io.calo import write_showers
    from hepml.simulation.showers import ShowerSimulationConfig, simulate_showers

    config = ShowerSimulationConfig(
        n_showers=args.n, particles=tuple(args.particles or ShowerSimulationConfig().particles),
        energy_min=args.energy_min, energy_max=args.energy_max, energy=args.energy,
        position_spread_mm=args.position_spread, angle_max_deg=args.angle_max,
        stochastic_term=args.stochastic_term, seed=args.seed,
        sampling_corrections=args.sampling_corrections)
    check_writable(os.path.dirname(args.out) or ".")  # before simulating
    showers, meta = simulate_showers(config, progress=not os.environ.get("TQDM_DISABLE"))
    path = write_showers(args.out, showers, metadata=meta)
    e = (f"{config.energy:g} GeV" if config.energy is not None
         else f"{config.energy_min:g}-{config.energy_max:g} GeV")
    print(f"wrote {len(showers)} showers ({', '.join(config.particles)}, {e}) to {path}")
    return 0
