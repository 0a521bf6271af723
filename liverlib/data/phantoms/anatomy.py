"""The phantom anatomy: body wall, diaphragm and every organ, sampled per patient in the standard frame.

The nominal positions and sizes are in ``anatomy.yaml``; this module draws each
patient's variation around them (jitter, scale factors, optional organs, vessel
trees) and gives the liver's SDF and volume.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
import yaml

from liverlib.data.phantoms.bowel import _sample_gut
from liverlib.data.phantoms.liver_shape import _sample_shape, _shape_sdf
from liverlib.data.phantoms.masses import _sample_masses, _sample_splenic
from liverlib.data.phantoms.retroperitoneum import _sample_adrenals, _sample_crura
from liverlib.data.phantoms.shapes import (
    _P,
    _catmull_rom,
    _Chain,
    _ellipse2d,
    _Ellipsoid,
    _grow_tree,
    _index_box,
    _rotation,
    _smin,
    _smoothstep,
    _Tree,
)

_LAYOUT_FILE = Path(__file__).with_name("anatomy.yaml")


@functools.cache
def _layout() -> dict:
    """The nominal anatomy of ``anatomy.yaml``, read once."""
    with open(_LAYOUT_FILE, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _radii(xyz) -> np.ndarray:
    """Ellipsoid semi-axes given as [x, y, z] in the (z, y, x) order of :class:`_Ellipsoid`."""
    return np.array(xyz[::-1], dtype=np.float64)


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


class _Anatomy:
    """All sampled structures of one patient, in the standard frame.

    The draws from ``rng`` happen in a fixed order (body, diaphragm, spine,
    organs, vessels, liver, adrenals, crura, masses): changing that order
    changes every phantom.
    """

    def __init__(self, rng: np.random.Generator):
        self.rng = rng
        self.body = _Body(rng)
        self.diaphragm = _Diaphragm(rng)
        layout = _layout()
        # vertebral column: levels shifted up or down by a few mm
        self.spine_shift = self._jitter(6.0)
        self._sample_organs(layout)
        self._sample_vessels(layout["arteries"], layout["veins"])
        self._sample_liver(layout["liver"])
        self.adrenals = _sample_adrenals(rng, layout["adrenal"])
        self.crura = _sample_crura(rng, layout["crura"])
        self.masses = _sample_masses(rng, self.kidneys, self.adrenals)
        self.splenic_foci = _sample_splenic(rng, self.spleen)

    def facts(self) -> dict:
        """Per-case anatomy for the meta: liver shape, gut, masses."""
        return {**self.liver_shape.facts(), **self.gut_facts, "gallbladder": self.gallbladder is not None,
                "masses": [m.facts() for m in self.masses + self.splenic_foci]}

    def _jitter(self, sd: float = 4.0) -> float:
        """Positional jitter, mm."""
        return float(self.rng.normal(0, sd))

    def _point(self, xyz, sd=(4.0, 4.0, 4.0)) -> np.ndarray:
        """The point ``xyz`` jittered by ``sd`` mm per axis (drawn in x, y, z order), as :func:`_P` gives it."""
        return _P(*(v + self._jitter(s) for v, s in zip(xyz, sd)))

    def _sample_organs(self, lay: dict) -> None:
        """Kidneys, spleen, stomach, duodenum, esophagus, colon, pancreas, gallbladder and heart."""
        rng = self.rng
        k = lay["kidney"]
        # the right kidney lower than the left; upper poles medial and posterior
        kz_r, kz_l = k["z"]["right"] + self._jitter(8), k["z"]["left"] + self._jitter(8)
        ks = rng.uniform(0.9, 1.1)
        self.kidneys = []
        for side, kz in ((-1, kz_r), (1, kz_l)):
            c = _P(side * (k["x"] + self._jitter(3)), k["y"] + self._jitter(3), kz)
            rot = _rotation(z=side * k["rotation"]["z"], y=side * k["rotation"]["y"], x=k["rotation"]["x"])
            kid = _Ellipsoid(c, _radii(k["radii"]) * ks, rot)
            off = k["sinus"]["offset"]
            sinus = _Ellipsoid(c + _P(side * off[0], off[1], off[2]), _radii(k["sinus"]["radii"]) * ks, rot)
            self.kidneys.append((side, kid, sinus))

        sp = lay["spleen"]
        ss = rng.uniform(0.9, 1.2)
        centre = self._point(sp["centre"], (4.0, 4.0, 6.0))
        self.spleen = _Ellipsoid(centre, _radii(sp["radii"]) * ss, _rotation(z=sp["rotation"]["z"] + self._jitter(6)))

        self.tubes, self.gut_facts = _sample_gut(rng, lay)
        self.stomach, self.duodenum, self.colon = (tube.chain for tube in self.tubes)
        self.esophagus = self._chain(lay["esophagus"]["points"], lay["esophagus"]["step"])

        pancreas = np.array(lay["pancreas"]["points"], dtype=float)
        pancreas[:, :3] += rng.normal(0, 2.5, (len(pancreas), 3))
        self.pancreas = self._chain(pancreas, lay["pancreas"]["step"])

        self.gallbladder = None  # absent after cholecystectomy
        if rng.random() < 0.82:
            gb = lay["gallbladder"]
            gr = rng.uniform(0.75, 1.2)
            centre = self._point(gb["centre"], (4.0, 4.0, 6.0))
            self.gallbladder = _Ellipsoid(centre, _radii(gb["radii"]) * gr, _rotation(**gb["rotation"]))

        he = lay["heart"]
        centre = self._point(he["centre"], (4.0, 4.0, 5.0))
        self.heart = _Ellipsoid(centre, _radii(he["radii"]), _rotation(**he["rotation"]))

    def _sample_vessels(self, art: dict, ven: dict) -> None:
        """Aorta and its branches, IVC and its tributaries, portal vein (no random draws)."""
        self.aorta = self._chain(art["aorta"]["points"], art["aorta"]["step"])
        self.arteries = [self._chain(b["points"], b["step"]) for b in art["branches"].values()]
        ra = art["renal"]
        for side, kid, _ in self.kidneys:
            hilum = kid.c + _P(side * ra["hilum"][0], ra["hilum"][1], ra["hilum"][2])
            origin = _P(side * ra["origin"][0], ra["origin"][1], kid.c[0] + ra["origin"][2])
            self.arteries.append(_Chain(np.array([origin, hilum]), np.full(2, ra["radius"])))
        self.ivc = self._chain(ven["ivc"]["points"], ven["ivc"]["step"])
        self.veins = [self._chain(b["points"], b["step"]) for b in ven["branches"].values()]
        rv = ven["renal"]
        for side, kid, _ in self.kidneys:
            hilum = kid.c + _P(side * rv["hilum"][0], rv["hilum"][1], rv["hilum"][2])
            course = [_P(x, y, kid.c[0] + dz) for x, y, dz in rv["left" if side > 0 else "right"]]
            pts = np.array([hilum, *course])
            self.veins.append(_Chain(pts, np.full(len(pts), rv["radius"])))
        self.portal = self._chain(ven["portal"]["points"], ven["portal"]["step"])

    def _sample_liver(self, lay: dict) -> None:
        """Liver lobes (scaled later to a target volume) and its portal and hepatic vein trees."""
        rng = self.rng
        right, left, caudate = lay["right"], lay["left"], lay["caudate"]
        self.liver_parts = {
            "right": (self._point(right["centre"], (4.0, 4.0, 5.0)), _radii(right["radii"]),
                      _rotation(y=right["rotation"]["y"] + self._jitter(4))),
        }
        centre = self._point(left["centre"], (4.0, 3.0, 5.0))
        radii = _radii(left["radii"])
        radii[2] *= rng.uniform(0.75, 1.25)
        self.liver_parts["left"] = (centre, radii, _rotation(z=left["rotation"]["z"] + self._jitter(5)))
        self.liver_parts["caudate"] = (_P(*caudate["centre"]), _radii(caudate["radii"]), None)
        if rng.random() < 0.45:  # Riedel's lobe: a tongue of the right lobe reaching low
            riedel = lay["riedel"]
            self.liver_parts["riedel"] = (_P(*riedel["centre"]), _radii(riedel["radii"]) * rng.uniform(0.8, 1.2),
                                          None)
        self.left_taper = rng.uniform(0.45, 0.7)
        # portal vein tree from the porta hepatis, hepatic veins from the IVC
        trees = []
        for spec in (lay["portal_tree"], lay["hepatic_tree"]):
            segs = []
            for branch in spec["branches"]:
                root = _P(*spec["root"])
                if "offset" in branch:
                    root = root + _P(*branch["offset"])
                segs += _grow_tree(rng, root, _P(*branch["direction"]), branch["length"], branch["radius"],
                                   branch["depth"])
            trees.append(_Tree(segs))
        self.portal_tree, self.hepatic_tree = trees
        self.liver_scale = 1.0
        self.liver_anchor = _P(*lay["anchor"])
        self.liver_disp = rng.uniform(3.0, 6.0)
        self.liver_shape = _sample_shape(rng, self.liver_parts)
        if self.liver_shape.resection == "right_hemihepatectomy":
            self.gallbladder = None  # removed with the right liver

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
        fluid = self.liver_shape.ascites  # ascites lifts the liver off the wall and the diaphragm
        d = np.maximum(d, self.body.cavity_sdf(z, y, x) + 1.0 + fluid)
        zz = np.asarray(z, np.float32)[:, None, None]
        d = np.maximum(d, zz - (self.diaphragm.z(y, x)[None] - 5.0 - 0.6 * fluid))
        d = _shape_sdf(self.liver_shape, d, z, y, x, self.liver_anchor, self.liver_scale)
        carves = [(self.ivc, 1.0), (self.portal, 2.0), (self.stomach, 3.0), (self.duodenum, 2.0),
                  (self.colon, 3.0), (self.kidneys[0][1], 3.0), (self.kidneys[1][1], 3.0), (self.spleen, 3.0),
                  (self.pancreas, 3.0), (self.aorta, 4.0), (self.esophagus, 2.0), (self.heart, 4.0),
                  *((gland, 3.0) for gland in self.adrenals), *((crus, 2.0) for crus in self.crura),
                  *((mass, 3.0) for mass in self.masses)]
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
        X = np.asarray(x, np.float32)[None, None, :]
        Y = np.asarray(y, np.float32)[None, :, None]
        vert = _ellipse2d(Y, X, ys[:, None, None].astype(np.float32), np.float32(0), 20.0, 22.0)
        d = np.maximum(d, 6.0 - vert)
        return d

    def liver_box(self, margin=8.0):
        lobes = self.liver_lobes()
        lo = np.min([lb.lo for lb in lobes], axis=0) - self.liver_disp * 3 - margin
        hi = np.max([lb.hi for lb in lobes], axis=0) + self.liver_disp * 3 + margin
        hi[0] = min(hi[0], 15.0)
        return lo, hi


def _liver_volume_ml(anat: _Anatomy, fields, scale_xyz, cell=4.0) -> tuple[float, tuple]:
    """Liver volume (ml) in the patient frame, from its SDF on a ``cell`` mm grid.

    Returns
    -------
    (volume in ml, (z, y, x, sdf) of the coarse grid in the standard frame)
    """
    lo, hi = anat.liver_box(margin=4.0)
    z = np.arange(lo[0], hi[0], cell)
    y = np.arange(lo[1], hi[1], cell)
    x = np.arange(lo[2], hi[2], cell)
    d = anat.liver_sdf(z, y, x, fields)
    inside = d < 0
    ml = float(inside.sum()) * cell**3 * float(np.prod(scale_xyz)) / 1000.0
    return ml, (z, y, x, d)


def _fit_liver(anat: _Anatomy, fields, scale_xyz, target_ml: float) -> tuple[float, tuple]:
    """Rescale the liver lobes (``anat.liver_scale``) until the liver's volume is within 2 % of ``target_ml``.

    Secant steps on log volume vs log scale (the clipping by the cavity and the
    diaphragm makes it a little less than cubic), five at most.

    Returns
    -------
    The volume and coarse grid of :func:`_liver_volume_ml` at the final scale.
    """
    f_prev, v_prev = 1.0, None
    anat.liver_scale = 1.0
    for _ in range(5):
        liver_ml, coarse = _liver_volume_ml(anat, fields, scale_xyz)
        if abs(liver_ml - target_ml) < 0.02 * target_ml:
            break
        f = anat.liver_scale
        slope = 3.0
        if v_prev is not None and abs(np.log(f / f_prev)) > 1e-3 and v_prev > 0 and liver_ml > 0:
            slope = float(np.clip(np.log(liver_ml / v_prev) / np.log(f / f_prev), 1.5, 4.0))
        f_prev, v_prev = f, liver_ml
        anat.liver_scale = float(np.clip(f * (target_ml / max(liver_ml, 1.0)) ** (1.0 / slope), 0.6, 1.5))
    else:
        liver_ml, coarse = _liver_volume_ml(anat, fields, scale_xyz)
    return liver_ml, coarse
