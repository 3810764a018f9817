"""Shared pieces of the fault tests: a tiny image folder and a way to run the real ``tricl``."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[2]


def write_image_folder(root: Path, n_per_class: int = 20, size: int = 16) -> Path:
    """40 16x16 PNGs in 2 classes (bright squares vs dark stripes): a 2-step-per-epoch dataset."""
    rng = np.random.default_rng(0)
    for c, name in enumerate(("squares", "stripes")):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n_per_class):
            img = rng.integers(0, 60, (size, size), dtype=np.uint8)
            if c == 0:
                img[4:12, 4:12] = 200 + i
            else:
                img[:, ::4] = 220 - i
            Image.fromarray(img).save(root / name / f"{i:02d}.png")
    return root


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    return write_image_folder(tmp_path_factory.mktemp("data") / "shapes")


def tiny_train_args(folder: Path, root: Path, name: str = "r", epochs: int = 2) -> list[str]:
    """``tricl train`` flags for a run of a few seconds on :func:`write_image_folder`'s images."""
    return [
        "train",
        "--dataset",
        f"folder:{folder}",
        "--proj-hidden-dim",
        "16",
        "--proj-dim",
        "8",
        "--epochs",
        str(epochs),
        "--batch-size",
        "8",
        "--warmup-epochs",
        "0",
        "--name",
        name,
        "--runs-root",
        str(root),
        "--no-progress",
    ]


def tricl_cli(
    args: list[str], env: dict[str, str] | None = None, cwd: Path | None = None
) -> subprocess.CompletedProcess:
    """Run the real ``tricl`` command in a fresh process (this checkout's package)."""
    full_env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tricl", *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd,
        timeout=300,
    )


@pytest.fixture
def train_args():
    """:func:`tiny_train_args`, for tests (conftest modules are not imported by name)."""
    return tiny_train_args


@pytest.fixture
def cli():
    """:func:`tricl_cli`: the real command in a fresh process."""
    return tricl_cli
