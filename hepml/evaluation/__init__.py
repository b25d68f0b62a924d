"""Evaluation: metrics with torch on the model's device, plots, and the run report.

Layers inside this package::

    metrics   tensors in, numbers out, on the tensors' device (ROC, AUC, rejection at
              fixed signal efficiency, bootstrap interval, confusion matrices, figures
              of merit, ``evaluate_binary`` / ``evaluate_multiclass``)
    tracking  the same for tracking: double-majority track matching, efficiency, fake
              and duplicate rates, binned efficiencies, edge-classifier metrics, the
              TrackML hit weights and score
    anomaly   figures of merit of anomaly scans: signal efficiency at fixed background
              efficiency, significance improvement, mass sculpting, the scanned sample
              with injected signal and the cuts on it
    dqm       lumisection monitoring: pulls, multiscale statistics, the score
              calibration and threshold, false-alarm rate and detection per fault type
    showers   generated vs reference calorimeter showers: the CaloGAN shower-shape
              observables, separation powers, a classifier two-sample test, the energy
              response against incident energy (``shower_plots`` draws them)
    plots     CPU numpy arrays in, PNG + PDF files out (matplotlib, mplhep style);
              ``tracking_plots`` for efficiencies, event displays and edge scores;
              ``anomaly_plots`` and ``dqm_plots`` for the autoencoder jobs (score
              distributions, sculpting, run timeline, residual maps)
    report    metrics + plots + config -> one self-contained ``report.html`` and an
              atomically written ``metrics.json``

``plots`` and ``report`` import matplotlib lazily, so importing the metrics stays cheap.
Non-finite numbers in JSON follow :func:`json_safe`: ``null`` plus a ``non_finite`` map.
"""

from __future__ import annotations

import importlib
from typing import Any

from hepml.evaluation.metrics import (
    RocCurve,
    auc,
    binary_confusion_matrix,
    binomial_rate,
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
from hepml.evaluation.tracking import (
    BinnedEfficiency,
    TrackMatch,
    TrackmlScore,
    edge_metrics,
    efficiency_vs,
    match_tracks,
    reconstructable,
    tracking_metrics,
    trackml_score,
    trackml_weights,
)

_LAZY = {
    "plot_rejection": "plots",
    "plot_roc": "plots",
    "plot_score_distributions": "plots",
    "plot_confusion_matrix": "plots",
    "plot_history": "plots",
    "plot_mean_images": "plots",
    "plot_efficiency": "tracking_plots",
    "plot_event_display": "tracking_plots",
    "plot_edge_scores": "tracking_plots",
    "plot_anomaly_scores": "anomaly_plots",
    "plot_significance_improvement": "anomaly_plots",
    "plot_mass_sculpting": "anomaly_plots",
    "plot_run_timeline": "dqm_plots",
    "plot_residual_map": "dqm_plots",
    "plot_score_by_type": "dqm_plots",
    "write_report": "report",
    "write_metrics_json": "report",
    "shower_observables": "showers",
    "separation_power": "showers",
    "separation_powers": "showers",
    "high_level_features": "showers",
    "classifier_two_sample_test": "showers",
    "response_vs_energy": "showers",
    "compare_showers": "showers",
}

__all__ = [
    "RocCurve",
    "roc_curve",
    "auc",
    "roc_auc",
    "rejection_at",
    "threshold_at_efficiency",
    "bootstrap_auc",
    "binomial_rate",
    "confusion_matrix",
    "binary_confusion_matrix",
    "figures_of_merit",
    "evaluate_binary",
    "evaluate_multiclass",
    "json_safe",
    "TrackMatch",
    "BinnedEfficiency",
    "TrackmlScore",
    "match_tracks",
    "reconstructable",
    "tracking_metrics",
    "efficiency_vs",
    "edge_metrics",
    "trackml_weights",
    "trackml_score",
    "plot_rejection",
    "plot_roc",
    "plot_score_distributions",
    "plot_confusion_matrix",
    "plot_history",
    "plot_mean_images",
    "plot_efficiency",
    "plot_event_display",
    "plot_edge_scores",
    "plot_anomaly_scores",
    "plot_significance_improvement",
    "plot_mass_sculpting",
    "plot_run_timeline",
    "plot_residual_map",
    "plot_score_by_type",
    "write_report",
    "write_metrics_json",
    "shower_observables",
    "separation_power",
    "separation_powers",
    "high_level_features",
    "classifier_two_sample_test",
    "response_vs_energy",
    "compare_showers",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(f"{__name__}.{_LAZY[name]}")
        return getattr(module, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
