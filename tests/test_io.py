"""Reading and writing ROOT files: validation, branch mapping, friend trees, bad input."""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import uproot

from hepml.errors import (
    BadValueError,
    ConfigError,
    EmptyInputError,
    HepmlError,
    InputFileError,
    MissingBranchError,
    MissingTreeError,
)
from hepml.io import (
    Source,
    iterate,
    parse_expression,
    read,
    read_metadata,
    write_friend_tree,
    write_friend_trees,
    write_tree,
)


@pytest.fixture()
def small_file(tmp_path):
    path = tmp_path / "small.root"
    write_tree(path, {
        "jet_pt": np.array([600.0, 610.0, 620.0, 630.0, 640.0], np.float32),
        "part_px": ak.Array([[1.0, 2.0], [], [3.0], [4.0, 5.0, 6.0], [7.0]]),
        "part_py": ak.Array([[0.5, 0.5], [], [1.0], [1.0, 1.0, 1.0], [2.0]]),
        "label_QCD": np.array([1, 0, 1, 0, 1], np.int32),
    }, metadata={"seed": 3})
    return path


def test_write_tree_is_ttree_with_shared_counter(small_file):
    with uproot.open(small_file) as f:
        assert f.classnames()["tree;1"] == "TTree"
        t = f["tree"]
        assert set(t.keys()) == {"jet_pt", "npart", "part_px", "part_py", "label_QCD"}
        assert t["npart"].array().tolist() == [2, 0, 1, 3, 1]
    assert read_metadata(small_file) == {"seed": 3}


def test_chunks_cover_all_entries_in_order(small_file):
    chunks = list(iterate(small_file, "tree", ["jet_pt", "part_px"], step_size=2))
    assert [(c.entry_start, c.entry_stop) for c in chunks] == [(0, 2), (2, 4), (4, 5)]
    assert np.concatenate([c.arrays.jet_pt for c in chunks]).tolist() == [600, 610, 620, 630, 640]


def test_branch_mapping_with_expression(small_file):
    a = read(small_file, "tree", ["pt", "jet_pt"], branches={"pt": "pt(part_px, part_py)"})
    assert a.pt[0].tolist() == pytest.approx([np.hypot(1, 0.5), np.hypot(2, 0.5)])
    assert a.pt[1].tolist() == []


def test_expression_parser_rejects_unknown_function_and_arity():
    with pytest.raises(ConfigError, match="Did you mean 'eta'"):
        parse_expression("etaa(a, b, c)")
    with pytest.raises(ConfigError, match="takes 2 arguments"):
        parse_expression("pt(a)")
    with pytest.raises(ConfigError):
        parse_expression("__import__('os')")
    assert parse_expression("add(x, 2.5)").branches == {"x"}


def test_missing_branch_suggests_nearest(small_file):
    with pytest.raises(MissingBranchError, match="Did you mean 'jet_pt'") as exc:
        read(small_file, "tree", ["jet_ptt"])
    assert isinstance(exc.value, KeyError) and isinstance(exc.value, HepmlError)
    assert str(small_file) in str(exc.value)


def test_missing_branch_in_rntuple_is_an_error_not_empty_data(tmp_path):
    path = tmp_path / "rntuple.root"
    with uproot.recreate(path) as f:
        f["ntuple"] = {"jet_pt": np.arange(3.0)}
    assert uproot.open(path).classnames()["ntuple;1"].endswith("RNTuple")
    assert read(path, "ntuple", ["jet_pt"]).jet_pt.tolist() == [0, 1, 2]
    with pytest.raises(MissingBranchError, match="jet_pT"):
        read(path, "ntuple", ["jet_pT"])


def test_missing_tree(small_file):
    with pytest.raises(MissingTreeError, match="Did you mean 'tree'"):
        read(small_file, "treee", ["jet_pt"])


def test_non_root_file(tmp_path):
    path = tmp_path / "notes.root"
    path.write_text("these are not jets\n")
    with pytest.raises(InputFileError, match="not a ROOT file"):
        read(path, "tree", ["jet_pt"])


def test_empty_and_missing_files(tmp_path):
    (tmp_path / "empty.root").write_bytes(b"")
    with pytest.raises(InputFileError, match="empty"):
        read(tmp_path / "empty.root", "tree", ["jet_pt"])
    with pytest.raises(InputFileError, match="no such file"):
        read(tmp_path / "absent.root", "tree", ["jet_pt"])


@pytest.mark.parametrize("keep", [0.3, 0.6, 0.9, 0.99])
def test_truncated_file(small_file, tmp_path, keep):
    data = small_file.read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputFileError, match="truncated"):
        read(cut, "tree", ["jet_pt", "part_px"])


def test_nan_and_inf_are_reported_with_entry(tmp_path):
    path = tmp_path / "nan.root"
    write_tree(path, {"part_px": ak.Array([[1.0], [2.0, np.nan], [np.inf]]),
                      "jet_pt": np.array([1.0, 2.0, 3.0])})
    with pytest.raises(BadValueError, match=r"'part_px'.* 2 entries, first at entry 1"):
        read(path, "tree", ["part_px"])
    assert read(path, "tree", ["jet_pt"]).jet_pt.tolist() == [1, 2, 3]


def test_zero_entries(tmp_path):
    path = tmp_path / "zero.root"
    write_tree(path, {"jet_pt": np.zeros(0, np.float32)})
    with pytest.raises(EmptyInputError, match="0 entries"):
        Source(path, "tree", ["jet_pt"])


def test_friend_tree_matches_entries(small_file, tmp_path):
    out = write_friend_tree(tmp_path / "friend.root", {"score": np.linspace(0, 1, 5)},
                            n_entries=5, source=small_file, source_tree="tree")
    with uproot.open(out) as f:
        assert f["predictions"].num_entries == 5
    with pytest.raises(ValueError, match="entry for entry"):
        write_friend_tree(tmp_path / "bad.root", {"score": np.zeros(4)}, n_entries=5)


def test_fixed_size_histogram_branches_round_trip(tmp_path):
    hists = np.arange(2 * 3 * 4, dtype=np.int32).reshape(2, 3, 4)
    out = write_tree(tmp_path / "hists.root", {"h": hists, "lumi": np.array([1, 2], np.int32)},
                     tree="lumis")
    with uproot.open(out) as f:
        assert f["lumis"]["h"].typename == "int32_t[3][4]"
        np.testing.assert_array_equal(f["lumis"]["h"].array(library="np"), hists)


def test_interrupted_write_keeps_old_file(small_file, tmp_path):
    before = small_file.read_bytes()
    with pytest.raises(ValueError):
        write_tree(small_file, {"a": np.zeros(3), "b": np.zeros(4)})
    assert small_file.read_bytes() == before
    assert not list(tmp_path.glob(".*part"))


def test_realdata_through_mapping(realdata):
    a = read(realdata / "uproot-HZZ.root", "events", ["jet_pt", "jet_eta"],
             branches={"jet_pt": "pt(Jet_Px, Jet_Py)", "jet_eta": "eta(Jet_Px, Jet_Py, Jet_Pz)"})
    assert len(a) == 2421
    t = uproot.open(realdata / "uproot-HZZ.root")["events"]
    px, py = t["Jet_Px"].array(), t["Jet_Py"].array()
    assert ak.all(abs(a.jet_pt - np.hypot(px, py)) < 1e-4)


def test_threshold_expression_on_jagged_branch(small_file):
    a = read(small_file, "tree", ["tag"], branches={"tag": "gt(part_px, 2.5)"})
    assert a.tag.tolist() == [[0.0, 0.0], [], [1.0], [1.0, 1.0, 1.0], [1.0]]
    assert str(ak.type(a.tag)).endswith("float32")
    b = read(small_file, "tree", ["low"], branches={"low": "lt(jet_pt, 615)"})
    assert b.low.tolist() == [1.0, 1.0, 0.0, 0.0, 0.0]


def test_error_with_context_keeps_class_and_attributes(small_file):
    with pytest.raises(MissingBranchError) as exc:
        read(small_file, "tree", ["jet_ptt"])
    new = exc.value.with_context("apply 'x'")
    assert type(new) is MissingBranchError and isinstance(new, KeyError)
    assert (new.branch == "jet_ptt" and str(new).startswith("apply 'x': ")
            and str(small_file) in str(new))


def test_locate_and_friend_trees_per_file(small_file, tmp_path):
    second = tmp_path / "second.root"
    write_tree(second, {"jet_pt": np.arange(3, dtype=np.float32)})
    source = Source([str(small_file), str(second)], "tree", ["jet_pt"], step_size=2)
    file, entry = source.locate([0, 4, 5, 7])
    assert file.tolist() == [0, 0, 1, 1] and entry.tolist() == [0, 4, 0, 2]
    with pytest.raises(IndexError):
        source.locate([8])
    written = write_friend_trees(tmp_path / "out", source, {"score": np.arange(8.0)},
                                 suffix="x", tree="friend")
    assert [p.name for p in written] == ["small.x.root", "second.x.root"]
    with uproot.open(written[1]) as f:
        assert f["friend"]["score"].array(library="np").tolist() == [5.0, 6.0, 7.0]
