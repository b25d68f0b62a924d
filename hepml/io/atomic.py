"""Atomic output: every file hepml writes appears complete or not at all.

A writer writes to a hidden temporary name beside the target (same directory, so the
rename cannot cross file systems) and :func:`os.replace` puts it in place once complete;
on any failure the temporary file is removed and the target is untouched. An
:class:`OSError` of the file system (read-only, full, no permission, a directory in the
way) becomes one :class:`~hepml.errors.OutputError` that names the path; an error of
another file met inside the block (an input read while writing) and every
:class:`~hepml.errors.HepmlError` pass through unchanged.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from hepml.errors import HepmlError, OutputError

__all__ = ["atomic_path", "write_text", "write_json", "check_writable", "output_error"]


def output_error(path: str | os.PathLike, exc: OSError, what: str = "write") -> OutputError:
    """One line for an :class:`OSError` while writing ``path``."""
    reason = exc.strerror or next(iter(str(exc).splitlines()), "") or type(exc).__name__
    return OutputError(f"cannot {what} {path}: {reason}; choose a place you can write to")


def _make_dir(directory: Path) -> None:
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except FileExistsError:  # a file holds the directory's name
        raise NotADirectoryError(errno.ENOTDIR, "Not a directory", str(directory)) from None


def _about(exc: OSError, paths: tuple[Path, ...]) -> bool:
    """Whether ``exc`` concerns one of ``paths`` (or names no file, as a full disk does)."""
    names = [n for n in (exc.filename, exc.filename2)
             if isinstance(n, (str, bytes, os.PathLike))]
    ours = {os.path.abspath(p) for p in paths}
    return not names or any(os.path.abspath(os.fsdecode(n)) in ours for n in names)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, mkdir: bool = True,
                suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path to write; moved onto ``path`` when the block ends without error.

    The temporary file is ``.NAME.PID`` + ``suffix`` beside ``path``. A ROOT file records
    the name it was created under, so its writers keep the suffix they have always used
    (``.part``), and their files stay the same byte for byte.

    Example:
        >>> import tempfile
        >>> target = Path(tempfile.mkdtemp()) / "out.txt"
        >>> with atomic_path(target) as tmp:
        ...     _ = tmp.write_text("done")
        >>> target.read_text()
        'done'
    """
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}{suffix}")
    try:
        if mkdir:
            _make_dir(path.parent)
        yield tmp
        os.replace(tmp, path)
    except OSError as exc:
        if isinstance(exc, HepmlError) or not _about(exc, (tmp, path, *path.parents)):
            raise
        raise output_error(path, exc) from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()


def write_text(path: str | os.PathLike, text: str) -> Path:
    """Write ``text`` to ``path`` atomically, UTF-8 encoded."""
    with atomic_path(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(path)


def write_json(path: str | os.PathLike, data: Any, *, indent: int | None = 2,
               **dumps: Any) -> Path:
    """Write ``data`` as JSON to ``path`` atomically (``dumps`` go to :func:`json.dumps`)."""
    return write_text(path, json.dumps(data, indent=indent, **dumps) + "\n")


def check_writable(directory: str | os.PathLike) -> Path:
    """Make ``directory`` (and parents) and check that a file can be created in it.

    Called before long work, so that a read-only or missing output place fails at once
    instead of after the work.

    Raises:
        OutputError: The directory cannot be made or written to.
    """
    directory = Path(directory)
    try:
        _make_dir(directory)
        probe = directory / f".hepml-write-check.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise output_error(directory, exc, "write to") from None
    return directory
