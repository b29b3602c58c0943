"""Shared fixtures: the real data folder (skips when absent) and small cameras."""

from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (it lives in ../shared/data beside the repo)")
    return DATA
