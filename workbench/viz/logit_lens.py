"""`LogitLensView`: what each layer's residual stream would predict, as a layers x positions heatmap."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t

from workbench.viz import data as D
from workbench.viz.base import VizWidget

BUILTIN_TARGETS = [["top", "top token of each cell"], ["final", "model's final prediction"], ["next", "actual next token"]]


class LogitLensView(VizWidget):
    """Logit lens: rows are the residual stream before layer 0 and after each layer, columns are positions.

    Each cell shows the top token of `unembed(final_ln(resid))` and is coloured by the probability or rank of a
    target: the cell's own top token, the model's final prediction at that position, the actual next token,
    or any token typed into the target box (recomputed in the kernel).

    Args:
        model: a GPT-NeoX model with `.tokenizer`.
        text_or_tokens: a string, several strings, or token ids.
        k: how many top tokens the hover shows.
        targets: extra target tokens (strings, first token used) to precompute for the standalone page.
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
        self, model: Any, text_or_tokens: Any, k: int = 5, targets: Sequence[str] = (), metric: str = "prob", title: str = ""
    ) -> None:
        if metric not in ("prob", "rank"):
            raise ValueError(f"metric must be 'prob' or 'rank', got {metric!r}")
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        self._model = model
        self._tok = D.get_tokenizer(model)
        self._k = k
        self._prompts = D.to_prompts(model, text_or_tokens)
        self._resid = []  # per prompt [rows, pos, d_model]
        self._topk = []  # per prompt (ids [rows, pos, k], probs [rows, pos, k])
        labels: list[str] = []
        for p in self._prompts:
            resid, labels = D.resid_stack(model, p.ids)
            self._resid.append(resid)
            lp = D.logit_lens_logprobs(model, resid)
            vals, ids = lp.topk(k, dim=-1)
            self._topk.append((ids.numpy(), vals.exp().numpy()))
        self._extra = [f"text:{x}" for x in targets]
        for x in self._extra:
            self._target_ids(0, x)  # validate now, not in the browser
        options = BUILTIN_TARGETS + [[x, f'"{x[5:]}"'] for x in self._extra]
        super().__init__(
            prompts=[{"tokens": p.tokens} for p in self._prompts], row_labels=["embed" if l == "embed" else f"after {l}" for l in labels],
            target="final", target_options=options, metric=metric, title=title,
        )  # fmt: skip

    def _target_ids(self, prompt: int, target: str) -> np.ndarray:
        """Target token id per position ([pos], -1 where there is none)."""
        ids = self._prompts[prompt].ids
        ids_top, _ = self._topk[prompt]
        if target == "final":
            return ids_top[-1, :, 0].astype(np.int64)
        if target == "next":
            return np.array(ids[1:] + [-1], dtype=np.int64)
        if target.startswith("text:"):
            enc = D._encode(self._tok, target[5:])
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
        if not 0 <= prompt < len(self._prompts):
            raise KeyError(f"prompt {prompt} out of range 0..{len(self._prompts) - 1}")
        ids_top, probs_top = self._topk[prompt]
        top_tokens = [[D.token_strings(self._tok, cell) for cell in row] for row in ids_top.tolist()]
        if target == "top":
            prob = probs_top[..., 0].astype(np.float64)
            rank = np.ones_like(prob, dtype=np.int64)
            tgt_tokens = [None] * prob.shape[1]
            label = "probability of each cell's own top token"
            valid = np.ones(prob.shape[1], dtype=bool)
        else:
            tids = self._target_ids(prompt, target)
            valid = tids >= 0
            lp = D.logit_lens_logprobs(self._model, self._resid[prompt])  # [rows, pos, vocab]
            safe = torch.as_tensor(np.where(valid, tids, 0))
            tlp = lp.gather(-1, safe[None, :, None].expand(lp.shape[0], -1, 1))[..., 0]  # [rows, pos]
            prob = tlp.exp().double().numpy()
            rank = (1 + (lp > tlp[..., None]).sum(-1)).numpy()
            tgt_tokens = [D.token_strings(self._tok, [int(i)])[0] if v else None for i, v in zip(tids, valid)]
            named = {"final": "the model's final prediction", "next": "the actual next token"}
            label = f"probability of {named[target] if target in named else repr(target.split(':', 1)[1])}"
        # JSON has no NaN: positions without a target (the last one for "next") become null
        target_prob = [[float(x) if valid[c] else None for c, x in enumerate(row)] for row in prob]
        target_rank = [[int(x) if valid[c] else None for c, x in enumerate(row)] for row in rank]
        vocab = int(self._model.embed_out.weight.shape[0])
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
        return {"grids": [{key: self.grid(p, key) for key in keys} for p in range(len(self._prompts))]}
