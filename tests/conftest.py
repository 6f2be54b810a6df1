"""Shared test set-up: one otpc home (tiny model built once), offline Hugging Face."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest
from hypothesis import settings

ROOT = Path(__file__).resolve().parents[1]
os.environ.setdefault("OTPC_HOME", str(Path(tempfile.gettempdir()) / "otpc-test-home"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("GIT_AUTHOR_NAME", "otpc tests")
os.environ.setdefault("GIT_AUTHOR_EMAIL", "tests@otpc.invalid")
os.environ.setdefault("GIT_COMMITTER_NAME", "otpc tests")
os.environ.setdefault("GIT_COMMITTER_EMAIL", "tests@otpc.invalid")

# Property tests draw the same examples on every run (derandomize), so a correct program
# never fails by chance; no example database is kept between runs.
settings.register_profile("otpc", derandomize=True, database=None, print_blob=True)
settings.load_profile("otpc")


@pytest.fixture(scope="session")
def tiny():
    """The tiny model (pipeline and what it resolved to), loaded once through the standard
    loading path."""
    from otpc.models import ModelSpec, load_pipeline

    return load_pipeline(ModelSpec("tiny"))


@pytest.fixture(scope="session")
def toy():
    """The trained toy model otpc ships, loaded once through the standard loading path."""
    from otpc.models import ModelSpec, load_pipeline

    return load_pipeline(ModelSpec("toy"))


@pytest.fixture(scope="module")
def one_thread():
    """One torch thread for a module: the tiny model is far faster so on a small, shared CPU."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
