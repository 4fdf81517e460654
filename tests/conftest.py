"""Make ppo.py, at the repository root, importable from the tests, and let the whole
suite run with another number of torch threads (`python -m pytest --torch-threads 2`):
floating-point sums are then split differently, so every trajectory changes, and the
suite must pass all the same."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ppo  # noqa: E402  (importable only once the path above is set)


def pytest_addoption(parser):
    parser.addoption("--torch-threads", type=int, default=None,
                     help="run every test with this many torch threads, presets included (default: as configured)")


@pytest.fixture(autouse=True)
def torch_threads(request, monkeypatch):
    threads = request.config.getoption("--torch-threads")
    if threads is None:
        yield
        return
    for name, (env_id, settings) in ppo.PRESETS.items():
        monkeypatch.setitem(ppo.PRESETS, name, (env_id, {**settings, "torch_threads": threads}))
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield
    torch.set_num_threads(previous)
