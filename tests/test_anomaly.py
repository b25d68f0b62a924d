"""Anomaly scans: feature vectors, the scan's figures of merit, and the whole job."""

from __future__ import annotations

import csv
import json
import math
import shutil
import tracemalloc
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import torch
import uproot
import yaml
from scipy.spatial.distance import jensenshannon
from sklearn.metrics import roc_auc_score, roc_curve

from hepml.cli import main
from hepml.errors import BadValueError, ConfigError, MissingBranchError
from hepml.evaluation import anomaly as am
from hepml.evaluation import roc_curve as torch_roc
from hepml.io import write_tree
from hepml.representations import Features
from hepml.tasks import anomaly

# ----------------------------------------------------------------------------- features


def test_features_match_numpy_with_index_fill_and_log():
    arrays = ak.Array({"M": [91.0, 3.1, 250.0],
                       "jet_pt": [[50.0, 30.0], [], [80.0]]})
    rep = Features({"features": ["M", "jet_pt[0]", "jet_pt[1]"], "log": ["M"], "fill": -1.0})
    x = rep(arrays).numpy()
    expected = np.array([[np.log1p(91.0), 50.0, 30.0],
                         [np.log1p(3.1), -1.0, -1.0],
                         [np.log1p(250.0), 80.0, -1.0]], np.float32)
    np.testing.assert_allclose(x, expected, rtol=1e-6)
    assert rep.required_fields == ("M", "jet_pt")
    assert rep.count_empty(arrays) == 2
    np.testing.assert_allclose(rep.to_physical(x)[:, 0], [91.0, 3.1, 250.0], rtol=1e-5)


def test_features_bad_input():
    with pytest.raises(BadValueError, match="'M'.*NaN"):
        Features({"features": ["M"]})(ak.Array({"M": [1.0, np.nan]}))
    with pytest.raises(MissingBranchError):
        Features({"features": ["pt1"]})(ak.Array({"M": [1.0]}))
    with pytest.raises(BadValueError, match="list per entry"):
        Features({"features": ["jet_pt"]})(ak.Array({"jet_pt": [[1.0], [2.0]]}))
    with pytest.raises(ConfigError, match="not in representation.features"):
        Features({"features": ["M"], "log": ["pt"]})
    with pytest.raises(ConfigError, match="name\\[i\\]"):
        Features({"features": ["M+1"]})


# ---------------------------------------------------------------------- figures of merit


@pytest.fixture()
def scores():
    rng = np.random.default_rng(3)
    bkg = rng.normal(0, 1, 5000)
    sig = rng.normal(1.5, 1, 800)
    s = np.concatenate([bkg, sig])
    y = np.concatenate([np.zeros(5000), np.ones(800)])
    return s, y


def test_efficiency_at_background_counts_entries(scores):
    s, y = scores
    roc = torch_roc(torch.from_numpy(s), torch.from_numpy(y))
    bkg = np.sort(s[y == 0])[::-1]
    for k in (50, 5, 1):  # eps_B = k / N_B exactly: keep signal above the (k+1)-th bkg score
        eff_b = k / 5000
        got = am.efficiency_at_background(roc, [eff_b])
        expected = (s[y == 1] > bkg[k]).mean()
        assert got["efficiency"][0].item() == pytest.approx(expected, abs=1e-12)
        assert bool(got["reachable"][0])
        sigma = math.sqrt(expected * (1 - expected) / 800)
        assert got["uncertainty"][0].item() == pytest.approx(sigma, rel=1e-9)
    beyond = am.efficiency_at_background(roc, [1e-4])  # below 1/N_B: not measurable
    assert not bool(beyond["reachable"][0]) and math.isnan(beyond["efficiency"][0].item())


def test_significance_improvement_against_sklearn(scores):
    s, y = scores
    roc = torch_roc(torch.from_numpy(s), torch.from_numpy(y))
    eff, sic = am.significance_improvement(roc, min_background=10)
    fpr, tpr, _ = roc_curve(y, s, drop_intermediate=False)
    keep = fpr * 5000 >= 10
    np.testing.assert_allclose(eff.numpy(), tpr[keep])
    np.testing.assert_allclose(sic.numpy(), tpr[keep] / np.sqrt(fpr[keep]))


def test_mass_sculpting_js_against_scipy():
    rng = np.random.default_rng(5)
    mass = rng.uniform(0, 300, 20000)
    score = mass / 300 + rng.normal(0, 0.3, 20000)  # correlated with the mass: sculpts
    flat = rng.normal(0, 1, 20000)                   # independent of the mass
    edges = np.linspace(0, 300, 31)
    for sc, sculpts in ((score, True), (flat, False)):
        out = am.mass_sculpting(torch.from_numpy(mass), torch.from_numpy(sc), [0.1],
                                bins=30, mass_range=(0.0, 300.0))
        cut = np.quantile(sc, 0.9)
        ref = np.histogram(mass, edges)[0]
        kept = np.histogram(mass[sc > cut], edges)[0]
        np.testing.assert_array_equal(out["all"], ref)
        np.testing.assert_array_equal(out["cuts"]["0.1"]["counts"], kept)
        js = jensenshannon(ref, kept) ** 2  # scipy returns the distance, sqrt(divergence)
        assert out["cuts"]["0.1"]["js_divergence"] == pytest.approx(js, rel=1e-9)
        assert (js > 0.05) == sculpts
        # statistics alone: 2,000 random entries give a small divergence
        assert (js > 3 * out["cuts"]["0.1"]["js_random_subset"]) == sculpts


def test_injection_mask_fraction():
    labels = np.array([0] * 900 + [1] * 100)
    split = np.full(1000, 2)
    mask, n = anomaly.injection_mask(labels, split, background=0, signal=[1], fraction=0.05, seed=1)
    assert n == round(0.05 / 0.95 * 900) == 47
    assert mask[:900].all() and mask[900:].sum() == 47
    mask0, n0 = anomaly.injection_mask(labels, split, background=0, signal=[1], fraction=0.0,
                                       seed=1)
    assert n0 == 0 and mask0.sum() == 900


# ---------------------------------------------------------------------------- the job


def _events(n: int, seed: int, signal_share: float = 0.0, with_labels: bool = True) -> dict:
    """Background: 4 correlated Gaussian features on a 2-D plane; signal off the plane."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 2))
    mix = np.array([[1.0, 0.5, -0.3, 0.8], [0.2, -1.0, 0.7, 0.4]])
    x = z @ mix + rng.normal(0, 0.05, (n, 4))
    is_sig = rng.random(n) < signal_share
    x[is_sig] += rng.normal(0, 1.5, (int(is_sig.sum()), 4))
    out = {f"f{k}": x[:, k].astype(np.float64) for k in range(4)}
    out["mass"] = (80 + 10 * x[:, 0]).astype(np.float64)
    out["Run"] = np.full(n, 1000 + seed, np.int32)
    out["Event"] = np.arange(n, dtype=np.int64) + 1
    if with_labels:
        out["label_bkg"] = (~is_sig).astype(np.int32)
        out["label_sig"] = is_sig.astype(np.int32)
    return out


def _workflow(tmp_path: Path, files: list[str], **anomaly_options) -> Path:
    labels = anomaly_options.pop("labels", True)
    cfg = {
        "name": "scan_test", "task": "anomaly", "seed": 3,
        "data": {"files": files, "tree": "events", "step_size": 700,
                 "labels": ["label_bkg", "label_sig"] if labels else [],
                 "class_names": ["bkg", "sig"] if labels else []},
        "representation": {"kind": "features", "features": ["f0", "f1", "f2", "f3"]},
        "model": {"kind": "autoencoder", "hidden": [16], "latent_dims": 2},
        "anomaly": {"ids": ["Run", "Event"], "mass": "mass", "top": 20,
                    "background_efficiencies": [0.1, 0.01], **anomaly_options},
        "training": {"epochs": 25, "batch_size": 64, "learning_rate": 0.01, "device": "cpu",
                     "early_stopping_patience": 0, "num_threads": 1},
        "runs_dir": str(tmp_path / "runs"),
    }
    path = tmp_path / "scan.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path


def _run_dir(tmp_path: Path) -> Path:
    return next((tmp_path / "runs").glob("scan_test-*"))


def test_scan_job_end_to_end(tmp_path, capsys):
    data = tmp_path / "events.root"
    write_tree(data, _events(3000, seed=1, signal_share=0.2), tree="events")
    assert main(["scan", str(_workflow(tmp_path, [str(data)], signal_fraction=0.05))]) == 0
    assert "AUC" in capsys.readouterr().out
    run = _run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    friend = uproot.open(run / "predictions" / "events.anomaly.root")["anomaly"].arrays(
        library="np")
    test = friend["split"] == 2
    auc = roc_auc_score(friend["label"][test], friend["anomaly_score"][test])
    assert metrics["auc"] == pytest.approx(auc, abs=1e-6)
    assert auc > 0.9  # off-plane entries reconstruct badly
    # eps_S at eps_B = 0.1 recounted from the friend tree
    bkg = np.sort(friend["anomaly_score"][test & (friend["label"] == 0)])[::-1]
    n_b = len(bkg)
    k = int(round(0.1 * n_b))
    sig_scores = friend["anomaly_score"][test & (friend["label"] == 1)]
    if abs(k - 0.1 * n_b) < 1e-9:
        assert metrics["signal_efficiency"]["0.1"]["value"] == pytest.approx(
            (sig_scores > bkg[k]).mean(), abs=1e-6)
    # the scanned sample: test background plus 5 % injected signal
    scanned = friend["scanned"].astype(bool)
    assert (scanned == (test & (friend["label"] == 0)) | (scanned & (friend["label"] == 1))).all()
    n_s = int((scanned & (friend["label"] == 1)).sum())
    assert n_s == round(0.05 / 0.95 * int((scanned & (friend["label"] == 0)).sum()))
    # the ranked list is the top of the scanned sample, with ids and drivers
    with (run / "anomalies.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 20
    order = np.argsort(-np.where(scanned, friend["anomaly_score"], -np.inf))[:20]
    assert [int(r["index"]) for r in rows] == order.tolist()
    assert all(r["Run"] == "1001" for r in rows)
    assert [int(r["Event"]) for r in rows] == (order + 1).tolist()
    assert rows[0]["drivers"].count("%") == 3
    ranked = uproot.open(run / "anomalies.root")["anomalies"].arrays(library="np")
    np.testing.assert_allclose(ranked["score"], [float(r["score"]) for r in rows])
    # sculpting and plots
    assert "0.1" in metrics["mass_sculpting"]["cuts"]
    for name in ("roc", "significance_improvement", "mass_sculpting", "scores", "history"):
        assert (run / f"{name}.png").exists()
    assert (run / "report.html").exists()

    # scoring another file with the checkpoint gives the training run's scores
    other = tmp_path / "other.root"
    shutil.copy(data, other)
    out = tmp_path / "scan_out"
    assert main(["scan", "--checkpoint", str(run / "checkpoint_best.pt"), str(other),
                 "--out", str(out), "--top", "5"]) == 0
    again = uproot.open(out / "predictions" / "other.anomaly.root")["anomaly"].arrays(library="np")
    np.testing.assert_allclose(again["anomaly_score"], friend["anomaly_score"], rtol=1e-5)
    # ... and equal to the mean squared normalised error computed from forward()
    from hepml.models import build_model
    from hepml.training import load_checkpoint

    state = load_checkpoint(run / "checkpoint_best.pt")
    model = build_model(state["model"]["kind"], **state["model"]["kwargs"])
    model.load_state_dict(state["model_state"])
    model.eval()
    arrays = uproot.open(data)["events"].arrays(["f0", "f1", "f2", "f3"], library="np")
    x = torch.from_numpy(np.stack([arrays[f"f{k}"] for k in range(4)], 1)[:50].astype(np.float32))
    with torch.no_grad():
        reco = model(x)["reconstruction"]
    by_hand = (((x - reco) / model.scale) ** 2).mean(1).numpy()
    np.testing.assert_allclose(again["anomaly_score"][:50], by_hand, rtol=1e-4)
    with (out / "anomalies.csv").open() as f:
        assert len(list(csv.DictReader(f))) == 5


def test_signal_fraction_zero_and_unlabelled_data(tmp_path):
    data = tmp_path / "events.root"
    write_tree(data, _events(1500, seed=2, signal_share=0.2), tree="events")
    assert main(["run", str(_workflow(tmp_path, [str(data)], signal_fraction=0.0)),
                 "--set", "training.epochs=2"]) == 0
    metrics = json.loads((_run_dir(tmp_path) / "metrics.json").read_text())
    assert metrics["injection"]["n_signal_injected"] == 0
    assert metrics["injection"]["signal_in_ranked_list"] == 0
    assert "no signal" in metrics["injection"]["note"]
    assert metrics["auc"] is not None  # the ROC still uses all test signal

    shutil.rmtree(tmp_path / "runs")
    plain = tmp_path / "data.root"
    write_tree(plain, _events(1500, seed=4, with_labels=False), tree="events")
    assert main(["run", str(_workflow(tmp_path, [str(plain)], labels=False)),
                 "--set", "training.epochs=2"]) == 0
    run = _run_dir(tmp_path)
    metrics = json.loads((run / "metrics.json").read_text())
    assert "auc" not in metrics and metrics["n_scanned"] == int(round(0.2 * 1500))
    with (run / "anomalies.csv").open() as f:
        assert {r["split"] for r in csv.DictReader(f)} == {"test"}


def test_scan_config_errors(tmp_path):
    data = tmp_path / "events.root"
    write_tree(data, _events(200, seed=2), tree="events")
    assert main(["run", str(_workflow(tmp_path, [str(data)], signal_fraction=1.0))]) == 2
    assert main(["run", str(_workflow(tmp_path, [str(data)], background="nope"))]) == 2
    assert main(["run", str(_workflow(tmp_path, [str(data)], score="kl"))]) == 2  # not a VAE
    bad = _events(200, seed=2)
    bad["f2"][17] = np.nan
    write_tree(tmp_path / "nan.root", bad, tree="events")
    with pytest.raises(BadValueError, match="f2.*NaN"):
        from hepml.config import load_workflow

        anomaly.run(load_workflow(_workflow(tmp_path, [str(tmp_path / "nan.root")])))


def test_scan_memory_does_not_grow_with_input(tmp_path):
    """Scoring ten times the entries keeps the same peak of traced allocations."""
    base = tmp_path / "base.root"
    write_tree(base, _events(4000, seed=6, with_labels=False), tree="events")
    assert main(["run", str(_workflow(tmp_path, [str(base)], labels=False)),
                 "--set", "training.epochs=1"]) == 0
    ckpt = _run_dir(tmp_path) / "checkpoint_best.pt"
    copies = []
    for k in range(10):
        copies.append(tmp_path / f"copy{k}.root")
        shutil.copy(base, copies[-1])

    def peak(files: list[Path]) -> int:
        tracemalloc.start()
        anomaly.scan(ckpt, [str(f) for f in files], tmp_path / f"out{len(files)}",
                     step_size=500, top=10, device="cpu")
        _, high = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        return high

    one, ten = peak(copies[:1]), peak(copies)
    # per-entry scores (3 float64 per entry) are the only part that grows: 40,000 entries
    # -> ~1 MB; a scan that held the inputs of every chunk would need > 10x the chunk size
    assert ten < one + 3 * 8 * 40_000 * 2, (one, ten)


def test_zmumu_workflow_lists_real_events_by_run_and_event(realdata, tmp_path):
    """The shipped workflow scans real CMS data through its branch mapping."""
    root = Path(__file__).resolve().parents[1]
    workflow = root / "workflows" / "anomaly_zmumu.yaml"
    cfg = yaml.safe_load(workflow.read_text())
    cfg["data"]["files"] = [str(realdata / "uproot-Zmumu.root")]
    cfg["runs_dir"] = str(tmp_path / "runs")
    cfg["training"].update(epochs=3, num_threads=1)
    path = tmp_path / "zmumu.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert main(["scan", str(path)]) == 0
    run = next((tmp_path / "runs").glob("anomaly_zmumu-*"))
    with (run / "anomalies.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == cfg["anomaly"]["top"]
    truth = uproot.open(realdata / "uproot-Zmumu.root")["events"].arrays(
        ["Run", "Event", "M", "Q1", "Q2"], library="np")
    for row in rows[:10]:  # ids and features are those of the file's entry
        k = int(row["entry"])
        assert int(row["Run"]) == truth["Run"][k] and int(row["Event"]) == truth["Event"][k]
        assert float(row["mumu_mass"]) == pytest.approx(truth["M"][k], rel=1e-4)
        assert float(row["charge_sum"]) == truth["Q1"][k] + truth["Q2"][k]
        assert row["drivers"].count("%") == 3
    scores = [float(r["score"]) for r in rows]
    assert scores == sorted(scores, reverse=True)


def test_variational_scan_scores_with_kl(tmp_path):
    """A VAE scan writes the KL term and scores by reconstruction error + KL / inputs."""
    data = tmp_path / "events.root"
    write_tree(data, _events(1200, seed=8, signal_share=0.2), tree="events")
    path = _workflow(tmp_path, [str(data)], score="elbo")
    cfg = yaml.safe_load(path.read_text())
    cfg["model"].update(variational=True, beta=0.5)
    cfg["training"]["epochs"] = 2
    path.write_text(yaml.safe_dump(cfg))
    assert main(["run", str(path)]) == 0
    friend = uproot.open(_run_dir(tmp_path) / "predictions" / "events.anomaly.root")["anomaly"]
    a = friend.arrays(library="np")
    assert (a["kl"] >= 0).all()
    np.testing.assert_allclose(a["anomaly_score"], a["reconstruction_error"] + a["kl"] / 4,
                               rtol=1e-5)


def test_interrupted_scan_resumes_to_the_same_result(tmp_path):
    """--resume continues from checkpoint_last.pt and ends as an uninterrupted run."""
    data = tmp_path / "events.root"
    write_tree(data, _events(1200, seed=9, signal_share=0.2), tree="events")
    path = _workflow(tmp_path, [str(data)])
    assert main(["run", str(path), "--set", "training.epochs=4"]) == 0
    full = json.loads((_run_dir(tmp_path) / "metrics.json").read_text())
    shutil.rmtree(tmp_path / "runs")
    assert main(["run", str(path), "--set", "training.epochs=2"]) == 0  # "interrupted" here
    run = _run_dir(tmp_path)
    assert main(["run", str(path), "--set", "training.epochs=4", "--resume", str(run)]) == 0
    resumed = json.loads((run / "metrics.json").read_text())
    assert resumed["training"]["epochs_run"] == 4
    assert resumed["auc"] == pytest.approx(full["auc"], abs=1e-12)
    assert main(["run", str(path), "--resume", str(tmp_path / "nowhere")]) == 2


def test_scan_checkpoint_prints_the_file_of_each_ranked_row(tmp_path, capsys):
    """Two copies of one file rank the same entries twice; each row names its file."""
    from hepml.cli.scan import format_row
    from hepml.models import build_model
    from hepml.training.checkpoint import save_checkpoint

    for name in ("run_a", "run_b"):
        write_tree(tmp_path / f"{name}.root", _events(60, seed=4), tree="events")
    torch.manual_seed(0)
    kwargs = {"input_dims": 4, "hidden": [8], "latent_dims": 2}
    model = build_model("autoencoder", **kwargs)
    config = {"name": "tiny_scan", "task": "anomaly",
              "data": {"files": [str(tmp_path / "run_a.root")], "tree": "events",
                       "labels": [], "class_names": []},
              "representation": {"kind": "features", "features": ["f0", "f1", "f2", "f3"]},
              "anomaly": {"ids": ["Run", "Event"], "top": 6}}
    ckpt = save_checkpoint(tmp_path / "checkpoint_best.pt",
                           {"model": {"kind": "autoencoder", "kwargs": kwargs},
                            "model_state": model.state_dict(), "config": config, "epoch": 1})
    assert main(["-q", "scan", "--checkpoint", str(ckpt), str(tmp_path / "run_*.root"),
                 "--out", str(tmp_path / "out"), "--scheduler", "synchronous"]) == 0
    ranked = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  #")]
    assert len(ranked) == 5
    # equal scores in pairs, told apart by the file
    assert [line.split(": ", 1)[1].split()[2] for line in ranked[:4]] == [
        "run_a.root:", "run_b.root:", "run_a.root:", "run_b.root:"]
    assert ranked[0].split("run_a.root:")[1] == ranked[1].split("run_b.root:")[1]
    assert "Run 1004, Event" in ranked[0]
    row = {"rank": 3, "file": "/data/x/events_7.root", "entry": 12, "index": 99, "score": 2.5}
    assert format_row(row) == "  #3: score 2.5  events_7.root: entry 12"
