"""The report as pages: Markdown (``summary.md``) and one self-contained HTML file.

Formatting only: every number comes from ``signbart.report.summarize`` and every picture from
``signbart.report.draw``. Sections are built once and written by both renderers, so the two
pages always say the same thing.
"""

from __future__ import annotations

import base64
import dataclasses
import html

import pandas as pd

from signbart.report import (
    ALPHA,
    CONFIDENCE,
    GRID_ROWS,
    METRICS,
    Picture,
    Summary,
    signer_grid,
    sweep_names,
)
from signbart.results import CELL_KEYS


@dataclasses.dataclass
class Section:
    """A titled table as display strings, and/or a group of pictures, for both renderers."""

    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    csv: str = ""        # the CSV holding the full table, named when Markdown cuts it short
    pictures: str = ""   # Picture.group shown under the table
    table_id: str = ""   # the HTML table's id


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


def _pct(x, digits: int = 1) -> str:
    return "–" if pd.isna(x) else f"{100 * x:.{digits}f}"


def _ci(lo, hi) -> str:
    return "" if pd.isna(lo) else f"[{_pct(lo)}, {_pct(hi)}]"


def _grid_table(s: Summary) -> pd.DataFrame:
    """The signer grid as text, in %: "value [low, high]"; ▼ marks each model's worst signer."""
    g = signer_grid(s.signers)
    cells = pd.DataFrame("", index=g["top1"].index, columns=g["top1"].columns)
    for h in cells.index:
        for m in cells.columns:
            v = g["top1"].at[h, m]
            who = f"{g['signer'].at[h, m]}: " if h == "worst" else ""
            mark = " ▼" if h not in GRID_ROWS and g["signer"].at["worst", m] == h else ""
            cells.at[h, m] = ("" if pd.isna(v) else
                              f"{who}{_pct(v)} {_ci(g['ci_low'].at[h, m], g['ci_high'].at[h, m])}"
                              .strip() + mark)
    return cells.rename_axis(index="signer", columns=None).reset_index()


def _seed_count(s: Summary) -> str:
    """ "3 seeds", "1 seed", or "2/3 seeds" when hold-outs differ."""
    seeds = sorted(set(s.signers.n_seeds.dropna().astype(int)))
    return f"{'/'.join(map(str, seeds)) or '?'} seed{'' if seeds == [1] else 's'}"


def _grid_note(s: Summary) -> str:
    variants = s.rows.variant.unique()
    columns = (f"quant and model kind (variant {variants[0]})" if len(variants) == 1
               else "variant, quant and model kind")
    return (f"Top-1 in % on each held-out signer, over {_seed_count(s)}, "
            f"with a {CONFIDENCE:.0%} Wilson score interval on the clips pooled over seeds "
            "(a seed's pass over a clip counts as one trial, so seed-to-seed spread is not in "
            "it). mean: the mean of the signers' values, interval on every clip pooled; worst: "
            f"the lowest signer (▼ in its column). Columns: {columns}; failed cells are left "
            "out, never counted as zero. Also in signers.csv.")


def _paired_sentence(p: pd.DataFrame) -> str:
    if p.empty:
        return "Nothing pairs: no quant mode next to fp32 and no model next to a baseline."

    def name(r):
        return f"{r.model} vs {r.versus} ({100 * r.delta_mean:+.1f} points)"

    yes = [name(r) for r in p.itertuples() if r.distinguishable]
    no = [name(r) for r in p.itertuples() if not r.distinguishable]
    rule = (f"its {CONFIDENCE:.0%} bootstrap interval excludes 0 and Wilcoxon's p < "
            f"{ALPHA:.2g}")
    return (f"Distinguishable from zero ({rule}): {'; '.join(yes) or 'none'}. "
            f"Not distinguishable: {'; '.join(no) or 'none'}.")


def _first_sections(s: Summary) -> list[Section]:
    """What a LOSO reader looks for first: each signer under each model, then the paired
    differences, then the variant comparison when there is one."""
    out = []
    if not s.signers.empty:
        out.append(Section("Signer × model grid", _grid_table(s), _grid_note(s), "signers.csv",
                           pictures="grid", table_id="signer-grid"))
    p = s.paired
    out.append(Section("Paired comparisons", p[["model", "versus"]].assign(**{
        "pairs": p.n_pairs, "top1 %": p.top1.map(_pct), "versus top1 %": p.versus_top1.map(_pct),
        "Δ points": [f"{100 * d:+.2f}" for d in p.delta_mean],
        f"{CONFIDENCE:.0%} CI": [_ci(lo, hi) for lo, hi in zip(p.ci_low, p.ci_high)],
        "Wilcoxon p": p.wilcoxon_p.map(lambda x: "–" if pd.isna(x) else f"{x:.3g}"),
        "≠ 0": p.distinguishable.map({True: "yes", False: "no"})}),
        "Every quant mode against fp32 and every model kind against the baseline, paired by "
        "variant, hold-out and seed. Δ: mean paired difference in top-1 points; CI: "
        "percentile bootstrap over the pairs; p: Wilcoxon signed-rank test (scipy; zero "
        "differences dropped, – when every pair is equal). " + _paired_sentence(p),
        "paired.csv"))
    if not s.variants.empty:
        v = s.variants
        out.append(Section("Keypoint variants × quantisation", pd.DataFrame({
            "model": v.model, "keypoints": v.keypoints.map(_si),
            "mean top1 %": [f"{_pct(m)} {_ci(lo, hi)}".strip()
                            for m, lo, hi in zip(v.mean_top1, v.mean_ci_low, v.mean_ci_high)],
            "worst signer": [f"{w}: {_pct(t)}" for w, t in zip(v.worst_signer, v.worst_top1)],
            "FLOPs": v.flops.map(_si),
            "size MB": [_pm(x, None, 2) + ("" if src == "tflite" else " (weights)")
                        for x, src in zip(v.size_mb, v.size_source)],
            "latency p50 ms": [_pm(x, None, 2) for x in v.latency_ms_p50],
            "dominated": ["–" if pd.isna(a) else ", ".join(
                k for k, d in (("size", a), ("latency", b)) if pd.notna(d) and d) or "no"
                for a, b in zip(v.dominated_size, v.dominated_latency)]}),
            f"Mean over hold-outs ({_seed_count(s)} per hold-out) with its Wilson interval, and "
            "the worst signer. FLOPs of one clip at the model's fixed frame count; size of the "
            ".tflite file (the baseline: its float32 weights); latency: the single-thread median "
            "the trial measured. Dominated: another model is at least as "
            "accurate and as small (or fast), and better in one. "
            + (s.recommendation or "No recommendation: no model has both a mean and a worst "
               "signer."), "variants.csv", pictures="frontier"))
    return out


def _sections(s: Summary) -> list[Section]:
    """The report's content, formatted, in reading order."""
    sm, ph, pc, fl, dup = s.summary, s.per_holdout, s.per_class, s.failures, s.duplicates
    delta = [d + (f" (n={n:.0f})" if pd.notna(n) else "")
             for d, n in zip(_pm_col(sm, "top1_delta_vs_fp32"), sm.n_pairs)]
    out = _first_sections(s) + [
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
    if not s.inner.empty:
        i = s.inner
        means = i.groupby("variant").inner_val_accuracy.mean()
        out.append(Section("Inner validation", i.assign(
            inner_val_accuracy=i.inner_val_accuracy.map(lambda x: _pm(x, None)),
            ensemble_weight=i.ensemble_weight.map(lambda x: "" if pd.isna(x) else f"{x:.1f}")),
            "every choice of a trial is made on its inner-validation signers (drawn per "
            "hold-out and seed): the checkpoint or epoch count, and the ensemble's SignBART share. "
            "Mean inner accuracy per variant: " + "; ".join(
                f"{v} {m:.3f}" for v, m in means.items()) + ".", "inner.csv"))
    out += [
        Section("Per holdout", _labels(ph).assign(
            holdout=ph.holdout, cells=ph.n_cells, failed=ph.n_failed,
            **{m: _pm_col(ph, m) for m in METRICS}), "mean ± std over seeds.", "per_holdout.csv"),
        Section("Per class", _labels(pc).assign(**{
            "class": pc.class_id, "gloss": pc.gloss, "cells": pc.n,
            "accuracy": _pm_col(pc, "acc")}), "accuracy mean ± std over cells.", "per_class.csv"),
        Section("Confusion matrices", note="summed over holdouts and seeds (per holdout below); "
                "each caption says how many test predictions it sums; colour = share of the "
                "true class, numbers = counts.", pictures="confusion"),
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


def _title(s: Summary) -> str:
    return f"LOSO report: {sweep_names(s)}"


def _banner(s: Summary) -> str:
    """The synthetic-data warning, or "" when no row comes from a synthetic dataset."""
    n = s.synthetic_rows
    if not n:
        return ""
    return (f"Synthetic data: {n} of {len(s.rows)} rows come from a dataset whose dataset.json "
            "says synthetic: true. Their accuracies show that the pipeline works, not how well "
            "real signs are recognised.")


def render_markdown(s: Summary, pictures: list[Picture]) -> str:
    """GitHub-flavoured summary; images are referenced relative to the output folder."""
    banner = _banner(s)
    out = [f"# {_title(s)}", ""] + ([f"> **{banner}**", ""] if banner else []) + [
        _provenance_line(s)]
    for sec in _sections(s):
        out += ["", f"## {sec.title}", ""] + ([sec.note, ""] if sec.note else [])
        if sec.table is not None:
            out.append(_md_table(sec.table, sec.csv))
        group = [p for p in pictures if p.group == sec.pictures]
        out += [line for p in group if not p.detail for line in ("", f"![{p.title}]({p.path})")]
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
.banner{background:#fff1c2;border:1px solid #d4a72c;padding:.6rem .9rem;font-weight:600}
"""


def _html_table(df: pd.DataFrame, table_id: str = "") -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    table = df.map(_cell).to_html(index=False, border=0, table_id=table_id or None)
    table = f"<div class=scroll>{table}</div>"
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
            body.append(_html_table(sec.table, sec.table_id))
        group = [p for p in pictures if p.group == sec.pictures]
        body.append(_html_figures([p for p in group if not p.detail]))
        detail = [p for p in group if p.detail]
        if detail:
            body.append(f"<details><summary>per holdout ({len(detail)} pictures)</summary>"
                        f"{_html_figures(detail)}</details>")
    title, banner = html.escape(_title(s)), _banner(s)
    banner = f"<p class=banner>{html.escape(banner)}</p>" if banner else ""
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<style>{CSS}</style></head><body><h1>{title}</h1>{banner}"
            f"<p class=prov>{html.escape(_provenance_line(s))}</p>{''.join(body)}</body></html>\n")

