"""Data-quality monitoring end to end on tiny synthetic runs: maps, threshold, outputs, bad input.

The synthetic runs are Poisson counts around a smooth template (calorimeter eta x phi,
tracker layer x phi) with injected faults and their truth masks, small enough that a tiny
autoencoder trains in seconds. Every number the task reports is checked against a count
made here with numpy from the written friend tree and the input file.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import awkward as ak
import numpy as np
import pytest
import uproot

from hepml.cli import main as cli_main
from hepml.config import load_workflow
from hepml.errors import BadValueError, ConfigError, EmptyInputError
from hepml.evaluation import binomial_rate
from hepml.io import write_tree
from hepml.representations.lumisections import LumisectionMaps
from hepml.tasks import dqm

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "dqm_monitor.yaml"
FAULTS = ["good", "dead_region", "hot_channel", "noisy_layer", "gain_drift", "timing"]

# The shipped workflow made tiny: small model, few epochs, one thread.
SMALL = {"model.channels": [4, 8], "model.latent_dims": 4, "training.epochs": 12,
         "training.batch_size": 16, "training.learning_rate": 0.005,
         "training.scheduler": "none", "training.early_stopping_patience": 0,
         "training.device": "cpu", "training.num_threads": 1, "data.step_size": 50,
         "dqm.residual_maps": 2}


def make_run(path: Path, *, n: int = 120, seed: int = 0, run: int = 1, n_eta: int = 8,
             n_layer: int = 4, n_phi: int = 8, fault_every: int = 5,
             fault_codes: tuple[int, ...] = (1, 2), zero_event: tuple[int, ...] = (),
             eta_max: float = 3.0, nan_at: int | None = None) -> Path:
    """A run of ``n`` LS: Poisson maps around a template; every ``fault_every``-th LS faulty.

    Faults: 1 dead_region (a 3 x 3 calorimeter block reads 0), 2 hot_channel (one tracker
    bin x 8). ``zero_event`` LS (1-based) record no crossings; ``nan_at`` (1-based) puts a
    NaN into a float calorimeter histogram.
    """
    rng = np.random.default_rng(seed)
    eta_edges = np.linspace(-eta_max, eta_max, n_eta + 1)
    phi_edges = np.linspace(-np.pi, np.pi, n_phi + 1)
    eta = 0.5 * (eta_edges[1:] + eta_edges[:-1])
    phi = 0.5 * (phi_edges[1:] + phi_edges[:-1])
    calo_rate = 0.4 * (1 + eta[:, None] ** 2 / 4) * (1 + 0.1 * np.cos(phi[None, :]))
    trk_rate = (1.5 / (1 + np.arange(n_layer)))[:, None] * np.ones((1, n_phi))
    n_events = rng.integers(180, 220, n)
    fault = np.zeros(n, np.int32)
    fault[fault_every - 1::fault_every] = np.resize(np.asarray(fault_codes, np.int32),
                                                    len(fault[fault_every - 1::fault_every]))
    calo_mu = np.broadcast_to(calo_rate, (n, n_eta, n_phi)) * n_events[:, None, None]
    trk_mu = np.broadcast_to(trk_rate, (n, n_layer, n_phi)) * n_events[:, None, None]
    calo_mu, trk_mu = calo_mu.copy(), trk_mu.copy()
    cmask = np.zeros((n, n_eta, n_phi), np.uint8)
    tmask = np.zeros((n, n_layer, n_phi), np.uint8)
    for i in np.flatnonzero(fault == 1):
        e0, p0 = rng.integers(0, n_eta - 2), rng.integers(0, n_phi - 2)
        calo_mu[i, e0:e0 + 3, p0:p0 + 3] = 0
        cmask[i, e0:e0 + 3, p0:p0 + 3] = 1
    for i in np.flatnonzero(fault == 2):
        lay, p0 = rng.integers(0, n_layer), rng.integers(0, n_phi)
        trk_mu[i, lay, p0] *= 8
        tmask[i, lay, p0] = 1
    calo = rng.poisson(calo_mu).astype(np.int32)
    trk = rng.poisson(trk_mu).astype(np.int32)
    for z in zero_event:
        n_events[z - 1] = 0
        calo[z - 1] = 0
        trk[z - 1] = 0
    calo_out: np.ndarray = calo
    if nan_at is not None:
        calo_out = calo.astype(np.float32)
        calo_out[nan_at - 1, 1, 2] = np.nan
    meta = {"histograms": {
        "calo_occupancy": {"axes": [{"name": "eta", "edges": eta_edges.tolist()},
                                    {"name": "phi", "edges": phi_edges.tolist()}]},
        "tracker_occupancy": {"axes": [{"name": "layer",
                                        "edges": (np.arange(n_layer + 1) - 0.5).tolist()},
                                       {"name": "phi", "edges": phi_edges.tolist()}]}},
        "faults": FAULTS}
    write_tree(path, {"run": np.full(n, run, np.int32), "lumi": np.arange(1, n + 1, dtype=np.int32),
                      "n_events": n_events.astype(np.int32), "fault": fault,
                      "calo_occupancy": calo_out, "tracker_occupancy": trk,
                      "calo_occupancy_fault": cmask, "tracker_occupancy_fault": tmask},
               tree="lumis", metadata=meta)
    return path


def _args(workflow: Path, files: list[Path], runs_dir: Path, **extra) -> list[str]:
    args = ["-q", "run", str(workflow), "--runs-dir", str(runs_dir)]
    for key, value in {**SMALL, **extra}.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    args += ["--set", f"data.files={json.dumps([str(f) for f in files])}"]
    return args


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One small training run on a synthetic run.

    The run has dead regions, hot channels and two LS without crossings.
    """
    tmp = tmp_path_factory.mktemp("dqm")
    sample = make_run(tmp / "run1.root", zero_event=(7, 33))
    assert cli_main(_args(WORKFLOW, [sample], tmp / "runs")) == 0
    (run_dir,) = (tmp / "runs").iterdir()
    return {"dir": run_dir, "sample": sample, "tmp": tmp}


# --------------------------------------------------------------------------- representation
def _arrays(n: int = 5, seed: int = 1) -> tuple[ak.Array, dict[str, np.ndarray]]:
    rng = np.random.default_rng(seed)
    raw = {"calo_occupancy": rng.integers(0, 50, (n, 3, 4)).astype(np.int32),
           "tracker_occupancy": rng.integers(0, 90, (n, 2, 4)).astype(np.int32),
           "n_events": np.array([100, 0, 37, 250, 1][:n], np.int32),
           "run": np.full(n, 7, np.int32), "lumi": np.arange(1, n + 1, dtype=np.int32)}
    return ak.zip({k: ak.Array(v) for k, v in raw.items()}, depth_limit=1), raw


def test_maps_stack_histograms_and_divide_by_crossings_like_numpy():
    """Maps = stacked histograms / crossings, as numpy computes them."""
    arrays, raw = _arrays()
    maps = LumisectionMaps()
    x = maps(arrays).numpy()
    stacked = np.concatenate([raw["calo_occupancy"], raw["tracker_occupancy"]], axis=1)
    n = raw["n_events"].astype(np.float64)
    expected = np.zeros_like(stacked, dtype=np.float64)
    ok = n > 0
    expected[ok] = stacked[ok] / n[ok, None, None]
    assert x.shape == (5, 1, 5, 4) and x.dtype == np.float32
    np.testing.assert_allclose(x[:, 0], expected, rtol=1e-6)
    np.testing.assert_array_equal(maps.empty_mask(arrays), n == 0)
    raw_maps = LumisectionMaps({"normalize": "none"})(arrays).numpy()[:, 0]
    np.testing.assert_array_equal(raw_maps[ok], stacked[ok])
    assert (raw_maps[~ok] == 0).all()


def test_binding_records_shapes_and_edges_and_refuses_another_binning():
    """The bound binning is recorded and another one is refused by name."""
    arrays, _ = _arrays()
    meta = {"histograms": {"calo_occupancy": {"axes": [
        {"name": "eta", "edges": [-1.5, -0.5, 0.5, 1.5]},
        {"name": "phi", "edges": [0.0, 1.0, 2.0, 3.0, 4.0]}]}}}
    maps = LumisectionMaps().bind(LumisectionMaps().observed_binning(arrays, meta))
    recorded = maps.to_dict()["binning"]
    assert recorded["calo_occupancy"]["shape"] == [3, 4]
    assert recorded["calo_occupancy"]["axes"][0]["edges"] == [-1.5, -0.5, 0.5, 1.5]
    assert recorded["tracker_occupancy"] == {"shape": [2, 4]}
    assert maps.output_shape == (1, 5, 4)
    assert LumisectionMaps.from_dict(maps.to_dict()) == maps
    lay, i, j = maps.channel(2, 3)
    assert (lay.name, i, j) == ("calo_occupancy", 2, 3)
    assert lay.centers(i, j) == {"eta": 1.0, "phi": 3.5}
    assert maps.channel(4, 0)[0].name == "tracker_occupancy"
    other = json.loads(json.dumps(meta))
    other["histograms"]["calo_occupancy"]["axes"][0]["edges"] = [-3.0, -1.0, 1.0, 3.0]
    with pytest.raises(BadValueError, match="calo_occupancy.*eta: 3 bins \\[-3, 3\\].*"
                                            "trained on eta: 3 bins \\[-1.5, 1.5\\]"):
        maps.bind(maps.observed_binning(arrays, other))
    wider = ak.zip({**{f: arrays[f] for f in arrays.fields},
                    "calo_occupancy": ak.Array(np.zeros((5, 4, 4), np.int32))}, depth_limit=1)
    with pytest.raises(BadValueError, match="'calo_occupancy' has binning 4 x 4 bins"):
        maps(wider)


def test_histograms_must_share_the_phi_axis():
    """Histograms with different last axes cannot be stacked."""
    arrays, raw = _arrays()
    odd = ak.zip({**{f: arrays[f] for f in arrays.fields},
                  "tracker_occupancy": ak.Array(np.zeros((5, 2, 6), np.int32))}, depth_limit=1)
    with pytest.raises(BadValueError, match="do not share their last axis"):
        LumisectionMaps().observed_binning(odd)
    with pytest.raises(BadValueError, match="share their last axis"):
        LumisectionMaps()(odd)


def test_nan_bins_and_negative_counts_name_run_lumi_and_histogram():
    """Bad bins and event counts are reported with run, lumi and histogram."""
    arrays, raw = _arrays()
    calo = raw["calo_occupancy"].astype(np.float32)
    calo[3, 0, 1] = np.inf
    bad = ak.zip({**{f: arrays[f] for f in arrays.fields}, "calo_occupancy": ak.Array(calo)},
                 depth_limit=1)
    with pytest.raises(BadValueError, match="run 7 lumi 4: histogram 'calo_occupancy' has 1 NaN"):
        LumisectionMaps()(bad)
    events = raw["n_events"].copy()
    events[2] = -1
    neg = ak.zip({**{f: arrays[f] for f in arrays.fields}, "n_events": ak.Array(events)},
                 depth_limit=1)
    with pytest.raises(BadValueError, match="run 7 lumi 3: 'n_events' is -1 "):
        LumisectionMaps()(neg)


def test_binomial_rates_against_hand_values():
    """Rates, uncertainties and intervals against hand values."""
    r = binomial_rate(3, 12)
    assert r["value"] == 0.25 and r["uncertainty"] == pytest.approx(np.sqrt(0.25 * 0.75 / 12))
    lo, hi = r["interval_68"]
    assert lo < 0.25 < hi
    zero = binomial_rate(0, 50)
    assert zero["uncertainty"] == 0 and zero["interval_68"][0] == 0 and zero["interval_68"][1] > 0
    assert np.isnan(binomial_rate(0, 0)["value"])


# --------------------------------------------------------------------------- end to end
def test_run_outputs_and_numbers_match_a_numpy_count(trained):
    """Threshold, flags, false alarms and efficiencies match a numpy count."""
    run_dir, sample = trained["dir"], trained["sample"]
    for name in ("metrics.json", "report.html", "timeline.png", "timeline.pdf",
                 "score_distributions.png", "residual_map_1.png", "residual_map_2.png",
                 "history.png", "checkpoint_best.pt", "flagged_lumisections.csv", "split.npy"):
        assert (run_dir / name).exists(), name
    m = json.loads((run_dir / "metrics.json").read_text())
    friend = uproot.open(run_dir / "predictions" / "run1.dqm.root")["dqm"].arrays(library="np")
    truth = uproot.open(sample)["lumis"].arrays(["fault", "n_events", "calo_occupancy_fault",
                                                  "tracker_occupancy_fault"], library="np")
    score, flagged, split = friend["anomaly_score"], friend["flagged"], friend["split"]
    fault = truth["fault"]
    assert len(score) == 120
    np.testing.assert_array_equal(split, np.load(run_dir / "split.npy"))
    # LS without crossings: excluded, NaN score, never flagged, listed
    empty = truth["n_events"] == 0
    np.testing.assert_array_equal(friend["excluded"], empty)
    assert np.isnan(score[empty]).all() and not flagged[empty].any()
    assert np.isfinite(score[~empty]).all()
    assert m["excluded_lumisections"] == [{"run": 1, "lumi": 7}, {"run": 1, "lumi": 33}]
    # threshold: the 99 % quantile of the good validation LS
    val_good = (split == 1) & (fault == 0) & ~empty
    assert m["threshold"] == pytest.approx(np.quantile(score[val_good].astype(np.float64), 0.99),
                                           rel=1e-6)
    np.testing.assert_array_equal(flagged, ~empty & (score > m["threshold"]))
    # false-alarm rate on the good test LS
    test_good = (split == 2) & (fault == 0) & ~empty
    far = m["false_alarm_rate"]
    assert (far["passed"], far["total"]) == (int(flagged[test_good].sum()), int(test_good.sum()))
    assert far["value"] == pytest.approx(flagged[test_good].mean())
    # efficiency per type over all faulty LS, with the fraction of channels touched
    masks = np.concatenate([truth["calo_occupancy_fault"], truth["tracker_occupancy_fault"]], 1)
    for code, name in ((1, "dead_region"), (2, "hot_channel")):
        sel = (fault == code) & ~empty
        row = m["detection"][name]
        assert row["efficiency"]["total"] == sel.sum()
        assert row["efficiency"]["passed"] == flagged[sel].sum()
        frac = masks[sel].reshape(sel.sum(), -1).mean(1).mean()
        assert row["channel_fraction"]["mean"] == pytest.approx(frac)
        assert row["touches_coverage"] == (frac >= 0.01)
    # the obvious fault is found and localised
    dead = m["detection"]["dead_region"]
    assert dead["efficiency"]["value"] >= 0.9
    assert dead["top1_in_mask"]["value"] >= 0.9
    assert dead["topk_precision"]["mean"] > 5 * dead["topk_precision"]["random_expectation"]
    assert m["n_flagged"] == flagged.sum()


def test_flagged_csv_lists_flagged_lumisections_with_their_channels(trained):
    """The CSV lists exactly the flagged LS, with truth and top channels."""
    run_dir = trained["dir"]
    friend = uproot.open(run_dir / "predictions" / "run1.dqm.root")["dqm"].arrays(library="np")
    fault = uproot.open(trained["sample"])["lumis"]["fault"].array(library="np")
    with open(run_dir / "flagged_lumisections.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["lumi"]) for r in rows] == list(np.flatnonzero(friend["flagged"]) + 1)
    for r in rows:
        assert r["fault"] == FAULTS[fault[int(r["lumi"]) - 1]]
        assert float(r["anomaly_score"]) > float(r["threshold"])
        if r["fault"] == "dead_region":
            assert r["top1_histogram"] == "calo_occupancy"
            assert r["top1_center"].startswith("eta=") and " phi=" in r["top1_center"]
            assert float(r["top1_residual"]) < 0  # a dead block reads less than expected


def test_hepml_dqm_scores_another_run_with_the_stored_threshold(trained, capsys):
    """`hepml dqm` scores a second run with the training run's threshold."""
    run_dir, tmp = trained["dir"], trained["tmp"]
    other = make_run(tmp / "run2.root", seed=5, run=2, fault_codes=(1,))
    out = tmp / "scored"
    capsys.readouterr()
    assert cli_main(["dqm", "--checkpoint", str(run_dir / "checkpoint_best.pt"), str(other),
                     "--out", str(out), "--device", "cpu"]) == 0
    printed = capsys.readouterr().out
    threshold = json.loads((run_dir / "metrics.json").read_text())["threshold"]
    summary = json.loads((out / "dqm_summary.json").read_text())
    assert summary["threshold"] == pytest.approx(threshold)
    assert summary["threshold_source"].endswith("metrics.json")
    friend = uproot.open(out / "predictions" / "run2.dqm.root")["dqm"].arrays(library="np")
    assert len(friend["anomaly_score"]) == 120
    n_flagged = int((friend["anomaly_score"] > threshold).sum())
    assert f"run 2: {n_flagged} of 120 lumisections flagged (threshold" in printed
    assert "metrics.json" in printed
    fault = uproot.open(other)["lumis"]["fault"].array(library="np")
    assert summary["detection"]["dead_region"]["efficiency"]["passed"] == int(
        (friend["flagged"] & (fault == 1)).sum())
    for name in ("flagged_lumisections.csv", "timeline.png", "residual_map_1.png"):
        assert (out / name).exists(), name
    # an explicit threshold wins, and says so
    summary2 = dqm.score_files(run_dir / "checkpoint_best.pt", [str(other)], tmp / "scored2",
                               threshold=1e9, device="cpu")
    assert summary2["n_flagged"] == 0 and summary2["threshold_source"] == "--threshold"


def test_hepml_dqm_refuses_another_binning(trained, capsys):
    """Another phi binning or other eta edges are refused, naming both."""
    run_dir, tmp = trained["dir"], trained["tmp"]
    ckpt = str(run_dir / "checkpoint_best.pt")
    finer = make_run(tmp / "finer.root", n_phi=16, n=20)
    capsys.readouterr()
    assert cli_main(["dqm", "--checkpoint", ckpt, str(finer), "--out", str(tmp / "x")]) == 2
    err = capsys.readouterr().err
    assert "calo_occupancy" in err and "eta: 8 bins [-3, 3], phi: 16 bins" in err
    assert "trained on eta: 8 bins [-3, 3], phi: 8 bins" in err
    wider = make_run(tmp / "wider.root", eta_max=2.5, n=20)
    assert cli_main(["dqm", "--checkpoint", ckpt, str(wider), "--out", str(tmp / "y")]) == 2
    err = capsys.readouterr().err
    assert "histogram 'calo_occupancy' has binning eta: 8 bins [-2.5, 2.5]" in err
    assert "trained on eta: 8 bins [-3, 3]" in err


# --------------------------------------------------------------------------- bad input
def test_a_run_without_good_lumisections_is_refused(tmp_path):
    """A run with only faulty LS cannot train a monitor."""
    sample = make_run(tmp_path / "bad.root", n=40, fault_every=1, fault_codes=(1, 2))
    cfg = load_workflow(WORKFLOW, {**SMALL, "data.files": [str(sample)],
                                   "runs_dir": str(tmp_path / "runs")})
    with pytest.raises(EmptyInputError, match="no good lumisections in the training split.*"
                                              "faulty.*nothing to train"):
        dqm.run(cfg)


def test_nan_bins_stop_the_run_naming_the_lumisection(tmp_path, capsys):
    """A NaN bin stops the run with the LS named."""
    sample = make_run(tmp_path / "nan.root", n=40, nan_at=23)
    assert cli_main(_args(WORKFLOW, [sample], tmp_path / "runs")) == 2
    err = capsys.readouterr().err
    assert "run 1 lumi 23: histogram 'calo_occupancy' has 1 NaN or infinite bins" in err
    assert "nan.root entries" in err


def test_dqm_section_is_checked():
    """The dqm section rejects bad values and unknown keys."""
    with pytest.raises(ConfigError, match="train_on: 'good' needs dqm.truth"):
        dqm.DQMConfig(train_on="good")
    with pytest.raises(ConfigError, match="false_alarm_rate"):
        dqm.DQMConfig(false_alarm_rate=1.5)
    cfg = load_workflow(WORKFLOW, {"dqm.false_alarm": 0.05})
    with pytest.raises(ConfigError, match="'false_alarm' in dqm. Did you mean 'false_alarm_rate'"):
        dqm.run(cfg)
