"""torch kNN: dense per-jet neighbours and flat PyG-style edges against brute force."""

from __future__ import annotations

import math

import pytest
import torch

from hepml.errors import BadValueError, ConfigError
from hepml.representations.knn import knn_graph_edges, knn_indices


def brute_force(points, k, mask, include_self=False, periodic=()):
    """Reference: Python loops, sort by (distance, index), fill with own index."""
    b, n, d = points.shape
    idx = torch.empty(b, n, k, dtype=torch.long)
    valid = torch.zeros(b, n, k, dtype=torch.bool)
    for jet in range(b):
        for i in range(n):
            cands = []
            if mask[jet, i]:
                for j in range(n):
                    if not mask[jet, j] or (j == i and not include_self):
                        continue
                    dist2 = 0.0
                    for a in range(d):
                        delta = float(points[jet, i, a]) - float(points[jet, j, a])
                        if a in periodic:
                            delta = (delta + math.pi) % (2 * math.pi) - math.pi
                        dist2 += delta * delta
                    cands.append((dist2, j))
            cands.sort()
            for s in range(k):
                if s < len(cands):
                    idx[jet, i, s], valid[jet, i, s] = cands[s][1], True
                else:
                    idx[jet, i, s] = i
    return idx, valid


@pytest.mark.parametrize("k", [1, 3, 7])
@pytest.mark.parametrize("include_self", [False, True])
def test_matches_brute_force_with_padding(k, include_self):
    gen = torch.Generator().manual_seed(k)
    points = torch.randn(4, 9, 3, generator=gen, dtype=torch.float64)
    mask = torch.rand(4, 9, generator=gen) < 0.7
    mask[0] = True  # one full jet
    mask[1] = False  # one empty jet
    idx, valid = knn_indices(points, k, mask, include_self=include_self)
    ref_idx, ref_valid = brute_force(points, k, mask, include_self)
    assert idx.dtype == torch.long and valid.dtype == torch.bool
    assert torch.equal(valid, ref_valid)
    assert torch.equal(idx, ref_idx)


def test_ties_smaller_index_first():
    # points on a line: 0 at x=0, 1 at x=-1, 2 at x=+1, 3 at x=-1 (duplicate of 1)
    points = torch.tensor([[[0.0], [-1.0], [1.0], [-1.0]]])
    idx, valid = knn_indices(points, 3)
    assert idx[0, 0].tolist() == [1, 2, 3]  # all at distance 1: by index
    assert idx[0, 1].tolist() == [3, 0, 2]  # duplicate first (distance 0)
    idx2, _ = knn_indices(points, 3)
    assert torch.equal(idx, idx2)
    # a grid full of equal distances agrees with the reference
    g = torch.stack(torch.meshgrid(torch.arange(4.0), torch.arange(4.0), indexing="ij"), -1)
    g = g.reshape(1, 16, 2)
    idx, _ = knn_indices(g, 6)
    assert torch.equal(idx, brute_force(g, 6, torch.ones(1, 16, dtype=torch.bool))[0])


def test_padded_points_never_chosen():
    gen = torch.Generator().manual_seed(1)
    points = torch.randn(3, 12, 2, generator=gen)
    mask = torch.zeros(3, 12, dtype=torch.bool)
    mask[:, :5] = True
    points[:, 5:] = 0.0  # padding sits at the origin, right among the real points
    idx, valid = knn_indices(points, 4, mask)
    assert (idx[valid] < 5).all()
    assert not valid[:, 5:].any()
    # a padded point's slots hold its own index
    assert torch.equal(idx[:, 5:], torch.arange(5, 12).view(1, 7, 1).expand(3, 7, 4))


def test_k_larger_than_multiplicity_and_n():
    points = torch.tensor([[[0.0, 0.0], [1.0, 0.0], [5.0, 5.0]]])
    mask = torch.tensor([[True, True, False]])
    idx, valid = knn_indices(points, 5, mask)  # k > N
    assert idx.shape == (1, 3, 5)
    assert idx[0, 0].tolist() == [1, 0, 0, 0, 0]
    assert valid[0, 0].tolist() == [True, False, False, False, False]
    assert idx[0, 1].tolist() == [0, 1, 1, 1, 1]
    assert not valid[0, 2].any()
    # a single particle has no neighbour, only its own index
    idx, valid = knn_indices(points[:, :1], 2)
    assert idx.tolist() == [[[0, 0]]] and not valid.any()


def test_empty_jets_and_empty_batch():
    points = torch.zeros(2, 4, 2)
    idx, valid = knn_indices(points, 3, torch.zeros(2, 4, dtype=torch.bool))
    assert not valid.any()
    idx, valid = knn_indices(torch.zeros(0, 5, 2), 3)
    assert idx.shape == (0, 5, 3)
    idx, valid = knn_indices(torch.zeros(2, 0, 2), 3)
    assert idx.shape == (2, 0, 3)


def test_periodic_dimension():
    # φ = 3.1 and φ = -3.1 are 0.083 apart, not 6.2
    points = torch.tensor([[[0.0, 3.1], [0.0, -3.1], [0.0, 2.5]]], dtype=torch.float64)
    idx, _ = knn_indices(points, 1, periodic_dims=(1,))
    assert idx[0, :, 0].tolist() == [1, 0, 0]
    idx, _ = knn_indices(points, 1)
    assert idx[0, :, 0].tolist() == [2, 2, 0]
    gen = torch.Generator().manual_seed(3)
    pts = torch.stack([torch.randn(2, 10, generator=gen),
                       (torch.rand(2, 10, generator=gen) * 2 - 1) * math.pi], -1).double()
    mask = torch.rand(2, 10, generator=gen) < 0.8
    got = knn_indices(pts, 4, mask, periodic_dims=(1,))
    ref = brute_force(pts, 4, mask, periodic=(1,))
    assert torch.equal(got.indices, ref[0]) and torch.equal(got.valid, ref[1])


def test_no_gradient_needed_and_bad_arguments():
    points = torch.randn(1, 4, 2, requires_grad=True)
    idx, _ = knn_indices(points, 2)
    assert not idx.requires_grad
    with pytest.raises(ConfigError):
        knn_indices(points, 0)
    with pytest.raises(BadValueError):
        knn_indices(points[0], 2)
    with pytest.raises(BadValueError):
        knn_indices(points, 2, torch.ones(1, 5, dtype=torch.bool))
    with pytest.raises(BadValueError):
        knn_indices(points, 2, periodic_dims=(2,))


def test_graph_edges_flat_batches_of_different_sizes():
    gen = torch.Generator().manual_seed(5)
    sizes = [5, 1, 0, 8, 3]
    batch = torch.repeat_interleave(torch.arange(len(sizes)), torch.tensor(sizes))
    points = torch.randn(int(sum(sizes)), 2, generator=gen, dtype=torch.float64)
    k = 3
    edges = knn_graph_edges(points, k, batch)
    assert edges.shape[0] == 2 and edges.dtype == torch.long
    assert edges.shape[1] == sum(s * min(k, s - 1) for s in sizes if s)
    # reference: per graph, brute force on that graph alone
    ref, start = [], 0
    for s in sizes:
        if s:
            idx, valid = brute_force(points[start:start + s].unsqueeze(0), k,
                                     torch.ones(1, s, dtype=torch.bool))
            for i in range(s):
                for slot in range(k):
                    if valid[0, i, slot]:
                        ref.append((start + int(idx[0, i, slot]), start + i))
        start += s
    assert [tuple(e) for e in edges.t().tolist()] == ref
    # edges never cross graphs, sources are neighbours and targets the centres
    assert torch.equal(batch[edges[0]], batch[edges[1]])
    assert (edges[0] != edges[1]).all()


def test_graph_edges_single_graph_self_loops_and_errors():
    points = torch.tensor([[0.0], [1.0], [3.0]])
    edges = knn_graph_edges(points, 1)
    assert edges.tolist() == [[1, 0, 1], [0, 1, 2]]
    edges = knn_graph_edges(points, 1, include_self=True)
    assert edges.tolist() == [[0, 1, 2], [0, 1, 2]]
    assert knn_graph_edges(torch.zeros(0, 2), 3).shape == (2, 0)
    with pytest.raises(BadValueError, match="non-decreasing"):
        knn_graph_edges(points, 1, torch.tensor([1, 0, 0]))
    with pytest.raises(BadValueError):
        knn_graph_edges(points, 1, torch.tensor([0, 0]))
