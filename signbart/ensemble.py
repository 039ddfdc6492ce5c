"""SignBART and the linear baseline as one model: one graph, one ``.tflite`` file.

The two fail on different signers (on MLR511 the baseline is strong where camera framing
differs, SignBART where the motion does), so their log-probabilities are mixed with a weight
fitted on the inner-validation signers' predictions only. The baseline's resampling and its
linear layer are rebuilt as graph ops, so the ensemble has the same inputs and output as
SignBART and ``evaluate``/``predict`` run it like any other model.
"""

from __future__ import annotations

import numpy as np

from signbart.baseline import LinearBaseline
from signbart.tfkeras import keras, tf

_register = keras.saving.register_keras_serializable(package="signbart")

WEIGHT_GRID = np.round(np.linspace(0.0, 1.0, 11), 2)


@_register
class ResampleFrames(keras.layers.Layer):
    """``baseline.features`` as graph ops: [B, T, K, 2] + mask [B, T] -> [B, frames * K * 3].

    Linear interpolation over each sequence's real frames is a [frames, T] matrix built from
    two one-hot rows, so the graph needs only builtin TFLite ops (ONE_HOT, BATCH_MATMUL).
    """

    def __init__(self, frames: int = 16, **kwargs):
        super().__init__(**kwargs)
        if frames < 2:
            raise ValueError(f"frames must be >= 2, got {frames}")
        self.frames = int(frames)

    def call(self, inputs):
        keypoints, mask = inputs
        t = tf.shape(keypoints)[1]
        k = keypoints.shape[2]
        length = tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)        # [B, 1]
        pos = tf.linspace(0.0, 1.0, self.frames)[None] * (length - 1.0)        # [B, F]
        lo = tf.floor(pos)
        hi = tf.minimum(lo + 1.0, length - 1.0)
        w = (pos - lo)[..., None]                                              # [B, F, 1]
        interp = (tf.one_hot(tf.cast(lo, tf.int32), t) * (1.0 - w)
                  + tf.one_hot(tf.cast(hi, tf.int32), t) * w)                  # [B, F, T]
        present = tf.cast(tf.reduce_any(tf.not_equal(keypoints, 0.0), -1, keepdims=True),
                          keypoints.dtype)                                     # [B, T, K, 1]
        xp = tf.concat([keypoints, present], -1)                               # [B, T, K, 3]
        flat = tf.reshape(xp, [-1, t, k * 3])                                  # [B, T, K*3]
        return tf.reshape(tf.matmul(interp, flat), [-1, self.frames * k * 3])  # [B, F*K*3]

    def get_config(self):
        return {**super().get_config(), "frames": self.frames}


@_register
class MixLogProbs(keras.layers.Layer):
    """Weighted sum of the members' log-softmax outputs: the ensemble's logits."""

    def __init__(self, weights: list[float], **kwargs):
        super().__init__(**kwargs)
        if not weights or min(weights) < 0 or not np.isclose(sum(weights), 1.0):
            raise ValueError(f"weights must be >= 0 and sum to 1, got {weights}")
        self.mix = [float(w) for w in weights]

    def call(self, logits):
        return tf.add_n([w * tf.nn.log_softmax(x, -1) for w, x in zip(self.mix, logits)])

    def get_config(self):
        return {**super().get_config(), "weights": self.mix}


CUSTOM_OBJECTS = {"ResampleFrames": ResampleFrames, "MixLogProbs": MixLogProbs}


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def mix_logits(signbart_logits: np.ndarray, baseline_logits: np.ndarray,
               weight: float) -> np.ndarray:
    """The ensemble's log-probabilities, as its exported graph computes them."""
    return log_softmax(weight * log_softmax(signbart_logits)
                       + (1 - weight) * log_softmax(baseline_logits))


def fit_weight(signbart_logits: np.ndarray, baseline_logits: np.ndarray, y: np.ndarray) -> float:
    """SignBART's share of the mix, on a 0.1 grid: highest inner accuracy, then lowest loss,
    then the weight nearest 0.5 (equal shares when the inner signers cannot tell)."""
    def score(w):
        mix = mix_logits(signbart_logits, baseline_logits, w)
        return (float((mix.argmax(1) == y).mean()), float(mix[np.arange(len(y)), y].mean()),
                -abs(w - 0.5))

    return float(max(WEIGHT_GRID, key=score))


def baseline_layers(baseline: LinearBaseline, num_keypoints: int) -> list:
    """The baseline's standardisation and linear map as two builtin layers. Folding the
    scale into the weights instead loses float32 precision on near-constant features."""
    width = baseline.frames * num_keypoints * 3
    norm = keras.layers.Normalization(mean=baseline.mean, variance=baseline.std ** 2,
                                      name="baseline_standardize")
    dense = keras.layers.Dense(baseline.weights.shape[1], name="baseline_linear")
    dense.build((None, width))
    dense.set_weights([baseline.weights.astype(np.float32), baseline.bias.astype(np.float32)])
    return [norm, dense]


def build_ensemble(signbart: keras.Model, baseline: LinearBaseline, weight: float) -> keras.Model:
    """SignBART (share ``weight``) + the linear baseline (``1 - weight``), one Functional model."""
    k = int(dict(zip(signbart.input_names, signbart.inputs))["keypoints"].shape[2])
    keypoints = keras.Input(shape=(None, k, 2), name="keypoints")  # [B, T, K, 2]
    mask = keras.Input(shape=(None,), name="attention_mask")  # [B, T]
    member = signbart({"keypoints": keypoints, "attention_mask": mask})  # [B, C]
    feats = ResampleFrames(baseline.frames, name="baseline_features")([keypoints, mask])
    for layer in baseline_layers(baseline, k):
        feats = layer(feats)  # [B, F*K*3], then [B, C]
    logits = MixLogProbs([weight, 1.0 - weight], name="mix")([member, feats])  # [B, C]
    return keras.Model({"keypoints": keypoints, "attention_mask": mask}, logits, name="ensemble")
