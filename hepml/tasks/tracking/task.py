"""``task: tracking``: read hits, train a tracker, find tracks in every event, evaluate.

Flow (see ``docs/tracking.md``):

1. :class:`hepml.io.Source` reads the ``hits`` tree in chunks of ``data.step_size``
   events; each event is assigned to train/validation/test by the workflow seed.
2. The representation builds training examples from the events of a split: hit graphs
   with edge labels (GNN) or next-hit prefixes of true tracks (LSTM).
3. The shared :class:`hepml.training.Trainer` trains with the model's own loss (edge
   binary cross-entropy, Gaussian likelihood of the next hit).
4. The best model finds tracks in every event (edge scores -> walkthrough or connected
   components; or triplet seeds -> LSTM track following); the track id of every hit is
   written as a friend tree (one entry per event, ``hit_track_id`` per hit).
5. The test events are evaluated on the model's device: track efficiency, fake and
   duplicate rates, the TrackML score, efficiency vs pT and η, edge efficiency, purity and
   ROC for the GNN; plots, ``metrics.json`` and ``report.html``.
"""

from __future__ import annotations

import dataclasses
import logging
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml import evaluation, representations
from hepml.config import DataConfig, WorkflowConfig, from_mapping, to_dict
from hepml.errors import ConfigError, EmptyInputError, HepmlError, UnknownKeyError
from hepml.evaluation import tracking as trk
from hepml.evaluation import tracking_plots
from hepml.io import Source, write_friend_tree
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.models.hit_gnn import edge_loss
from hepml.models.lstm_tracker import gaussian_nll
from hepml.representations.hit_graphs import HitGraphConfig, HitGraphs
from hepml.representations.hits import HitArrays
from hepml.representations.track_sequences import TrackSequenceConfig, TrackSequences
from hepml.tasks._job import JobResult, Summary, number, rows, with_error
from hepml.tasks.rundir import open_run_dir
from hepml.tasks.tracking.graph_building import tracks_from_edges
from hepml.tasks.tracking.lstm_following import find_seeds, follow_tracks
from hepml.training import ChunkedDataset, Trainer, distributed, resolve_device, to_device
from hepml.training.splits import SPLIT_NAMES, assign_split, split_seed

log = logging.getLogger(__name__)

__all__ = ["TrackingConfig", "TrackingData", "run", "find_tracks", "PARTICLE_TRUTH"]

#: Per-particle truth read for the evaluation.
PARTICLE_TRUTH = ("particle_id", "particle_pt", "particle_eta", "particle_nhits", "particle_vz")

_REPRESENTATIONS = {
    "hit_graph": (HitGraphConfig, HitGraphs, ("x", "edges", "edge_attr"), "y",
                  "interaction_network", edge_loss),
    "track_sequence": (TrackSequenceConfig, TrackSequences, ("x", "lengths"), "target",
                       "lstm_tracker", gaussian_nll),
}


@dataclasses.dataclass(frozen=True)
class TrackingConfig:
    """The ``tracking:`` section: how tracks are built and how they are scored.

    Attributes:
        edge_threshold: GNN: edges with a score at or above this are kept.
        method: GNN: ``walkthrough`` (follow the best kept edge from each track start) or
            ``components`` (connected components of the kept edges).
        skip_penalty: Walkthrough: an edge that skips ``n`` layers is tried as if its
            score were lower by ``n * skip_penalty``, so that of two kept edges of one
            particle the one that keeps the hit in between comes first.
        gate: LSTM: a hit is compatible with the prediction when it lies within ``gate``
            standard deviations in φ and in z.
        max_skip: LSTM: layers without a compatible hit a track may skip.
        min_track_hits: Candidates with fewer hits are dropped.
        min_pt: Particles above this pT (GeV) define the efficiency and the pT-restricted
            TrackML score.
        min_hits: Particles need at least this many hits to count as reconstructable.
        max_abs_eta: Optional |η| limit of reconstructable particles.
        pt_bins: Bin edges (GeV) of the efficiency-vs-pT plot.
        eta_bins: Bin edges of the efficiency-vs-η plot.
        event_displays: Test events drawn in x-y and r-z.
        inference_batch: Events per batch of the GNN's inference.
    """

    edge_threshold: float = 0.5
    method: typing.Literal["walkthrough", "components"] = "walkthrough"
    skip_penalty: float = 0.3
    gate: float = 3.0
    max_skip: int = 1
    min_track_hits: int = 4
    min_pt: float = 1.0
    min_hits: int = 5
    max_abs_eta: float | None = None
    pt_bins: tuple[float, ...] = (0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0, 20.0, 50.0)
    eta_bins: tuple[float, ...] = (-2.5, -2.0, -1.5, -1.0, -0.5, 0.0, 0.5, 1.0, 1.5, 2.0, 2.5)
    event_displays: int = 1
    inference_batch: int = 4

    def __post_init__(self) -> None:
        if not 0 < self.edge_threshold < 1:
            raise ConfigError("tracking.edge_threshold must lie in (0, 1), "
                              f"got {self.edge_threshold}")
        if self.skip_penalty < 0:
            raise ConfigError(f"tracking.skip_penalty must be >= 0, got {self.skip_penalty}")
        if self.gate <= 0:
            raise ConfigError(f"tracking.gate must be positive, got {self.gate}")
        for name in ("max_skip", "event_displays"):
            if getattr(self, name) < 0:
                raise ConfigError(f"tracking.{name} must be >= 0, got {getattr(self, name)}")
        for name in ("min_track_hits", "min_hits", "inference_batch"):
            if getattr(self, name) < 1:
                raise ConfigError(f"tracking.{name} must be >= 1, got {getattr(self, name)}")
        for name in ("pt_bins", "eta_bins"):
            edges = np.asarray(getattr(self, name))
            if len(edges) < 2 or np.any(np.diff(edges) <= 0):
                raise ConfigError(f"tracking.{name} must be at least two increasing bin edges")


def _kind(cfg: WorkflowConfig) -> str:
    kind = cfg.representation.get("kind", "hit_graph")
    if kind not in _REPRESENTATIONS:
        raise UnknownKeyError(kind, _REPRESENTATIONS, where="representation.kind")
    return kind


def build_representation(spec: dict[str, Any]) -> Any:
    """The tracking representation named by ``spec["kind"]``."""
    return representations.build_representation(spec, default="hit_graph",
                                                kinds=tuple(_REPRESENTATIONS))


class TrackingData:
    """Chunks of events with hits and truth, split into train/validation/test by event.

    Args:
        data: The workflow's data section (``labels`` are not used).
        representation: Hit graphs or track sequences.
        kind: The representation's name.
        seed: Seed of the split.
    """

    def __init__(self, data: DataConfig, representation: Any, kind: str, *, seed: int) -> None:
        self.config = data
        self.representation = representation
        self.kind = kind
        fields = list(representation.required_fields)
        fields += [f for f in ("hit_particle_id", *PARTICLE_TRUTH) if f not in fields]
        self.source = Source(data.files, data.tree, fields, branches=data.branches,
                             step_size=data.step_size, max_entries=data.max_entries,
                             min_chunks_per_file=distributed.world_size())
        self.split = assign_split(self.source.num_entries, data.split, split_seed(data, seed))
        self._arrays: dict[int, ak.Array] = {}

    def arrays(self, i: int) -> ak.Array:
        """The events of chunk ``i`` (cached)."""
        if i not in self._arrays:
            self._arrays[i] = self.source.read(self.source.chunks[i])
        return self._arrays[i]

    def where(self, i: int) -> str:
        """File and entry range of chunk ``i``, for error messages."""
        spec = self.source.chunks[i]
        return f"{spec.path} entries {spec.entry_start}-{spec.entry_stop}"

    def chunk_split(self, i: int) -> np.ndarray:
        """Split id of each event of chunk ``i``."""
        spec = self.source.chunks[i]
        return self.split[spec.global_start:spec.global_start + len(spec)]

    def examples(self, i: int, which: int) -> tuple[torch.Tensor, ...]:
        """Training examples (inputs..., target) from the events of split ``which``.

        The events are those of chunk ``i``.
        """
        _, _, inputs, target, _, _ = _REPRESENTATIONS[self.kind]
        events = self.arrays(i)[self.chunk_split(i) == which]
        try:
            out = self.representation(events)
        except HepmlError as exc:
            raise exc.with_context(self.where(i)) from None
        return (*(out[k] for k in inputs), out[target])

    def dataset(self, which: int, *, batch_size: int, shuffle: bool,
                seed: int = 0) -> ChunkedDataset:
        """Batches of training examples of split ``which``."""
        built = [self.examples(i, which) for i in range(len(self.source.chunks))]
        loaders: list[Callable[[], tuple[torch.Tensor, ...]]] = [lambda t=t: t for t in built]
        return ChunkedDataset(loaders, [len(t[-1]) for t in built], batch_size=batch_size,
                              shuffle=shuffle, seed=seed, cache=False)


def _model_kind(cfg: dict[str, Any], kind: str) -> str:
    """The model kind of the workflow: the one that takes representation ``kind``."""
    expected = _REPRESENTATIONS[kind][4]
    model_kind = cfg.get("kind", expected)
    if model_kind != expected:
        raise ConfigError(f"model.kind {model_kind!r} does not take the inputs of representation "
                          f"{kind!r}; use model.kind: {expected}")
    return model_kind


@torch.no_grad()
def _graph_tracks(model: torch.nn.Module, representation: Any, events: ak.Array,
                  hits: HitArrays, tcfg: TrackingConfig, device: torch.device
                  ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """GNN tracks of ``events``.

    Returns the per-hit track ids, and each candidate edge's score, truth and inner hit.
    """
    graphs = representation(events)
    offsets = hits.offsets
    n_events = len(events)
    scores, truth, src, dst = [], [], [], []
    step = tcfg.inference_batch
    for start in range(0, n_events, step):
        sl = slice(start, start + step)
        logits = model(graphs["x"][sl].to(device), graphs["edges"][sl].to(device),
                       graphs["edge_attr"][sl].to(device)).float()
        edges = graphs["edges"][sl]
        valid = edges[..., 0] >= 0
        base = torch.as_tensor(offsets[:-1][sl], dtype=torch.long)[:, None]
        src.append((edges[..., 0] + base)[valid].numpy())
        dst.append((edges[..., 1] + base)[valid].numpy())
        scores.append(torch.sigmoid(logits).cpu()[valid].numpy())
        truth.append(graphs["y"][sl][valid].numpy())
    if not src:
        empty = np.zeros(0)
        return np.full(len(hits), -1, dtype=np.int64), empty, empty, empty.astype(np.int64)
    src_a, dst_a, score_a = np.concatenate(src), np.concatenate(dst), np.concatenate(scores)
    gap = hits.layer[dst_a] - hits.layer[src_a]
    track = tracks_from_edges(len(hits), src_a, dst_a, score_a, threshold=tcfg.edge_threshold,
                              method=tcfg.method, min_hits=tcfg.min_track_hits,
                              rank=score_a - tcfg.skip_penalty * (gap - 1))
    return track, score_a, np.concatenate(truth), src_a


@torch.no_grad()
def _lstm_tracks(model: torch.nn.Module, representation: Any, hits: HitArrays,
                 tcfg: TrackingConfig, device: torch.device) -> np.ndarray:
    """LSTM tracks: triplet seeds followed layer by layer."""
    seeds = find_seeds(hits)
    return follow_tracks(model, hits, seeds, sequences=representation.config, gate=tcfg.gate,
                         max_skip=tcfg.max_skip,
                         min_hits=tcfg.min_track_hits, device=device)


def find_tracks(model: torch.nn.Module, representation: Any, kind: str, events: ak.Array,
                tcfg: TrackingConfig, device: torch.device) -> dict[str, Any]:
    """Tracks of ``events``: the hits, each hit's track id (-1: none), edge scores (GNN)."""
    hits = HitArrays.from_awkward(events)
    model.eval()
    if kind == "hit_graph":
        track, scores, truth, src = _graph_tracks(model, representation, events, hits, tcfg,
                                                  device)
        return {"hits": hits, "track": track, "edge_scores": scores, "edge_truth": truth,
                "edge_src": src}
    return {"hits": hits, "track": _lstm_tracks(model, representation, hits, tcfg, device)}


def _particles(events: ak.Array, first_event: int) -> dict[str, np.ndarray]:
    counts = ak.to_numpy(ak.num(events["particle_id"], axis=1))
    out = {k.removeprefix("particle_"): ak.to_numpy(ak.flatten(events[k], axis=1))
           for k in PARTICLE_TRUTH}
    out["event"] = np.repeat(np.arange(len(counts)), counts) + first_event
    return out


def _cat(parts: Sequence[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]} if parts else {}


def run(cfg: WorkflowConfig, *, resume: str | Path | None = None) -> JobResult:
    """Train the tracker of workflow ``cfg``, find tracks in every event, evaluate the test split.

    Args:
        cfg: The workflow (``task: tracking``).
        resume: A run directory of the same workflow to continue from its last checkpoint.
    """
    torch.manual_seed(cfg.seed)
    tcfg = from_mapping(TrackingConfig, cfg.tracking, where="tracking")
    distributed.init_from_env(resolve_device(cfg.training.device),
                               timeout_s=cfg.training.distributed_timeout)
    kind = _kind(cfg)
    representation = build_representation(cfg.representation)
    data = TrackingData(cfg.data, representation, kind, seed=cfg.seed)
    model_spec = size_model(_model_kind(cfg.model, kind), cfg.model, representation.output_shape)
    run_config = to_dict(cfg)
    run_config["model"] = {"kind": model_spec["kind"], **model_spec["kwargs"]}
    run_config["representation"] = {"kind": kind, **representation.to_dict()}
    run_config["tracking"] = to_dict(tcfg)
    run_dir = open_run_dir(cfg.runs_dir, cfg.name, resume=resume, run_config=run_config,
                           paths=data.source.paths, entries=data.source.entries,
                           split=data.split)
    main = distributed.is_main_process()
    counts = np.bincount(data.split, minlength=3)
    log.info("%d events from %d file(s): %s", data.source.num_entries, len(data.source.paths),
             ", ".join(f"{n} {s}" for n, s in zip(counts, SPLIT_NAMES, strict=True)))
    if counts[0] == 0 or counts[1] == 0:
        raise EmptyInputError("the training or validation split has no events; use more "
                              "events or change data.split")
    model = build_model(model_spec["kind"], **model_spec["kwargs"])
    loss_fn = _REPRESENTATIONS[kind][5]
    unit = "event" if kind == "hit_graph" else "sequence"
    trainer = Trainer(model, cfg.training, run_dir=run_dir, model_spec=model_spec,
                      run_config=run_config, loss_fn=loss_fn, seed=cfg.seed, unit=unit)
    log.info("model %s: %d parameters, device %s%s", model_spec["kind"],
             sum(p.numel() for p in model.parameters()), trainer.device,
             ", mixed precision" if trainer.amp else "")
    bs = cfg.training.batch_size
    train = data.dataset(0, batch_size=bs, shuffle=True, seed=cfg.seed)
    val = data.dataset(1, batch_size=bs, shuffle=False)
    if len(train) == 0 or len(val) == 0:
        raise EmptyInputError(f"no training examples ({unit}s) in the training or validation "
                              "events: are there hits with truth particles?")
    history = trainer.fit(train, val, resume=bool(resume))
    trainer.load_best()
    if not main:
        return JobResult(run_dir, cfg.task)
    model = trainer.module
    device = trainer.device

    # -------------------------------------------------------------- find tracks
    start = time.perf_counter()
    per_file: dict[str, list[ak.Array]] = {}
    hit_parts, particle_parts, edge_parts = [], [], []
    n_tracks = 0
    for i, spec in enumerate(data.source.chunks):
        events = data.arrays(i)
        try:
            found = find_tracks(model, representation, kind, events, tcfg, device)
        except HepmlError as exc:
            raise exc.with_context(data.where(i)) from None
        hits, track = found["hits"], found["track"]
        # unique track ids over the whole run
        track = np.where(track >= 0, track + n_tracks, -1)
        n_tracks = max(n_tracks, int(track.max()) + 1 if len(track) else 0)
        per_file.setdefault(spec.path, []).append(ak.unflatten(track.astype(np.int64), hits.counts))
        split = data.chunk_split(i)
        hit_parts.append({"event": hits.event + spec.global_start, "particle": hits.particle,
                          "track": track, "split": split[hits.event],
                          "x": hits.x, "y": hits.y, "z": hits.z, "layer": hits.layer})
        p = _particles(events, spec.global_start)
        p["split"] = split[p["event"] - spec.global_start]
        particle_parts.append(p)
        if "edge_scores" in found:
            edge_parts.append({"score": found["edge_scores"], "truth": found["edge_truth"],
                               "split": split[hits.event[found["edge_src"]]]})
    seconds = time.perf_counter() - start
    hits_all, particles = _cat(hit_parts), _cat(particle_parts)
    log.info("found %d track candidates in %d events in %.1f s (%.1f events/s)", n_tracks,
             data.source.num_entries, seconds, data.source.num_entries / max(seconds, 1e-9))
    _write_tracks(run_dir / "predictions", data, per_file, cfg.name)

    # -------------------------------------------------------------- evaluate
    test_split = 2 if counts[2] else 1
    if not counts[2]:
        log.warning("the test split is empty; tracks are evaluated on the validation events")
    metrics, plots = _evaluate(hits_all, particles, edge_parts, tcfg, test_split, device,
                               run_dir, model_spec["kind"])
    if history:
        plots += evaluation.plot_history(history, run_dir / "history")
    metrics["training"] = {"epochs_run": len(history), "best_epoch": trainer.best_epoch,
                           "device": str(device), "mixed_precision": trainer.amp,
                           "n_train_events": int(counts[0]), "n_validation_events": int(counts[1]),
                           "n_test_events": int(counts[2]), "train_examples": len(train),
                           "example": unit}
    metrics["timing"] = {"track_finding_s": seconds,
                         "events_per_s": data.source.num_entries / max(seconds, 1e-9)}
    evaluation.write_metrics_json(run_dir / "metrics.json", metrics)
    summary = summarise(metrics, run_dir)
    evaluation.write_report(run_dir, title=f"{cfg.name}: tracking ({model_spec['kind']})",
                            metrics=metrics, config=run_config,
                            plots=[p for p in plots if str(p).endswith(".png")],
                            extra_tables={"training": metrics["training"],
                                          "timing": metrics["timing"]},
                            key_metrics=summary.key_metrics)
    return JobResult(run_dir, cfg.task, summary, metrics)


def summarise(metrics: Mapping[str, Any], run_dir: Path) -> Summary:
    """The run's summary: track efficiency, fake rate and TrackML score."""
    t = metrics.get("tracking") or {}
    sel = t.get("selection") or {}
    line = (f"pT > {sel.get('min_pt')} GeV: track efficiency {number(t.get('efficiency'))}, "
            f"fake rate {number(t.get('fake_rate'))}, "
            f"TrackML score {number(metrics.get('trackml_score'))}")
    edges = metrics.get("edges") or {}
    timing = metrics.get("timing") or {}
    key = rows([
        (f"track efficiency (pT > {sel.get('min_pt')} GeV)",
         with_error(t.get("efficiency"), t.get("efficiency_uncertainty"))),
        ("fake rate", with_error(t.get("fake_rate"), t.get("fake_rate_uncertainty"))),
        ("duplicate rate",
         with_error(t.get("duplicate_rate"), t.get("duplicate_rate_uncertainty"))),
        ("TrackML score", number(metrics.get("trackml_score"))),
        ("edge efficiency", number(edges.get("efficiency"))),
        ("edge purity", number(edges.get("purity"))),
        ("events evaluated", number(t.get("n_events"), "d")),
        ("reconstructable particles", number(t.get("n_reconstructable"), "d")),
        ("track finding (events/s)", number(timing.get("events_per_s"), ".2f")),
    ])
    return Summary(lines=(line, f"report: {run_dir / 'report.html'}"), key_metrics=key)


def _write_tracks(out_dir: Path, data: TrackingData, per_file: dict[str, list[ak.Array]],
                  workflow: str) -> list[Path]:
    """One friend tree per input file: ``hit_track_id`` of each hit and the event's ``split``."""
    written = []
    offset = 0
    for path in data.source.paths:
        n = data.source.entries[path]
        tracks = ak.concatenate(per_file[path]) if per_file.get(path) else ak.Array([[]] * n)
        target = out_dir / f"{Path(path).stem}.tracks.root"
        written.append(write_friend_tree(
            target, {"hit_track_id": tracks, "split": data.split[offset:offset + n]},
            tree="tracks", n_entries=n, source=path, source_tree=data.source.tree,
            metadata={"workflow": workflow}))
        offset += n
    return written


def _evaluate(hits: dict[str, np.ndarray], particles: dict[str, np.ndarray],
              edge_parts: list[dict[str, np.ndarray]], tcfg: TrackingConfig, which: int,
              device: torch.device, run_dir: Path, name: str) -> tuple[dict[str, Any], list[Path]]:
    """Tracking metrics of the events of split ``which``, on ``device``; plots on the CPU."""
    sel_h = hits["split"] == which
    sel_p = particles["split"] == which

    def t(a: np.ndarray) -> torch.Tensor:
        return to_device(np.ascontiguousarray(a), device)

    he, hp, ht = t(hits["event"][sel_h]), t(hits["particle"][sel_h]), t(hits["track"][sel_h])
    pe, pid = t(particles["event"][sel_p]), t(particles["id"][sel_p].astype(np.int64))
    pt, eta = t(particles["pt"][sel_p]), t(particles["eta"][sel_p])
    nhits = t(particles["nhits"][sel_p].astype(np.int64))
    vz = t(particles["vz"][sel_p])
    cut = {"min_pt": tcfg.min_pt, "min_hits": tcfg.min_hits, "max_abs_eta": tcfg.max_abs_eta}
    metrics: dict[str, Any] = {"tracking": trk.tracking_metrics(
        he, hp, ht, pe, pid, pt, eta, nhits, min_track_hits=tcfg.min_track_hits, **cut)}
    hz = t(hits["z"][sel_h])
    score_all = trk.trackml_score(he, hp, ht, trk.trackml_weights(he, hp, hz, pe, pid, pt, vz))
    score_cut = trk.trackml_score(he, hp, ht, trk.trackml_weights(he, hp, hz, pe, pid, pt, vz,
                                                                   min_pt=tcfg.min_pt))
    metrics["trackml_score"] = score_all.mean
    metrics[f"trackml_score_pt>{tcfg.min_pt:g}"] = score_cut.mean
    metrics["trackml_score_per_event"] = {"all": score_all.scores.tolist(),
                                          f"pt>{tcfg.min_pt:g}": score_cut.scores.tolist()}
    plots: list[Path] = []
    match = trk.match_tracks(he, hp, ht, pe, pid)
    found = match.particle_n_matched > 0
    by_hits = trk.reconstructable(pt, nhits, eta, min_pt=0.0, min_hits=tcfg.min_hits,
                                  max_abs_eta=tcfg.max_abs_eta)
    reco = trk.reconstructable(pt, nhits, eta, **cut)
    vs_pt = trk.efficiency_vs(pt[by_hits], found[by_hits], torch.tensor(tcfg.pt_bins))
    vs_eta = trk.efficiency_vs(eta[reco], found[reco], torch.tensor(tcfg.eta_bins))
    metrics["efficiency_vs_pt"] = _binned(vs_pt)
    metrics["efficiency_vs_eta"] = _binned(vs_eta)
    plots += tracking_plots.plot_efficiency(vs_pt.edges.cpu().numpy(),
                                            {name: vs_pt.efficiency.cpu().numpy()},
                                            {name: vs_pt.uncertainty.cpu().numpy()},
                                            "particle $p_T$ [GeV]", run_dir / "efficiency_vs_pt")
    plots += tracking_plots.plot_efficiency(vs_eta.edges.cpu().numpy(),
                                            {name: vs_eta.efficiency.cpu().numpy()},
                                            {name: vs_eta.uncertainty.cpu().numpy()},
                                            rf"particle $\eta$ ($p_T$ > {tcfg.min_pt:g} GeV)",
                                            run_dir / "efficiency_vs_eta", logx=False)
    events = np.unique(hits["event"][sel_h])[:tcfg.event_displays]
    for ev in events.tolist():
        m = hits["event"] == ev
        plots += tracking_plots.plot_event_display(
            hits["x"][m], hits["y"][m], hits["z"][m], hits["track"][m], hits["particle"][m],
            run_dir / f"event_display_{ev}", title=f"event {ev}")
    if edge_parts:
        scores = np.concatenate([e["score"][e["split"] == which] for e in edge_parts])
        truth = np.concatenate([e["truth"][e["split"] == which] for e in edge_parts])
        if len(scores):
            s_t, y_t = t(scores.astype(np.float32)), t(truth.astype(np.float32))
            metrics["edges"] = trk.edge_metrics(s_t, y_t, tcfg.edge_threshold)
            roc = evaluation.roc_curve(s_t, y_t.long())
            roc = evaluation.RocCurve(*(x.cpu() if torch.is_tensor(x) else x for x in roc))
            plots += evaluation.plot_roc({name: roc}, run_dir / "edge_roc")
            plots += tracking_plots.plot_edge_scores(scores, truth, run_dir / "edge_scores",
                                                     threshold=tcfg.edge_threshold)
    metrics["split_evaluated"] = SPLIT_NAMES[which]
    return evaluation.json_safe(metrics), plots


def _binned(b: Any) -> dict[str, list[float]]:
    return {"edges": b.edges.tolist(), "efficiency": b.efficiency.tolist(),
            "uncertainty": b.uncertainty.tolist(), "total": b.total.tolist(),
            "passed": b.passed.tolist()}
