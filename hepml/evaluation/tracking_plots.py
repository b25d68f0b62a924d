"""Plots of tracking results: efficiency in bins, event displays, edge-score histograms.

Same conventions as :mod:`hepml.evaluation.plots`: CPU data in (numpy arrays, lists or
CPU tensors), a path *stem* in, ``<stem>.png`` and ``<stem>.pdf`` written and returned,
mplhep's style inside a context, figures closed after saving.

The event display draws the tracks of one event as line segments between consecutive
hits (ordered by radius) gathered into one ``LineCollection``, so that thousands of
tracks cost one artist, not one Python call each.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from hepml.errors import BadValueError, EmptyInputError
from hepml.evaluation.plots import _array, _label, _pyplot, _save, _style

log = logging.getLogger(__name__)

__all__ = ["plot_efficiency", "plot_event_display", "plot_edge_scores"]


def _curves(values: Any, name: str) -> dict[str, np.ndarray]:
    if isinstance(values, Mapping):
        return {str(k): _array(v, f"{name}[{k!r}]").astype(np.float64).reshape(-1)
                for k, v in values.items()}
    return {"": _array(values, name).astype(np.float64).reshape(-1)}


def plot_efficiency(bins: Any, eff: Any, err: Any, xlabel: str, path: str | Path, *,
                    logx: bool | None = None, ylabel: str = "Track efficiency",
                    title: str | None = None) -> list[Path]:
    """Efficiency per bin (e.g. against particle pT or eta) with binomial error bars.

    Each point sits at the bin centre (the geometric centre on a log axis) with a
    horizontal bar over the bin. Empty bins (NaN efficiency) are not drawn.

    Args:
        bins: Bin edges ``[B + 1]`` (e.g. ``BinnedEfficiency.edges``).
        eff: Efficiency per bin ``[B]``, or tracker name -> ``[B]`` to overlay several.
        err: Uncertainty per bin, with the same structure as ``eff``.
        xlabel: Label of the x axis, e.g. ``r"Particle $p_T$ [GeV]"``.
        path: Path stem; ``.png`` and ``.pdf`` are appended.
        logx: Log x axis; by default when all edges are positive and span a factor 10
            or more (pT bins) and linear otherwise (eta bins).
        ylabel: Label of the y axis.
        title: Optional legend title.

    Returns:
        The PNG and PDF paths.
    """
    edges = _array(bins, "bins").astype(np.float64).reshape(-1)
    if edges.size < 2 or not np.all(np.diff(edges) > 0):
        raise BadValueError(f"plot_efficiency: bins must be at least two increasing edges, "
                            f"got {edges.tolist()}")
    effs, errs = _curves(eff, "eff"), _curves(err, "err")
    if not effs:
        raise EmptyInputError("plot_efficiency: no efficiencies to plot")
    if set(effs) != set(errs):
        raise BadValueError(f"plot_efficiency: eff and err name different trackers: "
                            f"{sorted(effs)} and {sorted(errs)}")
    for name, values in effs.items():
        if values.shape[0] != edges.size - 1 or errs[name].shape != values.shape:
            raise BadValueError(f"plot_efficiency: {name or 'eff'} needs {edges.size - 1} "
                                f"values (one per bin) in eff and err, got "
                                f"{values.shape[0]} and {errs[name].shape[0]}")
    if logx is None:
        logx = bool(edges[0] > 0 and edges[-1] / edges[0] >= 10)
    if logx and edges[0] <= 0:
        raise BadValueError("plot_efficiency: a log x axis needs positive bin edges")
    centres = np.sqrt(edges[:-1] * edges[1:]) if logx else 0.5 * (edges[:-1] + edges[1:])
    xerr = np.stack([centres - edges[:-1], edges[1:] - centres])
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        markers = "osD^v<>P*X"
        for k, (name, values) in enumerate(effs.items()):
            ok = np.isfinite(values)
            yerr = np.nan_to_num(errs[name][ok])
            ax.errorbar(centres[ok], values[ok], xerr=xerr[:, ok], yerr=yerr,
                        fmt=markers[k % len(markers)], ms=6, capsize=0, lw=1.5,
                        label=name or None)
        if logx:
            ax.set_xscale("log")
        ax.set_xlim(edges[0], edges[-1])
        ax.set_ylim(0, 1.1)
        ax.axhline(1.0, color="grey", ls=":", lw=1)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        if any(effs) or title:
            ax.legend(loc="lower right", title=title)
        _label(ax)
        return _save(fig, path)


def _track_segments(a: np.ndarray, b: np.ndarray, r: np.ndarray, track: np.ndarray,
                    keep: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Segments ``[S, 2, 2]`` joining consecutive hits (by radius) of each kept track.

    Returns the segments and the track id of each.
    """
    sel = np.flatnonzero(keep)
    order = sel[np.lexsort((r[sel], track[sel]))]
    same = track[order][1:] == track[order][:-1]
    start, stop = order[:-1][same], order[1:][same]
    segments = np.stack([np.stack([a[start], b[start]], 1), np.stack([a[stop], b[stop]], 1)], 1)
    return segments, track[start]


def plot_event_display(x: Any, y: Any, z: Any, hit_track: Any, hit_particle: Any,
                       path: str | Path, *, max_tracks: int = 50,
                       title: str | None = None) -> list[Path]:
    """Event display of one event: x-y (transverse) and z-r (longitudinal) views.

    All hits are small grey points; noise hits (particle 0) are grey crosses. The found
    tracks are coloured lines through their hits in order of increasing radius
    ``r = sqrt(x² + y²)``; at most ``max_tracks`` are drawn, the ones with most hits
    (ties: smaller track id first).

    Args:
        x: Hit x in mm ``[N]``.
        y: Hit y in mm ``[N]``.
        z: Hit z in mm ``[N]``.
        hit_track: Track id of each hit, negative for none ``[N]``.
        hit_particle: Particle id of each hit, 0 for noise ``[N]``.
        path: Path stem.
        max_tracks: Most tracks drawn.
        title: Optional text in the legend.

    Returns:
        The PNG and PDF paths.
    """
    x = _array(x, "x").astype(np.float64).reshape(-1)
    y = _array(y, "y").astype(np.float64).reshape(-1)
    z = _array(z, "z").astype(np.float64).reshape(-1)
    track = _array(hit_track, "hit_track").astype(np.int64).reshape(-1)
    particle = _array(hit_particle, "hit_particle").astype(np.int64).reshape(-1)
    n = x.shape[0]
    if any(v.shape[0] != n for v in (y, z, track, particle)):
        raise BadValueError(f"plot_event_display: x, y, z, hit_track and hit_particle need "
                            f"one value per hit; got lengths {x.shape[0]}, {y.shape[0]}, "
                            f"{z.shape[0]}, {track.shape[0]}, {particle.shape[0]}")
    if n == 0:
        raise EmptyInputError("plot_event_display: the event has no hits")
    from matplotlib.collections import LineCollection

    r = np.hypot(x, y)
    ids, n_hits = np.unique(track[track >= 0], return_counts=True)
    shown = ids[np.lexsort((ids, -n_hits))][:max(int(max_tracks), 0)]
    keep = np.isin(track, shown)
    shown_sorted = np.sort(shown)
    noise = particle == 0
    plt = _pyplot()
    cmap = plt.get_cmap("tab20")
    with _style():
        fig, (ax_xy, ax_rz) = plt.subplots(1, 2, figsize=(18, 8.5))
        for ax, (a, b) in ((ax_xy, (x, y)), (ax_rz, (z, r))):
            ax.scatter(a[~noise], b[~noise], s=4, c="0.6", lw=0, label="hits")
            ax.scatter(a[noise], b[noise], s=12, c="0.4", marker="x", lw=0.8, label="noise")
            if shown.size:
                segments, seg_track = _track_segments(a, b, r, track, keep)
                colours = cmap(np.searchsorted(shown_sorted, seg_track) % 20)
                ax.add_collection(LineCollection(segments, colors=colours, lw=1.2))
                ax.plot([], [], color=cmap(0), lw=1.2,
                        label=f"tracks ({shown.size} of {ids.size})")
        ax_xy.set_xlabel("x [mm]")
        ax_xy.set_ylabel("y [mm]")
        ax_xy.set_aspect("equal", adjustable="datalim")
        ax_rz.set_xlabel("z [mm]")
        ax_rz.set_ylabel("r [mm]")
        ax_xy.legend(loc="upper right", title=title, fontsize="small")
        for ax in (ax_xy, ax_rz):
            ax.autoscale_view()
            _label(ax)
        return _save(fig, path)


def plot_edge_scores(scores: Any, truth: Any, path: str | Path, *, bins: int = 50,
                     threshold: float | None = None) -> list[Path]:
    """Histogram of edge-classifier scores for true and false edges, log y axis.

    Args:
        scores: Score of each edge ``[E]``.
        truth: 1/True for true edges (both hits from one particle), 0/False otherwise.
        path: Path stem.
        bins: Number of bins over the score range.
        threshold: Optional working point, drawn as a vertical line.

    Returns:
        The PNG and PDF paths.
    """
    scores = _array(scores, "scores").astype(np.float64).reshape(-1)
    truth = _array(truth, "truth").reshape(-1).astype(bool)
    if scores.shape != truth.shape:
        raise BadValueError(f"plot_edge_scores: {scores.shape[0]} scores but "
                            f"{truth.shape[0]} truth labels")
    finite = np.isfinite(scores)
    if not finite.any():
        raise EmptyInputError("plot_edge_scores: no finite edge scores to histogram")
    lo, hi = float(scores[finite].min()), float(scores[finite].max())
    if 0.0 <= lo and hi <= 1.0:
        lo, hi = 0.0, 1.0  # probabilities: the whole [0, 1]
    elif hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        top = 1
        for sel, name in ((truth, "true edges"), (~truth, "false edges")):
            counts, _ = np.histogram(scores[finite & sel], bins=edges)
            if counts.any():
                ax.stairs(counts, edges, label=f"{name} ({int(counts.sum()):,})", lw=2)
                top = max(top, int(counts.max()))
        if threshold is not None:
            ax.axvline(threshold, color="grey", ls="--", lw=1, label=f"cut {threshold:g}")
        ax.set_yscale("log")
        ax.set_ylim(0.5, top * 30)  # room for the legend above the histograms
        ax.set_xlim(lo, hi)
        ax.set_xlabel("Edge score")
        ax.set_ylabel("Edges")
        ax.legend(loc="upper center")
        _label(ax)
        return _save(fig, path)
