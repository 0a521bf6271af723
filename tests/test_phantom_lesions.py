"""Phantom lesions and liver parenchyma: every kind and site, their look on CT, and parenchyma kept as liver."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from liverlib.data.phantoms import TISSUES, cohort, make_phantom

KINDS = {"hypo", "hyper", "washout", "cyst", "calcified"}
SITES = {"deep", "subcapsular", "cluster"}
N_CASES = 30
SLICES = 48  # the lesion draws follow the slice spacing (smallest diameter); cases are re-rendered with it


@pytest.fixture(scope="module")
def cases():
    """(phantom, drawn spec) of the first cases: cheap renders, the meta does not depend on size."""
    specs = {}
    sample = cohort._sample_lesions

    def recording(rng, *args):
        spec = sample(rng, *args)
        specs["last"] = spec
        return spec

    out = []
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(cohort, "_sample_lesions", recording)
        for k in range(N_CASES):
            ph = make_phantom(k, size=64, n_slices=SLICES)
            out.append((ph, specs["last"]))
    return out


def _first(cases, predicate, size=128):
    """The first case with a lesion satisfying ``predicate(phantom, spec, lesion)``, re-rendered at ``size``."""
    for ph, spec in cases:
        for i, les in enumerate(ph.meta["lesions"]):
            if predicate(ph, spec, les):
                big = make_phantom(ph.case_id, size=size, n_slices=SLICES)
                return big, big.meta["lesions"][i]
    raise AssertionError("no lesion in the cohort satisfies the predicate")


def _lean(ph, spec) -> bool:
    """No fatty liver: the parenchyma around a lesion is at the case's nominal liver HU (plus texture)."""
    return spec["parenchyma"]["fat"] == "none" and not ph.meta.get("steatosis", False)


def _component(ph, les):
    """The lesion's voxels: the label-2 component holding its recorded centre."""
    components, _ = ndimage.label(ph.label == 2)
    centre = tuple(round(v) for v in les["centre_voxel"])
    assert components[centre] > 0, "the recorded centre is not in a lesion"
    return components == components[centre]


def _depth(mask, spacing):
    """Distance (mm) from each voxel inside ``mask`` to the nearest voxel outside it."""
    return ndimage.distance_transform_edt(mask, sampling=spacing)


def _depth_in_plane(mask, spacing):
    """Like :func:`_depth`, within each plane (along z the slice profile blurs every edge)."""
    return ndimage.distance_transform_edt(mask, sampling=(1e4, spacing[1], spacing[2]))


def _liver_around(ph, lesion, lo=3.0, hi=10.0):
    """Median HU of the liver parenchyma (vessels excluded) ``lo``-``hi`` mm around a lesion."""
    around = _depth(~lesion, ph.spacing)
    return float(np.median(ph.image[(around > lo) & (around <= hi) & (ph.tissues == TISSUES["liver"])]))


def _centre_mm(ph, les):
    return np.asarray(les["centre_voxel"]) * np.asarray(ph.spacing)


# --------------------------------------------------------------------------- variety


def test_every_kind_and_site_appears(cases):
    lesions = [(ph.meta["phase"], les) for ph, _ in cases for les in ph.meta["lesions"]]
    assert {les["kind"] for _, les in lesions} == KINDS
    assert {les["site"] for _, les in lesions} == SITES
    assert {les["calcification"] for _, les in lesions} == {None, "foci", "coarse"}
    for flag in ("necrosis", "rim", "capsule"):
        assert any(les[flag] for _, les in lesions), flag
    # rims only in enhanced phases and on metastases; capsules only on washout lesions after the arterial phase
    assert all(phase != "unenhanced" and les["kind"] == "hypo" for phase, les in lesions if les["rim"])
    assert all(phase in ("portal_venous", "delayed") and les["kind"] == "washout"
               for phase, les in lesions if les["capsule"])
    # lesion-free livers stay common
    assert np.mean([ph.meta["n_lesions"] == 0 for ph, _ in cases]) >= 0.15


def test_clusters_are_small_lesions_close_together(cases):
    groups = {}
    for ph, _ in cases:
        for les in ph.meta["lesions"]:
            if les["site"] == "cluster":
                groups.setdefault((ph.case_id, les["cluster"]), []).append((ph, les))
    assert groups
    assert max(len(members) for members in groups.values()) >= 3
    for members in groups.values():
        ph = members[0][0]
        centres = np.array([_centre_mm(ph, les) for _, les in members])
        spread = np.linalg.norm(centres[:, None] - centres[None], axis=-1).max()
        assert spread <= 50.0  # within a few cm
        assert max(les["diameter_mm"] for _, les in members) <= max(12.0, ph.spacing[0] + 4.5) + 0.01


# --------------------------------------------------------------------------- looks on CT


def test_cyst_is_water_with_a_sharp_edge(cases):
    ph, les = _first(cases, lambda p, spec, les: les["kind"] == "cyst" and les["diameter_mm"] >= 25.0
                     and les["site"] == "deep" and _lean(p, spec))
    cyst = _component(ph, les)
    px = ph.spacing[1]
    depth = _depth(cyst, ph.spacing)
    interior = float(ph.image[depth > 1.5 * px].mean())
    # the scanner's smooth bias (cupping, bias field) shifts cyst and liver alike: measure it on the liver around
    liver = _liver_around(ph, cyst, 4 * px, 8 * px)
    bias = liver - ph.meta["hu"]["liver"]
    assert -10.0 <= interior - bias <= 25.0  # water: simple cysts 0-20 HU (literature -10..25)
    # sharp, in the plane (along z the slice profile blurs every edge): on the cyst's central planes
    # its outermost pixels are near its interior value and the liver's pixels just outside near the
    # liver's (a ramp within one pixel: partial volume and the PSF; one a pixel wider fails both)
    area = cyst.sum(axis=(1, 2))
    central = (area >= 0.6 * area.max())[:, None, None]
    inside, outside = _depth_in_plane(cyst, ph.spacing), _depth_in_plane(~cyst, ph.spacing)
    first = float(ph.image[central & cyst & (inside <= px)].mean())
    parenchyma = (ph.tissues == TISSUES["liver"]) & (_depth_in_plane(ph.label > 0, ph.spacing) > px)
    outer = float(np.median(ph.image[central & (outside <= px) & parenchyma]))
    contrast = liver - interior
    assert contrast > 30.0
    assert liver - first > 0.7 * contrast
    assert liver - outer < 0.25 * contrast


def test_calcified_lesion_holds_calcium_labelled_lesion(cases):
    ph, les = _first(cases, lambda p, spec, les: les["kind"] == "calcified" and les["diameter_mm"] >= 20.0
                     and p.meta["hu"]["calcification"] >= 350.0)
    lesion = _component(ph, les)
    assert (ph.image[lesion] > 200.0).any()
    around = ndimage.binary_dilation(lesion, iterations=2)
    dense = around & (ph.image > 200.0)
    assert (ph.label[dense] == 2).mean() >= 0.95  # the calcification is lesion, not liver


def _lesion_minus_liver(ph, les):
    """Median HU inside a lesion (its edge pixels left out) minus the liver's 3-10 mm around it."""
    lesion = _component(ph, les)
    inside = _depth_in_plane(lesion, ph.spacing) > 1.5 * ph.spacing[1]
    return float(np.median(ph.image[inside])) - _liver_around(ph, lesion)


def test_washout_lesion_bright_in_arterial_dark_later(cases):
    def washout(phases, lean):
        return lambda p, spec, les: (les["kind"] == "washout" and les["diameter_mm"] >= 20.0
                                     and abs(les["delta_hu"]) >= 18.0 and not les["margin_mm"]
                                     and p.meta["phase"] in phases and (_lean(p, spec) or not lean))

    arterial, les_a = _first(cases, washout(("arterial",), lean=False))  # fat would only add to the contrast
    assert _lesion_minus_liver(arterial, les_a) > 15.0
    late, les_l = _first(cases, washout(("portal_venous", "delayed"), lean=True))
    assert _lesion_minus_liver(late, les_l) < -5.0


def test_subcapsular_lesions_reach_the_liver_edge(cases):
    checked = 0
    for ph, _ in cases:
        subcapsular = [i for i, les in enumerate(ph.meta["lesions"])
                       if les["site"] == "subcapsular" and les["diameter_mm"] >= 12.0]
        if not subcapsular:
            continue
        big = make_phantom(ph.case_id, size=128, n_slices=SLICES)
        to_edge = _depth(big.label > 0, big.spacing)  # distance to the nearest voxel outside the liver
        for i in subcapsular:
            lesion = _component(big, big.meta["lesions"][i])
            # within 2 mm of the capsule, measured between voxel centres (up to one voxel more)
            assert to_edge[lesion].min() <= 2.0 + max(big.spacing[1:])
            checked += 1
        if checked >= 4:
            break
    assert checked >= 4


# --------------------------------------------------------------------------- parenchyma


def test_parenchyma_varies_and_wedges_only_in_arterial_phase(cases):
    facts = [(ph.meta["phase"], spec["parenchyma"]["facts"]) for ph, spec in cases]
    assert {f["fat"] for _, f in facts} == {"none", "geographic", "patchy"}
    assert any(f["sparing"] for _, f in facts) and any(f["halo_hu"] > 0 for _, f in facts)
    assert all(phase == "arterial" for phase, f in facts if f["wedges"])
    assert all(phase in ("arterial", "portal_venous") for phase, f in facts if f["mottle_hu"])
    gains = [f["vessel_gain"] for _, f in facts]
    assert max(gains) - min(gains) > 0.3


def test_fatty_infiltration_stays_liver_and_is_darker(cases, monkeypatch):
    ph, spec = next((ph, spec) for ph, spec in cases
                    if spec["parenchyma"]["fat"] in ("geographic", "patchy") and ph.meta["n_lesions"] == 0)
    fat_hu = spec["parenchyma"]["fat_hu"]
    fatty = make_phantom(ph.case_id, size=96, n_slices=SLICES)
    sample = cohort._sample_lesions

    def lean(rng, *args):  # the same case with the fat taken out
        out = sample(rng, *args)
        out["parenchyma"]["fat_hu"] = 0.0
        return out

    monkeypatch.setattr(cohort, "_sample_lesions", lean)
    clean = make_phantom(ph.case_id, size=96, n_slices=SLICES)
    assert np.array_equal(fatty.label, clean.label) and np.array_equal(fatty.tissues, clean.tissues)
    # the fat is spread around the liver's mean HU: the fatty part is darker, the rest a little brighter
    region = fatty.image - clean.image < -0.25 * fat_hu
    liver = fatty.label == 1
    assert region.sum() > 50 and (liver[region]).mean() > 0.8
    beyond = region & ~ndimage.binary_dilation(liver, iterations=2)  # beyond the liver's blurred edge
    assert beyond.sum() <= 0.002 * region.sum()
    assert (region & liver).sum() < 0.9 * liver.sum()  # patches, not the whole liver
    assert fatty.image[region & liver].mean() < fatty.image[liver & ~region].mean() - 0.5 * fat_hu
