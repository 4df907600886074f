"""The request engine: log-likelihoods, rolling log-likelihoods and greedy generation over a causal LM.

Tokenisation follows lm-evaluation-harness's HFLM exactly, so numbers agree with lm-eval's hf backend:

- trailing whitespace of the context moves to the continuation; the continuation's tokens are
  `encode(context + continuation)[len(encode(context)):]`;
- an empty context becomes the prefix token (BOS, else EOS);
- the model input is `(context + continuation)[-(max_length + 1):][:-1]` (left truncation to the window);
- rolling windows are lm-eval's `get_rolling_token_windows(..., context_len=1)` made disjoint (`requests`).

Speed comes from doing less work than a plain forward per request:

- requests with identical model input (e.g. the one-token answers " A" ... " D" of MMLU) share one forward;
- the output head and log-softmax run only at the positions that are scored, not over the whole sequence;
- a token prefix shared by several inputs is run once and its KV cache reused for everything below it
  (`prefix_tree`): the context of several continuations, and the few-shot examples that open every prompt of
  an MMLU subject (models whose cache supports `index_select`, and transformers' `DynamicCache`);
- segments are sorted by length (longest first) and packed into batches under a token budget ("auto"); on CUDA
  an out-of-memory error halves the budget and retries.

Generation is `workbench.generation.generate` (greedy, stop strings, EOS). Resuming from an on-disk cache is
`caching.CachingEngine(engine, cache)`; data-parallel runs shard the batches (`shard=`, `distributed`).
"""

from __future__ import annotations

import copy
import inspect
import json
import warnings
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from tqdm.auto import tqdm

from workbench.evals.caching import CachingEngine, RequestCache, model_fingerprint, request_key
from workbench.evals.generation_kwargs import normalize as normalize_generation
from workbench.evals.prefix_tree import PrefixNode, Tokens, build_prefix_forest
from workbench.evals.requests import TokenRequests, rolling_windows
from workbench.evals.tokenizer_adapter import TokenizerAdapter
from workbench.generation import cut_at_stop, generate
from workbench.threads import forward_threads

__all__ = ["CachingEngine", "RequestCache", "RequestEngine", "model_fingerprint", "request_key", "rolling_windows"]

# A shared prefix shorter than this is recomputed per input rather than run as its own batched forward.
MIN_SHARED_TOKENS = 16
# Rows x longest key length (cached prefix + segment) per batch, in token budgets.
CPU_TOKEN_BUDGET = 1024  # tokens per batch on a CPU (small batches stay in cache)
KV_BUDGET_FACTOR = 8

OnDone = Callable[[list[int], list], None]  # (indices of the requests a batch finished, their results)


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
    on_done: OnDone | None
    pbar: Any
    pending: dict[Tokens, list[torch.Tensor]]  # log-prob rows already computed in an input's ancestors
    known: Collection[int]  # requests not to compute (the caller has them)
    open: set[Tokens]  # inputs with a request to compute


class RequestEngine(TokenRequests):
    """Scores requests with a causal LM (`model(input_ids, ...)` -> `.logits [batch, pos, vocab]`).

    Args:
        model: a workbench or transformers GPT-NeoX causal LM (any model with that call signature works; one with
            `gpt_neox` and an output embedding runs the head only where needed). `generate_until` needs a
            workbench model (it runs `workbench.generation.generate`).
        tokenizer: defaults to `model.tokenizer`.
        batch_size: "auto" (token budget, halved on CUDA out-of-memory) or a fixed number of sequences.
        max_length: the context window, an int >= 1; default `model.config.max_position_embeddings` (lm-eval's
            choice).
        share_context_kv: run each token prefix shared by several inputs once and reuse its KV cache below it.
        progress: show tqdm progress bars.
        on_batch: called after every finished batch with the engine's `stats` (tests use it to interrupt a run).
        shard: `(rank, world_size)`: compute only every `world_size`-th top-level log-likelihood batch, from
            `rank` (a data-parallel run; see `sharded` and `workbench.evals.distributed`).
        cache, model_id: deprecated; `RequestEngine(..., cache=c)` returns `CachingEngine(RequestEngine(...), c)`.
    """

    def __new__(cls, *args: Any, cache: RequestCache | None = None, model_id: str | None = None, **kwargs: Any):
        # the former `RequestEngine(..., cache=c)`, which cached inside the engine, is now the wrapper around it
        if cache is None:
            return super().__new__(cls)
        warnings.warn("RequestEngine(..., cache=...) is deprecated: wrap the engine, "
                      "CachingEngine(RequestEngine(...), cache)", DeprecationWarning, stacklevel=2)
        return CachingEngine(cls(*args, **kwargs), cache, model_id)

    def __init__(
        self,
        model: torch.nn.Module,
        tokenizer: Any = None,
        *,
        batch_size: int | str = "auto",
        max_length: int | None = None,
        share_context_kv: bool = True,
        progress: bool = True,
        on_batch: Callable[[dict], None] | None = None,
        shard: tuple[int, int] | None = None,
        cache: RequestCache | None = None,  # deprecated: taken by __new__, never set here
        model_id: str | None = None,
    ) -> None:
        tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
        if tokenizer is None:
            raise ValueError("no tokenizer: pass tokenizer= or use a model loaded with workbench.load (model.tokenizer)")
        if not (batch_size == "auto" or (isinstance(batch_size, int) and batch_size > 0)):
            raise ValueError(f"batch_size must be 'auto' or a positive int, got {batch_size!r}")
        if max_length is not None and (isinstance(max_length, bool) or not isinstance(max_length, int)
                                       or max_length < 1):
            raise ValueError(f"max_length must be None (the model's max_position_embeddings) or an int >= 1, "
                             f"got {max_length!r}")
        if shard is not None and not 0 <= shard[0] < shard[1]:
            raise ValueError(f"shard must be (rank, world_size) with 0 <= rank < world_size, got {shard!r}")
        self.model = model.eval()
        self.tok = TokenizerAdapter(tokenizer)
        self.batch_size = batch_size
        cfg = getattr(model, "config", None)
        self._width = int(getattr(cfg, "hidden_size", 0) or 0)  # what workbench.threads sizes the work by
        self.max_length = max_length or int(getattr(cfg, "max_position_embeddings", 0) or 2048)
        self.device = next(model.parameters()).device
        eos, bos = self.tok.special_id("eos"), self.tok.special_id("bos")
        self.eot_id = eos if eos is not None else 0
        self.prefix_id = bos if bos is not None else self.eot_id
        self.share_context_kv = share_context_kv
        self.progress = progress
        self.on_batch = on_batch
        self.shard = shard
        # auto batching: a token budget per forward; on CUDA it starts high and halves on OOM
        # (CPU: small batches stay in cache; 1024 beat 4096 by 10-15% on the demo model's evals)
        self.token_budget = 32768 if self.device.type == "cuda" else CPU_TOKEN_BUDGET
        self.stats = {"computed": 0, "cached": 0, "truncated": 0, "forwards": 0, "batches": 0, "tokens": 0}
        self._body, self._head = _split(model)
        # a workbench body computes its last block only where scored (`keep_last`); transformers' can't
        self._keeps = self._body is not None and "keep_last" in inspect.signature(self._body.forward).parameters

    def sharded(self, rank: int, world_size: int) -> RequestEngine:
        """This engine with `shard=(rank, world_size)`: the same model, tokenizer, settings and `stats` counters."""
        view = copy.copy(self)
        view.shard = (rank, world_size)
        return view

    # ---------------------------------------------------------------- tokenisation (lm-eval's rules)
    def encode(self, text: str) -> list[int]:
        """Token ids of `text`, no special tokens added."""
        return self.tok.encode([text])[0]

    def encode_pairs(self, requests: Sequence[tuple[str, str]]) -> list[tuple[list[int], list[int]]]:
        """(context ids, continuation ids) per request, as lm-eval's `TemplateLM.loglikelihood` / `_encode_pair`
        make them: trailing context whitespace moves to the continuation, the continuation's ids are those of
        `context + continuation` after the context's. Every distinct string is tokenised once, in one batch; a
        continuation the tokeniser `splits` from its context is tokenised on its own (the same ids)."""
        split = []  # (context, continuation, had a context)
        for context, continuation in requests:
            n = len(context) - len(context.rstrip())
            split.append((context[:-n], context[-n:] + continuation, True) if n else (context, continuation, context != ""))
        alone = [has_context and self.tok.splits(ctx, cont) for ctx, cont, has_context in split]
        texts = list({t: None for (ctx, cont, _), a in zip(split, alone) for t in ((ctx, cont) if a else (ctx, ctx + cont))})
        ids = dict(zip(texts, self.tok.encode(texts)))
        pairs = []
        for (ctx, cont, has_context), cont_alone in zip(split, alone):
            if not has_context:  # condition on the prefix token (a leading prefix token is context itself)
                whole = ids[cont]
                if not whole:
                    raise ValueError("empty continuation with empty context: nothing to score")
                pairs.append(([self.prefix_id], whole) if whole[0] != self.prefix_id else (whole[:1], whole[1:]))
            else:
                pairs.append((ids[ctx], ids[cont] if cont_alone else ids[ctx + cont][len(ids[ctx]) :]))
        return pairs

    def encode_pair(self, context: str, continuation: str) -> tuple[list[int], list[int]]:
        """`encode_pairs` for one request."""
        return self.encode_pairs([(context, continuation)])[0]

    def check_pairs(self, pairs: Sequence[tuple[list[int], list[int]]]) -> None:
        """Refuse unscorable token pairs; count those left-truncated to the window in `stats["truncated"]`."""
        L = self.max_length
        for i, (ctx, cont) in enumerate(pairs):
            if not ctx or not cont:
                raise ValueError(f"request {i}: empty {'context' if not ctx else 'continuation'} tokens")
            if len(cont) > L:
                raise ValueError(f"request {i}: continuation of {len(cont)} tokens exceeds the window of {L}")
            if len(ctx) + len(cont) > L + 1:
                self.stats["truncated"] += 1

    # ---------------------------------------------------------------- log-likelihoods
    def loglikelihood_tokens(
        self,
        pairs: Sequence[tuple[list[int], list[int]]],
        desc: str = "loglikelihood",
        on_done: OnDone | None = None,
        known: Collection[int] = frozenset(),
    ) -> list[tuple[float, bool] | None]:
        """`loglikelihood` on already tokenised `(context ids, continuation ids)` pairs (context non-empty).

        Args:
            pairs: the requests.
            desc: progress bar label.
            on_done: called after every batch with the indices (into `pairs`) it finished and their results.
            known: indices of requests the caller already has (a resumed run's cached ones). The batches are those
                of all `pairs`; a batch whose requests are all known (with everything below it) is skipped, the
                others run whole, so every result is bitwise what a run without `known` gives.

        Returns:
            `(logprob, is_greedy)` per pair; None for the known pairs and, with `shard`, for other ranks' batches.
        """
        self.check_pairs(pairs)
        results: list[tuple[float, bool] | None] = [None] * len(pairs)
        if not pairs:
            return results
        L = self.max_length
        # unique model inputs: identical inputs (one-token answers to one context) share one forward
        inputs: dict[Tokens, list[int]] = {}
        for i, (ctx, cont) in enumerate(pairs):
            inputs.setdefault(tuple((ctx + cont)[-(L + 1) :][:-1]), []).append(i)
        # log-probabilities are needed at each input's last n positions (n = its longest continuation)
        need = {inp: max(len(pairs[i][1]) for i in reqs) for inp, reqs in inputs.items()}
        sharing = self.share_context_kv and self._head is not None
        forest = build_prefix_forest(inputs, MIN_SHARED_TOKENS if sharing else L + 1)
        open_inputs = {x for x, reqs in inputs.items() if any(i not in known for i in reqs)}
        pbar = tqdm(total=len(pairs) - len(known), desc=desc, unit="req", disable=not self.progress,
                    dynamic_ncols=True)
        run = _Run(pairs, inputs, need, results, on_done, pbar, pending={}, known=known, open=open_inputs)
        try:
            with torch.inference_mode():
                self._run_nodes([(node, 0) for node in forest], None, run)
        finally:
            pbar.close()
        return results

    def _run_nodes(self, nodes: list[tuple[PrefixNode, int]], parent: _Prefix | None, run: _Run) -> None:
        """Run `(node, row of its parent in the parent's batch)` pairs in batches, longest segment first."""
        nodes = sorted(nodes, key=lambda nr: (-len(nr[0].tokens), nr[0].tokens))
        batches = self._batches(nodes, lambda nr: len(nr[0].tokens), kv=lambda nr: nr[0].stop)
        for batch in self._share(batches) if parent is None else batches:  # a subtree stays with its root
            if not any(x in run.open for node, _ in batch for x in node.inputs):
                continue  # nothing to compute in it or below
            below: list[tuple[list, _Prefix]] = []  # one entry per forward (more if out of memory split the batch)
            self._run_with_retry(lambda b: below.append(self._forward_nodes(b, parent, run)), batch)
            for children, prefix in below:  # outside the retry: a child's failure must not rerun its parents
                if children:
                    self._run_nodes(children, prefix, run)

    def _share(self, batches: Iterable[list]) -> Iterable[list]:
        """The top-level batches this engine runs: all, or with `shard=(rank, world)` every world-th from rank."""
        if self.shard is None:
            return batches
        rank, world = self.shard
        return (batch for i, batch in enumerate(batches) if i % world == rank)

    def _forward_nodes(
        self, batch: list[tuple[PrefixNode, int]], parent: _Prefix | None, run: _Run
    ) -> tuple[list[tuple[PrefixNode, int]], _Prefix]:
        """One forward over the batch's segments (right-padded) on top of their parents' KV caches.

        Returns:
            The children as `(node, row in this batch)` and this batch's cache and key mask for them.
        """
        dev = self.device
        ids, seg_mask = _padded([node.tokens for node, _ in batch], self.eot_id, left=False)
        has_children = any(node.children for node, _ in batch)
        wanted = _wanted_positions(batch, run)
        # the body's last block runs only from the first scored position on (none: only its keys and values)
        keep = {"keep_last": ids.shape[1] - min((o for _, o in wanted), default=ids.shape[1])} if self._keeps else {}
        # threads by this batch's size and the machine's load now (workbench.threads), its head included
        with forward_threads(self._width, ids.numel(), dev):
            if parent is None:
                # right padding needs no mask here: causal attention never looks at later (pad) positions
                mask = seg_mask
                h, out = self._hidden(ids.to(dev), use_cache=has_children, **keep)
            else:
                rows = torch.tensor([p for _, p in batch])
                mask = torch.cat([parent.mask[rows], seg_mask], dim=1)  # parents' pads stay masked
                pos = torch.tensor([node.start for node, _ in batch])[:, None] + torch.arange(ids.shape[1])[None]
                h, out = self._hidden(ids.to(dev), attention_mask=mask.to(dev), position_ids=pos.to(dev),
                                      past_key_values=_select_cache(parent.cache, rows.to(dev)), use_cache=True,
                                      **keep)  # fmt: skip
            self.stats["tokens"] += int(seg_mask.sum())
            self._score_batch(batch, h, ids.shape[1] - h.shape[1], wanted, run)
            children = [(child, r) for r, (node, _) in enumerate(batch) for child in node.children]
            return children, _Prefix(out.past_key_values if children else None, mask)

    def _score_batch(self, batch: list[tuple[PrefixNode, int]], h: torch.Tensor, first: int,
                     wanted: dict[tuple[int, int], int], run: _Run) -> None:
        """Log-probs at the batch's `wanted` positions (one head call on `h` [rows, pos, d], which starts at
        offset `first` of the segments), kept for the inputs that continue below; the requests of the inputs
        that end here are scored."""
        if wanted:
            at = torch.tensor(list(wanted), device=h.device)  # [n, 2]
            logp = self._logprobs(h[at[:, 0], at[:, 1] - first])  # [n, vocab]
        done: list[int] = []
        for r, (node, _) in enumerate(batch):
            for x in run.open.intersection(node.inputs):
                span = _needed_positions(node, x, run.need[x])
                if len(span):
                    run.pending.setdefault(x, []).append(logp[[wanted[(r, p - node.start)] for p in span]])
            if node.ends in run.open:  # all of this input's positions are done: score its requests
                reqs = [i for i in run.inputs[node.ends] if i not in run.known]
                self._finish(torch.cat(run.pending.pop(node.ends)), reqs, run.pairs, run.results)
                done += reqs
        self._commit(done, run.results, run.on_done, run.pbar)

    def _commit(self, done: list[int], results: list, on_done: OnDone | None, pbar: Any) -> None:
        """Count a finished batch and report it (`on_done`, then `on_batch`)."""
        self.stats["computed"] += len(done)
        self.stats["batches"] += 1
        if done:  # update(0) redraws the bar: each bar printed its 0% line twice (a forward finishing no request)
            pbar.update(len(done))
        if on_done is not None:
            on_done(done, [results[i] for i in done])
        if self.on_batch is not None:
            self.on_batch(dict(self.stats))

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
    def generate_until(
        self,
        requests: Sequence[tuple[str, dict]],
        desc: str = "generate_until",
        on_done: OnDone | None = None,
        known: Collection[int] = frozenset(),
    ) -> list[str]:
        """Continuation of each context until a stop string, EOS or `max_gen_toks` tokens.

        Greedy unless the request's arguments say `do_sample: true` (then `temperature`, `top_p`, `top_k` apply,
        seeded by the request's `seed`, default 1234, plus the batch's index: a rerun repeats every sample).

        Args:
            requests: `(context, {"until": [...], "max_gen_toks": n, ...})`, lm-eval's generation arguments
                (`workbench.evals.generation_kwargs.normalize`); lm-eval's defaults (256 tokens, EOS).
            desc: progress bar label.
            on_done: called after every batch with the indices (into `requests`) it finished and their texts.
            known: indices the caller already has: batches of known requests only are skipped, the others run
                whole (as in `loglikelihood_tokens`).

        Returns:
            The generated text, cut before the first stop string; None for the known requests.
        """
        out: list[str | None] = [None] * len(requests)
        enc = self.tok.encode([ctx for ctx, _ in requests])
        # one batch per set of generation arguments, longest contexts first
        by_kw: dict[str, list[int]] = {}
        for i in sorted(range(len(requests)), key=lambda i: (-len(enc[i]), requests[i][0])):
            by_kw.setdefault(json.dumps(normalize_generation(requests[i][1]), sort_keys=True), []).append(i)
        bs = self.batch_size if self.batch_size != "auto" else max(1, self.token_budget // max(1, self.max_length))
        pbar = tqdm(total=len(requests) - len(known), desc=desc, unit="req", disable=not self.progress,
                    dynamic_ncols=True)
        for kwjson, idx in by_kw.items():
            kw = json.loads(kwjson)
            max_gen = kw["max_gen_toks"]
            self.stats["truncated"] += sum(len(enc[i]) > self.max_length - max_gen for i in idx)  # known ones too
            for s in range(0, len(idx), bs):
                chunk = idx[s : s + bs]
                todo = [i for i in chunk if i not in known]
                if not todo:
                    continue
                for i, text in zip(chunk, self._generate([enc[i] for i in chunk], kw, s // bs)):
                    out[i] = text if i not in known else None
                self._commit(todo, out, on_done, pbar)
        pbar.close()
        return out  # type: ignore[return-value]

    def _generate(self, contexts: list[list[int]], kw: dict[str, Any], batch_index: int) -> list[str]:
        """Continuations of token `contexts` (left-truncated to leave room for `max_gen_toks` tokens) under the
        normalised generation arguments `kw`; a sampled batch is seeded with `kw["seed"]` + `batch_index`."""
        kw = dict(kw)
        until, max_gen = kw.pop("until"), kw.pop("max_gen_toks")
        if kw.get("do_sample"):
            kw["seed"] = (kw.get("seed", 1234) + batch_index) % 2**64  # a torch seed is a uint64
        max_ctx = self.max_length - max_gen
        if max_ctx <= 0:
            raise ValueError(f"max_gen_toks={max_gen} leaves no room for context in a window of {self.max_length}")
        ids, mask = _padded([c[-max_ctx:] for c in contexts], self.eot_id, left=True)
        out = generate(self.model, ids.to(self.device), attention_mask=mask.to(self.device), max_new_tokens=max_gen,
                       eos_token_id=self.eot_id, pad_token_id=self.eot_id, stop_strings=until, tokenizer=self.tok,
                       **kw)
        new = out[:, ids.shape[1] :]
        self.stats["forwards"] += new.shape[1]
        return [cut_at_stop(self.tok.decode(row), until) for row in new.tolist()]


def _padded(rows: Sequence[Sequence[int]], pad_id: int, left: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Token rows padded to the longest with `pad_id` on the left or right: ids and mask `[rows, longest]`."""
    T = max(len(r) for r in rows)
    ids = torch.full((len(rows), T), pad_id, dtype=torch.long)
    mask = torch.zeros(len(rows), T, dtype=torch.long)
    for i, r in enumerate(rows):
        span = slice(T - len(r), T) if left else slice(0, len(r))
        ids[i, span] = torch.tensor(r, dtype=torch.long)
        mask[i, span] = 1
    return ids, mask


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


def _wanted_positions(batch: list[tuple[PrefixNode, int]], run: _Run) -> dict[tuple[int, int], int]:
    """(row, offset in its segment) of every position a batch scores -> its row in the batch's log-probs."""
    wanted: dict[tuple[int, int], int] = {}
    for r, (node, _) in enumerate(batch):
        for x in node.inputs:
            for p in _needed_positions(node, x, run.need[x]):
                wanted.setdefault((r, p - node.start), len(wanted))
    return wanted


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
