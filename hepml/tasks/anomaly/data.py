"""The ``anomaly:`` section, and the entries a scan reads (ids and mass besides the inputs)."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml.config import DataConfig, WorkflowConfig, from_mapping
from hepml.errors import BadValueError, ConfigError
from hepml.tasks._entries import TaggingData
from hepml.tasks.workflow import TASKS
from hepml.training import ChunkedDataset

SCORES = ("reconstruction_error", "kl", "elbo")


@dataclasses.dataclass(frozen=True)
class AnomalyConfig:
    """The ``anomaly:`` section of a workflow.

    Attributes:
        background: Class the autoencoder learns (default: the first of
            ``data.class_names``); ignored for unlabelled data.
        signal: Class injected into the scanned sample (default: every other class).
        signal_fraction: Signal share of the scanned sample, in [0, 1). 0 scans
            background alone (the ranked list then holds background only, and the
            injection table says so); the ROC metrics use all test signal either way.
        score: ``reconstruction_error`` (mean squared error in normalised units),
            ``kl`` (VAE only: the KL divergence of the code), or ``elbo`` (VAE only:
            reconstruction error + KL / number of inputs).
        background_efficiencies: ε_B at which ε_S is quoted and the mass sculpting is
            checked.
        mass: Field (after the branch mapping) whose background distribution is checked
            for sculpting, e.g. ``jet_mass`` or ``M``.
        mass_bins: Bins of the sculpting histograms.
        ids: Fields copied to the ranked list to identify entries (``Run``, ``Event``).
        top: Number of ranked entries written.
        explain: Features named per ranked entry (feature vectors only): those with the
            largest share of the entry's reconstruction error.
        normalize: ``auto`` (``standardize`` for feature vectors, ``scale`` otherwise),
            ``standardize`` (per-input mean and std), ``scale`` (shift 0, one global
            std) or ``none``.
    """

    background: str | None = None
    signal: str | None = None
    signal_fraction: float = 0.01
    score: typing.Literal["reconstruction_error", "kl", "elbo"] = "reconstruction_error"
    background_efficiencies: tuple[float, ...] = (0.1, 0.01, 0.001)
    mass: str | None = None
    mass_bins: int = 30
    ids: tuple[str, ...] = ()
    top: int = 100
    explain: int = 3
    normalize: typing.Literal["auto", "standardize", "scale", "none"] = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.signal_fraction < 1:
            raise ConfigError("anomaly.signal_fraction must lie in [0, 1), "
                              f"got {self.signal_fraction}")
        for eff in self.background_efficiencies:
            if not 0 < eff <= 1:
                raise ConfigError(f"anomaly.background_efficiencies must lie in (0, 1], got {eff}")
        if self.top < 1 or self.explain < 0 or self.mass_bins < 2:
            raise ConfigError("anomaly: top must be >= 1, explain >= 0 and mass_bins >= 2")


def anomaly_config(cfg: WorkflowConfig) -> AnomalyConfig:
    """The workflow's ``anomaly`` section, checked against its data section."""
    a = from_mapping(AnomalyConfig, cfg.anomaly, where="anomaly")
    names = list(cfg.data.class_names)
    for key in ("background", "signal"):
        value = getattr(a, key)
        if value is not None and names and value not in names:
            raise ConfigError(f"anomaly.{key} {value!r} is not one of data.class_names {names}")
    if a.background is not None and a.background == a.signal:
        raise ConfigError("anomaly.background and anomaly.signal must differ")
    return a


class AnomalyData(TaggingData):
    """Entries read like the tagger's, plus the fields the scan reports (ids, mass).

    ``chunk(i)`` returns ``(inputs, labels)`` as for tagging; :meth:`extras` the extra
    fields of chunk ``i`` as numpy arrays.
    """

    def __init__(self, data: DataConfig, representation: Any, *, seed: int,
                 extra_fields: Sequence[str] = (), cache: bool | None = None) -> None:
        self.extra_fields = tuple(dict.fromkeys(extra_fields))
        super().__init__(data, representation, seed=seed, with_labels=bool(data.labels),
                         cache=cache, extra_fields=self.extra_fields)
        self._extras: dict[int, dict[str, np.ndarray]] = {}

    def chunk(self, i: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Inputs and labels of chunk ``i`` (extras kept for :meth:`extras`)."""
        if i in self._built:
            return self._built[i]
        x, y, arrays = self.build_chunk(i)
        extras = {f: _numbers(arrays[f], f) for f in self.extra_fields}
        if len(x) != 1:
            raise ConfigError("anomaly scans take a representation with one input tensor "
                              "(features or jet_image)")
        if self.cache:
            self._built[i] = (x, y)
            self._extras[i] = extras
        else:
            self._extras = {i: extras}
        return x, y

    def extras(self, i: int) -> dict[str, np.ndarray]:
        """The extra fields of chunk ``i``."""
        if i not in self._extras:
            self._built.pop(i, None)
            self.chunk(i)
        return self._extras[i]

    def split_of(self, i: int) -> np.ndarray:
        """Split ids of the entries of chunk ``i``."""
        spec = self.source.chunks[i]
        return self.split[spec.global_start:spec.global_start + len(spec)]

    def training_dataset(self, which: int, background: int | None, *, batch_size: int,
                         shuffle: bool, seed: int = 0) -> ChunkedDataset:
        """Batches ``(x, x)`` of split ``which``, background entries only when labelled."""
        loaders, lengths = [], []
        for i in range(len(self.source.chunks)):
            _, y = self.chunk(i)
            keep = torch.from_numpy(self.split_of(i) == which)
            if background is not None:
                keep &= y == background
            lengths.append(int(keep.sum()))

            def load(i: int = i, keep: torch.Tensor = keep) -> tuple[torch.Tensor, ...]:
                x = self.chunk(i)[0][0][keep]
                return x, x

            loaders.append(load)
        return ChunkedDataset(loaders, lengths, batch_size=batch_size, shuffle=shuffle,
                              seed=seed, cache=False)


def _numbers(arr: Any, name: str) -> np.ndarray:
    arr = arr if isinstance(arr, ak.Array) else ak.Array(arr)
    if arr.ndim != 1:
        raise BadValueError(f"field {name!r}: anomaly.ids and anomaly.mass need one number "
                            f"per entry, got type {arr.type}")
    values = ak.to_numpy(arr)
    if values.dtype.kind not in "biuf":
        raise BadValueError(f"field {name!r}: expected numbers, got type {arr.type}")
    return values


def _model_kind(cfg: dict[str, Any], representation: Any = None) -> str:
    """The model kind of the workflow, one of the autoencoders.

    Without ``model.kind``: the convolutional autoencoder for images (C, H, W), the dense
    one for feature vectors, as ``hepml validate`` assumes.
    """
    shape = getattr(representation, "output_shape", None)
    default = "conv_autoencoder" if shape is not None and len(shape) == 3 else "autoencoder"
    kind = cfg.get("kind", default)
    if kind not in TASKS["anomaly"].models:
        raise ConfigError(f"model.kind {kind!r}: an anomaly scan needs an autoencoder "
                          "(autoencoder or conv_autoencoder)")
    return kind
