"""Named analyses for `sweep`: each turns one checkpoint into rows of metric values.

An `Analysis` is a cache key plus a function `model -> rows`; the key names the analysis and its arguments,
so results computed with other arguments are never mistaken for these.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Callable

import pandas as pd
import torch

from ..analysis.heads import head_detector_table, repeated_sequence_losses
from ..analysis.logit_lens import logit_lens
from ..analysis.loss import per_token_loss


@dataclass
class Analysis:
    """`fn(model)` -> dict (one row), list of dicts or DataFrame; `key` identifies it in the results cache."""

    key: str
    fn: Callable[[torch.nn.Module], Any]

    def rows(self, model: torch.nn.Module) -> list[dict[str, Any]]:
        """The function's result on `model` as JSON-able rows."""
        with torch.no_grad():
            out = self.fn(model)
        if isinstance(out, pd.DataFrame):
            out = out.to_dict("records")
        elif isinstance(out, dict):
            out = [out]
        if not isinstance(out, list) or not all(isinstance(r, dict) for r in out):
            raise TypeError(f"sweep function {self.key!r} must return a dict, a list of dicts or a DataFrame, "
                            f"got {type(out).__name__}")  # fmt: skip
        return json.loads(json.dumps(out, default=_plain))  # what the cache stores, exactly (floats round-trip)


def _plain(value: Any) -> Any:
    """numpy / torch scalars (one element) as Python numbers for JSON."""
    size = value.numel() if hasattr(value, "numel") else getattr(value, "size", None)  # torch, numpy
    if hasattr(value, "item") and size in (1, None):
        return value.item()
    raise TypeError(f"a sweep result value must be a number, string or None (one value per column), got "
                    f"{type(value).__name__}{f' with {size} elements' if size is not None else ''}; reduce it "
                    "(e.g. .mean().item()) or return one row per element")


def _key(name: str, **kwargs: Any) -> str:
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in sorted(kwargs.items()))})"


def heads(batch: int = 8, seq_len: int = 50, seed: int = 0) -> Analysis:
    """Previous-token, duplicate-token and induction score of every head on repeated random tokens.

    Rows: `detector, layer, head, score` (see `analysis.heads.head_detector_table`).
    """
    return Analysis(_key("heads", batch=batch, seq_len=seq_len, seed=seed),
                    lambda m: head_detector_table(m, batch=batch, seq_len=seq_len, seed=seed))  # fmt: skip


def icl(batch: int = 8, seq_len: int = 50, seed: int = 0) -> Analysis:
    """In-context learning on repeated random tokens: loss on each copy and `icl_score` = second - first
    (nats/token; more negative = more copying, as Olsson et al.'s in-context learning score)."""

    def fn(model: torch.nn.Module) -> dict[str, float]:
        first, second = repeated_sequence_losses(model, batch=batch, seq_len=seq_len, seed=seed)
        return {"first_copy_loss": first, "second_copy_loss": second, "icl_score": second - first}

    return Analysis(_key("icl", batch=batch, seq_len=seq_len, seed=seed), fn)


def token_loss(text: str, prepend_bos: bool = True) -> Analysis:
    """Per-token loss on `text`. Rows: `pos, token, loss` (nats), one per scored token."""

    def fn(model: torch.nn.Module) -> list[dict[str, Any]]:
        _, frame = per_token_loss(model, text, prepend_bos=prepend_bos)
        return frame[["pos", "token", "loss"]].to_dict("records")

    return Analysis(_key("token_loss", text=text, prepend_bos=prepend_bos), fn)


def logit_lens_at(text: str, position: int | None = None, target: int | str | None = None) -> Analysis:
    """Logit lens at one position of `text`: per layer, the top token and the target's probability and rank.

    Args:
        position: the position read (negative counts from the end); default the last one that has a target:
            the last token with `target`, the last-but-one without (its target is the actual next token).
        target: an id or single-token string; default the actual next token.
    """
    position = (-1 if target is not None else -2) if position is None else position

    def fn(model: torch.nn.Module) -> list[dict[str, Any]]:
        _, frame = logit_lens(model, text, target=target, top_k=1)
        n_pos = int(frame["pos"].max()) + 1
        pos = n_pos + position if position < 0 else position
        if not 0 <= pos < n_pos:
            raise ValueError(f"position {position} is outside the text's {n_pos} tokens")
        frame = frame[(frame["pos"] == pos) & (frame["rank"] == 0)]
        columns = ["layer", "label", "top_token", "top_prob"] + [c for c in ("target_prob", "target_rank") if c in frame]
        return frame[columns].to_dict("records")

    return Analysis(_key("logit_lens", text=text, position=position, target=target), fn)


def eval_task(task: str, num_fewshot: int = 0, limit: int | None = None, **kwargs: Any) -> Analysis:
    """A benchmark task's metrics (`workbench.evals.evaluate`): one row, one column per metric."""

    def fn(model: torch.nn.Module) -> dict[str, float]:
        from ..evals import evaluate

        result = evaluate(model, task, num_fewshot=num_fewshot, limit=limit, progress=False, **kwargs)
        return {"task": task, **result[task]}

    return Analysis(_key("eval", task=task, num_fewshot=num_fewshot, limit=limit, **kwargs), fn)


ANALYSES: dict[str, Callable[..., Analysis]] = {
    "heads": heads, "icl": icl, "token_loss": token_loss, "logit_lens": logit_lens_at, "eval": eval_task,
}  # fmt: skip
