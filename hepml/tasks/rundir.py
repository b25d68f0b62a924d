"""Run directories: ``runs/NAME-<timestamp>/`` with the config, inputs and versions."""

from __future__ import annotations

import datetime
import os
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from hepml.errors import ConfigError
from hepml.io import atomic, file_checksum
from hepml.io.atomic import output_error
from hepml.training import distributed, versions

__all__ = ["make_run_dir", "made_run_dirs", "write_json", "record_inputs", "open_run_dir"]

_MADE: list[Path] = []


def made_run_dirs() -> list[Path]:
    """The run directories that :func:`make_run_dir` made in this process, oldest first."""
    return list(_MADE)


def make_run_dir(runs_dir: str | Path, name: str) -> Path:
    """Create a new, unique ``runs_dir/name-YYYYmmdd-HHMMSS`` directory."""
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    base = Path(runs_dir) / f"{name}-{stamp}"
    path, i = base, 1
    while path.exists():
        path, i = Path(f"{base}-{i}"), i + 1
    try:
        path.mkdir(parents=True)
    except OSError as exc:
        raise output_error(path, exc, "make the run directory") from None
    _MADE.append(path)
    return path


def write_json(path: str | Path, data: Any) -> Path:
    """Write JSON atomically (indented by 2, values JSON lacks as their ``str``)."""
    return atomic.write_json(path, data, indent=2, sort_keys=False, default=str)


def record_inputs(run_dir: Path, config: dict[str, Any], paths: list[str],
                  entries: dict[str, int]) -> None:
    """Write the resolved config, the input files with checksums, and software versions."""
    atomic.write_text(run_dir / "config.yaml", yaml.safe_dump(config, sort_keys=False))
    write_json(run_dir / "inputs.json", [
        {"path": os.path.abspath(p), "checksum": file_checksum(p), "entries": entries[p]}
        for p in paths
    ])
    write_json(run_dir / "versions.json", versions())


def open_run_dir(runs_dir: str | Path, name: str, *, resume: str | Path | None,
                 run_config: dict[str, Any], paths: list[str], entries: dict[str, int],
                 split: np.ndarray) -> Path:
    """The run directory of a job.

    A new one (config, inputs, versions and ``split.npy`` written by rank 0 and shared with
    every rank), or ``resume``'s after a check that it holds a checkpoint to continue from.
    """
    if resume:
        run_dir = Path(resume)
        if not (run_dir / "checkpoint_last.pt").exists():
            raise ConfigError(f"--resume {run_dir}: no checkpoint_last.pt there; give the run "
                              "directory of an interrupted run")
        return run_dir
    main = distributed.is_main_process()
    run_dir = make_run_dir(runs_dir, name) if main else None
    run_dir = Path(distributed.broadcast_object(str(run_dir) if run_dir else None))
    if main:
        record_inputs(run_dir, run_config, paths, entries)
        # a file object: np.save would add ".npy" to the temporary name
        with atomic.atomic_path(run_dir / "split.npy") as tmp, open(tmp, "wb") as fh:
            np.save(fh, split)
    return run_dir
