"""Two sweeps over the same folds, paired cell by cell: does a change help?

    signbart compare reports/mlr511/rows/mlr511-nested ray_results/mlr511-smoothing

A screen changes one thing and re-runs some of a published grid's folds. Its cells pair with
the published ones by (hold-out, seed, quant, model kind), and a pair is only fair if both
cells chose on the same inner signers: the comparison refuses otherwise. Per arm, each side's
inner-validation accuracy and held-out top-1, and B - A paired by signer (each signer's seeds
averaged first; t-interval over signers). Choose by the inner difference; the held-out one
is the measurement, never the reason.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from signbart.errors import UserError
from signbart.report import audit, load
from signbart.signerstats import paired_test

KEY = ["holdout", "seed", "quant", "model_kind"]
EQUAL = 1e-9   # two runs' top-1 of the same clips: closer than this is the same score
COLUMNS = ["quant", "model_kind", "signers", "cells", "inner_a", "inner_b", "inner_delta",
           "inner_low", "inner_high", "held_out_a", "held_out_b", "held_out_delta",
           "held_out_low", "held_out_high", "signers_better", "signers_worse"]


def _side(inp: str, variant: str | None) -> pd.DataFrame:
    """The ok rows of one input that belong to their grid (of ``variant`` if given), one per
    cell."""
    ok, _ = audit(load([inp]))
    ok = ok[ok.status == "ok"]
    if variant is not None:
        if variant not in set(ok.variant):
            raise UserError(f"{inp}: no variant {variant!r} (it has {sorted(set(ok.variant))})")
        ok = ok[ok.variant == variant]
    dup = ok[ok.duplicated(KEY, keep=False)]
    if len(dup):
        r = dup.iloc[0]
        raise UserError(f"{inp}: {len(dup)} rows share (holdout {r.holdout}, seed {r.seed}, "
                        f"{r.quant}, {r.model_kind}) across variants {sorted(set(dup.variant))}:"
                        " name one variant (--a-variant, --b-variant); ablations are not compared")
    return ok.set_index(KEY)


def _inner_signers(a: pd.DataFrame, b: pd.DataFrame, both) -> None:
    def signers(side, key):
        v = side.at[key, "val_signers"]
        return None if v is None else list(v)

    for key in both:
        va, vb = signers(a, key), signers(b, key)
        if va != vb:
            raise UserError(f"holdout {key[0]}, seed {key[1]}, {key[2]} {key[3]}: inner signers "
                            f"{va} against {vb}; a pair is only fair on the same inner signers")


def _by_signer(side: pd.DataFrame, keys, field: str) -> pd.Series:
    return side.loc[keys, field].astype(float).groupby(level="holdout").mean()


def compare(a_input: str, b_input: str, a_variant: str | None = None,
            b_variant: str | None = None) -> pd.DataFrame:
    """One row per arm (quant, model kind) the two inputs share, B against A."""
    a, b = _side(a_input, a_variant), _side(b_input, b_variant)
    both = a.index.intersection(b.index)
    if not len(both):
        raise UserError(f"{a_input} and {b_input} share no cell (hold-out, seed, quant, model "
                        "kind)")
    _inner_signers(a, b, both)
    rows = []
    arms = both.droplevel(["holdout", "seed"]).unique()
    for quant, kind in arms:
        keys = both[(both.get_level_values("quant") == quant)
                    & (both.get_level_values("model_kind") == kind)]
        out = {"quant": quant, "model_kind": kind,
               "signers": keys.get_level_values("holdout").nunique(), "cells": len(keys)}
        for field, name in (("inner_val_accuracy", "inner"), ("top1", "held_out")):
            sa, sb = _by_signer(a, keys, field), _by_signer(b, keys, field)
            diff = (sb - sa).dropna()
            test = paired_test(diff.to_numpy()) if len(diff) else {}
            out.update({f"{name}_a": sa.mean(), f"{name}_b": sb.mean(),
                        f"{name}_delta": test.get("delta_mean", np.nan),
                        f"{name}_low": test.get("ci_low", np.nan),
                        f"{name}_high": test.get("ci_high", np.nan)})
            if name == "held_out":
                out.update(signers_better=int((diff > EQUAL).sum()),
                           signers_worse=int((diff < -EQUAL).sum()))
        rows.append(out)
    return pd.DataFrame(rows, columns=COLUMNS)


def to_markdown(table: pd.DataFrame, a_input: str, b_input: str) -> str:
    """The table as a researcher reads it: percentages, intervals in brackets."""
    def pct(x):
        return "–" if pd.isna(x) else f"{100 * x:.1f}"

    def signed(d, lo, hi):
        return "–" if pd.isna(d) else f"{100 * d:+.1f} [{100 * lo:+.1f}, {100 * hi:+.1f}]"

    lines = [f"A = {a_input}", f"B = {b_input}", "",
             "| arm | signers | inner A | inner B | inner B − A | held-out A | held-out B | "
             "held-out B − A | signers better / worse |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in table.itertuples():
        lines.append(
            f"| {r.quant} {r.model_kind} | {r.signers} | {pct(r.inner_a)} | {pct(r.inner_b)} | "
            f"{signed(r.inner_delta, r.inner_low, r.inner_high)} | {pct(r.held_out_a)} | "
            f"{pct(r.held_out_b)} | "
            f"{signed(r.held_out_delta, r.held_out_low, r.held_out_high)} | "
            f"{r.signers_better} / {r.signers_worse} |")
    return "\n".join(lines) + "\n"
