"""One torch thread for the model tests: tiny tensors gain nothing from two, and under a busy CPU
(another process on both cores) OpenMP's spinning threads make a 20 ms forward take over a second."""
import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
