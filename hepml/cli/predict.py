"""``hepml predict``: score ROOT files with a trained checkpoint, write friend trees."""

from __future__ import annotations

import argparse

import yaml


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``predict``."""
    p = sub.add_parser(
        "predict",
        help="score ROOT files with a trained model (friend trees)",
        description="Apply a trained checkpoint to ROOT files. For each input file a friend "
        "tree 'predictions' with one entry per input entry, in the same order, is written to "
        "OUT/predictions/<stem>.predictions.root, with one score_<class> branch per class "
        "(and 'label' when the input has the label branches). In ROOT: "
        "tree->AddFriend(\"predictions\", \"<stem>.predictions.root\").",
    )
    p.add_argument("--checkpoint", required=True,
                   help="checkpoint of a run, e.g. runs/NAME-.../checkpoint_best.pt")
    p.add_argument("files", nargs="+", help="ROOT files or globs to score")
    p.add_argument("--out", required=True, help="output directory")
    p.add_argument("--tree", help="tree name (default: the one used in training)")
    p.add_argument("--branches", metavar="YAML",
                   help="branch mapping for another layout, as YAML, e.g. "
                   "'{part_px: PF_px, jet_pt: pt(J_px, J_py)}' (default: the training mapping)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1 ...")
    p.add_argument("--batch-size", type=int, default=1024, help="jets per forward pass (default 1024)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.tasks import tagging

    branches = yaml.safe_load(args.branches) if args.branches else None
    paths = tagging.predict(args.checkpoint, args.files, args.out, tree=args.tree,
                            branches=branches, device=args.device, batch_size=args.batch_size)
    for p in paths:
        print(f"wrote {p}")
    return 0
