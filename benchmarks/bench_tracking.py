"""Tracking: events/s of the tracker simulation, hit-graph building and both trackers' inference.

Usage::

    python benchmarks/bench_tracking.py --file data_samples/tracker_hits_ttbar_pu10.root \
        --threads 2 --repeat 3 [--gnn-run RUN_DIR] [--lstm-run RUN_DIR] [--generate 20]

(a) Reading the hit branches of every event with ``hepml.io.Source`` -- the baseline of
    (b)-(d), measured in the same run;
(b) hit-graph building (windowed pair search with sorted keys and ``searchsorted``), and
    the same candidate edges found by an all-pairs search per event and layer pair (dense
    numpy) -- the baseline the windowed search replaces;
(c) GNN tracker inference: graphs + interaction network + walkthrough (weights from
    ``--gnn-run`` or, without it, untrained weights of the workflow's model: the cost is
    the same);
(d) LSTM tracker inference: triplet seeds + track following (weights from ``--lstm-run``
    or untrained, which follows fewer hits and so is a lower bound of the cost);
(e) with ``--generate N``: ``hepml generate hits`` for N ttbar events at the file's
    pile-up, against Pythia's event generation alone for the same events.

Best of ``--repeat`` runs. ``--json`` writes the rows of ``run_all.py`` (each step with
its baseline: (b) against (a) and against the all-pairs search, (c) against (d), (e)
against Pythia alone).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np
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
from hepml.io import read_metadata  # noqa: E402
from hepml.models import build_model  # noqa: E402
from hepml.models import model_spec as size_model  # noqa: E402
from hepml.representations.hits import HitArrays, layer_pair_edges  # noqa: E402
from hepml.tasks.tracking import task  # noqa: E402
from hepml.training import load_checkpoint  # noqa: E402


def all_pairs(hits: HitArrays, pairs, phi_slope_max: float, z0_max: float) -> int:
    """Candidate edges by testing every pair of hits on two layers of one event."""
    n = 0
    for ev in range(hits.n_events):
        sel = hits.event == ev
        for a, b in pairs:
            ia = np.flatnonzero(sel & (hits.layer == a))
            ib = np.flatnonzero(sel & (hits.layer == b))
            dr = hits.r[ib][None, :] - hits.r[ia][:, None]
            dz = hits.z[ib][None, :] - hits.z[ia][:, None]
            dphi = (hits.phi[ib][None, :] - hits.phi[ia][:, None] + np.pi) % (2 * np.pi) - np.pi
            with np.errstate(divide="ignore", invalid="ignore"):
                ok = (dr > 0) & (np.abs(dphi) < phi_slope_max * dr) & (
                    np.abs(hits.z[ia][:, None] - hits.r[ia][:, None] * dz / dr) < z0_max)
            n += int(ok.sum())
    return n


def model_of(workflow: Path, run_dir: str | None, representation) -> tuple[torch.nn.Module, str]:
    """The trained model of ``run_dir`` or else an untrained one of ``workflow``, with a label."""
    if run_dir:
        state = load_checkpoint(Path(run_dir) / "checkpoint_best.pt")
        spec = state["model"]
        model = build_model(spec["kind"], **spec["kwargs"])
        model.load_state_dict(state["model_state"])
        return model.eval(), f"trained ({run_dir})"
    cfg = yaml.safe_load(workflow.read_text())
    kind = cfg["representation"]["kind"]
    spec = size_model(task._model_kind(cfg["model"], kind), cfg["model"],
                      representation.output_shape)
    return build_model(spec["kind"], **spec["kwargs"]).eval(), "untrained"


def main() -> int:
    """Run the benchmark from the command line."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--file", default=str(ROOT / "data_samples" / "tracker_hits_ttbar_pu10.root"),
                   help="ROOT file of tracker hits (default: %(default)s)")
    p.add_argument("--tree", default="hits", help="tree of --file (default: %(default)s)")
    p.add_argument("--max-events", type=int, default=None,
                   help="read at most this many events of --file (default: all)")
    p.add_argument("--repeat", type=int, default=3,
                   help="timings of each step; the best is kept (default: %(default)s)")
    p.add_argument("--threads", type=int, default=os.cpu_count(),
                   help="torch CPU threads (default: the number of cores, %(default)s)")
    p.add_argument("--gnn-run", help="run directory of workflows/tracking_gnn.yaml "
                   "(default: untrained weights, the same cost)")
    p.add_argument("--lstm-run", help="run directory of workflows/tracking_lstm.yaml "
                   "(default: untrained weights)")
    p.add_argument("--generate", type=int, default=0, metavar="N",
                   help="also time the simulation of N events (default: %(default)s, none)")
    p.add_argument("--json", help="write the results here (rows of run_all.py)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {args.threads} threads, load average "
          f"{os.getloadavg()[0]:.2f}")
    fields = ["hit_x", "hit_y", "hit_z", "hit_layer", "hit_particle_id", *task.PARTICLE_TRUTH]
    rows: list[dict] = []

    def read():
        src = Source([args.file], args.tree, fields, step_size=10**6, max_entries=args.max_events)
        return src.read(src.chunks[0])

    t_read = best(read, args.repeat)
    events = read()
    n_ev = len(events)
    hits = HitArrays.from_awkward(events)
    print(f"{args.file}: {n_ev} events, {len(hits) / n_ev:.0f} hits/event")
    size, base = f"{n_ev:,} events ({len(hits) / n_ev:,.0f} hits/event)", "read (hepml.io.Source)"
    print(f"(a) read (baseline):          {n_ev / t_read:9.1f} events/s")

    gnn_wf, lstm_wf = (ROOT / "workflows" / "tracking_gnn.yaml",
                       ROOT / "workflows" / "tracking_lstm.yaml")
    rep_g = task.build_representation(yaml.safe_load(gnn_wf.read_text())["representation"])
    c = rep_g.config
    t_graph = best(lambda: rep_g(events), args.repeat)
    n_edges = int(rep_g(events)["n_edges"].sum())
    sub = max(1, min(n_ev, 3))
    hits_sub = HitArrays.from_awkward(events[:sub])
    t_windows = best(lambda: layer_pair_edges(hits_sub, c.pairs, phi_slope_max=c.phi_slope_max,
                                              z0_max=c.z0_max), args.repeat)
    t_dense = best(lambda: all_pairs(hits_sub, c.pairs, c.phi_slope_max, c.z0_max), 1)
    n_win = len(layer_pair_edges(hits_sub, c.pairs, phi_slope_max=c.phi_slope_max,
                                 z0_max=c.z0_max)[0])
    n_dense = all_pairs(hits_sub, c.pairs, c.phi_slope_max, c.z0_max)
    assert n_win == n_dense, (n_win, n_dense)
    rows.append(row("tracking", "hit graphs", size, "events/s", n_ev / t_graph, base,
                    n_ev / t_read, note=f"{n_edges / n_ev:,.0f} candidate edges per event"))
    rows.append(row("tracking", "candidate pair search, windowed", f"{sub} events", "events/s",
                    sub / t_windows, "all pairs per layer pair (numpy)", sub / t_dense,
                    note=f"same {n_win:,} edges"))
    print(f"(b) hit graphs:               {n_ev / t_graph:9.1f} events/s "
          f"({n_edges / n_ev:.0f} edges/event; {t_graph / t_read:.2f}x the read time)")
    print(f"    pair search, windowed vs all pairs ({sub} events, same {n_win} edges): "
          f"{t_dense / t_windows:.0f}x faster")

    tcfg = task.TrackingConfig()
    dev = torch.device("cpu")
    gnn, how = model_of(gnn_wf, args.gnn_run, rep_g)
    t_gnn = best(lambda: task.find_tracks(gnn, rep_g, "hit_graph", events, tcfg, dev), args.repeat)
    print(f"(c) GNN tracker, {how}: {n_ev / t_gnn:9.2f} events/s")
    gnn_how = how

    rep_l = task.build_representation(yaml.safe_load(lstm_wf.read_text())["representation"])
    lstm, how = model_of(lstm_wf, args.lstm_run, rep_l)
    t_lstm = best(lambda: task.find_tracks(lstm, rep_l, "track_sequence", events, tcfg, dev),
                  args.repeat)
    rows.append(row("tracking", "GNN tracker (graphs, network, walkthrough)", size,
                    "events/s", n_ev / t_gnn, "LSTM tracker (seeds, following)", n_ev / t_lstm,
                    note=f"GNN {gnn_how}, LSTM {how}; {args.threads} thread(s)"))
    print(f"(d) LSTM tracker, {how}: {n_ev / t_lstm:9.2f} events/s "
          f"(GNN/LSTM time ratio {t_gnn / t_lstm:.2f})")

    if args.generate:
        from hepml.simulation import HitSimulationConfig, generate_hit_arrays
        from hepml.simulation._pythia import make_pythia

        meta = read_metadata(args.file)
        mu = float(meta.get("pileup", 0.0))
        cfg = HitSimulationConfig(pileup=mu, seed=5)

        def pythia_only():
            pythia, _ = make_pythia(cfg, 5001)
            mb, _ = make_pythia(cfg.pileup_config(), 5002)
            n_mb = np.random.default_rng(5).poisson(mu, args.generate).sum()
            pythia.nextBatch(args.generate)
            if n_mb:
                mb.nextBatch(int(n_mb))

        t_py = best(pythia_only, 1)
        t_sim = best(lambda: generate_hit_arrays(cfg, args.generate), 1)
        rows.append(row("tracking", f"generate hits (ttbar, mu = {mu:g})",
                        f"{args.generate} events", "events/s", args.generate / t_sim,
                        "Pythia event generation alone", args.generate / t_py,
                        note="single runs"))
        print(f"(e) generate hits (mu = {mu:g}): {args.generate / t_sim:9.2f} events/s; "
              f"Pythia alone {args.generate / t_py:.2f} events/s "
              f"(time ratio {t_sim / t_py:.2f}; single runs, so differences of ~10% are noise)")
    write_rows(args.json, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
