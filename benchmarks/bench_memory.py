"""Peak memory of training and scoring when the input grows tenfold.

Usage::

    python benchmarks/bench_memory.py [--file data_samples/top_qcd_jets.root] [--copies 10] \
        [--step-size 2000] [--part training scoring] [--workers 2] [--cache false true] \
        [--merged] [--json out.json]

The input is ``--file`` (N entries) and ``--copies`` copies of it in a temporary directory
(10 N entries; the copies are read like any other file, mostly from the page cache).
Every command runs in a fresh process; its peak memory is the largest summed resident
memory (RSS) of the process and all its children, sampled every 50 ms
(``_memory.run_measured``).

Training: ``hepml run WORKFLOW --set data.cache=false --set training.epochs=1 --set
data.step_size=S --set training.num_threads=1`` on N and on 10 N entries, and the same with
the default ``data.cache=true`` for contrast. ``hepml run`` also scores every entry with
the best checkpoint and evaluates the test split (metrics, plots, report); the peak of
each phase is placed in time by the run's log lines: setup (imports, indexing the files)
until the model is built, training until the last epoch's line, prediction of all entries
until the prediction friend trees are written, then evaluation.

Scoring: ``hepml predict --checkpoint CKPT FILES --out DIR`` on the first copy and on all
copies, with ``--scheduler synchronous`` (one process) and with the default LocalCluster
(``--workers``; the peak adds up the client, the nannies and the workers). The
checkpoint is the streaming training run's on N entries (or ``--checkpoint``). The same
runs give the scoring rate of ten files (files/s, the whole command: start-up, cluster
and all) on the LocalCluster against the synchronous scheduler.

The goal: peak(10 N) / peak(N) <= 1.2 for streaming training and for scoring; PASS or FAIL
is printed, the exit code does not depend on it. ``--merged`` also trains (streaming) on
one file holding the 10 N entries (the copies written into a single file), which tells
what of the growth comes with the number of files rather than with the number of entries.
``--json`` writes the rows of ``run_all.py``.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

from _memory import run_measured
from _results import row, write_rows

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # hepml from this checkout (for writing the merged file)
    sys.path.insert(0, str(ROOT))
GOAL = 1.2
PHASES = ("setup", "training", "prediction", "evaluation")


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(OMP_NUM_THREADS=env.get("OMP_NUM_THREADS", "1"), TQDM_DISABLE="1",
               PYTHONUNBUFFERED="1", MPLBACKEND="Agg",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p))
    return env


def _phase_peaks(samples: list[tuple[float, float]], lines: list[tuple[float, str, str]],
                 end: float) -> dict[str, float]:
    """Peak RSS (MB) of each phase of ``hepml run``, the phases placed by its log lines."""
    def first(pred) -> float | None:
        return next((t for t, _, line in lines if pred(line)), None)

    def last(pred) -> float | None:
        return next((t for t, _, line in reversed(lines) if pred(line)), None)

    t_model = first(lambda s: "hepml.tasks.tagging: model " in s)
    t_trained = last(lambda s: "hepml.training.trainer: epoch " in s)
    t_predicted = last(lambda s: "hepml.io.writing: wrote " in s and "predictions" in s)
    if None in (t_model, t_trained, t_predicted):
        return {}
    bounds = (0.0, t_model, t_trained, t_predicted, end)
    peaks = {}
    for name, lo, hi in zip(PHASES, bounds[:-1], bounds[1:], strict=True):
        inside = [m for t, m in samples if lo <= t <= hi]
        peaks[name] = max(inside) if inside else float("nan")
    return peaks


def _check(rc: int, err: str, what: str) -> None:
    if rc != 0:
        tail = "\n".join(err.strip().splitlines()[-15:])
        raise SystemExit(f"{what} failed (exit code {rc}):\n{tail}")


def train(workflow: str, files: list[str], cache: bool, args: argparse.Namespace,
          runs: Path) -> dict:
    """One ``hepml run`` in a fresh process: peak, wall time, phase peaks, run directory."""
    cmd = [sys.executable, "-m", "hepml", "run", workflow,
           "--set", f"data.cache={'true' if cache else 'false'}",
           "--set", "training.epochs=1", "--set", f"data.step_size={args.step_size}",
           "--set", "training.num_threads=1", "--set", f"data.files=[{','.join(files)}]",
           "--runs-dir", str(runs)]
    samples: list[tuple[float, float]] = []
    lines: list[tuple[float, str, str]] = []
    rc, out, err, wall, peak = run_measured(cmd, _env(), cwd=ROOT, samples=samples, lines=lines)
    _check(rc, err, f"hepml run on {len(files)} file(s)")
    run_dir = Path(out.split("run directory:")[1].split()[0])
    return {"peak": peak, "wall": wall, "phases": _phase_peaks(samples, lines, wall),
            "run_dir": run_dir, "command": cmd}


def score(checkpoint: Path, files: list[str], scheduler: str | None, workers: int,
          out: Path) -> dict:
    """One ``hepml predict`` in a fresh process: peak (process tree) and wall time."""
    cmd = [sys.executable, "-m", "hepml", "-q", "predict", "--checkpoint", str(checkpoint),
           *files, "--out", str(out)]
    cmd += ["--scheduler", scheduler] if scheduler else ["--workers", str(workers)]
    rc, _, err, wall, peak = run_measured(cmd, _env(), cwd=ROOT)
    _check(rc, err, f"hepml predict on {len(files)} file(s)")
    return {"peak": peak, "wall": wall, "command": cmd}


def _verdict(ratio: float) -> str:
    return f"{'PASS' if ratio <= GOAL else 'FAIL'} (goal <= {GOAL:g})"


def _phases_text(phases: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.0f}" for k, v in phases.items())


def _merged(src: Path, copies: int, dst: Path) -> Path:
    """One file holding ``copies`` times the entries of ``src`` (all its branches)."""
    import awkward as ak
    import uproot

    from hepml.io.writing import write_tree

    with uproot.open(src) as f:
        name = next(k.split(";")[0] for k, v in f.items() if hasattr(v, "num_entries"))
        arrays = f[name].arrays()
    fields = [k for k in arrays.fields if not k.startswith("n")
              or not any(o.startswith(k[1:]) for o in arrays.fields)]
    big = ak.concatenate([arrays[fields]] * copies)
    return write_tree(dst, {k: big[k] for k in fields}, tree=name)


def _entries(path: str) -> int:
    import uproot

    with uproot.open(path) as f:
        return max((v.num_entries for k, v in f.items() if hasattr(v, "num_entries")),
                   default=0)


def main(argv: list[str] | None = None) -> int:
    """Run the measurements and print them."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", default=str(ROOT / "data_samples" / "top_qcd_jets.root"),
                   help="the input of N entries, in the workflow's layout "
                   "(default: %(default)s)")
    p.add_argument("--workflow", default=str(ROOT / "workflows" / "top_tagging_cnn.yaml"),
                   help="workflow trained and scored (default: %(default)s)")
    p.add_argument("--copies", type=int, default=10,
                   help="copies of --file for the 10 N input (default: %(default)s)")
    p.add_argument("--step-size", type=int, default=2000,
                   help="data.step_size of the training (default: %(default)s)")
    p.add_argument("--part", nargs="+", choices=("training", "scoring"),
                   default=["training", "scoring"],
                   help="which measurements to run (default: %(default)s)")
    p.add_argument("--workers", type=int, default=2,
                   help="LocalCluster workers of the scoring (default: %(default)s)")
    p.add_argument("--checkpoint", type=Path,
                   help="checkpoint for the scoring (default: the streaming run on N entries)")
    p.add_argument("--cache", nargs="+", choices=("false", "true"), default=["false", "true"],
                   help="data.cache values of the training runs (default: %(default)s)")
    p.add_argument("--merged", action="store_true",
                   help="also train (streaming) on one file holding the 10 N entries")
    p.add_argument("--tmp", help="work directory (default: a temporary one, removed after)")
    p.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = p.parse_args(argv)

    tmp_obj = None if args.tmp else tempfile.TemporaryDirectory(prefix="hepml-bench-memory-")
    tmp = Path(args.tmp or tmp_obj.name)
    tmp.mkdir(parents=True, exist_ok=True)
    src = Path(args.file).resolve()
    copies = []
    for k in range(args.copies):
        dst = tmp / f"{src.stem}_copy{k:02d}{src.suffix}"
        shutil.copyfile(src, dst)
        copies.append(str(dst))
    n = _entries(str(src))
    one, many = f"{n:,} entries (1 file)", f"{n * args.copies:,} entries ({args.copies} copies)"
    print(f"input: {src} ({n:,} entries) and {args.copies} copies of it in {tmp}; peak = summed "
          f"RSS of the process tree, sampled every 50 ms; MB = 2**20 bytes")
    rows: list[dict] = []
    checkpoint = args.checkpoint
    if "training" in args.part:
        print(f"\ntraining: hepml run {Path(args.workflow).name}, 1 epoch, data.step_size "
              f"{args.step_size}, 1 thread")
        print(f"{'data.cache':<11}{'input':<32}{'peak MB':>9}{'wall s':>8}   peak MB per phase")
        for cache in (c == "true" for c in args.cache):
            res = {}
            for label, files in ((one, [str(src)]), (many, copies)):
                r = train(args.workflow, files, cache, args, tmp / "runs")
                res[label] = r
                print(f"{str(cache).lower():<11}{label:<32}{r['peak']:>9.0f}{r['wall']:>8.0f}   "
                      f"{_phases_text(r['phases'])}")
            ratio = res[many]["peak"] / res[one]["peak"]
            mode = "data.cache=false (streaming)" if not cache else "data.cache=true (default)"
            verdict = _verdict(ratio) if not cache else "grows with the input, as expected"
            print(f"{'':<11}ratio {args.copies} N / N: {ratio:.2f} {verdict}")
            rows.append(row(
                "memory", f"peak RSS, hepml run (train 1 epoch + evaluate), {mode}", many, "MB",
                res[many]["peak"], f"same on {one}", res[one]["peak"],
                note=f"{verdict}; step_size {args.step_size}; peak MB per phase at 10 N: "
                     f"{_phases_text(res[many]['phases'])}; at N: "
                     f"{_phases_text(res[one]['phases'])}"))
            if not cache and checkpoint is None:
                checkpoint = res[one]["run_dir"] / "checkpoint_best.pt"
            if not cache and args.merged:
                merged = _merged(src, args.copies, tmp / f"{src.stem}_x{args.copies}{src.suffix}")
                label = f"{n * args.copies:,} entries (1 file)"
                r = train(args.workflow, [str(merged)], False, args, tmp / "runs")
                ratio_m = r["peak"] / res[one]["peak"]
                print(f"{'false':<11}{label:<32}{r['peak']:>9.0f}{r['wall']:>8.0f}   "
                      f"{_phases_text(r['phases'])}")
                print(f"{'':<11}ratio {args.copies} N in one file / N: {ratio_m:.2f} "
                      f"{_verdict(ratio_m)}")
                rows.append(row(
                    "memory", f"peak RSS, hepml run, {mode}, 10 N in one file", label, "MB",
                    r["peak"], f"same on {one}", res[one]["peak"],
                    note=f"{_verdict(ratio_m)}; peak MB per phase: {_phases_text(r['phases'])}"))
    if "scoring" in args.part:
        if checkpoint is None:
            print("\nno --checkpoint: training one on N entries for the scoring")
            r = train(args.workflow, [str(src)], False, args, tmp / "runs")
            checkpoint = r["run_dir"] / "checkpoint_best.pt"
        print(f"\nscoring: hepml predict --checkpoint {checkpoint}")
        print(f"{'scheduler':<34}{'input':<32}{'peak MB':>9}{'wall s':>8}{'files/s':>9}")
        walls = {}
        for scheduler, label in (("synchronous", "--scheduler synchronous"),
                                 (None, f"LocalCluster, --workers {args.workers}")):
            res = {}
            for size, files in ((one, copies[:1]), (many, copies)):
                r = score(checkpoint, files, scheduler, args.workers,
                          tmp / f"pred_{scheduler or 'local'}_{len(files)}")
                res[size] = r
                print(f"{label:<34}{size:<32}{r['peak']:>9.0f}{r['wall']:>8.1f}"
                      f"{len(files) / r['wall']:>9.3f}")
            ratio = res[many]["peak"] / res[one]["peak"]
            print(f"{'':<34}ratio {args.copies} N / N: {ratio:.2f} {_verdict(ratio)}")
            rows.append(row("memory", f"peak RSS, hepml predict {label}", many, "MB",
                            res[many]["peak"], f"same on {one}", res[one]["peak"],
                            note=_verdict(ratio) + ("; summed over client, nannies and "
                                                    "workers" if scheduler is None else "")))
            walls[scheduler] = res[many]["wall"]
        rows.append(row("dask_scoring", f"hepml predict, {args.copies} files, LocalCluster "
                        f"{args.workers} workers", many, "files/s",
                        args.copies / walls[None], "--scheduler synchronous (one process)",
                        args.copies / walls["synchronous"],
                        note="wall time of the whole command (start-up, cluster, scoring, "
                             "writing); same runs as the scoring memory rows"))
    write_rows(args.json, rows)
    if tmp_obj is not None:
        tmp_obj.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
