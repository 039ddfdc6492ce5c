"""Typed, validated configs: model, augmentation, training, QAT, the keypoint variant, and
the ``ExperimentConfig`` that composes them for one trial.

Everything here is plain data (no TensorFlow), so drivers can validate a sweep without
importing TF. ``to_dict(experiment)`` is written into every row and model card and is enough
to rebuild the model.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from signbart.errors import ConfigError
from signbart.layouts import GROUPS, LAYOUTS, Layout, get_layout

# One home for each default that several modules need.
MAX_FRAMES = 64        # frames a model sees; longer samples are sub-sampled, shorter padded
EVAL_BATCH = 64        # batch size of inference-only passes (validation, Keras prediction)
SEED = 42              # the seed when none is given
QUANT_MODES = ("fp32", "ptq", "qat", "int8")
# How the ensemble mixes its members: one pool, or "fit" = the lower inner NLL of the two.
ENSEMBLE_MIXES = ("arithmetic", "geometric", "fit")


def _check_type(value, tp, where: str):
    """Coerce/validate one YAML value against a dataclass field type."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for a in args:
            if a is type(None):
                continue
            try:
                return _check_type(value, a, where)
            except ConfigError as e:
                errors.append(str(e))
        raise ConfigError(errors[0] if errors else f"{where}: invalid value {value!r}")
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, where)
    if origin in (tuple, list):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        args = typing.get_args(tp)
        item = args[0] if args else typing.Any
        if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:
            if len(value) != 2:
                raise ConfigError(f"{where}: expected 2 values, got {value!r}")
            return tuple(_check_type(v, a, where) for v, a in zip(value, args))
        return tuple(_check_type(v, item, f"{where}[{i}]") for i, v in enumerate(value))
    if origin is dict or tp is typing.Any:
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        if not math.isfinite(value):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{where}: expected true/false, got {value!r}")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{where}: expected a string, got {value!r}")
        return value
    return value


def from_dict(cls, data, where: str):
    """Build dataclass ``cls`` from a mapping, naming ``where`` (file: field) in every error."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls) if f.init}
    unknown = sorted(set(data) - names)
    if unknown:
        raise ConfigError(f"{where}: unknown key {unknown[0]!r} (known: {', '.join(sorted(names))})")
    kwargs = {k: _check_type(v, hints[k], f"{where}.{k}") for k, v in data.items()}
    try:
        return cls(**kwargs)
    except TypeError as e:
        raise ConfigError(f"{where}: {e}") from None
    except ValueError as e:
        raise ConfigError(f"{where}: {e}") from None


def to_dict(obj) -> dict:
    return json.loads(json.dumps(dataclasses.asdict(obj)))


def config_hash(d: dict) -> str:
    return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:12]


def within(obj) -> None:
    """Raise ValueError unless each field named in ``type(obj).LIMITS`` lies in its interval.

    Every numeric config field states its range there, written as it is printed: ``(0, 1]``,
    ``[1, 100000]``. Every bound is finite, so infinity is out, and NaN (which compares false)
    is out too. Each value of a tuple field is checked; None is a field's "off".
    """
    for name, interval in type(obj).LIMITS.items():
        low, high = (float(b) for b in interval[1:-1].split(","))
        value = getattr(obj, name)
        for v in value if isinstance(value, tuple) else (value,):
            if v is None:
                continue
            above = low < v if interval[0] == "(" else low <= v
            below = v < high if interval[-1] == ")" else v <= high
            if not (above and below):
                raise ValueError(f"{name} must be in {interval}, got {v}")


MAX_EPOCHS = "[1, 100000]"
RATE = "[0, 1)"
PROBABILITY = "[0, 1]"
SEEDS = "[0, 4294967295]"     # what numpy and TF take as a seed


@dataclass(frozen=True)
class ModelConfig:
    """SignBART hyper-parameters (the published Arabic-ASL configuration by default)."""

    num_keypoints: int = 65
    num_labels: int = 10
    d_model: int = 144
    encoder_layers: int = 2
    decoder_layers: int = 2
    encoder_attention_heads: int = 8
    decoder_attention_heads: int = 8
    encoder_ffn_dim: int = 144
    decoder_ffn_dim: int = 144
    dropout: float = 0.3
    activation_dropout: float = 0.3
    attention_dropout: float = 0.0
    classifier_dropout: float = 0.7
    encoder_layerdrop: float = 0.4
    decoder_layerdrop: float = 0.4
    max_position_embeddings: int = 256
    hand_slots: tuple[int, ...] = ()  # first input slot of each 21-point hand whose shape the
                                      # model measures (``model.HandShape``); set from the variant

    LIMITS: typing.ClassVar[dict[str, str]] = {
        "num_keypoints": "[1, 10000]", "num_labels": "[2, 100000]", "d_model": "[1, 65536]",
        "encoder_layers": "[0, 64]", "decoder_layers": "[0, 64]",
        "encoder_attention_heads": "[1, 1024]", "decoder_attention_heads": "[1, 1024]",
        "encoder_ffn_dim": "[1, 1048576]", "decoder_ffn_dim": "[1, 1048576]",
        "dropout": RATE, "activation_dropout": RATE, "attention_dropout": RATE,
        "classifier_dropout": RATE, "encoder_layerdrop": RATE, "decoder_layerdrop": RATE,
        "max_position_embeddings": "[1, 100000]", "hand_slots": "[0, 10000]"}

    def __post_init__(self):
        within(self)
        for heads in (self.encoder_attention_heads, self.decoder_attention_heads):
            if self.d_model % heads:
                raise ValueError(f"d_model ({self.d_model}) must be divisible by heads ({heads})")
        bad = [s for s in self.hand_slots if not 0 <= s <= self.num_keypoints - HAND_POINTS]
        if bad:
            raise ValueError(f"hand_slots: a 21-point hand cannot start at slot {bad[0]} of "
                             f"{self.num_keypoints}")


@dataclass(frozen=True)
class AugmentConfig:
    """Training-time augmentation of preprocessed keypoints (see ``signbart.augment``).

    The first five are the reference's: with probability ``prob`` a sample gets a random
    non-empty subset of them. The rest target signer variation and fire independently.
    """

    prob: float = 0.4
    rotate_deg: float = 15.0
    noise_std: float = 0.01
    clip_frames: bool = True
    time_warp: tuple[float, float] | None = (1.1, 1.5)
    flip: bool = True
    hand_drop: float = 0.0        # P(zero the non-dominant (left-slot) hand for a whole sample)
    hand_paste: float = 0.0       # P(show a still non-dominant hand where the sample has none)
    frame_drop: float = 0.0       # P(zero each single frame)
    affine_prob: float = 0.0      # P(per-group affine jitter)
    affine_scale: float = 0.1
    affine_shear: float = 0.1
    affine_shift: float = 0.05
    speed: tuple[float, float] | None = None  # temporal resampling factor range, e.g. [0.8, 1.25]

    # keypoints are in frame units (about [0, 1]): a shift or a noise of 1 is the whole frame
    LIMITS: typing.ClassVar[dict[str, str]] = {
        "prob": PROBABILITY, "rotate_deg": "[0, 180]", "noise_std": "[0, 1]",
        "hand_drop": PROBABILITY, "hand_paste": PROBABILITY, "frame_drop": PROBABILITY,
        "affine_prob": PROBABILITY, "affine_scale": "[0, 1]", "affine_shear": "[0, 1]",
        "affine_shift": "[0, 1]", "time_warp": "(0, 100]", "speed": "(0, 100]"}

    def __post_init__(self):
        for n in ("time_warp", "speed"):
            r = getattr(self, n)
            if r is not None and not 0 < r[0] <= r[1]:
                raise ValueError(f"{n} must be [low, high] with 0 < low <= high, got {list(r)}")
        within(self)


SCHEDULES = ("plateau", "cosine")


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 80
    lr: float = 2e-4
    batch_size: int = 16
    weight_decay: float = 0.01
    label_smoothing: float = 0.0
    schedule: str = "plateau"     # "plateau" (reference) or "cosine" (warm-up, then decay to 0)
    warmup_epochs: int = 3        # cosine only
    plateau_factor: float = 0.1
    plateau_patience: int = 5
    min_lr: float = 1e-7
    max_frames: int = MAX_FRAMES
    n_val_signers: int = 1        # how many inner validation signers to draw from the training signers
    early_stopping: int = 0       # patience in epochs on inner-validation accuracy; 0 = off
    refit: bool = False           # after the inner run, retrain on train + inner signers
    jit_compile: bool = False     # XLA-compile the training step (faster; float sums reorder)
    ema: float = 0.0              # decay of the weights' moving average kept and shipped; 0 = off
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    LIMITS: typing.ClassVar[dict[str, str]] = {
        "epochs": MAX_EPOCHS, "lr": "(0, 1]", "batch_size": "[1, 65536]",
        "weight_decay": "[0, 1]", "label_smoothing": RATE, "warmup_epochs": "[0, 100000]",
        "plateau_factor": "(0, 1)", "plateau_patience": "[0, 100000]", "min_lr": "[0, 1]",
        "max_frames": "[1, 100000]", "n_val_signers": "[0, 10000]",
        "early_stopping": "[0, 100000]", "ema": RATE}

    def __post_init__(self):
        within(self)
        if self.schedule not in SCHEDULES:
            raise ValueError(f"schedule must be one of {', '.join(SCHEDULES)}, got "
                             f"{self.schedule!r}")
        if self.schedule == "cosine" and self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs ({self.warmup_epochs}) must be < epochs "
                             f"({self.epochs})")


@dataclass(frozen=True)
class QATConfig:
    """Quantisation-aware fine-tuning; defaults are what the reference found stable."""

    epochs: int = 20
    lr: float = 5e-5
    batch_size: int = 4
    clipnorm: float = 1.0
    patience: int = 10

    LIMITS: typing.ClassVar[dict[str, str]] = {
        "epochs": MAX_EPOCHS, "lr": "(0, 1]", "batch_size": "[1, 65536]",
        "clipnorm": "(0, 1000]", "patience": "[0, 100000]"}

    def __post_init__(self):
        within(self)


@dataclass(frozen=True)
class FramingConfig:
    """Where every signer's shoulders are put before preprocessing (``preprocess.reframe``).

    Defaults are MLR511's typical waist-up framing: shoulder midpoint at 57 % of the frame
    height, shoulder width 26 % of the frame width.
    """

    shoulder_y: float = 0.57
    shoulder_width: float = 0.26

    LIMITS: typing.ClassVar[dict[str, str]] = {"shoulder_y": "(0, 1)",
                                               "shoulder_width": "(0, 1)"}

    def __post_init__(self):
        within(self)


@dataclass(frozen=True)
class VariantConfig:
    """A keypoint variant: which stored keypoints the model sees, and the model that sees them.

    ``keypoints`` maps a group to ``all`` or to a list of landmark names / MediaPipe indices
    of that group; order in the model input is group order, then the listed order.
    """

    name: str
    layout: str = "holistic-65"
    keypoints: dict = field(default_factory=lambda: {g: "all" for g in GROUPS[:3]})
    num_labels: int = 10
    model: dict = field(default_factory=dict)
    description: str = ""
    framing: FramingConfig | None = None   # None: the camera's own framing, as the reference
    anchors: bool = False                  # append body-anchored hand motion (preprocess)
    handedness: str = "as-extracted"       # or "auto": mirror left-dominant clips (preprocess)
    hand_shape: bool = False               # the model measures each whole hand (model.HandShape)

    LIMITS: typing.ClassVar[dict[str, str]] = {"num_labels": ModelConfig.LIMITS["num_labels"]}

    def __post_init__(self):
        within(self)
        if self.layout not in LAYOUTS:
            raise ValueError(f"layout: unknown layout {self.layout!r} (known: {', '.join(LAYOUTS)})")
        if self.handedness not in HANDEDNESS:
            raise ValueError(f"handedness: {self.handedness!r} is not one of "
                             f"{', '.join(HANDEDNESS)}")
        self.keys(get_layout(self.layout))
        if self.framing is not None:
            missing = [k for k in SHOULDERS if k not in get_layout(self.layout).keys]
            if missing:
                raise ValueError(f"framing: layout {self.layout!r} has no {missing[0]!r}")
        if self.anchors:
            missing = [k for k in ANCHOR_SOURCES if k not in get_layout(self.layout).keys]
            if missing:
                raise ValueError(f"anchors: layout {self.layout!r} has no {missing[0]!r}")
        if self.hand_shape:
            hands = [g for g in HANDS if g in self.keypoints]
            if not hands or any(self.keypoints[g] != "all" for g in hands):
                raise ValueError("hand_shape: needs every selected hand group as 'all' "
                                 "(its 21 points in MediaPipe order), and at least one")

    def keys(self, layout: Layout) -> list[str]:
        """The selected keypoint keys (``group.name``), validated against ``layout``."""
        if not isinstance(self.keypoints, dict) or not self.keypoints:
            raise ValueError("keypoints must map groups to 'all' or a list of landmarks")
        by_group: dict[str, list] = {}
        for k in layout.keypoints:
            by_group.setdefault(k.group, []).append(k)
        out: list[str] = []
        for group, sel in self.keypoints.items():
            if group not in GROUPS:
                raise ValueError(f"keypoints: unknown group {group!r} (known: {', '.join(GROUPS)})")
            avail = by_group.get(group)
            if not avail:
                raise ValueError(f"keypoints.{group}: layout {layout.name!r} has no {group} points")
            if sel == "all":
                out += [k.key for k in avail]
                continue
            if not isinstance(sel, list) or not sel:
                raise ValueError(f"keypoints.{group}: expected 'all' or a non-empty list")
            for item in sel:
                if isinstance(item, bool) or not isinstance(item, (int, str)):
                    raise ValueError(f"keypoints.{group}: bad entry {item!r}")
                match = [k for k in avail if (k.source_index == item if isinstance(item, int)
                                              else k.name == str(item).lower())]
                if not match:
                    raise ValueError(f"keypoints.{group}: {item!r} is not in layout {layout.name!r}"
                                     f" ({group} has {len(avail)} points)")
                out.append(match[0].key)
        dup = sorted({k for k in out if out.count(k) > 1})
        if dup:
            raise ValueError(f"keypoints: duplicate keypoint {dup[0]!r}")
        return out

    def input_keys(self, layout: Layout) -> list[str]:
        """The model's input slots: the selected keypoints, then the anchor features."""
        return self.keys(layout) + (list(ANCHOR_KEYS) if self.anchors else [])

    def model_config(self, where: str | None = None) -> ModelConfig:
        keys = self.input_keys(get_layout(self.layout))
        hands = [keys.index(f"{g}.wrist") for g in HANDS if g in self.keypoints] \
            if self.hand_shape else []
        return from_dict(ModelConfig, {**self.model, "num_keypoints": len(keys),
                                       "num_labels": self.num_labels, "hand_slots": hands},
                         f"{where or self.name}: model")


SHOULDERS = ("pose.left_shoulder", "pose.right_shoulder")
# as-extracted: the clip's hands stay in the slots extraction gave them (signers.csv or
# `predict --mirror` decide); auto: a clip whose left hand is the more active is mirrored.
HANDEDNESS = ("as-extracted", "auto")
MOUTH = ("pose.mouth_left", "pose.mouth_right")
HANDS = ("left_hand", "right_hand")
HAND_POINTS = 21  # a MediaPipe hand: wrist, then four points per finger, thumb to pinky
# Per hand, relative to the shoulders (see ``preprocess.anchor_features``).
ANCHOR_FEATURES = ("wrist", "index_finger_tip", "centroid", "tip_to_mouth", "velocity_1",
                   "velocity_2", "presence")
ANCHOR_KEYS = tuple(f"anchor.{h.split('_')[0]}_{f}" for h in HANDS for f in ANCHOR_FEATURES)
ANCHOR_SOURCES = (*SHOULDERS, *MOUTH, *(f"{h}.{p}" for h in HANDS
                                       for p in ("wrist", "index_finger_tip")))


def load_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read ({e.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as e:
        def at(mark) -> str:
            return f"line {mark.line + 1}, column {mark.column + 1}"

        text = f"{path}: not valid YAML at {at(e.problem_mark)}: {e.problem}" \
            if e.problem_mark else f"{path}: not valid YAML: {e.problem}"
        if e.context and e.context_mark:
            text += f" ({e.context} started at {at(e.context_mark)})"
        raise ConfigError(text) from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping at the top level")
    return data


def load_variant(path: str | Path) -> VariantConfig:
    data = load_yaml(path)
    data.setdefault("name", Path(path).stem)
    variant = from_dict(VariantConfig, data, str(path))
    variant.model_config(str(path))  # validate model overrides now, naming the file
    return variant


def variant_from_dict(d: dict) -> VariantConfig:
    return from_dict(VariantConfig, d, f"variant {d.get('name', '?')}")


# ---------------------------------------------------------------- one experiment

def plain(value):
    """Tune hands back numpy scalars; rows and JSON want Python numbers."""
    return value.item() if hasattr(value, "item") else value


def apply_settings(settings: dict, train: dict, qat: dict, variant: dict
                   ) -> tuple[dict, dict, dict]:
    """Copies of the train/qat/variant dicts with dotted ``settings`` set (``train.lr``,
    ``train.augment.hand_drop``, ``qat.epochs``; ``model.*`` lands in the variant's model)."""
    out = {"train": json.loads(json.dumps(train)), "qat": json.loads(json.dumps(qat)),
           "model": json.loads(json.dumps(variant.get("model") or {}))}
    for key, value in settings.items():
        section, *path = key.split(".")
        if section not in out or not path:
            raise ConfigError(f"{key}: expected train.<field>, qat.<field> or model.<field>")
        node = out[section]
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"{key}: {part!r} is not a section")
        node[path[-1]] = plain(value)
    return out["train"], out["qat"], {**variant, "model": out["model"]}


def trial_id(holdout: str, seed: int, variant: str, ablation: str = "") -> str:
    """``<holdout>-s<seed>-<variant>[-<ablation>]``: the trial's name in Tune, its folder and
    its rows."""
    return "-".join([str(holdout), f"s{seed}", variant] + ([ablation] if ablation else []))


@dataclass(frozen=True)
class ExperimentConfig:
    """Everything one trial needs, every choice already applied; its dict is stored in every
    row and Tune hands it to the worker, which only parses it (``build_experiment``)."""

    data: str
    variant: VariantConfig
    holdout: str = "none"
    seed: int = SEED
    quant: tuple[str, ...] = ("fp32",)
    train: TrainConfig = field(default_factory=TrainConfig)
    qat: QATConfig = field(default_factory=QATConfig)
    sweep: str = ""
    ablation: str = ""          # the sweep's ablation arm, already applied to train.augment
    threads: int = 0            # TF intra/inter-op threads; 0 = leave TF's default
    baseline: bool = True       # also fit the cheap linear baseline on the same fold
    ensemble: bool = False      # also ship SignBART + baseline as one model (fp32, ptq)
    ensemble_mix: str = "arithmetic"  # see ensemble.MixLogProbs; ENSEMBLE_MIXES
    ensemble_gate: bool = False  # the baseline abstains on clips beyond every inner clip's z
    search: dict = field(default_factory=dict)   # what a nested search chose (already applied)

    LIMITS: typing.ClassVar[dict[str, str]] = {"seed": SEEDS, "threads": "[0, 1024]"}

    def __post_init__(self):
        within(self)
        bad = [q for q in self.quant if q not in QUANT_MODES]
        if bad or not self.quant:
            raise ValueError(f"quant: {bad[0] if bad else 'empty'!r} is not one of "
                             f"{', '.join(QUANT_MODES)}")
        if self.ensemble_mix not in ENSEMBLE_MIXES:
            raise ValueError(f"ensemble_mix: {self.ensemble_mix!r} is not one of "
                             f"{', '.join(ENSEMBLE_MIXES)}")
        self.variant.model_config()

    @classmethod
    def parse(cls, config: dict) -> ExperimentConfig:
        return from_dict(cls, config, "trial config")

    def to_dict(self) -> dict:
        return to_dict(self)

    @property
    def name(self) -> str:
        return trial_id(self.holdout, self.seed, self.variant.name, self.ablation)


def build_experiment(data: str, variant: VariantConfig, holdout: str, *, seed: int = SEED,
                     quant=("fp32",), train: TrainConfig | None = None,
                     qat: QATConfig | None = None, search: dict | None = None,
                     ablation: str = "", augment: dict | None = None,
                     settings: dict | None = None, sweep: str = "", threads: int = 0,
                     baseline: bool = True, ensemble: bool = False,
                     ensemble_mix: str = "arithmetic", ensemble_gate: bool = False,
                     where: str = "experiment") -> ExperimentConfig:
    """The one way an experiment is made, by the sweep driver and by ``signbart train``.

    On top of the variant and the base train/qat configs, in this order: the nested search's
    choice (``search['params']``), the ablation's ``augment`` overrides, then ``settings``
    (dotted, as ``apply_settings``). The result is validated once, naming ``where``.
    """
    t, q, v = (to_dict(train or TrainConfig()), to_dict(qat or QATConfig()), to_dict(variant))
    if search:
        t, q, v = apply_settings(search["params"], t, q, v)
    if augment:
        t["augment"] = {**t["augment"], **augment}
    if settings:
        t, q, v = apply_settings(settings, t, q, v)
    return from_dict(ExperimentConfig, {
        "data": data, "variant": v, "holdout": holdout, "seed": seed, "quant": list(quant),
        "train": t, "qat": q, "sweep": sweep, "ablation": ablation, "threads": threads,
        "baseline": baseline, "ensemble": ensemble, "ensemble_mix": ensemble_mix,
        "ensemble_gate": ensemble_gate,
        "search": search or {}}, where)
