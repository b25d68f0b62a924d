"""Name registries: activation functions and model classes, resolved from strings."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from hepml.errors import ConfigError, UnknownKeyError

__all__ = ["ACTIVATIONS", "MODELS", "activation", "register_model", "build_model", "model_kwargs"]

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


def activation(name: str) -> nn.Module:
    """Return a fresh activation module for ``name`` (e.g. ``"relu"``)."""
    try:
        return ACTIVATIONS[name]()
    except KeyError:
        raise UnknownKeyError(name, ACTIVATIONS, where="activation") from None


def register_model(name: str, *, data_args: tuple[str, ...] = ()
                   ) -> Callable[[type[nn.Module]], type[nn.Module]]:
    """Class decorator adding a model to :data:`MODELS` under ``name``.

    Args:
        name: The ``model.kind`` of the family.
        data_args: Constructor arguments that a task sets from the data (input sizes,
            number of classes, shower layout); a workflow's model section may not hold them.
    """

    def deco(cls: type[nn.Module]) -> type[nn.Module]:
        MODELS[name] = cls
        cls.registry_name = name
        cls.data_args = tuple(data_args)
        return cls

    return deco


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
