"""Shared test fixtures."""
import pytest
import torch


@pytest.fixture(scope="module")
def one_thread():
    """One intra-op torch thread for a test module: small tensors on a shared CPU only contend for
    threads, and single-threaded CPU kernels round the same way every run (bitwise reproducible)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
