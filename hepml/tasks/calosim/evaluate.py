"""The challenge-standard tests of generated showers, and generators side by side."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hepml import evaluation
from hepml.errors import ConfigError
from hepml.evaluation.showers import MIN_SHOWERS, high_level_names
from hepml.io.calo import Showers
from hepml.tasks._job import number
from hepml.tasks.calosim.data import CaloSimConfig

__all__ = ["LOW_LEVEL_CLASSIFIER", "classifier_tests", "compare", "low_level_features",
           "reference_halves", "resolution_agreement"]

#: The low-level classifier's options unless ``calosim.classifier_low_level`` says otherwise.
LOW_LEVEL_CLASSIFIER = {"hidden": (256, 256), "epochs": 30}


def low_level_features(showers: Showers) -> torch.Tensor:
    """The calorimeter challenge's low-level classifier inputs: ``log10 E`` and every cell / E."""
    cells = np.concatenate([x.reshape(len(x), -1) for x in showers.layers], axis=1)
    energy = showers.energy.astype(np.float64).reshape(-1, 1)
    return torch.from_numpy(np.concatenate([np.log10(energy), cells / energy], axis=1)
                            .astype(np.float32))


def reference_halves(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Two random halves of ``n`` test showers (sorted indices): what every floor compares."""
    half = np.random.default_rng(seed + 2).permutation(n)
    return (torch.from_numpy(np.sort(half[: n // 2])), torch.from_numpy(np.sort(half[n // 2:])))


def classifier_tests(reference: Showers, generated: Showers, comparison: Mapping[str, Any], *,
                     calo: CaloSimConfig, device: torch.device, seed: int) -> dict[str, Any]:
    """The high- and low-level classifier tests beside their floors.

    A floor is the same test between two random halves of the reference (test) showers:
    what the classifier reaches when the two samples do come from one simulation, at half
    the statistics.
    """
    names = list(high_level_names(len(reference.layers)))
    obs = comparison["observables"]
    high = {k: evaluation.high_level_features(obs[k], names)[0]
            for k in ("reference", "generated")}
    low = {"reference": low_level_features(reference), "generated": low_level_features(generated)}
    a, b = reference_halves(len(reference), seed)
    low_opts = {**LOW_LEVEL_CLASSIFIER, **calo.classifier_low_level}
    high_opts = {k: v for k, v in calo.classifier.items() if k != "log_features"}
    out: dict[str, Any] = {}
    for key, x, opts in (("classifier_floor", high, high_opts),
                         ("classifier_low_level", low, low_opts),
                         ("classifier_low_level_floor", low, low_opts)):
        ref, gen = ((x["reference"][a], x["reference"][b]) if key.endswith("floor")
                    else (x["reference"], x["generated"]))
        if min(len(ref), len(gen)) < MIN_SHOWERS:
            out[key] = {"skipped": f"{len(ref)} and {len(gen)} showers; the test needs "
                                   f"{MIN_SHOWERS} per sample"}
            continue
        res = evaluation.classifier_two_sample_test(ref.to(device), gen.to(device),
                                                    device=device, **opts)
        out[key] = {"auc": res["auc"], "auc_interval": [float(v) for v in res["auc_interval"]],
                    "n_test": res["n_test"], "n_features": res["n_features"],
                    "epochs_run": res["epochs_run"]}
    out["classifier_low_level"]["definition"] = (
        "MLP two-sample test on log10(E) and every cell divided by E (the calorimeter "
        "challenge's low-level classifier)")
    for key in ("classifier_floor", "classifier_low_level_floor"):
        out[key]["definition"] = ("the same test between two random halves of the test "
                                  "showers: the floor a perfect generator reaches")
    return out


def resolution_agreement(response: Mapping[str, Any]) -> dict[str, Any]:
    """Generated σ/E over the reference's σ/E in each incident-energy bin."""
    ref, gen = response["reference"], response["generated"]
    ratios = []
    for r, g, n in zip(ref["resolution"], gen["resolution"], ref["count"], strict=True):
        ratios.append(float(g / r) if r > 0 and n >= 10 else None)
    valid = [abs(v - 1) for v in ratios if v is not None]
    return {"ratio_per_bin": ratios, "max_deviation": max(valid) if valid else None,
            "within_20_percent": bool(valid) and max(valid) <= 0.2,
            "definition": "generated resolution (std/mean of E_tot/E) over the reference's, "
                          "per incident-energy bin with at least 10 reference showers"}




# ------------------------------------------------------------------------ hepml compare
def compare(run_dirs: Sequence[str | Path], out_dir: str | Path, *,
            names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Several calosim runs side by side, on the same test showers.

    The runs must have read the same files (checksums and entries) with the same split, so
    that every generator was compared with the same test showers; otherwise the
    comparison is refused. Writes ``comparison.json`` and ``comparison.md`` (a table) to
    ``out_dir``.

    Returns:
        Name → the row: generator, classifier AUCs (high-level, low-level) with their
        intervals and floors, mean separation power and its floor, the largest resolution
        deviation, showers/s per batch size and device, training seconds and parameters.
    """
    import json

    from hepml.io.atomic import check_writable, write_json, write_text

    if not run_dirs:
        raise ConfigError("compare: give at least one run directory")
    out_dir = Path(out_dir)
    check_writable(out_dir)
    rows: dict[str, dict[str, Any]] = {}
    reference: tuple[Any, ...] | None = None
    for k, run_dir in enumerate(map(Path, run_dirs)):
        try:
            metrics = json.loads((run_dir / "metrics.json").read_text())
            inputs = json.loads((run_dir / "inputs.json").read_text())
            split = np.load(run_dir / "split.npy")
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{run_dir}: not a finished calosim run ({exc})") from None
        if metrics.get("task") != "calosim":
            raise ConfigError(f"{run_dir}: a {metrics.get('task')!r} run; compare calosim runs "
                              "with calosim runs")
        data = ([(i.get("checksum"), i.get("entries")) for i in inputs], split)
        if reference is None:
            reference = data
        elif data[0] != reference[0] or not np.array_equal(data[1], reference[1]):
            raise ConfigError(f"{run_dir}: its test showers are not those of {run_dirs[0]} "
                              "(other files or another split); compare runs of the same data "
                              "and seed")
        name = (names[k] if names and k < len(names)
                else f"{metrics.get('generator', 'calogan')} ({run_dir.name})")

        def auc(key: str, m: Mapping[str, Any] = metrics) -> dict[str, Any]:
            c = m.get(key) or {}
            return {"auc": c.get("auc"), "interval": c.get("auc_interval")}

        rows[name] = {
            "run": str(run_dir), "generator": metrics.get("generator", "calogan"),
            "n_test": (metrics.get("n_showers") or {}).get("test"),
            "classifier_high_level": auc("classifier"),
            "classifier_high_level_floor": auc("classifier_floor"),
            "classifier_low_level": auc("classifier_low_level"),
            "classifier_low_level_floor": auc("classifier_low_level_floor"),
            "mean_separation_power": metrics.get("mean_separation_power"),
            "separation_power_floor_mean": metrics.get("separation_power_floor_mean"),
            "resolution_max_deviation": (metrics.get("resolution_agreement") or {}).get(
                "max_deviation"),
            "showers_per_s": (metrics.get("generation") or {}).get("showers_per_s"),
            "device": (metrics.get("generation") or {}).get("device"),
            "training_seconds": (metrics.get("training") or {}).get("seconds"),
            "parameters": (metrics.get("training") or {}).get("parameters"),
        }
    batches = sorted({b for r in rows.values() for b in (r["showers_per_s"] or {})}, key=int)
    head = ["generator", "AUC high-level", "floor", "AUC low-level", "floor",
            "mean sep. power (floor)", "max σ/E deviation",
            *(f"showers/s @ {b}" for b in batches), "training s"]

    def cell(d: dict[str, Any]) -> str:
        if d.get("auc") is None:
            return "n/a"
        lo, hi = d.get("interval") or (None, None)
        return f"{d['auc']:.3f}" + (f" [{lo:.3f}, {hi:.3f}]" if lo is not None else "")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for name, r in rows.items():
        speeds = r["showers_per_s"] or {}
        lines.append("| " + " | ".join([
            name, cell(r["classifier_high_level"]), cell(r["classifier_high_level_floor"]),
            cell(r["classifier_low_level"]), cell(r["classifier_low_level_floor"]),
            f"{number(r['mean_separation_power'])} ({number(r['separation_power_floor_mean'])})",
            number(r["resolution_max_deviation"], ".3f"),
            *(number(speeds.get(b), ",.0f") for b in batches),
            number(r["training_seconds"], ".0f")]) + " |")
    table = "\n".join(lines) + "\n"
    write_json(out_dir / "comparison.json", rows)
    write_text(out_dir / "comparison.md", table)
    return rows
