"""FastJet import shared by the layers that cluster (simulation, representations).

FastJet prints a start-up banner to stdout on first use; library code must not print, so
the banner is switched off once and the citation is logged at debug level instead.
"""

from __future__ import annotations

import logging
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["fastjet"]

_ready = False


def fastjet() -> Any:
    """Return the ``fastjet`` module, banner off and vector's awkward behaviours registered."""
    global _ready
    import fastjet as fj
    import vector

    if not _ready:
        _ready = True
        vector.register_awkward()
        try:
            from fastjet import _swig

            _swig.ClusterSequence.set_fastjet_banner_stream(None)
        except (ImportError, AttributeError, TypeError):  # pragma: no cover - other builds
            pass
        log.debug("FastJet: M. Cacciari, G.P. Salam, G. Soyez, EPJC 72 (2012) 1896 "
                  "[arXiv:1111.6097]; anti-kt: JHEP 04 (2008) 063")
    return fj
