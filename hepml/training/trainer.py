"""One trainer for every model.

:class:`Trainer` runs epochs of mini-batch training with validation, early stopping on the
validation loss, learning-rate schedules, L1/L2 penalties, mixed precision on CUDA, and
atomic checkpoints (``checkpoint_last.pt`` every epoch, ``checkpoint_best.pt`` on each
improvement) from which ``resume=True`` continues exactly: data order depends only on
``(seed, epoch)`` and the RNG state is restored, so a resumed run on the CPU ends with the
same weights as an uninterrupted one.

The run directory is optional: without one (``run_dir=None``, as in a notebook) nothing is
written, the best epoch's weights are kept in memory for :meth:`Trainer.load_best`, and
there is nothing to resume from. :meth:`Trainer.fit` and :meth:`Trainer.predict` take a
:class:`~hepml.training.data.ChunkedDataset` or any re-iterable of batches, each batch a
tuple ``(input, ..., target)`` of tensors: a list of such tuples or a
:class:`torch.utils.data.DataLoader`. What is particular to ``ChunkedDataset`` (the
shuffling of each epoch, pinned memory, even batches over the ranks, the number of entries
for the progress bar) applies to it alone; an object with a ``set_epoch`` method is told
each epoch's number, as a ``ChunkedDataset`` is. Under torchrun only ``ChunkedDataset`` is
accepted, since it shares the data out among the ranks.

Under torchrun (``torchrun --nproc-per-node N -m hepml run WORKFLOW.yaml``) each rank
trains on its own share of the chunks with ``batch_size / N`` entries per step, gradients
are averaged over the ranks (DistributedDataParallel; for models with their own training
step, one flat all-reduce per optimiser step, as DDP does), the validation loss is summed
over the ranks so that every rank sees the same value and takes the same early-stopping
decision, and only rank 0 writes checkpoints. :meth:`Trainer.predict` shares the chunks
out among the ranks and gathers the outputs on every rank in input order. When a rank
dies or hangs, the others stop with :class:`~hepml.training.distributed.DistributedError`
(at the latest after ``training.distributed_timeout`` seconds); ``resume=True`` then
continues from the last checkpoint.

A model that trains with several optimisers (a GAN: generator and discriminator) says so
by defining three methods, and the trainer then hands it the optimisation step:

* ``optimizer_groups() -> {name: {"params": [...], **options}}``: one optimiser per group,
  built from the training configuration, ``options`` (``lr``, ``betas``) overriding it;
* ``training_step(inputs, target, step) -> {"loss": tensor, other: tensor...}``: one
  training batch; ``step(name, loss)`` back-propagates ``loss`` and steps group ``name``'s
  optimiser (gradient scaling and clipping included), and ``step.autocast()`` is the
  mixed-precision context for forward passes; the other values returned are averaged over
  the epoch into the history as ``train_<other>``;
* ``validation_step(inputs, target) -> tensor``: the scalar validation loss of a batch,
  used for early stopping and the best checkpoint.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm.auto import tqdm

from hepml.config import TrainingConfig, from_mapping, to_dict
from hepml.errors import BadValueError, CheckpointError, ConfigError, EmptyInputError
from hepml.training import distributed
from hepml.training.checkpoint import load_checkpoint, save_checkpoint
from hepml.training.data import ChunkedDataset
from hepml.training.device import float_dtype, resolve_device

log = logging.getLogger(__name__)

__all__ = ["Trainer", "resolve_device"]

LAST, BEST = "checkpoint_last.pt", "checkpoint_best.pt"

#: What :meth:`Trainer.fit` and :meth:`Trainer.predict` take: a ChunkedDataset, or any
#: re-iterable of ``(input, ..., target)`` tuples of tensors (a list, a DataLoader).
Batches = ChunkedDataset | Iterable[Sequence[torch.Tensor]]

#: Batches between updates of the progress bar's running loss (each reads it from the device).
_POSTFIX_EVERY = 20


def _float(out: Any) -> Any:
    """The model output in float32: a tensor, or a dict of tensors.

    A dict is what an autoencoder returns: reconstruction, latent code, KL terms.
    """
    if isinstance(out, dict):
        return {k: v.float() if isinstance(v, torch.Tensor) else v for k, v in out.items()}
    return out.float()


def _check_batch(batch: Any) -> Sequence[torch.Tensor]:
    """``batch`` if it is a tuple or list ``(input, ..., target)`` of tensors; else raise."""
    if (not isinstance(batch, (tuple, list)) or len(batch) < 2
            or not all(isinstance(t, torch.Tensor) for t in batch)):
        what = (f"a {type(batch).__name__} of {len(batch)}: "
                f"{', '.join(type(t).__name__ for t in batch)}"
                if isinstance(batch, (tuple, list)) else f"a {type(batch).__name__}")
        raise BadValueError(f"Trainer: every batch must be a tuple (input, ..., target) of "
                            f"tensors, got {what}; convert arrays with torch.as_tensor")
    return batch


def _num_entries(data: Batches) -> int | None:
    """Entries per pass over ``data`` for the progress bar, when known without reading it."""
    if isinstance(data, ChunkedDataset):
        return len(data)
    if isinstance(data, Sequence) and all(isinstance(b, (tuple, list)) and b for b in data):
        return sum(len(b[-1]) for b in data)
    return None


class _Stepper:
    """What a model's own training step is handed: ``step(name, loss)`` and helpers.

    ``step.autocast()`` is the mixed-precision context for forward passes, and
    ``step.penalty_grad(...)`` takes gradients for penalties.
    """

    def __init__(self, trainer: Trainer) -> None:
        self._trainer = trainer

    def __call__(self, name: str, loss: torch.Tensor) -> None:
        self._trainer._step(name, loss)

    def autocast(self) -> Any:
        """Mixed precision for forward passes, as the trainer is configured."""
        t = self._trainer
        return torch.autocast(t.device.type, dtype=torch.float16, enabled=t.amp)

    def penalty_grad(self, name: str, output: torch.Tensor,
                     inputs: list[torch.Tensor]) -> list[torch.Tensor]:
        """``d output.sum() / d inputs`` with a graph, for a gradient penalty of group ``name``.

        Under mixed precision the float16 backward pass would underflow for small
        gradients, so the gradient is taken of the output scaled by group ``name``'s
        gradient scaler and divided by the same scale afterwards, in float32 (the
        gradient-penalty recipe of :mod:`torch.amp`); the scale stays on the device.
        """
        scaler = self._trainer.scalers[name]
        total = output.float().sum()
        if not scaler.is_enabled():
            return [g.float() for g in
                    torch.autograd.grad(total, inputs, create_graph=True)]
        scale = scaler.scale(torch.ones((), device=total.device))
        grads = torch.autograd.grad(scaler.scale(total), inputs, create_graph=True)
        return [g.float() / scale for g in grads]


class Trainer:
    """Train and apply a model.

    Args:
        model: The network; it maps the input tensor(s) of a batch to outputs.
        config: Training options, or a plain mapping of them (``{"epochs": 5}``), checked
            as a workflow's ``training`` section is.
        run_dir: Where checkpoints go (only rank 0 writes). ``None``: nothing is written,
            the best weights are kept in memory, and ``fit(..., resume=True)`` is refused.
        model_spec: ``{"kind": ..., "kwargs": {...}}`` to rebuild the model from a checkpoint
            (what ``hepml predict`` and ``hepml export`` need); ``None`` records none.
        run_config: The whole job configuration, stored in checkpoints.
        loss_fn: Maps (outputs, targets) to a scalar; default cross-entropy. The outputs
            are what the model returns: a tensor, or a dict of tensors.
        seed: Seed of weights initialisation-independent randomness (dropout, shuffling).
        unit: What one training example is (``jet``, ``event``...), for progress and logs.
    """

    def __init__(
        self,
        model: nn.Module,
        config: TrainingConfig | Mapping[str, Any],
        *,
        run_dir: str | Path | None = None,
        model_spec: dict[str, Any] | None = None,
        run_config: dict[str, Any] | None = None,
        loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
        seed: int = 0,
        unit: str = "jet",
    ) -> None:
        if isinstance(config, Mapping):
            config = from_mapping(TrainingConfig, config, where="training")
        elif not isinstance(config, TrainingConfig):
            raise ConfigError(f"Trainer: config must be a TrainingConfig or a mapping of its "
                              f"options, got {type(config).__name__}")
        self.config = config
        self.unit = unit
        self.device = distributed.local_device(resolve_device(config.device))
        if config.num_threads:
            torch.set_num_threads(config.num_threads)
        self.distributed = distributed.init_from_env(self.device,
                                                     timeout_s=config.distributed_timeout)
        self.model = model.to(self.device)
        self.module = self.model
        self.manual = callable(getattr(self.module, "training_step", None))
        if self.distributed:
            if self.manual:  # several optimisers: gradients are averaged in _step
                distributed.broadcast_module(self.module)
            else:
                self.model = nn.parallel.DistributedDataParallel(
                    self.model,
                    device_ids=[self.device.index] if self.device.type == "cuda" else None)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.model_spec = model_spec
        self.run_config = run_config or {}
        self.loss_fn = loss_fn or nn.CrossEntropyLoss()
        self.seed = seed
        amp = config.mixed_precision
        self.amp = (self.device.type == "cuda") if amp == "auto" else bool(amp)
        if self.amp and self.device.type != "cuda":
            raise ConfigError("training.mixed_precision is only supported on CUDA; use 'auto'")
        groups = (self.module.optimizer_groups() if self.manual
                  else {"model": {"params": list(self.module.parameters())}})
        self.optimizers = {name: self._make_optimizer(**g) for name, g in groups.items()}
        # one gradient scaler per optimiser: each group's backward passes overflow on
        # their own (a discriminator's inf must not shrink the generator's scale)
        self.scalers = {name: torch.amp.GradScaler("cuda", enabled=self.amp)
                        for name in self.optimizers}
        self.schedulers = {name: self._make_scheduler(opt) for name, opt in self.optimizers.items()}
        self.optimizer = next(iter(self.optimizers.values()))
        self.scheduler = self.schedulers[next(iter(self.optimizers))]
        self.epoch = 0
        self.global_step = 0
        self.best_val_loss = math.inf
        self.best_epoch = -1
        self.bad_epochs = 0
        self.history: list[dict[str, float]] = []
        #: The best epoch's weights when there is no run directory to hold them.
        self._best_state: dict[str, torch.Tensor] | None = None

    # ------------------------------------------------------------------ set-up
    def _make_optimizer(self, params: list[nn.Parameter], **options: Any) -> torch.optim.Optimizer:
        """The configured optimiser over ``params``; ``options`` (``lr``, ``betas``) override it."""
        c = self.config
        decay = [p for p in params if p.requires_grad and p.ndim > 1]
        other = [p for p in params if p.requires_grad and p.ndim <= 1]
        groups = [{"params": decay, "weight_decay": c.weight_decay},
                  {"params": other, "weight_decay": 0.0}]
        lr = options.pop("lr", c.learning_rate)
        if c.optimizer in ("adam", "adamw"):
            cls = torch.optim.Adam if c.optimizer == "adam" else torch.optim.AdamW
            return cls(groups, lr=lr, **{k: v for k, v in options.items() if k == "betas"})
        if c.optimizer == "sgd":
            return torch.optim.SGD(groups, lr=lr, momentum=c.momentum)
        return torch.optim.RMSprop(groups, lr=lr, momentum=c.momentum)

    def _make_scheduler(self, opt: torch.optim.Optimizer) -> Any:
        c = self.config
        if c.scheduler == "cosine":
            return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=c.epochs)
        if c.scheduler == "step":
            return torch.optim.lr_scheduler.StepLR(opt, step_size=c.step_size, gamma=c.gamma)
        if c.scheduler == "exponential":
            return torch.optim.lr_scheduler.ExponentialLR(opt, gamma=c.gamma)
        if c.scheduler == "plateau":
            return torch.optim.lr_scheduler.ReduceLROnPlateau(
                opt, factor=c.gamma, patience=max(1, c.early_stopping_patience // 2))
        return None

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume, as tensors and plain values."""
        return {
            "model": self.model_spec,
            "model_state": self.module.state_dict(),
            "optimizer_state": self._per_group({k: o.state_dict()
                                                for k, o in self.optimizers.items()}),
            "scheduler_state": self._per_group({k: s.state_dict() if s else None
                                                for k, s in self.schedulers.items()}),
            "scaler_state": self._per_group({k: s.state_dict() for k, s in self.scalers.items()}),
            "epoch": self.epoch,
            "global_step": self.global_step,
            "best_val_loss": self.best_val_loss,
            "best_epoch": self.best_epoch,
            "bad_epochs": self.bad_epochs,
            "history": self.history,
            "seed": self.seed,
            "training": to_dict(self.config),
            "config": self.run_config,
            # CUDA's generators only when training on CUDA: asking for them initialises
            # CUDA, which a CPU run on a GPU machine must not do
            "rng": {"torch": torch.get_rng_state(),
                    "cuda": torch.cuda.get_rng_state_all() if self.device.type == "cuda" else []},
        }

    def _per_group(self, values: dict[str, Any]) -> Any:
        """One optimiser's state as it is; several as a dict by group name."""
        return values if self.manual else next(iter(values.values()))

    def _by_group(self, value: Any) -> dict[str, Any]:
        return value if self.manual else {next(iter(self.optimizers)): value}

    def load_state_dict(self, state: dict[str, Any], *, source: str = "checkpoint") -> None:
        """Restore a state written by :meth:`state_dict`; refuse one of another model."""
        if state.get("model") != self.model_spec:
            raise CheckpointError(
                f"{source}: holds model {state.get('model')}, but the workflow builds "
                f"{self.model_spec}. Use the matching workflow or start a new run without --resume."
            )
        try:
            self.module.load_state_dict(state["model_state"])
            for name, opt_state in self._by_group(state["optimizer_state"]).items():
                self.optimizers[name].load_state_dict(opt_state)
        except (RuntimeError, ValueError, KeyError) as exc:
            raise CheckpointError(f"{source}: weights do not fit the model "
                                  f"({str(exc).splitlines()[0]})") from None
        if state.get("scheduler_state"):
            for name, sched_state in self._by_group(state["scheduler_state"]).items():
                if self.schedulers.get(name) is not None and sched_state:
                    self.schedulers[name].load_state_dict(sched_state)
        if state.get("scaler_state"):
            scaler_state = state["scaler_state"]
            if self.manual and "scale" in scaler_state:  # written with one shared scaler
                scaler_state = {name: scaler_state for name in self.scalers}
            for name, s in self._by_group(scaler_state).items():
                if name in self.scalers and s:
                    self.scalers[name].load_state_dict(s)
        self.epoch = int(state["epoch"])
        self.global_step = int(state["global_step"])
        self.best_val_loss = float(state["best_val_loss"])
        self.best_epoch = int(state["best_epoch"])
        self.bad_epochs = int(state["bad_epochs"])
        self.history = list(state["history"])
        # generator states are CPU byte tensors whatever map_location the state was read with
        torch.set_rng_state(state["rng"]["torch"].cpu())
        if state["rng"].get("cuda") and self.device.type == "cuda":
            torch.cuda.set_rng_state_all([s.cpu() for s in state["rng"]["cuda"]])

    def _save(self, name: str) -> None:
        if self.run_dir is None:
            if name == BEST:
                self._best_state = {k: v.detach().clone()
                                    for k, v in self.module.state_dict().items()}
            return
        if distributed.is_main_process():
            save_checkpoint(self.run_dir / name, self.state_dict())

    # ------------------------------------------------------------------ loops
    def _penalty(self) -> torch.Tensor | float:
        if not self.config.l1:
            return 0.0
        return self.config.l1 * sum(p.abs().sum() for p in self.module.parameters() if p.ndim > 1)

    def _step(self, name: str, loss: torch.Tensor) -> None:
        """Back-propagate ``loss`` and step optimiser ``name`` (for models' own training steps).

        A batch whose loss is not finite is skipped (the epoch's mean loss reports it).
        Under torchrun the ranks agree: the flag travels with the gradients, and a step is
        skipped on every rank when any rank's loss is not finite, so that all ranks keep
        making the same collective calls. Under mixed precision the flag poisons the
        gradients, and the gradient scaler skips the step without another host sync.
        """
        opt, scaler = self.optimizers[name], self.scalers[name]
        params = [p for g in opt.param_groups for p in g["params"]]
        bad = ~torch.isfinite(loss.detach())
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        if self.distributed:
            bad = distributed.all_reduce_gradients(params, flag=bad)
        if self.amp:
            first = next((p for p in params if p.grad is not None), None)
            if first is not None:
                first.grad.add_(torch.where(bad, math.nan, 0.0).to(first.grad.dtype))
        elif bool(bad):
            opt.zero_grad(set_to_none=True)
            return
        if self.config.grad_clip:
            scaler.unscale_(opt)
            nn.utils.clip_grad_norm_(params, self.config.grad_clip)
        scaler.step(opt)
        scaler.update()

    def _batch(self, inputs: list[torch.Tensor], target: torch.Tensor, train: bool
               ) -> tuple[torch.Tensor, Any, dict[str, torch.Tensor]]:
        """Run one batch: (loss, model output or None, extra values to average)."""
        if self.manual:
            if not train:
                return self.module.validation_step(inputs, target).float(), None, {}
            values = dict(self.module.training_step(inputs, target, _Stepper(self)))
            self.global_step += 1
            return values.pop("loss").float(), None, values
        # validation runs the bare module: no gradient exchange, so ranks may hold
        # different numbers of validation batches
        model = self.model if train else self.module
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            out = _float(model(*inputs))
            loss = self.loss_fn(out, target)
        if train:
            total = loss + self._penalty()
            self.optimizer.zero_grad(set_to_none=True)
            scaler = self.scalers["model"]
            scaler.scale(total).backward()
            if self.config.grad_clip:
                scaler.unscale_(self.optimizer)
                nn.utils.clip_grad_norm_(self.module.parameters(), self.config.grad_clip)
            scaler.step(self.optimizer)
            scaler.update()
            self.global_step += 1
        return loss, out, {}

    def _check_batches(self, data: Any, what: str) -> None:
        """Refuse what :meth:`fit` and :meth:`predict` cannot go through once per epoch."""
        if isinstance(data, ChunkedDataset):
            return
        if self.distributed:
            raise ConfigError(f"Trainer: under torchrun, {what} must be a "
                              "hepml.training.ChunkedDataset, which shares the data out among "
                              f"the ranks; got a {type(data).__name__}")
        if not isinstance(data, Iterable) or isinstance(data, Iterator):
            raise ConfigError(f"Trainer: {what} must be re-iterable (a list of batches, a "
                              f"DataLoader or a ChunkedDataset), got a {type(data).__name__}; "
                              "every epoch goes through the batches again")

    def _run_epoch(self, data: Batches, *, train: bool, desc: str) -> dict[str, float]:
        self.model.train(train)
        # loss*n, correct, n: summed on the device, read once at the end of the epoch
        totals = torch.zeros(3, dtype=float_dtype(self.device), device=self.device)
        extra: dict[str, torch.Tensor] = {}
        chunked = isinstance(data, ChunkedDataset)
        bar = tqdm(total=_num_entries(data), desc=desc, unit=self.unit, unit_scale=True,
                   leave=False, disable=None if distributed.is_main_process() else True)
        start = time.perf_counter()
        classifies = False
        if chunked:
            data.pin_memory = self.device.type == "cuda"
        with torch.set_grad_enabled(train):
            for k, batch in enumerate(data):
                *inputs, target = batch if chunked else _check_batch(batch)
                inputs = [x.to(self.device, non_blocking=True) for x in inputs]
                target = target.to(self.device, non_blocking=True)
                loss, out, values = self._batch(inputs, target, train)
                n = len(target)
                totals[0] += loss.detach().to(totals.dtype) * n
                for key, value in values.items():
                    extra[key] = extra.get(key, 0.0) + value.detach().to(totals.dtype) * n
                if (isinstance(out, torch.Tensor) and out.ndim == 2 and target.ndim == 1
                        and not target.is_floating_point()):
                    classifies = True
                    totals[1] += (out.detach().argmax(1) == target).sum()
                totals[2] += n
                bar.update(n)
                if not bar.disable and k % _POSTFIX_EVERY == 0:  # a host sync: not every batch
                    bar.set_postfix(loss=f"{(totals[0] / totals[2]).item():.4f}", refresh=False)
        bar.close()
        totals = distributed.all_reduce_sum(totals)
        seconds = time.perf_counter() - start
        if not chunked and totals[2].item() == 0:
            raise EmptyInputError(f"Trainer ({desc}): the batches hold no entries")
        n = max(totals[2].item(), 1.0)
        # accuracy only for class-index targets (not for regression or edge scores)
        return {"loss": totals[0].item() / n,
                "accuracy": totals[1].item() / n if classifies else math.nan,
                "items_per_s": totals[2].item() / max(seconds, 1e-9),
                **{k: float(v) / n for k, v in extra.items()}}

    def fit(self, train: Batches, val: Batches, *,
            resume: bool = False) -> list[dict[str, float]]:
        """Train until ``epochs`` or early stopping; return the per-epoch history.

        Args:
            train: Training batches: a :class:`~hepml.training.data.ChunkedDataset`
                (shuffled each epoch), or any re-iterable of ``(input, ..., target)``
                tuples of tensors (a list; a DataLoader, which shuffles as it is told),
                gone through once per epoch.
            val: Validation batches, in the same forms.
            resume: Continue from ``run_dir/checkpoint_last.pt``.

        Raises:
            ConfigError: ``resume`` without a run directory; data that cannot be gone
                through once per epoch (an iterator or generator), or under torchrun
                data that are not a ``ChunkedDataset``.
            BadValueError: A batch that is not a tuple of tensors.
        """
        self._check_batches(train, "the training data")
        self._check_batches(val, "the validation data")
        if resume:
            if self.run_dir is None:
                raise ConfigError("Trainer.fit(resume=True): this trainer has no run "
                                  "directory to resume from; pass run_dir=<the directory "
                                  "holding checkpoint_last.pt> to Trainer, or train without "
                                  "resume")
            path = self.run_dir / LAST
            # read onto the CPU: load_state_dict copies weights and optimiser moments to the
            # parameters' device, and RNG states and Adam's step counts must stay on the CPU
            self.load_state_dict(load_checkpoint(path, map_location="cpu"), source=str(path))
            log.info("resumed from %s after epoch %d", path, self.epoch)
        else:
            torch.manual_seed(self.seed)
        c = self.config
        if isinstance(train, ChunkedDataset):
            train.even_batches = True  # the same number of steps on every rank
        while self.epoch < c.epochs:
            if c.early_stopping_patience and self.bad_epochs >= c.early_stopping_patience:
                break
            epoch = self.epoch + 1
            if hasattr(train, "set_epoch"):
                train.set_epoch(epoch)
            with distributed.collective(f"epoch {epoch}", run_dir=self.run_dir):
                tr = self._run_epoch(train, train=True, desc=f"epoch {epoch}/{c.epochs} train")
                va = self._run_epoch(val, train=False, desc=f"epoch {epoch}/{c.epochs} val")
            lr = self.optimizer.param_groups[0]["lr"]
            for scheduler in self.schedulers.values():
                if isinstance(scheduler, torch.optim.lr_scheduler.ReduceLROnPlateau):
                    scheduler.step(va["loss"])
                elif scheduler is not None:
                    scheduler.step()
            self.epoch = epoch
            row = {"epoch": epoch, "train_loss": tr["loss"], "train_accuracy": tr["accuracy"],
                   "val_loss": va["loss"], "val_accuracy": va["accuracy"], "lr": lr,
                   "train_items_per_s": tr["items_per_s"],
                   **{f"train_{k}": v for k, v in tr.items()
                      if k not in ("loss", "accuracy", "items_per_s")}}
            self.history.append(row)
            improved = va["loss"] < self.best_val_loss - c.min_delta
            if improved:
                self.best_val_loss, self.best_epoch, self.bad_epochs = va["loss"], epoch, 0
            else:
                self.bad_epochs += 1
            if not math.isfinite(tr["loss"]):
                self._save(LAST)
                raise ConfigError(f"training diverged at epoch {epoch} (loss {tr['loss']}); "
                                  "lower training.learning_rate or set training.grad_clip")
            if improved:
                self._save(BEST)
            self._save(LAST)
            acc = [f" acc {tr['accuracy']:.4f}", f" acc {va['accuracy']:.4f}"]
            if math.isnan(tr["accuracy"]):
                acc = ["", ""]
            log.info("epoch %d/%d: train loss %.4f%s | val loss %.4f%s | %.0f %ss/s%s",
                     epoch, c.epochs, tr["loss"], acc[0], va["loss"], acc[1],
                     tr["items_per_s"], self.unit, " *" if improved else "")
        if c.early_stopping_patience and self.bad_epochs >= c.early_stopping_patience:
            log.info("early stopping: no validation improvement for %d epochs (best epoch %d)",
                     self.bad_epochs, self.best_epoch)
        distributed.barrier()
        return self.history

    def load_best(self) -> None:
        """Load the weights of the best validation epoch (if one was saved).

        Without a run directory they come from memory, kept when that epoch ended.
        """
        if self.run_dir is None:
            if self._best_state is not None:
                self.module.load_state_dict(self._best_state)
            return
        path = self.run_dir / BEST
        if path.exists():
            self.module.load_state_dict(load_checkpoint(path, map_location="cpu")["model_state"])

    @torch.no_grad()
    def predict(self, data: Batches) -> torch.Tensor:
        """Softmax outputs of the model over ``data`` in order, on the trainer's device.

        Under torchrun each rank scores its share of the chunks, and every rank gets all
        outputs back in input order.

        Args:
            data: A :class:`~hepml.training.data.ChunkedDataset`, or any re-iterable of
                ``(input, ..., target)`` tuples of tensors as :meth:`fit` takes (the
                targets are not used).

        Shapes:
            output: ``[N, num_classes]``, ``N`` the entries of ``data``.
        """
        self.module.eval()
        if not isinstance(data, ChunkedDataset):
            self._check_batches(data, "the data to predict")
            outs = []
            for batch in data:
                *inputs, _ = _check_batch(batch)
                inputs = [x.to(self.device, non_blocking=True) for x in inputs]
                outs.append(torch.softmax(self.module(*inputs).float(), dim=1))
            return torch.cat(outs) if outs else torch.empty(0, device=self.device)
        data.pin_memory = self.device.type == "cuda"
        ws = distributed.world_size()
        parts = data.partition(ws)
        mine = parts[distributed.rank()] if parts else range(len(data.loaders))
        outs: dict[int, torch.Tensor] = {}
        for i in mine:
            chunk = []
            for *inputs, _ in data.chunk_batches(i):
                inputs = [x.to(self.device, non_blocking=True) for x in inputs]
                # float32, not autocast: the run's scores are those hepml predict gives
                chunk.append(torch.softmax(self.module(*inputs).float(), dim=1))
            if chunk:
                outs[i] = torch.cat(chunk)
        if parts:
            with distributed.collective("prediction"):
                gathered = distributed.all_gather_object({i: t.cpu() for i, t in outs.items()})
            outs = {i: t.to(self.device) for part in gathered for i, t in part.items()}
        if not outs:
            return torch.empty(0, device=self.device)
        return torch.cat([outs[i] for i in sorted(outs)])
