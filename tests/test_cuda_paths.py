"""Every model family and the trainer on the GPU, against the CPU.

Each test runs on ``cpu`` and, marked ``cuda``, on the GPU (skipped without one;
``benchmarks/gpu_check.sh`` runs them). On the CPU the comparisons are with itself, which
checks the tests' own code; on a GPU they pin what the CUDA paths promise: ``device: auto``
with mixed precision trains and resumes, and models give the CPU's outputs within float32
rounding (TF32 is switched off for the comparison).
"""

from __future__ import annotations

import contextlib
import copy

import pytest
import torch
from conftest import SMALL_CALOGAN as GAN
from conftest import SMALL_CNN

from hepml.config import TrainingConfig
from hepml.models import build_model
from hepml.representations.knn import knn_indices
from hepml.training import ChunkedDataset, Trainer, load_checkpoint

DEVICES = ["cpu", pytest.param("cuda", marks=pytest.mark.cuda)]
CNN = {"kind": "cnn", "kwargs": {**SMALL_CNN["kwargs"], "dropout": 0.0}}



@contextlib.contextmanager
def _no_tf32():
    """Full float32 matrix products on the GPU, so that outputs compare with the CPU's."""
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def _same_on(device: str, model: torch.nn.Module, *inputs: torch.Tensor, rtol: float = 1e-4):
    """The model's outputs on ``device`` equal its CPU outputs (same weights, eval mode)."""
    model = model.eval()
    with torch.no_grad(), _no_tf32():
        want = model(*inputs)
        got = copy.deepcopy(model).to(device)(*(x.to(device) for x in inputs))
    pairs = ([(want, got)] if isinstance(want, torch.Tensor)
             else [(want[k], got[k]) for k in want] if isinstance(want, dict)
             else list(zip(want, got, strict=True)))
    for w, g in pairs:
        assert g.device.type == device
        scale = w.abs().max().clamp_min(1e-6)
        assert ((g.cpu() - w).abs().max() / scale).item() <= rtol


def _images(n, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > x[:, 0, 4:].sum((1, 2))).long()
    return [lambda a=a: (x[a:a + 64], y[a:a + 64]) for a in range(0, n, 64)], \
        [min(64, n - a) for a in range(0, n, 64)]


@pytest.mark.parametrize("device", DEVICES)
def test_auto_mixed_precision_trains_resumes_and_scores_in_float32(tmp_path, device):
    """``device: auto`` picks the GPU with mixed precision; resume continues the same run."""
    def trainer(epochs):
        torch.manual_seed(0)
        cfg = TrainingConfig(epochs=epochs, batch_size=32, device="auto" if device == "cuda"
                             else "cpu", early_stopping_patience=0)
        return Trainer(build_model(CNN["kind"], **CNN["kwargs"]), cfg, run_dir=tmp_path,
                       model_spec=CNN, seed=3)

    def sets():
        return (ChunkedDataset(*_images(256, 0), batch_size=32, shuffle=True, seed=3),
                ChunkedDataset(*_images(128, 1), batch_size=64))

    first = trainer(2)
    assert first.device.type == device and first.amp == (device == "cuda")
    if device == "cuda":
        assert first.device.index is not None
    first.fit(*sets())
    resumed = trainer(3)
    resumed.fit(*sets(), resume=True)
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3]
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in resumed.history)
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert state["epoch"] == 3 and (len(state["rng"]["cuda"]) > 0) == (device == "cuda")
    assert all(s["step"].device.type == "cpu" for s in resumed.optimizer.state.values())
    scores = resumed.predict(ChunkedDataset(*_images(100, 2), batch_size=64))
    assert scores.dtype == torch.float32 and scores.device.type == device
    torch.testing.assert_close(scores.sum(1), torch.ones(100, device=device))


@pytest.mark.parametrize("device", DEVICES)
def test_knn_and_particlenet_match_the_cpu(device):
    g = torch.Generator().manual_seed(0)
    n = 40
    mask = torch.arange(n) < torch.randint(5, n + 1, (16, 1), generator=g)
    points = torch.randn(16, 2, n, generator=g) * mask[:, None]
    feats = torch.randn(16, 7, n, generator=g) * mask[:, None]
    pts = points.transpose(1, 2).contiguous()
    want, want_valid = knn_indices(pts, 8, mask)
    got, got_valid = knn_indices(pts.to(device), 8, mask.to(device))
    assert torch.equal(got.cpu(), want) and torch.equal(got_valid.cpu(), want_valid)
    torch.manual_seed(0)
    model = build_model("particlenet", input_dims=7, num_classes=2, conv_params=[[8, [16, 16]]],
                        fc_params=[[16, 0.0]])
    _same_on(device, model, points, feats, mask)


@pytest.mark.parametrize("device", DEVICES)
def test_event_gnn_edge_classifier_and_autoencoders_match_the_cpu(device):
    g = torch.Generator().manual_seed(1)
    torch.manual_seed(1)
    x = torch.randn(3, 30, 3, generator=g)
    edges = torch.randint(0, 30, (3, 80, 2), generator=g)
    edges[:, 70:] = -1
    attr = torch.randn(3, 80, 6, generator=g) * (edges[..., :1] >= 0)
    _same_on(device, build_model("interaction_network", hidden=16, n_iterations=3),
             x, edges, attr)
    _same_on(device, build_model("autoencoder", input_dims=12, hidden=[16, 8], latent_dims=3),
             torch.randn(20, 12, generator=g))
    _same_on(device, build_model("conv_autoencoder", in_channels=1, image_size=[8, 8],
                                 channels=[4, 8], latent_dims=4),
             torch.rand(20, 1, 8, 8, generator=g))


def _shower_data() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, ChunkedDataset]:
    """128 random showers of 40 cells (2x8, 4x4, 4x2) at 1-100 GeV, and their batches."""
    g = torch.Generator().manual_seed(0)
    energy = 1 + 99 * torch.rand(128, generator=g)
    shares = torch.rand(128, 40, generator=g) * (torch.rand(128, 40, generator=g) < 0.6)
    cells = shares / shares.sum(1, keepdim=True) * 0.9 * energy[:, None]
    part = torch.zeros(128, dtype=torch.long)
    data = ChunkedDataset([lambda: (cells, energy, part, energy)], [128], batch_size=32,
                          shuffle=True, seed=1)
    return cells, energy, part, data


@pytest.mark.parametrize("device", DEVICES)
def test_calogan_trains_with_mixed_precision_and_generates(tmp_path, device):
    cells, energy, part, data = _shower_data()
    torch.manual_seed(0)
    model = build_model("calogan", **GAN)
    model.to(device).initialise_from(cells.to(device), energy.to(device))
    cfg = TrainingConfig(epochs=2, batch_size=32, learning_rate=2e-4, early_stopping_patience=0,
                         device="auto" if device == "cuda" else "cpu")
    t = Trainer(model, cfg, run_dir=tmp_path, model_spec={"kind": "calogan", "kwargs": GAN},
                seed=3, unit="shower")
    assert t.amp == (device == "cuda") and set(t.scalers) == {"discriminator", "generator"}
    t.fit(data, data)
    assert all(torch.isfinite(torch.tensor(h["train_penalty"])) for h in t.history)
    layers = t.module.sample(energy[:64].to(device), part[:64].to(device), check_range=False)
    assert all(x.device.type == device and bool(torch.isfinite(x).all()) for x in layers)
    assert [tuple(x.shape) for x in layers] == [(64, 2, 8), (64, 4, 4), (64, 4, 2)]


@pytest.mark.parametrize("device", DEVICES)
def test_caloflow_trains_and_generates_on_the_device(tmp_path, device):
    """Both flows train (float32, even where mixed precision is on) and sample on the device."""
    from conftest import SMALL_CALOFLOW

    cells, energy, part, data = _shower_data()
    torch.manual_seed(0)
    model = build_model("caloflow", **SMALL_CALOFLOW)
    model.to(device).initialise_from(cells.to(device), energy.to(device))
    cfg = TrainingConfig(epochs=2, batch_size=32, early_stopping_patience=0,
                         device="auto" if device == "cuda" else "cpu")
    t = Trainer(model, cfg, run_dir=tmp_path, model_spec={"kind": "caloflow",
                                                          "kwargs": SMALL_CALOFLOW},
                seed=3, unit="shower")
    t.fit(data, data)
    assert all(torch.isfinite(torch.tensor(h["train_loss"])) for h in t.history)
    gen = torch.Generator(device=device).manual_seed(5)
    layers = t.module.sample(energy[:64].to(device), part[:64].to(device), generator=gen,
                             check_range=False)
    assert all(x.device.type == device and x.dtype == torch.float32
               and bool(torch.isfinite(x).all()) and bool((x >= 0).all()) for x in layers)
    assert [tuple(x.shape) for x in layers] == [(64, 2, 8), (64, 4, 4), (64, 4, 2)]
