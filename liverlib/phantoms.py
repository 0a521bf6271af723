"""Synthetic abdominal CT phantoms: the embedded default cohort.

Every case is a patient-like abdominal CT rendered from smooth signed distance
functions (SDFs): a body outline with skin, subcutaneous fat and muscle; lungs
and the heart above the diaphragm; a liver with a large right lobe, a tapering
left lobe that crosses the midline, a dome under the right lung and branching
portal and hepatic veins; zero to many hypo- or hyperdense lesions inside the
liver; spleen, kidneys, pancreas, gallbladder, stomach, duodenum, colon and
small bowel with gas; aorta, IVC, portal, splenic and renal veins; vertebrae,
ribs with costal cartilage, psoas muscles and, low in the scan, the iliac wings.

How a case is made
------------------
1. The anatomy is sampled in a *standard* frame (mm, origin at the centre of the
   abdominal cavity, ``z = 0`` at the top of the right diaphragm dome), then
   mapped to the patient by per-axis scale factors. The liver is rescaled until
   its volume hits a target drawn in 1.25-1.95 L.
2. The scanner is sampled: field of view (300-450 mm over ``size`` pixels),
   slice spacing (1-5 mm, 40-150 slices unless ``n_slices`` is given), noise,
   contrast phase (unenhanced, arterial, portal venous), the padding value
   outside the circular reconstruction field, the rescale intercept and the
   stored orientation (flips of RAS, as the LiTS files vary).
3. Each structure is painted over the previous ones with an opacity
   ``alpha = clip(0.5 - d / w, 0, 1)`` where ``d`` is its SDF and ``w`` the pixel
   size: partial volume at every edge. Work is kept where it matters: each SDF
   is evaluated only inside the structure's bounding box, on a grid no finer
   than 1.6 mm (SDFs are smooth; the opacity is then taken at full resolution);
   the body wall, which changes slowly with height, is painted once per 6 mm
   band of planes; and for fine grids (more than 256 pixels across, slices
   under ~1.2 mm) the noise-free anatomy is rendered at a whole fraction of the
   resolution and upsampled (linearly; the tissue map by nearest neighbour).
4. White noise is added and the image blurred with the scanner's PSF (which also
   makes the noise correlated, as CT noise is) at full resolution, then rounded
   to integer HU and clipped to [-1024, 3071]; outside the circular field the
   padding value is written.

The label is read off the tissue map (the last structure painted with
``alpha >= 0.5`` at each voxel): 1 = liver parenchyma and its intrahepatic
vessels (IVC, gallbladder and hilar fat excluded, as in LiTS), 2 = lesion.

Determinism: each case draws from its own generators, spawned from
``np.random.SeedSequence([seed, case_id])``, so a case is byte-identical whatever
the worker count or order. The anatomy, the scanner draws and the lesions do not
depend on ``size`` or ``n_slices``: the same case at 128 and 256 pixels is the
same patient in the same scanner (lesions narrower than a thick slice are the
one exception: their smallest diameter follows the slice spacing).
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
from dataclasses import dataclass, field
from pathlib import Path

import nibabel as nib
import numpy as np
from scipy import ndimage

from liverlib.atomic import atomic_path
from liverlib.data import CaseFiles, Geometry, load_case
from liverlib.errors import DataError

TISSUES: dict[str, int] = {
    "air": 0,  # outside the body (inside the reconstruction field)
    "fat": 1,  # subcutaneous, visceral and mediastinal fat
    "muscle": 2,  # body wall, paraspinal, psoas, diaphragm, iliacus, gluteal
    "liver": 3,  # liver parenchyma (label 1)
    "lesion": 4,  # liver lesion (label 2)
    "liver_vessel": 5,  # intrahepatic portal and hepatic veins (label 1)
    "spleen": 6,
    "kidney": 7,
    "artery": 8,  # aorta, iliac, celiac, mesenteric and renal arteries
    "vein": 9,  # IVC, portal trunk, splenic, mesenteric and renal veins
    "pancreas": 10,
    "gallbladder": 11,
    "bowel_wall": 12,  # stomach, duodenum, small bowel and colon walls
    "bowel_content": 13,  # fluid, food, stool, oral contrast
    "gas": 14,  # gas in the stomach and bowel
    "lung": 15,
    "heart": 16,
    "bone": 17,  # cancellous bone
    "cortical_bone": 18,
    "cartilage": 19,  # costal cartilage
    "disc": 20,  # intervertebral disc
    "csf": 21,  # spinal canal
    "skin": 22,
    "table": 23,  # the scanner table
    "padding": 24,  # outside the circular reconstruction field
}

PHASES = ("unenhanced", "arterial", "portal_venous")
PADDING_VALUES = (None, -1024, -2048, -3024, 0)  # None: the field covers the whole image

# Nominal mean HU per tissue and phase, (low, high): one value is drawn per case.
# Sources: textbook and review values for contrast-enhanced abdominal CT (liver
# 50-65 unenhanced, 90-130 portal venous; aorta ~45 / 250-350 / 150-190, ...).
_HU = {
    "fat": {"*": (-112, -88)},
    "muscle": {"unenhanced": (44, 54), "arterial": (46, 56), "portal_venous": (50, 60)},
    "skin": {"*": (25, 45)},
    "liver": {"unenhanced": (52, 64), "arterial": (64, 80), "portal_venous": (98, 124)},
    "spleen": {"unenhanced": (42, 50), "arterial": (100, 135), "portal_venous": (108, 132)},
    "kidney": {"unenhanced": (28, 38), "arterial": (150, 205), "portal_venous": (145, 185)},
    "kidney_medulla": {"unenhanced": (26, 34), "arterial": (70, 100), "portal_venous": (130, 170)},
    "artery": {"unenhanced": (36, 50), "arterial": (230, 340), "portal_venous": (145, 190)},
    "vein": {"unenhanced": (36, 50), "arterial": (75, 110), "portal_venous": (125, 165)},
    "portal_vein": {"unenhanced": (36, 50), "arterial": (95, 140), "portal_venous": (155, 200)},
    "hepatic_vein": {"unenhanced": (32, 44), "arterial": (48, 70), "portal_venous": (135, 180)},
    "pancreas": {"unenhanced": (38, 50), "arterial": (100, 140), "portal_venous": (85, 110)},
    "bowel_wall": {"unenhanced": (36, 48), "arterial": (75, 110), "portal_venous": (85, 115)},
    "bowel_fluid": {"*": (5, 25)},
    "oral_contrast": {"*": (160, 320)},
    "stool": {"*": (-40, 20)},
    "bile": {"*": (2, 18)},
    "lung": {"*": (-875, -810)},
    "blood": {"unenhanced": (38, 50), "arterial": (230, 340), "portal_venous": (145, 190)},
    "myocardium": {"unenhanced": (40, 52), "arterial": (95, 130), "portal_venous": (100, 130)},
    "bone": {"*": (140, 260)},
    "cortical_bone": {"*": (850, 1300)},
    "cartilage": {"*": (110, 190)},
    "disc": {"*": (75, 105)},
    "csf": {"*": (8, 22)},
    "table": {"*": (180, 380)},
}
# Lesion minus liver (HU) by kind and phase: metastases and necrosis are hypodense,
# hypervascular tumours hyperdense in the arterial phase.
_LESION_DELTA = {
    "hypo": {"unenhanced": (-38, -20), "arterial": (-50, -25), "portal_venous": (-70, -35)},
    "hyper": {"unenhanced": (18, 32), "arterial": (35, 80), "portal_venous": (22, 45)},
}

_BIG = np.float32(1e4)  # "far away" for SDFs outside a primitive's reach
_REACH = 12.0  # mm beyond a primitive's bounds where its SDF is still evaluated
_GAS_HU = -1000.0
_ORGAN_CELL = 3.0  # mm: grid for the SDFs of large organs (see _Canvas.sdf)
_TUBE_CELL = 2.4  # mm: bowel loops (radius >= 9 mm)


@dataclass
class Phantom:
    """One synthetic CT case in canonical orientation.

    Attributes
    ----------
    case_id : int
    image : ndarray of float32, (plane, row, column)
        Integer-valued HU, noise and blur included, padding outside the field.
    label : ndarray of uint8
        0 = background, 1 = liver, 2 = lesion.
    tissues : ndarray of uint8
        Tissue class of each voxel, see :data:`TISSUES`.
    spacing : tuple of float
        Voxel size in mm, (plane, row, column).
    axcodes : tuple of str
        Orientation the case is stored in by :func:`write_case`.
    meta : dict
        Scanner and anatomy facts: ``seed``, ``size``, ``n_slices`` (the argument),
        ``phase`` (one of :data:`PHASES`), ``noise_sigma`` (HU, after the PSF),
        ``psf_mm``, ``padding`` (value outside the circular field, or None),
        ``fov_mm``, ``rescale_intercept`` (0 or -1024, used when written),
        ``oral_contrast``, ``origin`` (table height and body offsets, mm),
        ``liver_ml`` (labels 1 + 2), ``n_lesions``, ``lesions`` (one dict per
        lesion: kind "hypo"/"hyper", diameter_mm, delta_hu to the liver,
        necrosis, rim, centre_voxel in canonical (plane, row, column)) and
        ``hu`` (the nominal HU drawn for each tissue).
    """

    case_id: int
    image: np.ndarray
    label: np.ndarray
    tissues: np.ndarray
    spacing: tuple[float, float, float]
    axcodes: tuple[str, str, str]
    meta: dict = field(default_factory=dict)


# =========================================================================== helpers


def _P(x: float, y: float, z: float) -> np.ndarray:
    """A point given anatomically (x right->left, y anterior->posterior, z up) in (z, y, x) order."""
    return np.array([z, y, x], dtype=np.float64)


def _smin(a, b, k: float):
    """Polynomial smooth minimum (smooth union of two SDFs), blend width ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smoothstep(t):
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def _rotation(**angles_deg: float) -> np.ndarray:
    """Rotation matrix acting on (z, y, x) vectors, composed from anatomical axes x, y, z in order."""
    R = np.eye(3)
    for axis, deg in angles_deg.items():
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        # indices in (z, y, x) order of the plane each rotation mixes
        i, j = {"z": (2, 1), "y": (2, 0), "x": (1, 0)}[axis]
        M = np.eye(3)
        M[i, i], M[i, j], M[j, i], M[j, j] = c, -s, s, c
        R = M @ R
    return R


def _index_box(z, y, x, lo, hi):
    """Slices of the (ascending) coordinate vectors that fall inside [lo, hi]; None if empty."""
    out = []
    for v, a, b in zip((z, y, x), lo, hi):
        i0 = int(np.searchsorted(v, a, "left"))
        i1 = int(np.searchsorted(v, b, "right"))
        if i1 <= i0:
            return None
        out.append(slice(i0, i1))
    return tuple(out)


def _ellipse2d(y, x, cy, cx, ry, rx):
    """Approximate SDF of an axis-aligned ellipse in the plane; y, x broadcastable."""
    qy, qx = (y - cy) / ry, (x - cx) / rx
    k0 = np.sqrt(qy * qy + qx * qx)
    k1 = np.sqrt(qy * qy / (ry * ry) + qx * qx / (rx * rx))
    return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


def _segment2d(y, x, a, b):
    """Distance to the plane segment a-b, points given as (y, x)."""
    by, bx = b[0] - a[0], b[1] - a[1]
    py, px = y - a[0], x - a[1]
    h = np.clip((py * by + px * bx) / (by * by + bx * bx), 0.0, 1.0)
    return np.sqrt((py - by * h) ** 2 + (px - bx * h) ** 2)


def _catmull_rom(points: np.ndarray, step: float) -> np.ndarray:
    """Densify a polyline of control points (n, k) with a Catmull-Rom spline, about ``step`` apart.

    The trailing columns beyond the first three (radii...) are interpolated too.
    """
    pts = np.vstack([2 * points[0] - points[1], points, 2 * points[-1] - points[-2]])
    out = []
    for i in range(1, len(pts) - 2):
        p0, p1, p2, p3 = pts[i - 1], pts[i], pts[i + 1], pts[i + 2]
        n = max(1, int(np.ceil(np.linalg.norm(p2[:3] - p1[:3]) / step)))
        t = (np.arange(n) / n)[:, None]
        out.append(
            0.5
            * (
                2 * p1
                + (-p0 + p2) * t
                + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2
                + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
            )
        )
    out.append(points[-1:])
    return np.vstack(out)


def _interp_axis(values: np.ndarray, src: np.ndarray, dst: np.ndarray, axis: int) -> np.ndarray:
    """Linear interpolation of ``values`` along ``axis`` from uniform coordinates ``src`` to ``dst``."""
    f = (np.asarray(dst, np.float64) - src[0]) / (src[1] - src[0])
    i = np.clip(np.floor(f).astype(int), 0, len(src) - 2)
    t = np.clip(f - i, 0.0, 1.0).astype(np.float32)
    shape = [1] * values.ndim
    shape[axis] = -1
    t = t.reshape(shape)
    a = np.take(values, i, axis=axis)
    return a + (np.take(values, i + 1, axis=axis) - a) * t


def _on_grid(fn, z, y, x, cell: float):
    """``fn(z, y, x)`` evaluated on a grid no finer than ``cell`` mm, linearly upsampled to (z, y, x).

    For smooth fields (SDFs, textures) this is exact to a fraction of a voxel and saves most of the
    work on fine grids (512 pixels, thin slices). ``fn`` may return an array or a tuple of arrays.
    """
    vecs, coarse = [], []
    for v in (z, y, x):
        step = float(v[1] - v[0]) if len(v) > 1 else cell
        if len(v) > 3 and step < cell / 1.5:
            n = int(np.ceil((v[-1] - v[0]) / cell)) + 1
            vecs.append(np.linspace(v[0], v[-1], max(n, 2)))
            coarse.append(True)
        else:
            vecs.append(v)
            coarse.append(False)
    out = fn(*vecs)
    if not any(coarse):
        return out
    single = not isinstance(out, tuple)
    results = []
    for arr in (out,) if single else out:
        for axis in (2, 1, 0):  # the smallest arrays first
            if coarse[axis]:
                arr = _interp_axis(arr, vecs[axis], (z, y, x)[axis], axis)
        results.append(arr)
    return results[0] if single else tuple(results)


class _Field:
    """A smooth random field with unit standard deviation.

    White noise on a coarse lattice (spacing ``cell`` mm), smoothed, then sampled
    at any rectilinear sub-grid by separable linear interpolation: the cost is a
    few operations per sampled voxel, whatever the field's extent.
    """

    def __init__(self, rng: np.random.Generator, lo, hi, cell: float):
        self.cell = float(cell)
        self.origin = np.asarray(lo, dtype=np.float64) - 2 * cell
        n = np.ceil((np.asarray(hi) - self.origin) / cell).astype(int) + 3
        values = ndimage.gaussian_filter(rng.standard_normal(tuple(n)), 0.8, mode="wrap")
        self.values = (values / values.std()).astype(np.float32)

    def __call__(self, z, y, x) -> np.ndarray:
        out = self.values
        for axis, v in ((2, x), (1, y), (0, z)):
            f = (np.asarray(v, dtype=np.float64) - self.origin[axis]) / self.cell
            i = np.clip(np.floor(f).astype(int), 0, out.shape[axis] - 2)
            t = np.clip(f - i, 0.0, 1.0).astype(np.float32)
            shape = [1, 1, 1]
            shape[axis] = -1
            t = t.reshape(shape)
            a = np.take(out, i, axis=axis)
            out = a + (np.take(out, i + 1, axis=axis) - a) * t
        return out


# =========================================================================== shapes


class _Shape:
    """A solid given by an SDF (mm, negative inside) inside the box [lo, hi] (z, y, x)."""

    lo: np.ndarray
    hi: np.ndarray

    def sdf(self, z, y, x) -> np.ndarray:  # pragma: no cover - interface
        raise NotImplementedError

    def sdf_on(self, z, y, x, reach: float = _REACH) -> np.ndarray:
        """The SDF on a grid, evaluated only within ``reach`` of the bounds (``_BIG`` elsewhere)."""
        out = np.full((len(z), len(y), len(x)), _BIG, np.float32)
        box = _index_box(z, y, x, self.lo - reach, self.hi + reach)
        if box is not None:
            out[box] = self.sdf(z[box[0]], y[box[1]], x[box[2]])
        return out


class _Ellipsoid(_Shape):
    """Rotated ellipsoid; ``taper`` narrows its y and z radii along +x (the left lobe's wedge)."""

    def __init__(self, center, radii, rotation=None, taper: float = 0.0):
        self.c = np.asarray(center, dtype=np.float64)
        self.r = np.asarray(radii, dtype=np.float64)  # (rz, ry, rx)
        self.R = rotation
        self.taper = taper
        grow = np.array([1 + taper, 1 + taper, 1.0])
        rr = self.r * grow
        R = np.eye(3) if rotation is None else rotation
        half = np.sqrt(((R.T**2) * rr[None, :] ** 2).sum(axis=1))
        self.lo, self.hi = self.c - half, self.c + half

    def sdf(self, z, y, x):
        Z = (z - self.c[0]).astype(np.float32)[:, None, None]
        Y = (y - self.c[1]).astype(np.float32)[None, :, None]
        X = (x - self.c[2]).astype(np.float32)[None, None, :]
        if self.R is None:
            qz, qy, qx = Z, Y, X
        else:
            R = self.R.astype(np.float32)
            qz = R[0, 0] * Z + R[0, 1] * Y + R[0, 2] * X
            qy = R[1, 0] * Z + R[1, 1] * Y + R[1, 2] * X
            qx = R[2, 0] * Z + R[2, 1] * Y + R[2, 2] * X
        rz, ry, rx = (np.float32(v) for v in self.r)
        if self.taper:
            t = np.clip(1.0 - self.taper * qx / rx, 0.2, None)
            qy, qz = qy / t, qz / t
        a, b, c = qz / rz, qy / ry, qx / rx
        k0 = np.sqrt(a * a + b * b + c * c)
        k1 = np.sqrt((a / rz) ** 2 + (b / ry) ** 2 + (c / rx) ** 2)
        return k0 * (k0 - 1.0) / np.maximum(k1, 1e-6)


class _Chain(_Shape):
    """A tube along a polyline with linearly varying radius (union of round cones).

    :meth:`sdf_full` also returns, for each voxel, the y of the nearest axis point
    and the local radius (to place the gas-fluid level of a bowel loop).
    """

    def __init__(self, points, radii):
        self.p = np.asarray(points, dtype=np.float64)  # (n, 3) in (z, y, x)
        self.rad = np.asarray(radii, dtype=np.float64)
        r = self.rad.max()
        self.lo, self.hi = self.p.min(axis=0) - r, self.p.max(axis=0) + r

    def sdf(self, z, y, x):
        return self.sdf_full(z, y, x)[0]

    def sdf_full(self, z, y, x, reach: float = _REACH):
        shape = (len(z), len(y), len(x))
        out = np.full(shape, _BIG, np.float32)
        axis_y = np.zeros(shape, np.float32)
        radius = np.ones(shape, np.float32)
        for i in range(len(self.p) - 1):
            a, b = self.p[i], self.p[i + 1]
            ra, rb = self.rad[i], self.rad[i + 1]
            m = max(ra, rb) + reach
            box = _index_box(z, y, x, np.minimum(a, b) - m, np.maximum(a, b) + m)
            if box is None:
                continue
            ba = (b - a).astype(np.float32)
            L2 = max(float(ba @ ba), 1e-6)
            pz = (z[box[0]] - a[0]).astype(np.float32)[:, None, None]
            py = (y[box[1]] - a[1]).astype(np.float32)[None, :, None]
            px = (x[box[2]] - a[2]).astype(np.float32)[None, None, :]
            h = np.clip((pz * ba[0] + py * ba[1] + px * ba[2]) / L2, 0.0, 1.0)
            r = np.float32(ra) + np.float32(rb - ra) * h
            d = np.sqrt((pz - ba[0] * h) ** 2 + (py - ba[1] * h) ** 2 + (px - ba[2] * h) ** 2) - r
            view = out[box]
            closer = d < view
            view[closer] = d[closer]
            np.copyto(axis_y[box], np.broadcast_to(np.float32(a[1]) + ba[1] * h, d.shape), where=closer)
            np.copyto(radius[box], np.broadcast_to(r, d.shape), where=closer)
        return out, axis_y, radius


class _Tree(_Shape):
    """A branching vessel tree: a set of round-cone segments (not one polyline)."""

    def __init__(self, segments):
        self.segs = segments  # list of (a, b, ra, rb)
        pts = np.array([s[0] for s in segments] + [s[1] for s in segments])
        r = max(max(s[2], s[3]) for s in segments)
        self.lo, self.hi = pts.min(axis=0) - r, pts.max(axis=0) + r

    def sdf(self, z, y, x, reach: float = _REACH):
        out = np.full((len(z), len(y), len(x)), _BIG, np.float32)
        for a, b, ra, rb in self.segs:
            c = _Chain(np.array([a, b]), np.array([ra, rb]))
            box = _index_box(z, y, x, c.lo - reach, c.hi + reach)
            if box is None:
                continue
            d = c.sdf_full(z[box[0]], y[box[1]], x[box[2]], reach)[0]
            view = out[box]
            np.minimum(view, d, out=view)
        return out


def _grow_tree(rng, root, direction, length, radius, depth, spread=(25.0, 50.0)):
    """Segments of a random branching tree: each branch splits in two, thinner and shorter."""
    segments = []
    stack = [(np.asarray(root, float), np.asarray(direction, float), length, radius, depth)]
    while stack:
        start, d, L, r, k = stack.pop()
        d = d / np.linalg.norm(d)
        # two sub-segments with a small bend, so that branches curve
        mid = start + d * L / 2
        d2 = d + rng.normal(0, 0.2, 3)
        d2 /= np.linalg.norm(d2)
        end = mid + d2 * L / 2
        r_end = max(r * 0.82, 1.0)
        segments.append((start, mid, r, (r + r_end) / 2))
        segments.append((mid, end, (r + r_end) / 2, r_end))
        if k <= 0:
            continue
        for sign in (-1, 1):
            # rotate d2 by a random angle in a random plane
            ortho = np.cross(d2, rng.normal(0, 1, 3))
            ortho /= np.linalg.norm(ortho)
            ang = np.radians(rng.uniform(*spread)) * sign
            child = np.cos(ang) * d2 + np.sin(ang) * ortho
            stack.append((end, child, L * rng.uniform(0.65, 0.85), max(r_end * rng.uniform(0.65, 0.8), 1.0), k - 1))
    return segments


# =========================================================================== anatomy


class _Body:
    """Body outline and layers in polar form around the cavity centre.

    The abdominal cavity is a superellipse (flatter at the back); the muscle wall
    (much thicker behind: the paraspinal muscles) and the subcutaneous fat are
    radial offsets of it, varying with the angle and the height.
    """

    def __init__(self, rng):
        self.a = 130.0 * rng.uniform(0.95, 1.05)
        self.b_ant = 85.0 * rng.uniform(0.92, 1.08)
        self.b_post = 60.0
        self.p = rng.uniform(2.2, 2.7)
        self.fat = rng.uniform(5.0, 26.0)
        self.fat_harm = rng.normal(0, 0.12, 3)
        self.fat_phase = rng.uniform(0, 2 * np.pi, 3)
        self.muscle = rng.uniform(9.0, 14.0)
        self.paraspinal = rng.uniform(44.0, 54.0)
        self.hip = rng.uniform(0.04, 0.09)

    def polar(self, y, x):
        Y = np.asarray(y, np.float32)[:, None]
        X = np.asarray(x, np.float32)[None, :]
        return np.hypot(X, Y), np.arctan2(X, -Y)  # theta 0 = anterior, +-pi = posterior

    def zscale(self, z):
        z = np.asarray(z, np.float64)
        return (1.0 + 0.04 * np.tanh((z - 10.0) / 60.0) + self.hip * _smoothstep((-200.0 - z) / 90.0)).astype(
            np.float32
        )

    def r_outline2d(self, theta):
        """The superellipse the cavity is cut from."""
        s, c = np.sin(theta), np.cos(theta)
        b = np.where(c > 0, self.b_ant, self.b_post)
        return (1.0 / (np.abs(s / self.a) ** self.p + np.abs(c / b) ** self.p) ** (1.0 / self.p)).astype(np.float32)

    def r_cavity2d(self, theta):
        """Cavity radius: the superellipse, indented behind by the vertebral column."""
        notch = np.exp(-(((np.pi - np.abs(theta)) / 0.3) ** 2))
        return (self.r_outline2d(theta) * (1.0 - 0.42 * notch)).astype(np.float32)

    def layers(self, z, y, x):
        """rho (1, h, w) and the outer radii of cavity, muscle and skin (d, h, w)."""
        rho, theta = self.polar(y, x)
        zs = self.zscale(z)[:, None, None]
        zz = np.asarray(z, np.float32)[:, None, None]
        r_out = self.r_outline2d(theta)[None] * zs
        r_cav = self.r_cavity2d(theta)[None] * zs
        post = self.posterior(theta)
        chest = 0.75 + 0.25 * _smoothstep((-zz - 10.0) / 40.0)  # thin intercostal walls above the dome
        glute = 1.0 + 1.2 * _smoothstep((-zz - 215.0) / 60.0) * np.sin(theta)[None] ** 2
        alba = 1.0 - 0.8 * np.exp(-((theta / 0.03) ** 2))  # the linea alba: a thin midline seam
        wall = r_out + (self.muscle * (1.0 - post))[None] * chest * glute + (self.paraspinal * post)[None]
        r_mus = wall - (self.muscle * (1.0 - alba) * (1.0 - post))[None]
        harm = sum(a * np.cos((k + 2) * theta + ph) for k, (a, ph) in enumerate(zip(self.fat_harm, self.fat_phase)))
        fat2d = self.fat * (1.0 + 0.45 * np.sin(theta) ** 2 - 0.3 * post + harm)
        fatz = 1.0 + 0.3 * np.clip((-zz - 80.0) / 150.0, -0.6, 1.0)
        r_skin = wall + np.maximum(fat2d, 3.0)[None] * fatz
        return rho[None], r_cav, r_mus, r_skin

    @staticmethod
    def posterior(theta):
        """1 behind the spine, falling to 0 at the flanks: the paraspinal block and the flat back."""
        return np.exp(-(((np.pi - np.abs(theta)) / 0.62) ** 2)).astype(np.float32)

    def back(self, z):
        """y of the flattened back (lying on the table)."""
        return (self.b_post + self.paraspinal + 0.7 * self.fat) * self.zscale(z) - 2.0

    def cavity_sdf(self, z, y, x):
        rho, theta = self.polar(y, x)
        return rho[None] - self.r_cavity2d(theta)[None] * self.zscale(z)[:, None, None]


class _Diaphragm:
    """Two domes, the right one higher (top at z = 0), the left 5-20 mm lower.

    Each dome is flat in the middle and steep near the body wall,
    ``z = top - depth * r**q`` with ``r`` the elliptical distance from the
    dome's centre (1 at the wall), so the costophrenic recesses are deep but
    narrow, and deepest behind.
    """

    def __init__(self, rng):
        self.right = (-50.0 + rng.normal(0, 5), -8.0 + rng.normal(0, 4), 0.0)
        self.left = (50.0 + rng.normal(0, 5), 0.0 + rng.normal(0, 4), -rng.uniform(5.0, 20.0))
        self.depth = rng.uniform(75.0, 100.0)
        self.q = rng.uniform(3.8, 5.0)
        self.reach = (82.0, 62.0, 85.0)  # x, y behind, y in front

    def z(self, y, x):
        Y = np.asarray(y, np.float32)[:, None]
        X = np.asarray(x, np.float32)[None, :]
        domes = []
        ax, ay_post, ay_ant = self.reach
        for xc, yc, zc in (self.right, self.left):
            dy = Y - yc
            ry = np.where(dy > 0, ay_post - yc, ay_ant + yc)
            r = np.sqrt(((X - xc) / ax) ** 2 + (dy / ry) ** 2)
            domes.append(zc - self.depth * r**self.q)
        return -_smin(-domes[0], -domes[1], 12.0)  # smooth maximum


@dataclass
class _Tube:
    chain: _Chain
    wall: float
    content: str  # "fluid", "food", "stool", "contrast"
    gas: float  # fraction of the diameter filled with gas, from the front


class _Anatomy:
    """All sampled structures of one patient, in the standard frame."""

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.body = _Body(rng)
        self.diaphragm = _Diaphragm(rng)

        def J(sd: float = 4.0) -> float:  # positional jitter, mm
            return float(rng.normal(0, sd))

        # vertebral column: levels shifted up or down by a few mm
        self.spine_shift = J(6.0)

        # kidneys: right lower than left; upper poles medial and posterior
        kz_r, kz_l = -132.0 + J(8), -116.0 + J(8)
        ks = rng.uniform(0.9, 1.1)
        self.kidneys = []
        for side, kz in ((-1, kz_r), (1, kz_l)):
            c = _P(side * (66 + J(3)), 36 + J(3), kz)
            rot = _rotation(z=side * -30.0, y=side * 14.0, x=-10.0)
            kid = _Ellipsoid(c, np.array([52.0, 21.0, 26.0]) * ks, rot)
            sinus = _Ellipsoid(c + _P(-side * 14.0, -7.0, 0.0), np.array([24.0, 9.0, 15.0]) * ks, rot)
            self.kidneys.append((side, kid, sinus))

        # spleen: along the posterolateral wall under the left dome
        ss = rng.uniform(0.9, 1.2)
        self.spleen = _Ellipsoid(
            _P(100 + J(), 40 + J(), -66 + J(6)), np.array([52.0, 58.0, 30.0]) * ss, _rotation(z=45.0 + J(6))
        )

        # stomach (fundus under the left dome, J-shaped) and duodenal C-loop
        sr = rng.uniform(0.75, 1.2)
        stomach = np.array(
            [
                [52, 6, -32, 34 * sr],
                [54, -8, -54, 34 * sr],
                [50, -20, -76, 32 * sr],
                [35, -38, -98, 27 * sr],
                [12, -48, -112, 21 * sr],
                [-10, -46, -117, 14],
                [-28, -34, -115, 14],
            ],
            dtype=float,
        )
        stomach[:, :3] += rng.normal(0, 3, (len(stomach), 3))
        duodenum = np.array(
            [[-28, -34, -115, 13], [-44, -14, -120, 13], [-52, 0, -142, 13], [-48, 4, -168, 12],
             [-20, 6, -182, 12], [10, 2, -184, 12], [28, -6, -170, 12]],
            dtype=float,
        )
        self.tubes = [
            _Tube(self._chain(stomach, 6.0), 4.5, "food", rng.uniform(0.15, 0.55)),
            _Tube(self._chain(duodenum, 6.0), 2.5, "fluid", rng.uniform(0.0, 0.3)),
        ]
        self.stomach = self.tubes[0].chain
        self.duodenum = self.tubes[1].chain
        esophagus = np.array([[8, 10, 160, 8], [10, 8, 20, 8], [30, 5, -15, 9], [50, 8, -30, 12]])
        self.esophagus = self._chain(esophagus, 8.0)

        # colon: ascending, transverse (drooping), descending, with haustra
        cr = rng.uniform(0.85, 1.15)
        colon = np.array(
            [
                [-98, 8, -330, 24], [-102, 4, -250, 25], [-96, -6, -190, 24], [-80, -40, -165, 22],
                [-40, -66, -180 - rng.uniform(0, 40), 21], [0, -70, -195 - rng.uniform(0, 50), 20],
                [45, -62, -170 - rng.uniform(0, 30), 20], [86, -28, -128, 19], [102, 4, -118, 18],
                [108, 18, -165, 17], [106, 16, -240, 17], [96, 8, -330, 17],
            ],
            dtype=float,
        )
        colon[:, 3] *= cr
        colon[:, :3] += rng.normal(0, 3, (len(colon), 3))
        pts = _catmull_rom(colon, 5.0)
        s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(pts[:, :3], axis=0), axis=1))])
        pts[:, 3] *= 1.0 + 0.13 * np.sin(2 * np.pi * s / rng.uniform(22, 30))  # haustra
        self.colon = _Chain(pts[:, [2, 1, 0]], pts[:, 3])
        self.tubes.append(_Tube(self.colon, 2.0, "stool", rng.uniform(0.15, 0.6)))

        # pancreas: head in the duodenal loop, body over the aorta, tail at the splenic hilum
        pancreas = np.array(
            [[-34, -4, -142, 16], [-20, -12, -126, 14], [-2, -18, -114, 12], [26, -12, -108, 12],
             [55, 4, -100, 11], [78, 20, -92, 10]],
            dtype=float,
        )
        pancreas[:, :3] += rng.normal(0, 2.5, (len(pancreas), 3))
        self.pancreas = self._chain(pancreas, 5.0)

        # gallbladder in its fossa under the liver (absent after cholecystectomy)
        self.gallbladder = None
        if rng.random() < 0.82:
            gr = rng.uniform(0.75, 1.2)
            self.gallbladder = _Ellipsoid(
                _P(-46 + J(), -42 + J(), -112 + J(6)), np.array([36.0, 18.0, 16.0]) * gr, _rotation(x=35.0, z=20.0)
            )

        # heart on the central diaphragm, pericardial fat around it
        self.heart = _Ellipsoid(_P(22 + J(), -22 + J(), 44 + J(5)), np.array([58.0, 52.0, 62.0]), _rotation(z=-30.0))

        # great vessels
        self.aorta = self._chain(
            np.array([[30, 22, 170, 12.5], [22, 16, 20, 12], [14, 5, -60, 11.5], [11, 2, -150, 10.5],
                      [8, 2, -222, 9.5]]),
            8.0,
        )
        bif = np.array([8, 2, -222])
        self.arteries = [
            self._chain(np.array([[*bif, 6.5], [26, 6, -262, 6.5], [46, 14, -330, 6]]), 8.0),
            self._chain(np.array([[*bif, 6.5], [-12, 6, -262, 6.5], [-36, 14, -330, 6]]), 8.0),
            self._chain(np.array([[12, -6, -96, 3.5], [12, -22, -94, 3.5], [-15, -20, -92, 2.5],
                                  [-28, -6, -90, 2.5]]), 5.0),  # celiac, hepatic artery
            self._chain(np.array([[12, -20, -94, 3], [40, -5, -92, 3], [70, 18, -86, 3]]), 6.0),  # splenic artery
            self._chain(np.array([[10, -6, -112, 4.5], [11, -24, -130, 4.5], [8, -30, -230, 3.5]]), 8.0),  # SMA
        ]
        for side, kid, _ in self.kidneys:
            hilum = kid.c + _P(-side * 26, -8, 0)
            self.arteries.append(_Chain(np.array([_P(side * 8, 4, kid.c[0] + 12), hilum]), np.array([3.0, 3.0])))
        self.ivc = self._chain(
            np.array([[-20, 8, -330, 10], [-24, 8, -170, 12], [-30, 14, -100, 13], [-30, 18, -45, 13],
                      [-20, 10, -5, 13], [-8, -8, 30, 14]]),
            8.0,
        )
        self.veins = [
            self._chain(np.array([[24, 10, -222, 6.5], [30, 12, -330, 7]]), 8.0),
            self._chain(np.array([[-18, 10, -222, 6.5], [-42, 16, -330, 7]]), 8.0),
            self._chain(np.array([[80, 28, -94, 4.5], [50, 10, -104, 4.5], [22, -2, -112, 5],
                                  [-2, -10, -118, 6]]), 6.0),  # splenic vein
            self._chain(np.array([[-2, -12, -118, 6], [-6, -18, -150, 5.5], [-10, -24, -230, 4.5]]), 8.0),  # SMV
        ]
        for side, kid, _ in self.kidneys:
            hilum = kid.c + _P(-side * 24, -12, 0)
            if side > 0:  # left renal vein crosses between aorta and SMA
                pts = np.array([hilum, _P(14, -12, kid.c[0] - 6), _P(-20, 4, kid.c[0] - 8)])
            else:
                pts = np.array([hilum, _P(-24, 6, kid.c[0] + 6)])
            self.veins.append(_Chain(pts, np.full(len(pts), 4.5)))
        self.portal = self._chain(np.array([[-2, -12, -118, 7], [-18, -8, -104, 7.5], [-30, -3, -92, 7]]), 6.0)

        # liver: scaled later to a target volume
        self.liver_parts = {
            "right": (_P(-60 + J(), -4 + J(), -60 + J(5)), np.array([84.0, 90.0, 80.0]), _rotation(y=-14.0 + J(4))),
            "left": (_P(16 + J(), -46 + J(3), -42 + J(5)),
                     np.array([38.0, 30.0, 70.0 * rng.uniform(0.75, 1.25)]), _rotation(z=14.0 + J(5))),
            "caudate": (_P(-12, 6, -58), np.array([32.0, 18.0, 18.0]), None),
        }
        if rng.random() < 0.45:  # Riedel's lobe: a tongue of the right lobe reaching low
            self.liver_parts["riedel"] = (_P(-96, -16, -132), np.array([50.0, 36.0, 32.0]) * rng.uniform(0.8, 1.2),
                                          None)
        self.left_taper = rng.uniform(0.45, 0.7)
        # portal vein tree from the porta hepatis (right and left branches), hepatic veins from the IVC
        porta = _P(-30, -3, -92)
        segs = _grow_tree(rng, porta, _P(-40, 6, 12), 38.0, 7.0, 4)
        segs += _grow_tree(rng, porta + _P(8, -6, 4), _P(40, -40, 30), 36.0, 6.0, 4)
        self.portal_tree = _Tree(segs)
        segs = []
        for target, r in ((_P(-70, -8, -55), 7.0), (_P(-12, -56, -60), 6.5), (_P(45, -48, -25), 6.0)):
            segs += _grow_tree(rng, _P(-28, 14, -28), target, 40.0, r, 3)
        self.hepatic_tree = _Tree(segs)
        self.liver_scale = 1.0
        self.liver_anchor = _P(-50, 0, 0)
        self.liver_disp = rng.uniform(3.0, 6.0)

    @staticmethod
    def spine_y(z) -> np.ndarray:
        """y of the vertebral bodies' centres: forward in the lumbar lordosis."""
        return 30.0 - 9.0 * np.exp(-(((np.asarray(z) + 190.0) / 90.0) ** 2))

    @staticmethod
    def _chain(xyzr: np.ndarray, step: float) -> _Chain:
        pts = _catmull_rom(np.asarray(xyzr, float), step)
        return _Chain(pts[:, [2, 1, 0]], pts[:, 3])

    # ------------------------------------------------------------------ liver
    def liver_lobes(self) -> list[_Ellipsoid]:
        f, A = self.liver_scale, self.liver_anchor
        lobes = []
        for name, (c, r, rot) in self.liver_parts.items():
            lobes.append(_Ellipsoid(A + f * (c - A), r * f, rot, taper=self.left_taper if name == "left" else 0.0))
        return lobes

    def liver_sdf(self, z, y, x, fields) -> np.ndarray:
        """The liver's SDF: lobes, surface relief, cavity and diaphragm, organ impressions."""
        lobes = self.liver_lobes()
        d = lobes[0].sdf_on(z, y, x, 25.0)
        for lobe in lobes[1:]:
            d = _smin(d, lobe.sdf_on(z, y, x, 25.0), 18.0)
        d += self.liver_disp * fields["shape"](z, y, x)
        d = np.maximum(d, self.body.cavity_sdf(z, y, x) + 1.0)
        zz = np.asarray(z, np.float32)[:, None, None]
        d = np.maximum(d, zz - (self.diaphragm.z(y, x)[None] - 5.0))
        # fissure of the ligamentum teres: a thin fat cleft between the lobes, from the front
        fis_x = self.liver_anchor[2] + self.liver_scale * (8.0 - self.liver_anchor[2])
        X = np.asarray(x, np.float32)[None, None, :]
        Y = np.asarray(y, np.float32)[None, :, None]
        fis = np.maximum(np.abs(X - fis_x) - 2.5, Y + 30.0)
        fis = np.maximum(fis, np.abs(zz + 75.0) - 30.0)
        d = np.maximum(d, -fis)
        carves = [(self.ivc, 1.0), (self.portal, 2.0), (self.stomach, 3.0), (self.duodenum, 2.0),
                  (self.colon, 3.0), (self.kidneys[0][1], 3.0), (self.kidneys[1][1], 3.0), (self.spleen, 3.0),
                  (self.pancreas, 3.0), (self.aorta, 4.0), (self.esophagus, 2.0), (self.heart, 4.0)]
        if self.gallbladder is not None:
            carves.append((self.gallbladder, 1.5))
        for shape, gap in carves:
            box = _index_box(z, y, x, shape.lo - gap - 2, shape.hi + gap + 2)
            if box is None:
                continue
            other = shape.sdf_on(z[box[0]], y[box[1]], x[box[2]], gap + 2)
            view = d[box]
            np.maximum(view, gap - other, out=view)
        # the vertebral column
        ys = self.spine_y(z)
        vert = _ellipse2d(Y, X, ys[:, None, None].astype(np.float32), np.float32(0), 20.0, 22.0)
        d = np.maximum(d, 6.0 - vert)
        return d

    def liver_box(self, margin=8.0):
        lobes = self.liver_lobes()
        lo = np.min([lb.lo for lb in lobes], axis=0) - self.liver_disp * 3 - margin
        hi = np.max([lb.hi for lb in lobes], axis=0) + self.liver_disp * 3 + margin
        hi[0] = min(hi[0], 15.0)
        return lo, hi


# =========================================================================== rendering


class _Canvas:
    """Float HU image and tissue map painted structure by structure (painter's algorithm)."""

    def __init__(self, z, y, x, w, air, cell: float = 1.6):
        self.cell = cell  # SDFs are evaluated no finer than this (mm) and upsampled
        self.z = np.asarray(z, np.float64)
        self.y = np.asarray(y, np.float64)
        self.x = np.asarray(x, np.float64)
        self.w = np.float32(w)
        shape = (len(z), len(y), len(x))
        self.img = np.full(shape, air, np.float32)
        self.tis = np.zeros(shape, np.uint8)

    def box(self, lo, hi):
        return _index_box(self.z, self.y, self.x, lo, hi)

    def sub(self, box):
        return self.z[box[0]], self.y[box[1]], self.x[box[2]]

    def alpha(self, d):
        a = np.multiply(d, np.float32(-1.0) / self.w, dtype=np.float32)
        a += np.float32(0.5)
        return np.clip(a, 0.0, 1.0, out=a)

    def paint(self, box, d, value, tissue: str):
        """Composite a structure with SDF ``d`` (on ``box``) over what is there.

        ``d`` and ``value`` may be anything that broadcasts to the box.
        """
        a = self.alpha(d)
        view = self.img[box]
        delta = np.subtract(np.float32(value) if np.ndim(value) == 0 else value, view, dtype=np.float32)
        delta *= a
        view += delta
        np.copyto(self.tis[box], np.uint8(TISSUES[tissue]), where=a >= 0.5)

    def sdf(self, fn, box, cell: float | None = None):
        """``fn(z, y, x)`` on the box, evaluated on a grid no finer than ``cell`` mm and upsampled.

        Linear interpolation of an SDF errs by about cell**2 / (8 R) for a surface of curvature
        radius R: 3 mm suits organs (R >= 10 mm, error ~0.1 mm), thin vessels need the default.
        """
        return _on_grid(fn, *self.sub(box), self.cell if cell is None else cell)

    def draw(self, shape: _Shape, value, tissue: str, grow: float = 0.0):
        box = self.box(shape.lo - self.w - grow - 1, shape.hi + self.w + grow + 1)
        if box is None:
            return None
        z, y, x = self.sub(box)
        d = self.sdf(shape.sdf, box) - grow
        self.paint(box, d, value(z, y, x, d) if callable(value) else value, tissue)
        return box, d


def _hu_table(rng, phase: str, oral: bool) -> dict[str, float]:
    hu = {}
    for name, by_phase in _HU.items():
        lo, hi = by_phase.get(phase, by_phase.get("*"))
        hu[name] = float(rng.uniform(lo, hi))
    # keep the classic relations: spleen darker than liver unenhanced, a little brighter in venous phase
    if phase == "unenhanced":
        hu["spleen"] = hu["liver"] - rng.uniform(4, 12)
    elif phase == "portal_venous":
        hu["spleen"] = hu["liver"] + rng.uniform(0, 15)
    hu["visceral_fat"] = hu["fat"] + rng.uniform(0, 12)
    hu["bowel_fluid"] = hu["oral_contrast"] if oral else hu["bowel_fluid"]
    return hu


def _paint_body(anat: _Anatomy, c: _Canvas, hu) -> None:
    """Table, skin, subcutaneous fat, muscle wall and the fat filling the cavity."""
    body = anat.body
    # ---------------------------------------------------------------- table
    back = body.back(c.z)
    ytab = float(back.max()) + 5.0
    X = c.x[None, :].astype(np.float32)
    for off, thick in ((0.0, 1.2), (30.0, 2.0)):
        tbox = c.box(np.array([-1e9, ytab + off - 5.0, -1e9]), np.array([1e9, ytab + off + 80.0, 1e9]))
        if tbox is None:
            continue
        Yt = c.y[tbox[1]][:, None].astype(np.float32)
        curve = ytab + off + 0.0022 * X**2
        d = np.maximum(np.abs(Yt - curve) - thick, np.abs(X) - (body.a + 70.0 - off))
        c.paint(tbox, d[None], hu["table"], "table")

    # ---------------------------------------------------------------- body wall
    full = (slice(None),) * 3
    Y = c.y[None, :, None].astype(np.float32)
    rho, r_cav, r_mus, r_skin = body.layers(c.z, c.y, c.x)
    d = np.maximum(rho - r_skin, Y - back[:, None, None])
    c.paint(full, d, hu["skin"], "skin")
    d += 2.0
    c.paint(full, d, hu["fat"], "fat")
    np.subtract(rho, r_mus, out=d)
    c.paint(full, d, hu["muscle"], "muscle")
    # fat planes between the flank muscles (external, internal oblique, transversus)
    # (computed on the two flank column ranges of the abdominal planes only)
    nz = int(np.searchsorted(c.z, -30.0))
    for cols in (slice(0, int(np.searchsorted(c.x, -60.0))), slice(int(np.searchsorted(c.x, 60.0)), len(c.x))):
        if nz == 0 or cols.stop <= cols.start:
            continue
        fbox = (slice(0, nz), slice(None), cols)
        _, theta2 = body.polar(c.y, c.x[cols])
        flank = ((np.abs(theta2) > 0.7) & (np.abs(theta2) < 2.1))[None]
        rc, rm, rh = r_cav[fbox], r_mus[fbox], rho[:, :, cols]
        thick = rm - rc
        frac = (rh - rc) / np.maximum(thick, 1.0)
        for level in (0.34, 0.67):
            d = np.abs(frac - level) * thick - 0.5
            d[~np.broadcast_to(flank, d.shape)] = _BIG
            c.paint(fbox, d, hu["fat"], "fat")
    del r_mus, r_skin
    d_cav = np.subtract(rho, r_cav)
    del rho, r_cav
    c.paint(full, d_cav, hu["visceral_fat"], "fat")
    del d_cav
    # the fascia around the paraspinal muscles: a thin fat line outlining them in the muscle
    pbox = c.box(np.array([-1e9, 20.0, -110.0]), np.array([1e9, 200.0, 110.0]))
    if pbox is not None:
        zp, yp, xp = c.sub(pbox)
        ys = anat.spine_y(zp).astype(np.float32)[:, None, None]
        Yp, Xp = yp[None, :, None].astype(np.float32), xp[None, None, :].astype(np.float32)
        for side in (-1, 1):
            dp = np.abs(_ellipse2d(Yp, Xp, ys + 54.0, side * 34.0, 28.0, 30.0)) - 0.6
            dp[c.tis[pbox] != TISSUES["muscle"]] = _BIG
            c.paint(pbox, dp, hu["fat"] * 0.6, "muscle")



def _render(anat: _Anatomy, canvas: _Canvas, fields, hu, phase, lesions_spec) -> dict:
    """Paint every structure; returns facts for the meta dict."""
    c = canvas
    body = anat.body
    w = c.w
    tex = fields["texture"]
    fine = fields["fine"]

    def textured(base, amp, f=tex):
        return lambda z, y, x, d: base + amp * f(z, y, x)

    # ---------------------------------------------------------------- body wall
    # The outline changes slowly with height: paint it once per band of planes at most 6 mm
    # thick and copy it to the band's planes (the error is well under a millimetre).
    step = float(c.z[1] - c.z[0]) if len(c.z) > 1 else 6.0
    group = np.arange(len(c.z)) // max(1, int(6.0 // step))
    reps = np.array([c.z[group == g].mean() for g in range(group[-1] + 1)])
    wall = _Canvas(reps, c.y, c.x, c.w, _GAS_HU)
    _paint_body(anat, wall, hu)
    np.take(wall.img, group, axis=0, out=c.img)
    np.take(wall.tis, group, axis=0, out=c.tis)
    del wall

    # diaphragm (a muscle sheet) and, above it, the thorax
    zdia = anat.diaphragm.z(c.y, c.x)[None]
    Z = c.z[:, None, None].astype(np.float32)
    rho2, theta2 = body.polar(c.y, c.x)
    in_cavity = rho2 < body.r_cavity2d(theta2) * 1.1
    zdia_min = float(zdia[0][in_cavity].min()) if in_cavity.any() else 0.0
    rows, cols = np.nonzero(in_cavity)
    thorax = None
    if len(rows):
        thorax = c.box(np.array([zdia_min - 7.0, c.y[rows.min()], c.x[cols.min()]]),
                       np.array([1e9, c.y[rows.max()], c.x[cols.max()]]))
    # strands in the fat (septa, small vessels): thin sheets where a smooth field crosses zero
    sbox = c.box(np.array([-1e9, -body.b_ant - 40.0, -body.a - 60.0]), np.array([1e9, 1e9, body.a + 60.0]))
    if sbox is not None:
        z, y, x = c.sub(sbox)
        strands = np.abs(fields["strands"](z, y, x)) * 9.0 - 0.5
        strands[c.tis[sbox] != TISSUES["fat"]] = _BIG  # only in fat
        c.paint(sbox, strands, hu["visceral_fat"] + 70.0, "fat")
        del strands
    if thorax is not None:
        zt = Z[thorax[0]]
        dc = body.cavity_sdf(*c.sub(thorax))
        zd = zdia[:, thorax[1], thorax[2]]
        c.paint(thorax, np.maximum(dc, (zd - 6.0) - zt), hu["muscle"], "muscle")
        c.paint(thorax, np.maximum(dc, zd - zt), hu["visceral_fat"], "fat")
        del dc

    # ---------------------------------------------------------------- heart, lungs
    def heart_sdf(z, y, x):
        d = anat.heart.sdf(z, y, x)
        d = np.maximum(d, anat.diaphragm.z(y, x)[None] + 4.0 - z[:, None, None])
        return np.maximum(d, body.cavity_sdf(z, y, x) + 4.0)

    box = c.box(anat.heart.lo - 8.0, anat.heart.hi + 8.0)
    if box is not None:
        d = c.sdf(heart_sdf, box, _ORGAN_CELL)
        c.paint(box, d - 5.0, hu["visceral_fat"], "fat")  # pericardial fat
        c.paint(box, d, np.where(d < -9.0, hu["blood"], hu["myocardium"]).astype(np.float32), "heart")

    def lungs(z, y, x):
        d = np.maximum(body.cavity_sdf(z, y, x) + 2.0, (anat.diaphragm.z(y, x)[None] + 0.5) - z[:, None, None])
        d = np.maximum(d, -_ellipse2d(y[None, :, None], x[None, None, :], 18.0, 8.0, 36.0, 34.0))  # mediastinum
        d = np.maximum(d, 7.0 - anat.heart.sdf_on(z, y, x, 10.0))
        # pulmonary vessels: where two smooth fields both cross zero, curves in 3-D
        f1, f2 = fields["lung"](z, y, x), fields["lung2"](z, y, x)
        vessel = np.sqrt(f1 * f1 + f2 * f2) * 5.0 - 1.2
        return d, vessel, hu["lung"] + 25.0 * fields["texture"](z, y, x)

    if thorax is not None:
        d, vessel, lung = c.sdf(lungs, thorax, _ORGAN_CELL)
        c.paint(thorax, d, lung, "lung")
        c.paint(thorax, np.maximum(vessel, d + 3.0), hu["blood"], "vein")
        del vessel, lung
    c.draw(anat.esophagus, hu["bowel_wall"], "bowel_wall")

    # ---------------------------------------------------------------- retroperitoneal muscles
    sbox = c.box(np.array([-1e9, -40.0, -130.0]), np.array([-80.0, 120.0, 130.0]))

    def retroperitoneal(z, y, x):
        """Psoas (growing downwards) and quadratus lumborum muscles, both sides."""
        ys = anat.spine_y(z).astype(np.float32)[:, None, None]
        r_ps = (4.0 + 21.0 * _smoothstep((-88.0 - z) / 140.0)).astype(np.float32)[:, None, None]
        Yb, Xb = y[None, :, None].astype(np.float32), x[None, None, :].astype(np.float32)
        zb = z[:, None, None].astype(np.float32)
        d = np.full((len(z), len(y), len(x)), _BIG, np.float32)
        for side in (-1, 1):
            psoas = _ellipse2d(Yb, Xb, ys + 2.0 - 0.25 * r_ps, side * (22.0 + 0.9 * r_ps), r_ps * 0.85, r_ps)
            quadratus = _ellipse2d(Yb, Xb, ys + 24.0, side * 62.0, 9.0, 17.0)
            d = np.minimum(d, np.maximum(psoas, zb + 85.0))
            d = np.minimum(d, np.maximum(quadratus, np.maximum(zb + 95.0, -zb - 215.0)))
        return d

    if sbox is not None:
        c.paint(sbox, c.sdf(retroperitoneal, sbox), hu["muscle"], "muscle")

    # ---------------------------------------------------------------- bowel
    # small bowel loops fill the lower abdomen (random walks), under the stomach and colon
    rng_b = np.random.default_rng(anat.rng.integers(2**32))
    tubes = []
    zlo = float(c.z[0])
    if zlo < -130.0:
        n_chains = int(np.clip((-130.0 - zlo) / 14.0, 2, 12))
        for _ in range(n_chains):
            pos = np.array([rng_b.uniform(max(zlo, -300), -135), rng_b.uniform(-70, 5), rng_b.uniform(-60, 75)])
            direc = rng_b.normal(0, 1, 3)
            pts = [pos.copy()]
            for _ in range(rng_b.integers(18, 34)):
                direc = direc / np.linalg.norm(direc) + rng_b.normal(0, 0.55, 3)
                direc /= np.linalg.norm(direc)
                pos = pos + 8.0 * direc
                lo, hi = np.array([-320.0, -78.0, -78.0]), np.array([-120.0 - 30.0 * (pos[2] < 0), 14.0, 85.0])
                bounce = (pos < lo) | (pos > hi)
                direc[bounce] *= -1
                pos = np.clip(pos, lo, hi)
                pts.append(pos.copy())
            r = rng_b.uniform(9.5, 13.0)
            tubes.append(_Tube(_Chain(np.array(pts), np.full(len(pts), r)), 2.0, "fluid",
                               rng_b.uniform(0, 0.45) if rng_b.random() < 0.35 else 0.0))
    for tube in tubes + list(anat.tubes):
        box = c.box(tube.chain.lo - w - 1, tube.chain.hi + w + 1)
        if box is None:
            continue
        z, y, x = c.sub(box)
        d, axis_y, radius = c.sdf(lambda z, y, x: tube.chain.sdf_full(z, y, x, 4.0), box, _TUBE_CELL)
        c.paint(box, d, hu["bowel_wall"], "bowel_wall")
        lumen = d + tube.wall
        if tube.content == "stool":
            f, t = c.sdf(lambda z, y, x: (fine(z, y, x), tex(z, y, x)), box)
            bubbles = np.clip((f - 0.6) / 0.5, 0.0, 1.0)
            content = hu["stool"] + 25.0 * t
            content = content + bubbles * (_GAS_HU - content)
        elif tube.content == "food":
            content = hu["bowel_fluid"] + 12.0 + 15.0 * c.sdf(tex, box)
        else:
            content = np.float32(hu["bowel_fluid"])
        c.paint(box, lumen, content, "bowel_content")
        if tube.gas > 0:
            level = axis_y - radius + 2.0 * radius * tube.gas
            gas = np.maximum(lumen, y[None, :, None] - level)
            c.paint(box, gas, _GAS_HU, "gas")

    # ---------------------------------------------------------------- solid organs
    medulla_gap = hu["kidney"] - hu["kidney_medulla"]
    for side, kid, sinus in anat.kidneys:
        box = c.box(kid.lo - w - 2, kid.hi + w + 2)
        if box is None:
            continue

        def kidney(z, y, x, kid=kid, sinus=sinus):
            d = kid.sdf(z, y, x) + 1.5 * fields["shape"](z, y, x)
            d = np.maximum(d, body.cavity_sdf(z, y, x) + 1.0)
            ds = sinus.sdf_on(z, y, x)
            return np.maximum(d, -ds), ds, fine(z, y, x)

        d, ds, f = c.sdf(kidney, box, _ORGAN_CELL)
        # medulla: the pyramids lie inside a ~6 mm cortex
        pyramids = np.clip((-d - 5.0) / 3.0, 0, 1) * np.clip(0.5 + f, 0, 1)
        val = hu["kidney"] - medulla_gap * pyramids
        c.paint(box, d, val, "kidney")
        c.paint(box, np.maximum(ds + 2.0, d + 1.0), hu["visceral_fat"], "fat")
    c.draw(anat.pancreas, textured(hu["pancreas"], 8.0, fine), "pancreas")
    box = c.box(anat.spleen.lo - w - 2, anat.spleen.hi + w + 2)
    if box is not None:

        def spleen(z, y, x):
            d = anat.spleen.sdf(z, y, x) + 3.0 * fields["shape"](z, y, x)
            d = np.maximum(d, body.cavity_sdf(z, y, x) + 3.0)
            d = np.maximum(d, z[:, None, None] - (anat.diaphragm.z(y, x)[None] - 5.0))
            for other, gap in ((anat.stomach, 3.0), (anat.kidneys[1][1], 3.0), (anat.colon, 2.0)):
                d = np.maximum(d, gap - other.sdf_on(z, y, x, gap + 2))
            return d, tex(z, y, x)

        d, t = c.sdf(spleen, box, _ORGAN_CELL)
        c.paint(box, d, hu["spleen"] + (12.0 if phase == "arterial" else 3.0) * t, "spleen")
    if anat.gallbladder is not None:
        gb = c.draw(anat.gallbladder, hu["bowel_wall"], "gallbladder")
        if gb is not None:
            c.paint(gb[0], gb[1] + 2.0, hu["bile"], "gallbladder")

    # ---------------------------------------------------------------- liver
    lo, hi = anat.liver_box()
    lbox = c.box(lo, hi)
    facts = {"lesions": []}
    if lbox is not None:
        d_liver, t = c.sdf(lambda z, y, x: (anat.liver_sdf(z, y, x, fields), tex(z, y, x)), lbox, _ORGAN_CELL)
        portal, hepatic = c.sdf(
            lambda z, y, x: (anat.portal_tree.sdf(z, y, x, 4.0), anat.hepatic_tree.sdf(z, y, x, 4.0)), lbox
        )
        c.paint(lbox, d_liver, hu["liver"] + 3.5 * t, "liver")
        # intrahepatic vessels, kept 1.5 mm inside the capsule
        for d, value in ((portal, hu["portal_vein"]), (hepatic, hu["hepatic_vein"])):
            c.paint(lbox, np.maximum(d, d_liver + 1.5), value, "liver_vessel")
        del t, portal, hepatic
        for les in lesions_spec:
            facts["lesions"].append(_paint_lesion(c, lbox, d_liver, les, hu, fields))

    # ---------------------------------------------------------------- vessels
    c.draw(anat.aorta, hu["artery"], "artery")
    for art in anat.arteries:
        c.draw(art, hu["artery"], "artery")
    c.draw(anat.ivc, hu["vein"], "vein")
    for vein in anat.veins:
        c.draw(vein, hu["vein"], "vein")
    c.draw(anat.portal, hu["portal_vein"], "vein")

    # ---------------------------------------------------------------- skeleton
    _paint_spine(anat, c, hu, fine)
    _paint_ribs(anat, c, hu)
    _paint_pelvis(anat, c, hu)
    return facts


def _bone_value(hu, cortex=1.6, texture=None):
    """Cortical shell over cancellous bone (trabecular texture from ``texture`` if given)."""

    def value(z, y, x, d):
        inner = hu["bone"] if texture is None else hu["bone"] + 35.0 * texture
        return np.where(d > -cortex, np.float32(hu["cortical_bone"]), inner).astype(np.float32)

    return value


def _paint_spine(anat, c: _Canvas, hu, fine):
    """Vertebral bodies with cortex and discs, posterior arches, canal: per-plane closed forms."""
    box = c.box(np.array([-1e9, -10.0, -75.0]), np.array([1e9, 130.0, 75.0]))
    shift = anat.spine_shift
    # levels: thoracic bodies 22 mm + 5 mm discs down to z ~ -86, lumbar 28 mm + 10 mm discs
    tops, bots = [], []
    zt = 180.0 + shift
    while zt > -420:
        lumbar = zt < -70 + shift
        h, disc = (28.0, 10.0) if lumbar else (22.0, 5.0)
        tops.append(zt)
        bots.append(zt - h)
        zt -= h + disc
    tops, bots = np.array(tops), np.array(bots)
    centres, half = (tops + bots) / 2, (tops - bots) / 2

    def spine(z, y, x):
        k = np.argmin(np.abs(z[:, None] - centres[None]), axis=1)
        rel = z - centres[k]  # height within the nearest vertebra
        dz_end = (np.abs(rel) - half[k]).astype(np.float32)[:, None, None]
        lumbar = _smoothstep((-z - 40.0) / 80.0).astype(np.float32)[:, None, None]
        ys = anat.spine_y(z).astype(np.float32)[:, None, None]
        ry, rx = 14.5 + 3.0 * lumbar, 15.5 + 7.0 * lumbar
        Y, X = y[None, :, None].astype(np.float32), x[None, None, :].astype(np.float32)
        d2 = _ellipse2d(Y, X, ys, 0.0, ry, rx)
        disc = np.maximum(d2 - 0.5, -dz_end)
        body = np.maximum(d2, dz_end)
        # posterior arch: pedicles and transverse processes in the upper part of each vertebra,
        # laminae and spinous process at every level
        arch_dz = (np.maximum(-rel - 0.35 * half[k], rel - half[k] - 3.0)).astype(np.float32)[:, None, None]
        cy = ys + ry + 10.0
        canal = _ellipse2d(Y, X, cy, 0.0, 8.5, 10.0)
        ring = np.maximum(_ellipse2d(Y, X, cy + 1.0, 0.0, 15.5, 16.0), -canal)
        ring = np.maximum(ring, ys + ry - 2.0 - Y)  # the pedicles start at the back of the body
        spin = _segment2d(Y, X, (cy + 10.0, 0.0), (cy + 38.0 + 5.0 * lumbar, 0.0)) - 3.5
        tlen = 26.0 + 16.0 * lumbar
        ty0, ty1 = cy - 2.0 + 10.0 * (1 - lumbar), cy + 2.0 + 12.0 * (1 - lumbar)
        trans = np.minimum(_segment2d(Y, X, (ty0, -8.0), (ty1, -tlen)), _segment2d(Y, X, (ty0, 8.0), (ty1, tlen)))
        trans = trans - 5.5
        laminae = np.maximum(ring, cy + 2.0 - Y)
        arch = np.minimum(np.maximum(np.minimum(ring, np.maximum(trans, arch_dz + 4.0)), arch_dz),
                          np.minimum(laminae, spin))
        shape = (len(z), len(y), len(x))
        return (np.broadcast_to(disc, shape), np.broadcast_to(body, shape), np.broadcast_to(arch, shape),
                np.broadcast_to(canal, shape), fine(z, y, x))

    disc, d_body, arch, canal, tex = c.sdf(spine, box)
    c.paint(box, disc, hu["disc"], "disc")
    c.paint(box, d_body, _bone_value(hu, texture=tex)(None, None, None, d_body), "bone")
    np.copyto(c.tis[box], np.uint8(TISSUES["cortical_bone"]), where=(d_body > -1.6) & (d_body <= 0))
    c.paint(box, arch, _bone_value(hu, 1.2)(None, None, None, arch), "bone")
    c.paint(box, canal, hu["csf"], "csf")


def _paint_ribs(anat, c: _Canvas, hu):
    """Ribs 6-12 and costal cartilage, sloping down and forward in the body wall.

    Computed only on the pixels of the wall ring, as (plane, ring pixel) arrays.
    """
    body = anat.body
    zmask = (c.z > -175.0) & (c.z < 200.0)
    if not zmask.any():
        return
    zi = np.flatnonzero(zmask)
    z = c.z[zi].astype(np.float32)
    rho, theta = body.polar(c.y, c.x)
    rcav = body.r_cavity2d(theta)
    ring = (rho > rcav * 0.9 - 6.0) & (rho < rcav * 1.08 + 18.0)
    ri, ci = np.nonzero(ring)
    order = np.argsort(c.x[ci] > 0, kind="stable")  # right side first, then left: contiguous halves
    ri, ci = ri[order], ci[order]
    rho, theta, rcav = rho[ri, ci], theta[ri, ci], rcav[ri, ci]
    phi = np.pi - np.abs(theta)  # 0 at the spine, pi at the front
    n_right = int((c.x[ci] <= 0).sum())
    zs = body.zscale(z)[:, None]
    dr = (rho[None] - (rcav[None] * zs + 5.0)) / 3.8
    best = np.full((len(z), len(ri)), _BIG, np.float32)
    cart = np.zeros_like(best, dtype=bool)
    shift = anat.spine_shift
    # rib: (head height, anterior end as a fraction of pi, descent to its lowest point)
    ribs = {6: (104, 0.97, 125), 7: (75, 0.95, 130), 8: (46, 0.9, 135), 9: (17, 0.85, 135), 10: (-12, 0.8, 130),
            11: (-41, 0.58, 85), 12: (-71, 0.42, 55)}
    for half in (slice(0, n_right), slice(n_right, len(ri))):
        ph, rh = phi[half], rho[half]
        for n, (zh, end, drop) in ribs.items():
            zh = zh + shift
            f_end = end * np.pi
            planes = slice(int(np.searchsorted(z, zh - drop - 8.0)), int(np.searchsorted(z, zh + 8.0)))
            if planes.stop <= planes.start or half.stop <= half.start:
                continue
            # down and forward from the spine, then the costal cartilage turns up to the sternum
            t = np.clip((ph - 0.13 * np.pi) / (0.62 * np.pi), 0, 1)
            zr = zh - drop * t**1.3 + 30.0 * np.clip((ph - 0.75 * np.pi) / (0.25 * np.pi), 0, 1)
            dzr = (z[planes, None] - zr[None]) / 5.5
            drs = dr[planes, half]
            d = (np.sqrt(drs * drs + dzr * dzr) - 1.0) * 3.8
            outside = np.maximum(0.13 * np.pi - ph, ph - f_end) * rh
            d = np.maximum(d, outside[None])
            sub, cs = best[planes, half], cart[planes, half]  # views
            closer = d < sub
            sub[closer] = d[closer]
            cs[closer] = np.broadcast_to(((ph > f_end - 0.2 * np.pi) & (n <= 10))[None], cs.shape)[closer]
    index = (zi[:, None], ri[None, :], ci[None, :])
    view_img = c.img[index]
    view_tis = c.tis[index]
    a = c.alpha(best)
    value = np.where(cart, hu["cartilage"], np.where(best > -1.6, hu["cortical_bone"], hu["bone"]))
    view_img += a * (value - view_img)
    view_tis[a >= 0.5] = np.where(cart, TISSUES["cartilage"], np.where(best > -1.6, TISSUES["cortical_bone"],
                                                                       TISSUES["bone"]))[a >= 0.5]
    c.img[index] = view_img  # fancy indexing returned copies: write back
    c.tis[index] = view_tis
    # xiphoid process at the front of the lower chest
    zmin = -15.0 + shift
    xiph = _Chain(np.array([_P(0, -body.b_ant + 2, 60 + shift), _P(0, -body.b_ant + 4, zmin)]), np.array([6.0, 5.0]))
    c.draw(xiph, _bone_value(hu), "bone")


def _paint_pelvis(anat, c: _Canvas, hu):
    """Iliac wings, with iliacus inside and gluteal muscles outside, below the iliac crest."""
    crest = -222.0 + anat.spine_shift
    box = c.box(np.array([-1e9, -80.0, -200.0]), np.array([crest, 150.0, 200.0]))
    if box is None:
        return
    z, y, x = c.sub(box)
    depth = (crest - z).astype(np.float32)[:, None, None]
    Y, X = y[None, :, None].astype(np.float32), x[None, None, :].astype(np.float32)
    inner = anat.body.cavity_sdf(z, y, x)
    for s in (-1, 1):
        cy, cx = -5.0, s * 40.0
        dist = np.sqrt((Y - cy) ** 2 + (X - cx) ** 2)
        ang = np.degrees(np.arctan2(Y - cy, s * (X - cx)))
        ext = np.minimum(48.0, 18.0 + 1.2 * depth)
        angular = np.maximum(ang - (50.0 + ext), (50.0 - ext) - ang) * np.pi / 180.0 * dist
        thick = np.minimum(5.0, 2.5 + 0.06 * depth)
        for r_mid, half, value, tissue in ((66.0, 11.0, hu["muscle"], "muscle"), (100.0, 16.0, hu["muscle"], "muscle")):
            d = np.maximum(np.abs(dist - r_mid) - half, angular - 6.0)
            d = np.maximum(d, inner - 1.5 * anat.body.muscle)
            c.paint(box, d, value, tissue)
        d = np.maximum(np.abs(dist - 82.0) - thick, angular)
        d = np.maximum(d, inner - anat.body.muscle)
        c.paint(box, d, _bone_value(hu, 1.8)(None, None, None, d), "bone")


def _paint_lesion(c: _Canvas, lbox, d_liver, les, hu, fields):
    """One lesion, clipped 1 mm inside the liver; returns its description."""
    ell = les["shape"]
    box = _index_box(c.z[lbox[0]], c.y[lbox[1]], c.x[lbox[2]], ell.lo - 4, ell.hi + 4)
    if box is None:
        return {k: v for k, v in les.items() if k not in ("shape", "offset", "scale")}
    z = c.z[lbox[0]][box[0]]
    y = c.y[lbox[1]][box[1]]
    x = c.x[lbox[2]][box[2]]
    r = les["diameter_mm"] / 2 / les["scale"]
    d, tex = _on_grid(
        lambda z, y, x: (ell.sdf(z, y, x) + 0.12 * r * fields["fine"](z + les["offset"], y, x),
                         fields["fine"](z, y + les["offset"], x)),
        z, y, x, c.cell,
    )
    d = np.maximum(d, d_liver[box] + 1.0)
    value = hu["liver"] + les["delta_hu"] + 6.0 * tex
    if les["necrosis"]:
        value = value - 25.0 * np.clip((-d - 0.45 * r) / (0.2 * r), 0.0, 1.0)
    if les["rim"]:
        value = value + 45.0 * np.clip(1.0 - np.abs(d + 2.5) / 2.0, 0.0, 1.0)
    gbox = tuple(slice(a.start + b.start, a.start + b.stop) for a, b in zip(lbox, box))
    c.paint(gbox, d, value, "lesion")
    return {k: v for k, v in les.items() if k not in ("shape", "offset", "scale")}


# =========================================================================== one case


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


def _liver_volume_ml(anat: _Anatomy, fields, scale_xyz, cell=4.0) -> tuple[float, np.ndarray]:
    lo, hi = anat.liver_box(margin=4.0)
    z = np.arange(lo[0], hi[0], cell)
    y = np.arange(lo[1], hi[1], cell)
    x = np.arange(lo[2], hi[2], cell)
    d = anat.liver_sdf(z, y, x, fields)
    inside = d < 0
    ml = float(inside.sum()) * cell**3 * float(np.prod(scale_xyz)) / 1000.0
    return ml, (z, y, x, d)


def make_phantom(case_id: int, seed: int = 7, size: int = 256, n_slices: int | None = None) -> Phantom:
    """Render one synthetic abdominal CT case.

    Parameters
    ----------
    case_id : int
        Case number; with ``seed`` it fixes the whole case.
    seed : int
        Cohort seed.
    size : int
        In-plane pixels (rows = columns = size), at least 64.
    n_slices : int, optional
        Number of axial planes. By default a slice spacing of 1-5 mm is drawn
        that gives 40-150 planes over the scanned range.

    Returns
    -------
    Phantom
    """
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    if n_slices is not None and n_slices < 8:
        raise ValueError(f"n_slices must be at least 8, got {n_slices}")
    if case_id < 0:
        raise ValueError(f"case_id must be >= 0, got {case_id}")
    rng_anat, rng_scan, rng_lesion, rng_noise = (
        np.random.default_rng(s) for s in np.random.SeedSequence([int(seed), int(case_id)]).spawn(4)
    )

    # ---------------------------------------------------------------- patient
    anat = _Anatomy(rng_anat)
    scale = np.array([rng_anat.uniform(0.9, 1.1), 1.0, rng_anat.uniform(0.9, 1.1)])  # (z, y, x)
    scale[1] = scale[2] * rng_anat.uniform(0.92, 1.06)
    lo_f, hi_f = np.array([-420.0, -260.0, -300.0]), np.array([220.0, 260.0, 300.0])
    fields = {"shape": _Field(rng_anat, lo_f, hi_f, 22.0)}

    # liver volume: rescale the lobes until the volume hits the target
    # (secant steps on log volume vs log scale; the clipping makes it a little less than cubic)
    target_ml = rng_anat.uniform(1250.0, 1950.0)
    f_prev, v_prev = 1.0, None
    anat.liver_scale = 1.0
    for _ in range(5):
        liver_ml, (cz, cy, cx, cd) = _liver_volume_ml(anat, fields, scale)
        if abs(liver_ml - target_ml) < 0.02 * target_ml:
            break
        f = anat.liver_scale
        slope = 3.0
        if v_prev is not None and abs(np.log(f / f_prev)) > 1e-3 and v_prev > 0 and liver_ml > 0:
            slope = float(np.clip(np.log(liver_ml / v_prev) / np.log(f / f_prev), 1.5, 4.0))
        f_prev, v_prev = f, liver_ml
        anat.liver_scale = float(np.clip(f * (target_ml / max(liver_ml, 1.0)) ** (1.0 / slope), 0.6, 1.5))
    else:
        liver_ml, (cz, cy, cx, cd) = _liver_volume_ml(anat, fields, scale)
    liver_z = cz[np.any(cd < 0, axis=(1, 2))]
    liver_bottom, liver_top = float(liver_z.min()), float(liver_z.max())

    # ---------------------------------------------------------------- scanner
    phase = PHASES[rng_scan.choice(3, p=[0.2, 0.2, 0.6])]
    z_top = rng_scan.uniform(max(10.0, liver_top + 6.0), 60.0)
    z_bot = max(liver_bottom - rng_scan.uniform(10.0, 130.0), -320.0)
    coverage = (z_top - z_bot) * scale[0]
    # (always drawn, so that the other draws do not depend on n_slices)
    options = [s for s in _SLICE_SPACINGS if 40 <= coverage / s <= 150] or [coverage / 100.0]
    dz = float(rng_scan.choice(options))
    n = int(round(coverage / dz))
    if n_slices is not None:
        n = int(n_slices)
        dz = round(coverage / n, 3)
    # field of view: the body's width times a margin, and the whole outline inside the circle
    outline_y, outline_x = _outline(anat, np.linspace(z_bot, z_top, 12), scale)
    offset_x = rng_scan.uniform(-12.0, 12.0)
    offset_y = rng_scan.uniform(-15.0, 25.0)
    width = float(outline_x.max() - outline_x.min())
    reach = float(np.sqrt((outline_x + offset_x) ** 2 + (outline_y + offset_y) ** 2).max())
    fov = float(np.clip(max(width * rng_scan.uniform(1.03, 1.2), 2 * reach + 10.0), 300.0, 450.0))
    if 2 * reach + 12.0 > fov:  # a very large patient: centre it
        offset_x = offset_y = 0.0
    px = fov / size
    noise_sigma = float(rng_scan.uniform(6.0, 22.0))
    psf_mm = float(rng_scan.uniform(0.6, 1.0))
    padding = PADDING_VALUES[rng_scan.choice(len(PADDING_VALUES), p=[0.3, 0.25, 0.2, 0.15, 0.1])]
    intercept = -1024.0 if rng_scan.random() < 0.2 else 0.0
    ax_i = rng_scan.choice(len(_AXCODES), p=[p for _, p in _AXCODES])
    axcodes = _AXCODES[ax_i][0]
    table_z = float(rng_scan.uniform(-900.0, -100.0))
    oral = bool(rng_scan.random() < 0.15)
    hu = _hu_table(rng_scan, phase, oral)

    # smooth random fields over the scanned range: textures, stool gas, lung vessels
    lo_f[0], hi_f[0] = z_bot - 20.0, z_top + 20.0
    lo_f[1:], hi_f[1:] = -220.0, 220.0
    for name, cell in (("texture", 9.0), ("fine", 4.0), ("lung", 11.0), ("lung2", 11.0), ("strands", 7.0)):
        fields[name] = _Field(rng_anat, lo_f, hi_f, cell)

    # ---------------------------------------------------------------- lesions (size independent)
    lesions_spec = _sample_lesions(rng_lesion, anat, (cz, cy, cx, cd), dz, phase, scale)

    # ---------------------------------------------------------------- grid in the standard frame
    # The noise-free anatomy is rendered at most 256 pixels across and with slices of at least
    # ~1.6 mm, then upsampled by whole factors (linear for HU, nearest for tissues): fine grids
    # (512 pixels, thin slices) cost little more than the default. Noise and blur come after,
    # at full resolution.
    f_xy = max(1, int(np.ceil(size / 256)))
    f_z = max(1, int(round(1.6 / dz))) if dz < 1.2 else 1
    n_xy, n_z = -(-size // f_xy), -(-n // f_z)
    idx = (np.arange(n_xy, dtype=np.float64) * f_xy + (f_xy - 1) / 2.0) - (size - 1) / 2.0
    x_std = (idx * px - offset_x) / scale[2]
    y_std = (idx * px - offset_y) / scale[1]
    z_std = z_bot + (np.arange(n_z, dtype=np.float64) * f_z + f_z / 2.0) * (dz / scale[0])
    w = f_xy * px / np.sqrt(scale[1] * scale[2])
    canvas = _Canvas(z_std, y_std, x_std, w, _GAS_HU)
    facts = _render(anat, canvas, fields, hu, phase, lesions_spec)
    img, tis = canvas.img, canvas.tis
    del canvas
    for axis, factor, length in ((2, f_xy, size), (1, f_xy, size), (0, f_z, n)):
        if factor > 1:
            img = _upsample(img, factor, axis, length)
            tis = np.repeat(tis, factor, axis=axis)[(slice(None),) * axis + (slice(0, length),)]

    # ---------------------------------------------------------------- scanner effects
    sig_xy = max(psf_mm / px, 0.35)
    sig_z = 0.35 if f_z == 1 else 0.0  # upsampled planes are already smooth along z
    # white noise blurred by the PSF: correlated noise of standard deviation noise_sigma
    k_xy = _gauss_norm(sig_xy)
    k_z = _gauss_norm(sig_z) if sig_z else 1.0
    img += rng_noise.standard_normal(img.shape, dtype=np.float32) * np.float32(noise_sigma / (k_xy * k_xy * k_z))
    img = ndimage.gaussian_filter(img, (sig_z, sig_xy, sig_xy), mode="nearest", truncate=3.0)
    np.rint(img, out=img)
    np.clip(img, -1024.0, 3071.0, out=img)
    if padding is not None:
        idx = np.arange(size, dtype=np.float64) - (size - 1) / 2.0
        r2 = idx[:, None] ** 2 + idx[None, :] ** 2
        outside = r2 > (size / 2.0) ** 2
        img[:, outside] = padding
        tis[:, outside] = TISSUES["padding"]
    label = np.zeros(img.shape, np.uint8)
    label[(tis == TISSUES["liver"]) | (tis == TISSUES["liver_vessel"])] = 1
    label[tis == TISSUES["lesion"]] = 2

    spacing = (float(dz), float(px), float(px))
    voxel_ml = float(np.prod(spacing)) / 1000.0
    for les in facts["lesions"]:  # standard frame -> canonical voxel coordinates
        cz_, cy_, cx_ = les.pop("centre_std")
        les["centre_voxel"] = (
            round(float((cz_ - z_bot) * scale[0] / dz - 0.5), 2),
            round(float((cy_ * scale[1] + offset_y) / px + (size - 1) / 2.0), 2),
            round(float((cx_ * scale[2] + offset_x) / px + (size - 1) / 2.0), 2),
        )
    meta = {
        "seed": int(seed),
        "size": int(size),
        "n_slices": None if n_slices is None else int(n_slices),
        "phase": phase,
        "noise_sigma": round(noise_sigma, 2),
        "psf_mm": round(psf_mm, 3),
        "padding": padding,
        "fov_mm": round(fov, 2),
        "rescale_intercept": intercept,
        "oral_contrast": oral,
        "origin": (table_z, offset_x, offset_y),
        "liver_ml": round(float((label > 0).sum()) * voxel_ml, 1),
        "n_lesions": len(facts["lesions"]),
        "lesions": facts["lesions"],
        "hu": {k: round(v, 1) for k, v in hu.items()},
    }
    return Phantom(int(case_id), img, label, tis, spacing, axcodes, meta)


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


def _upsample(arr: np.ndarray, factor: int, axis: int, length: int) -> np.ndarray:
    """Linear upsampling by a whole factor along ``axis`` (cell-centred), cropped to ``length``."""
    if arr.shape[axis] == 1:
        return np.repeat(arr, length, axis=axis)
    if factor == 2:  # the common case, with strided slices instead of gathers: weights 3/4 and 1/4
        def along(sl):
            return (slice(None),) * axis + (sl,)

        shape = list(arr.shape)
        shape[axis] = length
        out = np.empty(shape, arr.dtype)
        n_even, n_odd = (length + 1) // 2, length // 2
        even, odd = out[along(slice(0, None, 2))], out[along(slice(1, None, 2))]
        np.multiply(arr[along(slice(0, n_even))], np.float32(0.75), out=even)
        even[along(slice(1, None))] += np.float32(0.25) * arr[along(slice(0, n_even - 1))]
        even[along(slice(0, 1))] += np.float32(0.25) * arr[along(slice(0, 1))]
        if n_odd:
            np.multiply(arr[along(slice(0, n_odd))], np.float32(0.75), out=odd)
            last = arr.shape[axis] - 1
            nxt = min(n_odd, last)
            odd[along(slice(0, nxt))] += np.float32(0.25) * arr[along(slice(1, nxt + 1))]
            if nxt < n_odd:
                odd[along(slice(nxt, n_odd))] += np.float32(0.25) * arr[along(slice(last, last + 1))]
        return out
    src = np.arange(arr.shape[axis], dtype=np.float64)
    dst = (np.arange(length, dtype=np.float64) + 0.5) / factor - 0.5
    return _interp_axis(arr, src, np.clip(dst, 0.0, src[-1]), axis)


def _gauss_norm(sigma: float, truncate: float = 3.0) -> float:
    """Factor by which a 1-D Gaussian filter scales the std of white noise."""
    r = int(truncate * sigma + 0.5)
    k = np.exp(-0.5 * (np.arange(-r, r + 1) / sigma) ** 2)
    k /= k.sum()
    return float(np.sqrt((k * k).sum()))


def _sample_lesions(rng, anat, coarse, dz, phase, scale) -> list[dict]:
    """Lesion centres, sizes and kinds, placed in the liver on the coarse grid."""
    cz, cy, cx, cd = coarse
    u = rng.random()
    if u < 0.2:
        n = 0
    elif u < 0.88:
        n = int(min(1 + rng.geometric(0.4), 8))
    else:
        n = int(rng.integers(8, 16))
    s = float(np.cbrt(np.prod(scale)))
    d_min = max(5.0, dz + 1.5)
    out = []
    placed = []
    for i in range(n):
        # log-uniform diameters: many small, a few large
        diam = float(np.exp(rng.uniform(np.log(d_min), np.log(80.0 if i == 0 else 45.0))))
        kind = "hyper" if rng.random() < 0.22 else "hypo"
        for _ in range(4):
            r_std = diam / 2 / s
            ok = cd < -(0.65 * r_std + 2.0)
            for (pz, py, px), pr in placed:
                dist = np.sqrt((cz[:, None, None] - pz) ** 2 + (cy[None, :, None] - py) ** 2
                               + (cx[None, None, :] - px) ** 2)
                ok &= dist > pr + r_std + 3.0
            cand = np.flatnonzero(ok)
            if len(cand):
                break
            diam = max(d_min, diam * 0.6)
        if not len(cand):
            continue
        iz, iy, ix = np.unravel_index(cand[rng.integers(len(cand))], cd.shape)
        centre = np.array([cz[iz], cy[iy], cx[ix]]) + rng.uniform(-1.5, 1.5, 3)
        radii = r_std * rng.uniform(0.8, 1.2, 3)
        radii *= r_std / np.cbrt(np.prod(radii))  # keep the equivalent diameter
        rot = _rotation(z=rng.uniform(0, 180), y=rng.uniform(0, 180), x=rng.uniform(0, 180))
        lo_d, hi_d = _LESION_DELTA[kind][phase]
        delta = float(rng.uniform(lo_d, hi_d))
        placed.append((tuple(centre), r_std))
        out.append(
            {
                "kind": kind,
                "diameter_mm": round(diam, 2),
                "delta_hu": round(delta, 1),
                "necrosis": bool(kind == "hypo" and diam > 30 and rng.random() < 0.6),
                "rim": bool(phase != "unenhanced" and diam > 12 and rng.random() < 0.25),
                "centre_std": tuple(round(float(v), 1) for v in centre),
                "shape": _Ellipsoid(centre, radii, rot),
                "offset": float(rng.uniform(0, 500)),
                "scale": s,
            }
        )
    return out


# =========================================================================== files


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


def _tag(seed: int, case: int, size: int, n_slices: int | None) -> str:
    """What the NIfTI ``descrip`` field records, so that a rerun knows what a file holds."""
    slices = "auto" if n_slices is None else n_slices
    return f"liverlib phantom v1 seed={seed} case={case} size={size} slices={slices}"


def _paths(out_dir: Path, case_id: int) -> tuple[Path, Path]:
    return out_dir / f"volume-{case_id}.nii.gz", out_dir / f"segmentation-{case_id}.nii.gz"


def write_case(phantom: Phantom, out_dir) -> tuple[Path, Path]:
    """Write one phantom as ``volume-N.nii.gz`` (int16 HU) and ``segmentation-N.nii.gz`` (uint8).

    Both files get the same affine, built for ``phantom.axcodes``; loading them
    with :func:`liverlib.data.load_case` gives back ``phantom.image`` and
    ``phantom.label`` exactly. Each file is written atomically.

    Returns
    -------
    (volume path, segmentation path)
    """
    out_dir = Path(out_dir)
    affine = _affine(phantom)
    geometry = Geometry(affine, tuple(int(s) for s in phantom.image.shape[::-1]), tuple(phantom.axcodes))
    intercept = float(phantom.meta.get("rescale_intercept", 0.0))
    raw = geometry.to_stored(np.rint(phantom.image - intercept).astype(np.int16))
    seg = geometry.to_stored(phantom.label.astype(np.uint8))
    tag = _tag(phantom.meta["seed"], phantom.case_id, phantom.meta["size"], phantom.meta.get("n_slices"))
    vol_path, seg_path = _paths(out_dir, phantom.case_id)
    for data, path, dtype in ((raw, vol_path, np.int16), (seg, seg_path, np.uint8)):
        img = nib.Nifti1Image(data, affine)
        img.header.set_data_dtype(dtype)
        img.header.set_qform(affine, code=1)
        img.header.set_sform(affine, code=1)
        img.header.set_xyzt_units("mm", "sec")
        img.header["descrip"] = tag.encode()
        if dtype is np.int16 and intercept:
            img.header.set_slope_inter(1.0, intercept)
        with atomic_path(path) as tmp:
            nib.save(img, str(tmp))
    return vol_path, seg_path


def _complete(out_dir: Path, case_id: int, seed: int, size: int) -> bool:
    """Both files exist, carry this cohort's tag and load."""
    vol_path, seg_path = _paths(out_dir, case_id)
    if not (vol_path.is_file() and seg_path.is_file()):
        return False
    tag = _tag(seed, case_id, size, None)
    try:
        for path in (vol_path, seg_path):
            descrip = nib.load(str(path)).header["descrip"].item().decode(errors="replace")
            if descrip != tag:
                return False
        load_case(CaseFiles(case_id, vol_path, seg_path))
    except (DataError, OSError, ValueError, EOFError):
        return False
    return True


def _make_and_write(case_id: int, seed: int, size: int, out_dir: str) -> int:
    write_case(make_phantom(case_id, seed=seed, size=size), out_dir)
    return case_id


def write_cohort(out_dir, cases: int = 20, seed: int = 7, size: int = 256, workers: int = 1) -> list[Path]:
    """Write a synthetic cohort in the LiTS layout.

    Cases already complete (both files present, loadable and written with the
    same seed and size) are kept, so an interrupted run resumes.

    Parameters
    ----------
    out_dir : str or Path
    cases : int
        Number of cases, written as case numbers 0 .. cases-1.
    seed : int
    size : int
        In-plane pixels, at least 64.
    workers : int
        Parallel processes; 1 renders in this process.

    Returns
    -------
    list of Path
        The volume file of every case, in case order.
    """
    if cases < 1:
        raise ValueError(f"cases must be at least 1, got {cases}")
    if size < 64:
        raise ValueError(f"size must be at least 64 pixels, got {size}")
    if workers < 1:
        raise ValueError(f"workers must be at least 1, got {workers}")
    from tqdm.auto import tqdm

    out_dir = Path(out_dir)
    if out_dir.exists() and not out_dir.is_dir():
        raise DataError("exists and is not a folder", out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    todo = [k for k in range(cases) if not _complete(out_dir, k, seed, size)]
    with tqdm(total=cases, initial=cases - len(todo), desc="phantoms", unit="case", disable=None) as bar:
        if workers == 1 or len(todo) <= 1:
            for k in todo:
                _make_and_write(k, seed, size, str(out_dir))
                bar.update(1)
        else:
            # spawn: safe even when the caller has threads (TensorFlow) running
            ctx = multiprocessing.get_context("spawn")
            with concurrent.futures.ProcessPoolExecutor(min(workers, len(todo)), mp_context=ctx) as pool:
                futures = [pool.submit(_make_and_write, k, seed, size, str(out_dir)) for k in todo]
                for fut in concurrent.futures.as_completed(futures):
                    fut.result()
                    bar.update(1)
    return [_paths(out_dir, k)[0] for k in range(cases)]
