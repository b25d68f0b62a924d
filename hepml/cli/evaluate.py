"""``hepml evaluate``: metrics and plots from existing prediction files."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="metrics, plots and report from prediction friend trees",
        description="Compute ROC, AUC with a bootstrap interval, background rejection at "
        "fixed signal efficiency, the confusion matrix and figures of merit from prediction "
        "files written by 'hepml run' or 'hepml predict' (branches score_<class> and label). "
        "Metrics are computed with torch on the chosen device.",
    )
    p.add_argument("files", nargs="+", help="prediction files (*.predictions.root) or globs")
    p.add_argument("--out", required=True, help="directory for metrics.json, plots, report.html")
    p.add_argument("--signal-class", help="class treated as signal (default: the last class)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                   help="entries to evaluate when the files record the split (default: test)")
    p.add_argument("--working-points", type=float, nargs="+", default=[0.3, 0.5], metavar="EFF",
                   help="signal efficiencies for the background rejection (default: 0.3 0.5)")
    p.add_argument("--bootstrap", type=int, default=100, help="bootstrap replicas for the AUC interval")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda ...")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.config import EvaluationConfig
    from hepml.tasks import tagging

    cfg = EvaluationConfig(working_points=tuple(args.working_points), n_bootstrap=args.bootstrap)
    m = tagging.evaluate(args.files, args.out, signal_class=args.signal_class, config=cfg,
                         split=None if args.split == "all" else args.split, device=args.device)
    print(f"AUC {m['auc']:.4f}; metrics, plots and report in {args.out}")
    return 0
