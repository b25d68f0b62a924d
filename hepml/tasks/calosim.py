"""Task ``calosim``: learn calorimeter showers with a generator and check it against them.

``hepml run workflows/calogan.yaml`` (a CaloGAN) or ``hepml run workflows/caloflow.yaml``
(CaloFlow, two normalizing flows):

1. reads the showers (hepml ROOT files, CaloGAN HDF5 or calorimeter-challenge HDF5) and
   splits them into training, validation and test showers with the workflow seed;
2. trains the generator with the shared trainer (checkpoints every epoch, ``--resume``),
   the best epoch chosen by the validation loss (the CaloGAN's moment distance, the
   flows' negative log-likelihood);
3. generates one shower for every test shower, at the same incident energy and particle,
   and compares the two samples as the calorimeter challenge does: the CaloGAN
   shower-shape observables and their separation powers, a classifier two-sample test on
   the high-level observables and one on the cells divided by the incident energy (low
   level; AUC 0.5 means indistinguishable), each beside its floor (the same test between
   two halves of the test showers), and the energy response and resolution against
   incident energy;
4. times the generator, writes the generated showers, plots, ``metrics.json`` and the report.

``hepml simulate --checkpoint C --energy 50 --n 100000 --out showers.root`` then generates
showers on demand (:func:`simulate`), in batches, on the best device.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
import warnings
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepml import evaluation
from hepml.config import WorkflowConfig, from_mapping, to_dict
from hepml.errors import CheckpointError, ConfigError, EmptyInputError
from hepml.evaluation.showers import MIN_SHOWERS, high_level_names
from hepml.io import expand_files
from hepml.io.calo import CALOGAN, PARTICLES, CaloLayout, Showers
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.models.calogan import EnergyRangeWarning
from hepml.representations.calo_layers import particle_indices, shower_tensors
from hepml.tasks._job import JobResult, Summary, number, rows
from hepml.tasks.rundir import open_run_dir
from hepml.training import ChunkedDataset, Trainer, distributed, resolve_device
from hepml.training.checkpoint import load_checkpoint
from hepml.training.splits import SPLIT_NAMES, assign_split, split_seed

log = logging.getLogger(__name__)

__all__ = ["CaloSimConfig", "load_showers", "run", "simulate", "load_generator",
           "generation_speed", "compare", "GOAL_AUC"]

#: The classifier AUC on high-level observables that a good generator stays under.
GOAL_AUC = 0.75
#: The low-level classifier's options unless ``calosim.classifier_low_level`` says otherwise.
LOW_LEVEL_CLASSIFIER = {"hidden": (256, 256), "epochs": 30}
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


def low_level_features(showers: Showers) -> torch.Tensor:
    """The calorimeter challenge's low-level classifier inputs: ``log10 E`` and every cell / E."""
    cells = np.concatenate([x.reshape(len(x), -1) for x in showers.layers], axis=1)
    energy = showers.energy.astype(np.float64).reshape(-1, 1)
    return torch.from_numpy(np.concatenate([np.log10(energy), cells / energy], axis=1)
                            .astype(np.float32))


def classifier_tests(reference: Showers, generated: Showers, comparison: Mapping[str, Any], *,
                     calo: CaloSimConfig, device: torch.device, seed: int) -> dict[str, Any]:
    """The high- and low-level classifier tests beside their floors.

    A floor is the same test between two random halves of the reference (test) showers:
    what the classifier reaches when the two samples do come from one simulation, at half
    the statistics.
    """
    names = list(high_level_names(len(reference.layers)))
    obs = comparison["observables"]
    high = {k: evaluation.high_level_features(obs[k], names)[0]
            for k in ("reference", "generated")}
    low = {"reference": low_level_features(reference), "generated": low_level_features(generated)}
    half = np.random.default_rng(seed + 2).permutation(len(reference))
    a, b = (torch.from_numpy(np.sort(h)) for h in (half[: len(half) // 2],
                                                     half[len(half) // 2:]))
    low_opts = {**LOW_LEVEL_CLASSIFIER, **calo.classifier_low_level}
    high_opts = {k: v for k, v in calo.classifier.items() if k != "log_features"}
    out: dict[str, Any] = {}
    for key, x, opts in (("classifier_floor", high, high_opts),
                         ("classifier_low_level", low, low_opts),
                         ("classifier_low_level_floor", low, low_opts)):
        ref, gen = ((x["reference"][a], x["reference"][b]) if key.endswith("floor")
                    else (x["reference"], x["generated"]))
        if min(len(ref), len(gen)) < MIN_SHOWERS:
            out[key] = {"skipped": f"{len(ref)} and {len(gen)} showers; the test needs "
                                   f"{MIN_SHOWERS} per sample"}
            continue
        res = evaluation.classifier_two_sample_test(ref.to(device), gen.to(device),
                                                    device=device, **opts)
        out[key] = {"auc": res["auc"], "auc_interval": [float(v) for v in res["auc_interval"]],
                    "n_test": res["n_test"], "n_features": res["n_features"],
                    "epochs_run": res["epochs_run"]}
    out["classifier_low_level"]["definition"] = (
        "MLP two-sample test on log10(E) and every cell divided by E (the calorimeter "
        "challenge's low-level classifier)")
    for key in ("classifier_floor", "classifier_low_level_floor"):
        out[key]["definition"] = ("the same test between two random halves of the test "
                                  "showers: the floor a perfect generator reaches")
    return out


def resolution_agreement(response: Mapping[str, Any]) -> dict[str, Any]:
    """Generated σ/E over the reference's σ/E in each incident-energy bin."""
    ref, gen = response["reference"], response["generated"]
    ratios = []
    for r, g, n in zip(ref["resolution"], gen["resolution"], ref["count"], strict=True):
        ratios.append(float(g / r) if r > 0 and n >= 10 else None)
    valid = [abs(v - 1) for v in ratios if v is not None]
    return {"ratio_per_bin": ratios, "max_deviation": max(valid) if valid else None,
            "within_20_percent": bool(valid) and max(valid) <= 0.2,
            "definition": "generated resolution (std/mean of E_tot/E) over the reference's, "
                          "per incident-energy bin with at least 10 reference showers"}


@torch.no_grad()
def generate_like(model: torch.nn.Module, energy: np.ndarray, particle_index: np.ndarray, *,
                  device: torch.device, batch_size: int, seed: int, progress: bool = False
                  ) -> tuple[np.ndarray, ...]:
    """One generated shower per (energy, particle index), layers as numpy arrays in GeV.

    Energies outside the trained range are generated without a warning: callers check
    their energies on the host and warn.
    """
    from tqdm.auto import tqdm

    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[list[np.ndarray]] = []
    with tqdm(total=len(energy), unit="shower", unit_scale=True, disable=not progress,
              desc="generating") as bar:
        for a in range(0, len(energy), batch_size):
            e = torch.as_tensor(energy[a:a + batch_size], dtype=torch.float32, device=device)
            p = torch.as_tensor(particle_index[a:a + batch_size], device=device)
            out.append([x.cpu().numpy()
                        for x in model.sample(e, p, generator=gen, check_range=False)])
            bar.update(len(e))
    return tuple(np.concatenate([b[i] for b in out]) for i in range(len(out[0])))


def generation_speed(model: torch.nn.Module, *, device: torch.device, batch_sizes: Sequence[int],
                     energy: float = 50.0, particle_index: int = 0, min_seconds: float = 0.3,
                     repeat: int = 3) -> dict[int, float]:
    """Showers per second of the generator at each batch size.

    The best of ``repeat`` timings, each calling the generator for at least
    ``min_seconds``, after one warm-up call; no gradients.
    """
    model.eval()
    speeds: dict[int, float] = {}
    for bs in batch_sizes:
        e = torch.full((bs,), energy, device=device)
        p = torch.full((bs,), particle_index, device=device, dtype=torch.long)
        model.sample(e, p, check_range=False)  # warm-up
        best = 0.0
        for _ in range(repeat):
            n, t0 = 0, time.perf_counter()
            while True:
                model.sample(e, p, check_range=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                n += bs
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
            best = max(best, n / dt)
        speeds[bs] = best
    return speeds


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
    half = np.random.default_rng(cfg.seed + 2).permutation(len(test_s))
    ref_obs = comparison["observables"]["reference"]
    a, b = (torch.from_numpy(np.sort(h)) for h in (half[: len(half) // 2], half[len(half) // 2:]))
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


# ------------------------------------------------------------------------ hepml compare
def compare(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
            names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Several calosim runs side by side, on the same test showers.

    The runs must have read the same files (checksums and entries) with the same split, so
    that every generator was compared with the same test showers; otherwise the
    comparison is refused. Writes ``comparison.json`` and ``comparison.md`` (a table) to
    ``out_dir``.

    Returns:
        Name → the row: generator, classifier AUCs (high-level, low-level) with their
        intervals and floors, mean separation power and its floor, the largest resolution
        deviation, showers/s per batch size and device, training seconds and parameters.
    """
    import json

    from hepml.io.atomic import check_writable, write_json, write_text

    if not run_dirs:
        raise ConfigError("compare: give at least one run directory")
    out_dir = Path(out_dir)
    check_writable(out_dir)
    rows: dict[str, dict[str, Any]] = {}
    reference: tuple[Any, ...] | None = None
    for k, run_dir in enumerate(map(Path, run_dirs)):
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            inputs = json.loads((run_dir / "inputs.json").read_text())
            split = np.load(run_dir / "split.npy")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{run_dir}: not a finished calosim run ({exc})") from None
        if metrics.get("task") != "calosim":
            raise ConfigError(f"{run_dir}: a {metrics.get('task')!r} run; compare calosim runs "
                              "with calosim runs")
        data = ([(i.get("checksum"), i.get("entries")) for i in inputs], split)
        if reference is None:
            reference = data
        elif data[0] != reference[0] or not np.array_equal(data[1], reference[1]):
            raise ConfigError(f"{run_dir}: its test showers are not those of {run_dirs[0]} "
                              "(other files or another split); compare runs of the same data "
                              "and seed")
        name = (names[k] if names and k < len(names)
                else f"{metrics.get('generator', 'calogan')} ({run_dir.name})")

        def auc(key: str, m: Mapping[str, Any] = metrics) -> dict[str, Any]:
            c = m.get(key) or {}
            return {"auc": c.get("auc"), "interval": c.get("auc_interval")}

        rows[name] = {
            "run": str(run_dir), "generator": metrics.get("generator", "calogan"),
            "n_test": (metrics.get("n_showers") or {}).get("test"),
            "classifier_high_level": auc("classifier"),
            "classifier_high_level_floor": auc("classifier_floor"),
            "classifier_low_level": auc("classifier_low_level"),
            "classifier_low_level_floor": auc("classifier_low_level_floor"),
            "mean_separation_power": metrics.get("mean_separation_power"),
            "separation_power_floor_mean": metrics.get("separation_power_floor_mean"),
            "resolution_max_deviation": (metrics.get("resolution_agreement") or {}).get(
                "max_deviation"),
            "showers_per_s": (metrics.get("generation") or {}).get("showers_per_s"),
            "device": (metrics.get("generation") or {}).get("device"),
            "training_seconds": (metrics.get("training") or {}).get("seconds"),
            "parameters": (metrics.get("training") or {}).get("parameters"),
        }
    batches = sorted({b for r in rows.values() for b in (r["showers_per_s"] or {})}, key=int)
    head = ["generator", "AUC high-level", "floor", "AUC low-level", "floor",
            "mean sep. power (floor)", "max σ/E deviation",
            *(f"showers/s @ {b}" for b in batches), "training s"]

    def cell(d: dict[str, Any]) -> str:
        if d.get("auc") is None:
            return "n/a"
        lo, hi = d.get("interval") or (None, None)
        return f"{d['auc']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        speeds = r["showers_per_s"] or {}
        lines.append("| " + " | ".join([
            name, cell(r["classifier_high_level"]), cell(r["classifier_high_level_floor"]),
            cell(r["classifier_low_level"]), cell(r["classifier_low_level_floor"]),
            f"{number(r['mean_separation_power'])} ({number(r['separation_power_floor_mean'])})",
            number(r["resolution_max_deviation"], ".3f"),
            *(number(speeds.get(b), ",.0f") for b in batches),
            number(r["training_seconds"], ".0f")]) + " |")
    table = "\n".join(lines) + "\n"
    write_json(out_dir / "comparison.json", rows)
    write_text(out_dir / "comparison.md", table)
    return rows


# ------------------------------------------------------------------------ hepml simulate
def load_generator(checkpoint: str | Path, *, device: str | torch.device = "auto"
                   ) -> tuple[torch.nn.Module, torch.device]:
    """The trained generator (CaloGAN or CaloFlow) of ``checkpoint`` on ``device``.

    ``device="auto"`` takes the best one.
    """
    device = resolve_device(device, what="--device") if isinstance(device, str) else device
    state = load_checkpoint(checkpoint, map_location="cpu")
    spec = state.get("model") or {}
    if spec.get("kind") not in GENERATORS:
        raise CheckpointError(f"{checkpoint}: holds a {spec.get('kind')!r} model, not a "
                              f"shower generator ({', '.join(GENERATORS)})")
    model = build_model(spec["kind"], **spec["kwargs"])
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), device


def simulate(checkpoint: str | Path, out: str | Path, *, n: int, energy: float | None = None,
             energy_range: tuple[float, float] | None = None, particle: str | int | None = None,
             batch_size: int = 1024, device: str = "auto", seed: int = 0,
             progress: bool = True, warn: Callable[[str], None] | None = None
             ) -> tuple[Path, dict[str, Any]]:
    """Generate ``n`` showers with a trained generator and write them.

    Args:
        checkpoint: A ``calosim`` run's ``checkpoint_best.pt``.
        out: Output file: ``.root`` (hepml's CaloGAN layout), ``.h5``/``.hdf5`` (CaloGAN
            HDF5) or ``.challenge.h5`` (calorimeter-challenge HDF5).
        n: Number of showers.
        energy: One incident energy (GeV) for all showers ...
        energy_range: ... or a range (GeV) to draw uniformly from; default: the trained range.
        particle: Name or PDG id; needed when the generator knows several particles.
        batch_size: Showers per generator call.
        device: ``auto`` (cuda, then mps, then cpu) or a torch device.
        seed: Seed of the energies and the latent vectors.
        progress: Show a progress bar.
        warn: Called with the message when energies lie outside the trained range (before
            generating); default: an :class:`EnergyRangeWarning`.

    Returns:
        The path written and a summary (counts, energies, seconds, showers/s).
    """
    from hepml.io.atomic import check_writable
    from hepml.io.calo import (
        parse_particle,
        write_calochallenge_hdf5,
        write_calogan_hdf5,
        write_showers,
    )

    if n < 1:
        raise ConfigError(f"--n must be positive, got {n}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    if energy is not None and energy <= 0:
        raise ConfigError(f"--energy must be positive (GeV), got {energy}")
    check_writable(Path(out).parent)
    model, dev = load_generator(checkpoint, device=device)
    lo, hi = (float(v) for v in model.energy_range)
    if energy is None:
        lo_r, hi_r = energy_range if energy_range is not None else (lo, hi)
        if not 0 < lo_r <= hi_r:
            raise ConfigError(f"energy range [{lo_r}, {hi_r}] GeV is not valid")
    pdg = parse_particle(particle) if particle is not None else model.particles[0]
    if particle is None and len(model.particles) > 1:
        names = {v: k for k, v in PARTICLES.items()}
        raise ConfigError("this generator knows several particles "
                          f"({', '.join(names.get(p, str(p)) for p in model.particles)}): "
                          "choose one with --particle")
    try:
        pidx = int(particle_indices(np.array([pdg]), model.particles, source=str(checkpoint))[0])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    rng = np.random.default_rng(seed)
    energies = (np.full(n, energy, dtype=np.float32) if energy is not None
                else rng.uniform(lo_r, hi_r, n).astype(np.float32))
    outside = (energies < lo * (1 - 1e-6)) | (energies > hi * (1 + 1e-6))
    if outside.any():
        message = (f"{int(outside.sum())} of {n} requested energies lie outside the trained "
                   f"range [{lo:g}, {hi:g}] GeV; generating anyway, the generator "
                   "extrapolates there")
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, EnergyRangeWarning, stacklevel=2)
    t0 = time.perf_counter()
    layers = generate_like(model, energies, np.full(n, pidx, dtype=np.int64), device=dev,
                           batch_size=batch_size, seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    showers = Showers(energies, layers, np.zeros((n, len(layers)), np.float32),
                      np.full(n, pdg, np.int32), source="generated")
    out = Path(out)
    name = out.name.lower()
    if name.endswith(".challenge.h5") or name.endswith(".challenge.hdf5"):
        path = write_calochallenge_hdf5(out, showers)
    elif name.endswith((".h5", ".hdf5")):
        path = write_calogan_hdf5(out, showers)
    else:
        path = write_showers(out, showers, metadata={
            "generator": str(checkpoint), "seed": seed, "n": n, "particle": pdg,
            "energy": energy, "energy_range": list(energy_range) if energy_range else [lo, hi],
            "device": str(dev), "note": "overflow is not generated (zeros)"})
    summary = {"n": n, "particle": pdg, "energy_min": float(energies.min()),
               "energy_max": float(energies.max()), "seconds": seconds,
               "showers_per_s": n / max(seconds, 1e-9), "device": str(dev),
               "n_outside_trained_range": int(outside.sum())}
    return path, summary
