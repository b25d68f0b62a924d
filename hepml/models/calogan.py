"""CaloGAN: a generative adversarial network for showers in a layered calorimeter.

The design follows CaloGAN (Paganini, de Oliveira, Nachman, arXiv:1705.02355 and
arXiv:1712.10321), with a gradient penalty for stable training:

Generator
    A latent vector and the condition (log incident energy, particle type) feed one
    stream per calorimeter layer. Each stream is a dense layer to a coarse grid, upsampling
    convolution blocks to the layer's cell grid, and a locally connected output (a gain and
    bias per cell, as LAGAN's locally connected layers give every position its own
    response). Layer-to-layer transfer: each layer adds a learned linear map of the layer
    in front of it, gated cell by cell by an attention weight computed from the latent
    input, so deeper layers see where the shower developed earlier. A ReLU output gives
    exact zeros, hence sparse showers. The streams produce each cell's share of the
    incident energy; cells in GeV are that share times the incident energy.

Discriminator
    Per layer, convolutions over two channels (the energy share and its logarithm, so faint
    cells and empty ones count) reduce the layer to a feature vector. Energy-consistency
    features are computed directly: the logarithm of each layer's share of the incident
    energy and the total response. Minibatch discrimination
    (Salimans et al., arXiv:1606.03498) on both sets of features lets the discriminator see
    a batch's diversity, which counters mode collapse. A conditional head gives the
    real/fake logit; an auxiliary head regresses the log incident energy from the shower
    alone (trained on real showers), and the generator is penalised when the energy
    regressed from its showers differs from the requested one.

Training
    Non-saturating GAN loss with the R1 gradient penalty on real showers (Mescheder et al.,
    arXiv:1801.04406), Adam with β = (0.5, 0.9). One discriminator step per generator step.
    The validation loss compares the first two moments of a batch's layer shares, response
    and occupancies between generated and real showers, in units of the real spread.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F

from hepml.models._registry import register_model

__all__ = ["CaloGAN", "EnergyRangeWarning", "MinibatchDiscrimination"]

#: Reference energy (GeV) of the log-energy condition.
E_REF = 10.0
#: Shares of the incident energy below this count as empty in the log channel.
LOG_FLOOR = 1e-5


class EnergyRangeWarning(UserWarning):
    """Showers were requested at an incident energy outside the generator's training range."""


def _upsampling_plan(rows: int, cols: int, max_steps: int = 3) -> tuple[tuple[int, int], list[tuple[int, int]]]:
    """A coarse start grid and the ×2 (or ×1) upsampling factors per step to reach (rows, cols)."""

    def halvings(n: int) -> int:
        k = 0
        while n % 2 == 0 and n // 2 >= 3 and k < max_steps:
            n //= 2
            k += 1
        return k

    kr, kc = halvings(rows), halvings(cols)
    steps = max(kr, kc)
    factors = [(2 if i < kr else 1, 2 if i < kc else 1) for i in range(steps)]
    return (rows >> kr, cols >> kc), factors


class _LayerStream(nn.Module):
    """Latent input → one layer's pre-activation cell grid."""

    def __init__(self, in_dim: int, shape: tuple[int, int], channels: int) -> None:
        super().__init__()
        self.shape = shape
        (r0, c0), factors = _upsampling_plan(*shape)
        self.start = (channels, r0, c0)
        self.fc = nn.Sequential(nn.Linear(in_dim, channels * r0 * c0), nn.LeakyReLU(0.2))
        blocks: list[nn.Module] = []
        ch = channels
        for fr, fc in factors:
            out = max(ch // 2, 8)
            blocks += [nn.Upsample(scale_factor=(fr, fc), mode="nearest"),
                       nn.Conv2d(ch, out, 3, padding=1), nn.LeakyReLU(0.2)]
            ch = out
        blocks += [nn.Conv2d(ch, ch, 3, padding=1), nn.LeakyReLU(0.2), nn.Conv2d(ch, 1, 3, padding=1)]
        self.conv = nn.Sequential(*blocks)
        # locally connected output: every cell its own gain and bias
        self.gain = nn.Parameter(torch.zeros(shape))
        self.bias = nn.Parameter(torch.zeros(shape))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        x = self.fc(h).view(-1, *self.start)
        x = self.conv(x)[:, 0]
        return x * (1.0 + self.gain) + self.bias


class _Generator(nn.Module):
    def __init__(self, shapes: Sequence[tuple[int, int]], latent_dim: int, cond_dim: int,
                 channels: int, transfer: bool) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.cells = [r * c for r, c in self.shapes]
        in_dim = latent_dim + cond_dim
        self.streams = nn.ModuleList(_LayerStream(in_dim, s, channels) for s in self.shapes)
        # each layer's cell shares start at about 1/cells, so a layer starts near unit response
        self.out_scale = [1.0 / n for n in self.cells]
        self.transfer = transfer
        if transfer:
            self.transfers = nn.ModuleList(nn.Linear(self.cells[i - 1], self.cells[i])
                                           for i in range(1, len(self.shapes)))
            self.gates = nn.ModuleList(nn.Linear(in_dim, self.cells[i])
                                       for i in range(1, len(self.shapes)))
            for lin in self.transfers:  # start as independent streams
                nn.init.zeros_(lin.weight)
                nn.init.zeros_(lin.bias)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        h = torch.cat([z, cond], dim=1)
        out: list[torch.Tensor] = []
        for i, stream in enumerate(self.streams):
            pre = stream(h)
            if self.transfer and i > 0:
                prev = out[-1].flatten(1)
                gate = torch.sigmoid(self.gates[i - 1](h))
                pre = pre + (gate * self.transfers[i - 1](prev)).view_as(pre)
            out.append(F.relu(pre) * self.out_scale[i])
        return out


class MinibatchDiscrimination(nn.Module):
    """Minibatch discrimination (Salimans et al. 2016): closeness of each entry to the batch.

    Each entry's features are projected to ``kernels`` rows of ``dim`` values; for each
    kernel the output is ``sum_j exp(-|M_i - M_j|²)`` over the other entries of the batch.
    The paper's L1 distance is replaced by the squared Euclidean one, which matrix products
    compute fast and which can be differentiated twice, as the gradient penalty needs.
    """

    def __init__(self, in_features: int, kernels: int = 16, dim: int = 8) -> None:
        super().__init__()
        self.kernels, self.dim = kernels, dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * dim) * 0.1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = (x @ self.T).view(-1, self.kernels, self.dim).transpose(0, 1)  # (kernels, B, dim)
        sq = m.pow(2).sum(-1)
        # squared distances by matrix products: cheap, and twice differentiable (R1 penalty)
        d2 = (sq.unsqueeze(2) + sq.unsqueeze(1) - 2.0 * m @ m.transpose(1, 2)).clamp_min(0.0)
        return (torch.exp(-d2).sum(2) - 1.0).transpose(0, 1)  # without each entry's own term


class _LayerFeatures(nn.Module):
    def __init__(self, shape: tuple[int, int], channels: int, out: int) -> None:
        super().__init__()
        rows, cols = shape
        stride = (2 if rows >= 6 else 1, 2 if cols >= 6 else 1)
        self.conv = nn.Sequential(
            nn.Conv2d(2, channels, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1, stride=stride), nn.LeakyReLU(0.2),
            nn.Conv2d(channels, channels, 3, padding=1, stride=stride), nn.LeakyReLU(0.2))
        with torch.no_grad():
            n = self.conv(torch.zeros(1, 2, rows, cols)).numel()
        self.fc = nn.Sequential(nn.Linear(n, out), nn.LeakyReLU(0.2))

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        return self.fc(self.conv(u).flatten(1))


def discriminator_inputs(layers: Sequence[torch.Tensor]) -> tuple[list[torch.Tensor], torch.Tensor]:
    """What the discriminator sees of showers given as shares of the incident energy.

    Returns:
        Per layer a two-channel image (B, 2, rows, columns): the share times 10 and
        ``log(1 + share/floor) / log(1 + 1/floor)``, which is 0 for an empty cell and
        resolves faint ones; and the energy-consistency features (B, n_layers + 1): the
        log share of each layer and the total response.
    """
    scale = math.log1p(1.0 / LOG_FLOOR)
    images = [torch.stack([x * 10.0, torch.log1p(x / LOG_FLOOR) / scale], dim=1) for x in layers]
    shares = torch.stack([x.flatten(1).sum(1) for x in layers], dim=1)
    energy = torch.cat([torch.log(shares + LOG_FLOOR), shares.sum(1, keepdim=True)], dim=1)
    return images, energy


class _Discriminator(nn.Module):
    def __init__(self, shapes: Sequence[tuple[int, int]], cond_dim: int, channels: int,
                 features: int, kernels: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(_LayerFeatures(tuple(s), channels, features) for s in shapes)
        n_energy = len(shapes) + 1
        n_shower = features * len(shapes)
        self.mbd_shower = MinibatchDiscrimination(n_shower, kernels)
        self.mbd_energy = MinibatchDiscrimination(n_energy, kernels)
        n_all = n_shower + n_energy + 2 * kernels
        self.head = nn.Sequential(nn.Linear(n_all + cond_dim, 128), nn.LeakyReLU(0.2),
                                  nn.Linear(128, 1))
        self.energy_head = nn.Sequential(nn.Linear(n_shower + n_energy, 64), nn.LeakyReLU(0.2),
                                         nn.Linear(64, 1))

    def forward(self, images: Sequence[torch.Tensor], energy: torch.Tensor, cond: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor]:
        shower = torch.cat([f(u) for f, u in zip(self.layers, images, strict=True)], dim=1)
        both = torch.cat([shower, energy], dim=1)
        mbd = torch.cat([self.mbd_shower(shower), self.mbd_energy(energy)], dim=1)
        logit = self.head(torch.cat([both, mbd, cond], dim=1)).squeeze(1)
        log_energy = self.energy_head(both).squeeze(1)
        return logit, log_energy


@register_model("calogan")
class CaloGAN(nn.Module):
    """CaloGAN generator and discriminator, trained by the shared trainer.

    Inputs of a batch are ``(cells, energy, particle)``: all cells of all layers
    flattened and concatenated in GeV, shape (B, sum of cells); the incident energy in GeV,
    shape (B,); the particle index into ``particles``, shape (B,).

    Args:
        layer_shapes: (rows, columns) of each layer, front first.
        particles: PDG ids the generator is conditioned on (one-hot); one id means none.
        latent_dim: Size of the latent vector.
        channels: Convolution channels of the generator streams (halved per upsampling).
        disc_channels: Convolution channels of the discriminator.
        disc_features: Features per layer in the discriminator.
        minibatch_kernels: Kernels of each minibatch-discrimination block.
        transfer: Use the layer-to-layer transfer.
        r1_weight: Weight γ of the R1 penalty γ/2·|∇D(x)|² on real showers.
        energy_weight: Weight of the auxiliary incident-energy regression loss.
        learning_rate_d: Discriminator learning rate (the generator uses the configured one);
            ``None`` uses the configured one for both.
        energy_min: Lowest incident energy (GeV) of the training sample; set by the task.
        energy_max: Highest incident energy (GeV) of the training sample; set by the task.
    """

    def __init__(self, layer_shapes: Sequence[Sequence[int]] = ((3, 96), (12, 12), (12, 6)),
                 particles: Sequence[int] = (-11,), latent_dim: int = 64, channels: int = 32,
                 disc_channels: int = 16, disc_features: int = 32, minibatch_kernels: int = 16,
                 transfer: bool = True, r1_weight: float = 1.0, energy_weight: float = 1.0,
                 learning_rate_d: float | None = None, energy_min: float = 1.0,
                 energy_max: float = 100.0) -> None:
        super().__init__()
        shapes = [tuple(int(v) for v in s) for s in layer_shapes]
        if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
            raise ValueError(f"layer_shapes must be (rows, columns) pairs, got {layer_shapes}")
        if not particles:
            raise ValueError("particles: at least one PDG id")
        if not 0 < energy_min <= energy_max:
            raise ValueError(f"energy range [{energy_min}, {energy_max}] GeV is not valid")
        self.layer_shapes = shapes
        self.cells = [r * c for r, c in shapes]
        self.particles = [int(p) for p in particles]
        self.latent_dim = latent_dim
        self.r1_weight = r1_weight
        self.energy_weight = energy_weight
        self.learning_rate_d = learning_rate_d
        self.cond_dim = 2 + (len(self.particles) if len(self.particles) > 1 else 0)
        self.generator = _Generator(shapes, latent_dim, self.cond_dim, channels, transfer)
        self.discriminator = _Discriminator(shapes, self.cond_dim, disc_channels, disc_features,
                                            minibatch_kernels)
        self.register_buffer("energy_range", torch.tensor([energy_min, energy_max]))

    # ----------------------------------------------------------------- helpers
    def condition(self, energy: torch.Tensor, particle: torch.Tensor | None = None) -> torch.Tensor:
        """The conditioning vector: log(E/10 GeV), E/100 GeV and the particle's one-hot code."""
        energy = energy.float().reshape(-1, 1)
        parts = [torch.log(energy / E_REF), energy / 100.0]
        if len(self.particles) > 1:
            if particle is None:
                raise ValueError(f"this generator knows several particles {self.particles}; "
                                 "say which one to generate")
            parts.append(F.one_hot(particle.long().reshape(-1), len(self.particles)).float())
        return torch.cat(parts, dim=1)

    def split(self, cells: torch.Tensor) -> list[torch.Tensor]:
        """Flat cells (B, sum of cells) → one (B, rows, columns) tensor per layer."""
        return [x.reshape(-1, *s) for x, s in
                zip(torch.split(cells, self.cells, dim=1), self.layer_shapes, strict=True)]

    def particle_index(self, pdg: torch.Tensor | int) -> torch.Tensor:
        """Indices into ``particles`` of PDG ids; an unknown id is an error."""
        pdg = torch.as_tensor(pdg).reshape(-1)
        known = torch.tensor(self.particles, device=pdg.device)
        match = pdg.unsqueeze(1) == known.unsqueeze(0)
        if not bool(match.any(1).all()):
            bad = sorted(set(pdg[~match.any(1)].tolist()))
            raise ValueError(f"particle(s) {bad} not among those this generator was trained on: "
                             f"{self.particles}")
        return match.float().argmax(1)

    def _noise(self, n: int, device: torch.device, generator: torch.Generator | None = None
               ) -> torch.Tensor:
        return torch.randn(n, self.latent_dim, device=device, generator=generator)

    def forward(self, energy: torch.Tensor, particle: torch.Tensor | None = None,
                z: torch.Tensor | None = None) -> list[torch.Tensor]:
        """Generated showers: one (B, rows, columns) tensor per layer, in GeV.

        Args:
            energy: Incident energies in GeV, shape (B,).
            particle: Particle indices into ``particles`` (needed with several particles).
            z: Latent vectors (B, latent_dim); drawn from N(0, 1) when omitted.
        """
        energy = energy.float().reshape(-1)
        if z is None:
            z = self._noise(len(energy), energy.device)
        shares = self.generator(z, self.condition(energy, particle))
        return [x * energy.view(-1, 1, 1) for x in shares]

    @torch.no_grad()
    def sample(self, energy: torch.Tensor, particle: torch.Tensor | None = None, *,
               generator: torch.Generator | None = None) -> list[torch.Tensor]:
        """Generate showers at ``energy`` (GeV), warning if it is outside the training range."""
        energy = energy.float().reshape(-1)
        lo, hi = (float(v) for v in self.energy_range)
        outside = (energy < lo * (1 - 1e-6)) | (energy > hi * (1 + 1e-6))
        if bool(outside.any()):
            warnings.warn(
                f"{int(outside.sum())} of {len(energy)} requested incident energies lie outside "
                f"the training range [{lo:g}, {hi:g}] GeV; the generator extrapolates there",
                EnergyRangeWarning, stacklevel=2)
        z = self._noise(len(energy), energy.device, generator)
        return self.forward(energy, particle, z)

    # ---------------------------------------------------------------- training
    def optimizer_groups(self) -> dict[str, dict[str, Any]]:
        """Two optimisers: the discriminator first (it steps first in each batch)."""
        d: dict[str, Any] = {"params": list(self.discriminator.parameters()), "betas": (0.5, 0.9)}
        if self.learning_rate_d is not None:
            d["lr"] = self.learning_rate_d
        return {"discriminator": d,
                "generator": {"params": list(self.generator.parameters()), "betas": (0.5, 0.9)}}

    def _real_shares(self, cells: torch.Tensor, energy: torch.Tensor) -> list[torch.Tensor]:
        return self.split(cells.float() / energy.float().view(-1, 1))

    def _discriminate(self, shares: Sequence[torch.Tensor], cond: torch.Tensor
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        images, energy = discriminator_inputs(shares)
        return self.discriminator(images, energy, cond)

    def training_step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor,
                      step: Callable[[str, torch.Tensor], None]) -> dict[str, torch.Tensor]:
        """One discriminator and one generator update on a batch.

        The R1 penalty is taken with respect to what the discriminator sees (the
        two-channel images and the energy features of :func:`discriminator_inputs`).
        """
        cells, energy, particle = inputs
        energy = energy.float()
        cond = self.condition(energy, particle)
        log_e = torch.log(energy / E_REF)
        images, efeat = discriminator_inputs(self._real_shares(cells, energy))
        real = [x.detach().requires_grad_(self.r1_weight > 0) for x in [*images, efeat]]
        autocast = getattr(step, "autocast", None)
        ctx = autocast if autocast is not None else torch.enable_grad
        # discriminator
        with ctx():
            with torch.no_grad():
                fake = self.generator(self._noise(len(energy), energy.device), cond)
            d_real, e_real = self.discriminator(real[:-1], real[-1], cond)
            d_fake, _ = self._discriminate(fake, cond)
            loss_d = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            loss_e = F.smooth_l1_loss(e_real.float(), log_e, beta=0.1)
        r1 = torch.zeros((), device=energy.device)
        if self.r1_weight > 0:
            grads = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
            r1 = sum(g.float().pow(2).flatten(1).sum(1) for g in grads).mean()
        step("discriminator", loss_d + self.energy_weight * loss_e + 0.5 * self.r1_weight * r1)
        # generator
        with ctx():
            fake = self.generator(self._noise(len(energy), energy.device), cond)
            d_fake, e_fake = self._discriminate(fake, cond)
            adv = F.softplus(-d_fake).mean()
            loss_ge = F.smooth_l1_loss(e_fake.float(), log_e, beta=0.1)
        step("generator", adv + self.energy_weight * loss_ge)
        return {"loss": adv.detach() + self.energy_weight * loss_ge.detach(),
                "d_loss": loss_d.detach(), "r1": r1.detach(), "energy_loss": loss_e.detach(),
                "d_real": torch.sigmoid(d_real.detach()).mean(),
                "d_fake": torch.sigmoid(d_fake.detach()).mean()}

    @staticmethod
    def _summary(layers: Sequence[torch.Tensor]) -> torch.Tensor:
        shares = torch.stack([x.flatten(1).sum(1) for x in layers], dim=1)
        total = shares.sum(1, keepdim=True)
        occupancy = torch.stack([(x.flatten(1) > 0).float().mean(1) for x in layers], dim=1)
        fractions = shares / total.clamp_min(1e-12)
        return torch.cat([torch.log(shares.clamp_min(LOG_FLOOR)), total, fractions, occupancy], 1)

    @torch.no_grad()
    def validation_step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor) -> torch.Tensor:
        """Moment distance of layer shares, response and occupancy, generated vs real."""
        cells, energy, particle = inputs
        energy = energy.float()
        real = self._summary(self._real_shares(cells, energy))
        fake = self._summary(self.generator(self._noise(len(energy), energy.device),
                                            self.condition(energy, particle)))
        scale = real.std(0).clamp_min(1e-3)
        d_mean = ((fake.mean(0) - real.mean(0)) / scale).pow(2)
        d_std = ((fake.std(0) - real.std(0)) / scale).pow(2)
        return (d_mean + d_std).mean()
