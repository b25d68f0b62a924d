"""Barrel tracker simulation: hits checked against helix geometry and the Highland formula.

The references are computed here independently of :mod:`hepml.simulation.tracker`: the
circumradius of three points, the arc length from a chord, the PDG multiple-scattering
width written out with its numbers.
"""

from __future__ import annotations

import json
import math

import awkward as ak
import numpy as np
import pytest
import uproot

from hepml.errors import BadValueError, ConfigError, UnknownKeyError
from hepml.io import read_metadata, write_tree
from hepml.simulation._pythia import to_jagged
from hepml.simulation.tracker import (
    HitSimulationConfig,
    Layer,
    TrackerGeometry,
    TruthParticles,
    event_branches,
    highland_theta0,
    propagate,
)

M_PION = 0.13957
CLEAN = TrackerGeometry.default(inefficiency=0.0, noise_per_layer=0)
RADII = np.array([32, 72, 116, 172, 260, 360, 500, 660, 820, 1020], dtype=float)


def _clean(geometry=CLEAN, b_field=2.0, **kw):
    """No scattering, no smearing; the geometry's noise and inefficiency as given."""
    return {"b_field": b_field, "multiple_scattering": False, "smearing": False,
            "geometry": geometry, **kw}


def _shoot(n, pt, eta, phi, q, *, vertex=(0.0, 0.0, 0.0), mass=M_PION):
    """Particle arrays for ``propagate`` from pT, eta, phi (scalars broadcast)."""
    pt, eta, phi, q = (np.broadcast_to(np.asarray(a, dtype=float), (n,)) for a in (pt, eta, phi, q))
    v = [np.broadcast_to(np.asarray(c, dtype=float), (n,)) for c in vertex]
    return dict(px=pt * np.cos(phi), py=pt * np.sin(phi), pz=pt * np.sinh(eta), q=q,
                mass=np.full(n, mass), vx=v[0], vy=v[1], vz=v[2])


def _run(parts, rng, geometry=CLEAN, b_field=2.0, multiple_scattering=False, smearing=False):
    return propagate(**parts, geometry=geometry, rng=rng, b_field=b_field,
                     multiple_scattering=multiple_scattering, smearing=smearing)


def _layer(radius, x_over_x0=0.0, half_length=1000.0):
    return Layer(radius=radius, half_length=half_length, volume_id=1, layer_id=2,
                 sigma_rphi=0.0, sigma_z=0.0, x_over_x0=x_over_x0, inefficiency=0.0, noise=0)


# --------------------------------------------------------------------------- helix


def test_hits_lie_on_the_circle_of_radius_pt_over_03b_turning_clockwise_for_positive():
    """Every hit is on the circle of radius pT/(0.3 B) through the vertex; q > 0 turns clockwise."""
    rng = np.random.default_rng(1)
    n = 400
    pt = rng.uniform(0.5, 20.0, n)
    q = rng.choice([-1.0, 1.0], n)
    parts = _shoot(n, pt, rng.uniform(-0.8, 0.8, n), rng.uniform(-np.pi, np.pi, n), q)
    hits = _run(parts, rng)
    assert np.array_equal(np.bincount(hits.particle, minlength=n), np.full(n, 10))
    assert np.allclose(np.hypot(hits.x, hits.y), RADII[hits.layer], rtol=1e-12)

    last = np.zeros(n, dtype=int)
    last[hits.particle[hits.layer == 9]] = np.flatnonzero(hits.layer == 9)
    a = np.stack([hits.x, hits.y], axis=1)            # each hit
    b = a[last[hits.particle]]                         # the particle's outermost hit
    inner = hits.layer < 9
    a, b = a[inner], b[inner]
    cross = a[:, 0] * b[:, 1] - a[:, 1] * b[:, 0]
    circumradius = (np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
                    * np.linalg.norm(a - b, axis=1) / (2.0 * np.abs(cross)))
    expected = pt[hits.particle[inner]] / (0.3 * 2.0) * 1000.0  # R[m] = pT / (0.3 B)
    assert np.allclose(circumradius, expected, rtol=1e-4, atol=0)

    # turning sense: seen from +z, a hit of a q > 0 particle lies clockwise of its momentum
    p0x, p0y = parts["px"][hits.particle], parts["py"][hits.particle]
    side = p0x * hits.y - p0y * hits.x
    assert np.all(side[q[hits.particle] > 0] < 0)
    assert np.all(side[q[hits.particle] < 0] > 0)
    # ... and the momentum turns clockwise too
    dphi = np.angle(np.exp(1j * (np.arctan2(hits.tpy, hits.tpx)
                                 - np.arctan2(p0y, p0x))))
    assert np.all(dphi[q[hits.particle] > 0] < 0)


def test_straight_lines_without_field():
    """B = 0: hits lie on the straight line from the vertex along the momentum."""
    rng = np.random.default_rng(2)
    n = 200
    phi = rng.uniform(-np.pi, np.pi, n)
    parts = _shoot(n, rng.uniform(0.1, 5.0, n), rng.uniform(-0.8, 0.8, n), phi,
                   rng.choice([-1.0, 1.0], n), vertex=(0.3, -0.2, 5.0))
    hits = _run(parts, rng, b_field=0.0)
    assert len(hits) == 10 * n
    i = hits.particle
    along = np.arctan2(hits.y - parts["vy"][i], hits.x - parts["vx"][i])
    assert np.allclose(np.angle(np.exp(1j * (along - phi[i]))), 0.0, atol=1e-12)
    assert np.allclose(hits.tpx, parts["px"][i]) and np.allclose(hits.tpy, parts["py"][i])


# --------------------------------------------------------------------------- scattering


def _deflections(eta, n=20_000):
    """Polar and azimuthal (times sin theta) deflections behind a layer of x/X0 = 0.02."""
    rng = np.random.default_rng(3)
    geometry = TrackerGeometry((_layer(100.0, 0.02), _layer(200.0)))
    p = 1.0  # GeV, total momentum
    phi = rng.uniform(-np.pi, np.pi, n)
    parts = _shoot(n, p / np.cosh(eta), eta, phi, 1.0)
    hits = _run(parts, rng, geometry=geometry, b_field=0.0, multiple_scattering=True)
    second = hits.layer == 1
    assert np.array_equal(hits.particle[second], np.arange(n))
    tpx, tpy, tpz = hits.tpx[second], hits.tpy[second], hits.tpz[second]
    assert np.allclose(np.sqrt(tpx**2 + tpy**2 + tpz**2), p)  # |p| kept
    theta0 = 2.0 * np.arctan(np.exp(-eta))
    theta = np.arctan2(np.hypot(tpx, tpy), tpz)
    dphi = np.angle(np.exp(1j * (np.arctan2(tpy, tpx) - phi)))
    return theta - theta0, dphi * np.sin(theta0)


def test_highland_width_at_normal_incidence():
    """1 GeV pions through x/X0 = 0.02 at eta = 0: projected width as PDG's Highland formula."""
    beta = 1.0 / math.sqrt(1.0 + 0.13957**2)  # p = 1 GeV: 0.99040
    x = 0.02
    theta0 = 0.0136 / beta * math.sqrt(x) * (1 + 0.038 * math.log(x / beta**2))
    assert theta0 == pytest.approx(1.6547e-3, rel=1e-4)  # the number worked out by hand
    polar, azimuthal = _deflections(0.0)
    assert np.std(polar) == pytest.approx(theta0, rel=0.1)
    assert np.std(azimuthal) == pytest.approx(theta0, rel=0.1)
    assert abs(np.mean(polar)) < 0.05 * theta0
    assert highland_theta0(1.0, 0.13957, -1, 0.02) == pytest.approx(theta0, rel=1e-6)
    assert highland_theta0(1.0, 0.13957, 1, 0.0) == 0.0


def test_highland_width_grows_with_path_length_at_oblique_incidence():
    """At eta = 1 the path through the layer is 1/|cos alpha| = cosh(1) times longer."""
    beta = 1.0 / math.sqrt(1.0 + 0.13957**2)
    x = 0.02 * math.cosh(1.0)  # 0.030862
    theta0 = 0.0136 / beta * math.sqrt(x) * (1 + 0.038 * math.log(x / beta**2))
    assert theta0 == pytest.approx(2.0953e-3, rel=1e-4)
    polar, azimuthal = _deflections(1.0)
    assert np.std(polar) == pytest.approx(theta0, rel=0.1)
    assert np.std(azimuthal) == pytest.approx(theta0, rel=0.1)
    normal, _ = _deflections(0.0)
    assert np.std(polar) / np.std(normal) == pytest.approx(2.0953 / 1.6547, rel=0.05)


# --------------------------------------------------------------------------- z, loopers, ends


def test_z_advances_with_arc_length_times_pz_over_pt():
    """Without scattering, hit z = vz + pz/pT * s, s the arc from the vertex (from the chord)."""
    rng = np.random.default_rng(4)
    n = 300
    pt = rng.uniform(0.3, 10.0, n)
    parts = _shoot(n, pt, rng.uniform(-0.7, 0.7, n), rng.uniform(-np.pi, np.pi, n),
                   rng.choice([-1.0, 1.0], n),
                   vertex=(rng.normal(0, 1.0, n), rng.normal(0, 1.0, n), rng.normal(0, 50, n)))
    hits = _run(parts, rng)
    assert len(hits) > 5 * n
    i = hits.particle
    radius = pt[i] / 0.6 * 1000.0
    chord = np.hypot(hits.x - parts["vx"][i], hits.y - parts["vy"][i])
    s = 2.0 * radius * np.arcsin(chord / (2.0 * radius))
    expected = parts["vz"][i] + parts["pz"][i] / pt[i] * s
    assert np.allclose(hits.z, expected, rtol=0, atol=1e-6)
    assert np.allclose(hits.tpz, parts["pz"][i])


def test_loopers_do_not_reach_layers_beyond_twice_their_radius():
    """A pT of 0.14 GeV at 2 T: 2R = 467 mm, so hits on the six layers up to 360 mm only."""
    rng = np.random.default_rng(5)
    n = 200
    parts = _shoot(n, 0.14, 0.0, rng.uniform(-np.pi, np.pi, n), rng.choice([-1.0, 1.0], n))
    hits = _run(parts, rng)
    assert np.array_equal(np.bincount(hits.particle, minlength=n), np.full(n, 6))
    assert set(hits.layer.tolist()) == set(range(6))
    # just above: 2R = 510 mm > 500 mm reaches the seventh layer
    hits = _run(_shoot(n, 0.153, 0.0, 0.3, 1.0), rng)
    assert np.array_equal(np.bincount(hits.particle, minlength=n), np.full(n, 7))


def test_particles_leaving_the_barrel_end_make_no_more_hits():
    """pz/pT = 3: z = 348 mm at 116 mm, 516 mm > 491 mm at 172 mm: stops before the strips."""
    rng = np.random.default_rng(6)
    n = 50
    eta = math.asinh(3.0)
    hits = _run(_shoot(n, 100.0, eta, rng.uniform(-np.pi, np.pi, n), 1.0), rng)
    assert np.array_equal(np.bincount(hits.layer, minlength=10), [n, n, n] + [0] * 7)
    # backwards the same
    hits = _run(_shoot(n, 100.0, -eta, 0.0, -1.0), rng)
    assert hits.layer.max() == 2 and np.all(hits.z < 0)
    # a particle produced outside the first layers skips them
    hits = _run(_shoot(1, 5.0, 0.0, 0.0, 1.0, vertex=(80.0, 0.0, 0.0)), rng)
    assert hits.layer.tolist() == list(range(2, 10))


# --------------------------------------------------------------------------- events, edge cases


def _truth(event, px, py, pz, q, *, pid=211, index=None):
    n = len(event)
    return TruthParticles(
        event=np.asarray(event), vertex=np.zeros(n, np.int32),
        index=np.arange(1, n + 1) if index is None else np.asarray(index),
        pid=np.full(n, pid), charge=np.asarray(q), mass=np.full(n, M_PION),
        px=np.asarray(px, float), py=np.asarray(py, float), pz=np.asarray(pz, float),
        vx=np.zeros(n), vy=np.zeros(n), vz=np.zeros(n))


def test_event_without_charged_particles_is_written_empty(tmp_path):
    """Event 1 holds only a photon: no hit, no particle, but its entry is written."""
    config = HitSimulationConfig(geometry=CLEAN)
    truth = _truth([0, 0, 1, 2], [1.0, -2.0, 5.0, 0.5], [0.5, 1.0, 0.0, 3.0],
                   [0.1, -0.4, 1.0, 0.0], [1, -1, 0, 1])
    branches = event_branches(truth, 3, config, np.random.default_rng(7))
    branches["event_number"] = np.arange(3, dtype=np.int64)
    path = write_tree(tmp_path / "h.root", to_jagged(branches), tree="hits")
    with uproot.open(path) as f:
        t = f["hits"]
        assert t.num_entries == 3
        data = t.arrays(["nhit", "nparticle", "particle_nhits", "hit_particle_id"])
    assert data["nhit"].tolist() == [20, 0, 10]
    assert data["nparticle"].tolist() == [2, 0, 1]
    assert data["particle_nhits"].tolist() == [[10, 10], [], [10]]

    nothing = event_branches(_truth([], [], [], [], []), 2, config, np.random.default_rng(7))
    assert nothing["hit_id"][1].tolist() == [0, 0]
    path = write_tree(tmp_path / "e.root", to_jagged(nothing), tree="hits")
    with uproot.open(path) as f:
        assert f["hits"]["nhit"].array().tolist() == [0, 0]


def test_same_seed_same_hits():
    """The detector simulation is reproducible: same inputs and seed, same branches."""
    rng = np.random.default_rng(13)
    n = 300
    truth = _truth(np.sort(rng.integers(0, 4, n)), rng.normal(0, 2, n), rng.normal(0, 2, n),
                   rng.normal(0, 4, n), rng.choice([-1, 1], n))
    config = HitSimulationConfig()
    a, b, c = (event_branches(truth, 4, config, np.random.default_rng(s)) for s in (1, 1, 2))
    assert a.keys() == b.keys()
    for k in a:
        assert all(np.array_equal(u, v) for u, v in zip(a[k], b[k], strict=True)), k
    assert not np.array_equal(a["hit_x"][0], c["hit_x"][0])


def test_particle_reaching_only_the_first_layer_has_one_hit():
    """2R = 50 mm: one hit on the 32 mm layer, and particle_nhits says 1."""
    config = HitSimulationConfig(geometry=CLEAN, pt_min=0.01)
    pt = 0.3 * 2.0 * 25.0 / 1000.0  # R = 25 mm
    b = event_branches(_truth([0], [pt], [0.0], [0.0], [1]), 1, config,
                       np.random.default_rng(8))
    assert b["hit_layer"][0].tolist() == [0]
    assert b["particle_nhits"][0].tolist() == [1]
    assert b["hit_particle_id"][0].tolist() == b["particle_id"][0].tolist() == [1]


def test_nan_momentum_is_a_clear_error():
    """NaN input and arrays of different lengths are BadValueErrors naming the problem."""
    parts = _shoot(3, 1.0, 0.0, 0.0, 1.0)
    parts["py"] = np.array([0.0, np.nan, 0.0])
    with pytest.raises(BadValueError, match=r"py holds 1 NaN or infinite.*particle 1"):
        _run(parts, np.random.default_rng(0))
    with pytest.raises(BadValueError, match="equally long"):
        _run({**parts, "py": np.zeros(2)}, np.random.default_rng(0))


def test_full_inefficiency_gives_no_true_hits():
    """Inefficiency 1 loses every true hit (noise stays); 0.3 loses about 30 %."""
    rng = np.random.default_rng(9)
    parts = _shoot(100, 2.0, 0.0, rng.uniform(-3, 3, 100), 1.0)
    dead = CLEAN.with_layers(inefficiency=1.0)
    assert len(_run(parts, rng, geometry=dead, multiple_scattering=True)) == 0
    config = HitSimulationConfig(geometry=dead.with_layers(noise=3))
    truth = _truth(np.zeros(100, int), parts["px"], parts["py"], parts["pz"], np.ones(100, int))
    b = event_branches(truth, 1, config, rng)
    assert len(b["hit_id"][0]) == 30 and np.all(b["hit_particle_id"][0] == 0)
    assert np.all(b["particle_nhits"][0] == 0)
    # partial inefficiency: about that fraction of the hits is lost
    half = _run(_shoot(2000, 2.0, 0.0, 0.1, 1.0), rng, geometry=CLEAN.with_layers(inefficiency=0.3))
    assert len(half) / 20_000 == pytest.approx(0.7, abs=0.02)


def test_noise_hits_on_the_layers_with_particle_id_zero_and_sorted_hits():
    """Noise: 20 per layer, on the layer radius within its length; hits sorted by layer, phi."""
    config = HitSimulationConfig()
    b = event_branches(_truth([0, 1], [3.0, -1.0], [1.0, 2.0], [0.5, 0.1], [1, -1]), 2, config,
                       np.random.default_rng(10))
    counts = b["hit_id"][1]
    assert np.all(counts >= 200)
    pid, layer = b["hit_particle_id"][0], b["hit_layer"][0]
    noise = pid == 0
    assert np.array_equal(np.bincount(layer[noise] + 10 * np.repeat([0, 1], counts)[noise]),
                          np.full(20, 20))
    x, y, z = (b[f"hit_{c}"][0][noise].astype(float) for c in "xyz")
    assert np.allclose(np.hypot(x, y), RADII[layer[noise]], rtol=1e-6)
    half = np.where(layer[noise] < 4, 491.0, 1082.0)
    assert np.all(np.abs(z) <= half)
    assert np.all(b["hit_tpx"][0][noise] == 0) and np.all(b["hit_tpz"][0][noise] == 0)
    # smeared true hits stay on their layer radius too
    assert np.allclose(np.hypot(b["hit_x"][0], b["hit_y"][0]).astype(float), RADII[layer],
                       rtol=1e-6)
    event = np.repeat([0, 1], counts)
    phi = np.arctan2(b["hit_y"][0], b["hit_x"][0])
    assert np.array_equal(np.lexsort((phi, layer, event)), np.arange(len(event)))
    starts = np.repeat(np.cumsum(counts) - counts, counts)
    assert np.array_equal(b["hit_id"][0], np.arange(len(event)) - starts + 1)
    vol = b["hit_volume_id"][0]
    assert set(zip(layer.tolist(), vol.tolist(), b["hit_layer_id"][0].tolist(), strict=True)) == {
        (0, 8, 2), (1, 8, 4), (2, 8, 6), (3, 8, 8), (4, 13, 2), (5, 13, 4), (6, 13, 6),
        (7, 13, 8), (8, 17, 2), (9, 17, 4)}
    assert b["hit_module_id"][0].min() >= 1


# --------------------------------------------------------------------------- configuration


@pytest.mark.parametrize("kw, match", [
    ({"process": "wjets"}, "process"),
    ({"pileup": -1.0}, "pileup"),
    ({"b_field": -2.0}, "b_field"),
    ({"pt_min": float("nan")}, "pt_min"),
    ({"multiple_scattering": "yes"}, "multiple_scattering"),
    ({"geometry": {"layers": []}}, "at least one layer"),
    ({"geometry": {"layers": [{"radius": 30}]}}, "required fields"),
])
def test_bad_config_raises_config_error(kw, match):
    """A bad option is a ConfigError naming it."""
    with pytest.raises(ConfigError, match=match):
        HitSimulationConfig(**kw)


def test_geometry_round_trip_and_checks():
    """The geometry survives to_dict/from_dict; typos and unsorted layers are refused."""
    d = TrackerGeometry.default().to_dict()
    assert TrackerGeometry.from_dict(d) == TrackerGeometry.default()
    assert HitSimulationConfig(geometry=d).geometry == TrackerGeometry.default()
    assert [lay["radius"] for lay in d["layers"]] == RADII.tolist()
    with pytest.raises(UnknownKeyError, match="radius"):
        TrackerGeometry.from_dict({"layers": [{**d["layers"][0], "radus": 3}]})
    with pytest.raises(ConfigError, match="increasing radii"):
        TrackerGeometry.from_dict({"layers": d["layers"][::-1]})
    with pytest.raises(ConfigError, match="inefficiency"):
        CLEAN.with_layers(inefficiency=1.5)


# --------------------------------------------------------------------------- Pythia end to end

HIT_BRANCHES = ["hit_id", "hit_x", "hit_y", "hit_z", "hit_volume_id", "hit_layer_id",
                "hit_module_id", "hit_layer", "hit_particle_id", "hit_tpx", "hit_tpy",
                "hit_tpz"]
PARTICLE_BRANCHES = ["particle_id", "particle_q", "particle_pdgid", "particle_px",
                     "particle_py", "particle_pz", "particle_pt", "particle_eta",
                     "particle_phi", "particle_vx", "particle_vy", "particle_vz",
                     "particle_nhits", "particle_vertex"]


def test_generate_hits_end_to_end_and_cli(tmp_path, capsys):
    """Pythia events with pile-up: every branch, consistent counts, metadata; the command."""
    pytest.importorskip("pythia8mc")
    from hepml.cli import main
    from hepml.simulation.tracker import generate_hits

    path = generate_hits(HitSimulationConfig(pileup=2.0, seed=5), tmp_path / "h.root", 3,
                         progress=False)
    with uproot.open(path) as f:
        t = f["hits"]
        assert t.num_entries == 3
        keys = set(t.keys())
        assert {"nhit", "nparticle", "event_number", "n_pileup", *HIT_BRANCHES,
                *PARTICLE_BRANCHES} <= keys
        d = t.arrays(library="ak")
    assert d["event_number"].tolist() == [0, 1, 2]
    true = d["hit_particle_id"] != 0
    assert ak.sum(d["particle_nhits"], axis=1).tolist() == ak.sum(true, axis=1).tolist()
    assert ak.all(ak.sum(~true, axis=1) == 200)  # the default noise
    for ev in range(3):
        pid = d["particle_id"][ev].to_numpy()
        assert len(np.unique(pid)) == len(pid)
        assert np.all(np.isin(d["hit_particle_id"][ev].to_numpy()[true[ev].to_numpy()], pid))
        assert d["hit_id"][ev].tolist() == list(range(1, len(d["hit_id"][ev]) + 1))
        assert np.all(np.diff(d["hit_layer"][ev].to_numpy()) >= 0)
    assert ak.all(d["particle_vertex"] <= d["n_pileup"])
    assert ak.num(d["vertex_z"]).tolist() == (d["n_pileup"] + 1).tolist()
    assert ak.all(d["particle_pt"] > 0.1) and ak.all(abs(d["particle_eta"]) < 4)
    assert ak.all(d["particle_q"] != 0)
    assert ak.all(ak.num(d["particle_id"]) > 50)  # ttbar with MPI: hundreds of tracks
    # particles start near their interaction's primary vertex (decays: within a few cm)
    vz = d["vertex_z"][d["particle_vertex"]]
    assert np.median(np.abs(ak.to_numpy(ak.flatten(d["particle_vz"] - vz)))) < 0.1
    meta = read_metadata(path)
    assert meta["geometry"] == TrackerGeometry.default().to_dict()
    assert meta["config"]["pileup"] == 2.0
    assert "ParticleDecays:tau0Max = 10" in meta["pythia_settings"]
    assert "SoftQCD:nonDiffractive = on" in meta["pileup_pythia_settings"]

    out = tmp_path / "cli.root"
    inner = tmp_path / "inner.json"
    inner.write_text(json.dumps({"layers": TrackerGeometry.default().to_dict()["layers"][:3]}))
    assert main(["generate", "hits", "--n-events", "2", "--out", str(out), "--process",
                 "minbias", "--pileup", "1", "--seed", "3", "--noise-per-layer", "0",
                 "--inefficiency", "0", "--no-scattering", "--no-smearing",
                 "--field", "3.8", "--geometry", str(inner)]) == 0
    assert "wrote 2 minbias events" in capsys.readouterr().out
    with uproot.open(out) as f:
        d = f["hits"].arrays(["hit_particle_id", "hit_layer", "particle_nhits"], library="ak")
    assert ak.all(d["hit_particle_id"] != 0) and ak.max(d["hit_layer"]) == 2
    assert ak.max(d["particle_nhits"]) == 3
    meta = read_metadata(out)
    assert meta["config"]["b_field"] == 3.8 and not meta["config"]["multiple_scattering"]
    assert [lay["radius"] for lay in meta["geometry"]["layers"]] == [32.0, 72.0, 116.0]
    assert {lay["noise"] for lay in meta["geometry"]["layers"]} == {0}

    bad = str(tmp_path / "bad.root")
    for args, msg in ((["--n-events", "0"], "--n-events"), (["--n-events", "1", "--pileup", "-1"],
                      "pileup"), (["--n-events", "1", "--field", "-2"], "b_field"),
                     (["--n-events", "1", "--geometry", str(tmp_path / "none.json")],
                      "none.json")):
        assert main(["generate", "hits", *args, "--out", bad]) == 2
        assert msg in capsys.readouterr().err
    assert not (tmp_path / "bad.root").exists()


def test_smearing_widths_follow_the_layer_resolution():
    """Measured minus true position: Gaussian widths sigma(r phi) and sigma(z) of each layer."""
    rng = np.random.default_rng(11)
    n = 4000
    parts = _shoot(n, 50.0, rng.uniform(-0.3, 0.3, n), rng.uniform(-np.pi, np.pi, n), 1.0)
    hits = _run(parts, rng, smearing=True)
    assert np.allclose(np.hypot(hits.x, hits.y), RADII[hits.layer], rtol=1e-12)
    rphi = RADII[hits.layer] * np.angle(np.exp(1j * (np.arctan2(hits.y, hits.x)
                                                      - np.arctan2(hits.ty, hits.tx))))
    dz = hits.z - hits.tz
    sigmas = {0: (0.015, 0.05), 5: (0.025, 0.35), 9: (0.025, 3.1)}  # pixel, short, long strip
    for layer, (s_rphi, s_z) in sigmas.items():
        on = hits.layer == layer
        assert np.std(rphi[on]) == pytest.approx(s_rphi, rel=0.05)
        assert np.std(dz[on]) == pytest.approx(s_z, rel=0.05)


def test_after_scattering_the_particle_goes_on_along_the_new_helix():
    """With scattering, hit k lies on the helix given by hit k+1 and the momentum arriving there."""
    rng = np.random.default_rng(12)
    n = 500
    q = rng.choice([-1.0, 1.0], n)
    thick = CLEAN.with_layers(x_over_x0=0.05)
    parts = _shoot(n, rng.uniform(0.3, 2.0, n), rng.uniform(-0.5, 0.5, n),
                   rng.uniform(-np.pi, np.pi, n), q)
    hits = _run(parts, rng, geometry=thick, multiple_scattering=True)
    order = np.lexsort((hits.layer, hits.particle))
    h = hits.select(order)
    pair = np.flatnonzero((h.particle[1:] == h.particle[:-1]) & (h.layer[1:] == h.layer[:-1] + 1))
    a, b = pair, pair + 1  # consecutive hits of one particle
    pt_b = np.hypot(h.tpx[b], h.tpy[b])
    radius = pt_b / 0.6 * 1000.0
    turn = -q[h.particle[b]]  # +1 counter-clockwise
    cx = h.x[b] + turn * radius * (-h.tpy[b] / pt_b)
    cy = h.y[b] + turn * radius * (h.tpx[b] / pt_b)
    assert np.allclose(np.hypot(h.x[a] - cx, h.y[a] - cy), radius, rtol=1e-9)
    chord = np.hypot(h.x[b] - h.x[a], h.y[b] - h.y[a])
    s = 2.0 * radius * np.arcsin(chord / (2.0 * radius))
    assert np.allclose(h.z[b] - h.z[a], h.tpz[b] / pt_b * s, atol=1e-6)
    # the scattering really changed the momentum between the layers
    pt_a = np.hypot(h.tpx[a], h.tpy[a])
    assert np.std(pt_b / pt_a - 1) > 1e-4
    p_a = np.sqrt(pt_a**2 + h.tpz[a] ** 2)
    assert np.allclose(np.sqrt(pt_b**2 + h.tpz[b] ** 2), p_a, rtol=1e-12)
