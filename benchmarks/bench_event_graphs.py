"""Event graphs and the event GNN: build cost against reading, and training/inference speed.

Usage::

    python benchmarks/bench_event_graphs.py --file data_samples/events_ttbar_wjets_higgs.root \
        --repeat 3 --threads 2 [--json out.json]

(a) Reading the branches that ``workflows/event_classification.yaml``'s representation needs
    with ``hepml.io.Source`` (all chunks, file validation included) -- the baseline;
(b) building the padded event graphs from those arrays, with full and with kNN (k = 8)
    edges, and converting them to a PyG ``Batch``;
(c) training (forward, cross entropy, backward, AdamW step; batch 128) and inference
    (``no_grad``, batch 1024) of ``EventGNN`` with each message-passing layer, in events/s.

Best of ``--repeat`` runs; ratios are against (a) measured in the same run. ``--json``
writes the rows of ``run_all.py``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch
import yaml
from _results import row, write_rows
from _timing import best

ROOT = Path(__file__).resolve().parents[1]
try:
    from hepml.io import Source
except ModuleNotFoundError:  # run from a checkout without installing
    sys.path.insert(0, str(ROOT))
    from hepml.io import Source
from hepml.models import build_model  # noqa: E402
from hepml.representations import EventGraphs  # noqa: E402


def main() -> int:
    """Run the benchmark from the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", default=str(ROOT / "data_samples" / "events_ttbar_wjets_higgs.root"),
                   help="ROOT file of events in the layout of "
                   "workflows/event_classification.yaml (default: %(default)s)")
    p.add_argument("--tree", default="tree", help="tree of --file (default: %(default)s)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timings of each step; the best is kept (default: %(default)s)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch CPU threads (default: the number of cores, %(default)s)")
    p.add_argument("--steps", type=int, default=20,
                   help="timed training steps per layer (default: %(default)s)")
    p.add_argument("--layers", nargs="+", default=["gcn", "gat", "edgeconv", "interaction"],
                   help="message-passing layers of EventGNN timed in (c) "
                   "(default: %(default)s)")
    p.add_argument("--json", help="also write the results here (rows of run_all.py)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.2f}")

    spec = yaml.safe_load((ROOT / "workflows" / "event_classification.yaml").read_text())
    rep = {k: v for k, v in spec["representation"].items() if k != "kind"}
    graphs = {"full": EventGraphs(rep), "knn": EventGraphs({**rep, "edges": "knn", "k": 8})}
    fields = graphs["full"].required_fields
    source = Source([args.file], args.tree, fields)
    n = source.num_entries

    def read():
        return [source.read(c) for c in source.chunks]

    t_read = best(read, args.repeat)
    chunks = read()
    print(f"\n{n} events from {args.file}")
    print(f"{'step':<28}{'events/s':>12}{'time / read':>14}")
    print(f"{'read (baseline)':<28}{n / t_read:>12.0f}{1.0:>14.2f}")
    size, base = f"{n:,} events", "read the same branches (hepml.io.Source)"
    rows = []
    built = {}
    for name, g in graphs.items():
        t = best(lambda g=g: [g(c) for c in chunks], args.repeat)
        built[name] = [g(c) for c in chunks]
        print(f"{'build, ' + name + ' edges':<28}{n / t:>12.0f}{t / t_read:>14.2f}")
        rows.append(row("event_graphs", f"build event graphs, {name} edges", size, "events/s",
                        n / t, base, n / t_read))
    t = best(lambda: [graphs["full"].to_pyg(c) for c in chunks], args.repeat)
    print(f"{'build + to_pyg, full':<28}{n / t:>12.0f}{t / t_read:>14.2f}")
    rows.append(row("event_graphs", "event graphs to PyG Batch (to_pyg), full", size,
                    "events/s", n / t, base, n / t_read))

    out = built["full"][0]
    x, nb, ea, mask = out["x"], out["neighbors"], out["edge_attr"], out["mask"]
    y = torch.randint(0, 3, (len(x),), generator=torch.Generator().manual_seed(0))
    print(f"\nEventGNN, full graphs, {x.shape[1]} node slots, "
          f"{mask.sum(1).float().mean():.2f} objects per event on average")
    print(f"{'layer':<14}{'parameters':>12}{'train ev/s':>14}{'infer ev/s':>14}")
    bs = 128
    for layer in args.layers:
        torch.manual_seed(0)
        model = build_model("gnn", input_dims=x.shape[-1], edge_dims=ea.shape[-1], num_classes=3,
                            layer=layer)
        opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
        n_batches = len(x) // bs

        def train_steps(k: int, model=model, opt=opt, n_batches=n_batches) -> None:
            model.train()
            for i in range(k):
                s = slice((i % n_batches) * bs, (i % n_batches + 1) * bs)
                loss = torch.nn.functional.cross_entropy(model(x[s], nb[s], ea[s], mask[s]), y[s])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()

        train_steps(3)
        t_train = best(lambda train_steps=train_steps: train_steps(args.steps), args.repeat)

        def infer(model=model) -> None:
            model.eval()
            with torch.no_grad():
                for i in range(0, len(x), 1024):
                    model(x[i:i + 1024], nb[i:i + 1024], ea[i:i + 1024], mask[i:i + 1024])

        t_inf = best(infer, args.repeat)
        params = sum(p.numel() for p in model.parameters())
        print(f"{layer:<14}{params:>12,}{args.steps * bs / t_train:>14.0f}{len(x) / t_inf:>14.0f}")
        rows.append(row("event_graphs", f"EventGNN {layer}: training step (batch {bs})",
                        f"{args.steps * bs:,} events", "events/s", args.steps * bs / t_train,
                        note=f"{params:,} parameters, {args.threads} thread(s)"))
        rows.append(row("event_graphs", f"EventGNN {layer}: inference (batch 1024)",
                        f"{len(x):,} events", "events/s", len(x) / t_inf))
    print(f"\nload average at the end {os.getloadavg()[0]:.2f}")
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
