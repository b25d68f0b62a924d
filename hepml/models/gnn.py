"""EventGNN: a message-passing classifier of event graphs.

Takes the padded event graphs of :mod:`hepml.representations.event_graphs` (``x``,
``neighbors``, ``edge_attr``, ``mask``), turns them into PyG's flat layout with
:func:`~hepml.representations.event_graphs.padded_to_sparse` (padded nodes and their
slots are dropped there, so nothing downstream sees padding), and then:

1. embeds every node with an MLP (linear, activation, linear) to ``hidden`` features;
2. applies ``num_layers`` message-passing layers of one kind (``layer``), each followed
   by normalisation, activation and dropout, and added to its input (residual):
   ``h <- h + dropout(act(norm(conv(h))))``;
3. pools each graph's nodes (``global_mean_pool``/``global_max_pool``/``global_add_pool``
   over the real nodes only; a graph without nodes pools to zeros);
4. a dense head (linear, activation, dropout, linear) gives the class logits.

Layers (``layer``):

- ``"gcn"``: :class:`torch_geometric.nn.GCNConv` (T. Kipf and M. Welling,
  arXiv:1609.02907), symmetric normalisation with self-loops. Edge features are not used.
- ``"gat"``: :class:`torch_geometric.nn.GATv2Conv` (S. Brody, U. Alon, E. Yahav,
  arXiv:2105.14491) with ``heads`` attention heads of ``hidden // heads`` features,
  concatenated; the edge features enter the attention scores (``edge_dim``).
- ``"edgeconv"``: :class:`torch_geometric.nn.EdgeConv` (Y. Wang et al., arXiv:1801.07829)
  with an MLP on ``[x_i, x_j - x_i]`` averaged over the neighbours, on the given (static)
  graph. Edge features are not used.
- ``"interaction"``: an interaction network (P. Battaglia et al., "Interaction Networks
  for Learning about Objects, Relations and Physics", arXiv:1612.00222),
  :class:`InteractionLayer`: a relational MLP on ``[x_i, x_j, e_ij]`` gives the effect
  ``e'_ij`` of every edge, the effects are summed at the receiving node ``i``, and an
  object MLP on ``[x_i, Σ_j e'_ij]`` gives the new node features. The effects are the
  edge features of the next layer (added to the previous ones from the second layer on).

Normalisation is over the real nodes only: ``"layer"`` (LayerNorm, per node, the default)
or ``"batch"`` (BatchNorm1d over the nodes of the batch; a training batch with fewer than
two nodes is normalised with the running statistics), or ``"none"``.

The output is independent of the node order within an event, of the amount of padding and
of the values in padded slots; in eval mode an event scores the same alone or in a batch.

``torch_geometric`` is imported on first use (building a model), not with this module.
"""

from __future__ import annotations

import functools
from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from hepml.errors import BadValueError, ConfigError, UnknownKeyError
from hepml.models._export import exporting
from hepml.models._registry import ModelContract, fit_shape, register_model
from hepml.models._registry import activation as _activation
from hepml.representations.event_graphs import padded_to_sparse

# ``InteractionLayer`` is built on first use (it subclasses PyG's ``MessagePassing``) and
# reached as an attribute of this module; it is left out of ``__all__`` for that reason.
__all__ = ["EventGNN", "LAYERS", "POOLINGS"]

#: Message-passing layers of :class:`EventGNN` and what they are.
LAYERS: dict[str, str] = {
    "gcn": "graph convolution (GCNConv); no edge features",
    "gat": "attention (GATv2Conv) with edge features in the scores",
    "edgeconv": "EdgeConv, MLP on [x_i, x_j - x_i]; no edge features",
    "interaction": "interaction network: relational and object MLPs, edge features updated",
}
#: Global pooling choices: which reductions over a graph's real nodes are concatenated.
POOLINGS: dict[str, tuple[str, ...]] = {
    "mean": ("mean",),
    "max": ("max",),
    "sum": ("sum",),
    "mean_max": ("mean", "max"),
}
_NORMS = ("layer", "batch", "none")


def _mlp(n_in: int, n_hidden: int, n_out: int, act: str) -> nn.Sequential:
    return nn.Sequential(nn.Linear(n_in, n_hidden), _activation(act), nn.Linear(n_hidden, n_out))


@functools.cache
def _interaction_class() -> type[nn.Module]:
    """Build :class:`InteractionLayer` (a ``MessagePassing`` subclass) on first use."""
    from torch_geometric.nn import MessagePassing

    class InteractionLayer(MessagePassing):
        """One interaction-network step (Battaglia et al., arXiv:1612.00222).

        The relational MLP maps ``[x_i, x_j, e_ij]`` of every edge ``j -> i`` to an
        effect ``e'_ij``; the effects are summed at ``i``; the object MLP maps
        ``[x_i, Σ_j e'_ij]`` to the new node features. Returns the new node features
        and the effects (the updated edge features).

        Args:
            node_dims: Node features in.
            edge_dims: Edge features in (0 for none).
            hidden: Width of the MLPs, of the effects and of the new node features.
            activation: Activation name from :data:`hepml.models.ACTIVATIONS`.

        Shapes:
            - x: ``[n, node_dims]``; edge_index: ``[2, E]`` (row 0 source ``j``, row 1
              target ``i``); edge_attr: ``[E, edge_dims]``
            - output: ``([n, hidden], [E, hidden])``
        """

        def __init__(self, node_dims: int, edge_dims: int, hidden: int,
                     activation: str = "relu") -> None:
            super().__init__(aggr="sum", flow="source_to_target")
            self.edge_dims = edge_dims
            self.relational = _mlp(2 * node_dims + edge_dims, hidden, hidden, activation)
            self.object = _mlp(node_dims + hidden, hidden, hidden, activation)

        def forward(self, x, edge_index, edge_attr=None):
            """New node features and the effects of the edges (Shapes above)."""
            if edge_attr is None:
                edge_attr = x.new_zeros(edge_index.shape[1], 0)
            effects = self.edge_updater(edge_index, x=x, edge_attr=edge_attr)
            summed = self.propagate(edge_index, effects=effects, size=(x.shape[0], x.shape[0]))
            return self.object(torch.cat([x, summed], dim=-1)), effects

        def edge_update(self, x_i, x_j, edge_attr):
            """The relational MLP on ``[x_i, x_j, e_ij]``."""
            return self.relational(torch.cat([x_i, x_j, edge_attr], dim=-1))

        def message(self, effects):
            """The message of edge ``j -> i`` is its effect."""
            return effects

    # picklable and printed as hepml.models.gnn.InteractionLayer
    InteractionLayer.__module__, InteractionLayer.__qualname__ = __name__, "InteractionLayer"
    globals()["InteractionLayer"] = InteractionLayer
    return InteractionLayer


def __getattr__(name: str) -> Any:
    if name == "InteractionLayer":
        return _interaction_class()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class _BatchNorm(nn.BatchNorm1d):
    """BatchNorm1d that uses the running statistics for a training batch of < 2 nodes."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] < 2:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight,
                                self.bias, False, 0.0, self.eps)
        return super().forward(x)


def _norm(kind: str, width: int) -> nn.Module:
    if kind == "layer":
        return nn.LayerNorm(width)
    if kind == "batch":
        return _BatchNorm(width)
    return nn.Identity()


def _padded_for_export(x: torch.Tensor, neighbors: torch.Tensor,
                       edge_attr: torch.Tensor | None, mask: torch.Tensor | None,
                       ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None, torch.Tensor]:
    """:func:`padded_to_sparse` without shapes that depend on the data, for export.

    Every slot stays: node ``b * N + i`` is slot ``i`` of event ``b``, and one sink node
    is appended. Every neighbour slot is an edge; a slot that :func:`padded_to_sparse`
    drops (no neighbour, or an end that is padding) joins the sink to itself. A real node
    then receives exactly the edges it receives there, in the same order, and padded
    nodes receive none, so real nodes compute the same values; padded nodes and the sink
    belong to an extra graph ``B`` of the returned ``batch``, which the pooling drops.
    """
    b, n, f = x.shape
    k = neighbors.shape[2]
    device = x.device
    mask = (torch.ones(b, n, dtype=torch.bool, device=device) if mask is None
            else mask.reshape(b, n).to(device=device, dtype=torch.bool))
    flat_mask = mask.reshape(-1)
    neighbors = neighbors.to(device=device, dtype=torch.long)
    source = neighbors.clamp(min=0) + (torch.arange(b, device=device) * n).view(b, 1, 1)
    target = torch.arange(b * n, device=device).view(b, n, 1).expand(b, n, k)
    edge = (neighbors >= 0) & mask.unsqueeze(-1) & flat_mask[source]
    sink = torch.full_like(source, b * n)
    edge_index = torch.stack([torch.where(edge, source, sink).reshape(-1),
                              torch.where(edge, target, sink).reshape(-1)])
    nodes = torch.cat([x.reshape(b * n, f), x.new_zeros(1, f)])
    attr = None if edge_attr is None else edge_attr.reshape(b * n * k, edge_attr.shape[-1])
    event = torch.arange(b * n, device=device) // n
    batch = torch.cat([torch.where(flat_mask, event, b), event.new_full((1,), b)])
    return nodes, edge_index, attr, batch


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"{name}: expected an integer >= {low}, got {value!r}")
    return value


@register_model("gnn", data_args=("input_dims", "edge_dims", "num_classes"))
class EventGNN(nn.Module):
    r"""Message-passing classifier of event graphs (see the module docstring).

    Args:
        input_dims: Node features (``F``). Default 11, the default
            :class:`hepml.representations.EventGraphConfig` (six kinematic features and a
            five-slot type one-hot).
        edge_dims: Edge features (``E``), 0 for none. Default 2, the default config's
            ``delta_r`` and ``log_mass``.
        num_classes: Output classes; the model returns logits.
        layer: ``"interaction"`` (default), ``"gat"``, ``"edgeconv"`` or ``"gcn"``
            (:data:`LAYERS`).
        hidden: Width of the node features (and of the interaction network's edges).
        num_layers: Number of message-passing layers.
        heads: Attention heads of ``"gat"``; must divide ``hidden``.
        dropout: Dropout after every layer and in the head.
        pooling: ``"mean_max"`` (default: both, concatenated), ``"mean"``, ``"max"`` or
            ``"sum"`` over a graph's real nodes (:data:`POOLINGS`).
        activation: Activation name from :data:`hepml.models.ACTIVATIONS`.
        norm: ``"layer"`` (default), ``"batch"`` or ``"none"``, over real nodes only.
        head_hidden: Width of the head's hidden layer (default ``hidden``).

    Shapes:
        - x: ``[B, N, input_dims]``
        - neighbors: ``[B, N, K]`` (int), the node sending to each centre, -1 for none
        - edge_attr: ``[B, N, K, edge_dims]`` (may be ``None`` when ``edge_dims == 0``)
        - mask: ``[B, N]``, True for real nodes; ``None``: all
        - output: ``[B, num_classes]`` logits
    """

    contract = ModelContract(
        inputs=("x", "neighbors", "edge_attr", "mask"), outputs=("logits",),
        axes={"x": {0: "batch", 1: "nodes"},
              "neighbors": {0: "batch", 1: "nodes", 2: "neighbors"},
              "edge_attr": {0: "batch", 1: "nodes", 2: "neighbors"},
              "mask": {0: "batch", 1: "nodes"}},
        what="EventGNN: class logits of padded event graphs (message passing inside the graph)",
        descriptions={
            "x": "node features [batch, nodes, features], 0 at padding",
            "neighbors": "[batch, nodes, neighbors] int64: the node sending to each centre, "
                         "-1 for no edge",
            "edge_attr": "[batch, nodes, neighbors, edge features], 0 where no edge",
            "mask": "[batch, nodes] bool, true for real nodes",
            "logits": "class logits [batch, classes]; softmax over axis 1 gives the scores"},
        inside="no normalisation of the inputs inside the graph: node and edge features are "
               "the representation's; layer or batch normalisation between layers is part "
               "of the network",
        default_representation="event_graph")

    @classmethod
    def data_kwargs(cls, shape: Any, *, num_classes: int) -> dict[str, Any]:
        """``input_dims`` and ``edge_dims`` from the graphs' ``x`` and ``edge_attr``."""
        shape = fit_shape("gnn", shape, "event graphs (x, neighbors, edge_attr, mask)",
                          keys=("x", "edge_attr"))
        return {"input_dims": int(shape["x"][-1]), "edge_dims": int(shape["edge_attr"][-1]),
                "num_classes": num_classes}

    def __init__(
        self,
        input_dims: int = 11,
        edge_dims: int = 2,
        num_classes: int = 2,
        layer: str = "interaction",
        hidden: int = 64,
        num_layers: int = 3,
        heads: int = 4,
        dropout: float = 0.1,
        pooling: str = "mean_max",
        activation: str = "relu",
        norm: str = "layer",
        head_hidden: int | None = None,
    ) -> None:
        super().__init__()
        if layer not in LAYERS:
            raise UnknownKeyError(str(layer), LAYERS, where="model (gnn).layer")
        if pooling not in POOLINGS:
            raise UnknownKeyError(str(pooling), POOLINGS, where="model (gnn).pooling")
        if norm not in _NORMS:
            raise UnknownKeyError(str(norm), _NORMS, where="model (gnn).norm")
        _check_int("input_dims", input_dims, 1)
        _check_int("edge_dims", edge_dims, 0)
        _check_int("num_classes", num_classes, 1)
        _check_int("hidden", hidden, 1)
        _check_int("num_layers", num_layers, 0)
        _check_int("heads", heads, 1)
        head_hidden = _check_int("head_hidden", hidden if head_hidden is None
                                 else head_hidden, 1)
        if layer == "gat" and hidden % heads:
            raise ConfigError(f"heads: {heads} heads must divide hidden = {hidden} (the "
                              "heads are concatenated)")
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise ConfigError(f"dropout: expected a number in [0, 1), got {dropout!r}")
        self.input_dims, self.edge_dims, self.num_classes = input_dims, edge_dims, num_classes
        self.layer, self.pooling = layer, pooling

        import torch_geometric.nn as pyg  # heavy: imported when a model is built

        self._pools = {"mean": pyg.global_mean_pool, "max": pyg.global_max_pool,
                       "sum": pyg.global_add_pool}
        self.embed = _mlp(input_dims, hidden, hidden, activation)
        self.convs = nn.ModuleList()
        for i in range(num_layers):
            if layer == "gcn":
                conv: nn.Module = pyg.GCNConv(hidden, hidden)
            elif layer == "gat":
                conv = pyg.GATv2Conv(hidden, hidden // heads, heads=heads, concat=True,
                                     edge_dim=edge_dims or None)
            elif layer == "edgeconv":
                conv = pyg.EdgeConv(_mlp(2 * hidden, hidden, hidden, activation), aggr="mean")
            else:
                conv = _interaction_class()(hidden, edge_dims if i == 0 else hidden, hidden,
                                            activation)
            self.convs.append(conv)
        self.norms = nn.ModuleList(_norm(norm, hidden) for _ in range(num_layers))
        self.act = _activation(activation)
        self.dropout = nn.Dropout(dropout)
        width = hidden * len(POOLINGS[pooling])
        self.head = nn.Sequential(nn.Linear(width, head_hidden), _activation(activation),
                                  nn.Dropout(dropout), nn.Linear(head_hidden, num_classes))

    def forward(self, x: torch.Tensor, neighbors: torch.Tensor,
                edge_attr: torch.Tensor | None = None,
                mask: torch.Tensor | None = None) -> torch.Tensor:
        """Class logits of a batch of padded event graphs (Shapes in the class docstring)."""
        if x.dim() != 3 or x.shape[-1] != self.input_dims:
            raise BadValueError(f"x: expected [B, N, {self.input_dims}], got shape "
                                f"{tuple(x.shape)}")
        if edge_attr is None and self.edge_dims:
            raise BadValueError(f"edge_attr: the model expects {self.edge_dims} edge "
                                "features, got None")
        if edge_attr is not None and (edge_attr.dim() != 4
                                      or edge_attr.shape[-1] != self.edge_dims):
            raise BadValueError(f"edge_attr: expected [B, N, K, {self.edge_dims}], got shape "
                                f"{tuple(edge_attr.shape)}")
        b = x.shape[0]
        # for export: every slot kept, padding pooled into an extra graph b (dropped below)
        to_graph, n_graphs = (_padded_for_export, b + 1) if exporting() else (padded_to_sparse, b)
        h, edge_index, e, batch = to_graph(x, neighbors, edge_attr, mask)
        h = self.embed(h)
        for i, (conv, norm) in enumerate(zip(self.convs, self.norms, strict=True)):
            if self.layer == "interaction":
                out, effects = conv(h, edge_index, e)
                e = effects if i == 0 else e + effects
            elif self.layer == "gat":
                out = conv(h, edge_index, e if self.edge_dims else None)
            else:
                out = conv(h, edge_index)
            h = h + self.dropout(self.act(norm(out)))
        pooled = torch.cat([self._pools[p](h, batch, size=n_graphs)[:b]
                            for p in POOLINGS[self.pooling]], dim=-1)
        return self.head(pooled)
