"""Rendering of the phantoms: every structure painted, back to front, onto a :class:`_Canvas`.

Each structure is composited over the previous ones with an opacity
``alpha = clip(0.5 - d / w, 0, 1)`` (``d`` its SDF, ``w`` the pixel size): partial
volume at every edge. SDFs are evaluated only inside each structure's box, on a
grid no finer than the canvas cell (3 mm for large organs), then upsampled.
"""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.anatomy import _Anatomy
from liverlib.data.phantoms.bowel import _paint_tube, _small_bowel
from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.lesions import _paint_lesion
from liverlib.data.phantoms.liver_shape import _collection
from liverlib.data.phantoms.masses import _paint_masses
from liverlib.data.phantoms.parenchyma import _parenchyma_hu, _vessel_hu
from liverlib.data.phantoms.retroperitoneum import (
    _paint_adrenals,
    _paint_crura,
    _paint_retroperitoneal,
)
from liverlib.data.phantoms.shapes import _BIG, _ellipse2d
from liverlib.data.phantoms.skeleton import _paint_pelvis, _paint_ribs, _paint_spine
from liverlib.data.phantoms.tissues import _GAS_HU, TISSUES

_ORGAN_CELL = 3.0  # mm: grid for the SDFs of large organs (see _Canvas.sdf)


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
    """Paint every structure, back to front; returns facts for the meta dict (``lesions``, ``anatomy``)."""
    c = canvas
    _paint_wall_bands(anat, c, hu)
    thorax, zdia = _thorax_box(anat, c)
    _paint_strands(anat, c, fields, hu)
    if thorax is not None:
        _paint_diaphragm(anat, c, thorax, zdia, hu)
    _paint_heart(anat, c, hu)
    if thorax is not None:
        _paint_lungs(anat, c, thorax, fields, hu)
    _paint_crura(anat, c, hu)
    c.draw(anat.esophagus, hu["bowel_wall"], "bowel_wall")
    _paint_retroperitoneal(anat, c, hu)
    for tube in _small_bowel(anat.rng, float(c.z[0]), anat.gut_facts["bowel_thickening"]) + list(anat.tubes):
        _paint_tube(c, tube, fields, hu)
    _paint_organs(anat, c, fields, hu, phase)
    _paint_adrenals(anat, c, hu)
    _paint_masses(anat, c, fields, hu)
    _paint_perihepatic(anat, c, fields, hu)
    facts = {"lesions": _paint_liver(anat, c, fields, hu, lesions_spec), "anatomy": anat.facts(),
             "parenchyma": lesions_spec["parenchyma"]["facts"]}
    _paint_vessels(anat, c, hu)
    _paint_spine(anat, c, hu, fields["fine"])
    _paint_ribs(anat, c, hu)
    _paint_pelvis(anat, c, hu)
    return facts


def _paint_wall_bands(anat: _Anatomy, c: _Canvas, hu) -> None:
    """The body wall (:func:`_paint_body`), painted once per band of planes at most 6 mm thick.

    The outline changes slowly with height: each band is painted at its mean height
    and copied to the band's planes (the error is well under a millimetre).
    """
    step = float(c.z[1] - c.z[0]) if len(c.z) > 1 else 6.0
    group = np.arange(len(c.z)) // max(1, int(6.0 // step))
    reps = np.array([c.z[group == g].mean() for g in range(group[-1] + 1)])
    wall = _Canvas(reps, c.y, c.x, c.w, _GAS_HU)
    _paint_body(anat, wall, hu)
    np.take(wall.img, group, axis=0, out=c.img)
    np.take(wall.tis, group, axis=0, out=c.tis)


def _thorax_box(anat: _Anatomy, c: _Canvas):
    """The box above the lowest point of the diaphragm inside the cavity (None if empty) and the diaphragm's z."""
    body = anat.body
    zdia = anat.diaphragm.z(c.y, c.x)[None]
    rho2, theta2 = body.polar(c.y, c.x)
    in_cavity = rho2 < body.r_cavity2d(theta2) * 1.1
    zdia_min = float(zdia[0][in_cavity].min()) if in_cavity.any() else 0.0
    rows, cols = np.nonzero(in_cavity)
    thorax = None
    if len(rows):
        thorax = c.box(np.array([zdia_min - 7.0, c.y[rows.min()], c.x[cols.min()]]),
                       np.array([1e9, c.y[rows.max()], c.x[cols.max()]]))
    return thorax, zdia


def _paint_strands(anat: _Anatomy, c: _Canvas, fields, hu) -> None:
    """Strands in the fat (septa, small vessels): thin sheets where a smooth field crosses zero."""
    body = anat.body
    sbox = c.box(np.array([-1e9, -body.b_ant - 40.0, -body.a - 60.0]), np.array([1e9, 1e9, body.a + 60.0]))
    if sbox is not None:
        z, y, x = c.sub(sbox)
        strands = np.abs(fields["strands"](z, y, x)) * 9.0 - 0.5
        strands[c.tis[sbox] != TISSUES["fat"]] = _BIG  # only in fat
        c.paint(sbox, strands, hu["visceral_fat"] + 70.0, "fat")


def _paint_diaphragm(anat: _Anatomy, c: _Canvas, thorax, zdia, hu) -> None:
    """The diaphragm (a muscle sheet) and, above it, mediastinal fat filling the thorax."""
    Z = c.z[:, None, None].astype(np.float32)
    zt = Z[thorax[0]]
    dc = anat.body.cavity_sdf(*c.sub(thorax))
    zd = zdia[:, thorax[1], thorax[2]]
    c.paint(thorax, np.maximum(dc, (zd - 6.0) - zt), hu["muscle"], "muscle")
    c.paint(thorax, np.maximum(dc, zd - zt), hu["visceral_fat"], "fat")


def _heart_sdf(anat: _Anatomy, z, y, x):
    """The heart, cut flat by the diaphragm and kept inside the cavity."""
    d = anat.heart.sdf(z, y, x)
    d = np.maximum(d, anat.diaphragm.z(y, x)[None] + 4.0 - z[:, None, None])
    return np.maximum(d, anat.body.cavity_sdf(z, y, x) + 4.0)


def _paint_heart(anat: _Anatomy, c: _Canvas, hu) -> None:
    """Pericardial fat, myocardium and the blood pool."""
    box = c.box(anat.heart.lo - 8.0, anat.heart.hi + 8.0)
    if box is not None:
        d = c.sdf(lambda z, y, x: _heart_sdf(anat, z, y, x), box, _ORGAN_CELL)
        c.paint(box, d - 5.0, hu["visceral_fat"], "fat")  # pericardial fat
        c.paint(box, d, np.where(d < -9.0, hu["blood"], hu["myocardium"]).astype(np.float32), "heart")


def _lungs(anat: _Anatomy, fields, hu, z, y, x):
    """The lungs' SDF, their vessels' SDF and the lung parenchyma's HU."""
    d = np.maximum(anat.body.cavity_sdf(z, y, x) + 2.0, (anat.diaphragm.z(y, x)[None] + 0.5) - z[:, None, None])
    d = np.maximum(d, -_ellipse2d(y[None, :, None], x[None, None, :], 18.0, 8.0, 36.0, 34.0))  # mediastinum
    d = np.maximum(d, 7.0 - anat.heart.sdf_on(z, y, x, 10.0))
    # pulmonary vessels: where two smooth fields both cross zero, curves in 3-D
    f1, f2 = fields["lung"](z, y, x), fields["lung2"](z, y, x)
    vessel = np.sqrt(f1 * f1 + f2 * f2) * 5.0 - 1.2
    return d, vessel, hu["lung"] + 25.0 * fields["texture"](z, y, x)


def _paint_lungs(anat: _Anatomy, c: _Canvas, thorax, fields, hu) -> None:
    """Lungs with their vessels, in the thorax box."""
    d, vessel, lung = c.sdf(lambda z, y, x: _lungs(anat, fields, hu, z, y, x), thorax, _ORGAN_CELL)
    c.paint(thorax, d, lung, "lung")
    c.paint(thorax, np.maximum(vessel, d + 3.0), hu["blood"], "vein")


def _kidney_sdf(anat: _Anatomy, kid, sinus, fields, z, y, x):
    """A kidney with its sinus cut out; also the sinus SDF and the texture placing the pyramids."""
    d = kid.sdf(z, y, x) + 1.5 * fields["shape"](z, y, x)
    d = np.maximum(d, anat.body.cavity_sdf(z, y, x) + 1.0)
    ds = sinus.sdf_on(z, y, x)
    return np.maximum(d, -ds), ds, fields["fine"](z, y, x)


def _spleen_sdf(anat: _Anatomy, fields, z, y, x):
    """The spleen under the left dome, kept off the stomach, left kidney and colon; and its texture."""
    d = anat.spleen.sdf(z, y, x) + 3.0 * fields["shape"](z, y, x)
    d = np.maximum(d, anat.body.cavity_sdf(z, y, x) + 3.0)
    d = np.maximum(d, z[:, None, None] - (anat.diaphragm.z(y, x)[None] - 5.0))
    for other, gap in ((anat.stomach, 3.0), (anat.kidneys[1][1], 3.0), (anat.colon, 2.0)):
        d = np.maximum(d, gap - other.sdf_on(z, y, x, gap + 2))
    return d, fields["texture"](z, y, x)


def _paint_organs(anat: _Anatomy, c: _Canvas, fields, hu, phase) -> None:
    """Kidneys (cortex, medulla, sinus fat), pancreas, spleen and gallbladder."""
    w = c.w
    fine = fields["fine"]
    medulla_gap = hu["kidney"] - hu["kidney_medulla"]
    for side, kid, sinus in anat.kidneys:
        box = c.box(kid.lo - w - 2, kid.hi + w + 2)
        if box is None:
            continue
        d, ds, f = c.sdf(lambda z, y, x, kid=kid, sinus=sinus: _kidney_sdf(anat, kid, sinus, fields, z, y, x), box, _ORGAN_CELL)
        # medulla: the pyramids lie inside a ~6 mm cortex
        pyramids = np.clip((-d - 5.0) / 3.0, 0, 1) * np.clip(0.5 + f, 0, 1)
        val = hu["kidney"] - medulla_gap * pyramids
        c.paint(box, d, val, "kidney")
        c.paint(box, np.maximum(ds + 2.0, d + 1.0), hu["visceral_fat"], "fat")
    pancreas = hu["pancreas"]
    c.draw(anat.pancreas, lambda z, y, x, d: pancreas + 8.0 * fine(z, y, x), "pancreas")
    box = c.box(anat.spleen.lo - w - 2, anat.spleen.hi + w + 2)
    if box is not None:
        d, t = c.sdf(lambda z, y, x: _spleen_sdf(anat, fields, z, y, x), box, _ORGAN_CELL)
        c.paint(box, d, hu["spleen"] + (12.0 if phase == "arterial" else 3.0) * t, "spleen")
    if anat.gallbladder is not None:
        gb = c.draw(anat.gallbladder, hu["bowel_wall"], "gallbladder")
        if gb is not None:
            c.paint(gb[0], gb[1] + 2.0, hu["bile"], "gallbladder")


def _paint_perihepatic(anat: _Anatomy, c: _Canvas, fields, hu) -> None:
    """Fluid against the liver (tissue "fluid"): ascites over the fat around it, a collection on a resection's cut."""
    shape = anat.liver_shape
    if shape.ascites > 0:
        lo, hi = anat.liver_box(margin=shape.ascites + 4.0)
        box = c.box(lo, hi)
        if box is not None:
            def sdf(z, y, x):
                d = anat.liver_sdf(z, y, x, fields) - shape.ascites
                d = np.maximum(d, anat.body.cavity_sdf(z, y, x) + 1.5)
                return np.maximum(d, z[:, None, None] - (anat.diaphragm.z(y, x)[None] - 6.0))

            d = c.sdf(sdf, box, _ORGAN_CELL)
            d[c.tis[box] != TISSUES["fat"]] = _BIG  # it fills the fat spaces, around the organs
            c.paint(box, d, hu["cyst"], "fluid")
    collection = _collection(shape, anat.liver_anchor, anat.liver_scale)
    if collection is not None:
        c.draw(collection, hu["cyst"], "fluid")


def _paint_liver(anat: _Anatomy, c: _Canvas, fields, hu, lesions_spec) -> list[dict]:
    """Liver parenchyma, intrahepatic vessels and lesions; returns the lesions' descriptions.

    ``lesions_spec`` is :func:`~liverlib.data.phantoms.lesions._sample_lesions`' dict: the parenchyma
    (texture, fat, perfusion, periportal halo, vessel contrast: all liver, label 1) and the lesions.
    """
    par = lesions_spec["parenchyma"]
    lo, hi = anat.liver_box()
    lbox = c.box(lo, hi)
    lesions = []
    if lbox is not None:
        d_liver, liver = c.sdf(
            lambda z, y, x: (anat.liver_sdf(z, y, x, fields), _parenchyma_hu(par, fields, hu, z, y, x)),
            lbox, _ORGAN_CELL,
        )
        portal, hepatic = c.sdf(
            lambda z, y, x: (anat.portal_tree.sdf(z, y, x, 4.0), anat.hepatic_tree.sdf(z, y, x, 4.0)), lbox
        )
        c.paint(lbox, d_liver, liver, "liver")
        if par["halo_hu"]:  # a low-attenuation cuff around the portal branches, still liver
            c.paint(lbox, np.maximum(portal - par["halo_mm"], d_liver + 1.5), liver - par["halo_hu"], "liver")
        del liver
        # intrahepatic vessels, kept 1.5 mm inside the capsule
        for d, value in zip((portal, hepatic), _vessel_hu(par, hu)):
            c.paint(lbox, np.maximum(d, d_liver + 1.5), value, "liver_vessel")
        del portal, hepatic
        for les in lesions_spec["lesions"]:
            lesions.append(_paint_lesion(c, lbox, d_liver, les, hu, fields))
    return lesions


def _paint_vessels(anat: _Anatomy, c: _Canvas, hu) -> None:
    """Aorta and arteries, IVC and veins, portal trunk."""
    c.draw(anat.aorta, hu["artery"], "artery")
    for art in anat.arteries:
        c.draw(art, hu["artery"], "artery")
    c.draw(anat.ivc, hu["vein"], "vein")
    for vein in anat.veins:
        c.draw(vein, hu["vein"], "vein")
    c.draw(anat.portal, hu["portal_vein"], "vein")
