"""CPU threads: how many torch uses for a forward, chosen by the size of the work unless the user pins it.

On a CPU, a small model's matmuls are too short to split: with two or more threads each op pays OpenMP's
fork/join and, when another process holds a core, a spin-wait that can cost milliseconds per op
(`bench/bench_threads.py` measures it). What decides is the size of one op, not of the whole forward: a model
at most `SMALL_HIDDEN` wide, or a forward whose hidden-by-hidden product (2 x tokens x hidden^2 FLOPs) is below
`SMALL_OP_FLOPS`, runs on one thread; larger work on torch's setting (by default all physical cores). Measured on
a 2-core machine (README): on a quiet machine a second thread makes the demo's forwards up to 1.6x faster; with
another process on the other core it makes them up to 2x slower (the issue saw 5-20x on a busier machine), so
small work takes one thread. `set_threads(n)` (or `WORKBENCH_THREADS=n`, or the CLI's `--threads n`) pins every forward
to `n` threads instead; `set_threads("auto")` restores the policy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import threading
from typing import Iterator

import torch

# One thread for a model of at most this width (every op too short to split: the demo, hidden 128) and, for wider
# ones, for a forward whose hidden x hidden product (2 x tokens x hidden^2) is below SMALL_OP_FLOPS (a Pythia-160m
# decode step at batch 1: 1.2e6; at batch 8, 9.4e6, is past it). See bench/bench_threads.py and the README.
SMALL_HIDDEN = 256
SMALL_OP_FLOPS = 5e6
_pinned: int | None = None


def set_threads(n: int | str | None) -> None:
    """Pin the threads of every workbench forward on CPU, or restore the work-size policy.

    Args:
        n: an int >= 1 (also sets `torch.set_num_threads(n)` for everything else torch does), or "auto" /
            None for the policy (one thread for small work, torch's default for large).

    Raises:
        ValueError: `n` is neither a positive int nor "auto".
    """
    global _pinned
    if n is None or n == "auto":
        _pinned = None
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an int >= 1 or 'auto', got {n!r}")
    _pinned = n
    torch.set_num_threads(n)


def pinned_threads() -> int | None:
    """The pinned thread count (`set_threads` or `WORKBENCH_THREADS`), or None under the policy."""
    if _pinned is not None:
        return _pinned
    env = os.environ.get("WORKBENCH_THREADS", "").strip()
    if env in ("", "auto"):
        return None
    if not env.isdigit() or int(env) < 1:
        raise ValueError(f"WORKBENCH_THREADS must be an int >= 1 or 'auto', got {env!r}")
    return int(env)


def threads_for(hidden_size: int, n_tokens: int) -> int:
    """Threads for a CPU forward of `n_tokens` tokens through a model of width `hidden_size`: the pinned count,
    else one for small work and torch's current setting (by default all physical cores) for large."""
    pinned = pinned_threads()
    if pinned is not None:
        return pinned
    small = hidden_size <= SMALL_HIDDEN or 2.0 * n_tokens * hidden_size**2 < SMALL_OP_FLOPS
    return 1 if small else torch.get_num_threads()


@contextlib.contextmanager
def forward_threads(hidden_size: int, n_tokens: int, device: torch.device) -> Iterator[None]:
    """Run the enclosed CPU work (a forward of `n_tokens` tokens through a model of width `hidden_size`) on
    `threads_for(hidden_size, n_tokens)` threads, then restore the count.

    Work nested inside (the model's forward inside `generate`) keeps the outer choice. On other devices nothing
    changes.
    """
    if device.type != "cpu" or getattr(_state, "active", False):
        yield
        return
    want, before = threads_for(hidden_size, n_tokens), torch.get_num_threads()
    _state.active = True
    if want != before:
        torch.set_num_threads(want)
    try:
        yield
    finally:
        _state.active = False
        if want != before:
            torch.set_num_threads(before)


_state = threading.local()  # per Python thread: whether a forward_threads block is open


def add_threads_arg(parser: argparse.ArgumentParser) -> None:
    """`--threads N|auto` for a CLI subcommand; `workbench.cli.main` applies it with `set_threads`."""
    parser.add_argument("--threads", type=_threads_value, default=None,
                        help="CPU threads: an int, or 'auto' (default: 1 for small work, all cores for large)")


def _threads_value(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 or 'auto', got {value!r}")
    return int(value)
