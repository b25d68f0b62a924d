"""Convolutional jet-image tagger."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from hepml.errors import ConfigError
from hepml.models._registry import ModelContract, activation, fit_shape, register_model

__all__ = ["JetImageCNN"]


@register_model("cnn", data_args=("in_channels", "image_size", "num_classes"))
class JetImageCNN(nn.Module):
    r"""Configurable conv / pool / dense network for jet images.

    The defaults are the DeepTop network of G. Kasieczka, T. Plehn, M. Russell and
    T. Schell, "Deep-learning Top Taggers or The End of QCD?", JHEP 05 (2017) 006,
    arXiv:1701.08784: 40x40 single-channel images, four convolutional layers of eight
    4x4 filters with 2x2 max-pooling after the second and the fourth, then three dense
    layers of 64 units, ReLU activations, and a two-class output. Batch normalisation and
    dropout are off by default, as in the paper, and can be switched on.

    Args:
        in_channels: Image channels (pT, charged pT, ...).
        image_size: (height, width) of the input images.
        num_classes: Output classes; the model returns logits.
        conv_channels: Filters of each convolutional layer.
        kernel_size: Square kernel size of every convolution ("same" padding).
        pool_after: Indices (0-based) of the conv layers followed by max-pooling.
        pool_size: Max-pooling window and stride.
        dense: Units of each hidden dense layer.
        dropout: Dropout probability after each hidden dense layer (and ``conv_dropout``
            after each pooling).
        conv_dropout: Dropout probability after each pooling layer.
        batch_norm: Batch normalisation after each convolution and hidden dense layer.
        activation: Activation name (``relu``, ``elu``, ``gelu``, ``leaky_relu``, ...).

    Shapes:
        - input: ``[N, in_channels, H, W]``
        - output: ``[N, num_classes]`` logits
    """

    contract = ModelContract(
        inputs=("images",), outputs=("logits",), axes={"images": {0: "batch"}},
        what="jet-image CNN classifier: class logits (softmax gives the scores)",
        descriptions={
            "images": "jet images [batch, channels, eta, phi] as the representation makes them",
            "logits": "class logits [batch, classes]; softmax over axis 1 gives the scores"},
        inside="no input normalisation inside the graph: the images are normalised by the "
               "representation (its 'normalize' option); batch normalisation layers, when "
               "the model has them, are part of the network (running statistics)",
        default_representation="jet_image")

    @classmethod
    def data_kwargs(cls, shape: Any, *, num_classes: int) -> dict[str, Any]:
        """``in_channels`` and ``image_size`` from images ``(C, H, W)``, and ``num_classes``."""
        c, h, w = fit_shape("cnn", shape, "images (C, H, W)", ndim=3)
        return {"in_channels": c, "image_size": [h, w], "num_classes": num_classes}

    def __init__(
        self,
        in_channels: int = 1,
        image_size: Sequence[int] = (40, 40),
        num_classes: int = 2,
        conv_channels: Sequence[int] = (8, 8, 8, 8),
        kernel_size: int = 4,
        pool_after: Sequence[int] = (1, 3),
        pool_size: int = 2,
        dense: Sequence[int] = (64, 64, 64),
        dropout: float = 0.0,
        conv_dropout: float = 0.0,
        batch_norm: bool = False,
        activation: str = "relu",
    ) -> None:
        super().__init__()
        if not 0 <= dropout < 1 or not 0 <= conv_dropout < 1:
            raise ConfigError(f"dropout must lie in [0, 1), got {dropout}, {conv_dropout}")
        h, w = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
        layers: list[nn.Module] = []
        channels = in_channels
        for i, out in enumerate(conv_channels):
            lo = (kernel_size - 1) // 2  # "same" padding, asymmetric for even kernels
            layers.append(nn.ZeroPad2d((lo, kernel_size - 1 - lo, lo, kernel_size - 1 - lo)))
            layers.append(nn.Conv2d(channels, out, kernel_size, bias=not batch_norm))
            if batch_norm:
                layers.append(nn.BatchNorm2d(out))
            layers.append(_act(activation))
            if i in pool_after:
                if h < pool_size or w < pool_size:
                    raise ConfigError(f"image {image_size} too small for pooling after conv {i}")
                layers.append(nn.MaxPool2d(pool_size))
                h, w = h // pool_size, w // pool_size
                if conv_dropout:
                    layers.append(nn.Dropout2d(conv_dropout))
            channels = out
        self.features = nn.Sequential(*layers)
        head: list[nn.Module] = [nn.Flatten()]
        width = channels * h * w
        for units in dense:
            head.append(nn.Linear(width, units, bias=not batch_norm))
            if batch_norm:
                head.append(nn.BatchNorm1d(units))
            head.append(_act(activation))
            if dropout:
                head.append(nn.Dropout(dropout))
            width = units
        head.append(nn.Linear(width, num_classes))
        self.classifier = nn.Sequential(*head)
        self.in_channels, self.image_size = in_channels, (h, w)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """Return class logits for a batch of images."""
        return self.classifier(self.features(images))


def _act(name: str) -> nn.Module:
    return activation(name)
