"""Writing ROOT files: TTrees (never RNTuple), friend trees, metadata strings.

Files are written to a temporary name beside the target and renamed into place only when
complete, so an interrupted job never leaves a half-written file under the final name and
never destroys an existing good file.
"""

from __future__ import annotations

import itertools
import json
import logging
import os
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from hepml.io.atomic import atomic_path

log = logging.getLogger(__name__)

__all__ = ["write_tree", "write_tree_batches", "write_friend_tree", "write_friend_trees",
           "read_metadata", "METADATA_KEY"]

#: Name of the TObjString that holds a JSON document describing how a file was made.
METADATA_KEY = "hepml_metadata"


def _group_branches(branches: Mapping[str, Any]) -> dict[str, Any]:
    """Zip jagged branches that share a prefix (``part_px``, ``part_py``) into one record.

    uproot then writes them as ``part_px``, ``part_py`` with one shared counter ``npart``,
    the JetClass layout, instead of one counter per branch.
    """
    out: dict[str, Any] = {}
    jagged: dict[str, dict[str, ak.Array]] = defaultdict(dict)
    for name, value in branches.items():
        arr = value if isinstance(value, ak.Array) else None
        if arr is None and isinstance(value, np.ndarray):
            out[name] = value
            continue
        arr = ak.Array(value) if arr is None else arr
        if (arr.ndim > 1 and "_" in name
                and not isinstance(ak.type(arr).content, ak.types.RegularType)):
            prefix, rest = name.split("_", 1)
            jagged[prefix][rest] = arr
        else:
            out[name] = ak.to_numpy(arr) if arr.ndim == 1 else arr
    for prefix, fields in jagged.items():
        counts = [ak.num(a, axis=1) for a in fields.values()]
        if all(ak.all(c == counts[0]) for c in counts[1:]):
            out[prefix] = ak.zip(fields, depth_limit=2)
        else:  # different multiplicities: let each branch carry its own counter
            for rest, arr in fields.items():
                out[f"{prefix}_{rest}"] = arr
    return out


def _branch_type(value: Any) -> Any:
    if isinstance(value, np.ndarray):
        # (N, a, b) numpy arrays become fixed-size branches (e.g. int32_t[a][b])
        return value.dtype if value.ndim == 1 else np.dtype((value.dtype, value.shape[1:]))
    return value.type.content  # awkward ArrayType -> the per-entry type


def _chunks(arrays: Mapping[str, Any], n: int, step: int) -> Iterable[dict[str, Any]]:
    for start in range(0, max(n, 1), step):
        yield {k: v[start : start + step] for k, v in arrays.items()}


def write_tree(
    path: str | os.PathLike,
    branches: Mapping[str, Any],
    *,
    tree: str = "tree",
    metadata: Mapping[str, Any] | None = None,
    step: int = 100_000,
) -> Path:
    """Write ``branches`` as a TTree named ``tree`` into a new ROOT file, atomically.

    Args:
        path: Output file; replaced only once the new file is complete.
        branches: Branch name to array (numpy, or awkward for jagged branches). All arrays
            have the same length. A numpy array of shape ``(N, a, b, ...)`` becomes a
            fixed-size branch (``type[a][b]``), e.g. one histogram per entry. Jagged
            branches sharing a prefix (``part_px``, ``part_pt``) share one counter branch
            (``npart``).
        tree: Name of the TTree.
        metadata: JSON-serialisable description of how the data were made (generator
            settings, seeds, versions), stored as a TObjString beside the tree.
        step: Entries per basket write.

    Returns:
        The path written.
    """
    lengths = {k: len(v) for k, v in branches.items()}
    if len(set(lengths.values())) > 1:
        raise ValueError(f"branches of different lengths for {path}: {lengths}")
    n = next(iter(lengths.values()), 0)
    grouped = _group_branches(branches)
    return write_tree_batches(path, _chunks(grouped, n, step), tree=tree, metadata=metadata)


def write_tree_batches(
    path: str | os.PathLike,
    batches: Iterable[Mapping[str, Any]],
    *,
    tree: str = "tree",
    metadata: Mapping[str, Any] | Callable[[int], Mapping[str, Any]] | None = None,
) -> Path:
    """Write a TTree from batches of branches, one after the other, atomically.

    Only one batch is held at a time, so a file larger than memory can be written from a
    generator of batches.

    Args:
        path: Output file; replaced only once the new file is complete.
        batches: Mappings of branch name to array with the same branches and types (as in
            :func:`write_tree`, already grouped); the first one fixes the branch types.
        tree: Name of the TTree.
        metadata: JSON-serialisable description, or a callable that makes it from the
            number of entries written.

    Returns:
        The path written.
    """
    path = Path(path)
    batches = iter(batches)
    first = next(batches, None)
    if first is None:
        raise ValueError(f"no batches to write to {path}")
    n = 0
    with atomic_path(path, suffix=".part") as tmp:
        with uproot.recreate(tmp) as f:
            f.mktree(tree, {k: _branch_type(v) for k, v in first.items()})
            for batch in itertools.chain([first], batches):
                size = len(next(iter(batch.values()))) if batch else 0
                if size:
                    f[tree].extend(dict(batch))
                n += size
            meta = metadata(n) if callable(metadata) else metadata
            if meta is not None:
                f[METADATA_KEY] = json.dumps(meta, sort_keys=True, default=str)
    log.info("wrote %d entries to %s:%s", n, path, tree)
    return path


def write_friend_tree(
    path: str | os.PathLike,
    branches: Mapping[str, np.ndarray],
    *,
    tree: str = "predictions",
    n_entries: int,
    source: str | os.PathLike | None = None,
    source_tree: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> Path:
    """Write per-entry results as a friend tree: same entry count and order as the input.

    ROOT users attach it with ``t.AddFriend("predictions", "file.root")``; uproot users read
    both trees and zip them entry by entry.

    Args:
        path: Output file.
        branches: One value (a number, a fixed-size row, or a list as an awkward array,
            e.g. the track id of each hit of an event) per input entry.
        tree: Name of the friend TTree.
        n_entries: Entry count of the input tree; every branch must have exactly this length.
        source: The input file, recorded in the metadata.
        source_tree: The input tree name, recorded in the metadata.
        metadata: Extra JSON-serialisable information (model, checkpoint, config).
    """
    for name, arr in branches.items():
        if len(arr) != n_entries:
            raise ValueError(
                f"friend branch {name!r} has {len(arr)} entries but the input tree has "
                f"{n_entries}: a friend tree must match entry for entry"
            )
    meta = dict(metadata or {})
    meta.update(friend_of=str(source) if source else None, friend_of_tree=source_tree,
                n_entries=n_entries)
    return write_tree(path, {k: v if isinstance(v, ak.Array) else np.asarray(v)
                             for k, v in branches.items()},
                      tree=tree, metadata=meta)


def write_friend_trees(
    out_dir: str | os.PathLike,
    source: Any,
    branches: Mapping[str, Any],
    *,
    suffix: str,
    tree: str,
    metadata: Mapping[str, Any] | None = None,
) -> list[Path]:
    """One friend tree per input file of ``source``: ``out_dir/<stem>.<suffix>.root``.

    Args:
        out_dir: Output directory.
        source: What was read (a :class:`hepml.io.Source`): its ``paths`` in order, their
            ``entries`` and its ``tree``.
        branches: Per-entry arrays over all entries of ``source``, in reading order; each
            file gets its slice.
        suffix: Middle part of the file names (``predictions``, ``anomaly``...).
        tree: Name of the friend trees.
        metadata: Stored in every file, beside the input file and tree.

    Returns:
        The files written, in the order of ``source.paths``.
    """
    written, offset = [], 0
    for path in source.paths:
        n = source.entries[path]
        part = {name: values[offset:offset + n] for name, values in branches.items()}
        target = Path(out_dir) / f"{Path(path).stem}.{suffix}.root"
        written.append(write_friend_tree(target, part, tree=tree, n_entries=n, source=path,
                                         source_tree=source.tree, metadata=metadata))
        offset += n
    return written


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """Return the JSON metadata hepml stored in ``path`` (empty if there is none)."""
    with uproot.open(path) as f:
        if METADATA_KEY not in f:
            return {}
        return json.loads(str(f[METADATA_KEY]))
