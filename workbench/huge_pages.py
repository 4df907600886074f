"""CPU tensors in transparent huge pages, for weights that every decode step streams from memory.

A batch-1 decode step reads every weight once (Pythia-160m: ~500 MB of fp32 per token), and with 4 kB pages
that is ~120,000 pages per step, each a TLB miss. Weights memory-mapped from a safetensors file sit in the
page cache's 4 kB pages; anonymous memory that is 2 MB-aligned and advised `MADV_HUGEPAGE` gets 2 MB pages
from the kernel's transparent huge pages (THP). `bench/bench_core.py` compares the two (`--only generate`):
see the README's core table. The loader (`workbench.checkpoint`) reads CPU weights into such memory when THP
is available; `mmap=True` keeps the memory map instead.

Linux only, and only where `/sys/kernel/mm/transparent_hugepage/enabled` is `always` or `madvise`; elsewhere
`empty` returns ordinary torch memory.
"""

from __future__ import annotations

import functools
import mmap
from pathlib import Path

import torch

HUGE_PAGE = 2 * 2**20  # bytes: x86-64's and arm64's (4 kB base pages) transparent huge page
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


@functools.lru_cache(maxsize=None)
def available() -> bool:
    """Whether the kernel gives transparent huge pages to memory advised `MADV_HUGEPAGE` (Linux, THP mode
    `always` or `madvise`, and not disabled for this process: `THP_enabled: 0` in /proc/self/status, set by
    `prctl(PR_SET_THP_DISABLE)`)."""
    try:
        mode = THP_SETTING.read_text()
        status = Path("/proc/self/status").read_text()
    except OSError:
        return False
    disabled = any(line.split() == ["THP_enabled:", "0"] for line in status.splitlines())
    return hasattr(mmap, "MADV_HUGEPAGE") and ("[always]" in mode or "[madvise]" in mode) and not disabled


def empty(shape: tuple[int, ...] | torch.Size, dtype: torch.dtype) -> torch.Tensor:
    """An uninitialised contiguous CPU tensor; backed by huge pages when `available()` and at least one huge
    page large, else by `torch.empty`.

    The tensor owns its mapping: it is unmapped when the last tensor viewing it is freed. Only the pages a
    write touches become resident (at most one huge page beyond the tensor's size is reserved, for alignment;
    the tensor's storage is its own bytes only). Copies (`share_memory_()`, `.to(...)`, `copy.deepcopy`) are
    ordinary torch memory.

    Args:
        shape: the tensor's shape.
        dtype: its dtype.

    Returns:
        The tensor, `[*shape]` of `dtype`, on the CPU.
    """
    numel = 1
    for size in shape:
        numel *= int(size)
    nbytes = numel * torch.empty((), dtype=dtype).element_size()
    if nbytes < HUGE_PAGE or not available():
        return torch.empty(shape, dtype=dtype)
    region = mmap.mmap(-1, nbytes + HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    region.madvise(mmap.MADV_HUGEPAGE)  # before the first write: the kernel then faults in 2 MB pages
    start = -torch.frombuffer(region, dtype=torch.uint8).data_ptr() % HUGE_PAGE  # THP needs 2 MB alignment
    # The storage is exactly the tensor's bytes (torch.save and pickle write whole storages), and the
    # memoryview keeps `region` mapped until the last tensor viewing it is freed.
    return torch.frombuffer(memoryview(region)[start : start + nbytes], dtype=dtype).view(shape)


def huge_page_bytes(tensor: torch.Tensor) -> int | None:
    """Bytes of huge pages resident in the mapping that holds `tensor`'s first element (`AnonHugePages` of
    `/proc/self/smaps`), or None where that file can't be read (not Linux)."""
    address = tensor.data_ptr()
    try:
        lines = Path("/proc/self/smaps").read_text().splitlines()
    except OSError:
        return None
    inside = False
    for line in lines:
        head = line.split(maxsplit=1)[0]
        if "-" in head and ":" not in head:  # a mapping's header line: "start-end perms offset dev inode path"
            start, end = (int(x, 16) for x in head.split("-"))
            inside = start <= address < end
        elif inside and head == "AnonHugePages:":
            return int(line.split()[1]) * 1024
    return 0
