"""Process set-up shared by the training families."""

import sys

import pytest
import torch

from asd.training.runtime import keep_freed_memory


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's mallopt is Linux-only")
def test_keep_freed_memory_is_taken_and_large_tensors_still_allocate():
    assert keep_freed_memory() is True  # glibc accepted both settings
    for _ in range(3):  # allocated, written and freed as a training step does, larger than any mmap threshold
        big = torch.ones(64 * 2**20)  # 256 MiB
        assert float(big[::2**20].sum()) == 64.0
        del big
