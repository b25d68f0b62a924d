"""Making input data: Pythia 8 events clustered with FastJet into jets, written as ROOT files.

Only :mod:`hepml.tasks` and :mod:`hepml.cli` import this package; it writes files through
:mod:`hepml.io` and returns where they went.
"""

from __future__ import annotations

from hepml.simulation.jets import (
    LABELS,
    PROCESSES,
    JetGenerationConfig,
    generate_jet_arrays,
    generate_jets,
    generate_mixture,
)

__all__ = [
    "LABELS",
    "PROCESSES",
    "JetGenerationConfig",
    "generate_jet_arrays",
    "generate_jets",
    "generate_mixture",
]
