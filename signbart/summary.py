"""Every number of a LOSO report, computed from the rows ``signbart.report`` accepted.

The signer is the unit of a leave-one-signer-out study, so every mean and paired difference
gets a t-interval over the signers' means (each signer's top-1 averaged over seeds first), and a
difference is distinguishable when that interval excludes 0, which is exactly the paired t-test's
p < ALPHA: the interval and the test never disagree. A single signer's cell keeps its Wilson
interval on that signer's clips. The model to ship is chosen by ``VERDICT_RULE`` from
inner-validation figures only, among arms that cover every hold-out and seed; a held-out score
never chooses. Failed, missing and duplicate cells are listed, never averaged as zero.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import logging

import numpy as np
import pandas as pd
from scipy import stats

from signbart.config import QUANT_MODES
from signbart.results import CELL_KEYS
from signbart.trial import KEEPBEST

log = logging.getLogger(__name__)

QUANTS = QUANT_MODES
KINDS = ("signbart", "ensemble", KEEPBEST, "baseline")
METRICS = ("top1", "top5", "macro_f1")
COSTS = ("model_bytes", "params", "flops", "latency_ms_p50", "latency_ms_p90")
IDLE_KEYS = ["variant", "quant", "model_kind"]  # what an idle-machine latency figure is of
# An arm: one model setting. augment_setting is the row's ablation arm (the sweep writes it),
# "" outside an ablation, so ablation settings are never pooled.
GROUP = ["variant", "quant", "model_kind", "augment_setting"]
ALL = "all"  # the holdout value of rows pooled over all holdouts
GRID_ROWS = ("mean", "worst")  # the signer grid's rows under the hold-outs
CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
SHIPPING = ("signbart", "ensemble")  # the kinds a sweep exports as a .tflite to ship
TIE = 0.005  # inner-validation accuracies this close to the best are tied
CI_METHOD = (f"Student t-interval ({CONFIDENCE:.0%}) over the hold-out signers' means (each "
             "signer's top-1 averaged over seeds first), df = signers - 1")
VERDICT_RULE = (
    "Among the arms that ship a .tflite (SignBART or ensemble) with a row for every hold-out "
    "and seed, ship the one with the highest mean inner-validation accuracy; arms within "
    f"{TIE:g} of it are tied, and among tied arms the smallest .tflite ships, then the fastest, "
    "then the higher inner-validation accuracy, then the first label.")
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


@dataclasses.dataclass
class Summary:
    """Everything a report shows. Each frame is also written as ``<name>.csv``."""

    rows: pd.DataFrame         # one row per cell (newest duplicate kept), + augment_setting, ok
    audit: Audit
    arms: pd.DataFrame         # per arm: label, legend, coverage, inner accuracy, mean + CI, costs
    summary: pd.DataFrame      # per arm: metrics, signer-level metrics, delta vs fp32, costs
    per_holdout: pd.DataFrame  # per arm × holdout: mean ± std over seeds
    per_class: pd.DataFrame    # per arm × class: accuracy mean ± std over cells
    confusion: pd.DataFrame    # per arm × holdout (ALL = summed): counts and row shares
    failures: pd.DataFrame     # failed cells with their error
    duplicates: pd.DataFrame   # every row of a cell written more than once; ``kept`` marks one
    ablation: pd.DataFrame     # top-1 per augmentation setting × holdout, delta vs "none"
    search: pd.DataFrame       # per variant × holdout: what the nested search chose, and on whom
    inner: pd.DataFrame        # per trial: its inner signers, their score, the epochs it chose
    provenance: pd.DataFrame   # per sweep: files, rows, git SHAs, package versions, times
    signers: pd.DataFrame      # per arm × (holdouts, mean, worst): top-1 and its interval
    paired: pd.DataFrame       # quant vs fp32, kind vs baseline, verdict vs baseline: by signer
    verdict: dict              # verdict.json: the model to ship by VERDICT_RULE, or why none
    handedness: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # per left-handed signer: the shipped model on unmirrored clips (signbart.handedness)
    margins: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # per other variant: the verdict's variant's inner-validation lead over it (inner_margins)
    published: pd.DataFrame = dataclasses.field(default_factory=pd.DataFrame)
    # per SignBART arm: its figures beside another work's published ones (beside_published)
    published_source: str = ""  # whose figures those are, and on what protocol

    @property
    def sweeps(self) -> list[str]:
        return [str(x) for x in self.provenance.sweep]

    @property
    def missing(self) -> pd.DataFrame:
        return self.audit.missing

    @property
    def synthetic_rows(self) -> int:
        """Rows whose dataset is marked synthetic (dataset.json), as the trial recorded it."""
        return int(self.rows.synthetic.fillna(False).astype(bool).sum())

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        """The tables written as CSV; the optional ones only when the input has them."""
        out = {"variants": self.arms, "signers": self.signers, "summary": self.summary,
               "paired": self.paired, "per_holdout": self.per_holdout,
               "per_class": self.per_class, "failures": self.failures,
               "missing": self.audit.missing, "rejected": self.audit.rejected,
               "duplicates": self.duplicates, "provenance": self.provenance}
        out.update({k: v for k, v in (("ablation", self.ablation), ("search", self.search),
                                      ("inner", self.inner), ("handedness", self.handedness),
                                      ("inner_margins", self.margins),
                                      ("published", self.published))
                    if not v.empty})
        return out


def natural(value) -> tuple:
    """Sort key putting signer "2" before "10" and ALL last."""
    s = str(value)
    return (2, 0, "") if s == ALL else (0, int(s), "") if s.isdigit() else (1, 0, s)


def _sorted(df: pd.DataFrame) -> pd.DataFrame:
    """Rows in reading order: variant, quant fp32→int8, kind, holdout, seed."""
    rank = {"quant": {q: i for i, q in enumerate(QUANTS)},
            "model_kind": {k: i for i, k in enumerate(KINDS)}}

    def key(col: pd.Series) -> pd.Series:
        if col.name in rank:
            return col.map(lambda v: (rank[col.name].get(v, len(rank[col.name])), str(v)))
        return col.map(natural) if col.name in ("holdout", "seed") else col.astype(str)

    cols = [c for c in GROUP + ["holdout", "seed"] if c in df.columns]
    return df.sort_values(cols, key=key, kind="stable").reset_index(drop=True) if cols else df


# ---------------------------------------------------------------------------- intervals

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


# ---------------------------------------------------------------------------- labels

def _short_variants(variants: list[str]) -> dict[str, str]:
    """Each variant without the dash-separated words all share (the last shared word where
    nothing else is left): arabic-asl-65kpts-framed(-light) -> framed, light."""
    if len(variants) < 2:
        return dict.fromkeys(variants, "")
    words = [v.split("-") for v in variants]
    n = 0
    while all(len(w) > n for w in words) and len({w[n] for w in words}) == 1:
        n += 1
    return {v: "-".join(w[n:]) or w[n - 1] for v, w in zip(variants, words)}


def labels(arms: pd.DataFrame) -> pd.Series:
    """A short, unique label per arm: short variant, quant, kind tag, [ablation arm]."""
    short = _short_variants(list(dict.fromkeys(arms.variant)))
    out = [" ".join(filter(None, [short[v], q, KIND_TAGS.get(k, k), f"[{a}]" if a else ""]))
           for v, q, k, a in zip(arms.variant, arms.quant, arms.model_kind, arms.augment_setting)]
    seen = pd.Series(out).value_counts()  # variants whose short names collide: full name
    return pd.Series([f"{lab} ({v})" if seen[lab] > 1 else lab
                      for lab, v in zip(out, arms.variant)], index=arms.index)


# ---------------------------------------------------------------------------- rows

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


def _summary(rows: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
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
    return _sorted(out.assign(model_mb=out.model_bytes / 1e6, size_mb=size,
                              size_source=np.where(tflite, "tflite",
                                                   np.where(size.notna(), "float32 weights", ""))))


def _per_holdout(rows: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    keys = GROUP + ["model", "holdout"]
    return _sorted(_counts(rows, keys).join(_mean_std(ok, keys, METRICS)).reset_index())


def _glosses(rows: pd.DataFrame) -> dict[str, str]:
    """Class id -> human name, from any row that gives names for its labels."""
    out: dict[str, str] = {}
    for labs, glosses in zip(rows.labels, rows.glosses):
        if labs is not None and glosses is not None and len(glosses) == len(labs):
            for lab, g in zip(labs, glosses):
                if g:
                    out.setdefault(lab, g)
    return out


def _class_order(labs: pd.Series) -> list[str]:
    return list(dict.fromkeys(lab for ls in labs.dropna() for lab in ls))


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
    """Confusion counts per arm, summed over seeds per holdout and over everything (ALL).

    Rows may list classes in different orders; matrices are added on the union of class ids.
    """
    out = []
    for key, g in ok.groupby(GROUP + ["model"], sort=False):
        labs_all = _class_order(g.labels)
        pos = {lab: i for i, lab in enumerate(labs_all)}
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
            acc = per.setdefault(holdout, np.zeros((len(labs_all),) * 2, np.int64))
            idx = [pos[lab] for lab in labs]
            acc[np.ix_(idx, idx)] += m
            seeds.setdefault(holdout, set()).add(seed)
        names = [gloss.get(lab) or lab for lab in labs_all]
        pooled = [(ALL, sum(per.values()), set().union(*seeds.values()))] if per else []
        for holdout, m, s in [(h, m, seeds[h]) for h, m in sorted(
                per.items(), key=lambda kv: natural(kv[0]))] + pooled:
            out.append({**dict(zip(GROUP + ["model"], key)), "holdout": holdout,
                        "labels": labs_all, "names": names, "counts": m, "share": _row_share(m),
                        "n_clips": int(m.sum()), "n_seeds": len(s),
                        "n_holdouts": len(per) if holdout == ALL else 1})
    return _sorted(pd.DataFrame(out, columns=GROUP + [
        "model", "holdout", "labels", "names", "counts", "share", "n_clips", "n_seeds",
        "n_holdouts"]))


def confusion_long(confusion: pd.DataFrame) -> pd.DataFrame:
    """The per-hold-out matrices as one long table (model, holdout, true, predicted, count;
    non-zero counts only): files beside the page instead of a picture per fold."""
    out = [(c.model, c.holdout, c.labels[i], c.names[i], c.labels[j], int(c.counts[i, j]))
           for c in confusion[confusion.holdout != ALL].itertuples()
           for i, j in zip(*np.nonzero(c.counts))]
    return pd.DataFrame(out, columns=["model", "holdout", "true", "true_gloss", "predicted",
                                      "count"])


def _with_pooled(stats_by_holdout: pd.DataFrame, stats_all: pd.DataFrame) -> pd.DataFrame:
    """Per-holdout rows followed by the pooled row (holdout ALL) of each group."""
    return _sorted(pd.concat([stats_by_holdout.reset_index(),
                              stats_all.reset_index().assign(holdout=ALL)], ignore_index=True))


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
    epochs it kept, the epochs the shipped model trained, and the ensemble mix it fitted (share,
    mode, temperatures; null on rows written before the mix was calibrated)."""
    sb = ok[(ok.model_kind == "signbart") & ok.inner_val_accuracy.notna()]
    if sb.empty:
        return pd.DataFrame()
    keys = ["sweep", "variant", "augment_setting", "holdout", "seed"]
    out = sb.drop_duplicates(keys)[keys + ["val_signers", "inner_val_accuracy", "best_epoch",
                                          "epochs_run", "n_train"]].assign(
        val_signers=lambda d: d.val_signers.map(lambda v: ", ".join(v) if v is not None else ""))
    ens = ok[ok.model_kind == "ensemble"].drop_duplicates(keys)
    temps = np.array([(np.nan, np.nan) if t is None else t for t in ens.ensemble_temperatures],
                     float).reshape(-1, 2)
    ens = ens[keys + ["ensemble_weight", "ensemble_mode"]].assign(
        signbart_temperature=temps[:, 0], baseline_temperature=temps[:, 1])
    return _sorted(out.merge(ens, on=keys, how="left").rename(
        columns={"best_epoch": "inner_best_epoch", "epochs_run": "shipped_epochs",
                 "n_train": "shipped_n_train"}))


def _clips(rows: pd.DataFrame) -> pd.Series:
    """Test clips behind each row's top-1: ``n_test``, else its confusion matrix's total."""
    total = rows.confusion.map(lambda c: float(sum(map(sum, c))) if c is not None else np.nan)
    return rows.n_test.astype(float).fillna(total)


def _all_or_nan(s: pd.Series) -> float:
    return s.sum() if s.notna().all() else np.nan


# ---------------------------------------------------------------------------- signers

def _per_signer(ok: pd.DataFrame) -> pd.DataFrame:
    """Per arm × hold-out: top-1 over seeds, its seeds and clips, and its Wilson interval on
    that signer's clips pooled over seeds."""
    d = ok.assign(clips=_clips(ok))
    d = d.assign(correct=(d.top1 * d.clips).round())
    per = d.groupby(GROUP + ["model", "holdout"], sort=False).agg(
        n_seeds=("seed", "nunique"), clips=("clips", _all_or_nan),
        correct=("correct", _all_or_nan), top1=("top1", "mean")).reset_index()
    ci = [wilson(k, n) for k, n in zip(per.correct, per.clips)]
    return _sorted(per.assign(signer=per.holdout, ci_low=[c[0] for c in ci],
                              ci_high=[c[1] for c in ci]))


def _signers(per: pd.DataFrame, arms: pd.DataFrame) -> pd.DataFrame:
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


# ---------------------------------------------------------------------------- arms

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


def _expected(rows: pd.DataFrame, audit: Audit) -> tuple[list[str], list]:
    """The hold-outs and seeds every complete arm covers: the known grids', plus what rows show
    of sweeps whose grid is unknown."""
    known = set(audit.expected.sweep)
    seen = rows[~rows.sweep.isin(known)]
    holdouts = set(audit.expected.holdout) | set(seen.holdout)
    seeds = set(audit.expected.seed) | set(seen.seed)
    return sorted(holdouts, key=natural), sorted(seeds, key=natural)


def _arms(rows: pd.DataFrame, ok: pd.DataFrame, per: pd.DataFrame, summary: pd.DataFrame,
          audit: Audit) -> pd.DataFrame:
    """One line per arm: its label and legend, role, coverage, mean inner-validation accuracy,
    held-out mean with its t-interval over signers, seed spread, worst signer and costs."""
    holdouts, seeds = _expected(rows, audit)
    cells = len(holdouts) * len(seeds)
    arms = summary[GROUP + ["size_mb", "size_source", "latency_ms_p50", "latency_ms_p90",
                            "latency_source", "flops"]].copy()
    arms.insert(0, "model", labels(arms))
    out = []
    for a in arms.itertuples(index=False):
        mine = ok[(ok.variant == a.variant) & (ok.quant == a.quant)
                  & (ok.model_kind == a.model_kind) & (ok.augment_setting == a.augment_setting)]
        done = set(zip(mine.holdout, mine.seed))
        judged = set(zip(mine.holdout[mine.inner_val_accuracy.notna()],
                         mine.seed[mine.inner_val_accuracy.notna()]))
        full = [h for h in holdouts if all((h, s) in done for s in seeds)]
        seen = set(mine.holdout) & set(holdouts)
        p = per[per.model == a.model].set_index("holdout").top1
        mean, lo, hi = t_interval(p.to_numpy())
        by_seed = mine.groupby("seed").top1.mean()
        worst = p.idxmin() if len(p) else ""
        config = rows.config[rows.model == a.model].dropna()
        out.append({
            "role": "candidate" if a.model_kind in SHIPPING else "reference",
            "n_signers": len(seen), "n_signers_expected": len(holdouts),
            "n_seeds": mine.seed.nunique(), "n_seeds_expected": len(seeds),
            "full_coverage": len(full) == len(holdouts) > 0,
            "complete": cells > 0 and all((h, s) in judged for h in holdouts for s in seeds),
            "inner_val_accuracy": mine.inner_val_accuracy.mean(),
            "mean_top1": mean, "mean_ci_low": lo, "mean_ci_high": hi,
            "seed_std": by_seed.std() if len(by_seed) > 1 else np.nan,
            "worst_signer": worst, "worst_top1": p.min() if len(p) else np.nan,
            "keypoints": _keypoints(config.iloc[0]) if len(config) else np.nan})
    arms = pd.concat([arms.reset_index(drop=True), pd.DataFrame(out)], axis=1)
    arms["coverage"] = [", ".join(filter(None, [
        f"{n}/{e} signers" if n < e else "", f"{k}/{f} seeds" if k < f else ""]))
        or ("all" if full else "some cells failed")
        for n, e, k, f, full in zip(arms.n_signers, arms.n_signers_expected, arms.n_seeds,
                                    arms.n_seeds_expected, arms.full_coverage)]
    dom = _dominated(arms)
    return arms.assign(dominated=dom.notna() & (dom != ""), dominated_by=dom.fillna(""))


def _dominated(arms: pd.DataFrame) -> pd.Series:
    """For each complete candidate arm, the arm that dominates it ("" if none; NA elsewhere):
    no lower inner-validation accuracy, no larger, no slower, and strictly better in one. The
    verdict's rule can never pick a dominated arm, so the two never contradict each other."""
    c = arms[arms.complete & (arms.role == "candidate")]
    out = pd.Series(pd.NA, index=arms.index, dtype="object")
    v = c[["inner_val_accuracy", "size_mb", "latency_ms_p50"]].to_numpy(float)
    v[:, 0] *= -1  # lower is better on every column
    for i, idx in enumerate(c.index):
        better = np.all(v <= v[i], axis=1) & np.any(v < v[i], axis=1)
        out[idx] = c.model.iloc[int(np.argmax(better))] if better.any() else ""
    return out


# ---------------------------------------------------------------------------- comparisons

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


def _paired_tests(ok: pd.DataFrame, arms: pd.DataFrame, verdict_model: str) -> pd.DataFrame:
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


# ---------------------------------------------------------------------------- verdict

def choose(arms: pd.DataFrame) -> tuple[str, pd.DataFrame]:
    """(the label VERDICT_RULE ships, or ""; the candidates it chose among)."""
    c = arms[arms.complete & (arms.role == "candidate") & arms.inner_val_accuracy.notna()]
    if c.empty:
        return "", c
    return str(by_rule(c).model.iloc[0]), c


def _tied(inner: pd.Series) -> pd.Series:
    """Which inner-validation accuracies VERDICT_RULE counts as tied with the best."""
    return inner >= inner.max() - TIE - 1e-12


def by_rule(c: pd.DataFrame) -> pd.DataFrame:
    """Candidates in VERDICT_RULE's order: those tied with the best inner-validation accuracy
    first (smallest, fastest, higher inner accuracy, first label), then the others by inner
    accuracy and the same keys."""
    inner = c.inner_val_accuracy
    tied = _tied(inner)
    return c.assign(_untied=~tied, _rest=np.where(tied, 0.0, -inner), _neg=-inner).sort_values(
        ["_untied", "_rest", "size_mb", "latency_ms_p50", "_neg", "model"], na_position="last",
        kind="stable").drop(columns=["_untied", "_rest", "_neg"])


def _f(x) -> float | None:
    return None if x is None or pd.isna(x) else float(x)


def _ci(r) -> list | None:
    return None if r is None or pd.isna(r.ci_low) else [float(r.ci_low), float(r.ci_high)]


def _int8_cost(paired: pd.DataFrame, arm: pd.Series, model: str) -> pd.Series | None:
    """The INT8 cost of the verdict: its own difference from its fp32 when it is quantised,
    else that of the same model's int8, ptq or qat arm (the first that ran)."""
    q = paired[(paired.comparison == "quant vs fp32") & (paired.variant == arm.variant)
               & (paired.model_kind == arm.model_kind)
               & (paired.augment_setting == arm.augment_setting)]
    for pick in [q[q.model == model]] + [q[q.quant == x] for x in ("int8", "ptq", "qat")]:
        if len(pick):
            return pick.iloc[0]
    return None


def inner_margins(inner: pd.DataFrame, variant: str | None) -> pd.DataFrame:
    """How surely inner validation, which chose, prefers the verdict's variant: its inner
    accuracy minus each other variant's, paired by hold-out (the same inner signers, drawn by
    hold-out and seed; seeds averaged first), with its t-interval over the hold-outs."""
    if inner.empty or not variant or inner.variant.nunique() < 2:
        return pd.DataFrame()
    by = inner[inner.augment_setting == ""].pivot_table(
        index="holdout", columns="variant", values="inner_val_accuracy", aggfunc="mean")
    out = []
    for other in sorted(set(by.columns) - {variant}, key=natural):
        d = (by[variant] - by[other]).dropna()
        out.append({"variant": variant, "versus": other, **paired_test(d.to_numpy())})
    return pd.DataFrame(out).rename(columns={"n_signers": "n_holdouts"})


def _verdict(arms: pd.DataFrame, per: pd.DataFrame, paired: pd.DataFrame,
             model: str, candidates: pd.DataFrame, margins: pd.DataFrame) -> dict:
    out = {"model": model or None, "rule": VERDICT_RULE, "ci_method": CI_METHOD,
           "candidates": [{"model": m, "inner_val_accuracy": _f(x)}
                          for m, x in zip(candidates.model, candidates.inner_val_accuracy)]}
    if not model:
        out["reason"] = ("no arm that ships a .tflite has a row with top-1 and inner-validation "
                         "accuracy for every hold-out and seed")
        return out
    a = arms.set_index("model").loc[model]
    mine = per[per.model == model].set_index("holdout").top1

    def compared(what):
        p = paired[(paired.model == model) & (paired.comparison.isin(what))]
        return p.iloc[0] if len(p) else None

    vb = compared(["verdict vs baseline", "kind vs baseline"])
    base = per[per.model == vb.versus].set_index("holdout").top1 if vb is not None else {}
    i8 = _int8_cost(paired, a, model)
    out.update({
        "inner_val_accuracy": _f(a.inner_val_accuracy), "mean": _f(a.mean_top1),
        "mean_ci": [_f(a.mean_ci_low), _f(a.mean_ci_high)],
        "n_signers": int(a.n_signers), "n_seeds": int(a.n_seeds), "seed_std": _f(a.seed_std),
        "per_signer": {str(h): float(v) for h, v in mine.items()},
        "baseline": None if vb is None else vb.versus,
        "baseline_per_signer": {str(h): float(v) for h, v in dict(base).items()},
        "worst_signer": str(a.worst_signer), "worst": _f(a.worst_top1),
        "vs_baseline": None if vb is None else _f(vb.delta_mean), "vs_baseline_ci": _ci(vb),
        "vs_baseline_distinguishable": None if vb is None else bool(vb.distinguishable),
        "int8_model": None if i8 is None else i8.model,
        "int8_quant": None if i8 is None else i8.quant,
        "int8_vs_fp32": None if i8 is None else _f(i8.delta_mean), "int8_vs_fp32_ci": _ci(i8),
        "int8_vs_fp32_distinguishable": None if i8 is None else bool(i8.distinguishable),
        "size_mb": _f(a.size_mb), "latency_ms": _f(a.latency_ms_p50),
        "latency_source": str(a.latency_source),
        "tied": list(candidates.model[_tied(candidates.inner_val_accuracy)])})
    if not margins.empty:
        out.update({
            "inner_margin_min": _f(margins.delta_mean.min()),
            "inner_margin_max": _f(margins.delta_mean.max()),
            "inner_margins_distinguishable": int(margins.distinguishable.sum()),
            "inner_margins": len(margins)})
    return out


# ---------------------------------------------------------------------------- provenance

def _provenance(raw: pd.DataFrame, rows: pd.DataFrame, audit: Audit) -> pd.DataFrame:
    def joined(s: pd.Series) -> str:
        return ", ".join(sorted({str(v) for v in s.dropna()} - {""}))

    out = raw.groupby("sweep", dropna=False).agg(
        files=("source_file", "nunique"), rows_read=("source_file", "size"),
        git_sha=("git_sha", joined), package_version=("package_version", joined),
        first_row=("created_at", "min"), last_row=("created_at", "max"))
    cells = rows.groupby("sweep", dropna=False).agg(cells=("ok", "size"), ok=("ok", "sum"))
    out = out.join(cells.assign(failed=cells.cells - cells.ok)).join(
        audit.missing.groupby("sweep").size().rename("missing"))
    return out.fillna({"missing": 0}).astype({"missing": int}).reset_index()


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


def summarize(df: pd.DataFrame, audit: Audit | None = None,
              idle_latency: pd.DataFrame | None = None,
              published: tuple[str, pd.DataFrame] | None = None) -> Summary:
    """All report tables from the rows ``signbart.report`` accepted; ``idle_latency`` as for
    ``with_idle_latency``; ``published`` (whose figures, and the figures) as for
    ``beside_published``."""
    audit = audit or Audit.none()
    # rows from foreign or older files may lack keys: keep them visible instead of dropping them
    raw = df.fillna({"model_kind": "signbart", **{k: "?" for k in ("sweep", "holdout",
                                                                  "variant", "quant")}})
    raw = raw.assign(augment_setting=raw.ablation.fillna(""))
    rows, duplicates = _dedupe(raw)
    rows = rows.assign(ok=(rows.status == "ok") & rows.top1.notna())
    summary = with_idle_latency(_summary(rows, rows[rows.ok]), idle_latency)
    label = dict(zip(map(tuple, summary[GROUP].to_numpy()), labels(summary)))
    rows = rows.assign(model=[label.get(tuple(k), "") for k in rows[GROUP].to_numpy()])
    ok = rows[rows.ok]
    summary.insert(0, "model", [label[tuple(k)] for k in summary[GROUP].to_numpy()])
    per = _per_signer(ok)
    arms = _arms(rows, ok, per, summary, audit)
    summary = summary.merge(arms[["model", "mean_ci_low", "mean_ci_high"]].rename(
        columns={"mean_ci_low": "top1_ci_low", "mean_ci_high": "top1_ci_high"}), on="model")
    model, candidates = choose(arms)
    inner = _inner(ok)
    margins = inner_margins(inner, arms.set_index("model").variant.get(model) if model else None)
    paired = _paired_tests(ok, arms, model)
    gloss = _glosses(rows)
    s = Summary(rows=rows, audit=audit, arms=arms, summary=summary,
                per_holdout=_per_holdout(rows, ok), per_class=_per_class(ok, gloss),
                confusion=_confusion(ok, gloss), failures=_failures(rows),
                duplicates=duplicates, ablation=_ablation(ok), search=_search(rows),
                inner=inner, provenance=_provenance(raw, rows, audit),
                signers=_signers(per, arms), paired=paired,
                verdict=_verdict(arms, per, paired, model, candidates, margins),
                margins=margins,
                published=beside_published(arms, published[1]) if published else pd.DataFrame(),
                published_source=published[0] if published else "")
    for what, table in (("failed", s.failures), ("missing", audit.missing),
                        ("rejected", audit.rejected), ("duplicate rows of", s.duplicates)):
        if len(table):
            log.warning("report: %d %s cells", len(table), what)
    return s
