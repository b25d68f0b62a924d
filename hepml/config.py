"""Typed, frozen configuration loaded from workflow YAML files.

A workflow file is one reproducible job. It loads into :class:`WorkflowConfig`, made of
frozen dataclasses whose type hints are the schema: :func:`from_mapping` validates a
mapping against them with pydantic (``extra="forbid"``, no silent coercion of strings or
booleans to numbers), rejects unknown keys with the closest valid key suggested
(:class:`hepml.errors.UnknownKeyError`) and wrong types and values with a
:class:`hepml.errors.ConfigError` that names the key path. The same hints give the JSON
Schema of every section (:func:`json_schema`). Sections that belong to a pluggable part
(``representation``, ``model``, a task's own section) are mappings here; the layer that
owns each part declares its schema, and :mod:`hepml.tasks.workflow` checks the whole
workflow before any work starts, so this module imports no layer above it.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar

import pydantic
import yaml

from hepml.errors import ConfigError, UnknownKeyError

__all__ = [
    "DataConfig",
    "TrainingConfig",
    "EvaluationConfig",
    "ApplyConfig",
    "WorkflowConfig",
    "load_workflow",
    "validate",
    "raise_validation_error",
    "from_mapping",
    "schema_model",
    "signature_model",
    "json_schema",
    "to_dict",
    "Positive",
    "NonNegative",
]

T = TypeVar("T")

Positive = pydantic.Field(gt=0)
NonNegative = pydantic.Field(ge=0)
_SCALARS = (int, float, bool, str)


def _strict(hint: Any) -> Any:
    """The pydantic type of a dataclass or signature hint.

    Numbers, booleans and strings are strict (YAML already types them: ``"3"`` or ``true``
    for a number is a mistake); an int is accepted for a float. Sequences become tuples
    and accept lists. Nested config dataclasses become their schema models.
    """
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any or hint is inspect.Parameter.empty:
        return Any
    if origin is Annotated:
        return Annotated[(_strict(args[0]), *hint.__metadata__)]
    if hint in _SCALARS:
        return Annotated[hint, pydantic.Strict()]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(_strict(a) for a in args)]  # noqa: UP007
    if origin is typing.Literal:
        return hint
    if origin in (tuple, list, Sequence) or hint in (tuple, list, Sequence):
        if origin is tuple and args and args[-1] is not Ellipsis:
            return tuple[tuple(_strict(a) for a in args)]
        return tuple[_strict(args[0]) if args else Any, ...]
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        return dict[str, _strict(args[1]) if len(args) == 2 else Any]
    if dataclasses.is_dataclass(hint):
        return schema_model(hint)
    return hint


def _docs(cls: Any) -> dict[str, str]:
    """``Attributes:`` (or ``Args:``) entries of a Google docstring, by name."""
    out: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    name, indent, inside = None, 0, False
    for line in lines:
        stripped = line.strip()
        if stripped in ("Attributes:", "Args:"):
            inside, name = True, None
            continue
        if inside and stripped and not line.startswith(" "):
            inside = False
        if not inside or not stripped:
            continue
        lead = len(line) - len(line.lstrip())
        head, sep, rest = stripped.partition(":")
        if sep and (name is None or lead <= indent) and head.replace("_", "").isalnum():
            name, indent = head, lead
            out[name] = rest.strip()
        elif name is not None:
            out[name] += " " + stripped
    return out


def _model_config(title: str, doc: str | None) -> pydantic.ConfigDict:
    return pydantic.ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True,
                               title=title, json_schema_extra={"description": doc} if doc else None)


@functools.cache
def schema_model(cls: type) -> type[pydantic.BaseModel]:
    """The pydantic model of the config dataclass ``cls`` (its schema; cached)."""
    hints = typing.get_type_hints(cls, include_extras=True)
    docs = _docs(cls)
    fields: dict[str, Any] = {}
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        if f.default is not dataclasses.MISSING:
            default = pydantic.Field(default=f.default, description=docs.get(f.name))
        elif f.default_factory is not dataclasses.MISSING:
            default = pydantic.Field(default_factory=f.default_factory,
                                     description=docs.get(f.name))
        else:
            default = pydantic.Field(description=docs.get(f.name))
        fields[f.name] = (_strict(hints[f.name]), default)
    summary = inspect.cleandoc(cls.__doc__ or "").split("\n\n")[0] or None
    return pydantic.create_model(cls.__name__, __config__=_model_config(cls.__name__, summary),
                                 **fields)


def signature_model(func: Callable[..., Any], title: str, *, exclude: Sequence[str] = (),
                    extra: Mapping[str, Any] | None = None, doc: Any = None
                    ) -> type[pydantic.BaseModel]:
    """A pydantic model of ``func``'s keyword arguments (a model's hyperparameters).

    Args:
        func: A callable with annotated parameters (e.g. a model class's ``__init__``).
        title: The schema's title.
        exclude: Parameters that are not written in a workflow (set from the data).
        extra: Further fields, name -> (type, default), e.g. ``kind``.
        doc: What holds the ``Args:`` docstring (default: ``func``), e.g. the class.
    """
    hints = typing.get_type_hints(func, include_extras=True)
    docs = _docs(doc if doc is not None else func)
    fields: dict[str, Any] = dict(extra or {})
    for name, p in inspect.signature(func).parameters.items():
        if name == "self" or name in exclude or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        default = ... if p.default is p.empty else p.default
        fields[name] = (_strict(hints.get(name, Any)),
                        pydantic.Field(default=default, description=docs.get(name)))
    return pydantic.create_model(title, __config__=_model_config(title, None), **fields)


def _as_dataclass(cls: type, model: pydantic.BaseModel) -> Any:
    """The dataclass instance of a validated schema model (only the keys given)."""
    hints = typing.get_type_hints(cls)
    kwargs = {name: _plain(getattr(model, name), hints[name]) for name in model.model_fields_set}
    return cls(**kwargs)


def _plain(value: Any, hint: Any) -> Any:
    if isinstance(value, pydantic.BaseModel):
        target = next((a for a in (hint, *typing.get_args(hint))
                       if dataclasses.is_dataclass(a) and schema_model(a) is type(value)), None)
        return _as_dataclass(target, value) if target is not None else value.model_dump()
    if isinstance(value, tuple):
        inner = typing.get_args(hint)
        inner = next((a for a in inner if a is not Ellipsis), Any) if inner else Any
        return tuple(_plain(v, inner) for v in value)
    return value


def _fields_at(model: Any, loc: Sequence[Any]) -> list[str]:
    """The field names of the (nested) schema model found at ``loc``."""
    for part in loc:
        if isinstance(part, int):
            continue
        if not (isinstance(model, type) and issubclass(model, pydantic.BaseModel)):
            return []
        field = model.model_fields.get(part)
        if field is None:
            return []
        candidates = [field.annotation, *typing.get_args(field.annotation)]
        model = next((c for c in candidates
                      if isinstance(c, type) and issubclass(c, pydantic.BaseModel)), None)
        if model is None:
            for c in candidates:  # tuple[Model, ...]
                inner = [a for a in typing.get_args(c)
                         if isinstance(a, type) and issubclass(a, pydantic.BaseModel)]
                if inner:
                    model = inner[0]
    if isinstance(model, type) and issubclass(model, pydantic.BaseModel):
        return list(model.model_fields)
    return []


def raise_validation_error(exc: pydantic.ValidationError, model: type[pydantic.BaseModel],
                           where: str) -> NoReturn:
    """One :class:`ConfigError` (or :class:`UnknownKeyError`) for pydantic's first error."""
    err = exc.errors(include_url=False)[0]
    loc = [p for p in err["loc"] if not (isinstance(p, str) and "[" in p)]

    def dotted(parts: Sequence[Any]) -> str:
        text = ".".join([*([where] if where else []),
                         *(f"[{p}]" if isinstance(p, int) else str(p) for p in parts)])
        return text.replace(".[", "[")

    path = dotted(loc)
    if err["type"] == "extra_forbidden":
        raise UnknownKeyError(str(loc[-1]), _fields_at(model, loc[:-1]),
                              where=dotted(loc[:-1])) from None
    if err["type"] == "missing":
        raise ConfigError(f"{path}: required, but not given") from None
    msg = err["msg"]
    msg = msg[0].lower() + msg[1:]
    if msg.startswith("value error, "):
        msg = msg[len("value error, "):]
    raise ConfigError(f"{path}: {msg}, got {err.get('input')!r}") from None


def validate(model: type[pydantic.BaseModel], data: Any, *, where: str) -> pydantic.BaseModel:
    """``model.model_validate(data)``, a :class:`ConfigError` naming the key on failure."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or model.__name__}: expected a mapping of keys, got {data!r}")
    try:
        return model.model_validate(dict(data))
    except pydantic.ValidationError as exc:
        raise_validation_error(exc, model, where)


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, *, where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, validated by its schema.

    Raises:
        UnknownKeyError: A key that ``cls`` (or a nested section) does not have, with the
            nearest valid key suggested.
        ConfigError: A wrong type or value, naming the key path.
    """
    model = schema_model(cls)
    try:
        return _as_dataclass(cls, validate(model, data, where=where))
    except TypeError as exc:  # a check of the dataclass itself
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def json_schema(cls: type) -> dict[str, Any]:
    """The JSON Schema of the config dataclass ``cls``."""
    return schema_model(cls).model_json_schema()


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config object (for YAML, JSON and checkpoints)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
    if isinstance(obj, pydantic.BaseModel):
        return to_dict(obj.model_dump())
    if isinstance(obj, (list, tuple)):
        return [to_dict(v) for v in obj]
    if isinstance(obj, Mapping):
        return {str(k): to_dict(v) for k, v in obj.items()}
    if isinstance(obj, Path):
        return str(obj)
    return obj


@dataclasses.dataclass(frozen=True)
class DataConfig:
    """Where the data are and how to read them.

    Attributes:
        files: ROOT files (globs allowed), relative to the workflow file's directory's
            project root or absolute.
        tree: Name of the TTree or RNTuple.
        branches: Our field name -> the file's branch, or an expression of branches from
            the registry in :mod:`hepml.io.expressions` (e.g. ``"pt(Jet_Px, Jet_Py)"``).
            Fields not listed are read under their own name.
        labels: One-hot flag branches, one per class, in class order (e.g.
            ``[label_QCD, label_Tbqq]``). Class ``i`` is the entry whose flag ``i`` is set.
            An empty list (with an empty ``class_names``) means unlabelled data, which only
            the anomaly scan accepts.
        class_names: Human names of the classes, same order as ``labels``.
        signal_class: The class treated as signal in binary metrics (default: the last).
        step_size: Entries per chunk read; bounds the memory used while reading.
        max_entries: Read at most this many entries per file (``None``: all).
        split: Fractions of entries for training, validation and test; the assignment of
            each entry is fixed by ``split_seed`` and stored in the run directory.
        split_seed: Seed of the train/validation/test assignment (``None``: the workflow
            ``seed``, as before this key existed). Fix it to compare several training
            seeds on the same test entries.
        cache: Keep the model inputs built from each chunk in memory after the first
            epoch (fast while the data fit in memory). ``false`` streams: every epoch reads
            and builds the chunks again, so memory follows ``step_size``, not the data size.
    """

    files: Annotated[tuple[str, ...], pydantic.Field(min_length=1)]
    tree: str = "tree"
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    labels: tuple[str, ...] = ("label_QCD", "label_Tbqq")
    class_names: tuple[str, ...] = ("QCD", "top")
    signal_class: str | None = None
    step_size: Annotated[int, Positive] = 20_000
    max_entries: Annotated[int, Positive] | None = None
    split: Annotated[tuple[float, ...], pydantic.Field(min_length=3, max_length=3)] = (
        0.6, 0.2, 0.2)
    split_seed: int | None = None
    cache: bool = True

    def __post_init__(self) -> None:
        if len(self.labels) != len(self.class_names):
            raise ConfigError(
                f"data.labels has {len(self.labels)} entries but data.class_names has "
                f"{len(self.class_names)}: give one name per label branch"
            )
        if len(self.labels) == 1:
            raise ConfigError("data.labels: give at least two classes, or none for unlabelled "
                              "data (anomaly scans of collision data)")
        if self.signal_class is not None and self.signal_class not in self.class_names:
            raise ConfigError(
                f"data.signal_class {self.signal_class!r} is not one of {list(self.class_names)}"
            )
        if any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(
                f"data.split must be three non-negative fractions (train, validation, test) "
                f"summing to 1, got {list(self.split)}"
            )

    @property
    def signal_index(self) -> int:
        """Index of the signal class."""
        if self.signal_class:
            return self.class_names.index(self.signal_class)
        return len(self.class_names) - 1


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Options of :class:`hepml.training.Trainer`, shared by every model.

    Attributes:
        epochs: Maximum number of epochs.
        batch_size: Global batch size (split over ranks under torchrun).
        optimizer: ``adam``, ``adamw``, ``sgd`` (with ``momentum``) or ``rmsprop``.
        learning_rate: Initial learning rate.
        momentum: Momentum of SGD and RMSprop.
        weight_decay: L2 penalty coefficient (added to the loss as 0.5*λ*Σw², on weights
            only, not biases or normalisation parameters).
        l1: L1 penalty coefficient (λ*Σ|w| on weights).
        scheduler: ``none``, ``cosine``, ``step`` (``step_size`` epochs, factor ``gamma``),
            ``exponential`` (``gamma`` per epoch) or ``plateau`` (on the validation loss).
        early_stopping_patience: Stop after this many epochs without a validation-loss
            improvement larger than ``min_delta`` (0 turns early stopping off).
        mixed_precision: ``auto`` (on for CUDA, off elsewhere), or true/false.
        device: ``auto`` (cuda, then mps, then cpu), or a torch device string.
        grad_clip: Clip the gradient norm to this value (``None``: no clipping).
        num_threads: CPU threads for torch (``None``: torch's default).
        distributed_timeout: Under torchrun, seconds a rank waits for the others in one
            collective operation before it stops with an error (a rank that died or hangs).
    """

    epochs: Annotated[int, Positive] = 20
    batch_size: Annotated[int, Positive] = 128
    optimizer: typing.Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: Annotated[float, Positive] = 1e-3
    momentum: float = 0.9
    weight_decay: Annotated[float, NonNegative] = 0.0
    l1: Annotated[float, NonNegative] = 0.0
    scheduler: typing.Literal["none", "cosine", "step", "exponential", "plateau"] = "none"
    step_size: Annotated[int, Positive] = 10
    gamma: float = 0.5
    early_stopping_patience: Annotated[int, NonNegative] = 5
    min_delta: Annotated[float, NonNegative] = 0.0
    mixed_precision: bool | typing.Literal["auto"] = "auto"
    device: str = "auto"
    grad_clip: Annotated[float, Positive] | None = None
    num_threads: Annotated[int, Positive] | None = None
    distributed_timeout: Annotated[float, Positive] = 300.0


_Efficiency = Annotated[float, pydantic.Field(gt=0, le=1)]


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """What to compute on the test set.

    Attributes:
        working_points: Signal efficiencies at which background rejection is quoted.
        threshold_efficiency: Signal efficiency that defines the working point of the
            binary confusion matrix and the figures of merit.
        n_bootstrap: Bootstrap replicas for the AUC interval (0: none).
    """

    working_points: tuple[_Efficiency, ...] = (0.3, 0.5)
    threshold_efficiency: _Efficiency = 0.5
    n_bootstrap: Annotated[int, NonNegative] = 100


@dataclasses.dataclass(frozen=True)
class ApplyConfig:
    """Further files that a trained model scores at the end of a run (e.g. real data).

    Each gets one friend tree of scores per input file, entry for entry, under
    ``<run dir>/applied/<name>/``. The files need no label branches; a different layout is
    read through ``branches`` exactly as in :class:`DataConfig`.

    Attributes:
        name: Short name used for the output directory and in the report.
        files: ROOT files (globs allowed).
        tree: Name of the TTree or RNTuple.
        branches: Our field name -> the file's branch or an expression of branches.
        step_size: Entries per chunk read.
        max_entries: Read at most this many entries per file (``None``: all).
    """

    name: str
    files: Annotated[tuple[str, ...], pydantic.Field(min_length=1)]
    tree: str = "tree"
    branches: dict[str, str] = dataclasses.field(default_factory=dict)
    step_size: Annotated[int, Positive] = 20_000
    max_entries: Annotated[int, Positive] | None = None

    def __post_init__(self) -> None:
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"apply: name {self.name!r} must be a plain directory name")


@dataclasses.dataclass(frozen=True)
class WorkflowConfig:
    """One job, as written in ``workflows/NAME.yaml``.

    ``task`` is ``tagging`` (jets) or ``classification`` (events), which both train a
    classifier on a representation of the entries and differ only in the wording of the
    report; ``tracking`` (tracker hits -> tracks); ``anomaly`` (an autoencoder trained on
    background scans a sample for anomalous entries); or ``dqm`` (an autoencoder trained
    on good lumisections flags bad ones); or ``calosim`` (a CaloGAN learns calorimeter
    showers and is compared with them). The sections named after a task (``tracking``,
    ``anomaly``, ``dqm``, ``calosim``) hold that task's own options, checked by the task
    itself, and are accepted only with that task.
    """

    name: str
    task: typing.Literal["tagging", "classification", "tracking", "anomaly", "dqm", "calosim"]
    data: DataConfig
    representation: dict = dataclasses.field(default_factory=dict)
    model: dict = dataclasses.field(default_factory=dict)
    training: TrainingConfig = dataclasses.field(default_factory=TrainingConfig)
    evaluation: EvaluationConfig = dataclasses.field(default_factory=EvaluationConfig)
    apply: tuple[ApplyConfig, ...] = ()
    tracking: dict = dataclasses.field(default_factory=dict)
    anomaly: dict = dataclasses.field(default_factory=dict)
    dqm: dict = dataclasses.field(default_factory=dict)
    calosim: dict = dataclasses.field(default_factory=dict)
    seed: int = 0
    runs_dir: str = "runs"
    description: str = ""

    def __post_init__(self) -> None:
        names = [a.name for a in self.apply]
        if len(set(names)) != len(names):
            raise ConfigError(f"apply: names must differ, got {names}")
        if self.apply and self.task not in ("tagging", "classification"):
            raise ConfigError(f"apply: scoring further files is not part of 'task: {self.task}'; "
                              "remove the apply section")
        for section in ("tracking", "anomaly", "dqm", "calosim"):
            if getattr(self, section) and self.task != section:
                raise ConfigError(f"{section}: this section only applies to 'task: {section}', "
                                  f"not to 'task: {self.task}'")
        if not self.data.labels and self.task in ("tagging", "classification"):
            raise ConfigError("data.labels: a classifier needs at least two classes")


def load_workflow(path: str | Path, overrides: Mapping[str, Any] | None = None) -> WorkflowConfig:
    """Read a workflow YAML file into a :class:`WorkflowConfig`.

    Args:
        path: The YAML file.
        overrides: Dotted keys to replace, e.g. ``{"training.epochs": 2}``; checked like
            the file's own keys.

    Raises:
        ConfigError: The file is missing, is not valid YAML, or holds a bad key or value.
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise ConfigError(f"cannot read workflow file {path}: {exc.strerror or exc}") from None
    try:
        data = yaml.safe_load(text) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a workflow file is a mapping of sections, "
                          f"got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {key} is not a section")
        node[leaf] = value
    data.setdefault("name", path.stem)
    try:
        return from_mapping(WorkflowConfig, data)
    except ConfigError as exc:
        raise exc.with_context(path.name) from None
