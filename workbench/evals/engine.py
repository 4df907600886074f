"""The request engine: log-likelihoods, rolling log-likelihoods and greedy generation over a causal LM.

Tokenisation follows lm-evaluation-harness's HFLM exactly, so numbers agree with lm-eval's hf backend:

- trailing whitespace of the context moves to the continuation; the continuation's tokens are
  `encode(context + continuation)[len(encode(context)):]`;
- an empty context becomes the prefix token (BOS, else EOS);
- the model input is `(context + continuation)[-(max_length + 1):][:-1]` (left truncation to the window);
- rolling windows are lm-eval's `get_rolling_token_windows(..., context_len=1)` made disjoint.

Speed comes from doing less work than a plain forward per request:

- requests with identical model input (e.g. the one-token answers " A" ... " D" of MMLU) share one forward;
- the output head and log-softmax run only at the positions that are scored, not over the whole sequence;
- a token prefix shared by several inputs is run once and its KV cache reused for everything below it
  (`prefix_tree`): the context of several continuations, and the few-shot examples that open every prompt of
  an MMLU subject (models whose cache supports `index_select`, and transformers' `DynamicCache`);
- segments are sorted by length (longest first) and packed into batches under a token budget ("auto"); on CUDA
  an out-of-memory error halves the budget and retries.

Finished requests can be written to an on-disk `RequestCache` so an interrupted run resumes without recomputing.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.evals.prefix_tree import PrefixNode, Tokens, build_prefix_forest

# ----------------------------------------------------------------------------------------------------------------
# on-disk request cache


class RequestCache:
    """Append-only JSONL cache of finished requests, keyed by a hash of (model identity, request).

    Each finished request is one line `{"k": key, "v": value}` written with a single `os.write` on an `O_APPEND`
    descriptor, so a killed process leaves at most a truncated last line (ignored on reading) and never a
    corrupt earlier one.

    Args:
        path: the JSONL file (created with its parent directories).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._data: dict[str, Any] = {}
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                        self._data[rec["k"]] = rec["v"]
                    except (json.JSONDecodeError, KeyError, TypeError):
                        continue  # a line cut short by a kill
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def __contains__(self, key: str) -> bool:
        return key in self._data

    def __len__(self) -> int:
        return len(self._data)

    def get(self, key: str) -> Any:
        return self._data.get(key)

    def put_many(self, items: Sequence[tuple[str, Any]]) -> None:
        """Store and append `(key, value)` pairs, one atomic line each."""
        for key, value in items:
            self._data[key] = value
            os.write(self._fd, (json.dumps({"k": key, "v": value}) + "\n").encode("utf-8"))

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


def model_fingerprint(model: torch.nn.Module, extra: Any = None) -> str:
    """A short identity for a model: class, config, dtype and a cheap digest of every parameter.

    Two models with the same architecture but different weights get different fingerprints (the digest sums and
    samples every tensor), so a request cache is never reused across models.
    """
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else getattr(cfg, "__dict__", {})
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
            h.update(f"{name}{tuple(p.shape)}{p.dtype}{float(flat.float().sum()):.6e}".encode())
            h.update(sample.numpy().tobytes())
    h.update(json.dumps(extra, default=str).encode())
    return h.hexdigest()[:24]


# ----------------------------------------------------------------------------------------------------------------
# tokenizer adapter


class _Tok:
    """Uniform encode/decode over a transformers-like tokenizer or a raw `tokenizers.Tokenizer`."""

    def __init__(self, tok: Any) -> None:
        self.tok = tok
        self.raw = type(tok).__module__.startswith("tokenizers")

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text, no special tokens added (as lm-eval's causal-LM `tok_encode`), in one batch."""
        if not texts:
            return []
        if self.raw:
            return [e.ids for e in self.tok.encode_batch(list(texts), add_special_tokens=False)]
        return [list(ids) for ids in self.tok(list(texts), add_special_tokens=False)["input_ids"]]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tok.decode(list(ids), skip_special_tokens=True) if not self.raw else self.tok.decode(list(ids))

    def special_id(self, what: str) -> int | None:
        if self.raw:
            return self.tok.token_to_id("<|endoftext|>")
        return getattr(self.tok, f"{what}_token_id", None)


# ----------------------------------------------------------------------------------------------------------------
# the engine

# A shared prefix shorter than this is recomputed per input rather than run as its own batched forward.
MIN_SHARED_TOKENS = 16
# Rows x longest key length (cached prefix + segment) per batch, in token budgets.
KV_BUDGET_FACTOR = 8


@dataclass
class _Prefix:
    """A batch's KV cache and its key mask `[rows, keys]` (pads 0), for the children of its nodes."""

    cache: Any
    mask: torch.Tensor


@dataclass
class _Run:
    """State of one `loglikelihood_tokens` call, shared by its batches."""

    pairs: Sequence[tuple[list[int], list[int]]]
    inputs: dict[Tokens, list[int]]  # unique input -> indices of its requests
    need: dict[Tokens, int]  # unique input -> number of final positions whose log-probs are scored
    results: list
    keys: list
    pbar: Any
    pending: dict[Tokens, list[torch.Tensor]]  # log-prob rows already computed in an input's ancestors


class RequestEngine:
    """Scores requests with a causal LM (`model(input_ids, ...)` -> `.logits [batch, pos, vocab]`).

    Args:
        model: a workbench or transformers GPT-NeoX causal LM (any model with that call signature works; one with
            `gpt_neox` and an output embedding runs the head only where needed).
        tokenizer: defaults to `model.tokenizer`.
        batch_size: "auto" (token budget, halved on CUDA out-of-memory) or a fixed number of sequences.
        max_length: the context window; default `model.config.max_position_embeddings` (lm-eval's choice).
        cache: a `RequestCache` for resuming, or None.
        model_id: identity used in cache keys; default `model_fingerprint(model)` (computed when a cache is used).
        share_context_kv: run each token prefix shared by several inputs once and reuse its KV cache below it.
        progress: show tqdm progress bars.
        on_batch: called after every committed batch with the engine's `stats` (tests use it to interrupt a run).
    """

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any = None,
        *,
        batch_size: int | str = "auto",
        max_length: int | None = None,
        cache: RequestCache | None = None,
        model_id: str | None = None,
        share_context_kv: bool = True,
        progress: bool = True,
        on_batch: Callable[[dict], None] | None = None,
    ) -> None:
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("no tokenizer: pass tokenizer= or use a model loaded with workbench.load (model.tokenizer)")
        if not (batch_size == "auto" or (isinstance(batch_size, int) and batch_size > 0)):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}")
        self.model = model.eval()
        self.tok = _Tok(tokenizer)
        self.batch_size = batch_size
        cfg = getattr(model, "config", None)
        self.max_length = int(max_length or getattr(cfg, "max_position_embeddings", 0) or 2048)
        self.device = next(model.parameters()).device
        eos = self.tok.special_id("eos")
        bos = self.tok.special_id("bos")
        self.eot_id = eos if eos is not None else 0
        self.prefix_id = bos if bos is not None else self.eot_id
        self.cache = cache
        self.model_id = model_id or (model_fingerprint(model, self.max_length) if cache is not None else "uncached")
        self.share_context_kv = share_context_kv
        self.progress = progress
        self.on_batch = on_batch
        # auto batching: a token budget per forward; on CUDA it starts high and halves on OOM
        # (CPU: small batches stay in cache; 1024 beat 4096 by 10-15% on the demo model's evals)
        self.token_budget = 32768 if self.device.type == "cuda" else 1024
        self.stats = {"computed": 0, "cached": 0, "truncated": 0, "forwards": 0, "batches": 0, "tokens": 0}
        self._body, self._head = _split(model)

    # ---------------------------------------------------------------- tokenisation (lm-eval's rules)
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return self.tok.encode([text])[0]

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) per request, as lm-eval's `TemplateLM.loglikelihood` / `_encode_pair`
        make them: trailing context whitespace moves to the continuation, the continuation's ids are those of
        `context + continuation` after the context's. Every distinct string is tokenised once, in one batch."""
        split = []  # (context, continuation, had a context)
        for context, continuation in requests:
            n = len(context) - len(context.rstrip())
            split.append((context[:-n], context[-n:] + continuation, True) if n else (context, continuation, context != ""))
        texts = list({t: None for ctx, cont, _ in split for t in (ctx, ctx + cont)})
        ids = dict(zip(texts, self.tok.encode(texts)))
        pairs = []
        for ctx, cont, has_context in split:
            if not has_context:  # condition on the prefix token (a leading prefix token is context itself)
                whole = ids[cont]
                if not whole:
                    raise ValueError("empty continuation with empty context: nothing to score")
                pairs.append(([self.prefix_id], whole) if whole[0] != self.prefix_id else (whole[:1], whole[1:]))
            else:
                pairs.append((ids[ctx], ids[ctx + cont][len(ids[ctx]) :]))
        return pairs

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """`encode_pairs` for one request."""
        return self.encode_pairs([(context, continuation)])[0]

    # ---------------------------------------------------------------- public request types
    def loglikelihood(self, requests: Sequence[tuple[str, str]], desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation given its context, and whether it is the greedy one.

        Args:
            requests: `(context, continuation)` strings.

        Returns:
            `(logprob, is_greedy)` per request, in order.
        """
        return self.loglikelihood_tokens(self.encode_pairs(requests), desc=desc)

    def loglikelihood_rolling(self, texts: Sequence[str], desc: str = "rolling loglikelihood") -> list[float]:
        """Log-likelihood of whole texts (perplexity), in maximal-context windows as lm-eval computes it.

        Returns:
            One summed log-probability per text (conditioned on the prefix token for the first token).
        """
        windows, owner = [], []
        for i, tokens in enumerate(self.tok.encode(texts)):
            for ctx, pred in rolling_windows(tokens, self.prefix_id, self.max_length):
                windows.append((ctx, pred))
                owner.append(i)
        res = self.loglikelihood_tokens(windows, desc=desc)
        totals = [0.0] * len(texts)
        for i, (ll, _) in zip(owner, res):
            totals[i] += ll
        return totals

    def loglikelihood_tokens(
        self, pairs: Sequence[tuple[list[int], list[int]]], desc: str = "loglikelihood"
    ) -> list[tuple[float, bool]]:
        """`loglikelihood` on already tokenised `(context ids, continuation ids)` pairs (context non-empty)."""
        L = self.max_length
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        keys: list[str | None] = [None] * len(pairs)
        todo: list[int] = []
        for i, (ctx, cont) in enumerate(pairs):
            if not ctx or not cont:
                raise ValueError(f"request {i}: empty {'context' if not ctx else 'continuation'} tokens")
            if len(cont) > L:
                raise ValueError(f"request {i}: continuation of {len(cont)} tokens exceeds the window of {L}")
            if len(ctx) + len(cont) > L + 1:
                self.stats["truncated"] += 1
            if self.cache is not None:
                keys[i] = request_key(self.model_id, "ll", [ctx, cont])
                if keys[i] in self.cache:
                    v = self.cache.get(keys[i])
                    results[i] = (float(v[0]), bool(v[1]))
                    self.stats["cached"] += 1
                    continue
            todo.append(i)
        if todo:
            with torch.inference_mode():
                self._score(pairs, todo, results, keys, desc)
        return results  # type: ignore[return-value]

    # ---------------------------------------------------------------- scoring
    def _score(self, pairs, todo, results, keys, desc) -> None:
        L = self.max_length
        # unique model inputs: identical inputs (one-token answers to one context) share one forward
        inputs: dict[Tokens, list[int]] = {}
        for i in todo:
            ctx, cont = pairs[i]
            inputs.setdefault(tuple((ctx + cont)[-(L + 1) :][:-1]), []).append(i)
        # log-probabilities are needed at each input's last n positions (n = its longest continuation)
        need = {inp: max(len(pairs[i][1]) for i in reqs) for inp, reqs in inputs.items()}
        sharing = self.share_context_kv and self._head is not None
        forest = build_prefix_forest(inputs, MIN_SHARED_TOKENS if sharing else L + 1)
        pbar = tqdm(total=len(todo), desc=desc, unit="req", disable=not self.progress, dynamic_ncols=True)
        run = _Run(pairs, inputs, need, results, keys, pbar, pending={})
        try:
            self._run_nodes([(node, 0) for node in forest], None, run)
        finally:
            run.pbar.close()

    def _run_nodes(self, nodes: list[tuple[PrefixNode, int]], parent: _Prefix | None, run: _Run) -> None:
        """Run `(node, row of its parent in the parent's batch)` pairs in batches, longest segment first."""
        nodes = sorted(nodes, key=lambda nr: (-len(nr[0].tokens), nr[0].tokens))
        batches = self._batches(nodes, lambda nr: len(nr[0].tokens), kv=lambda nr: nr[0].stop)
        for batch in self._shard(batches) if parent is None else batches:  # a subtree stays with its root
            below: list[tuple[list, _Prefix]] = []  # one entry per forward (more if out of memory split the batch)
            self._run_with_retry(lambda b: below.append(self._forward_nodes(b, parent, run)), batch)
            for children, prefix in below:  # outside the retry: a child's failure must not rerun its parents
                if children:
                    self._run_nodes(children, prefix, run)

    def _forward_nodes(
        self, batch: list[tuple[PrefixNode, int]], parent: _Prefix | None, run: _Run
    ) -> tuple[list[tuple[PrefixNode, int]], _Prefix]:
        """One forward over the batch's segments (right-padded) on top of their parents' KV caches.

        Scores the inputs that end here and keeps the log-probs needed by inputs that continue below.

        Returns:
            The children as `(node, row in this batch)` and this batch's cache and key mask for them.
        """
        dev = self.device
        B, S = len(batch), max(len(node.tokens) for node, _ in batch)
        ids = torch.full((B, S), self.eot_id, dtype=torch.long)
        seg_mask = torch.zeros(B, S, dtype=torch.long)
        for r, (node, _) in enumerate(batch):
            ids[r, : len(node.tokens)] = torch.tensor(node.tokens)
            seg_mask[r, : len(node.tokens)] = 1
        has_children = any(node.children for node, _ in batch)
        if parent is None:
            # right padding needs no mask here: causal attention never looks at later (pad) positions
            mask = seg_mask
            h, out = self._hidden(ids.to(dev), use_cache=has_children)
        else:
            rows = torch.tensor([p for _, p in batch])
            mask = torch.cat([parent.mask[rows], seg_mask], dim=1)  # parents' pads stay masked
            pos = torch.tensor([node.start for node, _ in batch])[:, None] + torch.arange(S)[None]
            h, out = self._hidden(ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                  past_key_values=_select_cache(parent.cache, rows.to(dev)), use_cache=True)  # fmt: skip
        self.stats["tokens"] += int(seg_mask.sum())

        # log-probs at the needed positions of this batch, one head call for all of them
        wanted: dict[tuple[int, int], int] = {}  # (row, offset in the segment) -> row of `logp`
        for r, (node, _) in enumerate(batch):
            for x in node.inputs:
                for p in _needed_positions(node, x, run.need[x]):
                    wanted.setdefault((r, p - node.start), len(wanted))
        if wanted:
            at = torch.tensor(list(wanted), device=dev)  # [n, 2]
            logp = self._logprobs(h[at[:, 0], at[:, 1]])  # [n, vocab]
        done: list[int] = []
        for r, (node, _) in enumerate(batch):
            for x in node.inputs:
                span = _needed_positions(node, x, run.need[x])
                if len(span):
                    run.pending.setdefault(x, []).append(logp[[wanted[(r, p - node.start)] for p in span]])
            if node.ends is not None:  # all of this input's positions are done: score its requests
                x = node.ends
                self._finish(torch.cat(run.pending.pop(x)), run.inputs[x], run.pairs, run.results)
                done += run.inputs[x]
        self._commit(done, run.results, run.keys, run.pbar)
        children = [(child, r) for r, (node, _) in enumerate(batch) for child in node.children]
        return children, _Prefix(out.past_key_values if children else None, mask)

    def _commit(self, idx: list[int], results, keys, pbar) -> None:
        if self.cache is not None:
            self.cache.put_many([(keys[i], list(results[i])) for i in idx])
        self.stats["computed"] += len(idx)
        self.stats["batches"] += 1
        pbar.update(len(idx))
        if self.on_batch is not None:
            self.on_batch(dict(self.stats))

    def _shard(self, batches: Iterable[list]) -> Iterable[list]:
        """The top-level batches this process runs: all of them (a data-parallel wrapper keeps its share)."""
        return batches

    def _batches(self, items: list, cost: Callable[[Any], int], kv: Callable[[Any], int] | None = None):
        """Consecutive slices under the token budget (padded cost: rows x longest) or `batch_size` rows.

        `kv` is an item's key length (cached prefix + its own tokens): rows x longest key stays under
        `KV_BUDGET_FACTOR` token budgets, bounding the memory of the parents' caches copied into the batch.
        """
        i = 0
        while i < len(items):
            if self.batch_size != "auto":
                n = self.batch_size
            else:
                n, longest, longest_kv = 0, 0, 0
                while i + n < len(items):
                    longest = max(longest, cost(items[i + n]))
                    longest_kv = max(longest_kv, kv(items[i + n]) if kv else 0)
                    if n > 0 and (longest * (n + 1) > self.token_budget
                                  or longest_kv * (n + 1) > KV_BUDGET_FACTOR * self.token_budget):  # fmt: skip
                        break
                    n += 1
            yield items[i : i + n]
            i += n

    def _run_with_retry(self, fn: Callable[[list], None], batch: list) -> None:
        try:
            fn(batch)
        except torch.cuda.OutOfMemoryError:
            if len(batch) == 1 or self.batch_size != "auto":
                raise
            torch.cuda.empty_cache()
            self.token_budget = max(1, self.token_budget // 2)
            half = len(batch) // 2
            self._run_with_retry(fn, batch[:half])
            self._run_with_retry(fn, batch[half:])

    def _hidden(self, ids: torch.Tensor, **kw: Any):
        """(hidden or logits [batch, pos, *], output): the body's last hidden state when the model splits."""
        self.stats["forwards"] += 1
        if self._body is not None:
            out = self._body(ids, **kw)
            h = out.last_hidden_state if hasattr(out, "last_hidden_state") else out[0]
            return h, out
        out = self.model(ids, **kw)
        return out.logits, out

    def _logprobs(self, h: torch.Tensor) -> torch.Tensor:
        """Log-softmax (float32) of the logits at the selected rows `h` [n, d_model or vocab] -> [n, vocab]."""
        logits = self._head(h) if self._head is not None else h
        return torch.log_softmax(logits.float(), dim=-1)

    def _finish(self, logp: torch.Tensor, reqs: list[int], pairs, results) -> None:
        """logp [n_pos, vocab] predicts the last n_pos tokens of the input + 1; score each request's suffix."""
        greedy = logp.argmax(-1)
        for i in reqs:
            cont = pairs[i][1]
            t = torch.tensor(cont, device=logp.device)
            rows = logp[-len(cont) :]
            ll = rows.gather(1, t[:, None]).sum()
            results[i] = (float(ll), bool((greedy[-len(cont) :] == t).all()))

    # ---------------------------------------------------------------- generation
    @torch.inference_mode()
    def generate_until(self, requests: Sequence[tuple[str, dict]], desc: str = "generate_until") -> list[str]:
        """Greedy continuation of each context until a stop string, EOS or `max_gen_toks` tokens.

        Args:
            requests: `(context, {"until": [...], "max_gen_toks": n})`; lm-eval's defaults (256 tokens, EOS).

        Returns:
            The generated text, cut before the first stop string.
        """
        out: list[str | None] = [None] * len(requests)
        keys: list[str | None] = [None] * len(requests)
        todo = []
        for i, (ctx, kw) in enumerate(requests):
            if self.cache is not None:
                keys[i] = request_key(self.model_id, "gen", [ctx, kw])
                if keys[i] in self.cache:
                    out[i] = self.cache.get(keys[i])
                    self.stats["cached"] += 1
                    continue
            todo.append(i)
        enc = dict(zip(todo, self.tok.encode([requests[i][0] for i in todo])))
        todo.sort(key=lambda i: (-len(enc[i]), requests[i][0]))
        pbar = tqdm(total=len(todo), desc=desc, unit="req", disable=not self.progress, dynamic_ncols=True)
        bs = self.batch_size if self.batch_size != "auto" else max(1, self.token_budget // max(1, self.max_length))
        # one batch per set of generation arguments, longest contexts first
        by_kw: dict[str, list[int]] = {}
        for i in todo:
            by_kw.setdefault(json.dumps(requests[i][1], sort_keys=True), []).append(i)
        for kwjson, idx in by_kw.items():
            kw = json.loads(kwjson)
            until = list(kw.get("until") or [])
            eos_text = self.tok.decode([self.eot_id]) if not self.tok.raw else "<|endoftext|>"
            if eos_text and eos_text not in until:
                until.append(eos_text)
            max_gen = int(kw.get("max_gen_toks", 256))
            for s in range(0, len(idx), bs):
                chunk = idx[s : s + bs]
                texts = self._greedy([enc[i] for i in chunk], until, max_gen)
                for i, t in zip(chunk, texts):
                    out[i] = t
                if self.cache is not None:
                    self.cache.put_many([(keys[i], out[i]) for i in chunk])
                self.stats["computed"] += len(chunk)
                pbar.update(len(chunk))
                if self.on_batch is not None:
                    self.on_batch(dict(self.stats))
        pbar.close()
        return out  # type: ignore[return-value]

    def _greedy(self, contexts: list[list[int]], until: list[str], max_gen: int) -> list[str]:
        dev = self.device
        max_ctx = self.max_length - max_gen
        if max_ctx <= 0:
            raise ValueError(f"max_gen_toks={max_gen} leaves no room for context in a window of {self.max_length}")
        ctxs = [c[-max_ctx:] for c in contexts]
        self.stats["truncated"] += sum(len(c) > max_ctx for c in contexts)
        B, T = len(ctxs), max(len(c) for c in ctxs)
        ids = torch.full((B, T), self.eot_id, dtype=torch.long)
        mask = torch.zeros(B, T, dtype=torch.long)
        for r, c in enumerate(ctxs):
            ids[r, T - len(c) :] = torch.tensor(c)
            mask[r, T - len(c) :] = 1
        ids, mask = ids.to(dev), mask.to(dev)
        pos = (mask.cumsum(-1) - 1).clamp(min=0)
        gen = [[] for _ in range(B)]
        done = [False] * B
        past, step_ids, step_pos = None, ids, pos
        for _ in range(max_gen):
            self.stats["forwards"] += 1
            o = self.model(step_ids, attention_mask=mask, position_ids=step_pos, past_key_values=past, use_cache=True)
            nxt = o.logits[:, -1].argmax(-1)
            past = o.past_key_values
            for r in range(B):
                if not done[r]:
                    gen[r].append(int(nxt[r]))
                    text = self.tok.decode(gen[r])
                    if int(nxt[r]) == self.eot_id or any(u and u in text for u in until):
                        done[r] = True
            if all(done):
                break
            step_ids = nxt[:, None]
            step_pos = step_pos[:, -1:] + 1
            mask = torch.cat([mask, torch.ones(B, 1, dtype=mask.dtype, device=dev)], dim=1)
        texts = []
        for g in gen:
            t = self.tok.decode(g)
            for u in until:
                if u:
                    t = t.split(u)[0]
            texts.append(t)
        return texts


def rolling_windows(tokens: list[int], prefix_token: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's disjoint rolling windows (context_len=1): `(context ids, predicted ids)` covering every token once,
    each prediction with as much context as the window allows."""
    out = []
    if not tokens:
        return out
    first = min(max_len, len(tokens))
    out.append(([prefix_token], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        window = tokens[end - max_len - 1 : end - 1]
        out.append((window[: len(window) - (n - 1)], tokens[end - n : end]))
        done = end
    return out


def _split(model: torch.nn.Module):
    """(body, head) when the model is a GPT-NeoX causal LM with `gpt_neox` and an output embedding, else (None, None)."""
    body = getattr(model, "gpt_neox", None)
    head = None
    if hasattr(model, "get_output_embeddings"):
        try:
            head = model.get_output_embeddings()
        except Exception:
            head = None
    head = head or getattr(model, "embed_out", None) or getattr(model, "lm_head", None)
    if body is None or head is None:
        return None, None
    return body, head


def _needed_positions(node: PrefixNode, x: Tokens, n: int) -> range:
    """Positions of input `x` inside `node` whose log-probs are scored (its last `n`)."""
    return range(max(node.start, len(x) - n), min(node.stop, len(x)))


def _select_cache(cache: Any, index: torch.Tensor) -> Any:
    """A cache whose batch rows are `cache[index]` (rows may repeat)."""
    if hasattr(cache, "index_select"):
        return cache.index_select(index)
    from transformers import DynamicCache  # transformers models (tests, lm-eval cross-checks)

    new = DynamicCache()
    for layer_idx, layer in enumerate(cache.layers):
        new.update(layer.keys.index_select(0, index), layer.values.index_select(0, index), layer_idx)
    return new
