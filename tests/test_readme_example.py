"""The README's training example on a fresh clone: it runs as written and never touches the
shipped runs (issue 14)."""

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
EXAMPLE = ["train", "--method", "tricl", "--dataset", "mnist5k", "--seed", "0", "--epochs", "1"]


def _hashes(root: Path) -> dict[str, str]:
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(scope="module")
def clone(tmp_path_factory) -> Path:
    """The repository's files (tracked, and new ones git does not ignore), as a clone has them."""
    listed = subprocess.run(
        ["git", "ls-files", "--cached", "--others", "--exclude-standard", "-z"],
        cwd=REPO,
        capture_output=True,
        check=True,
    ).stdout.decode()
    dest = tmp_path_factory.mktemp("clone") / "tricl"
    for rel in filter(None, listed.split("\0")):
        src = REPO / rel
        if src.is_file():
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / rel)
    return dest


def _tricl(clone: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "TRICL_RUNS"}
    env.update(PYTHONPATH=str(clone), OMP_NUM_THREADS="1")
    return subprocess.run(
        [sys.executable, "-m", "tricl", *args],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_readme_training_example_runs_on_a_fresh_clone_and_leaves_shipped_runs_alone(clone):
    shipped = clone / "checkpoints"
    assert any(shipped.glob("tricl_mnist5k_small_cnn_k64_seed0/model.safetensors"))
    before = _hashes(shipped)

    out = _tricl(clone, *EXAMPLE)
    assert out.returncode == 0, out.stderr[-3000:]
    run_dir = clone / "runs" / "tricl_mnist5k_small_cnn_k64_seed0"
    assert (run_dir / "model.safetensors").is_file()
    assert "(1/1 epochs" in out.stdout

    again = _tricl(clone, "train", "--resume", str(run_dir.relative_to(clone)))
    assert again.returncode == 0, again.stderr[-3000:]  # finished: nothing left to do
    listing = _tricl(clone, "runs")
    assert listing.returncode == 0, listing.stderr
    assert "your runs in runs" in listing.stdout and "shipped runs" in listing.stdout
    assert listing.stdout.count("tricl_mnist5k_small_cnn_k64_seed0") == 2

    assert _hashes(shipped) == before


def test_readme_walkthrough_ends_with_the_user_looking_at_their_own_run():
    """The walk-through's last command opens the dashboard, which shows the run its first command
    trained (tests/test_app_e2e.py runs that path in a browser: train, no flags, Features)."""
    section = (REPO / "README.md").read_text().split("## Train, analyse, compare", 1)[1]
    block = section.split("```bash", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in block.strip().splitlines()]
    assert commands[0] == " ".join(["tricl", *EXAMPLE[:-2]])  # the example above, all epochs
    assert commands[-1] == "streamlit run app/main.py"
    assert "runs/tricl_mnist5k_small_cnn_k64_seed0" in block
    assert "opens on your own run" in section.split("```", 2)[2][:400]
