"""Resumable evaluation: an on-disk `RequestCache` and `CachingEngine`, which answers requests from it.

`CachingEngine(engine, cache)` wraps a request engine as lm-eval's `CachingLM` wraps an `LM`: requests found in
the cache are answered from it, the others go to the engine, and every batch the engine finishes is appended to
the cache at once, so an interrupted run resumes without recomputing what it finished.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from workbench.evals.requests import TokenRequests

class RequestCache:
    """Append-only JSONL cache of finished requests, keyed by a hash of (model identity, request).

    Each finished request is one line `{"k": key, "v": value}` written with a single `os.write` on an `O_APPEND`
    descriptor, so a killed process leaves at most a truncated last line (ignored on reading) and never a
    corrupt earlier one.

    Args:
        path: the JSONL file (created with its parent directories).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, Any] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self._data[rec["k"]] = rec["v"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by a kill
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def put_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """Store and append `(key, value)` pairs, one atomic line each."""
        for key, value in items:
            self._data[key] = value
            os.write(self._fd, (json.dumps({"k": key, "v": value}) + "\n").encode("utf-8"))

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:
            pass


def request_key(model_id: str, kind: str, payload: Any) -> str:
    """sha256 of the model identity, the request kind and its (JSON-serialisable) payload."""
    return hashlib.sha256(json.dumps([model_id, kind, payload]).encode("utf-8")).hexdigest()


def model_fingerprint(model: torch.nn.Module, extra: Any = None) -> str:
    """A short identity for a model: class, config, dtype and a cheap digest of every parameter.

    Two models with the same architecture but different weights get different fingerprints (the digest sums and
    samples every tensor), so a request cache is never reused across models.
    """
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else getattr(cfg, "__dict__", {})
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
            h.update(f"{name}{tuple(p.shape)}{p.dtype}{float(flat.float().sum()):.6e}".encode())
            h.update(sample.numpy().tobytes())
    h.update(json.dumps(extra, default=str).encode())
    return h.hexdigest()[:24]



class CachingEngine(TokenRequests):
    """A request engine whose finished requests are stored in `cache` and answered from it.

    Keys hash the model identity with the request, so a cache is never reused across models. Every attribute
    other than the request methods is the wrapped engine's (`max_length`, `device`, `stats`, `encode_pairs` ...);
    `stats["cached"]` counts the requests answered from the cache.

    Args:
        engine: a `RequestEngine` (or anything with its `loglikelihood_tokens` / `generate_until(..., on_done=)`).
        cache: the `RequestCache`.
        model_id: identity used in the keys; default `model_fingerprint(engine.model, engine.max_length)`.
    """

    def __init__(self, engine: Any, cache: RequestCache, model_id: str | None = None) -> None:
        self.engine, self.cache = engine, cache
        self.model_id = model_id or model_fingerprint(engine.model, engine.max_length)

    def __getattr__(self, name: str) -> Any:
        # only reached for attributes not set in __init__: the wrapped engine's
        return getattr(self.__dict__["engine"], name)

    def sharded(self, rank: int, world_size: int) -> CachingEngine:
        """The same cache over the engine's share of the batches (see `RequestEngine.sharded`)."""
        return CachingEngine(self.engine.sharded(rank, world_size), self.cache, self.model_id)

    def loglikelihood_tokens(
        self, pairs: Sequence[tuple[list[int], list[int]]], desc: str = "loglikelihood"
    ) -> list[tuple[float, bool] | None]:
        """The engine's `loglikelihood_tokens`, answered from the cache where it can."""
        keys = [request_key(self.model_id, "ll", [ctx, cont]) for ctx, cont in pairs]
        self.engine.check_pairs([p for p, k in zip(pairs, keys) if k in self.cache])  # counts truncation as computed
        return self._answer(self.engine.loglikelihood_tokens, pairs, keys, desc, lambda v: (float(v[0]), bool(v[1])))

    def generate_until(self, requests: Sequence[tuple[str, dict]], desc: str = "generate_until") -> list[str]:
        """The engine's `generate_until`, answered from the cache where it can."""
        keys = [request_key(self.model_id, "gen", [ctx, kw]) for ctx, kw in requests]
        return self._answer(self.engine.generate_until, requests, keys, desc, str)

    def _answer(self, compute: Callable, requests: Sequence, keys: list[str], desc: str, load: Callable) -> list:
        """Cached values (read back through `load`) where the cache has the key, the engine's `compute` for the rest."""
        out: list[Any] = [None] * len(requests)
        todo = []
        for i, key in enumerate(keys):
            if key in self.cache:
                out[i] = load(self.cache.get(key))
            else:
                todo.append(i)
        self.engine.stats["cached"] += len(requests) - len(todo)

        def store(done: list[int], values: list) -> None:  # after each batch; `done` indexes `todo`
            self.cache.put_many([(keys[todo[j]], v) for j, v in zip(done, values)])

        if todo:
            for i, value in zip(todo, compute([requests[i] for i in todo], desc=desc, on_done=store)):
                out[i] = value
        return out
