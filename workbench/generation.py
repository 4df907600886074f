"""Text generation: one prefill over the (left-padded) prompts, then one decode step per new token.

Each step's logits go through transformers' logits processors in transformers' order (`_get_logits_processor`):
repetition penalty, no-repeat n-grams, min new tokens; then, when sampling, temperature, top-k and top-p. So
greedy decoding matches transformers' `generate` token for token, with or without them, and sampling is
reproducible with `seed`. A row stops at `max_new_tokens`, at an EOS id, or once its decoded continuation
contains a stop string (lm-eval's `until`); text output is cut before the stop string, as lm-eval cuts it.
A `streamer` (transformers' protocol: `put(ids)`, `end()`) sees the prompt, then each step's tokens.
Decode steps run `workbench.fast_decode.DecodeStep` (preallocated buffers, oneDNN products) when nothing
observes the model, the full hooked forward otherwise; the tokens are the same.

Arguments are checked before anything runs: a bad one raises a ValueError naming it, its value and what is
allowed (`max_new_tokens=2.5`, an EOS id outside the vocabulary, an empty prompt in a batch ...). Generating past
`config.max_position_embeddings` is allowed, as in transformers (rotary positions extend, the model was just
never trained there), with one `UserWarning` (transformers logs a once-per-process warning there).
"""

from __future__ import annotations

import contextlib
import numbers
import operator
import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Sequence, TextIO

import torch
from tqdm.auto import tqdm

from .fast_decode import DecodeStep, same_bits_on_threads
from .inputs import as_token_batch, encode_texts, is_text
from .kv_cache import KVCache
from .threads import forward_threads, pinned_threads, threads_for


def generate(
    model,
    inputs: torch.Tensor | str | Sequence[str] | None = None,
    attention_mask: torch.Tensor | None = None,
    max_length: int | None = None,
    max_new_tokens: int | None = None,
    do_sample: bool = False,
    temperature: float = 1.0,
    top_k: int | None = None,
    top_p: float | None = None,
    eos_token_id: int | Sequence[int] | None = None,
    pad_token_id: int | None = None,
    seed: int | None = None,
    fwd_hooks: list | None = None,
    return_full_text: bool = True,
    progress: bool = False,
    input_ids: torch.Tensor | None = None,
    stop_strings: Sequence[str] | None = None,
    tokenizer: Any = None,
    repetition_penalty: float = 1.0,
    no_repeat_ngram_size: int = 0,
    min_new_tokens: int = 0,
    streamer: Any = None,
) -> torch.Tensor | str | list[str]:
    """Continue prompts with a causal LM.

    Args:
        model: a `GPTNeoXForCausalLM` (with `model.tokenizer` for string prompts).
        inputs: token ids `[batch, pos]` (left-padded, with `attention_mask`), a string, or a list of strings;
            every prompt needs at least one token.
        max_length: total length (prompt + new tokens); `max_new_tokens` counts new tokens only (default 20).
            Both are positive ints; past `config.max_position_embeddings` generation goes on with a warning.
        do_sample, temperature, top_k, top_p: sampling controls; greedy when `do_sample` is False. No top-k
            unless given (transformers' GenerationConfig samples with top_k=50 by default).
        eos_token_id: stop a row once it emits this id, or any of a list (default `config.eos_token_id`); later
            positions get `pad_token_id` (default: config's, the tokenizer's, else the EOS id). Ids must lie in
            `[0, config.vocab_size)`.
        seed: seeds a private generator, so sampling is reproducible and leaves torch's global RNG alone.
        fwd_hooks: `[(hook_name_or_predicate, fn)]` active for every step (see `workbench.hooks`).
        return_full_text: for string prompts, return prompt + continuation (True) or the continuation only.
        stop_strings: a str or a list of them: stop a row once its decoded continuation contains one (later
            positions get `pad_token_id`); string output is cut before the first one (`cut_at_stop`).
        tokenizer: tokenises string prompts and decodes continuations (default `model.tokenizer`); anything with
            `decode(ids, skip_special_tokens=True)` serves for token-id prompts.
        repetition_penalty: > 0; the logits of tokens already in the row (prompt without padding, and generated)
            are divided by it where positive, multiplied where negative (CTRL's penalty; 1.0: off).
        no_repeat_ngram_size: n > 0 forbids any n-gram from occurring twice in a row (0: off).
        min_new_tokens: EOS is forbidden until this many tokens are generated (at most the new-token count).
        streamer: an object with `put(ids)` and `end()` (`TextStreamer` below, or transformers' streamers):
            `put` gets the prompt ids `[batch, pos]`, then each step's tokens `[batch]`, on the CPU.

    Returns:
        Token ids `[batch, prompt + new]` for tensor input; a string (or list of strings) for string input.
    """
    if input_ids is not None:
        if inputs is not None:
            raise ValueError("pass the prompt once: either inputs or input_ids")
        inputs = input_ids
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    ids, mask = _prompt_tensors(model, tokenizer, inputs, attention_mask)
    prompt_len = ids.shape[1]
    new_tokens = _count_new_tokens(max_length, max_new_tokens, prompt_len)
    vocab = model.config.vocab_size
    eos_name = "eos_token_id" if eos_token_id is not None else "model.config.eos_token_id"
    eos_ids = _token_ids(eos_token_id if eos_token_id is not None else model.config.eos_token_id, eos_name, vocab)
    pad_id = _pad_id(model, tokenizer, pad_token_id, eos_ids)
    stops = _stop_strings(stop_strings)
    if stops and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode with: pass tokenizer= or use model.tokenizer")
    if streamer is not None and not all(callable(getattr(streamer, m, None)) for m in ("put", "end")):
        raise TypeError(f"streamer must have put(token_ids) and end() methods, got {type(streamer).__name__}")
    decoding = _Decoding.build(do_sample, temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size,
                               min_new_tokens, new_tokens, eos_ids, seed, ids.device)
    hooks = model.hooks(fwd_hooks=fwd_hooks) if fwd_hooks else contextlib.nullcontext()
    with torch.no_grad(), hooks:
        out = _decode_loop(model, ids, mask, new_tokens, decoding, pad_id, stops, tokenizer, streamer, progress)
    if not is_text(inputs):
        return out
    texts = _texts(tokenizer, out, prompt_len, stops, return_full_text)
    return texts[0] if isinstance(inputs, str) else texts


def _decode_loop(model, ids: torch.Tensor, mask: torch.Tensor, new_tokens: int, decoding: "_Decoding", pad_id: int,
                 stops: list[str], tokenizer: Any, streamer: Any, progress: bool) -> torch.Tensor:
    """Prefill, then one token per step until every row has finished. Returns ids `[batch, prompt + new]`.

    The prefill is the model's own forward; later steps run `DecodeStep` when nothing observes the model (the
    hooked forward otherwise). Buffers are allocated once: the output ids, the KV cache and the padding mask.
    The prefill and the decode steps each run on `workbench.threads.forward_threads`'s thread count for their
    size (one thread for small work unless pinned).
    """
    batch, prompt_len = ids.shape
    total = prompt_len + new_tokens
    cache = KVCache.for_config(model.config).reserve(total)
    out = ids.new_full((batch, total), pad_id)  # preallocated: no per-step concatenation
    out[:, :prompt_len] = ids
    masks = mask.new_ones(batch, total)  # step views of one buffer, not a growing concatenation
    masks[:, :prompt_len] = mask
    key_mask = None if bool(mask.all()) else masks.bool()  # the fast step's padding mask, or None: no padding
    positions = mask.sum(dim=-1)  # [batch] rotary position of each row's next token (padding not counted)
    seen = decoding.seen_tokens(ids, mask, model.config.vocab_size)
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    if streamer is not None:
        streamer.put(ids.cpu())
    limit = model.config.max_position_embeddings
    warn_at = max(limit + 1, prompt_len)  # the length at which a forward first runs at position `limit`
    fast = None

    def logits_after(step_ids: torch.Tensor, cur: int) -> torch.Tensor:
        """Next-token logits `[batch, vocab]` after feeding `step_ids` `[batch, new]`, with `cur` tokens known."""
        if cur == warn_at:
            warnings.warn(f"generation has exceeded the model's max_position_embeddings ({limit}): rotary positions "
                          "continue, but the model was never trained there; expect degraded text (transformers "
                          "warns the same)", UserWarning, stacklevel=4)
        if fast is not None:
            logits = fast(step_ids[:, 0], positions, cache, None if key_mask is None else key_mask[:, :cur])
            positions.add_(1)
            return logits
        hidden = model.gpt_neox(step_ids, attention_mask=masks[:, :cur], past_key_values=cache, use_cache=True)
        return model.embed_out(hidden.last_hidden_state[:, -1]).float()

    # Threads (workbench.threads) are set once for the prefill and once for all decode steps: switching them at
    # every step cost a third of the tokens/s here.
    with forward_threads(model.config.hidden_size, ids.numel(), ids.device):
        logits = logits_after(ids, prompt_len)
    cur = prompt_len
    step_kernels = DecodeStep.for_model(model, batch) if new_tokens > 1 else None
    with forward_threads(model.config.hidden_size, batch, ids.device,
                         threads=_decode_threads(model, step_kernels, batch, ids.device)):
        fast = step_kernels
        for step in tqdm(range(new_tokens), desc="generate", disable=not progress):
            if step > 0:
                logits = logits_after(token[:, None], cur)
            token = decoding.next_token(logits, out[:, :cur], seen, step)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            out[:, cur] = token
            cur += 1
            if seen is not None:
                seen.scatter_(1, token[:, None].clamp(max=seen.shape[1] - 1), True)
            if streamer is not None:
                streamer.put(token.cpu())
            finished |= torch.isin(token, decoding.eos)
            if stops:
                finished |= _stopped(tokenizer, out[:, prompt_len:cur], ~finished, stops)
            if bool(finished.all()):
                break
    if streamer is not None:
        streamer.end()
    return out[:, :cur]


def _decode_threads(model, step: DecodeStep | None, batch: int, device: torch.device) -> int | None:
    """The decode steps' CPU thread count (None off the CPU): the policy's (`workbench.threads.threads_for`), and
    for fast steps that give the same bits on the load-following count as on one thread (`same_bits_on_threads`),
    that count: torch's setting capped at the cores other processes leave free, whatever the model's width."""
    if device.type != "cpu":
        return None
    hidden = model.config.hidden_size
    fixed = threads_for(hidden, batch)
    follow = threads_for(hidden, batch, same_bits_any_count=step is not None)
    if follow == fixed or pinned_threads() is not None:
        return follow
    # the load would change the count: only where both counts give one thread's bits
    same = all(same_bits_on_threads(step, batch, n) for n in {fixed, follow} - {1})
    return follow if same else fixed


@dataclass(frozen=True)
class _Decoding:
    """How one step picks each row's next token: transformers' logits processors, in transformers' order."""

    do_sample: bool
    temperature: float
    top_k: int | None
    top_p: float | None
    repetition_penalty: float
    no_repeat_ngram_size: int
    min_new_tokens: int
    eos: torch.Tensor  # [n_eos] ids
    generator: torch.Generator | None

    @classmethod
    def build(cls, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None,
              repetition_penalty: float, no_repeat_ngram_size: int, min_new_tokens: int, new_tokens: int,
              eos_ids: list[int], seed: int | None, device: torch.device) -> "_Decoding":
        """Checked settings (a ValueError names the argument and its allowed range)."""
        if not isinstance(do_sample, bool):
            raise ValueError(f"do_sample must be True or False, got {do_sample!r}")
        temperature = _real_arg(temperature, "temperature", "> 0", lambda x: x > 0)
        top_k = None if top_k is None else _int_arg(top_k, "top_k", "a positive integer or None", 1)
        top_p = None if top_p is None else _real_arg(top_p, "top_p", "in (0, 1]", lambda x: 0 < x <= 1)
        repetition_penalty = _real_arg(repetition_penalty, "repetition_penalty", "a number > 0 (1.0: no penalty)",
                                       lambda x: x > 0)
        no_repeat_ngram_size = _int_arg(no_repeat_ngram_size, "no_repeat_ngram_size",
                                        "a non-negative integer (0: off)", 0)
        min_new_tokens = _int_arg(min_new_tokens, "min_new_tokens",
                                  f"an integer in [0, {new_tokens}] (the new-token count)", 0, new_tokens)
        if seed is not None:
            seed = _int_arg(seed, "seed", "an int in [0, 2**64) or None", 0, 2**64 - 1)
        generator = torch.Generator(device=device).manual_seed(seed) if seed is not None else None
        return cls(do_sample, temperature, top_k, top_p, repetition_penalty, no_repeat_ngram_size,
                   min_new_tokens, torch.tensor(eos_ids, dtype=torch.long, device=device), generator)

    def seen_tokens(self, ids: torch.Tensor, mask: torch.Tensor, vocab: int) -> torch.Tensor | None:
        """For the repetition penalty: `[batch, vocab + 1]` whether each token is in the row's prompt (padding
        excluded, as transformers' `prompt_ignore_length` does; ids past the vocab land in the spare column);
        the loop adds each generated token. None when there is no penalty."""
        if self.repetition_penalty == 1.0:
            return None
        seen = torch.zeros(ids.shape[0], vocab + 1, dtype=torch.bool, device=ids.device)
        return seen.scatter_(1, ids.clamp(max=vocab).masked_fill(mask == 0, vocab), True)

    def next_token(self, logits: torch.Tensor, ids: torch.Tensor, seen: torch.Tensor | None, step: int) -> torch.Tensor:
        """The next token `[batch]` from `logits` `[batch, vocab]`, given the rows so far `ids` `[batch, pos]`
        (padding included, as transformers' n-gram processor sees them) and the 0-based new-token `step`."""
        if seen is not None:
            logits = _penalise_repeats(logits, seen[:, : logits.shape[-1]], self.repetition_penalty)
        if self.no_repeat_ngram_size:
            logits = _ban_repeated_ngrams(logits, ids, self.no_repeat_ngram_size)
        if step < self.min_new_tokens and self.eos.numel():
            logits = logits.index_fill(-1, self.eos, float("-inf"))
        if seen is not None or self.no_repeat_ngram_size or step < self.min_new_tokens:
            _check_some_allowed(logits, step)
        if not self.do_sample:
            return logits.argmax(dim=-1)
        probs = torch.softmax(_warp(logits, self.temperature, self.top_k, self.top_p), dim=-1)
        return torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)


def _penalise_repeats(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """CTRL's repetition penalty on `[batch, vocab]` logits where `seen` `[batch, vocab]`: a seen token's logit
    is divided by `penalty` if positive, multiplied if negative (so it always becomes less likely for penalty > 1)."""
    return torch.where(seen, torch.where(logits < 0, logits * penalty, logits / penalty), logits)


def _ban_repeated_ngrams(logits: torch.Tensor, ids: torch.Tensor, n: int) -> torch.Tensor:
    """-inf for each token that would complete an n-gram already in the row.

    A token completes a repeat when the row's last n-1 tokens occurred before followed by it: match that suffix
    against every window of `ids` `[batch, pos]` and ban each matching window's last token (transformers' method).
    """
    if ids.shape[1] < n:
        return logits
    vocab = logits.shape[-1]
    windows = ids.unfold(1, n, 1)  # [batch, pos - n + 1, n]
    suffix = ids[:, ids.shape[1] + 1 - n :]  # [batch, n - 1]; the window starting there is one token short
    matches = (windows[..., :-1] == suffix[:, None]).all(dim=-1)
    banned = logits.new_zeros(logits.shape[0], vocab + 1, dtype=torch.bool)  # spare column: non-matches
    banned.scatter_(1, torch.where(matches, windows[..., -1].clamp(max=vocab), vocab), True)
    return logits.masked_fill(banned[:, :vocab], float("-inf"))


def _check_some_allowed(logits: torch.Tensor, step: int) -> None:
    """ValueError naming the first row of `[batch, vocab]` logits in which the processors banned every token."""
    stuck = (logits.amax(dim=-1) == float("-inf")).nonzero().flatten().tolist()
    if stuck:
        raise ValueError(f"at new token {step}, row {stuck[0]} has no allowed token left: no_repeat_ngram_size, "
                         "min_new_tokens (EOS ids) and repetition_penalty together ban the whole vocabulary")


def _warp(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering of `[batch, vocab]` logits.

    Extreme temperatures stay finite: an overflow to +inf (tiny temperature) becomes the largest float, and
    -inf / inf (infinite temperature on a banned token) stays -inf, so the probabilities never turn NaN.
    """
    logits = torch.nan_to_num(logits / temperature, nan=float("-inf"), posinf=torch.finfo(logits.dtype).max)
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


class TextStreamer:
    """Prints the text of a batch-1 generation as its tokens arrive (transformers' streamer protocol, so it
    needs no transformers; `transformers.TextStreamer` works with `generate` too).

    The first `put` is the prompt; each later one a step's token. Text is printed as soon as it is final: not
    the end of a multi-byte character still being built, and, with `stop_strings`, nothing that could be the
    start of a stop string; the continuation is cut before the first stop string, as `generate` cuts text. So
    what it prints is `generate`'s text output (then a newline).

    Args:
        tokenizer: anything with `decode(ids, skip_special_tokens=True)`.
        skip_prompt: print only the continuation.
        stop_strings: the `stop_strings` given to `generate`.
        file: where to print (default: `sys.stdout` at the time of printing).
    """

    def __init__(self, tokenizer: Any, skip_prompt: bool = False, stop_strings: Sequence[str] = (),
                 file: TextIO | None = None) -> None:
        self.tokenizer, self.skip_prompt, self.file = tokenizer, skip_prompt, file
        self.stops = [s for s in stop_strings if s]
        self._reset()

    def _reset(self) -> None:
        self._prompt_done, self._ids, self._printed, self._stopped = False, [], 0, False

    def put(self, value: torch.Tensor) -> None:
        """The prompt ids `[1, pos]` (first call), then one step's token `[1]`."""
        if value.dim() > 1 and value.shape[0] > 1:
            raise ValueError(f"TextStreamer streams one sequence; got a batch of {value.shape[0]}")
        ids = value.reshape(-1).tolist()
        if not self._prompt_done:
            self._prompt_done = True
            if not self.skip_prompt:
                self._write(self.tokenizer.decode(ids, skip_special_tokens=True))
        elif not self._stopped:
            self._ids += ids
            self._print_upto(self._final_text(last=False))

    def end(self) -> None:
        """Print what is left, then a newline."""
        self._print_upto(self._final_text(last=True))
        self._write("\n")
        self._reset()

    def _final_text(self, last: bool) -> str:
        """The continuation's text that can no longer change (all of it when `last`)."""
        text = self.tokenizer.decode(self._ids, skip_special_tokens=True)
        cut = cut_at_stop(text, self.stops)
        if cut != text:
            self._stopped = True
            return cut
        if last:
            return text
        text = text.rstrip("\ufffd")  # the end of a multi-byte character may be still to come
        hold = max((k for s in self.stops for k in range(1, len(s)) if text.endswith(s[:k])), default=0)
        return text[: len(text) - hold]  # what is held back could begin a stop string

    def _print_upto(self, text: str) -> None:
        self._write(text[self._printed :])
        self._printed = max(self._printed, len(text))

    def _write(self, text: str) -> None:
        if text:
            file = self.file or sys.stdout
            file.write(text)
            file.flush()


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first occurrence of any (non-empty) stop string, as lm-eval cuts a generation."""
    for s in stop_strings:
        if s:
            text = text.split(s)[0]
    return text


def _stopped(tokenizer, new: torch.Tensor, active: torch.Tensor, stops: list[str]) -> torch.Tensor:
    """Rows among `active` whose continuation now contains a stop string.

    Only the newest tokens are decoded (lm-eval's stopping criterion does the same): a stop string first seen
    after this step ends in the newest token, and every token decodes to at least one byte, so it lies within the
    last `len(stop in UTF-8)` tokens. (A special token, decoded to nothing, inside that span can delay the stop;
    text output is cut at the first stop string all the same.)

    Args:
        new: the generated tokens so far `[batch, new]`.
        active: `[batch]` rows still generating.
    """
    window = max(len(s.encode("utf-8")) for s in stops)
    hits = []
    for alive, tail in zip(active.tolist(), new[:, -window:].tolist()):
        text = tokenizer.decode(tail, skip_special_tokens=True) if alive else ""
        hits.append(any(s in text for s in stops))
    return torch.tensor(hits, device=active.device)


def _texts(tokenizer, out: torch.Tensor, prompt_len: int, stops: list[str], full: bool) -> list[str]:
    """Decoded rows of `out` `[batch, prompt + new]`; with stop strings, each continuation cut before them."""
    if not stops:
        return tokenizer.batch_decode(out if full else out[:, prompt_len:], skip_special_tokens=True)
    texts = [cut_at_stop(t, stops) for t in tokenizer.batch_decode(out[:, prompt_len:], skip_special_tokens=True)]
    if full:
        texts = [p + t for p, t in zip(tokenizer.batch_decode(out[:, :prompt_len], skip_special_tokens=True), texts)]
    return texts


def _prompt_tensors(model, tokenizer, inputs, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask `[batch, pos]` on the model's device; strings are tokenised with left padding.

    Raises:
        ValueError: a row without any token (it would generate from padding alone), or right padding.
    """
    if is_text(inputs):
        if tokenizer is None:
            raise ValueError("string prompts need model.tokenizer; load with workbench.load() or pass token ids")
        ids, mask = encode_texts(tokenizer, inputs, padding_side="left", device=model.device)
    else:
        ids, mask = as_token_batch(model, inputs, attention_mask)
        mask = torch.ones_like(ids) if mask is None else mask
    empty = (mask.sum(dim=-1) == 0).nonzero().flatten().tolist()
    if empty:
        row = empty[0]
        text = "" if not is_text(inputs) else f" {inputs if isinstance(inputs, str) else inputs[row]!r}"
        raise ValueError(f"prompt {row}{text} has no tokens (rows {empty[:10]} are empty or all padding); "
                         "every prompt needs at least one token")
    if bool((mask[:, -1] == 0).any()):
        raise ValueError("prompts are right-padded; generation appends on the right, so pad on the left")
    return ids, mask


def _count_new_tokens(max_length: int | None, max_new_tokens: int | None, prompt_len: int) -> int:
    """The number of new tokens: `max_new_tokens` (default 20), or `max_length` less the prompt."""
    if max_new_tokens is not None and max_length is not None:
        raise ValueError("give max_new_tokens or max_length, not both")
    if max_new_tokens is not None:
        return _int_arg(max_new_tokens, "max_new_tokens", "a positive int", 1)
    if max_length is None:
        return 20
    new_tokens = _int_arg(max_length, "max_length", "a positive int", 1) - prompt_len
    if new_tokens < 1:
        raise ValueError(f"nothing to generate: max_length={max_length} but the prompt has {prompt_len} tokens")
    return new_tokens


def _int_arg(value: Any, name: str, allowed: str, low: int, high: int | None = None) -> int:
    """`value` as an int in [low, high] (any integer type; not bool, not a float such as 2.0 or 2.5), else a
    ValueError `"{name} must be {allowed}, got {value!r}"`."""
    try:
        if isinstance(value, bool):
            raise TypeError
        number = operator.index(value)
    except TypeError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def _real_arg(value: Any, name: str, allowed: str, ok: Callable[[float], bool]) -> float:
    """`value` as a float (a real number, not bool or NaN) for which `ok(value)` holds, else a ValueError."""
    try:
        number = float(value) if isinstance(value, numbers.Real) and not isinstance(value, bool) else None
    except OverflowError:  # an int too large for a float
        number = None
    if number is None or not ok(number):
        raise ValueError(f"{name} must be {allowed}, got {value!r}")
    return number


def _token_ids(value: Any, name: str, vocab: int) -> list[int]:
    """None, an id or a sequence of ids (list, tuple, 1-D tensor) -> ids, each checked to be in [0, vocab)."""
    if value is None:
        return []
    items = value.tolist() if hasattr(value, "tolist") else value  # tensors, arrays, numpy scalars
    items = list(items) if isinstance(items, (list, tuple)) else [items]
    allowed = f"an int in [0, {vocab}) (the vocabulary) or a list of them"
    return [_int_arg(i, name, allowed, 0, vocab - 1) for i in items]


def _stop_strings(stop_strings: Any) -> list[str]:
    """None, one string or a sequence of strings -> the non-empty stop strings."""
    if stop_strings is None:
        return []
    items = [stop_strings] if isinstance(stop_strings, str) else stop_strings
    if not isinstance(items, (list, tuple)) or not all(isinstance(s, str) for s in items):
        raise ValueError(f"stop_strings must be a str or a list of str, got {stop_strings!r}")
    return [s for s in items if s]


def _pad_id(model, tokenizer, pad_token_id: int | None, eos_ids: list[int]) -> int:
    """`pad_token_id`, else the config's, else the tokenizer's (checked to be in the vocabulary), else the first
    EOS id, else 0."""
    vocab = model.config.vocab_size
    sources = (("pad_token_id", pad_token_id), ("model.config.pad_token_id", model.config.pad_token_id),
               ("tokenizer.pad_token_id", getattr(tokenizer, "pad_token_id", None)))
    for name, candidate in sources:
        if candidate is not None:
            return _int_arg(candidate, name, f"an int in [0, {vocab}) (the vocabulary)", 0, vocab - 1)
    return eos_ids[0] if eos_ids else 0
