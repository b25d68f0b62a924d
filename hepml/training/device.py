"""Which device a job runs on, and what that device can do.

``device: auto`` picks the first of

* **cuda**: ``cuda:<current device>`` (``cuda:LOCAL_RANK`` under torchrun); training runs
  with mixed precision (float16 autocast and a gradient scaler) unless
  ``training.mixed_precision: false``; metrics are computed on the GPU in float64;
* **mps** (Apple GPUs): float32 everywhere, since MPS has no float64: loss totals, metric
  accumulators and efficiencies use :func:`float_dtype`; no mixed precision;
* **cpu**: float32 training, float64 metrics.

A device is always returned with an index on CUDA, because :func:`torch.cuda.set_device`
and the nccl process group need one.
"""

from __future__ import annotations

import os

import torch

from hepml.errors import ConfigError

__all__ = ["resolve_device", "uses_gpu", "supports_float64", "float_dtype", "to_device"]


def _mps_available() -> bool:
    mps = getattr(torch.backends, "mps", None)
    return mps is not None and mps.is_available()


def _torchrun_local_rank() -> int | None:
    """``LOCAL_RANK`` when launched by torchrun, else ``None``."""
    from hepml.training import distributed

    if distributed.launched() and "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"])
    return None


def _cuda_device(index: int | None, what: str) -> torch.device:
    """``cuda:index`` after checking that this machine has it."""
    count = torch.cuda.device_count()
    local = _torchrun_local_rank()
    if index is None:
        index = local if local is not None else torch.cuda.current_device()
        if local is not None and index >= count:
            raise ConfigError(
                f"{what}: torchrun started local rank {index} but this machine has {count} "
                f"CUDA device{'s' if count != 1 else ''}; use --nproc-per-node {count} (one "
                "process per GPU), or training.device: cpu to run several ranks on the CPU")
    if not 0 <= index < count:
        raise ConfigError(f"{what}: cuda:{index} does not exist; this machine has {count} CUDA "
                          f"device{'s' if count != 1 else ''} (cuda:0 to cuda:{count - 1})")
    return torch.device("cuda", index)


def resolve_device(name: str | torch.device = "auto", *,
                   what: str = "training.device") -> torch.device:
    """The device ``name`` stands for; CUDA devices always carry an index.

    Args:
        name: ``auto`` (cuda, then mps, then cpu), ``cpu``, ``cuda``, ``cuda:N``, ``mps``...
            Under torchrun, ``auto`` and ``cuda`` mean ``cuda:LOCAL_RANK``.
        what: The option the name came from, for messages.

    Raises:
        ConfigError: The name is not a device, or names a device this machine lacks.
    """
    if str(name) == "auto":
        if torch.cuda.is_available():
            return _cuda_device(None, what)
        if _mps_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"{what}: {exc}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError(f"{what} is {str(name)!r} but no CUDA device is available; "
                              "use 'auto'")
        return _cuda_device(device.index, what)
    if device.type == "mps" and not _mps_available():
        raise ConfigError(f"{what} is 'mps' but no Apple GPU is available; use 'auto'")
    return device


def uses_gpu(name: str | torch.device) -> bool:
    """Whether ``name`` (``auto``, ``cuda:1``, ``mps``...) runs on a GPU of this machine.

    Unlike :func:`resolve_device`, this does not initialise CUDA, so a process that only
    starts workers (each with its own CUDA context) can ask.
    """
    name = str(name)
    if name == "auto":
        return torch.cuda.is_available() or _mps_available()
    return name.split(":")[0] in ("cuda", "mps")


def supports_float64(device: torch.device | str) -> bool:
    """Whether tensors on ``device`` may be float64 (every device but Apple's MPS)."""
    return torch.device(device).type != "mps"


def float_dtype(device: torch.device | str) -> torch.dtype:
    """The widest float of ``device``: float64, or float32 on MPS.

    Loss totals, metric accumulators, efficiencies and statistics use it, so that the
    same code runs on every device.
    """
    return torch.float64 if supports_float64(device) else torch.float32


def to_device(x: torch.Tensor | object, device: torch.device | str) -> torch.Tensor:
    """``x`` (a tensor or an array) on ``device``, in float32 where float64 cannot go.

    Float64 is narrowed on the host, before the copy, when the device has no float64
    (MPS); every other dtype, and float64 on other devices, is kept.
    """
    device = torch.device(device)
    t = torch.as_tensor(x)
    if t.dtype == torch.float64 and not supports_float64(device):
        t = t.float()
    return t.to(device)
