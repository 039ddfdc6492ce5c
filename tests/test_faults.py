"""Faults a careful user runs into, injected for real: two writers at once, a full or
read-only disk (a real tmpfs), ``kill -9`` mid-extraction, resumes with changed settings, a
poisoned ``tuner.pkl``, broken inputs. Each test drives the ``signbart`` command in its own
process and checks what the user sees (one sentence, the exit status) and what is kept.
The table in ``sweeps/README.md`` ("Faults") lists the same cases.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from conftest import REPO
from test_sweep import TINY_MODEL
from videos import photo, photo_video, write_video

from signbart.config import to_dict, trial_id
from signbart.data import open_dataset
from signbart.errors import DatasetError
from signbart.extract import extract_video, make_holistic
from signbart.outlock import OutputLock
from signbart.results import write_rows
from signbart.sweepspec import Grid, load_spec, sweep_hash

PY = sys.executable


def signbart(*args, timeout: float = 300, **kw) -> subprocess.CompletedProcess:
    """``signbart ARGS`` in a fresh process, as a user types it."""
    return subprocess.run([PY, "-m", "signbart.cli", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, cwd=REPO, check=False, **kw)


def one_sentence(p: subprocess.CompletedProcess, command: str) -> str:
    """The error line the user sees; asserts it is the last line and there is no traceback."""
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"signbart {command}: error: "), p.stderr[-2000:]
    return last


def temp_files(out: Path) -> list[Path]:
    return [p for p in out.rglob("*") if p.name.endswith(".tmp") or p.name.startswith(".import-")]


def samples(out: Path) -> dict[str, np.ndarray]:
    ds = open_dataset(out)
    return {sid: ds.keypoints(i) for i, sid in enumerate(ds.manifest["sample_id"])}


def _can_mount() -> str:
    """'' when this process can mount a tmpfs, else why not (the tests then fall back)."""
    if os.geteuid() != 0 or shutil.which("mount") is None:
        return "mounting a tmpfs needs root"
    probe = Path(f"/tmp/signbart-tmpfs-probe-{os.getpid()}")
    probe.mkdir(exist_ok=True)
    try:
        ok = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(probe)],
                            capture_output=True, check=False).returncode == 0
        if ok:
            subprocess.run(["umount", str(probe)], check=True)
        return "" if ok else "mount -t tmpfs is refused here"
    finally:
        probe.rmdir()


NO_TMPFS = _can_mount()


@contextlib.contextmanager
def tmpfs(path: Path, size: str, readonly: bool = False):
    """A real tmpfs of ``size`` mounted at ``path`` for the block."""
    path.mkdir()
    opts = f"size={size}" + (",ro" if readonly else "")
    subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(path)], check=True)
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=True)


def video_folder(root: Path, frames: list[int], signer: str = "user05") -> Path:
    """Real clips of the photograph, one per entry (its frame count), named signer_G02_R0i."""
    root.mkdir(parents=True, exist_ok=True)
    img = photo()
    for i, n in enumerate(frames, 1):
        write_video(root / f"{signer}_G02_R{i:02d}.mp4", [np.roll(img, k, axis=1)
                                                        for k in range(n)])
    return root


# ---------------------------------------------------------------- exclusive writers

@pytest.mark.slow
def test_a_second_extract_into_the_same_folder_fails_at_once_naming_the_first(tmp_path):
    first = video_folder(tmp_path / "a", [6, 6, 6, 6])
    other = video_folder(tmp_path / "b", [6], signer="user09")
    out = tmp_path / "out"
    a = subprocess.Popen([PY, "-m", "signbart.cli", "extract", first, out, "--workers", "1"],
                         cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not ((out / ".lock").exists() and (out / ".lock").read_text().strip()):
        assert a.poll() is None and time.monotonic() < deadline, a.communicate()
        time.sleep(0.1)
    b = signbart("extract", other, out, "--workers", "1")
    assert a.poll() is None  # refused while the first is still working, not after it
    assert b.returncode == 2
    assert f"another signbart process (PID {a.pid}) is writing" in one_sentence(b, "extract")
    stdout, stderr = a.communicate(timeout=300)
    assert a.returncode == 0, stderr[-3000:]
    assert "4 videos extracted" in stdout
    assert sorted(open_dataset(out).manifest["signer"]) == ["user05"] * 4


def test_synth_and_import_pkl_refuse_a_locked_folder(tmp_path):
    out = tmp_path / "out"
    src = tmp_path / "src" / "all" / "G01"
    src.mkdir(parents=True)
    with open(src / "user01_G01_R01.pkl", "wb") as f:
        pickle.dump({"keypoints": np.zeros((4, 65, 2), np.float32)}, f)
    with OutputLock(out):  # this test process is the holder
        for p, command in ((signbart("synth", out), "synth"),
                           (signbart("import-pkl", tmp_path / "src", out, "--trust-pickle"),
                            "import-pkl")):
            assert p.returncode == 2
            assert f"(PID {os.getpid()})" in one_sentence(p, command)
    assert not (out / "manifest.parquet").exists()
    assert signbart("synth", out, "--signers", "2", "--classes", "2", "--reps", "1") \
        .returncode == 0  # the lock went with its holder


# ---------------------------------------------------------------- full and read-only disks

def test_synth_onto_a_full_disk_says_so_and_leaves_no_temp_files(tmp_path):
    out = tmp_path / "disk" / "data"
    args = ("synth", out, "--signers", "4", "--classes", "10", "--reps", "3")
    if NO_TMPFS:  # each file may hold 64 kB: the 5 MB shard cannot be written
        def limit():
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (65536, 65536))

        (tmp_path / "disk").mkdir()
        p = signbart(*args, preexec_fn=limit)
        reason = "File too large"
    else:
        with tmpfs(tmp_path / "disk", "64k"):
            p = signbart(*args)
            left = temp_files(out)
        assert left == []
        reason = "No space left on device"
    line = one_sentence(p, "synth")
    assert p.returncode == 1
    assert f"shard-00000.npy: cannot write ({reason}; 5." in line and "MB needed" in line
    if NO_TMPFS:
        assert temp_files(out) == []
    assert not (out / "manifest.parquet").exists()


def test_synth_onto_a_read_only_folder_says_so(tmp_path):
    if NO_TMPFS:  # an unprivileged user: a folder without write permission
        (tmp_path / "ro").mkdir(mode=0o500)
        p = signbart("synth", tmp_path / "ro" / "data")
        assert "Permission denied" in one_sentence(p, "synth")
    else:
        with tmpfs(tmp_path / "ro", "64k", readonly=True):
            p = signbart("synth", tmp_path / "ro" / "data")
        assert one_sentence(p, "synth").endswith("data: cannot write (Read-only file system)")
    assert p.returncode == 1


@pytest.mark.slow
@pytest.mark.skipif(bool(NO_TMPFS), reason=f"{NO_TMPFS}; RLIMIT_FSIZE is no substitute here: "
                    "it would also stop Ray's own object store")
def test_extract_onto_a_full_disk_keeps_what_it_flushed_and_resumes(tmp_path):
    # 6-frame clips need one 8 kB shard each, the 40-frame one 44 kB: on a 64 kB disk the
    # first is flushed (with dataset.json, labels.json, manifest) and the second cannot be
    videos = video_folder(tmp_path / "videos", [6, 40, 6])
    with tmpfs(tmp_path / "disk", "64k") as disk:
        out = disk / "data"
        p = signbart("extract", videos, out, "--workers", "1", "--flush-seconds", "0")
        line = one_sentence(p, "extract")
        assert p.returncode == 1
        assert "No space left on device" in line and "needed" in line
        assert f"the 1 videos already in {out} are kept" in line and "--resume" in line
        assert temp_files(out) == []
        assert list(samples(out)) == ["user05_G02_R01"]
        subprocess.run(["mount", "-o", "remount,size=4m", str(disk)], check=True)
        p = signbart("extract", videos, out, "--workers", "1", "--resume")
        assert p.returncode == 0, p.stderr[-3000:]
        assert "2 videos extracted" in p.stdout and "1 skipped" in p.stdout
        assert sorted(samples(out)) == ["user05_G02_R01", "user05_G02_R02", "user05_G02_R03"]


# ---------------------------------------------------------------- kill -9, then --resume

@pytest.mark.slow
def test_kill_9_mid_extract_loses_at_most_the_unflushed_video(tmp_path):
    videos = video_folder(tmp_path / "videos", [8] * 4)
    out = tmp_path / "out"
    run = subprocess.Popen([PY, "-m", "signbart.cli", "extract", videos, out, "--workers", "1",
                            "--flush-seconds", "0"], cwd=REPO, start_new_session=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while not (out / "manifest.parquet").exists() or \
            pd.read_parquet(out / "manifest.parquet").empty:
        assert run.poll() is None and time.monotonic() < deadline, run.stderr.read()[-3000:]
        time.sleep(0.05)
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if os.getsid(pid) == run.pid:  # the driver and the Ray it started
                os.kill(pid, signal.SIGKILL)
    run.wait(60)
    kept = samples(out)
    assert 1 <= len(kept) < 4  # flushed videos survive the kill
    p = signbart("extract", videos, out, "--workers", "1", "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert f"{len(kept)} skipped" in p.stdout
    got = samples(out)
    assert len(got) == 4 and temp_files(out) == []
    holistic = make_holistic()
    try:
        for sid, kp in got.items():  # bit-identical to a clean extraction
            assert np.array_equal(kp, extract_video(videos / f"{sid}.mp4", holistic)), sid
            if sid in kept:
                assert np.array_equal(kp, kept[sid])
    finally:
        holistic.close()


# ---------------------------------------------------------------- resume checks its premises

@pytest.mark.slow
def test_resume_refuses_other_settings_unless_forced(tmp_path):
    videos = video_folder(tmp_path / "videos", [6])
    out = tmp_path / "out"
    assert signbart("extract", videos, out, "--workers", "1").returncode == 0
    before = (out / "manifest.parquet").read_bytes()
    (videos / "signers.csv").write_text("signer,dominant_hand\nuser05,left\n")
    for extra, diff in [((), "mirrored_signers was [] and is now ['user05']"),
                        (("--flip",), "flip was False and is now True"),
                        (("--pattern", r"(?P<signer>user\d+)_(?P<label>G\d+)_(?P<repetition>R\d+)"),
                         "pattern was None and is now")]:
        if extra:
            (videos / "signers.csv").unlink(missing_ok=True)
        p = signbart("extract", videos, out, "--resume", *extra)
        assert p.returncode == 2
        line = one_sentence(p, "extract")
        assert diff in line and "--force-settings" in line, line
        assert (out / "manifest.parquet").read_bytes() == before
    (videos / "signers.csv").write_text("signer,dominant_hand\nuser05,left\n")
    p = signbart("extract", videos, out, "--resume", "--force-settings")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "1 skipped" in p.stdout
    assert json.loads((out / "dataset.json").read_text())["extraction"]["mirrored_signers"] \
        == ["user05"]


@pytest.mark.slow
def test_a_failed_extraction_can_be_resumed_or_overwritten(tmp_path):
    videos = tmp_path / "videos"
    photo_video(videos / "clip.mp4")  # a name that says nothing: no video succeeds
    out = tmp_path / "out"
    p = signbart("extract", videos, out)
    assert p.returncode == 1 and "0 videos extracted" in p.stdout and "1 failed" in p.stdout
    p = signbart("extract", videos, out)
    assert p.returncode == 2 and "--overwrite replaces it" in one_sentence(p, "extract")
    (videos / "clip.mp4").rename(videos / "user05_G02_R01.mp4")
    p = signbart("extract", videos, out, "--resume", "--workers", "1")
    assert p.returncode == 0, p.stderr[-3000:]
    assert list(samples(out)) == ["user05_G02_R01"]
    (videos / "user05_G02_R01.mp4").rename(videos / "clip.mp4")
    p = signbart("extract", videos, out, "--overwrite")
    assert p.returncode == 1 and "1 failed" in p.stdout
    assert pd.read_parquet(out / "manifest.parquet").empty
    assert list((out / "arrays").iterdir()) == []  # the old shard went with its dataset


def test_a_failed_import_leaves_no_dataset_and_overwrite_replaces_one(tmp_path):
    src = tmp_path / "src" / "all" / "G01"
    src.mkdir(parents=True)
    for rep in range(1, 5):
        with open(src / f"user01_G01_R{rep:02d}.pkl", "wb") as f:
            k = 33 if rep == 4 else 65  # the last one has the wrong shape
            pickle.dump({"keypoints": np.full((4, k, 2), rep / 10, np.float32)}, f)
    out = tmp_path / "out"
    p = signbart("import-pkl", tmp_path / "src", out, "--trust-pickle")
    assert p.returncode == 2 and "user01_G01_R04.pkl" in one_sentence(p, "import-pkl")
    assert not (out / "manifest.parquet").exists() and temp_files(out) == []
    with pytest.raises(DatasetError, match="missing — is .* a signbart dataset"):
        open_dataset(out)
    with open(src / "user01_G01_R04.pkl", "wb") as f:
        pickle.dump({"keypoints": np.full((4, 65, 2), 0.4, np.float32)}, f)
    assert signbart("import-pkl", tmp_path / "src", out, "--trust-pickle").returncode == 0
    assert len(open_dataset(out)) == 4
    p = signbart("import-pkl", tmp_path / "src", out, "--trust-pickle")
    assert p.returncode == 2 and "--overwrite replaces it" in one_sentence(p, "import-pkl")
    (src / "user01_G01_R04.pkl").unlink()
    p = signbart("import-pkl", tmp_path / "src", out, "--trust-pickle", "--overwrite")
    assert p.returncode == 0 and len(open_dataset(out)) == 3
    assert sorted((out / "arrays").iterdir()) == [out / "arrays" / "shard-00000.npy"]


# ---------------------------------------------------------------- no code from storage

class Poison:
    """Unpickling this creates ``path``: what a crafted tuner.pkl could do instead."""

    def __init__(self, path: Path):
        self.path = path

    def __reduce__(self):
        return os.system, (f"touch {self.path}",)


@pytest.mark.slow
def test_resume_never_unpickles_tune_state_without_trust_storage(tmp_path, synth_dataset):
    base = yaml.safe_load((REPO / "configs/arabic-asl-65kpts.yaml").read_text())
    variant = tmp_path / "tiny.yaml"
    variant.write_text(yaml.safe_dump({**base, "name": "tiny",
                                       "model": TINY_MODEL}))
    spec_path = tmp_path / "spec.yaml"
    spec_path.write_text(yaml.safe_dump({
        "name": "t", "data": str(synth_dataset), "holdouts": ["user01", "user02"],
        "seeds": [1], "variants": [str(variant)], "quant": ["fp32"], "baseline": False}))
    spec = load_spec(spec_path)
    storage = tmp_path / "storage"
    # a sweep whose every cell is finished, and whose Tune state someone replaced
    for t in Grid.of(spec).trials():
        write_rows([{"sweep": "t", "trial_id": trial_id(**t), "holdout": t["holdout"],
                     "seed": t["seed"], "variant": "tiny", "quant": "fp32", "top1": 0.5}],
                   str(storage / "t" / "results" / f"{trial_id(**t)}.parquet"))
    (storage / "t" / "sweep.json").write_text(json.dumps({
        "hash": sweep_hash(spec, Grid.of(spec).experiments(spec)), "spec": to_dict(spec)}))
    marker = tmp_path / "pwned"
    (storage / "t" / "tuner.pkl").write_bytes(pickle.dumps(Poison(marker)))
    p = signbart("sweep", spec_path, "--resume", "--storage", storage, timeout=600)
    assert not marker.exists()
    assert p.returncode == 0, p.stderr[-3000:]
    assert "only restored with --trust-storage" in p.stderr
    assert "cells: 2 ok, 0 failed, 0 missing of 2" in p.stdout
    assert "2 trial(s) already finished" in p.stdout
    # the explicit opt-in does restore Tune's state, and so runs whatever is in it
    (storage / "t" / "tuner.pkl").write_bytes(pickle.dumps(Poison(marker)))
    signbart("sweep", spec_path, "--resume", "--trust-storage", "--storage", storage,
             timeout=600)
    assert marker.exists()


# ---------------------------------------------------------------- validation holes

def test_empty_holdouts_and_broken_yaml_are_refused_with_their_place(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("name: t\ndata: /nowhere\nholdouts: []\nvariants: [v.yaml]\n")
    p = signbart("sweep", spec, "--dry-run")
    assert p.returncode == 2
    assert one_sentence(p, "sweep").endswith("s.yaml: holdouts: must not be empty (a list of "
                                             "signers, all, or [none])")
    spec.write_text("name: t\nseeds: [1, 2\nquant: [fp32]\n")
    p = signbart("sweep", spec, "--dry-run")
    assert p.returncode == 2
    assert "s.yaml: not valid YAML at line 3, column 6: expected ',' or ']'" \
        in one_sentence(p, "sweep")


@pytest.mark.slow
def test_more_workers_than_cpus_is_refused(tmp_path):
    videos = video_folder(tmp_path / "videos", [6])
    p = signbart("extract", videos, tmp_path / "out", "--workers", "99")
    assert p.returncode == 2
    assert f"--workers 99: the Ray cluster has {os.cpu_count()} CPUs" \
        in one_sentence(p, "extract")


def test_duplicate_labels_and_a_corrupt_array_are_named(tmp_path):
    out = tmp_path / "d"
    assert signbart("synth", out, "--signers", "2", "--classes", "3", "--reps", "1") \
        .returncode == 0
    labels = json.loads((out / "labels.json").read_text())
    shard = out / "arrays" / "shard-00000.npy"
    header = b"'descr': '<f4'"
    data = shard.read_bytes()
    assert header in data[:128]
    shard.write_bytes(data.replace(header, b"'descr': '|O' ", 1))  # a damaged header
    with pytest.raises(DatasetError, match=r"shard-00000.npy: corrupt keypoint array"):
        open_dataset(out).keypoints(0)
    (out / "labels.json").write_text(json.dumps({**labels, "labels": ["C01", "C02", "C01"]}))
    with pytest.raises(DatasetError, match=r"labels.json: field 'labels' lists 'C01' twice"):
        open_dataset(out)
