"""DQM run simulation: counting statistics, faults, file layout.

The references are computed here, independently of :mod:`hepml.simulation.dqm`: the
binomial variance of a cell that fires in a fraction p of the crossings, the
compound-Poisson variance λ E[h²] with E[h²] summed over pairs of hits of each pool
collision, the bending angle asin(r / 2R) of a helix.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import uproot

from hepml.cli import main
from hepml.errors import BadValueError, ConfigError
from hepml.io import read_metadata
from hepml.simulation.dqm import (
    FAULTS,
    CollisionPool,
    DetectorCondition,
    DQMConfig,
    FaultEpisode,
    accumulate_lumisection,
    build_pool,
    draw_episodes,
    generate_dqm,
    generate_dqm_arrays,
    pileup_schedule,
    simulate_run,
    toy_pool,
)
from hepml.simulation.tracker import TrackerGeometry

N_LAYERS = 10


@pytest.fixture(scope="module")
def pool() -> CollisionPool:
    """A toy pool of 400 collisions with clustered deposits and hits."""
    return toy_pool(400, seed=3)


def _fixed(**kw) -> DQMConfig:
    """Constant pile-up and crossings; small defaults for speed."""
    d = {"n_lumis": 20, "poisson_crossings": False, "mean_crossings": 40, "pileup_start": 8.0,
         "pileup_end": 8.0, "fault_fraction": 0.0}
    d.update(kw)
    return DQMConfig(**d)


# --------------------------------------------------------------------------- statistics


def test_calo_cell_variance_is_binomial_in_the_crossings(pool):
    """Var over LS of a cell's occupancy = n p (1 - p), p from the mean; not Poisson."""
    n, n_ls = 40, 400
    cfg = _fixed(n_eta=6, n_phi=12, calo_threshold=0.5, mean_crossings=n, n_lumis=n_ls)
    calo = simulate_run(pool, cfg, progress=False)[0]["calo_occupancy"].reshape(n_ls, -1)
    p = calo.mean(axis=0) / n
    assert 0.2 < p.min() and p.max() < 0.8  # a regime where binomial and Poisson differ
    ratio = calo.var(axis=0, ddof=1) / (n * p * (1 - p))
    # 72 cells, 400 LS each: the mean ratio has a spread of about 0.01-0.02
    assert abs(ratio.mean() - 1.0) < 0.05, ratio.mean()
    assert np.all((ratio > 0.7) & (ratio < 1.3))
    poisson = calo.var(axis=0, ddof=1) / (n * p)
    assert poisson.mean() < 0.8  # the Poisson guess is clearly wrong here


def _pair_moments(pool: CollisionPool, n_phi: int, eff: float) -> tuple[np.ndarray, np.ndarray]:
    """E[h] and E[h^2] per layer for one collision, one phi bin, uniform random rotation.

    h = sum_i x_i 1[phi_i + delta in bin], x_i ~ Bernoulli(eff): E[h] = eff n / n_phi and
    E[h^2] = eff n / n_phi + eff^2 sum_{i != j} max(0, w - |phi_i - phi_j|) / 2 pi.
    """
    w = 2 * np.pi / n_phi
    m1 = np.zeros(N_LAYERS)
    m2 = np.zeros(N_LAYERS)
    for k in range(pool.n_collisions):
        sl = slice(pool.hit_offsets[k], pool.hit_offsets[k + 1])
        layer, phi = pool.hit_layer[sl], pool.hit_phi[sl]
        for lay in np.unique(layer):
            ph = phi[layer == lay]
            d = np.abs(ph[:, None] - ph[None, :])
            d = np.minimum(d, 2 * np.pi - d)
            overlap = np.clip(w - d, 0.0, None) / (2 * np.pi)
            np.fill_diagonal(overlap, 0.0)
            m1[lay] += eff * len(ph) / n_phi
            m2[lay] += eff * len(ph) / n_phi + eff**2 * overlap.sum()
    return m1 / pool.n_collisions, m2 / pool.n_collisions


def test_tracker_bin_variance_is_compound_poisson(pool):
    """Var of a tracker bin = n mu E[h^2] + noise, E[h^2] from the pool's hit pairs."""
    n, mu, n_ls, eff, noise = 40, 8.0, 400, 0.9, 3
    geometry = TrackerGeometry.default(inefficiency=1 - eff, noise_per_layer=noise)
    cfg = _fixed(geometry=geometry, n_lumis=n_ls, mean_crossings=n, pileup_start=mu,
                 pileup_end=mu)
    trk = simulate_run(pool, cfg, progress=False)[0]["tracker_occupancy"].astype(float)
    m1, m2 = _pair_moments(pool, cfg.n_phi, eff)
    lam = n * mu
    mean_ref = lam * m1 + n * noise / cfg.n_phi
    var_ref = lam * m2 + n * noise / cfg.n_phi
    assert np.allclose(trk.mean(axis=(0, 2)), mean_ref, rtol=0.02)
    ratio = trk.var(axis=0, ddof=1).mean(axis=1) / var_ref  # per layer, 36 bins averaged
    assert np.all(np.abs(ratio - 1.0) < 0.08), ratio
    assert abs(ratio.mean() - 1.0) < 0.05, ratio
    assert np.all(m2 / m1 > 1.3)  # clustered hits: clearly not plain Poisson


def test_pileup_decays_exponentially_and_crossings_are_poisson(pool):
    """Pile-up falls from 40 to 20 exponentially; crossings come from the schedule's generator."""
    cfg = DQMConfig(n_lumis=200, pileup_start=40.0, pileup_end=20.0, mean_crossings=50,
                    fault_fraction=0.0)
    mu = pileup_schedule(cfg)
    assert mu[0] == pytest.approx(40.0) and mu[-1] == pytest.approx(20.0)
    assert np.allclose(np.diff(np.log(mu)), math.log(0.5) / 199)
    n_events = np.random.default_rng([cfg.seed, 1]).poisson(50, 200)
    arrays = generate_dqm_arrays(cfg, pool=pool, progress=False)
    assert np.array_equal(arrays["n_events"], n_events)
    assert np.array_equal(arrays["pileup"], mu.astype(np.float32))
    # the calorimeter occupancy per crossing falls with the pile-up
    rate = arrays["calo_occupancy"].sum(axis=(1, 2)) / arrays["n_events"]
    assert rate[:20].mean() > rate[-20:].mean()


# --------------------------------------------------------------------------- faults


def _episode(fault: str, last: int = 1) -> FaultEpisode:
    defaults = {
        "dead_region": ({"eta_bin": 10, "phi_bin": 34, "size": 4}, {}),
        "hot_channel": ({"eta_bin": 7, "phi_bin": 20}, {"fire_fraction": 0.5}),
        "noisy_layer": ({"layer": 3}, {"extra_fraction": 0.3}),
        "gain_drift": ({"eta_side": -1}, {"gain_start": 1.1, "gain_end": 1.3}),
        "timing": ({"sector": 11, "phi_bins": [33, 34, 35]},
                   {"calo_scale": 0.5, "tracker_loss": 0.5}),
    }
    loc, par = defaults[fault]
    return FaultEpisode(fault, 1, last, loc, par)


MASK_SIZES = {  # (calorimeter cells, tracker bins) on the default 30 x 36 and 10 x 36 grids
    "dead_region": (16, 0), "hot_channel": (1, 0), "noisy_layer": (0, 36),
    "gain_drift": (540, 0), "timing": (90, 30),
}


@pytest.mark.parametrize("fault", FAULTS[1:])
def test_fault_changes_exactly_its_channels_in_the_expected_direction(pool, fault):
    """Same random numbers with and without the fault: only the masked channels change."""
    cfg = DQMConfig(calo_threshold=0.8)
    cond = _episode(fault, last=2).condition(2, cfg)  # the episode's second LS
    assert cond.fault == FAULTS.index(fault)
    assert (int(cond.calo_mask.sum()), int(cond.tracker_mask.sum())) == MASK_SIZES[fault]
    n, mu = 60, 60.0
    base_c, base_t = accumulate_lumisection(pool, cfg, n, mu, np.random.default_rng(9))
    c, t = accumulate_lumisection(pool, cfg, n, mu, np.random.default_rng(9), cond)
    cm, tm = cond.calo_mask, cond.tracker_mask
    assert np.array_equal(c[~cm], base_c[~cm]) and np.array_equal(t[~tm], base_t[~tm])
    assert 0.1 * n < base_c.mean() < 0.9 * n  # cells neither empty nor saturated
    if fault == "dead_region":
        rows, cols = np.nonzero(cm)
        assert set(rows) == {10, 11, 12, 13} and set(cols) == {34, 35, 0, 1}  # wraps in phi
        assert np.all(c[cm] == 0) and np.all(base_c[cm] > 0)
    elif fault == "hot_channel":
        # fires when it would anyway or in 50 % of the crossings: p' = p + 0.5 (1 - p)
        p = base_c[cm][0] / n
        assert c[cm][0] > base_c[cm][0]
        assert c[cm][0] / n == pytest.approx(p + 0.5 * (1 - p), abs=4 * math.sqrt(0.25 / n))
    elif fault == "noisy_layer":
        assert np.all(t[tm] >= base_t[tm])
        extra = t[3].sum() - base_t[3].sum()
        expected = 0.3 * base_t[3].sum()  # 30 % of the layer's occupancy
        assert extra == pytest.approx(expected, rel=0.1)
    elif fault == "gain_drift":
        assert np.all(c[cm] >= base_c[cm])
        assert c[cm].sum() > 1.15 * base_c[cm].sum()  # gain 1.3
        assert np.all(np.nonzero(cm)[0] < 15)  # eta < 0: the first 15 rows
    else:  # timing
        assert set(np.nonzero(cm)[1]) == {33, 34, 35} and set(np.nonzero(tm)[1]) == {33, 34, 35}
        assert np.all(c[cm] <= base_c[cm]) and np.all(t[tm] <= base_t[tm])
        assert c[cm].sum() < 0.8 * base_c[cm].sum()
        # collision hits are lost with probability 0.5; the noise hits (on average 20 per
        # layer and crossing, 1/36 of them per bin) stay
        noise = n * 20 / 36
        assert (t[tm].sum() - 30 * noise) == pytest.approx(
            0.5 * (base_t[tm].sum() - 30 * noise), rel=0.1)


def test_gain_rises_linearly_through_an_episode():
    """The gain goes from gain_start in the first LS to gain_end in the last, on one eta half."""
    ep = FaultEpisode("gain_drift", 5, 8, {"eta_side": 1},
                      {"gain_start": 1.1, "gain_end": 1.4})
    assert [ep.gain(lumi) for lumi in range(5, 9)] == pytest.approx([1.1, 1.2, 1.3, 1.4])
    cond = ep.condition(6, DQMConfig())
    assert np.all(cond.calo_gain[15:] == pytest.approx(1.2)) and np.all(cond.calo_gain[:15] == 1)
    assert FaultEpisode("gain_drift", 3, 3, {"eta_side": 1},
                        {"gain_start": 1.1, "gain_end": 1.4}).gain(3) == pytest.approx(1.1)


def test_run_labels_masks_and_episodes(pool):
    """Fault codes, masks and episodes of a whole run agree with each other and the contract."""
    cfg = DQMConfig(n_lumis=300, mean_crossings=20, fault_fraction=0.3, seed=4)
    arrays, meta = simulate_run(pool, cfg, progress=False)
    fault = arrays["fault"]
    good = fault == 0
    assert (~good).sum() == 90
    cm = arrays["calo_occupancy_fault"].reshape(300, -1).sum(axis=1)
    tm = arrays["tracker_occupancy_fault"].reshape(300, -1).sum(axis=1)
    assert np.all(cm[good] == 0) and np.all(tm[good] == 0)
    for code, name in enumerate(FAULTS[1:], start=1):
        sel = fault == code
        assert sel.any(), name  # every type occurs in 300 LS
        assert np.all(cm[sel] == MASK_SIZES[name][0]) and np.all(tm[sel] == MASK_SIZES[name][1])
    episodes = meta["episodes"]
    assert meta["lumis_per_fault"] == {n: int((fault == c).sum()) for c, n in enumerate(FAULTS)}
    last = 0
    for ep in episodes:
        first, end = ep["first_lumi"], ep["last_lumi"]
        assert first > last + 1 or last == 0  # at least one good LS in between
        assert 1 <= end - first + 1 <= 4
        assert np.all(fault[first - 1:end] == ep["code"])
        masks = arrays["calo_occupancy_fault"][first - 1:end]
        assert np.all(masks == masks[0])  # one location for the whole episode
        last = end
    assert sum(e["last_lumi"] - e["first_lumi"] + 1 for e in episodes) == 90
    dead = [e for e in episodes if e["fault"] == "dead_region"]
    for ep in dead:
        occ = arrays["calo_occupancy"][ep["first_lumi"] - 1]
        assert np.all(occ[arrays["calo_occupancy_fault"][ep["first_lumi"] - 1] == 1] == 0)


def test_episode_schedule_edge_cases():
    """No faults, only faults, and episodes of length 1."""
    rng = np.random.default_rng(0)
    assert draw_episodes(DQMConfig(n_lumis=10, fault_fraction=0.0), rng) == []
    eps = draw_episodes(DQMConfig(n_lumis=10, fault_fraction=1.0), rng)
    lumis = [lumi for e in eps for lumi in range(e.first_lumi, e.last_lumi + 1)]
    assert lumis == list(range(1, 11))
    eps = draw_episodes(DQMConfig(n_lumis=50, fault_fraction=0.5, max_episode_length=1), rng)
    assert len(eps) == 25 and all(e.length == 1 for e in eps)


def test_explicit_episodes_are_checked(pool):
    """Episodes beyond the run, overlapping or at impossible locations are refused."""
    cfg = _fixed(n_lumis=5)
    with pytest.raises(ConfigError, match="beyond"):
        simulate_run(pool, cfg, episodes=[FaultEpisode("hot_channel", 4, 6, {"eta_bin": 0,
                     "phi_bin": 0}, {"fire_fraction": 0.5})], progress=False)
    overlap = [_episode("noisy_layer", last=2), _episode("noisy_layer", last=1)]
    with pytest.raises(ConfigError, match="overlaps"):
        simulate_run(pool, cfg, episodes=overlap, progress=False)
    with pytest.raises(ConfigError, match="location"):
        FaultEpisode("noisy_layer", 1, 1, {"layer": 12}, {"extra_fraction": 0.2}).condition(1, cfg)
    with pytest.raises(ConfigError, match="not known"):
        FaultEpisode("cosmic_ray", 1, 1)


# --------------------------------------------------------------------------- reproducibility, file


def test_same_seed_gives_identical_arrays(pool):
    """The arrays depend only on the configuration and the pool."""
    cfg = DQMConfig(n_lumis=30, mean_crossings=20, seed=7, fault_fraction=0.5)
    a = generate_dqm_arrays(cfg, pool=pool, progress=False)
    b = generate_dqm_arrays(cfg, pool=pool, progress=False)
    c = generate_dqm_arrays(DQMConfig(n_lumis=30, mean_crossings=20, seed=8,
                                      fault_fraction=0.5), pool=pool, progress=False)
    assert a.keys() == b.keys()
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert not np.array_equal(a["calo_occupancy"], c["calo_occupancy"])


def test_file_layout_and_metadata(tmp_path, pool):
    """Tree, branch types and metadata as the DQM task reads them."""
    cfg = DQMConfig(n_lumis=12, mean_crossings=15, run=355100, fault_fraction=0.5)
    path = generate_dqm(cfg, tmp_path / "run.root", pool=pool, progress=False)
    with uproot.open(path) as f:
        tree = f["lumis"]
        types = {b.name: b.typename for b in tree.branches}
        arrays = tree.arrays(library="np")
    assert types == {
        "run": "int32_t", "lumi": "int32_t", "n_events": "int32_t", "pileup": "float",
        "fault": "int32_t", "calo_occupancy": "int32_t[30][36]",
        "tracker_occupancy": "int32_t[10][36]", "calo_occupancy_fault": "uint8_t[30][36]",
        "tracker_occupancy_fault": "uint8_t[10][36]",
    }
    assert np.all(arrays["run"] == 355100)
    assert np.array_equal(arrays["lumi"], np.arange(1, 13))
    assert arrays["calo_occupancy"].shape == (12, 30, 36)
    assert np.all(arrays["calo_occupancy"] <= arrays["n_events"][:, None, None])
    meta = read_metadata(path)
    json.dumps(meta)
    calo_axes = meta["histograms"]["calo_occupancy"]["axes"]
    assert [a["name"] for a in calo_axes] == ["eta", "phi"]
    assert np.allclose(calo_axes[0]["edges"], np.round(np.arange(-3.0, 3.01, 0.2), 10))
    assert np.allclose(calo_axes[1]["edges"], np.linspace(-np.pi, np.pi, 37))
    trk_axes = meta["histograms"]["tracker_occupancy"]["axes"]
    assert trk_axes[0] == {"name": "layer", "edges": list(range(11))}
    assert trk_axes[1]["edges"] == calo_axes[1]["edges"]
    assert meta["faults"] == list(FAULTS)
    assert len(meta["episodes"]) >= 1
    for ep in meta["episodes"]:
        assert set(ep) == {"fault", "code", "first_lumi", "last_lumi", "location", "parameters"}
        assert np.all(arrays["fault"][ep["first_lumi"] - 1:ep["last_lumi"]] == ep["code"])
    assert meta["config"]["run"] == 355100 and meta["config"]["sqrt_s"] == 13600.0


# --------------------------------------------------------------------------- pool


def test_build_pool_calorimeter_and_tracker():
    """Muons leave a MIP, soft charged particles curl up, charged ones bend by asin(r/2R)."""
    cfg = DQMConfig()
    pt = np.array([5.0, 10.0, 10.0, 0.2, 3.0, 2.0])
    eta = np.array([0.5, 0.0, 0.0, 0.0, 4.0, 2.0])
    phi = np.array([1.0, 0.3, 0.3, -1.0, 0.0, 2.0])
    charge = np.array([0, 1, -1, 1, 1, -1])
    pid = np.array([22, 211, -13, 211, 211, -211])
    mass = np.array([0.0, 0.1396, 0.1057, 0.1396, 0.1396, 0.1396])
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    e = np.sqrt(px**2 + py**2 + pz**2 + mass**2)
    zeros = np.zeros(6)
    particles = {"collision": np.array([0, 0, 0, 0, 0, 2]), "pid": pid, "charge": charge,
                 "mass": mass, "px": px, "py": py, "pz": pz, "e": e, "vx": zeros,
                 "vy": zeros, "vz": zeros}
    p = build_pool(particles, 3, cfg, np.random.default_rng(0))
    assert p.n_collisions == 3
    # collision 0: photon, pi+ and mu- reach the calorimeter; the 0.2 GeV pion curls up
    # (2R = 0.67 m < 1.2 m); the eta = 4 pion is outside |eta| < 3
    assert list(np.diff(p.calo_offsets)) == [3, 0, 1]
    assert np.allclose(p.calo_eta[:3], [0.5, 0.0, 0.0], atol=1e-12)
    bend = math.asin(1200.0 / (2 * 1000 * 10.0 / 0.6))  # r / 2R at the barrel face
    assert np.allclose(p.calo_phi[:3], [1.0, 0.3 - bend, 0.3 + bend])
    assert np.allclose(p.calo_energy[:3], [e[0], e[1], 0.3])  # the muon: a MIP
    # eta = 2: endcap face at |z| = 3.2 m, r = 3.2 m / sinh 2; a negative charge turns left
    r = 3200.0 / math.sinh(2.0)
    assert p.calo_phi[3] == pytest.approx(2.0 + math.asin(r / (2 * 1000 * 2.0 / 0.6)))
    # tracker: 10 hits for each of the two 10 GeV particles at eta 0
    hits = np.diff(p.hit_offsets)
    assert hits[1] == 0 and hits[0] >= 20
    layers0 = p.hit_layer[: hits[0]]
    assert np.all(np.bincount(layers0, minlength=10)[:10] >= 2)


def test_pool_and_config_validation():
    """Inconsistent pools are refused with BadValueError, foreign layers with ConfigError."""
    with pytest.raises(BadValueError, match="offsets"):
        CollisionPool(np.array([1, 2]), [0.0], [0.0], [1.0], np.array([0, 0]), [], [])
    with pytest.raises(BadValueError, match="calo_energy"):
        CollisionPool.from_counts([2], [0.0, 1.0], [0.0, 0.1], [1.0], [0], [], [])
    with pytest.raises(BadValueError, match="NaN"):
        CollisionPool.from_counts([1], [np.nan], [0.0], [1.0], [0], [], [])
    p = CollisionPool.from_counts([0], [], [], [], [1], [12], [0.0])
    with pytest.raises(ConfigError, match="layer 12"):
        accumulate_lumisection(p, DQMConfig(), 1, 1.0, np.random.default_rng(0))


@pytest.mark.parametrize("kw, match", [
    ({"n_lumis": 0}, "n_lumis"),
    ({"pool_size": -5}, "pool_size"),
    ({"mean_crossings": 0}, "mean_crossings"),
    ({"pileup_start": -1.0}, "pileup_start"),
    ({"fault_fraction": 1.5}, r"\[0, 1\]"),
    ({"fault_fraction": -0.1}, "fault_fraction"),
    ({"n_phi": 30}, "multiple of 12"),
    ({"n_eta": 31}, "even"),
    ({"hot_fraction": (0.8, 0.3)}, "hot_fraction"),
    ({"timing_tracker_loss": (0.5, 1.5)}, "timing_tracker_loss"),
    ({"gain_start": 1.1}, "pair"),
    ({"run": -1}, "run"),
    ({"seed": 10**7}, "seed"),
    ({"process": "ttbar"}, "process"),
    ({"poisson_crossings": "yes"}, "poisson_crossings"),
    ({"geometry": {"layers": []}}, "geometry"),
])
def test_bad_options_give_config_error(kw, match):
    """Each bad option names the field."""
    with pytest.raises(ConfigError, match=match):
        DQMConfig(**kw)


def test_condition_good_is_neutral():
    """A good detector changes nothing and touches no channel."""
    c = DetectorCondition.good(DQMConfig())
    assert c.fault == 0 and not c.calo_mask.any() and not c.tracker_mask.any()
    assert c.calo_gain.shape == (30, 36) and c.tracker_keep.shape == (10, 36)


# --------------------------------------------------------------------------- command line


def test_cli_end_to_end_with_pythia(tmp_path, capsys):
    """A tiny run through the command line; non-diffractive events start Pythia faster."""
    out = tmp_path / "dqm.root"
    rc = main(["generate", "dqm", "--n-lumis", "4", "--pool-size", "30", "--mean-crossings",
               "10", "--fault-fraction", "0.5", "--run", "7", "--seed", "3", "--out", str(out),
               "--set", "SoftQCD:inelastic = off", "--set", "SoftQCD:nonDiffractive = on"])
    assert rc == 0
    assert "wrote 4 lumisections of run 7" in capsys.readouterr().out
    meta = read_metadata(out)
    assert meta["pool"]["n_collisions"] == 30 and meta["pool_source"] == "pythia"
    assert meta["pool"]["hits_per_collision"] > 50  # a non-diffractive collision at 13.6 TeV
    assert "SoftQCD:nonDiffractive = on" in meta["pythia_settings"]
    with uproot.open(out) as f:
        assert f["lumis"].num_entries == 4
        assert int((f["lumis"]["fault"].array(library="np") > 0).sum()) == 2
    rc = main(["generate", "dqm", "--n-lumis", "4", "--fault-fraction", "2", "--out",
               str(tmp_path / "x.root")])
    assert rc == 2
    assert "fault_fraction" in capsys.readouterr().err
    assert not (tmp_path / "x.root").exists()
