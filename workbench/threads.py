"""CPU threads: how many torch uses for a forward, chosen by the size of the work and the machine's load unless
the user pins it.

On a CPU, two things make extra threads cost instead of help (`bench/bench_threads.py` measures both):
- a matmul too short to split pays OpenMP's fork/join for nothing: a forward whose hidden-by-hidden product
  (2 x tokens x hidden^2 FLOPs) is below `SMALL_OP_FLOPS` runs on one thread (a decode step at batch 1);
- a core that another process is using: OpenMP's threads spin-wait for the one that was descheduled, which made
  the demo's batched forwards 3.8x slower with one busy core on a 2-core machine (the issue saw 5-20x on a
  busier one).

So larger work runs on torch's setting (by default all physical cores), and for a model at most
`LOAD_AWARE_MAX_HIDDEN` wide (the demo) that is capped at the cores other processes left idle lately
(`free_cores`, from `/proc/stat` and this process's own CPU time, over the time since the previous reading and at
least `LOAD_WINDOW_S`: during a run of forwards, about the last quarter second; the first forward after an idle
pause averages over the pause): every core on a quiet machine (a second thread makes the demo's batched forwards
up to 1.8x faster), one beside a busy process. Only that narrow: there the matrix products give the same bits on
any thread count (a test checks the demo), so the load changes the speed and never the result. Wider models'
products round differently on another thread count (measured: a 256-wide model's logits by ~1e-6 at small
batches, Pythia-160m's by ~3e-6), and a result that depended on the machine's load of the moment would break
"a cached run is bit-identical to a plain one" and bitwise resumable evals; their thread count is a fixed function
of the work and torch's setting. Cgroup CPU quotas are not read; pin the threads in a quota-limited container.

Decode steps (one new token per row) are the exception: their products and written-out attention split no sum
between threads, so `generate` lets their count follow the load for a model of any width wherever a one-off probe
finds the same bits on one thread as on torch's setting (`workbench.fast_decode.same_bits_on_threads`).

`set_threads(n)` (or `WORKBENCH_THREADS=n`, or the CLI's `--threads n`) pins every forward to `n` threads
instead; `set_threads("auto")` restores the policy.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import threading
import time
from typing import Iterator

import torch

# One thread for a forward whose hidden x hidden product (2 x tokens x hidden^2) is below SMALL_OP_FLOPS: the
# demo's decode steps and prompts of up to 30 tokens; a Pythia-160m decode step at batch 1 (1.2e6) is past it (two
# threads made its generation 1.8x faster on a quiet machine). See bench/bench_threads.py and the README.
SMALL_OP_FLOPS = 1e6
# Load is measured over windows at least this long (/proc/stat counts in 10 ms ticks); between two updates the
# last estimate holds, so a forward pays one file read at most every window. The very first estimate of a process
# needs only FIRST_WINDOW_S (the first large forward waits for the rest of it, once).
LOAD_WINDOW_S = 0.25
FIRST_WINDOW_S = 0.05
# A core counts as free when other processes used less than this share of it over the window.
BUSY_SHARE = 0.3
# Models at most this wide follow the load: the demo's (128) products give the same bits on 1 and 2 threads
# (tests/test_threads.py); a 256-wide model's did not.
LOAD_AWARE_MAX_HIDDEN = 128
_pinned: int | str | None = None  # an int, "auto" (the policy, whatever WORKBENCH_THREADS says) or None (unset)
_torch_before_pin: int | None = None  # torch's own setting before the first pin, restored by set_threads("auto")


def set_threads(n: int | str | None) -> None:
    """Pin the threads of every workbench forward on CPU, or restore the policy of `threads_for`.

    Args:
        n: an int >= 1 (also sets `torch.set_num_threads(n)` for everything else torch does), or "auto" for the
            policy (torch's own thread count as it was before the first pin comes back, unless it was changed
            since; `WORKBENCH_THREADS` is then ignored), or None for the default: `WORKBENCH_THREADS` if set,
            else the policy.

    Raises:
        ValueError: `n` is neither a positive int nor "auto" / None.
    """
    global _pinned, _torch_before_pin
    if n is None or n == "auto":
        # torch's setting comes back unless someone changed it since the pin (then theirs stays)
        if _torch_before_pin is not None and isinstance(_pinned, int) and torch.get_num_threads() == _pinned:
            torch.set_num_threads(_torch_before_pin)
        _pinned, _torch_before_pin = n, None
        return
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"threads must be an int >= 1 or 'auto', got {n!r}")
    if _torch_before_pin is None:
        _torch_before_pin = torch.get_num_threads()
    _pinned = n
    torch.set_num_threads(n)


def pinned_threads() -> int | None:
    """The pinned thread count (`set_threads`, else `WORKBENCH_THREADS`), or None under the policy.

    Raises:
        ValueError: `WORKBENCH_THREADS` is neither digits >= 1 nor "auto".
    """
    if _pinned == "auto":
        return None
    if _pinned is not None:
        return _pinned
    env = os.environ.get("WORKBENCH_THREADS", "").strip()
    if env.lower() in ("", "auto"):
        return None
    if not re.fullmatch(r"[0-9]+", env) or int(env) < 1:
        raise ValueError(f"WORKBENCH_THREADS must be an int >= 1 or 'auto', got {env!r}")
    return int(env)


def threads_for(hidden_size: int, n_tokens: int, same_bits_any_count: bool = False) -> int:
    """Threads for a CPU forward of `n_tokens` tokens through a model of width `hidden_size`: the pinned count,
    else one for small work, and for large work torch's current setting (by default all physical cores), capped
    at the cores other processes leave free (`free_cores`) for a model at most `LOAD_AWARE_MAX_HIDDEN` wide, or
    for any work whose caller knows it gives the same bits on any thread count (`same_bits_any_count`: decode
    steps, see `workbench.fast_decode.same_bits_on_threads`)."""
    pinned = pinned_threads()
    if pinned is not None:
        return pinned
    if is_small_work(hidden_size, n_tokens):
        return 1
    setting = torch.get_num_threads()
    free = free_cores() if same_bits_any_count or hidden_size <= LOAD_AWARE_MAX_HIDDEN else None
    return setting if free is None else max(1, min(setting, free))


def is_small_work(hidden_size: int, n_tokens: int) -> bool:
    """Whether a forward's hidden x hidden product (2 x tokens x hidden^2 FLOPs) is below `SMALL_OP_FLOPS`, so
    that the policy runs it on one thread."""
    return 2.0 * n_tokens * hidden_size**2 < SMALL_OP_FLOPS


class LoadMeter:
    """Cores that other processes are using, from the CPU time of this process's CPUs (`/proc/stat`) minus this
    process's own (`os.times`), over windows of at least `window` seconds.

    Args:
        read_cpu: returns `(busy seconds of the CPUs this process may run on, their count)`, or None where the
            machine doesn't say (not Linux); injectable for tests.
        read_own: this process's CPU seconds (user + system, every thread).
        clock: monotonic seconds.
    """

    def __init__(self, read_cpu=None, read_own=None, clock=time.monotonic, window: float = LOAD_WINDOW_S,
                 first_window: float = FIRST_WINDOW_S, sleep=time.sleep) -> None:
        self.read_cpu, self.read_own = read_cpu or _proc_stat_busy, read_own or _own_cpu_seconds
        self.clock, self.window, self.first_window, self.sleep = clock, window, first_window, sleep
        self._lock = threading.Lock()
        self.reset()

    def reset(self) -> None:
        """Forget every reading (a forked child's own CPU time restarts at 0)."""
        self._last: tuple[float, float, float] | None = None  # (wall, busy, own) at the window's start
        self._free: int | None = None
        self._unreadable = False

    def free_cores(self) -> int | None:
        """Cores that other processes left (mostly) idle since the previous reading (at least `window` seconds
        ago; `first_window` for the first estimate, waiting for the rest of it once); None where the load can't
        be read."""
        with self._lock:
            now = self.clock()
            if self._last is not None:
                needed = self.window if self._free is not None else self.first_window
                if now - self._last[0] < needed:
                    if self._free is not None:
                        return self._free
                    self.sleep(needed - (now - self._last[0]))  # once per process: the first estimate
                    now = self.clock()
            cpu = None if self._unreadable else self.read_cpu()
            if cpu is None:
                self._unreadable = True  # not Linux, or CPUs numbered apart from the affinity set: stop asking
                return None
            busy, n_cpus = cpu
            own = self.read_own()
            if self._last is None:  # the first reading: wait for a short window
                self._last = (now, busy, own)
                self.sleep(self.first_window)
                now, cpu = self.clock(), self.read_cpu()
                if cpu is None:
                    self._unreadable = True
                    return None
                busy, n_cpus = cpu
                own = self.read_own()
            wall, busy0, own0 = self._last
            if now > wall:
                others = max(0.0, (busy - busy0) - (own - own0)) / (now - wall)  # cores' worth of others' work
                self._free = max(0, int(n_cpus - others + BUSY_SHARE))
            self._last = (now, busy, own)
            return self._free


def _proc_stat_busy() -> tuple[float, int] | None:
    """(busy CPU seconds since boot of the CPUs this process may use, their count) from `/proc/stat`: user, nice,
    system, irq, softirq and steal (another virtual machine holding the core) count as busy."""
    try:
        allowed = os.sched_getaffinity(0)
        with open("/proc/stat") as f:
            lines = f.read().splitlines()
    except (AttributeError, OSError):
        return None
    tick, busy, n = os.sysconf("SC_CLK_TCK"), 0, 0
    for line in lines:
        name, *fields = line.split()
        if not (name.startswith("cpu") and name[3:].isdigit() and int(name[3:]) in allowed):
            continue
        user, nice, system, _idle, _iowait, irq, softirq, steal = (int(v) for v in fields[:8])
        busy += user + nice + system + irq + softirq + steal
        n += 1
    return (busy / tick, n) if n else None


def _own_cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


_meter = LoadMeter()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_meter.reset)  # the child's os.times() restart at 0


def free_cores() -> int | None:
    """Cores other processes left idle lately (None where unknown); see `LoadMeter`."""
    return _meter.free_cores()


@contextlib.contextmanager
def forward_threads(hidden_size: int, n_tokens: int, device: torch.device, threads: int | None = None) -> Iterator[None]:
    """Run the enclosed CPU work (a forward of `n_tokens` tokens through a model of width `hidden_size`) on
    `threads_for(hidden_size, n_tokens)` threads (or `threads`, a count the caller chose), then restore the count.

    Work nested inside (the model's forward inside `generate`) keeps the outer choice. On other devices nothing
    changes.
    """
    if device.type != "cpu" or getattr(_state, "active", False):
        yield
        return
    want = threads if threads is not None else threads_for(hidden_size, n_tokens)
    before = torch.get_num_threads()
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
                        help="CPU threads: an int, or 'auto' (default: 1 for small work, torch's setting for large, capped at "
                             "the free cores for models at most 128 wide; WORKBENCH_THREADS sets the default)")


def _threads_value(value: str) -> int | str:
    if value == "auto":
        return value
    if not value.isdigit() or int(value) < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1 or 'auto', got {value!r}")
    return int(value)
