"""``hepml simulate``: generate calorimeter showers on demand with a trained generator."""

from __future__ import annotations

import argparse
import os

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``simulate``."""
    p = sub.add_parser(
        "simulate",
        help="generate calorimeter showers with a trained CaloGAN or CaloFlow (fast "
        "simulation)",
        description="Generate N showers with the generator of a calosim run (hepml run "
        "workflows/calogan.yaml or workflows/caloflow.yaml), in batches, on the best device "
        "(cuda, then mps, then cpu). "
        "The incident energy is fixed (--energy) or drawn uniformly from a range (default: "
        "the range the generator was trained on). An energy outside the trained range gives "
        "a warning, then the showers are generated. Output by extension: .root (hepml's "
        "CaloGAN layout: energy in GeV, layer_0..2 and overflow in MeV, particle), .h5 or "
        ".hdf5 (CaloGAN HDF5), .challenge.h5 (calorimeter-challenge HDF5, MeV). The "
        "generator makes no overflow; it is written as zeros.",
    )
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint of a calosim run, e.g. runs/caloflow-.../checkpoint_best.pt")
    p.add_argument("--n", type=int, required=True, help="number of showers")
    p.add_argument("--out", required=True, help="output file (.root, .h5, .challenge.h5)")
    energy = p.add_mutually_exclusive_group()
    energy.add_argument("--energy", type=float, metavar="GEV", help="incident energy in GeV")
    energy.add_argument("--energy-range", type=float, nargs=2, metavar=("MIN", "MAX"),
                        help="draw incident energies uniformly in [MIN, MAX] GeV "
                        "(default: the trained range)")
    p.add_argument("--particle", help="eplus, gamma, piplus... or a PDG id (needed when the "
                   "generator knows several particles)")
    p.add_argument("--batch-size", type=int, default=1024,
                   help="showers per generator call (default: %(default)s)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1 ...")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the latent vectors and energies (default: %(default)s)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    import logging

    from hepml.tasks.calosim import simulate

    path, summary = simulate(
        args.checkpoint, args.out, n=args.n, energy=args.energy,
        energy_range=tuple(args.energy_range) if args.energy_range else None,
        particle=args.particle, batch_size=args.batch_size, device=args.device,
        seed=args.seed, progress=not os.environ.get("TQDM_DISABLE"),
        warn=logging.getLogger("hepml.simulate").warning)
    e = (f"{summary['energy_min']:g} GeV" if summary["energy_min"] == summary["energy_max"]
         else f"{summary['energy_min']:.3g}-{summary['energy_max']:.3g} GeV")
    print(f"wrote {summary['n']} showers (particle {summary['particle']}, {e}) to {path} "
          f"in {summary['seconds']:.2f} s ({summary['showers_per_s']:,.0f} showers/s on "
          f"{summary['device']})")
    return 0
