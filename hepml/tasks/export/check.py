"""The check of an exported model: onnxruntime against torch on real inputs.

Three cases run through one ONNX file (the whole check sample, a smaller batch whose
graphs or sequences have another size, a batch of one); every output is compared
with the torch output of the checkpoint's model in evaluation mode:
``max|onnx - torch| / max(max|torch|, TINY) <= tolerance`` per output.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hepml.errors import ExportError
from hepml.models import model_contract
from hepml.tasks.export.onnx_graph import _as_tuple, _call

#: Default tolerance of the check: ``max|onnx - torch| / max(max|torch|, TINY)``.
TOLERANCE = 1e-5


#: Floor of an output's scale in the relative difference (an all-zero output).
TINY = 1e-12


#: Elements with ``|torch| <= ELEMENT_FLOOR * scale`` are left out of the element-wise
#: relative difference (which is reported, not tested).
ELEMENT_FLOOR = 1e-6


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


#: Model kinds whose outputs (calorimeter layers in GeV) are compared on one scale, the
#: largest cell of all layers: a faint cell of a deep layer that float32 rounding switches
#: on or off differs by 100 eV, which is not measured against that layer's own tiny maximum.
COMMON_SCALE = ("calogan", "caloflow")


def compare_outputs(name: str, onnx_out: np.ndarray, torch_out: np.ndarray, *,
                    tolerance: float = TOLERANCE, scale: float | None = None) -> OutputCheck:
    """Compare one ONNX output with the torch one (see :class:`OutputCheck`).

    ``scale`` replaces ``max|torch|`` as the denominator of the relative difference.
    """
    got = np.asarray(onnx_out)
    want = np.asarray(torch_out)
    if got.shape != want.shape:
        return OutputCheck(name, tuple(want.shape), math.inf, math.nan, math.inf, math.inf,
                           False)
    got64, want64 = got.astype(np.float64), want.astype(np.float64)
    finite = bool(np.isfinite(got64).all() and np.isfinite(want64).all())
    diff = np.abs(got64 - want64)
    if scale is None:
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
        scale = (max(float(np.abs(_numpy(w)).max(initial=0.0)) for w in want)
                 if kind in COMMON_SCALE else None)
        checks = tuple(compare_outputs(name, g, _numpy(w), tolerance=tolerance, scale=scale)
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
                 "x max|torch|, reported only); for shower generators max|torch| is the "
                 "largest cell of all layers")
    return "\n".join(lines)
