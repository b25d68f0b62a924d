"""CaloFlow: densities against analytic ones, sampling against likelihood, the calosim job."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from hepml.cli import main
from hepml.config import load_workflow
from hepml.io.calo import read_showers
from hepml.models import build_model
from hepml.models.caloflow import CaloFlow, _coupling_flow
from hepml.tasks import calosim
from hepml.training.checkpoint import load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
WORKFLOW = ROOT / "workflows" / "caloflow.yaml"
#: A small, fast model and training for tests.
SMALL = {"model.blocks": 2, "model.hidden": 16, "model.energy_transforms": 2,
         "model.energy_hidden": 8, "model.bins": 4, "training.epochs": 1,
         "training.batch_size": 64, "calosim.classifier": {"epochs": 3, "hidden": [16]},
         "calosim.classifier_low_level": {"epochs": 3, "hidden": [16]},
         "calosim.timing_batches": [1, 64]}
SHAPES = [[1, 3], [2, 2], [1, 2]]


def tiny(**kw) -> CaloFlow:
    torch.manual_seed(0)
    return build_model("caloflow", layer_shapes=SHAPES, particles=[-11], blocks=2, hidden=16,
                       energy_transforms=2, energy_hidden=8, bins=4, **kw)


def test_coupling_flow_density_is_the_change_of_variables_of_a_normal() -> None:
    """The density is log N(f(x); 0, 1) + log |det ∂f/∂x|, the Jacobian taken by autograd."""
    torch.manual_seed(1)
    flow = _coupling_flow(5, 2, blocks=4, hidden=16, bins=6, bound=3.0)
    for p in flow.parameters():  # away from the identity
        p.data.normal_(0, 0.3)
    c = torch.randn(2)
    f = flow(c).transform
    for x in torch.randn(4, 5) * 2:
        jac = torch.autograd.functional.jacobian(f, x)
        with torch.no_grad():
            z = f(x)
            expected = (-0.5 * z.pow(2).sum() - 2.5 * math.log(2 * math.pi)
                        + torch.linalg.slogdet(jac).logabsdet)
            assert float(flow(c).log_prob(x)) == pytest.approx(float(expected), abs=1e-4)


def test_flow_fits_a_correlated_gaussian_by_maximum_likelihood() -> None:
    """After training, the KL divergence to a known 2-d Gaussian is small."""
    torch.manual_seed(2)
    cov = torch.tensor([[1.0, 0.8], [0.8, 1.0]])
    truth = torch.distributions.MultivariateNormal(torch.tensor([1.0, -0.5]), cov)
    flow = _coupling_flow(2, 1, blocks=4, hidden=32, bins=8, bound=5.0)
    opt = torch.optim.Adam(flow.parameters(), lr=3e-3)
    c = torch.zeros(512, 1)
    for _ in range(400):
        x = truth.sample((512,))
        loss = -flow(c).log_prob(x).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    x = truth.sample((20000,))
    with torch.no_grad():
        kl = float((truth.log_prob(x) - flow(torch.zeros(20000, 1)).log_prob(x)).mean())
    assert 0.0 <= kl + 0.01 and kl < 0.03, kl


def test_sampling_inverts_the_likelihood_transform() -> None:
    model = tiny().eval()
    for p in model.parameters():
        p.data.normal_(0, 0.2)
    energy = torch.tensor([3.0, 20.0, 70.0])
    cond = model.condition(energy)
    z_e, z_c = torch.randn(3, model.n_layers), torch.randn(3, model.n_cells)
    with torch.no_grad():
        u = model.energy_flow(cond).transform.inv(z_e)
        x = model.cell_flow(torch.cat([cond, u], 1)).transform.inv(z_c)
        torch.testing.assert_close(model.energy_flow(cond).transform(u), z_e, atol=1e-4,
                                   rtol=1e-4)
        torch.testing.assert_close(model.cell_flow(torch.cat([cond, u], 1)).transform(x), z_c,
                                   atol=1e-4, rtol=1e-4)


def test_decode_inverts_the_shower_variables() -> None:
    """Showers → (u, pattern) logits → showers gives the showers back (no noise)."""
    model = tiny(noise=1e-12, pattern_noise=1e-12, threshold=1e-11)
    gen = torch.Generator().manual_seed(3)
    energy = torch.tensor([2.0, 10.0, 50.0, 90.0])
    cells = torch.rand(4, 9, generator=gen) * energy.view(-1, 1) / 9
    cells[0, -2:] = 1e-6  # a nearly empty last layer: its energy must survive
    cells[1, 0] = 0.0  # an empty cell stays empty
    u, x = model.variables(cells, energy, torch.Generator().manual_seed(0))
    out = torch.cat([t.flatten(1) for t in model.decode(u, x, energy)], 1)
    torch.testing.assert_close(out, cells, rtol=1e-4, atol=1e-8)  # 10 eV (float32)


def test_seeded_sampling_is_reproducible() -> None:
    model = tiny().eval()
    energy = torch.full((5,), 30.0)
    a = model.sample(energy, generator=torch.Generator().manual_seed(7))
    b = model.sample(energy, generator=torch.Generator().manual_seed(7))
    c = model.sample(energy, generator=torch.Generator().manual_seed(8))
    for x, y in zip(a, b, strict=True):
        assert torch.equal(x, y)
    assert not all(torch.equal(x, y) for x, y in zip(a, c, strict=True))
    assert all((x >= 0).all() for x in a)


# ------------------------------------------------------------------------ the job
@pytest.fixture(scope="module")
def run_dir(shower_file, tmp_path_factory) -> Path:
    cfg = load_workflow(WORKFLOW, {**SMALL, "data.files": [str(shower_file)],
                                   "runs_dir": str(tmp_path_factory.mktemp("runs"))})
    return calosim.run(cfg).run_dir


def test_run_reports_both_classifier_tests_with_their_floors(run_dir) -> None:
    m = json.loads((run_dir / "metrics.json").read_text())
    assert m["generator"] == "caloflow"
    assert set(m["training"]["parameters"]) == {"energy_flow", "cell_flow"}
    for key in ("classifier", "classifier_floor", "classifier_low_level",
                "classifier_low_level_floor"):
        assert 0.0 <= m[key]["auc"] <= 1.0, key
    assert m["classifier_low_level"]["n_features"] == 1 + 504
    assert m["classifier_floor"]["n_features"] == m["classifier"]["n_features"]
    assert len(m["resolution_agreement"]["ratio_per_bin"]) == 10
    assert set(m["generation"]["showers_per_s"]) == {"1", "64"}
    report = (run_dir / "report.html").read_text()
    assert "CaloFlow" in report and "low-level" in report


def test_checkpoint_resumes_to_the_same_weights(shower_file, tmp_path) -> None:
    over = {**SMALL, "data.files": [str(shower_file)], "training.epochs": 2,
            "training.early_stopping_patience": 0, "training.scheduler": "none",
            "calosim.timing_batches": [1]}
    straight = calosim.run(load_workflow(WORKFLOW, {**over, "runs_dir": str(tmp_path / "a")}))
    first = calosim.run(load_workflow(WORKFLOW, {**over, "training.epochs": 1,
                                                  "runs_dir": str(tmp_path / "b")}))
    resumed = calosim.run(load_workflow(WORKFLOW, {**over, "runs_dir": str(tmp_path / "b")}),
                          resume=first.run_dir)
    a = load_checkpoint(straight.run_dir / "checkpoint_last.pt", map_location="cpu")
    b = load_checkpoint(resumed.run_dir / "checkpoint_last.pt", map_location="cpu")
    assert a["epoch"] == b["epoch"] == 2
    for k, v in a["model_state"].items():
        torch.testing.assert_close(b["model_state"][k], v, rtol=0, atol=0, msg=k)


def test_hepml_simulate_generates_with_a_flow(run_dir, tmp_path, capsys) -> None:
    out = tmp_path / "flow.root"
    assert main(["-q", "simulate", "--checkpoint", str(run_dir / "checkpoint_best.pt"),
                 "--energy", "20", "--n", "50", "--seed", "3", "--out", str(out)]) == 0
    s = read_showers(out, tree="showers")
    assert len(s) == 50 and np.all(s.energy == 20.0)
    e = sum(x.reshape(50, -1).sum(1) for x in s.layers)
    assert np.all(e > 0) and np.all(e < 2 * 20.0)


def test_bad_flow_settings_are_refused_before_any_work(tmp_path, capsys) -> None:
    assert main(["-q", "validate", str(WORKFLOW), "--set", "model.bins=1"]) == 2
    assert main(["-q", "validate", str(WORKFLOW), "--set", "model.latent_dim=8"]) == 2
    err = capsys.readouterr().err
    assert "latent_dim" in err
    assert main(["-q", "validate", str(WORKFLOW)]) == 0


def test_compare_puts_generators_side_by_side_on_the_same_test_showers(run_dir, tmp_path,
                                                                       capsys) -> None:
    import shutil

    from hepml.errors import ConfigError

    rows = calosim.compare([run_dir, run_dir], tmp_path / "cmp", names=["a", "b"])
    m = json.loads((run_dir / "metrics.json").read_text())
    assert list(rows) == ["a", "b"]
    assert rows["a"]["classifier_low_level"]["auc"] == m["classifier_low_level"]["auc"]
    assert rows["a"]["classifier_high_level_floor"]["auc"] == m["classifier_floor"]["auc"]
    table = (tmp_path / "cmp" / "comparison.md").read_text()
    assert table.count("\n") == 4 and "AUC low-level" in table
    # another split: other test showers, refused
    other = tmp_path / "other"
    shutil.copytree(run_dir, other)
    split = np.load(other / "split.npy")
    np.save(other / "split.npy", np.roll(split, 1))
    with pytest.raises(ConfigError, match="not those of"):
        calosim.compare([run_dir, other], tmp_path / "cmp2")
    assert main(["-q", "compare", str(run_dir), str(other), "--out", str(tmp_path / "c3")]) == 2
    assert "not those of" in capsys.readouterr().err
