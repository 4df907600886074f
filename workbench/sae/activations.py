"""Activations for SAE training, harvested from the model in streamed blocks (never the whole corpus at once).

A token stream is cut into rows of `context` tokens. Rows are visited in a seeded order (a fresh permutation
per epoch); `rows_per_block` rows make one block, whose activations are harvested with
`run_with_cache(..., stop_at_layer=...)` (the model stops right after the site) and shuffled with a
generator seeded by the block index. A training step's batch is therefore a function of the step alone:
resuming at step s rebuilds only the current block, and gives exactly the batches an uninterrupted run sees.
"""

from __future__ import annotations

from typing import Any, Sequence

import torch

from ..inputs import is_text


def token_stream(model: Any, texts: str | Sequence[str] | torch.Tensor) -> torch.Tensor:
    """Texts (each followed by the eos token, GPT-NeoX packing) or ids as one 1-D stream.

    Args:
        model: a workbench model with a tokenizer (for texts).
        texts: a string, a list of strings, or token ids (`[n]` or `[rows, pos]`, flattened).

    Returns:
        token ids  # [n_tokens], int64
    """
    if torch.is_tensor(texts):
        return texts.reshape(-1).long()
    if isinstance(texts, str):
        texts = [texts]
    if not is_text(texts):
        raise TypeError(f"texts must be a string, a list of strings or a tensor of ids, got {type(texts).__name__}")
    eos = model.tokenizer.eos_token_id if model.tokenizer.eos_token_id is not None else 0
    ids: list[int] = []
    for text in texts:
        ids += model.tokenizer.encode(text, add_special_tokens=False) + [eos]
    return torch.tensor(ids, dtype=torch.long)


def stop_layer(model: Any, hook_name: str) -> int | None:
    """The `stop_at_layer` that runs the model just past `hook_name` (None: the whole model)."""
    point = model.hook_dict[hook_name]
    layer = point.layer()
    if layer is not None:
        return layer + 1 if layer + 1 < model.config.num_hidden_layers else None
    return 0 if hook_name == "hook_embed" else None


@torch.no_grad()
def harvest(model: Any, hook_name: str, rows: torch.Tensor, batch_rows: int = 32) -> torch.Tensor:
    """Activations of `hook_name` on token rows, flattened over rows and positions.

    Args:
        rows: token ids  # [n_rows, context]
        batch_rows: rows per forward.

    Returns:
        activations, fp32  # [n_rows * context, d] (hook_z: [.., head * d_head])
    """
    stop = stop_layer(model, hook_name)
    kwargs = {"stop_at_layer": stop} if stop is not None else {}
    out = []
    for chunk in rows.split(batch_rows):
        _, cache = model.run_with_cache(chunk.to(model.device), names_filter=hook_name, **kwargs)
        value = cache[hook_name]
        out.append(value.reshape(value.shape[0] * value.shape[1], -1).float().cpu())
    return torch.cat(out)


class ActivationBlocks:
    """Deterministic shuffled batches of a site's activations over a token stream.

    Args:
        model: the model.
        hook_name: the site.
        stream: token ids  # [n_tokens]
        context: tokens per row.
        batch_size: tokens per training batch.
        rows_per_block: rows harvested at once (the shuffle window is rows_per_block * context tokens).
        seed: seeds the row order and the in-block shuffles.

    Raises:
        ValueError: a stream too short for one block, or a block not a whole number of batches.
    """

    def __init__(self, model: Any, hook_name: str, stream: torch.Tensor, context: int, batch_size: int,
                 rows_per_block: int, seed: int) -> None:
        n_rows = stream.numel() // context
        if n_rows < rows_per_block:
            raise ValueError(f"the token stream has {stream.numel()} tokens: fewer than one block of "
                             f"rows_per_block={rows_per_block} x context={context}")
        if (rows_per_block * context) % batch_size:
            raise ValueError(f"batch_size={batch_size} must divide a block's rows_per_block x context = "
                             f"{rows_per_block * context} tokens")
        self.model, self.hook_name, self.seed = model, hook_name, seed
        self.rows = stream[: n_rows * context].reshape(n_rows, context)
        self.rows_per_block, self.batch_size = rows_per_block, batch_size
        self.steps_per_block = rows_per_block * context // batch_size
        self._block: tuple[int, torch.Tensor] | None = None
        self._perm: tuple[int, torch.Tensor] | None = None

    def _row_order(self, epoch: int) -> torch.Tensor:
        if self._perm is None or self._perm[0] != epoch:
            gen = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._perm = (epoch, torch.randperm(self.rows.shape[0], generator=gen))
        return self._perm[1]

    def block(self, index: int) -> torch.Tensor:
        """The shuffled activations of block `index`  # [rows_per_block * context, d]"""
        if self._block is None or self._block[0] != index:
            n = self.rows.shape[0]
            ids = [int(self._row_order(i // n)[i % n]) for i in range(index * self.rows_per_block,
                                                                      (index + 1) * self.rows_per_block)]
            acts = harvest(self.model, self.hook_name, self.rows[ids])
            gen = torch.Generator().manual_seed(self.seed * 7_919 + index)
            self._block = (index, acts[torch.randperm(acts.shape[0], generator=gen)])
        return self._block[1]

    def batch(self, step: int) -> torch.Tensor:
        """The training batch of `step`  # [batch_size, d]"""
        block, offset = divmod(step, self.steps_per_block)
        return self.block(block)[offset * self.batch_size: (offset + 1) * self.batch_size]
