"""The main job end to end on the shipped sample.

Run, predict, evaluate, CLI, resume after SIGKILL.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import uproot
import yaml
from conftest import write_workflow

from hepml.cli import main
from hepml.config import load_workflow
from hepml.tasks import tagging

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "top_tagging_cnn.yaml"

# A small, fast version of the main job: 2,000 jets, 16x16 images, a few epochs.
SMALL = {
    "data.max_entries": 2000,
    "representation.npix": 16,
    "model.dense": [32],
    "training.epochs": 3,
    "training.batch_size": 64,
    "training.device": "cpu",
    "training.num_threads": 1,
    "evaluation.n_bootstrap": 20,
}


def _small_workflow(tmp_path: Path, jets_sample: Path, **extra) -> Path:
    return write_workflow(WORKFLOW, tmp_path / "small.yaml", {**SMALL, **extra},
                          files=[jets_sample], runs_dir=tmp_path / "runs")


@pytest.fixture(scope="module")
def small_run(tmp_path_factory, jets_sample):
    tmp = tmp_path_factory.mktemp("run")
    cfg = load_workflow(_small_workflow(tmp, jets_sample))
    return cfg, tagging.run(cfg).run_dir


def test_run_directory_contents(small_run):
    cfg, run_dir = small_run
    for name in ["config.yaml", "inputs.json", "versions.json", "metrics.json", "report.html",
                 "checkpoint_best.pt", "checkpoint_last.pt", "split.npy",
                 "rejection.png", "rejection.pdf", "roc.png", "scores.png",
                 "confusion_matrix.png", "confusion_matrix_normalized.png", "history.png",
                 "mean_images.png", "mean_images.pdf"]:
        assert (run_dir / name).exists(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0.8 < metrics["auc"] <= 1.0  # a real tagger, even this small one
    inputs = json.loads((run_dir / "inputs.json").read_text())
    assert inputs[0]["checksum"].startswith("sha256:")


def test_predictions_are_a_friend_tree(small_run, jets_sample):
    cfg, run_dir = small_run
    friend = run_dir / "predictions" / f"{jets_sample.stem}.predictions.root"
    with uproot.open(friend) as f, uproot.open(jets_sample) as g:
        pred = f["predictions"].arrays(library="np")
        n = min(g["tree"].num_entries, cfg.data.max_entries)
        labels = g["tree"]["label_Tbqq"].array(library="np", entry_stop=n)
    assert len(pred["score_top"]) == n
    np.testing.assert_allclose(pred["score_top"] + pred["score_QCD"], 1, atol=1e-5)
    assert (pred["label"] == labels.astype(int)).all()  # same entries, same order


def test_metrics_match_sklearn_on_written_predictions(small_run, jets_sample):
    from sklearn.metrics import roc_auc_score

    cfg, run_dir = small_run
    friend = run_dir / "predictions" / f"{jets_sample.stem}.predictions.root"
    pred = uproot.open(friend)["predictions"].arrays(library="np")
    test = pred["split"] == 2
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["auc"] == pytest.approx(
        roc_auc_score(pred["label"][test], pred["score_top"][test]), abs=1e-6)


def test_cli_predict_and_evaluate(small_run, jets_sample, tmp_path, capsys):
    cfg, run_dir = small_run
    out = tmp_path / "scored"
    assert main(["predict", "--checkpoint", str(run_dir / "checkpoint_best.pt"),
                 str(jets_sample), "--out", str(out), "--device", "cpu"]) == 0
    friend = out / "predictions" / f"{jets_sample.stem}.predictions.root"
    with uproot.open(friend) as f:
        assert f["predictions"].num_entries == uproot.open(jets_sample)["tree"].num_entries
        scored = f["predictions"]["score_top"].array(library="np")
    # the run's own scores are hepml predict's: same model, float32, same entries
    run_friend = run_dir / "predictions" / f"{jets_sample.stem}.predictions.root"
    with uproot.open(run_friend) as f:
        in_run = f["predictions"]["score_top"].array(library="np")
    np.testing.assert_array_equal(scored[:len(in_run)], in_run)
    assert main(["evaluate", str(friend), "--out", str(tmp_path / "eval"), "--bootstrap", "5",
                 "--split", "all"]) == 0
    assert (tmp_path / "eval" / "metrics.json").exists()
    assert "AUC" in capsys.readouterr().out


def test_cli_errors_are_one_line(tmp_path, capsys, jets_sample):
    bad = _small_workflow(tmp_path, jets_sample)
    text = bad.read_text().replace("label_Tbqq", "label_Tbbq")
    bad.write_text(text)
    assert main(["run", str(bad)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "label_Tbbq" in err[0] and "Did you mean 'label_Tbqq'" in err[0]
    assert main(["predict", "--checkpoint", str(tmp_path / "none.pt"), str(jets_sample),
                 "--out", str(tmp_path)]) == 2
    assert "no such checkpoint" in capsys.readouterr().err


def test_help_of_every_command():
    for cmd in (["run"], ["predict"], ["evaluate"], ["compare"], ["generate", "jets"]):
        r = subprocess.run([sys.executable, "-m", "hepml.cli", *cmd, "--help"],
                           capture_output=True, text=True, cwd=ROOT)
        assert r.returncode == 0 and "usage: hepml" in r.stdout, cmd


def test_resume_after_sigkill_gives_same_metrics(tmp_path, jets_sample):
    """Kill a run mid-epoch with SIGKILL, resume it, and compare with an uninterrupted run."""
    extra = {"training.epochs": 4, "data.max_entries": 3000}
    workflow = _small_workflow(tmp_path, jets_sample, **extra)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "hepml.cli", "-q", "run", str(workflow)]

    ref = subprocess.run(cmd + ["--runs-dir", str(tmp_path / "ref")], env=env, capture_output=True,
                         text=True, timeout=600)
    assert ref.returncode == 0, ref.stderr
    ref_dir = next((tmp_path / "ref").iterdir())

    proc = subprocess.Popen(cmd + ["--runs-dir", str(tmp_path / "killed")], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    last = None
    while time.time() < deadline and proc.poll() is None:
        runs = list((tmp_path / "killed").glob("*/checkpoint_last.pt"))
        if runs:
            last = runs[0]
            break
        time.sleep(0.01)
    assert last is not None, "the run ended or never wrote a checkpoint"
    time.sleep(0.3)  # now inside epoch 2
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    killed_dir = last.parent
    assert not (killed_dir / "metrics.json").exists(), "the run finished before it was killed"

    resumed = subprocess.run(cmd + ["--resume", str(killed_dir)], env=env, capture_output=True,
                             text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr
    a = json.loads((ref_dir / "metrics.json").read_text())
    b = json.loads((killed_dir / "metrics.json").read_text())
    assert b["auc"] == a["auc"]
    assert b["rejection"] == a["rejection"]
    assert b["confusion_matrix"] == a["confusion_matrix"]


def _copy_jets(src: Path, dst: Path, n: int = 300, edit=None) -> Path:
    """Write the first ``n`` jets of ``src`` to ``dst``, optionally edited."""
    from hepml.io import write_tree

    arrays = uproot.open(src)["tree"].arrays(entry_stop=n)
    branches = {k: arrays[k] for k in arrays.fields if k != "npart"}
    if edit:
        edit(branches)
    write_tree(dst, branches)
    return dst


def _run_cli(workflow: Path, capsys) -> tuple[int, list[str]]:
    code = main(["run", str(workflow)])
    return code, capsys.readouterr().err.strip().splitlines()


def test_bad_inputs_give_one_line_errors(tmp_path, jets_sample, capsys):
    import awkward as ak

    def nan_px(b):
        px = ak.to_list(b["part_px"])
        px[7][0] = float("nan")
        b["part_px"] = ak.Array(px)

    cases = {
        "truncated": (lambda p: p.write_bytes(jets_sample.read_bytes()[:200_000]), "truncated"),
        "not_root": (lambda p: p.write_text("jet_pt,label\n600,1\n"), "not a ROOT file"),
        "nan": (lambda p: _copy_jets(jets_sample, p, edit=nan_px), "NaN or infinite"),
        "zero": (lambda p: _copy_jets(jets_sample, p, n=0), "0 entries"),
    }
    for name, (make, expected) in cases.items():
        path = tmp_path / f"{name}.root"
        make(path)
        (tmp_path / name).mkdir()
        wf = _small_workflow(tmp_path / name, path)
        code, err = _run_cli(wf, capsys)
        assert code == 2, name
        assert len(err) == 1 and expected in err[0] and str(path) in err[0], (name, err)
        # a run that failed before training leaves no run directory behind
        runs = tmp_path / name / "runs"
        assert not runs.exists() or not any(runs.iterdir()), (name, list(runs.iterdir()))
    (tmp_path / "tree").mkdir()
    wf = _small_workflow(tmp_path / "tree", jets_sample)
    wf.write_text(wf.read_text().replace("tree: tree", "tree: jets"))
    code, err = _run_cli(wf, capsys)
    assert code == 2 and len(err) == 1 and "no tree 'jets'" in err[0]


def test_jets_without_constituents_are_scored(small_run, tmp_path, jets_sample, caplog):
    import awkward as ak

    def empty_some(b):
        keep = np.ones(300, bool)
        keep[[3, 50]] = False
        for k in [k for k in b if k.startswith("part_")]:
            b[k] = b[k][ak.local_index(b[k]) < np.where(keep, 10_000, 0)[:, None]]

    path = _copy_jets(jets_sample, tmp_path / "with_empty.root", edit=empty_some)
    _, run_dir = small_run
    with caplog.at_level("WARNING"):
        out = tagging.predict(run_dir / "checkpoint_best.pt", [str(path)], tmp_path / "out",
                              device="cpu")
    assert "2 jets have no constituents" in caplog.text
    pred = uproot.open(out[0])["predictions"].arrays(library="np")
    assert len(pred["score_top"]) == 300 and np.isfinite(pred["score_top"]).all()


def test_truncated_checkpoint_through_cli(small_run, tmp_path, jets_sample, capsys):
    _, run_dir = small_run
    data = (run_dir / "checkpoint_best.pt").read_bytes()
    cut = tmp_path / "cut.pt"
    cut.write_bytes(data[: len(data) // 3])
    code = main(["predict", "--checkpoint", str(cut), str(jets_sample),
                 "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "cut short" in err[0] and str(cut) in err[0]
    assert cut.stat().st_size == len(data) // 3  # the bad file is left as it was


def test_predict_unlabelled_file(small_run, tmp_path, jets_sample):
    def drop_labels(b):
        for k in [k for k in b if k.startswith("label_")]:
            del b[k]

    path = _copy_jets(jets_sample, tmp_path / "unlabelled.root", n=100, edit=drop_labels)
    _, run_dir = small_run
    out = tagging.predict(run_dir / "checkpoint_best.pt", [str(path)], tmp_path / "out",
                          device="cpu")
    pred = uproot.open(out[0])["predictions"]
    assert pred.num_entries == 100
    assert set(pred.keys()) == {"score_QCD", "score_top"}


def test_particlenet_workflow_runs_on_the_same_layers(tmp_path, jets_sample):
    """The GNN workflow goes through the same reader, trainer, friend trees and metrics."""
    data = yaml.safe_load((ROOT / "workflows" / "top_tagging_gnn.yaml").read_text())
    data["data"].update(files=[str(jets_sample)], max_entries=400)
    data["representation"]["max_particles"] = 30
    data["training"].update(epochs=1, device="cpu", batch_size=64)
    data["evaluation"]["n_bootstrap"] = 5
    data["runs_dir"] = str(tmp_path / "runs")
    path = tmp_path / "gnn.yaml"
    path.write_text(yaml.safe_dump(data))
    run_dir = tagging.run(load_workflow(path)).run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["n_entries"] == 80 and 0 <= metrics["auc"] <= 1
    with uproot.open(run_dir / "predictions" / f"{jets_sample.stem}.predictions.root") as f:
        assert f["predictions"].num_entries == 400
    out = tagging.predict(run_dir / "checkpoint_best.pt", [str(jets_sample)], tmp_path / "scored",
                          device="cpu", batch_size=256)
    assert (uproot.open(out[0])["predictions"].num_entries
            == uproot.open(jets_sample)["tree"].num_entries)


def test_compare_runs_on_the_same_test_jets(small_run, tmp_path, jets_sample, capsys):
    from hepml.errors import ConfigError

    _, run_a = small_run
    cfg_b = load_workflow(_small_workflow(tmp_path, jets_sample, **{"model.dense": [16],
                                                                    "training.epochs": 1}))
    run_b = tagging.run(cfg_b).run_dir
    assert main(["compare", str(run_a), str(run_b), "--names", "A", "B", "--out",
                 str(tmp_path / "cmp")]) == 0
    table = json.loads((tmp_path / "cmp" / "comparison.json").read_text())["taggers"]
    for name, run in (("A", run_a), ("B", run_b)):
        assert table[name]["auc"] == pytest.approx(
            json.loads((run / "metrics.json").read_text())["auc"], abs=1e-9)
    assert (tmp_path / "cmp" / "compare_rejection.png").exists()
    other = load_workflow(_small_workflow(tmp_path, jets_sample, **{"data.max_entries": 1000,
                                                                    "training.epochs": 1}))
    with pytest.raises(ConfigError, match="not for the same entries"):
        tagging.compare([run_a, tagging.run(other).run_dir], tmp_path / "bad")


def _sklearn_rejection(scores: np.ndarray, is_signal: np.ndarray, eff: float) -> float:
    """1/eps_B at eps_S from scikit-learn's ROC, interpolating eps_B linearly in eps_S."""
    from sklearn.metrics import roc_curve

    fpr, tpr, _ = roc_curve(is_signal, scores, drop_intermediate=False)
    i = int(np.argmax(tpr >= eff))
    if tpr[i] == eff:
        eps_b = fpr[tpr == eff].min()
    else:
        eps_b = fpr[i - 1] + (fpr[i] - fpr[i - 1]) * (eff - tpr[i - 1]) / (tpr[i] - tpr[i - 1])
    return 1.0 / eps_b


def test_generator_shift_matches_sklearn(small_run, tmp_path, jets_sample, capsys):
    """The generator-dependence mode: 1/eps_B on an alternative sample, minus the nominal."""
    _, run_dir = small_run
    alt = _copy_jets(jets_sample, tmp_path / "alt.root", n=1500)
    code = main(["evaluate", "--run", str(run_dir), "--alternative", f"other={alt}",
                 "--working-points", "0.5", "0.7", "--out", str(tmp_path / "shift")])
    out = capsys.readouterr().out
    assert code == 0 and "other" in out and "reference" in out
    result = json.loads((tmp_path / "shift" / "generator_dependence.json").read_text())
    nominal, other = result["samples"]["nominal (test split)"], result["samples"]["other"]
    pred = uproot.open(
        run_dir / "predictions" / f"{jets_sample.stem}.predictions.root")["predictions"]
    p = pred.arrays(library="np")
    test = p["split"] == 2
    alt_pred = uproot.open(tmp_path / "shift" / "other" / "predictions" / "alt.predictions.root")
    a = alt_pred["predictions"].arrays(library="np")
    assert len(a["score_top"]) == 1500
    for wp in ("0.5", "0.7"):
        ref_nom = _sklearn_rejection(p["score_top"][test], p["label"][test] == 1, float(wp))
        ref_alt = _sklearn_rejection(a["score_top"], a["label"] == 1, float(wp))
        assert nominal["rejection"][wp]["value"] == pytest.approx(ref_nom, rel=1e-5)
        assert other["rejection"][wp]["value"] == pytest.approx(ref_alt, rel=1e-5)
        assert other["shift"][wp]["delta"] == pytest.approx(ref_alt - ref_nom, rel=1e-5, abs=1e-6)
        err = np.hypot(other["rejection"][wp]["uncertainty"],
                       nominal["rejection"][wp]["uncertainty"])
        assert other["shift"][wp]["uncertainty"] == pytest.approx(err)
    assert (tmp_path / "shift" / "generator_rejection.png").exists()


def test_generator_shift_errors(small_run, tmp_path, jets_sample, capsys):
    _, run_dir = small_run

    def drop_labels(b):
        for k in [k for k in b if k.startswith("label_")]:
            del b[k]

    unlabelled = _copy_jets(jets_sample, tmp_path / "unlabelled.root", n=50, edit=drop_labels)
    for argv, expected in [
        (["--run", str(run_dir)], "at least one --alternative"),
        (["--alternative", "x=y.root"], "needs --run"),
        (["--run", str(run_dir), "--alternative", "nofile"], "expected NAME=FILE"),
        (["--run", str(tmp_path), "--alternative", f"x={jets_sample}"], "no checkpoint_best.pt"),
        (["--run", str(run_dir), "--alternative", f"x={unlabelled}"], "label_QCD"),
    ]:
        code = main(["evaluate", *argv, "--out", str(tmp_path / "o")])
        err = capsys.readouterr().err.strip().splitlines()
        assert code == 2 and len(err) == 1 and expected in err[0], (argv, err)


def _renamed(b):
    """Another experiment's layout: pf_* constituents, fatjet_* jets, no labels."""
    for k in list(b):
        if k.startswith("label_"):
            del b[k]
        elif k.startswith("part_"):
            b["pf_" + k[5:]] = b.pop(k)
        elif k.startswith("jet_"):
            b["fatjet_" + k[4:]] = b.pop(k)


def test_apply_scores_another_layout_through_a_mapping(tmp_path, jets_sample):
    """An ``apply`` section scores unlabelled files of another layout after training."""
    from hepml.tasks.tagging import build_representation

    other = _copy_jets(jets_sample, tmp_path / "other.root", n=200, edit=_renamed)
    same = _copy_jets(jets_sample, tmp_path / "same.root", n=200)
    wf = _small_workflow(tmp_path, jets_sample, **{"data.max_entries": 600, "training.epochs": 1})
    data = yaml.safe_load(wf.read_text())
    fields = build_representation(data["representation"]).required_fields
    mapping = {f: ("pf_" + f[5:] if f.startswith("part_") else "fatjet_" + f[4:]) for f in fields}
    data["apply"] = [{"name": "other", "files": [str(other)], "branches": mapping}]
    wf.write_text(yaml.safe_dump(data))
    run_dir = tagging.run(load_workflow(wf)).run_dir
    friend = run_dir / "applied" / "other" / "other.predictions.root"
    scores = uproot.open(friend)["predictions"].arrays(library="np")
    assert len(scores["score_top"]) == 200 and set(scores) == {"score_QCD", "score_top"}
    # the same jets under the training layout, scored by `hepml predict`, give the same scores
    ref = tagging.predict(run_dir / "checkpoint_best.pt", [str(same)], tmp_path / "ref",
                          device="cpu")
    ref_scores = uproot.open(ref[0])["predictions"].arrays(library="np")
    np.testing.assert_allclose(scores["score_top"], ref_scores["score_top"], rtol=1e-5, atol=1e-6)
    summary = json.loads((run_dir / "metrics.json").read_text())["applied"]["other"]
    top_share = float(np.mean(scores["score_top"] > scores["score_QCD"]))
    assert summary["n_entries"] == 200
    assert summary["fraction_classified_as"]["top"] == pytest.approx(top_share)
    assert summary["mean_score"]["top"] == pytest.approx(float(scores["score_top"].mean()),
                                                         rel=1e-5)
    assert (run_dir / "applied_scores.png").exists()
    assert "applied" in (run_dir / "report.html").read_text()


def test_apply_with_a_missing_branch_stops_before_training(tmp_path, jets_sample, capsys):
    other = _copy_jets(jets_sample, tmp_path / "other.root", n=50, edit=_renamed)
    wf = _small_workflow(tmp_path, jets_sample)
    data = yaml.safe_load(wf.read_text())
    data["apply"] = [{"name": "other", "files": [str(other)], "branches": {"part_px": "PF_px"}}]
    wf.write_text(yaml.safe_dump(data))
    code, err = _run_cli(wf, capsys)
    assert code == 2 and len(err) == 1
    assert "apply 'other'" in err[0] and "PF_px" in err[0] and "pf_px" in err[0]  # suggestion
    assert not (tmp_path / "runs").exists()  # nothing trained, nothing written


EVENTS_WORKFLOW = ROOT / "workflows" / "event_classification.yaml"


def _small_events_workflow(tmp_path: Path, *, layer: str = "interaction", apply: bool = True,
                           realdata: Path | None = None) -> Path:
    data = yaml.safe_load(EVENTS_WORKFLOW.read_text())
    data["data"].update(files=[str(ROOT / "data_samples" / "events_ttbar_wjets_higgs.root")],
                        max_entries=900)
    data["model"].update(layer=layer, hidden=16, num_layers=2)
    data["training"].update(epochs=2, device="cpu", num_threads=1, batch_size=64)
    data["evaluation"]["n_bootstrap"] = 5
    data["runs_dir"] = str(tmp_path / "runs")
    if apply:
        data["apply"][0]["files"] = [str(realdata / "uproot-HZZ.root")]
    else:
        del data["apply"]
    path = tmp_path / "events.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_event_classification_scores_the_real_hzz_file(tmp_path, realdata):
    """Event graphs -> GNN -> metrics, then the real file through its branch mapping."""
    run_dir = tagging.run(load_workflow(
        _small_events_workflow(tmp_path, realdata=realdata))).run_dir
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert metrics["class_names"] == ["wjets", "ttbar", "higgs"] and "multiclass" in metrics
    assert metrics["auc"] > 0.6  # ttbar vs the rest, already after two epochs of 540 events
    friend = run_dir / "applied" / "hzz" / "uproot-HZZ.predictions.root"
    with uproot.open(friend) as f, uproot.open(realdata / "uproot-HZZ.root") as g:
        scores = f["predictions"].arrays(library="np")
        assert f["predictions"].num_entries == g["events"].num_entries == 2421
    total = scores["score_wjets"] + scores["score_ttbar"] + scores["score_higgs"]
    np.testing.assert_allclose(total, 1.0, rtol=1e-5)
    summary = metrics["applied"]["hzz"]
    assert summary["n_entries"] == 2421
    assert sum(summary["fraction_classified_as"].values()) == pytest.approx(1.0)


@pytest.mark.parametrize("layer", ["gcn", "gat", "edgeconv", "interaction"])
def test_event_classification_with_each_layer(tmp_path, layer):
    """One line of the workflow picks the message-passing layer; each trains and evaluates."""
    cfg = load_workflow(_small_events_workflow(tmp_path, layer=layer, apply=False),
                        {"data.max_entries": 300, "training.epochs": 1})
    run_dir = tagging.run(cfg).run_dir
    spec = yaml.safe_load((run_dir / "config.yaml").read_text())["model"]
    assert spec["kind"] == "gnn" and spec["layer"] == layer and spec["input_dims"] == 14
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert 0 <= metrics["auc"] <= 1 and metrics["n_entries"] == 60


def test_generator_shift_auc_against_sklearn(small_run, tmp_path, jets_sample):
    from sklearn.metrics import roc_auc_score

    _, run_dir = small_run
    alt = _copy_jets(jets_sample, tmp_path / "alt.root", n=800)
    result = tagging.generator_shift(run_dir, {"other": [str(alt)]}, tmp_path / "s", device="cpu")
    rows = result["samples"]
    a = uproot.open(tmp_path / "s" / "other" / "predictions" / "alt.predictions.root")
    a = a["predictions"].arrays(library="np")
    ref = roc_auc_score(a["label"] == 1, a["score_top"])
    assert rows["other"]["auc"] == pytest.approx(ref, abs=1e-9)
    shift = rows["other"]["auc_shift"]
    assert shift["delta"] == pytest.approx(ref - rows["nominal (test split)"]["auc"], abs=1e-9)
    assert 0 < shift["uncertainty"] < 0.1
