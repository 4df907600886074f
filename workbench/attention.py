"""Attention backends over `q, k, v` `[batch, head, pos, head_size]`, with a causal mask aligned bottom-right.

- `eager`: materialises scores and probabilities (softmax in fp32); the only backend that can return them.
- `sdpa`: torch's `scaled_dot_product_attention`.
- `flash_attention_2`: the `flash_attn` package on CUDA in fp16/bf16; padded batches are unpadded first.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

from .deferred import Deferred


@dataclass
class AttentionMask:
    """Which keys each query may attend to.

    Attributes:
        padding: `[batch, key]` bool, True for real tokens; None when nothing is padded.
        full: `[batch, 1, query, key]` bool, causal and padding together; None when plain causal
            (bottom-right aligned) says it all, which lets sdpa/flash use their causal kernels.
        query_len, key_len: lengths of the call (keys include cached positions).
    """

    padding: torch.Tensor | None
    full: torch.Tensor | None
    query_len: int
    key_len: int
    _additive: dict = field(default_factory=dict, repr=False, compare=False)  # (device, dtype) -> bias, per call

    @classmethod
    def build(cls, padding: torch.Tensor | None, query_len: int, key_len: int, device: torch.device) -> "AttentionMask":
        """Combine the key padding mask with causality.

        Args:
            padding: `[batch, key_len]` 0/1 or bool attention mask, or None.
        """
        if padding is not None:
            padding = padding.to(device=device, dtype=torch.bool)
            if bool(padding.all()):
                padding = None
        plain_causal = query_len == key_len or query_len == 1
        if padding is None and plain_causal:
            return cls(None, None, query_len, key_len)
        full = causal_mask(query_len, key_len, device)[None, None]  # [1, 1, q, k]
        if padding is not None:
            full = full & padding[:, None, None, :]
            # A query that may see no key at all (a left-pad position) would give NaN; let it see every key
            # instead, as transformers' additive mask effectively does. Its output is padding anyway.
            full = full | ~full.any(dim=-1, keepdim=True)
        return cls(padding, full, query_len, key_len)

    def to(self, device: torch.device | str) -> "AttentionMask":
        """A copy on `device` (accelerate moves layer inputs between GPUs with this)."""
        move = lambda t: None if t is None else t.to(device)  # noqa: E731
        return AttentionMask(move(self.padding), move(self.full), self.query_len, self.key_len)

    def additive(self, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
        """The mask as a bias `[batch or 1, 1, query, key]`: 0 where allowed, -inf where not; built once per call."""
        key = (device, dtype)
        if key not in self._additive:
            allowed = self.dense(device)
            self._additive[key] = torch.zeros(allowed.shape, dtype=dtype, device=device).masked_fill_(~allowed, float("-inf"))
        return self._additive[key]

    def dense(self, device: torch.device) -> torch.Tensor:
        """The mask as an explicit bool tensor `[batch or 1, 1, query, key]`."""
        if self.full is not None:
            return self.full
        return causal_mask(self.query_len, self.key_len, device)[None, None]


def causal_mask(query_len: int, key_len: int, device: torch.device) -> torch.Tensor:
    """`[query, key]` bool: query i (the last `query_len` positions) sees keys up to its own position."""
    return torch.ones(query_len, key_len, dtype=torch.bool, device=device).tril(key_len - query_len)


def attention_scores(q: torch.Tensor, k: torch.Tensor, mask: AttentionMask, scale: float, strict: bool = False
                     ) -> torch.Tensor:
    """Scaled scores `[batch, head, query, key]`, masked positions -inf; fp32 for low-precision inputs.

    With `strict` (what the hooks see, as TransformerLens masks): a padded key is masked for every query, so a
    padding query that sees no real key gets a row of -inf; the forward instead lets such a row see every key
    (as transformers does), which keeps its softmax finite. Only padding positions differ.
    """
    if q.dtype in (torch.float16, torch.bfloat16):  # fp16 q.k can overflow before scaling
        q, k = q.float(), k.float()
    b, h, nq, dh = q.shape
    nk = k.shape[2]
    bias = mask.additive(q.device, q.dtype)  # [b or 1, 1, q, k]: 0 where allowed, -inf where masked
    if bias.shape[0] != 1:  # per-row padding: scale and mask in place, no extra [b, h, q, k] buffers
        scores = torch.matmul(q, k.transpose(-1, -2)).mul_(scale).add_(bias)
    else:  # one gemm computes bias + scale * q @ k^T: no separate scaling and masking passes over the scores
        scores = torch.baddbmm(bias[0], q.reshape(b * h, nq, dh), k.reshape(b * h, nk, dh).transpose(1, 2), alpha=scale)
        scores = scores.view(b, h, nq, nk)
    if strict and mask.padding is not None:
        allowed = causal_mask(nq, nk, q.device)[None, None] & mask.padding[:, None, None, :]
        scores = scores.masked_fill_(~allowed, float("-inf"))
    return scores


def attention_probs(scores: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """Softmax over keys in fp32, returned in `dtype`."""
    return F.softmax(scores, dim=-1, dtype=torch.float32).to(dtype)


class ObservedAttention:
    """The attention scores and pattern the hooks see (TransformerLens's masking: -inf, a padding query's row of
    no key all 0), computed from the forward's own rotated `q, k` `[batch, head, pos, head_size]` beside
    whichever kernel produced the output; now (`scores`, `pattern`) or when first read (`deferred`).

    Args:
        keep_scores: keep the scores once computed, for a pattern read later (both cached).
    """

    def __init__(self, q: torch.Tensor, k: torch.Tensor, mask: AttentionMask, scale: float, keep_scores: bool) -> None:
        self.q, self.k, self.mask, self.scale, self.keep_scores = q, k, mask, scale, keep_scores
        self._scores: tuple[torch.Tensor, int] | None = None  # (scores, their version when computed)

    def scores(self) -> torch.Tensor:
        """`[batch, head, query, key]`, fp32 for low-precision inputs. Kept scores serve a later pattern only
        while unedited (a user may zero the cached scores after reading them)."""
        if self._scores is not None and self._scores[0]._version == self._scores[1]:
            return self._scores[0]
        scores = attention_scores(self.q, self.k, self.mask, self.scale, strict=True)
        if self.keep_scores:
            self._scores = (scores, scores._version)
        return scores

    def pattern(self, scores: torch.Tensor | None = None) -> torch.Tensor:
        """Softmax of `scores` (default: `self.scores()`) in the inputs' dtype."""
        pattern = attention_probs(self.scores() if scores is None else scores, self.q.dtype)
        if self.mask.padding is not None:  # a padding query that sees no key: a row of NaN, 0 in TransformerLens
            pattern = pattern.nan_to_num_(0.0)
        return pattern

    def deferred(self, point: Any) -> Deferred:
        """The value of hook point `point` (`hook_attn_scores` or `hook_pattern`), computed when first read."""
        b, h, nq, _ = self.q.shape
        is_scores = point.name.endswith("hook_attn_scores")
        low = self.q.dtype in (torch.float16, torch.bfloat16)
        dtype = torch.float32 if is_scores and low else self.q.dtype
        meta = torch.empty(b, h, nq, self.k.shape[2], dtype=dtype, device="meta")
        return Deferred(self.scores if is_scores else self.pattern, meta, (self.q, self.k), point.name, self.q.device,
                        "the rotated queries / keys, also cached as hook_rot_q / hook_rot_k")


def sdpa_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float, dropout: float
) -> torch.Tensor:
    """torch's fused attention; returns `[batch, head, query, head_size]`."""
    if mask.full is None:
        causal = mask.query_len > 1
        return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout, is_causal=causal, scale=scale)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask.full, dropout_p=dropout, scale=scale)


def flash_attention_unavailable(device: torch.device | None, dtype: torch.dtype | None) -> str | None:
    """Why flash_attention_2 can't run here (None if it can). Device/dtype None: check the package only."""
    try:
        import flash_attn  # noqa: F401
    except ImportError:
        return "the flash_attn package is not installed (pip install 'neox-workbench[gpu]')"
    if device is not None and device.type != "cuda":
        return f"flash_attention_2 runs on CUDA devices only, the model is on {device.type}"
    if dtype is not None and dtype not in (torch.float16, torch.bfloat16):
        return f"flash_attention_2 needs float16 or bfloat16, the model is in {dtype}"
    return None


def require_flash_attention(device: torch.device | None, dtype: torch.dtype | None) -> None:
    reason = flash_attention_unavailable(device, dtype)
    if reason:
        raise ValueError(f"attn_implementation='flash_attention_2' can't be used: {reason}. Use 'sdpa' instead.")


def flash_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: AttentionMask, scale: float, dropout: float
) -> torch.Tensor:
    """flash-attn 2 (causal, bottom-right aligned); padded rows are packed with the varlen kernel."""
    require_flash_attention(q.device, q.dtype)
    from flash_attn import flash_attn_func, flash_attn_varlen_func

    q, k, v = (t.transpose(1, 2) for t in (q, k, v))  # flash wants [batch, pos, head, head_size]
    if mask.padding is None:
        out = flash_attn_func(q, k, v, dropout_p=dropout, softmax_scale=scale, causal=True)
        return out.transpose(1, 2)
    batch, q_len, heads, size = q.shape
    key_keep = mask.padding  # [batch, key]
    query_keep = key_keep[:, -q_len:]
    q_idx = query_keep.flatten().nonzero().squeeze(-1)
    k_idx = key_keep.flatten().nonzero().squeeze(-1)
    cu_q = F.pad(query_keep.sum(-1).cumsum(0, dtype=torch.int32), (1, 0))
    cu_k = F.pad(key_keep.sum(-1).cumsum(0, dtype=torch.int32), (1, 0))
    packed = flash_attn_varlen_func(
        q.reshape(-1, heads, size)[q_idx],
        k.reshape(-1, heads, size)[k_idx],
        v.reshape(-1, heads, size)[k_idx],
        cu_seqlens_q=cu_q,
        cu_seqlens_k=cu_k,
        max_seqlen_q=int(query_keep.sum(-1).max()),
        max_seqlen_k=int(key_keep.sum(-1).max()),
        dropout_p=dropout,
        softmax_scale=scale,
        causal=True,
    )
    out = q.new_zeros(batch * q_len, heads, size)
    out[q_idx] = packed
    return out.view(batch, q_len, heads, size).transpose(1, 2)
