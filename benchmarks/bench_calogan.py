"""Fast calorimeter simulation: showers/s of the GFlash reference and of a generator.

Usage::

    python benchmarks/bench_calogan.py --generator calogan|caloflow --threads 1 --repeat 3 \
        [--runs 3] [--checkpoint RUN/checkpoint_best.pt] [--energy 50] [--json out.json]

Both are timed in the same run, at batch sizes 1, 128 and 1024, for e+ showers in the
CaloGAN calorimeter:

(a) the reference: ``hepml.simulation.showers.simulate_showers`` (GFlash spots, sampling
    fluctuations, readout into the three layers), one call per batch of showers --
    the baseline;
(b) the generator (``--generator``: the CaloGAN or CaloFlow): its ``sample`` on the CPU,
    timed by ``hepml.tasks.calosim.generation_speed`` as a calosim run times it (weights
    from ``--checkpoint`` or, without it, untrained weights of the workflow's model: the
    cost is the same), no gradients;
(c) the generator on CUDA when there is a GPU.

The speed-up is (b) / (a) at the same batch size, with the same number of CPU threads.
Incident energy: ``--energy`` GeV (default 50) and, separately, uniform in 1-100 GeV for the
reference. Best of ``--repeat`` timings, each at least ``--min-seconds`` long; with
``--runs R`` the whole measurement is made R times and the speed-up is printed as the mean
and standard deviation over the runs. ``--json`` writes the rows of ``run_all.py``
(generator against reference per batch size and device, from the first run).
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml
from _results import row as result_row
from _results import write_rows

ROOT = Path(__file__).resolve().parents[1]
try:
    import hepml  # noqa: F401
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
from hepml.models import build_model  # noqa: E402
from hepml.simulation.showers import ShowerSimulationConfig, simulate_showers  # noqa: E402
from hepml.tasks.calosim import generation_speed  # noqa: E402
from hepml.training import load_checkpoint  # noqa: E402

BATCHES = (1, 128, 1024)


def rate(fn, n: int, repeat: int, min_seconds: float) -> float:
    """Best items/s of ``repeat`` timings of calling ``fn`` (n items per call) for min_seconds."""
    fn()  # warm-up
    best = 0.0
    for _ in range(repeat):
        calls, t0 = 0, time.perf_counter()
        while True:
            fn()
            calls += 1
            dt = time.perf_counter() - t0
            if dt >= min_seconds:
                break
        best = max(best, calls * n / dt)
    return best


def reference_rate(batch: int, energy: float | None, repeat: int, min_seconds: float) -> float:
    """Showers/s of the numpy reference simulation in batches of ``batch``."""
    seed = iter(range(1_000_000))

    def call() -> None:
        cfg = ShowerSimulationConfig(n_showers=batch, energy=energy, seed=next(seed),
                                     batch_size=max(batch, 1))
        simulate_showers(cfg)

    return rate(call, batch, repeat, min_seconds)


def generator(checkpoint: str | None, kind: str = "calogan") -> torch.nn.Module:
    """The generator of ``checkpoint``, or an untrained one of workflows/KIND.yaml."""
    if checkpoint:
        state = load_checkpoint(checkpoint)
        model = build_model(state["model"]["kind"], **state["model"]["kwargs"])
        model.load_state_dict(state["model_state"])
        return model.eval()
    spec = yaml.safe_load((ROOT / "workflows" / f"{kind}.yaml").read_text())["model"]
    return build_model(spec.pop("kind"), **spec).eval()


def main() -> None:
    """Run the benchmark from the command line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--generator", choices=("calogan", "caloflow"), default="calogan",
                    help="the generator without --checkpoint (default: %(default)s)")
    ap.add_argument("--checkpoint", help="a calosim run's checkpoint_best.pt (default: "
                    "untrained weights of workflows/GENERATOR.yaml's model, the same cost)")
    ap.add_argument("--batches", type=int, nargs="+", default=list(BATCHES),
                    help="batch sizes (default: %(default)s); the goal is read at the last")
    ap.add_argument("--runs", type=int, default=1,
                    help="repeat the whole measurement; print the spread (default: 1)")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads of torch (numpy "
                    "simulation is single-threaded) (default: %(default)s)")
    ap.add_argument("--energy", type=float, default=50.0,
                    help="incident energy of the timed showers, GeV (default: %(default)s)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="timings of each measurement; the best is kept (default: %(default)s)")
    ap.add_argument("--min-seconds", type=float, default=1.0,
                    help="shortest duration of one timing, in seconds; batches are repeated "
                    "until it is reached (default: %(default)s)")
    ap.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    model = generator(args.checkpoint, args.generator)
    kind = type(model).__name__
    n_params = sum(p.numel() for name, part in model.named_children()
                   if name not in ("discriminator", "generator_ema") for p in part.parameters())
    print(f"{kind} generator: {n_params:,} parameters "
          f"({'trained: ' + args.checkpoint if args.checkpoint else 'untrained weights'}); "
          f"torch threads {args.threads}; e+ at {args.energy:g} GeV")
    runs = [measure(model, args) for _ in range(max(1, args.runs))]
    rows = runs[0]
    print(f"\n{'batch':>6} {'reference/s':>12} {'ref. 1-100 GeV/s':>17} {'generator CPU/s':>16} "
          f"{'speed-up':>9}" + (f" {'generator CUDA/s':>17} {'speed-up':>9}"
                                if torch.cuda.is_available() else ""))
    for rows_k in runs:
        for r in rows_k:
            line = (f"{r['batch']:>6} {r['reference_per_s']:>12,.0f} "
                    f"{r['reference_uniform_1_100_per_s']:>17,.0f} "
                    f"{r['generator_cpu_per_s']:>16,.0f} {r['speedup_cpu']:>8.0f}x")
            if "generator_cuda_per_s" in r:
                line += f" {r['generator_cuda_per_s']:>17,.0f} {r['speedup_cuda']:>8.0f}x"
            print(line)
    goal_x = 100 if kind == "CaloGAN" else 10
    speedups = [next(r["speedup_cpu"] for r in rows_k if r["batch"] == args.batches[-1])
                for rows_k in runs]
    mean = sum(speedups) / len(speedups)
    std = (sum((v - mean) ** 2 for v in speedups) / max(1, len(speedups) - 1)) ** 0.5
    last = args.batches[-1]
    print(f"\nspeed-up on the CPU at batch {last} over {len(runs)} run(s): "
          f"{mean:.1f}x ± {std:.1f} (min {min(speedups):.1f}x, max {max(speedups):.1f}x)")
    missed = sum(v < goal_x for v in speedups)
    print(f"goal ({kind} >= {goal_x}x the reference on CPU at batch {last}): "
          + ("met in every run" if not missed else f"NOT met in {missed} of {len(runs)} run(s)"))
    out = []
    weights = "trained" if args.checkpoint else "untrained (same cost)"
    for r in rows:
        for dev in ("cpu", "cuda"):
            if f"generator_{dev}_per_s" not in r:
                continue
            out.append(result_row(args.generator, f"{kind} generator, batch {r['batch']} ({dev})",
                           f"e+ at {args.energy:g} GeV, batches of {r['batch']}", "showers/s",
                           r[f"generator_{dev}_per_s"], "GFlash reference simulation (numpy)",
                           r["reference_per_s"],
                           note=f"{n_params:,} parameters, weights {weights}; "
                           f"{args.threads} thread(s)"))
    write_rows(args.json, out)


def measure(model: torch.nn.Module, args: argparse.Namespace) -> list[dict[str, float]]:
    """One measurement: reference and generator at every batch size."""
    rows = []
    for batch in args.batches:
        ref_fixed = reference_rate(batch, args.energy, args.repeat, args.min_seconds)
        ref_uniform = reference_rate(batch, None, args.repeat, args.min_seconds)
        gen_cpu = generation_speed(model, device=torch.device("cpu"), batch_sizes=[batch],
                                   energy=args.energy, min_seconds=args.min_seconds,
                                   repeat=args.repeat)[batch]
        row = {"batch": batch, "reference_per_s": ref_fixed,
               "reference_uniform_1_100_per_s": ref_uniform, "generator_cpu_per_s": gen_cpu,
               "speedup_cpu": gen_cpu / ref_fixed}
        if torch.cuda.is_available():
            gen_gpu = generation_speed(model.to("cuda"), device=torch.device("cuda"),
                                       batch_sizes=[batch], energy=args.energy,
                                       min_seconds=args.min_seconds, repeat=args.repeat)[batch]
            row["generator_cuda_per_s"] = gen_gpu
            row["speedup_cuda"] = gen_gpu / ref_fixed
            model = model.cpu()
        rows.append(row)
    return rows


if __name__ == "__main__":
    main()
