"""Figures from outside the sweep set beside its own: idle-machine latencies in place of those
timed inside the busy sweep, and another work's published figures beside each arm."""

from __future__ import annotations

import numpy as np
import pandas as pd

IDLE_KEYS = ["variant", "quant", "model_kind"]  # what an idle-machine latency figure is of


def with_idle_latency(summary: pd.DataFrame, idle: pd.DataFrame | None) -> pd.DataFrame:
    """Latencies timed on an idle machine (``benchmarks/bench_latency.py``: variant, quant,
    model_kind, latency_ms_p50/p90) replace the ones the trials timed inside the busy sweep;
    ``latency_source`` says which one each arm carries."""
    source = np.where(summary.latency_ms_p50.notna(), "sweep", "")
    if idle is None or idle.empty:
        return summary.assign(latency_source=source)
    m = summary[IDLE_KEYS].merge(idle[IDLE_KEYS + ["latency_ms_p50", "latency_ms_p90"]],
                                 on=IDLE_KEYS, how="left")
    has = m.latency_ms_p50.notna().to_numpy()
    return summary.assign(
        latency_ms_p50=np.where(has, m.latency_ms_p50, summary.latency_ms_p50),
        latency_ms_p90=np.where(has, m.latency_ms_p90, summary.latency_ms_p90),
        latency_source=np.where(has, "idle", source))
PUBLISHED_KEYS = ["variant", "quant", "top1_low", "top1_high", "size_mb", "speedup_low",
                  "speedup_high"]  # a published figure; variant "" is every variant's


def _against(lo: float, hi: float, low: float, high: float, full: bool) -> str:
    """Where a signer-level interval lies against a published range."""
    if not full:
        return "partial"
    return "below" if hi < low else "above" if lo > high else "overlaps"


def beside_published(arms: pd.DataFrame, figures: pd.DataFrame) -> pd.DataFrame:
    """Each SignBART arm beside the published figure for its quant mode (and variant, when the
    figure names one; ``figure`` is its index in the file). Speed-up is the arm's latency over its variant's FP32 one, as published
    speed-ups are; ``against`` places the arm's interval over signers below, overlapping or
    above the published top-1 range, so a reader sees whether the claim holds here."""
    mine = arms[(arms.model_kind == "signbart") & (arms.augment_setting == "")]
    fp32 = mine[mine.quant == "fp32"].set_index("variant").latency_ms_p50
    out = []
    for i, f in enumerate(figures.itertuples(index=False)):
        hit = mine[(mine.quant == f.quant) & ((mine.variant == f.variant) if f.variant else True)]
        for a in hit.itertuples(index=False):
            out.append({
                "figure": i, "model": a.model, "variant": a.variant, "quant": a.quant,
                "coverage": a.coverage, "mean_top1": a.mean_top1, "mean_ci_low": a.mean_ci_low,
                "mean_ci_high": a.mean_ci_high, "worst_signer": a.worst_signer,
                "worst_top1": a.worst_top1,
                "published_top1_low": f.top1_low, "published_top1_high": f.top1_high,
                "against": _against(a.mean_ci_low, a.mean_ci_high, f.top1_low, f.top1_high,
                                    a.full_coverage),
                "size_mb": a.size_mb, "published_size_mb": f.size_mb,
                "speedup": fp32.get(a.variant, np.nan) / a.latency_ms_p50,
                "latency_source": a.latency_source,
                "published_speedup_low": f.speedup_low, "published_speedup_high": f.speedup_high})
    return pd.DataFrame(out, columns=[
        "figure", "model", "variant", "quant", "coverage", "mean_top1", "mean_ci_low", "mean_ci_high",
        "worst_signer", "worst_top1", "published_top1_low", "published_top1_high", "against",
        "size_mb", "published_size_mb", "speedup", "latency_source", "published_speedup_low",
        "published_speedup_high"])
