"""``liverlib evaluate``: matching files, orientation, reports and the CSV."""

from __future__ import annotations

from pathlib import Path

import nibabel as nib
import numpy as np
import pandas as pd
import pytest
from support import REAL_MASK
from nibabel.orientations import axcodes2ornt, ornt_transform
from scipy import ndimage

from liverlib.cli import main
from liverlib.errors import DataError
from liverlib.evaluation.detection import case_metrics
from liverlib.evaluation.folders import evaluate_folder, evaluate_pairs, find_references, match_folders
from liverlib.evaluation.summary import format_summary, summarize, to_frame

SHAPE = (8, 8, 4)  # stored (i, j, k)
SPACING = (0.8, 0.7, 2.5)  # mm along i, j, k
AFFINE = np.diag([*SPACING, 1.0])
AFFINE[:3, 3] = (-30.0, 12.0, 100.0)


def labels_of(case_id: int) -> tuple[np.ndarray, np.ndarray]:
    """Asymmetric reference and prediction labels (stored order) for one case."""
    ref = np.zeros(SHAPE, np.uint8)
    ref[1:6, 2:7, 0:3] = 1
    ref[2:4, 3:5, 1:3] = 2
    ref[5, 6, 2] = 2  # a small second lesion
    pred = np.zeros(SHAPE, np.uint8)
    pred[1 + case_id % 2 : 7, 2:6, 0:4] = 1
    pred[2:4, 3:5, 1:2] = 2
    pred[6, 0, 3] = 2  # a false positive
    return ref, pred


def save(path: Path, data: np.ndarray, affine: np.ndarray = AFFINE) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(data, affine), str(path))
    return path


def reoriented(data: np.ndarray, axcodes: tuple[str, str, str]) -> nib.Nifti1Image:
    """The same physical labels stored in another voxel order (RAS -> axcodes)."""
    img = nib.Nifti1Image(data, AFFINE)
    return img.as_reoriented(ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(axcodes)))


def expected_rows(case_id: int) -> list[dict]:
    ref, pred = labels_of(case_id)
    return case_metrics(pred, ref, SPACING)  # in stored order: scores do not depend on orientation


@pytest.fixture
def folders(tmp_path: Path) -> tuple[Path, Path]:
    """A LiTS reference folder (cases 1-3) and a prediction folder (cases 1, 2 and 9)."""
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    for case_id in (1, 2, 3):
        ref, _ = labels_of(case_id)
        save(ref_dir / f"volume-{case_id}.nii.gz", np.full(SHAPE, 40, np.int16))
        save(ref_dir / f"segmentation-{case_id}.nii.gz", ref)
    save(pred_dir / "segmentation-1.nii.gz", labels_of(1)[1])
    flipped = reoriented(labels_of(2)[1], ("P", "L", "I"))
    nib.save(flipped, str(pred_dir / "test-segmentation-2.nii"))
    save(pred_dir / "case_9.nii.gz", labels_of(1)[1])  # no reference
    save(pred_dir / "overview.nii.gz", labels_of(1)[1])  # no case number
    (pred_dir / "notes.txt").write_text("not a prediction")
    return pred_dir, ref_dir


def assert_rows_equal(got: pd.DataFrame, expected: list[dict]) -> None:
    assert list(got["structure"]) == [row["structure"] for row in expected]
    for (_, g), e in zip(got.iterrows(), expected):
        for key in ("dice", "voe", "rvd", "assd", "msd"):
            assert g[key] == pytest.approx(e[key], nan_ok=True), key
        for key in ("intersection", "pred_voxels", "ref_voxels"):
            assert g[key] == e[key], key
    assert got.iloc[1]["tp"] == expected[1]["tp"] and got.iloc[1]["fp"] == expected[1]["fp"]


def test_matching_pairs_skips_and_reports_missing(folders):
    pred_dir, ref_dir = folders
    matching = match_folders(pred_dir, ref_dir)
    assert [(c, p.name, r.name) for c, p, r in matching.pairs] == [
        (1, "segmentation-1.nii.gz", "segmentation-1.nii.gz"),
        (2, "test-segmentation-2.nii", "segmentation-2.nii.gz"),
    ]
    assert sorted(p.name for p, _ in matching.skipped) == ["case_9.nii.gz", "overview.nii.gz"]
    assert [c for c, _ in matching.missing] == [3]


def test_scores_equal_the_in_memory_calculation_whatever_the_orientation(folders):
    pred_dir, ref_dir = folders
    table = evaluate_pairs(match_folders(pred_dir, ref_dir).pairs)
    assert list(table["case"]) == [1, 1, 2, 2]
    assert_rows_equal(table[table["case"] == 1], expected_rows(1))
    assert_rows_equal(table[table["case"] == 2], expected_rows(2))
    assert table["affine_match"].all()

    # The reoriented file really is stored differently: compared voxel for
    # voxel as stored, case 2 would score otherwise.
    stored = np.asanyarray(nib.load(str(pred_dir / "test-segmentation-2.nii")).dataobj)
    ref2, _ = labels_of(2)
    assert stored.shape == ref2.shape
    as_stored = [r[k] for r in case_metrics(stored, ref2, SPACING) for k in ("dice", "assd")]
    assert as_stored != pytest.approx([r[k] for r in expected_rows(2) for k in ("dice", "assd")], nan_ok=True)


def test_evaluate_folder_prints_the_report_and_writes_the_csv(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    out = tmp_path / "tables" / "metrics.csv"
    assert evaluate_folder(pred_dir, ref_dir, out=out, progress=False) == 0
    printed = capsys.readouterr().out
    assert "scored 2 cases" in printed
    assert "missing: 1 reference case without a prediction" in printed and "(cases 3)" in printed
    assert "skipped: 2 prediction files" in printed and "case_9.nii.gz (no reference for case 9)" in printed
    assert "dice global" in printed and "precision" in printed

    table = pd.read_csv(out)
    assert list(table.columns[:13]) == [
        "case", "structure", "dice", "voe", "rvd", "assd", "msd",
        "intersection", "pred_voxels", "ref_voxels", "tp", "fp", "fn",
    ]
    assert len(table) == 4
    assert table.loc[table["structure"] == "liver", "tp"].isna().all()
    assert_rows_equal(table[table["case"] == 2].reset_index(drop=True), expected_rows(2))
    assert not [p for p in out.parent.iterdir() if p.name != "metrics.csv"]  # no temporary left


def test_cli_evaluate_returns_zero(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(pred_dir), str(ref_dir), "--out", str(out)]) == 0
    assert out.is_file()
    assert "Traceback" not in capsys.readouterr().err


def test_shape_mismatch_is_one_line_naming_the_prediction(folders, tmp_path, capsys):
    pred_dir, ref_dir = folders
    save(pred_dir / "segmentation-1.nii.gz", np.zeros((8, 8, 5), np.uint8))
    out = tmp_path / "metrics.csv"
    assert main(["evaluate", str(pred_dir), str(ref_dir), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1
    assert "segmentation-1.nii.gz" in err and "does not match" in err and "Traceback" not in err
    assert not out.exists()


def test_nothing_matched_exits_2_with_one_line(tmp_path, folders, capsys):
    _, ref_dir = folders
    save(tmp_path / "other" / "case_42.nii.gz", np.zeros(SHAPE, np.uint8))
    assert main(["evaluate", str(tmp_path / "other"), str(ref_dir)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "no prediction matches" in err and "42" in err


def test_empty_or_missing_folders_are_data_errors(tmp_path, folders):
    pred_dir, ref_dir = folders
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="no prediction files"):
        evaluate_folder(tmp_path / "empty", ref_dir)
    with pytest.raises(DataError, match="no such prediction folder"):
        evaluate_folder(tmp_path / "absent", ref_dir)
    with pytest.raises(DataError, match="no reference labels"):
        evaluate_folder(pred_dir, tmp_path / "empty")
    with pytest.raises(DataError, match="no such reference folder"):
        evaluate_folder(pred_dir, tmp_path / "absent")


def test_a_data_folder_scores_its_segmentations(folders, capsys):
    _, ref_dir = folders
    assert evaluate_folder(ref_dir, ref_dir, progress=False) == 0
    printed = capsys.readouterr().out
    assert "scored 3 cases" in printed
    assert printed.splitlines()[2].split()[:4] == ["liver", "3", "1.000", "1.000"]


def test_two_files_for_one_case_is_an_error(folders):
    pred_dir, ref_dir = folders
    save(pred_dir / "liver_1.nii.gz", labels_of(1)[1])
    with pytest.raises(DataError, match="two files for case 1"):
        match_folders(pred_dir, ref_dir)


def test_reference_layouts(tmp_path):
    ref, _ = labels_of(0)
    # MSD labels without images, a flat folder of labels, LiTS labels without volumes.
    msd = tmp_path / "msd"
    save(msd / "labelsTr" / "liver_4.nii.gz", ref)
    flat = tmp_path / "flat"
    save(flat / "4.nii.gz", ref)
    save(flat / "volume-5.nii.gz", np.zeros(SHAPE, np.int16))  # a CT, not a label
    lits = tmp_path / "lits"
    save(lits / "batch1" / "segmentation-4.nii", ref)
    save(lits / "batch1" / "other-7.nii.gz", ref)  # not a LiTS label name: ignored
    assert {k: v.name for k, v in find_references(msd).items()} == {4: "liver_4.nii.gz"}
    assert {k: v.name for k, v in find_references(flat).items()} == {4: "4.nii.gz"}
    assert {k: v.name for k, v in find_references(lits).items()} == {4: "segmentation-4.nii"}


def test_msd_style_predictions_against_an_msd_folder(tmp_path):
    ref, pred = labels_of(0)
    save(tmp_path / "Task03" / "imagesTr" / "liver_4.nii.gz", np.zeros(SHAPE, np.int16))
    save(tmp_path / "Task03" / "labelsTr" / "liver_4.nii.gz", ref)
    save(tmp_path / "nnunet" / "liver_4.nii.gz", pred)
    table = evaluate_pairs(match_folders(tmp_path / "nnunet", tmp_path / "Task03").pairs)
    assert_rows_equal(table, case_metrics(pred, ref, SPACING))


def test_a_prediction_on_another_grid_is_flagged(folders, capsys):
    pred_dir, ref_dir = folders
    save(pred_dir / "segmentation-1.nii.gz", labels_of(1)[1], affine=np.eye(4))
    assert evaluate_folder(pred_dir, ref_dir, progress=False) == 0
    assert "warning: 1 prediction with another voxel-to-world affine" in capsys.readouterr().out


def test_summarize_pools_global_dice_and_detection():
    rows = []
    # Case 1: liver perfect; one lesion of 2 voxels found exactly.
    ref = np.zeros((2, 4, 4), np.uint8)
    ref[0, :, :] = 1
    ref[0, 0, 0:2] = 2
    rows += [dict(r, case=1) for r in case_metrics(ref, ref)]
    # Case 2: liver of 8 voxels missed; no lesion anywhere.
    ref2 = np.zeros((2, 4, 4), np.uint8)
    ref2[1, 0:2, :] = 1
    rows += [dict(r, case=2) for r in case_metrics(np.zeros_like(ref2), ref2)]
    summary = summarize(to_frame(rows)).set_index("structure")

    liver = summary.loc["liver"]
    assert liver["cases"] == 2
    assert liver["dice_per_case"] == pytest.approx(0.5)
    assert liver["dice_global"] == pytest.approx(2 * 16 / (16 + 16 + 8))
    assert liver["surface_undefined"] == 1 and liver["assd"] == 0.0  # the undefined case is skipped
    lesion = summary.loc["lesion"]
    assert lesion["dice_per_case"] == 1.0  # case 2 has no lesion in either: Dice 1
    assert lesion["ref_empty"] == 1
    assert (lesion["tp"], lesion["fp"], lesion["fn"]) == (1, 0, 0)
    assert lesion["precision"] == 1.0 and lesion["recall"] == 1.0
    assert pd.isna(liver["precision"]) and pd.isna(liver["tp"])

    text = format_summary(summarize(to_frame(rows)))
    assert "lesion detection (IoU > 0.5, pooled over cases): TP 1, FP 0, FN 0" in text
    assert "1 of 2 cases without it in the reference" in text


def test_summarize_keeps_crf_groups_apart():
    labels = np.zeros((2, 3, 3), np.uint8)
    labels[0, 1, 1] = 1
    rows = [dict(r, case=1, crf=crf) for crf in (0, 1) for r in case_metrics(labels * crf, labels)]
    summary = summarize(to_frame(rows))
    assert list(summary[["crf", "structure"]].itertuples(index=False, name=None)) == [
        (0, "liver"), (0, "lesion"), (1, "liver"), (1, "lesion"),
    ]
    assert list(summary["dice_per_case"]) == [0.0, 1.0, 1.0, 1.0]
    assert "crf" in format_summary(summary).splitlines()[0]


def test_real_liver_mask_restored_in_another_orientation(tmp_path):
    ref_img = nib.load(str(REAL_MASK))
    ref = np.asanyarray(ref_img.dataobj).astype(np.uint8)
    # The prediction: the liver eroded by one voxel in-plane, stored LPI instead of RAS.
    in_plane = ndimage.generate_binary_structure(3, 1)
    in_plane[:, :, [0, 2]] = False  # no neighbours along k, the slice axis
    eroded = ndimage.binary_erosion(ref, structure=in_plane)
    ref_dir, pred_dir = tmp_path / "ref", tmp_path / "pred"
    ref_dir.mkdir()
    (ref_dir / "segmentation-0.nii.gz").symlink_to(REAL_MASK.resolve())
    pred_img = nib.Nifti1Image(eroded.astype(np.uint8), ref_img.affine)
    pred_img = pred_img.as_reoriented(ornt_transform(axcodes2ornt(("R", "A", "S")), axcodes2ornt(("L", "P", "I"))))
    pred_dir.mkdir()
    nib.save(pred_img, str(pred_dir / "0.nii.gz"))

    table = evaluate_pairs(match_folders(pred_dir, ref_dir).pairs)
    expected = case_metrics(eroded.astype(np.uint8), ref, ref_img.header.get_zooms()[:3])
    assert_rows_equal(table, expected)
    liver = table.iloc[0]
    assert liver["rvd"] == pytest.approx((eroded.sum() - ref.sum()) / ref.sum())
    assert liver["msd"] >= 3.0  # one 3 mm voxel was peeled off
    assert bool(liver["affine_match"])
