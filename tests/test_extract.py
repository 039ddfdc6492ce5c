"""extract: real MediaPipe on a real photograph and on real MLR511 clips, fanned out on real Ray."""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from videos import PHOTO_FACE, clip, mlr511_dir, photo_video, truncated_copy, wall_video

from signbart.data import open_dataset
from signbart.errors import DatasetError, UserError
from signbart.extract import (
    CRASH_HOOK_ENV,
    FAILURES_FILE,
    VideoError,
    _Progress,
    extract_dir,
    extract_video,
    find_videos,
    make_holistic,
)
from signbart.layouts import get_layout

MLR511 = mlr511_dir()
needs_mlr511 = pytest.mark.skipif(MLR511 is None, reason="../shared/data/mlr511 is absent")
CRASH_MARKER = "crash-me"
L90 = get_layout("holistic-90")


def seen(kp: np.ndarray, group: str, layout=L90) -> np.ndarray:
    """bool [frames]: MediaPipe reported this group (a missing one is all zeros)."""
    return np.abs(kp[:, layout.groups()[group]]).sum(axis=(1, 2)) > 0


def samples(out: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(out)
    return {sid: ds.keypoints(i) for i, sid in enumerate(ds.manifest["sample_id"])}


@pytest.fixture(scope="module")
def holistic():
    h = make_holistic()
    yield h
    h.close()


@pytest.fixture(scope="module")
def photo_clip(tmp_path_factory) -> Path:
    return photo_video(tmp_path_factory.mktemp("photo") / "photo.mp4")


# ---------------------------------------------------------------- extract_video

def test_pose_lands_on_the_person_and_absent_hands_are_zero(photo_clip, holistic):
    kp = extract_video(photo_clip, holistic)
    assert kp.dtype == np.float32 and kp.shape == (6, len(L90), 3)
    for key in ("pose.nose", "face.nose_tip"):
        x, y = kp[:, L90.index(key), :2].T
        assert ((PHOTO_FACE["x"][0] < x) & (x < PHOTO_FACE["x"][1])).all(), key
        assert ((PHOTO_FACE["y"][0] < y) & (y < PHOTO_FACE["y"][1])).all(), key
    # her hands are outside the portrait: both hand groups are zeros in every frame
    assert not seen(kp, "left_hand").any() and not seen(kp, "right_hand").any()
    assert seen(kp, "face").all()


def test_mirror_maps_x_to_one_minus_x_and_swaps_sides(photo_clip, holistic):
    plain = extract_video(photo_clip, holistic)
    mirrored = extract_video(photo_clip, holistic, mirror=True)
    back = mirrored[:, L90.mirror_permutation()]  # back[:, i]: the mirror twin of keypoint i
    on_screen = ((plain[..., :2] > 0) & (plain[..., :2] < 1)).all(-1)
    assert on_screen.sum() > 6 * 30  # face, shoulders and the face mesh points
    assert np.abs(1 - back[..., 0] - plain[..., 0])[on_screen].max() < 0.06
    assert np.abs(back[..., 1] - plain[..., 1])[on_screen].max() < 0.06
    # sides swap slots: her left shoulder (image right) is the mirrored person's right one,
    # and MediaPipe still finds a left shoulder on the image's right
    left, right = L90.index("pose.left_shoulder"), L90.index("pose.right_shoulder")
    assert np.abs(mirrored[:, right, 0] - (1 - plain[:, left, 0])).max() < 0.06
    assert (plain[:, left, 0] > 0.5).all() and (mirrored[:, left, 0] > 0.5).all()
    assert (mirrored[:, right, 0] < 0.5).all()


def _empty(d: Path, src: Path) -> Path:
    (d / "empty.mp4").write_bytes(b"")
    return d / "empty.mp4"


def _text(d: Path, src: Path) -> Path:
    (d / "notes.mp4").write_text("a text file renamed to .mp4\n" * 40)
    return d / "notes.mp4"


@pytest.mark.parametrize("make, reason", [
    (lambda d, src: d / "missing.mp4", "unreadable"),
    (_empty, "empty file"),
    (_text, "OpenCV cannot open"),
    (lambda d, src: truncated_copy(src, d / "cut.mp4"), "truncated"),
    (lambda d, src: wall_video(d / "wall.mp4"), "no person found in any of its 6 frames"),
])
def test_unusable_videos_raise_a_clear_error(tmp_path, photo_clip, holistic, make, reason):
    path = make(tmp_path, photo_clip)
    with pytest.raises(VideoError, match=reason) as e:
        extract_video(path, holistic)
    assert str(path) in str(e.value)


@pytest.mark.parametrize("source", ["photo", "mlr511"])
def test_holistic_65_is_a_selection_of_holistic_90(tmp_path, photo_clip, holistic, source):
    if source == "mlr511":
        if MLR511 is None:
            pytest.skip("../shared/data/mlr511 is absent")
        video = clip(MLR511 / "user03/G01/R01.mp4", tmp_path / "c.mp4", start=15, n_frames=10)
    else:
        video = photo_clip
    l65 = get_layout("holistic-65")
    full = extract_video(video, holistic, layout=L90)
    small = extract_video(video, holistic, layout=l65)
    picked = full[:, [L90.index(k) for k in l65.keys]]
    assert np.array_equal(picked, small)
    assert source == "photo" or seen(small, "right_hand", l65).any()


@needs_mlr511
def test_the_graph_starts_every_video_clean(holistic):
    """A right-handed signer's video gives the same keypoints after a left-handed signer's."""
    import cv2

    left_handed, right_handed = MLR511 / "user01/G01/R01.mp4", MLR511 / "user03/G01/R01.mp4"
    alone = extract_video(right_handed)  # a fresh graph
    assert not seen(alone[:10], "left_hand").any()
    # the hazard is real: without a reset, the left hand tracked in user01's video haunts
    # user03's first frames, where a clean graph finds none
    extract_video(left_handed, holistic)
    cap = cv2.VideoCapture(str(right_handed))
    haunted = 0
    for _ in range(10):
        _, bgr = cap.read()
        haunted += holistic.process(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).left_hand_landmarks \
            is not None
    cap.release()
    assert haunted >= 5
    assert np.array_equal(extract_video(right_handed, holistic), alone)


# ---------------------------------------------------------------- extract_dir on Ray

def write_glosses(root: Path) -> None:
    (root / "glosses.csv").write_text("class,gloss\nG01,Hi\nG02,Please\nG03,What?\n")


@pytest.fixture(scope="class")
def local_ray():
    import ray

    # the crash hook is read inside the actors, so it travels in the job's environment
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False,
             runtime_env={"env_vars": {CRASH_HOOK_ENV: CRASH_MARKER}})
    yield ray
    ray.shutdown()


@pytest.mark.usefixtures("local_ray")
class TestExtractDir:
    def test_serial_output_equals_parallel_output(self, tmp_path, photo_clip):
        root = tmp_path / "videos"
        root.mkdir()
        for rep in ("R01", "R02"):  # the flat user05_G02_R01 naming
            shutil.copy(photo_clip, root / f"user05_G02_{rep}.mp4")
        if MLR511 is not None:  # and the <signer>/<class>/<rep> layout, real signers
            for signer, label in [("user01", "G03"), ("user03", "G01")]:
                clip(MLR511 / signer / label / "R01.mp4", root / signer / label / "R01.mp4",
                     start=12, n_frames=8)
        write_glosses(root)
        serial = extract_dir(root, tmp_path / "serial", workers=1, progress=False)
        parallel = extract_dir(root, tmp_path / "parallel", workers=2, progress=False)
        n = 4 if MLR511 is not None else 2
        assert (serial.ok, serial.failed, parallel.ok, parallel.failed) == (n, 0, n, 0)
        a, b = samples(tmp_path / "serial"), samples(tmp_path / "parallel")
        assert sorted(a) == sorted(b) and len(a) == n
        for sid in a:
            assert np.array_equal(a[sid], b[sid]), sid
        ds = open_dataset(tmp_path / "parallel")
        rows = ds.manifest.set_index("sample_id")
        assert rows.loc["user05_G02_R02", ["signer", "label", "repetition", "source"]].tolist() \
            == ["user05", "G02", "R02", "user05_G02_R02.mp4"]
        if MLR511 is not None:
            assert rows.loc["user03_G01_R01", ["signer", "label", "repetition", "source"]] \
                .tolist() == ["user03", "G01", "R01", "user03/G01/R01.mp4"]
        assert dict(zip(ds.labels, ds.glosses))["G02"] == "Please"
        assert not rows["mirrored"].any()  # no signers.csv here, no --flip

    def test_pattern_and_class_from_the_folder(self, tmp_path, photo_clip):
        root = tmp_path / "videos"
        for label, name in [("hello", "s7-take2.mp4"), ("thanks", "s8-take1.mp4")]:
            (root / label).mkdir(parents=True)
            shutil.copy(photo_clip, root / label / name)
        summary = extract_dir(root, tmp_path / "out", workers=1, progress=False,
                              pattern=r"(?P<signer>s\d+)-take(?P<repetition>\d+)")
        assert (summary.ok, summary.failed) == (2, 0)
        rows = open_dataset(tmp_path / "out").manifest.set_index("source")
        assert rows.loc["hello/s7-take2.mp4", ["signer", "label", "repetition"]].tolist() \
            == ["s7", "hello", "2"]
        assert rows.loc["thanks/s8-take1.mp4", "label"] == "thanks"

    def test_bad_files_become_failure_rows_and_good_videos_are_kept(self, tmp_path, photo_clip):
        root = tmp_path / "videos"
        root.mkdir()
        shutil.copy(photo_clip, root / "user05_G02_R07.mp4")
        truncated_copy(photo_clip, root / "user05_G02_R08.mp4")
        (root / "user05_G02_R09.mp4").write_bytes(b"")
        (root / "user05_G03_R01.mp4").write_text("a text file renamed to .mp4\n" * 40)
        wall_video(root / "user06_G02_R01.mp4")
        shutil.copy(photo_clip, root / "clip.mp4")  # a video whose name says nothing
        (root / "readme.txt").write_text("not a video suffix: ignored")
        summary = extract_dir(root, tmp_path / "out", workers=2, progress=False)
        assert (summary.ok, summary.failed, summary.skipped) == (1, 5, 0)
        assert summary.exit_status() == 1 and summary.exit_status(allow_failures=True) == 0
        rows = pd.read_parquet(tmp_path / "out" / FAILURES_FILE)
        assert list(rows.columns) == ["file", "reason"]
        reason = dict(zip(rows["file"], rows["reason"]))
        assert reason == dict(summary.failures)
        assert "truncated" in reason["user05_G02_R08.mp4"]
        assert "empty file" in reason["user05_G02_R09.mp4"]
        assert "OpenCV cannot open" in reason["user05_G03_R01.mp4"]
        assert "no person found" in reason["user06_G02_R01.mp4"]
        assert "cannot read signer" in reason["clip.mp4"]
        ds = open_dataset(tmp_path / "out")
        assert ds.manifest["sample_id"].tolist() == ["user05_G02_R07"]
        assert np.array_equal(ds.keypoints(0), extract_video(photo_clip))

    def test_resume_skips_videos_already_extracted(self, tmp_path, photo_clip):
        root, out = tmp_path / "videos", tmp_path / "out"
        root.mkdir()
        for rep in ("R01", "R02"):
            shutil.copy(photo_clip, root / f"user05_G02_{rep}.mp4")
        first = extract_dir(root, out, workers=2, progress=False)
        assert (first.ok, first.skipped) == (2, 0)
        before = samples(out)
        with pytest.raises(DatasetError, match="--resume"):
            extract_dir(root, out, workers=1, progress=False)
        shutil.copy(photo_clip, root / "user05_G02_R03.mp4")
        again = extract_dir(root, out, workers=1, resume=True, progress=False)
        assert (again.ok, again.skipped, again.failed) == (1, 2, 0)
        after = samples(out)
        assert sorted(after) == ["user05_G02_R01", "user05_G02_R02", "user05_G02_R03"]
        assert all(np.array_equal(before[s], after[s]) for s in before)
        os.utime(root / "user05_G02_R01.mp4", (1e9, 1e9))  # edited since: never silently kept
        changed = extract_dir(root, out, workers=1, resume=True, progress=False)
        assert (changed.ok, changed.skipped) == (0, 2)
        assert "changed since it was extracted" in dict(changed.failures)["user05_G02_R01.mp4"]

    def test_a_dead_actor_fails_its_video_and_is_replaced(self, tmp_path, photo_clip):
        root = tmp_path / "videos"
        root.mkdir()
        # sorted first, so the only actor dies before it has done anything else
        for name in (f"user05_G02_R01-{CRASH_MARKER}", "user05_G02_R02", "user05_G02_R03"):
            shutil.copy(photo_clip, root / f"{name}.mp4")
        summary = extract_dir(root, tmp_path / "out", workers=1, progress=False)
        assert (summary.ok, summary.failed) == (2, 1)
        file, reason = summary.failures[0]
        assert file.endswith(f"{CRASH_MARKER}.mp4") and "died" in reason
        assert sorted(samples(tmp_path / "out")) == ["user05_G02_R02", "user05_G02_R03"]

    @needs_mlr511
    def test_left_handed_signer_is_mirrored_so_the_dominant_hand_is_right(self, tmp_path):
        root = tmp_path / "videos"
        (root / "user01/G03").mkdir(parents=True)
        shutil.copy(MLR511 / "user01/G03/R01.mp4", root / "user01/G03/R01.mp4")
        shutil.copy(MLR511 / "signers.csv", root)  # user01,left
        with pytest.raises(UserError, match="user99"):
            extract_dir(root, tmp_path / "bad", flip_signers=["user99"], progress=False)
        summary = extract_dir(root, tmp_path / "out", workers=2, flip=True, progress=False)
        assert (summary.ok, summary.failed) == (1, 0)
        ds = open_dataset(tmp_path / "out")
        mirrored = dict(zip(ds.manifest["sample_id"], ds.manifest["mirrored"]))
        assert mirrored == {"user01_G03_R01": True, "user01_G03_R01_flip": False}
        kp = samples(tmp_path / "out")
        flipped, original = kp["user01_G03_R01"], kp["user01_G03_R01_flip"]
        # mirroring the image alone moves the signing (left) hand into the right-hand slots:
        # MediaPipe names hands from the signer's side, so no extra slot swap is needed
        right, left = seen(flipped, "right_hand"), seen(flipped, "left_hand")
        assert right.sum() >= 10 and right.sum() >= 0.9 * (right | left).sum()
        o_left, o_right = seen(original, "left_hand"), seen(original, "right_hand")
        assert o_left.sum() >= 10 and o_left.sum() >= 0.9 * (o_left | o_right).sum()
        both = right & o_left
        wrist_r = L90.index("right_hand.wrist")
        wrist_l = L90.index("left_hand.wrist")
        assert both.sum() >= 10
        assert np.abs(flipped[both, wrist_r, 0] - (1 - original[both, wrist_l, 0])).max() < 0.05


# ---------------------------------------------------------------- a real two-node cluster

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


def _ray_node(log: Path, *args: str) -> subprocess.Popen:
    """``ray start --block`` in its own process group, so the test stops exactly this node."""
    cmd = [str(Path(sys.executable).parent / "ray"), "start", "--block", "--num-cpus=1",
           "--disable-usage-stats", f"--dashboard-agent-listen-port={_free_port()}",
           f"--metrics-export-port={_free_port()}", *args]
    return subprocess.Popen(cmd, env=CLUSTER_ENV, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=open(log, "ab"))


def _stop(node: subprocess.Popen) -> None:
    os.killpg(node.pid, signal.SIGTERM)
    try:
        node.wait(10)
    except subprocess.TimeoutExpired:
        os.killpg(node.pid, signal.SIGKILL)
        node.wait(10)


# A loopback test cluster without Ray 2.60's default token auth. The driver runs in its own
# process: a process that already started a local Ray keeps token mode and cannot use it.
CLUSTER_ENV = {**os.environ, "RAY_AUTH_MODE": "disabled"}
DRIVER = """
import json, sys, time
import ray
from signbart.extract import extract_dir
address, root, out = sys.argv[1:]
ray.init(address=address, log_to_driver=False)
deadline = time.monotonic() + 120
while sum(n["Alive"] for n in ray.nodes()) < 2:
    assert time.monotonic() < deadline, "the worker node never joined"
    time.sleep(0.5)
ray.shutdown()
s = extract_dir(root, out, address=address, progress=False)
print(json.dumps({"ok": s.ok, "failures": s.failures, "nodes": s.nodes}))
"""


@pytest.mark.slow
def test_two_node_cluster_shares_the_work(tmp_path, photo_clip):
    root = tmp_path / "videos"
    root.mkdir()
    for rep in ("R01", "R02", "R03", "R04"):
        shutil.copy(photo_clip, root / f"user05_G02_{rep}.mp4")
    port = _free_port()
    address = f"127.0.0.1:{port}"
    nodes = [_ray_node(tmp_path / "head.log", "--head", f"--port={port}",
                       "--include-dashboard=false", f"--ray-client-server-port={_free_port()}")]
    try:
        deadline = time.monotonic() + 120
        while not _listening(port):
            assert nodes[0].poll() is None and time.monotonic() < deadline, \
                (tmp_path / "head.log").read_text()[-2000:]
            time.sleep(0.5)
        nodes.append(_ray_node(tmp_path / "worker.log", f"--address={address}"))
        run = subprocess.run([sys.executable, "-c", DRIVER, address, str(root),
                              str(tmp_path / "out")], check=False, env=CLUSTER_ENV,
                             capture_output=True, text=True, timeout=300)
    finally:
        for node in reversed(nodes):
            _stop(node)
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads(run.stdout.strip().splitlines()[-1])
    assert (summary["ok"], summary["failures"]) == (4, [])
    assert len(set(summary["nodes"].values())) == 2  # one actor per one-CPU node, both worked
    assert len(samples(tmp_path / "out")) == 4


def test_progress_without_a_tty_logs_rate_elapsed_and_eta(caplog):
    """Not a TTY (as under pytest): log lines, at most one per interval, plus the last."""
    progress = _Progress(total=10, enabled=True, every=3600)
    progress.begin()
    progress.start -= 20                                  # 20 s in
    with caplog.at_level(logging.INFO, logger="signbart.extract"):
        progress.update(4, 200, 1)                        # inside the interval: silent
        progress.update(5, 250, 1, final=True)
    assert progress.bar is None
    [message] = [r.getMessage() for r in caplog.records]
    assert message == ("extract: 5/10 videos, 12.5 frames/s, elapsed 0:00:20, ETA 0:00:20, "
                       "1 failed")


def test_find_videos_follows_symlinked_folders_each_real_folder_once(tmp_path):
    real = tmp_path / "elsewhere" / "user01" / "G01"
    real.mkdir(parents=True)
    (real / "R01.mp4").write_bytes(b"x")
    (real / "notes.txt").write_text("not a video")
    root = tmp_path / "selection"
    root.mkdir()
    (root / "user01").symlink_to(real.parent, target_is_directory=True)  # a folder of links
    (root / "user01-copy").symlink_to(real.parent, target_is_directory=True)  # the same again
    (real / "loop").symlink_to(root, target_is_directory=True)           # and a cycle
    assert find_videos(root) == [root / "user01" / "G01" / "R01.mp4"]


FLUSH = "--flush-seconds must be a finite number of seconds >= 0 (0 flushes after every video)"


@pytest.mark.parametrize("argv, message", [
    (["--workers", "0"], "--workers must be at least 1, got 0"),
    (["--flush-seconds", "nan"], f"{FLUSH}, got nan"),
    (["--flush-seconds", "-1"], f"{FLUSH}, got -1"),
])
def test_extract_refuses_bad_numbers_before_writing(tmp_path, capsys, argv, message):
    from signbart.cli import main

    (tmp_path / "videos").mkdir()
    assert main(["extract", str(tmp_path / "videos"), str(tmp_path / "out"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
