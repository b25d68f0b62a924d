"""``task: dqm``: flag bad lumisections with an autoencoder trained on good ones.

Flow (see ``docs/dqm.md``):

1. :class:`hepml.io.Source` reads the ``lumis`` tree in chunks of ``data.step_size``
   lumisections (LS). The small per-LS branches (run, lumi, crossings, fault code) are
   read first for all LS; the histograms chunk by chunk. Every LS is assigned to
   train/validation/test by the workflow seed.
2. :class:`~hepml.representations.lumisections.LumisectionMaps` stacks the occupancy
   histograms of each LS into one map ``[1, H, W]`` (a rate per crossing by default), bound
   to the binning of the input (recorded in the checkpoint).
3. The autoencoder is trained on good LS of the training split only (``fault == 0`` when
   ``dqm.truth`` names the fault branch) and validated on good LS of the validation split.
   Its input normalisation is ``(x - shift) / scale`` with shift = per-bin mean and scale
   = per-bin standard deviation of the training maps, floored at ``dqm.scale_floor``
   counts per LS so that rarely filled bins do not blow up the score.
4. Every LS is scored with ``model.anomaly_scores`` (chunk by chunk, no gradients). The
   signed residual ``r = (x - reconstruction) / scale`` of each channel, divided by its
   root-mean-square over the good training LS, is the channel's *pull*; the score
   (``dqm.score``, :data:`SCORE_DEFINITIONS`) is built from the pulls, by default the
   largest standardised mean squared pull over channel groups of every size, and the
   pull map localises the fault.
5. The threshold is the ``1 - dqm.false_alarm_rate`` quantile of the scores of the good
   validation LS; an LS is *flagged* when its score is above it. The false-alarm rate is
   measured on the good LS of the test split, the detection efficiency per fault type on
   all faulty LS (never trained on), with binomial uncertainties; localisation compares
   the channels of largest ``|pull|`` with the truth mask of the fault.
6. Outputs (rank 0): friend trees (``anomaly_score``, ``flagged``, ``split``,
   ``excluded``), ``flagged_lumisections.csv``, ``metrics.json``, plots and
   ``report.html``.

:func:`score_files` applies a trained checkpoint to further runs (``hepml dqm``).
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import math
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepml import evaluation, representations
from hepml.config import DataConfig, WorkflowConfig, from_mapping, to_dict
from hepml.errors import (
    BadValueError,
    CheckpointError,
    ConfigError,
    EmptyInputError,
    HepmlError,
)
from hepml.evaluation import dqm_plots
from hepml.evaluation.metrics import binomial_rate
from hepml.io import ChunkSpec, Source, expand_files, open_tree, read_metadata, write_friend_trees
from hepml.io.atomic import atomic_path
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.representations.lumisections import LumisectionMaps
from hepml.tasks._job import JobResult, Summary, number, rows, with_error
from hepml.tasks.rundir import open_run_dir
from hepml.training import (
    ChunkedDataset,
    Trainer,
    chunk_moments,
    distributed,
    float_dtype,
    load_checkpoint,
    model_from_checkpoint,
    resolve_device,
    save_checkpoint,
)
from hepml.training.splits import SPLIT_NAMES, assign_split, split_seed

log = logging.getLogger(__name__)

__all__ = ["DQMConfig", "LumisectionData", "ScoreCalibration", "ScoredRun",
           "build_representation", "calibrate", "multiscale_statistics", "run", "score_files",
           "score_lumisections", "dqm_metrics", "MODEL_KINDS", "SCORE_DEFINITIONS"]

#: Models that can monitor lumisection maps, and the default.
MODEL_KINDS = ("conv_autoencoder", "autoencoder")

#: Friend-tree name of the per-LS results.
FRIEND_TREE = "dqm"

#: What each ``dqm.score`` is, for metrics and reports.
SCORE_DEFINITIONS = {
    "reconstruction_error": "mean over the map's channels of the squared normalised residual "
                            "r = (x - reconstruction) / scale",
    "standardized": "mean over the map's channels of the squared pull r / s, s = the "
                    "root-mean-square residual of the channel on the good training LS "
                    "(at least one count per LS)",
    "multiscale": "the largest of the standardised statistics (t - mean) / std, where t is "
                  "the mean squared pull (r / s)^2 over the whole map, over each histogram, "
                  "the largest over the rows (eta rings, tracker layers), over the columns "
                  "(phi wedges of the whole detector) and over every k x k window of "
                  "channels, and mean and std are taken over the good training LS",
}


@dataclasses.dataclass(frozen=True)
class DQMConfig:
    """The ``dqm:`` section: what good means, the threshold, and what is reported.

    Attributes:
        truth: Branch with the fault code of each LS (0 = good), e.g. ``fault``. Without
            it, the model is trained on all LS of the training split and no efficiencies
            are computed.
        train_on: ``good`` (LS with truth code 0; needs ``truth``) or ``all``; default:
            ``good`` with a truth branch, else ``all``.
        mask_suffix: The per-channel fault mask of histogram ``h`` is branch
            ``h + mask_suffix`` (1 on channels the fault touches), used for localisation
            when ``truth`` is set; ``null``: no localisation.
        fault_names: Names of the fault codes, code 0 first (default: the ``faults`` list
            of the file metadata, else ``fault_<code>``).
        score: What an LS's score is (see :data:`SCORE_DEFINITIONS`):
            ``reconstruction_error`` (the model's mean squared normalised residual),
            ``standardized`` (mean squared pull: the residual divided by its spread on the
            good training LS) or ``multiscale`` (the largest of the standardised mean
            squared pulls over channel groups of every size: the map, each histogram, rows,
            phi wedges and k x k windows).
        windows: Window sizes ``k`` of the ``multiscale`` score.
        false_alarm_rate: Fraction of good validation LS above the threshold.
        scale_floor: Floor of the per-bin normalisation scale, in counts per LS (divided
            by the median number of crossings of the training LS for per-crossing maps).
        coverage: Fault types touching at least this mean fraction of the channels are
            the ones the detection goal applies to.
        target_efficiency: Detection efficiency each such type should reach.
        topk_cap: Localisation: at most this many top channels are compared with the mask.
        top_channels: Channels of largest ``|residual|`` listed per flagged LS in the CSV.
        residual_maps: Residual maps drawn for the N highest-scoring LS.
        inference_batch: LS per forward pass when scoring.
    """

    truth: str | None = None
    train_on: typing.Literal["good", "all"] | None = None
    mask_suffix: str | None = "_fault"
    fault_names: tuple[str, ...] = ()
    score: typing.Literal["reconstruction_error", "standardized", "multiscale"] = "multiscale"
    windows: tuple[int, ...] = (1, 2, 4)
    false_alarm_rate: float = 0.01
    scale_floor: float = 1.0
    coverage: float = 0.01
    target_efficiency: float = 0.95
    topk_cap: int = 50
    top_channels: int = 3
    residual_maps: int = 4
    inference_batch: int = 256

    def __post_init__(self) -> None:
        if not 0 < self.false_alarm_rate < 1:
            raise ConfigError("dqm.false_alarm_rate must lie in (0, 1), "
                              f"got {self.false_alarm_rate}")
        if self.train_on == "good" and not self.truth:
            raise ConfigError("dqm.train_on: 'good' needs dqm.truth, the branch with the fault "
                              "code of each lumisection (0 = good); or set train_on: all")
        if self.scale_floor < 0 or not math.isfinite(self.scale_floor):
            raise ConfigError("dqm.scale_floor must be a finite number >= 0, "
                              f"got {self.scale_floor}")
        for name in ("coverage", "target_efficiency"):
            if not 0 <= getattr(self, name) <= 1:
                raise ConfigError(f"dqm.{name} must lie in [0, 1], got {getattr(self, name)}")
        if not self.windows or any(k < 1 for k in self.windows):
            raise ConfigError("dqm.windows must be positive window sizes, "
                              f"got {list(self.windows)}")
        for name in ("topk_cap", "top_channels", "inference_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"dqm.{name} must be >= 1, got {getattr(self, name)}")
        if self.residual_maps < 0:
            raise ConfigError(f"dqm.residual_maps must be >= 0, got {self.residual_maps}")

    @property
    def training_selection(self) -> str:
        """``good`` or ``all``: which LS of the training split are trained on."""
        return self.train_on or ("good" if self.truth else "all")


def build_representation(spec: dict[str, Any]) -> LumisectionMaps:
    """The lumisection maps of a workflow's ``representation`` section."""
    return representations.build_representation(spec, default="lumisection_maps",
                                                kinds=("lumisection_maps",))


# ----------------------------------------------------------------------------- data
@dataclasses.dataclass
class LumisectionChunk:
    """The built inputs of one chunk.

    Attributes:
        maps: ``[n, 1, H, W]`` maps (zero for excluded LS).
        mask: ``[n, H, W]`` uint8 fault masks stacked like the maps, or ``None``.
    """

    maps: torch.Tensor
    mask: np.ndarray | None


class LumisectionData:
    """Lumisections of one or more files: per-LS facts for all LS, maps chunk by chunk.

    The representation is bound to the binning of the first file (or, if it is already
    bound, e.g. from a checkpoint, checked against it); every file is checked.

    Args:
        data: The data section (``labels`` are not used).
        representation: Lumisection maps.
        dqm: The dqm section (truth and mask branches).
        seed: Seed of the train/validation/test assignment.
        with_truth: Read the fault codes and masks (``False`` for unlabelled runs).
        cache: Keep built chunks in memory.
    """

    def __init__(self, data: DataConfig, representation: LumisectionMaps, dqm: DQMConfig, *,
                 seed: int, with_truth: bool = True, cache: bool = True) -> None:
        self.config = data
        self.dqm = dqm
        self.cache = cache
        rc = representation.config
        truth = dqm.truth if with_truth else None
        self.truth = truth
        self.mask_fields = ([f"{h}{dqm.mask_suffix}" for h in rc.histograms]
                            if truth and dqm.mask_suffix else [])
        small = [rc.run_branch, rc.lumi_branch, rc.events_branch] + ([truth] if truth else [])
        fields = list(rc.required_fields) + [f for f in [truth, *self.mask_fields]
                                             if f and f not in rc.required_fields]
        self.source = Source(data.files, data.tree, fields, branches=data.branches,
                             step_size=data.step_size, max_entries=data.max_entries,
                             check_finite=False)
        index = Source(data.files, data.tree, small, branches=data.branches,
                       step_size=max(data.step_size, 100_000), max_entries=data.max_entries,
                       check_finite=False)
        self.metadata = {p: read_metadata(p) for p in self.source.paths}
        for path in self.source.paths:
            first = self.source.read(ChunkSpec(path, 0, 1, 0))
            observed = representation.observed_binning(first, self.metadata[path], where=path)
            representation = representation.bind(observed, where=path)
            if representation.config.binning[rc.histograms[0]].get("axes") is None:
                log.info("%s: no axis edges in the file metadata; bins are numbered", path)
        self.representation = representation
        runs, lumis, n_events, faults = [], [], [], []
        for chunk in index:
            where = f"{chunk.path} entries {chunk.entry_start}-{chunk.entry_stop}"
            try:
                n_events.append(representation.n_events(chunk.arrays))
            except HepmlError as exc:
                raise exc.with_context(where) from None
            r, lu = representation.ids(chunk.arrays)
            runs.append(r)
            lumis.append(lu)
            if truth:
                codes = np.asarray(chunk.arrays[truth]).astype(np.int64)
                if (codes < 0).any():
                    k = int(np.flatnonzero(codes < 0)[0])
                    raise BadValueError(f"{where}: run {r[k]} lumi {lu[k]}: fault code "
                                        f"{codes[k]} in {truth!r}; codes are 0 (good) or positive")
                faults.append(codes)
        self.run = np.concatenate(runs)
        self.lumi = np.concatenate(lumis)
        self.n_events = np.concatenate(n_events)
        self.fault = np.concatenate(faults) if truth else None
        self.excluded = self.n_events == 0
        self.split = assign_split(self.source.num_entries, data.split, split_seed(data, seed))
        self.fault_names = self._fault_names()
        self._built: dict[int, LumisectionChunk] = {}

    def _fault_names(self) -> list[str]:
        names = list(self.dqm.fault_names)
        if not names:
            for meta in self.metadata.values():
                if meta.get("faults"):
                    names = [str(n) for n in meta["faults"]]
                    break
        top = int(self.fault.max()) if self.fault is not None and len(self.fault) else 0
        names = names or ["good"]
        names += [f"fault_{c}" for c in range(len(names), top + 1)]
        return names

    @property
    def num_entries(self) -> int:
        """Number of lumisections."""
        return self.source.num_entries

    def chunk_slice(self, i: int) -> slice:
        """Global positions of chunk ``i``'s lumisections."""
        spec = self.source.chunks[i]
        return slice(spec.global_start, spec.global_start + len(spec))

    def where(self, i: int) -> str:
        """File and entry range of chunk ``i``, for messages."""
        spec = self.source.chunks[i]
        return f"{spec.path} entries {spec.entry_start}-{spec.entry_stop}"

    def chunk(self, i: int) -> LumisectionChunk:
        """Maps (and fault masks) of chunk ``i``."""
        if i in self._built:
            return self._built[i]
        arrays = self.source.read(self.source.chunks[i])
        where = self.where(i)
        try:
            maps = self.representation(arrays, where=where)
            mask = (self.representation.stack(arrays, self.mask_fields, where=where, check=False)
                    .astype(np.uint8) if self.mask_fields else None)
        except HepmlError as exc:
            raise exc if str(exc).startswith(where) else exc.with_context(where) from None
        if mask is not None and mask.shape != maps.shape[:1] + maps.shape[2:]:
            raise BadValueError(f"{where}: the fault masks {self.mask_fields} have shape "
                                f"{mask.shape[1:]}, the maps {tuple(maps.shape[2:])}")
        built = LumisectionChunk(maps, mask)
        if self.cache:
            self._built[i] = built
        return built

    def selection(self, which: int | None, *, good_only: bool) -> np.ndarray:
        """Boolean selection over all LS.

        Selected: LS of split ``which`` (all if ``None``) that are not excluded, and good
        (truth code 0) if ``good_only``.
        """
        sel = ~self.excluded
        if which is not None:
            sel &= self.split == which
        if good_only:
            if self.fault is None:
                raise ConfigError("good lumisections need dqm.truth, the fault-code branch")
            sel &= self.fault == 0
        return sel

    def dataset(self, selection: np.ndarray, *, batch_size: int, shuffle: bool, seed: int = 0,
                flatten: bool = False) -> ChunkedDataset:
        """Batches ``(maps, maps)`` of the selected lumisections (input and target).

        LS come in time order, so one chunk covers one part of the fill (one pile-up
        range), and the trainer shuffles within chunks. With ``cache`` on (the chunks are
        kept in memory anyway) the selected maps are therefore served as one block, so
        that every batch mixes the whole run; a map takes ``4 * H * W`` bytes (6 kB for
        40 x 36). Without ``cache`` each chunk is one block, read when its turn comes.
        """
        if self.cache:
            def block() -> tuple[torch.Tensor, ...]:
                parts = [self.chunk(i).maps[torch.from_numpy(selection[self.chunk_slice(i)])]
                         for i in range(len(self.source.chunks))]
                x = torch.cat(parts)
                x = x.flatten(1) if flatten else x
                return x, x

            return ChunkedDataset([block], [int(selection.sum())], batch_size=batch_size,
                                  shuffle=shuffle, seed=seed, cache=True)
        loaders, lengths = [], []
        for i in range(len(self.source.chunks)):
            sel = torch.from_numpy(selection[self.chunk_slice(i)])
            lengths.append(int(sel.sum()))

            def load(i: int = i, sel: torch.Tensor = sel) -> tuple[torch.Tensor, ...]:
                x = self.chunk(i).maps[sel]
                x = x.flatten(1) if flatten else x
                return x, x

            loaders.append(load)
        return ChunkedDataset(loaders, lengths, batch_size=batch_size, shuffle=shuffle,
                              seed=seed, cache=False)

    def moments(self, selection: np.ndarray) -> tuple[torch.Tensor, torch.Tensor, int]:
        """Per-bin mean and standard deviation (n - 1) of the selected maps, chunk by chunk.

        See :func:`hepml.training.chunk_moments`.
        """
        mean, std, n = chunk_moments(
            (self.chunk(i).maps[torch.from_numpy(selection[self.chunk_slice(i)])][:, 0]
             for i in range(len(self.source.chunks)) if selection[self.chunk_slice(i)].any()),
            ddof=1)
        if mean is None:
            raise EmptyInputError("no lumisections selected for the normalisation")
        return mean, std, n


def _model_kind(cfg: dict[str, Any]) -> str:
    """The monitor's model kind, one of :data:`MODEL_KINDS`."""
    kind = cfg.get("kind", MODEL_KINDS[0])
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind {kind!r} cannot monitor lumisection maps; use one of "
                          f"{', '.join(MODEL_KINDS)}")
    return kind


# ----------------------------------------------------------------------------- scoring
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


def _residuals(model: torch.nn.Module, x: torch.Tensor, *, device: torch.device, flatten: bool,
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


def _pulls(model: torch.nn.Module, x: torch.Tensor, calibration: ScoreCalibration, *,
           device: torch.device, flatten: bool, batch_size: int) -> torch.Tensor:
    pull = _residuals(model, x, device=device, flatten=flatten, batch_size=batch_size).float()
    if calibration.spread is not None:
        pull = pull / calibration.spread.to(device=device, dtype=torch.float32)
    return pull


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
        r = _residuals(model, data.chunk(i).maps[sel], device=device, flatten=flatten,
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
        pull = _pulls(model, data.chunk(i).maps[sel], calibration, device=device,
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
        pull = _pulls(model, x, calibration, device=device, flatten=flatten,
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


# ----------------------------------------------------------------------------- metrics
def _threshold(scores: torch.Tensor, false_alarm_rate: float) -> float:
    """The ``1 - false_alarm_rate`` quantile (linear interpolation) of ``scores``."""
    if scores.numel() == 0:
        raise EmptyInputError("no scores to set the threshold on")
    return float(torch.quantile(scores, 1.0 - false_alarm_rate))


def dqm_metrics(scored: ScoredRun, data: LumisectionData, *, threshold: float,
                device: torch.device, dqm: DQMConfig, test_split: int | None = 2,
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
            row["auc_vs_good"] = evaluation.roc_auc(s_all, labels)
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


def _detection_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-type table as rows for the report and the CLI."""
    rows = []
    for name, r in (metrics.get("detection") or {}).items():
        eff = r["efficiency"]
        row = {"fault": name, "LS": r["n_lumisections"],
               "detected": eff["passed"],
               "efficiency": f"{eff['value']:.3f} ± {eff['uncertainty']:.3f}",
               "channels touched": (f"{100 * r['channel_fraction']['mean']:.2f} %"
                                    if "channel_fraction" in r else "n/a"),
               "goal applies": r.get("touches_coverage", "n/a"),
               "meets target": r["meets_target"]}
        if "top1_in_mask" in r:
            row["top-1 in mask"] = f"{r['top1_in_mask']['value']:.3f}"
            row["top-k precision"] = (f"{r['topk_precision']['mean']:.3f} (random "
                                      f"{r['topk_precision']['random_expectation']:.3f})")
        if "auc_vs_good" in r:
            row["AUC vs good"] = f"{r['auc_vs_good']:.4f}"
        rows.append(row)
    return rows


# ----------------------------------------------------------------------------- outputs
def _write_friend_trees(out_dir: Path, data: LumisectionData, scored: ScoredRun,
                        flagged: np.ndarray, *, with_split: bool,
                        metadata: dict[str, Any]) -> list[Path]:
    """One friend tree ``dqm`` per input file, LS for LS."""
    branches: dict[str, np.ndarray] = {
        "anomaly_score": scored.score.astype(np.float32),
        "flagged": flagged.astype(np.bool_),
        "excluded": data.excluded.astype(np.bool_),
    }
    if with_split:
        branches["split"] = data.split
    return write_friend_trees(out_dir, data.source, branches, suffix="dqm", tree=FRIEND_TREE,
                              metadata=metadata)


def _write_flagged_csv(path: Path, data: LumisectionData, scored: ScoredRun,
                       flagged: np.ndarray, threshold: float,
                       trigger_names: Sequence[str] = ()) -> Path:
    """``flagged_lumisections.csv``: one row per flagged LS, in run and lumi order."""
    rep = data.representation
    width = rep.output_shape[2]
    file_of, entries = data.source.locate(np.arange(data.num_entries))
    idx = np.flatnonzero(flagged)
    idx = idx[np.lexsort((data.lumi[idx], data.run[idx]))]
    k_top = scored.top_index.shape[1]
    header = ["run", "lumi", "file", "entry", "split", "anomaly_score", "threshold", "trigger",
              "fault"]
    for k in range(1, k_top + 1):
        header += [f"top{k}_histogram", f"top{k}_bin", f"top{k}_center", f"top{k}_residual"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in idx:
            fault = data.fault_names[data.fault[i]] if data.fault is not None else ""
            row = [int(data.run[i]), int(data.lumi[i]), data.source.paths[file_of[i]],
                   int(entries[i]),
                   SPLIT_NAMES[data.split[i]], f"{scored.score[i]:.6g}", f"{threshold:.6g}",
                   trigger_names[scored.trigger[i]] if scored.trigger[i] >= 0 else "", fault]
            for k in range(k_top):
                cell = int(scored.top_index[i, k])
                if cell < 0:
                    row += ["", "", "", ""]
                    continue
                lay, bi, bj = rep.channel(cell // width, cell % width)
                centers = lay.centers(bi, bj)
                row += [lay.name, f"{bi},{bj}",
                        " ".join(f"{a}={v:.4g}" for a, v in centers.items()),
                        f"{scored.top_residual[i, k]:+.4g}"]
            writer.writerow(row)
    return path


def _plots(out_dir: Path, data: LumisectionData, scored: ScoredRun, flagged: np.ndarray,
           threshold: float, *, title: str, distributions: bool, score: str) -> list[Path]:
    plots: list[Path] = []
    fault = data.fault if data.fault is not None else np.zeros(data.num_entries, dtype=np.int64)
    names = data.fault_names if data.fault is not None else ["unlabelled"]
    plots += dqm_plots.plot_run_timeline(
        data.run, data.lumi, scored.score, threshold, fault, names, flagged,
        out_dir / "timeline", title=title)
    if distributions and data.fault is not None:
        plots += dqm_plots.plot_score_by_type(scored.score, fault, names, threshold,
                                              out_dir / "score_distributions",
                                              keep=~data.excluded)
    layout = data.representation.layout
    label = ("Residual (x - reconstruction) / scale" if score == "reconstruction_error"
             else "Pull: residual / its spread on good LS")
    for rank, (s, pos, residual, mask) in enumerate(scored.worst, start=1):
        truth = names[fault[pos]] if data.fault is not None else None
        plots += dqm_plots.plot_residual_map(
            residual, layout, out_dir / f"residual_map_{rank}", mask=mask, label=label,
            title=(f"run {data.run[pos]} LS {data.lumi[pos]}: score {s:.3g}"
                   + (f" ({truth})" if truth else "")))
    return plots


# ----------------------------------------------------------------------------- the task
def run(cfg: WorkflowConfig, *, resume: str | Path | None = None) -> JobResult:
    """Train the monitor of workflow ``cfg``, score every LS, evaluate; return the run dir.

    Args:
        cfg: The workflow (``task: dqm``).
        resume: A run directory of the same workflow to continue from its last checkpoint.
    """
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    dqm = from_mapping(DQMConfig, cfg.dqm, where="dqm")
    distributed.init_from_env(resolve_device(cfg.training.device),
                               timeout_s=cfg.training.distributed_timeout)
    if cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    representation = build_representation(cfg.representation)
    data = LumisectionData(cfg.data, representation, dqm, seed=cfg.seed)
    representation = data.representation
    selection = dqm.training_selection
    if selection == "all":
        log.info("training on all lumisections of the training split (%s)",
                 "train_on: all" if dqm.truth else "no dqm.truth branch: good and bad are unknown")
    good_only = selection == "good"
    n_excluded = int(data.excluded.sum())
    if n_excluded:
        listed = ", ".join(f"{r}:{lu}" for r, lu in zip(data.run[data.excluded][:20],
                                                        data.lumi[data.excluded][:20], strict=True))
        log.warning("%d lumisection(s) with n_events == 0 are excluded and scored NaN "
                    "(run:lumi %s%s)", n_excluded, listed, " ..." if n_excluded > 20 else "")
    train_sel = data.selection(0, good_only=good_only)
    val_sel = data.selection(1, good_only=good_only)
    what = "good " if good_only else ""
    if not train_sel.any():
        in_split = data.split == 0
        raise EmptyInputError(
            f"{', '.join(data.source.paths)}: no {what}lumisections in the training split "
            f"({int(in_split.sum())} LS in it, {int((in_split & data.excluded).sum())} with "
            f"n_events == 0"
            + (f", {int((in_split & (data.fault > 0)).sum())} faulty" if good_only else "")
            + "): nothing to train the monitor on. Use a run with good lumisections "
            f"({dqm.truth or 'truth'} == 0 and n_events > 0), more lumisections, or change "
            "data.split")
    if not val_sel.any():
        raise EmptyInputError(
            f"{', '.join(data.source.paths)}: no {what}lumisections in the validation split: "
            "the threshold is set on them. Use more lumisections or change data.split")
    # a dense autoencoder reads each map flattened
    model_spec = size_model(_model_kind(cfg.model), cfg.model, representation.output_shape,
                            flatten=True, source="the lumisection maps")
    flatten = model_spec["kind"] == "autoencoder"
    run_config = to_dict(cfg)
    run_config["model"] = {"kind": model_spec["kind"], **model_spec["kwargs"]}
    run_config["representation"] = {"kind": "lumisection_maps", **representation.to_dict()}
    run_config["dqm"] = to_dict(dqm)
    run_dir = open_run_dir(cfg.runs_dir, cfg.name, resume=resume, run_config=run_config,
                           paths=data.source.paths, entries=data.source.entries,
                           split=data.split)
    main = distributed.is_main_process()
    counts = np.bincount(data.split, minlength=3)
    log.info("%d lumisections from %d file(s): %s; training on %d %sLS, validating on %d",
             data.num_entries, len(data.source.paths),
             ", ".join(f"{n} {s}" for n, s in zip(counts, SPLIT_NAMES, strict=True)),
             int(train_sel.sum()), what, int(val_sel.sum()))

    # normalisation: per-bin mean and floored standard deviation of the training maps
    shift, std, n_norm = data.moments(train_sel)
    rc = representation.config
    median_events = float(np.median(data.n_events[train_sel]))
    floor = dqm.scale_floor / median_events if rc.normalize == "per_event" else dqm.scale_floor
    scale = std.clamp(min=floor) if floor > 0 else std
    n_floored = int((std < floor).sum())
    model = build_model(model_spec["kind"], **model_spec["kwargs"])
    entry = (-1,) if flatten else (1, *shift.shape)
    model.set_normalization(shift.float().reshape(entry), scale.float().reshape(entry))

    trainer = Trainer(model, cfg.training, run_dir=run_dir, model_spec=model_spec,
                      run_config=run_config, loss_fn=model.loss, seed=cfg.seed,
                      unit="lumisection")
    log.info("model %s: %d parameters, device %s%s", model_spec["kind"],
             sum(p.numel() for p in model.parameters()), trainer.device,
             ", mixed precision" if trainer.amp else "")
    bs = cfg.training.batch_size
    train = data.dataset(train_sel, batch_size=bs, shuffle=True, seed=cfg.seed, flatten=flatten)
    val = data.dataset(val_sel, batch_size=bs, shuffle=False, flatten=flatten)
    t_train = time.perf_counter()
    history = trainer.fit(train, val, resume=bool(resume))
    train_seconds = time.perf_counter() - t_train
    trainer.load_best()
    if not main:
        return JobResult(run_dir, cfg.task)
    device = trainer.device
    # a pull is at least one count per LS away: floor / scale in residual units
    spread_floor = (floor / trainer.module.scale.detach().reshape(-1).cpu().double()
                    if floor > 0 else torch.zeros(int(std.numel()), dtype=torch.float64))
    calibration = calibrate(trainer.module, data, train_sel, dqm=dqm, device=device,
                            flatten=flatten, floor=spread_floor)
    scored = score_lumisections(trainer.module, data, device=device, flatten=flatten, dqm=dqm,
                                calibration=calibration)
    log.info("scored %d lumisections in %.2f s (%.0f LS/s)", data.num_entries, scored.seconds,
             data.num_entries / max(scored.seconds, 1e-9))

    # threshold on the validation LS (good ones when the truth is known)
    dtype = float_dtype(device)
    val_scores = torch.as_tensor(scored.score[val_sel], dtype=dtype, device=device)
    threshold = _threshold(val_scores, dqm.false_alarm_rate)
    flagged = ~data.excluded & (np.nan_to_num(scored.score, nan=-np.inf) > threshold)
    test_split = 2 if counts[2] else 1
    if not counts[2]:
        log.warning("the test split is empty; the false-alarm rate is measured on the "
                    "validation LS that set the threshold")
    eff_splits = None if good_only else [1, 2]
    metrics = dqm_metrics(scored, data, threshold=threshold, device=device, dqm=dqm,
                          test_split=test_split, efficiency_splits=eff_splits)
    metrics = {"task": "dqm", "threshold": threshold,
               "threshold_definition": (
                   f"{1 - dqm.false_alarm_rate:g} quantile (linear interpolation) of the scores "
                   f"of the {len(val_scores)} {what}LS of the validation split; an LS is flagged "
                   "when its score is above it"),
               "false_alarm_rate_target": dqm.false_alarm_rate,
               "score": dqm.score, "score_definition": SCORE_DEFINITIONS[dqm.score],
               **metrics}
    if not good_only and data.fault is not None:
        metrics["efficiency_note"] = ("trained on all LS (train_on: all): efficiencies use the "
                                      "faulty LS of the validation and test splits only")
    if calibration.names:
        metrics["multiscale"] = {
            "statistics": list(calibration.names),
            "train_mean": calibration.mean.tolist(), "train_std": calibration.std.tolist(),
            "flagged_by": {name: int((flagged & (scored.trigger == k)).sum())
                           for k, name in enumerate(calibration.names)}}
    metrics["excluded_lumisections"] = [{"run": int(r), "lumi": int(lu)} for r, lu in
                                        zip(data.run[data.excluded], data.lumi[data.excluded],
                                            strict=True)]
    metrics["normalization"] = {
        "shift": f"per-bin mean of the {n_norm} training maps",
        "scale": f"per-bin standard deviation of the training maps, floored at {floor:.4g}",
        "floor": floor, "floor_definition": (
            f"{dqm.scale_floor:g} count(s) per LS" + (
                f" / median crossings of the training LS ({median_events:g})"
                if rc.normalize == "per_event" else "")),
        "n_floored_bins": n_floored, "n_bins": int(std.numel())}
    metrics["training"] = {"epochs_run": len(history), "best_epoch": trainer.best_epoch,
                           "best_val_loss": trainer.best_val_loss,
                           "device": str(device), "mixed_precision": trainer.amp,
                           "trained_on": f"{what or 'all '}LS of the training split",
                           "n_train": int(train_sel.sum()), "n_validation": int(val_sel.sum()),
                           "split_counts": {s: int(c) for s, c in zip(SPLIT_NAMES, counts,
                                                                       strict=True)},
                           "parameters": sum(p.numel() for p in trainer.module.parameters()),
                           "seconds": train_seconds}
    metrics["binning"] = {h: representation.config.binning[h] for h in rc.histograms}
    metrics["timing"] = {"scoring_s": scored.seconds,
                         "lumisections_per_s": data.num_entries / max(scored.seconds, 1e-9),
                         "total_s": time.perf_counter() - t_start}

    _store_calibration(run_dir / "checkpoint_best.pt", calibration, threshold)
    _write_friend_trees(run_dir / "predictions", data, scored, flagged, with_split=True,
                        metadata={"workflow": cfg.name, "threshold": threshold,
                                  "checkpoint": str(run_dir / "checkpoint_best.pt")})
    _write_flagged_csv(run_dir / "flagged_lumisections.csv", data, scored, flagged, threshold,
                       calibration.names)
    plots = _plots(run_dir, data, scored, flagged, threshold, title=cfg.name, distributions=True,
                   score=dqm.score)
    if history:
        plots += evaluation.plot_history(history, run_dir / "history")
    metrics["timing"]["total_s"] = time.perf_counter() - t_start
    evaluation.write_metrics_json(run_dir / "metrics.json", metrics)
    extra: dict[str, Any] = {}
    if metrics.get("detection"):
        extra["detection by fault type"] = _detection_rows(metrics)
        extra["goal"] = metrics["goal"]
    extra["false alarms"] = metrics.get("false_alarm_rate") or metrics.get("flag_rate")
    extra["training"] = metrics["training"]
    extra["normalisation"] = metrics["normalization"]
    summary = summarise(metrics, run_dir)
    evaluation.write_report(run_dir, title=f"{cfg.name}: data-quality monitoring "
                                           f"({model_spec['kind']})",
                            metrics={k: v for k, v in metrics.items()
                                     if k not in ("detection", "binning")},
                            config=run_config,
                            plots=[p for p in plots if str(p).endswith(".png")],
                            extra_tables=extra, key_metrics=summary.key_metrics)
    return JobResult(run_dir, cfg.task, summary, metrics)


def summarise(metrics: Mapping[str, Any], run_dir: Path) -> Summary:
    """The run's summary: threshold, flagged lumisections, false alarms, detection, goal."""
    far = metrics.get("false_alarm_rate") or {}
    line = (f"{metrics.get('n_flagged')} of {metrics.get('n_scored')} lumisections flagged, "
            f"threshold {number(metrics.get('threshold'), '.4g')}")
    if isinstance(far.get("value"), float):
        line += (f"; false-alarm rate on test good LS {number(far['value'])} "
                 f"± {number(far.get('uncertainty'))} "
                 f"(target {metrics.get('false_alarm_rate_target')})")
    lines = [line]
    key = [("lumisections flagged", f"{metrics.get('n_flagged')} of {metrics.get('n_scored')}"),
           ("threshold", number(metrics.get("threshold"), ".4g")),
           ("false-alarm rate (test good LS)", with_error(far.get("value"),
                                                          far.get("uncertainty")))]
    for name, row in (metrics.get("detection") or {}).items():
        eff = row.get("efficiency") or {}
        if isinstance(eff.get("value"), float):
            lines.append(f"  {name}: detected {eff['passed']}/{eff['total']} = "
                         f"{eff['value']:.3f}")
            key.append((f"detected: {name}", f"{eff['passed']}/{eff['total']} = "
                                             f"{eff['value']:.3f}"))
    goal = metrics.get("goal")
    if goal:
        lines.append(f"goal {'met' if goal['met'] else 'NOT met'}: {goal['statement']}")
        key.append(("goal", "met" if goal["met"] else "NOT met"))
    lines += [f"flagged: {run_dir / 'flagged_lumisections.csv'}",
              f"report: {run_dir / 'report.html'}"]
    return Summary(lines=tuple(lines), key_metrics=rows(key))


# ----------------------------------------------------------------------------- hepml dqm
#: Key of the scoring calibration added to ``checkpoint_best.pt`` after training.
CALIBRATION_KEY = "dqm_calibration"


def _store_calibration(checkpoint: Path, calibration: ScoreCalibration,
                       threshold: float) -> None:
    """Add the scoring calibration to the best checkpoint.

    That is what scoring needs besides the weights (score kind, residual spread,
    threshold), so that the checkpoint alone describes the monitor.
    """
    state = load_checkpoint(checkpoint)
    state.pop("format", None)
    state.pop("versions", None)
    state[CALIBRATION_KEY] = {**calibration.to_state(), "threshold": float(threshold)}
    save_checkpoint(checkpoint, state)


def _stored_threshold(checkpoint: Path, calibration: dict[str, Any]) -> tuple[float, str]:
    """The threshold of the training run.

    It is read from ``metrics.json`` beside the checkpoint, or, where that file was not
    copied along, from the copy kept in the checkpoint.
    """
    path = checkpoint.parent / "metrics.json"
    if not path.exists():
        value = calibration.get("threshold")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{checkpoint}: no metrics.json beside the checkpoint and no "
                              "threshold in it; give --threshold")
        return float(value), f"{checkpoint} (no metrics.json beside it)"
    try:
        value = json.loads(path.read_text()).get("threshold")
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the stored threshold ({exc}); "
                          "give --threshold") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path}: holds no finite 'threshold'; give --threshold")
    return float(value), str(path)


def _has_branches(paths: Sequence[str], tree: str, names: Sequence[str]) -> bool:
    return all(all(n in open_tree(p, tree).keys() for n in names) for p in paths)


def score_files(checkpoint: str | Path, files: Sequence[str], out_dir: str | Path, *,
                threshold: float | None = None, device: str = "auto", tree: str | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the lumisections of ``files`` with a trained monitor.

    The maps are built as in training and must have the binning the model was trained
    on. Writes, under ``out_dir``: ``predictions/<stem>.dqm.root`` friend trees,
    ``flagged_lumisections.csv``, ``timeline`` and ``residual_map_N`` plots and
    ``dqm_summary.json``; with the truth branch in the files also ``score_distributions``
    and the detection table.

    Args:
        checkpoint: ``checkpoint_best.pt`` of a dqm run.
        files: ROOT files or globs.
        out_dir: Output directory.
        threshold: Flag LS above this score (default: the one the training run stored in
            its ``metrics.json``).
        device: ``auto``, ``cpu``, ``cuda``...
        tree: Tree name (default: the training one).
        progress: Called with a line of text per run (for the CLI).

    Returns:
        The summary written to ``dqm_summary.json``.
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    config = state.get("config") or {}
    if config.get("task") != "dqm":
        raise CheckpointError(f"{checkpoint}: not a checkpoint of a dqm run "
                              f"(task {config.get('task')!r})")
    calibration = state.get(CALIBRATION_KEY)
    if calibration is None:
        raise CheckpointError(f"{checkpoint}: holds no scoring calibration ({CALIBRATION_KEY}); "
                              "use checkpoint_best.pt of a finished dqm run")
    if threshold is None:
        threshold, source = _stored_threshold(checkpoint, calibration)
    else:
        source = "--threshold"
    representation = build_representation(dict(config["representation"]))
    dqm = from_mapping(DQMConfig, config.get("dqm") or {}, where="checkpoint dqm")
    data_cfg = dict(config["data"])
    data_cfg.update(files=list(files), max_entries=None, split=[0.0, 0.0, 1.0])
    if tree:
        data_cfg["tree"] = tree
    data_config = from_mapping(DataConfig, data_cfg, where="dqm")
    paths = expand_files(data_config.files)
    truth_fields = ([dqm.truth] + ([f"{h}{dqm.mask_suffix}" for h in
                                     representation.config.histograms]
                                    if dqm.mask_suffix else [])) if dqm.truth else []
    with_truth = bool(dqm.truth) and _has_branches(paths, data_config.tree, truth_fields)
    if dqm.truth and not with_truth:
        log.info("no %s branch (or fault masks) in the files: scores only", dqm.truth)
    data = LumisectionData(data_config, representation, dqm, seed=0, with_truth=with_truth,
                           cache=False)
    model = model_from_checkpoint(state, source=checkpoint)
    dev = resolve_device(device, what="--device")
    model.to(dev)
    flatten = state["model"]["kind"] == "autoencoder"
    scored = score_lumisections(model, data, device=dev, flatten=flatten, dqm=dqm,
                                calibration=ScoreCalibration.from_state(calibration))
    flagged = ~data.excluded & (np.nan_to_num(scored.score, nan=-np.inf) > threshold)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trees = _write_friend_trees(out_dir / "predictions", data, scored, flagged, with_split=False,
                                metadata={"checkpoint": str(checkpoint), "threshold": threshold,
                                          "threshold_source": source})
    csv_path = _write_flagged_csv(out_dir / "flagged_lumisections.csv", data, scored, flagged,
                                  threshold, calibration.get("names") or ())
    plots = _plots(out_dir, data, scored, flagged, threshold, title=checkpoint.parent.name,
                   distributions=with_truth, score=calibration["score"])
    per_run = {}
    for r in np.unique(data.run):
        sel = data.run == r
        per_run[str(int(r))] = {"n_lumisections": int(sel.sum()),
                                "n_excluded": int((sel & data.excluded).sum()),
                                "n_flagged": int((sel & flagged).sum())}
        if progress:
            progress(f"run {int(r)}: {per_run[str(int(r))]['n_flagged']} of {int(sel.sum())} "
                     f"lumisections flagged (threshold {threshold:.4g} from {source})")
    summary: dict[str, Any] = {"checkpoint": str(checkpoint), "threshold": threshold,
                               "threshold_source": source, "files": data.source.paths,
                               "runs": per_run, "n_lumisections": data.num_entries,
                               "n_flagged": int(flagged.sum()),
                               "excluded_lumisections": [
                                   {"run": int(r), "lumi": int(lu)} for r, lu in
                                   zip(data.run[data.excluded], data.lumi[data.excluded],
                                       strict=True)],
                               "friend_trees": [str(t) for t in trees],
                               "flagged_csv": str(csv_path),
                               "plots": [str(p) for p in plots if str(p).endswith(".png")],
                               "timing": {"scoring_s": scored.seconds}}
    if with_truth:
        summary.update(dqm_metrics(scored, data, threshold=threshold, device=dev, dqm=dqm,
                                   test_split=None))
    evaluation.write_metrics_json(out_dir / "dqm_summary.json", summary)
    return summary
