"""The ``hepml`` command: one module per subcommand, each thin.

Each subcommand module defines ``add_parser(subparsers)``, which registers its parser and
sets ``func`` to a callable taking the parsed arguments and returning an exit code.
Errors derived from :class:`hepml.errors.HepmlError` are printed as one line, without a
traceback, and give exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys

from hepml import __version__
from hepml.errors import DistributedError, HepmlError

__all__ = ["main", "build_parser", "log_format"]

_SUBCOMMANDS = ("run", "validate", "schema", "generate", "convert", "predict", "evaluate",
                "compare", "scan", "dqm", "simulate", "export")


def build_parser() -> argparse.ArgumentParser:
    """Return the top-level argument parser with every subcommand registered."""
    parser = argparse.ArgumentParser(
        prog="hepml",
        description="Machine learning on collider data: generate events, train and "
        "evaluate taggers from ROOT files.",
    )
    parser.add_argument("--version", action="version", version=f"hepml {__version__}")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="more log output (-vv for debug)")
    parser.add_argument("-q", "--quiet", action="store_true",
                        help="warnings and errors only, no progress bars")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in _SUBCOMMANDS:
        importlib.import_module(f"{__name__}.{name}").add_parser(sub)
    return parser


def _stopped_by_torchrun(signum: int, frame: object) -> None:
    """SIGTERM under torchrun: the launcher is stopping the job, usually for a failed rank."""
    raise DistributedError(
        f"rank {os.environ.get('RANK', '?')} of {os.environ.get('WORLD_SIZE', '?')}: stopped "
        "by torchrun (SIGTERM), usually because another rank failed; that rank's log says "
        "why. Resume the whole job from the last checkpoint with --resume RUN_DIR.")


def log_format() -> str:
    """The log line format; under torchrun with several ranks each line says whose it is.

    Every rank logs the same messages, so without ``[rank R/N]`` the lines of different
    ranks cannot be told apart.
    """
    from hepml.training import distributed

    fmt = "%(levelname)s %(name)s: %(message)s"
    world = distributed.world_size()  # torchrun's WORLD_SIZE when launched, else 1
    if world > 1:
        return f"[rank {os.environ.get('RANK', '?')}/{world}] {fmt}"
    return fmt


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``hepml`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING if args.quiet else (logging.DEBUG if args.verbose > 1 else logging.INFO)
    logging.basicConfig(level=level, format=log_format())
    if args.verbose < 2:  # third-party chatter (matplotlib's font fallbacks) only with -vv
        for name in ("matplotlib", "fsspec", "numba", "distributed.utils_perf"):
            logging.getLogger(name).setLevel(max(level, logging.WARNING))
    if args.quiet:
        os.environ.setdefault("TQDM_DISABLE", "1")
    from hepml.training import distributed

    launched = distributed.launched()
    if launched:
        signal.signal(signal.SIGTERM, _stopped_by_torchrun)
    finished = False
    try:
        rc = int(args.func(args) or 0)
        finished = True
        return rc
    except HepmlError as exc:
        print(f"hepml {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"hepml {args.command}: interrupted", file=sys.stderr)
        return 130
    finally:
        if launched:
            # after a job that ended normally the ranks close together (see shutdown)
            distributed.shutdown(wait=finished)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
