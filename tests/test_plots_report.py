"""Plots (under Agg) and the HTML report / metrics.json of hepml.evaluation."""

from __future__ import annotations

import base64
import json
import math
import os
from pathlib import Path

import matplotlib
import numpy as np
import pytest
import torch

from hepml.evaluation import (
    evaluate_binary,
    evaluate_multiclass,
    plot_confusion_matrix,
    plot_history,
    plot_rejection,
    plot_roc,
    plot_score_distributions,
    roc_curve,
    write_metrics_json,
    write_report,
)
from hepml.evaluation.plots import _thin

matplotlib.use("Agg")


@pytest.fixture(scope="module")
def sample() -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    labels = torch.rand(20_000, generator=gen) < 0.4
    scores = torch.sigmoid(torch.randn(20_000, generator=gen) + 1.5 * labels)
    return scores, labels


def _check_files(paths: list[Path]) -> None:
    assert sorted(p.suffix for p in paths) == [".pdf", ".png"]
    for p in paths:
        assert p.exists() and p.stat().st_size > 1000, p
    png = next(p for p in paths if p.suffix == ".png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_rejection_and_roc_plots(tmp_path, sample):
    scores, labels = sample
    cnn = roc_curve(scores, labels)
    gnn = roc_curve(torch.round(scores * 20) / 20, labels)
    _check_files(plot_rejection({"CNN": cnn, "GNN": gnn}, tmp_path / "rejection"))
    _check_files(plot_roc({"CNN": cnn, "GNN": gnn}, tmp_path / "roc"))


def test_infinite_rejection_does_not_crash(tmp_path):
    perfect = roc_curve(torch.tensor([0.9, 0.8, 0.2, 0.1]), torch.tensor([1, 1, 0, 0]))
    assert float(perfect.fpr[2]) == 0.0  # eps_B = 0 at eps_S = 1: infinite rejection
    _check_files(plot_rejection({"perfect": perfect}, tmp_path / "perfect"))
    no_bkg = roc_curve(torch.tensor([0.9, 0.8]), torch.tensor([1, 1]))  # fpr all NaN
    _check_files(plot_rejection({"nothing": no_bkg}, tmp_path / "nothing"))


def test_big_curve_is_thinned():
    n = 3_000_000
    fpr = np.linspace(0, 1, n) ** 3
    tpr = np.linspace(0, 1, n) ** 0.5
    idx = _thin(fpr, tpr)
    assert len(idx) <= 6002 and idx[0] == 0 and idx[-1] == n - 1
    assert np.all(np.diff(idx) > 0)


def test_scores_confusion_history_plots(tmp_path, sample):
    scores, labels = sample
    _check_files(plot_score_distributions(scores.numpy(), labels.numpy(), ["QCD", "top"],
                                          tmp_path / "scores"))
    cm = np.array([[900, 100, 0], [50, 400, 50], [0, 0, 0]])  # an empty true class
    _check_files(plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cm", normalize=False))
    _check_files(plot_confusion_matrix(cm, ["a", "b", "c"], tmp_path / "cmn", normalize=True))
    history = [{"epoch": e, "train_loss": 1 / (e + 1), "val_loss": 1.1 / (e + 1),
                "train_accuracy": 0.6 + 0.02 * e, "lr": 1e-3 * 0.5**e} for e in range(5)]
    history[2].pop("val_loss")
    _check_files(plot_history(history, tmp_path / "history"))
    _check_files(plot_history([{"train_loss": 0.5}], tmp_path / "history_one"))


def test_metrics_json_is_strict_and_atomic(tmp_path):
    path = write_metrics_json(tmp_path / "metrics.json",
                              {"auc": 0.9, "rejection@0.3": math.inf, "x": [math.nan, 1.0]})
    data = json.loads(path.read_text())
    assert data["rejection@0.3"] is None and data["x"] == [None, 1.0]
    assert data["non_finite"] == {"rejection@0.3": "inf", "x/0": "nan"}
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]  # no temporary left
    assert oct(os.stat(path).st_mode & 0o777) == "0o644"


def test_report_embeds_images_and_metrics(tmp_path, sample):
    scores, labels = sample
    metrics = evaluate_binary(scores, labels, n_bootstrap=20)
    three = torch.softmax(torch.randn(300, 3), 1)
    metrics["multiclass"] = evaluate_multiclass(three, torch.randint(0, 3, (300,)),
                                                ["q", "g", "t<b>"])
    roc = roc_curve(scores, labels)
    plots = plot_rejection({"model": roc}, tmp_path / "rejection")
    plots += plot_confusion_matrix(np.array(metrics["confusion_matrix"]["counts"]),
                                   ["QCD", "top"], tmp_path / "cm", normalize=True)
    report = write_report(tmp_path, title="top <tagging> & more", metrics=metrics,
                          config={"model": {"kind": "cnn"}, "note": "<script>x</script>"},
                          plots=plots, extra_tables={"timing": [{"step": "eval", "s": 1.5}]})
    text = report.read_text()
    assert report.name == "report.html"
    assert text.count("data:image/png;base64,") == 2
    encoded = base64.b64encode((tmp_path / "rejection.png").read_bytes()).decode()
    assert encoded in text
    assert "top &lt;tagging&gt; &amp; more" in text and "<script>x</script>" not in text
    assert "t&lt;b&gt;" in text
    assert f"{metrics['auc']:.4g}" in text
    assert f"{metrics['rejection@0.3']:.4g}"[:4] in text
    for word in ("Figures of merit", "Confusion matrix", "torch", "uproot", "awkward",
                 "hepml", "python", "UTC", "timing"):
        assert word in text


def test_report_shows_infinite_rejection(tmp_path):
    metrics = evaluate_binary(torch.tensor([0.9, 0.8, 0.7, 0.2, 0.1]),
                              torch.tensor([1, 1, 1, 0, 0]), n_bootstrap=0)
    text = write_report(tmp_path, title="perfect", metrics=metrics, config="seed: 1\n",
                        plots=[]).read_text()
    assert "inf" in text and "seed: 1" in text


def test_mean_images_plot(tmp_path):
    import numpy as np

    from hepml.errors import EmptyInputError
    from hepml.evaluation import plot_mean_images

    img = np.zeros((10, 10))
    img[5, 5] = 1.0
    paths = plot_mean_images({"QCD": img, "top": img.T * 0.5}, tmp_path / "m",
                             extent=(-1, 1, -1, 1))
    assert ([p.suffix for p in paths] == [".png", ".pdf"]
            and all(p.stat().st_size > 1000 for p in paths))
    with pytest.raises(EmptyInputError):
        plot_mean_images({}, tmp_path / "none")


def test_report_key_metrics_from_the_task_and_each_table_once(tmp_path):
    """A task's own key metrics fill the table; an extra table is not repeated below."""
    import re

    metrics = {"tracking": {"efficiency": 0.97, "selection": {"min_pt": 1.0}},
               "training": {"epochs_run": 7, "best_epoch": 5},
               "nested": {"a": {"b": {"c": 1}}, "rows": [{"x": 1, "y": 2}, {"x": 3, "y": 4}]}}
    text = write_report(tmp_path, title="t", metrics=metrics, config=None, plots=[],
                        extra_tables={"training": metrics["training"]},
                        key_metrics=[("track efficiency", "0.9700 ± 0.0100")]).read_text()
    key = text.split("<h2>Key metrics</h2>")[1].split("<h2>")[0]
    assert "track efficiency" in key and "0.9700 ± 0.0100" in key
    assert text.count("epochs_run") == 1  # the training block once
    # nested metrics render as nested tables, not JSON blobs in <pre>
    other = text.split("<h2>Other metrics</h2>")[1].split("<h2>")[0]
    assert "<pre>" not in other
    assert len(re.findall("<table>", other)) >= 4


def test_rejection_band_stops_at_one(tmp_path, monkeypatch):
    """The lower edge of the 1/ε_B band never drops below 1 (ε_B <= 1)."""
    import matplotlib.axes

    seen = []
    real = matplotlib.axes.Axes.fill_between

    def spy(self, x, y1, y2=0, **kw):
        seen.append(np.asarray(y1, dtype=float))
        return real(self, x, y1, y2, **kw)

    monkeypatch.setattr(matplotlib.axes.Axes, "fill_between", spy)
    gen = torch.Generator().manual_seed(1)
    labels = torch.rand(60, generator=gen) < 0.5
    scores = torch.rand(60, generator=gen)  # no separation: 1/ε_B near 1 with large errors
    plot_rejection({"random": roc_curve(scores, labels)}, tmp_path / "rej")
    assert seen and min(float(y.min()) for y in seen) >= 1.0


def test_history_without_accuracy_has_one_panel(tmp_path):
    """A model without accuracy (a GAN) gets the loss panel alone, no empty panel."""
    import matplotlib.pyplot as plt

    created = []
    real = plt.subplots

    def spy(*args, **kwargs):
        fig, axes = real(*args, **kwargs)
        created.append(np.atleast_1d(axes).size)
        return fig, axes

    history = [{"epoch": i, "train_loss": 1.0 / i, "val_loss": 1.2 / i} for i in range(1, 4)]
    import hepml.evaluation.plots as plots_module

    monkey = pytest.MonkeyPatch()
    monkey.setattr(plots_module._pyplot(), "subplots", spy)
    try:
        plot_history(history, tmp_path / "h")
        plot_history([{**h, "val_accuracy": 0.5} for h in history], tmp_path / "h2")
    finally:
        monkey.undo()
    assert created == [1, 2]


def test_summary_rows_leave_out_values_that_are_not_there():
    """Key-metric rows: a missing or NaN value is left out, inf is shown; ``± error`` kept."""
    from hepml.tasks._job import number, rows, with_error

    assert number(None) == number(float("nan")) == number("x") == number(True) == "n/a"
    assert number(float("inf"), ".1f") == "inf" and number(3, "d") == "3"
    assert with_error(0.5, 0.125, ".3f") == "0.500 ± 0.125" and with_error(0.5, None) == "0.5000"
    assert rows([("a", with_error(float("nan"), float("nan"))), ("b", number(1.0))]) == (
        ("b", "1.0000"),)
