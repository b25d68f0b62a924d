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
   tolerance`` per output (1e-5; the family's own where its contract names one: 1e-4
   for CaloFlow, whose zero-suppression switches faint cells under float32 rounding;
   for shower generators ``max|torch|`` is the largest cell of all layers);
5. only then is the file renamed to its name and the JSON written; a failed check raises
   :class:`~hepml.errors.ExportError` and leaves no ``.onnx`` behind.

The ONNX packages (``onnx``, ``onnxscript``, ``onnxruntime``: ``pip install -e
".[onnx]"``) are imported only here, when an export runs. See ``docs/export.md``.

The package: :mod:`~hepml.tasks.export.inputs` (real inputs built as in training),
:mod:`~hepml.tasks.export.onnx_graph` (the export and its graph checks) and
:mod:`~hepml.tasks.export.check` (onnxruntime against torch); :func:`export`, here,
puts them together.
"""

from __future__ import annotations

import dataclasses
import importlib
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from hepml import __version__
from hepml.errors import CheckpointError, ConfigError, EmptyInputError, ExportError
from hepml.io import expand_files, file_checksum, resolve_fields
from hepml.io.atomic import atomic_path, check_writable, write_json
from hepml.io.provenance import versions
from hepml.models import MODELS, build_model, model_contract, output_names
from hepml.tasks.export.check import (
    TINY,
    TOLERANCE,
    CheckCase,
    OutputCheck,
    _run_check,
    _second_case,
    compare_outputs,
    format_table,
)
from hepml.tasks.export.inputs import (
    SHOWER_GENERATORS,
    _read_entries,
    _representation_inputs,
    _shower_inputs,
    _training_files,
    build_representation,
)
from hepml.tasks.export.onnx_graph import _check_dynamic, _check_scatter, _export_model, _io_entries
from hepml.training import load_checkpoint

log = logging.getLogger(__name__)

__all__ = ["FORMAT", "METADATA_KEY", "TINY", "TOLERANCE", "CheckCase", "ExportResult",
           "OutputCheck", "build_representation", "compare_outputs", "export", "format_table",
           "preprocessing_path", "require_onnx"]


#: Format tag of the preprocessing JSON.
FORMAT = "hepml-onnx-preprocessing/1"


#: Key of the compact preprocessing JSON in the ONNX model's ``metadata_props``.
METADATA_KEY = "hepml.preprocessing"


_EXTRA = "pip install -e \".[onnx]\" (or: pip install onnx onnxscript onnxruntime)"


_ONNX_PACKAGES = ("onnx", "onnxscript", "onnxruntime")


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
    elif kind in SHOWER_GENERATORS:
        info.update(energy_range_gev=[float(v) for v in model.energy_range],
                    particles=list(model.particles),
                    noise={k: int(v) for k, v in model.noise_sizes().items()},
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
           tolerance: float | None = None, seed: int = 0,
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
        tolerance: Largest accepted ``max|onnx - torch| / max(max|torch|, TINY)``
            (default: the family's ``contract.tolerance``, else :data:`TOLERANCE`).
        seed: Seed of the noise of a shower generator's check.
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
    if tolerance is None:
        tolerance = model_contract(kind).tolerance or TOLERANCE
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
    if kind in SHOWER_GENERATORS:
        inputs, used = _shower_inputs(model, files, config, tree, n_check, seed)
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
        "data": _data_info(config, fields if kind not in SHOWER_GENERATORS else [], tree,
                           branch_map),
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
    if kind in SHOWER_GENERATORS:
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
