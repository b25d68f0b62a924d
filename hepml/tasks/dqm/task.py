"""``hepml run`` of a ``task: dqm`` workflow: train the monitor, score, evaluate."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepml import evaluation
from hepml.config import WorkflowConfig, from_mapping, to_dict
from hepml.errors import EmptyInputError
from hepml.evaluation.dqm import dqm_metrics, false_alarm_threshold
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.tasks._job import JobResult, Summary, number, rows, with_error
from hepml.tasks.dqm.apply import _store_calibration
from hepml.tasks.dqm.data import (
    SCORE_DEFINITIONS,
    DQMConfig,
    LumisectionData,
    _model_kind,
    build_representation,
)
from hepml.tasks.dqm.outputs import _detection_rows, _plots, _write_flagged_csv, _write_friend_trees
from hepml.tasks.dqm.scores import calibrate, score_lumisections
from hepml.tasks.rundir import open_run_dir
from hepml.training import Trainer, distributed, float_dtype, resolve_device
from hepml.training.splits import SPLIT_NAMES

log = logging.getLogger(__package__)


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
    threshold = false_alarm_threshold(val_scores, dqm.false_alarm_rate)
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
