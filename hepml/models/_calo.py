"""What the shower generators share: the condition, the data arguments, the energy variables.

Both generators (:mod:`hepml.models.calogan`, :mod:`hepml.models.caloflow`) describe a
shower's longitudinal development by CaloFlow's variables (Krause and Shih,
arXiv:2106.05285): ``u₀ = E_tot / (u_scale · E)`` (the response) and
``u_i = E_{i−1} / Σ_{j ≥ i−1} E_j`` (what each layer keeps of the energy that reaches it),
each in ``[0, 1]`` and mapped by ``logit(α + (1 − 2α) u)``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from typing import Any

import torch

from hepml.errors import ConfigError
from hepml.models._registry import shape_text

__all__ = ["E_REF", "EnergyRangeWarning", "check_layout", "condition", "expit", "layers_from_u",
           "logit", "shower_data_kwargs", "u_logits", "warn_outside_range"]

#: Reference energy (GeV) of the log-energy condition.
E_REF = 10.0


class EnergyRangeWarning(UserWarning):
    """Showers were requested at an incident energy outside the generator's training range."""


def warn_outside_range(energy: torch.Tensor, energy_range: torch.Tensor, *,
                       stacklevel: int) -> None:
    """An :class:`EnergyRangeWarning` when energies lie outside the trained range.

    It reads the device (a host synchronisation): callers that checked on the host skip it.
    """
    lo, hi = energy_range.tolist()
    outside = (energy < lo * (1 - 1e-6)) | (energy > hi * (1 + 1e-6))
    if bool(outside.any()):
        warnings.warn(
            f"{int(outside.sum())} of {len(energy)} requested incident energies lie outside "
            f"the training range [{lo:g}, {hi:g}] GeV; the generator extrapolates there",
            EnergyRangeWarning, stacklevel=stacklevel + 1)


def shower_data_kwargs(kind: str, shape: Any, *, particles: Sequence[int],
                       energy_range: Sequence[float]) -> dict[str, Any]:
    """The data arguments of a shower generator: layer shapes, particles, energy range.

    Args:
        kind: The model kind, for the error message.
        shape: ``(rows, columns)`` of each calorimeter layer (``Showers.shapes``).
        particles: The PDG ids of the training showers, sorted.
        energy_range: Lowest and highest incident energy (GeV) of the training showers.
    """
    if (isinstance(shape, (str, bytes)) or not isinstance(shape, Sequence) or not shape
            or any(isinstance(s, (str, bytes)) or not isinstance(s, Sequence) or len(s) != 2
                   for s in shape)):
        raise ConfigError(f"model.kind {kind} takes calorimeter layers of (rows, columns); "
                          f"the showers give {shape_text(shape)}")
    lo, hi = energy_range
    return {"layer_shapes": [list(s) for s in shape], "particles": list(particles),
            "energy_min": float(lo), "energy_max": float(hi)}


def check_layout(layer_shapes: Sequence[Sequence[int]], particles: Sequence[int],
                 energy_min: float, energy_max: float) -> list[tuple[int, ...]]:
    """A generator's layer shapes as tuples, after checking them, the particles and the range.

    Raises:
        ValueError: Shapes that are not positive (rows, columns) pairs, no particle, or an
            energy range that is not 0 < min <= max.
    """
    shapes = [tuple(int(v) for v in s) for s in layer_shapes]
    if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
        raise ValueError(f"layer_shapes must be (rows, columns) pairs, got {layer_shapes}")
    if not particles:
        raise ValueError("particles: at least one PDG id")
    if not 0 < energy_min <= energy_max:
        raise ValueError(f"energy range [{energy_min}, {energy_max}] GeV is not valid")
    return shapes


def condition(energy: torch.Tensor, particle: torch.Tensor | None, particles: Sequence[int],
              *, linear: bool) -> torch.Tensor:
    """A generator's condition: log(E / 10 GeV), then E / 100 GeV when ``linear``.

    Then the particle's one-hot code, when the generator knows several particles.
    """
    energy = energy.float().reshape(-1, 1)
    parts = [torch.log(energy / E_REF)] + ([energy / 100.0] if linear else [])
    if len(particles) > 1:
        if particle is None:
            raise ValueError(f"this generator knows several particles {list(particles)}; "
                             "say which one to generate")
        parts.append(torch.nn.functional.one_hot(particle.long().reshape(-1),
                                                 len(particles)).float())
    return torch.cat(parts, dim=1)


def logit(u: torch.Tensor, alpha: float) -> torch.Tensor:
    """``logit(α + (1 − 2α) u)``: [0, 1] onto a finite range."""
    u = alpha + (1.0 - 2.0 * alpha) * u
    return torch.log(u) - torch.log1p(-u)


def expit(x: torch.Tensor, alpha: float) -> torch.Tensor:
    """The inverse of :func:`logit`, clipped to [0, 1]."""
    return ((torch.sigmoid(x) - alpha) / (1.0 - 2.0 * alpha)).clamp(0.0, 1.0)


def u_logits(layer: torch.Tensor, energy: torch.Tensor, *, u_scale: float, alpha: float
             ) -> torch.Tensor:
    """Layer energies (B, L) at incident energies (B,) → the logits of u₀ … u_{L−1}."""
    total = layer.sum(1)
    remaining = torch.flip(torch.cumsum(torch.flip(layer, [1]), 1), [1])  # Σ_{j≥i} E_j
    u = torch.cat([(total / (u_scale * energy.reshape(-1).to(layer.dtype))).unsqueeze(1),
                   layer[:, :-1] / remaining[:, :-1].clamp_min(1e-30)], dim=1)
    return logit(u.clamp(0.0, 1.0), alpha)


def layers_from_u(u_logit: torch.Tensor, energy: torch.Tensor, *, u_scale: float, alpha: float
                  ) -> list[torch.Tensor]:
    """The inverse of :func:`u_logits`: one (B,) energy per layer.

    What passes on to the next layer is ``(1 − u) E``, with ``1 − u`` computed as the expit
    of ``−logit``: a deep layer's small energy is not the difference of two large ones.
    """
    u, u_rest = expit(u_logit, alpha), expit(-u_logit, alpha)
    remaining = u[:, 0] * u_scale * energy.reshape(-1).to(u.dtype)
    layers = []
    for i in range(1, u.shape[1]):
        layers.append(u[:, i] * remaining)
        remaining = u_rest[:, i] * remaining
    layers.append(remaining)
    return layers
