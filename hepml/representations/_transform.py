"""Base of the representation transforms: a frozen config, a pure call, a record of itself."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, ClassVar

from hepml.config import from_mapping, to_dict
from hepml.errors import ConfigError, UnknownKeyError

__all__ = ["ConfigMixin", "Transform"]


class ConfigMixin:
    """``from_dict``/``to_dict`` of a representation's frozen config dataclass."""

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Any:
        """Build from plain data (a workflow's ``representation`` section, without ``kind``).

        Raises:
            UnknownKeyError: For a key that is not a field, with the closest one suggested.
            ConfigError: For a value of the wrong type or out of range, naming the key.
        """
        return from_mapping(cls, data, where="representation")

    def to_dict(self) -> dict[str, Any]:
        """Plain data (lists, strings, numbers) that :meth:`from_dict` turns back into ``self``."""
        return to_dict(self)


def check_names(key: str, value: Any, registry: Any, *, allow_empty: bool = False
                ) -> tuple[str, ...]:
    """The names listed under ``representation.<key>``, each checked against ``registry``.

    A single string counts as a list of one. An unknown name raises
    :class:`~hepml.errors.UnknownKeyError` with the closest valid one suggested; an empty
    list (unless ``allow_empty``) or a name given twice raises ConfigError.
    """
    names = (value,) if isinstance(value, str) else value
    if not isinstance(names, (list, tuple)) or (not names and not allow_empty):
        raise ConfigError(f"representation.{key}: expected a {'' if allow_empty else 'non-empty '}"
                          f"list of names from {', '.join(registry)}, got {value!r}")
    for name in names:
        if name not in registry:
            raise UnknownKeyError(str(name), registry, where=f"representation.{key}")
    if len(set(names)) != len(names):
        raise ConfigError(f"representation.{key}: {list(names)} lists a name twice")
    return tuple(names)


class Transform:
    """A pure transform from a chunk of jets to model inputs, described by its config.

    Subclasses set ``config_class`` (a frozen dataclass with ``from_dict``/``to_dict`` and
    ``required_fields``) and implement ``__call__``. The input arrays are never modified;
    the output depends only on them and on the configuration, which :meth:`to_dict`
    records for checkpoints and run metadata.
    """

    config_class: ClassVar[type]
    #: What :meth:`count_empty` counts, for the warning of the task that reads the chunk.
    empty_description: ClassVar[str] = "entries have empty inputs"

    def __init__(self, config: Any = None) -> None:
        if config is None:
            config = self.config_class()
        elif not isinstance(config, self.config_class):
            config = self.config_class.from_dict(config)
        self.config = config

    def __repr__(self) -> str:
        args = ", ".join(f"{f.name}={getattr(self.config, f.name)!r}"
                         for f in dataclasses.fields(self.config))
        return f"{type(self).__name__}({args})"

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other.config == self.config

    __hash__ = None  # type: ignore[assignment]

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The input fields (JetClass branch names) the transform reads."""
        return self.config.required_fields

    def to_dict(self) -> dict[str, Any]:
        """The configuration as plain data, for checkpoints and run metadata."""
        return self.config.to_dict()

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> Transform:
        """Rebuild from :meth:`to_dict` output or a workflow's representation section."""
        return cls(cls.config_class.from_dict(data))
