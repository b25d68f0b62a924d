"""Shared helpers of the representations: checked access to a chunk's jagged fields."""

from __future__ import annotations

from typing import Any

import awkward as ak
import numpy as np

from hepml.errors import BadValueError, MissingBranchError

__all__ = ["_field", "_flatten", "check_finite"]


def _field(jets: Any, name: str) -> Any:
    fields = jets.fields if isinstance(jets, ak.Array) else list(jets)
    if name not in fields:
        raise MissingBranchError("input arrays", "jets", name, fields)
    return jets[name]


def _flatten(jets: Any, fields: tuple[str, ...]) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Per-jet constituent counts and the flat numeric values of each jagged field."""
    counts: np.ndarray | None = None
    flat: dict[str, np.ndarray] = {}
    for name in fields:
        arr = _field(jets, name)
        if not isinstance(arr, ak.Array):
            arr = ak.Array(arr)
        if arr.ndim != 2:
            raise BadValueError(f"branch {name!r}: expected one list of values per jet "
                                f"(a jagged branch), got type {arr.type}")
        num = np.asarray(ak.num(arr, axis=1), dtype=np.int64)
        if counts is None:
            counts = num
        elif not np.array_equal(num, counts):
            bad = int(np.flatnonzero(num != counts)[0])
            raise BadValueError(
                f"branch {name!r} has {num[bad]} values in jet {bad} but {fields[0]!r} has "
                f"{counts[bad]}: the constituent branches do not belong together")
        try:  # may share memory with the input: nothing below writes into these arrays
            values = ak.to_numpy(ak.flatten(arr, axis=1), allow_missing=False)
        except (ValueError, TypeError):
            values = None
        if values is None or values.dtype.kind not in "biuf":
            raise BadValueError(f"branch {name!r}: expected numbers for every constituent, got "
                                f"type {arr.type} (missing values or records)")
        flat[name] = values
    return counts if counts is not None else np.zeros(0, dtype=np.int64), flat


def check_finite(name: str, values: np.ndarray, owner: np.ndarray | None, *, entry: str,
                 making: str) -> None:
    """Raise :class:`BadValueError` if float ``values`` of field ``name`` hold NaN or inf.

    ``owner[i]`` is the entry (jet, event) that flat value ``i`` belongs to (``None``: the
    values are per entry). The error names the field, the count and the first bad entry
    (index within the chunk), and carries them as ``branch``, ``count`` and
    ``<entry>_index``.
    """
    if values.dtype.kind != "f" or np.isfinite(values).all():
        return
    bad = ~np.isfinite(values)
    first = int(np.argmax(bad))
    index = int(owner[first]) if owner is not None else first
    exc = BadValueError(
        f"field {name!r}: {int(bad.sum())} NaN or infinite value(s), the first in {entry} "
        f"{index} (entry index within this chunk). Remove or fix these {entry}s before "
        f"making {making}.")
    exc.branch, exc.count = name, int(bad.sum())
    setattr(exc, f"{entry}_index", index)
    raise exc
