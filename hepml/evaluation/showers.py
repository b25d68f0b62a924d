"""Generated calorimeter showers against reference showers, with torch on the tensors' device.

A fast shower generator (a GAN, a flow, a diffusion model) is judged by how well its
showers reproduce those of the full simulation. This module computes

* the **high-level observables** of CaloGAN (Paganini, de Oliveira, Nachman,
  arXiv:1705.02355 and arXiv:1712.10321): layer energies and fractions, the response,
  the longitudinal shower depth and its width, the lateral widths per layer, the
  sparsity and the ratio of the two hottest cells (:func:`shower_observables`);
* the **separation power** of each observable's histogram, the histogram distance of
  the fast calorimeter simulation challenge (:func:`separation_power`);
* a **classifier two-sample test**: an MLP trained to tell generated from reference
  showers; a test AUC of 0.5 means the two samples cannot be told apart
  (:func:`classifier_two_sample_test`);
* the **response and resolution** against the incident energy
  (:func:`response_vs_energy`);

and puts them together in :func:`compare_showers`. Plots are in
:mod:`hepml.evaluation.shower_plots`.

Conventions: energies in GeV, lengths in mm; the layer index ``i`` runs from 0 (front)
to ``L - 1``; every observable is a float64 tensor ``[N]`` (float32 on ``mps``, which has
no float64) on the device of the cell energies. A quantity that is undefined for a
shower (a ratio with a zero denominator: the fractions, widths and energy ratio of a
layer without energy, everything divided by a zero total energy) is set to **0**, with
no warning.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from hepml.errors import BadValueError, EmptyInputError, HepmlError
from hepml.evaluation.metrics import bootstrap_auc, roc_auc
from hepml.io.calo import CALOGAN, CaloLayout, Showers
from hepml.training.device import float_dtype

log = logging.getLogger(__name__)

__all__ = [
    "HIGH_LEVEL",
    "MIN_SHOWERS",
    "shower_observables",
    "observable_names",
    "high_level_names",
    "separation_power",
    "separation_powers",
    "high_level_features",
    "classifier_two_sample_test",
    "response_vs_energy",
    "compare_showers",
]

#: Fewest showers per sample that :func:`classifier_two_sample_test` accepts.
MIN_SHOWERS = 100

#: Quantiles of the reference that bound the histogram of :func:`separation_power`.
QUANTILE_RANGE = (0.001, 0.999)


def observable_names(n_layers: int) -> list[str]:
    """Names of the observables of :func:`shower_observables` for ``n_layers`` layers, in order."""
    per = range(n_layers)
    return ([f"E_{i}" for i in per] + ["E_tot", "response"] + [f"f_{i}" for i in per]
            + ["depth", "depth_width", "depth_weighted_energy"]
            + [f"width_x_{i}" for i in per] + [f"width_y_{i}" for i in per]
            + [f"sparsity_{i}" for i in per] + [f"e_ratio_{i}" for i in per])


def high_level_names(n_layers: int) -> tuple[str, ...]:
    """Default classifier features for ``n_layers`` layers.

    All observables but ``depth_weighted_energy``, which is ``depth · E_tot`` and adds
    nothing to a classifier that sees both.
    """
    return tuple(n for n in observable_names(n_layers) if n != "depth_weighted_energy")


#: Default classifier features for the CaloGAN layout (3 layers, 22 observables).
HIGH_LEVEL: tuple[str, ...] = high_level_names(CALOGAN.n_layers)


# ------------------------------------------------------------------------------ helpers


def _tensor(x: Any, name: str, device: torch.device | None = None) -> torch.Tensor:
    """``x`` as a floating tensor (on ``device`` when given); raise on NaN or inf."""
    if hasattr(x, "detach"):
        t = x.detach()
    else:
        try:
            t = torch.as_tensor(np.ascontiguousarray(x))  # negative strides (x[::-1])
        except (TypeError, ValueError, RuntimeError) as err:
            raise BadValueError(f"{name}: cannot make a tensor of {type(x).__name__}: "
                                f"{err}") from err
    if device is not None:
        t = t.to(device)
    if not t.is_floating_point():
        if t.dtype == torch.bool or t.is_complex():
            raise BadValueError(f"{name}: need real numbers, got dtype {t.dtype}")
        t = t.to(float_dtype(t.device))
    bad = ~torch.isfinite(t)
    if bool(bad.any()):
        raise BadValueError(f"{name}: {int(bad.sum())} of {t.numel()} values are NaN or "
                            "infinite; remove or fix these showers first")
    return t


def _safe_div(num: torch.Tensor, den: torch.Tensor) -> torch.Tensor:
    """``num / den`` where ``den > 0``, else 0 (no division by zero is evaluated)."""
    ok = den > 0
    return torch.where(ok, num / torch.where(ok, den, torch.ones_like(den)),
                       torch.zeros_like(num))


def _weighted_std(profile: torch.Tensor, centres: torch.Tensor,
                  total: torch.Tensor) -> torch.Tensor:
    """Energy-weighted standard deviation of ``centres`` with weights ``profile`` [N, K].

    Two passes (mean, then the mean squared deviation), so that one hit cell gives exactly 0.
    Negative variances (negative cell energies) are clamped to 0.
    """
    mean = _safe_div(profile @ centres, total)
    var = _safe_div((profile * (centres - mean[:, None]) ** 2).sum(1), total)
    return var.clamp_(min=0.0).sqrt_()


# ----------------------------------------------------------------------- observables


def shower_observables(layers: Sequence[torch.Tensor | np.ndarray],
                       energy: torch.Tensor | np.ndarray, *, layout: CaloLayout = CALOGAN,
                       threshold: float = 0.0) -> dict[str, torch.Tensor]:
    """The CaloGAN high-level observables of each shower.

    With ``E_i`` the energy in layer ``i`` and ``E_tot = Σ_i E_i``:

    ``E_i``
        energy in layer ``i`` (GeV); ``E_tot`` their sum.
    ``response``
        ``E_tot`` / incident energy.
    ``f_i``
        ``E_i / E_tot``.
    ``depth``
        shower depth ``Σ_i i E_i / E_tot``; ``depth_width`` its energy-weighted standard
        deviation ``sqrt(Σ_i i² E_i / E_tot − depth²)``; ``depth_weighted_energy`` the
        paper's ``l_d = Σ_i i E_i`` (GeV).
    ``width_x_i``, ``width_y_i``
        energy-weighted standard deviation of the cell centres in x (columns) and y (rows)
        within layer ``i``, in mm (:meth:`CaloLayout.cell_centres_mm`).
    ``sparsity_i``
        fraction of layer ``i``'s cells with energy ``> threshold``.
    ``e_ratio_i``
        ``(E_1st − E_2nd) / (E_1st + E_2nd)`` of the two hottest cells of layer ``i``
        (1 when one cell holds all the energy, 0 for two equal hottest cells).

    Undefined values are 0: ``f_i``, ``depth``, ``depth_width`` and ``response`` when the
    denominator (``E_tot``, the incident energy) is not positive; ``width_x_i``,
    ``width_y_i`` when ``E_i <= 0``; ``e_ratio_i`` when the two hottest cells hold no
    energy. Cell energies are used as given (negative values are not clipped; a negative
    variance is clamped to 0). The variances are computed in two passes, so that a single
    hit cell has a width of exactly 0.

    Args:
        layers: One ``[N, rows, cols]`` array or tensor per layer (GeV). The number of
            layers and their shapes come from the data.
        energy: Incident energy per shower ``[N]`` (GeV).
        layout: Gives the cell sizes; its shapes must match those of ``layers``.
        threshold: Cell energy (GeV) above which a cell counts as hit for ``sparsity_i``.

    Returns:
        Observable name → ``[N]`` float tensor on the device of ``layers[0]``, in the order
        of :func:`observable_names`.

    Raises:
        BadValueError: Shapes that do not match the layout or each other, NaN or inf.
    """
    if len(layers) == 0:
        raise BadValueError("shower_observables: no layers given")
    first = _tensor(layers[0], "layer_0")
    device = first.device
    dtype = float_dtype(device)
    cells = [first.to(dtype)] + [_tensor(x, f"layer_{i}", device).to(dtype)
                                 for i, x in enumerate(layers[1:], start=1)]
    shapes = tuple(tuple(int(s) for s in x.shape[1:]) for x in cells)
    if any(x.dim() != 3 for x in cells):
        raise BadValueError("shower_observables: each layer must be [N, rows, cols], got shapes "
                            f"{[tuple(x.shape) for x in cells]}")
    if shapes != tuple(tuple(s) for s in layout.shapes):
        raise BadValueError(f"shower_observables: the layers have shapes {shapes} but layout "
                            f"{layout.name!r} has {tuple(layout.shapes)}; pass the layout of "
                            "these showers")
    n = cells[0].shape[0]
    if any(x.shape[0] != n for x in cells):
        raise BadValueError(f"shower_observables: the layers hold different numbers of showers: "
                            f"{[x.shape[0] for x in cells]}")
    incident = _tensor(energy, "energy", device).to(dtype).reshape(-1)
    if incident.numel() != n:
        raise BadValueError(f"shower_observables: {incident.numel()} incident energies for "
                            f"{n} showers")
    n_layers = len(cells)
    e_layer = torch.stack([x.sum((1, 2)) for x in cells], 1)  # [N, L]
    e_tot = e_layer.sum(1)
    index = torch.arange(n_layers, dtype=dtype, device=device)
    fractions = _safe_div(e_layer, e_tot[:, None].expand_as(e_layer))
    depth_weighted = e_layer @ index
    depth = _safe_div(depth_weighted, e_tot)
    depth_width = _weighted_std(e_layer, index, e_tot)

    out: dict[str, torch.Tensor] = {f"E_{i}": e_layer[:, i] for i in range(n_layers)}
    out["E_tot"] = e_tot
    out["response"] = _safe_div(e_tot, incident)
    out.update({f"f_{i}": fractions[:, i] for i in range(n_layers)})
    out["depth"] = depth
    out["depth_width"] = depth_width
    out["depth_weighted_energy"] = depth_weighted
    width_x, width_y, sparsity, e_ratio = {}, {}, {}, {}
    for i, x in enumerate(cells):  # a loop over the few layers, not over showers
        y_mm, x_mm = (torch.as_tensor(c, dtype=dtype, device=device)
                      for c in layout.cell_centres_mm(i))
        e_i = e_layer[:, i]
        width_x[f"width_x_{i}"] = _weighted_std(x.sum(1), x_mm, e_i)
        width_y[f"width_y_{i}"] = _weighted_std(x.sum(2), y_mm, e_i)
        flat = x.reshape(n, x.shape[1] * x.shape[2])
        n_cells = flat.shape[1]
        sparsity[f"sparsity_{i}"] = ((flat > threshold).sum(1).to(dtype) / n_cells
                                     if n_cells else torch.zeros(n, dtype=dtype, device=device))
        if n_cells >= 2:
            top = flat.topk(2, dim=1).values
            hot, second = top[:, 0], top[:, 1]
        elif n_cells == 1:
            hot, second = flat[:, 0], torch.zeros(n, dtype=dtype, device=device)
        else:
            hot = second = torch.zeros(n, dtype=dtype, device=device)
        e_ratio[f"e_ratio_{i}"] = _safe_div(hot - second, hot + second)
    out.update(width_x)
    out.update(width_y)
    out.update(sparsity)
    out.update(e_ratio)
    return out


# ------------------------------------------------------------------- separation power


def _sorted_quantiles(values: torch.Tensor, qs: Sequence[float]) -> list[float]:
    """Quantiles with linear interpolation (as ``numpy.quantile``), by one sort: any size."""
    s = torch.sort(values.reshape(-1)).values
    n = s.numel()
    out = []
    for q in qs:
        pos = q * (n - 1)
        lo = int(math.floor(pos))
        hi = min(lo + 1, n - 1)
        frac = pos - lo
        a, b = float(s[lo]), float(s[hi])
        out.append(a + (b - a) * frac)
    return out


def _histogram(values: torch.Tensor, edges: torch.Tensor, *, clip: bool) -> torch.Tensor:
    """Counts in the bins ``[e_k, e_k+1)`` (the last bin closed), as ``numpy.histogram``.

    With ``clip`` values outside the edges go into the first or last bin; else they are
    dropped.
    """
    lo, hi = edges[0], edges[-1]
    if clip:
        values = values.clamp(lo, hi)
    else:
        values = values[(values >= lo) & (values <= hi)]
    index = torch.bucketize(values, edges[1:-1], right=True)
    return torch.bincount(index, minlength=edges.numel() - 1).to(edges.dtype)


def _edges(values: torch.Tensor, bins: int | torch.Tensor | np.ndarray | Sequence[float],
           other: torch.Tensor | None, name: str) -> torch.Tensor:
    dtype = float_dtype(values.device)
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if int(bins) < 1:
            raise BadValueError(f"{name}: bins must be >= 1, got {bins}")
        lo, hi = _sorted_quantiles(values, QUANTILE_RANGE)
        if not hi > lo and other is not None:  # a spike in the reference: use both ranges
            both = torch.cat([values.reshape(-1), other.reshape(-1)])
            lo, hi = float(both.min()), float(both.max())
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        return torch.linspace(lo, hi, int(bins) + 1, dtype=dtype, device=values.device)
    edges = _tensor(bins, f"{name}: bin edges", values.device).to(dtype).reshape(-1)
    if edges.numel() < 2 or not bool((edges[1:] > edges[:-1]).all()):
        raise BadValueError(f"{name}: bin edges must be at least 2 increasing values, got "
                            f"{edges.tolist()[:10]}")
    return edges


def separation_power(reference: torch.Tensor | np.ndarray, generated: torch.Tensor | np.ndarray,
                     *, bins: int | torch.Tensor = 50) -> float:
    """Separation power ⟨S²⟩ of the histograms of two samples of one observable.

    ``⟨S²⟩ = ½ Σ_k (h_r,k − h_g,k)² / (h_r,k + h_g,k)`` with both histograms normalised to
    unit sum and bins with ``h_r,k + h_g,k = 0`` skipped: 0 for identical histograms, 1
    for histograms without a common bin.

    Args:
        reference: Values of the reference sample (any shape; flattened).
        generated: Values of the generated sample.
        bins: A number of equal-width bins between the reference's 0.1 % and 99.9 %
            quantiles (linear interpolation, as ``numpy.quantile``), or the bin edges.
            Values outside the edges are clipped into the first and last bin. When the
            two quantiles coincide (a spike), the range of both samples together is used,
            and when that is a single value too, that value ± 0.5. Because of the
            clipping, a generated sample entirely outside the reference's range shares an
            edge bin with the reference's tail (about 1/bins of it), and ⟨S²⟩ comes out a
            little below 1 although the samples do not overlap.

    Returns:
        ⟨S²⟩ as a float in [0, 1].

    Raises:
        BadValueError: NaN or inf values, bad edges.
        EmptyInputError: An empty sample.
    """
    ref = _tensor(reference, "separation_power: reference").reshape(-1)
    gen = _tensor(generated, "separation_power: generated", ref.device).reshape(-1)
    if ref.numel() == 0 or gen.numel() == 0:
        raise EmptyInputError(f"separation_power: an empty sample ({ref.numel()} reference, "
                              f"{gen.numel()} generated values)")
    dtype = float_dtype(ref.device)
    ref, gen = ref.to(dtype), gen.to(dtype)
    edges = _edges(ref, bins, gen, "separation_power")
    h_r = _histogram(ref, edges, clip=True)
    h_g = _histogram(gen, edges, clip=True)
    h_r, h_g = h_r / h_r.sum(), h_g / h_g.sum()
    total = h_r + h_g
    keep = total > 0
    return float(0.5 * ((h_r[keep] - h_g[keep]) ** 2 / total[keep]).sum())


def separation_powers(reference: Mapping[str, torch.Tensor], generated: Mapping[str, torch.Tensor],
                      *, bins: int | torch.Tensor | Mapping[str, Any] = 50) -> dict[str, float]:
    """:func:`separation_power` of every observable present in both mappings.

    Args:
        reference: Observable name → values (e.g. from :func:`shower_observables`).
        generated: The same for the generated sample.
        bins: As in :func:`separation_power`, for all observables, or a mapping
            name → bins (50 for names it lacks).

    Returns:
        Name → ⟨S²⟩, in the order of ``reference``.

    Raises:
        BadValueError: No observable in common.
    """
    names = [k for k in reference if k in generated]
    if not names:
        raise BadValueError(f"separation_powers: no observable in common between "
                            f"{sorted(reference)[:10]} and {sorted(generated)[:10]}")
    out = {}
    for name in names:
        b = bins.get(name, 50) if isinstance(bins, Mapping) else bins
        try:
            out[name] = separation_power(reference[name], generated[name], bins=b)
        except HepmlError as err:
            raise err.with_context(name) from err
    return out


# ------------------------------------------------------------------- classifier test


def high_level_features(obs: Mapping[str, torch.Tensor], names: Sequence[str] | None = None
                        ) -> tuple[torch.Tensor, list[str]]:
    """Stack observables into a feature matrix.

    Args:
        obs: Observable name → ``[N]`` values (e.g. from :func:`shower_observables`).
        names: Columns, in order; default every observable of ``obs``.

    Returns:
        ``(features [N, d], names)``, on the device of the first observable.

    Raises:
        BadValueError: A name that ``obs`` lacks, or observables of different lengths.
    """
    names = list(obs) if names is None else list(names)
    missing = [n for n in names if n not in obs]
    if missing:
        raise BadValueError(f"high_level_features: no observable {missing}; there are "
                            f"{list(obs)}")
    if not names:
        raise BadValueError("high_level_features: no features selected")
    first = _tensor(obs[names[0]], names[0])
    dtype = float_dtype(first.device)
    cols = [_tensor(obs[n], n, first.device).to(dtype).reshape(-1) for n in names]
    if len({c.numel() for c in cols}) > 1:
        raise BadValueError(f"high_level_features: observables of different lengths "
                            f"{ {n: c.numel() for n, c in zip(names, cols, strict=True)} }")
    return torch.stack(cols, 1), names


def _mlp(n_in: int, hidden: Sequence[int]) -> nn.Module:
    layers: list[nn.Module] = []
    for width in hidden:
        layers += [nn.Linear(n_in, int(width)), nn.ReLU()]
        n_in = int(width)
    layers.append(nn.Linear(n_in, 1))
    return nn.Sequential(*layers)


def _split(n: int, fractions: Sequence[float], gen: torch.Generator) -> list[torch.Tensor]:
    """A random permutation of ``range(n)`` cut into consecutive parts of these fractions."""
    perm = torch.randperm(n, generator=gen)
    sizes = [int(round(f * n)) for f in fractions]
    out, start = [], 0
    for size in sizes:
        out.append(perm[start:start + size])
        start += size
    out.append(perm[start:])
    return out


def classifier_two_sample_test(reference: torch.Tensor, generated: torch.Tensor, *,
                               hidden: Sequence[int] = (64, 64), epochs: int = 30,
                               batch_size: int = 256, learning_rate: float = 1e-3,
                               test_fraction: float = 0.5, seed: int = 0,
                               device: str | torch.device | None = None,
                               n_bootstrap: int = 100, validation_fraction: float = 0.2,
                               patience: int = 5,
                               log_features: Sequence[int] | None = None) -> dict[str, Any]:
    """Can an MLP tell the generated from the reference showers? Test AUC 0.5: no.

    1. Both samples are shuffled and the larger one is cut to the size ``n`` of the
       smaller (balanced classes).
    2. Each class is split alike into a test part (``test_fraction``) and a training
       split; ``validation_fraction`` of the training split is held out for early
       stopping.
    3. Features listed in ``log_features`` (column indices) become ``log1p(max(x, 0))``;
       then every feature is standardised with the mean and standard deviation of the
       training split (validation part included; a constant feature is only centred).
    4. An MLP (ReLU, ``hidden`` widths) is trained with binary cross-entropy and Adam to
       give 1 for generated and 0 for reference showers, for at most ``epochs`` epochs;
       training stops when the validation loss has not improved for ``patience`` epochs,
       and the weights of the best validation loss are kept.
    5. On the test part: the ROC AUC (:func:`~hepml.evaluation.metrics.roc_auc`) and its
       68 % percentile bootstrap interval (:func:`~hepml.evaluation.metrics.bootstrap_auc`).

    Shuffling, splitting, weight initialisation and batching draw from generators seeded
    with ``seed`` (the global torch RNG is left as it was), so a run on the CPU is
    reproducible.

    Args:
        reference: Reference features ``[N_r, d]`` (a ``[N_r]`` vector is one feature).
        generated: Generated features ``[N_g, d]``.
        hidden: Widths of the hidden layers.
        epochs: Most training epochs.
        batch_size: Mini-batch size.
        learning_rate: Adam's learning rate.
        test_fraction: Fraction of the balanced samples kept for the test.
        seed: Seed of everything random.
        device: Where to train; default the device of ``reference``.
        n_bootstrap: Bootstrap replicas of the AUC interval.
        validation_fraction: Fraction of the training split held out for early stopping.
        patience: Epochs without a better validation loss before stopping.
        log_features: Columns to pass through ``log1p`` before standardising (energies).

    Returns:
        ``auc``; ``auc_interval`` (``[low, high]``, 68 %); ``n_train`` (showers fitted on,
        both classes), ``n_validation``, ``n_test``; ``epochs_run``; ``best_epoch``;
        ``val_loss`` (the best); ``n_features``; ``test_scores`` (probability of
        "generated", ``[n_test]``) and ``test_labels`` (1 generated, 0 reference) on the
        training device.

    Raises:
        BadValueError: Shapes, NaN/inf, fractions outside (0, 1), fewer than
            :data:`MIN_SHOWERS` showers in a sample.
    """
    ref = _tensor(reference, "classifier_two_sample_test: reference")
    dev = torch.device(device) if device is not None else ref.device
    ref = ref.to(dev)
    gen_x = _tensor(generated, "classifier_two_sample_test: generated", dev)
    ref = ref.reshape(-1, 1) if ref.dim() == 1 else ref
    gen_x = gen_x.reshape(-1, 1) if gen_x.dim() == 1 else gen_x
    if ref.dim() != 2 or gen_x.dim() != 2 or ref.shape[1] != gen_x.shape[1]:
        raise BadValueError(f"classifier_two_sample_test: need [N, d] features with one d, got "
                            f"{tuple(ref.shape)} and {tuple(gen_x.shape)}")
    if min(len(ref), len(gen_x)) < MIN_SHOWERS:
        raise BadValueError(f"classifier_two_sample_test: {len(ref)} reference and "
                            f"{len(gen_x)} generated showers; need at least {MIN_SHOWERS} "
                            "in each sample for a meaningful test")
    if not 0 < test_fraction < 1 or not 0 < validation_fraction < 1:
        raise BadValueError(f"classifier_two_sample_test: test_fraction ({test_fraction}) and "
                            f"validation_fraction ({validation_fraction}) must lie in (0, 1)")
    d = ref.shape[1]
    ref, gen_x = ref.to(torch.float32), gen_x.to(torch.float32)
    if log_features:
        cols = torch.as_tensor(list(log_features), dtype=torch.long, device=dev)
        ref, gen_x = ref.clone(), gen_x.clone()  # never change the caller's tensors
        ref[:, cols] = torch.log1p(ref[:, cols].clamp(min=0))
        gen_x[:, cols] = torch.log1p(gen_x[:, cols].clamp(min=0))

    rng = torch.Generator().manual_seed(int(seed))
    n = min(len(ref), len(gen_x))
    ref = ref[torch.randperm(len(ref), generator=rng)[:n].to(dev)]
    gen_x = gen_x[torch.randperm(len(gen_x), generator=rng)[:n].to(dev)]
    fit_frac = (1 - test_fraction) * (1 - validation_fraction)
    val_frac = (1 - test_fraction) * validation_fraction
    parts = [[p.to(dev) for p in _split(n, (fit_frac, val_frac), rng)] for _ in range(2)]

    def take(k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x = torch.cat([ref[parts[0][k]], gen_x[parts[1][k]]])
        y = torch.cat([torch.zeros(len(parts[0][k]), device=dev),
                       torch.ones(len(parts[1][k]), device=dev)])
        return x, y

    (x_fit, y_fit), (x_val, y_val), (x_test, y_test) = take(0), take(1), take(2)
    if min(len(x_fit), len(x_val), len(x_test)) == 0:
        raise BadValueError("classifier_two_sample_test: a split is empty; change "
                            "test_fraction or validation_fraction")
    train_all = torch.cat([x_fit, x_val])
    mean = train_all.mean(0)
    std = train_all.std(0)
    std = torch.where(std > 0, std, torch.ones_like(std))
    x_fit, x_val, x_test = ((x - mean) / std for x in (x_fit, x_val, x_test))

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        model = _mlp(d, hidden)
    model = model.to(dev)
    optimiser = torch.optim.Adam(model.parameters(), lr=learning_rate)
    loss_fn = nn.BCEWithLogitsLoss()
    best_loss, best_epoch, best_state, epochs_run, stale = math.inf, 0, None, 0, 0
    for epoch in range(1, int(epochs) + 1):
        model.train()
        order = torch.randperm(len(x_fit), generator=rng).to(dev)
        for start in range(0, len(order), int(batch_size)):
            idx = order[start:start + int(batch_size)]
            optimiser.zero_grad(set_to_none=True)
            loss = loss_fn(model(x_fit[idx]).squeeze(1), y_fit[idx])
            loss.backward()
            optimiser.step()
        model.eval()
        with torch.no_grad():
            val_loss = float(loss_fn(model(x_val).squeeze(1), y_val))
        epochs_run = epoch
        if val_loss < best_loss:
            best_loss, best_epoch, stale = val_loss, epoch, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= int(patience):
                break
    if best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    with torch.no_grad():
        scores = torch.sigmoid(model(x_test).squeeze(1)).to(torch.float64)
    labels = y_test.to(torch.long)
    low, high = bootstrap_auc(scores, labels, n_bootstrap, 0.68, seed=int(seed))
    return {"auc": roc_auc(scores, labels), "auc_interval": [low, high],
            "n_train": len(x_fit), "n_validation": len(x_val), "n_test": len(x_test),
            "epochs_run": epochs_run, "best_epoch": best_epoch, "val_loss": best_loss,
            "n_features": d, "test_scores": scores, "test_labels": labels}


# ----------------------------------------------------------------- response vs energy


def response_vs_energy(incident: torch.Tensor, response: torch.Tensor, *,
                       bins: int | torch.Tensor = 10) -> dict[str, torch.Tensor]:
    """Mean response and resolution in bins of incident energy.

    Per bin ``[e_k, e_k+1)`` (the last bin closed): ``count``; ``mean`` response and its
    error ``mean_err = std / √n``; ``std``, the sample standard deviation (``n − 1`` in
    the denominator) and its error ``std_err = std / √(2 (n − 1))``; the ``resolution``
    ``std / mean`` and ``resolution_err = resolution · √(1 / (2 (n − 1)) + resolution² / n)``,
    the large-sample (Gaussian) errors of a standard deviation and a mean combined as
    independent relative errors of a ratio. Bins with fewer entries than a quantity needs
    (0 for the mean, 1 for the std and the errors) and a zero mean give 0, never NaN.

    Args:
        incident: Incident energy per shower ``[N]`` (GeV).
        response: Response per shower ``[N]`` (e.g. ``E_tot / incident``).
        bins: A number of equal-width bins between the smallest and largest incident
            energy (± 0.5 GeV around a single energy), or the bin edges; showers outside
            given edges are left out.

    Returns:
        ``edges`` ``[K + 1]``, ``centre``, ``count``, ``mean``, ``mean_err``, ``std``,
        ``std_err``, ``resolution``, ``resolution_err`` ``[K]``, float on the device of
        ``incident``.

    Raises:
        BadValueError: Shapes that differ, NaN or inf.
        EmptyInputError: No showers and no edges to bin them in.
    """
    x = _tensor(incident, "response_vs_energy: incident").reshape(-1)
    dtype = float_dtype(x.device)
    x = x.to(dtype)
    r = _tensor(response, "response_vs_energy: response", x.device).to(dtype).reshape(-1)
    if x.shape != r.shape:
        raise BadValueError(f"response_vs_energy: {x.numel()} incident energies but "
                            f"{r.numel()} responses")
    if isinstance(bins, (int, np.integer)) and not isinstance(bins, bool):
        if x.numel() == 0:
            raise EmptyInputError("response_vs_energy: no showers to set the energy range")
        if int(bins) < 1:
            raise BadValueError(f"response_vs_energy: bins must be >= 1, got {bins}")
        lo, hi = float(x.min()), float(x.max())
        if not hi > lo:
            lo, hi = lo - 0.5, hi + 0.5
        edges = torch.linspace(lo, hi, int(bins) + 1, dtype=dtype, device=x.device)
    else:
        edges = _edges(x, bins, None, "response_vs_energy")
    inside = (x >= edges[0]) & (x <= edges[-1])
    x, r = x[inside], r[inside]
    k = edges.numel() - 1
    index = torch.bucketize(x, edges[1:-1], right=True)
    count = torch.bincount(index, minlength=k).to(dtype)
    mean = _safe_div(torch.bincount(index, weights=r, minlength=k).to(dtype), count)
    sq = torch.bincount(index, weights=(r - mean[index]) ** 2, minlength=k).to(dtype)
    dof = (count - 1).clamp(min=0)
    std = _safe_div(sq, dof).sqrt()
    mean_err = _safe_div(std, count.sqrt())
    std_err = _safe_div(std, (2 * dof).sqrt())
    resolution = _safe_div(std, mean.abs())
    rel = _safe_div(torch.ones_like(dof), 2 * dof) + _safe_div(resolution ** 2, count)
    resolution_err = resolution * rel.sqrt()
    return {"edges": edges, "centre": 0.5 * (edges[1:] + edges[:-1]), "count": count,
            "mean": mean, "mean_err": mean_err, "std": std, "std_err": std_err,
            "resolution": resolution, "resolution_err": resolution_err}


# ----------------------------------------------------------------------- the comparison


def _floats(t: torch.Tensor) -> list[float]:
    return [float(v) for v in t.detach().cpu().tolist()]


def compare_showers(reference: Showers, generated: Showers, *, layout: CaloLayout = CALOGAN,
                    bins: int = 50, classifier: Mapping[str, Any] | None = None,
                    device: str | torch.device | None = None, threshold: float = 0.0,
                    response_bins: int = 10) -> dict[str, Any]:
    """Everything a report on generated showers needs.

    The observables of :func:`shower_observables` for both samples; the separation power
    of each (:func:`separation_power`, ``bins`` bins between the reference's 0.1 % and
    99.9 % quantiles) and their mean; a classifier two-sample test on the high-level
    features (:func:`high_level_names`, standardised, no log transform unless
    ``classifier["log_features"]`` names some); and the response against the incident
    energy of both samples in ``response_bins`` common bins spanning both samples'
    incident energies.

    The classifier test needs :data:`MIN_SHOWERS` showers per sample; with fewer it is
    skipped with a warning (``classifier`` is then None).

    Args:
        reference: The reference showers (full simulation).
        generated: The generated showers.
        layout: The calorimeter (cell sizes); must match the showers' shapes.
        bins: Histogram bins of the separation powers.
        classifier: Keyword arguments of :func:`classifier_two_sample_test` (``device``
            defaults to ``device``); ``log_features`` may name features (``"E_0"``).
        device: Where to compute; default the CPU.
        threshold: Cell threshold of the sparsity (GeV).
        response_bins: Bins of incident energy for the response.

    Returns:
        ``observables`` (``{"reference": {...}, "generated": {...}}``, CPU tensors, for
        plots), ``separation_power`` (name → float), ``mean_separation_power``,
        ``classifier`` (the test's result, tensors on the CPU, or None), ``response``
        (``{"reference": ..., "generated": ...}`` of :func:`response_vs_energy`, CPU
        tensors) and ``summary``, the same numbers as plain floats, lists and strings for
        JSON (without the per-shower arrays).

    Raises:
        BadValueError: Samples of different layer shapes, a layout that does not match.
    """
    if reference.shapes != generated.shapes:
        raise BadValueError(f"compare_showers: reference ({reference.source}) has layer shapes "
                            f"{reference.shapes}, generated ({generated.source}) "
                            f"{generated.shapes}")
    dev = torch.device(device) if device is not None else torch.device("cpu")

    def observables(s: Showers) -> dict[str, torch.Tensor]:
        layers = [_tensor(x, f"{s.source}: layer_{i}", dev) for i, x in enumerate(s.layers)]
        return shower_observables(layers, _tensor(s.energy, f"{s.source}: energy", dev),
                                  layout=layout, threshold=threshold)

    obs_ref, obs_gen = observables(reference), observables(generated)
    separation = separation_powers(obs_ref, obs_gen, bins=bins)
    mean_sep = float(np.mean(list(separation.values())))

    result_clf: dict[str, Any] | None = None
    skipped = None
    if min(len(reference), len(generated)) < MIN_SHOWERS:
        skipped = (f"{len(reference)} reference and {len(generated)} generated showers; the "
                   f"classifier test needs {MIN_SHOWERS} per sample")
        log.warning("compare_showers: classifier test skipped: %s", skipped)
    else:
        names = list(high_level_names(len(reference.layers)))
        x_ref, _ = high_level_features(obs_ref, names)
        x_gen, _ = high_level_features(obs_gen, names)
        kwargs: dict[str, Any] = {"device": dev, **(classifier or {})}
        if kwargs.get("log_features"):  # names of features, or their column indices
            unknown = [f for f in kwargs["log_features"] if isinstance(f, str) and f not in names]
            if unknown:
                raise BadValueError(f"compare_showers: log_features {unknown} are not among the "
                                    f"classifier features {names}")
            kwargs["log_features"] = [names.index(f) if isinstance(f, str) else int(f)
                                      for f in kwargs["log_features"]]
        out = classifier_two_sample_test(x_ref, x_gen, **kwargs)
        result_clf = {k: (v.cpu() if isinstance(v, torch.Tensor) else v) for k, v in out.items()}
        result_clf["features"] = names

    lo = float(min(reference.energy.min(initial=np.inf), generated.energy.min(initial=np.inf)))
    hi = float(max(reference.energy.max(initial=-np.inf),
                   generated.energy.max(initial=-np.inf)))
    if not np.isfinite(lo):
        lo, hi = 0.0, 1.0
    if not hi > lo:
        lo, hi = lo - 0.5, hi + 0.5
    edges = torch.linspace(lo, hi, int(response_bins) + 1, dtype=float_dtype(dev), device=dev)
    response = {name: {k: v.cpu() for k, v in response_vs_energy(
        _tensor(s.energy, "energy", dev), obs["response"], bins=edges).items()}
        for name, s, obs in (("reference", reference, obs_ref),
                             ("generated", generated, obs_gen))}

    summary: dict[str, Any] = {
        "n_reference": len(reference), "n_generated": len(generated),
        "layout": layout.name, "bins": int(bins), "threshold": float(threshold),
        "separation_power": dict(separation), "mean_separation_power": mean_sep,
        "response": {name: {k: _floats(r[k]) for k in ("edges", "count", "mean", "mean_err",
                                                         "resolution", "resolution_err")}
                     for name, r in response.items()},
    }
    if result_clf is None:
        summary["classifier"] = {"skipped": skipped}
    else:
        summary["classifier"] = {k: v for k, v in result_clf.items()
                                 if not isinstance(v, torch.Tensor)}
        summary["classifier"]["auc_interval"] = [float(v) for v in result_clf["auc_interval"]]
    return {
        "observables": {"reference": {k: v.cpu() for k, v in obs_ref.items()},
                        "generated": {k: v.cpu() for k, v in obs_gen.items()}},
        "separation_power": separation,
        "mean_separation_power": mean_sep,
        "classifier": result_clf,
        "response": response,
        "summary": summary,
    }
