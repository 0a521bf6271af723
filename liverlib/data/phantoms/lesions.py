"""Liver lesions of the phantoms: how many, which kind, how large and where; and their painting.

Kinds (``kind`` in the meta): ``hypo`` (metastasis: hypodense, rim-enhancing and target-like in
enhanced phases, necrotic when large), ``hyper`` (haemangioma, FNH, hypervascular metastasis),
``washout`` (hepatocellular carcinoma: bright in the arterial phase, darker than the liver later,
often with an enhancing capsule), ``cyst`` (water, sharp, homogeneous) and ``calcified``
(hypodense with calcified foci, or a coarsely calcified metastasis). Sites (``site``): ``deep``,
``subcapsular`` (reaching the capsule) and ``cluster`` (3-12 small lesions close together).

The lesions and the parenchyma (:mod:`.parenchyma`) are drawn from the lesion generator, a
fixed number of draws per lesion, and do not depend on the image size; only the smallest
diameter follows the slice spacing.
"""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.parenchyma import _sample_parenchyma
from liverlib.data.phantoms.shapes import (
    _BIG,
    _Ellipsoid,
    _index_box,
    _on_grid,
    _rotation,
)
from liverlib.data.phantoms.tissues import _LESION_DELTA

_KINDS = ("hypo", "hyper", "washout", "cyst", "calcified")
_KIND_P = (0.42, 0.14, 0.16, 0.16, 0.12)  # the case's main kind; other lesions mix in
# simple cysts: water, 0-20 HU, imperceptible wall (textbook; hu["cyst"]); calcification > 200 HU (hu["calcification"])
_MAX_DIAM = {"hypo": 80.0, "hyper": 60.0, "washout": 80.0, "cyst": 70.0, "calcified": 60.0}  # mm
_PRIVATE = "_paint"  # the key holding what only the painting needs


def _sample_lesions(rng, anat, coarse, dz, phase, scale) -> dict:
    """Lesions placed in the liver on the coarse grid, and the parenchyma of the case.

    Returns
    -------
    dict
        ``"lesions"``: one dict per lesion (see :func:`_paint_lesion`); ``"parenchyma"``: see
        :func:`~liverlib.data.phantoms.parenchyma._sample_parenchyma`.
    """
    cz, cy, cx, cd = coarse
    u = rng.random()
    if u < 0.22:  # lesion-free livers are common (LiTS: ~20 % of the training volumes)
        n = 0
    elif u < 0.88:
        n = int(min(1 + rng.geometric(0.4), 8))
    else:
        n = int(rng.integers(8, 16))
    main = _KINDS[int(rng.choice(len(_KINDS), p=_KIND_P))]
    u_cluster, u_at = rng.random(2)
    cluster_at = int(u_at * n) if u_cluster < 0.2 else -1
    s = float(np.cbrt(np.prod(scale)))
    d_min = max(5.0, dz + 1.5)
    grid = (cz, cy, cx, cd, np.gradient(cd, cz, cy, cx))
    clear = np.full(cd.shape, np.inf, np.float32)  # distance to the nearest placed lesion's surface (mm)
    out = []
    for i in range(n):
        if i == cluster_at:
            out += _sample_cluster(rng, grid, clear, i, main, d_min, phase, s)
            continue
        kind = main if rng.random() < 0.65 else _KINDS[int(rng.choice(len(_KINDS), p=_KIND_P))]
        site = "subcapsular" if rng.random() < 0.2 else "deep"
        lo = max(d_min, 10.0) if site == "subcapsular" or kind == "calcified" else d_min
        les = _draw_lesion(rng, kind, phase, lo, _MAX_DIAM[kind] if i == 0 else 45.0, s)
        if _place(les, grid, clear, site):
            les.update(site=site, cluster=None)
            out.append(les)
    return {"lesions": out, "parenchyma": _sample_parenchyma(rng, anat, coarse, phase)}


def _sample_cluster(rng, grid, clear, group: int, kind: str, d_min: float, phase: str, s: float) -> list[dict]:
    """3-12 small lesions (5-12 mm) within 10-22 mm of a centre: metastases, biliary hamartomas (2-15 mm)."""
    cz, cy, cx, cd, _ = grid
    kind = kind if kind in ("hypo", "hyper", "cyst") else "hypo"
    n = int(rng.integers(3, 13))
    reach, u = rng.uniform(10.0, 22.0) / s, rng.random()
    members = [_draw_lesion(rng, kind, phase, d_min, max(12.0, d_min + 3.0), s) for _ in range(n)]
    cand = np.flatnonzero((cd < -(0.5 * reach + 6.0)) & (clear > reach + 8.0))
    if not len(cand):
        return []
    i = np.unravel_index(cand[int(u * len(cand))], cd.shape)
    centre = np.array([cz[i[0]], cy[i[1]], cx[i[2]]])
    dist = np.sqrt((cz[:, None, None] - centre[0]) ** 2 + (cy[None, :, None] - centre[1]) ** 2
                   + (cx[None, None, :] - centre[2]) ** 2)
    near = dist < reach
    out = []
    for les in members:
        if _place(les, grid, clear, "deep", near=near, gap=1.5):
            les.update(site="cluster", cluster=group)
            out.append(les)
    return out


def _draw_lesion(rng, kind: str, phase: str, d_lo: float, d_hi: float, s: float) -> dict:
    """Size, shape and look of one lesion (the same draws whatever the kind); placed by :func:`_place`."""
    diam = float(np.exp(rng.uniform(np.log(d_lo), np.log(max(d_hi, d_lo)))))  # log-uniform: many small
    r = diam / 2 / s
    radii = r * rng.uniform(0.8, 1.2, 3)
    radii *= r / np.cbrt(np.prod(radii))  # keep the equivalent diameter
    rot = _rotation(z=rng.uniform(0, 180), y=rng.uniform(0, 180), x=rng.uniform(0, 180))
    lo_d, hi_d = _LESION_DELTA["hypo" if kind in ("cyst", "calcified") else kind][phase]
    delta = float(rng.uniform(lo_d, hi_d))
    u_nec, u_ring, u_margin, u_calc, u_pick = rng.random(5)
    # metastases: rim enhancement in enhanced phases, a ring (target-like) around a darker core
    rim = kind == "hypo" and phase != "unenhanced" and diam > 10.0 and u_ring < 0.55
    # hepatocellular carcinoma: an enhancing capsule in the portal venous and delayed phases (LI-RADS v2018)
    capsule = kind == "washout" and phase in ("portal_venous", "delayed") and diam > 10.0 and u_ring < 0.6
    # the ring: depth and width (mm) below the edge, HU over the liver
    rim_ring = (rng.uniform(1.5, 4.0), rng.uniform(1.2, 2.5), rng.uniform(0.0, 35.0))
    capsule_ring = (rng.uniform(0.8, 1.5), rng.uniform(0.8, 1.5), rng.uniform(5.0, 25.0))
    # internal texture (HU): cysts homogeneous, HCC mosaic in the arterial phase
    tex = {"cyst": (0.0, 1.0), "washout": (8.0, 15.0) if phase == "arterial" else (4.0, 8.0)}.get(kind, (3.0, 8.0))
    margin = float(rng.uniform(1.0, 4.0))  # an ill-defined, infiltrative edge (mm)
    paint = {
        "shape": _Ellipsoid(np.zeros(3), radii, rot), "r": r, "radii": radii, "d_lo": d_lo, "pick": u_pick,
        "jitter": rng.uniform(-1.5, 1.5, 3), "offset": float(rng.uniform(0, 500)),
        "lobulation": float(rng.uniform(0.0, 0.03) if kind == "cyst" else rng.uniform(0.06, 0.16)),
        "tex_hu": float(rng.uniform(*tex)), "necrosis_hu": float(rng.uniform(15.0, 35.0)),
        "ring": rim_ring if rim else capsule_ring,
        # calcified foci: directions, depths (share of the smallest radius), radii (mm); or a threshold
        "foci": (rng.normal(0.0, 1.0, (4, 3)), rng.uniform(0.0, 0.5, 4), rng.uniform(1.5, 4.0, 4)),
        "n_foci": int(rng.integers(1, 5)), "calc_thr": float(rng.uniform(0.4, 1.0)),
    }
    necrosis = (kind == "hypo" and diam > 30.0 and u_nec < 0.6) or (kind == "washout" and diam > 40.0 and u_nec < 0.4)
    ill_defined = kind in ("hypo", "washout") and not (rim or capsule) and u_margin < 0.4
    return {
        "kind": kind,
        "diameter_mm": round(diam, 2),
        "delta_hu": None if kind == "cyst" else round(delta, 1),
        "necrosis": bool(necrosis),
        "rim": bool(rim),
        "capsule": bool(capsule),
        "calcification": ("foci" if u_calc < 0.6 else "coarse") if kind == "calcified" else None,
        "margin_mm": round(margin, 1) if ill_defined else 0.0,
        _PRIVATE: paint,
    }


def _place(les: dict, grid, clear, site: str, near=None, gap: float = 3.0) -> bool:
    """Put a drawn lesion on a free spot of the coarse grid (``clear`` updated); False if there is none."""
    cz, cy, cx, cd, grad = grid
    p = les[_PRIVATE]
    r = p["r"]
    for _ in range(4):
        if site == "subcapsular":  # within 10 mm of the capsule, then pushed out along the normal
            ok = (cd > -10.0) & (cd < -2.0) & (clear > r + gap + 8.0)
        else:
            ok = (cd < -(0.65 * r + 2.0)) & (clear > r + gap)
        if near is not None:
            ok &= near
        cand = np.flatnonzero(ok)
        if len(cand):
            break
        smaller = max(p["d_lo"], les["diameter_mm"] * 0.75)  # smaller until it fits, not under the minimum
        r, les["diameter_mm"] = r * smaller / les["diameter_mm"], round(smaller, 2)
    if not len(cand):
        return False
    i = np.unravel_index(cand[int(p["pick"] * len(cand))], cd.shape)
    centre = np.array([cz[i[0]], cy[i[1]], cx[i[2]]])
    if site == "subcapsular":  # 2.5 mm + a fraction of the radius below the surface: it reaches the capsule
        normal = np.array([g[i] for g in grad])
        normal /= max(float(np.linalg.norm(normal)), 1e-6)
        centre = centre - (float(cd[i]) + 2.5 + (0.1 + 0.35 * p["pick"]) * r) * normal
    else:
        centre = centre + p["jitter"]
    p["radii"] = p["radii"] * (r / p["r"])
    p["r"] = r
    p["shape"] = _Ellipsoid(centre, p["radii"], p["shape"].R)
    les["centre_std"] = tuple(round(float(v), 1) for v in centre)
    dist = np.sqrt((cz[:, None, None] - centre[0]) ** 2 + (cy[None, :, None] - centre[1]) ** 2
                   + (cx[None, None, :] - centre[2]) ** 2)
    np.minimum(clear, dist - r, out=clear)
    return True


def _lesion_value(les: dict, hu, d, tex, now) -> np.ndarray:
    """HU inside a lesion from its SDF ``d``: texture, necrosis, rim or capsule, ill-defined margin."""
    p = les[_PRIVATE]
    r = p["r"]
    base = hu["cyst"] if les["kind"] == "cyst" else hu["liver"] + les["delta_hu"]
    value = base + p["tex_hu"] * tex
    if les["necrosis"]:  # a central core near fluid
        value = value - p["necrosis_hu"] * np.clip((-d - 0.45 * r) / (0.2 * r), 0.0, 1.0)
    if les["rim"] or les["capsule"]:
        depth, width, over = p["ring"]
        ring = np.clip(1.0 - np.abs(d + depth) / width, 0.0, 1.0)
        value = value + ring * (hu["liver"] + over - value)
    if les["margin_mm"]:  # infiltrative edge: blends into the parenchyma over a few mm
        value = now + np.clip(-d / les["margin_mm"], 0.0, 1.0) * (value - now)
    return value


def _paint_lesion(c: _Canvas, lbox, d_liver, les, hu, fields) -> dict:
    """One lesion, clipped 1 mm inside the liver, with its calcifications; returns its description."""
    p = les[_PRIVATE]
    desc = {k: v for k, v in les.items() if k != _PRIVATE}
    if les["kind"] == "cyst":
        desc["delta_hu"] = round(hu["cyst"] - hu["liver"], 1)
    ell = p["shape"]
    box = _index_box(c.z[lbox[0]], c.y[lbox[1]], c.x[lbox[2]], ell.lo - 4, ell.hi + 4)
    if box is None:
        return desc
    z, y, x = c.z[lbox[0]][box[0]], c.y[lbox[1]][box[1]], c.x[lbox[2]][box[2]]
    fine, off, r = fields["fine"], p["offset"], p["r"]
    d, tex = _on_grid(
        lambda z, y, x: (ell.sdf(z, y, x) + p["lobulation"] * r * fine(z + off, y, x), fine(z, y + off, x)),
        z, y, x, c.cell,
    )
    d = np.maximum(d, d_liver[box] + 1.0)
    gbox = tuple(slice(a.start + b.start, a.start + b.stop) for a, b in zip(lbox, box))
    c.paint(gbox, d, _lesion_value(les, hu, d, tex, c.img[gbox]), "lesion")
    if les["calcification"] == "foci":  # 1-4 round foci well inside
        dirs, depth, rad = p["foci"]
        dc = np.full(d.shape, _BIG, np.float32)
        for k in range(p["n_foci"]):
            q = ell.c + dirs[k] / np.linalg.norm(dirs[k]) * depth[k] * p["radii"].min()
            dk = np.sqrt(((z - q[0]) ** 2)[:, None, None] + ((y - q[1]) ** 2)[None, :, None]
                         + ((x - q[2]) ** 2)[None, None, :]) - min(rad[k], 0.3 * p["radii"].min())
            np.minimum(dc, dk.astype(np.float32), out=dc)
    elif les["calcification"] == "coarse":  # chunky, scattered calcification of a mucinous metastasis
        dc = 4.0 * (p["calc_thr"] - _on_grid(lambda z, y, x: fine(z - off, y, x + off), z, y, x, c.cell))
    if les["calcification"]:
        c.paint(gbox, np.maximum(dc, d + 2.5), hu["calcification"], "lesion")
    return desc
