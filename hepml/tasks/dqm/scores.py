"""Scoring every lumisection with the trained monitor, chunk by chunk.

:func:`calibrate` fixes the scoring on the good training LS; :func:`score_lumisections`
scores every LS and localises what it flags. The statistics themselves are in
:mod:`hepml.evaluation.dqm`.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from hepml.errors import EmptyInputError
from hepml.evaluation.dqm import (
    ScoreCalibration,
    ScoredRun,
    multiscale_statistics,
    pulls,
    residuals,
)
from hepml.tasks.dqm.data import DQMConfig, LumisectionData
from hepml.training import float_dtype


@torch.no_grad()
def calibrate(model: torch.nn.Module, data: LumisectionData, selection: np.ndarray, *,
              dqm: DQMConfig, device: torch.device, flatten: bool,
              floor: torch.Tensor) -> ScoreCalibration:
    """Fix the scoring on the selected (good training) LS.

    The residual spread of a channel is its root-mean-square residual over the selected LS,
    at least ``floor`` (one count per LS in residual units); a residual divided by it is a
    pull. For ``multiscale`` the mean and standard deviation of each statistic of
    :func:`multiscale_statistics` over the selected LS are fixed too.
    """
    if dqm.score == "reconstruction_error":
        return ScoreCalibration(dqm.score)
    chunks = [i for i in range(len(data.source.chunks))
              if selection[data.chunk_slice(i)].any()]
    if not chunks:
        raise EmptyInputError("no lumisections to calibrate the score on")
    total, n = None, 0
    for i in chunks:
        sel = torch.from_numpy(selection[data.chunk_slice(i)])
        r = residuals(model, data.chunk(i).maps[sel], device=device, flatten=flatten,
                       batch_size=dqm.inference_batch)
        r = r.to(float_dtype(r.device))
        part = r.square().sum(0)
        total = part if total is None else total + part
        n += len(r)
    spread = torch.maximum((total / n).sqrt(), floor.to(total)).float().cpu()
    calibration = ScoreCalibration(dqm.score, spread)
    if dqm.score != "multiscale":
        return calibration
    shape = data.representation.output_shape[1:]
    stats, names = [], []
    for i in chunks:
        sel = torch.from_numpy(selection[data.chunk_slice(i)])
        pull = pulls(model, data.chunk(i).maps[sel], calibration, device=device,
                      flatten=flatten, batch_size=dqm.inference_batch)
        t, names = multiscale_statistics(pull.to(float_dtype(pull.device)).square()
                                         .reshape(-1, *shape),
                                         data.representation.layout, dqm.windows)
        stats.append(t.cpu())
    t = torch.cat(stats)
    std = t.std(0).clamp(min=1e-12) if len(t) > 1 else torch.ones(len(names), dtype=t.dtype)
    return dataclasses.replace(calibration, windows=tuple(dqm.windows), names=tuple(names),
                               mean=t.mean(0), std=std)


@torch.no_grad()
def score_lumisections(model: torch.nn.Module, data: LumisectionData, *, device: torch.device,
                       flatten: bool, dqm: DQMConfig,
                       calibration: ScoreCalibration) -> ScoredRun:
    """Score every lumisection of ``data`` with ``model.anomaly_scores``, chunk by chunk.

    Args:
        model: The trained autoencoder.
        data: The lumisections.
        device: Where the model runs and the localisation numbers are computed.
        flatten: Feed flat maps (dense autoencoder).
        dqm: The dqm section (top channels, maps kept, batch size).
        calibration: How residuals become scores (see :func:`calibrate`).
    """
    start = time.perf_counter()
    n = data.num_entries
    k_top = dqm.top_channels
    shape = data.representation.output_shape[1:]
    score = np.full(n, np.nan)
    trigger = np.full(n, -1, dtype=np.int64)
    top_index = np.full((n, k_top), -1, dtype=np.int64)
    top_residual = np.full((n, k_top), np.nan, dtype=np.float32)
    top1 = np.full(n, np.nan)
    precision = np.full(n, np.nan)
    fraction = np.full(n, np.nan)
    worst: list[tuple[float, int, np.ndarray, np.ndarray | None]] = []
    model.eval()
    for i in range(len(data.source.chunks)):
        sl = data.chunk_slice(i)
        chunk = data.chunk(i)
        keep = ~data.excluded[sl]
        if not keep.any():
            continue
        pos = np.arange(sl.start, sl.stop)[keep]
        x = chunk.maps[torch.from_numpy(keep)]
        pull = pulls(model, x, calibration, device=device, flatten=flatten,
                      batch_size=dqm.inference_batch)
        wide = float_dtype(pull.device)
        pull2 = pull.to(wide).square()
        if calibration.score == "multiscale":
            t, _ = multiscale_statistics(pull2.reshape(-1, *shape), data.representation.layout,
                                         calibration.windows)
            u = (t - calibration.mean.to(t)) / calibration.std.to(t)
            best = u.max(1)
            s, trigger[pos] = best.values, best.indices.cpu().numpy()
        else:
            s = pull2.mean(1)
        absr = pull.abs()
        kk = min(k_top, absr.shape[1])
        idx = absr.topk(kk, dim=1).indices
        score[pos] = s.cpu().numpy()
        top_index[pos, :kk] = idx.cpu().numpy()
        top_residual[pos, :kk] = pull.gather(1, idx).cpu().numpy()
        if chunk.mask is not None:
            mask = torch.from_numpy(chunk.mask[keep].reshape(len(x), -1)).to(device).bool()
            n_mask = mask.sum(1)
            has = n_mask > 0
            hit1 = mask.gather(1, idx[:, :1]).squeeze(1).to(wide)
            cap = min(dqm.topk_cap, absr.shape[1])
            order = absr.topk(cap, dim=1).indices
            cum = mask.gather(1, order).long().cumsum(1)
            k = n_mask.clamp(min=1, max=cap)
            prec = cum.gather(1, (k - 1)[:, None]).squeeze(1).to(wide) / k.to(wide)
            nan = torch.full_like(prec, math.nan)
            top1[pos] = torch.where(has, hit1, nan).cpu().numpy()
            precision[pos] = torch.where(has, prec, nan).cpu().numpy()
            fraction[pos] = torch.where(has, n_mask.to(wide) / mask.shape[1], nan).cpu().numpy()
        if dqm.residual_maps:
            maps = pull.reshape(-1, *shape).cpu().numpy()
            for j in np.argsort(-score[pos], kind="stable")[:dqm.residual_maps]:
                m = chunk.mask[keep][j] if chunk.mask is not None else None
                worst.append((float(score[pos[j]]), int(pos[j]), maps[j], m))
            worst = sorted(worst, key=lambda w: -w[0])[:dqm.residual_maps]
    return ScoredRun(score, trigger, top_index, top_residual, top1, precision, fraction, worst,
                     time.perf_counter() - start)
