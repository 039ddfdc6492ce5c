"""The shipped model on left-handed signers' clips as their videos are, not mirrored.

A sweep's rows score each hold-out on the dataset it trained on, where ``signers.csv`` had a
left-handed signer's videos mirrored at extraction. A phone app does not know its user's
hand, so ``handedness_table`` scores the same fold's .tflite (the row's ``model_path``, the
model that held that signer out) on a dataset of those signers' clips extracted without
mirroring, in the real TFLite interpreter (``evaluate.evaluate_tflite_file``), and says how
many clips ``handedness: auto`` preprocessing would mirror (``preprocess.canonical``).
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd

from signbart.data import open_dataset
from signbart.errors import UserError
from signbart.evaluate import evaluate_tflite_file
from signbart.preprocess import Selection, canonical
from signbart.tflite import ModelCard

log = logging.getLogger(__name__)

COLUMNS = ["signer", "model", "handedness", "n_seeds", "n_clips", "mirrored_top1",
           "unmirrored_top1", "delta", "detected_left"]


def handedness_table(rows: pd.DataFrame, model: str | None, dataset_path: str) -> pd.DataFrame:
    """One row per signer of ``dataset_path`` (each taken as left-handed, its clips as
    extracted): ``model``'s top-1 on the mirrored clips (the sweep's rows, mean over seeds)
    and on these (its .tflite of each seed's fold), the model card's ``handedness``, and the
    share of clips the auto rule finds left-dominant (``detected_left``)."""
    if not model:
        raise UserError(f"--handedness {dataset_path}: the report ships no model, so there "
                        "is none to score on unmirrored clips")
    dataset = open_dataset(dataset_path)
    mine = rows[(rows.model == model) & rows.ok]
    out = []
    for signer in sorted(set(dataset.manifest.signer)):
        folds = mine[mine.holdout.astype(str) == signer].sort_values("seed")
        if folds.empty or folds.model_path.isna().any():
            raise UserError(f"--handedness {dataset_path}: signer {signer!r} has no row of "
                            f"the shipped model {model!r} with a model_path that held it out")
        indices = np.flatnonzero(dataset.manifest.signer.to_numpy() == signer)
        card, _ = ModelCard.read(folds.model_path.iloc[0])
        auto = Selection.of(dataclasses.replace(card.variant, handedness="auto"),
                            dataset.layout)
        left = [canonical(dataset.keypoints(i), auto)[1] for i in indices]
        unmirrored = [evaluate_tflite_file(p, None, dataset, holdout=signer)["top1"]
                      for p in folds.model_path]
        mirrored, plain = float(folds.top1.mean()), float(np.mean(unmirrored))
        out.append({"signer": signer, "model": model, "handedness": card.variant.handedness,
                    "n_seeds": len(folds), "n_clips": len(indices), "mirrored_top1": mirrored,
                    "unmirrored_top1": plain, "delta": plain - mirrored,
                    "detected_left": float(np.mean(left))})
        log.info("handedness: %s, %s: top-1 %.3f mirrored, %.3f unmirrored; the auto rule "
                 "finds %.0f %% of its clips left-dominant", signer, model, mirrored, plain,
                 100 * out[-1]["detected_left"])
    return pd.DataFrame(out, columns=COLUMNS)
