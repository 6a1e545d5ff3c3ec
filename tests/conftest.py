"""Shared fixtures: the shipped sample, tiny generated data sets, and a CLI runner."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
# What importing frozenaug.trainer sets, set before any test module imports TensorFlow itself:
# fits run in this process and fits run as console scripts must use the same kernels, or
# their losses differ in the last bits (test_crash compares them exactly).
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

ROOT = Path(__file__).resolve().parents[1]
SAMPLE_DIR = ROOT / "data" / "sample"


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """data/sample: 1,234 real images in 8 class folders (see data/README.md)."""
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def sample_ds():
    """The sample loaded once per session (treat as read-only)."""
    from frozenaug.data.intake import load_dataset

    return load_dataset(SAMPLE_DIR)


def make_images(n: int, h: int = 12, w: int = 12, seed: int = 0) -> np.ndarray:
    """Distinct smooth random RGB images (uint8), different enough to hash apart."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (n, 4, 4, 3)).astype(np.float32)
    import cv2

    return np.stack([cv2.resize(c, (w, h), interpolation=cv2.INTER_CUBIC) for c in coarse]
                    ).clip(0, 255).astype(np.uint8)


@pytest.fixture
def tiny_npz(tmp_path: Path) -> Path:
    """An AN2DL-style npz: 12 images 12x12, labels 0..2 (4 each), shape (N,1)."""
    path = tmp_path / "tiny.npz"
    np.savez(path, images=make_images(12), labels=(np.arange(12) % 3).reshape(-1, 1))
    return path


@pytest.fixture
def run_cli(capsys):
    """``run_cli(*argv) -> (exit code, stdout, stderr)`` through frozenaug.builder.cli.main."""
    from frozenaug.builder.cli import main

    def run(*argv: str) -> tuple[int, str, str]:
        code = main([str(a) for a in argv])
        out = capsys.readouterr()
        return code, out.out, out.err

    return run


def cell_pictures(n: int, size: int = 48, seed: int = 0) -> np.ndarray:
    """Smooth, cell-like pictures: a dark blob on a bright, mildly noisy background."""
    import cv2

    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[0:size, 0:size]
    out = []
    for _ in range(n):
        cy, cx = rng.uniform(size / 3, 2 * size / 3, 2)
        r = rng.uniform(size / 6, size * 14 / 48)
        img = np.full((size, size, 3), (230, 200, 210), np.float32)
        img[(yy - cy) ** 2 + (xx - cx) ** 2 < r * r] = (90, 40, 140)
        img += rng.normal(0, 6, img.shape)
        out.append(cv2.GaussianBlur(np.clip(img, 0, 255).astype(np.uint8), (0, 0), 1.5))
    return np.stack(out)
