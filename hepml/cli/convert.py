"""``hepml convert``: bring data that users have in other formats into hepml's ROOT layout.

``hepml convert trackml PREFIX... --out FILE.root`` reads TrackML events (CSV files) and
writes them as the ``hits`` tree, one entry per event, with the jagged ``hit_*`` and
``particle_*`` branches (counters ``nhit`` and ``nparticle``) that the tracking job reads.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``convert`` and its sub-subcommands on ``subparsers``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert other formats (TrackML CSV) to hepml ROOT files",
        description="Convert data in other formats into the ROOT layout hepml reads.",
    )
    kinds = parser.add_subparsers(dest="what", metavar="FORMAT", required=True)
    p = kinds.add_parser(
        "trackml",
        help="TrackML events (PREFIX-hits.csv, -truth.csv, -particles.csv)",
        description=(
            "Read TrackML events, each given by its prefix (e.g. train_1/event000001000) or "
            "any of its file names (globs allowed: train_1/event00000100* is ten events), "
            "and write one entry per event to a ROOT TTree: hit_* branches (position, "
            "volume/layer/module ids, barrel layer 0-9 or -1, particle id, true momentum, "
            "TrackML weight) with the counter nhit, particle_* branches with the counter "
            "nparticle, and event_number. By default only the hits of the ten barrel "
            "layers are kept and particle_nhits counts those."
        ),
    )
    p.add_argument("prefixes", nargs="+", metavar="PREFIX",
                   help="event prefix or file name; several events are written in order")
    p.add_argument("--out", required=True, metavar="FILE.root", help="output ROOT file")
    p.add_argument("--tree", default="hits", help="name of the tree (default: %(default)s)")
    p.add_argument("--all-volumes", action="store_true",
                   help="keep the end-cap hits too (hit_layer -1); particle_nhits then "
                   "comes from the particles file")
    p.add_argument("--cells", action="store_true",
                   help="also read PREFIX-cells.csv into hit_ncells and hit_charge")
    p.set_defaults(func=_run_trackml)
    return parser


def _run_trackml(args: argparse.Namespace) -> int:
    import awkward as ak

    from hepml import __version__
    from hepml.io import write_tree
    from hepml.io.trackml import read_trackml, trackml_prefixes

    prefixes = trackml_prefixes(args.prefixes)
    events = read_trackml(prefixes, barrel_only=not args.all_volumes, cells=args.cells)
    branches = {name: events[name] for name in events.fields}
    branches["event_number"] = ak.to_numpy(events["event_number"])
    metadata = {"source": "TrackML CSV", "events": prefixes,
                "barrel_only": not args.all_volumes, "cells": bool(args.cells),
                "hepml_version": __version__}
    path = write_tree(args.out, branches, tree=args.tree, metadata=metadata)
    n_hits = int(ak.sum(ak.num(events["hit_id"], axis=1)))
    print(f"wrote {len(events)} events ({n_hits} hits) to {path}:{args.tree}")
    return 0
