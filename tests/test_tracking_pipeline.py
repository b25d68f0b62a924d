"""The tracking job end to end on the shipped hit sample: both trackers, outputs, bad input."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepml.cli import main as cli_main
from hepml.config import load_workflow
from hepml.errors import BadValueError, ConfigError
from hepml.io import write_tree
from hepml.tasks import tracking

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "data_samples" / "tracker_hits_ttbar_pu10.root"

# Small and fast versions of the two workflows: 10 events, tiny models, two epochs.
SMALL = {
    "gnn": {"data.max_entries": 10, "model.hidden": 16, "model.n_iterations": 2,
            "training.epochs": 2, "training.device": "cpu", "training.num_threads": 1},
    "lstm": {"data.max_entries": 10, "model.hidden_size": 16, "model.num_layers": 1,
             "training.epochs": 2, "training.device": "cpu", "training.num_threads": 1},
}


def _cfg(tmp_path: Path, which: str, files: list[str] | None = None, **extra):
    overrides = {**SMALL[which], **extra, "runs_dir": str(tmp_path / "runs"),
                 "data.files": files or [str(SAMPLE)]}
    return load_workflow(ROOT / "workflows" / f"tracking_{which}.yaml", overrides)


def _double_majority_efficiency(tracks: ak.Array, truth: ak.Array, split: np.ndarray,
                                min_pt: float, min_hits: int) -> tuple[int, int]:
    """Reference: loop over test events and particles, counting by hand."""
    found = total = 0
    for ev in np.flatnonzero(split == 2):
        hit_p = truth.hit_particle_id[ev].to_list()
        hit_t = tracks.hit_track_id[ev].to_list()
        p_hits = Counter(hit_p)
        t_hits = Counter(t for t in hit_t if t >= 0)
        shared = Counter((t, p) for t, p in zip(hit_t, hit_p, strict=True) if t >= 0 and p != 0)
        matched = set()
        for t, n_t in t_hits.items():
            if n_t < 4:
                continue
            best = max((n, -p) for (tt, p), n in shared.items() if tt == t) if any(
                tt == t for tt, _ in shared) else None
            if best is None:
                continue
            n, p = best[0], -best[1]
            if 2 * n > n_t and 2 * n > p_hits[p]:
                matched.add(p)
        for pid, pt, nh in zip(truth.particle_id[ev].to_list(), truth.particle_pt[ev].to_list(),
                               truth.particle_nhits[ev].to_list(), strict=True):
            if pt > min_pt and nh >= min_hits:
                total += 1
                found += pid in matched
    return found, total


@pytest.mark.parametrize("which", ["gnn", "lstm"])
def test_workflow_runs_and_metrics_match_a_hand_count(tmp_path, which):
    cfg = _cfg(tmp_path, which)
    run_dir = tracking.run(cfg).run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for name in ("report.html", "efficiency_vs_pt.png", "efficiency_vs_eta.png",
                 "history.png", "checkpoint_best.pt", "config.yaml"):
        assert (run_dir / name).exists(), name
    assert list(run_dir.glob("event_display_*.png"))
    # friend tree: one entry per event, one track id per hit
    friend = uproot.open(run_dir / "predictions" / "tracker_hits_ttbar_pu10.tracks.root")["tracks"]
    tracks = friend.arrays(["hit_track_id", "split"])
    truth = uproot.open(SAMPLE)["hits"].arrays(
        ["nhit", "hit_particle_id", "particle_id", "particle_pt", "particle_nhits"], entry_stop=10)
    assert len(tracks) == 10
    assert ak.to_list(ak.num(tracks.hit_track_id)) == ak.to_list(truth.nhit)
    split = ak.to_numpy(tracks.split)
    np.testing.assert_array_equal(split, np.load(run_dir / "split.npy"))
    found, total = _double_majority_efficiency(tracks, truth, split, 1.0, 5)
    t = metrics["tracking"]
    assert t["n_reconstructable"] == total > 0
    assert t["n_reconstructable_matched"] == found
    assert 0.0 <= metrics["trackml_score"] <= 1.0
    if which == "gnn":
        assert 0.5 < metrics["edges"]["auc"] <= 1.0
        assert (run_dir / "edge_roc.png").exists()


def test_cli_prints_the_tracking_summary(tmp_path, capsys):
    wf = tmp_path / "wf.yaml"
    import yaml

    data = yaml.safe_load((ROOT / "workflows" / "tracking_lstm.yaml").read_text())
    data["data"]["files"] = [str(SAMPLE)]
    wf.write_text(yaml.safe_dump(data))
    args = ["-q", "run", str(wf), "--runs-dir", str(tmp_path / "runs")]
    for key, value in SMALL["lstm"].items():
        args += ["--set", f"{key}={value}"]
    assert cli_main(args) == 0
    out = capsys.readouterr().out
    assert "track efficiency" in out and "TrackML score" in out


def _events_with(tmp_path: Path, edit) -> str:
    """The first 8 shipped events, changed by ``edit(dict of arrays)``, written to a new file."""
    arrays = uproot.open(SAMPLE)["hits"].arrays(entry_stop=8)
    branches = {f: arrays[f] for f in arrays.fields if not f.startswith("n") or f == "n_pileup"}
    edit(branches)
    path = tmp_path / "edited.root"
    write_tree(path, branches, tree="hits")
    return str(path)


def test_events_without_hits_are_handled(tmp_path):
    def empty_two(b):
        keep = np.ones(8, dtype=bool)
        keep[[1, 5]] = False
        for k in list(b):
            if k.startswith(("hit_", "particle_")):
                b[k] = ak.Array([x if keep[i] else [] for i, x in enumerate(b[k].to_list())])

    path = _events_with(tmp_path, empty_two)
    run_dir = tracking.run(_cfg(tmp_path, "lstm", [path], **{"data.max_entries": None})).run_dir
    tracks = uproot.open(run_dir / "predictions" / "edited.tracks.root")["tracks"].arrays()
    assert len(tracks) == 8
    assert ak.num(tracks.hit_track_id)[1] == 0 and ak.num(tracks.hit_track_id)[5] == 0


def test_nan_coordinates_are_a_clear_error(tmp_path):
    def nan_one(b):
        x = b["hit_x"].to_list()
        x[3][7] = float("nan")
        b["hit_x"] = ak.Array(x)

    path = _events_with(tmp_path, nan_one)
    with pytest.raises(BadValueError, match="hit_x"):
        tracking.run(_cfg(tmp_path, "gnn", [path], **{"data.max_entries": None}))


def test_model_must_fit_the_representation(tmp_path):
    with pytest.raises(ConfigError, match="interaction_network"):
        tracking.run(_cfg(tmp_path, "gnn", **{"model.kind": "lstm_tracker"}))


def test_tracking_section_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="edge_threshold"):
        tracking.run(_cfg(tmp_path, "gnn", **{"tracking.edge_threshold": 1.5}))
