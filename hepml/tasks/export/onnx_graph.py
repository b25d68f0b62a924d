"""The model as an ONNX graph: ``torch.onnx.export(dynamo=True)`` with dynamic axes.

The model is wrapped to take positional tensors and give a tuple of named outputs,
exported with one ``torch.export.Dim`` per symbolic size while the exporter's own
warnings and loggers are kept quiet, and the graph is checked for axes the exporter
fixed and for sums that onnxruntime computes wrongly.
"""

from __future__ import annotations

import contextlib
import logging
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hepml.errors import ExportError
from hepml.models import model_contract


class _Exported(nn.Module):
    """The model with positional tensor inputs and a tuple of named outputs."""

    def __init__(self, model: nn.Module, kind: str, outputs: Sequence[str]) -> None:
        super().__init__()
        self.model, self.kind, self.outputs = model, kind, tuple(outputs)

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return _as_tuple(_call(self.model, self.kind, inputs), self.outputs)


def _call(model: nn.Module, kind: str, inputs: Sequence[torch.Tensor]) -> Any:
    """The model's own forward on the inputs in ONNX input order.

    A CaloGAN's forward generates with the EMA generator, given ``z``.
    """
    return model_contract(kind).forward(model, inputs)


def _as_tuple(out: Any, names: Sequence[str]) -> tuple[torch.Tensor, ...]:
    if isinstance(out, Mapping):
        return tuple(out[k] for k in names)
    if isinstance(out, (list, tuple)):
        return tuple(out)
    return (out,)


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence what the exporter says about itself while it runs.

    Filtered warnings: ``FutureWarning`` on ``LeafSpec`` (torch's pytree, inside
    ``torch.export``) and on ``_check_is_size`` (``torch.export``'s loop over the steps
    of an LSTM or GRU), the ``UserWarning`` that a named axis "will not be used" (it is,
    shared by several inputs), ``DeprecationWarning`` from inside ``torch.onnx`` and
    ``onnxscript``, and ``torch.export``'s ``UserWarning``s about guards; the
    exporter's own loggers (``torch.onnx``, ``torch.export``, ``onnxscript``, ``onnx_ir``:
    "torchvision is not installed", optimisation passes, internal fallbacks) are muted
    while it runs; a failure is raised, not logged.
    """
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "torch._export",
                                              "onnxscript", "onnx_ir")]
    levels = [lg.level for lg in loggers]
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=r".*LeafSpec.*", category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*_check_is_size will be removed",
                                category=FutureWarning)
        warnings.filterwarnings("ignore", message=r".*will not be used, since it shares",
                                category=UserWarning)
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.onnx.*")
        warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"onnxscript.*")
        warnings.filterwarnings("ignore", category=UserWarning, module=r"torch\._export.*")
        for lg in loggers:  # its errors are raised, not only logged
            lg.setLevel(logging.CRITICAL)
        try:
            yield
        finally:
            for lg, level in zip(loggers, levels, strict=True):
                lg.setLevel(level)


def _dynamic_shapes(kind: str) -> tuple[dict[int, Any], ...]:
    """One ``torch.export.Dim`` per symbolic name, shared by the inputs that have it.

    ``min=2``: ``torch.export`` traces with sizes of at least 2 (a size of 1 broadcasts);
    the ONNX graph has no such bound, and the check runs a batch of 1 as well.
    """
    dims: dict[str, Any] = {}
    spec = []
    contract = model_contract(kind)
    for name in contract.inputs:
        axes = contract.axes.get(name, {})
        spec.append({a: dims.setdefault(d, torch.export.Dim(d, min=2)) for a, d in axes.items()})
    return tuple(spec)


def _check_dynamic(proto: Any, kind: str) -> None:
    """Raise if the exporter fixed an axis that should stay dynamic."""
    for v in proto.graph.input:
        dims = _dims(v)
        for axis, name in model_contract(kind).axes.get(v.name, {}).items():
            if axis < len(dims) and not isinstance(dims[axis], str):
                raise ExportError(f"model {kind!r}: the exporter fixed axis {axis} ({name}) of "
                                  f"input {v.name!r} to {dims[axis]}; this model cannot take "
                                  f"another {name} size in ONNX (see docs/export.md)")


def _check_scatter(proto: Any, kind: str) -> None:
    """Raise if the graph sums with ``ScatterND``, which onnxruntime computes wrongly.

    onnxruntime's CPU ``ScatterND`` with a reduction spreads the updates over threads
    without making the updates of one element atomic: with repeated indices (a
    message-passing sum) it loses updates at random, differently from run to run
    (onnxruntime 1.32). ``scatter_add`` exports to ``ScatterElements``, which is exact.
    """
    for node in proto.graph.node:
        reduction = next((a.s.decode() for a in node.attribute if a.name == "reduction"), "none")
        if node.op_type == "ScatterND" and reduction != "none":
            raise ExportError(f"model {kind!r}: the exported graph sums with ScatterND "
                              f"(reduction {reduction!r}, node {node.name!r}), which "
                              "onnxruntime computes wrongly on several threads; the model "
                              "must use Tensor.scatter_add_ instead of index_add_ when exporting")


def _clear_rnn_dispatch_cache() -> None:
    """Forget the kernels that ``aten.lstm`` and ``aten.gru`` dispatched to.

    ``torch.onnx.export`` registers a ``while_loop`` decomposition of the recurrent ops for
    each export with dynamic shapes and removes it afterwards, but the ops' dispatch cache
    keeps it: the next export of a recurrent model in the same process fixed the number
    of steps (torch 2.13). Clearing the cache before each export avoids that;
    :func:`_check_dynamic` would catch it otherwise.
    """
    for op in (torch.ops.aten.lstm.input, torch.ops.aten.gru.input):
        cache = getattr(op, "_dispatch_cache", None)
        if isinstance(cache, dict):
            cache.clear()


def _export_model(model: nn.Module, kind: str, outputs: Sequence[str],
                  example: Mapping[str, torch.Tensor], opset: int | None) -> Any:
    """``torch.onnx.export(dynamo=True)`` of the model; returns the ONNX ``ModelProto``."""
    wrapper = _Exported(model, kind, outputs).eval()
    inputs = model_contract(kind).inputs
    args = tuple(example[k] for k in inputs)
    _clear_rnn_dispatch_cache()
    try:
        with _quiet_exporter(), torch.no_grad():
            program = torch.onnx.export(
                wrapper, args, input_names=list(inputs),
                output_names=list(outputs), opset_version=opset,
                dynamic_shapes=(_dynamic_shapes(kind),),  # forward(*inputs)
                dynamo=True, verbose=False,
                optimize=True, external_data=False)
    except Exception as exc:  # the exporter raises many kinds; say which step failed
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        summary = next((ln for ln in lines if ln.startswith("<class ")),
                       lines[0] if lines else type(exc).__name__)
        raise ExportError(f"torch.onnx.export failed for model {kind!r}: {summary[:400]} "
                          "(see docs/export.md for what exports)") from exc
    return program.model_proto


def _dims(value_info: Any) -> list[int | str]:
    shape = value_info.type.tensor_type.shape
    return [d.dim_param if d.dim_param else int(d.dim_value) for d in shape.dim]


def _io_entries(onnx: Any, values: Sequence[Any], describe: Callable[[str], str]
                ) -> list[dict[str, Any]]:
    out = []
    for v in values:
        dtype = onnx.helper.tensor_dtype_to_np_dtype(v.type.tensor_type.elem_type)
        out.append({"name": v.name, "dtype": np.dtype(dtype).name, "shape": _dims(v),
                    "description": describe(v.name)})
    return out
