"""Training input pipeline over the slice cache, for any Keras backend.

:class:`SliceDataset` is a ``keras.utils.PyDataset``: plain numpy in, batches
out, so it feeds ``model.fit`` under TensorFlow, JAX or PyTorch alike (no
``tf.data`` needed). It yields ``(x, y)`` with ``x`` float32 gray levels scaled to
[0, 1] and ``y`` float32 masks {0, 1}, both shaped ``(batch, 96, 96, 1)``.

Memory: the uint8 slices of the selected cases are loaded once into memory
(:meth:`liverlib.data.cache.SliceCache.load`). A 96 x 96 slice with its mask is 18 KB,
so even all the stage-1 slices of the 117 training scans of a LiTS fold (about
25,000) take under 500 MB, while random access for shuffling stays free. The raw
volumes are never loaded here; they were streamed once when the cache was built.

Order and randomness: every batch is a pure function of ``(seed, epoch, index)``.
The slices are shuffled per epoch by a permutation drawn from ``seed`` and the
pass number, and each batch's augmentation draws from its own generator seeded by
``(seed, epoch, index)``. Prefetching threads (``workers > 1``) may compute batches
in any order and still give the same batches, so a run is reproducible. With
``steps_per_epoch > 0`` an epoch is that many full batches and consecutive epochs
walk on through the passes, so the whole set is seen even with short epochs.

Call ``model.fit(dataset, shuffle=False, ...)``: the dataset shuffles itself, and
Keras' own ``shuffle=True`` would reorder the batches with Python's global
``random``, outside this seed.

Foreground oversampling (``foreground_fraction > 0``, training only): that share
of every batch is drawn from the slices whose mask is not empty, walking through
their own seeded passes, and the rest from all slices, as nnU-Net does
(``oversample_foreground_percent``). Lesions cover ~0.4 % of the liver-ROI
pixels of the phantom cohort and ~1 % of LiTS's; without it a small network
settles on "no lesion anywhere" before it finds them.
"""

from __future__ import annotations

import threading
from typing import Iterable

import keras
import numpy as np

from liverlib.transforms.augment import augment_batch

__all__ = ["SliceDataset"]

_AUGMENT_KEYS = ("rotation_deg", "flip", "scale", "shift")


class SliceDataset(keras.utils.PyDataset):
    """Shuffled, augmented batches of one stage's slices.

    Parameters
    ----------
    source : SliceCache or (ndarray, ndarray)
        The slice cache, or in-memory ``(x, y)`` uint8 arrays of shape (n, size, size)
        (as :meth:`SliceCache.load` returns them).
    case_ids : iterable of int, optional
        The cases to draw from (a fold's training scans); default all of the cache.
        Ignored for arrays.
    stage : {1, 2}
        1 liver (whole slices), 2 lesion (liver ROIs).
    batch_size : int
    shuffle : bool
        Shuffle the slices every epoch (training); False keeps the cache order
        (validation).
    augment : dict or None
        The ``augment`` config section (``enabled``, ``rotation_deg``, ``flip``,
        ``scale``, ``shift``), applied on the fly to every batch; None or
        ``enabled: false`` for none (validation).
    seed : int
        Seed of the shuffling and the augmentation.
    steps_per_epoch : int
        Batches per epoch; 0 means one pass over the slices (the last batch may
        then be smaller).
    foreground_fraction : float
        Share of every batch drawn from slices with foreground (``y`` not empty),
        in [0, 1]; 0 (default) samples the slices uniformly. Only with ``shuffle``.
    levels : int, optional
        Number of gray levels, to scale ``x`` to [0, 1] as ``x / (levels - 1)``;
        default from the cache's config (256 for arrays).
    max_slices : int
        Keep at most this many slices, evenly spaced over the selected cases in
        cache order (a fixed, small validation set); 0 keeps all.
    workers, use_multiprocessing, max_queue_size
        Prefetching by Keras (``PyDataset``). Threads (``use_multiprocessing=False``)
        are enough: augmenting a batch costs a few percent of a training step
        (``pipeline_ratio`` in ``liverlib bench``).
    """

    def __init__(
        self,
        source,
        case_ids: Iterable[int] | None = None,
        stage: int = 1,
        batch_size: int = 32,
        shuffle: bool = True,
        augment: dict | None = None,
        seed: int = 0,
        steps_per_epoch: int = 0,
        foreground_fraction: float = 0.0,
        levels: int | None = None,
        max_slices: int = 0,
        workers: int = 1,
        use_multiprocessing: bool = False,
        max_queue_size: int = 10,
    ):
        super().__init__(workers=workers, use_multiprocessing=use_multiprocessing, max_queue_size=max_queue_size)
        if isinstance(source, tuple):
            x, y = (np.asarray(a) for a in source)
            levels = 256 if levels is None else levels
        else:
            x, y = source.load(case_ids, stage)
            levels = int(source.config["levels"]) if levels is None else levels
        if x.shape != y.shape or x.ndim != 3:
            raise ValueError(f"x {x.shape} and y {y.shape} must be the same (n, rows, columns) shape")
        if len(x) == 0:
            raise ValueError("no slices to train on: the selected cases have none for this stage")
        if int(max_slices) < 0:
            raise ValueError(f"max_slices must be >= 0 (0 keeps all), got {max_slices!r}")
        if 0 < int(max_slices) < len(x):
            keep = np.unique(np.linspace(0, len(x) - 1, int(max_slices)).round().astype(np.intp))
            x, y = x[keep], y[keep]
        if int(batch_size) < 1 or int(steps_per_epoch) < 0:
            raise ValueError(f"batch_size must be >= 1 and steps_per_epoch >= 0, got {batch_size!r}, {steps_per_epoch!r}")
        if not 0.0 <= float(foreground_fraction) <= 1.0:
            raise ValueError(f"foreground_fraction must be in [0, 1], got {foreground_fraction!r}")
        self.x, self.y = x, y
        # Positions of the foreground slices; oversampling needs shuffling and some foreground.
        self.foreground = np.flatnonzero(y.reshape(len(y), -1).any(axis=1))
        share = float(foreground_fraction) if shuffle and len(self.foreground) else 0.0
        self.foreground_per_batch = int(round(share * int(batch_size)))
        self.stage = stage
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.seed = int(seed)
        self.steps_per_epoch = int(steps_per_epoch)
        self.scale = np.float32(1.0 / (int(levels) - 1))
        augment = dict(augment or {})
        enabled = bool(augment.pop("enabled", bool(augment)))
        unknown = set(augment) - set(_AUGMENT_KEYS)
        if unknown:
            raise ValueError(f"unknown augment key(s) {sorted(unknown)}; known: enabled, {', '.join(_AUGMENT_KEYS)}")
        self.augment = augment if enabled else None
        self.epoch = 0
        self._orders: dict[int, np.ndarray] = {}
        self._lock = threading.Lock()

    def __len__(self) -> int:
        if self.steps_per_epoch:
            return self.steps_per_epoch
        return -(-len(self.x) // self.batch_size)

    def _order(self, pass_index: int, pool: int = 0) -> np.ndarray:
        """The slice order of one pass over the data (pool 0) or over its foreground slices (pool 1)."""
        with self._lock:
            order = self._orders.get((pool, pass_index))
            if order is None:
                n = self._pool_size(pool)
                if not self.shuffle:
                    order = np.arange(n)
                elif pool == 0:
                    order = np.random.default_rng([self.seed, pass_index]).permutation(n)
                else:
                    order = self.foreground[np.random.default_rng([self.seed, pass_index, 2]).permutation(n)]
                # keep memory flat: only the previous and the current pass of each pool
                self._orders = {k: v for k, v in self._orders.items() if k[0] != pool or k[1] >= pass_index - 1}
                self._orders[(pool, pass_index)] = order
            return order

    def _pool_size(self, pool: int) -> int:
        return len(self.x) if pool == 0 else len(self.foreground)

    def _walk(self, start: int, count: int, pool: int) -> np.ndarray:
        """``count`` slice indices from position ``start`` of a pool's endless sequence of passes."""
        passes, offsets = np.divmod(start + np.arange(count), self._pool_size(pool))
        return np.concatenate([self._order(int(p), pool)[offsets[passes == p]] for p in np.unique(passes)])

    def indices(self, index: int, epoch: int | None = None) -> np.ndarray:
        """Slice indices of batch ``index`` of ``epoch`` (default: the current epoch)."""
        epoch = self.epoch if epoch is None else int(epoch)
        if not 0 <= index < len(self):
            raise IndexError(f"batch {index} out of range (0..{len(self) - 1})")
        k = self.foreground_per_batch
        if not self.steps_per_epoch and not k:
            return self._order(epoch)[index * self.batch_size : (index + 1) * self.batch_size]
        step = epoch * len(self) + index  # batches before this one, over all epochs
        rest = self.batch_size - k
        parts = [self._walk(step * k, k, pool=1)] if k else []
        if rest:
            parts.append(self._walk(step * rest, rest, pool=0))
        return np.concatenate(parts)

    def __getitem__(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        epoch = self.epoch
        chosen = self.indices(index, epoch)
        x = self.x[chosen].astype(np.float32) * self.scale
        y = self.y[chosen].astype(np.float32)
        if self.augment is not None:
            rng = np.random.default_rng([self.seed, epoch, int(index), 1])
            x, y = augment_batch(x, y, rng, **self.augment)
        return x[..., None], y[..., None]

    def on_epoch_end(self) -> None:
        """Move to the next epoch: a new order (when shuffling) and new augmentation.

        Keras stops its prefetching threads before calling this, so no batch of
        the next epoch is computed with the old number. (``fit`` also calls it
        once when it resets its iterator before the first epoch, so there the
        first epoch trained is epoch 1; the sequence of calls is fixed, so runs
        stay reproducible.)
        """
        self.epoch += 1
