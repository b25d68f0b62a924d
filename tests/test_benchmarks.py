"""The benchmark suite's measuring helper and its one-table output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = ROOT / "benchmarks"
sys.path.insert(0, str(BENCHMARKS))

import _memory  # noqa: E402
from _results import FIELDS  # noqa: E402

ALLOCATE = 200 * 2**20  # bytes held by the measured command


def _python(code: str) -> list[str]:
    return [sys.executable, "-c", code]


def test_run_measured_sees_a_known_allocation() -> None:
    """A command holding a 200 MB array peaks 150-400 MB above one that does not."""
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = _memory.run_measured(_python("import numpy, time; time.sleep(0.5)"), env)
    code = (f"import numpy as np, time, sys; a = np.ones({ALLOCATE} // 8); time.sleep(0.5); "
            "print(a.nbytes); sys.stderr.write('done')")
    rc, out, err, wall, peak = _memory.run_measured(_python(code), env)
    assert base[0] == 0 and rc == 0
    assert int(out) == ALLOCATE and err == "done"
    assert 0.5 <= wall < 30
    # np.ones writes every page, so all 200 MB are resident at once
    assert 150 <= peak - base[4] <= 400, (peak, base[4])


def test_run_measured_adds_up_children_and_reports_failures() -> None:
    """Children's memory is summed; exit codes and timeouts come back."""
    child = f"import numpy as np, time; a = np.ones({ALLOCATE} // 8); time.sleep(1.0)"
    two = (f"import subprocess, sys; ps = [subprocess.Popen([sys.executable, '-c', {child!r}]) "
           "for _ in range(2)]; [p.wait() for p in ps]; sys.exit(3)")
    rc, _, _, _, peak = _memory.run_measured(_python(two), dict(os.environ))
    assert rc == 3
    assert peak >= 2 * 150, peak  # both children's arrays, summed over the process tree
    rc, _, err, wall, _ = _memory.run_measured(_python("import time; time.sleep(20)"),
                                               dict(os.environ), timeout=1)
    assert rc != 0 and "timeout" in err and wall < 10


def test_run_all_writes_one_table(tmp_path: Path) -> None:
    """``run_all.py --only dqm`` writes a valid results.json and results.md."""
    out = tmp_path / "results"
    res = subprocess.run([sys.executable, str(BENCHMARKS / "run_all.py"), "--only", "dqm",
                          "--size", "small", "--out", str(out)], cwd=ROOT, capture_output=True,
                         text=True, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=120)
    assert res.returncode == 0, res.stderr[-2000:]
    result = json.loads((out / "results.json").read_text())
    assert result["size"] == "small"
    assert "--only dqm" in result["command"]
    for key in ("cpu_count", "torch", "numpy", "device", "threads", "date", "git_commit"):
        assert key in result["machine"]
    [bench] = result["benchmarks"]
    assert bench["name"] == "dqm" and bench["returncode"] == 0 and "error" not in bench
    rows = result["rows"]
    assert len(rows) == 2
    for r in rows:
        assert set(FIELDS) <= set(r) and r["benchmark"] == "dqm" and r["unit"] == "LS/s"
        assert r["value"] > 0 and r["baseline_value"] > 0
        assert r["ratio"] == pytest.approx(r["value"] / r["baseline_value"])
        assert r["size"] == "600 lumisections"  # the entries of data_samples/dqm_run.root
        assert r["wall_s"] > 0 and 50 < r["peak_rss_mb"] < 4000
    md = (out / "results.md").read_text()
    assert "| benchmark | measure |" in md and "build lumisection maps" in md
    assert (out / "logs" / "dqm.log").exists()


def test_gpu_check_says_so_and_exits_0_without_cuda() -> None:
    """On a CPU-only machine the GPU check checks nothing, says so in one line, and succeeds."""
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA device: the check would run")
    r = subprocess.run(["bash", str(BENCHMARKS / "gpu_check.sh")], capture_output=True,
                       text=True, timeout=120, env={**os.environ, "PYTHON": sys.executable})
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip().splitlines() == [
        f"gpu_check: no CUDA device ({sys.executable}: torch.cuda.is_available() is False); "
        "nothing was checked"]


@pytest.mark.parametrize("step", ["roc", "consistency", "syncs"])
def test_gpu_check_steps_run_on_the_cpu(tmp_path: Path, step: str) -> None:
    """The check's Python steps run end to end at tiny sizes on the CPU (--allow-cpu)."""
    out = tmp_path / f"{step}.json"
    r = subprocess.run([sys.executable, str(BENCHMARKS / "gpu_check.py"), step, "--allow-cpu",
                        "--tmp", str(tmp_path), "--json", str(out)],
                       capture_output=True, text=True, timeout=300, cwd=ROOT,
                       env={**os.environ, "OMP_NUM_THREADS": "1", "TQDM_DISABLE": "1"})
    assert r.returncode == 0, (r.stdout + r.stderr)[-3000:]
    result = json.loads(out.read_text())
    assert result["step"] == step and not result["failures"] and result["tables"]


def _top_tagging_metrics(rejection_03: float | None) -> dict:
    """A run's metrics.json as written (inf as null) with the given 1/eps_B at eps_S = 0.3."""
    infinite = rejection_03 is None
    return {
        "n_background": 412, "auc": 0.97, "auc_ci": [0.96, 0.98],
        "training": {"n_train": 1800},
        "rejection": {
            "0.3": {"value": rejection_03, "uncertainty": None if infinite else 12.3,
                    "background_efficiency": 0.0 if infinite else 1 / rejection_03,
                    "infinite": infinite},
            "0.5": {"value": 87.6, "uncertainty": 9.4, "background_efficiency": 1 / 87.6,
                    "infinite": False},
        },
    }


def test_top_tagging_table_shows_an_infinite_rejection_as_a_bound() -> None:
    """No test background passing (null in metrics.json) prints "> N", not a TypeError."""
    import bench_top_tagging as bench

    header, ours, published = bench.table_rows(_top_tagging_metrics(None))
    assert ours[3] == "> 412 (no background passes)" and ours[4] == "88 ± 9"
    assert header[3] == "1/eps_B @ eps_S=0.3" and published[0].startswith("CNN")
    finite = bench.table_rows(_top_tagging_metrics(250.4))[1]
    assert finite[3] == "250 ± 12"
    m = _top_tagging_metrics(None)
    m["rejection"]["0.3"]["value"] = float("inf")  # a dict not read back from JSON
    del m["n_background"]
    assert bench.format_rejection(m, "0.3") == "inf (no background passes)"


def _dqm_type(passed: int, n: int, *, touches: bool, meets: bool) -> dict:
    """A fault type's entry of a dqm run's metrics.json ``detection``."""
    return {"n_lumisections": n, "touches_coverage": touches, "meets_target": meets,
            "efficiency": {"passed": passed, "value": passed / n, "uncertainty": 0.085},
            "channel_fraction": {"mean": 0.025 if touches else 0.0007},
            "top1_in_mask": {"value": 1.0}, "topk_precision": {"mean": 0.9}}


def test_dqm_goal_column_says_yes_only_where_the_goal_holds() -> None:
    """A type the goal applies to but detected in 6 of 25 LS is "no", not "yes"."""
    import bench_dqm as bench

    def goal(entry: dict) -> str:
        return bench.detection_row("gain_drift", entry).split()[7]

    missed = _dqm_type(6, 25, touches=True, meets=False)
    assert "0.240 ± 0.085" in bench.detection_row("gain_drift", missed)
    assert goal(missed) == "no"
    assert goal(_dqm_type(25, 25, touches=True, meets=True)) == "yes"
    assert goal(_dqm_type(13, 14, touches=False, meets=False)) == "n/a"  # < coverage
    assert goal(_dqm_type(14, 14, touches=False, meets=True)) == "n/a"


class _Parsed(Exception):
    """Raised instead of parsing: carries the parser a script built."""


@pytest.mark.parametrize("script", sorted(p.stem for p in BENCHMARKS.glob("*.py")
                                          if not p.stem.startswith("_")))
def test_every_benchmark_option_has_help_with_its_default(script, monkeypatch) -> None:
    """Each option says what it is and, where it has one, its default (shown by --help)."""
    import argparse
    import importlib

    module = importlib.import_module(script)
    if not hasattr(module, "main"):
        pytest.skip(f"{script} has no command line")

    def capture(self, *args, **kwargs):
        raise _Parsed(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    monkeypatch.setattr(sys, "argv", [f"{script}.py"])
    with pytest.raises(_Parsed) as info:
        module.main()
    parsers = [info.value.args[0]]
    missing = []
    for parser in parsers:
        parser.format_help()  # a stray % in a help string fails here
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                parsers += list(action.choices.values())
                continue
            if isinstance(action, argparse._HelpAction):
                continue
            name = f"{parser.prog} {'/'.join(action.option_strings) or action.dest}"
            if not action.help:
                missing.append(f"{name}: no help")
            elif action.default not in (None, False, argparse.SUPPRESS) and not action.required \
                    and "default" not in action.help:
                missing.append(f"{name}: default {action.default!r} not in the help")
    assert not missing, missing
