"""Accuracy, cost and speed of a sign classifier, measured one way for Keras and TFLite.

Published numbers are the deployed model's, so ``evaluate_tflite_file`` runs the .tflite file in
the real TFLite interpreter. ``evaluate`` takes any ``predict_fn(x, mask) -> logits``, so a Keras
model and its TFLite export are scored by the same code on the same ``preprocess.prepare`` arrays.

    signbart evaluate --model trial/model.tflite --config configs/holistic-65.yaml \
        --data data/synth --holdout user01
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

from signbart.config import VariantConfig, load_variant, variant_from_dict
from signbart.data import Dataset, open_dataset
from signbart.errors import UserError
from signbart.preprocess import prepare
from signbart.quantize import INPUTS, load_interpreter
from signbart.storage import write_text
from signbart.tfkeras import tf

log = logging.getLogger(__name__)



# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------


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


def keras_predict_fn(model, batch_size: int = 64):
    """``(x [N, T, K, 2], mask [N, T]) -> logits [N, C]`` of a Keras model, inference mode."""

    def predict(x, mask):
        out = model.predict({"keypoints": x, "attention_mask": mask}, batch_size=batch_size,
                            verbose=0)
        return np.asarray(out, dtype=np.float32)

    return predict


def _model_bytes(model) -> bytes:
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    path = Path(model)
    if not path.is_file():
        raise UserError(f"{path}: model file not found")
    return path.read_bytes()


class _TFLiteRunner:
    """One interpreter reused for every sample, its inputs found by name, int8 I/O handled.

    A model exported with a dynamic batch or frame count is fixed to [1, ``frames``].
    """

    def __init__(self, model, num_threads: int = 1, frames: int = 64):
        content = _model_bytes(model)
        try:
            self._interpreter = load_interpreter(content, num_threads=num_threads)
        except ValueError as e:
            raise UserError(f"{model if isinstance(model, (str, Path)) else 'model'}: "
                            f"not a TFLite model ({e})") from None
        details = self._interpreter.get_input_details()
        self._keypoints, self._mask = (_input_named(details, name) for name in INPUTS)
        if (self._keypoints["shape_signature"][:2] < 0).any():
            k = self._keypoints["shape"][2]
            self._interpreter.resize_tensor_input(self._keypoints["index"], [1, frames, k, 2])
            self._interpreter.resize_tensor_input(self._mask["index"], [1, frames])
        self._interpreter.allocate_tensors()
        details = self._interpreter.get_input_details()
        self._keypoints, self._mask = (_input_named(details, name) for name in INPUTS)
        outputs = self._interpreter.get_output_details()
        if len(outputs) != 1:
            raise ValueError(f"expected one output (logits), got {[o['name'] for o in outputs]}")
        self._output = outputs[0]
        self.frames, self.num_keypoints = (int(d) for d in self._keypoints["shape"][1:3])
        self.num_labels = int(self._output["shape"][-1])

    def __call__(self, x, mask) -> np.ndarray:
        """logits [C] of one sample x [T, K, 2], mask [T]; T is cropped or zero-padded."""
        if x.shape[1:] != (self.num_keypoints, 2):
            raise ValueError(f"model expects [frames, {self.num_keypoints}, 2] keypoints, "
                             f"got {list(x.shape)}")
        for detail, value in ((self._keypoints, x), (self._mask, mask)):
            value = _fit_frames(np.asarray(value, np.float32), self.frames)
            self._interpreter.set_tensor(detail["index"], _quantize(value[None], detail))
        self._interpreter.invoke()
        return _dequantize(self._interpreter.get_tensor(self._output["index"])[0], self._output)

    def predict(self, x, mask) -> np.ndarray:
        if not len(x):
            return np.zeros((0, self.num_labels), np.float32)
        return np.stack([self(xi, mi) for xi, mi in zip(x, mask)])


def _input_named(details: list[dict], name: str) -> dict:
    """The input called ``name``, allowing converter decorations (``serving_default_``, ``:0``)."""
    for d in details:
        base = d["name"].rsplit(":", 1)[0]
        if base == name or base.endswith("_" + name):
            return d
    raise ValueError(f"the TFLite model has no input {name!r} (inputs: "
                     f"{', '.join(d['name'] for d in details)})")


def _fit_frames(a: np.ndarray, frames: int) -> np.ndarray:
    a = a[:frames]
    return np.pad(a, [(0, frames - len(a))] + [(0, 0)] * (a.ndim - 1))


def _quantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not scale:
        return value.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(value / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def _dequantize(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not scale:
        return value.astype(np.float32)
    return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)


def tflite_predict_fn(model, num_threads: int = 1):
    """``(x [N, T, K, 2], mask [N, T]) -> logits [N, C]`` through the TFLite interpreter.

    ``model`` is .tflite bytes or a path. Samples go one at a time through the model's fixed
    [1, frames, K, 2] / [1, frames] signature, as on a phone; int8 inputs and outputs are
    quantised and dequantised with the model's own scale and zero point.
    """
    return _TFLiteRunner(model, num_threads).predict


# ---------------------------------------------------------------------------------------------
# Cost and speed
# ---------------------------------------------------------------------------------------------


def count_flops(model, max_frames: int = 64) -> int:
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


def tflite_latency(model, n: int = 50, warmup: int = 5, num_threads: int = 1) -> dict:
    """Single-sample CPU latency (set inputs, invoke, read logits) of a .tflite model, in ms.

    The input is fixed (seeded keypoints in [0, 1), every frame real) so runs are comparable.
    """
    return _latency(_TFLiteRunner(model, num_threads), n, warmup)


def _latency(run: _TFLiteRunner, n: int, warmup: int) -> dict:
    rng = np.random.default_rng(0)
    x = rng.random((run.frames, run.num_keypoints, 2), dtype=np.float32)
    mask = np.ones(run.frames, np.float32)
    for _ in range(warmup):
        run(x, mask)
    times = []
    for _ in range(n):
        start = time.perf_counter()
        run(x, mask)
        times.append((time.perf_counter() - start) * 1e3)
    p50, p90 = np.percentile(times, [50, 90])
    return {"latency_ms_p50": float(p50), "latency_ms_p90": float(p90)}


# ---------------------------------------------------------------------------------------------
# A deployed model file
# ---------------------------------------------------------------------------------------------


def _read_sidecar(model_path: Path) -> dict:
    """The ``<model>.json`` a trial writes beside each .tflite, or {} when there is none."""
    path = model_path.with_suffix(".json")
    if not path.is_file():
        return {}
    try:
        sidecar = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as e:
        raise UserError(f"{path}: unreadable JSON ({e})") from None
    if not isinstance(sidecar, dict):
        raise UserError(f"{path}: expected a JSON object")
    return sidecar


def evaluate_tflite_file(model_path, variant: VariantConfig | str | Path | None,
                         dataset: Dataset | str | Path, holdout: str | None = None,
                         out_json=None) -> dict:
    """Score a .tflite file on one signer (or the whole dataset) in the TFLite interpreter.

    ``variant`` picks and orders the keypoints; None takes it from the model's sidecar. Returns
    (and writes to ``out_json``, atomically) result-row fields: the ``metrics``, labels, glosses,
    n_test, model_bytes, params and flops (from the sidecar; None without one) and latency.
    """
    model_path = Path(model_path)
    content = _model_bytes(model_path)
    sidecar = _read_sidecar(model_path)
    sidecar_path = model_path.with_suffix(".json")
    if variant is None:
        if "variant" not in sidecar:
            raise UserError(f"{model_path}: no variant in {sidecar_path}; pass --config")
        variant = variant_from_dict(sidecar["variant"])
    elif not isinstance(variant, VariantConfig):
        variant = load_variant(variant)
    if not isinstance(dataset, Dataset):
        dataset = open_dataset(dataset)

    try:
        keys = variant.keys(dataset.layout)
        trained = sidecar.get("variant")
        trained_keys = variant_from_dict(trained).keys(dataset.layout) if trained else keys
    except ValueError as e:
        raise UserError(f"{dataset.path}: variant {variant.name!r} does not fit its layout "
                        f"({e})") from None
    if keys != trained_keys:
        raise UserError(f"{model_path}: trained on the keypoints of {sidecar_path} "
                        f"(variant {trained.get('name')!r}), not {variant.name!r}'s")
    if "labels" in sidecar and list(sidecar["labels"]) != dataset.labels:
        raise UserError(f"{model_path}: trained on labels {sidecar['labels']} ({sidecar_path}) "
                        f"but {dataset.path} has {dataset.labels}")

    runner = _TFLiteRunner(content, frames=sidecar.get("max_frames", 64))
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
        "params": sidecar.get("params"),
        "flops": sidecar.get("flops"),
        **_latency(runner, n=50, warmup=5),
    }
    log.info("%s on %s (%d samples): top1 %.4f, top5 %.4f, macro-F1 %.4f, p50 %.2f ms",
             model_path, holdout or "all signers", len(data), result["top1"], result["top5"],
             result["macro_f1"], result["latency_ms_p50"])
    if out_json is not None:
        write_text(out_json, json.dumps(result, indent=1))
    return result
