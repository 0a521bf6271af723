"""Liver lesions of the phantoms: how many, how large, which kind and where; and their painting.

The lesions are drawn from their own generator and do not depend on the image
size; only their smallest diameter follows the slice spacing.
"""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.shapes import _Ellipsoid, _index_box, _on_grid, _rotation
from liverlib.data.phantoms.tissues import _LESION_DELTA


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
