"""Shared by the benchmark scripts: argument parsing and the JSON figures file."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import tempfile
from pathlib import Path

from signbart.storage import write_text


def parser(description: str, default_out: str) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description)
    p.add_argument("--out", default=f"benchmarks/results/{default_out}.json")
    return p


def write(out: str, figures: dict) -> None:
    """Print the figures and write them, with the machine they were measured on."""
    figures = {**figures, "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                                      "processor": platform.processor() or platform.machine(),
                                      "load_average_1_5_15": os.getloadavg()}}
    text = json.dumps(figures, indent=1)
    print(text)
    write_text(out, text)


@contextlib.contextmanager
def worktree(commit: str):
    """``commit`` checked out beside this repository in a temporary folder, removed after."""
    root = Path(__file__).resolve().parents[1]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "before"
        subprocess.run(["git", "-C", str(root), "worktree", "add", "--detach", "-q", str(path),
                        commit], check=True)
        try:
            yield path
        finally:
            subprocess.run(["git", "-C", str(root), "worktree", "remove", "--force", str(path)],
                           check=True)
