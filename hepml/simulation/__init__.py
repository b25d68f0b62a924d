"""Making input data from Pythia 8 events, written as ROOT files.

* :mod:`hepml.simulation.jets`: boosted jets clustered with FastJet, one entry per jet
  (JetClass layout);
* :mod:`hepml.simulation.events`: whole events reduced to reconstructed objects (jets
  with b-tags, isolated electrons, muons and photons, missing transverse momentum), one
  entry per event;
* :mod:`hepml.simulation.tracker`: hits of charged particles in a barrel silicon tracker
  (TrackML layout) with pile-up, one entry per event;
* :mod:`hepml.simulation.showers`: single-particle showers in CaloGAN's layered
  calorimeter from the GFlash parametrisation (and a hadronic model for pions), one entry
  per shower;
* :mod:`hepml.simulation.dqm`: a monitoring run of lumisections, each holding detector
  histograms (calorimeter occupancy, tracker hit occupancy per layer) accumulated from
  minimum-bias collisions with pile-up, with labelled faults injected; one entry per
  lumisection.

Only :mod:`hepml.tasks` and :mod:`hepml.cli` import this package; it writes files through
:mod:`hepml.io` and returns where they went.
"""

from __future__ import annotations

from hepml.simulation.dqm import (
    FAULTS,
    CollisionPool,
    DetectorCondition,
    DQMConfig,
    FaultEpisode,
    accumulate_lumisection,
    generate_dqm,
    generate_dqm_arrays,
    make_pool,
    simulate_run,
    toy_pool,
)
from hepml.simulation.events import (
    EventGenerationConfig,
    generate_event_arrays,
    generate_event_mixture,
    generate_events,
)
from hepml.simulation.jets import (
    LABELS,
    PROCESSES,
    JetGenerationConfig,
    generate_jet_arrays,
    generate_jets,
    generate_mixture,
)
from hepml.simulation.showers import (
    PB_LAR,
    Material,
    ShowerSimulationConfig,
    as_homogeneous,
    shower_material,
    simulate_showers,
    simulate_spots,
)
from hepml.simulation.tracker import (
    HitSimulationConfig,
    Layer,
    TrackerGeometry,
    generate_hit_arrays,
    generate_hits,
    highland_theta0,
    propagate,
)

__all__ = [
    "PB_LAR",
    "Material",
    "ShowerSimulationConfig",
    "as_homogeneous",
    "shower_material",
    "simulate_showers",
    "simulate_spots",
    "FAULTS",
    "CollisionPool",
    "DQMConfig",
    "DetectorCondition",
    "FaultEpisode",
    "accumulate_lumisection",
    "generate_dqm",
    "generate_dqm_arrays",
    "make_pool",
    "simulate_run",
    "toy_pool",
    "LABELS",
    "PROCESSES",
    "EventGenerationConfig",
    "HitSimulationConfig",
    "JetGenerationConfig",
    "Layer",
    "TrackerGeometry",
    "generate_event_arrays",
    "generate_event_mixture",
    "generate_events",
    "generate_hit_arrays",
    "generate_hits",
    "generate_jet_arrays",
    "generate_jets",
    "generate_mixture",
    "highland_theta0",
    "propagate",
]
