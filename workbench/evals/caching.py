"""Resumable evaluation: an on-disk `RequestCache` and `CachingEngine`, which answers requests from it.

`CachingEngine(engine, cache)` wraps a request engine as lm-eval's `CachingLM` wraps an `LM`: requests found in
the cache are answered from it, the others go to the engine, and every batch the engine finishes is appended to
the cache at once, so an interrupted run resumes without recomputing what it finished.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from workbench.evals.requests import TokenRequests
from workbench.fingerprint import model_fingerprint  # noqa: F401  (re-exported: the request cache's model key)


# request kind -> whether a value has its shape: (finite float log-likelihood, is_greedy) or the generated text
VALUE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "ll": lambda v: (isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], float) and math.isfinite(v[0])
                     and isinstance(v[1], bool)),
    "gen": lambda v: isinstance(v, str),
}
_FIELDS = {"k", "m", "t", "v", "c"}


def _checksum(key: str, model_id: str | None, kind: str | None, value: Any) -> str:
    """sha256 (64 bits) of the canonical JSON of a record's fields; raises ValueError on NaN / infinity."""
    canonical = json.dumps([key, model_id, kind, value], sort_keys=True, separators=(",", ":"), allow_nan=False)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:16]


def _valid(rec: Any) -> bool:
    """Whether a parsed line is a current record whose checksum and value (shape, for its kind) hold."""
    if not (isinstance(rec, dict) and set(rec) == _FIELDS and isinstance(rec["k"], str)
            and isinstance(rec["m"], (str, type(None))) and (rec["t"] is None or rec["t"] in VALUE_CHECKS)):
        return False
    return (rec["t"] is None or VALUE_CHECKS[rec["t"]](rec["v"])) and rec["c"] == _checksum(
        rec["k"], rec["m"], rec["t"], rec["v"])


def _finite(text: str) -> float:
    """A JSON number or constant as a float; ValueError for NaN, Infinity and overflowing ones (1e999)."""
    x = float(text)
    if not math.isfinite(x):
        raise ValueError(f"non-finite number {text}")
    return x


class RequestCache:
    """Append-only JSONL cache of finished requests, each checked on reading.

    A record is one line `{"k": key, "m": model fingerprint, "t": kind, "v": value, "c": checksum}`, the checksum
    being the first 16 hex digits of the sha256 of the canonical JSON of `[k, m, t, v]`. On opening, a line that
    is not valid JSON (random bytes, a line cut short by a kill), fails its checksum (an edited or swapped value),
    holds a value of the wrong shape for its kind (`VALUE_CHECKS`) or a non-finite number is ignored, so its
    request is recomputed; one warning names the file and the count. A cut last line is never glued to the next
    record: the next append starts on a fresh line. Values that fail the same checks (a NaN log-likelihood) are
    never written. Each batch is appended with one `os.write` on an `O_APPEND` descriptor and fsynced.

    The cache is tied to the model: `CachingEngine` keys hash its fingerprint, so another model's (or config's)
    records are never used, and `check_model` warns when the file holds any.

    Files of the earlier format (`{"k", "v"}` lines, no checksum) are migrated by recomputation: their records
    cannot be verified, so they are ignored (counted in the warning) and the recomputed requests are appended in
    the current format; delete the file to silence the warning.

    Args:
        path: the JSONL file (created with its parent directories).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, tuple[str | None, str | None, Any]] = {}  # key -> (model id, kind, value)
        self._cut = False  # the file ends inside a line: the next append starts a new one
        self._warned: set[str] = set()
        if self.path.exists():
            self._read()
        self._fd: int | None = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def _read(self) -> None:
        data = self.path.read_bytes()
        self._cut = bool(data) and not data.endswith(b"\n")
        lines = [line for line in data.split(b"\n") if line.strip()]
        bad = old = 0
        for line in lines:
            try:
                rec = json.loads(line, parse_float=_finite, parse_constant=_finite)
            except (ValueError, RecursionError):  # not JSON or not UTF-8, a non-finite number, absurd nesting
                rec = None
            if _valid(rec):
                self._data[rec["k"]] = (rec["m"], rec["t"], rec["v"])
            elif isinstance(rec, dict) and set(rec) == {"k", "v"}:
                old += 1
            else:
                bad += 1
        if bad or old:
            why = [f"{bad} unreadable, cut short, failing the checksum or of the wrong type"] if bad else []
            why += [f"{old} in the unchecked format of earlier versions"] if old else []
            warnings.warn(f"request cache {self.path}: {bad + old} of {len(lines)} records ignored "
                          f"({'; '.join(why)}); their requests are recomputed", stacklevel=3)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str, kind: str | None = None) -> Any:
        """The value stored under `key` (with `kind`: only one stored for that request kind), else None."""
        rec = self._data.get(key)
        return rec[2] if rec is not None and (kind is None or rec[1] == kind) else None

    def put_many(self, items: Sequence[tuple[str, Any]], kind: str | None = None, model_id: str | None = None) -> int:
        """Store `(key, value)` pairs and append them (one write and fsync for all).

        Args:
            items: the pairs; values must be JSON-serialisable.
            kind: the request kind ("ll", "gen"): values without its shape are not stored.
            model_id: the fingerprint of the model that computed them.

        Returns:
            How many were stored: a value with a non-finite number or the wrong shape is skipped (with a warning),
            so it is recomputed next time.
        """
        if kind is not None and kind not in VALUE_CHECKS:
            raise ValueError(f"kind must be None or one of {sorted(VALUE_CHECKS)}, got {kind!r}")
        lines = []
        for key, value in items:
            try:
                rec = {"k": key, "m": model_id, "t": kind, "v": value, "c": _checksum(key, model_id, kind, value)}
            except ValueError:  # NaN or infinity
                continue
            line = json.dumps(rec, separators=(",", ":"))
            if _valid(json.loads(line)):  # exactly what reading will accept
                self._data[key] = (model_id, kind, value)
                lines.append(line + "\n")
        if len(lines) < len(items):
            warnings.warn(f"request cache {self.path}: not caching non-finite or malformed {kind or 'request'} "
                          "values (they are recomputed on the next run)", stacklevel=2)
        if lines:
            self._append(("\n" if self._cut else "") + "".join(lines))
        return len(lines)

    def _append(self, text: str) -> None:
        if self._fd is None:
            raise ValueError(f"request cache {self.path} is closed")
        view = memoryview(text.encode("utf-8"))
        while view:
            view = view[os.write(self._fd, view) :]
        os.fsync(self._fd)
        self._cut = False

    def check_model(self, model_id: str) -> None:
        """Warn (once per fingerprint) when the file holds records of other models or configs: they are not used."""
        foreign = [m for m, _, _ in self._data.values() if m not in (None, model_id)]
        if foreign and model_id not in self._warned:
            self._warned.add(model_id)
            warnings.warn(f"request cache {self.path}: {len(foreign)} of {len(self._data)} records were computed by "
                          f"another model or config (fingerprint {', '.join(sorted(set(foreign)))}; this one is "
                          f"{model_id}): not used", stacklevel=3)

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


class CachingEngine(TokenRequests):
    """A request engine whose finished requests are stored in `cache` and answered from it.

    Keys hash the model identity with the request, so a cache is never reused across models. Every attribute
    other than the request methods is the wrapped engine's (`max_length`, `device`, `stats`, `encode_pairs` ...);
    `stats["cached"]` counts the requests answered from the cache.

    Args:
        engine: a `RequestEngine` (or anything with its `loglikelihood_tokens` / `generate_until(..., on_done=,
            known=)`).
        cache: the `RequestCache`.
        model_id: identity used in the keys; default `model_fingerprint(engine.model, engine.max_length)`.
    """

    def __init__(self, engine: Any, cache: RequestCache, model_id: str | None = None) -> None:
        self.engine, self.cache = engine, cache
        self.model_id = model_id or model_fingerprint(engine.model, engine.max_length)
        cache.check_model(self.model_id)

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
        return self._answer(self.engine.loglikelihood_tokens, pairs, keys, "ll", desc, lambda v: (float(v[0]), v[1]))

    def generate_until(self, requests: Sequence[tuple[str, dict]], desc: str = "generate_until") -> list[str]:
        """The engine's `generate_until`, answered from the cache where it can."""
        keys = [request_key(self.model_id, "gen", [ctx, kw]) for ctx, kw in requests]
        return self._answer(self.engine.generate_until, requests, keys, "gen", desc, str)

    def _answer(self, compute: Callable, requests: Sequence, keys: list[str], kind: str, desc: str,
                load: Callable) -> list:
        """Cached `kind` values (read back through `load`) where the cache has the key, the engine's `compute` for
        the rest, each of its batches stored as it finishes.

        The engine gets every request, the cached ones as `known`: it forms the batches of an uncached run and
        skips those it has nothing to compute in, so a resumed run's results are bitwise an uninterrupted one's.
        """
        out: list[Any] = [None] * len(requests)
        for i, key in enumerate(keys):
            value = self.cache.get(key, kind)
            out[i] = None if value is None else load(value)
        known = {i for i, value in enumerate(out) if value is not None}
        self.engine.stats["cached"] += len(known)

        def store(done: list[int], values: list) -> None:  # after each batch
            self.cache.put_many([(keys[i], v) for i, v in zip(done, values)], kind, self.model_id)

        if len(known) < len(requests):
            for i, value in enumerate(compute(requests, desc=desc, on_done=store, known=known)):
                if i not in known:
                    out[i] = value
        return out
