"""Per-token loss: how surprised the model is by each token of a text."""

from __future__ import annotations

from typing import Any

import pandas as pd
import torch

from ._common import as_tokens, token_strings


@torch.no_grad()
def per_token_loss(model: Any, inputs: Any, prepend_bos: bool = False) -> tuple[torch.Tensor, pd.DataFrame]:
    """Next-token cross-entropy at every position.

    Args:
        model: a causal LM.
        inputs: a text, a list of texts (padded; padding gets NaN) or ids `[b, p]`.
        prepend_bos: tokenise strings with the bos token first, so the first real token is scored too.

    Returns:
        loss `[b, p - 1]` in nats (entry i is the loss of predicting token i + 1), and a frame with one row
        per scored token: `batch, pos, context, token, token_id, loss, prob`.
    """
    if prepend_bos and (isinstance(inputs, str) or isinstance(inputs, (list, tuple))):
        ids, mask = model.to_tokens_and_mask(inputs, prepend_bos=True)
        mask = mask if bool((mask == 0).any()) else None
    else:
        ids, mask = as_tokens(model, inputs)
    if ids.shape[1] < 2:
        raise ValueError("per_token_loss needs at least two tokens (the first one is only context)")
    loss = token_losses(model(input_ids=ids, attention_mask=mask, use_cache=False).logits, ids)  # [b, p - 1]
    if mask is not None:
        loss = loss.masked_fill(mask[:, 1:] == 0, float("nan"))
    records = []
    for b in range(ids.shape[0]):
        strs = token_strings(model, ids[b])
        for i in range(ids.shape[1] - 1):
            if mask is not None and not bool(mask[b, i + 1]):
                continue
            records.append({"batch": b, "pos": i + 1, "context": strs[i], "token": strs[i + 1],
                            "token_id": int(ids[b, i + 1]), "loss": float(loss[b, i]),
                            "prob": float((-loss[b, i]).exp())})
    return loss, pd.DataFrame.from_records(records)


def token_losses(logits: torch.Tensor, ids: torch.Tensor) -> torch.Tensor:
    """Next-token cross-entropy `[b, p - 1]` (nats) from logits `[b, p, v]` of a run on ids `[b, p]`."""
    log_probs = logits[:, :-1].float().log_softmax(-1)
    return -log_probs.gather(-1, ids[:, 1:, None].to(log_probs.device)).squeeze(-1)
