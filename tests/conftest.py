"""Shared fixtures: where the reference data lives, and a skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
NEOX_TOKENIZER = SHARED_DATA / "tokenizer" / "gpt-neox-20b.tokenizer.json"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (reference tokenizer, benchmark data, baselines)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (it sits beside the checkout as ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def neox_tokenizer_file(shared_data: Path) -> Path:
    """The real GPT-NeoX-20B tokenizer.json from ../shared/data."""
    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"GPT-NeoX-20B tokenizer {NEOX_TOKENIZER} is absent from ../shared/data")
    return NEOX_TOKENIZER


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny models: with 2+ threads torch's workers spin-wait on each other on a shared 2-core
    machine (a tiny forward went from 9 ms to 210 ms), so the suite runs single-threaded."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
