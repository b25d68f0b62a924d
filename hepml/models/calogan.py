"""CaloGAN: a generative adversarial network for showers in a layered calorimeter.

The design follows CaloGAN (Paganini, de Oliveira, Nachman, arXiv:1705.02355 and
arXiv:1712.10321), with a gradient penalty for stable training:

Generator
    A latent vector and the condition (log incident energy, particle type) pass a shared
    dense trunk and then feed one stream per calorimeter layer. A stream is either dense (a
    hidden layer, then an output layer in which every cell has its own weights, the fully
    locally connected limit of LAGAN's locally connected layers; the default, because it
    generates fastest) or convolutional (a dense layer to a coarse grid, upsampling
    convolutions to the layer's cell grid, then a gain and bias per cell). Layer-to-layer
    transfer: each layer adds a learned linear map (of low rank) of the layer
    in front of it, gated cell by cell by an attention weight computed from the latent
    input, so deeper layers see where the shower developed earlier. The streams produce a
    log-scaled share of the incident energy per cell, y = log(1 + share/10⁻⁵) / log(1 + 10⁵),
    as tanh(ReLU(pre-activation)) (so five decades of cell energy need pre-activations of
    order one, no cell exceeds the incident energy, and a negative pre-activation gives an
    exactly empty cell, hence sparse showers);
    cells in GeV are share(y) times the incident energy.

Discriminator
    Per layer, convolutions over two channels (the energy share and its logarithm, so faint
    cells and empty ones count) reduce the layer to a feature vector. Energy-consistency
    features are computed directly: the logarithm of each layer's share of the incident
    energy and the total response E_tot/E. The head sees them beside the condition (the
    incident energy), so a shower whose energy does not fit its incident energy is easy to
    reject. Minibatch discrimination (Salimans et al., arXiv:1606.03498) on both sets of
    features lets the discriminator see a batch's diversity, which counters mode collapse.

Energy consistency in the generator loss
    Besides fooling the discriminator, the generator matches the mean and the spread of the
    energy-consistency features over a batch to those of the real showers of the same
    batch (same incident energies): |Δmean| + |Δstd| summed over the log layer shares and
    the response, weighted by ``energy_weight``.

Training
    Either the non-saturating GAN loss with the R1 gradient penalty on real showers
    (Mescheder et al., arXiv:1801.04406), or the Wasserstein loss with the gradient penalty
    on interpolates (WGAN-GP, Gulrajani et al., arXiv:1704.00028); Adam with β = (0.5, 0.9);
    ``n_critic`` discriminator steps per generator step.
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
#: Scale of the log-scaled energy shares: shares far below it count as empty.
LOG_FLOOR = 1e-5
LOG_SCALE = math.log1p(1.0 / LOG_FLOOR)
#: Initial bias of the generator's cell outputs: cells start empty and are switched on.
EMPTY_BIAS = -0.1


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


def sparse_relu(pre: torch.Tensor, leak: float = 0.1) -> torch.Tensor:
    """ReLU forward, so empty cells are exactly 0; slope ``leak`` backward below zero.

    A straight-through gradient: an empty cell still learns when the discriminator asks
    for energy there, instead of staying dead.
    """
    return F.relu(pre) + leak * (pre - pre.detach()) * (pre < 0)


def log_share(x: torch.Tensor) -> torch.Tensor:
    """Energy share → ``log(1 + share/floor) / log(1 + 1/floor)``: 0 when empty, 1 at share 1."""
    return torch.log1p(x / LOG_FLOOR) / LOG_SCALE


def from_log_share(y: torch.Tensor) -> torch.Tensor:
    """The inverse of :func:`log_share`."""
    return LOG_FLOOR * torch.expm1(y * LOG_SCALE)


class _DenseStream(nn.Module):
    """Latent input → one layer's pre-activation cells through a hidden dense layer.

    The output layer gives every cell its own weights: the fully locally connected limit.
    """

    def __init__(self, in_dim: int, shape: tuple[int, int], hidden: int) -> None:
        super().__init__()
        self.shape = shape
        self.net = nn.Sequential(nn.Linear(in_dim, hidden), nn.LeakyReLU(0.2),
                                 nn.Linear(hidden, shape[0] * shape[1]))
        nn.init.constant_(self.net[2].bias, EMPTY_BIAS)  # cells start (mostly) empty

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.net(h).view(-1, *self.shape)


class _Generator(nn.Module):
    def __init__(self, shapes: Sequence[tuple[int, int]], latent_dim: int, cond_dim: int,
                 channels: int, transfer: bool, stream: str, hidden: int,
                 transfer_rank: int) -> None:
        super().__init__()
        self.shapes = [tuple(s) for s in shapes]
        self.cells = [r * c for r, c in self.shapes]
        self.trunk = nn.Sequential(nn.Linear(latent_dim + cond_dim, hidden), nn.LeakyReLU(0.2),
                                   nn.Linear(hidden, hidden), nn.LeakyReLU(0.2))
        in_dim = hidden + cond_dim
        if stream == "dense":
            self.streams = nn.ModuleList(_DenseStream(in_dim, s, hidden) for s in self.shapes)
        else:
            self.streams = nn.ModuleList(_LayerStream(in_dim, s, channels) for s in self.shapes)
        self.transfer = transfer
        if transfer:
            # a low-rank linear map of the layer in front (rank ``transfer_rank``)
            self.transfers = nn.ModuleList(
                nn.Sequential(nn.Linear(self.cells[i - 1], transfer_rank, bias=False),
                              nn.Linear(transfer_rank, self.cells[i]))
                for i in range(1, len(self.shapes)))
            self.gates = nn.ModuleList(nn.Linear(in_dim, self.cells[i])
                                       for i in range(1, len(self.shapes)))
            for t in self.transfers:  # start as independent streams
                nn.init.zeros_(t[1].weight)
                nn.init.zeros_(t[1].bias)

    def forward(self, z: torch.Tensor, cond: torch.Tensor) -> list[torch.Tensor]:
        """Each cell's share of the incident energy, one (B, rows, columns) tensor per layer."""
        h = torch.cat([self.trunk(torch.cat([z, cond], dim=1)), cond], dim=1)
        out: list[torch.Tensor] = []
        prev: torch.Tensor | None = None
        for i, stream in enumerate(self.streams):
            pre = stream(h)
            if self.transfer and prev is not None:
                gate = torch.sigmoid(self.gates[i - 1](h))
                pre = pre + (gate * self.transfers[i - 1](prev.flatten(1))).view_as(pre)
            # log-scaled share: 0 is an empty cell, 1 the whole incident energy; tanh bounds
            # it below 1 without a flat (gradient-free) region
            y = torch.tanh(sparse_relu(pre))
            out.append(from_log_share(y))
            prev = y
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
    images = [torch.stack([x * 10.0, log_share(x)], dim=1) for x in layers]
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

    def forward(self, images: Sequence[torch.Tensor], energy: torch.Tensor, cond: torch.Tensor
                ) -> torch.Tensor:
        shower = torch.cat([f(u) for f, u in zip(self.layers, images, strict=True)], dim=1)
        mbd = torch.cat([self.mbd_shower(shower), self.mbd_energy(energy)], dim=1)
        return self.head(torch.cat([shower, energy, mbd, cond], dim=1)).squeeze(1)


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
        channels: Convolution channels of ``conv`` streams (halved per upsampling).
        transfer: Use the layer-to-layer transfer.
        transfer_rank: Rank of the linear map from one layer to the next.
        stream: ``dense`` (a hidden layer, then every cell its own weights: fast) or
            ``conv`` (upsampling convolutions, then a gain and bias per cell: LAGAN-like,
            several times slower to generate).
        hidden: Width of the generator's shared trunk and of the dense streams.
        disc_channels: Convolution channels of the discriminator.
        disc_features: Features per layer in the discriminator.
        minibatch_kernels: Kernels of each minibatch-discrimination block.
        loss: ``r1`` (non-saturating GAN loss with the R1 penalty γ/2·|∇D(x)|² on real
            showers) or ``wgan_gp`` (Wasserstein loss with the gradient penalty
            λ·(|∇D(x̂)| − 1)² on random interpolates of real and generated showers).
        r1_weight: Weight γ of the R1 penalty (``loss: r1``).
        gp_weight: Weight λ of the gradient penalty (``loss: wgan_gp``).
        n_critic: Discriminator updates per generator update.
        energy_weight: Weight of the energy-consistency term of the generator loss.
        learning_rate_d: Discriminator learning rate (the generator uses the configured one);
            ``None`` uses the configured one for both.
        energy_min: Lowest incident energy (GeV) of the training sample; set by the task.
        energy_max: Highest incident energy (GeV) of the training sample; set by the task.
    """

    def __init__(self, layer_shapes: Sequence[Sequence[int]] = ((3, 96), (12, 12), (12, 6)),
                 particles: Sequence[int] = (-11,), latent_dim: int = 64, channels: int = 32,
                 disc_channels: int = 16, disc_features: int = 32, minibatch_kernels: int = 16,
                 transfer: bool = True, transfer_rank: int = 32, stream: str = "dense",
                 hidden: int = 128,
                 loss: str = "r1", r1_weight: float = 10.0, gp_weight: float = 10.0,
                 n_critic: int = 1, energy_weight: float = 1.0,
                 learning_rate_d: float | None = None, energy_min: float = 1.0,
                 energy_max: float = 100.0) -> None:
        super().__init__()
        shapes = [tuple(int(v) for v in s) for s in layer_shapes]
        if not shapes or any(len(s) != 2 or min(s) < 1 for s in shapes):
            raise ValueError(f"layer_shapes must be (rows, columns) pairs, got {layer_shapes}")
        if not particles:
            raise ValueError("particles: at least one PDG id")
        if loss not in ("r1", "wgan_gp"):
            raise ValueError(f"loss must be 'r1' or 'wgan_gp', got {loss!r}")
        if n_critic < 1:
            raise ValueError(f"n_critic must be at least 1, got {n_critic}")
        if stream not in ("dense", "conv"):
            raise ValueError(f"stream must be 'dense' or 'conv', got {stream!r}")
        if not 0 < energy_min <= energy_max:
            raise ValueError(f"energy range [{energy_min}, {energy_max}] GeV is not valid")
        self.layer_shapes = shapes
        self.cells = [r * c for r, c in shapes]
        self.particles = [int(p) for p in particles]
        self.latent_dim = latent_dim
        self.loss_kind = loss
        self.r1_weight = r1_weight
        self.gp_weight = gp_weight
        self.n_critic = n_critic
        self.energy_weight = energy_weight
        self.learning_rate_d = learning_rate_d
        self.cond_dim = 2 + (len(self.particles) if len(self.particles) > 1 else 0)
        self.generator = _Generator(shapes, latent_dim, self.cond_dim, channels, transfer, stream,
                                    hidden, transfer_rank)
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

    @torch.no_grad()
    def initialise_from(self, cells: torch.Tensor, energy: torch.Tensor) -> None:
        """Start the generator near the mean shower of training data (dense streams only).

        Each cell's output bias is set so that a cell occupied in most training showers
        starts at its mean log-scaled share when occupied, and a cell that is mostly empty
        starts empty; the adversarial training then learns the fluctuations and the energy
        dependence instead of first finding where the shower is.
        """
        if not all(isinstance(s, _DenseStream) for s in self.generator.streams):
            return
        shares = self._real_shares(cells, energy)
        for stream, x in zip(self.generator.streams, shares, strict=True):
            y = log_share(x.float()).flatten(1)
            occupied = (y > 0).float()
            occupancy = occupied.mean(0)
            mean_on = (y * occupied).sum(0) / occupied.sum(0).clamp_min(1.0)
            bias = torch.where(occupancy >= 0.5, torch.atanh(mean_on.clamp(0.0, 0.95)),
                               torch.full_like(mean_on, -0.3))
            stream.net[2].bias.copy_(bias)

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

    def _discriminate(self, shares: Sequence[torch.Tensor], cond: torch.Tensor) -> torch.Tensor:
        images, energy = discriminator_inputs(shares)
        return self.discriminator(images, energy, cond)

    @staticmethod
    def _consistency(fake: torch.Tensor, real: torch.Tensor) -> torch.Tensor:
        """Batch moment distance of the energy features (log layer shares, total response)."""
        return ((fake.mean(0) - real.mean(0)).abs() + (fake.std(0) - real.std(0)).abs()).sum()

    def _critic_loss(self, real: list[torch.Tensor], fake: list[torch.Tensor],
                     cond: torch.Tensor, ctx: Callable[[], Any]) -> tuple[torch.Tensor, ...]:
        """Discriminator loss, its penalty, and the mean real / fake outputs."""
        device = cond.device
        if self.loss_kind == "r1":
            real = [x.detach().requires_grad_(self.r1_weight > 0) for x in real]
            with ctx():
                d_real = self.discriminator(real[:-1], real[-1], cond)
                d_fake = self.discriminator(fake[:-1], fake[-1], cond)
                loss = F.softplus(-d_real).mean() + F.softplus(d_fake).mean()
            penalty = torch.zeros((), device=device)
            if self.r1_weight > 0:
                grads = torch.autograd.grad(d_real.float().sum(), real, create_graph=True)
                penalty = 0.5 * self.r1_weight * sum(
                    g.float().pow(2).flatten(1).sum(1) for g in grads).mean()
            return loss, penalty, torch.sigmoid(d_real).mean(), torch.sigmoid(d_fake).mean()
        with ctx():
            d_real = self.discriminator(real[:-1], real[-1], cond)
            d_fake = self.discriminator(fake[:-1], fake[-1], cond)
            loss = d_fake.float().mean() - d_real.float().mean()
        a = torch.rand(len(cond), 1, device=device)
        mix = [(a.view(-1, *([1] * (r.ndim - 1))) * r.detach()
                + (1 - a.view(-1, *([1] * (r.ndim - 1)))) * f.detach()).requires_grad_(True)
               for r, f in zip(real, fake, strict=True)]
        with ctx():
            d_mix = self.discriminator(mix[:-1], mix[-1], cond)
        grads = torch.autograd.grad(d_mix.float().sum(), mix, create_graph=True)
        norm = torch.sqrt(sum(g.float().pow(2).flatten(1).sum(1) for g in grads) + 1e-12)
        penalty = self.gp_weight * (norm - 1.0).pow(2).mean()
        return loss, penalty, d_real.mean(), d_fake.mean()

    def training_step(self, inputs: Sequence[torch.Tensor], target: torch.Tensor,
                      step: Callable[[str, torch.Tensor], None]) -> dict[str, torch.Tensor]:
        """``n_critic`` discriminator updates and one generator update on a batch.

        Penalties are taken with respect to what the discriminator sees (the two-channel
        images and the energy features of :func:`discriminator_inputs`).
        """
        cells, energy, particle = inputs
        energy = energy.float()
        cond = self.condition(energy, particle)
        images, efeat = discriminator_inputs(self._real_shares(cells, energy))
        real = [*images, efeat]
        autocast = getattr(step, "autocast", None)
        ctx = autocast if autocast is not None else torch.enable_grad
        for _ in range(self.n_critic):
            with torch.no_grad():
                fake_images, fake_efeat = discriminator_inputs(
                    self.generator(self._noise(len(energy), energy.device), cond))
            loss_d, penalty, d_real, d_fake = self._critic_loss(
                real, [*fake_images, fake_efeat], cond, ctx)
            step("discriminator", loss_d + penalty)
        # generator: fool the discriminator, and match the energy features of the batch
        with ctx():
            fake = self.generator(self._noise(len(energy), energy.device), cond)
            fake_images, fake_efeat = discriminator_inputs(fake)
            d_gen = self.discriminator(fake_images, fake_efeat, cond)
            adv = (F.softplus(-d_gen).mean() if self.loss_kind == "r1"
                   else -d_gen.float().mean())
            consistency = self._consistency(fake_efeat.float(), efeat.detach().float())
        step("generator", adv + self.energy_weight * consistency)
        return {"loss": adv.detach() + self.energy_weight * consistency.detach(),
                "d_loss": loss_d.detach(), "penalty": penalty.detach(),
                "energy_consistency": consistency.detach(),
                "d_real": d_real.detach(), "d_fake": d_fake.detach()}

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
