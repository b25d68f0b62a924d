"""``hepml export``: a trained checkpoint -> an ONNX model, checked with onnxruntime.

Experiment software (CMSSW, Athena) runs neural networks through onnxruntime. This
module turns any hepml checkpoint into one ``.onnx`` file with dynamic axes, writes
``<name>.preprocessing.json`` beside it (everything needed to build the inputs from a
ROOT file), and checks the file before it is put in place:

1. the checkpoint's model is rebuilt on the CPU in evaluation mode;
2. real inputs are built from the first ``n_check`` entries of the training files named
   in the checkpoint (or of other files) with the representation the model was trained
   on (the same code as training);
3. the model is exported with ``torch.onnx.export(dynamo=True)`` and ``dynamic_shapes``
   (batch size, and the number of particles, nodes, hits, edges or steps where the model
   allows them to vary) to a temporary file;
4. onnxruntime (``CPUExecutionProvider``) runs three cases through that one file: the
   whole check sample, a smaller batch whose graphs or sequences have another size,
   and a batch of one; every output is compared with the torch output of the
   checkpoint in evaluation mode: ``max|onnx - torch| / max(max|torch|, TINY) <=
   tolerance`` (1e-5) per output;
5. only then is the file renamed to its name and the JSON written; a failed check raises
   :class:`~hepml.errors.ExportError` and leaves no ``.onnx`` behind.

The ONNX packages (``onnx``, ``onnxscript``, ``onnxruntime``: ``pip install -e
".[onnx]"``) are imported only here, when an export runs. See ``docs/export.md``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import importlib
import json
import logging
import math
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch
from torch import nn

from hepml import __version__, representations
from hepml.errors import (
    CheckpointError,
    ConfigError,
    EmptyInputError,
    ExportError,
    HepmlError,
    InputFileError,
)
from hepml.io import Source, expand_files, file_checksum, resolve_fields
from hepml.io.atomic import atomic_path, check_writable, write_json
from hepml.io.provenance import versions
from hepml.models import MODELS, build_model, model_contract, output_names
from hepml.training import load_checkpoint

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "METADATA_KEY", "TINY", "TOLERANCE", "CheckCase",
           "ExportResult", "OutputCheck", "build_representation", "compare_outputs", "export",
           "format_table", "preprocessing_path", "require_onnx"]

#: Format tag of the preprocessing JSON.
FORMAT = "hepml-onnx-preprocessing/1"
#: Default tolerance of the check: ``max|onnx - torch| / max(max|torch|, TINY)``.
TOLERANCE = 1e-5
#: Floor of an output's scale in the relative difference (an all-zero output).
TINY = 1e-12
#: Elements with ``|torch| <= ELEMENT_FLOOR * scale`` are left out of the element-wise
#: relative difference (which is reported, not tested).
ELEMENT_FLOOR = 1e-6
#: Key of the compact preprocessing JSON in the ONNX model's ``metadata_props``.
METADATA_KEY = "hepml.preprocessing"
_EXTRA = "pip install -e \".[onnx]\" (or: pip install onnx onnxscript onnxruntime)"
_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")

# ----------------------------------------------------------------------------- families
# What each model family takes and gives (input and output names, dynamic axes,
# descriptions, default representation) is the family's ModelContract, declared in its
# own file in hepml.models.


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


# ----------------------------------------------------------------------------- packages
def require_onnx() -> dict[str, Any]:
    """Import ``onnx``, ``onnxscript`` and ``onnxruntime``.

    Returns:
        The modules by name.

    Raises:
        ExportError: One of them is not installed; the message says how to install them.
    """
    modules, missing = {}, []
    for name in _ONNX_PACKAGES:
        try:
            modules[name] = importlib.import_module(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise ExportError(f"ONNX export needs the optional packages {', '.join(missing)} "
                          f"(not installed): {_EXTRA}")
    return modules


# ----------------------------------------------------------------------------- inputs
def build_representation(spec: Mapping[str, Any]) -> Any:
    """The representation of a checkpoint's (or a preprocessing JSON's) ``representation``.

    Any kind hepml trains on: ``jet_image``, ``particle_cloud``, ``event_graph``,
    ``features``, ``hit_graph``, ``track_sequence``, ``lumisection_maps``.
    """
    return representations.build_representation(spec)


def _project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _training_files(patterns: Sequence[str]) -> list[str]:
    """The training files of a checkpoint, as ``hepml.io.expand_files`` finds them.

    Relative paths are tried from the working directory, then from the project root.
    """
    try:
        return expand_files(list(patterns))
    except InputFileError as first:
        try:
            return expand_files(list(patterns), base=_project_root())
        except InputFileError:
            raise InputFileError(f"{first} The checkpoint's training files are not there; "
                                 "give files to check with --check-file") from None


def _read_entries(files: Sequence[str], tree: str, fields: Sequence[str],
                  branches: Mapping[str, str] | None, n: int, *, check_finite: bool = True
                  ) -> tuple[ak.Array, list[str]]:
    """The first ``n`` entries of ``files`` (in order), the fields read as for training."""
    source = Source(files, tree, fields, branches=branches, step_size=n, max_entries=n,
                    check_finite=check_finite)
    parts, got, used = [], 0, []
    for spec in source.chunks:
        if got >= n:
            break
        parts.append(source.read(spec))
        got += len(parts[-1])
        if spec.path not in used:
            used.append(spec.path)
    arrays = parts[0] if len(parts) == 1 else ak.concatenate(parts)
    return arrays[:n], used


def _representation_inputs(kind: str, rep_kind: str, representation: Any, arrays: ak.Array,
                           where: str) -> dict[str, torch.Tensor]:
    """Model inputs (by ONNX input name) built by the representation, as in training."""
    try:
        if rep_kind == "hit_graph":
            out = representation(arrays, truth=False)
        elif rep_kind == "lumisection_maps":
            out = representation(arrays, where=where)
        else:
            out = representation(arrays)
    except HepmlError as exc:
        raise exc.with_context(where) from None
    names = model_contract(kind).inputs
    if not isinstance(out, Mapping):
        return {names[0]: out}
    missing = [k for k in names if k not in out]
    if missing:
        raise ConfigError(f"representation {rep_kind!r} gives {sorted(out)}, but model "
                          f"{kind!r} takes {list(names)}")
    return {k: out[k] for k in names}


def _calogan_inputs(model: nn.Module, files: Sequence[str], config: Mapping[str, Any],
                    tree: str, n: int, seed: int) -> tuple[dict[str, torch.Tensor], list[str]]:
    from hepml.io.calo import read_showers
    from hepml.representations.calo_layers import particle_indices

    calosim = dict(config.get("calosim") or {})
    shapes = calosim.get("layer_shapes")
    energy, particle, used = [], [], []
    for path in files:
        got = sum(len(e) for e in energy)
        if got >= n:
            break
        s = read_showers(path, tree=tree, particle=calosim.get("particle"),
                         layer_shapes=[tuple(x) for x in shapes] if shapes else None,
                         entry_stop=n - got)
        energy.append(s.energy)
        try:
            particle.append(particle_indices(s.particle, model.particles, source=str(path)))
        except ValueError as exc:
            raise ConfigError(f"{exc}; the generator knows only these particles") from None
        used.append(str(path))
    e = torch.from_numpy(np.concatenate(energy).astype(np.float32))
    gen = torch.Generator().manual_seed(seed)
    z = torch.randn(len(e), model.latent_dim, generator=gen)
    return {"z": z, "energy": e,
            "particle": torch.from_numpy(np.concatenate(particle).astype(np.int64))}, used


# ----------------------------------------------------------------------------- check
@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One output of one check case.

    Attributes:
        name: Output name.
        shape: Its shape in this case.
        max_abs: ``max|onnx - torch|``.
        scale: ``max|torch|``.
        rel: ``max_abs / max(scale, TINY)``, the tested quantity.
        max_elem_rel: ``max |onnx - torch| / |torch|`` over elements with
            ``|torch| > ELEMENT_FLOOR * max(scale, TINY)`` (reported only).
        passed: ``rel <= tolerance``, shapes equal and all values finite.
    """

    name: str
    shape: tuple[int, ...]
    max_abs: float
    scale: float
    rel: float
    max_elem_rel: float
    passed: bool


@dataclasses.dataclass(frozen=True)
class CheckCase:
    """One set of inputs run through the ONNX file.

    Attributes:
        label: The sizes of the case, e.g. ``batch=256, particles=100``.
        sizes: Symbolic dimension -> its size in this case.
        outputs: The comparison of every output.
    """

    label: str
    sizes: dict[str, int]
    outputs: tuple[OutputCheck, ...]

    @property
    def passed(self) -> bool:
        """True when every output passed."""
        return all(o.passed for o in self.outputs)


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """What :func:`export` wrote and measured.

    Attributes:
        path: The ONNX file.
        preprocessing: The preprocessing JSON beside it.
        kind: The model kind.
        cases: The check cases (all passed).
        tolerance: The tolerance they passed.
        files: The files the check inputs were read from.
        opset: The ONNX opset of the file.
        info: The preprocessing JSON's content.
    """

    path: Path
    preprocessing: Path
    kind: str
    cases: tuple[CheckCase, ...]
    tolerance: float
    files: tuple[str, ...]
    opset: int
    info: dict[str, Any]

    @property
    def max_rel(self) -> float:
        """The largest relative difference of any output in any case."""
        return max(o.rel for c in self.cases for o in c.outputs)


def compare_outputs(name: str, onnx_out: np.ndarray, torch_out: np.ndarray, *,
                    tolerance: float = TOLERANCE) -> OutputCheck:
    """Compare one ONNX output with the torch one (see :class:`OutputCheck`)."""
    got = np.asarray(onnx_out)
    want = np.asarray(torch_out)
    if got.shape != want.shape:
        return OutputCheck(name, tuple(want.shape), math.inf, math.nan, math.inf, math.inf,
                           False)
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    finite = bool(np.isfinite(got64).all() and np.isfinite(want64).all())
    diff = np.abs(got64 - want64)
    scale = float(np.abs(want64).max()) if want64.size else 0.0
    max_abs = float(diff.max()) if diff.size else 0.0
    rel = max_abs / max(scale, TINY)
    sel = np.abs(want64) > ELEMENT_FLOOR * max(scale, TINY)
    elem = float((diff[sel] / np.abs(want64[sel])).max()) if sel.any() else 0.0
    passed = finite and rel <= tolerance
    return OutputCheck(name, tuple(want.shape), max_abs, scale, rel if finite else math.nan,
                       elem, passed)


def _resize(t: torch.Tensor, axis: int, size: int, fill: float | int | bool) -> torch.Tensor:
    """``t`` cut or padded (with ``fill``) to ``size`` along ``axis``."""
    now = t.shape[axis]
    if size <= now:
        return t.narrow(axis, 0, size)
    pad_shape = list(t.shape)
    pad_shape[axis] = size - now
    return torch.cat([t, torch.full(pad_shape, fill, dtype=t.dtype)], dim=axis)


def _extents(kind: str, x: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Per entry, how much of each padded dimension holds real content."""
    if kind == "particlenet":
        return {"particles": x["mask"].reshape(len(x["mask"]), -1).sum(1)}
    if kind == "gnn":
        valid = x["neighbors"] >= 0
        slots = torch.arange(1, valid.shape[2] + 1).view(1, 1, -1)
        return {"nodes": x["mask"].sum(1),
                "neighbors": (valid * slots).flatten(1).max(1).values}
    if kind == "interaction_network":
        valid = (x["edges"] >= 0).all(-1)
        return {"hits": (x["edges"].max(-1).values.max(-1).values + 1).clamp(min=0),
                "edges": valid.sum(1)}
    if kind == "lstm_tracker":
        return {"steps": x["lengths"]}
    return {}


_FILL = {"mask": False, "neighbors": -1, "edges": -1}


def _second_case(kind: str, x: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Another batch size, and other sizes of the padded dimensions, for the same model.

    The entries with the smallest first padded extent are taken (half of them), and each
    padded dimension is cut to what they fill or, if that is no smaller, padded by three
    more slots (models are independent of the amount of padding).
    """
    n = len(next(iter(x.values())))
    extents = _extents(kind, x)
    if n < 2:
        keep = torch.zeros(2, dtype=torch.long)  # the one entry twice
    else:
        order = (torch.argsort(next(iter(extents.values())), stable=True) if extents
                 else torch.arange(n))
        keep = torch.sort(order[:max(1, n // 2)]).values
    out = {k: v[keep] for k, v in x.items()}
    axes = model_contract(kind).axes
    for dim, ext in extents.items():
        size_now = next(v.shape[a] for k, v in x.items() for a, d in axes[k].items() if d == dim)
        want = max(1, int(ext[keep].max()))
        if want >= size_now:
            want = size_now + 3
        for k in out:
            for axis, d in axes[k].items():
                if d == dim:
                    out[k] = _resize(out[k], axis, want, _FILL.get(k, 0))
    return out


def _sizes(kind: str, x: Mapping[str, torch.Tensor]) -> dict[str, int]:
    sizes: dict[str, int] = {}
    for k, axes in model_contract(kind).axes.items():
        for axis, dim in axes.items():
            sizes.setdefault(dim, int(x[k].shape[axis]))
    return sizes


def _numpy(t: torch.Tensor) -> np.ndarray:
    return t.detach().cpu().numpy()


def _run_check(session: Any, model: nn.Module, kind: str, outputs: Sequence[str],
               cases: Sequence[dict[str, torch.Tensor]], tolerance: float
               ) -> list[CheckCase]:
    fed = [i.name for i in session.get_inputs()]
    results = []
    for x in cases:
        with torch.no_grad():
            want = _as_tuple(_call(model, kind, [x[k] for k in model_contract(kind).inputs]),
                             outputs)
        sizes = _sizes(kind, x)
        try:
            got = _onnx_outputs(session, {k: _numpy(x[k]) for k in fed}, outputs)
        except Exception as exc:  # onnxruntime's own error classes
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise ExportError(f"onnxruntime cannot run the exported {kind!r} model on inputs "
                              f"with {sizes}: {first[:300]}") from None
        checks = tuple(compare_outputs(name, g, _numpy(w), tolerance=tolerance)
                       for name, g, w in zip(outputs, got, want, strict=True))
        results.append(CheckCase(", ".join(f"{k}={v}" for k, v in sizes.items()), sizes,
                                 checks))
    return results


def _onnx_outputs(session: Any, feed: dict[str, np.ndarray], names: Sequence[str]
                  ) -> list[np.ndarray]:
    """The outputs ``names`` that onnxruntime computes for ``feed``."""
    return session.run(list(names), feed)


def format_table(cases: Sequence[CheckCase], tolerance: float) -> str:
    """The check as a table: one row per output and case."""
    rows = [("case", "output", "shape", "max|diff|", "rel diff", "max elem rel", "pass")]
    for c in cases:
        for o in c.outputs:
            rows.append((c.label, o.name, "x".join(map(str, o.shape)) or "scalar",
                         f"{o.max_abs:.2e}", f"{o.rel:.2e}", f"{o.max_elem_rel:.2e}",
                         "yes" if o.passed else "NO"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths, strict=True)).rstrip()
             for r in rows]
    lines.append(f"pass: rel diff = max|onnx - torch| / max(max|torch|, {TINY:g}) <= "
                 f"{tolerance:g} per output (max elem rel: over |torch| > {ELEMENT_FLOOR:g} "
                 "x max|torch|, reported only)")
    return "\n".join(lines)


# ----------------------------------------------------------------------------- export
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


def _normalisation(kind: str, model: nn.Module) -> dict[str, Any]:
    info: dict[str, Any] = {"inside_graph": model_contract(kind).inside}
    if kind in ("autoencoder", "conv_autoencoder"):
        info.update(formula="(x - shift) / scale inside the graph; reconstruction = "
                            "decoder(...) * scale + shift",
                    shape=list(model.entry_shape),
                    shift=model.shift.detach().cpu().float().numpy().tolist(),
                    scale=model.scale.detach().cpu().float().numpy().tolist())
    elif kind == "particlenet":
        bn = model.bn_fts
        info.update(input_batch_norm={"running_mean": bn.running_mean.tolist(),
                                      "running_var": bn.running_var.tolist(),
                                      "eps": bn.eps})
    elif kind == "calogan":
        info.update(energy_range_gev=[float(v) for v in model.energy_range],
                    particles=list(model.particles), latent_dim=int(model.latent_dim),
                    note="energies outside the training range are extrapolated")
    return info


def _data_info(config: Mapping[str, Any], fields: Sequence[str], tree: str,
               branches: Mapping[str, str]) -> dict[str, Any]:
    exprs = resolve_fields(fields, branches) if fields else {}
    return {
        "tree": tree,
        "fields": list(fields),
        "branch_mapping": dict(branches),
        "branches_read": {f: {"expression": str(branches.get(f, f)),
                              "branches": sorted(e.branches)} for f, e in exprs.items()},
        "training_files": list((config.get("data") or {}).get("files") or []),
    }


def _class_info(config: Mapping[str, Any]) -> dict[str, Any] | None:
    data = config.get("data") or {}
    names = list(data.get("class_names") or [])
    if not names:
        return None
    signal = data.get("signal_class") or names[-1]
    return {"names": names, "signal": signal, "signal_index": names.index(signal),
            "label_branches": list(data.get("labels") or []),
            "scores": "softmax(logits, axis=1)[:, signal_index] is the signal score"}


def preprocessing_path(out: str | Path) -> Path:
    """``model.onnx`` -> ``model.preprocessing.json`` (beside it)."""
    out = Path(out)
    return out.with_name(f"{out.stem if out.suffix == '.onnx' else out.name}"
                         ".preprocessing.json")


def export(checkpoint: str | Path, out: str | Path, *, opset: int | None = None,
           check_files: Sequence[str] | None = None, n_check: int = 256,
           tree: str | None = None, branches: Mapping[str, str] | None = None,
           tolerance: float = TOLERANCE, seed: int = 0,
           progress: Callable[[str], None] | None = None) -> ExportResult:
    """Export a checkpoint's model to ONNX, check it with onnxruntime, write its JSON.

    Args:
        checkpoint: A ``checkpoint_best.pt`` (or last) of any hepml run.
        out: The ``.onnx`` file to write; ``<stem>.preprocessing.json`` goes beside it.
        opset: ONNX opset (default: the exporter's; 20 with torch 2.13).
        check_files: ROOT (or shower) files for the check (default: the checkpoint's
            training files, relative to the working directory or the project root).
        n_check: Entries read for the check (the first ones, in file order).
        tree: Tree of the check files (default: the training one).
        branches: Branch mapping of the check files (default: the training one).
        tolerance: Largest accepted ``max|onnx - torch| / max(max|torch|, TINY)``.
        seed: Seed of the latent noise of a CaloGAN check.
        progress: Called with a line for each step (the CLI prints them).

    Returns:
        :class:`ExportResult`.

    Raises:
        ExportError: The ONNX packages are missing, the model does not export, or
            onnxruntime's outputs differ from torch's by more than ``tolerance``; then no
            ``.onnx`` file is left.
        CheckpointError: The checkpoint is unreadable or does not fit its model.
        OutputError: ``out``'s directory cannot be written to (checked before any work).
    """
    say = progress or log.info
    mods = require_onnx()
    onnx, ort = mods["onnx"], mods["onnxruntime"]
    if n_check < 1:
        raise ConfigError(f"--n-check must be at least 1, got {n_check}")
    out = Path(out)
    if out.is_dir():
        raise ConfigError(f"--out {out} is a directory; give the .onnx file to write")
    check_writable(out.parent)
    state = load_checkpoint(checkpoint)
    spec = state.get("model") or {}
    kind = spec.get("kind")
    if kind not in MODELS:
        raise ExportError(f"{checkpoint}: model kind {kind!r} has no ONNX export; kinds: "
                          f"{', '.join(MODELS)}")
    model = build_model(kind, **spec.get("kwargs", {}))
    try:
        model.load_state_dict(state["model_state"])
    except (RuntimeError, KeyError) as exc:
        raise CheckpointError(f"{checkpoint}: weights do not fit the model "
                              f"({str(exc).splitlines()[0]})") from None
    model.eval()
    config = state.get("config") or {}
    data_cfg = dict(config.get("data") or {})
    tree = tree or data_cfg.get("tree") or "tree"
    branch_map = dict(data_cfg.get("branches") or {}) if branches is None else dict(branches)
    if check_files:
        files = expand_files(list(check_files))
    else:
        if not data_cfg.get("files"):
            raise ConfigError(f"{checkpoint}: the checkpoint names no training files; give "
                              "files to check with --check-file")
        files = _training_files(data_cfg["files"])

    # real inputs, built as in training
    rep_spec: dict[str, Any] | None = None
    fields: list[str] = []
    if kind == "calogan":
        inputs, used = _calogan_inputs(model, files, config, tree, n_check, seed)
        fields = ["energy", "particle", *(f"layer_{i}" for i in range(len(model.layer_shapes)))]
    else:
        rep_spec = dict(config.get("representation") or {})
        rep_spec.setdefault("kind", model_contract(kind).default_representation)
        representation = build_representation(rep_spec)
        rep_kind = rep_spec["kind"]
        if rep_kind == "hit_graph":
            fields = list(representation.fields(truth=False))
        else:
            fields = list(representation.required_fields)
        arrays, used = _read_entries(files, tree, fields, branch_map, n_check,
                                     check_finite=rep_kind != "lumisection_maps")
        inputs = _representation_inputs(kind, rep_kind, representation, arrays,
                                        where=f"{', '.join(used)} (first {n_check} entries)")
        rep_spec = {"kind": rep_kind, **representation.to_dict()}
    if len(next(iter(inputs.values()))) == 0:
        raise EmptyInputError(f"{', '.join(used)}: the first {n_check} entries give no model "
                              "input (e.g. no track long enough); use more entries (--n-check) "
                              "or other files (--check-file)")
    # the whole sample; fewer entries with other graph or sequence sizes; one entry
    cases = [inputs, _second_case(kind, inputs), {k: v[:1] for k, v in inputs.items()}]
    outputs = output_names(model)
    say(f"exporting {kind} ({sum(p.numel() for p in model.parameters())} parameters) "
        f"with torch.onnx.export(dynamo=True)")
    proto = _export_model(model, kind, outputs, inputs, opset)
    _check_dynamic(proto, kind)
    _check_scatter(proto, kind)
    opset_used = next(o.version for o in proto.opset_import if o.domain in ("", "ai.onnx"))

    fam = model_contract(kind)
    info: dict[str, Any] = {
        "format": FORMAT,
        "model": {"kind": kind, "kwargs": spec.get("kwargs", {}), "what": fam.what},
        "representation": rep_spec,
        "build": ("hepml.tasks.export.build_representation(representation)(arrays) with the "
                  "arrays of data.fields read through data.branch_mapping from data.tree"
                  if rep_spec else
                  "energy (GeV) and particle index of each shower; z ~ N(0, 1) chosen by "
                  "the user"),
        "data": _data_info(config, fields if kind != "calogan" else [], tree, branch_map),
        "classes": _class_info(config) if kind in ("cnn", "particlenet", "gnn") else None,
        "inputs": _io_entries(onnx, proto.graph.input, fam.describe),
        "outputs": _io_entries(onnx, proto.graph.output, fam.describe),
        "dynamic_axes": {n: {str(a): d for a, d in fam.axes[n].items()} for n in fam.inputs
                         if n in {v.name for v in proto.graph.input}},
        "normalisation": _normalisation(kind, model),
        "opset": int(opset_used),
        "exporter": "torch.onnx.export(dynamo=True, dynamic_shapes=...)",
        "versions": versions(("hepml", "torch", "onnx", "onnxscript", "onnxruntime", "numpy",
                              "python")),
        "checkpoint": {"path": str(Path(checkpoint).resolve()),
                       "sha256": file_checksum(checkpoint).split(":", 1)[1],
                       "epoch": state.get("epoch"), "best_epoch": state.get("best_epoch")},
    }
    if kind == "calogan":
        info["data"]["fields"] = ["energy", "particle"]
        info["data"]["note"] = ("showers read with hepml.io.calo.read_showers; particle is "
                                "the index of the PDG id in 'particles'")
    for key, value in ((METADATA_KEY, json.dumps(info, separators=(",", ":"))),
                       ("hepml.version", __version__), ("hepml.model_kind", kind)):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value

    with atomic_path(out) as tmp:
        onnx.save_model(proto, str(tmp))
        options = ort.SessionOptions()
        options.intra_op_num_threads = max(1, min(4, torch.get_num_threads()))
        options.log_severity_level = 3
        session = ort.InferenceSession(str(tmp), options, providers=["CPUExecutionProvider"])
        say(f"checking with onnxruntime {ort.__version__} (CPUExecutionProvider) on a batch "
            f"of {len(next(iter(inputs.values())))} built from the first {n_check} entries of "
            f"{', '.join(used)}")
        checked = _run_check(session, model, kind, outputs, cases, tolerance)
        del session
        if not all(c.passed for c in checked):
            raise ExportError(f"{checkpoint}: the ONNX model differs from the torch model "
                              f"beyond the tolerance; nothing written to {out}.\n"
                              + format_table(checked, tolerance))
        info["check"] = {
            "tolerance": tolerance,
            "definition": f"per output: max|onnx - torch| / max(max|torch|, {TINY:g}) <= "
                          "tolerance, torch = the checkpoint's model in eval mode",
            "provider": "CPUExecutionProvider",
            "files": used, "entries": len(next(iter(inputs.values()))),
            "cases": [{"sizes": c.sizes,
                       "outputs": {o.name: {"shape": list(o.shape), "max_abs": o.max_abs,
                                            "rel": o.rel, "max_elem_rel": o.max_elem_rel}
                                   for o in c.outputs}} for c in checked],
        }
    json_path = write_json(preprocessing_path(out), info, indent=2)
    return ExportResult(out, json_path, kind, tuple(checked), tolerance, tuple(used),
                        int(opset_used), info)
