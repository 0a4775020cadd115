"""Custom Keras layers shared by the example models."""

from __future__ import annotations

from typing import Any

import keras


@keras.saving.register_keras_serializable(package="rules_keras_examples")
class ResidualDense(keras.layers.Layer):
    """A two-layer MLP block added back onto its input: ``x + scale * mlp(x)``.

    ``scale`` is a learned per-feature vector. It starts small so a freshly built
    stack of blocks is close to the identity, which keeps a deep stack trainable in
    the handful of steps the example training budget allows.

    Args:
        hidden: width of the block's inner layer.
        activation: activation of the inner layer.
        scale_init: initial value of every entry of the learned residual scale.
    """

    def __init__(
        self,
        hidden: int,
        activation: str = "relu",
        scale_init: float = 0.1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.hidden = hidden
        self.activation = keras.activations.get(activation)
        self.scale_init = scale_init

    def build(self, input_shape: tuple[int | None, ...]) -> None:
        width = input_shape[-1]
        if width is None:
            raise ValueError(
                f"ResidualDense needs a known last dimension. Received: input_shape={input_shape}"
            )
        self.inner_kernel = self.add_weight(
            name="inner_kernel", shape=(width, self.hidden), initializer="glorot_uniform"
        )
        self.inner_bias = self.add_weight(
            name="inner_bias", shape=(self.hidden,), initializer="zeros"
        )
        self.outer_kernel = self.add_weight(
            name="outer_kernel", shape=(self.hidden, width), initializer="glorot_uniform"
        )
        self.outer_bias = self.add_weight(name="outer_bias", shape=(width,), initializer="zeros")
        self.scale = self.add_weight(
            name="scale",
            shape=(width,),
            initializer=keras.initializers.Constant(self.scale_init),
        )

    def call(self, inputs: Any) -> Any:
        ops = keras.ops
        h = self.activation(ops.matmul(inputs, self.inner_kernel) + self.inner_bias)
        return inputs + self.scale * (ops.matmul(h, self.outer_kernel) + self.outer_bias)

    def compute_output_shape(self, input_shape: tuple[int | None, ...]) -> tuple[int | None, ...]:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        config: dict[str, Any] = super().get_config()
        config.update(
            {
                "hidden": self.hidden,
                "activation": keras.activations.serialize(self.activation),
                "scale_init": self.scale_init,
            }
        )
        return config
