"""What a sweep run left in its storage, counted cell by cell: ``SweepSummary``, the text
``signbart sweep`` prints at the end and whose ``exit_code`` it returns."""

from __future__ import annotations

import collections
from dataclasses import dataclass, field

from signbart.config import (
    trial_id,
)
from signbart.pricing import estimate_text
from signbart.results import read_rows
from signbart.storage import (
    exists,
    rows_uri,
)
from signbart.sweepspec import Grid, SweepSpec
from signbart.trial import KEEPBEST, expected_rows


@dataclass(frozen=True)
class SweepSummary:
    """What a sweep run left in storage; ``exit_code`` is non-zero when any cell is not ok."""

    name: str
    path: str                    # <storage>/<name>
    trials: int
    cells: int                   # trials x quant modes (baseline rows counted apart)
    cells_ok: int = 0
    cells_failed: int = 0
    cells_missing: int = 0       # no row yet (interrupted: run again with --resume)
    baseline_ok: int = 0
    baseline_failed: int = 0
    skipped: int = 0             # trials already finished before this run
    errors: dict = field(default_factory=dict)   # trial_id -> error of a failed trial
    top1: dict = field(default_factory=dict)     # trial_id -> {quant or "baseline": top-1}
    grid: str = ""               # the axes, for humans
    estimate: dict | None = None  # dry run: measured epoch times and CPU-hours

    @property
    def dry_run(self) -> bool:
        return self.estimate is not None

    @property
    def ok(self) -> bool:
        return self.dry_run or not (self.cells_failed or self.cells_missing)

    @property
    def exit_code(self) -> int:
        return 0 if self.ok else 1

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        lines = [f"sweep {self.name}: {self.grid}", f"  storage: {self.path}"]
        if self.estimate is not None:
            return "\n".join(lines + estimate_text(self.estimate, self.skipped))
        lines.append(f"  cells: {self.cells_ok} ok, {self.cells_failed} failed, "
                     f"{self.cells_missing} missing of "
                     f"{self.cells}; baseline rows: {self.baseline_ok} ok, "
                     f"{self.baseline_failed} failed; {self.skipped} trial(s) already finished")
        for tid, scores in sorted(self.top1.items()):
            lines.append(f"  top-1 {tid}: " + ", ".join(f"{k} {v:.3f}" for k, v in scores.items()))
        for tid, err in sorted(self.errors.items()):
            first = (err or "").split("\n", 1)[0]
            lines.append(f"  FAILED {tid}: {first[:300]}")
        if self.cells_missing:
            lines.append("  unfinished: run the same command with --resume to continue")
        return "\n".join(lines)


def _kinds(spec: SweepSpec, grid: Grid) -> collections.Counter:
    """How many rows of each model kind one trial writes, as ``trial.expected_rows`` says
    (every trial of a grid writes the same kinds)."""
    return collections.Counter(kind for _, kind in expected_rows(grid.experiments(spec)[0]))


def _describe(spec: SweepSpec, grid: Grid, kinds: collections.Counter) -> str:
    n = len(grid.trials())
    axes = [f"{len(grid.holdouts)} holdout(s)", f"{len(grid.seeds)} seed(s)",
            f"{len(grid.variants)} variant(s)"] + ([f"{len(grid.ablations)} ablation(s)"]
                                                  if grid.ablations else [])
    extra = {"ensemble": "ensemble cells", KEEPBEST: "keep-best cells",
             "baseline": "baseline rows"}
    return (f"{' x '.join(axes)} = {n} trial(s) x {len(spec.quant)} quant mode(s) "
            f"({', '.join(spec.quant)}) = {n * kinds['signbart']} cells"
            + "".join(f" (+{n * kinds[k]} {what})" for k, what in extra.items() if kinds[k])
            + f"; {spec.resources.cpu:g} CPU/{spec.resources.gpu:g} GPU per trial, "
              f"{spec.retries} retries")


def summarize_run(spec: SweepSpec, grid: Grid, path: str, skipped: int, estimate=None
                  ) -> SweepSummary:
    """The grid's cells as its result files in ``path`` say (or, with ``estimate``, the
    dry run's price)."""
    counts = dict.fromkeys(("cells_ok", "cells_failed", "cells_missing", "baseline_ok",
                            "baseline_failed"), 0)
    errors, top1 = {}, {}
    trials = grid.trials()
    kinds = _kinds(spec, grid)
    per_trial = sum(kinds.values()) - kinds["baseline"]
    if estimate is None:
        for t in trials:
            tid = trial_id(**t)
            files = [u for u in (rows_uri(path, tid), rows_uri(path, tid, failed=True))
                     if exists(u)]
            rows = read_rows(files[:1]).to_pylist() if files else []
            whole = bool(files) and files[0].endswith(".failed.parquet")  # the trial itself
            models = [r for r in rows if r["model_kind"] != "baseline"]
            counts["cells_missing"] += per_trial - len(models)
            for r in rows:
                if r["status"] == "ok" and r["top1"] is not None:
                    top1.setdefault(tid, {})[r["quant"] if r["model_kind"] == "signbart"
                                             else r["model_kind"]] = r["top1"]
                key = "ok" if r["status"] == "ok" else "failed"
                counts[f"cells_{key}" if r["model_kind"] != "baseline" else f"baseline_{key}"] += 1
                if r["status"] != "ok" and r["model_kind"] != "baseline":
                    errors.setdefault(tid, r["error"] if whole else f"{r['quant']}: {r['error']}")
    return SweepSummary(name=spec.name, path=path, trials=len(trials),
                        cells=len(trials) * per_trial, skipped=skipped, errors=errors,
                        top1=top1, grid=_describe(spec, grid, kinds), estimate=estimate,
                        **counts)
