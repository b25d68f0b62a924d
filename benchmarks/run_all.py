"""Run every benchmark at one size and write one table of results.

Usage::

    python benchmarks/run_all.py [--size small|medium] [--only NAME ...] \
        [--out benchmarks/results]

Each benchmark script runs in its own subprocess with ``OMP_NUM_THREADS=1`` (and as many
torch threads as its own ``--threads`` says; 1 at ``small``), writes its rows with
``--json`` and is measured from outside with ``_memory.run_measured``: wall time, and
peak memory = the largest summed resident memory of the subprocess and all its children,
sampled every 50 ms. A benchmark that fails gets a row with its error and the suite goes
on. Benchmarks that need a trained model get one that the suite trains first at a tiny
size (one epoch on a few hundred entries: their timings do not depend on the weights), or
use untrained weights where the script allows it; the notes of the table say which.

Sizes:

- ``small`` (default): the shipped samples, one thread, few repetitions; about 15 minutes
  on 2 cores.
- ``medium``: larger inputs (10^7 ROC scores, 100,000 synthetic jets, 2 x 15,000 generated
  jets trained for 30 epochs, both ParticleNet presets, more repetitions, all cores); for
  a real machine (hours on 2 cores).

Writes ``OUT/results.md`` (machine facts, the command, the table, notes), ``OUT/results.json``
(the same, machine-readable) and ``OUT/logs/NAME.log`` (each benchmark's output).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import json
import os
import platform
import shlex
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import psutil
from _memory import run_measured
from _results import FIELDS

ROOT = Path(__file__).resolve().parents[1]
HERE = Path(__file__).resolve().parent
JETS = "data_samples/top_qcd_jets.root"  # relative to ROOT, where every benchmark runs
CPUS = os.cpu_count() or 1


# --------------------------------------------------------------------------- preparation
@dataclasses.dataclass
class Context:
    """What the benchmarks of one suite run share: size, work directory, prepared inputs."""

    size: str
    tmp: Path
    env: dict[str, str]
    prepared: dict[str, Any] = dataclasses.field(default_factory=dict)
    preparation: list[dict[str, Any]] = dataclasses.field(default_factory=list)

    @property
    def small(self) -> bool:
        """Whether this is the ``small`` size."""
        return self.size == "small"

    @property
    def threads(self) -> int:
        """Torch threads of the benchmarks that take ``--threads``."""
        return 1 if self.small else CPUS


class PreparationError(RuntimeError):
    """A tiny training (or another input) that a benchmark needs could not be made."""


def _train(ctx: Context, key: str, workflow: str, *overrides: str) -> Path:
    """Train ``workflows/WORKFLOW.yaml`` for one epoch at a tiny size; its run directory."""
    if key in ctx.prepared:
        if isinstance(ctx.prepared[key], Exception):
            raise ctx.prepared[key]
        return ctx.prepared[key]
    cmd = [sys.executable, "-m", "hepml", "-q", "run", f"workflows/{workflow}.yaml",
           "--set", "training.epochs=1", "--set", "training.num_threads=1",
           *(x for o in overrides for x in ("--set", o)), "--runs-dir", str(ctx.tmp / "runs")]
    print(f"  preparing {key}: {shlex.join(cmd[1:])}", flush=True)
    rc, out, err, wall, peak = run_measured(cmd, ctx.env, cwd=ROOT)
    shown = shlex.join(["python", *cmd[1:]]).replace(str(ctx.tmp), "$TMP")
    ctx.preparation.append({"what": key, "command": shown, "returncode": rc,
                            "wall_s": round(wall, 1), "peak_rss_mb": round(peak)})
    if rc != 0 or "run directory:" not in out:
        last = (err.strip().splitlines() or ["no output"])[-1]
        ctx.prepared[key] = PreparationError(f"tiny training {workflow} failed: {last}")
        raise ctx.prepared[key]
    ctx.prepared[key] = Path(out.split("run directory:")[1].split()[0])
    return ctx.prepared[key]


def _subset(ctx: Context, n: int) -> Path:
    """The first ``n`` jets of the shipped sample as a file of their own."""
    key = f"jets_{n}"
    if key not in ctx.prepared:
        import uproot

        from hepml.io.writing import write_tree

        t0 = time.perf_counter()
        with uproot.open(ROOT / JETS) as f:
            arrays = f["tree"].arrays(entry_stop=n)
        path = write_tree(ctx.tmp / f"top_qcd_jets_first{n}.root",
                          {k: arrays[k] for k in arrays.fields if k != "npart"}, tree="tree")
        ctx.preparation.append({"what": key, "command": f"first {n} entries of {JETS}",
                                "returncode": 0, "wall_s": round(time.perf_counter() - t0, 1)})
        ctx.prepared[key] = path
    return ctx.prepared[key]


def _cnn_run(ctx: Context) -> Path:
    return _train(ctx, "cnn_run", "top_tagging_cnn", "data.max_entries=1200")


def _anomaly_run(ctx: Context) -> Path:
    return _train(ctx, "anomaly_run", "anomaly_scan", "data.max_entries=1200")


# The other model families of the ONNX benchmark: key -> (workflow, overrides). The
# dense autoencoder's workflow reads ../shared/realdata (left out where that is absent);
# the DQM monitor's conv autoencoder is a second conv_autoencoder (medium size only).
_FAMILY_RUNS = {
    "particlenet_run": ("top_tagging_gnn", ("data.max_entries=600",)),
    "event_gnn_run": ("event_classification", ("data.max_entries=600", "apply=[]")),
    "hit_gnn_run": ("tracking_gnn", ()),
    "lstm_run": ("tracking_lstm", ()),
    "calogan_run": ("calogan", ("data.max_entries=1000",)),
    "autoencoder_run": ("anomaly_zmumu", ("data.max_entries=2000",)),
    "dqm_run": ("dqm_monitor", ()),
}
REALDATA = ROOT.parent / "shared" / "realdata"


# --------------------------------------------------------------------------- benchmarks
@dataclasses.dataclass
class Benchmark:
    """One suite entry: the script and its arguments at a size, and what the rows mean."""

    name: str
    script: str
    args: Callable[[Context], list[str]]
    note: Callable[[Context], str] = lambda ctx: ""


def _top_tagging_args(ctx: Context) -> list[str]:
    cache = str(ctx.tmp / "top_tagging")
    if ctx.small:
        return ["--file", str(JETS), "--epochs", "3", "--cache", cache]
    return ["--jets-per-class", "15000", "--epochs", "30", "--workers", str(CPUS), "--cache", cache]


def _tracking_args(ctx: Context) -> list[str]:
    if ctx.small:
        return ["--threads", "1", "--repeat", "2", "--generate", "5"]
    return ["--threads", str(CPUS), "--repeat", "3", "--generate", "20",
            "--gnn-run", str(_train(ctx, "hit_gnn_run", "tracking_gnn")),
            "--lstm-run", str(_train(ctx, "lstm_run", "tracking_lstm"))]


def _anomaly_args(ctx: Context) -> list[str]:
    run = str(_anomaly_run(ctx))
    if ctx.small:
        return ["--run", run, "--file", str(_subset(ctx, 600)), "--threads", "1", "--repeat", "2",
                "--copies", "10"]
    return ["--run", run, "--threads", str(CPUS), "--repeat", "2", "--copies", "10"]


def _dqm_args(ctx: Context) -> list[str]:
    if ctx.small:
        return ["--threads", "1", "--repeat", "3"]
    run = _train(ctx, "dqm_run", "dqm_monitor")
    return ["--threads", str(CPUS), "--repeat", "3", "--checkpoint",
            str(run / "checkpoint_best.pt")]


def _calogan_args(ctx: Context) -> list[str]:
    if ctx.small:
        return ["--threads", "1", "--repeat", "1", "--min-seconds", "0.3"]
    run = _train(ctx, "calogan_run", "calogan", "data.max_entries=1000")
    return ["--threads", "1", "--repeat", "3", "--checkpoint", str(run / "checkpoint_best.pt")]


def _onnx_args(ctx: Context) -> list[str]:
    runs = [_cnn_run(ctx), _anomaly_run(ctx)]
    for key, (workflow, overrides) in _FAMILY_RUNS.items():
        if (key == "autoencoder_run" and not REALDATA.exists()) or (key == "dqm_run"
                                                                     and ctx.small):
            continue
        try:
            runs.append(_train(ctx, key, workflow, *overrides))
        except PreparationError as exc:
            print(f"  {exc}; that family is left out", flush=True)
    return ["--checkpoint", *(str(r / "checkpoint_best.pt") for r in runs),
            "--entries", "512" if ctx.small else "2048", "--batch-size", "256",
            "--threads", str(ctx.threads), "--repeat", "2" if ctx.small else "3"]


BENCHMARKS: list[Benchmark] = [
    Benchmark("roc", "bench_roc.py", lambda c: (
        ["--n", "1000000", "--repeat", "3", "--n-bootstrap", "10"] if c.small
        else ["--n", "10000000", "--repeat", "3", "--n-bootstrap", "100"])),
    Benchmark("jet_images", "bench_jet_images.py", lambda c: (
        ["--file", str(JETS), "--repeat", "3", "--step", "2000"] if c.small
        else ["--synthetic", "100000", "--repeat", "3", "--step", "20000"])),
    Benchmark("generate", "bench_generate.py", lambda c: (
        ["--n-jets", "50", "--process", "qcd", "top"] if c.small
        else ["--n-jets", "400", "--process", "qcd", "top", "w"]),
        lambda c: "no baseline; Pythia initialisation excluded"),
    Benchmark("top_tagging", "bench_top_tagging.py", _top_tagging_args, lambda c: (
        ("the shipped 6,000 jets (60/20/20), 3 epochs" if c.small
         else "2 x 15,000 generated jets, 30 epochs")
        + "; the published CNN figures are quoted from arXiv:1902.09914, not measured")),
    Benchmark("event_graphs", "bench_event_graphs.py", lambda c: (
        ["--repeat", "2", "--threads", "1", "--steps", "10"] if c.small
        else ["--repeat", "3", "--threads", str(CPUS), "--steps", "20"]),
        lambda c: "untrained EventGNN (the cost does not depend on the weights)"),
    Benchmark("particlenet", "bench_particlenet.py", lambda c: (
        ["--threads", "1", "--warmup", "1", "--steps", "1", "--repeat", "3"] if c.small
        else ["--presets", "particlenet-lite", "particlenet", "--threads", str(CPUS),
              "--warmup", "2", "--steps", "3", "--repeat", "3"]),
        lambda c: "untrained networks, same weights in both; weaver-core is the reference "
                  "(skipped when not installed)"),
    Benchmark("tracking", "bench_tracking.py", _tracking_args, lambda c: (
        "untrained GNN and LSTM (the GNN's cost does not depend on the weights; an untrained "
        "LSTM follows fewer hits, so its rate is an upper bound)" if c.small
        else "GNN and LSTM trained by the suite for 1 epoch")),
    Benchmark("anomaly", "bench_anomaly.py", _anomaly_args, lambda c: (
        "conv autoencoder trained by the suite (1 epoch, 1,200 jets); "
        + ("scans the first 600 shipped jets (and 10 links to that file)" if c.small
           else "scans the shipped 6,000 jets (and 10 links)"))),
    Benchmark("dqm", "bench_dqm.py", _dqm_args, lambda c: (
        "untrained autoencoder (same cost)" if c.small
        else "autoencoder trained by the suite (1 epoch)")),
    Benchmark("calogan", "bench_calogan.py", _calogan_args, lambda c: (
        "untrained generator (same cost)" if c.small
        else "generator trained by the suite (1 epoch, 1,000 showers)")),
    Benchmark("memory", "bench_memory.py", lambda c: [
        "--copies", "10", "--step-size", "2000", "--workers", "2",
        *([] if c.small else ["--merged"])],
        lambda c: "the 10 N input is ten copies of the shipped file (read like any other "
                  "files); the dask_scoring rows come from the same hepml predict runs"),
    Benchmark("torchrun", "bench_torchrun.py", lambda c: (
        ["--epochs", "2", "--nproc", "2", "--baselines", "one"] if c.small
        else ["--epochs", "3", "--nproc", "2"]),
        lambda c: f"{CPUS} CPU cores shared by the ranks; the shipped 6,000 jets"),
    Benchmark("onnx", "bench_onnx.py", _onnx_args, lambda c: (
        "checkpoints trained by the suite for 1 epoch (the cost does not depend on the "
        "weights); every model family" + ("" if REALDATA.exists() else
                                           " but the dense autoencoder (its workflow reads "
                                           "../shared/realdata)"))),
]
NAMES = [b.name for b in BENCHMARKS]


# --------------------------------------------------------------------------- machine facts
def _git() -> str:
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT,
                                capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, capture_output=True, text=True).stdout.strip()
        return commit + (" (with uncommitted changes)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine_facts() -> dict[str, Any]:
    """CPU, memory, versions, device, threads, date and commit of this run."""
    import importlib.metadata as md

    import numpy as np
    import torch

    def version(pkg: str) -> str:
        try:
            return md.version(pkg)
        except md.PackageNotFoundError:
            return "not installed"

    cuda = torch.cuda.is_available()
    return {
        "date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "git_commit": _git(),
        "cpu": _cpu_model(),
        "cpu_count": CPUS,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else CPUS,
        "memory_gb": round(psutil.virtual_memory().total / 2**30, 1),
        "python": platform.python_version(),
        "torch": torch.__version__, "numpy": np.__version__,
        "awkward": version("awkward"), "uproot": version("uproot"),
        "onnxruntime": version("onnxruntime"), "dask": version("dask"),
        "weaver_core": version("weaver-core"),
        "device": torch.cuda.get_device_name(0) if cuda else "CPU only (no CUDA device)",
        "threads": "OMP_NUM_THREADS=1 in every benchmark; torch threads as each script's "
                   "--threads (see the commands)",
        "load_average_start": round(os.getloadavg()[0], 2),
    }


# --------------------------------------------------------------------------- running
def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", TQDM_DISABLE="1", PYTHONUNBUFFERED="1",
               MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    return env


def _last_error(text: str) -> str:
    lines = [ln.strip() for ln in text.strip().splitlines() if ln.strip()]
    for ln in reversed(lines):
        if "Error" in ln or "error" in ln or "failed" in ln:
            return ln[:300]
    return lines[-1][:300] if lines else "no output"


def run_one(bench: Benchmark, ctx: Context, out: Path, timeout: float) -> dict[str, Any]:
    """Run one benchmark in a subprocess; its record (command, wall, peak, rows or error)."""
    record: dict[str, Any] = {"name": bench.name, "script": f"benchmarks/{bench.script}"}
    json_path = ctx.tmp / f"{bench.name}.json"
    try:
        args = bench.args(ctx)
        record["note"] = bench.note(ctx)
    except Exception as exc:  # a failed preparation: a row with the error, go on
        record.update(returncode=None, wall_s=0.0, peak_rss_mb=None, rows=[],
                      error=f"preparation failed: {exc}", command="")
        return record
    cmd = [sys.executable, str(HERE / bench.script), *args, "--json", str(json_path)]
    record["command"] = shlex.join(["python", f"benchmarks/{bench.script}", *args]).replace(
        str(ctx.tmp), "$TMP")
    print(f"[{bench.name}] {record['command']}", flush=True)
    rc, stdout, stderr, wall, peak = run_measured(cmd, ctx.env, cwd=ROOT, timeout=timeout)
    (out / "logs").mkdir(parents=True, exist_ok=True)
    (out / "logs" / f"{bench.name}.log").write_text(
        f"$ {record['command']}\n# exit code {rc}, {wall:.1f} s, peak {peak:.0f} MB\n\n"
        f"--- stdout\n{stdout}\n--- stderr\n{stderr}")
    record.update(returncode=rc, wall_s=round(wall, 1), peak_rss_mb=round(peak, 1), rows=[])
    if rc == 0 and json_path.exists():
        record["rows"] = json.loads(json_path.read_text())
    else:
        record["error"] = (f"exit code {rc}: {_last_error(stderr or stdout)}" if rc != 0
                           else "no results written")
    print(f"[{bench.name}] {'ok' if 'error' not in record else record['error']} "
          f"({wall:.0f} s, peak {peak:.0f} MB)", flush=True)
    return record


# --------------------------------------------------------------------------- the table
def fmt(x: float | None) -> str:
    """A number for the table: about three significant digits, thousands separated."""
    if x is None:
        return "–"
    ax = abs(x)
    if ax >= 1000:
        return f"{x:,.0f}"
    if ax >= 100:
        return f"{x:.0f}"
    if ax >= 10:
        return f"{x:.1f}"
    if ax >= 1:
        return f"{x:.2f}"
    return f"{x:.3g}"


def table_rows(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One row per measurement, with the wall time and peak memory of its benchmark."""
    rows = []
    for rec in records:
        if "error" in rec:
            rows.append({**dict.fromkeys(FIELDS), "benchmark": rec["name"], "measure": "FAILED",
                         "note": rec["error"], "wall_s": rec.get("wall_s"),
                         "peak_rss_mb": rec.get("peak_rss_mb")})
            continue
        for r in rec["rows"]:
            rows.append({**r, "wall_s": rec["wall_s"], "peak_rss_mb": rec["peak_rss_mb"]})
    return rows


def markdown(result: dict[str, Any]) -> str:
    """``results.md``: machine facts, the command, the table and the notes."""
    m = result["machine"]
    lines = [
        f"# hepml benchmarks, size `{result['size']}`", "",
        f"- command: `{result['command']}`",
        f"- date: {m['date']}; git commit {m['git_commit']}",
        f"- machine: {m['cpu']}, {m['cpu_count']} CPUs ({m['cpus_usable']} usable), "
        f"{m['memory_gb']} GiB; device: {m['device']}",
        f"- software: Python {m['python']}, torch {m['torch']}, numpy {m['numpy']}, "
        f"awkward {m['awkward']}, uproot {m['uproot']}, dask {m['dask']}, onnxruntime "
        f"{m['onnxruntime']}, weaver-core {m['weaver_core']}",
        f"- threads: {m['threads']}",
        f"- load average (1 min) at the start {m['load_average_start']}, at the end "
        f"{result['load_average_end']}",
        f"- total wall time {result['total_s'] / 60:.1f} min (preparation "
        f"{result['preparation_s']:.0f} s)", "",
        "| benchmark | measure | size | hepml | baseline (same run) | baseline | ratio | "
        "wall s | peak MB | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    notes: list[str] = []
    for r in result["rows"]:
        unit = r.get("unit") or ""
        ref = ""
        if r.get("note"):
            notes.append(r["note"])
            ref = f"({len(notes)})"
        hepml = f"{fmt(r.get('value'))} {unit}".strip() if r.get("value") is not None else "–"
        base = (f"{fmt(r.get('baseline_value'))} {unit}".strip()
                if r.get("baseline_value") is not None else "–")
        ratio = f"{r['ratio']:.2f}" if r.get("ratio") is not None else "–"
        cells = [r["benchmark"], r.get("measure") or "", r.get("size") or "", hepml,
                 r.get("baseline") or "–", base, ratio, fmt(r.get("wall_s")),
                 fmt(r.get("peak_rss_mb")), ref]
        lines.append("| " + " | ".join(str(c).replace("|", "/") for c in cells) + " |")
    lines += ["", "ratio = hepml / baseline (throughputs: above 1, hepml is faster; memory "
              "rows: peak at 10 N / peak at N). wall s and peak MB are those of the whole "
              "benchmark subprocess (peak = summed RSS of its process tree, sampled every "
              "50 ms; MB = 2^20 bytes), the same on each of its rows.", ""]
    if notes:
        lines += ["Notes:", ""] + [f"{i}. {n}" for i, n in enumerate(notes, 1)] + [""]
    lines += ["Benchmarks:", ""]
    for rec in result["benchmarks"]:
        status = "failed: " + rec["error"] if "error" in rec else "ok"
        lines.append(f"- **{rec['name']}** ({status}; {fmt(rec.get('wall_s'))} s): "
                     f"`{rec.get('command', '')}`" + (f" — {rec['note']}" if rec.get("note")
                                                      else ""))
    if result["preparation"]:
        lines += ["", "Preparation (tiny trainings and inputs made by the suite):", ""]
        for p in result["preparation"]:
            lines.append(f"- {p['what']}: `{p['command']}` ({p['wall_s']} s"
                         + (f", exit code {p['returncode']}" if p["returncode"] else "") + ")")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """Run the suite and write the table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--size", choices=("small", "medium"), default="small",
                   help="small: the shipped samples, one thread (about 15 minutes on 2 "
                   "cores); medium: larger inputs, all cores (default: %(default)s)")
    p.add_argument("--only", nargs="+", choices=NAMES, metavar="NAME",
                   help=f"run only these benchmarks ({', '.join(NAMES)}; default: all)")
    p.add_argument("--out", default=str(HERE / "results"),
                   help="where results.md/.json go (default: %(default)s)")
    p.add_argument("--timeout", type=float, default=None,
                   help="seconds after which one benchmark is stopped (default: 1800 at "
                        "small, none at medium)")
    args = p.parse_args(argv)
    timeout = args.timeout if args.timeout is not None else (1800 if args.size == "small"
                                                             else None)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    command = shlex.join(["python", "benchmarks/run_all.py", *(argv if argv is not None
                                                               else sys.argv[1:])])
    sys.path.insert(0, str(ROOT))
    machine = machine_facts()
    selected = [b for b in BENCHMARKS if not args.only or b.name in args.only]
    start = time.perf_counter()
    records = []
    with tempfile.TemporaryDirectory(prefix="hepml-bench-suite-") as tmp:
        ctx = Context(args.size, Path(tmp), _env())
        for bench in selected:
            records.append(run_one(bench, ctx, out, timeout))
        preparation = ctx.preparation
    total = time.perf_counter() - start
    result = {"size": args.size, "command": command, "machine": machine,
              "load_average_end": round(os.getloadavg()[0], 2), "total_s": round(total, 1),
              "preparation_s": round(sum(p["wall_s"] for p in preparation), 1),
              "preparation": preparation,
              "benchmarks": [{k: v for k, v in r.items() if k != "rows"} for r in records],
              "rows": table_rows(records)}
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(markdown(result))
    failed = [r["name"] for r in records if "error" in r]
    print(f"\n{len(records)} benchmark(s) in {total / 60:.1f} min"
          + (f"; failed: {', '.join(failed)}" if failed else "")
          + f"\nwrote {out / 'results.md'} and {out / 'results.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
