"""Time reading the jet-image branches with uproot against building the images from them.

Usage::

    python benchmarks/bench_jet_images.py --file data_samples/top_qcd_jets.root --tree tree \
        --repeat 3
    python benchmarks/bench_jet_images.py --synthetic 50000 --repeat 3 [--json out.json]

For each configuration (the default one; full preprocessing: centroid centring, rotation,
flip, sum normalisation; the same with centring on the leading FastJet subjet; full
preprocessing with four channels) the script times

(a) reading the branches the images need: ``uproot.open(file)[tree].arrays(fields)`` on a
    freshly opened file each time (no uproot cache), and ``uproot.iterate`` over the same
    branches in chunks of ``--step`` entries;
(b) building the images from the arrays read in (a), whole file at once and chunk by chunk.

It prints the best of ``--repeat`` runs as jets per second and the ratio build / read
(goal: below 1, building costs less than reading). ``--synthetic N`` writes a temporary
ROOT file of N random JetClass-like jets (about 50 constituents each) with
``hepml.io.writing.write_tree`` and benchmarks on it. ``--json`` writes the rows of
``run_all.py`` (build jets/s against read jets/s, per configuration and way of reading).
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import uproot
from _results import row, write_rows
from _timing import best_with_result

try:
    from hepml.representations import JetImageConfig, make_jet_images
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
    from hepml.representations import JetImageConfig, make_jet_images

from hepml.io.writing import write_tree  # noqa: E402


def synthetic_file(path: Path, n: int, seed: int = 0) -> Path:
    """Write ``n`` random JetClass-like jets (Poisson(50) constituents) to ``path``."""
    import awkward as ak

    rng = np.random.default_rng(seed)
    counts = rng.poisson(50, n)
    m = int(counts.sum())
    pt = rng.exponential(10.0, m)
    deta = rng.normal(0, 0.25, m)
    dphi = rng.normal(0, 0.25, m)
    jet_eta = rng.uniform(-2, 2, n)
    jet_phi = rng.uniform(-np.pi, np.pi, n)
    eta = deta + np.repeat(jet_eta, counts)
    phi = dphi + np.repeat(jet_phi, counts)
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    energy = np.sqrt(px**2 + py**2 + pz**2)

    def jag(values: np.ndarray) -> ak.Array:
        return ak.unflatten(values.astype(np.float32), counts)

    jet = np.repeat(np.arange(n), counts)
    jet_px = np.bincount(jet, px, minlength=n)
    jet_py = np.bincount(jet, py, minlength=n)
    branches = {
        "part_px": jag(px), "part_py": jag(py), "part_pz": jag(pz), "part_energy": jag(energy),
        "part_deta": jag(deta), "part_dphi": jag(dphi),
        "part_charge": jag(rng.choice([-1.0, 0.0, 1.0], m)),
        "jet_pt": np.hypot(jet_px, jet_py).astype(np.float32),
        "jet_eta": jet_eta.astype(np.float32), "jet_phi": jet_phi.astype(np.float32),
        "jet_energy": np.bincount(jet, energy, minlength=n).astype(np.float32),
        "jet_mass": rng.uniform(20, 200, n).astype(np.float32),
        "jet_nparticles": counts.astype(np.int32),
    }
    return write_tree(path, branches, tree="tree")


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark from the command line (or from ``argv``)."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--file", default="data_samples/top_qcd_jets.root",
                        help="ROOT file of jets with JetClass branches (default: %(default)s)")
    parser.add_argument("--tree", default="tree", help="tree of --file (default: %(default)s)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="timings of each step; the best is kept (default: %(default)s)")
    parser.add_argument("--step", type=int, default=20_000,
                        help="entries per chunk for uproot.iterate and the chunked building "
                        "(default: %(default)s)")
    parser.add_argument("--synthetic", type=int, default=0, metavar="N",
                        help="benchmark on a temporary file of N random jets instead of "
                        "--file (default: %(default)s, use --file)")
    parser.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = parser.parse_args(argv)

    tmp = None
    path = Path(args.file)
    if args.synthetic:
        tmp = tempfile.TemporaryDirectory()
        t0 = time.perf_counter()
        path = synthetic_file(Path(tmp.name) / "synthetic_jets.root", args.synthetic)
        print(f"wrote {args.synthetic} synthetic jets to {path} "
              f"in {time.perf_counter() - t0:.1f} s")
    elif not path.exists():
        parser.error(f"{path} does not exist; give --file or --synthetic N")

    configs = {
        "default": JetImageConfig(),
        "full": JetImageConfig(center="centroid", rotate=True, flip=True, normalize="sum"),
        "subjet": JetImageConfig(center="leading_subjet", rotate=True, flip=True,
                                 normalize="sum"),
        "full 4ch": JetImageConfig(center="centroid", rotate=True, flip=True, normalize="sum",
                                   channels=("pt", "charged_pt", "neutral_pt", "multiplicity")),
    }
    with uproot.open(path) as f:
        n = f[args.tree].num_entries
        n_part = int(f[args.tree]["part_px"].array(library="ak").layout.offsets[-1]) if n else 0
    print(f"{path}: {n} jets, {n_part / max(n, 1):.1f} constituents per jet; best of {args.repeat}")
    print(f"{'config':10s} {'read s':>8s} {'build s':>8s} {'read jets/s':>12s} "
          f"{'build jets/s':>13s} {'build/read':>10s}   (whole file | iterate step {args.step})")
    rows = []
    size = f"{n:,} jets" + (" (synthetic)" if args.synthetic else "")
    for name, cfg in configs.items():
        fields = list(cfg.required_fields)

        def read(fields: list[str] = fields):
            with uproot.open(path) as f:
                return f[args.tree].arrays(fields)

        def read_chunks(fields: list[str] = fields):
            return list(uproot.iterate(f"{path}:{args.tree}", fields, step_size=args.step))

        t_read, arrays = best_with_result(read, args.repeat)
        t_build, images = best_with_result(
            lambda cfg=cfg, arrays=arrays: make_jet_images(arrays, cfg), args.repeat)
        t_iter, chunks = best_with_result(read_chunks, args.repeat)
        t_bchunks, _ = best_with_result(
            lambda cfg=cfg, chunks=chunks: [make_jet_images(c, cfg) for c in chunks], args.repeat)
        for label, tr, tb in (("", t_read, t_build), ("iterate", t_iter, t_bchunks)):
            print(f"{name if not label else '  ' + label:10s} {tr:8.3f} {tb:8.3f} {n / tr:12.0f} "
                  f"{n / tb:13.0f} {tb / tr:10.2f}")
            how = "whole file" if not label else f"chunks of {args.step:,}"
            rows.append(row("jet_images", f"build images, {name} ({how})", size, "jets/s",
                            n / tb, f"uproot read of the same branches ({how})", n / tr))
        if tuple(images.shape) != (n, *cfg.shape):
            raise SystemExit(f"unexpected image shape {tuple(images.shape)} for {name}")
    write_rows(args.json, rows)
    if tmp is not None:
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
