"""The AE trained for 20 epochs on 10-s clips at a realistic recording level keeps no subnormal floats
in its weights or Adam state (x86 computes with them tens of times slower, so an AE whose state drifts
there slows down epoch after epoch). benchmarks/ae_epochs.py prints the epoch times of the same run."""

import sys

import numpy as np
import pytest

from tests.conftest import REPO

sys.path.insert(0, str(REPO / "benchmarks"))


@pytest.mark.slow
def test_ae_keeps_no_subnormal_state_over_20_epochs(tmp_path):
    from ae_epochs import run, write_clips

    write_clips(tmp_path, n=30, seconds=10.0, level=0.03)
    rows = run(tmp_path, epochs=20, flush=True, threads=1)
    assert [r["epoch"] for r in rows] == list(range(1, 21))
    assert all(r["sub_weights"] == 0 and r["sub_adam"] == 0 for r in rows)
    losses = np.array([r["loss"] for r in rows])
    assert np.isfinite(losses).all() and losses[-5:].mean() < 0.5 * losses[0]  # it learns
