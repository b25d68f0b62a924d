"""Reading ROOT files in chunks, every requested branch checked against the file first.

This is the only module that opens input files. It turns uproot's many failure modes into
:mod:`hepml.errors` exceptions with one-line messages naming the file, tree, branch and
entry range:

* a missing, truncated or non-ROOT file -> :class:`~hepml.errors.InputFileError`;
* a missing tree -> :class:`~hepml.errors.MissingTreeError` (nearest name suggested);
* a missing or misspelt branch -> :class:`~hepml.errors.MissingBranchError`, checked
  before reading, for TTrees and RNTuples alike (uproot answers a misspelt RNTuple field
  with empty records instead of an error);
* NaN or infinite values -> :class:`~hepml.errors.BadValueError` with the entry number;
* a file with no entries -> :class:`~hepml.errors.EmptyInputError`.

Fields are read under *our* names: a workflow's ``branches:`` mapping says which branch or
expression (:mod:`hepml.io.expressions`) provides each one.
"""

from __future__ import annotations

import errno
import glob
import hashlib
import logging
import os
import stat
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import uproot

from hepml.errors import (
    BadValueError,
    EmptyInputError,
    InputFileError,
    MissingBranchError,
    MissingTreeError,
)
from hepml.io.expressions import Expression, parse

log = logging.getLogger(__name__)

__all__ = [
    "Chunk",
    "ChunkSpec",
    "Source",
    "expand_files",
    "open_tree",
    "resolve_fields",
    "evaluate_fields",
    "num_entries",
    "iterate",
    "read",
    "file_checksum",
]

_TREE_CLASSES = ("TTree", "ROOT::RNTuple", "ROOT::Experimental::RNTuple")


@dataclass(frozen=True)
class ChunkSpec:
    """Where one chunk lies.

    Attributes:
        path: The file the entries come from.
        entry_start: First entry (in that file's tree) of the chunk.
        entry_stop: One past the last entry.
        global_start: Position of ``entry_start`` in the concatenation of all files read.
    """

    path: str
    entry_start: int
    entry_stop: int
    global_start: int

    def __len__(self) -> int:
        return self.entry_stop - self.entry_start


@dataclass(frozen=True)
class Chunk(ChunkSpec):
    """One chunk of entries read from one file: where it lies, and its arrays.

    Attributes:
        arrays: Record array with one field per requested name.
    """

    arrays: ak.Array


def _unusable(path: str) -> str | None:
    """Why ``path`` cannot be opened as an input file (one line naming it), or ``None``."""
    try:
        mode = os.stat(path).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            return f"{path}: cannot be resolved: it is a symbolic link loop"
        if os.path.islink(path):
            return (f"{path}: cannot be resolved: it is a symbolic link to "
                    f"{os.readlink(path)!r}, which does not exist")
        return f"{path}: no such file"
    if stat.S_ISDIR(mode):
        return (f"{path}: is a directory; give ROOT files or a glob such as "
                f"{os.path.join(path, '*.root')}")
    return None


def expand_files(patterns: str | Sequence[str], *, base: str | Path | None = None) -> list[str]:
    """Expand globs into a sorted, de-duplicated list of existing paths, in pattern order.

    Raises:
        InputFileError: A pattern matches no file, or names a symbolic link that cannot
            be resolved.
    """
    if isinstance(patterns, (str, os.PathLike)):
        patterns = [str(patterns)]
    out: list[str] = []
    for pattern in patterns:
        pattern = os.path.expanduser(str(pattern))
        if base is not None and not os.path.isabs(pattern):
            pattern = str(Path(base) / pattern)
        matches = sorted(glob.glob(pattern)) if glob.has_magic(pattern) else (
            [pattern] if os.path.exists(pattern) else [])
        if not matches:
            problem = _unusable(pattern)  # a link loop or to nothing "does not exist" too
            if problem and problem != f"{pattern}: no such file":
                raise InputFileError(problem)
            raise InputFileError(f"{pattern}: no such file. Check data.files in the workflow "
                                 "(paths are relative to the directory hepml runs in).")
        out.extend(m for m in matches if m not in out)
    return out


def open_tree(path: str | Path, tree: str) -> Any:
    """Open ``path`` and return its TTree or RNTuple ``tree``, with clear errors.

    Raises:
        InputFileError: The file is missing, a directory, a symbolic link that cannot be
            resolved, unreadable, truncated or not a ROOT file.
        MissingTreeError: The file has no tree of that name.
    """
    path = str(path)
    problem = _unusable(path)
    if problem:
        raise InputFileError(problem)
    if os.path.getsize(path) == 0:
        raise InputFileError(f"{path}: the file is empty (0 bytes); regenerate or re-copy it")
    with open(path, "rb") as fh:
        magic = fh.read(4)
    if magic != b"root":
        raise InputFileError(
            f"{path}: not a ROOT file (it starts with {magic!r}, a ROOT file with b'root')"
        )
    try:
        # no uproot array cache: the readers above cache what they need, and uproot's
        # default (100 MB per open file) would let memory grow with the number of files
        file = uproot.open(path, array_cache=None)
        classes = file.classnames()
    except Exception as exc:  # uproot raises OSError, ValueError, DeserializationError...
        raise InputFileError(
            f"{path}: cannot read the ROOT file; it is probably truncated or corrupt "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]}). Re-copy or regenerate it."
        ) from None
    size, end = os.path.getsize(path), getattr(file.file, "fEND", 0)
    if size < end:
        raise InputFileError(
            f"{path}: the file is truncated: its header says {end} bytes, {size} are there "
            "(an interrupted copy or write?). Re-copy or regenerate it."
        )
    trees = {k.split(";")[0] for k, c in classes.items() if c in _TREE_CLASSES}
    if tree not in trees:
        raise MissingTreeError(path, tree, trees)
    try:
        return file[tree]
    except Exception as exc:
        raise InputFileError(
            f"{path}: cannot read tree {tree!r}; the file is probably truncated or corrupt "
            f"({type(exc).__name__}: {str(exc).splitlines()[0]})"
        ) from None


def resolve_fields(fields: Sequence[str], branches: Mapping[str, str] | None = None,
                   ) -> dict[str, Expression]:
    """Map each wanted field to the expression that provides it.

    A field listed in ``branches`` is read through that branch or expression; any other
    field is read from the branch of the same name.
    """
    branches = dict(branches or {})
    return {f: parse(str(branches.get(f, f)), where=f"data.branches.{f}") for f in fields}


def _branch_names(tree_obj: Any) -> list[str]:
    return list(tree_obj.keys(recursive=True)) if hasattr(tree_obj, "keys") else []


def _check_branches(path: str, tree: str, tree_obj: Any,
                    exprs: Mapping[str, Expression]) -> list[str]:
    available = set(_branch_names(tree_obj))
    needed: list[str] = []
    for expr in exprs.values():
        for b in sorted(expr.branches):
            if b not in available:
                raise MissingBranchError(path, tree, b, available)
            if b not in needed:
                needed.append(b)
    return needed


def num_entries(path: str | Path, tree: str) -> int:
    """Number of entries of ``tree`` in ``path`` (file and tree validated)."""
    return int(open_tree(path, tree).num_entries)


def _check_finite(arrays: Mapping[str, Any], path: str, tree: str, start: int) -> None:
    for name, arr in arrays.items():
        layout = arr if isinstance(arr, ak.Array) else ak.Array(np.asarray(arr))
        if not np.issubdtype(_dtype(layout), np.floating):
            continue
        bad = ~np.isfinite(layout)
        per_entry = ak.any(bad, axis=-1) if layout.ndim > 1 else bad
        while getattr(per_entry, "ndim", 1) > 1:
            per_entry = ak.any(per_entry, axis=-1)
        per_entry = np.asarray(ak.to_numpy(per_entry) if isinstance(per_entry, ak.Array)
                               else per_entry)
        if per_entry.any():
            idx = np.flatnonzero(per_entry)
            raise BadValueError(
                f"{path}:{tree}: field {name!r} has NaN or infinite values in {idx.size} "
                f"entries, first at entry {start + int(idx[0])}. Fix or filter the input "
                "(hepml does not guess replacements)."
            )


def _dtype(arr: ak.Array) -> np.dtype:
    """The dtype of the numbers inside a (possibly jagged) array."""
    try:
        return ak.to_numpy(ak.flatten(arr, axis=None)).dtype
    except (TypeError, ValueError):  # strings, records, options with missing values
        return np.dtype(object)


def evaluate_fields(raw: ak.Array, exprs: Mapping[str, Expression], *, path: str, tree: str,
                    start: int, stop: int, check_finite: bool = True) -> ak.Array:
    """Our fields from the branches read for entries ``start``-``stop`` of one file, checked.

    The one place where branch arrays become fields: :meth:`Source.read` and the
    ``uproot.dask`` reader (:mod:`hepml.io.dask_io`) both end here, so every reader applies
    the same branch mapping, expressions and NaN/inf check.

    Args:
        raw: Record array with (at least) every branch the expressions read.
        exprs: Field -> expression (see :func:`resolve_fields`).
        path: The file, for messages.
        tree: The tree, for messages.
        start: First entry of ``raw`` in the file.
        stop: One past its last entry; ``raw`` must hold ``stop - start`` entries.
        check_finite: Raise :class:`BadValueError` on NaN or infinite floats.

    Raises:
        InputFileError: ``raw`` does not hold ``stop - start`` entries.
        BadValueError: NaN or infinite values (with ``check_finite``).
    """
    if len(raw) != stop - start:
        raise InputFileError(f"{path}:{tree}: entries {start}-{stop} came back with "
                             f"{len(raw)} entries; the file is inconsistent")
    columns = {b: raw[b] for e in exprs.values() for b in e.branches}
    out = {f: e.evaluate(columns) for f, e in exprs.items()}
    if check_finite:
        _check_finite(out, path, tree, start)
    return ak.zip(out, depth_limit=1)


class Source:
    """A validated set of files to read ``fields`` from, split into chunks.

    Every file and every branch is checked at construction, so a typo in the last file
    fails at once, not after an hour of reading the first ones.

    Args:
        files: Paths or globs.
        tree: TTree or RNTuple name.
        fields: Our field names to read (see :func:`resolve_fields`).
        branches: Field -> branch or expression mapping for other layouts.
        step_size: Entries per chunk; bounds the memory of one read.
        max_entries: Read at most this many entries from each file.
        check_finite: Raise :class:`BadValueError` on NaN or infinite floats.
        min_chunks_per_file: Cut every file into at least this many chunks (but not into
            empty ones), so that this many processes can each read their own part.
    """

    def __init__(
        self,
        files: str | Sequence[str],
        tree: str,
        fields: Sequence[str],
        *,
        branches: Mapping[str, str] | None = None,
        step_size: int = 20_000,
        max_entries: int | None = None,
        check_finite: bool = True,
        min_chunks_per_file: int = 1,
    ) -> None:
        self.paths = expand_files(files)
        self.tree = tree
        self.fields = list(fields)
        self.exprs = resolve_fields(fields, branches)
        self.check_finite = check_finite
        self._needed: dict[str, list[str]] = {}
        self._trees: dict[str, Any] = {}
        self.entries: dict[str, int] = {}
        for path in self.paths:
            tree_obj = open_tree(path, tree)
            self._needed[path] = _check_branches(path, tree, tree_obj, self.exprs)
            self._trees[path] = tree_obj
            n = int(tree_obj.num_entries)
            if max_entries is not None:
                n = min(n, max_entries)
            if n == 0:
                raise EmptyInputError(f"{path}:{tree}: the tree has 0 entries; nothing to read. "
                                      "Remove the file from data.files or regenerate it.")
            self.entries[path] = n
        self.chunks: list[ChunkSpec] = []
        offset = 0
        for path in self.paths:
            n = self.entries[path]
            step = max(1, min(step_size, -(-n // max(1, min_chunks_per_file))))
            self.chunks += [ChunkSpec(path, a, min(a + step, n), offset + a)
                            for a in range(0, n, step)]
            offset += n
        self.num_entries = offset

    def locate(self, index: Any) -> tuple[np.ndarray, np.ndarray]:
        """File and entry of global entry numbers (in reading order over all files).

        Returns:
            ``(file, entry)``: the position of each file in :attr:`paths`, and the entry
            within that file, as arrays shaped like ``index``.
        """
        index = np.asarray(index, dtype=np.int64)
        if index.size and (index.min() < 0 or index.max() >= self.num_entries):
            raise IndexError(f"entry numbers must lie in [0, {self.num_entries})")
        starts = np.cumsum([0] + [self.entries[p] for p in self.paths])
        file = np.searchsorted(starts, index, side="right") - 1
        return file, index - starts[file]

    def read(self, spec: ChunkSpec) -> ak.Array:
        """Read one chunk; a record array with one field per requested name."""
        path, start, stop = spec.path, spec.entry_start, spec.entry_stop
        needed = self._needed[path]
        try:
            raw = self._trees[path].arrays(needed, entry_start=start, entry_stop=stop,
                                                    library="ak")
        except Exception as exc:
            raise InputFileError(
                f"{path}:{self.tree}: cannot read entries {start}-{stop}; the file is probably "
                f"truncated or corrupt ({type(exc).__name__}: {str(exc).splitlines()[0]})"
            ) from None
        return evaluate_fields(raw, self.exprs, path=path, tree=self.tree, start=start,
                               stop=stop, check_finite=self.check_finite)

    def __iter__(self) -> Iterator[Chunk]:
        for spec in self.chunks:
            yield Chunk(spec.path, spec.entry_start, spec.entry_stop, spec.global_start,
                        arrays=self.read(spec))


def iterate(
    files: str | Sequence[str],
    tree: str,
    fields: Sequence[str],
    **kwargs: Any,
) -> Iterator[Chunk]:
    """Read ``fields`` from ``files`` chunk by chunk; options as for :class:`Source`.

    Yields:
        :class:`Chunk` objects in file order, then entry order.
    """
    yield from Source(files, tree, fields, **kwargs)


def read(files: str | Sequence[str], tree: str, fields: Sequence[str], **kwargs: Any) -> ak.Array:
    """Read everything at once (for small inputs); see :func:`iterate` for the options."""
    chunks = [c.arrays for c in iterate(files, tree, fields, **kwargs)]
    return ak.concatenate(chunks) if len(chunks) > 1 else chunks[0]


def file_checksum(path: str | Path, *, algorithm: str = "sha256") -> str:
    """Checksum of a file, recorded in run directories to tie results to their inputs."""
    h = hashlib.new(algorithm)
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            h.update(block)
    return f"{algorithm}:{h.hexdigest()}"
