"""`LogitLensView`: what each layer's residual stream would predict, as a layers x positions heatmap."""

from __future__ import annotations

import numbers
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
import traitlets as t

from workbench.analysis import residual_stack
from workbench.inputs import as_prompts, token_strings
from workbench.lens import LENS_KINDS, Lens, as_lens
from workbench.lens.metrics import layer_labels
from workbench.viz.base import VizWidget, fit, is_model, json_floats, per_prompt_tokens, positions_note

BUILTIN_TARGETS = [["top", "top token of each cell"], ["final", "model's final prediction"], ["next", "actual next token"]]


class LogitLensView(VizWidget):
    """Logit lens: rows are the residual stream before layer 0 and after each layer, columns are positions.

    Each cell shows the top token of the lens's prediction (`unembed(final_ln(resid))` for the logit lens,
    `unembed(final_ln(resid + W resid + b))` for a tuned lens: `workbench.lens`) and is coloured by the
    probability or rank of a target: the cell's own top token, the model's final prediction at that position,
    the actual next token, or any token typed into the target box (recomputed in the kernel).

    Args:
        tokens: display strings of one prompt, or one list per prompt.
        log_probs: per prompt, the lens's log-probabilities `[rows, pos, vocab]` (array or tensor), or a
            function of no arguments returning them (computed when needed, so vocabulary-sized arrays are
            not held; `from_model` / `from_cache` compute them a block of positions at a time); the last row
            is the model's own prediction. One pass at construction keeps the top k and every offered target.
        ids: per prompt, its token ids (for the "next token" target).
        tokenizer: decodes top tokens and encodes typed targets (None: ids show as `#123`).
        row_labels: one label per row (default `embed`, `L0`, ...).
        k: how many top tokens the hover shows (at most the vocabulary: a larger k is clamped to it).
        targets: extra target tokens (strings, first token used) to precompute for the standalone page.
        lens: which lens: `"logit"` or `"tuned"`; with a model also a `workbench.lens.Lens` (`"tuned"` is the
            lens shipped for the model, `workbench.lens.as_lens`). With plain data it only labels the view.

    `LogitLensView(model, text_or_tokens, ...)` is shorthand for `LogitLensView.from_model(...)`.
    """

    _entry = "logit_lens.js"
    _state_keys = ("prompts", "row_labels", "prompt", "target", "target_options", "metric", "live", "title", "lens")

    prompts = t.List(t.Dict()).tag(sync=True)
    row_labels = t.List(t.Unicode()).tag(sync=True)
    prompt = t.Int(0).tag(sync=True)
    target = t.Unicode("final").tag(sync=True)
    target_options = t.List(t.List()).tag(sync=True)
    metric = t.Unicode("prob").tag(sync=True)
    live = t.Bool(True).tag(sync=True)
    title = t.Unicode("").tag(sync=True)
    lens = t.Unicode("logit").tag(sync=True)

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
        lens: Any = "logit",
    ) -> None:
        if is_model(tokens):
            lens = as_lens(tokens, lens)
            tokens, log_probs, ids, tokenizer, row_labels = _model_data(tokens, log_probs, lens)
        kind = lens.kind if isinstance(lens, Lens) else lens
        if kind not in LENS_KINDS:
            raise ValueError(f"lens must be one of {LENS_KINDS} (or a workbench.lens.Lens with a model), got {lens!r}")
        if metric not in ("prob", "rank"):
            raise ValueError(f"metric must be 'prob' or 'rank', got {metric!r}")
        if not isinstance(k, numbers.Integral) or isinstance(k, bool) or k < 1:
            raise ValueError(f"k must be a positive integer, got {k!r}")
        token_lists = per_prompt_tokens(tokens)
        self._log_probs = [log_probs] if len(token_lists) == 1 and not isinstance(log_probs, (list, tuple)) else list(log_probs)
        self._ids = [list(map(int, x)) for x in ids] if ids is not None else [[-1] * len(x) for x in token_lists]
        if not len(self._log_probs) == len(self._ids) == len(token_lists):
            raise ValueError(f"{len(token_lists)} prompts of tokens, {len(self._log_probs)} of log_probs, {len(self._ids)} of ids")
        self._tok = tokenizer
        self._k = int(k)  # clamped to the vocabulary by the first scan
        self._vocab = 0
        self._names: dict[int, str] = {}  # token id -> display string
        self._topk: list[tuple[np.ndarray, np.ndarray]] = []  # per prompt: ids, probs [rows, pos, k]
        self._cells: dict[tuple[int, str], tuple[np.ndarray, np.ndarray, np.ndarray]] = {}  # target ids, prob, rank
        self._extra = [f"text:{x}" for x in targets]
        for i in range(len(token_lists)):  # one pass each: the top k and every target the page offers
            self._scan(i, ["final", "next"] + self._extra)
        rows = self._topk[0][0].shape[0]
        labels = list(row_labels) if row_labels is not None else _row_labels(rows)
        if len(labels) != rows:
            raise ValueError(f"{len(labels)} row labels for {rows} rows")
        options = BUILTIN_TARGETS + [[x, f'"{x[5:]}"'] for x in self._extra]
        super().__init__(
            prompts=[{"tokens": tk} for tk in token_lists], row_labels=[l if l == "embed" else f"after {l}" for l in labels],
            target="final", target_options=options, metric=metric, title=title, lens=kind,
        )  # fmt: skip

    @classmethod
    def from_model(cls, model: Any, text_or_tokens: Any, lens: Any = "logit", **kwargs: Any) -> "LogitLensView":
        """The logit (or tuned) lens of `model` on each prompt (`analysis.residual_stack`, then the lens:
        the residual stream as `run_with_cache` records it, under active hooks).

        Args:
            model: a workbench causal LM with `.tokenizer`.
            text_or_tokens: a string, several strings, or token ids.
            lens: `"logit"`, `"tuned"` or a `workbench.lens.Lens` (`workbench.lens.as_lens`).
            **kwargs: `k`, `targets`, `metric`, `title`.
        """
        lens = as_lens(model, lens)
        return cls(*_model_data(model, text_or_tokens, lens), lens=lens.kind, **kwargs)

    @classmethod
    def from_cache(cls, cache: Any, ids: Any, lens: Any = "logit", **kwargs: Any) -> "LogitLensView":
        """The logit (or tuned) lens of a cached run (with every `resid_pre` and the last `resid_post` cached).

        Args:
            cache: an ActivationCache (its model supplies the final LayerNorm, unembedding and tokenizer).
            ids: the run's token ids `[batch, pos]` or `[pos]` (unpadded).
            lens: `"logit"`, `"tuned"` or a `workbench.lens.Lens` (`workbench.lens.as_lens`).
            **kwargs: `k`, `targets`, `metric`, `title`.
        """
        model = cache.model
        lens = as_lens(model, lens)
        ids = torch.as_tensor(ids).reshape(-1, torch.as_tensor(ids).shape[-1])
        resid, _ = cache.accumulated_resid(return_labels=True)  # [rows, b, p, d]
        tok = getattr(model, "tokenizer", None)
        lenses = [_Lens(lens, resid[:, b]) for b in range(ids.shape[0])]
        tokens = [token_strings(tok, row, readable=True) for row in ids]
        return cls(tokens, lenses, ids.tolist(), tok, _row_labels(resid.shape[0]), lens=lens.kind, **kwargs)

    # ---- computing
    def _blocks(self, prompt: int) -> Iterator[tuple[slice, torch.Tensor]]:
        """The prompt's log-probabilities `[rows, c, vocab]` (float32, CPU) a block of positions at a time; a lazy
        source (from_model / from_cache) computes only the block, so long prompts never hold them all."""
        src = self._log_probs[prompt]
        if isinstance(src, _Lens):
            yield from src.blocks()
            return
        lp = torch.as_tensor(src() if callable(src) else src).float().cpu()
        if lp.ndim != 3:
            raise ValueError(f"log_probs of prompt {prompt} must be [rows, pos, vocab], got shape {tuple(lp.shape)}")
        step = _block_positions(lp.shape[0], lp.shape[2])
        for a in range(0, lp.shape[1], step):
            yield slice(a, a + step), lp[:, a : a + step]

    def _scan(self, prompt: int, targets: Sequence[str]) -> None:
        """One pass over a prompt's log-probabilities: its top k (the first time) and, for each target not yet
        cached, the target id, probability and rank of every cell."""
        todo = list(dict.fromkeys(t for t in targets if t != "top" and (prompt, t) not in self._cells))
        first = prompt == len(self._topk)
        if not first and not todo:
            return
        fixed = {t: self._target_ids(prompt, t) for t in todo if t != "final"}  # validated before the pass
        tops, vals, cells = [], [], {t: ([], [], []) for t in todo}
        for sl, lp in self._blocks(prompt):
            if first:
                self._vocab = self._vocab or int(lp.shape[-1])
                self._k = min(self._k, self._vocab)
                v, top = lp.topk(self._k, dim=-1)
                tops.append(top.numpy())
                vals.append(v.exp().numpy())
            top = tops[-1] if first else self._topk[prompt][0][:, sl]
            lpn = lp.numpy()
            for t in todo:
                tids = top[-1, :, 0].astype(np.int64) if t == "final" else fixed[t][sl]
                if tids.max(initial=-1) >= lpn.shape[-1]:
                    raise ValueError(f"target {t!r} is token {tids.max()}, outside the vocabulary 0..{lpn.shape[-1] - 1}")
                safe = np.where(tids >= 0, tids, 0)
                tlp = np.take_along_axis(lpn, np.broadcast_to(safe[None, :, None], (lpn.shape[0], len(safe), 1)), -1)
                out = cells[t]
                out[0].append(tids)
                out[1].append(np.exp(tlp[..., 0]))
                out[2].append(1 + (lpn > tlp).sum(-1))
        if first:
            self._topk.append((np.concatenate(tops, 1), np.concatenate(vals, 1)))
        for t, (tids, prob, rank) in cells.items():
            self._cells[(prompt, t)] = (np.concatenate(tids), np.concatenate(prob, 1), np.concatenate(rank, 1))

    def _target_ids(self, prompt: int, target: str) -> np.ndarray:
        """Target token id per position ([pos], -1 where there is none) of the targets other than 'final'."""
        ids = self._ids[prompt]
        if target == "next":
            return np.array(ids[1:] + [-1], dtype=np.int64)
        if target.startswith("text:"):
            if self._tok is None:
                raise ValueError("text targets need a tokenizer; pass tokenizer= or use 'id:<n>'")
            enc = self._tok.encode(target[5:])
            enc = list(getattr(enc, "ids", enc))  # a workbench/HF tokenizer's list or a tokenizers Encoding
            if not enc:
                raise ValueError(f"target text {target[5:]!r} encodes to no token")
            tid = enc[0]
        elif target.startswith("id:") and target[3:].strip().isdigit():
            tid = int(target[3:])
        else:
            raise ValueError(f"unknown target {target!r}; expected 'top', 'final', 'next', 'text:<token>' or 'id:<n>'")
        return np.full(len(ids), tid, dtype=np.int64)

    def _strings(self, ids: np.ndarray) -> list[str]:
        """Display strings of token ids (any shape, flattened); each id decoded once per view."""
        flat = ids.ravel().tolist()
        new = sorted({i for i in flat if i not in self._names})
        self._names.update(zip(new, token_strings(self._tok, new, readable=True)))
        return [self._names[i] for i in flat]

    def _target(self, prompt: int, target: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, str]:
        """(target ids [pos] (-1: none), probability [rows, pos], rank [rows, pos], label) of one target."""
        if not 0 <= prompt < len(self._ids):
            raise KeyError(f"prompt {prompt} out of range 0..{len(self._ids) - 1}")
        if target == "top":
            ids_top, probs_top = self._topk[prompt]
            prob = probs_top[..., 0]
            label = "probability of each cell's own top token"
            return np.full(prob.shape[1], -1), prob, np.ones(prob.shape, dtype=np.int64), label
        self._scan(prompt, [target])
        named = {"final": "the model's final prediction", "next": "the actual next token"}
        label = f"probability of {named[target] if target in named else repr(target.split(':', 1)[1])}"
        return (*self._cells[(prompt, target)], label)

    def grid(self, prompt: int = 0, target: str = "final") -> dict[str, Any]:
        """Everything one heatmap shows, as JSON-able lists.

        Returns:
            dict with `top_tokens`/`top_probs` [rows][pos][k], `target_prob`/`target_rank` [rows][pos]
            (None where the target is undefined), `target_tokens` [pos], `vocab`, `label`.
        """
        tids, prob, rank, label = self._target(prompt, target)
        ids_top, probs_top = self._topk[prompt]
        top_tokens = np.array(self._strings(ids_top), dtype=object).reshape(ids_top.shape).tolist()
        keep = [True] * len(tids) if target == "top" else (tids >= 0).tolist()  # JSON has no NaN: None where undefined
        names = [None] * len(tids) if target == "top" else self._strings(np.maximum(tids, 0))
        return {
            "top_tokens": top_tokens, "top_probs": np.round(probs_top, 5).tolist(),
            "target_prob": [[x if v else None for x, v in zip(row, keep)] for row in prob.astype(np.float64).tolist()],
            "target_rank": [[x if v else None for x, v in zip(row, keep)] for row in rank.tolist()],
            "target_tokens": [s if v else None for s, v in zip(names, keep)],
            "vocab": self._vocab, "label": label, "target": target,
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

    def _export(self, budget: int) -> tuple[dict[str, Any], dict[str, Any]]:
        """Top tokens once per prompt (ids into one string table), each target's probabilities and ranks; when over
        budget, probabilities rounded to 3 digits, then the hover's list cut to the top token, then the first
        positions only (the page says so)."""
        state = self._state()
        keys = [o[0] for o in state["target_options"]]
        targets = [[self._target(p, key) for key in keys] for p in range(len(self._ids))]
        lengths = [len(x) for x in self._ids]

        def build(level: tuple[int | None, int, int], n: int) -> tuple[dict, dict]:
            sig, decimals, k = level
            used = [ids[:, :n, :k] for ids, _ in self._topk] + [np.maximum(t[0][:n], 0) for ts in targets for t in ts]
            table = np.unique(np.concatenate([u.ravel() for u in used]))
            index = lambda a: np.searchsorted(table, a).tolist()  # noqa: E731
            top = [{"ids": index(ids[:, :n, :k]), "probs": np.round(probs[:, :n, :k], decimals).tolist()}
                   for ids, probs in self._topk]

            def cells(tids: np.ndarray, prob: np.ndarray, rank: np.ndarray, label: str) -> dict[str, Any]:
                keep = (tids[:n] >= 0).tolist()  # JSON has no NaN: None where the target is undefined
                mask = lambda rows: [[x if v else None for x, v in zip(row, keep)] for row in rows]  # noqa: E731
                return {"tokens": mask([index(np.maximum(tids[:n], 0))])[0], "label": label,
                        "prob": mask([json_floats(row[:n], sig=sig) for row in prob]), "rank": mask(rank[:, :n].tolist())}

            grids = [{key: {"own": True, "label": t[3]} if key == "top" else cells(*t) for key, t in zip(keys, ts)}
                     for ts in targets]
            notes = (["probabilities rounded to 3 digits"] if sig == 3 else []) + (
                [f"the hover lists the top {k} of {self._k} tokens"] if k < self._k else []) + positions_note(n, lengths)
            page_state = dict(state, prompts=[{"tokens": p["tokens"][:n]} for p in state["prompts"]])
            payload = {"strings": self._strings(table), "top": top, "grids": grids, "vocab": self._vocab, "notes": notes}
            return page_state, payload

        return fit(build, [(6, 5, self._k), (3, 3, self._k), (3, 3, 1)], max(lengths), budget)


class _Lens:
    """A lens on one prompt, computed lazily a block of positions at a time (`workbench.lens.Lens.stack_log_probs`;
    the logit lens computes exactly `analysis.lens_log_probs`).

    Args:
        lens: the `workbench.lens.Lens` decoding the residual stream (its model's final LayerNorm and unembedding).
        resid: `[rows, pos, d]` residual streams.
    """

    def __init__(self, lens: Lens, resid: torch.Tensor) -> None:
        self.lens, self.resid = lens, resid

    def __call__(self) -> torch.Tensor:
        """All log-probabilities `[rows, pos, vocab]`."""
        return self.lens.stack_log_probs(self.resid)

    def blocks(self) -> Iterator[tuple[slice, torch.Tensor]]:
        """(positions, log-probabilities `[rows, c, vocab]` float32) for consecutive blocks of positions."""
        rows, n = self.resid.shape[:2]
        step = _block_positions(rows, self.lens.model.config.vocab_size)
        for a in range(0, n, step):
            yield slice(a, a + step), self.lens.stack_log_probs(self.resid[:, a : a + step]).float().cpu()


def _block_positions(rows: int, vocab: int) -> int:
    """Positions per block: about 32M log-probabilities (128 MB)."""
    return max(1, 2**25 // max(1, rows * vocab))


def _row_labels(rows: int) -> list[str]:
    return layer_labels(rows - 1)


def _model_data(model: Any, text_or_tokens: Any, lens: Lens) -> tuple[list[list[str]], list[Any], list[list[int]], Any, list[str]]:
    """(tokens, lazy log-probabilities, ids per prompt, tokenizer, row labels) of `lens` on `model`."""
    prompts = as_prompts(model, text_or_tokens)
    lenses = [_Lens(lens, residual_stack(model, torch.tensor([p.ids]))[0][:, 0]) for p in prompts]  # [rows, pos, d]
    rows = model.config.num_hidden_layers + 1
    return [p.tokens for p in prompts], lenses, [p.ids for p in prompts], model.tokenizer, _row_labels(rows)
