"""Labelled entries read chunk by chunk and turned into model inputs, with their split.

The data adapter that the jobs classifying or scanning entries share (``task: tagging``,
``classification`` and ``anomaly``): :class:`TaggingData` reads chunks through
:mod:`hepml.io`, builds model inputs with a representation (:func:`model_inputs`), reads
the class of each entry from one-hot flag branches (:func:`flag_labels`), and assigns
every entry to train/validation/test by the workflow seed. Part of the tasks layer, but
not a job: a job imports it, it imports no job.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import awkward as ak
import numpy as np
import torch
import yaml

from hepml import representations
from hepml.config import DataConfig
from hepml.errors import BadValueError, HepmlError
from hepml.io import Source
from hepml.tasks import scoring
from hepml.tasks.workflow import TASKS
from hepml.training import ChunkedDataset, distributed
from hepml.training.splits import assign_split, split_seed

log = logging.getLogger(__name__)

__all__ = ["KINDS", "TaggingData", "build_representation", "cached_representation",
           "flag_labels", "model_inputs"]


#: Representations a tagger or event classifier trains on (jet_image when none is named):
#: the ones the workflow schema accepts for task tagging.
KINDS = TASKS["tagging"].representations


def build_representation(spec: dict[str, Any]) -> Any:
    """Build the representation named by ``spec["kind"]`` from its plain options."""
    return representations.build_representation(spec, default="jet_image", kinds=KINDS)


class TaggingData:
    """Chunks of labelled jets turned into model inputs.

    Args:
        data: The workflow's data section.
        representation: A transform from a chunk's arrays to an input tensor.
        seed: Seed of the train/validation/test assignment.
        with_labels: Read the class flags (off for scoring unlabelled data).
        cache: Keep built chunks in memory (default: ``data.cache``).
        extra_fields: Further fields read with every chunk (checked like the others), for
            subclasses that need more than the model inputs (event ids, a mass).
    """

    def __init__(self, data: DataConfig, representation: Any, *, seed: int,
                 with_labels: bool = True, cache: bool | None = None,
                 extra_fields: Sequence[str] = ()) -> None:
        self.config = data
        self.representation = representation
        self.with_labels = with_labels
        fields = list(representation.required_fields)
        if with_labels:
            fields += [f for f in data.labels if f not in fields]
        fields += [f for f in extra_fields if f not in fields]
        # under torchrun every file is cut into at least one chunk per rank, so that each
        # rank reads its own part of the files
        self.source = Source(data.files, data.tree, fields, branches=data.branches,
                             step_size=data.step_size, max_entries=data.max_entries,
                             min_chunks_per_file=distributed.world_size())
        self.split = assign_split(self.source.num_entries, data.split, split_seed(data, seed))
        self.cache = data.cache if cache is None else cache
        self._built: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}

    def labels_of(self, arrays: ak.Array, where: str) -> torch.Tensor:
        """Class index of each entry from the one-hot flag branches."""
        return torch.from_numpy(flag_labels(arrays, self.config.labels, where))

    def chunk(self, i: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Model inputs and labels (-1 where unlabelled) of chunk ``i``.

        The inputs are one tensor, or several in the model's argument order.
        """
        if i in self._built:
            return self._built[i]
        x, y, _ = self.build_chunk(i)
        if self.cache:
            self._built[i] = (x, y)
        return x, y

    def build_chunk(self, i: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor, ak.Array]:
        """Read chunk ``i`` and build its model inputs and labels, without caching.

        The arrays read are returned too (for ``extra_fields``).
        """
        spec = self.source.chunks[i]
        arrays = self.source.read(spec)
        where = f"{spec.path} entries {spec.entry_start}-{spec.entry_stop}"
        x = model_inputs(self.representation, arrays, where)
        y = self.labels_of(arrays, where) if self.with_labels else torch.full((len(spec),), -1)
        return x, y, arrays

    def dataset(self, which: int | None, *, batch_size: int, shuffle: bool,
                seed: int = 0) -> ChunkedDataset:
        """Batches of split ``which`` (0, 1, 2), or of every entry in order when ``None``.

        Under torchrun the splits are sharded over the ranks; ``None`` (prediction) is not.
        """
        loaders, lengths = [], []
        for i, spec in enumerate(self.source.chunks):
            part = self.split[spec.global_start : spec.global_start + len(spec)]
            mask = torch.from_numpy(part == which) if which is not None else None
            lengths.append(int(mask.sum()) if mask is not None else len(spec))

            def load(i: int = i, mask: torch.Tensor | None = mask) -> tuple[torch.Tensor, ...]:
                x, y = self.chunk(i)
                return (*x, y) if mask is None else (*(t[mask] for t in x), y[mask])

            loaders.append(load)
        return ChunkedDataset(loaders, lengths, batch_size=batch_size, shuffle=shuffle, seed=seed,
                              cache=False, shard=which is not None)

    def class_means(self, which: int | None = None) -> dict[int, torch.Tensor]:
        """Mean model input of each class (e.g. the average jet image), over split ``which``.

        Only for representations with a single input tensor; empty otherwise.
        """
        sums: dict[int, torch.Tensor] = {}
        counts: dict[int, int] = {}
        for i, spec in enumerate(self.source.chunks):
            inputs, y = self.chunk(i)
            if len(inputs) != 1:
                return {}
            x = inputs[0]
            if which is not None:
                keep = torch.from_numpy(
                    self.split[spec.global_start:spec.global_start + len(spec)] == which)
                x, y = x[keep], y[keep]
            for c in y.unique().tolist():
                sel = x[y == c]
                sums[c] = sums.get(c, 0) + sel.double().sum(0)
                counts[c] = counts.get(c, 0) + len(sel)
        return {c: (sums[c] / counts[c]).float() for c in sorted(sums)}

    def labels(self) -> torch.Tensor:
        """Labels of every entry in order."""
        return torch.cat([self.chunk(i)[1] for i in range(len(self.source.chunks))])


def model_inputs(representation: Any, arrays: ak.Array, where: str) -> tuple[torch.Tensor, ...]:
    """Model inputs of a chunk (one tensor, or several in the model's argument order)."""
    try:
        out = representation(arrays)
    except HepmlError as exc:
        raise exc.with_context(where) from None
    empty = getattr(representation, "count_empty", None)
    if empty is not None and (n_empty := empty(arrays)):
        log.warning("%s: %d %s", where, n_empty, representation.empty_description)
    return tuple(out.values()) if isinstance(out, dict) else (out,)


def flag_labels(arrays: ak.Array, labels: Sequence[str], where: str, start: int = 0) -> np.ndarray:
    """Class index of each entry from the one-hot flag fields ``labels``.

    ``start`` is the entry number of the first entry of ``arrays`` (for the message).
    """
    flags = np.stack([ak.to_numpy(arrays[f]).astype(np.int64) for f in labels], axis=1)
    ok = flags.sum(axis=1) == 1
    if not ok.all():
        bad = np.flatnonzero(~ok)
        raise BadValueError(f"{where}: {bad.size} entries do not have exactly one of the label "
                            f"flags {list(labels)} set, first at entry {start + int(bad[0])}. "
                            "Check data.labels in the workflow.")
    return flags.argmax(axis=1)


def cached_representation(spec: dict[str, Any]) -> Any:
    """The representation of ``spec``, built once per process.

    On a dask worker: once per worker.
    """
    key = ("representation", yaml.safe_dump(spec, sort_keys=True))
    return scoring.cached(key, lambda: build_representation(dict(spec)))
