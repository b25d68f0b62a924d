"""Whether a model is being traced for export (ONNX), where some models take another path.

A model whose forward uses operators that ONNX lacks, or shapes that depend on the data
(boolean indexing), computes the same outputs with exportable operators while
:func:`exporting` is True; see ``docs/export.md``.
"""

from __future__ import annotations

import sys

import torch

__all__ = ["exporting"]


def exporting() -> bool:
    """True while ``torch.export`` or ``torch.onnx.export`` traces a model.

    ``torch.onnx.export(dynamo=True)`` traces with ``torch.export``; the TorchScript
    exporter sets ``torch.onnx.is_in_onnx_export``.
    """
    if torch.compiler.is_exporting():
        return True
    onnx = sys.modules.get("torch.onnx")  # not imported by torch itself: no import here
    return onnx is not None and bool(onnx.is_in_onnx_export())
