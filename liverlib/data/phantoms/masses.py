"""Masses outside the liver (tissue "mass", label 0): renal, adrenal, retroperitoneal and splenic, some beside the liver.

They teach the network what is *not* a liver lesion: a hypodense or solid lump
in a kidney, an adrenal gland, the retroperitoneum or the spleen and, in about a
tenth of the cases, a large hypodense mass pressing on the liver's inferior or
posterior surface (the liver is carved around it, so its label stays correct).

Sources: renal cysts 0-20 HU, exophytic, very common over 50 (Bosniak, Radiology
1986; Terada et al., J Urol 2002); renal cell carcinoma 2-10 cm, heterogeneous,
necrotic when large (Prasad et al., RadioGraphics 2008); adrenal adenomas 1-5 cm,
round, < 10 HU unenhanced when lipid rich, washing out (Boland et al., AJR 1998;
Caoili et al., Radiology 2002); retroperitoneal lymphoma and sarcoma lobulated,
3-15 cm, by the spine, psoas or IVC (Nishino et al., RadioGraphics 2003); splenic
cysts, haemangiomas and metastases: hypodense foci 0.5-3 cm (Abbott et al.,
RadioGraphics 2004).
"""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.shapes import _BIG, _P, _Ellipsoid, _rotation, _Shape
from liverlib.data.phantoms.tissues import TISSUES


class _Mass(_Shape):
    """A lobulated ellipsoidal mass: the ellipsoid's SDF plus a few random plane waves."""

    def __init__(self, rng, centre, diameter: float, lobulation: float, site: str, kind: str, side: str | None):
        r = diameter / 2.0
        radii = r * rng.uniform(0.85, 1.15, 3)
        radii *= r / np.cbrt(np.prod(radii))  # keep the equivalent diameter
        self.ell = _Ellipsoid(centre, radii, _rotation(z=rng.uniform(0, 180), y=rng.uniform(-30, 30)))
        self.waves = rng.normal(0, 1, (3, 3)) / r * 2.5  # wave vectors (z, y, x), ~2-3 lobes across
        self.phases = rng.uniform(0, 2 * np.pi, 3)
        self.amp = lobulation * r
        self.r, self.site, self.kind, self.side = r, site, kind, side
        self.mix = float(rng.uniform(0.5, 0.9))  # splenic foci: how far from the spleen towards water
        self.lo, self.hi = self.ell.lo - self.amp, self.ell.hi + self.amp
        self.beside_liver = False

    def sdf(self, z, y, x):
        d = self.ell.sdf(z, y, x)
        Z = (z - self.ell.c[0]).astype(np.float32)[:, None, None]
        Y = (y - self.ell.c[1]).astype(np.float32)[None, :, None]
        X = (x - self.ell.c[2]).astype(np.float32)[None, None, :]
        for (kz, ky, kx), ph in zip(self.waves, self.phases):
            d = d + np.float32(self.amp / 3.0) * np.cos(kz * Z + ky * Y + kx * X + ph)
        return d

    def facts(self) -> dict:
        return {"site": self.site, "side": self.side, "kind": self.kind, "diameter_mm": round(2.0 * self.r, 1),
                "beside_liver": self.beside_liver, "centre_std": tuple(round(float(v), 1) for v in self.ell.c)}


def _on_surface(rng, ell: _Ellipsoid, side: int, depth: float) -> np.ndarray:
    """A point ``depth`` mm outside a random point of ``ell``'s surface, on its lateral half."""
    u = rng.normal(0, 1, 3)
    u /= np.linalg.norm(u)
    R = np.eye(3) if ell.R is None else ell.R
    if (R.T @ u)[2] * side < 0:  # keep off the hilum
        u = -u
    out = R.T @ u
    return ell.c + R.T @ (u * ell.r) + out * depth


def _sample_masses(rng, kidneys, adrenals) -> list[_Mass]:
    """Masses outside the liver; ``kidneys`` as in the anatomy, ``adrenals`` the right and left glands."""
    masses = []
    if rng.random() < 0.1:  # a large hypodense mass against the liver's inferior or posterior surface
        site = ("renal", "adrenal", "retroperitoneal")[int(rng.integers(3))]
        diam = rng.uniform(60.0, 120.0)
        kind = "cystic" if rng.random() < 0.5 else "necrotic"
        r = diam / 2
        if site == "renal":  # from the right kidney's upper pole
            kid = kidneys[0][1]
            R = np.eye(3) if kid.R is None else kid.R
            pole = kid.c + R.T @ np.array([kid.r[0], 0.0, 0.0])
            centre = pole + 0.45 * r * (pole - kid.c) / np.linalg.norm(pole - kid.c)
        elif site == "adrenal":
            centre = adrenals[0].limbs[0].c + _P(-0.35 * r, -0.1 * r, 0.15 * r)
        else:  # posterior pararenal and paracaval space, behind the right lobe
            centre = _P(-50.0, 30.0, -110.0) + _P(-0.2 * r, 0.0, 0.1 * r)
        mass = _Mass(rng, centre + rng.normal(0, 4.0, 3), diam, rng.uniform(0.0, 0.12), site, kind, "right")
        mass.beside_liver = True
        masses.append(mass)
    if rng.random() < 0.2:  # renal: exophytic cysts or solid tumours
        for _ in range(int(rng.integers(1, 3))):
            s = int(rng.integers(2))
            side, kid, _ = kidneys[s]
            diam = float(np.exp(rng.uniform(np.log(15.0), np.log(60.0))))
            kind = "cystic" if rng.random() < 0.6 else "solid"
            centre = _on_surface(rng, kid, side, diam * rng.uniform(0.0, 0.3))
            masses.append(_Mass(rng, centre, diam, 0.03, "renal", kind, ("right", "left")[s]))
    if rng.random() < 0.12:  # adrenal: mostly lipid-rich adenomas
        s = int(rng.integers(2))
        diam = float(np.exp(rng.uniform(np.log(10.0), np.log(50.0))))
        kind = "adenoma" if rng.random() < 0.7 else "solid"
        centre = adrenals[s].limbs[0].c + rng.normal(0, 3.0, 3)
        masses.append(_Mass(rng, centre, diam, 0.03, "adrenal", kind, ("right", "left")[s]))
    if rng.random() < 0.08:  # retroperitoneal: lobulated, by the spine, psoas or IVC
        s = int(rng.integers(2))
        diam = float(rng.uniform(30.0, 120.0))
        centre = _P((-1, 1)[s] * rng.uniform(20.0, 55.0), rng.uniform(0.0, 30.0), rng.uniform(-200.0, -110.0))
        kind = "solid" if rng.random() < 0.7 else "cystic"
        masses.append(_Mass(rng, centre, diam, rng.uniform(0.08, 0.18), "retroperitoneal", kind,
                            ("right", "left")[s]))
    return masses


def _sample_splenic(rng, spleen: _Ellipsoid) -> list[_Mass]:
    """Hypodense foci in the spleen, in some cases."""
    foci = []
    if rng.random() < 0.12:
        R = np.eye(3) if spleen.R is None else spleen.R
        for _ in range(int(rng.integers(1, 5))):
            u = rng.uniform(-0.55, 0.55, 3)
            centre = spleen.c + R.T @ (u * spleen.r)
            foci.append(_Mass(rng, centre, float(rng.uniform(5.0, 25.0)), 0.03, "splenic", "hypodense", "left"))
    return foci


def _mass_value(m: _Mass, d, t, hu):
    """The HU inside a mass: solid, necrotic (a solid rim around fluid), cystic (a thin wall), adenoma, splenic."""
    solid = hu["solid_mass"] + 8.0 * t
    if m.kind == "necrotic":
        return solid + (hu["cyst"] + 10.0 - solid) * np.clip((-d - 0.12 * m.r) / (0.15 * m.r), 0.0, 1.0)
    if m.kind == "cystic":
        return np.where(d > -1.5, solid, hu["cyst"] + 3.0 * t).astype(np.float32)
    if m.kind == "adenoma":
        return hu["adenoma"] + 4.0 * t
    if m.kind == "hypodense":
        return hu["spleen"] + m.mix * (hu["cyst"] - hu["spleen"]) + 4.0 * t
    return solid


def _paint_masses(anat, c: _Canvas, fields, hu) -> None:
    """Paint the masses (tissue "mass") inside the cavity, under the diaphragm; splenic foci only over the spleen."""
    tex = fields["fine"]
    for m in anat.masses + anat.splenic_foci:
        box = c.box(m.lo - c.w - 2, m.hi + c.w + 2)
        if box is None:
            continue

        def sdf(z, y, x, m=m):
            d = np.maximum(m.sdf(z, y, x), anat.body.cavity_sdf(z, y, x) + 1.5)
            d = np.maximum(d, z[:, None, None] - (anat.diaphragm.z(y, x)[None] - 4.0))
            return d, tex(z + 300.0, y, x)

        d, t = c.sdf(sdf, box, 2.0)
        if m.site == "splenic":
            d[c.tis[box] != TISSUES["spleen"]] = _BIG
        c.paint(box, d, _mass_value(m, d, t, hu), "mass")
