"""``hepml compare``: trained taggers on one rejection plot, or shower generators in a table.

Taggers are compared on the same test jets, generators on the same test showers.
"""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare``."""
    p = sub.add_parser(
        "compare",
        help="put several runs (e.g. CNN and GNN) on one rejection-vs-efficiency plot, or "
        "several shower generators (CaloGAN, CaloFlow) in one table",
        description="Taggers: read the prediction friend trees of several run directories, "
        "check that they scored the same entries with the same labels and split, and draw "
        "their background rejection against signal efficiency (and ROC) on one plot, with a "
        "table of AUC and 1/eps_B. Metrics are computed with torch on the chosen device. "
        "Calosim runs: check that they compared their generators with the same test showers "
        "and write one table (comparison.md, comparison.json) of the classifier AUCs and "
        "their floors, separation powers, resolution and generation speed.",
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
    import json
    from pathlib import Path

    from hepml.tasks import tagging

    first = Path(args.runs[0]) / "metrics.json"
    task = json.loads(first.read_text()).get("task") if first.exists() else None
    if task == "calosim":
        from hepml.tasks import calosim

        calosim.compare(args.runs, args.out, names=args.names)
        print((Path(args.out) / "comparison.md").read_text(), end="")
        print(f"comparison.md and comparison.json in {args.out}")
        return 0

    table = tagging.compare(args.runs, args.out, names=args.names, split=args.split,
                            device=args.device)
    for name, row in table.items():
        rej = ", ".join(f"1/eps_B@{wp}: {v['value']:.1f}" for wp, v in row["rejection"].items())
        print(f"{name}: AUC {row['auc']:.4f}, {rej} ({row['n_entries']} entries)")
    print(f"plots and comparison.json in {args.out}")
    return 0
