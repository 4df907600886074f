"""Cache entries computed on first read: `Deferred` values and the `DeferredDict` that holds them.

A full `run_with_cache` would otherwise spend most of its extra time on values that are not on the forward's path:
the attention scores and patterns under sdpa (a second attention computation beside the fused kernel, and two
`[batch, head, query, key]` tensors per layer written to memory: 300 MB on the 160m shape at 4 x 256 tokens) and
LayerNorm's normalised input beside its fused kernel. When only `run_with_cache` observes such a site, the model
hands the cache a `Deferred` instead: the tensors the forward used (the rotated queries and keys; the LayerNorm's
input and statistics), which a full cache holds anyway (`hook_rot_q` / `hook_rot_k`, the residual stream), and
the function that turns them into the value. Reading the entry computes it, with the same function, inputs and
thread count as the forward would have, so it is bit-identical to what an eager hook receives; it is then kept.
Entries nobody reads cost nothing.

The inputs must not change in between: a `Deferred` remembers their version counters and refuses to compute
from tensors edited in place since (e.g. `cache["rot_q", 0][:] = 0`), naming the entry and what to do instead.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any, Callable, Iterator

import torch


class Deferred:
    """A tensor computed on first `value()`, from inputs captured when the forward ran.

    Args:
        compute: returns the tensor; called at most once.
        meta: a tensor on the `meta` device with the value's shape and dtype (shape checks need no compute).
        inputs: tensors `compute` reads; their in-place edits before the read are refused.
        name: the hook name, for errors.
        device: where `compute` runs (on the CPU, at the thread count of the forward that made this).
        inputs_are: what the inputs are, for the error when they were edited.
    """

    def __init__(self, compute: Callable[[], torch.Tensor], meta: torch.Tensor, inputs: tuple[torch.Tensor, ...],
                 name: str, device: torch.device, inputs_are: str = "its inputs") -> None:
        self._compute, self.meta, self.name, self.device = compute, meta, name, device
        self._inputs, self._inputs_are = inputs, inputs_are
        self._versions = tuple(_version(t) for t in inputs)
        self._threads = torch.get_num_threads()  # the forward's: the same kernels, the same rounding
        self._value: torch.Tensor | None = None

    @property
    def shape(self) -> torch.Size:
        return self.meta.shape

    @property
    def dtype(self) -> torch.dtype:
        return self.meta.dtype

    def value(self) -> torch.Tensor:
        """The tensor (computed now on the first call, then kept).

        Raises:
            RuntimeError: an input was edited in place after the forward.
        """
        if self._value is None:
            if tuple(_version(t) for t in self._inputs) != self._versions:
                raise RuntimeError(
                    f"{self.name} was deferred (computed on first read) and the activations it is computed from "
                    f"({self._inputs_are}) were edited in place since the forward; read it before editing, or edit "
                    f"a clone (`cache[...].clone()`)")
            # autocast off: the forward that deferred this ran without it (HookPoint.defers), whatever the reader has
            with torch.no_grad(), torch.autocast(self.device.type, enabled=False), \
                    _threads(self._threads if self.device.type == "cpu" else None):
                self._value = self._compute()
            self._compute, self._inputs = None, ()  # the inputs can go once the value exists
        return self._value

    def map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> "Deferred":
        """A `Deferred` of `fn(value)` (an index, a dtype cast), its shape found by running `fn` on `meta`."""
        parent = self
        return Deferred(lambda: fn(parent.value()), fn(self.meta), (), self.name, self.device)

    def __repr__(self) -> str:
        return f"Deferred({self.name!r}, shape={tuple(self.shape)}, dtype={self.dtype}, computed={self._value is not None})"


def _version(t: torch.Tensor) -> int:
    try:
        return t._version
    except RuntimeError:  # an inference-mode tensor has no version counter (HookPoint.defers never defers there)
        return 0


@contextlib.contextmanager
def _threads(n: int | None) -> Iterator[None]:
    before = torch.get_num_threads()
    if n is None or n == before:
        yield
        return
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


class DeferredDict(dict):
    """A dict of hook name -> tensor whose `Deferred` entries are computed (and replaced by their tensor) the first
    time they are read, by any route: `d[k]`, `get`, `values`, `items`, `pop`, iteration into `dict(d)`, pickling.
    `raw_items()` gives the entries as stored, without computing."""

    def __getitem__(self, key: Any) -> torch.Tensor:
        value = dict.__getitem__(self, key)
        if isinstance(value, Deferred):
            value = value.value()
            dict.__setitem__(self, key, value)
        return value

    def get(self, key: Any, default: Any = None) -> Any:
        return self[key] if key in self else default

    def values(self):  # a list, not a view: each entry is computed as the list is built
        return [self[k] for k in self]

    def items(self):
        return [(k, self[k]) for k in self]

    def pop(self, key: Any, *default: Any) -> Any:
        if key not in self:
            return dict.pop(self, key, *default)
        value = self[key]  # computed first: if that fails, the entry stays
        dict.pop(self, key)
        return value

    def popitem(self) -> tuple[Any, Any]:
        if not self:
            raise KeyError("popitem(): dictionary is empty")
        key = next(reversed(dict.keys(self)))
        return key, self.pop(key)

    def __copy__(self) -> "DeferredDict":
        return DeferredDict(self.raw_items())  # entries not read yet stay deferred (and shared)

    def __deepcopy__(self, memo: dict) -> "DeferredDict":
        import copy

        return DeferredDict({k: copy.deepcopy(v, memo) for k, v in self.items()})

    def setdefault(self, key: Any, default: Any = None) -> Any:
        if key not in self:
            dict.__setitem__(self, key, default)
        return self[key]

    def copy(self) -> dict:
        return dict(self.items())

    def __iter__(self) -> Iterator[Any]:
        # Overriding __iter__ makes `dict(d)` and `{**d}` go through keys() and __getitem__ (CPython copies a
        # dict subclass's raw slots only when its iteration is dict's own), so deferred values never leak out.
        return iter(list(dict.keys(self)))

    def keys(self):
        return dict.keys(self)

    def __reduce__(self):
        # Pickled (torch.save) with every entry computed, as an OrderedDict: a global that torch.load's
        # weights_only unpickler accepts, unlike this class (or `dict` named as a constructor).
        return collections.OrderedDict, (self.items(),)

    def raw_items(self) -> list[tuple[Any, Any]]:
        """The entries as stored: tensors, and `Deferred` values not yet read."""
        return list(dict.items(self))

    def pending(self) -> list[str]:
        """Names of the entries not computed yet."""
        return [k for k, v in dict.items(self) if isinstance(v, Deferred) and v._value is None]

    def __repr__(self) -> str:
        return repr(dict(self.raw_items()))
