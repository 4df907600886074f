"""Keeping freed CPU memory in the process, so that repeated caching doesn't pay the kernel for fresh pages.

A full `run_with_cache` on a Pythia-160m shape (4 x 256 tokens) holds ~1 GB of activations. glibc's malloc hands
memory that large back to the kernel when the cache is freed (its trim threshold is at most 64 MB by default), so
the next cache of a loop over a dataset gets fresh pages again: each first write is a page fault, and on this
project's virtual machines faulting in 1 GB took 0.8-2.2 s of system time against a 1.4 s forward
(`bench/bench_hooks.py` measures it). With `retain_freed_memory()` the process keeps up to `limit` bytes of freed
memory for the next allocations instead; the cost is that the resident size stays up after a cache is dropped
(after `del cache` of ~1 GB, RSS stayed at ~1.2 GB against ~0.2 GB without): it is reused, not leaked, and
`release_freed_memory()` gives it back now.

`run_with_cache` applies it on first use where the C library is glibc (Linux); `WORKBENCH_RETAIN_MEMORY=0`
turns it off, and other platforms are left as they are.

Blocks over glibc's mmap threshold (32 MB at most) bypass the heap: each comes from a fresh mmap and goes back
at free. A cache's logits (`[4, 256, 50304]` fp32 is 206 MB) and the largest activations of longer inputs are such
blocks, and once the retained heap had no free chunk of that size left they were faulted in anew at every call
(50,000 page faults a run on the 160m shape). `heap_allocations()`, which `run_with_cache` enters, takes large
blocks from the retained heap too while a cache is being filled (glibc's `M_MMAP_MAX` = 0), and restores mmap for
large blocks afterwards.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import threading
from typing import Iterator

# mallopt parameters (glibc's malloc.h)
_M_TRIM_THRESHOLD, _M_MMAP_THRESHOLD, _M_MMAP_MAX = -1, -3, -4
_DEFAULT_MMAP_MAX = 65536  # glibc's default count of mmapped blocks allowed at once
# glibc's own ceiling for its dynamic mmap threshold (32 MB on 64-bit): larger blocks keep coming from mmap.
_MMAP_THRESHOLD = 32 * 2**20
DEFAULT_LIMIT = 2 * 2**30  # bytes of freed memory kept at most (capped at an eighth of the machine's RAM)

_applied: int | None = None
_tried = False
_heap_users = 0  # open heap_allocations() blocks, in every thread
_heap_lock = threading.Lock()


def _libc() -> ctypes.CDLL | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        return ctypes.CDLL("libc.so.6")
    except OSError:
        return None


def _memory_bytes() -> int:
    """Physical memory, or the container's limit where a cgroup sets a smaller one."""
    total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            with open(path) as f:
                value = f.read().strip()
        except OSError:
            continue
        if value.isdigit():
            total = min(total, int(value))
    return total


def retain_freed_memory(limit: int | None = None) -> int | None:
    """Keep up to `limit` bytes of freed memory in this process (glibc only); returns the limit applied, or
    None where nothing was changed (another C library, or `WORKBENCH_RETAIN_MEMORY=0`).

    Args:
        limit: bytes; default `DEFAULT_LIMIT`, at most an eighth of physical memory (or of a container's limit),
            and at most 2**31 - 1 (mallopt takes an int). 0 sets glibc's trim threshold back to its initial
            128 kB and hands the freed memory back now; glibc's mmap threshold stays fixed at 32 MB (any
            explicit setting ends glibc's dynamic adjustment of both, which would otherwise reach about that).

    Raises:
        ValueError: `limit` is negative or not an int.
    """
    global _applied
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
        raise ValueError(f"limit must be None or an int >= 0 (bytes), got {limit!r}")
    if os.environ.get("WORKBENCH_RETAIN_MEMORY", "1").strip() == "0":
        return None
    libc = _libc()
    if libc is None:
        return None
    if limit is None:
        limit = min(DEFAULT_LIMIT, _memory_bytes() // 8)
    limit = min(limit, 2**31 - 1)
    if limit == 0:
        libc.mallopt(_M_TRIM_THRESHOLD, 128 * 1024)
        release_freed_memory()
    else:
        # An explicit trim threshold also fixes glibc's mmap threshold (no more dynamic adjustment): set it to the
        # dynamic ceiling, so blocks up to 32 MB come from the retained heap as they would after warm-up.
        libc.mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD)
        libc.mallopt(_M_TRIM_THRESHOLD, limit)
    _applied = limit
    return limit


def ensure_retained() -> None:
    """`retain_freed_memory()` once per process (what `run_with_cache` calls); later calls do nothing, so a
    limit the user set stays."""
    global _tried
    if not _tried:
        _tried = True
        if _applied is None:
            retain_freed_memory()


@contextlib.contextmanager
def heap_allocations() -> Iterator[None]:
    """Inside: blocks of every size come from the retained heap, not from fresh mmaps (glibc, and only while
    `retain_freed_memory` holds a limit > 0; elsewhere nothing changes). Nested and concurrent blocks share one
    setting: glibc's default (65536 mmapped blocks) is restored when the last one exits; with `MALLOC_MMAP_MAX_`
    set in the environment nothing changes. Memory freed later goes back to the retained heap. A large block made
    inside and kept (a cached run's logits) sits in the heap and pins what lies below it, so the freed memory
    kept can then exceed the retention limit until that block is freed; `release_freed_memory()` hands back the
    free pages wherever they are."""
    global _heap_users
    # glibc has no getter for M_MMAP_MAX: a value the user set (MALLOC_MMAP_MAX_) is left alone, not overwritten
    libc = _libc() if _applied and "MALLOC_MMAP_MAX_" not in os.environ else None
    if libc is None:
        yield
        return
    with _heap_lock:
        _heap_users += 1
        if _heap_users == 1:
            libc.mallopt(_M_MMAP_MAX, 0)
    try:
        yield
    finally:
        with _heap_lock:
            _heap_users -= 1
            if _heap_users == 0:
                libc.mallopt(_M_MMAP_MAX, _DEFAULT_MMAP_MAX)


def release_freed_memory() -> bool:
    """Hand the freed memory this process holds back to the kernel now (`malloc_trim(0)`); False where the C
    library isn't glibc."""
    libc = _libc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
