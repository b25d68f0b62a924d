"""Scoring many files on dask: ``hepml predict`` and ``hepml scan --checkpoint`` over globs.

The cluster runs use real worker processes, not threads: ``hepml predict`` starts the
CLI's default LocalCluster with ``--workers 2``; ``hepml scan`` is given the address of a
LocalCluster of 2 worker processes started by the test (``--scheduler ADDRESS``). Bad files
(truncated, no tree, a corrupt basket, NaN values) are skipped and listed; the outputs of
the good files are compared with direct torch forward passes of the checkpoint's model
and with the serial scan.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import shutil
from contextlib import redirect_stdout
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
import yaml

from hepml.cli import main
from hepml.io import write_tree
from hepml.models import build_model
from hepml.tasks import tagging
from hepml.training import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
GOOD_JETS = {"jets_a": (0, 400), "jets_b": (400, 700), "jets_c": (1000, 1500)}


def _write_jets(src: Path, dst: Path, start: int, stop: int, edit=None) -> Path:
    arrays = uproot.open(src)["tree"].arrays(entry_start=start, entry_stop=stop)
    branches = {k: arrays[k] for k in arrays.fields if k != "npart"}
    if edit:
        edit(branches)
    write_tree(dst, branches)
    return dst


def _truncate(src: Path, dst: Path, keep: float = 0.6) -> Path:
    data = src.read_bytes()
    dst.write_bytes(data[: int(len(data) * keep)])
    return dst


def _corrupt_basket(src: Path, dst: Path, branch: str, tree: str) -> Path:
    """A copy of ``src`` of the same size whose first basket of ``branch`` is garbage."""
    shutil.copy(src, dst)
    b = uproot.open(src)[tree][branch]
    seek, size = int(b.member("fBasketSeek")[0]), int(b.member("fBasketBytes")[0])
    with dst.open("r+b") as f:  # keep the key header (~100 bytes), overwrite the payload
        f.seek(seek + 100)
        f.write(bytes(range(256)) * ((size - 120) // 256) + b"\0" * ((size - 120) % 256))
    return dst


def _no_tree(dst: Path) -> Path:
    write_tree(dst, {"x": np.arange(10.0)}, tree="other")
    return dst


def _reference_scores(checkpoint: Path, path: Path) -> np.ndarray:
    """Softmax scores from the checkpoint's model applied by hand to the file's entries."""
    state = load_checkpoint(checkpoint)
    representation = tagging.build_representation(dict(state["config"]["representation"]))
    model = build_model(state["model"]["kind"], **state["model"]["kwargs"])
    model.load_state_dict(state["model_state"])
    model.eval()
    arrays = uproot.open(path)["tree"].arrays(list(representation.required_fields))
    with torch.no_grad():
        return torch.softmax(model(representation(arrays)), dim=1).numpy()


@pytest.fixture(scope="module")
def cnn_checkpoint(tmp_path_factory, jets_sample) -> Path:
    tmp = tmp_path_factory.mktemp("cnn")
    cfg = yaml.safe_load((ROOT / "workflows" / "top_tagging_cnn.yaml").read_text())
    cfg["data"].update(files=[str(jets_sample)], max_entries=600)
    cfg["representation"]["npix"] = 16
    cfg["model"]["dense"] = [16]
    cfg["training"].update(epochs=1, batch_size=64, device="cpu", num_threads=1)
    cfg["evaluation"]["n_bootstrap"] = 5
    cfg["runs_dir"] = str(tmp / "runs")
    path = tmp / "cnn.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["-q", "run", str(path)]) == 0
    return next((tmp / "runs").glob("*/checkpoint_best.pt"))


@pytest.fixture(scope="module")
def jets_dir(tmp_path_factory, jets_sample) -> Path:
    d = tmp_path_factory.mktemp("jets")
    for name, (a, b) in GOOD_JETS.items():
        _write_jets(jets_sample, d / f"{name}.root", a, b)
    _truncate(d / "jets_a.root", d / "truncated.root")
    _no_tree(d / "no_tree.root")
    return d


@pytest.fixture(scope="module")
def cluster_predictions(cnn_checkpoint, jets_dir, tmp_path_factory):
    """``hepml predict`` over the glob on a LocalCluster of 2 worker processes."""
    out = tmp_path_factory.mktemp("scored")
    buf = io.StringIO()
    with redirect_stdout(buf):
        code = main(["predict", "--checkpoint", str(cnn_checkpoint), str(jets_dir / "*.root"),
                     "--out", str(out), "--workers", "2", "--device", "cpu",
                     "--step-size", "128"])
    return code, buf.getvalue(), out


def test_predict_glob_skips_bad_files_on_a_local_cluster(cnn_checkpoint, jets_dir,
                                                         cluster_predictions):
    code, stdout, out = cluster_predictions
    assert code == 0
    written = sorted(p.name for p in (out / "predictions").iterdir())
    assert written == sorted(f"{name}.predictions.root" for name in GOOD_JETS)
    for name, (a, b) in GOOD_JETS.items():
        src = jets_dir / f"{name}.root"
        pred = uproot.open(out / "predictions" / f"{name}.predictions.root")["predictions"]
        assert pred.num_entries == uproot.open(src)["tree"].num_entries == b - a
        got = pred.arrays(library="np")
        ref = _reference_scores(cnn_checkpoint, src)
        np.testing.assert_allclose(got["score_QCD"], ref[:, 0], atol=1e-6)
        np.testing.assert_allclose(got["score_top"], ref[:, 1], atol=1e-6)
        truth = uproot.open(src)["tree"]["label_Tbqq"].array(library="np")
        assert (got["label"] == truth).all()  # same entries, same order
    # both bad files, with their causes, on stdout and in skipped_files.json
    truncated, no_tree = str(jets_dir / "truncated.root"), str(jets_dir / "no_tree.root")
    lines = {line.strip().split(": ")[0].rstrip(":"): line for line in stdout.splitlines()
             if line.startswith("  ")}
    assert "the file is truncated" in lines[truncated] and "no tree 'tree'" in lines[no_tree]
    skipped = {s["path"]: s["error"] for s in json.loads((out / "skipped_files.json").read_text())}
    assert set(skipped) == {truncated, no_tree}
    assert "the file is truncated" in skipped[truncated]
    assert "no tree 'tree'" in skipped[no_tree] and "other" in skipped[no_tree]
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["files_scored"] == 3 and summary["files_skipped"] == 2
    assert summary["n_entries"] == sum(b - a for a, b in GOOD_JETS.values())
    assert summary["scheduler"].startswith("LocalCluster (2 process workers")
    assert {s["path"] for s in summary["skipped"]} == {truncated, no_tree}


def test_synchronous_scheduler_gives_the_same_friend_trees(cnn_checkpoint, jets_dir,
                                                           cluster_predictions, tmp_path):
    _, _, cluster_out = cluster_predictions
    out = tmp_path / "sync"
    assert main(["-q", "predict", "--checkpoint", str(cnn_checkpoint), str(jets_dir / "*.root"),
                 "--out", str(out), "--scheduler", "synchronous", "--device", "cpu"]) == 0
    for name in GOOD_JETS:
        a = uproot.open(out / "predictions" / f"{name}.predictions.root")["predictions"]
        b = uproot.open(cluster_out / "predictions" / f"{name}.predictions.root")["predictions"]
        assert a.keys() == b.keys()
        a, b = a.arrays(library="np"), b.arrays(library="np")
        for key in a:
            np.testing.assert_array_equal(a[key], b[key])
    summary = json.loads((out / "predict_summary.json").read_text())
    assert summary["scheduler"] == "synchronous" and summary["files_skipped"] == 2


def test_all_files_bad_is_an_error(cnn_checkpoint, jets_dir, jets_sample, tmp_path, capsys):
    """Each stage's failure names its cause: read check, tree, corrupt basket, NaN values."""
    bad = tmp_path / "bad"
    bad.mkdir()
    _truncate(jets_dir / "jets_a.root", bad / "truncated.root")
    _no_tree(bad / "no_tree.root")
    _corrupt_basket(jets_dir / "jets_b.root", bad / "corrupt.root", "part_px", "tree")

    def nan_px(branches):
        px = ak.to_list(branches["part_px"])
        px[7][0] = float("nan")
        branches["part_px"] = ak.Array(px)

    _write_jets(jets_sample, bad / "nan.root", 0, 50, edit=nan_px)
    out = tmp_path / "out"
    code = main(["predict", "--checkpoint", str(cnn_checkpoint), str(bad / "*.root"),
                 "--out", str(out), "--scheduler", "synchronous", "--device", "cpu"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(err) == 1 and "none of the 4 input file(s) could be scored" in err[0]
    skipped = {Path(s["path"]).name: s["error"]
               for s in json.loads((out / "skipped_files.json").read_text())}
    assert set(skipped) == {"truncated.root", "no_tree.root", "corrupt.root", "nan.root"}
    assert "the file is truncated" in skipped["truncated.root"]
    assert "no tree 'tree'" in skipped["no_tree.root"]
    assert "cannot read entries 0-" in skipped["corrupt.root"]  # read by uproot.dask, caught
    assert "probably truncated or corrupt" in skipped["corrupt.root"]
    assert "NaN" in skipped["nan.root"] and "part_px" in skipped["nan.root"]
    assert not (out / "predictions").exists()


# ------------------------------------------------------------------------- anomaly scan


def _events(n: int, seed: int) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    x = z @ np.array([[1.0, 0.5, -0.3, 0.8], [0.2, -1.0, 0.7, 0.4]]) + rng.normal(0, 0.05, (n, 4))
    odd = rng.random(n) < 0.05
    x[odd] += rng.normal(0, 1.5, (int(odd.sum()), 4))
    out = {f"f{k}": x[:, k] for k in range(4)}
    out["Run"] = np.full(n, 100 + seed, np.int32)
    out["Event"] = np.arange(n, dtype=np.int64) + 1
    return out


@pytest.fixture(scope="module")
def anomaly_checkpoint(tmp_path_factory) -> Path:
    tmp = tmp_path_factory.mktemp("ae")
    write_tree(tmp / "train.root", _events(1000, seed=0), tree="events")
    cfg = {
        "name": "ae", "task": "anomaly", "seed": 1,
        "data": {"files": [str(tmp / "train.root")], "tree": "events", "step_size": 300,
                 "labels": [], "class_names": []},
        "representation": {"kind": "features", "features": ["f0", "f1", "f2", "f3"]},
        "model": {"kind": "autoencoder", "hidden": [8], "latent_dims": 2},
        "anomaly": {"ids": ["Run", "Event"], "top": 10},
        "training": {"epochs": 2, "batch_size": 128, "learning_rate": 0.01, "device": "cpu",
                     "num_threads": 1},
        "runs_dir": str(tmp / "runs"),
    }
    (tmp / "ae.yaml").write_text(yaml.safe_dump(cfg))
    assert main(["-q", "scan", str(tmp / "ae.yaml")]) == 0
    return next((tmp / "runs").glob("ae-*/checkpoint_best.pt"))


def test_scan_glob_ranks_like_the_serial_scan(anomaly_checkpoint, tmp_path, capsys):
    from distributed import LocalCluster

    from hepml.config import DataConfig, from_mapping
    from hepml.tasks import anomaly

    d = tmp_path / "events"
    d.mkdir()
    sizes = {"run_a": 500, "run_b": 250, "run_c": 800}
    for k, (name, n) in enumerate(sizes.items()):
        write_tree(d / f"{name}.root", _events(n, seed=10 + k), tree="events")
    _truncate(d / "run_c.root", d / "truncated.root")
    _no_tree(d / "no_tree.root")
    out = tmp_path / "scan"
    # a running cluster of 2 worker processes, given by its address
    with LocalCluster(n_workers=2, threads_per_worker=1, dashboard_address=":0") as cluster:
        assert main(["scan", "--checkpoint", str(anomaly_checkpoint), str(d / "*.root"),
                     "--out", str(out), "--top", "15", "--device", "cpu",
                     "--scheduler", cluster.scheduler_address]) == 0
    stdout = capsys.readouterr().out
    assert "truncated.root: the file is truncated" in stdout and "no tree 'events'" in stdout
    skipped = json.loads((out / "skipped_files.json").read_text())
    assert sorted(Path(s["path"]).name for s in skipped) == ["no_tree.root", "truncated.root"]

    # friend trees: one entry per input entry, scores from the model by hand
    state = load_checkpoint(anomaly_checkpoint)
    model = build_model(state["model"]["kind"], **state["model"]["kwargs"])
    model.load_state_dict(state["model_state"])
    model.eval()
    good = [str(d / f"{name}.root") for name in sizes]
    by_hand = []
    for path in good:
        a = uproot.open(path)["events"].arrays(["f0", "f1", "f2", "f3"], library="np")
        x = torch.from_numpy(np.stack([a[f"f{k}"] for k in range(4)], 1).astype(np.float32))
        with torch.no_grad():
            reco = model(x)["reconstruction"]
        by_hand.append((((x - reco) / model.scale) ** 2).mean(1).numpy())
        friend = uproot.open(out / "predictions" / f"{Path(path).stem}.anomaly.root")["anomaly"]
        assert friend.num_entries == len(a["f0"])
        np.testing.assert_allclose(friend["anomaly_score"].array(library="np"), by_hand[-1],
                                   rtol=1e-5)
    assert sorted(p.name for p in (out / "predictions").iterdir()) == sorted(
        f"{name}.anomaly.root" for name in sizes)

    with (out / "anomalies.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 15
    # the top 15 of all good entries, by hand
    scores = np.concatenate(by_hand)
    order = np.argsort(-scores, kind="stable")[:15]
    starts = np.cumsum([0, *(len(s) for s in by_hand)])
    expected = [(good[np.searchsorted(starts, i, side="right") - 1],
                 int(i - starts[np.searchsorted(starts, i, side="right") - 1])) for i in order]
    assert [(r["file"], int(r["entry"])) for r in rows] == expected
    assert [int(r["Event"]) for r in rows] == [e + 1 for _, e in expected]
    # ... and exactly the rows of the serial scan of the good files
    data_cfg = dict(state["config"]["data"])
    data_cfg.update(files=good, split=[0.0, 0.0, 1.0], max_entries=None)
    data = anomaly.AnomalyData(from_mapping(DataConfig, data_cfg, where="test"),
                               tagging.build_representation(dict(state["config"]["representation"])),
                               seed=0, extra_fields=["Run", "Event"], cache=False)
    result = anomaly.score_data(model, data, device=torch.device("cpu"), batch_size=256, top=15)
    serial = anomaly.ranked_rows(result, data, labels=None, class_names=[], explain=3)
    assert [r["file"] for r in rows] == [r["file"] for r in serial]
    for got, ref in zip(rows, serial, strict=True):
        assert int(got["entry"]) == ref["entry"] and int(got["index"]) == ref["index"]
        assert float(got["score"]) == pytest.approx(ref["score"], rel=1e-12)
        assert got["drivers"] == ref["drivers"]
    summary = json.loads((out / "scan_summary.json").read_text())
    assert summary["files_scored"] == 3 and summary["n_entries"] == sum(sizes.values())
    assert summary["scheduler"] == cluster.scheduler_address
    assert len(summary["skipped"]) == 2


# ------------------------------------------------------------------------- progress bars


@dataclasses.dataclass(frozen=True)
class _CountJob:
    """A scoring job that counts entries: the orchestration without a model."""

    tree: str = "tree"
    fields: tuple[str, ...] = ("jet_pt",)
    optional_fields: tuple[str, ...] = ()
    branches: dict[str, str] | None = None
    step_size: int = 3000

    def score_chunk(self, arrays, *, path, start, stop):
        return len(arrays)

    def write_file(self, path, entries, chunks):
        return {"counted": sum(chunks)}


@pytest.mark.parametrize("scheduler", ["synchronous", "local"])
def test_progress_bars_end_drawn_at_their_total(scheduler, jets_sample, tmp_path, capsys,
                                                monkeypatch):
    """Files that finish within tqdm's redraw interval still leave the bar drawn full."""
    import tqdm.auto

    from hepml.tasks import scoring

    bars = []

    class Recorded(tqdm.auto.tqdm):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            bars.append(self)

    monkeypatch.setattr(tqdm.auto, "tqdm", Recorded)
    files = []
    for name in ("jets_a", "jets_b"):  # two names for the shipped sample
        (tmp_path / f"{name}.root").symlink_to(jets_sample)
        files.append(str(tmp_path / f"{name}.root"))
    report = scoring.score_files(_CountJob(), files, tmp_path / "out", progress=True,
                                 scheduler=None if scheduler == "local" else scheduler,
                                 workers=1, processes=False)
    assert [r["counted"] for r in report.results] == [6000, 6000]
    assert [(b.desc, b.n, b.total) for b in bars] == [("checking", 2, 2), ("scoring", 2, 2)]
    # what was drawn: the last state of each bar before it is cleared on closing
    drawn = capsys.readouterr().err.split("\r")
    for desc in ("checking", "scoring"):
        last = [s for s in drawn if s.startswith(f"{desc}:")][-1]
        assert "100%" in last and "2/2" in last, last
