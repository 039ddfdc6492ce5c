"""Hand-built sweep folders for report tests: result rows whose every number is chosen, beside a
format-2 ``sweep.json`` naming the grid they belong to."""

from __future__ import annotations

import json
import zlib
from pathlib import Path

import numpy as np

from signbart.results import write_rows
from signbart.storage import write_json

CLASSES = [f"G{i:02d}" for i in range(1, 11)]
VARIANTS = ("arabic-asl-65kpts-framed-anchored", "arabic-asl-65kpts-framed-light")
# (quant, model_kind) -> (top-1 offset, inner-val offset, model bytes, latency ms)
ARMS = {("fp32", "signbart"): (0.00, 0.000, 2_870_000, 0.39),
        ("ptq", "signbart"): (-0.002, 0.000, 874_000, 0.27),
        ("qat", "signbart"): (-0.01, 0.000, 874_000, 0.28),
        ("fp32", "ensemble"): (0.01, 0.010, 3_060_000, 0.41),
        ("ptq", "ensemble"): (0.01, 0.010, 952_000, 0.31),
        ("fp32", "signbart-keepbest"): (-0.02, -0.01, 2_870_000, 0.38),
        ("fp32", "baseline"): (-0.05, -0.04, None, None)}
VARIANT_SHIFT = {VARIANTS[0]: (0.0, 0.0), VARIANTS[1]: (0.01, -0.003)}


def trial_id(holdout: str, seed: int, variant: str, ablation: str = "") -> str:
    return "-".join([holdout, f"s{seed}", variant] + ([ablation] if ablation else []))


def confusion(top1: float, n: int, rng: np.random.Generator) -> list[list[int]]:
    """A 10-class confusion matrix of ``n`` clips per class with about ``top1`` right."""
    m = np.zeros((len(CLASSES), len(CLASSES)), int)
    for i in range(len(CLASSES)):
        right = int(round(top1 * n))
        m[i, i] = right
        for _ in range(n - right):
            m[i, (i + 1 + rng.integers(len(CLASSES) - 1)) % len(CLASSES)] += 1
    return m.tolist()


def write_sweep(root: Path, name: str, holdouts, seeds=(42,), variants=VARIANTS,
                arms=ARMS, ablation: str = "", done=None, seed_noise: float = 0.01,
                confusions: bool = True, val_signers=None) -> Path:
    """``root/name``: results/<trial>.parquet for the trials in ``done`` (default: all) and a
    format-2 sweep.json listing every trial of holdouts × seeds × variants. ``val_signers``:
    (holdout, seed) -> the trial's inner signers (default: none recorded)."""
    folder = root / name
    rng = np.random.default_rng(zlib.crc32(name.encode()))
    cells = []
    for v in variants:
        for i, h in enumerate(holdouts):
            for seed in seeds:
                tid = trial_id(h, seed, v, ablation)
                chash = f"h-{tid}"
                cells.append({"trial_id": tid, "holdout": h, "seed": seed, "variant": v,
                              "ablation": ablation, "config_hash": chash,
                              "rows": [list(k) for k in arms]})
                if done is not None and tid not in done:
                    continue
                signer = 0.80 + 0.02 * i  # signers differ far more than seeds
                noise = seed_noise * (seed - seeds[0])
                rows = []
                for (quant, kind), (dt, di, size, ms) in arms.items():
                    top1 = round(signer + dt + VARIANT_SHIFT.get(v, (0.0, 0.0))[0] + noise, 2)
                    rows.append({
                        "sweep": name, "trial_id": tid, "holdout": h, "seed": seed,
                        "variant": v, "ablation": ablation or None, "quant": quant,
                        "model_kind": kind, "top1": top1, "top5": min(1.0, top1 + 0.05),
                        "macro_f1": top1 - 0.01, "n_test": 100,
                        "labels": CLASSES, "glosses": [f"g{c}" for c in CLASSES],
                        "confusion": confusion(top1, 10, rng) if confusions else None,
                        "per_class_acc": [top1] * len(CLASSES),
                        "inner_val_accuracy": 0.85 + di + VARIANT_SHIFT.get(v, (0.0, 0.0))[1] + 0.01 * i,
                        "model_bytes": size, "params": 37_000 if kind == "baseline" else 700_000,
                        "flops": 48_000_000, "latency_ms_p50": ms, "config_hash": chash,
                        "git_sha": "abc123", "config": json.dumps({"variant": {"name": v}}),
                        "val_signers": val_signers(h, seed) if val_signers else None})
                write_rows(rows, str(folder / "results" / f"{tid}.parquet"))
    write_json(folder / "sweep.json", {"format": 2, "name": name, "hash": f"hash-{name}",
                                       "git_sha": "abc123", "spec": {"name": name},
                                       "cells": cells})
    return folder
