"""The cluster path as a user walks it: the README's `ray start` / `signbart sweep --address` /
`ray job submit` / dashboard commands run as printed (ports made free, nothing else changed)
in a copy of the repository, and `raycluster.connect`'s one-line errors."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml
from videos import photo_video

from signbart.errors import UserError
from signbart.raycluster import connect
from signbart.results import read_rows

REPO = Path(__file__).resolve().parents[1]
TRIAL = "user01-s42-arabic-asl-65kpts"


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def kill_session(sid: int) -> None:
    """SIGKILL every process of session ``sid``: a `ray start` and all it spawned."""
    for pid in (int(p) for p in os.listdir("/proc") if p.isdigit()):
        try:
            if os.getsid(pid) == sid:
                os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass


def readme_block(heading: str) -> list[str]:
    """The commands of the first ```bash block after ``heading``: continuation lines joined,
    trailing comments dropped."""
    text = (REPO / "README.md").read_text()
    block = text[text.index(heading):].split("```bash\n", 1)[1].split("```", 1)[0]
    block = block.replace("\\\n", " ")
    return [re.sub(r"\s+#\s.*$", "", line).strip() for line in block.splitlines() if line.strip()]


def test_connect_errors_are_one_sentence(monkeypatch):
    """Nothing listening: one sentence, no retry loop (the token cases run on a real head in
    the slow test below)."""
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    start = time.monotonic()
    with pytest.raises(UserError, match=r"no Ray cluster answers at 127.0.0.1:\d+ \(UNAVAILABLE\)"):
        connect(f"127.0.0.1:{free_port()}")
    assert time.monotonic() - start < 10


def _copy_checkout(dest: Path) -> None:
    """What a clean clone holds: tracked and not-ignored files, plus the installed .venv."""
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard", "-z"], cwd=REPO,
                           capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, files):
        src = REPO / name
        if src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    (dest / ".venv").symlink_to((REPO / ".venv").resolve())


CONNECT = """
import sys
from signbart.raycluster import connect
from signbart.errors import UserError
try:
    connect(sys.argv[1])
except UserError as e:
    print(e)
"""


@pytest.mark.slow
def test_readme_cluster_commands_run_as_printed(tmp_path):
    """`ray start --head`, `signbart sweep --address`, `ray job submit`, the dashboard: each
    README command in turn, then what it should have left: rows from both runs, SUCCEEDED,
    trial actors named by trial id in Ray's state API, a dashboard that wants the token."""
    commands = readme_block("### On a Ray cluster")
    setup = [c for c in commands if c.startswith(("source ", "export "))]
    steps = [c for c in commands if c not in setup]
    assert [c.split()[:2] for c in steps] == [["ray", "get-auth-token"], ["ray", "start"],
                                              ["signbart", "sweep"], ["ray", "job"],
                                              ["ray", "get-auth-token"]]
    gcs, dashboard = free_port(), free_port()
    temp = Path(f"/tmp/sbc-{os.getpid()}")         # short: Ray's socket paths have a limit
    # Ports made free for a shared machine; a private temp dir so no other `auto` finds it.
    extra = (f" --temp-dir={temp} --ray-client-server-port={free_port()} --disable-usage-stats"
             f" --dashboard-agent-listen-port={free_port()} --metrics-export-port={free_port()}")
    steps = [c.replace("6379", str(gcs)).replace("8265", str(dashboard))
             + (extra if c.startswith("ray start") else "") for c in steps]
    clone = tmp_path / "clone"
    _copy_checkout(clone)
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "RAY_AUTH_MODE")}
    subprocess.run([str(REPO / ".venv/bin/signbart"), "synth", "data/synth-demo", "--signers",
                    "4", "--classes", "10", "--reps", "5", "--seed", "0"], cwd=clone, env=env,
                   check=True, capture_output=True)   # the quickstart's dataset
    sessions, out = [], {}

    def run(cmd: str, timeout: int = 900) -> str:
        proc = subprocess.Popen(["bash", "-c", " && ".join([*setup, cmd])], cwd=clone, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        sessions.append(proc.pid)
        text = proc.communicate(timeout=timeout)[0]
        assert proc.returncode == 0, f"{cmd}\n{text[-4000:]}"
        return text

    try:
        for cmd in steps:
            out[cmd.split()[0] + " " + cmd.split()[1]] = run(cmd)
        sweep, job, token = out["signbart sweep"], out["ray job"], out["ray get-auth-token"]
        (tmp_path / "sweep.log").write_text(sweep)
        (tmp_path / "job.log").write_text(job)
        assert "InvalidAuthToken" not in sweep + job
        assert "val accuracy" in sweep and f"top-1 {TRIAL}: fp32 " in sweep   # Tune's table
        for storage in ("ray_results", "ray_results/jobs"):
            rows = read_rows([str(p) for p in
                              (clone / storage / "quickstart-smoke/results").glob("*.parquet")])
            rows = rows.to_pylist()
            assert {(r["trial_id"], r["quant"], r["model_kind"], r["status"]) for r in rows} == {
                (TRIAL, q, "signbart", "ok") for q in ("fp32", "ptq", "qat")} | {
                (TRIAL, "fp32", "baseline", "ok")}
            assert all(r["node_id"] and r["hostname"] for r in rows)
        job_id = re.search(r"raysubmit_\w+", job).group(0)
        status = run(f"ray job status --address http://127.0.0.1:{dashboard} {job_id}")
        assert f"Job '{job_id}' succeeded" in status, status
        actors = json.loads(run(f"ray list actors --address http://127.0.0.1:{dashboard} "
                                "--detail --format json --limit 1000"))
        names = {a.get("repr_name") for a in actors}
        assert TRIAL in names and "_trainable" not in names, names   # the dashboard's name

        # Extraction on the same cluster: its tasks are named by video.
        photo_video(clone / "videos/user05_G02_R01.mp4")
        run(f"signbart extract videos out --address 127.0.0.1:{gcs}")
        tasks = json.loads(run(f"ray list tasks --address http://127.0.0.1:{dashboard} "
                               "--detail --format json --limit 1000"))
        assert "extract user05_G02_R01.mp4" in {t["name"] for t in tasks}

        url = f"http://127.0.0.1:{dashboard}/api/jobs/"
        with pytest.raises(urllib.error.HTTPError, match="401"):
            urllib.request.urlopen(url, timeout=30)
        request = urllib.request.Request(url, headers={"Authorization":
                                                       f"Bearer {token.strip()}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200 and job_id in response.read().decode()

        # TensorBoard as the README prints it (on a free port): every trial's curves.
        board = "tensorboard --logdir ray_results"
        assert f"`{board}`" in (REPO / "README.md").read_text()
        port = free_port()
        tb = subprocess.Popen(["bash", "-c", " && ".join([*setup, f"{board} --port {port}"])],
                              cwd=clone, env=env, stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
        sessions.append(tb.pid)
        deadline, runs = time.monotonic() + 120, ""
        while TRIAL not in runs and time.monotonic() < deadline:
            time.sleep(2)
            with contextlib.suppress(OSError):
                runs = urllib.request.urlopen(f"http://127.0.0.1:{port}/data/runs",
                                              timeout=10).read().decode()
        assert f"quickstart-smoke/{TRIAL}/tensorboard/validation" in runs, runs

        # Without the token: one sentence saying what to copy, not 20 s of retries.
        no_token = {**env, "HOME": str(tmp_path), "PYTHONPATH": str(REPO)}
        refused = subprocess.run([sys.executable, "-c", CONNECT, f"127.0.0.1:{gcs}"],
                                 env=no_token, capture_output=True, text=True, timeout=120)
        assert refused.stdout.strip().startswith(
            f"the Ray cluster at 127.0.0.1:{gcs} requires an authentication token and no "
            "token was found here: copy the head node's ~/.ray/auth_token"), refused
    finally:
        for sid in sessions:
            kill_session(sid)
        shutil.rmtree(temp, ignore_errors=True)


def test_fake_cluster_is_cluster_yaml_apart_from_the_provider():
    """cluster-fake.yaml keeps cluster.yaml's autoscaling settings and worker node type."""
    real = yaml.safe_load((REPO / "cluster.yaml").read_text())
    fake = yaml.safe_load((REPO / "cluster-fake.yaml").read_text())
    assert fake["provider"]["type"] == "fake_multinode"
    for key in ("upscaling_speed", "idle_timeout_minutes"):
        assert fake[key] == real[key]
    workers = {k for k in fake["available_node_types"] if k != fake["head_node_type"]}
    assert workers and workers <= set(real["available_node_types"])
    assert fake["available_node_types"][fake["head_node_type"]]["resources"] == {"CPU": 0}
    assert all(fake["available_node_types"][w]["max_workers"] >= 2 for w in workers)


@pytest.mark.slow
def test_autoscaler_launches_workers_for_a_sweep(tmp_path, synth_dataset):
    """A real Ray autoscaler (the fake provider) behind `ray start --head` with 0 CPUs: a
    4-trial sweep makes it launch worker nodes (1 CPU each, at most 2), every row lands
    once, and the rows name more than one node, none of them the head."""
    from ray._private.services import get_node_ip_address

    port = free_port()
    address = f"{get_node_ip_address()}:{port}"
    config = yaml.safe_load((REPO / "cluster-fake.yaml").read_text())
    config["provider"]["gcs_address"] = address        # the provider's default is :6379
    (tmp_path / "fake.yaml").write_text(yaml.safe_dump(config))
    base = yaml.safe_load((REPO / "configs/arabic-asl-65kpts.yaml").read_text())
    tiny = {**base, "name": "tiny", "model": {**base.get("model", {}), "d_model": 16,
                                              "encoder_layers": 1, "decoder_layers": 1,
                                              "encoder_attention_heads": 2,
                                              "decoder_attention_heads": 2,
                                              "encoder_ffn_dim": 16, "decoder_ffn_dim": 16}}
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump(tiny))
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump({
        "name": "auto", "data": str(synth_dataset), "holdouts": ["user01", "user02"],
        "seeds": [1, 2], "variants": [str(tmp_path / "tiny.yaml")], "quant": ["fp32"],
        "baseline": False, "train": {"epochs": 1, "batch_size": 8}, "retries": 1}))
    temp = Path(f"/tmp/sba-{os.getpid()}")
    env = {**{k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
           "RAY_FAKE_CLUSTER": "1", "AUTOSCALER_UPDATE_INTERVAL_S": "1"}
    ray = str(REPO / ".venv/bin/ray")
    with open(tmp_path / "head.log", "w") as log:
        head = subprocess.Popen(
            [ray, "start", "--head", "--block", f"--port={port}", "--num-cpus=0",
             f"--autoscaling-config={tmp_path / 'fake.yaml'}", f"--temp-dir={temp}",
             "--include-dashboard=false", "--disable-usage-stats",
             f"--ray-client-server-port={free_port()}", f"--metrics-export-port={free_port()}",
             f"--dashboard-agent-listen-port={free_port()}"],
            env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        sweep = subprocess.run(
            [sys.executable, "-m", "signbart.cli", "sweep", str(tmp_path / "spec.yaml"),
             "--address", address, "--storage", str(tmp_path / "store")],
            env={**env, "PYTHONPATH": str(REPO)}, capture_output=True, text=True, timeout=1200,
            check=False)
    finally:
        kill_session(head.pid)
        head.wait(timeout=60)
        shutil.rmtree(temp, ignore_errors=True)
    assert sweep.returncode == 0, sweep.stdout[-3000:] + sweep.stderr[-3000:]
    rows = read_rows([str(p) for p in (tmp_path / "store/auto/results").glob("*.parquet")])
    rows = rows.to_pylist()
    keys = [(r["trial_id"], r["quant"]) for r in rows]
    assert len(keys) == len(set(keys)) == 4 and all(r["status"] == "ok" for r in rows)
    nodes = {r["node_id"] for r in rows}
    assert len(nodes) >= 2, nodes                      # trials ran on autoscaled workers
    assert not any(n.endswith("00000") for n in nodes)  # the fake head's id: it has no CPUs


def test_rows_take_the_commit_from_the_environment(monkeypatch):
    """Cluster nodes start Ray with SIGNBART_GIT_SHA (cluster.yaml): rows carry it."""
    from signbart.results import git_sha, make_row

    monkeypatch.setenv("SIGNBART_GIT_SHA", "0123abc")
    git_sha.cache_clear()
    try:
        assert make_row(sweep="s")["git_sha"] == "0123abc"
    finally:
        git_sha.cache_clear()
