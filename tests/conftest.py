"""Shared fixtures: a small synthetic dataset, and the outside data in ../shared when present."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"


def shared_path(*parts: str) -> Path | None:
    """A path under ../shared/data, or None where that folder is absent (then tests skip)."""
    path = SHARED_DATA.joinpath(*parts)
    return path if path.exists() else None


@pytest.fixture(scope="session")
def synth_dataset(tmp_path_factory) -> Path:
    """4 signers x 10 classes x 3 reps, holistic-65 (the quickstart's shape, smaller)."""
    from signbart.synth import synthesize

    out = tmp_path_factory.mktemp("data") / "synth"
    synthesize(out, signers=4, classes=10, reps=3, layout="holistic-65", seed=0)
    return out


@pytest.fixture(scope="session")
def synth_dataset_90(tmp_path_factory) -> Path:
    from signbart.synth import synthesize

    out = tmp_path_factory.mktemp("data") / "synth90"
    synthesize(out, signers=3, classes=10, reps=2, layout="holistic-90", seed=1)
    return out
