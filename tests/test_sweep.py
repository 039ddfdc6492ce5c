"""The sweep runner on a real local Ray: the spec, the grid, failures, --resume, two nodes.

The slow tests train a tiny SignBART (d_model 16, one layer each side) for 2 epochs per trial,
so a trial costs mostly its fixed price (TF start-up, TFLite conversion), not training.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from signbart.config import trial_id
from signbart.errors import ConfigError, DatasetError
from signbart.results import read_rows
from signbart.sweep import run_sweep
from signbart.sweepspec import Grid, load_spec, sweep_hash

REPO = Path(__file__).resolve().parents[1]
PY = sys.executable

TINY_MODEL = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1,
              "encoder_attention_heads": 2, "decoder_attention_heads": 2,
              "encoder_ffn_dim": 16, "decoder_ffn_dim": 16}


@pytest.fixture(scope="session")
def variants(tmp_path_factory) -> dict[str, Path]:
    """A tiny 65-keypoint variant, and one that parses but cannot train on 10 classes."""
    d = tmp_path_factory.mktemp("variants")
    base = yaml.safe_load((REPO / "configs/arabic-asl-65kpts.yaml").read_text())
    tiny = {**base, "name": "tiny", "model": TINY_MODEL}
    bad = {**tiny, "name": "bad", "num_labels": 5}   # the dataset has 10 classes
    for v in (tiny, bad):
        (d / f"{v['name']}.yaml").write_text(yaml.safe_dump(v))
    return {"tiny": d / "tiny.yaml", "bad": d / "bad.yaml"}


def write_spec(path: Path, **fields) -> Path:
    path.write_text(yaml.safe_dump(fields, sort_keys=False))
    return path


def spec_fields(data, variants, **over) -> dict:
    return {"name": "t", "data": str(data), "holdouts": ["user01", "user02"], "seeds": [1, 2],
            "variants": [str(v) for v in variants], "quant": ["fp32"], "baseline": False,
            "train": {"epochs": 2, "batch_size": 8}, "qat": {"epochs": 1, "batch_size": 8},
            "retries": 1, "resources": {"cpu": 1}, **over}


def all_rows(results: Path) -> list[dict]:
    return read_rows(sorted(str(p) for p in results.glob("*.parquet"))).to_pylist()


# ---------------------------------------------------------------- spec and grid (fast)

def test_spec_errors_name_the_file_and_field(tmp_path, synth_dataset, variants):
    base = spec_fields(synth_dataset, [variants["tiny"]])
    cases = [({"quant": ["fp32", "fp16"]}, r"s\.yaml: quant: 'fp16' is not one of"),
             ({"epochs": 3}, r"s\.yaml: unknown key 'epochs'"),
             ({"ensemble_mix": "mean"}, r"s\.yaml: ensemble_mix: 'mean' is not one of"),
             ({"train": {"epochs": 0}}, r"s\.yaml\.train: epochs must be in \[1, 100000\], got 0"),
             ({"seeds": [1, 1]}, r"s\.yaml: seeds: 1 is listed twice"),
             ({"name": "a b"}, r"s\.yaml: name: 'a b' must be"),
             ({"ablation": {"x": {"hand_drop": 2.0}}}, r"s\.yaml: ablation\.x: hand_drop must"),
             ({"ablation": {"x": {"hand_dorp": 0.1}}}, r"ablation\.x: unknown key 'hand_dorp'"),
             ({"smoke": {"train": {"epochs": -1}}}, r"s\.yaml \(smoke\)\.train: epochs must"),
             ({"resources": {"cpu": 0}}, r"s\.yaml\.resources: cpu must be in \(0, 1024\], got 0")]
    for over, message in cases:
        with pytest.raises(ConfigError, match=message):
            load_spec(write_spec(tmp_path / "s.yaml", **{**base, **over}))
    spec = load_spec(write_spec(tmp_path / "s.yaml", **{**base, "holdouts": ["user09"]}))
    with pytest.raises(DatasetError, match="holdout signer 'user09' is not in the dataset"):
        Grid.of(spec)
    with pytest.raises(ConfigError, match="variants: .* is listed twice"):
        load_spec(write_spec(tmp_path / "s.yaml", **{
            **base, "variants": [str(variants["tiny"]), str(variants["tiny"])]}))
    shutil.copy(variants["tiny"], tmp_path / "copy.yaml")     # a second file named "tiny"
    same_name = load_spec(write_spec(tmp_path / "s.yaml", **{
        **base, "variants": [str(variants["tiny"]), str(tmp_path / "copy.yaml")]}))
    with pytest.raises(ConfigError, match="copy.yaml: variant name 'tiny' is also the name of"):
        Grid.of(same_name)


def test_grid_names_paths_smoke_and_ablation(tmp_path, synth_dataset, variants, monkeypatch):
    (tmp_path / "v").mkdir()
    shutil.copy(variants["tiny"], tmp_path / "v" / "tiny.yaml")
    monkeypatch.chdir(tmp_path)                     # relative paths resolve against the cwd
    spec = load_spec(write_spec(tmp_path / "s.yaml", **spec_fields(
        synth_dataset, ["v/tiny.yaml"], holdouts="all", quant=["fp32", "ptq"],
        ablation={"off": {"prob": 0.0}, "drop": {"hand_drop": 0.3}},
        smoke={"seeds": [7], "holdouts": ["user03"], "train": {"epochs": 1}})))
    assert spec.variants == (str(tmp_path / "v" / "tiny.yaml"),)
    grid = Grid.of(spec)
    names = [trial_id(**t) for t in grid.trials()]
    assert len(names) == 4 * 2 * 1 * 2 == len(set(names))
    exps = grid.experiments(spec)
    assert [e.name for e in exps] == names and "user03-s2-tiny-drop" in names
    exp = exps[names.index("user03-s2-tiny-drop")]
    assert (exp.ablation, exp.train.augment.hand_drop, exp.train.augment.prob) == ("drop", 0.3, 0.4)
    assert exp.variant == grid.variants["tiny"] and exp.variant.model["d_model"] == 16
    assert (exp.sweep, exp.quant, exp.threads, exp.baseline) == ("t", ("fp32", "ptq"), 1, False)

    smoke = load_spec(tmp_path / "s.yaml", smoke=True)
    assert (smoke.name, smoke.seeds, smoke.holdouts) == ("t-smoke", (7,), ("user03",))
    assert smoke.train.epochs == 1 and smoke.train.batch_size == 8   # merged, not replaced
    assert [trial_id(**t) for t in Grid.of(smoke).trials()] == ["user03-s7-tiny-off",
                                                                "user03-s7-tiny-drop"]


def test_refit_and_ensemble_rows_are_counted_as_cells(tmp_path, synth_dataset, variants):
    """A refit trial's keep-best row and the ensemble's rows are cells the summary expects."""
    from signbart.results import write_rows
    from signbart.storage import rows_uri
    from signbart.sweepsummary import summarize_run

    spec = load_spec(write_spec(tmp_path / "s.yaml", **spec_fields(
        synth_dataset, [variants["tiny"]], holdouts=["user01"], seeds=[1],
        quant=["fp32", "ptq", "qat"], ensemble=True, baseline=True,
        train={"epochs": 2, "refit": True})))
    grid = Grid.of(spec)
    kinds = [("signbart", q) for q in spec.quant] + [("ensemble", "fp32"), ("ensemble", "ptq"),
                                                     ("signbart-keepbest", "fp32"),
                                                     ("baseline", "fp32")]
    write_rows([{"sweep": "t", "trial_id": "user01-s1-tiny", "holdout": "user01", "seed": 1,
                 "variant": "tiny", "quant": q, "model_kind": k, "top1": 0.5} for k, q in kinds],
               rows_uri(str(tmp_path / "t"), "user01-s1-tiny"))
    summary = summarize_run(spec, grid, str(tmp_path / "t"), 0)
    assert (summary.cells, summary.cells_ok, summary.cells_missing, summary.exit_code) == \
        (6, 6, 0, 0)
    assert "(+2 ensemble cells) (+1 keep-best cells) (+1 baseline rows)" in summary.grid


def test_resume_hash_covers_the_resolved_variant_not_its_path(tmp_path, synth_dataset, variants):
    shutil.copy(variants["tiny"], tmp_path / "tiny.yaml")
    path = write_spec(tmp_path / "s.yaml", **spec_fields(synth_dataset, [tmp_path / "tiny.yaml"]))

    def resolved_hash():
        spec = load_spec(path)
        return sweep_hash(spec, Grid.of(spec).experiments(spec))

    before = resolved_hash()
    assert resolved_hash() == before                     # the same files, the same sweep
    edited = yaml.safe_load((tmp_path / "tiny.yaml").read_text())
    edited["model"]["dropout"] = 0.1                     # same path, other contents
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(edited))
    assert resolved_hash() != before


def test_every_sweep_file_loads(tmp_path, monkeypatch):
    """Each spec (and its smoke form) validates; the quickstart is the grid make runs."""
    from signbart.synth import synthesize

    files = sorted((REPO / "sweeps").glob("*.yaml"))
    assert {f.name for f in files} >= {"quickstart.yaml", "mlr511-loso.yaml",
                                       "mlr511-smoke.yaml", "mlr511-ablation.yaml"}
    monkeypatch.chdir(REPO)
    for f in files:
        for smoke in (False, True):
            spec = load_spec(f, smoke=smoke)
            assert all(Path(v).is_file() for v in spec.variants), f
    loso = load_spec(REPO / "sweeps/mlr511-loso.yaml")
    assert loso.holdouts == ("user01", "user08", "user11") and loso.quant == ("fp32", "ptq", "qat")
    assert (loso.train.epochs, loso.train.lr, loso.qat.epochs, loso.qat.lr, loso.qat.batch_size) \
        == (80, 2e-4, 20, 5e-5, 4)
    ablation = load_spec(REPO / "sweeps/mlr511-ablation.yaml")
    assert "none" in ablation.ablation and len(ablation.augments()) >= 8

    # The quickstart's grid on the data `make quickstart` synthesises.
    (tmp_path / "data").mkdir()
    synthesize(tmp_path / "data/synth-demo", signers=4, classes=10, reps=5, seed=0)
    (tmp_path / "configs").symlink_to(REPO / "configs")
    monkeypatch.chdir(tmp_path)
    quick = load_spec(REPO / "sweeps/quickstart.yaml")
    assert quick.data == str(tmp_path / "data/synth-demo")
    assert len(Grid.of(quick).trials()) == 2 and quick.quant == ("fp32", "ptq", "qat")


def test_cluster_yaml_is_a_valid_launcher_config():
    """cluster.yaml against the launcher's own schema (shipped with Ray), plus what we need."""
    import jsonschema
    import ray

    config = yaml.safe_load((REPO / "cluster.yaml").read_text())
    schema = json.loads((Path(ray.__file__).parent / "autoscaler/ray-schema.json").read_text())
    jsonschema.validate(config, schema)
    assert config["provider"]["type"] == "aws" and config["provider"]["region"]
    assert config["head_node_type"] in config["available_node_types"]
    for node_type in config["available_node_types"].values():
        assert {"node_config", "resources"} <= set(node_type)
    workers = [t for k, t in config["available_node_types"].items()
               if k != config["head_node_type"]]
    assert all({"min_workers", "max_workers"} <= set(t) for t in workers)
    assert any(t["max_workers"] > t["min_workers"] for t in workers)          # autoscaling
    assert any("pip install" in c and "-e ~/signbart" in c for c in config["setup_commands"])
    assert config["file_mounts"]["~/signbart"] == "."
    assert config["auth"]["ssh_user"]
    start = " ".join(config["head_start_ray_commands"])
    assert "--dashboard-host=127.0.0.1" in start and "0.0.0.0" not in start   # never public


# ---------------------------------------------------------------- real sweeps (slow)

def _wait_for(predicate, timeout: float, what: str, proc=None):
    deadline = time.time() + timeout
    while time.time() < deadline:
        found = predicate()
        if found:
            return found
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"driver exited ({proc.returncode}) before {what}")
        time.sleep(1)
    raise AssertionError(f"timed out waiting for {what}")


def _kill_session(proc: subprocess.Popen) -> None:
    """SIGKILL every process in ``proc``'s session (it was started with start_new_session):
    the driver or ``ray start`` and everything it spawned. Ray's workers put themselves in
    their own process groups, so killing the group alone would let a trial finish."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getsid(pid) == proc.pid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    proc.wait(timeout=60)


@pytest.mark.slow
def test_sweep_failures_kill_and_resume(tmp_path, synth_dataset, variants):
    """2 holdouts x 2 seeds x {tiny, bad} x fp32/ptq/qat. The driver is SIGKILLed once the
    first trial's rows exist; --resume finishes the rest without re-running that trial; the
    bad variant's trials fail (after a retry) into failed rows and a non-zero exit."""
    spec = write_spec(tmp_path / "s.yaml", **spec_fields(
        synth_dataset, [variants["tiny"], variants["bad"]], name="loso",
        quant=["fp32", "ptq", "qat"], baseline=True))
    storage, results = tmp_path / "store", tmp_path / "store/loso/results"
    with open(tmp_path / "driver.log", "w") as log:
        driver = subprocess.Popen([PY, "-m", "signbart.cli", "sweep", str(spec), "--storage",
                                   str(storage), "--address", "local", "--max-concurrent", "2"],
                                  cwd=tmp_path, stdout=log, stderr=subprocess.STDOUT,
                                  start_new_session=True)
        try:
            first = _wait_for(lambda: list(results.glob("*-tiny.parquet")), 900,
                              "the first finished trial", driver)[0]
        finally:
            _kill_session(driver)   # SIGKILL: the driver and the local Ray it started, mid-sweep
    before = (first.stat().st_mtime_ns, pq.read_table(first).column("created_at").to_pylist())

    summary = run_sweep(spec, address="local", storage=str(storage), resume=True)

    good = [f"{h}-s{s}-tiny" for h in ("user01", "user02") for s in (1, 2)]
    bad = [f"{h}-s{s}-bad" for h in ("user01", "user02") for s in (1, 2)]
    rows = all_rows(results)
    keys = [(r["trial_id"], r["quant"], r["model_kind"]) for r in rows]
    assert len(keys) == len(set(keys)), "duplicate rows"
    ok = [r for r in rows if r["status"] == "ok" and r["model_kind"] == "signbart"]
    assert len(ok) == 12 and {r["trial_id"] for r in ok} == set(good)
    baseline = [r for r in rows if r["model_kind"] == "baseline"]
    assert len(baseline) == 4 and all(r["status"] == "ok" for r in baseline)
    for tid in good:                     # one FP32 training per trial; ptq/qat derive from it
        mine = [r for r in ok if r["trial_id"] == tid]
        assert {r["quant"] for r in mine} == {"fp32", "ptq", "qat"}
        assert len({r["fp32_model_path"] for r in mine}) == 1
        assert Path(mine[0]["fp32_model_path"]).is_file()
        assert all(Path(r["model_path"]).is_file() for r in mine)
    failed = [r for r in rows if r["status"] == "failed"]
    assert {r["trial_id"] for r in failed} == set(bad) and len(failed) == 12
    assert all(r["error"].startswith("ConfigError: variant 'bad': num_labels is 5") and
               "\n" not in r["error"] for r in failed)      # the root cause, in one line
    assert sorted(p.name for p in results.glob("*.failed.parquet")) == sorted(
        f"{t}.failed.parquet" for t in bad)

    # The trial finished before the kill was not run again.
    assert (first.stat().st_mtime_ns, pq.read_table(first).column(
        "created_at").to_pylist()) == before
    attempts = json.loads(first.with_name(first.name.replace(".parquet", ".node.json")).read_text())
    assert len(attempts) == 1
    assert (summary.cells, summary.cells_ok, summary.cells_failed, summary.cells_missing) \
        == (24, 12, 12, 0)
    assert summary.baseline_ok == 4 and summary.skipped >= 1
    assert summary.exit_code == 1 and not summary.ok and set(summary.errors) == set(bad)
    assert "FAILED user01-s1-bad" in str(summary)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


HEAD_NODE = """
import sys, time, ray
ray.init(address=sys.argv[1])
while sum(n["Alive"] for n in ray.nodes()) < 2:
    time.sleep(1)
print([n["NodeID"] for n in ray.nodes() if "node:__internal_head__" in n["Resources"]][0])
"""


@pytest.mark.slow
def test_two_node_cluster_survives_losing_a_worker(tmp_path, synth_dataset, variants):
    """`ray start --head` + `ray start --address` on this machine, one CPU each, and
    `signbart sweep --address`. Trials run on both nodes; the worker node is killed while it
    runs a trial, which is re-run on the head, and every cell ends ok. Re-running the
    finished sweep then trains nothing."""
    ray_bin = str(Path(PY).parent / "ray")
    temp = Path(f"/tmp/sbw-{os.getpid()}")        # short: Ray's socket paths have a limit
    port = _free_port()
    address = f"127.0.0.1:{port}"
    # Ray 2.60 authenticates every party with the token in ~/.ray/auth_token.
    env = {**os.environ, "RAY_ADDRESS": "", "RAY_AUTH_MODE": "token"}
    quiet = {"env": env, "stdout": subprocess.DEVNULL, "stderr": subprocess.STDOUT,
             "start_new_session": True}
    head = subprocess.Popen([ray_bin, "start", "--head", "--block", f"--port={port}",
                             "--num-cpus=1", "--include-dashboard=false", f"--temp-dir={temp}",
                             f"--ray-client-server-port={_free_port()}"], **quiet)
    worker = None
    try:
        _wait_for(lambda: (temp / "ray_current_cluster").exists(), 120, "the head node", head)
        worker = subprocess.Popen([ray_bin, "start", "--block", f"--address={address}",
                                   "--num-cpus=1"], **quiet)
        head_id = subprocess.run([PY, "-c", HEAD_NODE, address], env=env, capture_output=True,
                                 text=True, timeout=180, check=True).stdout.split()[-1]
        spec = write_spec(tmp_path / "s.yaml", **spec_fields(synth_dataset, [variants["tiny"]],
                                                             name="two", retries=2))
        results = tmp_path / "store/two/results"
        sweep = [PY, "-m", "signbart.cli", "sweep", str(spec), "--address", address,
                 "--storage", str(tmp_path / "store")]

        def attempts():
            return {p.name[:-len(".node.json")]: json.loads(p.read_text())
                    for p in results.glob("*.node.json")}

        def worker_busy_after_a_finish():
            on_worker = {t: a[-1] for t, a in attempts().items() if a[-1]["node_id"] != head_id}
            return (any((results / f"{t}.parquet").exists() for t in on_worker)
                    and any("seconds" not in a for a in on_worker.values()))

        with open(tmp_path / "driver.log", "w") as log:
            driver = subprocess.Popen(sweep, env=env, stdout=log, stderr=subprocess.STDOUT)
            _wait_for(worker_busy_after_a_finish, 900, "a second trial on the worker", driver)
            _kill_session(worker)                          # the worker node dies mid-trial
            assert driver.wait(timeout=900) == 0, (tmp_path / "driver.log").read_text()[-3000:]
        final = attempts()
        nodes = {a[-1]["node_id"] for a in final.values()}
        assert len(nodes) == 2 and head_id in nodes          # finished trials on both nodes
        moved = [t for t, a in final.items() if len(a) > 1]
        assert moved and all(final[t][-1]["node_id"] == head_id for t in moved)
        rows = all_rows(results)
        assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)

        mtimes = {p.name: p.stat().st_mtime_ns for p in results.glob("*.parquet")}
        again = subprocess.run([*sweep, "--resume"], env=env, capture_output=True, text=True,
                               check=False, timeout=600)
        assert again.returncode == 0, again.stdout[-3000:] + again.stderr[-3000:]
        assert "4 ok, 0 failed, 0 missing of 4" in again.stdout
        assert "4 trial(s) already finished" in again.stdout
        assert {p.name: p.stat().st_mtime_ns for p in results.glob("*.parquet")} == mtimes
        assert attempts() == final                          # no trial started again
    finally:
        if worker is not None:
            _kill_session(worker)
        _kill_session(head)
        shutil.rmtree(temp, ignore_errors=True)


@pytest.mark.slow
def test_uri_storage_uploads_models_and_resumes(tmp_path, synth_dataset, variants):
    """Storage as a URI (file:// here, s3:// on a cloud): rows and models land there, the
    rows point at the uploaded models, and --resume finds the finished trial there."""
    spec = write_spec(tmp_path / "s.yaml", **spec_fields(
        synth_dataset, [variants["tiny"]], name="uri", holdouts=["user01"], seeds=[1],
        quant=["fp32", "ptq"], train={"epochs": 1, "batch_size": 8}))
    storage = f"file://{tmp_path}/store"
    summary = run_sweep(spec, address="local", storage=storage)
    assert (summary.cells_ok, summary.exit_code, summary.path) == (2, 0, f"{storage}/uri")
    rows = read_rows([f"{storage}/uri/results/user01-s1-tiny.parquet"]).to_pylist()
    for r in rows:
        assert r["model_path"].startswith(f"{storage}/uri/user01-s1-tiny/")
        assert Path(r["model_path"].removeprefix("file://")).is_file()
        assert r["fp32_model_path"] == f"{storage}/uri/user01-s1-tiny/model.keras"
    again = run_sweep(spec, address="local", storage=storage, resume=True)
    assert (again.cells_ok, again.skipped) == (2, 1)
    attempts = json.loads((tmp_path / "store/uri/results/user01-s1-tiny.node.json").read_text())
    assert len(attempts) == 1


@pytest.mark.slow
def test_a_trial_worker_opens_no_yaml_file(tmp_path, synth_dataset, variants):
    """The driver resolves the spec and variant files; they are then deleted and the trial
    still runs, because Tune hands the worker the experiment as data, never a path."""
    from signbart import sweep
    from signbart.raycluster import connect

    shutil.copy(variants["tiny"], tmp_path / "tiny.yaml")
    path = write_spec(tmp_path / "s.yaml", **spec_fields(
        synth_dataset, [tmp_path / "tiny.yaml"], name="noyaml", holdouts=["user01"], seeds=[1],
        train={"epochs": 1, "batch_size": 8}))
    spec = load_spec(path)
    experiments = Grid.of(spec).experiments(spec)
    path.unlink()
    (tmp_path / "tiny.yaml").unlink()
    started = connect("local", env=sweep.WORKER_ENV)
    try:
        results = sweep._tuner(spec, experiments, str(tmp_path / "store"), False, None).fit()
    finally:
        if started:
            import ray
            ray.shutdown()
    assert [r.error for r in results] == [None]
    [row] = read_rows([str(tmp_path / "store/noyaml/results/user01-s1-tiny.parquet")]).to_pylist()
    assert row["status"] == "ok" and row["top1"] is not None
    assert json.loads(row["config"]) == experiments[0].to_dict()


@pytest.mark.slow
def test_train_runs_one_cell_of_a_spec_as_the_sweep_resolves_it(tmp_path, synth_dataset,
                                                                 variants):
    path = write_spec(tmp_path / "s.yaml", **spec_fields(
        synth_dataset, [variants["tiny"]], name="one", train={"epochs": 1, "batch_size": 8},
        ablation={"off": {"prob": 0.0}, "drop": {"hand_drop": 0.3}}))
    argv = [PY, "-m", "signbart.cli", "train", "--spec", str(path), "--holdout", "user02",
            "--seed", "2", "--out", str(tmp_path / "run")]
    p = subprocess.run(argv, capture_output=True, text=True, cwd=REPO, check=False)
    assert p.returncode == 2 and "one: ablation '' is not in the spec (known: 'off', 'drop')" \
        in p.stderr
    p = subprocess.run(argv + ["--ablation", "drop"], capture_output=True, text=True, cwd=REPO,
                       check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    [row] = read_rows([str(tmp_path / "run/results.parquet")]).to_pylist()
    spec = load_spec(path)
    [exp] = [e for e in Grid.of(spec).experiments(spec) if e.name == "user02-s2-tiny-drop"]
    assert (row["trial_id"], row["ablation"], row["status"]) == (exp.name, "drop", "ok")
    assert json.loads(row["config"]) == exp.to_dict()     # the very experiment the sweep runs


def test_only_the_run_imports_ray():
    """The spec, its grid, its price and the end-of-run counts load without Ray: the Tune run
    (signbart.sweep) is the one room that needs it."""
    code = ("import sys; import signbart.sweepspec, signbart.pricing, signbart.sweepsummary; "
            "print('ray' in sys.modules)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    assert out[-1] == "False"


def test_driver_never_imports_tensorflow(synth_dataset, variants, tmp_path):
    """Validating a spec and building its grid (all the driver does) stays TF-free."""
    spec = write_spec(tmp_path / "s.yaml", **spec_fields(synth_dataset, [variants["tiny"]]))
    code = ("import sys; import signbart.sweep; from signbart.sweepspec import Grid, load_spec; "
            f"Grid.of(load_spec({str(spec)!r})); print('tensorflow' in sys.modules)")
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True,
                         timeout=120).stdout.split()
    assert out[-1] == "False"
