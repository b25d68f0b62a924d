"""``hepml export``: every model family to ONNX, checked here with onnxruntime on real inputs.

Each family gets a tiny model with random weights, saved as the trainer saves checkpoints
(``save_checkpoint`` with ``model`` = {kind, kwargs}, ``model_state`` and the run
``config``). After the export, this test builds its own inputs from the shipped
``data_samples/`` files with the training representation, runs the written ``.onnx``
with onnxruntime at two batch sizes (and two graph or sequence sizes), and compares with
a direct torch forward pass of the model: ``max|onnx - torch| / max|torch| <= 1e-5``.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

_EXTRA = "ONNX export needs the optional extra: pip install -e '.[onnx]'"
pytest.importorskip("onnxruntime", reason=_EXTRA)
pytest.importorskip("onnx", reason=_EXTRA)
pytest.importorskip("onnxscript", reason=_EXTRA)

import onnx  # noqa: E402
import onnxruntime as ort  # noqa: E402

from hepml.errors import ExportError  # noqa: E402
from hepml.io import Source  # noqa: E402
from hepml.io.calo import CALOGAN  # noqa: E402
from hepml.models import build_model, model_contract, model_spec  # noqa: E402
from hepml.tasks import export as export_task  # noqa: E402
from hepml.tasks.export import check as export_check  # noqa: E402
from hepml.tasks.export import onnx_graph as export_graph  # noqa: E402
from hepml.training.checkpoint import save_checkpoint  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "data_samples"
JETS = str(SAMPLES / "top_qcd_jets.root")
EVENTS = str(SAMPLES / "events_ttbar_wjets_higgs.root")
HITS = str(SAMPLES / "tracker_hits_ttbar_pu10.root")
SHOWERS = str(SAMPLES / "calo_showers_eplus.root")
JET_DATA = {"files": [JETS], "tree": "tree", "labels": ["label_QCD", "label_Tbqq"],
            "class_names": ["QCD", "top"], "signal_class": "top", "branches": {}}
HIT_DATA = {"files": [HITS], "tree": "hits", "labels": [], "class_names": [], "branches": {}}

# family -> (representation spec, data section, model kwargs (sizes added by model_spec), n_check)
CASES: dict[str, tuple[dict | None, dict, dict, int]] = {
    "cnn": ({"kind": "jet_image", "npix": 16}, JET_DATA,
            {"image_size": [16, 16], "conv_channels": [4, 4], "pool_after": [0, 1],
             "dense": [16]}, 48),
    "particlenet": ({"kind": "particle_cloud", "max_particles": 60}, JET_DATA,
                    {"conv_params": [[4, [8, 8, 8]], [4, [8, 8, 8]]],
                     "fc_params": [[16, 0.1]]}, 48),
    "gnn": ({"kind": "event_graph", "max_nodes": 12}, {
        "files": [EVENTS], "tree": "tree", "labels": ["label_wjets", "label_ttbar", "label_higgs"],
        "class_names": ["wjets", "ttbar", "higgs"], "signal_class": "ttbar", "branches": {}},
        {"hidden": 16, "num_layers": 2, "num_classes": 3}, 48),
    "interaction_network": ({"kind": "hit_graph", "max_skip": 1, "phi_slope_max": 0.0006,
                             "z0_max": 200.0}, HIT_DATA,
                            {"hidden": 8, "n_iterations": 2, "mlp_layers": 1}, 3),
    "lstm_tracker": ({"kind": "track_sequence", "seed_length": 3, "min_hits": 4}, HIT_DATA,
                     {"hidden_size": 8, "num_layers": 1, "cell": "lstm", "bidirectional": True},
                     1),
    "autoencoder": ({"kind": "features", "features": ["jet_pt", "jet_eta", "jet_mass",
                                                      "jet_nparticles"],
                     "log": ["jet_pt", "jet_mass"]}, JET_DATA,
                    {"hidden": [8], "latent_dims": 2, "variational": True}, 48),
    "conv_autoencoder": ({"kind": "jet_image", "npix": 12}, JET_DATA,
                         {"image_size": [12, 12], "channels": [4, 4], "latent_dims": 4}, 48),
    "calogan": (None, {"files": [SHOWERS], "tree": "showers", "labels": [], "class_names": []},
                {"latent_dim": 8, "hidden": 16, "disc_channels": 4, "disc_features": 4,
                 "minibatch_kernels": 2, "transfer_rank": 4, "energy_model": "mixture",
                 "occupancy": True}, 48),
    "caloflow": (None, {"files": [SHOWERS], "tree": "showers", "labels": [], "class_names": []},
                 {"blocks": 2, "hidden": 16, "energy_transforms": 2, "energy_hidden": 8,
                  "bins": 4}, 48),
}
SHOWER_FAMILIES = ("calogan", "caloflow")


def _representation(spec: dict) -> Any:
    """The representation the training task builds from ``spec``."""
    if spec["kind"] in ("hit_graph", "track_sequence"):
        from hepml.tasks.tracking.task import build_representation
    else:
        from hepml.tasks.tagging import build_representation
    return build_representation(spec)


def _read(rep: Any, rep_kind: str, data: dict, n: int) -> Any:
    fields = rep.fields(truth=False) if rep_kind == "hit_graph" else rep.required_fields
    src = Source(data["files"], data["tree"], fields, max_entries=n, step_size=n)
    return src.read(src.chunks[0])


def _inputs(family: str, rep: Any, rep_kind: str, arrays: Any) -> dict[str, torch.Tensor]:
    out = rep(arrays, truth=False) if rep_kind == "hit_graph" else rep(arrays)
    names = model_contract(family).inputs
    return {names[0]: out} if isinstance(out, torch.Tensor) else {k: out[k] for k in names}


def _make_checkpoint(family: str, path: Path) -> tuple[torch.nn.Module, dict]:
    """A tiny model of ``family`` saved as the trainer saves checkpoints."""
    rep_spec, data, kwargs, _ = CASES[family]
    torch.manual_seed(7)
    config: dict[str, Any] = {"name": f"export_{family}", "data": data}
    if rep_spec is not None:
        rep = _representation(rep_spec)
        config["representation"] = {"kind": rep_spec["kind"], **rep.to_dict()}
        kwargs = model_spec(family, kwargs, rep.output_shape,
                            num_classes=len(data["class_names"]))["kwargs"]
    else:  # shower generators
        kwargs = model_spec(family, kwargs, CALOGAN.shapes, particles=[-11],
                            energy_range=(1.0, 100.0))["kwargs"]
        config["calosim"] = {}
    model = build_model(family, **kwargs)
    with torch.no_grad():
        if family in ("autoencoder", "conv_autoencoder"):
            arrays = _read(rep, rep_spec["kind"], data, 200)
            x = _inputs(family, rep, rep_spec["kind"], arrays)["x"]
            model.set_normalization(x.mean(0), x.std(0))
        if family in SHOWER_FAMILIES:
            from hepml.io.calo import read_showers
            from hepml.representations.calo_layers import shower_tensors

            # the task's start from the training showers, then weights away from it (for
            # the CaloGAN, a trained generator that differs from the averaged one, which
            # generates)
            showers = read_showers(SHOWERS, tree="showers", entry_stop=500)
            model.initialise_from(*shower_tensors(showers, [-11])[:2])
            trained = model.generator if family == "calogan" else model
            for p in trained.parameters():
                p.add_(0.05 * torch.randn_like(p))
    save_checkpoint(path, {"model": {"kind": family, "kwargs": kwargs},
                           "model_state": model.state_dict(), "config": config, "epoch": 1})
    return model.eval(), config


def _pad(x: dict[str, torch.Tensor], family: str, extra: int = 2) -> dict[str, torch.Tensor]:
    """``extra`` more padding slots along every padded (non-batch) axis."""
    fill = {"mask": False, "neighbors": -1, "edges": -1}
    out = dict(x)
    for name, axes in model_contract(family).axes.items():
        for axis in axes:
            if axis == 0:
                continue
            t = out[name]
            shape = list(t.shape)
            shape[axis] = extra
            out[name] = torch.cat([t, torch.full(shape, fill.get(name, 0), dtype=t.dtype)], axis)
    return out


def _torch(model: torch.nn.Module, family: str, x: dict[str, torch.Tensor]
           ) -> dict[str, np.ndarray]:
    """A direct forward pass of the model in eval mode (no export path)."""
    with torch.no_grad():
        if family in SHOWER_FAMILIES:
            out = model(x["energy"], x["particle"], *(x[k] for k in model.noise_sizes()))
            return {f"layer_{i}": t.numpy() for i, t in enumerate(out)}
        out = model(*(x[k] for k in model_contract(family).inputs))
    if isinstance(out, dict):
        return {k: v.numpy() for k, v in out.items()}
    name = {"interaction_network": "edge_logits", "lstm_tracker": "next_hit"}.get(family, "logits")
    return {name: out.numpy()}


@pytest.mark.parametrize("family", list(CASES))
def test_family_exports_and_matches_torch(family: str, tmp_path: Path) -> None:
    """Export, then onnxruntime == torch on our own real inputs at two sizes; the JSON."""
    ckpt = tmp_path / "run" / "checkpoint_best.pt"
    model, config = _make_checkpoint(family, ckpt)
    rep_spec, data, _, n_check = CASES[family]
    out = tmp_path / "model.onnx"
    result = export_task.export(ckpt, out, n_check=n_check)
    # the family's own tolerance (CaloFlow: zero-suppression flips faint cells), else 1e-5
    tolerance = 1e-4 if family == "caloflow" else 1e-5
    assert result.tolerance == tolerance
    assert out.exists() and result.path == out
    assert not list(tmp_path.glob(".*tmp"))
    assert all(c.passed for c in result.cases) and len(result.cases) == 3
    print(f"{family}: max rel diff {result.max_rel:.2e}")

    # the check ran two batch sizes (and two sizes of every padded axis) through one file
    sizes = [c.sizes for c in result.cases]
    assert all(sizes[0][d] != sizes[1][d] for d in sizes[0]), sizes
    assert sizes[2]["batch"] == 1

    # independent check: our own inputs from the sample, onnxruntime on the written file
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    fed = [i.name for i in session.get_inputs()]
    if family in SHOWER_FAMILIES:
        from hepml.io.calo import read_showers

        showers = read_showers(SHOWERS, tree="showers", entry_stop=n_check)
        gen = torch.Generator().manual_seed(3)
        full = {**{k: torch.randn(n_check, size, generator=gen)
                   for k, size in model.noise_sizes().items()},
                "energy": torch.from_numpy(showers.energy),
                "particle": torch.zeros(n_check, dtype=torch.long)}
        # a generator of one particle ignores the particle input
        assert fed in (list(model_contract(family).inputs),
                       [k for k in model_contract(family).inputs if k != "particle"])
    else:
        rep = _representation(config["representation"])
        n_read = max(n_check, 2)
        full = _inputs(family, rep, rep_spec["kind"], _read(rep, rep_spec["kind"], data, n_read))
        assert fed == list(model_contract(family).inputs)
    n = len(next(iter(full.values())))
    small = {k: v[: max(1, n // 2)] for k, v in full.items()}
    for x in (full, _pad(small, family)):
        got = dict(zip([o.name for o in session.get_outputs()],
                       session.run(None, {k: x[k].numpy() for k in fed}), strict=True))
        want = _torch(model, family, x)
        assert set(got) == set(want)
        # shower layers on one scale, the largest cell of all layers
        common = max(np.abs(w).max() for w in want.values())
        for name, w in want.items():
            assert got[name].shape == w.shape
            scale = common if family in SHOWER_FAMILIES else np.abs(w).max()
            rel = np.abs(got[name] - w).max() / max(scale, 1e-12)
            assert rel <= tolerance, (family, name, rel)

    # the preprocessing JSON beside the model, and its compact copy inside it
    info = json.loads(export_task.preprocessing_path(out).read_text())
    assert info["checkpoint"]["sha256"] == export_task.file_checksum(ckpt).split(":")[1]
    assert info["model"]["kind"] == family and info["opset"] >= 17
    assert {"hepml", "torch", "onnxruntime"} <= set(info["versions"])
    assert [i["name"] for i in info["inputs"]] == fed
    assert info["inputs"][0]["shape"][0] == "batch"
    assert info["check"]["tolerance"] == tolerance
    meta = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    compact = json.loads(meta[export_task.METADATA_KEY])
    assert compact == {k: v for k, v in info.items() if k != "check"}
    if family in ("cnn", "particlenet", "gnn"):
        assert info["classes"]["names"] == data["class_names"]
        assert info["classes"]["signal"] == data["signal_class"]
    if family in ("autoencoder", "conv_autoencoder"):
        assert np.allclose(info["normalisation"]["scale"], model.scale.numpy())
    if rep_spec is not None:
        # the JSON alone rebuilds the representation: the same tensors as training's
        assert info["data"]["tree"] == data["tree"]
        rebuilt = export_task.build_representation(info["representation"])
        arrays = _read(rebuilt, rep_spec["kind"], {**data, "tree": info["data"]["tree"]}, 3)
        assert set(info["data"]["fields"]) >= set(rebuilt.fields(truth=False)
                                                  if rep_spec["kind"] == "hit_graph"
                                                  else rebuilt.required_fields)
        a = _inputs(family, rebuilt, rep_spec["kind"], arrays)
        b = _inputs(family, rep, rep_spec["kind"], arrays)
        for k in a:
            assert torch.equal(a[k], b[k]), k


@pytest.mark.parametrize("family, extra", [
    ("particlenet", {}), ("gnn", {"layer": "interaction"}), ("gnn", {"layer": "gat"}),
    ("gnn", {"layer": "edgeconv"}), ("gnn", {"layer": "gcn", "norm": "batch"}),
    ("interaction_network", {}), ("lstm_tracker", {"cell": "gru", "num_layers": 2}),
    ("lstm_tracker", {"cell": "lstm", "num_layers": 2, "bidirectional": True})])
def test_export_paths_match_forward_in_torch(family: str, extra: dict,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """The path a model takes while exported gives its forward's outputs, in torch."""
    import importlib

    rep_spec, data, kwargs, _ = CASES[family]
    rep = _representation(rep_spec)
    x = _inputs(family, rep, rep_spec["kind"], _read(rep, rep_spec["kind"], data, 6))
    spec = model_spec(family, {**kwargs, **extra}, rep.output_shape,
                      num_classes=len(data["class_names"]))
    torch.manual_seed(3)
    model = build_model(family, **spec["kwargs"]).eval()
    args = [x[k] for k in model_contract(family).inputs]
    module = importlib.import_module(type(model).__module__)
    with torch.no_grad():
        want = model(*args)
        monkeypatch.setattr(module, "exporting", lambda: True)
        got = model(*args)
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6 * float(want.abs().max()))


def test_failed_check_raises_and_leaves_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch
                                                ) -> None:
    """A check beyond the tolerance raises ExportError and writes nothing."""
    ckpt = tmp_path / "checkpoint_best.pt"
    _make_checkpoint("autoencoder", ckpt)
    real = export_check._onnx_outputs

    def off_by_a_little(session: Any, feed: dict, names: Any) -> list[np.ndarray]:
        outs = real(session, feed, names)
        outs[0] = outs[0] + 1e-3 * np.abs(outs[0]).max()  # 1e-3 relative: over 1e-5
        return outs

    monkeypatch.setattr(export_check, "_onnx_outputs", off_by_a_little)
    out = tmp_path / "model.onnx"
    with pytest.raises(ExportError, match="differs from the torch model") as err:
        export_task.export(ckpt, out, n_check=16)
    assert "reconstruction" in str(err.value) and "NO" in str(err.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_best.pt"]


def test_message_passing_sums_are_exact_on_every_run(tmp_path: Path) -> None:
    """Repeated onnxruntime runs of a hit-graph model on several threads give one answer.

    Reference: float64 ``index_add_`` of the same messages. onnxruntime's ``ScatterND``
    add loses updates on several threads (wrong by O(1) on most runs here), and the
    exported graph must not use it.
    """
    from hepml.models import hit_gnn

    class Sums(torch.nn.Module):
        def forward(self, h: torch.Tensor, index: torch.Tensor, e: torch.Tensor
                    ) -> torch.Tensor:
            return hit_gnn._sum_at(h, index, e)

    gen = torch.Generator().manual_seed(0)
    h, e = torch.zeros(500, 8), torch.randn(20_000, 8, generator=gen)
    index = torch.randint(0, 500, (20_000,), generator=gen)
    want = torch.zeros(500, 8, dtype=torch.float64).index_add_(0, index, e.double()).numpy()
    path = tmp_path / "sums.onnx"
    with export_graph._quiet_exporter():
        program = torch.onnx.export(Sums().eval(), (h, index, e), dynamo=True, verbose=False)
    program.save(str(path))
    assert "ScatterND" not in {n.op_type for n in onnx.load(str(path)).graph.node}
    options = ort.SessionOptions()
    options.intra_op_num_threads = 4
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    feed = dict(zip([i.name for i in session.get_inputs()],
                    (h.numpy(), index.numpy(), e.numpy()), strict=True))
    for _ in range(20):
        assert np.abs(session.run(None, feed)[0] - want).max() < 1e-4


def test_scatter_nd_sums_are_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A model whose export sums with ScatterND gets ExportError and no file."""
    from hepml.models import hit_gnn

    def index_add(h: torch.Tensor, index: torch.Tensor, e: torch.Tensor) -> torch.Tensor:
        return torch.zeros_like(h, dtype=e.dtype).index_add_(0, index, e)

    ckpt = tmp_path / "checkpoint_best.pt"
    _make_checkpoint("interaction_network", ckpt)
    monkeypatch.setattr(hit_gnn, "_sum_at", index_add)
    with pytest.raises(ExportError, match="ScatterND.*scatter_add_"):
        export_task.export(ckpt, tmp_path / "model.onnx", n_check=3)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_best.pt"]


def test_missing_extra_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                   capsys: pytest.CaptureFixture) -> None:
    """Without the ONNX packages, hepml export says in one line how to install them."""
    import importlib

    real = importlib.import_module

    def no_onnxscript(name: str, *args: Any) -> Any:
        if name == "onnxscript":
            raise ModuleNotFoundError("No module named 'onnxscript'")
        return real(name, *args)

    monkeypatch.setattr(importlib, "import_module", no_onnxscript)
    monkeypatch.setitem(sys.modules, "onnxscript", None)
    from hepml.cli import main

    code = main(["export", "--checkpoint", str(tmp_path / "none.pt"),
                 "--out", str(tmp_path / "m.onnx")])
    err = capsys.readouterr().err.strip()
    assert code == 2
    assert len(err.splitlines()) == 1
    assert "onnxscript" in err and 'pip install -e ".[onnx]"' in err
    assert not (tmp_path / "m.onnx").exists()


def test_compare_outputs_definition() -> None:
    """The tolerance is relative to the output's scale; NaN and shape mismatches fail."""
    want = np.array([[10.0, -2.0], [0.0, 1e-9]])
    got = want + np.array([[1e-4, 0.0], [0.0, 1e-9]])
    c = export_task.compare_outputs("y", got, want)
    assert math.isclose(c.rel, 1e-5) and c.passed  # 1e-4 / max|torch| = 10
    assert math.isclose(c.max_elem_rel, 1e-5)  # the 1e-9 element is below 1e-6 x scale
    assert not export_task.compare_outputs("y", got * 1.001, want).passed
    assert not export_task.compare_outputs("y", got[:1], want).passed
    assert not export_task.compare_outputs("y", np.full_like(want, np.nan), want).passed
    zero = export_task.compare_outputs("y", np.zeros(3), np.zeros(3))
    assert zero.passed and zero.rel == 0.0
