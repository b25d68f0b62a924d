"""Scoring entries with a trained autoencoder, chunk by chunk, keeping the top ones.

Memory stays bounded: one chunk of inputs at a time, three floats per entry, and a
heap of the ``top`` records.
"""

from __future__ import annotations

import ctypes
import dataclasses
import heapq
from typing import Any

import numpy as np
import torch

from hepml.errors import ConfigError
from hepml.representations import Features
from hepml.tasks.anomaly.data import AnomalyData


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
