"""Real videos for extraction tests and benchmarks: short clips made from a real photograph,
a blank wall, broken files, and the MLR511 recordings when ../shared/data holds them."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

MLR511 = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "mlr511"


def mlr511_dir() -> Path | None:
    """The MLR511 folder, or None where this checkout has no ../shared/data/mlr511."""
    return MLR511 if (MLR511 / "user01").is_dir() else None


def photo() -> np.ndarray:
    """Grace Hopper's portrait (BGR, 600 x 512), which ships with matplotlib."""
    import matplotlib

    img = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    assert img is not None, "matplotlib's sample photograph is missing"
    return img


# Where her face is in the photograph, as fractions of width and height (read off the image).
PHOTO_FACE = {"x": (0.30, 0.73), "y": (0.20, 0.56)}


def write_video(path: Path, frames: list[np.ndarray], fps: int = 15) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), fps, (w, h))
    assert writer.isOpened(), f"OpenCV cannot write {path}"
    for f in frames:
        writer.write(f)
    writer.release()
    return path


def photo_video(path: Path, n_frames: int = 6) -> Path:
    """The photograph drifting one pixel per frame, so consecutive frames differ."""
    img = photo()
    return write_video(path, [np.roll(img, i, axis=1) for i in range(n_frames)])


def wall_video(path: Path, n_frames: int = 6) -> Path:
    """A plain wall with a little sensor noise: a readable video without a person."""
    rng = np.random.default_rng(0)
    base = np.full((360, 480, 3), (180, 190, 200), np.uint8)
    return write_video(path, [np.clip(base + rng.normal(0, 3, base.shape), 0, 255)
                              .astype(np.uint8) for _ in range(n_frames)])


def truncated_copy(src: Path, dst: Path, keep: float = 0.5) -> Path:
    data = src.read_bytes()
    dst.parent.mkdir(parents=True, exist_ok=True)
    dst.write_bytes(data[:int(len(data) * keep)])
    return dst


def clip(src: Path, dst: Path, start: int = 0, n_frames: int = 12) -> Path:
    """Frames ``start .. start + n_frames`` of a real video, re-encoded: a short real clip."""
    cap = cv2.VideoCapture(str(src))
    frames = []
    while len(frames) < start + n_frames:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    cap.release()
    assert len(frames) > start, f"{src} has only {len(frames)} frames"
    return write_video(dst, frames[start:])
