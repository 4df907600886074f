"""Data-parallel evaluation over torch.distributed.

Each process (``torchrun --nproc_per_node N -m workbench eval ...``, or any launcher that sets RANK,
WORLD_SIZE, MASTER_ADDR, MASTER_PORT) computes a deterministic share of the requests and rank 0 gets
every result back in the original order, so that a sharded run returns exactly what one process
returns for the same per-request computation.

:func:`run_sharded` splits any "list of requests -> list of results" function by index, strided
(request ``i`` goes to rank ``i % world_size``), so that every rank gets a similar mix of long and short
requests. :class:`ShardedEngine` wraps the project's ``RequestEngine`` (or a ``CachingEngine`` over
one): its log-likelihood batches are formed exactly as in one process and dealt out round-robin
(``engine.sharded(rank, world_size)``), so results are bitwise those of one process (strided request
sharding would batch differently and differ by float rounding).

Usage with any engine::

    from workbench.evals import distributed as dist_eval

    dist_eval.init_from_env()                      # no-op in a single process
    out = dist_eval.run_sharded(requests, compute)  # list on rank 0, None elsewhere

    engine = dist_eval.wrap_engine(RequestEngine(model, ...))  # ShardedEngine under torchrun
    lls = engine.loglikelihood(requests)                       # every rank gets every result
    if dist_eval.is_main_process():
        write_results(lls)
"""

from __future__ import annotations

import os
from typing import Any, Callable, Sequence, TypeVar

import torch
import torch.distributed as dist

R = TypeVar("R")


def is_distributed() -> bool:
    """True inside an initialised process group of more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 outside a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """Number of processes (1 outside a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main_process() -> bool:
    """True on rank 0 (and in a single process): the one that writes results."""
    return rank() == 0


def init_from_env(backend: str | None = None, device: str | None = None) -> bool:
    """Join the process group a launcher described in the environment (torchrun sets WORLD_SIZE, RANK,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT).

    Args:
        backend: "nccl" or "gloo"; default nccl when CUDA is available and ``device`` is not "cpu",
            else gloo.
        device: "cpu" or "cuda"; with CUDA each process uses GPU ``LOCAL_RANK``.

    Returns:
        True when this process is now part of a group of more than one process; False in a single
        process (WORLD_SIZE unset or 1), where nothing is initialised.
    """
    if dist.is_available() and dist.is_initialized():
        return dist.get_world_size() > 1
    size = int(os.environ.get("WORLD_SIZE", "1"))
    if size <= 1:
        return False
    if not dist.is_available():
        raise RuntimeError("WORLD_SIZE > 1 but this torch build has no torch.distributed")
    missing = [k for k in ("RANK", "MASTER_ADDR", "MASTER_PORT") if k not in os.environ]
    if missing:
        raise ValueError(f"WORLD_SIZE={size} but {missing} are not set; launch with torchrun or set them")
    use_cuda = torch.cuda.is_available() and device != "cpu"
    if backend is None:
        backend = "nccl" if use_cuda else "gloo"
    if backend not in ("nccl", "gloo", "mpi"):
        raise ValueError(f"unknown backend {backend!r}; known: nccl, gloo, mpi")
    if use_cuda:
        # object collectives over NCCL go through the current device: one GPU per process
        torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    dist.init_process_group(backend=backend)
    return True


def local_device(device: str | None = None) -> torch.device:
    """The device this process evaluates on: ``cuda:LOCAL_RANK`` for "cuda" (default when available)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))
    return torch.device(device)


def shard_indices(n: int, rank: int, world_size: int) -> list[int]:
    """Indices of the requests a rank computes: ``rank, rank + world_size, ...`` below ``n``.

    Args:
        n: number of requests.
        rank: 0 <= rank < world_size.
        world_size: number of processes.

    Returns:
        The rank's indices in increasing order; the shards of all ranks partition ``range(n)``.
    """
    if world_size < 1:
        raise ValueError(f"world_size must be >= 1, got {world_size}")
    if not 0 <= rank < world_size:
        raise ValueError(f"rank must be in [0, {world_size}), got {rank}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return list(range(rank, n, world_size))


def run_sharded(
    requests: Sequence[Any],
    compute_fn: Callable[[list[Any]], Sequence[R]],
    *,
    dst: int | None = 0,
    group: Any = None,
) -> list[R] | None:
    """Compute ``compute_fn(requests)`` split across the process group, results in request order.

    Every rank must call this with the same ``requests`` (same length, same order). Outside a process
    group of more than one process this is just ``list(compute_fn(list(requests)))``.

    Args:
        requests: the full list of requests, identical on every rank.
        compute_fn: list of requests -> list of results, one per request, in order (e.g. the engine's
            ``loglikelihood``). Called once per rank with that rank's share (possibly empty).
            Results must be picklable.
        dst: the rank that receives all results (default 0); None gives every rank all results.
        group: a process group (default: the world).

    Returns:
        The results of all requests in the original order on ``dst`` (on every rank when dst is None);
        None on the other ranks.

    Raises:
        ValueError: ``compute_fn`` returned a different number of results than it got requests, or the
            ranks disagree on the number of requests.
    """
    requests = list(requests)
    if not is_distributed():
        return _checked(compute_fn, requests)
    me, size = dist.get_rank(group), dist.get_world_size(group)
    # a rank with a different request list would silently shuffle results: check the count up front
    counts: list[Any] = [None] * size
    dist.all_gather_object(counts, len(requests), group=group)
    if len(set(counts)) != 1:
        raise ValueError(f"ranks hold different numbers of requests: {counts}")
    mine = shard_indices(len(requests), me, size)
    local = _checked(compute_fn, [requests[i] for i in mine])

    if dst is None:
        gathered: list[Any] = [None] * size
        dist.all_gather_object(gathered, local, group=group)
    else:
        gathered = [None] * size if me == dst else None
        dist.gather_object(local, gathered, dst=dst, group=group)
        if me != dst:
            return None
    out: list[Any] = [None] * len(requests)
    for r, part in enumerate(gathered):
        for i, result in zip(shard_indices(len(requests), r, size), part):
            out[i] = result
    return out


def _checked(compute_fn: Callable[[list[Any]], Sequence[R]], requests: list[Any]) -> list[R]:
    results = list(compute_fn(requests))
    if len(results) != len(requests):
        raise ValueError(f"compute_fn returned {len(results)} results for {len(requests)} requests")
    return results


def barrier() -> None:
    """Wait for every process (no-op in a single process)."""
    if is_distributed():
        dist.barrier()


def cleanup() -> None:
    """Leave the process group if this process initialised one."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


class ShardedEngine:
    """A request engine whose request methods split their work over the process group.

    Wraps a ``RequestEngine`` (or anything with the same methods): ``loglikelihood``,
    ``loglikelihood_tokens``, ``loglikelihood_rolling`` and ``generate_until`` each compute this rank's
    share and return every result, in order, on every rank (so the metric code after them runs unchanged
    everywhere; only rank 0 should write files). ``stats`` holds the engine counters summed over the
    ranks (plus ``resharded``: requests recomputed because the ranks' caches differed). Any other
    attribute is the wrapped engine's.

    How the work is split: for log-likelihoods of an engine with ``sharded(rank, world_size)`` (the
    project's ``RequestEngine`` and ``CachingEngine``), every rank sees all requests and forms the very
    batches one process would form, and computes every ``world_size``-th of them with everything that
    shares their prefixes; results are then bitwise those of one process (same batch composition, same
    padding). Otherwise (rolling log-likelihoods, generation, other engines) requests are split by index,
    as :func:`run_sharded` does.

    Args:
        engine: the per-process engine (its model on this rank's device).
        group: a process group (default: the world).
    """

    def __init__(self, engine: Any, group: Any = None) -> None:
        self.engine = engine
        self.group = group
        self.stats = dict(getattr(engine, "stats", {}))
        # this rank's share of the batches (same model and counters), for the by-batch methods
        self._share = None
        if is_distributed() and callable(getattr(engine, "sharded", None)):
            self._share = engine.sharded(dist.get_rank(group), dist.get_world_size(group))

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes not set in __init__: the wrapped engine's (max_length, device, encode ...)
        return getattr(self.__dict__["engine"], name)

    def _count(self, before: dict, replicated: tuple[str, ...] = ()) -> None:
        """Add this call's counter increments of every rank to ``self.stats``; the ``replicated`` counters,
        which every rank counts over all requests (``truncated`` when each rank checks every request of a
        by-batch call), are taken once (rank 0's), not summed."""
        local_stats = getattr(self.engine, "stats", None)
        if not isinstance(local_stats, dict):
            return
        delta = {k: v - before.get(k, 0) for k, v in local_stats.items() if isinstance(v, (int, float))}
        deltas: list[Any] = [delta]
        if is_distributed():
            deltas = [None] * dist.get_world_size(self.group)
            dist.all_gather_object(deltas, delta, group=self.group)
        for r, part in enumerate(deltas):
            for k, v in part.items():
                if r == 0 or k not in replicated:
                    self.stats[k] = self.stats.get(k, 0) + v

    def _by_request(self, method: str, requests: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        before = dict(getattr(self.engine, "stats", {}) or {})
        function = getattr(self.engine, method)
        out = run_sharded(requests, lambda part: function(part, *args, **kwargs), dst=None, group=self.group)
        self._count(before)
        return out  # type: ignore[return-value]

    def _by_batch(self, method: str, requests: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        if self._share is None or not is_distributed():
            return self._by_request(method, requests, *args, **kwargs)
        size = dist.get_world_size(self.group)
        counts: list[Any] = [None] * size
        dist.all_gather_object(counts, len(requests), group=self.group)
        if len(set(counts)) != 1:
            raise ValueError(f"ranks hold different numbers of requests: {counts}")
        before = dict(self.engine.stats)
        # the engine's own top-level batches, identical on every rank: this rank's share computed, None elsewhere
        local = list(getattr(self._share, method)(requests, *args, **kwargs))
        self._count(before, replicated=("truncated",))
        parts: list[Any] = [None] * size
        dist.all_gather_object(parts, local, group=self.group)
        out = [next((part[i] for part in parts if part[i] is not None), None) for i in range(len(requests))]
        # Ranks whose request caches differ (one resumed from another file, or a request repeated after another
        # rank cached it) form different batches, so a request may fall through every rank's share: compute
        # those by index. Every rank sees the same gathered results, so all agree on the list.
        missing = [i for i, value in enumerate(out) if value is None]
        if missing:
            self.stats["resharded"] = self.stats.get("resharded", 0) + len(missing)
            redo = self._by_request(method, [requests[i] for i in missing], *args, **kwargs)
            for i, value in zip(missing, redo):
                out[i] = value
        return out

    def loglikelihood(self, requests: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """The engine's ``loglikelihood``, its batches spread over the ranks."""
        return self._by_batch("loglikelihood", requests, *args, **kwargs)

    def loglikelihood_tokens(self, requests: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """The engine's ``loglikelihood_tokens``, its batches spread over the ranks."""
        return self._by_batch("loglikelihood_tokens", requests, *args, **kwargs)

    def loglikelihood_rolling(self, requests: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """The engine's ``loglikelihood_rolling``, split by text (a text's windows stay on one rank)."""
        return self._by_request("loglikelihood_rolling", requests, *args, **kwargs)

    def generate_until(self, requests: Sequence[Any], *args: Any, **kwargs: Any) -> list[Any]:
        """The engine's ``generate_until``, split by request."""
        return self._by_request("generate_until", requests, *args, **kwargs)


def wrap_engine(engine: Any, group: Any = None) -> Any:
    """``ShardedEngine(engine)`` inside a process group of more than one process, else ``engine`` itself.

    Safe to call unconditionally (and twice): the evaluation loop does
    ``engine = wrap_engine(RequestEngine(model, ...))`` and runs the same in one or N processes.
    """
    if isinstance(engine, ShardedEngine) or not is_distributed():
        return engine
    return ShardedEngine(engine, group)
