"""What the GPU paths promise, checked on the CPU.

GPUs are rarely at hand, so these tests pin the CUDA and MPS behaviour without one:

* ``torch.cuda`` patched to answer as on a one-GPU machine, with the real
  :func:`torch.cuda.set_device` argument checks and only the driver call replaced;
* the ``meta`` device standing in for a GPU: it holds no data, so any read back to the
  host (``.item()``, ``float()``, ``bool()``) or any mix with CPU tensors fails there,
  as it would stall or fail on a GPU;
* a device without float64 (as Apple's MPS) simulated by patching
  :func:`hepml.training.device.supports_float64`, with a torch function mode that fails
  on every float64 tensor made from device data;
* a torch function mode that counts host synchronisations per training batch;
* a two-rank gloo run in which one rank's loss is not finite.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SMALL_CALOFLOW, SMALL_CALOGAN_HALO
from conftest import SMALL_CALOGAN as GAN
from conftest import SMALL_CNN as CNN
from torch.overrides import TorchFunctionMode
from torch.utils.weak import WeakTensorKeyDictionary

from hepml.config import TrainingConfig
from hepml.errors import ConfigError
from hepml.models import build_model
from hepml.training import (
    ChunkedDataset,
    Trainer,
    chunk_moments,
    distributed,
    load_checkpoint,
    resolve_device,
)

ROOT = Path(__file__).resolve().parents[1]



# ------------------------------------------------------------------ helpers


@pytest.fixture
def one_gpu(monkeypatch):
    """``torch.cuda`` as on a machine with one GPU; the driver's set-device call is recorded.

    :func:`torch.cuda.set_device` itself runs, with its check that the device has an index.
    """
    calls: list[int] = []
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    monkeypatch.setattr(torch._C, "_cuda_setDevice", calls.append, raising=False)
    for name in ("WORLD_SIZE", "LOCAL_RANK", "RANK"):
        monkeypatch.delenv(name, raising=False)
    return calls


def _classifier_data(n=256, chunk=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 1, 8, 8, generator=g)
    y = (x[:, 0, :4].sum((1, 2)) > x[:, 0, 4:].sum((1, 2))).long()
    loaders = [lambda a=a: (x[a:a + chunk], y[a:a + chunk]) for a in range(0, n, chunk)]
    return loaders, [min(chunk, n - a) for a in range(0, n, chunk)]


def _trainer(tmp_path, spec=CNN, **overrides) -> Trainer:
    torch.manual_seed(0)
    cfg = TrainingConfig(**{"epochs": 2, "batch_size": 32, "device": "cpu",
                            "early_stopping_patience": 0, **overrides})
    return Trainer(build_model(spec["kind"], **spec["kwargs"]), cfg, run_dir=tmp_path,
                   model_spec=spec, seed=3)


def _sets(n_train=256, batch_size=32):
    tr, tl = _classifier_data(n_train, seed=0)
    va, vl = _classifier_data(128, seed=1)
    return (ChunkedDataset(tr, tl, batch_size=batch_size, shuffle=True, seed=3),
            ChunkedDataset(va, vl, batch_size=64))


def _showers(n=64, seed=0):
    g = torch.Generator().manual_seed(seed)
    energy = 1 + 99 * torch.rand(n, generator=g)
    shares = torch.rand(n, 40, generator=g) * (torch.rand(n, 40, generator=g) < 0.6)
    cells = shares / shares.sum(1, keepdim=True) * 0.9 * energy[:, None]
    return cells, energy, torch.zeros(n, dtype=torch.long)


# ------------------------------------------------------------------ device choice


def test_auto_gives_an_indexed_cuda_device_that_can_be_selected(one_gpu):
    """Every single-GPU training used to stop at torch.cuda.set_device(torch.device("cuda"))."""
    dev = resolve_device("auto")
    assert dev == torch.device("cuda", 0)
    assert distributed.local_device(dev) == dev
    assert resolve_device("cuda") == torch.device("cuda", 0)
    assert distributed.local_device(torch.device("cuda")) == torch.device("cuda", 0)
    assert one_gpu == [0, 0]


def test_torchrun_with_more_ranks_than_gpus_is_refused(one_gpu, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert resolve_device("auto") == torch.device("cuda", 0)
    monkeypatch.setenv("LOCAL_RANK", "1")
    with pytest.raises(ConfigError, match=r"local rank 1 .* 1 CUDA device; use "
                                          r"--nproc-per-node 1"):
        resolve_device("auto")


def test_a_cuda_index_the_machine_lacks_is_a_config_error(one_gpu):
    with pytest.raises(ConfigError, match=r"cuda:3 does not exist; this machine has 1 CUDA"):
        resolve_device("cuda:3")
    with pytest.raises(ConfigError, match="training.device"):
        resolve_device("gpu0")


def test_uses_gpu_does_not_initialise_cuda(monkeypatch):
    from hepml.training.device import uses_gpu

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def forbidden(*args, **kwargs):
        raise AssertionError("CUDA was initialised")

    monkeypatch.setattr(torch.cuda, "current_device", forbidden)
    monkeypatch.setattr(torch.cuda, "init", forbidden)
    assert uses_gpu("auto") and uses_gpu("cuda:1") and uses_gpu("mps")
    assert not uses_gpu("cpu")


def test_scoring_on_one_gpu_starts_one_worker(monkeypatch):
    """One worker process per CPU core would put as many CUDA contexts on one card."""
    from hepml.tasks.scoring import local_workers

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert local_workers(None, "auto") == 1
    assert local_workers(None, "cuda:0") == 1
    assert local_workers(3, "cuda") == 3
    assert local_workers(None, "cpu") == (os.cpu_count() or 1)


# ------------------------------------------------------------------ checkpoints and resume


def test_a_cpu_run_on_a_gpu_machine_leaves_cuda_alone(tmp_path, monkeypatch):
    """Saving and resuming a CPU run must not touch CUDA's generators (that initialises CUDA)."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)

    def forbidden(*args, **kwargs):
        raise AssertionError("a CPU run initialised CUDA")

    monkeypatch.setattr(torch.cuda, "get_rng_state_all", forbidden)
    monkeypatch.setattr(torch.cuda, "set_rng_state_all", forbidden)
    _trainer(tmp_path, epochs=1).fit(*_sets())
    _trainer(tmp_path, epochs=2).fit(*_sets(), resume=True)
    assert load_checkpoint(tmp_path / "checkpoint_last.pt")["rng"]["cuda"] == []


def test_resume_on_another_device_reads_the_checkpoint_onto_the_cpu(tmp_path):
    """RNG states must reach torch as CPU byte tensors, and Adam's step counts stay on the CPU.

    The resuming trainer's device is ``meta`` (not the CPU); reading the checkpoint onto
    that device, as ``map_location=self.device`` did, fails for the RNG state.
    """
    first = _trainer(tmp_path, epochs=2)
    first.fit(*_sets())
    saved = load_checkpoint(tmp_path / "checkpoint_last.pt")
    resumed = _trainer(tmp_path, epochs=2)
    resumed.device = torch.device("meta")
    torch.manual_seed(12345)
    resumed.fit(*_sets(), resume=True)  # both epochs are done: nothing runs on "meta"
    assert resumed.epoch == 2
    assert torch.equal(torch.get_rng_state(), saved["rng"]["torch"])
    steps = [s["step"] for s in resumed.optimizer.state.values()]
    assert steps and all(t.device.type == "cpu" for t in steps)
    for a, b in zip(first.module.state_dict().values(), resumed.module.state_dict().values(),
                    strict=True):
        assert torch.equal(a, b)


def test_checkpoints_with_one_shared_scaler_still_resume(tmp_path):
    t = _trainer(tmp_path / "gan", spec={"kind": "calogan", "kwargs": GAN}, epochs=1)
    state = t.state_dict()
    assert set(state["scaler_state"]) == {"discriminator", "generator"}
    state["scaler_state"] = {"scale": 512.0, "growth_factor": 2.0, "backoff_factor": 0.5,
                             "growth_interval": 2000, "_growth_tracker": 0}
    t.load_state_dict(state)  # written before each optimiser had its own scaler


# ------------------------------------------------------------------ mixed precision


def test_run_scores_are_float32_not_autocast(tmp_path):
    """The run's scores (Trainer.predict) are those of a float32 forward pass, as hepml predict's.

    ``amp`` is switched on as on a CUDA trainer; CPU autocast runs the same float16 path.
    """
    t = _trainer(tmp_path, epochs=1)
    t.fit(*_sets())
    t.amp = True
    loaders, lengths = _classifier_data(200, seed=5)
    scores = t.predict(ChunkedDataset(loaders, lengths, batch_size=64))
    x = torch.cat([f()[0] for f in loaders])
    with torch.no_grad():
        want = torch.softmax(t.module.eval()(x).float(), dim=1)
    assert torch.equal(scores, want)


def _amp_trainer(tmp_path, init_scale: float = 2.0**16) -> Trainer:
    """A CaloGAN trainer with mixed precision as on CUDA: CPU autocast and CPU scalers."""
    t = _trainer(tmp_path, spec={"kind": "calogan", "kwargs": GAN}, epochs=1)
    t.amp = True
    t.scalers = {name: torch.amp.GradScaler("cpu", init_scale=init_scale)
                 for name in t.optimizers}
    return t


def test_penalty_gradients_do_not_underflow_in_float16(tmp_path):
    """A gradient of 1e-8 is 0 in float16; taken through the scaled output it survives.

    The scale is one the dynamic scaler settles at (2^16 itself overflows a float16
    output's gradient, and the scaler then halves it, as for any loss).
    """
    from hepml.training.trainer import _Stepper

    step = _Stepper(_amp_trainer(tmp_path, init_scale=2.0**14))
    x = torch.ones(4, dtype=torch.float16, requires_grad=True)
    out = (x * 1e-4).sum() * 1e-4  # d out / d x = 1e-8, below float16's smallest subnormal
    (plain,) = torch.autograd.grad(out, [x], create_graph=True)
    assert torch.all(plain == 0)
    out = (x * 1e-4).sum() * 1e-4
    (g,) = step.penalty_grad("discriminator", out, [x])
    assert g.dtype == torch.float32
    torch.testing.assert_close(g, torch.full((4,), 1e-8), rtol=2e-3, atol=0)


def test_the_calogan_takes_its_penalty_gradients_from_the_trainer(tmp_path):
    from hepml.training.trainer import _Stepper

    t = _amp_trainer(tmp_path, init_scale=2.0**10)
    taken: list[str] = []
    step = _Stepper(t)
    real_grad = step.penalty_grad

    def spy(name, out, inputs):
        taken.append(name)
        return real_grad(name, out, inputs)

    step.penalty_grad = spy
    t.module.train()
    values = t.module.training_step(list(_showers(32)), None, step)
    assert taken == ["discriminator"] * t.module.n_critic
    assert torch.isfinite(values["penalty"]) and values["penalty"] > 0


def test_each_optimiser_has_its_own_gradient_scaler(tmp_path):
    """An overflow in the discriminator's step must not shrink the generator's scale."""
    t = _amp_trainer(tmp_path)
    d = t.module.discriminator
    before = [p.detach().clone() for p in d.parameters()]
    x = torch.ones(1, requires_grad=True)
    bad = sum(p.sum() for p in d.parameters()) * x * torch.inf
    t._step("discriminator", bad.sum())
    assert all(torch.equal(a, p) for a, p in zip(before, d.parameters(), strict=True))
    assert t.scalers["discriminator"].get_scale() == 2.0**15
    good = sum(p.sum() for p in t.module.generator.parameters())
    t._step("generator", good)
    assert t.scalers["generator"].get_scale() == 2.0**16


# ------------------------------------------------------------------ no host round trips


def test_calogan_set_up_and_generation_stay_on_the_device():
    """On ``meta`` any read to the host or mix with a CPU tensor fails, as it would stall a GPU."""
    model = build_model("calogan", **GAN).to("meta")
    cells, energy, particle = (t.to("meta") for t in _showers(32))
    model.initialise_from(cells, energy)
    layers = model.sample(energy, particle, check_range=False)
    assert [tuple(x.shape) for x in layers] == [(32, 2, 8), (32, 4, 4), (32, 4, 2)]


@pytest.mark.parametrize("kind, kwargs", [("calogan", SMALL_CALOGAN_HALO)])
def test_shower_generators_sample_and_train_without_host_reads(kind, kwargs):
    """The CaloGAN's energy mixture and per-cell hits stay on the device (``meta``).

    ``meta`` has no random generators, so the set-up from training showers (which draws
    its dequantisation noise from a seeded generator) is run on the CPU first. CaloFlow is
    not in this test: zuko's coupling transform finds its mask's indices with
    ``nonzero``, one host read per coupling block and call (docs/calogan.md).
    """
    model = build_model(kind, **kwargs)
    cells, energy, particle = _showers(32)
    model.initialise_from(cells, energy)
    model = model.to("meta")
    cells, energy, particle = (t.to("meta") for t in (cells, energy, particle))
    layers = model.sample(energy, particle, check_range=False)
    assert [tuple(x.shape) for x in layers] == [(32, 2, 8), (32, 4, 4), (32, 4, 2)]
    steps = []
    out = model.training_step((cells, energy, particle), energy, lambda n, loss: steps.append(n))
    assert out["loss"].device.type == "meta" and steps[-1] in ("generator", "flows")
    assert model.validation_step((cells, energy, particle), energy).device.type == "meta"


def test_flow_training_stays_float32_under_mixed_precision(tmp_path):
    """The flows compute in float32 under mixed precision.

    Mixed precision as on CUDA (autocast and a scaler, here on the CPU); splines and
    log-determinants lose too much in float16.
    """
    cells, energy, particle = _showers(64)
    model = build_model("caloflow", **SMALL_CALOFLOW)
    model.initialise_from(cells, energy)
    data = ChunkedDataset([lambda: (cells, energy, particle, energy)], [64], batch_size=32,
                          shuffle=False, seed=0)
    cfg = TrainingConfig(epochs=1, batch_size=32, device="cpu", early_stopping_patience=0)
    t = Trainer(model, cfg, run_dir=tmp_path, model_spec={"kind": "caloflow",
                                                          "kwargs": SMALL_CALOFLOW})
    t.amp = True
    t.scalers = {name: torch.amp.GradScaler("cpu") for name in t.optimizers}
    seen = []
    hyper = model.cell_flow.transform.transforms[0].hyper
    hook = hyper.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    t.fit(data, data)
    hook.remove()
    assert np.isfinite(t.history[-1]["train_loss"])
    assert set(seen) == {torch.float32}


def test_hit_gnn_checks_indices_without_reading_them_on_a_gpu():
    from hepml.models.hit_gnn import _check_below

    _check_below(torch.tensor([[0, 3]], device="meta"), 4)  # an async assertion, no read
    with pytest.raises(ValueError, match="must lie below the 4 node slots"):
        _check_below(torch.tensor([[0, 4]]), 4)


class _HostSyncs(TorchFunctionMode):
    """Counts the tensor reads to the host that hepml's own code makes.

    torch's own reads are left out: Adam reads its step counts, which stay on the CPU
    (so a GPU run reads them without a synchronisation).
    """

    READS = {"item", "__bool__", "__float__", "__int__", "__index__", "tolist", "numpy"}

    def __init__(self):
        super().__init__()
        self.count = 0

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if getattr(func, "__name__", "") in self.READS:
            caller = sys._getframe(1).f_code.co_filename
            if f"{os.sep}hepml{os.sep}" in caller and f"{os.sep}tests{os.sep}" not in caller:
                self.count += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("batches", [4, 16])
def test_a_training_epoch_reads_from_the_device_a_fixed_number_of_times(tmp_path, batches):
    """No host synchronisation per batch: the count does not grow with the batches."""
    t = _trainer(tmp_path, epochs=1)
    train, _ = _sets(n_train=32 * batches)
    train.set_epoch(1)
    with _HostSyncs() as syncs:
        t._run_epoch(train, train=True, desc="x")
    # the epoch's totals, read once at the end, and the CPU generator's chunk order
    assert syncs.count <= 6, syncs.count


# ------------------------------------------------------------------ devices without float64


class _NoFloat64OnDevice(TorchFunctionMode):
    """Fails on a float64 tensor made from device data, as MPS (which has no float64) does.

    Tensors given to :meth:`device` and everything computed from them are device data,
    and so is what a factory function makes with an explicit ``device``; ``.cpu()``
    copies to the host, where float64 is fine.
    """

    def __init__(self):
        super().__init__()
        self.on_device = WeakTensorKeyDictionary()
        self.errors: list[str] = []

    def device(self, *tensors):
        for t in tensors:
            self.on_device[t] = True
        return tensors

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        name = getattr(func, "__name__", str(func))
        flat = [*args, *kwargs.values()]
        flat += [x for a in flat if isinstance(a, (list, tuple)) for x in a]
        inputs = [a for a in flat if isinstance(a, torch.Tensor)]
        out = func(*args, **kwargs)
        if name == "cpu":
            return out.clone() if out is args[0] else out  # a host copy
        device_data = any(t in self.on_device for t in inputs) or kwargs.get("device") is not None
        if device_data:
            for o in out if isinstance(out, (tuple, list)) else [out]:
                if isinstance(o, torch.Tensor):
                    self.on_device[o] = True
                    if o.dtype == torch.float64:
                        self.errors.append(name)
        return out


@pytest.fixture
def no_float64(monkeypatch):
    import hepml.training.device as device_mod
    from hepml.training.device import float_dtype

    monkeypatch.setattr(device_mod, "supports_float64", lambda device: False)
    assert float_dtype("cpu") == torch.float32
    return _NoFloat64OnDevice()


def test_training_on_a_device_without_float64(tmp_path, no_float64):
    t = _trainer(tmp_path, epochs=1)
    with no_float64:
        hist = t.fit(*_sets())
    assert no_float64.errors == [] and np.isfinite(hist[0]["train_loss"])


def test_classification_metrics_on_a_device_without_float64(no_float64):
    from hepml.evaluation.metrics import evaluate_binary, evaluate_multiclass

    g = torch.Generator().manual_seed(0)
    scores, labels = torch.rand(500, generator=g), (torch.rand(500, generator=g) < 0.4).long()
    multi = torch.softmax(torch.randn(500, 3, generator=g), 1)
    classes = torch.randint(0, 3, (500,), generator=g)
    with no_float64:
        no_float64.device(scores, labels, multi, classes)
        binary = evaluate_binary(scores, labels, n_bootstrap=20)
        evaluate_multiclass(multi, classes, ["a", "b", "c"])
        ints = no_float64.device(torch.randint(0, 10, (500,), generator=g))[0]
        evaluate_binary(ints, labels, n_bootstrap=0)
    assert no_float64.errors == []
    from sklearn.metrics import roc_auc_score

    assert binary["auc"] == pytest.approx(roc_auc_score(labels.numpy(), scores.numpy()),
                                          abs=1e-6)


def test_tracking_and_anomaly_metrics_on_a_device_without_float64(no_float64):
    from hepml.evaluation import anomaly, tracking
    from hepml.evaluation.metrics import roc_curve

    g = torch.Generator().manual_seed(1)
    he = torch.repeat_interleave(torch.arange(3), 40)
    hp = torch.randint(0, 12, (120,), generator=g)
    ht = torch.where(torch.rand(120, generator=g) < 0.8, hp, torch.randint(-1, 12, (120,)))
    z = torch.randn(120, generator=g) * 300
    pe = torch.repeat_interleave(torch.arange(3), 11)
    pid = torch.arange(1, 12).repeat(3)
    pt = torch.rand(33, generator=g) * 5
    vz = torch.randn(33, generator=g)
    scores, labels = torch.rand(400, generator=g), torch.rand(400, generator=g) < 0.5
    mass = torch.rand(400, generator=g) * 100
    with no_float64:
        no_float64.device(he, hp, ht, z, pe, pid, pt, vz, scores, labels, mass)
        w = tracking.trackml_weights(he, hp, z, pe, pid, pt, vz, min_pt=0.5)
        tracking.trackml_score(he, hp, ht, w)
        tracking.tracking_metrics(he, hp, ht, pe, pid, pt, torch.zeros_like(pt),
                                  torch.full_like(pe, 5))
        tracking.efficiency_vs(pt, pt > 1, 4)
        roc = roc_curve(scores, labels)
        anomaly.efficiency_at_background(roc, [0.1, 0.01])
        anomaly.significance_improvement(roc, min_background=2)
        anomaly.mass_sculpting(mass, scores, [0.5, 0.1], bins=10, n_random=3)
    assert no_float64.errors == []


def test_shower_statistics_and_moments_on_a_device_without_float64(no_float64):
    from hepml.evaluation.showers import separation_powers, shower_observables
    from hepml.io.calo import CaloLayout

    cells, energy, _ = _showers(64)
    layers = [cells[:, :16].reshape(-1, 2, 8), cells[:, 16:32].reshape(-1, 4, 4),
              cells[:, 32:].reshape(-1, 4, 2)]
    layout = CaloLayout(name="small", shapes=((2, 8), (4, 4), (4, 2)),
                        cell_sizes_mm=((10.0, 5.0), (20.0, 20.0), (20.0, 40.0)),
                        depths_mm=(90.0, 347.0, 43.0))
    with no_float64:
        no_float64.device(*layers, energy)
        a = shower_observables(layers, energy, layout=layout)
        b = shower_observables([x.flip(0) for x in layers], energy.flip(0), layout=layout)
        separation_powers(a, b)
        chunk_moments(no_float64.device(cells[:32], cells[32:]))
    assert no_float64.errors == []


def test_host_arrays_reach_a_device_without_float64_as_float32(monkeypatch):
    import hepml.training.device as device_mod
    from hepml.training.device import to_device

    monkeypatch.setattr(device_mod, "supports_float64", lambda device: False)
    assert to_device(np.arange(3.0), "cpu").dtype == torch.float32
    assert to_device(np.arange(3), "cpu").dtype == torch.int64
    monkeypatch.undo()
    assert to_device(np.arange(3.0), "cpu").dtype == torch.float64


# ------------------------------------------------------------------ torchrun


_NONFINITE_SCRIPT = '''
import sys, torch
from torch import nn
from hepml.config import TrainingConfig
from hepml.training import ChunkedDataset, Trainer, distributed


class Toy(nn.Module):
    """A model with its own training step whose loss is NaN on rank 1 at step 3."""

    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(4, 1)
        self.calls = 0

    def optimizer_groups(self):
        return {"only": {"params": list(self.parameters())}}

    def training_step(self, inputs, target, step):
        self.calls += 1
        loss = (self.lin(inputs[0]).squeeze(1) - target).pow(2).mean()
        step("only", loss * float("nan") if distributed.rank() == 1 and self.calls == 3
             else loss)
        return {"loss": loss.detach()}  # the epoch's mean stays finite

    def validation_step(self, inputs, target):
        return (self.lin(inputs[0]).squeeze(1) - target).pow(2).mean()


distributed.init_from_env(torch.device("cpu"), timeout_s=30)
g = torch.Generator().manual_seed(0)
x = torch.randn(256, 4, generator=g)
y = x.sum(1)
loaders = [lambda a=a: (x[a:a + 64], y[a:a + 64]) for a in range(0, 256, 64)]
data = ChunkedDataset(loaders, [64] * 4, batch_size=32, shuffle=True, seed=1)
val = ChunkedDataset(loaders[:2], [64] * 2, batch_size=64)
cfg = TrainingConfig(epochs=1, batch_size=32, learning_rate=1e-2, early_stopping_patience=0,
                     device="cpu", distributed_timeout=30)
torch.manual_seed(0)
t = Trainer(Toy(), cfg, run_dir=sys.argv[1], model_spec={"kind": "toy", "kwargs": {}}, seed=3)
t.fit(data, val)
weights = torch.cat([p.detach().reshape(-1) for p in t.module.parameters()])
steps = [int(s["step"]) for s in t.optimizer.state.values()]
everything = distributed.all_gather_object((weights, steps, t.module.calls))
if distributed.rank() == 0:
    same = all(torch.equal(everything[0][0], w) for w, _, _ in everything)
    print("RESULT", "same" if same else "differ", [s for _, s, _ in everything],
          [c for _, _, c in everything])
distributed.shutdown(wait=True)
'''


def test_a_nonfinite_loss_on_one_rank_is_skipped_on_every_rank(tmp_path):
    """The ranks agree to skip the step: none waits alone in the gradient exchange."""
    if not torch.distributed.is_available() or not torch.distributed.is_gloo_available():
        pytest.skip("torch was built without distributed gloo support")
    script = tmp_path / "nonfinite.py"
    script.write_text(_NONFINITE_SCRIPT)
    env = {**os.environ, "TQDM_DISABLE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}
    r = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone",
                        "--nproc-per-node=2", str(script), str(tmp_path / "run")],
                       env=env, capture_output=True, text=True, timeout=240, cwd=ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    line = next(x for x in r.stdout.splitlines() if x.startswith("RESULT"))
    # 2 chunks of 64 per rank in batches of 16: 8 steps each, the NaN one skipped by both
    assert line == "RESULT same [[7, 7], [7, 7]] [8, 8]", line
