"""Shared fixtures: the real data folder (skips when absent) and small cameras.

``test/`` is on ``sys.path`` so tests can import its helper modules (``release_oracle``).
"""

import sys
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"
if str(Path(__file__).resolve().parent) not in sys.path:
    sys.path.insert(0, str(Path(__file__).resolve().parent))

import _prereq  # noqa: E402  (missing prerequisites: skip here, fail with CI=true)


def pytest_configure(config):
    config.addinivalue_line("markers", f"{_prereq.MARK}(reason): a prerequisite is missing (CI=true: the test fails)")


def pytest_runtest_setup(item):
    _prereq.check_item(item)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    _prereq.require(DATA.is_dir(), f"real test data not found at {DATA} (it lives in ../shared/data beside the repo)")
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


@pytest.fixture(scope="session")
def tiny_depth_model(tmp_path_factory) -> Path:
    """A randomly initialised tiny Depth Anything model and its processor, saved with save_pretrained
    (a local ``update.depth_checkpoint`` folder; nothing is downloaded)."""
    import torch
    from transformers import DepthAnythingConfig, DepthAnythingForDepthEstimation, Dinov2Config, DPTImageProcessorPil

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        backbone = Dinov2Config(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64,
                                image_size=56, patch_size=14, out_features=["stage1", "stage2", "stage3", "stage4"],
                                reshape_hidden_states=False)
        cfg = DepthAnythingConfig(backbone_config=backbone, reassemble_hidden_size=32, neck_hidden_sizes=[8, 16, 32, 32],
                                  fusion_hidden_size=16, head_hidden_size=8)
        model = DepthAnythingForDepthEstimation(cfg)
    folder = tmp_path_factory.mktemp("tiny_depth_anything")
    model.save_pretrained(folder)
    DPTImageProcessorPil(size={"height": 56, "width": 56}, keep_aspect_ratio=True, ensure_multiple_of=14,
                         image_mean=[0.485, 0.456, 0.406], image_std=[0.229, 0.224, 0.225]).save_pretrained(folder)
    return folder
