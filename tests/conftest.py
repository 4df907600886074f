"""The one fixture module: reference data (skipped with a reason where absent), one torch thread, checkpoints.

Model factories and other plain helpers are in `tests/helpers.py`."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.helpers import NEOX_TOKENIZER, SHARED_DATA, build_tiny_checkpoint


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


@pytest.fixture(autouse=True)
def _no_pinned_threads_leak():
    """A test that pins the workbench's threads (`set_threads`, the CLI's `--threads`) doesn't pin them for the
    tests after it; torch's own count goes back to the suite's one thread."""
    import torch

    from workbench import threads

    yield
    threads._pinned, threads._torch_before_pin = None, None
    torch.set_num_threads(1)


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, neox_tokenizer_file) -> Path:
    """The evals tests' checkpoint: the embedded demo model, or a tiny random one where it is missing."""
    import workbench

    demo = workbench.demo_path()
    if (demo / "config.json").is_file():
        return demo
    return build_tiny_checkpoint(tmp_path_factory.mktemp("tiny_neox"), neox_tokenizer_file)
