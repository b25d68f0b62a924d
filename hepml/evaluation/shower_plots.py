"""Plots of generated against reference calorimeter showers.

Same conventions as :mod:`hepml.evaluation.plots`: CPU data (numpy arrays or CPU tensors)
in, ``<stem>.png`` and ``<stem>.pdf`` out, mplhep style, nothing shown. Empty samples and
layers without energy are drawn as empty panels with a note, never an error or warning.
The numbers come from :mod:`hepml.evaluation.showers`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepml.errors import BadValueError
from hepml.evaluation.plots import _array, _label, _pyplot, _save, _style
from hepml.io.calo import CALOGAN, CaloLayout

__all__ = ["plot_observables", "plot_average_showers", "plot_response",
           "plot_separation_powers", "plot_shower_examples", "observable_label"]

# Smaller text than the single-panel style: these figures hold many panels.
_GRID_RC = {"font.size": 13, "axes.labelsize": 13, "axes.titlesize": 13, "legend.fontsize": 10,
            "xtick.labelsize": 11, "ytick.labelsize": 11}

_LABELS = {
    "E": (r"$E_{{{i}}}$", "GeV"),
    "f": (r"$f_{{{i}}} = E_{{{i}}}/E_\mathrm{{tot}}$", None),
    "width_x": (r"$\sigma_{{x,{i}}}$", "mm"),
    "width_y": (r"$\sigma_{{y,{i}}}$", "mm"),
    "sparsity": (r"Sparsity$_{{{i}}}$", None),
    "e_ratio": (r"$E_{{\mathrm{{ratio}},{i}}}$", None),
}
_FIXED = {
    "E_tot": r"$E_\mathrm{tot}$ [GeV]",
    "response": r"$E_\mathrm{tot}/E_\mathrm{incident}$",
    "depth": r"Shower depth $s_d$ [layer]",
    "depth_width": r"Depth width $\sigma_{s_d}$ [layer]",
    "depth_weighted_energy": r"$l_d = \sum_i i\,E_i$ [GeV]",
}


def observable_label(name: str) -> str:
    """Axis label, with its unit, of an observable of :mod:`hepml.evaluation.showers`."""
    if name in _FIXED:
        return _FIXED[name]
    m = re.fullmatch(r"(E|f|width_x|width_y|sparsity|e_ratio)_(\d+)", name)
    if not m:
        return name.replace("_", " ")
    text, unit = _LABELS[m.group(1)]
    text = text.format(i=m.group(2))
    return f"{text} [{unit}]" if unit else text


def _values(x: Any, name: str) -> np.ndarray:
    v = _array(x, name).astype(np.float64).reshape(-1)
    return v[np.isfinite(v)]


def _shared_edges(ref: np.ndarray, gen: np.ndarray, bins: int) -> np.ndarray:
    """Equal-width edges between the reference's 0.1 % and 99.9 % quantiles.

    The binning of :func:`~hepml.evaluation.showers.separation_power`: the generated
    sample's range when the reference is empty, ± 0.5 around a single value.
    """
    base = ref if ref.size else gen
    if base.size:
        lo, hi = (float(v) for v in np.quantile(base, [0.001, 0.999]))
        if not hi > lo:
            both = np.concatenate([ref, gen])
            lo, hi = float(both.min()), float(both.max())
    else:
        lo = hi = 0.0
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    return np.linspace(lo, hi, bins + 1)


def _fractions(values: np.ndarray, edges: np.ndarray) -> np.ndarray:
    counts, _ = np.histogram(np.clip(values, edges[0], edges[-1]), bins=edges)
    total = counts.sum()
    return counts / total if total > 0 else counts.astype(np.float64)


def plot_observables(reference: Mapping[str, Any], generated: Mapping[str, Any],
                     path: str | Path, *, separation: Mapping[str, float] | None = None,
                     names: Sequence[str] | None = None,
                     labels: tuple[str, str] = ("reference", "generated"),
                     bins: int = 50, columns: int = 5) -> list[Path]:
    """A grid of histograms, one per observable: reference filled, generated as a line.

    Both samples share the bins (``bins`` equal-width bins between the reference's 0.1 %
    and 99.9 % quantiles, the outliers in the edge bins, as for the separation power) and
    are normalised to unit sum. The y axis is logarithmic when the non-empty bins span
    more than two decades. The separation power, when given, is in each panel's legend.

    Args:
        reference: Observable name → values of the reference sample.
        generated: The same for the generated sample.
        path: Path stem.
        separation: Observable name → ⟨S²⟩.
        names: Observables to draw, in order; default those present in both samples.
        labels: Legend names of the two samples.
        bins: Bins per histogram.
        columns: Panels per row.

    Returns:
        The PNG and PDF paths.
    """
    names = [n for n in reference if n in generated] if names is None else list(names)
    missing = [n for n in names if n not in reference or n not in generated]
    if missing:
        raise BadValueError(f"plot_observables: {missing} missing from one of the samples")
    n_panels = max(len(names), 1)
    cols = max(1, min(int(columns), n_panels))
    rows = math.ceil(n_panels / cols)
    plt = _pyplot()
    with _style(), plt.rc_context(_GRID_RC):
        fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 3.9 * rows), squeeze=False)
        flat = axes.reshape(-1)
        if not names:
            flat[0].text(0.5, 0.5, "no observables", ha="center", va="center",
                         transform=flat[0].transAxes)
        for ax, name in zip(flat, names, strict=False):
            ref = _values(reference[name], f"reference[{name!r}]")
            gen = _values(generated[name], f"generated[{name!r}]")
            edges = _shared_edges(ref, gen, int(bins))
            h_ref, h_gen = _fractions(ref, edges), _fractions(gen, edges)
            ax.stairs(h_ref, edges, fill=True, alpha=0.35, color="C0",
                      label=f"{labels[0]} ({ref.size:,})")
            ax.stairs(h_gen, edges, lw=1.8, color="C1", label=f"{labels[1]} ({gen.size:,})")
            positive = np.concatenate([h_ref[h_ref > 0], h_gen[h_gen > 0]])
            if positive.size and positive.max() > 100 * positive.min():
                ax.set_yscale("log")
                ax.set_ylim(positive.min() / 3, positive.max() * 60)  # room for the legend
            elif positive.size:
                ax.set_ylim(0, positive.max() * 1.6)
            else:
                ax.text(0.5, 0.5, "no entries", ha="center", va="center", transform=ax.transAxes)
            ax.set_xlim(edges[0], edges[-1])
            ax.minorticks_off()  # thousands of minor ticks make a grid slow to draw
            ax.set_xlabel(observable_label(name))
            ax.set_ylabel("Fraction of showers")
            title = None
            if separation is not None and name in separation:
                title = rf"$\langle S^2\rangle$ = {float(separation[name]):.3g}"
            ax.legend(loc="upper right", title=title, title_fontsize=10, frameon=False)
        for ax in flat[len(names):] if names else flat[1:]:
            ax.set_visible(False)
        fig.subplots_adjust(wspace=0.32, hspace=0.34)
        _label(flat[0])
        return _save(fig, path)


def _layers(layers: Sequence[Any], layout: CaloLayout, what: str) -> list[np.ndarray]:
    arrays = [_array(x, f"{what}[{i}]").astype(np.float64) for i, x in enumerate(layers)]
    shapes = tuple(tuple(a.shape[1:]) for a in arrays)
    if any(a.ndim != 3 for a in arrays) or shapes != tuple(tuple(s) for s in layout.shapes):
        raise BadValueError(f"{what}: layer shapes {[a.shape for a in arrays]} do not match "
                            f"layout {layout.name!r} {tuple(layout.shapes)}")
    return arrays


def _extent(layout: CaloLayout, i: int) -> tuple[float, float, float, float]:
    (rows, cols), (dy, dx) = layout.shapes[i], layout.cell_sizes_mm[i]
    return (-cols * dx / 2, cols * dx / 2, -rows * dy / 2, rows * dy / 2)


def _mean(a: np.ndarray) -> np.ndarray:
    return a.mean(0) if len(a) else np.zeros(a.shape[1:])


def _log_norm(images: Sequence[np.ndarray], dynamic_range: float = 1e6) -> Any:
    from matplotlib.colors import LogNorm

    positive = [img[img > 0] for img in images]
    positive = np.concatenate([p for p in positive if p.size] or [np.zeros(0)])
    if not positive.size:
        return LogNorm(vmin=1e-3, vmax=1.0)
    hi = float(positive.max())
    lo = max(float(positive.min()), hi / dynamic_range)
    return LogNorm(vmin=lo if lo < hi else hi / 10, vmax=hi)


def _draw_layer(ax: Any, image: np.ndarray, layout: CaloLayout, i: int, norm: Any,
                ylabel: str | None) -> Any:
    shown = np.ma.masked_less_equal(image, 0)
    im = ax.imshow(shown, origin="lower", extent=_extent(layout, i), cmap="viridis", norm=norm,
                   aspect="equal", interpolation="nearest")
    if not np.any(image > 0):
        ax.text(0.5, 0.5, "no energy", ha="center", va="center", transform=ax.transAxes)
    ax.minorticks_off()
    ax.set_xlabel("x [mm]")
    if ylabel is not None:
        ax.set_ylabel(ylabel)
    return im


def _colorbar(fig: Any, im: Any, axes: Any, label: str) -> None:
    from matplotlib.ticker import NullFormatter

    bar = fig.colorbar(im, ax=axes, fraction=0.05, pad=0.02, label=label)
    if im.norm.vmax > 10 * im.norm.vmin:  # a decade or more: label the powers of ten only
        bar.ax.yaxis.set_minor_formatter(NullFormatter())


def plot_average_showers(reference_layers: Sequence[Any], generated_layers: Sequence[Any],
                         path: str | Path, *, layout: CaloLayout = CALOGAN,
                         labels: tuple[str, str] = ("reference", "generated")) -> list[Path]:
    """Mean energy per cell: one row per sample, one column per layer, axes in mm.

    Log colour scale, with one range per layer (one colour bar per column) shared by both
    samples, down to 10⁻⁶ of the layer's largest mean; cells with no energy are left blank.

    Args:
        reference_layers: ``[N, rows, cols]`` per layer (GeV) of the reference sample.
        generated_layers: The same for the generated sample.
        path: Path stem.
        layout: The calorimeter (cell sizes); must match the layers.
        labels: Row names.

    Returns:
        The PNG and PDF paths.
    """
    samples = [[_mean(a) for a in _layers(reference_layers, layout, labels[0])],
               [_mean(a) for a in _layers(generated_layers, layout, labels[1])]]
    n_layers = layout.n_layers
    plt = _pyplot()
    with _style(), plt.rc_context(_GRID_RC):
        fig, axes = plt.subplots(2, n_layers, figsize=(6.0 * n_layers, 10), squeeze=False)
        fig.subplots_adjust(wspace=0.35, hspace=0.25)
        for i in range(n_layers):
            norm = _log_norm([samples[0][i], samples[1][i]])
            for row, label in enumerate(labels):
                ax = axes[row, i]
                im = _draw_layer(ax, samples[row][i], layout, i, norm,
                                 f"{label}\ny [mm]" if i == 0 else "y [mm]")
                ax.set_title(f"layer {i}", loc="right")
            _colorbar(fig, im, list(axes[:, i]), "Mean cell energy [GeV]")
        _label(axes[0, 0])
        return _save(fig, path)


def plot_response(ref: Mapping[str, Any], gen: Mapping[str, Any], path: str | Path, *,
                  labels: tuple[str, str] = ("reference", "generated")) -> list[Path]:
    """Mean response (top) and resolution σ/μ (bottom) against the incident energy.

    Args:
        ref: :func:`~hepml.evaluation.showers.response_vs_energy` of the reference sample.
        gen: The same for the generated sample (ideally on the same edges).
        path: Path stem.
        labels: Legend names.

    Returns:
        The PNG and PDF paths; bins without showers are not drawn.
    """
    plt = _pyplot()
    with _style():
        fig, (ax_mean, ax_res) = plt.subplots(2, 1, figsize=(9, 10), sharex=True)
        drawn = 0
        for k, (data, label) in enumerate(((ref, labels[0]), (gen, labels[1]))):
            edges = _array(data["edges"], "edges").astype(np.float64)
            centre = 0.5 * (edges[1:] + edges[:-1])
            half = 0.5 * np.diff(edges)
            count = _array(data["count"], "count").astype(np.float64)
            ok = count > 0
            if not ok.any():
                continue
            style = {"fmt": "o" if k == 0 else "s", "ms": 6, "capsize": 2, "label": label,
                     "color": f"C{k}"}
            ax_mean.errorbar(centre[ok], _array(data["mean"], "mean")[ok], xerr=half[ok],
                             yerr=_array(data["mean_err"], "mean_err")[ok], **style)
            ax_res.errorbar(centre[ok], _array(data["resolution"], "resolution")[ok],
                            xerr=half[ok], yerr=_array(data["resolution_err"],
                                                       "resolution_err")[ok], **style)
            drawn += 1
        ax_mean.set_ylabel(r"$\langle E_\mathrm{tot}/E_\mathrm{incident}\rangle$")
        ax_res.set_ylabel(r"Resolution $\sigma/\mu$")
        ax_res.set_xlabel(r"Incident energy [GeV]")
        if drawn:
            ax_mean.legend(loc="best")
        else:
            for ax in (ax_mean, ax_res):
                ax.text(0.5, 0.5, "no showers", ha="center", va="center", transform=ax.transAxes)
        _label(ax_mean)
        return _save(fig, path)


def plot_separation_powers(sep: Mapping[str, float], path: str | Path) -> list[Path]:
    """Separation power of each observable as horizontal bars, the largest on top.

    The x axis is logarithmic when the positive values span more than two decades (a
    zero is then drawn at a tenth of the smallest positive value).

    Args:
        sep: Observable name → ⟨S²⟩.
        path: Path stem.

    Returns:
        The PNG and PDF paths.
    """
    items = sorted(((str(k), float(v)) for k, v in sep.items() if np.isfinite(float(v))),
                   key=lambda kv: kv[1])
    plt = _pyplot()
    with _style(), plt.rc_context(_GRID_RC):
        fig, ax = plt.subplots(figsize=(9, max(4.0, 0.36 * len(items) + 1.5)))
        if not items:
            ax.text(0.5, 0.5, "no separation powers", ha="center", va="center",
                    transform=ax.transAxes)
            ax.set_yticks([])
        else:
            values = np.array([v for _, v in items])
            positive = values[values > 0]
            log_x = positive.size > 0 and positive.max() > 100 * positive.min()
            shown = np.where(values > 0, values, positive.min() / 10) if log_x else values
            y = np.arange(len(items))
            bars = ax.barh(y, shown, color="C0", alpha=0.8)
            ax.bar_label(bars, labels=[f"{v:.3g}" for v in values], padding=3, fontsize=9)
            ax.set_yticks(y, [observable_label(k) for k, _ in items])
            ax.tick_params(axis="y", which="both", left=False, right=False)
            if log_x:
                ax.set_xscale("log")
                ax.set_xlim(right=float(shown.max()) * 3)  # room for the numbers
            else:
                ax.set_xlim(0, max(float(values.max()) * 1.15, 1e-3))
            ax.set_ylim(-0.7, len(items) - 0.3)
        ax.set_xlabel(r"Separation power $\langle S^2\rangle$")
        _label(ax)
        return _save(fig, path)


def plot_shower_examples(layers: Sequence[Any], energy: Any, path: str | Path, *, n: int = 4,
                         layout: CaloLayout = CALOGAN) -> list[Path]:
    """The first ``n`` showers, one row each, one column per layer, log colour scale.

    Args:
        layers: ``[N, rows, cols]`` per layer (GeV).
        energy: Incident energy per shower ``[N]`` (GeV), shown in each row's title.
        path: Path stem.
        n: Showers to draw (fewer when there are fewer).
        layout: The calorimeter (cell sizes); must match the layers.

    Returns:
        The PNG and PDF paths.
    """
    arrays = _layers(layers, layout, "layers")
    e = _array(energy, "energy").astype(np.float64).reshape(-1)
    n_showers = len(arrays[0]) if arrays else 0
    if e.size != n_showers:
        raise BadValueError(f"plot_shower_examples: {e.size} energies for {n_showers} showers")
    shown = min(int(n), n_showers)
    n_layers = layout.n_layers
    plt = _pyplot()
    with _style(), plt.rc_context(_GRID_RC):
        fig, axes = plt.subplots(max(shown, 1), n_layers,
                                 figsize=(6.0 * n_layers, 4.8 * max(shown, 1)), squeeze=False)
        fig.subplots_adjust(wspace=0.3, hspace=0.3)
        if shown == 0:
            for i, ax in enumerate(axes[0]):
                im = _draw_layer(ax, np.zeros(layout.shapes[i]), layout, i, _log_norm([]),
                                 "no showers\ny [mm]" if i == 0 else "y [mm]")
                ax.set_title(f"layer {i}", loc="right")
            _colorbar(fig, im, list(axes[0]), "Cell energy [GeV]")
        for s in range(shown):
            norm = _log_norm([a[s] for a in arrays])  # one scale per shower, all its layers
            for i in range(n_layers):
                ax = axes[s, i]
                im = _draw_layer(ax, arrays[i][s], layout, i, norm,
                                 f"E = {e[s]:.3g} GeV\ny [mm]" if i == 0 else "y [mm]")
                ax.set_title(f"layer {i}", loc="right")
            _colorbar(fig, im, list(axes[s]), "Cell energy [GeV]")
        _label(axes[0, 0])
        return _save(fig, path)
