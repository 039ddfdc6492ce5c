import dataclasses
import json
import subprocess
import sys

import pytest
from conftest import REPO, shared_path
from test_train import VARIANT
from videos import photo_video

from signbart.config import TrainConfig, build_experiment
from signbart.predict import predict_videos
from signbart.tflite import ModelCard, embedded_card
from signbart.trial import run_trial

VIDEO = shared_path("mlr511", "user03", "G01", "R01.mp4")
LEFT_HANDED = shared_path("mlr511", "user01", "G01", "R01.mp4")  # as filmed: not mirrored


@pytest.fixture(scope="module")
def exported(synth_dataset_90, tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    variant = dataclasses.replace(VARIANT, layout="holistic-90")
    run_trial(build_experiment(str(synth_dataset_90), variant, "user01", quant=["ptq"],
                               baseline=False, train=TrainConfig(epochs=1, n_val_signers=0)),
              out)
    return out / "model_ptq_int8.tflite"


def test_the_trials_model_carries_its_card(exported, tmp_path):
    card, content = ModelCard.read(exported)
    assert card.labels == tuple(f"C{i:02d}" for i in range(1, 11)) and card.quant == "ptq"
    assert embedded_card(content) == exported.with_suffix(".json").read_text()
    lonely = tmp_path / "m.tflite"           # handed on without its readable copy
    lonely.write_bytes(content)
    assert ModelCard.read(lonely)[0] == card
    [result] = predict_videos([tmp_path / "never.mp4"], lonely)   # the model is fine alone
    assert result == {"video": str(tmp_path / "never.mp4"), "error": result["error"]}


@pytest.mark.slow
@pytest.mark.skipif(VIDEO is None, reason="../shared/data/mlr511 is absent")
def test_predict_a_real_video_and_reject_a_non_video(exported, tmp_path):
    [result] = predict_videos([VIDEO], exported, top_k=3)
    meta, _ = ModelCard.read(exported)
    assert result["frames"] > 10 and len(result["top"]) == 3
    assert all(p["label"] in meta.labels and p["gloss"] in meta.glosses for p in result["top"])
    probs = [p["probability"] for p in result["top"]]
    assert probs == sorted(probs, reverse=True) and 0 < sum(probs) <= 1.0 + 1e-6

    fake = tmp_path / "notes.mp4"
    fake.write_text("not a video")
    p = subprocess.run([sys.executable, "-m", "signbart.cli", "predict", str(fake), "--model",
                        str(exported)], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 1 and "notes.mp4" in p.stderr and "Traceback" not in p.stderr
    p = subprocess.run([sys.executable, "-m", "signbart.cli", "predict", str(VIDEO), "--model",
                        str(exported), "--json"], capture_output=True, text=True, cwd=REPO)
    assert p.returncode == 0 and json.loads(p.stdout)[0]["top"][0]["label"] in meta.labels


def test_a_bad_video_does_not_stop_the_good_ones(exported, tmp_path):
    good = photo_video(tmp_path / "good.mp4")
    bad = tmp_path / "bad.mp4"
    bad.write_text("not a video")
    p = subprocess.run([sys.executable, "-m", "signbart.cli", "predict", str(bad), str(good),
                        "--model", str(exported), "--json"], capture_output=True, text=True,
                       cwd=REPO, check=False)
    assert p.returncode == 1 and "Traceback" not in p.stderr
    first, second = json.loads(p.stdout)
    assert first == {"video": str(bad), "error": "OpenCV cannot open it (corrupt, truncated or "
                                                 "not a video)"}
    assert second["video"] == str(good) and len(second["top"]) == 5
    assert second["mirrored"] is False                   # the model's handedness: as-extracted
    assert p.stderr.strip().splitlines()[-1] == f"signbart predict: error: {bad}: {first['error']}"


@pytest.mark.skipif(LEFT_HANDED is None, reason="../shared/data/mlr511 is absent")
def test_an_auto_model_mirrors_a_left_handed_signer_without_being_told(tmp_path):
    from test_tflite import FRAMES, HAND3, card_for, tiny_model, to_tflite, write

    blob = to_tflite(tiny_model(k=3, labels=4), FRAMES)
    seen = {}
    for handedness in ("as-extracted", "auto"):
        card = card_for(variant=dataclasses.replace(HAND3, handedness=handedness))
        path = write(tmp_path, blob, card, name=f"{handedness}.tflite")
        seen[handedness] = [predict_videos([LEFT_HANDED], path, top_k=1, mirror=m)[0]["mirrored"]
                            for m in (False, True)]
    # an older model mirrors only when told; an auto one finds the left hand itself, and
    # --mirror then changes nothing it sees
    assert seen == {"as-extracted": [False, True], "auto": [True, True]}
