"""``hepml scan``: score files with a trained autoencoder on dask; one ranked list."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml.config import from_mapping
from hepml.errors import BadValueError, ConfigError
from hepml.io import write_friend_tree
from hepml.tasks import scoring
from hepml.tasks._entries import build_representation, cached_representation, model_inputs
from hepml.tasks.anomaly.data import AnomalyConfig, _numbers
from hepml.tasks.anomaly.outputs import _feature_names, _rows, _score_branches, write_ranked
from hepml.tasks.anomaly.scores import ScanResult, _keep_top, _ranked, chunk_scores
from hepml.tasks.rundir import write_json
from hepml.training import load_checkpoint, model_from_checkpoint, resolve_device
from hepml.training.splits import SPLIT_NAMES


@dataclasses.dataclass(frozen=True)
class _ScanJob:
    """How :func:`scan` scores one file: a :class:`hepml.tasks.scoring.ScoringJob`."""

    checkpoint: str
    tree: str
    branches: dict[str, str] | None
    fields: tuple[str, ...]
    step_size: int
    representation: dict[str, Any]
    extra_fields: tuple[str, ...]
    device: str
    batch_size: int
    score: str
    top: int
    out_dir: str
    metadata: dict[str, Any]
    optional_fields: tuple[str, ...] = ()

    def _model(self) -> tuple[torch.nn.Module, torch.device]:
        def load() -> tuple[torch.nn.Module, torch.device]:
            model = model_from_checkpoint(load_checkpoint(self.checkpoint),
                                          source=self.checkpoint)
            dev = resolve_device(self.device, what="--device")
            return model.to(dev).eval(), dev

        return scoring.cached(("anomaly", scoring.file_key(self.checkpoint), self.device), load)

    def score_chunk(self, arrays: ak.Array, *, path: str, start: int, stop: int) -> dict[str, Any]:
        """Scores of the entries ``start``-``stop`` of ``path`` and their ``top`` records."""
        where = f"{path} entries {start}-{stop}"
        representation = cached_representation(self.representation)
        x = model_inputs(representation, arrays, where)
        if len(x) != 1:
            raise ConfigError("anomaly scans take a representation with one input tensor "
                              "(features or jet_image)")
        try:
            extras = {f: _numbers(arrays[f], f) for f in self.extra_fields}
        except BadValueError as exc:
            raise exc.with_context(where) from None
        model, dev = self._model()
        cat, records = chunk_scores(model, x[0], extras, representation=representation,
                                    device=dev, batch_size=self.batch_size, score=self.score,
                                    top=self.top, offset=start)
        return {**cat, "top": records}

    def write_file(self, path: str, entries: int, chunks: list[dict[str, Any]]) -> dict[str, Any]:
        """The friend tree of ``path`` and its top records.

        The friend tree is ``OUT/predictions/<stem>.anomaly.root``.
        """
        def joined(key: str) -> np.ndarray | None:
            return None if chunks[0][key] is None else np.concatenate([c[key] for c in chunks])

        heap: list[tuple[float, int, dict[str, Any]]] = []
        for chunk in chunks:
            for rec in chunk["top"]:
                _keep_top(heap, rec, self.top)
        result = ScanResult(score=joined("score"),
                            reconstruction_error=joined("reconstruction_error"),
                            kl=joined("kl"), top=_ranked(heap))
        split = np.full(entries, SPLIT_NAMES.index("test"), np.int8)
        target = Path(self.out_dir) / "predictions" / f"{Path(path).stem}.anomaly.root"
        write_friend_tree(target, _score_branches(result, split, labels=None, scanned=None),
                          tree="anomaly", n_entries=entries, source=path, source_tree=self.tree,
                          metadata=self.metadata)
        return {"friend_tree": str(target), "top": result.top}


def scan(checkpoint: str | Path, files: str | Sequence[str], out_dir: str | Path, *,
         tree: str | None = None, branches: dict[str, str] | None = None,
         device: str = "auto", batch_size: int = 256, top: int | None = None,
         step_size: int | None = None, scheduler: str | None = scoring.SYNCHRONOUS,
         workers: int | None = None, processes: bool = True,
         progress: bool | None = None) -> dict[str, Any]:
    """Score ``files`` with a trained autoencoder; write friend trees and the ranked list.

    The files are checked, read with ``uproot.dask`` in chunks of ``step_size`` entries and
    scored on dask (see :mod:`hepml.tasks.scoring`); a file that cannot be scored is
    skipped and listed in ``OUT/skipped_files.json``. Each file's task returns its ``top``
    records; they are merged here into the ranked list of all scored files, the same list
    as scoring those files one after the other (:func:`score_data`). Memory follows
    ``step_size`` (default: the training one), not the input size.

    Args:
        checkpoint: ``checkpoint_best.pt`` of an anomaly run.
        files: ROOT files or globs.
        out_dir: Output directory (``predictions/<stem>.anomaly.root``, ``anomalies.csv``,
            ``anomalies.root``, ``scan_summary.json``, ``skipped_files.json``).
        tree: Tree name (default: the training one).
        branches: Branch mapping (default: the training one).
        device: ``auto``, ``cpu``, ``cuda``... (on each worker).
        batch_size: Entries per forward pass; with the chunk size it sets the peak memory
            (a conv autoencoder's activations dominate it for large batches).
        top: Ranked entries written (default: the training run's ``anomaly.top``).
        step_size: Entries per chunk read.
        scheduler: ``synchronous`` (default: in this process), ``None`` (a new dask
            LocalCluster) or the address of a running ``dask.distributed`` scheduler.
        workers: Workers of the LocalCluster (default: the number of CPUs).
        processes: LocalCluster workers are processes (else threads).
        progress: Show progress bars (default: unless ``TQDM_DISABLE`` is set).

    Returns:
        A summary: entries and files scored, skipped files with their errors, the
        scheduler, output files, and the ten highest-ranked rows.

    Raises:
        CheckpointError: The checkpoint cannot be read.
        ConfigError: It is not an anomaly checkpoint, or its weights do not fit the model.
        EmptyInputError: No file could be scored.
    """
    state = load_checkpoint(checkpoint)
    config = state.get("config") or {}
    if "anomaly" not in config:
        raise ConfigError(f"{checkpoint}: not the checkpoint of an anomaly scan (task: anomaly)")
    a = from_mapping(AnomalyConfig, config["anomaly"], where="checkpoint anomaly")
    representation = build_representation(dict(config["representation"]))
    data = scoring.data_config(config["data"], files, tree=tree, branches=branches,
                               step_size=step_size, where="scan", labels=[], class_names=[],
                               signal_class=None)
    # weights that do not fit fail here, not per file
    model_from_checkpoint(state, source=checkpoint)
    extra = tuple(dict.fromkeys([*a.ids, *([a.mass] if a.mass else [])]))
    top = top or a.top
    meta = {"checkpoint": str(checkpoint), "score": a.score}
    job = _ScanJob(checkpoint=str(checkpoint), tree=data.tree,
                   branches=dict(data.branches) or None,
                   fields=tuple(dict.fromkeys([*representation.required_fields, *extra])),
                   step_size=data.step_size, representation=dict(config["representation"]),
                   extra_fields=extra, device=device, batch_size=batch_size, score=a.score,
                   top=top, out_dir=str(out_dir), metadata=meta)
    report = scoring.score_files(job, data.files, out_dir, scheduler=scheduler, workers=workers,
                                 processes=processes, progress=progress)
    # merge the files' top records; ``index`` is the entry number over the scored files
    heap: list[tuple[float, int, dict[str, Any]]] = []
    located: dict[int, tuple[str, int]] = {}
    offset = 0
    for r in report.results:
        for rec in r["top"]:
            located[offset + rec["index"]] = (r["path"], rec["index"])
            _keep_top(heap, {**rec, "index": offset + rec["index"]}, top)
        offset += r["entries"]
    records = _ranked(heap)
    rows = _rows(records, [located[rec["index"]][0] for rec in records],
                 [located[rec["index"]][1] for rec in records], ["test"] * len(records),
                 names=_feature_names(representation), classes=None, explain=a.explain)
    out_dir = Path(out_dir)
    scored = [r["path"] for r in report.results]
    ranked = write_ranked(rows, out_dir, scored, meta)
    summary = {**report.to_dict(), "files": scored,
               "friend_trees": [r["friend_tree"] for r in report.results],
               "ranked": [str(p) for p in ranked], "top": rows[:10]}
    write_json(out_dir / "scan_summary.json", summary)
    return summary
