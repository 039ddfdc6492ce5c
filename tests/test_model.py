"""SignBART graph: shapes, flat Dense layers, masking, LayerDrop, serialisation, TFLite parity."""

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from signbart import model as M
from signbart.config import ModelConfig, load_variant
from signbart.tfkeras import keras, seed_everything, tf

CONFIGS = Path(__file__).resolve().parents[1] / "configs"

TINY = ModelConfig(num_keypoints=5, num_labels=3, d_model=16, encoder_layers=1, decoder_layers=2,
                   encoder_attention_heads=2, decoder_attention_heads=4, encoder_ffn_dim=24,
                   decoder_ffn_dim=8, max_position_embeddings=64)


def _inputs(cfg: ModelConfig, lengths, frames: int, seed: int = 0):
    """Random keypoints zero-padded after each length, and the matching mask."""
    rng = np.random.default_rng(seed)
    x = np.zeros((len(lengths), frames, cfg.num_keypoints, 2), np.float32)
    mask = np.zeros((len(lengths), frames), np.float32)
    for i, n in enumerate(lengths):
        x[i, :n] = rng.random((n, cfg.num_keypoints, 2))
        mask[i, :n] = 1
    return {"keypoints": x, "attention_mask": mask}


def _logits(model, inputs, training=False):
    return model(inputs, training=training).numpy()


@pytest.mark.parametrize("cfg", [
    TINY,
    dataclasses.replace(TINY, encoder_layers=0, decoder_layers=1),
    dataclasses.replace(TINY, encoder_layers=3, decoder_layers=1, num_labels=7),
])
def test_shapes_and_flat_dense_layers(cfg):
    model = M.build_model(cfg)
    assert _logits(model, _inputs(cfg, [7, 3], 9)).shape == (2, cfg.num_labels)
    dense = M.dense_layers(model)
    assert len(dense) == M.expected_dense_count(cfg) == (
        2 + 6 * cfg.encoder_layers + 10 * cfg.decoder_layers + 1)
    # Nothing nested: every Dense anywhere in the model is a top-level layer.
    assert {id(m) for m in model.submodules if isinstance(m, keras.layers.Dense)} == {
        id(d) for d in dense}


def test_reference_parameter_count():
    """65 keypoints, 10 labels, default hyper-parameters: the reference reports ~766k."""
    assert M.count_params(M.build_model(ModelConfig(num_keypoints=65, num_labels=10))) == 766_378


def test_every_config_file_builds():
    files = sorted(CONFIGS.glob("*.yaml"))
    assert files, f"{CONFIGS} has no variant files"
    for path in files:
        cfg = load_variant(path).model_config()
        model = M.build_model(cfg)
        assert model.output_shape == (None, cfg.num_labels), path.name
        assert len(M.dense_layers(model)) == M.expected_dense_count(cfg), path.name


def test_save_load_gives_identical_logits(tmp_path):
    model = M.build_model(TINY)
    inputs = _inputs(TINY, [6, 9], 9)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = M.load_model(path)  # safe_mode stays on: no Lambda layers, no pickle
    np.testing.assert_array_equal(_logits(loaded, inputs), _logits(model, inputs))


def test_padding_does_not_change_logits():
    model = M.build_model(TINY)
    short = _inputs(TINY, [30], 30)
    ref = _logits(model, short)
    for frames in (40, 64):
        padded = _inputs(TINY, [30], frames)
        np.testing.assert_array_equal(padded["keypoints"][:, :30], short["keypoints"])
        np.testing.assert_allclose(_logits(model, padded), ref, atol=1e-5)


def test_classifier_reads_the_last_valid_frame():
    hidden = tf.reshape(tf.range(2 * 6 * 3, dtype=tf.float32), [2, 6, 3])
    mask = tf.constant([[1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0]], tf.float32)
    picked = M.LastValidFrame()([hidden, mask]).numpy()
    np.testing.assert_array_equal(picked, hidden.numpy()[[0, 1], [2, 4]])
    empty = M.LastValidFrame()([hidden, tf.zeros([2, 6])]).numpy()
    np.testing.assert_array_equal(empty, hidden.numpy()[:, 0])

    model = M.build_model(TINY)
    inputs = _inputs(TINY, [5], 8)
    ref = _logits(model, inputs)
    garbage = {k: v.copy() for k, v in inputs.items()}
    garbage["keypoints"][0, 5:] = 7.0  # padded frames: ignored
    np.testing.assert_allclose(_logits(model, garbage), ref, atol=1e-5)
    moved = {k: v.copy() for k, v in inputs.items()}
    moved["keypoints"][0, 4] += 0.5  # the last real frame: read
    assert np.abs(_logits(model, moved) - ref).max() > 1e-3


def test_attention_ignores_masked_and_future_keys():
    rng = np.random.default_rng(1)
    q, k, v = (tf.constant(rng.normal(size=(1, 6, 8)), tf.float32) for _ in range(3))
    mask = tf.constant([[1, 1, 1, 1, 0, 0]], tf.float32)
    k2 = tf.concat([k[:, :4], k[:, 4:] + 5.0], axis=1)
    v2 = tf.concat([v[:, :4], v[:, 4:] - 5.0], axis=1)
    core = M.AttentionCore(num_heads=2)
    np.testing.assert_allclose(core([q, k2, v2, mask]), core([q, k, v, mask]), atol=1e-6)

    causal = M.AttentionCore(num_heads=2, causal=True)
    ones = tf.ones([1, 6])
    k3 = tf.concat([k[:, :3], k[:, 3:] * 3.0], axis=1)
    v3 = tf.concat([v[:, :3], v[:, 3:] + 1.0], axis=1)
    a, b = causal([q, k, v, ones]).numpy(), causal([q, k3, v3, ones]).numpy()
    np.testing.assert_allclose(b[:, :3], a[:, :3], atol=1e-6)  # queries 0..2 see keys 0..2 only
    assert np.abs(b[:, 3:] - a[:, 3:]).max() > 1e-3


def test_layerdrop_only_while_training():
    seed_everything(0)
    no_dropout = {"dropout": 0.0, "activation_dropout": 0.0, "attention_dropout": 0.0,
                  "classifier_dropout": 0.0}
    dropping = M.build_model(dataclasses.replace(TINY, encoder_layerdrop=0.99,
                                                 decoder_layerdrop=0.99, **no_dropout))
    keeping = M.build_model(dataclasses.replace(TINY, encoder_layerdrop=0.0,
                                                decoder_layerdrop=0.0, **no_dropout))
    keeping.set_weights(dropping.get_weights())
    inputs = _inputs(TINY, [9, 4], 9)
    first = _logits(dropping, inputs)
    np.testing.assert_array_equal(_logits(dropping, inputs), first)
    np.testing.assert_allclose(_logits(keeping, inputs), first, atol=1e-6)
    # Three layers, each skipped with p=0.99: all kept with p=1e-6. Without dropout the two
    # models agree to ~1e-7 unless a layer was skipped; freshly initialised layers move the
    # logits by ~1e-4, so 1e-5 separates the cases.
    np.testing.assert_allclose(_logits(keeping, inputs, training=True), first, atol=1e-6)
    assert np.abs(_logits(dropping, inputs, training=True) - first).max() > 1e-5


@pytest.mark.parametrize("layer", [
    M.SplitCoordinates(name="split"),
    M.PositionalEmbedding(max_positions=12, offset=3, initializer_range=0.1, name="pos"),
    M.AttentionCore(num_heads=4, dropout=0.25, causal=True, name="core"),
    M.LayerDrop(rate=0.3, seed=7, name="drop"),
    M.LastValidFrame(name="last"),
    M.HandShape(slots=[0, 21], name="shape"),
], ids=lambda layer: type(layer).__name__)
def test_custom_layer_config_round_trip(layer):
    config = layer.get_config()
    clone = type(layer).from_config(config)
    assert clone.get_config() == config
    registered = keras.saving.get_registered_object(f"signbart>{type(layer).__name__}")
    assert registered is type(layer)
    restored = keras.layers.deserialize(keras.layers.serialize(layer))
    assert type(restored) is type(layer) and restored.get_config() == config


def test_bad_values_fail_early_with_their_name():
    with pytest.raises(ValueError, match="decoder_layers"):
        M.build_model(dataclasses.replace(TINY, decoder_layers=0))
    with pytest.raises(ValueError, match="num_heads"):
        M.AttentionCore(num_heads=0)
    with pytest.raises(ValueError, match="rate"):
        M.LayerDrop(rate=1.0)
    with pytest.raises(ValueError, match="max_positions"):
        M.PositionalEmbedding(max_positions=0)
    with pytest.raises(ValueError, match="divisible"):
        M.AttentionCore(num_heads=3)([tf.zeros([1, 2, 8])] * 3 + [tf.ones([1, 2])])
    with pytest.raises(ValueError, match="exceed max_positions"):
        M.PositionalEmbedding(max_positions=4)(tf.zeros([1, 5, 8]))


def _hand(rng):
    """21 points of a plausible hand in a box: a palm, then each finger's four joints."""
    base = np.array([[0.5, 0.9], [0.4, 0.8], [0.42, 0.62], [0.5, 0.6], [0.58, 0.62], [0.65, 0.66]])
    points = [base[0]]
    for f in range(5):
        step = (base[f + 1] - base[0]) * rng.uniform(0.2, 0.4)
        points += [base[f + 1] + step * i for i in range(4)]
    return np.array(points, np.float32)


def test_hand_shape_measures_shape_not_size_place_turn_or_mirror():
    rng = np.random.default_rng(0)
    hand = _hand(rng)
    layer = M.HandShape(slots=[0])
    feats = layer(hand[None, None]).numpy()[0, 0]                      # [32]
    palm = np.linalg.norm(hand[9] - hand[0])
    assert feats.shape == (32,)
    np.testing.assert_allclose(feats[0], np.linalg.norm(hand[4] - hand[8]) / palm, rtol=1e-5)
    np.testing.assert_allclose(feats[30:], (hand[9] - hand[0]) / palm, rtol=1e-5)
    c, s = np.cos(0.7), np.sin(0.7)
    moved = (hand - 0.5) @ np.array([[c, s], [-s, c]], np.float32) * 0.6 + [0.45, 0.55]
    mirrored = np.stack([1 - hand[:, 0], hand[:, 1]], -1)
    for other in (moved, mirrored):
        np.testing.assert_allclose(layer(other[None, None].astype(np.float32)).numpy()[0, 0, :30],
                                   feats[:30], atol=1e-5)
    bent = hand.copy()
    bent[8] = bent[6] + (bent[6] - bent[7])                         # index tip folded back
    changed = np.abs(layer(bent[None, None]).numpy()[0, 0] - feats) > 1e-3
    assert changed[0] and not changed[2]  # thumb-index distance moves, thumb-ring does not
    lost = hand.copy()
    lost[12] = 0                                                        # one point not seen
    assert not layer(np.stack([lost, np.zeros_like(hand)])[None]).numpy().any()


def test_hand_shape_is_set_from_the_variant_and_checked():
    from signbart.config import ConfigError, variant_from_dict

    shape = {"name": "v", "keypoints": {"pose": [0], "left_hand": "all", "right_hand": "all"},
             "hand_shape": True}
    cfg = variant_from_dict(shape).model_config()
    assert cfg.hand_slots == (1, 22) and cfg.num_keypoints == 43
    model = M.build_model(cfg)
    assert model.get_layer("hand_shape").slots == (1, 22)
    assert _logits(model, _inputs(cfg, [5], 8)).shape == (1, 10)
    with pytest.raises(ConfigError, match="hand_shape"):
        variant_from_dict({**shape, "keypoints": {"left_hand": [0, 4, 8]}})
    with pytest.raises(ValueError, match="hand_slots"):
        dataclasses.replace(TINY, hand_slots=(0,))


@pytest.mark.slow
def test_tflite_fp32_matches_keras_on_a_real_shaped_input():
    from signbart.quantize import to_tflite

    cfg = ModelConfig(num_keypoints=65, num_labels=10, hand_slots=(23, 44))
    model = M.build_model(cfg)
    inputs = _inputs(cfg, [41], 64, seed=3)
    interpreter = tf.lite.Interpreter(model_content=to_tflite(model, max_frames=64))
    logits = interpreter.get_signature_runner("serving_default")(**inputs)["logits"]
    assert logits.shape == (1, 10)
    np.testing.assert_allclose(logits, _logits(model, inputs), atol=1e-4)
