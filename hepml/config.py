"""Typed, frozen configuration loaded from workflow YAML files.

A workflow file is one reproducible job. It loads into :class:`WorkflowConfig`, made of
frozen dataclasses; unknown keys are rejected with the closest valid key suggested
(:class:`hepml.errors.UnknownKeyError`), wrong types and values with a
:class:`hepml.errors.ConfigError` that names the key. Sections that belong to a pluggable
part (``representation``, ``model``) are kept as plain mappings here and checked by that
part's own config class, so this module does not import the layers above it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml

from hepml.errors import ConfigError, UnknownKeyError

__all__ = [
    "DataConfig",
    "TrainingConfig",
    "EvaluationConfig",
    "ApplyConfig",
    "WorkflowConfig",
    "load_workflow",
    "from_mapping",
    "to_dict",
]

T = TypeVar("T")


def _check_type(value: Any, hint: Any, where: str) -> Any:
    """Coerce ``value`` to ``hint`` where harmless (int -> float, list -> tuple), else raise."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _check_type(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: bad value {value!r}")
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(repr, args))}")
        return value
    if origin in (tuple, list):
        if isinstance(value, (str, bytes)) or not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else Any
        return tuple(_check_type(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    if origin in (dict, Mapping) or hint in (dict, Mapping):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where}: expected a mapping, got {value!r}")
        return dict(value)
    if dataclasses.is_dataclass(hint):
        return from_mapping(hint, value, where=where)
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if hint is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true or false, got {value!r}")
        return value
    if hint is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_mapping(cls: type[T], data: Mapping[str, Any] | None, *, where: str = "") -> T:
    """Build the frozen dataclass ``cls`` from a mapping, rejecting unknown keys by name."""
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    for key in data:
        if key not in fields:
            raise UnknownKeyError(str(key), fields, where=where or cls.__name__)
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _check_type(value, hints[name], f"{where}.{name}" if where else name)
    try:
        return cls(**kwargs)
    except TypeError as exc:  # a required key is missing
        raise ConfigError(f"{where or cls.__name__}: {exc}") from None


def to_dict(obj: Any) -> Any:
    """Plain-data view of a config object (for YAML, JSON and checkpoints)."""
    if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        return {f.name: to_dict(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
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
            each entry is fixed by the workflow seed and stored in the run directory.
        cache: Keep the model inputs built from each chunk in memory after the first
            epoch (fast while the data fit in memory). ``false`` streams: every epoch reads
            and builds the chunks again, so memory follows ``step_size``, not the data size.
    """

    files: tuple[str, ...]
    tree: str = "tree"
    branches: dict = dataclasses.field(default_factory=dict)
    labels: tuple[str, ...] = ("label_QCD", "label_Tbqq")
    class_names: tuple[str, ...] = ("QCD", "top")
    signal_class: str | None = None
    step_size: int = 20_000
    max_entries: int | None = None
    split: tuple[float, ...] = (0.6, 0.2, 0.2)
    cache: bool = True

    def __post_init__(self) -> None:
        if not self.files:
            raise ConfigError("data.files: give at least one ROOT file")
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
        if len(self.split) != 3 or any(f < 0 for f in self.split) or abs(sum(self.split) - 1) > 1e-6:
            raise ConfigError(
                f"data.split must be three non-negative fractions (train, validation, test) "
                f"summing to 1, got {list(self.split)}"
            )
        if self.step_size <= 0:
            raise ConfigError(f"data.step_size must be positive, got {self.step_size}")

    @property
    def signal_index(self) -> int:
        """Index of the signal class."""
        return self.class_names.index(self.signal_class) if self.signal_class else len(self.class_names) - 1


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

    epochs: int = 20
    batch_size: int = 128
    optimizer: typing.Literal["adam", "adamw", "sgd", "rmsprop"] = "adam"
    learning_rate: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    l1: float = 0.0
    scheduler: typing.Literal["none", "cosine", "step", "exponential", "plateau"] = "none"
    step_size: int = 10
    gamma: float = 0.5
    early_stopping_patience: int = 5
    min_delta: float = 0.0
    mixed_precision: bool | typing.Literal["auto"] = "auto"
    device: str = "auto"
    grad_clip: float | None = None
    num_threads: int | None = None
    distributed_timeout: float = 300.0

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size"):
            if getattr(self, name) <= 0:
                raise ConfigError(f"training.{name} must be positive, got {getattr(self, name)}")
        if self.learning_rate <= 0:
            raise ConfigError(f"training.learning_rate must be positive, got {self.learning_rate}")
        for name in ("weight_decay", "l1", "min_delta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"training.{name} must be >= 0, got {getattr(self, name)}")


@dataclasses.dataclass(frozen=True)
class EvaluationConfig:
    """What to compute on the test set.

    Attributes:
        working_points: Signal efficiencies at which background rejection is quoted.
        threshold_efficiency: Signal efficiency that defines the working point of the
            binary confusion matrix and the figures of merit.
        n_bootstrap: Bootstrap replicas for the AUC interval (0: none).
    """

    working_points: tuple[float, ...] = (0.3, 0.5)
    threshold_efficiency: float = 0.5
    n_bootstrap: int = 100

    def __post_init__(self) -> None:
        for wp in (*self.working_points, self.threshold_efficiency):
            if not 0 < wp <= 1:
                raise ConfigError(f"evaluation: signal efficiencies must lie in (0, 1], got {wp}")


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
    files: tuple[str, ...]
    tree: str = "tree"
    branches: dict = dataclasses.field(default_factory=dict)
    step_size: int = 20_000
    max_entries: int | None = None

    def __post_init__(self) -> None:
        if not self.files:
            raise ConfigError(f"apply {self.name!r}: give at least one ROOT file")
        if not self.name or "/" in self.name or self.name in (".", ".."):
            raise ConfigError(f"apply: name {self.name!r} must be a plain directory name")
        if self.step_size <= 0:
            raise ConfigError(f"apply {self.name!r}: step_size must be positive, "
                              f"got {self.step_size}")


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
        raise ConfigError(f"{path}: a workflow file is a mapping of sections, got {type(data).__name__}")
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, leaf = dotted.split(".")
        for key in parents:
            node = node.setdefault(key, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override {dotted}: {key} is not a section")
        node[leaf] = value
    data.setdefault("name", path.stem)
    return from_mapping(WorkflowConfig, data, where=path.name)
