"""Tracking metrics (double-majority matching, rates, TrackML weights and score) and plots.

The small cases are worked out by hand in the comments; the random case is checked against
straightforward pure-Python versions of the TrackML library's definitions.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict

import numpy as np
import pytest
import torch

from hepml.errors import BadValueError, EmptyInputError
from hepml.evaluation.tracking import (
    TRACKML_ORDER_PROPOSAL,
    edge_metrics,
    efficiency_vs,
    match_tracks,
    reconstructable,
    tracking_metrics,
    trackml_order_weights,
    trackml_pt_weight,
    trackml_score,
    trackml_weights,
)


def t(values, dtype=torch.long):
    return torch.tensor(values, dtype=dtype)


def metrics(hits, particles, **kwargs):
    """tracking_metrics on (event, particle, track) hit lists and a particle table."""
    he, hp, ht = hits
    pe, pid, pt, eta, nhits = particles
    return tracking_metrics(t(he), t(hp), t(ht), t(pe), t(pid), t(pt, torch.float32),
                            t(eta, torch.float32), t(nhits), **kwargs)


# ------------------------------------------------------------------------------ matching


@pytest.fixture()
def perfect():
    """One event: particles 11 and 12 (5 hits each) found as tracks 0 and 1; one noise hit.

    The noise hit is in no track.
    """
    hits = ([0] * 11, [11] * 5 + [12] * 5 + [0], [0] * 5 + [1] * 5 + [-1])
    particles = ([0, 0], [11, 12], [2.0, 5.0], [0.1, -0.3], [5, 5])
    return hits, particles


def test_perfect_reconstruction(perfect):
    hits, particles = perfect
    m = metrics(hits, particles)
    assert m["efficiency"] == 1.0 and m["efficiency_uncertainty"] == 0.0
    assert m["fake_rate"] == 0.0 and m["duplicate_rate"] == 0.0
    assert (m["n_reconstructable"], m["n_tracks"], m["n_matched_tracks"]) == (2, 2, 2)
    assert m["n_events"] == 1 and m["device"] == "cpu"
    he, hp, ht = (t(x) for x in hits)
    z = torch.arange(11, dtype=torch.float64)
    w = trackml_weights(he, hp, z, t([0, 0]), t([11, 12]), t([2.0, 5.0], torch.float64),
                        torch.zeros(2))
    assert float(w.sum()) == pytest.approx(1.0) and float(w[10]) == 0.0  # noise weighs 0
    score = trackml_score(he, hp, ht, w)
    assert score.mean == pytest.approx(1.0)
    assert score.events.tolist() == [0] and score.scores.tolist() == pytest.approx([1.0])


def test_split_in_exact_halves_is_not_matched():
    # particle 21 has 6 hits; tracks 0 and 1 take 3 each: 3 > 3/2 of the track, but
    # 3 is not > 6/2 of the particle -> neither matches; efficiency 0, both tracks fake
    hits = ([0] * 6, [21] * 6, [0, 0, 0, 1, 1, 1])
    particles = ([0], [21], [2.0], [0.0], [6])
    m = match_tracks(*(t(x) for x in hits))
    assert m.matched.tolist() == [False, False]
    assert m.n_shared.tolist() == [3, 3] and m.n_particle_hits.tolist() == [6, 6]
    r = metrics(hits, particles)
    assert r["efficiency"] == 0.0 and r["n_reconstructable"] == 1
    assert r["fake_rate"] == 1.0 and r["n_fake_tracks"] == 2
    w = torch.full((6,), 1 / 6, dtype=torch.float64)
    assert trackml_score(*(t(x) for x in hits), w).mean == 0.0


def test_split_four_two_and_short_tracks():
    # 4 of 6 hits in track 0 (4 > 3: matched), 2 in track 1 (2 hits < min_track_hits = 3:
    # dropped, counted as short); with min_track_hits = 1 track 1 is a fake (2 < 3)
    hits = ([0] * 6, [21] * 6, [0, 0, 0, 0, 1, 1])
    particles = ([0], [21], [2.0], [0.0], [6])
    r = metrics(hits, particles)
    assert (r["n_tracks"], r["n_tracks_short"], r["efficiency"], r["fake_rate"]) == (1, 1, 1.0, 0.0)
    r = metrics(hits, particles, min_track_hits=1)
    assert (r["n_tracks"], r["n_fake_tracks"], r["fake_rate"]) == (2, 1, 0.5)
    assert r["fake_rate_uncertainty"] == pytest.approx(math.sqrt(0.25 / 2))


@pytest.fixture()
def mixed():
    """Four tracks in one event, worked out by hand.

    Track 0: 3 hits of A (31, 4 hits in all) + 2 noise -> 3 > 5/2 and 3 > 4/2: matched.
    Track 1: 3 noise hits -> fake. Track 2: 2 hits of B (32) + 2 of C (33), 50/50 -> fake
    (majority B, the smaller id). Track 3: the 4 hits of D (34, pT 0.5) -> matched, but D is
    below min_pt. A's fourth hit is in no track.
    """
    he = [0] * 17
    hp = [31, 31, 31, 0, 0] + [0, 0, 0] + [32, 32, 33, 33] + [34] * 4 + [31]
    ht = [0] * 5 + [1] * 3 + [2] * 4 + [3] * 4 + [-1]
    particles = ([0] * 4, [31, 32, 33, 34], [1.5, 3.0, 0.5, 0.5], [0.0] * 4, [4, 2, 2, 4])
    return (he, hp, ht), particles


def test_majority_noise_and_fifty_fifty(mixed):
    hits, (pe, pid, *_) = mixed
    m = match_tracks(*(t(x) for x in hits), t(pe), t(pid))
    assert m.track_id.tolist() == [0, 1, 2, 3]
    assert m.track_particle.tolist() == [31, 0, 32, 34]
    assert m.n_shared.tolist() == [3, 0, 2, 4]
    assert m.n_track_hits.tolist() == [5, 3, 4, 4]
    assert m.n_particle_hits.tolist() == [4, 0, 2, 4]
    assert m.matched.tolist() == [True, False, False, True]
    # per particle, in the order of the table
    assert m.particle_n_hits.tolist() == [4, 2, 2, 4]
    assert m.particle_n_matched.tolist() == [1, 0, 0, 1]


def test_rates_with_a_low_pt_particle(mixed):
    hits, particles = mixed
    r = metrics(hits, particles, min_hits=4)
    # reconstructable (pT > 1, >= 4 hits): A only, and it is found
    assert (r["n_reconstructable"], r["n_reconstructable_matched"], r["efficiency"]) == (1, 1, 1.0)
    # 4 tracks, 2 match nothing (tracks 1 and 2)
    assert (r["n_tracks"], r["n_fake_tracks"], r["fake_rate"]) == (4, 2, 0.5)
    # signal fake rate leaves out track 3 (it finds D, below min_pt): 2 / (2 + 1)
    assert r["n_tracks_signal"] == 3 and r["fake_rate_signal"] == pytest.approx(2 / 3)
    assert r["duplicate_rate"] == 0.0 and r["n_matched_particles"] == 2
    # with min_pt 0.4, D is reconstructable too: 2 of 2 found, no signal track left out
    r = metrics(hits, particles, min_hits=4, min_pt=0.4)
    assert (r["n_reconstructable"], r["efficiency"], r["fake_rate_signal"]) == (2, 1.0, 0.5)
    # an |eta| cut keeps particles with |eta| < max_abs_eta only
    r = metrics(hits, particles, min_hits=4, max_abs_eta=0.0)
    assert r["n_reconstructable"] == 0 and r["efficiency"] is None


def test_duplicates_need_shared_hits():
    # particle 41 has hits 1..6; track 0 holds hits 1-5, track 1 hits 2-6 (4 shared), each
    # hit listed once per track. Each track: 5 of 5 hits from 41 and 5 of 6 of its hits ->
    # both match: one duplicate among 2 matched tracks
    hit_id = [1, 2, 3, 4, 5, 2, 3, 4, 5, 6]
    hits = ([0] * 10, [41] * 10, [0] * 5 + [1] * 5)
    particles = ([0], [41], [2.0], [0.0], [6])
    r = metrics(hits, particles, hit_id=t(hit_id))
    assert (r["n_matched_tracks"], r["n_duplicate_tracks"], r["duplicate_rate"]) == (2, 1, 0.5)
    assert r["efficiency"] == 1.0 and r["fake_rate"] == 0.0
    m = match_tracks(*(t(x) for x in hits), hit_id=t(hit_id))
    assert m.particle_n_hits.tolist() == [6] and m.particle_n_matched.tolist() == [2]
    # without hit_id the 10 rows count as 10 hits of 41: 5 is not > 10/2, nothing matches
    assert metrics(hits, particles)["n_matched_tracks"] == 0


def test_track_ids_are_per_event():
    # events 7 and 8 both have particle 1 found as track 0: two tracks, two particles
    hits = ([7] * 5 + [8] * 5, [1] * 10, [0] * 10)
    particles = ([7, 8], [1, 1], [2.0, 2.0], [0.0, 0.0], [5, 5])
    r = metrics(hits, particles)
    assert (r["n_events"], r["n_tracks"], r["n_matched_tracks"], r["efficiency"]) == (2, 2, 2, 1.0)
    assert r["duplicate_rate"] == 0.0
    m = match_tracks(*(t(x) for x in hits))
    assert m.track_event.tolist() == [7, 8] and m.particle_event.tolist() == [7, 8]


def test_empty_events_give_defined_values():
    # no hits, no particles: every rate is undefined (null, listed as nan), counts are 0
    empty = ([], [], [])
    r = metrics(empty, ([], [], [], [], []))
    assert r["efficiency"] is None and r["fake_rate"] is None and r["duplicate_rate"] is None
    assert r["non_finite"]["efficiency"] == "nan"
    assert (r["n_reconstructable"], r["n_tracks"], r["n_events"]) == (0, 0, 0)
    m = match_tracks(t([]), t([]), t([]))
    assert m.track_id.numel() == 0 and m.particle_id.numel() == 0
    s = trackml_score(t([]), t([]), t([]), torch.zeros(0))
    assert s.scores.numel() == 0 and math.isnan(s.mean)
    w = trackml_weights(t([]), t([]), torch.zeros(0), t([]), t([]), torch.zeros(0),
                        torch.zeros(0))
    assert w.numel() == 0
    # hits but no track: efficiency 0 of 1, fake rate undefined with 0 tracks
    r = metrics(([0] * 5, [1] * 5, [-1] * 5), ([0], [1], [2.0], [0.0], [5]))
    assert r["efficiency"] == 0.0 and r["fake_rate"] is None and r["n_tracks"] == 0


def test_one_hit_particle_is_not_reconstructable_and_weighs_nothing():
    # particle 1: 4 hits at pT 2; particle 2: a single hit, pT 10
    he, hp = t([0] * 5), t([1, 1, 1, 1, 2])
    w = trackml_weights(he, hp, torch.arange(5.0), t([0, 0]), t([1, 2]), t([2.0, 10.0]),
                        torch.zeros(2))
    assert float(w[4]) == 0.0 and float(w[:4].sum()) == pytest.approx(1.0)
    keep = reconstructable(t([2.0, 10.0], torch.float32), t([4, 1]), min_hits=1)
    assert keep.tolist() == [True, True]
    assert reconstructable(t([2.0, 10.0]), t([5, 1])).tolist() == [True, False]


def test_bad_inputs_raise():
    with pytest.raises(BadValueError, match="hit_particle has 2 entries"):
        match_tracks(t([0, 0, 0]), t([1, 1]), t([0, 0, 0]))
    with pytest.raises(BadValueError, match="integer ids"):
        match_tracks(t([0.0], torch.float32), t([1]), t([0]))
    with pytest.raises(BadValueError, match="not finite"):
        trackml_score(t([0]), t([1]), t([0]), t([math.nan], torch.float64))
    with pytest.raises(BadValueError, match="listed 2 times"):
        trackml_weights(t([0]), t([1]), torch.zeros(1), t([0, 0]), t([1, 1]), torch.ones(2),
                        torch.zeros(2))


# ---------------------------------------------------------------------------- TrackML


def test_pt_weight_ramp():
    # 0 below 0.05 GeV, 0.2 up to 0.5, linear to 1 at 3 GeV: 1.75 GeV -> 0.2 + 0.8/2 = 0.6
    pt = t([0.01, 0.05, 0.3, 0.5, 1.75, 3.0, 50.0], torch.float64)
    assert trackml_pt_weight(pt).tolist() == pytest.approx([0, 0.2, 0.2, 0.2, 0.6, 1, 1])


def test_order_weight_matrix():
    w = trackml_order_weights()
    assert w.shape == (21, 20) and float(w[:4].abs().sum()) == 0.0
    assert w[4:].sum(1).tolist() == pytest.approx([1.0] * 17)
    # 4 hits: the 9-point proposal read at 0, 8/3, 16/3, 8 -> 10, 5 + 1/3 (between 6 and
    # 5), 3, 6; sum 24 + 1/3
    assert w[4, :4].tolist() == pytest.approx([10 / (73 / 3), (16 / 3) / (73 / 3),
                                               3 / (73 / 3), 6 / (73 / 3)])
    # 9 hits: the proposal itself over its sum 49
    assert w[9, :9].tolist() == pytest.approx([p / 49 for p in TRACKML_ORDER_PROPOSAL])


def test_weights_by_hand():
    # particle 1: pT 1.75 (w_pt 0.6), vz 10, hits at z 40, 11, 25, -10 -> |dz| 30, 1, 15, 20
    # -> order 3, 0, 1, 2 -> w_order 6, 10, 16/3, 3 (/ 73/3).
    # particle 2: pT 0.3 (w_pt 0.2), 4 hits in order. Noise hit: 0.
    # Before normalising particle 1 sums to 0.6 and particle 2 to 0.2 -> 0.75 and 0.25.
    he = t([0] * 9)
    hp = t([1, 1, 1, 1, 2, 2, 2, 2, 0])
    z = t([40.0, 11.0, 25.0, -10.0, 1.0, 2.0, 3.0, 4.0, 0.0], torch.float64)
    pe, pid = t([0, 0]), t([1, 2])
    pt, vz = t([1.75, 0.3], torch.float64), t([10.0, 0.0], torch.float64)
    w = trackml_weights(he, hp, z, pe, pid, pt, vz)
    s = 73 / 3
    assert w[:4].tolist() == pytest.approx([0.75 * 6 / s, 0.75 * 10 / s, 0.75 * (16 / 3) / s,
                                            0.75 * 3 / s])
    assert w[4:8].tolist() == pytest.approx([0.25 * 10 / s, 0.25 * (16 / 3) / s,
                                             0.25 * 3 / s, 0.25 * 6 / s])
    assert float(w[8]) == 0.0
    # min_pt = 1: particle 2 weighs 0 and particle 1 alone sums to 1
    w = trackml_weights(he, hp, z, pe, pid, pt, vz, min_pt=1.0)
    assert float(w[4:].abs().sum()) == 0.0 and float(w.sum()) == pytest.approx(1.0)
    # a track with particle 1's hits at |dz| 1, 15, 20 (3 of 4 hits: matched) scores their
    # weight, (10 + 16/3 + 3) / (73/3)
    ht = t([-1, 0, 0, 0, -1, -1, -1, -1, -1])
    assert trackml_score(he, hp, ht, w).mean == pytest.approx((10 + 16 / 3 + 3) / s)


def _reference_weights(he, hp, z, pe, pid, pt, vz):
    """The TrackML library's weight definition, written plainly with loops."""
    proposal = list(TRACKML_ORDER_PROPOSAL)
    table = {(e, p): (q, v) for e, p, q, v in zip(pe, pid, pt, vz, strict=True)}
    groups = defaultdict(list)
    for i, (e, p) in enumerate(zip(he, hp, strict=True)):
        if p != 0:
            groups[(e, p)].append(i)
    w = [0.0] * len(he)
    for key, idx in groups.items():
        if key not in table:
            continue
        p_pt, p_vz = table[key]
        w_pt = float(np.interp(p_pt, [0.05, 0.5, 3.0], [0.2, 0.2, 1.0], left=0.0, right=1.0))
        nhits = len(idx)
        if nhits < 4:
            continue
        nh = min(nhits, 20)
        support = np.arange(9) * (nh - 1) / 8
        order = np.interp(np.arange(nh), support, proposal)
        order /= order.sum()
        dz = [abs(z[i] - p_vz) for i in idx]
        for i, d in zip(idx, dz, strict=True):
            below = sum(1 for x in dz if x < d)
            equal = sum(1 for x in dz if x == d)
            ihit = int((below + 1 + below + equal) / 2 - 1)  # pandas average rank - 1
            w[i] = w_pt * order[ihit] if ihit < 20 else 0.0
    totals = Counter()
    for e, x in zip(he, w, strict=True):
        totals[e] += x
    return [x / totals[e] if totals[e] > 0 else 0.0 for e, x in zip(he, w, strict=True)]


def _reference_score(he, hp, ht, w):
    """The TrackML library's event score (majority by sorted runs, noise included)."""
    scores = {}
    for e in sorted(set(he)):
        rows = [i for i in range(len(he)) if he[i] == e]
        n_true = Counter(hp[i] for i in rows)
        total = sum(w[i] for i in rows)
        tracks = defaultdict(list)
        for i in rows:
            if ht[i] >= 0:
                tracks[ht[i]].append(i)
        good = 0.0
        for idx in tracks.values():
            counts = Counter(hp[i] for i in idx)
            best = min(counts, key=lambda p: (-counts[p], p))  # most hits, then smallest id
            n = counts[best]
            if 2 * n > len(idx) and 2 * n > n_true[best]:
                good += sum(w[i] for i in idx if hp[i] == best)
        scores[e] = good / total if total else math.nan
    return scores


@pytest.fixture(scope="module")
def random_events():
    rng = np.random.default_rng(3)
    he, hp, ht, z = [], [], [], []
    pe, pid, pt, vz = [], [], [], []
    for event in (4, 9, 12):
        ids = rng.choice(2**55, size=25, replace=False) + 1  # large ids, like TrackML's
        nh = rng.integers(1, 24, size=25)
        pe += [event] * 25
        pid += ids.tolist()
        pt += rng.exponential(1.5, 25).tolist()
        vz += rng.normal(0, 50, 25).round().tolist()
        for p, n in zip(ids, nh, strict=True):
            he += [event] * int(n)
            hp += [int(p)] * int(n)
            z += rng.normal(0, 300, int(n)).round(-1).tolist()  # rounded: ties in |dz|
        n_noise = 15
        he += [event] * n_noise
        hp += [0] * n_noise
        z += rng.normal(0, 300, n_noise).tolist()
    n = len(he)
    # tracks: the true particle, then a third of the hits moved to random tracks, some
    # dropped; ids per event
    truth_track = np.unique(np.array(hp), return_inverse=True)[1]
    track = np.where(np.array(hp) == 0, -1, truth_track)
    move = rng.random(n) < 0.3
    track[move] = rng.integers(-1, 40, size=int(move.sum()))
    ht = track.tolist()
    return he, hp, ht, z, pe, pid, pt, vz


def test_weights_and_score_match_reference(random_events):
    he, hp, ht, z, pe, pid, pt, vz = random_events
    w = trackml_weights(t(he), t(hp), t(z, torch.float64), t(pe), t(pid),
                        t(pt, torch.float64), t(vz, torch.float64))
    ref = _reference_weights(he, hp, z, pe, pid, pt, vz)
    assert w.tolist() == pytest.approx(ref, abs=1e-12)
    for event in (4, 9, 12):  # normalised per event
        assert float(w[t(he) == event].sum()) == pytest.approx(1.0)
    score = trackml_score(t(he), t(hp), t(ht), w)
    expected = _reference_score(he, hp, ht, w.tolist())
    assert score.events.tolist() == [4, 9, 12]
    assert score.scores.tolist() == pytest.approx([expected[e] for e in (4, 9, 12)])
    assert 0.05 < score.mean < 0.95
    assert score.mean == pytest.approx(np.mean(list(expected.values())))
    # any weights: the score is the matched weight over the event's weight
    rw = np.random.default_rng(0).random(len(he))
    got = trackml_score(t(he), t(hp), t(ht), t(rw, torch.float64)).scores.tolist()
    expected = _reference_score(he, hp, ht, rw.tolist())
    assert got == pytest.approx([expected[e] for e in (4, 9, 12)])


def test_metrics_match_reference(random_events):
    he, hp, ht, _, pe, pid, pt, _ = random_events
    counts = Counter(zip(he, hp, strict=True))
    nhits = [counts[(e, p)] for e, p in zip(pe, pid, strict=True)]
    r = tracking_metrics(t(he), t(hp), t(ht), t(pe), t(pid), t(pt, torch.float64),
                         torch.zeros(len(pe)), t(nhits), min_pt=1.0, min_hits=5)
    # reference: good tracks by the same double majority (noise never the majority)
    tracks = defaultdict(list)
    for i, (e, k) in enumerate(zip(he, ht, strict=True)):
        if k >= 0:
            tracks[(e, k)].append(i)
    long_tracks = {k: v for k, v in tracks.items() if len(v) >= 3}
    found = set()
    n_good = 0
    for (e, _), idx in long_tracks.items():
        c = Counter(hp[i] for i in idx if hp[i] != 0)
        if not c:
            continue
        best = min(c, key=lambda p: (-c[p], p))
        if 2 * c[best] > len(idx) and 2 * c[best] > counts[(e, best)]:
            found.add((e, best))
            n_good += 1
    reco = [(e, p) for e, p, q, n in zip(pe, pid, pt, nhits, strict=True) if q > 1.0 and n >= 5]
    assert r["n_reconstructable"] == len(reco) > 0
    assert r["efficiency"] == pytest.approx(sum(k in found for k in reco) / len(reco))
    assert r["n_tracks"] == len(long_tracks)
    assert r["fake_rate"] == pytest.approx(1 - n_good / len(long_tracks))


# ----------------------------------------------------------------- binned and edge metrics


def test_efficiency_vs_bins():
    # bin [0,1): one entry, passed -> 1 +- 0; [1,2): 2 entries, 1 passed -> 0.5 +- sqrt(.25/2);
    # [2,3]: 2.5 and 3.0 (the last edge is inside), 1 passed -> 0.5; [3, 4] would be empty
    x = t([0.5, 1.5, 1.5, 2.5, 3.0, 7.0], torch.float64)
    passed = t([1, 0, 1, 1, 0, 1])
    b = efficiency_vs(x, passed, [0.0, 1.0, 2.0, 3.0])
    assert b.total.tolist() == [1, 2, 2] and b.passed.tolist() == [1, 1, 1]
    assert b.efficiency.tolist() == pytest.approx([1.0, 0.5, 0.5])
    assert b.uncertainty.tolist() == pytest.approx([0.0, math.sqrt(0.125), math.sqrt(0.125)])
    b = efficiency_vs(x[:5], passed[:5] > 0, [0.0, 1.0, 2.0, 3.0, 4.0, 5.0])
    assert b.total.tolist() == [1, 2, 1, 1, 0] and math.isnan(float(b.efficiency[-1]))
    b = efficiency_vs(x, passed, 4)  # 4 equal bins over [0.5, 7]
    assert b.edges.tolist() == pytest.approx([0.5, 2.125, 3.75, 5.375, 7.0])
    assert int(b.total.sum()) == 6
    with pytest.raises(BadValueError, match="must increase"):
        efficiency_vs(x, passed, [1.0, 0.0])


def test_edge_metrics_by_hand():
    # kept at >= 0.5: 0.9 (true), 0.8 (true), 0.6 (false) -> TP 2, FP 1, FN 1 (0.3), TN 1
    # efficiency 2/3, purity 2/3; AUC: of the 6 (true, false) pairs, 5 are ordered right
    scores = t([0.9, 0.8, 0.3, 0.6, 0.1], torch.float32)
    truth = t([1, 1, 1, 0, 0])
    m = edge_metrics(scores, truth, 0.5)
    assert (m["TP"], m["FP"], m["FN"], m["TN"]) == (2, 1, 1, 1)
    assert m["efficiency"] == pytest.approx(2 / 3) and m["purity"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(5 / 6)
    m = edge_metrics(scores, t([1, 1, 1, 1, 1]), 0.95)
    assert m["auc"] is None and m["purity"] is None and m["efficiency"] == 0.0
    with pytest.raises(EmptyInputError):
        edge_metrics(torch.zeros(0), t([]))


# ---------------------------------------------------------------------------------- plots


def _written(paths):
    assert [p.suffix for p in paths] == [".png", ".pdf"]
    return all(p.exists() and p.stat().st_size > 0 for p in paths)


def test_plot_efficiency_files(tmp_path):
    from hepml.evaluation.tracking_plots import plot_efficiency

    pt_edges = np.array([0.5, 1.0, 2.0, 5.0, 10.0, 100.0])
    eff = {"GNN": np.array([0.5, 0.8, 0.9, np.nan, 0.95]),
           "LSTM": np.array([0.4, 0.7, 0.85, 0.9, 1.0])}
    err = {k: np.full(5, 0.02) for k in eff}
    assert _written(plot_efficiency(pt_edges, eff, err, r"$p_T$ [GeV]", tmp_path / "eff_pt"))
    b = efficiency_vs(t([-1.0, 0.0, 0.5, 2.0], torch.float64), t([1, 0, 1, 1]), 4)
    assert _written(plot_efficiency(b.edges, b.efficiency, b.uncertainty, r"$\eta$",
                                    tmp_path / "eff_eta"))
    with pytest.raises(BadValueError, match="one per bin"):
        plot_efficiency(pt_edges, np.ones(3), np.ones(3), "x", tmp_path / "bad")


def test_plot_event_display_files(tmp_path):
    from hepml.evaluation.tracking_plots import plot_event_display

    rng = np.random.default_rng(1)
    r = np.tile([30.0, 70.0, 120.0, 170.0, 260.0], 8)
    phi = np.repeat(rng.uniform(-np.pi, np.pi, 8), 5) + rng.normal(0, 0.01, 40)
    z = np.repeat(rng.normal(0, 100, 8), 5) * r / 100
    particle = np.repeat(np.arange(1, 9), 5)
    particle[::7] = 0  # some noise
    track = np.repeat(np.arange(8), 5)
    track[::3] = -1
    paths = plot_event_display(r * np.cos(phi), r * np.sin(phi), z, track, particle,
                               tmp_path / "display", max_tracks=5)
    assert _written(paths)
    # no track at all is fine too
    assert _written(plot_event_display(r, r, z, np.full(40, -1), particle, tmp_path / "none"))


def test_plot_edge_scores_files(tmp_path):
    from hepml.evaluation.tracking_plots import plot_edge_scores

    rng = np.random.default_rng(2)
    truth = rng.random(500) < 0.3
    scores = np.clip(rng.normal(0.3 + 0.5 * truth, 0.15), 0, 1)
    assert _written(plot_edge_scores(scores, truth, tmp_path / "edges", threshold=0.5))


@pytest.mark.cuda
def test_same_results_on_cuda(random_events):
    he, hp, ht, z, pe, pid, pt, vz = random_events
    cpu = [t(he), t(hp), t(ht), t(z, torch.float64), t(pe), t(pid), t(pt, torch.float64),
           t(vz, torch.float64)]
    gpu = [x.cuda() for x in cpu]
    results = []
    for he_, hp_, ht_, z_, pe_, pid_, pt_, vz_ in (cpu, gpu):
        w = trackml_weights(he_, hp_, z_, pe_, pid_, pt_, vz_, min_pt=0.5)
        s = trackml_score(he_, hp_, ht_, w)
        m = tracking_metrics(he_, hp_, ht_, pe_, pid_, pt_, torch.zeros_like(pt_),
                             torch.ones_like(pe_) * 5)
        b = efficiency_vs(pt_, pt_ > 1, [0.0, 1.0, 2.0, 5.0])
        results.append((w.cpu(), s.scores.cpu(), m, b.efficiency.cpu()))
        assert w.device == he_.device and s.scores.device == he_.device
    (w0, s0, m0, b0), (w1, s1, m1, b1) = results
    assert torch.allclose(w0, w1) and torch.allclose(s0, s1, equal_nan=True)
    assert torch.allclose(b0, b1, equal_nan=True)
    assert {k: v for k, v in m0.items() if k != "device"} == \
        {k: v for k, v in m1.items() if k != "device"}
    assert m1["device"].startswith("cuda")
