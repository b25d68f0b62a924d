"""``hepml dqm``: score the lumisections of further runs with a trained monitor."""

from __future__ import annotations

import argparse

__all__ = ["add_parser"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``dqm``."""
    p = sub.add_parser(
        "dqm",
        help="flag bad lumisections of runs with a trained data-quality monitor",
        description="Score every lumisection of FILES with the autoencoder of a dqm run "
        "(hepml run workflows/dqm_monitor.yaml). The histograms must have the binning the "
        "model was trained on. Writes to OUT: predictions/<stem>.dqm.root (friend tree 'dqm': "
        "anomaly_score, flagged, excluded per lumisection), flagged_lumisections.csv (with "
        "the channels of largest residual), timeline and residual-map plots, and "
        "dqm_summary.json.",
    )
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint of a dqm run, e.g. runs/dqm_monitor-.../checkpoint_best.pt")
    p.add_argument("files", nargs="+", help="ROOT files or globs with a 'lumis' tree")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--threshold", type=float,
                   help="flag lumisections with a score above this (default: the threshold "
                   "the training run stored in metrics.json beside the checkpoint)")
    p.add_argument("--tree", help="tree name (default: the one used in training)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1 ...")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.tasks import dqm

    summary = dqm.score_files(args.checkpoint, args.files, args.out, threshold=args.threshold,
                              device=args.device, tree=args.tree, progress=print)
    far = summary.get("false_alarm_rate")
    if far and isinstance(far.get("value"), float):
        print(f"  truth in the files: false-alarm rate {far['value']:.4f} "
              f"({far['passed']}/{far['total']} good LS flagged)")
    for name, row in (summary.get("detection") or {}).items():
        eff = row["efficiency"]
        print(f"    {name}: detected {eff['passed']}/{eff['total']}")
    if summary["excluded_lumisections"]:
        print(f"  {len(summary['excluded_lumisections'])} lumisection(s) with no crossings "
              "excluded (score NaN)")
    print(f"  flagged: {summary['flagged_csv']}")
    print(f"  outputs: {args.out}")
    return 0
