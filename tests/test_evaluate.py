"""Metrics against hand counts; Keras and the real TFLite interpreter scored by one function."""

import dataclasses
import json

import numpy as np
import pytest

from signbart import evaluate as ev
from signbart import tflite
from signbart.config import ModelConfig, VariantConfig
from signbart.data import open_dataset
from signbart.errors import UserError
from signbart.preprocess import prepare
from signbart.results import COLUMNS
from signbart.tfkeras import keras, tf

K, LABELS, HIDDEN, FRAMES = 3, 4, 20, 64


def tiny_model(k=K, labels=LABELS, seed=0):
    """Dense-only stand-in with the real model's named inputs and dynamic frame count."""
    keras.utils.set_random_seed(seed)
    keypoints = keras.Input((None, k, 2), name="keypoints")                 # [B, T, K, 2]
    mask = keras.Input((None,), name="attention_mask")                      # [B, T]
    h = keras.layers.Dense(HIDDEN)(keras.layers.Reshape((-1, k * 2))(keypoints))  # [B, T, H]
    h = keras.layers.GlobalAveragePooling1D()(h * tf.expand_dims(mask, -1))  # [B, H]
    return keras.Model({"keypoints": keypoints, "attention_mask": mask},
                       keras.layers.Dense(labels)(h))                       # [B, labels]


def tiny_signbart() -> ModelConfig:
    return ModelConfig(num_keypoints=K, num_labels=LABELS, d_model=8, encoder_layers=1,
                       decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
                       encoder_ffn_dim=16, decoder_ffn_dim=16)


def fixed_signature(model, k=K):
    forward = tf.function(lambda kp, m: model({"keypoints": kp, "attention_mask": m},
                                              training=False))
    return forward.get_concrete_function(
        tf.TensorSpec([1, FRAMES, k, 2], tf.float32, name="keypoints"),
        tf.TensorSpec([1, FRAMES], tf.float32, name="attention_mask"))


def to_tflite(model, k=K) -> bytes:
    """fp32 TFLite with the deployed fixed [1, 64, K, 2] / [1, 64] signature."""
    return tf.lite.TFLiteConverter.from_concrete_functions([fixed_signature(model, k)],
                                                           model).convert()


def batch(n=12, k=K, seed=1):
    rng = np.random.default_rng(seed)
    x = rng.random((n, FRAMES, k, 2), dtype=np.float32)
    lengths = rng.integers(5, 40, n)
    mask = (np.arange(FRAMES)[None] < lengths[:, None]).astype(np.float32)
    return x * mask[..., None, None], mask, rng.integers(0, LABELS, n).astype(np.int32)


@pytest.fixture(scope="module")
def model():
    return tiny_model()


# ------------------------------------------------------------------------------------ metrics

def test_metrics_three_classes_by_hand():
    y = [0, 0, 0, 1, 1, 2]
    pred = [0, 0, 1, 1, 2, 2]
    logits = np.eye(3)[pred] * 2.0 - 1.0
    m = ev.metrics(y, logits, 3)
    assert m["confusion"] == [[2, 1, 0], [0, 1, 1], [0, 0, 1]]
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == 1.0                      # top-min(5, 3): every label is in the top 3
    assert m["per_class_acc"] == pytest.approx([2 / 3, 1 / 2, 1.0])
    # F1 = 2TP / (2TP + FP + FN): class 0: 4/5, class 1: 2/4, class 2: 2/3
    assert m["macro_f1"] == pytest.approx((4 / 5 + 2 / 4 + 2 / 3) / 3)
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    assert ev.metrics(y, probs, 3) == m


def test_metrics_absent_classes_are_not_fake_zeros():
    # class 2 is predicted but never true; class 3 is neither true nor predicted
    m = ev.metrics([0, 0, 1], np.eye(4)[[0, 2, 1]], 4)
    assert m["per_class_acc"] == [0.5, 1.0, None, None]
    assert m["macro_f1"] == pytest.approx((2 / 3 + 1.0 + 0.0) / 3)
    assert json.loads(json.dumps(m)) == m        # JSON-safe: None, never NaN


def test_metrics_top5_and_ties():
    scores = np.array([[9, 1, 2, 3, 4, 5, 6],    # true 0 ranked 1st
                       [1, 9, 8, 7, 6, 5, 4],    # true 0 ranked 7th
                       [5, 5, 0, 0, 0, 0, 0]])   # true 1 tied first: the lower id wins
    m = ev.metrics([0, 0, 1], scores, 7)
    assert m["top1"] == pytest.approx(1 / 3)
    assert m["top5"] == pytest.approx(2 / 3)
    assert m["confusion"][1] == [1, 0, 0, 0, 0, 0, 0]
    scores[1] = [5, 9, 8, 7, 6, 1, 0]            # true 0 now ranked 5th
    assert ev.metrics([0, 0, 1], scores, 7)["top5"] == 1.0


def test_metrics_rejects_bad_shapes():
    with pytest.raises(ValueError, match=r"\[2, 3\]"):
        ev.metrics([0, 1], np.zeros((2, 4)), 3)
    with pytest.raises(ValueError, match="labels"):
        ev.metrics([0, 3], np.zeros((2, 3)), 3)


# ------------------------------------------------------------------------- Keras vs TFLite

def test_keras_and_tflite_agree(model):
    x, mask, y = batch()
    keras_fn, tflite_fn = ev.keras_predict_fn(model, batch_size=5), tflite.predict_fn(
        to_tflite(model))
    np.testing.assert_allclose(tflite_fn(x, mask), keras_fn(x, mask), atol=1e-4)
    assert ev.evaluate(tflite_fn, x, mask, y, LABELS) == ev.evaluate(keras_fn, x, mask, y, LABELS)


@pytest.mark.slow
def test_keras_and_tflite_agree_on_signbart_export():
    """The real model through ``quantize.to_tflite``: what every published number runs on."""
    from signbart.model import build_model
    from signbart.quantize import to_tflite as export

    net = build_model(tiny_signbart())
    x, mask, y = batch()
    keras_fn, tflite_fn = ev.keras_predict_fn(net), tflite.predict_fn(export(net))
    np.testing.assert_allclose(tflite_fn(x, mask), keras_fn(x, mask), atol=1e-4)
    assert ev.evaluate(tflite_fn, x, mask, y, LABELS) == ev.evaluate(keras_fn, x, mask, y, LABELS)


def test_tflite_pads_and_crops_frames(model, tmp_path):
    x, mask, _ = batch()                         # every sample is shorter than 40 frames
    path = tmp_path / "m.tflite"
    path.write_bytes(to_tflite(model))
    fn = tflite.predict_fn(path)
    full = fn(x, mask)
    np.testing.assert_array_equal(fn(x[:, :40], mask[:, :40]), full)
    longer = np.pad(x, [(0, 0), (0, 6), (0, 0), (0, 0)]), np.pad(mask, [(0, 0), (0, 6)])
    np.testing.assert_array_equal(fn(*longer), full)
    with pytest.raises(ValueError, match=f"{K}, 2"):
        fn(x[..., :2, :], mask)


def test_tflite_with_dynamic_shapes(model):
    """A ``from_keras_model`` export keeps [-1, -1, K, 2]; it is run at [1, 64]."""
    x, mask, _ = batch()
    blob = tf.lite.TFLiteConverter.from_keras_model(model).convert()
    np.testing.assert_allclose(tflite.predict_fn(blob)(x, mask),
                               ev.keras_predict_fn(model)(x, mask), atol=1e-4)


def test_tflite_int8_inputs_and_outputs(model):
    x, mask, _ = batch(n=40)

    def representative():
        for i in range(len(x)):
            yield {"keypoints": x[i:i + 1], "attention_mask": mask[i:i + 1]}

    converter = tf.lite.TFLiteConverter.from_concrete_functions([fixed_signature(model)], model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    blob = converter.convert()
    interpreter = tf.lite.Interpreter(model_content=blob)
    assert {d["dtype"] for d in interpreter.get_input_details()} == {np.int8}
    assert interpreter.get_output_details()[0]["dtype"] == np.int8

    reference = ev.keras_predict_fn(model)(x, mask)
    logits = tflite.predict_fn(blob)(x, mask)
    assert logits.dtype == np.float32
    spread = reference.max() - reference.min()
    assert np.abs(logits - reference).max() < 0.05 * spread
    assert (logits.argmax(1) == reference.argmax(1)).mean() >= 0.9


# ---------------------------------------------------------------------------- cost and speed

def test_count_flops_of_dense_model_by_hand(model):
    t, h = FRAMES, HIDDEN
    expected = (2 * t * (K * 2) * h      # Dense K*2 -> H on every frame: MatMul, 2 per mult-add
                + t * h                  # its BiasAdd
                + t * h                  # times the mask (Mul)
                + t * h                  # GlobalAveragePooling1D: Mean, 1 per input element
                + 2 * h * LABELS         # Dense H -> labels: MatMul
                + LABELS)                # its BiasAdd
    assert ev.count_flops(model) == expected
    assert ev.count_flops(model, max_frames=32) < expected


def test_count_flops_of_signbart():
    from signbart.model import build_model

    cfg = tiny_signbart()
    net = build_model(cfg)
    flops = ev.count_flops(net)
    # at least the frame-wise Dense layers: embeddings (K -> d) and 4 + 8 projections plus
    # two FFNs (d -> f -> d), each frame a multiply-add per kernel weight
    d, f = cfg.d_model, cfg.encoder_ffn_dim
    assert flops > 2 * FRAMES * (2 * K * d + 12 * d * d + 4 * d * f)
    assert ev.count_flops(net, max_frames=32) < flops


def test_latency_is_positive_and_ordered(model):
    lat = tflite.latency(to_tflite(model), n=10, warmup=2)
    assert set(lat) == {"latency_ms_p50", "latency_ms_p90"}
    assert 0 < lat["latency_ms_p50"] <= lat["latency_ms_p90"] < float("inf")


# ----------------------------------------------------------------------- a deployed file

@pytest.fixture(scope="module")
def deployed(synth_dataset, tmp_path_factory):
    """A tiny model fitted to three right-hand points, with its sidecar, as a trial leaves it."""
    dataset = open_dataset(synth_dataset)
    labels = len(dataset.labels)
    variant = VariantConfig(name="hand3", num_labels=labels,
                            keypoints={"right_hand": ["wrist", "thumb_tip", "index_finger_tip"]})
    net = tiny_model(labels=labels)
    data = prepare(dataset, np.arange(len(dataset)), variant, max_frames=FRAMES)
    net.compile(keras.optimizers.Adam(0.03),
                keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    net.fit({"keypoints": data.x, "attention_mask": data.mask}, data.y, epochs=40, verbose=0)
    path = tmp_path_factory.mktemp("trial") / "model.tflite"
    blob = to_tflite(net)
    tflite.ModelCard(variant=variant, labels=tuple(dataset.labels),
                     glosses=tuple(dataset.glosses), layout=dataset.layout.to_dict(),
                     max_frames=FRAMES, quant="fp32", synthetic=dataset.synthetic,
                     params=net.count_params(),
                     flops=12345).write(path, blob)
    return dataset, variant, net, path


def test_evaluate_tflite_file(deployed, tmp_path):
    dataset, variant, net, path = deployed
    out = tmp_path / "eval" / "user02.json"
    result = ev.evaluate_tflite_file(path, variant, dataset.path, holdout="user02", out_json=out)

    test = np.flatnonzero(dataset.manifest["signer"] == "user02")
    data = prepare(dataset, test, variant, max_frames=FRAMES)
    expected = ev.evaluate(ev.keras_predict_fn(net), data.x, data.mask, data.y,
                           len(dataset.labels))
    assert {k: result[k] for k in expected} == expected
    assert sum(any(column) for column in zip(*result["confusion"])) > 1  # not one class for all
    assert result["n_test"] == len(test) == 30         # 10 classes x 3 repetitions
    assert result["labels"] == dataset.labels
    assert result["model_bytes"] == path.stat().st_size
    assert (result["params"], result["flops"]) == (net.count_params(), 12345)
    assert 0 < result["latency_ms_p50"] <= result["latency_ms_p90"]
    assert set(result) <= set(COLUMNS)           # drops straight into a result row
    assert json.loads(out.read_text()) == result


def test_evaluate_tflite_file_variant_from_sidecar(deployed):
    dataset, _, _, path = deployed
    everyone = ev.evaluate_tflite_file(path, None, dataset)
    assert everyone["n_test"] == len(dataset)
    assert everyone["holdout"] is None


def test_evaluate_tflite_file_errors_name_the_culprit(deployed, tmp_path):
    dataset, variant, _, path = deployed
    missing = tmp_path / "nope.tflite"
    with pytest.raises(UserError, match="nope.tflite"):
        ev.evaluate_tflite_file(missing, variant, dataset)
    with pytest.raises(UserError, match=r"'user99'.*user01, user02, user03, user04"):
        ev.evaluate_tflite_file(path, variant, dataset, holdout="user99")
    other = VariantConfig(name="other", num_labels=len(dataset.labels),
                          keypoints={"left_hand": ["wrist", "thumb_tip", "index_finger_tip"]})
    with pytest.raises(UserError, match="hand3"):
        ev.evaluate_tflite_file(path, other, dataset)
    card, _ = tflite.ModelCard.read(path)
    relabelled = tmp_path / "relabelled.tflite"
    dataclasses.replace(card, labels=card.labels[::-1]).write(relabelled, path.read_bytes())
    with pytest.raises(UserError, match="relabelled.tflite: trained on labels"):
        ev.evaluate_tflite_file(relabelled, variant, dataset)
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    with pytest.raises(UserError, match="junk.tflite"):
        tflite.predict_fn(junk)
