"""Training throughput under torchrun (DistributedDataParallel, gloo) against one process.

Usage::

    python benchmarks/bench_torchrun.py [--workflow workflows/top_tagging_cnn.yaml] \
        [--epochs 2] [--nproc 2] [--baselines one threads] [--json out.json]

Runs the workflow in fresh processes, each with ``--set training.epochs=EPOCHS``:

(a) ``python -m torch.distributed.run --standalone --nproc-per-node NPROC -m hepml -q run
    WORKFLOW --set training.num_threads=1``: NPROC ranks of one thread each;
(b) ``python -m hepml -q run WORKFLOW --set training.num_threads=1``: one process, one
    thread -- the baseline;
(c) the same with ``training.num_threads=NPROC``: one process using as many cores as the
    ranks of (a) (left out with ``--baselines one``).

The throughput is ``train_items_per_s`` of the last epoch in the run's
``checkpoint_last.pt`` (``history``): training entries of all ranks per second of the
epoch, the chunks already built in memory (``data.cache``) from the first epoch on. The
wall time and the peak memory (summed RSS of the process tree) of each command are
printed too. On a machine whose cores are shared the ranks compete for them: expect
little or no gain from two ranks on two busy cores. ``--json`` writes the rows of
``run_all.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
from pathlib import Path

import torch
from _memory import run_measured
from _results import row, write_rows

ROOT = Path(__file__).resolve().parents[1]


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    return env


def train(launcher: list[str], args: argparse.Namespace, threads: int, runs: Path) -> dict:
    """One training run; its last-epoch throughput, wall time, peak memory and entries."""
    cmd = [*launcher, "-q", "run", args.workflow, "--set", f"training.epochs={args.epochs}",
           "--set", f"training.num_threads={threads}", "--runs-dir", str(runs),
           *(x for s in args.set for x in ("--set", s))]
    rc, out, err, wall, peak = run_measured(cmd, _env(), cwd=ROOT)
    if rc != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise SystemExit(f"{' '.join(cmd)} failed (exit code {rc}):\n{tail}")
    run_dir = Path(out.split("run directory:")[1].split()[0])
    state = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)
    last = state["history"][-1]
    return {"items_per_s": last["train_items_per_s"], "wall": wall, "peak": peak,
            "epochs": len(state["history"]), "command": cmd}


def main(argv: list[str] | None = None) -> int:
    """Run the three trainings and print the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--workflow", default="workflows/top_tagging_cnn.yaml",
                   help="workflow trained, relative to the checkout (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=2,
                   help="training.epochs of every run (default: %(default)s)")
    p.add_argument("--nproc", type=int, default=2,
                   help="ranks of the torchrun training (default: %(default)s)")
    p.add_argument("--baselines", nargs="+", choices=("one", "threads"),
                   default=["one", "threads"],
                   help="which of (b) and (c) to run (default: %(default)s)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="further workflow overrides for all three runs (repeatable; "
                   "default: none)")
    p.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = p.parse_args(argv)
    python = [sys.executable]
    runs = {}
    with tempfile.TemporaryDirectory(prefix="hepml-bench-torchrun-") as tmp:
        runs["ddp"] = train([*python, "-m", "torch.distributed.run", "--standalone",
                             "--nproc-per-node", str(args.nproc), "-m", "hepml"],
                            args, 1, Path(tmp) / "ddp")
        runs["one"] = train([*python, "-m", "hepml"], args, 1, Path(tmp) / "one")
        if "threads" in args.baselines:
            runs["threads"] = train([*python, "-m", "hepml"], args, args.nproc,
                                    Path(tmp) / "threads")
    labels = {"ddp": f"torchrun, {args.nproc} ranks x 1 thread",
              "one": "1 process, 1 thread (baseline)",
              "threads": f"1 process, {args.nproc} threads"}
    print(f"{Path(args.workflow).name}, {args.epochs} epochs; {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f}")
    print(f"{'training':<36}{'jets/s (last epoch)':>20}{'vs baseline':>13}{'wall s':>8}"
          f"{'peak MB':>9}")
    base = runs["one"]["items_per_s"]
    for key, r in runs.items():
        print(f"{labels[key]:<36}{r['items_per_s']:>20.0f}{r['items_per_s'] / base:>13.2f}"
              f"{r['wall']:>8.0f}{r['peak']:>9.0f}")
    size = f"{Path(args.workflow).stem}, {args.epochs} epochs"
    note = (f"last epoch's train_items_per_s; wall {runs['ddp']['wall']:.0f} s vs "
            f"{runs['one']['wall']:.0f} s; peak {runs['ddp']['peak']:.0f} MB vs "
            f"{runs['one']['peak']:.0f} MB (process trees)")
    rows = [row("torchrun", f"training, {labels['ddp']}", size, "jets/s",
                runs["ddp"]["items_per_s"], labels["one"].replace(" (baseline)", ""), base,
                note=note)]
    if "threads" in runs:
        rows.append(row("torchrun", f"training, {labels['ddp']}", size, "jets/s",
                        runs["ddp"]["items_per_s"], labels["threads"],
                        runs["threads"]["items_per_s"]))
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
