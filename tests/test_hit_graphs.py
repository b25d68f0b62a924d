"""Hit graphs, the interaction-network edge classifier and track building, on synthetic events.

The events are made here: helices from the beam line through the ten TrackML barrel
layers (2 T), with missing hits, noise hits and hits that no tracker uses, in random
order. The tests check the graphs against the truth of that simulation (every segment
of a reconstructable particle is a candidate edge; ``y`` against a brute-force
reference), the padding, empty events and bad input; the model's invariances and that it
learns; and track building on hand-made graphs with known answers.
"""

from __future__ import annotations

import functools
import time

import awkward as ak
import numpy as np
import pytest
import torch
from sklearn.metrics import roc_auc_score

from hepml.errors import BadValueError, ConfigError, UnknownKeyError
from hepml.models._registry import MODELS, build_model
from hepml.models.hit_gnn import EdgeClassifierIN, edge_loss
from hepml.representations import HitGraphConfig, HitGraphs
from hepml.representations.hit_graphs import HIT_EDGE_FEATURES, make_hit_graphs, unpad
from hepml.representations.hits import HitArrays
from hepml.tasks.tracking.graph_building import tracks_from_edges

LAYER_R = np.array([32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0])
B_FIELD = 2.0  # T


@pytest.fixture(autouse=True)
def one_thread():
    """Small graphs run fastest on one thread (and the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# --------------------------------------------------------------------------- simulation
def make_events(n_events: int, n_particles: int, seed: int, *, n_noise: int = 20,
                inefficiency: float = 0.03, n_unused: int = 3) -> ak.Array:
    """Synthetic events: helices from the beam line, missing hits, noise, shuffled hits.

    Besides the hit fields the events carry the truth used by the checks: ``hit_pt`` and
    ``hit_z0`` of each hit's particle (0 for noise).
    """
    rng = np.random.default_rng(seed)
    out: dict[str, list] = {k: [] for k in ("hit_x", "hit_y", "hit_z", "hit_layer",
                                           "hit_particle_id", "hit_pt", "hit_z0")}
    for _ in range(n_events):  # the test's simulation, not library code
        n = n_particles
        pid = rng.choice(np.arange(1, 10 * n + 1), n, replace=False).astype(np.int64) * 7919
        pt = 1.0 / rng.uniform(1 / 10.0, 1 / 0.4, n)
        phi0 = rng.uniform(-np.pi, np.pi, n)
        eta = rng.uniform(-1.5, 1.5, n)
        z0 = rng.normal(0.0, 50.0, n)
        q = rng.choice([-1.0, 1.0], n)
        radius = 1000.0 * pt / (0.3 * B_FIELD)  # mm
        r = np.broadcast_to(LAYER_R, (n, len(LAYER_R)))
        ok = r < 2 * radius[:, None]
        phi = phi0[:, None] - q[:, None] * np.arcsin(np.minimum(r / (2 * radius[:, None]), 1))
        z = z0[:, None] + r * np.sinh(eta)[:, None]
        ok &= np.abs(z) < 1100.0
        ok &= rng.random(ok.shape) > inefficiency
        p, lay = np.nonzero(ok)
        x, y, zz = r[p, lay] * np.cos(phi[p, lay]), r[p, lay] * np.sin(phi[p, lay]), z[p, lay]
        hid, hpt, hz0 = pid[p], pt[p], z0[p]
        # noise on the layers, and hits outside the barrel layers (layer -1)
        nl = rng.integers(0, len(LAYER_R), n_noise)
        nphi = rng.uniform(-np.pi, np.pi, n_noise)
        nz = rng.uniform(-1000, 1000, n_noise)
        up = rng.integers(0, n, n_unused)
        uphi = rng.uniform(-np.pi, np.pi, n_unused)
        layer = np.concatenate([lay, nl, np.full(n_unused, -1)])
        cols = {
            "hit_x": np.concatenate([x, LAYER_R[nl] * np.cos(nphi), 1100 * np.cos(uphi)]),
            "hit_y": np.concatenate([y, LAYER_R[nl] * np.sin(nphi), 1100 * np.sin(uphi)]),
            "hit_z": np.concatenate([zz, nz, rng.uniform(-1000, 1000, n_unused)]),
            "hit_layer": layer,
            "hit_particle_id": np.concatenate([hid, np.zeros(n_noise, np.int64), pid[up]]),
            "hit_pt": np.concatenate([hpt, np.zeros(n_noise), pt[up]]),
            "hit_z0": np.concatenate([hz0, np.zeros(n_noise), z0[up]]),
        }
        perm = rng.permutation(len(layer))
        for k, v in cols.items():
            out[k].append(v[perm])
    return ak.Array(out)


def true_pairs(events: ak.Array, event: int, *, max_gap: int = 2, min_pt: float = 0.0,
               max_z0: float = np.inf) -> set[tuple[int, int]]:
    """Consecutive hits (by layer, gap <= max_gap) of the selected particles of one event."""
    pid = np.asarray(events.hit_particle_id[event])
    layer = np.asarray(events.hit_layer[event])
    pt, z0 = np.asarray(events.hit_pt[event]), np.asarray(events.hit_z0[event])
    sel = (pid != 0) & (layer >= 0) & (pt >= min_pt) & (np.abs(z0) < max_z0)
    idx = np.flatnonzero(sel)
    idx = idx[np.lexsort((layer[idx], pid[idx]))]
    pairs = set()
    for a, b in zip(idx[:-1], idx[1:], strict=True):
        if pid[a] == pid[b] and layer[b] - layer[a] <= max_gap:
            pairs.add((int(a), int(b)))
    return pairs


def brute_force_y(events: ak.Array, event: int, edges: np.ndarray) -> np.ndarray:
    """1 where both hits belong to one particle and it has no hit on a layer in between."""
    pid = np.asarray(events.hit_particle_id[event])
    layer = np.asarray(events.hit_layer[event])
    i, j = edges[:, 0], edges[:, 1]
    same = (pid[i] == pid[j]) & (pid[i] != 0)
    # [E, H]: a hit of the edge's particle strictly between the edge's layers
    between = ((pid[None, :] == pid[i][:, None]) & (layer[None, :] > layer[i][:, None])
               & (layer[None, :] < layer[j][:, None]))
    return (same & ~between.any(1)).astype(np.float32)


@pytest.fixture(scope="module")
def events() -> ak.Array:
    """Eight events of 60 particles, noise and unused hits."""
    return make_events(8, 60, seed=1)


@pytest.fixture(scope="module")
def graphs(events: ak.Array) -> dict[str, torch.Tensor]:
    """The default hit graphs of ``events``."""
    return HitGraphs()(events)


# --------------------------------------------------------------------------- graphs
def test_every_reconstructable_segment_is_a_candidate_edge(events, graphs):
    """Edge efficiency 1 for pT >= 0.6 GeV, |z0| < 150 mm (gaps of one layer included)."""
    n_required = 0
    for b in range(len(events)):
        e = graphs["edges"][b, :graphs["n_edges"][b]].numpy()
        have = set(map(tuple, e.tolist()))
        required = true_pairs(events, b, min_pt=0.6, max_z0=150.0)
        n_required += len(required)
        missing = required - have
        assert not missing, f"event {b}: {len(missing)} true segments are not candidates"
    assert n_required > 2000


def test_same_particle_labels_by_default(events, graphs):
    """Default labels: 1 exactly where both hits belong to one (non-noise) particle."""
    n_skip_true = 0
    for b in range(len(events)):
        n = int(graphs["n_edges"][b])
        e = graphs["edges"][b, :n].numpy()
        pid = np.asarray(events.hit_particle_id[b])
        ref = np.array([float(pid[i] == pid[j] and pid[i] != 0) for i, j in e.tolist()])
        np.testing.assert_array_equal(graphs["y"][b, :n].numpy(), ref)
        n_skip_true += int((ref - brute_force_y(events, b, e)).sum())
    assert n_skip_true > 0  # edges over a hit of their own particle are true here


def test_y_matches_brute_force_truth(events):
    """``edge_labels: consecutive`` against a pairwise reference."""
    graphs = HitGraphs({"edge_labels": "consecutive"})(events)
    n_true = 0
    for b in range(len(events)):
        n = int(graphs["n_edges"][b])
        e = graphs["edges"][b, :n].numpy()
        ref = brute_force_y(events, b, e)
        np.testing.assert_array_equal(graphs["y"][b, :n].numpy(), ref)
        n_true += int(ref.sum())
        # every true segment that is a candidate edge is labelled 1
        cand = set(map(tuple, e[ref == 1].tolist()))
        all_true = true_pairs(events, b)
        assert cand == {p for p in all_true if p in set(map(tuple, e.tolist()))}
    n_all = int(graphs["n_edges"].sum())
    assert 0.2 * n_all < n_true < 0.9 * n_all  # fakes and trues both present


def test_shapes_padding_and_features(events, graphs):
    """Shapes, dtypes, padding values, node order and the edge features' formulas."""
    n = len(events)
    counts = ak.to_numpy(ak.num(events.hit_x))
    h, e = int(counts.max()), int(graphs["n_edges"].max())
    assert graphs["x"].shape == (n, h, 3) and graphs["x"].dtype == torch.float32
    assert graphs["edges"].shape == (n, e, 2) and graphs["edges"].dtype == torch.int64
    assert graphs["edge_attr"].shape == (n, e, len(HIT_EDGE_FEATURES))
    assert graphs["edge_attr"].dtype == torch.float32
    assert graphs["y"].shape == (n, e) and graphs["y"].dtype == torch.float32
    np.testing.assert_array_equal(graphs["n_hits"].numpy(), counts)
    assert graphs["n_hits"].dtype == torch.int64 and graphs["n_edges"].dtype == torch.int64
    slot = torch.arange(e)[None]
    pad = slot >= graphs["n_edges"][:, None]
    assert (graphs["edges"][pad] == -1).all() and (graphs["edges"][~pad] >= 0).all()
    assert (graphs["y"][pad] == -1).all() and set(graphs["y"][~pad].unique().tolist()) <= {0, 1}
    assert (graphs["edge_attr"][pad] == 0).all()
    node_pad = torch.arange(h)[None] >= graphs["n_hits"][:, None]
    assert (graphs["x"][node_pad] == 0).all()
    n_hits_of_edge = graphs["n_hits"].repeat_interleave(graphs["n_edges"])
    assert (graphs["edges"][~pad] < n_hits_of_edge[:, None]).all()

    b = 3  # nodes are the event's hits in input order; edges point outwards
    hx, hy, hz = (np.asarray(events[f][b]) for f in ("hit_x", "hit_y", "hit_z"))
    r, phi = np.hypot(hx, hy), np.arctan2(hy, hx)
    x = graphs["x"][b, :counts[b]].numpy()
    np.testing.assert_allclose(x, np.stack([r / 1000, phi / np.pi, hz / 1000], 1), atol=1e-6)
    ne = int(graphs["n_edges"][b])
    i, j = graphs["edges"][b, :ne].numpy().T
    layer = np.asarray(events.hit_layer[b])
    assert np.all(layer[j] - layer[i] >= 1) and np.all(layer[j] - layer[i] <= 2)
    assert np.all(layer[i] >= 0)
    dphi = (phi[j] - phi[i] + np.pi) % (2 * np.pi) - np.pi
    dr = r[j] - r[i]
    deta = np.arcsinh(hz[j] / r[j]) - np.arcsinh(hz[i] / r[i])
    ref = np.stack([dr / 1000, dphi, (hz[j] - hz[i]) / 1000, np.hypot(deta, dphi),
                    dphi / dr * 1000, (hz[i] - r[i] * (hz[j] - hz[i]) / dr) / 1000], 1)
    np.testing.assert_allclose(graphs["edge_attr"][b, :ne].numpy(), ref, rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(ref[:, 4]) < 0.6) and np.all(np.abs(ref[:, 5]) < 0.2)


def test_unpad_gives_global_hit_indices(events, graphs):
    """Flat edges join hits of one event, outwards; HitArrays input gives the same graphs."""
    src, dst, y, attr = unpad(graphs["edges"], graphs["n_hits"], graphs["y"], graphs["edge_attr"])
    assert len(src) == len(dst) == len(y) == len(attr) == int(graphs["n_edges"].sum())
    hits = HitArrays.from_awkward(events)
    assert (hits.event[src.numpy()] == hits.event[dst.numpy()]).all()
    assert (hits.layer[dst.numpy()] > hits.layer[src.numpy()]).all()
    same = hits.particle[src.numpy()] == hits.particle[dst.numpy()]
    assert (same[y.numpy() == 1]).all()
    # the same graphs from HitArrays directly
    again = make_hit_graphs(hits)
    for k in graphs:
        assert torch.equal(again[k], graphs[k]), k


def test_truth_off_reads_no_truth(events):
    """Without truth only the hit fields are read and ``y`` is left out."""
    hits_only = events[["hit_x", "hit_y", "hit_z", "hit_layer"]]
    out = HitGraphs()(hits_only, truth=False)
    assert "y" not in out
    full = HitGraphs()(events)
    for k in out:
        assert torch.equal(out[k], full[k])
    assert HitGraphs().required_fields == ("hit_x", "hit_y", "hit_z", "hit_layer",
                                           "hit_particle_id")
    assert HitGraphs().fields(truth=False) == ("hit_x", "hit_y", "hit_z", "hit_layer")
    with pytest.raises(KeyError, match="hit_particle_id"):
        HitGraphs()(hits_only)


def test_empty_events():
    """Events without hits are empty graphs, alone or among others."""
    events = make_events(3, 10, seed=5)
    fields = ["hit_x", "hit_y", "hit_z", "hit_layer", "hit_particle_id"]
    empty_row = {f: [] for f in fields}
    rows = ak.to_list(events[fields])
    mixed = ak.Array([empty_row, rows[0], empty_row, rows[1]])
    out = HitGraphs()(mixed)
    assert out["n_hits"].tolist()[0] == 0 and out["n_hits"].tolist()[2] == 0
    assert out["n_edges"][[0, 2]].tolist() == [0, 0]
    assert (out["edges"][[0, 2]] == -1).all() and (out["y"][[0, 2]] == -1).all()
    alone = HitGraphs()(mixed[[1, 3]])
    n = int(alone["n_edges"].max())
    assert torch.equal(out["edges"][[1, 3], :n], alone["edges"])
    assert HitGraphs().count_empty(mixed) == 2

    none = HitGraphs()(ak.Array([empty_row, empty_row]))
    assert none["x"].shape == (2, 0, 3) and none["edges"].shape == (2, 0, 2)
    assert none["edge_attr"].shape == (2, 0, 6) and none["y"].shape == (2, 0)
    assert none["n_hits"].tolist() == [0, 0] and none["n_edges"].tolist() == [0, 0]
    zero = HitGraphs()(mixed[:0])
    assert zero["x"].shape == (0, 0, 3) and zero["edges"].shape == (0, 0, 2)
    # the model and track building take empty graphs too
    model = EdgeClassifierIN(hidden=8, n_iterations=1)
    assert model(none["x"], none["edges"], none["edge_attr"]).shape == (2, 0)
    assert tracks_from_edges(0, [], [], []).shape == (0,)


def test_bad_values():
    """NaN coordinates, layers out of range and missing fields raise, naming the event."""
    events = make_events(3, 10, seed=6)
    x = ak.to_list(events.hit_x)
    x[2][4] = float("nan")
    bad = ak.with_field(events, ak.Array(x), "hit_x")
    with pytest.raises(BadValueError, match="hit_x.*event 2") as info:
        HitGraphs()(bad)
    assert info.value.event_index == 2
    layer = ak.to_list(events.hit_layer)
    layer[1][0] = 10
    with pytest.raises(BadValueError, match="hit_layer.*event 1.*n_layers"):
        HitGraphs()(ak.with_field(events, ak.Array(layer), "hit_layer"))
    with pytest.raises(KeyError, match="hit_z"):
        HitGraphs()(events[["hit_x", "hit_y", "hit_layer", "hit_particle_id"]])


def test_config():
    """Round trip, output shapes, and out-of-range values named by key."""
    cfg = HitGraphConfig.from_dict({"max_skip": 0, "eta_max": 3, "z0_max": 150})
    assert cfg.eta_max == 3.0 and cfg.pairs == [(a, a + 1) for a in range(9)]
    assert HitGraphConfig.from_dict(cfg.to_dict()) == cfg
    transform = HitGraphs({"phi_slope_max": 0.001})
    assert HitGraphs.from_dict(transform.to_dict()) == transform
    assert transform.output_shape["x"] == (None, 3)
    assert transform.output_shape["edge_attr"] == (None, 6)
    for key, value in [("phi_slope_max", 0), ("z0_max", -1.0), ("eta_max", 0.0),
                       ("r_scale", float("inf")), ("n_layers", 1), ("max_skip", -1),
                       ("max_skip", 9)]:
        with pytest.raises(ConfigError, match=f"representation.{key}"):
            HitGraphConfig.from_dict({key: value})
    with pytest.raises(UnknownKeyError, match="phi_slope_max"):
        HitGraphConfig.from_dict({"phi_slop_max": 0.001})


# --------------------------------------------------------------------------- model
def small_model(**kw) -> EdgeClassifierIN:
    """A small model in eval mode, the same weights every call."""
    torch.manual_seed(0)
    return EdgeClassifierIN(**{"hidden": 16, "n_iterations": 3, **kw}).eval()


def test_model_shapes_registry_and_checks(graphs):
    """Registered by name; logits per edge, 0 at padding; gradients; bad shapes raise."""
    assert MODELS["interaction_network"] is EdgeClassifierIN
    model = build_model("interaction_network", hidden=8, n_iterations=2)
    out = model(graphs["x"], graphs["edges"], graphs["edge_attr"])
    assert out.shape == graphs["y"].shape
    assert (out[graphs["y"] < 0] == 0).all()
    loss = edge_loss(out, graphs["y"])
    loss.backward()
    assert all(p.grad is not None for p in model.parameters())
    with pytest.raises(ConfigError, match="hidden"):
        EdgeClassifierIN(hidden=0)
    with pytest.raises(ConfigError, match="dropout"):
        EdgeClassifierIN(dropout=1.5)
    with pytest.raises(BadValueError, match="edge_attr"):
        model(graphs["x"], graphs["edges"], graphs["edge_attr"][..., :3])
    with pytest.raises(BadValueError, match="edges"):
        model(graphs["x"], graphs["edges"].float(), graphs["edge_attr"])
    separate = EdgeClassifierIN(hidden=8, n_iterations=2, shared_weights=False)
    assert len(separate.edge_networks) == 2 and len(model.edge_networks) == 1


def test_edge_loss_ignores_padding():
    """The loss is the BCE of the real edges only."""
    logits = torch.tensor([[2.0, -1.0, 5.0], [0.5, 7.0, -3.0]])
    y = torch.tensor([[1.0, 0.0, -1.0], [0.0, -1.0, -1.0]])
    real = torch.tensor([2.0, -1.0, 0.5]), torch.tensor([1.0, 0.0, 0.0])
    ref = torch.nn.functional.binary_cross_entropy_with_logits(*real)
    assert torch.allclose(edge_loss(logits, y), ref)
    ref_w = torch.nn.functional.binary_cross_entropy_with_logits(
        *real, pos_weight=torch.tensor(3.0))
    assert torch.allclose(edge_loss(logits, y, pos_weight=3.0), ref_w)
    assert edge_loss(logits, torch.full_like(y, -1.0)).item() == 0.0


def test_model_ignores_padding(graphs):
    """More padding, or garbage in it, changes no real logit; one event alone scores the same."""
    model = small_model()
    x, edges, attr = graphs["x"][:3], graphs["edges"][:3], graphs["edge_attr"][:3]
    with torch.no_grad():
        ref = model(x, edges, attr)
        b, h, e = x.shape[0], x.shape[1], edges.shape[1]
        x2 = torch.cat([x, torch.randn(b, 7, 3)], 1)  # garbage in the padded slots
        x2[:, :h][torch.arange(h)[None] >= graphs["n_hits"][:3, None]] = 5.0
        edges2 = torch.cat([edges, torch.full((b, 11, 2), -1)], 1)
        attr2 = torch.cat([attr, torch.randn(b, 11, attr.shape[-1])], 1)
        attr2[:, :e][edges[..., 0] < 0] = 3.0
        out = model(x2, edges2, attr2)
        assert torch.allclose(out[:, :e], ref, atol=1e-5)
        assert (out[:, e:] == 0).all()
        alone = model(x[1:2], edges[1:2], attr[1:2])
        assert torch.allclose(alone, ref[1:2], atol=1e-5)


def test_model_is_permutation_equivariant(graphs):
    """Permuting hits and edges of an event permutes the logits the same way."""
    model = small_model()
    b = 2
    n, ne = int(graphs["n_hits"][b]), int(graphs["n_edges"][b])
    x, edges, attr = graphs["x"][b:b + 1, :n], graphs["edges"][b:b + 1, :ne], \
        graphs["edge_attr"][b:b + 1, :ne]
    gen = torch.Generator().manual_seed(3)
    perm = torch.randperm(n, generator=gen)  # new node k is old node perm[k]
    inverse = torch.empty_like(perm)
    inverse[perm] = torch.arange(n)
    eperm = torch.randperm(ne, generator=gen)
    with torch.no_grad():
        ref = model(x, edges, attr)[0]
        out = model(x[:, perm], inverse[edges[:, eperm]], attr[:, eperm])[0]
    assert torch.allclose(out, ref[eperm], atol=1e-5)


@pytest.fixture(scope="module")
def trained():
    """A small model trained for 300 steps on synthetic events, and held-out events."""
    torch.manual_seed(0)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    train = HitGraphs()(make_events(48, 40, seed=10))
    test_events = make_events(10, 40, seed=11)
    model = EdgeClassifierIN(hidden=32, n_iterations=4)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss_fn = functools.partial(edge_loss, pos_weight=1.0)
    gen = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    model.train()
    for _ in range(300):
        sel = torch.randint(0, len(train["x"]), (4,), generator=gen)
        loss = loss_fn(model(train["x"][sel], train["edges"][sel], train["edge_attr"][sel]),
                       train["y"][sel])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds = time.perf_counter() - start
    model.eval()
    torch.set_num_threads(before)
    return model, test_events, seconds


def test_training_reaches_high_edge_auc(trained):
    """300 steps on 48 events give an edge AUC above 0.95 on 10 held-out events."""
    model, test_events, seconds = trained
    graphs = HitGraphs()(test_events)
    with torch.no_grad():
        logits = model(graphs["x"], graphs["edges"], graphs["edge_attr"])
    real = graphs["y"] >= 0
    auc = roc_auc_score(graphs["y"][real].numpy(), logits[real].numpy())
    assert auc > 0.95, (auc, seconds)


def match_tracks(track: np.ndarray, particle: np.ndarray) -> set[int]:
    """Particles whose hits are, all of them and nothing else, one track."""
    good = set()
    for t in np.unique(track[track >= 0]):
        members = particle[track == t]
        p = members[0]
        if p != 0 and (members == p).all() and (particle == p).sum() == len(members):
            good.add(int(p))
    return good


def reconstructable(events: ak.Array) -> tuple[np.ndarray, set[int]]:
    """Flat unique particle keys, and those with pT >= 0.6, |z0| < 150, >= 5 hits, no double gap."""
    hits = HitArrays.from_awkward(events)
    key = np.where(hits.particle != 0, hits.particle * 1000 + hits.event, 0)
    key[hits.layer < 0] = 0  # hits no tracker uses are not part of a track
    pt = ak.to_numpy(ak.flatten(events.hit_pt))
    z0 = ak.to_numpy(ak.flatten(events.hit_z0))
    good = set()
    for k in np.unique(key[key != 0]):
        sel = key == k
        layers = np.sort(hits.layer[sel])
        if pt[sel][0] >= 0.6 and abs(z0[sel][0]) < 150 and sel.sum() >= 5 \
                and np.all(np.diff(layers) <= 2):
            good.add(int(k))
    return key, good


@pytest.mark.parametrize("method", ["walkthrough", "components"])
def test_truth_scores_give_the_true_tracks(events, graphs, method):
    """Truth scores give every reconstructable particle as exactly one track.

    Same-particle labels also mark edges over a hit of the particle; walkthrough ranks
    them below the edge to the next layer, as the tracking task does.
    """
    key, good = reconstructable(events)
    src, dst, y = unpad(graphs["edges"], graphs["n_hits"], graphs["y"])
    layer = HitArrays.from_awkward(events).layer
    gap = (layer[dst.numpy()] - layer[src.numpy()]) - 1
    track = tracks_from_edges(len(key), src, dst, y, method=method, min_hits=3,
                              rank=y.numpy() - 0.3 * gap)
    found = match_tracks(track, key)
    assert good <= found
    assert len(good) > 200


def double_majority(track: np.ndarray, particle: np.ndarray) -> set[int]:
    """Particles with a track holding more than half of its hits and of the track's hits."""
    good = set()
    for t in np.unique(track[track >= 0]):
        values, counts = np.unique(particle[track == t], return_counts=True)
        p, n = values[np.argmax(counts)], counts.max()
        if p != 0 and 2 * n > counts.sum() and 2 * n > (particle == p).sum():
            good.add(int(p))
    return good


def test_trained_model_finds_tracks(trained):
    """The trained model's scores find > 95 % of the particles by walkthrough (double majority)."""
    model, test_events, _ = trained
    graphs = HitGraphs()(test_events)
    with torch.no_grad():
        scores = torch.sigmoid(model(graphs["x"], graphs["edges"], graphs["edge_attr"]))
    src, dst, s = unpad(graphs["edges"], graphs["n_hits"], scores)
    key, good = reconstructable(test_events)
    layer = HitArrays.from_awkward(test_events).layer
    rank = s.numpy() - 0.3 * (layer[dst.numpy()] - layer[src.numpy()] - 1)
    # components merge two tracks through any one kept fake edge, the walk does not
    for method, minimum in (("walkthrough", 0.95), ("components", 0.8)):
        track = tracks_from_edges(len(key), src, dst, s, method=method, min_hits=3, rank=rank)
        efficiency = len(good & double_majority(track, key)) / len(good)
        assert efficiency > minimum, (method, efficiency)
        exact = len(good & match_tracks(track, key)) / len(good)
        assert exact > 0.7, (method, exact)


# --------------------------------------------------------------------------- track building
def test_y_junction_walkthrough_separates_what_components_merge():
    """A kept fake edge between two tracks: components merge them, the walk does not."""
    # track A: 0 -> 1 -> 2 -> 3; track B: 4 -> 5 -> 6 -> 7; a fake edge 1 -> 6 kept at 0.6
    src = [0, 1, 2, 4, 5, 6, 1]
    dst = [1, 2, 3, 5, 6, 7, 6]
    scores = [0.9, 0.95, 0.9, 0.8, 0.9, 0.85, 0.6]
    walk = tracks_from_edges(8, src, dst, scores, method="walkthrough")
    np.testing.assert_array_equal(walk, [0, 0, 0, 0, 1, 1, 1, 1])
    comp = tracks_from_edges(8, src, dst, scores, method="components")
    np.testing.assert_array_equal(comp, [0] * 8)
    # the edge order does not matter
    perm = [6, 3, 0, 5, 2, 4, 1]
    np.testing.assert_array_equal(
        tracks_from_edges(8, np.take(src, perm), np.take(dst, perm), np.take(scores, perm)), walk)


def test_merging_branches_go_to_the_best_score():
    """Branches meeting at one hit: the better score wins; the loser goes on elsewhere."""
    # two inner branches 0 -> 1 and 2 -> 3 both continue to 4 -> 5 -> 6; 1 -> 4 scores higher
    src = [0, 2, 1, 3, 4, 5]
    dst = [1, 3, 4, 4, 5, 6]
    scores = [0.9, 0.9, 0.8, 0.7, 0.9, 0.9]
    np.testing.assert_array_equal(tracks_from_edges(7, src, dst, scores),
                                  [0, 0, -1, -1, 0, 0, 0])
    np.testing.assert_array_equal(tracks_from_edges(7, src, dst, scores, min_hits=2),
                                  [0, 0, 1, 1, 0, 0, 0])
    # a split: 0 -> 1 -> {2 (0.7), 3 (0.9)}; 3 -> 4; the loser 2 starts its own (short) track
    track = tracks_from_edges(5, [0, 1, 1, 3], [1, 2, 3, 4], [0.9, 0.7, 0.9, 0.9], min_hits=1)
    np.testing.assert_array_equal(track, [0, 0, 1, 0, 0])
    # a head whose best hit is taken falls back to its next-best edge
    track = tracks_from_edges(6, [0, 3, 1, 4, 1], [1, 4, 2, 2, 5], [0.9, 0.9, 0.6, 0.95, 0.55],
                              min_hits=3)
    np.testing.assert_array_equal(track, [0, 0, 1, 1, 1, 0])


def test_threshold_min_hits_and_events():
    """Threshold, min_hits, several events, tensors as input, empty input, bad input."""
    # two events (hits 0-4 and 5-9), one track each; a low-score edge is not kept
    src = [0, 1, 2, 3, 5, 6, 7, 2]
    dst = [1, 2, 3, 4, 6, 7, 8, 9]
    scores = [0.9, 0.9, 0.9, 0.9, 0.8, 0.8, 0.8, 0.3]
    for method in ("walkthrough", "components"):
        track = tracks_from_edges(10, src, dst, scores, method=method)
        np.testing.assert_array_equal(track, [0] * 5 + [1] * 4 + [-1])
        track = tracks_from_edges(10, src, dst, scores, method=method, min_hits=5)
        np.testing.assert_array_equal(track, [0] * 5 + [-1] * 5)
        track = tracks_from_edges(10, src, dst, scores, method=method, threshold=0.85)
        np.testing.assert_array_equal(track, [0] * 5 + [-1] * 5)
        assert (tracks_from_edges(4, [], [], [], method=method) == -1).all()
        track = tracks_from_edges(3, torch.tensor([0, 1]), torch.tensor([1, 2]),
                                  torch.tensor([0.9, 0.9]), method=method)
        np.testing.assert_array_equal(track, [0, 0, 0])
    with pytest.raises(UnknownKeyError, match="walkthrough"):
        tracks_from_edges(3, [0], [1], [0.9], method="walk")
    with pytest.raises(BadValueError, match="indices"):
        tracks_from_edges(3, [0], [3], [0.9])
    with pytest.raises(BadValueError, match="one entry per edge"):
        tracks_from_edges(3, [0, 1], [1], [0.9])
    with pytest.raises(ConfigError, match="min_hits"):
        tracks_from_edges(3, [0], [1], [0.9], min_hits=0)
