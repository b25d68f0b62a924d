"""torchrun support: process group set-up from the environment, rank helpers.

Under ``torchrun`` the environment holds ``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK``;
:func:`init_from_env` starts the process group (nccl on CUDA, gloo on CPU), and
:func:`local_device` gives each process its own GPU. Without them everything degrades to
a single process with rank 0 and every helper is the identity.

A collective operation that fails because another rank died (its sockets close) or that
waits longer than the process group's timeout raises :class:`DistributedError`, a
:class:`~hepml.errors.HepmlError` that names the rank and says how to resume, instead of
the backend's traceback.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
from collections.abc import Iterator, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from hepml.errors import DistributedError

log = logging.getLogger(__name__)

__all__ = ["DistributedError", "launched", "init_from_env", "local_device", "rank", "world_size",
           "is_main_process", "all_reduce_sum", "all_reduce_gradients", "all_gather_object",
           "barrier", "broadcast_object", "broadcast_module", "collective", "shutdown"]


def launched() -> bool:
    """Whether torchrun started this process, alone (``--nproc-per-node 1``) or with others."""
    started = "TORCHELASTIC_RUN_ID" in os.environ or int(os.environ.get("WORLD_SIZE", "1")) > 1
    return started and dist.is_available()


def local_device(device: torch.device) -> torch.device:
    """Make ``device`` this process's current CUDA device, and return it.

    :func:`hepml.training.device.resolve_device` already gives every CUDA device an index
    (``cuda:LOCAL_RANK`` under torchrun); a bare ``cuda`` gets one here the same way,
    because :func:`torch.cuda.set_device` and nccl need it. CPU and MPS are returned
    unchanged.
    """
    if device.type == "cuda":
        if device.index is None:
            from hepml.training.device import resolve_device

            device = resolve_device("cuda")
        torch.cuda.set_device(device)
    return device


def init_from_env(device: torch.device, *, timeout_s: float = 300.0) -> bool:
    """Start the process group if launched by torchrun; return whether it is distributed.

    Args:
        device: The device training runs on: nccl for CUDA, gloo otherwise.
        timeout_s: How long a collective operation waits for the other ranks before
            this rank stops with :class:`DistributedError`.
    """
    if not launched():
        return False
    if not dist.is_initialized():
        backend = "nccl" if device.type == "cuda" else "gloo"
        kwargs: dict[str, Any] = {}
        if backend == "nccl":
            kwargs["device_id"] = local_device(device)
            # nccl's watchdog tears the process down when a rank dies or a collective
            # times out; abort the communicator instead, so that the waiting collective
            # raises here and becomes a DistributedError (gloo raises by itself)
            os.environ.setdefault("TORCH_NCCL_ASYNC_ERROR_HANDLING", "2")
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=timeout_s), **kwargs)
        log.info("torchrun: rank %d of %d, backend %s", dist.get_rank(), dist.get_world_size(),
                 backend)
    return True


def shutdown(*, wait: bool = False) -> None:
    """Close the process group (if one was started) before the process exits.

    Left open, a gloo process group's background threads can abort the interpreter's
    exit ("terminate called without an active exception") after the job's work is done.
    So can a rank that tears its connections down while another still uses them:
    ``wait=True`` (after work that ended normally on every rank) first waits for every
    rank at a barrier, so that all close together. After an error, ranks must not wait.
    """
    if dist.is_available() and dist.is_initialized():
        if wait and world_size() > 1:
            with contextlib.suppress(RuntimeError, OSError):
                dist.barrier()
        dist.destroy_process_group()


def rank() -> int:
    """Global rank of this process (0 when not distributed)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 when not distributed).

    Before the process group starts, the value torchrun put in the environment, so that
    data can be cut for the ranks while the job is being set up.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size()
    return max(1, int(os.environ.get("WORLD_SIZE", "1"))) if launched() else 1


def is_main_process() -> bool:
    """True on the process that writes outputs (rank 0)."""
    return rank() == 0


@contextlib.contextmanager
def collective(what: str, *, run_dir: str | os.PathLike | None = None) -> Iterator[None]:
    """Turn a failed collective operation into a :class:`DistributedError`.

    Args:
        what: What the ranks were doing (``"epoch 3"``), for the message.
        run_dir: The run directory to resume from, for the message.
    """
    try:
        yield
    except DistributedError:
        raise
    except (RuntimeError, OSError) as exc:
        if not (dist.is_available() and dist.is_initialized()) or not _lost_ranks(exc):
            raise
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise DistributedError(
            f"rank {rank()} of {world_size()}: lost the other ranks during {what} "
            f"({type(exc).__name__}: {first[:300]}). Another rank probably died or hung; "
            "its log says why. Resume the whole job from the last checkpoint with "
            f"--resume {run_dir or 'RUN_DIR'}."
        ) from None


def _lost_ranks(exc: BaseException) -> bool:
    """Whether ``exc`` comes from the communication backend (not from the model's code)."""
    if isinstance(exc, getattr(dist, "DistError", ())):
        return True
    return re.search(r"gloo|nccl|connection (reset|closed)|timed out|broken pipe", str(exc),
                     re.IGNORECASE) is not None


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum a tensor over all processes (identity when not distributed)."""
    if world_size() > 1:
        values = values.clone()
        with collective("a sum over ranks"):
            dist.all_reduce(values, op=dist.ReduceOp.SUM)
    return values


def all_reduce_gradients(params: Sequence[nn.Parameter],
                         flag: torch.Tensor | None = None) -> torch.Tensor | None:
    """Average the gradients of ``params`` over all processes, in one flat buffer.

    What DistributedDataParallel does for a model with one optimiser, for models that
    step several optimisers from their own training step (a GAN). Parameters without a
    gradient on this rank take part with zeros, so every rank sends the same layout.

    Args:
        params: The parameters whose gradients are averaged.
        flag: A boolean scalar of this rank (e.g. "my loss is not finite"), sent in the
            same buffer.

    Returns:
        Whether ``flag`` is set on any rank (``flag`` itself when not distributed).
    """
    if world_size() <= 1:
        return flag
    params = [p for p in params if p.requires_grad]
    parts = [(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1)
             for p in params]
    if flag is not None:
        like = parts[0] if parts else torch.zeros(0, device=flag.device)
        parts.append(flag.reshape(1).to(device=like.device, dtype=like.dtype))
    if not parts:
        return flag
    flat = torch.cat(parts)
    with collective("a gradient exchange"):
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for p in params:
        n = p.numel()
        p.grad = (flat[offset:offset + n] / world_size()).view_as(p)
        offset += n
    return None if flag is None else flat[-1] > 0


def all_gather_object(obj: Any) -> list[Any]:
    """Every rank's ``obj``, in rank order (``[obj]`` when not distributed)."""
    if world_size() <= 1:
        return [obj]
    out: list[Any] = [None] * world_size()
    with collective("gathering results"):
        dist.all_gather_object(out, obj)
    return out


def barrier() -> None:
    """Wait for every process (no-op when not distributed)."""
    if world_size() > 1:
        with collective("a barrier"):
            dist.barrier()


def broadcast_object(obj: object) -> object:
    """Rank 0's ``obj`` on every rank (identity when not distributed)."""
    if world_size() > 1:
        box = [obj]
        with collective("a broadcast from rank 0"):
            dist.broadcast_object_list(box, src=0)
        return box[0]
    return obj


def broadcast_module(module: nn.Module) -> None:
    """Give every rank rank 0's parameters and buffers (no-op when not distributed)."""
    if world_size() <= 1:
        return
    with collective("copying the model from rank 0"), torch.no_grad():
        for t in [*module.parameters(), *module.buffers()]:
            dist.broadcast(t.data, src=0)
