"""Recurrent next-hit predictor for track following, and its Gaussian likelihood loss.

After S. Farrell et al., "Novel deep learning methods for track reconstruction",
arXiv:1810.06111 (HEP.TrkX): an LSTM reads the first hits of a track and predicts the
position of the next hit with a Gaussian uncertainty, trained by the negative
log-likelihood of the true next hit. Here the network reads the prefixes made by
:class:`hepml.representations.track_sequences.TrackSequences` (per hit: r, Δφ to the
track's first hit, z, and the radius of the next hit) and returns, for each prefix,
the mean and log standard deviation of the next hit's Δφ and z (scaled as the target).
"""

from __future__ import annotations

import math
from typing import Any, Literal

import torch
from torch import nn
from torch.nn import functional as F
from torch.nn.utils.rnn import pack_padded_sequence

from hepml.errors import BadValueError, ConfigError
from hepml.models._export import exporting
from hepml.models._registry import ModelContract, fit_shape, register_model

__all__ = ["LOG_SIGMA_MIN", "LSTMTracker", "gaussian_nll"]

#: Smooth lower bound of the predicted log σ (σ ≈ 1e-7 in the units of the target), so
#: that a confident network cannot make the likelihood and its gradients explode.
LOG_SIGMA_MIN = -16.0
#: Initial log σ of both coordinates (σ ≈ 7e-3: 7 mrad in Δφ, 7 mm in z at z_scale 1 m).
LOG_SIGMA_INIT = -5.0
_CELLS = {"lstm": nn.LSTM, "gru": nn.GRU}
#: Extrapolation -> factor of the head's mean outputs: the size of what the extrapolation
#: leaves to learn (line: the curvature, ~1e-3 rad and mm at 1 m; last: the step).
_EXTRAPOLATIONS = {"line": 1e-2, "last": 0.1, "none": 1.0}


@register_model("lstm_tracker", data_args=("input_dims",))
class LSTMTracker(nn.Module):
    r"""LSTM or GRU over a track's hits that predicts the next hit as a Gaussian.

    The recurrent network runs over the packed prefix (padding never enters it), and the
    final state of its last layer (for a bidirectional network: the forward state after
    the last hit and the backward state after the first, each of which has read the
    whole prefix) goes through a small dense head to
    ``[μ_Δφ, μ_z, log σ_Δφ, log σ_z]``. The head predicts the means as a correction to a
    fixed extrapolation of the prefix (``extrapolation``):

    - ``"line"`` (default): the straight line through the last two hits in (r, Δφ) and in
      (r, z), evaluated at ``r_next``; the network learns the bending, the curvature of
      the helix and the uncertainty. A next-hit predictor from scratch has to learn a
      division by the distance between hits, which takes far longer to train to the same
      precision; with the line as a start, a short training already beats it;
    - ``"last"``: the last hit's Δφ and z (the step is learned);
    - ``"none"``: the head predicts Δφ and z directly.

    The head's mean outputs are multiplied by the size of what is left to learn (0.01
    for ``"line"``, 0.1 for ``"last"``, 1 for ``"none"``) and start at zero, with log σ at
    :data:`LOG_SIGMA_INIT`: optimiser steps of the size of the learning rate then move
    the means by amounts that fit the precision needed (≈ 1e-4 rad at r ≈ 1 m).

    The extrapolations read r, Δφ, z and r_next from input columns 0-3, as
    :data:`~hepml.representations.track_sequences.SEQUENCE_FEATURES` lays them out; a
    prefix of one hit falls back from ``"line"`` to ``"last"``.

    Every training example is a prefix that ends just before the hit to be predicted, so
    a bidirectional network sees no hit it should not.

    Args:
        input_dims: Features per hit (4 for track sequences).
        hidden_size: Units of the recurrent layers and of the head's hidden layer.
        num_layers: Stacked recurrent layers.
        cell: ``"lstm"`` or ``"gru"``.
        bidirectional: Read the prefix in both directions.
        dropout: Dropout between recurrent layers and in the head.
        extrapolation: ``"line"``, ``"last"`` or ``"none"``: what the head corrects
            (see above).

    Shapes:
        - input: ``x [M, T, input_dims]`` (zero-padded), ``lengths [M]`` (>= 1, any device)
        - output: ``[M, 4]``: ``μ_Δφ, μ_z, log σ_Δφ, log σ_z`` of the next hit
    """

    contract = ModelContract(
        inputs=("x", "lengths"), outputs=("next_hit",),
        axes={"x": {0: "batch", 1: "steps"}, "lengths": {0: "batch"}},
        what="LSTM/GRU next-hit predictor: Gaussian mean and log width of the next hit",
        descriptions={
            "x": "track prefixes [batch, steps, 4] (r, delta-phi to the first hit, z, r of "
                 "the next hit; scaled by the representation), zero after each prefix",
            "lengths": "[batch] int64 number of hits of each prefix, 1 <= lengths <= steps",
            "next_hit": "[batch, 4]: mu_dphi, mu_z, log sigma_dphi, log sigma_z of the next "
                        "hit, in the target's units (rad; z / z_scale)"},
        inside="no input normalisation inside the graph (the representation scales r and z); "
               "the extrapolation of the prefix and the lower bound of log sigma are inside",
        default_representation="track_sequence")

    @classmethod
    def data_kwargs(cls, shape: Any) -> dict[str, Any]:
        """``input_dims`` from the track prefixes' ``x`` ``(T, F)``."""
        shape = fit_shape("lstm_tracker", shape, "track sequences (x, lengths)", keys=("x",))
        return {"input_dims": int(shape["x"][-1])}

    def __init__(
        self,
        input_dims: int = 4,
        hidden_size: int = 64,
        num_layers: int = 2,
        cell: Literal["lstm", "gru"] = "lstm",
        bidirectional: bool = False,
        dropout: float = 0.0,
        extrapolation: Literal["line", "last", "none"] = "line",
    ) -> None:
        super().__init__()
        if cell not in _CELLS:
            raise ConfigError(f"model.cell: {cell!r} is not one of {', '.join(map(repr, _CELLS))}")
        for name, value in (("input_dims", input_dims), ("hidden_size", hidden_size),
                            ("num_layers", num_layers)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"model.{name}: expected a positive integer, got {value!r}")
        if not 0 <= dropout < 1:
            raise ConfigError(f"model.dropout must lie in [0, 1), got {dropout}")
        if extrapolation not in _EXTRAPOLATIONS:
            raise ConfigError(f"model.extrapolation: {extrapolation!r} is not one of "
                              f"{', '.join(map(repr, _EXTRAPOLATIONS))}")
        if extrapolation != "none" and input_dims < 4:
            raise ConfigError(f"model.extrapolation {extrapolation!r} reads r, Δφ, z and r_next "
                              f"from input columns 0-3, but input_dims is {input_dims}; set "
                              "extrapolation: none")
        self.input_dims = input_dims
        self.cell = cell
        self.bidirectional = bool(bidirectional)
        self.extrapolation = extrapolation
        self.rnn = _CELLS[cell](input_dims, hidden_size, num_layers=num_layers, batch_first=True,
                                dropout=dropout if num_layers > 1 else 0.0,
                                bidirectional=self.bidirectional)
        width = hidden_size * (2 if self.bidirectional else 1)
        self.head = nn.Sequential(nn.Linear(width, hidden_size), nn.Tanh(), nn.Dropout(dropout),
                                  nn.Linear(hidden_size, 4))
        out = self.head[-1]
        with torch.no_grad():  # start from the extrapolation, with σ of a few mm at r ~ 1 m
            out.weight[:2].zero_()
            out.bias[:2].zero_()
            out.bias[2:].fill_(LOG_SIGMA_INIT)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[μ_Δφ, μ_z, log σ_Δφ, log σ_z]`` of the hit after each prefix."""
        if x.ndim != 3 or x.shape[-1] != self.input_dims:
            raise BadValueError(f"LSTMTracker expects x of shape [M, T, {self.input_dims}], got "
                                f"{tuple(x.shape)}")
        if lengths.shape != x.shape[:1]:
            raise BadValueError(f"LSTMTracker: lengths has shape {tuple(lengths.shape)} but x "
                                f"holds {x.shape[0]} sequences")
        if exporting():  # no packing (ONNX has none), no checks that read the data
            last = self._last_unpacked(x, lengths.to(x.device).long())
        else:
            if x.shape[0] == 0:
                return self.head(x.new_zeros((0, self.head[0].in_features)))
            cpu_lengths = lengths.detach().to("cpu", torch.int64)
            if int(cpu_lengths.min()) < 1 or int(cpu_lengths.max()) > x.shape[1]:
                raise BadValueError(f"LSTMTracker: lengths must lie in [1, {x.shape[1]}], "
                                    f"got {int(cpu_lengths.min())} .. {int(cpu_lengths.max())}")
            packed = pack_padded_sequence(x, cpu_lengths, batch_first=True,
                                          enforce_sorted=False)
            _, state = self.rnn(packed)
            h = state[0] if isinstance(state, tuple) else state  # [layers * dirs, M, H]
            last = torch.cat([h[-2], h[-1]], dim=1) if self.bidirectional else h[-1]
        out = self.head(last)
        mu = out[:, :2] * _EXTRAPOLATIONS[self.extrapolation]
        log_sigma = out[:, 2:]
        if self.extrapolation != "none":
            mu = mu + self._extrapolate(x, lengths.to(x.device).long())
        log_sigma = LOG_SIGMA_MIN + F.softplus(log_sigma - LOG_SIGMA_MIN)
        return torch.cat([mu, log_sigma], dim=1)

    def _last_unpacked(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """What the packed run gives as ``last``, from the padded ``x`` (for export).

        The recurrent layers run layer by layer with their own weights. A forward
        direction's state after hit ``L - 1`` does not depend on the padding after it, so
        it is read from the padded run at ``L - 1``. A backward direction runs over each
        prefix reversed within its length (the padding stays behind the hits), with the
        layer's ``_reverse`` weights; its final state is its output after the reversed
        prefix's last step.
        """
        m, t = x.shape[0], x.shape[1]
        hidden = self.rnn.hidden_size
        at_last = (lengths - 1).clamp(min=0).view(m, 1, 1).expand(m, 1, hidden)
        steps = torch.arange(t, device=x.device).view(1, t)
        flip = torch.where(steps < lengths.view(m, 1), lengths.view(m, 1) - 1 - steps, steps)
        rnn_op = torch.lstm if self.cell == "lstm" else torch.gru
        inp = x
        for layer in range(self.rnn.num_layers):
            outs = []
            for suffix in ("", "_reverse") if self.bidirectional else ("",):
                weights = [getattr(self.rnn, f"{name}_l{layer}{suffix}")
                           for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")]
                seq = inp if not suffix else inp.gather(
                    1, flip.unsqueeze(-1).expand(m, t, inp.shape[-1]))
                h0 = x.new_zeros(1, m, hidden)
                state = (h0, h0) if self.cell == "lstm" else h0
                out = rnn_op(seq, state, weights, True, 1, 0.0, False, False, True)[0]
                outs.append(out if not suffix else out.gather(
                    1, flip.unsqueeze(-1).expand(m, t, hidden)))
            inp = torch.cat(outs, dim=-1)  # [M, T, H or 2H] in the original hit order
        last = inp[..., :hidden].gather(1, at_last).squeeze(1)
        return torch.cat([last, inp[:, 0, hidden:]], dim=1) if self.bidirectional else last

    def _extrapolate(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """Δφ and z of the prefix's extrapolation to ``r_next`` ``[M, 2]``."""
        rows = torch.arange(x.shape[0], device=x.device)
        last = x[rows, lengths - 1]
        if self.extrapolation == "last":
            return last[:, 1:3]
        prev = x[rows, (lengths - 2).clamp(min=0)]
        dr = last[:, 0] - prev[:, 0]
        usable = (lengths >= 2) & (dr.abs() > 1e-6)
        step = (last[:, 3] - last[:, 0]) / torch.where(usable, dr, torch.ones_like(dr))
        slope = (last[:, 1:3] - prev[:, 1:3]) * torch.where(usable, step, 0 * step)[:, None]
        return last[:, 1:3] + slope


def gaussian_nll(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Negative log-likelihood of ``target`` under independent Gaussians, mean over examples.

    Args:
        out: ``[M, 4]`` ``μ_Δφ, μ_z, log σ_Δφ, log σ_z`` (the output of :class:`LSTMTracker`).
        target: ``[M, 2]`` true ``Δφ, z`` of the next hit.

    Returns:
        Scalar: ``mean_i Σ_k [(t_ik - μ_ik)² / (2 σ_ik²) + log σ_ik + log(2π) / 2]``.
    """
    if out.ndim != 2 or out.shape[1] != 4 or target.shape != (out.shape[0], 2):
        raise BadValueError(f"gaussian_nll expects outputs [M, 4] and targets [M, 2], got "
                            f"{tuple(out.shape)} and {tuple(target.shape)}")
    mu, log_sigma = out[:, :2], out[:, 2:]
    pull = (target - mu) * torch.exp(-log_sigma)
    return (0.5 * pull.square() + log_sigma + 0.5 * math.log(2 * math.pi)).sum(1).mean()
