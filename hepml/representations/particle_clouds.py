"""Particle clouds: a chunk of jets (awkward, JetClass branches) -> padded point-cloud tensors.

The input of ParticleNet (H. Qu and L. Gouskos, "ParticleNet: Jet Tagging via Particle
Clouds", Phys. Rev. D 101 (2020) 056019, arXiv:1902.08570): each jet is an unordered set
of up to ``max_particles`` constituents, each with coordinates (for the first kNN) and
features, in the channels-first layout of that network:

- ``points``   ``[N, len(coords), P]``   float32, by default (Δη, Δφ)
- ``features`` ``[N, len(features), P]`` float32
- ``mask``     ``[N, 1, P]``             bool, True for a real constituent

with ``P = max_particles``. Constituents are sorted by pT, hardest first (stable: equal pT
keep their input order), the first ``P`` are kept, and shorter jets are padded with zeros
whose mask is False. A jet without constituents is all padding.

The whole chunk is built at once: the jagged fields are flattened, every feature is
computed on the flat constituents with numpy, the constituents are ordered by
``np.lexsort`` on (jet, -pT), and the kept ones are scattered into the padded output at
``(jet, rank)``, the same result as ``ak.pad_none`` + ``ak.fill_none`` without building
an option-type array per feature. There is no Python loop over jets.

Features (:data:`FEATURES`) follow the ParticleNet inputs; the constituent pT is
``hypot(part_px, part_py)``. Logarithms of pT and energy (and of their ratios to the
jet's) are taken of ``max(x, LOG_FLOOR)``, so a zero never gives ``-inf``.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable, Mapping
from typing import Any, Literal

import awkward as ak
import numpy as np
import torch

from hepml.errors import BadValueError, ConfigError
from hepml.representations._arrays import _field, _flatten, check_finite
from hepml.representations._transform import ConfigMixin, Transform, check_names

log = logging.getLogger(__name__)

__all__ = ["FEATURES", "LOG_FLOOR", "ParticleCloudConfig", "ParticleClouds",
           "make_particle_clouds", "to_pyg"]

#: Floor applied before every logarithm (GeV for pT and E, a ratio for the _rel features).
LOG_FLOOR = 1e-8


@dataclasses.dataclass(frozen=True)
class _Feature:
    description: str
    fields: tuple[str, ...]
    compute: Callable[[dict[str, np.ndarray]], np.ndarray]


def _log(x: np.ndarray) -> np.ndarray:
    return np.log(np.maximum(x, LOG_FLOOR))


def _pt(v: dict[str, np.ndarray]) -> np.ndarray:
    if "_pt" not in v:
        v["_pt"] = np.hypot(v["part_px"].astype(np.float64), v["part_py"].astype(np.float64))
    return v["_pt"]


def _abs_pid(v: dict[str, np.ndarray]) -> np.ndarray:
    return np.abs(v["part_pid"])


def _charged_hadron(v: dict[str, np.ndarray]) -> np.ndarray:
    lepton = np.isin(_abs_pid(v), (11, 13))
    return (v["part_charge"] != 0) & ~lepton


def _neutral_hadron(v: dict[str, np.ndarray]) -> np.ndarray:
    return (v["part_charge"] == 0) & (v["part_pid"] != 22)


_P4 = ("part_px", "part_py")
#: Feature name -> what it is, the fields it needs and how it is computed. ``jet_pt`` and
#: ``jet_energy`` are per-jet fields; all others are per constituent.
FEATURES: dict[str, _Feature] = {
    "deta": _Feature("part_deta, η of the constituent minus η of the jet", ("part_deta",),
                     lambda v: v["part_deta"]),
    "dphi": _Feature("part_dphi, φ of the constituent minus φ of the jet", ("part_dphi",),
                     lambda v: v["part_dphi"]),
    "log_pt": _Feature("log pT (GeV)", _P4, lambda v: _log(_pt(v))),
    "log_e": _Feature("log E (GeV)", ("part_energy",), lambda v: _log(v["part_energy"])),
    "log_pt_rel": _Feature("log(pT / jet_pt)", (*_P4, "jet_pt"),
                           lambda v: _log(_pt(v) / np.maximum(v["jet_pt"], LOG_FLOOR))),
    "log_e_rel": _Feature("log(E / jet_energy)", ("part_energy", "jet_energy"),
                          lambda v: _log(v["part_energy"]
                                         / np.maximum(v["jet_energy"], LOG_FLOOR))),
    "delta_r": _Feature("hypot(part_deta, part_dphi), distance to the jet axis",
                        ("part_deta", "part_dphi"),
                        lambda v: np.hypot(v["part_deta"], v["part_dphi"])),
    "charge": _Feature("part_charge", ("part_charge",), lambda v: v["part_charge"]),
    "is_electron": _Feature("1 if |part_pid| == 11", ("part_pid",),
                            lambda v: _abs_pid(v) == 11),
    "is_muon": _Feature("1 if |part_pid| == 13", ("part_pid",), lambda v: _abs_pid(v) == 13),
    "is_photon": _Feature("1 if part_pid == 22", ("part_pid",), lambda v: v["part_pid"] == 22),
    "is_charged_hadron": _Feature("1 if charged and not an electron or muon",
                                  ("part_pid", "part_charge"), _charged_hadron),
    "is_neutral_hadron": _Feature("1 if neutral and not a photon",
                                  ("part_pid", "part_charge"), _neutral_hadron),
}
#: The ParticleNet inputs: the seven of the top-tagging paper plus the charge.
DEFAULT_FEATURES = ("deta", "dphi", "log_pt", "log_e", "log_pt_rel", "log_e_rel", "delta_r",
                    "charge")
_JET_FIELDS = ("jet_pt", "jet_energy")
_SORT_BY = ("pt", "none")


@dataclasses.dataclass(frozen=True)
class ParticleCloudConfig(ConfigMixin):
    """How particle clouds are made; checked when constructed.

    Attributes:
        max_particles: Constituents kept per jet (``P``), the hardest ones; shorter jets
            are padded. Default 100, the ParticleNet top-tagging setting.
        features: Per-constituent features from :data:`FEATURES`, in channel order.
            Default: the ParticleNet inputs ``deta, dphi, log_pt, log_e, log_pt_rel,
            log_e_rel, delta_r, charge``.
        coords: Features used as coordinates (``points``), for the first kNN of
            ParticleNet. Default ``("deta", "dphi")``.
        sort_by: ``"pt"`` (hardest first, the default) or ``"none"`` (input order).
    """

    max_particles: int = 100
    features: tuple[str, ...] = DEFAULT_FEATURES
    coords: tuple[str, ...] = ("deta", "dphi")
    sort_by: Literal["pt", "none"] = "pt"

    def __post_init__(self) -> None:
        p = self.max_particles
        if isinstance(p, bool) or not isinstance(p, (int, np.integer)) or p < 1:
            raise ConfigError(f"max_particles: expected a positive integer, got {p!r}")
        object.__setattr__(self, "max_particles", int(p))
        object.__setattr__(self, "features", check_names("features", self.features, FEATURES))
        object.__setattr__(self, "coords", check_names("coords", self.coords, FEATURES))
        if self.sort_by not in _SORT_BY:
            raise ConfigError(f"sort_by: {self.sort_by!r} is not one of "
                              f"{', '.join(map(repr, _SORT_BY))}")

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The input fields (JetClass branch names) the clouds are made from."""
        fields: list[str] = list(_P4) if self.sort_by == "pt" else []
        for name in (*self.coords, *self.features):
            fields += FEATURES[name].fields
        return tuple(dict.fromkeys(fields))

    @property
    def shapes(self) -> dict[str, tuple[int, int]]:
        """Shape of one jet's ``points``, ``features`` and ``mask``."""
        p = self.max_particles
        return {"points": (len(self.coords), p), "features": (len(self.features), p),
                "mask": (1, p)}


def _jet_values(jets: Any, name: str, n: int) -> np.ndarray:
    arr = _field(jets, name)
    try:
        values = ak.to_numpy(ak.Array(arr) if not isinstance(arr, ak.Array) else arr,
                             allow_missing=False)
    except (ValueError, TypeError):
        values = None
    if values is None or values.ndim != 1 or values.dtype.kind not in "biuf":
        raise BadValueError(f"branch {name!r}: expected one number per jet, got type "
                            f"{ak.type(arr) if isinstance(arr, ak.Array) else type(arr)}")
    if len(values) != n:
        raise BadValueError(f"branch {name!r} has {len(values)} entries but the constituent "
                            f"branches have {n}: the branches do not belong together")
    return values


def _check_finite(name: str, values: np.ndarray, jet_of: np.ndarray | None) -> None:
    check_finite(name, values, jet_of, entry="jet", making="particle clouds")


def make_particle_clouds(jets: ak.Array | Mapping[str, Any],
                         config: ParticleCloudConfig | None = None) -> dict[str, torch.Tensor]:
    """Build the padded particle clouds of a whole chunk at once.

    Args:
        jets: One entry per jet with the fields of ``config.required_fields``: jagged
            ``part_*`` branches and per-jet ``jet_pt``/``jet_energy``; an awkward record
            array or a mapping of field name to array. The input is not modified.
        config: Features, coordinates and size (default: :class:`ParticleCloudConfig`).

    Returns:
        ``{"points", "features", "mask"}``, CPU tensors (float32, float32, bool).

    Shapes:
        - points: ``[N, len(config.coords), P]``
        - features: ``[N, len(config.features), P]``
        - mask: ``[N, 1, P]``, ``P = config.max_particles``; padded slots hold zeros.

    Raises:
        MissingBranchError: A required field is missing (a ``KeyError``).
        BadValueError: A field has the wrong type, the fields disagree in length, or a
            value is NaN or infinite; the error names the branch and has attributes
            ``branch``, ``count`` and ``jet_index``.
    """
    cfg = config if config is not None else ParticleCloudConfig()
    fields = cfg.required_fields
    part = tuple(f for f in fields if f not in _JET_FIELDS)
    counts, flat = _flatten(jets, part)  # never empty: every feature reads a part_ field
    n, total, p = len(counts), int(counts.sum()), cfg.max_particles
    jet_of = np.repeat(np.arange(n), counts)
    for name, values in flat.items():
        _check_finite(name, values, jet_of)
    values: dict[str, np.ndarray] = dict(flat)
    for name in _JET_FIELDS:
        if name in fields:
            per_jet = _jet_values(jets, name, n)
            _check_finite(name, per_jet, None)
            values[name] = np.repeat(per_jet.astype(np.float64), counts)

    offsets = np.concatenate(([0], np.cumsum(counts)))
    if cfg.sort_by == "pt":
        order = np.lexsort((-_pt(values), jet_of))  # by jet, then hardest first (stable)
    else:
        order = np.arange(total)
    rank = np.arange(total) - offsets[jet_of]  # position after sorting (jets stay in order)
    keep = rank < p
    src, dst_jet, dst_rank = order[keep], jet_of[keep], rank[keep]

    def dense(names: tuple[str, ...]) -> torch.Tensor:
        out = np.zeros((n, len(names), p), dtype=np.float32)
        for c, name in enumerate(names):  # a handful of features, not jets
            feat = np.asarray(FEATURES[name].compute(values), dtype=np.float64)
            out[dst_jet, c, dst_rank] = feat[src]
        return torch.from_numpy(out)

    mask = np.zeros((n, 1, p), dtype=bool)
    mask[dst_jet, 0, dst_rank] = True
    clouds = {"points": dense(cfg.coords), "features": dense(cfg.features),
              "mask": torch.from_numpy(mask)}
    log.debug("%d particle clouds of %d slots: %d of %d constituents kept, %d empty jets",
              n, p, int(keep.sum()), total, int(np.count_nonzero(counts == 0)))
    return clouds


def to_pyg(clouds: Mapping[str, torch.Tensor]) -> Any:
    """Turn padded clouds into a PyG ``Batch`` of one graph per jet, without padding.

    Vectorised: the real constituents are selected with the mask in one boolean index
    (jet after jet, in slot order), and the ``Batch`` is assembled directly from the flat
    ``x``, ``pos``, ``batch`` and ``ptr`` tensors (no ``Batch.from_data_list``, no loop).
    The slicing bookkeeping is filled in, so ``batch[i]`` and ``to_data_list()`` work.
    Graphs have no edges; build them with :func:`hepml.representations.knn.knn_graph_edges`.

    Args:
        clouds: The output of :func:`make_particle_clouds`.

    Returns:
        ``torch_geometric.data.Batch`` with ``x`` ``[n_tot, F]``, ``pos`` ``[n_tot, D]``,
        ``batch`` ``[n_tot]`` and ``ptr`` ``[N + 1]``; jets without constituents are
        graphs with no nodes.
    """
    from torch_geometric.data import Batch, Data  # heavy: imported only when used

    mask = clouds["mask"][:, 0, :].bool()  # [N, P]
    x = clouds["features"].transpose(1, 2)[mask]  # [n_tot, F], jet after jet
    pos = clouds["points"].transpose(1, 2)[mask]
    counts = mask.sum(1)
    n = len(counts)
    batch = torch.repeat_interleave(torch.arange(n), counts)
    ptr = torch.cat([torch.zeros(1, dtype=torch.long), torch.cumsum(counts, 0)])
    out = Batch(x=x, pos=pos, batch=batch, ptr=ptr)
    out._num_graphs = n
    out._batch_cls = Data  # what to_data_list / indexing rebuild
    out._slice_dict = {"x": ptr, "pos": ptr}
    out._inc_dict = {"x": torch.zeros(n, dtype=torch.long),
                     "pos": torch.zeros(n, dtype=torch.long)}
    return out


class ParticleClouds(Transform):
    """Transform: a chunk of jets -> padded particle clouds (see :func:`make_particle_clouds`).

    Pure: the input arrays are not modified and the output depends only on them and on
    the configuration, which :meth:`to_dict` records for checkpoints and run metadata.
    Calling it returns the dict ``{"points", "features", "mask"}``; ParticleNet takes
    them as ``model(**clouds)`` or ``model(clouds["points"], clouds["features"],
    clouds["mask"])``.

    Args:
        config: The cloud configuration (default: :class:`ParticleCloudConfig`), or a
            plain mapping that :meth:`ParticleCloudConfig.from_dict` accepts.

    Shapes:
        - input: ``N`` jets
        - output: ``points [N, D, P]``, ``features [N, F, P]``, ``mask [N, 1, P]``
    """

    config_class = ParticleCloudConfig

    def __call__(self, jets: ak.Array | Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """Clouds of ``jets``: ``{"points", "features", "mask"}``."""
        return make_particle_clouds(jets, self.config)

    @property
    def output_shape(self) -> dict[str, tuple[int, int]]:
        """Shape of one jet's ``points``, ``features`` and ``mask``."""
        return self.config.shapes

    empty_description = "jets have no constituents; their inputs are empty"

    def count_empty(self, jets: ak.Array | Mapping[str, Any]) -> int:
        """Number of jets in ``jets`` without constituents (all padding)."""
        name = next(f for f in (*self.required_fields, "part_px") if f not in _JET_FIELDS)
        return int(np.count_nonzero(np.asarray(ak.num(_field(jets, name), axis=1)) == 0))
