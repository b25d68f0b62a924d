"""Machine-readable results of the benchmark scripts (their ``--json PATH`` option).

Imported as ``_results`` from beside them. Every script writes a JSON list of rows, one
per measurement, which ``run_all.py`` gathers into one table::

    {"benchmark": "roc", "measure": "ROC + AUC, continuous scores", "size": "1,000,000 scores",
     "unit": "scores/s", "value": 1.2e6, "baseline": "scikit-learn roc_curve + roc_auc_score",
     "baseline_value": 1.1e5, "ratio": 10.9, "note": "..."}

``ratio`` is ``value / baseline_value`` (for throughputs: above 1, hepml is faster);
``baseline`` and ``baseline_value`` are ``None`` where the measurement has no baseline.
``note`` is optional.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

__all__ = ["FIELDS", "row", "write_rows"]

#: The keys every row has, in table order.
FIELDS = ("benchmark", "measure", "size", "unit", "value", "baseline", "baseline_value", "ratio")


def _clean(x: float | None) -> float | None:
    if x is None:
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def row(benchmark: str, measure: str, size: str, unit: str, value: float | None,
        baseline: str | None = None, baseline_value: float | None = None, *,
        ratio: float | None = None, note: str | None = None) -> dict[str, Any]:
    """One measurement; ``ratio`` defaults to ``value / baseline_value``."""
    value, baseline_value = _clean(value), _clean(baseline_value)
    if ratio is None and value is not None and baseline_value:
        ratio = value / baseline_value
    out: dict[str, Any] = {"benchmark": benchmark, "measure": measure, "size": size,
                           "unit": unit, "value": value, "baseline": baseline,
                           "baseline_value": baseline_value, "ratio": _clean(ratio)}
    if note:
        out["note"] = note
    return out


def write_rows(path: str | Path | None, rows: list[dict[str, Any]]) -> None:
    """Write ``rows`` as a JSON list to ``path`` (nothing when ``path`` is ``None``)."""
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Path(path).write_text(json.dumps(rows, indent=1) + "\n")
