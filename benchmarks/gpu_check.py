"""The steps of ``benchmarks/gpu_check.sh``: one prepared check of hepml on one NVIDIA GPU.

Usage::

    python benchmarks/gpu_check.py STEP [--allow-cpu] [options] [--json OUT.json] [--tmp DIR]
    python benchmarks/gpu_check.py report --tmp DIR [--out benchmarks/results]

Steps (``gpu_check.sh`` runs them in this order, each in its own process):

``tests``        ``python -m pytest -m cuda -q -p no:cacheprovider``: passed/failed/skipped.
``workflows``    one epoch of every shipped workflow with ``device: auto`` (mixed precision
                 on CUDA): exit code, wall time, the device and mixed precision recorded in
                 the run's ``metrics.json``; then ``--resume`` of the CNN run to epoch 2.
``roc``          ``hepml.evaluation`` ROC + AUC of ``--n`` scores (default 10^8) on the GPU
                 against scikit-learn's ``roc_auc_score`` on the CPU.
``throughput``   training jets/s of the CNN and ParticleNet of the shipped workflows, GPU
                 (mixed precision) against CPU (float32), random inputs.
``consistency``  ``hepml.representations.knn_indices`` and every model family's outputs on
                 the GPU against the CPU, same weights and inputs, float32, eval mode.
``calogan``      CaloGAN and CaloFlow showers/s on the GPU (batches 1-10000) against the CPU (1000).
``torchrun``     ``torchrun --standalone --nproc-per-node 1 -m hepml -v run`` of the CNN
                 workflow: exit code, time, and which process-group backend was started.
``syncs``        host synchronisations per training batch of the CNN through
                 ``hepml.training.Trainer`` under ``torch.cuda.set_sync_debug_mode("warn")``.
``report``       gathers the steps' JSON, the status and time ``gpu_check.sh`` recorded
                 (``DIR/status.tsv``) and the logs (``DIR/logs``) into ``gpu.md`` and
                 ``gpu.json``.

Each step writes ``{"step", "title", "command", "device", "torch", "tables", "notes",
"failures", ...}`` to ``--json`` and exits 1 when something in it failed (a subprocess, an
exception, a resume that did not reach epoch 2); measured differences are reported, not
judged. ``--allow-cpu`` (or ``GPU_CHECK_DEVICE=cpu``) runs a step on the CPU at tiny sizes,
a smoke test of the code paths and no measurement: the "GPU" side is then the CPU too.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime
import json
import math
import os
import platform
import re
import shlex
import signal
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
try:
    import hepml  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))

from hepml.io.calo import CALOGAN  # noqa: E402
from hepml.models import build_model  # noqa: E402
from hepml.models import model_spec as size_model  # noqa: E402
from hepml.representations import build_representation  # noqa: E402

PACKAGE = str(Path(sys.modules["hepml"].__file__).parent) + os.sep

REALDATA = ROOT.parent / "shared" / "realdata"
#: Workflow -> ``--set`` overrides that keep one epoch small (as ``run_all.py`` does).
WORKFLOWS: dict[str, list[str]] = {
    "top_tagging_cnn": ["data.max_entries=2000"],
    "top_tagging_gnn": ["data.max_entries=2000"],
    "event_classification": ["data.max_entries=2000"],
    "tracking_gnn": [],
    "tracking_lstm": [],
    "anomaly_scan": ["data.max_entries=2000"],
    "anomaly_zmumu": [],
    "dqm_monitor": [],
    "calogan": ["data.max_entries=2000"],
    "caloflow": ["data.max_entries=2000"],
}
#: The stacked calorimeter (30 x 36) + tracker (10 x 36) map of ``workflows/dqm_monitor.yaml``;
#: its representation knows its shape only after reading data.
DQM_MAP = (1, 40, 36)
TITLES = {
    "tests": "cuda-marked tests",
    "workflows": "one epoch of every shipped workflow (device: auto), and --resume",
    "roc": "ROC + AUC: hepml on the GPU against scikit-learn on the CPU",
    "throughput": "training throughput: GPU (mixed precision) against CPU",
    "consistency": "kNN and model outputs: GPU against CPU (float32, eval mode)",
    "calogan": "CaloGAN and CaloFlow generation speed",
    "torchrun": "torchrun with one GPU (nccl)",
    "syncs": "host synchronisations per training batch",
}
STEPS = list(TITLES)


# --------------------------------------------------------------------------- helpers
class Step:
    """What one step measured: tables, notes and failures, written as JSON at the end.

    Args:
        name: The step's name (a key of :data:`TITLES`).
        args: The parsed command line.
    """

    def __init__(self, name: str, args: argparse.Namespace) -> None:
        self.tiny = bool(args.allow_cpu or os.environ.get("GPU_CHECK_DEVICE") == "cpu")
        if self.tiny:
            self.device = torch.device("cpu")
        elif torch.cuda.is_available():
            self.device = torch.device("cuda", torch.cuda.current_device())
        else:
            raise SystemExit("gpu_check: no CUDA device; --allow-cpu (or GPU_CHECK_DEVICE=cpu) "
                             "runs the step on the CPU at tiny sizes")
        self._tmp = Path(args.tmp) if args.tmp else None
        self.data: dict[str, Any] = {
            "step": name, "title": TITLES[name], "command": _shown(sys.argv, self._tmp),
            "device": (torch.cuda.get_device_name(self.device) if self.device.type == "cuda"
                       else "CPU (smoke test with --allow-cpu, not a measurement)"),
            "torch": torch.__version__, "cuda": torch.version.cuda, "tiny": self.tiny,
            "tables": [], "notes": [], "failures": [], "commands": []}

    @property
    def tmp(self) -> Path:
        """The work directory (``--tmp``, or a new temporary one made when first needed)."""
        if self._tmp is None:
            self._tmp = Path(tempfile.mkdtemp(prefix="hepml-gpu-check-"))
        return self._tmp

    def table(self, title: str, columns: list[str], rows: list[list[Any]]) -> None:
        """Add a table (one list of cells per row)."""
        self.data["tables"].append({"title": title, "columns": columns, "rows": rows})

    def note(self, text: str) -> None:
        """Add a note (a finding, or how a number was made)."""
        print("note:", text, flush=True)
        self.data["notes"].append(text)

    def fail(self, text: str) -> None:
        """Record a failure; the step then exits 1."""
        print("FAILED:", text, flush=True)
        self.data["failures"].append(text)

    def sync(self) -> None:
        """Wait for the device."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)


def _shown(cmd: list[str], tmp: Path | None = None) -> str:
    """A command as a user would type it: ``python``, paths relative to the checkout."""
    parts = ["python" if c == sys.executable else c for c in cmd]
    if parts and parts[0].endswith("gpu_check.py"):
        parts = ["python", "benchmarks/gpu_check.py", *parts[1:]]
    text = shlex.join(parts).replace(str(ROOT) + "/", "")
    return text.replace(str(tmp), "$TMP") if tmp else text


def _env(cpu: bool) -> dict[str, str]:
    env = dict(os.environ, MPLBACKEND="Agg", TQDM_DISABLE="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
    if cpu:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


def _run(cmd: list[str], *, cpu: bool, timeout: float, log: Path) -> tuple[int, str, float]:
    """Run ``cmd`` in the checkout: (exit code, stdout + stderr, seconds); output in ``log``.

    The command gets its own process group, killed as a whole after ``timeout`` seconds
    (exit code 124, as ``timeout(1)`` gives).
    """
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ROOT, env=_env(cpu), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        out, _ = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, _ = proc.communicate()
        out += f"\n[gpu_check: stopped after {timeout:.0f} s]\n"
        rc = 124
    except BaseException:  # this step is being stopped: take the subprocess along
        os.killpg(proc.pid, signal.SIGKILL)
        raise
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text(out)
    return rc, out, time.perf_counter() - t0


def _tail(text: str, n: int = 5) -> str:
    lines = [ln.rstrip() for ln in text.strip().splitlines() if ln.strip()]
    return "\n".join(lines[-n:])


def _best(fn: Callable[[], Any], repeat: int, step: Step) -> tuple[float, Any]:
    """Shortest wall time of ``repeat`` calls (device synchronised), and the last result."""
    times, out = [], None
    for _ in range(max(repeat, 1)):
        step.sync()
        t0 = time.perf_counter()
        out = fn()
        step.sync()
        times.append(time.perf_counter() - t0)
    return min(times), out


def _metrics(run_dir: Path | None) -> dict[str, Any]:
    path = run_dir / "metrics.json" if run_dir else None
    return json.loads(path.read_text()) if path and path.exists() else {}


def _run_dir(out: str) -> Path | None:
    m = re.search(r"^run directory: (.+)$", out, flags=re.M)
    return Path(m.group(1).strip()) if m else None


# --------------------------------------------------------------------------- models
def workflow(name: str) -> dict[str, Any]:
    """The parsed ``workflows/NAME.yaml``."""
    return yaml.safe_load((ROOT / "workflows" / f"{name}.yaml").read_text())


def model_spec(name: str) -> tuple[str, dict[str, Any]]:
    """Kind and arguments of the model of ``workflows/NAME.yaml``.

    Sized by :func:`hepml.models.model_spec`, as the tasks size it, from the workflow's
    representation (:data:`DQM_MAP` for the DQM maps, which know their shape only after
    reading data) and number of classes; the CaloGAN from the CaloGAN layout, e+ over
    1-100 GeV, as the shipped showers give.
    """
    wf = workflow(name)
    kind = wf["model"]["kind"]
    if kind in ("calogan", "caloflow"):
        shape, context = CALOGAN.shapes, {"particles": [-11], "energy_range": (1.0, 100.0)}
    else:
        rep = wf.get("representation")
        shape = (build_representation(rep).output_shape if rep else None) or DQM_MAP
        context = {"num_classes": len(wf["data"].get("class_names") or []),
                   "flatten": wf["task"] == "dqm"}
    spec = size_model(kind, wf["model"], shape, **context)
    return spec["kind"], spec["kwargs"]


def make_model(name: str, seed: int = 0) -> torch.nn.Module:
    """The model of ``workflows/NAME.yaml`` with seeded random weights, on the CPU."""
    torch.manual_seed(seed)
    kind, kwargs = model_spec(name)
    return build_model(kind, **kwargs)


def make_inputs(name: str, batch: int, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """Random CPU inputs of the shapes the model of ``workflows/NAME.yaml`` takes.

    Padded inputs (particles, graph nodes, hits, track prefixes) get random lengths and
    zeros where padded, as the representations build them.
    """
    g = torch.Generator().manual_seed(seed)
    kind, kw = model_spec(name)
    wf = workflow(name)
    rep = build_representation(wf["representation"]).output_shape if "representation" in wf \
        else None
    if kind in ("cnn", "conv_autoencoder"):
        c, h, w = (kw["in_channels"], *kw["image_size"])
        return (torch.rand(batch, c, h, w, generator=g),)
    if kind == "autoencoder":
        return (torch.randn(batch, kw["input_dims"], generator=g),)
    if kind == "particlenet":
        n_max = rep["features"][1]
        mask = torch.arange(n_max) < torch.randint(10, n_max + 1, (batch, 1), generator=g)
        points = torch.randn(batch, rep["points"][0], n_max, generator=g) * 0.4
        feats = torch.randn(batch, kw["input_dims"], n_max, generator=g)
        return points * mask[:, None], feats * mask[:, None], mask
    if kind == "gnn":
        n, k = rep["neighbors"]
        mask = torch.arange(n) < torch.randint(2, n + 1, (batch, 1), generator=g)  # [B, N]
        j = torch.arange(k)[None, :] + (torch.arange(k)[None, :] >= torch.arange(n)[:, None])
        nb = j.expand(batch, n, k).clone()  # every other node (edges: full)
        real = mask[:, :, None] & torch.gather(mask[:, None, :].expand(batch, n, n), 2,
                                               j.expand(batch, n, k))
        nb[~real] = -1
        x = torch.randn(batch, n, kw["input_dims"], generator=g) * mask[..., None]
        ea = torch.randn(batch, n, k, kw["edge_dims"], generator=g) * real[..., None]
        return x, nb, ea, mask
    if kind == "interaction_network":
        hits, edges = 400, 1200
        x = torch.randn(batch, hits, kw["input_dims"], generator=g)
        e = torch.randint(0, hits, (batch, edges, 2), generator=g)
        e[:, -edges // 10:] = -1  # padding
        ea = torch.randn(batch, edges, kw["edge_dims"], generator=g) * (e[..., :1] >= 0)
        return x, e, ea
    if kind == "lstm_tracker":
        t = rep["x"][0]
        lengths = torch.randint(1, t + 1, (batch,), generator=g)
        x = torch.randn(batch, t, kw["input_dims"], generator=g)
        return x * (torch.arange(t)[None, :, None] < lengths[:, None, None]), lengths
    if kind in ("calogan", "caloflow"):
        energy = 1.0 + 99.0 * torch.rand(batch, generator=g)
        noise = make_model(name).noise_sizes()
        return (energy, torch.zeros(batch, dtype=torch.long),
                *(torch.randn(batch, size, generator=g) for size in noise.values()))
    raise ValueError(f"no inputs for model kind {kind}")


def _tensors(out: Any) -> list[torch.Tensor]:
    if isinstance(out, torch.Tensor):
        return [out]
    if isinstance(out, dict):
        out = list(out.values())
    if isinstance(out, (list, tuple)):
        return [t for o in out for t in _tensors(o)]
    return []


# --------------------------------------------------------------------------- steps
def step_tests(step: Step, args: argparse.Namespace) -> None:
    """Step 1: the cuda-marked tests."""
    cmd = [sys.executable, "-m", "pytest", "-m", "cuda", "-q", "-p", "no:cacheprovider"]
    step.data["commands"].append(_shown(cmd))
    rc, out, wall = _run(cmd, cpu=step.tiny, timeout=args.timeout,
                         log=step.tmp / "logs" / "tests.pytest.log")
    summary = [ln for ln in out.splitlines() if re.search(r"\d+ (passed|failed|skipped|deselected"
                                                          r"|errors?)|no tests ran", ln)]
    last = summary[-1].strip("= ") if summary else "no pytest summary line"
    counts = {k.rstrip("s"): int(n) for n, k in
              re.findall(r"(\d+) (passed|failed|skipped|deselected|errors?|xfailed|xpassed)",
                         last)}
    step.data["counts"] = counts
    step.table("pytest -m cuda", ["passed", "failed", "skipped", "errors", "deselected",
                                  "exit code", "wall s"],
               [[counts.get("passed", 0), counts.get("failed", 0), counts.get("skipped", 0),
                 counts.get("error", 0), counts.get("deselected", 0), rc, round(wall, 1)]])
    step.note(f"pytest: {last}")
    for line in out.splitlines():
        if line.startswith(("FAILED", "ERROR")):
            step.note(line.strip())
    if rc != 0:
        step.fail(f"pytest exit code {rc}: {last}")


def step_workflows(step: Step, args: argparse.Namespace) -> None:
    """Step 2: one epoch of every shipped workflow, then ``--resume`` of the CNN to epoch 2."""
    from hepml.training import load_checkpoint

    names = args.only or (["top_tagging_cnn"] if step.tiny else list(WORKFLOWS))
    runs = step.tmp / "runs"
    rows: list[list[Any]] = []  # filled as the runs end: kept if the step is stopped
    step.table("one epoch (`--set training.epochs=1`)", ["workflow", "status", "exit code",
               "wall s", "device", "mixed precision", "error"], rows)
    cnn = None
    for name in names:
        sets = ["training.epochs=1", *WORKFLOWS.get(name, [])]
        if step.tiny:
            sets = [s for s in sets if not s.startswith("data.max_entries")]
            sets.append("data.max_entries=600")  # device: auto finds no CUDA device
        if name == "event_classification" and not REALDATA.exists():
            sets.append("apply=[]")
            step.note(f"{REALDATA} is absent: event_classification runs with apply=[]")
        if name == "anomaly_zmumu" and not REALDATA.exists():
            rows.append([name, "skipped", None, None, None, None, f"{REALDATA} is absent"])
            continue
        cmd = [sys.executable, "-m", "hepml", "-q", "run", f"workflows/{name}.yaml",
               *(x for s in sets for x in ("--set", s)), "--runs-dir", str(runs)]
        step.data["commands"].append(_shown(cmd, step.tmp))
        print(f"{name}: {_shown(cmd, step.tmp)}", flush=True)
        rc, out, wall = _run(cmd, cpu=step.tiny, timeout=args.timeout,
                             log=step.tmp / "logs" / f"workflows.{name}.log")
        run_dir = _run_dir(out)
        training = _metrics(run_dir).get("training", {})
        mp = training.get("mixed_precision", "not recorded (keys: " + ", ".join(training) + ")")
        result = "" if rc == 0 else _tail(out, 3).replace("\n", " / ")
        rows.append([name, "ok" if rc == 0 else "failed", rc, round(wall, 1),
                     training.get("device"), mp, result])
        if rc != 0:
            step.fail(f"{name}: exit code {rc}: {_tail(out, 3)}")
        elif name == "top_tagging_cnn":
            cnn = (run_dir, sets)
    if cnn is None:
        if "top_tagging_cnn" in names:
            step.fail("--resume not checked: the top_tagging_cnn run failed")
        return
    run_dir, sets = cnn
    sets = [s if s != "training.epochs=1" else "training.epochs=2" for s in sets]
    cmd = [sys.executable, "-m", "hepml", "-q", "run", "workflows/top_tagging_cnn.yaml",
           *(x for s in sets for x in ("--set", s)), "--resume", str(run_dir),
           "--runs-dir", str(runs)]
    step.data["commands"].append(_shown(cmd, step.tmp))
    rc, out, wall = _run(cmd, cpu=step.tiny, timeout=args.timeout,
                         log=step.tmp / "logs" / "workflows.resume.log")
    epoch, hist = None, []
    if (run_dir / "checkpoint_last.pt").exists():
        state = load_checkpoint(run_dir / "checkpoint_last.pt")
        epoch, hist = int(state["epoch"]), [int(h["epoch"]) for h in state.get("history", [])]
    same = _run_dir(out) == run_dir
    step.table("`--resume` of the top_tagging_cnn run with `--set training.epochs=2`",
               ["exit code", "wall s", "checkpoint_last.pt epoch", "history epochs",
                "same run directory", "device"],
               [[rc, round(wall, 1), epoch, hist, same,
                 _metrics(run_dir).get("training", {}).get("device")]])
    if rc != 0 or epoch != 2 or hist != [1, 2]:
        step.fail(f"--resume: exit code {rc}, checkpoint epoch {epoch}, history {hist}: "
                  f"{_tail(out, 3)}")


def step_roc(step: Step, args: argparse.Namespace) -> None:
    """Step 3: ROC + AUC of many scores on the GPU against scikit-learn on the CPU."""
    from sklearn.metrics import roc_auc_score

    from hepml.evaluation.metrics import auc, roc_curve

    n = args.n or (100_000 if step.tiny else 100_000_000)
    rng = np.random.default_rng(0)
    labels = rng.random(n) < 0.4
    scores = rng.standard_normal(n, dtype=np.float32)
    scores += 1.2 * labels
    np.negative(scores, out=scores)
    np.exp(scores, out=scores)
    scores += 1.0
    np.reciprocal(scores, out=scores)  # probabilities in (0, 1), float32, few ties
    s_t = torch.from_numpy(scores).to(step.device)
    y_t = torch.from_numpy(labels).to(step.device)

    def ours() -> tuple[float, int]:
        roc = roc_curve(s_t, y_t)
        return auc(roc.fpr, roc.tpr), roc.thresholds.numel()

    ours()  # warm-up: CUDA kernels and the caching allocator
    t_ours, (auc_ours, points) = _best(ours, args.repeat, step)
    t0 = time.perf_counter()
    auc_sk = float(roc_auc_score(labels, scores))
    t_sk = time.perf_counter() - t0
    diff = abs(auc_ours - auc_sk)
    step.data["result"] = {"n": n, "auc_hepml": auc_ours, "auc_sklearn": auc_sk, "abs_diff": diff,
                           "hepml_s": t_ours, "sklearn_s": t_sk, "speedup": t_sk / t_ours}
    step.table(f"{n:,} float32 scores (40 % signal), ROC with {points:,} points",
               ["", "device", "seconds", "scores/s", "AUC"],
               [["hepml roc_curve + auc", str(step.device), t_ours, n / t_ours, auc_ours],
                ["scikit-learn roc_auc_score", "cpu", t_sk, n / t_sk, auc_sk]])
    step.note(f"|AUC difference| {diff:.2e}; speed-up {t_sk / t_ours:.1f}x (hepml: best of "
              f"{args.repeat} after a warm-up; scikit-learn: one call)")
    if not diff < 1e-9:
        step.fail(f"AUCs differ by {diff:.2e} (hepml {auc_ours!r}, scikit-learn {auc_sk!r})")


def _train_rate(model: torch.nn.Module, inputs: tuple[torch.Tensor, ...], target: torch.Tensor,
                device: torch.device, optimizer: str, lr: float, warmup: int, steps: int
                ) -> float:
    """Examples/s of ``steps`` optimiser steps on one resident batch (after ``warmup``)."""
    amp = device.type == "cuda"
    model = model.to(device).train()
    cls = torch.optim.AdamW if optimizer == "adamw" else torch.optim.Adam
    opt = cls(model.parameters(), lr=lr)
    scaler = torch.amp.GradScaler("cuda", enabled=amp)
    loss_fn = torch.nn.CrossEntropyLoss()
    xs, y = [t.to(device) for t in inputs], target.to(device)

    def one() -> None:
        opt.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=torch.float16, enabled=amp):
            loss = loss_fn(model(*xs).float(), y)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    for _ in range(warmup):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps * len(y) / (time.perf_counter() - t0)


def step_throughput(step: Step, args: argparse.Namespace) -> None:
    """Step 4: training jets/s of the CNN and ParticleNet, GPU (mixed precision) and CPU."""
    rows = []
    for name in ("top_tagging_cnn", "top_tagging_gnn"):
        wf = workflow(name)
        bs = args.batch_size or (16 if step.tiny else wf["training"]["batch_size"])
        kind, kwargs = model_spec(name)
        inputs = make_inputs(name, bs)
        target = torch.randint(0, kwargs["num_classes"], (bs,))
        opt, lr = wf["training"]["optimizer"], wf["training"]["learning_rate"]
        fast = kind == "cnn"
        gpu_steps = args.steps or (3 if step.tiny else (200 if fast else 60))
        cpu_steps = args.cpu_steps or (2 if step.tiny else (20 if fast else 5))
        gpu = _train_rate(make_model(name), inputs, target, step.device, opt, lr,
                          warmup=1 if step.tiny else 10, steps=gpu_steps)
        cpu = _train_rate(make_model(name), inputs, target, torch.device("cpu"), opt, lr,
                          warmup=1, steps=cpu_steps)
        label = f"{kind} ({kwargs.get('preset', 'DeepTop')})"
        rows.append([label, bs, f"{gpu_steps} / {cpu_steps}", gpu, cpu, gpu / cpu])
        print(f"{label}: {gpu:,.0f} jets/s on {step.device}, {cpu:,.0f} on cpu", flush=True)
    step.table("training jets/s (forward, cross-entropy, backward, optimiser step)",
               ["model", "batch", "steps GPU / CPU", f"jets/s {step.device} (AMP)",
                "jets/s cpu (float32)", "ratio"], rows)
    step.note(f"models as the shipped workflows build them, random inputs resident on the "
              f"device (no reading or host-to-device copies), one warm-up; CPU: "
              f"{torch.get_num_threads()} torch threads")


def step_consistency(step: Step, args: argparse.Namespace) -> None:
    """Step 5: kNN indices and model outputs on the GPU against the CPU."""
    from hepml.representations import knn_indices

    g = torch.Generator().manual_seed(1)
    b, n = (32, 50) if step.tiny else (1024, 100)
    rows = []
    for dim, k, periodic in ((2, 7, ()), (2, 16, ()), (2, 16, (1,)), (64, 16, ())):
        pts = torch.randn(b, n, dim, generator=g)
        mask = torch.arange(n) < torch.randint(5, n + 1, (b, 1), generator=g)
        cpu = knn_indices(pts, k, mask, periodic_dims=periodic)
        dev = knn_indices(pts.to(step.device), k, mask.to(step.device), periodic_dims=periodic)
        same = dev.indices.cpu() == cpu.indices
        valid = cpu.valid
        rows.append([f"[{b}, {n}, {dim}]", k, list(periodic) or "–",
                     float(same[valid].float().mean()), float(same.all(-1).float().mean()),
                     bool(torch.equal(dev.valid.cpu(), valid))])
    step.table("knn_indices: the same random points on both devices (random lengths, padding)",
               ["points", "k", "periodic dims", "fraction of neighbours identical",
                "fraction of rows identical", "valid masks equal"], rows)
    models = ["top_tagging_cnn", "top_tagging_gnn", "event_classification", "tracking_gnn",
              "tracking_lstm", "anomaly_zmumu", "anomaly_scan", "dqm_monitor", "calogan",
              "caloflow"]
    tf32 = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    rows = []
    for name in models:
        try:
            row = _compare_model(step, name, 4 if step.tiny else 64, tf32)
        except Exception as exc:  # one broken family does not hide the others
            traceback.print_exc()
            step.fail(f"{name}: {type(exc).__name__}: {exc}")
            row = [name, "", "", None, None, None, f"{type(exc).__name__}: {exc}"]
        rows.append(row)
    step.table("model outputs: max |GPU - CPU| / max |CPU|, same weights and inputs",
               ["workflow", "model", "output elements", "max abs CPU",
                f"TF32 as set (matmul {tf32[0]}, cuDNN {tf32[1]})", "TF32 off", "error"], rows)
    step.note("models in eval mode, float32, no autocast, torch.no_grad; random weights "
              "(seeded) and random inputs of the workflows' shapes; CaloGAN: its generator "
              "with the same latent vectors")


def _compare_model(step: Step, name: str, batch: int, tf32: tuple[bool, bool]) -> list[Any]:
    model = make_model(name).eval()
    inputs = make_inputs(name, batch)
    with torch.no_grad():
        ref = [t.float() for t in _tensors(model(*inputs))]
        gpu_model = copy.deepcopy(model).to(step.device)
        rel = []
        for allow in (tf32, (False, False)):
            with _tf32(*allow):
                out = _tensors(gpu_model(*(t.to(step.device) for t in inputs)))
            diff = max(float((o.float().cpu() - r).abs().max()) for o, r in zip(out, ref,
                                                                               strict=True))
            scale = max(float(r.abs().max()) for r in ref)
            rel.append(diff / scale if scale > 0 else diff)
    kind = model_spec(name)[0]
    return [name, kind, sum(r.numel() for r in ref), max(float(r.abs().max()) for r in ref),
            *rel, ""]


@contextlib.contextmanager
def _tf32(matmul: bool, cudnn: bool) -> Iterator[None]:
    old = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = matmul, cudnn
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def step_calogan(step: Step, args: argparse.Namespace) -> None:
    """Step 6: CaloGAN and CaloFlow showers/s on the GPU against the CPU."""
    from hepml.tasks.calosim import generation_speed

    gpu_batches = args.batch_sizes or ([100, 1000] if step.tiny else [1, 100, 1000, 10000])
    cpu_batch = 100 if step.tiny else 1000
    min_s = 0.1 if step.tiny else 0.3
    rows, step.data["result"] = [], {}
    for name in ("calogan", "caloflow"):
        model = make_model(name).eval()
        cpu = generation_speed(model, device=torch.device("cpu"), batch_sizes=[cpu_batch],
                               min_seconds=min_s)[cpu_batch]
        gpu = generation_speed(model.to(step.device), device=step.device,
                               batch_sizes=gpu_batches, min_seconds=min_s)
        rows += [[name, str(step.device), bs, rate, rate / cpu] for bs, rate in gpu.items()]
        rows.append([name, "cpu", cpu_batch, cpu, 1.0])
        step.data["result"][name] = {"gpu": gpu, "cpu": {cpu_batch: cpu}}
    step.table("showers/s of model.sample (e+ at 50 GeV) by hepml.tasks.calosim."
               "generation_speed", ["generator", "device", "batch", "showers/s",
                                    f"/ cpu at {cpu_batch}"], rows)
    step.note(f"the generators of workflows/calogan.yaml and workflows/caloflow.yaml with "
              f"untrained weights (same cost); best of 3 timings of at least {min_s} s after "
              f"a warm-up; float32; CPU: {torch.get_num_threads()} torch threads")


def step_torchrun(step: Step, args: argparse.Namespace) -> None:
    """Step 7: the CNN workflow under torchrun with one process; which backend started."""
    entries = 600 if step.tiny else 2000
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node",
           "1", "-m", "hepml", "-v", "run", "workflows/top_tagging_cnn.yaml", "--set",
           "training.epochs=1", "--set", f"data.max_entries={entries}", "--runs-dir",
           str(step.tmp / "runs")]
    shown = _shown(cmd, step.tmp).replace("python -m torch.distributed.run", "torchrun")
    step.data["commands"].append(shown)
    rc, out, wall = _run(cmd, cpu=step.tiny, timeout=args.timeout,
                         log=step.tmp / "logs" / "torchrun.hepml.log")
    m = re.search(r"torchrun: rank (\d+) of (\d+), backend (\w+)", out)
    backend = m.group(3) if m else None
    training = _metrics(_run_dir(out)).get("training", {})
    step.table("torchrun --standalone --nproc-per-node 1", ["exit code", "wall s",
               "process group started", "log line", "device", "mixed precision"],
               [[rc, round(wall, 1), backend or "none", m.group(0) if m else "–",
                 training.get("device"), training.get("mixed_precision")]])
    if backend:
        step.note(f"process group backend: {backend} (\"{m.group(0)}\" in the log)")
    else:
        step.note("no process group was started (no \"torchrun: rank ... backend\" line in "
                  "the log), so nccl was not exercised")
    if rc != 0:
        step.fail(f"torchrun exit code {rc}: {_tail(out, 3)}")


def _capture_syncs(fn: Callable[[], Any], cuda: bool) -> list[dict[str, Any]]:
    """Run ``fn`` under ``set_sync_debug_mode("warn")``; one record per synchronising call.

    Warnings raised in Python threads come through :mod:`warnings` with the Python stack;
    those raised where no Python frame is current (autograd's device threads) go to the
    C++ stderr, which is read back from file descriptor 2.
    """
    records: list[dict[str, Any]] = []

    def show(message: Any, category: Any, filename: str, lineno: int, file: Any = None,
             line: Any = None) -> None:
        stack = traceback.extract_stack()[:-1]
        ours = [f for f in stack if f.filename.startswith(PACKAGE)
                or f.filename == str(Path(__file__).resolve())]
        where = ours[-1] if ours else stack[-1]
        records.append({"message": str(message).splitlines()[0], "category": category.__name__,
                        "at": f"{_short(filename)}:{lineno}",
                        "caller": f"{_short(where.filename)}:{where.lineno} ({where.name}): "
                                  f"{(where.line or '').strip()}"})

    with tempfile.TemporaryFile(mode="w+") as err, warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = show
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(err.fileno(), 2)
        try:
            if cuda:
                torch.cuda.set_sync_debug_mode("warn")
            fn()
        finally:
            if cuda:
                torch.cuda.set_sync_debug_mode(0)
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
        err.seek(0)
        for line in err.read().splitlines():
            if "synchroniz" in line.lower():
                records.append({"message": line.strip()[:200], "category": "stderr (C++)",
                                "at": "no Python frame", "caller": "no Python frame"})
    return records


def _short(path: str) -> str:
    for base in (str(ROOT) + "/", *(p + "/" for p in sys.path if p.endswith("-packages"))):
        if path.startswith(base):
            return path[len(base):]
    return path


def step_syncs(step: Step, args: argparse.Namespace) -> None:
    """Step 8: host synchronisations per training batch of the CNN through the Trainer."""
    os.environ["TQDM_DISABLE"] = "1"
    from hepml.config import TrainingConfig
    from hepml.training import ChunkedDataset, Trainer

    kind, kwargs = model_spec("top_tagging_cnn")
    bs = 16 if step.tiny else workflow("top_tagging_cnn")["training"]["batch_size"]
    cfg = TrainingConfig(epochs=1, batch_size=bs, device=str(step.device),
                         early_stopping_patience=0)
    torch.manual_seed(0)
    trainer = Trainer(build_model(kind, **kwargs), cfg, run_dir=step.tmp / "syncs",
                      model_spec={"kind": kind, "kwargs": kwargs}, seed=0)

    def dataset(batches: int) -> ChunkedDataset:
        half = batches // 2 * bs  # two chunks, as a job reads them
        x = torch.rand(batches * bs, *make_inputs("top_tagging_cnn", 1)[0].shape[1:])
        y = torch.randint(0, 2, (batches * bs,))
        parts = [(x[:half], y[:half]), (x[half:], y[half:])]
        return ChunkedDataset([lambda p=p: p for p in parts], [len(p[1]) for p in parts],
                              batch_size=bs, shuffle=True, seed=0)

    cuda = step.device.type == "cuda"
    trainer._run_epoch(dataset(4), train=True, desc="warm-up")
    few, many = (2, 4) if step.tiny else (4, 16)
    counts, records = {}, []
    for batches in (few, many):
        data = dataset(batches)
        records = _capture_syncs(lambda d=data: trainer._run_epoch(d, train=True, desc="syncs"),
                                 cuda)
        counts[batches] = sum("synchroniz" in r["message"].lower() for r in records)
    per_batch = (counts[many] - counts[few]) / (many - few)
    per_epoch = counts[few] - per_batch * few
    step.data["result"] = {"per_batch": per_batch, "per_epoch": per_epoch, "counts": counts,
                           "amp": trainer.amp}
    step.table(f"CNN of top_tagging_cnn, batch {bs}, Trainer._run_epoch(train=True), "
               f"mixed precision {trainer.amp}",
               ["batches in the epoch", "synchronising calls"],
               [[b, c] for b, c in counts.items()])
    step.note(f"{per_batch:g} synchronising call(s) per training batch and {per_epoch:g} per "
              f"epoch (the slope and intercept of the two epochs above)")
    by_line = Counter((r["caller"], r["at"], r["message"]) for r in records
                      if "synchroniz" in r["message"].lower())
    step.table(f"where they arose (epoch of {many} batches)",
               ["count", "hepml / gpu_check caller", "raised at", "message"],
               [[c, caller, at, msg] for (caller, at, msg), c in by_line.most_common()])
    other = Counter(r["message"] for r in records if "synchroniz" not in r["message"].lower())
    for msg, c in other.items():
        step.note(f"other warning ({c}x): {msg}")
    if not cuda:
        step.note("on the CPU there is nothing to synchronise: the counts are 0 by construction")


# --------------------------------------------------------------------------- report
def _fmt(x: Any) -> str:
    if x is None:
        return "–"
    if isinstance(x, bool):
        return str(x)
    if isinstance(x, int):
        return f"{x:,}"
    if isinstance(x, float):
        if not math.isfinite(x):
            return str(x)
        if x == 0:
            return "0"
        if abs(x) >= 1e3:
            return f"{x:,.0f}"
        if abs(x) >= 1e-3:
            return f"{x:.4g}"
        return f"{x:.2e}"
    return str(x).replace("|", "/").replace("\n", " / ")


def _machine() -> dict[str, Any]:
    cuda = torch.cuda.is_available()
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    try:
        commit = subprocess.run(["git", "rev-parse", "--short=12", "HEAD"], cwd=ROOT, text=True,
                                capture_output=True, check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"],
                               cwd=ROOT, text=True, capture_output=True).stdout.strip()
        commit += " (with uncommitted changes)" if dirty else ""
    except (OSError, subprocess.CalledProcessError):
        commit = "unknown"
    driver = None
    with contextlib.suppress(OSError, subprocess.CalledProcessError):
        driver = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,"
                                 "noheader"], text=True, capture_output=True,
                                check=True).stdout.strip().splitlines()[0]
    return {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "device": torch.cuda.get_device_name(0) if cuda else "no CUDA device",
            "torch": torch.__version__, "cuda": torch.version.cuda, "driver": driver,
            "cpu": cpu, "cpu_count": os.cpu_count(), "python": platform.python_version(),
            "git_commit": commit}


def report(args: argparse.Namespace) -> int:
    """Gather the steps' results, status and logs into ``gpu.md`` and ``gpu.json``."""
    tmp = Path(args.tmp)
    status: dict[str, tuple[int, float]] = {}
    if (tmp / "status.tsv").exists():
        for line in (tmp / "status.tsv").read_text().splitlines():
            name, rc, t0, t1 = line.split("\t")
            status[name] = (int(rc), float(t1) - float(t0))
    steps = []
    for name in [s for s in STEPS if s in status]:
        rc, wall = status[name]
        path = tmp / f"{name}.json"
        data = json.loads(path.read_text()) if path.exists() else {"step": name,
                                                                   "title": TITLES[name]}
        log = tmp / "logs" / f"{name}.log"
        data.update(status="ok" if rc == 0 else "failed", exit_code=rc, wall_s=round(wall, 1),
                    log=str(log))
        if rc != 0:
            data["log_tail"] = _tail(log.read_text(errors="replace"), 15) if log.exists() else ""
        steps.append(data)
    tiny = os.environ.get("GPU_CHECK_DEVICE") == "cpu"
    result = {"command": "bash benchmarks/gpu_check.sh" + (" --allow-cpu" if tiny else ""),
              "machine": _machine(), "smoke_test_on_cpu": tiny,
              "total_s": round(sum(s["wall_s"] for s in steps), 1), "logs": str(tmp / "logs"),
              "steps": steps}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "gpu.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    (out / "gpu.md").write_text(_markdown(result))
    failed = [s["step"] for s in steps if s["status"] != "ok"]
    print(f"{len(steps)} step(s) in {result['total_s'] / 60:.1f} min"
          + (f"; failed: {', '.join(failed)}" if failed else "; all ok")
          + f"\nwrote {out / 'gpu.md'} and {out / 'gpu.json'}")
    return 1 if failed else 0


def _markdown(result: dict[str, Any]) -> str:
    m = result["machine"]
    lines = ["# hepml on one GPU", "",
             f"`{result['command']}` (from the repository root), {m['date']}, commit "
             f"{m['git_commit']}; total {result['total_s'] / 60:.1f} min; logs in "
             f"`{result['logs']}`.", "",
             f"- device: {m['device']}" + (f" (driver {m['driver']})" if m["driver"] else ""),
             f"- torch {m['torch']} (CUDA {m['cuda']}), Python {m['python']}",
             f"- CPU: {m['cpu']}, {m['cpu_count']} cores", ""]
    if result["smoke_test_on_cpu"]:
        lines += ["**Smoke test on the CPU (`--allow-cpu`): tiny sizes, the \"GPU\" side is the "
                  "CPU; no number below is a measurement.**", ""]
    for i, s in enumerate(result["steps"], 1):
        lines += [f"## {i}. {s['title']}", "",
                  f"**{s['status']}** in {s['wall_s']} s"
                  + (f" (exit code {s['exit_code']})" if s["exit_code"] else "")
                  + (f" on {s['device']}, torch {s['torch']}" if "device" in s else ""), ""]
        if s.get("command"):
            lines += [f"Command: `{s['command']}`", ""]
        if s.get("commands"):
            lines += ["Ran:", ""] + [f"- `{c}`" for c in s["commands"]] + [""]
        for t in s.get("tables", []):
            lines += [f"{t['title']}:", "", "| " + " | ".join(t["columns"]) + " |",
                      "|" + "---|" * len(t["columns"])]
            lines += ["| " + " | ".join(_fmt(c) for c in row) + " |" for row in t["rows"]]
            if not t["rows"]:
                lines.append("| (none) |" + " |" * (len(t["columns"]) - 1))
            lines.append("")
        lines += [f"- {n}" for n in s.get("notes", [])]
        lines += [f"- **failed**: {f}" for f in s.get("failures", [])]
        if s.get("log_tail"):
            lines += ["", "Last lines of the log:", "", "```", s["log_tail"], "```"]
        lines.append("")
    return "\n".join(lines)


# --------------------------------------------------------------------------- main
class Stopped(BaseException):
    """SIGTERM (``timeout`` in ``gpu_check.sh``): the results so far are still written."""


def _stopped(signum: int, frame: object) -> None:
    raise Stopped("stopped by SIGTERM (the time limit of gpu_check.sh); results so far kept")


STEP_FUNCTIONS = {"tests": step_tests, "workflows": step_workflows, "roc": step_roc,
                  "throughput": step_throughput, "consistency": step_consistency,
                  "calogan": step_calogan, "torchrun": step_torchrun, "syncs": step_syncs}


def main(argv: list[str] | None = None) -> int:
    """Run one step (or the report) and return its exit code."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--json", help="write the step's results here")
    common.add_argument("--tmp", help="work directory (runs, logs); default: a new one")
    common.add_argument("--allow-cpu", action="store_true",
                        help="run on the CPU at tiny sizes (smoke test; also "
                             "GPU_CHECK_DEVICE=cpu)")
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="step", required=True, metavar="STEP")
    for name in ("tests", "workflows", "torchrun"):
        s = sub.add_parser(name, parents=[common], help=TITLES[name])
        s.add_argument("--timeout", type=float, default=300,
                       help="seconds after which one subprocess is stopped "
                       "(default: %(default)s)")
        if name == "workflows":
            s.add_argument("--only", nargs="+", choices=list(WORKFLOWS), metavar="NAME",
                           help="only these workflows (default: all; with --allow-cpu: "
                                "top_tagging_cnn)")
    s = sub.add_parser("roc", parents=[common], help=TITLES["roc"])
    s.add_argument("--n", type=int, help="number of scores (default 10^8; 10^5 on the CPU)")
    s.add_argument("--repeat", type=int, default=3,
                   help="timings of hepml, the best kept (default: %(default)s)")
    s = sub.add_parser("throughput", parents=[common], help=TITLES["throughput"])
    s.add_argument("--batch-size", type=int,
                   help="training batch (default: the workflows', 128)")
    s.add_argument("--steps", type=int, help="timed GPU steps (default 200 CNN, 60 ParticleNet)")
    s.add_argument("--cpu-steps", type=int, help="timed CPU steps (default 20 CNN, 5 "
                   "ParticleNet)")
    sub.add_parser("consistency", parents=[common], help=TITLES["consistency"])
    s = sub.add_parser("calogan", parents=[common], help=TITLES["calogan"])
    s.add_argument("--batch-sizes", type=int, nargs="+", help="GPU batches (default 1000 10000)")
    sub.add_parser("syncs", parents=[common], help=TITLES["syncs"])
    s = sub.add_parser("report", help="write gpu.md and gpu.json from a run of gpu_check.sh")
    s.add_argument("--tmp", required=True, help="the work directory of gpu_check.sh")
    s.add_argument("--out", default=str(ROOT / "benchmarks" / "results"),
                   help="where gpu.md and gpu.json go (default: %(default)s)")
    args = p.parse_args(argv)
    if args.step == "report":
        return report(args)
    step = Step(args.step, args)
    signal.signal(signal.SIGTERM, _stopped)
    print(f"{args.step} on {step.data['device']}, torch {torch.__version__}", flush=True)
    try:
        STEP_FUNCTIONS[args.step](step, args)
    except Exception as exc:
        traceback.print_exc()
        step.fail(f"{type(exc).__name__}: {exc}")
    except Stopped as exc:
        step.fail(str(exc))
    finally:
        if args.json:
            Path(args.json).write_text(json.dumps(step.data, indent=1, default=str) + "\n")
    return 1 if step.data["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())
