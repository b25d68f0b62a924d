"""``task: anomaly``: train an autoencoder on background, scan a sample for anomalies.

A model-independent search: the autoencoder learns to reconstruct background entries
(QCD jets, or the bulk of collision data) and every entry is scored by how badly it is
reconstructed. Flow (see ``docs/anomaly.md``):

1. The entries (jets or events) are read in chunks through :class:`hepml.io.Source`
   with the workflow's branch mapping, and assigned to train/validation/test by the
   workflow seed. Labelled data (``data.labels``) name a background class; the
   autoencoder sees background entries of the training split only. Unlabelled data
   (``labels: []``, e.g. real collision data) are all treated as background.
2. The model's normalisation is fixed from the training entries (per-feature mean and
   standard deviation for feature vectors; one global scale for images, which keeps the
   relative weight of the pixels), then the shared :class:`~hepml.training.Trainer`
   trains it with the model's own loss.
3. Every entry is scored chunk by chunk (``reconstruction_error``, the VAE's ``kl``, or
   their sum); scores go to a friend tree per input file.
4. The *scanned sample* is the test split: with labels, its background plus signal
   entries injected at ``anomaly.signal_fraction`` (drawn with the seed from the test
   split's signal). Its most anomalous entries are written, ranked, to
   ``anomalies.csv`` and ``anomalies.root`` with their ids (``anomaly.ids``, e.g.
   ``Run``, ``Event``) and, for feature vectors, the features that drove each score.
5. With labels, the test split's background and signal give the ROC, AUC, signal
   efficiency at fixed background efficiencies (down to 1/N_B), the significance
   improvement curve, and the mass sculpting of the background by a cut on the score.
"""

from __future__ import annotations

import csv
import ctypes
import dataclasses
import heapq
import logging
import math
import typing
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml import evaluation
from hepml.config import DataConfig, WorkflowConfig, from_mapping, to_dict
from hepml.errors import BadValueError, ConfigError, EmptyInputError
from hepml.evaluation import anomaly as anomaly_metrics
from hepml.evaluation import anomaly_plots
from hepml.io import write_friend_tree, write_friend_trees, write_tree
from hepml.io.atomic import atomic_path
from hepml.models import build_model
from hepml.models import model_spec as size_model
from hepml.representations import Features
from hepml.tasks import scoring
from hepml.tasks._entries import (
    TaggingData,
    build_representation,
    cached_representation,
    model_inputs,
)
from hepml.tasks._job import JobResult, Summary, number, with_error
from hepml.tasks._job import rows as _job_rows
from hepml.tasks.rundir import open_run_dir, write_json
from hepml.training import (
    ChunkedDataset,
    Trainer,
    chunk_moments,
    distributed,
    load_checkpoint,
    model_from_checkpoint,
    resolve_device,
    to_device,
)
from hepml.training.splits import SPLIT_NAMES

log = logging.getLogger(__name__)

__all__ = ["AnomalyConfig", "AnomalyData", "ScanResult", "run", "scan", "score_data",
           "chunk_scores", "injection_mask"]

SCORES = ("reconstruction_error", "kl", "elbo")


@dataclasses.dataclass(frozen=True)
class AnomalyConfig:
    """The ``anomaly:`` section of a workflow.

    Attributes:
        background: Class the autoencoder learns (default: the first of
            ``data.class_names``); ignored for unlabelled data.
        signal: Class injected into the scanned sample (default: every other class).
        signal_fraction: Signal share of the scanned sample, in [0, 1). 0 scans
            background alone (the ranked list then holds background only, and the
            injection table says so); the ROC metrics use all test signal either way.
        score: ``reconstruction_error`` (mean squared error in normalised units),
            ``kl`` (VAE only: the KL divergence of the code), or ``elbo`` (VAE only:
            reconstruction error + KL / number of inputs).
        background_efficiencies: ε_B at which ε_S is quoted and the mass sculpting is
            checked.
        mass: Field (after the branch mapping) whose background distribution is checked
            for sculpting, e.g. ``jet_mass`` or ``M``.
        mass_bins: Bins of the sculpting histograms.
        ids: Fields copied to the ranked list to identify entries (``Run``, ``Event``).
        top: Number of ranked entries written.
        explain: Features named per ranked entry (feature vectors only): those with the
            largest share of the entry's reconstruction error.
        normalize: ``auto`` (``standardize`` for feature vectors, ``scale`` otherwise),
            ``standardize`` (per-input mean and std), ``scale`` (shift 0, one global
            std) or ``none``.
    """

    background: str | None = None
    signal: str | None = None
    signal_fraction: float = 0.01
    score: typing.Literal["reconstruction_error", "kl", "elbo"] = "reconstruction_error"
    background_efficiencies: tuple[float, ...] = (0.1, 0.01, 0.001)
    mass: str | None = None
    mass_bins: int = 30
    ids: tuple[str, ...] = ()
    top: int = 100
    explain: int = 3
    normalize: typing.Literal["auto", "standardize", "scale", "none"] = "auto"

    def __post_init__(self) -> None:
        if not 0 <= self.signal_fraction < 1:
            raise ConfigError("anomaly.signal_fraction must lie in [0, 1), "
                              f"got {self.signal_fraction}")
        for eff in self.background_efficiencies:
            if not 0 < eff <= 1:
                raise ConfigError(f"anomaly.background_efficiencies must lie in (0, 1], got {eff}")
        if self.top < 1 or self.explain < 0 or self.mass_bins < 2:
            raise ConfigError("anomaly: top must be >= 1, explain >= 0 and mass_bins >= 2")


def anomaly_config(cfg: WorkflowConfig) -> AnomalyConfig:
    """The workflow's ``anomaly`` section, checked against its data section."""
    a = from_mapping(AnomalyConfig, cfg.anomaly, where="anomaly")
    names = list(cfg.data.class_names)
    for key in ("background", "signal"):
        value = getattr(a, key)
        if value is not None and names and value not in names:
            raise ConfigError(f"anomaly.{key} {value!r} is not one of data.class_names {names}")
    if a.background is not None and a.background == a.signal:
        raise ConfigError("anomaly.background and anomaly.signal must differ")
    return a


class AnomalyData(TaggingData):
    """Entries read like the tagger's, plus the fields the scan reports (ids, mass).

    ``chunk(i)`` returns ``(inputs, labels)`` as for tagging; :meth:`extras` the extra
    fields of chunk ``i`` as numpy arrays.
    """

    def __init__(self, data: DataConfig, representation: Any, *, seed: int,
                 extra_fields: Sequence[str] = (), cache: bool | None = None) -> None:
        self.extra_fields = tuple(dict.fromkeys(extra_fields))
        super().__init__(data, representation, seed=seed, with_labels=bool(data.labels),
                         cache=cache, extra_fields=self.extra_fields)
        self._extras: dict[int, dict[str, np.ndarray]] = {}

    def chunk(self, i: int) -> tuple[tuple[torch.Tensor, ...], torch.Tensor]:
        """Inputs and labels of chunk ``i`` (extras kept for :meth:`extras`)."""
        if i in self._built:
            return self._built[i]
        x, y, arrays = self.build_chunk(i)
        extras = {f: _numbers(arrays[f], f) for f in self.extra_fields}
        if len(x) != 1:
            raise ConfigError("anomaly scans take a representation with one input tensor "
                              "(features or jet_image)")
        if self.cache:
            self._built[i] = (x, y)
            self._extras[i] = extras
        else:
            self._extras = {i: extras}
        return x, y

    def extras(self, i: int) -> dict[str, np.ndarray]:
        """The extra fields of chunk ``i``."""
        if i not in self._extras:
            self._built.pop(i, None)
            self.chunk(i)
        return self._extras[i]

    def split_of(self, i: int) -> np.ndarray:
        """Split ids of the entries of chunk ``i``."""
        spec = self.source.chunks[i]
        return self.split[spec.global_start:spec.global_start + len(spec)]

    def training_dataset(self, which: int, background: int | None, *, batch_size: int,
                         shuffle: bool, seed: int = 0) -> ChunkedDataset:
        """Batches ``(x, x)`` of split ``which``, background entries only when labelled."""
        loaders, lengths = [], []
        for i in range(len(self.source.chunks)):
            _, y = self.chunk(i)
            keep = torch.from_numpy(self.split_of(i) == which)
            if background is not None:
                keep &= y == background
            lengths.append(int(keep.sum()))

            def load(i: int = i, keep: torch.Tensor = keep) -> tuple[torch.Tensor, ...]:
                x = self.chunk(i)[0][0][keep]
                return x, x

            loaders.append(load)
        return ChunkedDataset(loaders, lengths, batch_size=batch_size, shuffle=shuffle,
                              seed=seed, cache=False)


def _numbers(arr: Any, name: str) -> np.ndarray:
    arr = arr if isinstance(arr, ak.Array) else ak.Array(arr)
    if arr.ndim != 1:
        raise BadValueError(f"field {name!r}: anomaly.ids and anomaly.mass need one number "
                            f"per entry, got type {arr.type}")
    values = ak.to_numpy(arr)
    if values.dtype.kind not in "biuf":
        raise BadValueError(f"field {name!r}: expected numbers, got type {arr.type}")
    return values


# ------------------------------------------------------------------------------ scoring


@dataclasses.dataclass
class ScanResult:
    """Scores of every entry and the ranked most anomalous entries of the scanned ones.

    Attributes:
        score: The anomaly score of every entry, in input order ``[N]``.
        reconstruction_error: ``[N]``.
        kl: ``[N]`` for a VAE, else ``None``.
        top: Ranked records (highest score first) of the scanned entries: ``index``
            (global entry number), ``score``, ``extras`` (ids, mass), and for feature
            vectors ``values`` and ``reconstruction`` (in the file's units, the ``log``
            transform undone) and ``error_share`` (the feature's share of the squared
            error in normalised units) per feature.
    """

    score: np.ndarray
    reconstruction_error: np.ndarray
    kl: np.ndarray | None
    top: list[dict[str, Any]]


def _combine(scores: dict[str, torch.Tensor], name: str, n_inputs: int) -> torch.Tensor:
    if name == "reconstruction_error":
        return scores["reconstruction_error"]
    if "kl" not in scores:
        raise ConfigError(f"anomaly.score {name!r} needs a variational model "
                          "(model.variational: true)")
    return (scores["kl"] if name == "kl"
            else scores["reconstruction_error"] + scores["kl"] / n_inputs)


def _trim_heap() -> None:
    """Hand freed heap memory back to the system (glibc only; elsewhere a no-op).

    Chunks of different sizes fragment glibc's heap, so without this the resident memory
    of a long scan creeps up file by file before it levels off.
    """
    global _LIBC
    if _LIBC is None:
        try:
            _LIBC = ctypes.CDLL("libc.so.6")
            _LIBC.malloc_trim.argtypes = [ctypes.c_size_t]
        except (OSError, AttributeError):
            _LIBC = False
    if _LIBC:
        _LIBC.malloc_trim(0)


_LIBC: Any = None


@torch.no_grad()
def score_data(model: torch.nn.Module, data: AnomalyData, *, device: torch.device,
               batch_size: int, score: str = "reconstruction_error", top: int = 100,
               scanned: np.ndarray | None = None) -> ScanResult:
    """Score every entry of ``data`` chunk by chunk and keep the ``top`` scanned ones.

    Memory: one chunk of inputs at a time, the per-entry scores (three floats per
    entry) and the ``top`` records; nothing else grows with the input.

    Args:
        model: A trained autoencoder (``anomaly_scores``), on ``device``.
        data: The entries.
        device: Where the model runs.
        batch_size: Entries per forward pass.
        score: See :class:`AnomalyConfig`.
        top: Records kept.
        scanned: Which entries may enter the ranked list (default: all).
    """
    model.eval()
    totals = {"score": [], "reconstruction_error": [], "kl": []}
    heap: list[tuple[float, int, dict[str, Any]]] = []
    for i, spec in enumerate(data.source.chunks):
        (x,), _ = data.chunk(i)
        extras = data.extras(i)
        eligible = None if scanned is None else \
            scanned[spec.global_start:spec.global_start + len(spec)]
        cat, records = chunk_scores(model, x, extras, representation=data.representation,
                                    device=device, batch_size=batch_size, score=score, top=top,
                                    offset=spec.global_start, eligible=eligible)
        for k in totals:
            if cat[k] is not None:
                totals[k].append(cat[k])
        for rec in records:
            _keep_top(heap, rec, top)
        del x, extras, cat, records  # free this chunk before the next one is read
        _trim_heap()
    joined = {k: np.concatenate(v) if v else None for k, v in totals.items()}
    n = data.source.num_entries
    return ScanResult(score=joined["score"] if joined["score"] is not None else np.zeros(n),
                      reconstruction_error=joined["reconstruction_error"]
                      if joined["reconstruction_error"] is not None else np.zeros(n),
                      kl=joined["kl"], top=_ranked(heap))


@torch.no_grad()
def chunk_scores(model: torch.nn.Module, x: torch.Tensor, extras: dict[str, np.ndarray], *,
                 representation: Any, device: torch.device, batch_size: int, score: str,
                 top: int, offset: int = 0, eligible: np.ndarray | None = None
                 ) -> tuple[dict[str, np.ndarray | None], list[dict[str, Any]]]:
    """Scores of one chunk of inputs and the records of its ``top`` highest-scored entries.

    Args:
        model: A trained autoencoder in eval mode, on ``device``.
        x: The chunk's model inputs.
        extras: Per-entry extra fields (ids, mass) copied into the records.
        representation: What made ``x`` (feature vectors also record their values,
            reconstructions and error shares).
        device: Where the model runs.
        batch_size: Entries per forward pass.
        score: See :class:`AnomalyConfig`.
        top: Records returned at most.
        offset: Entry number of the chunk's first entry (the records' ``index``).
        eligible: Which entries may be recorded (default: all).

    Returns:
        ``({"score", "reconstruction_error", "kl"}: float64 arrays, kl None without a VAE;
        records)``.
    """
    features = isinstance(representation, Features)
    n_inputs = int(np.prod(getattr(representation, "output_shape", (1,))))
    parts: dict[str, list[torch.Tensor]] = {"score": [], "reconstruction_error": [], "kl": [],
                                            "squared_error": [], "reconstruction": []}
    for start in range(0, len(x), batch_size):
        xb = x[start:start + batch_size].to(device)
        s = model.anomaly_scores(xb)
        parts["score"].append(_combine(s, score, n_inputs).cpu().double())
        parts["reconstruction_error"].append(s["reconstruction_error"].cpu().double())
        if "kl" in s:
            parts["kl"].append(s["kl"].cpu().double())
        if features:
            parts["squared_error"].append(s["squared_error"].cpu().double())
            parts["reconstruction"].append(s["reconstruction"].cpu().double())
    cat = {k: torch.cat(v).numpy() if v else None for k, v in parts.items()}
    if eligible is None:
        eligible = np.ones(len(x), bool)
    chunk_score = cat["score"] if cat["score"] is not None else np.zeros(0)
    candidates = np.flatnonzero(eligible)
    if len(candidates) > top:
        candidates = candidates[np.argpartition(-chunk_score[candidates], top - 1)[:top]]
    records = []
    for j in candidates:
        rec = {"index": int(offset + j), "score": float(chunk_score[j]),
               "reconstruction_error": float(cat["reconstruction_error"][j]),
               "extras": {k: v[j].item() for k, v in extras.items()}}
        if cat["kl"] is not None:
            rec["kl"] = float(cat["kl"][j])
        if features:
            err = cat["squared_error"][j]
            physical = representation.to_physical
            rec["values"] = physical(x[j].double().numpy()).tolist()
            rec["reconstruction"] = physical(cat["reconstruction"][j]).tolist()
            rec["error_share"] = (err / err.sum() if err.sum() > 0 else err).tolist()
        records.append(rec)
    return {k: cat[k] for k in ("score", "reconstruction_error", "kl")}, records


def _keep_top(heap: list[tuple[float, int, dict[str, Any]]], rec: dict[str, Any], top: int) -> None:
    """Keep the ``top`` records of highest score (of lowest ``index`` among equal scores)."""
    item = (rec["score"], -rec["index"], rec)
    if len(heap) < top:
        heapq.heappush(heap, item)
    else:
        heapq.heappushpop(heap, item)


def _ranked(heap: list[tuple[float, int, dict[str, Any]]]) -> list[dict[str, Any]]:
    """The records of ``heap``, highest score first."""
    return [rec for _, _, rec in sorted(heap, key=lambda t: (-t[0], -t[1]))]


def injection_mask(labels: np.ndarray, split: np.ndarray, *, background: int,
                   signal: Sequence[int], fraction: float, seed: int) -> tuple[np.ndarray, int]:
    """The scanned sample: test-split background plus injected test-split signal.

    ``n_s = round(f / (1 − f) · n_b)`` signal entries are drawn without replacement with
    ``seed``, so that they make the fraction ``f`` of the sample; if the test split has
    fewer, all are used and the achieved fraction is lower (logged).

    Returns:
        ``(mask over all entries, number of signal entries injected)``.
    """
    test = split == 2
    bkg = test & (labels == background)
    sig_idx = np.flatnonzero(test & np.isin(labels, list(signal)))
    n_b = int(bkg.sum())
    want = int(round(fraction / (1 - fraction) * n_b)) if fraction > 0 else 0
    if want > len(sig_idx):
        log.warning("signal_fraction %.4g needs %d signal entries but the test split has %d; "
                    "injecting all of them (fraction %.4g)", fraction, want, len(sig_idx),
                    len(sig_idx) / max(n_b + len(sig_idx), 1))
        want = len(sig_idx)
    chosen = np.random.default_rng(seed).choice(sig_idx, size=want, replace=False) if want else []
    mask = bkg.copy()
    mask[np.asarray(chosen, dtype=np.int64)] = True
    return mask, want


# ------------------------------------------------------------------------------- outputs


def ranked_rows(result: ScanResult, data: AnomalyData, *, labels: np.ndarray | None,
                class_names: Sequence[str], explain: int) -> list[dict[str, Any]]:
    """One flat row per ranked entry (for the CSV, the ROOT tree and the report)."""
    file, entries = data.source.locate([rec["index"] for rec in result.top])
    return _rows(result.top, [data.source.paths[f] for f in file], [int(e) for e in entries],
                 [SPLIT_NAMES[int(data.split[rec["index"]])] for rec in result.top],
                 names=_feature_names(data.representation),
                 classes=None if labels is None else
                 [class_names[int(labels[rec["index"]])] for rec in result.top],
                 explain=explain)


def _feature_names(representation: Any) -> list[str]:
    return list(representation.names) if isinstance(representation, Features) else []


def _rows(records: Sequence[dict[str, Any]], files: Sequence[str], entries: Sequence[int],
          splits: Sequence[str], *, names: Sequence[str], classes: Sequence[str] | None,
          explain: int) -> list[dict[str, Any]]:
    """Flat rows of ranked records, given each record's file, entry, split and class."""
    rows = []
    for rank, rec in enumerate(records, start=1):
        row: dict[str, Any] = {"rank": rank, "file": files[rank - 1], "entry": entries[rank - 1],
                               "index": rec["index"], "score": rec["score"], **rec["extras"]}
        if "kl" in rec:
            row["kl"] = rec["kl"]
        row["split"] = splits[rank - 1]
        if classes is not None:
            row["class"] = classes[rank - 1]
        if names:
            share = np.asarray(rec["error_share"])
            order = np.argsort(-share)[:explain]
            row["drivers"] = "; ".join(
                f"{names[k]}={rec['values'][k]:.4g} (reco {rec['reconstruction'][k]:.4g}, "
                f"{100 * share[k]:.0f}%)" for k in order)
            for k, name in enumerate(names):
                row[name] = rec["values"][k]
            for k, name in enumerate(names):
                row[f"error_share_{name}"] = float(share[k])
        rows.append(row)
    return rows


def write_ranked(rows: list[dict[str, Any]], out_dir: Path, files: Sequence[str],
                 metadata: dict[str, Any]) -> list[Path]:
    """Write ``anomalies.csv`` (every column) and ``anomalies.root`` (numeric columns).

    In the ROOT file the file of each entry is an index into the metadata's ``files``.
    """
    csv_path = out_dir / "anomalies.csv"
    columns = list(dict.fromkeys(k for row in rows for k in row))
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)
    numeric: dict[str, np.ndarray] = {}
    index_of = {str(p): k for k, p in enumerate(files)}
    numeric["file_index"] = np.array([index_of[str(r["file"])] for r in rows], np.int32)
    for col in columns:
        values = [r.get(col) for r in rows]
        if col == "file" or not values:
            continue
        if all(isinstance(v, (bool, int, np.integer)) for v in values):
            numeric[col] = np.asarray(values, np.int64)
        elif all(isinstance(v, (int, float, np.number)) for v in values):
            numeric[col] = np.asarray(values, np.float64)
    if not rows:
        numeric = {"rank": np.zeros(0, np.int64)}
    root_path = write_tree(out_dir / "anomalies.root", numeric, tree="anomalies",
                           metadata={**metadata, "files": [str(p) for p in files]})
    return [csv_path, root_path]


def _scores_friend_trees(out_dir: Path, data: AnomalyData, result: ScanResult, *,
                         labels: np.ndarray | None, scanned: np.ndarray | None,
                         metadata: dict[str, Any]) -> list[Path]:
    branches = _score_branches(result, data.split, labels=labels, scanned=scanned)
    return write_friend_trees(out_dir, data.source, branches, suffix="anomaly", tree="anomaly",
                              metadata=metadata)


def _score_branches(result: ScanResult, split: np.ndarray, *, labels: np.ndarray | None,
                    scanned: np.ndarray | None) -> dict[str, np.ndarray]:
    """The branches of an ``anomaly`` friend tree."""
    branches: dict[str, np.ndarray] = {
        "anomaly_score": result.score.astype(np.float32),
        "reconstruction_error": result.reconstruction_error.astype(np.float32),
        "split": split}
    if result.kl is not None:
        branches["kl"] = result.kl.astype(np.float32)
    if labels is not None:
        branches["label"] = labels.astype(np.int32)
    if scanned is not None:
        branches["scanned"] = scanned.astype(np.int8)
    return branches


# ------------------------------------------------------------------------------ metrics


def _signal_metrics(score: torch.Tensor, is_signal: torch.Tensor, cfg: AnomalyConfig,
                    working_points: Sequence[float], seed: int) -> tuple[dict[str, Any], Any]:
    roc = evaluation.roc_curve(score, is_signal)
    effs = anomaly_metrics.efficiency_at_background(roc, list(cfg.background_efficiencies))
    rej, rej_err = evaluation.rejection_at(roc, list(working_points))
    low, high = evaluation.bootstrap_auc(score, is_signal, n_bootstrap=100, seed=seed)
    sig_eff, sic = anomaly_metrics.significance_improvement(roc)
    best = int(torch.argmax(sic)) if sic.numel() else None
    out = {
        "auc": evaluation.auc(roc.fpr, roc.tpr), "auc_ci": [low, high],
        "n_signal": int(roc.n_signal), "n_background": int(roc.n_background),
        "signal_efficiency": {
            f"{eb:g}": {"value": float(v), "uncertainty": float(e), "reachable": bool(r)}
            for eb, v, e, r in zip(cfg.background_efficiencies, effs["efficiency"].tolist(),
                                   effs["uncertainty"].tolist(), effs["reachable"].tolist(),
                                   strict=True)},
        "rejection": {f"{wp:g}": {"value": float(v), "uncertainty": float(e)}
                      for wp, v, e in zip(working_points, rej.tolist(), rej_err.tolist(),
                                          strict=True)},
        "max_significance_improvement": float(sic[best]) if best is not None else math.nan,
        "max_significance_improvement_at": float(sig_eff[best]) if best is not None else math.nan,
    }
    return out, (roc, sig_eff, sic)


def _injection_table(score: np.ndarray, labels: np.ndarray, scanned: np.ndarray,
                     background: int, n_injected: int, cfg: AnomalyConfig,
                     top: list[dict[str, Any]]) -> dict[str, Any]:
    s = score[scanned]
    is_sig = labels[scanned] != background
    n_b, n_s = int((~is_sig).sum()), int(is_sig.sum())
    table: dict[str, Any] = {"n_background": n_b, "n_signal_injected": n_injected,
                             "signal_fraction": n_s / max(n_b + n_s, 1),
                             "signal_in_ranked_list": int(sum(labels[r["index"]] != background
                                                              for r in top)),
                             "ranked_list_size": len(top), "cuts": {}}
    if n_s == 0:
        table["note"] = "no signal injected: the scan ran on background alone"
    table["significance_before"] = n_s / math.sqrt(n_b) if n_b else math.nan
    for eff in cfg.background_efficiencies:
        if eff * n_b < 1:
            table["cuts"][f"{eff:g}"] = {"reachable": False}
            continue
        threshold = anomaly_metrics.cut_at_background(torch.from_numpy(s[~is_sig]), eff)
        n_bp, n_sp = int((s[~is_sig] > threshold).sum()), int((s[is_sig] > threshold).sum())
        table["cuts"][f"{eff:g}"] = {"threshold": threshold, "background_kept": n_bp,
                                     "signal_kept": n_sp,
                                     "significance": n_sp / math.sqrt(n_bp) if n_bp else math.nan}
    return table


# -------------------------------------------------------------------------------- run


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


def _model_kind(cfg: dict[str, Any], representation: Any = None) -> str:
    """The model kind of the workflow, one of the autoencoders.

    Without ``model.kind``: the convolutional autoencoder for images (C, H, W), the dense
    one for feature vectors, as ``hepml validate`` assumes.
    """
    shape = getattr(representation, "output_shape", None)
    default = "conv_autoencoder" if shape is not None and len(shape) == 3 else "autoencoder"
    kind = cfg.get("kind", default)
    if kind not in ("autoencoder", "conv_autoencoder"):
        raise ConfigError(f"model.kind {kind!r}: an anomaly scan needs an autoencoder "
                          "(autoencoder or conv_autoencoder)")
    return kind


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
        sig_metrics, (roc, sig_eff, sic) = _signal_metrics(
            score_t, is_sig, a, cfg.evaluation.working_points, cfg.seed)
        metrics.update(sig_metrics)
        metrics["injection"] = _injection_table(result.score, labels, scanned, background,
                                                n_injected, a, result.top)
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


# ------------------------------------------------------------------------------ scan


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
