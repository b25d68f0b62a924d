"""Plots of evaluation results: rejection, ROC, scores, confusion matrices, history.

Every function takes CPU data (numpy arrays, lists, or CPU tensors: the caller moves
tensors off the device) and a path *stem*; it writes ``<stem>.png`` and ``<stem>.pdf``
and returns both paths. Figures are drawn inside mplhep's CMS-like style context (no
global matplotlib state leaks), labelled "hepml", and closed after saving; nothing
calls ``plt.show``, so the Agg backend is enough.

ROC curves with millions of points are thinned before drawing: at most ~2,000 points
evenly spaced in log ε_B plus ~2,000 evenly spaced in ε_S (the ROC's own points, not
resampled values), which is indistinguishable on the page.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from hepml.errors import BadValueError, EmptyInputError

log = logging.getLogger(__name__)

__all__ = [
    "RocLike",
    "plot_rejection",
    "plot_roc",
    "plot_score_distributions",
    "plot_confusion_matrix",
    "plot_history",
    "MAX_CURVE_POINTS",
]

MAX_CURVE_POINTS = 2000


class RocLike(Protocol):
    """Anything with ``fpr`` and ``tpr`` arrays.

    For example a :class:`~hepml.evaluation.RocCurve` on the CPU. ``n_background_effective``
    or ``n_background``, when present, gives the binomial uncertainty band of the rejection.
    """

    fpr: Any
    tpr: Any


def _pyplot() -> Any:
    # Imported lazily; without a display matplotlib falls back to a non-GUI backend by
    # itself, and figures are only saved, never shown.
    import matplotlib.pyplot as plt

    return plt


def _style() -> Any:
    import mplhep

    plt = _pyplot()
    return plt.style.context(mplhep.style.CMS)


def _label(ax: Any) -> None:
    import mplhep

    mplhep.label.exp_text("hepml", "Simulation", loc=0, ax=ax)


def _save(fig: Any, stem: str | Path) -> list[Path]:
    plt = _pyplot()
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [Path(f"{stem}.png"), Path(f"{stem}.pdf")]
    try:
        for p in paths:
            fig.savefig(p, dpi=100 if p.suffix == ".png" else None, bbox_inches="tight")
    finally:
        plt.close(fig)
    log.debug("wrote %s", ", ".join(map(str, paths)))
    return paths


def _array(x: Any, name: str) -> np.ndarray:
    if hasattr(x, "detach"):
        x = x.detach()
        if getattr(x, "device", None) is not None and x.device.type != "cpu":
            raise BadValueError(f"{name} is on {x.device}; move it to the CPU (.cpu()) "
                                "before plotting")
        x = x.numpy()
    return np.asarray(x)


def _roc_arrays(name: str, roc: Any) -> tuple[np.ndarray, np.ndarray, float | None]:
    if isinstance(roc, Mapping):
        fpr, tpr = roc["fpr"], roc["tpr"]
        n_b = roc.get("n_background_effective", roc.get("n_background"))
    else:
        fpr, tpr = roc.fpr, roc.tpr
        n_b = getattr(roc, "n_background_effective", getattr(roc, "n_background", None))
    fpr = _array(fpr, f"{name}.fpr").astype(np.float64)
    tpr = _array(tpr, f"{name}.tpr").astype(np.float64)
    if fpr.shape != tpr.shape or fpr.ndim != 1:
        raise BadValueError(f"curve {name!r}: fpr and tpr must be 1-D of one length")
    return fpr, tpr, (float(n_b) if n_b is not None else None)


def _thin(fpr: np.ndarray, tpr: np.ndarray, max_points: int = MAX_CURVE_POINTS) -> np.ndarray:
    """Indices of at most ~2·max_points ROC points: even in log ε_B and in ε_S."""
    n = fpr.shape[0]
    if n <= 2 * max_points:
        return np.arange(n)
    keep = [np.array([0, n - 1])]
    f_mono = np.maximum.accumulate(np.nan_to_num(fpr, nan=0.0))
    t_mono = np.maximum.accumulate(np.nan_to_num(tpr, nan=0.0))
    positive = f_mono > 0
    if positive.any():
        first = int(np.argmax(positive))
        logf = np.log10(f_mono[first:])
        grid = np.linspace(logf[0], logf[-1], max_points)
        keep.append(first + np.searchsorted(logf, grid).clip(0, n - 1 - first))
    keep.append(np.searchsorted(t_mono, np.linspace(t_mono[0], t_mono[-1], max_points))
                .clip(0, n - 1))
    keep.append(np.searchsorted(f_mono, np.linspace(f_mono[0], f_mono[-1], max_points))
                .clip(0, n - 1))
    return np.unique(np.concatenate(keep))


def plot_rejection(curves: Mapping[str, RocLike], path: str | Path, *,
                   title: str | None = None) -> list[Path]:
    """Background rejection 1/ε_B (log scale) against signal efficiency ε_S.

    Several curves share one plot (e.g. a CNN against a GNN). Each gets a band of
    ±σ(1/ε_B) = sqrt(ε_B (1 − ε_B) / N_B) / ε_B² when the curve knows N_B. Points with
    ε_B = 0 (infinite rejection) or NaN are masked, never drawn.

    Args:
        curves: Label → ROC (``fpr``/``tpr`` arrays on the CPU).
        path: Path stem; ``.png`` and ``.pdf`` are appended.
        title: Optional text in the upper right corner.

    Returns:
        The PNG and PDF paths.
    """
    if not curves:
        raise EmptyInputError("plot_rejection: no curves to plot")
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        drawn = 0
        for name, roc in curves.items():
            fpr, tpr, n_b = _roc_arrays(name, roc)
            idx = _thin(fpr, tpr)
            fpr, tpr = fpr[idx], tpr[idx]
            ok = np.isfinite(fpr) & np.isfinite(tpr) & (fpr > 0) & (tpr > 0)
            if not ok.any():
                log.warning("plot_rejection: curve %r has no finite rejection to draw", name)
                continue
            eps_s, eps_b = tpr[ok], fpr[ok]
            rej = 1.0 / eps_b
            (line,) = ax.plot(eps_s, rej, label=str(name), lw=2)
            if n_b and n_b > 0:
                sigma = np.sqrt(eps_b * (1 - eps_b) / n_b) / eps_b**2
                # 1/ε_B cannot fall below 1 (ε_B <= 1): the band stops there
                low = np.clip(rej - sigma, np.maximum(rej * 1e-3, 1.0), None)
                ax.fill_between(eps_s, low, rej + sigma, color=line.get_color(), alpha=0.25,
                                lw=0)
            drawn += 1
        ax.set_yscale("log")
        ax.set_xlim(0, 1)
        ax.set_xlabel(r"Signal efficiency $\varepsilon_S$")
        ax.set_ylabel(r"Background rejection $1/\varepsilon_B$")
        if drawn:
            ax.legend(loc="upper right", title=title)
        else:
            ax.set_ylim(1, 10)
            ax.text(0.5, 0.5, "no finite rejection", transform=ax.transAxes, ha="center")
        _label(ax)
        return _save(fig, path)


def plot_roc(curves: Mapping[str, RocLike], path: str | Path, *,
             title: str | None = None) -> list[Path]:
    """ROC curves, true-positive rate against false-positive rate, with the diagonal.

    Args:
        curves: Label → ROC (``fpr``/``tpr`` arrays on the CPU).
        path: Path stem.
        title: Optional legend title.

    Returns:
        The PNG and PDF paths.
    """
    if not curves:
        raise EmptyInputError("plot_roc: no curves to plot")
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        for name, roc in curves.items():
            fpr, tpr, _ = _roc_arrays(name, roc)
            idx = _thin(fpr, tpr)
            ok = np.isfinite(fpr[idx]) & np.isfinite(tpr[idx])
            ax.plot(fpr[idx][ok], tpr[idx][ok], label=str(name), lw=2)
        ax.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="random")
        ax.set_xlim(0, 1)
        ax.set_ylim(0, 1.05)
        ax.set_xlabel(r"False-positive rate $\varepsilon_B$")
        ax.set_ylabel(r"True-positive rate $\varepsilon_S$")
        ax.legend(loc="lower right", title=title)
        _label(ax)
        return _save(fig, path)


def plot_score_distributions(scores: Any, labels: Any, class_names: Sequence[str],
                             path: str | Path, *, bins: int = 50) -> list[Path]:
    """Normalised score histograms, one per true class.

    Args:
        scores: Scores ``[N]`` (e.g. the signal-class output).
        labels: True class index (or bool) per entry ``[N]``.
        class_names: Name per class index.
        path: Path stem.
        bins: Number of bins over the score range.

    Returns:
        The PNG and PDF paths.
    """
    scores = _array(scores, "scores").astype(np.float64).reshape(-1)
    labels = _array(labels, "labels").reshape(-1).astype(np.int64)
    if scores.shape != labels.shape:
        raise BadValueError(f"plot_score_distributions: {scores.shape[0]} scores but "
                            f"{labels.shape[0]} labels")
    finite = np.isfinite(scores)
    if not finite.any():
        raise EmptyInputError("plot_score_distributions: no finite scores to histogram")
    lo, hi = float(scores[finite].min()), float(scores[finite].max())
    if hi <= lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = np.linspace(lo, hi, bins + 1)
    plt = _pyplot()
    with _style():
        fig, ax = plt.subplots(figsize=(9, 8))
        for k in np.unique(labels):
            sel = finite & (labels == k)
            if not sel.any():
                continue
            name = class_names[k] if 0 <= k < len(class_names) else f"class {k}"
            counts, _ = np.histogram(scores[sel], bins=edges, density=True)
            ax.stairs(counts, edges, label=f"{name} ({int(sel.sum()):,})", lw=2)
        ax.set_xlabel("Score")
        ax.set_ylabel("Normalised entries")
        ax.set_xlim(lo, hi)
        ax.legend(loc="upper center")
        _label(ax)
        return _save(fig, path)


def plot_confusion_matrix(cm: Any, class_names: Sequence[str], path: str | Path, *,
                          normalize: bool = False) -> list[Path]:
    """Confusion matrix (rows = true class) with the numbers written in the cells.

    Args:
        cm: ``[C, C]`` counts, rows = true class, columns = predicted class.
        class_names: C names.
        path: Path stem.
        normalize: Row-normalise (fraction of each true class); an empty row stays NaN.

    Returns:
        The PNG and PDF paths.
    """
    cm = _array(cm, "cm").astype(np.float64)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1] or cm.shape[0] != len(class_names):
        raise BadValueError(f"plot_confusion_matrix: need a [{len(class_names)}, "
                            f"{len(class_names)}] matrix for {list(class_names)}, "
                            f"got shape {cm.shape}")
    if normalize:
        rows = cm.sum(1, keepdims=True)
        values = np.divide(cm, rows, out=np.full_like(cm, np.nan), where=rows > 0)
    else:
        values = cm
    c = cm.shape[0]
    plt = _pyplot()
    with _style():
        size = max(7.0, 1.6 * c + 4)
        fig, ax = plt.subplots(figsize=(size + 1.5, size))
        shown = np.ma.masked_invalid(values)
        image = ax.imshow(shown, cmap="Blues", vmin=0, vmax=1 if normalize else None,
                          aspect="equal", origin="upper")
        fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04,
                     label="Fraction of true class" if normalize else "Entries")
        finite = values[np.isfinite(values)]
        top = float(finite.max()) if finite.size else 1.0
        fontsize = max(8, 20 - 2 * c)
        for i in range(c):  # a loop over cells of a small matrix, not over data
            for j in range(c):
                v = values[i, j]
                text = "n/a" if not np.isfinite(v) else (f"{v:.3f}" if normalize
                                                         else f"{int(round(v)):,}")
                dark = np.isfinite(v) and v > 0.6 * (1 if normalize else top)
                ax.text(j, i, text, ha="center", va="center", fontsize=fontsize,
                        color="white" if dark else "black")
        ax.set_xticks(range(c), [str(n) for n in class_names], rotation=45 if c > 3 else 0)
        ax.set_yticks(range(c), [str(n) for n in class_names])
        ax.minorticks_off()
        ax.set_xlabel("Predicted class")
        ax.set_ylabel("True class")
        _label(ax)
        return _save(fig, path)


def plot_history(history: Sequence[Mapping[str, float]], path: str | Path) -> list[Path]:
    """Training history: loss (top) and accuracy (bottom) per epoch.

    Without any accuracy in the history (models that have none), the loss panel alone.

    Args:
        history: One dict per epoch with any of ``epoch``, ``train_loss``, ``val_loss``,
            ``train_accuracy``, ``val_accuracy``, ``lr``; missing keys are skipped.
            The learning rate, when present, is drawn on a second axis of the loss panel.
        path: Path stem.

    Returns:
        The PNG and PDF paths.
    """
    if not history:
        raise EmptyInputError("plot_history: the history is empty")

    def column(key: str) -> np.ndarray:
        return np.array([row.get(key, np.nan) if row.get(key) is not None else np.nan
                         for row in history], dtype=np.float64)

    epochs = column("epoch")
    if np.isnan(epochs).any():
        epochs = np.arange(1, len(history) + 1, dtype=np.float64)
    plt = _pyplot()
    has_accuracy = any(np.isfinite(column(k)).any() for k in ("train_accuracy", "val_accuracy"))
    with _style():
        if has_accuracy:
            fig, (ax_loss, ax_acc) = plt.subplots(2, 1, figsize=(9, 10), sharex=True)
            panels = ((ax_loss, ("train_loss", "val_loss"), "Loss"),
                      (ax_acc, ("train_accuracy", "val_accuracy"), "Accuracy"))
        else:  # a model without accuracy (regression, autoencoder, GAN): the loss alone
            fig, ax_loss = plt.subplots(figsize=(9, 6))
            ax_acc = ax_loss
            panels = ((ax_loss, ("train_loss", "val_loss"), "Loss"),)
        for ax, keys, ylabel in panels:
            drawn = False
            for key, style in zip(keys, ("-o", "--s"), strict=True):
                values = column(key)
                if np.isfinite(values).any():
                    ax.plot(epochs, values, style, label=key.replace("_", " "), ms=4)
                    drawn = True
            ax.set_ylabel(ylabel)
            if drawn:
                ax.legend(loc="best")
            else:
                ax.text(0.5, 0.5, f"no {ylabel.lower()} recorded", transform=ax.transAxes,
                        ha="center", va="center")
        lr = column("lr")
        if np.isfinite(lr).any() and (lr[np.isfinite(lr)] > 0).all():
            twin = ax_loss.twinx()
            twin.plot(epochs, lr, ":", color="grey", label="learning rate")
            twin.set_yscale("log")
            twin.set_ylabel("Learning rate", color="grey")
        ax_acc.set_xlabel("Epoch")
        _label(ax_loss)
        return _save(fig, path)


def plot_mean_images(images: Mapping[str, Any], path: str | Path, *,
                     extent: Sequence[float] | None = None,
                     axis_labels: tuple[str, str] = (r"$\Delta\phi'$", r"$\Delta\eta'$"),
                     ) -> list[Path]:
    """Average image of each class side by side, log colour scale.

    Args:
        images: Class name -> ``[H, W]`` mean image (e.g. the mean jet image of the class).
        path: Path stem.
        extent: ``(x_lo, x_hi, y_lo, y_hi)`` of the image in its coordinates.
        axis_labels: x and y axis labels.

    Returns:
        The PNG and PDF paths.
    """
    from matplotlib.colors import LogNorm

    arrays = {name: _array(img, name).astype(np.float64) for name, img in images.items()}
    if not arrays:
        raise EmptyInputError("plot_mean_images: no images")
    positive = np.concatenate([a[a > 0] for a in arrays.values()] or [np.ones(1)])
    lo, hi = (float(positive.min()), float(positive.max())) if positive.size else (1e-6, 1.0)
    plt = _pyplot()
    with _style():
        fig, axes = plt.subplots(1, len(arrays), figsize=(7.5 * len(arrays), 7), squeeze=False)
        for ax, (name, img) in zip(axes[0], arrays.items(), strict=True):
            shown = np.ma.masked_less_equal(img, 0)
            im = ax.imshow(shown, origin="lower", extent=extent, cmap="viridis",
                           norm=LogNorm(vmin=max(lo, hi * 1e-6), vmax=hi), aspect="auto")
            ax.set_title(str(name), loc="right")
            ax.set_xlabel(axis_labels[0])
            ax.set_ylabel(axis_labels[1])
            _label(ax)
        fig.colorbar(im, ax=list(axes[0]), fraction=0.03, pad=0.02, label="Mean pixel intensity")
        return _save(fig, path)
