"""Freed memory kept in the process (workbench.memory): a second round of allocations reuses it without page faults."""

from __future__ import annotations

import os
import platform
import subprocess
import sys

import pytest
import torch

from workbench import memory

from .helpers import tiny_model

glibc = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                           reason="freed memory is kept through glibc's mallopt")


_SECOND_ROUND = """
import resource, sys, torch
from workbench import memory
memory.retain_freed_memory(int(sys.argv[1]))
def round_(n=200, numel=2**18):  # n 1 MB tensors, every page written
    return [torch.ones(numel) for _ in range(n)]
first = round_(); del first
round_()  # the heap grows to a round's size once (and, retained, keeps it)
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_second_round(limit: int) -> int:
    """Minor page faults of a fresh process allocating and touching 200 MB again after freeing it twice (a fresh
    process: a long-lived one's heap top may be pinned by other allocations, which hides glibc's trimming)."""
    out = subprocess.run([sys.executable, "-c", _SECOND_ROUND, str(limit)], capture_output=True, text=True,
                         check=True, env={**os.environ, "WORKBENCH_RETAIN_MEMORY": "1"})
    return int(out.stdout.split()[-1])


@glibc
def test_retained_memory_is_reused_without_page_faults():
    released, retained = _faults_of_second_round(0), _faults_of_second_round(1 << 30)
    assert released > 200 * 256 * 0.5  # glibc's default: 200 MB of fresh pages, 4 kB each
    assert retained < released * 0.1


_LARGE_BLOCKS = """
import resource, sys, torch
from workbench import memory
memory.retain_freed_memory(1 << 30)
scope = memory.heap_allocations if sys.argv[1] == "heap" else memory.contextlib.nullcontext
def round_(n=5, numel=10 * 2**20):  # n 40 MB tensors: over glibc's largest mmap threshold (32 MB)
    with scope():
        return [torch.ones(numel) for _ in range(n)]
for _ in range(4):  # the heap settles at a round's size within two or three rounds (glibc's bins)
    round_()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
second = round_()
print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""


def _faults_of_large_blocks(scope: str) -> int:
    out = subprocess.run([sys.executable, "-c", _LARGE_BLOCKS, scope], capture_output=True, text=True, check=True,
                         env={**os.environ, "WORKBENCH_RETAIN_MEMORY": "1"})
    return int(out.stdout.split()[-1])


@glibc
def test_large_blocks_come_from_the_retained_heap_inside_heap_allocations():
    mmapped, heap = _faults_of_large_blocks("none"), _faults_of_large_blocks("heap")
    assert mmapped > 200 * 256 * 0.5  # each 40 MB block a fresh mmap: 200 MB of fresh 4 kB pages again
    assert heap < mmapped * 0.1


@glibc
def test_heap_allocations_restores_mmap_for_large_blocks_when_the_last_block_exits():
    memory.retain_freed_memory()
    with memory.heap_allocations():
        with memory.heap_allocations():
            assert memory._heap_users == 2
        assert memory._heap_users == 1
    assert memory._heap_users == 0
    with pytest.raises(RuntimeError), memory.heap_allocations():
        raise RuntimeError("the count drops on errors too")
    assert memory._heap_users == 0


@glibc
def test_run_with_cache_turns_retention_on(monkeypatch):
    monkeypatch.setattr(memory, "_tried", False)
    monkeypatch.setattr(memory, "_applied", None)
    model = tiny_model()
    model.run_with_cache(torch.randint(0, 100, (1, 8)))
    assert memory._applied is not None and memory._applied > 0
    memory.retain_freed_memory()


@glibc
def test_the_limit_returned_is_the_limit_applied():
    try:
        assert memory.retain_freed_memory(8 * 2**30) == 2**31 - 1  # mallopt takes an int
        assert memory.retain_freed_memory() <= min(memory.DEFAULT_LIMIT, 2**31 - 1)
    finally:
        memory.retain_freed_memory()


def test_retention_can_be_turned_off(monkeypatch):
    monkeypatch.setenv("WORKBENCH_RETAIN_MEMORY", "0")
    assert memory.retain_freed_memory() is None


@pytest.mark.parametrize("bad", [-1, 1.5, "lots", True])
def test_bad_limits_are_refused(bad):
    with pytest.raises(ValueError, match="limit must be None or an int >= 0"):
        memory.retain_freed_memory(bad)
