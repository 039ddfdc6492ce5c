"""Extraction throughput: one core vs all cores, Ray actors vs a plain multiprocessing pool.

    .venv/bin/python benchmarks/bench_extract.py                      # synthetic photo clips
    .venv/bin/python benchmarks/bench_extract.py --videos ../shared/data/mlr511/user03 --limit 20

Runs the same videos through (1) ``extract_video`` in this process, timing MediaPipe's own
``process`` call; (2) ``extract_dir`` with 1 actor and with ``--workers`` actors on an
in-process Ray (started before the clock, actor start-up included); (3) a spawn
``multiprocessing.Pool`` of the same size calling ``extract_video`` (pool start-up included).
"outside_process" = 1 - (seconds inside ``process``, summed over workers) / (workers x wall):
decoding, copying landmarks, start-up, scheduling and idle workers. Prints a table and writes
JSON (``--out``, default benchmarks/results/extract.json). Reference, MLR511 on 2 cores: one core
~20 frames/s, a plain pool 38.4 frames/s; the aim is >= 38 frames/s and < 15 % outside.
"""

from __future__ import annotations

import glob
import logging
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, write

from signbart.extract import TimedHolistic, extract_dir, extract_video, find_videos

log = logging.getLogger("bench_extract")


def pick_videos(spec: str | None, limit: int, tmp: Path) -> list[Path]:
    if spec is None:  # a few clips of a real photograph, 30 frames each
        sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
        from videos import photo_video

        return [photo_video(tmp / "src" / f"user0{i}_G01_R01.mp4", n_frames=30)
                for i in range(1, 5)]
    p = Path(spec)
    found = find_videos(p) if p.is_dir() else sorted(Path(f) for f in glob.glob(spec))
    if not found:
        raise SystemExit(f"--videos {spec}: no videos found")
    return found[:limit]


def link_tree(videos: list[Path], root: Path) -> Path:
    """Symlink the videos as <signer>/<class>/<file> so extract_dir reads any selection
    (MLR511's own layout; synthetic clips are named user0N_G01_R01 and parse either way)."""
    for v in videos:
        dst = root / v.parent.parent.name / v.parent.name / v.name
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.symlink_to(v.resolve())
    return root


def run_serial(videos: list[Path]) -> dict:
    graph = TimedHolistic()
    t = time.perf_counter()
    frames = sum(len(extract_video(v, graph)) for v in videos)
    wall = time.perf_counter() - t
    return {"workers": 1, "wall_s": wall, "frames": frames, "process_s": graph.seconds}


_pool_graph = None


def _pool_init():
    global _pool_graph
    _pool_graph = TimedHolistic()


def _pool_extract(path: Path) -> tuple[int, float]:
    busy = _pool_graph.seconds
    return len(extract_video(path, _pool_graph)), _pool_graph.seconds - busy


def run_pool(videos: list[Path], workers: int) -> dict:
    t = time.perf_counter()
    with mp.get_context("spawn").Pool(workers, initializer=_pool_init) as pool:
        done = list(pool.imap_unordered(_pool_extract, videos, chunksize=1))
    return {"workers": workers, "wall_s": time.perf_counter() - t,
            "frames": sum(n for n, _ in done), "process_s": sum(s for _, s in done)}


def run_ray(videos: list[Path], workers: int, tmp: Path) -> dict:
    root = link_tree(videos, tmp / f"tree-{workers}")
    t = time.perf_counter()
    summary = extract_dir(root, tmp / f"out-{workers}", workers=workers, progress=False)
    wall = time.perf_counter() - t
    if summary.failed:
        raise SystemExit(f"extraction failed: {summary.failures}")
    return {"workers": workers, "wall_s": wall, "frames": summary.frames,
            "process_s": summary.process_seconds}


def main(argv=None) -> dict:
    ap = parser(__doc__.split("\n")[0], "extract")
    ap.add_argument("--videos", help="a folder (searched recursively) or a glob; "
                                     "default: 4 synthetic clips of a photograph")
    ap.add_argument("--limit", type=int, default=20, help="use the first N videos")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    import ray

    with tempfile.TemporaryDirectory(prefix="bench-extract-") as tmp_name:
        tmp = Path(tmp_name)
        videos = pick_videos(args.videos, args.limit, tmp)
        log.info("%d videos, %d workers, load average %s", len(videos), args.workers,
                 os.getloadavg())
        load_before = os.getloadavg()
        runs = {"serial": run_serial(videos)}
        ray.init(address="local", num_cpus=args.workers, include_dashboard=False,
                 log_to_driver=False, logging_level=logging.WARNING)
        try:
            runs["ray-1"] = run_ray(videos, 1, tmp)
            runs[f"ray-{args.workers}"] = run_ray(videos, args.workers, tmp)
        finally:
            ray.shutdown()
        runs[f"pool-{args.workers}"] = run_pool(videos, args.workers)

    for r in runs.values():
        r["frames_per_s"] = r["frames"] / r["wall_s"]
        r["videos_per_s"] = len(videos) / r["wall_s"]
        r["outside_process"] = 1 - r["process_s"] / (r["workers"] * r["wall_s"])
    serial = runs["serial"]
    result = {"videos": len(videos), "source": args.videos or "synthetic photo clips",
              "frames": serial["frames"], "cpu_count": os.cpu_count(),
              "load_average_before": load_before, "load_average_after": os.getloadavg(),
              "mediapipe_ms_per_frame": 1000 * serial["process_s"] / serial["frames"],
              "runs": runs}
    print(f"{'run':<10}{'workers':>8}{'wall s':>9}{'frames/s':>10}{'videos/s':>10}"
          f"{'outside process':>17}")
    for name, r in runs.items():
        print(f"{name:<10}{r['workers']:>8}{r['wall_s']:>9.1f}{r['frames_per_s']:>10.1f}"
              f"{r['videos_per_s']:>10.2f}{r['outside_process']:>16.1%}")
    write(args.out, result)
    return result


if __name__ == "__main__":
    main()
