"""The published MLR511 report: rebuilt from its committed rows by the command it prints, and
quoted by the README as it stands."""

import json
import re
import shlex
from pathlib import Path

import pandas as pd

from signbart.cli import main

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = ROOT / "reports" / "mlr511"


def _printed_command() -> list[str]:
    text = (PUBLISHED / "summary.md").read_text()
    [command] = re.findall(r"`(signbart report [^`]+)`", text)
    return shlex.split(command)


def test_the_printed_command_rebuilds_the_published_report_from_its_rows(tmp_path, monkeypatch):
    argv = _printed_command()
    assert argv[:3] == ["signbart", "report", "reports/mlr511/rows/mlr511-nested"]
    # the same command, into a scratch folder, run from the repository root as printed
    out = tmp_path / "mlr511"
    monkeypatch.chdir(ROOT)
    assert main([*argv[1:argv.index("--out") + 1], str(out)]) == 0
    assert json.loads((out / "verdict.json").read_text()) == \
        json.loads((PUBLISHED / "verdict.json").read_text())
    for table in ("signers.csv", "paired.csv", "summary.csv", "missing.csv", "rejected.csv"):
        pd.testing.assert_frame_equal(pd.read_csv(out / table), pd.read_csv(PUBLISHED / table),
                                      check_exact=False, rtol=1e-9)
    assert (out / "report.html").stat().st_size <= 1.5e6


def test_the_readme_quotes_the_published_verdict():
    v = json.loads((PUBLISHED / "verdict.json").read_text())
    readme = (ROOT / "README.md").read_text()
    lo, hi = (100 * x for x in v["mean_ci"])
    assert f"**{100 * v['mean']:.1f} % mean [{lo:.1f}, {hi:.1f}]**" in readme
    assert f"worst signer **{v['worst_signer']} at {100 * v['worst']:.0f} %**" in readme
    blo, bhi = (100 * x for x in v["vs_baseline_ci"])
    assert f"**{100 * v['vs_baseline']:+.1f} points [{blo:.1f}, {bhi:.1f}]**".replace("-", "−") \
        in readme.replace("-", "−")
    assert f"`{v['model']}`" in readme
    assert v["n_signers"] == 9 and not v["vs_baseline_distinguishable"]
