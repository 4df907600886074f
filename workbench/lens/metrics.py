"""How well each lens reads each layer: KL to the final distribution and next-token perplexity (the tuned-lens
paper's figure 1 measures)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch
from tqdm.auto import tqdm

from workbench.analysis.residual import residual_stack

from .lenses import Lens
from .training import kl_to_final
from .windows import token_windows


def layer_labels(num_layers: int) -> list[str]:
    """Row labels of the L + 1 lens layers: `embed`, then `L0` ... (the output of each block)."""
    return ["embed"] + [f"L{i}" for i in range(num_layers)]


@torch.no_grad()
def lens_metrics(
    model: Any,
    texts: Any,
    lenses: Mapping[str, Lens] | Sequence[Lens],
    seq_len: int = 128,
    batch_size: int = 8,
    progress: bool = False,
) -> pd.DataFrame:
    """Per lens and layer: mean KL(final || lens) and the lens's next-token cross-entropy and perplexity.

    Args:
        model: the workbench model (active `model.hooks(...)` apply).
        texts: held-out text: strings, a token stream `[n]` or rows `[rows, p]` (`token_windows`).
        lenses: `{"logit": LogitLens(model), "tuned": tuned}` or a list (named by each lens's `kind`).
        seq_len, batch_size: windows and how many run at once.
        progress: a tqdm bar over batches.

    Returns:
        one row per (lens, layer): `lens, layer, label, kl, ce, perplexity, tokens` (nats; `kl` is over every
        position, `ce` over positions with a next token; the last layer's KL is 0 for every lens).
    """
    named = dict(lenses) if isinstance(lenses, Mapping) else {lens.kind: lens for lens in lenses}
    if not named:
        raise ValueError("lenses is empty: pass e.g. {'logit': LogitLens(model), 'tuned': tuned_lens}")
    rows = token_windows(model, texts, seq_len)  # [n, p]
    n_layers = model.config.num_hidden_layers
    sums = {(name, i): [0.0, 0.0] for name in named for i in range(n_layers + 1)}  # kl * tokens, ce * targets
    tokens = targets = 0
    for a in tqdm(range(0, len(rows), batch_size), disable=not progress, desc="lens metrics"):
        ids = rows[a : a + batch_size].to(model.device)
        resid, _, _, _ = residual_stack(model, ids)  # [L + 1, b, p, d]
        final = Lens(model).log_probs(resid[-1], n_layers)  # [b, p, v]
        nxt = ids[:, 1:]
        for name, lens in named.items():
            for i in range(n_layers + 1):
                lp = lens.log_probs(resid[i], i)
                sums[(name, i)][0] += float(kl_to_final(final, lp)) * ids.numel()
                sums[(name, i)][1] += float(-lp[:, :-1].gather(-1, nxt[..., None]).sum())
        tokens += ids.numel()
        targets += nxt.numel()
    labels = layer_labels(n_layers)
    records = []
    for (name, i), (kl, ce) in sums.items():
        records.append({"lens": name, "layer": i, "label": labels[i], "kl": kl / tokens, "ce": ce / targets,
                        "perplexity": math.exp(ce / targets), "tokens": tokens})
    return pd.DataFrame.from_records(records)
