"""Dense and convolutional autoencoders: shapes, normalisation, loss, scores, training."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from sklearn.metrics import roc_auc_score
from torch.distributions import Normal, kl_divergence

from hepml.config import TrainingConfig
from hepml.errors import ConfigError
from hepml.models._registry import MODELS, build_model
from hepml.models.autoencoder import ConvAutoencoder, DenseAutoencoder
from hepml.training import ChunkedDataset, Trainer, load_checkpoint

IMAGE_SIZES = [(40, 40), (37, 37), (40, 36), (10, 36)]


def _same_weights(dst: torch.nn.Module, src: torch.nn.Module) -> None:
    """Copy the learned weights of ``src`` into ``dst``, leaving the normalisation."""
    state = {k: v for k, v in src.state_dict().items() if k not in ("shift", "scale")}
    missing, unexpected = dst.load_state_dict(state, strict=False)
    assert set(missing) == {"shift", "scale"} and not unexpected


def _normalized_model(model, gen):
    shape = model.entry_shape
    shift = torch.randn(shape, generator=gen)
    scale = 0.5 + torch.rand(shape, generator=gen) * 3
    model.set_normalization(shift, scale)
    return shift, scale


def test_registered():
    """Both models are built by name."""
    assert MODELS["autoencoder"] is DenseAutoencoder
    assert MODELS["conv_autoencoder"] is ConvAutoencoder


@pytest.mark.parametrize("variational", [False, True])
def test_dense_shapes(variational):
    """Dense outputs and scores have the documented keys and shapes."""
    torch.manual_seed(0)
    model = DenseAutoencoder(12, hidden=(16, 8), latent_dims=3, variational=variational)
    x = torch.randn(5, 12)
    for mode in (True, False):
        out = model.train(mode)(x)
        expected = {"reconstruction", "latent"} | ({"mu", "logvar"} if variational else set())
        assert set(out) == expected
        assert out["reconstruction"].shape == x.shape
        assert all(out[k].shape == (5, 3) for k in expected - {"reconstruction"})
    scores = model.anomaly_scores(x)
    assert scores["reconstruction_error"].shape == (5,)
    assert scores["squared_error"].shape == scores["residual"].shape == x.shape
    assert ("kl" in scores) == variational
    if variational:
        assert scores["kl"].shape == (5,)


@pytest.mark.parametrize("variational", [False, True])
@pytest.mark.parametrize("size", IMAGE_SIZES)
def test_conv_shapes(size, variational):
    """Images of any size come back with their own size."""
    torch.manual_seed(0)
    model = ConvAutoencoder(in_channels=2, image_size=size, channels=(4, 8), latent_dims=5,
                            variational=variational)
    x = torch.randn(3, 2, *size)
    for mode in (True, False):
        out = model.train(mode)(x)
        assert out["reconstruction"].shape == x.shape
        assert out["latent"].shape == (3, 5)
        if variational:
            assert out["mu"].shape == out["logvar"].shape == (3, 5)
    scores = model.anomaly_scores(x)
    assert scores["reconstruction_error"].shape == (3,)
    assert scores["squared_error"].shape == scores["residual"].shape == x.shape
    assert scores["reconstruction"].shape == x.shape


@pytest.mark.parametrize(("size", "padded", "pad"), [
    ((37, 37), (40, 40), (1, 2, 1, 2)),  # (left, right, top, bottom)
    ((10, 36), (12, 36), (0, 0, 1, 1)),
    ((13, 6), (16, 8), (1, 1, 1, 2)),
])
def test_conv_pad_and_crop(size, padded, pad):
    """An odd-sized image is the centre of a zero-padded one of a divisible size."""
    torch.manual_seed(1)
    ref = ConvAutoencoder(image_size=padded, channels=(4, 8), latent_dims=6).eval()
    model = ConvAutoencoder(image_size=size, channels=(4, 8), latent_dims=6).eval()
    _same_weights(model, ref)
    x = torch.randn(4, 1, *size)
    with torch.no_grad():
        expected = ref(F.pad(x, pad))["reconstruction"]
        got = model(x)["reconstruction"]
    left, top = pad[0], pad[2]
    torch.testing.assert_close(got, expected[:, :, top:top + size[0], left:left + size[1]])


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_normalization_is_applied_and_undone(kind):
    """With shift s and scale c the model is the unnormalised one on (x - s) / c."""
    gen = torch.Generator().manual_seed(2)
    torch.manual_seed(2)
    if kind == "dense":
        model, plain = DenseAutoencoder(6, latent_dims=2), DenseAutoencoder(6, latent_dims=2)
        x = torch.randn(7, 6, generator=gen) * 10 + 3
    else:
        model = ConvAutoencoder(image_size=(9, 11), channels=(4,), latent_dims=3)
        plain = ConvAutoencoder(image_size=(9, 11), channels=(4,), latent_dims=3)
        x = torch.randn(7, 1, 9, 11, generator=gen) * 10 + 3
    _same_weights(plain, model)
    shift, scale = _normalized_model(model, gen)
    model.eval()
    plain.eval()
    with torch.no_grad():
        out = model(x)
        ref = plain((x - shift) / scale)
    torch.testing.assert_close(out["reconstruction"], ref["reconstruction"] * scale + shift)
    torch.testing.assert_close(out["latent"], ref["latent"])


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_kl_score_matches_torch_distributions(kind):
    """The ``kl`` score is KL(N(mu, sigma) || N(0, 1)) summed over the code."""
    torch.manual_seed(3)
    if kind == "dense":
        model = DenseAutoencoder(8, latent_dims=4, variational=True)
        x = torch.randn(20, 8) * 3
    else:
        model = ConvAutoencoder(image_size=(10, 12), channels=(4,), latent_dims=4, variational=True)
        x = torch.randn(20, 1, 10, 12) * 3
    model.eval()
    with torch.no_grad():
        out = model(x)
    assert not torch.allclose(out["logvar"], torch.zeros_like(out["logvar"]))
    sigma = torch.exp(0.5 * out["logvar"])
    expected = kl_divergence(Normal(out["mu"], sigma), Normal(0.0, 1.0)).sum(-1)
    model.train()
    scores = model.anomaly_scores(x)
    assert model.training  # the previous mode is restored
    torch.testing.assert_close(scores["kl"], expected)
    torch.testing.assert_close(scores["latent"], out["mu"])  # eval: z = mu


def test_reparametrisation_samples_gaussian_code():
    """In training z = mu + sigma * eps: (z - mu) / sigma is standard normal."""
    torch.manual_seed(4)
    model = DenseAutoencoder(5, hidden=(8,), latent_dims=3, variational=True).train()
    x = torch.randn(4000, 5)
    with torch.no_grad():
        out = model(x)
    eps = (out["latent"] - out["mu"]) / torch.exp(0.5 * out["logvar"])
    assert eps.mean().abs() < 0.03
    assert abs(eps.std().item() - 1) < 0.03
    with torch.no_grad():
        ev = model.eval()(x)
    torch.testing.assert_close(ev["latent"], ev["mu"])


@pytest.mark.parametrize("kind", ["dense", "conv"])
def test_loss_matches_hand_computation(kind):
    """Normalised MSE + beta KL / D + sparsity mean |z|, term by term."""
    gen = torch.Generator().manual_seed(5)
    torch.manual_seed(5)
    beta, lam = 0.7, 0.3
    if kind == "dense":
        kwargs = {"input_dims": 9, "hidden": [12], "latent_dims": 3}
        name, x = "autoencoder", torch.randn(16, 9, generator=gen) * 4 + 1
    else:
        kwargs = {"in_channels": 2, "image_size": [7, 10], "channels": [3], "latent_dims": 3}
        name, x = "conv_autoencoder", torch.randn(16, 2, 7, 10, generator=gen) * 4 + 1
    vae = build_model(name, **kwargs, variational=True, beta=beta)
    sparse_vae = build_model(name, **kwargs, variational=True, beta=beta, sparsity=lam)
    plain = build_model(name, **kwargs)
    _, scale = _normalized_model(vae, gen)
    sparse_vae.load_state_dict(vae.state_dict())
    plain.set_normalization(vae.shift, vae.scale)
    out = vae.train()(x)  # sampled code: the loss must use what forward returned
    d = x[0].numel()
    mse = (((x - out["reconstruction"]) / scale) ** 2).mean()
    kl = kl_divergence(Normal(out["mu"], torch.exp(0.5 * out["logvar"])), Normal(0.0, 1.0))
    expected = mse + beta * kl.sum(-1).mean() / d
    torch.testing.assert_close(vae.loss(out, x), expected)
    torch.testing.assert_close(sparse_vae.loss(out, x) - vae.loss(out, x),
                               lam * out["latent"].abs().mean())
    plain_out = {"reconstruction": out["reconstruction"], "latent": out["latent"]}
    torch.testing.assert_close(plain.loss(plain_out, x), mse)
    vae.loss(out, x).backward()  # differentiable through every term
    assert all(p.grad is not None for p in vae.parameters())


def test_anomaly_scores_against_eval_forward():
    """Scores are the normalised errors of the evaluation-mode reconstruction."""
    gen = torch.Generator().manual_seed(6)
    torch.manual_seed(6)
    model = ConvAutoencoder(image_size=(11, 9), channels=(4, 4), latent_dims=4, denoise_std=0.3)
    _, scale = _normalized_model(model, gen)
    x = torch.randn(10, 1, 11, 9, generator=gen)
    with torch.no_grad():
        rec = model.eval()(x)["reconstruction"]
    model.train()
    scores = model.anomaly_scores(x)
    assert model.training
    residual = (x - rec) / scale
    torch.testing.assert_close(scores["reconstruction"], rec)
    torch.testing.assert_close(scores["residual"], residual)
    torch.testing.assert_close(scores["squared_error"], residual**2)
    torch.testing.assert_close(scores["reconstruction_error"], (residual**2).mean((1, 2, 3)))
    assert not scores["reconstruction_error"].requires_grad
    batched = model.anomaly_scores(x, batch_size=3)
    for key, value in scores.items():
        torch.testing.assert_close(batched[key], value)


def test_set_normalization_fixes_bad_scales_and_round_trips(tmp_path):
    """Bad scales become 1; the buffers travel with the weights."""
    kwargs = {"in_channels": 2, "image_size": [5, 4], "channels": [3], "latent_dims": 2}
    model = build_model("conv_autoencoder", **kwargs)
    assert torch.equal(model.shift, torch.zeros(2, 5, 4))
    assert torch.equal(model.scale, torch.ones(2, 5, 4))
    scale = torch.full((2, 5, 4), 2.5)
    scale[0, 1, 1], scale[1, 2, 3], scale[0, 4, 0], scale[1, 0, 0] = 0.0, math.nan, -1.0, math.inf
    model.set_normalization(torch.tensor([1.0, -2.0]).view(2, 1, 1), scale)
    assert model.shift[0].eq(1.0).all() and model.shift[1].eq(-2.0).all()
    fixed = scale.clone()
    fixed[0, 1, 1] = fixed[1, 2, 3] = fixed[0, 4, 0] = fixed[1, 0, 0] = 1.0
    assert torch.equal(model.scale, fixed)
    with pytest.raises(ValueError, match="broadcast"):
        model.set_normalization(torch.zeros(3), 1.0)

    torch.save(model.state_dict(), tmp_path / "w.pt")
    rebuilt = build_model("conv_autoencoder", **kwargs)
    rebuilt.load_state_dict(torch.load(tmp_path / "w.pt"))
    assert torch.equal(rebuilt.shift, model.shift) and torch.equal(rebuilt.scale, fixed)
    x = torch.randn(3, 2, 5, 4)
    torch.testing.assert_close(rebuilt.anomaly_scores(x)["reconstruction"],
                               model.anomaly_scores(x)["reconstruction"])

    dense = DenseAutoencoder(3)
    dense.set_normalization(0.5, torch.tensor([0.0, 4.0, math.nan]))
    assert torch.equal(dense.shift, torch.full((3,), 0.5))
    assert torch.equal(dense.scale, torch.tensor([1.0, 4.0, 1.0]))


@pytest.mark.parametrize("make", [
    lambda: DenseAutoencoder(6, latent_dims=2, denoise_std=0.5),
    lambda: DenseAutoencoder(6, latent_dims=2, denoise_std=0.5, variational=True),
    lambda: ConvAutoencoder(image_size=(6, 6), channels=(2,), latent_dims=2, denoise_std=0.5),
], ids=["dense", "dense-vae", "conv"])
def test_denoising_only_in_training(make):
    """Evaluation is deterministic; training with noise is not."""
    torch.manual_seed(10)
    model = make()
    x = torch.randn(4, *model.entry_shape)
    with torch.no_grad():
        model.eval()
        a, b = model(x), model(x)
        model.train()
        c, d = model(x), model(x)
    for key in a:
        assert torch.equal(a[key], b[key])
    assert not torch.allclose(c["reconstruction"], d["reconstruction"])


def test_no_noise_without_denoising():
    """Without noise (and not variational) training mode is deterministic."""
    model = DenseAutoencoder(6, latent_dims=2).train()
    x = torch.randn(4, 6)
    with torch.no_grad():
        assert torch.equal(model(x)["reconstruction"], model(x)["reconstruction"])


def test_noise_is_in_normalised_units():
    """For a linear encoder the code moves by W @ noise: covariance std^2 W W^T."""
    torch.manual_seed(7)
    std = 0.4
    model = DenseAutoencoder(4, hidden=(), latent_dims=2, denoise_std=std)
    model.set_normalization(torch.tensor([5.0, -1.0, 0.0, 2.0]),
                            torch.tensor([100.0, 0.1, 3.0, 7.0]))
    x = torch.randn(1, 4).expand(50_000, 4).contiguous()
    with torch.no_grad():
        clean = model.eval()(x)["latent"]
        noisy = model.train()(x)["latent"]
    diff = noisy - clean
    w = model.latent_head.weight.detach()
    torch.testing.assert_close(diff.T @ diff / len(diff), std**2 * w @ w.T, rtol=0.05, atol=2e-3)


def _plane(n, gen, *, offset=0.0):
    """Points of a 2-D affine plane in 10-D plus small noise, optionally pushed off it."""
    basis = torch.linalg.qr(torch.randn(10, 10, generator=torch.Generator().manual_seed(99)))[0]
    along, normal = basis[:, :2], basis[:, 2:]
    u = torch.randn(n, 2, generator=gen) * torch.tensor([3.0, 1.5])
    x = 2.0 + u @ along.T + 0.05 * torch.randn(n, 10, generator=gen)
    if offset:
        direction = torch.randn(n, 8, generator=gen)
        direction = direction / direction.norm(dim=1, keepdim=True)
        x = x + offset * direction @ normal.T
    return x


def test_anomaly_detection_on_a_plane():
    """Trained on a plane, the model scores off-plane points higher."""
    torch.set_num_threads(1)
    torch.manual_seed(8)
    gen = torch.Generator().manual_seed(8)
    train = _plane(2000, gen)
    model = DenseAutoencoder(10, hidden=(32,), latent_dims=2)
    model.set_normalization(train.mean(0), train.std(0))
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(300):
        batch = train[torch.randint(0, len(train), (256,), generator=gen)]
        opt.zero_grad()
        model.loss(model(batch), batch).backward()
        opt.step()
    normal, anomalous = _plane(500, gen), _plane(500, gen, offset=1.0)
    scores = model.anomaly_scores(torch.cat([normal, anomalous]))["reconstruction_error"]
    labels = torch.cat([torch.zeros(500), torch.ones(500)])
    assert roc_auc_score(labels.numpy(), scores.numpy()) > 0.95


def test_trainer_integration(tmp_path):
    """The shared trainer lowers the validation loss and writes checkpoints."""
    torch.set_num_threads(1)
    gen = torch.Generator().manual_seed(9)
    spec = {"kind": "autoencoder", "kwargs": {"input_dims": 10, "hidden": [16], "latent_dims": 2,
                                              "variational": True, "beta": 0.5,
                                              "denoise_std": 0.05}}
    torch.manual_seed(9)
    model = build_model(spec["kind"], **spec["kwargs"])
    train_x, val_x = _plane(1024, gen), _plane(512, gen)
    model.set_normalization(train_x.mean(0), train_x.std(0))
    chunk = 256

    def dataset(x, **kw):
        loaders = [lambda a=a: (x[a:a + chunk], x[a:a + chunk]) for a in range(0, len(x), chunk)]
        lengths = [min(chunk, len(x) - a) for a in range(0, len(x), chunk)]
        return ChunkedDataset(loaders, lengths, batch_size=64, **kw)

    with torch.no_grad():
        initial = model.loss(model.eval()(val_x), val_x).item()
    cfg = TrainingConfig(epochs=3, batch_size=64, device="cpu", early_stopping_patience=0)
    trainer = Trainer(model, cfg, run_dir=tmp_path, model_spec=spec, loss_fn=model.loss,
                      unit="event")
    history = trainer.fit(dataset(train_x, shuffle=True, seed=1), dataset(val_x))
    assert len(history) == 3
    assert history[-1]["val_loss"] < history[0]["val_loss"] < initial
    assert math.isnan(history[-1]["val_accuracy"])
    state = load_checkpoint(tmp_path / "checkpoint_best.pt")
    rebuilt = build_model(state["model"]["kind"], **state["model"]["kwargs"])
    rebuilt.load_state_dict(state["model_state"])
    assert torch.equal(rebuilt.shift, model.shift) and torch.equal(rebuilt.scale, model.scale)


@pytest.mark.parametrize(("kind", "kwargs", "match"), [
    ("autoencoder", {"input_dims": 0}, "input_dims"),
    ("autoencoder", {"input_dims": 4, "hidden": [8, 0]}, r"hidden\[1\]"),
    ("autoencoder", {"input_dims": 4, "hidden": 8}, "hidden"),
    ("autoencoder", {"input_dims": 4, "latent_dims": -2}, "latent_dims"),
    ("autoencoder", {"input_dims": 4, "beta": -1.0}, "beta"),
    ("autoencoder", {"input_dims": 4, "beta": math.nan}, "beta"),
    ("autoencoder", {"input_dims": 4, "denoise_std": -0.1}, "denoise_std"),
    ("autoencoder", {"input_dims": 4, "sparsity": -1e-3}, "sparsity"),
    ("autoencoder", {"input_dims": 4, "activation": "relux"}, "activation"),
    ("conv_autoencoder", {"image_size": [40]}, "image_size"),
    ("conv_autoencoder", {"image_size": [40, 40, 1]}, "image_size"),
    ("conv_autoencoder", {"image_size": [40, 0]}, "image_size"),
    ("conv_autoencoder", {"channels": []}, "channels"),
    ("conv_autoencoder", {"kernel_size": 0}, "kernel_size"),
    ("conv_autoencoder", {"in_channels": 0}, "in_channels"),
    ("conv_autoencoder", {"latent_dims": 0}, "latent_dims"),
    ("conv_autoencoder", {"activation": "swish"}, "activation"),
])
def test_bad_hyperparameters(kind, kwargs, match):
    """Bad hyperparameters are configuration errors naming the argument."""
    with pytest.raises(ConfigError, match=match):
        build_model(kind, **kwargs)


def test_wrong_input_shape():
    """An input of the wrong shape is refused with the expected shape."""
    with pytest.raises(ValueError, match=r"\[N, 1, 8, 8\]"):
        ConvAutoencoder(image_size=(8, 8), channels=(2,))(torch.randn(2, 1, 8, 9))
    with pytest.raises(ValueError, match=r"\[N, 5\]"):
        DenseAutoencoder(5).anomaly_scores(torch.randn(2, 6))
