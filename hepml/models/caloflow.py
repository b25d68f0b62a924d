"""CaloFlow: normalizing flows that learn calorimeter showers by maximum likelihood.

The design follows CaloFlow (Krause and Shih, arXiv:2106.05285 and arXiv:2110.11377) with
CaloINN's choice of coupling blocks (Ernst, Favaro, Krause, Plehn, Shih, Trost,
arXiv:2312.09290), so that sampling is one pass through the network instead of one pass
per cell. The splines, the coupling transforms and the flows themselves are zuko's.

Two flows, trained together, factorise the density of a shower ``I`` (cells in GeV) at
incident energy ``E``::

    p(I | E) = p₁(E₀, …, E_{L−1} | E) · p₂(Î | E₀, …, E_{L−1}, E)

Dequantisation
    For the layer energies every cell gets uniform noise in ``[0, noise)`` GeV (1 keV by
    default), so that an empty layer has a density (CaloFlow's recipe). For the pattern,
    each cell's share of its layer's energy gets uniform noise in ``[0, pattern_noise)``:
    relative to the layer, so that empty cells sit in one narrow band of the logit at every
    energy, far below the faintest real deposits (a noise in GeV would put them at a share
    that falls as the layer's energy grows, and what the flow smears into them would come
    back as faint hits in showers of high energy).

Flow I: the layer energies
    The energies enter as CaloFlow's variables in ``[0, 1]``: ``u₀ = E_tot / (u_scale E)``
    (the response) and ``u_i = E_{i−1} / Σ_{j ≥ i−1} E_j`` (what each layer keeps of
    what reaches it), each mapped by ``logit(α + (1 − 2α) u)`` and standardised. A masked
    autoregressive flow of rational-quadratic splines (NSF) models them given
    ``log(E / 10 GeV)`` and the particle; it has one variable per layer, so sampling it
    autoregressively costs a few passes only.

Flow II: the normalised cell pattern
    Each cell's (dequantised) share of its layer's energy, mapped by the same logit and
    standardised cell by cell, is modelled by spline coupling blocks (rational-quadratic
    splines of ``bins`` bins on ``[−bound, bound]``) with random complementary masks, given
    the incident energy and flow I's standardised variables.

Generation
    Flow I gives the layer energies, flow II the pattern; shares below ``threshold`` are
    set to zero (the dequantisation undone), each layer's pattern is renormalised to sum
    to one and multiplied by its energy.

The training loss is the negative log-likelihood per shower in the standardised variables
(flow I plus flow II); the validation loss is the same with a fixed noise draw, so early
stopping follows the validation likelihood.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Annotated, Any

import pydantic
import torch
import zuko
from torch import nn

from hepml.models._calo import (
    check_layout,
    condition,
    expit,
    layers_from_u,
    logit,
    shower_data_kwargs,
    u_logits,
    warn_outside_range,
)
from hepml.models._registry import ModelContract, register_model

__all__ = ["CaloFlow"]

_Count = Annotated[int, pydantic.Field(ge=1)]
_Positive = Annotated[float, pydantic.Field(gt=0)]
#: Seed of the coupling masks (part of the architecture, not of the training).
MASK_SEED = 1234


def _coupling_flow(features: int, context: int, *, blocks: int, hidden: int, bins: int,
                   bound: float) -> zuko.flows.Flow:
    """Spline coupling blocks with random complementary masks, over a standard normal."""
    gen = torch.Generator().manual_seed(MASK_SEED)
    spline = functools.partial(zuko.transforms.MonotonicRQSTransform, bound=bound)
    shapes = ((bins,), (bins,), (bins - 1,))
    transforms = []
    mask = torch.zeros(features, dtype=torch.bool)
    for i in range(blocks):
        if i % 2 == 0:  # a fresh random half, then its complement
            mask = torch.zeros(features, dtype=torch.bool)
            mask[torch.randperm(features, generator=gen)[: features // 2]] = True
        else:
            mask = ~mask
        transforms.append(zuko.flows.GeneralCouplingTransform(
            features, context, mask=mask, univariate=spline, shapes=shapes,
            hidden_features=(hidden, hidden), activation=nn.SiLU))
    base = zuko.flows.UnconditionalDistribution(
        zuko.distributions.DiagNormal, torch.zeros(features), torch.ones(features), buffer=True)
    return zuko.flows.Flow(transforms, base)


@register_model("caloflow",
                data_args=("layer_shapes", "particles", "energy_min", "energy_max"))
class CaloFlow(nn.Module):
    """Two conditional normalizing flows: layer energies, then the normalised cell pattern.

    Inputs of a training batch are those of :class:`~hepml.models.calogan.CaloGAN`:
    ``(cells, energy, particle)`` with the cells of all layers flattened in GeV.

    Args:
        layer_shapes: (rows, columns) of each layer, front first.
        particles: PDG ids the flows are conditioned on (one-hot); one id means none.
        energy_transforms: Autoregressive spline transforms of flow I.
        energy_hidden: Width of flow I's two hidden layers.
        blocks: Coupling blocks of flow II.
        hidden: Width of the two hidden layers of each coupling block's network.
        bins: Spline bins of both flows.
        bound: Flow II's splines act on ``[−bound, bound]`` (identity outside), in units of
            each cell's standard deviation.
        noise: Dequantisation of the layer energies: uniform noise in ``[0, noise)`` GeV
            added to every cell.
        pattern_noise: Dequantisation of the pattern: uniform noise in
            ``[0, pattern_noise)`` added to each cell's share of its layer's energy.
        threshold: Generated shares below this are empty cells (a few times
            ``pattern_noise``; the faintest real deposits lie well above it).
        alpha: The logit's offset, ``logit(α + (1 − 2α) u)``.
        u_scale: ``u₀ = E_tot / (u_scale · E)``; must exceed the largest response.
        energy_min: Lowest incident energy (GeV) of the training sample; set by the task.
        energy_max: Highest incident energy (GeV) of the training sample; set by the task.
    """

    contract = ModelContract(
        inputs=("energy", "particle", "z_energy", "z_cells"),
        outputs=("layer_0", "layer_1", "layer_2"),
        axes={"energy": {0: "batch"}, "particle": {0: "batch"}, "z_energy": {0: "batch"},
              "z_cells": {0: "batch"}},
        what="CaloFlow sampler: showers in GeV from standard normal noise",
        descriptions={
            "energy": "[batch] incident energy in GeV, float32",
            "particle": "[batch] int64 index into 'particles' (PDG ids); ignored by a "
                        "generator of one particle",
            "z_energy": "[batch, layers] noise of the layer-energy flow, float32, drawn from "
                        "N(0, 1) by the user",
            "z_cells": "[batch, cells] noise of the cell-pattern flow, float32, drawn from "
                       "N(0, 1) by the user",
            "layer_*": "[batch, rows, columns] cell energies in GeV of calorimeter {name} "
                       "(CaloGAN layout)"},
        inside="inside the graph: the condition [log(E / 10 GeV), one-hot particle], both "
               "flows' inverses, the logit and standardisation undone, the layer "
               "normalisation and the zero-suppression below the dequantisation noise",
        default_representation=None, forward_args=("energy", "particle", "z_energy", "z_cells"),
        # the zero-suppression threshold switches a faint cell on or off when float32
        # rounding differs between runtimes; 1e-4 of the largest cell is ~ 1 MeV
        tolerance=1e-4)

    @classmethod
    def data_kwargs(cls, shape: Any, *, particles: Sequence[int],
                    energy_range: Sequence[float]) -> dict[str, Any]:
        """The shower layout, particles and energy range of the training showers."""
        return shower_data_kwargs("caloflow", shape, particles=particles,
                                  energy_range=energy_range)

    def output_names(self) -> tuple[str, ...]:
        """Names of the forward's outputs: one ``layer_<i>`` per calorimeter layer."""
        return tuple(f"layer_{i}" for i in range(len(self.layer_shapes)))

    def noise_sizes(self) -> dict[str, int]:
        """The forward's noise inputs and their sizes per shower."""
        return {"z_energy": self.n_layers, "z_cells": self.n_cells}

    def __init__(self, layer_shapes: Sequence[Sequence[int]] = ((3, 96), (12, 12), (12, 6)),
                 particles: Sequence[int] = (-11,), energy_transforms: _Count = 6,
                 energy_hidden: _Count = 64, blocks: _Count = 8, hidden: _Count = 256,
                 bins: Annotated[int, pydantic.Field(ge=2)] = 8, bound: _Positive = 6.0,
                 noise: _Positive = 1e-6, pattern_noise: _Positive = 1e-6,
                 threshold: _Positive = 3e-6,
                 alpha: Annotated[float, pydantic.Field(gt=0, lt=0.5)] = 1e-6,
                 u_scale: _Positive = 2.0, energy_min: float = 1.0, energy_max: float = 100.0
                 ) -> None:
        super().__init__()
        shapes = check_layout(layer_shapes, particles, energy_min, energy_max)
        if min(energy_transforms, blocks, energy_hidden, hidden) < 1 or bins < 2:
            raise ValueError("transforms, blocks and widths must be positive and bins >= 2")
        if not (noise > 0 and 0 < alpha < 0.5 and u_scale > 0 and bound > 0):
            raise ValueError("noise, u_scale and bound must be positive, alpha in (0, 0.5)")
        self.layer_shapes = shapes
        self.cells = [r * c for r, c in shapes]
        self.n_cells = sum(self.cells)
        self.n_layers = len(shapes)
        self.particles = [int(p) for p in particles]
        if threshold <= pattern_noise:
            raise ValueError(f"threshold ({threshold}) must exceed pattern_noise "
                             f"({pattern_noise})")
        self.noise, self.alpha, self.u_scale = float(noise), float(alpha), float(u_scale)
        self.pattern_noise, self.threshold = float(pattern_noise), float(threshold)
        self.cond_dim = 1 + (len(self.particles) if len(self.particles) > 1 else 0)
        self.energy_flow = zuko.flows.NSF(self.n_layers, self.cond_dim, bins=bins,
                                          transforms=energy_transforms,
                                          hidden_features=(energy_hidden, energy_hidden))
        self.cell_flow = _coupling_flow(self.n_cells, self.cond_dim + self.n_layers,
                                        blocks=blocks, hidden=hidden, bins=bins, bound=bound)
        # standardisation of both flows' variables, set from training showers
        self.register_buffer("u_mean", torch.zeros(self.n_layers))
        self.register_buffer("u_std", torch.ones(self.n_layers))
        self.register_buffer("cell_mean", torch.zeros(self.n_cells))
        self.register_buffer("cell_std", torch.ones(self.n_cells))
        self.register_buffer("energy_range", torch.tensor([energy_min, energy_max]))
        # layer index of every flattened cell
        self.register_buffer("cell_layer", torch.repeat_interleave(
            torch.arange(self.n_layers), torch.tensor(self.cells)), persistent=False)

    # ---------------------------------------------------------------- variables
    def condition(self, energy: torch.Tensor, particle: torch.Tensor | None = None) -> torch.Tensor:
        """The flows' condition: log(E / 10 GeV) and the particle's one-hot code."""
        return condition(energy, particle, self.particles, linear=False)

    def _layer_energies(self, cells: torch.Tensor) -> torch.Tensor:
        return torch.stack([x.sum(1) for x in torch.split(cells, self.cells, dim=1)], dim=1)

    def variables(self, cells: torch.Tensor, energy: torch.Tensor,
                  generator: torch.Generator | None = None
                  ) -> tuple[torch.Tensor, torch.Tensor]:
        """Dequantised showers → (flow I's u variables, flow II's cell variables), logit space.

        Neither is standardised yet.
        """
        cells = cells.float()
        noisy = cells + self.noise * torch.rand(cells.shape, device=cells.device,
                                                generator=generator)
        layer = self._layer_energies(noisy)
        pattern = cells / layer[:, self.cell_layer] + self.pattern_noise * torch.rand(
            cells.shape, device=cells.device, generator=generator)
        return (u_logits(layer, energy, u_scale=self.u_scale, alpha=self.alpha),
                logit(pattern, self.alpha))

    @torch.no_grad()
    def initialise_from(self, cells: torch.Tensor, energy: torch.Tensor) -> None:
        """Set the standardisation of both flows' variables from training showers."""
        u, x = self.variables(cells, energy,
                              torch.Generator(device=cells.device).manual_seed(MASK_SEED))
        wide = torch.float32 if cells.device.type == "mps" else torch.float64
        for values, mean, std in ((u, self.u_mean, self.u_std), (x, self.cell_mean, self.cell_std)):
            values = values.to(wide)
            mean.copy_(values.mean(0))
            std.copy_(values.std(0).clamp_min(1e-3))

    def log_prob(self, cells: torch.Tensor, energy: torch.Tensor,
                 particle: torch.Tensor | None = None,
                 generator: torch.Generator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-densities of flow I and flow II per shower, in the standardised variables."""
        energy = energy.float().reshape(-1)
        cond = self.condition(energy, particle)
        u, x = self.variables(cells, energy, generator)
        u = (u - self.u_mean) / self.u_std
        x = (x - self.cell_mean) / self.cell_std
        lp_energy = self.energy_flow(cond).log_prob(u)
        lp_cells = self.cell_flow(torch.cat([cond, u], dim=1)).log_prob(x)
        return lp_energy, lp_cells

    # ---------------------------------------------------------------- sampling
    def forward(self, energy: torch.Tensor, particle: torch.Tensor | None = None,
                z_energy: torch.Tensor | None = None, z_cells: torch.Tensor | None = None
                ) -> list[torch.Tensor]:
        """Showers from noise: one (B, rows, columns) tensor per layer, in GeV.

        Args:
            energy: Incident energies in GeV, shape (B,).
            particle: Particle indices into ``particles`` (needed with several particles).
            z_energy: Flow I's noise (B, layers); drawn from N(0, 1) when omitted.
            z_cells: Flow II's noise (B, cells); drawn from N(0, 1) when omitted.
        """
        energy = energy.float().reshape(-1)
        b, dev = energy.shape[0], energy.device
        if z_energy is None:
            z_energy = torch.randn(b, self.n_layers, device=dev)
        if z_cells is None:
            z_cells = torch.randn(b, self.n_cells, device=dev)
        cond = self.condition(energy, particle)
        u_std = self.energy_flow(cond).transform.inv(z_energy)
        x = self.cell_flow(torch.cat([cond, u_std], dim=1)).transform.inv(z_cells)
        return self.decode(u_std * self.u_std + self.u_mean, x * self.cell_std + self.cell_mean,
                           energy)

    def decode(self, u_logit: torch.Tensor, x_logit: torch.Tensor, energy: torch.Tensor
               ) -> list[torch.Tensor]:
        """Both flows' variables (logit space, not standardised) → showers in GeV.

        The inverse of :meth:`variables` up to the dequantisation noise: shares below
        ``threshold`` become empty cells and each layer's pattern is renormalised to sum
        to one.
        """
        b = energy.shape[0]
        layers = layers_from_u(u_logit, energy.float(), u_scale=self.u_scale, alpha=self.alpha)
        pattern = expit(x_logit, self.alpha)
        out = []
        for i, p in enumerate(torch.split(pattern, self.cells, dim=1)):
            p = torch.where(p < self.threshold, torch.zeros_like(p), p)
            p = p / p.sum(1, keepdim=True).clamp_min(1e-12)
            out.append((p * layers[i].unsqueeze(1)).view(b, *self.layer_shapes[i]))
        return out

    @torch.no_grad()
    def sample(self, energy: torch.Tensor, particle: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None,
               check_range: bool = True) -> list[torch.Tensor]:
        """Generate showers at ``energy`` (GeV), warning if it is outside the training range."""
        energy = energy.float().reshape(-1)
        if check_range:
            warn_outside_range(energy, self.energy_range, stacklevel=2)
        b, dev = energy.shape[0], energy.device
        z_energy = torch.randn(b, self.n_layers, device=dev, generator=generator)
        z_cells = torch.randn(b, self.n_cells, device=dev, generator=generator)
        return self.forward(energy, particle, z_energy, z_cells)

    # ---------------------------------------------------------------- training
    def optimizer_groups(self) -> dict[str, dict[str, Any]]:
        """One optimiser for both flows (their losses add)."""
        return {"flows": {"params": list(self.parameters())}}

    def training_step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor,
                      step: Callable[[str, torch.Tensor], None]) -> dict[str, torch.Tensor]:
        """One maximum-likelihood step on a batch: the mean NLL per shower of both flows."""
        cells, energy, particle = inputs
        # no autocast: the flows train in float32, as splines and log-determinants lose
        # too much in half precision
        lp_energy, lp_cells = self.log_prob(cells, energy, particle)
        nll_energy, nll_cells = -lp_energy.mean(), -lp_cells.mean()
        step("flows", nll_energy + nll_cells)
        return {"loss": (nll_energy + nll_cells).detach(), "nll_energy": nll_energy.detach(),
                "nll_cells": nll_cells.detach()}

    @torch.no_grad()
    def validation_step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """The mean NLL per shower with a fixed noise draw (deterministic)."""
        cells, energy, particle = inputs
        gen = torch.Generator(device=cells.device).manual_seed(MASK_SEED)
        lp_energy, lp_cells = self.log_prob(cells, energy, particle, gen)
        return -(lp_energy + lp_cells).mean()


def parameter_count(model: CaloFlow) -> dict[str, int]:
    """Parameters of each flow."""
    return {"energy_flow": sum(p.numel() for p in model.energy_flow.parameters()),
            "cell_flow": sum(p.numel() for p in model.cell_flow.parameters())}

