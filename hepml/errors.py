"""The exception hierarchy of hepml.

Every error that hepml raises for a user's mistake or for bad input derives from
:class:`HepmlError` and from the builtin a caller would expect, so ``except KeyError``
still catches a missing branch. Messages say what was wrong, where (file, tree, branch,
entry range, config key) and what to do about it.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable

__all__ = [
    "HepmlError",
    "ConfigError",
    "UnknownKeyError",
    "InputFileError",
    "OutputError",
    "MissingTreeError",
    "MissingBranchError",
    "MissingColumnError",
    "BadValueError",
    "EmptyInputError",
    "CheckpointError",
    "GenerationError",
    "DistributedError",
    "ExportError",
    "closest",
]


def closest(name: str, choices: Iterable[str], *, n: int = 1) -> list[str]:
    """Return up to ``n`` entries of ``choices`` that look most like ``name``."""
    choices = list(choices)
    hits = difflib.get_close_matches(name, choices, n=n, cutoff=0.5)
    if not hits:
        lowered = {c.lower(): c for c in choices}
        hits = [lowered[h] for h in difflib.get_close_matches(name.lower(), lowered, n=n)]
    return hits


def _suggestion(name: str, choices: Iterable[str]) -> str:
    hits = closest(name, choices)
    return f" Did you mean {hits[0]!r}?" if hits else ""


class HepmlError(Exception):
    """Base class of every error hepml raises on purpose."""

    def __str__(self) -> str:  # KeyError would otherwise repr() the message
        return str(self.args[0]) if self.args else self.__class__.__name__

    def with_context(self, where: str) -> HepmlError:
        """The same error (class and attributes) with ``where: `` put before the message."""
        new = self.__class__.__new__(self.__class__)
        new.__dict__.update(self.__dict__)
        new.args = (f"{where}: {self}",)
        return new


class ConfigError(HepmlError, ValueError):
    """A workflow file or a configuration value is wrong."""


class UnknownKeyError(ConfigError, KeyError):
    """A configuration key that hepml does not know; the message suggests the nearest one."""

    def __init__(self, key: str, valid: Iterable[str], *, where: str = "") -> None:
        valid = sorted(valid)
        place = f" in {where}" if where else ""
        super().__init__(
            f"unknown key {key!r}{place}.{_suggestion(key, valid)} Valid keys: {', '.join(valid)}."
        )
        self.key = key


class InputFileError(HepmlError, OSError):
    """A file cannot be opened or read: missing, truncated, not ROOT, unreadable."""


class OutputError(HepmlError, OSError):
    """An output cannot be written: a read-only, missing or full place, or no permission."""


class MissingTreeError(HepmlError, KeyError):
    """The file holds no tree (TTree or RNTuple) under the requested name."""

    def __init__(self, path: str, tree: str, available: Iterable[str]) -> None:
        available = sorted(available)
        super().__init__(
            f"{path}: no tree {tree!r}.{_suggestion(tree, available)} "
            f"Trees in the file: {', '.join(available) or 'none'}. "
            "Set 'tree:' in the workflow's data section."
        )
        self.path, self.tree = path, tree


class MissingBranchError(HepmlError, KeyError):
    """A requested branch is not in the tree (a typo or a different layout)."""

    def __init__(self, path: str, tree: str, branch: str, available: Iterable[str]) -> None:
        available = sorted(available)
        shown = ", ".join(available[:40]) + (" ..." if len(available) > 40 else "")
        super().__init__(
            f"{path}:{tree}: no branch {branch!r}.{_suggestion(branch, available)} "
            f"Map it to an existing branch under 'branches:' in the workflow's data section. "
            f"Branches: {shown}"
        )
        self.path, self.tree, self.branch = path, tree, branch


class MissingColumnError(HepmlError, KeyError):
    """A text table (CSV) lacks a column that hepml needs."""

    def __init__(self, path: str, column: str, available: Iterable[str], *,
                 hint: str = "") -> None:
        found = list(available)
        super().__init__(
            f"{path}: no column {column!r}.{_suggestion(column, found)} "
            f"Columns found: {', '.join(found) or 'none'}.{' ' + hint if hint else ''}"
        )
        self.path, self.column = path, column


class BadValueError(HepmlError, ValueError):
    """Input data hold values that cannot be used (NaN, inf, negative energies)."""


class EmptyInputError(HepmlError, ValueError):
    """There is nothing to work on: a file with no entries, a selection that keeps nothing."""


class CheckpointError(HepmlError, OSError):
    """A checkpoint is missing, cut short, or does not match the model or configuration."""


class GenerationError(HepmlError, RuntimeError):
    """Event generation failed (a Pythia setting was refused, initialisation failed)."""


class DistributedError(HepmlError, RuntimeError):
    """Another rank of a torchrun job died, hung or failed; this rank cannot go on."""


class ExportError(HepmlError, RuntimeError):
    """A model cannot be exported (ONNX), or the exported model does not reproduce it."""
