"""Outputs: checked before any work, written atomically, a failure is one line.

Every command that writes is run in-process through the CLI with an output that cannot be
written: a path under ``/proc`` (which refuses new files, even to root) and a path whose
parent is a regular file. Each must stop before its work (the work functions are replaced
by ones that fail the test), with exit code 2, one line ``hepml CMD: error: cannot
write ...`` on stderr, no traceback, and no file left behind.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import JETS_SAMPLE, SMALL_CALOGAN

from hepml.cli import main
from hepml.errors import OutputError
from hepml.io.atomic import atomic_path, check_writable, write_json
from hepml.models import build_model
from hepml.training.checkpoint import save_checkpoint

JETS = str(JETS_SAMPLE)
JET_DATA = {"files": [JETS], "tree": "tree", "labels": ["label_QCD", "label_Tbqq"],
            "class_names": ["QCD", "top"], "signal_class": "top", "branches": {}}


def _one_line_error(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    rc = main(argv)
    out, err = capsys.readouterr()
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, err
    assert "Traceback" not in err
    assert len(lines) == 1, err
    return lines[0]


def _not_reached(*args: Any, **kwargs: Any) -> Any:
    raise AssertionError("the work started before the output was checked")


@pytest.fixture(params=["proc", "file_parent"])
def bad_dir(request: pytest.FixtureRequest, tmp_path: Path) -> Path:
    """A directory that cannot be made: under /proc, or under a regular file."""
    if request.param == "proc":
        return Path("/proc/x")
    (tmp_path / "bad").mkdir()
    blocker = tmp_path / "bad" / "blocker"
    blocker.write_text("a file, not a directory\n")
    return blocker / "out"


def _nothing_left(bad_dir: Path) -> None:
    blocker = bad_dir.parent
    if blocker.name == "blocker":
        assert blocker.read_text() == "a file, not a directory\n"
        assert sorted(p.name for p in blocker.parent.iterdir()) == ["blocker"]
    else:
        assert not bad_dir.exists()


def _checkpoint(path: Path, kind: str, kwargs: dict[str, Any], config: dict[str, Any]) -> str:
    torch.manual_seed(0)
    model = build_model(kind, **kwargs)
    save_checkpoint(path, {"model": {"kind": kind, "kwargs": kwargs},
                           "model_state": model.state_dict(), "config": config, "epoch": 1})
    return str(path)


def _cnn_checkpoint(path: Path) -> str:
    from hepml.tasks.tagging import build_representation

    rep = build_representation({"kind": "jet_image", "npix": 8})
    kwargs = {"in_channels": int(rep.output_shape[0]), "image_size": [8, 8],
              "conv_channels": [4], "pool_after": [0], "dense": [8]}
    return _checkpoint(path, "cnn", kwargs, {
        "name": "cnn", "data": JET_DATA,
        "representation": {"kind": "jet_image", **rep.to_dict()}})


def _anomaly_checkpoint(path: Path) -> str:
    from hepml.tasks.anomaly import build_representation

    spec = {"kind": "features", "features": ["jet_pt", "jet_eta", "jet_mass"]}
    rep = build_representation(spec)
    return _checkpoint(path, "autoencoder", {"input_dims": 3, "hidden": [4], "latent_dims": 2}, {
        "name": "anomaly", "data": {**JET_DATA, "labels": [], "class_names": [],
                                    "signal_class": None},
        "representation": {"kind": "features", **rep.to_dict()}, "anomaly": {}})


# ------------------------------------------------------------------------ atomic_path


def test_atomic_path_failure_leaves_the_target_and_no_temporary(tmp_path):
    target = tmp_path / "out.json"
    target.write_text("before\n")
    with pytest.raises(RuntimeError, match="stopped"), atomic_path(target) as tmp:
        tmp.write_text("half written")
        raise RuntimeError("stopped")
    assert target.read_text() == "before\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]

    with atomic_path(target) as tmp:
        tmp.write_text("after\n")
    assert target.read_text() == "after\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json"]


def test_atomic_path_blames_only_its_own_files(tmp_path):
    # the output's own error: one OutputError that names the target, no temporary left
    target = tmp_path / "taken"
    target.mkdir()
    with pytest.raises(OutputError, match=f"cannot write {target}: Is a directory"):
        with atomic_path(target) as tmp:
            tmp.write_text("x")
    # an error of another file (an input read while writing) is not an output error
    with pytest.raises(FileNotFoundError) as info, atomic_path(tmp_path / "b.txt") as tmp:
        tmp.write_text("")
        (tmp_path / "missing-input").read_text()
    assert not isinstance(info.value, OutputError)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["taken"]


def test_write_json_and_check_writable(tmp_path, bad_dir):
    data = {"b": [1, 2], "a": Path("x"), "é": 1}
    write_json(tmp_path / "d.json", data, indent=2, sort_keys=False, default=str)
    assert (tmp_path / "d.json").read_text() == json.dumps(
        data, indent=2, sort_keys=False, default=str) + "\n"
    with pytest.raises(OutputError, match=f"cannot write to {bad_dir}: "):
        check_writable(bad_dir)
    with pytest.raises(OutputError, match=f"cannot write {bad_dir / 'x.json'}: "):
        write_json(bad_dir / "x.json", {})
    _nothing_left(bad_dir)
    assert check_writable(tmp_path / "new" / "dir").is_dir()
    assert os.listdir(tmp_path / "new" / "dir") == []


def test_checkpoint_and_tree_writers_raise_one_output_error(tmp_path, bad_dir):
    from hepml.io import write_tree

    with pytest.raises(OutputError, match=f"cannot write {bad_dir / 'c.pt'}: "):
        save_checkpoint(bad_dir / "c.pt", {"epoch": 1})
    with pytest.raises(OutputError, match=f"cannot write {bad_dir / 't.root'}: "):
        write_tree(bad_dir / "t.root", {"x": torch.arange(3).numpy()})
    _nothing_left(bad_dir)


# ------------------------------------------------------------------ commands, in-process


def test_predict_checks_out_before_scoring(tmp_path, bad_dir, capsys, monkeypatch):
    from hepml.tasks import scoring

    ckpt = _cnn_checkpoint(tmp_path / "cnn.pt")
    monkeypatch.setattr(scoring, "_score_on", _not_reached)
    line = _one_line_error(["predict", "--checkpoint", ckpt, JETS, "--out", str(bad_dir / "o"),
                            "--scheduler", "synchronous"], capsys)
    assert line.startswith(f"hepml predict: error: cannot write to {bad_dir / 'o'}: ")
    _nothing_left(bad_dir)


def test_scan_checks_out_before_scoring(tmp_path, bad_dir, capsys, monkeypatch):
    from hepml.tasks import scoring

    ckpt = _anomaly_checkpoint(tmp_path / "ae.pt")
    monkeypatch.setattr(scoring, "_score_on", _not_reached)
    line = _one_line_error(["scan", "--checkpoint", ckpt, JETS, "--out", str(bad_dir / "o"),
                            "--scheduler", "synchronous"], capsys)
    assert line.startswith(f"hepml scan: error: cannot write to {bad_dir / 'o'}: ")
    _nothing_left(bad_dir)


def test_export_checks_out_before_exporting(tmp_path, bad_dir, capsys, monkeypatch):
    pytest.importorskip("onnx")
    pytest.importorskip("onnxscript")
    pytest.importorskip("onnxruntime")
    from hepml.tasks import export

    ckpt = _cnn_checkpoint(tmp_path / "cnn.pt")
    monkeypatch.setattr(export, "load_checkpoint", _not_reached)
    monkeypatch.setattr(export, "_export_model", _not_reached)
    line = _one_line_error(["export", "--checkpoint", ckpt, "--out", str(bad_dir / "m.onnx"),
                            "--n-check", "4"], capsys)
    assert line.startswith(f"hepml export: error: cannot write to {bad_dir}: ")
    _nothing_left(bad_dir)


def test_simulate_checks_out_before_generating(tmp_path, bad_dir, capsys, monkeypatch):
    from hepml.tasks import calosim

    ckpt = _checkpoint(tmp_path / "gan.pt", "calogan", dict(SMALL_CALOGAN), {"calosim": {}})
    monkeypatch.setattr(calosim, "load_generator", _not_reached)
    monkeypatch.setattr(calosim, "generate_like", _not_reached)
    line = _one_line_error(["simulate", "--checkpoint", ckpt, "--n", "3",
                            "--out", str(bad_dir / "s.root")], capsys)
    assert line.startswith(f"hepml simulate: error: cannot write to {bad_dir}: ")
    _nothing_left(bad_dir)


@pytest.mark.parametrize("what, args, module, work", [
    ("jets", ["--n-jets", "1"], "hepml.simulation.jets", "generate_jet_arrays"),
    ("jets", ["--process", "qcd", "top", "--n-jets", "1"], "hepml.simulation.jets",
     "generate_jet_arrays"),
    ("events", ["--n-events", "1"], "hepml.simulation.events", "generate_event_arrays"),
    ("hits", ["--n-events", "1"], "hepml.simulation.tracker", "generate_hit_arrays"),
    ("dqm", ["--n-lumis", "1"], "hepml.simulation.dqm", "_generate"),
    ("showers", ["--n", "1"], "hepml.simulation.showers", "simulate_showers"),
])
def test_generate_checks_out_before_generating(what, args, module, work, bad_dir, capsys,
                                               monkeypatch):
    import importlib

    monkeypatch.setattr(importlib.import_module(module), work, _not_reached)
    line = _one_line_error(["generate", what, *args, "--out", str(bad_dir / "g.root")], capsys)
    assert line.startswith(f"hepml generate: error: cannot write to {bad_dir}: ")
    _nothing_left(bad_dir)
