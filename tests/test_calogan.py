"""The CaloGAN model and adversarial training through the shared trainer."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from hepml.config import TrainingConfig
from hepml.errors import CheckpointError
from hepml.models import build_model
from hepml.models.calogan import (
    EnergyRangeWarning,
    MinibatchDiscrimination,
    _upsampling_plan,
    discriminator_inputs,
)
from hepml.representations.calo_layers import particle_indices
from hepml.training import ChunkedDataset, Trainer
from hepml.training.checkpoint import load_checkpoint

SMALL = {"layer_shapes": [[2, 8], [4, 4], [4, 2]], "latent_dim": 8, "channels": 8,
         "disc_channels": 4, "disc_features": 8, "minibatch_kernels": 4,
         "energy_min": 1.0, "energy_max": 100.0}


def _toy_showers(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Showers whose layer shares do not depend on the energy: cells (n, 40) in GeV."""
    g = torch.Generator().manual_seed(seed)
    energy = 1 + 99 * torch.rand(n, generator=g)
    shares = torch.rand(n, 40, generator=g) * (torch.rand(n, 40, generator=g) < 0.6)
    shares = shares / shares.sum(1, keepdim=True) * 0.9
    return shares * energy[:, None], energy, torch.zeros(n, dtype=torch.long)


def _data(n: int, seed: int, shuffle: bool) -> ChunkedDataset:
    cells, energy, p = _toy_showers(n, seed)
    return ChunkedDataset([lambda: (cells, energy, p, energy)], [n], batch_size=32,
                          shuffle=shuffle, seed=seed)


def test_upsampling_plan_reaches_every_calogan_layer() -> None:
    for rows, cols in [(3, 96), (12, 12), (12, 6), (1, 8), (10, 16), (16, 9), (50, 18)]:
        (r0, c0), factors = _upsampling_plan(rows, cols)
        assert r0 * math.prod(f[0] for f in factors) == rows
        assert c0 * math.prod(f[1] for f in factors) == cols


def test_generated_showers_have_the_layer_shapes_and_scale_with_energy() -> None:
    torch.manual_seed(0)
    model = build_model("calogan")
    assert model.layer_shapes == [(3, 96), (12, 12), (12, 6)]
    z = torch.randn(4, model.latent_dim)
    e = torch.tensor([10.0, 10.0, 40.0, 40.0])
    out = model(e, z=z)
    assert [tuple(x.shape) for x in out] == [(4, 3, 96), (4, 12, 12), (4, 12, 6)]
    assert all(bool((x >= 0).all()) for x in out)  # ReLU output: energies are never negative
    # the streams give shares of the incident energy: cells = share(z, E) * E
    shares = model.generator(z, model.condition(e))
    for x, s in zip(out, shares, strict=True):
        torch.testing.assert_close(x, s * e.view(-1, 1, 1))


def test_minibatch_discrimination_matches_the_pairwise_sum() -> None:
    torch.manual_seed(1)
    mbd = MinibatchDiscrimination(6, kernels=3, dim=4)
    x = torch.randn(5, 6)
    m = (x @ mbd.T).view(5, 3, 4)
    expected = torch.zeros(5, 3)
    for i in range(5):
        for j in range(5):
            if i != j:
                expected[i] += torch.exp(-((m[i] - m[j]) ** 2).sum(-1) / 4)
    torch.testing.assert_close(mbd(x), expected, atol=1e-5, rtol=1e-4)
    # identical entries see each other fully: B - 1 per kernel
    same = mbd(torch.ones(4, 6))
    torch.testing.assert_close(same, torch.full((4, 3), 3.0))


def test_discriminator_inputs() -> None:
    layer = torch.zeros(1, 2, 2)
    layer[0, 0, 0] = 0.5
    images, energy = discriminator_inputs([layer, torch.zeros(1, 1, 3)])
    assert images[0].shape == (1, 2, 2, 2)
    assert float(images[0][0, 0, 0, 0]) == pytest.approx(5.0)
    assert float(images[0][0, 1, 1, 1]) == 0.0  # an empty cell is 0 in the log channel
    assert float(images[0][0, 1, 0, 0]) == pytest.approx(math.log1p(0.5 / 1e-5) / math.log1p(1e5))
    # log share per layer, the total response, then the fraction of occupied cells per layer
    torch.testing.assert_close(energy, torch.tensor([[math.log(0.5 + 1e-5), math.log(1e-5), 0.5,
                                                      0.25, 0.0]]))


def test_energy_outside_the_trained_range_warns_then_generates() -> None:
    model = build_model("calogan", **SMALL)
    with pytest.warns(EnergyRangeWarning, match=r"2 of 3 .*outside the training range \[1, 100\]"):
        out = model.sample(torch.tensor([0.5, 50.0, 200.0]))
    assert out[0].shape == (3, 2, 8)


def test_particles_condition_the_generator() -> None:
    model = build_model("calogan", **{**SMALL, "particles": [-11, 22]})
    assert model.cond_dim == 4
    np.testing.assert_array_equal(particle_indices(np.array([22, -11, 22]), model.particles),
                                  [1, 0, 1])
    with pytest.raises(ValueError, match="211"):
        particle_indices(np.array([211]), model.particles)
    with pytest.raises(ValueError, match="say which one"):
        model.sample(torch.tensor([10.0]))


def _trainer(tmp_path, epochs: int) -> Trainer:
    torch.manual_seed(0)
    model = build_model("calogan", **SMALL)
    cfg = TrainingConfig(epochs=epochs, batch_size=32, learning_rate=2e-4,
                         early_stopping_patience=0, device="cpu")
    return Trainer(model, cfg, run_dir=tmp_path, model_spec={"kind": "calogan", "kwargs": SMALL},
                   seed=3, unit="shower")


def test_trainer_runs_the_adversarial_steps_and_checkpoints_both_optimisers(tmp_path) -> None:
    t = _trainer(tmp_path, epochs=2)
    assert set(t.optimizers) == {"discriminator", "generator"}
    assert t.optimizers["generator"].param_groups[0]["betas"] == (0.5, 0.9)
    g0 = [p.detach().clone() for p in t.module.generator.parameters()]
    history = t.fit(_data(128, 0, True), _data(64, 1, False))
    assert len(history) == 2
    row = history[-1]
    for key in ("train_loss", "val_loss", "train_d_loss", "train_penalty", "train_d_real",
                "train_d_fake", "train_energy_consistency"):
        assert math.isfinite(row[key]), key
    assert 0 < row["train_d_real"] < 1
    assert any(not torch.equal(a, b)
               for a, b in zip(g0, t.module.generator.parameters(), strict=True))
    state = load_checkpoint(tmp_path / "checkpoint_last.pt")
    assert set(state["optimizer_state"]) == {"discriminator", "generator"}
    assert state["global_step"] == 2 * 4  # 128 showers / 32 per batch, two epochs


def test_interrupted_gan_training_resumes_to_the_same_weights(tmp_path) -> None:
    full = _trainer(tmp_path / "full", epochs=3)
    full.fit(_data(96, 0, True), _data(64, 1, False))
    part = _trainer(tmp_path / "part", epochs=1)
    part.fit(_data(96, 0, True), _data(64, 1, False))
    resumed = _trainer(tmp_path / "part", epochs=3)  # a new process picking up the run
    resumed.fit(_data(96, 0, True), _data(64, 1, False), resume=True)
    for a, b in zip(full.module.state_dict().values(), resumed.module.state_dict().values(),
                    strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert [r["val_loss"] for r in resumed.history] == pytest.approx(
        [r["val_loss"] for r in full.history])


def test_resume_refuses_a_checkpoint_of_another_model(tmp_path) -> None:
    t = _trainer(tmp_path, epochs=1)
    t.fit(_data(64, 0, True), _data(64, 1, False))
    other = build_model("calogan", **{**SMALL, "latent_dim": 4})
    cfg = TrainingConfig(epochs=2, batch_size=32, early_stopping_patience=0, device="cpu")
    t2 = Trainer(other, cfg, run_dir=tmp_path,
                 model_spec={"kind": "calogan", "kwargs": {**SMALL, "latent_dim": 4}})
    with pytest.raises(CheckpointError, match="holds model"):
        t2.fit(_data(64, 0, True), _data(64, 1, False), resume=True)


class _LinearCritic(torch.nn.Module):
    """D(x) = Σ w·x over the two-channel images and the energy features: |∇D| = |w|."""

    def __init__(self, shapes: list[tuple[int, int]], n_energy: int) -> None:
        super().__init__()
        torch.manual_seed(5)
        self.w = torch.nn.ParameterList(torch.nn.Parameter(torch.randn(2, *s) * 0.1)
                                        for s in shapes)
        self.v = torch.nn.Parameter(torch.randn(n_energy) * 0.1)

    def forward(self, images, energy, cond):  # noqa: ANN001, ANN201
        out = (energy * self.v).sum(1)
        for w, x in zip(self.w, images, strict=True):
            out = out + (x * w).flatten(1).sum(1)
        return out

    @torch.no_grad()
    def norm2(self) -> float:
        return float(sum((w ** 2).sum() for w in self.w) + (self.v ** 2).sum())


@pytest.mark.parametrize("loss", ["r1", "wgan_gp"])
def test_gradient_penalties_of_a_linear_critic(loss) -> None:
    model = build_model("calogan", **{**SMALL, "loss": loss, "r1_weight": 3.0, "gp_weight": 7.0})
    model.discriminator = _LinearCritic(model.layer_shapes, 2 * len(model.layer_shapes) + 1)
    cells, energy, p = _toy_showers(16)
    seen = {}

    def step(name, value):  # noqa: ANN001, ANN202
        seen.setdefault(name, value.detach())

    out = model.training_step([cells, energy, p], energy, step)
    w2 = model.discriminator.norm2()
    expected = 0.5 * 3.0 * w2 if loss == "r1" else 7.0 * (math.sqrt(w2) - 1.0) ** 2
    assert float(out["penalty"]) == pytest.approx(expected, rel=1e-5)
    assert set(seen) == {"discriminator", "generator"}


def test_generator_starts_at_the_mean_shower_of_the_data() -> None:
    model = build_model("calogan", **SMALL)
    cells, energy, p = _toy_showers(400)
    cells[:, 0] = 0.0  # a cell that is always empty
    cells[:, 1] = 0.25 * energy  # a cell that always holds a quarter of the energy
    model.initialise_from(cells, energy)
    bias = model.generator.streams[0].net[2].bias.detach()
    assert float(bias[0]) == pytest.approx(-0.3)
    y = math.log1p(0.25 / 1e-5) / math.log1p(1e5)
    assert float(bias[1]) == pytest.approx(math.atanh(y), rel=1e-5)


def test_energy_mixture_density_is_torchs_gaussian_mixture() -> None:
    """The density is torch.distributions' mixture of diagonal Gaussians."""
    from hepml.models.calogan import _EnergyMixture

    torch.manual_seed(0)
    mix = _EnergyMixture(cond_dim=2, n_vars=3, components=4, hidden=8)
    cond, u = torch.randn(5, 2), torch.randn(5, 3)
    log_pi, mean, log_sigma = mix._params(cond)
    ref = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(logits=log_pi),
        torch.distributions.Independent(torch.distributions.Normal(mean, log_sigma.exp()), 1))
    torch.testing.assert_close(mix.log_prob(u, cond), ref.log_prob(u))
    # sampling follows the mixture: the mean of many draws at one condition
    c = torch.randn(1, 2).expand(40000, 2)
    x = mix.sample(c, torch.randn(40000, 4, generator=torch.Generator().manual_seed(1)))
    with torch.no_grad():
        ref = torch.distributions.MixtureSameFamily(
            torch.distributions.Categorical(logits=mix._params(c[:1])[0]),
            torch.distributions.Independent(torch.distributions.Normal(
                mix._params(c[:1])[1], mix._params(c[:1])[2].exp()), 1))
        torch.testing.assert_close(x.mean(0), ref.mean[0], atol=0.03, rtol=0)
        torch.testing.assert_close(x.std(0), ref.stddev[0], atol=0.03, rtol=0.02)


def test_occupancy_fit_recovers_a_known_energy_dependence() -> None:
    """Cells hit with probability sigmoid(a + b log E): the fit gives a and b back."""
    from hepml.models.calogan import _occupancy_fit

    g = torch.Generator().manual_seed(0)
    log_e = torch.log(1 + 99 * torch.rand(200000, generator=g))
    a, b = torch.tensor([-2.0, 0.0, 1.0]), torch.tensor([0.5, -0.3, 0.0])
    p = torch.sigmoid(a + b * log_e.view(-1, 1))
    y = (torch.rand(p.shape, generator=g) < p).float() * 0.4
    amp, hit, slopes = _occupancy_fit(y, log_e, bins=8)
    # the fit is linear in log E through bin averages of a logistic: close, not exact
    torch.testing.assert_close(slopes[1], b, atol=0.05, rtol=0)
    torch.testing.assert_close(hit, a, atol=0.1, rtol=0)
    # a constant amplitude: zero slope, the inverse of tanh(softplus(.)) at 0.4
    torch.testing.assert_close(slopes[0], torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.tanh(torch.nn.functional.softplus(amp)),
                               torch.full((3,), 0.4), atol=1e-4, rtol=0)
