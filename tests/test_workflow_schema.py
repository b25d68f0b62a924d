"""The whole workflow typed and checked before any work: hepml validate, hepml schema.

Each mistake is checked end to end through the CLI in-process: exit code 2, one line on
stderr that names the key path (and the nearest valid key), no traceback, and nothing
written (no run directory).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from hepml.cli import main
from hepml.cli._args import parse_branches
from hepml.config import DataConfig, from_mapping
from hepml.errors import ConfigError, UnknownKeyError
from hepml.models import MODELS
from hepml.tasks import workflow

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / "workflows").glob("*.yaml"))


def _cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    rc = main(argv)
    out, err = capsys.readouterr()
    return rc, out, err


def _one_line_error(err: str) -> str:
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert "Traceback" not in err
    return lines[0]


def test_every_shipped_workflow_validates(capsys):
    rc, out, err = _cli(["validate", *map(str, WORKFLOWS)], capsys)
    assert rc == 0, err
    assert out.count(": valid (task ") == len(WORKFLOWS) == 10


@pytest.mark.parametrize("override, where, nearest", [
    ("model.chanels=3", "in model", "conv_channels"),
    ("model.dropuot=0.1", "in model", "dropout"),
    ("representation.npixx=33", "in representation", "npix"),
    ("training.epoch=3", "in training", "epochs"),
    ("data.stepsize=10", "in data", "step_size"),
])
def test_typos_are_named_with_the_nearest_key(override, where, nearest, capsys, tmp_path):
    wf = str(ROOT / "workflows" / "top_tagging_cnn.yaml")
    rc, _, err = _cli(["validate", wf, "--set", override], capsys)
    line = _one_line_error(err)
    assert rc == 2
    assert f"unknown key '{override.split('.')[1].split('=')[0]}' {where}" in line
    assert f"Did you mean '{nearest}'?" in line
    # hepml run with the same typo stops before making anything
    runs = tmp_path / "runs"
    rc, _, err = _cli(["run", wf, "--set", override, "--runs-dir", str(runs)], capsys)
    assert rc == 2 and nearest in _one_line_error(err)
    assert not runs.exists()


@pytest.mark.parametrize("wf, override, message", [
    ("tracking_gnn.yaml", "tracking.edge_treshold=0.5", "Did you mean 'edge_threshold'"),
    ("dqm_monitor.yaml", "dqm.scoree=x", "Did you mean 'score'"),
    ("calogan.yaml", "calosim.classifier={hiden: 3}", "in calosim.classifier"),
    ("anomaly_scan.yaml", "anomaly.backgroud=QCD", "Did you mean 'background'"),
    ("tracking_gnn.yaml", "model.kind=lstm_tracker", "use model.kind: interaction_network"),
    ("top_tagging_cnn.yaml", "model.in_channels=2", "model.in_channels is set from the data"),
    ("top_tagging_cnn.yaml", "model.kind=cnnn", "Did you mean 'cnn'"),
    ("top_tagging_gnn.yaml", "model.preset=lite", "'particlenet' or 'particlenet-lite'"),
    ("top_tagging_cnn.yaml", "model.dropout=high", "model.dropout: input should be a valid"),
    ("top_tagging_cnn.yaml", "training.epochs='3'", "training.epochs: input should be a valid"),
    ("top_tagging_cnn.yaml", "training.epochs=true", "training.epochs: input should be a valid"),
    ("top_tagging_cnn.yaml", "data.max_entries=-3", "data.max_entries: input should be greater"),
    ("top_tagging_cnn.yaml", "data.max_entries=0", "data.max_entries: input should be greater"),
    ("top_tagging_cnn.yaml", "data.split=[0.5, 0.5]", "data.split"),
    ("top_tagging_cnn.yaml", "evaluation.working_points=[0.3, 1.5]",
     "evaluation.working_points[1]: input should be less than or equal to 1"),
    ("top_tagging_cnn.yaml", "data.files=[unclosed", "the value is not valid YAML"),
    ("calogan.yaml", "representation={kind: jet_image}", "reads its inputs directly"),
])
def test_bad_values_are_one_line_errors(wf, override, message, capsys, tmp_path):
    runs = tmp_path / "runs"
    rc, _, err = _cli(["run", str(ROOT / "workflows" / wf), "--set", override,
                       "--runs-dir", str(runs)], capsys)
    assert rc == 2
    assert message in _one_line_error(err)
    assert not runs.exists()


def test_empty_and_non_mapping_workflows(capsys, tmp_path):
    empty = tmp_path / "empty.yaml"
    empty.write_text("")
    rc, _, err = _cli(["validate", str(empty)], capsys)
    assert rc == 2 and _one_line_error(err).endswith("empty.yaml: task: required, but not given")
    listing = tmp_path / "list.yaml"
    listing.write_text("- a\n- b\n")
    rc, _, err = _cli(["validate", str(listing)], capsys)
    assert rc == 2 and "a workflow file is a mapping of sections" in _one_line_error(err)


def test_split_seed_is_typed_and_defaults_to_none():
    data = from_mapping(DataConfig, {"files": ["a.root"]})
    assert data.split_seed is None
    assert from_mapping(DataConfig, {"files": ["a.root"], "split_seed": 4}).split_seed == 4
    with pytest.raises(ConfigError, match="split_seed"):
        from_mapping(DataConfig, {"files": ["a.root"], "split_seed": 1.5})


def test_schema_describes_every_section_and_kind(capsys, tmp_path):
    out = tmp_path / "schema.json"
    rc, printed, _ = _cli(["schema", "-o", str(out)], capsys)
    assert rc == 0 and str(out) in printed
    schema = json.loads(out.read_text())
    assert schema["additionalProperties"] is False
    defs = schema["$defs"]
    kinds = {}
    for ref in schema["properties"]["model"]["oneOf"]:
        sub = defs[ref["$ref"].split("/")[-1]]
        kinds[sub["properties"]["kind"]["const"]] = sub
        assert sub["additionalProperties"] is False
    assert set(kinds) == set(MODELS)
    # the CNN's own hyperparameters, documented; the sizes set from the data are absent
    cnn = kinds["cnn"]["properties"]
    assert "conv_channels" in cnn and cnn["conv_channels"].get("description")
    assert not {"in_channels", "image_size", "num_classes"} & set(cnn)
    reps = {defs[r["$ref"].split("/")[-1]]["properties"]["kind"]["const"]
            for r in schema["properties"]["representation"]["oneOf"]}
    assert {"jet_image", "particle_cloud", "event_graph", "hit_graph", "track_sequence",
            "features", "lumisection_maps"} == reps
    for section in ("tracking", "anomaly", "dqm", "calosim"):
        assert "$ref" in schema["properties"][section]
    # every top-level key of every shipped workflow is in the schema
    for wf in WORKFLOWS:
        assert set(yaml.safe_load(wf.read_text())) <= set(schema["properties"])


def test_model_schema_matches_the_constructors():
    """Each family's schema holds exactly its constructor's arguments less ``data_args``."""
    import inspect

    for kind, cls in MODELS.items():
        params = set(inspect.signature(cls.__init__).parameters) - {"self"}
        fields = set(workflow.model_schema(kind).model_fields) - {"kind"}
        assert fields == params - set(cls.data_args), kind
        assert set(cls.data_args) <= params, kind


def test_check_accepts_a_model_section_without_kind(tmp_path):
    path = tmp_path / "w.yaml"
    path.write_text("task: tracking\ndata: {files: [a.root]}\n"
                    "representation: {kind: track_sequence}\nmodel: {hidden_size: 8}\n")
    cfg = workflow.load(path)
    assert cfg.model == {"hidden_size": 8}
    path.write_text("task: tracking\ndata: {files: [a.root]}\n"
                    "representation: {kind: track_sequence}\nmodel: {hiden_size: 8}\n")
    with pytest.raises(UnknownKeyError, match="hidden_size"):
        workflow.load(path)


@pytest.mark.parametrize("text, want", [
    ("{part_px: PF_px, jet_pt: pt(J_px, J_py)}", {"part_px": "PF_px", "jet_pt": "pt(J_px, J_py)"}),
    ("{jet_pt: 'AnalysisJetsAuxDyn:pt'}", {"jet_pt": "AnalysisJetsAuxDyn:pt"}),
    ("{jet_pt: AnalysisJetsAuxDyn:pt}", {"jet_pt": "AnalysisJetsAuxDyn:pt"}),
    ("part_px: PF_px", {"part_px": "PF_px"}),
])
def test_branch_mappings_on_the_command_line(text, want):
    assert parse_branches(text) == want


@pytest.mark.parametrize("text", ["{a}", "[1, 2]", "{a: [unclosed", "{a: 1}x"])
def test_bad_branch_mappings_are_config_errors(text):
    with pytest.raises(ConfigError, match="--branches"):
        parse_branches(text)


@pytest.mark.parametrize("argv", [
    ["predict", "--checkpoint", "c.pt", "f.root", "--out", "o", "--batch-size", "0"],
    ["predict", "--checkpoint", "c.pt", "f.root", "--out", "o", "--step-size", "-1"],
    ["scan", "--checkpoint", "c.pt", "f.root", "--out", "o", "--top", "0"],
    ["export", "c.pt", "--out", "m.onnx", "--n-check", "x"],
])
def test_bad_sizes_are_usage_errors_before_any_work(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and ("must be at least 1" in err or "whole number" in err)


def test_branch_parse_error_is_one_error_up_front(capsys, tmp_path):
    rc, _, err = _cli(["predict", "--checkpoint", str(tmp_path / "c.pt"), "f.root",
                       "--out", str(tmp_path / "o"), "--branches", "{a}"], capsys)
    assert rc == 2 and "--branches: 'a' is not 'field: branch'" in _one_line_error(err)
    assert not (tmp_path / "o").exists()


def test_run_into_a_place_that_cannot_be_written(capsys):
    """``--runs-dir`` under /proc (refuses new files even for root): one line, exit 2."""
    wf = str(ROOT / "workflows" / "top_tagging_cnn.yaml")
    rc, _, err = _cli(["run", wf, "--runs-dir", "/proc/hepml-test/runs",
                       "--set", "data.max_entries=50"], capsys)
    line = _one_line_error(err)
    assert rc == 2 and "cannot make the run directory /proc/hepml-test/runs/" in line


def test_third_party_info_chatter_stays_out_of_the_log(monkeypatch):
    """The font-fallback INFO lines of matplotlib reach the log only with -vv."""
    import logging

    monkeypatch.chdir(ROOT)
    for argv, quiet in ((["validate", "workflows/top_tagging_cnn.yaml"], True),
                        (["-vv", "validate", "workflows/top_tagging_cnn.yaml"], False)):
        logging.getLogger("matplotlib").setLevel(logging.NOTSET)
        assert main(argv) == 0
        level = logging.getLogger("matplotlib").level  # its own level, not the root's
        assert (level >= logging.WARNING) if quiet else level == logging.NOTSET
