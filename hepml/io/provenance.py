"""Versions of the software that made an output.

One function for every record of versions: checkpoints and run directories
(:func:`hepml.training.versions`), generated files' metadata, the ONNX export's JSON and
the run report. Each asks for the packages that shape its output, in the order it shows
them.
"""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from collections.abc import Sequence

__all__ = ["versions", "CORE"]

#: hepml, Python and the packages every hepml result depends on.
CORE = ("hepml", "python", "torch", "numpy", "awkward", "uproot")


@functools.cache
def _version(name: str) -> str | None:
    if name == "python":
        return platform.python_version()
    if name == "hepml":  # this code's version, also when run from a checkout
        from hepml import __version__

        return __version__
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def versions(packages: Sequence[str] = CORE, *, missing: str = "not installed"
             ) -> dict[str, str]:
    """``{package: version}`` for ``packages`` (``"python"`` and ``"hepml"`` included).

    Args:
        packages: Distribution names, in the order of the result.
        missing: The value of a package that is not installed.

    Example:
        >>> list(versions(("python", "numpy")))
        ['python', 'numpy']
    """
    out = {}
    for name in packages:
        version = _version(name)
        out[name] = missing if version is None else version
    return out
