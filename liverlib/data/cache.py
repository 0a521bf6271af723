"""The slice cache: every case preprocessed once, in parallel, streamed to disk, reused.

LiTS holds 130 volumes of 512 x 512 x 75-987 slices, about 50 GB as float32, so the
cohort is never held in memory: worker processes each load one case
(:func:`liverlib.data.load_case`), preprocess it (:func:`liverlib.transforms.preprocess_case`),
write its 96 x 96 uint8 slices and return a few numbers. The cache is then read
by :class:`SliceCache` and :class:`liverlib.data.dataset.SliceDataset` (about 9 KB a
slice: all LiTS training slices of one stage fit in a few hundred MB).

On-disk format
--------------
::

    CACHE_DIR/<key>/manifest.json
    CACHE_DIR/<key>/case-0007.npz
    ...

``<key>`` is 16 hex digits of the SHA-256 of the format version, the
preprocessing config (the content keys of the ``preprocess`` section: hu_window,
size, levels, equalize, negative_fraction, roi_margin_mm; not ``workers``,
which changes nothing in the output) and the folders that hold the source
files. Another config or another data folder therefore gets its own cache folder.
Within a folder each case carries the fingerprint of its source files (absolute
path, size and mtime_ns of the volume and of the segmentation): a case whose
files changed is rebuilt, a new case is added, and the others are reused.

``case-NNNN.npz`` is an uncompressed numpy ``.npz`` (``numpy.load`` reads it)
holding, as written by :func:`liverlib.transforms.preprocess_case`:

=============  ======================  =================================================
``stage1_x``   uint8 (n1, size, size)  windowed, resized, equalized slices (gray levels)
``stage1_y``   uint8 (n1, size, size)  liver mask {0, 1} (labels 1 and 2)
``stage1_z``   int64 (n1,)             plane index of each slice in the canonical volume
``stage2_x``   uint8 (n2, size, size)  the liver ROI of each slice with liver
``stage2_y``   uint8 (n2, size, size)  lesion mask {0, 1} (label 2) in that ROI
``stage2_z``   int64 (n2,)             plane indices
``roi``        int64 (6,)              row0, row1, col0, col1, rows, columns; -1 if no liver
``meta``       str (0-d)               JSON: case id, key, source fingerprint, statistics
=============  ======================  =================================================

Its zip entries carry a fixed date (1980-01-01), so two builds of the same input
give identical bytes. ``manifest.json`` holds the format version, the key, the
config and, per case, the file name, its size, the source fingerprint and the
statistics (slice counts, class balance, ROI); :meth:`SliceCache.stats` reads it.

Atomicity and resuming
----------------------
Each case file is written under a temporary name and renamed; the manifest is
written last. A build that is killed midway leaves complete case files and
possibly stray temporary files: the next build deletes the temporary files,
reuses every case file whose embedded ``meta`` matches its sources, builds the
rest and writes the manifest. One build at a time per cache folder.
"""

from __future__ import annotations

import concurrent.futures as cf
import hashlib
import inspect
import json
import multiprocessing
import warnings
import zipfile
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from liverlib.atomic import atomic_path, write_json
from liverlib.data import CaseFiles, load_case
from liverlib.errors import DataError
from liverlib.transforms import Roi, preprocess_case

__all__ = ["SliceCache", "build_cache", "cache_key", "normalize_config", "source_fingerprint"]

FORMAT_VERSION = 3  # 2: padding outside the field of view becomes air (preprocess.fill_padding); 3: stage 1 pads non-square slices to squares
MANIFEST = "manifest.json"
ARRAYS = ("stage1_x", "stage1_y", "stage1_z", "stage2_x", "stage2_y", "stage2_z", "roi")
_ZIP_DATE = (1980, 1, 1, 0, 0, 0)  # the earliest date a zip entry can carry: no build time in the bytes
_CONTENT_KEYS = ("hu_window", "size", "levels", "equalize", "negative_fraction", "roi_margin_mm")
_DEFAULTS = {k: inspect.signature(preprocess_case).parameters[k].default for k in _CONTENT_KEYS}


# --------------------------------------------------------------------------- keys


def normalize_config(preprocess_cfg: dict | None) -> dict:
    """The content keys of a ``preprocess`` config section, with defaults and plain types.

    ``workers`` is accepted and dropped (it changes how fast the cache is built,
    not what is in it). Any other unknown key is a ``ValueError``.
    """
    cfg = dict(preprocess_cfg or {})
    cfg.pop("workers", None)
    unknown = sorted(set(cfg) - set(_CONTENT_KEYS))
    if unknown:
        raise ValueError(f"unknown preprocess key(s) {', '.join(unknown)}; known: {', '.join(_CONTENT_KEYS)}, workers")
    out = {**_DEFAULTS, **cfg}
    return {
        "hu_window": [float(v) for v in out["hu_window"]],
        "size": int(out["size"]),
        "levels": int(out["levels"]),
        "equalize": bool(out["equalize"]),
        "negative_fraction": float(out["negative_fraction"]),
        "roi_margin_mm": float(out["roi_margin_mm"]),
    }


def source_fingerprint(files: CaseFiles) -> dict:
    """Absolute path, size and mtime_ns of a case's volume and segmentation."""

    def one(path: Path | None) -> list | None:
        if path is None:
            return None
        path = Path(path).absolute()
        try:
            st = path.stat()
        except OSError:
            raise DataError("file not found", path) from None
        return [str(path), int(st.st_size), int(st.st_mtime_ns)]

    return {"image": one(files.image), "label": one(files.label)}


def cache_key(preprocess_cfg: dict | None, cases: Iterable[CaseFiles]) -> str:
    """16 hex digits naming the cache folder of a config and a data folder."""
    folders = sorted({str(Path(p).absolute().parent) for c in cases for p in (c.image, c.label) if p is not None})
    blob = json.dumps(
        {"format": FORMAT_VERSION, "config": normalize_config(preprocess_cfg), "folders": folders},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _case_file(case_id: int) -> str:
    return f"case-{int(case_id):04d}.npz"


# --------------------------------------------------------------------------- one case


def _write_npz(path: Path, arrays: dict[str, np.ndarray]) -> int:
    """Write an uncompressed, byte-reproducible .npz atomically; return its size."""
    with atomic_path(path) as tmp:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
            for name, array in arrays.items():
                info = zipfile.ZipInfo(f"{name}.npy", date_time=_ZIP_DATE)
                info.external_attr = 0o644 << 16
                with zf.open(info, "w", force_zip64=True) as f:
                    np.lib.format.write_array(f, np.asarray(array, order="C"), allow_pickle=False)
    return path.stat().st_size


def _statistics(arrays: dict[str, np.ndarray], case) -> dict:
    y1, y2 = arrays["stage1_y"], arrays["stage2_y"]
    roi = Roi.from_array(arrays["roi"])
    return {
        "planes": int(case.image.shape[0]),
        "shape": [int(s) for s in case.image.shape],
        "spacing": [round(float(s), 6) for s in case.spacing],
        "stage1_slices": int(y1.shape[0]),
        "stage1_liver_slices": int(y1.reshape(y1.shape[0], -1).any(axis=1).sum()),
        "stage1_liver_fraction": round(float(y1.mean()) if y1.size else 0.0, 6),
        "stage2_slices": int(y2.shape[0]),
        "stage2_lesion_slices": int(y2.reshape(y2.shape[0], -1).any(axis=1).sum()),
        "stage2_lesion_fraction": round(float(y2.mean()) if y2.size else 0.0, 6),
        "roi": None if roi is None else [roi.row0, roi.row1, roi.col0, roi.col1],
    }


def _build_case(files: CaseFiles, path: Path, key: str, config: dict, source: dict) -> tuple[str, Any]:
    """Worker: load, preprocess and write one case; return only small numbers.

    A ``DataError`` is returned rather than raised so that it crosses the process
    boundary with its file name intact; the parent raises it.
    """
    try:
        case = load_case(files)
    except DataError as exc:
        return "error", (exc.reason, None if exc.path is None else str(exc.path))
    arrays = preprocess_case(case, **config)
    stats = _statistics(arrays, case)
    del case  # the volume is the big thing: free it before writing
    meta = {"case": int(files.case_id), "key": key, "source": source, "stats": stats}
    arrays["meta"] = np.array(json.dumps(meta, sort_keys=True))
    size = _write_npz(path, arrays)
    return "ok", {"stats": stats, "size": size}


def _read_meta(path: Path) -> dict | None:
    """The ``meta`` of a case file, or None if it is missing or unreadable."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            return json.loads(str(npz["meta"]))
    except Exception:  # a foreign or damaged file is simply rebuilt
        return None


# --------------------------------------------------------------------------- build


def build_cache(
    cases: Sequence[CaseFiles],
    cache_dir: str | Path,
    preprocess_cfg: dict | None = None,
    workers: int | None = None,
    progress: bool = True,
) -> "SliceCache":
    """Build (or update, or just open) the slice cache of ``cases``.

    Parameters
    ----------
    cases : sequence of CaseFiles
        Labelled cases, e.g. ``liverlib.data.discover(data_dir)``.
    cache_dir : str or Path
        Parent folder; the cache goes to ``cache_dir/<key>/`` (see the module doc).
    preprocess_cfg : dict, optional
        The ``preprocess`` config section (defaults: profiles.yaml ``base``).
    workers : int, optional
        Worker processes; default ``preprocess_cfg["workers"]`` or 2. At most
        ``2 * workers`` cases are in flight, each worker holds one volume at a
        time and gives its memory back after it (see ``_init_worker``), so
        memory is bounded by ``workers`` volumes whatever the cohort size. 0 or
        1 builds in this process.
    progress : bool
        Show a tqdm progress bar over cases.

    Returns
    -------
    SliceCache
        Over ``cases``; its ``built`` attribute lists the case ids built by this call
        (the others were reused).

    Raises
    ------
    DataError
        For a case whose file cannot be used, naming the file. The cases finished
        before it stay on disk, so the next build resumes.
    """
    from tqdm.auto import tqdm

    cases = list(cases)
    config = normalize_config(preprocess_cfg)
    if workers is None:
        workers = int((preprocess_cfg or {}).get("workers", 2))
    ids = [int(c.case_id) for c in cases]
    if len(set(ids)) != len(ids):
        raise ValueError("build_cache got the same case id twice")
    for files in cases:
        if files.label is None:
            raise DataError("the slice cache is built from labelled cases; this volume has no segmentation", files.image)
    key = cache_key(config, cases)
    folder = Path(cache_dir) / key
    folder.mkdir(parents=True, exist_ok=True)
    for stray in folder.glob(".*.tmp*"):  # left by a killed build
        stray.unlink(missing_ok=True)

    manifest = _read_manifest(folder) or {}
    entries: dict[str, dict] = dict(manifest.get("cases", {})) if manifest.get("key") == key else {}
    todo: list[tuple[CaseFiles, dict]] = []
    for files in cases:
        source = source_fingerprint(files)
        name = _case_file(files.case_id)
        entry = entries.get(str(files.case_id))
        path = folder / name
        if entry and entry.get("source") == source and path.is_file() and path.stat().st_size == entry.get("size"):
            continue
        meta = _read_meta(path) if path.is_file() else None
        if meta and meta.get("key") == key and meta.get("source") == source:
            entries[str(files.case_id)] = _entry(name, path.stat().st_size, source, meta["stats"])
            continue
        entries.pop(str(files.case_id), None)
        todo.append((files, source))

    bar = tqdm(total=len(cases), initial=len(cases) - len(todo), desc="slice cache", unit="case", disable=not progress)
    built: list[int] = []
    try:
        for files, source, result in _run(todo, folder, key, config, workers):
            status, value = result
            if status == "error":
                reason, path = value
                raise DataError(reason, path)
            entries[str(files.case_id)] = _entry(_case_file(files.case_id), value["size"], source, value["stats"])
            built.append(int(files.case_id))
            bar.update(1)
    finally:
        bar.close()
        # Last, and also when a case fails: the manifest then lists the finished cases.
        new = {"format": FORMAT_VERSION, "key": key, "config": config,
               "cases": {k: entries[k] for k in sorted(entries, key=int)}}  # fmt: skip
        if new != manifest:
            write_json(folder / MANIFEST, new)
    cache = SliceCache(folder, ids)
    cache.built = tuple(sorted(built))
    return cache


def _entry(name: str, size: int, source: dict, stats: dict) -> dict:
    # Sorted statistics: an entry read back from a case file's JSON meta is then
    # identical, byte for byte in the manifest, to one made by a fresh build.
    return {"file": name, "size": int(size), "source": source, **dict(sorted(stats.items()))}


def _run(todo, folder: Path, key: str, config: dict, workers: int):
    """Yield ``(files, source, result)`` as cases finish, at most ``2 * workers`` in flight."""
    if workers <= 1 or len(todo) <= 1:
        for files, source in todo:
            yield files, source, _build_case(files, folder / _case_file(files.case_id), key, config, source)
        return
    context = multiprocessing.get_context(_start_method())
    pending: dict[cf.Future, tuple[CaseFiles, dict]] = {}
    queue = iter(todo)
    with cf.ProcessPoolExecutor(max_workers=workers, mp_context=context, initializer=_init_worker) as pool:
        try:
            while True:
                for files, source in queue:
                    with warnings.catch_warnings():  # Python >= 3.12 warns on fork with threads; see _start_method
                        warnings.filterwarnings("ignore", "This process .* is multi-threaded", DeprecationWarning)
                        future = pool.submit(_build_case, files, folder / _case_file(files.case_id), key, config, source)
                    pending[future] = (files, source)
                    if len(pending) >= 2 * workers:
                        break
                if not pending:
                    return
                done, _ = cf.wait(pending, return_when=cf.FIRST_COMPLETED)
                for future in done:
                    files, source = pending.pop(future)
                    yield files, source, future.result()
        finally:
            for future in pending:
                future.cancel()


_M_MMAP_THRESHOLD = -3  # glibc mallopt parameter (malloc.h)


def _init_worker() -> None:
    """Worker initializer: one BLAS thread, and big arrays given back to the OS when freed.

    The workers already use every core between them; nested BLAS threads only
    oversubscribe them (the build was ~30 % slower). And glibc raises its mmap
    threshold each time a large block is freed, after which volume-sized
    arrays come from the heap and stay there, fragmented: a worker's memory
    crept up over its first cases. A fixed threshold keeps every array above
    1 MiB in its own mapping, returned when freed, so a worker's peak is that
    of its largest case, whatever the cohort size.
    """
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").mallopt(_M_MMAP_THRESHOLD, 1 << 20)
    except (OSError, AttributeError):  # not glibc (macOS, musl, Windows): nothing to tune
        pass


def _start_method() -> str:
    """fork on Linux, spawn where fork is not the platform's way (macOS, Windows).

    fork starts the workers at once and works from a notebook or from a script
    without an ``if __name__ == "__main__"`` guard, which spawn would run again in
    each worker. The workers only use numpy, nibabel and zlib, none of the
    threads a parent that loaded TensorFlow may run.
    """
    import sys

    return "fork" if sys.platform.startswith("linux") else "spawn"


def _read_manifest(folder: Path) -> dict | None:
    try:
        return json.loads((folder / MANIFEST).read_text())
    except (OSError, ValueError):
        return None


# --------------------------------------------------------------------------- reading


class SliceCache:
    """A built slice cache (one ``cache_dir/<key>`` folder), over a set of cases.

    Parameters
    ----------
    path : str or Path
        The ``cache_dir/<key>`` folder (``build_cache(...).path``).
    case_ids : sequence of int, optional
        The cases to expose; default every case of the manifest.

    Attributes
    ----------
    path : Path
    key : str
    config : dict
        The preprocessing config the slices were made with.
    case_ids : list of int
    built : tuple of int
        Cases built by the :func:`build_cache` call that returned this object.
    """

    def __init__(self, path: str | Path, case_ids: Iterable[int] | None = None):
        self.path = Path(path)
        manifest = _read_manifest(self.path)
        if manifest is None or manifest.get("format") != FORMAT_VERSION:
            raise DataError("not a complete slice cache (no readable manifest.json); run build_cache", self.path)
        self.key: str = manifest["key"]
        self.config: dict = manifest["config"]
        self._entries = {int(k): v for k, v in manifest["cases"].items()}
        ids = sorted(self._entries) if case_ids is None else sorted(int(i) for i in case_ids)
        missing = [i for i in ids if i not in self._entries]
        if missing:
            raise DataError(f"case(s) {missing} are not in this slice cache", self.path)
        self.case_ids: list[int] = ids
        self.built: tuple[int, ...] = ()

    def __repr__(self) -> str:
        return f"SliceCache({str(self.path)!r}, {len(self.case_ids)} cases)"

    def _file(self, case_id: int) -> Path:
        if int(case_id) not in self._entries:
            raise ValueError(f"case {case_id} is not in the slice cache {self.path}")
        return self.path / self._entries[int(case_id)]["file"]

    def arrays(self, case_id: int) -> dict[str, np.ndarray]:
        """Every array of one case (``stage1_x`` ... ``roi``), see the module doc."""
        path = self._file(case_id)
        try:
            with np.load(path, allow_pickle=False) as npz:
                return {name: npz[name] for name in ARRAYS}
        except (OSError, ValueError, KeyError, zipfile.BadZipFile) as exc:
            raise DataError(f"damaged slice-cache file ({type(exc).__name__}); rebuild the cache", path) from None

    def roi(self, case_id: int) -> Roi | None:
        """The stage-2 ROI of a case (None if it has no liver)."""
        return Roi.from_array(self.arrays(case_id)["roi"])

    def load(self, case_ids: Iterable[int] | None = None, stage: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """The slices of some cases for one stage, concatenated in case order.

        Parameters
        ----------
        case_ids : iterable of int, optional
            Default: this cache's ``case_ids``.
        stage : {1, 2}
            1: whole slices and liver masks; 2: liver ROIs and lesion masks.

        Returns
        -------
        x, y : ndarray of uint8, shape (n, size, size)
            Gray levels ``0..levels-1`` and masks {0, 1}.
        """
        if stage not in (1, 2):
            raise ValueError(f"stage must be 1 (liver) or 2 (lesion), got {stage!r}")
        ids = self.case_ids if case_ids is None else [int(i) for i in case_ids]
        missing = [i for i in ids if i not in self._entries]
        if missing:
            raise ValueError(f"case(s) {missing} are not in the slice cache {self.path}")
        counts = [int(self._entries[i][f"stage{stage}_slices"]) for i in ids]
        size = int(self.config["size"])
        x = np.empty((sum(counts), size, size), np.uint8)
        y = np.empty((sum(counts), size, size), np.uint8)
        start = 0
        for case_id, count in zip(ids, counts):  # filled in place: never two copies of the set
            arrays = self.arrays(case_id)
            x[start : start + count] = arrays[f"stage{stage}_x"]
            y[start : start + count] = arrays[f"stage{stage}_y"]
            start += count
        return x, y

    def stats(self) -> "pandas.DataFrame":  # noqa: F821
        """One row per case: slices kept per stage and class balance.

        Columns: case, planes, stage1_slices, stage1_liver_slices,
        stage1_liver_fraction (share of liver pixels in the stage-1 masks),
        stage2_slices, stage2_lesion_slices, stage2_lesion_fraction, roi, shape, spacing.
        """
        import pandas as pd

        columns = [
            "case", "planes", "stage1_slices", "stage1_liver_slices", "stage1_liver_fraction",
            "stage2_slices", "stage2_lesion_slices", "stage2_lesion_fraction", "roi", "shape", "spacing",
        ]  # fmt: skip
        rows = [{"case": i, **{c: self._entries[i].get(c) for c in columns[1:]}} for i in self.case_ids]
        return pd.DataFrame(rows, columns=columns)
