"""SignBART: a small BART encoder-decoder over keypoint sequences, as one flat Functional graph.

x coordinates feed the encoder and y coordinates the decoder (SignBART encodes them
separately); the decoder state at each sequence's last real frame is classified.

Inputs, right-padded in time:
    keypoints       float32 [batch, frames, num_keypoints, 2]   x, y
(with ``hand_slots`` set, both streams also see each hand's measured shape, ``HandShape``)
    attention_mask  float32 [batch, frames]                     1 = real frame, 0 = padding
Output:
    logits          float32 [batch, num_labels]

Every Dense layer is a top-level layer of the graph so QAT can wrap each one (tfmot does
not reach inside custom layers). The other pieces are small registered layers, so ``.keras``
files load with safe_mode on, and one graph serves training, QAT and TFLite.

Masking never adds a large negative constant: that stretches INT8 calibration ranges until
the real scores round to zero. Attention takes a softmax, zeroes the masked keys and
renormalises, which is exact in float and stays bounded.
"""

from __future__ import annotations

import math

from signbart.config import HAND_POINTS, ModelConfig
from signbart.tfkeras import keras, tf

_register = keras.saving.register_keras_serializable(package="signbart")

LN_EPSILON = 1e-5  # BART's LayerNorm epsilon
POSITION_OFFSET = 2  # BART reserves the first two rows of the position table
# Ops under this name scope stay float in full-INT8 export (``signbart.quantize.full_int8``):
# the masked-softmax renormalisation (int8 probabilities of 1/256 steps cost ~10 accuracy
# points on toy data) and the last-frame index (an int8 frame count rounds to the wrong frame).
KEEP_FLOAT = "keep_float"


def _check_rate(name: str, value: float) -> None:
    if not 0.0 <= value < 1.0:
        raise ValueError(f"{name} must be in [0, 1), got {value}")


# ----------------------------------------------------------------------------- layers


@_register
class SplitCoordinates(keras.layers.Layer):
    """[B, T, K, 2] keypoints -> ([B, T, K] x, [B, T, K] y), the two SignBART streams."""

    def call(self, keypoints):
        return keypoints[..., 0], keypoints[..., 1]  # 2 x [B, T, K]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape)[:-1]
        return shape, shape


@_register
class PositionalEmbedding(keras.layers.Layer):
    """Adds BART's learned positions: rows offset .. offset+T-1 of a (max_positions+offset)-row table."""

    def __init__(self, max_positions: int, offset: int = POSITION_OFFSET,
                 initializer_range: float = 0.02, **kwargs):
        super().__init__(**kwargs)
        if max_positions <= 0:
            raise ValueError(f"max_positions must be > 0, got {max_positions}")
        if offset < 0:
            raise ValueError(f"offset must be >= 0, got {offset}")
        self.max_positions = int(max_positions)
        self.offset = int(offset)
        self.initializer_range = float(initializer_range)

    def build(self, input_shape):
        frames = input_shape[1]
        if frames is not None and frames > self.max_positions:
            raise ValueError(f"{self.name}: {frames} frames exceed max_positions={self.max_positions}")
        self.table = self.add_weight(
            name="embeddings", shape=(self.max_positions + self.offset, input_shape[-1]),
            initializer=keras.initializers.TruncatedNormal(stddev=self.initializer_range))
        super().build(input_shape)

    def call(self, x):
        frames = tf.shape(x)[1]
        positions = self.table[self.offset:self.offset + frames]  # [T, D]
        return x + positions[tf.newaxis]  # [B, T, D]

    def get_config(self):
        return {**super().get_config(), "max_positions": self.max_positions,
                "offset": self.offset, "initializer_range": self.initializer_range}


@_register
class AttentionCore(keras.layers.Layer):
    """Multi-head scaled dot-product attention on already-projected q, k, v.

    Inputs ``[q [B,Tq,D], k [B,Tk,D], v [B,Tk,D], key_mask [B,Tk]]`` (mask 1 = real frame).
    The projections live outside as top-level Dense layers so QAT wraps them.
    """

    def __init__(self, num_heads: int, dropout: float = 0.0, causal: bool = False, **kwargs):
        super().__init__(**kwargs)
        if num_heads <= 0:
            raise ValueError(f"num_heads must be > 0, got {num_heads}")
        _check_rate("dropout", dropout)
        self.num_heads = int(num_heads)
        self.dropout = float(dropout)
        self.causal = bool(causal)

    def build(self, input_shape):
        dim = input_shape[0][-1]
        if dim is not None and dim % self.num_heads:
            raise ValueError(f"{self.name}: model dim {dim} is not divisible by "
                             f"num_heads={self.num_heads}")
        self.probs_dropout = keras.layers.Dropout(self.dropout, name="probs_dropout")
        super().build(input_shape)

    def _split_heads(self, x, head_dim):
        frames = tf.shape(x)[1]
        x = tf.reshape(x, [-1, frames, self.num_heads, head_dim])  # [B, T, H, Dh]
        return tf.transpose(x, [0, 2, 1, 3])  # [B, H, T, Dh]

    def call(self, inputs, training=None):
        q, k, v, key_mask = inputs
        head_dim = q.shape[-1] // self.num_heads
        q = self._split_heads(q, head_dim) * (1.0 / math.sqrt(head_dim))  # [B, H, Tq, Dh]
        k = self._split_heads(k, head_dim)  # [B, H, Tk, Dh]
        v = self._split_heads(v, head_dim)  # [B, H, Tk, Dh]
        scores = tf.matmul(q, k, transpose_b=True)  # [B, H, Tq, Tk]
        with tf.name_scope(KEEP_FLOAT):
            mask = key_mask[:, tf.newaxis, tf.newaxis, :]  # [B, 1, 1, Tk]
            if self.causal:
                rows = tf.range(tf.shape(q)[2])[:, tf.newaxis]  # [Tq, 1]
                cols = tf.range(tf.shape(k)[2])[tf.newaxis, :]  # [1, Tk]
                mask = mask * tf.cast(cols <= rows, mask.dtype)  # [B, 1, Tq, Tk]
            probs = tf.nn.softmax(scores, axis=-1) * mask  # [B, H, Tq, Tk]
            probs = probs / tf.maximum(tf.reduce_sum(probs, axis=-1, keepdims=True), 1e-9)
        probs = self.probs_dropout(probs, training=training)
        out = tf.matmul(probs, v)  # [B, H, Tq, Dh]
        out = tf.transpose(out, [0, 2, 1, 3])  # [B, Tq, H, Dh]
        return tf.reshape(out, [-1, tf.shape(out)[1], self.num_heads * head_dim])  # [B, Tq, D]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape[0])

    def get_config(self):
        return {**super().get_config(), "num_heads": self.num_heads, "dropout": self.dropout,
                "causal": self.causal}


@_register
class LayerDrop(keras.layers.Layer):
    """Skips a whole transformer layer with probability ``rate`` while training (one draw per batch).

    Takes ``[layer_input, layer_output]``; at inference it always returns ``layer_output``.
    """

    def __init__(self, rate: float, seed: int | None = None, **kwargs):
        super().__init__(**kwargs)
        _check_rate("rate", rate)
        self.rate = float(rate)
        self.seed = seed

    def call(self, inputs, training=None):
        layer_input, layer_output = inputs
        if not training or self.rate == 0.0:
            return layer_output
        skip = tf.random.uniform([], seed=self.seed) < self.rate  # scalar
        return tf.where(skip, layer_input, layer_output)  # [B, T, D]

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape[1])

    def get_config(self):
        return {**super().get_config(), "rate": self.rate, "seed": self.seed}


@_register
class LastValidFrame(keras.layers.Layer):
    """Picks each sequence's state at its last real frame, index sum(mask) - 1 (0 if empty)."""

    def call(self, inputs):
        hidden, mask = inputs  # [B, T, D], [B, T]
        with tf.name_scope(KEEP_FLOAT):
            last = tf.cast(tf.reduce_sum(mask, axis=1), tf.int32) - 1  # [B]
            last = tf.maximum(last, 0)
        return tf.gather(hidden, last, axis=1, batch_dims=1)  # [B, D]

    def compute_output_shape(self, input_shape):
        shape = tf.TensorShape(input_shape[0])
        return shape[:1].concatenate(shape[2:])


FINGERS = tuple(tuple(range(1 + 4 * f, 5 + 4 * f)) for f in range(5))  # thumb .. pinky
TIPS = tuple(f[-1] for f in FINGERS)
PALM = (0, 5, 9, 13, 17)  # wrist and the four finger bases
MIDDLE_BASE = 9
PAIRS = tuple((i, j) for i in range(len(TIPS)) for j in range(i + 1, len(TIPS)))
JOINTS = tuple(((0,) + f)[i - 1:i + 2] for f in FINGERS for i in range(1, 4))  # (before, at, after)
SHAPE_FEATURES = len(PAIRS) + len(TIPS) + len(JOINTS) + 2  # distances, bends, palm direction
MAX_RATIO = 4.0  # palm lengths; a farther "fingertip" is a tracking error, not a hand shape


@_register
class HandShape(keras.layers.Layer):
    """What a hand's shape is, whatever its size and place: [B, T, K, 2] -> [B, T, 32 * hands].

    Per 21-point hand starting at each of ``slots``: the 10 fingertip-to-fingertip and 5
    fingertip-to-palm-centre distances in palm lengths (wrist to middle-finger base), the
    cosine of the 15 finger joints' bend, and the palm's direction (a unit vector). SignBART
    sees x and y in separate streams, so without these it must learn every distance across
    them; a signer's hand size, camera distance, rotation and mirror image leave the
    distances and bends unchanged. A frame where the hand is not all seen gives zeros.
    Computed in the graph, so augmentation, the ``.tflite`` and ``predict`` all agree.
    """

    def __init__(self, slots, **kwargs):
        super().__init__(**kwargs)
        self.slots = tuple(int(s) for s in slots)
        if not self.slots:
            raise ValueError("slots must name at least one hand")

    def _one(self, hand):
        def dist(a, b):
            return tf.sqrt(tf.reduce_sum(tf.square(a - b), -1) + 1e-12)   # [B, T, ...]

        present = tf.reduce_all(tf.reduce_any(tf.not_equal(hand, 0.0), -1), -1)  # [B, T]
        palm = dist(hand[..., MIDDLE_BASE, :], hand[..., 0, :])[..., None]       # [B, T, 1]
        scale = tf.maximum(palm, 1e-3)
        tips = tf.gather(hand, TIPS, axis=2)                                     # [B, T, 5, 2]
        between = dist(tf.gather(tips, [i for i, _ in PAIRS], axis=2),
                       tf.gather(tips, [j for _, j in PAIRS], axis=2))           # [B, T, 10]
        centre = tf.reduce_mean(tf.gather(hand, PALM, axis=2), 2, keepdims=True)
        to_palm = dist(tips, centre)                                             # [B, T, 5]
        ratios = tf.minimum(tf.concat([between, to_palm], -1) / scale, MAX_RATIO)
        a, b, c = (tf.gather(hand, [j[n] for j in JOINTS], axis=2) for n in range(3))
        u, v = a - b, c - b                                                      # [B, T, 15, 2]
        bend = tf.reduce_sum(u * v, -1) / (dist(a, b) * dist(c, b))             # [B, T, 15]
        direction = (hand[..., MIDDLE_BASE, :] - hand[..., 0, :]) / scale        # [B, T, 2]
        feats = tf.concat([ratios, bend, direction], -1)                         # [B, T, 32]
        return feats * tf.cast(present, feats.dtype)[..., None]

    def call(self, keypoints):
        with tf.name_scope(KEEP_FLOAT):
            return tf.concat([self._one(keypoints[:, :, s:s + HAND_POINTS]) for s in self.slots], -1)

    def compute_output_shape(self, input_shape):
        return tf.TensorShape(input_shape)[:2].concatenate([SHAPE_FEATURES * len(self.slots)])

    def get_config(self):
        return {**super().get_config(), "slots": list(self.slots)}


CUSTOM_OBJECTS = {cls.__name__: cls for cls in
                  (SplitCoordinates, PositionalEmbedding, AttentionCore, LayerDrop, LastValidFrame,
                   HandShape)}


# ----------------------------------------------------------------------------- functional model


def _dense(units: int, name: str) -> keras.layers.Dense:
    return keras.layers.Dense(units, name=name,
                              kernel_initializer=keras.initializers.TruncatedNormal(stddev=0.02))


def _attention(query, memory, mask, heads: int, dim: int, dropout: float, causal: bool, name: str):
    q = _dense(dim, f"{name}_q")(query)  # [B, Tq, D]
    k = _dense(dim, f"{name}_k")(memory)  # [B, Tk, D]
    v = _dense(dim, f"{name}_v")(memory)  # [B, Tk, D]
    out = AttentionCore(heads, dropout, causal, name=f"{name}_core")([q, k, v, mask])  # [B, Tq, D]
    return _dense(dim, f"{name}_out")(out)  # [B, Tq, D]


def _residual_norm(x, update, dropout: float, name: str):
    update = keras.layers.Dropout(dropout, name=f"{name}_dropout")(update)
    x = keras.layers.Add(name=f"{name}_add")([x, update])
    return keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_ln")(x)  # [B, T, D]


def _ffn(x, cfg: ModelConfig, ffn_dim: int, name: str):
    h = _dense(ffn_dim, f"{name}_fc1")(x)  # [B, T, F]
    h = keras.layers.Activation("gelu", name=f"{name}_gelu")(h)
    h = keras.layers.Dropout(cfg.activation_dropout, name=f"{name}_act_dropout")(h)
    h = _dense(cfg.d_model, f"{name}_fc2")(h)  # [B, T, D]
    return _residual_norm(x, h, cfg.dropout, name)


def _embed(coords, cfg: ModelConfig, name: str):
    x = _dense(cfg.d_model, f"{name}_proj")(coords)  # [B, T, D]
    x = PositionalEmbedding(cfg.max_position_embeddings, name=f"{name}_positions")(x)
    x = keras.layers.LayerNormalization(epsilon=LN_EPSILON, name=f"{name}_ln_embedding")(x)
    return keras.layers.Dropout(cfg.dropout, name=f"{name}_embed_dropout")(x)  # [B, T, D]


def _encoder_layer(x, mask, cfg: ModelConfig, i: int):
    name = f"enc{i}"
    h = _attention(x, x, mask, cfg.encoder_attention_heads, cfg.d_model, cfg.attention_dropout,
                   False, f"{name}_self")
    h = _residual_norm(x, h, cfg.dropout, f"{name}_self")
    h = _ffn(h, cfg, cfg.encoder_ffn_dim, f"{name}_ffn")
    return LayerDrop(cfg.encoder_layerdrop, name=f"{name}_layerdrop")([x, h])  # [B, T, D]


def _decoder_layer(y, memory, mask, cfg: ModelConfig, i: int):
    name = f"dec{i}"
    h = _attention(y, y, mask, cfg.decoder_attention_heads, cfg.d_model, cfg.attention_dropout,
                   True, f"{name}_self")
    h = _residual_norm(y, h, cfg.dropout, f"{name}_self")
    c = _attention(h, memory, mask, cfg.decoder_attention_heads, cfg.d_model,
                   cfg.attention_dropout, False, f"{name}_cross")
    h = _residual_norm(h, c, cfg.dropout, f"{name}_cross")
    h = _ffn(h, cfg, cfg.decoder_ffn_dim, f"{name}_ffn")
    return LayerDrop(cfg.decoder_layerdrop, name=f"{name}_layerdrop")([y, h])  # [B, T, D]


def build_model(cfg: ModelConfig) -> keras.Model:
    """The SignBART classifier for ``cfg`` (inputs and output as in the module docstring)."""
    if cfg.decoder_layers < 1:
        raise ValueError("decoder_layers must be >= 1: cross-attention in the decoder is the "
                         "only path from the x-coordinate encoder to the classifier")
    keypoints = keras.Input(shape=(None, cfg.num_keypoints, 2), name="keypoints")  # [B, T, K, 2]
    mask = keras.Input(shape=(None,), name="attention_mask")  # [B, T]
    xs, ys = SplitCoordinates(name="split_coordinates")(keypoints)  # 2 x [B, T, K]
    if cfg.hand_slots:
        shape = HandShape(cfg.hand_slots, name="hand_shape")(keypoints)  # [B, T, 32 * hands]
        xs = keras.layers.Concatenate(name="encoder_hand_shape")([xs, shape])
        ys = keras.layers.Concatenate(name="decoder_hand_shape")([ys, shape])

    x = _embed(xs, cfg, "encoder")  # [B, T, D]
    for i in range(cfg.encoder_layers):
        x = _encoder_layer(x, mask, cfg, i)  # [B, T, D]

    y = _embed(ys, cfg, "decoder")  # [B, T, D]
    for i in range(cfg.decoder_layers):
        y = _decoder_layer(y, x, mask, cfg, i)  # [B, T, D]

    last = LastValidFrame(name="last_valid_frame")([y, mask])  # [B, D]
    last = keras.layers.Dropout(cfg.classifier_dropout, name="classifier_dropout")(last)
    logits = _dense(cfg.num_labels, "classifier")(last)  # [B, num_labels]
    return keras.Model({"keypoints": keypoints, "attention_mask": mask}, logits, name="signbart")


# ----------------------------------------------------------------------------- helpers


def load_model(path) -> keras.Model:
    """Loads a ``.keras`` SignBART model saved with ``model.save``; safe_mode stays on."""
    return keras.models.load_model(path, custom_objects=CUSTOM_OBJECTS)


def count_params(model: keras.Model) -> int:
    return int(sum(math.prod(w.shape) for w in model.weights))


def dense_layers(model: keras.Model) -> list[keras.layers.Dense]:
    """Top-level Dense layers, in graph order: the set QAT must wrap."""
    return [layer for layer in model.layers if isinstance(layer, keras.layers.Dense)]


def expected_dense_count(cfg: ModelConfig) -> int:
    """2 projections + 4 attention + 2 FFN per encoder layer + 8 + 2 per decoder layer + head."""
    return 2 + 6 * cfg.encoder_layers + 10 * cfg.decoder_layers + 1
