"""S3 as a real path: a sweep, its resume, its report and `evaluate` against an S3 server (moto)
that the test starts on 127.0.0.1, through the same pyarrow filesystem a user gets.

The server is told to nobody but through the environment a real user sets (``AWS_ENDPOINT_URL``,
credentials, ``AWS_REGION``), so this is the code path of a real bucket; no network beyond
127.0.0.1 is used (the shared AWS config files are pointed away, instance metadata is off).
"""

from __future__ import annotations

import dataclasses
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.fs as pafs
import pytest
import yaml
from conftest import REPO

from signbart.results import read_rows

TINY = {"d_model": 16, "encoder_layers": 1, "decoder_layers": 1, "encoder_attention_heads": 2,
        "decoder_attention_heads": 2, "encoder_ffn_dim": 16, "decoder_ffn_dim": 16}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """An S3 server on 127.0.0.1 with the bucket ``bucket``, and the environment pointing at
    it (for this process and every command and Ray worker it starts). Yields the bucket's
    pyarrow filesystem, for the test to look inside."""
    from moto.server import ThreadedMotoServer

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    home = tmp_path_factory.mktemp("aws")
    env = {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{port}", "AWS_ACCESS_KEY_ID": "testing",
           "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "us-east-1",
           "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": str(home / "config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "credentials")}
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        mp.delenv("AWS_ENDPOINT_URL_S3", raising=False)
        mp.delenv("AWS_PROFILE", raising=False)
        fs = pafs.S3FileSystem(endpoint_override=env["AWS_ENDPOINT_URL"], scheme="http",
                               allow_bucket_creation=True)
        fs.create_dir("bucket")
        yield fs
    server.stop()


def signbart(*args, cwd: Path = REPO, timeout: float = 600, env: dict | None = None
             ) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "signbart.cli", *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=timeout, check=False,
                          env={**os.environ, **(env or {})})


def one_sentence(p: subprocess.CompletedProcess, command: str) -> str:
    assert "Traceback" not in p.stderr, p.stderr[-3000:]
    last = p.stderr.strip().splitlines()[-1]
    assert last.startswith(f"signbart {command}: error: "), p.stderr[-2000:]
    return last


def spec_file(tmp_path: Path, data: Path) -> Path:
    variant = yaml.safe_load((REPO / "configs/arabic-asl-65kpts.yaml").read_text())
    (tmp_path / "tiny.yaml").write_text(yaml.safe_dump({**variant, "name": "tiny",
                                                        "model": TINY}))
    spec = tmp_path / "s3.yaml"
    spec.write_text(yaml.safe_dump({
        "name": "s3t", "data": str(data), "holdouts": ["user01", "user02"], "seeds": [1],
        "variants": [str(tmp_path / "tiny.yaml")], "quant": ["fp32"], "baseline": False,
        "train": {"epochs": 1, "batch_size": 8, "n_val_signers": 0}, "retries": 0,
        "resources": {"cpu": 1}}))
    return spec


def files(fs: pafs.FileSystem, folder: str) -> list[str]:
    return sorted(i.path for i in fs.get_file_info(pafs.FileSelector(folder, recursive=True,
                                                                     allow_not_found=True))
                  if i.type == pafs.FileType.File)


@pytest.fixture(scope="module")
def s3_sweep(s3, tmp_path_factory, synth_dataset) -> tuple[Path, list[dict]]:
    """The tiny 2-trial sweep, run once into ``s3://bucket/x``: (its spec, its rows)."""
    spec = spec_file(tmp_path_factory.mktemp("spec"), synth_dataset)
    p = signbart("sweep", spec, "--storage", "s3://bucket/x")
    assert p.returncode == 0, p.stderr[-3000:]
    results = files(s3, "bucket/x/s3t/results")
    assert [Path(f).name for f in results if f.endswith(".parquet")] == [
        "user01-s1-tiny.parquet", "user02-s1-tiny.parquet"]
    return spec, read_rows([f"s3://{f}" for f in results if f.endswith(".parquet")]).to_pylist()


@pytest.mark.slow
def test_a_sweep_on_s3_writes_its_rows_there_resumes_and_its_models_evaluate(s3, s3_sweep,
                                                                             synth_dataset):
    spec, rows = s3_sweep
    assert [r["status"] for r in rows] == ["ok", "ok"]
    model = rows[0]["model_path"]
    assert model == "s3://bucket/x/s3t/user01-s1-tiny/model_fp32.tflite"
    attempts = {f: s3.open_input_stream(f).read() for f in files(s3, "bucket/x/s3t/results")
                if f.endswith(".node.json")}
    assert len(attempts) == 2

    p = signbart("sweep", spec, "--storage", "s3://bucket/x", "--resume")
    assert p.returncode == 0, p.stderr[-3000:]
    assert "2 trial(s) already finished" in p.stdout
    assert {f: s3.open_input_stream(f).read() for f in attempts} == attempts   # none retrained

    p = signbart("evaluate", "--model", model, "--data", synth_dataset, "--holdout", "user01")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(p.stdout[:p.stdout.rindex("}") + 1])["top1"] == rows[0]["top1"]
    assert "bucket/x/s3t/user01-s1-tiny/model_fp32.eval.json" in files(s3, "bucket/x/s3t")


@pytest.mark.slow
def test_report_of_an_s3_sweep_writes_to_the_bucket(s3, s3_sweep, tmp_path):
    p = signbart("report", "s3://bucket/x/s3t", "--out", "s3://bucket/reports/r1", cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    assert not (tmp_path / "s3:").exists()          # not a local folder named after the URI
    assert any(f.endswith(".md") for f in files(s3, "bucket/reports/r1"))


def test_evaluate_reads_a_model_from_s3(s3, synth_dataset):
    """The path an S3 sweep's rows give (it was mangled to ``s3:/bucket/...``)."""
    from test_evaluate import tiny_model
    from test_tflite import FRAMES, HAND3, card_for

    from signbart.data import open_dataset
    from signbart.quantize import to_tflite
    from signbart.tflite import ModelCard

    dataset = open_dataset(synth_dataset)
    card = card_for(labels=tuple(dataset.labels), glosses=tuple(dataset.glosses),
                    variant=dataclasses.replace(HAND3, num_labels=len(dataset.labels)))
    model = "s3://bucket/m/model_fp32.tflite"
    card.write(model, to_tflite(tiny_model(k=3, labels=len(dataset.labels)), FRAMES))
    assert ModelCard.read(model)[0] == card
    p = signbart("evaluate", "--model", model, "--data", synth_dataset, "--holdout", "user01")
    assert p.returncode == 0, p.stderr[-3000:]
    assert json.loads(s3.open_input_stream("bucket/m/model_fp32.eval.json").read())["n_test"] == 30


BROKEN = {"bucket": ("s3://nobucket/x", {}, "bucket 'nobucket' does not exist"),
          "endpoint": ("s3://bucket/x", None, "the storage does not answer")}


def broken(where: str) -> tuple[str, dict, str]:
    """(a URI, the environment, the sentence): a missing bucket, or an endpoint nobody serves."""
    uri, env, message = BROKEN[where]
    return uri, env if env is not None else {"AWS_ENDPOINT_URL": f"http://127.0.0.1:{free_port()}"}, \
        message


def refused(command: list, env: dict, message: str) -> None:
    """``command`` exits 1 with ``message`` in one sentence, quickly and without Ray."""
    start = time.monotonic()
    p = signbart(*command, env=env)
    assert p.returncode == 1, (command, p.stderr[-3000:])
    assert message in one_sentence(p, command[0]), command
    assert "Ray" not in p.stderr and time.monotonic() - start < 60


@pytest.mark.parametrize("where", BROKEN)
def test_a_missing_bucket_or_a_dead_endpoint_is_one_sentence_before_ray(s3, tmp_path,
                                                                        synth_dataset, where):
    spec = spec_file(tmp_path, synth_dataset)
    uri, env, message = broken(where)
    for command in (["sweep", spec, "--storage", uri],
                    ["sweep", spec, "--storage", uri, "--dry-run"],
                    ["evaluate", "--model", f"{uri}/m.tflite", "--data", synth_dataset]):
        refused(command, env, message)


@pytest.mark.parametrize("where", BROKEN)
def test_report_of_a_missing_bucket_or_a_dead_endpoint_is_one_sentence(s3, tmp_path, where):
    uri, env, message = broken(where)
    refused(["report", f"{uri}/s3t", "--out", tmp_path / "r"], env, message)
    refused(["report", tmp_path, "--out", f"{uri}/reports/r1"], env, message)
