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

Subpackages are imported lazily so that ``import hepml`` stays cheap.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_SUBMODULES = {
    "cli", "config", "errors", "evaluation", "io", "models", "representations",
    "simulation", "tasks", "training",
}

__all__ = sorted(_SUBMODULES | {"__version__"})


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
