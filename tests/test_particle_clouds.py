"""Particle clouds: hand-made jets with known feature values, padding, errors, PyG batches."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import torch

from hepml.errors import BadValueError, ConfigError, MissingBranchError, UnknownKeyError
from hepml.representations import ParticleCloudConfig, ParticleClouds, make_particle_clouds
from hepml.representations.particle_clouds import FEATURES, LOG_FLOOR, to_pyg


def make_jets(parts: list[list[tuple[float, ...]]], jet_pt=None, jet_e=None) -> ak.Array:
    """Jets from lists of constituents ``(px, py, E, deta, dphi, charge, pid)``."""
    cols = ["part_px", "part_py", "part_energy", "part_deta", "part_dphi", "part_charge",
            "part_pid"]
    data = {c: [[float(p[i]) if i < 5 else int(p[i]) for p in jet] for jet in parts]
            for i, c in enumerate(cols)}
    data["jet_pt"] = jet_pt if jet_pt is not None else [500.0] * len(parts)
    data["jet_energy"] = jet_e if jet_e is not None else [1000.0] * len(parts)
    return ak.Array(data)


JETS = make_jets([
    # pT 30, 50 (px=30, py=40), 10: sorted to 50, 30, 10
    [(30, 0, 40, 0.1, -0.2, 1, 211), (30, 40, 100, 0.3, 0.4, 0, 22),
     (0, 10, 20, -0.5, 0.0, -1, 11)],
    [],  # empty jet
    [(0, 0, 0, 0.0, 0.0, 0, 130)],  # zero pT and E: log floor
], jet_pt=[500.0, 100.0, 50.0], jet_e=[1000.0, 200.0, 100.0])


def test_feature_values_and_sorting():
    cfg = ParticleCloudConfig(max_particles=4)
    out = make_particle_clouds(JETS, cfg)
    assert out["points"].shape == (3, 2, 4)
    assert out["features"].shape == (3, 8, 4)
    assert out["mask"].shape == (3, 1, 4) and out["mask"].dtype == torch.bool
    f = {name: out["features"][:, i] for i, name in enumerate(cfg.features)}
    jet0 = {k: v[0].numpy() for k, v in f.items()}
    np.testing.assert_allclose(jet0["log_pt"][:3], np.log([50, 30, 10]), rtol=1e-6)
    # pT 50 in a jet of pT 500: log(0.1)
    np.testing.assert_allclose(jet0["log_pt_rel"][0], math.log(0.1), rtol=1e-6)
    np.testing.assert_allclose(jet0["log_e"][:3], np.log([100, 40, 20]), rtol=1e-6)
    np.testing.assert_allclose(jet0["log_e_rel"][:3], np.log([0.1, 0.04, 0.02]), rtol=1e-6)
    np.testing.assert_allclose(jet0["deta"][:3], [0.3, 0.1, -0.5], rtol=1e-6)
    np.testing.assert_allclose(jet0["dphi"][:3], [0.4, -0.2, 0.0], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(jet0["delta_r"][:3], [0.5, math.hypot(0.1, 0.2), 0.5], rtol=1e-6)
    np.testing.assert_array_equal(jet0["charge"][:3], [0, 1, -1])
    # padding is zero, mask False
    assert out["mask"][0, 0].tolist() == [True, True, True, False]
    assert (out["features"][0, :, 3] == 0).all() and (out["points"][0, :, 3] == 0).all()
    # points are the coordinates (deta, dphi), in the same order
    assert torch.equal(out["points"][:, 0], f["deta"])
    assert torch.equal(out["points"][:, 1], f["dphi"])


def test_empty_jet_and_log_floor():
    out = make_particle_clouds(JETS, ParticleCloudConfig(max_particles=4))
    assert not out["mask"][1].any()
    assert (out["features"][1] == 0).all()
    feats = out["features"][2, :, 0]
    assert torch.isfinite(out["features"]).all()
    assert feats[2] == pytest.approx(math.log(LOG_FLOOR))  # log_pt of pT = 0
    assert feats[3] == pytest.approx(math.log(LOG_FLOOR))  # log_e of E = 0
    assert ParticleClouds({"max_particles": 4}).count_empty(JETS) == 1


def test_truncation_keeps_the_hardest():
    pts = [5.0, 80.0, 20.0, 60.0, 1.0]
    jets = make_jets([[(p, 0, p, i, 0, 0, 22) for i, p in enumerate(pts)]])
    out = make_particle_clouds(jets, ParticleCloudConfig(max_particles=3,
                                                         features=("log_pt", "deta")))
    assert out["mask"].all()
    np.testing.assert_allclose(out["features"][0, 0].numpy(), np.log([80, 60, 20]), rtol=1e-6)
    np.testing.assert_allclose(out["features"][0, 1].numpy(), [1, 3, 2])
    # input order kept with sort_by "none"
    out = make_particle_clouds(jets, ParticleCloudConfig(max_particles=3, features=("deta",),
                                                         sort_by="none"))
    np.testing.assert_allclose(out["features"][0, 0].numpy(), [0, 1, 2])


def test_pid_features_and_required_fields():
    names = ("is_electron", "is_muon", "is_photon", "is_charged_hadron", "is_neutral_hadron")
    jets = make_jets([[(50, 0, 50, 0, 0, -1, 11), (40, 0, 40, 0, 0, 1, -13),
                       (30, 0, 30, 0, 0, 0, 22), (20, 0, 20, 0, 0, 1, 211),
                       (10, 0, 10, 0, 0, 0, 130)]])
    cfg = ParticleCloudConfig(max_particles=5, features=names)
    out = make_particle_clouds(jets, cfg)
    assert torch.equal(out["features"][0], torch.eye(5))
    assert set(cfg.required_fields) == {"part_px", "part_py", "part_deta", "part_dphi",
                                        "part_pid", "part_charge"}
    assert "jet_pt" in ParticleCloudConfig().required_fields
    assert "part_pid" not in ParticleCloudConfig().required_fields
    # only the required fields are read
    small = ak.Array({f: jets[f] for f in cfg.required_fields})
    assert torch.equal(make_particle_clouds(small, cfg)["features"], out["features"])


def test_nan_and_missing_fields_are_errors():
    jets = make_jets([[(1, 0, 1, 0, 0, 0, 22)], [(1, 0, float("nan"), 0, 0, 0, 22)]])
    with pytest.raises(BadValueError, match="part_energy") as info:
        make_particle_clouds(jets)
    assert info.value.jet_index == 1
    jets = make_jets([[(1, 0, 1, 0, 0, 0, 22)]], jet_pt=[float("inf")])
    with pytest.raises(BadValueError, match="jet_pt"):
        make_particle_clouds(jets)
    with pytest.raises(MissingBranchError):
        make_particle_clouds(ak.Array({"part_px": [[1.0]]}))


def test_config_checks_and_round_trip():
    with pytest.raises(UnknownKeyError, match="max_particles"):
        ParticleCloudConfig.from_dict({"max_particle": 10})
    with pytest.raises(ConfigError, match="log_pt"):
        ParticleCloudConfig(features=("log_ptt",))
    with pytest.raises(ConfigError):
        ParticleCloudConfig(max_particles=0)
    with pytest.raises(ConfigError):
        ParticleCloudConfig(sort_by="eta")
    tr = ParticleClouds({"max_particles": 30, "features": ["deta", "charge"]})
    assert tr.output_shape == {"points": (2, 30), "features": (2, 30), "mask": (1, 30)}
    assert ParticleClouds.from_dict(tr.to_dict()) == tr
    assert "max_particles=30" in repr(tr)
    assert set(FEATURES) >= set(ParticleCloudConfig().features)


def test_input_not_modified_and_zero_jets():
    before = ak.to_list(JETS)
    ParticleClouds({"max_particles": 2})(JETS)
    assert ak.to_list(JETS) == before
    out = make_particle_clouds(JETS[:0])
    assert out["features"].shape == (0, 8, 100)


# torch_geometric's import calls torch.jit.script, which torch 2.13 deprecates; third-party,
# not ours to fix (pyproject's filter only covers warnings raised inside torch_geometric)
@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")
def test_to_pyg_sizes():
    out = make_particle_clouds(JETS, ParticleCloudConfig(max_particles=2))
    batch = to_pyg(out)
    assert batch.num_graphs == 3
    assert batch.x.shape == (3, 8) and batch.pos.shape == (3, 2)  # 2 + 0 + 1 nodes
    assert batch.batch.tolist() == [0, 0, 2]
    assert batch.ptr.tolist() == [0, 2, 2, 3]
    graphs = batch.to_data_list()
    assert [g.num_nodes for g in graphs] == [2, 0, 1]
    assert torch.equal(graphs[0].x, out["features"][0].t())
    assert torch.equal(batch[2].pos, out["points"][2, :, :1].t())
