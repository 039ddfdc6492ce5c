"""Every number of a LOSO report, computed from the rows ``signbart.report`` accepted:
``summarize`` assembles the tables (``tables``), the per-signer statistics and paired tests
(``signerstats``), the verdict (``verdict``) and figures from outside the sweep
(``published``) into one ``Summary``. Failed, missing and duplicate cells are listed, never
averaged as zero.
"""

from __future__ import annotations

import dataclasses
import logging

import pandas as pd

from signbart.cells import GROUP, Audit
from signbart.published import beside_published, with_idle_latency
from signbart.signerstats import paired_tests, per_signer, signer_table
from signbart.tables import (
    ablation_table,
    arms_table,
    confusion_table,
    dedupe,
    failures_table,
    glosses,
    inner_table,
    labels,
    per_class_table,
    per_holdout_table,
    provenance_table,
    search_table,
    summary_table,
)
from signbart.verdict import choose, inner_margins, make_verdict

log = logging.getLogger(__name__)


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
    rows, duplicates = dedupe(raw)
    rows = rows.assign(ok=(rows.status == "ok") & rows.top1.notna())
    summary = with_idle_latency(summary_table(rows, rows[rows.ok]), idle_latency)
    label = dict(zip(map(tuple, summary[GROUP].to_numpy()), labels(summary)))
    rows = rows.assign(model=[label.get(tuple(k), "") for k in rows[GROUP].to_numpy()])
    ok = rows[rows.ok]
    summary.insert(0, "model", [label[tuple(k)] for k in summary[GROUP].to_numpy()])
    per = per_signer(ok)
    arms = arms_table(rows, ok, per, summary, audit)
    summary = summary.merge(arms[["model", "mean_ci_low", "mean_ci_high"]].rename(
        columns={"mean_ci_low": "top1_ci_low", "mean_ci_high": "top1_ci_high"}), on="model")
    model, candidates = choose(arms)
    inner = inner_table(ok)
    margins = inner_margins(inner, arms.set_index("model").variant.get(model) if model else None)
    paired = paired_tests(ok, arms, model)
    gloss = glosses(rows)
    s = Summary(rows=rows, audit=audit, arms=arms, summary=summary,
                per_holdout=per_holdout_table(rows, ok), per_class=per_class_table(ok, gloss),
                confusion=confusion_table(ok, gloss), failures=failures_table(rows),
                duplicates=duplicates, ablation=ablation_table(ok), search=search_table(rows),
                inner=inner, provenance=provenance_table(raw, rows, audit),
                signers=signer_table(per, arms), paired=paired,
                verdict=make_verdict(arms, per, paired, model, candidates, margins),
                margins=margins,
                published=beside_published(arms, published[1]) if published else pd.DataFrame(),
                published_source=published[0] if published else "")
    for what, table in (("failed", s.failures), ("missing", audit.missing),
                        ("rejected", audit.rejected), ("duplicate rows of", s.duplicates)):
        if len(table):
            log.warning("report: %d %s cells", len(table), what)
    return s
