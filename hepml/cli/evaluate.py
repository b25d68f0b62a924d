"""``hepml evaluate``: metrics and plots from prediction files.

Also a tagger's generator dependence (``--run RUN_DIR --alternative NAME=FILE``).
"""

from __future__ import annotations

import argparse
import math


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``evaluate``."""
    p = sub.add_parser(
        "evaluate",
        help="metrics, plots and report from prediction friend trees; generator dependence",
        description="Compute ROC, AUC with a bootstrap interval, background rejection at "
        "fixed signal efficiency, the confusion matrix and figures of merit from prediction "
        "files written by 'hepml run' or 'hepml predict' (branches score_<class> and label). "
        "With --run and --alternative, score samples generated with other settings (tune, "
        "shower, hadronisation) with the run's trained tagger instead, and report the change "
        "of 1/eps_B at fixed eps_S against the run's own test split. Metrics are computed "
        "with torch on the chosen device.",
    )
    p.add_argument("files", nargs="*", help="prediction files (*.predictions.root) or globs")
    p.add_argument("--out", required=True, help="directory for metrics.json, plots, report.html")
    p.add_argument("--signal-class", help="class treated as signal (default: the last class)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test", "all"],
                   help="entries to evaluate when the files record the split (default: test)")
    p.add_argument("--working-points", type=float, nargs="+", default=[0.3, 0.5], metavar="EFF",
                   help="signal efficiencies for the background rejection (default: 0.3 0.5)")
    p.add_argument("--bootstrap", type=int, default=100,
                   help="bootstrap replicas for the AUC interval")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda ...")
    g = p.add_argument_group("generator dependence")
    g.add_argument("--run", metavar="RUN_DIR",
                   help="a finished run whose tagger scores the alternative samples")
    g.add_argument("--alternative", action="append", default=[], metavar="NAME=FILE",
                   help="an alternative sample with labels, e.g. a14=top_qcd_a14.root; "
                   "repeat for several; globs allowed")
    g.add_argument("--batch-size", type=int, default=1024, help="entries per forward pass")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.config import EvaluationConfig
    from hepml.errors import ConfigError
    from hepml.tasks import tagging

    if args.run or args.alternative:
        if args.files:
            raise ConfigError("give either prediction files or --run with --alternative, not both")
        if not args.run or not args.alternative:
            raise ConfigError("generator dependence needs --run RUN_DIR and at least one "
                              "--alternative NAME=FILE")
        samples: dict[str, list[str]] = {}
        for item in args.alternative:
            name, sep, path = item.partition("=")
            if not sep or not name or not path:
                raise ConfigError(f"--alternative {item!r}: expected NAME=FILE")
            samples.setdefault(name, []).append(path)
        result = tagging.generator_shift(args.run, samples, args.out,
                                         working_points=args.working_points,
                                         device=args.device, batch_size=args.batch_size)
        _print_shift(result)
        print(f"generator_dependence.json and plots in {args.out}")
        return 0
    if not args.files:
        raise ConfigError("give prediction files, or --run RUN_DIR --alternative NAME=FILE")
    cfg = EvaluationConfig(working_points=tuple(args.working_points), n_bootstrap=args.bootstrap)
    m = tagging.evaluate(args.files, args.out, signal_class=args.signal_class, config=cfg,
                         split=None if args.split == "all" else args.split, device=args.device)
    print(f"AUC {m['auc']:.4f}; metrics, plots and report in {args.out}")
    return 0


def _fmt(value: float, err: float) -> str:
    if not math.isfinite(value):
        return "inf (no background passes)"
    return f"{value:.1f} ± {err:.1f}"


def _print_shift(result: dict) -> None:
    wps = [str(wp) for wp in result["working_points"]]
    head = ["sample", "AUC", "AUC shift", *(f"1/eps_B@{wp}" for wp in wps),
            *(f"shift@{wp}" for wp in wps)]
    rows = []
    for name, row in result["samples"].items():
        a = row.get("auc_shift")
        cells = [name, f"{row['auc']:.4f} ± {row['auc_uncertainty']:.4f}",
                 f"{a['delta']:+.4f} ± {a['uncertainty']:.4f}" if a else "reference"]
        cells += [_fmt(row["rejection"][wp]["value"], row["rejection"][wp]["uncertainty"])
                  for wp in wps]
        for wp in wps:
            s = row.get("shift", {}).get(wp)
            if s is None:
                cells.append("reference")
            elif math.isfinite(s["delta"]):
                cells.append(f"{s['delta']:+.1f} ± {s['uncertainty']:.1f} "
                             f"({100 * s['relative']:+.0f} %)")
            else:
                cells.append("undefined")
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    for r in [head, *rows]:
        print("  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)))
