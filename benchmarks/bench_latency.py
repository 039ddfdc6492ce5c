"""On-device cost of a finished sweep: each exported .tflite, timed as a phone runs it, and
MediaPipe Holistic's cost per frame.

    python benchmarks/bench_latency.py ray_results/mlr511-variants \
        --videos ../shared/data/mlr511/user03 --out benchmarks/results/latency.json
    signbart report ray_results/mlr511-variants --latency benchmarks/results/latency.json ...

Run it on an otherwise idle machine: the latencies that trials record are timed inside a busy
sweep, where two trials share the cores. One fold (``--holdout``, default the first hold-out
every arm finished; its lowest seed) stands for each (variant, quant, model kind): the files
of one arm differ between folds only in their weights. Each file gets ``--warmup`` untimed and
``--invokes`` timed single-sample invokes through ``signbart.tflite.latency`` (the TFLite
interpreter, one thread), in ``--rounds`` interleaved passes over all files so a slow moment
of the machine falls on every file alike; the figures are the median and p90 of the rounds'
medians and p90s. ``signbart report --latency`` reads the ``models`` list.

MediaPipe: the same Holistic graph the extraction runs (``model_complexity`` 1), on the first
``--clips`` videos of ``--videos``, once per stored layout; every ``process`` call is timed.
Holistic always runs its face model, so the 65- and 90-keypoint layouts cost the same graph;
the layout only decides which landmarks are copied out.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, write

from signbart.cells import natural
from signbart.extract import extract_video, find_videos, make_holistic
from signbart.report import audit, load
from signbart.tflite import Runner, latency

ARM = ["variant", "quant", "model_kind"]


def fold_files(runs: list[str], holdout: str | None) -> tuple[str, object, list[dict]]:
    """(hold-out, seed, one .tflite per arm) of the fold that stands for every arm."""
    rows, _ = audit(load(runs))
    rows = rows[(rows.status == "ok") & rows.model_path.notna()]
    if rows.empty:
        raise SystemExit(f"{', '.join(runs)}: no finished row names a .tflite file")
    arms = rows[ARM].drop_duplicates()
    full = [h for h in sorted(rows.holdout.unique(), key=natural)
            if len(rows[rows.holdout == h][ARM].drop_duplicates()) == len(arms)]
    if holdout is None and not full:
        raise SystemExit(f"{', '.join(runs)}: no hold-out has a row of every arm; pass --holdout")
    h = holdout or full[0]
    mine = rows[rows.holdout == h]
    if mine.empty:
        raise SystemExit(f"--holdout {h}: no finished row of that hold-out")
    seed = sorted(mine.seed.unique(), key=natural)[0]
    mine = mine[mine.seed == seed].drop_duplicates(ARM)
    return h, seed, [{**{k: r[k] for k in ARM}, "model_path": r.model_path}
                     for _, r in mine.iterrows()]


def time_models(models: list[dict], warmup: int, invokes: int, rounds: int) -> list[dict]:
    runners = [Runner(m["model_path"], 1) for m in models]
    runs = [[] for _ in models]
    for _ in range(rounds):
        for i, run in enumerate(runners):
            runs[i].append(latency(run, n=invokes, warmup=warmup))
    return [{**m, "latency_ms_p50": float(np.median([r["latency_ms_p50"] for r in rs])),
             "latency_ms_p90": float(np.median([r["latency_ms_p90"] for r in rs])),
             "p50_by_round": [round(r["latency_ms_p50"], 4) for r in rs]}
            for m, rs in zip(models, runs)]


class _EachCall:
    """A Holistic graph that keeps the seconds of every ``process`` call."""

    def __init__(self):
        self.graph = make_holistic()
        self.seconds: list[float] = []

    def reset(self) -> None:
        self.graph.reset()

    def process(self, image):
        start = time.perf_counter()
        try:
            return self.graph.process(image)
        finally:
            self.seconds.append(time.perf_counter() - start)


def time_mediapipe(videos: list[Path], layouts: list[str]) -> list[dict]:
    out = []
    for layout in layouts:
        graph = _EachCall()
        frames = [len(extract_video(v, graph, layout=layout)) for v in videos]
        ms = np.array(graph.seconds) * 1e3
        graph.graph.close()
        out.append({"layout": layout, "clips": len(videos), "frames": int(sum(frames)),
                    "frames_per_clip": float(np.mean(frames)),
                    "ms_per_frame_p50": float(np.median(ms)),
                    "ms_per_frame_p90": float(np.percentile(ms, 90))})
    return out


def main() -> None:
    p = parser(__doc__.splitlines()[0], "latency")
    p.add_argument("runs", nargs="+", help="the sweep's storage folder(s), as for signbart report")
    p.add_argument("--holdout", help="the fold whose files are timed (default: the first "
                   "hold-out with a row of every arm)")
    p.add_argument("--warmup", type=int, default=50)
    p.add_argument("--invokes", type=int, default=300)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--videos", help="a folder of videos for MediaPipe's per-frame cost "
                   "(default: none timed)")
    p.add_argument("--clips", type=int, default=5)
    p.add_argument("--layouts", default="holistic-65,holistic-90")
    a = p.parse_args()
    holdout, seed, models = fold_files(a.runs, a.holdout)
    models = time_models(models, a.warmup, a.invokes, a.rounds)
    clips = find_videos(Path(a.videos))[:a.clips] if a.videos else []
    if a.videos and not clips:
        raise SystemExit(f"--videos {a.videos}: no videos found")
    write(a.out, {
        "what": "single-sample TFLite latency, one thread, idle machine; MediaPipe Holistic "
                "ms per frame",
        "runs": a.runs, "holdout": str(holdout), "seed": int(seed),
        "warmup": a.warmup, "invokes": a.invokes, "rounds": a.rounds,
        "models": models,
        "mediapipe": time_mediapipe(clips, a.layouts.split(",")) if clips else []})


if __name__ == "__main__":
    main()
