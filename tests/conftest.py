"""Shared fixtures: paths to the optional read-only reference data in ../shared."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"


@pytest.fixture(scope="session")
def shared_alr() -> Path:
    """../shared/alr, or skip: users' clones do not carry it."""
    path = SHARED / "alr"
    if not (path / "dev.jsonl").is_file():
        pytest.skip(f"reference data not present at {path}")
    return path
