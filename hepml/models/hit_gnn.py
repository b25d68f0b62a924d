"""EdgeClassifierIN: the interaction-network edge classifier of the GNN tracker.

The Exa.TrkX edge classifier (X. Ju et al., "Performance of a geometric deep learning
pipeline for HL-LHC particle tracking", arXiv:2103.06995; G. DeZoort et al., "Charged
particle tracking via edge-classifying interaction networks", arXiv:2103.16701), built on
the interaction network of P. Battaglia et al. (arXiv:1612.00222). It scores every
candidate edge of a hit graph (:mod:`hepml.representations.hit_graphs`) with the logit
of "these two hits belong to one particle" (or "are consecutive hits of one particle",
whichever ``edge_labels`` the hit graphs were made with):

1. a node encoder MLP maps the hit features ``x`` to ``h`` (``hidden`` wide), an edge
   encoder MLP maps ``[edge_attr, x_inner, x_outer]`` of every edge to ``e``;
2. ``n_iterations`` rounds of message passing, each with residual updates:

   - edge update ``e <- e + φ_R([e, h_inner, h_outer])``;
   - node update ``h <- h + φ_O([h, Σ e of incoming edges, Σ e of outgoing edges])``,
     incoming edges being those whose outer hit is the node (sums with
     ``Tensor.index_add_``, or ``scatter_add_`` when exported; no extension library);

   the MLPs are shared between rounds (``shared_weights=True``, as Exa.TrkX's
   interaction GNN) or one pair per round;
3. an output MLP maps ``[h_inner, h_outer, e]`` of every edge to one logit.

Every MLP has ``mlp_layers`` blocks of (linear, layer norm, activation, dropout) with
``hidden`` units (the output MLP ends with a plain linear layer to one logit instead).

The model takes the padded tensors of a chunk and flattens the real edges, and the hits
they join, into one graph (indices offset per event) before the message passing, so
padding costs no work and cannot change a real edge's logit. Hits without any edge
cannot influence an edge either and are left out as well. The logits are independent of
the order of the hits and of the edges within an event (equivariant: permuting the edges
permutes the logits), and in eval mode an event scores the same alone or in a batch.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn import functional as F  # noqa: N812

from hepml.errors import BadValueError, ConfigError
from hepml.models._export import exporting
from hepml.models._registry import ModelContract, fit_shape, register_model
from hepml.models._registry import activation as _activation

__all__ = ["EdgeClassifierIN", "edge_loss"]


def _check_int(name: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(f"model (interaction_network).{name}: expected an integer >= {low}, "
                          f"got {value!r}")
    return value


def _mlp(n_in: int, hidden: int, n_layers: int, act: str, dropout: float, *,
         n_out: int | None = None) -> nn.Sequential:
    """``n_layers`` blocks (linear, layer norm, activation, dropout); then linear to ``n_out``."""
    layers: list[nn.Module] = []
    width = n_in
    for _ in range(n_layers):
        layers += [nn.Linear(width, hidden), nn.LayerNorm(hidden), _activation(act)]
        if dropout:
            layers.append(nn.Dropout(dropout))
        width = hidden
    if n_out is not None:
        layers.append(nn.Linear(width, n_out))
    return nn.Sequential(*layers)


@register_model("interaction_network", data_args=("input_dims", "edge_dims"))
class EdgeClassifierIN(nn.Module):
    """Interaction-network edge classifier of hit graphs (see the module docstring).

    Args:
        input_dims: Node (hit) features; 3 for the default hit graphs.
        edge_dims: Edge features; 6 for the default hit graphs (0: none).
        hidden: Width of the node and edge latent features and of every MLP.
        n_iterations: Rounds of message passing.
        mlp_layers: Hidden blocks of every MLP.
        activation: Activation name from :data:`hepml.models.ACTIVATIONS`.
        dropout: Dropout after every activation.
        shared_weights: One edge and one node network for all rounds (``False``: one
            pair per round).

    Shapes:
        - x: ``[B, H, input_dims]``
        - edges: ``[B, E, 2]`` int, local (inner, outer) hit indices; -1 for padding
        - edge_attr: ``[B, E, edge_dims]`` (may be ``None`` when ``edge_dims == 0``)
        - output: ``[B, E]`` logits, 0 at padding
    """

    contract = ModelContract(
        inputs=("x", "edges", "edge_attr"), outputs=("edge_logits",),
        axes={"x": {0: "batch", 1: "hits"}, "edges": {0: "batch", 1: "edges"},
              "edge_attr": {0: "batch", 1: "edges"}},
        what="interaction-network edge classifier of hit graphs: one logit per candidate edge",
        descriptions={
            "x": "hit features [batch, hits, 3] (r / r_scale, phi / pi, z / z_scale)",
            "edges": "[batch, edges, 2] int64 local (inner, outer) hit indices, -1 for padding",
            "edge_attr": "[batch, edges, edge features]",
            "edge_logits": "[batch, edges] logit of 'same particle' per edge, 0 at padding; "
                           "sigmoid gives the edge score"},
        inside="no normalisation inside the graph: the representation scales the hit "
               "coordinates (r_scale, z_scale) and computes the edge features",
        default_representation="hit_graph")

    @classmethod
    def data_kwargs(cls, shape: Any) -> dict[str, Any]:
        """``input_dims`` and ``edge_dims`` from the hit graphs' ``x`` and ``edge_attr``."""
        shape = fit_shape("interaction_network", shape, "hit graphs (x, edges, edge_attr)",
                          keys=("x", "edge_attr"))
        return {"input_dims": int(shape["x"][-1]), "edge_dims": int(shape["edge_attr"][-1])}

    def __init__(
        self,
        input_dims: int = 3,
        edge_dims: int = 6,
        hidden: int = 64,
        n_iterations: int = 6,
        mlp_layers: int = 2,
        activation: str = "relu",
        dropout: float = 0.0,
        shared_weights: bool = True,
    ) -> None:
        super().__init__()
        self.input_dims = _check_int("input_dims", input_dims, 1)
        self.edge_dims = _check_int("edge_dims", edge_dims, 0)
        _check_int("hidden", hidden, 1)
        self.n_iterations = _check_int("n_iterations", n_iterations, 0)
        _check_int("mlp_layers", mlp_layers, 1)
        if isinstance(dropout, bool) or not isinstance(dropout, (int, float)) \
                or not 0 <= dropout < 1:
            raise ConfigError(f"model (interaction_network).dropout: expected a number in "
                              f"[0, 1), got {dropout!r}")
        if not isinstance(shared_weights, bool):
            raise ConfigError(f"model (interaction_network).shared_weights: expected true or "
                              f"false, got {shared_weights!r}")
        self.shared_weights = shared_weights
        self.node_encoder = _mlp(input_dims, hidden, mlp_layers, activation, dropout)
        self.edge_encoder = _mlp(edge_dims + 2 * input_dims, hidden, mlp_layers, activation,
                                 dropout)
        n_nets = min(n_iterations, 1) if shared_weights else n_iterations
        self.edge_networks = nn.ModuleList(
            _mlp(3 * hidden, hidden, mlp_layers, activation, dropout) for _ in range(n_nets))
        self.node_networks = nn.ModuleList(
            _mlp(3 * hidden, hidden, mlp_layers, activation, dropout) for _ in range(n_nets))
        self.output = _mlp(3 * hidden, hidden, mlp_layers, activation, dropout, n_out=1)

    def _check(self, x: torch.Tensor, edges: torch.Tensor,
               edge_attr: torch.Tensor | None) -> None:
        if x.dim() != 3 or x.shape[-1] != self.input_dims:
            raise BadValueError(f"x: expected [B, H, {self.input_dims}], got shape "
                                f"{tuple(x.shape)}")
        if edges.dim() != 3 or edges.shape[0] != x.shape[0] or edges.shape[-1] != 2:
            raise BadValueError(f"edges: expected [{x.shape[0]}, E, 2] to match x, got shape "
                                f"{tuple(edges.shape)}")
        if edges.is_floating_point():
            raise BadValueError(f"edges: expected integer hit indices, got {edges.dtype}")
        if edge_attr is None:
            if self.edge_dims:
                raise BadValueError(f"edge_attr: the model expects {self.edge_dims} edge "
                                    "features, got None")
        elif edge_attr.shape != (*edges.shape[:2], self.edge_dims):
            raise BadValueError(f"edge_attr: expected [{edges.shape[0]}, {edges.shape[1]}, "
                                f"{self.edge_dims}], got shape {tuple(edge_attr.shape)}")

    def forward(self, x: torch.Tensor, edges: torch.Tensor,
                edge_attr: torch.Tensor | None = None) -> torch.Tensor:
        """Edge logits of a batch of padded hit graphs (Shapes in the class docstring)."""
        self._check(x, edges, edge_attr)
        b, h_max, f = x.shape
        edges = edges.to(device=x.device, dtype=torch.long)
        valid = (edges >= 0).all(-1)  # [B, E]
        if exporting():  # every slot, no shapes that depend on the data
            nodes, src, dst, attr = _all_slots(x, edges, edge_attr, valid)
        else:
            real = edges[valid]  # [n, 2]
            if real.numel():
                _check_below(real, h_max)
            event = torch.arange(b, device=x.device)[:, None].expand_as(valid)[valid]
            flat = real + (event * h_max)[:, None]
            # the hits that some edge joins, renumbered in order
            used = torch.zeros(b * h_max, dtype=torch.bool, device=x.device)
            used[flat.reshape(-1)] = True
            new_index = torch.cumsum(used, 0) - 1
            src, dst = new_index[flat[:, 0]], new_index[flat[:, 1]]
            nodes = x.reshape(b * h_max, f)[used]
            attr = None if edge_attr is None else edge_attr.to(x.device)[valid]

        h = self.node_encoder(nodes)
        parts = [nodes[src], nodes[dst]]
        if attr is not None:
            parts.insert(0, attr.to(nodes.dtype))
        e = self.edge_encoder(torch.cat(parts, dim=-1))
        for i in range(self.n_iterations):
            k = 0 if self.shared_weights else i
            e = e + self.edge_networks[k](torch.cat([e, h[src], h[dst]], dim=-1))
            incoming, outgoing = _sum_at(h, dst, e), _sum_at(h, src, e)
            h = h + self.node_networks[k](torch.cat([h, incoming, outgoing], dim=-1))
        logits = self.output(torch.cat([h[src], h[dst], e], dim=-1)).squeeze(-1)
        if exporting():
            return torch.where(valid, logits.view(valid.shape), 0.0)
        out = logits.new_zeros(valid.shape)
        out[valid] = logits
        return out


def _sum_at(h: torch.Tensor, index: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
    """Per node, the sum of the rows of ``e`` whose edge ends at that node (``index``).

    For export this is ``scatter_add`` (ONNX ``ScatterElements``, add): onnxruntime runs
    ``index_add_``'s ``ScatterND`` add on several threads without making the additions to
    one node atomic, which loses updates at random (from run to run, on the same inputs).
    """
    out = torch.zeros_like(h, dtype=e.dtype)
    if exporting():
        return out.scatter_add_(0, index.unsqueeze(-1).expand_as(e), e)
    return out.index_add_(0, index, e)


def _check_below(real: torch.Tensor, h_max: int) -> None:
    """Hit indices must address the ``h_max`` node slots.

    On the CPU a clear error; on a GPU an asynchronous device assertion, since reading
    the maximum back would stall the device on every batch.
    """
    if real.device.type == "cpu":
        if int(real.max()) >= h_max:
            raise BadValueError(f"edges: hit indices must lie below the {h_max} node "
                                f"slots of x, got {int(real.max())}")
    else:
        torch._assert_async(real.max() < h_max,
                            f"edges: hit indices must lie below the {h_max} node slots of x")


def _all_slots(x: torch.Tensor, edges: torch.Tensor, edge_attr: torch.Tensor | None,
               valid: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Nodes, edge ends and edge features of every slot, for export.

    Node ``b * H + i`` is hit slot ``i`` of event ``b``, followed by one sink node; every
    edge slot is an edge, and a padding slot joins the sink to itself. A real edge then
    sees exactly the hits and edges it sees in the forward pass (hits without edges and
    the sink touch no real edge), so its logit is the same.
    """
    b, h_max, f = x.shape
    base = (torch.arange(b, device=x.device) * h_max).view(b, 1, 1)
    flat = edges + base
    flat = torch.where(valid.unsqueeze(-1), flat, torch.full_like(flat, b * h_max)).reshape(-1, 2)
    nodes = torch.cat([x.reshape(b * h_max, f), x.new_zeros(1, f)])
    attr = None if edge_attr is None else edge_attr.to(x.device).reshape(-1, edge_attr.shape[-1])
    return nodes, flat[:, 0], flat[:, 1], attr


def edge_loss(logits: torch.Tensor, y: torch.Tensor,
              pos_weight: float | torch.Tensor | None = None) -> torch.Tensor:
    """Binary cross-entropy with logits, averaged over the real edges (``y >= 0``).

    Usable as the :class:`hepml.training.Trainer`'s ``loss_fn(outputs, targets)``; with a
    ``pos_weight`` through ``functools.partial(edge_loss, pos_weight=w)``.

    Args:
        logits: ``[B, E]`` edge logits.
        y: ``[B, E]`` truth: 1 true edge, 0 fake, -1 padding (ignored).
        pos_weight: Weight of the true edges' term (e.g. fakes / trues), or ``None``.

    Returns:
        The mean over real edges (0, with a gradient, for a batch without any).
    """
    if logits.shape != y.shape:
        raise BadValueError(f"edge_loss: logits {tuple(logits.shape)} and y {tuple(y.shape)} "
                            "must have the same shape")
    mask = (y >= 0).to(logits.dtype)
    weight = None
    if pos_weight is not None:
        weight = torch.as_tensor(pos_weight, dtype=logits.dtype, device=logits.device)
    loss = F.binary_cross_entropy_with_logits(logits, y.clamp(0, 1).to(logits.dtype),
                                              reduction="none", pos_weight=weight)
    return (loss * mask).sum() / mask.sum().clamp(min=1)
