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


def _source_coordinates(affines: np.ndarray, rows: int, cols: int) -> tuple[np.ndarray, np.ndarray]:
    """For every output pixel, the input (row, column) it reads: the inverse map, float32."""
    inv = np.linalg.inv(affines[:, :, :2])
    offset = -(inv @ affines[:, :, 2:])[:, :, 0]
    inv, offset = inv.astype(np.float32), offset.astype(np.float32)
    gr, gc = _grid(rows, cols)
    r = inv[:, 0, 0, None] * gr + inv[:, 0, 1, None] * gc + offset[:, 0, None]
    c = inv[:, 1, 0, None] * gr + inv[:, 1, 1, None] * gc + offset[:, 1, None]
    return r, c


def _bilinear(stack: np.ndarray, r: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Sample each slice at float (row, column) positions; 0 outside the image.

    The slices are padded with zeros (one row/column before, two after) and the
    positions clipped to [-1, size], so that every read outside the image lands on
    the zero border and the edge fades to 0 as with a constant-0 boundary. One
    flat index serves the four neighbours through shifted views of the data.
    """
    n, rows, cols = stack.shape
    width = cols + 3
    padded = np.zeros((n, rows + 3, width), np.float32)
    padded[:, 1 : rows + 1, 1 : cols + 1] = stack
    flat = padded.reshape(-1)
    r = np.clip(r, -1.0, float(rows))
    c = np.clip(c, -1.0, float(cols))
    r0, c0 = np.floor(r), np.floor(c)
    fr, fc = r - r0, c - c0
    base = (np.arange(n, dtype=np.int64) * (rows + 3) * width + width + 1)[:, None]
    index = base + r0.astype(np.int64) * width + c0.astype(np.int64)
    v00, v01 = flat[index], flat[1:][index]
    v10, v11 = flat[width:][index], flat[width + 1 :][index]
    top = v00 + fc * (v01 - v00)
    bottom = v10 + fc * (v11 - v10)
    return (top + fr * (bottom - top)).reshape(n, rows, cols)


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
    out = _bilinear(images, r, c)
    if masks is None:
        return out, None
    if masks.size and masks.min() >= 0 and masks.max() <= 1 and np.array_equal(masks, masks.astype(bool)):
        return out, (_bilinear(masks, r, c) > 0.5).astype(masks.dtype)
    rn = np.clip(np.floor(r + 0.5), -1, rows).astype(np.int64) + 1
    cn = np.clip(np.floor(c + 0.5), -1, cols).astype(np.int64) + 1
    padded = np.zeros((n, rows + 2, cols + 2), masks.dtype)
    padded[:, 1:-1, 1:-1] = masks
    base = (np.arange(n, dtype=np.int64) * (rows + 2) * (cols + 2))[:, None]
    return out, padded.reshape(-1)[base + rn * (cols + 2) + cn].reshape(n, rows, cols)


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
