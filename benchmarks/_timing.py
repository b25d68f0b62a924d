"""Timing helpers shared by the benchmark scripts (imported as ``_timing`` from beside them)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

__all__ = ["best", "best_with_result"]


def best_with_result(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    """Shortest wall time of ``repeat`` calls of ``fn``, and the last call's result."""
    times, out = [], None
    for _ in range(max(repeat, 1)):
        t0 = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - t0)
    return min(times), out


def best(fn: Callable[[], Any], repeat: int) -> float:
    """Shortest wall time of ``repeat`` calls of ``fn``."""
    return best_with_result(fn, repeat)[0]
