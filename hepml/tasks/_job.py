"""The shape every task shares: what ``run`` returns, and how a run summarises itself.

Every task runs the same steps — validate (:mod:`hepml.tasks.workflow`, before any work),
data, model, train, evaluate, summarise — and returns a :class:`JobResult`. The result
carries the task's own summary lines (which the CLI prints) and its key metrics (which
the report's first table shows), so that nothing above the task guesses from
``metrics.json`` what kind of run it was.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["JobResult", "Summary", "number", "with_error", "rows"]


@dataclasses.dataclass(frozen=True)
class Summary:
    """How a run summarises itself.

    Attributes:
        lines: Plain-text lines, printed after the run directory (indented by the CLI).
        key_metrics: (label, value) rows of the report's key-metrics table; ``None``
            leaves the table to the report's classification default.
    """

    lines: tuple[str, ...] = ()
    key_metrics: tuple[tuple[str, str], ...] | None = None


@dataclasses.dataclass(frozen=True)
class JobResult:
    """What a task's ``run`` returns.

    Attributes:
        run_dir: The run directory.
        task: The workflow's task.
        summary: The run's own summary (lines and key metrics).
        metrics: The metrics written to ``metrics.json`` (``{}`` on ranks other than 0).
    """

    run_dir: Path
    task: str
    summary: Summary = Summary()
    metrics: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def number(value: Any, spec: str = ".4f") -> str:
    """``value`` formatted with ``spec``; ``n/a`` for a missing, non-numeric or NaN value.

    Example:
        >>> number(0.98765), number(None), number(float("nan")), number(float("inf"), ".1f")
        ('0.9877', 'n/a', 'n/a', 'inf')
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != value:
        return "n/a"
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    return format(value, spec)


def with_error(value: Any, error: Any, spec: str = ".4f") -> str:
    """``value ± error`` (just ``value`` when the error is missing)."""
    text = number(value, spec)
    if isinstance(error, (int, float)) and not isinstance(error, bool) and text != "n/a":
        text += f" ± {number(error, spec)}"
    return text


def rows(pairs: Sequence[tuple[str, str]]) -> tuple[tuple[str, str], ...]:
    """Key-metric rows without the ones whose value is ``n/a``."""
    return tuple((k, v) for k, v in pairs if v != "n/a")
