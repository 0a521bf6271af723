"""The phantoms' gut: stomach with rugae, duodenum, small bowel and colon, each with its wall and contents.

What is drawn per case: the stomach's filling (collapsed with a thick wall,
fluid, food, gas or positive oral contrast), the content of each duodenal and
small-bowel loop (fluid, gas, oral contrast, feces-like, collapsed) and, in some
cases, a segment with a thickened wall (6-15 mm): soft tissue that a network
could take for liver or a lesion.

Sources: normal gastric wall < 5 mm distended, up to 10-12 mm in the collapsed
antrum (Insko et al., Radiology 2003); small bowel wall < 3 mm, loops < 25 mm
across (Macari & Balthazar, AJR 2001); wall thickening 6-15 mm in enteritis,
ischaemia, lymphoma (Macari & Balthazar 2001); small-bowel feces sign (Mayo-Smith
et al., AJR 1995); oral contrast 150-400 HU (Megibow, Radiology 1998).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from liverlib.data.phantoms.canvas import _Canvas
from liverlib.data.phantoms.shapes import _catmull_rom, _Chain, _smoothstep
from liverlib.data.phantoms.tissues import _GAS_HU

_TUBE_CELL = 2.4  # mm: grid of the bowel SDFs (radius >= 6 mm)

# stomach filling: probability, radius factor, wall mm, rugae depth mm, content, gas fraction
_STOMACH = {
    "collapsed": (0.2, (0.45, 0.6), (7.0, 12.0), (3.0, 6.0), "fluid", (0.0, 0.1)),
    "fluid": (0.25, (0.9, 1.1), (3.0, 5.0), (1.0, 3.0), "fluid", (0.1, 0.4)),
    "food": (0.25, (0.9, 1.15), (3.0, 5.0), (0.5, 2.0), "food", (0.1, 0.5)),
    "gas": (0.15, (0.9, 1.15), (2.5, 4.0), (1.5, 3.5), "fluid", (0.7, 0.95)),
    "contrast": (0.15, (0.9, 1.1), (3.0, 5.0), (1.0, 3.0), "contrast", (0.1, 0.4)),
}
# small bowel and duodenal loops: content and its probability
_LOOP_CONTENTS = ("fluid", "gas", "contrast", "stool", "collapsed")
_LOOP_P = (0.4, 0.2, 0.15, 0.1, 0.15)


@dataclass
class _Tube:
    """A bowel segment: its centre line, wall (mm), content and the gas fraction of its diameter (from the front).

    ``rugae``: depth (mm) of the mucosal folds; ``thick``: a thickened segment,
    (centre (z, y, x), half length mm, extra wall mm), or None.
    """

    chain: _Chain
    wall: float
    content: str  # "fluid", "food", "stool", "contrast"
    gas: float
    rugae: float = 0.0
    thick: tuple | None = None


def _chain(xyzr, step: float) -> _Chain:
    pts = _catmull_rom(np.asarray(xyzr, float), step)
    return _Chain(pts[:, [2, 1, 0]], pts[:, 3])


def _loop_content(rng) -> tuple[str, float, float, float]:
    """A loop's content, its gas fraction, and the factors on its radius and wall."""
    content = _LOOP_CONTENTS[rng.choice(len(_LOOP_CONTENTS), p=_LOOP_P)]
    if content == "gas":  # gas over a fluid level
        return "fluid", float(rng.uniform(0.4, 0.9)), 1.0, 1.0
    if content == "collapsed":  # a collapsed loop: a soft-tissue cord with a slit of fluid
        return "fluid", 0.0, float(rng.uniform(0.55, 0.7)), float(rng.uniform(1.5, 2.2))
    return content, float(rng.uniform(0.0, 0.3)) if rng.random() < 0.3 else 0.0, 1.0, 1.0


def _sample_gut(rng, lay: dict) -> tuple[list[_Tube], dict]:
    """Stomach, duodenum and colon with their contents, and a thickened segment in some cases.

    Returns
    -------
    tubes (stomach, duodenum, colon), facts (``stomach`` filling, ``bowel_thickening``)
    """
    st, du, co = lay["stomach"], lay["duodenum"], lay["colon"]
    kinds = list(_STOMACH)
    filling = kinds[rng.choice(len(kinds), p=[v[0] for v in _STOMACH.values()])]
    _, rad, wall, rugae, content, gas = _STOMACH[filling]
    sr = rng.uniform(0.75, 1.2) * rng.uniform(*rad)
    stomach = np.array(st["body"] + st["antrum"], dtype=float)
    stomach[: len(st["body"]), 3] *= sr
    stomach[:, :3] += rng.normal(0, 3, (len(stomach), 3))
    tubes = [_Tube(_chain(stomach, st["step"]), float(rng.uniform(*wall)), content, float(rng.uniform(*gas)),
                   float(rng.uniform(*rugae)))]
    d_content, d_gas, d_rad, d_wall = _loop_content(rng)
    duodenum = np.array(du["points"], dtype=float)
    duodenum[:, 3] *= d_rad
    tubes.append(_Tube(_chain(duodenum, du["step"]), du["wall"] * d_wall, d_content, d_gas))

    cr = rng.uniform(0.85, 1.15)
    colon = np.array(co["points"], dtype=float)
    for i, sag in enumerate(co["sag"]):
        if sag:
            colon[i, 2] -= rng.uniform(0, sag)
    colon[:, 3] *= cr
    colon[:, :3] += rng.normal(0, 3, (len(colon), 3))
    pts = _catmull_rom(colon, co["step"])
    s = np.concatenate([[0], np.cumsum(np.linalg.norm(np.diff(pts[:, :3], axis=0), axis=1))])
    pts[:, 3] *= 1.0 + 0.13 * np.sin(2 * np.pi * s / rng.uniform(22, 30))  # haustra
    tubes.append(_Tube(_Chain(pts[:, [2, 1, 0]], pts[:, 3]), co["wall"], co["content"], rng.uniform(0.15, 0.6)))

    facts = {"stomach": filling, "duodenum": "collapsed" if d_rad < 1.0 else d_content, "bowel_thickening": None}
    if rng.random() < 0.25:  # a thickened segment: stomach, duodenum, colon or small bowel
        where = ("stomach", "duodenum", "colon", "small_bowel")[rng.choice(4, p=[0.2, 0.15, 0.3, 0.35])]
        u = rng.random()  # where along the tube (small bowel: the first loop)
        wall_mm = float(rng.uniform(6.0, 15.0))
        facts["bowel_thickening"] = {"segment": where, "wall_mm": round(wall_mm, 1), "at": round(float(u), 3)}
        for name, tube in zip(("stomach", "duodenum", "colon"), tubes):
            if name == where:
                centre = tube.chain.p[int(u * (len(tube.chain.p) - 1))]
                tube.thick = (centre, float(rng.uniform(20.0, 50.0)), max(wall_mm - tube.wall, 1.0))
    return tubes, facts


def _small_bowel(rng, zlo: float, thickening: dict | None) -> list[_Tube]:
    """Small bowel loops filling the lower abdomen (random walks) above ``zlo``, each with its own content.

    Draws one seed from ``rng`` whatever the scanned range, then the walks from their own generator.
    """
    rng_b = np.random.default_rng(rng.integers(2**32))
    tubes = []
    if zlo < -136.0:  # the walks start below -135 mm
        n_chains = int(np.clip((-130.0 - zlo) / 14.0, 2, 12))
        for _ in range(n_chains):
            pos = np.array([rng_b.uniform(max(zlo, -300), -135), rng_b.uniform(-70, 5), rng_b.uniform(-60, 75)])
            direc = rng_b.normal(0, 1, 3)
            pts = [pos.copy()]
            for _ in range(rng_b.integers(18, 34)):
                direc = direc / np.linalg.norm(direc) + rng_b.normal(0, 0.55, 3)
                direc /= np.linalg.norm(direc)
                pos = pos + 8.0 * direc
                lo, hi = np.array([-320.0, -78.0, -78.0]), np.array([-120.0 - 30.0 * (pos[2] < 0), 14.0, 85.0])
                bounce = (pos < lo) | (pos > hi)
                direc[bounce] *= -1
                pos = np.clip(pos, lo, hi)
                pts.append(pos.copy())
            content, gas, f_rad, f_wall = _loop_content(rng_b)
            r = rng_b.uniform(9.5, 13.0) * f_rad
            tubes.append(_Tube(_Chain(np.array(pts), np.full(len(pts), r)), 2.0 * f_wall, content, gas))
    if tubes and thickening is not None and thickening["segment"] == "small_bowel":
        first = tubes[0]
        centre = first.chain.p[int(thickening["at"] * (len(first.chain.p) - 1))]
        first.thick = (centre, float(rng_b.uniform(20.0, 50.0)), max(thickening["wall_mm"] - first.wall, 1.0))
    return tubes


def _paint_tube(c: _Canvas, tube: _Tube, fields, hu) -> None:
    """A bowel segment: wall (folds, thickening), content (fluid, food, stool, contrast) and a gas-fluid level."""
    box = c.box(tube.chain.lo - c.w - 1, tube.chain.hi + c.w + 1)
    if box is None:
        return
    tex, fine = fields["texture"], fields["fine"]
    z, y, x = c.sub(box)
    d, axis_y, radius = c.sdf(lambda z, y, x: tube.chain.sdf_full(z, y, x, 4.0), box, _TUBE_CELL)
    c.paint(box, d, hu["bowel_wall"], "bowel_wall")
    lumen = d + tube.wall
    if tube.rugae > 0:  # mucosal folds: ridges where a smooth field crosses zero, standing into the lumen
        lumen = lumen + tube.rugae * np.clip(1.0 - 3.0 * np.abs(c.sdf(fine, box)), 0.0, 1.0)
    if tube.thick is not None:
        (pz, py, px), half, extra = tube.thick
        dist = np.sqrt((z[:, None, None] - pz) ** 2 + (y[None, :, None] - py) ** 2 + (x[None, None, :] - px) ** 2)
        lumen = lumen + extra * _smoothstep((half - dist) / 10.0).astype(np.float32)
    if tube.content == "stool":
        f, t = c.sdf(lambda z, y, x: (fine(z, y, x), tex(z, y, x)), box)
        bubbles = np.clip((f - 0.6) / 0.5, 0.0, 1.0)
        content = hu["stool"] + 25.0 * t
        content = content + bubbles * (_GAS_HU - content)
    elif tube.content == "food":
        content = hu["bowel_fluid"] + 12.0 + 15.0 * c.sdf(tex, box)
    elif tube.content == "contrast":
        content = np.float32(hu["oral_contrast"])
    else:
        content = np.float32(hu["bowel_fluid"])
    c.paint(box, lumen, content, "bowel_content")
    if tube.gas > 0:
        level = axis_y - radius + 2.0 * radius * tube.gas
        gas = np.maximum(lumen, y[None, :, None] - level)
        c.paint(box, gas, _GAS_HU, "gas")
