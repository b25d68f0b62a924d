"""Per-entry feature vectors: a fixed list of numbers per jet or event, ``[N, F]``.

The input of a dense autoencoder or any per-event model: each feature is a per-entry
field (``jet_mass``, ``M``, ``pt1``) or one element of a jagged field written as
``name[i]`` (``jet_pt[0]``, the leading jet's pT), with ``fill`` where an entry has
fewer than ``i + 1`` elements (an event with no second muon). Features listed in ``log``
enter as ``log(1 + x)``, the usual way to tame momenta and energies that span decades.
Branch mapping and expressions (``pt(px1, py1)``) are applied before, by
:class:`hepml.io.Source`, so a file of any layout is read through the workflow.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import awkward as ak
import numpy as np
import torch

from hepml.errors import BadValueError, ConfigError
from hepml.representations._arrays import _field, check_finite
from hepml.representations._transform import ConfigMixin, Transform

__all__ = ["FeatureConfig", "Features", "parse_feature"]

_INDEXED = re.compile(r"^\s*([A-Za-z_][A-Za-z0-9_]*)\s*\[\s*(\d+)\s*\]\s*$")
_PLAIN = re.compile(r"^\s*[A-Za-z_][A-Za-z0-9_]*\s*$")


def parse_feature(spec: str) -> tuple[str, int | None]:
    """``"jet_pt[0]"`` -> ``("jet_pt", 0)``; ``"M"`` -> ``("M", None)``."""
    m = _INDEXED.match(spec)
    if m:
        return m.group(1), int(m.group(2))
    if _PLAIN.match(spec):
        return spec.strip(), None
    raise ConfigError(f"representation.features: {spec!r} is not a field name or "
                      "'name[i]' (element i of a jagged field)")


@dataclasses.dataclass(frozen=True)
class FeatureConfig(ConfigMixin):
    """Which numbers make an entry's feature vector.

    Attributes:
        features: Field names, or ``name[i]`` for element ``i`` of a jagged field, in
            output order.
        log: Features (as written in ``features``) transformed to ``log(1 + x)``; their
            values must be > -1.
        fill: Value of ``name[i]`` where an entry has no element ``i``.
        dtype: ``float32`` (default) or ``float64``.
    """

    features: tuple[str, ...] = ()
    log: tuple[str, ...] = ()
    fill: float = 0.0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if not self.features:
            raise ConfigError("representation.features: list at least one field, e.g. "
                              "[jet_mass, jet_pt] or [M, pt1, pt2]")
        parsed = [parse_feature(f) for f in self.features]
        if len(set(self.features)) != len(self.features):
            raise ConfigError("representation.features lists a feature twice: "
                              f"{list(self.features)}")
        unknown = [f for f in self.log if f not in self.features]
        if unknown:
            raise ConfigError(f"representation.log: {unknown} are not in representation.features")
        if self.dtype not in ("float32", "float64"):
            raise ConfigError(f"representation.dtype: {self.dtype!r} is not float32 or float64")
        object.__setattr__(self, "_parsed", tuple(parsed))

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The input fields read, each once, in first-use order."""
        return tuple(dict.fromkeys(name for name, _ in self._parsed))  # type: ignore[attr-defined]


class Features(Transform):
    """Chunk of entries -> feature matrix ``[N, F]`` (see the module docstring)."""

    config_class = FeatureConfig
    empty_description = "entries lack an element that a name[i] feature asks for (filled)"

    @property
    def names(self) -> tuple[str, ...]:
        """The feature names, in column order."""
        return self.config.features

    @property
    def output_shape(self) -> tuple[int]:
        """Shape of one entry's input."""
        return (len(self.config.features),)

    def to_physical(self, values: np.ndarray) -> np.ndarray:
        """Undo the ``log`` transform: feature matrix ``[..., F]`` back in the file's units."""
        out = np.array(values, dtype=np.float64, copy=True)
        for k, spec in enumerate(self.config.features):
            if spec in self.config.log:
                out[..., k] = np.expm1(out[..., k])
        return out

    def _column(self, arrays: Any, spec: str, name: str, index: int | None) -> np.ndarray:
        arr = _field(arrays, name)
        if not isinstance(arr, ak.Array):
            arr = ak.Array(arr)
        if index is None:
            if arr.ndim != 1:
                raise BadValueError(f"feature {spec!r}: field {name!r} holds a list per entry "
                                    f"(type {arr.type}); pick one element as '{name}[0]'")
            values = ak.to_numpy(arr)
        else:
            if arr.ndim != 2:
                raise BadValueError(f"feature {spec!r}: field {name!r} is not a list per entry "
                                    f"(type {arr.type}); drop the [{index}]")
            padded = ak.pad_none(arr, index + 1, axis=1, clip=True)[:, index]
            values = ak.to_numpy(ak.fill_none(padded, self.config.fill))
        if values.dtype.kind not in "biuf":
            raise BadValueError(f"feature {spec!r}: expected numbers, got type {arr.type}")
        return values.astype(np.float64)

    def __call__(self, arrays: Any) -> torch.Tensor:
        """Feature matrix of a chunk.

        Raises:
            MissingBranchError: A field is not in the arrays.
            BadValueError: NaN/inf values (naming the feature and the first entry), a
                ``log`` feature with a value <= -1, or a field of the wrong kind.
        """
        cols = []
        for spec, (name, index) in zip(self.config.features, self.config._parsed, strict=True):
            values = self._column(arrays, spec, name, index)
            check_finite(spec, values, None, entry="entry", making="feature vectors")
            if spec in self.config.log:
                if (values <= -1).any():
                    first = int(np.argmax(values <= -1))
                    raise BadValueError(f"feature {spec!r} is in representation.log but entry "
                                        f"{first} has {values[first]} <= -1")
                values = np.log1p(values)
            cols.append(values)
        n = len(cols[0]) if cols else 0
        out = np.stack(cols, axis=1) if n else np.zeros((0, len(cols)))
        return torch.from_numpy(out.astype(self.config.dtype))

    def count_empty(self, arrays: Any) -> int:
        """Entries where some ``name[i]`` feature was filled."""
        missing = np.zeros(len(arrays), dtype=bool)
        for name, index in self.config._parsed:
            if index is not None:
                missing |= np.asarray(ak.num(_field(arrays, name), axis=1)) <= index
        return int(missing.sum())
