"""``hepml run`` of a calosim workflow: train, generate, compare, report."""

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
from hepml.io import expand_files
from hepml.io.calo import CaloLayout, Showers
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.representations.calo_layers import particle_indices, shower_tensors
from hepml.tasks._job import JobResult, Summary, number, rows
from hepml.tasks.calosim.data import (
    CaloSimConfig,
    _dataset,
    _model_kind,
    cell_layout,
    load_showers,
    parameter_counts,
)
from hepml.tasks.calosim.evaluate import (
    classifier_tests,
    reference_halves,
    resolution_agreement,
)
from hepml.tasks.calosim.generate import generate_like, generation_speed
from hepml.tasks.rundir import open_run_dir
from hepml.training import Trainer, distributed, resolve_device
from hepml.training.splits import SPLIT_NAMES, assign_split, split_seed

log = logging.getLogger(__name__)

__all__ = ["GOAL_AUC", "run", "summarise"]

#: The classifier AUC on high-level observables that a good generator stays under.
GOAL_AUC = 0.75


def run(cfg: WorkflowConfig, *, resume: str | Path | None = None) -> JobResult:
    """Train the generator of workflow ``cfg`` and compare it with the test showers.

    Returns:
        The run directory.
    """
    t_start = time.perf_counter()
    torch.manual_seed(cfg.seed)
    calo = from_mapping(CaloSimConfig, cfg.calosim, where="calosim")
    distributed.init_from_env(resolve_device(cfg.training.device),
                               timeout_s=cfg.training.distributed_timeout)
    if cfg.training.num_threads:
        torch.set_num_threads(cfg.training.num_threads)
    files = expand_files(cfg.data.files)
    showers, entries = load_showers(files, tree=cfg.data.tree, particle=calo.particle,
                                    layer_shapes=calo.layer_shapes,
                                    max_entries=cfg.data.max_entries)
    layout = cell_layout(calo.layout, showers.shapes)
    particles = sorted(set(showers.particle.tolist()))
    split = assign_split(len(showers), cfg.data.split, split_seed(cfg.data, cfg.seed))
    counts = np.bincount(split, minlength=3)
    if counts[0] < 100 or counts[1] < 1 or counts[2] < 100:
        parts = dict(zip(SPLIT_NAMES, counts.tolist(), strict=True))
        raise EmptyInputError(
            f"{', '.join(files)}: {len(showers)} showers give {parts} after data.split; "
            "training and test need at least 100 showers each (the comparison needs "
            "statistics) and validation at least one. Use more showers or change data.split")
    train_s, val_s, test_s = (showers.select(split == k) for k in range(3))
    # sized from the training showers: layout, particles, energy range
    model_spec = size_model(_model_kind(cfg.model), cfg.model, train_s.shapes,
                            particles=particles,
                            energy_range=(train_s.energy.min(), train_s.energy.max()),
                            source="the training showers")
    run_config = to_dict(cfg)
    run_config["model"] = {"kind": model_spec["kind"], **model_spec["kwargs"]}
    run_config["calosim"] = to_dict(calo)
    run_dir = open_run_dir(cfg.runs_dir, cfg.name, resume=resume, run_config=run_config,
                           paths=files, entries=entries, split=split)
    log.info("%d showers from %d file(s) (%s); particles %s; %s", len(showers), len(files),
             ", ".join(f"{n} {s}" for n, s in zip(counts, SPLIT_NAMES, strict=True)),
             particles,
             f"incident energy {showers.energy.min():.3g}-{showers.energy.max():.3g} GeV")

    model = build_model(model_spec["kind"], **model_spec["kwargs"])
    if not resume:
        model.initialise_from(*shower_tensors(train_s, particles)[:2])
    trainer = Trainer(model, cfg.training, run_dir=run_dir, model_spec=model_spec,
                      run_config=run_config, seed=cfg.seed, unit="shower")
    n_params = parameter_counts(model)
    log.info("%s: %s parameters; device %s", model_spec["kind"],
             ", ".join(f"{k} {v:,}" for k, v in n_params.items()), trainer.device)
    bs, step = cfg.training.batch_size, cfg.data.step_size
    train = _dataset(train_s, particles, batch_size=bs, shuffle=True, seed=cfg.seed, step=step)
    val = _dataset(val_s, particles, batch_size=bs, shuffle=False, seed=cfg.seed, step=step)
    t_train = time.perf_counter()
    history = trainer.fit(train, val, resume=bool(resume))
    train_seconds = time.perf_counter() - t_train
    trainer.load_best()
    if not distributed.is_main_process():
        return JobResult(run_dir, cfg.task)
    device = trainer.device
    gen_model = trainer.module

    # one generated shower per test shower, same energy and particle
    from hepml.io.calo import write_showers

    pidx = particle_indices(test_s.particle, particles)
    t_gen = time.perf_counter()
    layers = generate_like(gen_model, test_s.energy, pidx, device=device,
                           batch_size=calo.generate_batch_size, seed=cfg.seed + 1)
    gen_seconds = time.perf_counter() - t_gen
    generated = Showers(test_s.energy, layers, np.zeros_like(test_s.overflow), test_s.particle,
                        source="generated")
    write_showers(run_dir / "generated_showers.root", generated,
                  metadata={"workflow": cfg.name, "checkpoint": str(run_dir / "checkpoint_best.pt"),
                            "note": "one shower per test shower, "
                                    "same incident energy and particle"})
    comparison = evaluation.compare_showers(
        test_s, generated, layout=layout, bins=calo.bins, classifier=calo.classifier or None,
        device=device, threshold=calo.sparsity_threshold, response_bins=calo.energy_bins)
    # the statistical floor: the same comparison between two halves of the test showers
    ref_obs = comparison["observables"]["reference"]
    a, b = reference_halves(len(test_s), cfg.seed)
    floor = evaluation.separation_powers({k: v[a] for k, v in ref_obs.items()},
                                         {k: v[b] for k, v in ref_obs.items()}, bins=calo.bins)
    speeds = generation_speed(gen_model, device=device, batch_sizes=calo.timing_batches,
                              energy=float(np.median(test_s.energy)))
    summary = comparison["summary"]
    if comparison["classifier"] is not None:
        summary.update(classifier_tests(test_s, generated, comparison, calo=calo,
                                        device=device, seed=cfg.seed))
    resolution = resolution_agreement(summary["response"])
    auc = (summary.get("classifier") or {}).get("auc")
    # a diagnostic: the same test on the longitudinal energy observables alone
    n_layers = len(test_s.layers)
    longitudinal = [*(f"E_{i}" for i in range(n_layers)), "E_tot", "response",
                    *(f"f_{i}" for i in range(n_layers)), "depth", "depth_width"]
    obs = comparison["observables"]
    if comparison["classifier"] is not None:
        x_ref, _ = evaluation.high_level_features(obs["reference"], longitudinal)
        x_gen, _ = evaluation.high_level_features(obs["generated"], longitudinal)
        clf = evaluation.classifier_two_sample_test(
            x_ref.to(device), x_gen.to(device), device=device,
            **{k: v for k, v in calo.classifier.items() if k != "log_features"})
        summary["classifier_longitudinal"] = {
            "auc": clf["auc"], "auc_interval": [float(v) for v in clf["auc_interval"]],
            "features": longitudinal, "n_test": clf["n_test"],
            "definition": "the classifier two-sample test on the longitudinal energy "
                          "observables only (layer energies and fractions, total energy, "
                          "response, shower depth and its width): a diagnostic, not the goal"}
    metrics: dict[str, Any] = {
        "task": "calosim",
        "generator": model_spec["kind"],
        "n_showers": {s: int(c) for s, c in zip(SPLIT_NAMES, counts, strict=True)},
        "particles": particles,
        "energy_range_gev": [float(showers.energy.min()), float(showers.energy.max())],
        **summary,
        "separation_power_floor": floor,
        "separation_power_floor_mean": float(np.mean(list(floor.values()))),
        "separation_power_floor_definition": (
            "separation power between two random halves of the test showers: what statistics "
            "alone give at this sample size"),
        "resolution_agreement": resolution,
        "goal": {"statement": f"classifier AUC on high-level observables <= {GOAL_AUC}",
                 "met": bool(isinstance(auc, float) and auc <= GOAL_AUC)},
        "generation": {"showers_per_s": {str(k): v for k, v in speeds.items()},
                       "device": str(device),
                       "test_sample_seconds": gen_seconds},
        "training": {"epochs_run": len(history), "best_epoch": trainer.best_epoch,
                     "best_val_loss": trainer.best_val_loss, "parameters": n_params,
                     "device": str(device), "mixed_precision": trainer.amp,
                     "seconds": train_seconds},
    }
    plots = _plots(run_dir, test_s, generated, comparison, layout)
    if history:
        plots += evaluation.plot_history(history, run_dir / "history")
    metrics["timing"] = {"total_s": time.perf_counter() - t_start}
    evaluation.write_metrics_json(run_dir / "metrics.json", metrics)
    sep = summary.get("separation_power", {})
    extra = {"goal": metrics["goal"],
             "separation power per observable (generated vs test; floor: test half vs half)": [
                 {"observable": k, "separation power": v, "floor": floor.get(k)}
                 for k, v in sorted(sep.items(), key=lambda kv: -kv[1])],
             "generation speed (showers/s)": metrics["generation"]["showers_per_s"],
             "training": metrics["training"]}
    summary = summarise(metrics, run_dir)
    title = {"calogan": "CaloGAN", "caloflow": "CaloFlow"}[model_spec["kind"]]
    evaluation.write_report(run_dir, title=f"{cfg.name}: {title} fast calorimeter simulation",
                            metrics={k: v for k, v in metrics.items()
                                     if k not in ("separation_power", "separation_power_floor")},
                            config=run_config,
                            plots=[p for p in plots if str(p).endswith(".png")],
                            extra_tables=extra, key_metrics=summary.key_metrics)
    return JobResult(run_dir, cfg.task, summary, metrics)


def summarise(metrics: Mapping[str, Any], run_dir: Path) -> Summary:
    """The run's summary: classifier AUCs, separation powers, generator speed, the goal."""
    def auc(key: str) -> tuple[Any, str]:
        clf = metrics.get(key) or {}
        lo, hi = (clf.get("auc_interval") or [None, None])[:2]
        band = f" [{number(lo, '.3f')}, {number(hi, '.3f')}]" if lo is not None else ""
        return clf.get("auc"), band

    (high, band), (low, low_band) = auc("classifier"), auc("classifier_low_level")
    (high_floor, _), (low_floor, _) = auc("classifier_floor"), auc("classifier_low_level_floor")
    lines = [f"classifier AUC generated vs test showers (high-level observables): "
             f"{number(high, '.3f')}{band} (floor, test half vs half: "
             f"{number(high_floor, '.3f')})"]
    if isinstance(low, float):
        lines.append(f"classifier AUC generated vs test showers (low level, cells / E): "
                     f"{number(low, '.3f')}{low_band} (floor {number(low_floor, '.3f')})")
    lon = (metrics.get("classifier_longitudinal") or {}).get("auc")
    if isinstance(lon, float):
        lines.append(f"classifier AUC on the longitudinal energy observables alone: "
                     f"{number(lon, '.3f')}")
    mean = metrics.get("mean_separation_power")
    floor = metrics.get("separation_power_floor_mean")
    if isinstance(mean, float):
        lines.append(f"mean separation power {number(mean)} (floor from test halves "
                     f"{number(floor)})")
    speeds = (metrics.get("generation") or {}).get("showers_per_s") or {}
    if speeds:
        lines.append("generator: " + ", ".join(f"{v:,.0f} showers/s at batch {k}"
                                              for k, v in speeds.items()))
    goal = metrics.get("goal")
    if goal:
        lines.append(f"goal {'met' if goal['met'] else 'NOT met'}: {goal['statement']}")
    lines += [f"generated showers: {run_dir / 'generated_showers.root'}",
              f"report: {run_dir / 'report.html'}"]
    res = (metrics.get("resolution_agreement") or {}).get("max_deviation")
    if isinstance(res, float):
        lines.append(f"generated resolution within {100 * res:.0f} % of the reference's in "
                     "every energy bin")
    fastest = max(speeds.values()) if speeds else None
    key = rows([
        ("classifier AUC, generated vs test (high-level)", number(high, ".3f") + band),
        ("classifier AUC floor (high-level, test half vs half)", number(high_floor, ".3f")),
        ("classifier AUC, generated vs test (low-level)", number(low, ".3f") + low_band),
        ("classifier AUC floor (low-level, test half vs half)", number(low_floor, ".3f")),
        ("classifier AUC, longitudinal observables", number(lon, ".3f")),
        ("largest resolution deviation per energy bin", number(res, ".3f")),
        ("mean separation power", number(mean)),
        ("separation power floor (test half vs half)", number(floor)),
        ("generation (showers/s, fastest batch)", number(fastest, ",.0f")),
        ("goal", ("met" if goal["met"] else "NOT met") if goal else "n/a"),
    ])
    return Summary(lines=tuple(lines), key_metrics=key)


def _plots(run_dir: Path, reference: Showers, generated: Showers, comparison: dict[str, Any],
           layout: CaloLayout) -> list[Path]:
    from hepml.evaluation import shower_plots

    obs = comparison["observables"]
    sep = comparison["summary"].get("separation_power", {})
    plots = shower_plots.plot_observables(obs["reference"], obs["generated"],
                                          run_dir / "observables", separation=sep,
                                          labels=("test (reference)", "generated"))
    plots += shower_plots.plot_average_showers(reference.layers, generated.layers,
                                               run_dir / "average_showers", layout=layout)
    plots += shower_plots.plot_response(comparison["response"]["reference"],
                                        comparison["response"]["generated"], run_dir / "response")
    plots += shower_plots.plot_separation_powers(sep, run_dir / "separation_powers")
    plots += shower_plots.plot_shower_examples(generated.layers, generated.energy,
                                               run_dir / "generated_examples", n=2, layout=layout)
    plots += shower_plots.plot_shower_examples(reference.layers, reference.energy,
                                               run_dir / "reference_examples", n=2, layout=layout)
    return plots
