"""Fixtures shared by the torch building-block tests."""

import pytest
import torch


@pytest.fixture
def single_thread():
    """Tiny models run fastest on one thread, and far slower on two when a core is busy.

    Opt in with ``pytestmark = pytest.mark.usefixtures("single_thread")``.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
