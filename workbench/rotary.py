"""Rotary position embeddings (RoPE) on the first `rotary_ndims` dimensions of each head.

Tables are computed on the fly in fp32 from the positions of the call: nothing is stored as a buffer, so
`model.to(torch.bfloat16)` can't degrade them, and dynamic NTK scaling needs no hidden state.
"""

from __future__ import annotations

import torch

from .config import GPTNeoXConfig


def inverse_frequencies(config: GPTNeoXConfig, seq_len: int, device: torch.device) -> torch.Tensor:
    """Inverse frequencies `[rotary_ndims // 2]` in fp32, with linear or dynamic-NTK scaling applied.

    Args:
        config: model config (rotary_ndims, rotary_emb_base, rope_scaling, max_position_embeddings).
        seq_len: largest position of the call plus one; dynamic NTK rescales the base beyond the trained length.
        device: where the table is made.
    """
    dim = config.rotary_ndims
    base = float(config.rotary_emb_base)
    scaling = config.rope_scaling or {}
    kind, factor = scaling.get("rope_type"), scaling.get("factor", 1.0)
    if kind == "dynamic" and seq_len > config.max_position_embeddings:
        base = base * ((factor * seq_len / config.max_position_embeddings) - (factor - 1)) ** (dim / (dim - 2))
    exponents = torch.arange(0, dim, 2, dtype=torch.int64, device=device).float() / dim
    inv_freq = 1.0 / (base**exponents)
    if kind == "linear":
        inv_freq = inv_freq / factor
    return inv_freq


def rotary_tables(config: GPTNeoXConfig, position_ids: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """cos and sin tables for `position_ids` `[batch, pos]`.

    Returns:
        `(cos, sin)`, each fp32 `[batch, 1, pos, rotary_ndims]` (broadcast over heads of `[b, h, p, d]` tensors).
    """
    seq_len = int(position_ids.max()) + 1 if position_ids.numel() else 0
    inv_freq = inverse_frequencies(config, seq_len, position_ids.device)
    freqs = position_ids[..., None].float() * inv_freq  # [batch, pos, rotary_ndims // 2]
    angles = torch.cat((freqs, freqs), dim=-1)[:, None, :, :]
    return angles.cos(), angles.sin()


def rotate_half(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (-x2, x1) over the last dimension's two halves."""
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first `cos.shape[-1]` dims of `x` `[batch, head, pos, head_size]`; the rest pass through.

    Low-precision inputs are rotated in fp32 and cast back, so bf16/fp16 models keep exact angles.
    """
    dim = cos.shape[-1]
    if dim == 0:
        return x
    x_rot, x_pass = x[..., :dim], x[..., dim:]
    if x_rot.dtype != torch.float32:
        rotated = (x_rot.float() * cos + rotate_half(x_rot.float()) * sin).to(x.dtype)
    else:
        rotated = x_rot * cos + rotate_half(x_rot) * sin
    return torch.cat((rotated, x_pass), dim=-1)
