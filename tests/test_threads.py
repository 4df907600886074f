"""CPU thread choice: one thread for small forwards, torch's setting for large ones, or a pinned count."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench import threads
from workbench.cli import main

from .helpers import tiny_model


@pytest.fixture
def two_threads():
    """torch at 2 threads and the policy on, restored afterwards (conftest runs tests on one thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    threads.set_threads("auto")
    yield
    threads.set_threads("auto")
    torch.set_num_threads(before)


def _threads_seen(model: torch.nn.Module, ids: torch.Tensor) -> list[int]:
    """torch's thread count inside the forward, read by a hook at the first block."""
    seen: list[int] = []
    model.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: seen.append(torch.get_num_threads()))])
    return seen


def test_small_forward_runs_on_one_thread_and_restores(two_threads):
    model = workbench.load("demo")  # hidden 128: 2 x 64 x 128^2 = 2e6 FLOPs per op, below the threshold
    assert _threads_seen(model, torch.randint(2, 4000, (1, 64))) == [1]
    assert torch.get_num_threads() == 2  # restored after the forward


def test_large_forward_keeps_torchs_setting(two_threads):
    model = tiny_model(hidden_size=768, num_attention_heads=12, intermediate_size=64)  # 2 x 256 x 768^2 = 3e8
    assert _threads_seen(model, torch.randint(2, 100, (2, 128))) == [2]


def test_wide_model_decode_steps_by_batch(two_threads):
    """A 160m-wide decode step: one thread at batch 1 (2 x 768^2 = 1.2e6 FLOPs), all at batch 8 (9.4e6)."""
    model = tiny_model(hidden_size=768, num_attention_heads=12, intermediate_size=64)
    assert _threads_seen(model, torch.randint(2, 100, (1, 1))) == [1]
    assert _threads_seen(model, torch.randint(2, 100, (8, 1))) == [2]
    assert threads.threads_for(128, 10_000) == 1  # the demo's width: always one


def test_pinned_threads_win(two_threads, monkeypatch):
    model = workbench.load("demo")
    threads.set_threads(2)
    assert _threads_seen(model, torch.randint(2, 4000, (1, 8))) == [2]
    threads.set_threads("auto")
    monkeypatch.setenv("WORKBENCH_THREADS", "2")
    assert _threads_seen(model, torch.randint(2, 4000, (1, 8))) == [2]
    monkeypatch.setenv("WORKBENCH_THREADS", "lots")
    with pytest.raises(ValueError, match="WORKBENCH_THREADS must be an int >= 1 or 'auto', got 'lots'"):
        model(torch.randint(2, 4000, (1, 8)))


def test_generate_decodes_small_work_on_one_thread(two_threads):
    model = workbench.load("demo")
    seen: list[int] = []
    hooks = [("blocks.0.hook_resid_pre", lambda x, hook: seen.append(torch.get_num_threads()))]
    model.generate("And God said", max_new_tokens=3, min_new_tokens=3, fwd_hooks=hooks)
    assert seen == [1, 1, 1] and torch.get_num_threads() == 2


@pytest.mark.parametrize("bad", [0, -1, 1.5, "two", True])
def test_bad_thread_counts_are_refused(bad):
    with pytest.raises(ValueError, match="threads must be an int >= 1 or 'auto'"):
        threads.set_threads(bad)


def test_cli_threads_flag(capsys, two_threads):
    assert main(["info", "demo", "--threads", "1", "--json"]) == 0
    assert threads.pinned_threads() == 1 and torch.get_num_threads() == 1
    with pytest.raises(SystemExit):
        main(["info", "demo", "--threads", "0"])
    assert "must be an int >= 1 or 'auto', got '0'" in capsys.readouterr().err
