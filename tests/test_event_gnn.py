"""EventGNN: each layer kind runs and learns a toy task; invariances; empty graphs.

Every layer kind runs forward and backward, is invariant to node order and padding, scores
an event the same alone or in a batch, handles empty graphs, and learns a pair-mass toy.
"""

from __future__ import annotations

import copy
import math
import pickle

import awkward as ak
import numpy as np
import pytest
import torch

from hepml.errors import BadValueError, ConfigError, UnknownKeyError
from hepml.models import MODELS, EventGNN, build_model
from hepml.representations import EventGraphConfig, make_event_graphs

# torch_geometric's import calls torch.jit.script, which torch 2.13 deprecates (third party)
pytestmark = pytest.mark.filterwarnings(
    "ignore:`torch.jit.script` is deprecated:DeprecationWarning")

LAYERS = ["gcn", "gat", "edgeconv", "interaction"]
SMALL = {"hidden": 16, "num_layers": 2, "heads": 2}


@pytest.fixture(autouse=True)
def one_thread():
    """Small graphs run fastest on one thread (and the test machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def n_params(model: torch.nn.Module) -> int:
    """Trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def random_events(n: int, seed: int) -> ak.Array:
    """Events with random objects of every collection."""
    rng = np.random.default_rng(seed)
    data = {}
    for coll, most in (("jet", 6), ("electron", 2), ("muon", 2), ("photon", 1)):
        counts = rng.integers(0, most + 1, n)
        tot = int(counts.sum())
        pt, eta = rng.uniform(5, 150, tot), rng.uniform(-2.5, 2.5, tot)
        phi, m = rng.uniform(-math.pi, math.pi, tot), rng.uniform(0, 10, tot)
        px, py, pz = pt * np.cos(phi), pt * np.sin(phi), pt * np.sinh(eta)
        for q, v in (("px", px), ("py", py), ("pz", pz),
                     ("energy", np.sqrt(px**2 + py**2 + pz**2 + m**2))):
            data[f"{coll}_{q}"] = ak.unflatten(v, counts)
    data["met_px"], data["met_py"] = rng.normal(0, 30, n), rng.normal(0, 30, n)
    return ak.Array(data)


def graphs(n=8, seed=0, **cfg) -> dict[str, torch.Tensor]:
    """Event graphs with an empty event (no MET) and a single-object event."""
    cfg = EventGraphConfig(**{"max_nodes": 10, "met": False, **cfg})
    g = make_event_graphs(random_events(n, seed), cfg)
    g["mask"][0] = False  # an empty graph
    g["neighbors"][0] = -1
    g["mask"][1, 1:] = False  # a single node
    g["neighbors"][1] = -1
    g["neighbors"][~g["mask"]] = -1
    keep = (g["neighbors"] >= 0) & g["mask"].gather(
        1, g["neighbors"].clamp(min=0).flatten(1)).view_as(g["neighbors"])
    g["neighbors"] = torch.where(keep, g["neighbors"], -1)
    g["edge_attr"] = g["edge_attr"] * keep.unsqueeze(-1)
    g["x"] = g["x"] * g["mask"].unsqueeze(-1)
    return g


def model_for(layer: str, g: dict[str, torch.Tensor], **kwargs) -> EventGNN:
    """A small seeded model sized for the graphs ``g``."""
    torch.manual_seed(0)
    return EventGNN(g["x"].shape[-1], g["edge_attr"].shape[-1], layer=layer,
                    **{**SMALL, **kwargs})


def trained_stats(model: EventGNN, g: dict[str, torch.Tensor]) -> EventGNN:
    """Run a few training-mode passes (batch-norm statistics), then switch to eval."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(**g)
    return model.eval()


def test_registered_and_built_from_plain_data():
    """Registered as 'gnn'; bad hyperparameters and inputs are errors."""
    assert MODELS["gnn"] is EventGNN
    model = build_model("gnn", input_dims=5, edge_dims=1, layer="gat", hidden=8, heads=2,
                        num_layers=1, pooling="max", activation="elu", norm="batch")
    x = torch.randn(3, 4, 5)
    nbr = torch.tensor([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]).expand(3, 4, 3)
    out = model(x, nbr, torch.randn(3, 4, 3, 1), torch.ones(3, 4, dtype=torch.bool))
    assert out.shape == (3, 2)
    with pytest.raises(UnknownKeyError, match="Did you mean 'gat'"):
        EventGNN(layer="gatt")
    with pytest.raises(UnknownKeyError, match="mean_max"):
        EventGNN(pooling="mean_maxx")
    with pytest.raises(UnknownKeyError):
        build_model("gnn", layers=2)
    with pytest.raises(ConfigError, match="heads"):
        EventGNN(layer="gat", hidden=30, heads=4)
    with pytest.raises(ConfigError, match="dropout"):
        EventGNN(dropout=1.0)
    with pytest.raises(ConfigError, match="hidden"):
        build_model("gnn", hidden=0)
    with pytest.raises(BadValueError, match="x"):
        EventGNN()(torch.randn(2, 4, 7), nbr[:2], torch.randn(2, 4, 3, 2))
    with pytest.raises(BadValueError, match="edge_attr"):
        EventGNN()(torch.randn(2, 4, 11), nbr[:2], torch.randn(2, 4, 3, 3))


def test_parameter_counts_with_defaults():
    """Parameter counts of the defaults, derived by hand."""
    # input_dims 11, edge_dims 2, hidden 64, 3 layers, heads 4, mean_max pooling, 2 classes.
    # Shared: embedding 11*64+64 + 64*64+64 = 4,928; three LayerNorms 3*128 = 384;
    # head 128*64+64 + 64*2+2 = 8,386. Together 13,698.
    # gcn: 3 * (64*64 + 64) = 12,480.
    # gat (GATv2, 4 heads of 16): per layer two 64x64 linears with bias 8,320, attention
    #   vector 64, edge projection 2*64 = 128, bias 64: 8,576; three: 25,728.
    # edgeconv: per layer 128*64+64 + 64*64+64 = 12,416; three: 37,248.
    # interaction: relational (2*64+2)*64+64 + 4,160 = 12,544 (first layer), then
    #   (3*64)*64+64 + 4,160 = 16,512; object 128*64+64 + 4,160 = 12,416 each layer:
    #   24,960 + 2 * 28,928 = 82,816.
    shared = 4_928 + 384 + 8_386
    assert n_params(EventGNN(layer="gcn")) == shared + 12_480 == 26_178
    assert n_params(EventGNN(layer="gat")) == shared + 25_728 == 39_426
    assert n_params(EventGNN(layer="edgeconv")) == shared + 37_248 == 50_946
    assert n_params(EventGNN()) == shared + 82_816 == 96_514
    assert EventGNN().layer == "interaction"


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("norm", ["layer", "batch"])
def test_forward_backward_and_empty_graphs(layer, norm):
    """Finite logits and gradients for every parameter; empty graphs pool to zeros."""
    g = graphs()
    model = model_for(layer, g, norm=norm)
    out = model(**g)
    assert out.shape == (8, 2) and torch.isfinite(out).all()
    out.sum().backward()
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    model = trained_stats(model, g)
    out = model(**g)
    # the empty graph pools to zeros: its logits are the head's answer to zeros
    width = model.head[0].in_features
    torch.testing.assert_close(out[0], model.head(torch.zeros(1, width))[0])
    # a batch of empty graphs only, and a training batch with a single node
    empty = {k: v[:2].clone() for k, v in g.items()}
    empty["mask"][:] = False
    assert torch.isfinite(model(**empty)).all()
    model.train()
    one = {k: v[1:2] for k, v in g.items()}
    assert torch.isfinite(model(**one)).all()


@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("edges", ["full", "knn"])
def test_node_permutation_and_padding_invariance(layer, edges):
    """Relabelling the nodes of an event or adding padding leaves the output alone."""
    g = graphs(edges=edges, k=3)
    model = trained_stats(model_for(layer, g, norm="batch"), g)
    ref = model(**g)
    # relabel the slots of every event (mixing real and padded slots)
    b, n, k = g["neighbors"].shape
    gen = torch.Generator().manual_seed(1)
    perm = torch.stack([torch.randperm(n, generator=gen) for _ in range(b)])  # new -> old
    inv = torch.argsort(perm, dim=1)  # old -> new
    take = perm.unsqueeze(-1)
    nbr = g["neighbors"].gather(1, take.expand(b, n, k))
    nbr = torch.where(nbr >= 0, inv.gather(1, nbr.clamp(min=0).flatten(1)).view(b, n, k), -1)
    permuted = {"x": g["x"].gather(1, take.expand(b, n, g["x"].shape[-1])),
                "neighbors": nbr,
                "edge_attr": g["edge_attr"][torch.arange(b).view(b, 1), perm],
                "mask": g["mask"].gather(1, perm)}
    torch.testing.assert_close(model(**permuted), ref, atol=1e-5, rtol=1e-5)
    # more padding (garbage in the padded nodes, extra empty neighbour slots)
    extra = 5
    padded = {
        "x": torch.cat([g["x"], torch.randn(b, extra, g["x"].shape[-1]) * 100], 1),
        "neighbors": torch.cat([torch.cat([g["neighbors"], torch.full((b, n, 2), -1)], 2),
                                torch.randint(0, n + extra, (b, extra, k + 2))], 1),
        "edge_attr": torch.cat([torch.cat([g["edge_attr"],
                                           torch.randn(b, n, 2, g["edge_attr"].shape[-1])], 2),
                                torch.randn(b, extra, k + 2, g["edge_attr"].shape[-1])], 1),
        "mask": torch.cat([g["mask"], torch.zeros(b, extra, dtype=torch.bool)], 1)}
    torch.testing.assert_close(model(**padded), ref, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", LAYERS)
def test_batch_equals_events_one_by_one(layer):
    """In eval mode an event scores the same alone as in a batch."""
    g = graphs(n=6, seed=3, met=True)
    model = trained_stats(model_for(layer, g, norm="batch", dropout=0.5), g)
    ref = model(**g)
    alone = torch.cat([model(**{k: v[i:i + 1] for k, v in g.items()}) for i in range(6)])
    torch.testing.assert_close(alone, ref, atol=1e-5, rtol=1e-5)


def test_model_copies_and_pickles():
    """Deep copies, pickles and state dicts reproduce the model."""
    g = graphs(n=3)
    model = trained_stats(model_for("interaction", g), g)
    for other in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        torch.testing.assert_close(other(**g), model(**g))
    fresh = model_for("interaction", g)
    fresh.load_state_dict(model.state_dict())
    torch.testing.assert_close(fresh.eval()(**g), model(**g))


def toy_events(n: int, seed: int) -> tuple[ak.Array, torch.Tensor]:
    """Two muons of pair mass near 91 GeV (class 1) or far from it (class 0).

    Half of the events also hold a soft jet.
    """
    rng = np.random.default_rng(seed)
    m = 6 * n
    pt, eta = rng.uniform(20, 60, (m, 2)), rng.uniform(-2, 2, (m, 2))
    phi = rng.uniform(-math.pi, math.pi, (m, 2))
    mass = np.sqrt(2 * pt[:, 0] * pt[:, 1] * (np.cosh(eta[:, 0] - eta[:, 1])
                                              - np.cos(phi[:, 0] - phi[:, 1])))
    sig = np.flatnonzero(np.abs(mass - 91) < 10)[: n // 2]
    bkg = np.flatnonzero(np.abs(mass - 91) > 30)[: n // 2]
    assert len(sig) == len(bkg) == n // 2
    idx = np.concatenate([sig, bkg])
    y = np.concatenate([np.ones(len(sig)), np.zeros(len(bkg))])
    perm = rng.permutation(len(idx))
    idx, y = idx[perm], y[perm]
    pt, eta, phi = pt[idx], eta[idx], phi[idx]
    n_jets = rng.integers(0, 2, len(idx))
    jet = [rng.uniform(10, 30, n_jets.sum()), rng.uniform(-2, 2, n_jets.sum()),
           rng.uniform(-math.pi, math.pi, n_jets.sum())]
    data = {}
    for coll, (p, e, f), counts in (("muon", (pt, eta, phi), None), ("jet", jet, n_jets)):
        px, py, pz = p * np.cos(f), p * np.sin(f), p * np.sinh(e)
        for q, v in (("px", px), ("py", py), ("pz", pz), ("energy", p * np.cosh(e))):
            data[f"{coll}_{q}"] = ak.Array(v) if counts is None else ak.unflatten(v, counts)
    return ak.Array(data), torch.from_numpy(y).long()


@pytest.fixture(scope="module")
def toy():
    """Graphs and labels of the toy task: training and test events."""
    # the four-vector among the node features lets even GCN (no edge features) find the
    # pair mass from summed node embeddings
    cfg = EventGraphConfig(collections=("muon", "jet"), met=False, max_nodes=4,
                           node_features=("log_pt", "eta", "cos_phi", "sin_phi", "px", "py",
                                          "pz", "energy"))
    (train, y), (test, y_test) = toy_events(8192, 0), toy_events(1024, 1)
    return make_event_graphs(train, cfg), y, make_event_graphs(test, cfg), y_test


@pytest.mark.parametrize("layer", LAYERS)
def test_learns_the_pair_mass_toy(layer, toy):
    """Every layer kind learns the pair-mass toy well above chance on unseen events."""
    g, y, g_test, y_test = toy
    torch.manual_seed(0)
    model = EventGNN(g["x"].shape[-1], g["edge_attr"].shape[-1], layer=layer, hidden=32,
                     num_layers=2, dropout=0.0)
    opt = torch.optim.Adam(model.parameters(), lr=5e-3)
    for step in range(300):  # about one pass over the 8192 training events
        part = slice((step % 32) * 256, (step % 32 + 1) * 256)
        loss = torch.nn.functional.cross_entropy(model(*(v[part] for v in g.values())),
                                                 y[part])
        opt.zero_grad()
        loss.backward()
        opt.step()
    with torch.no_grad():
        accuracy = (model.eval()(**g_test).argmax(1) == y_test).float().mean().item()
    assert accuracy > 0.8, accuracy  # chance: 0.5, on events not trained on


@pytest.mark.cuda
@pytest.mark.parametrize("layer", LAYERS)
def test_same_scores_on_cuda(layer):
    """A model moved to the GPU scores the graphs as on the CPU."""
    g = graphs(seed=4)
    model = trained_stats(model_for(layer, g), g)
    ref = model(**g)
    gpu = copy.deepcopy(model).cuda()
    out = gpu(**{k: v.cuda() for k, v in g.items()})
    torch.testing.assert_close(out.cpu(), ref, atol=1e-4, rtol=1e-4)
