"""``hepml generate``: make input data. ``hepml generate jets`` runs Pythia 8 + FastJet."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``generate`` and its sub-subcommands on ``subparsers``."""
    parser = subparsers.add_parser(
        "generate",
        help="generate input data (jets from Pythia 8 + FastJet)",
        description="Generate input data and write it as ROOT files.",
    )
    kinds = parser.add_subparsers(dest="what", metavar="WHAT", required=True)
    _add_jets(kinds)
    return parser


def _add_jets(kinds: Any) -> None:
    from hepml.simulation.jets import MAX_SEED, PROCESSES

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
    p.add_argument("--process", nargs="+", choices=PROCESSES, default=["qcd"],
                   help="process(es): qcd (HardQCD:all, label_QCD), top (hadronic ttbar, "
                   "label_Tbqq), w (W' -> WZ, W -> qq, Z -> nunu, label_Wqq); several are "
                   "mixed into one shuffled file (default: qcd)")
    p.add_argument("--n-jets", nargs="+", type=int, required=True, metavar="N",
                   help="number of jets, one value for all processes or one per process")
    p.add_argument("--out", required=True, metavar="FILE.root", help="output ROOT file")
    p.add_argument("--seed", type=int, default=1,
                   help=f"master seed (0..{MAX_SEED}); worker i of process k uses Pythia "
                   "seed (seed + k) * 1000 + i + 1 (default: %(default)s)")
    p.add_argument("--workers", type=int, default=1,
                   help="parallel worker processes; the output depends on this number "
                   "(default: %(default)s)")
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
    p.add_argument("--sqrt-s", type=float, default=14000.0,
                   help="proton-proton centre-of-mass energy in GeV (default: %(default)s)")
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
    p.add_argument("--no-mpi", action="store_true",
                   help="switch off multiparton interactions (the underlying event)")
    p.add_argument("--no-isr", action="store_true", help="switch off initial-state radiation")
    p.add_argument("--no-fsr", action="store_true", help="switch off final-state radiation")
    p.add_argument("--tune", type=int, default=14,
                   help="Pythia Tune:pp number (default: %(default)s, Monash 2013)")
    p.add_argument("--set", dest="settings", action="append", default=[],
                   metavar='"Name:key = value"',
                   help="extra Pythia setting, applied last; repeat for several")
    p.add_argument("--batch-size", type=int, default=100,
                   help="events per Pythia.nextBatch call, for speed and memory only "
                   "(default: %(default)s)")
    p.set_defaults(func=_run_jets)


def _run_jets(args: argparse.Namespace) -> int:
    import os

    from hepml.errors import ConfigError
    from hepml.simulation.jets import JetGenerationConfig, generate_jets, generate_mixture

    processes = list(args.process)
    if len(set(processes)) != len(processes):
        raise ConfigError(f"--process lists a process twice: {' '.join(processes)}")
    counts = list(args.n_jets)
    if len(counts) == 1:
        counts = counts * len(processes)
    if len(counts) != len(processes):
        raise ConfigError(
            f"--n-jets takes one value or one per process; got {len(counts)} values for "
            f"{len(processes)} processes"
        )
    if any(n < 1 for n in counts):
        raise ConfigError(f"--n-jets must be positive; got {' '.join(map(str, counts))}")
    configs = [
        JetGenerationConfig(
            process=proc,
            sqrt_s=args.sqrt_s,
            pthat_min=args.pthat_min,
            pthat_max=args.pthat_max,
            jet_r=args.jet_r,
            jet_pt_min=args.pt_min,
            jet_pt_max=args.pt_max,
            jet_eta_max=args.eta_max,
            match_dr=args.match_dr,
            max_jets_per_event=args.max_jets_per_event or None,
            max_constituents=args.max_constituents,
            mpi=not args.no_mpi,
            isr=not args.no_isr,
            fsr=not args.no_fsr,
            tune=args.tune,
            wprime_mass=args.wprime_mass,
            extra_settings=tuple(args.settings),
            seed=args.seed + k,
            n_workers=args.workers,
            batch_size=args.batch_size,
        )
        for k, proc in enumerate(processes)
    ]
    progress = not os.environ.get("TQDM_DISABLE")
    if len(configs) == 1:
        path = generate_jets(configs[0], args.out, counts[0], progress=progress)
    else:
        path = generate_mixture(configs, counts, args.out, shuffle_seed=args.seed,
                                progress=progress)
    what = ", ".join(f"{n} {p}" for p, n in zip(processes, counts))
    print(f"wrote {sum(counts)} jets ({what}) to {path}")
    return 0
