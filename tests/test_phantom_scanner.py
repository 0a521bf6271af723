"""The phantoms' scanner: per-case contrast, field of view, slices, noise texture and artefacts."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from liverlib.data.phantoms import TISSUES, cohort, make_phantom
from liverlib.data.phantoms.tissues import _hu_table

# every artefact off: what the scanner adds besides blur and noise
NO_ARTEFACTS = {"streaks": [], "cupping": 0.0, "dark_band": 0.0, "bias": 0.0, "bias_field": None}


@pytest.fixture(scope="module")
def metas():
    """Meta of the first 40 cases (small renders: the draws do not depend on size or slices)."""
    return [make_phantom(k, size=64, n_slices=10).meta for k in range(40)]


def _first(metas, predicate) -> int:
    """The first case whose meta satisfies ``predicate``."""
    return next(k for k, m in enumerate(metas) if predicate(m))


def _render(case, size=128, n_slices=None, artefacts=None, **changes):
    """``make_phantom`` with fields of the drawn scanner replaced (``artefacts``: entries of its artefacts dict)."""
    draw = cohort._draw_scan

    def patched(*args, **kwargs):
        scan = draw(*args, **kwargs)
        if artefacts is not None:
            changes["artefacts"] = dict(scan.artefacts, **artefacts)
        return dataclasses.replace(scan, **changes)

    cohort._draw_scan = patched
    try:
        return make_phantom(case, size=size, n_slices=n_slices)
    finally:
        cohort._draw_scan = draw


# --------------------------------------------------------------------------- variation and determinism


def test_cases_differ_in_contrast_field_and_slices(metas):
    a, b = make_phantom(0, seed=3, size=64), make_phantom(0, seed=4, size=64)
    assert a.meta["hu"]["liver"] != b.meta["hu"]["liver"] and a.meta["hu"]["fat"] != b.meta["hu"]["fat"]
    assert a.meta["fov_mm"] != b.meta["fov_mm"] and a.spacing != b.spacing
    # over a cohort: crops and whole-body fields, thin and thick slices, every documented range
    fovs = [m["fov_mm"] for m in metas]
    assert min(fovs) < 256.0 and max(fovs) > 420.0 and max(fovs) <= 512.0
    crops = [m["crop"] for m in metas]
    assert 0.1 < np.mean(crops) < 0.45
    assert all(m["padding"] is None for m in metas if m["crop"])
    assert any(m["body_cut"] for m in metas)
    for m in metas:
        assert 5.0 <= m["noise_sigma"] <= 30.0 and 0.4 <= m["noise_corr_px"] <= 1.5
        assert 0.5 <= m["psf_mm"] <= 1.2 and 0.7 <= m["thickness_mm"] <= 5.0
        assert 0.6 <= m["enhancement"] <= 1.4 and (m["enhancement"] == 1.0) == (m["phase"] == "unenhanced")
        assert 0.0 <= m["bias_hu"] <= 25.0 and 0 <= m["cupping_hu"] <= 25.0 and m["streaks"] in range(8)
        assert 2.0 <= m["hu"]["liver_texture"] <= 10.0
    assert any(m["steatosis"] for m in metas) and any(m["streaks"] for m in metas)
    spacings = {make_phantom(k, size=64).spacing[0] for k in range(12)}
    assert len(spacings) >= 4 and min(spacings) <= 1.5 and max(spacings) >= 4.0


def test_thickness_is_at_least_most_of_the_spacing():
    for case in range(12):
        ph = make_phantom(case, size=64)
        assert ph.meta["thickness_mm"] >= 0.8 * ph.spacing[0] - 1e-6
        assert 40 <= ph.image.shape[0] <= 200


def test_rerun_is_byte_identical_with_every_artefact(metas):
    case = _first(metas, lambda m: m["streaks"] and m["bias_hu"] > 0)
    a, b = make_phantom(case, seed=7, size=96), make_phantom(case, seed=7, size=96)
    for name in ("image", "label", "tissues"):
        assert getattr(a, name).tobytes() == getattr(b, name).tobytes(), name
    assert a.meta == b.meta and a.spacing == b.spacing


def test_contrast_factor_and_steatosis_in_the_hu_table():
    rng = np.random.default_rng(0)
    tables = [_hu_table(rng, "portal_venous", False) for _ in range(400)]
    normal = [(hu, k) for hu, k, fatty in tables if not fatty]
    k = np.array([k for _, k in normal])
    # one factor for the whole case: weak or strong enhancement in every enhancing tissue together
    for tissue in ("liver", "artery", "portal_vein", "kidney"):
        assert np.corrcoef(k, [hu[tissue] for hu, _ in normal])[0, 1] > 0.4, tissue
    assert np.corrcoef(k, [hu["fat"] for hu, _ in normal])[0, 1] < 0.2  # fat does not enhance
    assert 0.08 < np.mean([fatty for *_, fatty in tables]) < 0.22
    # a fatty liver is darker than the spleen, unenhanced (10-45 HU) and enhanced alike
    for phase in ("unenhanced", "portal_venous"):
        fatty = [hu for hu, _, f in (_hu_table(rng, phase, False) for _ in range(300)) if f]
        assert fatty and all(hu["liver"] < hu["spleen"] - 4.0 for hu in fatty), phase
    unenhanced = [(hu["liver"], f) for hu, _, f in (_hu_table(rng, "unenhanced", False) for _ in range(300))]
    assert all(10.0 <= v <= 45.0 for v, f in unenhanced if f) and all(v >= 50.0 for v, f in unenhanced if not f)


# --------------------------------------------------------------------------- field of view


def test_crop_case_is_tight_around_the_liver(metas):
    case = _first(metas, lambda m: m["crop"] and any(les["diameter_mm"] > 15 for les in m["lesions"]))
    ph = make_phantom(case, size=128)
    assert ph.meta["padding"] is None and not (ph.tissues == TISSUES["padding"]).any()
    liver = ph.label > 0
    planes = np.flatnonzero(liver.any(axis=(1, 2)))
    # a square image on the liver's wider (left-right) extent: the liver spans most of it and fills a
    # large share of its largest plane (under 10 % in a whole-body field)
    share = liver.mean(axis=(1, 2))
    assert share.max() > 0.17 and share[planes[len(planes) // 2]] > 0.1
    width = np.flatnonzero(liver.any(axis=(0, 1)))
    assert (width[-1] - width[0] + 1) / 128.0 > 0.65
    # the liver reaches within a few millimetres of the crop in z (margins 0-25 mm plus a coarse cell)
    assert planes[0] * ph.spacing[0] < 32.0 and (ph.image.shape[0] - 1 - planes[-1]) * ph.spacing[0] < 32.0
    # ... and left and right (margins 5-40 mm, and the centre's jitter)
    assert width[0] * ph.spacing[2] < 62.0 and (127 - width[-1]) * ph.spacing[2] < 62.0
    # the lesions' recorded centres still point into them
    for les in ph.meta["lesions"]:
        if les["diameter_mm"] > 15.0:
            plane, row, col = (int(round(v)) for v in les["centre_voxel"])
            assert ph.label[plane, row, col] == 2


# --------------------------------------------------------------------------- slice profile and noise


def test_slice_thickness_blurs_along_z_only(metas):
    case = _first(metas, lambda m: not m["crop"])
    kwargs = {"size": 96, "n_slices": 60, "noise_sigma": 0.0, "artefacts": NO_ARTEFACTS}
    thin = _render(case, thickness=0.5, **kwargs)
    dz = thin.spacing[0]
    thick = _render(case, thickness=3.0 * dz, **kwargs)
    body = (thin.tissues != TISSUES["air"]) & (thin.tissues != TISSUES["padding"])

    def energy(ph, axis):
        diff = np.diff(ph.image, axis=axis)
        keep = np.take(body, range(diff.shape[axis]), axis=axis)
        return float((diff[keep] ** 2).mean())

    # high frequencies along z are lost; in-plane ones much less (only where structures slant in z)
    z_ratio, x_ratio = energy(thick, 0) / energy(thin, 0), energy(thick, 2) / energy(thin, 2)
    assert z_ratio < 0.6 and z_ratio < 0.75 * x_ratio


def test_noise_has_the_drawn_level_and_texture(metas):
    def noise_of(case):
        clean = _render(case, size=128, n_slices=40, noise_sigma=0.0)
        noisy = _render(case, size=128, n_slices=40)
        inside = clean.tissues == TISSUES["liver"]
        return (noisy.image - clean.image), inside, noisy.meta

    for predicate in (lambda m: m["noise_corr_px"] > 1.2, lambda m: m["noise_corr_px"] < 0.6):
        noise, inside, meta = noise_of(_first(metas, predicate))
        assert noise[inside].std() == pytest.approx(meta["noise_sigma"], rel=0.12)
        pairs = inside[:, :, 1:] & inside[:, :, :-1]
        corr = np.corrcoef(noise[:, :, 1:][pairs], noise[:, :, :-1][pairs])[0, 1]
        # Gaussian correlation of sigma c pixels: neighbours correlate by about exp(-1 / (4 c^2))
        if meta["noise_corr_px"] > 1.2:
            assert corr > 0.6
        else:
            assert corr < 0.5


# --------------------------------------------------------------------------- artefacts


def test_bias_field_is_smooth_and_bounded(metas):
    case = _first(metas, lambda m: m["bias_hu"] > 10.0)
    kwargs = {"size": 96, "n_slices": 30, "noise_sigma": 0.0}
    only_bias = {k: v for k, v in NO_ARTEFACTS.items() if k not in ("bias", "bias_field")}
    with_bias = _render(case, artefacts=only_bias, **kwargs)
    without = _render(case, artefacts=NO_ARTEFACTS, **kwargs)
    diff = with_bias.image - without.image
    bias = with_bias.meta["bias_hu"]
    assert 0.3 * bias < np.abs(diff).max() <= bias + 1.0
    assert np.abs(np.diff(diff, axis=2)).max() <= 2.0  # rounding to integer HU, and a slow field


def test_streaks_and_cupping_when_meta_says_so(metas):
    case = _first(metas, lambda m: m["streaks"] >= 3 and not m["crop"])
    kwargs = {"size": 128, "n_slices": 30, "noise_sigma": 0.0}
    only_streaks = {k: v for k, v in NO_ARTEFACTS.items() if k != "streaks"}
    streaky = _render(case, artefacts=only_streaks, **kwargs)
    clean = _render(case, artefacts=NO_ARTEFACTS, **kwargs)
    diff = streaky.image - clean.image
    assert streaky.meta["streaks"] >= 3
    assert diff.max() > 8.0 and diff.min() < -8.0  # bright and dark
    assert 0.0 < (np.abs(diff) > 5.0).mean() < 0.2  # thin lines, not a whole-image shift
    cupped = _render(case, artefacts=dict(NO_ARTEFACTS, cupping=20.0), **kwargs)
    diff = cupped.image - clean.image
    assert diff.min() <= -18.0 and diff.max() <= 0.5
    # darkest at the body's centre, untouched at its edge
    body = (clean.tissues != TISSUES["air"]) & (clean.tissues != TISSUES["table"])
    skin = body & ~ndimage.binary_erosion(body, structure=np.ones((1, 3, 3)))
    assert np.abs(diff[skin]).mean() < 3.0
