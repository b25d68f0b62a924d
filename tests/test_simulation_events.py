"""Event samples from Pythia 8: objects checked against physics and an independent replay.

The replay runs Pythia again with the settings stored in the metadata and recomputes the
missing transverse momentum and the lepton and photon selection with plain per-event numpy,
without any code of :mod:`hepml.simulation`.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

pytest.importorskip("pythia8mc")
pytest.importorskip("fastjet")

from hepml.errors import ConfigError, GenerationError, HepmlError  # noqa: E402
from hepml.io import Source, read_metadata  # noqa: E402
from hepml.simulation.events import (  # noqa: E402
    EventGenerationConfig,
    _is_b_hadron,
    generate_event_arrays,
)

COLLECTIONS = {
    "jet": ("px", "py", "pz", "energy", "btag"),
    "electron": ("px", "py", "pz", "energy", "charge"),
    "muon": ("px", "py", "pz", "energy", "charge"),
    "photon": ("px", "py", "pz", "energy"),
}
LABELS = ["label_ttbar", "label_wjets", "label_zjets", "label_higgs"]
FIELDS = [f"{c}_{f}" for c, fs in COLLECTIONS.items() for f in fs] + ["met_px", "met_py"] + LABELS
N = {"ttbar": 60, "wjets": 60, "zjets": 80, "higgs": 120}
SEED = {"ttbar": 11, "wjets": 12, "zjets": 13, "higgs": 14}
NEUTRINOS = [12, 14, 16]
M_Z = 91.19


@pytest.fixture(scope="module")
def samples():
    """Small samples of the four processes, generated once for the module."""
    return {
        proc: generate_event_arrays(
            EventGenerationConfig(process=proc, seed=SEED[proc], batch_size=40), n,
            progress=False,
        )
        for proc, n in N.items()
    }


def _replay(meta: dict, n: int) -> list[dict[str, np.ndarray]]:
    """Regenerate the events with pythia8mc alone; per event: id, status, momenta."""
    import pythia8mc

    pythia = pythia8mc.Pythia("", False)
    for s in meta["pythia_settings"]:
        assert pythia.readString(s), s
    assert pythia.init()
    prt = pythia.nextBatch(n)["prt"]
    counts = ak.to_numpy(ak.num(prt.id))
    flat = ak.flatten(prt)
    cols = {"id": flat.id, "status": flat.status, "px": flat.p.px, "py": flat.p.py,
            "pz": flat.p.pz, "e": flat.p.e}
    split = np.cumsum(counts)[:-1]
    parts = {k: np.split(ak.to_numpy(v), split) for k, v in cols.items()}
    return [{k: parts[k][i] for k in cols} for i in range(len(counts))]


@pytest.fixture(scope="module")
def replays(samples):
    """The ttbar and wjets events regenerated from their metadata by pythia8mc alone."""
    return {proc: _replay(samples[proc][1], N[proc]) for proc in ("ttbar", "wjets")}


def _pt(b: dict, name: str):
    return np.hypot(ak.values_astype(b[f"{name}_px"], np.float64),
                    ak.values_astype(b[f"{name}_py"], np.float64))


def _eta_phi(px, py, pz):
    pt = np.hypot(px, py)
    return np.arcsinh(pz / pt), np.arctan2(py, px)


def _mass(px, py, pz, e):
    return np.sqrt(np.maximum(e**2 - px**2 - py**2 - pz**2, 0.0))


def _leptons(b: dict) -> ak.Array:
    """Electrons and muons of each event in one list, with their flavour."""
    out = []
    for name, flavour in (("electron", 11), ("muon", 13)):
        fields = {k: ak.values_astype(b[f"{name}_{k}"], np.float64)
                  for k in ("px", "py", "pz", "energy")}
        fields["charge"] = b[f"{name}_charge"]
        fields["flavour"] = b[f"{name}_charge"] * 0 + flavour
        out.append(ak.zip(fields))
    return ak.concatenate(out, axis=1)


# --------------------------------------------------------------------------- layout


def test_branches_types_and_every_event_kept(samples):
    """Every branch, its type and shared counter; one entry per generated event."""
    for proc, (b, meta) in samples.items():
        assert set(FIELDS) <= set(b)
        assert {"event_number", "worker", "seed"} <= set(b)
        assert all(len(v) == N[proc] for v in b.values()), proc
        for c, fs in COLLECTIONS.items():
            counts = ak.num(b[f"{c}_px"])
            for f in fs:
                want = "int32" if f in ("btag", "charge") else "float32"
                assert str(ak.type(b[f"{c}_{f}"]).content.content) == want, (c, f)
                assert ak.all(ak.num(b[f"{c}_{f}"]) == counts)
        assert b["met_px"].dtype == np.float32 and b["label_ttbar"].dtype == np.int32
        assert np.array_equal(b["event_number"], np.arange(N[proc]))
        assert meta["n_events"] == N[proc]
    # Events without any reconstructed jet or lepton are real and kept.
    higgs = samples["higgs"][0]
    assert ak.any(ak.num(higgs["jet_px"]) == 0)
    assert ak.any(ak.num(samples["wjets"][0]["electron_px"])
                  + ak.num(samples["wjets"][0]["muon_px"]) == 0)


def test_labels_one_hot(samples):
    """Each event carries exactly the flag of its process."""
    for proc, (b, _) in samples.items():
        stacked = np.stack([b[k] for k in LABELS], axis=1)
        assert np.all(stacked.sum(axis=1) == 1)
        assert np.all(b[f"label_{proc}"] == 1)


def test_metadata(samples):
    """Seeds, Pythia settings, configuration, versions and cross-section are recorded."""
    meta = samples["zjets"][1]
    assert meta["worker_seeds"] == [13001]
    assert "WeakBosonAndParton:qg2gmZq = on" in meta["pythia_settings"]
    assert "PhaseSpace:pTHatMin = 30" in meta["pythia_settings"]
    assert "Beams:eCM = 13000" in meta["pythia_settings"]
    assert meta["config"]["iso_max"] == 0.15
    assert meta["versions"]["pythia8mc"] and meta["versions"]["fastjet"]
    assert meta["sigma_gen_mb"] > 0
    assert "25:onIfMatch = 23 23" in samples["higgs"][1]["pythia_settings"]


# --------------------------------------------------------------------------- kinematics


def test_objects_are_physical_and_pt_sorted(samples):
    """E >= |p| for every object (up to float32 rounding); collections sorted by pT."""
    for proc, (b, _) in samples.items():
        for c in COLLECTIONS:
            px, py, pz, e = (ak.values_astype(b[f"{c}_{k}"], np.float64)
                             for k in ("px", "py", "pz", "energy"))
            m2 = e**2 - px**2 - py**2 - pz**2
            assert ak.all(m2 >= -1e-5 * e**2 - 1e-6), (proc, c)  # float32 rounding only
            pt = np.hypot(px, py)
            assert ak.all(pt[:, :-1] >= pt[:, 1:]), (proc, c)


def test_kinematic_cuts(samples):
    """Every stored object passes its pT and |eta| cut; lepton charges are +-1."""
    cuts = {"jet": (25, 4.5), "electron": (10, 2.5), "muon": (10, 2.5), "photon": (15, 2.5)}
    for b, _ in samples.values():
        for c, (pt_min, eta_max) in cuts.items():
            px, py, pz = (ak.values_astype(b[f"{c}_{k}"], np.float64) for k in ("px", "py", "pz"))
            eta, _ = _eta_phi(px, py, pz)
            assert ak.all(np.hypot(px, py) > pt_min * (1 - 1e-6)), c
            assert ak.all(abs(eta) < eta_max + 1e-5), c
    lep = _leptons(samples["zjets"][0])
    assert set(np.unique(ak.to_numpy(ak.flatten(lep.charge)))) <= {-1, 1}


@pytest.mark.parametrize("proc", ["ttbar", "wjets"])
def test_met_is_minus_visible_pt_sum_and_balances_neutrinos(samples, replays, proc):
    """MET is minus the central visible pT sum and balances neutrinos plus forward particles."""
    b, _ = samples[proc]
    met_x, met_y, nu_x, nu_y = [], [], [], []
    for ev in replays[proc]:
        final = ev["status"] > 0
        px, py, pz = ev["px"][final], ev["py"][final], ev["pz"][final]
        nu = np.isin(np.abs(ev["id"][final]), NEUTRINOS)
        eta, _ = _eta_phi(px, py, pz)
        central = ~nu & (np.abs(eta) < 4.9)
        met_x.append(-px[central].sum())
        met_y.append(-py[central].sum())
        # Momentum balance: what the central visible particles miss is carried by the
        # neutrinos and the visible particles beyond |eta| = 4.9.
        missed = ~central
        nu_x.append(px[missed].sum())
        nu_y.append(py[missed].sum())
    np.testing.assert_allclose(b["met_px"], met_x, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(b["met_py"], met_y, rtol=1e-5, atol=1e-3)
    np.testing.assert_allclose(b["met_px"], nu_x, atol=0.05)
    np.testing.assert_allclose(b["met_py"], nu_y, atol=0.05)


@pytest.mark.parametrize("proc", ["ttbar", "wjets"])
def test_leptons_and_photons_match_independent_selection(samples, replays, proc):
    """The stored leptons and photons are exactly those an independent selection finds."""
    b, _ = samples[proc]
    objects = {"electron": ([11], 10.0), "muon": ([13], 10.0), "photon": ([22], 15.0)}
    n_seen = 0
    for i, ev in enumerate(replays[proc]):
        visible = (ev["status"] > 0) & ~np.isin(np.abs(ev["id"]), NEUTRINOS)
        px, py, pz = ev["px"][visible], ev["py"][visible], ev["pz"][visible]
        ids = ev["id"][visible]
        pt = np.hypot(px, py)
        eta, phi = _eta_phi(px, py, pz)
        for name, (pdg, pt_min) in objects.items():
            want = []
            match = np.isin(ids if name == "photon" else np.abs(ids), pdg)
            for j in np.flatnonzero(match & (pt > pt_min) & (np.abs(eta) < 2.5)):
                dphi = (phi - phi[j] + np.pi) % (2 * np.pi) - np.pi
                cone = pt[(eta - eta[j]) ** 2 + dphi**2 < 0.3**2].sum() - pt[j]
                if cone / pt[j] < 0.15:
                    want.append(pt[j])
            got = ak.to_numpy(_pt(b, name)[i])
            np.testing.assert_allclose(got, sorted(want, reverse=True), rtol=1e-5,
                                       err_msg=f"{proc} event {i} {name}")
            n_seen += len(got)
    assert n_seen > 5


def test_leptons_are_not_clustered_into_jets(samples):
    """Selected leptons are removed before clustering: no jet sits on a lepton."""
    for proc in ("wjets", "zjets", "higgs"):
        b, _ = samples[proc]
        lep = _leptons(b)
        jets = ak.zip({k: ak.values_astype(b[f"jet_{k}"], np.float64) for k in ("px", "py", "pz")})
        pairs = ak.cartesian({"l": lep, "j": jets}, nested=True)
        l_eta, l_phi = _eta_phi(pairs.l.px, pairs.l.py, pairs.l.pz)
        j_eta, j_phi = _eta_phi(pairs.j.px, pairs.j.py, pairs.j.pz)
        dphi = (l_phi - j_phi + np.pi) % (2 * np.pi) - np.pi
        assert ak.all((l_eta - j_eta) ** 2 + dphi**2 > 0.1**2), proc


def test_higgs_four_lepton_mass_peaks_at_125(samples):
    """Two opposite-sign same-flavour lepton pairs of H -> ZZ* -> 4l make m_H."""
    b, _ = samples["higgs"]
    lep = _leptons(b)
    n_e = ak.sum(lep.flavour == 11, axis=1)
    n_mu = ak.sum(lep.flavour == 13, axis=1)
    q_e = ak.sum(lep.charge[lep.flavour == 11], axis=1)
    q_mu = ak.sum(lep.charge[lep.flavour == 13], axis=1)
    two_pairs = (ak.num(lep) == 4) & (n_e % 2 == 0) & (n_mu % 2 == 0) & (q_e == 0) & (q_mu == 0)
    four = lep[two_pairs]
    m4l = ak.to_numpy(_mass(*(ak.sum(four[k], axis=1) for k in ("px", "py", "pz", "energy"))))
    assert len(m4l) >= 8, len(m4l)
    assert abs(np.median(m4l) - 125.0) < 2.0, np.sort(m4l)
    assert np.mean(np.abs(m4l - 125.0) < 5.0) > 0.7, np.sort(m4l)


def test_zjets_opposite_sign_pairs_near_z_mass(samples):
    """Opposite-sign same-flavour lepton pairs of Z + jet events peak at m_Z."""
    lep = _leptons(samples["zjets"][0])
    masses = []
    for flavour in (11, 13):
        same = lep[lep.flavour == flavour]
        two = same[ak.num(same) == 2]
        two = two[two.charge[:, 0] != two.charge[:, 1]]
        masses.append(ak.to_numpy(_mass(*(two[k][:, 0] + two[k][:, 1]
                                          for k in ("px", "py", "pz", "energy")))))
    m = np.concatenate(masses)
    assert len(m) >= 15, len(m)
    assert abs(np.median(m) - M_Z) < 3.0, np.sort(m)


def test_btags_frequent_in_ttbar_rare_in_wjets(samples):
    """About two b-tags per ttbar event (t -> Wb), almost none in W + jet."""
    per_event = {p: float(ak.mean(ak.sum(samples[p][0]["jet_btag"], axis=1)))
                 for p in ("ttbar", "wjets")}
    assert 1.2 < per_event["ttbar"] < 2.3, per_event
    assert per_event["wjets"] < 0.2, per_event
    assert set(np.unique(ak.to_numpy(ak.flatten(samples["ttbar"][0]["jet_btag"])))) == {0, 1}


def test_b_hadron_codes():
    """b-hadrons are recognised by their PDG code; bottomonia, diquarks, quarks are not."""
    ids = np.array([511, -521, 531, 541, 513, 10521, 5122, -5232, 5332,
                    553, 100553, 5101, 5503, 5, -5, 411, 4122, 21, 1000005])
    want = [True] * 9 + [False] * 10
    assert _is_b_hadron(ids).tolist() == want


# --------------------------------------------------------------------------- reproducibility


def test_same_seed_same_events_whatever_the_batch_size(samples):
    """The same seed gives the same events, whatever the batch size."""
    again, _ = generate_event_arrays(
        EventGenerationConfig(process="higgs", seed=SEED["higgs"], batch_size=7), 25,
        progress=False,
    )
    first, _ = samples["higgs"]
    for k, v in again.items():
        if isinstance(v, ak.Array):
            assert ak.all(ak.num(v) == ak.num(first[k][:25])), k
            assert ak.all(ak.flatten(v) == ak.flatten(first[k][:25])), k
        else:
            assert np.array_equal(v, first[k][:25]), k


def test_two_workers(samples):
    """Two workers have their own seeds; worker 0 repeats the single-worker stream."""
    two, meta = generate_event_arrays(
        EventGenerationConfig(process="ttbar", seed=SEED["ttbar"], n_workers=2), 10,
        progress=False,
    )
    assert meta["worker_seeds"] == [11001, 11002]
    assert np.array_equal(two["worker"], np.repeat([0, 1], 5))
    assert np.array_equal(two["event_number"], np.tile(np.arange(5), 2))
    one = samples["ttbar"][0]  # worker 0 has the single-worker seed: same first events
    assert np.array_equal(two["met_px"][:5], one["met_px"][:5])
    assert not np.array_equal(two["met_px"][5:], one["met_px"][:5])


def test_cli_mixture_file_is_reproducible_labelled_and_readable(tmp_path, capsys):
    """The command: same arguments, same file; events mixed, labelled, readable by Source."""
    from hepml.cli import main

    args = ["generate", "events", "--process", "ttbar", "wjets", "--n-events", "8", "6",
            "--seed", "4", "--batch-size", "5", "--set", "TimeShower:alphaSvalue = 0.13"]
    a, b = tmp_path / "a.root", tmp_path / "b.root"
    assert main([*args, "--out", str(a)]) == 0
    assert "wrote 14 events (8 ttbar, 6 wjets)" in capsys.readouterr().out
    assert main([*args, "--out", str(b)]) == 0
    with uproot.open(a) as fa, uproot.open(b) as fb:
        ta, tb = fa["tree"], fb["tree"]
        assert type(ta).__name__.startswith("Model_TTree")
        assert {"njet", "nelectron", "nmuon", "nphoton"} <= set(ta.keys())
        xa, xb = ta.arrays(library="np"), tb.arrays(library="np")
    assert xa.keys() == xb.keys()
    for k in xa:
        assert all(np.array_equal(u, v) for u, v in zip(xa[k], xb[k], strict=True)), k

    source = Source(str(a), "tree", FIELDS)
    data = source.read(source.chunks[0])
    assert len(data) == 14 and set(data.fields) == set(FIELDS)
    labels = np.stack([ak.to_numpy(data[k]) for k in LABELS], axis=1)
    assert np.all(labels.sum(axis=1) == 1)
    assert labels.sum(axis=0).tolist() == [8, 6, 0, 0]
    assert not np.all(labels[:8, 0] == 1)  # mixed, not concatenated
    ttbar = data["label_ttbar"] == 1
    assert ak.mean(ak.num(data["jet_px"][ttbar])) > ak.mean(ak.num(data["jet_px"][~ttbar]))
    meta = read_metadata(a)
    assert meta["processes"] == ["ttbar", "wjets"] and meta["n_events"] == [8, 6]
    assert meta["classes"][0]["worker_seeds"] == [4001]
    assert meta["classes"][1]["worker_seeds"] == [5001]
    assert "TimeShower:alphaSvalue = 0.13" in meta["classes"][1]["pythia_settings"]


# --------------------------------------------------------------------------- errors


@pytest.mark.parametrize(
    "kw, field",
    [
        ({"process": "qcd"}, "process"),
        ({"pthat_min": 0}, "pthat_min"),
        ({"electron_pt_min": -1.0}, "electron_pt_min"),
        ({"muon_eta_max": float("nan")}, "muon_eta_max"),
        ({"iso_max": 0}, "iso_max"),
        ({"jet_r": 4.0}, "jet_r"),
        ({"btag_dr": -0.4}, "btag_dr"),
        ({"seed": -1}, "seed"),
        ({"n_workers": 0}, "n_workers"),
        ({"fsr": "no"}, "fsr"),
        ({"extra_settings": ("no equals sign",)}, "extra_settings"),
    ],
)
def test_bad_config_raises_config_error(kw, field):
    """A bad option is a ConfigError naming the option."""
    with pytest.raises(ConfigError, match=field):
        EventGenerationConfig(**kw)


def test_bad_counts_and_pythia_settings():
    """A bad event count or a setting Pythia rejects gives a clear error."""
    with pytest.raises(ConfigError, match="n_events"):
        generate_event_arrays(EventGenerationConfig(), 0, progress=False)
    with pytest.raises(GenerationError, match="Foo:bar"):
        generate_event_arrays(EventGenerationConfig(extra_settings=("Foo:bar = 3",)), 1,
                              progress=False)
    with pytest.raises(GenerationError, match="initialisation failed"):
        generate_event_arrays(EventGenerationConfig(sqrt_s=100.0), 1, progress=False)


def test_cli_errors_are_one_line(tmp_path, capsys):
    """The command reports bad options in one line with exit code 2 and writes nothing."""
    from hepml.cli import main

    out = str(tmp_path / "x.root")
    assert main(["generate", "events", "--process", "ttbar", "higgs", "--n-events", "1", "2",
                 "3", "--out", out]) == 2
    assert "--n-events takes one value or one per process" in capsys.readouterr().err
    assert main(["generate", "events", "--n-events", "1", "--iso-max", "-1",
                 "--out", out]) == 2
    assert "iso_max" in capsys.readouterr().err
    assert main(["generate", "events", "--n-events", "1", "--set", "Top:nonsense = on",
                 "--out", out]) == 2
    assert "Pythia refused the setting 'Top:nonsense = on'" in capsys.readouterr().err
    with pytest.raises(HepmlError):
        EventGenerationConfig(process="zjets", tune=0)
    assert not (tmp_path / "x.root").exists()
