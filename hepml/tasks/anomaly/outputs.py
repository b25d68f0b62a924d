"""What a scan writes: the ranked list (CSV and ROOT) and the score friend trees."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepml.io import write_friend_trees, write_tree
from hepml.io.atomic import atomic_path
from hepml.representations import Features
from hepml.tasks.anomaly.data import AnomalyData
from hepml.tasks.anomaly.scores import ScanResult
from hepml.training.splits import SPLIT_NAMES


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
