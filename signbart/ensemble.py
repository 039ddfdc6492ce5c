"""SignBART and the linear baseline as one model: one graph, one ``.tflite`` file.

The two fail on different signers (on MLR511 the baseline is strong where camera framing
differs, SignBART where the motion does), so they are mixed: each member temperature-scaled,
then pooled geometrically or arithmetically with SignBART's share, all fitted by log-likelihood
on the inner-validation signers' predictions only. The baseline's resampling and its
linear layer are rebuilt as graph ops, so the ensemble has the same inputs and output as
SignBART and ``evaluate``/``predict`` run it like any other model. Optionally the graph also
gates the baseline (``InRange``): on a clip farther from its training clips than any inner
signer's, it abstains.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from signbart.baseline import LinearBaseline
from signbart.tfkeras import keras, tf

_register = keras.saving.register_keras_serializable(package="signbart")

@_register
class ResampleFrames(keras.layers.Layer):
    """``baseline.features`` as graph ops: [B, T, K, 2] + mask [B, T] -> [B, frames * K * 3].

    Linear interpolation over each sequence's real frames is a [frames, T] matrix built from
    two one-hot rows, so the graph needs only builtin TFLite ops (ONE_HOT, BATCH_MATMUL).
    """

    def __init__(self, frames: int = 16, **kwargs):
        super().__init__(**kwargs)
        if frames < 2:
            raise ValueError(f"frames must be >= 2, got {frames}")
        self.frames = int(frames)

    def call(self, inputs):
        keypoints, mask = inputs
        t = tf.shape(keypoints)[1]
        k = keypoints.shape[2]
        length = tf.maximum(tf.reduce_sum(mask, 1, keepdims=True), 1.0)        # [B, 1]
        pos = tf.linspace(0.0, 1.0, self.frames)[None] * (length - 1.0)        # [B, F]
        lo = tf.floor(pos)
        hi = tf.minimum(lo + 1.0, length - 1.0)
        w = (pos - lo)[..., None]                                              # [B, F, 1]
        interp = (tf.one_hot(tf.cast(lo, tf.int32), t) * (1.0 - w)
                  + tf.one_hot(tf.cast(hi, tf.int32), t) * w)                  # [B, F, T]
        present = tf.cast(tf.reduce_any(tf.not_equal(keypoints, 0.0), -1, keepdims=True),
                          keypoints.dtype)                                     # [B, T, K, 1]
        xp = tf.concat([keypoints, present], -1)                               # [B, T, K, 3]
        flat = tf.reshape(xp, [-1, t, k * 3])                                  # [B, T, K*3]
        return tf.reshape(tf.matmul(interp, flat), [-1, self.frames * k * 3])  # [B, F*K*3]

    def get_config(self):
        return {**super().get_config(), "frames": self.frames}


MODES = ("arithmetic", "geometric")  # in tie-break order: the bounded mix first
SHARE_GRID = np.round(np.linspace(0.0, 1.0, 21), 2)     # SignBART's share, steps of 0.05
LOG_T_GRID = np.round(np.linspace(-3.0, 3.0, 601), 2)   # log temperature, steps of 0.01


@_register
class MixLogProbs(keras.layers.Layer):
    """The members' logits, each divided by its temperature, mixed into log-probabilities.

    ``geometric``: log_softmax(sum w_i log_softmax(z_i / T_i)), the log-linear pool.
    ``arithmetic``: log(sum w_i softmax(z_i / T_i)), as a log-sum-exp of log w_i +
    log_softmax(z_i / T_i), so a confidently wrong member moves at most its share of the mass.
    Builtin TFLite ops only (MUL, LOG_SOFTMAX, ADD_N, MAXIMUM, SUB, EXP, ADD, LOG); a member of
    share 0 is left out of the graph (but for a gated mix's first member), so no log(0) is
    taken.

    ``gated``: the last input is a [B, 1] keep flag for the last member (``InRange``); where it
    is 0 that member abstains and its share goes to the first, so on a clip unlike anything
    its fit saw it cannot move the mix at all.
    """

    def __init__(self, weights: list[float], temperatures: list[float] | None = None,
                 mode: str = "geometric", gated: bool = False, **kwargs):
        super().__init__(**kwargs)
        if not weights or min(weights) < 0 or not np.isclose(sum(weights), 1.0):
            raise ValueError(f"weights must be >= 0 and sum to 1, got {weights}")
        temperatures = [1.0] * len(weights) if temperatures is None else temperatures
        if len(temperatures) != len(weights) or min(temperatures) <= 0:
            raise ValueError(f"temperatures must be > 0, one per weight, got {temperatures}")
        if mode not in MODES:
            raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        if gated and len(weights) < 2:
            raise ValueError("gated: needs a first member to take the gated one's share")
        self.mix = [float(w) for w in weights]
        self.temperatures = [float(t) for t in temperatures]
        self.mode = mode
        self.gated = bool(gated)

    def call(self, inputs):
        logits, shares = ((inputs[:-1], gated_shares(self.mix, inputs[-1])) if self.gated
                          else (inputs, self.mix))
        on = in_graph(self.mix, self.gated)
        members = [(w, tf.nn.log_softmax(x * (1.0 / t), -1))
                   for w, t, x, use in zip(shares, self.temperatures, logits, on) if use]
        if self.mode == "geometric":
            return tf.nn.log_softmax(tf.add_n([w * lp for w, lp in members]), -1)
        terms = [lp + (tf.math.log(tf.maximum(w, TINY)) if self.gated else float(np.log(w)))
                 for w, lp in members]
        top = functools.reduce(tf.maximum, terms)
        return top + tf.math.log(tf.add_n([tf.exp(x - top) for x in terms]))

    def get_config(self):
        return {**super().get_config(), "weights": self.mix,
                "temperatures": self.temperatures, "mode": self.mode, "gated": self.gated}


TINY = 1e-30   # an abstaining member's share inside the log: exp(-69), no log(0)


def in_graph(weights: list[float], gated: bool) -> list[bool]:
    """Which members the mix computes: those of share > 0, and under a gate the first, which
    takes the gated member's share wherever it abstains."""
    return [w > 0 or (gated and i == 0) for i, w in enumerate(weights)]


def gated_shares(weights: list[float], keep):
    """Per-clip shares: the last member's share times ``keep`` [N, 1], the rest to the first.
    Works on NumPy arrays and on tensors alike, so the graph and ``mix_logits`` agree."""
    last = weights[-1] * keep
    return [weights[0] + weights[-1] - last, *weights[1:-1], last]


@_register
class InRange(keras.layers.Layer):
    """[B, D] standardised features -> [B, 1]: 1 where their root-mean-square is within
    ``bound``, else 0. The baseline's z-scores on a signer unlike its training signers grow far
    beyond any inner signer's (benchmarks/README.md, the standardisation pad), and there its
    confident votes are noise."""

    def __init__(self, bound: float, **kwargs):
        super().__init__(**kwargs)
        if not bound > 0:
            raise ValueError(f"bound must be > 0, got {bound}")
        self.bound = float(bound)

    def call(self, z):
        return tf.cast(tf.reduce_mean(tf.square(z), -1, keepdims=True) <= self.bound ** 2,
                       z.dtype)

    def get_config(self):
        return {**super().get_config(), "bound": self.bound}


CUSTOM_OBJECTS = {"ResampleFrames": ResampleFrames, "MixLogProbs": MixLogProbs,
                  "InRange": InRange}


@dataclass(frozen=True)
class Mix:
    """How the two members are mixed: fitted on the inner signers, stored on rows and cards."""

    mode: str = "arithmetic"
    temperatures: tuple[float, float] = (1.0, 1.0)   # SignBART's, the baseline's
    weight: float = 0.5                              # SignBART's share
    gate: float | None = None   # the baseline abstains beyond this RMS z-score (None: never)


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits - logits.max(1, keepdims=True)
    return z - np.log(np.exp(z).sum(1, keepdims=True))


def mix_log_probs(logits: list[np.ndarray], temperatures, weights, mode: str,
                  keep: np.ndarray | None = None) -> np.ndarray:
    """The ensemble's log-probabilities, computed as ``MixLogProbs`` computes them; ``keep``
    [N, 1] gates the last member as its ``gated`` input does."""
    shares = weights if keep is None else gated_shares(list(weights), keep)
    on = in_graph(list(weights), keep is not None)
    members = [(w, log_softmax(np.asarray(x, np.float64) / t))
               for w, t, x, use in zip(shares, temperatures, logits, on) if use]
    if mode == "geometric":
        return log_softmax(sum(w * lp for w, lp in members))
    terms = [lp + np.log(np.maximum(w, TINY)) for w, lp in members]
    top = functools.reduce(np.maximum, terms)
    return top + np.log(sum(np.exp(x - top) for x in terms))


def mix_logits(signbart_logits: np.ndarray, baseline_logits: np.ndarray, mix: Mix,
               baseline_rms: np.ndarray | None = None) -> np.ndarray:
    """The ensemble's log-probabilities, as its exported graph computes them. A gated mix
    needs the baseline's RMS z-score per clip (``LinearBaseline.rms_z``)."""
    keep = None
    if mix.gate is not None:
        if baseline_rms is None:
            raise ValueError("a gated mix needs baseline_rms, the baseline's RMS z per clip")
        keep = (np.asarray(baseline_rms) <= mix.gate).astype(np.float64)[:, None]
    return mix_log_probs([signbart_logits, baseline_logits], mix.temperatures,
                         [mix.weight, 1.0 - mix.weight], mix.mode, keep)


def nll(log_probs: np.ndarray, y: np.ndarray) -> float:
    """Mean negative log-likelihood of the true classes: the proper score every fit uses."""
    return float(-log_probs[np.arange(len(y)), y].mean())


def fit_temperature(logits: np.ndarray, y: np.ndarray) -> float:
    """The temperature (on a log grid, 0.05-20) of lowest NLL on ``logits``; ties go to the
    one nearest 1. A fine grid, not a line search: deterministic and cheap at 10 classes."""
    scores = [(round(nll(log_softmax(logits / np.exp(g)), y), 9), abs(g)) for g in LOG_T_GRID]
    return float(np.exp(LOG_T_GRID[min(range(len(scores)), key=scores.__getitem__)]))


def fit_mix(signbart_logits: np.ndarray, baseline_logits: np.ndarray, y: np.ndarray,
            modes: tuple[str, ...] = MODES) -> Mix:
    """Each member's temperature, then the mode (of ``modes``) and SignBART's share of lowest
    inner NLL. Accuracy over 200 inner clips is too coarse to choose by, and it sent the share
    to 1.0 (pure SignBART) in many folds. Ties (to 1e-9) go to the arithmetic mode, then to
    the share nearest 0.5."""
    temps = (fit_temperature(signbart_logits, y), fit_temperature(baseline_logits, y))
    candidates = [Mix(m, temps, float(w)) for m in modes for w in SHARE_GRID]
    return min(candidates, key=lambda c: (
        round(nll(mix_logits(signbart_logits, baseline_logits, c), y), 9),
        abs(c.weight - 0.5), MODES.index(c.mode)))


def baseline_layers(baseline: LinearBaseline, num_keypoints: int) -> list:
    """The baseline's standardisation and linear map as two builtin layers. Folding the
    scale into the weights instead loses float32 precision on near-constant features (and
    the gate reads the standardised features between them)."""
    width = baseline.frames * num_keypoints * 3
    norm = keras.layers.Normalization(mean=baseline.mean, variance=baseline.std ** 2,
                                      name="baseline_standardize")
    dense = keras.layers.Dense(baseline.weights.shape[1], name="baseline_linear")
    dense.build((None, width))
    dense.set_weights([baseline.weights.astype(np.float32), baseline.bias.astype(np.float32)])
    return [norm, dense]


def build_ensemble(signbart: keras.Model, baseline: LinearBaseline, mix: Mix) -> keras.Model:
    """SignBART (share ``mix.weight``) + the linear baseline, one Functional model."""
    k = int(dict(zip(signbart.input_names, signbart.inputs))["keypoints"].shape[2])
    keypoints = keras.Input(shape=(None, k, 2), name="keypoints")  # [B, T, K, 2]
    mask = keras.Input(shape=(None,), name="attention_mask")  # [B, T]
    member = signbart({"keypoints": keypoints, "attention_mask": mask})  # [B, C]
    feats = ResampleFrames(baseline.frames, name="baseline_features")([keypoints, mask])
    standardize, linear = baseline_layers(baseline, k)
    z = standardize(feats)  # [B, F*K*3]
    members = [member, linear(z)]  # [B, C] each
    gated = mix.gate is not None and mix.weight < 1.0
    if gated:
        members.append(InRange(mix.gate, name="baseline_in_range")(z))  # [B, 1]
    logits = MixLogProbs([mix.weight, 1.0 - mix.weight], list(mix.temperatures), mix.mode,
                         gated=gated, name="mix")(members)  # [B, C] log-probabilities
    return keras.Model({"keypoints": keypoints, "attention_mask": mask}, logits, name="ensemble")
