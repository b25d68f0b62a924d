"""Tracks from scored hit-graph edges: connected components or a walk along the best edges.

The last step of the GNN tracker. The input is flat: ``n_hits`` hits of any number of
events (global indices, e.g. from :func:`hepml.representations.hit_graphs.unpad`) and
the candidate edges ``src -> dst`` (inner hit -> outer hit) with their scores. Edges never
join two events, so the tracks of all events are found at once. An edge is *kept* when
its score is at least ``threshold``.

Two methods:

- ``"components"``: every connected component of the kept edges (directions ignored) is
  a track (``scipy.sparse.csgraph.connected_components``). Simple and fast, but one
  wrongly kept edge between two tracks merges them into one.
- ``"walkthrough"``: tracks are walked outwards along the best kept edges. Every hit
  without a kept incoming edge starts a track; each step, every track head takes the
  highest-scoring kept outgoing edge to a hit that no track has taken yet. When several
  heads want the same hit, the one with the higher edge score gets it (equal scores: the
  head on the lower hit index) and the others try their next-best edge in the next
  step. A head without any edge to a free hit ends its track. When no head is left, the
  free hits whose kept incoming edges all come from taken hits start new tracks, and the
  walk goes on until no new track can start. Every hit belongs to at most one track, and
  a wrongly kept edge between two tracks does not merge them as long as it scores below
  the true continuation. The walk takes about as many steps as the longest track has
  hits (plus one per conflict lost); each step is vectorized over all heads. The edges
  must point outwards (no cycles); hits on a cycle of kept edges stay without a track.

Tracks with fewer than ``min_hits`` hits are dropped (their hits get -1). Track ids are
0, 1, ... numbered in the order of each track's first (lowest-index) hit, so the result
does not depend on the order of the edges.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from hepml.errors import BadValueError, ConfigError, UnknownKeyError
from hepml.representations.hits import window_ranges

__all__ = ["METHODS", "tracks_from_edges"]

#: Track-building methods and what they do.
METHODS: dict[str, str] = {
    "walkthrough": "walk outwards from each track start along the best kept edge to a free hit",
    "components": "connected components of the kept edges",
}


def _as_array(values: Any, name: str, dtype: type) -> np.ndarray:
    if hasattr(values, "detach"):  # a torch tensor
        values = values.detach().cpu().numpy()
    arr = np.asarray(values)
    if arr.ndim != 1:
        raise BadValueError(f"tracks_from_edges: {name} must be one-dimensional, got shape "
                            f"{arr.shape}")
    return arr.astype(dtype, copy=False)


def _relabel(label: np.ndarray, min_hits: int) -> np.ndarray:
    """Drop labels with fewer than ``min_hits`` hits; renumber the rest by first hit."""
    out = np.full(len(label), -1, dtype=np.int64)
    has = label >= 0
    if not has.any():
        return out
    uniq, first, inverse, size = np.unique(label[has], return_index=True, return_inverse=True,
                                           return_counts=True)
    keep = size >= min_hits
    rank = np.full(len(uniq), -1, dtype=np.int64)
    by_first = np.argsort(first[keep], kind="stable")
    rank[np.flatnonzero(keep)[by_first]] = np.arange(int(keep.sum()))
    out[has] = rank[inverse]
    return out


def _components(n_hits: int, src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    graph = coo_matrix((np.ones(len(src), dtype=np.int8), (src, dst)),
                       shape=(n_hits, n_hits)).tocsr()
    return connected_components(graph, directed=False)[1].astype(np.int64)


def _walkthrough(n_hits: int, src: np.ndarray, dst: np.ndarray,
                 score: np.ndarray) -> np.ndarray:
    # kept edges by inner hit, best first: the out-edges of hit i are ptr[i]:ptr[i + 1]
    order = np.lexsort((dst, -score, src))
    src, dst, score = src[order], dst[order], score[order]
    ptr = np.concatenate([[0], np.cumsum(np.bincount(src, minlength=n_hits))])
    track = np.full(n_hits, -1, dtype=np.int64)
    n_tracks = 0
    while True:
        # hits still free and without a kept incoming edge from a free hit start tracks
        blocked = np.zeros(n_hits, dtype=bool)
        blocked[dst[track[src] < 0]] = True
        heads = np.flatnonzero((track < 0) & ~blocked)
        if not len(heads):
            break
        track[heads] = n_tracks + np.arange(len(heads))
        n_tracks += len(heads)
        while len(heads):
            # every kept out-edge of every head, best first; those to free hits
            owner, pos = window_ranges(ptr[heads], ptr[heads + 1])
            free = track[dst[pos]] < 0
            owner, pos = owner[free], pos[free]
            # each head's best edge (the first of its run), then each target's best head
            first = np.concatenate([[True], owner[1:] != owner[:-1]]) if len(owner) else \
                np.zeros(0, dtype=bool)
            owner, pos = owner[first], pos[first]
            pick = np.lexsort((heads[owner], -score[pos], dst[pos]))
            owner, pos = owner[pick], pos[pick]
            target = dst[pos]
            win = np.concatenate([[True], target[1:] != target[:-1]]) if len(target) else \
                np.zeros(0, dtype=bool)
            track[target[win]] = track[heads[owner[win]]]
            # winners move on; losers stay and retry; heads without a free target stop
            new_heads = heads.copy()
            new_heads[owner[win]] = target[win]
            active = np.zeros(len(heads), dtype=bool)
            active[owner] = True
            heads = new_heads[active]
    return track


def tracks_from_edges(
    n_hits: int,
    src: Any,
    dst: Any,
    scores: Any,
    *,
    threshold: float = 0.5,
    method: str = "walkthrough",
    min_hits: int = 3,
    rank: Any = None,
) -> np.ndarray:
    """The track id of every hit from scored edges (-1: no track); see the module docstring.

    Args:
        n_hits: Hits in all (the edges' indices lie below it).
        src: Inner hit of every edge (global index), array-like or tensor.
        dst: Outer hit of every edge.
        scores: Score of every edge (a probability); edges with ``score >= threshold`` are
            kept.
        threshold: Score cut.
        method: ``"walkthrough"`` or ``"components"`` (:data:`METHODS`).
        min_hits: Tracks with fewer hits are dropped.
        rank: Walkthrough only: the order in which a hit's kept edges are tried, higher
            first (default: the scores). The tracking task lowers the rank of edges that
            skip a layer, so that of two good edges of one particle the one that keeps the
            hit in between is taken.

    Returns:
        ``[n_hits]`` int64 track ids, 0, 1, ... in the order of each track's first hit.

    Raises:
        UnknownKeyError: ``method`` is not a known method.
        ConfigError: ``min_hits`` is below 1 or ``threshold`` is not a number.
        BadValueError: The edge arrays differ in length, an index is out of range, or a
            score is NaN.
    """
    if method not in METHODS:
        raise UnknownKeyError(str(method), METHODS, where="tracks_from_edges method")
    if isinstance(min_hits, bool) or not isinstance(min_hits, (int, np.integer)) or min_hits < 1:
        raise ConfigError(f"tracks_from_edges: min_hits must be an integer >= 1, got {min_hits!r}")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float, np.floating)) \
            or not np.isfinite(threshold):
        raise ConfigError(f"tracks_from_edges: threshold must be a number, got {threshold!r}")
    n_hits = int(n_hits)
    if n_hits < 0:
        raise BadValueError(f"tracks_from_edges: n_hits must be >= 0, got {n_hits}")
    src = _as_array(src, "src", np.int64)
    dst = _as_array(dst, "dst", np.int64)
    scores = _as_array(scores, "scores", np.float64)
    if not len(src) == len(dst) == len(scores):
        raise BadValueError(f"tracks_from_edges: src, dst and scores must have one entry per "
                            f"edge, got {len(src)}, {len(dst)} and {len(scores)}")
    if len(src) and (min(src.min(), dst.min()) < 0 or max(src.max(), dst.max()) >= n_hits):
        raise BadValueError(f"tracks_from_edges: hit indices must lie in [0, {n_hits - 1}], got "
                            f"{min(src.min(), dst.min())} to {max(src.max(), dst.max())}")
    if np.isnan(scores).any():
        raise BadValueError(f"tracks_from_edges: {int(np.isnan(scores).sum())} edge score(s) "
                            "are NaN; check the model's inputs and weights")
    rank = scores if rank is None else _as_array(rank, "rank", np.float64)
    if len(rank) != len(scores):
        raise BadValueError(f"tracks_from_edges: rank has {len(rank)} entries for "
                            f"{len(scores)} edges")
    keep = scores >= threshold
    src, dst, rank = src[keep], dst[keep], rank[keep]
    if method == "components":
        label = _components(n_hits, src, dst)
    else:
        label = _walkthrough(n_hits, src, dst, rank)
    return _relabel(label, min_hits)
