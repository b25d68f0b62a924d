"""``hepml run WORKFLOW.yaml``: run one job described by a workflow file."""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from hepml.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``run``."""
    p = sub.add_parser(
        "run",
        help="run a workflow (train, evaluate, write a run directory)",
        description="Run the job described by a workflow YAML file. The results go to "
        "RUNS_DIR/NAME-<timestamp>/: resolved config, input checksums, versions, checkpoints, "
        "predictions (friend trees), metrics.json, plots (PNG and PDF) and report.html.",
    )
    p.add_argument("workflow", help="workflow YAML file, e.g. workflows/top_tagging_cnn.yaml")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a workflow value, e.g. --set training.epochs=2 "
                   "(VALUE is read as YAML; repeatable)")
    p.add_argument("--resume", metavar="RUN_DIR",
                   help="continue an interrupted run from RUN_DIR/checkpoint_last.pt")
    p.add_argument("--runs-dir", help="parent directory of run directories (default: from the "
                   "workflow, 'runs')")
    p.set_defaults(func=_run)


def parse_overrides(items: list[str]) -> dict:
    """``["a.b=1", ...]`` -> ``{"a.b": 1}`` with YAML-typed values."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. training.epochs=2")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError as exc:
            problem = str(getattr(exc, "problem", None) or exc).splitlines()[0]
            raise ConfigError(f"--set {item!r}: the value is not valid YAML ({problem}); "
                              "quote it or close its brackets") from None
    return out


def load_checked(path: str, overrides: list[str], runs_dir: str | None = None) -> object:
    """The workflow with its ``--set`` overrides, every section checked (nothing written)."""
    from hepml.tasks import workflow

    values = parse_overrides(overrides)
    if runs_dir:
        values["runs_dir"] = runs_dir
    return workflow.load(path, values)


def _run(args: argparse.Namespace) -> int:
    import importlib

    from hepml.tasks.workflow import TASKS
    from hepml.training import distributed

    cfg = load_checked(args.workflow, args.overrides, args.runs_dir)
    task = importlib.import_module(TASKS[cfg.task].module)
    from hepml.tasks.rundir import made_run_dirs

    before = len(made_run_dirs())
    try:
        result = task.run(cfg, resume=args.resume)
    except BaseException:
        if not args.resume and distributed.is_main_process():
            _remove_untrained(made_run_dirs()[before:])
        raise
    if not distributed.is_main_process():
        return 0
    print(f"run directory: {result.run_dir}")
    for line in result.summary.lines:
        print(f"  {line}")
    return 0


def _remove_untrained(made: list[Path]) -> None:
    """Remove the run directories this call made if the job failed before training.

    A directory with a checkpoint is kept (``--resume`` continues it); one without holds
    only the inputs' record, which ``--resume`` cannot use.
    """
    import shutil

    for path in made:
        if path.is_dir() and not (path / "checkpoint_last.pt").exists():
            shutil.rmtree(path, ignore_errors=True)
