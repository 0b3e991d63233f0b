"""benchmarks/gpu_check.sh --dry-run: the one-shot GPU script runs every step, tiny, on the CPU."""

import os
import subprocess

import pytest

from tests.conftest import REPO


@pytest.mark.slow
def test_gpu_check_dry_run(tmp_path):
    env = {**os.environ, "OUT": str(tmp_path), "OMP_NUM_THREADS": "1"}
    proc = subprocess.run(["bash", str(REPO / "benchmarks" / "gpu_check.sh"), "--dry-run"], env=env, cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    summary = (tmp_path / "gpu_check.md").read_text()
    assert "| cuda tests |" in summary and "skipped" in summary  # collected; no GPU here
    assert "| speed: cnn | train step | tuned | fp32 |" in summary and "| recipe: 16 epochs, extrapolated (min)" in summary
