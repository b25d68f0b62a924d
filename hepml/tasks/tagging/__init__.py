"""The tagging job: ROOT jets -> representation -> classifier -> metrics, plots, report.

:func:`run` trains and evaluates a tagger described by a workflow; :func:`predict`
applies a trained checkpoint to files and writes friend trees; :func:`evaluate` turns
existing predictions into metrics and plots. All three share :class:`TaggingData`, which
reads chunks through :mod:`hepml.io`, builds model inputs with a representation, and
assigns every entry to train/validation/test by the workflow seed.

The package: :mod:`~hepml.tasks.tagging.task` (:func:`run`, :func:`evaluate` and the
report they share) and :mod:`~hepml.tasks.tagging.trained` (:func:`predict`,
:func:`predict_files`, :func:`compare`, :func:`generator_shift`); the data adapter
(:class:`TaggingData`) is :mod:`hepml.tasks._entries`, shared with the anomaly scan.
"""

from __future__ import annotations

from hepml.tasks._entries import (
    KINDS,
    TaggingData,
    build_representation,
    cached_representation,
    flag_labels,
    model_inputs,
)
from hepml.tasks.tagging.task import (
    evaluate,
    report_metrics,
    run,
    summarise,
    write_predictions,
)
from hepml.tasks.tagging.trained import compare, generator_shift, predict, predict_files

__all__ = ["TaggingData", "build_representation", "run", "predict", "predict_files", "evaluate",
           "compare", "generator_shift", "KINDS", "cached_representation", "flag_labels",
           "model_inputs", "report_metrics", "summarise", "write_predictions"]
