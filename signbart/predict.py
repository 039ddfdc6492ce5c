"""Recognise the sign in a video with an exported model, exactly as training preprocessed it.

The model's card (``tflite.ModelCard``, embedded in every ``.tflite`` a trial writes) carries
the variant, the stored layout and the labels, so a ``.tflite`` handed to someone else is usable
on its own: ``signbart predict clip.mp4 --model model_qat_int8.tflite``.
"""

from __future__ import annotations

import logging

import numpy as np

from signbart.errors import UserError
from signbart.storage import check_reachable
from signbart.tflite import ModelCard, Runner

log = logging.getLogger(__name__)


def _softmax(logits: np.ndarray) -> np.ndarray:
    z = np.exp(logits - logits.max(-1, keepdims=True))
    return z / z.sum(-1, keepdims=True)


def predict_videos(videos, model_path, top_k: int = 5, mirror: bool = False) -> list[dict]:
    """Top-k classes with glosses and probabilities for each video; a video without keypoints
    (unreadable, nobody in it) gets an ``error`` instead of ``top``.

    The model and its card are checked against each other before MediaPipe starts. The models
    are trained with the dominant hand in the right-hand slots: a model whose card says
    ``handedness: auto`` mirrors a left-dominant clip itself, an older one needs ``mirror``
    (flip the images first) for a left-handed signer. ``mirrored`` says whether the model saw
    the video mirrored, by either.
    """
    from signbart.extract import VideoError, extract_video, make_holistic
    from signbart.preprocess import Selection, prepare_arrays

    if top_k < 1:
        raise UserError(f"--top {top_k}: must be at least 1")
    check_reachable(model_path)
    card, content = ModelCard.read(model_path)
    layout = card.stored_layout
    selection = Selection.of(card.variant, layout)
    run = Runner(content, frames=card.max_frames)
    if run.num_keypoints != selection.width or run.num_labels != len(card.labels):
        raise UserError(f"{model_path} takes {run.num_keypoints} keypoints and gives "
                        f"{run.num_labels} classes, but its card describes "
                        f"{selection.width} keypoints and {len(card.labels)} classes")
    if card.synthetic:
        log.warning("%s: trained on synthetic data (its card says so) — it proves the "
                    "plumbing, not recognition of real signs", model_path)
    holistic = make_holistic()
    results = []
    try:
        for video in videos:
            try:
                keypoints = extract_video(video, holistic=holistic, mirror=mirror,
                                          layout=layout)
            except VideoError as e:  # the other videos still get their answer
                results.append({"video": str(video), "error": e.reason})
                continue
            prep = prepare_arrays([keypoints], [0], selection, card.max_frames)
            probs = _softmax(run.predict(prep.x, prep.mask)[0].astype(np.float64))
            order = np.argsort(-probs)[:top_k]
            results.append({"video": str(video), "frames": len(keypoints),
                            "mirrored": bool(mirror) != bool(prep.mirrored[0]), "top": [
                {"label": card.labels[i], "gloss": card.glosses[i],
                 "probability": float(probs[i])} for i in order]})
    finally:
        holistic.close()
    return results
