"""``hepml convert``: bring data that users have in other formats into hepml's ROOT layout.

``hepml convert trackml PREFIX... --out FILE.root`` reads TrackML events (CSV files) and
writes them as the ``hits`` tree, one entry per event, with the jagged ``hit_*`` and
``particle_*`` branches (counters ``nhit`` and ``nparticle``) that the tracking job reads.

``hepml convert calogan FILE.h5... --particle NAME --out FILE.root`` and ``hepml convert
calochallenge FILE.h5... --particle NAME [--layers 1x8,10x16,...] --out FILE.root`` read
calorimeter showers from CaloGAN's or the Fast Calorimeter Simulation Challenge 2022's
HDF5 files and write them, the files one after the other, as the ``showers`` tree of
:mod:`hepml.io.calo` (energy in GeV, cells and overflow in MeV, the particle's PDG id),
with the source files, their format and the particle in the file's metadata. ``hepml
convert showers FILE.root --to calogan|calochallenge --out FILE.h5`` goes the other way.
Showers are read and written in chunks, so files larger than memory can be converted.
"""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add_parser"]


def add_parser(subparsers: Any) -> argparse.ArgumentParser:
    """Register ``convert`` and its sub-subcommands on ``subparsers``."""
    parser = subparsers.add_parser(
        "convert",
        help="convert other formats (TrackML CSV, calorimeter showers in HDF5) to hepml "
        "ROOT files",
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

    for fmt, title, text in (
        ("calogan", "CaloGAN HDF5 showers (energy, layer_0..layer_2, overflow)",
         "Read CaloGAN HDF5 shower files (energy in GeV; layer_0 3x96, layer_1 12x12, "
         "layer_2 12x6 cells and overflow in MeV) and write them to a ROOT TTree in "
         "hepml's shower layout, the files one after the other. CaloGAN files do not "
         "record the particle: give it with --particle."),
        ("calochallenge", "Fast Calorimeter Simulation Challenge 2022 HDF5 showers",
         "Read HDF5 shower files of the Fast Calorimeter Simulation Challenge 2022 "
         "(incident_energies and showers, in MeV) and write them to a ROOT TTree in "
         "hepml's shower layout, the files one after the other. The voxels are split into "
         "layers by the challenge's binning, known for its datasets (368 and 533 voxels: "
         "dataset 1; 6480: dataset 2; 40500: dataset 3); for other files give --layers."),
    ):
        p = kinds.add_parser(fmt, help=title, description=text)
        p.add_argument("files", nargs="+", metavar="FILE.h5", help="input HDF5 file(s)")
        p.add_argument("--particle", required=True, metavar="NAME",
                       help="the incident particle: a name (eplus, eminus, gamma, piplus, "
                       "piminus, unknown) or a PDG id")
        p.add_argument("--out", required=True, metavar="FILE.root", help="output ROOT file")
        p.add_argument("--tree", default="showers", help="name of the tree (default: "
                       "%(default)s)")
        if fmt == "calogan":
            p.add_argument("--any-layout", action="store_true",
                           help="accept layers other than CaloGAN's three (every layer_N "
                           "as it is)")
        else:
            p.add_argument("--layers", metavar="RxC,...",
                           help="rows x columns of each layer, front first, e.g. "
                           "'1x8,10x16,10x19,1x5,1x5' ('45*16x9' repeats a shape)")
        p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                       help="showers read at a time (default: about 16 million cells)")
        p.set_defaults(func=_run_to_root, source_format=fmt)

    p = kinds.add_parser(
        "showers",
        help="hepml ROOT showers to CaloGAN or challenge HDF5",
        description=(
            "Write showers (hepml's ROOT layout, or any shower file hepml reads) to an HDF5 "
            "file in CaloGAN's layout (energy in GeV; layer_N and overflow in MeV) or the "
            "Fast Calorimeter Simulation Challenge 2022's (incident_energies and showers in "
            "MeV, voxels layer after layer), for the tools that read those. Neither layout "
            "stores the particle; the challenge layout has no overflow either."
        ),
    )
    p.add_argument("files", nargs="+", metavar="FILE.root",
                   help="input shower file(s), written one after the other")
    p.add_argument("--to", required=True, choices=("calogan", "calochallenge"),
                   help="the HDF5 layout to write")
    p.add_argument("--out", required=True, metavar="FILE.h5", help="output HDF5 file")
    p.add_argument("--tree", default="showers", help="tree of ROOT inputs (default: "
                   "%(default)s)")
    p.add_argument("--chunk-size", type=int, default=None, metavar="N",
                   help="showers read at a time (default: about 16 million cells)")
    p.set_defaults(func=_run_to_hdf5)
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


_FORMAT_NAMES = {"root": "hepml ROOT", "calogan": "CaloGAN HDF5",
                 "calochallenge": "calorimeter challenge HDF5"}


def _inspect_all(files: list[str], fmt: str | None, **options: Any) -> list[Any]:
    """Check every input before reading any: each in ``fmt`` (if given), all alike in layers."""
    from hepml.errors import BadValueError, InputFileError
    from hepml.io.calo import inspect_showers, shower_format

    for path in files:
        found = shower_format(path)
        if fmt is not None and found != fmt:
            hint = f"; convert it with 'hepml convert {found}'" \
                if found != "root" else "; it needs no conversion"
            raise InputFileError(f"{path}: a {_FORMAT_NAMES[found]} file, not "
                                 f"{_FORMAT_NAMES[fmt]}{hint}")
    infos = [inspect_showers(path, **options) for path in files]
    for info in infos:
        if info.layer_shapes != infos[0].layer_shapes:
            raise BadValueError(
                f"{info.path}: layers of {_shapes(info.layer_shapes)} cells, but "
                f"{infos[0].path} has {_shapes(infos[0].layer_shapes)}; files written into "
                "one output must have the same layers"
            )
    return infos


def _shapes(shapes: Any) -> str:
    return ",".join(f"{r}x{c}" for r, c in shapes)


def _particle_name(pid: int) -> str:
    from hepml.io.calo import PARTICLES

    return next((name for name, value in PARTICLES.items() if value == pid), str(pid))


def _run_to_root(args: argparse.Namespace) -> int:
    import itertools

    from hepml import __version__
    from hepml.io.calo import (
        CALOGAN,
        iter_showers,
        parse_layer_shapes,
        parse_particle,
        write_showers,
    )

    fmt = args.source_format
    pid = parse_particle(args.particle)
    options: dict[str, Any] = {}
    if fmt == "calogan":
        options["layout"] = None if args.any_layout else CALOGAN
    elif args.layers:
        options["layer_shapes"] = parse_layer_shapes(args.layers)
    infos = _inspect_all(args.files, fmt, **options)
    n = sum(info.n_showers for info in infos)
    parts = itertools.chain.from_iterable(
        iter_showers(path, chunk_size=args.chunk_size, particle=pid, **options)
        for path in args.files)
    metadata = {"source": _FORMAT_NAMES[fmt], "source_format": fmt,
                "source_files": list(args.files), "particle": _particle_name(pid),
                "particle_pdgid": pid, "hepml_version": __version__}
    path = write_showers(args.out, parts, metadata=metadata, tree=args.tree)
    files = f"{len(infos)} {_FORMAT_NAMES[fmt]} file" + ("s" if len(infos) > 1 else "")
    print(f"wrote {n} {_particle_name(pid)} showers (layers {_shapes(infos[0].layer_shapes)}) "
          f"from {files} to {path}:{args.tree}")
    return 0


def _run_to_hdf5(args: argparse.Namespace) -> int:
    import itertools

    from hepml.io.calo import (
        CHALLENGE_LAYERS,
        iter_showers,
        write_calochallenge_hdf5,
        write_calogan_hdf5,
    )

    infos = _inspect_all(args.files, None, tree=args.tree)
    n = sum(info.n_showers for info in infos)
    shapes = infos[0].layer_shapes
    parts = itertools.chain.from_iterable(
        iter_showers(path, chunk_size=args.chunk_size, tree=args.tree) for path in args.files)
    write = write_calogan_hdf5 if args.to == "calogan" else write_calochallenge_hdf5
    path = write(args.out, parts)
    note = ""
    if args.to == "calochallenge" and CHALLENGE_LAYERS.get(
            sum(r * c for r, c in shapes)) != tuple(shapes):
        note = ("; not the binning of a challenge dataset: the layer shapes are kept in "
                "the file's layer_shapes attribute")
    print(f"wrote {n} showers (layers {_shapes(shapes)}) to {path} "
          f"({_FORMAT_NAMES[args.to]} layout){note}")
    return 0
