"""Classification metrics computed with torch on the device of the input tensors.

Every function takes tensors on any device (cpu, cuda, mps) and computes there; only
the small final numbers move to the host. scikit-learn serves as the cross-check in the
tests, never as the implementation.

Conventions:

* A **selection** keeps the entries with ``score >= threshold``; signal is label 1.
* :func:`roc_curve` lists one point per distinct score, in decreasing threshold order,
  preceded by the point ``(fpr, tpr) = (0, 0)`` at threshold ``+inf``, exactly like
  ``sklearn.metrics.roc_curve(labels, scores, drop_intermediate=False)``.
* Efficiencies and rates are float64; thresholds are float64 (exact copies of the
  input scores, which are never rounded). On Apple GPUs (MPS), which have no float64,
  they are float32 (:func:`hepml.training.device.float_dtype`); thresholds are then
  float32 copies of float32 scores.
* When one class has no entries the ROC is still returned, with the rate of the empty
  class all NaN (as scikit-learn does) and a warning in the log; anything that needs
  both classes (:func:`roc_auc`) raises :class:`~hepml.errors.EmptyInputError`.

How the ROC is computed without a Python loop: the scores are mapped to integer keys that
sort in decreasing score order (the IEEE-754 bit pattern, with the magnitude bits of
negative numbers flipped); one stable integer sort (a radix sort on CPU) orders the
entries; ``unique_consecutive`` finds the distinct scores and a cumulative sum of the
sorted labels (or weights) gives the true- and false-positive counts at every distinct
threshold.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch

from hepml.errors import BadValueError, EmptyInputError
from hepml.training.device import float_dtype

log = logging.getLogger(__name__)

__all__ = [
    "RocCurve",
    "roc_curve",
    "auc",
    "roc_auc",
    "rejection_at",
    "threshold_at_efficiency",
    "bootstrap_auc",
    "binomial_rate",
    "confusion_matrix",
    "binary_confusion_matrix",
    "figures_of_merit",
    "evaluate_binary",
    "evaluate_multiclass",
    "json_safe",
]

# Elements per temporary array in the bootstrap (per chunk of replicas): bounds memory.
_BOOTSTRAP_BUDGET = 1 << 22


class RocCurve(NamedTuple):
    """A receiver operating characteristic, one point per distinct score.

    Attributes:
        fpr: False-positive rate (background efficiency ε_B), float64 ``[P]``.
        tpr: True-positive rate (signal efficiency ε_S), float64 ``[P]``.
        thresholds: Score thresholds, decreasing, ``thresholds[0] = +inf``, float64 ``[P]``.
        n_signal: Number (or sum of weights) of signal entries.
        n_background: Number (or sum of weights) of background entries.
        n_background_effective: Effective number of background entries,
            ``(Σw)² / Σw²``; equal to ``n_background`` without weights. It sets the
            binomial uncertainty of ε_B.
    """

    fpr: torch.Tensor
    tpr: torch.Tensor
    thresholds: torch.Tensor
    n_signal: float
    n_background: float
    n_background_effective: float


# --------------------------------------------------------------------------- validation


def _as_tensor(x: Any, name: str) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x
    try:
        return torch.as_tensor(x)
    except (TypeError, ValueError, RuntimeError) as err:
        raise BadValueError(f"{name}: cannot make a tensor from {type(x).__name__}: {err}") from err


def _check_scores(scores: Any, name: str = "scores") -> torch.Tensor:
    """Return ``scores`` as a 1-D floating tensor, or raise on NaN/inf and bad shapes."""
    scores = _as_tensor(scores, name)
    if scores.dim() != 1:
        raise BadValueError(f"{name} must be one-dimensional, got shape {tuple(scores.shape)}")
    if not torch.is_floating_point(scores):
        if scores.dtype == torch.bool or scores.is_complex():
            raise BadValueError(f"{name} must be real numbers, got dtype {scores.dtype}")
        scores = scores.to(float_dtype(scores.device))
    _check_finite(scores, name)
    return scores


def _check_finite(x: torch.Tensor, name: str) -> None:
    bad = ~torch.isfinite(x)
    if bool(bad.any()):
        n_bad = int(bad.sum())
        first = int(bad.nonzero()[0, 0])
        n_nan = int(torch.isnan(x).sum())
        raise BadValueError(
            f"{name}: {n_bad} of {x.numel()} values are not finite ({n_nan} NaN, "
            f"{n_bad - n_nan} infinite); the first is at index {first} "
            f"(value {x.view(-1)[first].item()}). Remove or fix these entries before "
            "evaluating (a NaN score usually means the model diverged or the input held NaN)."
        )


def _check_labels(labels: Any, n: int, device: torch.device) -> torch.Tensor:
    """Return binary ``labels`` as a bool tensor on ``device``; raise unless they are 0/1."""
    labels = _as_tensor(labels, "labels")
    if labels.dim() != 1 or labels.shape[0] != n:
        raise BadValueError(
            f"labels must be one-dimensional with one entry per score ({n}), "
            f"got shape {tuple(labels.shape)}"
        )
    if labels.device != device:
        raise BadValueError(f"labels are on {labels.device} but scores on {device}; move both "
                            "to the same device")
    if labels.dtype == torch.bool:
        return labels
    ok = (labels == 0) | (labels == 1)
    if not bool(ok.all()):
        first = int((~ok).nonzero()[0, 0])
        values = torch.unique(labels[~ok])[:5].tolist()
        raise BadValueError(
            f"labels must be 0 (background) or 1 (signal); {int((~ok).sum())} are not, "
            f"e.g. {values}, the first at index {first}. For several classes, compare with "
            "the signal class (labels == k) or use evaluate_multiclass."
        )
    return labels == 1


def _check_weights(weights: Any, n: int, device: torch.device) -> torch.Tensor:
    weights = _as_tensor(weights, "weights")
    if weights.dim() != 1 or weights.shape[0] != n:
        raise BadValueError(f"weights must be one-dimensional with one entry per score ({n}), "
                            f"got shape {tuple(weights.shape)}")
    if weights.device != device:
        raise BadValueError(f"weights are on {weights.device} but scores on {device}")
    weights = weights.to(float_dtype(device))
    _check_finite(weights, "weights")
    return weights


def _check_efficiency(eff: Any, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    eff = torch.as_tensor(eff, dtype=dtype)
    if bool(torch.isnan(eff).any()) or bool(((eff <= 0) | (eff > 1)).any()):
        raise BadValueError(f"signal efficiency must lie in (0, 1], got {eff.tolist()}")
    return eff


# ------------------------------------------------------------------------------- sorting


def _descending_keys(scores: torch.Tensor) -> torch.Tensor:
    """Integer keys whose ascending order is the decreasing order of ``scores``.

    Floats are reinterpreted as integers of the same width; flipping the magnitude bits
    of negative numbers makes the integers ordered like the floats, and a bitwise NOT
    reverses the order. ``-0.0`` is first turned into ``+0.0`` so that both share a key.
    """
    if scores.dtype == torch.float64:
        exact32 = scores.to(torch.float32)
        if bool((exact32.to(torch.float64) == scores).all()):
            scores = exact32  # every score is a float32: half the sort work, same order
    elif scores.dtype != torch.float32:
        scores = scores.to(torch.float32)  # float16/bfloat16 -> float32 is exact
    bits = (scores + 0.0).view(torch.int32 if scores.dtype == torch.float32 else torch.int64)
    sign_shift = 31 if bits.dtype == torch.int32 else 63
    min_int = torch.iinfo(bits.dtype).min
    # non-negative: ~bits; negative: bits ^ MIN  (both reverse the float order)
    return bits ^ (~(bits >> sign_shift) | min_int)


def _keys_to_scores(keys: torch.Tensor) -> torch.Tensor:
    """Invert :func:`_descending_keys` (float64 result)."""
    min_int = torch.iinfo(keys.dtype).min
    # keys = ~bits for bits >= 0 (negative keys), bits ^ MIN for bits < 0 (keys >= 0)
    bits = torch.where(keys < 0, ~keys, keys ^ min_int)
    floats = bits.view(torch.float32 if keys.dtype == torch.int32 else torch.float64)
    return floats.to(float_dtype(keys.device))


class _Groups(NamedTuple):
    """Per distinct score, in decreasing score order."""

    thresholds: torch.Tensor  # float64 [G]
    tps: torch.Tensor  # cumulative signal count/weight at each threshold [G]
    fps: torch.Tensor  # cumulative background count/weight [G]
    n_background_effective: float


def _grouped(scores: torch.Tensor, is_signal: torch.Tensor,
             weights: torch.Tensor | None) -> _Groups:
    """Cumulative signal and background counts at every distinct score (one sort)."""
    if weights is not None:
        keep = weights != 0  # zero weights do not make a threshold (as in scikit-learn)
        if not bool(keep.all()):
            scores, is_signal, weights = scores[keep], is_signal[keep], weights[keep]
    keys = _descending_keys(scores)
    sorted_keys, order = torch.sort(keys, stable=True)  # integer + stable: radix sort on CPU
    del keys
    uniq, counts = torch.unique_consecutive(sorted_keys, return_counts=True)
    del sorted_keys
    ends = counts.cumsum_(0).sub_(1)
    y = is_signal[order]
    if weights is None:
        tps = y.cumsum(0, dtype=torch.int64)[ends]
        fps = (ends + 1).sub_(tps)
        n_bkg_eff = float(fps[-1]) if fps.numel() else 0.0
    else:
        w = weights[order]
        wy = torch.where(y, w, 0.0)
        tps = wy.cumsum(0)[ends]
        w.sub_(wy)  # background weights
        fps = w.cumsum(0)[ends]
        sum_w2 = float((w * w).sum())
        n_bkg_eff = float(fps[-1]) ** 2 / sum_w2 if sum_w2 > 0 else 0.0
    return _Groups(_keys_to_scores(uniq), tps, fps, n_bkg_eff)


# ----------------------------------------------------------------------------------- ROC


def roc_curve(scores: torch.Tensor, labels: torch.Tensor,
              weights: torch.Tensor | None = None) -> RocCurve:
    """ROC curve over all distinct thresholds, on the device of ``scores``.

    Identical point for point to ``sklearn.metrics.roc_curve(labels, scores,
    sample_weight=weights, drop_intermediate=False)``: the first point is
    ``(fpr, tpr) = (0, 0)`` at threshold ``+inf``, then one point per distinct score
    (ties give one point) in decreasing order; entries of zero weight are ignored.

    Args:
        scores: Classifier output; larger means more signal-like. Any float dtype.
        labels: 1 (or True) for signal, 0 (False) for background.
        weights: Optional per-entry weights (negative weights are allowed, but the
            curve may then not be monotonic).

    Returns:
        A :class:`RocCurve` on the device of ``scores``. If one class has no entries,
        its rate (``tpr`` without signal, ``fpr`` without background) is all NaN and a
        warning is logged.

    Shapes:
        scores, labels, weights: ``[N]``. fpr, tpr, thresholds: ``[P]``, P = distinct
        scores + 1.

    Raises:
        BadValueError: NaN or infinite scores or weights, labels other than 0/1, shapes
            or devices that do not match.
        EmptyInputError: No entries (or all weights zero).
    """
    scores = _check_scores(scores)
    if scores.numel() == 0:
        raise EmptyInputError("roc_curve: no scores given; there is nothing to evaluate")
    is_signal = _check_labels(labels, scores.shape[0], scores.device)
    w = None if weights is None else _check_weights(weights, scores.shape[0], scores.device)
    if w is not None and not bool((w != 0).any()):
        raise EmptyInputError("roc_curve: every weight is zero; there is nothing to evaluate")
    g = _grouped(scores, is_signal, w)
    zero = g.tps.new_zeros(1)
    wide = float_dtype(scores.device)
    tps = torch.cat([zero, g.tps]).to(wide)
    fps = torch.cat([zero, g.fps]).to(wide)
    inf = torch.full((1,), math.inf, dtype=wide, device=scores.device)
    thresholds = torch.cat([inf, g.thresholds])
    n_sig, n_bkg = float(tps[-1]), float(fps[-1])
    if n_bkg <= 0:
        log.warning("roc_curve: no background entries (label 0); the false-positive rate is NaN")
        fpr = torch.full_like(fps, math.nan)
    else:
        fpr = fps.div_(n_bkg)
    if n_sig <= 0:
        log.warning("roc_curve: no signal entries (label 1); the true-positive rate is NaN")
        tpr = torch.full_like(tps, math.nan)
    else:
        tpr = tps.div_(n_sig)
    return RocCurve(fpr, tpr, thresholds, n_sig, n_bkg, g.n_background_effective)


def auc(fpr: torch.Tensor, tpr: torch.Tensor) -> float:
    """Area under a curve by the trapezoid rule (float64), ``∫ tpr d(fpr)``.

    Args:
        fpr: x coordinates, in curve order (non-decreasing for a ROC).
        tpr: y coordinates.

    Returns:
        The area; NaN if any coordinate is NaN (a ROC with an empty class).

    Shapes:
        fpr, tpr: ``[P]``, P >= 2.
    """
    fpr, tpr = torch.as_tensor(fpr), torch.as_tensor(tpr)
    fpr, tpr = fpr.to(float_dtype(fpr.device)), tpr.to(float_dtype(tpr.device))
    if fpr.shape != tpr.shape or fpr.dim() != 1:
        raise BadValueError(f"auc: fpr and tpr must be 1-D of one length, got "
                            f"{tuple(fpr.shape)} and {tuple(tpr.shape)}")
    if fpr.numel() < 2:
        raise EmptyInputError(f"auc: need at least 2 points, got {fpr.numel()}")
    return float(torch.trapezoid(tpr, fpr))


def roc_auc(scores: torch.Tensor, labels: torch.Tensor,
            weights: torch.Tensor | None = None) -> float:
    """Area under the ROC curve; equals ``sklearn.metrics.roc_auc_score``.

    Args:
        scores: Classifier output, larger = more signal-like.
        labels: 1/True for signal, 0/False for background.
        weights: Optional per-entry weights.

    Returns:
        The AUC as a Python float.

    Shapes:
        scores, labels, weights: ``[N]``.

    Raises:
        EmptyInputError: No entries, or a class without entries (AUC undefined).
        BadValueError: As :func:`roc_curve`.
    """
    roc = _roc_both_classes(scores, labels, weights, "roc_auc")
    return auc(roc.fpr, roc.tpr)


def _roc_both_classes(scores: Any, labels: Any, weights: Any, what: str) -> RocCurve:
    scores = _check_scores(scores)
    if scores.numel() == 0:
        raise EmptyInputError(f"{what}: no scores given")
    is_signal = _check_labels(labels, scores.shape[0], scores.device)
    n_sig = int(is_signal.sum())
    if n_sig == 0 or n_sig == is_signal.numel():
        empty = "signal (label 1)" if n_sig == 0 else "background (label 0)"
        raise EmptyInputError(f"{what}: there are no {empty} entries among {is_signal.numel()}; "
                              "the AUC needs both classes")
    roc = roc_curve(scores, is_signal, weights)
    if not (roc.n_signal > 0 and roc.n_background > 0):
        raise EmptyInputError(f"{what}: the signal or background weights sum to zero")
    return roc


def threshold_at_efficiency(roc: RocCurve, signal_efficiency: float) -> float:
    """Score threshold of the working point with signal efficiency ``signal_efficiency``.

    The threshold is that of the first ROC point (tightest cut) whose ``tpr`` reaches
    ``signal_efficiency``: selecting ``score >= threshold`` keeps at least that fraction
    of the signal. With ties the achieved efficiency can exceed the target.

    Args:
        roc: From :func:`roc_curve`.
        signal_efficiency: Target ε_S in (0, 1].

    Returns:
        The threshold as a float.

    Raises:
        EmptyInputError: The ROC has no signal entries (``tpr`` is NaN).
        BadValueError: ``signal_efficiency`` outside (0, 1].
    """
    eff = float(_check_efficiency(signal_efficiency, roc.tpr.dtype))
    if not roc.n_signal > 0:
        raise EmptyInputError("threshold_at_efficiency: the ROC has no signal entries")
    reach = torch.cummax(roc.tpr, 0).values
    target = torch.tensor([eff], dtype=reach.dtype, device=reach.device)
    i = int(torch.searchsorted(reach, target).clamp_(max=reach.numel() - 1))
    return float(roc.thresholds[i])


def rejection_at(roc: RocCurve, signal_efficiency: float | Sequence[float] | torch.Tensor
                 ) -> tuple[torch.Tensor, torch.Tensor]:
    """Background rejection 1/ε_B at fixed signal efficiency, with its binomial error.

    ε_B is obtained by **linear interpolation of fpr against tpr** between the two ROC
    points that bracket ε_S (the last point below ε_S and the first point reaching it);
    if a point has exactly ``tpr = ε_S``, its ``fpr`` is used (the smallest such).
    The uncertainty is binomial on ε_B: ``σ(1/ε_B) = sqrt(ε_B (1 − ε_B) / N_B) / ε_B²``
    with ``N_B`` the (effective, for weights) number of background entries.
    ε_B = 0 gives ``rejection = inf`` and ``uncertainty = nan``; nothing raises (the
    caller masks). A ROC without signal or background gives NaN.

    Args:
        roc: From :func:`roc_curve`.
        signal_efficiency: ε_S in (0, 1], a number or several.

    Returns:
        ``(rejection, uncertainty)``, float64 tensors on the ROC's device with the shape
        of ``signal_efficiency`` (0-dim for a number).

    Shapes:
        signal_efficiency: ``[]`` or ``[K]``; results likewise.
    """
    device = roc.tpr.device
    eff = _check_efficiency(signal_efficiency, float_dtype(device)).to(device)
    shape = eff.shape
    eff = eff.reshape(-1)
    tpr, fpr = roc.tpr, roc.fpr
    n_b = roc.n_background_effective
    if not (roc.n_signal > 0 and roc.n_background > 0 and n_b > 0):
        nan = torch.full(shape, math.nan, dtype=float_dtype(device), device=device)
        return nan, nan.clone()
    reach = torch.cummax(tpr, 0).values
    hi = torch.searchsorted(reach, eff).clamp_(1, tpr.numel() - 1)
    lo = hi - 1
    t0, t1, f0, f1 = tpr[lo], tpr[hi], fpr[lo], fpr[hi]
    slope = (f1 - f0) / torch.where(t1 > t0, t1 - t0, 1.0)
    eps_b = torch.where(t1 <= eff, f1, f0 + (eff - t0) * slope).clamp_(0.0, 1.0)
    with torch.no_grad():
        rejection = torch.where(eps_b > 0, 1.0 / eps_b, math.inf)
        sigma = torch.sqrt(eps_b * (1.0 - eps_b) / n_b) / (eps_b * eps_b)
        sigma = torch.where(eps_b > 0, sigma, math.nan)
    return rejection.reshape(shape), sigma.reshape(shape)


def binomial_rate(passed: int, total: int) -> dict[str, Any]:
    """A rate with its binomial uncertainty ``sqrt(p (1 - p) / n)`` and a 68 % interval.

    The interval is Wilson's score interval (z = 1), which stays inside [0, 1] and is not
    empty at 0 or n passes, where the simple uncertainty is 0. NaN for ``total == 0``.
    """
    if total <= 0:
        return {"value": math.nan, "uncertainty": math.nan, "interval_68": [math.nan, math.nan],
                "passed": int(passed), "total": int(total)}
    p = passed / total
    z2 = 1.0
    centre = (p + z2 / (2 * total)) / (1 + z2 / total)
    half = math.sqrt(p * (1 - p) / total + z2 / (4 * total * total)) / (1 + z2 / total)
    return {"value": p, "uncertainty": math.sqrt(max(p * (1 - p), 0.0) / total),
            "interval_68": [max(0.0, centre - half), min(1.0, centre + half)],
            "passed": int(passed), "total": int(total)}


# ----------------------------------------------------------------------------- bootstrap


def bootstrap_auc(scores: torch.Tensor, labels: torch.Tensor, n_bootstrap: int = 100,
                  confidence: float = 0.68, *, seed: int | None = 0,
                  generator: torch.Generator | None = None) -> tuple[float, float]:
    """Percentile bootstrap interval of the ROC AUC, vectorised on the device.

    Resampling with replacement is done as a **Poisson bootstrap**: every entry gets a
    weight drawn from Poisson(1) (the large-N limit of the multinomial counts of
    resampling with replacement). The AUC depends only on the summed weights of the
    signal and background entries at each distinct score, and a sum of ``n``
    independent Poisson(1) is Poisson(``n``), so the weights are drawn directly per
    (distinct score, class) cell — exact, and O(number of distinct scores) per
    replica instead of O(N). Replicas are processed in chunks so that temporaries stay
    below ~4·10⁶ elements whatever N is.

    Args:
        scores: Classifier output.
        labels: 1/True signal, 0/False background.
        n_bootstrap: Number of replicas (>= 2).
        confidence: Central probability of the interval, e.g. 0.68 or 0.95.
        seed: Seed of a fresh generator on the scores' device (ignored if
            ``generator`` is given).
        generator: A ``torch.Generator`` on the scores' device.

    Returns:
        ``(low, high)``: the ``(1 ∓ confidence)/2`` quantiles of the replica AUCs.

    Shapes:
        scores, labels: ``[N]``.

    Raises:
        EmptyInputError: No entries or a class without entries.
        BadValueError: Bad scores/labels, ``n_bootstrap < 2``, confidence not in (0, 1).
    """
    if int(n_bootstrap) < 2:
        raise BadValueError(f"bootstrap_auc: n_bootstrap must be >= 2, got {n_bootstrap}")
    if not 0 < confidence < 1:
        raise BadValueError(f"bootstrap_auc: confidence must lie in (0, 1), got {confidence}")
    scores = _check_scores(scores)
    if scores.numel() == 0:
        raise EmptyInputError("bootstrap_auc: no scores given")
    is_signal = _check_labels(labels, scores.shape[0], scores.device)
    n_sig = int(is_signal.sum())
    if n_sig == 0 or n_sig == is_signal.numel():
        raise EmptyInputError("bootstrap_auc: one class has no entries; the AUC needs both")
    device = scores.device
    if generator is None:
        generator = torch.Generator(device=device)
        generator.manual_seed(0 if seed is None else int(seed))
    g = _grouped(scores, is_signal, None)
    # per-cell counts: rates[g, 0] = background, rates[g, 1] = signal at distinct score g
    zero = g.tps.new_zeros(1)
    sig = torch.diff(g.tps, prepend=zero)
    bkg = torch.diff(g.fps, prepend=zero)
    rates = torch.stack([bkg, sig], 1).to(torch.float32)  # exact below 2^24 per cell
    if bool((rates >= 2**24).any()) and float_dtype(device) == torch.float64:
        rates = rates.to(torch.float64)
    n_groups = rates.shape[0]
    chunk = max(1, _BOOTSTRAP_BUDGET // (2 * n_groups))
    aucs = []
    for start in range(0, int(n_bootstrap), chunk):  # loop over chunks of replicas only
        r = min(chunk, int(n_bootstrap) - start)
        draws = torch.poisson(rates.expand(r, n_groups, 2), generator=generator)
        draws = draws.to(float_dtype(device))
        b, s = draws[..., 0], draws[..., 1]
        above = s.cumsum(1).sub_(s)  # signal strictly above each distinct score
        num = (b * above.add_(s, alpha=0.5)).sum(1)
        aucs.append(num / (s.sum(1) * b.sum(1)))
    values = torch.cat(aucs)
    values = values[torch.isfinite(values)]  # a replica that drew no signal or background
    if values.numel() < 2:
        return math.nan, math.nan
    q = torch.tensor([(1 - confidence) / 2, (1 + confidence) / 2], dtype=values.dtype,
                     device=device)
    low, high = torch.quantile(values, q).tolist()
    return float(low), float(high)


# --------------------------------------------------------------------- confusion matrices


def confusion_matrix(predicted: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """Confusion matrix by one ``bincount``; rows = true class, columns = predicted.

    Same layout as ``sklearn.metrics.confusion_matrix(labels, predicted)`` with all
    ``num_classes`` classes. For scores ``[N, C]`` pass ``scores.argmax(1)``.

    Args:
        predicted: Predicted class indices (or bools for binary).
        labels: True class indices.
        num_classes: Number of classes C.

    Returns:
        A LongTensor ``[C, C]`` on the inputs' device.

    Raises:
        BadValueError: Indices outside ``[0, C)``, shapes that differ.
    """
    predicted = _as_tensor(predicted, "predicted")
    labels = _as_tensor(labels, "labels")
    num_classes = int(num_classes)
    if num_classes < 1:
        raise BadValueError(f"confusion_matrix: num_classes must be >= 1, got {num_classes}")
    if predicted.shape != labels.shape or predicted.dim() != 1:
        raise BadValueError(f"confusion_matrix: predicted and labels must be 1-D of one length, "
                            f"got {tuple(predicted.shape)} and {tuple(labels.shape)}")
    if predicted.is_floating_point() or labels.is_floating_point():
        raise BadValueError("confusion_matrix: predicted and labels must be integer class "
                            "indices; for scores use scores.argmax(1) or a threshold")
    predicted = predicted.to(torch.int64)
    labels = labels.to(labels.device if labels.device == predicted.device else predicted.device)
    labels = labels.to(torch.int64)
    for name, x in (("predicted", predicted), ("labels", labels)):
        bad = (x < 0) | (x >= num_classes)
        if bool(bad.any()):
            first = int(bad.nonzero()[0, 0])
            raise BadValueError(f"confusion_matrix: {name} has {int(bad.sum())} values outside "
                                f"[0, {num_classes}); the first is {int(x[first])} "
                                f"at index {first}")
    flat = torch.bincount(labels * num_classes + predicted, minlength=num_classes**2)
    return flat.reshape(num_classes, num_classes)


def binary_confusion_matrix(scores: torch.Tensor, labels: torch.Tensor,
                            threshold: float) -> torch.Tensor:
    """2×2 confusion matrix of the selection ``score >= threshold``.

    Args:
        scores: Classifier output.
        labels: 1/True signal, 0/False background.
        threshold: The cut.

    Returns:
        LongTensor ``[[TN, FP], [FN, TP]]`` (rows = true class 0/1).
    """
    scores = _check_scores(scores)
    is_signal = _check_labels(labels, scores.shape[0], scores.device)
    return confusion_matrix(scores >= threshold, is_signal, 2)


def _ratio(num: float, den: float) -> float:
    return num / den if den != 0 else math.nan


def _likelihood_ratio(num: float, den: float) -> float:
    if den != 0:
        return num / den
    return math.inf if num > 0 else math.nan


def figures_of_merit(cm: torch.Tensor | Sequence[Sequence[float]]) -> dict[str, float]:
    """Figures of merit of a binary selection, from its 2×2 confusion matrix.

    With ``cm = [[TN, FP], [FN, TP]]`` (rows = truth, as from
    :func:`binary_confusion_matrix`), P = TP + FN, N = TN + FP:

    * ``TPR`` (sensitivity, recall, ε_S) = TP / P; ``FNR`` = FN / P = 1 − TPR
    * ``TNR`` (specificity) = TN / N; ``FPR`` (ε_B) = FP / N = 1 − TNR
    * ``PPV`` (precision, purity) = TP / (TP + FP); ``FDR`` = FP / (TP + FP)
    * ``NPV`` = TN / (TN + FN); ``FOR`` = FN / (TN + FN)
    * ``LR+`` = TPR / FPR; ``LR-`` = FNR / TNR
    * ``prevalence_threshold`` = (sqrt(TPR · FPR) − FPR) / (TPR − FPR)
    * ``threat_score`` (critical success index) = TP / (TP + FN + FP)
    * ``prevalence`` = P / (P + N); ``accuracy`` = (TP + TN) / (P + N)
    * ``balanced_accuracy`` = (TPR + TNR) / 2
    * ``F1`` = 2 TP / (2 TP + FP + FN)
    * ``MCC`` = (TP · TN − FP · FN) / sqrt((TP + FP)(TP + FN)(TN + FP)(TN + FN))

    A ratio with a zero denominator is NaN, never an exception; the likelihood ratios
    are ``inf`` when their denominator is zero and numerator positive (e.g. LR+ with
    FPR = 0 < TPR).

    Args:
        cm: ``[[TN, FP], [FN, TP]]``, counts or sums of weights.

    Returns:
        Plain Python floats keyed by the names above, plus ``TP``, ``FP``, ``TN``, ``FN``.
    """
    t = torch.as_tensor(cm).detach()
    if t.shape != (2, 2):
        raise BadValueError(f"figures_of_merit: need a 2x2 confusion matrix, got shape "
                            f"{tuple(t.shape)}")
    (tn, fp), (fn, tp) = ([float(v) for v in row] for row in t.cpu().tolist())
    p, n = tp + fn, tn + fp
    tpr, tnr = _ratio(tp, p), _ratio(tn, n)
    fpr, fnr = _ratio(fp, n), _ratio(fn, p)
    pt_den = tpr - fpr
    if math.isnan(pt_den) or pt_den == 0:
        pt = math.nan
    else:
        pt = (math.sqrt(tpr * fpr) - fpr) / pt_den if tpr * fpr >= 0 else math.nan
    mcc_den = (tp + fp) * (tp + fn) * (tn + fp) * (tn + fn)
    return {
        "TP": tp, "FP": fp, "TN": tn, "FN": fn,
        "TPR": tpr, "TNR": tnr, "PPV": _ratio(tp, tp + fp), "NPV": _ratio(tn, tn + fn),
        "FNR": fnr, "FPR": fpr, "FDR": _ratio(fp, fp + tp), "FOR": _ratio(fn, fn + tn),
        "LR+": _likelihood_ratio(tpr, fpr), "LR-": _likelihood_ratio(fnr, tnr),
        "prevalence_threshold": pt,
        "threat_score": _ratio(tp, tp + fn + fp),
        "prevalence": _ratio(p, p + n),
        "accuracy": _ratio(tp + tn, p + n),
        "balanced_accuracy": (tpr + tnr) / 2,
        "F1": _ratio(2 * tp, 2 * tp + fp + fn),
        "MCC": _ratio(tp * tn - fp * fn, math.sqrt(mcc_den)) if mcc_den > 0 else math.nan,
    }


# ------------------------------------------------------------------------ JSON convention


def json_safe(value: Any, *, _path: str = "", _flags: dict[str, str] | None = None) -> Any:
    """Plain-JSON copy of ``value``: tensors/numpy to lists, non-finite floats to ``None``.

    JSON has no ``inf`` or ``nan``. hepml writes them as ``null`` and records, in a
    top-level ``"non_finite"`` mapping, the path of each such value (keys joined by
    ``/``, list positions as numbers) and what it was: ``"inf"``, ``"-inf"`` or
    ``"nan"``. For example an infinite rejection at ε_S = 0.3 appears as
    ``"rejection@0.3": null`` and ``"non_finite": {"rejection@0.3": "inf"}``.

    Args:
        value: Nested dicts/lists/tuples of numbers, strings, tensors, numpy values.

    Returns:
        The converted structure. At the top level (a dict), the ``non_finite`` map is
        merged into the result when anything was replaced.
    """
    top = _flags is None
    flags: dict[str, str] = {} if top else _flags
    previous: dict[str, str] = {}
    if top and isinstance(value, dict) and "non_finite" in value:
        value = dict(value)
        previous = dict(value.pop("non_finite") or {})
    out = _json_safe(value, _path, flags)
    if top and isinstance(out, dict) and (previous or flags):
        out["non_finite"] = {**previous, **flags}
    return out


def _json_safe(value: Any, path: str, flags: dict[str, str]) -> Any:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().tolist()
    elif hasattr(value, "tolist") and type(value).__module__ == "numpy":
        value = value.tolist()
    if isinstance(value, dict):
        return {str(k): _json_safe(v, f"{path}/{k}" if path else str(k), flags)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v, f"{path}/{i}" if path else str(i), flags)
                for i, v in enumerate(value)]
    if isinstance(value, bool) or value is None or isinstance(value, (int, str)):
        return value
    if isinstance(value, float):
        if math.isfinite(value):
            return value
        flags[path] = "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
        return None
    return str(value)  # paths, dtypes, devices


# -------------------------------------------------------------------------- evaluations


def _row_normalized(cm: torch.Tensor) -> torch.Tensor:
    """Each row of a confusion matrix divided by its sum (NaN for an empty row)."""
    rows = cm.sum(1, keepdim=True).to(float_dtype(cm.device))
    return cm.to(rows.dtype) / torch.where(rows > 0, rows, math.nan)


def _floats(x: torch.Tensor) -> list[float]:
    return [float(v) for v in x.detach().cpu().reshape(-1).tolist()]


def evaluate_binary(scores: torch.Tensor, labels: torch.Tensor, *,
                    working_points: Sequence[float] = (0.3, 0.5),
                    threshold: float | None = None, threshold_efficiency: float = 0.5,
                    n_bootstrap: int = 100, confidence: float = 0.68,
                    seed: int = 0) -> dict[str, Any]:
    """All binary metrics in one JSON-ready dict, computed on the scores' device.

    Keys: ``auc``, ``auc_ci`` (``[low, high]`` bootstrap percentile interval at
    ``confidence``; ``null`` if ``n_bootstrap`` is 0), ``rejection@E`` and
    ``rejection_uncertainty@E`` and ``background_efficiency@E`` for each working point
    ε_S = E (see :func:`rejection_at`), the same grouped as ``rejection`` →
    ``{"E": {"value", "uncertainty", "background_efficiency", "infinite"}}``,
    ``rejection_infinite`` (the working points where ε_B = 0), ``threshold`` and
    ``threshold_efficiency`` (the working point of the confusion matrix),
    ``confusion_matrix`` (``labels``, ``counts`` ``[[TN, FP],
    [FN, TP]]``, row-normalised ``normalized``), ``figures_of_merit`` (see
    :func:`figures_of_merit`), ``n_signal``, ``n_background``, ``device``, ``warnings``.

    Non-finite numbers follow :func:`json_safe`: ``null`` plus an entry in
    ``non_finite`` (e.g. ``{"rejection@0.3": "inf"}``), so the dict dumps as strict JSON.
    A class without entries does not raise: the AUC and rejections are ``null``
    (``non_finite`` says ``nan``), the reason is logged and listed under ``warnings``,
    and the working-point threshold falls back to the score cut that keeps a fraction
    ``threshold_efficiency`` of all entries.

    Args:
        scores: Classifier output for the signal class.
        labels: 1/True signal, 0/False background.
        working_points: Signal efficiencies where the rejection is quoted.
        threshold: Score cut for the confusion matrix; default: the cut at
            ``threshold_efficiency`` (see :func:`threshold_at_efficiency`).
        threshold_efficiency: ε_S defining the default threshold.
        n_bootstrap: Bootstrap replicas for the AUC interval (0: none).
        confidence: Central probability of the AUC interval.
        seed: Seed of the bootstrap.

    Returns:
        A dict of plain Python values (see above).

    Shapes:
        scores, labels: ``[N]``.

    Raises:
        EmptyInputError: No entries at all.
        BadValueError: NaN/inf scores, labels other than 0/1.
    """
    scores = _check_scores(scores)
    if scores.numel() == 0:
        raise EmptyInputError("evaluate_binary: no scores given; there is nothing to evaluate")
    is_signal = _check_labels(labels, scores.shape[0], scores.device)
    wps = [float(w) for w in working_points]
    _check_efficiency(wps + [threshold_efficiency], float_dtype(scores.device))
    warnings: list[str] = []
    roc = roc_curve(scores, is_signal)
    both = roc.n_signal > 0 and roc.n_background > 0
    if not both:
        missing = "signal (label 1)" if roc.n_signal == 0 else "background (label 0)"
        msg = f"no {missing} entries among {scores.numel()}: AUC and rejections are undefined"
        log.warning("evaluate_binary: %s", msg)
        warnings.append(msg)
    out: dict[str, Any] = {"n_entries": int(scores.numel()), "n_signal": int(roc.n_signal),
                           "n_background": int(roc.n_background),
                           "device": str(scores.device)}
    out["auc"] = auc(roc.fpr, roc.tpr) if both else math.nan
    if n_bootstrap and both:
        low, high = bootstrap_auc(scores, is_signal, n_bootstrap, confidence, seed=seed)
        out["auc_ci"] = [low, high]
    else:
        out["auc_ci"] = None
    out["auc_ci_confidence"] = confidence
    out["n_bootstrap"] = int(n_bootstrap)
    out["working_points"] = wps
    rej, sigma = rejection_at(roc, wps)
    eps_b = torch.where(rej > 0, 1.0 / rej, math.nan)
    out["rejection_infinite"] = []
    out["rejection"] = {}
    for wp, r, s, e in zip(wps, _floats(rej), _floats(sigma), _floats(eps_b), strict=True):
        out[f"rejection@{wp:g}"] = r
        out[f"rejection_uncertainty@{wp:g}"] = s
        out[f"background_efficiency@{wp:g}"] = e
        out["rejection"][f"{wp:g}"] = {"value": r, "uncertainty": s, "background_efficiency": e,
                                       "infinite": math.isinf(r)}
        if math.isinf(r):
            out["rejection_infinite"].append(wp)
    if threshold is None:
        if roc.n_signal > 0:
            threshold = threshold_at_efficiency(roc, threshold_efficiency)
        else:  # no signal: cut keeping that fraction of all entries
            total = RocCurve(roc.fpr, roc.fpr, roc.thresholds, roc.n_background,
                             roc.n_background, roc.n_background_effective)
            threshold = threshold_at_efficiency(total, threshold_efficiency)
    out["threshold"] = float(threshold)
    out["threshold_efficiency"] = float(threshold_efficiency)
    cm = confusion_matrix(scores >= threshold, is_signal, 2)
    normalized = _row_normalized(cm)
    out["confusion_matrix"] = {"labels": ["background", "signal"],
                               "counts": cm.cpu().tolist(),
                               "normalized": normalized.cpu().tolist()}
    out["figures_of_merit"] = figures_of_merit(cm)
    out["warnings"] = warnings
    return json_safe(out)


def evaluate_multiclass(scores: torch.Tensor, labels: torch.Tensor,
                        class_names: Sequence[str]) -> dict[str, Any]:
    """Multi-class metrics: argmax confusion matrix, one-vs-rest AUCs, accuracy.

    Args:
        scores: Per-class scores (probabilities or logits).
        labels: True class indices in ``[0, C)``.
        class_names: One name per class.

    Returns:
        JSON-ready dict (see :func:`json_safe`): ``class_names``, ``confusion_matrix``
        (``counts`` and row-normalised ``normalized``, rows = true class), ``accuracy``,
        ``auc_one_vs_rest`` (name → AUC; ``null`` with a logged warning for a class
        without entries), ``warnings``.

    Shapes:
        scores: ``[N, C]``; labels: ``[N]``.

    Raises:
        BadValueError: Shapes, NaN/inf scores, labels out of range.
        EmptyInputError: No entries.
    """
    scores = _as_tensor(scores, "scores")
    labels = _as_tensor(labels, "labels")
    names = [str(n) for n in class_names]
    if scores.dim() != 2 or scores.shape[1] != len(names):
        raise BadValueError(f"evaluate_multiclass: scores must be [N, {len(names)}] for classes "
                            f"{names}, got shape {tuple(scores.shape)}")
    if scores.shape[0] == 0:
        raise EmptyInputError("evaluate_multiclass: no entries to evaluate")
    if not torch.is_floating_point(scores):
        scores = scores.to(float_dtype(scores.device))
    _check_finite(scores, "scores")
    cm = confusion_matrix(scores.argmax(1), labels.to(scores.device), len(names))
    normalized = _row_normalized(cm)
    labels = labels.to(scores.device)
    aucs: dict[str, float] = {}
    warnings: list[str] = []
    for k, name in enumerate(names):  # a loop over classes, not over entries
        is_k = labels == k
        n_k = int(is_k.sum())
        if n_k == 0 or n_k == labels.numel():
            msg = (f"class {name!r} has {'no' if n_k == 0 else 'all'} entries: its one-vs-rest "
                   "AUC is undefined")
            log.warning("evaluate_multiclass: %s", msg)
            warnings.append(msg)
            aucs[name] = math.nan
            continue
        aucs[name] = roc_auc(scores[:, k], is_k)
    return json_safe({
        "class_names": names,
        "confusion_matrix": {"labels": names, "counts": cm.cpu().tolist(),
                             "normalized": normalized.cpu().tolist()},
        "accuracy": float(cm.diagonal().sum()) / float(cm.sum()),
        "auc_one_vs_rest": aucs,
        "warnings": warnings,
    })
