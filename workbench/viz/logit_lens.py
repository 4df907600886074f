"""`LogitLensView`: what each layer's residual stream would predict, as a layers x positions heatmap."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t

from workbench.analysis import lens_log_probs, residual_stack
from workbench.inputs import as_prompts, token_strings
from workbench.viz.base import VizWidget, is_model, per_prompt_tokens

BUILTIN_TARGETS = [["top", "top token of each cell"], ["final", "model's final prediction"], ["next", "actual next token"]]


class LogitLensView(VizWidget):
    """Logit lens: rows are the residual stream before layer 0 and after each layer, columns are positions.

    Each cell shows the top token of the lens's prediction (`unembed(final_ln(resid))`) and is coloured by the
    probability or rank of a target: the cell's own top token, the model's final prediction at that position,
    the actual next token, or any token typed into the target box (recomputed in the kernel).

    Args:
        tokens: display strings of one prompt, or one list per prompt.
        log_probs: per prompt, the lens's log-probabilities `[rows, pos, vocab]` (array or tensor), or a
            function of no arguments returning them (computed when needed, so vocabulary-sized arrays are
            not held); the last row is the model's own prediction.
        ids: per prompt, its token ids (for the "next token" target).
        tokenizer: decodes top tokens and encodes typed targets (None: ids show as `#123`).
        row_labels: one label per row (default `embed`, `L0`, ...).
        k: how many top tokens the hover shows.
        targets: extra target tokens (strings, first token used) to precompute for the standalone page.

    `LogitLensView(model, text_or_tokens, ...)` is shorthand for `LogitLensView.from_model(...)`.
    """

    _entry = "logit_lens.js"
    _state_keys = ("prompts", "row_labels", "prompt", "target", "target_options", "metric", "live", "title")

    prompts = t.List(t.Dict()).tag(sync=True)
    row_labels = t.List(t.Unicode()).tag(sync=True)
    prompt = t.Int(0).tag(sync=True)
    target = t.Unicode("final").tag(sync=True)
    target_options = t.List(t.List()).tag(sync=True)
    metric = t.Unicode("prob").tag(sync=True)
    live = t.Bool(True).tag(sync=True)
    title = t.Unicode("").tag(sync=True)

    def __init__(
        self,
        tokens: Any,
        log_probs: Any = None,
        ids: Sequence[Sequence[int]] | None = None,
        tokenizer: Any = None,
        row_labels: Sequence[str] | None = None,
        k: int = 5,
        targets: Sequence[str] = (),
        metric: str = "prob",
        title: str = "",
    ) -> None:
        if is_model(tokens):
            tokens, log_probs, ids, tokenizer, row_labels = _model_data(tokens, log_probs)
        if metric not in ("prob", "rank"):
            raise ValueError(f"metric must be 'prob' or 'rank', got {metric!r}")
        if not isinstance(k, int) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        token_lists = per_prompt_tokens(tokens)
        self._log_probs = [log_probs] if len(token_lists) == 1 and not isinstance(log_probs, (list, tuple)) else list(log_probs)
        self._ids = [list(map(int, x)) for x in ids] if ids is not None else [[-1] * len(x) for x in token_lists]
        if not len(self._log_probs) == len(self._ids) == len(token_lists):
            raise ValueError(f"{len(token_lists)} prompts of tokens, {len(self._log_probs)} of log_probs, {len(self._ids)} of ids")
        self._tok = tokenizer
        first = self._lp(0)
        self._k = min(k, first.shape[-1])
        self._vocab = int(first.shape[-1])
        self._topk = []  # per prompt (ids [rows, pos, k], probs [rows, pos, k])
        for i in range(len(token_lists)):
            vals, top = self._lp(i).topk(self._k, dim=-1)
            self._topk.append((top.numpy(), vals.exp().numpy()))
        labels = list(row_labels) if row_labels is not None else ["embed"] + [f"L{r}" for r in range(first.shape[0] - 1)]
        if len(labels) != first.shape[0]:
            raise ValueError(f"{len(labels)} row labels for {first.shape[0]} rows")
        self._extra = [f"text:{x}" for x in targets]
        for x in self._extra:
            self._target_ids(0, x)  # validate now, not in the browser
        options = BUILTIN_TARGETS + [[x, f'"{x[5:]}"'] for x in self._extra]
        super().__init__(
            prompts=[{"tokens": tk} for tk in token_lists], row_labels=[l if l == "embed" else f"after {l}" for l in labels],
            target="final", target_options=options, metric=metric, title=title,
        )  # fmt: skip

    @classmethod
    def from_model(cls, model: Any, text_or_tokens: Any, **kwargs: Any) -> "LogitLensView":
        """The logit lens of `model` on each prompt (`analysis.residual_stack`, `analysis.lens_log_probs`:
        the residual stream as `run_with_cache` records it, under active hooks).

        Args:
            model: a workbench causal LM with `.tokenizer`.
            text_or_tokens: a string, several strings, or token ids.
            **kwargs: `k`, `targets`, `metric`, `title`.
        """
        return cls(*_model_data(model, text_or_tokens), **kwargs)

    @classmethod
    def from_cache(cls, cache: Any, ids: Any, **kwargs: Any) -> "LogitLensView":
        """The logit lens of a cached run (with every `resid_pre` and the last `resid_post` cached).

        Args:
            cache: an ActivationCache (its model supplies the final LayerNorm, unembedding and tokenizer).
            ids: the run's token ids `[batch, pos]` or `[pos]` (unpadded).
            **kwargs: `k`, `targets`, `metric`, `title`.
        """
        model = cache.model
        ids = torch.as_tensor(ids).reshape(-1, torch.as_tensor(ids).shape[-1])
        resid, _ = cache.accumulated_resid(return_labels=True)  # [rows, b, p, d]
        tok = getattr(model, "tokenizer", None)
        thunks = [functools.partial(lens_log_probs, model, resid[:, b]) for b in range(ids.shape[0])]
        tokens = [token_strings(tok, row, readable=True) for row in ids]
        return cls(tokens, thunks, ids.tolist(), tok, _row_labels(resid.shape[0]), **kwargs)

    def _lp(self, prompt: int) -> torch.Tensor:
        """Log-probabilities `[rows, pos, vocab]` of one prompt (float32, on the CPU)."""
        lp = self._log_probs[prompt]
        lp = lp() if callable(lp) else lp
        return torch.as_tensor(lp).float().cpu()

    def _target_ids(self, prompt: int, target: str) -> np.ndarray:
        """Target token id per position ([pos], -1 where there is none)."""
        ids = self._ids[prompt]
        ids_top, _ = self._topk[prompt]
        if target == "final":
            return ids_top[-1, :, 0].astype(np.int64)
        if target == "next":
            return np.array(ids[1:] + [-1], dtype=np.int64)
        if target.startswith("text:"):
            if self._tok is None:
                raise ValueError("text targets need a tokenizer; pass tokenizer= or use 'id:<n>'")
            enc = self._tok.encode(target[5:])
            enc = list(getattr(enc, "ids", enc))  # a workbench/HF tokenizer's list or a tokenizers Encoding
            if not enc:
                raise ValueError(f"target text {target[5:]!r} encodes to no token")
            return np.full(len(ids), enc[0], dtype=np.int64)
        if target.startswith("id:"):
            return np.full(len(ids), int(target[3:]), dtype=np.int64)
        raise ValueError(f"unknown target {target!r}; expected 'top', 'final', 'next', 'text:<token>' or 'id:<n>'")

    def grid(self, prompt: int = 0, target: str = "final") -> dict[str, Any]:
        """Everything one heatmap shows, as JSON-able lists.

        Returns:
            dict with `top_tokens`/`top_probs` [rows][pos][k], `target_prob`/`target_rank` [rows][pos]
            (None where the target is undefined), `target_tokens` [pos], `vocab`, `label`.
        """
        if not 0 <= prompt < len(self._ids):
            raise KeyError(f"prompt {prompt} out of range 0..{len(self._ids) - 1}")
        ids_top, probs_top = self._topk[prompt]
        top_tokens = [[token_strings(self._tok, cell, readable=True) for cell in row] for row in ids_top.tolist()]
        if target == "top":
            prob = probs_top[..., 0].astype(np.float64)
            rank = np.ones_like(prob, dtype=np.int64)
            tgt_tokens = [None] * prob.shape[1]
            label = "probability of each cell's own top token"
            valid = np.ones(prob.shape[1], dtype=bool)
        else:
            tids = self._target_ids(prompt, target)
            valid = tids >= 0
            lp = self._lp(prompt)  # [rows, pos, vocab]
            safe = torch.as_tensor(np.where(valid, tids, 0))
            tlp = lp.gather(-1, safe[None, :, None].expand(lp.shape[0], -1, 1))[..., 0]  # [rows, pos]
            prob = tlp.exp().double().numpy()
            rank = (1 + (lp > tlp[..., None]).sum(-1)).numpy()
            tgt_tokens = [token_strings(self._tok, [int(i)], readable=True)[0] if v else None for i, v in zip(tids, valid)]
            named = {"final": "the model's final prediction", "next": "the actual next token"}
            label = f"probability of {named[target] if target in named else repr(target.split(':', 1)[1])}"
        # JSON has no NaN: positions without a target (the last one for "next") become null
        target_prob = [[float(x) if valid[c] else None for c, x in enumerate(row)] for row in prob]
        target_rank = [[int(x) if valid[c] else None for c, x in enumerate(row)] for row in rank]
        vocab = self._vocab
        return {
            "top_tokens": top_tokens, "top_probs": np.round(probs_top, 5).tolist(), "target_prob": target_prob,
            "target_rank": target_rank, "target_tokens": tgt_tokens, "vocab": vocab, "label": label, "target": target,
        }  # fmt: skip

    def _respond(self, request: dict[str, Any]) -> tuple[dict[str, Any], list[bytes]]:
        if request.get("what") != "grid":
            raise ValueError(f"unknown request {request.get('what')!r}; expected 'grid'")
        return self.grid(int(request.get("prompt", 0)), str(request.get("target", "final"))), []

    def _state(self) -> dict[str, Any]:
        state = super()._state()
        state["live"] = False
        state["target_options"] = BUILTIN_TARGETS + [[x, f'"{x[5:]}"'] for x in self._extra] + (
            [[self.target, f'"{self.target[5:]}"']] if self.target.startswith("text:") and self.target not in self._extra else []
        )
        return state

    def _static_payload(self, max_bytes: int) -> dict[str, Any]:
        keys = [o[0] for o in self._state()["target_options"]]
        return {"grids": [{key: self.grid(p, key) for key in keys} for p in range(len(self._ids))]}


def _row_labels(rows: int) -> list[str]:
    return ["embed"] + [f"L{r}" for r in range(rows - 1)]


def _model_data(model: Any, text_or_tokens: Any) -> tuple[list[list[str]], list[Any], list[list[int]], Any, list[str]]:
    """(tokens, lazy log-probabilities, ids per prompt, tokenizer, row labels) of the logit lens on `model`."""
    prompts = as_prompts(model, text_or_tokens)
    thunks = []
    for p in prompts:
        resid = residual_stack(model, torch.tensor([p.ids]))[0][:, 0]  # [rows, pos, d]
        thunks.append(functools.partial(lens_log_probs, model, resid))
    rows = model.config.num_hidden_layers + 1
    return [p.tokens for p in prompts], thunks, [p.ids for p in prompts], model.tokenizer, _row_labels(rows)
