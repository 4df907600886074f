"""The one place where user inputs become token ids, and token ids become display strings.

Every entry point that takes "a text, several texts or token ids" (the hook API, generation, the analyses,
the widgets) goes through `as_token_batch` (one padded batch) or `as_prompts` (unpadded prompts, for views
that show each prompt on its own); every token label comes from `token_strings`.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

import numpy as np
import torch

Inputs = Any  # str | Sequence[str] | Sequence[int] | Sequence[Sequence[int]] | torch.Tensor | np.ndarray


def is_text(inputs: Any) -> bool:
    """A string, or a non-empty list/tuple of strings."""
    return isinstance(inputs, str) or (isinstance(inputs, (list, tuple)) and bool(inputs) and isinstance(inputs[0], str))


def require_tokenizer(model: Any) -> Any:
    """`model.tokenizer`, or a ValueError saying how to get one."""
    tokenizer = getattr(model, "tokenizer", None)
    if tokenizer is None:
        raise ValueError("this model has no tokenizer (model.tokenizer is None): load it with "
                         "workbench.load(...), set model.tokenizer, or pass token ids")
    return tokenizer


def encode_texts(
    tokenizer: Any,
    text: str | Sequence[str],
    padding_side: str | None = None,
    prepend_bos: bool = False,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Tokenise one text or a list: ids `[batch, pos]` and attention mask `[batch, pos]` (1 = token).

    Args:
        tokenizer: a workbench `Tokenizer` (or anything called like transformers' tokenizers).
        text: a string or a non-empty list of strings, padded to the longest on `padding_side` (default: the
            tokenizer's).
        prepend_bos: put the tokenizer's bos token first (GPT-NeoX models were trained without it).
        device: where the tensors go.
    """
    texts = [text] if isinstance(text, str) else list(text)
    if not texts or not all(isinstance(t, str) for t in texts):
        raise TypeError("text must be a str or a non-empty list of str")
    if prepend_bos:
        if tokenizer.bos_token is None:
            raise ValueError("prepend_bos=True but the tokenizer has no bos_token")
        texts = [tokenizer.bos_token + t for t in texts]
    kwargs = {"padding_side": padding_side} if padding_side is not None else {}
    enc = tokenizer(texts, padding=len(texts) > 1, return_tensors="pt", **kwargs)
    return enc["input_ids"].to(device), enc["attention_mask"].to(device)


def as_token_batch(
    model: Any,
    inputs: Inputs,
    attention_mask: torch.Tensor | None = None,
    padding_side: str | None = None,
    prepend_bos: bool = False,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """A text, texts or ids -> one batch on the model's device.

    Args:
        model: a workbench model (`model.tokenizer` for text, `model.device`).
        inputs: a string, a list of strings (padded on `padding_side`), or token ids `[pos]` / `[batch, pos]`
            (a tensor, an array or a list of ints; any integer dtype, returned as int64: `integer_ids`).
        attention_mask: for token ids only, `[batch, pos]` (1 = token).

    Returns:
        ids `[batch, pos]`, and the attention mask `[batch, pos]`, or None where nothing is padded.
    """
    if is_text(inputs):
        if attention_mask is not None:
            raise ValueError("attention_mask is built from the texts; pass token ids to give your own")
        ids, mask = encode_texts(require_tokenizer(model), inputs, padding_side, prepend_bos, model.device)
    elif torch.is_tensor(inputs) or isinstance(inputs, np.ndarray) or _is_id_list(inputs):
        ids = integer_ids(inputs)
        ids = ids.unsqueeze(0) if ids.dim() == 1 else ids
        if ids.dim() != 2:
            raise ValueError(f"token ids must be [batch, pos], got shape {tuple(ids.shape)}")
        mask = attention_mask
        if mask is not None:
            mask = torch.as_tensor(mask)
            mask = mask.unsqueeze(0) if mask.dim() == 1 else mask
            if mask.shape != ids.shape:
                raise ValueError(f"attention_mask has shape {tuple(mask.shape)}, token ids {tuple(ids.shape)}")
        ids = ids.to(model.device)
        mask = None if mask is None else mask.to(model.device)
    else:
        raise TypeError(f"inputs must be a str, a list of str or a token tensor, got {type(inputs).__name__}")
    return ids, (mask if mask is not None and bool((mask == 0).any()) else None)


def integer_ids(ids: Any) -> torch.Tensor:
    """Token ids (a tensor, an array or a list of ints) as an int64 tensor: every integer dtype (int8, uint8,
    int32 ...) is accepted and cast; bool, floating and complex ids raise a TypeError naming the dtype."""
    try:
        tensor = torch.as_tensor(ids)
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"token ids must be integers, got {type(ids).__name__}: {error}") from error
    if tensor.dtype == torch.bool or tensor.is_floating_point() or tensor.is_complex():
        raise TypeError(f"token ids must have an integer dtype (int64, int32, int16, int8, uint8 ...), "
                        f"got {tensor.dtype}")
    return tensor.long()


def _is_id_list(x: Any) -> bool:
    return isinstance(x, (list, tuple)) and bool(x) and all(isinstance(t, (int, np.integer)) for t in x)


@dataclass
class Prompt:
    """One unpadded prompt as a view shows it.

    Attributes:
        ids: token ids, `[pos]`.
        tokens: one display string per token (`token_strings(..., readable=True)`).
    """

    ids: list[int]
    tokens: list[str]


def as_prompts(model: Any, inputs: Inputs) -> list[Prompt]:
    """A text, texts, an id list, id lists or an id array `[pos]` / `[batch, pos]` -> unpadded prompts.

    Each row of an id array is one prompt (no padding is removed); every prompt has at least one token.
    """
    tokenizer = require_tokenizer(model)
    if isinstance(inputs, str):
        items: list[Any] = [inputs]
    elif torch.is_tensor(inputs) or isinstance(inputs, np.ndarray):
        arr = integer_ids(inputs.detach().cpu() if torch.is_tensor(inputs) else inputs)
        if arr.dim() not in (1, 2):
            raise ValueError(f"token ids must be shaped [pos] or [batch, pos], got {tuple(arr.shape)}")
        items = [arr.tolist()] if arr.dim() == 1 else arr.tolist()
    elif isinstance(inputs, Sequence) and len(inputs) > 0:
        items = [list(inputs)] if all(isinstance(t, (int, np.integer)) for t in inputs) else list(inputs)
    else:
        raise TypeError("inputs must be a str, a list of str, a list of token ids, a list of id lists or an id "
                        f"tensor; got {type(inputs).__name__}")
    prompts = []
    for item in items:
        if isinstance(item, str):
            ids = list(tokenizer.encode(item))  # as `tokenizer(texts)` does for a batch
        elif isinstance(item, Sequence) and all(isinstance(t, (int, np.integer)) for t in item):
            ids = [int(t) for t in item]
        else:
            raise TypeError(f"each prompt must be a str or a list of token ids, got {type(item).__name__}")
        if not ids:
            raise ValueError("a prompt encoded to zero tokens; pass non-empty text")
        prompts.append(Prompt(ids=ids, tokens=token_strings(tokenizer, ids, readable=True)))
    return prompts


# Control characters as escapes (`\v`, `\x01`), not the missing-glyph boxes fonts draw for them; `\n` and `\t`
# stay, the widgets show those as escapes themselves.
_VISIBLE_CONTROLS = {c: {0: "\\0", 7: "\\a", 8: "\\b", 11: "\\v", 12: "\\f", 13: "\\r", 27: "\\e"}.get(c, f"\\x{c:02x}")
                     for c in [*range(32), 127] if chr(c) not in "\n\t"}


def token_strings(tokenizer: Any, ids: Sequence[int] | torch.Tensor, readable: bool = False) -> list[str]:
    """The string of each token id, decoded on its own (so each position shows exactly its piece).

    Args:
        tokenizer: anything with `decode(list[int])`, or None (then ids show as `"#123"`).
        ids: token ids `[pos]`.
        readable: for display: a piece that decodes to nothing or to U+FFFD (part of a multi-byte character)
            shows as its raw vocabulary entry (or `<id>`) instead, and control characters as escapes (`"\\v"`);
            False decodes exactly as TransformerLens's `to_str_tokens` does.
    """
    ids = [int(i) for i in (ids.tolist() if torch.is_tensor(ids) else ids)]
    if tokenizer is None:
        return [f"#{i}" for i in ids]
    out = [tokenizer.decode([i]) for i in ids]
    if readable:
        convert = getattr(tokenizer, "convert_ids_to_tokens", None) or getattr(tokenizer, "id_to_token", None)
        for k, (i, s) in enumerate(zip(ids, out)):
            if s == "" or "\ufffd" in s:
                raw = convert(i) if convert is not None else None
                out[k] = raw if isinstance(raw, str) and raw else f"<{i}>"
            else:
                out[k] = s.translate(_VISIBLE_CONTROLS)
    return out
