"""Size and single-thread TFLite latency of each export mode of the 65-keypoint default model.

    python benchmarks/bench_quant.py                 # ~2 min on 2 cores

Random-initialised weights: size and speed do not depend on training. QAT is applied but
not fine-tuned (the exported graph is the same). Full INT8 is calibrated on random
keypoints. All four files are built and timed in one run, interleaved round by round so
background load hits every mode alike; the INT8/FP32 speed-up compares those timings.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, write

from signbart import tflite
from signbart.config import MAX_FRAMES, ModelConfig, QATConfig
from signbart.model import build_model, count_params
from signbart.quantize import (
    apply_qat,
    full_int8,
    ptq_dynamic,
    qat_to_tflite,
    to_tflite,
)
from signbart.tfkeras import seed_everything

FRAMES = MAX_FRAMES


def representative(cfg: ModelConfig, n: int = 32):
    rng = np.random.default_rng(0)
    for _ in range(n):
        length = int(rng.integers(FRAMES // 2, FRAMES + 1))
        x = np.zeros((1, FRAMES, cfg.num_keypoints, 2), np.float32)
        x[0, :length] = rng.random((length, cfg.num_keypoints, 2))
        yield x, (np.arange(FRAMES) < length).astype(np.float32)[None]


def main() -> None:
    p = parser(__doc__.splitlines()[0], "quant")
    p.add_argument("--invokes", type=int, default=100, help="timed invokes per mode (>= 50)")
    p.add_argument("--rounds", type=int, default=4, help="interleaved timing rounds")
    args = p.parse_args()

    seed_everything(0)
    cfg = ModelConfig(num_keypoints=65, num_labels=10)
    model = build_model(cfg)
    files = {"fp32": to_tflite(model, FRAMES), "ptq": ptq_dynamic(model, FRAMES),
             "qat": qat_to_tflite(apply_qat(model, QATConfig()), FRAMES),
             "int8": full_int8(model, representative(cfg), FRAMES)}

    per_round = max(1, args.invokes // args.rounds)
    times: dict[str, list[dict]] = {mode: [] for mode in files}
    for _ in range(args.rounds):
        for mode, blob in files.items():
            times[mode].append(tflite.latency(blob, n=per_round, warmup=10, num_threads=1))
    latency = {mode: {k: float(np.median([r[k] for r in runs])) for k in runs[0]}
               for mode, runs in times.items()}

    fp32_ms = latency["fp32"]["latency_ms_p50"]
    write(args.out, {
        "config": "ModelConfig(num_keypoints=65, num_labels=10) defaults",
        "params": count_params(model),
        "max_frames": FRAMES,
        "num_threads": 1,
        "timed_invokes_per_mode": per_round * args.rounds,
        "size_bytes": {mode: len(blob) for mode, blob in files.items()},
        "size_vs_fp32": {mode: len(blob) / len(files["fp32"]) for mode, blob in files.items()},
        "int8_dense_kernels": {mode: list(tflite.int8_dense_kernels(blob)) for mode, blob in files.items()},
        "latency_ms": latency,
        "speedup_vs_fp32_p50": {mode: fp32_ms / v["latency_ms_p50"] for mode, v in latency.items()},
    })


if __name__ == "__main__":
    main()
