"""LOSO reports from a sweep's Parquet result rows: ``load -> summarize -> plot_*``; the
Markdown and HTML pages are ``signbart.render``'s.

Only result rows are read, never logs, so a report of a running sweep shows what has finished.
``summarize`` does every computation; the plot and render functions only draw and format what
it returns. The first question of a leave-one-signer-out study is how each signer fares under
each model, so the signer × model grid (top-1 over seeds with a 95 % Wilson interval on the
pooled clips) comes first; paired comparisons carry a bootstrap interval and a Wilcoxon test.
Accuracy is also shown as mean ± std over all holdout × seed cells (seed and signer noise mixed)
and over the per-holdout means (how much the held-out signer matters). Failed, missing and
duplicate cells are listed, never averaged as zero or dropped silently.
"""

from __future__ import annotations

import dataclasses
import functools
import io
import itertools
import json
import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import ScalarFormatter
from scipy import stats

from signbart.config import QUANT_MODES
from signbart.errors import UserError
from signbart.results import CELL_KEYS, read_rows
from signbart.storage import filesystem, write_bytes, write_text

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "html")
QUANTS = QUANT_MODES
KINDS = ("signbart", "baseline")
METRICS = ("top1", "top5", "macro_f1")
COSTS = ("model_bytes", "params", "flops", "latency_ms_p50")
# One report line per model setting. augment_setting is the row's ablation arm (the sweep
# writes it), "" outside an ablation, so ablation settings are never pooled.
GROUP = ["variant", "quant", "model_kind", "augment_setting"]
ALL = "all"  # the holdout value of rows pooled over all holdouts
GRID_ROWS = ("mean", "worst")  # the signer grid's rows under the hold-outs
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE         # a paired difference with p below this (and a CI excluding 0)
BOOTSTRAP_RESAMPLES = 9999     # counts as distinguishable from zero
BOOTSTRAP_SEED = 0             # same rows -> same intervals
RECOMMEND_MEAN, RECOMMEND_WORST = 0.01, 0.02  # tolerances of the variant recommendation


# ---------------------------------------------------------------------------------- load

def _result_files(inp: str) -> list[str]:
    """Parquet files of one input: a file, a ``results/`` folder, a sweep or a storage dir."""
    fs, root = filesystem(inp)
    info = fs.get_file_info(root)
    if info.type == pafs.FileType.NotFound:
        raise UserError(f"{inp}: no such file or directory")
    if info.type == pafs.FileType.File:
        return [inp]

    def listing(d: str) -> list[pafs.FileInfo]:
        return fs.get_file_info(pafs.FileSelector(d, allow_not_found=True))

    def parquet_in(d: str) -> list[str]:
        return sorted(i.path for i in listing(d) if i.type == pafs.FileType.File
                      and i.base_name.endswith(".parquet") and not i.base_name.startswith("."))

    found = (parquet_in(f"{root}/results") or parquet_in(root)
             or [p for d in sorted(i.path for i in listing(root)
                                   if i.type == pafs.FileType.Directory)
                 for p in parquet_in(f"{d}/results")])
    if not found:
        raise UserError(f"{inp}: no result files (*.parquet in results/, */results/ or the folder)")
    scheme = inp.split("://", 1)[0] + "://" if "://" in inp else ""
    return [scheme + p for p in found]


def load(inputs: list[str]) -> pd.DataFrame:
    """Every result row under ``inputs``, with the file it came from in ``source_file``."""
    if not inputs:
        raise UserError("report: give at least one sweep directory, results/ folder or file")
    tables = []
    for f in [f for inp in inputs for f in _result_files(inp)]:
        try:
            t = read_rows([f])
        except (OSError, pa.ArrowException) as e:
            raise UserError(f"{f}: not a readable result file ({e})") from None
        tables.append(t.append_column("source_file", pa.array([f] * len(t), pa.string())))
    df = pa.concat_tables(tables).to_pandas()
    if df.empty:
        raise UserError(f"{', '.join(inputs)}: the result files hold no rows")
    log.info("report: %d rows from %d files", len(df), len(tables))
    return df


# ----------------------------------------------------------------------------- summarize

@dataclasses.dataclass
class Summary:
    """Everything a report shows. Each frame is also written as ``<name>.csv``."""

    rows: pd.DataFrame         # one row per cell (newest duplicate kept), + augment_setting, ok
    summary: pd.DataFrame      # per GROUP: metrics, signer-level metrics, delta vs fp32, costs
    per_holdout: pd.DataFrame  # per GROUP × holdout: mean ± std over seeds
    per_class: pd.DataFrame    # per GROUP × class: accuracy mean ± std over cells
    confusion: pd.DataFrame    # per GROUP × holdout (ALL = summed): counts and row shares
    failures: pd.DataFrame     # failed cells with their error
    missing: pd.DataFrame      # cells of the observed grid with no row yet
    duplicates: pd.DataFrame   # every row of a cell written more than once; ``kept`` marks one
    baseline: pd.DataFrame     # SignBART vs baseline top-1, paired by variant/holdout/seed
    ablation: pd.DataFrame     # top-1 per augmentation setting × holdout, delta vs "none"
    search: pd.DataFrame       # per variant × holdout: what the nested search chose, and on whom
    inner: pd.DataFrame        # per trial: its inner signers, their score, the epochs it chose
    provenance: pd.DataFrame   # per sweep: files, rows, git SHAs, package versions, times
    signers: pd.DataFrame      # per model × (holdouts, mean, worst): top-1 with a Wilson 95 % CI
    paired: pd.DataFrame       # quant vs fp32, kind vs baseline: Δ, bootstrap CI, Wilcoxon p
    variants: pd.DataFrame     # per model when > 1 variant: mean/worst top-1, costs, dominance
    recommendation: str        # the variant to ship, by the rule in ``_recommend``; "" if none

    @property
    def sweeps(self) -> list[str]:
        return [str(x) for x in self.provenance.sweep]

    @property
    def synthetic_rows(self) -> int:
        """Rows whose dataset is marked synthetic (dataset.json), as the trial recorded it."""
        return int(self.rows.synthetic.fillna(False).astype(bool).sum())

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        """The tables written as CSV; the optional ones only when the input has them."""
        out = {"signers": self.signers, "summary": self.summary,
               "per_holdout": self.per_holdout, "per_class": self.per_class,
               "failures": self.failures, "missing": self.missing,
               "duplicates": self.duplicates, "provenance": self.provenance}
        out.update({k: v for k, v in (("paired", self.paired), ("baseline", self.baseline),
                                      ("ablation", self.ablation), ("search", self.search),
                                      ("inner", self.inner),
                                      ("variants", self.variants)) if not v.empty})
        return out


def _natural(value) -> tuple:
    """Sort key putting signer "2" before "10" and ALL last."""
    s = str(value)
    return (2, 0, "") if s == ALL else (0, int(s), "") if s.isdigit() else (1, 0, s)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in reading order: variant, quant fp32→int8, signbart before baseline, holdout."""
    rank = {"quant": {q: i for i, q in enumerate(QUANTS)},
            "model_kind": {k: i for i, k in enumerate(KINDS)}}

    def key(col: pd.Series) -> pd.Series:
        if col.name in rank:
            return col.map(lambda v: (rank[col.name].get(v, len(rank[col.name])), str(v)))
        return col.map(_natural) if col.name in ("holdout", "seed") else col.astype(str)

    cols = [c for c in GROUP + ["holdout", "seed"] if c in df.columns]
    return df.sort_values(cols, key=key, kind="stable").reset_index(drop=True) if cols else df


def _dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per cell, the newest by created_at; every row of a cell seen more than once)."""
    keys = list(CELL_KEYS) + ["augment_setting"]  # an ablation's arms are cells of their own
    newest_last = df.sort_values("created_at", kind="stable", na_position="first")
    kept = newest_last.drop_duplicates(keys, keep="last").sort_index()
    dup = newest_last[newest_last.duplicated(keys, keep=False)]
    dup = dup.assign(kept=dup.index.isin(kept.index))
    cols = keys + ["trial_id", "status", "top1", "created_at", "kept", "source_file"]
    return kept.reset_index(drop=True), _sorted(dup[cols])


def _failures(rows: pd.DataFrame) -> pd.DataFrame:
    bad = rows[~rows.ok]
    error = bad.error.where(bad.status != "ok", "status ok but no top-1 recorded")
    cols = list(CELL_KEYS) + ["augment_setting", "trial_id", "status"]
    return _sorted(bad[cols].assign(error=error.fillna("")))


def _missing(rows: pd.DataFrame) -> pd.DataFrame:
    """Cells of each sweep's grid (its holdouts × seeds × a kind's variants × quants) not run."""
    out = []
    for sweep, s in rows.groupby("sweep", dropna=False):
        for kind, k in s.groupby("model_kind", dropna=False):
            present = set(zip(k.holdout, k.seed, k.variant, k.quant))
            grid = itertools.product(s.holdout.unique(), s.seed.unique(),
                                     k.variant.unique(), k.quant.unique())
            out += [(sweep, *cell, kind) for cell in grid if cell not in present]
    return _sorted(pd.DataFrame(out, columns=list(CELL_KEYS)))


def _mean_std(df: pd.DataFrame, keys: list[str], cols, infix: str = "") -> pd.DataFrame:
    """``<col><infix>_mean`` / ``_std`` (sample std, ddof=1: NaN for one value) per ``keys``."""
    out = df.groupby(keys)[list(cols)].agg(["mean", "std"])
    out.columns = [f"{c}{infix}_{s}" for c, s in out.columns]
    return out


def _counts(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = rows.groupby(keys).agg(n_cells=("ok", "size"), n_ok=("ok", "sum"))
    return out.assign(n_failed=out.n_cells - out.n_ok)


def _paired(a: pd.DataFrame, b: pd.DataFrame, on: list[str], by: list[str]) -> pd.DataFrame:
    """Top-1 of ``a`` minus ``b`` matched on ``on`` (repeats of a key are averaged first)."""
    ma = a.groupby(by + on).top1.mean().rename("a").reset_index()
    mb = b.groupby(on).top1.mean().rename("b").reset_index()
    return ma.merge(mb, on=on).assign(diff=lambda d: d.a - d.b)


def _series(df: pd.DataFrame) -> pd.Series:
    """Legend label of a GROUP row: quant, plus the kind and setting when they tell rows apart."""
    kind = df.model_kind.where(df.model_kind != "signbart", "").fillna("")
    setting = df.augment_setting.map(lambda s: f"[{s}]" if s else "")
    return (df.quant.fillna("?") + " " + kind + " " + setting).str.split().str.join(" ")


def _models(df: pd.DataFrame, several: bool) -> pd.Series:
    """A GROUP row's name in the grid and legends: the series, after the variant when the
    report has several."""
    return (df.variant.astype(str) + " " + _series(df)) if several else _series(df)


def _summary(rows: pd.DataFrame, ok: pd.DataFrame, several: bool) -> pd.DataFrame:
    holdout_means = ok.groupby(GROUP + ["holdout"])[list(METRICS)].mean().reset_index()
    signers = _mean_std(holdout_means, GROUP, METRICS, "_holdout").join(
        holdout_means.groupby(GROUP).size().rename("n_holdouts"))
    pairs = _paired(ok[ok.quant != "fp32"], ok[ok.quant == "fp32"],
                    on=["variant", "model_kind", "augment_setting", "holdout", "seed"],
                    by=["quant"])
    delta = pairs.groupby(GROUP)["diff"].agg(
        top1_delta_vs_fp32_mean="mean", top1_delta_vs_fp32_std="std", n_pairs="size")
    out = _counts(rows, GROUP).join([_mean_std(ok, GROUP, METRICS), signers, delta,
                                     ok.groupby(GROUP)[list(COSTS)].mean()]).reset_index()
    out = out.astype({"n_pairs": "Int64"})  # NaN where nothing pairs (fp32 itself)
    # the baseline has no .tflite: its size is its float32 weights, flagged in size_source
    tflite = out.model_bytes.notna()
    size = out.model_bytes.where(tflite, out.params * 4) / 1e6
    return _sorted(out.assign(model_mb=out.model_bytes / 1e6, series=_series(out),
                              model=_models(out, several), size_mb=size,
                              size_source=np.where(tflite, "tflite",
                                                   np.where(size.notna(), "float32 weights", ""))))


def _per_holdout(rows: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    keys = GROUP + ["holdout"]
    return _sorted(_counts(rows, keys).join(_mean_std(ok, keys, METRICS)).reset_index())


def _glosses(rows: pd.DataFrame) -> dict[str, str]:
    """Class id -> human name, from any row that gives names for its labels."""
    out: dict[str, str] = {}
    for labels, glosses in zip(rows.labels, rows.glosses):
        if labels is not None and glosses is not None and len(glosses) == len(labels):
            for lab, g in zip(labels, glosses):
                if g:
                    out.setdefault(lab, g)
    return out


def _class_order(labels: pd.Series) -> list[str]:
    return list(dict.fromkeys(lab for labs in labels.dropna() for lab in labs))


def _per_class(ok: pd.DataFrame, gloss: dict[str, str]) -> pd.DataFrame:
    long = [(*key, lab, acc)
            for *key, labs, accs in ok[GROUP + ["labels", "per_class_acc"]].itertuples(index=False)
            if labs is not None and accs is not None and len(labs) == len(accs)
            for lab, acc in zip(labs, accs)]
    df = pd.DataFrame(long, columns=GROUP + ["class_id", "acc"])
    out = df.groupby(GROUP + ["class_id"]).acc.agg(acc_mean="mean", acc_std="std",
                                                   n="count").reset_index()
    rank = {c: i for i, c in enumerate(_class_order(ok.labels))}
    out = out.assign(gloss=out.class_id.map(gloss).fillna(""), _r=out.class_id.map(rank))
    out = _sorted(out.sort_values("_r", kind="stable")).drop(columns="_r")
    return out[GROUP + ["class_id", "gloss", "n", "acc_mean", "acc_std"]]


def _row_share(m: np.ndarray) -> np.ndarray:
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros(m.shape), where=totals > 0)


def _confusion(ok: pd.DataFrame, gloss: dict[str, str]) -> pd.DataFrame:
    """Confusion counts per GROUP, summed over seeds per holdout and over everything (ALL).

    Rows may list classes in different orders; matrices are added on the union of class ids.
    """
    out = []
    for key, g in ok.groupby(GROUP, sort=False):
        labels = _class_order(g.labels)
        pos = {lab: i for i, lab in enumerate(labels)}
        per: dict[str, np.ndarray] = {}
        seeds: dict[str, set] = {}
        for holdout, labs, conf, trial, seed in zip(g.holdout, g.labels, g.confusion, g.trial_id,
                                                    g.seed):
            if labs is None or conf is None:
                continue
            m = np.array([list(r) for r in conf], dtype=np.int64)
            if m.shape != (len(labs), len(labs)):
                log.warning("report: trial %s: confusion %s does not match %d labels; skipped",
                            trial, m.shape, len(labs))
                continue
            acc = per.setdefault(holdout, np.zeros((len(labels),) * 2, np.int64))
            idx = [pos[lab] for lab in labs]
            acc[np.ix_(idx, idx)] += m
            seeds.setdefault(holdout, set()).add(seed)
        names = [gloss.get(lab) or lab for lab in labels]
        pooled = [(ALL, sum(per.values()), set().union(*seeds.values()))] if per else []
        for holdout, m, s in [(h, m, seeds[h]) for h, m in sorted(
                per.items(), key=lambda kv: _natural(kv[0]))] + pooled:
            out.append({**dict(zip(GROUP, key)), "holdout": holdout, "labels": labels,
                        "names": names, "counts": m, "share": _row_share(m),
                        "n_clips": int(m.sum()), "n_seeds": len(s),
                        "n_holdouts": len(per) if holdout == ALL else 1})
    return _sorted(pd.DataFrame(out, columns=GROUP + [
        "holdout", "labels", "names", "counts", "share", "n_clips", "n_seeds", "n_holdouts"]))


def _with_pooled(stats_by_holdout: pd.DataFrame, stats_all: pd.DataFrame) -> pd.DataFrame:
    """Per-holdout rows followed by the pooled row (holdout ALL) of each group."""
    return _sorted(pd.concat([stats_by_holdout.reset_index(),
                              stats_all.reset_index().assign(holdout=ALL)], ignore_index=True))


def _baseline(ok: pd.DataFrame) -> pd.DataFrame:
    """SignBART minus baseline top-1, paired by (variant, quant, holdout, seed)."""
    sb, bl = ok[ok.model_kind == "signbart"], ok[ok.model_kind == "baseline"]
    if sb.empty or bl.empty:
        return pd.DataFrame()
    pairs = _paired(sb, bl, on=["variant", "quant", "holdout", "seed"], by=["augment_setting"])
    keys = ["variant", "quant", "augment_setting"]

    def stats(d):
        return d.agg(n_pairs=("diff", "size"), signbart_top1=("a", "mean"),
                     baseline_top1=("b", "mean"), delta_mean=("diff", "mean"),
                     delta_std=("diff", "std"))

    return _with_pooled(stats(pairs.groupby(keys + ["holdout"])), stats(pairs.groupby(keys)))


def _ablation(ok: pd.DataFrame) -> pd.DataFrame:
    """Top-1 per augmentation setting where one variant/quant/kind was run with several."""
    keys = ["variant", "quant", "model_kind"]
    n_settings = ok.groupby(keys).augment_setting.transform("nunique")
    abl = ok[n_settings > 1]
    if abl.empty:
        return pd.DataFrame()
    keys += ["augment_setting"]
    by_h = abl.groupby(keys + ["holdout"]).top1.agg(n="size", top1_mean="mean", top1_std="std")
    pooled = abl.groupby(keys).top1.agg(n="size", top1_mean="mean", top1_std="std")
    none = abl[abl.augment_setting == "none"]
    pairs = _paired(abl[abl.augment_setting != "none"], none,
                    on=["variant", "quant", "model_kind", "holdout", "seed"],
                    by=["augment_setting"])

    def delta(d):
        return d["diff"].agg(delta_vs_none_mean="mean", delta_vs_none_std="std", n_pairs="size")

    return _with_pooled(by_h.join(delta(pairs.groupby(keys + ["holdout"]))),
                        pooled.join(delta(pairs.groupby(keys)))).astype({"n_pairs": "Int64"})


def _search(rows: pd.DataFrame) -> pd.DataFrame:
    """One line per (variant, holdout) whose trials ran with a nested-search choice."""
    picked = rows[rows.search.notna() & (rows.search != "")] if "search" in rows else rows[:0]
    if picked.empty:
        return pd.DataFrame()
    out = []
    for (variant, holdout), d in picked.groupby(["variant", "holdout"], sort=False):
        choice = json.loads(d.search.iloc[0])
        out.append({"variant": variant, "holdout": holdout,
                    "chosen": ", ".join(f"{k}={v:g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in sorted(choice["params"].items())),
                    "inner_val_top1": choice.get("val_accuracy"),
                    "inner_val_signers": ", ".join(choice.get("val_signers") or [])})
    return _sorted(pd.DataFrame(out))


def _inner(ok: pd.DataFrame) -> pd.DataFrame:
    """One line per trial that had inner signers: who judged, how well its inner run did, the
    epochs it kept, the epochs the shipped model trained, and the ensemble share it fitted."""
    if "inner_val_accuracy" not in ok:
        return pd.DataFrame()
    sb = ok[(ok.model_kind == "signbart") & ok.inner_val_accuracy.notna()]
    if sb.empty:
        return pd.DataFrame()
    keys = ["sweep", "variant", "holdout", "seed"]
    out = sb.drop_duplicates(keys)[keys + ["val_signers", "inner_val_accuracy", "best_epoch",
                                          "epochs_run", "n_train"]].assign(
        val_signers=lambda d: d.val_signers.map(lambda v: ", ".join(v)))
    ens = ok[ok.model_kind == "ensemble"].drop_duplicates(keys)[keys + ["ensemble_weight"]]
    return _sorted(out.merge(ens, on=keys, how="left").rename(
        columns={"best_epoch": "inner_best_epoch", "epochs_run": "shipped_epochs",
                 "n_train": "shipped_n_train"}))


def _clips(rows: pd.DataFrame) -> pd.Series:
    """Test clips behind each row's top-1: ``n_test``, else its confusion matrix's total."""
    total = rows.confusion.map(lambda c: float(sum(map(sum, c))) if c is not None else np.nan)
    return rows.n_test.astype(float).fillna(total)


def _wilson(correct: float, clips: float) -> tuple[float, float]:
    """Wilson score interval at CONFIDENCE (scipy); NaN where the clip count is unknown."""
    if pd.isna(clips) or clips <= 0:
        return np.nan, np.nan
    ci = stats.binomtest(int(correct), int(clips)).proportion_ci(CONFIDENCE, method="wilson")
    return float(ci.low), float(ci.high)


def _all_or_nan(s: pd.Series) -> float:
    return s.sum() if s.notna().all() else np.nan


def _signers(ok: pd.DataFrame) -> pd.DataFrame:
    """The signer × model grid, long: each model's hold-outs, then "mean" and "worst".

    top1 is the mean over seeds (for "mean": over the hold-outs' values); the interval is
    Wilson's on the clips pooled over seeds (and hold-outs for "mean"), so it treats every
    seed's pass over a clip as a trial. "worst" repeats the lowest hold-out, named in ``signer``.
    """
    cols = GROUP + ["model", "holdout", "signer", "n_seeds", "clips", "correct", "top1",
                    "ci_low", "ci_high"]
    if ok.empty:
        return pd.DataFrame(columns=cols)
    d = ok.assign(clips=_clips(ok))
    d = d.assign(correct=(d.top1 * d.clips).round())
    keys = GROUP + ["model"]
    per = _sorted(d.groupby(keys + ["holdout"], sort=False).agg(
        n_seeds=("seed", "nunique"), clips=("clips", _all_or_nan),
        correct=("correct", _all_or_nan), top1=("top1", "mean")).reset_index())
    per = per.assign(signer=per.holdout)
    g = per.groupby(keys, sort=False)
    mean = g.agg(n_seeds=("n_seeds", "max"), clips=("clips", _all_or_nan),
                 correct=("correct", _all_or_nan), top1=("top1", "mean")).reset_index()
    worst = per.loc[g.top1.idxmin()]
    out = pd.concat([per, mean.assign(holdout="mean", signer=""),
                     worst.assign(holdout="worst")], ignore_index=True)
    ci = [_wilson(k, n) for k, n in zip(out.correct, out.clips)]
    out = out.assign(ci_low=[c[0] for c in ci], ci_high=[c[1] for c in ci])
    order = {m: i for i, m in enumerate(per.model.drop_duplicates())}
    place = {h: i for i, h in enumerate(GRID_ROWS, 1)}
    out = out.sort_values(["model", "holdout"], kind="stable", key=lambda c: c.map(
        order) if c.name == "model" else c.map(lambda h: (place.get(h, 0), _natural(h))))
    return out[cols].reset_index(drop=True)


def _test(diff: np.ndarray) -> dict:
    """Mean paired difference, its percentile-bootstrap CI and the Wilcoxon signed-rank p."""
    out = {"n_pairs": len(diff), "delta_mean": diff.mean(), "ci_low": np.nan,
           "ci_high": np.nan, "wilcoxon_p": np.nan}
    if len(diff) > 1 and np.ptp(diff) > 0:
        ci = stats.bootstrap((diff,), np.mean, confidence_level=CONFIDENCE,
                             n_resamples=BOOTSTRAP_RESAMPLES, method="percentile",
                             rng=np.random.default_rng(BOOTSTRAP_SEED)).confidence_interval
        out.update(ci_low=ci.low, ci_high=ci.high)
    elif len(diff):
        out.update(ci_low=diff[0], ci_high=diff[0])  # every resample has the same mean
    if np.any(diff != 0):
        out["wilcoxon_p"] = float(stats.wilcoxon(diff).pvalue)  # zero differences dropped
    return out


def _paired_tests(ok: pd.DataFrame, several: bool) -> pd.DataFrame:
    """Every quant mode against fp32, every other model kind against the baseline.

    Paired by (variant, augment setting, holdout, seed) and, against fp32, model kind; against
    the baseline, quant (the baseline is fp32, so it pairs with the fp32 models). Distinguishable
    from zero: the CI excludes 0 and Wilcoxon's p < ALPHA.
    """
    on = ["variant", "augment_setting", "holdout", "seed"]
    quant = _paired(ok[ok.quant != "fp32"], ok[ok.quant == "fp32"], on=on + ["model_kind"],
                    by=["quant"])
    kind = _paired(ok[ok.model_kind != "baseline"], ok[ok.model_kind == "baseline"],
                   on=on + ["quant"], by=["model_kind"])
    tables = [t.assign(versus=_models(t.assign(**against), several), model=_models(t, several))
              for t, against in ((quant, {"quant": "fp32"}), (kind, {"model_kind": "baseline"}))
              if not t.empty]
    cols = GROUP + ["model", "versus", "n_pairs", "top1", "versus_top1", "delta_mean",
                    "ci_low", "ci_high", "wilcoxon_p", "distinguishable"]
    if not tables:
        return pd.DataFrame(columns=cols)
    pairs = pd.concat(tables, ignore_index=True)
    out = []
    for key, d in pairs.groupby(GROUP + ["model", "versus"], sort=False):
        out.append({**dict(zip(GROUP + ["model", "versus"], key)), "top1": d.a.mean(),
                    "versus_top1": d.b.mean(), **_test(d["diff"].to_numpy())})
    out = pd.DataFrame(out)
    excludes_zero = (out.ci_low > 0) | (out.ci_high < 0)
    return _sorted(out.assign(distinguishable=excludes_zero & (out.wilcoxon_p < ALPHA)))[cols]


@functools.cache
def _keypoints(config: str) -> float:
    """The model's input keypoints, from a row's experiment config (the variant's selection)."""
    from signbart.config import VariantConfig, from_dict
    from signbart.layouts import get_layout

    try:
        v = from_dict(VariantConfig, json.loads(config)["variant"], "row config.variant")
        return float(len(v.keys(get_layout(v.layout))))
    except (TypeError, KeyError, ValueError):
        return np.nan


def _dominated(top1: pd.Series, cost: pd.Series) -> pd.Series:
    """True where another point is at least as accurate and as cheap, and better in one."""
    t, c = top1.to_numpy(float), cost.to_numpy(float)
    known = ~(np.isnan(t) | np.isnan(c))
    out = [bool(known[i] and np.any(known & (t >= t[i]) & (c <= c[i])
                                    & ((t > t[i]) | (c < c[i]))))
           for i in range(len(t))]
    return pd.Series(out, index=top1.index)


def _variants(rows: pd.DataFrame, summary: pd.DataFrame, signers: pd.DataFrame) -> pd.DataFrame:
    """Per model when the rows span several variants: mean and worst-signer top-1 beside the
    costs, and whether another model beats it on accuracy and size (or latency)."""
    if rows.variant.nunique() < 2 or signers.empty:
        return pd.DataFrame()
    keys = GROUP + ["model"]
    grid = signers.set_index(keys + ["holdout"])
    mean, worst = grid.xs("mean", level="holdout"), grid.xs("worst", level="holdout")
    kp = rows.groupby(GROUP).config.first().map(lambda c: _keypoints(c) if c else np.nan)
    out = summary.set_index(keys)[["flops", "size_mb", "size_source", "latency_ms_p50"]].join(
        [kp.rename("keypoints").reindex(summary.set_index(GROUP).index).set_axis(
            summary.set_index(keys).index),
         mean[["top1", "ci_low", "ci_high"]].add_prefix("mean_"),
         worst[["signer", "top1"]].add_prefix("worst_")], how="inner").reset_index()
    ship = out.model_kind != "baseline"  # no .tflite: not a model to ship, not on the frontier
    for cost in ("size_mb", "latency_ms_p50"):
        flag = pd.Series(pd.NA, index=out.index, dtype="boolean")
        flag[ship] = _dominated(out.mean_top1[ship], out[cost][ship])
        out[f"dominated_{cost.split('_')[0]}"] = flag
    return _sorted(out)


def _recommend(variants: pd.DataFrame) -> str:
    """The smallest model (fewest keypoints, then bytes) whose mean top-1 is within
    RECOMMEND_MEAN of the best mean and whose worst signer is within RECOMMEND_WORST of the
    best worst signer. Baselines are not candidates."""
    v = variants[variants.model_kind != "baseline"] if not variants.empty else variants
    v = v[v.mean_top1.notna() & v.worst_top1.notna()] if not v.empty else v
    if v.empty:
        return ""
    best, best_worst = v.loc[v.mean_top1.idxmax()], v.loc[v.worst_top1.idxmax()]
    eps = 1e-9
    ok = v[(v.mean_top1 >= best.mean_top1 - RECOMMEND_MEAN - eps)
           & (v.worst_top1 >= best_worst.worst_top1 - RECOMMEND_WORST - eps)]
    pick = ok.sort_values(["keypoints", "size_mb", "latency_ms_p50"], na_position="last").iloc[0]

    def pct(x):
        return f"{100 * x:.1f} %"

    kp = "" if pd.isna(pick.keypoints) else f"{pick.keypoints:.0f} keypoints, "
    return (f"Recommendation: {pick.model} ({kp}{pick.size_mb:.2f} MB). It is the smallest "
            f"model whose mean top-1 ({pct(pick.mean_top1)}) is within "
            f"{100 * RECOMMEND_MEAN:g} point of the best ({pct(best.mean_top1)}, {best.model}) "
            f"and whose worst signer ({pick.worst_signer}: {pct(pick.worst_top1)}) is within "
            f"{100 * RECOMMEND_WORST:g} points of the best worst signer "
            f"({pct(best_worst.worst_top1)}, {best_worst.model}).")


def _provenance(raw: pd.DataFrame, rows: pd.DataFrame, missing: pd.DataFrame) -> pd.DataFrame:
    def joined(s: pd.Series) -> str:
        return ", ".join(sorted({str(v) for v in s.dropna()} - {""}))

    out = raw.groupby("sweep", dropna=False).agg(
        files=("source_file", "nunique"), rows_read=("source_file", "size"),
        git_sha=("git_sha", joined), package_version=("package_version", joined),
        first_row=("created_at", "min"), last_row=("created_at", "max"))
    cells = rows.groupby("sweep", dropna=False).agg(cells=("ok", "size"), ok=("ok", "sum"))
    out = out.join(cells.assign(failed=cells.cells - cells.ok)).join(
        missing.groupby("sweep").size().rename("missing"))
    return out.fillna({"missing": 0}).astype({"missing": int}).reset_index()


def summarize(df: pd.DataFrame) -> Summary:
    """All report tables from the rows ``load`` returned."""
    # rows from foreign or older files may lack keys: keep them visible instead of dropping them
    raw = df.fillna({"model_kind": "signbart", **{k: "?" for k in ("sweep", "holdout",
                                                                  "variant", "quant")}})
    raw = raw.assign(augment_setting=raw.ablation.fillna(""))
    rows, duplicates = _dedupe(raw)
    several = rows.variant.nunique() > 1
    rows = rows.assign(ok=(rows.status == "ok") & rows.top1.notna(),
                       model=_models(rows, several))
    ok = rows[rows.ok]
    gloss = _glosses(rows)
    missing = _missing(rows)
    signers = _signers(ok)
    mean_ci = signers[signers.holdout == "mean"][GROUP + ["ci_low", "ci_high"]]
    summary = _summary(rows, ok, several).merge(
        mean_ci.rename(columns={"ci_low": "top1_ci_low", "ci_high": "top1_ci_high"}),
        on=GROUP, how="left")
    variants = _variants(rows, summary, signers)
    s = Summary(rows=rows, summary=summary, per_holdout=_per_holdout(rows, ok),
                per_class=_per_class(ok, gloss), confusion=_confusion(ok, gloss),
                failures=_failures(rows), missing=missing, duplicates=duplicates,
                baseline=_baseline(ok), ablation=_ablation(ok), search=_search(rows),
                inner=_inner(ok),
                provenance=_provenance(raw, rows, missing), signers=signers,
                paired=_paired_tests(ok, several), variants=variants,
                recommendation=_recommend(variants))
    for what, table in (("failed", s.failures), ("missing", s.missing),
                        ("duplicate rows of", s.duplicates)):
        if len(table):
            log.warning("report: %d %s cells", len(table), what)
    return s


# ---------------------------------------------------------------------------------- plots

def _png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    FigureCanvasAgg(fig)
    fig.savefig(buf, format="png", bbox_inches="tight")
    return buf.getvalue()


def plot_confusion(counts: np.ndarray, share: np.ndarray, names: list[str], title: str) -> bytes:
    """Heatmap coloured by row share (so rare classes are as visible as common ones),
    annotated with raw counts; true classes are rows."""
    n = len(names)
    side = min(max(5.0, 0.45 * n + 2.5), 18.0)
    fig = Figure(figsize=(side + 1.2, side), dpi=100)
    ax = fig.subplots()
    sns.heatmap(share, annot=counts if n <= 40 else False, fmt="d", cmap="Blues", vmin=0, vmax=1,
                xticklabels=names, yticklabels=names, square=True, ax=ax,
                annot_kws={"fontsize": 9 if n <= 15 else 6},
                cbar_kws={"label": "share of the true class", "shrink": 0.7})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=90, labelsize=9 if n <= 40 else 5)
    ax.tick_params(axis="y", labelrotation=0, labelsize=9 if n <= 40 else 5)
    return _png(fig)


def _interval(d: pd.DataFrame) -> np.ndarray:
    """Error-bar lengths [2, n] of a summary's signer-mean top-1 to its CI (0 where unknown)."""
    v = d.top1_holdout_mean
    return np.nan_to_num(np.vstack([v - d.top1_ci_low, d.top1_ci_high - v])).clip(0)


def plot_signer_grid(top1: pd.DataFrame, text: pd.DataFrame, worst: list[tuple[int, int]],
                     title: str) -> bytes:
    """Heatmap of top-1 (%) per signer (rows) and model (columns), every cell annotated with
    its value and interval; each model's worst hold-out is outlined."""
    n_rows, n_cols = top1.shape
    fig = Figure(figsize=(min(max(5.5, 1.3 * n_cols + 2.5), 30), 0.55 * n_rows + 2.2), dpi=110)
    ax = fig.subplots()
    low = np.nanmin(top1.to_numpy(float)) if top1.notna().any().any() else 0.0
    sns.heatmap(top1, annot=text, fmt="", cmap="RdYlGn", vmin=max(0.0, 10 * np.floor(low / 10)),
                vmax=100, linewidths=0.5, linecolor="white", ax=ax,
                annot_kws={"fontsize": 7}, cbar_kws={"label": "top-1 (%)", "shrink": 0.8})
    for r, c in worst:
        ax.add_patch(Rectangle((c, r), 1, 1, fill=False, edgecolor="black", lw=2.5))
    ax.axhline(n_rows - len(GRID_ROWS), color="black", lw=1.5)
    ax.set(xlabel="model", ylabel="hold-out signer", title=title)
    ax.tick_params(axis="x", labelrotation=30 if n_cols > 4 else 0, labelsize=8)
    ax.tick_params(axis="y", labelrotation=0)
    return _png(fig)


def plot_signers(means: pd.DataFrame, seeds: pd.DataFrame) -> bytes:
    """Top-1 per hold-out signer: a marker per model (mean over seeds) and its seeds as faint
    points beside it. ``means``/``seeds`` have columns holdout, model, top1."""
    signers = list(dict.fromkeys(means.holdout))
    models = list(dict.fromkeys(means.model))
    colours = dict(zip(models, itertools.cycle(sns.color_palette("tab10"))))
    markers = dict(zip(models, itertools.cycle("osD^vP*Xhp<>")))
    fig = Figure(figsize=(max(6.5, 0.9 * len(signers) + 3.5), 4.6), dpi=120)
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        def x(h, i=i):
            return [signers.index(v) - 0.4 + width * (i + 0.5) for v in h]
        sd = seeds[seeds.model == m]
        ax.scatter(x(sd.holdout), sd.top1 * 100, s=12, color=colours[m], alpha=0.3, lw=0)
        md = means[means.model == m]
        ax.scatter(x(md.holdout), md.top1 * 100, s=42, color=colours[m], marker=markers[m],
                   edgecolor="black", lw=0.5, label=m, zorder=3)
    ax.set_xticks(range(len(signers)), signers, rotation=30 if len(signers) > 6 else 0)
    ax.set(xlabel="hold-out signer", ylabel="top-1 (%)", title="Top-1 per hold-out signer")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="model (mean over seeds;\nfaint dots: single seeds)", fontsize=8,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def plot_top1(summary: pd.DataFrame) -> bytes:
    """Mean top-1 over hold-outs with its 95 % Wilson interval, per variant and series."""
    variants = list(dict.fromkeys(summary.variant))
    series = list(dict.fromkeys(summary.series))
    fig = Figure(figsize=(max(6.0, 1.4 * len(variants) + 3), 4.5), dpi=120)
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    for i, (name, d) in enumerate(summary.groupby("series", sort=False)):
        x = [variants.index(v) - 0.4 + width * (i + 0.5) for v in d.variant]
        ax.errorbar(x, d.top1_holdout_mean * 100, yerr=_interval(d) * 100, fmt="o", capsize=4,
                    label=name)
    ax.set_xticks(range(len(variants)), variants, rotation=20 if len(variants) > 3 else 0)
    ax.set(ylabel="top-1 (%): mean over hold-outs, 95 % CI", xlabel="keypoint variant",
           title="Top-1 by variant and quantisation")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="quant [model kind]", bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


NUDGE = 0.12  # log-size step between series on the size chart, so markers do not overlap


def plot_size(summary: pd.DataFrame) -> bytes:
    """Top-1 against size, every model (colour = variant, marker = series); each series is
    nudged sideways by its own factor so that PTQ/QAT/INT8 of one variant do not overlap."""
    colours = dict(zip(dict.fromkeys(summary.variant),
                       itertools.cycle(sns.color_palette("tab10"))))
    series = list(dict.fromkeys(summary.series))
    markers = dict(zip(series, itertools.cycle("osD^vP*Xhp<>")))
    nudge = {s: np.exp(NUDGE * (i - (len(series) - 1) / 2)) for i, s in enumerate(series)}
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    ax = fig.subplots()
    bars = _interval(summary) * 100
    for i, r in enumerate(summary.itertuples()):
        hollow = r.size_source != "tflite"
        ax.errorbar(r.size_mb * nudge[r.series], r.top1_holdout_mean * 100, yerr=bars[:, i:i + 1],
                    fmt=markers[r.series], color=colours[r.variant], capsize=3, alpha=0.9,
                    mfc="white" if hollow else colours[r.variant], ms=7)
    handles = ([Line2D([], [], color=c, marker="o", ls="", label=v) for v, c in colours.items()]
               + [Line2D([], [], color="0.4", marker=m, ls="", label=s)
                  for s, m in markers.items()])
    spread = 100 * (max(nudge.values()) - 1)
    ax.set_xscale("log")
    ax.set(xlabel=f"size (MB, log): .tflite file; hollow = float32 weights (no .tflite)\n"
                  f"series nudged sideways by up to {spread:.0f} % so markers do not overlap",
           ylabel="top-1 (%): mean over hold-outs, 95 % CI", title="Accuracy vs model size")
    ax.grid(alpha=0.3, which="both")
    ax.legend(handles=handles, title="colour: variant\nmarker: quant [model kind]", fontsize=8,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def plot_frontier(variants: pd.DataFrame) -> bytes:
    """Mean top-1 against size and against latency, one point per model; points another model
    beats on both axes are hollow, the frontier is joined and its points named."""
    quants = list(dict.fromkeys(variants.quant))
    colours = dict(zip(quants, itertools.cycle(sns.color_palette("tab10"))))
    fig = Figure(figsize=(13, 5.2), dpi=110)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, cost, flag, label in zip(
            axes, ("size_mb", "latency_ms_p50"), ("dominated_size", "dominated_latency"),
            (".tflite size (MB, log)", "latency p50 (ms, single thread, log)")):
        d = variants[variants[cost].notna() & variants.mean_top1.notna()
                     & variants[flag].notna()]
        for r in d.itertuples():
            dominated = getattr(r, flag)
            ax.scatter(getattr(r, cost), r.mean_top1 * 100, s=40, color=colours[r.quant],
                       facecolor="white" if dominated else colours[r.quant], lw=1.2, zorder=3)
            if not dominated:
                ax.annotate(r.model, (getattr(r, cost), r.mean_top1 * 100), fontsize=6,
                            xytext=(4, 3), textcoords="offset points")
        front = d[~d[flag].astype(bool)].sort_values(cost)
        ax.plot(front[cost], front.mean_top1 * 100, color="0.3", lw=1, ls="--", zorder=2)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.set(xlabel=label)
        ax.grid(alpha=0.3, which="both")
    axes[0].set_ylabel("top-1 (%): mean over hold-outs")
    handles = ([Line2D([], [], color=c, marker="o", ls="", label=q) for q, c in colours.items()]
               + [Line2D([], [], color="0.3", marker="o", mfc="white", ls="",
                         label="dominated: another model is as accurate and cheaper"),
                  Line2D([], [], color="0.3", ls="--", label="frontier")])
    axes[1].legend(handles=handles, title="colour: quant", fontsize=8,
                   bbox_to_anchor=(1.01, 1), loc="upper left")
    fig.suptitle("Accuracy–cost frontier: one point per (variant, quant); baselines left out")
    return _png(fig)


@dataclasses.dataclass
class Picture:
    """One PNG of the report: ``path`` is relative to the output folder."""

    path: str
    title: str            # the figure's caption
    png: bytes
    group: str            # "grid" | "charts" | "frontier" | "confusion"
    detail: bool = False  # per-holdout pictures: collapsed in HTML, linked in Markdown
# --------------------------------------------------------------------------------- build

@dataclasses.dataclass
class ReportPaths:
    """What ``build_report`` wrote."""

    out_dir: str
    csv: dict[str, str] = dataclasses.field(default_factory=dict)  # table name -> path
    markdown: str | None = None
    html: str | None = None
    images: list[str] = dataclasses.field(default_factory=list)


def _slug(*parts) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)).strip("-") for p in parts if p)


def signer_grid(signers: pd.DataFrame) -> dict[str, pd.DataFrame]:
    """The long signer table as wide frames (rows: hold-outs, mean, worst; columns: models):
    ``top1``, ``ci_low``, ``ci_high`` and ``signer`` (who the worst row is)."""
    order = [h for h in dict.fromkeys(signers.holdout) if h not in GRID_ROWS] + list(GRID_ROWS)
    models = list(dict.fromkeys(signers.model))
    wide = signers.pivot(index="holdout", columns="model")
    return {c: wide[c].reindex(index=order, columns=models)
            for c in ("top1", "ci_low", "ci_high", "signer")}


def _grid_text(g: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Heatmap cell text in %: the value and its interval (the worst row: its signer first)."""
    text = pd.DataFrame("", index=g["top1"].index, columns=g["top1"].columns)
    for h, m in itertools.product(text.index, text.columns):
        v, lo, hi = (g[c].at[h, m] for c in ("top1", "ci_low", "ci_high"))
        if pd.notna(v):
            text.at[h, m] = "\n".join(
                ([str(g["signer"].at[h, m])] if h == "worst" else []) + [f"{100 * v:.1f}"]
                + ([] if pd.isna(lo) else [f"{100 * lo:.1f}–{100 * hi:.1f}"]))
    return text


def worst_cells(g: dict[str, pd.DataFrame]) -> list[tuple[int, int]]:
    """(row, column) in the grid of each model's worst hold-out."""
    order = list(g["top1"].index)
    return [(order.index(w), j) for j, w in enumerate(g["signer"].loc["worst"])
            if isinstance(w, str) and w in order]


def sweep_names(s: Summary) -> str:
    return ", ".join(s.sweeps) or "?"


def draw(s: Summary) -> list[Picture]:
    """Every PNG of the report: the signer grid, charts, the frontier when there are several
    variants, then confusion matrices summed and per holdout."""
    out = []
    if not s.signers.empty:
        g = signer_grid(s.signers)
        out.append(Picture("signers.png", "Top-1 (%) per hold-out signer and model, with its "
                           "95 % Wilson interval; outlined: each model's worst signer",
                           plot_signer_grid(g["top1"] * 100, _grid_text(g), worst_cells(g),
                                            f"{sweep_names(s)}: top-1 per signer"), "grid"))
        per = s.signers[~s.signers.holdout.isin(GRID_ROWS)]
        out.append(Picture("signers_dots.png", "Top-1 per hold-out signer: one marker per "
                           "model, faint dots are single seeds",
                           plot_signers(per, s.rows[s.rows.ok]), "charts"))
    sm = s.summary[s.summary.n_ok > 0]
    if not sm.empty:
        out.append(Picture("top1.png", "Top-1 by variant × quant: mean over hold-outs, 95 % "
                           "Wilson interval", plot_top1(sm), "charts"))
    sized = sm[sm.size_mb.notna()] if not sm.empty else sm
    if not sized.empty:
        out.append(Picture("accuracy_vs_size.png", "Top-1 vs model size, every model",
                           plot_size(sized), "charts"))
    if not s.variants.empty:
        out.append(Picture("frontier.png", "Accuracy–cost frontier: hollow points are "
                           "dominated", plot_frontier(s.variants), "frontier"))
    for c in s.confusion.itertuples():
        kind = "" if c.model_kind == "signbart" else c.model_kind
        name = _slug(c.variant, c.quant, kind, c.augment_setting)
        title = " ".join(filter(None, [c.variant, c.quant, kind,
                                       c.augment_setting and f"[{c.augment_setting}]"]))
        pooled = c.holdout == ALL
        title += " — all holdouts" if pooled else f" — holdout {c.holdout}"
        path = f"confusion_{name}.png" if pooled else f"confusion/{name}_{_slug(c.holdout)}.png"
        sums = (f"sums {c.n_clips} test predictions: {c.n_holdouts} hold-out"
                f"{'s' if c.n_holdouts > 1 else ''} × {c.n_seeds} seed"
                f"{'s' if c.n_seeds > 1 else ''}")
        out.append(Picture(path, f"{title}; {sums}",
                           plot_confusion(c.counts, c.share, c.names, title),
                           "confusion", detail=not pooled))
    return out


def build_report(inputs: list[str], out_dir: str, formats=FORMATS) -> ReportPaths:
    """Read the rows under ``inputs`` and write the report to ``out_dir``.

    csv: one file per ``Summary`` table; md: ``summary.md`` plus the PNGs it links (the HTML
    embeds its own copies, so an html-only report is the single file ``report.html``).
    """
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise UserError(f"report: unknown format {unknown[0]!r} (known: {', '.join(FORMATS)})")
    from signbart.render import render_html, render_markdown  # render imports this module

    s = summarize(load(inputs))
    out = Path(out_dir)
    paths = ReportPaths(out_dir=str(out))
    if "csv" in formats:
        for name, table in s.csv_tables().items():
            paths.csv[name] = str(out / f"{name}.csv")
            write_text(out / f"{name}.csv", table.to_csv(index=False))
    pictures = draw(s) if {"md", "html"} & set(formats) else []
    if "md" in formats:
        for p in pictures:
            write_bytes(out / p.path, p.png)
            paths.images.append(str(out / p.path))
        paths.markdown = str(out / "summary.md")
        write_text(out / "summary.md", render_markdown(s, pictures))
    if "html" in formats:
        paths.html = str(out / "report.html")
        write_text(out / "report.html", render_html(s, pictures))
    log.info("report: wrote %s", out)
    return paths
