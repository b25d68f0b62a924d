"""Figures of merit of anomaly scans, with torch on the scores' device.

An anomaly score is judged like a tagger's output, but from the background's side: the
signal efficiency ε_S kept at a fixed, small background efficiency ε_B (the rate of
false alarms a search can afford), the significance improvement ε_S/√ε_B (the factor by
which a cut on the score raises S/√B), and whether the cut *sculpts* the background,
i.e. changes the shape of the mass distribution in which a bump hunt would look.

A scan with labels also builds its *scanned sample* here (:func:`injection_mask`: test
background plus signal injected at a chosen fraction) and reports what cuts on the score
keep of it (:func:`injection_table`); :func:`signal_metrics` gathers the ROC figures of
merit of a labelled test sample.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hepml.errors import BadValueError, EmptyInputError
from hepml.evaluation.metrics import RocCurve, auc, bootstrap_auc, rejection_at, roc_curve
from hepml.training.device import float_dtype

log = logging.getLogger(__name__)

__all__ = ["efficiency_at_background", "significance_improvement", "cut_at_background",
           "mass_sculpting", "js_divergence", "injection_mask", "signal_metrics",
           "injection_table"]


def _background_efficiencies(values: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    eff = torch.as_tensor(values, dtype=dtype).reshape(-1)
    if eff.numel() == 0 or not bool(((eff > 0) & (eff <= 1)).all()):
        raise BadValueError(f"background efficiencies must lie in (0, 1], got {eff.tolist()}")
    return eff


def efficiency_at_background(roc: RocCurve, background_efficiency: float | Sequence[float]
                             ) -> dict[str, torch.Tensor]:
    """Signal efficiency ε_S at fixed background efficiencies ε_B, with binomial errors.

    ε_S is interpolated linearly in tpr against fpr between the ROC points bracketing
    ε_B (the highest ε_S among points with fpr exactly ε_B). A working point needs at
    least one background entry above the cut: below ``ε_B = 1 / N_B`` the sample cannot
    tell, so the value is NaN and ``reachable`` is False ("as far as the sample allows").

    Args:
        roc: From :func:`hepml.evaluation.roc_curve`.
        background_efficiency: ε_B in (0, 1], one or several.

    Returns:
        ``efficiency`` (ε_S), ``uncertainty`` (``sqrt(ε_S (1 − ε_S) / N_S)``) and
        ``reachable`` (bool), each ``[K]`` on the ROC's device.
    """
    device = roc.fpr.device
    eff_b = _background_efficiencies(background_efficiency, float_dtype(device)).to(device)
    if not (roc.n_signal > 0 and roc.n_background > 0):
        nan = torch.full_like(eff_b, math.nan)
        return {"efficiency": nan, "uncertainty": nan.clone(),
                "reachable": torch.zeros_like(eff_b, dtype=torch.bool)}
    fpr, tpr = roc.fpr, roc.tpr
    # the last point at each fpr has the highest tpr: search on the right side
    hi = torch.searchsorted(fpr, eff_b, right=True).clamp_(1, fpr.numel() - 1)
    lo = hi - 1
    f0, f1, t0, t1 = fpr[lo], fpr[hi], tpr[lo], tpr[hi]
    slope = (t1 - t0) / torch.where(f1 > f0, f1 - f0, 1.0)
    eff_s = torch.where(f0 >= eff_b, t0, t0 + (eff_b - f0) * slope).clamp_(0.0, 1.0)
    eff_s = torch.where(eff_b >= 1, torch.ones_like(eff_s), eff_s)
    reachable = eff_b * roc.n_background_effective >= 1.0 - 1e-9
    eff_s = torch.where(reachable, eff_s, math.nan)
    sigma = torch.sqrt(eff_s * (1 - eff_s) / roc.n_signal)
    return {"efficiency": eff_s, "uncertainty": sigma, "reachable": reachable}


def significance_improvement(roc: RocCurve, *, min_background: float = 10.0
                             ) -> tuple[torch.Tensor, torch.Tensor]:
    """Significance-improvement curve ε_S/√ε_B against ε_S.

    A cut keeping ε_S of the signal and ε_B of the background changes S/√B by this
    factor. Points with fewer than ``min_background`` background entries left are
    dropped: there the curve is dominated by the statistical fluctuation of one or two
    background entries.

    Returns:
        ``(signal_efficiency, sic)``, float64 on the ROC's device, in ROC order.
    """
    if not (roc.n_signal > 0 and roc.n_background > 0):
        raise EmptyInputError("significance_improvement: the ROC needs signal and background")
    keep = roc.fpr * roc.n_background_effective >= min_background
    fpr, tpr = roc.fpr[keep], roc.tpr[keep]
    return tpr, tpr / torch.sqrt(fpr)


def cut_at_background(scores: torch.Tensor, background_efficiency: float) -> float:
    """Score threshold that keeps (about) ``background_efficiency`` of ``scores``.

    ``scores`` are background scores; the cut is ``score > threshold`` with the
    threshold the (1 − ε_B) quantile (linear interpolation, as ``numpy.quantile``).
    """
    if scores.numel() == 0:
        raise EmptyInputError("cut_at_background: no background scores")
    wide = float_dtype(scores.device)
    q = torch.tensor(1.0 - float(background_efficiency), dtype=wide, device=scores.device)
    return float(torch.quantile(scores.to(wide), q))


def js_divergence(p: torch.Tensor, q: torch.Tensor) -> float:
    """Jensen-Shannon divergence (natural log, between 0 and ln 2) of two histograms.

    Both are normalised to unit sum first; empty histograms give NaN.
    """
    p, q = p.to(float_dtype(p.device)), q.to(float_dtype(q.device))
    if p.sum() <= 0 or q.sum() <= 0:
        return math.nan
    p, q = p / p.sum(), q / q.sum()
    m = 0.5 * (p + q)

    def kl(a: torch.Tensor) -> torch.Tensor:
        nz = a > 0
        return (a[nz] * torch.log(a[nz] / m[nz])).sum()

    return float(0.5 * kl(p) + 0.5 * kl(q))


def mass_sculpting(mass: torch.Tensor, scores: torch.Tensor,
                   background_efficiencies: Sequence[float], *, bins: int = 30,
                   mass_range: tuple[float, float] | None = None, n_random: int = 50,
                   seed: int = 0) -> dict[str, Any]:
    """How a cut on the anomaly score changes the background's mass distribution.

    For each ε_B the background entries with the highest ``ε_B`` fraction of scores are
    kept; their mass histogram is compared with that of all background entries by the
    Jensen-Shannon divergence (0: same shape). A score that learned the mass (a QCD jet
    of high mass looks "anomalous") shows a divergence growing as the cut tightens. A small
    kept sample differs from the reference by statistics alone, so the same divergence is
    also computed for ``n_random`` random subsets of the same size: sculpting shows as a
    divergence well above that of the random subsets.

    Args:
        mass: Mass (or any observable) of the background entries ``[N]``.
        scores: Their anomaly scores ``[N]``.
        background_efficiencies: Cuts, as kept fractions of the background.
        bins: Histogram bins.
        mass_range: Histogram range (default: the 0.5 % and 99.5 % quantiles).
        n_random: Random subsets per cut for the statistical reference.
        seed: Seed of the random subsets.

    Returns:
        ``edges`` (list), ``all`` (counts before any cut), and per ε_B (key ``str(ε_B)``)
        ``threshold``, ``n_kept``, ``counts``, ``js_divergence``, and the mean and
        standard deviation of the random subsets' divergence (``js_random_subset``,
        ``js_random_subset_std``).
    """
    if mass.shape != scores.shape or mass.ndim != 1:
        raise BadValueError(f"mass_sculpting: mass {tuple(mass.shape)} and scores "
                            f"{tuple(scores.shape)} must be equal 1-d shapes")
    if mass.numel() == 0:
        raise EmptyInputError("mass_sculpting: no background entries")
    mass = mass.to(float_dtype(mass.device))
    if mass_range is None:
        q = torch.tensor([0.005, 0.995], dtype=mass.dtype, device=mass.device)
        lo, hi = (float(v) for v in torch.quantile(mass, q))
        if hi <= lo:
            hi = lo + 1.0
    else:
        lo, hi = mass_range
    reference = torch.histc(mass, bins=bins, min=lo, max=hi)
    edges = torch.linspace(lo, hi, bins + 1, dtype=torch.float64)
    out: dict[str, Any] = {"edges": edges.tolist(), "all": reference.tolist(), "cuts": {}}
    for eff in _background_efficiencies(background_efficiencies).tolist():
        threshold = cut_at_background(scores, eff)
        kept = mass[scores.to(mass.dtype) > threshold]
        counts = (torch.histc(kept, bins=bins, min=lo, max=hi) if kept.numel()
                  else torch.zeros_like(reference))
        # the divergence that a random subset of the same size shows: statistics alone
        gen = torch.Generator().manual_seed(seed)
        random_js = [js_divergence(reference, torch.histc(
            mass[torch.randperm(mass.numel(), generator=gen)[:kept.numel()].to(mass.device)],
            bins=bins, min=lo, max=hi)) for _ in range(n_random)] if kept.numel() else []
        out["cuts"][str(eff)] = {"threshold": threshold, "n_kept": int(kept.numel()),
                                 "counts": counts.tolist(),
                                 "js_divergence": js_divergence(reference, counts),
                                 "js_random_subset": (float(np.mean(random_js)) if random_js
                                                      else math.nan),
                                 "js_random_subset_std": (float(np.std(random_js)) if random_js
                                                          else math.nan)}
    return out


def injection_mask(labels: np.ndarray, split: np.ndarray, *, background: int,
                   signal: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """The scanned sample: test-split background plus injected test-split signal.

    ``n_s = round(f / (1 − f) · n_b)`` signal entries are drawn without replacement with
    ``seed``, so that they make the fraction ``f`` of the sample; if the test split has
    fewer, all are used and the achieved fraction is lower (logged).

    Returns:
        ``(mask over all entries, number of signal entries injected)``.
    """
    test = split == 2
    bkg = test & (labels == background)
    sig_idx = np.flatnonzero(test & np.isin(labels, list(signal)))
    n_b = int(bkg.sum())
    want = int(round(fraction / (1 - fraction) * n_b)) if fraction > 0 else 0
    if want > len(sig_idx):
        log.warning("signal_fraction %.4g needs %d signal entries but the test split has %d; "
                    "injecting all of them (fraction %.4g)", fraction, want, len(sig_idx),
                    len(sig_idx) / max(n_b + len(sig_idx), 1))
        want = len(sig_idx)
    chosen = np.random.default_rng(seed).choice(sig_idx, size=want, replace=False) if want else []
    mask = bkg.copy()
    mask[np.asarray(chosen, dtype=np.int64)] = True
    return mask, want


def signal_metrics(score: torch.Tensor, is_signal: torch.Tensor,
                   background_efficiencies: Sequence[float], working_points: Sequence[float],
                   seed: int) -> tuple[dict[str, Any], Any]:
    """How well an anomaly score separates signal from background (labelled entries).

    Args:
        score: Anomaly scores ``[N]``.
        is_signal: Which entries are signal ``[N]``.
        background_efficiencies: ε_B at which ε_S is quoted (``anomaly.background_efficiencies``).
        working_points: ε_S at which the rejection 1/ε_B is quoted.
        seed: Seed of the bootstrap interval of the AUC.

    Returns:
        ``(metrics, (roc, signal_efficiency, sic))``: AUC with its 68 % bootstrap
        interval, the counts, ε_S at each ε_B (NaN and not ``reachable`` below 1/N_B),
        the rejection at each working point and the largest significance improvement;
        then the ROC curve and the significance-improvement curve for the plots.
    """
    roc = roc_curve(score, is_signal)
    effs = efficiency_at_background(roc, list(background_efficiencies))
    rej, rej_err = rejection_at(roc, list(working_points))
    low, high = bootstrap_auc(score, is_signal, n_bootstrap=100, seed=seed)
    sig_eff, sic = significance_improvement(roc)
    best = int(torch.argmax(sic)) if sic.numel() else None
    out = {
        "auc": auc(roc.fpr, roc.tpr), "auc_ci": [low, high],
        "n_signal": int(roc.n_signal), "n_background": int(roc.n_background),
        "signal_efficiency": {
            f"{eb:g}": {"value": float(v), "uncertainty": float(e), "reachable": bool(r)}
            for eb, v, e, r in zip(background_efficiencies, effs["efficiency"].tolist(),
                                   effs["uncertainty"].tolist(), effs["reachable"].tolist(),
                                   strict=True)},
        "rejection": {f"{wp:g}": {"value": float(v), "uncertainty": float(e)}
                      for wp, v, e in zip(working_points, rej.tolist(), rej_err.tolist(),
                                          strict=True)},
        "max_significance_improvement": float(sic[best]) if best is not None else math.nan,
        "max_significance_improvement_at": float(sig_eff[best]) if best is not None else math.nan,
    }
    return out, (roc, sig_eff, sic)


def injection_table(score: np.ndarray, labels: np.ndarray, scanned: np.ndarray,
                    background: int, n_injected: int, background_efficiencies: Sequence[float],
                    top: list[dict[str, Any]]) -> dict[str, Any]:
    """What the scan of the scanned sample (background plus injected signal) finds.

    Args:
        score: Anomaly score of every entry ``[N]``.
        labels: Class of every entry ``[N]``.
        scanned: Which entries make the scanned sample ``[N]`` (:func:`injection_mask`).
        background: The background class.
        n_injected: Signal entries injected.
        background_efficiencies: ε_B of the cuts (``anomaly.background_efficiencies``).
        top: The ranked records (their ``index``).

    Returns:
        Background and signal counts, the signal fraction achieved, the signal entries
        in the ranked list, S/√B before any cut, and per ε_B (when at least one
        background entry is kept) the cut on the score, the background and signal kept
        and S/√B after it.
    """
    s = score[scanned]
    is_sig = labels[scanned] != background
    n_b, n_s = int((~is_sig).sum()), int(is_sig.sum())
    table: dict[str, Any] = {"n_background": n_b, "n_signal_injected": n_injected,
                             "signal_fraction": n_s / max(n_b + n_s, 1),
                             "signal_in_ranked_list": int(sum(labels[r["index"]] != background
                                                              for r in top)),
                             "ranked_list_size": len(top), "cuts": {}}
    if n_s == 0:
        table["note"] = "no signal injected: the scan ran on background alone"
    table["significance_before"] = n_s / math.sqrt(n_b) if n_b else math.nan
    for eff in background_efficiencies:
        if eff * n_b < 1:
            table["cuts"][f"{eff:g}"] = {"reachable": False}
            continue
        threshold = cut_at_background(torch.from_numpy(s[~is_sig]), eff)
        n_bp, n_sp = int((s[~is_sig] > threshold).sum()), int((s[is_sig] > threshold).sum())
        table["cuts"][f"{eff:g}"] = {"threshold": threshold, "background_kept": n_bp,
                                     "signal_kept": n_sp,
                                     "significance": n_sp / math.sqrt(n_bp) if n_bp else math.nan}
    return table
