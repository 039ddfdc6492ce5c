"""Training throughput of the tf.data pipeline vs a naive per-sample py_function pipeline.

    python benchmarks/bench_train.py                 # 65-keypoint config, synthetic data

The naive pipeline is the reference's: each sample is preprocessed in Python (per-frame,
per-group loop) inside a single-threaded ``tf.py_function``. Ours preprocesses once,
vectorised, and runs augmentation as graph ops in parallel map calls. Both train the same
model for the same number of samples; the ratio is measured in one run. Also reports the
TFLite FP32 single-thread latency.

It also prices one MLR511 fold (700 training samples) both ways, from throughputs measured in
this run: the reference protocol (80 epochs at batch 1 through the naive pipeline, 64 frames)
against the published one (``sweeps/mlr511-nested.yaml``: 40 epochs at batch 32, 32 frames,
the signer-variation augmentations on).
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from bench_preprocess import reference_loop
from common import parser, write

from signbart import tflite
from signbart.augment import make_augment
from signbart.config import MAX_FRAMES, AugmentConfig, load_variant
from signbart.data import open_dataset
from signbart.model import build_model
from signbart.preprocess import Selection, prepare
from signbart.quantize import to_tflite
from signbart.sweepspec import load_spec
from signbart.synth import synthesize
from signbart.tfkeras import keras, seed_everything, tf
from signbart.train import fold_augment, make_dataset, sparse_ce

ROOT = Path(__file__).resolve().parents[1]
REFERENCE_SAMPLES_PER_S = 58   # the reference pipeline (batch 1, 64 frames)


def naive_dataset(ds, indices, selection, batch_size):
    def load(i):
        kp = reference_loop([ds.keypoints(int(i))], selection)[0].astype(np.float32)
        x = np.zeros((MAX_FRAMES,) + kp.shape[1:], np.float32)
        x[:len(kp)] = kp
        mask = (np.arange(MAX_FRAMES) < len(kp)).astype(np.float32)
        return x, mask, np.int32(ds.label_ids[int(i)])

    def wrap(i):
        x, m, y = tf.py_function(load, [i], [tf.float32, tf.float32, tf.int32])
        x.set_shape((MAX_FRAMES, len(selection.indices), 2))
        m.set_shape((MAX_FRAMES,))
        y.set_shape(())
        return {"keypoints": x, "attention_mask": m}, y

    return tf.data.Dataset.from_tensor_slices(indices).map(wrap).batch(batch_size)


def samples_per_second(model, data, n_samples, batch_size):
    model.fit(data.take(max(1, 16 // batch_size)), epochs=1, verbose=0)    # trace + warm up
    start = time.perf_counter()
    model.fit(data.take(n_samples // batch_size), epochs=1, verbose=0)
    return (n_samples // batch_size) * batch_size / (time.perf_counter() - start)


def fresh_model(variant, jit=False):
    seed_everything(0)
    model = build_model(variant.model_config())
    model.compile(optimizer=keras.optimizers.AdamW(2e-4, weight_decay=0.01),
                  loss=sparse_ce(0.0, variant.num_labels), jit_compile=jit)
    return model


def ceiling_flops(cores: int) -> float:
    """Peak FP32 FLOP/s: one 512-bit FMA (16 lanes x 2 FLOPs) per core per cycle at the
    clock /proc/cpuinfo reports (2.6 GHz here: ~166 GFLOP/s on 2 cores)."""
    mhz = max(float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
              if line.startswith("cpu MHz"))
    return cores * mhz * 1e6 * 16 * 2


def before_after(ds, spec, reps: int) -> dict:
    """Today's training step and each candidate on the same data, interleaved ``reps`` times
    (one epoch of the published settings each), so machine noise hits them all alike.

    before: ``train.compile_model`` as a1f8341 ran it; xla: ``train.jit_compile: true``;
    bf16: the same model built under Keras' ``mixed_bfloat16`` policy (oneDNN's AVX512_BF16
    kernels); noaug: no augmentation (what the tf.data pipeline costs). The first epoch of
    each (tracing, XLA compilation) is timed apart."""
    from dataclasses import replace

    from signbart.evaluate import count_flops
    from signbart.train import compile_model

    cfg, variant = spec.train, load_variant(spec.variants[-1])
    prep = prepare(ds, np.arange(len(ds)), variant, cfg.max_frames)
    augmented = make_dataset(prep, cfg.batch_size, 0, fold_augment(cfg, variant, ds.layout,
                                                                   prep, seed=0))
    plain = make_dataset(prep, cfg.batch_size, 0)

    def build(mode):
        keras.mixed_precision.set_global_policy("mixed_bfloat16" if mode == "bf16" else "float32")
        seed_everything(0)
        model = build_model(variant.model_config())
        keras.mixed_precision.set_global_policy("float32")
        return compile_model(model, replace(cfg, jit_compile=mode == "xla"),
                             variant.num_labels, len(prep))

    def epoch(model, data):
        c0, w0 = time.process_time(), time.perf_counter()
        model.fit(data, epochs=1, verbose=0)
        return time.perf_counter() - w0, time.process_time() - c0

    modes = {"before": augmented, "xla": augmented, "bf16": augmented, "noaug": plain}
    models = {m: build(m) for m in modes}
    first = {m: epoch(models[m], d) for m, d in modes.items()}
    times = {m: [] for m in modes}
    for _ in range(reps):
        for m, d in modes.items():
            times[m].append(epoch(models[m], d))
    out = {"ab_variant": variant.name, "ab_samples": len(prep), "ab_reps": reps}
    for m in modes:
        wall, cpu = (float(np.median([t[i] for t in times[m]])) for i in (0, 1))
        out[f"{m}_samples_per_s"] = len(prep) / wall
        out[f"{m}_cpu_samples_per_s"] = len(prep) / cpu
        out[f"{m}_first_epoch_extra_cpu_s"] = first[m][1] - cpu
    out["samples_per_s_before"] = out["before_samples_per_s"]
    out["samples_per_s_after"] = out["xla_samples_per_s"]
    flops = 3 * count_flops(models["before"], cfg.max_frames)
    peak = ceiling_flops(os.cpu_count())
    out.update(train_flops_per_sample=flops, fp32_ceiling_flops=peak,
               ceiling_samples_per_s=peak / flops,
               fraction_of_ceiling_before=out["samples_per_s_before"] * flops / peak,
               fraction_of_ceiling_after=out["samples_per_s_after"] * flops / peak,
               ratio_to_reference_before=out["samples_per_s_before"] / REFERENCE_SAMPLES_PER_S,
               ratio_to_reference_after=out["samples_per_s_after"] / REFERENCE_SAMPLES_PER_S)
    return out


def main():
    p = parser(__doc__, "train")
    p.add_argument("--samples", type=int, default=256, help="samples timed per measurement")
    p.add_argument("--reps", type=int, default=3, help="interleaved epochs per A/B mode")
    args = p.parse_args()
    variant = load_variant(ROOT / "configs/arabic-asl-65kpts.yaml")
    with tempfile.TemporaryDirectory() as tmp:
        synthesize(Path(tmp) / "d", signers=4, classes=10, reps=10, seed=0)
        ds = open_dataset(Path(tmp) / "d")
        idx = np.arange(len(ds))
        sel = Selection.of(variant, ds.layout)
        start = time.perf_counter()
        prep = prepare(ds, idx, variant)
        prep_seconds = time.perf_counter() - start
        augment = make_augment(AugmentConfig(), sel.groups, sel.mirror, [])
        figures = {"config": "arabic-asl-65kpts", "train_samples": len(ds),
                   "timed_samples": args.samples, "prepare_seconds_all": prep_seconds}
        for batch in (1, 16):
            ours = make_dataset(prep, batch, 0, augment).repeat()
            naive = naive_dataset(ds, idx, sel, batch).repeat()
            figures[f"pipeline_b{batch}_samples_per_s"] = samples_per_second(
                fresh_model(variant), ours, args.samples, batch)
            figures[f"naive_b{batch}_samples_per_s"] = samples_per_second(
                fresh_model(variant), naive, args.samples, batch)
            figures[f"speedup_b{batch}"] = (figures[f"pipeline_b{batch}_samples_per_s"]
                                            / figures[f"naive_b{batch}_samples_per_s"])
        figures["pipeline_b32_samples_per_s"] = samples_per_second(
            fresh_model(variant), make_dataset(prep, 32, 0, augment).repeat(), args.samples * 2, 32)
        figures["speedup_b32_vs_naive_b1"] = (figures["pipeline_b32_samples_per_s"]
                                              / figures["naive_b1_samples_per_s"])
        spec = load_spec(ROOT / "sweeps/mlr511-nested.yaml")
        cfg = spec.train
        framed = load_variant(spec.variants[0])
        short = prepare(ds, idx, framed, cfg.max_frames)
        published = fold_augment(cfg, framed, ds.layout, short, seed=0)
        figures["published_samples_per_s"] = samples_per_second(
            fresh_model(variant), make_dataset(short, cfg.batch_size, 0, published).repeat(),
            args.samples * 2, cfg.batch_size)
        figures.update(before_after(ds, spec, args.reps))
        fold = 700
        figures["fold_seconds_reference"] = 80 * fold / figures["naive_b1_samples_per_s"]
        figures["fold_seconds_published"] = (cfg.epochs * fold
                                             / figures["published_samples_per_s"])
        figures["fold_speedup"] = (figures["fold_seconds_reference"]
                                   / figures["fold_seconds_published"])
        figures["tflite_fp32"] = tflite.latency(to_tflite(fresh_model(variant)))
    write(args.out, figures)


if __name__ == "__main__":
    main()
