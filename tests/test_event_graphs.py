"""Event graphs against independent per-event references.

Node and edge features against per-event references (the vector library), kNN against
brute force, padding, dropping, PyG round trips, bad input, and the HZZ file read through
the reader with a branch mapping.
"""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import torch
import vector

from hepml.errors import BadValueError, ConfigError, MissingBranchError, UnknownKeyError
from hepml.io import Source
from hepml.representations import (
    EVENT_EDGE_FEATURES,
    EVENT_NODE_FEATURES,
    EventGraphConfig,
    EventGraphs,
    make_event_graphs,
    padded_to_sparse,
)
from hepml.representations.event_graphs import to_pyg

COLLS = ("jet", "electron", "muon", "photon")
ALL_NODE = tuple(EVENT_NODE_FEATURES)
ALL_EDGE = tuple(EVENT_EDGE_FEATURES)
EXTRAS = {"jet": ["btag"], "electron": ["charge"], "muon": ["charge"]}

# torch_geometric's import calls torch.jit.script, which torch 2.13 deprecates (third party)
pyg_warning = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning")


def four_vectors(pt, eta, phi, m):
    """(px, py, pz, E) from (pT, η, φ, m)."""
    px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
    return px, py, pz, np.sqrt(px**2 + py**2 + pz**2 + m**2)


def random_events(n: int, seed: int, max_objects=(7, 2, 3, 2)) -> ak.Array:
    """Events with random objects of every collection (massive: every m² > 0)."""
    rng = np.random.default_rng(seed)
    data = {}
    for coll, most in zip(COLLS, max_objects, strict=True):
        counts = rng.integers(0, most + 1, n)
        tot = int(counts.sum())
        p4 = four_vectors(rng.uniform(5, 200, tot), rng.uniform(-3, 3, tot),
                          rng.uniform(-math.pi, math.pi, tot), rng.uniform(0.1, 20, tot))
        for q, v in zip(("px", "py", "pz", "energy"), p4, strict=True):
            data[f"{coll}_{q}"] = ak.unflatten(v, counts)
        if coll == "jet":
            data["jet_btag"] = ak.unflatten(rng.uniform(0, 1, tot), counts)
        elif coll in ("electron", "muon"):
            data[f"{coll}_charge"] = ak.unflatten(rng.choice([-1, 1], tot).astype(np.int32),
                                                  counts)
    data["met_px"], data["met_py"] = rng.normal(0, 40, n), rng.normal(0, 40, n)
    return ak.Array(data)


def events_from(objects: list[dict[str, list[tuple]]], met=None) -> ak.Array:
    """Events from ``{collection: [(px, py, pz, E, *extras)]}``; extras as in EXTRAS."""
    data = {}
    for coll in COLLS:
        for i, q in enumerate(("px", "py", "pz", "energy", *EXTRAS.get(coll, ()))):
            data[f"{coll}_{q}"] = ak.values_astype(
                ak.Array([[float(o[i]) if i < len(o) else 0.0 for o in ev.get(coll, [])]
                          for ev in objects]),
                np.float64)
    met = met if met is not None else [(0.0, 0.0)] * len(objects)
    data["met_px"] = np.array([m[0] for m in met], dtype=np.float64)
    data["met_py"] = np.array([m[1] for m in met], dtype=np.float64)
    return ak.Array(data)


# ---------------------------------------------------------------- references (loops)

def ref_eta(p) -> float:
    """Pseudorapidity from the polar angle, -ln tan(θ/2)."""
    if p.pt == 0 and p.pz == 0:
        return 0.0
    return -math.log(math.tan(math.atan2(p.pt, p.pz) / 2))


def reference_nodes(events: ak.Array, cfg: EventGraphConfig) -> list[list[dict]]:
    """Per event: the kept nodes in order, each ``{type, p4, eta, extras}``."""
    lists = {f: ak.to_list(events[f]) for f in events.fields}
    out = []
    for i in range(len(events)):
        objs = []
        for t, coll in enumerate(cfg.collections):
            for j in range(len(lists[f"{coll}_px"][i])):
                p = vector.obj(px=lists[f"{coll}_px"][i][j], py=lists[f"{coll}_py"][i][j],
                               pz=lists[f"{coll}_pz"][i][j], E=lists[f"{coll}_energy"][i][j])
                extras = {f"{coll}_{e}": lists[f"{coll}_{e}"][i][j]
                          for e in cfg.extras.get(coll, ())}
                objs.append({"type": t, "p4": p, "eta": ref_eta(p), "extras": extras,
                             "key": (-math.hypot(p.px, p.py), t, j)})
        objs.sort(key=lambda o: o["key"])
        nodes = objs[:cfg.max_nodes - cfg.met]
        if cfg.met:
            mx, my = lists["met_px"][i], lists["met_py"][i]
            met = vector.obj(px=mx, py=my, pz=0.0, E=math.hypot(mx, my))
            nodes = [{"type": len(cfg.collections), "p4": met, "eta": 0.0, "extras": {}},
                     *nodes]
        out.append(nodes)
    return out


def reference_x(nodes: list[dict], cfg: EventGraphConfig) -> np.ndarray:
    """Expected node features of one event's nodes."""
    rows = []
    for node in nodes:
        p, eta = node["p4"], node["eta"]
        pt, e = math.hypot(p.px, p.py), p.E
        mass = math.sqrt(max(p.mass2, 0.0))  # m² clipped at 0 (float32 photons have m² < 0)
        values = {"log_pt": math.log(max(pt, 1e-8)), "log_energy": math.log(max(e, 1e-8)),
                  "eta": eta, "phi": p.phi, "cos_phi": math.cos(p.phi),
                  "sin_phi": math.sin(p.phi), "log_mass": math.log(1 + mass), "mass": mass,
                  "pt": pt, "px": p.px, "py": p.py, "pz": p.pz, "energy": e}
        row = [values[f] for f in cfg.node_features]
        row += [1.0 if node["type"] == t else 0.0
                for t in range(len(cfg.collections) + cfg.met)]
        row += [float(node["extras"].get(f"{c}_{e}", 0.0))
                for c, names in cfg.extras.items() for e in names]
        rows.append(row)
    return np.array(rows).reshape(len(nodes), len(cfg.feature_names))


def reference_edge(centre: dict, nb: dict) -> dict[str, float]:
    """Features of the edge nb -> centre, with the vector library."""
    pi, pj = centre["p4"], nb["p4"]
    deta = nb["eta"] - centre["eta"]
    dphi = pj.deltaphi(pi)
    dr = math.hypot(deta, dphi)
    assert dr == pytest.approx(pj.deltaR(pi), rel=1e-9, abs=1e-9)  # vector agrees
    mass = math.sqrt(max((pi + pj).mass2, 0.0))
    pti, ptj = math.hypot(pi.px, pi.py), math.hypot(pj.px, pj.py)
    return {"delta_eta": deta, "delta_phi": dphi, "delta_r": dr, "mass": mass,
            "log_mass": math.log1p(mass), "log_kt": math.log(max(min(pti, ptj) * dr, 1e-8)),
            "z": min(pti, ptj) / (pti + ptj)}


def brute_knn(nodes: list[dict], k: int) -> list[list[int]]:
    """Per centre: the k nearest other nodes in (η, φ), Δφ wrapped, ties by index."""
    out = []
    for i, a in enumerate(nodes):
        cands = []
        for j, b in enumerate(nodes):
            if j != i:
                dphi = (b["p4"].phi - a["p4"].phi + math.pi) % (2 * math.pi) - math.pi
                cands.append(((b["eta"] - a["eta"]) ** 2 + dphi**2, j))
        out.append([j for _, j in sorted(cands)[:k]])
    return out


def neighbours_of(g: dict[str, torch.Tensor], ev: int, i: int) -> list[int]:
    """The real neighbours of node ``i`` of event ``ev``, in slot order."""
    return [j for j in g["neighbors"][ev, i].tolist() if j >= 0]


# ---------------------------------------------------------------- tests

def test_hand_made_event_features_order_and_met():
    """Hand-computed features, node order, one-hot, extras and the MET node."""
    # jets of pT 50 (30, 40) and 10, a muon of pT 20, an electron of pT 5; MET (3, 4)
    ev = events_from([{"jet": [(30, 40, 10, 70, 0.9), (0, 10, 0, 11, 0.1)],
                       "muon": [(20, 0, 5, 25, -1)], "electron": [(0, -5, 1, 6, 1)]}],
                     met=[(3.0, 4.0)])
    cfg = EventGraphConfig(max_nodes=6, extras=EXTRAS, node_features=ALL_NODE)
    g = make_event_graphs(ev, cfg)
    assert g["mask"][0].tolist() == [True] * 5 + [False]
    feats = dict(zip(cfg.feature_names, g["x"][0].T, strict=True))
    # MET first (pT = hypot(3, 4) = 5, η = 0, massless), then jet 50, muon 20, jet 10, e 5
    np.testing.assert_allclose(feats["pt"][:5], [5, 50, 20, 10, 5], rtol=1e-6)
    assert feats["is_met"].tolist() == [1, 0, 0, 0, 0, 0]
    assert feats["is_jet"].tolist() == [0, 1, 0, 1, 0, 0]
    assert feats["is_muon"].tolist() == [0, 0, 1, 0, 0, 0]
    assert feats["is_electron"].tolist() == [0, 0, 0, 0, 1, 0]
    assert feats["is_photon"].sum() == 0
    np.testing.assert_allclose(feats["jet_btag"], [0, 0.9, 0, 0.1, 0, 0], rtol=1e-6)
    assert feats["muon_charge"].tolist() == [0, 0, -1, 0, 0, 0]
    assert feats["electron_charge"].tolist() == [0, 0, 0, 0, 1, 0]
    assert feats["eta"][0] == 0 and feats["mass"][0] == 0 and feats["energy"][0] == 5
    assert feats["pz"][0] == 0
    # the leading jet: pT 50, φ = atan2(40, 30), η = asinh(10 / 50), m² = 70² - 2600
    np.testing.assert_allclose(feats["phi"][1], math.atan2(40, 30), rtol=1e-6)
    np.testing.assert_allclose(feats["cos_phi"][1], 0.6, rtol=1e-6)
    np.testing.assert_allclose(feats["sin_phi"][1], 0.8, rtol=1e-6)
    np.testing.assert_allclose(feats["eta"][1], -math.log(math.tan(math.atan2(50, 10) / 2)),
                               rtol=1e-6)
    np.testing.assert_allclose(feats["log_mass"][1], math.log1p(math.sqrt(4900 - 2600)),
                               rtol=1e-6)
    np.testing.assert_allclose(feats["log_pt"][1], math.log(50), rtol=1e-6)
    np.testing.assert_allclose(feats["log_energy"][1], math.log(70), rtol=1e-6)
    # padding is all zero; a full graph of 5 nodes has 20 edges, each ordered pair once
    assert (g["x"][0, 5] == 0).all() and (g["neighbors"][0, 5] == -1).all()
    assert g["neighbors"].shape == (1, 6, 5) and g["edge_attr"].shape == (1, 6, 5, 2)
    edges = {(j, i) for i in range(6) for j in neighbours_of(g, 0, i)}
    assert len(edges) == 20 and edges == {(j, i) for i in range(5) for j in range(5) if i != j}
    assert (g["edge_attr"][0][g["neighbors"][0] < 0] == 0).all()


@pytest.mark.parametrize("max_nodes", [20, 6])
def test_random_events_match_per_event_reference(max_nodes):
    """Every node and edge feature of full graphs equals the reference."""
    events = random_events(40, seed=max_nodes)
    cfg = EventGraphConfig(max_nodes=max_nodes, extras=EXTRAS, node_features=ALL_NODE,
                           edge_features=ALL_EDGE)
    g = EventGraphs(cfg)(events)
    n, f = max_nodes, len(cfg.feature_names)
    assert g["x"].shape == (40, n, f) and g["x"].dtype == torch.float32
    assert g["neighbors"].shape == (40, n, n - 1) and g["neighbors"].dtype == torch.int64
    assert g["edge_attr"].shape == (40, n, n - 1, len(ALL_EDGE))
    assert g["mask"].shape == (40, n) and g["mask"].dtype == torch.bool
    refs = reference_nodes(events, cfg)
    capped = 0
    for ev, nodes in enumerate(refs):
        m = len(nodes)
        capped += m == max_nodes
        assert g["mask"][ev].tolist() == [True] * m + [False] * (n - m)
        np.testing.assert_allclose(g["x"][ev, :m].numpy(), reference_x(nodes, cfg),
                                   rtol=1e-5, atol=1e-5)
        assert (g["x"][ev, m:] == 0).all()
        # full graph: exactly m(m-1) edges, each centre receives from all others in order
        assert int((g["neighbors"][ev] >= 0).sum()) == m * (m - 1)
        for i in range(m):
            assert neighbours_of(g, ev, i) == [j for j in range(m) if j != i]
            for s, j in enumerate(neighbours_of(g, ev, i)):
                ref = reference_edge(nodes[i], nodes[j])
                np.testing.assert_allclose(g["edge_attr"][ev, i, s].numpy(),
                                           [ref[name] for name in ALL_EDGE],
                                           rtol=1e-5, atol=1e-5)
        assert (g["edge_attr"][ev][g["neighbors"][ev] < 0] == 0).all()
    if max_nodes == 6:
        assert capped > 10  # the dropping was exercised


def test_max_nodes_keeps_the_hardest_objects_and_always_met():
    """Dropping keeps the hardest objects and the MET node; equal pT by collection."""
    ev = events_from([{"jet": [(5, 0, 0, 6), (80, 0, 0, 81)], "photon": [(0, 60, 0, 60)],
                       "muon": [(0, -70, 0, 71)], "electron": [(1, 0, 0, 1.1)]}],
                     met=[(0.5, 0.0)])  # a soft MET: kept all the same
    g = make_event_graphs(ev, EventGraphConfig(max_nodes=4, node_features=("pt",)))
    assert g["mask"].all()
    np.testing.assert_allclose(g["x"][0, :, 0].numpy(), [0.5, 80, 70, 60], rtol=1e-6)
    assert g["x"][0, :, 1:].argmax(1).tolist() == [4, 0, 2, 3]  # met, jet, muon, photon
    # without MET the four hardest objects
    g = make_event_graphs(ev, EventGraphConfig(max_nodes=4, met=False, node_features=("pt",)))
    np.testing.assert_allclose(g["x"][0, :, 0].numpy(), [80, 70, 60, 5], rtol=1e-6)
    # equal pT: the collection listed first, then input order
    ev = events_from([{"photon": [(10, 0, 0, 10)], "jet": [(0, 10, 0, 11), (-10, 0, 0, 12)]}])
    g = make_event_graphs(ev, EventGraphConfig(max_nodes=3, met=False,
                                               node_features=("energy",)))
    np.testing.assert_allclose(g["x"][0, :, 0].numpy(), [11, 12, 10])


@pytest.mark.parametrize("k", [1, 3, 8, 25])
def test_knn_matches_brute_force(k):
    """The kNN graphs and their edge features equal a brute-force reference."""
    events = random_events(30, seed=k)
    cfg = EventGraphConfig(edges="knn", k=k, max_nodes=12, edge_features=ALL_EDGE)
    g = make_event_graphs(events, cfg)
    assert g["neighbors"].shape == (30, 12, k) and g["edge_attr"].shape == (30, 12, k, 7)
    for ev, nodes in enumerate(reference_nodes(events, cfg)):
        ref = brute_knn(nodes, k)
        for i in range(12):
            if i >= len(nodes):  # padded centres have no neighbour
                assert (g["neighbors"][ev, i] == -1).all()
                continue
            got = g["neighbors"][ev, i].tolist()
            # k may exceed the multiplicity: the remaining slots are -1
            assert got == ref[i] + [-1] * (k - len(ref[i]))
            for s, j in enumerate(ref[i]):
                want = reference_edge(nodes[i], nodes[j])
                np.testing.assert_allclose(g["edge_attr"][ev, i, s].numpy(),
                                           [want[name] for name in ALL_EDGE],
                                           rtol=1e-5, atol=1e-5)
        assert (g["neighbors"][ev] < len(nodes)).all()  # padded nodes are never neighbours
    assert (g["edge_attr"][g["neighbors"] < 0] == 0).all()


def test_knn_wraps_phi_and_breaks_ties_by_index():
    """Objects across φ = ±π are near; equal distances go to the smaller index."""
    def at(pt, phi):
        return (pt * math.cos(phi), pt * math.sin(phi), 0.0, pt)

    # φ = 3.1 and -3.1 are 0.083 apart across ±π; φ = 2.5 is 0.6 from 3.1
    ev = events_from([{"jet": [at(50, 3.1), at(40, -3.1), at(30, 2.5)]}])
    g = make_event_graphs(ev, EventGraphConfig(edges="knn", k=1, met=False, max_nodes=3,
                                               edge_features=("delta_phi", "delta_r")))
    assert g["neighbors"][0, :, 0].tolist() == [1, 0, 0]
    dphi = 2 * math.pi - 6.2
    # the edge 1 -> 0: Δφ = -3.1 - 3.1 wraps to +0.083
    np.testing.assert_allclose(g["edge_attr"][0, 0, 0].numpy(), [dphi, dphi], rtol=1e-5)
    # φ = +0.5 and -0.5 are equally far from φ = 0: the smaller index (harder) first
    ev = events_from([{"jet": [at(50, 0.0), at(20, -0.5), at(40, 0.5), at(10, 2.0)]}])
    g = make_event_graphs(ev, EventGraphConfig(edges="knn", k=3, met=False, max_nodes=5))
    assert g["neighbors"][0, 0].tolist() == [1, 2, 3]  # node 1 is φ = 0.5 (pT 40)
    again = make_event_graphs(ev, EventGraphConfig(edges="knn", k=3, met=False, max_nodes=5))
    assert torch.equal(g["neighbors"], again["neighbors"])


def test_empty_events_single_objects_and_empty_chunks():
    """Events without objects, with one object, and chunks without events."""
    ev = events_from([{}, {"muon": [(10, 0, 0, 10.1)]}, {"jet": [(1, 0, 0, 2), (0, 1, 0, 2)]}],
                     met=[(1.0, 0.0)] * 3)
    g = make_event_graphs(ev, EventGraphConfig(met=False, max_nodes=4))
    assert not g["mask"][0].any() and (g["x"][0] == 0).all()
    assert (g["neighbors"][0] == -1).all() and (g["edge_attr"][0] == 0).all()
    assert g["mask"][1].tolist() == [True, False, False, False]
    assert (g["neighbors"][1] == -1).all()  # one object: no edge
    assert int((g["neighbors"][2] >= 0).sum()) == 2
    assert EventGraphs({"met": False}).count_empty(ev) == 1
    # with MET: the empty event is the MET node alone, the single object has one partner
    g = make_event_graphs(ev, EventGraphConfig(max_nodes=4))
    assert g["mask"][0].tolist() == [True, False, False, False]
    assert (g["neighbors"][0] == -1).all()
    assert int((g["neighbors"][1] >= 0).sum()) == 2
    assert EventGraphs().count_empty(ev) == 0
    # kNN graphs of the same events
    g = make_event_graphs(ev, EventGraphConfig(met=False, edges="knn", k=3, max_nodes=4))
    assert (g["neighbors"][:2] == -1).all() and g["neighbors"][2, 0].tolist() == [1, -1, -1]
    # a chunk without events, and max_nodes = 1 (no edge slots)
    for cfg in (EventGraphConfig(), EventGraphConfig(edges="knn"),
                EventGraphConfig(max_nodes=1, met=False)):
        out = make_event_graphs(ev[:0], cfg)
        assert {k: tuple(v.shape) for k, v in out.items()} == {
            k: (0, *s) for k, s in cfg.shapes.items()}
    g = make_event_graphs(ev, EventGraphConfig(max_nodes=1))
    assert g["mask"].all() and g["neighbors"].shape == (3, 1, 0)


def test_bad_values_are_errors_naming_field_and_event():
    """NaN, inf, mismatched and missing fields are errors naming field and event."""
    events = random_events(6, seed=1, max_objects=(3, 2, 2, 2))
    data = {f: events[f] for f in events.fields}
    pz = ak.to_list(data["jet_pz"])
    bad_event = next(i for i in range(2, 6) if len(pz[i]))
    pz[bad_event][-1] = float("nan")
    with pytest.raises(BadValueError, match="'jet_pz'.*event " + str(bad_event)) as info:
        make_event_graphs({**data, "jet_pz": ak.Array(pz)})
    assert info.value.event_index == bad_event and info.value.branch == "jet_pz"
    met = np.asarray(data["met_px"]).copy()
    met[4] = np.inf
    with pytest.raises(BadValueError, match="'met_px'.*event 4"):
        make_event_graphs({**data, "met_px": met})
    btag = ak.to_list(data["jet_btag"])
    btag[bad_event][0] = float("inf")
    with pytest.raises(BadValueError, match="jet_btag"):
        make_event_graphs({**data, "jet_btag": ak.Array(btag)}, EventGraphConfig(extras=EXTRAS))
    # fields of one collection that do not belong together
    short = ak.to_list(data["muon_py"])
    short[0] = [*short[0], 1.0]
    with pytest.raises(BadValueError, match="muon_py.*event 0"):
        make_event_graphs({**data, "muon_py": ak.Array(short)})
    with pytest.raises(BadValueError, match="jagged"):
        make_event_graphs({**data, "photon_px": np.zeros(6)})
    with pytest.raises(BadValueError, match="met_py"):
        make_event_graphs({**data, "met_py": np.zeros(5)})
    # a missing field, in memory and through the reader's branch mapping
    with pytest.raises(MissingBranchError, match="photon_energy"):
        make_event_graphs({f: v for f, v in data.items() if f != "photon_energy"})


def test_missing_branch_through_the_reader(realdata):
    """A branch mapping to a missing branch fails in the reader, with a suggestion."""
    cfg = EventGraphConfig(collections=("muon",))
    branches = {"muon_px": "Muon_Px", "muon_py": "Muon_Py", "muon_pz": "Muon_Pz",
                "muon_energy": "Muon_Energy", "met_px": "MET_px", "met_py": "MET_py"}
    with pytest.raises(MissingBranchError, match="Muon_Energy.*Did you mean 'Muon_E"):
        Source(str(realdata / "uproot-HZZ.root"), "events", cfg.required_fields,
               branches=branches)


def test_config_checks_and_round_trip():
    """Unknown names suggest the nearest; the config round-trips through plain data."""
    with pytest.raises(UnknownKeyError, match="Did you mean 'log_pt'"):
        EventGraphConfig(node_features=("log_ptt",))
    with pytest.raises(UnknownKeyError, match="Did you mean 'delta_r'"):
        EventGraphConfig(edge_features=("delta_rr",))
    with pytest.raises(UnknownKeyError, match="Did you mean 'muon'"):
        EventGraphConfig(collections=("jet", "muons"))
    with pytest.raises(UnknownKeyError, match="Did you mean 'jet'"):
        EventGraphConfig(collections=("jet", "muon"), extras={"jets": ["btag"]})
    with pytest.raises(UnknownKeyError, match="max_nodes"):
        EventGraphConfig.from_dict({"max_node": 10})
    with pytest.raises(ConfigError, match="edges"):
        EventGraphConfig.from_dict({"edges": "star"})
    with pytest.raises(ConfigError, match="edges"):
        EventGraphConfig(edges="star")
    with pytest.raises(ConfigError, match="max_nodes"):
        EventGraphConfig(max_nodes=0)
    with pytest.raises(ConfigError, match="k"):
        EventGraphConfig(k=0)
    with pytest.raises(ConfigError, match="twice"):
        EventGraphConfig(collections=("jet", "jet"))
    with pytest.raises(ConfigError, match="no nodes"):
        EventGraphConfig(collections=(), met=False)
    with pytest.raises(ConfigError, match="extras.jet"):
        EventGraphConfig(extras={"jet": ["px"]})
    cfg = EventGraphConfig.from_dict({"collections": ["jet", "muon"],
                                      "extras": {"muon": "charge", "jet": ["btag"]},
                                      "edges": "knn", "k": 4, "max_nodes": 10})
    assert cfg.extras == {"jet": ("btag",), "muon": ("charge",)}  # in collections order
    assert cfg.required_fields == ("jet_px", "jet_py", "jet_pz", "jet_energy", "muon_px",
                                   "muon_py", "muon_pz", "muon_energy", "jet_btag",
                                   "muon_charge", "met_px", "met_py")
    assert cfg.feature_names == ("log_pt", "log_energy", "eta", "cos_phi", "sin_phi",
                                 "log_mass", "is_jet", "is_muon", "is_met", "jet_btag",
                                 "muon_charge")
    tr = EventGraphs(cfg)
    assert tr.output_shape == {"x": (10, 11), "neighbors": (10, 4), "edge_attr": (10, 4, 2),
                               "mask": (10,)}
    assert EventGraphs.from_dict(tr.to_dict()) == tr and hash(cfg) == hash(tr.config)
    assert tr.to_dict()["extras"] == {"jet": ["btag"], "muon": ["charge"]}
    assert "edges='knn'" in repr(tr)
    assert EventGraphs().output_shape["neighbors"] == (20, 19)


def test_input_not_modified():
    """The transform does not write into its input."""
    events = random_events(5, seed=3)
    before = ak.to_list(events)
    EventGraphs({"extras": EXTRAS})(events)
    EventGraphs({"edges": "knn", "k": 2})(events)
    assert ak.to_list(events) == before


def dense_from_sparse(x_flat, edge_index, attr, batch, b, n, k):
    """Rebuild padded tensors from the flat layout (the inverse, with loops)."""
    x = torch.zeros(b, n, x_flat.shape[1])
    nbr = torch.full((b, n, k), -1)
    ea = torch.zeros(b, n, k, attr.shape[1])
    first = {}
    for node, ev in enumerate(batch.tolist()):
        first.setdefault(ev, node)
        x[ev, node - first[ev]] = x_flat[node]
    fill = torch.zeros(b, n, dtype=torch.long)
    for e, (src, dst) in enumerate(edge_index.t().tolist()):
        ev = int(batch[dst])
        i, j = dst - first[ev], src - first[ev]
        nbr[ev, i, fill[ev, i]], ea[ev, i, fill[ev, i]] = j, attr[e]
        fill[ev, i] += 1
    return x, nbr, ea


@pyg_warning
@pytest.mark.parametrize("edges", ["full", "knn"])
def test_padded_to_sparse_and_to_pyg_round_trip(edges):
    """The flat layout inverts back to the padded one and equals PyG's own batching."""
    from torch_geometric.data import Batch, Data

    events = random_events(12, seed=5, max_objects=(4, 1, 2, 1))
    cfg = EventGraphConfig(max_nodes=8, met=False, edges=edges, k=3, extras=EXTRAS)
    g = make_event_graphs(events, cfg)
    sizes = g["mask"].sum(1)
    assert len(set(sizes.tolist())) > 3 and 0 in sizes.tolist()  # different sizes, empties
    x_flat, edge_index, attr, batch = padded_to_sparse(**g)
    assert x_flat.shape == (int(sizes.sum()), g["x"].shape[-1])
    assert edge_index.shape == (2, int((g["neighbors"] >= 0).sum()))
    assert torch.equal(batch, torch.repeat_interleave(torch.arange(12), sizes))
    assert torch.equal(batch[edge_index[0]], batch[edge_index[1]])  # edges stay in an event
    x, nbr, ea = dense_from_sparse(x_flat, edge_index, attr, batch, 12, 8, g["neighbors"].shape[2])
    assert torch.equal(x, g["x"]) and torch.equal(nbr, g["neighbors"])
    assert torch.equal(ea, g["edge_attr"])
    # to_pyg equals a Batch made from per-event Data objects
    datas = []
    for ev in range(12):
        n = int(sizes[ev])
        src, dst, att = [], [], []
        for i in range(n):
            for s, j in enumerate(neighbours_of(g, ev, i)):
                src.append(j)
                dst.append(i)
                att.append(g["edge_attr"][ev, i, s])
        datas.append(Data(x=g["x"][ev, :n],
                          edge_index=torch.tensor([src, dst], dtype=torch.long).view(2, -1),
                          edge_attr=torch.stack(att) if att else torch.zeros(0, 2)))
    ref = Batch.from_data_list(datas)
    got = EventGraphs(cfg).to_pyg(events)
    assert got.num_graphs == 12
    for key in ("x", "edge_index", "edge_attr", "batch", "ptr"):
        assert torch.equal(getattr(got, key), getattr(ref, key)), key
    for ev, data in enumerate(got.to_data_list()):
        assert torch.equal(data.edge_index, datas[ev].edge_index)
        assert torch.equal(data.x, datas[ev].x)
    assert torch.equal(got[3].edge_attr, datas[3].edge_attr)
    assert torch.equal(to_pyg(g).edge_index, ref.edge_index)


def test_padded_to_sparse_drops_padding_and_checks_shapes():
    """Slots touching padded nodes are not edges; bad shapes are errors."""
    x = torch.arange(2 * 3 * 1, dtype=torch.float32).view(2, 3, 1)
    mask = torch.tensor([[True, False, True], [False, False, True]])
    # slots pointing at a padded node or from a padded centre are not edges
    nbr = torch.tensor([[[2, 1], [0, 2], [0, -1]], [[2, -1], [2, -1], [-1, -1]]])
    x_flat, edge_index, attr, batch = padded_to_sparse(x, nbr, None, mask)
    assert x_flat[:, 0].tolist() == [0, 2, 5] and batch.tolist() == [0, 0, 1]
    assert edge_index.tolist() == [[1, 0], [0, 1]] and attr is None
    with pytest.raises(BadValueError, match="neighbors"):
        padded_to_sparse(x, torch.full((2, 3, 2), 3), None, mask)
    with pytest.raises(BadValueError, match="mask"):
        padded_to_sparse(x, nbr, None, mask[:, :2])
    with pytest.raises(BadValueError, match="edge_attr"):
        padded_to_sparse(x, nbr, torch.zeros(2, 3, 1, 1), mask)


def test_hzz_file_through_the_reader(realdata):
    """The HZZ file's objects become nodes, counted per collection, capped."""
    import uproot

    path = realdata / "uproot-HZZ.root"
    branches = {"met_px": "MET_px", "met_py": "MET_py", "jet_btag": "Jet_btag",
                "muon_charge": "Muon_Charge", "electron_charge": "Electron_Charge"}
    for ours, theirs in (("jet", "Jet"), ("muon", "Muon"), ("electron", "Electron"),
                         ("photon", "Photon")):
        branches.update({f"{ours}_px": f"{theirs}_Px", f"{ours}_py": f"{theirs}_Py",
                         f"{ours}_pz": f"{theirs}_Pz", f"{ours}_energy": f"{theirs}_E"})
    tr = EventGraphs({"extras": EXTRAS, "max_nodes": 6})
    src = Source(str(path), "events", tr.required_fields, branches=branches, step_size=1000)
    chunks = [tr(c.arrays) for c in src]
    g = {k: torch.cat([c[k] for c in chunks]) for k in chunks[0]}
    with uproot.open(path) as f:
        t = f["events"]
        n = {c: t[f"N{c}"].array(library="np").astype(np.int64)
             for c in ("Jet", "Muon", "Electron", "Photon")}
        met = np.hypot(t["MET_px"].array(library="np"), t["MET_py"].array(library="np"))
        btag = t["Jet_btag"].array()
    total = sum(n.values())
    assert len(g["mask"]) == src.num_entries == 2421
    nodes = g["mask"].sum(1).numpy()
    np.testing.assert_array_equal(nodes, np.minimum(total, 5) + 1)
    assert (total > 5).any() and (total == 0).any()  # capping and object-less events occur
    names = tr.config.feature_names
    onehot = {c: g["x"][..., names.index(f"is_{c.lower()}")].sum(1).numpy() for c in n}
    whole = total <= 5  # nothing dropped: every object is a node of its type
    for c in n:
        np.testing.assert_array_equal(onehot[c][whole], n[c][whole])
    # MET node: pT = hypot(MET_px, MET_py); b-tag values of the jets that are nodes
    np.testing.assert_allclose(np.exp(g["x"][:, 0, names.index("log_pt")].numpy()),
                               np.maximum(met, 1e-8), rtol=1e-5)
    is_jet = g["x"][..., names.index("is_jet")] == 1
    got = np.sort(g["x"][..., names.index("jet_btag")][is_jet & torch.from_numpy(whole)[:, None]]
                  .numpy())
    want = np.sort(ak.to_numpy(ak.flatten(btag[whole])).astype(np.float32))
    np.testing.assert_array_equal(got, want)
    # a few events in detail against the reference
    arrays = src.read(src.chunks[0])
    refs = reference_nodes(arrays[:15], tr.config)
    for ev, ref in enumerate(refs):
        np.testing.assert_allclose(g["x"][ev, :len(ref)].numpy(), reference_x(ref, tr.config),
                                   rtol=1e-4, atol=1e-4)
