"""Geometric primitives for the phantoms: signed distance functions, smooth fields, grid helpers.

Coordinates are millimetres in (z, y, x) order (``z`` up, ``y`` anterior to
posterior, ``x`` patient right to left); SDFs are negative inside.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

_BIG = np.float32(1e4)  # "far away" for SDFs outside a primitive's reach
_REACH = 12.0  # mm beyond a primitive's bounds where its SDF is still evaluated


def _P(x: float, y: float, z: float) -> np.ndarray:
    """A point given anatomically (x right->left, y anterior->posterior, z up) in (z, y, x) order."""
    return np.array([z, y, x], dtype=np.float64)


def _smin(a, b, k: float):
    """Polynomial smooth minimum (smooth union of two SDFs), blend width ``k`` mm."""
    h = np.clip(0.5 + 0.5 * (b - a) / k, 0.0, 1.0)
    return b + (a - b) * h - k * h * (1.0 - h)


def _smoothstep(t):
    """Cubic Hermite step from 0 (t <= 0) to 1 (t >= 1)."""
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
