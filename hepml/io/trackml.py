"""Reading TrackML events (CSV files) into hepml's hit layout.

A TrackML event ``PREFIX`` (e.g. ``train_1/event000001000``) is a set of CSV files with a
header line:

* ``PREFIX-hits.csv``: ``hit_id, x, y, z, volume_id, layer_id, module_id``;
* ``PREFIX-truth.csv``: ``hit_id, particle_id, tx, ty, tz, tpx, tpy, tpz, weight``
  (hits of no particle, noise, have ``particle_id`` 0);
* ``PREFIX-particles.csv``: ``particle_id, vx, vy, vz, px, py, pz, q, nhits``;
* ``PREFIX-cells.csv`` (optional): ``hit_id, ch0, ch1, value``, one row per pixel or strip
  of a hit.

:func:`read_trackml_event` returns the event as an awkward array of one entry with the
fields every hepml tracking input has (the ROOT layout written by ``hepml convert
trackml`` and by hepml's own tracker simulation):

* per hit: ``hit_id`` (int64, TrackML's id), ``hit_x, hit_y, hit_z`` (float32, mm),
  ``hit_volume_id, hit_layer_id, hit_module_id`` (int32), ``hit_layer`` (int32: the
  barrel layer 0..9 counted outwards, -1 off the barrel, see :data:`BARREL_LAYERS`),
  ``hit_particle_id`` (int64, 0 for noise and for hits without a truth row),
  ``hit_tpx, hit_tpy, hit_tpz`` (float32, GeV, true momentum at the hit; 0 without
  truth) and ``hit_weight`` (float32, TrackML's score weight, 0 without truth);
  with ``cells=True`` also ``hit_ncells`` (int32, cells of the hit) and ``hit_charge``
  (float32, their summed ``value``);
* per particle: ``particle_id`` (int64), ``particle_q`` (int32), ``particle_pdgid``
  (int32, -1: TrackML does not give it), ``particle_px/py/pz`` (float32, GeV),
  ``particle_pt/eta/phi`` (float32, computed), ``particle_vx/vy/vz`` (float32, mm),
  ``particle_nhits`` (int32) and ``particle_vertex`` (int32, 0: not given);
* ``event_number`` (int64), by default the digits at the end of the prefix's name.

The only columns read are those above; ``tx, ty, tz`` of the truth file and anything
else may be missing. The files are read with numpy, checked column by column: a missing
file raises :class:`~hepml.errors.InputFileError`, a missing column
:class:`~hepml.errors.MissingColumnError` (naming the file and the columns found), and a
value that is not a number, or a NaN or infinite one, :class:`~hepml.errors.BadValueError`
naming the file, line and column.
"""

from __future__ import annotations

import glob
import io
import logging
import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

import awkward as ak
import numpy as np

from hepml.errors import BadValueError, EmptyInputError, InputFileError, MissingColumnError

log = logging.getLogger(__name__)

__all__ = [
    "BARREL_LAYERS",
    "TRACKML_FILES",
    "barrel_layer",
    "read_trackml_event",
    "read_trackml",
    "trackml_prefixes",
]

#: TrackML barrel layers ``(volume_id, layer_id)`` -> hepml's ``hit_layer``, innermost
#: first: the pixel barrel (volume 8), the short-strip barrel (13), the long-strip
#: barrel (17).
BARREL_LAYERS: dict[tuple[int, int], int] = {
    (8, 2): 0, (8, 4): 1, (8, 6): 2, (8, 8): 3,
    (13, 2): 4, (13, 4): 5, (13, 6): 6, (13, 8): 7,
    (17, 2): 8, (17, 4): 9,
}

#: Columns read from each file of an event, with their types.
TRACKML_FILES: dict[str, dict[str, str]] = {
    "hits": {"hit_id": "i8", "x": "f4", "y": "f4", "z": "f4", "volume_id": "i4",
             "layer_id": "i4", "module_id": "i4"},
    "truth": {"hit_id": "i8", "particle_id": "i8", "tpx": "f4", "tpy": "f4", "tpz": "f4",
              "weight": "f4"},
    "particles": {"particle_id": "i8", "vx": "f4", "vy": "f4", "vz": "f4", "px": "f4",
                  "py": "f4", "pz": "f4", "q": "i4", "nhits": "i4"},
    "cells": {"hit_id": "i8", "ch0": "i4", "ch1": "i4", "value": "f4"},
}

_SUFFIX = re.compile(r"-(hits|truth|particles|cells)\.csv$")
_BARREL_KEYS = np.array(sorted(vol * 1000 + lay for vol, lay in BARREL_LAYERS), dtype=np.int64)
_BARREL_VALUES = np.array([BARREL_LAYERS[divmod(int(k), 1000)] for k in _BARREL_KEYS],
                          dtype=np.int32)


# ------------------------------------------------------------------------- CSV reading


def _bad_line(lines: list[str], columns: Mapping[str, int],
              types: Mapping[str, str], width: int) -> str:
    """Describe the first data line that numpy could not parse (error path only)."""
    for number, line in enumerate(lines, start=2):  # line 1 is the header
        if not line.strip():
            continue
        cells = line.rstrip("\r\n").split(",")
        if len(cells) != width:
            return f"line {number} has {len(cells)} fields, the header {width}"
        for name, index in columns.items():
            text = cells[index].strip()
            try:
                int(text) if types[name].startswith("i") else float(text)
            except ValueError:
                kind = "an integer" if types[name].startswith("i") else "a number"
                return f"line {number}, column {name!r}: {text!r} is not {kind}"
    return "a line could not be read"


def _read_csv(path: str, kind: str) -> dict[str, np.ndarray]:
    """The columns of :data:`TRACKML_FILES` ``[kind]`` from one CSV file, checked."""
    types = TRACKML_FILES[kind]
    if not os.path.exists(path):
        raise InputFileError(
            f"{path}: no such file. A TrackML event PREFIX is read from PREFIX-hits.csv, "
            "PREFIX-truth.csv and PREFIX-particles.csv (and PREFIX-cells.csv for cells); "
            "check the prefix and that the event's files were all unpacked."
        )
    try:
        with open(path, encoding="utf-8") as fh:
            text = fh.read()
    except (OSError, UnicodeDecodeError) as exc:
        raise InputFileError(f"{path}: cannot read the file ({type(exc).__name__}: {exc})"
                             ) from None
    header, _, body = text.partition("\n")
    found = [c.strip() for c in header.strip().split(",")] if header.strip() else []
    if not found:
        raise InputFileError(f"{path}: the file is empty; a TrackML {kind} file starts with "
                             f"the header line {','.join(types)}")
    for name in types:
        if name not in found:
            raise MissingColumnError(path, name, found, hint=(
                f"A TrackML {kind} file needs the columns {', '.join(types)}."))
    columns = {name: found.index(name) for name in types}
    dtype = [(name, types[name]) for name in types]
    if not body.strip():
        return {name: np.zeros(0, dtype=t) for name, t in types.items()}
    try:
        table = np.loadtxt(io.StringIO(body), delimiter=",", dtype=dtype, ndmin=1,
                           usecols=list(columns.values()), comments=None)
    except ValueError:
        where = _bad_line(body.split("\n"), columns, types, len(found))
        raise BadValueError(f"{path}: {where}. Fix or regenerate the file.") from None
    out = {name: np.ascontiguousarray(table[name]) for name in types}
    for name, values in out.items():
        if values.dtype.kind != "f":
            continue
        bad = ~np.isfinite(values)
        if bad.any():
            first = int(np.argmax(bad))
            raise BadValueError(
                f"{path}: column {name!r} is {values[first]} at data row {first + 1} (line "
                f"{first + 2}); {int(bad.sum())} of {values.size} values are NaN or infinite. "
                "Fix or regenerate the file."
            )
    return out


# ------------------------------------------------------------------------ one event


def _event_number(prefix: str) -> int:
    digits = re.search(r"(\d+)$", Path(prefix).name)
    return int(digits.group(1)) if digits else 0


def _lookup(keys: np.ndarray, table_keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Row of each of ``keys`` in ``table_keys`` (any order) and whether it is there."""
    order = np.argsort(table_keys, kind="stable")
    sorted_keys = table_keys[order]
    pos = np.searchsorted(sorted_keys, keys)
    found = pos < sorted_keys.size
    found[found] = sorted_keys[pos[found]] == keys[found]
    return order[np.where(found, pos, 0)] if sorted_keys.size else np.zeros_like(pos), found


def _check_unique(ids: np.ndarray, path: str, name: str) -> None:
    values, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        first = int(values[np.argmax(counts > 1)])
        raise BadValueError(f"{path}: {name} {first} appears {int(counts.max())} times; each "
                            f"{name} must have one row. Fix or regenerate the file.")


def barrel_layer(volume_id: np.ndarray, layer_id: np.ndarray) -> np.ndarray:
    """The ``hit_layer`` of TrackML hits: 0..9 in the barrel, -1 elsewhere."""
    keys = np.asarray(volume_id, np.int64) * 1000 + np.asarray(layer_id, np.int64)
    pos = np.searchsorted(_BARREL_KEYS, keys).clip(0, _BARREL_KEYS.size - 1)
    return np.where(_BARREL_KEYS[pos] == keys, _BARREL_VALUES[pos], -1).astype(np.int32)


def read_trackml_event(prefix: str | os.PathLike, *, barrel_only: bool = True,
                       cells: bool = False, event_number: int | None = None) -> ak.Array:
    """Read one TrackML event into hepml's hit layout (see the module docstring).

    Hits keep the order of the hits file. Each hit takes its particle, true momentum and
    weight from its truth row (matched by ``hit_id``); a hit without one is treated as
    noise (particle 0, momentum and weight 0).

    Args:
        prefix: The event's path without ``-hits.csv`` etc. (one of its file names works
            too).
        barrel_only: Keep only the hits of the ten barrel layers (:data:`BARREL_LAYERS`)
            and count ``particle_nhits`` over them; otherwise keep every hit and take
            ``particle_nhits`` from the particles file. All particles are kept either
            way (some with 0 hits).
        cells: Also read ``PREFIX-cells.csv`` into ``hit_ncells`` and ``hit_charge``.
        event_number: ``event_number`` of the event; by default the digits that end the
            prefix's name (``event000001000`` -> 1000), or 0 without any.

    Returns:
        An awkward array of one event.

    Raises:
        InputFileError: A file is missing or unreadable.
        MissingColumnError: A needed column is missing.
        BadValueError: A value is not a number, NaN or infinite; a hit or particle id
            appears twice.
    """
    prefix = trackml_prefixes([prefix])[0]
    paths = {kind: f"{prefix}-{kind}.csv" for kind in ("hits", "truth", "particles")}
    hits = _read_csv(paths["hits"], "hits")
    truth = _read_csv(paths["truth"], "truth")
    particles = _read_csv(paths["particles"], "particles")
    _check_unique(hits["hit_id"], paths["hits"], "hit_id")
    _check_unique(truth["hit_id"], paths["truth"], "hit_id")
    _check_unique(particles["particle_id"], paths["particles"], "particle_id")

    hit_id = hits["hit_id"]
    row, has_truth = _lookup(hit_id, truth["hit_id"])
    if not has_truth.all():
        log.info("%s: %d of %d hits have no truth row; they count as noise", paths["truth"],
                 int((~has_truth).sum()), hit_id.size)

    def from_truth(name: str) -> np.ndarray:
        values = truth[name][row] if truth[name].size else np.zeros(hit_id.size,
                                                                   truth[name].dtype)
        return np.where(has_truth, values, 0).astype(truth[name].dtype)

    out: dict[str, np.ndarray] = {
        "hit_id": hit_id,
        "hit_x": hits["x"], "hit_y": hits["y"], "hit_z": hits["z"],
        "hit_volume_id": hits["volume_id"], "hit_layer_id": hits["layer_id"],
        "hit_module_id": hits["module_id"],
        "hit_layer": barrel_layer(hits["volume_id"], hits["layer_id"]),
        "hit_particle_id": from_truth("particle_id"),
        "hit_tpx": from_truth("tpx"), "hit_tpy": from_truth("tpy"),
        "hit_tpz": from_truth("tpz"), "hit_weight": from_truth("weight"),
    }
    if cells:
        cell = _read_csv(f"{prefix}-cells.csv", "cells")
        ids, inverse = np.unique(cell["hit_id"], return_inverse=True)
        n_cells = np.bincount(inverse, minlength=ids.size)
        charge = np.bincount(inverse, weights=cell["value"], minlength=ids.size)
        at, has_cells = _lookup(hit_id, ids)
        out["hit_ncells"] = np.where(has_cells, n_cells[at] if ids.size else 0, 0).astype(np.int32)
        out["hit_charge"] = np.where(has_cells, charge[at] if ids.size else 0.0, 0.0
                                     ).astype(np.float32)
    if barrel_only:
        keep = out["hit_layer"] >= 0
        out = {name: values[keep] for name, values in out.items()}

    pid = particles["particle_id"]
    px, py, pz = particles["px"], particles["py"], particles["pz"]
    pt = np.hypot(px, py)
    if barrel_only:
        hit_pid = out["hit_particle_id"]
        ids, counts = np.unique(hit_pid[hit_pid != 0], return_counts=True)
        at, has_hits = _lookup(pid, ids)
        nhits = np.where(has_hits, counts[at] if ids.size else 0, 0).astype(np.int32)
    else:
        nhits = particles["nhits"].astype(np.int32)
    tiny = np.finfo(np.float32).tiny  # pT = 0: a large but finite |eta|
    out.update({
        "particle_id": pid,
        "particle_q": particles["q"].astype(np.int32),
        "particle_pdgid": np.full(pid.size, -1, np.int32),
        "particle_px": px, "particle_py": py, "particle_pz": pz,
        "particle_pt": pt.astype(np.float32),
        "particle_eta": np.arcsinh(pz / np.maximum(pt, tiny)).astype(np.float32),
        "particle_phi": np.arctan2(py, px).astype(np.float32),
        "particle_vx": particles["vx"], "particle_vy": particles["vy"],
        "particle_vz": particles["vz"],
        "particle_nhits": nhits,
        "particle_vertex": np.zeros(pid.size, np.int32),
    })
    fields = {name: ak.unflatten(np.ascontiguousarray(values), [values.size])
              for name, values in out.items()}
    number = _event_number(prefix) if event_number is None else int(event_number)
    fields["event_number"] = ak.Array(np.array([number], np.int64))
    return ak.zip(fields, depth_limit=1)


# ------------------------------------------------------------------------ many events


def trackml_prefixes(paths: str | os.PathLike | Sequence[str | os.PathLike]) -> list[str]:
    """Event prefixes from prefixes, file names of events, or glob patterns of either.

    ``data/event000001000-hits.csv`` and ``data/event000001000`` both give
    ``data/event000001000``; a pattern such as ``data/event00000100*`` (all files of ten
    events) gives each event once, in sorted order. Duplicates are dropped.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    out: list[str] = []
    for item in paths:
        item = os.path.expanduser(str(item))
        matches = sorted(glob.glob(item)) if glob.has_magic(item) else [item]
        if not matches:
            raise InputFileError(f"{item}: no file matches this pattern")
        for match in matches:
            prefix = _SUFFIX.sub("", match)
            if prefix not in out:
                out.append(prefix)
    return out


def read_trackml(prefixes: str | os.PathLike | Sequence[str | os.PathLike], *,
                 barrel_only: bool = True, cells: bool = False) -> ak.Array:
    """Read several TrackML events into one awkward array, one entry per event.

    Args:
        prefixes: Event prefixes, file names of events or glob patterns (see
            :func:`trackml_prefixes`).
        barrel_only: As in :func:`read_trackml_event`.
        cells: As in :func:`read_trackml_event`.

    Returns:
        The events, in the order given, each as :func:`read_trackml_event` reads it.

    Raises:
        EmptyInputError: No event was named.
        InputFileError, MissingColumnError, BadValueError: As :func:`read_trackml_event`.
    """
    names = trackml_prefixes(prefixes)
    if not names:
        raise EmptyInputError("read_trackml: no TrackML event given")
    events = [read_trackml_event(p, barrel_only=barrel_only, cells=cells) for p in names]
    numbers = np.concatenate([ak.to_numpy(e.event_number) for e in events])
    if np.unique(numbers).size != numbers.size:
        log.warning("read_trackml: event numbers repeat among %d events (%s ...); events "
                    "are told apart by their position", numbers.size, numbers[:5].tolist())
    return ak.concatenate(events)
