"""The report's pictures, drawn from a ``signbart.summary.Summary``: nothing here computes a
statistic, every value and interval is the summary's.

Each arm keeps one colour in every chart (``palette``), points sit at their true values, and
every name is placed where it overlaps no other name (``_name_points``).
"""

from __future__ import annotations

import dataclasses
import io
import itertools
import re

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Rectangle
from matplotlib.ticker import ScalarFormatter
from matplotlib.transforms import Bbox
from PIL import Image

from signbart.cells import ALL, GRID_ROWS
from signbart.signerstats import signer_grid, worst_cells
from signbart.summary import Summary
from signbart.verdict import by_rule


@dataclasses.dataclass
class Picture:
    """One PNG of the report: ``path`` is relative to the output folder."""

    path: str
    title: str            # the figure's caption
    png: bytes
    group: str  # "grid" | "charts" | "frontier" | "confusion"


GRID_MAX_ARMS = 16   # more arms than this over several variants: one signer grid per variant


def _figure(width: float, height: float, dpi: int = 110) -> Figure:
    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def _png(fig: Figure) -> bytes:
    """The figure as a 256-colour PNG: a third of the bytes of a true-colour one, the same
    picture for flat-coloured charts."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", bbox_inches="tight")
    with Image.open(io.BytesIO(buf.getvalue())) as im:
        out = io.BytesIO()
        im.convert("RGB").quantize(256).save(out, format="PNG", optimize=True)
    return out.getvalue()


def palette(models: list[str]) -> dict[str, tuple]:
    """One colour per arm, the same in every chart of a report."""
    colours = sns.color_palette("tab10" if len(models) <= 10 else "tab20")
    return dict(zip(models, itertools.cycle(colours)))


def slug(*parts) -> str:
    return "_".join(re.sub(r"[^A-Za-z0-9.-]+", "-", str(p)).strip("-") for p in parts if p)


OFFSETS = [(dx, dy) for dy in (0, 8, -8, 16, -16, 24, -24, 32, -32, 40, -40)
           for dx in (6, -6)]  # points: where a name may sit beside its marker


def _name_points(ax, xs, ys, names, colours, bold: str = "") -> None:
    """Write each name beside its point at the first offset where it overlaps no marker and no
    name placed before it, with a leader line in the point's colour when moved off its row."""
    renderer = ax.figure.canvas.get_renderer()
    ax.margins(x=0.12, y=0.06)
    ax.autoscale_view()
    placed = [Bbox.from_extents(px - 4, py - 4, px + 4, py + 4)  # every marker, too
              for px, py in ax.transData.transform(np.column_stack([xs, ys]))]
    for i in np.argsort(-np.asarray(ys, float), kind="stable"):
        for dx, dy in OFFSETS:
            t = ax.annotate(names[i], (xs[i], ys[i]), xytext=(dx, dy), textcoords="offset points",
                            fontsize=7, ha="left" if dx > 0 else "right", va="center",
                            color="0.15", fontweight="bold" if names[i] == bold else None,
                            arrowprops=dict(arrowstyle="-", lw=0.6, color=colours[i]) if dy else None)
            box = t.get_window_extent(renderer)
            if not any(box.overlaps(b) for b in placed) or (dx, dy) == OFFSETS[-1]:
                placed.append(box)
                break
            t.remove()


def plot_confusion(counts: np.ndarray, share: np.ndarray, names: list[str], title: str) -> bytes:
    """Heatmap coloured by row share (so rare classes are as visible as common ones),
    annotated with raw counts; true classes are rows."""
    n = len(names)
    side = min(max(4.5, 0.4 * n + 2.0), 16.0)
    fig = _figure(side + 1.2, side, dpi=80)
    ax = fig.subplots()
    sns.heatmap(share, annot=counts if n <= 40 else False, fmt="d", cmap="Blues", vmin=0, vmax=1,
                xticklabels=names, yticklabels=names, square=True, ax=ax,
                annot_kws={"fontsize": 9 if n <= 15 else 6},
                cbar_kws={"label": "share of the true class", "shrink": 0.7})
    ax.set(xlabel="predicted", ylabel="true", title=title)
    ax.tick_params(axis="x", labelrotation=90, labelsize=9 if n <= 40 else 5)
    ax.tick_params(axis="y", labelrotation=0, labelsize=9 if n <= 40 else 5)
    return _png(fig)


def _grid_text(g: dict[str, pd.DataFrame]) -> pd.DataFrame:
    """Heatmap cell text in %: the value and its interval (the worst row: its signer first)."""
    text = pd.DataFrame("", index=g["top1"].index, columns=g["top1"].columns)
    for h, m in itertools.product(text.index, text.columns):
        v, lo, hi = (g[c].at[h, m] for c in ("top1", "ci_low", "ci_high"))
        if pd.notna(v):
            text.at[h, m] = "\n".join(
                ([str(g["signer"].at[h, m])] if h == "worst" else []) + [f"{100 * v:.1f}"]
                + ([] if pd.isna(lo) else [f"{100 * lo:.1f}–{100 * hi:.1f}"]))
        elif h == "mean":
            text.at[h, m] = "partial"
    return text


def plot_signer_grid(top1: pd.DataFrame, text: pd.DataFrame, worst: list[tuple[int, int]],
                     title: str) -> bytes:
    """Heatmap of top-1 (%) per signer (rows) and arm (columns), every cell annotated with
    its value and interval; each arm's worst hold-out is outlined."""
    n_rows, n_cols = top1.shape
    fig = _figure(min(max(5.5, 0.95 * n_cols + 2.5), 30), 0.6 * n_rows + 2.4)
    ax = fig.subplots()
    low = np.nanmin(top1.to_numpy(float)) if top1.notna().any().any() else 0.0
    sns.heatmap(top1, annot=text, fmt="", cmap="RdYlGn", vmin=max(0.0, 10 * np.floor(low / 10)),
                vmax=100, linewidths=0.5, linecolor="white", ax=ax,
                annot_kws={"fontsize": 6.5}, cbar_kws={"label": "top-1 (%)", "shrink": 0.8})
    for r, c in worst:
        ax.add_patch(Rectangle((c, r), 1, 1, fill=False, edgecolor="black", lw=2.5))
    ax.axhline(n_rows - len(GRID_ROWS), color="black", lw=1.5)
    ax.set(xlabel="model (legend: variants.csv)", ylabel="hold-out signer", title=title)
    ax.set_xticks(np.arange(n_cols) + 0.5, top1.columns, rotation=40 if n_cols > 4 else 0,
                  ha="right" if n_cols > 4 else "center", fontsize=8)
    ax.tick_params(axis="y", labelrotation=0)
    return _png(fig)


def plot_signers(means: pd.DataFrame, seeds: pd.DataFrame, colours: dict) -> bytes:
    """Top-1 per hold-out signer: a marker per arm (mean over seeds) and its seeds as faint
    points beside it. ``means``/``seeds`` have columns holdout, model, top1."""
    signers = list(dict.fromkeys(means.holdout))
    models = list(dict.fromkeys(means.model))
    markers = dict(zip(models, itertools.cycle("osD^vP*Xhp<>")))
    fig = _figure(max(6.5, 0.11 * len(models) * len(signers) + 4), 4.8)
    ax = fig.subplots()
    width = 0.8 / max(len(models), 1)
    for i, m in enumerate(models):
        def x(h, i=i):
            return [signers.index(v) - 0.4 + width * (i + 0.5) for v in h]
        sd = seeds[seeds.model == m]
        ax.scatter(x(sd.holdout), sd.top1 * 100, s=10, color=colours[m], alpha=0.3, lw=0)
        md = means[means.model == m]
        ax.scatter(x(md.holdout), md.top1 * 100, s=30, color=colours[m], marker=markers[m],
                   edgecolor="black", lw=0.4, label=m, zorder=3)
    ax.set_xticks(range(len(signers)), signers, rotation=30 if len(signers) > 6 else 0)
    ax.set(xlabel="hold-out signer", ylabel="top-1 (%)", title="Top-1 per hold-out signer")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(title="model (mean over seeds;\nfaint dots: single seeds)", fontsize=7,
              bbox_to_anchor=(1.01, 1), loc="upper left")
    return _png(fig)


def plot_top1(arms: pd.DataFrame, colours: dict) -> bytes:
    """Held-out mean top-1 per arm with its t-interval over signers; partial arms hollow,
    their coverage in the tick label."""
    fig = _figure(max(6.0, 0.5 * len(arms) + 2.5), 4.8)
    ax = fig.subplots()
    for i, r in enumerate(arms.itertuples()):
        err = [[r.mean_top1 - r.mean_ci_low], [r.mean_ci_high - r.mean_top1]]
        ax.errorbar(i, r.mean_top1 * 100, yerr=np.nan_to_num(np.array(err) * 100), fmt="o",
                    capsize=4, color=colours[r.model], ms=7,
                    mfc=colours[r.model] if r.full_coverage else "white")
    ticks = [m if cov == "all" else f"{m} ({cov})" for m, cov in zip(arms.model, arms.coverage)]
    ax.set_xticks(range(len(arms)), ticks, rotation=45, ha="right", fontsize=8)
    ax.set(ylabel="top-1 (%): mean over signers, 95 % t-interval",
           title="Held-out top-1 per model (hollow: not every signer)")
    ax.grid(axis="y", alpha=0.3)
    return _png(fig)


def plot_size(arms: pd.DataFrame, colours: dict) -> bytes:
    """Held-out top-1 against size at their true values, every arm named; hollow markers are
    float32 weights (the baseline has no .tflite)."""
    fig = _figure(8.5, 5.2)
    ax = fig.subplots()
    for r in arms.itertuples():
        err = [[r.mean_top1 - r.mean_ci_low], [r.mean_ci_high - r.mean_top1]]
        ax.errorbar(r.size_mb, r.mean_top1 * 100, yerr=np.nan_to_num(np.array(err) * 100),
                    fmt="o", color=colours[r.model], capsize=3, ms=6, alpha=0.9,
                    mfc="white" if r.size_source != "tflite" else colours[r.model])
    ax.set_xscale("log")
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_formatter(ScalarFormatter())
    ax.tick_params(axis="x", which="both", labelsize=7)
    _name_points(ax, list(arms.size_mb), list(arms.mean_top1 * 100), list(arms.model),
                 [colours[m] for m in arms.model])
    ax.set(xlabel="size (MB, log): .tflite file; hollow = float32 weights (no .tflite)",
           ylabel="top-1 (%): mean over signers, 95 % t-interval", title="Accuracy vs model size")
    ax.grid(alpha=0.3, which="both")
    return _png(fig)


def plot_frontier(arms: pd.DataFrame, colours: dict, verdict: str) -> bytes:
    """Held-out top-1 (with its t-interval) against size and latency for every arm the verdict
    chose among, each named; hollow: dominated, the star: the verdict."""
    fig = _figure(14, 5.6)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, cost, label in zip(axes, ("size_mb", "latency_ms_p50"),
                               (".tflite size (MB, log)", "latency p50 (ms, one thread, log)")):
        d = arms[arms[cost].notna() & arms.mean_top1.notna()]
        for r in d.itertuples():
            err = [[r.mean_top1 - r.mean_ci_low], [r.mean_ci_high - r.mean_top1]]
            c = colours[r.model]
            ax.errorbar(getattr(r, cost), r.mean_top1 * 100, capsize=3, color=c, lw=1,
                        yerr=np.nan_to_num(np.array(err) * 100), ms=13 if r.model == verdict
                        else 7, fmt="*" if r.model == verdict else "o",
                        mfc="white" if r.dominated else c, zorder=3)
        ax.set_xscale("log")
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(ScalarFormatter())
        ax.tick_params(axis="x", which="both", labelsize=7)
        ax.set(xlabel=label)
        ax.grid(alpha=0.3, which="both")
        _name_points(ax, list(d[cost]), list(d.mean_top1 * 100), list(d.model),
                     [colours[m] for m in d.model], bold=verdict)
    axes[0].set_ylabel("held-out top-1 (%): mean over signers, 95 % t-interval")
    handles = [Line2D([], [], color="0.3", marker="*", ms=12, ls="", label="the verdict"),
               Line2D([], [], color="0.3", marker="o", mfc="white", ls="",
                      label="dominated: another arm has no lower inner-val\naccuracy, "
                            "is no larger and no slower")]
    axes[1].legend(handles=handles, fontsize=8, loc="lower right")
    fig.suptitle("Complete arms that ship a .tflite: accuracy against cost")
    return _png(fig)


FRONTIER_MAX = 12  # more arms than this crowd a cost plane: they are ranked in rows instead


def plot_ranked(arms: pd.DataFrame, colours: dict, verdict: str) -> bytes:
    """The frontier of many arms as rows, in the rule's order: each row names the arm's cost,
    its marker is the held-out top-1 with its t-interval; hollow: dominated, star: verdict."""
    d = by_rule(arms)
    fig = _figure(10, 0.26 * len(d) + 1.4)
    ax = fig.subplots()
    for y, r in enumerate(d.itertuples()):
        err = [[r.mean_top1 - r.mean_ci_low], [r.mean_ci_high - r.mean_top1]]
        c = colours[r.model]
        ax.errorbar(r.mean_top1 * 100, y, xerr=np.nan_to_num(np.array(err) * 100), capsize=2,
                    color=c, lw=1, fmt="*" if r.model == verdict else "o",
                    ms=11 if r.model == verdict else 5, mfc="white" if r.dominated else c)
    ax.set_yticks(range(len(d)), [
        f"{m}  ·  inner {100 * i:.1f} %  ·  {mb:.2f} MB  ·  {ms:.2f} ms"
        for m, i, mb, ms in zip(d.model, d.inner_val_accuracy, d.size_mb, d.latency_ms_p50)],
        fontsize=7)
    for tick, model in zip(ax.get_yticklabels(), d.model):
        tick.set_fontweight("bold" if model == verdict else "normal")
    ax.invert_yaxis()
    ax.set(xlabel="held-out top-1 (%): mean over signers, 95 % t-interval",
           title="Arms that ship a .tflite, in the verdict rule's order (inner-validation "
                 "accuracy, then size, then latency p50)")
    ax.grid(axis="x", alpha=0.3)
    return _png(fig)


def draw(s: Summary) -> list[Picture]:
    """Every PNG of the report: the signer grid, charts, the frontier, then each arm's
    confusion matrix summed over hold-outs and seeds."""
    out = []
    colours = palette(list(s.arms.model))
    if not s.signers.empty:
        out += _signer_grids(s)
        per = s.signers[~s.signers.holdout.isin(GRID_ROWS)]
        out.append(Picture("signers_dots.png", "Top-1 per hold-out signer: one marker per "
                           "model, faint dots are single seeds",
                           plot_signers(per, s.rows[s.rows.ok], colours), "charts"))
    arms = s.arms[s.arms.mean_top1.notna()]
    if not arms.empty:
        out.append(Picture("top1.png", "Held-out top-1 per model: mean over signers, 95 % "
                           "t-interval over signers", plot_top1(arms, colours), "charts"))
    sized = arms[arms.size_mb.notna()]
    if not sized.empty:
        out.append(Picture("accuracy_vs_size.png", "Held-out top-1 vs model size, every model "
                           "at its true size", plot_size(sized, colours), "charts"))
    front = arms[arms.complete & (arms.role == "candidate")]
    verdict = s.verdict.get("model") or ""
    if 0 < len(front) <= FRONTIER_MAX:
        out.append(Picture("frontier.png", "Accuracy–cost frontier of the arms the verdict "
                           "chose among; hollow: dominated; star: the verdict",
                           plot_frontier(front, colours, verdict), "frontier"))
    elif len(front):
        out.append(Picture("frontier.png", f"The {len(front)} arms the verdict chose among, "
                           "ranked by its rule, each row naming its inner-validation accuracy, "
                           "size and latency; hollow: dominated; star: the verdict",
                           plot_ranked(front, colours, verdict), "frontier"))
    for c in s.confusion[s.confusion.holdout == ALL].itertuples():
        title = f"{c.model} — all holdouts"
        sums = (f"sums {c.n_clips} test predictions: {c.n_holdouts} hold-out"
                f"{'s' if c.n_holdouts > 1 else ''} × {c.n_seeds} seed"
                f"{'s' if c.n_seeds > 1 else ''}")
        out.append(Picture(f"confusion_{slug(c.model)}.png", f"{title}; {sums}",
                           plot_confusion(c.counts, c.share, c.names, title), "confusion"))
    return out


def _signer_grids(s: Summary) -> list[Picture]:
    """The signer grid: one, or one per variant when a sweep of many variants would put more
    arms side by side than a page can label (the 7-variant sweep has 56)."""
    caption = ("Top-1 (%) per hold-out signer and model with its 95 % Wilson interval on that "
               "signer's clips; mean: t-interval over signers; outlined: each model's worst "
               "signer")
    variant_of = dict(zip(s.arms.model, s.arms.variant))
    variants = list(dict.fromkeys(variant_of[m] for m in s.signers.model))
    if len(variants) < 2 or s.signers.model.nunique() <= GRID_MAX_ARMS:
        return [Picture("signers.png", caption, _grid_png(s, s.signers, ""), "grid")]
    return [Picture(f"signers_{slug(v)}.png", f"{v}: {caption}",
                    _grid_png(s, s.signers[s.signers.model.map(variant_of) == v], v), "grid")
            for v in variants]


def _grid_png(s: Summary, signers: pd.DataFrame, variant: str) -> bytes:
    g = signer_grid(signers)
    cov = dict(zip(s.arms.model, s.arms.coverage))
    top1 = (g["top1"] * 100).rename(columns=lambda m: m if cov[m] == "all"
                                    else f"{m} ({cov[m]})")
    title = f"{', '.join(s.sweeps)}{f' — {variant}' if variant else ''}: top-1 per signer"
    return plot_signer_grid(top1, _grid_text(g), worst_cells(g), title)
