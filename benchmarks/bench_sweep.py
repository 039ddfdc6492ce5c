"""Sweep throughput: one fixed grid with 1 and with 2 concurrent trials, and Tune's overhead.

    .venv/bin/python benchmarks/bench_sweep.py               # ~6 min on 2 idle cores

The grid: synthetic data (4 signers x 10 classes x 3 reps), 2 holdouts x 2 seeds x a small
65-keypoint variant (d_model 64), fp32 only, ``--epochs`` epochs, 1 CPU (= 1 TF thread) per
trial. Each run gets a fresh in-process Ray, started before the clock; the clock covers
``run_sweep`` (Tune start-up, trial actors, TF start-up, training, export, evaluation).

- speedup = wall(1 concurrent) / wall(2 concurrent); the aim is >= 1.7 on 2 cores.
- tune_overhead_s per trial = (wall(1) - sum of each trial's own ``run_trial`` seconds) / trials:
  what Ray Tune itself costs (actor start, scheduling, results, driver).
- cores_used = CPU seconds of all trials / wall: near 2 with 2 concurrent trials on 2 idle
  cores. Far less means other work took the cores; note that Ray runs its workers at nice 15
  (``RAY_worker_niceness``), so on a shared machine any nice-0 process wins over the trials.
- not_training_s per trial = (wall(1) - sum of ``train_seconds``) / trials: everything that is
  not ``model.fit`` (the above plus TF start-up, TFLite export and evaluation).

The load average of the machine is recorded too: other work on the same cores skews both.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import tempfile
import time
from pathlib import Path

import ray
import yaml

from signbart.results import read_rows
from signbart.sweep import run_sweep
from signbart.synth import synthesize

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import parser, write

REPO = Path(__file__).resolve().parents[1]
MODEL = {"d_model": 64, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 4,
         "decoder_attention_heads": 4, "encoder_ffn_dim": 64, "decoder_ffn_dim": 64}


def make_spec(tmp: Path, name: str, epochs: int) -> Path:
    variant = yaml.safe_load((REPO / "configs/arabic-asl-65kpts.yaml").read_text())
    variant.update(name="bench", model=MODEL)
    (tmp / "bench.yaml").write_text(yaml.safe_dump(variant))
    spec = {"name": name, "data": str(tmp / "data"), "holdouts": ["user01", "user02"],
            "seeds": [1, 2], "variants": [str(tmp / "bench.yaml")], "quant": ["fp32"],
            "baseline": False, "retries": 0, "resources": {"cpu": 1},
            "train": {"epochs": epochs, "batch_size": 8}}
    path = tmp / f"{name}.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def run(tmp: Path, concurrent: int, epochs: int) -> dict:
    spec = make_spec(tmp, f"c{concurrent}", epochs)
    ray.init(address="local", num_cpus=2, include_dashboard=False,
             runtime_env={"env_vars": {"TF_USE_LEGACY_KERAS": "1"}})
    try:
        load = os.getloadavg()[0]
        start = time.perf_counter()
        summary = run_sweep(spec, storage=str(tmp / "store"), max_concurrent=concurrent)
        wall = time.perf_counter() - start
    finally:
        ray.shutdown()
    if not summary.ok:
        raise SystemExit(f"the benchmark sweep failed:\n{summary}")
    results = tmp / "store" / f"c{concurrent}" / "results"
    attempts = [json.loads(p.read_text())[-1] for p in results.glob("*.node.json")]
    trial_s = [a["seconds"] for a in attempts]
    rows = read_rows([str(p) for p in results.glob("*.parquet")]).to_pylist()
    n = len(trial_s)
    return {"concurrent": concurrent, "trials": n, "wall_s": round(wall, 2),
            "trial_s": [round(s, 2) for s in sorted(trial_s)],
            "train_s": [round(r["train_seconds"], 2) for r in rows],
            "tune_overhead_s": round((concurrent * wall - sum(trial_s)) / n, 2),
            # CPU the trials got per second of wall time: 2.0 = both cores, all the time
            "cores_used": round(sum(a["cpu_seconds"] for a in attempts) / wall, 2),
            "loadavg_before": round(load, 2)}


def main() -> None:
    p = parser(__doc__.splitlines()[0], "sweep")
    p.add_argument("--epochs", type=int, default=15)
    args = p.parse_args()
    logging.basicConfig(level=logging.WARNING)
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        synthesize(tmp / "data", signers=4, classes=10, reps=3, seed=0)
        one, two = run(tmp, 1, args.epochs), run(tmp, 2, args.epochs)
    figures = {"grid": "2 holdouts x 2 seeds x 1 variant (d_model 64), fp32, "
                       f"{args.epochs} epochs, 1 CPU/trial",
               "one": one, "two": two,
               "speedup": round(one["wall_s"] / two["wall_s"], 2),
               "tune_overhead_s_per_trial": one["tune_overhead_s"],
               "not_training_s_per_trial": round(
                   (one["wall_s"] - sum(one["train_s"])) / one["trials"], 2),
               "loadavg_after": round(os.getloadavg()[0], 2)}
    write(args.out, figures)


if __name__ == "__main__":
    main()
