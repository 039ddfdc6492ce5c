"""Preprocessing throughput: vectorised ``prepare_arrays`` vs the reference's per-frame loop.

    python benchmarks/bench_preprocess.py            # 1,000 synthetic samples, 65 keypoints

Both produce the same arrays (checked); the ratio is measured in one run. Aim: >= 20x.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from common import parser, write

from signbart.config import MAX_FRAMES, VariantConfig
from signbart.layouts import get_layout
from signbart.preprocess import Selection, prepare_arrays


def reference_loop(samples, selection, max_frames=MAX_FRAMES):
    """The reference's approach: Python loops over samples, frames and groups."""
    out = []
    for s in samples:
        kp = np.clip(s[:, selection.indices, :2], 0, 1)
        if len(kp) > max_frames:
            kp = kp[np.linspace(0, len(kp) - 1, max_frames).astype(int)]
        kp = kp.copy()
        for t in range(len(kp)):
            for g in selection.groups:
                pts = kp[t, g]
                present = (pts != 0).any(-1)
                if not present.any():
                    continue
                lo, hi = pts[present].min(0), pts[present].max(0)
                w, h = hi - lo
                if w > h:
                    d = np.array([0.05 * w, 0.05 * w + (w - h) / 2])
                else:
                    d = np.array([0.05 * h + (h - w) / 2, 0.05 * h])
                s0, e0 = np.clip(lo - d, 0, 1), np.clip(hi + d, 0, 1)
                span = np.where(e0 - s0 > 0, e0 - s0, 1)
                kp[t, g] = np.where(present[:, None], (pts - s0) / span, 0)
        out.append(kp)
    return out


def main():
    args = parser(__doc__, "preprocess").parse_args()
    rng = np.random.default_rng(0)
    samples = []
    for _ in range(1000):
        s = rng.uniform(0.1, 0.9, (int(rng.integers(25, 90)), 65, 3)).astype(np.float32)
        s[rng.random(len(s)) < 0.3, 23:44] = 0      # left hand often missing, as in real data
        samples.append(s)
    sel = Selection.of(VariantConfig(name="arabic-asl-65kpts"), get_layout("holistic-65"))
    labels = np.zeros(len(samples), np.int32)
    start = time.perf_counter()
    fast = prepare_arrays(samples, labels, sel)
    t_fast = time.perf_counter() - start
    start = time.perf_counter()
    slow = reference_loop(samples, sel)
    t_slow = time.perf_counter() - start
    for i in range(0, 1000, 97):
        n = len(slow[i])
        np.testing.assert_allclose(fast.x[i, :n], slow[i], atol=1e-5)
    write(args.out, {"samples": len(samples), "frames": int(sum(map(len, samples))),
                     "vectorised_samples_per_s": len(samples) / t_fast,
                     "loop_samples_per_s": len(samples) / t_slow,
                     "speedup": t_slow / t_fast})


if __name__ == "__main__":
    main()
