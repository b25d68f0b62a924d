"""Representations: awkward arrays of a chunk -> model inputs (tensors).

Each representation is a pure transform with a ``__repr__``, the ``required_fields`` it
reads, and ``to_dict`` / ``from_dict`` for recording how inputs were made. Built for a
whole chunk at once, without Python loops over jets or particles.

- :mod:`hepml.representations.jet_images`: jet images ``[N, C, n_eta, n_phi]``.
- :mod:`hepml.representations.particle_clouds`: padded particle clouds (ParticleNet
  inputs) ``points [N, D, P]``, ``features [N, F, P]``, ``mask [N, 1, P]``.
- :mod:`hepml.representations.event_graphs`: padded graphs of an event's reconstructed
  objects (and MET) ``x [B, N, F]``, ``neighbors [B, N, K]``, ``edge_attr [B, N, K, E]``,
  ``mask [B, N]``, and :func:`padded_to_sparse` to PyG's flat layout.
- :mod:`hepml.representations.hit_graphs`: padded graphs of an event's tracker hits with
  candidate edges between nearby layers ``x [N, H, 3]``, ``edges [N, E, 2]``,
  ``edge_attr [N, E, 6]``, ``y [N, E]``, and :func:`~hepml.representations.hit_graphs.unpad`
  to flat edge lists.
- :mod:`hepml.representations.knn`: kNN neighbours and PyG edges with torch alone.
- :mod:`hepml.representations.features`: per-entry feature vectors ``[N, F]`` (fields,
  or element ``i`` of a jagged field), for dense autoencoders.
- :mod:`hepml.representations.lumisections`: a lumisection's detector histograms divided
  by its crossings and stacked into one map ``[N, 1, H, n_phi]`` (columns: φ wedges).
- :mod:`hepml.representations.track_sequences`: next-hit examples of truth tracks for an
  LSTM tracker ``x [M, T, 4]``, ``lengths [M]``, ``target [M, 2]``.
"""

from hepml.representations.event_graphs import (
    EVENT_EDGE_FEATURES,
    EVENT_NODE_FEATURES,
    EventGraphConfig,
    EventGraphs,
    make_event_graphs,
    padded_to_sparse,
)
from hepml.representations.features import FeatureConfig, Features
from hepml.representations.hit_graphs import (
    HIT_EDGE_FEATURES,
    HIT_NODE_FEATURES,
    HitGraphConfig,
    HitGraphs,
    make_hit_graphs,
)
from hepml.representations.jet_images import (
    CENTERS,
    CHANNELS,
    JetImageConfig,
    JetImages,
    make_jet_images,
)
from hepml.representations.knn import KNN, knn_graph_edges, knn_indices
from hepml.representations.lumisections import LumisectionMapConfig, LumisectionMaps
from hepml.representations.particle_clouds import (
    FEATURES,
    ParticleCloudConfig,
    ParticleClouds,
    make_particle_clouds,
    to_pyg,
)
from hepml.representations.registry import REPRESENTATIONS, build_representation
from hepml.representations.track_sequences import TrackSequenceConfig, TrackSequences

__all__ = ["EVENT_EDGE_FEATURES", "EVENT_NODE_FEATURES", "EventGraphConfig", "EventGraphs",
           "make_event_graphs", "padded_to_sparse",
           "HIT_EDGE_FEATURES", "HIT_NODE_FEATURES", "HitGraphConfig", "HitGraphs",
           "make_hit_graphs",
           "CENTERS", "CHANNELS", "JetImageConfig", "JetImages", "make_jet_images",
           "FEATURES", "KNN", "ParticleCloudConfig", "ParticleClouds", "knn_graph_edges",
           "knn_indices", "make_particle_clouds", "to_pyg"]
__all__ += ["TrackSequenceConfig", "TrackSequences", "FeatureConfig", "Features",
            "LumisectionMapConfig", "LumisectionMaps", "REPRESENTATIONS", "build_representation"]
