"""Recognise the sign in a video with an exported model, exactly as training preprocessed it.

The model's ``.json`` sidecar (written beside every ``.tflite`` by the trial) carries the
variant, the stored layout and the labels, so a ``.tflite`` handed to someone else is usable
on its own: ``signbart predict clip.mp4 --model model_qat_int8.tflite``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from signbart.config import variant_from_dict
from signbart.errors import UserError
from signbart.layouts import Layout


def read_sidecar(model_path) -> dict:
    path = Path(model_path).with_suffix(".json")
    if not Path(model_path).is_file():
        raise UserError(f"{model_path}: model file not found")
    try:
        meta = json.loads(path.read_text())
        meta["variant"] = variant_from_dict(meta["variant"])
        meta["layout"] = Layout.from_dict(meta["layout"])
        meta["labels"] = list(meta["labels"])
    except FileNotFoundError:
        raise UserError(f"{path}: missing — the labels and layout of {model_path} travel in this "
                        "sidecar written by `signbart train`/`sweep`") from None
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise UserError(f"{path}: bad model sidecar ({type(e).__name__}: {e})") from None
    return meta


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def predict_videos(videos, model_path, top_k: int = 5, mirror: bool = False) -> list[dict]:
    """Top-k classes with glosses and probabilities for each video.

    ``mirror`` flips the images first, for a left-handed signer (the models are trained with
    the dominant hand in the right-hand slots).
    """
    from signbart.evaluate import tflite_predict_fn
    from signbart.extract import extract_video, make_holistic
    from signbart.preprocess import Selection, prepare_arrays

    meta = read_sidecar(model_path)
    selection = Selection.of(meta["variant"], meta["layout"])
    predict = tflite_predict_fn(str(model_path))
    glosses = meta.get("glosses") or meta["labels"]
    holistic = make_holistic()
    results = []
    try:
        for video in videos:
            keypoints = extract_video(video, holistic=holistic, mirror=mirror,
                                      layout=meta["layout"])
            prep = prepare_arrays([keypoints], [0], selection, meta.get("max_frames", 64))
            probs = _softmax(predict(prep.x, prep.mask)[0].astype(np.float64))
            order = np.argsort(-probs)[:top_k]
            results.append({"video": str(video), "frames": len(keypoints), "top": [
                {"label": meta["labels"][i], "gloss": glosses[i], "probability": float(probs[i])}
                for i in order]})
    finally:
        holistic.close()
    return results
