"""Keypoint layouts: which MediaPipe Holistic landmarks a stored array holds, and in what order.

A layout is a list of named keypoints, each in one group (pose, left_hand, right_hand, face).
Names come from MediaPipe's own enums, so indices, normalisation groups and the left/right
mirror permutation are all derived from names and never typed by hand.
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass

GROUPS = ("pose", "left_hand", "right_hand", "face")

# Face-mesh points of holistic-90 (MediaPipe FaceMesh indices), in the order the reference
# SignBART pipeline stores them, so its .pkl files import without reordering. The set is
# left/right symmetric, so mirroring is a permutation. "left"/"right" are the signer's own
# sides, as in MediaPipe's pose enum.
FACE_POINTS: dict[str, int] = {
    "forehead": 10, "left_forehead_1": 338, "left_forehead_2": 297, "left_forehead_3": 332,
    "right_jaw": 172, "chin": 152, "left_jaw": 397,
    "right_forehead_3": 103, "right_forehead_2": 67, "right_forehead_1": 109,
    "right_eye_outer": 33, "right_eye_inner": 133, "right_eye_upper_outer": 160,
    "right_eye_top": 159, "right_eye_upper_inner": 158, "right_eye_lower_outer": 144,
    "right_eye_bottom": 145,
    "left_eye_inner": 362, "left_eye_outer": 263, "left_eye_upper_outer": 387,
    "left_eye_top": 386, "left_eye_upper_inner": 385, "left_eye_lower_outer": 373,
    "left_eye_bottom": 374,
    "nose_tip": 1,
}

UPPER_BODY_POSE = 23  # pose landmarks 0..22: face, shoulders, arms and hands; no hips or legs


@dataclass(frozen=True)
class Keypoint:
    group: str
    name: str          # e.g. "left_wrist", "index_finger_tip", "nose_tip"
    source_index: int  # index in MediaPipe's own landmark list for that component

    @property
    def key(self) -> str:
        return f"{self.group}.{self.name}"


@dataclass(frozen=True)
class Layout:
    name: str
    keypoints: tuple[Keypoint, ...]

    def __len__(self) -> int:
        return len(self.keypoints)

    @property
    def keys(self) -> list[str]:
        return [k.key for k in self.keypoints]

    def index(self, key: str) -> int:
        try:
            return self.keys.index(key)
        except ValueError:
            raise KeyError(f"keypoint {key!r} is not in layout {self.name!r}") from None

    def groups(self) -> dict[str, list[int]]:
        """Positions of each group's keypoints, in layout order (empty groups omitted)."""
        out: dict[str, list[int]] = {}
        for i, k in enumerate(self.keypoints):
            out.setdefault(k.group, []).append(i)
        return out

    def mirror_permutation(self) -> list[int]:
        """perm[i] = position that keypoint i moves to when the image is mirrored.

        Left and right swap: the hands swap groups, pose/face names swap "left"<->"right".
        A keypoint whose mirror twin is not in the layout keeps its slot.
        """
        where = {k.key: i for i, k in enumerate(self.keypoints)}
        return [where.get(mirror_key(k.key), i) for i, k in enumerate(self.keypoints)]

    def to_dict(self) -> dict:
        return {"name": self.name,
                "keypoints": [[k.group, k.name, k.source_index] for k in self.keypoints]}

    @classmethod
    def from_dict(cls, d: dict) -> Layout:
        return cls(d["name"], tuple(Keypoint(g, n, int(i)) for g, n, i in d["keypoints"]))

    def subset(self, name: str, keys: list[str]) -> Layout:
        return Layout(name, tuple(self.keypoints[self.index(k)] for k in keys))


def mirror_key(key: str) -> str:
    """The key a keypoint takes in the mirrored image: every "left" token becomes "right"."""
    group, name = key.split(".", 1)
    swap = {"left": "right", "right": "left", "left_hand": "right_hand", "right_hand": "left_hand"}
    name = "_".join(swap.get(t, t) for t in name.split("_"))
    return f"{swap.get(group, group)}.{name}"


def import_mediapipe_solutions():
    """``mediapipe.python.solutions``, imported without dragging in TensorFlow.

    mediapipe's package import pulls in TensorFlow only for doc decorators (its tasks API falls
    back when TF is missing). Hiding TF during that import saves ~2 s and ~700 MB per process;
    the entry is removed afterwards, so TF stays importable.
    """
    if "mediapipe" not in sys.modules and "tensorflow" not in sys.modules:
        sys.modules["tensorflow"] = None
        try:
            import mediapipe.python.solutions  # noqa: F401
        finally:
            del sys.modules["tensorflow"]
    import mediapipe.python.solutions as solutions
    return solutions


@functools.cache
def _pose_and_hand_names() -> tuple[list[str], list[str]]:
    solutions = import_mediapipe_solutions()
    HandLandmark, PoseLandmark = solutions.hands.HandLandmark, solutions.pose.PoseLandmark

    pose = [p.name.lower() for p in sorted(PoseLandmark, key=int)]
    hand = [h.name.lower() for h in sorted(HandLandmark, key=int)]
    return pose, hand


@functools.cache
def get_layout(name: str) -> Layout:
    """The stored layouts: ``holistic-65`` (pose 0-22, left hand, right hand) and ``holistic-90``."""
    if name not in LAYOUTS:
        raise KeyError(f"unknown layout {name!r}; known: {', '.join(LAYOUTS)}")
    pose, hand = _pose_and_hand_names()
    kps = [Keypoint("pose", pose[i], i) for i in range(UPPER_BODY_POSE)]
    kps += [Keypoint("left_hand", n, i) for i, n in enumerate(hand)]
    kps += [Keypoint("right_hand", n, i) for i, n in enumerate(hand)]
    if name == "holistic-90":
        kps += [Keypoint("face", n, i) for n, i in FACE_POINTS.items()]
    return Layout(name, tuple(kps))


LAYOUTS = ("holistic-65", "holistic-90")
