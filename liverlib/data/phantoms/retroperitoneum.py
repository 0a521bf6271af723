"""Retroperitoneal structures of the phantoms: adrenal glands, diaphragmatic crura, psoas and quadratus muscles.

Sources: adrenal limbs 2-6 mm thick and 2-4 cm long, inverted Y or V, the right
one behind the IVC and the left one lateral to the aorta and the left crus,
anteromedial to the kidney's upper pole (Vincent et al., AJR 1994; Dunnick &
Korobkin, AJR 2002); normal adrenal 10-40 HU unenhanced. The crura arise from
the front and sides of L1-L3 (the right one longer, to L3; the left to L2) and
rise around the aorta to the aortic and oesophageal hiatuses (Gray's Anatomy,
42nd ed.; Panicek et al., RadioGraphics 1988).
"""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.shapes import (
    _BIG,
    _P,
    _catmull_rom,
    _Chain,
    _ellipse2d,
    _Ellipsoid,
    _rotation,
    _Shape,
    _smoothstep,
)


class _Adrenal(_Shape):
    """An adrenal gland: thin flat limbs (ellipsoids) joined at the gland's body, its SDF the union of theirs."""

    def __init__(self, limbs: list[_Ellipsoid]):
        self.limbs = limbs
        self.lo = np.min([lb.lo for lb in limbs], axis=0)
        self.hi = np.max([lb.hi for lb in limbs], axis=0)

    def sdf(self, z, y, x):
        d = self.limbs[0].sdf(z, y, x)
        for limb in self.limbs[1:]:
            d = np.minimum(d, limb.sdf(z, y, x))
        return d


def _sample_adrenals(rng, lay: dict) -> list[_Adrenal]:
    """Right and left adrenal glands: a short body and two limbs (medial, lateral) fanning out behind it."""
    glands = []
    for side in ("right", "left"):
        spec = lay[side]
        body = np.array(spec["body"], float) + rng.normal(0, 3.0, 3)
        thick = rng.uniform(*lay["thickness"]) / 2.0  # half thickness, mm
        height = rng.uniform(*lay["height"]) / 2.0
        limbs = [_Ellipsoid(_P(*body), np.array([height * 0.8, thick * 1.4, thick * 1.6]))]
        for end in spec["limbs"]:
            direc = np.array(end, float)[:2] - body[:2] + rng.normal(0, 3.0, 2)
            length = rng.uniform(*lay["length"])
            direc /= np.linalg.norm(direc)
            centre = body + np.array([*direc * length / 2.0, (end[2] - body[2]) * 0.5])
            angle = np.degrees(np.arctan2(-direc[1], direc[0]))  # local x along the limb
            radii = np.array([height * rng.uniform(0.8, 1.1), thick, length / 2.0])
            limbs.append(_Ellipsoid(_P(*centre), radii, _rotation(z=angle)))
        glands.append(_Adrenal(limbs))
    return glands


def _sample_crura(rng, lay: dict) -> list[_Chain]:
    """The right and left crura of the diaphragm: muscle bands along the vertebral bodies, around the aorta."""
    crura = []
    for side in ("right", "left"):
        pts = np.array(lay[side], float)
        pts[:, :2] += rng.normal(0, 1.5, (len(pts), 2))
        pts[:, 3] *= rng.uniform(0.8, 1.2)
        dense = _catmull_rom(pts, lay["step"])
        crura.append(_Chain(dense[:, [2, 1, 0]], dense[:, 3]))
    return crura


def _paint_crura(anat, c: _Canvas, hu) -> None:
    """The crura, as muscle (the spine and the aorta are painted over them)."""
    for crus in anat.crura:
        c.draw(crus, hu["muscle"], "muscle")


def _paint_adrenals(anat, c: _Canvas, hu) -> None:
    """The adrenal glands, kept 2 mm off the kidneys."""
    for gland in anat.adrenals:
        box = c.box(gland.lo - c.w - 2, gland.hi + c.w + 2)
        if box is None:
            continue

        def sdf(z, y, x, gland=gland):
            d = gland.sdf(z, y, x)
            for _, kid, _ in anat.kidneys:
                d = np.maximum(d, 2.0 - kid.sdf_on(z, y, x, 4.0))
            return d

        c.paint(box, c.sdf(sdf, box), hu["adrenal"], "adrenal")


def _retroperitoneal_sdf(anat, z, y, x):
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


def _paint_retroperitoneal(anat, c: _Canvas, hu) -> None:
    """Psoas and quadratus lumborum muscles, below z = -80 mm."""
    sbox = c.box(np.array([-1e9, -40.0, -130.0]), np.array([-80.0, 120.0, 130.0]))
    if sbox is not None:
        c.paint(sbox, c.sdf(lambda z, y, x: _retroperitoneal_sdf(anat, z, y, x), sbox), hu["muscle"], "muscle")
