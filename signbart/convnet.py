"""A temporal depthwise-convolution classifier over the same inputs as SignBART.

A candidate third member for the ensemble: SignBART attends over the whole clip and the
linear baseline sees it resampled to 16 fixed frames, while this reads local motion a few
frames at a time, with a receptive field that doubles per block (dilations 1, 2, 4, ...).
Same inputs and output as SignBART, so training, evaluation and export treat it alike.

    keypoints       float32 [batch, frames, num_keypoints, 2]
    attention_mask  float32 [batch, frames]      1 = real frame, 0 = padding
    logits          float32 [batch, num_labels]

Padded frames are zeroed before every convolution, so a clip's logits do not depend on how
much padding follows it.
"""

from __future__ import annotations

from signbart.tfkeras import keras, tf

_register = keras.saving.register_keras_serializable(package="signbart")


@_register
class MaskedMean(keras.layers.Layer):
    """[B, T, D] and mask [B, T] -> [B, D]: the mean over each sequence's real frames."""

    def call(self, inputs):
        x, mask = inputs
        total = tf.reduce_sum(x * mask[..., None], axis=1)                      # [B, D]
        return total / tf.maximum(tf.reduce_sum(mask, axis=1, keepdims=True), 1.0)

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape[0])
        return shape[:1].concatenate(shape[2:])


def build_convnet(num_keypoints: int, num_labels: int, width: int = 128, blocks: int = 3,
                  kernel: int = 5, dropout: float = 0.3) -> keras.Model:
    """Residual blocks of LayerNorm, a dilated depthwise convolution over time and a GELU
    pointwise MLP, then the masked mean over frames and a linear head."""
    keypoints = keras.Input(shape=(None, num_keypoints, 2), name="keypoints")
    mask = keras.Input(shape=(None,), name="attention_mask")
    frames = keras.layers.Reshape((-1, 1), name="frame_mask")(mask)             # [B, T, 1]
    x = keras.layers.Reshape((-1, num_keypoints * 2), name="flatten_points")(keypoints)
    x = keras.layers.Dense(width, name="proj")(x)                              # [B, T, W]
    for i in range(blocks):
        h = keras.layers.LayerNormalization(name=f"block{i}_ln")(x)
        h = keras.layers.Multiply(name=f"block{i}_mask")([h, frames])
        h = keras.layers.DepthwiseConv1D(kernel, padding="same", dilation_rate=2 ** i,
                                         name=f"block{i}_dwconv")(h)
        h = keras.layers.Dense(2 * width, activation="gelu", name=f"block{i}_fc1")(h)
        h = keras.layers.Dropout(dropout, name=f"block{i}_dropout")(h)
        h = keras.layers.Dense(width, name=f"block{i}_fc2")(h)
        x = keras.layers.Add(name=f"block{i}_add")([x, h])                     # [B, T, W]
    x = keras.layers.LayerNormalization(name="final_ln")(x)
    pooled = MaskedMean(name="masked_mean")([x, mask])                         # [B, W]
    pooled = keras.layers.Dropout(dropout, name="head_dropout")(pooled)
    logits = keras.layers.Dense(num_labels, name="classifier")(pooled)
    return keras.Model({"keypoints": keypoints, "attention_mask": mask}, logits, name="convnet")
