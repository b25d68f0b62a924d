"""Every representation by name: ``representation.kind`` of a workflow -> its transform.

Workflows, checkpoints and exported models record a representation as a plain mapping
(``{"kind": "jet_image", "npix": 40, ...}``, what ``to_dict`` gives plus the kind);
:func:`build_representation` turns it back into the transform. Each task accepts only the
kinds it can train on.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from hepml.errors import UnknownKeyError
from hepml.representations.event_graphs import EventGraphConfig, EventGraphs
from hepml.representations.features import FeatureConfig, Features
from hepml.representations.hit_graphs import HitGraphConfig, HitGraphs
from hepml.representations.jet_images import JetImageConfig, JetImages
from hepml.representations.lumisections import LumisectionMapConfig, LumisectionMaps
from hepml.representations.particle_clouds import ParticleCloudConfig, ParticleClouds
from hepml.representations.track_sequences import TrackSequenceConfig, TrackSequences

__all__ = ["REPRESENTATIONS", "build_representation"]

#: kind -> (configuration class, transform class)
REPRESENTATIONS: dict[str, tuple[Any, Any]] = {
    "jet_image": (JetImageConfig, JetImages),
    "particle_cloud": (ParticleCloudConfig, ParticleClouds),
    "event_graph": (EventGraphConfig, EventGraphs),
    "features": (FeatureConfig, Features),
    "hit_graph": (HitGraphConfig, HitGraphs),
    "track_sequence": (TrackSequenceConfig, TrackSequences),
    "lumisection_maps": (LumisectionMapConfig, LumisectionMaps),
}


def build_representation(spec: Mapping[str, Any], *, default: str | None = None,
                         kinds: Collection[str] | None = None) -> Any:
    """The transform described by ``spec`` (``kind`` plus its plain options).

    Args:
        spec: A workflow's ``representation`` section, or one recorded in a checkpoint.
        default: The kind when ``spec`` names none.
        kinds: The kinds accepted (default: all); another kind is refused with the
            closest accepted one suggested.

    Raises:
        UnknownKeyError: The kind is missing or not accepted.
    """
    spec = dict(spec)
    kind = spec.pop("kind", default)
    accepted = list(kinds) if kinds is not None else list(REPRESENTATIONS)
    if kind not in accepted:
        raise UnknownKeyError(str(kind), accepted, where="representation.kind")
    config_cls, transform_cls = REPRESENTATIONS[kind]
    return transform_cls(config_cls.from_dict(spec))
