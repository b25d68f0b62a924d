"""Name registries: activation functions and model families, resolved from strings.

A model family is one ``torch.nn.Module`` class in one file of ``hepml.models``,
registered with :func:`register_model`. The class declares its own contract:

- ``data_args`` (given to :func:`register_model`): the constructor arguments set from
  the data, never from a workflow's ``model:`` section;
- ``data_kwargs(shape, **context)``, a classmethod: their values from the
  representation's ``output_shape`` (and from context such as ``num_classes``, or the
  particles and energy range of calorimeter showers), raising
  :class:`~hepml.errors.ConfigError` when the shape does not fit the family;
- ``contract``, a :class:`ModelContract`: the names of its inputs and outputs, their
  dynamic axes and descriptions, and its default representation, which ``hepml
  export`` reads.

One registry serves every user: tasks and benchmarks size a model with
:func:`model_spec`, checkpoints are rebuilt with :func:`build_model`, export reads
:func:`model_contract` and :func:`output_names`. Adding a family therefore touches its
own file and the registry only (the import in ``hepml/models/__init__.py``, which
registers it); a task that should train it adds its kind to the kinds it accepts.
"""

from __future__ import annotations

import dataclasses
import fnmatch
import inspect
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from torch import nn

from hepml.errors import ConfigError, UnknownKeyError

__all__ = ["ACTIVATIONS", "MODELS", "ModelContract", "activation", "build_model", "fit_shape",
           "model_contract", "model_kwargs", "model_spec", "output_names", "register_model",
           "shape_text"]

ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "relu": nn.ReLU,
    "elu": nn.ELU,
    "gelu": nn.GELU,
    "leaky_relu": lambda: nn.LeakyReLU(0.01),
    "silu": nn.SiLU,
    "tanh": nn.Tanh,
    "sigmoid": nn.Sigmoid,
}

MODELS: dict[str, type[nn.Module]] = {}


@dataclasses.dataclass(frozen=True)
class ModelContract:
    """What a model family takes and gives, by name (read by ``hepml export``).

    Attributes:
        inputs: Input names, in the order of the exported model's inputs.
        outputs: Output names, in order. A family whose outputs depend on its
            hyperparameters (the optional variational outputs, one output per
            calorimeter layer) names them per model with an ``output_names()`` method.
        axes: Dynamic axes: input -> {axis: symbolic name}; ``batch`` is axis 0 of all.
        what: One line on what the model computes.
        descriptions: Input or output name (or a glob pattern such as ``layer_*``) ->
            what it holds (see :meth:`describe`).
        inside: The normalisation the model itself applies to its inputs.
        default_representation: Representation kind of its inputs when a checkpoint
            names none (``None``: the family takes no representation).
        forward_args: The inputs in the order the model's ``forward`` takes them, when
            that differs from ``inputs``.
        tolerance: The export check's tolerance for this family, when it is not the
            default (``hepml.tasks.export.TOLERANCE``).
    """

    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    axes: Mapping[str, Mapping[int, str]]
    what: str
    descriptions: Mapping[str, str]
    inside: str
    default_representation: str | None
    forward_args: tuple[str, ...] | None = None
    tolerance: float | None = None

    def describe(self, name: str) -> str:
        """What input or output ``name`` holds (empty if not described).

        A pattern's description may hold ``{name}``, replaced by the name it matched.
        """
        if name in self.descriptions:
            return self.descriptions[name]
        return next((text.replace("{name}", name) for pattern, text in self.descriptions.items()
                     if fnmatch.fnmatchcase(name, pattern)), "")

    def forward(self, model: nn.Module, inputs: Sequence[Any]) -> Any:
        """``model``'s forward on ``inputs`` given in the order of :attr:`inputs`."""
        if self.forward_args is None:
            return model(*inputs)
        named = dict(zip(self.inputs, inputs, strict=True))
        return model(*(named[k] for k in self.forward_args))


def activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` (e.g. ``"relu"``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UnknownKeyError(name, ACTIVATIONS, where="activation") from None


def register_model(name: str, *, data_args: tuple[str, ...] = ()
                   ) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a model family to :data:`MODELS` under ``name``.

    The class must define ``contract`` (a :class:`ModelContract`) and, when it has
    ``data_args``, the classmethod ``data_kwargs(shape, **context)`` that returns them.

    Args:
        name: The ``model.kind`` of the family.
        data_args: Constructor arguments that a task sets from the data (input sizes,
            number of classes, shower layout); a workflow's model section may not hold them.
    """

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        if not isinstance(getattr(cls, "contract", None), ModelContract):
            raise TypeError(f"model {name!r} ({cls.__name__}) declares no ModelContract")
        if data_args and not callable(getattr(cls, "data_kwargs", None)):
            raise TypeError(f"model {name!r} ({cls.__name__}) has data_args but no "
                            "data_kwargs classmethod")
        MODELS[name] = cls
        cls.registry_name = name
        cls.data_args = tuple(data_args)
        return cls

    return deco


def _family(kind: str) -> type[nn.Module]:
    if kind not in MODELS:
        raise UnknownKeyError(kind, MODELS, where="model.kind")
    return MODELS[kind]


def model_contract(kind: str) -> ModelContract:
    """The :class:`ModelContract` of family ``kind``."""
    return _family(kind).contract


def output_names(model: nn.Module) -> tuple[str, ...]:
    """The output names of one built model (see :attr:`ModelContract.outputs`)."""
    own = getattr(model, "output_names", None)
    return tuple(own()) if callable(own) else tuple(model.contract.outputs)


def fit_shape(kind: str, shape: Any, takes: str, *, ndim: int | None = None,
              keys: Sequence[str] = ()) -> Any:
    """``shape`` checked to be what family ``kind`` takes, else a one-line ConfigError.

    Args:
        kind: The model kind (for the message).
        shape: A representation's ``output_shape``.
        takes: What the family takes, e.g. ``"images (C, H, W)"`` (for the message).
        ndim: The number of dimensions of one entry, for a single tensor.
        keys: The tensors that must be present, for a representation giving several.

    Returns:
        The shape as a tuple of ints (``ndim``), or the mapping itself (``keys``).
    """
    if keys:
        if isinstance(shape, Mapping) and all(k in shape for k in keys):
            return shape
    elif ndim is not None and isinstance(shape, Sequence) and len(shape) == ndim:
        return tuple(int(s) for s in shape)
    raise ConfigError(f"model.kind {kind} takes {takes}; the representation gives entries "
                      f"of shape {shape_text(shape)}")


def shape_text(shape: Any) -> str:
    """An ``output_shape`` for a message: ``(1, 40, 40)``, ``{x: (None, 3), ...}``."""
    if isinstance(shape, Mapping):
        return "{" + ", ".join(f"{k}: {shape_text(v)}" for k, v in shape.items()) + "}"
    if isinstance(shape, Sequence) and not isinstance(shape, (str, bytes)):
        parts = [shape_text(s) for s in shape]
        return f"({', '.join(parts)}{',' if len(parts) == 1 else ''})"
    return str(int(shape)) if hasattr(shape, "__index__") else str(shape)


def _data_kwargs(kind: str, shape: Any, context: Mapping[str, Any]) -> dict[str, Any]:
    """The family's ``data_kwargs`` with the context values its signature names."""
    cls = _family(kind)
    if not cls.data_args:
        return {}
    params = inspect.signature(cls.data_kwargs).parameters
    missing = [n for n, p in params.items()
               if p.kind is p.KEYWORD_ONLY and p.default is p.empty and n not in context]
    if missing:
        raise ConfigError(f"model ({kind}): its sizes need {', '.join(missing)}, which this "
                          "task does not give")
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return cls.data_kwargs(shape, **context)
    return cls.data_kwargs(shape, **{k: v for k, v in context.items() if k in params})


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value


def model_spec(kind: str, hyperparameters: Mapping[str, Any], shape: Any, *,
               source: str = "the representation", **context: Any) -> dict[str, Any]:
    """The kind and constructor arguments of a model of family ``kind`` for ``shape``.

    Args:
        kind: The family's ``model.kind``.
        hyperparameters: The workflow's ``model`` section (its ``kind`` key is ignored).
        shape: The representation's ``output_shape`` (CaloGAN: the showers' layer shapes).
        source: Where ``shape`` comes from, for messages (``"the lumisection maps"``).
        **context: Values beyond the shape (``num_classes``; ``particles`` and
            ``energy_range`` of showers; ``flatten``); each family takes those its
            ``data_kwargs`` names and ignores the others.

    Returns:
        ``{"kind": kind, "kwargs": ...}``: the hyperparameters, then the data arguments,
        with tuples turned into lists (as checkpoints and run configs store them).

    Raises:
        ConfigError: An unknown kind, a shape the family cannot take, a missing context
            value, or a data argument given in ``hyperparameters`` with another value.
    """
    kwargs = {k: v for k, v in hyperparameters.items() if k != "kind"}
    for key, want in _data_kwargs(kind, shape, context).items():
        given = kwargs.setdefault(key, want)
        if _plain(given) != want:
            raise ConfigError(f"model.{key} is {given!r}, but {want!r} is set from {source}; "
                              "leave it out")
    return {"kind": kind,
            "kwargs": {k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}


def model_kwargs(kind: str) -> list[str]:
    """The keyword arguments model ``kind`` accepts."""
    params = inspect.signature(MODELS[kind].__init__).parameters
    return [p for p in params if p != "self"]


def build_model(kind: str, **kwargs: Any) -> nn.Module:
    """Instantiate model ``kind`` with plain hyperparameters, rejecting unknown ones."""
    if kind not in MODELS:
        raise UnknownKeyError(kind, MODELS, where="model.kind")
    valid = model_kwargs(kind)
    for key in kwargs:
        if key not in valid:
            raise UnknownKeyError(key, valid, where=f"model ({kind})")
    try:
        return MODELS[kind](**kwargs)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model ({kind}): {exc}") from None
