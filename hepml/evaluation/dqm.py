"""Statistics of lumisection monitoring (DQM), with torch on the model's device.

An autoencoder reconstructs the detector map of each lumisection (LS); what is left over
is judged here:

- :func:`residuals` and :func:`pulls`: the signed normalised residual of every channel,
  and that residual divided by its spread on good LS (the *pull*);
- :func:`multiscale_statistics`: the mean squared pull over channel groups of every size
  (the map, each histogram, rows, phi wedges, k x k windows);
- :class:`ScoreCalibration`: what turns pulls into a score, fixed on good training LS;
- :func:`false_alarm_threshold`: the score quantile that sets the false-alarm rate;
- :func:`dqm_metrics`: false-alarm rate, detection efficiency and localisation per fault
  type, with binomial uncertainties, from the per-LS results (:class:`ScoredRun`).

The task that trains and applies the monitor (``task: dqm``) composes them.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from hepml.errors import EmptyInputError
from hepml.evaluation.metrics import binomial_rate, roc_auc
from hepml.training.device import float_dtype
from hepml.training.splits import SPLIT_NAMES

__all__ = ["DetectionGoal", "Lumisections", "ScoreCalibration", "ScoredRun", "dqm_metrics",
           "false_alarm_threshold", "multiscale_statistics", "pulls", "residuals"]


@dataclasses.dataclass
class ScoredRun:
    """Per-LS results of scoring every lumisection.

    Attributes:
        score: Anomaly score ``[N]`` (NaN for excluded LS).
        trigger: For ``multiscale``, the index of the statistic that gave the score
            (``-1`` otherwise or for excluded LS) ``[N]``.
        top_index: Map cells (flat ``row * W + col``) of the largest ``|pull|`` (the
            residual the score is built from), ``[N, top_channels]`` (-1: excluded LS).
        top_residual: Their signed pulls ``[N, top_channels]``.
        top1_in_mask: Whether the top cell lies in the fault mask ``[N]`` (NaN without
            a mask or with an empty one).
        topk_precision: Fraction of the top-k cells inside the mask, k = masked cells
            capped at ``topk_cap`` ``[N]`` (NaN without a mask or with an empty one).
        mask_fraction: Fraction of the map's cells in the fault mask ``[N]`` (NaN: none).
        worst: ``(score, position, pull map [H, W], mask [H, W] or None)`` of the
            highest-scoring LS, highest first.
        seconds: Wall time of scoring (reading and building included).
    """

    score: np.ndarray
    trigger: np.ndarray
    top_index: np.ndarray
    top_residual: np.ndarray
    top1_in_mask: np.ndarray
    topk_precision: np.ndarray
    mask_fraction: np.ndarray
    worst: list[tuple[float, int, np.ndarray, np.ndarray | None]]
    seconds: float


def residuals(model: torch.nn.Module, x: torch.Tensor, *, device: torch.device, flatten: bool,
               batch_size: int) -> torch.Tensor:
    """Signed normalised residuals ``(x - reconstruction) / scale``, ``[n, H * W]``."""
    xin = x.flatten(1) if flatten else x
    out = model.anomaly_scores(xin.to(device), batch_size=batch_size)
    return out["residual"].reshape(len(x), -1)


def multiscale_statistics(pull2: torch.Tensor, layout: Sequence[Any], windows: Sequence[int]
                          ) -> tuple[torch.Tensor, list[str]]:
    """Mean squared pull over channel groups of every size, per LS.

    Args:
        pull2: Squared pulls ``[n, H, W]`` of the stacked maps.
        layout: Where each histogram lies in the map (``row_start``, ``row_stop``, ``name``).
        windows: Side lengths ``k`` of the square windows.

    Returns:
        ``[n, J]`` statistics and their names: ``all`` (the whole map), one per histogram,
        ``rows`` (the largest over the map's rows: an eta ring or a tracker layer),
        ``wedges`` (the largest over its columns: a phi wedge of the whole detector) and
        ``window<k>`` (the largest over all k x k windows, stride 1).
    """
    stats, names = [pull2.mean((1, 2))], ["all"]
    for lay in layout:
        stats.append(pull2[:, lay.row_start:lay.row_stop].mean((1, 2)))
        names.append(lay.name)
    stats += [pull2.mean(2).amax(1), pull2.mean(1).amax(1)]
    names += ["rows", "wedges"]
    for k in windows:
        if k <= min(pull2.shape[1:]):
            pooled = torch.nn.functional.avg_pool2d(pull2[:, None], k, stride=1)
            stats.append(pooled.amax((1, 2, 3)))
            names.append(f"window{k}")
    return torch.stack(stats, 1), names


@dataclasses.dataclass
class ScoreCalibration:
    """What turns residuals into scores, fixed on the good training LS.

    Attributes:
        score: ``reconstruction_error``, ``standardized`` or ``multiscale``.
        spread: Per-channel residual spread ``[H * W]`` (standardised scores).
        windows: Window sizes of the multiscale statistics.
        names: Names of the multiscale statistics.
        mean: Their means on the good training LS ``[J]``.
        std: Their standard deviations there ``[J]``.
    """

    score: str
    spread: torch.Tensor | None = None
    windows: tuple[int, ...] = ()
    names: tuple[str, ...] = ()
    mean: torch.Tensor | None = None
    std: torch.Tensor | None = None

    def to_state(self) -> dict[str, Any]:
        """Plain values and tensors, for a checkpoint."""
        return {"score": self.score, "spread": self.spread, "windows": list(self.windows),
                "names": list(self.names), "mean": self.mean, "std": self.std}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> ScoreCalibration:
        """Inverse of :meth:`to_state`."""
        return cls(state["score"], state.get("spread"), tuple(state.get("windows") or ()),
                   tuple(state.get("names") or ()), state.get("mean"), state.get("std"))


def pulls(model: torch.nn.Module, x: torch.Tensor, calibration: ScoreCalibration, *,
           device: torch.device, flatten: bool, batch_size: int) -> torch.Tensor:
    """Residuals divided by the calibration's spread (when it has one): the pulls."""
    pull = residuals(model, x, device=device, flatten=flatten, batch_size=batch_size).float()
    if calibration.spread is not None:
        pull = pull / calibration.spread.to(device=device, dtype=torch.float32)
    return pull


def false_alarm_threshold(scores: torch.Tensor, false_alarm_rate: float) -> float:
    """The ``1 - false_alarm_rate`` quantile (linear interpolation) of ``scores``."""
    if scores.numel() == 0:
        raise EmptyInputError("no scores to set the threshold on")
    return float(torch.quantile(scores, 1.0 - false_alarm_rate))


class Lumisections(typing.Protocol):
    """What :func:`dqm_metrics` reads of the lumisections of a run.

    Attributes:
        excluded: LS with no events (not scored) ``[N]``.
        split: Split id of every LS ``[N]``.
        fault: Fault code of every LS (0 = good) ``[N]``, or ``None`` without truth.
        fault_names: Names of the fault codes, code 0 first.
    """

    excluded: np.ndarray
    split: np.ndarray
    fault: np.ndarray | None
    fault_names: list[str]

    @property
    def num_entries(self) -> int:
        """Number of lumisections."""


class DetectionGoal(typing.Protocol):
    """What :func:`dqm_metrics` reads of the ``dqm:`` section: the detection goal.

    Attributes:
        false_alarm_rate: Fraction of good LS that may be flagged.
        coverage: Fault types touching at least this mean fraction of the channels are
            the ones the goal applies to.
        target_efficiency: Detection efficiency each such type should reach.
    """

    false_alarm_rate: float
    coverage: float
    target_efficiency: float


def dqm_metrics(scored: ScoredRun, data: Lumisections, *, threshold: float,
                device: torch.device, dqm: DetectionGoal, test_split: int | None = 2,
                efficiency_splits: Sequence[int] | None = None) -> dict[str, Any]:
    """False-alarm rate, detection efficiency and localisation per fault type.

    Counts are made with torch on ``device``.

    Args:
        scored: The scores of every LS.
        data: The lumisections (truth, split, exclusions).
        threshold: Flag LS with a score above this.
        device: Where the counts are made.
        dqm: The dqm section (coverage and efficiency goal).
        test_split: Split of the good LS on which the false-alarm rate is measured
            (``None``: all good LS).
        efficiency_splits: Splits whose faulty LS enter the efficiencies (``None``: all).
    """
    dtype = float_dtype(device)
    score = torch.as_tensor(scored.score, dtype=dtype, device=device)
    valid = torch.as_tensor(~data.excluded, device=device)
    flagged = valid & (torch.nan_to_num(score, nan=-math.inf) > threshold)
    split = torch.as_tensor(data.split.astype(np.int64), device=device)
    out: dict[str, Any] = {"n_lumisections": int(data.num_entries),
                           "n_scored": int(valid.sum()),
                           "n_flagged": int(flagged.sum())}
    if data.fault is None:
        sel = valid & (split == test_split) if test_split is not None else valid
        out["flag_rate"] = binomial_rate(int((flagged & sel).sum()), int(sel.sum()))
        return out
    fault = torch.as_tensor(data.fault, device=device)
    good = valid & (fault == 0)
    test_good = good & (split == test_split) if test_split is not None else good
    out["false_alarm_rate"] = binomial_rate(int((flagged & test_good).sum()), int(test_good.sum()))
    out["false_alarm_rate"]["measured_on"] = (f"good LS of the {SPLIT_NAMES[test_split]} split"
                                              if test_split is not None else "all good LS")
    eff_sel = valid & (fault > 0)
    if efficiency_splits is not None:
        in_splits = torch.zeros_like(eff_sel)
        for s in efficiency_splits:
            in_splits |= split == s
        eff_sel &= in_splits
    top1 = torch.as_tensor(scored.top1_in_mask, dtype=dtype, device=device)
    prec = torch.as_tensor(scored.topk_precision, dtype=dtype, device=device)
    frac = torch.as_tensor(scored.mask_fraction, dtype=dtype, device=device)
    good_scores = score[test_good]
    per_type: dict[str, Any] = {}
    for code in range(1, len(data.fault_names)):
        sel = eff_sel & (fault == code)
        n = int(sel.sum())
        if n == 0:
            continue
        name = data.fault_names[code]
        row: dict[str, Any] = {"code": code, "n_lumisections": n,
                               "efficiency": binomial_rate(int((flagged & sel).sum()), n)}
        has_mask = sel & torch.isfinite(frac)
        n_mask = int(has_mask.sum())
        if n_mask:
            f = frac[has_mask]
            row["channel_fraction"] = {"mean": float(f.mean()), "min": float(f.min()),
                                       "max": float(f.max())}
            row["touches_coverage"] = bool(float(f.mean()) >= dqm.coverage)
            t1 = top1[has_mask]
            row["top1_in_mask"] = binomial_rate(int(t1.sum()), n_mask)
            p = prec[has_mask]
            row["topk_precision"] = {
                "mean": float(p.mean()),
                "uncertainty": float(p.std() / math.sqrt(n_mask)) if n_mask > 1 else math.nan,
                "random_expectation": float(f.mean())}
        row["meets_target"] = bool(row["efficiency"]["value"] >= dqm.target_efficiency)
        if len(good_scores) and n:
            labels = torch.cat([torch.zeros(len(good_scores), device=device),
                                torch.ones(n, device=device)])
            s_all = torch.cat([good_scores, score[sel]])
            row["auc_vs_good"] = roc_auc(s_all, labels)
        per_type[name] = row
    out["detection"] = per_type
    considered = [k for k, r in per_type.items() if r.get("touches_coverage", True)]
    out["goal"] = {"statement": f"at a {dqm.false_alarm_rate:g} false-alarm rate every fault type "
                                f"touching >= {dqm.coverage:g} of the channels is detected in "
                                f">= {dqm.target_efficiency:g} of its LS",
                   "types_considered": considered,
                   "types_failing": [k for k in considered if not per_type[k]["meets_target"]]}
    # the measured false-alarm rate must not be clearly above the target: the target lies
    # at or above the lower edge of its 68 % interval (or there are no good LS to count)
    far_low = out["false_alarm_rate"]["interval_68"][0]
    out["goal"]["false_alarm_rate_consistent"] = bool(not far_low > dqm.false_alarm_rate)
    out["goal"]["met"] = (bool(considered) and not out["goal"]["types_failing"]
                          and out["goal"]["false_alarm_rate_consistent"])
    out["n_faulty"] = int((valid & (fault > 0)).sum())
    return out
