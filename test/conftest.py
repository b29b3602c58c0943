"""Shared fixtures: the real data folder (skips when absent) and small cameras.

``test/`` is on ``sys.path`` so tests can import its helper modules (``release_oracle``).
"""

import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))


@pytest.fixture
def data_dir() -> Path:
    if not DATA.is_dir():
        pytest.skip(f"real test data not found at {DATA} (it lives in ../shared/data beside the repo)")
    return DATA


@pytest.fixture(scope="module")
def torch_one_thread():
    """Single-threaded torch for a module (restored afterwards): many small tensor ops run faster
    and deterministically on one thread of a small shared machine."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
