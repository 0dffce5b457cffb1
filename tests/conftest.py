"""Shared fixtures: tiny random pipelines built once per session, never any network."""
from __future__ import annotations

import os

os.environ["HF_HUB_OFFLINE"] = "1"  # a test that reaches for the hub must fail, not download
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
# Tiny models gain nothing from threads, and on a shared 2-core CPU thread contention makes them ~10x slower.
# Set before torch is imported, so CLI subprocesses started by tests inherit it too.
os.environ["OMP_NUM_THREADS"] = "1"

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tests.tiny import build_tiny_sd, build_tiny_sdxl

torch.set_num_threads(1)

FAST = {  # settings that keep a run to seconds on a tiny model
    "num_class_images": 2, "class_image_steps": 2, "class_image_batch": 2,
    "preview_steps": 2, "preview_seeds": [0], "min_steps": 1,
    # every preview at its cadence: the budget's skipping depends on measured times, which tests must not
    # (tests/training/test_training.py tests the budget itself)
    "preview_budget": 1.0,
}


@pytest.fixture(scope="session")
def tiny_sd(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd"))


@pytest.fixture(scope="session")
def tiny_sd_vpred(tmp_path_factory) -> Path:
    return build_tiny_sd(tmp_path_factory.mktemp("tiny-sd-v"), prediction_type="v_prediction")


@pytest.fixture(scope="session")
def tiny_sdxl(tmp_path_factory) -> Path:
    return build_tiny_sdxl(tmp_path_factory.mktemp("tiny-sdxl"))


@pytest.fixture(scope="session")
def tiny_sd3(tmp_path_factory) -> Path:
    from studio.world.flow_bases import write_tiny_sd3

    return write_tiny_sd3(tmp_path_factory.mktemp("tiny-sd3"))


@pytest.fixture(scope="session")
def tiny_flux(tmp_path_factory) -> Path:
    from studio.world.flow_bases import write_tiny_flux

    return write_tiny_flux(tmp_path_factory.mktemp("tiny-flux"))


def write_photos(folder: Path, count: int = 3, size: int = 64) -> Path:
    """Distinct, deterministic photos (coloured squares on noise)."""
    folder.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        rng = np.random.default_rng(i)
        pixels = (rng.random((size, size, 3)) * 80).astype("uint8")
        pixels[size // 4 : 3 * size // 4, size // 4 : 3 * size // 4] = [(200, 40, 40), (40, 200, 40), (40, 40, 200)][i % 3]
        Image.fromarray(pixels).save(folder / f"photo{i}.png")
    return folder


@pytest.fixture
def photos(tmp_path) -> Path:
    return write_photos(tmp_path / "photos")
