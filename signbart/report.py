"""LOSO reports from a sweep's Parquet result rows: ``load -> summarize -> plot_* -> render_*``.

Only result rows are read, never logs, so a report of a running sweep shows what has finished.
``summarize`` does every computation; the plot and render functions only draw and format what
it returns. Accuracy is shown two ways because they answer different questions: mean ± std over
all holdout × seed cells (seed and signer noise mixed), and mean ± std of the per-holdout means
(how much the held-out signer matters). Failed, missing and duplicate cells are listed, never
averaged as zero or dropped silently.
"""

from __future__ import annotations

import base64
import dataclasses
import html
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

from signbart.errors import UserError
from signbart.results import CELL_KEYS, read_rows
from signbart.storage import filesystem, write_bytes, write_text

log = logging.getLogger(__name__)

FORMATS = ("md", "csv", "html")
QUANTS = ("fp32", "ptq", "qat", "int8")
KINDS = ("signbart", "baseline")
METRICS = ("top1", "top5", "macro_f1")
COSTS = ("model_bytes", "params", "flops", "latency_ms_p50")
# One report line per model setting. augment_setting is a short name for the augmentation
# JSON, "" when every row used the same one, so ablation settings are never pooled.
GROUP = ["variant", "quant", "model_kind", "augment_setting"]
ALL = "all"  # the holdout value of rows pooled over all holdouts
# Fields of signbart.config.AugmentConfig that switch an augmentation on; all falsy = "none".
AUGMENT_SWITCHES = ("prob", "flip", "hand_drop", "hand_paste", "frame_drop", "affine_prob",
                    "speed")


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
    provenance: pd.DataFrame   # per sweep: files, rows, git SHAs, package versions, times

    def csv_tables(self) -> dict[str, pd.DataFrame]:
        """The tables written as CSV; baseline/ablation only when the input has them."""
        out = {"summary": self.summary, "per_holdout": self.per_holdout,
               "per_class": self.per_class, "failures": self.failures, "missing": self.missing,
               "duplicates": self.duplicates, "provenance": self.provenance}
        out.update({k: v for k, v in (("baseline", self.baseline), ("ablation", self.ablation),
                                      ("search", self.search)) if not v.empty})
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


def _augment_off(aug) -> bool:
    if not aug:
        return True
    if not isinstance(aug, dict):
        return str(aug).lower() in ("none", "off", "false")
    keys = [k for k in AUGMENT_SWITCHES if k in aug] or list(aug)
    return not any(aug[k] for k in keys)


def _augment_settings(augment: pd.Series) -> pd.Series:
    """A short, unique name per distinct augmentation JSON.

    Its ``name`` field if any, "none" when every switch is off, else the fields where it differs
    from the other settings ("hand_drop=0.2"); "" when all rows share one setting.
    """
    def parse(s):
        try:
            return json.loads(s)
        except (TypeError, ValueError):
            return s

    canon = {s: json.dumps(parse(s), sort_keys=True) for s in augment.dropna().unique()}
    distinct = {c: json.loads(c) for c in canon.values()}
    if len(distinct) + augment.isna().any() <= 1:
        return pd.Series("", index=augment.index)
    dicts = [d for d in distinct.values() if isinstance(d, dict)]
    varying = sorted({k for d in dicts for k in d
                      if len({json.dumps(e.get(k)) for e in dicts}) > 1})
    names: dict[str, str] = {}
    for c, d in distinct.items():
        if isinstance(d, dict) and d.get("name"):
            name = str(d["name"])
        elif _augment_off(d):
            name = "none"
        elif isinstance(d, dict):
            name = ", ".join(f"{k}={json.dumps(d.get(k))}" for k in varying) or c[:40]
        else:
            name = str(d)[:40]
        while name in names.values():
            name += "'"
        names[c] = name
    return augment.map(lambda s: names[canon[s]] if isinstance(s, str) else "unknown")


def _dedupe(df: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(one row per cell, the newest by created_at; every row of a cell seen more than once)."""
    keys = list(CELL_KEYS)
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
    return _sorted(out.assign(model_mb=out.model_bytes / 1e6, series=_series(out)))


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
        for holdout, labs, conf, trial in zip(g.holdout, g.labels, g.confusion, g.trial_id):
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
        names = [gloss.get(lab) or lab for lab in labels]
        for holdout, m in sorted(per.items(), key=lambda kv: _natural(kv[0])) + (
                [(ALL, sum(per.values()))] if per else []):
            out.append({**dict(zip(GROUP, key)), "holdout": holdout, "labels": labels,
                        "names": names, "counts": m, "share": _row_share(m)})
    return _sorted(pd.DataFrame(out, columns=GROUP + ["holdout", "labels", "names", "counts",
                                                      "share"]))


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
    raw = raw.assign(augment_setting=_augment_settings(raw.augment))
    rows, duplicates = _dedupe(raw)
    rows = rows.assign(ok=(rows.status == "ok") & rows.top1.notna())
    ok = rows[rows.ok]
    gloss = _glosses(rows)
    missing = _missing(rows)
    s = Summary(rows=rows, summary=_summary(rows, ok), per_holdout=_per_holdout(rows, ok),
                per_class=_per_class(ok, gloss), confusion=_confusion(ok, gloss),
                failures=_failures(rows), missing=missing, duplicates=duplicates,
                baseline=_baseline(ok), ablation=_ablation(ok), search=_search(rows),
                provenance=_provenance(raw, rows, missing))
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


def plot_top1(summary: pd.DataFrame) -> bytes:
    """Top-1 mean ± std over holdout × seed cells, one point per variant and series."""
    variants = list(dict.fromkeys(summary.variant))
    series = list(dict.fromkeys(summary.series))
    fig = Figure(figsize=(max(6.0, 1.4 * len(variants) + 3), 4.5), dpi=120)
    ax = fig.subplots()
    width = 0.8 / max(len(series), 1)
    for i, (name, d) in enumerate(summary.groupby("series", sort=False)):
        x = [variants.index(v) - 0.4 + width * (i + 0.5) for v in d.variant]
        ax.errorbar(x, d.top1_mean, yerr=d.top1_std.fillna(0), fmt="o", capsize=4, label=name)
    ax.set_xticks(range(len(variants)), variants)
    ax.set(ylabel="top-1 (mean ± std over holdouts × seeds)", xlabel="keypoint variant",
           title="Top-1 by variant and quantisation")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="series", bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def plot_size(summary: pd.DataFrame) -> bytes:
    """Top-1 against model size (colour = variant, marker = series): what quantisation buys."""
    colours = dict(zip(dict.fromkeys(summary.variant),
                       itertools.cycle(sns.color_palette("tab10"))))
    markers = dict(zip(dict.fromkeys(summary.series), itertools.cycle("osD^vP*Xhp<>")))
    fig = Figure(figsize=(7.5, 4.8), dpi=120)
    ax = fig.subplots()
    for r in summary.itertuples():
        ax.errorbar(r.model_mb, r.top1_mean, yerr=0 if pd.isna(r.top1_std) else r.top1_std,
                    fmt=markers[r.series], color=colours[r.variant], capsize=3, alpha=0.85)
    handles = ([Line2D([], [], color=c, marker="o", ls="", label=v) for v, c in colours.items()]
               + [Line2D([], [], color="0.4", marker=m, ls="", label=s)
                  for s, m in markers.items()])
    ax.set_xlim(left=0)
    ax.set(xlabel="model size (MB)", ylabel="top-1 (mean ± std over holdouts × seeds)",
           title="Accuracy vs model size")
    ax.grid(alpha=0.3)
    ax.legend(handles=handles, title="colour: variant, marker: series", fontsize=8,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


# ------------------------------------------------------------------------------- render

@dataclasses.dataclass
class Picture:
    """One PNG of the report: ``path`` is relative to the output folder."""

    path: str
    title: str
    png: bytes
    group: str            # "charts" | "confusion"
    detail: bool = False  # per-holdout pictures: collapsed in HTML, linked in Markdown


@dataclasses.dataclass
class Section:
    """A titled table as display strings, and/or a group of pictures, for both renderers."""

    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    csv: str = ""        # the CSV holding the full table, named when Markdown cuts it short
    pictures: str = ""   # Picture.group shown under the table


MD_MAX_ROWS = 60     # longer tables are cut in summary.md (the CSV has them all)
HTML_OPEN_ROWS = 40  # longer tables sit behind a <details> toggle in report.html


def _pm(mean, std, digits: int = 3) -> str:
    if pd.isna(mean):
        return "–"
    return f"{mean:.{digits}f}" + ("" if pd.isna(std) else f" ± {std:.{digits}f}")


def _pm_col(df: pd.DataFrame, prefix: str) -> list[str]:
    return [_pm(a, b) for a, b in zip(df[f"{prefix}_mean"], df[f"{prefix}_std"])]


def _si(x) -> str:
    if pd.isna(x):
        return "–"
    for div, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(x) >= div:
            return f"{x / div:.3g}{unit}"
    return f"{x:.3g}"


def _last_line(error: str, width: int = 200) -> str:
    """The informative end of a traceback, for tables (the CSV keeps the whole text)."""
    lines = [ln.strip() for ln in str(error).splitlines() if ln.strip()]
    return (lines[-1] if lines else "")[:width]


def _labels(df: pd.DataFrame) -> pd.DataFrame:
    """GROUP columns as shown: kind and augment only when they tell rows apart."""
    out = pd.DataFrame({"variant": df.variant, "quant": df.quant})
    if "model_kind" in df and df.model_kind.nunique() > 1:
        out["kind"] = df.model_kind
    if "augment_setting" in df and df.augment_setting.fillna("").ne("").any():
        out["augment"] = df.augment_setting
    return out


def _sections(s: Summary) -> list[Section]:
    """The report's content, formatted, in reading order."""
    sm, ph, pc, fl, dup = s.summary, s.per_holdout, s.per_class, s.failures, s.duplicates
    delta = [d + (f" (n={n:.0f})" if pd.notna(n) else "")
             for d, n in zip(_pm_col(sm, "top1_delta_vs_fp32"), sm.n_pairs)]
    out = [
        Section("Accuracy", _labels(sm).assign(**{
            "cells": sm.n_cells, "failed": sm.n_failed, "top1 (cells)": _pm_col(sm, "top1"),
            "top1 (signer means)": _pm_col(sm, "top1_holdout"), "Δ top1 vs fp32": delta}),
            "mean ± std. cells: over every holdout × seed (seed and signer variance); signer "
            "means: over the per-holdout means (signer variance). Δ: paired by variant, holdout "
            "and seed; failed cells are left out, never counted as zero.", "summary.csv"),
        Section("Top-5 and macro-F1", _labels(sm).assign(**{
            "top5 (cells)": _pm_col(sm, "top5"), "top5 (signer means)": _pm_col(sm, "top5_holdout"),
            "macro-F1 (cells)": _pm_col(sm, "macro_f1"),
            "macro-F1 (signer means)": _pm_col(sm, "macro_f1_holdout")}),
            "mean ± std, as above.", "summary.csv"),
        Section("Size and speed", _labels(sm).assign(**{
            "size MB": [_pm(x, None, 2) for x in sm.model_mb], "params": sm.params.map(_si),
            "FLOPs": sm.flops.map(_si),
            "latency p50 ms": [_pm(x, None, 2) for x in sm.latency_ms_p50]}),
            "means over successful cells.", "summary.csv"),
        Section("Charts", pictures="charts"),
    ]
    if not s.baseline.empty:
        b = s.baseline
        out.append(Section("SignBART vs baseline", _labels(b).assign(
            holdout=b.holdout, pairs=b.n_pairs, signbart=[_pm(x, None) for x in b.signbart_top1],
            baseline=[_pm(x, None) for x in b.baseline_top1], **{"Δ top1": _pm_col(b, "delta")}),
            "top-1 paired by variant, holdout and seed; ± is the std of the paired differences "
            "(over seeds per holdout, over all pairs for 'all').", "baseline.csv"))
    elif (s.rows.model_kind == "baseline").any():
        out.append(Section("SignBART vs baseline", note="baseline rows exist, but none shares a "
                           "variant, quant, holdout and seed with a successful SignBART row."))
    if not s.ablation.empty:
        a = s.ablation
        out.append(Section("Augmentation ablation", _labels(a).assign(
            holdout=a.holdout, cells=a.n, top1=_pm_col(a, "top1"),
            **{"Δ top1 vs none": _pm_col(a, "delta_vs_none")}),
            "the same variant and quant trained with different augmentation; Δ paired by "
            "holdout and seed against the setting 'none'.", "ablation.csv"))
    if not s.search.empty:
        h = s.search
        out.append(Section("Nested search", h.assign(
            inner_val_top1=h.inner_val_top1.map(lambda x: _pm(x, None))),
            "per holdout, the candidate with the best accuracy on that fold's inner-validation "
            "signers (first seed); the held-out signer was sealed during the search.",
            "search.csv"))
    out += [
        Section("Per holdout", _labels(ph).assign(
            holdout=ph.holdout, cells=ph.n_cells, failed=ph.n_failed,
            **{m: _pm_col(ph, m) for m in METRICS}), "mean ± std over seeds.", "per_holdout.csv"),
        Section("Per class", _labels(pc).assign(**{
            "class": pc.class_id, "gloss": pc.gloss, "cells": pc.n,
            "accuracy": _pm_col(pc, "acc")}), "accuracy mean ± std over cells.", "per_class.csv"),
        Section("Confusion matrices", note="summed over holdouts and seeds (per holdout below); "
                "colour = share of the true class, numbers = counts.", pictures="confusion"),
        Section("Failures", fl[list(CELL_KEYS) + ["trial_id"]].assign(
            error=fl.error.map(_last_line)), "failed cells, never averaged in.", "failures.csv"),
        Section("Missing cells", s.missing, "cells of each sweep's grid (observed holdouts × "
                "seeds × variants × quants) with no row yet.", "missing.csv"),
        Section("Duplicate cells", dup.assign(
            top1=dup.top1.map(lambda x: _pm(x, None)),
            kept=dup.kept.map({True: "kept", False: "dropped"})),
            "cells written more than once; the newest row is used.", "duplicates.csv"),
    ]
    return out


def _when(t) -> str:
    return "?" if pd.isna(t) else f"{t:%Y-%m-%d %H:%M} UTC"


def _provenance_line(s: Summary) -> str:
    parts = [f"{p.sweep}: {p.rows_read} rows in {p.files} files ({p.ok} ok, {p.failed} failed, "
             f"{p.missing} missing), git {p.git_sha or '?'}, signbart {p.package_version or '?'}, "
             f"rows written {_when(p.first_row)} to {_when(p.last_row)}"
             for p in s.provenance.itertuples()]
    return "Sweeps: " + "; ".join(parts) + "."


def _cell(v) -> str:
    return "" if pd.api.types.is_scalar(v) and pd.isna(v) else str(v)


def _md_table(df: pd.DataFrame, csv: str) -> str:
    if df.empty:
        return "_none_"

    def row(values) -> str:
        return "| " + " | ".join(_cell(v).replace("|", "\\|").replace("\n", " ")
                                 for v in values) + " |"

    lines = [row(df.columns), "|" + "---|" * len(df.columns)]
    lines += [row(r) for r in df.head(MD_MAX_ROWS).itertuples(index=False)]
    if len(df) > MD_MAX_ROWS:
        lines += ["", f"_{len(df) - MD_MAX_ROWS} more rows in `{csv}`._"]
    return "\n".join(lines)


def render_markdown(s: Summary, pictures: list[Picture]) -> str:
    """GitHub-flavoured summary; images are referenced relative to the output folder."""
    out = ["# LOSO report", "", _provenance_line(s)]
    for sec in _sections(s):
        out += ["", f"## {sec.title}", ""] + ([sec.note, ""] if sec.note else [])
        if sec.table is not None:
            out.append(_md_table(sec.table, sec.csv))
        group = [p for p in pictures if p.group == sec.pictures]
        out += [f"![{p.title}]({p.path})" for p in group if not p.detail]
        if any(p.detail for p in group):
            out += ["", "Per holdout:", ""]
            out += [f"- [{p.title}]({p.path})" for p in group if p.detail]
    return "\n".join(out) + "\n"


CSS = """
body{font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:2rem auto;
max-width:1250px;padding:0 1rem;color:#1b1f24}
h1{font-size:1.6rem}h2{font-size:1.25rem;border-bottom:1px solid #d0d7de;padding-bottom:.2rem;
margin-top:2rem}.prov,.note,figcaption{color:#57606a;font-size:.85rem}
.scroll{overflow-x:auto}table{border-collapse:collapse;font-size:.85rem;margin:.5rem 0}
th,td{border:1px solid #d0d7de;padding:.25rem .55rem;text-align:left;white-space:nowrap}
th{background:#f6f8fa}tbody tr:nth-child(even){background:#f9fafb}
figure{display:inline-block;margin:.5rem 1rem .5rem 0;vertical-align:top}
figure.confusion{max-width:590px}
img{max-width:100%;height:auto}details{margin:.5rem 0}summary{cursor:pointer;color:#0969da}
"""


def _html_table(df: pd.DataFrame) -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>"
                   for r in df.itertuples(index=False))
    table = (f"<div class=scroll><table><thead><tr>{head}</tr></thead>"
             f"<tbody>{body}</tbody></table></div>")
    return (table if len(df) <= HTML_OPEN_ROWS
            else f"<details><summary>show {len(df)} rows</summary>{table}</details>")


def _html_figures(pictures: list[Picture]) -> str:
    return "".join(
        f'<figure class={p.group}><img alt="{html.escape(p.title)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.png).decode()}"><figcaption>{html.escape(p.title)}</figcaption>'
        "</figure>" for p in pictures)


def render_html(s: Summary, pictures: list[Picture]) -> str:
    """One self-contained page: inline CSS, PNGs as data URIs, readable offline."""
    body = []
    for sec in _sections(s):
        body.append(f"<h2>{html.escape(sec.title)}</h2>")
        if sec.note:
            body.append(f"<p class=note>{html.escape(sec.note)}</p>")
        if sec.table is not None:
            body.append(_html_table(sec.table))
        group = [p for p in pictures if p.group == sec.pictures]
        body.append(_html_figures([p for p in group if not p.detail]))
        detail = [p for p in group if p.detail]
        if detail:
            body.append(f"<details><summary>per holdout ({len(detail)} pictures)</summary>"
                        f"{_html_figures(detail)}</details>")
    return ("<!doctype html><html lang=en><head><meta charset=utf-8><title>LOSO report</title>"
            f"<style>{CSS}</style></head><body><h1>LOSO report</h1>"
            f"<p class=prov>{html.escape(_provenance_line(s))}</p>{''.join(body)}</body></html>\n")


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


def draw(s: Summary) -> list[Picture]:
    """Every PNG of the report: charts, then confusion matrices summed and per holdout."""
    out = []
    sm = s.summary[s.summary.n_ok > 0]
    if not sm.empty:
        out.append(Picture("top1.png", "Top-1 by variant × quant", plot_top1(sm), "charts"))
    if sm.model_mb.notna().any():
        out.append(Picture("accuracy_vs_size.png", "Top-1 vs model size",
                           plot_size(sm[sm.model_mb.notna()]), "charts"))
    for c in s.confusion.itertuples():
        kind = "" if c.model_kind == "signbart" else c.model_kind
        name = _slug(c.variant, c.quant, kind, c.augment_setting)
        title = " ".join(filter(None, [c.variant, c.quant, kind,
                                       c.augment_setting and f"[{c.augment_setting}]"]))
        pooled = c.holdout == ALL
        title += " — all holdouts" if pooled else f" — holdout {c.holdout}"
        path = f"confusion_{name}.png" if pooled else f"confusion/{name}_{_slug(c.holdout)}.png"
        out.append(Picture(path, title, plot_confusion(c.counts, c.share, c.names, title),
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
