"""Liver shape variants of the phantoms: normal, cirrhotic, large or resected livers, and the liver's fissures.

Sources: normal liver volume 1.2-1.9 L (Heinemann et al., Forensic Sci Int 1999);
cirrhosis: nodular surface, atrophy of the right lobe and segment 4, hypertrophy
of the caudate and the left lateral segments, widened fissures and gallbladder
fossa, ascites (Brancatelli et al., AJR 2007; Ito et al., Radiology 1999);
ascites 0-20 HU, simple fluid (Federle & Jeffrey, AJR 1983); hepatomegaly above
~2 L; after right hemihepatectomy the remnant regrows to most of the original
volume within months (Pomfret et al., Transplantation 2003), the cut along
Cantlie's line (gallbladder fossa to IVC); left lateral sectionectomy removes
segments 2-3, left of the falciform ligament (Couinaud 1957).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverlib.data.phantoms.shapes import _P, _Ellipsoid, _Field, _rotation

_KINDS = ("normal", "cirrhotic", "large", "resected")
_KIND_P = (0.5, 0.2, 0.15, 0.15)
_RESECTIONS = ("right_hemihepatectomy", "left_lateral_sectionectomy")
# target liver volume (ml) by shape, or by resection for resected livers
_TARGET_ML = {"normal": (1250.0, 1950.0), "cirrhotic": (800.0, 1200.0), "large": (2000.0, 2800.0),
              "right_hemihepatectomy": (800.0, 1400.0), "left_lateral_sectionectomy": (1100.0, 1700.0)}
# Cantlie's line (x, y) from the gallbladder fossa to the IVC, and the falciform ligament's x (standard frame)
_CANTLIE = (np.array([-46.0, -42.0]), np.array([-30.0, 14.0]))
_FALCIFORM_X = 8.0
# the fissure of the ligamentum venosum in the plane: from the umbilical portion of the left portal vein
# to the IVC, between the caudate lobe and the left lateral segments; and its height range (z)
_VENOSUM = (np.array([8.0, -25.0]), np.array([-18.0, 5.0]), (-85.0, -35.0))


@dataclass
class _LiverShape:
    """One patient's liver variant and its parameters (mm)."""

    kind: str  # one of _KINDS
    resection: str | None  # one of _RESECTIONS, for resected livers
    nodules: _Field | None  # the field that makes a cirrhotic surface nodular
    nodularity: float  # amplitude of the nodules, mm
    fissure: float  # half width of the fat clefts in the fissures, mm
    ascites: float  # thickness of perihepatic fluid, mm (0: none)
    cut: tuple | None  # resection plane: (point (x, y), unit normal (x, y)) pointing into the removed side
    collection: float  # thickness of a fluid collection at the cut surface, mm (0: none)

    def target_ml(self, rng) -> float:
        """Draw the liver's target volume (ml) for this variant."""
        return float(rng.uniform(*_TARGET_ML[self.resection or self.kind]))

    def facts(self) -> dict:
        return {"liver_shape": self.kind, "resection": self.resection, "ascites_mm": round(self.ascites, 1),
                "resection_collection_mm": round(self.collection, 1)}


def _sample_shape(rng, parts: dict) -> _LiverShape:
    """Draw the variant and reshape the lobes ``parts`` (name: (centre, radii, rotation)) in place."""
    kind = _KINDS[rng.choice(len(_KINDS), p=_KIND_P)]
    shape = _LiverShape(kind, None, None, 0.0, float(rng.uniform(1.8, 3.0)), 0.0, None, 0.0)
    if kind == "cirrhotic":
        _scale_part(parts, "right", rng.uniform(0.72, 0.88, 3))
        _scale_part(parts, "caudate", rng.uniform(1.3, 1.7, 3))
        _scale_part(parts, "left", rng.uniform(1.05, 1.3, 3))
        parts.pop("riedel", None)
        shape.nodules = _Field(rng, np.array([-280.0, -160.0, -220.0]), np.array([60.0, 140.0, 140.0]), 8.0)
        shape.nodularity = float(rng.uniform(1.5, 3.5))
        shape.fissure *= rng.uniform(1.8, 3.0)  # widened fissures
        shape.ascites = float(rng.uniform(5.0, 25.0)) if rng.random() < 0.5 else 0.0
    elif kind == "large":
        _scale_part(parts, "right", np.array([rng.uniform(1.0, 1.2), 1.0, 1.0]))  # reaching low
        _scale_part(parts, "left", rng.uniform(1.0, 1.25, 3))
    elif kind == "resected":
        shape.resection = _RESECTIONS[int(rng.integers(2))]
        if shape.resection == "right_hemihepatectomy":
            a, b = _CANTLIE
            point, along = (a + b) / 2, (b - a) / np.linalg.norm(b - a)
            normal = np.array([-along[1], along[0]])  # towards the patient's right
            _scale_part(parts, "left", rng.uniform(1.2, 1.45, 3))  # the remnant's hypertrophy
            _scale_part(parts, "caudate", rng.uniform(1.1, 1.4, 3))
            parts.pop("riedel", None)
        else:
            point, normal = np.array([_FALCIFORM_X, -40.0]), np.array([1.0, 0.0])
        turn = np.radians(rng.normal(0, 6.0))
        normal = np.array([[np.cos(turn), -np.sin(turn)], [np.sin(turn), np.cos(turn)]]) @ normal
        shape.cut = (point + rng.normal(0, 3.0, 2), normal)
        shape.collection = float(rng.uniform(4.0, 12.0)) if rng.random() < 0.5 else 0.0
    return shape


def _scale_part(parts: dict, name: str, factors) -> None:
    """Multiply the radii (given x, y, z) of the lobe ``name``."""
    c, r, rot = parts[name]
    parts[name] = (c, r * np.asarray(factors, float)[::-1], rot)


def _shape_sdf(shape: _LiverShape, d, z, y, x, anchor, f):
    """Apply the variant to the liver's SDF ``d``: nodules, fissures and the resection cut.

    ``anchor`` and ``f``: the liver's scaling (positions in the nominal liver move with it).
    """
    zz = np.asarray(z, np.float32)[:, None, None]
    Y = np.asarray(y, np.float32)[None, :, None]
    X = np.asarray(x, np.float32)[None, None, :]

    def at(px, py):  # a nominal (x, y) moved with the liver's scaling
        return anchor[2] + f * (px - anchor[2]), anchor[1] + f * (py - anchor[1])

    if shape.nodules is not None:  # nodules bulging between notches where the field crosses zero
        d = d - shape.nodularity * (np.abs(shape.nodules(z, y, x)) - 0.8)
    # fissure of the ligamentum teres: a thin fat cleft between the lobes, from the front
    tx, ty = at(_FALCIFORM_X, -30.0)
    zc, hz = anchor[0] + f * (-75.0 - anchor[0]), 30.0 * f
    fis = np.maximum(np.maximum(np.abs(X - tx) - shape.fissure, Y - ty), np.abs(zz - zc) - hz)
    # fissure of the ligamentum venosum: an oblique cleft between the caudate and the left lateral segments
    (ax, ay), (bx, by) = at(*_VENOSUM[0]), at(*_VENOSUM[1])
    length = np.hypot(bx - ax, by - ay)
    ux, uy = (bx - ax) / length, (by - ay) / length
    across = np.abs((X - ax) * uy - (Y - ay) * ux) - shape.fissure * 0.7
    along = np.abs((X - ax) * ux + (Y - ay) * uy - length / 2) - length / 2
    z0, z1 = (anchor[0] + f * (v - anchor[0]) for v in _VENOSUM[2])
    ven = np.maximum(np.maximum(across, along), np.abs(zz - (z0 + z1) / 2) - (z1 - z0) / 2)
    d = np.maximum(d, -np.minimum(fis, ven))
    if shape.cut is not None:
        (px, py), (nx, ny) = at(*shape.cut[0]), shape.cut[1]
        d = np.maximum(d, (X - px) * nx + (Y - py) * ny)
    return d


def _collection(shape: _LiverShape, anchor, f) -> _Ellipsoid | None:
    """The fluid collection lying on the resection's cut surface (None if there is none)."""
    if shape.cut is None or shape.collection <= 0:
        return None
    (px, py), (nx, ny) = shape.cut
    cx, cy = anchor[2] + f * (px - anchor[2]), anchor[1] + f * (py - anchor[1])
    t = shape.collection / 2
    centre = _P(cx + nx * (t + 1.5), cy + ny * (t + 1.5), anchor[0] + f * (-70.0 - anchor[0]))
    radii = np.array([35.0 * f, 28.0 * f, t])  # (z, y, x): thin across the cut, local x along the normal
    return _Ellipsoid(centre, radii, _rotation(z=np.degrees(np.arctan2(-ny, nx))))
