"""The dqm section, and lumisections read chunk by chunk and built into maps."""

from __future__ import annotations

import dataclasses
import logging
import math
import typing
from typing import Any

import numpy as np
import torch

from hepml import representations
from hepml.config import DataConfig
from hepml.errors import BadValueError, ConfigError, EmptyInputError, HepmlError
from hepml.io import ChunkSpec, Source, read_metadata
from hepml.representations.lumisections import LumisectionMaps
from hepml.tasks.workflow import TASKS
from hepml.training import ChunkedDataset, chunk_moments
from hepml.training.splits import assign_split, split_seed

log = logging.getLogger(__package__)


#: Models that can monitor lumisection maps, the default first (as the schema has them).
MODEL_KINDS = TASKS["dqm"].models


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
