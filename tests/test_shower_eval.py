"""Shower evaluation against plain-numpy references, hand-made showers and analytic results."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hepml.evaluation.shower_plots import (
    plot_average_showers,
    plot_observables,
    plot_response,
    plot_separation_powers,
    plot_shower_examples,
)
from hepml.evaluation.showers import (
    HIGH_LEVEL,
    classifier_two_sample_test,
    compare_showers,
    high_level_features,
    observable_names,
    response_vs_energy,
    separation_power,
    separation_powers,
    shower_observables,
)
from hepml.io.calo import CALOGAN, CaloLayout, Showers

SMALL = CaloLayout(name="small", shapes=((2, 5), (3, 3), (2, 2)),
                   cell_sizes_mm=((20.0, 4.0), (10.0, 10.0), (15.0, 30.0)),
                   depths_mm=(10.0, 20.0, 5.0))


def _random_showers(rng: np.random.Generator, n: int, layout: CaloLayout) -> list[np.ndarray]:
    """Sparse exponential cell energies; some layers of some showers, and whole showers, empty."""
    layers = []
    for rows, cols in layout.shapes:
        e = rng.exponential(size=(n, rows, cols)) * (rng.random((n, rows, cols)) < 0.4)
        e[rng.random(n) < 0.25] = 0.0  # empty layer
        layers.append(e.astype(np.float32))
    for x in layers:
        x[:2] = 0.0  # the first two showers deposit nothing at all
    return layers


def _numpy_observables(layers: list[np.ndarray], energy: np.ndarray, layout: CaloLayout,
                       threshold: float) -> dict[str, np.ndarray]:
    """The observables shower by shower and cell by cell in plain Python (undefined -> 0)."""
    n, n_layers = len(energy), len(layers)
    out: dict[str, np.ndarray] = {k: np.zeros(n) for k in observable_names(n_layers)}
    for s in range(n):
        e_layer = [float(np.sum(layers[i][s], dtype=np.float64)) for i in range(n_layers)]
        e_tot = sum(e_layer)
        out["E_tot"][s] = e_tot
        out["response"][s] = e_tot / energy[s] if energy[s] > 0 else 0.0
        out["depth_weighted_energy"][s] = sum(i * e for i, e in enumerate(e_layer))
        if e_tot > 0:
            depth = sum(i * e for i, e in enumerate(e_layer)) / e_tot
            out["depth"][s] = depth
            out["depth_width"][s] = math.sqrt(max(
                sum(i * i * e for i, e in enumerate(e_layer)) / e_tot - depth**2, 0.0))
        for i in range(n_layers):
            (rows, cols), (dy, dx) = layout.shapes[i], layout.cell_sizes_mm[i]
            cell = layers[i][s].astype(np.float64)
            out[f"E_{i}"][s] = e_layer[i]
            if e_tot > 0:
                out[f"f_{i}"][s] = e_layer[i] / e_tot
            # cell centres from the left / bottom edge, the layer centred on 0
            xs = [(c + 0.5) * dx - cols * dx / 2 for c in range(cols)]
            ys = [(r + 0.5) * dy - rows * dy / 2 for r in range(rows)]
            if e_layer[i] > 0:
                mx = sum(cell[r, c] * xs[c] for r in range(rows) for c in range(cols)) / e_layer[i]
                my = sum(cell[r, c] * ys[r] for r in range(rows) for c in range(cols)) / e_layer[i]
                vx = sum(cell[r, c] * (xs[c] - mx) ** 2 for r in range(rows)
                         for c in range(cols)) / e_layer[i]
                vy = sum(cell[r, c] * (ys[r] - my) ** 2 for r in range(rows)
                         for c in range(cols)) / e_layer[i]
                out[f"width_x_{i}"][s], out[f"width_y_{i}"][s] = math.sqrt(vx), math.sqrt(vy)
            values = sorted(cell.ravel().tolist(), reverse=True)
            out[f"sparsity_{i}"][s] = sum(v > threshold for v in values) / len(values)
            if values[0] + values[1] > 0:
                out[f"e_ratio_{i}"][s] = (values[0] - values[1]) / (values[0] + values[1])
    return out


# ---------------------------------------------------------------------------- observables


@pytest.mark.parametrize("layout", [SMALL, CALOGAN], ids=["small", "calogan"])
def test_observables_match_a_python_loop(layout):
    rng = np.random.default_rng(7)
    n = 40
    layers = _random_showers(rng, n, layout)
    energy = rng.uniform(1.0, 50.0, n)
    energy[3] = 0.0  # an undefined response
    threshold = 0.3
    got = shower_observables([torch.as_tensor(x) for x in layers], energy, layout=layout,
                             threshold=threshold)
    want = _numpy_observables(layers, energy, layout, threshold)
    assert list(got) == observable_names(len(layers))
    for name, value in got.items():
        assert value.shape == (n,) and value.dtype == torch.float64, name
        np.testing.assert_allclose(value.numpy(), want[name], rtol=1e-9, atol=1e-9, err_msg=name)
    assert float(got["E_tot"][0]) == 0 and float(got["response"][3]) == 0


def test_observables_of_hand_made_showers():
    n = 4
    layers = [np.zeros((n, *shape), np.float32) for shape in CALOGAN.shapes]
    layers[0][0, 1, 10] = 5.0  # shower 0: one cell in layer 0
    layers[1][1, 4, 3] = layers[1][1, 4, 4] = 2.0  # shower 1: two equal cells 40 mm apart
    layers[2][2, 0, 0] = 3.0  # shower 2: two cells of layer 2 in one column, 40 mm apart
    layers[2][2, 1, 0] = 1.0
    energy = np.array([10.0, 8.0, 4.0, 1.0])  # shower 3: empty
    obs = shower_observables(layers, energy)
    value = {k: v.tolist() for k, v in obs.items()}
    # one cell: no width, e_ratio 1, all in layer 0
    assert value["width_x_0"][0] == 0 and value["width_y_0"][0] == 0
    assert value["e_ratio_0"][0] == 1 and value["f_0"][0] == 1 and value["depth"][0] == 0
    assert value["sparsity_0"][0] == pytest.approx(1 / 288)
    assert value["response"][0] == pytest.approx(0.5)
    # two equal cells 40 mm apart in x: width 20 mm, e_ratio 0
    assert value["width_x_1"][1] == pytest.approx(20.0) and value["width_y_1"][1] == 0
    assert value["e_ratio_1"][1] == 0 and value["depth"][1] == 1 and value["depth_width"][1] == 0
    assert value["sparsity_1"][1] == pytest.approx(2 / 144)
    # 3:1 at y = ±20 mm around y = −200: std = 40 · sqrt(3/16)
    assert value["width_y_2"][2] == pytest.approx(40 * math.sqrt(3 / 16))
    assert value["width_x_2"][2] == 0 and value["e_ratio_2"][2] == pytest.approx(0.5)
    assert value["depth"][2] == 2 and value["depth_weighted_energy"][2] == pytest.approx(8.0)
    # no energy anywhere: every undefined value is 0
    assert all(v[3] == 0 for v in value.values())
    # a shower split between layers 0 and 2: depth 1, depth width 1
    two = [np.zeros((1, *shape), np.float32) for shape in CALOGAN.shapes]
    two[0][0, 0, 0] = two[2][0, 0, 0] = 1.0
    obs = shower_observables(two, np.ones(1))
    assert float(obs["depth"][0]) == 1 and float(obs["depth_width"][0]) == pytest.approx(1.0)


def test_observables_check_the_layout():
    layers = [np.zeros((3, *shape), np.float32) for shape in SMALL.shapes]
    with pytest.raises(ValueError, match=r"\(2, 5\).*calogan.*\(3, 96\)"):
        shower_observables(layers, np.ones(3))
    with pytest.raises(ValueError, match="2 incident energies for 3"):
        shower_observables(layers, np.ones(2), layout=SMALL)
    bad = [x.copy() for x in layers]
    bad[1][0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        shower_observables(bad, np.ones(3), layout=SMALL)
    empty = shower_observables([x[:0] for x in layers], np.ones(0), layout=SMALL)
    assert all(v.shape == (0,) for v in empty.values())


# ----------------------------------------------------------------------- separation power


def test_separation_power_limits_and_hand_formula():
    rng = np.random.default_rng(1)
    a = rng.normal(size=5000)
    assert separation_power(a, a) == 0.0
    assert separation_power(a, a.copy()[::-1]) == pytest.approx(0.0, abs=1e-15)
    assert separation_power(np.zeros(100), np.full(50, 3.0), bins=torch.tensor([-1.0, 1, 4])) == 1
    disjoint = separation_power(rng.uniform(0, 1, 500), rng.uniform(5, 6, 500),
                                bins=torch.linspace(0, 6, 13))
    assert disjoint == pytest.approx(1.0)

    b = rng.normal(0.3, 1.2, 3000)
    edges = np.linspace(-3.0, 3.0, 31)

    def by_hand(r: np.ndarray, g: np.ndarray, e: np.ndarray) -> float:
        hr, _ = np.histogram(np.clip(r, e[0], e[-1]), bins=e)
        hg, _ = np.histogram(np.clip(g, e[0], e[-1]), bins=e)
        hr, hg = hr / hr.sum(), hg / hg.sum()
        keep = hr + hg > 0
        return 0.5 * float(np.sum((hr[keep] - hg[keep]) ** 2 / (hr[keep] + hg[keep])))

    got = separation_power(torch.as_tensor(a), torch.as_tensor(b), bins=torch.as_tensor(edges))
    assert got == pytest.approx(by_hand(a, b, edges), rel=1e-12)
    # default binning: 50 bins between the reference's 0.1 % and 99.9 % quantiles
    q_edges = np.linspace(*np.quantile(a, [0.001, 0.999]), 51)
    assert separation_power(a, b) == pytest.approx(by_hand(a, b, q_edges), rel=1e-9)
    assert separation_power(a, b, bins=20) != pytest.approx(separation_power(a, b))
    # a spike in the reference (all zero) still bins the generated sample
    assert separation_power(np.zeros(200), np.zeros(100)) == 0
    assert separation_power(np.zeros(200), np.linspace(0, 1, 100)) > 0.9


def test_separation_power_rejects_bad_input():
    with pytest.raises(ValueError, match="NaN or infinite"):
        separation_power(np.array([1.0, np.nan]), np.ones(3))
    with pytest.raises(ValueError, match="NaN or infinite"):
        separation_power(np.ones(3), np.array([np.inf]))
    with pytest.raises(ValueError, match="empty"):
        separation_power(np.ones(3), np.ones(0))
    with pytest.raises(ValueError, match="increasing"):
        separation_power(np.ones(3), np.ones(3), bins=torch.tensor([1.0, 0.0]))


def test_separation_powers_over_observables():
    rng = np.random.default_rng(2)
    ref = {"a": torch.as_tensor(rng.normal(size=1000)), "b": torch.as_tensor(rng.random(1000)),
           "only_ref": torch.zeros(3)}
    gen = {"a": torch.as_tensor(rng.normal(size=800)), "b": torch.as_tensor(rng.random(800) + 5)}
    sep = separation_powers(ref, gen)
    # "b" lies beyond the reference: clipped into the last bin with ~1/50 of the reference
    assert list(sep) == ["a", "b"] and sep["a"] < 0.05 and 0.9 < sep["b"] < 1


# --------------------------------------------------------------------- classifier test


def test_classifier_cannot_tell_one_distribution_from_itself():
    g = torch.Generator().manual_seed(11)
    ref, gen = torch.randn(4000, 4, generator=g), torch.randn(4000, 4, generator=g)
    out = classifier_two_sample_test(ref, gen, seed=3)
    assert abs(out["auc"] - 0.5) < 0.04
    assert out["n_test"] == 4000 and out["n_train"] + out["n_validation"] == 4000
    assert 1 <= out["best_epoch"] <= out["epochs_run"] <= 30
    low, high = out["auc_interval"]
    assert low < out["auc"] < high


def test_classifier_reaches_the_bayes_optimal_auc():
    """Unit Gaussians whose means differ by Δ = 1 in one feature: AUC = Φ(Δ/√2) = 0.760."""
    g = torch.Generator().manual_seed(5)
    ref, gen = torch.randn(4000, 3, generator=g), torch.randn(4000, 3, generator=g)
    gen[:, 1] += 1.0
    out = classifier_two_sample_test(ref, gen, seed=0)
    bayes = 0.5 * (1 + math.erf(1 / 2))  # Φ(1/√2)
    assert bayes == pytest.approx(0.7602, abs=1e-4)
    assert abs(out["auc"] - bayes) < 0.03
    scores, labels = out["test_scores"], out["test_labels"]
    assert scores.shape == labels.shape == (out["n_test"],)
    assert int(labels.sum()) == out["n_test"] // 2  # balanced
    assert out["auc"] == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()), abs=1e-12)
    again = classifier_two_sample_test(ref, gen, seed=0)
    assert again["auc"] == out["auc"] and torch.equal(again["test_scores"], scores)


def test_classifier_balances_and_refuses_small_samples():
    g = torch.Generator().manual_seed(9)
    ref, gen = torch.randn(600, 2, generator=g), torch.randn(300, 2, generator=g)
    log_ref = ref.abs().clone()
    out = classifier_two_sample_test(log_ref, gen.abs(), epochs=2, test_fraction=0.4,
                                     log_features=[0], n_bootstrap=10)
    assert out["n_test"] == 240 and int(out["test_labels"].sum()) == 120
    assert torch.equal(log_ref, ref.abs())  # the caller's features are left alone
    with pytest.raises(ValueError, match="at least 100"):
        classifier_two_sample_test(ref[:99], gen)
    with pytest.raises(ValueError, match="one d"):
        classifier_two_sample_test(ref, torch.randn(300, 3))


def test_high_level_features_stack_observables():
    obs = {"E_0": torch.arange(3.0), "depth": torch.ones(3), "f_0": torch.zeros(3)}
    x, names = high_level_features(obs)
    assert names == ["E_0", "depth", "f_0"] and x.shape == (3, 3)
    x, names = high_level_features(obs, ["f_0", "E_0"])
    assert torch.equal(x[:, 1], torch.arange(3.0, dtype=x.dtype))
    with pytest.raises(ValueError, match="width_x_0"):
        high_level_features(obs, ["width_x_0"])
    assert len(HIGH_LEVEL) == 22 and "depth_weighted_energy" not in HIGH_LEVEL
    assert set(HIGH_LEVEL) <= set(observable_names(3))


# ----------------------------------------------------------------- response vs energy


def test_response_vs_energy_matches_numpy():
    rng = np.random.default_rng(4)
    incident = rng.uniform(10, 100, 3000)
    incident = incident[(incident < 40) | (incident > 55)]  # an empty bin
    response = rng.normal(0.9, 0.1, incident.size) + 0.001 * incident
    out = response_vs_energy(torch.as_tensor(incident), torch.as_tensor(response), bins=9)
    edges = np.linspace(incident.min(), incident.max(), 10)
    np.testing.assert_allclose(out["edges"].numpy(), edges)
    index = np.clip(np.digitize(incident, edges) - 1, 0, 8)
    for k in range(9):
        r = response[index == k]
        assert out["count"][k] == r.size
        if r.size == 0:
            assert all(float(out[key][k]) == 0 for key in ("mean", "mean_err", "std",
                                                           "resolution", "resolution_err"))
            continue
        std = np.std(r, ddof=1)
        assert float(out["mean"][k]) == pytest.approx(r.mean(), rel=1e-12)
        assert float(out["std"][k]) == pytest.approx(std, rel=1e-10)
        assert float(out["mean_err"][k]) == pytest.approx(std / math.sqrt(r.size), rel=1e-10)
        res = std / r.mean()
        assert float(out["resolution"][k]) == pytest.approx(res, rel=1e-10)
        err = res * math.sqrt(1 / (2 * (r.size - 1)) + res**2 / r.size)
        assert float(out["resolution_err"][k]) == pytest.approx(err, rel=1e-10)
    assert int(out["count"].sum()) == incident.size and (out["count"] == 0).any()
    # given edges: showers outside them are left out
    given = response_vs_energy(incident, response, bins=torch.tensor([20.0, 30.0]))
    assert int(given["count"][0]) == int(((incident >= 20) & (incident <= 30)).sum())
    single = response_vs_energy(np.full(5, 50.0), np.ones(5), bins=3)
    assert single["count"].tolist() == [0, 5, 0] and float(single["std"][1]) == 0


# ------------------------------------------------------------------------- comparison


def _showers(rng: np.random.Generator, n: int, scale: float = 1.0) -> Showers:
    layers = [x * scale for x in _random_showers(rng, n, CALOGAN)]
    return Showers(rng.uniform(1, 100, n), layers, np.zeros((n, 3)), np.full(n, 22))


def test_compare_showers_report(caplog):
    rng = np.random.default_rng(8)
    ref, gen = _showers(rng, 300), _showers(rng, 250, scale=1.5)
    out = compare_showers(ref, gen, classifier={"n_bootstrap": 10})
    names = observable_names(3)
    assert list(out["observables"]["reference"]) == names
    assert out["observables"]["generated"]["E_tot"].shape == (250,)
    assert list(out["separation_power"]) == names
    assert out["separation_power"]["E_tot"] > out["separation_power"]["f_0"]
    assert out["mean_separation_power"] == pytest.approx(np.mean(list(
        out["separation_power"].values())))
    assert out["classifier"]["features"] == list(HIGH_LEVEL)
    assert out["classifier"]["auc"] > 0.6  # the generated showers carry 1.5 x the energy
    assert torch.equal(out["response"]["reference"]["edges"],
                       out["response"]["generated"]["edges"])
    summary = json.loads(json.dumps(out["summary"]))
    assert summary["classifier"]["auc"] == out["classifier"]["auc"]
    assert summary["separation_power"] == out["separation_power"]
    with caplog.at_level(logging.WARNING):
        few = compare_showers(ref.select(slice(0, 50)), gen.select(slice(0, 60)))
    assert few["classifier"] is None and "skipped" in few["summary"]["classifier"]
    assert "classifier test skipped" in caplog.text
    json.dumps(few["summary"])
    named = compare_showers(ref, gen, classifier={"log_features": ["E_0", "E_tot"], "epochs": 2,
                                                  "n_bootstrap": 10})
    assert named["classifier"]["epochs_run"] == 2
    with pytest.raises(ValueError, match="layer shapes"):
        small = Showers(np.ones(2), [np.zeros((2, *s)) for s in SMALL.shapes], np.zeros((2, 3)),
                        np.zeros(2))
        compare_showers(ref, small)


# ------------------------------------------------------------------------------- plots


def _written(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    assert all(p.stat().st_size > 0 for p in paths)


def test_shower_plots_write_png_and_pdf(tmp_path):
    rng = np.random.default_rng(6)
    ref, gen = _showers(rng, 60), _showers(rng, 40, scale=1.2)
    gen.layers[2][:] = 0.0  # a layer without energy in every shower
    obs_r = {k: v.numpy() for k, v in shower_observables(ref.layers, ref.energy).items()}
    obs_g = shower_observables(gen.layers, gen.energy)  # CPU tensors are fine too
    sep = separation_powers(obs_r, obs_g)
    names = ["E_0", "E_tot", "width_x_2", "e_ratio_2", "sparsity_1", "nothing"]
    obs_r["nothing"], obs_g["nothing"] = np.zeros(0), torch.zeros(0)  # an empty panel
    _written(plot_observables(obs_r, obs_g, tmp_path / "obs", separation=sep, names=names))
    # no reference showers at all against showers with an empty layer
    _written(plot_average_showers([x[:0] for x in ref.layers], gen.layers, tmp_path / "avg"))
    edges = torch.linspace(1, 100, 6, dtype=torch.float64)
    r_ref = response_vs_energy(ref.energy, obs_r["response"], bins=edges)
    r_gen = response_vs_energy(np.zeros(0), np.zeros(0), bins=edges)
    _written(plot_response(r_ref, r_gen, tmp_path / "resp"))
    _written(plot_separation_powers(sep, tmp_path / "sep"))
    _written(plot_separation_powers({}, tmp_path / "sep0"))
    _written(plot_shower_examples(gen.layers, gen.energy, tmp_path / "ex", n=1))
    _written(plot_shower_examples([x[:0] for x in gen.layers], np.zeros(0), tmp_path / "ex0"))
    with pytest.raises(ValueError, match="layout"):
        plot_average_showers(ref.layers, gen.layers, tmp_path / "bad", layout=SMALL)


@pytest.mark.cuda
def test_cuda_matches_cpu():
    rng = np.random.default_rng(12)
    layers = _random_showers(rng, 500, CALOGAN)
    energy = rng.uniform(1, 100, 500)
    cpu = shower_observables(layers, energy)
    gpu = shower_observables([torch.as_tensor(x).cuda() for x in layers], energy)
    for name in cpu:
        assert gpu[name].device.type == "cuda"
        torch.testing.assert_close(gpu[name].cpu(), cpu[name], rtol=1e-9, atol=1e-9)
    half = {k: v[:250] for k, v in gpu.items()}, {k: v[250:] for k, v in gpu.items()}
    cpu_half = {k: v[:250] for k, v in cpu.items()}, {k: v[250:] for k, v in cpu.items()}
    sep_gpu, sep_cpu = separation_powers(*half), separation_powers(*cpu_half)
    assert sep_gpu == pytest.approx(sep_cpu, abs=1e-9)
    x, _ = high_level_features(gpu, list(HIGH_LEVEL))
    out = classifier_two_sample_test(x[:250], x[250:], epochs=3, n_bootstrap=10)
    assert out["test_scores"].device.type == "cuda" and 0 < out["auc"] < 1
    r = response_vs_energy(torch.as_tensor(energy).cuda(), gpu["response"], bins=5)
    r_cpu = response_vs_energy(energy, cpu["response"], bins=5)
    for key in r:
        torch.testing.assert_close(r[key].cpu(), r_cpu[key], rtol=1e-9, atol=1e-9)
