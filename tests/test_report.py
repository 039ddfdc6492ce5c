"""Reports built from hand-written result rows whose means, stds and sums are known."""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from PIL import Image

from signbart import report
from signbart.cells import ALL
from signbart.errors import UserError
from signbart.results import write_rows
from signbart.signerstats import t_interval

SETTING = "reference"  # the ablation arm of sweep s1 (augmentation ON); s2 is "none"
ARMS = {"s1": SETTING, "s2": "none"}  # the ablation arm each sweep's rows carry
ON = {"prob": 0.4, "flip": True, "hand_drop": 0.0}
OFF = {"prob": 0.0, "flip": False, "hand_drop": 0.0}
OLD, NEW = (dt.datetime(2024, 1, d, tzinfo=dt.UTC) for d in (1, 2))
# fp32 confusions of sweep s1, labels (c0, c1); (B, 1) is stored with the labels reversed.
CONF = {("A", 0): [[4, 1], [0, 5]], ("A", 1): [[3, 2], [1, 4]], ("B", 0): [[2, 3], [2, 3]]}
CONF_B1_REVERSED = [[1, 4], [0, 5]]  # labels (c1, c0): equals [[5, 0], [4, 1]] in (c0, c1)


def row(sweep, holdout, seed, quant, top1, kind="signbart", augment=ON, **kw):
    metric = {"top1": top1, "top5": None, "macro_f1": None} if top1 is None else {
        "top1": top1, "top5": top1 + 0.1, "macro_f1": top1 - 0.1}
    fields = {"sweep": sweep, "trial_id": f"{sweep}-{holdout}{seed}", "holdout": holdout,
              "seed": seed, "variant": "v", "quant": quant, "model_kind": kind, **metric,
              "augment": json.dumps(augment), "ablation": ARMS.get(sweep), "git_sha": "abc123",
              "n_test": 10,
              "model_bytes": {"fp32": 4_000_000, "ptq": 1_000_000}.get(quant, 900_000),
              "params": 1_000_000, "flops": 2_000_000_000, "latency_ms_p50": 3.0}
    fields.update(kw)
    return fields


def s1_fp32(holdout, seed, top1):
    if (holdout, seed) == ("B", 1):
        labels, glosses, conf = ["c1", "c0"], ["bye", "hello"], CONF_B1_REVERSED
    else:
        labels, glosses, conf = ["c0", "c1"], ["hello", "bye"], CONF[holdout, seed]
    acc = [r[i] / sum(r) for i, r in enumerate(conf)]
    return row("s1", holdout, seed, "fp32", top1, labels=labels, glosses=glosses,
               confusion=conf, per_class_acc=acc)


CELLS = [("A", 0), ("A", 1), ("B", 0), ("B", 1)]
FP32 = dict(zip(CELLS, [0.8, 0.6, 0.5, 0.3]))
PTQ = {("A", 0): 0.7, ("A", 1): 0.6, ("B", 0): 0.4}            # (B, 1) failed
BASELINE = dict(zip(CELLS, [0.5, 0.5, 0.4, 0.2]))
NO_AUGMENT = dict(zip(CELLS, [0.7, 0.5, 0.4, 0.2]))             # sweep s2: fp32, augment off


def write_storage(root: Path) -> Path:
    """Two sweeps as a Ray storage dir: ``<root>/<sweep>/results/<trial>.parquet``."""
    res = root / "s1" / "results"
    for h, s in CELLS:
        rows = [s1_fp32(h, s, FP32[h, s]), row("s1", h, s, "fp32", BASELINE[h, s], "baseline")]
        rows.append(row("s1", h, s, "ptq", PTQ[h, s], created_at=NEW) if (h, s) in PTQ else
                    row("s1", h, s, "ptq", None, status="failed",
                        error="Traceback (most recent call last):\nRuntimeError: converter died"))
        write_rows(rows, str(res / f"{h}{s}.parquet"))
    write_rows([row("s1", "A", 0, "int8", 0.75)], str(res / "A0-int8.parquet"))
    # a retried trial: an older, worse row of the same cell must be listed, not used
    write_rows([row("s1", "A", 0, "ptq", 0.2, trial_id="s1-A0-old", created_at=OLD)],
               str(res / "A0-old.parquet"))
    write_rows([row("s2", h, s, "fp32", NO_AUGMENT[h, s], augment=OFF)
                for h, s in CELLS],
               str(root / "s2" / "results" / "all.parquet"))
    return root


@pytest.fixture(scope="module")
def storage(tmp_path_factory) -> Path:
    return write_storage(tmp_path_factory.mktemp("storage"))


@pytest.fixture(scope="module")
def summary(storage) -> report.Summary:
    return report.read([str(storage)])


@pytest.fixture(scope="module")
def built(storage, tmp_path_factory) -> report.ReportPaths:
    return report.build_report([str(storage)], str(tmp_path_factory.mktemp("out")))


def one(df: pd.DataFrame, **where) -> pd.Series:
    for k, v in where.items():
        df = df[df[k] == v]
    assert len(df) == 1, f"{where}: {len(df)} rows"
    return df.iloc[0]


def std(values) -> float:
    return float(np.std(values, ddof=1))


def test_load_accepts_storage_results_folder_and_files(storage):
    files = [str(storage / "s1" / "results" / f"{cell}.parquet") for cell in ("A0", "B1")]
    assert len(report.load([str(storage)]).rows) == 4 * 3 + 2 + 4
    assert len(report.load([str(storage / "s1")]).rows) == 4 * 3 + 2
    assert len(report.load([str(storage / "s1" / "results")]).rows) == 4 * 3 + 2
    loaded = report.load(files)
    assert len(loaded.rows) == 6 and set(loaded.rows.source_file) == {
        "s1/results/A0.parquet", "s1/results/B1.parquet"}  # relative: same on a rebuild


def test_bad_inputs_name_the_path(tmp_path):
    with pytest.raises(UserError, match="nope"):
        report.load([str(tmp_path / "nope")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="empty: no result files"):
        report.load([str(tmp_path / "empty")])
    (tmp_path / "junk.parquet").write_text("not parquet")
    with pytest.raises(UserError, match="junk.parquet: not a readable"):
        report.load([str(tmp_path / "junk.parquet")])
    write_rows([], str(tmp_path / "none" / "results" / "t.parquet"))
    with pytest.raises(UserError, match="hold no rows"):
        report.load([str(tmp_path / "none")])
    with pytest.raises(UserError, match="unknown format 'pdf'"):
        report.build_report([str(tmp_path)], str(tmp_path / "out"), formats=("pdf",))


def test_augment_settings_are_the_rows_ablation_arms(summary):
    assert set(summary.rows.augment_setting) == {SETTING, "none"}


def test_mean_std_over_cells_and_over_holdout_means(summary):
    s = one(summary.summary, quant="fp32", model_kind="signbart", augment_setting=SETTING)
    assert (s.n_cells, s.n_ok, s.n_failed, s.n_holdouts) == (4, 4, 0, 2)
    assert s.top1_mean == pytest.approx(0.55)
    assert s.top1_std == pytest.approx(std([0.8, 0.6, 0.5, 0.3]))
    assert s.top1_holdout_mean == pytest.approx(0.55)
    assert s.top1_holdout_std == pytest.approx(std([0.7, 0.4]))  # signer, not seed, variance
    assert s.top5_mean == pytest.approx(0.65) and s.macro_f1_mean == pytest.approx(0.45)
    assert s.model_bytes == 4_000_000 and s.latency_ms_p50 == pytest.approx(3.0)


def test_failed_cells_are_counted_not_averaged(summary):
    s = one(summary.summary, quant="ptq")
    assert (s.n_cells, s.n_ok, s.n_failed) == (4, 3, 1)
    assert s.top1_mean == pytest.approx(np.mean([0.7, 0.6, 0.4]))  # newest A0 row, no zero
    assert s.top1_holdout_mean == pytest.approx(np.mean([0.65, 0.4]))
    f = one(summary.failures, quant="ptq")
    assert (f.holdout, f.seed) == ("B", 1) and "converter died" in f.error


def test_paired_delta_vs_fp32(summary):
    s = one(summary.summary, quant="ptq")
    assert s.n_pairs == 3
    assert s.top1_delta_vs_fp32_mean == pytest.approx(np.mean([-0.1, 0.0, -0.1]))
    assert s.top1_delta_vs_fp32_std == pytest.approx(std([-0.1, 0.0, -0.1]))
    assert pd.isna(one(summary.summary, quant="fp32", augment_setting="none").n_pairs)


def test_per_holdout_over_seeds(summary):
    ph = summary.per_holdout
    b = one(ph, quant="fp32", model_kind="signbart", augment_setting=SETTING,
            holdout="B")
    assert (b.n_cells, b.top1_mean) == (2, pytest.approx(0.4))
    assert b.top1_std == pytest.approx(std([0.5, 0.3]))
    assert one(ph, quant="ptq", holdout="B").n_failed == 1


def test_duplicate_cell_is_reported_and_newest_kept(summary):
    d = summary.duplicates
    assert len(d) == 2 and set(d.trial_id) == {"s1-A0", "s1-A0-old"}
    assert one(d, kept=True).top1 == pytest.approx(0.7)
    assert len(summary.rows) == 4 * 3 + 1 + 4  # one row per cell


def test_without_sweep_json_the_grid_is_unknown_and_nothing_is_listed_missing(summary):
    assert summary.missing.empty
    assert set(summary.audit.grids.grid) == {"unknown: no sweep.json"}


def test_confusion_summed_on_union_of_labels(summary):
    c = one(summary.confusion, quant="fp32", model_kind="signbart", holdout=ALL,
            augment_setting=SETTING)
    assert c.labels == ["c0", "c1"] and c.names == ["hello", "bye"]
    np.testing.assert_array_equal(c.counts, [[14, 6], [7, 13]])
    np.testing.assert_allclose(c.share, [[0.7, 0.3], [0.35, 0.65]])
    b = one(summary.confusion, quant="fp32", model_kind="signbart", holdout="B")
    np.testing.assert_array_equal(b.counts, [[7, 3], [6, 4]])


def test_per_class_accuracy(summary):
    pc = summary.per_class[summary.per_class.quant == "fp32"]
    c0 = one(pc, class_id="c0")
    assert (c0.gloss, c0.n) == ("hello", 4)
    assert c0.acc_mean == pytest.approx(np.mean([0.8, 0.6, 0.4, 1.0]))
    assert one(pc, class_id="c1").acc_std == pytest.approx(std([1.0, 0.8, 0.6, 0.2]))


def test_ablation_vs_no_augmentation(summary):
    ab = summary.ablation
    assert set(ab.quant) == {"fp32"} and set(ab.augment_setting) == {"none", SETTING}
    on = one(ab, augment_setting=SETTING, holdout=ALL)
    assert (on.n_pairs, on.delta_vs_none_mean) == (4, pytest.approx(0.1))
    assert on.delta_vs_none_std == pytest.approx(0.0)
    assert one(ab, augment_setting="none", holdout="A").top1_mean == pytest.approx(0.6)


def test_report_files(built):
    out = Path(built.out_dir)
    assert set(built.csv) == {"variants", "signers", "summary", "per_holdout", "per_class",
                              "failures", "missing", "rejected", "duplicates", "provenance",
                              "paired", "ablation"}
    assert len(pd.read_csv(built.csv["summary"])) == 5
    md = Path(built.markdown).read_text()
    for title in ("## Accuracy", "## Paired comparisons", "## Augmentation ablation",
                  "## Failures", "## Missing cells", "## Duplicate cells", "converter died"):
        assert title in md
    for ref in re.findall(r"\]\(([^)]+\.png)\)", md):
        assert (out / ref).is_file(), ref
    pngs = sorted(out.rglob("*.png"))
    assert len(pngs) == len(built.images) == 4 + 1  # grid, 3 charts, the fp32 confusion summed
    folds = pd.read_csv(out / "confusion" / "fp32-reference.csv")  # per hold-out: counts
    assert folds.groupby("holdout")["count"].sum().to_dict() == {"A": 20, "B": 20}
    for p in pngs:
        with Image.open(p) as im:
            im.verify()
        with Image.open(p) as im:
            assert im.format == "PNG" and im.width > 200 and im.height > 200, p
    assert not list(out.rglob("*.tmp"))


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """The Wilson score interval, by its textbook formula."""
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z / (1 + z * z / n) * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n))
    return centre - half, centre + half


def test_signer_grid_wilson_per_signer_t_interval_for_the_mean(summary):
    g = summary.signers[(summary.signers.quant == "fp32") & (summary.signers.model_kind ==
                                                              "signbart")
                        & (summary.signers.augment_setting == SETTING)]
    assert list(g.holdout) == ["A", "B", "mean", "worst"]
    a, b, mean, worst = (one(g, holdout=h) for h in ("A", "B", "mean", "worst"))
    assert (a.n_seeds, a.clips, a.correct, a.top1) == (2, 20, 14, pytest.approx(0.7))
    assert (a.ci_low, a.ci_high) == pytest.approx(wilson(14, 20))
    assert (mean.top1, mean.clips, mean.correct) == (pytest.approx(0.55), 40, 22)
    assert (mean.ci_low, mean.ci_high) == pytest.approx(t_interval([0.7, 0.4])[1:])
    assert (worst.signer, worst.top1) == ("B", pytest.approx(0.4))
    assert (worst.ci_low, worst.ci_high) == pytest.approx((b.ci_low, b.ci_high))
    ptq = one(summary.signers, quant="ptq", holdout="B")  # the failed seed is not a zero
    assert (ptq.n_seeds, ptq.clips, ptq.top1) == (1, 10, pytest.approx(0.4))


def scipy_t(values) -> tuple[float, float]:
    """The 95 % t-interval of the mean, straight from scipy.stats.t."""
    from scipy import stats

    v = np.asarray(values, float)
    return stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))


def test_t_interval_matches_scipy_on_hand_built_values():
    for values in ([0.7, 0.4], [0.81, 0.9, 0.77, 0.95, 0.88], [0.5, 0.6, 0.55]):
        m, lo, hi = t_interval(values)
        assert m == pytest.approx(np.mean(values))
        assert (lo, hi) == pytest.approx(scipy_t(values))
    assert np.isnan(t_interval([0.9])[1]) and t_interval([0.9, 0.9])[1:] == (0.9, 0.9)


def test_paired_comparisons_are_by_signer_and_interval_agrees_with_test(summary):
    from scipy import stats

    p = summary.paired
    ptq = one(p, quant="ptq", augment_setting=SETTING)
    assert ptq.versus == f"fp32 [{SETTING}]" and ptq.comparison == "quant vs fp32"
    # A: seeds 0, 1 differ by -0.1, 0.0 -> -0.05; B: only seed 0 pairs (seed 1 failed) -> -0.1
    assert (ptq.n_signers, ptq.delta_mean) == (2, pytest.approx(-0.075))
    assert (ptq.ci_low, ptq.ci_high) == pytest.approx(scipy_t([-0.05, -0.1]))
    assert ptq.t_p == pytest.approx(stats.ttest_1samp([-0.05, -0.1], 0).pvalue)
    base = one(p, model_kind="signbart", quant="fp32", augment_setting=SETTING,
               comparison="kind vs baseline")
    # A: 0.3, 0.1 -> 0.2; B: 0.1, 0.1 -> 0.1
    assert (base.n_signers, base.delta_mean) == (2, pytest.approx(0.15))
    assert (base.ci_low, base.ci_high) == pytest.approx(scipy_t([0.2, 0.1]))
    for r in p.itertuples():  # the interval and the test never disagree
        assert r.distinguishable == (r.ci_low > 0 or r.ci_high < 0) == (r.t_p < 0.05)
    rerun = report.summarize(summary.rows.drop(columns=["ok", "model"]), summary.audit)
    pd.testing.assert_frame_equal(rerun.paired, p)


def test_pages_name_the_sweeps_say_synthetic_and_count_confusion_sums(tmp_path):
    write_storage(tmp_path / "st")
    write_rows([row("syn", "A", 0, "fp32", 0.9, synthetic=True), row("syn", "B", 0, "fp32", 0.8)],
               str(tmp_path / "st" / "syn" / "results" / "r.parquet"))
    real = report.build_report([str(tmp_path / "st" / "s1")], str(tmp_path / "real"))
    mixed = report.build_report([str(tmp_path / "st")], str(tmp_path / "mixed"))
    page = Path(real.html).read_text()
    assert "<title>LOSO report: s1</title>" in page and "ynthetic" not in page
    assert 'id="signer-grid"' in page
    assert "sums 40 test predictions: 2 hold-outs × 2 seeds" in page   # 14+6+7+13
    page, md = Path(mixed.html).read_text(), Path(mixed.markdown).read_text()
    assert "<title>LOSO report: s1, s2, syn</title>" in page
    for text in (page, md):
        assert "Synthetic data: 1 of 19 rows come from a dataset" in text
    assert md.startswith("# LOSO report: s1, s2, syn\n\n**No verdict:")
    assert md.index("Synthetic data") < md.index("Contents:")


def test_any_model_kind_gets_a_grid_column_and_its_comparisons(tmp_path):
    rows = [row("e", h, seed, quant, top1 + 0.01 * seed, kind)
            for h in "AB" for seed in (0, 1)
            for quant, kind, top1 in (("fp32", "signbart", 0.8), ("fp32", "baseline", 0.7),
                                      ("fp32", "ensemble", 0.9), ("ptq", "ensemble", 0.85))]
    write_rows(rows, str(tmp_path / "e" / "results" / "r.parquet"))
    s = report.read([str(tmp_path / "e")])
    assert list(dict.fromkeys(s.signers.model)) == ["fp32", "fp32 ens", "fp32 base", "ptq ens"]
    pairs = dict(zip(zip(s.paired.model, s.paired.versus), s.paired.delta_mean))
    assert pairs == {("fp32", "fp32 base"): pytest.approx(0.1),
                     ("fp32 ens", "fp32 base"): pytest.approx(0.2),
                     ("ptq ens", "fp32 ens"): pytest.approx(-0.05)}


def variant_rows(sweep: str) -> list[dict]:
    """Three variants × fp32/ptq on three signers, one seed; ptq is 1 point below fp32."""
    from signbart.config import load_variant, to_dict

    root = Path(__file__).resolve().parents[1] / "configs"
    spec = {"arabic-asl-42kpts-hands": ([0.95, 0.93, 0.80], 1.0e6, 2.0),
            "arabic-asl-44kpts-hands-wrists": ([0.95, 0.93, 0.89], 1.1e6, 2.1),
            "arabic-asl-65kpts-framed": ([0.96, 0.94, 0.90], 1.5e6, 3.0)}
    out = []
    for name, (top1, size, ms) in spec.items():
        variant = to_dict(load_variant(root / f"{name}.yaml"))
        for h, t in zip("ABC", top1):
            for quant, scale, drop in (("fp32", 4, 0.0), ("ptq", 1, 0.01)):
                out.append(row(sweep, h, 0, quant, t - drop, variant=name,
                               model_bytes=int(size * scale), latency_ms_p50=ms * scale / 2,
                               config=json.dumps({"variant": variant})))
    return out


def test_variant_table_keypoints_costs_and_worst_signer(tmp_path):
    write_rows(variant_rows("vars"), str(tmp_path / "vars" / "results" / "r.parquet"))
    s = report.read([str(tmp_path / "vars")])
    v = s.arms.set_index("model")
    assert list(v.index) == ["42kpts-hands fp32", "42kpts-hands ptq", "44kpts-hands-wrists fp32",
                             "44kpts-hands-wrists ptq", "65kpts-framed fp32",
                             "65kpts-framed ptq"]
    assert list(v.keypoints) == [42, 42, 44, 44, 65, 65]
    b = v.loc["65kpts-framed fp32"]
    assert (b.mean_top1, b.worst_signer, b.worst_top1) == (pytest.approx(0.9333333), "C",
                                                            pytest.approx(0.90))
    assert (b.mean_ci_low, b.mean_ci_high) == pytest.approx(scipy_t([0.96, 0.94, 0.90]))
    assert (b.size_mb, b.latency_ms_p50) == (pytest.approx(6.0), pytest.approx(6.0))
    assert s.verdict["model"] is None  # no row carries an inner-validation accuracy
    paths = report.build_report([str(tmp_path / "vars")], str(tmp_path / "out"))
    assert "variants" in paths.csv and "## Models" in Path(paths.markdown).read_text()


def test_many_variants_get_a_grid_each_and_the_page_embeds_one_confusion_matrix(
        tmp_path, monkeypatch):
    """Past GRID_MAX_ARMS arms over several variants the signer grid splits by variant; past
    CONFUSION_INLINE matrices the page embeds one (the verdict's; the first, as here there is
    none) and links the others, whose PNGs are written beside it all the same."""
    from signbart import plots, render

    monkeypatch.setattr(plots, "GRID_MAX_ARMS", 4)
    monkeypatch.setattr(render, "CONFUSION_INLINE", 2)
    rows = [{**r, "labels": ["c0", "c1"], "glosses": ["hello", "bye"],
             "confusion": [[4, 1], [1, 4]], "per_class_acc": [0.8, 0.8]}
            for r in variant_rows("vars")]
    write_rows(rows, str(tmp_path / "vars" / "results" / "r.parquet"))
    built = report.build_report([str(tmp_path / "vars")], str(tmp_path / "out"))
    names = sorted(Path(p).name for p in built.images)
    variants = ("arabic-asl-42kpts-hands", "arabic-asl-44kpts-hands-wrists",
                "arabic-asl-65kpts-framed")
    assert [n for n in names if n.startswith("signers_") and n != "signers_dots.png"] == [
        f"signers_{v}.png" for v in variants] and "signers.png" not in names
    confusion = [n for n in names if n.startswith("confusion_")]
    assert len(confusion) == 6
    page = Path(built.html).read_text()
    embedded = re.findall(r'<figure class=confusion><img alt="([^"]+)"', page)
    assert [a.split(" — ")[0] for a in embedded] == ["42kpts-hands fp32"]
    linked = re.findall(r'href="(confusion_[^"]+\.png)"', page)
    assert sorted(linked) == [n for n in confusion if n != "confusion_42kpts-hands-fp32.png"]
    assert all((tmp_path / "out" / n).is_file() for n in linked)
    assert page.count("<figure class=grid>") == 3


def test_all_failed_input_still_reports(tmp_path):
    write_rows([row("s", "A", 0, "fp32", None, status="failed", error="OOM")],
               str(tmp_path / "s" / "results" / "t.parquet"))
    paths = report.build_report([str(tmp_path / "s")], str(tmp_path / "out"))
    s = pd.read_csv(paths.csv["summary"])
    assert (s.n_failed[0], pd.isna(s.top1_mean[0])) == (1, True)
    assert "OOM" in Path(paths.html).read_text()


# ---------------------------------------------------------------- the page in a real browser

def _chromium() -> str:
    """Debian's chromium, installed on first use where we are root and apt-get exists."""
    found = shutil.which("chromium")
    if not found and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update"], ["apt-get", "install", "-y", "chromium"]):
            subprocess.run(cmd, env=env, capture_output=True, timeout=900, check=False)
        found = shutil.which("chromium")
    if not found:
        pytest.skip("chromium is not installed and cannot be installed here "
                    "(needs root and apt-get): apt-get install -y chromium")
    return found


def _headless(chromium: str, profile: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
         "--no-first-run", "--disable-background-networking", "--disable-component-update",
         "--disable-sync", f"--user-data-dir={profile}", *args],
        capture_output=True, text=True, timeout=120, check=True)




# Appended to a copy of the page only: after load, lists every image's decoded width, every
# table-of-contents link whose target is missing, and every element id.
PROBE = """<script>addEventListener("load", () => { const p = document.createElement("pre");
p.id = "probe"; p.textContent = JSON.stringify({images: [...document.images].map(
i => i.naturalWidth), dangling: [...document.querySelectorAll("#toc a")].filter(
a => !document.getElementById(a.hash.slice(1))).map(a => a.hash), ids: [
...document.querySelectorAll("[id]")].map(e => e.id)});
document.body.append(p); });</script>"""


@pytest.mark.slow
def test_html_renders_in_headless_chromium(tmp_path):
    """A report built here, with a verdict: its page opens with the verdict, every contents
    link lands, every image decodes, and it fits in a browser window."""
    from report_rows import write_sweep

    chromium = _chromium()
    signers = ["u1", "u2", "u3"]
    write_sweep(tmp_path / "st", "nested", signers)
    write_sweep(tmp_path / "st", "extra", signers[:2], variants=("arabic-asl-65kpts-framed",),
                arms={("fp32", "signbart"): (0.0, 0.0, 2_860_000, 0.39)})
    built = report.build_report([str(tmp_path / "st" / n) for n in ("nested", "extra")],
                                str(tmp_path / "out"))
    verdict = json.loads(Path(built.verdict).read_text())["model"]
    page = Path(built.html).read_text()
    assert not re.search(r'(src|href)="(https?:)?//', page)  # nothing fetched from the web
    probe = tmp_path / "out" / "probe.html"
    probe.write_text(page.replace("</body>", PROBE + "</body>"))
    dom = _headless(chromium, tmp_path / "profile", "--virtual-time-budget=10000", "--dump-dom",
                    probe.as_uri()).stdout
    body = dom[dom.index("<body>"):]
    assert body.index('<section id="verdict">') < body.index('<nav id="toc">') < body.index(
        "<h2") and f"Verdict: ship {verdict} (" in body
    assert "Rule: Among the arms that ship a .tflite" in body
    found = json.loads(re.search(r'<pre id="probe">([^<]*)</pre>', dom).group(1))
    assert found["dangling"] == [] and body.count('<a href="#') >= 10
    assert len(found["ids"]) == len(set(found["ids"])), found["ids"]  # every id once
    n_png = len([p for p in built.images if p.endswith(".png")])
    assert len(found["images"]) == n_png and all(w > 200 for w in found["images"]), found
    grid = re.search(r'<table[^>]*id="signer-grid".*?</table>', dom, re.DOTALL).group(0)
    assert grid.count("</tr>") == 1 + 3 + 2  # header; hold-outs; mean, worst
    assert "framed fp32 (2/3 signers)" in grid
    for link in re.findall(r'href="(confusion/[^"]+)"', page):
        assert (tmp_path / "out" / link).is_file(), link
    shot = tmp_path / "page.png"
    _headless(chromium, tmp_path / "profile", f"--screenshot={shot}", "--window-size=1280,2400",
              Path(built.html).resolve().as_uri())
    with Image.open(shot) as im:
        assert im.size == (1280, 2400)


def test_nested_search_choices_are_listed_per_holdout(tmp_path):
    choice = {"params": {"train.lr": 0.001, "model.decoder_layerdrop": 0.1},
              "val_accuracy": 0.875, "val_signers": ["u3"]}
    rows = [row("s", h, s, "fp32", 0.9, search=json.dumps({**choice, "val_signers": [v]}))
            for h, v in (("A", "u3"), ("B", "u4")) for s in (0, 1)]
    rows.append(row("s", "C", 0, "fp32", 0.9))                 # a trial without a search
    write_rows(rows, str(tmp_path / "s/results/r.parquet"))
    s = report.read([str(tmp_path / "s")])
    assert s.search.to_dict("records") == [
        {"variant": "v", "holdout": h, "chosen": "model.decoder_layerdrop=0.1, train.lr=0.001",
         "inner_val_top1": 0.875, "inner_val_signers": v} for h, v in (("A", "u3"), ("B", "u4"))]
    paths = report.build_report([str(tmp_path / "s")], str(tmp_path / "out"))
    md = Path(paths.markdown).read_text()
    assert "## Nested search" in md and "| v | B | model.decoder_layerdrop=0.1" in md
    assert Path(paths.csv["search"]).is_file()


def test_inner_validation_table_lists_each_trials_judges_and_choices(tmp_path):
    """Hold-out B's rows were written before the mix was calibrated: no mode or temperatures
    columns in its file. They still load, with those cells empty."""
    mixes = {"A": dict(ensemble_mode="arithmetic", ensemble_temperatures=[2.5, 0.75])}
    for h, judges, inner, weight in (("A", ["u3", "u4"], 0.9, 0.65), ("B", ["u1", "u5"], 0.8, 0.4)):
        common = dict(val_signers=judges, inner_val_accuracy=inner, best_epoch=30, n_train=80)
        rows = [row("s", h, 0, "fp32", 0.9, epochs_run=30, **common),
                row("s", h, 0, "ptq", 0.9, epochs_run=30, **common),
                row("s", h, 0, "fp32", 0.95, kind="ensemble", ensemble_weight=weight,
                    **mixes.get(h, {}), **common),
                row("s", h, 0, "fp32", 0.7, kind="baseline")]
        path = write_rows(rows, str(tmp_path / f"s/results/{h}.parquet"))
        if h not in mixes:
            pq.write_table(pq.read_table(path).drop_columns(
                ["ensemble_mode", "ensemble_temperatures"]), path)
    s = report.read([str(tmp_path / "s")])
    got = s.inner[["holdout", "val_signers", "inner_val_accuracy", "inner_best_epoch",
                   "ensemble_weight", "ensemble_mode", "signbart_temperature",
                   "baseline_temperature"]].to_dict("records")
    assert got[0] == {"holdout": "A", "val_signers": "u3, u4", "inner_val_accuracy": 0.9,
                      "inner_best_epoch": 30, "ensemble_weight": 0.65,
                      "ensemble_mode": "arithmetic", "signbart_temperature": 2.5,
                      "baseline_temperature": 0.75}
    assert {k: got[1][k] for k in list(got[1])[:5]} == {
        "holdout": "B", "val_signers": "u1, u5", "inner_val_accuracy": 0.8,
        "inner_best_epoch": 30, "ensemble_weight": 0.4}
    assert pd.isna(got[1]["ensemble_mode"]) and np.isnan(got[1]["signbart_temperature"])
    md = Path(report.build_report([str(tmp_path / "s")], str(tmp_path / "out")).markdown).read_text()
    assert "## Inner validation" in md and "Mean inner accuracy per variant: v 0.850." in md
    assert "| 0.65 | arithmetic | 2.50 | 0.75 |" in md and "| 0.40 |  |  |  |" in md


def test_rebuilt_from_its_own_rows_every_table_is_the_same(storage, tmp_path):
    out = tmp_path / "out"
    first = report.build_report([str(storage)], str(out), formats=("csv",))
    tables = {n: Path(p).read_text() for n, p in first.csv.items()}
    assert "duplicates" in tables and "s1/results/A0-old.parquet" in tables["duplicates"]
    report.build_report([str(out / "rows" / "s1"), str(out / "rows" / "s2")], str(out),
                        formats=("csv",))
    assert {n: (out / f"{n}.csv").read_text() for n in tables} == tables


def test_handedness_scores_the_shipped_models_fold_on_unmirrored_clips(tmp_path, synth_dataset):
    from test_tflite import dataset_model

    from signbart.config import VariantConfig
    from signbart.data import open_dataset
    from signbart.evaluate import evaluate_tflite_file
    from signbart.preprocess import prepare

    model = dataset_model(tmp_path, synth_dataset)
    data = open_dataset(synth_dataset)
    signers = sorted(set(data.manifest.signer))
    rows = [r for i, h in enumerate(signers) for r in (
        row("h", h, 0, "fp32", 0.9 - 0.1 * i, model_path=str(model), inner_val_accuracy=0.9),
        row("h", h, 0, "fp32", 0.5, "baseline", inner_val_accuracy=0.8))]
    write_rows(rows, str(tmp_path / "h" / "results" / "all.parquet"))
    with pytest.raises(UserError, match=f"signer '{signers[0]}' has no row of the shipped"):
        write_rows(rows[2:], str(tmp_path / "g" / "results" / "all.parquet"))
        report.build_report([str(tmp_path / "g")], str(tmp_path / "g-out"),
                            handedness=str(synth_dataset))
    out = tmp_path / "out"
    report.build_report([str(tmp_path / "h")], str(out), handedness=str(synth_dataset))
    table = pd.read_csv(out / "handedness.csv")
    assert list(table.signer) == signers and set(table.handedness) == {"as-extracted"}
    auto = VariantConfig(name="hands", num_labels=10, handedness="auto",
                         keypoints={"left_hand": ["wrist"], "right_hand": ["wrist", "thumb_tip"]})
    for i, r in enumerate(table.itertuples()):
        clips = np.flatnonzero(data.manifest.signer == r.signer)
        plain = evaluate_tflite_file(model, None, data, holdout=r.signer)["top1"]
        assert (r.mirrored_top1, r.n_seeds, r.n_clips) == (pytest.approx(0.9 - 0.1 * i), 1,
                                                           len(clips))
        assert r.unmirrored_top1 == pytest.approx(plain)
        assert r.delta == pytest.approx(plain - r.mirrored_top1)
        assert r.detected_left == pytest.approx(prepare(data, clips, auto).mirrored.mean())
    manifest = json.loads((out / "report.json").read_text())
    # the rows-only rebuild cannot promise this table (it needs the .tflite files): it is named
    assert "--handedness" not in manifest["rebuild"]
    assert manifest["handedness"] == str(synth_dataset) and "handedness.csv" in manifest["files"]
    summary = (out / "summary.md").read_text()
    assert "## Left-handed signers" in summary
    [rebuild] = [line for line in summary.splitlines() if line.startswith("Rebuild this report")]
    assert "add `--handedness DATASET`" in rebuild and f"named `{synth_dataset.name}`" in rebuild
    assert str(synth_dataset.parent) not in rebuild      # no path of the machine that made it
