"""hepml.evaluation.metrics against scikit-learn (the independent reference) and hand-made cases."""

from __future__ import annotations

import json
import logging
import math

import numpy as np
import pytest
import torch
from sklearn import metrics as skm

from hepml.errors import BadValueError, EmptyInputError
from hepml.evaluation import (
    RocCurve,
    auc,
    binary_confusion_matrix,
    bootstrap_auc,
    confusion_matrix,
    evaluate_binary,
    evaluate_multiclass,
    figures_of_merit,
    json_safe,
    rejection_at,
    roc_auc,
    roc_curve,
    threshold_at_efficiency,
)

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> torch.device:
    if request.param == "cuda" and not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    return torch.device(request.param)


@pytest.fixture(scope="module")
def tied() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """10^6 scores rounded to 2 decimals (heavy ties), labels, and weights."""
    rng = np.random.default_rng(20240611)
    n = 1_000_000
    labels = rng.random(n) < 0.35
    scores = np.round(1 / (1 + np.exp(-(rng.normal(size=n) + 1.1 * labels))), 2)
    weights = rng.exponential(size=n)
    weights[rng.random(n) < 0.05] = 0.0  # zero weights must not create thresholds
    return scores, labels, weights


def _t(x: np.ndarray, device: torch.device, dtype: torch.dtype | None = None) -> torch.Tensor:
    return torch.as_tensor(x, dtype=dtype).to(device)


# ------------------------------------------------------------------------ ROC vs sklearn


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_roc_curve_matches_sklearn_point_for_point(tied, device, dtype):
    scores, labels, _ = tied
    roc = roc_curve(_t(scores, device, dtype), _t(labels, device))
    s_np = scores.astype(np.float64 if dtype == torch.float64 else np.float32)
    fpr, tpr, thr = skm.roc_curve(labels, s_np, drop_intermediate=False)
    assert roc.fpr.device.type == device.type
    assert roc.fpr.shape[0] == len(fpr) == len(np.unique(s_np)) + 1
    np.testing.assert_array_equal(roc.fpr.cpu().numpy(), fpr)
    np.testing.assert_array_equal(roc.tpr.cpu().numpy(), tpr)
    np.testing.assert_array_equal(roc.thresholds.cpu().numpy(), thr.astype(np.float64))
    assert math.isinf(roc.thresholds[0]) and roc.fpr[0] == 0 and roc.tpr[0] == 0
    assert roc.n_signal == labels.sum() and roc.n_background == (~labels).sum()
    assert abs(auc(roc.fpr, roc.tpr) - skm.roc_auc_score(labels, s_np)) < 1e-9
    assert abs(roc_auc(_t(s_np, device), _t(labels, device))
               - skm.roc_auc_score(labels, s_np)) < 1e-9


def test_roc_continuous_negative_and_signed_zero_scores(device):
    rng = np.random.default_rng(3)
    scores = rng.normal(size=20_000)
    scores[:50], scores[50:100] = 0.0, -0.0  # one threshold for both zeros, as sklearn
    labels = rng.integers(0, 2, size=20_000)
    roc = roc_curve(_t(scores, device), _t(labels, device))
    fpr, tpr, thr = skm.roc_curve(labels, scores, drop_intermediate=False)
    np.testing.assert_array_equal(roc.fpr.cpu().numpy(), fpr)
    np.testing.assert_array_equal(roc.tpr.cpu().numpy(), tpr)
    np.testing.assert_array_equal(roc.thresholds.cpu().numpy(), thr)


def test_weighted_roc_and_auc_match_sklearn(tied, device):
    scores, labels, weights = tied
    roc = roc_curve(_t(scores, device), _t(labels, device), _t(weights, device))
    fpr, tpr, thr = skm.roc_curve(labels, scores, sample_weight=weights, drop_intermediate=False)
    np.testing.assert_array_equal(roc.thresholds.cpu().numpy(), thr)
    np.testing.assert_allclose(roc.fpr.cpu().numpy(), fpr, rtol=0, atol=1e-12)
    np.testing.assert_allclose(roc.tpr.cpu().numpy(), tpr, rtol=0, atol=1e-12)
    expected = skm.roc_auc_score(labels, scores, sample_weight=weights)
    assert abs(roc_auc(_t(scores, device), _t(labels, device), _t(weights, device))
               - expected) < 1e-9
    w_b = weights[~labels]
    assert roc.n_background_effective == pytest.approx(w_b.sum() ** 2 / (w_b**2).sum())


def test_float16_scores(device):
    rng = np.random.default_rng(5)
    labels = rng.random(50_000) < 0.5
    scores16 = (rng.random(50_000) * 0.5 + 0.3 * labels).astype(np.float16)
    roc = roc_curve(_t(scores16, device), _t(labels, device))
    fpr, tpr, thr = skm.roc_curve(labels, scores16.astype(np.float32), drop_intermediate=False)
    np.testing.assert_array_equal(roc.fpr.cpu().numpy(), fpr)
    np.testing.assert_array_equal(roc.thresholds.cpu().numpy(), thr.astype(np.float64))
    assert abs(roc_auc(_t(scores16, device), _t(labels, device))
               - skm.roc_auc_score(labels, scores16.astype(np.float32))) < 1e-9


def test_all_tied_scores_give_auc_one_half(device):
    labels = torch.tensor([0, 1, 1, 0, 1, 0, 0], device=device)
    scores = torch.full((7,), 0.7, device=device)
    roc = roc_curve(scores, labels)
    assert roc.fpr.tolist() == [0.0, 1.0] and roc.tpr.tolist() == [0.0, 1.0]
    assert roc_auc(scores, labels) == 0.5


# ------------------------------------------------------------------ rejection, threshold


def _constructed(device: torch.device) -> RocCurve:
    """10 signal at 0.1..1.0 and 100 background at 0.005..0.995."""
    sig = torch.arange(1, 11, dtype=torch.float64) / 10
    bkg = torch.arange(1, 101, dtype=torch.float64) / 100 - 0.005
    scores = torch.cat([sig, bkg]).to(device)
    labels = torch.cat([torch.ones(10), torch.zeros(100)]).to(device)
    return roc_curve(scores, labels)


def test_rejection_at_known_answer(device):
    roc = _constructed(device)
    # eps_S = 0.3 <=> score >= 0.8: 20 background pass (0.805..0.995) -> eps_B = 0.2
    rej, sigma = rejection_at(roc, 0.3)
    assert rej.device.type == device.type and rej.dim() == 0
    assert float(rej) == pytest.approx(5.0)
    assert float(sigma) == pytest.approx(math.sqrt(0.2 * 0.8 / 100) / 0.2**2)  # = 1.0
    assert threshold_at_efficiency(roc, 0.3) == pytest.approx(0.8)
    # eps_S = 0.25 lies on the vertical segment tpr 0.2 -> 0.3 at fpr 0.2
    rej, _ = rejection_at(roc, [0.25, 1.0])
    assert rej.tolist() == pytest.approx([5.0, 1 / 0.9])  # eps_S = 1: score >= 0.1, 90 bkg


def test_rejection_interpolates_linearly(device):
    # signal at 3 and 1; background at 2 and 0: points (0,0),(0,.5),(.5,.5),(.5,1),(1,1)
    scores = torch.tensor([3.0, 2.0, 1.0, 0.0], device=device)
    labels = torch.tensor([1, 0, 1, 0], device=device)
    roc = roc_curve(scores, labels)
    rej, _ = rejection_at(roc, 0.75)  # between (0.5, 0.5) and (0.5, 1.0): eps_B = 0.5
    assert float(rej) == pytest.approx(2.0)


def test_zero_background_efficiency_is_infinite_rejection(device):
    scores = torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1], device=device)
    labels = torch.tensor([1, 1, 1, 0, 0], device=device)
    roc = roc_curve(scores, labels)
    rej, sigma = rejection_at(roc, torch.tensor([0.3, 1.0]))
    assert math.isinf(rej[0]) and math.isnan(sigma[0])
    assert rej[1] == float("inf")  # all signal above all background
    metrics = evaluate_binary(scores, labels, n_bootstrap=0)
    assert metrics["rejection@0.3"] is None
    assert metrics["non_finite"]["rejection@0.3"] == "inf"
    assert 0.3 in metrics["rejection_infinite"]
    assert metrics["rejection"]["0.3"]["infinite"] is True
    json.dumps(metrics, allow_nan=False)  # strict JSON


def test_bad_efficiency_raises():
    roc = _constructed(torch.device("cpu"))
    with pytest.raises(BadValueError):
        rejection_at(roc, 0.0)
    with pytest.raises(BadValueError):
        threshold_at_efficiency(roc, 1.5)


# ------------------------------------------------------------------------- validation


def test_nan_and_inf_scores_raise_with_count_and_index():
    scores = torch.tensor([0.1, 0.2, float("nan"), 0.4, float("inf")])
    labels = torch.tensor([0, 1, 0, 1, 0])
    with pytest.raises(BadValueError, match=r"2 of 5.*index 2"):
        roc_curve(scores, labels)
    with pytest.raises(BadValueError):
        evaluate_binary(scores, labels)


def test_bad_labels_and_shapes_raise():
    with pytest.raises(BadValueError, match="0 .background. or 1"):
        roc_curve(torch.rand(4), torch.tensor([0, 1, 2, 1]))
    with pytest.raises(BadValueError):
        roc_curve(torch.rand(4), torch.tensor([0, 1, 1]))
    with pytest.raises(EmptyInputError):
        roc_curve(torch.empty(0), torch.empty(0, dtype=torch.long))
    with pytest.raises(EmptyInputError):
        roc_auc(torch.empty(0), torch.empty(0, dtype=torch.long))
    with pytest.raises(EmptyInputError):
        evaluate_binary(torch.empty(0), torch.empty(0, dtype=torch.long))


def test_class_without_entries(device, caplog):
    scores = torch.tensor([0.3, 0.6, 0.9], device=device)
    labels = torch.zeros(3, dtype=torch.long, device=device)
    with caplog.at_level(logging.WARNING, logger="hepml.evaluation.metrics"):
        roc = roc_curve(scores, labels)
    assert torch.isnan(roc.tpr).all() and roc.fpr[-1] == 1.0  # as sklearn
    assert "no signal" in caplog.text
    with pytest.raises(EmptyInputError, match="no signal"):
        roc_auc(scores, labels)
    with pytest.raises(EmptyInputError):
        bootstrap_auc(scores, labels)
    with pytest.raises(EmptyInputError):
        threshold_at_efficiency(roc, 0.5)
    rej, sigma = rejection_at(roc, 0.5)
    assert math.isnan(rej) and math.isnan(sigma)
    metrics = evaluate_binary(scores, labels, n_bootstrap=10)
    assert metrics["auc"] is None and metrics["non_finite"]["auc"] == "nan"
    assert metrics["warnings"] and metrics["n_signal"] == 0
    assert sum(map(sum, metrics["confusion_matrix"]["counts"])) == 3
    json.dumps(metrics, allow_nan=False)
    # background missing instead
    metrics = evaluate_binary(scores, torch.ones_like(labels), n_bootstrap=10)
    assert metrics["auc"] is None and metrics["n_background"] == 0


# -------------------------------------------------------------------- confusion matrices


def test_confusion_matrix_binary_matches_sklearn(tied, device):
    scores, labels, _ = tied
    cm = binary_confusion_matrix(_t(scores, device), _t(labels, device), 0.5)
    expected = skm.confusion_matrix(labels, scores >= 0.5, labels=[0, 1])
    assert cm.dtype == torch.int64 and cm.device.type == device.type
    np.testing.assert_array_equal(cm.cpu().numpy(), expected)


def test_confusion_matrix_multiclass_by_argmax(device):
    rng = np.random.default_rng(9)
    scores = rng.random((30_000, 4))
    labels = rng.integers(0, 4, size=30_000)
    predicted = _t(scores, device).argmax(1)
    cm = confusion_matrix(predicted, _t(labels, device), 4)
    np.testing.assert_array_equal(cm.cpu().numpy(),
                                  skm.confusion_matrix(labels, scores.argmax(1), labels=range(4)))
    result = evaluate_multiclass(_t(scores, device), _t(labels, device), ["a", "b", "c", "d"])
    assert result["accuracy"] == pytest.approx(skm.accuracy_score(labels, scores.argmax(1)))
    for k, name in enumerate("abcd"):
        assert result["auc_one_vs_rest"][name] == pytest.approx(
            skm.roc_auc_score(labels == k, scores[:, k]), abs=1e-9)
    with pytest.raises(BadValueError):
        confusion_matrix(predicted, _t(labels, device) + 1, 4)


def test_multiclass_with_an_empty_class(caplog):
    scores = torch.rand(50, 3)
    labels = torch.randint(0, 2, (50,))
    labels[:2] = torch.tensor([0, 1])
    with caplog.at_level(logging.WARNING):
        result = evaluate_multiclass(scores, labels, ["a", "b", "c"])
    assert result["auc_one_vs_rest"]["c"] is None
    assert result["non_finite"]["auc_one_vs_rest/c"] == "nan"
    assert "'c'" in caplog.text


# --------------------------------------------------------------------- figures of merit


def test_figures_of_merit_hand_computed():
    # TN = 50, FP = 10, FN = 5, TP = 35 (P = 40, N = 60, total 100)
    fom = figures_of_merit(torch.tensor([[50, 10], [5, 35]]))
    tpr, fpr = 35 / 40, 10 / 60
    expected = {
        "TPR": 0.875, "TNR": 50 / 60, "PPV": 35 / 45, "NPV": 50 / 55, "FNR": 0.125,
        "FPR": fpr, "FDR": 10 / 45, "FOR": 5 / 55, "LR+": 0.875 / fpr, "LR-": 0.125 / (50 / 60),
        "prevalence_threshold": (math.sqrt(tpr * fpr) - fpr) / (tpr - fpr),
        "threat_score": 35 / 50, "prevalence": 0.4, "accuracy": 0.85,
        "balanced_accuracy": (0.875 + 50 / 60) / 2, "F1": 70 / 85,
        "MCC": (35 * 50 - 10 * 5) / math.sqrt(45 * 40 * 60 * 55),
    }
    for key, value in expected.items():
        assert fom[key] == pytest.approx(value, rel=1e-12), key
    assert fom["LR+"] == pytest.approx(5.25)
    assert fom["accuracy"] == pytest.approx(skm.accuracy_score(
        [0] * 60 + [1] * 40, [0] * 50 + [1] * 10 + [0] * 5 + [1] * 35))


def test_figures_of_merit_division_by_zero():
    fom = figures_of_merit([[10, 0], [2, 8]])  # FPR = 0, TPR > 0
    assert fom["LR+"] == math.inf and fom["FPR"] == 0.0
    fom = figures_of_merit([[10, 0], [0, 0]])  # no signal, nothing selected
    assert math.isnan(fom["TPR"]) and math.isnan(fom["PPV"]) and math.isnan(fom["MCC"])
    assert fom["accuracy"] == 1.0
    fom = figures_of_merit([[0, 0], [0, 0]])
    assert all(math.isnan(v) for k, v in fom.items() if k not in {"TP", "FP", "TN", "FN"})


# ----------------------------------------------------------------------------- bootstrap


def _delong_se(scores: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    """AUC and its DeLong standard error (ties counted one half), numpy only."""
    pos, neg = np.sort(scores[labels]), np.sort(scores[~labels])
    m, n = len(pos), len(neg)
    v10 = (np.searchsorted(neg, pos, "left") + np.searchsorted(neg, pos, "right")) / (2 * n)
    v01 = 1 - (np.searchsorted(pos, neg, "left") + np.searchsorted(pos, neg, "right")) / (2 * m)
    a = v10.mean()
    return a, math.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n)


def test_bootstrap_interval_width_matches_delong(device):
    rng = np.random.default_rng(11)
    n = 200_000
    labels = rng.random(n) < 0.3
    scores = np.round(rng.normal(size=n) + 0.8 * labels, 2)
    point = roc_auc(_t(scores, device), _t(labels, device))
    a, se = _delong_se(scores, labels)
    assert point == pytest.approx(a, abs=1e-9)
    low, high = bootstrap_auc(_t(scores, device), _t(labels, device), n_bootstrap=300,
                              confidence=0.68, seed=1)
    assert low < point < high
    assert 0.7 < (high - low) / 2 / se < 1.4
    # reproducible with the seed, different with another
    assert bootstrap_auc(_t(scores, device), _t(labels, device), 300, 0.68, seed=1) == (low, high)
    assert bootstrap_auc(_t(scores, device), _t(labels, device), 300, 0.68, seed=2) != (low, high)


def test_bootstrap_chunks_bound_memory(monkeypatch):
    import hepml.evaluation.metrics as metrics

    rng = np.random.default_rng(2)
    scores = torch.from_numpy(rng.normal(size=5000))  # ~5000 distinct: many chunks
    labels = torch.from_numpy(rng.random(5000) < 0.5)
    ref = bootstrap_auc(scores, labels, 64, seed=0)
    monkeypatch.setattr(metrics, "_BOOTSTRAP_BUDGET", 10_000)  # one replica per chunk
    low, high = bootstrap_auc(scores, labels, 64, seed=0)
    assert low < roc_auc(scores, labels) < high
    assert (high - low) == pytest.approx(ref[1] - ref[0], rel=0.5)


# ------------------------------------------------------------------------ evaluate_binary


def test_evaluate_binary_is_json_and_consistent(tied, device):
    scores, labels, _ = tied
    s, y = _t(scores[:200_000], device), _t(labels[:200_000], device)
    m = evaluate_binary(s, y, working_points=(0.3, 0.5), n_bootstrap=50, seed=0)
    text = json.dumps(m, allow_nan=False)
    assert json.loads(text) == m
    assert m["device"].startswith(device.type)
    assert m["auc"] == pytest.approx(skm.roc_auc_score(labels[:200_000], scores[:200_000]),
                                     abs=1e-9)
    assert m["auc_ci"][0] < m["auc"] < m["auc_ci"][1]
    roc = roc_curve(s, y)
    for wp in (0.3, 0.5):
        rej, sigma = rejection_at(roc, wp)
        assert m[f"rejection@{wp}"] == pytest.approx(float(rej))
        assert m[f"rejection_uncertainty@{wp}"] == pytest.approx(float(sigma))
    assert m["threshold"] == threshold_at_efficiency(roc, 0.5)
    cm = np.array(m["confusion_matrix"]["counts"])
    np.testing.assert_array_equal(
        cm, skm.confusion_matrix(labels[:200_000], scores[:200_000] >= m["threshold"]))
    assert m["figures_of_merit"]["TPR"] >= 0.5  # the working point reaches eps_S = 0.5
    np.testing.assert_allclose(np.sum(m["confusion_matrix"]["normalized"], 1), 1.0)
    assert m["n_signal"] + m["n_background"] == 200_000
    # an explicit threshold and a threshold_efficiency
    m2 = evaluate_binary(s, y, threshold=0.6, n_bootstrap=0)
    assert m2["threshold"] == 0.6 and m2["auc_ci"] is None


def test_json_safe_convention():
    out = json_safe({"a": float("inf"), "b": [1.0, float("nan")], "c": {"d": -math.inf},
                     "t": torch.tensor([1.5, 2.5]), "n": np.float32(2.0)})
    assert out["a"] is None and out["b"] == [1.0, None] and out["c"]["d"] is None
    assert out["non_finite"] == {"a": "inf", "b/1": "nan", "c/d": "-inf"}
    assert out["t"] == [1.5, 2.5] and out["n"] == 2.0
    json.dumps(out, allow_nan=False)
