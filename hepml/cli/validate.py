"""``hepml validate WORKFLOW.yaml``: check a workflow file without running it."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``validate``."""
    p = sub.add_parser(
        "validate",
        help="check a workflow file (every section, typed) without running it",
        description="Check every section of a workflow file against its schema, as "
        "'hepml run' does before any work: unknown keys (with the nearest valid one), "
        "wrong types and values, kinds the task does not take. Reads nothing but the "
        "file and writes nothing. Exit code 0 when valid, 2 otherwise.",
    )
    p.add_argument("workflows", nargs="+", metavar="WORKFLOW",
                   help="workflow YAML file(s), e.g. workflows/top_tagging_cnn.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a value before checking, as 'hepml run --set' does")
    p.set_defaults(func=_run)


def _run(args: argparse.Namespace) -> int:
    from hepml.cli.run import load_checked

    for path in args.workflows:
        cfg = load_checked(path, args.overrides)
        rep = cfg.representation.get("kind", "default") if cfg.representation else "none"
        print(f"{path}: valid (task {cfg.task}, representation {rep}, "
              f"model {cfg.model.get('kind', 'default')})")
    return 0
