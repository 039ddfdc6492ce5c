"""Training-time augmentation of preprocessed samples, as TF ops inside ``tf.data.map``.

Runs per sample in parallel map calls, so no Python function sits on the input path. All
randomness is stateless and keyed by a per-element seed, so a run's augmentations repeat
exactly for a given training seed. Missing points (x = y = 0) stay missing under every
transform, and mirroring swaps left/right slots as well as flipping x.
"""

from __future__ import annotations

import math

import numpy as np

from signbart.config import AugmentConfig
from signbart.tfkeras import tf


def _rand(seed, salt: int, shape=(), lo=0.0, hi=1.0):
    return tf.random.stateless_uniform(shape, seed=seed + [0, salt], minval=lo, maxval=hi)


def _present(x):
    return tf.reduce_any(tf.not_equal(x, 0.0), axis=-1, keepdims=True)          # [T, K, 1]


def _keep_missing(x_new, x_old):
    return tf.where(_present(x_old), tf.clip_by_value(x_new, 0.0, 1.0), 0.0)


def rotate(x, angle):
    """Rotate every point about the box centre (0.5, 0.5) by ``angle`` radians."""
    c, s = tf.cos(angle), tf.sin(angle)
    d = x - 0.5
    rx = d[..., 0] * c - d[..., 1] * s
    ry = d[..., 0] * s + d[..., 1] * c
    return _keep_missing(tf.stack([rx, ry], -1) + 0.5, x)


def mirror(x, permutation):
    """Horizontal mirror: x -> 1 - x, and each keypoint moves to its left/right twin's slot."""
    flipped = tf.stack([1.0 - x[..., 0], x[..., 1]], -1)
    flipped = _keep_missing(flipped, x)
    inverse = np.argsort(permutation)        # slot j receives keypoint inverse[j]
    return tf.gather(flipped, inverse, axis=1)


def resample(x, mask, positions):
    """Gather frames at ``positions`` (float, in the valid range) and re-pad to full length."""
    max_frames = tf.shape(x)[0]
    idx = tf.cast(tf.floor(positions), tf.int32)
    n = tf.minimum(tf.shape(idx)[0], max_frames)
    idx = idx[:n]
    frames = tf.gather(x, idx)
    pad = max_frames - n
    x_new = tf.pad(frames, [[0, pad], [0, 0], [0, 0]])
    m_new = tf.pad(tf.ones([n], mask.dtype), [[0, pad]])
    return x_new, m_new


def _length(mask):
    return tf.cast(tf.reduce_sum(mask), tf.int32)


def time_scale(x, mask, factor):
    """Uniform speed change: ``factor`` > 1 stretches the sign over more frames (capped)."""
    length = _length(mask)
    max_frames = tf.shape(x)[0]
    new_len = tf.clip_by_value(tf.cast(tf.round(tf.cast(length, tf.float32) * factor), tf.int32),
                               1, max_frames)
    positions = tf.linspace(0.0, tf.cast(length - 1, tf.float32), new_len)
    return resample(x, mask, positions)


def clip_frames(x, mask, seed, keep_lo=0.7, keep_hi=0.95):
    """Drop frames: keep a fraction of them, evenly spaced or at random sorted positions."""
    length = _length(mask)
    keep = tf.maximum(1, tf.cast(tf.round(tf.cast(length, tf.float32)
                                          * _rand(seed, 11, lo=keep_lo, hi=keep_hi)), tf.int32))
    uniform = tf.linspace(0.0, tf.cast(length - 1, tf.float32), keep)
    scores = _rand(seed, 12, shape=[tf.shape(x)[0]])
    scores = tf.where(tf.range(tf.shape(x)[0]) < length, scores, 2.0)
    random_pos = tf.cast(tf.sort(tf.math.top_k(-scores, k=keep).indices), tf.float32)
    positions = tf.cond(_rand(seed, 13) < 0.5, lambda: uniform, lambda: random_pos)
    return resample(x, mask, positions)


def add_noise(x, seed, std):
    return _keep_missing(x + tf.random.stateless_normal(tf.shape(x), seed=seed + [0, 21],
                                                        stddev=std), x)


def drop_group(x, positions):
    """Zero a whole keypoint group (e.g. the non-dominant hand) in every frame."""
    keep = np.ones(x.shape[1], np.float32)
    keep[list(positions)] = 0.0
    return x * keep[None, :, None]


def paste_hand(x, mask, seed, positions, bank, noise=0.01):
    """Put a still hand from ``bank`` [M, n, 2] into the ``positions`` slots of every real frame
    where that hand is missing: a signer who keeps the non-dominant hand in view, simulated."""
    pick = tf.random.stateless_uniform([], seed + [0, 51], 0, bank.shape[0], dtype=tf.int64)
    shape = tf.gather(tf.constant(bank, tf.float32), pick)                     # [n, 2]
    hand = shape[None] + tf.random.stateless_normal([tf.shape(x)[0], bank.shape[1], 2],
                                                    seed + [0, 52], stddev=noise)
    hand = tf.clip_by_value(hand, 1e-3, 1.0)
    old = tf.gather(x, positions, axis=1)                                       # [T, n, 2]
    fill = tf.logical_and(tf.logical_not(tf.reduce_any(_present(old), axis=1)),  # [T, 1]
                          mask[:, None] > 0)
    new = tf.where(fill[:, :, None], hand, old)
    keep = np.ones(x.shape[1], bool)
    keep[list(positions)] = False
    index = np.full(x.shape[1], 0)
    index[list(positions)] = np.arange(len(positions))
    return tf.where(keep[None, :, None], x, tf.gather(new, index, axis=1))


def hand_bank(x: np.ndarray, positions, size: int = 256, seed: int = 0) -> np.ndarray:
    """Up to ``size`` hand shapes [M, n, 2] from the training frames where that hand was seen."""
    hands = x[:, :, positions].reshape(-1, len(positions), 2)
    hands = hands[(hands != 0).any(-1).all(-1)]
    if not len(hands):
        return np.zeros((0, len(positions), 2), np.float32)
    pick = np.random.default_rng(seed).choice(len(hands), min(size, len(hands)), replace=False)
    return hands[np.sort(pick)].astype(np.float32)


def drop_frames(x, mask, seed, rate):
    """Zero single frames' keypoints (tracking lost for a frame), keeping the sequence length."""
    lost = _rand(seed, 31, shape=tf.shape(mask)) < rate
    return tf.where(lost[:, None, None], 0.0, x)


def affine_groups(x, groups, seed, scale, shear, shift):
    """Per-group random scale/shear/shift about the group's box centre (0.5, 0.5)."""
    out = []
    order = np.argsort(np.concatenate(groups))
    for g_i, g in enumerate(groups):
        pts = tf.gather(x, g, axis=1) - 0.5
        r = _rand(seed, 41 + g_i, shape=[5], lo=-1.0, hi=1.0)
        sx, sy = 1.0 + scale * r[0], 1.0 + scale * r[1]
        matrix = tf.reshape(tf.stack([sx, shear * r[2], shear * r[3], sy]), [2, 2])
        moved = tf.einsum("tkc,dc->tkd", pts, matrix) + 0.5 + shift * r[4]
        out.append(_keep_missing(moved, tf.gather(x, g, axis=1)))
    return tf.gather(tf.concat(out, axis=1), order, axis=1)


def make_augment(cfg: AugmentConfig, groups, permutation, non_dominant, bank=None):
    """A ``(x, mask, seed) -> (x, mask)`` map function for ``tf.data``.

    ``groups``/``permutation`` come from ``preprocess.Selection``; ``non_dominant`` lists the
    positions of the left-hand slots (mirrored data puts the dominant hand on the right);
    ``bank`` holds non-dominant hand shapes for ``hand_paste`` (see ``hand_bank``).
    """
    if cfg.hand_paste > 0 and (bank is None or not len(bank) or not len(non_dominant)):
        raise ValueError("augment.hand_paste needs non-dominant hand slots and training frames "
                         "in which that hand was seen")
    groups = [np.asarray(g) for g in groups]
    reference = []
    if cfg.rotate_deg > 0:
        reference.append(lambda x, m, s: (rotate(x, _rand(s, 1, lo=-1.0, hi=1.0)
                                                 * math.radians(cfg.rotate_deg)), m))
    if cfg.noise_std > 0:
        reference.append(lambda x, m, s: (add_noise(x, s, cfg.noise_std), m))
    if cfg.clip_frames:
        reference.append(lambda x, m, s: clip_frames(x, m, s))
    if cfg.time_warp is not None:
        lo, hi = cfg.time_warp
        reference.append(lambda x, m, s: time_scale(x, m, _rand(s, 2, lo=lo, hi=hi)))
    if cfg.flip:
        reference.append(lambda x, m, s: (mirror(x, permutation), m))

    def augment(x, mask, seed):
        seed = tf.cast(seed, tf.int64)
        if reference and cfg.prob > 0:
            chosen = _rand(seed, 100, shape=[len(reference)]) < 0.5
            forced = tf.one_hot(tf.random.stateless_uniform([], seed + [0, 101], 0, len(reference),
                                                            dtype=tf.int64), len(reference)) > 0
            chosen = tf.where(tf.reduce_any(chosen), chosen, forced)
            active = _rand(seed, 102) < cfg.prob
            for i, fn in enumerate(reference):
                sub = seed + [0, 1000 * (i + 1)]
                x, mask = tf.cond(active & chosen[i],
                                  lambda fn=fn, sub=sub, x=x, mask=mask: fn(x, mask, sub),
                                  lambda x=x, mask=mask: (x, mask))
        if cfg.speed is not None:
            lo, hi = cfg.speed
            x, mask = time_scale(x, mask, _rand(seed, 200, lo=lo, hi=hi))
        if cfg.affine_prob > 0:
            x = tf.cond(_rand(seed, 201) < cfg.affine_prob,
                        lambda: affine_groups(x, groups, seed, cfg.affine_scale, cfg.affine_shear,
                                              cfg.affine_shift),
                        lambda: x)
        if cfg.hand_drop > 0 and len(non_dominant):
            x = tf.cond(_rand(seed, 202) < cfg.hand_drop, lambda: drop_group(x, non_dominant),
                        lambda: x)
        if cfg.hand_paste > 0:
            x = tf.cond(_rand(seed, 203) < cfg.hand_paste,
                        lambda: paste_hand(x, mask, seed, non_dominant, bank), lambda: x)
        if cfg.frame_drop > 0:
            x = drop_frames(x, mask, seed, cfg.frame_drop)
        return x, mask

    return augment
