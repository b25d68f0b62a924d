"""``hepml compare``: several trained taggers on one rejection plot, same test jets."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare``."""
    p = sub.add_parser(
        "compare",
        help="put several runs (e.g. CNN and GNN) on one rejection-vs-efficiency plot",
        description="Read the prediction friend trees of several run directories, check that "
        "they scored the same entries with the same labels and split, and draw their "
        "background rejection against signal efficiency (and ROC) on one plot, with a table "
        "of AUC and 1/eps_B. Metrics are computed with torch on the chosen device.",
    )
    p.add_argument("runs", nargs="+", help="run directories (runs/NAME-<timestamp>)")
    p.add_argument("--out", required=True, help="directory for compare_rejection.png/.pdf, "
                   "compare_roc.png/.pdf and comparison.json")
    p.add_argument("--names", nargs="+", help="legend labels, one per run")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"],
                   help="entries to compare (default: test)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda ...")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.tasks import tagging

    table = tagging.compare(args.runs, args.out, names=args.names, split=args.split,
                            device=args.device)
    for name, row in table.items():
        rej = ", ".join(f"1/eps_B@{wp}: {v['value']:.1f}" for wp, v in row["rejection"].items())
        print(f"{name}: AUC {row['auc']:.4f}, {rej} ({row['n_entries']} entries)")
    print(f"plots and comparison.json in {args.out}")
    return 0
