"""The library as a notebook uses it: the top-level namespace, and the Trainer on plain batches."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import ROOT

import hepml


def test_every_public_name_resolves():
    assert hepml.__all__[0] == "__version__"
    assert set(hepml.__all__) - {"__version__"} == set(hepml._API)
    assert len(set(hepml.__all__)) == len(hepml.__all__)
    for name in hepml.__all__:
        value = getattr(hepml, name)
        if name != "__version__":
            module = sys.modules[f"hepml.{hepml._API[name]}"]
            assert value is getattr(module, name), name
    assert set(hepml.__all__) <= set(dir(hepml))
    assert {"io", "training", "evaluation"} <= set(dir(hepml))
    assert hepml.io.read is hepml.read  # subpackages stay reachable as attributes


def test_unknown_name_is_an_attribute_error():
    name = "no_such_thing"
    with pytest.raises(AttributeError, match=name):
        getattr(hepml, name)
    assert not hasattr(hepml, "Trainer_")


def test_import_hepml_stays_cheap():
    code = ("import sys, hepml; heavy = {'torch', 'uproot', 'awkward', 'numpy', 'pydantic'}; "
            "print(sorted(heavy & set(sys.modules)))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "[]"
    # the first use of a name imports its layer
    code = "import sys, hepml; hepml.Trainer; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True,
                         text=True, check=True).stdout
    assert out.strip() == "True"
