"""``hepml run`` of a ``task: anomaly`` workflow: train on background, score, scan."""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepml import evaluation
from hepml.config import WorkflowConfig, to_dict
from hepml.errors import EmptyInputError
from hepml.evaluation import anomaly as anomaly_metrics
from hepml.evaluation import anomaly_plots
from hepml.evaluation.anomaly import injection_mask, injection_table, signal_metrics
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.representations import Features
from hepml.tasks._entries import build_representation
from hepml.tasks._job import JobResult, Summary, number, with_error
from hepml.tasks._job import rows as _job_rows
from hepml.tasks.anomaly.data import AnomalyData, _model_kind, anomaly_config
from hepml.tasks.anomaly.outputs import _scores_friend_trees, ranked_rows, write_ranked
from hepml.tasks.anomaly.scores import score_data
from hepml.tasks.rundir import open_run_dir, write_json
from hepml.training import Trainer, chunk_moments, distributed, resolve_device, to_device

log = logging.getLogger(__package__)


def _normalization(data: AnomalyData, background: int | None, mode: str
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Shift and scale from the training entries, accumulated chunk by chunk in float64."""
    def training_entries(i: int) -> torch.Tensor:
        (x,), y = data.chunk(i)
        keep = torch.from_numpy(data.split_of(i) == 0)
        if background is not None:
            keep &= y == background
        return x[keep]

    mean, std, n = chunk_moments(training_entries(i) for i in range(len(data.source.chunks)))
    if n == 0:
        raise EmptyInputError("anomaly: no training entries of the background class; "
                              "check data.split, data.labels and anomaly.background")
    var = std * std
    if mode == "standardize":
        return mean.float(), std.float()
    if mode == "scale":
        grand = float(mean.mean())
        grand_var = float((var + (mean - grand) ** 2).mean())
        return torch.zeros(()), torch.tensor(math.sqrt(grand_var) or 1.0)
    return torch.zeros(()), torch.ones(())


def run(cfg: WorkflowConfig, *, resume: str | Path | None = None) -> JobResult:
    """Train the autoencoder of workflow ``cfg`` and scan; return the run directory."""
    a = anomaly_config(cfg)
    torch.manual_seed(cfg.seed)
    distributed.init_from_env(resolve_device(cfg.training.device),
                               timeout_s=cfg.training.distributed_timeout)
    representation = build_representation(cfg.representation)
    labelled = bool(cfg.data.labels)
    extra = [*a.ids, *([a.mass] if a.mass else [])]
    data = AnomalyData(cfg.data, representation, seed=cfg.seed, extra_fields=extra)
    names = list(cfg.data.class_names)
    background = names.index(a.background or names[0]) if labelled else None
    signal = ([names.index(a.signal)] if a.signal else
              [k for k in range(len(names)) if k != background]) if labelled else []
    normalize = a.normalize if a.normalize != "auto" else (
        "standardize" if isinstance(representation, Features) else "scale")
    model_spec = size_model(_model_kind(cfg.model, representation), cfg.model,
                            representation.output_shape)
    run_config = to_dict(cfg)
    run_config["model"] = {"kind": model_spec["kind"], **model_spec["kwargs"]}
    run_config["representation"] = {"kind": cfg.representation.get("kind", "jet_image"),
                                    **representation.to_dict()}
    run_config["anomaly"] = to_dict(a)
    run_dir = open_run_dir(cfg.runs_dir, cfg.name, resume=resume, run_config=run_config,
                           paths=data.source.paths, entries=data.source.entries,
                           split=data.split)
    main = distributed.is_main_process()
    model = build_model(model_spec["kind"], **model_spec["kwargs"])
    shift, scale = _normalization(data, background, normalize)
    model.set_normalization(shift, scale)
    bs = cfg.training.batch_size
    train = data.training_dataset(0, background, batch_size=bs, shuffle=True, seed=cfg.seed)
    val = data.training_dataset(1, background, batch_size=bs, shuffle=False)
    if len(val) == 0:
        raise EmptyInputError("anomaly: the validation split holds no background entries; "
                              "use more data or change data.split")
    log.info("training on %d %s entries (validation %d); model %s, %d parameters",
             len(train), a.background or names[0] if labelled else "", len(val),
             model_spec["kind"], sum(p.numel() for p in model.parameters()))
    trainer = Trainer(model, cfg.training, run_dir=run_dir, model_spec=model_spec,
                      run_config=run_config, loss_fn=model.loss, seed=cfg.seed,
                      unit=("jet" if cfg.representation.get("kind")
                            in ("jet_image", "particle_cloud") else "event"))
    history = trainer.fit(train, val, resume=bool(resume))
    trainer.load_best()
    labels = data.labels().numpy() if labelled else None
    if labelled:
        scanned, n_injected = injection_mask(labels, data.split, background=background,
                                             signal=signal, fraction=a.signal_fraction,
                                             seed=cfg.seed + 1)
    else:
        scanned, n_injected = data.split == 2, 0
    result = score_data(trainer.module, data, device=trainer.device,
                        batch_size=256, score=a.score, top=a.top, scanned=scanned)
    if not main:
        return JobResult(run_dir, cfg.task)
    meta = {"workflow": cfg.name, "checkpoint": str(run_dir / "checkpoint_best.pt"),
            "score": a.score}
    _scores_friend_trees(run_dir / "predictions", data, result, labels=labels, scanned=scanned,
                         metadata=meta)
    rows = ranked_rows(result, data, labels=labels, class_names=names, explain=a.explain)
    write_ranked(rows, run_dir, data.source.paths, meta)
    metrics: dict[str, Any] = {"score": a.score, "n_entries": int(len(result.score)),
                               "n_scanned": int(scanned.sum())}
    plots: list[Path] = []
    device = trainer.device
    if labelled:
        test = data.split == 2
        sel = test & (np.isin(labels, signal) | (labels == background))
        n_sig_test = int((sel & (labels != background)).sum())
        if n_sig_test == 0 or n_sig_test == int(sel.sum()):
            metrics["warnings"] = [f"the test split holds {n_sig_test} signal and "
                                   f"{int(sel.sum()) - n_sig_test} background entries; "
                                   "the ROC metrics need both and are left out"]
            log.warning(metrics["warnings"][0])
            labelled_metrics = False
        else:
            labelled_metrics = True
    if labelled and labelled_metrics:
        score_t = to_device(result.score[sel], device)
        is_sig = torch.from_numpy(labels[sel] != background).to(device)
        sig_metrics, (roc, sig_eff, sic) = signal_metrics(
            score_t, is_sig, a.background_efficiencies, cfg.evaluation.working_points, cfg.seed)
        metrics.update(sig_metrics)
        metrics["injection"] = injection_table(result.score, labels, scanned, background,
                                               n_injected, a.background_efficiencies, result.top)
        roc_cpu = evaluation.RocCurve(*(t.cpu() if isinstance(t, torch.Tensor) else t for t in roc))
        label = model_spec["kind"]
        plots += evaluation.plot_roc({label: roc_cpu}, run_dir / "roc")
        plots += evaluation.plot_rejection({label: roc_cpu}, run_dir / "rejection")
        plots += anomaly_plots.plot_significance_improvement(
            {label: (sig_eff.cpu().numpy(), sic.cpu().numpy())},
            run_dir / "significance_improvement")
        plots += anomaly_plots.plot_anomaly_scores(
            result.score[sel], labels[sel], names, run_dir / "scores")
        if a.mass:
            mass = np.concatenate([data.extras(i)[a.mass] for i in range(len(data.source.chunks))])
            bkg = test & (labels == background)
            sculpt = anomaly_metrics.mass_sculpting(
                to_device(mass[bkg].astype(np.float64), device),
                to_device(result.score[bkg], device),
                list(a.background_efficiencies), bins=a.mass_bins, seed=cfg.seed)
            metrics["mass_sculpting"] = {"field": a.mass, **sculpt}
            plots += anomaly_plots.plot_mass_sculpting(sculpt, a.mass, run_dir / "mass_sculpting")
    else:
        plots += anomaly_plots.plot_anomaly_scores(result.score[scanned],
                                                   np.zeros(int(scanned.sum()), int),
                                                   ["scanned entries"], run_dir / "scores")
    if history:
        plots += evaluation.plot_history(history, run_dir / "history")
    metrics["training"] = {"epochs_run": len(history), "best_epoch": trainer.best_epoch,
                           "device": str(trainer.device), "n_train": len(train),
                           "n_validation": len(val), "normalize": normalize}
    metrics["ranked"] = {"n": len(rows), "csv": str(run_dir / "anomalies.csv"),
                         "root": str(run_dir / "anomalies.root")}
    evaluation.write_metrics_json(run_dir / "metrics.json", metrics)
    shown = [{k: v for k, v in r.items()
              if not k.startswith("error_share_") and k not in ("file", "index")}
             for r in rows[:20]]
    tables = {"most anomalous entries (top 20)": shown}
    if "injection" in metrics:
        tables["injected signal"] = {k: v for k, v in metrics["injection"].items() if k != "cuts"}
        tables["cuts on the scanned sample"] = [{"background efficiency": k, **v}
                                                for k, v in metrics["injection"]["cuts"].items()]
    if "signal_efficiency" in metrics:
        tables["signal efficiency at fixed background efficiency"] = [
            {"background efficiency": k, **v} for k, v in metrics["signal_efficiency"].items()]
    if "mass_sculpting" in metrics:
        tables["mass sculpting (Jensen-Shannon divergence to the uncut background)"] = [
            {"background efficiency": k, "n kept": v["n_kept"], "JS divergence": v["js_divergence"],
             "JS of random subsets": v["js_random_subset"]}
            for k, v in metrics["mass_sculpting"]["cuts"].items()]
    summary = summarise(metrics, run_dir)
    evaluation.write_report(run_dir, title=f"{cfg.name}: anomaly scan",
                            metrics={k: v for k, v in metrics.items()
                                     if k not in ("mass_sculpting", "signal_efficiency",
                                                  "injection")},
                            config=run_config, plots=[p for p in plots if str(p).endswith(".png")],
                            extra_tables=tables, key_metrics=summary.key_metrics)
    write_json(run_dir / "scan_summary.json", {"top": rows[:10]})
    return JobResult(run_dir, cfg.task, summary, metrics)


def summarise(metrics: Mapping[str, Any], run_dir: Path) -> Summary:
    """The run's summary: AUC and ε_S at fixed ε_B when labelled, entries scanned, ranking."""
    parts = [f"AUC {number(metrics['auc'])}"] if isinstance(metrics.get("auc"), float) else []
    key = [("entries scanned", number(metrics.get("n_scanned"), ",d")),
           ("AUC (signal vs background)", number(metrics.get("auc")))]
    for eb, v in (metrics.get("signal_efficiency") or {}).items():
        if isinstance(v.get("value"), float):
            parts.append(f"eps_S at eps_B={eb}: {v['value']:.3f}")
            key.append((f"εS at εB = {eb}", with_error(v["value"], v.get("uncertainty"),
                                                        ".3f")))
    ranked = (metrics.get("ranked") or {}).get("csv")
    lines = [", ".join(parts) if parts else f"{metrics.get('n_scanned')} entries scanned",
             f"most anomalous entries: {ranked}", f"report: {run_dir / 'report.html'}"]
    return Summary(lines=tuple(lines), key_metrics=_job_rows(key))
