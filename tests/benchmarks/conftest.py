"""Fixtures of the benchmark scripts' tests."""

import pytest
import torch


@pytest.fixture
def one_thread():
    """torch on one thread while the test runs: the scripts' small runs stay quick and alike."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
