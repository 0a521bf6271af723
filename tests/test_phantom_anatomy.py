"""Phantom anatomy that is not liver: adrenals, crura, masses, ascites, resections and the liver shape variants."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import ndimage

from liverlib.data.phantoms import TISSUES, make_phantom

# Literature HU (mean of the structure), independent of the generator's table:
# normal adrenal limbs 10-40 unenhanced, 40-90 enhanced (Dunnick & Korobkin, AJR 2002);
# simple fluid (ascites, cysts) 0-20 (Federle & Jeffrey, AJR 1983); lipid-rich adenoma < 10 unenhanced
# (Boland et al., AJR 1998).
ADRENAL_HU = {"unenhanced": (10, 40), "arterial": (40, 90), "portal_venous": (45, 100), "delayed": (35, 85)}
FLUID_HU = (0, 20)
ADENOMA_MAX_UNENHANCED = 10


@pytest.fixture(scope="module")
def cohort():
    """Meta of the default cohort's first 20 cases (cheap renders: the meta does not depend on size)."""
    return [make_phantom(k, size=64, n_slices=12) for k in range(20)]


def _find(predicate, limit=60):
    """The first case id whose cheap render satisfies ``predicate``."""
    for case in range(limit):
        if predicate(make_phantom(case, size=64, n_slices=12)):
            return case
    raise AssertionError("no case in range satisfies the predicate")


def test_liver_shapes_vary_across_the_cohort(cohort):
    shapes = [ph.meta["anatomy"]["liver_shape"] for ph in cohort]
    assert set(shapes) == {"normal", "cirrhotic", "large", "resected"}
    for ph, shape in zip(cohort, shapes):
        resection = ph.meta["anatomy"]["resection"]
        assert (resection is not None) == (shape == "resected")
    volume = {s: [ph.meta["liver_ml"] for ph, t in zip(cohort, shapes) if t == s] for s in set(shapes)}
    assert max(volume["cirrhotic"]) < min(volume["large"])
    assert max(volume["cirrhotic"]) < 1400.0 and min(volume["large"]) > 1800.0  # 0.8-1.2 L and 2.0-2.8 L drawn
    masses = [m for ph in cohort for m in ph.meta["anatomy"]["masses"]]
    assert {m["site"] for m in masses} >= {"renal", "adrenal", "splenic"}
    assert any(m["beside_liver"] for m in masses)
    assert 0.25 < np.mean([bool(ph.meta["anatomy"]["masses"]) for ph in cohort]) < 0.8


def test_adrenals_sit_above_the_kidneys_and_crura_hug_the_aorta():
    ph = make_phantom(0, size=128, n_slices=60)
    tis = ph.tissues
    mid = ndimage.center_of_mass(tis == TISSUES["bone"])[2]  # the spine's column
    for half in (slice(0, int(mid)), slice(int(mid), None)):
        adrenal = np.zeros_like(tis, dtype=bool)
        kidney = np.zeros_like(adrenal)
        adrenal[:, :, half] = tis[:, :, half] == TISSUES["adrenal"]
        kidney[:, :, half] = tis[:, :, half] == TISSUES["kidney"]
        assert adrenal.sum() > 20
        az, _, ax = ndimage.center_of_mass(adrenal)
        kz, _, kx = ndimage.center_of_mass(kidney)
        assert az > kz and abs(ax - mid) < abs(kx - mid)  # superomedial to the kidney
    # partial volume thins a 3-6 mm limb: its brightest voxels carry the gland's HU
    lo, hi = ADRENAL_HU[ph.meta["phase"]]
    p90 = float(np.percentile(ph.image[tis == TISSUES["adrenal"]], 90))
    assert lo - 15.0 <= p90 <= hi + 2.0 * ph.meta["noise_sigma"]
    # the crura: muscle right beside the aorta on the planes of the adrenals (above the kidneys' hila)
    planes = np.flatnonzero((tis == TISSUES["adrenal"]).any(axis=(1, 2)))
    near = 0
    for p in planes:
        aorta, _ = ndimage.label(tis[p] == TISSUES["artery"])
        if aorta.max() == 0:
            continue
        biggest = aorta == np.argmax(np.bincount(aorta.ravel())[1:]) + 1
        ring = ndimage.binary_dilation(biggest, iterations=max(1, round(8.0 / ph.spacing[1])))
        near += bool(((tis[p] == TISSUES["muscle"]) & ring).sum() >= 3)
    assert near >= 0.7 * len(planes)


def test_large_mass_beside_the_liver_is_not_liver():
    case = _find(lambda p: any(m["beside_liver"] for m in p.meta["anatomy"]["masses"]))
    ph = make_phantom(case, size=128, n_slices=60)
    mass = ph.tissues == TISSUES["mass"]
    assert mass.sum() > 1000
    assert not ph.label[mass].any()  # masses carry label 0, never liver or lesion
    touch = ndimage.binary_dilation(mass, iterations=3) & (ph.label == 1)
    assert touch.sum() > 20  # pressed against the liver, which was carved around it
    parts, _ = ndimage.label(mass)
    largest = parts == np.argmax(np.bincount(parts.ravel())[1:]) + 1
    core = ndimage.binary_erosion(largest, iterations=3)
    hi = FLUID_HU[1]  # cystic or necrotic: a fluid centre, hypodense to any liver
    assert np.percentile(ph.image[core], 25) < hi + 15.0


def test_every_listed_mass_is_painted_with_label_0():
    case = _find(lambda p: len(p.meta["anatomy"]["masses"]) >= 2 and p.meta["anatomy"]["ascites_mm"] == 0)
    ph = make_phantom(case, size=128, n_slices=60)
    mass = ph.tissues == TISSUES["mass"]
    _, n = ndimage.label(mass)
    assert n >= 1 and not ph.label[mass].any()


def test_ascites_around_a_cirrhotic_liver_is_fluid():
    case = _find(lambda p: p.meta["anatomy"]["ascites_mm"] > 8.0 and not p.meta["anatomy"]["masses"])
    ph = make_phantom(case, size=128, n_slices=60)
    assert ph.meta["anatomy"]["liver_shape"] == "cirrhotic"
    fluid = ph.tissues == TISSUES["fluid"]
    touch = ndimage.binary_dilation(fluid, iterations=2) & (ph.label == 1)
    assert touch.sum() > 100 and not ph.label[fluid].any()
    core = ndimage.binary_erosion(fluid, iterations=1)
    lo, hi = FLUID_HU  # widened by noise and by partial volume with the fat it lies in
    assert lo - 15.0 <= ph.image[core].mean() <= hi + 5.0


def test_adrenal_adenoma_is_low_attenuation_unenhanced():
    case = _find(lambda p: p.meta["phase"] == "unenhanced" and not p.meta["anatomy"]["ascites_mm"]
                 and [m["kind"] for m in p.meta["anatomy"]["masses"]] == ["adenoma"]
                 and p.meta["anatomy"]["masses"][0]["diameter_mm"] > 18.0, limit=200)
    ph = make_phantom(case, size=128, n_slices=60)
    core = ndimage.binary_erosion(ph.tissues == TISSUES["mass"], iterations=1)
    assert core.sum() >= 5 and ph.image[core].mean() < ADENOMA_MAX_UNENHANCED + 8.0


def test_resection_removes_a_lobe():
    case = _find(lambda p: p.meta["anatomy"]["resection"] == "left_lateral_sectionectomy")
    ph = make_phantom(case, size=128, n_slices=60)
    liver = ph.label > 0
    mid = ndimage.center_of_mass(ph.tissues == TISSUES["bone"])[2]
    left = np.zeros_like(liver)
    left[:, :, int(mid + 25.0 / ph.spacing[2]):] = True  # patient left of the spine (image right)
    assert (liver & left).sum() < 0.02 * liver.sum()
