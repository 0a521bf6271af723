"""The phantoms' scanner: field of view, slice spacing, contrast phase, noise, blur, padding and file orientation.

The scanner is drawn per case from its own generator, after the patient and
before the lesions; none of its draws depends on ``size`` or ``n_slices``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from liverlib.data.phantoms.anatomy import _Anatomy
from liverlib.data.phantoms.tissues import PHASES, TISSUES, _hu_table

if TYPE_CHECKING:
    from liverlib.data.phantoms.cohort import Phantom

PADDING_VALUES = (None, -1024, -2048, -3024, 0)  # None: the field covers the whole image

# stored orientations and how often they are drawn (the LiTS files vary)
_AXCODES = (
    (("R", "A", "S"), 0.2),
    (("L", "P", "S"), 0.2),
    (("L", "A", "S"), 0.15),
    (("R", "P", "S"), 0.1),
    (("L", "P", "I"), 0.1),
    (("R", "A", "I"), 0.1),
    (("L", "A", "I"), 0.08),
    (("R", "P", "I"), 0.07),
)
_SLICE_SPACINGS = (1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)


@dataclass
class _Scan:
    """The scanner of one case: scanned range (standard frame), grid, contrast and image quality."""

    phase: str  # one of PHASES
    z_bot: float  # scanned range, mm in the standard frame
    z_top: float
    dz: float  # slice spacing, mm
    n: int  # number of planes
    offset_x: float  # body offsets from the field's centre, mm
    offset_y: float
    fov: float  # field of view, mm
    px: float  # pixel size, mm
    noise_sigma: float  # HU, after the PSF
    psf_mm: float
    padding: float | None  # value outside the circular field, or None
    intercept: float  # rescale intercept of the stored file
    axcodes: tuple  # stored orientation
    table_z: float
    oral: bool  # oral contrast in the bowel
    hu: dict  # nominal HU per tissue, see tissues._hu_table


def _draw_scan(rng, anat: _Anatomy, scale, liver_range, size: int, n_slices: int | None) -> _Scan:
    """Draw the scanner of one case; the scanned range covers the liver (``liver_range``: bottom, top)."""
    liver_bottom, liver_top = liver_range
    phase = PHASES[rng.choice(3, p=[0.2, 0.2, 0.6])]
    z_top = rng.uniform(max(10.0, liver_top + 6.0), 60.0)
    z_bot = max(liver_bottom - rng.uniform(10.0, 130.0), -320.0)
    coverage = (z_top - z_bot) * scale[0]
    # (always drawn, so that the other draws do not depend on n_slices)
    options = [s for s in _SLICE_SPACINGS if 40 <= coverage / s <= 150] or [coverage / 100.0]
    dz = float(rng.choice(options))
    n = int(round(coverage / dz))
    if n_slices is not None:
        n = int(n_slices)
        dz = round(coverage / n, 3)
    # field of view: the body's width times a margin, and the whole outline inside the circle
    outline_y, outline_x = _outline(anat, np.linspace(z_bot, z_top, 12), scale)
    offset_x = rng.uniform(-12.0, 12.0)
    offset_y = rng.uniform(-15.0, 25.0)
    width = float(outline_x.max() - outline_x.min())
    reach = float(np.sqrt((outline_x + offset_x) ** 2 + (outline_y + offset_y) ** 2).max())
    fov = float(np.clip(max(width * rng.uniform(1.03, 1.2), 2 * reach + 10.0), 300.0, 450.0))
    if 2 * reach + 12.0 > fov:  # a very large patient: centre it
        offset_x = offset_y = 0.0
    px = fov / size
    noise_sigma = float(rng.uniform(6.0, 22.0))
    psf_mm = float(rng.uniform(0.6, 1.0))
    padding = PADDING_VALUES[rng.choice(len(PADDING_VALUES), p=[0.3, 0.25, 0.2, 0.15, 0.1])]
    intercept = -1024.0 if rng.random() < 0.2 else 0.0
    ax_i = rng.choice(len(_AXCODES), p=[p for _, p in _AXCODES])
    axcodes = _AXCODES[ax_i][0]
    table_z = float(rng.uniform(-900.0, -100.0))
    oral = bool(rng.random() < 0.15)
    hu = _hu_table(rng, phase, oral)
    return _Scan(phase, z_bot, z_top, dz, n, offset_x, offset_y, fov, px, noise_sigma, psf_mm, padding, intercept,
                 axcodes, table_z, oral, hu)


def _outline(anat: _Anatomy, z, scale) -> tuple[np.ndarray, np.ndarray]:
    """Points (y, x) in mm on the skin outline at the planes ``z`` (standard frame), and the table."""
    theta = np.linspace(-np.pi, np.pi, 181)
    ray_y, ray_x = -np.cos(theta) * 400.0, np.sin(theta) * 400.0
    body = anat.body
    out_y, out_x = [], []
    for zi in z:
        # layers() works on a (y, x) grid: its diagonal holds the rays' skin radii
        r = np.diagonal(body.layers(np.array([zi]), ray_y, ray_x)[3][0])
        out_y.append(np.minimum(-np.cos(theta) * r, body.back(np.array([zi]))[0]))
        out_x.append(np.sin(theta) * r)
    table = float(body.back(np.asarray(z)).max()) + 40.0
    y = np.concatenate(out_y + [np.array([table])]) * scale[1]
    x = np.concatenate(out_x + [np.array([0.0])]) * scale[2]
    return y, x


def _render_grid(scan: _Scan, scale, size: int):
    """The grid the noise-free anatomy is rendered on, in the standard frame.

    At most 256 pixels across and slices of at least ~1.6 mm: finer grids (512
    pixels, thin slices) are reached by upsampling by whole factors afterwards,
    so they cost little more than the default.

    Returns
    -------
    z, y, x : ndarray
        Cell centres (mm, standard frame).
    w : float
        Rendered pixel size in the standard frame (the partial-volume width).
    f_xy, f_z : int
        Upsampling factors in-plane and along z.
    """
    f_xy = max(1, int(np.ceil(size / 256)))
    f_z = max(1, int(round(1.6 / scan.dz))) if scan.dz < 1.2 else 1
    n_xy, n_z = -(-size // f_xy), -(-scan.n // f_z)
    idx = (np.arange(n_xy, dtype=np.float64) * f_xy + (f_xy - 1) / 2.0) - (size - 1) / 2.0
    x_std = (idx * scan.px - scan.offset_x) / scale[2]
    y_std = (idx * scan.px - scan.offset_y) / scale[1]
    z_std = scan.z_bot + (np.arange(n_z, dtype=np.float64) * f_z + f_z / 2.0) * (scan.dz / scale[0])
    w = f_xy * scan.px / np.sqrt(scale[1] * scale[2])
    return z_std, y_std, x_std, w, f_xy, f_z


def _gauss_norm(sigma: float, truncate: float = 3.0) -> float:
    """Factor by which a 1-D Gaussian filter scales the std of white noise."""
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return float(np.sqrt((k * k).sum()))


def _apply_scanner(img: np.ndarray, tis: np.ndarray, scan: _Scan, f_z: int, rng_noise) -> np.ndarray:
    """Noise, PSF blur, integer HU in [-1024, 3071] and padding outside the circular field.

    ``tis`` gets the padding class in place; returns the new image.
    """
    size = img.shape[-1]
    sig_xy = max(scan.psf_mm / scan.px, 0.35)
    sig_z = 0.35 if f_z == 1 else 0.0  # upsampled planes are already smooth along z
    # white noise blurred by the PSF: correlated noise of standard deviation noise_sigma
    k_xy = _gauss_norm(sig_xy)
    k_z = _gauss_norm(sig_z) if sig_z else 1.0
    img += rng_noise.standard_normal(img.shape, dtype=np.float32) * np.float32(scan.noise_sigma / (k_xy * k_xy * k_z))
    img = ndimage.gaussian_filter(img, (sig_z, sig_xy, sig_xy), mode="nearest", truncate=3.0)
    np.rint(img, out=img)
    np.clip(img, -1024.0, 3071.0, out=img)
    if scan.padding is not None:
        idx = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        r2 = idx[:, None] ** 2 + idx[None, :] ** 2
        outside = r2 > (size / 2.0) ** 2
        img[:, outside] = scan.padding
        tis[:, outside] = TISSUES["padding"]
    return img


def _affine(phantom: Phantom) -> np.ndarray:
    """Stored affine for the phantom's axcodes; stored voxel axes (i, j, k) are (column, row, plane)."""
    direction = {"R": (0, 1.0), "L": (0, -1.0), "A": (1, 1.0), "P": (1, -1.0), "S": (2, 1.0), "I": (2, -1.0)}
    dz, dy, dx = phantom.spacing
    zooms = (dx, dy, dz)
    A = np.zeros((3, 3))
    for col, code in enumerate(phantom.axcodes):
        row, sign = direction[code]
        A[row, col] = sign * zooms[col]
    shape = np.array(phantom.image.shape[::-1], dtype=np.float64)
    table_z, ox, oy = phantom.meta.get("origin", (0.0, 0.0, 0.0))
    centre_world = np.array([-ox, -oy, table_z])  # RAS mm of the volume centre
    affine = np.eye(4)
    affine[:3, :3] = A
    affine[:3, 3] = centre_world - A @ ((shape - 1) / 2.0)
    return affine
