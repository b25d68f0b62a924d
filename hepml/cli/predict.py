"""``hepml predict``: score ROOT files with a trained checkpoint, write friend trees."""

from __future__ import annotations

import argparse
from pathlib import Path

from hepml.cli._args import parse_branches, positive_int


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``predict``."""
    p = sub.add_parser(
        "predict",
        help="score ROOT files with a trained model (friend trees)",
        description="Apply a trained checkpoint to ROOT files. For each input file a friend "
        "tree 'predictions' with one entry per input entry, in the same order, is written to "
        "OUT/predictions/<stem>.predictions.root, with one score_<class> branch per class "
        "(and 'label' when the inputs have the label branches). In ROOT: "
        "tree->AddFriend(\"predictions\", \"<stem>.predictions.root\"). The files are read "
        "with uproot.dask and scored on a dask cluster (by default a LocalCluster on this "
        "machine); a file that cannot be read or scored is skipped and listed at the end and "
        "in OUT/skipped_files.json (exit code 0 if at least one file was scored, else 2). "
        "OUT/predict_summary.json records what was done. See docs/scoring.md.",
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
    p.add_argument("--batch-size", type=positive_int, default=1024,
                   help="jets per forward pass (default 1024)")
    p.add_argument("--step-size", type=positive_int,
                   help="entries per chunk read; one dask task reads one chunk, so this sets "
                   "the memory of a worker (default: the training one)")
    add_dask_options(p)
    p.set_defaults(func=_run)


def add_dask_options(p: argparse.ArgumentParser) -> None:
    """``--scheduler`` and ``--workers``, shared by the commands that score many files."""
    p.add_argument("--scheduler", metavar="ADDRESS|synchronous",
                   help="where the files are scored: the address of a running "
                   "dask.distributed scheduler (e.g. tcp://host:8786; its workers must see the "
                   "input files, the checkpoint and --out), or 'synchronous' to run the same "
                   "task graph in this process (debugging, small jobs). Default: a dask "
                   "LocalCluster on this machine with --workers worker processes")
    p.add_argument("--workers", type=positive_int, metavar="N",
                   help="worker processes of the local cluster (default: the number of CPUs, or "
                   "one when scoring on a GPU)")


def print_skipped(skipped: list[dict[str, str]], out: str | Path) -> None:
    """One line per skipped file (path and error), and where the list is kept."""
    if not skipped:
        return
    print(f"skipped {len(skipped)} file(s) (listed in {Path(out) / 'skipped_files.json'}):")
    for item in skipped:
        error = item["error"]
        print(f"  {error}" if error.startswith(item["path"]) else f"  {item['path']}: {error}")


def _run(args: argparse.Namespace) -> int:
    from hepml.tasks import tagging

    branches = parse_branches(args.branches)
    report = tagging.predict_files(args.checkpoint, args.files, args.out, tree=args.tree,
                                   branches=branches, device=args.device,
                                   batch_size=args.batch_size, step_size=args.step_size,
                                   scheduler=args.scheduler, workers=args.workers)
    for r in report.results:
        print(f"wrote {r['friend_tree']}")
    print(f"scored {report.entries} entries of {len(report.results)} file(s) on {report.scheduler}")
    print_skipped(report.skipped, args.out)
    return 0
