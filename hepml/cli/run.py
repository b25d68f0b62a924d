"""``hepml run WORKFLOW.yaml``: run one job described by a workflow file."""

from __future__ import annotations

import argparse

import yaml

from hepml.config import load_workflow
from hepml.errors import ConfigError

#: Workflow ``task`` -> the module whose ``run(cfg, resume=...)`` carries it out. Jet
#: tagging and event classification are the same job on different representations.
TASKS = {"tagging": "hepml.tasks.tagging", "classification": "hepml.tasks.tagging",
         "tracking": "hepml.tasks.tracking", "anomaly": "hepml.tasks.anomaly",
         "dqm": "hepml.tasks.dqm", "calosim": "hepml.tasks.calosim"}


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
        out[key.strip()] = yaml.safe_load(value)
    return out


def _run(args: argparse.Namespace) -> int:
    overrides = parse_overrides(args.overrides)
    if args.runs_dir:
        overrides["runs_dir"] = args.runs_dir
    cfg = load_workflow(args.workflow, overrides)
    import importlib

    task = importlib.import_module(TASKS[cfg.task])
    run_dir = task.run(cfg, resume=args.resume)
    from hepml.training import distributed

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
            parts = [f"track efficiency {t['efficiency']:.4f}" if isinstance(t.get("efficiency"), float) else "",
                     f"fake rate {t['fake_rate']:.4f}" if isinstance(t.get("fake_rate"), float) else "",
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
        print(f"  classifier AUC generated vs test showers (high-level observables): {auc:.3f}{band}")
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
