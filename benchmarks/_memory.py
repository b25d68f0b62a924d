"""Peak memory of a command: summed resident memory of its process tree, sampled.

Imported as ``_memory`` from beside it by the benchmark scripts and ``run_all.py``.

:func:`run_measured` starts a command, and while it runs adds up the resident set size
(RSS) of the process and of all its descendants (``psutil``) every ``interval`` seconds
(50 ms by default). The peak is the largest of those sums: a spike shorter than the
interval can be missed. (The kernel's own high-water mark of a child, ``ru_maxrss``, is
not used: it includes the memory of the parent that forked it, before its ``exec``.)
RSS counts pages
shared between processes (libraries, copy-on-write memory of forked workers) once per
process, so the sum over a tree of processes is an upper bound of the memory they use
together. Sizes are in MB of 2**20 bytes.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import psutil

__all__ = ["MB", "run_measured", "tree_rss_mb"]

#: Bytes per MB in every figure of the benchmarks (2**20).
MB = 2**20


def tree_rss_mb(proc: psutil.Process) -> float:
    """Summed RSS of ``proc`` and all its descendants, in MB (0 if it is gone)."""
    total = 0
    try:
        procs = [proc, *proc.children(recursive=True)]
    except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
        return 0.0
    for p in procs:
        try:
            total += p.memory_info().rss
        except (psutil.NoSuchProcess, psutil.ZombieProcess, psutil.AccessDenied):
            continue
    return total / MB


def _reader(stream, sink: list[str], lines: list[tuple[float, str, str]] | None, name: str,
            start: float) -> None:
    for line in iter(stream.readline, ""):
        sink.append(line)
        if lines is not None:
            lines.append((time.perf_counter() - start, name, line.rstrip("\n")))
    stream.close()


def _kill_tree(pid: int) -> None:
    try:
        proc = psutil.Process(pid)
        procs = [*proc.children(recursive=True), proc]
    except psutil.NoSuchProcess:
        return
    for p in procs:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            continue


def run_measured(cmd: Sequence[str], env: Mapping[str, str] | None = None, *,
                 cwd: str | Path | None = None, interval: float = 0.05,
                 timeout: float | None = None,
                 samples: list[tuple[float, float]] | None = None,
                 lines: list[tuple[float, str, str]] | None = None,
                 ) -> tuple[int, str, str, float, float]:
    """Run ``cmd`` and measure its wall time and the peak memory of its process tree.

    Args:
        cmd: The command (no shell).
        env: Its environment (default: this process's).
        cwd: Its working directory.
        interval: Seconds between two memory samples.
        timeout: Kill the whole process tree after this many seconds (return code -9,
            a line saying so appended to stderr).
        samples: If given, ``(seconds since start, summed RSS in MB)`` of every sample is
            appended to it.
        lines: If given, ``(seconds since start, "stdout" or "stderr", line)`` of every
            output line is appended to it, to place phases of the command in time.

    Returns:
        ``(returncode, stdout, stderr, wall_s, peak_rss_mb)``.
    """
    start = time.perf_counter()
    proc = subprocess.Popen(list(cmd), env=dict(env) if env is not None else None, cwd=cwd,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            errors="replace")
    out: list[str] = []
    err: list[str] = []
    threads = [threading.Thread(target=_reader, args=(proc.stdout, out, lines, "stdout", start),
                                daemon=True),
               threading.Thread(target=_reader, args=(proc.stderr, err, lines, "stderr", start),
                                daemon=True)]
    for t in threads:
        t.start()
    ps = psutil.Process(proc.pid)
    peak, status, timed_out = 0.0, 0, False
    while True:
        pid, status = os.waitpid(proc.pid, os.WNOHANG)
        if pid == proc.pid:
            break
        rss = tree_rss_mb(ps)
        peak = max(peak, rss)
        if samples is not None:
            samples.append((time.perf_counter() - start, rss))
        if timeout is not None and time.perf_counter() - start > timeout:
            timed_out = True
            _kill_tree(proc.pid)
            _, status = os.waitpid(proc.pid, 0)
            break
        time.sleep(interval)
    wall = time.perf_counter() - start
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here, not by Popen
    for t in threads:
        t.join(timeout=10)
    stderr = "".join(err)
    if timed_out:
        stderr += f"\nkilled after {timeout:.0f} s (timeout)\n"
    return proc.returncode, "".join(out), stderr, wall, peak
