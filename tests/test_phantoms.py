"""The synthetic phantom cohort: determinism, LiTS files, orientations, anatomical realism."""

from __future__ import annotations

import dataclasses
import hashlib
import os

import nibabel as nib
import numpy as np
import pytest
from scipy import ndimage

from liverlib.data import count_lesions, discover, load_case
from liverlib.data.phantoms import (
    PHASES,
    TISSUES,
    cohort,
    make_phantom,
    write_case,
    write_cohort,
)
from liverlib.errors import DataError

# Literature HU ranges (mean over a tissue's interior), independent of the generator's own table:
# fat -120..-60, muscle 35..60 (enhanced up to ~70), liver 50-65 unenhanced / 90-130 portal venous /
# 75-110 delayed, aorta by phase, cancellous bone 150-400 (older adults lower), lung -900..-750, bowel
# gas ~-1000. Enhanced ranges span the spread of contrast dose and timing between patients (aorta
# 150-450 HU arterial, liver enhancement 30-80 HU portal venous: Bae KT, Radiology 2010;256:32).
LITERATURE_HU = {
    "fat": {"*": (-125, -60)},
    "muscle": {"unenhanced": (35, 60), "*": (35, 75)},
    "liver": {"unenhanced": (45, 70), "arterial": (55, 100), "portal_venous": (75, 155), "delayed": (75, 110)},
    "spleen": {"unenhanced": (35, 65), "arterial": (75, 175), "portal_venous": (80, 170), "delayed": (75, 115)},
    "kidney": {"unenhanced": (20, 45), "arterial": (70, 290), "portal_venous": (100, 250), "delayed": (110, 200)},
    "artery": {"unenhanced": (30, 55), "arterial": (150, 470), "portal_venous": (100, 260), "delayed": (95, 160)},
    "lung": {"*": (-920, -740)},
    "gas": {"*": (-1024, -900)},
    "bone": {"*": (100, 400)},
}
NO_ARTEFACTS = {"streaks": [], "cupping": 0.0, "dark_band": 0.0, "bias": 0.0, "bias_field": None}


def _first_case(predicate, limit=40, **kwargs):
    """The first case satisfying ``predicate``, searched on cheap renders (the draws do not depend on size)."""
    for case in range(limit):
        if predicate(make_phantom(case, size=64, n_slices=kwargs.get("n_slices", 12))):
            ph = make_phantom(case, **kwargs)
            if predicate(ph):
                return ph
    raise AssertionError("no case in range satisfies the predicate")


def _patch_scanner(monkeypatch, artefacts: bool = True, **changes):
    """Replace fields (``changes``) of every scanner drawn from now on; ``artefacts=False``: none."""
    draw = cohort._draw_scan

    def patched(*args, **kwargs):
        scan = draw(*args, **kwargs)
        if not artefacts:
            changes["artefacts"] = dict(scan.artefacts, **NO_ARTEFACTS)
        return dataclasses.replace(scan, **changes)

    monkeypatch.setattr(cohort, "_draw_scan", patched)


@pytest.fixture(scope="module")
def cohort_meta():
    """Meta of the default cohort's first 10 cases (small renders: the meta does not depend on size)."""
    return [make_phantom(k, seed=7, size=64, n_slices=12) for k in range(10)]


# --------------------------------------------------------------------------- determinism


def test_same_seed_gives_identical_arrays():
    a = make_phantom(3, seed=11, size=96, n_slices=24)
    b = make_phantom(3, seed=11, size=96, n_slices=24)
    np.testing.assert_array_equal(a.image, b.image)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(a.tissues, b.tissues)
    assert a.spacing == b.spacing and a.axcodes == b.axcodes and a.meta == b.meta
    c = make_phantom(3, seed=12, size=96, n_slices=24)
    assert c.image.shape != a.image.shape or not np.array_equal(c.image, a.image)


def test_anatomy_and_scanner_do_not_depend_on_size_or_slices():
    # the same patient at two resolutions: same liver volume within voxelisation error, same lesions
    small = make_phantom(2, size=96, n_slices=40)
    large = make_phantom(2, size=192, n_slices=40)
    def drawn(ph):  # what was drawn, not where it lands in voxels
        return [{k: v for k, v in les.items() if k != "centre_voxel"} for les in ph.meta["lesions"]]

    assert drawn(small) == drawn(large) and len(drawn(small)) == small.meta["n_lesions"]
    assert small.meta["liver_ml"] == pytest.approx(large.meta["liver_ml"], rel=0.06)
    default = make_phantom(2, size=64)
    for key in ("phase", "padding", "noise_sigma", "noise_corr_px", "rescale_intercept", "fov_mm", "crop",
                "thickness_mm", "enhancement", "steatosis", "streaks", "bias_hu", "hu"):
        assert default.meta[key] == small.meta[key], key
    assert default.axcodes == small.axcodes


def test_write_cohort_is_deterministic_parallel_and_resumes(tmp_path):
    serial = write_cohort(tmp_path / "a", cases=3, seed=5, size=64, workers=1)
    parallel = write_cohort(tmp_path / "b", cases=3, seed=5, size=64, workers=2)
    assert [p.name for p in serial] == ["volume-0.nii.gz", "volume-1.nii.gz", "volume-2.nii.gz"]
    for a, b in zip(serial, parallel):
        assert a.read_bytes() == b.read_bytes()
        seg_a = a.with_name(a.name.replace("volume", "segmentation"))
        seg_b = b.with_name(b.name.replace("volume", "segmentation"))
        assert seg_a.read_bytes() == seg_b.read_bytes()
    # a rerun keeps complete cases and redoes a truncated one
    stamps = {p: os.stat(p).st_mtime_ns for p in (tmp_path / "a").iterdir()}
    good = serial[1].read_bytes()
    serial[1].write_bytes(good[: len(good) // 2])
    write_cohort(tmp_path / "a", cases=3, seed=5, size=64, workers=1)
    assert serial[1].read_bytes() == good
    assert os.stat(serial[0]).st_mtime_ns == stamps[serial[0]]
    assert not [p for p in (tmp_path / "a").iterdir() if p.name.startswith(".")]  # no temporary left
    # another seed into the same folder rewrites the cases
    write_cohort(tmp_path / "a", cases=1, seed=6, size=64, workers=1)
    assert serial[0].read_bytes() != parallel[0].read_bytes()


@pytest.mark.parametrize("kwargs", [{"cases": 0}, {"size": 32}, {"workers": 0}])
def test_write_cohort_rejects_bad_arguments(tmp_path, kwargs):
    with pytest.raises(ValueError):
        write_cohort(tmp_path, **kwargs)


def test_write_cohort_into_a_file_is_a_data_error(tmp_path):
    target = tmp_path / "file"
    target.write_text("x")
    with pytest.raises(DataError):
        write_cohort(target, cases=1, size=64)


def test_make_phantom_rejects_bad_arguments():
    with pytest.raises(ValueError):
        make_phantom(0, size=48)
    with pytest.raises(ValueError):
        make_phantom(0, size=64, n_slices=2)


def test_n_slices_and_size_are_honoured():
    ph = make_phantom(0, size=72, n_slices=30)
    assert ph.image.shape == ph.label.shape == ph.tissues.shape == (30, 72, 72)
    assert ph.image.dtype == np.float32 and ph.label.dtype == np.uint8
    assert np.array_equal(ph.image, np.rint(ph.image))  # integer HU, as stored


def test_lits_geometry_draws_lits_sizes():
    from liverlib.data.phantoms.scanner import LITS_SPACINGS, lits_geometry

    rng = np.random.default_rng(0)
    draws = [lits_geometry(rng) for _ in range(2000)]
    planes = np.array([n for n, _ in draws])
    assert planes.min() == 74 and planes.max() == 987  # both of LiTS's extremes occur
    assert {dz for _, dz in draws} == set(LITS_SPACINGS)
    assert 350 < planes.mean() < 500  # LiTS: 58,638 planes over 131 volumes, 448 a volume


def test_lits_phantom_has_lits_geometry_and_the_cohort_is_unchanged(tmp_path):
    ph = make_phantom(3, size=512, geometry=(74, 5.0))
    assert ph.image.shape == (74, 512, 512) and ph.spacing[0] == 5.0
    assert 0.55 <= ph.spacing[1] == ph.spacing[2] <= 1.0
    assert ph.meta["crop"] is False and ph.meta["geometry"] == [74, 5.0] and ph.label.any()
    case = load_case(discover(write_cohort(tmp_path / "lits", cases=1, seed=10, size=512, geometry="lits")[0].parent)[0])
    assert case.image.shape == (92, 512, 512) and case.spacing[0] == 5.0  # seed 10, case 0: 92 planes 5 mm apart
    with pytest.raises(ValueError, match="geometry must be None, 'lits' or"):
        make_phantom(0, geometry=(4, 1.0))
    # the geometry's generator is a fifth child of the case's seed: the cohort's four are untouched
    default = make_phantom(0, size=128)
    digest = hashlib.sha1(default.image.tobytes() + default.label.tobytes()).hexdigest()[:12]
    assert default.meta["geometry"] is None
    assert digest == "d85e64d028ef", "the default cohort changed: bump GENERATOR_VERSION and this digest together"


# --------------------------------------------------------------------------- files


def test_files_load_back_exactly_in_every_orientation(tmp_path):
    seen = {}
    intercepts = set()
    for case in range(30):
        ph = make_phantom(case, size=64, n_slices=14)
        if ph.axcodes in seen and ph.meta["rescale_intercept"] in intercepts:
            continue
        seen[ph.axcodes] = ph
        intercepts.add(ph.meta["rescale_intercept"])
        write_case(ph, tmp_path)
        if len(seen) >= 4 and len(intercepts) == 2:
            break
    assert len(seen) >= 4 and intercepts == {0.0, -1024.0}
    files = {f.case_id: f for f in discover(tmp_path)}
    for ph in seen.values():
        case = load_case(files[ph.case_id])
        assert case.geometry.axcodes == ph.axcodes
        np.testing.assert_array_equal(case.image, ph.image)
        np.testing.assert_array_equal(case.label, ph.label)
        np.testing.assert_allclose(case.spacing, ph.spacing, rtol=1e-5)
        vol = nib.load(str(files[ph.case_id].image))
        seg = nib.load(str(files[ph.case_id].label))
        assert vol.get_data_dtype() == np.int16 and seg.get_data_dtype() == np.uint8
        np.testing.assert_allclose(vol.affine, seg.affine)
        assert set(np.unique(case.label)) <= {0, 1, 2}


# --------------------------------------------------------------------------- labels and lesions


def test_lesions_lie_inside_the_liver():
    ph = _first_case(lambda p: p.meta["n_lesions"] >= 2, size=128)
    label = ph.label
    assert set(np.unique(label)) == {0, 1, 2}
    lesion = label == 2
    # every lesion voxel is enclosed by the liver in its slice ...
    filled = np.stack([ndimage.binary_fill_holes(s > 0) for s in label])
    assert filled[lesion].all()
    # ... and what surrounds a lesion is mostly liver, not background
    rim = ndimage.binary_dilation(lesion, iterations=1) & ~lesion
    assert (label[rim] == 1).mean() > 0.6
    # lesion and liver labels follow the tissue map
    assert np.array_equal(lesion, ph.tissues == TISSUES["lesion"])
    # the recorded centres point into lesions
    big = [les for les in ph.meta["lesions"] if les["diameter_mm"] > 12.0]
    for les in big:
        plane, row, col = (int(round(v)) for v in les["centre_voxel"])
        assert label[plane, row, col] == 2


def test_lesion_diameters_within_5_to_80_mm(cohort_meta):
    diameters = [les["diameter_mm"] for ph in cohort_meta for les in ph.meta["lesions"]]
    assert diameters and min(diameters) >= 5.0 and max(diameters) <= 80.0
    ph = _first_case(lambda p: p.meta["n_lesions"] >= 2, size=128)
    components, n = ndimage.label(ph.label == 2, structure=np.ones((3, 3, 3)))
    voxel_mm3 = float(np.prod(ph.spacing))
    sizes = ndimage.sum_labels(np.ones_like(components), components, index=np.arange(1, n + 1))
    equivalent = np.cbrt(6.0 * sizes * voxel_mm3 / np.pi)
    assert n >= 1 and equivalent.min() >= 2.5 and equivalent.max() <= 90.0


def test_cohort_varies_like_lits(cohort_meta):
    n_lesions = [ph.meta["n_lesions"] for ph in cohort_meta]
    kinds = {les["kind"] for ph in cohort_meta for les in ph.meta["lesions"]}
    assert 0 in n_lesions and max(n_lesions) >= 3
    assert {"hypo", "hyper"} <= kinds
    assert len({ph.axcodes for ph in cohort_meta}) > 1
    assert len({ph.meta["phase"] for ph in cohort_meta}) > 1
    assert len({ph.meta["padding"] for ph in cohort_meta}) > 1
    assert len({round(ph.spacing[1], 2) for ph in cohort_meta}) > 3
    for ph in cohort_meta:
        assert (150.0 if ph.meta["crop"] else 256.0) <= ph.meta["fov_mm"] <= 512.0
        assert 5.0 <= ph.meta["noise_sigma"] <= 30.0
    default = [make_phantom(k, size=64).image.shape[0] for k in range(4)]
    assert min(default) >= 40 and max(default) <= 200


# --------------------------------------------------------------------------- realism


@pytest.mark.parametrize("phase", PHASES)
def test_tissue_hu_in_literature_ranges(phase, monkeypatch):
    # the nominal HU, in a whole-body field without artefacts (bias, cupping, streaks) or a fatty liver
    _patch_scanner(monkeypatch, artefacts=False)
    ph = _first_case(lambda p: p.meta["phase"] == phase and not p.meta["crop"] and not p.meta["steatosis"],
                     size=128, n_slices=48)
    for tissue, by_phase in LITERATURE_HU.items():
        lo, hi = by_phase.get(phase, by_phase.get("*"))
        mask = ndimage.binary_erosion(ph.tissues == TISSUES[tissue], iterations=1)
        if tissue == "gas" and mask.sum() < 20:
            continue  # a case may have little bowel gas
        assert mask.sum() >= 20, tissue
        mean = float(ph.image[mask].mean())
        assert lo <= mean <= hi, f"{tissue} {phase}: {mean:.1f} HU not in [{lo}, {hi}]"
    # liver and spleen differ only modestly (shape and position tell them apart, as on real CT),
    # except in the arterial phase, where the spleen enhances first
    liver = ph.image[ndimage.binary_erosion(ph.tissues == TISSUES["liver"], iterations=2)].mean()
    spleen = ph.image[ndimage.binary_erosion(ph.tissues == TISSUES["spleen"], iterations=2)].mean()
    if phase == "arterial":
        assert spleen > liver + 15.0
    else:
        assert abs(liver - spleen) < 25.0
    # cortical bone is dense: the brightest spine voxels
    assert ph.image[ph.tissues == TISSUES["cortical_bone"]].max() > 500.0


def test_noise_level_matches_meta(monkeypatch):
    noisy = make_phantom(4, size=128)
    # the same case without noise: the difference is the noise (and rounding to integer HU)
    _patch_scanner(monkeypatch, noise_sigma=0.0)
    clean = make_phantom(4, size=128)
    assert noisy.meta["noise_sigma"] > 0 and clean.meta["noise_sigma"] == 0
    liver = clean.tissues == TISSUES["liver"]
    measured = (noisy.image - clean.image)[liver].std()
    assert 0.85 * noisy.meta["noise_sigma"] < measured < 1.15 * noisy.meta["noise_sigma"]


@pytest.mark.parametrize("case", [0, 1, 2])
def test_liver_volume_and_position(case):
    ph = make_phantom(case, size=128, n_slices=60)
    voxel_ml = float(np.prod(ph.spacing)) / 1000.0
    liver = ph.label > 0
    # literature volumes: normal 1.2-2.0 L, cirrhotic often under 1.2 L, hepatomegaly over 2 L
    low, high = {"normal": (1000.0, 2300.0), "cirrhotic": (600.0, 1400.0), "large": (1800.0, 3200.0),
                 "resected": (600.0, 2000.0)}[ph.meta["anatomy"]["liver_shape"]]
    assert low < liver.sum() * voxel_ml < high
    cz, _, cx = ndimage.center_of_mass(liver)
    size = ph.image.shape[1]
    # patient right = image left of the midline (the spinal canal: the body may be cropped)
    canal = ph.tissues == TISSUES["csf"]
    assert canal.any()
    assert cx < ndimage.center_of_mass(canal)[2] - 25.0 / ph.spacing[2]
    # upper abdomen: above the kidneys, below the lung bases' top
    kidney_z = ndimage.center_of_mass(ph.tissues == TISSUES["kidney"])[0]
    assert cz > kidney_z
    assert (ph.tissues[-1] == TISSUES["lung"]).any()  # lungs in the top slice
    # the dome: the liver's top plane touches the lung's bottom planes
    top = np.flatnonzero(liver.any(axis=(1, 2))).max()
    assert (ph.tissues[top: top + max(2, int(10 / ph.spacing[0]))] == TISSUES["lung"]).any()
    assert size == 128


def test_padding_outside_the_field_of_view():
    padded = _first_case(lambda p: p.meta["padding"] not in (None, 0), size=96, n_slices=10)
    pad = padded.meta["padding"]
    corners = padded.image[:, [0, 0, -1, -1], [0, -1, 0, -1]]
    assert (corners == pad).all()
    assert (padded.tissues[:, 0, 0] == TISSUES["padding"]).all()
    # the body is inside the field: no padding where the tissue map has body
    centre = padded.image[:, 48, 48]
    assert (centre != pad).all()
    open_field = _first_case(lambda p: p.meta["padding"] is None, size=96, n_slices=10)
    assert open_field.image[:, 0, 0].mean() < -900.0  # air with noise, clipped at -1024


def test_structures_present():
    ph = make_phantom(5, size=128, n_slices=60)
    present = set(np.unique(ph.tissues))
    for name in ("fat", "muscle", "liver", "liver_vessel", "spleen", "kidney", "artery", "vein", "bone",
                 "cortical_bone", "lung", "gas", "bowel_wall", "bowel_content", "skin", "csf"):
        assert TISSUES[name] in present, name
    assert count_lesions(ph.label) <= ph.meta["n_lesions"]
