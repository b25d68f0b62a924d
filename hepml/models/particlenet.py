"""ParticleNet: a dynamic graph CNN on particle clouds.

H. Qu and L. Gouskos, "ParticleNet: Jet Tagging via Particle Clouds", Phys. Rev. D 101
(2020) 056019, arXiv:1902.08570. A jet is a cloud of particles; each EdgeConv block
finds every particle's ``k`` nearest neighbours (the first block in the coordinate space
``points``, later blocks in the feature space of the previous block: the graph is
dynamic), builds edge features ``[x_i, x_j - x_i]``, passes them through three shared
(1x1 convolution, batch normalisation, activation) layers, averages over the neighbours
and adds a shortcut (1x1 convolution + batch normalisation of ``x_i``) before a final
activation. Global average pooling over the real particles and a dense head give logits.

Padding: the inputs are padded clouds (see :mod:`hepml.representations.particle_clouds`).
Padded particles are never neighbours (:func:`hepml.representations.knn.knn_indices`),
neighbour slots without a real neighbour (jets with ``n <= k`` particles) are left out of
the mean (a particle with no neighbour at all keeps only its self-edge ``[x_i, 0]``), the
features of padded particles are zeroed after every block, and the pooling averages over
real particles only. In eval mode the output is therefore independent of the amount of
padding and of the values in padded slots. In training mode the batch-normalisation
statistics include the (zeroed) padded entries, as in the authors' implementation.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Literal

import torch
from torch import nn

from hepml.errors import BadValueError, ConfigError
from hepml.models._export import exporting
from hepml.models._registry import ModelContract, fit_shape, register_model
from hepml.models._registry import activation as _activation
from hepml.representations.knn import knn_indices

__all__ = ["ParticleNet", "PRESETS"]

#: ``conv_params`` and ``fc_params`` of the two networks of the paper.
PRESETS: dict[str, dict[str, list]] = {
    "particlenet": {
        "conv_params": [(16, (64, 64, 64)), (16, (128, 128, 128)), (16, (256, 256, 256))],
        "fc_params": [(256, 0.1)],
    },
    "particlenet-lite": {
        "conv_params": [(7, (32, 32, 32)), (7, (64, 64, 64))],
        "fc_params": [(128, 0.1)],
    },
}


def _eval_affine(bn: nn.Module) -> tuple[torch.Tensor, torch.Tensor] | None:
    """Batch norm ``bn`` as ``y = x * scale + shift`` when it uses its running statistics.

    ``None`` when it normalises with the statistics of the batch (training mode, or no
    running statistics).
    """
    if bn.training or bn.running_mean is None or bn.running_var is None:
        return None
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.weight is not None:
        scale = bn.weight * scale
    shift = -bn.running_mean * scale
    if bn.bias is not None:
        shift = shift + bn.bias
    return scale, shift


def _batch_norm_columns(bn: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """Batch norm ``bn`` (1d or 2d) of ``h [C, M]``, statistics over the ``M`` columns.

    Each channel's values are contiguous, so torch takes its accurate (and fast) kernel
    for contiguous inputs; a channels-last ``[M, C]`` layout would sum in float32.
    """
    shape = (1, h.shape[0], -1, 1) if isinstance(bn, nn.BatchNorm2d) else (1, h.shape[0], -1)
    return bn(h.view(shape)).view(h.shape)


def _matmul(weight: torch.Tensor, h: torch.Tensor, bn: nn.Module) -> tuple[torch.Tensor, bool]:
    """``weight @ h``, with ``bn`` folded in when it uses running statistics (then True)."""
    folded = _eval_affine(bn)
    if folded is None:
        return weight @ h, False
    scale, shift = folded
    return torch.addmm(shift.unsqueeze(1), weight * scale.unsqueeze(1), h), True


def _activate(act: nn.Module, h: torch.Tensor) -> torch.Tensor:
    """``act(h)``; for ReLU without autograd in place, ``h`` being a temporary of the block.

    (With autograd, an in-place ReLU on the view that batch normalisation returns would
    make the backward pass copy its gradient.)
    """
    if type(act) is nn.ReLU and not (torch.is_grad_enabled() and h.requires_grad):
        return torch.relu_(h)
    return act(h)


def _knn_for_export(points: torch.Tensor, k: int, mask: torch.Tensor) -> tuple[torch.Tensor,
                                                                                torch.Tensor]:
    """:func:`~hepml.representations.knn.knn_indices` with operators that ONNX has.

    The same neighbours, slots and ``valid`` flags (no periodic dimensions, no self):
    distances from coordinate differences, then ``topk`` of the smallest, which ONNX's
    ``TopK`` orders by (value, index) as ``knn_indices`` does. ``k`` columns at infinite
    distance are appended so that ``topk`` never asks for more than the row holds, for
    any number of particles; slots beyond a point's candidates hold its own index.
    """
    b, n, _ = points.shape
    with torch.no_grad():
        dist = (points.unsqueeze(2) - points.unsqueeze(1)).square().sum(-1).sqrt()
        own = torch.arange(n, device=points.device)
        excluded = ~mask.unsqueeze(1) | (own.view(n, 1) == own.view(1, n))
        dist = torch.where(excluded, torch.full_like(dist, math.inf), dist)
        dist = torch.cat([dist, dist.new_full((b, n, k), math.inf)], dim=-1)
        order = dist.topk(k, dim=-1, largest=False, sorted=True).indices  # [B, N, k]
        n_cand = torch.where(mask, mask.sum(-1, keepdim=True) - 1, 0).clamp(min=0)
        valid = torch.arange(k, device=points.device) < n_cand.unsqueeze(-1)
        indices = torch.where(valid, order, own.view(1, n, 1))
    return indices, valid


class _EdgeConv(nn.Module):
    """One EdgeConv block with its shortcut (see the module docstring).

    The parameters are those of 1x1 convolutions on the edge features
    ``[x_i, x_j - x_i]`` (``[B, 2C, N, k]``) and on the particles (the shortcut), but the
    block computes with matrix products on ``[C, B * N * k]``, one column per edge (and
    ``[C, B * N]`` for the shortcut): each channel's values are contiguous, which keeps
    torch's accurate batch-normalisation kernel. The edge features are not built: the
    first layer splits as ``W_i x_i + W_j (x_j - x_i)``, and the ``W_i x_i`` term is
    computed once per particle instead of once per edge. In eval mode each batch
    normalisation is folded into the matrix product before it.
    """

    def __init__(self, k: int, in_dim: int, channels: Sequence[int], act: str) -> None:
        super().__init__()
        self.k = k
        layers: list[nn.Module] = []
        width = 2 * in_dim
        for out in channels:
            layers += [nn.Conv2d(width, out, 1, bias=False), nn.BatchNorm2d(out),
                       _activation(act)]
            width = out
        self.mlp = nn.Sequential(*layers)  # (conv, batch norm, activation) per layer
        if in_dim == channels[-1]:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = nn.Sequential(nn.Conv1d(in_dim, channels[-1], 1, bias=False),
                                          nn.BatchNorm1d(channels[-1]))
        self.act = _activation(act)

    def forward(self, points: torch.Tensor, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``points [B, D, N]``, ``x [B, C, N]``, ``mask [B, N]`` -> ``[B, C', N]``."""
        knn = _knn_for_export if exporting() else knn_indices
        idx, valid = knn(points.transpose(1, 2), self.k, mask)  # [B, N, k]
        b, c, n = x.shape
        k = self.k
        cols = x.transpose(0, 1).reshape(c, b * n)  # one column per particle
        flat = (idx + torch.arange(b, device=x.device).view(b, 1, 1) * n).reshape(-1)
        diff = (torch.index_select(cols, 1, flat).view(c, b, n, k)
                - cols.view(c, b, n, 1)).view(c, b * n * k)  # x_j - x_i, one column per edge
        conv, bn, act = self.mlp[0], self.mlp[1], self.mlp[2]
        weight = conv.weight.flatten(1)  # [C1, 2C]: the x_i, then the x_j - x_i columns
        w_own, w_diff = weight[:, :c], weight[:, c:]
        folded = _eval_affine(bn)
        if folded is None:
            own, h = w_own @ cols, w_diff @ diff
        else:
            scale, shift = folded[0].unsqueeze(1), folded[1].unsqueeze(1)
            own, h = torch.addmm(shift, w_own * scale, cols), (w_diff * scale) @ diff
        h = (h.view(-1, b, n, k) + own.view(-1, b, n, 1)).view(-1, b * n * k)
        h = _activate(act, h if folded is not None else _batch_norm_columns(bn, h))
        for i in range(3, len(self.mlp), 3):
            conv, bn, act = self.mlp[i], self.mlp[i + 1], self.mlp[i + 2]
            h, bn_done = _matmul(conv.weight.flatten(1), h, bn)
            h = _activate(act, h if bn_done else _batch_norm_columns(bn, h))
        h = h.view(-1, b, n, k)
        w = valid.to(h.dtype)
        alone = ~valid[..., 0]  # no neighbour at all: slot 0 is the self-edge, use it
        w[..., 0] = torch.where(alone, 1.0, w[..., 0])
        h = (h * w).sum(-1) / w.sum(-1)  # [C', B, N]: mean over the real neighbours
        if isinstance(self.shortcut, nn.Identity):
            shortcut = cols
        else:
            conv, bn = self.shortcut[0], self.shortcut[1]
            shortcut, bn_done = _matmul(conv.weight.flatten(1), cols, bn)
            if not bn_done:
                shortcut = _batch_norm_columns(bn, shortcut)
        return self.act(h + shortcut.view(-1, b, n)).transpose(0, 1)


def _pairs(name: str, value: Sequence, *, allow_empty: bool = False) -> list[tuple]:
    if (isinstance(value, (str, bytes)) or not isinstance(value, Sequence)
            or not (value or allow_empty)):
        raise ConfigError(f"{name}: expected a non-empty list of pairs, got {value!r}")
    out = []
    for i, item in enumerate(value):
        if isinstance(item, (str, bytes)) or not isinstance(item, Sequence) or len(item) != 2:
            raise ConfigError(f"{name}[{i}]: expected a pair, got {item!r}")
        out.append(tuple(item))
    return out


@register_model("particlenet", data_args=("input_dims", "num_classes"))
class ParticleNet(nn.Module):
    r"""ParticleNet jet tagger (Qu and Gouskos, arXiv:1902.08570).

    The defaults are the ParticleNet of the paper: three EdgeConv blocks with
    ``k = 16`` and channels (64, 64, 64), (128, 128, 128), (256, 256, 256), then one
    dense layer of 256 units with dropout 0.1. ``preset="particlenet-lite"`` (or
    :meth:`lite`) gives ParticleNet-Lite: two blocks with ``k = 7`` and channels
    (32, 32, 32), (64, 64, 64), and a dense layer of 128 units with dropout 0.1. The paper
    quotes 366k and 26k trainable parameters for its 7 input features and two classes;
    this implementation has 366,160 and 26,416 there.

    Args:
        input_dims: Features per particle (``F``). Default 8, the default
            :class:`hepml.representations.ParticleCloudConfig` features.
        num_classes: Output classes; the model returns logits.
        conv_params: EdgeConv blocks as ``(k, (c1, c2, c3))`` pairs; ``None`` takes them
            from ``preset``.
        fc_params: Hidden dense layers as ``(units, dropout)`` pairs; ``None`` takes them
            from ``preset``.
        preset: ``"particlenet"`` (default) or ``"particlenet-lite"``, for the parameters
            left at ``None``.
        use_fusion: Concatenate the outputs of all blocks and mix them with a 1x1
            convolution (``clip(C // 128 * 128, 128, 1024)`` channels, batch norm,
            activation) before pooling, an option of the authors' code; off in the paper's
            networks and by default.
        activation: Activation name from :data:`hepml.models.ACTIVATIONS`.

    Shapes:
        - points: ``[B, D, N]`` coordinates of the first kNN (e.g. Δη, Δφ)
        - features: ``[B, input_dims, N]``
        - mask: ``[B, 1, N]`` or ``[B, N]``, True (or 1) for real particles; ``None``: all
        - output: ``[B, num_classes]`` logits
    """

    contract = ModelContract(
        inputs=("points", "features", "mask"), outputs=("logits",),
        axes={"points": {0: "batch", 2: "particles"}, "features": {0: "batch", 2: "particles"},
              "mask": {0: "batch", 2: "particles"}},
        what="ParticleNet: class logits of padded particle clouds (kNN inside the graph)",
        descriptions={
            "points": "coordinates of the first kNN [batch, coords, particles], 0 at padding",
            "features": "particle features [batch, features, particles], 0 at padding",
            "mask": "[batch, 1, particles] bool, true for real particles; any amount of "
                    "padding gives the same logits",
            "logits": "class logits [batch, classes]; softmax over axis 1 gives the scores"},
        inside="inside the graph: a batch normalisation of the input features (bn_fts, "
               "running statistics of training); the features themselves (logarithms, "
               "relative pT ...) are computed by the representation",
        default_representation="particle_cloud")

    @classmethod
    def data_kwargs(cls, shape: Any, *, num_classes: int) -> dict[str, Any]:
        """``input_dims`` from the clouds' ``features`` ``(F, N)``, and ``num_classes``."""
        shape = fit_shape("particlenet", shape, "particle clouds (points, features, mask)",
                          keys=("features",))
        return {"input_dims": int(shape["features"][0]), "num_classes": num_classes}

    def __init__(
        self,
        input_dims: int = 8,
        num_classes: int = 2,
        conv_params: Sequence[Sequence] | None = None,
        fc_params: Sequence[Sequence] | None = None,
        preset: Literal["particlenet", "particlenet-lite"] = "particlenet",
        use_fusion: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if preset not in PRESETS:
            raise ConfigError(f"preset: {preset!r} is not one of "
                              f"{', '.join(map(repr, PRESETS))}")
        conv = _pairs("conv_params", PRESETS[preset]["conv_params"]
                      if conv_params is None else conv_params)
        fc = _pairs("fc_params", PRESETS[preset]["fc_params"] if fc_params is None
                    else fc_params, allow_empty=True)
        for i, (k, channels) in enumerate(conv):
            if (isinstance(k, bool) or not isinstance(k, int) or k < 1
                    or isinstance(channels, (str, bytes)) or not isinstance(channels, Sequence)
                    or not channels or not all(isinstance(c, int) and c > 0 for c in channels)):
                raise ConfigError(f"conv_params[{i}]: expected (k, (channels, ...)) with "
                                  f"positive integers, got {(k, channels)!r}")
        for i, (units, drop) in enumerate(fc):
            if not isinstance(units, int) or units < 1 or not 0 <= drop < 1:
                raise ConfigError(f"fc_params[{i}]: expected (units > 0, 0 <= dropout < 1), "
                                  f"got {(units, drop)!r}")
        if input_dims < 1 or num_classes < 1:
            raise ConfigError(f"input_dims and num_classes must be positive, got "
                              f"{input_dims}, {num_classes}")
        self.input_dims, self.num_classes = input_dims, num_classes
        self.bn_fts = nn.BatchNorm1d(input_dims)
        self.edge_convs = nn.ModuleList()
        width = input_dims
        for k, channels in conv:
            self.edge_convs.append(_EdgeConv(k, width, tuple(channels), activation))
            width = channels[-1]
        self.fusion: nn.Module | None = None
        if use_fusion:
            in_chn = sum(channels[-1] for _, channels in conv)
            out_chn = min(max(in_chn // 128 * 128, 128), 1024)
            self.fusion = nn.Sequential(nn.Conv1d(in_chn, out_chn, 1, bias=False),
                                        nn.BatchNorm1d(out_chn), _activation(activation))
            width = out_chn
        head: list[nn.Module] = []
        for units, drop in fc:
            head += [nn.Linear(width, units), _activation(activation), nn.Dropout(drop)]
            width = units
        head.append(nn.Linear(width, num_classes))
        self.fc = nn.Sequential(*head)

    @classmethod
    def lite(cls, **kwargs) -> ParticleNet:
        """ParticleNet-Lite (``preset="particlenet-lite"``); other arguments pass through."""
        return cls(preset="particlenet-lite", **kwargs)

    def forward(self, points: torch.Tensor, features: torch.Tensor,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits of a batch of padded particle clouds (Shapes in the class docstring)."""
        if features.dim() != 3 or features.shape[1] != self.input_dims:
            raise BadValueError(f"features: expected [B, {self.input_dims}, N], got shape "
                                f"{tuple(features.shape)}")
        b, _, n = features.shape
        if points.dim() != 3 or points.shape[0] != b or points.shape[2] != n:
            raise BadValueError(f"points: expected [{b}, D, {n}] to match features, got "
                                f"shape {tuple(points.shape)}")
        if mask is None:
            mask = torch.ones(b, n, dtype=torch.bool, device=features.device)
        else:
            mask = mask.reshape(b, n) != 0
        fmask = mask.unsqueeze(1).to(features.dtype)  # [B, 1, N]
        x = self.bn_fts(features * fmask) * fmask
        outputs = []
        for i, block in enumerate(self.edge_convs):
            x = block(points if i == 0 else x, x, mask) * fmask
            outputs.append(x)
        if self.fusion is not None:
            x = self.fusion(torch.cat(outputs, dim=1)) * fmask
        pooled = x.sum(-1) / fmask.sum(-1).clamp(min=1)  # mean over real particles
        return self.fc(pooled)
