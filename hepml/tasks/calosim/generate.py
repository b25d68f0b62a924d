"""Generating showers: like the test showers, on demand (``hepml simulate``), timed."""

from __future__ import annotations

import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepml.errors import CheckpointError, ConfigError
from hepml.io.calo import PARTICLES, Showers
from hepml.models import build_model
from hepml.models.calogan import EnergyRangeWarning
from hepml.representations.calo_layers import particle_indices
from hepml.tasks.calosim.data import GENERATORS
from hepml.training import resolve_device
from hepml.training.checkpoint import load_checkpoint

__all__ = ["generate_like", "generation_speed", "load_generator", "simulate"]

def generate_like(model: torch.nn.Module, energy: np.ndarray, particle_index: np.ndarray, *,
                  device: torch.device, batch_size: int, seed: int, progress: bool = False
                  ) -> tuple[np.ndarray, ...]:
    """One generated shower per (energy, particle index), layers as numpy arrays in GeV.

    Energies outside the trained range are generated without a warning: callers check
    their energies on the host and warn.
    """
    from tqdm.auto import tqdm

    model.eval()
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[list[np.ndarray]] = []
    with tqdm(total=len(energy), unit="shower", unit_scale=True, disable=not progress,
              desc="generating") as bar:
        for a in range(0, len(energy), batch_size):
            e = torch.as_tensor(energy[a:a + batch_size], dtype=torch.float32, device=device)
            p = torch.as_tensor(particle_index[a:a + batch_size], device=device)
            out.append([x.cpu().numpy()
                        for x in model.sample(e, p, generator=gen, check_range=False)])
            bar.update(len(e))
    return tuple(np.concatenate([b[i] for b in out]) for i in range(len(out[0])))


def generation_speed(model: torch.nn.Module, *, device: torch.device, batch_sizes: Sequence[int],
                     energy: float = 50.0, particle_index: int = 0, min_seconds: float = 0.3,
                     repeat: int = 3) -> dict[int, float]:
    """Showers per second of the generator at each batch size.

    The best of ``repeat`` timings, each calling the generator for at least
    ``min_seconds``, after one warm-up call; no gradients.
    """
    model.eval()
    speeds: dict[int, float] = {}
    for bs in batch_sizes:
        e = torch.full((bs,), energy, device=device)
        p = torch.full((bs,), particle_index, device=device, dtype=torch.long)
        model.sample(e, p, check_range=False)  # warm-up
        best = 0.0
        for _ in range(repeat):
            n, t0 = 0, time.perf_counter()
            while True:
                model.sample(e, p, check_range=False)
                if device.type == "cuda":
                    torch.cuda.synchronize()
                n += bs
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
            best = max(best, n / dt)
        speeds[bs] = best
    return speeds



# ------------------------------------------------------------------------ hepml simulate
def load_generator(checkpoint: str | Path, *, device: str | torch.device = "auto"
                   ) -> tuple[torch.nn.Module, torch.device]:
    """The trained generator (CaloGAN or CaloFlow) of ``checkpoint`` on ``device``.

    ``device="auto"`` takes the best one.
    """
    device = resolve_device(device, what="--device") if isinstance(device, str) else device
    state = load_checkpoint(checkpoint, map_location="cpu")
    spec = state.get("model") or {}
    if spec.get("kind") not in GENERATORS:
        raise CheckpointError(f"{checkpoint}: holds a {spec.get('kind')!r} model, not a "
                              f"shower generator ({', '.join(GENERATORS)})")
    model = build_model(spec["kind"], **spec["kwargs"])
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
    return model.to(device).eval(), device


def simulate(checkpoint: str | Path, out: str | Path, *, n: int, energy: float | None = None,
             energy_range: tuple[float, float] | None = None, particle: str | int | None = None,
             batch_size: int = 1024, device: str = "auto", seed: int = 0,
             progress: bool = True, warn: Callable[[str], None] | None = None
             ) -> tuple[Path, dict[str, Any]]:
    """Generate ``n`` showers with a trained generator and write them.

    Args:
        checkpoint: A ``calosim`` run's ``checkpoint_best.pt``.
        out: Output file: ``.root`` (hepml's CaloGAN layout), ``.h5``/``.hdf5`` (CaloGAN
            HDF5) or ``.challenge.h5`` (calorimeter-challenge HDF5).
        n: Number of showers.
        energy: One incident energy (GeV) for all showers ...
        energy_range: ... or a range (GeV) to draw uniformly from; default: the trained range.
        particle: Name or PDG id; needed when the generator knows several particles.
        batch_size: Showers per generator call.
        device: ``auto`` (cuda, then mps, then cpu) or a torch device.
        seed: Seed of the energies and the latent vectors.
        progress: Show a progress bar.
        warn: Called with the message when energies lie outside the trained range (before
            generating); default: an :class:`EnergyRangeWarning`.

    Returns:
        The path written and a summary (counts, energies, seconds, showers/s).
    """
    from hepml.io.atomic import check_writable
    from hepml.io.calo import (
        parse_particle,
        write_calochallenge_hdf5,
        write_calogan_hdf5,
        write_showers,
    )

    if n < 1:
        raise ConfigError(f"--n must be positive, got {n}")
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be positive, got {batch_size}")
    if energy is not None and energy <= 0:
        raise ConfigError(f"--energy must be positive (GeV), got {energy}")
    check_writable(Path(out).parent)
    model, dev = load_generator(checkpoint, device=device)
    lo, hi = (float(v) for v in model.energy_range)
    if energy is None:
        lo_r, hi_r = energy_range if energy_range is not None else (lo, hi)
        if not 0 < lo_r <= hi_r:
            raise ConfigError(f"energy range [{lo_r}, {hi_r}] GeV is not valid")
    pdg = parse_particle(particle) if particle is not None else model.particles[0]
    if particle is None and len(model.particles) > 1:
        names = {v: k for k, v in PARTICLES.items()}
        raise ConfigError("this generator knows several particles "
                          f"({', '.join(names.get(p, str(p)) for p in model.particles)}): "
                          "choose one with --particle")
    try:
        pidx = int(particle_indices(np.array([pdg]), model.particles, source=str(checkpoint))[0])
    except ValueError as exc:
        raise ConfigError(str(exc)) from None
    rng = np.random.default_rng(seed)
    energies = (np.full(n, energy, dtype=np.float32) if energy is not None
                else rng.uniform(lo_r, hi_r, n).astype(np.float32))
    outside = (energies < lo * (1 - 1e-6)) | (energies > hi * (1 + 1e-6))
    if outside.any():
        message = (f"{int(outside.sum())} of {n} requested energies lie outside the trained "
                   f"range [{lo:g}, {hi:g}] GeV; generating anyway, the generator "
                   "extrapolates there")
        if warn is not None:
            warn(message)
        else:
            warnings.warn(message, EnergyRangeWarning, stacklevel=2)
    t0 = time.perf_counter()
    layers = generate_like(model, energies, np.full(n, pidx, dtype=np.int64), device=dev,
                           batch_size=batch_size, seed=seed, progress=progress)
    seconds = time.perf_counter() - t0
    showers = Showers(energies, layers, np.zeros((n, len(layers)), np.float32),
                      np.full(n, pdg, np.int32), source="generated")
    out = Path(out)
    name = out.name.lower()
    if name.endswith(".challenge.h5") or name.endswith(".challenge.hdf5"):
        path = write_calochallenge_hdf5(out, showers)
    elif name.endswith((".h5", ".hdf5")):
        path = write_calogan_hdf5(out, showers)
    else:
        path = write_showers(out, showers, metadata={
            "generator": str(checkpoint), "seed": seed, "n": n, "particle": pdg,
            "energy": energy, "energy_range": list(energy_range) if energy_range else [lo, hi],
            "device": str(dev), "note": "overflow is not generated (zeros)"})
    summary = {"n": n, "particle": pdg, "energy_min": float(energies.min()),
               "energy_max": float(energies.max()), "seconds": seconds,
               "showers_per_s": n / max(seconds, 1e-9), "device": str(dev),
               "n_outside_trained_range": int(outside.sum())}
    return path, summary
