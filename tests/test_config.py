"""Workflow configuration: typed, frozen, unknown keys rejected with a suggestion."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from hepml.config import TrainingConfig, WorkflowConfig, from_mapping, load_workflow
from hepml.errors import ConfigError, UnknownKeyError

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def test_shipped_workflows_load():
    files = sorted(WORKFLOWS.glob("*.yaml"))
    assert files
    for f in files:
        cfg = load_workflow(f)
        assert isinstance(cfg, WorkflowConfig)


def test_unknown_key_suggests_nearest(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("task: tagging\ndata: {files: [a.root]}\ntraining: {epohcs: 3}\n")
    with pytest.raises(UnknownKeyError, match="Did you mean 'epochs'"):
        load_workflow(path)


def test_wrong_type_names_the_key():
    with pytest.raises(ConfigError, match="batch_size"):
        from_mapping(TrainingConfig, {"batch_size": "many"}, where="training")
    with pytest.raises(ConfigError, match="optimizer"):
        from_mapping(TrainingConfig, {"optimizer": "adagrad"}, where="training")


def test_frozen_and_overrides(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("task: tagging\ndata: {files: [a.root]}\n")
    cfg = load_workflow(path, {"training.epochs": 2, "seed": 7})
    assert cfg.training.epochs == 2 and cfg.seed == 7 and cfg.name == "w"
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.seed = 3


def test_bad_split_and_labels(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("task: tagging\ndata: {files: [a.root], split: [0.5, 0.6, 0.1]}\n")
    with pytest.raises(ConfigError, match="split"):
        load_workflow(path)
    path.write_text("task: tagging\ndata: {files: [a.root], labels: [a, b], class_names: [x]}\n")
    with pytest.raises(ConfigError, match="class_names"):
        load_workflow(path)
