"""Self-describing, atomically written checkpoints.

A checkpoint holds the model's name and arguments, its weights, the optimizer, scheduler
and gradient-scaler states, the epoch, the best validation loss, the training history,
the RNG state, the whole run configuration and the software versions: enough to rebuild
the model without the workflow file and to resume a run exactly. Only tensors and plain
Python values are stored, so :func:`torch.load` works with ``weights_only=True``.
"""

from __future__ import annotations

import os
import zipfile
from pathlib import Path
from typing import Any

import torch

from hepml.errors import CheckpointError
from hepml.io.atomic import atomic_path
from hepml.io.provenance import versions  # the one record of versions, re-exported

__all__ = ["save_checkpoint", "load_checkpoint", "model_from_checkpoint", "versions", "FORMAT"]

FORMAT = "hepml-checkpoint/1"


def save_checkpoint(path: str | Path, state: dict[str, Any]) -> Path:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, rename).

    Raises:
        OutputError: ``path`` cannot be written (the temporary file is removed).
    """
    path = Path(path)
    payload = {"format": FORMAT, "versions": versions(), **state}
    # a file object, so that the archive's folder is "archive", not the temporary name
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        torch.save(payload, fh)
        fh.flush()
        os.fsync(fh.fileno())
    return path


def load_checkpoint(path: str | Path, *,
                    map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Read a checkpoint written by :func:`save_checkpoint`.

    Raises:
        CheckpointError: The file is missing, a directory, cut short, not a checkpoint, or of
            another format.
    """
    path = Path(path)
    if not path.exists():
        raise CheckpointError(f"{path}: no such checkpoint")
    if path.is_dir():  # torch.load's IsADirectoryError would read as a corrupt file
        raise CheckpointError(f"{path}: is a directory; give the checkpoint file, e.g. "
                              f"{path / 'checkpoint_best.pt'}")
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except (RuntimeError, EOFError, zipfile.BadZipFile, ValueError, OSError) as exc:
        raise CheckpointError(
            f"{path}: cannot read the checkpoint; it is cut short or corrupt "
            f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}). "
            "Use another checkpoint (checkpoint_best.pt / checkpoint_last.pt) or retrain."
        ) from None
    except Exception as exc:  # pickle errors of foreign files
        raise CheckpointError(f"{path}: not a hepml checkpoint ({type(exc).__name__})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(
            f"{path}: not a hepml checkpoint (format "
            f"{state.get('format') if isinstance(state, dict) else type(state).__name__!r}, "
            f"expected {FORMAT!r})")
    return state


def model_from_checkpoint(state: dict[str, Any], *,
                          source: str | Path = "checkpoint") -> torch.nn.Module:
    """The model a checkpoint describes (``state["model"]``), with its weights, on the CPU.

    Raises:
        CheckpointError: The checkpoint names no model, or the weights do not fit it.
    """
    from hepml.models import build_model

    spec = state.get("model")
    if not isinstance(spec, dict) or "kind" not in spec:
        raise CheckpointError(f"{source}: the checkpoint does not describe its model (it was "
                              "saved by a Trainer built without model_spec); rebuild the "
                              "model yourself and load state['model_state']")
    model = build_model(spec["kind"], **spec.get("kwargs", {}))
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{source}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
    return model
