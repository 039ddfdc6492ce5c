"""The result row: the one contract between trials and reports.

A trial writes one row per (holdout, seed, variant, quant, model_kind) cell to its own Parquet
file, atomically. Reports read only these files, never logs.
"""

from __future__ import annotations

import datetime as _dt
import functools
import os
import subprocess
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from signbart import __version__
from signbart.storage import filesystem, write_parquet

SCHEMA = pa.schema([
    ("sweep", pa.string()),
    ("trial_id", pa.string()),
    ("holdout", pa.string()),          # signer id, or "none" for full-dataset models
    ("seed", pa.int64()),
    ("variant", pa.string()),
    ("ablation", pa.string()),         # the sweep's ablation arm, or null outside one
    ("quant", pa.string()),            # fp32 | ptq | qat | int8
    ("model_kind", pa.string()),       # signbart | baseline | any other kind (ensemble)
    ("status", pa.string()),           # ok | failed
    ("error", pa.string()),
    ("n_train", pa.int64()),
    ("n_val", pa.int64()),
    ("n_test", pa.int64()),
    ("val_signers", pa.list_(pa.string())),
    ("top1", pa.float64()),
    ("top5", pa.float64()),
    ("macro_f1", pa.float64()),
    ("per_class_acc", pa.list_(pa.float64())),
    ("confusion", pa.list_(pa.list_(pa.int64()))),
    ("labels", pa.list_(pa.string())),
    ("glosses", pa.list_(pa.string())),
    ("model_bytes", pa.int64()),
    ("params", pa.int64()),
    ("flops", pa.int64()),
    ("latency_ms_p50", pa.float64()),
    ("latency_ms_p90", pa.float64()),
    ("train_seconds", pa.float64()),
    ("epochs_run", pa.int64()),        # FP32 training epochs (on every row of the trial)
    ("best_epoch", pa.int64()),        # chosen on inner-validation signers, never the holdout
    ("inner_epochs", pa.int64()),      # the inner run's epochs (early stopping may end it)
    ("inner_val_accuracy", pa.float64()),  # the inner run's best score on its inner signers
    ("qat_epochs", pa.int64()),        # QAT fine-tuning epochs (qat rows only)
    ("model_path", pa.string()),
    ("fp32_model_path", pa.string()),
    ("augment", pa.string()),          # JSON of the augmentation config used
    ("search", pa.string()),           # JSON of the settings a nested search chose, or null
    ("synthetic", pa.bool_()),         # the dataset's dataset.json says it is generated data
    ("ensemble_weight", pa.float64()), # SignBART's share in an ensemble row (inner-fitted)
    ("ensemble_mode", pa.string()),    # its mix, arithmetic | geometric (inner-fitted)
    ("ensemble_temperatures", pa.list_(pa.float64())),  # SignBART's, the baseline's (inner-fitted)
    ("ensemble_gate", pa.float64()),   # the baseline abstains beyond this RMS z (inner max), or null
    ("config", pa.string()),           # JSON of the full experiment config
    ("config_hash", pa.string()),
    ("git_sha", pa.string()),          # SIGNBART_GIT_SHA if set (cluster.yaml), else git
    ("node_id", pa.string()),          # the Ray node the trial ran on (null outside a sweep)
    ("hostname", pa.string()),
    ("package_version", pa.string()),
    ("created_at", pa.timestamp("us", tz="UTC")),
])

COLUMNS = SCHEMA.names
CELL_KEYS = ("sweep", "holdout", "seed", "variant", "quant", "model_kind")


@functools.cache
def git_sha() -> str:
    """The commit the code runs from: ``SIGNBART_GIT_SHA`` (set where the code was copied
    without its ``.git``, e.g. by cluster.yaml), else ``git rev-parse HEAD``, else ""."""
    if os.environ.get("SIGNBART_GIT_SHA"):
        return os.environ["SIGNBART_GIT_SHA"]
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True,
                             cwd=Path(__file__).parent, timeout=5)
        return out.stdout.strip() if out.returncode == 0 else ""
    except (OSError, subprocess.SubprocessError):
        return ""


def make_row(**fields) -> dict:
    """A full row: unspecified columns are null; provenance columns are filled in."""
    unknown = set(fields) - set(COLUMNS)
    if unknown:
        raise KeyError(f"unknown result columns: {sorted(unknown)}")
    row = dict.fromkeys(COLUMNS)
    row.update(model_kind="signbart", status="ok", package_version=__version__,
               created_at=_dt.datetime.now(_dt.UTC))
    row.update(fields)
    if not row["git_sha"]:
        row["git_sha"] = git_sha()
    return row


def write_rows(rows: list[dict], path: str) -> str:
    """Write rows to ``path`` (local path or URI) atomically: temp file, then rename."""
    table = pa.Table.from_pylist([make_row(**r) if set(r) != set(COLUMNS) else r for r in rows],
                                 schema=SCHEMA)
    return write_parquet(path, table)


def read_rows(paths: list[str]) -> pa.Table:
    """Concatenate result files, unifying to SCHEMA (columns missing in old files become null)."""
    tables = []
    for path in paths:
        fs, p = filesystem(path)
        t = pq.read_table(p, filesystem=fs)
        cols = [t.column(n).cast(SCHEMA.field(n).type) if n in t.column_names
                else pa.nulls(len(t), SCHEMA.field(n).type) for n in COLUMNS]
        tables.append(pa.Table.from_arrays(cols, schema=SCHEMA))
    return pa.concat_tables(tables) if tables else SCHEMA.empty_table()
