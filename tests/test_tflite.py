"""The model card: embedded in the .tflite it describes, read back typed, and its readable copy
beside the model held to it."""

import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO
from test_evaluate import tiny_model
from videos import photo_video

from signbart import tflite
from signbart.config import ModelConfig, VariantConfig
from signbart.errors import ConfigError, UserError
from signbart.evaluate import evaluate_tflite_file
from signbart.layouts import get_layout
from signbart.model import build_model
from signbart.predict import predict_videos
from signbart.quantize import full_int8, ptq_dynamic, to_tflite
from signbart.tfkeras import seed_everything

FRAMES = 8
HAND3 = VariantConfig(name="hand3", num_labels=4,
                      keypoints={"right_hand": ["wrist", "thumb_tip", "index_finger_tip"]})


@pytest.fixture(scope="module")
def blob() -> bytes:
    return to_tflite(tiny_model(k=3, labels=4), FRAMES)


def card_for(**over) -> tflite.ModelCard:
    fields = dict(variant=HAND3, labels=("A", "B", "C", "D"), glosses=("a", "b", "c", "d"),
                  layout=get_layout("holistic-65").to_dict(), max_frames=FRAMES, quant="fp32",
                  synthetic=True, git_sha="abc", config_hash="123", params=12, flops=34)
    return tflite.ModelCard(**{**fields, **over})


def write(tmp_path, blob, card, name="model_fp32.tflite"):
    path = tmp_path / name
    card.write(path, blob)
    return path


def test_card_round_trips_and_bad_cards_name_the_file_and_field(tmp_path, blob):
    path = write(tmp_path, blob, card_for())
    card, content = tflite.ModelCard.read(path)
    assert card == card_for() and content == path.read_bytes() != blob
    assert tflite.embedded_card(content) == card.to_json() == path.with_suffix(".json").read_text()
    assert tflite.embedded_card(blob) is None and tflite.embedded_card(b"junk") is None
    assert tflite.ModelCard.from_json(card.to_json(), "x") == card
    text = card.to_json()
    for bad, message in (
            (text.replace('"quant": "fp32"', '"quant": "int4"'), r"m\.json.*quant.*'int4'"),
            (text.replace('"synthetic": true', '"synthetic": "yes"'),
             r"m\.json\.synthetic: expected true/false"),
            (text.replace('"quant"', '"quantization"'), r"m\.json: unknown key 'quantization'"),
            ("[1, 2]", r"m\.json: expected a mapping"),
            ("{", r"m\.json: not a model card")):
        with pytest.raises(UserError, match=message):
            tflite.ModelCard.from_json(bad, "m.json")
    with pytest.raises(ConfigError, match="max_frames"):
        tflite.ModelCard.from_json(text.replace('"max_frames"', '"frames"'), "m.json")
    bare = tmp_path / "bare.tflite"          # a converter's file, no card inside
    bare.write_bytes(blob)
    with pytest.raises(UserError, match=r"bare\.tflite: no model card inside"):
        tflite.ModelCard.read(bare)


def test_the_model_is_one_file_its_readable_copy_is_optional(tmp_path, blob):
    path = write(tmp_path, blob, card_for())
    path.with_suffix(".json").unlink()
    card, _ = tflite.ModelCard.read(path)
    assert card == card_for()


@pytest.mark.parametrize("convert", [to_tflite, ptq_dynamic, "int8"])
def test_a_model_with_its_card_embedded_gives_the_same_outputs(tmp_path, convert):
    seed_everything(0)
    model = build_model(ModelConfig(num_keypoints=3, num_labels=4, d_model=16, encoder_layers=1,
                                    decoder_layers=1, encoder_attention_heads=2,
                                    decoder_attention_heads=2, encoder_ffn_dim=16,
                                    decoder_ffn_dim=16))
    rng = np.random.default_rng(0)
    x = rng.random((6, FRAMES, 3, 2), dtype=np.float32)
    mask = np.ones((6, FRAMES), np.float32)
    mask[3:, 5:] = 0
    raw = (full_int8(model, [(x[i:i + 1], mask[i:i + 1]) for i in range(6)], FRAMES)
           if convert == "int8" else convert(model, FRAMES))
    path = write(tmp_path, raw, card_for(quant="int8" if convert == "int8" else "fp32"))
    _, content = tflite.ModelCard.read(path)
    tflite.check(content, x, mask)
    assert np.array_equal(tflite.Runner(raw).predict(x, mask),
                          tflite.Runner(content).predict(x, mask))
    assert tflite.op_types(raw) == tflite.op_types(content)


def edit(copy_path, change) -> None:
    card = json.loads(copy_path.read_text())
    change(card)
    copy_path.write_text(json.dumps(card, indent=1))


def dataset_model(tmp_path, dataset) -> Path:
    """A tiny 3-keypoint model with its card, for ``dataset``'s classes: what evaluate and
    predict accept on that dataset."""
    labels = json.loads((dataset / "labels.json").read_text())
    variant = VariantConfig(name="hands", num_labels=len(labels["labels"]),
                            keypoints={"left_hand": ["wrist"], "right_hand": ["wrist", "thumb_tip"]})
    card = card_for(variant=variant, labels=tuple(labels["labels"]),
                    glosses=tuple(labels["glosses"]))
    return write(tmp_path, to_tflite(tiny_model(k=3, labels=len(card.labels)), FRAMES), card)


EDITS = {
    # the probe's edit: the keypoint groups in another order (left/right hands swapped)
    "variant.keypoints": lambda c: c["variant"].update(keypoints=dict(
        reversed(list(c["variant"]["keypoints"].items())))),
    "labels": lambda c: c.update(labels=c["labels"][::-1]),
    "glosses": lambda c: c["glosses"].__setitem__(1, "thank you"),
}


@pytest.mark.parametrize("field", EDITS)
def test_an_edited_card_copy_is_refused_by_evaluate_and_predict(tmp_path, synth_dataset, field):
    path = dataset_model(tmp_path, synth_dataset)
    copy = path.with_suffix(".json")
    edit(copy, EDITS[field])
    sentence = (f"{copy}: field '{field}' differs from the card embedded in {path} (the copy "
                "was edited, or belongs to another model): restore or delete it")
    with pytest.raises(UserError, match=f"^{re.escape(sentence)}$"):
        evaluate_tflite_file(path, None, synth_dataset, holdout="user01")
    with pytest.raises(UserError, match=f"^{re.escape(sentence)}$"):
        predict_videos([tmp_path / "never-opened.mp4"], path)
    if field != "variant.keypoints":       # the commands as typed: once is enough
        return
    for command in (["evaluate", "--model", path, "--data", synth_dataset],
                    ["predict", tmp_path / "never-opened.mp4", "--model", path]):
        p = subprocess.run([sys.executable, "-m", "signbart.cli", *map(str, command)],
                           capture_output=True, text=True, cwd=REPO, check=False)
        assert p.returncode == 2 and "Traceback" not in p.stderr
        assert p.stderr.strip().splitlines()[-1] == f"signbart {command[0]}: error: {sentence}"


def test_evaluate_prints_no_tensorflow_cpp_lines(tmp_path, synth_dataset):
    """The interpreter's "Created TensorFlow Lite XNNPACK delegate" and TensorFlow's start-up
    lines are C++ prints past Python's logging: the default output has none of them."""
    path = dataset_model(tmp_path, synth_dataset)
    # as a user's shell has it: an earlier in-process sweep in this session may have set it
    default_env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    p = subprocess.run([sys.executable, "-m", "signbart.cli", "evaluate", "--model", str(path),
                        "--data", str(synth_dataset), "--holdout", "user01"],
                       capture_output=True, text=True, cwd=REPO, check=False, env=default_env)
    assert p.returncode == 0, p.stderr[-2000:]
    for line in ("XNNPACK", "cuInit", "oneDNN", "absl::InitializeLog"):
        assert line not in p.stderr + p.stdout


def test_a_copy_of_another_models_card_is_refused(tmp_path, blob):
    path = write(tmp_path, blob, card_for())
    other = write(tmp_path, blob, card_for(git_sha="def"), name="other.tflite")
    path.with_suffix(".json").write_text(other.with_suffix(".json").read_text())
    with pytest.raises(UserError, match=r"field 'git_sha' differs from the card embedded"):
        tflite.ModelCard.read(path)


def test_predict_checks_the_model_against_its_card_before_mediapipe(tmp_path, blob):
    five = dataclasses.replace(HAND3, keypoints={"right_hand": [
        "wrist", "thumb_tip", "index_finger_tip", "middle_finger_tip", "ring_finger_tip"]})
    path = write(tmp_path, blob, card_for(variant=five))
    with pytest.raises(UserError, match=r"takes 3 keypoints and gives 4 classes, but .*"
                                        r"its card describes 5 keypoints and 4"):
        predict_videos([tmp_path / "never-opened.mp4"], path)


@pytest.mark.parametrize("synthetic", [True, False])
def test_predict_warns_on_stderr_when_the_card_says_synthetic(tmp_path, blob, synthetic):
    path = write(tmp_path, blob, card_for(synthetic=synthetic))
    video = photo_video(tmp_path / "clip.mp4", n_frames=3)
    p = subprocess.run([sys.executable, "-m", "signbart.cli", "predict", str(video), "--model",
                        str(path), "--json", "--top", "2"], capture_output=True, text=True,
                       cwd=REPO, check=False)
    assert p.returncode == 0, p.stderr[-2000:]
    assert ("trained on synthetic data" in p.stderr) == synthetic
    assert "synthetic" not in p.stdout                    # stdout stays machine-readable
    [result] = json.loads(p.stdout)
    probs = [t["probability"] for t in result["top"]]
    assert {t["label"] for t in result["top"]} < {"A", "B", "C", "D"}
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1 + 1e-6
