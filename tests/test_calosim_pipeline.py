"""The calosim job end to end: showers in, a trained CaloGAN, its comparison, hepml simulate."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import h5py
import numpy as np
import pytest
import uproot

from hepml.cli import main
from hepml.config import load_workflow
from hepml.errors import CheckpointError, ConfigError, EmptyInputError
from hepml.io.calo import read_showers, write_calogan_hdf5, write_showers
from hepml.models.calogan import EnergyRangeWarning
from hepml.tasks import calosim

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "calogan.yaml"
#: A small, fast model and training for tests.
SMALL = {"model.latent_dim": 8, "model.hidden": 32, "model.disc_channels": 4,
         "model.disc_features": 8, "model.minibatch_kernels": 4, "training.epochs": 1,
         "training.batch_size": 64, "calosim.classifier": {"epochs": 3, "hidden": [16]},
         "calosim.timing_batches": [1, 64]}


@pytest.fixture(scope="module")
def run_dir(shower_file, tmp_path_factory) -> Path:
    cfg = load_workflow(WORKFLOW, {**SMALL, "data.files": [str(shower_file)],
                                   "runs_dir": str(tmp_path_factory.mktemp("runs"))})
    return calosim.run(cfg).run_dir


def test_run_compares_generated_with_the_test_showers(run_dir, shower_file) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["task"] == "calosim"
    assert m["n_showers"] == {"train": 420, "validation": 70, "test": 210}
    assert m["particles"] == [-11]
    lo, hi = m["energy_range_gev"]
    assert 5.0 <= lo < hi <= 50.0
    names = set(m["separation_power"])
    assert {"E_0", "E_tot", "response", "depth", "width_x_1", "sparsity_2", "e_ratio_1"} <= names
    assert all(0.0 <= v <= 1.0 for v in m["separation_power"].values())
    assert set(m["separation_power_floor"]) == names
    assert 0.0 <= m["classifier"]["auc"] <= 1.0
    assert m["goal"]["met"] == (m["classifier"]["auc"] <= calosim.GOAL_AUC)
    assert set(m["generation"]["showers_per_s"]) == {"1", "64"}
    for name in ("report.html", "observables.png", "average_showers.png", "response.png",
                 "separation_powers.png", "history.png", "checkpoint_best.pt"):
        assert (run_dir / name).exists(), name

    # one generated shower per test shower, at the test shower's incident energy
    split = np.load(run_dir / "split.npy")
    reference = read_showers(shower_file)
    generated = read_showers(run_dir / "generated_showers.root")
    assert len(generated) == int((split == 2).sum()) == 210
    np.testing.assert_array_equal(generated.energy, reference.energy[split == 2])
    assert generated.shapes == ((3, 96), (12, 12), (12, 6))
    assert all(bool((x >= 0).all()) for x in generated.layers)


def test_hepml_simulate_writes_showers_at_the_requested_energy(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "showers.root"
    ckpt = run_dir / "checkpoint_best.pt"
    assert main(["simulate", "--checkpoint", str(ckpt), "--energy", "30", "--n", "300",
                 "--batch-size", "128", "--out", str(out)]) == 0
    assert "wrote 300 showers" in capsys.readouterr().out
    with uproot.open(out) as f:
        t = f["showers"]
        assert t.num_entries == 300
        assert t["layer_0"].typename == "float[3][96]"
        energy = t["energy"].array(library="np")
        particle = t["particle"].array(library="np")
    np.testing.assert_array_equal(energy, np.full(300, 30.0, np.float32))
    np.testing.assert_array_equal(particle, np.full(300, -11))
    # the same seed gives the same showers; HDF5 output in CaloGAN's layout
    h5 = tmp_path / "showers.h5"
    assert main(["simulate", "--checkpoint", str(ckpt), "--energy", "30", "--n", "300",
                 "--batch-size", "64", "--out", str(h5)]) == 0
    with h5py.File(h5) as f:
        assert f["layer_1"].shape == (300, 12, 12)
        np.testing.assert_allclose(f["layer_1"][:], read_showers(out).layers[1] * 1e3,
                                   rtol=1e-6, atol=1e-3)


def test_energy_outside_the_trained_range_warns_then_generates(run_dir, tmp_path, caplog) -> None:
    ckpt = run_dir / "checkpoint_best.pt"
    with pytest.warns(EnergyRangeWarning, match=r"200 of 200 .* outside the trained range"):
        path, summary = calosim.simulate(ckpt, tmp_path / "high.root", n=200, energy=90.0,
                                         progress=False)
    assert summary["n_outside_trained_range"] == 200
    assert len(read_showers(path)) == 200
    # on the command line the warning is logged and the file written
    with caplog.at_level(logging.WARNING):
        assert main(["simulate", "--checkpoint", str(ckpt), "--energy-range", "1", "10",
                     "--n", "50", "--out", str(tmp_path / "low.root")]) == 0
    assert "outside the trained range" in caplog.text
    assert len(read_showers(tmp_path / "low.root")) == 50


def test_simulate_refuses_bad_requests(run_dir, tmp_path, jets_sample) -> None:
    ckpt = run_dir / "checkpoint_best.pt"
    with pytest.raises(ConfigError, match="--n must be positive"):
        calosim.simulate(ckpt, tmp_path / "x.root", n=0, energy=10.0)
    with pytest.raises(ConfigError, match="not among"):
        calosim.simulate(ckpt, tmp_path / "x.root", n=10, energy=10.0, particle="gamma")
    with pytest.raises(CheckpointError, match="cut short|no such"):
        calosim.simulate(tmp_path / "missing.pt", tmp_path / "x.root", n=10, energy=10.0)
    assert main(["simulate", "--checkpoint", str(ckpt), "--energy", "-5", "--n", "10",
                 "--out", str(tmp_path / "x.root")]) == 2


def test_calogan_hdf5_input_trains_the_same_generator(shower_file, tmp_path) -> None:
    h5 = write_calogan_hdf5(tmp_path / "eplus.hdf5", read_showers(shower_file))
    cfg = load_workflow(WORKFLOW, {**SMALL, "data.files": [str(h5)],
                                   "calosim.particle": "eplus", "runs_dir": str(tmp_path)})
    run_dir = calosim.run(cfg).run_dir
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["particles"] == [-11] and m["n_showers"]["test"] == 210


def test_bad_shower_files_stop_the_run_with_a_clear_error(shower_file, tmp_path, capsys) -> None:
    showers = read_showers(shower_file)
    # HDF5 without layer_1
    h5 = write_calogan_hdf5(tmp_path / "broken.h5", showers)
    with h5py.File(h5, "a") as f:
        del f["layer_1"]
    code = main(["run", str(WORKFLOW), "--set", f"data.files=[{h5}]", "--set",
                 "calosim.particle=eplus", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "layer_1" in err and "broken.h5" in err
    # negative cell energies
    bad = read_showers(shower_file)
    bad.layers[1][5, 6, 6] = -1.0
    neg = write_calogan_hdf5(tmp_path / "negative.h5", bad)
    code = main(["run", str(WORKFLOW), "--set", f"data.files=[{neg}]", "--set",
                 "calosim.particle=eplus", "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err
    assert code == 2 and "negative" in err.lower() and "layer_1" in err
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())


def test_too_few_showers_for_a_comparison(shower_file, tmp_path) -> None:
    small = write_showers(tmp_path / "few.root", read_showers(shower_file).select(slice(0, 200)))
    cfg = load_workflow(WORKFLOW, {**SMALL, "data.files": [str(small)],
                                   "runs_dir": str(tmp_path)})
    with pytest.raises(EmptyInputError, match="at least 100 showers"):
        calosim.run(cfg)


def test_calosim_section_only_with_its_task() -> None:
    with pytest.raises(ConfigError, match="calosim: this section only applies"):
        load_workflow(ROOT / "workflows" / "top_tagging_cnn.yaml",
                      {"calosim": {"bins": 10}})
