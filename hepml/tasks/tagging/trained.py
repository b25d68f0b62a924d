"""What is done with a trained tagger: score files, compare taggers, generator shifts.

:func:`predict` and :func:`predict_files` apply a checkpoint to files and write friend
trees (on dask, see :mod:`hepml.tasks.scoring`); :func:`compare` draws several trained
taggers on the same entries; :func:`generator_shift` measures how a tagger's rejection
changes on samples made with other generator settings.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch
import yaml

from hepml import evaluation
from hepml.config import DataConfig, from_mapping
from hepml.errors import ConfigError, MissingBranchError
from hepml.io import open_tree, read, write_friend_tree
from hepml.tasks import scoring
from hepml.tasks._entries import (
    TaggingData,
    build_representation,
    cached_representation,
    flag_labels,
    model_inputs,
)
from hepml.tasks.rundir import write_json
from hepml.tasks.tagging.task import _cpu, _prediction_branches, write_predictions
from hepml.training import load_checkpoint, model_from_checkpoint, resolve_device
from hepml.training.splits import SPLIT_NAMES

log = logging.getLogger(__package__)


def _scoring_data(state: dict[str, Any], files: Sequence[str], *, tree: str | None,
                  branches: dict[str, str] | None, with_labels: bool | None) -> TaggingData:
    """Entries of ``files`` read the way the checkpoint's model was trained to read them."""
    representation = build_representation(dict(state["config"]["representation"]))
    data_cfg = dict(state["config"]["data"])
    data_cfg.update(files=list(files), max_entries=None, split=[0.0, 0.0, 1.0])
    if tree:
        data_cfg["tree"] = tree
    if branches is not None:
        data_cfg["branches"] = branches
    data_config = from_mapping(DataConfig, data_cfg, where="predict")
    try:
        return TaggingData(data_config, representation, seed=0,
                           with_labels=with_labels is not False, cache=False)
    except MissingBranchError as exc:
        if with_labels is not None or exc.branch not in data_config.labels:
            raise
        log.info("%s: no label branches; writing scores only", exc.path)
        return TaggingData(data_config, representation, seed=0, with_labels=False, cache=False)


def _score(state: dict[str, Any], data: TaggingData, *, device: str, batch_size: int
           ) -> tuple[np.ndarray, np.ndarray | None]:
    """Softmax scores (and labels, if read) of every entry of ``data`` in order."""
    model = model_from_checkpoint(state)
    dev = resolve_device(device, what="--device")
    model.to(dev).eval()
    outs, labels = [], []
    with torch.no_grad():
        for *x, y in data.dataset(None, batch_size=batch_size, shuffle=False):
            outs.append(torch.softmax(model(*(t.to(dev) for t in x)).float(), dim=1).cpu())
            labels.append(y)
    n_classes = len(data.config.class_names)
    scores = torch.cat(outs).numpy() if outs else np.zeros((0, n_classes), np.float32)
    y = torch.cat(labels).numpy() if data.with_labels and labels else None
    return scores, y


@dataclasses.dataclass(frozen=True)
class _PredictJob:
    """How :func:`predict_files` scores one file: a :class:`hepml.tasks.scoring.ScoringJob`."""

    checkpoint: str
    tree: str
    branches: dict[str, str] | None
    fields: tuple[str, ...]
    optional_fields: tuple[str, ...]
    step_size: int
    representation: dict[str, Any]
    labels: tuple[str, ...]
    class_names: tuple[str, ...]
    device: str
    batch_size: int
    out_dir: str
    metadata: dict[str, Any]

    def _model(self) -> tuple[torch.nn.Module, torch.device]:
        def load() -> tuple[torch.nn.Module, torch.device]:
            model = model_from_checkpoint(load_checkpoint(self.checkpoint), source=self.checkpoint)
            dev = resolve_device(self.device, what="--device")
            return model.to(dev).eval(), dev

        return scoring.cached(("tagging", scoring.file_key(self.checkpoint), self.device), load)

    def score_chunk(self, arrays: ak.Array, *, path: str, start: int, stop: int
                    ) -> tuple[np.ndarray, np.ndarray | None]:
        """Softmax scores (and labels, when read) of the entries ``start``-``stop`` of ``path``."""
        where = f"{path} entries {start}-{stop}"
        x = model_inputs(cached_representation(self.representation), arrays, where)
        model, dev = self._model()
        outs = []
        with torch.no_grad():
            for a in range(0, stop - start, self.batch_size):
                batch = (t[a:a + self.batch_size].to(dev) for t in x)
                outs.append(torch.softmax(model(*batch).float(), dim=1).cpu())
        scores = torch.cat(outs).numpy()
        read_labels = bool(self.labels) and all(f in arrays.fields for f in self.labels)
        return scores, flag_labels(arrays, self.labels, where, start) if read_labels else None

    def write_file(self, path: str, entries: int,
                   chunks: list[tuple[np.ndarray, np.ndarray | None]]) -> dict[str, Any]:
        """The friend tree ``OUT/predictions/<stem>.predictions.root`` of ``path``."""
        scores = np.concatenate([s for s, _ in chunks])
        labels = (None if any(y is None for _, y in chunks)
                  else np.concatenate([y for _, y in chunks]))
        target = Path(self.out_dir) / "predictions" / f"{Path(path).stem}.predictions.root"
        write_friend_tree(target, _prediction_branches(scores, self.class_names, labels, None),
                          tree="predictions", n_entries=entries, source=path,
                          source_tree=self.tree, metadata=self.metadata)
        return {"friend_tree": str(target)}


def predict_files(checkpoint: str | Path, files: str | Sequence[str], out_dir: str | Path, *,
                  tree: str | None = None, branches: dict[str, str] | None = None,
                  device: str = "auto", batch_size: int = 1024, with_labels: bool | None = None,
                  step_size: int | None = None, scheduler: str | None = scoring.SYNCHRONOUS,
                  workers: int | None = None, processes: bool = True,
                  progress: bool | None = None) -> scoring.ScoringReport:
    """Score ``files`` with a trained checkpoint on dask; one friend tree per good file.

    Every file is checked, read with ``uproot.dask`` in chunks and scored on the workers
    (see :mod:`hepml.tasks.scoring`); a file that cannot be scored is skipped and listed
    in ``OUT/skipped_files.json``. ``OUT/predict_summary.json`` records the files scored,
    the entries, the skipped files with their errors and the scheduler.

    Args:
        checkpoint: A ``checkpoint_best.pt`` (or last) of a tagging run.
        files: ROOT files or globs to score.
        out_dir: Output directory (``predictions/<stem>.predictions.root``).
        tree: Tree name (default: the one the model was trained on).
        branches: Branch mapping for another layout (default: the training one).
        device: ``auto``, ``cpu``, ``cuda``... (on each worker).
        batch_size: Jets per forward pass.
        with_labels: Also copy the labels (default: if every good file has the label
            branches; ``True`` makes them required).
        step_size: Entries per chunk read (default: the training one).
        scheduler: ``synchronous`` (in this process), ``None`` (a new LocalCluster) or the
            address of a running ``dask.distributed`` scheduler.
        workers: Workers of the LocalCluster (default: the number of CPUs).
        processes: LocalCluster workers are processes (else threads).
        progress: Show progress bars (default: unless ``TQDM_DISABLE`` is set).

    Raises:
        CheckpointError: The checkpoint cannot be read.
        EmptyInputError: No file could be scored.
    """
    state = load_checkpoint(checkpoint)
    config = state["config"]
    representation = build_representation(dict(config["representation"]))
    data = scoring.data_config(config["data"], files, tree=tree, branches=branches,
                               step_size=step_size, where="predict")
    fields = tuple(representation.required_fields)
    labels = tuple(f for f in data.labels if f not in fields) if with_labels is not False else ()
    job = _PredictJob(
        checkpoint=str(checkpoint), tree=data.tree, branches=dict(data.branches) or None,
        fields=fields + (labels if with_labels else ()),
        optional_fields=labels if with_labels is None else (), step_size=data.step_size,
        representation=dict(config["representation"]), labels=labels,
        class_names=tuple(data.class_names), device=device, batch_size=batch_size,
        out_dir=str(out_dir), metadata={"checkpoint": str(checkpoint), "model": state["model"]})
    report = scoring.score_files(job, data.files, out_dir, scheduler=scheduler, workers=workers,
                                 processes=processes, progress=progress)
    write_json(Path(out_dir) / "predict_summary.json",
               {"checkpoint": str(checkpoint), **report.to_dict(),
                "labels_written": bool(labels) and (bool(with_labels) or report.used_optional),
                "files": report.results})
    return report


def predict(checkpoint: str | Path, files: Sequence[str], out_dir: str | Path, *,
            tree: str | None = None, branches: dict[str, str] | None = None,
            device: str = "auto", batch_size: int = 1024, with_labels: bool | None = None,
            step_size: int | None = None, scheduler: str | None = scoring.SYNCHRONOUS,
            workers: int | None = None, processes: bool = True) -> list[Path]:
    """Score ``files`` with a trained checkpoint; write one friend tree per file.

    Files that cannot be scored are skipped (see :func:`predict_files`, which also
    returns them, and ``OUT/skipped_files.json``).

    Args:
        checkpoint: A ``checkpoint_best.pt`` (or last) of a tagging run.
        files: ROOT files or globs to score.
        out_dir: Directory for the friend trees (``predictions/<stem>.predictions.root``).
        tree: Tree name (default: the one the model was trained on).
        branches: Branch mapping for another layout (default: the training one).
        device: ``auto``, ``cpu``, ``cuda``...
        batch_size: Jets per forward pass.
        with_labels: Also copy the labels (default: if the label branches exist).
        step_size: Entries per chunk read (default: the training one).
        scheduler: ``synchronous`` (default: in this process), ``None`` (a new dask
            LocalCluster) or the address of a running ``dask.distributed`` scheduler.
        workers: Workers of the LocalCluster (default: the number of CPUs).
        processes: LocalCluster workers are processes (else threads).

    Returns:
        The friend trees written, in input order.
    """
    report = predict_files(checkpoint, files, out_dir, tree=tree, branches=branches,
                           device=device, batch_size=batch_size, with_labels=with_labels,
                           step_size=step_size, scheduler=scheduler, workers=workers,
                           processes=processes)
    return [Path(r["friend_tree"]) for r in report.results]


def _prediction_files(run_dir: Path) -> list[Path]:
    """The prediction friend trees a run wrote for its input files."""
    files = sorted((run_dir / "predictions").glob("*.predictions.root"))
    if not files:
        raise ConfigError(f"{run_dir}: no predictions/*.predictions.root; "
                          "is this a run directory?")
    return files


def compare(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
            names: Sequence[str] | None = None, split: str = "test", device: str = "auto",
            working_points: Sequence[float] = (0.3, 0.5)) -> dict[str, Any]:
    """Several trained taggers on one rejection and one ROC plot, on the same entries.

    Each run's prediction friend trees are read; the runs must have scored the same input
    files with the same entries, labels and split (as runs of workflows that share a data
    section and seed do), otherwise the comparison is refused.

    Args:
        run_dirs: Run directories written by :func:`run`.
        out_dir: Where ``compare_rejection``, ``compare_roc`` plots and ``comparison.json`` go.
        names: Legend labels (default: each run's model kind and run directory name).
        split: Entries to compare (``train``, ``validation``, ``test``).
        device: Where the metrics are computed.
        working_points: Signal efficiencies for the rejection table.
    """
    if len(run_dirs) < 1:
        raise ConfigError("compare: give at least one run directory")
    dev = resolve_device(device, what="--device")
    curves, table, reference = {}, {}, None
    for k, run_dir in enumerate(map(Path, run_dirs)):
        files = _prediction_files(run_dir)
        keys = open_tree(files[0], "predictions").keys()
        scores_names = [b for b in keys if b.startswith("score_")]
        arrays = read([str(f) for f in files], "predictions", scores_names + ["label", "split"])
        labels = ak.to_numpy(arrays["label"]).astype(np.int64)
        which = ak.to_numpy(arrays["split"]) == SPLIT_NAMES.index(split)
        if reference is None:
            reference = (labels, which, [f.name for f in files])
        elif not (np.array_equal(labels, reference[0]) and np.array_equal(which, reference[1])
                  and [f.name for f in files] == reference[2]):
            raise ConfigError(f"{run_dir}: its predictions are not for the same entries, "
                              f"labels and split as {run_dirs[0]}; "
                              "compare runs of the same data and seed")
        config_path = run_dir / "config.yaml"
        cfg = yaml.safe_load(config_path.read_text()) if config_path.exists() else {}
        signal = cfg.get("data", {}).get("signal_class") or scores_names[-1][len("score_"):]
        name = (names[k] if names and k < len(names)
                else f"{cfg.get('model', {}).get('kind', 'model')} ({run_dir.name})")
        s = torch.from_numpy(ak.to_numpy(arrays[f"score_{signal}"])[which]).to(dev)
        y = torch.from_numpy(labels[which] == scores_names.index(f"score_{signal}")).to(dev)
        row, curves[name] = _rejection_row(s, y, working_points)
        table[name] = {**row, "n_entries": int(which.sum()), "run_dir": str(run_dir)}
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    evaluation.plot_rejection(curves, out_dir / "compare_rejection", title=f"{split} split")
    evaluation.plot_roc(curves, out_dir / "compare_roc", title=f"{split} split")
    evaluation.write_metrics_json(out_dir / "comparison.json", {"split": split, "taggers": table})
    return table


def _rejection_row(scores: torch.Tensor, is_signal: torch.Tensor, working_points: Sequence[float]
                   ) -> tuple[dict[str, Any], evaluation.RocCurve]:
    roc = evaluation.roc_curve(scores, is_signal)
    values, errors = evaluation.rejection_at(roc, list(working_points))
    low, high = evaluation.bootstrap_auc(scores, is_signal, n_bootstrap=200, seed=0)
    row = {"auc": float(evaluation.auc(roc.fpr, roc.tpr)), "auc_uncertainty": (high - low) / 2,
           "n_signal": int(roc.n_signal),
           "n_background": int(roc.n_background),
           "rejection": {str(wp): {"value": float(v), "uncertainty": float(e)}
                         for wp, v, e in zip(working_points, values.tolist(), errors.tolist(),
                                             strict=True)}}
    return row, _cpu(roc)


def generator_shift(run_dir: str | Path, samples: dict[str, Sequence[str]], out_dir: str | Path, *,
                    working_points: Sequence[float] = (0.3, 0.5), device: str = "auto",
                    batch_size: int = 1024, tree: str | None = None,
                    branches: dict[str, str] | None = None) -> dict[str, Any]:
    """Change of a trained tagger's 1/ε_B on samples made with other generator settings.

    Other settings means another tune, shower or hadronisation than the training sample's.

    The reference is the run's own test split. Each alternative sample is scored with the
    run's best checkpoint (its friend trees go to ``out_dir/<name>/predictions``), and for
    every working point ε_S the shift Δ(1/ε_B) = alternative − nominal is reported with
    the binomial uncertainties of both added in quadrature (the samples are independent);
    the AUC shift comes with the half-widths of both 68 % bootstrap intervals in quadrature.
    A sample made with the nominal settings and another seed shows the size of a purely
    statistical shift.

    Args:
        run_dir: A run directory written by :func:`run`.
        samples: Name -> ROOT files of the alternative sample (with the label branches).
        out_dir: Where ``generator_dependence.json`` and the rejection plots go.
        working_points: Signal efficiencies ε_S.
        device: Where scores and metrics are computed.
        batch_size: Entries per forward pass.
        tree: Tree name of the samples (default: the training one).
        branches: Branch mapping of the samples (default: the training one).

    Returns:
        ``{"signal_class", "working_points", "samples": {name: row}}`` where the nominal
        row is named ``nominal (test split)`` and every other row has ``shift`` per ε_S.
    """
    run_dir = Path(run_dir)
    checkpoint = run_dir / "checkpoint_best.pt"
    if not checkpoint.exists():
        raise ConfigError(f"{run_dir}: no checkpoint_best.pt; give the directory of a finished run")
    if not samples:
        raise ConfigError("give at least one alternative sample (NAME=FILE.root)")
    state = load_checkpoint(checkpoint)
    data_cfg = from_mapping(DataConfig, state["config"]["data"], where="checkpoint data")
    class_names, sig = list(data_cfg.class_names), data_cfg.signal_index
    dev = resolve_device(device, what="--device")
    files = _prediction_files(run_dir)
    score_name = f"score_{class_names[sig]}"
    arrays = read([str(f) for f in files], "predictions", [score_name, "label", "split"])
    test = ak.to_numpy(arrays["split"]) == SPLIT_NAMES.index("test")
    nominal_scores = torch.from_numpy(ak.to_numpy(arrays[score_name])[test]).to(dev)
    nominal_signal = torch.from_numpy(ak.to_numpy(arrays["label"])[test] == sig).to(dev)
    nominal, nominal_roc = _rejection_row(nominal_scores, nominal_signal, working_points)
    rows = {"nominal (test split)": nominal}
    curves = {"nominal (test split)": nominal_roc}
    out_dir = Path(out_dir)
    for name, sample_files in samples.items():
        data = _scoring_data(state, sample_files, tree=tree, branches=branches, with_labels=True)
        scores, labels = _score(state, data, device=device, batch_size=batch_size)
        write_predictions(out_dir / name / "predictions", data.source, scores, class_names,
                          labels=labels, split=None,
                          metadata={"checkpoint": str(checkpoint), "generator_shift": name})
        row, curves[name] = _rejection_row(torch.from_numpy(scores[:, sig]).to(dev),
                                           torch.from_numpy(labels == sig).to(dev), working_points)
        row["files"] = [str(p) for p in data.source.paths]
        d_auc = row["auc"] - nominal["auc"]
        row["auc_shift"] = {"delta": d_auc, "uncertainty": math.hypot(row["auc_uncertainty"],
                                                                      nominal["auc_uncertainty"])}
        row["shift"] = {}
        for wp, alt in row["rejection"].items():
            ref = nominal["rejection"][wp]
            delta = alt["value"] - ref["value"]
            err = math.hypot(alt["uncertainty"], ref["uncertainty"])
            row["shift"][wp] = {"delta": delta, "uncertainty": err,
                                "relative": delta / ref["value"] if ref["value"] else math.nan,
                                "significance": delta / err if err > 0 else math.nan}
        rows[name] = row
        log.info("%s: %d entries scored", name, len(scores))
    out_dir.mkdir(parents=True, exist_ok=True)
    title = f"{run_dir.name}: generator dependence"
    evaluation.plot_rejection(curves, out_dir / "generator_rejection", title=title)
    evaluation.plot_roc(curves, out_dir / "generator_roc", title=title)
    result = {"run_dir": str(run_dir), "signal_class": class_names[sig],
              "working_points": list(working_points), "samples": rows}
    evaluation.write_metrics_json(out_dir / "generator_dependence.json", result)
    return result
