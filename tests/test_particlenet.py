"""ParticleNet: shapes, invariances under permutation and padding, size, and learning."""

from __future__ import annotations

import copy

import pytest
import torch

from hepml.errors import BadValueError, ConfigError, UnknownKeyError
from hepml.models import MODELS, ParticleNet, build_model
from hepml.representations.knn import knn_indices

SMALL = {"conv_params": [(4, (16, 16, 16)), (4, (32, 32, 32))], "fc_params": [(32, 0.1)]}


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def clouds(b=4, n=12, f=8, seed=0, dtype=torch.float32):
    gen = torch.Generator().manual_seed(seed)
    points = torch.randn(b, 2, n, generator=gen, dtype=dtype)
    features = torch.randn(b, f, n, generator=gen, dtype=dtype)
    mults = torch.randint(1, n + 1, (b,), generator=gen)
    mults[0] = n  # a full jet
    if b > 1:
        mults[1] = 1  # a single particle, no neighbour
    mask = torch.arange(n).view(1, 1, n) < mults.view(b, 1, 1)
    return points, features, mask


def trained_stats(model: torch.nn.Module) -> torch.nn.Module:
    """Give the batch norms non-trivial running statistics, then switch to eval."""
    model.train()
    with torch.no_grad():
        for seed in range(3):
            p, f, m = clouds(8, 12, model.input_dims, seed=100 + seed)
            model(p, f * 2 + 1, m)
    return model.eval()


def test_registered_and_output_shapes():
    assert MODELS["particlenet"] is ParticleNet
    p, f, m = clouds()
    for model in (ParticleNet(), ParticleNet.lite(), ParticleNet(num_classes=5, **SMALL),
                  ParticleNet(use_fusion=True, **SMALL)):
        out = model.eval()(p, f, m)
        assert out.shape == (4, model.num_classes)
        assert torch.isfinite(out).all()
    # mask as [B, N], float, or absent
    model = trained_stats(ParticleNet(**SMALL))
    ref = model(p, f, m)
    torch.testing.assert_close(model(p, f, m[:, 0].float()), ref)
    assert model(p, f).shape == (4, 2)


def test_parameter_counts_match_the_paper():
    # Qu & Gouskos (arXiv:1902.08570), Table on the top-tagging benchmark: ParticleNet
    # 366k and ParticleNet-Lite 26k parameters, for 7 input features and 2 classes.
    # Derived by hand: 10,048 + 58,368 + 231,424 (EdgeConv blocks with shortcuts)
    # + 14 (input BN) + 65,792 + 514 (head) = 366,160; Lite: 2,976 + 14,848 + 14
    # + 8,320 + 258 = 26,416.
    assert n_params(ParticleNet(input_dims=7)) == 366_160
    assert n_params(ParticleNet.lite(input_dims=7)) == 26_416
    assert n_params(ParticleNet(input_dims=7, preset="particlenet-lite")) == 26_416
    assert abs(n_params(ParticleNet(input_dims=7)) - 366_000) / 366_000 < 0.01
    assert abs(n_params(ParticleNet.lite(input_dims=7)) - 26_000) / 26_000 < 0.02


@pytest.mark.parametrize("kwargs", [SMALL, {"preset": "particlenet-lite"},
                                    {**SMALL, "use_fusion": True}])
def test_permutation_invariance(kwargs):
    torch.manual_seed(0)
    model = trained_stats(ParticleNet(**kwargs))
    p, f, m = clouds()
    ref = model(p, f, m)
    gen = torch.Generator().manual_seed(1)
    perm = torch.randperm(p.shape[-1], generator=gen)  # mixes real and padded slots
    out = model(p[..., perm], f[..., perm], m[..., perm])
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=1e-5)


def test_padding_invariance_and_masked_values_do_not_matter():
    torch.manual_seed(0)
    model = trained_stats(ParticleNet(**SMALL))
    p, f, m = clouds()
    ref = model(p, f, m)
    # extra padded slots full of garbage, placed in front of the real particles
    extra = 7
    p2 = torch.cat([torch.randn(4, 2, extra) * 50, p], -1)
    f2 = torch.cat([torch.randn(4, 8, extra) * 50, f], -1)
    m2 = torch.cat([torch.zeros(4, 1, extra, dtype=torch.bool), m], -1)
    torch.testing.assert_close(model(p2, f2, m2), ref, atol=1e-5, rtol=1e-5)
    # the values in the existing padded slots do not matter either
    garbage = ~m.expand_as(f)
    f3 = torch.where(garbage, torch.full_like(f, 1e3), f)
    p3 = torch.where(~m.expand_as(p), torch.full_like(p, -1e3), p)
    torch.testing.assert_close(model(p3, f3, m), ref, atol=1e-5, rtol=1e-5)
    # ... also in training mode (the batch-norm statistics see zeros there)
    model.train()
    torch.manual_seed(5)
    a = model(p, f, m)
    torch.manual_seed(5)
    b = model(p3, f3, m)
    torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-5)


def test_empty_and_single_particle_jets_are_finite():
    model = trained_stats(ParticleNet(**SMALL))
    p, f, m = clouds()
    m[2] = False  # an empty jet: the head sees zeros
    out = model(p, f, m)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out[2], model.fc(torch.zeros(1, 32))[0])


def test_training_reduces_the_loss():
    torch.manual_seed(0)
    b, n = 64, 16
    gen = torch.Generator().manual_seed(2)
    labels = torch.arange(b) % 2
    spread = torch.where(labels == 1, 1.0, 0.2).view(b, 1, 1)
    points = torch.randn(b, 2, n, generator=gen) * spread
    features = torch.cat([points, torch.randn(b, 2, n, generator=gen)], 1)
    mask = torch.arange(n).view(1, 1, n) < torch.randint(4, n + 1, (b, 1, 1), generator=gen)
    model = ParticleNet(input_dims=4, conv_params=[(4, (16, 16, 16))], fc_params=[(16, 0.0)])
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(25):
        loss = torch.nn.functional.cross_entropy(model(points, features, mask), labels)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    model.eval()
    acc = (model(points, features, mask).argmax(1) == labels).float().mean()
    assert acc > 0.9


def test_gradients_reach_every_parameter():
    model = ParticleNet(**SMALL)
    p, f, m = clouds()
    model(p, f, m).sum().backward()
    assert all(q.grad is not None and torch.isfinite(q.grad).all()
               for q in model.parameters())


def test_build_from_plain_data_and_errors():
    model = build_model("particlenet", input_dims=3, conv_params=[[3, [8, 8, 8]]],
                        fc_params=[[8, 0.2]], activation="elu")
    assert model(torch.randn(2, 2, 5), torch.randn(2, 3, 5)).shape == (2, 2)
    assert build_model("particlenet", fc_params=[]).fc[-1].in_features == 256
    with pytest.raises(UnknownKeyError):
        build_model("particlenet", conv_param=[])
    with pytest.raises(ConfigError, match="preset"):
        ParticleNet(preset="particlenet-big")
    with pytest.raises(ConfigError, match="conv_params"):
        ParticleNet(conv_params=[(0, (8,))])
    with pytest.raises(ConfigError, match="fc_params"):
        ParticleNet(fc_params=[(8, 1.5)])
    with pytest.raises(UnknownKeyError):
        ParticleNet(activation="relux")
    with pytest.raises(BadValueError, match="features"):
        ParticleNet(**SMALL)(torch.randn(2, 2, 5), torch.randn(2, 7, 5))
    with pytest.raises(BadValueError, match="points"):
        ParticleNet(**SMALL)(torch.randn(2, 2, 6), torch.randn(2, 8, 5))


def reference_block(block, points, x, mask):
    """An EdgeConv block written out the plain way, through the block's own modules.

    The edge features ``[x_i, x_j - x_i]`` are built as ``[B, 2C, N, k]`` and passed
    through the (1x1 convolution, batch norm, activation) layers in their usual layout.
    """
    idx, valid = knn_indices(points.transpose(1, 2), block.k, mask)
    nb = torch.stack([x[j][:, idx[j]] for j in range(x.shape[0])])  # [B, C, N, k]
    centre = x.unsqueeze(-1).expand_as(nb)
    h = block.mlp(torch.cat([centre, nb - centre], 1))
    w = valid.to(h.dtype)
    w[..., 0] = torch.where(~valid[..., 0], 1.0, w[..., 0])
    h = (h * w.unsqueeze(1)).sum(-1) / w.sum(-1).unsqueeze(1)
    return block.act(h + block.shortcut(x))


@pytest.mark.parametrize("training", [True, False])
def test_edge_conv_blocks_match_explicit_edge_features(training):
    """EdgeConv blocks give the outputs, statistics and gradients of the plain way.

    The blocks compute with matrix products, split the first layer and fold the batch
    norms in eval mode; none of that may change what they compute.
    """
    model = ParticleNet(**SMALL).double().train()
    with torch.no_grad():  # non-trivial running statistics
        for seed in range(3):
            p, f, m = clouds(8, 12, seed=100 + seed, dtype=torch.float64)
            model(p, f * 2 + 1, m)
    p, f, m = clouds(dtype=torch.float64)
    mask = m[:, 0]
    x = f * 2 + 1
    for i, block in enumerate(model.edge_convs):
        twin = copy.deepcopy(block)
        block.train(training)
        twin.train(training)
        pts = p if i == 0 else x
        out = block(pts, x, mask)
        ref = reference_block(twin, pts, x, mask)
        torch.testing.assert_close(out, ref, atol=1e-10, rtol=1e-10)
        for (name, a), (_, b) in zip(block.state_dict().items(), twin.state_dict().items(),
                                     strict=True):
            torch.testing.assert_close(a, b, atol=1e-12, rtol=1e-12, msg=name)
        x = out * m
    # gradients agree as well
    block = model.edge_convs[1].train()
    twin = copy.deepcopy(block)
    x = torch.randn(4, 16, 12, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    block(x, x, mask).square().sum().backward()
    reference_block(twin, x, x, mask).square().sum().backward()
    for a, b in zip(block.parameters(), twin.parameters(), strict=True):
        torch.testing.assert_close(a.grad, b.grad, atol=1e-10, rtol=1e-10)
