"""The report's tables from its accepted rows: arms with their labels and costs, metrics per
arm, hold-out and class, confusion counts, failures, duplicates, ablation, search, the inner
runs and provenance. Statistics over signers are ``signerstats``', the verdict ``verdict``'s."""

from __future__ import annotations

import functools
import json
import logging

import numpy as np
import pandas as pd

from signbart.cells import (
    ALL,
    COSTS,
    GROUP,
    KIND_TAGS,
    METRICS,
    SHIPPING,
    Audit,
    natural,
    sort_cells,
)
from signbart.results import CELL_KEYS
from signbart.signerstats import t_interval

log = logging.getLogger(__name__)


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


def dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per cell, the newest by created_at; every row of a cell seen more than once)."""
    keys = list(CELL_KEYS) + ["augment_setting"]  # an ablation's arms are cells of their own
    newest_last = df.sort_values("created_at", kind="stable", na_position="first")
    kept = newest_last.drop_duplicates(keys, keep="last").sort_index()
    dup = newest_last[newest_last.duplicated(keys, keep=False)]
    dup = dup.assign(kept=dup.index.isin(kept.index))
    cols = keys + ["trial_id", "status", "top1", "created_at", "kept", "source_file"]
    return kept.reset_index(drop=True), sort_cells(dup[cols])


def failures_table(rows: pd.DataFrame) -> pd.DataFrame:
    bad = rows[~rows.ok]
    error = bad.error.where(bad.status != "ok", "status ok but no top-1 recorded")
    cols = list(CELL_KEYS) + ["augment_setting", "trial_id", "status"]
    return sort_cells(bad[cols].assign(error=error.fillna("")))


def _mean_std(df: pd.DataFrame, keys: list[str], cols, infix: str = "") -> pd.DataFrame:
    """``<col><infix>_mean`` / ``_std`` (sample std, ddof=1: NaN for one value) per ``keys``."""
    out = df.groupby(keys)[list(cols)].agg(["mean", "std"])
    out.columns = [f"{c}{infix}_{s}" for c, s in out.columns]
    return out


def _counts(rows: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    out = rows.groupby(keys).agg(n_cells=("ok", "size"), n_ok=("ok", "sum"))
    return out.assign(n_failed=out.n_cells - out.n_ok)


def paired_frame(a: pd.DataFrame, b: pd.DataFrame, on: list[str], by: list[str]) -> pd.DataFrame:
    """Top-1 of ``a`` minus ``b`` matched on ``on`` (repeats of a key are averaged first)."""
    ma = a.groupby(by + on).top1.mean().rename("a").reset_index()
    mb = b.groupby(on).top1.mean().rename("b").reset_index()
    return ma.merge(mb, on=on).assign(diff=lambda d: d.a - d.b)


def summary_table(rows: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    holdout_means = ok.groupby(GROUP + ["holdout"])[list(METRICS)].mean().reset_index()
    signers = _mean_std(holdout_means, GROUP, METRICS, "_holdout").join(
        holdout_means.groupby(GROUP).size().rename("n_holdouts"))
    pairs = paired_frame(ok[ok.quant != "fp32"], ok[ok.quant == "fp32"],
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
    return sort_cells(out.assign(model_mb=out.model_bytes / 1e6, size_mb=size,
                              size_source=np.where(tflite, "tflite",
                                                   np.where(size.notna(), "float32 weights", ""))))


def per_holdout_table(rows: pd.DataFrame, ok: pd.DataFrame) -> pd.DataFrame:
    keys = GROUP + ["model", "holdout"]
    return sort_cells(_counts(rows, keys).join(_mean_std(ok, keys, METRICS)).reset_index())


def glosses(rows: pd.DataFrame) -> dict[str, str]:
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


def per_class_table(ok: pd.DataFrame, gloss: dict[str, str]) -> pd.DataFrame:
    long = [(*key, lab, acc)
            for *key, labs, accs in ok[GROUP + ["labels", "per_class_acc"]].itertuples(index=False)
            if labs is not None and accs is not None and len(labs) == len(accs)
            for lab, acc in zip(labs, accs)]
    df = pd.DataFrame(long, columns=GROUP + ["class_id", "acc"])
    out = df.groupby(GROUP + ["class_id"]).acc.agg(acc_mean="mean", acc_std="std",
                                                   n="count").reset_index()
    rank = {c: i for i, c in enumerate(_class_order(ok.labels))}
    out = out.assign(gloss=out.class_id.map(gloss).fillna(""), _r=out.class_id.map(rank))
    out = sort_cells(out.sort_values("_r", kind="stable")).drop(columns="_r")
    return out[GROUP + ["class_id", "gloss", "n", "acc_mean", "acc_std"]]


def _row_share(m: np.ndarray) -> np.ndarray:
    totals = m.sum(axis=1, keepdims=True)
    return np.divide(m, totals, out=np.zeros(m.shape), where=totals > 0)


def confusion_table(ok: pd.DataFrame, gloss: dict[str, str]) -> pd.DataFrame:
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
    return sort_cells(pd.DataFrame(out, columns=GROUP + [
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
    return sort_cells(pd.concat([stats_by_holdout.reset_index(),
                              stats_all.reset_index().assign(holdout=ALL)], ignore_index=True))


def ablation_table(ok: pd.DataFrame) -> pd.DataFrame:
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
    pairs = paired_frame(abl[abl.augment_setting != "none"], none,
                    on=["variant", "quant", "model_kind", "holdout", "seed"],
                    by=["augment_setting"])

    def delta(d):
        return d["diff"].agg(delta_vs_none_mean="mean", delta_vs_none_std="std", n_pairs="size")

    return _with_pooled(by_h.join(delta(pairs.groupby(keys + ["holdout"]))),
                        pooled.join(delta(pairs.groupby(keys)))).astype({"n_pairs": "Int64"})


def search_table(rows: pd.DataFrame) -> pd.DataFrame:
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
    return sort_cells(pd.DataFrame(out))


def inner_table(ok: pd.DataFrame) -> pd.DataFrame:
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
    return sort_cells(out.merge(ens, on=keys, how="left").rename(
        columns={"best_epoch": "inner_best_epoch", "epochs_run": "shipped_epochs",
                 "n_train": "shipped_n_train"}))


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


def arms_table(rows: pd.DataFrame, ok: pd.DataFrame, per: pd.DataFrame, summary: pd.DataFrame,
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


def provenance_table(raw: pd.DataFrame, rows: pd.DataFrame, audit: Audit) -> pd.DataFrame:
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
