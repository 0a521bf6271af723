"""Tests of liverlib.networks.unet: mixed pooling, the Mixed-UNet, loss, metric, saving, backends."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import keras
import numpy as np
import pytest

from liverlib.cpu import has_bf16_units
from liverlib.networks import (
    MixedPooling2D,
    bce_batch_dice_loss,
    bce_dice_loss,
    compile_model,
    dice_coefficient,
    load_model,
    mixed_unet,
)

REPO_ROOT = Path(__file__).resolve().parents[1]


def window_pools(x: np.ndarray, size: int = 2) -> tuple[np.ndarray, np.ndarray]:
    """Reference max and average pooling of a (N, rows, columns, C) array, "valid" padding."""
    n, rows, columns, channels = x.shape
    rows, columns = rows // size, columns // size
    windows = x[:, : rows * size, : columns * size].reshape(n, rows, size, columns, size, channels)
    return windows.max(axis=(2, 4)), windows.mean(axis=(2, 4))


@pytest.fixture
def distinct_input() -> np.ndarray:
    # Strictly increasing values: inside every 2x2 window max > mean.
    return np.random.default_rng(0).permutation(2 * 8 * 8 * 3).reshape(2, 8, 8, 3).astype("float32")


def as_numpy(x) -> np.ndarray:
    if isinstance(x, keras.Variable):
        x = x.value  # the backend tensor: numpy() of a Variable warns under numpy 2
    return np.asarray(keras.ops.convert_to_numpy(x))


# -- MixedPooling2D in training mode ---------------------------------------------


@pytest.mark.parametrize("granularity", ["region", "channel", "call"])
def test_training_output_is_max_or_average_of_each_window(distinct_input, granularity):
    pooled_max, pooled_avg = window_pools(distinct_input)
    assert np.all(pooled_max > pooled_avg)
    layer = MixedPooling2D(granularity=granularity, seed=1)
    chose_max = []
    for _ in range(8):
        out = as_numpy(layer(distinct_input, training=True))
        is_max = np.isclose(out, pooled_max)
        is_avg = np.isclose(out, pooled_avg)
        assert out.shape == (2, 4, 4, 3)
        assert np.all(is_max ^ is_avg), "every value is exactly one of max or average"
        if granularity == "channel":
            # one draw per (sample, channel): a whole feature map is one type
            per_map = is_max.reshape(2, 16, 3)
            assert np.all(per_map.all(axis=1) | (~per_map).all(axis=1))
        if granularity == "call":
            assert is_max.all() or is_avg.all()
        chose_max.append(is_max)
    chose_max = np.stack(chose_max)
    assert chose_max.any() and not chose_max.all(), "both kinds occur"
    if granularity == "region":
        # 768 independent fair draws: the share of max is near 0.5
        assert 0.4 < chose_max.mean() < 0.6


def test_p_max_one_and_zero_give_pure_poolings(distinct_input):
    pooled_max, pooled_avg = window_pools(distinct_input)
    np.testing.assert_allclose(as_numpy(MixedPooling2D(p_max=1.0)(distinct_input, training=True)), pooled_max)
    np.testing.assert_allclose(as_numpy(MixedPooling2D(p_max=0.0)(distinct_input, training=True)), pooled_avg)


def test_odd_spatial_size_uses_valid_padding():
    x = np.random.default_rng(1).normal(size=(1, 7, 5, 2)).astype("float32")
    pooled_max, pooled_avg = window_pools(x)
    assert pooled_max.shape == (1, 3, 2, 2)
    layer = MixedPooling2D(inference="expectation")
    out = as_numpy(layer(x, training=True))
    assert out.shape == (1, 3, 2, 2)
    assert np.all(np.isclose(out, pooled_max) | np.isclose(out, pooled_avg))
    np.testing.assert_allclose(as_numpy(layer(x)), 0.5 * pooled_max + 0.5 * pooled_avg, rtol=1e-5, atol=1e-6)
    assert layer.compute_output_shape((None, 7, 5, 2)) == (None, 3, 2, 2)


# -- MixedPooling2D in inference mode --------------------------------------------


@pytest.mark.parametrize(
    "inference, p_max, expected",
    [
        ("expectation", 0.5, lambda mx, av: 0.5 * mx + 0.5 * av),
        ("expectation", 0.3, lambda mx, av: 0.3 * mx + 0.7 * av),
        ("max", 0.5, lambda mx, av: mx),
        ("avg", 0.5, lambda mx, av: av),
        # never trained: no majority, so the tie rule gives the expectation
        ("majority", 0.5, lambda mx, av: 0.5 * mx + 0.5 * av),
    ],
)
def test_inference_is_deterministic_and_follows_the_rule(distinct_input, inference, p_max, expected):
    layer = MixedPooling2D(p_max=p_max, inference=inference)
    first = as_numpy(layer(distinct_input, training=False))
    second = as_numpy(layer(distinct_input))
    np.testing.assert_array_equal(first, second)
    np.testing.assert_allclose(first, expected(*window_pools(distinct_input)), rtol=1e-5, atol=1e-6)


def test_majority_counts_choices_and_picks_the_more_frequent_type(distinct_input):
    pooled_max, pooled_avg = window_pools(distinct_input)
    always_max = MixedPooling2D(p_max=1.0, inference="majority")
    for _ in range(3):
        always_max(distinct_input, training=True)
    np.testing.assert_array_equal(as_numpy(always_max.max_votes), [3.0, 3.0, 3.0])
    assert float(as_numpy(always_max.training_calls)) == 3.0
    always_max(distinct_input)  # inference does not count
    assert float(as_numpy(always_max.training_calls)) == 3.0

    for p_max, expected in ((0.8, pooled_max), (0.2, pooled_avg)):
        layer = MixedPooling2D(p_max=p_max, granularity="region", inference="majority", seed=3)
        for _ in range(20):
            layer(distinct_input, training=True)
        share = layer.max_share()
        assert share.shape == (3,)
        assert np.all(np.abs(share - p_max) < 0.1)
        np.testing.assert_allclose(as_numpy(layer(distinct_input)), expected, rtol=1e-5, atol=1e-6)


def test_majority_is_per_channel(distinct_input):
    pooled_max, pooled_avg = window_pools(distinct_input)
    layer = MixedPooling2D(inference="majority")
    layer.build(distinct_input.shape)
    layer.training_calls.assign(10.0)
    layer.max_votes.assign(np.array([9.0, 1.0, 5.0], dtype="float32"))
    out = as_numpy(layer(distinct_input))
    np.testing.assert_allclose(out[..., 0], pooled_max[..., 0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[..., 1], pooled_avg[..., 1], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(out[..., 2], 0.5 * (pooled_max + pooled_avg)[..., 2], rtol=1e-5, atol=1e-6)


def test_channels_first_matches_channels_last(distinct_input):
    layer = MixedPooling2D(inference="majority", data_format="channels_first")
    x = np.transpose(distinct_input, (0, 3, 1, 2))
    layer.build(x.shape)
    layer.training_calls.assign(2.0)
    layer.max_votes.assign(np.array([2.0, 0.0, 1.0], dtype="float32"))
    pooled_max, pooled_avg = window_pools(distinct_input)
    expected = np.stack([pooled_max[..., 0], pooled_avg[..., 1], 0.5 * (pooled_max + pooled_avg)[..., 2]], axis=1)
    np.testing.assert_allclose(as_numpy(layer(x)), expected, rtol=1e-5, atol=1e-6)
    out = as_numpy(layer(x, training=True))
    assert out.shape == (2, 3, 4, 4)


def test_gradients_flow_through_mixed_pooling():
    keras.utils.set_random_seed(0)
    inputs = keras.Input((8, 8, 1))
    x = keras.layers.Conv2D(2, 3, padding="same", name="conv")(inputs)
    x = MixedPooling2D(name="pool")(x)
    outputs = keras.layers.Dense(1)(keras.layers.Flatten()(x))
    model = keras.Model(inputs, outputs)
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
    before = as_numpy(model.get_layer("conv").kernel).copy()
    rng = np.random.default_rng(0)
    model.train_on_batch(rng.normal(size=(4, 8, 8, 1)).astype("float32"), np.ones((4, 1), "float32"))
    after = as_numpy(model.get_layer("conv").kernel)
    assert np.abs(after - before).max() > 1e-6
    assert float(as_numpy(model.get_layer("pool").training_calls)) == 1.0


def test_config_round_trip_and_bad_arguments():
    layer = MixedPooling2D(p_max=0.3, granularity="region", inference="majority", seed=5, name="mp")
    clone = MixedPooling2D.from_config(layer.get_config())
    for key in ("pool_size", "p_max", "granularity", "inference", "data_format", "seed", "name"):
        assert getattr(clone, key) == getattr(layer, key)
    with pytest.raises(ValueError, match="granularity"):
        MixedPooling2D(granularity="pixel")
    with pytest.raises(ValueError, match="'expectation'"):
        MixedPooling2D(inference="mean")
    with pytest.raises(ValueError, match="p_max"):
        MixedPooling2D(p_max=1.5)


def test_pooling_history_survives_keras_file(tmp_path, distinct_input):
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, MixedPooling2D(p_max=0.9, granularity="region", inference="majority", name="pool")(inputs))
    for _ in range(5):
        model(distinct_input, training=True)
    path = tmp_path / "pool.keras"
    model.save(path)
    loaded = keras.saving.load_model(path)  # no custom_objects: the layer is registered
    assert isinstance(loaded.get_layer("pool"), MixedPooling2D)
    assert loaded.get_layer("pool").inference == "majority"
    np.testing.assert_array_equal(
        as_numpy(loaded.get_layer("pool").max_votes), as_numpy(model.get_layer("pool").max_votes)
    )
    assert float(as_numpy(loaded.get_layer("pool").training_calls)) == 5.0
    np.testing.assert_array_equal(as_numpy(loaded(distinct_input)), as_numpy(model(distinct_input)))
    np.testing.assert_allclose(as_numpy(loaded(distinct_input)), window_pools(distinct_input)[0], rtol=1e-5, atol=1e-6)


# -- mixed_unet ------------------------------------------------------------------


def test_mixed_unet_shape_range_and_sigmoid():
    model = mixed_unet(base_filters=2)
    x = np.random.default_rng(0).random((2, 96, 96, 1), dtype=np.float32)
    y = as_numpy(model(x, training=False))
    assert model.output_shape == (None, 96, 96, 1)
    assert y.shape == (2, 96, 96, 1)
    assert y.min() >= 0.0 and y.max() <= 1.0
    last = model.layers[-1]
    assert isinstance(last, keras.layers.Conv2D)
    assert last.kernel_size == (1, 1) and last.filters == 1
    assert last.activation is keras.activations.sigmoid


def test_mixed_unet_has_nine_levels():
    model = mixed_unet(base_filters=2, depth=4)
    convs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (3, 3)]
    assert len(convs) == 2 * 9  # two 3x3 convolutions per level
    assert [layer.filters for layer in convs] == [2, 2, 4, 4, 8, 8, 16, 16, 32, 32, 16, 16, 8, 8, 4, 4, 2, 2]
    assert all(layer.activation is keras.activations.relu for layer in convs)
    pools = [layer for layer in model.layers if isinstance(layer, MixedPooling2D)]
    assert len(pools) == 4 and all(layer.inference == "expectation" for layer in pools)
    ups = [layer for layer in model.layers if isinstance(layer, keras.layers.UpSampling2D)]
    assert len(ups) == 4
    upconvs = [layer for layer in model.layers if isinstance(layer, keras.layers.Conv2D) and layer.kernel_size == (2, 2)]
    assert len(upconvs) == 4
    assert len([layer for layer in model.layers if isinstance(layer, keras.layers.Concatenate)]) == 4
    dropouts = [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]
    assert [layer.name for layer in dropouts] == ["encoder4_dropout", "bottom_dropout"]
    assert all(layer.rate == 0.5 for layer in dropouts)


def test_paper_width_parameter_count():
    # The classic Keras U-Net (64...1024) has 31,031,685 parameters, including
    # a 3x3 conv to 2 channels (1,154) and a 1x1 conv from 2 channels (3);
    # ours goes 64 -> 1 directly (65): 31,031,685 - 1,154 - 3 + 65.
    model = mixed_unet(base_filters=64)
    trainable = sum(int(np.prod(w.shape)) for w in model.trainable_weights)
    assert trainable == 31_030_593


@pytest.mark.parametrize("pooling, kind", [("max", keras.layers.MaxPooling2D), ("avg", keras.layers.AveragePooling2D)])
def test_pooling_ablations(pooling, kind):
    model = mixed_unet(input_shape=(32, 32, 1), base_filters=2, depth=3, pooling=pooling)
    assert len([layer for layer in model.layers if isinstance(layer, kind)]) == 3
    assert not [layer for layer in model.layers if isinstance(layer, MixedPooling2D)]
    assert model.name == f"{pooling}_unet"
    assert model.output_shape == (None, 32, 32, 1)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"pooling": "median"}, "'mixed', 'max', 'avg'"),
        ({"input_shape": (100, 100, 1)}, "multiples of 2\\*\\*depth = 16"),
        ({"input_shape": (96, 96)}, "rows, columns, channels"),
        ({"mixed_inference": "mean"}, "mixed_inference"),
        ({"depth": 0}, "depth"),
        ({"dropout": 1.0}, "dropout"),
        ({"base_filters": 0}, "base_filters"),
        ({"normalization": "layer"}, "normalization"),
    ],
)
def test_mixed_unet_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        mixed_unet(**{"base_filters": 2, **kwargs})


def test_output_prior_sets_the_initial_foreground_probability():
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    keras.utils.set_random_seed(3)
    plain = mixed_unet(input_shape=(32, 32, 1), base_filters=2, depth=2)
    keras.utils.set_random_seed(3)
    rare = mixed_unet(input_shape=(32, 32, 1), base_filters=2, depth=2, output_prior=0.01)
    np.testing.assert_allclose(as_numpy(rare.get_layer("output").bias), [np.log(0.01 / 0.99)], rtol=1e-6)
    assert not as_numpy(plain.get_layer("output").bias).any()  # 0.5: Keras' zero bias, the paper
    # same weights otherwise: the whole difference is the shift of the logits
    logit = lambda p: np.log(p / (1 - p))  # noqa: E731
    shift = logit(as_numpy(rare.predict(x, verbose=0)).astype(np.float64)) - logit(as_numpy(plain.predict(x, verbose=0)).astype(np.float64))
    np.testing.assert_allclose(shift, np.log(0.01 / 0.99), atol=1e-3)
    for bad in (0.0, 1.0):
        with pytest.raises(ValueError, match="output_prior"):
            mixed_unet(input_shape=(32, 32, 1), base_filters=2, depth=2, output_prior=bad)


def test_no_dropout_layers_when_dropout_is_zero():
    model = mixed_unet(input_shape=(16, 16, 1), base_filters=2, depth=2, dropout=0.0)
    assert not [layer for layer in model.layers if isinstance(layer, keras.layers.Dropout)]


def test_instance_normalization_normalizes_each_feature_map_of_each_image():
    model = mixed_unet(input_shape=(16, 16, 1), base_filters=4, depth=2, normalization="instance")
    norms = [layer for layer in model.layers if layer.name.endswith("_norm")]
    assert len(norms) == 2 * 5 + 2  # two per level and one per up-convolution
    assert not any(layer.use_bias for layer in model.layers if isinstance(layer, keras.layers.Conv2D)
                   and layer.name != "output")  # fmt: skip
    # The first normalization's output: every (image, channel) map has mean 0 and std 1,
    # whatever the brightness of the image (what makes it independent of batch statistics).
    probe = keras.Model(model.input, model.get_layer("encoder1_conv1_norm").output)
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.random((1, 16, 16, 1)), 100 * rng.random((1, 16, 16, 1))]).astype("float32")
    out = as_numpy(probe.predict(x, verbose=0))
    np.testing.assert_allclose(out.mean(axis=(1, 2)), 0, atol=1e-4)
    np.testing.assert_allclose(out.std(axis=(1, 2)), 1, atol=1e-2)


def test_bfloat16_is_refused_under_tensorflow_on_a_cpu_without_bfloat16_units(monkeypatch):
    from liverlib.networks import inference_copy, io

    if keras.backend.backend() != "tensorflow":
        pytest.skip("the refusal is TensorFlow's (oneDNN has no bfloat16 convolution without the units)")
    monkeypatch.setattr(io, "has_bf16_units", lambda: False)
    model = mixed_unet(input_shape=(32, 32, 1), base_filters=4, depth=2)
    with pytest.raises(ValueError, match="bfloat16 units .* use float32"):
        inference_copy(model, "bfloat16")
    assert inference_copy(model, "float32") is model


@pytest.mark.skipif(keras.backend.backend() == "tensorflow" and not has_bf16_units(), reason="no bfloat16 units")
def test_bfloat16_inference_copy_keeps_weights_and_float32_output():
    from liverlib.networks import inference_copy

    keras.utils.set_random_seed(3)
    model = mixed_unet(input_shape=(32, 32, 1), base_filters=4, depth=2, normalization="instance")
    assert inference_copy(model, "float32") is model
    fast = inference_copy(model, "bfloat16")
    assert fast is not model and model.layers[1].dtype_policy.name == "float32"  # the original is unchanged
    policies = {layer.name: layer.dtype_policy.name for layer in fast.layers[1:]}
    assert policies.pop("output") == "float32"
    assert set(policies.values()) == {"mixed_bfloat16"}
    for a, b in zip(model.get_weights(), fast.get_weights()):
        np.testing.assert_array_equal(a, b)
    x = np.random.default_rng(0).random((2, 32, 32, 1), dtype=np.float32)
    exact, rounded = as_numpy(model.predict(x, verbose=0)), as_numpy(fast.predict(x, verbose=0))
    assert rounded.dtype == np.float32
    # bfloat16 keeps 8 bits of mantissa: close, but not equal
    assert 0 < np.abs(exact - rounded).max() < 0.1
    with pytest.raises(ValueError, match="precision"):
        inference_copy(model, "float16")


@pytest.mark.parametrize("normalization", ["none", "instance", "batch"])
def test_saved_model_gives_identical_predictions(tmp_path, normalization):
    keras.utils.set_random_seed(1)
    model = compile_model(
        mixed_unet(input_shape=(32, 32, 1), base_filters=2, depth=2, normalization=normalization),
        loss="bce_batch_dice", learning_rate=1e-3,
    )
    rng = np.random.default_rng(2)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    y = (x > 0.5).astype("float32")
    model.train_on_batch(x, y)
    path = tmp_path / "liver.keras"
    model.save(path)
    expected = as_numpy(model.predict(x, verbose=0))
    for loaded in (load_model(path), keras.saving.load_model(path)):
        np.testing.assert_array_equal(as_numpy(loaded.predict(x, verbose=0)), expected)
        np.testing.assert_allclose(
            loaded.evaluate(x, y, verbose=0, return_dict=True)["loss"],
            model.evaluate(x, y, verbose=0, return_dict=True)["loss"],
            rtol=1e-5,
        )


# -- loss, metric, compile ---------------------------------------------------------


def test_bce_dice_loss_known_values():
    y_true = np.ones((1, 2, 2, 1), "float32")
    y_pred = np.full((1, 2, 2, 1), 0.5, "float32")
    # BCE = ln 2; soft Dice = (2*2 + 1) / (4 + 2 + 1) = 5/7
    np.testing.assert_allclose(as_numpy(bce_dice_loss(y_true, y_pred)), [np.log(2) + 2 / 7], rtol=1e-5)
    perfect = np.zeros((2, 4, 4, 1), "float32")
    perfect[0, 1:3, 1:3] = 1.0
    assert as_numpy(bce_dice_loss(perfect, perfect)).max() < 1e-5


def test_bce_batch_dice_loss_pools_the_batch():
    # Sample 0: 2 lesion pixels, both predicted 1. Sample 1: no lesion, one of
    # its 4 pixels predicted 0.5. BCE is (about) 0 except there: ln 2 / 4.
    y_true = np.zeros((2, 2, 2, 1), "float32")
    y_true[0, 0, :2] = 1.0
    y_pred = y_true.copy()
    y_pred[1, 1, 1] = 0.5
    bce = np.log(2) / 4
    # batch Dice = (2*2 + 1) / (2 + 2.5 + 1) = 10/11, shared by both samples
    np.testing.assert_allclose(as_numpy(bce_batch_dice_loss(y_true, y_pred)), [1 / 11, bce + 1 / 11], rtol=1e-5)
    # per slice, the empty slice alone pays: 1 - (0 + 1) / (0.5 + 1) = 1/3
    np.testing.assert_allclose(as_numpy(bce_dice_loss(y_true, y_pred)), [0.0, bce + 1 / 3], rtol=1e-5, atol=1e-6)


def test_dice_coefficient_known_values():
    y_true = np.array([1, 1, 0, 0], "float32").reshape(1, 2, 2, 1)
    y_pred = np.array([0.9, 0.2, 0.7, 0.1], "float32").reshape(1, 2, 2, 1)
    np.testing.assert_allclose(as_numpy(dice_coefficient(y_true, y_pred)), [0.5], rtol=1e-5)
    empty = np.zeros((1, 2, 2, 1), "float32")
    np.testing.assert_allclose(as_numpy(dice_coefficient(empty, empty + 0.1)), [1.0])
    np.testing.assert_allclose(as_numpy(dice_coefficient(empty, empty + 0.9)), [0.0], atol=1e-6)


def test_compile_model_uses_adam_and_rejects_unknown_loss():
    model = compile_model(mixed_unet(input_shape=(16, 16, 1), base_filters=2, depth=2))
    assert isinstance(model.optimizer, keras.optimizers.Adam)
    np.testing.assert_allclose(float(as_numpy(model.optimizer.learning_rate)), 1e-5, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="'bce', 'bce_dice', 'bce_batch_dice'"):
        compile_model(model, loss="focal")


# -- other backends ----------------------------------------------------------------

BACKEND_SMOKE = textwrap.dedent(
    """
    import sys, tempfile, os
    import numpy as np
    import keras
    from liverlib.networks import mixed_unet, compile_model, load_model

    assert keras.backend.backend() == sys.argv[1], keras.backend.backend()
    keras.utils.set_random_seed(0)
    model = compile_model(mixed_unet(input_shape=(32, 32, 1), base_filters=2, depth=2),
                          loss="bce_dice", learning_rate=1e-2)
    rng = np.random.default_rng(0)
    x = rng.random((4, 32, 32, 1), dtype=np.float32)
    y = (x > 0.5).astype("float32")
    before = keras.ops.convert_to_numpy(model.get_layer("encoder1_conv1").kernel).copy()
    logs = model.train_on_batch(x, y, return_dict=True)
    after = keras.ops.convert_to_numpy(model.get_layer("encoder1_conv1").kernel)
    assert np.isfinite(logs["loss"]), logs
    assert np.abs(after - before).max() > 0, "weights before the mixed pooling did not change"
    calls = float(keras.ops.convert_to_numpy(model.get_layer("encoder1_pool").training_calls))
    assert calls == 1.0, calls
    p1 = model.predict(x, verbose=0)
    p2 = model.predict(x, verbose=0)
    assert p1.shape == (4, 32, 32, 1) and np.array_equal(p1, p2)
    assert 0.0 <= p1.min() and p1.max() <= 1.0
    with tempfile.TemporaryDirectory() as folder:
        path = os.path.join(folder, "m.keras")
        model.save(path)
        assert np.array_equal(load_model(path).predict(x, verbose=0), p1)
    print("backend smoke OK", sys.argv[1], logs)
    """
)


@pytest.mark.parametrize("backend", ["tensorflow", "jax", "torch"])
def test_one_training_step_under_backend(backend):
    """Build and train the model under each installed backend, in a fresh process."""
    if backend == keras.backend.backend():
        pytest.skip(f"{backend} is this process's backend; the other tests cover it")
    if importlib.util.find_spec(backend) is None:
        pytest.skip(f"{backend} is not installed")
    env = dict(os.environ, KERAS_BACKEND=backend)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO_ROOT), env.get("PYTHONPATH")]))
    result = subprocess.run(
        [sys.executable, "-c", BACKEND_SMOKE, backend],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    assert "backend smoke OK" in result.stdout


def _fit_recording(ema_momentum: float):
    """Fit a one-layer model 8 steps; return its kernel after every step and at the end."""
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(1, activation="sigmoid")])
    compile_model(model, loss="bce", learning_rate=0.1, ema_momentum=ema_momentum)
    x = np.random.default_rng(1).normal(size=(8, 4)).astype("float32")
    y = (x[:, :1] > 0).astype("float32")
    steps = []
    record = keras.callbacks.LambdaCallback(on_train_batch_end=lambda batch, logs: steps.append(
        keras.ops.convert_to_numpy(model.layers[0].kernel).copy()))
    model.fit(x, y, batch_size=2, epochs=2, shuffle=False, verbose=0, callbacks=[record])
    return steps, keras.ops.convert_to_numpy(model.layers[0].kernel)


def test_ema_momentum_ends_fit_with_the_moving_average_of_the_weights():
    steps, last = _fit_recording(0.0)
    np.testing.assert_array_equal(last, steps[-1])  # the paper: the last weights
    _, averaged = _fit_recording(0.8)  # the averaging does not change the trajectory itself
    expected = steps[0]
    for weights in steps[1:]:
        expected = 0.8 * expected + 0.2 * weights
    np.testing.assert_allclose(averaged, expected, atol=1e-6)
    assert np.abs(averaged - last).max() > 0.05
    with pytest.raises(ValueError, match="ema_momentum"):
        compile_model(keras.Sequential([keras.Input((4,)), keras.layers.Dense(1)]), ema_momentum=1.0)
