"""k-nearest-neighbour graphs built with torch alone.

``torch_geometric.nn.knn_graph`` needs ``torch-cluster``, which cannot be installed here,
so the neighbours are found the way ParticleNet does it: all pairwise distances of a jet
(``torch.cdist``) followed by a selection of the ``k`` smallest per point.

Definitions shared by both functions:

- **Distance**: Euclidean in the ``D`` coordinates. Dimensions listed in
  ``periodic_dims`` (e.g. φ) are compared modulo 2π: their difference is wrapped to
  [-π, π] before squaring. Distances are computed exactly from coordinate differences
  (``cdist`` without its matrix-product shortcut), so equal geometric distances compare
  equal and the choice is reproducible.
- **Ties**: neighbours are ordered by (distance, index): of two points at the same
  distance, the one with the smaller index comes first. The selection is exact: a
  ``topk`` of integer keys that pack (distance, index) and are unique within a row (a
  stable sort for float64), never a ``topk`` of the distances alone, whose order among
  equal values is not specified.
- **Padding**: points whose ``mask`` is False are never chosen as neighbours, and their
  own rows hold no valid neighbour.
- **Self**: a point is not its own neighbour unless ``include_self=True`` (then, at
  distance 0, it comes first, after any duplicate point of smaller index).
- **Too few neighbours**: when a point has fewer than ``k`` candidates (a jet with
  ``n <= k`` valid particles, or ``k >= N``), the missing slots hold the point's own
  index and are flagged False in the returned ``valid`` mask. A consumer that ignores
  the flag gets self-edges there; :class:`hepml.models.ParticleNet` uses the flag to
  leave those slots out of its mean.

The selection itself is not differentiable (indices); gradients flow through whatever
the caller gathers with them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import NamedTuple

import torch

from hepml.errors import BadValueError, ConfigError
from hepml.io.expressions import wrap_phi

__all__ = ["KNN", "knn_indices", "knn_graph_edges"]


class KNN(NamedTuple):
    """Result of :func:`knn_indices`.

    Attributes:
        indices: ``[B, N, k]`` (int64) neighbour indices within each jet, nearest first.
        valid: ``[B, N, k]`` (bool) True where the slot holds a real neighbour; False
            slots hold the centre's own index.
    """

    indices: torch.Tensor
    valid: torch.Tensor


def node_mask(mask: torch.Tensor | None, b: int, n: int, device: torch.device, *,
              against: str) -> torch.Tensor:
    """``mask`` as a bool ``[b, n]`` tensor on ``device`` (all True when ``None``).

    Raises:
        BadValueError: The shape is not ``[b, n]`` (``against`` names the tensor it must
            match).
    """
    if mask is None:
        return torch.ones(b, n, dtype=torch.bool, device=device)
    if mask.shape != (b, n):
        raise BadValueError(f"mask: expected shape {(b, n)} to match {against}, got "
                            f"{tuple(mask.shape)}")
    return mask.to(device=device, dtype=torch.bool)


def _check_k(k: int) -> int:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ConfigError(f"k: the number of neighbours must be a positive integer, got {k!r}")
    return k


def _pairwise(points: torch.Tensor, periodic_dims: Sequence[int]) -> torch.Tensor:
    """``[B, N, N]`` Euclidean distances (wrapped in ``periodic_dims``)."""
    if not periodic_dims:
        return torch.cdist(points, points, compute_mode="donot_use_mm_for_euclid_dist")
    d = points.unsqueeze(2) - points.unsqueeze(1)  # [B, N, N, D]; meant for small D
    dims = list(periodic_dims)
    d[..., dims] = wrap_phi(d[..., dims])
    return d.square().sum(-1)  # monotonic in the distance: same order


def _nearest(dist: torch.Tensor, k: int) -> torch.Tensor:
    """Indices of the ``min(k, N)`` smallest entries of each row, ordered by (value, index).

    ``dist`` holds non-negative distances (``inf`` allowed). On CPU and CUDA, a value of
    at most 32 bits is packed with its index into one int64 key (a non-negative float
    orders as its bit pattern does as an integer), and the keys, unique within a row, go
    through ``topk``, which is faster than a full sort. float64 values, and other
    devices, use a stable sort.
    """
    n = dist.shape[-1]
    k = min(k, n)
    if dist.dtype == torch.float64 or dist.device.type not in ("cpu", "cuda"):
        return torch.sort(dist, dim=-1, stable=True).indices[..., :k]
    keys = dist.float().view(torch.int32).to(torch.int64)
    keys.bitwise_left_shift_(32).bitwise_or_(torch.arange(n, device=dist.device))
    return keys.topk(k, dim=-1, largest=False, sorted=True).indices


def knn_indices(points: torch.Tensor, k: int, mask: torch.Tensor | None = None, *,
                include_self: bool = False, periodic_dims: Sequence[int] = ()) -> KNN:
    """The ``k`` nearest valid neighbours of every point of every jet.

    See the module docstring for the distance, the tie-breaking and what fills the slots
    of points with fewer than ``k`` neighbours.

    Args:
        points: Coordinates, floating point, finite.
        k: Number of neighbours per point (a positive integer; may exceed ``N``).
        mask: True for real points, False for padding (default: all real).
        include_self: Let a point be its own neighbour (at distance 0).
        periodic_dims: Coordinate dimensions compared modulo 2π (e.g. ``(1,)`` for φ in
            (η, φ)).

    Returns:
        :class:`KNN` ``(indices, valid)``.

    Shapes:
        - points: ``[B, N, D]``
        - mask: ``[B, N]`` (bool)
        - indices, valid: ``[B, N, k]``

    Raises:
        ConfigError: ``k`` is not a positive integer.
        BadValueError: ``points`` or ``mask`` have the wrong shape, or ``periodic_dims``
            names a dimension that does not exist.
    """
    k = _check_k(k)
    if points.dim() != 3 or not points.is_floating_point():
        raise BadValueError(f"points: expected a floating-point [B, N, D] tensor, got "
                            f"{points.dtype} of shape {tuple(points.shape)}")
    b, n, dim = points.shape
    if any(not -dim <= p < dim for p in periodic_dims):
        raise BadValueError(f"periodic_dims {tuple(periodic_dims)}: points have only {dim} "
                            "dimensions")
    device = points.device
    mask = node_mask(mask, b, n, device, against="points")
    with torch.no_grad():
        dist = _pairwise(points.detach(), periodic_dims)
        dist.masked_fill_(~mask.unsqueeze(1), math.inf)  # padded candidates (dist is new)
        if not include_self:
            dist.diagonal(dim1=1, dim2=2).fill_(math.inf)
        order = _nearest(dist, k)  # [B, N, min(k, N)], by (distance, index)
        # number of candidates of each point: the valid points, less itself
        n_cand = mask.sum(-1, keepdim=True) - (0 if include_self else 1)  # [B, 1]
        n_cand = torch.where(mask, n_cand, 0).clamp(min=0)  # [B, N]
        slot = torch.arange(k, device=device)
        valid = slot < n_cand.unsqueeze(-1)  # [B, N, k]
        own = torch.arange(n, device=device).view(1, n, 1)
        if order.shape[-1] < k:  # k > N: widen before filling
            order = torch.cat([order, own.expand(b, n, k - order.shape[-1])], dim=-1)
        indices = torch.where(valid, order, own)
    return KNN(indices, valid)


def knn_graph_edges(points: torch.Tensor, k: int, batch: torch.Tensor | None = None, *,
                    include_self: bool = False,
                    periodic_dims: Sequence[int] = ()) -> torch.Tensor:
    """PyG-style kNN graph of a flat batch of point clouds (no ``torch-cluster`` needed).

    Each point gets edges from its ``min(k, n_g - 1)`` nearest points of the same graph
    (``min(k, n_g)`` with ``include_self``); there are no self-edges as fillers. Edges
    are ordered by target (centre) node, then nearest neighbour first, with the
    tie-breaking of :func:`knn_indices`. The graphs are padded to a dense
    ``[G, N_max, D]`` block and handed to :func:`knn_indices`.

    Args:
        points: Node coordinates of all graphs, graph after graph.
        k: Number of neighbours per node.
        batch: Graph index of every node, non-decreasing (PyG's ``batch`` vector);
            ``None`` for a single graph.
        include_self: Add each node as its own neighbour.
        periodic_dims: Dimensions compared modulo 2π.

    Returns:
        ``edge_index`` (int64) with row 0 the source (the neighbour) and row 1 the target
        (the centre), PyG's ``flow="source_to_target"``.

    Shapes:
        - points: ``[N, D]``
        - batch: ``[N]``
        - output: ``[2, E]``

    Raises:
        ConfigError: ``k`` is not a positive integer.
        BadValueError: Shapes do not match, or ``batch`` is not sorted.
    """
    k = _check_k(k)
    if points.dim() != 2:
        raise BadValueError(f"points: expected [N, D], got shape {tuple(points.shape)}")
    n, dim = points.shape
    device = points.device
    if batch is None:
        batch = torch.zeros(n, dtype=torch.long, device=device)
    if batch.shape != (n,):
        raise BadValueError(f"batch: expected shape {(n,)}, got {tuple(batch.shape)}")
    batch = batch.to(device=device, dtype=torch.long)
    if n == 0:
        return torch.zeros(2, 0, dtype=torch.long, device=device)
    if bool((batch[1:] < batch[:-1]).any()) or int(batch[0]) < 0:
        raise BadValueError("batch: graph indices must be non-negative and non-decreasing "
                            "(nodes stored graph after graph, as PyG batches them)")
    counts = torch.bincount(batch)
    n_graphs, n_max = len(counts), int(counts.max())
    ptr = torch.cumsum(counts, 0) - counts  # first node of each graph
    pos = torch.arange(n, device=device) - ptr[batch]  # position within its graph
    dense = points.new_zeros(n_graphs, n_max, dim)
    dense[batch, pos] = points
    mask = torch.zeros(n_graphs, n_max, dtype=torch.bool, device=device)
    mask[batch, pos] = True
    idx, valid = knn_indices(dense, k, mask, include_self=include_self,
                             periodic_dims=periodic_dims)
    idx, valid = idx[batch, pos], valid[batch, pos]  # [N, k], rows of the real nodes
    source = (idx + ptr[batch].unsqueeze(1))[valid]
    target = torch.arange(n, device=device).unsqueeze(1).expand(n, k)[valid]
    return torch.stack([source, target])
