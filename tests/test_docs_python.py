"""The examples of docs/python.md run as doctests, from the repository root.

Each ```python block of the page ends with a blank line: doctest takes everything up to a
blank line as the expected output, the closing fence included.
"""

from __future__ import annotations

import doctest

import pytest
import torch
from conftest import ROOT


@pytest.fixture(autouse=True)
def one_thread():
    """A small CNN on a few hundred images runs fastest on one thread (the machine is shared)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_python_page_examples(monkeypatch):
    monkeypatch.chdir(ROOT)
    result = doctest.testfile(str(ROOT / "docs" / "python.md"), module_relative=False,
                              encoding="utf-8", report=True,
                              optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.attempted > 20
    assert result.failed == 0, "see the doctest report above"
