"""Forward-pass throughput of onnxruntime against torch on the same inputs, per model family.

Usage::

    python benchmarks/bench_onnx.py --checkpoint RUN_A/checkpoint_best.pt [RUN_B/... ...] \
        [--entries 1024] [--batch-size 256] [--threads 1] [--repeat 3] [--json out.json]

For each checkpoint:

1. ``hepml.tasks.export.export`` writes the model as ONNX (and checks it against torch with
   onnxruntime, as ``hepml export`` does) into a temporary directory;
2. the inputs are built the way the export's ``.preprocessing.json`` says: the first
   ``--entries`` entries of the check files, read with ``hepml.io.Source`` (its tree,
   fields and branch mapping) and turned into tensors by the representation it names
   (for the CaloGAN: ``z ~ N(0, 1)``, energies uniform in the training range, the first
   particle);
3. the same inputs go through the torch model of the checkpoint (evaluation mode,
   ``torch.inference_mode``) and through an onnxruntime ``InferenceSession``
   (``CPUExecutionProvider``, all graph optimisations), in batches of ``--batch-size``
   entries (one warm-up pass each), torch and onnxruntime alternating for ``--repeat``
   repetitions; the best of each is kept.

Both use ``--threads`` threads (torch intra-op threads; onnxruntime intra- and inter-op
threads). The ratio is onnxruntime / torch in entries per second (jets, events, showers,
lumisections or track prefixes, as the model takes them). ``--json`` writes the rows of
``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from _results import row, write_rows

ROOT = Path(__file__).resolve().parents[1]
try:
    import hepml  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
from hepml.io import Source  # noqa: E402
from hepml.models import build_model  # noqa: E402
from hepml.tasks.export import build_representation, export, preprocessing_path  # noqa: E402
from hepml.training import load_checkpoint  # noqa: E402


def _inputs(info: dict, model: torch.nn.Module, n: int) -> dict[str, torch.Tensor]:
    """Model inputs by ONNX input name, built as the preprocessing JSON describes."""
    names = [i["name"] for i in info["inputs"]]
    if info["model"]["kind"] == "calogan":
        lo, hi = info["normalisation"]["energy_range_gev"]
        gen = torch.Generator().manual_seed(0)
        return {"z": torch.randn(n, model.latent_dim, generator=gen),
                "energy": lo + (hi - lo) * torch.rand(n, generator=gen),
                "particle": torch.zeros(n, dtype=torch.int64)}
    data, rep_spec = info["data"], dict(info["representation"])
    files = info.get("check", {}).get("files") or data["training_files"]
    files = [f if Path(f).is_absolute() else str(ROOT / f) for f in files]
    kind = rep_spec["kind"]
    source = Source(files, data["tree"], list(data["fields"]),
                    branches=data.get("branch_mapping") or None, step_size=n, max_entries=n,
                    check_finite=kind != "lumisection_maps")
    arrays = source.read(source.chunks[0])
    representation = build_representation(rep_spec)
    if kind == "hit_graph":
        out = representation(arrays, truth=False)
    elif kind == "lumisection_maps":
        out = representation(arrays, where=f"{files[0]} (benchmark)")
    else:
        out = representation(arrays)
    if not isinstance(out, dict):
        return {names[0]: out}
    return {k: out[k] for k in names}


def _torch_call(model: torch.nn.Module, kind: str, x: list[torch.Tensor]):
    if kind == "calogan":
        z, energy, particle = x
        return model(energy, particle, z)
    return model(*x)


def bench(checkpoint: Path, args: argparse.Namespace, tmp: Path) -> dict:
    """Export one checkpoint and time torch and onnxruntime on the same inputs."""
    import onnxruntime as ort

    state = load_checkpoint(checkpoint)
    kind = state["model"]["kind"]
    model = build_model(kind, **state["model"]["kwargs"])
    model.load_state_dict(state["model_state"])
    model.eval()
    onnx_path = tmp / f"{kind}_{checkpoint.parent.name}.onnx"
    t0 = time.perf_counter()
    export(checkpoint, onnx_path, n_check=min(args.entries, 256))
    t_export = time.perf_counter() - t0
    info = json.loads(preprocessing_path(onnx_path).read_text())
    inputs = _inputs(info, model, args.entries)
    names = [i["name"] for i in info["inputs"]]
    n = len(inputs[names[0]])
    batches = [[inputs[k][s:s + args.batch_size] for k in names]
               for s in range(0, n, args.batch_size)]
    feeds = [{k: b.numpy() for k, b in zip(names, batch, strict=True)} for batch in batches]
    options = ort.SessionOptions()
    options.intra_op_num_threads = args.threads
    options.inter_op_num_threads = args.threads
    options.log_severity_level = 3
    session = ort.InferenceSession(str(onnx_path), options, providers=["CPUExecutionProvider"])
    outputs = [o.name for o in session.get_outputs()]

    def run_torch() -> None:
        with torch.inference_mode():
            for batch in batches:
                _torch_call(model, kind, batch)

    def run_ort() -> None:
        for feed in feeds:
            session.run(outputs, feed)

    run_torch()
    run_ort()
    times: dict[str, list[float]] = {"torch": [], "onnxruntime": []}
    for _ in range(args.repeat):
        for name, fn in (("torch", run_torch), ("onnxruntime", run_ort)):
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    first = session.run(outputs, feeds[0])[0]
    with torch.inference_mode():
        ref = _torch_call(model, kind, batches[0])
    ref = next(iter(ref.values())) if isinstance(ref, dict) else ref
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    diff = float(np.abs(first - ref.numpy()).max() / max(float(np.abs(ref.numpy()).max()), 1e-12))
    return {"kind": kind, "n": n, "torch": n / min(times["torch"]),
            "onnxruntime": n / min(times["onnxruntime"]), "export_s": t_export,
            "rel_diff": diff, "params": sum(p.numel() for p in model.parameters()),
            "rep": (info.get("representation") or {}).get("kind", "showers")}


def main(argv: list[str] | None = None) -> int:
    """Export and time every checkpoint given; print one line each."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--checkpoint", nargs="+", type=Path, required=True,
                   help="checkpoints to export and time, one model each")
    p.add_argument("--entries", type=int, default=1024,
                   help="entries timed per pass (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="entries per forward pass (default: %(default)s)")
    p.add_argument("--threads", type=int, default=1,
                   help="threads of torch and of onnxruntime (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="alternating timings of torch and onnxruntime; the best of each is "
                   "kept (default: %(default)s)")
    p.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    logging.basicConfig(level=logging.WARNING)
    results = []
    with tempfile.TemporaryDirectory(prefix="hepml-bench-onnx-") as tmp:
        for ck in args.checkpoint:
            results.append(bench(ck, args, Path(tmp)))
    print(f"{args.threads} thread(s), batches of {args.batch_size}, best of {args.repeat}")
    print(f"{'model':<22}{'params':>9}{'entries':>9}{'torch /s':>11}{'onnxruntime /s':>16}"
          f"{'ratio':>7}{'rel diff':>10}{'export s':>10}")
    rows = []
    for r in results:
        print(f"{r['kind']:<22}{r['params']:>9,}{r['n']:>9}{r['torch']:>11,.0f}"
              f"{r['onnxruntime']:>16,.0f}{r['onnxruntime'] / r['torch']:>7.2f}"
              f"{r['rel_diff']:>10.1e}{r['export_s']:>10.1f}")
        rows.append(row("onnx", f"forward pass, {r['kind']} ({r['rep']})",
                        f"{r['n']:,} entries, batches of {args.batch_size}", "entries/s",
                        r["onnxruntime"], "torch (eval, inference_mode)", r["torch"],
                        note=f"{r['params']:,} parameters; {args.threads} thread(s); first "
                             f"output's max rel diff {r['rel_diff']:.1e}; export + check "
                             f"{r['export_s']:.0f} s"))
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
