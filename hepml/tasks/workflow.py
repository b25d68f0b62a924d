"""The whole workflow, checked before any work: every section typed, per task and kind.

:func:`hepml.config.load_workflow` checks the sections every job shares (data, training,
evaluation, apply). The rest of a workflow belongs to a pluggable part: the
``representation`` section to the representation of its ``kind``, the ``model`` section
to the model family of its ``kind`` (its constructor's hyperparameters, less those set
from the data), and the section named after the task (``tracking``, ``anomaly``, ``dqm``,
``calosim``) to that task. :func:`load` checks all of them against their schemas before a
run directory is made or an input file is opened, so a typo such as
``model: {chanels: 3}`` fails at once, naming the key path and the nearest valid key.
:func:`workflow_schema` assembles the JSON Schema of the whole file (``hepml schema``) for
editors.
"""

from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import pydantic

from hepml.config import (
    WorkflowConfig,
    from_mapping,
    json_schema,
    load_workflow,
    schema_model,
    signature_model,
    validate,
)
from hepml.errors import ConfigError, UnknownKeyError
from hepml.models import MODELS
from hepml.representations import REPRESENTATIONS

__all__ = ["TASKS", "TaskSpec", "load", "check", "model_schema", "workflow_schema"]


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """What a task accepts in a workflow.

    Attributes:
        module: The task's module (its ``run(cfg)``), imported when the task runs.
        representations: Representation kinds it accepts, the default first (empty: the
            task reads its inputs without a representation section).
        models: Model kinds it accepts, the default first.
        section: The dataclass of the task's own section (``None``: none), as
            ``"module:Class"``.
        pairs: Representation kind -> the one model kind that takes its inputs.
    """

    module: str
    representations: tuple[str, ...]
    models: tuple[str, ...]
    section: str | None = None
    pairs: Mapping[str, str] = dataclasses.field(default_factory=dict)


_TAGGING = TaskSpec("hepml.tasks.tagging",
                    ("jet_image", "particle_cloud", "event_graph", "features"),
                    ("cnn", "particlenet", "gnn"))

#: Task name -> what its workflow may hold.
TASKS: dict[str, TaskSpec] = {
    "tagging": _TAGGING,
    "classification": _TAGGING,
    "tracking": TaskSpec("hepml.tasks.tracking", ("hit_graph", "track_sequence"),
                         ("interaction_network", "lstm_tracker"),
                         "hepml.tasks.tracking.task:TrackingConfig",
                         {"hit_graph": "interaction_network",
                          "track_sequence": "lstm_tracker"}),
    "anomaly": TaskSpec("hepml.tasks.anomaly", ("jet_image", "features"),
                        ("autoencoder", "conv_autoencoder"),
                        "hepml.tasks.anomaly:AnomalyConfig",
                        {"jet_image": "conv_autoencoder", "features": "autoencoder"}),
    "dqm": TaskSpec("hepml.tasks.dqm", ("lumisection_maps",),
                    ("conv_autoencoder", "autoencoder"), "hepml.tasks.dqm:DQMConfig"),
    "calosim": TaskSpec("hepml.tasks.calosim", (), ("calogan", "caloflow"),
                        "hepml.tasks.calosim:CaloSimConfig"),
}


def _section_class(spec: TaskSpec) -> type | None:
    if spec.section is None:
        return None
    module, name = spec.section.split(":")
    return getattr(importlib.import_module(module), name)


def model_schema(kind: str) -> type[pydantic.BaseModel]:
    """The schema of a workflow's ``model`` section for model ``kind``.

    The family's constructor arguments, less the ones it takes from the data
    (``data_args``: input sizes, number of classes, shower layout).
    """
    cls = MODELS[kind]
    return signature_model(cls.__init__, f"model ({kind})", doc=cls,
                           exclude=getattr(cls, "data_args", ()),
                           extra={"kind": (Literal[kind], kind)})


def _representation_schema(kind: str) -> type[pydantic.BaseModel]:
    config_cls = REPRESENTATIONS[kind][0]
    base = schema_model(config_cls)
    return pydantic.create_model(f"representation ({kind})", __base__=base,
                                 kind=(Literal[kind], kind))


def _check_kind(section: Mapping[str, Any], accepted: tuple[str, ...], where: str,
                default: str) -> str:
    kind = section.get("kind", default)
    if kind not in accepted:
        raise UnknownKeyError(str(kind), accepted, where=f"{where}.kind")
    return kind


def check(cfg: WorkflowConfig) -> WorkflowConfig:
    """Check the representation, model and task sections of ``cfg`` against their schemas.

    Raises:
        ConfigError: A section holds an unknown key (the nearest valid one suggested), a
            value of the wrong type, or a kind the task does not take.
    """
    spec = TASKS[cfg.task]
    if spec.representations:
        rep_kind = _check_kind(cfg.representation, spec.representations, "representation",
                               spec.representations[0])
        config_cls = REPRESENTATIONS[rep_kind][0]
        rep = {k: v for k, v in cfg.representation.items() if k != "kind"}
        config_cls.from_dict(rep)  # the representation's own checks (schema and values)
    elif cfg.representation:
        raise ConfigError(f"representation: task {cfg.task!r} reads its inputs directly; "
                          "remove the representation section")
    else:
        rep_kind = None
    default_model = spec.pairs.get(rep_kind, spec.models[0]) if rep_kind else spec.models[0]
    model_kind = _check_kind(cfg.model, spec.models, "model", default_model)
    if rep_kind in spec.pairs and spec.pairs[rep_kind] != model_kind:
        raise ConfigError(f"model.kind {model_kind!r} does not take the inputs of "
                          f"representation {rep_kind!r}; use model.kind: {spec.pairs[rep_kind]}")
    data_args = getattr(MODELS[model_kind], "data_args", ())
    for key in cfg.model:
        if key in data_args:
            raise ConfigError(f"model.{key} is set from the data ({model_kind}); remove it")
    validate(model_schema(model_kind), {**cfg.model, "kind": model_kind}, where="model")
    section_cls = _section_class(spec)
    if section_cls is not None:
        from_mapping(section_cls, getattr(cfg, cfg.task), where=cfg.task)
    return cfg


def load(path: str | Path, overrides: Mapping[str, Any] | None = None) -> WorkflowConfig:
    """Read and check a whole workflow file.

    :func:`hepml.config.load_workflow`, then :func:`check`; nothing is written, and
    nothing is read besides the file itself.
    """
    return check(load_workflow(path, overrides))


def workflow_schema() -> dict[str, Any]:
    """The JSON Schema of a workflow file, every pluggable section per kind included."""
    schema = json_schema(WorkflowConfig)
    defs = schema.setdefault("$defs", {})
    props = schema["properties"]

    def add(model: type[pydantic.BaseModel]) -> dict[str, str]:
        sub = model.model_json_schema(ref_template="#/$defs/{model}")
        defs.update(sub.pop("$defs", {}))
        name = model.__name__.replace(" ", "_").replace("(", "").replace(")", "")
        defs[name] = sub
        return {"$ref": f"#/$defs/{name}"}

    reps = sorted({k for s in TASKS.values() for k in s.representations})
    props["representation"] = {
        "description": "How entries become model inputs; keys depend on 'kind'.",
        "oneOf": [add(_representation_schema(k)) for k in reps]}
    models = sorted({k for s in TASKS.values() for k in s.models})
    props["model"] = {"description": "The model family ('kind') and its hyperparameters.",
                      "oneOf": [add(model_schema(k)) for k in models]}
    for task, spec in TASKS.items():
        cls = _section_class(spec)
        if cls is not None and task in props:
            ref = add(schema_model(cls))
            props[task] = {**ref, "description": f"Options of task: {task} (only with it)."}
    schema["required"] = sorted(set(schema.get("required", [])) - {"name"})
    schema["title"] = "hepml workflow"
    return schema
