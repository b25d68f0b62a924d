"""Real inputs for the check, read from files and built as in training."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import awkward as ak
import numpy as np
import torch
from torch import nn

from hepml import representations
from hepml.errors import ConfigError, HepmlError, InputFileError
from hepml.io import Source, expand_files
from hepml.models import model_contract


def build_representation(spec: Mapping[str, Any]) -> Any:
    """The representation of a checkpoint's (or a preprocessing JSON's) ``representation``.

    Any kind hepml trains on: ``jet_image``, ``particle_cloud``, ``event_graph``,
    ``features``, ``hit_graph``, ``track_sequence``, ``lumisection_maps``.
    """
    return representations.build_representation(spec)


def _project_root() -> Path:
    return Path(__file__).resolve().parents[3]


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


#: Model kinds that generate calorimeter showers from noise.
SHOWER_GENERATORS = ("calogan", "caloflow")


def _shower_inputs(model: nn.Module, files: Sequence[str], config: Mapping[str, Any],
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
    noise = {name: torch.randn(len(e), size, generator=gen)
             for name, size in model.noise_sizes().items()}
    return {**noise, "energy": e,
            "particle": torch.from_numpy(np.concatenate(particle).astype(np.int64))}, used
