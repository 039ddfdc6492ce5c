"""Synthetic sign datasets: class = a motion pattern of the arms and hands, signer = a body.

Each class moves the dominant (right) hand along its own closed curve with its own hand
shape and, for some classes, a moving non-dominant hand. Each signer has their own body size,
position, speed, amplitude, tilt and jitter, so a model must generalise across bodies: leave-
one-signer-out on this data is a real test, not memorisation. MediaPipe-like dropouts (a hand
missing for a run of frames) are included. The data are labelled synthetic everywhere.
"""

from __future__ import annotations

import numpy as np

from signbart.data import DatasetWriter, clear_dataset, remove_stale_temp
from signbart.layouts import FACE_POINTS, get_layout
from signbart.outlock import OutputLock

# Rest positions of the 23 upper-body pose points, in shoulder-width units (x right, y down),
# for a signer facing the camera (their left is image right).
_POSE = np.array([
    [0.0, -0.95], [0.07, -1.02], [0.12, -1.02], [0.17, -1.02], [-0.07, -1.02], [-0.12, -1.02],
    [-0.17, -1.02], [0.25, -0.98], [-0.25, -0.98], [0.07, -0.82], [-0.07, -0.82],
    [0.5, -0.45], [-0.5, -0.45], [0.6, 0.05], [-0.6, 0.05], [0.45, 0.45], [-0.45, 0.45],
    [0.47, 0.55], [-0.47, 0.55], [0.45, 0.57], [-0.45, 0.57], [0.4, 0.52], [-0.4, 0.52],
])
# Finger directions (radians from "up") and per-joint lengths of a hand, wrist-relative.
_FINGER_ANGLES = np.array([-0.9, -0.35, 0.0, 0.3, 0.6])
_JOINT = np.array([0.06, 0.05, 0.04, 0.03])


def _hand(wrist: np.ndarray, angle: np.ndarray, spread: float, curl: float) -> np.ndarray:
    """21 hand points [T, 21, 2] from wrist positions [T, 2] and a hand orientation [T]."""
    pts = [wrist]
    for f, base in enumerate(_FINGER_ANGLES):
        a = angle[:, None] + base * spread
        r = np.cumsum(_JOINT * (1.0 - curl * np.arange(4) / 4))
        if f == 0:
            r = r * 0.8
        pts += [wrist + r[j] * np.stack([np.sin(a[:, 0]), -np.cos(a[:, 0])], -1) for j in range(4)]
    return np.stack(pts, 1)


def _class_params(n_classes: int, rng: np.random.Generator) -> list[dict]:
    return [dict(amp=rng.uniform(0.15, 0.35, 2), freq=rng.choice([1, 2], 2),
                 phase=rng.uniform(0, 2 * np.pi, 2), center=rng.uniform([-0.5, -0.7], [0.1, 0.0]),
                 spread=rng.uniform(0.4, 1.4), curl=rng.uniform(0.0, 0.9),
                 twist=rng.uniform(-1.5, 1.5), two_hands=bool(c % 3 == 1))
            for c in range(n_classes)]


def _signer_params(n_signers: int, rng: np.random.Generator) -> list[dict]:
    return [dict(scale=rng.uniform(0.28, 0.4), offset=rng.uniform([0.42, 0.42], [0.58, 0.55]),
                 speed=rng.uniform(0.75, 1.3), amp=rng.uniform(0.8, 1.2),
                 tilt=rng.uniform(-0.15, 0.15), noise=rng.uniform(0.002, 0.008),
                 drop=rng.uniform(0.0, 0.15))
            for _ in range(n_signers)]


def _sample(cls: dict, signer: dict, layout, rng: np.random.Generator) -> np.ndarray:
    n = int(round(rng.uniform(40, 56) / signer["speed"]))
    t = np.linspace(0, 2 * np.pi, n)
    amp = cls["amp"] * signer["amp"] * rng.uniform(0.9, 1.1, 2)
    curve = np.stack([amp[0] * np.sin(cls["freq"][0] * t + cls["phase"][0]),
                      amp[1] * np.sin(cls["freq"][1] * t + cls["phase"][1])], -1)
    right_wrist = cls["center"] + curve                                   # [T, 2]
    left_wrist = (np.array([0.45, 0.45]) if not cls["two_hands"]
                  else cls["center"] * [-1, 1] + curve * [-1, 1])
    left_wrist = np.broadcast_to(left_wrist, (n, 2))
    pose = np.repeat(_POSE[None], n, 0).copy()
    for wrist, (sh, el, w, tips) in ((right_wrist, (12, 14, 16, (18, 20, 22))),
                                      (left_wrist, (11, 13, 15, (17, 19, 21)))):
        pose[:, w] = wrist
        pose[:, el] = (pose[:, sh] + wrist) / 2 + [0.0, 0.15]
        for tip in tips:
            pose[:, tip] = wrist + (_POSE[tip] - _POSE[w])
    twist = cls["twist"] * np.sin(t)
    hands = {"right_hand": _hand(right_wrist, twist, cls["spread"], cls["curl"]),
             "left_hand": _hand(left_wrist, -twist if cls["two_hands"] else np.zeros(n),
                                cls["spread"] if cls["two_hands"] else 1.0, 0.5)}
    face_center = pose[:, 0] + [0.0, 0.05]
    out = np.zeros((n, len(layout), 3), np.float32)
    for k, kp in enumerate(layout.keypoints):
        if kp.group == "pose":
            out[:, k, :2] = pose[:, kp.source_index]
        elif kp.group == "face":
            i = list(FACE_POINTS).index(kp.name)
            ang = 2 * np.pi * i / len(FACE_POINTS)
            out[:, k, :2] = face_center + 0.12 * np.array([np.cos(ang), np.sin(ang)])
        else:
            out[:, k, :2] = hands[kp.group][:, kp.source_index]
    c, s = np.cos(signer["tilt"]), np.sin(signer["tilt"])
    xy = out[..., :2] @ np.array([[c, s], [-s, c]]) * signer["scale"] + signer["offset"]
    xy = xy + rng.normal(0, signer["noise"], xy.shape)
    out[..., :2] = xy
    out[..., 2] = rng.normal(0, 0.02, out.shape[:2])
    groups = layout.groups()
    for hand in ("left_hand", "right_hand"):
        if rng.random() < signer["drop"] * 3:
            start = rng.integers(0, n)
            out[start:start + rng.integers(1, 8), groups[hand]] = 0.0
    outside = (out[..., :2] < 0).any(-1) | (out[..., :2] > 1).any(-1)
    out[outside] = 0.0
    return out


def synthesize(out_dir, signers: int = 4, classes: int = 6, reps: int = 5,
               layout: str = "holistic-65", seed: int = 0, overwrite: bool = False) -> str:
    """Write a synthetic dataset; the same arguments give byte-identical files.
    ``overwrite`` replaces a dataset already in ``out_dir`` (otherwise that is an error)."""
    with OutputLock(out_dir):
        remove_stale_temp(out_dir)
        if overwrite:
            clear_dataset(out_dir)
        return _synthesize(out_dir, signers, classes, reps, layout, seed)


def _synthesize(out_dir, signers: int, classes: int, reps: int, layout: str, seed: int) -> str:
    rng = np.random.default_rng(seed)
    lay = get_layout(layout)
    class_params = _class_params(classes, rng)
    signer_params = _signer_params(signers, rng)
    labels = [f"C{c + 1:02d}" for c in range(classes)]
    desc = (f"SYNTHETIC sign data (signbart synth, seed {seed}): {signers} signers x {classes} "
            f"classes x {reps} repetitions; not real signing")
    with DatasetWriter(out_dir, lay, labels=labels, description=desc, synthetic=True) as w:
        for s, sp in enumerate(signer_params):
            for c, cp in enumerate(class_params):
                for r in range(reps):
                    signer, rep = f"user{s + 1:02d}", f"R{r + 1:02d}"
                    w.add(f"{signer}_{labels[c]}_{rep}", signer, labels[c], rep,
                          _sample(cp, sp, lay, rng), source=f"synthetic/{signer}_{labels[c]}_{rep}")
    return str(out_dir)
