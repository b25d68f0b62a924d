"""LSTM tracker: track sequences, the next-hit network, triplet seeds and track following.

Events are synthetic helices from the beam line in the TrackML barrel (10 layers, 2 T),
made here with numpy: smeared hits in random order, noise hits, missing hits.
"""

from __future__ import annotations

import awkward as ak
import numpy as np
import pytest
import torch
from torch import nn

from hepml.errors import BadValueError, ConfigError
from hepml.models import build_model
from hepml.models.lstm_tracker import LSTMTracker, gaussian_nll
from hepml.representations import TrackSequenceConfig, TrackSequences
from hepml.representations.hits import HitArrays, wrap_phi
from hepml.tasks.tracking.lstm_following import find_seeds, follow_tracks, resolve_shared_hits

RADII = np.array([32.0, 72.0, 116.0, 172.0, 260.0, 360.0, 500.0, 660.0, 820.0, 1020.0])
B_FIELD = 2.0


def make_events(n_events: int, n_particles: int, *, seed: int = 0, noise: int = 100,
                ineff: float = 0.01, sigma_rphi: float = 0.02, sigma_z: float = 0.05,
                pt_range: tuple[float, float] = (0.5, 10.0), eta_max: float = 1.0,
                off_layer: int = 5) -> ak.Array:
    """Helices from the beam line: ``n_particles`` per event, ``noise`` noise hits per layer.

    φ(r) = φ0 - q asin(r / 2R), R = pT / (0.3 B), z = z0 + r sinh η; hits are smeared
    by ``sigma_rphi`` and ``sigma_z`` (mm), lost with probability ``ineff``, shuffled,
    and joined by noise hits and ``off_layer`` hits with ``hit_layer`` -1.
    """
    rng = np.random.default_rng(seed)
    n_p = n_events * n_particles
    pt = np.exp(rng.uniform(np.log(pt_range[0]), np.log(pt_range[1]), n_p))
    q = rng.choice([-1.0, 1.0], n_p)
    phi0 = rng.uniform(-np.pi, np.pi, n_p)
    eta = rng.uniform(-eta_max, eta_max, n_p)
    z0 = rng.normal(0.0, 50.0, n_p)
    pid = 10**12 + rng.permutation(n_p) * 7 + 1  # large, unordered ids
    radius = 1000.0 * pt / (0.3 * B_FIELD)
    r = np.broadcast_to(RADII, (n_p, len(RADII)))
    phi = phi0[:, None] - q[:, None] * np.arcsin(r / (2 * radius[:, None]))
    phi = phi + rng.normal(0.0, sigma_rphi, r.shape) / r
    z = z0[:, None] + r * np.sinh(eta)[:, None] + rng.normal(0.0, sigma_z, r.shape)
    keep = rng.random(r.shape) >= ineff
    p_event = np.repeat(np.arange(n_events), n_particles)
    layer = np.broadcast_to(np.arange(len(RADII)), r.shape)
    cols = {"event": np.broadcast_to(p_event[:, None], r.shape)[keep], "r": r[keep],
            "phi": phi[keep], "z": z[keep], "layer": layer[keep],
            "pid": np.broadcast_to(pid[:, None], r.shape)[keep]}
    # noise hits on the layers, and hits that no tracker uses (layer -1)
    n_noise = n_events * noise * len(RADII)
    zmax = np.abs(z).max(initial=100.0)
    noise_cols = {"event": rng.integers(0, n_events, n_noise + n_events * off_layer),
                  "layer": np.concatenate([rng.integers(0, len(RADII), n_noise),
                                           np.full(n_events * off_layer, -1)])}
    noise_cols["r"] = np.where(noise_cols["layer"] >= 0, RADII[noise_cols["layer"]], 1200.0)
    noise_cols["phi"] = rng.uniform(-np.pi, np.pi, len(noise_cols["layer"]))
    noise_cols["z"] = rng.uniform(-zmax, zmax, len(noise_cols["layer"]))
    noise_cols["pid"] = np.zeros(len(noise_cols["layer"]), dtype=np.int64)
    allc = {k: np.concatenate([cols[k], noise_cols[k]]) for k in cols}
    order = np.lexsort((rng.random(len(allc["event"])), allc["event"]))  # shuffled per event
    allc = {k: v[order] for k, v in allc.items()}
    counts = np.bincount(allc["event"], minlength=n_events)
    nhits = keep.sum(1)
    jag = lambda v, c=counts: ak.unflatten(v, c)  # noqa: E731
    pjag = lambda v: ak.unflatten(v, np.full(n_events, n_particles))  # noqa: E731
    return ak.Array({
        "hit_x": jag(allc["r"] * np.cos(allc["phi"])),
        "hit_y": jag(allc["r"] * np.sin(allc["phi"])),
        "hit_z": jag(allc["z"]),
        "hit_layer": jag(allc["layer"].astype(np.int32)),
        "hit_particle_id": jag(allc["pid"].astype(np.int64)),
        "particle_id": pjag(pid), "particle_pt": pjag(pt), "particle_eta": pjag(eta),
        "particle_q": pjag(q), "particle_nhits": pjag(nhits),
    })


def _events_from_lists(per_event: list[dict[str, np.ndarray]]) -> ak.Array:
    """Events from one dict of hit arrays per event (keys: x, y, z, layer, pid)."""
    names = {"x": "hit_x", "y": "hit_y", "z": "hit_z", "layer": "hit_layer",
             "pid": "hit_particle_id"}
    return ak.Array({branch: [list(ev[key]) for ev in per_event] for key, branch in names.items()})


def _event_lists(events: ak.Array) -> list[dict[str, np.ndarray]]:
    names = {"x": "hit_x", "y": "hit_y", "z": "hit_z", "layer": "hit_layer",
             "pid": "hit_particle_id"}
    return [{key: np.asarray(ev[branch]) for key, branch in names.items()} for ev in events]


def _reference_sequences(per_event, cfg: TrackSequenceConfig, pt_of=None):
    """Brute force: loop over events, particles and prefixes."""
    xs, lengths, targets, event_of = [], [], [], []
    for e, ev in enumerate(per_event):
        x, y = ev["x"].astype(np.float32), ev["y"].astype(np.float32)
        r = np.hypot(x, y)
        phi = np.arctan2(y, x).astype(np.float64)
        z = ev["z"].astype(np.float32).astype(np.float64)
        for p in sorted(set(ev["pid"].tolist()) - {0}):
            if pt_of is not None and pt_of[e][p] < cfg.min_pt:
                continue
            chosen = []
            for layer in range(cfg.n_layers):
                on = [i for i in range(len(x)) if ev["pid"][i] == p and ev["layer"][i] == layer]
                if on:
                    chosen.append(min(on, key=lambda i: (r[i], i)))
            if len(chosen) < max(cfg.min_hits, cfg.seed_length + 1):
                continue
            for length in range(cfg.seed_length, len(chosen)):
                seq = np.zeros((cfg.n_layers - 1, 4))
                for j in range(length):
                    h, n = chosen[j], chosen[j + 1]
                    seq[j] = [r[h] / cfg.r_scale, wrap_phi(phi[h] - phi[chosen[0]]),
                              z[h] / cfg.z_scale, r[n] / cfg.r_scale]
                t = chosen[length]
                xs.append(seq)
                lengths.append(length)
                targets.append([wrap_phi(phi[t] - phi[chosen[0]]), z[t] / cfg.z_scale])
                event_of.append(e)
    return (np.array(xs).reshape(-1, cfg.n_layers - 1, 4), np.array(lengths, dtype=np.int64),
            np.array(targets).reshape(-1, 2), np.array(event_of, dtype=np.int64))


def _tiny_events() -> ak.Array:
    """Three small events with missing hits, noise, off-layer hits and doubled layers."""
    lists = _event_lists(make_events(3, 6, seed=5, noise=2, ineff=0.15))
    ev = lists[0]
    p = ev["pid"][ev["pid"] != 0][0]
    for scale in (1.02, 0.99):  # a second hit of p on its layer-4 sensor: outside, then inside
        i = np.flatnonzero((ev["pid"] == p) & (ev["layer"] == 4))
        if len(i):
            for key in ev:
                ev[key] = np.append(ev[key], ev[key][i[0]] * (scale if key in "xy" else 1))
    lists[1]["z"][lists[1]["pid"] != 0] *= -1  # tracks going backwards
    return _events_from_lists(lists)


def test_sequences_match_brute_force():
    events = _tiny_events()
    for cfg in (TrackSequenceConfig(), TrackSequenceConfig(seed_length=2, min_hits=6,
                                                            r_scale=500.0, z_scale=250.0)):
        out = TrackSequences(cfg)(events)
        x, lengths, target, event = _reference_sequences(_event_lists(events), cfg)
        assert len(lengths) > 10
        np.testing.assert_allclose(out["x"].numpy(), x, atol=2e-6)
        np.testing.assert_array_equal(out["lengths"].numpy(), lengths)
        np.testing.assert_allclose(out["target"].numpy(), target, atol=2e-6)
        np.testing.assert_array_equal(out["event"].numpy(), event)


def test_sequences_min_pt_selects_particles():
    events = make_events(2, 30, seed=6, noise=5)
    cfg = TrackSequenceConfig(min_pt=1.5)
    assert set(cfg.required_fields) >= {"particle_id", "particle_pt"}
    pt_of = [dict(zip(np.asarray(ev["particle_id"]).tolist(), np.asarray(ev["particle_pt"]),
                      strict=True)) for ev in events]
    out = TrackSequences(cfg)(events)
    x, lengths, target, _ = _reference_sequences(_event_lists(events), cfg, pt_of)
    assert 0 < len(lengths) < len(TrackSequences()(events)["lengths"])
    np.testing.assert_allclose(out["x"].numpy(), x, atol=2e-6)
    np.testing.assert_allclose(out["target"].numpy(), target, atol=2e-6)
    broken = ak.with_field(events, events["particle_id"] + 1, "particle_id")
    with pytest.raises(BadValueError, match="particle_id"):
        TrackSequences(cfg)(broken)


def test_sequences_padding_and_shapes():
    rep = TrackSequences()
    out = rep(make_events(2, 40, seed=7))
    m = len(out["lengths"])
    assert out["x"].shape == (m, *rep.output_shape["x"]) == (m, 9, 4)
    assert out["x"].dtype == torch.float32 and out["target"].dtype == torch.float32
    assert out["lengths"].dtype == torch.int64
    assert rep.input_dims == 4 and out["target"].shape == (m, 2)
    assert int(out["lengths"].min()) == 3 and int(out["lengths"].max()) == 9
    steps = torch.arange(9)[None, :]
    padding = steps >= out["lengths"][:, None]
    assert torch.all(out["x"][padding] == 0)
    assert torch.all(out["x"][~padding][:, 0] > 0)  # every real hit has a radius
    # r_next of a prefix's last hit is the radius of the hit to be predicted
    last = out["x"][torch.arange(m), out["lengths"] - 1]
    assert torch.all(last[:, 3] > last[:, 0])


def test_sequences_of_empty_events():
    rep = TrackSequences()
    empty = _events_from_lists([{k: np.zeros(0) for k in ("x", "y", "z", "layer", "pid")}] * 2)
    noise_only = _event_lists(make_events(1, 3, seed=8, noise=4))[0]
    noise_only["pid"][:] = 0
    short = _event_lists(make_events(1, 3, seed=9, noise=0))[0]
    short = {k: v[short["layer"] < 3] for k, v in short.items()}  # 3 hits per particle at most
    for events in (empty, _events_from_lists([noise_only, short]), empty[:0]):
        out = rep(events)
        assert out["x"].shape == (0, 9, 4) and out["lengths"].shape == (0,)
        assert out["target"].shape == (0, 2) and out["event"].shape == (0,)
    assert rep.count_empty(_events_from_lists([noise_only, short])) == 2


def test_sequences_reject_nan():
    lists = _event_lists(make_events(3, 5, seed=10))
    lists[2]["z"][1] = np.nan
    with pytest.raises(BadValueError, match="hit_z.*event 2"):
        TrackSequences()(_events_from_lists(lists))


def test_sequence_config_checks():
    assert TrackSequenceConfig.from_dict(TrackSequenceConfig().to_dict()) == TrackSequenceConfig()
    assert TrackSequences({"seed_length": 2}).config.seed_length == 2
    for bad in ({"seed_length": 10}, {"min_hits": 11}, {"r_scale": 0}, {"min_pt": -1.0},
                {"n_layers": 1}, {"seed_length": 0}):
        with pytest.raises(ConfigError):
            TrackSequenceConfig.from_dict(bad)
    with pytest.raises(KeyError, match="seed_length"):
        TrackSequenceConfig.from_dict({"seed_lenght": 3})


CELLS = [(cell, bidir) for cell in ("lstm", "gru") for bidir in (False, True)]


@pytest.mark.parametrize(("cell", "bidirectional"), CELLS)
def test_model_shapes_and_padding_independence(cell, bidirectional):
    torch.manual_seed(0)
    model = build_model("lstm_tracker", cell=cell, bidirectional=bidirectional, hidden_size=16)
    model.eval()
    data = TrackSequences()(make_events(1, 20, seed=11))
    x, lengths = data["x"], data["lengths"]
    out = model(x, lengths)
    assert out.shape == (len(lengths), 4) and torch.isfinite(out).all()
    short = int(torch.argmin(lengths))
    n = int(lengths[short])
    alone = model(x[short:short + 1, :n], lengths[short:short + 1])
    # the same prefix beside longer sequences, with extra padding, and with junk in padding
    wide = torch.cat([x, torch.zeros(len(x), 3, 4)], dim=1)
    junk = x.clone()
    junk[short, n:] = 7.0
    for batch_x in (x, wide, junk):
        torch.testing.assert_close(model(batch_x, lengths)[short:short + 1], alone,
                                   atol=1e-6, rtol=1e-5)
    assert model(x[:0], lengths[:0]).shape == (0, 4)


def test_model_checks_and_parameter_count():
    model = LSTMTracker()
    assert sum(p.numel() for p in model.parameters()) == 55_620
    with pytest.raises(ConfigError):
        LSTMTracker(cell="rnn")
    with pytest.raises(ConfigError):
        LSTMTracker(input_dims=2)
    with pytest.raises(BadValueError):
        model(torch.zeros(2, 9, 3), torch.tensor([3, 3]))
    with pytest.raises(BadValueError):
        model(torch.zeros(2, 9, 4), torch.tensor([0, 3]))


def test_gaussian_nll_is_the_normal_likelihood():
    g = torch.Generator().manual_seed(0)
    out, target = torch.randn(50, 4, generator=g), torch.randn(50, 2, generator=g)
    normal = torch.distributions.Normal(out[:, :2], out[:, 2:].exp())
    torch.testing.assert_close(gaussian_nll(out, target), -normal.log_prob(target).sum(1).mean())
    with pytest.raises(BadValueError):
        gaussian_nll(out, target[:, :1])


@pytest.fixture(scope="module")
def trained_model(tmp_path_factory) -> LSTMTracker:
    """An LSTM trained for a few seconds by the shared trainer on synthetic helices."""
    from hepml.config import TrainingConfig
    from hepml.training import ChunkedDataset, Trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    rep = TrackSequences()
    spec = {"kind": "lstm_tracker", "kwargs": {"hidden_size": 32, "num_layers": 1}}
    model = build_model(spec["kind"], **spec["kwargs"])
    sets = []
    for seed, n_events in ((20, 4), (21, 1)):
        d = rep(make_events(n_events, 500, seed=seed, noise=0))
        sets.append(ChunkedDataset([lambda d=d: (d["x"], d["lengths"], d["target"])],
                                   [len(d["target"])], batch_size=256, shuffle=True, seed=1))
    cfg = TrainingConfig(epochs=6, batch_size=256, learning_rate=3e-3, device="cpu",
                         early_stopping_patience=0)
    trainer = Trainer(model, cfg, run_dir=tmp_path_factory.mktemp("lstm"), model_spec=spec,
                      loss_fn=gaussian_nll, unit="prefix")
    try:
        history = trainer.fit(*sets)
    finally:
        torch.set_num_threads(threads)
    assert history[-1]["val_loss"] < history[0]["val_loss"]
    return model.eval()


def test_training_beats_extrapolation_baselines(trained_model):
    data = TrackSequences()(make_events(1, 500, seed=22, noise=0))
    x, lengths, target = data["x"], data["lengths"], data["target"]
    with torch.no_grad():
        out = trained_model(x, lengths)
    rows = torch.arange(len(lengths))
    last, prev = x[rows, lengths - 1], x[rows, lengths - 2]
    line = last[:, 1] + (last[:, 1] - prev[:, 1]) / (last[:, 0] - prev[:, 0]) * (
        last[:, 3] - last[:, 0])

    def rms(a: torch.Tensor) -> float:
        return float(a.square().mean().sqrt())

    lstm = rms(out[:, 0] - target[:, 0])
    assert lstm < 0.1 * rms(last[:, 1] - target[:, 0])  # "the next hit is where the last was"
    assert lstm < rms(line - target[:, 0])  # the straight line in (r, φ)
    assert rms(out[:, 1] - target[:, 1]) < 1e-3  # 1 mm in z
    pull = (out[:, :2] - target) / out[:, 2:].exp()
    assert torch.all((pull.std(0) > 0.5) & (pull.std(0) < 2.0))  # σ is about right


class HelixStub(nn.Module):
    """Next hit by a parabola through the last three hits in (r, Δφ), a line in (r, z).

    σ is 1 mm in rφ and in z: far above the smearing, far below the distance between hits.
    """

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        """``[μ_Δφ, μ_z, log σ_Δφ, log σ_z]`` of the next hit, as LSTMTracker returns them."""
        rows = torch.arange(len(x), device=x.device)
        i = lengths.to(x.device) - 1
        (r0, p0), (r1, p1), (r2, p2) = ((x[rows, i - k, 0], x[rows, i - k, 1]) for k in (2, 1, 0))
        z1, z2, rn = x[rows, i - 1, 2], x[rows, i, 2], x[rows, i, 3]
        mu_phi = (p0 * (rn - r1) * (rn - r2) / ((r0 - r1) * (r0 - r2))
                  + p1 * (rn - r0) * (rn - r2) / ((r1 - r0) * (r1 - r2))
                  + p2 * (rn - r0) * (rn - r1) / ((r2 - r0) * (r2 - r1)))
        mu_z = z2 + (z2 - z1) / (r2 - r1) * (rn - r2)
        return torch.stack([mu_phi, mu_z, torch.log(1e-3 / rn), torch.full_like(rn, -6.9078)], 1)


def _efficiency(hits: HitArrays, track: np.ndarray, particles: np.ndarray) -> float:
    """Fraction of ``(event, particle)`` rows matched by a track (double majority)."""
    matched = 0
    for event, p in particles:
        mine = np.flatnonzero((hits.event == event) & (hits.particle == p) & (hits.layer >= 0))
        ids = track[mine][track[mine] >= 0]
        if not len(ids):
            continue
        best = np.bincount(ids).argmax()
        common = int(np.count_nonzero(ids == best))
        matched += 2 * common > len(mine) and 2 * common > np.count_nonzero(track == best)
    return matched / len(particles)


def _reconstructable(events: ak.Array, hits: HitArrays, min_pt: float = 1.0) -> np.ndarray:
    n = np.asarray(ak.num(events["particle_id"], axis=1))
    ev = np.repeat(np.arange(len(n)), n)
    pid = np.asarray(ak.flatten(events["particle_id"]))
    pt = np.asarray(ak.flatten(events["particle_pt"]))
    nh = np.asarray(ak.flatten(events["particle_nhits"]))
    keep = (pt > min_pt) & (nh >= 5)
    return np.stack([ev[keep], pid[keep]], axis=1)


@pytest.fixture(scope="module")
def busy_events() -> tuple[ak.Array, HitArrays]:
    """Two events of 1000 particles and 1000 noise hits each."""
    events = make_events(2, 1000, seed=30, noise=100)
    return events, HitArrays.from_awkward(events)


def test_seeds_hold_every_true_triplet(busy_events):
    events, hits = busy_events
    seeds = find_seeds(hits)
    assert seeds.shape[1] == 3 and seeds.dtype == np.int64
    assert np.all(hits.event[seeds] == hits.event[seeds[:, :1]])
    found = {tuple(s) for s in seeds.tolist()}
    n = np.asarray(ak.num(events["particle_id"], axis=1))
    pt = dict(zip(zip(np.repeat(np.arange(len(n)), n).tolist(),
                      np.asarray(ak.flatten(events["particle_id"])).tolist(), strict=True),
                  np.asarray(ak.flatten(events["particle_pt"])).tolist(), strict=True))
    n_true = {0: 0, 1: 0}
    for event in range(hits.n_events):
        on = np.flatnonzero((hits.event == event) & (hits.particle != 0))
        by_particle: dict[int, dict[int, int]] = {}
        for i in on:
            by_particle.setdefault(int(hits.particle[i]), {})[int(hits.layer[i])] = int(i)
        for p, layers in by_particle.items():
            if pt.get((event, p), 0.0) <= 1.0:
                continue
            first = 0 if 0 in layers else 1  # the (1, 2, 3) seeds stand in for a missing layer 0
            if all(k in layers for k in range(first, first + 3)):
                assert tuple(layers[k] for k in range(first, first + 3)) in found
                n_true[first] += 1
    assert n_true[0] > 1000 and n_true[1] > 0
    assert len(seeds) < 4 * 2000  # fakes stay few
    with pytest.raises(ConfigError):
        find_seeds(hits, layers=((0, 2, 1),))


def test_following_a_helix_model_finds_the_tracks(busy_events):
    events, hits = busy_events
    seeds = find_seeds(hits)
    track = follow_tracks(HelixStub(), hits, seeds)
    assert track.shape == (len(hits),) and track.dtype == np.int64
    ids, sizes = np.unique(track[track >= 0], return_counts=True)
    assert np.array_equal(ids, np.arange(len(ids)))  # unique over the chunk, consecutive
    assert sizes.min() >= 4
    for t in range(0, len(ids), 97):  # a track lies in one event, one hit per layer
        mine = track == t
        assert len(np.unique(hits.event[mine])) == 1
        assert len(np.unique(hits.layer[mine])) == int(mine.sum())
    assert _efficiency(hits, track, _reconstructable(events, hits)) > 0.9
    assert np.all(track[hits.layer < 0] == -1)


def test_following_a_trained_lstm_finds_the_tracks(trained_model, busy_events):
    events, hits = busy_events
    track = follow_tracks(trained_model, hits, find_seeds(hits), batch_size=1000)
    assert _efficiency(hits, track, _reconstructable(events, hits)) > 0.9


def test_following_across_the_phi_wrap():
    events = make_events(1, 50, seed=31, noise=20)
    lists = _event_lists(events)
    phi = np.arctan2(lists[0]["y"], lists[0]["x"])
    r = np.hypot(lists[0]["x"], lists[0]["y"])
    rotated = phi + np.pi - 0.1 * (lists[0]["pid"] % 3)  # every track near or across ±π
    lists[0]["x"], lists[0]["y"] = r * np.cos(rotated), r * np.sin(rotated)
    events = ak.with_field(events, _events_from_lists(lists)["hit_x"], "hit_x")
    events = ak.with_field(events, _events_from_lists(lists)["hit_y"], "hit_y")
    hits = HitArrays.from_awkward(events)
    track = follow_tracks(HelixStub(), hits, find_seeds(hits))
    assert _efficiency(hits, track, _reconstructable(events, hits, 0.5)) > 0.9


def test_shared_hits_go_to_the_longest_track():
    # hits 0-9; tracks: A = 0..5 (6 hits), B = 3..7 (5 hits, 3 shared with A),
    # C = 6..9 (4 hits, 2 shared with B), D = 6..9 again with a smaller chi2, E too short
    rows = [[0, 1, 2, 3, 4, 5], [3, 4, 5, 6, 7], [6, 7, 8, 9], [6, 7, 8, 9], [8, 9]]
    track_hits = torch.full((5, 6), -1)
    for i, row in enumerate(rows):
        track_hits[i, :len(row)] = torch.tensor(row)
    n_hits = torch.tensor([len(row) for row in rows])
    chi2 = torch.tensor([1.0, 1.0, 2.0, 1.5, 0.0], dtype=torch.float64)
    out = resolve_shared_hits(track_hits, n_hits, chi2, 11, min_hits=4)
    # A keeps all; B keeps 6, 7 only -> dropped; then D (smaller chi2 than C) takes 6..9
    assert out.tolist() == [0] * 6 + [1] * 4 + [-1]
    out = resolve_shared_hits(track_hits, n_hits, chi2, 11, min_hits=2)
    assert out.tolist() == [0] * 6 + [1] * 2 + [2] * 2 + [-1]
    none = resolve_shared_hits(track_hits[:0], n_hits[:0], chi2[:0], 3, min_hits=4)
    assert none.tolist() == [-1] * 3


def test_following_without_seeds_or_hits(busy_events):
    _, hits = busy_events
    empty = np.zeros((0, 3), dtype=np.int64)
    assert np.all(follow_tracks(HelixStub(), hits, empty) == -1)
    none = HitArrays.from_awkward(_events_from_lists(
        [{k: np.zeros(0) for k in ("x", "y", "z", "layer", "pid")}]))
    assert find_seeds(none).shape == (0, 3)
    assert follow_tracks(HelixStub(), none, find_seeds(none)).shape == (0,)
    with pytest.raises(BadValueError):
        follow_tracks(HelixStub(), hits, np.array([[0, 1, len(hits)]]))
    first = find_seeds(hits)[:1]  # in event 0
    elsewhere = np.flatnonzero((hits.event == 1) & (hits.layer == 2))[:1]
    with pytest.raises(BadValueError, match="one event"):
        follow_tracks(HelixStub(), hits, np.concatenate([first[:, :2], [elsewhere]], 1))
    with pytest.raises(BadValueError):
        follow_tracks(HelixStub(), hits, find_seeds(hits)[:5], layer_radii=[1.0, 2.0])


@pytest.mark.cuda
def test_following_on_cuda_matches_cpu(busy_events):
    _, hits = busy_events
    seeds = find_seeds(hits)
    cpu = follow_tracks(HelixStub(), hits, seeds)
    gpu = follow_tracks(HelixStub(), hits, seeds, device="cuda")
    np.testing.assert_array_equal(cpu, gpu)
