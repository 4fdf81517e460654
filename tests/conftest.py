"""Make ppo.py, at the repository root, importable from the tests; keep the quick check
quick; and let the whole suite run with another number of torch threads.

`python -m pytest` is the quick check: the oracle tests of the math, short end-to-end runs
and every bad input. Tests marked `long` (learning within a step budget, several processes,
stop signals, subprocesses that train) run only with `python -m pytest --all`, as .ci/run
does. `--torch-threads 2` splits floating-point sums differently, so every trajectory
changes, and the suite must pass all the same."""
import os
import sys

import pytest
import torch

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import ppo  # noqa: E402  (importable only once the path above is set)


def pytest_addoption(parser):
    parser.addoption("--torch-threads", type=int, default=None,
                     help="run every test with this many torch threads, presets included (default: as configured)")
    parser.addoption("--all", action="store_true", default=False,
                     help="also run the long tests: learning within a step budget, torchrun, signals, training subprocesses")


def pytest_configure(config):
    config.addinivalue_line("markers", "long: a learning, distributed or otherwise long test, run with --all")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--all"):
        return
    skip = pytest.mark.skip(reason="long: run with python -m pytest --all")
    for item in items:
        if "long" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def logits_that_overflow_after_the_first_update(monkeypatch):
    """Each update ends with the last layer of the categorical actor at 3e38: the weights are
    finite, but the next rollout's logits overflow to inf, and its probabilities are NaN."""
    original_update = ppo.update

    def update_then_blow_up(agent, *arguments):
        losses = original_update(agent, *arguments)
        with torch.no_grad():
            agent.actor.logits_net[-1].weight.fill_(3e38)
        return losses

    monkeypatch.setattr(ppo, "update", update_then_blow_up)


@pytest.fixture(autouse=True)
def torch_threads(request, monkeypatch):
    threads = request.config.getoption("--torch-threads")
    if threads is None:
        yield
        return
    for name, (env_id, settings) in ppo.PRESETS.items():
        monkeypatch.setitem(ppo.PRESETS, name, (env_id, {**settings, "torch_threads": threads}))
    monkeypatch.setitem(ppo.CONTINUOUS_DEFAULTS, "torch_threads", threads)
    previous = torch.get_num_threads()
    torch.set_num_threads(threads)
    yield
    torch.set_num_threads(previous)
