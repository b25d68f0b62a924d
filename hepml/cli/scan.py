"""``hepml scan``: anomaly scans with autoencoders.

Two forms:

* ``hepml scan WORKFLOW.yaml`` trains the autoencoder of an anomaly workflow
  (``task: anomaly``) on background and scans, exactly as ``hepml run`` does.
* ``hepml scan --checkpoint RUN/checkpoint_best.pt FILES... --out DIR`` scores further
  files with a trained autoencoder on a dask cluster (``uproot.dask``, chunk by chunk; see
  ``docs/scoring.md``), writes a friend tree per file and the ranked list of the most
  anomalous entries, and skips (and lists) files that cannot be scored.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from hepml.cli._args import parse_branches, positive_int
from hepml.cli.predict import add_dask_options, print_skipped
from hepml.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``scan``."""
    p = sub.add_parser(
        "scan",
        help="anomaly scan: train an autoencoder on background and rank anomalous entries",
        description="Run an anomaly workflow (task: anomaly), or, with --checkpoint, score "
        "ROOT files with a trained autoencoder. Scores go to a friend tree per input file "
        "(OUT/predictions/<stem>.anomaly.root, tree 'anomaly', branch anomaly_score); the "
        "most anomalous entries, with their ids and the features that drove each score, go "
        "to OUT/anomalies.csv and OUT/anomalies.root. With --checkpoint the files are read "
        "with uproot.dask and scored on a dask cluster (by default a LocalCluster on this "
        "machine); a file that cannot be read or scored is skipped and listed at the end and "
        "in OUT/skipped_files.json (exit code 0 if at least one file was scored, else 2). "
        "See docs/scoring.md.",
    )
    p.add_argument("inputs", nargs="+", metavar="WORKFLOW_OR_FILES",
                   help="a workflow YAML file, or (with --checkpoint) ROOT files or globs")
    p.add_argument("--checkpoint", help="checkpoint of an anomaly run; score INPUTS with it")
    p.add_argument("--out", help="output directory (with --checkpoint)")
    p.add_argument("--tree", help="tree name (default: the one used in training)")
    p.add_argument("--branches", metavar="YAML",
                   help="branch mapping for another layout, as YAML (default: the training one)")
    p.add_argument("--top", type=positive_int,
                   help="ranked entries written (default: the training run's)")
    p.add_argument("--step-size", type=positive_int,
                   help="entries per chunk read (default: the training one)")
    p.add_argument("--device", default="auto", help="auto (cuda, mps, cpu), cpu, cuda ...")
    p.add_argument("--batch-size", type=positive_int, default=256,
                   help="entries per forward pass; sets the peak memory with the chunk size "
                   "(default: %(default)s)")
    add_dask_options(p)
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a workflow value (workflow form), e.g. --set training.epochs=2")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run (workflow form)")
    p.add_argument("--runs-dir", help="parent directory of run directories (workflow form)")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    if args.checkpoint is None:
        if len(args.inputs) != 1 or not args.inputs[0].endswith((".yaml", ".yml")):
            raise ConfigError("hepml scan: give one workflow file (WORKFLOW.yaml), or "
                              "--checkpoint CKPT with ROOT files to score")
        from hepml.cli import run as run_cli

        if run_cli.load_checked(args.inputs[0], args.overrides).task != "anomaly":
            raise ConfigError(f"{args.inputs[0]} is not an anomaly workflow (task: anomaly); "
                              "use hepml run for other tasks")
        args.workflow = args.inputs[0]
        return run_cli._run(args)
    if not args.out:
        raise ConfigError("hepml scan --checkpoint: give --out DIR")
    from hepml.tasks import anomaly

    branches = parse_branches(args.branches)
    summary = anomaly.scan(args.checkpoint, args.inputs, args.out, tree=args.tree,
                           branches=branches, device=args.device, batch_size=args.batch_size,
                           top=args.top, step_size=args.step_size, scheduler=args.scheduler,
                           workers=args.workers)
    for path in summary["friend_trees"]:
        print(f"wrote {path}")
    print(f"scored {summary['n_entries']} entries of {len(summary['files'])} file(s) "
          f"on {summary['scheduler']}")
    print(f"ranked list: {Path(args.out) / 'anomalies.csv'}")
    for row in summary["top"][:5]:
        print(format_row(row))
    print_skipped(summary["skipped"], args.out)
    return 0


def format_row(row: dict) -> str:
    """One printed line of the ranked list.

    Rank, score, the entry's file (its name: the inputs of a scan have distinct names), its
    run and event numbers (else its entry in the file) and the features that drove it.
    """
    ids = ", ".join(f"{k} {row[k]}" for k in row if k in ("Run", "Event", "run", "event"))
    return (f"  #{row['rank']}: score {row['score']:.4g}  {Path(row['file']).name}: "
            f"{ids or 'entry ' + str(row['entry'])}"
            + (f"  ({row['drivers']})" if row.get("drivers") else ""))
