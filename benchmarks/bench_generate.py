"""Events/s and jets/s of ``hepml.simulation.jets`` for one worker, per process.

Usage::

    python benchmarks/bench_generate.py [--n-jets 300] [--process qcd top w] [--no-mpi] \
        [--json out.json]

Prints one line per process: Pythia initialisation time, events generated per second
(generation + clustering + selection, one worker, initialisation excluded), selected jets
per second and the selection efficiency (jets per event). ``--json`` writes the rows of
``run_all.py`` (events/s and jets/s per process; there is no baseline).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
try:
    import hepml  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from _results import row, write_rows  # noqa: E402


def main() -> None:
    """Run the benchmark and print the results (one JSON line per process)."""
    from hepml.simulation.jets import JetGenerationConfig, generate_jet_arrays

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-jets", type=int, default=300,
                        help="jets generated per process (default: %(default)s)")
    parser.add_argument("--process", nargs="+", default=["qcd", "top"],
                        help="processes to time: qcd, top, w (default: %(default)s)")
    parser.add_argument("--no-mpi", action="store_true", help="switch off MPI")
    parser.add_argument("--seed", type=int, default=101,
                        help="master seed of the generation (default: %(default)s)")
    parser.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = parser.parse_args()
    rows = []
    for proc in args.process:
        cfg = JetGenerationConfig(process=proc, seed=args.seed, mpi=not args.no_mpi)
        _, meta = generate_jet_arrays(cfg, args.n_jets, progress=False)
        w = meta["workers"][0]
        run = w["seconds"] - w["init_seconds"]
        print(json.dumps({
            "process": proc,
            "mpi": cfg.mpi,
            "n_jets": args.n_jets,
            "init_s": round(w["init_seconds"], 2),
            "events_per_s": round(w["n_events_generated"] / run, 1),
            "jets_per_s": round(w["n_jets_selected_total"] / run, 1),
            "efficiency_jets_per_event": round(meta["selection_efficiency"], 4),
            "sigma_gen_pb": meta["sigma_gen_mb"] * 1e9,
        }))
        what = f"Pythia 8 + FastJet, {proc}{'' if cfg.mpi else ', no MPI'}, one worker"
        size = f"{args.n_jets:,} jets"
        note = (f"initialisation {w['init_seconds']:.1f} s excluded; "
                f"{meta['selection_efficiency']:.3f} selected jets per event")
        rows.append(row("generate", f"{what}: events", size, "events/s",
                        w["n_events_generated"] / run, note=note))
        rows.append(row("generate", f"{what}: selected jets", size, "jets/s",
                        w["n_jets_selected_total"] / run))
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
