"""Test-wide settings: one thread (the suite shares 2 cores), offline Hugging Face, a private store."""

import os

import pytest

# Tiny causal LMs (random Llama, GPT-2, a GGUF) as session fixtures for every package's tests.
pytest_plugins = ["tests.lm_tiny"]

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _isolated_home(tmp_path_factory, monkeypatch):
    # Every test gets its own run store so tests never touch ~/.lowcarb or each other.
    home = tmp_path_factory.mktemp("lowcarb-home")
    monkeypatch.setenv("LOWCARB_HOME", str(home))
    yield home


def pytest_configure(config):
    import torch

    torch.set_num_threads(1)
