"""The published MLR511 reports: each rebuilt from its committed rows by the command it prints;
the shipped model's verdict quoted by the README as it stands."""

import json
import re
import shlex
from pathlib import Path

import pandas as pd
import pytest

from signbart.cli import main

ROOT = Path(__file__).resolve().parents[1]
REPORTS = {"mlr511": "mlr511-nested", "mlr511-variants": "mlr511-variants",
           "mlr511-shape": "mlr511-shape", "mlr511-smoothing": "mlr511-smoothing",
           "mlr511-ema": "mlr511-ema"}


def _printed_command(report: Path) -> list[str]:
    text = (report / "summary.md").read_text()
    [command] = re.findall(r"`(signbart report [^`]+)`", text)
    return shlex.split(command)


@pytest.mark.parametrize("name, sweep", REPORTS.items())
def test_the_printed_command_rebuilds_the_published_report_from_its_rows(tmp_path, monkeypatch,
                                                                         name, sweep):
    report = ROOT / "reports" / name
    argv = _printed_command(report)
    assert argv[:3] == ["signbart", "report", f"reports/{name}/rows/{sweep}"]
    # the same command, into a scratch folder, run from the repository root as printed
    out = tmp_path / name
    monkeypatch.chdir(ROOT)
    argv[argv.index("--out") + 1] = str(out)
    assert main(argv[1:]) == 0
    assert json.loads((out / "verdict.json").read_text()) == \
        json.loads((report / "verdict.json").read_text())
    for table in ("signers.csv", "paired.csv", "summary.csv", "variants.csv", "missing.csv",
                  "rejected.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / table), pd.read_csv(report / table),
                                      check_exact=False, rtol=1e-9)
    assert (out / "report.html").stat().st_size <= 1.5e6   # pages a reader is sent


@pytest.mark.parametrize("name", REPORTS)
def test_the_readme_quotes_the_published_verdict(name):
    v = json.loads((ROOT / "reports" / name / "verdict.json").read_text())
    readme = " ".join((ROOT / "README.md").read_text().split())
    lo, hi = (100 * x for x in v["mean_ci"])
    assert f"**{100 * v['mean']:.1f} % mean [{lo:.1f}, {hi:.1f}]**" in readme
    assert f"worst signer **{v['worst_signer']} at {100 * v['worst']:.0f} %**" in readme
    blo, bhi = (100 * x for x in v["vs_baseline_ci"])
    assert f"**{100 * v['vs_baseline']:+.1f} points [{blo:.1f}, {bhi:.1f}]**".replace("-", "−") \
        in readme.replace("-", "−")
    assert f"`{v['model']}`" in readme
    assert v["n_signers"] == 9 and not v["vs_baseline_distinguishable"]


def _compare_commands() -> list[list[str]]:
    readme = (ROOT / "README.md").read_text()
    return [shlex.split(c) for c in re.findall(r"^(signbart compare reports/\S+ .*)$", readme,
                                               re.M)]


@pytest.mark.parametrize("argv", _compare_commands(), ids=lambda a: a[a.index("--out") + 1])
def test_each_published_screen_comparison_is_rebuilt_by_its_readme_command(tmp_path, monkeypatch,
                                                                           argv):
    committed = ROOT / argv[argv.index("--out") + 1]
    monkeypatch.chdir(ROOT)
    argv[argv.index("--out") + 1] = str(tmp_path / "compare.csv")
    assert main(argv[1:]) == 0
    pd.testing.assert_frame_equal(pd.read_csv(tmp_path / "compare.csv"), pd.read_csv(committed),
                                  check_exact=False, rtol=1e-9)


def test_the_readme_publishes_screen_comparisons():
    assert len(_compare_commands()) >= 1
