"""Quantised exports: sizes, int8 kernels, QAT coverage, accuracy on a toy task, export checks."""

import dataclasses

import numpy as np
import pytest

from signbart import quantize as Q
from signbart import tflite
from signbart.config import ModelConfig, QATConfig
from signbart.model import build_model, dense_layers
from signbart.tfkeras import keras, seed_everything, tf

REAL = ModelConfig(num_keypoints=65, num_labels=10)
TOY = ModelConfig(num_keypoints=8, num_labels=4, d_model=32, encoder_layers=1, decoder_layers=1,
                  encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=32,
                  decoder_ffn_dim=32, dropout=0.1, activation_dropout=0.0, classifier_dropout=0.1,
                  encoder_layerdrop=0.0, decoder_layerdrop=0.0, max_position_embeddings=32)
TOY_FRAMES = 32


def _toy(n: int, seed: int):
    """4 classes of whole-body motion (right, up, circle, shake) of 8 points, 16-32 frames.

    Per-sample offset, amplitude, length and jitter vary; the rest pose is shared, so the
    train and test draws are the same task.
    """
    rng = np.random.default_rng(seed)
    rest = np.random.default_rng(1234).uniform(0.3, 0.7, (TOY.num_keypoints, 2))
    y = rng.integers(0, TOY.num_labels, n).astype(np.int32)
    x = np.zeros((n, TOY_FRAMES, TOY.num_keypoints, 2), np.float32)
    mask = np.zeros((n, TOY_FRAMES), np.float32)
    for i, label in enumerate(y):
        length = int(rng.integers(TOY_FRAMES // 2, TOY_FRAMES + 1))
        t = np.linspace(0, 1, length)[:, None]
        a = rng.uniform(0.15, 0.25)
        path = [np.stack([a * t, 0 * t], -1), np.stack([0 * t, a * t], -1),
                np.stack([a * np.cos(2 * np.pi * t) - a, a * np.sin(2 * np.pi * t)], -1),
                np.stack([a * np.sin(4 * np.pi * t), 0 * t], -1)][label]
        x[i, :length] = (rest + rng.normal(0, 0.02, (1, TOY.num_keypoints, 2)) + path
                         + rng.normal(0, 0.01, (length, TOY.num_keypoints, 2)))
        mask[i, :length] = 1
    return x, mask, y


def _dataset(x, mask, y, batch):
    return tf.data.Dataset.from_tensor_slices(
        ({"keypoints": x, "attention_mask": mask}, y)).batch(batch)


def _accuracy(logits, y) -> float:
    return 100.0 * float(np.mean(np.argmax(logits, -1) == y))


@pytest.fixture(scope="module")
def real():
    """The 65-keypoint default model (random weights) and its exports."""
    seed_everything(0)
    model = build_model(REAL)
    qat = Q.apply_qat(model, QATConfig())
    return {"model": model, "qat": qat, "fp32": Q.to_tflite(model),
            "ptq": Q.ptq_dynamic(model), "qat_tflite": Q.qat_to_tflite(qat)}


@pytest.fixture(scope="module")
def toy():
    """A toy model trained to ~100%, its train split and a test split from another seed."""
    seed_everything(0)
    train, test = _toy(256, seed=1), _toy(128, seed=2)
    model = build_model(TOY)
    model.compile(keras.optimizers.Adam(3e-3),
                  keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(_dataset(*train, 32), epochs=15, verbose=0)
    return model, train, test


def test_quantized_files_are_at_most_35_percent_of_fp32(real):
    fp32 = len(real["fp32"])
    assert len(real["ptq"]) <= 0.35 * fp32
    assert len(real["qat_tflite"]) <= 0.35 * fp32


def test_every_dense_kernel_is_stored_int8(real):
    n = len(dense_layers(real["model"]))
    assert n == 35
    assert tflite.int8_dense_kernels(real["fp32"]) == (0, n)
    assert tflite.int8_dense_kernels(real["ptq"]) == (n, n)
    assert tflite.int8_dense_kernels(real["qat_tflite"]) == (n, n)


def test_qat_wraps_every_dense_layer_and_leaves_the_original_alone(real):
    model, qat = real["model"], real["qat"]
    assert len(Q.qat_wrapped_dense(qat)) == len(dense_layers(model)) == 35
    assert len(dense_layers(model)) == 35  # the original still has plain Dense layers
    x = np.random.default_rng(0).random((1, 64, 65, 2), dtype=np.float32)
    inputs = {"keypoints": x, "attention_mask": np.ones((1, 64), np.float32)}
    # Weight-only fake quant at 8 bits barely moves the logits of the untrained copy.
    np.testing.assert_allclose(qat(inputs).numpy(), model(inputs).numpy(), atol=0.05)


def test_qat_export_keeps_the_int8_grid_qat_trained_on(real):
    qat = real["qat"]
    plain = Q.strip_qat(qat)
    assert len(dense_layers(plain)) == 35 and not Q.qat_wrapped_dense(plain)
    for layer in dense_layers(plain):
        kernel = layer.get_weights()[0]
        steps = kernel / (np.abs(kernel).max(axis=0) / 127)  # per output column, as TFLite
        np.testing.assert_allclose(steps, np.round(steps), atol=1e-3, err_msg=layer.name)
    x = np.random.default_rng(1).random((1, 64, 65, 2), dtype=np.float32)
    inputs = {"keypoints": x, "attention_mask": np.ones((1, 64), np.float32)}
    np.testing.assert_allclose(plain(inputs).numpy(), qat(inputs).numpy(), atol=1e-5)


@keras.saving.register_keras_serializable(package="test_quantize")
class _HiddenDense(keras.layers.Layer):
    """A Dense tfmot cannot reach: it lives inside a custom layer."""

    def build(self, input_shape):
        self.inner = keras.layers.Dense(4)
        self.inner.build(input_shape)

    def call(self, x):
        return self.inner(x)


def test_qat_refuses_a_dense_it_cannot_wrap():
    inputs = keras.Input((3,))
    model = keras.Model(inputs, keras.layers.Dense(2)(_HiddenDense()(inputs)))
    with pytest.raises(ValueError, match="wrapped 1 of 2 Dense"):
        Q.apply_qat(model, QATConfig())


def test_toy_accuracy_of_every_quantisation_mode(toy):
    """PTQ within 3 points of FP32, QAT within 2, full INT8 within 3, on 128 test samples.

    The toy classes are far apart and the FP32 model is ~100% accurate, so a working export
    loses at most a sample or two (0.8 points each); a broken one (wrong calibration range,
    int8 attention renormalisation, a rounded frame index) loses 10+ points. All seeds are
    fixed, so the run repeats exactly.
    """
    model, train, (x, mask, y) = toy
    fp32 = _accuracy(model.predict({"keypoints": x, "attention_mask": mask}, verbose=0), y)
    assert fp32 >= 95.0

    ptq = _accuracy(tflite.predict_fn(Q.ptq_dynamic(model, TOY_FRAMES))(x, mask), y)

    cfg = QATConfig(epochs=3, lr=1e-4, batch_size=16, patience=2)
    qat, info = Q.qat_finetune(Q.apply_qat(model, cfg), _dataset(*train, cfg.batch_size),
                               _dataset(*(a[:64] for a in train), 64), cfg)
    assert 1 <= info["best_epoch"] <= info["epochs_run"] <= cfg.epochs
    assert len(info["history"]["val_loss"]) == info["epochs_run"]
    qat_acc = _accuracy(tflite.predict_fn(Q.qat_to_tflite(qat, TOY_FRAMES))(x, mask), y)

    xt, mt, _ = train
    rep = ((xt[i:i + 1], mt[i:i + 1]) for i in range(100))
    int8 = Q.full_int8(model, rep, TOY_FRAMES)
    int8_acc = _accuracy(tflite.predict_fn(int8)(x, mask), y)
    ops = tflite.op_types(int8)
    assert ops["FULLY_CONNECTED"] == {"int8": 2 + 6 + 10 + 1}  # int8 in, int8 weights
    assert ops["BATCH_MATMUL"] == {"int8": 2 * 3}
    assert ops["SOFTMAX"] == {"float32": 3} and ops["RSQRT"] == {"float32": 7}  # FLOAT_LAYERS

    print(f"toy top-1: fp32 {fp32:.1f} ptq {ptq:.1f} qat {qat_acc:.1f} int8 {int8_acc:.1f}")
    assert ptq >= fp32 - 3.0
    assert qat_acc >= fp32 - 2.0
    assert int8_acc >= fp32 - 3.0


def test_check_tflite_accepts_a_good_export_and_rejects_bad_ones(toy):
    model, _, (x, mask, _) = toy
    good = Q.to_tflite(model, TOY_FRAMES)
    tflite.check(good, x[:4], mask[:4])

    blown = build_model(dataclasses.replace(TOY, classifier_dropout=0.0))
    blown.set_weights(model.get_weights())
    head = blown.get_layer("classifier")
    kernel, bias = head.get_weights()
    head.set_weights([np.full_like(kernel, 3e38), bias])  # sum of 32 such terms overflows
    with pytest.raises(tflite.ExportError, match="non-finite"):
        tflite.check(Q.to_tflite(blown, TOY_FRAMES), x[:4], mask[:4])

    with pytest.raises(tflite.ExportError, match="model takes"):
        tflite.check(good, x[:2, :16], mask[:2, :16])
    with pytest.raises(tflite.ExportError, match="cannot load"):
        tflite.check(b"not a flatbuffer", x[:1], mask[:1])
