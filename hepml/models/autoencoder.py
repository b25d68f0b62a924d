r"""Autoencoders for anomaly detection: dense (feature vectors) and convolutional (images).

An autoencoder is trained to reproduce its input through a narrow code (the *latent*
space) on background or good data only; entries unlike the training data are then
reconstructed badly, and the reconstruction error serves as an anomaly score. This is
the approach of T. Heimel, G. Kasieczka, T. Plehn and J. M. Thompson, "QCD or What?",
SciPost Phys. 6 (2019) 030, arXiv:1808.08979, and of M. Farina, Y. Nakai and D. Shih,
"Searching for New Physics with Deep Autoencoders", Phys. Rev. D 101 (2020) 075021,
arXiv:1808.08992, for jet images; the convolutional model follows their layout.

Two models are registered:

- ``autoencoder`` (:class:`DenseAutoencoder`): an MLP for per-entry feature vectors
  ``[N, F]``; the decoder mirrors the encoder's hidden sizes.
- ``conv_autoencoder`` (:class:`ConvAutoencoder`): blocks of two same-padded convolutions
  and 2x2 average pooling, a dense layer to the code, and the mirror image with
  nearest-neighbour upsampling for images ``[N, C, H, W]`` of any size (the input is
  zero-padded, in normalised units, to a multiple of ``2**len(channels)`` and the output
  cropped back).

Both can be made

- *variational* (D. P. Kingma and M. Welling, "Auto-Encoding Variational Bayes",
  arXiv:1312.6114): the encoder gives the mean ``mu`` and log-variance ``logvar`` of a
  Gaussian code; in training the code is sampled as ``z = mu + exp(logvar / 2) * eps``
  with ``eps ~ N(0, 1)``, in evaluation ``z = mu``;
- *denoising* (P. Vincent, H. Larochelle, Y. Bengio and P.-A. Manzagol, "Extracting and
  Composing Robust Features with Denoising Autoencoders", ICML 2008): in training,
  Gaussian noise of standard deviation ``denoise_std`` is added to the normalised input
  before encoding, while the loss compares with the clean input;
- *sparse*: an L1 penalty ``sparsity * mean(|z|)`` on the code.

**Normalisation.** Each model holds two buffers, ``shift`` and ``scale``, of the shape
of one entry (``[F]`` or ``[C, H, W]``), saved with the weights. The network sees
``(x - shift) / scale``; its output is mapped back, so ``reconstruction`` is in the
input's own units. :meth:`AutoencoderBase.set_normalization` sets them (e.g. to the mean
and standard deviation of the training data); a scale that is zero, negative or not
finite (a constant input) becomes 1.

**Loss.** :meth:`AutoencoderBase.loss` (the trainer's ``loss_fn``) is, with
``D`` the number of elements of one entry and means taken over the batch,

.. math::

    L = \operatorname{mean}_{n,d}\Big(\frac{x_{nd} - \hat x_{nd}}{s_d}\Big)^2
        + \frac{\beta}{D}\,\operatorname{mean}_n \mathrm{KL}_n
        + \lambda\,\operatorname{mean}_{n,k} |z_{nk}|,

where :math:`\mathrm{KL}_n = \tfrac12 \sum_k (\mu_{nk}^2 + \sigma_{nk}^2 - 1 - \log
\sigma_{nk}^2)` is the KL divergence of :math:`N(\mu, \sigma^2)` from :math:`N(0, 1)`
(variational models only) and :math:`\lambda` is ``sparsity``. With a Gaussian decoder
of unit variance in normalised units the negative ELBO per element is
:math:`\tfrac12 \mathrm{MSE} + \mathrm{KL}/D` (up to a constant): the loss is that with
the reconstruction term doubled, so ``beta = 2`` gives exactly twice the negative ELBO
per element and ``beta = 1`` weights the KL term half as much as the ELBO does.

**Scores.** :meth:`AutoencoderBase.anomaly_scores` runs the model in evaluation mode
without gradients and returns per entry the mean squared normalised error
(``reconstruction_error``), the per-element squared and signed normalised errors
(``squared_error``, ``residual``: where an entry differs, e.g. which detector channel
of a bad lumisection), the reconstruction and the code, and for variational models the
KL term (``kl``), a second score.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from hepml.errors import ConfigError
from hepml.models._registry import (
    ACTIVATIONS,
    ModelContract,
    activation,
    register_model,
    shape_text,
)

__all__ = ["AutoencoderBase", "ConvAutoencoder", "DenseAutoencoder"]


# ---------------------------------------------------------------------- validation
def _positive_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    try:
        number = operator.index(value)
    except TypeError:
        raise ValueError(f"{name} must be a positive integer, got {value!r}") from None
    if number <= 0:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")
    return number


def _sizes(name: str, values: Any, *, allow_empty: bool) -> tuple[int, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Sequence):
        raise ValueError(f"{name} must be a list of positive integers, got {values!r}")
    sizes = tuple(_positive_int(f"{name}[{i}]", v) for i, v in enumerate(values))
    if not sizes and not allow_empty:
        raise ValueError(f"{name} must hold at least one entry")
    return sizes


def _non_negative(name: str, value: Any) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a non-negative number, got {value!r}") from None
    if not math.isfinite(number) or number < 0:
        raise ValueError(f"{name} must be a non-negative finite number, got {value!r}")
    return number


def _check_activation(name: Any) -> str:
    if name not in ACTIVATIONS:
        known = ", ".join(sorted(ACTIVATIONS))
        raise ValueError(f"unknown activation {name!r}; choose one of {known}")
    return name


def _kl_to_standard_normal(mu: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mu, exp(logvar)) || N(0, 1)) summed over the last dimension."""
    return 0.5 * (mu.square() + logvar.exp() - 1.0 - logvar).sum(-1)


_OUTPUTS = {
    "latent": "[batch, latent] the code (mu for a variational model)",
    "mu": "[batch, latent] mean of the Gaussian code (variational models)",
    "logvar": "[batch, latent] log variance of the Gaussian code (variational models)",
}
_INSIDE = ("inside the graph: (x - shift) / scale before the encoder and the inverse after "
           "the decoder (buffers fixed from the training data, listed below); feed raw inputs")


def _is_entry_shape(shape: Any) -> bool:
    return (not isinstance(shape, (Mapping, str)) and isinstance(shape, Sequence)
            and all(hasattr(s, "__index__") for s in shape))


# ---------------------------------------------------------------------- shared base
class AutoencoderBase(nn.Module):
    """What the dense and the convolutional autoencoders share.

    Subclasses build the layers and implement :meth:`_encode` (normalised input to the
    features the latent heads read, of width ``feature_width``) and :meth:`_decode` (code
    to normalised reconstruction); the base class owns normalisation, the latent heads,
    sampling, noise, the loss and the anomaly scores.

    Args:
        entry_shape: Shape of one input entry, ``(F,)`` or ``(C, H, W)``.
        latent_dims: Size of the code.
        variational: Gaussian code with ``mu`` and ``logvar`` heads.
        beta: Weight of the KL term (variational models).
        denoise_std: Standard deviation of the training noise, in normalised units.
        sparsity: Weight of the L1 penalty on the code.
    """

    def __init__(
        self,
        entry_shape: Sequence[int],
        latent_dims: int,
        variational: bool,
        beta: float,
        denoise_std: float,
        sparsity: float,
    ) -> None:
        super().__init__()
        self.entry_shape = tuple(int(s) for s in entry_shape)
        self.latent_dims = _positive_int("latent_dims", latent_dims)
        self.variational = bool(variational)
        self.beta = _non_negative("beta", beta)
        self.denoise_std = _non_negative("denoise_std", denoise_std)
        self.sparsity = _non_negative("sparsity", sparsity)
        self.register_buffer("shift", torch.zeros(self.entry_shape))
        self.register_buffer("scale", torch.ones(self.entry_shape))

    def _make_heads(self, width: int) -> None:
        if self.variational:
            self.mu_head = nn.Linear(width, self.latent_dims)
            self.logvar_head = nn.Linear(width, self.latent_dims)
        else:
            self.latent_head = nn.Linear(width, self.latent_dims)

    def _encode(self, xn: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    def _decode(self, z: torch.Tensor) -> torch.Tensor:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def entry_size(self) -> int:
        """Number of elements ``D`` of one entry."""
        return math.prod(self.entry_shape)

    def output_names(self) -> tuple[str, ...]:
        """Names of the forward's outputs: ``mu`` and ``logvar`` only when variational."""
        return ("reconstruction", "latent", *(("mu", "logvar") if self.variational else ()))

    # ------------------------------------------------------------------ normalisation
    @torch.no_grad()
    def set_normalization(self, shift: Any, scale: Any) -> None:
        """Set the input normalisation ``(x - shift) / scale``.

        Args:
            shift: Tensor (or array, or number) broadcastable to the entry shape; entries
                that are not finite become 0.
            scale: Likewise; entries that are not finite or not positive (constant
                inputs) become 1.

        Raises:
            ValueError: If a value does not broadcast to the entry shape.
        """
        for name, value, fallback in (("shift", shift, 0.0), ("scale", scale, 1.0)):
            buf = getattr(self, name)
            t = torch.as_tensor(value, dtype=buf.dtype).to(buf.device)
            try:
                t = torch.broadcast_to(t, self.entry_shape)
            except RuntimeError:
                raise ValueError(f"{name} of shape {tuple(t.shape)} does not broadcast to "
                                 f"the entry shape {self.entry_shape}") from None
            bad = ~torch.isfinite(t)
            if name == "scale":
                bad |= t <= 0
            buf.copy_(torch.where(bad, torch.full_like(t, fallback), t))

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        """``(x - shift) / scale``: what the network works on."""
        return (x - self.shift) / self.scale

    # ------------------------------------------------------------------ forward
    def _check_input(self, x: torch.Tensor) -> None:
        if tuple(x.shape[1:]) != self.entry_shape or x.ndim != len(self.entry_shape) + 1:
            raise ValueError(f"{type(self).__name__} expects input of shape [N, "
                             f"{', '.join(map(str, self.entry_shape))}], got {list(x.shape)}")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode and decode a batch.

        Args:
            x: Input entries, ``[N, *entry_shape]``, in their own units.

        Returns:
            ``reconstruction`` (shape of ``x``, input units), ``latent`` (``[N,
            latent_dims]``: the sampled code in training for a variational model, ``mu``
            otherwise) and, for variational models, ``mu`` and ``logvar``.
        """
        self._check_input(x)
        xn = self.normalize(x)
        if self.training and self.denoise_std > 0:
            xn = xn + self.denoise_std * torch.randn_like(xn)
        h = self._encode(xn)
        out: dict[str, torch.Tensor] = {}
        if self.variational:
            mu, logvar = self.mu_head(h), self.logvar_head(h)
            z = mu + torch.exp(0.5 * logvar) * torch.randn_like(mu) if self.training else mu
            out["mu"], out["logvar"] = mu, logvar
        else:
            z = self.latent_head(h)
        out["reconstruction"] = self._decode(z) * self.scale + self.shift
        out["latent"] = z
        return out

    # ------------------------------------------------------------------ loss and scores
    def loss(self, out: dict[str, torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Training loss: normalised MSE + ``beta`` KL / D + ``sparsity`` mean |z|.

        Args:
            out: What :meth:`forward` returned.
            target: The clean input, ``[N, *entry_shape]``.

        Returns:
            A scalar; see the module documentation for the convention.
        """
        residual = (target - out["reconstruction"]) / self.scale
        total = residual.square().mean()
        if self.variational and self.beta:
            kl = _kl_to_standard_normal(out["mu"], out["logvar"])
            total = total + self.beta * kl.mean() / self.entry_size
        if self.sparsity:
            total = total + self.sparsity * out["latent"].abs().mean()
        return total

    @torch.no_grad()
    def anomaly_scores(
        self, x: torch.Tensor, *, batch_size: int | None = None
    ) -> dict[str, torch.Tensor]:
        """Per-entry scores in evaluation mode, without gradients.

        The model is switched to evaluation mode (no noise, ``z = mu``, batch-norm
        running statistics) and back to its previous mode afterwards.

        Args:
            x: Input entries, ``[N, *entry_shape]``, on the model's device.
            batch_size: Process this many entries at a time (``None``: all at once).

        Returns:
            ``reconstruction_error`` ``[N]`` (mean over elements of the squared
            normalised error), ``squared_error`` and ``residual`` (``(x -
            reconstruction) / scale``) of shape ``[N, *entry_shape]``,
            ``reconstruction`` (input units), ``latent`` ``[N, latent_dims]`` and, for
            variational models, ``kl`` ``[N]`` (summed over latent dimensions).
        """
        self._check_input(x)
        step = len(x) if batch_size is None else _positive_int("batch_size", batch_size)
        was_training = self.training
        self.eval()
        try:
            parts: dict[str, list[torch.Tensor]] = {}
            for start in range(0, len(x), max(step, 1)):
                xb = x[start:start + step]
                out = self(xb)
                residual = (xb - out["reconstruction"]) / self.scale
                squared = residual.square()
                scores = {
                    "reconstruction_error": squared.flatten(1).mean(1),
                    "squared_error": squared,
                    "residual": residual,
                    "reconstruction": out["reconstruction"],
                    "latent": out["latent"],
                }
                if self.variational:
                    scores["kl"] = _kl_to_standard_normal(out["mu"], out["logvar"])
                for key, value in scores.items():
                    parts.setdefault(key, []).append(value)
        finally:
            self.train(was_training)
        if not parts:  # no entries: empty tensors of the right shapes
            empty = x.new_zeros((0, *self.entry_shape))
            result = {"reconstruction_error": x.new_zeros(0), "squared_error": empty,
                      "residual": empty.clone(), "reconstruction": empty.clone(),
                      "latent": x.new_zeros((0, self.latent_dims))}
            if self.variational:
                result["kl"] = x.new_zeros(0)
            return result
        return {key: torch.cat(values) for key, values in parts.items()}


# ---------------------------------------------------------------------- dense
@register_model("autoencoder", data_args=("input_dims",))
class DenseAutoencoder(AutoencoderBase):
    """Dense autoencoder for per-entry feature vectors.

    Encoder: ``F -> hidden[0] -> ... -> hidden[-1]`` with activations (and optional
    batch normalisation), then a linear layer to the code (two, ``mu`` and ``logvar``,
    for a variational model). Decoder: ``latent -> hidden[-1] -> ... -> hidden[0]``
    with activations, then a linear layer to ``F``. An empty ``hidden`` gives a linear
    autoencoder (the span of the leading principal components, once trained).

    Args:
        input_dims: Number of features ``F``.
        hidden: Widths of the encoder's hidden layers (mirrored in the decoder).
        latent_dims: Size of the code.
        activation: Activation name (``relu``, ``elu``, ``gelu``, ``leaky_relu``, ...).
        variational: Variational autoencoder (Gaussian code, KL term in the loss).
        beta: Weight of the KL term.
        denoise_std: Training noise on the normalised input (0: off).
        sparsity: Weight of the L1 penalty on the code (0: off).
        batch_norm: Batch normalisation after each hidden layer.

    Shapes:
        - input: ``[N, F]``
        - output: dict, see :meth:`AutoencoderBase.forward`
    """

    contract = ModelContract(
        inputs=("x",), outputs=("reconstruction", "latent", "mu", "logvar"),
        axes={"x": {0: "batch"}},
        what="dense autoencoder: reconstruction and code of feature vectors",
        descriptions={"x": "feature vectors [batch, features] in their own units (as the "
                           "representation makes them)",
                      "reconstruction": "[batch, features] in the input's units", **_OUTPUTS},
        inside=_INSIDE, default_representation="features")

    @classmethod
    def data_kwargs(cls, shape: Any, *, flatten: bool = False) -> dict[str, Any]:
        """``input_dims`` from feature vectors ``(F,)``.

        Args:
            shape: The representation's ``output_shape``.
            flatten: The task flattens each entry before the model (DQM maps): any
                shape, ``input_dims`` its number of elements.
        """
        if _is_entry_shape(shape) and (flatten or len(shape) == 1):
            return {"input_dims": math.prod(int(s) for s in shape)}
        raise ConfigError(f"model.kind autoencoder takes feature vectors; the representation "
                          f"gives entries of shape {shape_text(shape)}: use conv_autoencoder "
                          "for images")

    def __init__(
        self,
        input_dims: int,
        hidden: Sequence[int] = (64, 32),
        latent_dims: int = 8,
        activation: str = "relu",
        variational: bool = False,
        beta: float = 1.0,
        denoise_std: float = 0.0,
        sparsity: float = 0.0,
        batch_norm: bool = False,
    ) -> None:
        input_dims = _positive_int("input_dims", input_dims)
        hidden = _sizes("hidden", hidden, allow_empty=True)
        _check_activation(activation)
        super().__init__((input_dims,), latent_dims, variational, beta, denoise_std, sparsity)
        self.encoder = _mlp(input_dims, hidden, activation, batch_norm)
        self._make_heads(hidden[-1] if hidden else input_dims)
        back = hidden[::-1]
        self.decoder = nn.Sequential(
            _mlp(self.latent_dims, back, activation, batch_norm),
            nn.Linear(back[-1] if back else self.latent_dims, input_dims),
        )

    def _encode(self, xn: torch.Tensor) -> torch.Tensor:
        return self.encoder(xn)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        return self.decoder(z)


def _mlp(width: int, sizes: Sequence[int], act: str, batch_norm: bool) -> nn.Sequential:
    layers: list[nn.Module] = []
    for units in sizes:
        layers.append(nn.Linear(width, units, bias=not batch_norm))
        if batch_norm:
            layers.append(nn.BatchNorm1d(units))
        layers.append(activation(act))
        width = units
    return nn.Sequential(*layers)


# ---------------------------------------------------------------------- convolutional
@register_model("conv_autoencoder", data_args=("in_channels", "image_size"))
class ConvAutoencoder(AutoencoderBase):
    """Convolutional autoencoder for images of any size.

    Encoder: per entry ``c`` of ``channels``, two same-padded ``kernel_size``
    convolutions to ``c`` channels, each followed by the activation, then 2x2 average
    pooling; flatten; a dense layer to the code (``mu`` and ``logvar`` for a variational
    model). Decoder: a dense layer with activation back to the flattened size, reshape,
    then per block in reverse order 2x nearest-neighbour upsampling and two convolutions
    with activation (the last going to the previous block's channels), and a final
    linear convolution to ``in_channels``.

    The normalised input is zero-padded, half on each side (the extra row or column at
    the bottom or right), to the next multiple of ``2**len(channels)`` in each
    dimension, and the output is cropped back to ``image_size``; e.g. with two blocks a
    37x37 image becomes 40x40, one row and column of zeros before, two after.

    Args:
        in_channels: Image channels.
        image_size: ``(height, width)`` of the images (an int: square).
        channels: Convolution channels of each block.
        latent_dims: Size of the code.
        kernel_size: Square kernel size of every convolution.
        activation: Activation name (``relu``, ``elu``, ``gelu``, ``leaky_relu``, ...).
        variational: Variational autoencoder (Gaussian code, KL term in the loss).
        beta: Weight of the KL term.
        denoise_std: Training noise on the normalised input (0: off).
        sparsity: Weight of the L1 penalty on the code (0: off).

    Shapes:
        - input: ``[N, in_channels, H, W]``
        - output: dict, see :meth:`AutoencoderBase.forward`
    """

    contract = ModelContract(
        inputs=("x",), outputs=("reconstruction", "latent", "mu", "logvar"),
        axes={"x": {0: "batch"}},
        what="convolutional autoencoder: reconstruction and code of images or detector maps",
        descriptions={"x": "images [batch, channels, height, width] in their own units",
                      "reconstruction": "[batch, channels, height, width] in the input's units",
                      **_OUTPUTS},
        inside=_INSIDE, default_representation="jet_image")

    @classmethod
    def data_kwargs(cls, shape: Any) -> dict[str, Any]:
        """``in_channels`` and ``image_size`` from images ``(C, H, W)``."""
        if _is_entry_shape(shape) and len(shape) == 3:
            c, h, w = (int(s) for s in shape)
            return {"in_channels": c, "image_size": [h, w]}
        raise ConfigError(f"model.kind conv_autoencoder needs images (C, H, W); the "
                          f"representation gives entries of shape {shape_text(shape)}")

    def __init__(
        self,
        in_channels: int = 1,
        image_size: Sequence[int] = (40, 40),
        channels: Sequence[int] = (16, 32),
        latent_dims: int = 32,
        kernel_size: int = 3,
        activation: str = "relu",
        variational: bool = False,
        beta: float = 1.0,
        denoise_std: float = 0.0,
        sparsity: float = 0.0,
    ) -> None:
        in_channels = _positive_int("in_channels", in_channels)
        if not isinstance(image_size, (str, bytes)) and not isinstance(image_size, Sequence):
            image_size = (image_size, image_size)
        if isinstance(image_size, (str, bytes)) or len(image_size) != 2:
            raise ValueError(f"image_size must be (height, width), got {image_size!r}")
        h, w = _sizes("image_size", image_size, allow_empty=False)
        channels = _sizes("channels", channels, allow_empty=False)
        kernel_size = _positive_int("kernel_size", kernel_size)
        _check_activation(activation)
        super().__init__((in_channels, h, w), latent_dims, variational, beta, denoise_std, sparsity)
        self.in_channels, self.image_size, self.channels = in_channels, (h, w), channels
        factor = 2 ** len(channels)
        ph, pw = -(-h // factor) * factor, -(-w // factor) * factor
        # (left, right, top, bottom) zero padding of the normalised input
        left, top = (pw - w) // 2, (ph - h) // 2
        self.padding = (left, pw - w - left, top, ph - h - top)
        self.code_shape = (channels[-1], ph // factor, pw // factor)
        flat = math.prod(self.code_shape)

        blocks: list[nn.Module] = []
        width = in_channels
        for c in channels:
            blocks += [_conv(width, c, kernel_size), _act_module(activation),
                       _conv(c, c, kernel_size), _act_module(activation), nn.AvgPool2d(2)]
            width = c
        self.encoder = nn.Sequential(*blocks, nn.Flatten())
        self._make_heads(flat)

        self.expand = nn.Sequential(nn.Linear(self.latent_dims, flat), _act_module(activation))
        ups: list[nn.Module] = []
        targets = (*channels[:-1][::-1], channels[0])  # channels after each decoder block
        for c, out in zip(channels[::-1], targets, strict=True):
            ups += [nn.Upsample(scale_factor=2, mode="nearest"),
                    _conv(c, c, kernel_size), _act_module(activation),
                    _conv(c, out, kernel_size), _act_module(activation)]
        self.decoder = nn.Sequential(*ups, _conv(channels[0], in_channels, kernel_size))

    def _encode(self, xn: torch.Tensor) -> torch.Tensor:
        if any(self.padding):
            xn = F.pad(xn, self.padding)
        return self.encoder(xn)

    def _decode(self, z: torch.Tensor) -> torch.Tensor:
        y = self.decoder(self.expand(z).view(z.shape[0], *self.code_shape))
        left, _, top, _ = self.padding
        h, w = self.image_size
        return y[:, :, top:top + h, left:left + w]


def _conv(cin: int, cout: int, k: int) -> nn.Module:
    """Stride-1 convolution keeping the size ("same" padding, asymmetric for even k)."""
    if k % 2:
        return nn.Conv2d(cin, cout, k, padding=k // 2)
    lo = (k - 1) // 2
    return nn.Sequential(nn.ZeroPad2d((lo, k - 1 - lo, lo, k - 1 - lo)), nn.Conv2d(cin, cout, k))


def _act_module(name: str) -> nn.Module:
    return activation(name)
