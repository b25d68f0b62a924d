"""Representations: awkward arrays of a chunk -> model inputs (tensors).

Each representation is a pure transform with a ``__repr__``, the ``required_fields`` it
reads, and ``to_dict`` / ``from_dict`` for recording how inputs were made. Built for a
whole chunk at once, without Python loops over jets or particles.

- :mod:`hepml.representations.jet_images`: jet images ``[N, C, n_eta, n_phi]``.
"""

from hepml.representations.jet_images import (
    CENTERS,
    CHANNELS,
    JetImageConfig,
    JetImages,
    make_jet_images,
)

__all__ = ["CENTERS", "CHANNELS", "JetImageConfig", "JetImages", "make_jet_images"]
