"""A user's mistake on the command line: one line on stderr naming the path, exit code 2.

Each case runs the CLI in this process (``hepml.cli.main``) on tiny inputs: a directory or
a symbolic link loop given as a data file, a run directory given as ``--checkpoint``.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import write_workflow

from hepml.cli import main
from hepml.errors import InputFileError
from hepml.io import expand_files, open_tree
from hepml.models import build_model
from hepml.training.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parents[1]
JETS = str(ROOT / "data_samples" / "top_qcd_jets.root")


def _one_error_line(capsys: pytest.CaptureFixture[str], code: int, *expected: str) -> str:
    """The one stderr line of a failed command, checked to hold each of ``expected``."""
    err = capsys.readouterr().err
    assert code == 2, err
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    for text in expected:
        assert text in lines[0], lines[0]
    return lines[0]


@pytest.fixture()
def checkpoint(tmp_path: Path) -> Path:
    """A tiny jet-image CNN saved as the trainer saves checkpoints, in a run directory."""
    torch.manual_seed(0)
    kwargs = {"image_size": [8, 8], "conv_channels": [2], "pool_after": [0], "dense": [4]}
    config = {
        "name": "tiny", "task": "tagging",
        "data": {"files": [JETS], "tree": "tree", "labels": ["label_QCD", "label_Tbqq"],
                 "class_names": ["QCD", "top"], "signal_class": "top", "branches": {}},
        "representation": {"kind": "jet_image", "npix": 8},
    }
    model = build_model("cnn", in_channels=1, **kwargs)
    run_dir = tmp_path / "runs" / "tiny-20260101-000000"
    return save_checkpoint(run_dir / "checkpoint_best.pt",
                           {"model": {"kind": "cnn", "kwargs": {"in_channels": 1, **kwargs}},
                            "model_state": model.state_dict(), "config": config, "epoch": 1})


@pytest.fixture()
def loop(tmp_path: Path) -> Path:
    """``a.root`` -> ``b.root`` -> ``a.root``."""
    a, b = tmp_path / "a.root", tmp_path / "b.root"
    a.symlink_to(b)
    b.symlink_to(a)
    return a


# ----------------------------------------------------------------- hepml.io directly


def test_directory_as_a_data_file_names_it(tmp_path):
    with pytest.raises(InputFileError, match="is a directory; give ROOT files or a glob such "
                       "as .*\\*\\.root") as info:
        open_tree(tmp_path, "tree")
    assert str(tmp_path) in str(info.value)


def test_symlink_loop_is_not_no_such_file(loop, tmp_path):
    for call in (lambda: expand_files([str(loop)]), lambda: open_tree(loop, "tree"),
                 lambda: expand_files([str(loop / "x.root")])):
        with pytest.raises(InputFileError, match="symbolic link loop") as info:
            call()
        assert str(loop) in str(info.value) and "no such file" not in str(info.value)
    # a glob lists the looping link; opening it says why it cannot be read
    (path,) = expand_files([str(tmp_path / "a*.root")])
    with pytest.raises(InputFileError, match="symbolic link loop"):
        open_tree(path, "tree")


def test_dangling_symlink_says_where_it_points(tmp_path):
    link = tmp_path / "gone.root"
    link.symlink_to(tmp_path / "elsewhere.root")
    with pytest.raises(InputFileError, match="symbolic link to .*elsewhere.root.*does not exist"):
        expand_files([str(link)])


# ------------------------------------------------------------------------ the command


def test_workflow_with_a_directory_in_data_files(tmp_path, capsys):
    data_dir = tmp_path / "jets"
    data_dir.mkdir()
    workflow = write_workflow(ROOT / "workflows" / "top_tagging_cnn.yaml", tmp_path / "w.yaml",
                              {"training.device": "cpu"}, files=[data_dir],
                              runs_dir=tmp_path / "runs")
    code = main(["-q", "run", str(workflow)])
    _one_error_line(capsys, code, f"{data_dir}: is a directory", f"{data_dir / '*.root'}")
    assert not (tmp_path / "runs").exists()


def test_workflow_with_a_symlink_loop_in_data_files(tmp_path, loop, capsys):
    workflow = write_workflow(ROOT / "workflows" / "top_tagging_cnn.yaml", tmp_path / "w.yaml",
                              {"training.device": "cpu"}, files=[loop],
                              runs_dir=tmp_path / "runs")
    code = main(["-q", "run", str(workflow)])
    line = _one_error_line(capsys, code, f"{loop}: cannot be resolved", "symbolic link loop")
    assert "no such file" not in line


def test_predict_a_directory_names_it(checkpoint, tmp_path, capsys):
    data_dir = tmp_path / "jets"
    data_dir.mkdir()
    code = main(["-q", "predict", "--checkpoint", str(checkpoint), str(data_dir),
                 "--out", str(tmp_path / "out"), "--scheduler", "synchronous"])
    line = _one_error_line(capsys, code, f"{data_dir}: is a directory",
                           f"{data_dir / '*.root'}")
    assert "IsADirectoryError" not in line


@pytest.mark.parametrize("command", ["predict", "export", "scan", "simulate", "dqm"])
def test_run_directory_as_checkpoint(command, checkpoint, tmp_path, capsys):
    run_dir = checkpoint.parent
    argv = {
        "predict": ["predict", "--checkpoint", str(run_dir), JETS, "--out", str(tmp_path / "o")],
        "export": ["export", "--checkpoint", str(run_dir), "--out", str(tmp_path / "m.onnx")],
        "scan": ["scan", "--checkpoint", str(run_dir), JETS, "--out", str(tmp_path / "o")],
        "simulate": ["simulate", "--checkpoint", str(run_dir), "--n", "2",
                     "--out", str(tmp_path / "s.root")],
        "dqm": ["dqm", "--checkpoint", str(run_dir), JETS, "--out", str(tmp_path / "o")],
    }[command]
    code = main(["-q", *argv])
    line = _one_error_line(capsys, code, f"{run_dir}: is a directory; give the checkpoint file",
                           str(checkpoint))
    assert "corrupt" not in line
