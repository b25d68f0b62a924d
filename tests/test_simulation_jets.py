"""Jets from Pythia 8 + FastJet: reproducibility, selection, kinematics, labels, errors."""

from __future__ import annotations

import argparse
import dataclasses

import awkward as ak
import numpy as np
import pytest
import uproot

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from hepml.errors import ConfigError, EmptyInputError, GenerationError, HepmlError  # noqa: E402
from hepml.io.writing import read_metadata  # noqa: E402
from hepml.simulation.jets import (  # noqa: E402
    JetGenerationConfig,
    generate_jet_arrays,
    generate_jets,
    generate_mixture,
)

PART = ["part_px", "part_py", "part_pz", "part_energy", "part_deta", "part_dphi",
        "part_charge", "part_pid"]
JET = ["jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass", "jet_nparticles"]
LABELS = ["label_QCD", "label_Tbqq", "label_Wqq"]


def _gen(n: int, **kw):
    kw.setdefault("batch_size", 50)
    return generate_jet_arrays(JetGenerationConfig(**kw), n, progress=False)


@pytest.fixture(scope="module")
def qcd():
    return _gen(60, process="qcd", seed=11)


@pytest.fixture(scope="module")
def top():
    return _gen(60, process="top", seed=12)


def _same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(
        ak.all(ak.flatten(a[k], axis=None) == ak.flatten(b[k], axis=None))
        and ak.all(ak.num(a[k], axis=-1) == ak.num(b[k], axis=-1)) if isinstance(a[k], ak.Array)
        else np.array_equal(a[k], b[k]) for k in a
    )


def test_branches_and_types(qcd):
    b, _ = qcd
    assert set(JET + PART + LABELS) <= set(b)
    assert {"event_number", "worker", "seed", "jet_index"} <= set(b)
    assert all(len(v) == 60 for v in b.values())
    for k in ["jet_pt", "jet_eta", "jet_phi", "jet_energy", "jet_mass"]:
        assert b[k].dtype == np.float32
    for k in PART:
        assert str(ak.type(b[k]).content.content) == "float32"
    assert b["event_number"].dtype == np.int64
    assert b["label_QCD"].dtype == np.int32


def test_same_seed_identical_and_batch_size_irrelevant(qcd):
    again, _ = _gen(60, process="qcd", seed=11, batch_size=37)
    assert _same(qcd[0], again)


def test_different_seed_differs():
    a, _ = _gen(10, process="qcd", seed=21)
    b, _ = _gen(10, process="qcd", seed=22)
    assert not np.array_equal(a["jet_pt"], b["jet_pt"])


def test_two_workers_reproducible_and_share_seeds(qcd):
    two, meta = _gen(20, process="qcd", seed=11, n_workers=2)
    assert meta["worker_seeds"] == [11001, 11002]
    assert list(np.unique(two["worker"])) == [0, 1]
    assert np.array_equal(two["worker"], np.repeat([0, 1], 10))
    # Worker 0 has the same Pythia seed as the single-worker run: same first jets.
    one = qcd[0]
    for k in ("jet_pt", "jet_mass", "event_number"):
        assert np.array_equal(two[k][:10], one[k][:10])
    assert ak.all(ak.flatten(two["part_px"][:10]) == ak.flatten(one["part_px"][:10]))


@pytest.mark.parametrize("sample", ["qcd", "top"])
def test_selection_window(sample, request):
    b, _ = request.getfixturevalue(sample)
    assert np.all((b["jet_pt"] >= 550) & (b["jet_pt"] < 650))
    assert np.all(np.abs(b["jet_eta"]) < 2.0)
    assert np.all(b["jet_index"] < 2)


@pytest.mark.parametrize("sample", ["qcd", "top"])
def test_constituents_sorted_by_pt(sample, request):
    b, _ = request.getfixturevalue(sample)
    pt = np.hypot(b["part_px"], b["part_py"])
    assert ak.all(pt[:, :-1] >= pt[:, 1:])
    assert np.array_equal(ak.to_numpy(ak.num(b["part_px"])), b["jet_nparticles"])


@pytest.mark.parametrize("sample", ["qcd", "top"])
def test_jet_is_sum_of_constituents(sample, request):
    b, _ = request.getfixturevalue(sample)
    px = ak.to_numpy(ak.sum(ak.values_astype(b["part_px"], np.float64), axis=1))
    py = ak.to_numpy(ak.sum(ak.values_astype(b["part_py"], np.float64), axis=1))
    pz = ak.to_numpy(ak.sum(ak.values_astype(b["part_pz"], np.float64), axis=1))
    e = ak.to_numpy(ak.sum(ak.values_astype(b["part_energy"], np.float64), axis=1))
    np.testing.assert_allclose(np.hypot(px, py), b["jet_pt"], rtol=1e-5)
    np.testing.assert_allclose(e, b["jet_energy"], rtol=1e-5)
    np.testing.assert_allclose(np.arcsinh(pz / np.hypot(px, py)), b["jet_eta"], atol=1e-5)
    np.testing.assert_allclose(np.arctan2(py, px), b["jet_phi"], atol=1e-5)
    mass = np.sqrt(np.clip(e**2 - px**2 - py**2 - pz**2, 0, None))
    # float32 constituents: E^2 - p^2 loses relative precision ~1e-7 * E^2 / m^2
    np.testing.assert_allclose(mass, b["jet_mass"], rtol=2e-3, atol=0.05)


def test_deta_dphi_consistent_with_momenta(top):
    b, _ = top
    px, py, pz = (ak.values_astype(b[k], np.float64) for k in ("part_px", "part_py", "part_pz"))
    pt = np.hypot(px, py)
    eta = np.arcsinh(pz / pt)
    phi = np.arctan2(py, px)
    deta = eta - b["jet_eta"].astype(np.float64)
    dphi = (phi - b["jet_phi"].astype(np.float64) + np.pi) % (2 * np.pi) - np.pi
    assert ak.all(abs(deta - b["part_deta"]) < 1e-4)
    assert ak.all(abs(dphi - b["part_dphi"]) < 1e-4)
    assert ak.all(abs(b["part_dphi"]) <= np.float32(np.pi))
    # anti-kt jets of R = 0.8 are (nearly) cones in rapidity-phi (not pseudorapidity: a
    # slow massive hadron can have |deta| > R): constituents lie within about R
    e = ak.values_astype(b["part_energy"], np.float64)
    y = 0.5 * np.log((e + pz) / (e - pz))
    jet_pz = ak.to_numpy(ak.sum(pz, axis=1))
    jet_e = ak.to_numpy(ak.sum(e, axis=1))
    jet_y = 0.5 * np.log((jet_e + jet_pz) / (jet_e - jet_pz))
    assert ak.all((y - jet_y) ** 2 + dphi**2 < 1.0**2)


def test_charge_and_pid(top):
    b, _ = top
    charge = ak.flatten(b["part_charge"]).to_numpy()
    pid = ak.flatten(b["part_pid"]).to_numpy()
    assert set(np.unique(charge)) <= {-1.0, 0.0, 1.0, -2.0, 2.0}
    assert np.all(charge[np.abs(pid) == 211] == np.sign(pid[np.abs(pid) == 211]))
    assert np.all(charge[pid == 22] == 0)
    assert not np.isin(np.abs(pid), [12, 14, 16]).any()  # no neutrinos


def test_labels_one_hot(qcd, top):
    for (b, _), label in ((qcd, "label_QCD"), (top, "label_Tbqq")):
        stacked = np.stack([b[k] for k in LABELS], axis=1)
        assert np.all(stacked.sum(axis=1) == 1)
        assert np.all(b[label] == 1)


def test_top_mass_peaks_near_top_mass_qcd_below(qcd, top):
    top_mass = float(np.median(top[0]["jet_mass"]))
    qcd_mass = float(np.median(qcd[0]["jet_mass"]))
    assert 140 < top_mass < 200, top_mass
    assert qcd_mass < 120, qcd_mass
    assert np.median(top[0]["jet_nparticles"]) > np.median(qcd[0]["jet_nparticles"])


def test_metadata_and_file_round_trip(tmp_path, qcd):
    out = generate_jets(JetGenerationConfig(process="qcd", seed=11, batch_size=50),
                        tmp_path / "q.root", 60, progress=False)
    with uproot.open(out) as f:
        t = f["tree"]
        assert t.num_entries == 60
        assert "npart" in t.keys()
        arr = t.arrays(["jet_pt", "part_px", "label_QCD"])
    assert np.array_equal(arr["jet_pt"].to_numpy(), qcd[0]["jet_pt"])
    assert ak.all(ak.flatten(arr["part_px"]) == ak.flatten(qcd[0]["part_px"]))
    meta = read_metadata(out)
    assert meta["worker_seeds"] == [11001]
    assert "Random:seed = 11001" in meta["pythia_settings"]
    assert "HardQCD:all = on" in meta["pythia_settings"]
    assert meta["config"]["process"] == "qcd"
    assert meta["versions"]["pythia8mc"] and meta["versions"]["fastjet"]
    assert 0 < meta["selection_efficiency"] <= 2
    assert meta["sigma_gen_mb"] > 0
    assert meta["workers"][0]["n_events_generated"] >= meta["n_events"]


def test_mixture_is_shuffled_and_labelled(tmp_path):
    cfgs = [JetGenerationConfig(process="qcd", seed=31, batch_size=50),
            JetGenerationConfig(process="top", seed=32, batch_size=50)]
    out = generate_mixture(cfgs, [12, 8], tmp_path / "mix.root", shuffle_seed=5, progress=False)
    with uproot.open(out) as f:
        arr = f["tree"].arrays(LABELS + ["jet_mass", "part_px"])
    assert int(arr["label_QCD"].to_numpy().sum()) == 12
    assert int(arr["label_Tbqq"].to_numpy().sum()) == 8
    assert not np.all(arr["label_QCD"][:12] == 1)  # mixed, not concatenated
    assert np.all(arr["label_QCD"] + arr["label_Tbqq"] + arr["label_Wqq"] == 1)
    assert [m["process"] for m in read_metadata(out)["classes"]] == ["qcd", "top"]


def test_max_constituents_and_all_jets():
    b, _ = _gen(10, process="qcd", seed=41, max_constituents=5, max_jets_per_event=None)
    assert ak.all(ak.num(b["part_px"]) == np.minimum(b["jet_nparticles"], 5))
    assert np.all(b["jet_nparticles"] >= ak.to_numpy(ak.num(b["part_px"])))


def test_w_jets_have_w_mass():
    b, meta = _gen(20, process="w", seed=51)
    assert np.all(b["label_Wqq"] == 1)
    assert 65 < np.median(b["jet_mass"]) < 100
    assert "NewGaugeBoson:ffbar2Wprime = on" in meta["pythia_settings"]


def test_bad_pythia_setting_raises_generation_error():
    with pytest.raises(GenerationError, match="Foo:bar"):
        _gen(1, process="qcd", extra_settings=("Foo:bar = 3",))
    with pytest.raises(GenerationError):
        _gen(1, process="qcd", sqrt_s=5.0)  # far below the pthat cut: init fails


def test_empty_selection_raises(monkeypatch):
    monkeypatch.setattr("hepml.simulation.jets._MAX_EVENTS_WITHOUT_JETS", 100)
    with pytest.raises(EmptyInputError, match="no jet passed"):
        _gen(1, process="qcd", jet_pt_min=5000, jet_pt_max=6000, batch_size=50)


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"process": "higgs"}, "process"),
        ({"jet_r": -0.4}, "jet_r"),
        ({"jet_pt_min": 700, "jet_pt_max": 600}, "jet_pt_max"),
        ({"seed": -1}, "seed"),
        ({"seed": 10**7}, "seed"),
        ({"n_workers": 0}, "n_workers"),
        ({"max_constituents": 0}, "max_constituents"),
        ({"match_dr": float("nan")}, "match_dr"),
        ({"mpi": "yes"}, "mpi"),
        ({"extra_settings": ("no equals sign",)}, "extra_settings"),
        ({"pthat_min": 700, "pthat_max": 500}, "pthat_max"),
    ],
)
def test_bad_config_raises_config_error(kw, field):
    with pytest.raises(ConfigError, match=field):
        JetGenerationConfig(**kw)


def test_config_is_frozen_and_defaults():
    c = JetGenerationConfig(process="top")
    assert (c.pthat_min, c.pthat_max) == (400.0, 800.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.seed = 3  # type: ignore[misc]
    assert JetGenerationConfig(process="w").pthat_min is None


def test_cli(tmp_path, capsys):
    from hepml.cli.generate import add_parser

    parser = argparse.ArgumentParser(prog="hepml")
    add_parser(parser.add_subparsers(dest="command"))
    out = tmp_path / "cli.root"
    args = parser.parse_args(["generate", "jets", "--process", "qcd", "--n-jets", "8",
                              "--seed", "3", "--out", str(out), "--max-constituents", "20",
                              "--set", "TimeShower:alphaSvalue = 0.13"])
    assert args.func(args) == 0
    assert "8 jets" in capsys.readouterr().out
    meta = read_metadata(out)
    assert "TimeShower:alphaSvalue = 0.13" in meta["pythia_settings"]
    assert meta["config"]["max_constituents"] == 20
    bad = parser.parse_args(["generate", "jets", "--process", "qcd", "top", "--n-jets",
                             "1", "2", "3", "--out", str(out)])
    with pytest.raises(HepmlError, match="n-jets"):
        bad.func(bad)
