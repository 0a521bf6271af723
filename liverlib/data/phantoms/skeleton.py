"""The skeleton of the phantoms: vertebrae, ribs with costal cartilage, xiphoid and iliac wings."""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.shapes import (
    _BIG,
    _P,
    _Chain,
    _ellipse2d,
    _segment2d,
    _smoothstep,
)
from liverlib.data.phantoms.tissues import TISSUES


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
