"""An interactive slice viewer for notebooks, with a static fallback for headless runs."""

from __future__ import annotations

import os

import numpy as np

from liverlib.reporting import figures


def interactive_available() -> bool:
    """True inside a Jupyter kernel, unless the run is headless.

    ``liverlib run`` sets ``LIVERLIB_HEADLESS=1`` for the papermill kernels,
    where nobody could move a slider.
    """
    if os.environ.get("LIVERLIB_HEADLESS"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and shell.__class__.__name__ == "ZMQInteractiveShell"


def slice_viewer(image: np.ndarray, label: np.ndarray | None = None, title: str = "", interactive: bool | None = None):
    """Browse axial planes with a slider over z, CT plus label outlines.

    Headless (papermill, scripts, or ``interactive=False``) it returns a static
    montage figure instead, so the executed notebook still shows the volume.

    Returns
    -------
    ipywidgets.Widget or matplotlib.figure.Figure
    """
    if interactive is None:
        interactive = interactive_available()
    if not interactive:
        fig = figures.montage(image, label)
        if title:
            fig.suptitle(title, fontsize=10, y=1.02)
        return fig

    import ipywidgets as widgets
    import matplotlib.pyplot as plt

    output = widgets.Output()
    start = figures.representative_slice(label) if label is not None else image.shape[0] // 2
    slider = widgets.IntSlider(value=start, min=0, max=image.shape[0] - 1, description="z", continuous_update=False)

    def draw(z: int) -> None:
        with output:
            output.clear_output(wait=True)
            fig, ax = plt.subplots(figsize=(5, 5))
            figures.show_ct(ax, image[z], title=f"{title} z = {z}")
            if label is not None:
                figures.outline(ax, label[z])
            plt.show()

    slider.observe(lambda change: draw(change["new"]), names="value")
    draw(start)
    return widgets.VBox([slider, output])
