"""The model to ship, chosen by ``VERDICT_RULE`` (``choose``) from inner-validation figures only,
among arms that cover every hold-out and seed; a held-out score never chooses. Also how
surely: the verdict variant's paired inner-validation lead over each other variant."""

from __future__ import annotations

import numpy as np
import pandas as pd

from signbart.cells import natural
from signbart.signerstats import CI_METHOD, paired_test

TIE = 0.005  # inner-validation accuracies this close to the best are tied
VERDICT_RULE = (
    "Among the arms that ship a .tflite (SignBART or ensemble) with a row for every hold-out "
    "and seed, ship the one with the highest mean inner-validation accuracy; arms within "
    f"{TIE:g} of it are tied, and among tied arms the smallest .tflite ships, then the fastest, "
    "then the higher inner-validation accuracy, then the first label.")


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


def make_verdict(arms: pd.DataFrame, per: pd.DataFrame, paired: pd.DataFrame,
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
