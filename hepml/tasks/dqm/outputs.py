"""What a monitor writes: friend trees, the flagged-LS CSV, plots, the detection table."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepml.evaluation import dqm_plots
from hepml.evaluation.dqm import ScoredRun
from hepml.io import write_friend_trees
from hepml.io.atomic import atomic_path
from hepml.tasks.dqm.data import LumisectionData
from hepml.training.splits import SPLIT_NAMES

#: Friend-tree name of the per-LS results.
FRIEND_TREE = "dqm"


def _detection_rows(metrics: dict[str, Any]) -> list[dict[str, Any]]:
    """The per-type table as rows for the report and the CLI."""
    rows = []
    for name, r in (metrics.get("detection") or {}).items():
        eff = r["efficiency"]
        row = {"fault": name, "LS": r["n_lumisections"],
               "detected": eff["passed"],
               "efficiency": f"{eff['value']:.3f} ± {eff['uncertainty']:.3f}",
               "channels touched": (f"{100 * r['channel_fraction']['mean']:.2f} %"
                                    if "channel_fraction" in r else "n/a"),
               "goal applies": r.get("touches_coverage", "n/a"),
               "meets target": r["meets_target"]}
        if "top1_in_mask" in r:
            row["top-1 in mask"] = f"{r['top1_in_mask']['value']:.3f}"
            row["top-k precision"] = (f"{r['topk_precision']['mean']:.3f} (random "
                                      f"{r['topk_precision']['random_expectation']:.3f})")
        if "auc_vs_good" in r:
            row["AUC vs good"] = f"{r['auc_vs_good']:.4f}"
        rows.append(row)
    return rows


def _write_friend_trees(out_dir: Path, data: LumisectionData, scored: ScoredRun,
                        flagged: np.ndarray, *, with_split: bool,
                        metadata: dict[str, Any]) -> list[Path]:
    """One friend tree ``dqm`` per input file, LS for LS."""
    branches: dict[str, np.ndarray] = {
        "anomaly_score": scored.score.astype(np.float32),
        "flagged": flagged.astype(np.bool_),
        "excluded": data.excluded.astype(np.bool_),
    }
    if with_split:
        branches["split"] = data.split
    return write_friend_trees(out_dir, data.source, branches, suffix="dqm", tree=FRIEND_TREE,
                              metadata=metadata)


def _write_flagged_csv(path: Path, data: LumisectionData, scored: ScoredRun,
                       flagged: np.ndarray, threshold: float,
                       trigger_names: Sequence[str] = ()) -> Path:
    """``flagged_lumisections.csv``: one row per flagged LS, in run and lumi order."""
    rep = data.representation
    width = rep.output_shape[2]
    file_of, entries = data.source.locate(np.arange(data.num_entries))
    idx = np.flatnonzero(flagged)
    idx = idx[np.lexsort((data.lumi[idx], data.run[idx]))]
    k_top = scored.top_index.shape[1]
    header = ["run", "lumi", "file", "entry", "split", "anomaly_score", "threshold", "trigger",
              "fault"]
    for k in range(1, k_top + 1):
        header += [f"top{k}_histogram", f"top{k}_bin", f"top{k}_center", f"top{k}_residual"]
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        for i in idx:
            fault = data.fault_names[data.fault[i]] if data.fault is not None else ""
            row = [int(data.run[i]), int(data.lumi[i]), data.source.paths[file_of[i]],
                   int(entries[i]),
                   SPLIT_NAMES[data.split[i]], f"{scored.score[i]:.6g}", f"{threshold:.6g}",
                   trigger_names[scored.trigger[i]] if scored.trigger[i] >= 0 else "", fault]
            for k in range(k_top):
                cell = int(scored.top_index[i, k])
                if cell < 0:
                    row += ["", "", "", ""]
                    continue
                lay, bi, bj = rep.channel(cell // width, cell % width)
                centers = lay.centers(bi, bj)
                row += [lay.name, f"{bi},{bj}",
                        " ".join(f"{a}={v:.4g}" for a, v in centers.items()),
                        f"{scored.top_residual[i, k]:+.4g}"]
            writer.writerow(row)
    return path


def _plots(out_dir: Path, data: LumisectionData, scored: ScoredRun, flagged: np.ndarray,
           threshold: float, *, title: str, distributions: bool, score: str) -> list[Path]:
    plots: list[Path] = []
    fault = data.fault if data.fault is not None else np.zeros(data.num_entries, dtype=np.int64)
    names = data.fault_names if data.fault is not None else ["unlabelled"]
    plots += dqm_plots.plot_run_timeline(
        data.run, data.lumi, scored.score, threshold, fault, names, flagged,
        out_dir / "timeline", title=title)
    if distributions and data.fault is not None:
        plots += dqm_plots.plot_score_by_type(scored.score, fault, names, threshold,
                                              out_dir / "score_distributions",
                                              keep=~data.excluded)
    layout = data.representation.layout
    label = ("Residual (x - reconstruction) / scale" if score == "reconstruction_error"
             else "Pull: residual / its spread on good LS")
    for rank, (s, pos, residual, mask) in enumerate(scored.worst, start=1):
        truth = names[fault[pos]] if data.fault is not None else None
        plots += dqm_plots.plot_residual_map(
            residual, layout, out_dir / f"residual_map_{rank}", mask=mask, label=label,
            title=(f"run {data.run[pos]} LS {data.lumi[pos]}: score {s:.3g}"
                   + (f" ({truth})" if truth else "")))
    return plots
