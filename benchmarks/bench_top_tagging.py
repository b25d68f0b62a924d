"""Top tagging with the jet-image CNN at a chosen size, next to the published CNN figures.

Generates (once, cached) a top-vs-QCD sample with ``hepml generate jets`` outside the
repository, trains ``workflows/top_tagging_cnn.yaml`` on it, and prints AUC and 1/eps_B at
eps_S = 0.3 and 0.5 beside the jet-image CNN of the top-tagging comparison
(arXiv:1902.09914, Table 1). The published numbers come from 1.2 M training jets with
a Delphes detector simulation; this run is particle level and far smaller, so the
comparison shows where a CPU-sized training stands, not a like-for-like reproduction.

Usage::

    python benchmarks/bench_top_tagging.py --jets-per-class 15000 --cache /tmp/hepml-bench
    python benchmarks/bench_top_tagging.py --file data_samples/top_qcd_jets.root --epochs 3 \
        --cache /tmp/hepml-bench --json out.json

``--file`` trains on an existing sample instead of generating one. ``--json`` writes the
rows of ``run_all.py``: AUC and 1/eps_B at eps_S = 0.3 beside the published figures
(quoted, not measured), and the training throughput of the last epoch (jets/s).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

from _results import row, write_rows

ROOT = Path(__file__).resolve().parents[1]

# arXiv:1902.09914, Table 1, "CNN" row (image-based tagger); 1.2 M training jets.
PUBLISHED = {"tagger": "CNN (arXiv:1902.09914)", "auc": 0.981, "rejection@0.3": 914.0,
             "training jets": 1_200_000}


def format_rejection(metrics: dict, wp: str) -> str:
    """1/eps_B ± its error at eps_S = ``wp`` from a run's ``metrics.json``.

    No test background jet passing the cut gives an infinite rejection, stored as ``null``
    (with ``infinite: true``); it is shown as a lower bound, ``> N`` with N the test
    background jets (eps_B < 1/N), or ``inf`` when N is not recorded.
    """
    entry = metrics["rejection"][wp]
    value, error = entry.get("value"), entry.get("uncertainty")
    if value is None or not math.isfinite(value):
        n = metrics.get("n_background")
        return f"> {n} (no background passes)" if n else "inf (no background passes)"
    if error is None or not math.isfinite(error):
        return f"{value:.0f}"
    return f"{value:.0f} ± {error:.0f}"


def table_rows(metrics: dict) -> list[tuple[str, ...]]:
    """The printed table: header, this run (from its ``metrics.json``), the published CNN."""
    m = metrics
    return [
        ("tagger", "training jets", "AUC", "1/eps_B @ eps_S=0.3", "1/eps_B @ eps_S=0.5"),
        ("hepml CNN (this run)", f"{m['training']['n_train']}",
         f"{m['auc']:.4f} [{m['auc_ci'][0]:.4f}, {m['auc_ci'][1]:.4f}]",
         format_rejection(m, "0.3"), format_rejection(m, "0.5")),
        (PUBLISHED["tagger"], f"{PUBLISHED['training jets']}", f"{PUBLISHED['auc']:.3f}",
         f"{PUBLISHED['rejection@0.3']:.0f}", "-"),
    ]


def main() -> int:
    """Run the benchmark from the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--jets-per-class", type=int, default=15000,
                   help="jets generated per class, QCD and top (default: %(default)s)")
    p.add_argument("--seed", type=int, default=11,
                   help="generation seed (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2,
                   help="worker processes of the generation (default: %(default)s)")
    p.add_argument("--cache", default="/tmp/hepml-bench",
                   help="where the generated sample and the runs live (default: %(default)s)")
    p.add_argument("--epochs", type=int, default=30,
                   help="training.epochs of the run (default: %(default)s)")
    p.add_argument("--generate-only", action="store_true",
                   help="generate (or find) the sample, then stop without training")
    p.add_argument("--file", help="train on this sample instead of generating one")
    p.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = p.parse_args()

    cache = Path(args.cache)
    cache.mkdir(parents=True, exist_ok=True)
    sample = cache / f"top_qcd_{args.jets_per_class}_seed{args.seed}.root"
    if args.file:
        sample = Path(args.file).resolve()
    elif not sample.exists():
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "hepml.cli", "generate", "jets",
                        "--process", "qcd", "top",
                        "--n-jets", str(args.jets_per_class), str(args.jets_per_class),
                        "--seed", str(args.seed), "--workers", str(args.workers),
                        "--out", str(sample)],
                       check=True, cwd=ROOT)
        print(f"generated {sample} in {time.perf_counter() - t0:.0f} s")
    if args.generate_only:
        return 0
    t0 = time.perf_counter()
    out = subprocess.run([sys.executable, "-m", "hepml.cli", "-q", "run",
                          "workflows/top_tagging_cnn.yaml",
                          "--set", f"data.files=[{sample}]",
                          "--set", f"training.epochs={args.epochs}",
                          "--runs-dir", str(cache / "runs")],
                         check=True, cwd=ROOT, capture_output=True, text=True)
    seconds = time.perf_counter() - t0
    run_dir = Path(out.stdout.split("run directory:")[1].split()[0])
    m = json.loads((run_dir / "metrics.json").read_text())
    n_train = m["training"]["n_train"]
    for r in table_rows(m):
        print("| " + " | ".join(r) + " |")
    print(f"test jets: {m['training']['n_test']}, epochs run: {m['training']['epochs_run']}, "
          f"wall time {seconds:.0f} s, device {m['training']['device']}, run: {run_dir}")
    if args.json:
        import torch

        history = torch.load(run_dir / "checkpoint_last.pt", weights_only=True)["history"]
        size = f"{n_train:,} training jets"
        note = (f"{m['training']['n_test']:,} test jets, {m['training']['epochs_run']} epochs; "
                "published figures quoted from the paper (1.2 M jets, Delphes), not measured")
        rows_out = [
            row("top_tagging", "CNN AUC", size, "AUC", m["auc"], PUBLISHED["tagger"],
                PUBLISHED["auc"], note=note),
            row("top_tagging", "CNN 1/eps_B at eps_S = 0.3", size, "1/eps_B",
                m["rejection"]["0.3"]["value"], PUBLISHED["tagger"],
                PUBLISHED["rejection@0.3"]),
            row("top_tagging", "CNN training, last epoch", size, "jets/s",
                history[-1]["train_items_per_s"],
                note=f"whole run (training, evaluation, report) {seconds:.0f} s"),
        ]
        write_rows(args.json, rows_out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
