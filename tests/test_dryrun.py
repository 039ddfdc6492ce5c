"""``signbart sweep --dry-run``: every row kind priced per variant, quiet, writing nothing into
the storage; the pre-sweep gate that asks for ``--yes``; and, on real keypoints, the price
against the trial it stands for."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import shared_path

from signbart.cli import main
from signbart.errors import ConfigError
from signbart.pricing import GATE_CPU_HOURS, estimate, record_epochs, trial_cpu
from signbart.results import make_row, write_rows
from signbart.storage import rows_uri
from signbart.sweep import run_sweep
from signbart.sweepspec import Grid, load_spec

REPO = Path(__file__).resolve().parents[1]
TINY = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 16, "decoder_ffn_dim": 16}
MLR511 = shared_path("mlr511-90")
TF_LINES = ("cuInit", "oneDNN", "E0000", "W0000", "I0000", "cuda", "absl::")


@pytest.fixture(scope="module")
def two_variants(tmp_path_factory) -> list[Path]:
    """Two tiny models of different sizes: 65 keypoints, and the 42 hand keypoints."""
    d = tmp_path_factory.mktemp("variants")
    out = []
    for config, name in (("arabic-asl-65kpts.yaml", "tiny65"),
                         ("arabic-asl-42kpts-hands.yaml", "tiny42")):
        base = yaml.safe_load((REPO / "configs" / config).read_text())
        (d / f"{name}.yaml").write_text(yaml.safe_dump({**base, "name": name, "model": TINY}))
        out.append(d / f"{name}.yaml")
    return out


def _spec(path: Path, data, variants, **over) -> Path:
    fields = {"name": "t", "data": str(data), "holdouts": ["user01", "user02"], "seeds": [1],
              "variants": [str(v) for v in variants], "quant": ["fp32", "ptq", "qat"],
              "baseline": True, "ensemble": True, "retries": 0, "resources": {"cpu": 1},
              "train": {"epochs": 6, "batch_size": 8, "n_val_signers": 1, "refit": True,
                        "schedule": "cosine", "warmup_epochs": 1},
              "qat": {"epochs": 3, "batch_size": 8}, **over}
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


@pytest.mark.slow
def test_dry_run_prices_each_variant_quietly_and_writes_nothing(tmp_path, synth_dataset,
                                                                two_variants, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = _spec(tmp_path / "s.yaml", synth_dataset, two_variants)
    store = tmp_path / "store"
    p = subprocess.run([sys.executable, "-m", "signbart.cli", "sweep", str(spec), "--dry-run",
                        "--storage", str(store)], capture_output=True, text=True, timeout=900,
                       cwd=REPO)
    assert p.returncode == 0, p.stderr
    out = p.stdout + p.stderr
    assert not [line for line in out.splitlines() if any(t in line for t in TF_LINES)], out
    for trial in ("user01-s1-tiny65", "user02-s1-tiny65", "user01-s1-tiny42",
                  "user02-s1-tiny42"):
        assert f"    {trial}\n" in p.stdout
    assert "CPU-hours" in p.stdout and "wall-clock at 2 trial(s) at a time" in p.stdout
    assert not store.exists()                           # the storage is never touched
    cached = sorted((tmp_path / "cache" / "signbart").glob("price-*.json"))
    assert len(cached) == 2                             # one price per variant
    # the second run reads the cache: the same figures, nothing trained
    summary = run_sweep(spec, storage=str(store), dry_run=True)
    e = summary.estimate
    prices = e["prices"]
    assert sorted(json.loads(c.read_text())["short_cpu_s"] for c in cached) == sorted(
        p["short_cpu_s"] for p in prices.values())
    assert set(prices) == {"tiny65", "tiny42"} and not store.exists()
    for price in prices.values():
        assert price["cpu_s"] > price["short_cpu_s"] > 0       # the full trial costs more
        assert {"inner", "refit", "qat"} <= set(price["epoch_cpu_s"])
        assert price["epochs"] == {"inner": 6, "refit": 6, "qat": 3}   # nothing finished yet
        assert "upper bound" in price["epochs_source"]
    assert e["cpu_hours"] == pytest.approx(2 * sum(p["cpu_s"] for p in prices.values()) / 3600)
    # two at a time, each as long as its short run's wall/CPU ratio says (a loaded machine
    # stretches it)
    walls = [p["cpu_s"] * p["short_wall_s"] / p["short_cpu_s"] for p in prices.values()]
    assert e["concurrency"] == 2
    assert e["wall_hours"] == pytest.approx(2 * sum(walls) / 2 / 3600)


def test_a_price_counts_the_epochs_finished_trials_trained(tmp_path, synth_dataset,
                                                          two_variants, monkeypatch):
    """Early stopping makes a trial's epochs unknown beforehand: the price takes them from
    the sweep's own finished trials, else from the last run of the same experiment here."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = load_spec(_spec(tmp_path / "s.yaml", synth_dataset, two_variants[:1],
                           holdouts=["user01", "user02", "user03"]))
    grid = Grid.of(spec)
    exps = grid.experiments(spec)
    store = str(tmp_path / "store" / "t")
    for exp, (inner, refit, qat) in zip(exps[:2], [(5, 3, 2), (3, 1, 3)]):
        rows = [make_row(trial_id=exp.name, variant=exp.variant.name, quant=q, inner_epochs=inner,
                         epochs_run=refit, qat_epochs=qat if q == "qat" else None)
                for q in exp.quant]
        write_rows(rows + [make_row(trial_id=exp.name, quant="fp32", model_kind="baseline")],
                   rows_uri(store, exp.name))
    e = estimate(spec, grid, store, measure=False)
    [price] = e["prices"].values()
    assert price["epochs"] == {"inner": 4.0, "refit": 2.0, "qat": 2.5}
    assert price["epochs_source"] == "the mean of this sweep's 2 finished trial(s)"
    assert e["trials"] == [exps[2].name]
    assert e["cpu_hours"] * 3600 == pytest.approx(trial_cpu(price, price["epochs"]))
    record_epochs(exps, store)                 # what a sweep leaves for the next one here
    again = estimate(spec, grid, str(tmp_path / "elsewhere" / "t"), measure=False)
    [price] = again["prices"].values()
    assert price["epochs"] == {"inner": 4.0, "refit": 2.0, "qat": 2.5}
    assert price["epochs_source"] == "the mean of 2 trial(s) of its last run here"
    assert again["cpu_hours"] == pytest.approx(3 * e["cpu_hours"])


def test_a_sweep_priced_beyond_the_machine_asks_for_yes(tmp_path, synth_dataset, two_variants,
                                                       monkeypatch, capsys):
    """The gate is analytic when nothing is cached: no training, no TensorFlow."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    spec = _spec(tmp_path / "s.yaml", synth_dataset, two_variants,
                 train={"epochs": 100000, "batch_size": 8})
    loaded = load_spec(spec)
    e = estimate(loaded, Grid.of(loaded), str(tmp_path / "store"), measure=False)
    assert e["cpu_hours"] > GATE_CPU_HOURS
    assert all(p["analytic"] for p in e["prices"].values())
    with pytest.raises(ConfigError, match=r"t: priced at \d+ CPU-hours .* only with --yes$"):
        run_sweep(spec, storage=str(tmp_path / "store"))
    assert main(["sweep", str(spec), "--storage", str(tmp_path / "store")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("signbart sweep: error: t: priced at") and "\n" not in err
    assert not (tmp_path / "store").exists() and not (tmp_path / "cache").exists()


@pytest.mark.slow
@pytest.mark.skipif(MLR511 is None, reason="../shared/data/mlr511-90 is absent")
def test_dry_run_price_is_within_30_percent_of_the_real_trial(tmp_path, monkeypatch):
    """A one-hold-out cut of the published spec on real keypoints, priced, then run."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    fields = yaml.safe_load((REPO / "sweeps/mlr511-nested.yaml").read_text())
    fields.update(name="price", data=str(MLR511), holdouts=["user04"], seeds=[42], retries=0,
                  variants=[str(REPO / "configs/arabic-asl-65kpts-framed-anchored.yaml")],
                  qat={**fields["qat"], "epochs": 2})
    fields["train"].update(epochs=6)
    spec = tmp_path / "price.yaml"
    spec.write_text(yaml.safe_dump(fields, sort_keys=False))
    store = tmp_path / "store"
    priced = run_sweep(spec, storage=str(store), dry_run=True).estimate
    [price] = priced["prices"].values()
    summary = run_sweep(spec, address="local", storage=str(store))
    assert summary.exit_code == 0
    [attempt] = json.loads((store / "price/results/user04-s42-arabic-asl-65kpts-framed-anchored"
                                     ".node.json").read_text())
    print(f"priced {price['cpu_s']:.0f} CPU-s, ran {attempt['cpu_seconds']:.0f} CPU-s")
    assert price["cpu_s"] == pytest.approx(attempt["cpu_seconds"], rel=0.3)
