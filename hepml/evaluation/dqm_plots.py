"""Plots of data-quality monitoring: run timeline, residual maps, scores per fault type.

Same conventions as :mod:`hepml.evaluation.plots`: CPU data in (numpy arrays, lists or
CPU tensors), a path *stem* in, ``<stem>.png`` and ``<stem>.pdf`` written and returned,
mplhep's style inside a context, figures closed after saving.

The fault mask of a residual map is outlined by the cell edges between masked and
unmasked cells, gathered into one ``LineCollection`` (no loop over cells).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hepml.errors import BadValueError, EmptyInputError
from hepml.evaluation.plots import _array, _label, _pyplot, _save, _style

log = logging.getLogger(__name__)

__all__ = ["plot_run_timeline", "plot_residual_map", "plot_score_by_type", "mask_outline"]

#: Colours of the fault types (code 1, 2, ...), then cycled.
_COLOURS = ("#e42536", "#5790fc", "#f89c20", "#964a8b", "#7a21dd", "#9c9ca1", "#2ca02c")
_MARKERS = ("v", "^", "s", "D", "P", "X", "*")


class LayoutLike(Protocol):
    """Where one histogram lies in a stacked map (see ``HistogramLayout``)."""

    name: str
    row_start: int
    row_stop: int
    axis_names: tuple[str, str]
    edges: tuple[np.ndarray, np.ndarray]


_AXIS_LABELS = {"eta": r"$\eta$", "phi": r"$\phi$", "layer": "Layer"}


def _axis_label(name: str) -> str:
    return _AXIS_LABELS.get(name, name)


def _score_axis(ax: Any, which: str, scores: np.ndarray, threshold: float) -> None:
    """Log scale for positive scores; symmetric log (linear within +-1) when some are not."""
    setter = ax.set_yscale if which == "y" else ax.set_xscale
    if scores.size and min(float(scores.min()), threshold) > 0:
        setter("log")
    else:
        setter("symlog", linthresh=1.0)


def _score_bins(lo: float, hi: float, bins: int) -> np.ndarray:
    """Bin edges even in log of the score, or, with scores <= 0, linear up to 1 then log."""
    if lo > 0:
        return np.geomspace(lo / 1.2, hi * 1.2, bins + 1)
    top = max(hi * 1.2, 2.0)
    n_log = max(bins * 3 // 4, 1)
    lin = np.linspace(lo - 0.1 * (1 - lo), 1.0, bins - n_log + 1)
    return np.concatenate([lin, np.geomspace(1.0, top, n_log + 1)[1:]])


def plot_run_timeline(run: Any, lumi: Any, score: Any, threshold: float, fault: Any,
                      fault_names: Sequence[str], flagged: Any, path: str | Path, *,
                      title: str | None = None) -> list[Path]:
    """Anomaly score of every lumisection against its position in the run.

    Good LS are grey dots, faulty LS coloured by fault type, flagged LS (score above the
    threshold) circled, excluded LS (NaN score) ticked at the bottom; the threshold is a
    dashed line; the score axis is logarithmic (symmetric-logarithmic, linear within
    +-1, when some scores are not positive). With one run the x axis is the LS number;
    with several, the LS are numbered in input order and run boundaries are drawn.

    Args:
        run: Run number per LS ``[N]``.
        lumi: Lumisection number per LS ``[N]``.
        score: Anomaly score per LS ``[N]`` (NaN: excluded).
        threshold: The flagging threshold.
        fault: Fault code per LS ``[N]`` (0 good).
        fault_names: Name per fault code.
        flagged: Flag per LS ``[N]``.
        path: Path stem.
        title: Optional title (e.g. the workflow name).

    Returns:
        The PNG and PDF paths.
    """
    run = _array(run, "run").reshape(-1)
    lumi = _array(lumi, "lumi").reshape(-1)
    score = _array(score, "score").astype(np.float64).reshape(-1)
    fault = _array(fault, "fault").astype(np.int64).reshape(-1)
    flagged = _array(flagged, "flagged").astype(bool).reshape(-1)
    n = len(score)
    if not (len(run) == len(lumi) == len(fault) == len(flagged) == n):
        raise BadValueError("plot_run_timeline: run, lumi, score, fault and flagged must have "
                            "one entry per lumisection")
    finite = np.isfinite(score)
    if not finite.any():
        raise EmptyInputError("plot_run_timeline: no finite scores to draw")
    single = len(np.unique(run)) == 1
    x = lumi.astype(np.float64) if single else np.arange(n, dtype=np.float64)
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(15, 7))
        good = finite & (fault == 0)
        ax.plot(x[good], score[good], ".", color="0.55", ms=5,
                label=f"{fault_names[0] if fault_names else 'good'} ({int(good.sum())})")
        for code in np.unique(fault[fault > 0]):
            sel = finite & (fault == code)
            name = fault_names[code] if code < len(fault_names) else f"fault {code}"
            k = (code - 1) % len(_COLOURS)
            ax.plot(x[sel], score[sel], _MARKERS[k], color=_COLOURS[k], ms=6,
                    label=f"{name} ({int(sel.sum())})", ls="none")
        sel = finite & flagged
        ax.plot(x[sel], score[sel], "o", mfc="none", mec="black", ms=11, mew=1.2,
                label=f"flagged ({int(sel.sum())})", ls="none")
        ax.axhline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.3g}")
        _score_axis(ax, "y", score[finite], threshold)
        lo = float(score[finite].min())
        excluded = ~np.isfinite(score)
        if excluded.any():
            ax.plot(x[excluded], np.full(int(excluded.sum()), lo / 1.5 if lo > 0 else lo - 0.5),
                    "|", color="tab:brown", ms=14, mew=2,
                    label=f"excluded, no crossings ({int(excluded.sum())})", ls="none")
        if not single:
            starts = np.flatnonzero(np.r_[True, run[1:] != run[:-1]])
            for s in starts[1:]:
                ax.axvline(x[s] - 0.5, color="0.8", lw=1)
        ax.set_xlabel("Lumisection" if single else "Lumisection (input order; lines: new run)")
        ax.set_ylabel("Anomaly score")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small",
                  frameon=False)
        top = float(score[finite].max())
        ax.set_ylim(lo / 2 if lo > 0 else lo - 1.0, top * 3 if top > 0 else 1.0)
        if title:
            ax.set_title(title + (f", run {int(run[0])}" if single else ""), loc="right",
                         fontsize="medium")
        _label(ax)
        return _save(fig, path)


def mask_outline(mask: np.ndarray, x_edges: np.ndarray, y_edges: np.ndarray) -> np.ndarray:
    """Line segments ``[S, 2, 2]`` along the boundary of the true cells of ``mask``.

    ``mask[i, j]`` covers ``y_edges[i]..y_edges[i+1]`` and ``x_edges[j]..x_edges[j+1]``.
    """
    m = np.pad(np.asarray(mask, dtype=bool), 1)
    ii, jj = np.nonzero(m[1:-1, 1:] != m[1:-1, :-1])  # vertical edge at x_edges[jj], row ii
    vertical = np.stack([np.stack([x_edges[jj], y_edges[ii]], -1),
                         np.stack([x_edges[jj], y_edges[ii + 1]], -1)], 1)
    ii, jj = np.nonzero(m[1:, 1:-1] != m[:-1, 1:-1])  # horizontal edge at y_edges[ii], col jj
    horizontal = np.stack([np.stack([x_edges[jj], y_edges[ii]], -1),
                           np.stack([x_edges[jj + 1], y_edges[ii]], -1)], 1)
    return np.concatenate([vertical.reshape(-1, 2, 2), horizontal.reshape(-1, 2, 2)])


def plot_residual_map(residual: Any, layout: Sequence[LayoutLike], path: str | Path, *,
                      mask: Any = None, title: str | None = None,
                      label: str = "Residual (x - reconstruction) / scale") -> list[Path]:
    """Signed normalised residual of one lumisection, one panel per histogram.

    Each panel shows its histogram's rows of the stacked map against the histogram's own
    axes (e.g. eta-phi, layer-phi, from the bin edges); the colour scale is symmetric and
    shared by the panels. The truth fault mask, when given, is outlined in black.

    Args:
        residual: ``[H, W]`` stacked residual map ``(x - reconstruction) / scale``.
        layout: Where each histogram lies in the map (name, rows, axis names, edges).
        path: Path stem.
        mask: ``[H, W]`` fault mask stacked like the map (optional).
        title: Title, e.g. ``"run 1 LS 37: score 4.1 (dead_region)"``.
        label: Label of the colour bar (what the map holds: residual or pull).

    Returns:
        The PNG and PDF paths.
    """
    from matplotlib.collections import LineCollection

    residual = _array(residual, "residual").astype(np.float64)
    if residual.ndim != 2:
        raise BadValueError(f"plot_residual_map: expected an [H, W] map, got {residual.shape}")
    if mask is not None:
        mask = _array(mask, "mask").astype(bool)
        if mask.shape != residual.shape:
            raise BadValueError(f"plot_residual_map: mask {mask.shape} and map {residual.shape} "
                                "differ in shape")
    if not layout or layout[-1].row_stop != residual.shape[0]:
        raise BadValueError("plot_residual_map: the layout does not cover the map's rows")
    finite = residual[np.isfinite(residual)]
    vmax = float(np.abs(finite).max()) if finite.size else 1.0
    vmax = vmax if vmax > 0 else 1.0
    plt = _pyplot()
    with _style():
        heights = [lay.row_stop - lay.row_start for lay in layout]
        fig, axes = plt.subplots(1, len(layout), figsize=(7.5 * len(layout) + 1.5, 7),
                                 squeeze=False)
        image = None
        for ax, lay, h in zip(axes[0], layout, heights, strict=True):
            rows = slice(lay.row_start, lay.row_stop)
            y_edges, x_edges = np.asarray(lay.edges[0], float), np.asarray(lay.edges[1], float)
            image = ax.pcolormesh(x_edges, y_edges, residual[rows], cmap="RdBu_r",
                                  vmin=-vmax, vmax=vmax, shading="flat")
            if mask is not None and mask[rows].any():
                ax.add_collection(LineCollection(mask_outline(mask[rows], x_edges, y_edges),
                                                 colors="black", linewidths=2.0))
            ax.set_xlabel(_axis_label(lay.axis_names[1]))
            ax.set_ylabel(_axis_label(lay.axis_names[0]))
            ax.set_title(f"{lay.name} ({h} x {residual.shape[1]})", loc="right",
                         fontsize="small")
        fig.colorbar(image, ax=list(axes[0]), fraction=0.03, pad=0.02,
                     label=label)
        if title:
            fig.suptitle(title + ("  [outline: true fault channels]" if mask is not None
                                  and mask.any() else ""), fontsize="medium")
        return _save(fig, path)


def plot_score_by_type(score: Any, fault: Any, fault_names: Sequence[str], threshold: float,
                       path: str | Path, *, keep: Any = None, bins: int = 40) -> list[Path]:
    """Anomaly-score histograms of good LS and of each fault type, log-spaced bins.

    Scores that are not positive (e.g. standardised ones) get linear bins up to 1 and a
    symmetric-logarithmic axis.

    Args:
        score: Score per LS ``[N]``.
        fault: Fault code per LS ``[N]`` (0 good).
        fault_names: Name per fault code.
        threshold: Drawn as a vertical dashed line.
        path: Path stem.
        keep: Optional selection ``[N]`` (e.g. not excluded).
        bins: Number of bins.

    Returns:
        The PNG and PDF paths.
    """
    score = _array(score, "score").astype(np.float64).reshape(-1)
    fault = _array(fault, "fault").astype(np.int64).reshape(-1)
    sel = np.isfinite(score)
    if keep is not None:
        sel &= _array(keep, "keep").astype(bool).reshape(-1)
    if not sel.any():
        raise EmptyInputError("plot_score_by_type: no finite scores")
    edges = _score_bins(float(min(score[sel].min(), threshold)),
                        float(max(score[sel].max(), threshold)), bins)
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(12, 7))
        for code in np.unique(fault[sel]):
            s = score[sel & (fault == code)]
            counts, _ = np.histogram(s, bins=edges)
            name = fault_names[code] if code < len(fault_names) else f"fault {code}"
            colour = "0.35" if code == 0 else _COLOURS[(code - 1) % len(_COLOURS)]
            ax.stairs(counts, edges, label=f"{name} ({len(s)})", lw=2, color=colour,
                      fill=code == 0, alpha=0.4 if code == 0 else 1.0)
        ax.axvline(threshold, color="black", ls="--", lw=1.5, label=f"threshold {threshold:.3g}")
        _score_axis(ax, "x", score[sel], threshold)
        ax.set_xlim(edges[0], edges[-1])
        ax.set_yscale("log")
        ax.set_ylim(bottom=0.5)
        ax.set_xlabel("Anomaly score")
        ax.set_ylabel("Lumisections")
        ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize="small", frameon=False)
        _label(ax)
        return _save(fig, path)
