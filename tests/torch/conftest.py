"""Shared by the torch building-block tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny models run fastest on one thread, and much slower on two when a core is busy."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
