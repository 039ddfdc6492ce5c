import dataclasses
from pathlib import Path

import pytest

from signbart.config import (
    AugmentConfig,
    ModelConfig,
    TrainConfig,
    VariantConfig,
    from_dict,
    load_variant,
)
from signbart.errors import ConfigError
from signbart.layouts import get_layout

CONFIGS = sorted((Path(__file__).resolve().parents[1] / "configs").glob("*.yaml"))
EXPECTED_K = {"arabic-asl-65kpts": 65, "arabic-asl-42kpts-hands": 42,
              "arabic-asl-44kpts-hands-wrists": 44, "arabic-asl-44kpts-hands-shoulders": 44,
              "arabic-asl-46kpts-hands-shoulders-wrists": 46,
              "arabic-asl-48kpts-hands-shoulders-elbows-wrists": 48, "arabic-asl-90kpts": 90,
              "lsa64-63kpts": 63, "arabic-asl-65kpts-framed": 65,
              "arabic-asl-42kpts-hands-framed": 42, "arabic-asl-44kpts-hands-wrists-framed": 44,
              "arabic-asl-44kpts-hands-shoulders-framed": 44,
              "arabic-asl-46kpts-hands-shoulders-wrists-framed": 46,
              "arabic-asl-48kpts-hands-shoulders-elbows-wrists-framed": 48,
              "arabic-asl-90kpts-framed": 90, "arabic-asl-65kpts-framed-anchored": 79,
              "arabic-asl-65kpts-framed-light": 65,
              "arabic-asl-46kpts-hands-shoulders-wrists-framed-shape": 46}
# Shipped settings: classifier dropout 0.1, no layer-drop, handedness auto (see their headers).
# arabic-asl-65kpts-framed keeps the published settings: it is the regularisation arm.
LIGHT = {stem for stem in EXPECTED_K if stem.endswith("-framed")} - {"arabic-asl-65kpts-framed"} | {
    "arabic-asl-65kpts-framed-light", "arabic-asl-65kpts-framed-anchored",
    "arabic-asl-46kpts-hands-shoulders-wrists-framed-shape"}


def test_framed_variants_select_their_base_keypoints():
    """A framed variant differs from its base in framing and the shipped settings only, so the
    keypoint comparison (issue 27) compares keypoints."""
    framed = [p for p in CONFIGS if p.stem.endswith("-framed")]
    assert len(framed) == 7
    for path in framed:
        v = load_variant(path)
        base = load_variant(path.with_name(path.stem.removesuffix("-framed") + ".yaml"))
        assert v.framing is not None, path.name
        assert v.handedness == ("auto" if path.stem in LIGHT else "as-extracted"), path.name
        assert dataclasses.replace(v, name=base.name, description=base.description, framing=None,
                                   handedness=base.handedness, model=base.model) == base, path.name


def test_every_literature_variant_is_present():
    assert {p.stem for p in CONFIGS} == set(EXPECTED_K)


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_with_published_hyperparameters(path):
    variant = load_variant(path)
    m = variant.model_config()
    assert variant.name == path.stem
    assert m.num_keypoints == EXPECTED_K[path.stem]
    assert m.num_labels == (64 if path.stem.startswith("lsa64") else 10)
    assert (m.d_model, m.encoder_layers, m.decoder_layers, m.encoder_attention_heads,
            m.encoder_ffn_dim, m.max_position_embeddings) == (144, 2, 2, 8, 144, 256)
    light = path.stem in LIGHT    # classifier dropout 0.1, no layer-drop (see their headers)
    assert (m.dropout, m.activation_dropout, m.attention_dropout, m.classifier_dropout,
            m.encoder_layerdrop, m.decoder_layerdrop) == ((0.3, 0.3, 0.0, 0.1, 0.0, 0.0) if light
                                                          else (0.3, 0.3, 0.0, 0.7, 0.4, 0.4))


def test_wrists_variant_selects_pose_15_and_16():
    v = load_variant(CONFIGS[[p.stem for p in CONFIGS].index("arabic-asl-44kpts-hands-wrists")])
    keys = v.keys(get_layout("holistic-65"))
    assert keys[:2] == ["pose.left_wrist", "pose.right_wrist"]
    assert [k.source_index for k in get_layout("holistic-65").keypoints
            if k.key in keys[:2]] == [15, 16]


def _write(tmp_path, text):
    p = tmp_path / "v.yaml"
    p.write_text(text)
    return p


@pytest.mark.parametrize("text, message", [
    ("name: x\nbogus: 1\n", "unknown key 'bogus'"),
    ("name: x\nkeypoints: {pose: [11, 99]}\n", "99 is not in layout"),
    ("name: x\nkeypoints: {pose: [11, left_shoulder]}\n", "duplicate keypoint 'pose.left_shoulder'"),
    ("name: x\nnum_labels: 1\n", "num_labels must be in [2, 100000], got 1"),
    ("name: x\nkeypoints: {face: all}\n", "has no face points"),
    ("name: x\nkeypoints: {tail: all}\n", "unknown group 'tail'"),
    ("name: x\nmodel: {d_model: 10, encoder_attention_heads: 3}\n", "divisible"),
    ("name: x\nmodel: {dropuot: 0.1}\n", "unknown key 'dropuot'"),
    ("name: x\nlayout: holistic-33\n", "unknown layout"),
    ("name: [x\n", "not valid YAML"),
])
def test_bad_variant_config_names_file_and_field(tmp_path, text, message):
    path = _write(tmp_path, text)
    with pytest.raises(ConfigError) as e:
        load_variant(path)
    assert message in str(e.value)
    assert str(path) in str(e.value)


def test_missing_config_file_is_a_clear_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot read"):
        load_variant(tmp_path / "nope.yaml")


def test_nested_train_config_types_are_checked():
    with pytest.raises(ConfigError, match=r"f\.yaml\.epochs: expected an integer"):
        from_dict(TrainConfig, {"epochs": "many"}, "f.yaml")
    with pytest.raises(ConfigError, match=r"augment: time_warp must be"):
        from_dict(TrainConfig, {"augment": {"time_warp": [1.5, 1.1]}}, "f.yaml")
    cfg = from_dict(TrainConfig, {"augment": {"hand_drop": 0.5, "speed": [0.8, 1.2]}}, "f.yaml")
    assert cfg.augment == AugmentConfig(hand_drop=0.5, speed=(0.8, 1.2))


def test_variant_model_overrides_reach_model_config():
    v = VariantConfig(name="tiny", model={"d_model": 16, "encoder_attention_heads": 2,
                                          "decoder_attention_heads": 2})
    assert v.model_config() == ModelConfig(num_keypoints=65, d_model=16,
                                           encoder_attention_heads=2, decoder_attention_heads=2)


def test_readme_states_the_configs_hyperparameters():
    """The README's model description must match what the configs actually build."""
    readme = (CONFIGS[0].parents[1] / "README.md").read_text()
    m = load_variant(CONFIGS[[p.stem for p in CONFIGS].index("arabic-asl-65kpts")]).model_config()
    for fact in (f"d_model {m.d_model}", f"{m.encoder_layers} + {m.decoder_layers} layers",
                 f"{m.encoder_attention_heads} heads", f"FFN {m.encoder_ffn_dim}",
                 f"dropout {m.dropout}", f"classifier dropout {m.classifier_dropout}",
                 f"layerdrop {m.encoder_layerdrop}", f"learned positions ({m.max_position_embeddings})"):
        assert fact in readme, fact
    for stem in EXPECTED_K:
        assert stem.removeprefix("arabic-asl") in readme
