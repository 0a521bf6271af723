"""Stub networks with exact outputs and run folders made of them, for inference tests."""

from __future__ import annotations

from pathlib import Path

import keras
import numpy as np

from liverlib import config

SIZE = 96  # the stubs' input: SIZE x SIZE network slices


def stub(threshold: float | None = None, constant: float | None = None, gain: float = 60.0) -> keras.Model:
    """A 'network' returning sigmoid(gain * (x - threshold)), or a constant probability."""
    model = keras.Sequential([keras.Input((SIZE, SIZE, 1)), keras.layers.Conv2D(1, 1, activation="sigmoid")])
    if constant is not None:
        weights = [np.zeros((1, 1, 1, 1), np.float32), np.array([np.log(constant / (1 - constant))], np.float32)]
    else:
        weights = [np.full((1, 1, 1, 1), gain, np.float32), np.array([-gain * threshold], np.float32)]
    model.set_weights(weights)
    return model


def liver_stub() -> keras.Model:
    return stub(threshold=0.25)  # liver and lesion (x >= 0.5), not air


def lesion_stub() -> keras.Model:
    return stub(threshold=0.7)  # lesion only (x = 0.875)


def make_run(root: Path, folds: dict[int, tuple[keras.Model, keras.Model]], cfg: dict) -> Path:
    """A run folder with config.yaml and models/fold-K/{liver,lesion}.keras."""
    config.write_config(cfg, root / "config.yaml")
    for k, (liver, lesion) in folds.items():
        folder = root / "models" / f"fold-{k}"
        folder.mkdir(parents=True)
        liver.save(folder / "liver.keras")
        lesion.save(folder / "lesion.keras")
    return root
