"""A sweep is one experiment, with one writer, stopped cleanly: the sweep side of the faults
in ``sweeps/README.md`` ("Faults"). Each test drives ``signbart sweep`` in its own process
on tiny synthetic data and checks what the user sees and what is kept: a changed spec
refused on ``--resume`` (naming the field), ``--extend`` adding cells only, a second writer
refused naming the first (``flock`` locally, a lease on a real S3-protocol server), SIGTERM
answered with one sentence and no Ray process left, and a local Ray on 127.0.0.1 only.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import pytest
import test_sweep
from conftest import REPO
from test_faults import PY, one_sentence, signbart
from test_sweep import _wait_for, all_rows, spec_fields, write_spec

from signbart import sweeprecord
from signbart.config import config_hash, to_dict, trial_id
from signbart.errors import UserError
from signbart.outlock import S3Lease
from signbart.results import git_sha, write_rows
from signbart.sweepspec import Grid, load_spec, sweep_hash
from signbart.trial import expected_rows

variants = test_sweep.variants   # the tiny variant's fixture


def session(pid: int) -> list[int]:
    """The live processes of the session ``pid`` leads (the driver and the Ray it started)."""
    out = []
    for p in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getsid(p) == pid and "zombie" not in Path(f"/proc/{p}/status").read_text():
                out.append(p)
        except (ProcessLookupError, PermissionError, FileNotFoundError):
            pass
    return out


def listening(pids: list[int]) -> list[str]:
    """The local addresses ``pids`` listen on, from ``ss -ltnp``."""
    out = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True, check=True).stdout
    return [line.split()[3] for line in out.splitlines()
            if {int(p) for p in re.findall(r"pid=(\d+)", line)} & set(pids)]


def record_of(spec_path: Path, storage: Path) -> dict:
    """The format-2 sweep.json a sweep of ``spec_path`` writes when it starts."""
    spec = load_spec(spec_path)
    exps = Grid.of(spec).experiments(spec)
    return sweeprecord.record(None, spec.name, to_dict(spec), sweep_hash(spec, exps),
                              sweeprecord.cells(exps), git_sha(), "start")


def finish_every_cell(spec_path: Path, storage: Path) -> None:
    """A row file for every trial, as if the sweep had run (no training)."""
    spec = load_spec(spec_path)
    for t in Grid.of(spec).trials():
        write_rows([{"sweep": spec.name, "trial_id": trial_id(**t), "holdout": t["holdout"],
                     "seed": t["seed"], "variant": t["variant"], "quant": "fp32", "top1": 0.5}],
                   str(storage / spec.name / "results" / f"{trial_id(**t)}.parquet"))


# ---------------------------------------------------------------- a changed grid (fast)

def test_a_changed_spec_is_refused_before_ray_naming_the_field(tmp_path, synth_dataset,
                                                               variants):
    fields = spec_fields(synth_dataset, [variants["tiny"]], holdouts=["user01"], seeds=[1],
                         train={"epochs": 1, "batch_size": 8})
    first = load_spec(write_spec(tmp_path / "a.yaml", **fields))
    storage = tmp_path / "store"
    (storage / "t").mkdir(parents=True)
    before = json.dumps({"hash": sweep_hash(first, Grid.of(first).experiments(first)),
                         "spec": to_dict(first)})   # format 1: what a sweep of today writes
    (storage / "t" / "sweep.json").write_text(before)
    edited = write_spec(tmp_path / "b.yaml", **{**fields, "train": {"epochs": 3,
                                                                    "batch_size": 4}})
    for extra in (["--resume"], []):     # a resume, and a fresh start into the same folder
        t0 = time.monotonic()
        p = signbart("sweep", edited, "--storage", storage, *extra)
        assert p.returncode == 2, p.stderr[-2000:]
        line = one_sentence(p, "sweep")
        assert "train.batch_size was 8, now 4; train.epochs was 1, now 3" in line
        assert "another `name:`" in line and "--extend" in line
        assert len(p.stderr.strip().splitlines()) == 1          # Ray never started
        assert time.monotonic() - t0 < 60
    assert (storage / "t" / "sweep.json").read_text() == before


def test_extend_adds_cells_and_never_changes_one(tmp_path, synth_dataset, variants):
    fields = spec_fields(synth_dataset, [variants["tiny"]], holdouts=["user01", "user02"],
                         seeds=[1], train={"epochs": 1, "batch_size": 8})
    spec = write_spec(tmp_path / "a.yaml", **fields)
    storage = tmp_path / "store"
    (storage / "t").mkdir(parents=True)
    old = record_of(spec, storage)
    uri = str(storage / "t" / "sweep.json")

    def check(**over):
        s = load_spec(write_spec(tmp_path / "b.yaml", **{**fields, **over}))
        exps = Grid.of(s).experiments(s)
        sweeprecord.check(uri, old, to_dict(s), sweep_hash(s, exps), sweeprecord.cells(exps),
                          extend=True)

    check(seeds=[1, 2], holdouts=["user01", "user02", "user03"])   # only new cells: allowed
    with pytest.raises(UserError, match=r"user01-s1-tiny would change: train\.epochs was 1, "
                                        r"now 2; nothing was run"):
        check(seeds=[1, 2], train={"epochs": 2, "batch_size": 8})
    with pytest.raises(UserError, match="only adds cells, and user02-s1-tiny is no longer"):
        check(holdouts=["user01"])
    format1 = {"hash": old["hash"], "spec": old["spec"]}
    with pytest.raises(UserError, match="resume once with the unchanged spec first"):
        sweeprecord.check(uri, format1, old["spec"], "other", old["cells"], extend=True)
    # without --extend, a grid with more cells is refused too, naming the change
    s = load_spec(write_spec(tmp_path / "c.yaml", **{**fields, "seeds": [1, 2]}))
    exps = Grid.of(s).experiments(s)
    with pytest.raises(UserError, match=r"seeds was \[1\], now \[1, 2\].*or with --extend"):
        sweeprecord.check(uri, old, to_dict(s), sweep_hash(s, exps), sweeprecord.cells(exps),
                          extend=False)


# ---------------------------------------------------------------- format 1 is upgraded

@pytest.mark.slow
def test_resume_upgrades_a_format_1_sweep_json_and_trains_nothing(tmp_path, synth_dataset,
                                                                  variants):
    spec_path = write_spec(tmp_path / "s.yaml", **spec_fields(
        synth_dataset, [variants["tiny"]], seeds=[1], train={"epochs": 1, "batch_size": 8}))
    storage = tmp_path / "store"
    finish_every_cell(spec_path, storage)
    spec = load_spec(spec_path)
    exps = Grid.of(spec).experiments(spec)
    (storage / "t" / "sweep.json").write_text(json.dumps(   # what today's code writes
        {"hash": sweep_hash(spec, exps), "spec": to_dict(spec)}))
    p = signbart("sweep", spec_path, "--resume", "--storage", storage, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cells: 2 ok, 0 failed, 0 missing of 2" in p.stdout
    assert "2 trial(s) already finished" in p.stdout
    got = json.loads((storage / "t" / "sweep.json").read_text())
    assert (got["format"], got["name"], got["hash"]) == (2, "t", sweep_hash(spec, exps))
    assert [(c["trial_id"], c["config_hash"], c["rows"], c["seed"], c["ablation"])
            for c in got["cells"]] == [(e.name, config_hash(e.to_dict()),
                                        [list(r) for r in expected_rows(e)], 1, "")
                                       for e in exps]
    assert [r["mode"] for r in got["runs"]] == ["resume"]
    assert got["git_sha"] == got["runs"][0]["git_sha"] == git_sha()


# ---------------------------------------------------------------- SIGTERM, one writer, ports

@pytest.mark.slow
def test_sigterm_mid_sweep_then_a_second_writer_a_changed_spec_resume_and_extend(
        tmp_path, synth_dataset, variants):
    """The issue's reproduction on a real local Ray: while the sweep runs, its Ray listens
    on 127.0.0.1 only and a second sweep into the folder is refused naming the first; a
    SIGTERM once one trial is done is one sentence, exit 143, and no process of that Ray
    left; the changed spec is refused; the printed command finishes with 0 lost and 0
    duplicate rows; --extend adds a hold-out and trains only it."""
    fields = spec_fields(synth_dataset, [variants["tiny"]], holdouts=["user01", "user02"],
                         seeds=[1], train={"epochs": 1, "batch_size": 8})
    spec = write_spec(tmp_path / "s.yaml", **fields)
    storage = tmp_path / "store"
    results = storage / "t" / "results"
    err = tmp_path / "driver.err"
    with open(err, "w") as stderr:
        driver = subprocess.Popen(
            [PY, "-m", "signbart.cli", "sweep", str(spec), "--storage", str(storage),
             "--max-concurrent", "1"], cwd=REPO, stdout=subprocess.DEVNULL, stderr=stderr,
            start_new_session=True)
    try:
        _wait_for(lambda: (storage / "t" / "sweep.json").exists(), 300, "sweep.json", driver)
        second = signbart("sweep", spec, "--storage", storage)
        assert driver.poll() is None          # refused while the first is still running
        assert second.returncode == 2
        line = one_sentence(second, "sweep")
        assert f"(PID {driver.pid}) is writing this folder (on {socket.gethostname()})" in line

        _wait_for(lambda: len(listening(session(driver.pid))) >= 5, 120, "Ray's ports", driver)
        addresses = listening(session(driver.pid))
        assert all(a.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:"))
                   for a in addresses), addresses

        first = _wait_for(lambda: list(results.glob("*-tiny.parquet")), 600,
                          "the first finished trial", driver)[0]
        kept = first.stat().st_mtime_ns
        driver.send_signal(signal.SIGTERM)
        assert driver.wait(timeout=120) == 128 + signal.SIGTERM
    finally:
        if driver.poll() is None:
            driver.kill()
    text = err.read_text()
    assert "SIGTERM received" not in text and "Traceback" not in text, text[-3000:]
    last = text.strip().splitlines()[-1]
    assert last.startswith("signbart sweep: stopped by SIGTERM: the rows of the 1 finished "
                           f"trial(s) in {results} are kept; continue with `"), text[-2000:]
    _wait_for(lambda: not session(driver.pid), 15, "Ray's processes to end")

    # the edited spec is refused, before Ray, naming both fields
    edited = write_spec(tmp_path / "s.yaml", **{**fields, "train": {"epochs": 2,
                                                                     "batch_size": 4}})
    p = signbart("sweep", edited, "--resume", "--storage", storage)
    assert p.returncode == 2 and len(p.stderr.strip().splitlines()) == 1
    assert "train.batch_size was 8, now 4; train.epochs was 1, now 2" in one_sentence(p, "sweep")

    # the command the sentence printed, as printed, with the spec as it was
    write_spec(spec, **fields)
    command = shlex.split(last.split("`")[1])
    assert command[:4] == ["signbart", "sweep", str(spec), "--resume"]
    p = subprocess.run([PY, "-m", "signbart.cli", *command[1:]], capture_output=True, text=True,
                       cwd=REPO, timeout=900, check=False)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cells: 2 ok, 0 failed, 0 missing of 2" in p.stdout
    keys = [(r["trial_id"], r["quant"], r["model_kind"]) for r in all_rows(results)]
    assert sorted(keys) == [("user01-s1-tiny", "fp32", "signbart"),
                            ("user02-s1-tiny", "fp32", "signbart")]
    assert first.stat().st_mtime_ns == kept                 # the finished trial, untouched

    # --extend: one more hold-out trains, the others are skipped; a changed cell is refused
    wider = write_spec(tmp_path / "s.yaml", **{**fields, "holdouts": ["user01", "user02",
                                                                      "user03"]})
    p = signbart("sweep", wider, "--extend", "--storage", storage, timeout=900)
    assert p.returncode == 0, p.stderr[-3000:]
    assert "cells: 3 ok, 0 failed, 0 missing of 3" in p.stdout
    assert first.stat().st_mtime_ns == kept
    got = json.loads((storage / "t" / "sweep.json").read_text())
    assert [r["mode"] for r in got["runs"]] == ["start", "resume", "extend"]
    assert [c["trial_id"] for c in got["cells"]] == [f"user0{i}-s1-tiny" for i in (1, 2, 3)]
    longer = write_spec(tmp_path / "s.yaml", **{**fields, "holdouts": ["user01", "user02",
                                                                       "user03", "user04"],
                                                "train": {"epochs": 2, "batch_size": 8}})
    p = signbart("sweep", longer, "--extend", "--storage", storage)
    assert p.returncode == 2
    assert "user01-s1-tiny would change: train.epochs was 1, now 2" in one_sentence(p, "sweep")


# ---------------------------------------------------------------- a lease on S3

@pytest.fixture
def s3(monkeypatch):
    """A real S3-protocol server (moto) on 127.0.0.1 with one bucket; the environment that
    pyarrow and boto3 both read points at it."""
    import boto3
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {"AWS_ENDPOINT_URL": f"http://{host}:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_DEFAULT_REGION": "us-east-1"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    boto3.client("s3").create_bucket(Bucket="sweeps")
    yield env
    server.stop()


def test_a_second_sweep_on_s3_is_refused_by_the_lease(tmp_path, synth_dataset, variants, s3):
    spec = write_spec(tmp_path / "s.yaml", **spec_fields(synth_dataset, [variants["tiny"]]))
    with S3Lease("s3://sweeps/store/t"):
        p = signbart("sweep", spec, "--storage", "s3://sweeps/store", env={**os.environ, **s3})
    assert p.returncode == 2
    line = one_sentence(p, "sweep")
    assert (f"another signbart process (PID {os.getpid()} on {socket.gethostname()}) is writing"
            in line)
    assert len(p.stderr.strip().splitlines()) == 1          # before Ray started
    import boto3
    listed = boto3.client("s3").list_objects_v2(Bucket="sweeps", Prefix="store/t/")
    assert "Contents" not in listed                          # released on exit


def test_an_s3_lease_has_one_winner_is_renewed_and_expires(s3):
    import boto3

    winners, refused = [], []
    start = threading.Barrier(4)

    def take():
        lease = S3Lease("s3://sweeps/race", seconds=30)
        start.wait()
        try:
            winners.append(lease.__enter__())
        except UserError as e:
            refused.append(str(e))
    threads = [threading.Thread(target=take) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(winners) == 1 and len(refused) == 3       # the conditional put: one winner
    winners[0].__exit__(None, None, None)

    held = S3Lease("s3://sweeps/renew", seconds=2)
    with held:
        first = held._etag
        time.sleep(1.5)                                   # renewed every seconds / 4
        assert held._etag != first
        with pytest.raises(UserError, match="renewed while it runs"):
            S3Lease("s3://sweeps/renew").__enter__()

    stale = S3Lease("s3://sweeps/stale", seconds=1)
    stale.__enter__()
    stale._stop.set()                                    # its holder stops renewing (a kill -9)
    stale._thread.join()
    time.sleep(1.2)
    with S3Lease("s3://sweeps/stale") as taker:
        body = boto3.client("s3").get_object(Bucket="sweeps", Key="stale/.lease.json")
        assert json.loads(body["Body"].read())["token"] == taker._token

    with pytest.raises(UserError, match="NoSuchBucket"):
        S3Lease("s3://no-such-bucket/x").__enter__()
