"""On-the-fly data augmentation of 2-D slices (the paper's step iv, section 3.2).

The paper augments the training slices by "randomly rotat[ing] the image by a
certain angle, transform[ing] in such a way that the center vertical axis of the
image does not change [a left-right mirror], reduc[ing] the image according to
the specified scale factor, and horizontal and vertical movement". Here each
sample gets one random affine map composed of exactly these four parts, about the
image centre::

    output = centre + shift + R(angle) * zoom * F * (input - centre)

``F`` mirrors the columns (with probability 1/2), ``R`` rotates by an angle
drawn in ``[-rotation_deg, rotation_deg]``, ``zoom`` is drawn in ``scale`` and the
shift in ``[-shift, shift]`` times the image size, for rows and columns
independently. The image and its mask always get the same map: the image is
sampled bilinearly, a binary mask bilinearly then thresholded at 0.5 (so it
stays aligned with the image and keeps its values 0 and 1; a multi-label mask by
nearest neighbour),
and whatever comes from outside the image is 0 (air after equalization, background
in the mask).

Augmentation is applied when a batch is drawn and never stored; it is driven by
the ``numpy.random.Generator`` passed in, so a seed reproduces it. It is
vectorized over the batch (one gather for all samples), so it costs far less than
a training step.
"""

from __future__ import annotations

import functools
import threading
from typing import Sequence

import numpy as np

__all__ = ["augment_batch", "random_affines", "warp_batch"]


def random_affines(
    n: int,
    shape: tuple[int, int],
    rng: np.random.Generator,
    rotation_deg: float = 15.0,
    flip: bool = True,
    scale: Sequence[float] = (0.9, 1.1),
    shift: float = 0.1,
) -> np.ndarray:
    """Draw ``n`` random forward affine maps, (row, column) pixel coordinates.

    Returns
    -------
    ndarray of float64, shape (n, 2, 3)
        ``[A | t]`` with ``output = A @ input + t`` for each sample.
    """
    if rotation_deg < 0 or shift < 0:
        raise ValueError(f"rotation_deg and shift must be >= 0, got {rotation_deg!r} and {shift!r}")
    low, high = (float(s) for s in scale)
    if not 0 < low <= high:
        raise ValueError(f"scale must be a range (low, high) with 0 < low <= high, got {scale!r}")
    rows, cols = shape
    angle = np.deg2rad(rng.uniform(-rotation_deg, rotation_deg, n))
    zoom = rng.uniform(low, high, n)
    mirror = np.where(rng.random(n) < 0.5, -1.0, 1.0) if flip else np.ones(n)
    moves = rng.uniform(-shift, shift, (n, 2)) * np.array([rows, cols], dtype=np.float64)
    cos, sin = np.cos(angle), np.sin(angle)
    # R(angle) @ diag(1, mirror) * zoom, in (row, column) coordinates.
    a = np.empty((n, 2, 2))
    a[:, 0, 0], a[:, 0, 1] = cos * zoom, -sin * zoom * mirror
    a[:, 1, 0], a[:, 1, 1] = sin * zoom, cos * zoom * mirror
    centre = np.array([(rows - 1) / 2.0, (cols - 1) / 2.0])
    t = centre + moves - a @ centre
    return np.concatenate([a, t[:, :, None]], axis=2)


@functools.lru_cache(maxsize=8)
def _grid(rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    r, c = np.meshgrid(np.arange(rows, dtype=np.float32), np.arange(cols, dtype=np.float32), indexing="ij")
    return r.ravel(), c.ravel()


_scratch_store = threading.local()


def _scratch(name: str, shape: tuple[int, ...], dtype, zeros: bool = False) -> np.ndarray:
    """This thread's reusable buffer ``name``, reallocated only when the shape or dtype changes.

    A batch's temporaries are megabytes each; TensorFlow's tf.data sets glibc's
    ``M_TRIM_THRESHOLD`` to 128 kB, after which every fresh one is new memory to
    fault in, which tripled the cost of augmenting a batch during training.
    ``zeros`` zero-fills a new buffer (the padded border stays zero).
    """
    store = _scratch_store.__dict__.setdefault("buffers", {})
    buffer = store.get(name)
    if buffer is None or buffer.shape != shape or buffer.dtype != dtype:
        buffer = store[name] = np.zeros(shape, dtype) if zeros else np.empty(shape, dtype)
    return buffer


def _source_coordinates(affines: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel, the input (row, column) it reads: the inverse map, float32 scratch buffers."""
    inv = np.linalg.inv(affines[:, :, :2])
    offset = -(inv @ affines[:, :, 2:])[:, :, 0]
    inv, offset = inv.astype(np.float32), offset.astype(np.float32)
    gr, gc = _grid(rows, cols)
    shape = (len(affines), rows * cols)
    term = _scratch("term", shape, np.float32)
    coordinates = []
    for axis, name in ((0, "r"), (1, "c")):  # inv[axis, 0] * row + inv[axis, 1] * column + offset[axis]
        out = np.multiply(inv[:, axis, 0, None], gr, out=_scratch(name, shape, np.float32))
        out += np.multiply(inv[:, axis, 1, None], gc, out=term)
        out += offset[:, axis, None]
        coordinates.append(out)
    return coordinates[0], coordinates[1]


def _bilinear_taps(r: np.ndarray, c: np.ndarray, rows: int, cols: int):
    """Where and how to read float (row, column) positions bilinearly; 0 outside the image.

    The slices are read from a copy padded with zeros (one row/column before, two
    after: :func:`_bilinear`), and the positions are clipped to [-1, size], so
    every read outside the image lands on the zero border and the edge fades to 0
    as with a constant-0 boundary. One computation serves an image and its mask.
    ``r`` and ``c`` are overwritten (they become ``fr`` and ``fc``).

    Returns
    -------
    index : intp ndarray, shape (n, rows * columns)
        Flat index of each position's top-left neighbour in the padded stack.
    fr, fc : float32 ndarray, same shape
        The fractional row and column offsets (interpolation weights).
    """
    n, width = r.shape[0], cols + 3
    index = _scratch("index", r.shape, np.intp)
    column = _scratch("column", r.shape, np.intp)
    whole = _scratch("floor", r.shape, np.float32)
    for position, size, target in ((r, rows, index), (c, cols, column)):
        np.clip(position, -1.0, float(size), out=position)
        np.floor(position, out=whole)
        position -= whole
        np.copyto(target, whole, casting="unsafe")
    index *= width
    index += column
    index += (np.arange(n, dtype=np.intp) * (rows + 3) * width + width + 1)[:, None]
    return index, r, c


def _bilinear(stack: np.ndarray, index: np.ndarray, fr: np.ndarray, fc: np.ndarray, out: np.ndarray) -> np.ndarray:
    """Sample each slice at the positions of :func:`_bilinear_taps` into ``out`` (float32; 0 outside the image).

    One flat index serves the four neighbours through shifted views of the data.
    """
    n, rows, cols = stack.shape
    width = cols + 3
    padded = _scratch("padded", (n, rows + 3, width), np.float32, zeros=True)
    padded[:, 1 : rows + 1, 1 : cols + 1] = stack  # the zero border is never written
    flat = padded.reshape(-1)
    taps = [np.take(flat[shift:], index, out=_scratch(f"tap{shift}", index.shape, np.float32), mode="clip")
            for shift in (0, 1, width, width + 1)]  # fmt: skip
    top, right, bottom, bottom_right = taps
    # top + fc * (right - top), the same below, then between the two rows
    right -= top
    right *= fc
    top += right
    bottom_right -= bottom
    bottom_right *= fc
    bottom += bottom_right
    bottom -= top
    bottom *= fr
    np.add(top, bottom, out=out.reshape(index.shape))
    return out


def _nearest(masks: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Sample each mask at the nearest pixel of float (row, column) positions; 0 outside."""
    n, rows, cols = masks.shape
    rn = np.clip(np.floor(r + 0.5), -1, rows).astype(np.int64) + 1
    cn = np.clip(np.floor(c + 0.5), -1, cols).astype(np.int64) + 1
    padded = np.zeros((n, rows + 2, cols + 2), masks.dtype)
    padded[:, 1:-1, 1:-1] = masks
    base = (np.arange(n, dtype=np.int64) * (rows + 2) * (cols + 2))[:, None]
    return padded.reshape(-1)[base + rn * (cols + 2) + cn].reshape(n, rows, cols)


def warp_batch(images: np.ndarray, masks: np.ndarray | None, affines: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """Apply one forward affine map per sample to images and their masks.

    Images are sampled bilinearly. A binary mask (values 0 and 1 only) is sampled
    bilinearly too and thresholded at 0.5, so its boundary is exactly where the
    bilinear image of ``100 * mask`` crosses 50: image and mask stay aligned to
    the pixel and the edge stays smooth under rotation. Any other mask (several
    labels) is sampled by nearest neighbour, which never creates a new value.

    Parameters
    ----------
    images : ndarray, shape (n, rows, columns)
    masks : ndarray, shape (n, rows, columns), or None
    affines : ndarray, shape (n, 2, 3), from :func:`random_affines`

    Returns
    -------
    images : float32 ndarray, shape (n, rows, columns)
    masks : ndarray of the masks' dtype, or None
    """
    n, rows, cols = images.shape
    r, c = _source_coordinates(affines, rows, cols)
    binary = masks is not None and masks.size and masks.min() >= 0 and masks.max() <= 1
    binary = binary and np.array_equal(masks, masks.astype(bool))
    labels = _nearest(masks, r, c) if masks is not None and not binary else None  # before the taps overwrite r, c
    taps = _bilinear_taps(r, c, rows, cols)
    out = _bilinear(images, *taps, out=np.empty((n, rows, cols), np.float32))
    if binary:
        labels = (_bilinear(masks, *taps, out=_scratch("mask", (n, rows, cols), np.float32)) > 0.5).astype(masks.dtype)
    return out, labels


def augment_batch(
    images: np.ndarray,
    masks: np.ndarray,
    rng: np.random.Generator,
    rotation_deg: float = 15.0,
    flip: bool = True,
    scale: Sequence[float] = (0.9, 1.1),
    shift: float = 0.1,
    enabled: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """Randomly rotate, mirror, zoom and shift a batch of slices and their masks.

    Parameters
    ----------
    images : ndarray, shape (n, rows, columns) or (n, rows, columns, 1)
    masks : ndarray, same shape as ``images``
    rng : numpy.random.Generator
        The only source of randomness: the same generator state gives the same batch.
    rotation_deg : float
        Angles are drawn uniformly in ``[-rotation_deg, rotation_deg]`` degrees.
    flip : bool
        Mirror left-right (about the vertical centre axis) with probability 1/2.
    scale : (float, float)
        Zoom factors are drawn uniformly in this range (< 1 shrinks).
    shift : float
        Shifts are drawn uniformly in ``[-shift, shift]`` times the size, per axis.
    enabled : bool
        False returns the inputs unchanged (the ``augment.enabled`` config key).

    Returns
    -------
    images : ndarray, same shape; float32 for float input, the input dtype (rounded)
        for integer input.
    masks : ndarray, same shape and dtype as ``masks``, with no new values.
    """
    images, masks = np.asarray(images), np.asarray(masks)
    if images.shape != masks.shape:
        raise ValueError(f"images {images.shape} and masks {masks.shape} must have the same shape")
    channel = images.ndim == 4
    if channel and images.shape[-1] != 1 or images.ndim not in (3, 4):
        raise ValueError(f"expected (n, rows, columns) or (n, rows, columns, 1) arrays, got {images.shape}")
    if not enabled or images.shape[0] == 0:
        return images, masks
    x, y = (images[..., 0], masks[..., 0]) if channel else (images, masks)
    affines = random_affines(x.shape[0], x.shape[1:], rng, rotation_deg, flip, scale, shift)
    out_x, out_y = warp_batch(x, y, affines)
    if images.dtype.kind in "iu":
        info = np.iinfo(images.dtype)
        out_x = np.clip(np.rint(out_x), info.min, info.max).astype(images.dtype)
    if channel:
        out_x, out_y = out_x[..., None], out_y[..., None]
    return out_x, out_y
