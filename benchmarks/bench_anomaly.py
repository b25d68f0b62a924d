"""Anomaly scan: entries/s of reading, image building and scoring; peak memory at 10x input.

Entries/s of reading, image building and autoencoder scoring; peak memory of a scan when
its input grows tenfold.

Usage::

    python benchmarks/bench_anomaly.py --run RUN_DIR [--file data_samples/top_qcd_jets.root] \
        [--threads 2] [--repeat 2] [--copies 10] [--json out.json]

``RUN_DIR`` is a finished anomaly run (e.g. of ``workflows/anomaly_scan.yaml``); its
checkpoint scores the file.

(a) Reading the representation's branches of every entry with ``hepml.io.Source`` -- the
    baseline of (b) and (c), measured in the same run;
(b) reading and building the model inputs (jet images or feature vectors);
(c) the whole scan of ``hepml scan --checkpoint``: reading, inputs, autoencoder scores,
    ranked list, friend trees;
(d) peak resident memory of (c) in a fresh process, for the file once and for ``--copies``
    links to it (ten times the entries). Chunked scoring keeps the two close: the peak is
    one chunk of inputs plus the activations of one batch, whatever the number of files.

Best of ``--repeat`` runs for (a)-(c). ``--json`` writes the rows of ``run_all.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from _results import row, write_rows
from _timing import best

ROOT = Path(__file__).resolve().parents[1]
try:
    from hepml.io import Source
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
    from hepml.io import Source
from hepml.config import DataConfig, from_mapping  # noqa: E402
from hepml.tasks import anomaly  # noqa: E402
from hepml.tasks.tagging import build_representation  # noqa: E402
from hepml.training import load_checkpoint  # noqa: E402

_CHILD = """
import json, sys, time
sys.path.insert(0, {root!r})

def high_water_kb():
    # VmHWM starts afresh at exec; ru_maxrss would carry over the parent's peak
    with open("/proc/self/status") as f:
        return int(next(line for line in f if line.startswith("VmHWM")).split()[1])

from hepml.tasks import anomaly
from hepml.training import load_checkpoint
state = load_checkpoint({ckpt!r})
import hepml.models, torch
torch.set_num_threads({threads})
base = high_water_kb()
t0 = time.perf_counter()
summary = anomaly.scan({ckpt!r}, {files!r}, {out!r}, device="cpu", top=100)
seconds = time.perf_counter() - t0
peak = high_water_kb()
print(json.dumps({{"entries": summary["n_entries"], "seconds": seconds,
                  "base_kb": base, "peak_kb": peak}}))
"""


def child_scan(ckpt: Path, files: list[str], out: Path, threads: int) -> dict:
    """Run one scan in a fresh Python process and return its timing and memory."""
    code = _CHILD.format(root=str(ROOT), ckpt=str(ckpt), files=files, out=str(out),
                         threads=threads)
    res = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env={**os.environ, "TQDM_DISABLE": "1"}, check=True)
    return json.loads(res.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run the benchmark from the command line."""
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--run", required=True, type=Path,
                   help="finished anomaly run directory; its checkpoint_best.pt scores --file")
    p.add_argument("--file", default=str(ROOT / "data_samples" / "top_qcd_jets.root"),
                   help="ROOT file scanned, in the run's layout (default: %(default)s)")
    p.add_argument("--threads", type=int, default=2,
                   help="torch CPU threads, here and in the scans of (d) (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=2,
                   help="timings of (a)-(c); the best is kept (default: %(default)s)")
    p.add_argument("--copies", type=int, default=10,
                   help="links to --file scanned in (d), the larger input whose peak memory "
                   "is compared with the file once (default: %(default)s)")
    p.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    ckpt = args.run / "checkpoint_best.pt"
    state = load_checkpoint(ckpt)
    config = state["config"]
    representation = build_representation(dict(config["representation"]))
    data_cfg = dict(config["data"])
    data_cfg.update(files=[args.file], labels=[], class_names=[], signal_class=None,
                    split=[0.0, 0.0, 1.0], max_entries=None)
    data_config = from_mapping(DataConfig, data_cfg)
    source = Source(data_config.files, data_config.tree, list(representation.required_fields),
                    branches=data_config.branches, step_size=data_config.step_size)
    n = source.num_entries

    def read_all() -> None:
        for spec in source.chunks:
            source.read(spec)

    def build_all() -> None:
        for spec in source.chunks:
            representation(source.read(spec))

    with tempfile.TemporaryDirectory() as tmp:
        def scan_once() -> None:
            anomaly.scan(ckpt, [args.file], Path(tmp) / "once", device="cpu")

        t_read = best(read_all, args.repeat)
        t_build = best(build_all, args.repeat)
        t_scan = best(scan_once, args.repeat)
        links = []
        for k in range(args.copies):
            link = Path(tmp) / f"copy{k}.root"
            os.symlink(os.path.abspath(args.file), link)
            links.append(str(link))
        one = child_scan(ckpt, [args.file], Path(tmp) / "m1", args.threads)
        many = child_scan(ckpt, links, Path(tmp) / "m10", args.threads)
    print(f"input: {args.file}, {n} entries, representation "
          f"{config['representation']['kind']}, model {state['model']['kind']}, "
          f"{args.threads} thread(s), best of {args.repeat}")
    print(f"{'step':<34}{'entries/s':>12}{'vs reading':>12}")
    for name, t in (("(a) reading (baseline)", t_read), ("(b) reading + model inputs", t_build),
                    ("(c) hepml scan --checkpoint", t_scan)):
        print(f"{name:<34}{n / t:>12.0f}{t_read / t:>12.2f}")
    p1, p10 = one["peak_kb"] / 1024, many["peak_kb"] / 1024
    print(f"(d) peak resident memory of a scan in a fresh process: {p1:.0f} MB for "
          f"{one['entries']} entries, {p10:.0f} MB for {many['entries']} entries "
          f"(ratio {p10 / p1:.2f}); after imports and the model: {one['base_kb'] / 1024:.0f} MB")
    print(f"    scan of the {args.copies}x input: "
          f"{many['entries'] / many['seconds']:.0f} entries/s")
    size, base = f"{n:,} entries", "read the same branches (hepml.io.Source)"
    kind = f"{config['representation']['kind']} -> {state['model']['kind']}"
    write_rows(args.json, [
        row("anomaly", f"read + model inputs ({kind})", size, "entries/s", n / t_build, base,
            n / t_read),
        row("anomaly", "whole scan (hepml scan --checkpoint)", size, "entries/s", n / t_scan,
            base, n / t_read, note=f"{args.threads} thread(s)"),
        row("anomaly", f"peak RSS of a scan (VmHWM), {args.copies} links to the file",
            f"{many['entries']:,} entries", "MB", p10, f"the file once ({one['entries']:,})",
            p1, note=f"{one['base_kb'] / 1024:.0f} MB after imports and the model"),
    ])


if __name__ == "__main__":
    main()
