"""Jet images: hand-made jets with answers worked out by hand, and a slow per-jet reference."""

from __future__ import annotations

import math

import awkward as ak
import numpy as np
import pytest
import torch

from hepml.errors import BadValueError, ConfigError, MissingBranchError, UnknownKeyError
from hepml.representations import JetImageConfig, JetImages, make_jet_images

AZIMUTH = 0.7  # direction of each constituent's transverse momentum; only |pT| matters here


def jets_of(*jets: list[tuple[float, float, float, float]]) -> ak.Array:
    """JetClass-like records from constituents ``(pt, deta, dphi, charge)`` per jet."""
    def per(k: int) -> list[list[float]]:
        return [[p[k] for p in jet] for jet in jets]

    pt = ak.Array(per(0))
    return ak.Array({
        "part_px": pt * math.cos(AZIMUTH),
        "part_py": pt * math.sin(AZIMUTH),
        "part_pz": pt * 0.5,
        "part_energy": pt * 1.2,
        "part_deta": per(1),
        "part_dphi": per(2),
        "part_charge": per(3),
        "jet_pt": ak.sum(pt, axis=1),
        "jet_eta": np.zeros(len(jets)),
        "jet_phi": np.zeros(len(jets)),
        "jet_energy": ak.sum(pt, axis=1) * 1.2,
        "jet_mass": np.zeros(len(jets)),
    })


# 8 x 8 pixels of 0.2 over [-0.8, 0.8): pixel i covers [-0.8 + 0.2 i, -0.8 + 0.2 (i + 1))
SMALL = dict(npix=8, eta_range=0.8, phi_range=0.8)


def test_single_particle_at_the_axis_fills_the_central_pixel():
    img = make_jet_images(jets_of([(50.0, 0.0, 0.0, 0)]), JetImageConfig(**SMALL))
    assert img.shape == (1, 1, 8, 8) and img.dtype == torch.float32
    assert img[0, 0, 4, 4] == pytest.approx(50.0)  # 0 is the lower edge of pixel 4
    assert img.sum() == pytest.approx(50.0)
    odd = make_jet_images(jets_of([(50.0, 0.0, 0.0, 0)]), JetImageConfig(npix=5, eta_range=0.5,
                                                                        phi_range=0.5))
    assert odd[0, 0, 2, 2] == pytest.approx(50.0)  # the true central pixel of a 5 x 5 image


def test_particle_at_an_offset_lands_in_the_pixel_computed_by_hand():
    # deta 0.33: (0.33 + 0.8) / 0.2 = 5.65 -> row 5; dphi -0.45: 0.35 / 0.2 = 1.75 -> column 1
    img = make_jet_images(jets_of([(7.0, 0.33, -0.45, 1)]), JetImageConfig(**SMALL))
    assert img[0, 0, 5, 1] == pytest.approx(7.0)
    assert torch.count_nonzero(img) == 1
    # rectangular images and asymmetric windows: 4 rows over [0, 0.4), 10 columns over [-1, 1)
    img = make_jet_images(jets_of([(7.0, 0.33, -0.45, 1)]),
                          JetImageConfig(npix=(4, 10), eta_range=(0.0, 0.4), phi_range=1.0))
    assert img.shape == (1, 1, 4, 10)
    assert img[0, 0, 3, 2] == pytest.approx(7.0)  # 0.33 / 0.1 = 3.3; (1 - 0.45) / 0.2 = 2.75


def test_pixel_sum_is_the_in_window_pt_and_outside_particles_are_dropped():
    jet = [(1.0, 0.1, 0.1, 0), (2.0, -0.7, 0.75, 0), (4.0, 0.9, 0.0, 0), (8.0, 0.0, -1.5, 0),
           (16.0, -0.8, 0.0, 0), (32.0, 0.8, 0.0, 0)]  # 0.9, -1.5 and +0.8 (upper edge) are out
    img = make_jet_images(jets_of(jet), JetImageConfig(**SMALL))
    assert img.sum() == pytest.approx(1 + 2 + 16)
    assert img[0, 0, 0, 4] == pytest.approx(16.0)  # the lower edge belongs to the window
    assert img[0, 0, 0, 7] == pytest.approx(2.0)


def test_centroid_centring_puts_the_pt_weighted_centroid_at_the_image_centre():
    # centroid of (pT 1 at (0.65, 0.35), pT 3 at (0.05, -0.25)) is (0.2, -0.1); after the
    # shift the particles sit at (0.45, 0.45) and (-0.15, -0.15), the centres of pixels 12, 6
    cfg = JetImageConfig(npix=16, eta_range=0.8, phi_range=0.8, center="centroid")
    img = make_jet_images(jets_of([(1.0, 0.65, 0.35, 0), (3.0, 0.05, -0.25, 0)]), cfg)[0, 0]
    assert img[12, 12] == pytest.approx(1.0) and img[6, 6] == pytest.approx(3.0)
    centres = torch.arange(16, dtype=torch.float64) * 0.1 - 0.75
    i = img.double()
    assert float((i.sum(1) * centres).sum() / i.sum()) == pytest.approx(0.0, abs=1e-9)
    assert float((i.sum(0) * centres).sum() / i.sum()) == pytest.approx(0.0, abs=1e-9)


def test_leading_subjet_centring_uses_the_hard_core():
    # hardest at (0.3, 0.3) with a neighbour 0.1 away; a soft far particle does not count
    jet = [(10.0, 0.3, 0.3, 0), (10.0, 0.4, 0.3, 0), (5.0, -0.5, -0.5, 0)]
    cfg = JetImageConfig(**SMALL, center="leading_subjet", subjet_radius=0.2)
    img = make_jet_images(jets_of(jet), cfg)[0, 0]
    # centre (0.35, 0.3): particles at (-0.05, 0), (0.05, 0), (-0.85, -0.8) -> out of window
    assert img[3, 4] == pytest.approx(10.0) and img[4, 4] == pytest.approx(10.0)
    assert img.sum() == pytest.approx(20.0)


def _moments(img: torch.Tensor, lo: float, hi: float) -> tuple[float, float, float]:
    n = img.shape[-1]
    c = (torch.arange(n, dtype=torch.float64) + 0.5) * (hi - lo) / n + lo
    i = img.double() / img.sum()
    eta, phi = c[:, None], c[None, :]
    return float((i * eta**2).sum()), float((i * phi**2).sum()), float((i * eta * phi).sum())


@pytest.mark.parametrize("direction", [(1.0, 1.0), (1.0, -1.0), (0.2, 1.0)])
def test_rotation_puts_the_major_axis_along_eta(direction):
    rng = np.random.default_rng(1)
    u = np.array(direction) / np.hypot(*direction)
    along = rng.uniform(-0.5, 0.5, 60)
    across = rng.normal(0, 0.03, 60)
    pts = rng.uniform(1, 10, 60)
    deta = along * u[0] - across * u[1]
    dphi = along * u[1] + across * u[0]
    jet = jets_of(list(zip(pts, deta, dphi, np.zeros(60), strict=True)))
    base = dict(npix=40, eta_range=0.8, phi_range=0.8, center="centroid")
    plain = make_jet_images(jet, JetImageConfig(**base))[0, 0]
    rotated = make_jet_images(jet, JetImageConfig(**base, rotate=True))[0, 0]
    see, spp, sep = _moments(rotated, -0.8, 0.8)
    assert see > 20 * spp  # elongated along eta (the rows)
    assert abs(sep) < 0.05 * see
    assert float(rotated.sum()) == pytest.approx(float(plain.sum()), rel=1e-5)
    see0, spp0, sep0 = _moments(plain, -0.8, 0.8)
    assert not (see0 > 20 * spp0 and abs(sep0) < 0.05 * see0)  # not so before rotating


def test_flip_puts_the_heavier_half_on_the_positive_side():
    # pT 5 at (-0.3, -0.2) and pT 1 at (0.3, 0.1): both axes flip, pT 5 goes to (0.3, 0.2)
    jet = jets_of([(5.0, -0.3, -0.2, 0), (1.0, 0.3, 0.1, 0)])
    img = make_jet_images(jet, JetImageConfig(**SMALL, flip=True))[0, 0]
    assert img[5, 5] == pytest.approx(5.0)  # (0.3 + 0.8) / 0.2 = 5.5; (0.2 + 0.8) / 0.2 = 5
    assert img[2, 3] == pytest.approx(1.0)  # (-0.3, -0.1)
    # already on the positive side: unchanged
    same = jets_of([(5.0, 0.3, 0.2, 0), (1.0, -0.3, -0.1, 0)])
    assert torch.equal(make_jet_images(same, JetImageConfig(**SMALL, flip=True)),
                       make_jet_images(same, JetImageConfig(**SMALL)))


def test_charged_neutral_and_multiplicity_channels():
    jet = [(1.0, 0.1, 0.1, 1), (2.0, 0.1, 0.1, 0), (4.0, 0.1, 0.1, -1), (8.0, -0.5, 0.5, 0)]
    cfg = JetImageConfig(**SMALL, channels=("pt", "charged_pt", "neutral_pt", "multiplicity"))
    img = make_jet_images(jets_of(jet), cfg)[0]
    assert img.shape == (4, 8, 8)
    assert img[:, 4, 4].tolist() == pytest.approx([7.0, 5.0, 2.0, 3.0])
    assert img[:, 1, 6].tolist() == pytest.approx([8.0, 0.0, 8.0, 1.0])
    torch.testing.assert_close(img[1] + img[2], img[0])


def test_normalisation_and_empty_jets():
    jets = jets_of([(1.0, 0.1, 0.1, 1), (3.0, -0.3, 0.2, 0)], [], [(2.0, 0.0, 0.0, 0)])
    channels = ("pt", "charged_pt", "multiplicity")
    img = make_jet_images(jets, JetImageConfig(**SMALL, normalize="sum", channels=channels,
                                               center="centroid", rotate=True, flip=True))
    assert not torch.isnan(img).any()
    sums = img.sum(dim=(2, 3))
    assert sums[0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert sums[1].tolist() == [0.0, 0.0, 0.0]  # no constituents: stays empty, no NaN
    assert sums[2].tolist() == pytest.approx([1.0, 0.0, 1.0])  # no charged particle
    img = make_jet_images(jets, JetImageConfig(**SMALL, normalize="max", channels=channels))
    assert not torch.isnan(img).any()
    assert img.amax(dim=(2, 3))[0].tolist() == pytest.approx([1.0, 1.0, 1.0])
    assert img[0, 0].sum() == pytest.approx(4 / 3)
    assert img[1].abs().sum() == 0


def test_phi_is_rewrapped_after_the_shift():
    # pT 100 at dphi 2.9 and pT 1 at -3.0, 0.383 apart across phi = +-pi. The centroid of the
    # stored dphi values is 2.8416; the soft particle's offset -5.8416 wraps to +0.4416
    jet = jets_of([(100.0, 0.0, 2.9, 0), (1.0, 0.0, -3.0, 0)])
    img = make_jet_images(jet, JetImageConfig(**SMALL, center="centroid"))[0, 0]
    assert img[4, 4] == pytest.approx(100.0)  # dphi 0.0584 -> column 4
    assert img[4, 6] == pytest.approx(1.0)  # (0.4416 + 0.8) / 0.2 = 6.2 -> column 6
    # a subjet straddling phi = +-pi is centred between its two halves
    jet = jets_of([(10.0, 0.0, 3.1, 0), (10.0, 0.0, -3.1, 0)])
    img = make_jet_images(jet, JetImageConfig(**SMALL, center="leading_subjet"))[0, 0]
    assert img[4, 3] == pytest.approx(10.0) and img[4, 4] == pytest.approx(10.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_nan_or_inf_raises_bad_value_error_with_branch_count_and_jet(bad):
    jets = jets_of([(1.0, 0.0, 0.0, 0)], [], [(1.0, 0.1, 0.0, 0), (2.0, bad, 0.0, 0)],
                   [(1.0, bad, bad, 0)])
    with pytest.raises(BadValueError, match=r"'part_deta': 2 NaN or infinite.*jet 2") as info:
        make_jet_images(jets)
    assert (info.value.branch, info.value.count, info.value.jet_index) == ("part_deta", 2, 2)
    assert isinstance(info.value, ValueError)


def test_inputs_are_checked():
    jets = jets_of([(1.0, 0.0, 0.0, 0)])
    with pytest.raises(MissingBranchError, match="part_dphi"):
        make_jet_images(jets[["part_px", "part_py", "part_deta"]])
    with pytest.raises(KeyError):
        make_jet_images({"part_px": [[1.0]]})
    mismatched = ak.with_field(jets, [[0.0, 0.1]], "part_dphi")
    with pytest.raises(BadValueError, match="do not belong together"):
        make_jet_images(mismatched)
    with pytest.raises(BadValueError, match="jagged"):
        make_jet_images(ak.with_field(jets, [0.0], "part_dphi"))
    with pytest.raises(BadValueError, match="missing values"):
        make_jet_images(ak.with_field(jets, [[None]], "part_dphi"))


def test_empty_chunk_and_mapping_input():
    empty = jets_of([(1.0, 0.0, 0.0, 0)])[:0]
    assert make_jet_images(empty, JetImageConfig(**SMALL, channels=("pt", "charged_pt"),
                                                 center="centroid", rotate=True, flip=True,
                                                 normalize="max")).shape == (0, 2, 8, 8)
    mapping = {"part_px": [[3.0]], "part_py": [[4.0]], "part_deta": [[0.0]], "part_dphi": [[0.0]]}
    assert make_jet_images(mapping, JetImageConfig(**SMALL))[0, 0, 4, 4] == pytest.approx(5.0)


def _wrap(x: np.ndarray) -> np.ndarray:
    return (x + np.pi) % (2 * np.pi) - np.pi


def _reference(jets: ak.Array, cfg: JetImageConfig, centre: bool) -> np.ndarray:
    """One jet at a time, with numpy.histogram2d: slow but obviously right."""
    (elo, ehi), (plo, phi_hi) = cfg.eta_range, cfg.phi_range
    eta_edges = np.linspace(elo, ehi, cfg.npix[0] + 1)
    phi_edges = np.linspace(plo, phi_hi, cfg.npix[1] + 1)
    out = np.zeros((len(jets), len(cfg.channels), *cfg.npix))
    for i in range(len(jets)):
        pt = np.hypot(np.asarray(jets.part_px[i]), np.asarray(jets.part_py[i]))
        eta, phi = np.asarray(jets.part_deta[i]), np.asarray(jets.part_dphi[i])
        charge = np.asarray(jets.part_charge[i])
        if centre and pt.sum() > 0:
            eta = eta - np.sum(pt * eta) / pt.sum()
            phi = _wrap(phi - np.sum(pt * phi) / pt.sum())
        for k, name in enumerate(cfg.channels):
            sel = {"charged_pt": charge != 0, "neutral_pt": charge == 0}.get(
                name, np.ones_like(pt, bool))
            w = np.ones_like(pt) if name == "multiplicity" else pt
            out[i, k] = np.histogram2d(eta[sel], phi[sel], bins=(eta_edges, phi_edges),
                                       weights=w[sel])[0]
    return out


@pytest.mark.parametrize("centre", [False, True])
def test_matches_a_per_jet_histogram2d_reference(centre):
    rng = np.random.default_rng(7)
    n = 200
    counts = rng.integers(0, 60, n)
    counts[[3, 50, 199]] = 0
    total = int(counts.sum())

    def jag(values: np.ndarray) -> ak.Array:
        return ak.unflatten(values, counts)

    jets = ak.Array({
        "part_px": jag(rng.normal(0, 20, total).astype(np.float32)),
        "part_py": jag(rng.normal(0, 20, total).astype(np.float32)),
        "part_deta": jag(rng.uniform(-1.1, 1.1, total).astype(np.float32)),
        "part_dphi": jag(rng.uniform(-1.1, 1.1, total).astype(np.float32)),
        "part_charge": jag(rng.integers(-1, 2, total).astype(np.float32)),
    })
    before = ak.to_list(jets[:5])
    # no pixel edge at 0, where a centred single-particle jet lands exactly: histogram2d's
    # edges come from linspace and may differ from the exact edge by one rounding
    cfg = JetImageConfig(npix=(25, 20), eta_range=0.9, phi_range=(-1.0, 0.8),
                         center="centroid" if centre else None,
                         channels=("pt", "charged_pt", "neutral_pt", "multiplicity"))
    got = make_jet_images(jets, cfg)
    assert ak.to_list(jets[:5]) == before  # the input is untouched
    ref = _reference(jets, cfg, centre)
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-4)
    assert got[[3, 50, 199]].abs().sum() == 0


def test_config_validation_names_the_field():
    for kwargs, field in [({"npix": 0}, "npix"), ({"npix": (40, 40, 1)}, "npix"),
                          ({"npix": 4.5}, "npix"), ({"eta_range": -1.0}, "eta_range"),
                          ({"phi_range": (1.0, -1.0)}, "phi_range"),
                          ({"center": "middle"}, "center"),
                          ({"rotate": "yes"}, "rotate"), ({"normalize": "l2"}, "normalize"),
                          ({"channels": ()}, "channels"), ({"channels": ("pt", "pt")}, "channels"),
                          ({"channels": ("charge_pt",)}, "charged_pt"),
                          ({"subjet_radius": 0}, "subjet_radius"), ({"dtype": "int8"}, "dtype"),
                          ({"subjet_algorithm": "anti-kt"}, "subjet_algorithm"),
                          ({"rotate_to": "second"}, "rotate_to"),
                          ({"rotate_to": "second_subjet", "center": "centroid"}, "rotate_to")]:
        with pytest.raises(ConfigError, match=field):
            JetImageConfig(**kwargs)
    cfg = JetImageConfig(npix=32, eta_range=1.0, center=None, channels="pt")
    assert cfg.npix == (32, 32) and cfg.eta_range == (-1.0, 1.0) and cfg.center == "jet_axis"
    assert cfg.channels == ("pt",)


def test_from_dict_round_trip_and_unknown_keys():
    cfg = JetImageConfig.from_dict({"npix": [40, 30], "eta_range": 0.8, "phi_range": [-1, 1],
                                    "center": "centroid", "rotate": True, "flip": True,
                                    "normalize": "sum", "channels": ["pt", "multiplicity"]})
    sub = JetImageConfig.from_dict({"center": "leading_subjet", "subjet_algorithm": "kt",
                                    "rotate": True, "rotate_to": "second_subjet"})
    assert JetImageConfig.from_dict(sub.to_dict()) == sub
    assert cfg.npix == (40, 30) and cfg.phi_range == (-1.0, 1.0)
    assert JetImageConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(UnknownKeyError, match=r"'npx'.*Did you mean 'npix'") as info:
        JetImageConfig.from_dict({"npx": 40})
    assert isinstance(info.value, KeyError) and isinstance(info.value, ConfigError)
    assert "representation" in str(info.value)
    with pytest.raises(UnknownKeyError, match="'rotate'"):
        JetImages.from_dict({"rotation": True})
    with pytest.raises(ConfigError, match="center"):
        JetImageConfig.from_dict({"center": "middle"})


def test_transform_interface():
    t = JetImages(JetImageConfig(**SMALL, center="centroid"))
    assert "JetImages(" in repr(t) and "center='centroid'" in repr(t)
    assert t.required_fields == ("part_px", "part_py", "part_deta", "part_dphi")
    assert "part_charge" in JetImages({"channels": ["pt", "neutral_pt"]}).required_fields
    assert t.output_shape == (1, 8, 8)
    assert JetImages.from_dict(t.to_dict()) == t
    jets = jets_of([(1.0, 0.0, 0.0, 0)], [], [])
    assert t.count_empty(jets) == 2
    torch.testing.assert_close(t(jets), make_jet_images(jets, t.config))
    assert JetImages().config == JetImageConfig()
    assert JetImageConfig().npix == (40, 40) and JetImageConfig().eta_range == (-0.8, 0.8)


def test_on_the_shipped_sample(jets_sample):
    import uproot

    cfg = JetImageConfig(center="centroid", rotate=True, flip=True, normalize="sum")
    with uproot.open(jets_sample) as f:
        jets = f["tree"].arrays(list(cfg.required_fields), entry_stop=500)
    img = make_jet_images(jets, cfg)
    assert img.shape == (500, 1, 40, 40) and torch.isfinite(img).all()
    assert img.sum(dim=(1, 2, 3)).numpy() == pytest.approx(np.ones(500), rel=1e-5)
    # after flipping, the positive half of each axis holds at least half of the pT
    assert (img[:, 0, 20:, :].sum(dim=(1, 2)) >= 0.5 - 1e-5).all()
    assert (img[:, 0, :, 20:].sum(dim=(1, 2)) >= 0.5 - 1e-5).all()


# ---- leading-subjet centring (FastJet reclustering) ----

def _shifted_by_hand(jet: list[tuple[float, float, float, float]],
                     centre: tuple[float, float]) -> ak.Array:
    return jets_of([(p, x - centre[0], y - centre[1], q) for p, x, y, q in jet])


def test_leading_subjet_centres_on_the_hard_prong_of_a_two_prong_jet():
    # a hard narrow prong (pT 60) and a softer one (pT 25) about 0.5 away from it
    hard = [(30.0, 0.10, 0.05, 0), (20.0, 0.15, 0.10, 0), (10.0, 0.05, 0.12, 0)]
    soft = [(15.0, -0.30, -0.20, 0), (10.0, -0.36, -0.24, 0)]
    axis = (sum(p * x for p, x, _, _ in hard) / 60, sum(p * y for p, _, y, _ in hard) / 60)
    cfg = JetImageConfig(npix=32, eta_range=0.8, phi_range=0.8, center="leading_subjet")
    for jet in (hard + soft, soft + hard):  # the input order does not matter
        got = make_jet_images(jets_of(jet), cfg)
        want = make_jet_images(_shifted_by_hand(jet, axis),
                               JetImageConfig(npix=32, eta_range=0.8, phi_range=0.8))
        torch.testing.assert_close(got, want)
    # the overall centroid is elsewhere: the centring really picks the hard prong
    centroid = make_jet_images(jets_of(hard + soft), JetImageConfig(
        npix=32, eta_range=0.8, phi_range=0.8, center="centroid"))
    assert not torch.equal(centroid, got)


def _per_jet_subjet_axes(pt: np.ndarray, eta: np.ndarray, phi: np.ndarray,
                         algorithm: str, radius: float) -> tuple[complex, complex]:
    """One FastJet call for one jet; each axis recomputed from its subjet's constituents."""
    import fastjet

    keep = pt > 0
    if not keep.any():
        return complex(np.nan, np.nan), complex(np.nan, np.nan)
    pt, eta, phi = pt[keep], eta[keep], phi[keep]
    particles = ak.zip({"px": pt * np.cos(phi), "py": pt * np.sin(phi),
                       "pz": pt * np.sinh(eta), "E": pt * np.cosh(eta)},
                      with_name="Momentum4D")
    algo = {"antikt": fastjet.antikt_algorithm, "kt": fastjet.kt_algorithm,
            "cambridge": fastjet.cambridge_algorithm}[algorithm]
    cs = fastjet.ClusterSequence(particles, fastjet.JetDefinition(algo, radius,
                                                                  fastjet.pt_scheme))
    subjets = cs.inclusive_jets()
    members = cs.constituent_index()
    order = np.argsort(-np.hypot(np.asarray(subjets.px), np.asarray(subjets.py)),
                       kind="stable")
    axes = []
    for k in order[:2]:
        idx = np.asarray(members[k])
        w = pt[idx]  # jets here do not straddle phi = +-pi: plain weighted means
        axes.append(complex(np.sum(w * eta[idx]) / w.sum(), np.sum(w * phi[idx]) / w.sum()))
    axes += [complex(np.nan, np.nan)] * (2 - len(axes))
    return axes[0], axes[1]


@pytest.mark.parametrize("algorithm", ["antikt", "kt", "cambridge"])
def test_subjet_axes_match_a_per_jet_fastjet_reference(algorithm):
    from hepml.representations.jet_images import _Segments, _subjet_axes

    rng = np.random.default_rng(11)
    n = 100
    counts = rng.integers(0, 40, n)
    counts[[0, 42]] = 0
    counts[7] = 3
    total = int(counts.sum())
    pt = rng.exponential(10.0, total)
    pt[rng.random(total) < 0.03] = 0.0  # zero-pT constituents are left out
    start = int(np.sum(counts[:7]))
    pt[start:start + 3] = 0.0  # a jet with constituents but no pT: no subjet
    # a few prongs per jet, so that there are several subjets of different pT
    eta = rng.normal(0, 0.1, total) + rng.choice([-0.4, 0.0, 0.3], total)
    phi = rng.normal(0, 0.1, total) + rng.choice([-0.3, 0.0, 0.4], total)
    cfg = JetImageConfig(center="leading_subjet", subjet_algorithm=algorithm)
    z = eta + 1j * phi
    lead, second = _subjet_axes(cfg, z, pt, _Segments(counts))
    offsets = np.concatenate(([0], np.cumsum(counts)))
    ref = np.array([_per_jet_subjet_axes(pt[a:b], eta[a:b], phi[a:b], algorithm, 0.2)
                    for a, b in zip(offsets[:-1], offsets[1:], strict=True)])
    np.testing.assert_allclose(lead, ref[:, 0], rtol=0, atol=1e-9)
    np.testing.assert_allclose(second, ref[:, 1], rtol=0, atol=1e-9)
    assert np.isnan(lead[[0, 7, 42]]).all()
    assert np.isfinite(second).sum() > 50  # most jets have a second subjet

    # and the images are the per-jet shifts of the constituents, empty jets unshifted
    jets = ak.Array({"part_px": ak.unflatten(pt, counts), "part_py": ak.unflatten(0 * pt, counts),
                     "part_deta": ak.unflatten(eta, counts),
                     "part_dphi": ak.unflatten(phi, counts)})
    centre = np.nan_to_num(ref[:, 0], nan=0.0)
    shifted = ak.Array({"part_px": jets.part_px, "part_py": jets.part_py,
                        "part_deta": jets.part_deta - centre.real,
                        "part_dphi": jets.part_dphi - centre.imag})
    small = dict(npix=33, eta_range=0.825, phi_range=0.825)
    got = make_jet_images(jets, JetImageConfig(**small, center="leading_subjet",
                                               subjet_algorithm=algorithm))
    torch.testing.assert_close(got, make_jet_images(shifted, JetImageConfig(**small)))


@pytest.mark.parametrize("rotate_to", ["principal_axis", "second_subjet"])
def test_leading_subjet_with_empty_and_zero_pt_jets_gives_no_nan(rotate_to):
    cfg = JetImageConfig(**SMALL, center="leading_subjet", rotate=True, rotate_to=rotate_to,
                         flip=True, normalize="sum")
    jets = jets_of([], [(1.0, 0.1, 0.1, 0), (2.0, -0.4, 0.3, 0)], [(0.0, 0.3, 0.3, 0)], [])
    img = make_jet_images(jets, cfg)
    assert torch.isfinite(img).all()
    assert img[[0, 2, 3]].abs().sum() == 0 and img[1].sum() == pytest.approx(1.0)
    assert make_jet_images(jets_of([], []), cfg).abs().sum() == 0  # nothing to cluster
    assert make_jet_images(jets[:0], cfg).shape == (0, 1, 8, 8)


def test_second_subjet_rotation_puts_the_second_subjet_on_the_positive_eta_axis():
    # leading subjet at (0.1, 0.1); second subjet 0.5 away at 60 degrees; a third, soft
    # one sets a different principal axis
    a = math.radians(60)
    jet = [(50.0, 0.1, 0.1, 0), (20.0, 0.1 + 0.5 * math.cos(a), 0.1 + 0.5 * math.sin(a), 0),
           (15.0, 0.1 + 0.4, 0.1 - 0.3, 0)]
    # 33 x 33 pixels of 0.05 over [-0.825, 0.825): column 16 is centred on dphi = 0
    grid = dict(npix=33, eta_range=0.825, phi_range=0.825)
    cfg = JetImageConfig(**grid, center="leading_subjet", rotate=True,
                         rotate_to="second_subjet")
    img = make_jet_images(jets_of(jet), cfg)[0, 0]
    assert img[16, 16] == pytest.approx(50.0)  # the leading subjet at the centre
    assert img[26, 16] == pytest.approx(20.0)  # (0.5 + 0.825) / 0.05 = 26.5 -> row 26
    principal = make_jet_images(jets_of(jet), JetImageConfig(**grid, center="leading_subjet",
                                                             rotate=True))[0, 0]
    assert principal[26, 16] == 0  # the principal axis is another direction
    # a jet with a single subjet falls back to the principal axis
    one = jets_of([(50.0, 0.1, 0.1, 0), (20.0, 0.2, 0.15, 0)])
    torch.testing.assert_close(
        make_jet_images(one, cfg),
        make_jet_images(one, JetImageConfig(**grid, center="leading_subjet", rotate=True)))
