"""Text generation: one prefill over the (left-padded) prompts, then one decode step per new token.

Greedy decoding matches transformers' `generate` token for token; sampling (temperature, top-k, top-p,
applied in that order, as transformers does) is reproducible with `seed`.
"""

from __future__ import annotations

import contextlib
from typing import Sequence

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

    Returns:
        Token ids `[batch, prompt + new]` for tensor input; a string (or list of strings) for string input.
    """
    if input_ids is not None:
        if inputs is not None:
            raise ValueError("pass the prompt once: either inputs or input_ids")
        inputs = input_ids
    text_input = isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str))
    ids, mask = _prompt_tensors(model, inputs, attention_mask)
    batch, prompt_len = ids.shape
    new_tokens = _count_new_tokens(max_length, max_new_tokens, prompt_len)
    _check_sampling(temperature, top_k, top_p)
    config = model.config
    eos_ids = _as_id_list(eos_token_id if eos_token_id is not None else config.eos_token_id)
    pad_id = _pad_id(model, pad_token_id, eos_ids)
    generator = None
    if seed is not None:
        generator = torch.Generator(device=ids.device).manual_seed(seed)

    hooks = model.hooks(fwd_hooks=fwd_hooks) if fwd_hooks else contextlib.nullcontext()
    cache = KVCache.for_config(config).reserve(prompt_len + new_tokens)
    finished = torch.zeros(batch, dtype=torch.bool, device=ids.device)
    eos = torch.tensor(eos_ids, device=ids.device)
    step_ids, sequences = ids, [ids]
    with torch.no_grad(), hooks:
        for _ in tqdm(range(new_tokens), desc="generate", disable=not progress):
            hidden = model.gpt_neox(step_ids, attention_mask=mask, past_key_values=cache, use_cache=True)
            logits = model.embed_out(hidden.last_hidden_state[:, -1]).float()  # [batch, vocab]
            if do_sample:
                probs = torch.softmax(_warp(logits, temperature, top_k, top_p), dim=-1)
                token = torch.multinomial(probs, 1, generator=generator).squeeze(-1)
            else:
                token = logits.argmax(dim=-1)
            token = torch.where(finished, torch.full_like(token, pad_id), token)
            sequences.append(token[:, None])
            finished |= torch.isin(token, eos)
            step_ids = token[:, None]
            mask = torch.cat([mask, mask.new_ones(batch, 1)], dim=-1)
            if bool(finished.all()):
                break
    out = torch.cat(sequences, dim=-1)
    if not text_input:
        return out
    texts = model.tokenizer.batch_decode(out if return_full_text else out[:, prompt_len:], skip_special_tokens=True)
    return texts[0] if isinstance(inputs, str) else texts


def _prompt_tensors(model, inputs, attention_mask) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and mask `[batch, pos]` on the model's device; strings are tokenised with left padding."""
    device = model.device
    if isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and inputs and isinstance(inputs[0], str)):
        if model.tokenizer is None:
            raise ValueError("string prompts need model.tokenizer; load with workbench.load() or pass token ids")
        texts = [inputs] if isinstance(inputs, str) else list(inputs)
        enc = model.tokenizer(texts, padding=True, padding_side="left", return_tensors="pt")
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


def _pad_id(model, pad_token_id: int | None, eos_ids: list[int]) -> int:
    for candidate in (pad_token_id, model.config.pad_token_id, getattr(model.tokenizer, "pad_token_id", None)):
        if candidate is not None:
            return int(candidate)
    return eos_ids[0] if eos_ids else 0


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
