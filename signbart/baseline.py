"""The floor every SignBART number is set against: a linear classifier on the same inputs.

Multinomial logistic regression on the preprocessed, group-normalised keypoints, resampled
to a fixed number of frames (so sequence length and speed drop out), with a missing-point
indicator per keypoint and frame. Trained full-batch in NumPy in about a second per fold.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from signbart.preprocess import Prepared


def features(x: np.ndarray, mask: np.ndarray, frames: int = 16) -> np.ndarray:
    """[N, frames * K * 3]: x/y and presence, linearly resampled over each valid range."""
    n, _, k, _ = x.shape
    lengths = np.maximum(mask.sum(1), 1)                                   # [N]
    pos = np.linspace(0, 1, frames)[None] * (lengths[:, None] - 1)         # [N, frames]
    lo = np.floor(pos).astype(int)
    hi = np.minimum(lo + 1, lengths[:, None].astype(int) - 1)
    w = (pos - lo)[..., None, None]
    rows = np.arange(n)[:, None]
    present = (x != 0).any(-1, keepdims=True).astype(np.float32)
    xp = np.concatenate([x, present], -1)                                  # [N, T, K, 3]
    out = xp[rows, lo] * (1 - w) + xp[rows, hi] * w                       # [N, frames, K, 3]
    return out.reshape(n, -1).astype(np.float32)


@dataclass
class LinearBaseline:
    weights: np.ndarray
    bias: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    frames: int
    seconds: float

    @property
    def params(self) -> int:
        return int(self.weights.size + self.bias.size)

    def zscores(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return (features(x, mask, self.frames) - self.mean) / self.std

    def predict(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        return self.zscores(x, mask) @ self.weights + self.bias

    def rms_z(self, x: np.ndarray, mask: np.ndarray) -> np.ndarray:
        """[N]: how far each clip lies from the training clips, in the model's own units (the
        ensemble's gate, ``ensemble.InRange``)."""
        return np.sqrt((self.zscores(x, mask) ** 2).mean(1))


def fit(prep: Prepared, num_labels: int, seed: int = 0, frames: int = 16, l2: float = 1e-3,
        steps: int = 300, lr: float = 0.05, std_pad: float = 0.2) -> LinearBaseline:
    """Softmax regression with Adam, full batch; deterministic for a seed.

    ``std_pad`` is added to each feature's standard deviation before standardising: a feature
    almost constant over the training signers (a point they never showed) otherwise becomes a
    z-score in the tens of thousands on a signer who shows it, and the model's vote with it
    (benchmarks/bench_baseline_pad.py: on the published folds' inner signers 0.2 is the one
    pad within the tie for both the 46 and the 90 framed keypoints)."""
    start = time.perf_counter()
    f = features(prep.x, prep.mask, frames)
    mean, std = f.mean(0), f.std(0) + std_pad
    f = (f - mean) / std
    rng = np.random.default_rng(seed)
    w = rng.normal(0, 0.01, (f.shape[1], num_labels)).astype(np.float32)
    b = np.zeros(num_labels, np.float32)
    onehot = np.eye(num_labels, dtype=np.float32)[prep.y]
    m = [np.zeros_like(w), np.zeros_like(b)]
    v = [np.zeros_like(w), np.zeros_like(b)]
    for t in range(1, steps + 1):
        logits = f @ w + b
        p = np.exp(logits - logits.max(1, keepdims=True))
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) / len(f)
        grads = [f.T @ g + l2 * w, g.sum(0)]
        for i, (param, grad) in enumerate(zip((w, b), grads)):
            m[i] = 0.9 * m[i] + 0.1 * grad
            v[i] = 0.999 * v[i] + 0.001 * grad ** 2
            param -= lr * (m[i] / (1 - 0.9 ** t)) / (np.sqrt(v[i] / (1 - 0.999 ** t)) + 1e-8)
    return LinearBaseline(w, b, mean, std, frames, time.perf_counter() - start)
