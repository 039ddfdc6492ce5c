"""The report as pages: Markdown (``summary.md``) and HTML (``report.html``).

Formatting only: every number comes from ``signbart.summary.summarize`` and every picture from
``signbart.plots.draw``. Both pages open with the verdict, then what is wrong with the inputs,
then a table of contents; sections are built once and written by both renderers, so the two
pages always say the same thing.
"""

from __future__ import annotations

import base64
import dataclasses
import html
import re
from pathlib import PurePosixPath

import pandas as pd

from signbart.cells import GRID_ROWS, METRICS
from signbart.plots import Picture, slug
from signbart.results import CELL_KEYS
from signbart.signerstats import CONFIDENCE, signer_grid
from signbart.summary import Summary


@dataclasses.dataclass
class Section:
    """A titled table as display strings, and/or a group of pictures, for both renderers."""

    title: str
    table: pd.DataFrame | None = None
    note: str = ""
    csv: str = ""        # the CSV holding the full table, named when Markdown cuts it short
    pictures: str = ""   # Picture.group shown under the table
    table_id: str = ""   # the HTML table's id

    @property
    def anchor(self) -> str:
        """GitHub's heading anchor, also the HTML heading's id."""
        return re.sub(r"[^\w\- ]", "", self.title.lower()).replace(" ", "-")


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


def _fixed(x) -> str:
    return "" if pd.isna(x) else f"{x:.2f}"


def _pct(x, digits: int = 1) -> str:
    return "–" if x is None or pd.isna(x) else f"{100 * x:.{digits}f}"


def _ci(lo, hi) -> str:
    return "" if lo is None or pd.isna(lo) else f"[{_pct(lo)}, {_pct(hi)}]"


def _pts(d, ci) -> str:
    return "–" if d is None else f"{100 * d:+.1f} points {_ci(*(ci or [None, None]))}".strip()


# ------------------------------------------------------------------------------ the verdict

def verdict_lines(s: Summary) -> list[str]:
    """The verdict as sentences, in the order a reviewer asks: what ships and why, how well,
    on its worst signer, against the baseline, at what cost, and what the data can tell."""
    v = s.verdict
    if not v.get("model"):
        return [f"No verdict: {v['reason']}.", f"Rule: {v['rule']}"]
    a = s.arms.set_index("model").loc[v["model"]]
    kind = a.model_kind + (f", ablation arm {a.augment_setting}" if a.augment_setting else "")
    tied = [m for m in v["tied"] if m != v["model"]]
    seeds = f"{v['n_seeds']} seed{'s' if v['n_seeds'] > 1 else ''}"
    spread = ("" if v.get("seed_std") is None
              else f"; seed spread ± {_pct(v['seed_std'])} points (std over seeds of the mean "
                   "over signers)")
    out = [f"Verdict: ship {v['model']} ({a.variant}, {a.quant}, {kind}).",
           f"Rule: {v['rule']}",
           f"Its mean inner-validation accuracy is {_pct(v['inner_val_accuracy'])} %"
           + (f" (tied with {', '.join(tied)})." if tied else "."),
           *([f"Its variant's inner-validation lead over each of the {v['inner_margins']} "
              f"other variants: {100 * v['inner_margin_min']:+.1f} to "
              f"{100 * v['inner_margin_max']:+.1f} points, paired by hold-out; "
              f"{v['inner_margins_distinguishable']} of those {CONFIDENCE:.0%} t-intervals over "
              "the hold-outs exclude 0 (Inner validation by variant)."]
             if v.get("inner_margins") else []),
           f"Held-out top-1: {_pct(v['mean'])} % {_ci(*v['mean_ci'])} over {v['n_signers']} "
           f"signers and {seeds}{spread}; worst signer {v['worst_signer']}: {_pct(v['worst'])} "
           "%.",
           f"Against the baseline ({v['baseline'] or 'none in the rows'}): "
           f"{_pts(v['vs_baseline'], v['vs_baseline_ci'])}.",
           f"Size {v['size_mb']:.2f} MB, latency {v['latency_ms']:.2f} ms (p50, one thread, "
           f"{WHERE_TIMED.get(v.get('latency_source'), 'timed inside the sweep')}); "
           + (f"INT8 cost vs FP32 ({v['int8_model']} against its fp32): "
              f"{_pts(v['int8_vs_fp32'], v['int8_vs_fp32_ci'])}."
              if v["int8_model"] else "INT8 cost vs FP32: no quantised arm of this model ran."),
           _distinguishable(s),
           f"Intervals: {v['ci_method']}."]
    return out


def _distinguishable(s: Summary) -> str:
    v, p = s.verdict, s.paired
    said = [(f"its difference from the baseline ({_pts(v['vs_baseline'], v['vs_baseline_ci'])})",
             v["vs_baseline_distinguishable"]),
            (f"the INT8 cost ({_pts(v['int8_vs_fp32'], v['int8_vs_fp32_ci'])})",
             v["int8_vs_fp32_distinguishable"])]
    yes = [w for w, d in said if d is True]
    no = [w for w, d in said if d is False]
    return (f"Distinguishable from zero (its {CONFIDENCE:.0%} t-interval over signers excludes "
            f"0): {'; '.join(yes) or 'nothing about this model'}; not distinguishable: "
            f"{'; '.join(no) or 'nothing'}; of all {len(p)} paired comparisons, "
            f"{int(p.distinguishable.sum())} are distinguishable (Paired comparisons).")


def _warnings(s: Summary) -> list[str]:
    """What a reader must know before trusting a number: synthetic data, rows left out,
    unfinished sweeps and grids the report cannot check."""
    out = []
    if s.synthetic_rows:
        out.append(f"Synthetic data: {s.synthetic_rows} of {len(s.rows)} rows come from a "
                   "dataset whose dataset.json says synthetic: true. Their accuracies show that "
                   "the pipeline works, not how well real signs are recognised.")
    r = s.audit.rejected
    if len(r):
        files = r.groupby("file").rows.sum()
        reasons = "; ".join(f"{f}: {w}" for f, w in
                            r.drop_duplicates("file")[["file", "reason"]].itertuples(index=False))
        out.append(f"Rejected: {int(files.sum())} rows in {len(files)} files do not belong to "
                   f"their folder's sweep.json and are left out of every table ({reasons}; all "
                   "in rejected.csv).")
    g = s.audit.grids
    for x in g.itertuples() if len(g) else []:
        if x.grid == "known" and x.missing_cells:
            out.append(f"Unfinished: sweep {x.sweep} has rows for {x.trials_with_rows} of its "
                       f"{x.trials} trials; {x.missing_cells} cells of its grid are missing "
                       "(missing.csv).")
        elif x.grid != "known":
            out.append(f"Grid unknown for {x.sweep} ({x.grid.split(': ', 1)[1]}): its missing "
                       "cells cannot be listed and its rows cannot be checked.")
    return out


# ------------------------------------------------------------------------------ sections

def _grid_table(s: Summary) -> pd.DataFrame:
    """The signer grid as text, in %: "value [low, high]"; ▼ marks each arm's worst signer."""
    g = signer_grid(s.signers)
    cov = dict(zip(s.arms.model, s.arms.coverage))
    cells = pd.DataFrame("", index=g["top1"].index, columns=g["top1"].columns)
    for h in cells.index:
        for m in cells.columns:
            v = g["top1"].at[h, m]
            who = f"{g['signer'].at[h, m]}: " if h == "worst" else ""
            mark = " ▼" if h not in GRID_ROWS and g["signer"].at["worst", m] == h else ""
            cells.at[h, m] = ("partial" if pd.isna(v) and h == "mean" else "" if pd.isna(v) else
                              f"{who}{_pct(v)} {_ci(g['ci_low'].at[h, m], g['ci_high'].at[h, m])}"
                              .strip() + mark)
    cells.columns = [m if cov[m] == "all" else f"{m} ({cov[m]})" for m in cells.columns]
    return cells.rename_axis(index="signer", columns=None).reset_index()


def _seed_count(s: Summary) -> str:
    """ "3 seeds", "1 seed", or "2/3 seeds" when hold-outs differ."""
    seeds = sorted(set(s.signers.n_seeds.dropna().astype(int)))
    return f"{'/'.join(map(str, seeds)) or '?'} seed{'' if seeds == [1] else 's'}"


def _legend(s: Summary) -> Section:
    a = s.arms
    table = pd.DataFrame({"model": a.model, "variant": a.variant, "quant": a.quant,
                          "model kind": a.model_kind, "ablation arm": a.augment_setting,
                          "role": a.role, "signers": a.coverage})
    return Section("Legend", table, "Each model's short label in this report and in every CSV "
                   "(variants.csv), with what it is. candidate: a kind that ships as a .tflite; "
                   "reference: the baseline (no .tflite) and the refit's keep-best partner, "
                   "listed but never chosen. signers: 'all', or how many hold-outs and seeds have "
                   "an ok row (a partial arm is kept out of the verdict and the means row).",
                   "variants.csv", table_id="legend-table")


WHERE_TIMED = {"idle": "on an idle machine", "sweep": "timed inside the sweep"}


def _models(s: Summary) -> Section:
    a = s.arms
    verdict = s.verdict.get("model")
    idle = (a.latency_source == "idle").any()
    several_seeds = (a.n_seeds > 1).any()
    table = pd.DataFrame({
        "model": [m + (" ★" if m == verdict else "") for m in a.model],
        "signers": a.coverage, "role": a.role,
        "inner-val %": a.inner_val_accuracy.map(_pct),
        "held-out top-1 %": [f"{_pct(m)} {_ci(lo, hi)}".strip() if full else f"({_pct(m)})"
                             for m, lo, hi, full in zip(a.mean_top1, a.mean_ci_low,
                                                        a.mean_ci_high, a.full_coverage)],
        **({"seed spread": a.seed_std.map(_pct)} if several_seeds else {}),
        "worst signer": [f"{w}: {_pct(t)}" for w, t in zip(a.worst_signer, a.worst_top1)],
        "keypoints": a.keypoints.map(_si), "FLOPs": a.flops.map(_si),
        "size MB": [_pm(x, None, 2) + ("" if src == "tflite" else " (weights)")
                    for x, src in zip(a.size_mb, a.size_source)],
        "latency ms": [_pm(x, None, 2) + (" (sweep)" if idle and src == "sweep" else "")
                       for x, src in zip(a.latency_ms_p50, a.latency_source)],
        **({"p90 ms": [_pm(x, None, 2) for x in a.latency_ms_p90]} if idle else {}),
        "dominated": ["–" if not c or r != "candidate" else f"by {b}" if b else "no"
                      for c, r, b in zip(a.complete, a.role, a.dominated_by)]})
    return Section(
        "Models", table, "★ the verdict. inner-val: mean over the arm's trials of the accuracy "
        "on the inner-validation signers (the only figure the verdict ranks by; a quant mode "
        "carries its FP32 model's). held-out top-1: mean over signers with its "
        f"{CONFIDENCE:.0%} t-interval over signers; in parentheses for a partial arm. "
        + ("seed spread: std over seeds of the mean over signers. " if several_seeds else "")
        + "Size: the .tflite file (the baseline: its float32 weights); latency: "
        + ("the single-thread median (and p90) of one fold's file timed on an idle machine by "
           "benchmarks/bench_latency.py (latency.json; latency_source idle in variants.csv), "
           "or, marked (sweep), the one the trial timed inside the busy sweep. "
           if idle else "the single-thread median the trial timed inside the sweep (two trials "
           "share the cores: time it idle with benchmarks/bench_latency.py and --latency). ")
        + "dominated: another complete candidate has "
        "no lower inner-val accuracy, is no larger and no slower, and is better in one; – for "
        "partial and reference arms.", "variants.csv", pictures="frontier",
        table_id="models-table")


def _paired_section(s: Summary) -> Section:
    p = s.paired
    return Section("Paired comparisons", pd.DataFrame({
        "model": p.model, "versus": p.versus, "comparison": p.comparison,
        "signers": p.n_signers, "top1 %": p.top1.map(_pct),
        "versus top1 %": p.versus_top1.map(_pct),
        "Δ points": [f"{100 * d:+.2f}" for d in p.delta_mean],
        f"{CONFIDENCE:.0%} CI": [_ci(lo, hi) for lo, hi in zip(p.ci_low, p.ci_high)],
        "t-test p": p.t_p.map(lambda x: "–" if pd.isna(x) else f"{x:.3g}"),
        "Wilcoxon p": p.wilcoxon_p.map(lambda x: "–" if pd.isna(x) else f"{x:.3g}"),
        "≠ 0": p.distinguishable.map({True: "yes", False: "no"})}),
        "Every quant mode against its fp32, every model kind against the baseline at the same "
        "quant, and the verdict's model against its variant's baseline. Paired by signer: "
        "the difference on each hold-out and seed, averaged over the signer's seeds. Δ: the "
        f"mean over signers; CI: the {CONFIDENCE:.0%} t-interval over signers; ≠ 0 when it "
        "excludes 0, which is exactly the paired t-test's p < 0.05. Wilcoxon's signed-rank p "
        "is a second opinion (it never decides; – when every difference is 0).", "paired.csv")


def _span(lo, hi, fmt) -> str:
    if pd.isna(lo):
        return "–"
    return fmt(lo) if lo == hi else f"{fmt(lo)}–{fmt(hi)}"


def _published_section(s: Summary) -> Section:
    p = s.published
    return Section("Against published figures", pd.DataFrame({
        "model": p.model, "signers": p.coverage,
        "held-out top-1 %": [f"{_pct(m)} {_ci(lo, hi)}".strip() for m, lo, hi in
                             zip(p.mean_top1, p.mean_ci_low, p.mean_ci_high)],
        "worst signer": [f"{w}: {_pct(t)}" for w, t in zip(p.worst_signer, p.worst_top1)],
        "published top-1 %": [_span(lo, hi, _pct) for lo, hi in
                              zip(p.published_top1_low, p.published_top1_high)],
        "interval vs published": p.against,
        "size MB": [_pm(x, None, 2) for x in p.size_mb],
        "published MB": [_pm(x, None, 2) for x in p.published_size_mb],
        "speed-up": [f"{x:.2f}×" if pd.notna(x) else "–" for x in p.speedup],
        "published speed-up": [_span(lo, hi, "{:g}".format) + ("" if pd.isna(lo) else "×")
                               for lo, hi in zip(p.published_speedup_low,
                                                 p.published_speedup_high)]}),
        f"Published: {s.published_source}. Each SignBART arm beside the published figure for "
        "its quant mode. interval vs published: where the arm's "
        f"{CONFIDENCE:.0%} t-interval over signers lies against the published top-1 range "
        "(below, overlaps, above; partial for an arm without every signer). speed-up: the "
        "arm's FP32 latency over its own (p50, the latencies of the Models table).",
        "published.csv")


def _first_sections(s: Summary) -> list[Section]:
    """What a LOSO reader looks for first: the legend, each signer under each model, the
    models' inner and held-out figures, then the paired differences."""
    out = [_legend(s)]
    if not s.signers.empty:
        out.append(Section(
            "Signer × model grid", _grid_table(s),
            f"Top-1 in % on each held-out signer, over {_seed_count(s)}, with a "
            f"{CONFIDENCE:.0%} Wilson interval on that signer's clips pooled over seeds. mean: "
            "the mean of the signers' values with its t-interval over signers ('partial' for an "
            "arm without every signer); worst: the lowest signer (▼ in its column). Failed "
            "cells are left out, never counted as zero. Also in signers.csv.",
            "signers.csv", pictures="grid", table_id="signer-grid"))
    out += [_models(s), _paired_section(s)]
    if not s.margins.empty:
        m = s.margins
        out.append(Section("Inner validation by variant", pd.DataFrame({
            "variant": m.variant, "versus": m.versus, "hold-outs": m.n_holdouts,
            "Δ inner-val points": [f"{100 * d:+.2f}" for d in m.delta_mean],
            f"{CONFIDENCE:.0%} CI": [_ci(lo, hi) for lo, hi in zip(m.ci_low, m.ci_high)],
            "t-test p": m.t_p.map(lambda x: "–" if pd.isna(x) else f"{x:.3g}"),
            "≠ 0": m.distinguishable.map({True: "yes", False: "no"})}),
            "The verdict's variant against every other on the figure that chose it: inner-"
            "validation accuracy of the FP32 model, paired by hold-out (each fold's inner signers "
            "are the same for every variant), seeds averaged first, with the t-interval over the "
            "hold-outs. One interval per other variant, not corrected for their number.",
            "inner_margins.csv"))
    return out + ([_published_section(s)] if not s.published.empty else [])


def _sections(s: Summary) -> list[Section]:
    """The report's content, formatted, in reading order."""
    sm, ph, pc, fl, dup = s.summary, s.per_holdout, s.per_class, s.failures, s.duplicates
    delta = [d + (f" (n={n:.0f})" if pd.notna(n) else "")
             for d, n in zip(_pm_col(sm, "top1_delta_vs_fp32"), sm.n_pairs)]
    out = _first_sections(s) + [
        Section("Accuracy", sm[["model"]].assign(**{
            "cells": sm.n_cells, "failed": sm.n_failed, "top1 (cells)": _pm_col(sm, "top1"),
            "top1 (signer means)": _pm_col(sm, "top1_holdout"), "Δ top1 vs fp32": delta}),
            "mean ± std. cells: over every holdout × seed (seed and signer variance); signer "
            "means: over the per-holdout means (signer variance). Δ: paired by variant, holdout "
            "and seed; failed cells are left out, never counted as zero.", "summary.csv"),
        Section("Top-5 and macro-F1", sm[["model"]].assign(**{
            "top5 (cells)": _pm_col(sm, "top5"), "top5 (signer means)": _pm_col(sm, "top5_holdout"),
            "macro-F1 (cells)": _pm_col(sm, "macro_f1"),
            "macro-F1 (signer means)": _pm_col(sm, "macro_f1_holdout")}),
            "mean ± std, as above.", "summary.csv"),
        Section("Size and speed", sm[["model"]].assign(**{
            "size MB": [_pm(x, None, 2) for x in sm.model_mb], "params": sm.params.map(_si),
            "FLOPs": sm.flops.map(_si),
            "latency p50 ms": [_pm(x, None, 2) for x in sm.latency_ms_p50]}),
            "means over successful cells.", "summary.csv"),
        Section("Charts", pictures="charts"),
    ]
    if not s.ablation.empty:
        a = s.ablation
        out.append(Section("Augmentation ablation", a[["variant", "quant", "model_kind"]].assign(
            augment=a.augment_setting, holdout=a.holdout, cells=a.n, top1=_pm_col(a, "top1"),
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
            ensemble_weight=i.ensemble_weight.map(_fixed),
            ensemble_mode=i.ensemble_mode.fillna(""),
            signbart_temperature=i.signbart_temperature.map(_fixed),
            baseline_temperature=i.baseline_temperature.map(_fixed)),
            "every choice of a trial is made on its inner-validation signers (drawn per "
            "hold-out and seed): the checkpoint or epoch count, and the ensemble's mix "
            "(each member's temperature, then the mode and SignBART's share, by inner "
            "log-likelihood). "
            "Mean inner accuracy per variant: " + "; ".join(
                f"{v} {m:.3f}" for v, m in means.items()) + ".", "inner.csv"))
    if not s.handedness.empty:
        out.append(Section("Left-handed signers", s.handedness, (
            "the shipped model's top-1 on each left-handed signer's clips mirrored at "
            "extraction (the rows) and as filmed (its fold's .tflite on `--handedness`'s "
            "dataset); handedness: the card's setting (auto mirrors a left-dominant clip "
            "itself); detected_left: the share of clips the auto rule finds left-dominant."),
            "handedness.csv"))
    out += [
        Section("Per holdout", ph[["model"]].assign(
            holdout=ph.holdout, cells=ph.n_cells, failed=ph.n_failed,
            **{m: _pm_col(ph, m) for m in METRICS}), "mean ± std over seeds.", "per_holdout.csv"),
        Section("Per class", pc[["variant", "quant", "model_kind"]].assign(**{
            "class": pc.class_id, "gloss": pc.gloss, "cells": pc.n,
            "accuracy": _pm_col(pc, "acc")}), "accuracy mean ± std over cells.", "per_class.csv"),
        Section("Confusion matrices", note="one per model, summed over hold-outs and seeds; the "
                "per-hold-out counts are CSV files beside the page (confusion/), linked below. "
                "Each caption says how many test predictions it sums; colour = share of the "
                "true class, numbers = counts.", pictures="confusion"),
        Section("Failures", fl[list(CELL_KEYS) + ["trial_id"]].assign(
            error=fl.error.map(_last_line)), "failed cells, never averaged in.", "failures.csv"),
        Section("Missing cells", s.missing, "cells of each sweep's grid (its sweep.json, "
                "ablation arms included) with no row yet; a sweep without a recorded grid "
                "cannot list its missing cells.", "missing.csv"),
        Section("Rejected rows", s.audit.rejected, "rows whose sweep, trial or config_hash do "
                "not match their folder's sweep.json: never pooled.", "rejected.csv"),
        Section("Duplicate cells", dup.assign(
            top1=dup.top1.map(lambda x: _pm(x, None)),
            kept=dup.kept.map({True: "kept", False: "dropped"})),
            "cells written more than once; the newest row is used.", "duplicates.csv"),
    ]
    return out


def confusion_files(s: Summary) -> dict[str, str]:
    """Each model's per-hold-out confusion counts: a CSV beside the page."""
    return {m: f"confusion/{slug(m)}.csv" for m in dict.fromkeys(s.confusion.model)}


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
    return f"LOSO report: {', '.join(s.sweeps) or '?'}"


def _rebuild(command: str, handedness: str | None, code: str = "") -> str:
    text = f"Rebuild this report from the rows beside it ({code}rows/{code}): {code}{command}{code}"
    if handedness:   # named by its folder's name: a path of the machine that made it is no use
        text += (f"; the left-handed signers' table also needs the sweep's .tflite files (each "
                 f"row's model_path) and their clips extracted without mirroring: add "
                 f"{code}--handedness DATASET{code} (this report's was a dataset named "
                 f"{code}{PurePosixPath(handedness).name}{code})")
    return text


def render_markdown(s: Summary, pictures: list[Picture], command: str,
                    handedness: str | None = None) -> str:
    """GitHub-flavoured summary; images are referenced relative to the output folder."""
    sections = _sections(s)
    lines = verdict_lines(s)
    out = [f"# {_title(s)}", "", f"**{lines[0]}**", ""]
    out += [f"- {x}" for x in lines[1:]] + [""]
    out += [f"> **{w}**\n" for w in _warnings(s)]
    out += [_rebuild(command, handedness, "`"), "",
            _provenance_line(s), "", "Contents: " + " · ".join(
                f"[{sec.title}](#{sec.anchor})" for sec in sections)]
    for sec in sections:
        out += ["", f"## {sec.title}", ""] + ([sec.note, ""] if sec.note else [])
        if sec.table is not None:
            out.append(_md_table(sec.table, sec.csv))
        group = [p for p in pictures if p.group == sec.pictures]
        out += [line for p in group for line in ("", f"![{p.title}]({p.path})")]
        if sec.pictures == "confusion" and len(s.confusion):
            out += ["", "Per hold-out matrices: " + ", ".join(
                f"[{m}]({path})" for m, path in confusion_files(s).items())]
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
figure.confusion{max-width:420px}
img{max-width:100%;height:auto}details{margin:.5rem 0}summary{cursor:pointer;color:#0969da}
.banner{background:#fff1c2;border:1px solid #d4a72c;padding:.6rem .9rem;font-weight:600}
#verdict{background:#eef6ee;border:1px solid #4c9a52;padding:.6rem 1rem}
#verdict p.ship{font-size:1.15rem;font-weight:700;margin:.2rem 0}
#verdict li{margin:.15rem 0}nav#toc{columns:3;font-size:.9rem}code{font-size:.85rem}
"""


def _html_table(df: pd.DataFrame, table_id: str = "") -> str:
    if df.empty:
        return "<p><em>none</em></p>"
    table = df.map(_cell).to_html(index=False, border=0, table_id=table_id or None)
    table = f"<div class=scroll>{table}</div>"
    return (table if len(df) <= HTML_OPEN_ROWS
            else f"<details><summary>show {len(df)} rows</summary>{table}</details>")


CONFUSION_INLINE = 24   # more summed matrices than this: the page embeds the verdict's alone


def _inline(s: Summary, pictures: list[Picture]) -> tuple[list[Picture], list[Picture]]:
    """The confusion matrices the page embeds, and those it links (their PNGs lie beside it):
    all of them, or past ``CONFUSION_INLINE`` the verdict's alone (without a verdict: the
    first), which keeps a many-variant page under 1.5 MB."""
    if len(pictures) <= CONFUSION_INLINE:
        return pictures, []
    model = s.verdict.get("model")
    shown = next((p for p in pictures if p.path == f"confusion_{slug(model)}.png"), pictures[0])
    return [shown], [p for p in pictures if p is not shown]


def _html_figures(pictures: list[Picture]) -> str:
    return "".join(
        f'<figure class={p.group}><img alt="{html.escape(p.title)}" src="data:image/png;base64,'
        f'{base64.b64encode(p.png).decode()}"><figcaption>{html.escape(p.title)}</figcaption>'
        "</figure>" for p in pictures)


def render_html(s: Summary, pictures: list[Picture], command: str,
                handedness: str | None = None) -> str:
    """One page: inline CSS, the charts and summed confusion matrices as data URIs; the
    per-hold-out counts are linked CSV files beside it."""
    sections = _sections(s)
    body = []
    for sec in sections:
        body.append(f'<h2 id="{sec.anchor}">{html.escape(sec.title)}</h2>')
        if sec.note:
            body.append(f"<p class=note>{html.escape(sec.note)}</p>")
        if sec.table is not None:
            body.append(_html_table(sec.table, sec.table_id))
        group = [p for p in pictures if p.group == sec.pictures]
        linked = []
        if sec.pictures == "confusion":
            group, linked = _inline(s, group)
        body.append(_html_figures(group))
        if linked:
            body.append("<p class=note>The other models' summed matrices (PNG beside this "
                        "page): " + ", ".join(
                            f'<a href="{html.escape(p.path)}">{html.escape(p.title.split(" — ")[0])}</a>'
                            for p in linked) + "</p>")
        if sec.pictures == "confusion" and len(s.confusion):
            body.append("<p class=note>Per hold-out matrices (CSV beside this page): " + ", ".join(
                f'<a href="{html.escape(path)}">{html.escape(m)}</a>'
                for m, path in confusion_files(s).items()) + "</p>")
    lines = [html.escape(x) for x in verdict_lines(s)]
    verdict = (f'<section id="verdict"><p class=ship>{lines[0]}</p><ul>'
               + "".join(f"<li>{x}</li>" for x in lines[1:]) + "</ul></section>")
    banners = "".join(f"<p class=banner>{html.escape(w)}</p>" for w in _warnings(s))
    toc = ('<nav id="toc"><strong>Contents</strong><ol>' + "".join(
        f'<li><a href="#{sec.anchor}">{html.escape(sec.title)}</a></li>' for sec in sections)
        + "</ol></nav>")
    title = html.escape(_title(s))
    return (f"<!doctype html><html lang=en><head><meta charset=utf-8><title>{title}</title>"
            f"<style>{CSS}</style></head><body><h1>{title}</h1>{verdict}{banners}"
            f"<p class=prov>{html.escape(_rebuild(command, handedness))}</p>"
            f"<p class=prov>{html.escape(_provenance_line(s))}</p>{toc}{''.join(body)}"
            "</body></html>\n")
