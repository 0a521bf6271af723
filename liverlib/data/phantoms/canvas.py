"""The painting canvas of the phantoms: an HU image and a tissue map, composited with partial volume."""

from __future__ import annotations

import numpy as np

from liverlib.data.phantoms.shapes import _index_box, _on_grid, _Shape
from liverlib.data.phantoms.tissues import TISSUES


class _Canvas:
    """Float HU image and tissue map painted structure by structure (painter's algorithm)."""

    def __init__(self, z, y, x, w, air, cell: float = 1.6):
        self.cell = cell  # SDFs are evaluated no finer than this (mm) and upsampled
        self.z = np.asarray(z, np.float64)
        self.y = np.asarray(y, np.float64)
        self.x = np.asarray(x, np.float64)
        self.w = np.float32(w)
        shape = (len(z), len(y), len(x))
        self.img = np.full(shape, air, np.float32)
        self.tis = np.zeros(shape, np.uint8)

    def box(self, lo, hi):
        return _index_box(self.z, self.y, self.x, lo, hi)

    def sub(self, box):
        return self.z[box[0]], self.y[box[1]], self.x[box[2]]

    def alpha(self, d):
        a = np.multiply(d, np.float32(-1.0) / self.w, dtype=np.float32)
        a += np.float32(0.5)
        return np.clip(a, 0.0, 1.0, out=a)

    def paint(self, box, d, value, tissue: str):
        """Composite a structure with SDF ``d`` (on ``box``) over what is there.

        ``d`` and ``value`` may be anything that broadcasts to the box.
        """
        a = self.alpha(d)
        view = self.img[box]
        delta = np.subtract(np.float32(value) if np.ndim(value) == 0 else value, view, dtype=np.float32)
        delta *= a
        view += delta
        np.copyto(self.tis[box], np.uint8(TISSUES[tissue]), where=a >= 0.5)

    def sdf(self, fn, box, cell: float | None = None):
        """``fn(z, y, x)`` on the box, evaluated on a grid no finer than ``cell`` mm and upsampled.

        Linear interpolation of an SDF errs by about cell**2 / (8 R) for a surface of curvature
        radius R: 3 mm suits organs (R >= 10 mm, error ~0.1 mm), thin vessels need the default.
        """
        return _on_grid(fn, *self.sub(box), self.cell if cell is None else cell)

    def draw(self, shape: _Shape, value, tissue: str, grow: float = 0.0):
        box = self.box(shape.lo - self.w - grow - 1, shape.hi + self.w + grow + 1)
        if box is None:
            return None
        z, y, x = self.sub(box)
        d = self.sdf(shape.sdf, box) - grow
        self.paint(box, d, value(z, y, x, d) if callable(value) else value, tissue)
        return box, d
