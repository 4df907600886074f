"""`KVCache`: the keys and values of past positions, one pair of buffers per layer.

Buffers are `[batch, head, capacity, head_size]` and grow by doubling, so decoding appends in place;
`reserve()` sizes them once when the final length is known (generation does).
"""

from __future__ import annotations

import torch


class KVCache:
    """Past keys/values of every layer of one model, for one batch.

    Args:
        num_layers, num_heads, head_size: shape of the model that fills it; a model of another shape refuses it.
    """

    def __init__(self, num_layers: int, num_heads: int, head_size: int) -> None:
        self.num_layers, self.num_heads, self.head_size = num_layers, num_heads, head_size
        self.keys: list[torch.Tensor | None] = [None] * num_layers  # each [batch, head, capacity, head_size]
        self.values: list[torch.Tensor | None] = [None] * num_layers
        self.lengths = [0] * num_layers
        self._reserved = 0

    @classmethod
    def for_config(cls, config) -> "KVCache":
        return cls(config.num_hidden_layers, config.num_attention_heads, config.head_size)

    @property
    def length(self) -> int:
        """Number of cached positions (the same in every layer between forwards)."""
        return self.lengths[-1]

    def get_seq_length(self) -> int:
        return self.length

    @property
    def batch_size(self) -> int | None:
        return None if self.keys[0] is None else self.keys[0].shape[0]

    def reserve(self, total_length: int) -> "KVCache":
        """Make room for `total_length` positions up front (avoids regrowing while decoding)."""
        self._reserved = max(self._reserved, total_length)
        return self

    def check_compatible(self, num_layers: int, num_heads: int, head_size: int, batch_size: int) -> None:
        """Raise ValueError if this cache was made by a model of another shape, or for another batch size."""
        mine = (self.num_layers, self.num_heads, self.head_size)
        if mine != (num_layers, num_heads, head_size):
            raise ValueError(
                "past_key_values come from another model: cache has (layers, heads, head_size) = "
                f"{mine}, this model has {(num_layers, num_heads, head_size)}"
            )
        if self.batch_size is not None and self.batch_size != batch_size:
            raise ValueError(f"past_key_values hold a batch of {self.batch_size} rows, the input has {batch_size}")

    def update(self, layer: int, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Append `key`/`value` `[batch, head, new, head_size]` to `layer`; return all keys/values so far."""
        start, new = self.lengths[layer], key.shape[2]
        end = start + new
        buffer = self.keys[layer]
        if buffer is None and self._reserved <= end:
            # First write with no reservation: keep the tensors themselves, no copy.
            self.keys[layer], self.values[layer] = key, value
        else:
            if buffer is None or buffer.shape[2] < end:
                capacity = max(self._reserved, end, 2 * (buffer.shape[2] if buffer is not None else 0))
                self.keys[layer] = self._grow(buffer, start, capacity, key)
                self.values[layer] = self._grow(self.values[layer], start, capacity, value)
            self.keys[layer][:, :, start:end] = key
            self.values[layer][:, :, start:end] = value
        self.lengths[layer] = end
        return self.keys[layer][:, :, :end], self.values[layer][:, :, :end]

    @staticmethod
    def _grow(old: torch.Tensor | None, used: int, capacity: int, like: torch.Tensor) -> torch.Tensor:
        batch, heads, _, size = like.shape
        fresh = like.new_empty(batch, heads, capacity, size)
        if old is not None and used:
            fresh[:, :, :used] = old[:, :, :used]
        return fresh

    def index_select(self, batch_indices: torch.Tensor) -> "KVCache":
        """A new cache holding rows `batch_indices` (e.g. one context's cache repeated for its continuations)."""
        out = KVCache(self.num_layers, self.num_heads, self.head_size)
        for i in range(self.num_layers):
            if self.keys[i] is not None:
                idx = batch_indices.to(self.keys[i].device)
                out.keys[i] = self.keys[i][:, :, : self.lengths[i]].index_select(0, idx)
                out.values[i] = self.values[i][:, :, : self.lengths[i]].index_select(0, idx)
        out.lengths = list(self.lengths)
        return out

    def to_legacy(self) -> tuple[tuple[torch.Tensor, torch.Tensor], ...]:
        """transformers' legacy format: per layer `(key, value)`, each `[batch, head, length, head_size]`."""
        return tuple((k[:, :, :n], v[:, :, :n]) for k, v, n in zip(self.keys, self.values, self.lengths))

    @classmethod
    def from_legacy(cls, past: tuple, num_heads: int, head_size: int) -> "KVCache":
        """Wrap transformers' legacy tuple-of-(key, value) cache."""
        cache = cls(len(past), num_heads, head_size)
        for i, pair in enumerate(past):
            if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and all(torch.is_tensor(t) for t in pair)):
                raise TypeError("legacy past_key_values must be a tuple of (key, value) tensor pairs per layer")
            key, value = pair
            if key.dim() != 4 or key.shape[1] != num_heads or key.shape[3] != head_size:
                raise ValueError(
                    f"past_key_values layer {i} has key shape {tuple(key.shape)}, expected "
                    f"[batch, {num_heads}, length, {head_size}]"
                )
            cache.keys[i], cache.values[i], cache.lengths[i] = key, value, key.shape[2]
        return cache

    def __len__(self) -> int:
        return self.num_layers

    def __repr__(self) -> str:
        return f"KVCache(layers={self.num_layers}, batch={self.batch_size}, length={self.length})"
