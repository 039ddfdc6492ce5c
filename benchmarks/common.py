"""Shared by the benchmark scripts: argument parsing and the JSON figures file."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from signbart.storage import write_text


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=f"benchmarks/results/{default_out}.json")
    return p


def write(out: str, figures: dict) -> None:
    """Print the figures and write them, with the machine they were measured on."""
    figures = {**figures, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                      "processor": platform.processor() or platform.machine(),
                                      "load_average_1_5_15": os.getloadavg()}}
    text = json.dumps(figures, indent=1)
    print(text)
    write_text(out, text)


def seed_rows(rows_dir: Path, seed: int) -> dict[str, dict[str, dict]]:
    """{trial_id: {model_kind: its ok FP32 row}} of a finished sweep's trials at ``seed``: the
    cells a screen re-trains on the same folds and inner signers."""
    out: dict[str, dict[str, dict]] = {}
    for path in sorted((rows_dir / "results").glob("*.parquet")):
        for r in pq.read_table(path).to_pylist():
            if r["seed"] == seed and r["quant"] == "fp32" and r["status"] == "ok":
                out.setdefault(r["trial_id"], {})[r["model_kind"]] = r
    return out


def row_fold(row: dict, data: str | None):
    """(config, dataset, fold) of the trial that wrote ``row``, its fold rebuilt as the trial
    built it; refuses if the inner signers drawn now are not the row's."""
    from signbart.config import ExperimentConfig
    from signbart.data import open_dataset

    cfg = ExperimentConfig.parse(json.loads(row["config"]))
    dataset = open_dataset(data or cfg.data)
    fold = dataset.fold(cfg.holdout, cfg.train.n_val_signers, cfg.seed)
    if list(fold.val_signers) != list(row["val_signers"]):
        raise SystemExit(f"{row['trial_id']}: inner signers {list(fold.val_signers)} are not "
                         f"the row's {row['val_signers']}")
    return cfg, dataset, fold


@contextlib.contextmanager
def worktree(commit: str):
    """``commit`` checked out beside this repository in a temporary folder, removed after."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(path),
                        commit], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(path)],
                           check=True)
