"""``hepml dqm``: apply a trained monitor to further runs."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from hepml import evaluation
from hepml.config import DataConfig, from_mapping
from hepml.errors import CheckpointError, ConfigError
from hepml.evaluation.dqm import ScoreCalibration, dqm_metrics
from hepml.io import expand_files, open_tree
from hepml.tasks.dqm.data import DQMConfig, LumisectionData, build_representation
from hepml.tasks.dqm.outputs import _plots, _write_flagged_csv, _write_friend_trees
from hepml.tasks.dqm.scores import score_lumisections
from hepml.training import load_checkpoint, model_from_checkpoint, resolve_device, save_checkpoint

log = logging.getLogger(__package__)


#: Key of the scoring calibration added to ``checkpoint_best.pt`` after training.
CALIBRATION_KEY = "dqm_calibration"


def _store_calibration(checkpoint: Path, calibration: ScoreCalibration,
                       threshold: float) -> None:
    """Add the scoring calibration to the best checkpoint.

    That is what scoring needs besides the weights (score kind, residual spread,
    threshold), so that the checkpoint alone describes the monitor.
    """
    state = load_checkpoint(checkpoint)
    state.pop("format", None)
    state.pop("versions", None)
    state[CALIBRATION_KEY] = {**calibration.to_state(), "threshold": float(threshold)}
    save_checkpoint(checkpoint, state)


def _stored_threshold(checkpoint: Path, calibration: dict[str, Any]) -> tuple[float, str]:
    """The threshold of the training run.

    It is read from ``metrics.json`` beside the checkpoint, or, where that file was not
    copied along, from the copy kept in the checkpoint.
    """
    path = checkpoint.parent / "metrics.json"
    if not path.exists():
        value = calibration.get("threshold")
        if not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ConfigError(f"{checkpoint}: no metrics.json beside the checkpoint and no "
                              "threshold in it; give --threshold")
        return float(value), f"{checkpoint} (no metrics.json beside it)"
    try:
        value = json.loads(path.read_text()).get("threshold")
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"{path}: cannot read the stored threshold ({exc}); "
                          "give --threshold") from None
    if not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ConfigError(f"{path}: holds no finite 'threshold'; give --threshold")
    return float(value), str(path)


def _has_branches(paths: Sequence[str], tree: str, names: Sequence[str]) -> bool:
    return all(all(n in open_tree(p, tree).keys() for n in names) for p in paths)


def score_files(checkpoint: str | Path, files: Sequence[str], out_dir: str | Path, *,
                threshold: float | None = None, device: str = "auto", tree: str | None = None,
                progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Score the lumisections of ``files`` with a trained monitor.

    The maps are built as in training and must have the binning the model was trained
    on. Writes, under ``out_dir``: ``predictions/<stem>.dqm.root`` friend trees,
    ``flagged_lumisections.csv``, ``timeline`` and ``residual_map_N`` plots and
    ``dqm_summary.json``; with the truth branch in the files also ``score_distributions``
    and the detection table.

    Args:
        checkpoint: ``checkpoint_best.pt`` of a dqm run.
        files: ROOT files or globs.
        out_dir: Output directory.
        threshold: Flag LS above this score (default: the one the training run stored in
            its ``metrics.json``).
        device: ``auto``, ``cpu``, ``cuda``...
        tree: Tree name (default: the training one).
        progress: Called with a line of text per run (for the CLI).

    Returns:
        The summary written to ``dqm_summary.json``.
    """
    checkpoint = Path(checkpoint)
    state = load_checkpoint(checkpoint)
    config = state.get("config") or {}
    if config.get("task") != "dqm":
        raise CheckpointError(f"{checkpoint}: not a checkpoint of a dqm run "
                              f"(task {config.get('task')!r})")
    calibration = state.get(CALIBRATION_KEY)
    if calibration is None:
        raise CheckpointError(f"{checkpoint}: holds no scoring calibration ({CALIBRATION_KEY}); "
                              "use checkpoint_best.pt of a finished dqm run")
    if threshold is None:
        threshold, source = _stored_threshold(checkpoint, calibration)
    else:
        source = "--threshold"
    representation = build_representation(dict(config["representation"]))
    dqm = from_mapping(DQMConfig, config.get("dqm") or {}, where="checkpoint dqm")
    data_cfg = dict(config["data"])
    data_cfg.update(files=list(files), max_entries=None, split=[0.0, 0.0, 1.0])
    if tree:
        data_cfg["tree"] = tree
    data_config = from_mapping(DataConfig, data_cfg, where="dqm")
    paths = expand_files(data_config.files)
    truth_fields = ([dqm.truth] + ([f"{h}{dqm.mask_suffix}" for h in
                                     representation.config.histograms]
                                    if dqm.mask_suffix else [])) if dqm.truth else []
    with_truth = bool(dqm.truth) and _has_branches(paths, data_config.tree, truth_fields)
    if dqm.truth and not with_truth:
        log.info("no %s branch (or fault masks) in the files: scores only", dqm.truth)
    data = LumisectionData(data_config, representation, dqm, seed=0, with_truth=with_truth,
                           cache=False)
    model = model_from_checkpoint(state, source=checkpoint)
    dev = resolve_device(device, what="--device")
    model.to(dev)
    flatten = state["model"]["kind"] == "autoencoder"
    scored = score_lumisections(model, data, device=dev, flatten=flatten, dqm=dqm,
                                calibration=ScoreCalibration.from_state(calibration))
    flagged = ~data.excluded & (np.nan_to_num(scored.score, nan=-np.inf) > threshold)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    trees = _write_friend_trees(out_dir / "predictions", data, scored, flagged, with_split=False,
                                metadata={"checkpoint": str(checkpoint), "threshold": threshold,
                                          "threshold_source": source})
    csv_path = _write_flagged_csv(out_dir / "flagged_lumisections.csv", data, scored, flagged,
                                  threshold, calibration.get("names") or ())
    plots = _plots(out_dir, data, scored, flagged, threshold, title=checkpoint.parent.name,
                   distributions=with_truth, score=calibration["score"])
    per_run = {}
    for r in np.unique(data.run):
        sel = data.run == r
        per_run[str(int(r))] = {"n_lumisections": int(sel.sum()),
                                "n_excluded": int((sel & data.excluded).sum()),
                                "n_flagged": int((sel & flagged).sum())}
        if progress:
            progress(f"run {int(r)}: {per_run[str(int(r))]['n_flagged']} of {int(sel.sum())} "
                     f"lumisections flagged (threshold {threshold:.4g} from {source})")
    summary: dict[str, Any] = {"checkpoint": str(checkpoint), "threshold": threshold,
                               "threshold_source": source, "files": data.source.paths,
                               "runs": per_run, "n_lumisections": data.num_entries,
                               "n_flagged": int(flagged.sum()),
                               "excluded_lumisections": [
                                   {"run": int(r), "lumi": int(lu)} for r, lu in
                                   zip(data.run[data.excluded], data.lumi[data.excluded],
                                       strict=True)],
                               "friend_trees": [str(t) for t in trees],
                               "flagged_csv": str(csv_path),
                               "plots": [str(p) for p in plots if str(p).endswith(".png")],
                               "timing": {"scoring_s": scored.seconds}}
    if with_truth:
        summary.update(dqm_metrics(scored, data, threshold=threshold, device=dev, dqm=dqm,
                                   test_split=None))
    evaluation.write_metrics_json(out_dir / "dqm_summary.json", summary)
    return summary
