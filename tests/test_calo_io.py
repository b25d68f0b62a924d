"""Calorimeter shower files: round trips, units, layer splits, bad inputs and the CLI.

ROOT, CaloGAN HDF5 and challenge HDF5 files with hand-made showers; the challenge's
voxel-to-layer split; every bad input; entry ranges; the ``convert`` subcommands.
"""

from __future__ import annotations

import logging

import h5py
import numpy as np
import pytest
import uproot

from hepml.cli import main
from hepml.errors import (
    BadValueError,
    ConfigError,
    EmptyInputError,
    InputFileError,
    MissingBranchError,
    MissingColumnError,
    MissingTreeError,
)
from hepml.io import read_metadata, write_tree
from hepml.io.calo import (
    CALOGAN,
    CHALLENGE_LAYERS,
    PARTICLES,
    CaloLayout,
    Showers,
    count_showers,
    inspect_showers,
    iter_showers,
    parse_layer_shapes,
    parse_particle,
    read_calochallenge_hdf5,
    read_calogan_hdf5,
    read_showers,
    read_showers_root,
    shower_format,
    write_calochallenge_hdf5,
    write_calogan_hdf5,
    write_showers,
)

N = 5


def make_showers(n: int = N, shapes=CALOGAN.shapes, particle: int = 22) -> Showers:
    """Showers with known numbers.

    Cell (i, layer, r, c) is (i + 1) * 0.5 GeV where r + c is even, else 0; overflow
    (i, layer) is 0.25 * (layer + 1) GeV; the energy 10 * (i + 1) GeV.
    """
    layers = []
    for rows, cols in shapes:
        mask = (np.add.outer(np.arange(rows), np.arange(cols)) % 2 == 0).astype(np.float32)
        layers.append(mask[None] * (0.5 * (np.arange(n) + 1))[:, None, None])
    overflow = np.tile(0.25 * (np.arange(len(shapes)) + 1), (n, 1))
    return Showers(10.0 * (np.arange(n) + 1), tuple(layers), overflow,
                   np.full(n, particle), source="made")


def assert_same(a: Showers, b: Showers, *, overflow: bool = True, particle: bool = True):
    assert len(a) == len(b) and a.shapes == b.shapes
    np.testing.assert_allclose(a.energy, b.energy, rtol=1e-6)
    for x, y in zip(a.layers, b.layers, strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-6)
    if overflow:
        np.testing.assert_allclose(a.overflow, b.overflow, rtol=1e-6)
    if particle:
        np.testing.assert_array_equal(a.particle, b.particle)


def write_calogan_raw(path, n=N, *, drop=(), replace=None, energy_shape=(1,)):
    """A CaloGAN-like file written dataset by dataset (MeV cells, GeV energy)."""
    data = {"energy": np.full((n, *energy_shape), 50.0, np.float32),
            "layer_0": np.ones((n, 3, 96), np.float32),
            "layer_1": np.full((n, 12, 12), 2.0, np.float32),
            "layer_2": np.full((n, 12, 6), 3.0, np.float32),
            "overflow": np.full((n, 3), 4.0, np.float32)}
    data.update(replace or {})
    with h5py.File(path, "w") as f:
        for name, values in data.items():
            if name not in drop:
                f[name] = values
    return path


def write_challenge_raw(path, n=N, n_voxels=368, **replace):
    data = {"incident_energies": np.full((n, 1), 50000.0),
            "showers": np.arange(n * n_voxels, dtype=np.float64).reshape(n, n_voxels)}
    data.update(replace)
    with h5py.File(path, "w") as f:
        for name, values in data.items():
            if values is not None:
                f[name] = values
    return path


# ----------------------------------------------------------------------------- round trips


def test_root_round_trip_and_branch_types(tmp_path):
    showers = make_showers()
    out = write_showers(tmp_path / "s.root", showers, metadata={"note": "made"})
    with uproot.open(out) as f:
        t = f["showers"]
        assert t.classname == "TTree" and t.num_entries == N
        assert {k: t[k].typename for k in t.keys()} == {
            "energy": "float", "layer_0": "float[3][96]", "layer_1": "float[12][12]",
            "layer_2": "float[12][6]", "overflow": "float[3]", "particle": "int32_t"}
        arrays = t.arrays(library="np")
    assert arrays["layer_0"].dtype == np.float32 and arrays["layer_0"].shape == (N, 3, 96)
    assert arrays["energy"].tolist() == [10.0, 20.0, 30.0, 40.0, 50.0]  # GeV
    assert arrays["layer_1"][2, 0, 0] == 1500.0  # 1.5 GeV -> 1500 MeV
    assert arrays["overflow"][0].tolist() == [250.0, 500.0, 750.0]
    assert arrays["particle"].tolist() == [22] * N
    meta = read_metadata(out)
    assert meta["note"] == "made" and meta["units"]["layer_*"] == "MeV"
    assert meta["layer_shapes"] == [[3, 96], [12, 12], [12, 6]] and meta["n_showers"] == N
    back = read_showers_root(out)
    assert_same(back, showers)
    assert back.layers[1][2, 0, 0] == 1.5 and back.source == str(out)


def test_root_written_in_batches_is_the_same_file(tmp_path):
    showers = make_showers()
    whole = write_showers(tmp_path / "whole.root", showers)
    parts = write_showers(tmp_path / "parts.root", iter([showers.select(slice(0, 2)),
                                                       showers.select(slice(2, None))]))
    with uproot.open(whole) as a, uproot.open(parts) as b:
        ta, tb = a["showers"], b["showers"]
        assert {k: ta[k].typename for k in ta.keys()} == {k: tb[k].typename for k in tb.keys()}
        for k in ta.keys():
            np.testing.assert_array_equal(ta[k].array(library="np"), tb[k].array(library="np"))
    assert read_metadata(parts)["n_showers"] == N
    with pytest.raises(EmptyInputError, match="no showers"):
        write_showers(tmp_path / "none.root", iter([]))
    other = make_showers(2, shapes=((2, 2),))
    with pytest.raises(BadValueError, match="same|cannot follow"):
        write_showers(tmp_path / "mixed.root", iter([showers, other]))
    assert not (tmp_path / "mixed.root").exists() and not list(tmp_path.glob(".*part"))


def test_calogan_round_trip_units(tmp_path):
    showers = make_showers(particle=-11)
    out = write_calogan_hdf5(tmp_path / "eplus.h5", showers)
    with h5py.File(out) as f:
        assert sorted(f) == ["energy", "layer_0", "layer_1", "layer_2", "overflow"]
        assert f["energy"].shape == (N, 1) and f["energy"][4, 0] == 50.0  # GeV
        assert f["layer_1"].shape == (N, 12, 12) and f["layer_1"][2, 0, 0] == 1500.0  # MeV
        assert f["overflow"][0].tolist() == [250.0, 500.0, 750.0]
        assert f["layer_0"].dtype == np.float32
    back = read_calogan_hdf5(out, particle="eplus")
    assert_same(back, showers)
    assert back.energy[4] == 50.0 and back.layers[1][2, 0, 0] == 1.5
    # without a particle: 0 (the file does not record it)
    assert read_calogan_hdf5(out).particle.tolist() == [0] * N
    # ROOT -> CaloGAN -> ROOT keeps the numbers
    root = write_showers(tmp_path / "again.root", read_showers(out, particle=-11))
    assert_same(read_showers(root), showers)


def test_calogan_energy_of_shape_n_and_missing_overflow(tmp_path, caplog):
    path = write_calogan_raw(tmp_path / "flat.h5", energy_shape=(), drop=("overflow",))
    with caplog.at_level(logging.WARNING, logger="hepml.io.calo"):
        s = read_calogan_hdf5(path, particle="gamma")
    assert "overflow" in caplog.text and str(path) in caplog.text
    assert s.energy.tolist() == [50.0] * N
    assert s.overflow.shape == (N, 3) and not s.overflow.any()
    assert s.layers[0][0, 0, 0] == pytest.approx(1e-3) and s.layers[2][0, 0, 0] == 3e-3
    assert s.particle.tolist() == [22] * N


def test_challenge_round_trip_units(tmp_path):
    showers = make_showers(shapes=CHALLENGE_LAYERS[368])
    out = write_calochallenge_hdf5(tmp_path / "photons.h5", showers)
    with h5py.File(out) as f:
        assert f["incident_energies"].shape == (N, 1)
        assert f["incident_energies"][4, 0] == 50000.0  # 50 GeV in MeV
        assert f["showers"].shape == (N, 368) and f["showers"].dtype == np.float32
        # layer 1 starts after layer 0's 8 voxels: (1, 0, 0) of shower 2 is 1.5 GeV
        assert f["showers"][2, 8] == 1500.0
    back = read_calochallenge_hdf5(out, particle="photon")
    assert_same(back, showers, overflow=False)
    assert not back.overflow.any() and back.energy[4] == 50.0


def test_challenge_file_from_outside(tmp_path):
    """A file as the challenge ships it: float64, no layer_shapes attribute."""
    path = write_challenge_raw(tmp_path / "dataset_1_photons_1.hdf5")
    s = read_calochallenge_hdf5(path, particle=22)
    assert s.energy.tolist() == [50.0] * N  # 50000 MeV -> 50 GeV
    assert s.shapes == CHALLENGE_LAYERS[368]
    assert s.layers[0][0, 0, 7] == pytest.approx(7e-3)
    assert s.particle.tolist() == [22] * N and s.overflow.shape == (N, 5)


@pytest.mark.parametrize(("n_voxels", "index", "where"), [
    (368, 8 + 16 * 3 + 5, (1, 3, 5)),
    (368, 367, (4, 0, 4)),
    (533, 8 + 100 + 100 + 5 + 15 * 9 + 14, (4, 9, 14)),
    (533, 8 + 100 + 100 + 5 + 150 + 160 + 3, (6, 0, 3)),
    (6480, 144 * 17 + 9 * 4 + 2, (17, 4, 2)),
    (40500, 900 * 44 + 18 * 49 + 17, (44, 49, 17)),
])
def test_challenge_voxel_lands_in_its_layer(tmp_path, n_voxels, index, where):
    voxels = np.zeros((2, n_voxels), np.float32)
    voxels[1, index] = 2000.0
    path = write_challenge_raw(tmp_path / "one.h5", n=2, n_voxels=n_voxels, showers=voxels)
    s = read_showers(path)
    assert s.shapes == CHALLENGE_LAYERS[n_voxels]
    assert sum(r * c for r, c in s.shapes) == n_voxels
    layer, row, col = where
    assert s.layers[layer][1, row, col] == 2.0
    assert sum(float(x.sum()) for x in s.layers) == 2.0


def test_challenge_layer_shapes_given_and_stored(tmp_path):
    path = write_challenge_raw(tmp_path / "odd.h5", n_voxels=12)
    with pytest.raises(BadValueError, match=r"odd\.h5.*12 voxels.*layer shapes"):
        read_calochallenge_hdf5(path)
    with pytest.raises(BadValueError, match=r"odd\.h5.*12 voxels.*layer shapes"):
        inspect_showers(path)
    assert count_showers(path) == N  # counting needs no layers
    s = read_calochallenge_hdf5(path, layer_shapes=[(2, 3), (3, 2)])
    assert s.shapes == ((2, 3), (3, 2)) and s.layers[1][0, 2, 1] == pytest.approx(11e-3)
    assert read_calochallenge_hdf5(path, layer_shapes="2*2x3").shapes == ((2, 3), (2, 3))
    with pytest.raises(BadValueError, match=r"odd\.h5.*12 voxels.*add up to 8"):
        read_calochallenge_hdf5(path, layer_shapes="2x2,2x2")
    with pytest.raises(BadValueError, match=r"368 voxels.*add up to 10"):
        read_calochallenge_hdf5(write_challenge_raw(tmp_path / "d1.h5"), layer_shapes="2x5")
    # shapes other than the challenge's survive a round trip through the stored attribute
    showers = make_showers(shapes=((2, 3), (1, 4)))
    out = write_calochallenge_hdf5(tmp_path / "mine.h5", showers)
    assert_same(read_showers(out), showers, overflow=False, particle=False)


def test_parse_layer_shapes_and_particles():
    assert parse_layer_shapes("1x8, 10x16,10X19") == ((1, 8), (10, 16), (10, 19))
    assert parse_layer_shapes("45*16x9") == CHALLENGE_LAYERS[6480]
    for bad in ("1x8,x", "", "0x3"):
        with pytest.raises(ConfigError, match="layer shapes"):
            parse_layer_shapes(bad)
    assert parse_particle(None) == 0 and parse_particle("gamma") == 22
    assert parse_particle("PiPlus") == 211 and parse_particle("-11") == -11
    assert parse_particle(2112) == 2112 and parse_particle("e+") == PARTICLES["eplus"]
    with pytest.raises(ConfigError, match="Did you mean 'piplus'"):
        parse_particle("pipls")


# ---------------------------------------------------------------------------- format detection


def test_format_by_content_not_name(tmp_path):
    showers = make_showers()
    root = write_showers(tmp_path / "a.h5", showers)  # a ROOT file with an HDF5 name
    gan = write_calogan_hdf5(tmp_path / "b.root", showers)
    chal = write_calochallenge_hdf5(tmp_path / "c.dat", showers)
    assert [shower_format(p) for p in (root, gan, chal)] == ["root", "calogan", "calochallenge"]
    assert_same(read_showers(root), showers)
    assert_same(read_showers(gan, particle=22), showers)
    assert_same(read_showers(chal, particle=22), showers, overflow=False)
    assert [count_showers(p) for p in (root, gan, chal)] == [N] * 3
    info = inspect_showers(gan)
    assert info.format == "calogan" and info.layer_shapes == CALOGAN.shapes
    assert info.has_overflow and not info.has_particle
    with pytest.raises(InputFileError, match="ROOT file, not HDF5"):
        read_calogan_hdf5(root)


def test_hdf5_in_no_known_layout(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["jets"] = np.zeros(3)
        f["labels"] = np.zeros(3)
    for call in (shower_format, read_showers, count_showers):
        with pytest.raises(InputFileError, match=r"other\.h5.*Datasets found: jets, labels"):
            call(path)


# ------------------------------------------------------------------------------- bad inputs


@pytest.mark.parametrize("reader", [read_showers, read_calogan_hdf5, read_calochallenge_hdf5,
                                    read_showers_root, count_showers, shower_format])
def test_missing_text_and_truncated_files(tmp_path, reader):
    with pytest.raises(InputFileError, match=r"absent\.h5: no such file"):
        reader(tmp_path / "absent.h5")
    text = tmp_path / "notes.h5"
    text.write_text("these are not showers\n")
    with pytest.raises(InputFileError, match=r"notes\.h5.*n(ot|either) .*(ROOT|HDF5)"):
        reader(text)
    empty = tmp_path / "empty.h5"
    empty.write_bytes(b"")
    with pytest.raises(InputFileError, match=r"empty\.h5.*empty"):
        reader(empty)


@pytest.mark.parametrize("keep", [0.2, 0.5, 0.9])
@pytest.mark.parametrize("writer", [write_calogan_hdf5, write_calochallenge_hdf5])
def test_truncated_hdf5(tmp_path, writer, keep):
    data = writer(tmp_path / "full.h5", make_showers(50)).read_bytes()
    cut = tmp_path / "cut.h5"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(InputFileError, match=r"cut\.h5.*truncated"):
        read_showers(cut)


def test_truncated_root(tmp_path):
    data = write_showers(tmp_path / "full.root", make_showers(50)).read_bytes()
    cut = tmp_path / "cut.root"
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(InputFileError, match=r"cut\.root.*truncated"):
        read_showers(cut)


def test_calogan_missing_datasets(tmp_path):
    path = write_calogan_raw(tmp_path / "gap.h5", drop=("layer_1",))
    for call in (read_calogan_hdf5, read_showers, count_showers):
        with pytest.raises(MissingColumnError, match=r"gap\.h5: no column 'layer_1'.*"
                           r"energy, layer_0, layer_2, overflow") as exc:
            call(path)
        assert isinstance(exc.value, KeyError)
    two = write_calogan_raw(tmp_path / "two.h5", drop=("layer_2",),
                            replace={"overflow": np.zeros((N, 2), np.float32)})
    with pytest.raises(MissingColumnError, match=r"two\.h5: no column 'layer_2'"):
        read_calogan_hdf5(two)  # CaloGAN has three layers
    assert read_calogan_hdf5(two, layout=None).shapes == ((3, 96), (12, 12))
    with pytest.raises(MissingColumnError, match=r"no column 'energy'"):
        read_calogan_hdf5(write_calogan_raw(tmp_path / "noe.h5", drop=("energy",)))


def test_calogan_shapes_and_lengths(tmp_path):
    path = write_calogan_raw(tmp_path / "shape.h5",
                             replace={"layer_1": np.zeros((N, 12, 11), np.float32)})
    with pytest.raises(BadValueError, match=r"shape\.h5.*'layer_1' has 12x11.*expects 12x12"):
        read_calogan_hdf5(path)
    assert read_calogan_hdf5(path, layout=None).shapes[1] == (12, 11)
    with pytest.raises(BadValueError, match=r"layout calogan expects"):
        read_showers(path, layout=CALOGAN)
    path = write_calogan_raw(tmp_path / "length.h5",
                             replace={"layer_2": np.zeros((N + 1, 12, 6), np.float32)})
    with pytest.raises(BadValueError, match=r"length\.h5.*different numbers.*layer_2: 6"):
        read_calogan_hdf5(path)
    path = write_calogan_raw(tmp_path / "over.h5",
                             replace={"overflow": np.zeros((N, 2), np.float32)})
    with pytest.raises(BadValueError, match=r"over\.h5.*'overflow'.*expected \(N, 3\)"):
        read_calogan_hdf5(path)
    path = write_calogan_raw(tmp_path / "four.h5",
                             replace={"layer_3": np.zeros((N, 2, 2), np.float32)})
    with pytest.raises(BadValueError, match=r"four\.h5: holds layer_3.*3 layers"):
        read_calogan_hdf5(path)
    small = CaloLayout("small", ((3, 96),), ((1.0, 1.0),), (1.0,))
    with pytest.raises(BadValueError, match=r"layer_1"):
        read_calogan_hdf5(write_calogan_raw(tmp_path / "x.h5"), layout=small)


def test_challenge_missing_and_mismatched(tmp_path):
    path = write_challenge_raw(tmp_path / "noinc.h5", incident_energies=None)
    with pytest.raises(MissingColumnError, match=r"noinc\.h5: no column 'incident_energies'"
                       r".*Columns found: showers"):
        read_calochallenge_hdf5(path)
    path = write_challenge_raw(tmp_path / "len.h5", incident_energies=np.ones((N - 1, 1)))
    with pytest.raises(BadValueError, match=r"len\.h5.*incident_energies: 4, showers: 5"):
        read_showers(path)
    path = write_challenge_raw(tmp_path / "d3.h5", n=1, n_voxels=40500)
    with pytest.raises(BadValueError, match=r"d3\.h5.*40500.*add up to 6480"):
        read_calochallenge_hdf5(path, layer_shapes=CHALLENGE_LAYERS[6480])


@pytest.mark.parametrize(("name", "value", "kind"), [
    ("layer_1", -1.0, "negative"), ("overflow", -0.5, "negative"), ("energy", -50.0, "negative"),
    ("layer_0", np.nan, "NaN or infinite"), ("energy", np.inf, "NaN or infinite"),
])
def test_calogan_bad_values(tmp_path, name, value, kind):
    data = {"energy": np.full((N, 1), 50.0, np.float32),
            "layer_0": np.ones((N, 3, 96), np.float32),
            "layer_1": np.ones((N, 12, 12), np.float32),
            "overflow": np.ones((N, 3), np.float32)}
    for entry in (2, 4):
        data[name][entry].flat[-1] = value
    path = write_calogan_raw(tmp_path / "bad.h5", replace=data)
    with pytest.raises(BadValueError, match=rf"bad\.h5: dataset '{name}' has 2 {kind} values in "
                       r"2 of 5 entries read \(0-5\), first at entry 2"):
        read_calogan_hdf5(path)
    # only the entries read are checked, and entry numbers count from the file's start
    assert len(read_calogan_hdf5(path, entry_stop=2)) == 2
    with pytest.raises(BadValueError, match="first at entry 4"):
        read_calogan_hdf5(path, entry_start=3)


def test_challenge_and_root_bad_values(tmp_path):
    voxels = np.zeros((N, 368))
    voxels[3, 100] = -2.0
    path = write_challenge_raw(tmp_path / "neg.h5", showers=voxels)
    with pytest.raises(BadValueError, match=r"neg\.h5: dataset 'showers' has 1 negative.*"
                       "first at entry 3"):
        read_showers(path)
    path = write_challenge_raw(tmp_path / "inc.h5", incident_energies=np.full((N, 1), np.nan))
    with pytest.raises(BadValueError, match=r"inc\.h5: dataset 'incident_energies'.*NaN"):
        read_showers(path)
    layer = np.ones((N, 12, 12), np.float32)
    layer[1, 5, 5] = -3.0
    branches = {"energy": np.ones(N, np.float32), "layer_0": np.ones((N, 3, 96), np.float32),
                "layer_1": layer, "layer_2": np.ones((N, 12, 6), np.float32),
                "overflow": np.zeros((N, 3), np.float32)}
    root = write_tree(tmp_path / "neg.root", branches, tree="showers")
    with pytest.raises(BadValueError, match=r"neg\.root:showers: branch 'layer_1' has 1 "
                       "negative.*first at entry 1"):
        read_showers(root)


def test_root_missing_branches_and_tree(tmp_path):
    branches = {"energy": np.ones(N, np.float32), "layer_0": np.ones((N, 3, 96), np.float32),
                "layer_2": np.ones((N, 12, 6), np.float32)}
    path = write_tree(tmp_path / "gap.root", branches, tree="showers")
    with pytest.raises(MissingBranchError, match=r"gap\.root:showers: no branch 'layer_1'"):
        read_showers(path)
    with pytest.raises(MissingTreeError, match="Did you mean 'showers'"):
        read_showers(path, tree="shower")
    del branches["layer_2"]
    one = write_tree(tmp_path / "one.root", branches, tree="showers")
    with pytest.raises(MissingBranchError, match=r"one\.root:showers: no branch 'layer_1'"):
        read_showers(one, layout=CALOGAN)
    # no overflow or particle branches: zeros, and the particle given
    s = read_showers(one, particle="piplus")
    assert s.shapes == ((3, 96),) and not s.overflow.any() and s.particle.tolist() == [211] * N
    bad = write_tree(tmp_path / "jag.root", {"energy": np.ones(N, np.float32),
                                              "layer_0": np.ones((N, 4), np.float32)},
                     tree="showers")
    with pytest.raises(BadValueError, match=r"jag\.root:showers: branch 'layer_0'.*rows"):
        read_showers(bad)


def test_empty_inputs(tmp_path):
    gan = write_calogan_raw(tmp_path / "zero.h5", n=0)
    with pytest.raises(EmptyInputError, match=r"zero\.h5.*0 showers"):
        read_calogan_hdf5(gan)
    chal = write_challenge_raw(tmp_path / "zero_c.h5", n=0)
    with pytest.raises(EmptyInputError, match=r"zero_c\.h5.*0 showers"):
        read_showers(chal)
    root = write_tree(tmp_path / "zero.root", {
        "energy": np.zeros(0, np.float32), "layer_0": np.zeros((0, 2, 2), np.float32),
        "overflow": np.zeros((0, 1), np.float32)}, tree="showers")
    with pytest.raises(EmptyInputError, match=r"zero\.root.*0 showers"):
        read_showers(root)


# ----------------------------------------------------------------------------- entry ranges


@pytest.mark.parametrize("fmt", ["root", "calogan", "calochallenge"])
def test_entry_ranges_and_chunks(tmp_path, fmt):
    showers = make_showers(7)
    writer = {"root": write_showers, "calogan": write_calogan_hdf5,
              "calochallenge": write_calochallenge_hdf5}[fmt]
    path = writer(tmp_path / "s.file", showers)
    part = read_showers(path, entry_start=2, entry_stop=5)
    assert part.energy.tolist() == [30.0, 40.0, 50.0]
    assert part.layers[1][:, 0, 0].tolist() == [1.5, 2.0, 2.5]
    assert read_showers(path, entry_start=-2).energy.tolist() == [60.0, 70.0]
    assert read_showers(path, entry_stop=100).energy.tolist() == showers.energy.tolist()
    with pytest.raises(EmptyInputError,
                       match=r"s\.file: entries 9-end select no showers; the file holds 7"):
        read_showers(path, entry_start=9)
    chunks = list(iter_showers(path, chunk_size=3, particle=22, entry_start=1))
    assert [len(c) for c in chunks] == [3, 3]
    assert_same(Showers.concatenate(chunks), showers.select(slice(1, None)),
                overflow=fmt != "calochallenge")


# ------------------------------------------------------------------------------------- CLI


def test_cli_calogan_to_root_and_back(tmp_path, capsys):
    first = write_calogan_hdf5(tmp_path / "eplus_1.hdf5", make_showers(3))
    second = write_calogan_hdf5(tmp_path / "eplus_2.hdf5", make_showers(4))
    out = tmp_path / "eplus.root"
    assert main(["convert", "calogan", str(first), str(second), "--particle", "eplus",
                 "--out", str(out), "--chunk-size", "2"]) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert printed == [f"wrote 7 eplus showers (layers 3x96,12x12,12x6) from 2 CaloGAN HDF5 "
                       f"files to {out}:showers"]
    s = read_showers(out)
    assert s.energy.tolist() == [10.0, 20.0, 30.0, 10.0, 20.0, 30.0, 40.0]
    assert s.particle.tolist() == [-11] * 7
    with uproot.open(out) as f:
        assert f["showers"]["layer_1"].array(library="np")[2, 0, 0] == 1500.0
    meta = read_metadata(out)
    assert meta["source_files"] == [str(first), str(second)]
    assert meta["source_format"] == "calogan" and meta["particle"] == "eplus"
    assert meta["particle_pdgid"] == -11

    back = tmp_path / "back.h5"
    assert main(["convert", "showers", str(out), "--to", "calogan", "--out", str(back)]) == 0
    assert "wrote 7 showers" in capsys.readouterr().out
    with h5py.File(back) as f, h5py.File(first) as g:
        np.testing.assert_array_equal(f["layer_0"][:3], g["layer_0"][:])
        np.testing.assert_array_equal(f["energy"][:3], g["energy"][:])
        np.testing.assert_array_equal(f["overflow"][:3], g["overflow"][:])


def test_cli_calochallenge_to_root_and_back(tmp_path, capsys):
    src = write_challenge_raw(tmp_path / "dataset_1_photons_1.hdf5")
    out = tmp_path / "photons.root"
    assert main(["convert", "calochallenge", str(src), "--particle", "photon",
                 "--out", str(out)]) == 0
    assert capsys.readouterr().out.startswith("wrote 5 gamma showers (layers 1x8,10x16,10x19,"
                                              "1x5,1x5) from 1 calorimeter challenge HDF5")
    s = read_showers(out)
    assert s.energy.tolist() == [50.0] * N and s.particle.tolist() == [22] * N
    back = tmp_path / "back.h5"
    assert main(["convert", "showers", str(out), "--to", "calochallenge", "--out",
                 str(back)]) == 0
    assert "calorimeter challenge HDF5 layout" in capsys.readouterr().out
    with h5py.File(back) as f, h5py.File(src) as g:
        np.testing.assert_allclose(f["showers"][:], g["showers"][:], rtol=1e-6)
        assert f["incident_energies"][:].tolist() == [[50000.0]] * N

    odd = write_challenge_raw(tmp_path / "odd.h5", n_voxels=12)
    assert main(["convert", "calochallenge", str(odd), "--particle", "22", "--layers",
                 "2x3,3x2", "--out", str(tmp_path / "odd.root")]) == 0
    assert read_showers(tmp_path / "odd.root").shapes == ((2, 3), (3, 2))
    capsys.readouterr()
    assert main(["convert", "calochallenge", str(odd), "--particle", "22",
                 "--out", str(tmp_path / "x.root")]) == 2
    assert "12 voxels" in capsys.readouterr().err


def test_cli_errors(tmp_path, capsys):
    gan = write_calogan_hdf5(tmp_path / "g.h5", make_showers(2))
    chal = write_challenge_raw(tmp_path / "c.h5")
    out = tmp_path / "out.root"
    assert main(["convert", "calogan", str(gan), "--particle", "gama", "--out", str(out)]) == 2
    assert "Did you mean 'gamma'" in capsys.readouterr().err
    assert main(["convert", "calogan", str(gan), str(chal), "--particle", "gamma",
                 "--out", str(out)]) == 2
    assert "c.h5: a calorimeter challenge HDF5 file, not CaloGAN HDF5" in capsys.readouterr().err
    missing = tmp_path / "missing.h5"
    assert main(["convert", "calogan", str(gan), str(missing), "--particle", "gamma",
                 "--out", str(out)]) == 2
    assert "missing.h5: no such file" in capsys.readouterr().err
    assert not out.exists()
    other = write_calogan_hdf5(tmp_path / "other.h5", make_showers(2, shapes=((2, 2),)))
    assert main(["convert", "calogan", str(gan), str(other), "--particle", "gamma",
                 "--any-layout", "--out", str(out)]) == 2
    assert "same layers" in capsys.readouterr().err
