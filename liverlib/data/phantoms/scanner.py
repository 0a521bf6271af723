"""The phantoms' scanner: field of view, slices, contrast, noise, blur, artefacts, padding and file orientation.

The scanner is drawn per case from its own generator, after the patient and
before the lesions; none of its draws depends on ``size`` or ``n_slices``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
from scipy import fft, ndimage

from liverlib.data.phantoms.anatomy import _Anatomy
from liverlib.data.phantoms.shapes import _Field
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
# slice spacings (mm) of clinical reconstructions; a case keeps at most _MAX_PLANES planes
_SLICE_SPACINGS = (0.7, 0.75, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_MAX_PLANES = 200
_CROP_P = 0.25  # share of images cropped around the liver
_CUT_P = 0.15  # share of the others with the body cut by the field's edge (large patient, small field)
_BAND_MM = 10.0  # the artefact patterns change once per band of planes this thick
# LiTS (Bilic et al. 2023): 512 x 512 planes of 0.55-1.0 mm pixels, 0.7-5 mm apart, 74-987 planes a volume
LITS_PIXEL_MM = (0.55, 1.0)
LITS_PLANES = (74, 987)
LITS_SPACINGS = (0.7, 0.8, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0, 5.0)
_LITS_SPACING_P = (0.15, 0.15, 0.15, 0.05, 0.05, 0.1, 0.1, 0.05, 0.05, 0.15)  # thin and 5 mm reconstructions common


def lits_geometry(rng) -> tuple[int, float]:
    """(planes, spacing in mm) of a LiTS-like volume: a spacing, then a scanned length of 250-800 mm."""
    dz = float(rng.choice(LITS_SPACINGS, p=_LITS_SPACING_P))
    planes = int(round(rng.uniform(250.0, 800.0) / dz))
    return int(np.clip(planes, *LITS_PLANES)), dz


@dataclass
class _Scan:
    """The scanner of one case: scanned range (standard frame), grid, contrast, image quality and artefacts."""

    phase: str  # one of PHASES
    z_bot: float  # scanned range, mm in the standard frame
    z_top: float
    dz: float  # slice spacing, mm
    n: int  # number of planes
    offset_x: float  # body offsets from the field's centre, mm
    offset_y: float
    fov: float  # field of view, mm
    px: float  # pixel size, mm
    crop: bool  # an image cropped around the liver
    body_cut: bool  # a field narrower than the body
    thickness: float  # slice thickness (FWHM of the z sensitivity profile), mm
    noise_sigma: float  # HU
    noise_corr: float  # in-plane correlation of the noise (Gaussian sigma, pixels)
    noise_bandpass: float  # share of the low frequencies removed from the noise (0: low-pass only)
    psf_mm: float  # in-plane PSF of the image (Gaussian sigma, mm)
    padding: float | None  # value outside the circular field, or None
    intercept: float  # rescale intercept of the stored file
    axcodes: tuple  # stored orientation
    table_z: float
    oral: bool  # oral contrast in the bowel
    hu: dict  # nominal HU per tissue, see tissues._hu_table
    enhancement: float  # contrast factor on (phase - unenhanced) HU
    steatosis: bool  # fatty liver
    body_ellipse: np.ndarray  # (z, cy, cx, ry, rx) rows: the body's extent at 12 heights, mm in the image
    artefacts: dict  # see _draw_artefacts


def _draw_scan(rng, anat: _Anatomy, scale, coarse, size: int, n_slices: int | None,
               lits: tuple[int, float] | None = None) -> _Scan:
    """Draw the scanner of one case around the liver (``coarse``: the liver's grid (z, y, x, sdf), standard frame).

    ``lits`` = (planes, spacing in mm) gives LiTS's geometry instead: that many
    planes, never a crop, pixels of 0.55-1 mm (:func:`lits_geometry` draws it).
    """
    lo, hi = _liver_box(coarse)
    phase = PHASES[rng.choice(len(PHASES), p=[0.15, 0.2, 0.5, 0.15])]
    crop = bool(rng.random() < _CROP_P)
    if lits is not None:  # the liver near the top of the range, the rest below it, as in LiTS's long scans
        crop = False
        span = lits[0] * lits[1] / scale[0]
        slack = span - (hi[0] - lo[0])
        z_top = hi[0] + (min(rng.uniform(10.0, 60.0), slack) if slack > 0 else slack / 2.0)
        z_bot = z_top - span
    elif crop:  # tight around the liver, as in liver-only series and cropped exports
        z_top = hi[0] + rng.uniform(0.0, 25.0) / scale[0]
        z_bot = lo[0] - rng.uniform(0.0, 25.0) / scale[0]
    else:
        z_top = rng.uniform(max(10.0, hi[0] + 4.0), 60.0)
        z_bot = max(lo[0] - rng.uniform(10.0, 130.0), -320.0)
    coverage = (z_top - z_bot) * scale[0]
    # (always drawn, so that the other draws do not depend on n_slices)
    options = [s for s in _SLICE_SPACINGS if 40 <= coverage / s <= _MAX_PLANES] or [coverage / 100.0]
    dz = float(rng.choice(options)) if lits is None else float(lits[1])
    # reconstructions are contiguous or overlapping: thickness from 0.8x to 2x the spacing
    thickness = float(rng.uniform(max(0.7, 0.8 * dz), min(5.0, max(2.0 * dz, 0.8 * dz + 0.1))))
    n = int(round(coverage / dz)) if lits is None else int(lits[0])
    if n_slices is not None and lits is None:
        n = int(n_slices)
        dz = round(coverage / n, 3)
    heights = np.linspace(z_bot, z_top, 12)
    outline_y, outline_x = _outline(anat, heights, scale)
    fov, offset_y, offset_x, body_cut = _draw_field(rng, outline_y, outline_x, lo, hi, scale, crop)
    if lits is not None:
        fov = float(np.clip(fov, LITS_PIXEL_MM[0] * size, LITS_PIXEL_MM[1] * size))
    by, bx = outline_y[:-1].reshape(12, -1), outline_x[:-1].reshape(12, -1)  # (without the table)
    body_ellipse = np.stack([(heights - z_bot) * scale[0], (by.max(1) + by.min(1)) / 2 + offset_y,
                             (bx.max(1) + bx.min(1)) / 2 + offset_x, np.ptp(by, 1) / 2, np.ptp(bx, 1) / 2], axis=1)
    px = fov / size
    # quantum noise and reconstruction kernel: level, texture (noise power spectrum) and sharpness
    noise_sigma = float(rng.uniform(5.0, 30.0))
    noise_corr = float(rng.uniform(0.4, 1.5))
    noise_bandpass = float(rng.uniform(0.3, 0.85)) if rng.random() < 0.6 else 0.0
    psf_mm = float(rng.uniform(0.5, 1.2))
    padding = PADDING_VALUES[rng.choice(len(PADDING_VALUES), p=[0.3, 0.25, 0.2, 0.15, 0.1])]
    padding = None if crop else padding  # a crop lies inside the reconstruction circle
    intercept = -1024.0 if rng.random() < 0.2 else 0.0
    ax_i = rng.choice(len(_AXCODES), p=[p for _, p in _AXCODES])
    axcodes = _AXCODES[ax_i][0]
    table_z = float(rng.uniform(-900.0, -100.0))
    oral = bool(rng.random() < 0.15)
    hu, enhancement, steatosis = _hu_table(rng, phase, oral)
    artefacts = _draw_artefacts(rng, coverage, fov, oral)
    return _Scan(phase, z_bot, z_top, dz, n, offset_x, offset_y, fov, px, crop, body_cut, thickness, noise_sigma,
                 noise_corr, noise_bandpass, psf_mm, padding, intercept, axcodes, table_z, oral, hu, enhancement,
                 steatosis, body_ellipse, artefacts)


def _liver_box(coarse) -> tuple[np.ndarray, np.ndarray]:
    """Bounds (z, y, x) of the liver on its coarse grid (standard frame, cell centres widened by half a cell)."""
    cz, cy, cx, cd = coarse
    inside = cd < 0
    half = np.array([cz[1] - cz[0], cy[1] - cy[0], cx[1] - cx[0]]) / 2.0
    idx = [np.flatnonzero(inside.any(axis=tuple(a for a in range(3) if a != k))) for k in range(3)]
    lo = np.array([v[i.min()] for v, i in zip((cz, cy, cx), idx)]) - half
    hi = np.array([v[i.max()] for v, i in zip((cz, cy, cx), idx)]) + half
    return lo, hi


def _draw_field(rng, outline_y, outline_x, lo, hi, scale, crop: bool):
    """Field of view (mm) and the body's offsets (y, x) from its centre; and whether the body is cut.

    A crop is the liver's extent plus margins of 5-40 mm, centred on the liver with jitter; other
    fields span 256-512 mm (0.5-1 mm pixels on a 512 grid): the body's width with a margin, or in
    some cases less than the body (but never less than the liver).
    """
    liver_y = np.array([lo[1], hi[1]]) * scale[1]
    liver_x = np.array([lo[2], hi[2]]) * scale[2]
    if crop:
        margin = 5.0 + 35.0 * rng.random() ** 2
        fov = max(np.ptp(liver_y), np.ptp(liver_x)) + 2.0 * margin
        jitter = rng.uniform(-0.5, 0.5, 2) * margin
        return float(fov), float(jitter[0] - liver_y.mean()), float(jitter[1] - liver_x.mean()), False
    offset_x = rng.uniform(-12.0, 12.0)
    offset_y = rng.uniform(-15.0, 25.0)
    width = float(np.ptp(outline_x))
    reach = float(np.sqrt((outline_x + offset_x) ** 2 + (outline_y + offset_y) ** 2).max())
    liver_reach = float(np.sqrt((liver_x[:, None] + offset_x) ** 2 + (liver_y[None, :] + offset_y) ** 2).max())
    cut = bool(rng.random() < _CUT_P)
    if cut:
        fov = max(width * rng.uniform(0.8, 0.97), 2 * liver_reach + 20.0)
    else:
        fov = max(width * rng.uniform(1.03, 1.2), 2 * reach + 10.0)
    fov = float(np.clip(fov, 256.0, 512.0))
    if not cut and 2 * reach + 12.0 > fov:  # a very large patient: centre it
        offset_x = offset_y = 0.0
    return fov, float(offset_y), float(offset_x), bool(2 * reach > fov)


def _draw_artefacts(rng, coverage: float, fov: float, oral: bool) -> dict:
    """Streaks, beam hardening (cupping, a dark band between dense structures) and a smooth bias field.

    Returns
    -------
    dict with ``streaks`` (list of dicts: angle, amplitude HU (signed), width and fade length mm,
    anchor offset mm, source "bone" or "oral"), ``cupping`` (HU darker at the body's centre),
    ``dark_band`` (HU, 0: none), ``band_width`` (mm), ``band_side`` (-1, 1), ``bias`` (peak HU) and
    ``bias_field`` (a unit-peak :class:`_Field` in image mm, or None).
    """
    streaks = []
    if rng.random() < 0.35:
        for _ in range(int(rng.integers(2, 8))):
            streaks.append({
                "angle": float(rng.uniform(0.0, np.pi)),
                "amplitude": float(rng.uniform(10.0, 80.0) * rng.choice((-1.0, 1.0))),
                "width": float(rng.uniform(1.5, 4.0)),
                "fade": float(rng.uniform(80.0, 250.0)),
                "shift": float(rng.normal(0.0, 12.0)),
                "source": "oral" if oral and rng.random() < 0.5 else "bone",
            })
    cupping = float(rng.uniform(5.0, 25.0)) if rng.random() < 0.5 else 0.0
    dark_band = float(rng.uniform(10.0, 30.0)) if rng.random() < 0.25 else 0.0
    band_width = float(rng.uniform(4.0, 12.0))
    band_side = float(rng.choice((-1.0, 1.0)))
    bias = float(rng.uniform(0.0, 25.0)) if rng.random() < 0.7 else 0.0
    bias_field = None
    if bias > 0:
        half = fov / 2.0 + 10.0
        bias_field = _Field(rng, (-10.0, -half, -half), (coverage + 10.0, half, half), rng.uniform(80.0, 120.0))
        bias_field.values /= np.abs(bias_field.values).max()
    return {"streaks": streaks, "cupping": cupping, "dark_band": dark_band, "band_width": band_width,
            "band_side": band_side, "bias": bias, "bias_field": bias_field}


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


def _apply_scanner(img: np.ndarray, tis: np.ndarray, scan: _Scan, f_z: int, rng_noise) -> np.ndarray:
    """Artefacts, slice profile and PSF blur, correlated noise, integer HU in [-1024, 3071], padding.

    ``tis`` gets the padding class in place; returns the new image.
    """
    size = img.shape[-1]
    _add_artefacts(img, tis, scan)
    sig_xy = max(scan.psf_mm / scan.px, 0.35)
    # the slice sensitivity profile: a Gaussian of FWHM = thickness (upsampled planes are already smoothed)
    sig_z = float(np.sqrt(max(_profile_sigma(scan) ** 2 - (f_z * f_z - 1) / 12.0, 0.3**2)))
    img = ndimage.gaussian_filter(img, (sig_z, sig_xy, sig_xy), mode="nearest", truncate=3.0)
    img += _noise(img.shape, scan, rng_noise)
    np.rint(img, out=img)
    np.clip(img, -1024.0, 3071.0, out=img)
    if scan.padding is not None:
        idx = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        r2 = idx[:, None] ** 2 + idx[None, :] ** 2
        outside = r2 > (size / 2.0) ** 2
        img[:, outside] = scan.padding
        tis[:, outside] = TISSUES["padding"]
    return img


def _profile_sigma(scan: _Scan) -> float:
    """Gaussian sigma (planes) of the slice sensitivity profile."""
    return scan.thickness / (2.0 * np.sqrt(2.0 * np.log(2.0)) * scan.dz)


def _noise(shape, scan: _Scan, rng) -> np.ndarray:
    """Stationary noise of standard deviation ``scan.noise_sigma`` with a CT-like power spectrum.

    White noise shaped in the Fourier domain (periodic, as stationary noise may be): in-plane a
    Gaussian low-pass (the kernel's apodisation, sigma ``noise_corr`` pixels) times a high-pass
    removing a share ``noise_bandpass`` of the lowest frequencies (the ramp filter of filtered back
    projection makes the CT noise power spectrum band-pass; Boedeker KL et al., Phys Med Biol
    2007;52:4027); along z the slice profile.
    """
    n_fast = (fft.next_fast_len(shape[0]), fft.next_fast_len(shape[1]), fft.next_fast_len(shape[2], real=True))
    # the spectrum of white noise, drawn directly: complex Gaussian coefficients
    n_half = n_fast[2] // 2 + 1
    spec = rng.standard_normal((n_fast[0], n_fast[1], 2 * n_half), dtype=np.float32).view(np.complex64)
    fz, fy, fx = fft.fftfreq(n_fast[0]), fft.fftfreq(n_fast[1]), fft.rfftfreq(n_fast[2])
    f2 = fy[:, None] ** 2 + fx[None, :] ** 2
    c = scan.noise_corr
    low_pass = np.exp(-2 * np.pi**2 * c * c * f2)
    h_xy = low_pass * (1.0 - scan.noise_bandpass * np.exp(-2 * np.pi**2 * (2.5 * c) ** 2 * f2))
    h_z = np.exp(-2 * np.pi**2 * _profile_sigma(scan) ** 2 * fz**2)
    for i in range(n_fast[0]):
        spec[i] *= (h_xy * h_z[i]).astype(np.float32)
    noise = fft.irfftn(spec, s=n_fast)[: shape[0], : shape[1], : shape[2]]
    noise *= np.float32(scan.noise_sigma / max(float(noise.std()), 1e-6))
    return noise


def _add_artefacts(img: np.ndarray, tis: np.ndarray, scan: _Scan) -> None:
    """Add the bias field, cupping, streaks and the dark band to the noise-free image, in place.

    The patterns are in the image frame and change once per band of planes ``_BAND_MM`` thick;
    streaks are anchored on the dense structures of each band and scaled, plane by plane, by
    how much dense material the plane holds.
    """
    art = scan.artefacts
    n, size = img.shape[0], img.shape[-1]
    mm = ((np.arange(size) - (size - 1) / 2.0) * scan.px).astype(np.float32)
    Y, X = mm[:, None], mm[None, :]
    _, band = np.unique(((np.arange(n) + 0.5) * scan.dz // _BAND_MM).astype(int), return_inverse=True)
    mids = [int(np.flatnonzero(band == b).mean()) for b in range(band.max() + 1)]
    z_mid = (np.array(mids) + 0.5) * scan.dz
    smooth = np.zeros((len(mids), size, size), np.float32)
    if art["bias_field"] is not None:
        smooth += art["bias_field"](z_mid, mm, mm) * np.float32(art["bias"])
    if art["cupping"]:  # darker towards the centre of the body's outline, at each height
        cy, cx, ry, rx = (np.interp(z_mid, scan.body_ellipse[:, 0], scan.body_ellipse[:, k])[:, None, None]
                          for k in range(1, 5))
        r2 = ((Y[None] - cy) / ry) ** 2 + ((X[None] - cx) / rx) ** 2
        smooth -= np.float32(art["cupping"]) * np.clip(1.0 - r2, 0.0, 1.0)
    streak, amp = None, np.zeros(n, np.float32)
    if art["streaks"] or art["dark_band"]:
        dense = tis == TISSUES["cortical_bone"]
        if scan.oral:
            dense |= (tis == TISSUES["bowel_content"]) & (img > 150.0)
        count = dense.sum(axis=(1, 2)).astype(np.float32)
        amp = np.sqrt(count / max(float(count.max()), 1.0))
        streak = np.stack([_streak_pattern(art, dense[m], tis[m], Y, X) for m in mids])
    for i in range(n):
        img[i] += smooth[band[i]]
        if streak is not None:
            img[i] += amp[i] * streak[band[i]]


def _centroid(mask: np.ndarray, Y, X) -> tuple[float, float]:
    """Centre (y, x) in mm of a plane's ``mask``; ``Y`` and ``X`` are its row and column coordinates."""
    return float(Y[:, 0] @ mask.sum(axis=1)) / mask.sum(), float(X[0] @ mask.sum(axis=0)) / mask.sum()


def _streak_pattern(art: dict, dense: np.ndarray, tis: np.ndarray, Y, X) -> np.ndarray:
    """Streaks through the plane's dense structures and a dark band between two of them (HU, 2-D)."""
    out = np.zeros(dense.shape, np.float32)
    bone = tis == TISSUES["cortical_bone"]
    if bone.sum() < 4:
        return out
    ay, ax = _centroid(bone, Y, X)
    oral = dense & ~bone
    for s in art["streaks"]:
        cy, cx = (ay, ax)
        if s["source"] == "oral" and oral.sum() >= 4:
            cy, cx = _centroid(oral, Y, X)
        cos, sin = np.float32(np.cos(s["angle"])), np.float32(np.sin(s["angle"]))
        u = ((Y - cy) * cos - (X - cx) * sin - s["shift"]) / s["width"]
        along = np.abs((Y - cy) * sin + (X - cx) * cos)
        # a dark core with bright flanks (or the reverse), fading away from the structure
        out += np.float32(s["amplitude"]) * (1.0 - 2.0 * u * u) * np.exp(-u * u - along / s["fade"])
    if art["dark_band"]:
        far = dense & (art["band_side"] * (X - ax) > 50.0)
        if far.sum() >= 4:
            by, bx = _centroid(far, Y, X)
            # along the line through both, fading out beyond them
            length = max(float(np.hypot(by - ay, bx - ax)), 1.0)
            ey, ex = (by - ay) / length, (bx - ax) / length
            t = ((Y - ay) * ey + (X - ax) * ex) / length
            d = (Y - ay) * ex - (X - ax) * ey
            window = np.exp(-(((2.0 * t - 1.0) / 1.2) ** 6))
            out -= np.float32(art["dark_band"]) * np.exp(-((d / art["band_width"]) ** 2)) * window
    return out


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
