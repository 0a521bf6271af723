"""liverlib.data.cache and liverlib.data.dataset: reproducible, resumable, incremental slice cache."""

from __future__ import annotations

import os
import zipfile
from pathlib import Path

import numpy as np
import pytest
from support import write_nifti

from liverlib.data.cache import SliceCache, build_cache, cache_key
from liverlib.data import discover
from liverlib.errors import DataError

CFG = {"hu_window": [-100, 300], "size": 96, "levels": 256, "equalize": True,
       "negative_fraction": 0.25, "roi_margin_mm": 10.0, "workers": 0}  # fmt: skip


def synthetic_case(root: Path, case_id: int, seed: int, planes: int = 14) -> None:
    """A small CT-like case in stored (i, j, k) order: body, liver from plane 3, a lesion."""
    rng = np.random.default_rng(seed)
    shape = (60, 50, planes)
    i, j = np.mgrid[: shape[0], : shape[1]]
    body = ((i - 30) / 27) ** 2 + ((j - 25) / 22) ** 2 < 1
    liver = ((i - 22) / 12) ** 2 + ((j - 28) / 10) ** 2 < 1
    image = np.where(body, 40, -1024)[..., None].repeat(planes, axis=2).astype(np.float64)
    label = np.zeros(shape, np.uint8)
    label[..., 3 : planes - 2][liver] = 1
    label[18:23, 26:31, 5:8] = 2
    image[label == 1] = 110
    image[label == 2] = 60
    image += rng.normal(0, 8, shape) * body[..., None]
    affine = np.diag([0.8, 0.8, 2.5, 1.0])
    write_nifti(root / f"volume-{case_id}.nii.gz", image.astype(np.int16), affine)
    write_nifti(root / f"segmentation-{case_id}.nii.gz", label, affine)


@pytest.fixture
def cohort(real_lits_dir: Path) -> Path:
    """Case 0 = the real CT (links), cases 1 and 2 synthetic."""
    synthetic_case(real_lits_dir, 1, seed=1)
    synthetic_case(real_lits_dir, 2, seed=2, planes=18)
    return real_lits_dir


def _files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.iterdir())}


def test_build_load_and_stats(cohort, tmp_path):
    cases = discover(cohort)
    cache = build_cache(cases, tmp_path / "cache", CFG, progress=False)
    assert cache.case_ids == [0, 1, 2] and cache.built == (0, 1, 2)
    assert cache.path.parent == tmp_path / "cache" and cache.path.name == cache_key(CFG, cases)
    x, y = cache.load([0, 1], stage=1)
    assert x.dtype == np.uint8 and x.shape[1:] == (96, 96) and x.shape == y.shape
    stats = cache.stats().set_index("case")
    assert x.shape[0] == stats.loc[[0, 1], "stage1_slices"].sum()
    # case 1: 9 liver planes of 14 -> 9 + round(9 * 0.25 / 0.75) = 12 stage-1 slices
    assert stats.loc[1, "stage1_slices"] == 12 and stats.loc[1, "stage2_slices"] == 9
    assert stats.loc[1, "stage2_lesion_slices"] == 3 and stats.loc[0, "stage2_lesion_slices"] == 0
    assert 0 < stats.loc[1, "stage2_lesion_fraction"] < stats.loc[1, "stage1_liver_fraction"] < 1
    arrays = cache.arrays(1)
    np.testing.assert_array_equal(arrays["stage2_z"], np.arange(3, 12))
    assert cache.roi(1).height == cache.roi(1).width
    x2, y2 = cache.load(stage=2)
    assert len(x2) == stats["stage2_slices"].sum() and set(np.unique(y2)) == {0, 1}
    # reopening: nothing is rebuilt, same object content
    again = build_cache(cases, tmp_path / "cache", CFG, progress=False)
    assert again.built == ()
    np.testing.assert_array_equal(again.load([0, 1])[0], x)
    assert SliceCache(cache.path).case_ids == [0, 1, 2]


def test_two_builds_give_identical_bytes_serial_or_parallel(cohort, tmp_path):
    cases = discover(cohort)
    a = build_cache(cases, tmp_path / "a", CFG, workers=0, progress=False)
    b = build_cache(cases, tmp_path / "b", CFG, workers=2, progress=False)
    assert a.path.name == b.path.name
    assert _files(a.path) == _files(b.path)
    # no build time in the bytes (zip dates have a 2 s resolution: the equality
    # above alone would not catch a time stamp)
    with zipfile.ZipFile(a.path / "case-0001.npz") as zf:
        assert {info.date_time for info in zf.infolist()} == {(1980, 1, 1, 0, 0, 0)}
        assert {info.compress_type for info in zf.infolist()} == {zipfile.ZIP_STORED}


def _recording_build_case(files, *args):
    """Stands in for cache._build_case in the workers: logs case, pid and thread limit."""
    from threadpoolctl import threadpool_info

    import liverlib.data.cache

    threads = max([pool["num_threads"] for pool in threadpool_info()] or [1])
    with open(os.environ["LIVERLIB_TEST_PID_LOG"], "a") as f:
        f.write(f"{files.case_id} {os.getpid()} {threads}\n")
    return liverlib.data.cache._original_build_case(files, *args)


def test_cases_are_built_in_single_threaded_worker_processes(cohort, tmp_path, monkeypatch):
    import sys

    import liverlib.data.cache as cache_module

    if not sys.platform.startswith("linux"):
        pytest.skip("the stand-in reaches the workers through fork")
    log = tmp_path / "pids"
    monkeypatch.setenv("LIVERLIB_TEST_PID_LOG", str(log))
    monkeypatch.setattr(cache_module, "_original_build_case", cache_module._build_case, raising=False)
    monkeypatch.setattr(cache_module, "_build_case", _recording_build_case)
    build_cache(discover(cohort), tmp_path / "cache", CFG, workers=2, progress=False)
    rows = [line.split() for line in log.read_text().splitlines()]
    assert sorted(int(r[0]) for r in rows) == [0, 1, 2]
    pids = {int(r[1]) for r in rows}
    assert 1 <= len(pids) <= 2 and os.getpid() not in pids  # the 2 workers, not this process
    assert {int(r[2]) for r in rows} == {1}  # BLAS/OpenMP limited to one thread


def test_a_killed_build_resumes_and_ends_complete(cohort, tmp_path):
    cases = discover(cohort)
    good = (cohort / "volume-2.nii.gz").read_bytes()
    (cohort / "volume-2.nii.gz").write_bytes(good[: len(good) // 2])  # case 2 fails mid-build
    with pytest.raises(DataError, match="volume-2.nii.gz"):
        build_cache(cases, tmp_path / "cache", CFG, progress=False)
    folder = tmp_path / "cache" / cache_key(CFG, cases)
    assert sorted(p.name for p in folder.glob("case-*.npz")) == ["case-0000.npz", "case-0001.npz"]
    # as after a hard kill: no manifest, a stray temporary file
    (folder / "manifest.json").unlink()
    (folder / ".case-0002.x1y2.tmp.npz").write_bytes(b"half a case")
    (cohort / "volume-2.nii.gz").write_bytes(good)
    resumed = build_cache(cases, tmp_path / "cache", CFG, progress=False)
    assert resumed.built == (2,)  # 0 and 1 were reused from their files
    assert not list(folder.glob(".*"))
    clean = build_cache(cases, tmp_path / "clean", CFG, progress=False)
    assert _files(resumed.path) == _files(clean.path)


def test_a_changed_case_is_the_only_one_rebuilt(cohort, tmp_path):
    cases = discover(cohort)
    cache = build_cache(cases, tmp_path / "cache", CFG, progress=False)
    before = {i: os.stat(cache.path / f"case-{i:04d}.npz") for i in (0, 1, 2)}
    synthetic_case(cohort, 1, seed=11)  # new content for case 1
    os.utime(cohort / "segmentation-1.nii.gz", ns=(1, 1))  # even if sizes happened to match
    rebuilt = build_cache(cases, tmp_path / "cache", CFG, progress=False)
    assert rebuilt.built == (1,)
    after = {i: os.stat(cache.path / f"case-{i:04d}.npz") for i in (0, 1, 2)}
    for i in (0, 2):
        assert (after[i].st_ino, after[i].st_mtime_ns) == (before[i].st_ino, before[i].st_mtime_ns)
    assert after[1].st_ino != before[1].st_ino


def test_the_config_decides_the_key(cohort, tmp_path):
    cases = discover(cohort)
    base = cache_key(CFG, cases)
    assert cache_key({**CFG, "workers": 7}, cases) == base  # speed, not content
    assert cache_key({**CFG, "negative_fraction": 0.5}, cases) != base
    assert cache_key({**CFG, "hu_window": [-150, 250]}, cases) != base
    other = build_cache(cases, tmp_path / "cache", {**CFG, "size": 64}, progress=False)
    assert other.path.name != base and other.load([1])[0].shape[1:] == (64, 64)
    with pytest.raises(ValueError, match="unknown preprocess key"):
        cache_key({"sizes": 96}, cases)


def test_a_bad_case_in_a_worker_names_its_file(cohort, tmp_path):
    (cohort / "segmentation-1.nii.gz").unlink()
    write_nifti(cohort / "segmentation-1.nii.gz", np.full((60, 50, 14), 3, np.uint8), np.diag([0.8, 0.8, 2.5, 1.0]))
    with pytest.raises(DataError, match=r"segmentation-1\.nii\.gz: labels outside") as info:
        build_cache(discover(cohort), tmp_path / "cache", CFG, workers=2, progress=False)
    assert info.value.path.name == "segmentation-1.nii.gz"


# --------------------------------------------------------------------------- dataset


def test_slice_dataset_batches_are_deterministic_and_cover_the_set(cohort, tmp_path):
    from liverlib.data.dataset import SliceDataset

    cache = build_cache(discover(cohort), tmp_path / "cache", CFG, progress=False)
    augment = {"enabled": True, "rotation_deg": 15.0, "flip": True, "scale": [0.9, 1.1], "shift": 0.1}
    n = len(cache.load([0, 1], stage=1)[0])
    one_pass = SliceDataset(cache, [0, 1], stage=1, batch_size=8, augment=None, seed=3)
    assert len(one_pass) == -(-n // 8)
    seen = np.concatenate([one_pass.indices(i) for i in range(len(one_pass))])
    np.testing.assert_array_equal(np.sort(seen), np.arange(n))  # a pass is a permutation
    x, y = one_pass[0]
    assert x.shape == (8, 96, 96, 1) and x.dtype == np.float32 and y.dtype == np.float32
    assert 0 <= x.min() and x.max() <= 1 and set(np.unique(y)) <= {0.0, 1.0}

    def epochs(dataset, count=2):
        out = []
        for _ in range(count):
            out.append([dataset[i] for i in range(len(dataset))])
            dataset.on_epoch_end()
        return out

    a = epochs(SliceDataset(cache, [0, 1], 1, batch_size=8, augment=augment, seed=3, steps_per_epoch=3))
    b = epochs(SliceDataset(cache, [0, 1], 1, batch_size=8, augment=augment, seed=3, steps_per_epoch=3, workers=2))
    for ea, eb in zip(a, b):
        for (xa, ya), (xb, yb) in zip(ea, eb):
            np.testing.assert_array_equal(xa, xb)
            np.testing.assert_array_equal(ya, yb)
    assert not np.array_equal(a[0][0][0], a[1][0][0])  # a new epoch, new batches
    c = SliceDataset(cache, [0, 1], 1, batch_size=8, augment=augment, seed=4, steps_per_epoch=3)
    assert not np.array_equal(a[0][0][0], c[0][0])
    # steps_per_epoch walks on through the passes: 3 steps of 8 over n slices
    walk = SliceDataset(cache, [0, 1], 1, batch_size=8, seed=3, steps_per_epoch=3)
    positions = np.concatenate([walk.indices(i, epoch) for epoch in range(4) for i in range(3)])
    assert len(positions) == 96 and set(positions[:n]) == set(range(n))


def test_foreground_oversampling_fills_each_batch_share(cohort, tmp_path):
    from liverlib.data.dataset import SliceDataset

    cache = build_cache(discover(cohort), tmp_path / "cache", CFG, progress=False)
    x, y = cache.load([0, 1, 2], stage=1)
    # a rare foreground: keep the masks of only 3 slices
    has = np.flatnonzero(y.reshape(len(y), -1).any(axis=1))
    y = y.copy()
    y[has[3:]] = 0
    rare = set(has[:3])
    data = SliceDataset((x, y), batch_size=8, seed=5, steps_per_epoch=4, foreground_fraction=0.5)
    assert data.foreground_per_batch == 4
    for epoch in range(3):
        for i in range(4):
            chosen = data.indices(i, epoch)
            assert len(chosen) == 8 and set(chosen[:4]) <= rare  # the first half is all foreground
    again = SliceDataset((x, y), batch_size=8, seed=5, steps_per_epoch=4, foreground_fraction=0.5)
    np.testing.assert_array_equal(data.indices(2, 1), again.indices(2, 1))
    # the uniform stream is unchanged by oversampling: the last half equals a plain dataset's first half
    plain = SliceDataset((x, y), batch_size=4, seed=5, steps_per_epoch=4)
    np.testing.assert_array_equal(data.indices(1, 0)[4:], plain.indices(1, 0))
    # no shuffling (validation) or no foreground: no oversampling
    assert SliceDataset((x, y), batch_size=8, shuffle=False, foreground_fraction=0.5).foreground_per_batch == 0
    assert SliceDataset((x, 0 * y), batch_size=8, foreground_fraction=0.5).foreground_per_batch == 0
    with pytest.raises(ValueError, match="foreground_fraction"):
        SliceDataset((x, y), foreground_fraction=1.5)


def test_slice_dataset_trains_a_keras_model(cohort, tmp_path):
    import keras

    from liverlib.data.dataset import SliceDataset

    cache = build_cache(discover(cohort), tmp_path / "cache", CFG, progress=False)
    data = SliceDataset(cache, [1, 2], stage=2, batch_size=4, augment={"enabled": True}, steps_per_epoch=2, workers=2)
    model = keras.Sequential([keras.Input((96, 96, 1)), keras.layers.Conv2D(1, 3, padding="same", activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy")
    history = model.fit(data, epochs=2, shuffle=False, verbose=0)
    assert len(history.history["loss"]) == 2 and np.isfinite(history.history["loss"]).all()
    assert data.epoch >= 2  # every epoch moved on to a new order and augmentation


def test_max_slices_keeps_a_fixed_evenly_spaced_validation_set():
    from liverlib.data.dataset import SliceDataset

    x = np.arange(10, dtype=np.uint8)[:, None, None] * np.ones((1, 4, 4), np.uint8)
    y = np.zeros_like(x)
    small = SliceDataset((x, y), batch_size=2, shuffle=False, max_slices=4, levels=10)
    assert len(small) == 2
    batches = [small[i][0][:, 0, 0, 0] * 9 for i in range(2)]
    np.testing.assert_allclose(np.concatenate(batches), [0, 3, 6, 9])  # slices 0, 3, 6 and 9: first and last kept
    assert len(SliceDataset((x, y), batch_size=2, shuffle=False, max_slices=0)) == 5  # 0 keeps all
    assert len(SliceDataset((x, y), batch_size=2, shuffle=False, max_slices=50)) == 5
    with pytest.raises(ValueError, match="max_slices"):
        SliceDataset((x, y), max_slices=-1)
