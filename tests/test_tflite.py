"""The model card: written beside a .tflite, read back typed, and held to the file it describes."""

import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import REPO
from test_evaluate import tiny_model
from videos import photo_video

from signbart import tflite
from signbart.config import VariantConfig
from signbart.errors import ConfigError, UserError
from signbart.evaluate import evaluate_tflite_file
from signbart.layouts import get_layout
from signbart.predict import predict_videos
from signbart.quantize import to_tflite

FRAMES = 8
HAND3 = VariantConfig(name="hand3", num_labels=4,
                      keypoints={"right_hand": ["wrist", "thumb_tip", "index_finger_tip"]})


@pytest.fixture(scope="module")
def blob() -> bytes:
    return to_tflite(tiny_model(k=3, labels=4), FRAMES)


def card_for(blob: bytes, **over) -> tflite.ModelCard:
    fields = dict(variant=HAND3, labels=("A", "B", "C", "D"), glosses=("a", "b", "c", "d"),
                  layout=get_layout("holistic-65").to_dict(), max_frames=FRAMES, quant="fp32",
                  synthetic=True, tflite_sha256=tflite.sha256(blob), git_sha="abc",
                  config_hash="123", params=12, flops=34)
    return tflite.ModelCard(**{**fields, **over})


def write(tmp_path, blob, card, name="model_fp32.tflite"):
    path = tmp_path / name
    card.write(path, blob)
    return path


def test_card_round_trips_and_bad_cards_name_the_file_and_field(tmp_path, blob):
    path = write(tmp_path, blob, card_for(blob))
    card, content = tflite.ModelCard.read(path)
    assert card == card_for(blob) and content == blob
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
    with pytest.raises(ConfigError, match="tflite_sha256"):
        tflite.ModelCard.from_json(text.replace('"tflite_sha256"', '"sha"'), "m.json")
    with pytest.raises(ValueError, match="SHA-256"):
        card_for(blob, tflite_sha256="0" * 64).write(tmp_path / "other.tflite", blob)
    lonely = tmp_path / "lonely.tflite"
    lonely.write_bytes(blob)
    with pytest.raises(UserError, match=r"lonely\.json: missing"):
        tflite.ModelCard.read(lonely)


def test_evaluate_and_predict_refuse_a_model_that_is_not_the_cards(tmp_path, blob,
                                                                   synth_dataset):
    other = to_tflite(tiny_model(k=3, labels=4), FRAMES + 1)
    path = write(tmp_path, blob, card_for(blob))
    path.write_bytes(other)              # the model replaced, its card left behind
    sentence = (rf"{path} is not the model {path.with_suffix('.json')} describes \(its "
                rf"SHA-256 is {tflite.sha256(other)[:12]}…, the card's "
                rf"{tflite.sha256(blob)[:12]}…\)$")
    with pytest.raises(UserError, match=sentence):
        evaluate_tflite_file(path, None, synth_dataset)
    with pytest.raises(UserError, match=sentence):
        predict_videos([tmp_path / "never-opened.mp4"], path)


def test_predict_checks_the_model_against_its_card_before_mediapipe(tmp_path, blob):
    five = dataclasses.replace(HAND3, keypoints={"right_hand": [
        "wrist", "thumb_tip", "index_finger_tip", "middle_finger_tip", "ring_finger_tip"]})
    path = write(tmp_path, blob, card_for(blob, variant=five))
    with pytest.raises(UserError, match=r"takes 3 keypoints and gives 4 classes, but .*"
                                        r"model_fp32\.json describes 5 keypoints and 4"):
        predict_videos([tmp_path / "never-opened.mp4"], path)


@pytest.mark.parametrize("synthetic", [True, False])
def test_predict_warns_on_stderr_when_the_card_says_synthetic(tmp_path, blob, synthetic):
    path = write(tmp_path, blob, card_for(blob, synthetic=synthetic))
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
