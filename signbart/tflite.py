"""The deployed model's contract: the TFLite signature, the interpreter, and the model card.

Every export has the phone app's fixed signature ``serving_default``:
    inputs   keypoints       float32 [1, max_frames, K, 2]   zero-padded after the last frame
             attention_mask  float32 [1, max_frames]         1 = real frame, 0 = padding
    output   logits          float32 [1, num_labels]
(TFLite decorates input tensor names as ``serving_default_keypoints:0``; the signature
runner uses the plain names.) Trials, ``evaluate``, ``predict`` and the benchmarks all run a
``.tflite`` through ``Runner``, so a published number is the interpreter's own.

Every ``.tflite`` a trial writes carries its ``ModelCard`` inside, as TFLite model metadata
named ``signbart_card`` (the interpreter ignores metadata it does not know): what the file
needs to be used on its own travels in the file, so the model is one file and its card cannot
be swapped or edited beside it. A readable copy is written beside it (``<model>.json``);
readers refuse a copy that differs from the embedded card.
"""

from __future__ import annotations

import json
import time
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from signbart.config import MAX_FRAMES, QUANT_MODES, VariantConfig, from_dict, to_dict
from signbart.errors import UserError
from signbart.layouts import Layout
from signbart.storage import exists, read_bytes, with_suffix, write_bytes, write_text
from signbart.tfkeras import quiet_stderr, tf

INPUTS = ("keypoints", "attention_mask")
OUTPUT = "logits"
SIGNATURE = "serving_default"
CARD_METADATA = "signbart_card"    # the name of the card's metadata buffer in the flatbuffer
# The one quant mode -> file name mapping; "int8" is the full-integer model.
MODEL_FILES = {"fp32": "model_fp32.tflite", "ptq": "model_ptq_int8.tflite",
               "qat": "model_qat_int8.tflite", "int8": "model_int8.tflite"}


class ExportError(RuntimeError):
    """A TFLite file that must not ship: it fails to load, has the wrong shapes, or emits non-finite values."""


# ----------------------------------------------------------------------------- the card


@dataclass(frozen=True)
class ModelCard:
    """What a ``.tflite`` file needs to be used on its own, embedded in it (and copied beside it
    as ``.json`` for people to read).

    ``variant`` picks and orders the keypoints from the stored ``layout``; ``labels``/``glosses``
    name the logits; ``synthetic`` is the training data's flag (a model trained on generated
    data proves the plumbing, not the product).
    """

    variant: VariantConfig
    labels: tuple[str, ...]
    glosses: tuple[str, ...]
    layout: dict               # ``Layout.to_dict()`` of the dataset the model was trained on
    max_frames: int
    quant: str
    synthetic: bool
    git_sha: str = ""
    config_hash: str = ""
    params: int | None = None
    flops: int | None = None
    model_kind: str = "signbart"        # or "ensemble" (SignBART + baseline in one graph)
    ensemble_weight: float | None = None  # SignBART's share in an ensemble
    ensemble_mode: str | None = None      # its mix: "arithmetic" or "geometric"
    ensemble_temperatures: tuple[float, float] | None = None  # SignBART's, the baseline's
    ensemble_gate: float | None = None    # the baseline abstains beyond this RMS z-score

    def __post_init__(self):
        if self.quant not in QUANT_MODES:
            raise ValueError(f"quant: {self.quant!r} is not one of {', '.join(QUANT_MODES)}")
        if len(self.glosses) != len(self.labels):
            raise ValueError(f"glosses: {len(self.glosses)} for {len(self.labels)} labels")
        try:
            Layout.from_dict(self.layout)
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"layout: not a stored layout ({e!r})") from None

    @property
    def stored_layout(self) -> Layout:
        return Layout.from_dict(self.layout)

    def to_json(self) -> str:
        return json.dumps(to_dict(self), indent=1, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str, where: str) -> ModelCard:
        """Parse a card; every error names ``where`` and the field."""
        return from_dict(cls, _card_json(text, where), where)

    @staticmethod
    def path(model_path) -> str:
        """The readable copy's location: ``<model>.json`` beside the model (path or URI)."""
        return with_suffix(model_path, ".json")

    @classmethod
    def read(cls, model_path) -> tuple[ModelCard, bytes]:
        """The card embedded in ``model_path`` and the model's bytes; a copy beside it that
        differs from the embedded card (an edited keypoint order, label or gloss) is refused,
        naming the first field that differs."""
        content = model_bytes(model_path)
        text = embedded_card(content)
        if text is None:
            raise UserError(f"{model_path}: no model card inside (exported by a signbart "
                            "before cards were embedded, or not written by signbart): "
                            "export it again with `signbart train`/`sweep`")
        card = cls.from_json(text, f"{model_path} (its embedded card)")
        copy = cls.path(model_path)
        if exists(copy):
            field = _first_difference(_card_json(read_bytes(copy).decode(errors="replace"),
                                                 copy), json.loads(text))
            if field is not None:
                raise UserError(f"{copy}: field {field!r} differs from the card embedded in "
                                f"{model_path} (the copy was edited, or belongs to another "
                                "model): restore or delete it")
        return card, content

    def write(self, model_path, content: bytes) -> None:
        """Write the model with this card embedded, then the card's readable copy beside it."""
        write_bytes(model_path, embed_card(content, self.to_json()))
        write_text(self.path(model_path), self.to_json())


def _card_json(text: str, where) -> dict:
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"{where}: not a model card (invalid JSON: {e})") from None


def _first_difference(a, b, where: str = "") -> str | None:
    """The dotted name of the first field where JSON values ``a`` and ``b`` differ, or None.
    Key order inside a field counts: a variant's group order is its keypoint order."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in dict.fromkeys([*a, *b]):
            name = f"{where}.{key}" if where else key
            if key not in a or key not in b:
                return name
            inner = _first_difference(a[key], b[key], name)
            if inner is not None:
                return inner
        return where if where and list(a) != list(b) else None
    if a == b and type(a) is type(b):
        return None
    return where or "card"


def embed_card(content: bytes, card: str) -> bytes:
    """``content`` (a .tflite) with ``card`` in a metadata buffer named ``CARD_METADATA``,
    replacing one already there. The graph and its weights are unchanged: same outputs."""
    from tensorflow.lite.python import schema_py_generated as schema
    from tensorflow.lite.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(content))
    model.metadata = model.metadata or []
    entry = next((m for m in model.metadata if _name(m.name) == CARD_METADATA), None)
    if entry is None:
        entry = schema.MetadataT()
        entry.name, entry.buffer = CARD_METADATA, len(model.buffers)
        model.metadata.append(entry)
        model.buffers.append(schema.BufferT())
    model.buffers[entry.buffer].data = np.frombuffer(card.encode(), np.uint8)
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def embedded_card(content: bytes) -> str | None:
    """The card text embedded in ``content`` by ``embed_card``, or None when there is none
    (also for bytes that are not a TFLite flatbuffer: the interpreter then says why)."""
    from tensorflow.lite.python import schema_py_generated as schema

    if len(content) < 8 or not schema.Model.ModelBufferHasIdentifier(content, 0):
        return None
    try:
        model = schema.Model.GetRootAs(content, 0)
        for i in range(model.MetadataLength()):
            entry = model.Metadata(i)
            if _name(entry.Name()) == CARD_METADATA:
                return model.Buffers(entry.Buffer()).DataAsNumpy().tobytes().decode()
    except (IndexError, ValueError, UnicodeDecodeError):   # a damaged flatbuffer
        return None
    return None


def _name(name) -> str:
    return name.decode() if isinstance(name, bytes) else str(name)


def model_bytes(model) -> bytes:
    """``model`` as bytes: bytes as given, or a path's or URI's contents (a clear error when
    missing)."""
    if isinstance(model, (bytes, bytearray)):
        return bytes(model)
    try:
        return read_bytes(model)
    except FileNotFoundError:
        raise UserError(f"{model}: model file not found") from None


# ----------------------------------------------------------------------------- interpreter


def load_interpreter(tflite_bytes: bytes, num_threads: int = 1, delegates: bool = True):
    """The TFLite interpreter for ``tflite_bytes``; raises ValueError for non-TFLite bytes."""
    resolver = tf.lite.experimental.OpResolverType
    with warnings.catch_warnings():  # tf.lite.Interpreter's deprecation notice, on every call
        warnings.simplefilter("ignore", UserWarning)
        return tf.lite.Interpreter(
            model_content=tflite_bytes, num_threads=num_threads,
            experimental_op_resolver_type=(resolver.AUTO if delegates
                                           else resolver.BUILTIN_WITHOUT_DEFAULT_DELEGATES))


class Runner:
    """One interpreter reused for every sample, its inputs found by name, int8 I/O handled.

    A model exported with a dynamic batch or frame count is fixed to [1, ``frames``].
    """

    def __init__(self, model, num_threads: int = 1, frames: int = MAX_FRAMES):
        content = model_bytes(model)
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
        with quiet_stderr():  # TFLite's C++ "Created TensorFlow Lite XNNPACK delegate" line
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
            self._interpreter.set_tensor(detail["index"], quantize_input(value[None], detail))
        self._interpreter.invoke()
        return dequantize_output(self._interpreter.get_tensor(self._output["index"])[0],
                                 self._output)

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


def quantize_input(value: np.ndarray, detail: dict) -> np.ndarray:
    """``value`` in the input's dtype, on its int8 grid when the input is quantised."""
    scale, zero_point = detail["quantization"]
    if not scale:
        return value.astype(detail["dtype"])
    info = np.iinfo(detail["dtype"])
    return np.clip(np.round(value / scale + zero_point), info.min, info.max).astype(detail["dtype"])


def dequantize_output(value: np.ndarray, detail: dict) -> np.ndarray:
    scale, zero_point = detail["quantization"]
    if not scale:
        return value.astype(np.float32)
    return ((value.astype(np.float32) - zero_point) * scale).astype(np.float32)


def predict_fn(model, num_threads: int = 1):
    """``(x [N, T, K, 2], mask [N, T]) -> logits [N, C]`` through the TFLite interpreter.

    ``model`` is .tflite bytes or a path. Samples go one at a time through the model's fixed
    [1, frames, K, 2] / [1, frames] signature, as on a phone; int8 inputs and outputs are
    quantised and dequantised with the model's own scale and zero point.
    """
    return Runner(model, num_threads).predict


def latency(model, n: int = 50, warmup: int = 5, num_threads: int = 1) -> dict:
    """Single-sample CPU latency (set inputs, invoke, read logits) of a .tflite model, in ms.

    The input is fixed (seeded keypoints in [0, 1), every frame real) so runs are comparable.
    ``model`` is bytes, a path or a ``Runner``.
    """
    run = model if isinstance(model, Runner) else Runner(model, num_threads)
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


# ----------------------------------------------------------------------------- checks


def check(tflite_bytes: bytes, keypoints_batch, mask_batch) -> None:
    """Raises ExportError unless the model loads, has the documented signature and gives
    finite logits for every sample of the batch (keypoints [N, T, K, 2], mask [N, T])."""
    try:
        interpreter = load_interpreter(tflite_bytes)
        runner = interpreter.get_signature_runner(SIGNATURE)
    except (ValueError, RuntimeError) as e:
        raise ExportError(f"cannot load the TFLite model: {e}") from None
    inputs, outputs = runner.get_input_details(), runner.get_output_details()
    if sorted(inputs) != sorted(INPUTS) or list(outputs) != [OUTPUT]:
        raise ExportError(f"signature is {sorted(inputs)} -> {list(outputs)}, "
                          f"expected {sorted(INPUTS)} -> [{OUTPUT!r}]")
    kp_shape = [int(d) for d in inputs["keypoints"]["shape"]]
    mask_shape = [int(d) for d in inputs["attention_mask"]["shape"]]
    out_shape = [int(d) for d in outputs[OUTPUT]["shape"]]
    if (len(kp_shape) != 4 or kp_shape[0] != 1 or kp_shape[3] != 2
            or mask_shape != kp_shape[:2] or len(out_shape) != 2 or out_shape[0] != 1):
        raise ExportError(f"shapes keypoints {kp_shape}, attention_mask {mask_shape}, "
                          f"logits {out_shape}; expected [1, T, K, 2], [1, T], [1, C]")
    keypoints_batch = np.asarray(keypoints_batch, np.float32)
    mask_batch = np.asarray(mask_batch, np.float32)
    if keypoints_batch.shape[1:] != tuple(kp_shape[1:]) or mask_batch.shape[1:] != tuple(mask_shape[1:]):
        raise ExportError(f"the check batch is {list(keypoints_batch.shape)} / "
                          f"{list(mask_batch.shape)}, the model takes {kp_shape} / {mask_shape}")
    for i, (kp, m) in enumerate(zip(keypoints_batch, mask_batch)):
        logits = runner(keypoints=kp[None], attention_mask=m[None])[OUTPUT]
        if not np.all(np.isfinite(logits)):
            raise ExportError(f"non-finite logits on check sample {i}: {logits.ravel()[:4]}...")


# ----------------------------------------------------------------------------- op listing


def ops(tflite_bytes: bytes) -> tuple[list[dict], dict[int, dict]]:
    """(the op graph, tensor details by index) as the interpreter reads the file."""
    interpreter = load_interpreter(tflite_bytes, delegates=False)
    return (interpreter._get_ops_details(),
            {t["index"]: t for t in interpreter.get_tensor_details()})


def int8_dense_kernels(tflite_bytes: bytes) -> tuple[int, int]:
    """(FULLY_CONNECTED ops whose weight tensor is stored int8, all FULLY_CONNECTED ops).

    Reads the op graph itself rather than trusting tensor names.
    """
    graph, tensors = ops(tflite_bytes)
    fc = [op for op in graph if op["op_name"] == "FULLY_CONNECTED"]
    n_int8 = sum(tensors[op["inputs"][1]]["dtype"] == np.int8 for op in fc)
    return int(n_int8), len(fc)


def op_types(tflite_bytes: bytes) -> dict[str, dict[str, int]]:
    """Per op type, how many run with int8 / float32 / other inputs: where a model is really int8."""
    graph, tensors = ops(tflite_bytes)
    out: dict[str, dict[str, int]] = {}
    for op in graph:
        first = [i for i in op["inputs"] if i >= 0][:1]
        dtype = np.dtype(tensors[first[0]]["dtype"]).name if first else "none"
        counts = out.setdefault(op["op_name"], {})
        counts[dtype] = counts.get(dtype, 0) + 1
    return out
