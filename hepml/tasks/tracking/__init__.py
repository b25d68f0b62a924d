"""The tracking job: tracker hits -> track candidates -> efficiency, fake rate, TrackML score.

Two trackers share the data handling, the trainer and the evaluation:

- a GNN tracker (Exa.TrkX style): hit graphs with candidate edges between hits on nearby
  layers (:mod:`hepml.representations.hit_graphs`), an interaction-network edge classifier
  (:mod:`hepml.models.hit_gnn`), and tracks built from the kept edges
  (:mod:`hepml.tasks.tracking.graph_building`);
- an LSTM tracker (HEP.TrkX style): track sequences for training
  (:mod:`hepml.representations.track_sequences`), an LSTM/GRU that predicts the next hit
  with an uncertainty (:mod:`hepml.models.lstm_tracker`), and a track follower from
  triplet seeds (:mod:`hepml.tasks.tracking.lstm_following`).

:func:`run` (in :mod:`hepml.tasks.tracking.task`) is what ``hepml run`` calls for
``task: tracking``; it is imported lazily so that the building blocks stay importable on
their own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

__all__ = ["run"]


def run(cfg: Any, *, resume: str | Path | None = None) -> Path:
    """Train and evaluate the tracker of workflow ``cfg``; see :mod:`hepml.tasks.tracking.task`."""
    from hepml.tasks.tracking.task import run as _run

    return _run(cfg, resume=resume)
