"""liverlib.evaluation.real_ct: real scans found by name, segmented by a run's ensemble, scored against known answers."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest
from stub_models import SIZE, lesion_stub, liver_stub, make_run, stub
from support import DATA

from liverlib import config, data
from liverlib.errors import DataError
from liverlib.evaluation.real_ct import find_real_scans, score_real_ct
from liverlib.runfolder import RunFolder

# A "real scan" with exact expectations, stored (column, row, plane) at 1 x 1 x 2 mm: air, a
# 100 HU liver block, inside it a 250 HU spot that the lesion stub calls lesion (false: no
# lesion in the reference), and a liver mask one plane shorter than the block.
SHAPE = (SIZE, SIZE, 10)  # stored (i, j, k)
AFFINE = np.diag([1.0, 1.0, 2.0, 1.0])


def _write_scan(folder, key="test"):
    image = np.full(SHAPE, -1000, np.int16)
    image[20:60, 20:60, 2:8] = 100
    image[30:40, 30:40, 4:7] = 250
    mask = np.zeros(SHAPE, np.uint8)
    mask[20:60, 20:60, 2:7] = 1
    folder.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(image, AFFINE), str(folder / f"ct_abdomen_{key}.nii.gz"))
    nib.save(nib.Nifti1Image(mask, AFFINE), str(folder / f"liver_mask_{key}.nii.gz"))


def test_the_project_s_real_scans_are_found():
    scans = find_real_scans(DATA)
    assert [s.name for s in scans] == ["ct_abdomen_2mm_512", "ct_abdomen_3mm"]
    assert [s.liver.name for s in scans] == ["liver_mask_2mm_512.nii.gz", "liver_mask_3mm.nii.gz"]


def test_a_mask_without_its_one_ct_is_one_clear_error(tmp_path):
    with pytest.raises(DataError, match="no such folder"):
        find_real_scans(tmp_path / "missing")
    with pytest.raises(DataError, match="no liver_mask_KEY"):
        find_real_scans(tmp_path)
    _write_scan(tmp_path)
    (tmp_path / "ct_other_test.nii.gz").write_bytes((tmp_path / "ct_abdomen_test.nii.gz").read_bytes())
    with pytest.raises(DataError, match="expected one CT named ct_\\*_test.nii\\[.gz\\] beside the mask, found ct_abdomen_test"):
        find_real_scans(tmp_path)


def test_score_real_ct_with_exact_stubs(tmp_path):
    cfg = config.resolve("smoke", {"preprocess.size": SIZE, "preprocess.equalize": False,
                                   "preprocess.roi_margin_mm": 1000.0, "crf.enabled": False})
    run = make_run(tmp_path / "run", {0: (liver_stub(), lesion_stub()), 1: (liver_stub(), stub(constant=0.01))}, cfg)
    _write_scan(tmp_path / "real")
    scores = score_real_ct(run, tmp_path / "real", progress=False)
    assert list(scores["scan"]) == ["ct_abdomen_test", "ct_abdomen_test-liver-crop"]
    row = scores.iloc[0]
    # The ensemble's liver is the 40 x 40 x 6 block, the mask 40 x 40 x 5 of it: Dice 2*5/(5+6).
    assert row["scan"] == "ct_abdomen_test" and row["folds"] == "0, 1"
    assert row["liver_dice"] == round(10 / 11, 4)
    assert row["liver_ml"] == pytest.approx(40 * 40 * 6 * 2 / 1000, abs=0.05)
    assert row["reference_liver_ml"] == pytest.approx(40 * 40 * 5 * 2 / 1000, abs=0.05)
    # Mean lesion probability on the spot: (1 + 0.01) / 2 >= 0.5, so the 10 x 10 x 3 spot is false lesion: 0.6 mL.
    assert row["false_lesion_ml"] == pytest.approx(0.6)
    written = data.load_label(RunFolder(run).real_ct_prediction("ct_abdomen_test"))
    assert written.shape == (10, SIZE, SIZE) and (written == 2).sum() == 300
    # The crop: the mask's box (40 x 40 pixels, planes 2-6) grown by 15 mm: 70 x 70 pixels, all 10 planes.
    crop = scores.iloc[1]
    assert (crop["planes"], crop["rows"], crop["columns"]) == (10, 70, 70)
    # Same liver; the spot is resampled 70 -> 96 -> 70 pixels (not 96 -> 96), so its edge erodes a little.
    assert crop["liver_dice"] == round(10 / 11, 4) and 0.3 <= crop["false_lesion_ml"] <= 0.6
    cropped = data.load_label(RunFolder(run).real_ct_prediction("ct_abdomen_test-liver-crop"))
    assert cropped.shape == (10, SIZE, SIZE) and ((cropped > 0) == (written > 0)).all()  # on the whole grid
    # The folds' validated minimum lesion volume applies, as in `liverlib predict`: 1 mL removes the spot.
    for fold in (0, 1):
        RunFolder(run).postprocessing(fold).write_text(json.dumps({"min_lesion_ml": 1.0, "validation_cases": [],
                                                                    "mean_lesion_dice": {}}))
    again = score_real_ct(run, tmp_path / "real", fold=0, progress=False, crop_margin_mm=None)
    assert again.iloc[0]["false_lesion_ml"] == 0.0 and again.iloc[0]["folds"] == "0" and len(again) == 1


def test_real_ct_figure_shows_each_scan_on_planes_of_its_liver(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    from liverlib.reporting import figures

    _write_scan(tmp_path / "real")
    scan = find_real_scans(tmp_path / "real")[0]
    labels = np.zeros((10, SIZE, SIZE), np.uint8)
    labels[2:8, 20:60, 20:60] = 1
    geometry = data.load_image(scan.image)[2]
    prediction = data.save_like(labels, geometry, tmp_path / "pred.nii.gz")
    fig = figures.real_ct_predictions([scan], [prediction], planes=3)
    titles = [ax.get_title() for ax in fig.axes]
    assert len(fig.axes) == 9  # 3 planes x (reference, prediction, difference)
    assert titles[0::3] == ["ct_abdomen_test, plane 2: reference", "ct_abdomen_test, plane 4: reference",
                            "ct_abdomen_test, plane 6: reference"]  # planes 2-6 hold the reference liver
