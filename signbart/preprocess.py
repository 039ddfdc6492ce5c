"""SignBART preprocessing, vectorised over every frame of every sample at once.

Semantics of the reference implementation: select the variant's joints, keep x and y, clip to
[0, 1], sub-sample sequences longer than ``max_frames`` uniformly, then normalise each frame's
groups (pose / left hand / right hand / face) by the group's bounding box with a 5 % margin,
the shorter side padded to a square and the box clamped to [0, 1]. Unlike the reference, the
box is computed over the points MediaPipe actually found (x = y = 0 means missing), and
missing points stay exactly 0 so the model can tell them apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signbart.config import VariantConfig
from signbart.layouts import Layout

MARGIN = 0.05


@dataclass(frozen=True)
class Prepared:
    x: np.ndarray      # float32 [N, max_frames, K, 2], zero-padded in time
    mask: np.ndarray   # float32 [N, max_frames], 1 = real frame
    y: np.ndarray      # int32 [N]

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Selection:
    """The variant's keypoints as positions in a stored layout, plus their groups."""

    indices: np.ndarray                  # int [K] into the stored layout
    groups: tuple[np.ndarray, ...]       # positions (into the K selected) of each group
    mirror: np.ndarray                   # int [K]: slot each selected keypoint moves to

    @classmethod
    def of(cls, variant: VariantConfig, stored: Layout) -> Selection:
        keys = variant.keys(stored)
        sub = stored.subset(variant.name, keys)
        return cls(indices=np.array([stored.index(k) for k in keys]),
                   groups=tuple(np.array(v) for v in sub.groups().values()),
                   mirror=np.array(sub.mirror_permutation()))


def uniform_indices(n_frames: np.ndarray, max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Frame indices (flat, per-sample concatenated) and kept lengths after sub-sampling.

    A sequence of T > max_frames frames keeps floor(linspace(0, T-1, max_frames)).
    """
    n_frames = np.asarray(n_frames, dtype=np.int64)
    lengths = np.minimum(n_frames, max_frames)
    sample = np.repeat(np.arange(len(n_frames)), lengths)
    pos = np.arange(lengths.sum()) - np.repeat(np.cumsum(lengths) - lengths, lengths)
    t = n_frames[sample]
    step = (t - 1) / np.maximum(lengths[sample] - 1, 1)
    local = np.where(t > max_frames, np.floor(pos * step + 1e-9).astype(np.int64), pos)
    return local, lengths


def normalize_groups(xy: np.ndarray, groups) -> np.ndarray:
    """Per frame and per group bounding-box normalisation of ``xy`` [F, K, 2]; returns a copy."""
    out = np.zeros_like(xy)
    inf = np.array(np.inf, xy.dtype)
    for g in groups:
        pts = xy[:, g]                                        # [F, n, 2]
        present = (pts != 0).any(-1, keepdims=True)           # [F, n, 1]
        lo = np.where(present, pts, inf).min(1)               # [F, 2]
        hi = np.where(present, pts, -inf).max(1)              # [F, 2]
        size = np.maximum(hi - lo, 0)                         # [F, 2] (w, h); 0 if none found
        side = size.max(1, keepdims=True)                     # [F, 1]
        delta = MARGIN * side + (side - size) / 2             # margin + pad shorter side
        start = np.clip(lo - delta, 0.0, 1.0)[:, None]        # [F, 1, 2]
        span = np.clip(hi + delta, 0.0, 1.0)[:, None] - start
        norm = np.where(span > 0, (pts - start) / np.where(span > 0, span, 1), pts)
        out[:, g] = np.where(present, norm, 0)
    return out


def prepare_arrays(samples: list[np.ndarray], labels, selection: Selection,
                   max_frames: int = 64, chunk: int = 32) -> Prepared:
    """Preprocess raw [T, K_stored, 3] arrays into padded model inputs.

    Works on ``chunk`` samples at a time: every step is vectorised over the chunk's frames,
    and chunk-sized temporaries stay in cache instead of faulting in fresh memory.
    """
    n, k = len(samples), len(selection.indices)
    x = np.zeros((n, max_frames, k, 2), np.float32)
    mask = np.zeros((n, max_frames), np.float32)
    for c in range(0, n, chunk):
        part = samples[c:c + chunk]
        n_frames = np.array([len(s) for s in part])
        local, lengths = uniform_indices(n_frames, max_frames)
        starts = np.concatenate([[0], np.cumsum(n_frames)[:-1]])
        rows = np.repeat(starts, lengths) + local                        # kept frames
        flat = np.concatenate(part)                                      # [sum T, K_stored, 3]
        frames = flat[rows[:, None], selection.indices[None, :], :2]     # [F, K, 2]
        np.clip(frames, 0.0, 1.0, out=frames)
        valid = np.arange(max_frames)[None, :] < lengths[:, None]        # [chunk, T]
        x[c:c + chunk][valid] = normalize_groups(frames.astype(np.float32, copy=False),
                                                 selection.groups)
        mask[c:c + chunk] = valid
    return Prepared(x=x, mask=mask, y=np.asarray(labels, dtype=np.int32))


def prepare(dataset, indices, variant: VariantConfig, max_frames: int = 64) -> Prepared:
    """Model inputs for the dataset samples at ``indices`` (a fold's train/val/test view)."""
    indices = np.asarray(indices, dtype=np.int64)
    selection = Selection.of(variant, dataset.layout)
    samples = [dataset.keypoints(i) for i in indices]
    if not samples:
        k = len(selection.indices)
        return Prepared(np.zeros((0, max_frames, k, 2), np.float32),
                        np.zeros((0, max_frames), np.float32), np.zeros((0,), np.int32))
    return prepare_arrays(samples, dataset.label_ids[indices], selection, max_frames)
