"""Plots of anomaly scans: score distributions, significance improvement, mass sculpting.

Same conventions as :mod:`hepml.evaluation.plots`: CPU data in, ``<stem>.png`` and
``<stem>.pdf`` out, mplhep style, nothing shown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepml.errors import EmptyInputError
from hepml.evaluation.plots import _array, _label, _pyplot, _save, _style

__all__ = ["plot_anomaly_scores", "plot_significance_improvement", "plot_mass_sculpting"]


def plot_anomaly_scores(scores: Any, labels: Any, class_names: Sequence[str], path: str | Path,
                        *, bins: int = 60) -> list[Path]:
    """Normalised anomaly-score histograms per class, on a logarithmic score axis.

    Reconstruction errors span decades, hence the log axis.
    """
    scores = _array(scores, "scores").astype(np.float64).reshape(-1)
    labels = _array(labels, "labels").astype(np.int64).reshape(-1)
    ok = np.isfinite(scores) & (scores > 0)
    if not ok.any():
        raise EmptyInputError("plot_anomaly_scores: no positive finite scores to histogram")
    lo, hi = (np.quantile(scores[ok], [0.0005, 0.9995]) if ok.sum() > 20
              else (scores[ok].min(), scores[ok].max()))
    lo, hi = float(lo), float(max(hi, lo * 1.01))
    edges = np.geomspace(lo, hi, bins + 1)
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        for k in np.unique(labels):
            sel = ok & (labels == k)
            name = class_names[k] if 0 <= k < len(class_names) else f"class {k}"
            counts, _ = np.histogram(np.clip(scores[sel], lo, hi), bins=edges)
            dens = counts / max(counts.sum(), 1)
            ax.stairs(dens, edges, label=f"{name} ({int(sel.sum()):,})", lw=2)
        ax.set_xscale("log")
        ax.set_yscale("log")
        ax.set_xlabel("Anomaly score")
        ax.set_ylabel("Fraction of entries")
        ax.legend(loc="upper right")
        _label(ax)
        return _save(fig, path)


def plot_significance_improvement(curves: Mapping[str, tuple[Any, Any]], path: str | Path
                                  ) -> list[Path]:
    """ε_S/√ε_B against ε_S for each named ``(signal_efficiency, sic)`` pair."""
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        for name, (eff, sic) in curves.items():
            eff, sic = _array(eff, "eff"), _array(sic, "sic")
            ax.plot(eff, sic, lw=2, label=name)
        ax.axhline(1.0, color="grey", ls="--", lw=1, label="no cut")
        ax.set_xlabel(r"Signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"Significance improvement $\varepsilon_S/\sqrt{\varepsilon_B}$")
        ax.set_xlim(0, 1)
        ax.legend(loc="upper right")
        _label(ax)
        return _save(fig, path)


def plot_mass_sculpting(sculpting: Mapping[str, Any], field: str, path: str | Path, *,
                        min_kept: int = 20) -> list[Path]:
    """Background mass shape before and after each cut on the score (unit area).

    Each cut's Jensen-Shannon divergence to the uncut shape is in the legend, beside that
    of random subsets of the same size; cuts keeping fewer than ``min_kept`` entries are
    not drawn (their shape is noise).
    """
    edges = np.asarray(sculpting["edges"], dtype=np.float64)
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        widths = np.diff(edges)
        ref = np.asarray(sculpting["all"], dtype=np.float64)
        ax.stairs(ref / max(ref.sum(), 1) / widths, edges, lw=2, color="black",
                  label=f"all background ({int(ref.sum()):,} in range)")
        for eff, cut in sculpting["cuts"].items():
            counts = np.asarray(cut["counts"], dtype=np.float64)
            if counts.sum() <= 0:
                continue
            if cut["n_kept"] < min_kept:
                continue
            js, rnd = cut["js_divergence"], cut.get("js_random_subset", float("nan"))
            ax.stairs(counts / counts.sum() / widths, edges, lw=2,
                      label=rf"$\varepsilon_B$ = {float(eff):g} ({cut['n_kept']:,}), "
                      f"JS {js:.3f} (random {rnd:.3f})")
        ax.set_xlabel(field)
        ax.set_ylabel("Normalised entries / unit")
        ax.legend(loc="upper right", fontsize="small")
        _label(ax)
        return _save(fig, path)
