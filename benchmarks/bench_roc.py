"""Time ROC + AUC with hepml (torch) against scikit-learn on the same scores.

Usage::

    python benchmarks/bench_roc.py --n 10000000 --device auto --repeat 3 [--json out.json]

Two score sets are timed: heavily tied (rounded to 2 decimals) and continuous (float32).
For each, hepml's ``roc_curve`` + ``auc`` and scikit-learn's ``roc_curve`` +
``roc_auc_score`` (what one would call to get both) run ``--repeat`` times; the best time
is reported with the speed-up. ``evaluate_binary`` (all metrics, bootstrap included) is
timed once for information. The AUCs of both libraries are checked to agree. ``--json``
writes the rows of ``run_all.py`` (scores/s of hepml and of scikit-learn).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch
from _results import row, write_rows
from sklearn.metrics import roc_auc_score
from sklearn.metrics import roc_curve as sk_roc_curve

try:
    from hepml.evaluation import auc, evaluate_binary, roc_curve
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hepml.evaluation import auc, evaluate_binary, roc_curve


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _best(fn, repeat: int, device: torch.device) -> tuple[float, object]:
    times, out = [], None
    for _ in range(repeat):
        _sync(device)
        start = time.perf_counter()
        out = fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return min(times), out


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print a table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000_000,
                        help="number of scores (default: %(default)s)")
    parser.add_argument("--device", default="auto",
                        help="auto, cpu, cuda, ... (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="repetitions, the best is kept (default: %(default)s)")
    parser.add_argument("--n-bootstrap", type=int, default=100,
                        help="bootstrap replicas for the evaluate_binary timing "
                        "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the random scores and labels (default: %(default)s)")
    parser.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = parser.parse_args(argv)
    device = _device(args.device)
    rng = np.random.default_rng(args.seed)
    labels = rng.random(args.n) < 0.4
    raw = (rng.normal(size=args.n) + 1.2 * labels).astype(np.float32)
    raw = 1.0 / (1.0 + np.exp(-raw))  # probabilities in (0, 1)
    sets = {"ties (2 decimals)": np.round(raw, 2).astype(np.float32),
            "continuous": raw.astype(np.float32)}
    print(f"n = {args.n:,}  device = {device}  torch threads = {torch.get_num_threads()}  "
          f"repeat = {args.repeat}")
    header = (f"{'scores':<20}{'distinct':>11}{'sklearn [s]':>13}{'hepml [s]':>11}"
              f"{'speed-up':>10}{'|dAUC|':>10}{'evaluate_binary [s]':>21}")
    print(header)
    print("-" * len(header))
    y_t = torch.from_numpy(labels).to(device)
    rows = []
    for name, scores in sets.items():
        s_t = torch.from_numpy(scores).to(device)

        def ours(s_t=s_t):
            roc = roc_curve(s_t, y_t)
            return roc, auc(roc.fpr, roc.tpr)

        def theirs(scores=scores):
            fpr, tpr, thr = sk_roc_curve(labels, scores, drop_intermediate=False)
            return thr, roc_auc_score(labels, scores)

        t_sk, (thr, auc_sk) = _best(theirs, args.repeat, torch.device("cpu"))
        t_ours, (roc, auc_ours) = _best(ours, args.repeat, device)
        if roc.thresholds.numel() != len(thr):
            raise SystemExit(f"{name}: {roc.thresholds.numel()} ROC points vs {len(thr)}")
        t_eval, _ = _best(lambda s_t=s_t: evaluate_binary(s_t, y_t, n_bootstrap=args.n_bootstrap),
                          1, device)
        print(f"{name:<20}{len(thr) - 1:>11,}{t_sk:>13.3f}{t_ours:>11.3f}"
              f"{t_sk / t_ours:>9.1f}x{abs(auc_ours - auc_sk):>10.1e}{t_eval:>21.2f}")
        rows.append(row("roc", f"ROC + AUC, {name} ({device})", f"{args.n:,} scores", "scores/s",
                        args.n / t_ours, "scikit-learn roc_curve + roc_auc_score",
                        args.n / t_sk, note=f"|dAUC| {abs(auc_ours - auc_sk):.1e}; "
                        f"evaluate_binary ({args.n_bootstrap} bootstrap) {t_eval:.2f} s"))
    write_rows(args.json, rows)


if __name__ == "__main__":
    main()
