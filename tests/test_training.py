"""The shared trainer: optimizers, penalties, early stopping, checkpoints and exact resume."""

from __future__ import annotations

import math

import pytest
import torch

from hepml.config import TrainingConfig
from hepml.errors import CheckpointError, ConfigError
from hepml.models import build_model
from hepml.training import ChunkedDataset, Trainer, load_checkpoint, resolve_device

SPEC = {"kind": "cnn", "kwargs": {"image_size": [8, 8], "conv_channels": [4, 4],
                                  "pool_after": [1], "dense": [16], "dropout": 0.2}}


def _data(n=512, seed=0, chunk=128):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > x[:, 0, 4:].sum((1, 2))).long()
    loaders = [lambda a=a: (x[a:a + chunk], y[a:a + chunk]) for a in range(0, n, chunk)]
    return loaders, [min(chunk, n - a) for a in range(0, n, chunk)]


def _trainer(tmp_path, **overrides):
    torch.manual_seed(0)
    cfg = TrainingConfig(**{"epochs": 4, "batch_size": 32, "device": "cpu",
                            "early_stopping_patience": 0, **overrides})
    model = build_model(SPEC["kind"], **SPEC["kwargs"])
    return Trainer(model, cfg, run_dir=tmp_path, model_spec=SPEC, run_config={"x": 1}, seed=3)


def _sets():
    tr, tl = _data(512, 0)
    va, vl = _data(256, 1)
    return (ChunkedDataset(tr, tl, batch_size=32, shuffle=True, seed=3),
            ChunkedDataset(va, vl, batch_size=64))


@pytest.mark.parametrize("optimizer", ["adam", "adamw", "sgd", "rmsprop"])
def test_every_optimizer_learns(tmp_path, optimizer):
    lr = 0.05 if optimizer == "sgd" else 3e-3
    t = _trainer(tmp_path, optimizer=optimizer, learning_rate=lr, epochs=6, scheduler="cosine")
    hist = t.fit(*_sets())
    assert hist[-1]["val_loss"] < hist[0]["val_loss"]
    assert hist[-1]["val_accuracy"] > 0.75


def test_checkpoint_contents(tmp_path):
    t = _trainer(tmp_path, epochs=2)
    t.fit(*_sets())
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["model"] == SPEC and state["epoch"] == 2 and state["config"] == {"x": 1}
    assert {"optimizer_state", "rng", "history", "best_val_loss", "versions"} <= set(state)
    assert (tmp_path / "checkpoint_best.pt").exists()


def test_resume_equals_uninterrupted(tmp_path):
    full = _trainer(tmp_path / "full")
    full.fit(*_sets())
    part = _trainer(tmp_path / "part", epochs=2)
    part.fit(*_sets())
    resumed = _trainer(tmp_path / "part", epochs=4)
    resumed.fit(*_sets(), resume=True)
    assert [h["val_loss"] for h in resumed.history] == [h["val_loss"] for h in full.history]
    for a, b in zip(full.module.state_dict().values(), resumed.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_early_stopping(tmp_path):
    t = _trainer(tmp_path, epochs=50, early_stopping_patience=2, learning_rate=0.05,
                 optimizer="sgd", momentum=0.0)
    # validation labels unrelated to inputs: validation loss stops improving quickly
    tr, tl = _data(256, 0)
    g = torch.Generator().manual_seed(9)
    xv, yv = torch.randn(128, 1, 8, 8, generator=g), torch.randint(0, 2, (128,), generator=g)
    hist = t.fit(ChunkedDataset(tr, tl, batch_size=32, shuffle=True),
                 ChunkedDataset([lambda: (xv, yv)], [128], batch_size=64))
    assert len(hist) < 50
    assert t.bad_epochs == 2
    assert t.best_epoch == min(range(len(hist)), key=lambda i: hist[i]["val_loss"]) + 1


def test_l1_l2_shrink_weights(tmp_path):
    def norm(**kw):
        t = _trainer(tmp_path / str(kw), epochs=3, **kw)
        t.fit(*_sets())
        return sum(p.abs().sum().item() for p in t.module.parameters() if p.ndim > 1)

    base = norm()
    assert norm(l1=1e-3) < base
    assert norm(weight_decay=0.5) < base


def test_truncated_checkpoint(tmp_path):
    t = _trainer(tmp_path, epochs=1)
    t.fit(*_sets())
    data = (tmp_path / "checkpoint_last.pt").read_bytes()
    (tmp_path / "checkpoint_last.pt").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="cut short"):
        load_checkpoint(tmp_path / "checkpoint_last.pt")
    with pytest.raises(CheckpointError, match="cut short"):
        _trainer(tmp_path, epochs=2).fit(*_sets(), resume=True)
    (tmp_path / "junk.pt").write_text("junk")
    with pytest.raises(CheckpointError):
        load_checkpoint(tmp_path / "junk.pt")


def test_checkpoint_of_another_model(tmp_path):
    t = _trainer(tmp_path, epochs=1)
    t.fit(*_sets())
    other = dict(SPEC, kwargs={**SPEC["kwargs"], "dense": [8]})
    t2 = Trainer(build_model("cnn", **other["kwargs"]), TrainingConfig(device="cpu"),
                 run_dir=tmp_path, model_spec=other)
    with pytest.raises(CheckpointError, match="holds model"):
        t2.fit(*_sets(), resume=True)


def test_devices():
    assert resolve_device("cpu").type == "cpu"
    assert resolve_device("auto").type in {"cpu", "cuda", "mps"}
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA"):
            resolve_device("cuda")


def test_divergence_is_reported(tmp_path):
    t = _trainer(tmp_path, epochs=3, learning_rate=1e12, optimizer="sgd")
    with pytest.raises(ConfigError, match="diverged"):
        t.fit(*_sets())


@pytest.mark.cuda
def test_mixed_precision_on_cuda(tmp_path):
    t = _trainer(tmp_path, epochs=2, device="cuda", mixed_precision=True)
    hist = t.fit(*_sets())
    assert t.amp and math.isfinite(hist[-1]["val_loss"])


def test_epoch_log_names_the_unit(tmp_path, caplog):
    torch.manual_seed(0)
    model = build_model(SPEC["kind"], **SPEC["kwargs"])
    t = Trainer(model, TrainingConfig(epochs=1, batch_size=32, device="cpu"), run_dir=tmp_path,
                model_spec=SPEC, seed=3, unit="event")
    with caplog.at_level("INFO", logger="hepml.training.trainer"):
        t.fit(*_sets())
    lines = [m for m in (r.getMessage() for r in caplog.records) if m.startswith("epoch 1/1")]
    assert len(lines) == 1 and " events/s" in lines[0]
