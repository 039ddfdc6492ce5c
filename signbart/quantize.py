"""Quantisation and TFLite export of a SignBART model.

Every export has the phone app's fixed signature (``signbart.tflite``). Inputs and outputs
stay float32 in every mode, so the app never changes with the quantisation mode.

Modes: ``to_tflite`` FP32; ``ptq_dynamic`` int8 weights with float activations (hybrid
kernels); ``apply_qat`` + ``qat_finetune`` + ``qat_to_tflite`` the same int8-weight graph
with weights trained on their int8 grid; ``full_int8`` int8 weights and activations except
LayerNorm and the attention renormalisation (see ``FLOAT_LAYERS``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import numpy as np

from signbart.config import MAX_FRAMES, QATConfig
from signbart.model import CUSTOM_OBJECTS, KEEP_FLOAT
from signbart.tfkeras import keras, quiet_stderr, tf
from signbart.tflite import INPUTS, OUTPUT, ops

# isort: split
import tensorflow_model_optimization as tfmot  # after signbart.tfkeras selects Keras 2

log = logging.getLogger(__name__)
_qk = tfmot.quantization.keras
_register = keras.saving.register_keras_serializable(package="signbart")


# ----------------------------------------------------------------------------- QAT configs


@_register
class PerChannelWeightQuantizer(_qk.quantizers.Quantizer):
    """Symmetric int8 fake-quant of a Dense kernel, one scale per output unit (max|w| / 127).

    The same grid TFLite's dynamic-range quantizer uses for FULLY_CONNECTED weights, so the
    exported int8 weights are exactly the values QAT trained with. Stateless: the range
    comes from the current kernel, so there is nothing to calibrate and nothing to go stale.
    """

    def build(self, tensor_shape, name, layer):
        return {}

    def __call__(self, inputs, training, weights, **kwargs):
        return fake_quant_kernel(inputs)

    def get_config(self):
        return {}


@_register
class DenseWeightQuantizeConfig(_qk.QuantizeConfig):
    """Weight-only QAT for Dense: what the deployed hybrid kernels do (int8 weights, float activations)."""

    def get_weights_and_quantizers(self, layer):
        return [(layer.kernel, PerChannelWeightQuantizer())]

    def get_activations_and_quantizers(self, layer):
        return []

    def set_quantize_weights(self, layer, quantize_weights):
        layer.kernel = quantize_weights[0]

    def set_quantize_activations(self, layer, quantize_activations):
        pass

    def get_output_quantizers(self, layer):
        return []

    def get_config(self):
        return {}


def fake_quant_kernel(kernel):
    """kernel [in, out] rounded to int8 per output column, as TFLite stores it."""
    bound = tf.stop_gradient(tf.maximum(tf.reduce_max(tf.abs(kernel), axis=0), 1e-8))  # [out]
    return tf.quantization.fake_quant_with_min_max_vars_per_channel(
        kernel, -bound, bound, num_bits=8, narrow_range=True)  # [in, out]


_QAT_OBJECTS = {**CUSTOM_OBJECTS, "PerChannelWeightQuantizer": PerChannelWeightQuantizer,
                "DenseWeightQuantizeConfig": DenseWeightQuantizeConfig}


# ----------------------------------------------------------------------------- export


def _num_keypoints(model: keras.Model) -> int:
    return int(dict(zip(model.input_names, model.inputs))["keypoints"].shape[2])


def _converter(model: keras.Model, max_frames: int) -> tf.lite.TFLiteConverter:
    """A converter for ``model`` traced at the fixed phone signature (batch 1, ``max_frames``)."""
    if max_frames <= 0:
        raise ValueError(f"max_frames must be > 0, got {max_frames}")
    k = _num_keypoints(model)

    @tf.function(input_signature=[
        tf.TensorSpec([1, max_frames, k, 2], tf.float32, name=INPUTS[0]),
        tf.TensorSpec([1, max_frames], tf.float32, name=INPUTS[1])])
    def serve(keypoints, attention_mask):
        return {OUTPUT: model({"keypoints": keypoints, "attention_mask": attention_mask},
                              training=False)}

    # The converter saves a SavedModel of the object it is handed; a bare module that only
    # tracks the variables avoids serialising every Keras layer (3x faster conversion).
    holder = tf.Module()
    holder.variables_ = list(model.weights)
    return tf.lite.TFLiteConverter.from_concrete_functions([serve.get_concrete_function()], holder)


def to_tflite(model: keras.Model, max_frames: int = MAX_FRAMES) -> bytes:
    """FP32 TFLite of a float model."""
    with quiet_stderr():
        return _converter(model, max_frames).convert()


def ptq_dynamic(model: keras.Model, max_frames: int = MAX_FRAMES) -> bytes:
    """Dynamic-range INT8: weights int8 per output channel, activations float."""
    converter = _converter(model, max_frames)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    with quiet_stderr():
        return converter.convert()


# ----------------------------------------------------------------------------- QAT


def _all_dense(model: keras.Model) -> list[keras.layers.Dense]:
    """Every Dense in ``model``, nested ones included: the set QAT must cover."""
    return [m for m in model.submodules if isinstance(m, keras.layers.Dense)]


def qat_wrapped_dense(qat_model: keras.Model) -> list[keras.layers.Layer]:
    """The QuantizeWrappers of ``qat_model`` that wrap a Dense layer."""
    return [layer for layer in qat_model.layers
            if isinstance(layer, _qk.QuantizeWrapperV2) and isinstance(layer.layer, keras.layers.Dense)]


def apply_qat(model: keras.Model, cfg: QATConfig) -> keras.Model:
    """A compiled QAT copy of ``model`` with every Dense kernel fake-quantised to int8.

    Raises ValueError when any Dense (e.g. one nested in a custom layer, which tfmot cannot
    reach) is left unwrapped: a silently half-quantised model would train on the wrong grid.
    """
    dense = _all_dense(model)
    if not dense:
        raise ValueError(f"{model.name}: no Dense layers to quantise")

    def annotate(layer):
        if isinstance(layer, keras.layers.Dense):
            return _qk.quantize_annotate_layer(layer, DenseWeightQuantizeConfig())
        return layer  # shared, not copied: quantize_apply copies the weights of the whole graph

    annotated = keras.models.clone_model(model, clone_function=annotate)
    with _qk.quantize_scope(_QAT_OBJECTS):
        qat = _qk.quantize_apply(annotated)
    wrapped = qat_wrapped_dense(qat)
    if len(wrapped) != len(dense):
        missing = sorted({d.name for d in dense} - {w.layer.name for w in wrapped})
        raise ValueError(f"QAT wrapped {len(wrapped)} of {len(dense)} Dense layers; not wrapped: "
                         f"{', '.join(missing)}. Make every Dense a top-level layer of the graph.")
    log.info("QAT: wrapped %d Dense layers", len(wrapped))
    _compile(qat, cfg)
    return qat


def _compile(model: keras.Model, cfg: QATConfig) -> None:
    model.compile(optimizer=keras.optimizers.Adam(learning_rate=cfg.lr, clipnorm=cfg.clipnorm),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
                  metrics=["accuracy"])


class _ReportEpochs(keras.callbacks.Callback):
    def __init__(self, report):
        super().__init__()
        self.report = report

    def on_epoch_end(self, epoch, logs=None):
        self.report({"epoch": epoch + 1, "qat": 1,
                     **{f"qat_{k}": float(v) for k, v in (logs or {}).items()}})


def qat_finetune(model: keras.Model, train_ds, val_ds, cfg: QATConfig, report=None
                 ) -> tuple[keras.Model, dict]:
    """Fine-tunes a model from ``apply_qat``; early stopping restores the best val-loss epoch.

    ``val_ds`` must come from inner-validation signers, never the held-out one. Without it,
    training loss is monitored instead (logged as a warning). ``report`` gets ``{epoch,
    qat: 1, qat_loss, ...}`` after every epoch (live progress; ``--dry-run`` clocks them).
    """
    monitor = "val_loss"
    if val_ds is None:
        log.warning("QAT fine-tune without validation data: early stopping on training loss")
        monitor = "loss"
    if model.optimizer is None:
        _compile(model, cfg)
    stop = keras.callbacks.EarlyStopping(monitor=monitor, patience=cfg.patience,
                                         restore_best_weights=True)
    callbacks = [stop] + ([_ReportEpochs(report)] if report is not None else [])
    history = model.fit(train_ds, validation_data=val_ds, epochs=cfg.epochs, callbacks=callbacks,
                        verbose=0)
    hist = {k: [float(v) for v in vals] for k, vals in history.history.items()}
    info = {"epochs_run": len(hist[monitor]), "best_epoch": int(stop.best_epoch) + 1,
            "history": hist}
    log.info("QAT fine-tune: %d epochs, best %d (%s %.4f)", info["epochs_run"],
             info["best_epoch"], monitor, stop.best)
    return model, info


def strip_qat(qat_model: keras.Model) -> keras.Model:
    """The float model a QAT model stands for, its Dense kernels replaced by their int8-grid values."""
    def unwrap(layer):
        if isinstance(layer, _qk.QuantizeWrapperV2):
            inner = layer.layer
            return inner.__class__.from_config(inner.get_config())
        return layer.__class__.from_config(layer.get_config())

    with _qk.quantize_scope(_QAT_OBJECTS):
        plain = keras.models.clone_model(qat_model, clone_function=unwrap)
    for layer in qat_model.layers:
        if isinstance(layer, _qk.QuantizeWrapperV2):
            # The wrapper owns the Dense variables; ``layer.layer.kernel`` is the fake-quant tensor.
            values = {_short(w): w for w in layer.weights}
            target = plain.get_layer(layer.layer.name)
            target.set_weights([fake_quant_kernel(values["kernel"]).numpy() if _short(w) == "kernel"
                                else values[_short(w)].numpy() for w in target.weights])
        else:
            plain.get_layer(layer.name).set_weights(layer.get_weights())
    return plain


def _short(weight) -> str:
    """``enc0_self_q/kernel:0`` -> ``kernel``."""
    return weight.name.rsplit("/", 1)[-1].split(":")[0]


def qat_to_tflite(qat_model: keras.Model, max_frames: int = MAX_FRAMES) -> bytes:
    """Int8-weight TFLite of a QAT model: the same hybrid kernels as ``ptq_dynamic``.

    Converting the fake-quant graph directly folds the kernels back to float32 constants
    (and per-channel fake-quant trips the converter's transpose check), so the wrappers are
    stripped first; the converter then re-quantises kernels that already sit on its own
    per-channel grid, which loses nothing.
    """
    return ptq_dynamic(strip_qat(qat_model), max_frames)


# ----------------------------------------------------------------------------- full int8


# Full INT8 keeps these in float. Found with tf.lite.experimental.QuantizationDebugger on
# a trained toy model, then timed on the 65-keypoint model (benchmarks/bench_quant.py):
# - LayerNorm: its int8 mean/variance err by 20-28 quantisation steps (RMSE), and TFLite's
#   int8 MEAN/RSQRT kernels made the whole model 4x slower than FP32 under XNNPACK;
# - ops under ``signbart.model.KEEP_FLOAT``: the masked-softmax renormalisation (int8
#   probabilities cost ~10 points on the toy task) and the last-frame index (exact counts).
FLOAT_LAYERS = (keras.layers.LayerNormalization,)


def full_int8(model: keras.Model, representative: Iterable, max_frames: int = MAX_FRAMES) -> bytes:
    """Int8 weights and activations, calibrated on ``representative`` TRAINING samples.

    ``representative`` yields ``(keypoints [1, T, K, 2], mask [1, T])`` with T = max_frames.
    Dense, attention matmuls, GELU, residual adds and embeddings run int8; LayerNorm and the
    ``KEEP_FLOAT`` ops stay float through TFLite's selective quantisation (see FLOAT_LAYERS).
    Inputs and logits stay float32.
    """
    samples = [(np.asarray(k, np.float32), np.asarray(m, np.float32)) for k, m in representative]
    if not samples:
        raise ValueError("full_int8 needs at least one representative sample")
    k = _num_keypoints(model)
    for kp, m in samples:
        if kp.shape != (1, max_frames, k, 2) or m.shape != (1, max_frames):
            raise ValueError(f"representative samples must be [1, {max_frames}, {k}, 2] and "
                             f"[1, {max_frames}], got {list(kp.shape)} and {list(m.shape)}")
    converter = _converter(model, max_frames)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ({"keypoints": kp, "attention_mask": m}
                                                for kp, m in samples)
    # The debugger is TFLite's route to selective quantisation: calibrate once, then
    # quantise with a denylist of node names read from the calibrated graph.
    with quiet_stderr():
        debugger = tf.lite.experimental.QuantizationDebugger(converter=converter)
    scopes = [KEEP_FLOAT] + [layer.name for layer in model.layers
                             if isinstance(layer, FLOAT_LAYERS)]
    keep = _float_nodes(debugger.calibrated_model, scopes)
    debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=keep)
    log.info("full int8: %d ops kept float", len(keep))
    with quiet_stderr():
        return debugger.get_nondebug_quantized_model()


def _float_nodes(tflite_bytes: bytes, scopes: list[str]) -> list[str]:
    """Output names of the ops under any of ``scopes`` (Dense matmuls fused into them excepted)."""
    graph, tensors = ops(tflite_bytes)
    outputs = [tensors[op["outputs"][0]]["name"] for op in graph
               if op["op_name"] != "FULLY_CONNECTED"]
    missing = [s for s in scopes if not any(f"/{s}/" in name for name in outputs)]
    if missing:
        raise ValueError(f"no ops under {missing}: full int8 would quantise ops that must "
                         "stay float (see FLOAT_LAYERS)")
    return [name for name in outputs if any(f"/{s}/" in name for s in scopes)]
