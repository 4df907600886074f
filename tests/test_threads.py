"""CPU thread choice: one thread for small forwards, torch's setting capped at the free cores for large ones, or a
pinned count."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest
import torch

import workbench
from workbench import fast_decode, generation, threads
from workbench.cli import main

from .helpers import tiny_model


@pytest.fixture
def two_threads(monkeypatch):
    """torch at 2 threads, the policy on and the machine reported quiet (2 free cores: the load of a shared test
    machine must not decide these tests), restored afterwards (conftest runs tests on one thread)."""
    monkeypatch.setattr(threads, "free_cores", lambda: 2)
    before = torch.get_num_threads()
    threads.set_threads(None)
    torch.set_num_threads(2)
    yield
    threads.set_threads(None)
    torch.set_num_threads(before)


def _threads_seen(model: torch.nn.Module, ids: torch.Tensor) -> list[int]:
    """torch's thread count inside the forward, read by a hook at the first block."""
    seen: list[int] = []
    model.run_with_hooks(ids, fwd_hooks=[("blocks.0.hook_resid_pre", lambda x, hook: seen.append(torch.get_num_threads()))])
    return seen


def test_small_forward_runs_on_one_thread_and_restores(two_threads):
    model = workbench.load("demo")  # hidden 128: 2 x 16 x 128^2 = 5e5 FLOPs per op, below the threshold
    assert _threads_seen(model, torch.randint(2, 4000, (1, 16))) == [1]
    assert torch.get_num_threads() == 2  # restored after the forward


def test_large_forward_keeps_torchs_setting(two_threads):
    model = tiny_model(hidden_size=768, num_attention_heads=12, intermediate_size=64)  # 2 x 256 x 768^2 = 3e8
    assert _threads_seen(model, torch.randint(2, 100, (2, 128))) == [2]


def test_wide_model_decode_steps_by_batch(two_threads):
    """A 512-wide decode step: one thread at batch 1 (2 x 512^2 = 5.2e5 FLOPs), all at batch 8 (4.2e6)."""
    model = tiny_model(hidden_size=512, num_attention_heads=8, intermediate_size=64)
    assert _threads_seen(model, torch.randint(2, 100, (1, 1))) == [1]
    assert _threads_seen(model, torch.randint(2, 100, (8, 1))) == [2]


def test_demo_batches_take_the_free_cores(two_threads, monkeypatch):
    """The demo (hidden 128): a batch of 1,024 tokens (2 x 1024 x 128^2 = 3.4e7) runs on every free core; with
    one core taken by another process, on one."""
    model = workbench.load("demo")
    ids = torch.randint(2, 4000, (4, 256))
    assert _threads_seen(model, ids) == [2]
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    assert _threads_seen(model, ids) == [1]
    monkeypatch.setattr(threads, "free_cores", lambda: 0)  # every core busy: still one thread
    assert threads.threads_for(128, 10_000) == 1
    monkeypatch.setattr(threads, "free_cores", lambda: None)  # load unknown (not Linux): torch's setting
    assert threads.threads_for(128, 10_000) == 2


def test_wide_models_ignore_the_load(two_threads, monkeypatch):
    """Past LOAD_AWARE_MAX_HIDDEN the thread count is a function of the work only: the load never decides bits."""
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    assert threads.threads_for(768, 10_000) == 2
    assert threads.threads_for(256, 10_000) == 2  # a 256-wide model's products differ by thread count
    assert threads.threads_for(128, 10_000) == 1


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_demo_logits_do_not_depend_on_the_thread_count(dtype):
    """What lets the demo's thread count follow the load: its products give the same bits on 1 and 2 threads."""
    model = workbench.load("demo", dtype=dtype)
    before = torch.get_num_threads()
    try:
        for shape in [(1, 40), (4, 256), (16, 64)]:
            ids = torch.randint(2, 4000, shape, generator=torch.Generator().manual_seed(shape[1]))
            outs = []
            for n in (1, 2):
                threads.set_threads(n)
                outs.append(model(ids).logits)
            assert torch.equal(*outs), shape
    finally:
        threads.set_threads(None)
        torch.set_num_threads(before)


def test_load_meter_counts_other_processes_only():
    """Busy CPU time minus this process's own, per second of wall time, since the previous reading (at least
    `window` ago; the first estimate waits `first_window` once)."""
    state = {"t": 0.0}

    def read_cpu():  # 2 CPUs; another process holds one core until t = 1; this process uses half a core always
        t = state["t"]
        return min(t, 1.0) + 0.5 * t, 2

    def sleep(dt):
        state["t"] += dt

    meter = threads.LoadMeter(read_cpu=read_cpu, read_own=lambda: 0.5 * state["t"], clock=lambda: state["t"],
                              window=0.5, first_window=0.05, sleep=sleep)
    assert meter.free_cores() == 1 and state["t"] == pytest.approx(0.05)  # waited once for a first window
    state["t"] = 0.2
    assert meter.free_cores() == 1  # within the window: the last estimate, no reading
    state["t"] = 3.0  # since 0.05: the other process used (1 - 0.05) / 2.95 = 0.32 of a core (> BUSY_SHARE)
    assert meter.free_cores() == 1
    state["t"] = 4.0  # the last second: nobody else
    assert meter.free_cores() == 2
    calls = []
    unreadable = threads.LoadMeter(read_cpu=lambda: calls.append(1))
    assert unreadable.free_cores() is None and unreadable.free_cores() is None
    assert len(calls) == 1  # an unreadable load is not read again at every forward


def test_load_meter_without_elapsed_time_gives_no_figure():
    meter = threads.LoadMeter(read_cpu=lambda: (1.0, 2), read_own=lambda: 0.0, clock=lambda: 5.0, window=0,
                              first_window=0, sleep=lambda dt: None)
    assert meter.free_cores() is None  # no time passed: no division by zero, no figure
    assert meter.free_cores() is None


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork")
def test_forked_child_starts_a_fresh_load_window():
    threads._meter._last = (0.0, 0.0, 1e9)  # a parent's reading: the child's own CPU time restarts at 0
    pid = os.fork()
    if pid == 0:
        os._exit(0 if threads._meter._last is None else 1)
    _, status = os.waitpid(pid, 0)
    threads._meter.reset()
    assert os.waitstatus_to_exitcode(status) == 0


def test_auto_restores_torchs_setting_and_overrides_the_env(monkeypatch):
    before = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        threads.set_threads(1)
        assert torch.get_num_threads() == 1
        threads.set_threads("auto")
        assert torch.get_num_threads() == 2  # torch's own setting is back
        threads.set_threads(1)
        torch.set_num_threads(2)  # changed by the user after the pin: it stays
        threads.set_threads("auto")
        assert torch.get_num_threads() == 2
        monkeypatch.setenv("WORKBENCH_THREADS", "1")
        assert threads.pinned_threads() is None  # an explicit "auto" wins over the environment
        threads.set_threads(None)
        assert threads.pinned_threads() == 1  # the default again: the environment decides
        for env, want in [("AUTO", None), ("  3 ", 3)]:
            monkeypatch.setenv("WORKBENCH_THREADS", env)
            assert threads.pinned_threads() == want
        for bad in ["\u0663", "\u00b2", "0", "-1"]:  # Arabic-Indic three, superscript two
            monkeypatch.setenv("WORKBENCH_THREADS", bad)
            with pytest.raises(ValueError, match="WORKBENCH_THREADS must be an int >= 1 or 'auto'"):
                threads.pinned_threads()
    finally:
        threads.set_threads(None)
        torch.set_num_threads(before)


@pytest.mark.skipif(not os.path.exists("/proc/stat"), reason="the load is read from Linux's /proc/stat")
def test_load_meter_sees_busy_cores():
    """With a spinning process on every core of this machine, no core is free."""
    meter = threads.LoadMeter(window=0.2)
    n = len(os.sched_getaffinity(0))
    spinners = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]
    try:
        time.sleep(0.5)  # the spinners start
        meter.free_cores()
        time.sleep(0.6)
        assert meter.free_cores() == 0
    finally:
        for p in spinners:
            p.kill()


def test_pinned_threads_win(two_threads, monkeypatch):
    model = workbench.load("demo")
    threads.set_threads(2)
    assert _threads_seen(model, torch.randint(2, 4000, (1, 8))) == [2]
    threads.set_threads(None)
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


def _decode_step_threads(monkeypatch) -> list[int]:
    """torch's thread count at each fast decode step (`DecodeStep.__call__`), recorded from now on."""
    seen: list[int] = []
    call = fast_decode.DecodeStep.__call__

    def spy(self, *args, **kwargs):
        seen.append(torch.get_num_threads())
        return call(self, *args, **kwargs)

    monkeypatch.setattr(fast_decode.DecodeStep, "__call__", spy)
    return seen


def _wide_model():
    """768 wide: a batch-1 decode step (2 x 768^2 = 1.2e6 FLOPs) is past SMALL_OP_FLOPS, like Pythia-160m's."""
    return tiny_model(hidden_size=768, num_attention_heads=12, intermediate_size=64)


def test_wide_decode_steps_follow_the_load_with_the_same_tokens(two_threads, monkeypatch):
    """Decode steps give the same bits on any thread count (probed), so even a wide model's follow the load:
    two threads on a quiet machine, one beside a busy process, and the same tokens either way. The probe runs
    only when the load changes the count, once per shape, batch and count."""
    monkeypatch.setattr(fast_decode, "_same_bits", {})  # a fresh process's: nothing probed yet
    model, seen = _wide_model(), _decode_step_threads(monkeypatch)
    ids = torch.randint(2, 100, (1, 5), generator=torch.Generator().manual_seed(0))
    quiet = model.generate(ids, max_new_tokens=4, eos_token_id=[])
    assert seen == [2, 2, 2]  # the first new token comes from the prefill; no probe: the count is the policy's
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    seen.clear()
    busy = model.generate(ids, max_new_tokens=4, eos_token_id=[])
    assert seen == [1, 2, 1, 1, 1]  # the probe's two steps (1 and 2 threads), then the decode's
    assert torch.equal(quiet, busy)
    seen.clear()
    model.generate(ids, max_new_tokens=4, eos_token_id=[])
    assert seen == [1, 1, 1]  # probed once
    assert torch.get_num_threads() == 2

def test_decode_threads_stay_fixed_where_the_probe_finds_other_bits(two_threads, monkeypatch):
    monkeypatch.setattr(generation, "same_bits_on_threads", lambda step, batch, n: False)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    model, seen = _wide_model(), _decode_step_threads(monkeypatch)
    model.generate(torch.randint(2, 100, (1, 5)), max_new_tokens=3, eos_token_id=[])
    assert seen == [2, 2]  # torch's setting, whatever the load


def test_pinned_threads_decode_without_a_probe(two_threads, monkeypatch):
    monkeypatch.setattr(generation, "same_bits_on_threads", lambda step, batch, n: pytest.fail("probed"))
    threads.set_threads(2)
    monkeypatch.setattr(threads, "free_cores", lambda: 1)
    model, seen = _wide_model(), _decode_step_threads(monkeypatch)
    model.generate(torch.randint(2, 100, (1, 5)), max_new_tokens=3, eos_token_id=[])
    assert seen == [2, 2]


@pytest.mark.parametrize("batch", [1, 8])
def test_decode_step_bits_do_not_depend_on_the_thread_count(batch, monkeypatch):
    """What lets decode steps follow the load: a wide model's step (oneDNN products, attention written out) gives
    the same logits on 1 and 2 threads; and the probe does see a step whose bits depend on the count."""
    monkeypatch.setattr(fast_decode, "_same_bits", {})
    step = fast_decode.DecodeStep.for_model(_wide_model(), batch)
    assert step.eager  # the sdpa model's attention is written out
    assert fast_decode.same_bits_on_threads(step, batch, 2)
    assert not fast_decode.same_bits_on_threads(step, fast_decode.INVARIANT_MAX_BATCH + 1, 2)  # not probed
    monkeypatch.setattr(fast_decode, "_same_bits", {})
    norm = step.final_ln
    monkeypatch.setattr(step, "final_ln", lambda x: norm(x) + 1e-3 * (torch.get_num_threads() - 1))
    assert not fast_decode.same_bits_on_threads(step, batch, 2)
    assert torch.get_num_threads() == 1  # the probe restores the count


def test_set_threads_is_exported():
    assert workbench.set_threads is threads.set_threads  # the README's `workbench.set_threads(n)`


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


def test_wide_load_following_decode_gives_transformers_tokens(two_threads, monkeypatch, tmp_path):
    """The load-following step of a wide model (oneDNN products, attention written out, two threads or one)
    decodes transformers' greedy tokens."""
    import transformers

    model = _wide_model()
    model.save_pretrained(tmp_path)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path).eval()
    ids = torch.randint(2, 100, (2, 6), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = hf.generate(ids, max_new_tokens=12, min_new_tokens=12, do_sample=False, pad_token_id=0)
    seen = _decode_step_threads(monkeypatch)
    for free in (2, 1):
        monkeypatch.setattr(threads, "free_cores", lambda free=free: free)
        seen.clear()
        assert torch.equal(model.generate(ids, max_new_tokens=12, eos_token_id=[]), expected)
        assert seen[-1] == free
