"""Every model family's contract: sizing from real representations, names, and errors.

Each family declares in its own file how it sizes itself from a representation's
``output_shape`` (``data_kwargs``) and what it takes and gives (``contract``);
:func:`hepml.models.model_spec` serves every task. These tests build each family from a
representation of the shipped ``data_samples/`` and run it forward on those inputs,
pin the kwargs each shipped workflow's model gets (written by hand from the workflow
and the representation's shape: they must not change, or checkpoints and metrics
would), and check that a shape a family cannot take is one line of ConfigError.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from hepml.errors import ConfigError
from hepml.io import Source, read_metadata
from hepml.io.calo import read_showers
from hepml.models import MODELS, build_model, model_contract, model_spec, output_names
from hepml.representations import build_representation

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
JETS = (str(SAMPLES / "top_qcd_jets.root"), "tree", 2)
EVENTS = (str(SAMPLES / "events_ttbar_wjets_higgs.root"), "tree", 3)
HITS = (str(SAMPLES / "tracker_hits_ttbar_pu10.root"), "hits", 0)
LUMIS = (str(SAMPLES / "dqm_run.root"), "lumis", 0)
SHOWERS = str(SAMPLES / "calo_showers_eplus.root")

# family -> (representation spec, (file, tree, classes), small hyperparameters, entries)
FAMILIES: dict[str, tuple[dict[str, Any] | None, tuple, dict[str, Any], int]] = {
    "cnn": ({"kind": "jet_image", "npix": 16}, JETS,
            {"conv_channels": [4, 4], "pool_after": [0, 1], "dense": [8]}, 8),
    "particlenet": ({"kind": "particle_cloud", "max_particles": 40}, JETS,
                    {"preset": "particlenet-lite"}, 8),
    "gnn": ({"kind": "event_graph", "max_nodes": 10}, EVENTS, {"hidden": 8, "num_layers": 1}, 8),
    "interaction_network": ({"kind": "hit_graph", "max_skip": 1, "phi_slope_max": 0.0006,
                             "z0_max": 200.0}, HITS, {"hidden": 8, "n_iterations": 1}, 1),
    "lstm_tracker": ({"kind": "track_sequence"}, HITS, {"hidden_size": 8, "num_layers": 1}, 1),
    "autoencoder": ({"kind": "features", "features": ["jet_pt", "jet_eta", "jet_mass"]}, JETS,
                    {"hidden": [4], "latent_dims": 2}, 8),
    "conv_autoencoder": ({"kind": "jet_image", "npix": 12}, JETS,
                         {"channels": [4], "latent_dims": 2}, 8),
    "calogan": (None, (SHOWERS, "showers", 0),
                {"latent_dim": 4, "hidden": 8, "disc_channels": 2, "disc_features": 2,
                 "minibatch_kernels": 2, "transfer_rank": 2}, 8),
    "caloflow": (None, (SHOWERS, "showers", 0),
                 {"blocks": 2, "hidden": 8, "energy_transforms": 1, "energy_hidden": 4,
                  "bins": 3}, 8),
}


def _inputs(spec: dict[str, Any], sample: tuple, n: int) -> tuple[Any, dict[str, Any]]:
    """The representation of ``spec`` and what it makes of the first ``n`` entries."""
    path, tree, _ = sample
    rep = build_representation(spec)
    truthless = spec["kind"] == "hit_graph"
    fields = rep.fields(truth=False) if truthless else rep.required_fields
    source = Source([path], tree, fields, max_entries=n, step_size=n,
                    check_finite=spec["kind"] != "lumisection_maps")
    arrays = source.read(source.chunks[0])
    if spec["kind"] == "lumisection_maps":
        rep = rep.bind(rep.observed_binning(arrays[:1], read_metadata(path)))
    out = rep(arrays, truth=False) if truthless else rep(arrays)
    return rep, out


def _outputs(out: Any, names: tuple[str, ...]) -> tuple[torch.Tensor, ...]:
    if isinstance(out, Mapping):
        return tuple(out[k] for k in names)
    return tuple(out) if isinstance(out, (list, tuple)) else (out,)


def test_every_registered_family_has_a_case() -> None:
    """A new family declares a contract and gets a case here."""
    assert set(MODELS) == set(FAMILIES)


@pytest.mark.parametrize("family", list(FAMILIES))
def test_contract_sizes_a_model_that_runs_on_real_inputs(family: str) -> None:
    """Sized from a representation of the shipped data, the model runs on its inputs."""
    rep_spec, sample, hyper, n = FAMILIES[family]
    contract = model_contract(family)
    if rep_spec is None:  # shower generators: the layout, particles and energies of showers
        showers = read_showers(SHOWERS, tree="showers", entry_stop=n)
        spec = model_spec(family, hyper, showers.shapes, particles=[-11],
                          energy_range=(showers.energy.min(), showers.energy.max()))
        noise = build_model(family, **spec["kwargs"]).noise_sizes()
        x = {**{k: torch.randn(n, size) for k, size in noise.items()},
             "energy": torch.from_numpy(showers.energy).float(),
             "particle": torch.zeros(n, dtype=torch.long)}
    else:
        assert rep_spec["kind"] == contract.default_representation or family == "cnn"
        rep, out = _inputs(rep_spec, sample, n)
        spec = model_spec(family, hyper, rep.output_shape, num_classes=sample[2])
        x = {contract.inputs[0]: out} if isinstance(out, torch.Tensor) else out
    kwargs = spec["kwargs"]
    assert spec["kind"] == family
    assert set(kwargs) == set(hyper) | set(MODELS[family].data_args)
    torch.manual_seed(0)
    model = build_model(family, **kwargs).eval()
    with torch.no_grad():
        got = _outputs(contract.forward(model, [x[k] for k in contract.inputs]),
                       output_names(model))
    batch = len(x[contract.inputs[0]])
    assert batch >= 1 and len(got) == len(output_names(model))
    for t in got:
        assert t.shape[0] == batch and torch.isfinite(t).all()
    if "num_classes" in kwargs:
        assert got[0].shape == (batch, sample[2])


@pytest.mark.parametrize("family", list(FAMILIES))
def test_contract_names_are_consistent(family: str) -> None:
    """Axes and descriptions cover the inputs; ``batch`` is axis 0 of every input."""
    c = model_contract(family)
    assert set(c.axes) == set(c.inputs)
    assert all(c.axes[k][0] == "batch" for k in c.inputs)
    assert all(c.describe(name) for name in (*c.inputs, *c.outputs))
    assert c.forward_args is None or sorted(c.forward_args) == sorted(c.inputs)


@pytest.mark.parametrize("kind, size", [("conv_autoencoder", {"in_channels": 1,
                                                              "image_size": [40, 36]}),
                                        ("autoencoder", {"input_dims": 1440})])
def test_lumisection_maps_size_both_monitors(kind: str, size: dict[str, Any]) -> None:
    """DQM: the conv autoencoder reads the 40 x 36 maps, the dense one reads them flat."""
    spec = {"kind": "lumisection_maps", "histograms": ["calo_occupancy", "tracker_occupancy"],
            "events_branch": "n_events", "normalize": "per_event"}
    rep, maps = _inputs(spec, LUMIS, 4)
    got = model_spec(kind, {"kind": kind, "latent_dims": 2}, rep.output_shape, flatten=True,
                     source="the lumisection maps")
    assert got == {"kind": kind, "kwargs": {"latent_dims": 2, **size}}
    model = build_model(kind, **got["kwargs"]).eval()
    with torch.no_grad():
        out = model(maps.flatten(1) if kind == "autoencoder" else maps)
    assert out["reconstruction"].shape[0] == 4


# ----------------------------------------------------------------------------- workflows
#: The kwargs each shipped workflow's model got from the tasks' former sizing, by hand:
#: the workflow's model section, then the sizes its representation gives.
CALOGAN_HYPER = {"latent_dim": 64, "disc_channels": 16, "disc_features": 32,
                 "minibatch_kernels": 16, "transfer": True, "hidden": 128, "loss": "r1",
                 "r1_weight": 10.0, "learning_rate_d": 5e-05, "energy_weight": 1.0,
                 "energy_model": "mixture", "occupancy": True, "widths": True}
EXPECTED: dict[str, dict[str, Any]] = {
    "top_tagging_cnn": {"kind": "cnn", "kwargs": {
        "conv_channels": [8, 8, 8, 8], "kernel_size": 4, "pool_after": [1, 3],
        "dense": [64, 64, 64], "dropout": 0.0, "batch_norm": False,
        "in_channels": 1, "image_size": [40, 40], "num_classes": 2}},
    "top_tagging_gnn": {"kind": "particlenet", "kwargs": {
        "preset": "particlenet-lite", "input_dims": 8, "num_classes": 2}},
    "event_classification": {"kind": "gnn", "kwargs": {
        "layer": "interaction", "hidden": 64, "num_layers": 3, "dropout": 0.1,
        "input_dims": 14, "edge_dims": 2, "num_classes": 3}},
    "tracking_gnn": {"kind": "interaction_network", "kwargs": {
        "hidden": 32, "n_iterations": 6, "input_dims": 3, "edge_dims": 6}},
    "tracking_lstm": {"kind": "lstm_tracker", "kwargs": {
        "cell": "lstm", "bidirectional": False, "hidden_size": 32, "num_layers": 1,
        "input_dims": 4}},
    "anomaly_scan": {"kind": "conv_autoencoder", "kwargs": {
        "channels": [16, 32], "latent_dims": 32, "kernel_size": 3,
        "in_channels": 1, "image_size": [40, 40]}},
    "anomaly_zmumu": {"kind": "autoencoder", "kwargs": {
        "hidden": [32, 16], "latent_dims": 3, "input_dims": 7}},
    "dqm_monitor": {"kind": "conv_autoencoder", "kwargs": {
        "channels": [16, 32], "latent_dims": 16, "kernel_size": 3, "activation": "relu",
        "in_channels": 1, "image_size": [40, 36]}},
    # the energy range is that of the 3,000 training showers of the workflow's split
    "calogan": {"kind": "calogan", "kwargs": {
        **CALOGAN_HYPER, "layer_shapes": [[3, 96], [12, 12], [12, 6]], "particles": [-11],
        "energy_min": 1.048099160194397, "energy_max": 99.93346405029297}},
    "caloflow": {"kind": "caloflow", "kwargs": {
        "energy_transforms": 6, "energy_hidden": 64, "blocks": 8, "hidden": 256, "bins": 8,
        "noise": 1e-6, "pattern_noise": 1e-6, "threshold": 3e-6,
        "layer_shapes": [[3, 96], [12, 12], [12, 6]], "particles": [-11],
        "energy_min": 1.048099160194397, "energy_max": 99.93346405029297}},
}


def _types(value: Any) -> Any:
    """The value with every leaf replaced by its type name (lists and dicts kept)."""
    if isinstance(value, dict):
        return {k: _types(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [type(value).__name__, *(_types(v) for v in value)]
    return type(value).__name__


def _task_spec(cfg: Any) -> dict[str, Any]:
    """The model spec as each task's ``run`` makes it."""
    if cfg.task in ("tagging", "classification"):
        from hepml.tasks import tagging

        rep = tagging.build_representation(cfg.representation)
        return model_spec(cfg.model.get("kind", "cnn"), cfg.model, rep.output_shape,
                          num_classes=len(cfg.data.class_names))
    if cfg.task == "tracking":
        from hepml.tasks.tracking import task

        kind = task._kind(cfg)
        rep = task.build_representation(cfg.representation)
        return model_spec(task._model_kind(cfg.model, kind), cfg.model, rep.output_shape)
    if cfg.task == "anomaly":
        from hepml.tasks import anomaly

        rep = anomaly.build_representation(cfg.representation)
        return model_spec(anomaly._model_kind(cfg.model), cfg.model, rep.output_shape)
    if cfg.task == "dqm":
        from hepml.config import from_mapping
        from hepml.tasks import dqm

        data = dqm.LumisectionData(cfg.data, dqm.build_representation(cfg.representation),
                                   from_mapping(dqm.DQMConfig, cfg.dqm, where="dqm"),
                                   seed=cfg.seed)
        return model_spec(dqm._model_kind(cfg.model), cfg.model,
                          data.representation.output_shape, flatten=True,
                          source="the lumisection maps")
    from hepml.config import from_mapping
    from hepml.tasks import calosim
    from hepml.training import assign_split, split_seed

    calo = from_mapping(calosim.CaloSimConfig, cfg.calosim, where="calosim")
    showers, _ = calosim.load_showers([str(ROOT / f) for f in cfg.data.files],
                                      tree=cfg.data.tree, particle=calo.particle,
                                      layer_shapes=calo.layer_shapes,
                                      max_entries=cfg.data.max_entries)
    train = showers.select(assign_split(len(showers), cfg.data.split,
                                        split_seed(cfg.data, cfg.seed)) == 0)
    return model_spec(calosim._model_kind(cfg.model), cfg.model, train.shapes,
                      particles=sorted(set(showers.particle.tolist())),
                      energy_range=(train.energy.min(), train.energy.max()),
                      source="the training showers")


@pytest.mark.parametrize("name", list(EXPECTED))
def test_shipped_workflows_keep_their_model_kwargs(name: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Same keys, order, values and types as the tasks' former sizing gave."""
    from hepml.tasks.workflow import load

    monkeypatch.chdir(ROOT)
    got = _task_spec(load(ROOT / "workflows" / f"{name}.yaml"))
    want = EXPECTED[name]
    assert got == want
    assert list(got["kwargs"]) == list(want["kwargs"])
    assert _types(got) == _types(want)


def test_shipped_workflows_are_all_pinned() -> None:
    """Every shipped workflow has its expected kwargs above."""
    assert {p.stem for p in (ROOT / "workflows").glob("*.yaml")} == set(EXPECTED)


# ----------------------------------------------------------------------------- errors
@pytest.mark.parametrize("kind, shape, context, match", [
    ("cnn", (7,), {"num_classes": 2}, r"model.kind cnn takes images \(C, H, W\); .* \(7,\)"),
    ("particlenet", (1, 40, 40), {"num_classes": 2}, "takes particle clouds"),
    ("gnn", {"points": (2, 100), "features": (8, 100), "mask": (1, 100)},
     {"num_classes": 2}, "takes event graphs"),
    ("interaction_network", {"x": (30, 4), "lengths": ()}, {}, "takes hit graphs"),
    ("lstm_tracker", (1, 40, 40), {}, "takes track sequences"),
    ("autoencoder", (1, 40, 40), {}, "takes feature vectors; .*use conv_autoencoder"),
    ("conv_autoencoder", (7,), {}, r"needs images \(C, H, W\); .* \(7,\)"),
    ("conv_autoencoder", None, {}, "shape None"),
    ("calogan", ((3, 96), (12,)), {"particles": [-11], "energy_range": (1.0, 100.0)},
     "calorimeter layers"),
    ("cnn", (1, 40, 40), {}, "need num_classes"),
])
def test_bad_shape_is_one_line_config_error(kind: str, shape: Any, context: dict,
                                            match: str) -> None:
    """A shape the family cannot take (or a missing context value): one line, no traceback."""
    with pytest.raises(ConfigError, match=match) as err:
        model_spec(kind, {"kind": kind}, shape, **context)
    assert "\n" not in str(err.value)


def test_given_data_argument_must_agree() -> None:
    """A size in the model section equal to the data's is kept; another one is refused."""
    assert model_spec("cnn", {"image_size": (40, 40)}, (1, 40, 40),
                      num_classes=2)["kwargs"]["image_size"] == [40, 40]
    with pytest.raises(ConfigError, match="model.in_channels is 2, but 1 is set from the "
                                          "lumisection maps; leave it out"):
        model_spec("conv_autoencoder", {"in_channels": 2}, (1, 40, 36),
                   source="the lumisection maps")


def test_cli_run_with_a_model_that_does_not_fit_is_one_line(
        tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """``hepml run``: ParticleNet on jet images fails in one line, before a run directory."""
    from hepml.cli import main

    wf = tmp_path / "wf.yaml"
    wf.write_text(f"""name: misfit
task: tagging
data:
  files: [{JETS[0]}]
  labels: [label_QCD, label_Tbqq]
  class_names: [QCD, top]
  max_entries: 200
representation: {{kind: jet_image, npix: 16}}
model: {{kind: particlenet, preset: particlenet-lite}}
training: {{epochs: 1}}
""")
    code = main(["run", str(wf), "--runs-dir", str(tmp_path / "runs")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert err.splitlines()[-1].count("model.kind particlenet takes particle clouds") == 1
    assert len([ln for ln in err.splitlines() if "Traceback" in ln]) == 0
    assert not (tmp_path / "runs").exists() or not any((tmp_path / "runs").iterdir())
