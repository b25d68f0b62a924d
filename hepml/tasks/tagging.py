"""The tagging job: ROOT jets -> representation -> classifier -> metrics, plots, report.

:func:`run` trains and evaluates a tagger described by a workflow; :func:`predict`
applies a trained checkpoint to files and writes friend trees; :func:`evaluate` turns
existing predictions into metrics and plots. All three share :class:`TaggingData`, which
reads chunks through :mod:`hepml.io`, builds model inputs with a representation, and
assigns every entry to train/validation/test by the workflow seed.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch
import yaml

from hepml import evaluation, representations
from hepml.config import (
    ApplyConfig,
    DataConfig,
    EvaluationConfig,
    WorkflowConfig,
    from_mapping,
    to_dict,
)
from hepml.errors import (
    BadValueError,
    ConfigError,
    EmptyInputError,
    HepmlError,
    MissingBranchError,
)
from hepml.io import Source, expand_files, open_tree, read, write_friend_tree, write_friend_trees
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.tasks import scoring
from hepml.tasks._job import JobResult, Summary, number
from hepml.tasks.rundir import open_run_dir, write_json
from hepml.training import (
    ChunkedDataset,
    Trainer,
    distributed,
    load_checkpoint,
    model_from_checkpoint,
    resolve_device,
)
from hepml.training.splits import SPLIT_NAMES, assign_split, split_seed

log = logging.getLogger(__name__)

__all__ = ["TaggingData", "build_representation", "run", "predict", "predict_files", "evaluate",
           "compare", "generator_shift"]


#: Representations a tagger or event classifier trains on (jet_image when none is named).
KINDS = ("jet_image", "particle_cloud", "event_graph", "features")


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
        return torch.from_numpy(_flag_labels(arrays, self.config.labels, where))

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


def write_predictions(out_dir: Path, source: Source, scores: np.ndarray, class_names: Sequence[str],
                      *, labels: np.ndarray | None, split: np.ndarray | None,
                      metadata: dict[str, Any]) -> list[Path]:
    """One friend tree per input file, entry for entry, in ``out_dir``.

    Branches: ``score_<class>``, and ``label`` and ``split`` when given.
    """
    return write_friend_trees(out_dir, source,
                              _prediction_branches(scores, class_names, labels, split),
                              suffix="predictions", tree="predictions", metadata=metadata)


def _prediction_branches(scores: np.ndarray, class_names: Sequence[str], labels: np.ndarray | None,
                         split: np.ndarray | None) -> dict[str, np.ndarray]:
    """The branches of a predictions friend tree: ``score_<class>``, ``label``, ``split``."""
    branches: dict[str, np.ndarray] = {
        f"score_{name}": scores[:, k].astype(np.float32) for k, name in enumerate(class_names)
    }
    if labels is not None:
        branches["label"] = labels.astype(np.int32)
    if split is not None:
        branches["split"] = split
    return branches


def report_metrics(scores: torch.Tensor, labels: torch.Tensor, *, class_names: Sequence[str],
                   signal_index: int, config: EvaluationConfig, out_dir: Path,
                   history: list[dict[str, float]] | None, run_config: dict[str, Any],
                   title: str, seed: int = 0, extra: dict[str, Any] | None = None,
                   extra_plots: Sequence[Path] = ()) -> dict[str, Any]:
    """Metrics on the scores' device, then plots, ``metrics.json`` and ``report.html``.

    ``extra`` (e.g. training facts) is stored in the metrics beside the computed values.
    """
    if len(labels) == 0:
        raise EmptyInputError(f"{title}: no labelled entries to evaluate")
    is_signal = labels == signal_index
    sig_score = scores[:, signal_index]
    metrics = evaluation.evaluate_binary(
        sig_score, is_signal, working_points=tuple(config.working_points),
        threshold_efficiency=config.threshold_efficiency, n_bootstrap=config.n_bootstrap, seed=seed)
    if len(class_names) > 2:
        metrics["multiclass"] = evaluation.evaluate_multiclass(scores, labels, list(class_names))
    metrics["class_names"] = list(class_names)
    metrics["signal_class"] = class_names[signal_index]
    metrics.update(extra or {})
    plots: list[Path] = []
    roc = evaluation.roc_curve(sig_score, is_signal)
    roc_cpu = _cpu(roc)
    name = run_config.get("model", {}).get("kind", "model") if run_config else "model"
    plots += evaluation.plot_rejection({name: roc_cpu}, out_dir / "rejection")
    plots += evaluation.plot_roc({name: roc_cpu}, out_dir / "roc")
    plots += evaluation.plot_score_distributions(sig_score.cpu().numpy(), labels.cpu().numpy(),
                                                 list(class_names), out_dir / "scores")
    cm = np.asarray(metrics["confusion_matrix"]["counts"])
    cm_names = (["not " + class_names[signal_index], class_names[signal_index]]
                if len(class_names) > 2 else list(class_names))
    if len(class_names) == 2 and signal_index == 0:
        cm_names = cm_names[::-1]
    plots += evaluation.plot_confusion_matrix(cm, cm_names, out_dir / "confusion_matrix",
                                              normalize=False)
    plots += evaluation.plot_confusion_matrix(cm, cm_names,
                                              out_dir / "confusion_matrix_normalized",
                                              normalize=True)
    if history:
        plots += evaluation.plot_history(history, out_dir / "history")
    plots += list(extra_plots)
    evaluation.write_metrics_json(out_dir / "metrics.json", metrics)
    evaluation.write_report(out_dir, title=title, metrics=metrics, config=run_config,
                            plots=[p for p in plots if str(p).endswith(".png")],
                            extra_tables=extra)
    return metrics


def _apply_data(apply: ApplyConfig, data: DataConfig, representation: Any) -> TaggingData:
    """Unlabelled entries of an ``apply`` section, read like the training data.

    Built before training so that a missing file or branch stops the run at once.
    """
    config = DataConfig(files=apply.files, tree=apply.tree, branches=apply.branches,
                        labels=data.labels, class_names=data.class_names,
                        signal_class=data.signal_class, step_size=apply.step_size,
                        max_entries=apply.max_entries, split=(0.0, 0.0, 1.0))
    try:
        return TaggingData(config, representation, seed=0, with_labels=False, cache=False)
    except HepmlError as exc:
        raise exc.with_context(f"apply {apply.name!r}") from None


def _apply_summary(scores: np.ndarray, class_names: Sequence[str],
                   files: list[Path]) -> dict[str, Any]:
    """Entries, mean score and share of entries whose highest score is each class."""
    n = len(scores)
    winner = np.bincount(scores.argmax(axis=1), minlength=len(class_names)) if n else None
    return {"n_entries": n,
            "mean_score": {c: float(scores[:, k].mean()) if n else None
                           for k, c in enumerate(class_names)},
            "fraction_classified_as": {c: float(winner[k] / n) if n else None
                                       for k, c in enumerate(class_names)},
            "friend_trees": [str(f) for f in files]}


def run(cfg: WorkflowConfig, *, resume: str | Path | None = None) -> JobResult:
    """Train and evaluate the tagger of workflow ``cfg``; return the run's result.

    Args:
        cfg: The workflow.
        resume: A run directory of the same workflow to continue from its last checkpoint.
    """
    torch.manual_seed(cfg.seed)
    distributed.init_from_env(resolve_device(cfg.training.device),
                               timeout_s=cfg.training.distributed_timeout)
    representation = build_representation(cfg.representation)
    data = TaggingData(cfg.data, representation, seed=cfg.seed)
    applied_data = [_apply_data(a, cfg.data, representation) for a in cfg.apply]
    n_classes = len(cfg.data.class_names)
    model_spec = size_model(cfg.model.get("kind", "cnn"), cfg.model, representation.output_shape,
                            num_classes=n_classes)
    run_config = to_dict(cfg)
    run_config["model"] = {"kind": model_spec["kind"], **model_spec["kwargs"]}
    run_config["representation"] = {"kind": cfg.representation.get("kind", "jet_image"),
                                    **representation.to_dict()}
    run_dir = open_run_dir(cfg.runs_dir, cfg.name, resume=resume, run_config=run_config,
                           paths=data.source.paths, entries=data.source.entries,
                           split=data.split)
    main = distributed.is_main_process()
    counts = np.bincount(data.split, minlength=3)
    log.info("%d entries from %d file(s): %s", data.source.num_entries, len(data.source.paths),
             ", ".join(f"{n} {s}" for n, s in zip(counts, SPLIT_NAMES, strict=True)))
    if counts[0] == 0 or counts[1] == 0:
        raise EmptyInputError("the training or validation split is empty; "
                              "use more data or change data.split")
    model = build_model(model_spec["kind"], **model_spec["kwargs"])
    trainer = Trainer(model, cfg.training, run_dir=run_dir, model_spec=model_spec,
                      run_config=run_config, seed=cfg.seed,
                      unit="jet" if cfg.task == "tagging" else "event")
    log.info("model %s: %d parameters, device %s%s", model_spec["kind"],
             sum(p.numel() for p in model.parameters()), trainer.device,
             ", mixed precision" if trainer.amp else "")
    bs = cfg.training.batch_size
    history = trainer.fit(data.dataset(0, batch_size=bs, shuffle=True, seed=cfg.seed),
                          data.dataset(1, batch_size=bs, shuffle=False), resume=bool(resume))
    trainer.load_best()
    scores = trainer.predict(data.dataset(None, batch_size=max(bs, 1024), shuffle=False))
    # every rank takes part in prediction (each scores its share of the chunks)
    applied_raw = [trainer.predict(adata.dataset(None, batch_size=max(bs, 1024), shuffle=False))
                   for adata in applied_data]
    if main:
        labels = data.labels().to(trainer.device)
        write_predictions(run_dir / "predictions", data.source, scores.float().cpu().numpy(),
                          cfg.data.class_names,
                          labels=labels.cpu().numpy(), split=data.split,
                          metadata={"workflow": cfg.name,
                                    "checkpoint": str(run_dir / "checkpoint_best.pt")})
        test = torch.from_numpy(data.split == 2).to(trainer.device)
        if test.sum() == 0:
            log.warning("the test split is empty; metrics are computed on the validation split")
            test = torch.from_numpy(data.split == 1).to(trainer.device)
        image_plots: list[Path] = []
        means = data.class_means(2)
        if means and next(iter(means.values())).ndim == 3:  # images: one panel per class, channel 0
            cfg_img = representation.config
            image_plots = evaluation.plot_mean_images(
                {cfg.data.class_names[c]: m[0].numpy() for c, m in means.items()},
                run_dir / "mean_images",
                extent=(*cfg_img.phi_range, *cfg_img.eta_range),
            )
        applied: dict[str, Any] = {}
        applied_scores: list[tuple[str, np.ndarray]] = []
        for a, adata, a_scores in zip(cfg.apply, applied_data, applied_raw, strict=True):
            a_scores = a_scores.float().cpu().numpy()
            files = write_predictions(run_dir / "applied" / a.name, adata.source, a_scores,
                                      cfg.data.class_names, labels=None, split=None,
                                      metadata={"workflow": cfg.name, "apply": a.name,
                                                "checkpoint": str(run_dir / "checkpoint_best.pt")})
            applied[a.name] = _apply_summary(a_scores, cfg.data.class_names, files)
            applied_scores.append((a.name, a_scores))
            log.info("apply %s: scored %d entries -> %s", a.name, len(a_scores), files[0].parent)
        if applied_scores:
            image_plots += _applied_score_plot(scores[test].float().cpu().numpy(),
                                               labels[test].cpu().numpy(), applied_scores,
                                               cfg.data.class_names, cfg.data.signal_index,
                                               run_dir / "applied_scores")
        training = {"epochs_run": len(history), "best_epoch": trainer.best_epoch,
                    "device": str(trainer.device), "mixed_precision": trainer.amp,
                    "n_train": int(counts[0]), "n_validation": int(counts[1]),
                    "n_test": int(counts[2])}
        metrics = report_metrics(scores[test], labels[test], class_names=cfg.data.class_names,
                       signal_index=cfg.data.signal_index, config=cfg.evaluation,
                       out_dir=run_dir, history=history, run_config=run_config,
                       title=f"{cfg.name}: {cfg.data.class_names[cfg.data.signal_index]} "
                             f"{'tagging' if cfg.task == 'tagging' else 'classification'}",
                       seed=cfg.seed,
                       extra={"training": training, **({"applied": applied} if applied else {})},
                       extra_plots=image_plots)
        return JobResult(run_dir, cfg.task, summarise(metrics, run_dir), metrics)
    return JobResult(run_dir, cfg.task)


def summarise(metrics: Mapping[str, Any], run_dir: Path) -> Summary:
    """The run's summary: AUC and 1/ε_B at each working point (the report's default table)."""
    parts = [f"AUC {number(metrics.get('auc'))}"]
    for wp, v in (metrics.get("rejection") or {}).items():
        val = v.get("value") if isinstance(v, Mapping) else v
        if isinstance(val, (int, float)):
            parts.append(f"1/eps_B at eps_S={wp}: {number(val, '.1f')}")
    return Summary(lines=(", ".join(parts), f"report: {run_dir / 'report.html'}"))


def _applied_score_plot(test_scores: np.ndarray, test_labels: np.ndarray,
                        applied: Sequence[tuple[str, np.ndarray]], class_names: Sequence[str],
                        signal_index: int, path: Path) -> list[Path]:
    """Signal-score shapes of the test entries per true class and of each applied sample."""
    names = [*class_names, *(f"{name} (applied)" for name, _ in applied)]
    scores = [test_scores[:, signal_index]] + [a[:, signal_index] for _, a in applied]
    labels = [test_labels] + [np.full(len(a), len(class_names) + k)
                              for k, (_, a) in enumerate(applied)]
    return evaluation.plot_score_distributions(np.concatenate(scores), np.concatenate(labels),
                                               names, path)


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


def _flag_labels(arrays: ak.Array, labels: Sequence[str], where: str, start: int = 0) -> np.ndarray:
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
        return scores, _flag_labels(arrays, self.labels, where, start) if read_labels else None

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


def evaluate(files: Sequence[str], out_dir: str | Path, *, signal_class: str | None = None,
             tree: str = "predictions", config: EvaluationConfig | None = None,
             split: str | None = "test", device: str = "auto") -> dict[str, Any]:
    """Metrics and plots from friend trees written by :func:`run` or :func:`predict`.

    Args:
        files: Prediction files (``*.predictions.root``).
        out_dir: Where metrics, plots and the report go.
        signal_class: Class treated as signal (default: the last ``score_*`` branch).
        tree: Tree name of the predictions.
        config: Working points and bootstrap settings.
        split: Evaluate only entries of this split when the files record one
            (``train``, ``validation``, ``test``; ``None``: all entries).
        device: Where the metrics are computed.
    """
    paths = expand_files(files)
    branches = open_tree(paths[0], tree).keys()
    names = [k for k in branches if k.startswith("score_")]
    if not names:
        raise BadValueError(f"{paths[0]}:{tree}: no score_* branches; is this a predictions file?")
    class_names = [n[len("score_"):] for n in names]
    has_split = "split" in branches
    fields = names + ["label"] + (["split"] if has_split else [])
    arrays = read(paths, tree, fields)
    scores = torch.from_numpy(np.stack([ak.to_numpy(arrays[n]) for n in names], axis=1))
    labels = torch.from_numpy(ak.to_numpy(arrays["label"]).astype(np.int64))
    if has_split and split is not None:
        keep = torch.from_numpy(ak.to_numpy(arrays["split"]) == SPLIT_NAMES.index(split))
        scores, labels = scores[keep], labels[keep]
    if signal_class is not None and signal_class not in class_names:
        raise ConfigError(f"--signal-class {signal_class!r} is not one of {class_names}")
    sig = class_names.index(signal_class) if signal_class else len(class_names) - 1
    dev = resolve_device(device, what="--device")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    return report_metrics(scores.to(dev), labels.to(dev), class_names=class_names, signal_index=sig,
                          config=config or EvaluationConfig(), out_dir=out_dir, history=None,
                          run_config={"predictions": paths, "split": split},
                          title=f"evaluation of {len(paths)} prediction file(s)")


def _cpu(roc: evaluation.RocCurve) -> evaluation.RocCurve:
    """The ROC curve with its tensors moved to the CPU, for plotting."""
    return evaluation.RocCurve(*(t.cpu() if isinstance(t, torch.Tensor) else t for t in roc))


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
