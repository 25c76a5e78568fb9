"""Shared fixtures: every test runs offline, on CPU, with its own temporary data home."""
from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TQDM_DISABLE", "1")

import matplotlib

matplotlib.use("Agg")

import pytest  # noqa: E402
import torch  # noqa: E402

torch.set_num_threads(min(2, torch.get_num_threads()))


@pytest.fixture
def data_home(tmp_path, monkeypatch):
    """A fresh, empty data home for one test (also exported as MEPO_LAB_DATA)."""
    home = tmp_path / "data_home"
    monkeypatch.setenv("MEPO_LAB_DATA", str(home))
    return home


@pytest.fixture(scope="session")
def smoke_home(tmp_path_factory):
    """A data home shared by the integration tests, so the smoke micro ViT is trained once."""
    return tmp_path_factory.mktemp("smoke_home")


@pytest.fixture(scope="session")
def smoke_preset():
    from mepo_lab.config import get_preset

    return get_preset("smoke")


NOTEBOOK_TIMEOUT = 240  # s: a notebook whose kernel stops answering fails (and is rerun by `make test`) in 4 min, not 10


def pytest_collection_modifyitems(config, items):
    """Give nbmake's notebook items a shorter pytest-timeout than the suite's 600 s: a kernel that hangs before a
    cell runs is not caught by ``--nbmake-timeout``, only by pytest-timeout (then retried by --reruns)."""
    for item in items:
        if str(item.fspath).endswith(".ipynb") and item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(NOTEBOOK_TIMEOUT))
