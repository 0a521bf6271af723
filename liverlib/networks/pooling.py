"""Mixed pooling (Yu et al. 2014): max or average pooling drawn at random in training, deterministic at inference.

Everything here is written with the Keras 3 API and ``keras.ops`` /
``keras.random`` only, so the same model trains under the TensorFlow, JAX and
PyTorch backends (``KERAS_BACKEND``).

Mixed pooling (Yu et al. 2014, "Mixed pooling for convolutional neural
networks", RSKT, LNCS 8818) replaces each deterministic pooling by a random
choice, made anew at every training forward pass, between max and average
pooling::

    y = lambda * max(region) + (1 - lambda) * mean(region),  lambda in {0, 1}

As we read Yu et al., lambda carries no region index (one draw is shared by a
whole feature map), and at test time each map uses the pooling type that its
training history (the recorded lambdas) chose more often. `MixedPooling2D` implements
that rule (``granularity="channel"``, ``inference="majority"``) and the
alternatives described in its docstring.
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
import numpy as np
from keras import ops

GRANULARITIES = ("channel", "region", "call")


INFERENCE_RULES = ("expectation", "majority", "max", "avg")


def check_choice(name: str, value, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(
            f"{name} must be one of {', '.join(map(repr, allowed))}, got {value!r}"
        )
    return value


@keras.saving.register_keras_serializable(package="liverlib")
class MixedPooling2D(keras.layers.Layer):
    """2D mixed max/average pooling (Yu et al. 2014), square window, stride = window.

    Training (``training=True``): every pooled value is either the max or the
    average of its window, chosen at random with probability ``p_max`` for max.
    Inference: a deterministic rule, ``inference``.

    Parameters
    ----------
    pool_size : int, default 2
        Side of the square window; the stride equals it. Padding is "valid",
        as in ``MaxPooling2D``: odd trailing rows/columns are dropped.
    p_max : float, default 0.5
        Probability of choosing max pooling during training (Yu et al.: 0.5).
    granularity : {"channel", "region", "call"}, default "channel"
        What one random draw covers during training:

        - ``"channel"``: one draw per sample and feature map, as lambda is in
          Yu et al. (their formula has no region index on lambda). Default for
          fidelity to the cited method.
        - ``"region"``: one draw per pooling window (sample, row, column,
          channel); the finest noise, like stochastic pooling.
        - ``"call"``: one draw for the whole layer and batch.
    inference : {"expectation", "majority", "max", "avg"}, default "expectation"
        Deterministic rule used when not training:

        - ``"expectation"``: ``p_max * max + (1 - p_max) * avg``, the mean of
          the training-time output (the dropout-style "weight scaling"
          approximation of the average over all pooling choices). It does not
          depend on the training history, so a freshly built, reloaded or
          re-trained model behaves the same way.
        - ``"majority"``: Yu et al.'s test rule. Per channel, the pooling type
          chosen more often during training, from the counters
          ``max_votes`` / ``training_calls`` (non-trainable weights, saved in
          .keras files). On a tie, including a layer that was never trained,
          it falls back to ``"expectation"``. With ``p_max=0.5`` the majority
          is decided by sampling noise, so different channels end up with an
          arbitrary mix of types; this is why ``"expectation"`` is the default.
        - ``"max"`` / ``"avg"``: always that pooling type.
    data_format : {"channels_last", "channels_first"}, optional
        Defaults to ``keras.config.image_data_format()``.
    seed : int, optional
        Seed of the layer's ``keras.random.SeedGenerator``; ``None`` draws one
        from Python's global random state (``keras.utils.set_random_seed``
        makes it reproducible).

    Notes
    -----
    Both poolings are computed and one is selected elementwise with
    ``ops.where``, so gradients flow through the chosen branch exactly as in
    the plain pooling layers. The counters are updated on every training call
    whatever ``inference`` is, so the rule can be changed after training.
    Each training call adds, per channel, the share of draws that picked max
    (a number in [0, 1]) to ``max_votes`` and 1 to ``training_calls``; the
    counters are float32 and exact for 2**24 calls.
    """

    def __init__(
        self,
        pool_size: int = 2,
        p_max: float = 0.5,
        granularity: str = "channel",
        inference: str = "expectation",
        data_format: str | None = None,
        seed: int | None = None,
        **kwargs,
    ):
        super().__init__(**kwargs)
        if isinstance(pool_size, bool) or not isinstance(pool_size, (int, np.integer)) or pool_size < 1:
            raise ValueError(f"pool_size must be a positive integer, got {pool_size!r}")
        if not 0.0 <= float(p_max) <= 1.0:
            raise ValueError(f"p_max must lie in [0, 1], got {p_max!r}")
        self.pool_size = int(pool_size)
        self.p_max = float(p_max)
        self.granularity = check_choice("granularity", granularity, GRANULARITIES)
        self.inference = check_choice("inference", inference, INFERENCE_RULES)
        data_format = data_format or keras.config.image_data_format()
        self.data_format = check_choice(
            "data_format", data_format, ("channels_last", "channels_first")
        )
        self.seed = seed
        self.seed_generator = keras.random.SeedGenerator(seed)
        self.input_spec = keras.layers.InputSpec(ndim=4)
        self._channel_axis = -1 if self.data_format == "channels_last" else 1

    def build(self, input_shape):
        channels = input_shape[self._channel_axis]
        if channels is None:
            raise ValueError("MixedPooling2D needs a known number of channels")
        self.channels = int(channels)
        # Pooling history (Yu et al.'s test rule): float32 on purpose, so that
        # mixed-precision policies do not turn the counters into float16.
        self.max_votes = self.add_weight(
            shape=(self.channels,),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,
            name="max_votes",
        )
        self.training_calls = self.add_weight(
            shape=(),
            initializer="zeros",
            dtype="float32",
            trainable=False,
            autocast=False,
            name="training_calls",
        )

    # -- forward -----------------------------------------------------------

    def _pool(self, inputs, kind: str):
        pool = ops.max_pool if kind == "max" else ops.average_pool
        return pool(
            inputs,
            pool_size=self.pool_size,
            strides=self.pool_size,
            padding="valid",
            data_format=self.data_format,
        )

    def _draw_shape(self, pooled):
        shape = ops.shape(pooled)
        if self.granularity == "region":
            return shape
        if self.granularity == "call":
            return (1, 1, 1, 1)
        if self.data_format == "channels_last":
            return (shape[0], 1, 1, shape[3])
        return (shape[0], shape[1], 1, 1)

    def _per_channel(self, values):
        # (C,) -> broadcastable against a 4D batch in this layer's data format.
        if self.data_format == "channels_last":
            return values
        return ops.reshape(values, (self.channels, 1, 1))

    def call(self, inputs, training=None):
        if training:
            pooled_max = self._pool(inputs, "max")
            pooled_avg = self._pool(inputs, "avg")
            draws = keras.random.uniform(
                self._draw_shape(pooled_max), seed=self.seed_generator
            )
            choose_max = draws < self.p_max
            self._record(choose_max)
            return ops.where(choose_max, pooled_max, pooled_avg)
        if self.inference == "max":
            return self._pool(inputs, "max")
        if self.inference == "avg":
            return self._pool(inputs, "avg")
        pooled_max = self._pool(inputs, "max")
        pooled_avg = self._pool(inputs, "avg")
        expectation = pooled_avg + self.p_max * (pooled_max - pooled_avg)
        if self.inference == "expectation":
            return expectation
        half = 0.5 * self.training_calls
        use_max = self._per_channel(ops.greater(self.max_votes, half))
        use_avg = self._per_channel(ops.less(self.max_votes, half))
        return ops.where(use_max, pooled_max, ops.where(use_avg, pooled_avg, expectation))

    def _record(self, choose_max):
        axes = tuple(a for a in range(4) if a != self._channel_axis % 4)
        share = ops.mean(ops.cast(choose_max, "float32"), axis=axes)
        self.max_votes.assign_add(ops.broadcast_to(share, (self.channels,)))
        self.training_calls.assign_add(ops.ones((), dtype="float32"))

    # -- introspection and serialization -------------------------------------

    def max_share(self) -> np.ndarray:
        """Per-channel share of max pooling chosen in training so far (NaN if untrained)."""
        calls = float(ops.convert_to_numpy(self.training_calls.value))
        votes = np.asarray(ops.convert_to_numpy(self.max_votes.value), dtype=np.float64)
        return votes / calls if calls > 0 else np.full(votes.shape, np.nan)

    def compute_output_shape(self, input_shape):
        shape = list(input_shape)
        spatial = (1, 2) if self.data_format == "channels_last" else (2, 3)
        for axis in spatial:
            if shape[axis] is not None:
                shape[axis] = shape[axis] // self.pool_size
        return tuple(shape)

    def get_config(self):
        config = super().get_config()
        config.update(
            pool_size=self.pool_size,
            p_max=self.p_max,
            granularity=self.granularity,
            inference=self.inference,
            data_format=self.data_format,
            seed=self.seed,
        )
        return config
