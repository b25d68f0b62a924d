"""Jet images: a chunk of jets (awkward, JetClass branches) -> a ``[N, C, n_eta, n_phi]`` tensor.

The whole chunk is built at once: the jagged constituents are flattened (they lie jet
after jet), every per-jet quantity (centre, rotation angle, flip signs, normalisation) is
a segment reduction over the flat constituents (``np.add.reduceat``, broadcast back with
``np.repeat``), and the pixels of all jets are filled by a scatter-add (``np.add.at``, one
per channel) over flat indices ``jet * C*H*W + channel * H*W + i_eta * W + i_phi``. There
is no Python loop over jets or constituents.

Coordinates are the JetClass ones: ``part_deta`` (eta of the constituent minus eta of the
jet) and ``part_dphi`` (phi difference wrapped to [-pi, pi)); the constituent pT is
``hypot(part_px, part_py)``. Pixel ``(i, j)`` of an image covers
``eta_lo + i*d_eta <= x < eta_lo + (i+1)*d_eta`` and likewise in phi (half-open bins);
constituents outside the window are dropped.

Optional preprocessing, applied in this order (all in the (Δη, Δφ) plane, the usual
small-angle approximation):

1. **centre** (``center``): shift so that the chosen point is at (0, 0):
   ``"centroid"``, the pT-weighted centroid of all constituents; ``"leading_subjet"``,
   the axis of the highest-pT subjet (see *Subjets* below); ``"jet_axis"`` (or ``None``),
   no shift. Δφ is wrapped back to [-pi, pi) after the shift.
2. **rotate**: turn the jet about the centre so that a chosen direction lies along the
   positive Δη axis, the image rows (vertical when ``image[c]`` is shown with
   ``imshow``). With ``rotate_to="principal_axis"`` (the default) that is the major
   principal axis of the pT-weighted second-moment tensor taken about the centre (an
   axis, so its sign is arbitrary); with ``rotate_to="second_subjet"`` (only together with
   ``center="leading_subjet"``) it is the direction from the leading to the second-hardest
   subjet, which then lies at positive Δη. Jets with a single subjet fall back to the
   principal axis.
3. **flip**: mirror each axis independently so that the half with the larger pT sum
   lies at positive Δη (high row index) and positive Δφ (high column index).
   With ``rotate_to="second_subjet"`` the Δη flip, if on, may mirror the second subjet
   to negative Δη.
4. **normalize**: divide each channel of each image by the sum of its pixels (``"sum"``,
   i.e. of the constituents inside the window) or by its largest pixel (``"max"``). An
   empty channel stays all zero.

Subjets: for ``center="leading_subjet"`` the constituents of the whole chunk are
reclustered at once with FastJet (scikit-hep ``fastjet``, its multi-event awkward
interface, one "event" per jet) into inclusive subjets of radius ``subjet_radius`` with
``subjet_algorithm`` (anti-kt by default), and sorted by pT. The clustering runs in the
image plane itself: each constituent becomes a massless pseudo-particle with its pT,
pseudorapidity Δη and azimuth Δφ (built from ``part_px``, ``part_py``, ``part_deta``,
``part_dphi``; ``part_pz`` and ``part_energy`` are not needed). Then the clustering
distance is exactly the ΔR of the image plane, FastJet's periodic φ takes care of jets
that straddle Δφ = ±π, and the subjet axes come out directly in (Δη, Δφ), with no
transformation back from the lab frame. Subjets are merged with FastJet's ``pt_scheme``
(pT summed, rapidity and φ pT-weighted, all massless), so a subjet's axis is the
pT-weighted centroid of its constituents in (Δη, Δφ), the same notion of centre as
``center="centroid"``. Constituents with pT = 0 are left out of the clustering (they carry
no weight, and FastJet would give them an infinite rapidity); a jet without constituents
of positive pT keeps the centre (0, 0).

The default pixel count follows the DeepTop CNN (G. Kasieczka, T. Plehn, M. Russell,
T. Schell, "Deep-learning Top Taggers or The End of QCD?", JHEP 05 (2017) 006,
arXiv:1701.08784): 40 x 40 pixels. The default window is a choice of this module, not
taken from that paper: 1.6 x 1.6 centred on the jet (half-width 0.8, pixels of 0.04),
the diameter of the R = 0.8 jets of JetClass and of the shipped sample, so that the whole
ΔR < R disc around the axis fits. Set ``eta_range``/``phi_range`` for other jet radii.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Mapping
from typing import Any, Literal

import awkward as ak
import numpy as np
import torch

from hepml._fastjet import fastjet as _import_fastjet
from hepml.errors import BadValueError, ConfigError
from hepml.io.expressions import wrap_phi
from hepml.representations._arrays import _field, _flatten
from hepml.representations._transform import ConfigMixin, Transform, check_names

log = logging.getLogger(__name__)

__all__ = ["CHANNELS", "CENTERS", "ROTATE_TO", "SUBJET_ALGORITHMS", "JetImageConfig",
           "JetImages", "make_jet_images"]

#: Channel names and what each pixel holds.
CHANNELS = {
    "pt": "sum of the constituents' pT (GeV)",
    "charged_pt": "sum of the pT of charged constituents (part_charge != 0)",
    "neutral_pt": "sum of the pT of neutral constituents (part_charge == 0)",
    "multiplicity": "number of constituents",
}
#: Accepted values of ``JetImageConfig.center`` (``None`` means ``"jet_axis"``).
CENTERS = ("centroid", "leading_subjet", "jet_axis")
#: Accepted values of ``JetImageConfig.subjet_algorithm`` (FastJet's algorithms).
SUBJET_ALGORITHMS = ("antikt", "kt", "cambridge")
#: Accepted values of ``JetImageConfig.rotate_to``.
ROTATE_TO = ("principal_axis", "second_subjet")
_NORMALIZE = (None, "sum", "max")
_DTYPES = {"float32": torch.float32, "float64": torch.float64}


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)


def _window(name: str, value: Any) -> tuple[float, float]:
    """A half-width ``w`` -> ``(-w, w)``; a pair ``(lo, hi)`` checked and kept."""
    if _is_number(value):
        w = float(value)
        if not math.isfinite(w) or w <= 0:
            raise ConfigError(f"{name}: a half-width must be a positive number, got {value!r}")
        return (-w, w)
    if isinstance(value, (list, tuple)) and len(value) == 2 and all(map(_is_number, value)):
        lo, hi = float(value[0]), float(value[1])
        if not (math.isfinite(lo) and math.isfinite(hi)) or lo >= hi:
            raise ConfigError(f"{name}: (lo, hi) needs finite lo < hi, got {value!r}")
        return (lo, hi)
    raise ConfigError(f"{name}: expected a half-width or a pair (lo, hi), got {value!r}")


@dataclasses.dataclass(frozen=True)
class JetImageConfig(ConfigMixin):
    """How jet images are made; checked when constructed.

    Attributes:
        npix: Pixels per image, ``n`` for ``n x n`` or ``(n_eta, n_phi)``. Default 40 x 40,
            the DeepTop images (arXiv:1701.08784). Stored as a pair.
        eta_range: Δη window, a half-width ``w`` for ``[-w, w)`` or a pair ``(lo, hi)``.
            Default 0.8 (the jet radius of JetClass and the shipped sample). Stored as a
            pair.
        phi_range: Δφ window, same forms as ``eta_range``. Default 0.8.
        center: ``"centroid"``, ``"leading_subjet"``, or ``"jet_axis"`` / ``None`` (no
            shift); see the module docstring. Default ``"jet_axis"``.
        subjet_radius: Radius R of the subjets that ``center="leading_subjet"`` centres
            on (FastJet reclustering of the constituents). Default 0.2.
        subjet_algorithm: ``"antikt"`` (default), ``"kt"`` or ``"cambridge"``
            (Cambridge/Aachen), the algorithm of that reclustering.
        rotate: Rotate the direction chosen by ``rotate_to`` onto the Δη axis. Default off.
        rotate_to: ``"principal_axis"`` (default), the major principal axis of the
            pT-weighted second-moment tensor, or ``"second_subjet"``, the direction from
            the leading to the second-hardest subjet (needs ``center="leading_subjet"``;
            jets with one subjet fall back to the principal axis). Used when ``rotate``
            is on.
        flip: Put the heavier half of each axis on the positive side. Default off.
        normalize: ``None``, ``"sum"`` (each channel of each image sums to 1) or
            ``"max"`` (each channel's largest pixel is 1). Default ``None``: pixels in GeV
            (or counts for ``multiplicity``).
        channels: Channel names from :data:`CHANNELS`, in output order. Default
            ``("pt",)``.
        dtype: ``"float32"`` (default) or ``"float64"``, the dtype of the output tensor.
            Sums are accumulated in float64 either way.
    """

    npix: int | tuple[int, ...] = (40, 40)
    eta_range: float | tuple[float, ...] = (-0.8, 0.8)
    phi_range: float | tuple[float, ...] = (-0.8, 0.8)
    center: Literal["centroid", "leading_subjet", "jet_axis"] | None = "jet_axis"
    subjet_radius: float = 0.2
    subjet_algorithm: Literal["antikt", "kt", "cambridge"] = "antikt"
    rotate: bool = False
    rotate_to: Literal["principal_axis", "second_subjet"] = "principal_axis"
    flip: bool = False
    normalize: Literal["sum", "max"] | None = None
    channels: tuple[str, ...] = ("pt",)
    dtype: Literal["float32", "float64"] = "float32"

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        npix = self.npix
        if _is_number(npix) and not isinstance(npix, (float, np.floating)):
            npix = (int(npix), int(npix))
        if (not isinstance(npix, (list, tuple)) or len(npix) != 2
                or not all(isinstance(k, (int, np.integer)) and not isinstance(k, bool)
                           for k in npix)
                or min(npix) < 1):
            raise ConfigError(f"npix: expected a positive integer or a pair of them "
                              f"(n_eta, n_phi), got {self.npix!r}")
        set_(self, "npix", (int(npix[0]), int(npix[1])))
        set_(self, "eta_range", _window("eta_range", self.eta_range))
        set_(self, "phi_range", _window("phi_range", self.phi_range))
        center = "jet_axis" if self.center is None else self.center
        if center not in CENTERS:
            raise ConfigError(f"center: {self.center!r} is not one of "
                              f"{', '.join(map(repr, CENTERS))} or null")
        set_(self, "center", center)
        if not _is_number(self.subjet_radius) or not 0 < self.subjet_radius < math.inf:
            raise ConfigError(
                f"subjet_radius: expected a positive number, got {self.subjet_radius!r}")
        set_(self, "subjet_radius", float(self.subjet_radius))
        if self.subjet_algorithm not in SUBJET_ALGORITHMS:
            raise ConfigError(f"subjet_algorithm: {self.subjet_algorithm!r} is not one of "
                              f"{', '.join(map(repr, SUBJET_ALGORITHMS))}")
        if self.rotate_to not in ROTATE_TO:
            raise ConfigError(f"rotate_to: {self.rotate_to!r} is not one of "
                              f"{', '.join(map(repr, ROTATE_TO))}")
        if self.rotate_to == "second_subjet" and center != "leading_subjet":
            raise ConfigError(f"rotate_to: 'second_subjet' needs center: 'leading_subjet' "
                              f"(got center: {center!r}); set center or use "
                              "rotate_to: 'principal_axis'")
        for name in ("rotate", "flip"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"{name}: expected true or false, got {getattr(self, name)!r}")
        if self.normalize not in _NORMALIZE:
            raise ConfigError(f"normalize: {self.normalize!r} is not one of 'sum', 'max' or null")
        set_(self, "channels", check_names("channels", self.channels, CHANNELS))
        if self.dtype not in _DTYPES:
            raise ConfigError(
                f"dtype: {self.dtype!r} is not one of {', '.join(map(repr, _DTYPES))}")

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(C, n_eta, n_phi)`` of one image."""
        return (len(self.channels), *self.npix)

    @property
    def required_fields(self) -> tuple[str, ...]:
        """The input fields these images are made from."""
        fields = ["part_px", "part_py", "part_deta", "part_dphi"]
        if {"charged_pt", "neutral_pt"} & set(self.channels):
            fields.append("part_charge")
        return tuple(fields)


def _wrap_phi(x: np.ndarray) -> np.ndarray:
    """Wrap angles to [-pi, pi) (returns ``x`` itself when all are inside already)."""
    if len(x) == 0 or (x.min() >= -math.pi and x.max() < math.pi):
        return x
    return wrap_phi(x)


class _Segments:
    """Per-jet reductions over the flat constituents, which lie jet after jet.

    ``np.add.reduceat`` over contiguous segments is several times faster than
    ``np.bincount`` with jet indices; empty jets get 0.
    """

    def __init__(self, counts: np.ndarray) -> None:
        self.counts = counts
        self.n = len(counts)
        self.offsets = np.concatenate(([0], np.cumsum(counts)))
        self.nonempty = counts > 0
        self.starts = self.offsets[:-1][self.nonempty]
        self.all_nonempty = bool(self.nonempty.all())

    def _reduce(self, ufunc: np.ufunc, values: np.ndarray, fill: float) -> np.ndarray:
        if self.all_nonempty:
            return ufunc.reduceat(values, self.starts) if self.n else np.zeros(0, values.dtype)
        out = np.full(self.n, fill, dtype=values.dtype)
        if len(self.starts):
            out[self.nonempty] = ufunc.reduceat(values, self.starts)
        return out

    def sum(self, values: np.ndarray) -> np.ndarray:
        """Sum of ``values`` per jet."""
        return self._reduce(np.add, values, 0)

    def max(self, values: np.ndarray) -> np.ndarray:
        """Maximum of ``values`` per jet (-inf for empty jets)."""
        return self._reduce(np.maximum, values, -np.inf)

    def min(self, values: np.ndarray, fill: float) -> np.ndarray:
        """Minimum of ``values`` per jet (``fill`` for empty jets)."""
        return self._reduce(np.minimum, values, fill)

    def expand(self, per_jet: np.ndarray) -> np.ndarray:
        """Repeat a per-jet value for each of the jet's constituents."""
        return np.repeat(per_jet, self.counts)


def _check_finite(flat: dict[str, np.ndarray], seg: _Segments) -> None:
    for name, values in flat.items():
        if np.isfinite(values.sum()):  # one cheap pass; NaN or inf anywhere spoils the sum
            continue
        bad = ~np.isfinite(values)
        if not bad.any():  # finite values whose sum overflowed
            continue
        n_bad = int(bad.sum())
        first = int(np.searchsorted(seg.offsets, np.argmax(bad), side="right") - 1)
        exc = BadValueError(
            f"branch {name!r}: {n_bad} NaN or infinite value(s), the first in jet {first} "
            "(entry index within this chunk). Remove or fix these jets before making images.")
        exc.branch, exc.count, exc.jet_index = name, n_bad, first
        raise exc


def _safe_div(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """``num / den`` where the real ``den > 0``, else 0 (``num`` may be complex)."""
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)




def _subjet_axes(cfg: JetImageConfig, z: np.ndarray, pt: np.ndarray,
                 seg: _Segments) -> tuple[np.ndarray, np.ndarray]:
    """Axes of each jet's hardest and second-hardest subjet, as ``Δη + iΔφ``.

    All jets of the chunk are reclustered in one FastJet call (one "event" per jet, see
    the module docstring). Jets without constituents of positive pT are not passed to
    FastJet at all.

    Returns:
        ``(leading, second)``, complex arrays of length ``seg.n``; NaN where a jet has no
        such subjet. Δφ of an axis lies in (-pi, pi].
    """
    fastjet = _import_fastjet()
    algorithm = {"antikt": fastjet.antikt_algorithm, "kt": fastjet.kt_algorithm,
                 "cambridge": fastjet.cambridge_algorithm}[cfg.subjet_algorithm]
    jet_def = fastjet.JetDefinition(algorithm, cfg.subjet_radius, fastjet.pt_scheme)
    axes = np.full((seg.n, 2), complex(np.nan, np.nan))
    positive = pt > 0
    counts = seg.sum(positive.astype(np.int64))
    clustered = np.flatnonzero(counts > 0)
    if len(clustered) == 0:
        return axes[:, 0], axes[:, 1]
    p, eta, phi = pt[positive], z.real[positive], z.imag[positive]
    pseudo = ak.unflatten(ak.zip({"px": p * np.cos(phi), "py": p * np.sin(phi),
                                  "pz": p * np.sinh(eta), "E": p * np.cosh(eta)},
                                 with_name="Momentum4D"),
                          counts[clustered])
    subjets = fastjet.ClusterSequence(pseudo, jet_def).inclusive_jets()  # not sorted
    sj_pt = np.hypot(subjets.px, subjets.py)
    order = ak.argsort(sj_pt, axis=1, ascending=False, stable=True)[:, :2]
    top = subjets[order]
    n_top = np.asarray(ak.num(top, axis=1))
    flat = {k: ak.to_numpy(ak.flatten(top[k], axis=1)).astype(np.float64)
            for k in ("px", "py", "pz")}
    flat_pt = np.hypot(flat["px"], flat["py"])
    axis = np.empty(len(flat_pt), dtype=np.complex128)
    axis.real = np.arcsinh(_safe_div(flat["pz"], flat_pt))  # massless: rapidity = η
    axis.imag = np.arctan2(flat["py"], flat["px"])
    rank = np.arange(len(flat_pt)) - np.repeat(np.cumsum(n_top) - n_top, n_top)
    axes[np.repeat(clustered, n_top), rank] = axis
    log.debug("reclustered %d jets (%d constituents with pT > 0) into %s R=%g subjets",
              len(clustered), len(p), cfg.subjet_algorithm, cfg.subjet_radius)
    return axes[:, 0], axes[:, 1]


def make_jet_images(jets: ak.Array | Mapping[str, Any],
                    config: JetImageConfig | None = None) -> torch.Tensor:
    """Build the jet images of a whole chunk at once.

    Args:
        jets: One entry per jet with the jagged JetClass fields ``part_px``, ``part_py``,
            ``part_deta``, ``part_dphi`` (and ``part_charge`` for the charged/neutral
            channels); an awkward record array or a mapping of field name to array.
            Constituents may be in any order; a jet may have none (its image is zero).
            The input is not modified.
        config: Pixel grid, preprocessing and channels (default: :class:`JetImageConfig`).

    Returns:
        The images, ``config.dtype`` (float32 by default), on the CPU.

    Shapes:
        - output: ``[N, C, n_eta, n_phi]``, ``N = len(jets)``, ``C = len(config.channels)``;
          axis 2 runs along Δη, axis 3 along Δφ, both increasing with the index.

    Raises:
        MissingBranchError: A required field is missing (a ``KeyError``).
        BadValueError: A field is not jagged, the constituent fields disagree in length,
            or a value is NaN or infinite. For the last the error has attributes
            ``branch``, ``count`` (bad values) and ``jet_index`` (first jet, counted within
            ``jets``) so that the caller can add the file and entry range.
    """
    cfg = config if config is not None else JetImageConfig()
    counts, flat = _flatten(jets, cfg.required_fields)
    seg = _Segments(counts)
    n = seg.n
    n_ch, (h, w) = len(cfg.channels), cfg.npix
    _check_finite(flat, seg)

    px, py = flat["part_px"], flat["part_py"]
    pt = px.astype(np.float64)  # always a copy: safe to work in place
    pt *= pt
    py2 = py.astype(np.float64)
    py2 *= py2
    pt += py2
    np.sqrt(pt, out=pt)
    del py2
    x, y = flat["part_deta"], flat["part_dphi"]
    if cfg.center != "jet_axis" or cfg.rotate or cfg.flip:
        # (Δη, Δφ) as one complex number per constituent: shifts, rotations and moments
        # become single complex operations
        z = np.empty(len(pt), dtype=np.complex128)
        z.real, z.imag = x, y
        if cfg.center != "jet_axis":
            if cfg.center == "centroid":
                centre = _safe_div(seg.sum(pt * z), seg.sum(pt))
            else:
                centre, second = _subjet_axes(cfg, z, pt, seg)
                centre[np.isnan(centre)] = 0  # no subjet: keep the jet axis
            z -= seg.expand(centre)
            dphi = z.imag
            if (wrapped := _wrap_phi(dphi)) is not dphi:
                z.imag = wrapped
        if cfg.rotate:
            # sum pT z^2 = sum pT (x^2 - y^2) + 2i sum pT x y: its phase is twice the angle
            # of the major principal axis (0 for a round or empty jet)
            zz = z * z
            zz *= pt
            turn = np.exp(-0.5j * np.angle(seg.sum(zz)))
            del zz
            if cfg.rotate_to == "second_subjet":  # then center is "leading_subjet"
                d = second - centre  # the second subjet seen from the centre
                d.imag = _wrap_phi(np.nan_to_num(d.imag))
                ok = ~np.isnan(second) & (d != 0)
                turn = np.where(ok, np.exp(-1j * np.angle(np.where(ok, d, 1))), turn)
            z *= seg.expand(turn)
        if cfg.flip:  # sign of (pT on the positive side - pT on the negative side)
            for part in (z.real, z.imag):  # views into z, flipped in place
                part *= seg.expand(np.where(seg.sum(pt * np.sign(part)) < 0, -1.0, 1.0))
        x, y = z.real, z.imag

    (elo, ehi), (plo, phi_hi) = cfg.eta_range, cfg.phi_range
    fi = x.astype(np.float64, copy=False) - elo
    fi *= h / (ehi - elo)
    np.floor(fi, out=fi)
    fj = y.astype(np.float64, copy=False) - plo
    fj *= w / (phi_hi - plo)
    np.floor(fj, out=fj)
    inside = (fi >= 0) & (fi < h) & (fj >= 0) & (fj < w)
    keep = np.flatnonzero(inside)
    fi *= w
    fi += fj  # pixel within the image, exact in float64
    del fj
    counts_in = np.diff(np.searchsorted(keep, seg.offsets))  # kept constituents per jet
    pixel = fi[keep].astype(np.int64)
    pixel += np.repeat(np.arange(n, dtype=np.int64) * (n_ch * h * w), counts_in)
    pt_in = pt[keep]
    charged = flat["part_charge"][keep] != 0 if "part_charge" in flat else None
    seg_in = _Segments(counts_in) if cfg.normalize == "sum" else None
    out_dtype = np.float32 if cfg.dtype == "float32" else np.float64
    # np.zeros leaves the pages that no constituent reaches to the OS's shared zero page
    images = np.zeros(n * n_ch * h * w, dtype=out_dtype)
    for k, name in enumerate(cfg.channels):  # a handful of channels, not jets
        weight = np.ones(len(keep)) if name == "multiplicity" else pt_in
        mask = None
        if name in ("charged_pt", "neutral_pt"):
            mask = charged if name == "charged_pt" else ~charged
        if seg_in is not None:  # scale the weights rather than the mostly empty images
            if mask is not None:
                weight = np.where(mask, weight, 0.0)
            total = seg_in.sum(weight)
            weight = weight * seg_in.expand(1.0 / np.where(total > 0, total, 1.0))
        index = pixel + k * h * w if k else pixel
        if mask is not None:
            sel = np.flatnonzero(mask)
            index, weight = index[sel], weight[sel]
        np.add.at(images, index, weight.astype(out_dtype, copy=False))
    if cfg.normalize == "max" and n:  # each channel's largest pixel becomes 1
        images = images.reshape(n * n_ch, h * w)
        peak = images.max(axis=1, keepdims=True)
        images /= np.where(peak > 0, peak, 1)
    log.debug("%d jet images %s: %d of %d constituents inside the window", n, cfg.shape,
              len(keep), len(pt))
    return torch.from_numpy(images).view(n, n_ch, h, w)


class JetImages(Transform):
    """Transform: a chunk of jets -> jet images (see :func:`make_jet_images`).

    Pure: the input arrays are not modified and the output depends only on them and on
    the configuration, which :meth:`to_dict` records for checkpoints and run metadata.

    Args:
        config: The image configuration (default: :class:`JetImageConfig`), or a plain
            mapping that :meth:`JetImageConfig.from_dict` accepts.

    Shapes:
        - input: ``N`` jets
        - output: ``[N, C, n_eta, n_phi]``
    """

    config_class = JetImageConfig

    def __call__(self, jets: ak.Array | Mapping[str, Any]) -> torch.Tensor:
        """Images of ``jets``, ``[N, C, n_eta, n_phi]``."""
        return make_jet_images(jets, self.config)

    @property
    def output_shape(self) -> tuple[int, int, int]:
        """``(C, n_eta, n_phi)`` of one image."""
        return self.config.shape

    empty_description = "jets have no constituents; their inputs are empty"

    def count_empty(self, jets: ak.Array | Mapping[str, Any]) -> int:
        """Number of jets in ``jets`` without constituents (their images are all zero)."""
        return int(np.count_nonzero(np.asarray(ak.num(_field(jets, "part_px"), axis=1)) == 0))
