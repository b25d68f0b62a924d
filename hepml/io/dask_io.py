"""Reading many files on a dask cluster: a check per file, then ``uproot.dask`` in chunks.

Scoring hundreds of files must not stop at the first bad one, and must not hold them all
in memory. This module provides the two reading steps of :mod:`hepml.tasks.scoring`:

1. :func:`check_file` opens one file the way :class:`hepml.io.Source` does
   (:func:`~hepml.io.open_tree`: missing, empty, non-ROOT or truncated files, a missing
   tree; every branch the wanted fields need; no entries) and returns a small
   :class:`FileCheck`, or raises the :mod:`hepml.errors` exception that says what is wrong.
2. :func:`dask_chunks` builds ``uproot.dask`` collections over the files that passed, with
   explicit steps of ``step_size`` entries, so that one task reads one chunk and the memory
   of a task follows the chunk size. Files with different branch types get collections of
   their own (each collection has one awkward form). A chunk that cannot be read (a
   corrupt basket) comes back empty instead of failing its task;
   :func:`chunk_read_error` then says why.

The arrays of a chunk become fields through :func:`hepml.io.reading.evaluate_fields`, the
same branch mapping, expressions and NaN/inf check as :meth:`hepml.io.Source.read`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

import uproot

from hepml.errors import EmptyInputError, HepmlError, MissingBranchError
from hepml.io.reading import _branch_names, _check_branches, open_tree, resolve_fields

__all__ = ["FileCheck", "ChunkRef", "check_file", "chunk_steps", "dask_chunks",
           "chunk_read_error"]


@dataclasses.dataclass(frozen=True)
class FileCheck:
    """What the check of one file found; small, so the client can hold one per file.

    Attributes:
        path: The file.
        tree: The tree read.
        entries: Number of entries of the tree.
        branches: The branches that the wanted fields need, in reading order.
        layout: ``(branch, type name)`` of those branches; files with equal layouts are
            read by one ``uproot.dask`` collection.
        has_optional: Whether the branches of every optional field are there too.
        optional_branches: Those branches (empty when ``has_optional`` is false).
    """

    path: str
    tree: str
    entries: int
    branches: tuple[str, ...]
    layout: tuple[tuple[str, str], ...]
    has_optional: bool = True
    optional_branches: tuple[str, ...] = ()


@dataclasses.dataclass(frozen=True)
class ChunkRef:
    """One chunk of one file and the dask task that reads its branches.

    Attributes:
        path: The file.
        start: First entry.
        stop: One past the last entry.
        partition: A :class:`dask.delayed.Delayed` whose value is the record array of the
            chunk's branches (one field per branch), read by ``uproot.dask``; empty if the
            chunk could not be read (see :func:`chunk_read_error`).
    """

    path: str
    start: int
    stop: int
    partition: Any


def check_file(path: str, tree: str, fields: Sequence[str], *,
               branches: Mapping[str, str] | None = None,
               optional_fields: Sequence[str] = ()) -> FileCheck:
    """Open ``path`` and check that ``fields`` can be read from ``tree``, as :class:`Source` does.

    Args:
        path: A ROOT file.
        tree: TTree or RNTuple name.
        fields: Our field names (see :func:`hepml.io.resolve_fields`).
        branches: Field -> branch or expression mapping for other layouts.
        optional_fields: Fields read only when every file has them (e.g. the labels of
            files to score); their absence is recorded, not an error.

    Raises:
        InputFileError: The file is missing, empty, not ROOT, truncated or corrupt.
        MissingTreeError: The file has no such tree.
        MissingBranchError: A branch that a field needs is not in the tree.
        EmptyInputError: The tree has no entries.
    """
    tree_obj = open_tree(path, tree)
    try:
        needed = _check_branches(path, tree, tree_obj, resolve_fields(fields, branches))
        has_optional, extra = True, ()
        if optional_fields:
            try:
                optional = _check_branches(path, tree, tree_obj,
                                           resolve_fields(optional_fields, branches))
                extra = tuple(b for b in optional if b not in needed)
            except MissingBranchError:
                has_optional = False
        entries = int(tree_obj.num_entries)
        if entries == 0:
            raise EmptyInputError(f"{path}:{tree}: the tree has 0 entries; nothing to read. "
                                  "Remove the file from the inputs or regenerate it.")
        names = set(_branch_names(tree_obj))
        layout = tuple((b, str(getattr(tree_obj[b], "typename", ""))) if b in names else (b, "")
                       for b in (*needed, *extra))
    finally:
        tree_obj.file.close()
    return FileCheck(path=str(path), tree=tree, entries=entries, branches=tuple(needed),
                     layout=layout, has_optional=has_optional, optional_branches=extra)


def chunk_steps(entries: int, step_size: int) -> list[list[int]]:
    """``[start, stop]`` of the chunks of ``step_size`` entries that cover ``entries``."""
    if step_size < 1:
        raise ValueError(f"step_size must be >= 1, got {step_size}")
    return [[a, min(a + step_size, entries)] for a in range(0, entries, step_size)]


def dask_chunks(checks: Sequence[FileCheck], *, step_size: int,
                optional: bool = False) -> dict[str, list[ChunkRef]]:
    """``uproot.dask`` over the checked files, one partition per chunk of ``step_size`` entries.

    Nothing is read here: the partitions are dask tasks. ``uproot.dask`` is called with
    explicit steps and ``open_files=False``, so only the first file of each layout is
    opened (for the awkward form) and the graph holds file names and entry ranges only.
    Read errors are caught by uproot (``allow_read_errors_with_report``): a chunk that
    cannot be read is an empty array, so one corrupt file fails no task of the graph.

    Args:
        checks: Files that passed :func:`check_file` (in the order wanted).
        step_size: Entries per chunk.
        optional: Also read the branches of the optional fields.

    Returns:
        Per file, its chunks in entry order.
    """
    groups: dict[tuple[tuple[str, str], ...], list[FileCheck]] = {}
    for check in checks:
        groups.setdefault(check.layout if optional else check.layout[:len(check.branches)],
                          []).append(check)
    out: dict[str, list[ChunkRef]] = {}
    for group in groups.values():
        wanted = list(group[0].branches) + (list(group[0].optional_branches) if optional else [])
        files = {c.path: {"object_path": c.tree, "steps": chunk_steps(c.entries, step_size)}
                 for c in group}
        array, _ = uproot.dask(files, filter_name=wanted, open_files=False, library="ak",
                               allow_read_errors_with_report=(Exception,))
        partitions = iter(array.to_delayed(optimize_graph=False))
        for c in group:
            out[c.path] = [ChunkRef(c.path, a, b, next(partitions))
                           for a, b in files[c.path]["steps"]]
    return {c.path: out[c.path] for c in checks}


def chunk_read_error(path: str, tree: str, branches: Sequence[str], start: int, stop: int) -> str:
    """Why entries ``start``-``stop`` of ``path`` cannot be read: the chunk is read again here.

    Called for a chunk that ``uproot.dask`` returned empty; the message names the file,
    the tree, the entry range and uproot's error, like :meth:`hepml.io.Source.read`.
    """
    try:
        tree_obj = open_tree(path, tree)
    except HepmlError as exc:
        return str(exc)
    try:
        tree_obj.arrays(list(branches), entry_start=start, entry_stop=stop, library="ak")
    except Exception as exc:
        return (f"{path}:{tree}: cannot read entries {start}-{stop}; the file is probably "
                f"truncated or corrupt ({type(exc).__name__}: {' '.join(str(exc).split())})")
    finally:
        tree_obj.file.close()
    return (f"{path}:{tree}: entries {start}-{stop} could not be read by uproot.dask, though "
            "they read now; is the file being written or on an unreliable file system?")
