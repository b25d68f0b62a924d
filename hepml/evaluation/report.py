"""The run report: one self-contained ``report.html`` and an atomically written ``metrics.json``.

The HTML page embeds its PNG figures as base64 ``data:`` URIs, so it can be mailed or
copied alone. Every piece of text that goes into it passes through :func:`html.escape`.
JSON follows :func:`hepml.evaluation.json_safe`: non-finite numbers are ``null``, and a
top-level ``non_finite`` map says which ones were ``inf``, ``-inf`` or ``nan``.
"""

from __future__ import annotations

import base64
import datetime
import html
import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from hepml.errors import BadValueError
from hepml.evaluation.metrics import json_safe
from hepml.io.atomic import atomic_path, write_text
from hepml.io.provenance import versions

log = logging.getLogger(__name__)

__all__ = ["write_report", "write_metrics_json", "software_versions"]

_VERSIONED = ("torch", "uproot", "awkward", "numpy", "scikit-learn", "matplotlib", "mplhep")

_CSS = """
body { font-family: Helvetica, Arial, sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.7em; text-align: right; }
th { background: #f0f0f0; } td.key, th.key { text-align: left; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; font-size: 0.85em; }
figure { display: inline-block; margin: 0.5em; width: 47%; vertical-align: top; }
figure img { width: 100%; } figcaption { text-align: center; font-size: 0.9em; }
.flag { color: #a00; } .muted { color: #777; font-size: 0.9em; }
"""


def software_versions() -> dict[str, str]:
    """Versions of Python, hepml and the main dependencies (``"not installed"`` if absent)."""
    return versions(("python", "hepml", *_VERSIONED), missing="not installed")


def write_metrics_json(path: str | Path, metrics: Mapping[str, Any]) -> Path:
    """Write ``metrics`` as strict JSON, atomically (:func:`hepml.io.atomic.atomic_path`).

    Non-finite floats become ``null`` and are listed in a top-level ``non_finite`` map
    (see :func:`hepml.evaluation.json_safe`); tensors and numpy values become lists.

    Args:
        path: Target file, e.g. ``run_dir / "metrics.json"``.
        metrics: The metrics dict.

    Returns:
        The path written.
    """
    path = Path(path)
    text = json.dumps(json_safe(dict(metrics)), indent=2, allow_nan=False, sort_keys=False)
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text + "\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # a metrics file is meant to be read, whatever the umask
    return path


# ------------------------------------------------------------------------------- helpers


def _e(x: Any) -> str:
    return html.escape(str(x), quote=True)


def _fmt(value: Any, flag: str | None = None, digits: int = 4) -> str:
    """Escaped text of one value; ``None`` with a non-finite flag shows the flag."""
    if value is None:
        return f'<span class="flag">{_e(flag)}</span>' if flag else "&ndash;"
    if isinstance(value, bool):
        return _e(value)
    if isinstance(value, int):
        return _e(f"{value:,}")
    if isinstance(value, float):
        if not math.isfinite(value):
            return f'<span class="flag">{_e(value)}</span>'
        return _e(f"{value:.{digits}g}")
    if isinstance(value, (list, tuple)):
        return ", ".join(_fmt(v, None, digits) for v in value)
    return _e(value)


def _table(rows: Sequence[Sequence[str]], header: Sequence[str] | None = None) -> str:
    """Rows of already-escaped cells; the first column is left-aligned."""
    parts = ["<table>"]
    if header:
        parts.append("<tr>" + "".join(
            f'<th class="{"key" if i == 0 else ""}">{_e(h)}</th>' for i, h in enumerate(header))
            + "</tr>")
    for row in rows:
        parts.append("<tr>" + "".join(
            f'<td class="{"key" if i == 0 else ""}">{c}</td>' for i, c in enumerate(row))
            + "</tr>")
    parts.append("</table>")
    return "\n".join(parts)


def _matrix_table(matrix: Sequence[Sequence[Any]], names: Sequence[str], digits: int) -> str:
    header = ["true \\ predicted", *[str(n) for n in names]]
    rows = [[_e(names[i] if i < len(names) else i), *[_fmt(v, "nan", digits) for v in row]]
            for i, row in enumerate(matrix)]
    return _table(rows, header)


def _key_metrics(metrics: Mapping[str, Any], flags: Mapping[str, str]) -> list[list[str]]:
    rows: list[list[str]] = []
    if "auc" in metrics:
        ci = metrics.get("auc_ci")
        text = _fmt(metrics["auc"], flags.get("auc"))
        if ci and None not in ci:
            conf = metrics.get("auc_ci_confidence", 0.68)
            text += _e(f"  [{ci[0]:.4f}, {ci[1]:.4f}] ({100 * conf:.0f}% CI, "
                       f"{metrics.get('n_bootstrap', '?')} bootstrap replicas)")
        rows.append(["AUC", text])
    for wp in metrics.get("working_points", []):
        key = f"rejection@{wp:g}"
        if key not in metrics:
            continue
        value = _fmt(metrics[key], flags.get(key), 3)
        sigma = metrics.get(f"rejection_uncertainty@{wp:g}")
        if sigma is not None:
            value += " &plusmn; " + _fmt(sigma, None, 2)
        if flags.get(key) == "inf":
            value += ' <span class="muted">(no background passes)</span>'
        rows.append([_e(f"1/εB at εS = {wp:g}"), value])
    fom = metrics.get("figures_of_merit") or {}
    if "accuracy" in fom:
        rows.append([_e(f"accuracy (threshold {metrics.get('threshold', float('nan')):.4g}, "
                        f"εS = {metrics.get('threshold_efficiency', float('nan')):g})"),
                     _fmt(fom["accuracy"], flags.get("figures_of_merit/accuracy"))])
    multi = metrics.get("multiclass") or {}
    if "accuracy" in multi:
        rows.append(["accuracy (argmax, all classes)", _fmt(multi["accuracy"])])
    elif "accuracy" in metrics and not isinstance(metrics["accuracy"], dict):
        rows.append(["accuracy", _fmt(metrics["accuracy"], flags.get("accuracy"))])
    for key in ("n_signal", "n_background", "n_entries", "device"):
        if key in metrics:
            rows.append([_e(key), _fmt(metrics[key])])
    return rows


def _generic_table(data: Any, depth: int = 0) -> str:
    """A table of any JSON-like value; nested mappings and lists of records as nested tables.

    Below three levels, or for long plain lists, the value is shown compactly instead.
    """
    if isinstance(data, Mapping):
        rows = []
        for k, v in data.items():
            if isinstance(v, Mapping) or (isinstance(v, (list, tuple)) and v
                                          and all(isinstance(x, Mapping) for x in v)):
                cell = (_generic_table(v, depth + 1) if depth < 3 and len(v) <= 40 else
                        f'<span class="muted">{_e(_compact(v))}</span>')
            elif isinstance(v, (list, tuple)) and any(isinstance(x, (list, tuple)) for x in v):
                cell = f'<span class="muted">{_e(_compact(v))}</span>'
            else:
                cell = _fmt(v)
            rows.append([_e(k), cell])
        return _table(rows, ["name", "value"])
    if isinstance(data, Sequence) and data and all(isinstance(r, Mapping) for r in data):
        columns: list[str] = []
        for row in data:
            columns += [str(k) for k in row if str(k) not in columns]
        return _table([[_fmt(row.get(c)) for c in columns] for row in data], columns)
    if isinstance(data, Sequence) and not isinstance(data, str):
        return _table([[_fmt(c) for c in row] if isinstance(row, (list, tuple))
                       else [_fmt(row)] for row in data])
    return f"<pre>{_e(data)}</pre>"


def _compact(value: Any, limit: int = 300) -> str:
    """One line of JSON, cut at ``limit`` characters."""
    text = json.dumps(json_safe(value), separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _config_text(config: Any) -> str:
    if config is None:
        return "(none)"
    if isinstance(config, str):
        return config
    try:
        import yaml

        return yaml.safe_dump(json_safe(config), sort_keys=False, default_flow_style=False)
    except Exception:  # noqa: BLE001 - any odd value still shows as JSON
        return json.dumps(json_safe(config), indent=2)


def _figure(path: Path) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    mime = "image/png" if path.suffix.lower() == ".png" else "image/svg+xml"
    return (f'<figure><img alt="{_e(path.stem)}" src="data:{mime};base64,{data}">'
            f"<figcaption>{_e(path.stem.replace('_', ' '))}</figcaption></figure>")


# -------------------------------------------------------------------------------- report


def write_report(run_dir: str | Path, *, title: str, metrics: Mapping[str, Any],
                 config: Mapping[str, Any] | str | None, plots: Sequence[str | Path],
                 extra_tables: Mapping[str, Any] | None = None,
                 key_metrics: Sequence[tuple[str, str]] | None = None) -> Path:
    """Write ``run_dir/report.html``: one self-contained page about a run.

    Sections: key metrics (AUC with its bootstrap interval, 1/ε_B ± σ at each working
    point, accuracy, entry counts), the figures (PNG embedded as base64), the confusion
    matrix (counts and row fractions), the figures of merit, multi-class results when
    present, ``extra_tables``, the configuration in a ``<pre>``, software versions and
    the UTC timestamp. Non-finite values recorded in ``metrics["non_finite"]`` show as
    ``inf``/``nan``.

    Args:
        run_dir: The run directory (created if missing).
        title: Page title.
        metrics: As from :func:`~hepml.evaluation.evaluate_binary` (other keys are
            listed under "other metrics").
        config: The resolved configuration (dict) or its YAML text.
        plots: Image files to embed (PNG; PDFs are skipped, they do not embed inline).
        extra_tables: Name → a dict, a list of dicts, or a list of rows. A name that is
            also a key of ``metrics`` is shown here only, not again under "other metrics".
        key_metrics: (label, value) rows of plain text for the key-metrics table, as the
            task summarises its run (default: the classification figures of ``metrics``).

    Returns:
        The path of ``report.html``.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    metrics = json_safe(dict(metrics))
    flags: dict[str, str] = dict(metrics.get("non_finite") or {})
    body = [f"<h1>{_e(title)}</h1>",
            f'<p class="muted">generated {_e(_now())} by hepml</p>']

    rows = ([[_e(label), _e(value)] for label, value in key_metrics] if key_metrics is not None
            else _key_metrics(metrics, flags))
    body += ["<h2>Key metrics</h2>", _table(rows, ["metric", "value"])]
    for warning in metrics.get("warnings") or []:
        body.append(f'<p class="flag">warning: {_e(warning)}</p>')

    images = []
    for p in plots:
        p = Path(p)
        if p.suffix.lower() not in {".png", ".svg"}:
            continue
        if not p.exists():
            raise BadValueError(f"write_report: plot {p} does not exist")
        images.append(_figure(p))
    if images:
        body += ["<h2>Figures</h2>", "<div>", *images, "</div>"]

    cm = metrics.get("confusion_matrix")
    if isinstance(cm, Mapping) and cm.get("counts"):
        names = cm.get("labels") or [str(i) for i in range(len(cm["counts"]))]
        body.append("<h2>Confusion matrix</h2>")
        if "threshold" in metrics:
            body.append(f"<p>selection: score &ge; {_fmt(metrics['threshold'])} "
                        f"(signal efficiency target {_fmt(metrics.get('threshold_efficiency'))})"
                        "</p>")
        body += [_matrix_table(cm["counts"], names, 8), "<p>row fractions:</p>",
                 _matrix_table(cm.get("normalized") or [], names, 4)]

    fom = metrics.get("figures_of_merit")
    if isinstance(fom, Mapping) and fom:
        body += ["<h2>Figures of merit</h2>",
                 _table([[_e(k), _fmt(v, flags.get(f"figures_of_merit/{k}"))]
                         for k, v in fom.items()], ["figure", "value"])]

    multi = metrics.get("multiclass")
    if isinstance(multi, Mapping) and multi:
        body.append("<h2>Multi-class</h2>")
        mflags = multi.get("non_finite") or {}
        aucs = multi.get("auc_one_vs_rest") or {}
        body.append(_table([[_e(k), _fmt(v, mflags.get(f"auc_one_vs_rest/{k}"))]
                            for k, v in aucs.items()], ["class (one vs rest)", "AUC"]))
        mcm = multi.get("confusion_matrix") or {}
        if mcm.get("counts"):
            body += [_matrix_table(mcm["counts"], multi.get("class_names", []), 8),
                     _matrix_table(mcm.get("normalized") or [], multi.get("class_names", []), 4)]

    shown = {"auc", "auc_ci", "auc_ci_confidence", "n_bootstrap", "working_points",
             "confusion_matrix", "figures_of_merit", "multiclass", "non_finite", "warnings",
             "n_signal", "n_background", "n_entries", "device", "rejection",
             "rejection_infinite"}
    shown |= {k for k in metrics if "@" in k}
    shown |= set(extra_tables or {})
    other = {k: v for k, v in metrics.items() if k not in shown}
    if other:
        body += ["<h2>Other metrics</h2>", _generic_table(other)]
    rejection_rows = [[_e(f"{wp:g}"),
                       _fmt(metrics.get(f"background_efficiency@{wp:g}"),
                            flags.get(f"background_efficiency@{wp:g}"), 5),
                       _fmt(metrics.get(f"rejection@{wp:g}"), flags.get(f"rejection@{wp:g}")),
                       _fmt(metrics.get(f"rejection_uncertainty@{wp:g}"),
                            flags.get(f"rejection_uncertainty@{wp:g}"))]
                      for wp in metrics.get("working_points", [])]
    if rejection_rows:
        body += ["<h2>Working points</h2>",
                 _table(rejection_rows, ["εS", "εB", "1/εB", "σ(1/εB)"])]

    for name, data in (extra_tables or {}).items():
        body += [f"<h2>{_e(name)}</h2>", _generic_table(data)]

    body += ["<h2>Configuration</h2>", f"<pre>{_e(_config_text(config))}</pre>",
             "<h2>Software</h2>",
             _table([[_e(k), _e(v)] for k, v in software_versions().items()],
                    ["package", "version"])]

    page = ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            f"<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
            + "\n".join(body) + "\n</body>\n</html>\n")
    target = write_text(run_dir / "report.html", page)
    log.info("wrote %s", target)
    return target


def _now() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC")
