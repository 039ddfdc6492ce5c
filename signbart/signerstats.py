"""Per-signer statistics: the signer is the unit of a leave-one-signer-out study.

Every mean and paired difference gets a t-interval over the signers' means (each signer's
top-1 averaged over seeds first), and a difference is distinguishable when that interval
excludes 0, which is exactly the paired t-test's p < ALPHA: the interval and the test never
disagree. A single signer's cell keeps its Wilson interval on that signer's clips.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from signbart.cells import GRID_ROWS, GROUP, natural, sort_cells

CONFIDENCE = 0.95

ALPHA = 1 - CONFIDENCE
CI_METHOD = (f"Student t-interval ({CONFIDENCE:.0%}) over the hold-out signers' means (each "
             "signer's top-1 averaged over seeds first), df = signers - 1")


def t_interval(values) -> tuple[float, float, float]:
    """(mean, low, high): the CONFIDENCE Student t-interval of the mean; NaN bounds for one
    value, the value itself when all are equal."""
    v = np.asarray(values, float)
    v = v[~np.isnan(v)]
    if not len(v):
        return np.nan, np.nan, np.nan
    m = float(v.mean())
    if len(v) < 2:
        return m, np.nan, np.nan
    half = float(stats.t.ppf(1 - ALPHA / 2, len(v) - 1) * v.std(ddof=1) / np.sqrt(len(v)))
    return m, m - half, m + half


def wilson(correct: float, clips: float) -> tuple[float, float]:
    """Wilson score interval at CONFIDENCE (scipy); NaN where the clip count is unknown."""
    if pd.isna(clips) or clips <= 0:
        return np.nan, np.nan
    ci = stats.binomtest(int(correct), int(clips)).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def paired_test(diff) -> dict:
    """Mean of per-signer differences, its t-interval and the matching t-test p, and
    Wilcoxon's p as a second opinion that never decides."""
    d = np.asarray(diff, float)
    mean, lo, hi = t_interval(d)
    out = {"n_signers": len(d), "delta_mean": mean, "ci_low": lo, "ci_high": hi,
           "t_p": np.nan, "wilcoxon_p": np.nan}
    if len(d) > 1:
        out["t_p"] = (float(stats.ttest_1samp(d, 0.0).pvalue) if np.ptp(d) > 1e-12
                      else float(d[0] == 0))  # equal differences: the interval is the point
    if np.any(d != 0):
        out["wilcoxon_p"] = float(stats.wilcoxon(d).pvalue)  # zero differences dropped
    out["distinguishable"] = bool(lo > 0 or hi < 0)
    return out


def _clips(rows: pd.DataFrame) -> pd.Series:
    """Test clips behind each row's top-1: ``n_test``, else its confusion matrix's total."""
    total = rows.confusion.map(lambda c: float(sum(map(sum, c))) if c is not None else np.nan)
    return rows.n_test.astype(float).fillna(total)


def _all_or_nan(s: pd.Series) -> float:
    return s.sum() if s.notna().all() else np.nan


def per_signer(ok: pd.DataFrame) -> pd.DataFrame:
    """Per arm × hold-out: top-1 over seeds, its seeds and clips, and its Wilson interval on
    that signer's clips pooled over seeds."""
    d = ok.assign(clips=_clips(ok))
    d = d.assign(correct=(d.top1 * d.clips).round())
    per = d.groupby(GROUP + ["model", "holdout"], sort=False).agg(
        n_seeds=("seed", "nunique"), clips=("clips", _all_or_nan),
        correct=("correct", _all_or_nan), top1=("top1", "mean")).reset_index()
    ci = [wilson(k, n) for k, n in zip(per.correct, per.clips)]
    return sort_cells(per.assign(signer=per.holdout, ci_low=[c[0] for c in ci],
                              ci_high=[c[1] for c in ci]))


def signer_table(per: pd.DataFrame, arms: pd.DataFrame) -> pd.DataFrame:
    """The signer × arm grid, long: each arm's hold-outs, then "mean" and "worst".

    mean: the mean of the signer means with its t-interval over signers, left empty for a
    partial arm (it would be a mean over other signers); worst: the lowest signer, repeated
    with its own Wilson interval and named in ``signer``.
    """
    cols = GROUP + ["model", "holdout", "signer", "n_seeds", "clips", "correct", "top1",
                    "ci_low", "ci_high"]
    if per.empty:
        return pd.DataFrame(columns=cols)
    a = arms.set_index("model")
    g = per.groupby("model", sort=False)
    mean = g.agg(n_seeds=("n_seeds", "max"), clips=("clips", _all_or_nan),
                 correct=("correct", _all_or_nan)).reset_index()
    full = a.loc[mean.model, "full_coverage"].to_numpy(bool)
    mean = mean.assign(**{c: a.loc[mean.model, m].to_numpy(float) * np.where(full, 1, np.nan)
                          for c, m in (("top1", "mean_top1"), ("ci_low", "mean_ci_low"),
                                       ("ci_high", "mean_ci_high"))})
    mean = mean.assign(**{k: a.loc[mean.model, k].to_numpy() for k in GROUP})
    worst = per.loc[g.top1.idxmin()]
    out = pd.concat([per, mean.assign(holdout="mean", signer=""),
                     worst.assign(holdout="worst")], ignore_index=True)
    order = {m: i for i, m in enumerate(arms.model)}
    place = {h: i for i, h in enumerate(GRID_ROWS, 1)}
    out = out.sort_values(["model", "holdout"], kind="stable", key=lambda c: c.map(
        order) if c.name == "model" else c.map(lambda h: (place.get(h, 0), natural(h))))
    return out[cols].reset_index(drop=True)


def signer_grid(signers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The long signer table as wide frames (rows: hold-outs, mean, worst; columns: arms):
    ``top1``, ``ci_low``, ``ci_high`` and ``signer`` (who the worst row is)."""
    order = [h for h in dict.fromkeys(signers.holdout) if h not in GRID_ROWS] + list(GRID_ROWS)
    models = list(dict.fromkeys(signers.model))
    wide = signers.pivot(index="holdout", columns="model")
    return {c: wide[c].reindex(index=order, columns=models)
            for c in ("top1", "ci_low", "ci_high", "signer")}


def worst_cells(g: dict[str, pd.DataFrame]) -> list[tuple[int, int]]:
    """(row, column) in the grid of each arm's worst hold-out."""
    order = list(g["top1"].index)
    return [(order.index(w), j) for j, w in enumerate(g["signer"].loc["worst"])
            if isinstance(w, str) and w in order]


def _by_signer(ok: pd.DataFrame, a: pd.Series, b: pd.Series) -> pd.Series:
    """Per signer: arm ``a`` minus arm ``b``, matched on hold-out and seed, then averaged over
    the signer's seeds."""
    def top1(arm):
        m = ok[ok.model == arm.model]
        return m.groupby(["holdout", "seed"]).top1.mean()

    d = (top1(a) - top1(b)).dropna()
    return d.groupby(level="holdout").mean()


def _pairs(arms: pd.DataFrame, verdict_model: str) -> list[tuple[pd.Series, pd.Series, str]]:
    """Every quant vs its fp32, every kind vs the baseline at the same quant, and the verdict
    model vs its variant's fp32 baseline."""
    by = {tuple(r[k] for k in GROUP): r for _, r in arms.iterrows()}
    out = []
    for key, a in by.items():
        variant, quant, kind, setting = key
        fp32 = by.get((variant, "fp32", kind, setting))
        base = by.get((variant, quant, "baseline", setting))
        if quant != "fp32" and fp32 is not None:
            out.append((a, fp32, "quant vs fp32"))
        if kind != "baseline" and base is not None:
            out.append((a, base, "kind vs baseline"))
        base = by.get((variant, "fp32", "baseline", setting))
        if a.model == verdict_model and quant != "fp32" and base is not None:
            out.append((a, base, "verdict vs baseline"))
    return out


def paired_tests(ok: pd.DataFrame, arms: pd.DataFrame, verdict_model: str) -> pd.DataFrame:
    cols = GROUP + ["model", "versus", "comparison", "n_signers", "top1", "versus_top1",
                    "delta_mean", "ci_low", "ci_high", "t_p", "wilcoxon_p", "distinguishable"]
    out = []
    for a, b, what in _pairs(arms, verdict_model):
        d = _by_signer(ok, a, b)
        if not len(d):
            continue
        out.append({**{k: a[k] for k in GROUP}, "model": a.model, "versus": b.model,
                    "comparison": what, "top1": a.mean_top1, "versus_top1": b.mean_top1,
                    **paired_test(d.to_numpy())})
    return pd.DataFrame(out, columns=cols)
