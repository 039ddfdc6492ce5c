"""The vocabulary of a LOSO report: which columns make a cell and an arm, the model kinds and
metrics, the order tables are shown in, and the audit that decides which rows count."""

from __future__ import annotations

import dataclasses

import pandas as pd

from signbart.config import QUANT_MODES
from signbart.results import CELL_KEYS
from signbart.trial import KEEPBEST

QUANTS = QUANT_MODES
KINDS = ("signbart", "ensemble", KEEPBEST, "baseline")
METRICS = ("top1", "top5", "macro_f1")
COSTS = ("model_bytes", "params", "flops", "latency_ms_p50", "latency_ms_p90")
# An arm: one model setting. augment_setting is the row's ablation arm (the sweep writes it),
# "" outside an ablation, so ablation settings are never pooled.
GROUP = ["variant", "quant", "model_kind", "augment_setting"]
ALL = "all"  # the holdout value of rows pooled over all holdouts
GRID_ROWS = ("mean", "worst")  # the signer grid's rows under the hold-outs
SHIPPING = ("signbart", "ensemble")  # the kinds a sweep exports as a .tflite to ship
KIND_TAGS = {"signbart": "", "ensemble": "ens", KEEPBEST: "keepbest", "baseline": "base"}


@dataclasses.dataclass
class Audit:
    """What ``signbart.report`` found while checking rows against each folder's sweep.json."""

    rejected: pd.DataFrame  # file, trial_id, reason: rows never pooled
    missing: pd.DataFrame   # cells of a known grid with no row yet, ablation arms included
    grids: pd.DataFrame     # per input folder: sweep, grid ("known" | "unknown: ..."), counts
    expected: pd.DataFrame  # sweep, holdout, seed of every known grid's trials

    @classmethod
    def none(cls) -> Audit:
        """No sweep.json anywhere: every grid unknown, nothing rejected."""
        return cls(pd.DataFrame(columns=["file", "trial_id", "reason"]),
                   pd.DataFrame(columns=list(CELL_KEYS)), pd.DataFrame(),
                   pd.DataFrame(columns=["sweep", "holdout", "seed"]))


def natural(value) -> tuple:
    """Sort key putting signer "2" before "10" and ALL last."""
    s = str(value)
    return (2, 0, "") if s == ALL else (0, int(s), "") if s.isdigit() else (1, 0, s)


def sort_cells(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in reading order: variant, quant fp32→int8, kind, holdout, seed."""
    rank = {"quant": {q: i for i, q in enumerate(QUANTS)},
            "model_kind": {k: i for i, k in enumerate(KINDS)}}

    def key(col: pd.Series) -> pd.Series:
        if col.name in rank:
            return col.map(lambda v: (rank[col.name].get(v, len(rank[col.name])), str(v)))
        return col.map(natural) if col.name in ("holdout", "seed") else col.astype(str)

    cols = [c for c in GROUP + ["holdout", "seed"] if c in df.columns]
    return df.sort_values(cols, key=key, kind="stable").reset_index(drop=True) if cols else df
