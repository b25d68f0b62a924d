"""``hepml run`` of a tagging or classification workflow, and ``hepml evaluate``.

:func:`run` trains and evaluates a tagger described by a workflow; :func:`evaluate` turns
existing predictions into metrics and plots; both report through :func:`report_metrics`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml import evaluation
from hepml.config import ApplyConfig, DataConfig, EvaluationConfig, WorkflowConfig, to_dict
from hepml.errors import BadValueError, ConfigError, EmptyInputError, HepmlError
from hepml.io import Source, expand_files, open_tree, read, write_friend_trees
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.tasks._entries import TaggingData, build_representation
from hepml.tasks._job import JobResult, Summary, number
from hepml.tasks.rundir import open_run_dir
from hepml.training import Trainer, distributed, resolve_device
from hepml.training.splits import SPLIT_NAMES

log = logging.getLogger(__package__)


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
