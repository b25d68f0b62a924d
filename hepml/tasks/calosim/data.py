"""The ``calosim:`` section, the generators it trains, and the showers read for them."""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Sequence
from typing import Any

import torch

from hepml.errors import ConfigError, EmptyInputError
from hepml.io.calo import CALOGAN, CaloLayout, Showers
from hepml.representations.calo_layers import shower_tensors
from hepml.training import ChunkedDataset

__all__ = ["CaloSimConfig", "GENERATORS", "cell_layout", "load_showers", "parameter_counts"]

#: Model kinds this task trains.
GENERATORS = ("calogan", "caloflow")


@dataclasses.dataclass(frozen=True)
class CaloSimConfig:
    """Options of the ``calosim`` section.

    Attributes:
        particle: Particle of showers whose files do not record it (CaloGAN and challenge
            HDF5): a name (``eplus``, ``gamma``, ``piplus``...) or a PDG id.
        layer_shapes: Cells per layer (rows, columns) of challenge files whose voxel count
            hepml does not know.
        layout: Cell geometry for the lateral widths: ``calogan``, or ``cells`` (unit pitch,
            for other calorimeters).
        bins: Histogram bins of the separation powers.
        energy_bins: Incident-energy bins of the response plot.
        sparsity_threshold: A cell counts as hit above this energy (GeV).
        classifier: Options of the classifier two-sample test on the high-level observables
            (``hidden``, ``epochs``, ``batch_size``, ``learning_rate``, ``test_fraction``).
        classifier_low_level: Options of the low-level test, on every cell divided by the
            incident energy and log10 of the incident energy (the calorimeter challenge's
            low-level classifier); default hidden [256, 256], 30 epochs.
        generate_batch_size: Showers per generator call when generating.
        timing_batches: Batch sizes at which the generator's speed is measured.
    """

    particle: str | int | None = None
    layer_shapes: tuple[tuple[int, ...], ...] | None = None
    layout: typing.Literal["calogan", "cells"] = "calogan"
    bins: int = 50
    energy_bins: int = 10
    sparsity_threshold: float = 0.0
    classifier: dict = dataclasses.field(default_factory=dict)
    classifier_low_level: dict = dataclasses.field(default_factory=dict)
    generate_batch_size: int = 1024
    timing_batches: tuple[int, ...] = (1, 100, 10000)

    def __post_init__(self) -> None:
        if self.bins < 2 or self.energy_bins < 1:
            raise ConfigError("calosim.bins must be >= 2 and calosim.energy_bins >= 1")
        if self.generate_batch_size < 1 or any(b < 1 for b in self.timing_batches):
            raise ConfigError("calosim: batch sizes must be positive")
        if self.layer_shapes is not None and any(len(s) != 2 for s in self.layer_shapes):
            raise ConfigError(f"calosim.layer_shapes: give [rows, columns] per layer, got "
                              f"{self.layer_shapes}")
        allowed = {"hidden", "epochs", "batch_size", "learning_rate", "test_fraction",
                   "n_bootstrap"}
        for where, options in (("classifier", self.classifier),
                               ("classifier_low_level", self.classifier_low_level)):
            for key in options:
                if key not in allowed:
                    from hepml.errors import UnknownKeyError

                    raise UnknownKeyError(key, allowed, where=f"calosim.{where}")


def cell_layout(name: str, shapes: Sequence[tuple[int, int]]) -> CaloLayout:
    """The cell geometry used for widths: CaloGAN's, or unit cells for other calorimeters."""
    if name == "calogan":
        if tuple(tuple(s) for s in shapes) != CALOGAN.shapes:
            raise ConfigError(f"calosim.layout: 'calogan' has layers {list(CALOGAN.shapes)}, the "
                              f"data have {list(shapes)}; use layout: cells")
        return CALOGAN
    return CaloLayout(name="cells", shapes=tuple(tuple(s) for s in shapes),
                      cell_sizes_mm=tuple((1.0, 1.0) for _ in shapes),
                      depths_mm=tuple(1.0 for _ in shapes))


def load_showers(files: Sequence[str], *, tree: str, particle: str | int | None,
                 layer_shapes: Sequence[Sequence[int]] | None, max_entries: int | None = None
                 ) -> tuple[Showers, dict[str, int]]:
    """Read and concatenate every file's showers; return them and the entries per file."""
    from hepml.io.calo import parse_particle, read_showers

    pdg = parse_particle(particle) if particle is not None else None
    parts, entries = [], {}
    for path in files:
        s = read_showers(path, tree=tree, particle=pdg,
                         layer_shapes=[tuple(x) for x in layer_shapes] if layer_shapes else None,
                         entry_stop=max_entries)
        parts.append(s)
        entries[path] = len(s)
    showers = Showers.concatenate(parts)
    if not len(showers):
        raise EmptyInputError(f"{', '.join(files)}: no showers")
    return showers, entries


def _dataset(showers: Showers, particles: Sequence[int], *, batch_size: int, shuffle: bool,
             seed: int, step: int) -> ChunkedDataset:
    cells, energy, pidx = shower_tensors(showers, particles)
    starts = range(0, len(energy), step)
    loaders = [(lambda a=a: (cells[a:a + step], energy[a:a + step], pidx[a:a + step],
                             energy[a:a + step])) for a in starts]
    return ChunkedDataset(loaders, [len(energy[a:a + step]) for a in starts],
                          batch_size=batch_size, shuffle=shuffle, seed=seed)


def _model_kind(model_cfg: dict[str, Any]) -> str:
    """The model kind of the workflow: one of :data:`GENERATORS` (default ``calogan``)."""
    kind = model_cfg.get("kind", "calogan")
    if kind not in GENERATORS:
        raise ConfigError(f"model.kind: task calosim trains {' or '.join(map(repr, GENERATORS))},"
                          f" got {kind!r}")
    return kind


def parameter_counts(model: torch.nn.Module) -> dict[str, int]:
    """Trained parameters of each part of a generator.

    Generator and discriminator, or the two flows; the CaloGAN's averaged copy of its
    generator is not counted.
    """
    return {name: sum(p.numel() for p in part.parameters())
            for name, part in model.named_children() if name != "generator_ema"}
