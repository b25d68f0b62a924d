"""hepml: machine learning on collider data.

Layers, imports pointing down only (see ``docs/architecture.md``)::

    cli            thin: parse arguments, call a task, say where results went
    tasks          one module per job (tagging, ...); composes the layers below
    evaluation     metrics with torch on the model's device, plots, run report
    training       one trainer for every model: device, AMP, early stopping, checkpoints
    models         plain torch.nn.Modules
    representations awkward arrays -> tensors (jet images, ...)
    io             the only place that opens files (uproot reading/writing)
    simulation     makes input data (Pythia 8 + FastJet) -> ROOT files via io
    config, errors typed configuration and the exception hierarchy

The top-level namespace holds what a notebook calls (``__all__``; see ``docs/python.md``):
reading (:func:`read`, :class:`Source`), the representations, :func:`build_model`,
:class:`Trainer`, the classification metrics and :func:`load_workflow`. Each name, like
each subpackage, is imported on first use, so that ``import hepml`` stays cheap (no torch,
no uproot).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_SUBMODULES = {
    "cli", "config", "errors", "evaluation", "io", "models", "representations",
    "simulation", "tasks", "training",
}

#: Public name -> the subpackage that defines it (the names of ``__all__``).
_API = {
    "read": "io",
    "iterate": "io",
    "Source": "io",
    "build_representation": "representations",
    "JetImages": "representations",
    "ParticleClouds": "representations",
    "EventGraphs": "representations",
    "HitGraphs": "representations",
    "TrackSequences": "representations",
    "Features": "representations",
    "LumisectionMaps": "representations",
    "build_model": "models",
    "Trainer": "training",
    "ChunkedDataset": "training",
    "TrainingConfig": "config",
    "load_workflow": "config",
    "evaluate_binary": "evaluation",
    "evaluate_multiclass": "evaluation",
    "roc_curve": "evaluation",
    "auc": "evaluation",
    "roc_auc": "evaluation",
    "rejection_at": "evaluation",
    "HepmlError": "errors",
    "ConfigError": "errors",
}

__all__ = [
    "__version__",
    # reading (hepml.io)
    "read",
    "iterate",
    "Source",
    # awkward arrays -> tensors (hepml.representations)
    "build_representation",
    "JetImages",
    "ParticleClouds",
    "EventGraphs",
    "HitGraphs",
    "TrackSequences",
    "Features",
    "LumisectionMaps",
    # models and training
    "build_model",
    "Trainer",
    "ChunkedDataset",
    "TrainingConfig",
    "load_workflow",
    # metrics (hepml.evaluation)
    "evaluate_binary",
    "evaluate_multiclass",
    "roc_curve",
    "auc",
    "roc_auc",
    "rejection_at",
    # errors
    "HepmlError",
    "ConfigError",
]

if TYPE_CHECKING:  # what static tools see; at run time __getattr__ imports on first use
    from hepml.config import TrainingConfig, load_workflow
    from hepml.errors import ConfigError, HepmlError
    from hepml.evaluation import (
        auc,
        evaluate_binary,
        evaluate_multiclass,
        rejection_at,
        roc_auc,
        roc_curve,
    )
    from hepml.io import Source, iterate, read
    from hepml.models import build_model
    from hepml.representations import (
        EventGraphs,
        Features,
        HitGraphs,
        JetImages,
        LumisectionMaps,
        ParticleClouds,
        TrackSequences,
        build_representation,
    )
    from hepml.training import ChunkedDataset, Trainer


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    if name in _API:
        value = getattr(importlib.import_module(f"{__name__}.{_API[name]}"), name)
        globals()[name] = value  # later look-ups skip this function
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | _SUBMODULES | set(__all__))
