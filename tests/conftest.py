"""Shared fixtures and markers: ``slow`` tests run with ``--runslow``; ``cuda`` ones need a GPU."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")
os.environ.setdefault("TQDM_DISABLE", "1")

ROOT = Path(__file__).resolve().parents[1]
DATA_SAMPLES = ROOT / "data_samples"
REALDATA = ROOT.parent / "shared" / "realdata"
JETS_SAMPLE = DATA_SAMPLES / "top_qcd_jets.root"

#: A small jet-image CNN and a small CaloGAN (three layers of 16, 16 and 8 cells) for
#: trainer and device tests.
SMALL_CNN = {"kind": "cnn", "kwargs": {"image_size": [8, 8], "conv_channels": [4, 4],
                                       "pool_after": [1], "dense": [16], "dropout": 0.2}}
SMALL_CALOGAN = {"layer_shapes": [[2, 8], [4, 4], [4, 2]], "latent_dim": 8, "channels": 8,
                 "disc_channels": 4, "disc_features": 8, "minibatch_kernels": 4,
                 "energy_min": 1.0, "energy_max": 100.0}
#: The CaloGAN with its energy mixture, per-cell occupancy and width features.
SMALL_CALOGAN_HALO = {**SMALL_CALOGAN, "energy_model": "mixture", "occupancy": True,
                      "widths": True}
SMALL_CALOFLOW = {"layer_shapes": [[2, 8], [4, 4], [4, 2]], "blocks": 2, "hidden": 8,
                  "energy_transforms": 2, "energy_hidden": 8, "bins": 4,
                  "energy_min": 1.0, "energy_max": 100.0}


def write_workflow(workflow: Path, out: Path, overrides: dict, *, files: list,
                   runs_dir: Path | None = None) -> Path:
    """Write ``workflow`` with dotted-key ``overrides`` and other data files to ``out``."""
    import yaml

    data = yaml.safe_load(Path(workflow).read_text())
    for key, value in overrides.items():
        node = data
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    data["data"]["files"] = [str(f) for f in files]
    if runs_dir is not None:
        data["runs_dir"] = str(runs_dir)
    out.write_text(yaml.safe_dump(data))
    return out


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--runslow", action="store_true", default=False, help="run slow tests")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    import torch

    skip_slow = pytest.mark.skip(reason="slow: run with --runslow")
    skip_cuda = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "slow" in item.keywords and not config.getoption("--runslow"):
            item.add_marker(skip_slow)
        if "cuda" in item.keywords and not torch.cuda.is_available():
            item.add_marker(skip_cuda)


@pytest.fixture(scope="session")
def jets_sample() -> Path:
    """The shipped top-vs-QCD sample."""
    if not JETS_SAMPLE.exists():
        pytest.fail(f"{JETS_SAMPLE} is missing: the shipped sample is part of the repository")
    return JETS_SAMPLE


@pytest.fixture(scope="session")
def realdata() -> Path:
    """``../shared/realdata`` beside the checkout (skipped where it is absent)."""
    if not REALDATA.exists():
        pytest.skip(f"{REALDATA} is not there")
    return REALDATA


@pytest.fixture(scope="session")
def shower_file(tmp_path_factory) -> Path:
    """700 GFlash e+ showers, 5-50 GeV, in a hepml ROOT file: the calosim job's tests."""
    from hepml.io.calo import write_showers
    from hepml.simulation.showers import ShowerSimulationConfig, simulate_showers

    showers, meta = simulate_showers(ShowerSimulationConfig(n_showers=700, seed=3,
                                                            energy_min=5.0, energy_max=50.0))
    return write_showers(tmp_path_factory.mktemp("showers") / "eplus.root", showers,
                         metadata=meta)
