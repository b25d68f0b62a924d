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
    before = _run_dirs(cfg.runs_dir, cfg.name)
    try:
        run_dir = task.run(cfg, resume=args.resume)
    except BaseException:
        if not args.resume and distributed.is_main_process():
            _remove_untrained(cfg.runs_dir, cfg.name, before)
        raise

    if not distributed.is_main_process():
        return 0
    print(f"run directory: {run_dir}")
    metrics = run_dir / "metrics.json"
    if metrics.exists():
        import json

        m = json.loads(metrics.read_text())
        if m.get("task") == "calosim":
            _print_calosim(m)
            print(f"  generated showers: {run_dir / 'generated_showers.root'}")
            print(f"  report: {run_dir / 'report.html'}")
            return 0
        if m.get("task") == "dqm":
            _print_dqm(m)
            print(f"  flagged: {run_dir / 'flagged_lumisections.csv'}")
            print(f"  report: {run_dir / 'report.html'}")
            return 0
        if "tracking" in m:
            t, score = m["tracking"], m.get("trackml_score")
            sel = t.get("selection", {})
            eff, fake = t.get("efficiency"), t.get("fake_rate")
            parts = [f"track efficiency {eff:.4f}" if isinstance(eff, float) else "",
                     f"fake rate {fake:.4f}" if isinstance(fake, float) else "",
                     f"TrackML score {score:.4f}" if isinstance(score, float) else ""]
            print(f"  pT > {sel.get('min_pt')} GeV: " + ", ".join(p for p in parts if p))
            print(f"  report: {run_dir / 'report.html'}")
            return 0
        if "n_scanned" in m:  # anomaly scan
            parts = [f"AUC {m['auc']:.4f}" if isinstance(m.get("auc"), float) else ""]
            for eb, v in (m.get("signal_efficiency") or {}).items():
                if isinstance(v.get("value"), float):
                    parts.append(f"eps_S at eps_B={eb}: {v['value']:.3f}")
            print("  " + ", ".join(p for p in parts if p) if any(parts) else
                  f"  {m['n_scanned']} entries scanned")
            print(f"  most anomalous entries: {m['ranked']['csv']}")
            print(f"  report: {run_dir / 'report.html'}")
            return 0
        auc = m.get("auc")
        rej = m.get("rejection", {})
        parts = [f"AUC {auc:.4f}" if isinstance(auc, float) else ""]
        for wp, v in rej.items():
            val = v.get("value") if isinstance(v, dict) else v
            if isinstance(val, (int, float)):
                parts.append(f"1/eps_B at eps_S={wp}: {val:.1f}")
        print("  " + ", ".join(p for p in parts if p))
        print(f"  report: {run_dir / 'report.html'}")
    return 0


def _run_dirs(runs_dir: str, name: str) -> set[Path]:
    parent = Path(runs_dir)
    return set(parent.glob(f"{name}-*")) if parent.is_dir() else set()


def _remove_untrained(runs_dir: str, name: str, before: set[Path]) -> None:
    """Remove the run directory this call made if the job failed before training.

    A directory with a checkpoint is kept (``--resume`` continues it); one without holds
    only the inputs' record, which ``--resume`` cannot use.
    """
    import shutil

    for path in _run_dirs(runs_dir, name) - before:
        if path.is_dir() and not (path / "checkpoint_last.pt").exists():
            shutil.rmtree(path, ignore_errors=True)


def _print_dqm(m: dict) -> None:
    """Summary of a dqm run: threshold, false alarms, detection per fault type."""
    far = m.get("false_alarm_rate") or {}
    line = (f"  {m.get('n_flagged')} of {m.get('n_scored')} lumisections flagged, "
            f"threshold {m['threshold']:.4g}")
    if isinstance(far.get("value"), float):
        line += (f"; false-alarm rate on test good LS {far['value']:.4f} "
                 f"± {far['uncertainty']:.4f} (target {m.get('false_alarm_rate_target')})")
    print(line)
    for name, row in (m.get("detection") or {}).items():
        eff = row["efficiency"]
        if isinstance(eff.get("value"), float):
            print(f"    {name}: detected {eff['passed']}/{eff['total']} = {eff['value']:.3f}")
    goal = m.get("goal")
    if goal:
        print(f"  goal {'met' if goal['met'] else 'NOT met'}: {goal['statement']}")


def _print_calosim(m: dict) -> None:
    """Summary of a calosim run: classifier AUC, separation powers, generator speed."""
    clf = m.get("classifier") or {}
    auc = clf.get("auc")
    if isinstance(auc, float):
        lo, hi = (clf.get("auc_interval") or [None, None])[:2]
        band = f" [{lo:.3f}, {hi:.3f}]" if isinstance(lo, float) and isinstance(hi, float) else ""
        print("  classifier AUC generated vs test showers (high-level observables): "
              f"{auc:.3f}{band}")
    lon = (m.get("classifier_longitudinal") or {}).get("auc")
    if isinstance(lon, float):
        print(f"  classifier AUC on the longitudinal energy observables alone: {lon:.3f}")
    mean = m.get("mean_separation_power")
    if isinstance(mean, float):
        print(f"  mean separation power {mean:.4f} (floor from test halves "
              f"{m.get('separation_power_floor_mean', float('nan')):.4f})")
    speeds = (m.get("generation") or {}).get("showers_per_s") or {}
    if speeds:
        print("  generator: " + ", ".join(f"{v:,.0f} showers/s at batch {k}"
                                          for k, v in speeds.items()))
    goal = m.get("goal")
    if goal:
        print(f"  goal {'met' if goal['met'] else 'NOT met'}: {goal['statement']}")
