"""liverlib.reporting.figures (notebooks 02 and 03): what the figures show, how many panels, reproducible PNGs."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from support import REAL_CT, REAL_MASK  # noqa: E402

from liverlib import config  # noqa: E402
from liverlib import transforms as preprocess  # noqa: E402
from liverlib.data import CaseFiles, load_case  # noqa: E402
from liverlib.reporting import figures  # noqa: E402

PREPROCESS = config.resolve("smoke")["preprocess"]
AUGMENT = config.resolve("smoke")["augment"]


@pytest.fixture(scope="module")
def real_case():
    return load_case(CaseFiles(0, REAL_CT, REAL_MASK))


@pytest.fixture(scope="module")
def cached(real_case):
    """The slice-cache content of the real CT (what training sees)."""
    return preprocess.preprocess_case(real_case, **PREPROCESS)


@pytest.fixture(autouse=True)
def close_figures():
    yield
    plt.close("all")


def test_preprocessing_steps_are_the_network_inputs(real_case, cached):
    steps = figures.preprocessing_steps(real_case, PREPROCESS, plane=12)
    assert steps.plane == 12 and steps.raw.shape == (101, 122)
    assert steps.windowed.min() >= -100 and steps.windowed.max() <= 300
    size = PREPROCESS["size"]
    assert steps.resized.shape == steps.equalized.shape == steps.roi_equalized.shape == (size, size)
    # Exactly the slices of the cache: the figure shows what the networks are trained on.
    row1 = list(cached["stage1_z"]).index(12)
    np.testing.assert_array_equal(steps.equalized, cached["stage1_x"][row1])
    np.testing.assert_array_equal(steps.label_resized > 0, cached["stage1_y"][row1] > 0)
    row2 = list(cached["stage2_z"]).index(12)
    np.testing.assert_array_equal(steps.roi_equalized, cached["stage2_x"][row2])
    assert steps.roi == preprocess.Roi.from_array(cached["roi"])
    # Default plane: the one with the most liver (this CT has no lesion).
    areas = (real_case.label > 0).sum(axis=(1, 2))
    assert figures.preprocessing_steps(real_case, PREPROCESS).plane == int(areas.argmax())
    with pytest.raises(ValueError, match="plane"):
        figures.preprocessing_steps(real_case, PREPROCESS, plane=30)


def test_preprocessing_figures(real_case):
    steps = figures.preprocessing_steps(real_case, PREPROCESS)
    assert len(figures.fig2_preprocessing(steps).axes) == 9  # 2 x 4 panels and the HU colorbar
    # Two images, two histograms with their cdf twins, the mapping h(x).
    assert len(figures.fig4_equalization(steps, stage=1).axes) == 7
    assert len(figures.fig4_equalization(steps, stage=2).axes) == 7
    with pytest.raises(ValueError, match="stage"):
        figures.fig4_equalization(steps, stage=3)


def test_augmentation_figure(cached):
    liver = (cached["stage1_x"], cached["stage1_y"])
    lesion = (cached["stage2_x"], cached["stage2_y"])
    fig = figures.fig3_augmentation(liver, lesion, n=5, seed=3, **AUGMENT)
    assert len(fig.axes) == 2 * 6
    # The original panel is the stage-1 slice with the most liver, unchanged.
    chosen = cached["stage1_y"].reshape(len(cached["stage1_y"]), -1).sum(axis=1).argmax()
    np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), cached["stage1_x"][chosen])
    # The augmented panels differ from it; a seed gives the same panels again.
    assert not np.array_equal(fig.axes[1].images[0].get_array(), cached["stage1_x"][chosen])
    again = figures.fig3_augmentation(liver, lesion, n=5, seed=3, **AUGMENT)
    np.testing.assert_array_equal(again.axes[4].images[0].get_array(), fig.axes[4].images[0].get_array())
    # An empty stack (no liver: no stage-2 slice) or None leaves its row out; one 2-D slice works.
    empty = (cached["stage2_x"][:0], cached["stage2_y"][:0])
    assert len(figures.fig3_augmentation(liver, empty, n=3).axes) == 4
    assert len(figures.fig3_augmentation((liver[0][5], liver[1][5]), None, n=2).axes) == 3
    with pytest.raises(ValueError, match="same"):
        figures.fig3_augmentation((liver[0][0], liver[1]), None)


def test_unet_diagram_and_pooling_examples():
    fig = figures.unet_diagram(base_filters=4, depth=4, size=96)
    assert len(fig.axes) == 1
    texts = " ".join(t.get_text() for t in fig.axes[0].texts)
    assert "64 ch, 6×6" in texts and "mixed pool 2×2" in texts  # bottom level: 4 * 2**4 filters at 96 / 16
    assert "max pool 2×2" in " ".join(t.get_text() for t in figures.unet_diagram(pooling="max", depth=3).axes[0].texts)
    with pytest.raises(ValueError, match="divisible"):
        figures.unet_diagram(depth=4, size=100)
    fig = figures.pooling_toy_examples()
    assert len(fig.axes) == 2
    shown = {t.get_text() for t in fig.axes[0].texts}
    assert {"9", "3", "6"} <= shown  # (a): max 9 everywhere, average 3 in the weak window, expectation 6


def test_first_layer_features_and_pooling_comparison(cached, tmp_path):
    image = cached["stage1_x"][10]
    features, names, source = figures.first_layer_features(image, tmp_path / "missing.keras")
    assert features.shape == (*image.shape, 4) and features.min() >= 0 and len(names) == 4 and "Sobel" in source
    # A vertical step from dark to bright responds only to the "dark above bright" edge filter.
    step = np.zeros((8, 8), np.uint8)
    step[4:] = 255
    edges, edge_names, _ = figures.first_layer_features(step)
    assert edges[..., edge_names.index("edge ↑ (dark above bright)")].max() == pytest.approx(4.0)
    assert edges[..., edge_names.index("edge ↓ (bright above dark)")].max() == 0.0

    fig = figures.pooling_comparison(image, features, names, source, seed=1)
    assert len(fig.axes) == 1 + 4 * 5
    draws = [ax.get_title() for ax in fig.axes if ax.get_title().startswith("mixed, training")]
    assert len(draws) == 4 and all(("max" in d) != ("average" in d) for d in draws)
    # Each row's max, average and inference panels are the pooled maps.
    rows, columns = image.shape
    pooled = features.reshape(rows // 2, 2, columns // 2, 2, 4)
    np.testing.assert_allclose(fig.axes[2].images[0].get_array(), pooled.max(axis=(1, 3))[..., 0], rtol=1e-6)
    np.testing.assert_allclose(fig.axes[3].images[0].get_array(), pooled.mean(axis=(1, 3))[..., 0], rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="channels"):
        figures.pooling_comparison(image, features[..., 0])


def test_first_layer_features_of_a_saved_model(tmp_path):
    from liverlib.networks import mixed_unet

    path = tmp_path / "liver.keras"
    mixed_unet(input_shape=(32, 32, 1), base_filters=6, depth=2).save(path)
    image = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint8)
    features, names, source = figures.first_layer_features(image, path, channels=3)
    assert features.shape == (32, 32, 3) and features.min() >= 0 and "liver.keras" in source
    stds = features.std(axis=(0, 1))
    assert np.all(stds[:-1] >= stds[1:])  # the most active maps first


def test_save_figure_is_reproducible(tmp_path):
    fig = figures.pooling_toy_examples()
    first = figures.save_figure(fig, tmp_path / "a", "toy").read_bytes()
    second = figures.save_figure(fig, tmp_path / "b", "toy").read_bytes()
    assert first[:8] == b"\x89PNG\r\n\x1a\n" and first == second
    rebuilt = figures.save_figure(figures.pooling_toy_examples(), tmp_path / "c", "toy").read_bytes()
    assert rebuilt == first
    assert sorted(p.name for p in (tmp_path / "a").iterdir()) == ["toy.png"]
