"""Shared fixtures: real Omniglot from $METALEARN_DATA (CI points it at ../shared/data/omniglot)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

SHARED = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "omniglot"


def pytest_configure(config):
    # Developers who did not set METALEARN_DATA still test on the shared copy beside the checkout.
    if not os.environ.get("METALEARN_DATA") and (SHARED / "omniglot-py").is_dir():
        os.environ["METALEARN_DATA"] = str(SHARED)


@pytest.fixture
def one_thread():
    """PyTorch on one thread for the test (small convolutions on a shared 2-core machine: a second
    thread mostly waits), the caller's count restored after."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def data_root() -> Path:
    root = os.environ.get("METALEARN_DATA")
    if not root or not (Path(root) / "omniglot-py").is_dir():
        pytest.fail("real Omniglot is needed: set METALEARN_DATA to the folder holding omniglot-py/ "
                    "(for example ../shared/data/omniglot)")
    return Path(root)


@pytest.fixture(scope="session")
def lake_test(data_root):
    from metalearn_lib.data import omniglot

    return omniglot("lake", "test")


@pytest.fixture(scope="session")
def lake_train(data_root):
    from metalearn_lib.data import omniglot

    return omniglot("lake", "train")
