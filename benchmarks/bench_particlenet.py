"""Time ParticleNet in hepml against weaver-core's reference, and graph building against reading.

Usage::

    python benchmarks/bench_particlenet.py
    python benchmarks/bench_particlenet.py --presets particlenet-lite particlenet --steps 2
    python benchmarks/bench_particlenet.py --device cuda --batch-size 256
    python benchmarks/bench_particlenet.py --threads 1 --json out.json

Inputs are the particle clouds that ``hepml.representations.ParticleClouds`` builds, with the
representation of ``workflows/top_tagging_gnn.yaml``, from ``data_samples/top_qcd_jets.root``
(all entries, read with ``hepml.io.Source``).

1. **ParticleNet throughput, hepml against weaver-core.** For each preset (ParticleNet-Lite
   and ParticleNet of arXiv:1902.08570, :data:`hepml.models.particlenet.PRESETS`) the
   script builds ``hepml.models.ParticleNet`` and weaver-core's
   ``weaver.nn.model.ParticleNet.ParticleNet`` with the same ``conv_params`` and
   ``fc_params``, ``use_fusion=False``, ``use_fts_bn=True`` and ``use_counts=True``, checks
   that their parameter counts agree, and, with one set of weights copied into both,
   compares their logits in eval mode on jets with more than ``k`` particles (where the two
   treat padding alike). weaver's ``trim`` is off: in training it would drop random
   particles of the longest jets and trim the padding, which hepml does not do. weaver is
   trained with ``for_inference=False`` and timed for inference with
   ``for_inference=True`` (its gather for CPUs, plus a softmax), with the same weights.
   Both take ``points [B, 2, P]``, ``features [B, F, P]``, ``mask [B, 1, P]`` in that
   order. Timed:

   - training: jets/s of forward + cross-entropy + backward + AdamW step, ``--batch-size``
     jets per step (default 128), after ``--warmup`` steps, ``--steps`` steps per
     repetition;
   - inference: jets/s of a forward pass in eval mode without autograd, batches of
     ``--inference-batch-size`` jets (default 1024).

   hepml and weaver alternate (hepml, weaver, hepml, weaver, ...) for ``--repeat``
   repetitions and the median of each is printed with the ratio hepml / weaver. On CPU the
   torch threads are set to the number of cores; CUDA is measured as well when present.
   Without weaver-core installed (``pip install --no-deps weaver-core``: it needs only
   torch here) the reference is skipped and hepml's numbers are printed alone.

2. **Graph building against reading the same branches**, for the whole file:
   (a) reading the branches the particle clouds need with ``hepml.io.Source`` (a fresh
   Source, all chunks); (b) building the padded clouds from those arrays; (c) converting
   them to PyG graphs (``hepml.representations.to_pyg``); (d) kNN graphs with
   ``hepml.representations.knn_indices`` (``--k`` neighbours on (Δη, Δφ), in batches of
   ``--inference-batch-size`` jets). The four alternate for ``--repeat`` repetitions; the
   median of each is printed as jets/s and as a time relative to reading.

The load average (``os.getloadavg``) is printed at the start and at the end: the ratios
are meaningful on a shared machine, the absolute numbers less so. ``--json`` writes the
rows of ``run_all.py`` (hepml against weaver-core; each graph stage against reading).
"""

from __future__ import annotations

import argparse
import importlib.metadata
import os
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from _results import row, write_rows

try:
    from hepml.config import load_workflow
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hepml.config import load_workflow

from hepml.io import Source  # noqa: E402
from hepml.models.particlenet import PRESETS, ParticleNet  # noqa: E402
from hepml.representations import ParticleClouds, knn_indices, to_pyg  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def _load() -> str:
    return "load average " + " ".join(f"{x:.2f}" for x in os.getloadavg())


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _devices(name: str) -> list[torch.device]:
    if name == "auto":
        return [torch.device("cpu")] + ([torch.device("cuda")] if torch.cuda.is_available()
                                        else [])
    return [torch.device(name)]


def _n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def _weaver_class() -> tuple[type | None, str]:
    """weaver-core's ParticleNet class and version, or ``None`` and why not."""
    try:
        from weaver.nn.model.ParticleNet import ParticleNet as WeaverParticleNet
    except Exception as exc:  # not installed, or a dependency missing
        return None, f"{type(exc).__name__}: {exc}"
    return WeaverParticleNet, importlib.metadata.version("weaver-core")


def _weaver_state(model: ParticleNet) -> dict[str, torch.Tensor]:
    """The weights of a hepml ParticleNet under weaver's names (same layers, other nesting)."""
    out: dict[str, torch.Tensor] = {}
    for name, value in model.state_dict().items():
        parts = name.split(".")
        if parts[0] == "edge_convs" and parts[2] == "mlp":
            layer, kind = divmod(int(parts[3]), 3)  # (conv, batch norm, activation)
            parts[2:4] = ["convs" if kind == 0 else "bns", str(layer)]
        elif parts[0] == "edge_convs" and parts[2] == "shortcut":
            parts[2:4] = ["sc" if parts[3] == "0" else "sc_bn"]
        elif parts[0] == "fc":
            layer = int(parts[1]) // 3  # (linear, activation, dropout) per hidden layer
            hidden = len(model.fc) // 3
            parts[1:2] = [str(layer), "0"] if layer < hidden else [str(layer)]
        out[".".join(parts)] = value
    return out


def _read_clouds(args: argparse.Namespace, transform: ParticleClouds, labels: list[str],
                 tree: str, step_size: int) -> dict[str, torch.Tensor]:
    source = Source(args.file, tree, [*transform.required_fields, *labels], step_size=step_size)
    parts = []
    for chunk in source:
        clouds = transform(chunk.arrays)
        flags = np.stack([np.asarray(chunk.arrays[f], dtype=np.int64) for f in labels], 1)
        clouds["label"] = torch.from_numpy(flags.argmax(1))
        parts.append(clouds)
    return {key: torch.cat([p[key] for p in parts]) for key in parts[0]}


def _median_rate(times: list[float], jets: int) -> float:
    return jets / statistics.median(times)


def _bench_models(args: argparse.Namespace, clouds: dict[str, torch.Tensor],
                  device: torch.device, weaver_cls: type | None) -> list[tuple]:
    """Rows (preset, implementation, params, train jets/s, inference jets/s)."""
    data = {k: v.to(device) for k, v in clouds.items()}
    rows: list[tuple] = []
    for preset in args.presets:
        rows += _bench_preset(args, preset, data, device, weaver_cls)
    return rows


def _bench_preset(args: argparse.Namespace, preset: str, data: dict[str, torch.Tensor],
                  device: torch.device, weaver_cls: type | None) -> list[tuple]:
    n_jets, input_dims = data["features"].shape[0], data["features"].shape[1]
    num_classes = int(data["label"].max()) + 1
    bsz, ibsz = args.batch_size, min(args.inference_batch_size, n_jets)

    def batch(i: int, size: int) -> tuple[torch.Tensor, ...]:
        start = (i * size) % max(n_jets - size + 1, 1)
        sl = slice(start, start + size)
        return data["points"][sl], data["features"][sl], data["mask"][sl], data["label"][sl]

    torch.manual_seed(0)
    models: dict[str, torch.nn.Module] = {
        "hepml": ParticleNet(input_dims=input_dims, num_classes=num_classes, preset=preset)}
    inference: dict[str, torch.nn.Module] = {}
    if weaver_cls is not None:
        settings = dict(conv_params=PRESETS[preset]["conv_params"],
                        fc_params=PRESETS[preset]["fc_params"], use_fusion=False,
                        use_fts_bn=True, use_counts=True, trim=False)
        models["weaver"] = weaver_cls(input_dims, num_classes, for_inference=False, **settings)
        inference["weaver"] = weaver_cls(input_dims, num_classes, for_inference=True, **settings)
        n_h, n_w = _n_params(models["hepml"]), _n_params(models["weaver"])
        print(f"[{device}] {preset}: trainable parameters hepml {n_h:,}, weaver {n_w:,} "
              f"({'agree' if n_h == n_w else 'DIFFER'})")
        if n_h != n_w:
            raise SystemExit("the two networks differ; the comparison would not be fair")
    else:
        print(f"[{device}] {preset}: trainable parameters hepml {_n_params(models['hepml']):,}")
    for model in (*models.values(), *inference.values()):
        model.to(device)
    if "weaver" in models:
        _compare_outputs(models, batch(0, min(512, n_jets)), preset)
    opts = {name: torch.optim.AdamW(m.parameters(), lr=1e-3) for name, m in models.items()}
    counters = dict.fromkeys(models, 0)

    def train(name: str, n_steps: int) -> float:
        model, opt = models[name], opts[name]
        model.train()
        _sync(device)
        start = time.perf_counter()
        for _ in range(n_steps):
            p, f, m, y = batch(counters[name], bsz)
            counters[name] += 1
            loss = torch.nn.functional.cross_entropy(model(p, f, m), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        _sync(device)
        return time.perf_counter() - start

    def infer(name: str, i: int, size: int = ibsz) -> float:
        model = models[name]
        if name in inference:  # weaver's inference build, with the trained weights
            inference[name].load_state_dict(model.state_dict())
            model = inference[name]
        model.eval()
        p, f, m, _ = batch(i, size)
        _sync(device)
        start = time.perf_counter()
        with torch.no_grad():
            model(p, f, m)
        _sync(device)
        return time.perf_counter() - start

    for name in models:  # warm-up (inference on one training batch)
        train(name, args.warmup)
        infer(name, 0, min(bsz, ibsz))
    t_train: dict[str, list[float]] = {name: [] for name in models}
    t_infer: dict[str, list[float]] = {name: [] for name in models}
    for rep in range(args.repeat):  # interleaved: hepml, weaver, hepml, weaver, ...
        for name in models:
            t_train[name].append(train(name, args.steps))
        for name in models:
            t_infer[name].append(infer(name, rep + 1))
    return [(preset, name, _n_params(model), _median_rate(t_train[name], args.steps * bsz),
             _median_rate(t_infer[name], ibsz)) for name, model in models.items()]


def _compare_outputs(models: dict[str, torch.nn.Module], inputs: tuple[torch.Tensor, ...],
                     preset: str) -> None:
    """Same weights in both; eval-mode logits on jets with more than ``k`` particles."""
    hepml, weaver = models["hepml"], models["weaver"]
    weaver.load_state_dict(_weaver_state(hepml))
    p, f, m, _ = inputs
    k_max = max(k for k, _ in PRESETS[preset]["conv_params"])
    with torch.no_grad():
        hepml.eval()
        weaver.eval()
        diff = (hepml(p, f, m) - weaver(p, f, m)).abs().amax(1)
    big = m[:, 0].sum(1) > k_max
    d = diff[big]
    print(f"    same weights, eval mode, {int(big.sum())} jets with more than {k_max} "
          f"particles: max |logit difference| {float(d.max()):.1e}, "
          f"{int((d > 1e-4).sum())} jets above 1e-4")


def _bench_graphs(args: argparse.Namespace, transform: ParticleClouds, tree: str,
                  step_size: int) -> list[dict]:
    fields = list(transform.required_fields)
    state: dict[str, list] = {}

    def read() -> None:
        source = Source(args.file, tree, fields, step_size=step_size)
        state["arrays"] = [chunk.arrays for chunk in source]

    def build() -> None:
        state["clouds"] = [transform(arrays) for arrays in state["arrays"]]

    def pyg() -> None:
        state["graphs"] = [to_pyg(clouds) for clouds in state["clouds"]]

    def knn() -> None:
        for clouds in state["clouds"]:
            points, mask = clouds["points"].transpose(1, 2), clouds["mask"][:, 0]
            for start in range(0, len(points), args.inference_batch_size):
                sl = slice(start, start + args.inference_batch_size)
                knn_indices(points[sl], args.k, mask[sl])

    stages: dict[str, Callable[[], None]] = {
        "(a) read (Source, all chunks)": read, "(b) build padded clouds": build,
        "(c) to_pyg": pyg, f"(d) knn_indices, k = {args.k}": knn}
    times: dict[str, list[float]] = {name: [] for name in stages}
    for rep in range(args.repeat + 1):  # the first round warms up and is not counted
        for name, fn in stages.items():
            start = time.perf_counter()
            fn()
            if rep:
                times[name].append(time.perf_counter() - start)
    n = sum(len(a) for a in state["arrays"])
    n_part = sum(int(c["mask"].sum()) for c in state["clouds"])
    print(f"\nGraph building vs reading: {n} jets, {n_part / n:.1f} particles per jet kept "
          f"(max_particles {transform.config.max_particles}), median of {args.repeat}")
    print(f"{'stage':<32}{'time [s]':>10}{'jets/s':>12}{'time / read':>13}")
    t_read = statistics.median(times["(a) read (Source, all chunks)"])
    rows = []
    for name, t in times.items():
        med = statistics.median(t)
        print(f"{name:<32}{med:>10.3f}{n / med:>12,.0f}{med / t_read:>13.2f}")
        if not name.startswith("(a)"):
            rows.append(row("particlenet", f"particle clouds: {name[4:]}", f"{n:,} jets",
                            "jets/s", n / med, "read the same branches (hepml.io.Source)",
                            n / t_read))
    return rows


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the tables."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workflow", default=str(ROOT / "workflows/top_tagging_gnn.yaml"),
                        help="workflow whose representation (and preset) is used "
                        "(default: %(default)s)")
    parser.add_argument("--file", default=str(ROOT / "data_samples/top_qcd_jets.root"),
                        help="ROOT file of jets (default: %(default)s)")
    parser.add_argument("--presets", nargs="+", choices=sorted(PRESETS), default=None,
                        help="ParticleNet presets timed (default: the workflow's preset)")
    parser.add_argument("--device", default="auto",
                        help="auto (cpu, and cuda when present), cpu, cuda, ... "
                        "(default: %(default)s)")
    parser.add_argument("--batch-size", type=int, default=128,
                        help="training batch (default: %(default)s)")
    parser.add_argument("--inference-batch-size", type=int, default=1024,
                        help="jets per forward pass of the inference timing "
                        "(default: %(default)s)")
    parser.add_argument("--warmup", type=int, default=2,
                        help="training steps before timing (default: %(default)s)")
    parser.add_argument("--steps", type=int, default=3,
                        help="timed training steps per repetition (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="interleaved repetitions (default: %(default)s)")
    parser.add_argument("--max-particles", type=int, default=None,
                        help="particles per jet (default: the workflow's)")
    parser.add_argument("--k", type=int, default=16,
                        help="neighbours for the kNN timing (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="torch CPU threads (default: the number of cores)")
    parser.add_argument("--skip-models", action="store_true", help="only the graph timing")
    parser.add_argument("--skip-graphs", action="store_true", help="only the model timing")
    parser.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = parser.parse_args(argv)

    overrides = ({"representation.max_particles": args.max_particles}
                 if args.max_particles is not None else None)
    workflow = load_workflow(args.workflow, overrides)
    spec = dict(workflow.representation)
    if spec.pop("kind", None) != "particle_cloud":
        parser.error(f"{args.workflow}: the representation is not particle_cloud")
    transform = ParticleClouds(spec)
    args.presets = args.presets or [workflow.model.get("preset", "particlenet")]
    torch.set_num_threads(args.threads)
    weaver_cls, weaver_version = _weaver_class()
    print(f"{_load()} (start); {os.cpu_count()} cores, torch {torch.__version__} with "
          f"{torch.get_num_threads()} threads")
    print(f"{args.file}: {transform!r}")
    if weaver_cls is None:
        print(f"weaver-core is not importable ({weaver_version}): the reference is skipped")
    else:
        print(f"reference: weaver-core {weaver_version}")

    out_rows: list[dict] = []
    if not args.skip_models:
        clouds = _read_clouds(args, transform, list(workflow.data.labels), workflow.data.tree,
                              workflow.data.step_size)
        print(f"{len(clouds['label'])} jets; training batch {args.batch_size}, "
              f"{args.warmup} warm-up + {args.steps} timed steps x {args.repeat}; inference "
              f"batch {args.inference_batch_size} x {args.repeat}")
        for device in _devices(args.device):
            rows = _bench_models(args, clouds, device, weaver_cls)
            name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
            print(f"\nParticleNet on {device} ({name}), median of {args.repeat} interleaved "
                  f"repetitions")
            print(f"{'preset':<18}{'implementation':<16}{'params':>9}{'train jets/s':>14}"
                  f"{'inference jets/s':>18}")
            for preset in args.presets:
                by_impl = {r[1]: r for r in rows if r[0] == preset}
                for impl, r in by_impl.items():
                    label = impl if impl == "hepml" else f"weaver {weaver_version}"
                    print(f"{preset:<18}{label:<16}{r[2]:>9,}{r[3]:>14.1f}{r[4]:>18.1f}")
                if "weaver" in by_impl:
                    h, w = by_impl["hepml"], by_impl["weaver"]
                    print(f"{preset:<18}{'hepml / weaver':<16}{'':>9}{h[3] / w[3]:>14.2f}"
                          f"{h[4] / w[4]:>18.2f}")
                h, w = by_impl["hepml"], by_impl.get("weaver")
                ref = f"weaver-core {weaver_version}" if w else None
                note = f"{h[2]:,} parameters, {args.threads} thread(s)"
                out_rows.append(row(
                    "particlenet", f"{preset} training step (batch {args.batch_size}, {device})",
                    f"{args.steps * args.batch_size:,} jets x {args.repeat}", "jets/s", h[3],
                    ref, w[3] if w else None, note=note))
                out_rows.append(row(
                    "particlenet", f"{preset} inference (batch {args.inference_batch_size}, "
                    f"{device})", f"{min(args.inference_batch_size, len(clouds['label'])):,} "
                    f"jets x {args.repeat}", "jets/s", h[4], ref, w[4] if w else None))
    if not args.skip_graphs:
        out_rows += _bench_graphs(args, transform, workflow.data.tree, workflow.data.step_size)
    write_rows(args.json, out_rows)
    print(f"\n{_load()} (end)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
