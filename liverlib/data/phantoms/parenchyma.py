"""Liver parenchyma of the phantoms: texture, fatty infiltration and sparing, perfusion, halos, vessel contrast.

All of it is painted as liver (label 1): a network that has only seen smooth livers takes
real parenchyma texture, fatty areas, perfusion differences, vessels and the liver's edge for
lesions. The draws come from the lesion generator and do not depend on the image size.
"""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.shapes import _Field, _smoothstep

_FAT_MODES = ("none", "geographic", "patchy")
# Uneven fatty infiltration: geographic, multifocal, focal sparing (Hamer 2006, RadioGraphics); diffuse steatosis
# is the scanner's (the liver's nominal HU), this adds the uneven part.
_FAT_P = (0.55, 0.25, 0.2)
_TEXTURE_HU = 3.5  # amplitude of the parenchyma texture when the scanner draws none (hu["liver_texture"])


def _sample_parenchyma(rng, anat, coarse, phase) -> dict:
    """Per-case parenchyma: fat, sparing, perfusion, periportal halo and vessel contrast.

    Returns
    -------
    dict
        What :func:`_parenchyma_hu` and :func:`_vessel_hu` need; ``"facts"`` summarises it (plain values).
    """
    lo, hi = anat.liver_box()
    par = {"fine_mix": float(rng.uniform(0.2, 1.0)), "mottle_hu": 0.0, "wedges": [], "sparing": None}
    mode = _FAT_MODES[int(rng.choice(len(_FAT_MODES), p=_FAT_P))]
    # fatty areas 10-40 HU below the rest (Kodama 2007, AJR: attenuation falls linearly with the fat fraction)
    par["fat"], par["fat_hu"] = mode, float(rng.uniform(10.0, 40.0)) if mode != "none" else 0.0
    if mode == "geographic":  # large areas with straight, segmental margins
        normal = rng.normal(0.0, 1.0, 3)
        par["fat_field"] = _Field(rng, lo, hi, rng.uniform(18.0, 30.0))
        par["fat_plane"] = (normal / np.linalg.norm(normal) * rng.uniform(0.6, 1.6) / 60.0, (lo + hi) / 2)
        par["fat_thr"], par["fat_soft"] = float(rng.uniform(0.2, 1.0)), float(rng.uniform(0.08, 0.2))
    elif mode == "patchy":  # multifocal nodular fat
        par["fat_field"] = _Field(rng, lo, hi, rng.uniform(7.0, 12.0))
        par["fat_thr"], par["fat_soft"] = float(rng.uniform(0.9, 1.5)), float(rng.uniform(0.15, 0.35))
    if mode == "geographic" and rng.random() < 0.6:
        # focal sparing by the gallbladder fossa, or by the falciform ligament (segment IV)
        if anat.gallbladder is not None:
            centre = anat.gallbladder.c
        else:
            fis_x = anat.liver_anchor[2] + anat.liver_scale * (8.0 - anat.liver_anchor[2])
            centre = np.array([-60.0, -45.0, fis_x - 10.0])
        par["sparing"] = (centre, float(rng.uniform(22.0, 40.0)), _Field(rng, lo, hi, 9.0))
    cz, cy, cx, cd = coarse
    par["fat_mean"] = float(_fat_fraction(par, cz, cy, cx)[cd < 0].mean()) if mode != "none" else 0.0
    if phase in ("arterial", "portal_venous") and rng.random() < (0.6 if phase == "arterial" else 0.15):
        # mottled, heterogeneous arterial enhancement (Itai and Matsui 1997, Radiology: blood flow and liver imaging)
        par["mottle_hu"] = float(rng.uniform(3.0, 10.0) if phase == "arterial" else rng.uniform(2.0, 5.0))
        par["mottle"] = _Field(rng, lo, hi, rng.uniform(6.0, 10.0))
    if phase == "arterial" and rng.random() < 0.4:
        par["wedges"] = _sample_wedges(rng, coarse, int(rng.integers(1, 4)))
    # periportal low-attenuation halo (oedema, lymph; Lawson 1993): a 2-6 mm cuff, 15-35 HU below the liver
    halo = rng.random() < 0.15
    par["halo_mm"] = float(rng.uniform(2.0, 6.0)) if halo else 0.0
    par["halo_hu"] = float(rng.uniform(15.0, 35.0)) if halo else 0.0
    par["vessel_gain"] = float(rng.uniform(0.6, 1.2))  # vessel-to-liver contrast, relative to the phase's
    # unopacified hepatic veins in an early portal venous phase: blood at ~35-55 HU
    par["hepatic_hu"] = float(rng.uniform(35.0, 55.0)) if phase == "portal_venous" and rng.random() < 0.15 else None
    par["facts"] = {"fat": mode, "fat_hu": round(par["fat_hu"], 1), "fat_share": round(par["fat_mean"], 3),
                    "sparing": par["sparing"] is not None,
                    "mottle_hu": round(par["mottle_hu"], 1), "wedges": len(par["wedges"]),
                    "halo_hu": round(par["halo_hu"], 1), "vessel_gain": round(par["vessel_gain"], 2),
                    "hepatic_unopacified": par["hepatic_hu"] is not None}
    return par


def _sample_wedges(rng, coarse, n: int) -> list[dict]:
    """Transient hepatic attenuation differences: wedges with their base on the capsule (Colagrande 2007, AJR)."""
    cz, cy, cx, cd = coarse
    grad = np.gradient(cd, cz, cy, cx)
    # on the lateral and anterior surfaces (normal mostly in the axial plane), where they look like wedges
    lateral = np.abs(grad[0]) < 0.5 * np.sqrt(grad[0] ** 2 + grad[1] ** 2 + grad[2] ** 2)
    cand = np.flatnonzero((cd > -10.0) & (cd < -3.0) & lateral)
    wedges = []
    for u, length, half, hu in zip(rng.random(n), rng.uniform(20.0, 50.0, n), rng.uniform(15.0, 35.0, n),
                                   rng.uniform(10.0, 30.0, n)):
        if not len(cand):
            break
        i = np.unravel_index(cand[int(u * len(cand))], cd.shape)
        normal = np.array([g[i] for g in grad])
        normal /= max(float(np.linalg.norm(normal)), 1e-6)
        surface = np.array([cz[i[0]], cy[i[1]], cx[i[2]]]) - float(cd[i]) * normal
        wedges.append({"apex": surface - length * normal, "axis": normal, "cos": float(np.cos(np.radians(half))),
                       "hu": float(hu)})
    return wedges


def _wedge(w: dict, z, y, x) -> np.ndarray:
    """Weight (0-1) of a wedge: a cone from its apex towards the capsule, with soft sides."""
    Z = (z - w["apex"][0]).astype(np.float32)[:, None, None]
    Y = (y - w["apex"][1]).astype(np.float32)[None, :, None]
    X = (x - w["apex"][2]).astype(np.float32)[None, None, :]
    along = Z * w["axis"][0] + Y * w["axis"][1] + X * w["axis"][2]
    cosang = along / (np.sqrt(Z * Z + Y * Y + X * X) + 1e-3)
    return _smoothstep((cosang - w["cos"]) / 0.06) * _smoothstep(along / 8.0)


def _fat_fraction(par: dict, z, y, x) -> np.ndarray:
    """How fatty (0-1) the parenchyma is on the grid (z, y, x), sparing included."""
    g = par["fat_field"](z, y, x)
    if par["fat"] == "geographic":
        n, c = par["fat_plane"]
        g = g + ((z - c[0]) * n[0])[:, None, None] + ((y - c[1]) * n[1])[None, :, None] \
            + ((x - c[2]) * n[2])[None, None, :]
    fat = _smoothstep((g - par["fat_thr"]) / par["fat_soft"])
    if par["sparing"] is not None:
        centre, radius, field = par["sparing"]
        dist = np.sqrt(((z - centre[0]) ** 2)[:, None, None] + ((y - centre[1]) ** 2)[None, :, None]
                       + ((x - centre[2]) ** 2)[None, None, :])
        fat = fat * (1.0 - _smoothstep((radius + 6.0 * field(z, y, x) - dist) / 5.0))
    return fat


def _parenchyma_hu(par: dict, fields, hu, z, y, x) -> np.ndarray:
    """HU of the liver parenchyma on the grid (z, y, x): texture, fat, sparing, mottling and wedges."""
    mix = par["fine_mix"]
    amp = hu.get("liver_texture", _TEXTURE_HU) / np.sqrt(1.0 + mix * mix)
    value = hu["liver"] + amp * (fields["texture"](z, y, x) + mix * fields["fine"](z, y, x))
    if par["fat_hu"]:  # around the liver's mean: hu["liver"] stays the case's mean liver HU
        value = value - par["fat_hu"] * (_fat_fraction(par, z, y, x) - par["fat_mean"])
    if par["mottle_hu"]:
        value = value + par["mottle_hu"] * par["mottle"](z, y, x)
    for w in par["wedges"]:
        value = value + w["hu"] * _wedge(w, z, y, x)
    return value.astype(np.float32)


def _vessel_hu(par: dict, hu) -> tuple[float, float]:
    """HU of the intrahepatic portal and hepatic veins: the case's vessel contrast, unopacified veins."""
    liver, gain = hu["liver"], par["vessel_gain"]
    portal = liver + gain * (hu["portal_vein"] - liver)
    hepatic = par["hepatic_hu"] if par["hepatic_hu"] is not None else liver + gain * (hu["hepatic_vein"] - liver)
    return portal, hepatic
