"""The pins: pyproject.toml's dependencies are exact, and requirements.lock (what make and
cluster.yaml install) agrees with every one of them."""

from __future__ import annotations

import tomllib
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[1]


def test_the_lock_agrees_with_every_pin():
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    lock = {}
    for line in (REPO / "requirements.lock").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            lock[canonicalize_name(name)] = version.strip()
    extras = [r for group in project["optional-dependencies"].values() for r in group]
    for text in project["dependencies"] + extras:
        req = Requirement(text)
        name = canonicalize_name(req.name)
        assert name in lock, f"{req.name} is not in requirements.lock"
        pins = [s.version for s in req.specifier if s.operator == "=="]
        if text in project["dependencies"]:
            assert pins, f"runtime dependency {text!r} is not pinned"
        assert all(lock[name] == v for v in pins), f"{text}: the lock has {lock[name]}"
