"""Data-quality monitoring: lumisections/s of reading vs building maps vs scoring.

Usage::

    python benchmarks/bench_dqm.py --file data_samples/dqm_run.root --threads 2 --repeat 3 \
        [--checkpoint RUN/checkpoint_best.pt] [--run RUN_DIR] [--json out.json]

(a) Reading the branches the maps need (histograms, crossings, run, lumi) of every LS with
    ``hepml.io.Source`` from a freshly opened file -- the baseline of (b) and (c),
    measured in the same run;
(b) building the stacked per-crossing maps (``LumisectionMaps``) from the arrays read;
(c) scoring the maps with the autoencoder's ``anomaly_scores`` (weights from
    ``--checkpoint`` or, without it, untrained weights of the workflow's model: the cost
    is the same), batches of ``--batch-size`` LS, no gradients.

With ``--run RUN_DIR`` the detection table of a finished dqm run (its ``metrics.json``)
is printed as well. Best of ``--repeat`` runs. ``--json`` writes the rows of
``run_all.py`` ((b) and (c) against (a)).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import yaml
from _results import row, write_rows
from _timing import best_with_result

ROOT = Path(__file__).resolve().parents[1]
try:
    from hepml.io import Source
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
    from hepml.io import Source
from hepml.io import read_metadata  # noqa: E402
from hepml.models import build_model  # noqa: E402
from hepml.models import model_spec as size_model  # noqa: E402
from hepml.tasks import dqm  # noqa: E402
from hepml.training import load_checkpoint  # noqa: E402


def goal_cell(r: dict) -> str:
    """Whether a fault type meets the run's goal: ``yes``, ``no``, or ``n/a``.

    The goal (``metrics.json`` ``goal``) is that every type touching at least
    ``dqm.coverage`` of the channels is detected in at least ``dqm.target_efficiency`` of
    its LS. It applies to a type that touches that many channels (``touches_coverage``;
    a type without truth masks counts, as in the run's own goal) and holds when the type
    also ``meets_target``; types touching fewer channels are ``n/a``.
    """
    if not r.get("touches_coverage", True):
        return "n/a"
    return "yes" if r["meets_target"] else "no"


def detection_row(name: str, r: dict) -> str:
    """One line of the detection table from a type's entry of ``metrics.json`` ``detection``."""
    eff = r["efficiency"]
    frac = r.get("channel_fraction", {}).get("mean")
    top1 = r.get("top1_in_mask", {}).get("value")
    prec = r.get("topk_precision", {}).get("mean")
    return (f"{name:<14} {r['n_lumisections']:>4} {eff['passed']:>9} "
            f"{eff['value']:>8.3f} ± {eff['uncertainty']:.3f} "
            f"{100 * frac if frac is not None else float('nan'):>8.2f}% "
            f"{goal_cell(r):>5} "
            f"{top1 if top1 is not None else float('nan'):>6.3f} "
            f"{prec if prec is not None else float('nan'):>12.3f}")


def detection_table(run_dir: Path) -> None:
    """Print the per-type detection table of a finished run."""
    m = json.loads((run_dir / "metrics.json").read_text())
    far = m.get("false_alarm_rate") or {}
    print(f"\n{run_dir}: score {m.get('score')}, threshold {m['threshold']:.4g} "
          f"({m.get('threshold_definition', '')})")
    if far:
        print(f"false-alarm rate on {far.get('measured_on')}: {far['value']:.4f} "
              f"± {far['uncertainty']:.4f} ({far['passed']}/{far['total']})")
    print(f"{'fault':<14} {'LS':>4} {'detected':>9} {'efficiency':>16} {'channels':>9} "
          f"{'goal':>5} {'top-1':>6} {'top-k prec.':>12}")
    for name, r in (m.get("detection") or {}).items():
        print(detection_row(name, r))
    if m.get("goal"):
        print(f"goal {'met' if m['goal']['met'] else 'NOT met'}: {m['goal']['statement']}")
    t = m.get("timing", {})
    print(f"run time {t.get('total_s', float('nan')):.0f} s, training "
          f"{m.get('training', {}).get('seconds', float('nan')):.0f} s "
          f"({m.get('training', {}).get('epochs_run')} epochs)")


def main() -> None:
    """Run the benchmark."""
    p = argparse.ArgumentParser(description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--file", default=str(ROOT / "data_samples" / "dqm_run.root"),
                   help="ROOT file of lumisections read, built and scored (default: %(default)s)")
    p.add_argument("--tree", default="lumis", help="tree of --file (default: %(default)s)")
    p.add_argument("--workflow", default=str(ROOT / "workflows" / "dqm_monitor.yaml"),
                   help="dqm workflow whose representation and model are timed without "
                   "--checkpoint (default: %(default)s)")
    p.add_argument("--checkpoint", help="trained weights (default: untrained, same cost)")
    p.add_argument("--run", help="a finished dqm run directory: print its detection table")
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timings of each step; the best is kept (default: %(default)s)")
    p.add_argument("--batch-size", type=int, default=256,
                   help="lumisections per forward pass of (c) (default: %(default)s)")
    p.add_argument("--device", default="cpu",
                   help="device of the scoring (c): cpu, cuda, ... (default: %(default)s)")
    p.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    if args.checkpoint:
        state = load_checkpoint(args.checkpoint)
        spec = state["model"]
        representation = dqm.build_representation(dict(state["config"]["representation"]))
    else:
        cfg = yaml.safe_load(Path(args.workflow).read_text())
        state, spec = None, None
        representation = dqm.build_representation(dict(cfg.get("representation") or {}))
    fields = list(representation.required_fields)

    def read():
        source = Source([args.file], args.tree, fields, step_size=100_000, check_finite=False)
        return [source.read(c) for c in source.chunks]

    t_read, chunks = best_with_result(read, args.repeat)
    n = sum(len(c) for c in chunks)
    if not representation.bound:
        observed = representation.observed_binning(chunks[0][:1], read_metadata(args.file))
        representation = representation.bind(observed)
    t_build, maps = best_with_result(lambda: torch.cat([representation(c) for c in chunks]),
                                     args.repeat)

    if spec is None:
        model_cfg = dict(cfg.get("model") or {})
        spec = size_model(dqm._model_kind(model_cfg), model_cfg, representation.output_shape,
                          flatten=True, source="the lumisection maps")
    model = build_model(spec["kind"], **spec["kwargs"])
    if state is not None:
        model.load_state_dict(state["model_state"])
    dev = torch.device(args.device)
    model.to(dev).eval()
    x = maps.flatten(1) if spec["kind"] == "autoencoder" else maps

    def score():
        out = model.anomaly_scores(x.to(dev), batch_size=args.batch_size)
        return out["reconstruction_error"].cpu()

    score()  # warm-up
    t_score, _ = best_with_result(score, args.repeat)
    print(f"{n} lumisections, maps {tuple(maps.shape[1:])}, model {spec['kind']} "
          f"{spec['kwargs'].get('channels', spec['kwargs'].get('hidden'))}, "
          f"{args.threads} thread(s), device {args.device}, best of {args.repeat}")
    print(f"{'step':<32} {'LS/s':>10} {'time / read':>12}")
    for name, t in (("(a) read (baseline)", t_read), ("(b) build maps", t_build),
                    ("(c) score (anomaly_scores)", t_score)):
        print(f"{name:<32} {n / t:>10.0f} {t / t_read:>12.2f}")
    size, base = f"{n:,} lumisections", "read the same branches (hepml.io.Source)"
    weights = "trained" if state is not None else "untrained (same cost)"
    write_rows(args.json, [
        row("dqm", "build lumisection maps", size, "LS/s", n / t_build, base, n / t_read),
        row("dqm", f"score maps ({spec['kind']}, batch {args.batch_size}, {args.device})",
            size, "LS/s", n / t_score, base, n / t_read,
            note=f"weights {weights}; {args.threads} thread(s)"),
    ])
    if args.run:
        detection_table(Path(args.run))


if __name__ == "__main__":
    main()
