"""Shared fixtures."""

import pytest
import torch


@pytest.fixture
def one_torch_thread():
    """Tiny-model tests: tiny matmuls on 2 OpenMP threads of a busy machine wait on each other (~3x slower)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
