"""The library as a notebook uses it: the top-level namespace, and the Trainer on plain batches."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from conftest import ROOT
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import hepml
from hepml.errors import BadValueError, ConfigError, EmptyInputError, UnknownKeyError
from hepml.training import ChunkedDataset


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny networks run fastest on one thread (and the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_every_public_name_resolves():
    assert hepml.__all__[0] == "__version__"
    assert set(hepml.__all__) - {"__version__"} == set(hepml._API)
    assert len(set(hepml.__all__)) == len(hepml.__all__)
    for name in hepml.__all__:
        value = getattr(hepml, name)
        if name != "__version__":
            module = sys.modules[f"hepml.{hepml._API[name]}"]
            assert value is getattr(module, name), name
    assert set(hepml.__all__) <= set(dir(hepml))
    assert {"io", "training", "evaluation"} <= set(dir(hepml))
    assert hepml.io.read is hepml.read  # subpackages stay reachable as attributes


def test_unknown_name_is_an_attribute_error():
    name = "no_such_thing"
    with pytest.raises(AttributeError, match=name):
        getattr(hepml, name)
    assert not hasattr(hepml, "Trainer_")


def test_import_hepml_stays_cheap():
    code = ("import sys, hepml; heavy = {'torch', 'uproot', 'awkward', 'numpy', 'pydantic'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"


# ---------------------------------------------------------------- Trainer on plain batches
#: A small problem whose validation loss is lowest in the middle of six epochs: the
#: training labels are 45 % flipped, so the network soon fits their noise.
CFG = {"epochs": 6, "device": "cpu", "learning_rate": 0.03, "early_stopping_patience": 0}


def _tensors(n, seed, flip=0.0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 4, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long()
    return x, torch.where(torch.rand(n, generator=g) < flip, 1 - y, y)


def _batches(n, seed, flip=0.0, size=16):
    x, y = _tensors(n, seed, flip)
    return [(x[a:a + size], y[a:a + size]) for a in range(0, n, size)]


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 32), nn.ReLU(), nn.Linear(32, 2))


def _val_loss(model, batches):
    with torch.no_grad():
        total = sum(float(nn.functional.cross_entropy(model(x), y)) * len(y) for x, y in batches)
    return total / sum(len(y) for _, y in batches)


def test_fit_on_a_list_writes_nothing_and_load_best_restores_the_best_epoch(tmp_path,
                                                                             monkeypatch):
    monkeypatch.chdir(tmp_path)
    train, val = _batches(64, 0, flip=0.45), _batches(64, 1)
    t = hepml.Trainer(_model(), CFG, seed=1)
    assert t.run_dir is None and t.config == hepml.TrainingConfig(**CFG)
    hist = t.fit(train, val)
    assert [r["epoch"] for r in hist] == [1, 2, 3, 4, 5, 6]
    assert 1 < t.best_epoch < len(hist), "the problem must have its best epoch in the middle"
    last = {k: v.clone() for k, v in t.module.state_dict().items()}
    t.load_best()
    # an independent record of that epoch's weights: the same training stopped there
    ref = hepml.Trainer(_model(), {**CFG, "epochs": t.best_epoch}, seed=1)
    ref.fit(train, val)
    assert [r["val_loss"] for r in ref.history] == [r["val_loss"] for r in hist[:t.best_epoch]]
    best = t.module.state_dict()
    assert all(torch.equal(best[k], v) for k, v in ref.module.state_dict().items())
    assert not all(torch.equal(best[k], v) for k, v in last.items())
    best_loss = min(r["val_loss"] for r in hist)
    assert _val_loss(t.module, val) == pytest.approx(best_loss, rel=1e-6)
    assert hist[t.best_epoch - 1]["val_loss"] == best_loss
    assert list(tmp_path.iterdir()) == []


def test_fit_and_predict_on_dataloaders(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    x, y = _tensors(256, 0)
    xv, yv = _tensors(96, 1)
    train = DataLoader(TensorDataset(x, y), batch_size=32, shuffle=True)
    val = DataLoader(TensorDataset(xv, yv), batch_size=40)
    t = hepml.Trainer(_model(), {**CFG, "epochs": 4, "learning_rate": 0.01}, seed=1)
    hist = t.fit(train, val)
    assert len(hist) == 4 and hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert hist[-1]["val_accuracy"] > 0.8
    # the DataLoader's shuffling follows the trainer's seed: a second run repeats the first
    again = hepml.Trainer(_model(), {**CFG, "epochs": 4, "learning_rate": 0.01}, seed=1)
    assert [r["val_loss"] for r in again.fit(train, val)] == [r["val_loss"] for r in hist]
    t.load_best()
    scores = t.predict(val)
    assert scores.shape == (96, 2)
    assert torch.allclose(scores.sum(1), torch.ones(96))
    assert torch.equal(scores, t.predict([(xv[:50], yv[:50]), (xv[50:], yv[50:])]))
    assert list(tmp_path.iterdir()) == []


def test_chunked_data_without_a_run_directory_train_as_with_one(tmp_path):
    x, y = _tensors(256, 0, flip=0.2)
    xv, yv = _tensors(128, 1)

    def sets():
        return (ChunkedDataset([lambda: (x[:128], y[:128]), lambda: (x[128:], y[128:])],
                               [128, 128], batch_size=32, shuffle=True, seed=3),
                ChunkedDataset([lambda: (xv, yv)], [128], batch_size=64))

    with_dir = hepml.Trainer(_model(), CFG, run_dir=tmp_path / "run", seed=1)
    without = hepml.Trainer(_model(), CFG, seed=1)
    a, b = with_dir.fit(*sets()), without.fit(*sets())
    assert [r["val_loss"] for r in a] == [r["val_loss"] for r in b]
    with_dir.load_best()
    without.load_best()
    assert all(torch.equal(v, without.module.state_dict()[k])
               for k, v in with_dir.module.state_dict().items())
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "checkpoint_best.pt", "checkpoint_last.pt"]
    assert torch.equal(with_dir.predict(sets()[1]), without.predict(sets()[1]))


def test_resume_without_a_run_directory_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    t = hepml.Trainer(_model(), CFG)
    with pytest.raises(ConfigError, match="no run directory"):
        t.fit(_batches(32, 0), _batches(32, 1), resume=True)
    assert t.history == [] and list(tmp_path.iterdir()) == []


def test_config_mapping_is_checked():
    with pytest.raises(UnknownKeyError, match="learning_rate"):
        hepml.Trainer(_model(), {"learnig_rate": 0.1})
    with pytest.raises(ConfigError, match="epochs"):
        hepml.Trainer(_model(), {"epochs": "many"})
    with pytest.raises(ConfigError, match="TrainingConfig"):
        hepml.Trainer(_model(), 5)


def test_batches_that_cannot_be_trained_on():
    t = hepml.Trainer(_model(), {**CFG, "epochs": 1})
    val = _batches(32, 1)
    with pytest.raises(ConfigError, match="re-iterable"):
        t.fit((b for b in _batches(32, 0)), val)
    with pytest.raises(ConfigError, match="re-iterable"):
        t.predict(iter(val))
    with pytest.raises(BadValueError, match=r"tuple \(input, \.\.\., target\)"):
        t.fit([x for x, _ in _batches(32, 0)], val)
    with pytest.raises(BadValueError, match="ndarray"):
        t.fit([(x.numpy(), y) for x, y in _batches(32, 0)], val)
    with pytest.raises(EmptyInputError, match="no entries"):
        t.fit([], val)


def test_under_torchrun_only_chunked_data(monkeypatch):
    t = hepml.Trainer(_model(), {**CFG, "epochs": 1})
    monkeypatch.setattr(t, "distributed", True)  # as under torchrun, without starting ranks
    with pytest.raises(ConfigError, match="under torchrun.*ChunkedDataset"):
        t.fit(_batches(32, 0), _batches(32, 1))
    with pytest.raises(ConfigError, match="under torchrun.*ChunkedDataset"):
        t.predict(_batches(32, 1))


def test_checkpoint_without_model_spec_is_a_clear_error():
    """A checkpoint saved without ``model_spec`` cannot rebuild its model: CheckpointError."""
    from hepml.errors import CheckpointError
    from hepml.training.checkpoint import model_from_checkpoint

    with pytest.raises(CheckpointError, match="does not describe its model"):
        model_from_checkpoint({"model": None, "model_state": {}}, source="c.pt")
