"""SignBART preprocessing, vectorised over every frame of every sample at once.

Semantics of the reference implementation: select the variant's joints, keep x and y, clip to
[0, 1], sub-sample sequences longer than ``max_frames`` uniformly, then normalise each frame's
groups (pose / left hand / right hand / face) by the group's bounding box with a 5 % margin,
the shorter side padded to a square and the box clamped to [0, 1]. Unlike the reference, the
box is computed over the points MediaPipe actually found (x = y = 0 means missing), and
missing points stay exactly 0 so the model can tell them apart.

With a variant's ``framing`` set, each sample is first moved and scaled so the signer's
shoulders sit where the config says (``reframe``): signers filmed from higher up or closer in
all look as if framed alike, and a hand that would fall below that common frame counts as
out of view. On MLR511 this is what separates user03 (framed high, resting hands in view)
from everyone else (resting hands below the frame).

With ``handedness: auto``, a sample whose left hand is the more active (``hand_activity``) is
mirrored first (``canonical``), so a left-handed signer needs no ``signers.csv`` entry or
``predict --mirror``: the models see the more active hand (the dominant one, in a one-handed
sign) in the right-hand slots either way.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from signbart.config import (
    ANCHOR_KEYS,
    HANDS,
    MAX_FRAMES,
    MOUTH,
    SHOULDERS,
    FramingConfig,
    VariantConfig,
)
from signbart.layouts import Layout, mirror_key

MARGIN = 0.05
ANCHOR_SPAN = 4.0     # shoulder widths that [0, 1] covers, centred on the shoulder midpoint
MAX_STEP = 0.1        # most a hand centroid's one-frame move counts towards its activity


@dataclass(frozen=True)
class Prepared:
    x: np.ndarray          # float32 [N, max_frames, K, 2], zero-padded in time
    mask: np.ndarray       # float32 [N, max_frames], 1 = real frame
    y: np.ndarray          # int32 [N]
    mirrored: np.ndarray   # bool [N]: mirrored by ``handedness: auto``

    def __len__(self) -> int:
        return len(self.y)


@dataclass(frozen=True)
class Selection:
    """The variant's keypoints as positions in a stored layout, plus their groups."""

    indices: np.ndarray                  # int [K] into the stored layout
    groups: tuple[np.ndarray, ...]       # positions (into the K selected) of each group
    mirror: np.ndarray                   # int [K]: slot each selected keypoint moves to
    framing: FramingConfig | None = None
    shoulders: np.ndarray | None = None  # int [2] into the stored layout
    hands: tuple[np.ndarray, ...] = ()   # stored positions of each hand group
    mouth: np.ndarray | None = None      # int [2] into the stored layout; set with anchors
    anchors: bool = False
    flip: np.ndarray | None = None       # int [K_stored]: slot j of a mirrored sample takes
                                         # stored keypoint flip[j]; set with handedness auto

    @classmethod
    def of(cls, variant: VariantConfig, stored: Layout) -> Selection:
        keys = variant.keys(stored)
        sub = stored.subset(variant.name, keys)
        groups = tuple(np.array(v) for v in sub.groups().values())
        mirror = sub.mirror_permutation()
        shoulders, hands, mouth, flip = None, (), None, None
        auto = variant.handedness == "auto"
        if variant.framing is not None or variant.anchors or auto:
            by_group = stored.groups()
            hands = tuple(np.array(by_group[g]) for g in HANDS if g in by_group)
        if variant.framing is not None or variant.anchors:
            shoulders = np.array([stored.index(k) for k in SHOULDERS])
        if auto:
            flip = np.argsort(stored.mirror_permutation())
        if variant.anchors:
            mouth = np.array([stored.index(k) for k in MOUTH])
            groups += (np.arange(len(keys), len(keys) + len(ANCHOR_KEYS)),)
            mirror += [len(keys) + ANCHOR_KEYS.index(_mirror_anchor(k)) for k in ANCHOR_KEYS]
        return cls(indices=np.array([stored.index(k) for k in keys]), groups=groups,
                   mirror=np.array(mirror), framing=variant.framing, shoulders=shoulders,
                   hands=hands, mouth=mouth, anchors=variant.anchors, flip=flip)

    @property
    def width(self) -> int:
        """Model input slots: the selected keypoints, then the anchor features."""
        return len(self.indices) + (len(ANCHOR_KEYS) if self.anchors else 0)


def _mirror_anchor(key: str) -> str:
    side, feature = key.split(".", 1)[1].split("_", 1)
    return f"anchor.{mirror_key('pose.' + side).split('.')[1]}_{feature}"


def mirror_sample(sample: np.ndarray, flip: np.ndarray) -> np.ndarray:
    """The raw [T, K_stored, C] sample as a mirrored video would give it: x -> 1 - x for the
    points MediaPipe found (missing points stay exactly 0), each keypoint in its left/right
    twin's slot (``flip``, the inverse of ``Layout.mirror_permutation``)."""
    present = (sample[..., :2] != 0).any(-1)
    out = sample.copy()
    out[..., 0] = np.where(present, 1 - sample[..., 0], 0)
    return out[:, flip]


def hand_activity(sample: np.ndarray, hands: tuple[np.ndarray, ...]) -> np.ndarray:
    """How much each hand group of a raw sample signs: [left, right] (``HANDS`` order).

    The path length of the hand's centroid over consecutive frames where it is seen, in frame
    units, plus the share of frames it is seen in. The dominant hand moves most; a resting
    hand barely moves and MediaPipe often loses it, so it scores low on both. A centroid that
    jumps between two frames (a hand swapped or found elsewhere) counts at most ``MAX_STEP``.
    """
    xy = sample[..., :2].astype(np.float64)
    out = np.zeros(len(hands))
    for h, hand in enumerate(hands):
        seen = (xy[:, hand] != 0).any(-1)                                  # [T, 21]
        found = seen.any(1)
        centroid = (xy[:, hand] * seen[..., None]).sum(1) / np.maximum(seen.sum(1), 1)[:, None]
        step = np.minimum(np.linalg.norm(np.diff(centroid, axis=0), axis=-1), MAX_STEP)
        out[h] = step[found[1:] & found[:-1]].sum() + found.mean()
    return out


def canonical(sample: np.ndarray, selection: Selection) -> tuple[np.ndarray, bool]:
    """The sample with its more active hand in the right-hand slots, and whether it was
    mirrored for that; unchanged unless the variant's handedness is auto. A tie (no hand
    seen, or both alike) is left as extracted."""
    if selection.flip is None:
        return sample, False
    left, right = hand_activity(sample, selection.hands)
    if left > right:
        return mirror_sample(sample, selection.flip), True
    return sample, False


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


def reframe(sample: np.ndarray, selection: Selection) -> np.ndarray:
    """Move and scale one raw [T, K_stored, >=2] sample so its shoulders sit where
    ``selection.framing`` says, then drop each hand in the frames where its mean height falls
    below the frame (y > 1). Uses the median over frames of the shoulder midpoint and width,
    so a single mis-tracked frame cannot move the whole sign. Missing points stay 0."""
    xy = sample[..., :2]
    present = (xy != 0).any(-1)                                            # [T, K]
    sh = xy[:, selection.shoulders]                                        # [T, 2, 2]
    both = present[:, selection.shoulders].all(1)
    width = np.abs(sh[both, 0, 0] - sh[both, 1, 0])
    if not both.any() or np.median(width) <= 0:
        return sample
    centre = np.median(sh[both].mean(1), 0)                                # [2]
    scale = selection.framing.shoulder_width / np.median(width)
    target = np.array([0.5, selection.framing.shoulder_y], np.float32)
    out = sample.copy()
    out[..., :2] = np.where(present[..., None], (xy - centre) * scale + target, 0)
    for hand in selection.hands:
        seen = present[:, hand]
        heights = np.where(seen, out[:, hand, 1], 0).sum(1) / np.maximum(seen.sum(1), 1)
        out[np.ix_((heights > 1.0) & seen.any(1), hand)] = 0
    return out


def anchor_features(frames: np.ndarray, lengths: np.ndarray, sel: Selection) -> np.ndarray:
    """Where each hand is and how it moves, relative to the signer's body: [F, 14, 2].

    Per-group box normalisation keeps a hand's shape but throws away where it is and how
    fast it goes, which is what tells signs made with the same hand shape at the mouth or at
    the chest apart. Per hand: wrist, index fingertip and centroid relative to the shoulder
    midpoint (``ANCHOR_SPAN`` shoulder widths across [0, 1]), fingertip minus mouth, the
    centroid's displacement over the last 1 and 2 frames (in shoulder widths) and a presence
    flag (0.5). The shoulder midpoint and width are medians over the sequence.
    Every value is centred on 0.5, so the mirror and rotation augmentations stay exact;
    anything not seen is 0, as missing keypoints are.
    """
    sample = np.repeat(np.arange(len(lengths)), lengths)                 # [F]
    present = (frames != 0).any(-1)                                      # [F, Ks]
    centre = np.zeros((len(lengths), 2), np.float32)
    width = np.zeros(len(lengths), np.float32)
    sh, both = frames[:, sel.shoulders], present[:, sel.shoulders].all(1)
    for i in range(len(lengths)):
        ok = both & (sample == i)
        if ok.any():
            centre[i] = np.median(sh[ok].mean(1), 0)
            width[i] = np.median(np.abs(sh[ok, 0, 0] - sh[ok, 1, 0]))
    body = width[sample] > 0                                             # [F]
    w = np.where(body, width[sample], 1.0)[:, None]                      # [F, 1]
    c = centre[sample]
    mouth = frames[:, sel.mouth].mean(1)
    mouth_ok = present[:, sel.mouth].all(1)
    out = []
    for hand in sel.hands:
        pts, seen = frames[:, hand], present[:, hand]                    # [F, 21, 2], [F, 21]
        found = seen.any(1)
        centroid = (pts * seen[..., None]).sum(1) / np.maximum(seen.sum(1), 1)[:, None]
        wrist, tip = pts[:, 0], pts[:, 8]
        feats = [(0.5 + (wrist - c) / (ANCHOR_SPAN * w), seen[:, 0]),
                 (0.5 + (tip - c) / (ANCHOR_SPAN * w), seen[:, 8]),
                 (0.5 + (centroid - c) / (ANCHOR_SPAN * w), found),
                 (0.5 + (tip - mouth) / (2 * w), seen[:, 8] & mouth_ok)]
        for lag in (1, 2):
            prev = np.roll(centroid, lag, 0)
            ok = found & np.roll(found, lag) & (np.roll(sample, lag) == sample)
            ok[:lag] = False
            feats.append((0.5 + (centroid - prev) / w, ok))
        feats.append((np.full_like(centroid, 0.5), found))
        out += [np.where((ok & body)[:, None], np.clip(v, 1e-3, 1.0 - 1e-3), 0.0) for v, ok in feats]
    return np.stack(out, 1).astype(np.float32)                           # [F, 14, 2]


def prepare_arrays(samples: list[np.ndarray], labels, selection: Selection,
                   max_frames: int = MAX_FRAMES, chunk: int = 32) -> Prepared:
    """Preprocess raw [T, K_stored, 3] arrays into padded model inputs.

    Works on ``chunk`` samples at a time: every step is vectorised over the chunk's frames,
    and chunk-sized temporaries stay in cache instead of faulting in fresh memory.
    """
    n, k = len(samples), selection.width
    x = np.zeros((n, max_frames, k, 2), np.float32)
    mask = np.zeros((n, max_frames), np.float32)
    mirrored = np.zeros(n, bool)
    for c in range(0, n, chunk):
        part, mirrored[c:c + chunk] = zip(*(canonical(s, selection)
                                            for s in samples[c:c + chunk]))
        if selection.framing is not None:
            part = [reframe(s, selection) for s in part]
        n_frames = np.array([len(s) for s in part])
        local, lengths = uniform_indices(n_frames, max_frames)
        starts = np.concatenate([[0], np.cumsum(n_frames)[:-1]])
        rows = np.repeat(starts, lengths) + local                        # kept frames
        flat = np.concatenate(part)                                      # [sum T, K_stored, 3]
        frames = flat[rows[:, None], selection.indices[None, :], :2]     # [F, K, 2]
        np.clip(frames, 0.0, 1.0, out=frames)
        valid = np.arange(max_frames)[None, :] < lengths[:, None]        # [chunk, T]
        frames = frames.astype(np.float32, copy=False)
        picked = len(selection.indices)
        x[c:c + chunk, :, :picked][valid] = normalize_groups(frames, selection.groups[:len(
            selection.groups) - selection.anchors])
        if selection.anchors:
            raw = np.clip(flat[rows, :, :2], 0.0, 1.0)
            x[c:c + chunk, :, picked:][valid] = anchor_features(raw, lengths, selection)
        mask[c:c + chunk] = valid
    return Prepared(x=x, mask=mask, y=np.asarray(labels, dtype=np.int32), mirrored=mirrored)


def prepare(dataset, indices, variant: VariantConfig, max_frames: int = MAX_FRAMES) -> Prepared:
    """Model inputs for the dataset samples at ``indices`` (a fold's train/val/test view)."""
    indices = np.asarray(indices, dtype=np.int64)
    selection = Selection.of(variant, dataset.layout)
    samples = [dataset.keypoints(i) for i in indices]
    if not samples:
        k = selection.width
        return Prepared(np.zeros((0, max_frames, k, 2), np.float32),
                        np.zeros((0, max_frames), np.float32), np.zeros((0,), np.int32),
                        np.zeros((0,), bool))
    return prepare_arrays(samples, dataset.label_ids[indices], selection, max_frames)
