"""Text generation: one prefill over the (left-padded) prompts, then one decode step per new token.

Greedy decoding matches transformers' `generate` token for token; sampling (temperature, top-k, top-p,
applied in that order, as transformers does) is reproducible with `seed`. A row stops at `max_new_tokens`, at an
EOS id, or once its decoded continuation contains a stop string (lm-eval's `until`); text output is cut before
the stop string, as lm-eval cuts it.
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import torch
from tqdm.auto import tqdm

from .kv_cache import KVCache


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
) -> torch.Tensor | str | list[str]:
    """Continue prompts with a causal LM.

    Args:
        model: a `GPTNeoXForCausalLM` (with `model.tokenizer` for string prompts).
        inputs: token ids `[batch, pos]` (left-padded, with `attention_mask`), a string, or a list of strings.
        max_length: total length (prompt + new tokens); `max_new_tokens` counts new tokens only (default 20).
        do_sample, temperature, top_k, top_p: sampling controls; greedy when `do_sample` is False.
        eos_token_id: stop a row once it emits this id (default `config.eos_token_id`); later positions get
            `pad_token_id` (default: config's, the tokenizer's, else the EOS id).
        seed: seeds a private generator, so sampling is reproducible and leaves torch's global RNG alone.
        fwd_hooks: `[(hook_name_or_predicate, fn)]` active for every step (see `workbench.hooks`).
        return_full_text: for string prompts, return prompt + continuation (True) or the continuation only.
        stop_strings: stop a row once its decoded continuation contains one of them (later positions get
            `pad_token_id`); string output is cut before the first one (`cut_at_stop`).
        tokenizer: tokenises string prompts and decodes continuations (default `model.tokenizer`); anything with
            `decode(ids, skip_special_tokens=True)` serves for token-id prompts.

    Returns:
        Token ids `[batch, prompt + new]` for tensor input; a string (or list of strings) for string input.
    """
    if input_ids is not None:
        if inputs is not None:
            raise ValueError("pass the prompt once: either inputs or input_ids")
        inputs = input_ids
    text_input = isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str))
    tokenizer = tokenizer if tokenizer is not None else getattr(model, "tokenizer", None)
    ids, mask = _prompt_tensors(model, tokenizer, inputs, attention_mask)
    batch, prompt_len = ids.shape
    new_tokens = _count_new_tokens(max_length, max_new_tokens, prompt_len)
    _check_sampling(temperature, top_k, top_p)
    config = model.config
    eos_ids = _as_id_list(eos_token_id if eos_token_id is not None else config.eos_token_id)
    pad_id = _pad_id(model, tokenizer, pad_token_id, eos_ids)
    stops = [s for s in stop_strings or () if s]
    if stops and tokenizer is None:
        raise ValueError("stop_strings need a tokenizer to decode with: pass tokenizer= or use model.tokenizer")
    generator = torch.Generator(device=ids.device).manual_seed(seed) if seed is not None else None

    hooks = model.hooks(fwd_hooks=fwd_hooks) if fwd_hooks else contextlib.nullcontext()
    cache = KVCache.for_config(config).reserve(prompt_len + new_tokens)
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    eos = torch.tensor(eos_ids, device=ids.device)
    step_ids, sequences = ids, [ids]
    with torch.no_grad(), hooks:
        for _ in tqdm(range(new_tokens), desc="generate", disable=not progress):
            hidden = model.gpt_neox(step_ids, attention_mask=mask, past_key_values=cache, use_cache=True)
            logits = model.embed_out(hidden.last_hidden_state[:, -1]).float()  # [batch, vocab]
            token = _next_token(logits, do_sample, temperature, top_k, top_p, generator)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            sequences.append(token[:, None])
            finished |= torch.isin(token, eos)
            if stops:
                finished |= _stopped(tokenizer, sequences[1:], ~finished, stops)
            step_ids = token[:, None]
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
            if bool(finished.all()):
                break
    out = torch.cat(sequences, dim=-1)
    if not text_input:
        return out
    texts = _texts(tokenizer, out, prompt_len, stops, return_full_text)
    return texts[0] if isinstance(inputs, str) else texts


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """`text` up to the first occurrence of any (non-empty) stop string, as lm-eval cuts a generation."""
    for s in stop_strings:
        if s:
            text = text.split(s)[0]
    return text


def _stopped(tokenizer, new: list[torch.Tensor], active: torch.Tensor, stops: list[str]) -> torch.Tensor:
    """Rows among `active` whose continuation now contains a stop string.

    Only the newest tokens are decoded (lm-eval's stopping criterion does the same): a stop string first seen
    after this step ends in the newest token, and every token decodes to at least one byte, so it lies within the
    last `len(stop in UTF-8)` tokens. (A special token, decoded to nothing, inside that span can delay the stop;
    text output is cut at the first stop string all the same.)

    Args:
        new: the generated tokens so far, one `[batch, 1]` tensor per step.
        active: `[batch]` rows still generating.
    """
    window = max(len(s.encode("utf-8")) for s in stops)
    tails = torch.cat(new[-window:], dim=-1).tolist()
    hits = []
    for alive, tail in zip(active.tolist(), tails):
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
    """Token ids and mask `[batch, pos]` on the model's device; strings are tokenised with left padding."""
    device = model.device
    if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
        if tokenizer is None:
            raise ValueError("string prompts need model.tokenizer; load with workbench.load() or pass token ids")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        enc = tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
        return enc["input_ids"].to(device), enc["attention_mask"].to(device)
    if not torch.is_tensor(inputs):
        raise TypeError(f"inputs must be a token tensor, a string or a list of strings, got {type(inputs).__name__}")
    ids = inputs.unsqueeze(0) if inputs.dim() == 1 else inputs
    if ids.dim() != 2:
        raise ValueError(f"input ids must be [batch, pos], got shape {tuple(inputs.shape)}")
    mask = torch.ones_like(ids) if attention_mask is None else attention_mask
    if mask.dim() == 1:
        mask = mask.unsqueeze(0)
    if mask.shape != ids.shape:
        raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, input ids {tuple(ids.shape)}")
    if ids.shape[1] and bool((mask[:, -1] == 0).any()):
        raise ValueError("prompts are right-padded; generation appends on the right, so pad on the left")
    return ids.to(device), mask.to(device)


def _count_new_tokens(max_length: int | None, max_new_tokens: int | None, prompt_len: int) -> int:
    if max_new_tokens is not None and max_length is not None:
        raise ValueError("give max_new_tokens or max_length, not both")
    if max_new_tokens is None:
        max_new_tokens = 20 if max_length is None else max_length - prompt_len
    if max_new_tokens < 1:
        raise ValueError(f"nothing to generate: {max_new_tokens} new tokens (prompt has {prompt_len} tokens)")
    return int(max_new_tokens)


def _check_sampling(temperature: float, top_k: int | None, top_p: float | None) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    if top_k is not None and (not isinstance(top_k, int) or top_k < 1):
        raise ValueError(f"top_k must be a positive integer or None, got {top_k!r}")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise ValueError(f"top_p must be in (0, 1], got {top_p}")


def _as_id_list(ids: int | Sequence[int] | None) -> list[int]:
    if ids is None:
        return []
    return [int(ids)] if isinstance(ids, int) else [int(i) for i in ids]


def _pad_id(model, tokenizer, pad_token_id: int | None, eos_ids: list[int]) -> int:
    for candidate in (pad_token_id, model.config.pad_token_id, getattr(tokenizer, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return eos_ids[0] if eos_ids else 0


def _next_token(logits: torch.Tensor, do_sample: bool, temperature: float, top_k: int | None, top_p: float | None,
                generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row `[batch]` from its logits `[batch, vocab]`: the argmax, or a sample."""
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = torch.softmax(_warp(logits, temperature, top_k, top_p), dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _warp(logits: torch.Tensor, temperature: float, top_k: int | None, top_p: float | None) -> torch.Tensor:
    """Temperature, then top-k, then nucleus (top-p) filtering of `[batch, vocab]` logits."""
    logits = logits / temperature
    if top_k is not None and top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p is not None and top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1)  # ascending
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - top_p
        drop[..., -1] = False  # always keep the most likely token
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits
