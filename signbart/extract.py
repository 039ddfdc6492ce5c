"""MediaPipe Holistic keypoints from folders of sign videos, in parallel on Ray.

``extract_video(path) -> float32 [frames, K, 3]`` is the whole computation. ``extract_dir`` fans it
out over a pool of Ray actors, one Holistic graph each, and writes a signbart dataset. A video
that cannot be used (corrupt, empty, not a video, nobody in it) becomes a row of
``extraction_failures.parquet`` and the run goes on; ``resume=True`` skips videos already in the
dataset, so an interrupted run just restarts.

Stored values: normalised image x and y, and MediaPipe's z (pose: depth around the hips, hands:
around the wrist, face: around the face centre; all on roughly the scale of x). A component
MediaPipe does not see in a frame (a hand out of view, no face) is zeros for that frame.
Hands are named from the signer's own point of view, as MediaPipe reports them.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import re
import sys
import tempfile
import time
from collections import deque
from dataclasses import dataclass, field
from itertools import count
from pathlib import Path

import numpy as np
import pandas as pd

from signbart.data import (
    FAILURES_FILE,
    DatasetWriter,
    clear_dataset,
    parse_metadata,
    read_glosses_csv,
    read_signers_csv,
    remove_stale_temp,
)
from signbart.errors import DatasetError, StorageError, UserError
from signbart.layouts import Layout, get_layout, import_mediapipe_solutions
from signbart.outlock import OutputLock
from signbart.raycluster import LOCAL, connect, resolve
from signbart.storage import write_parquet

log = logging.getLogger(__name__)

VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".webm")
FLIP_SUFFIX = "_flip"
FLUSH_EVERY = 32  # videos per shard at most ...
FLUSH_SECONDS = 60.0  # ... and seconds between shards: a kill -9 loses at most a minute
MODEL_COMPLEXITY = 1  # Holistic's middle model, the one inside the wheel
# Test hook: an actor that gets a video whose path contains this variable's value exits at
# once, as a segfault would, so tests can check that a dead actor is replaced.
CRASH_HOOK_ENV = "SIGNBART_EXTRACT_CRASH_ON"

_COMPONENTS = {"pose": "pose_landmarks", "left_hand": "left_hand_landmarks",
               "right_hand": "right_hand_landmarks", "face": "face_landmarks"}


class VideoError(DatasetError):
    """A video that yields no keypoints. ``reason`` is the message without the path."""

    def __init__(self, path, reason: str):
        super().__init__(f"{path}: {reason}")
        self.path, self.reason = path, reason

    def __reduce__(self):  # both arguments survive pickling into another process
        return type(self), (self.path, self.reason)


# ---------------------------------------------------------------- one video

def _import_holistic():
    return import_mediapipe_solutions().holistic.Holistic


def make_holistic():
    """A Holistic graph in video mode (``model_complexity=1``; its models ship in the wheel)."""
    return _import_holistic()(static_image_mode=False, model_complexity=MODEL_COMPLEXITY)


class TimedHolistic:
    """A Holistic graph that adds up the seconds spent inside MediaPipe's ``process``, so a
    run can report how much of its workers' time went to anything else."""

    def __init__(self):
        self.graph = make_holistic()
        self.seconds = 0.0

    def reset(self) -> None:
        self.graph.reset()

    def process(self, image):
        start = time.perf_counter()
        try:
            return self.graph.process(image)
        finally:
            self.seconds += time.perf_counter() - start

    def close(self) -> None:
        self.graph.close()


def _layout(layout: str | Layout) -> Layout:
    if isinstance(layout, Layout):
        return layout
    return get_layout(layout)


def _frames(path: Path, mirror: bool):
    """RGB frames of a video, mirrored left-right when asked, as OpenCV decodes them."""
    import cv2

    try:
        size = path.stat().st_size
    except OSError as e:
        raise VideoError(path, f"unreadable ({e.strerror})") from None
    if size == 0:
        raise VideoError(path, "empty file (0 bytes)")
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise VideoError(path, "OpenCV cannot open it (corrupt, truncated or not a video)")
    announced = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    decoded = 0
    try:
        while True:
            ok, bgr = cap.read()
            if not ok:
                break
            decoded += 1
            if mirror:
                bgr = cv2.flip(bgr, 1)
            yield cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()
    if decoded == 0:
        raise VideoError(path, "no frame could be decoded")
    if decoded < 0.9 * announced:
        raise VideoError(path, f"decoded only {decoded} of the {announced} frames the file "
                               "announces (truncated or corrupt)")


def extract_video(path, holistic=None, mirror: bool = False,
                  layout: str | Layout = "holistic-90") -> np.ndarray:
    """Keypoints of one video: float32 [frames, K, 3] in ``layout`` order.

    ``mirror`` flips every image left-right before MediaPipe sees it, so a left-handed signer
    becomes a right-handed one (MediaPipe then reports the dominant hand as the right hand).
    A given ``holistic`` graph is reset first: in video mode it tracks hands from the previous
    frame, and that state would otherwise leak from the last video into this one.
    Raises VideoError for an empty, unreadable, truncated or zero-frame file and for a video
    in which no person is found.
    """
    path = Path(path)
    layout = _layout(layout)
    plan = [(_COMPONENTS[g], np.array(slots), [layout.keypoints[i].source_index for i in slots])
            for g, slots in layout.groups().items()]
    own = holistic is None
    if own:
        holistic = make_holistic()
    else:
        holistic.reset()
    rows = []
    try:
        for rgb in _frames(path, mirror):
            res = holistic.process(rgb)
            kp = np.zeros((len(layout), 3), np.float32)
            for attr, slots, src in plan:
                found = getattr(res, attr)
                if found is not None:
                    lm = found.landmark
                    kp[slots] = [(lm[i].x, lm[i].y, lm[i].z) for i in src]
            rows.append((kp, res.pose_landmarks is not None))
    finally:
        if own:
            holistic.close()
    if not any(person for _, person in rows):
        raise VideoError(path, f"no person found in any of its {len(rows)} frames")
    return np.stack([kp for kp, _ in rows])


# ---------------------------------------------------------------- the Ray fan-out

class HolisticWorker:
    """A Ray actor holding one Holistic graph. It gets the video's bytes, not its path, so a
    cluster needs no shared filesystem."""

    def __init__(self, layout: Layout):
        import ray

        self.layout = layout
        self.holistic = TimedHolistic()
        self.node = ray.get_runtime_context().get_node_id()

    def extract(self, source: str, data: bytes, mirrors: tuple[bool, ...]) -> dict:
        marker = os.environ.get(CRASH_HOOK_ENV)
        if marker and marker in source:
            os._exit(1)
        busy = self.holistic.seconds
        with tempfile.TemporaryDirectory(prefix="signbart-extract-") as tmp:
            path = Path(tmp) / Path(source).name
            path.write_bytes(data)
            try:
                arrays = [extract_video(path, self.holistic, m, self.layout) for m in mirrors]
            except VideoError as e:
                return {"node": self.node, "error": e.reason}
        return {"node": self.node, "arrays": arrays, "process_s": self.holistic.seconds - busy}


@dataclass(frozen=True)
class ExtractSummary:
    out: Path
    ok: int          # videos written in this run
    skipped: int     # videos already in the dataset (resume)
    frames: int      # frames extracted in this run (mirrored copies not counted twice)
    seconds: float
    process_seconds: float  # summed over workers: inside MediaPipe's process() (good videos)
    failures: tuple[tuple[str, str], ...] = ()     # (file relative to the input, reason)
    nodes: dict[str, str] = field(default_factory=dict)  # file -> Ray node id that did it

    @property
    def failed(self) -> int:
        return len(self.failures)

    def __str__(self) -> str:
        failed = f", {self.failed} failed (see {self.out / FAILURES_FILE})" if self.failed else ""
        return (f"{self.out}: {self.ok} videos extracted ({self.frames} frames, "
                f"{self.seconds:.1f} s), {self.skipped} skipped{failed}")

    def exit_status(self, allow_failures: bool = False) -> int:
        """1 when a video failed (unless allowed), so scripts notice a partial dataset."""
        return int(bool(self.failures) and not allow_failures)


@dataclass
class _Job:
    path: Path
    source: str      # path relative to the input folder, as the manifest stores it
    meta: dict
    mirror: bool     # mirror the primary sample (a left-handed signer)
    size: int
    mtime: float


def find_videos(root: Path) -> list[Path]:
    """Every video file under ``root`` (by suffix, any depth), sorted. Symlinked folders are
    followed (a selection of signers is often a folder of links), each real folder once."""
    found, seen = [], set()
    for folder, dirs, files in os.walk(root, followlinks=True):
        real = os.path.realpath(folder)
        if real in seen:  # a link back up the tree, or a second link to the same folder
            dirs[:] = []
            continue
        seen.add(real)
        dirs.sort()
        found += [Path(folder) / f for f in files if Path(f).suffix.lower() in VIDEO_SUFFIXES
                  and (Path(folder) / f).is_file()]
    return sorted(found)


def _sample_id(source: str) -> str:
    # the relative path, not the file name: MLR511's "R03.mp4" exists once per signer and class
    return re.sub(r"[/\\]", "_", str(Path(source).with_suffix("")))


def _flip_signers(root: Path, flip_signers, signers: set[str]) -> set[str]:
    if flip_signers is None:
        csv = root / "signers.csv"
        if not csv.is_file():
            return set()
        chosen = {s for s, hand in read_signers_csv(csv).items() if hand == "left"}
        log.info("mirroring left-handed signers from %s: %s", csv, ", ".join(sorted(chosen)))
        return chosen
    chosen = {s.strip() for s in flip_signers if s.strip()}
    unknown = sorted(chosen - signers)
    if unknown:
        raise UserError(f"--flip-signers: signer {unknown[0]!r} has no video under {root} "
                        f"(signers: {', '.join(sorted(signers))})")
    return chosen


class _Progress:
    """Videos done/total, frames/s, elapsed time and ETA: a rich progress bar on a TTY, else
    a log line every ``every`` seconds and at the end. The clock starts at ``begin``, when the
    first video goes to an actor, so Ray's start-up does not dilute the rate."""

    def __init__(self, total: int, enabled: bool, every: float = 10.0):
        self.total, self.enabled, self.every = total, enabled, every
        self.start = self.last = 0.0
        self.bar = self.task = None

    def begin(self) -> None:
        self.start = self.last = time.perf_counter()
        if not (self.enabled and sys.stderr.isatty()):
            return
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("extract"), BarColumn(), MofNCompleteColumn(),
                            TextColumn("videos, {task.fields[fps]:.1f} frames/s,"),
                            TimeElapsedColumn(), TextColumn("elapsed, ETA"),
                            TimeRemainingColumn(), TextColumn("{task.fields[failed]} failed"),
                            console=Console(stderr=True))
        self.task = self.bar.add_task("extract", total=self.total, fps=0.0, failed=0)
        self.bar.start()

    def line(self, done: int, frames: int, failed: int, now: float) -> str:
        elapsed = now - self.start
        rate = done / elapsed if elapsed > 0 else 0.0
        eta = _clock((self.total - done) / rate) if rate else "?"
        return (f"{done}/{self.total} videos, {frames / max(elapsed, 1e-9):.1f} frames/s, "
                f"elapsed {_clock(elapsed)}, ETA {eta}, {failed} failed")

    def update(self, done: int, frames: int, failed: int, final: bool = False) -> None:
        now = time.perf_counter()
        if self.bar is not None:
            self.bar.update(self.task, completed=done, failed=failed,
                            fps=frames / max(now - self.start, 1e-9))
        elif self.enabled and (final or now - self.last >= self.every):
            self.last = now
            log.info("extract: %s", self.line(done, frames, failed, now))

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


def _clock(seconds: float) -> str:
    return str(datetime.timedelta(seconds=round(seconds)))


def _ray_workers(ray, address: str | None, workers: int | None) -> tuple[int, bool]:
    """Connect to or start Ray (``raycluster.connect``); returns (actors to run, whether this
    call started Ray)."""
    # A local Ray gets a CPU per core. MediaPipe logs a dozen lines per video; they stay in
    # Ray's worker logs.
    local = resolve(address) == LOCAL
    started = connect(address, num_cpus=(os.cpu_count() or 1) if local else None,
                      log_to_driver=False)
    total = int(ray.cluster_resources().get("CPU", 0))
    if workers is not None and not 1 <= workers <= total:
        if started:
            ray.shutdown()
        raise UserError(f"--workers {workers}: the Ray cluster has {total} CPUs "
                        "(one Holistic actor needs one)")
    return workers or total, started


def extract_dir(videos, out, layout: str = "holistic-90", workers: int | None = None,
                address: str | None = None, flip: bool = False, flip_signers=None,
                pattern: str | None = None, resume: bool = False, progress: bool = True,
                overwrite: bool = False, force_settings: bool = False,
                flush_seconds: float = FLUSH_SECONDS) -> ExtractSummary:
    """Extract every video under ``videos`` into the dataset directory ``out``.

    Metadata comes from ``data.parse_metadata`` (``pattern`` or the default names, or the
    ``<signer>/<class>/<rep>`` folders). ``flip_signers`` (default: the left-handed signers of
    a ``signers.csv`` beside the videos) are mirrored before MediaPipe so the dominant hand
    fills the right-hand slots; ``flip`` adds a mirrored copy of every sample (``*_flip``).
    A ``glosses.csv`` beside the videos names the classes. Runs on the cluster at ``address``,
    else on Ray in this process (``workers`` actors, default one per CPU).
    ``out`` is locked for the run. ``resume`` continues a dataset extracted with the same
    settings (``force_settings``: any); ``overwrite`` replaces whatever dataset is there.
    Finished videos are flushed to disk every ``FLUSH_EVERY`` videos or ``flush_seconds``.
    """
    root, out = Path(videos), Path(out)
    if not root.is_dir():
        raise UserError(f"{root}: not a directory of videos")
    if workers is not None and workers < 1:
        raise UserError(f"extract: --workers must be at least 1, got {workers}")
    if not (isinstance(flush_seconds, (int, float)) and 0 <= flush_seconds < float("inf")):
        raise UserError(f"extract: --flush-seconds must be a finite number of seconds >= 0 "
                        f"(0 flushes after every video), got {flush_seconds}")
    if resume and overwrite:
        raise UserError("--resume and --overwrite exclude each other: continue the dataset in "
                        f"{out}, or replace it")
    layout_obj = _layout(layout)
    paths = find_videos(root)
    if not paths:
        raise UserError(f"{root}: no videos ({', '.join(VIDEO_SUFFIXES)}) found")
    with OutputLock(out):
        remove_stale_temp(out)
        if overwrite:
            clear_dataset(out)
        return _extract_locked(root, out, paths, layout_obj, workers, address, flip,
                               flip_signers, pattern, resume, progress, force_settings,
                               flush_seconds)


def _extract_locked(root: Path, out: Path, paths: list[Path], layout_obj: Layout, workers,
                    address, flip: bool, flip_signers, pattern, resume: bool, progress: bool,
                    force_settings: bool, flush_seconds: float) -> ExtractSummary:
    failures: list[tuple[str, str]] = []
    parsed = []
    for path in paths:
        source = path.relative_to(root).as_posix()
        try:
            parsed.append((path, source, parse_metadata(path, root, pattern)))
        except DatasetError as e:
            _fail(failures, source, str(e).removeprefix(f"{path}: "))
    mirrored = _flip_signers(root, flip_signers, {m["signer"] for *_, m in parsed})
    glosses_csv = root / "glosses.csv"
    writer = DatasetWriter(
        out, layout_obj, glosses=read_glosses_csv(glosses_csv) if glosses_csv.is_file() else None,
        description=f"MediaPipe Holistic keypoints of the videos in {root.resolve()}",
        resume=resume, extraction=extraction_settings(layout_obj, pattern, mirrored, flip),
        force_settings=force_settings)
    done = writer.existing_sources() if resume else {}
    jobs, skipped = deque(), 0
    for path, source, meta in parsed:
        st = path.stat()
        if source in done:
            if tuple(done[source]) == (st.st_size, st.st_mtime):
                skipped += 1
            else:
                _fail(failures, source, "changed since it was extracted into this dataset "
                                        "(size or mtime differ); extract into a new directory")
            continue
        jobs.append(_Job(path, source, meta, meta["signer"] in mirrored, st.st_size,
                         st.st_mtime))
    log.info("%d videos: %d to extract, %d already done, %d unparseable",
             len(paths), len(jobs), skipped, len(failures))

    nodes: dict[str, str] = {}
    frames = ok = 0
    busy = 0.0
    start = time.perf_counter()
    try:
        with writer:  # on an error or Ctrl-C it still flushes what is done, for --resume
            if jobs:
                frames, ok, busy = _run(jobs, writer, layout_obj, workers, address, flip,
                                        failures, nodes, _Progress(len(jobs), progress),
                                        flush_seconds)
    except BaseException as e:
        with contextlib.suppress(StorageError):  # the first error is the one to report
            _write_failures(out, failures)
        if isinstance(e, StorageError):
            kept = len(writer.existing_sources())
            raise StorageError(f"{e}; the {kept} videos already in {out} are kept: free some "
                               "space and run the same command with --resume") from None
        raise
    _write_failures(out, failures)
    summary = ExtractSummary(out, ok, skipped, frames, time.perf_counter() - start, busy,
                             tuple(failures), nodes)
    log.info("extracted %d videos (%d frames) in %.1f s; %d failed, %d skipped",
             ok, frames, summary.seconds, summary.failed, skipped)
    return summary


def extraction_settings(layout: Layout, pattern: str | None, mirrored: set[str],
                        flip: bool) -> dict:
    """What decides a sample's keypoints besides the video: recorded in ``dataset.json`` and
    compared by ``--resume``."""
    from importlib.metadata import version

    return {"layout": layout.name, "pattern": pattern, "mirrored_signers": sorted(mirrored),
            "flip": flip, "mediapipe": version("mediapipe"),
            "model_complexity": MODEL_COMPLEXITY}


def _write_failures(out: Path, failures: list) -> None:
    write_parquet(out / FAILURES_FILE, pd.DataFrame(failures, columns=["file", "reason"]))


def _fail(failures: list, source: str, reason: str) -> None:
    log.warning("%s: %s", source, reason)
    failures.append((source, reason))


def _run(jobs: deque, writer: DatasetWriter, layout: Layout, workers, address, flip: bool,
         failures: list, nodes: dict, progress: _Progress,
         flush_seconds: float = FLUSH_SECONDS) -> tuple[int, int, float]:
    """Feed the jobs to a pool of actors, one video in flight per actor, and write results in
    the order they finish. A dead actor fails its video and is replaced, never retried.
    Returns (frames, videos written, seconds inside MediaPipe)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    n, started = _ray_workers(ray, address, workers)
    remote = ray.remote(num_cpus=1, max_restarts=0)(HolisticWorker)
    names = count()

    def spawn():  # named, so the dashboard shows which actor is which
        return remote.options(name=f"holistic-{next(names)}",
                              scheduling_strategy="SPREAD").remote(layout)

    actors = [spawn() for _ in range(min(n, len(jobs)))]
    idle, running = list(range(len(actors))), {}
    frames = ok = finished = 0
    busy = 0.0
    failed_before = len(failures)
    flushed = time.monotonic()
    progress.begin()
    try:
        while jobs or running:
            while idle and jobs:
                slot, job = idle.pop(), jobs.popleft()
                try:
                    data = job.path.read_bytes()
                except OSError as e:
                    _fail(failures, job.source, f"unreadable ({e.strerror or e})")
                    idle.append(slot)
                    finished += 1
                    continue
                mirrors = (job.mirror, not job.mirror) if flip else (job.mirror,)
                ref = actors[slot].extract.options(name=f"extract {job.source}").remote(
                    job.source, data, mirrors)
                running[ref] = (slot, job, mirrors)
            ready, _ = ray.wait(list(running), timeout=1.0) if running else ([], [])
            for ref in ready:
                slot, job, mirrors = running.pop(ref)
                idle.append(slot)
                finished += 1
                try:
                    result = ray.get(ref)
                except RayActorError as e:  # its process died (segfault, OOM kill): replace it
                    detail = str(e).strip().splitlines()[-1][:200]
                    _fail(failures, job.source,
                          f"the worker extracting it died; not retried ({detail})")
                    ray.kill(actors[slot], no_restart=True)
                    actors[slot] = spawn()
                    continue
                except RayTaskError as e:  # an unexpected exception, not a VideoError
                    _fail(failures, job.source, f"{type(e.cause).__name__}: {e.cause}")
                    continue
                nodes[job.source] = result["node"]
                reason = _write(writer, job, mirrors, result)
                if reason:
                    _fail(failures, job.source, reason)
                    continue
                ok += 1
                frames += len(result["arrays"][0])
                busy += result["process_s"]
                if ok % FLUSH_EVERY == 0:
                    writer.flush()
            if time.monotonic() - flushed >= flush_seconds:  # checked at least once a second
                writer.flush()
                flushed = time.monotonic()
            progress.update(finished, frames, len(failures) - failed_before)
        progress.update(finished, frames, len(failures) - failed_before, final=True)
    finally:
        progress.stop()
        for actor in actors:
            ray.kill(actor)
        if started:
            ray.shutdown()
    return frames, ok, busy


def _write(writer: DatasetWriter, job: _Job, mirrors: tuple[bool, ...], result: dict):
    """Add one video's samples (the ``_flip`` copy is the one mirrored unlike the primary);
    returns why the video failed, or None."""
    if "error" in result:
        return result["error"]
    try:
        for mirror, keypoints in zip(mirrors, result["arrays"]):
            writer.add(_sample_id(job.source) + (FLIP_SUFFIX if mirror != job.mirror else ""),
                       job.meta["signer"], job.meta["label"], job.meta["repetition"],
                       keypoints, source=job.source, mirrored=mirror, source_size=job.size,
                       source_mtime=job.mtime)
    except DatasetError as e:
        return str(e).removeprefix(f"{job.source}: ")
    return None
