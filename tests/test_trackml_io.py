"""TrackML CSV input: the hit layout, barrel mapping, counts, the ROOT round trip, bad files."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import uproot

from hepml.cli import main
from hepml.errors import BadValueError, InputFileError, MissingColumnError
from hepml.io import read_metadata, read_trackml, read_trackml_event
from hepml.io.trackml import barrel_layer, trackml_prefixes

P1, P2, P3 = 4503599627370496, 4503599644147712, 4503599660924928  # TrackML-sized ids

HITS = """hit_id,x,y,z,volume_id,layer_id,module_id
1,30.0,5.0,10.0,8,2,100
2,70.0,10.0,25.0,8,4,101
3,115.0,20.0,40.0,8,6,102
4,170.0,30.0,60.0,8,8,103
5,-30.0,2.0,-15.0,8,2,104
6,-69.0,3.0,-30.0,8,4,105
7,40.0,40.0,-1500.0,7,2,10
8,260.0,10.0,5.0,13,2,200
9,700.0,50.0,300.0,17,4,300
10,500.0,0.0,100.0,13,8,201
"""
# hit 7: end cap (volume 7) of P2; hit 8: noise; hit 9: no truth row
TRUTH = f"""hit_id,particle_id,tx,ty,tz,tpx,tpy,tpz,weight
1,{P1},30.0,5.0,10.0,3.0,4.0,0.0,0.1
2,{P1},70.0,10.0,25.0,3.0,4.0,0.0,0.1
3,{P1},115.0,20.0,40.0,3.0,4.0,0.0,0.1
4,{P1},170.0,30.0,60.0,3.0,4.0,0.0,0.1
5,{P2},-30.0,2.0,-15.0,-0.6,0.8,-1.0,0.05
6,{P2},-69.0,3.0,-30.0,-0.6,0.8,-1.0,0.05
7,{P2},40.0,40.0,-1500.0,-0.6,0.8,-1.0,0.05
8,0,260.0,10.0,5.0,0.0,0.0,0.0,0.0
10,{P1},500.0,0.0,100.0,3.0,4.0,0.0,0.1
"""
PARTICLES = f"""particle_id,vx,vy,vz,px,py,pz,q,nhits
{P1},0.0,0.0,1.0,3.0,4.0,0.0,1,5
{P2},0.0,0.0,-2.0,-0.6,0.8,-1.0,-1,3
{P3},0.0,0.0,0.0,1.0,0.0,0.0,1,0
"""
CELLS = """hit_id,ch0,ch1,value
1,10,20,0.5
1,11,20,0.25
2,5,6,1.0
"""


def write_event(directory, name="event000000042", **replace):
    files = {"hits": HITS, "truth": TRUTH, "particles": PARTICLES, "cells": CELLS}
    files.update(replace)
    for kind, text in files.items():
        if text is not None:
            (directory / f"{name}-{kind}.csv").write_text(text)
    return directory / name


def test_barrel_mapping_and_counts(tmp_path):
    prefix = write_event(tmp_path)
    ev = read_trackml_event(prefix)
    assert len(ev) == 1 and ev.event_number.tolist() == [42]
    # the end-cap hit 7 is dropped; volume 8 layers 2/4/6/8 -> 0-3, 13/2 -> 4, 13/8 -> 7,
    # 17/4 -> 9
    assert ev.hit_id[0].tolist() == [1, 2, 3, 4, 5, 6, 8, 9, 10]
    assert ev.hit_layer[0].tolist() == [0, 1, 2, 3, 0, 1, 4, 9, 7]
    # noise hit 8 and hit 9 (no truth row) have particle 0, momentum 0 and weight 0
    assert ev.hit_particle_id[0].tolist() == [P1] * 4 + [P2] * 2 + [0, 0, P1]
    assert ev.hit_tpx[0].tolist()[6:8] == [0.0, 0.0]
    assert ev.hit_weight[0].tolist() == pytest.approx([0.1] * 4 + [0.05] * 2 + [0, 0, 0.1])
    # P1 keeps its 5 hits, P2 loses the end-cap one (3 -> 2), P3 has none
    assert ev.particle_id[0].tolist() == [P1, P2, P3]
    assert ev.particle_nhits[0].tolist() == [5, 2, 0]
    assert ev.particle_pt[0].tolist() == pytest.approx([5.0, 1.0, 1.0])
    assert ev.particle_eta[0].tolist() == pytest.approx([0.0, math.asinh(-1.0), 0.0], abs=1e-6)
    assert ev.particle_phi[0].tolist() == pytest.approx([math.atan2(4, 3), math.atan2(0.8, -0.6),
                                                         0.0], abs=1e-6)
    assert ev.particle_pdgid[0].tolist() == [-1] * 3
    assert ev.particle_vertex[0].tolist() == [0] * 3
    assert ev.particle_q[0].tolist() == [1, -1, 1]
    # types of the hepml layout
    assert ak.type(ev.hit_x).content.content.primitive == "float32"
    assert ak.type(ev.hit_layer).content.content.primitive == "int32"
    assert ak.type(ev.hit_particle_id).content.content.primitive == "int64"
    assert ak.type(ev.event_number).content.primitive == "int64"


def test_all_volumes_and_cells(tmp_path):
    prefix = write_event(tmp_path)
    ev = read_trackml_event(prefix, barrel_only=False, cells=True, event_number=7)
    assert ev.event_number.tolist() == [7]
    assert ev.hit_id[0].tolist() == list(range(1, 11))
    assert ev.hit_layer[0].tolist()[6] == -1
    assert ev.particle_nhits[0].tolist() == [5, 3, 0]  # from the particles file
    # hit 1: two cells (0.5 + 0.25), hit 2: one cell, others none
    assert ev.hit_ncells[0].tolist() == [2, 1] + [0] * 8
    assert ev.hit_charge[0].tolist() == pytest.approx([0.75, 1.0] + [0.0] * 8)
    assert barrel_layer(np.array([8, 17, 17, 9]), np.array([8, 4, 6, 2])).tolist() == [3, 9, -1, -1]


def test_several_events_and_prefixes(tmp_path):
    write_event(tmp_path, "event000000001")
    write_event(tmp_path, "event000000002")
    # a glob over all files of both events names each event once
    prefixes = trackml_prefixes(str(tmp_path / "event*"))
    assert prefixes == [str(tmp_path / "event000000001"), str(tmp_path / "event000000002")]
    assert trackml_prefixes(str(tmp_path / "event000000002-hits.csv")) == prefixes[1:]
    events = read_trackml(prefixes)
    assert len(events) == 2 and events.event_number.tolist() == [1, 2]
    assert ak.num(events.hit_id).tolist() == [9, 9]


def test_convert_cli_round_trip(tmp_path, capsys):
    a = write_event(tmp_path, "event000000001")
    b = write_event(tmp_path, "event000000005")
    out = tmp_path / "trackml.root"
    assert main(["-q", "convert", "trackml", str(a), str(b), "--out", str(out)]) == 0
    assert "wrote 2 events (18 hits)" in capsys.readouterr().out
    with uproot.open(out) as f:
        assert f.classnames()["hits;1"] == "TTree"
        t = f["hits"]
        keys = set(t.keys())
        assert {"nhit", "nparticle", "hit_x", "hit_layer", "hit_particle_id", "hit_weight",
                "particle_nhits", "particle_pt", "event_number"} <= keys
        arrays = t.arrays()
    assert arrays["nhit"].tolist() == [9, 9] and arrays["nparticle"].tolist() == [3, 3]
    assert arrays["event_number"].tolist() == [1, 5]
    original = read_trackml([a, b])
    for field in original.fields:
        assert arrays[field].tolist() == original[field].tolist(), field
    meta = read_metadata(out)
    assert meta["barrel_only"] is True and meta["events"] == [str(a), str(b)]


def test_missing_column(tmp_path):
    hits = HITS.replace("hit_id,x,y,z,", "hit_id,x,y,zz,")
    prefix = write_event(tmp_path, hits=hits)
    with pytest.raises(MissingColumnError) as err:
        read_trackml_event(prefix)
    message = str(err.value)
    assert "event000000042-hits.csv" in message and "no column 'z'" in message
    assert "Columns found: hit_id, x, y, zz, volume_id" in message
    assert isinstance(err.value, KeyError)


def test_missing_truth_file(tmp_path, capsys):
    prefix = write_event(tmp_path, truth=None)
    with pytest.raises(InputFileError, match=r"event000000042-truth\.csv: no such file"):
        read_trackml_event(prefix)
    # the command line prints one line and exits with 2
    assert main(["convert", "trackml", str(prefix), "--out", str(tmp_path / "x.root")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("hepml convert: error:") and "truth.csv" in err
    assert not (tmp_path / "x.root").exists()


def test_nan_and_text_values(tmp_path):
    # hit 3 (data row 3, line 4) has x = nan
    prefix = write_event(tmp_path, hits=HITS.replace("3,115.0,", "3,nan,"))
    with pytest.raises(BadValueError, match=r"hits\.csv: column 'x' is nan at data row 3 "
                                            r"\(line 4\)"):
        read_trackml_event(prefix)
    prefix = write_event(tmp_path, hits=HITS.replace("5,-30.0,2.0,", "5,-30.0,abc,"))
    with pytest.raises(BadValueError, match=r"hits\.csv: line 6, column 'y': 'abc' is not a "
                                            "number"):
        read_trackml_event(prefix)
    prefix = write_event(tmp_path, truth=TRUTH + f"1,{P2},0,0,0,0,0,0,0\n")
    with pytest.raises(BadValueError, match="hit_id 1 appears 2 times"):
        read_trackml_event(prefix)


def test_empty_event(tmp_path):
    # header lines only: an event with no hits and no particles
    prefix = write_event(tmp_path, hits=HITS.splitlines()[0] + "\n",
                         truth=TRUTH.splitlines()[0] + "\n",
                         particles=PARTICLES.splitlines()[0] + "\n")
    ev = read_trackml_event(prefix)
    assert ak.num(ev.hit_id).tolist() == [0] and ak.num(ev.particle_id).tolist() == [0]
