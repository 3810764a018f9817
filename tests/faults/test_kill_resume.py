"""Kill ``tricl train`` at every write and rename it makes; resume; get the same weights.

``TRICL_FAULT_KILL_AT_WRITE=N`` makes tricl.runs SIGKILL the process at its N-th fault point: half
way through writing a temporary file, or just before a rename. A 2-epoch run has 15 of them
(creating the run: config.json's write and rename, the folder's rename; each epoch: metrics.jsonl's
write and rename, the two checkpoint temporaries, their two renames). Each kill is followed by
``tricl train --resume`` (or by the same command again when the kill came before the run existed),
and the final weights file must equal an uninterrupted run's byte for byte.

The uninterrupted reference is a real ``python -m tricl`` process; the 30 killed and resumed runs
are forked from a server that has done the imports (``tests/forked_cli.py``: each is still its own
process, SIGKILLed by tricl.runs), which is 177 s -> ~15 s, and their matching the reference byte
for byte also shows the forked runs behave as fresh ones.
"""

import pytest
from forked_cli import forked_tricl
from safetensors.torch import load_file

from tricl.runs import FAULT_ENV, WEIGHTS_FILE, file_sha256, read_metrics

pytestmark = pytest.mark.slow


def _final_state(run_dir):
    return load_file(str(run_dir / WEIGHTS_FILE))


FAULT_POINTS = 15


def test_every_kill_point_resumes_to_the_uninterrupted_weights(
    image_folder, tmp_path, cli, train_args
):
    # armed past the last fault point, the run is not interrupted: it is the reference, and it
    # proves there are no more than FAULT_POINTS (each n below must then kill)
    ref = cli(train_args(image_folder, tmp_path / "ref"), env={FAULT_ENV: str(FAULT_POINTS + 1)})
    assert ref.returncode == 0, ref.stderr
    expected = _final_state(tmp_path / "ref" / "r")
    expected_sha256 = file_sha256(tmp_path / "ref" / "r" / WEIGHTS_FILE)
    resumed = 0
    for n in range(1, FAULT_POINTS + 1):
        root = tmp_path / f"kill{n}"
        first = forked_tricl(train_args(image_folder, root), env={FAULT_ENV: str(n)})
        assert first.returncode == -9, (n, first.returncode, first.stderr[-2000:])
        run_dir = root / "r"
        if run_dir.exists():
            again = forked_tricl(["train", "--resume", str(run_dir), "--no-progress"])
        else:  # killed before the run existed: nothing to resume, the same command starts it
            again = forked_tricl(train_args(image_folder, root))
        assert again.returncode == 0, (n, again.stderr[-2000:])
        got = _final_state(run_dir)
        assert got.keys() == expected.keys()
        assert all(got[k].equal(expected[k]) for k in expected), f"kill point {n} diverged"
        # the file, not only its tensors: `sha256sum` checks a bit-identical resume
        assert file_sha256(run_dir / WEIGHTS_FILE) == expected_sha256, n
        assert [r["epoch"] for r in read_metrics(run_dir)] == [1, 2], n
        assert sorted(p.name for p in run_dir.iterdir()) == sorted(
            ["config.json", "metrics.jsonl", "model.safetensors", "train_state.pt"]
        ), n
        assert sorted(p.name for p in root.iterdir()) == ["r"], n  # no half-built run left
        resumed += 1
    assert resumed == FAULT_POINTS
