"""Accuracy, cost and speed of a sign classifier, measured one way for Keras and TFLite.

Published numbers are the deployed model's, so ``evaluate_tflite_file`` runs the .tflite file in
the real TFLite interpreter. ``evaluate`` takes any ``predict_fn(x, mask) -> logits``, so a Keras
model and its TFLite export are scored by the same code on the same ``preprocess.prepare`` arrays.

    signbart evaluate --model runs/user08/model_qat_int8.tflite --data data/mlr511-90 \
        --holdout user08
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np

from signbart.config import EVAL_BATCH, MAX_FRAMES, VariantConfig, load_variant
from signbart.data import Dataset, open_dataset
from signbart.errors import UserError
from signbart.preprocess import prepare
from signbart.storage import check_reachable, write_text
from signbart.tfkeras import tf
from signbart.tflite import ModelCard, Runner, latency

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


def accuracy(scores, y) -> float:
    """Top-1 of ``scores`` [N, C] (logits, probabilities or log-probabilities)."""
    return float((np.asarray(scores).argmax(1) == y).mean())


def metrics(y_true, scores, num_labels: int) -> dict:
    """top1, top5, macro_f1, per_class_acc and confusion of ``scores`` [N, C] (logits or probs).

    Only the ranking of ``scores`` matters; ties go to the lower class id. top5 is top-min(5, C).
    ``per_class_acc[c]`` is the recall of class c, or None when c is absent from ``y_true`` (a
    report must not average a fake 0). macro_f1 averages F1 = 2TP / (2TP + FP + FN) over the
    classes that occur in ``y_true`` or in the predictions; a class in neither has no F1 and is
    left out (sklearn's default), a class predicted but absent scores 0. ``confusion[t][p]``
    counts samples of true class t predicted as p, in label-id order 0..C-1.
    """
    y = np.asarray(y_true, dtype=np.int64)
    scores = np.asarray(scores)
    if scores.shape != (len(y), num_labels):
        raise ValueError(f"scores must be [{len(y)}, {num_labels}], got {list(scores.shape)}")
    if not len(y):
        raise ValueError("no samples to evaluate")
    if y.min() < 0 or y.max() >= num_labels:
        raise ValueError(f"labels must be in [0, {num_labels}), got {y.min()}..{y.max()}")
    if np.isnan(scores).any():
        raise ValueError("scores contain NaN")
    ranked = np.argsort(-scores, axis=1, kind="stable")                 # [N, C], best first
    pred = ranked[:, 0]                                                  # [N]
    confusion = np.zeros((num_labels, num_labels), np.int64)            # [true, predicted]
    np.add.at(confusion, (y, pred), 1)
    tp = np.diag(confusion)
    support, predicted = confusion.sum(1), confusion.sum(0)
    seen = support + predicted > 0                                       # = 2TP + FP + FN > 0
    f1 = 2 * tp[seen] / (support[seen] + predicted[seen])
    return {
        "top1": float(np.mean(pred == y)),
        "top5": float(np.mean((ranked[:, :min(5, num_labels)] == y[:, None]).any(1))),
        "macro_f1": float(f1.mean()),
        "per_class_acc": [float(t / s) if s else None for t, s in zip(tp, support)],
        "confusion": confusion.tolist(),
    }


def evaluate(predict_fn, x, mask, y, num_labels: int) -> dict:
    """``metrics`` of ``predict_fn(x, mask)``; the one scorer for Keras and TFLite models."""
    return metrics(y, predict_fn(x, mask), num_labels)


# ---------------------------------------------------------------------------------------------
# Predict functions
# ---------------------------------------------------------------------------------------------


def keras_predict_fn(model, batch_size: int = EVAL_BATCH):
    """``(x [N, T, K, 2], mask [N, T]) -> logits [N, C]`` of a Keras model, inference mode."""

    def predict(x, mask):
        out = model.predict({"keypoints": x, "attention_mask": mask}, batch_size=batch_size,
                            verbose=0)
        return np.asarray(out, dtype=np.float32)

    return predict


# ---------------------------------------------------------------------------------------------
# Cost and speed
# ---------------------------------------------------------------------------------------------


def count_flops(model, max_frames: int = MAX_FRAMES) -> int:
    """FLOPs of one forward pass at [1, max_frames, K, 2], counted on the traced inference graph.

    TensorFlow's profiler counts a multiply-add as 2 FLOPs (MatMul, BatchMatMul), one per output
    element for BiasAdd and element-wise arithmetic (Add, Sub, Mul, RealDiv, SquaredDifference,
    Rsqrt, comparisons), reductions (Sum, Mean) per input element, and Softmax. Ops it has no
    cost for count 0: GELU's Erfc, Exp, Tanh, and data movement (Reshape, Transpose, Gather).
    """
    num_keypoints = dict(zip(model.input_names, model.inputs))["keypoints"].shape[2]
    specs = {"keypoints": tf.TensorSpec([1, max_frames, num_keypoints, 2], tf.float32),
             "attention_mask": tf.TensorSpec([1, max_frames], tf.float32)}
    forward = tf.function(lambda inputs: model(inputs, training=False))
    graph = forward.get_concrete_function(specs).graph
    builder = tf.compat.v1.profiler.ProfileOptionBuilder
    options = builder(builder.float_operation()).with_empty_output().build()
    return int(tf.compat.v1.profiler.profile(graph, options=options).total_float_ops)


# ---------------------------------------------------------------------------------------------
# A deployed model file
# ---------------------------------------------------------------------------------------------


def evaluate_tflite_file(model_path, variant: VariantConfig | str | Path | None,
                         dataset: Dataset | str | Path, holdout: str | None = None,
                         out_json=None) -> dict:
    """Score a .tflite file on one signer (or the whole dataset) in the TFLite interpreter.

    ``model_path`` is a path or a URI (``s3://``, as a sweep's rows give it). The card embedded in
    the model (``tflite.ModelCard``) is the truth about it; ``variant`` picks and
    orders the keypoints; None takes the card's, and a given one must select the same keypoints.
    Returns (and writes to ``out_json``, atomically) result-row fields: the ``metrics``, labels,
    glosses, n_test, model_bytes, params and flops (from the card) and latency.
    """
    model_path = str(model_path)
    check_reachable(model_path)
    card, content = ModelCard.read(model_path)
    if variant is None:
        variant = card.variant
    elif not isinstance(variant, VariantConfig):
        variant = load_variant(variant)
    if not isinstance(dataset, Dataset):
        dataset = open_dataset(dataset)

    try:
        keys = variant.input_keys(dataset.layout)
        trained_keys = card.variant.input_keys(dataset.layout)
    except ValueError as e:
        raise UserError(f"{dataset.path}: variant {variant.name!r} does not fit its layout "
                        f"({e})") from None
    if keys != trained_keys:
        raise UserError(f"{model_path}: trained on the keypoints of variant "
                        f"{card.variant.name!r} (its card), not {variant.name!r}'s")
    if list(card.labels) != dataset.labels:
        raise UserError(f"{model_path}: trained on labels {list(card.labels)} (its card) "
                        f"but {dataset.path} has {dataset.labels}")

    runner = Runner(content, frames=card.max_frames)
    if runner.num_keypoints != len(keys):
        raise UserError(f"{model_path}: model takes {runner.num_keypoints} keypoints, variant "
                        f"{variant.name!r} selects {len(keys)}")
    if runner.num_labels != len(dataset.labels):
        raise UserError(f"{model_path}: model has {runner.num_labels} classes, {dataset.path} "
                        f"has {len(dataset.labels)}")

    if holdout is None:
        indices = np.arange(len(dataset))
    else:
        holdout = dataset.resolve_holdouts([str(holdout)])[0]
        indices = np.flatnonzero(dataset.manifest["signer"].to_numpy() == holdout)
    if not len(indices):
        raise UserError(f"{dataset.path}: no samples to evaluate (holdout {holdout!r})")
    data = prepare(dataset, indices, variant, max_frames=runner.frames)

    result = {
        **evaluate(runner.predict, data.x, data.mask, data.y, runner.num_labels),
        "labels": dataset.labels,
        "glosses": dataset.glosses,
        "holdout": holdout,
        "n_test": len(data),
        "model_path": str(model_path),
        "model_bytes": len(content),
        "params": card.params,
        "flops": card.flops,
        **latency(runner),
    }
    log.info("%s on %s (%d samples): top1 %.4f, top5 %.4f, macro-F1 %.4f, p50 %.2f ms",
             model_path, holdout or "all signers", len(data), result["top1"], result["top5"],
             result["macro_f1"], result["latency_ms_p50"])
    if out_json is not None:
        write_text(out_json, json.dumps(result, indent=1))
    return result
