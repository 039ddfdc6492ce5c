"""The report against its grid (sweep.json), its verdict, and the rows that travel with it."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from report_rows import ARMS, VARIANTS, write_sweep
from scipy import stats

from signbart import cli, plots, report, verdict
from signbart.errors import UserError

SIGNERS = ["u1", "u2", "u3"]
VARIANT = "arabic-asl-65kpts-framed-light"
SMALL = {("fp32", "signbart"): (0.00, 0.000, 2_870_000, 0.39),
         ("ptq", "signbart"): (-0.01, 0.000, 874_000, 0.27),
         ("fp32", "baseline"): (-0.05, -0.04, None, None)}


def sweep(root: Path, name: str = "sw", **kw) -> Path:
    kw = {"variants": (VARIANT,), "arms": SMALL, "confusions": False, **kw}
    return write_sweep(root, name, SIGNERS, **kw)


def rewrite(src: Path, dst: Path, **columns) -> None:
    """Copy a row file with some columns set to one value."""
    t = pq.read_table(src)
    for name, value in columns.items():
        t = t.set_column(t.schema.get_field_index(name), name, pa.array([value] * len(t)))
    dst.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(t, dst)


def build(inputs, out: Path, **kw) -> report.ReportPaths:
    return report.build_report([str(i) for i in inputs], str(out), formats=("md", "csv"), **kw)


def test_a_row_file_from_another_sweep_is_rejected_not_pooled(tmp_path):
    mine, other = sweep(tmp_path), sweep(tmp_path, "other")
    stray = other / "results" / f"u1-s42-{VARIANT}.parquet"
    shutil.copy(stray, mine / "results" / "copied.parquet")
    s = report.read([str(mine)])
    assert s.audit.rejected.to_dict("records") == [
        {"file": "sw/results/copied.parquet", "trial_id": f"u1-s42-{VARIANT}",
         "reason": "a row of sweep 'other' in the folder of sweep 'sw'", "rows": 3}]
    assert set(s.rows.sweep) == {"sw"} and len(s.rows) == 9 and s.duplicates.empty
    md = Path(build([mine], tmp_path / "out").markdown).read_text()
    assert md.index("Rejected: 3 rows in 1 files") < md.index("Contents:")


def test_a_cell_whose_settings_differ_is_rejected(tmp_path):
    mine = sweep(tmp_path)
    f = mine / "results" / f"u2-s42-{VARIANT}.parquet"
    rewrite(f, f, config_hash="edited")
    s = report.read([str(mine)])
    r = s.audit.rejected
    assert list(r.trial_id) == [f"u2-s42-{VARIANT}"] and r.reason[0].startswith(
        "config_hash edited is not the grid's h-u2-s42-")
    assert sorted(set(s.rows.holdout)) == ["u1", "u3"]
    assert len(s.missing) == 3 and set(s.missing.holdout) == {"u2"}  # now missing, not mixed


def test_an_unfinished_sweep_lists_its_missing_trials_cells(tmp_path):
    mine = sweep(tmp_path, done={f"u1-s42-{VARIANT}"})
    s = report.read([str(mine)])
    m = s.missing
    assert sorted(set(m.trial_id)) == [f"u2-s42-{VARIANT}", f"u3-s42-{VARIANT}"]
    assert len(m) == 2 * len(SMALL)
    assert s.audit.grids.to_dict("records")[0] | {"folder": ""} == {
        "sweep": "sw", "folder": "", "grid": "known", "trials": 3, "trials_with_rows": 1,
        "missing_cells": 6}
    assert s.verdict["model"] is None  # nothing covers every signer
    md = Path(build([mine], tmp_path / "out").markdown).read_text()
    assert "Unfinished: sweep sw has rows for 1 of its 3 trials; 6 cells" in md
    assert len(pd.read_csv(tmp_path / "out" / "missing.csv")) == 6


def test_a_missing_ablation_arm_is_listed_beside_its_cells_other_arm(tmp_path):
    root = tmp_path / "abl"
    sweep(root, "a", ablation="none")
    sweep(root, "b", ablation="reference")
    one = json.loads((root / "a" / "sweep.json").read_text())
    two = json.loads((root / "b" / "sweep.json").read_text())
    folder = tmp_path / "ablation"
    for src in (root / "a", root / "b"):
        for f in (src / "results").glob("*.parquet"):
            rewrite(f, folder / "results" / f.name, sweep="ablation")
    (folder / "results" / f"u3-s42-{VARIANT}-reference.parquet").unlink()
    (folder / "sweep.json").write_text(json.dumps(
        {"format": 2, "name": "ablation", "hash": "x", "spec": {},
         "cells": one["cells"] + two["cells"]}))
    s = report.read([str(folder)])
    assert set(zip(s.missing.trial_id, s.missing.ablation)) == {
        (f"u3-s42-{VARIANT}-reference", "reference")}
    assert len(s.missing) == len(SMALL)
    cov = s.arms.set_index("model").coverage
    assert cov["fp32 [none]"] == "all" and cov["fp32 [reference]"] == "2/3 signers"


def test_an_old_sweep_json_says_the_grid_is_unknown(tmp_path):
    mine = sweep(tmp_path)
    (mine / "sweep.json").write_text(json.dumps({"hash": "h", "spec": {}}))
    s = report.read([str(mine)])
    assert s.missing.empty and s.audit.rejected.empty
    md = Path(build([mine], tmp_path / "out").markdown).read_text()
    assert ("Grid unknown for sw (its sweep.json records no cells (an older format)): its "
            "missing cells cannot be listed") in md


VERDICT_FIELDS = {"model", "rule", "inner_val_accuracy", "mean", "mean_ci", "ci_method",
                  "n_signers", "n_seeds", "per_signer", "baseline_per_signer", "worst_signer",
                  "worst", "vs_baseline", "vs_baseline_ci", "size_mb", "latency_ms",
                  "candidates"}


@pytest.fixture(scope="module")
def two_seeds(tmp_path_factory) -> Path:
    """Two variants × 3 signers × 2 seeds (fp32, ptq, qat, ensembles, keep-best, baseline),
    and a 1-signer arm from another sweep."""
    root = tmp_path_factory.mktemp("verdict")
    write_sweep(root, "nested", SIGNERS, seeds=(42, 43), confusions=False)
    write_sweep(root, "extra", SIGNERS[:1], variants=("arabic-asl-65kpts-framed",),
                arms={("fp32", "signbart"): (0.15, 0.15, 100_000, 0.1)}, confusions=False)
    return root


def test_verdict_ships_the_smallest_tied_complete_arm_by_inner_validation(two_seeds):
    s = report.read([str(two_seeds / "nested"), str(two_seeds / "extra")])
    v, arms = s.verdict, s.arms.set_index("model")
    assert VERDICT_FIELDS <= set(v)
    # the 1-signer arm has the best inner accuracy and size but is partial: never a candidate
    assert arms.loc["framed fp32", "coverage"] == "1/3 signers, 1/2 seeds"
    assert "framed fp32" not in {c["model"] for c in v["candidates"]}
    # inner: ensembles best (+0.01); anchored and light differ by 0.003 (tied); ptq ens smallest
    assert v["model"] == "anchored ptq ens" and v["rule"].startswith("Among the arms that ship")
    assert set(v["tied"]) == {"anchored fp32 ens", "anchored ptq ens", "light fp32 ens",
                              "light ptq ens"}
    assert {c["model"] for c in v["candidates"]} == set(
        arms.index[(arms.role == "candidate") & arms.complete])
    assert not {"anchored fp32 base", "anchored fp32 keepbest"} & {
        c["model"] for c in v["candidates"]}
    best = max(c["inner_val_accuracy"] for c in v["candidates"])
    assert v["inner_val_accuracy"] >= best - 0.005
    assert not arms.loc[v["model"], "dominated"]
    per = pd.Series(v["per_signer"])
    assert list(per.index) == SIGNERS and (v["n_signers"], v["n_seeds"]) == (3, 2)
    lo, hi = stats.t.interval(0.95, 2, loc=per.mean(), scale=stats.sem(per))
    assert v["mean"] == pytest.approx(per.mean()) and v["mean_ci"] == pytest.approx([lo, hi])
    diff = per - pd.Series(v["baseline_per_signer"])
    assert v["vs_baseline"] == pytest.approx(diff.mean())
    assert v["baseline"] == "anchored fp32 base" and v["worst_signer"] == "u1"
    seeds = s.rows[s.rows.model == v["model"]].groupby("seed").top1.mean()
    assert v["seed_std"] == pytest.approx(np.std(seeds, ddof=1))


def test_the_verdict_says_how_surely_inner_validation_prefers_its_variant(two_seeds, tmp_path):
    s = report.read([str(two_seeds / "nested"), str(two_seeds / "extra")])
    m = s.margins.set_index("versus")
    # light trails anchored by 0.003 on every hold-out; the extra variant has one hold-out
    assert list(m.index) == ["arabic-asl-65kpts-framed", "arabic-asl-65kpts-framed-light"]
    assert set(m.variant) == {"arabic-asl-65kpts-framed-anchored"}
    light = m.loc["arabic-asl-65kpts-framed-light"]
    assert (light.n_holdouts, light.delta_mean, light.distinguishable) == (3, pytest.approx(0.003),
                                                                            True)
    extra = m.loc["arabic-asl-65kpts-framed"]
    assert extra.n_holdouts == 1 and extra.delta_mean == pytest.approx(-0.15)
    assert not extra.distinguishable  # one hold-out: no interval
    v = s.verdict
    assert (v["inner_margins"], v["inner_margins_distinguishable"]) == (2, 1)
    assert v["inner_margin_min"] == pytest.approx(-0.15)
    md = Path(build([two_seeds / "nested", two_seeds / "extra"], tmp_path / "rep").markdown)
    assert ("- Its variant's inner-validation lead over each of the 2 other variants: -15.0 to "
            "+0.3 points, paired by hold-out; 1 of those 95% t-intervals") in md.read_text()
    assert len(pd.read_csv(tmp_path / "rep" / "inner_margins.csv")) == 2
    one = report.read([str(sweep(tmp_path, "one"))])  # one variant: nothing to compare
    assert one.margins.empty and "inner_margins" not in one.verdict


def test_a_crowded_frontier_is_ranked_in_rows_by_the_verdicts_rule(tmp_path):
    three = write_sweep(tmp_path, "three", SIGNERS, variants=VARIANTS + (
        "arabic-asl-65kpts-framed",), confusions=False)
    s = report.read([str(three)])
    front = s.arms[s.arms.complete & (s.arms.role == "candidate")]
    assert len(front) == 15 > plots.FRONTIER_MAX
    order = list(verdict.by_rule(front).model)
    assert order[0] == s.verdict["model"]
    assert set(order[:len(s.verdict["tied"])]) == set(s.verdict["tied"])
    [frontier] = [p for p in plots.draw(s) if p.path == "frontier.png"]
    assert frontier.title.startswith("The 15 arms the verdict chose among, ranked by its rule")
    assert frontier.png[:8] == b"\x89PNG\r\n\x1a\n"


def test_dominance_never_contradicts_the_verdict(two_seeds):
    arms = report.read([str(two_seeds / "nested")]).arms.set_index("model")
    assert arms.loc["anchored fp32", "dominated_by"] == "anchored ptq"  # same inner, smaller
    assert arms.loc["light ptq ens", "dominated_by"] == "anchored ptq ens"  # inner 0.003 up
    assert arms.loc["anchored fp32 base", "dominated_by"] == ""  # reference: never judged


def test_rows_travel_with_the_report_and_rebuild_it(two_seeds, tmp_path):
    out = tmp_path / "rep"
    first = build([two_seeds / "nested", two_seeds / "extra"], out)
    verdict = json.loads(Path(first.verdict).read_text())
    command = report.rebuild_command(str(out), ["extra", "nested"], ("md", "csv"))
    assert f"`{command}`" in Path(first.markdown).read_text()
    assert sorted(p.name for p in (out / "rows" / "nested" / "results").iterdir()) == sorted(
        p.name for p in (two_seeds / "nested" / "results").iterdir())
    tables = {n: Path(p).read_text() for n, p in first.csv.items()}
    argv = command.split()[1:]
    assert cli.main(argv) == 0  # the printed command, from the rows beside the report
    assert (out / "rows" / "nested" / "sweep.json").is_file()
    assert {n: (out / f"{n}.csv").read_text() for n in tables} == tables
    assert json.loads((out / "verdict.json").read_text()) == verdict


def test_out_holding_another_report_needs_overwrite_which_removes_its_files(two_seeds,
                                                                             tmp_path):
    out = tmp_path / "rep"
    build([two_seeds / "nested", two_seeds / "extra"], out)
    (out / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"rep: holds a report of extra, nested, not of these "
                                        "inputs; pass --overwrite"):
        build([two_seeds / "extra"], out)
    build([two_seeds / "extra"], out, overwrite=True)
    assert not list((out / "rows").rglob("*nested*"))  # the old report's rows: removed
    assert (out / "notes.txt").read_text() == "mine"  # not the old report's: left alone
    written = json.loads((out / "report.json").read_text())["files"]
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()
                  and p.name != "notes.txt") == sorted(written)


def test_cli_refuses_another_reports_folder_in_one_sentence(tmp_path, capsys):
    one, two = sweep(tmp_path, "one"), sweep(tmp_path, "two")
    out = str(tmp_path / "out")
    assert cli.main(["report", str(one), "--out", out, "--format", "csv"]) == 0
    capsys.readouterr()
    assert cli.main(["report", str(two), "--out", out, "--format", "csv"]) == 2
    err = capsys.readouterr().err
    assert err == (f"signbart report: error: {out}: holds a report of one, not of these inputs; "
                   "pass --overwrite to replace it (its files are removed)\n")
    assert cli.main(["report", str(two), "--out", out, "--format", "csv", "--overwrite"]) == 0
    assert json.loads((tmp_path / "out" / "report.json").read_text())["sweeps"] == [
        ["two", "hash-two"]]


def test_out_may_be_a_uri_and_rebuild_from_its_rows(tmp_path, monkeypatch):
    """Outputs go through storage's URIs: no local folder named after the scheme."""
    monkeypatch.chdir(tmp_path)
    sweep(tmp_path)
    out = (tmp_path / "out").as_uri()
    first = report.build_report([(tmp_path / "sw").as_uri()], out, formats=("csv",))
    assert not list(tmp_path.glob("file*")) and (tmp_path / "out" / "verdict.json").is_file()
    assert first.rows[-1] == f"{out}/rows/sw/sweep.json"
    again = report.build_report([f"{out}/rows/sw"], out, formats=("csv",))
    assert (Path(again.csv["variants"][len("file://"):]).read_text()
            == Path(first.csv["variants"][len("file://"):]).read_text())


@pytest.mark.slow
def test_a_9_signer_15_arm_report_fits_in_1_5_mb(tmp_path):
    """The shape of reports/mlr511: 2 variants × 7 arms on 9 signers, 10 classes, and a
    4-signer arm from a second sweep."""
    signers = [f"user{i:02d}" for i in range(1, 10)]
    write_sweep(tmp_path, "nested", signers)
    write_sweep(tmp_path, "published", signers[:4], variants=("arabic-asl-65kpts-framed",),
                arms={("fp32", "signbart"): (0.0, 0.0, 2_860_000, 0.39)})
    paths = report.build_report([str(tmp_path / "nested"), str(tmp_path / "published")],
                                str(tmp_path / "out"))
    assert Path(paths.html).stat().st_size <= 1.5e6
    arms = pd.read_csv(tmp_path / "out" / "variants.csv").set_index("model")
    assert len(arms) == 15 and arms.at["framed fp32", "coverage"] == "4/9 signers"
    v = json.loads(Path(paths.verdict).read_text())
    assert not arms.at[v["model"], "dominated"] and v["n_signers"] == 9
    per = pd.Series(v["per_signer"])
    lo, hi = stats.t.interval(0.95, 8, loc=per.mean(), scale=stats.sem(per))
    assert v["mean_ci"][1] - v["mean_ci"][0] >= 0.9 * (hi - lo)
    page = Path(paths.html).read_text()
    assert page.count("<img") == 5 + 15  # grid, 3 charts, frontier; one matrix per model
    assert "framed fp32 (4/9 signers)" in page


def _latency_file(path: Path, models: list[dict]) -> Path:
    path.write_text(json.dumps({"models": models}))
    return path


def test_idle_latency_replaces_the_sweeps_decides_ties_and_travels_with_the_report(tmp_path):
    # ptq and qat tie on inner accuracy and size: the faster ships
    arms = {k: ARMS[k] for k in [("fp32", "signbart"), ("ptq", "signbart"),
                                 ("qat", "signbart"), ("fp32", "baseline")]}
    rows = sweep(tmp_path, arms=arms)
    assert build([rows], tmp_path / "busy").verdict and json.loads(
        (tmp_path / "busy" / "verdict.json").read_text())["model"] == "ptq"  # 0.27 < 0.28 ms
    idle = _latency_file(tmp_path / "lat.json", [
        {"variant": VARIANT, "quant": q, "model_kind": "signbart", "latency_ms_p50": p50,
         "latency_ms_p90": p50 * 1.2, "model_path": f"/x/{q}.tflite"}
        for q, p50 in (("ptq", 0.5), ("qat", 0.3))])
    out = tmp_path / "rep"
    paths = build([rows], out, latency=str(idle))
    v = json.loads(Path(paths.verdict).read_text())
    assert (v["model"], v["latency_ms"], v["latency_source"]) == ("qat", 0.3, "idle")
    table = pd.read_csv(out / "variants.csv").set_index("model")
    assert table.loc["ptq", ["latency_ms_p50", "latency_ms_p90"]].tolist() == \
        pytest.approx([0.5, 0.6])
    assert table.latency_source.fillna("").to_dict() == {
        "fp32": "sweep", "ptq": "idle", "qat": "idle", "fp32 base": ""}
    assert (out / "latency.json").read_bytes() == idle.read_bytes()
    command = report.rebuild_command(str(out), ["sw"], ("md", "csv"), latency=True)
    assert f"--latency {out}/latency.json" in command
    assert json.loads((out / "report.json").read_text())["rebuild"] == command
    before = (out / "variants.csv").read_text()
    assert cli.main(command.split()[1:]) == 0  # rebuilt from its own copy, into itself
    assert (out / "variants.csv").read_text() == before


def test_published_figures_sit_beside_each_signbart_arm_and_travel_with_the_report(tmp_path):
    rows = sweep(tmp_path)  # fp32 0.81/0.83/0.85, ptq 0.80/0.82/0.84; 0.39 and 0.27 ms
    claims = tmp_path / "pub.json"
    claims.write_text(json.dumps({"source": "ref README, 3 hold-outs", "figures": [
        {"quant": "fp32", "top1": [0.94, 0.96], "size_mb": 3.0, "speedup": 1},
        {"quant": "ptq", "variant": VARIANT, "top1": [0.70, 0.75], "speedup": [2, 3]}]}))
    out = tmp_path / "rep"
    build([rows], out, published=str(claims))
    table = pd.read_csv(out / "published.csv").set_index("model")
    assert list(table.index) == ["fp32", "ptq"]  # not the baseline: only SignBART arms
    assert table.against.to_dict() == {"fp32": "below", "ptq": "above"}
    assert table.at["ptq", "speedup"] == pytest.approx(0.39 / 0.27)
    assert table.at["fp32", "published_size_mb"] == 3.0
    assert table.loc["ptq", ["published_speedup_low", "published_speedup_high"]].tolist() == [2, 3]
    md = (out / "summary.md").read_text()
    assert "## Against published figures" in md and "Published: ref README, 3 hold-outs." in md
    assert "| 94.0–96.0 | below |" in md and "| 2–3× |" in md
    assert (out / "published.json").read_bytes() == claims.read_bytes()
    command = json.loads((out / "report.json").read_text())["rebuild"]
    assert command == report.rebuild_command(str(out), ["sw"], ("md", "csv"), published=True)
    assert f"--published {out}/published.json" in command
    before = (out / "published.csv").read_text()
    assert cli.main(command.split()[1:]) == 0
    assert (out / "published.csv").read_text() == before
    build([rows], tmp_path / "plain")
    assert not (tmp_path / "plain" / "published.csv").exists()
    assert "Against published" not in (tmp_path / "plain" / "summary.md").read_text()


SOURCE = "ref README, 3 hold-outs"
LAT = {"variant": VARIANT, "quant": "ptq", "model_kind": "signbart"}


@pytest.mark.parametrize("option, content, message", [
    ("latency", {"models": [{**LAT, "latency_ms_p50": 0.3}]},
     r"side.json: models\[0\].latency_ms_p90: expected a positive number of ms, got None"),
    ("latency", {"models": [{**LAT, "latency_ms_p50": float("nan"), "latency_ms_p90": 1.0}]},
     r"models\[0\].latency_ms_p50: expected a positive number"),
    ("latency", {"models": [{**LAT, "model_kind": None, "latency_ms_p50": 1.0,
                             "latency_ms_p90": 1.0}]},
     r"models\[0\].model_kind: expected a name, got None"),
    ("latency", {"models": [{**LAT, "variant": "arabic-asl-90kpts-framed",
                             "latency_ms_p50": 1.0, "latency_ms_p90": 1.0}]},
     r"side.json: times arabic-asl-90kpts-framed ptq signbart, which no row of these inputs is"),
    ("latency", {"figures": []}, r"side.json: not a latency file \(a JSON object with a 'models'"),
    ("published", {"source": SOURCE, "figures": [{"quant": "fp16", "top1": 0.9}]},
     r"side.json: figures\[0\].quant: expected one of fp32"),
    ("published", {"source": SOURCE, "figures": [{"quant": "ptq", "top1": [0.96, 0.94]}]},
     r"figures\[0\].top1: expected a number or a \[low, high\] pair, 0 < low <= high <= 1"),
    ("published", {"source": SOURCE, "figures": [{"quant": "ptq", "top1": 94}]},
     r"figures\[0\].top1: .* got 94"),
    ("published", {"source": SOURCE, "figures": [{"quant": "ptq", "top1": 0.9,
                                                  "speedup": float("nan")}]},
     r"figures\[0\].speedup"),
    ("published", {"source": SOURCE, "figures": [{"quant": "ptq", "top1": 0.9, "latency": 1}]},
     r"figures\[0\]: unknown field 'latency'"),
    ("published", {"source": SOURCE, "figures": [{"quant": "ptq", "top1": 0.9,
                                                  "variant": "arabic-asl-90kpts-framed"}]},
     r"figures\[0\] \(arabic-asl-90kpts-framed ptq\) is beside no SignBART arm of these"),
    ("published", {"source": " ", "figures": []}, r"side.json: source: say whose figures"),
])
def test_a_bad_or_foreign_side_file_is_one_sentence_and_writes_nothing(tmp_path, option, content,
                                                                       message):
    """--latency and --published files: a wrong field is named, and no report is begun."""
    rows = sweep(tmp_path)
    side = tmp_path / "side.json"
    side.write_text(json.dumps(content))
    with pytest.raises(UserError, match=message):
        build([rows], tmp_path / "rep", **{option: str(side)})
    assert not (tmp_path / "rep").exists()
    with pytest.raises(UserError, match=r"none.json: no such (latency file|file of published)"):
        build([rows], tmp_path / "rep", **{option: str(tmp_path / "none.json")})
