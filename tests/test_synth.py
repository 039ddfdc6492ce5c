import hashlib

import numpy as np

from signbart.data import open_dataset
from signbart.synth import synthesize


def _digest(folder):
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def test_same_seed_gives_identical_bytes_and_other_seed_differs(tmp_path):
    for name, seed in (("a", 5), ("b", 5), ("c", 6)):
        synthesize(tmp_path / name, signers=2, classes=3, reps=2, seed=seed)
    assert _digest(tmp_path / "a") == _digest(tmp_path / "b")
    assert _digest(tmp_path / "a") != _digest(tmp_path / "c")


def test_synthetic_data_is_marked_and_shaped_like_mediapipe(synth_dataset):
    ds = open_dataset(synth_dataset)
    assert ds.synthetic and "SYNTHETIC" in ds.description
    assert len(ds) == 4 * 10 * 3 and ds.layout.name == "holistic-65"
    frames = np.concatenate([ds.keypoints(i) for i in range(len(ds))])
    xy = frames[..., :2]
    assert xy.min() >= 0 and xy.max() <= 1
    hands = ds.layout.groups()
    missing_hand = (xy[:, hands["right_hand"]] == 0).all((1, 2))
    assert 0 < missing_hand.mean() < 0.2        # some frames drop a hand, as MediaPipe does


def test_signers_differ_in_body_and_speed(synth_dataset):
    ds = open_dataset(synth_dataset)
    m = ds.manifest
    shoulder = ds.layout.index("pose.left_shoulder"), ds.layout.index("pose.right_shoulder")
    widths = {s: np.mean([np.abs(np.diff(ds.keypoints(i)[:, shoulder, 0], axis=1)).mean()
                          for i in np.flatnonzero(m.signer == s)]) for s in ds.signers}
    assert max(widths.values()) / min(widths.values()) > 1.1
    assert m.groupby("signer").n_frames.mean().std() > 1.0
