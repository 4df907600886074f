"""TransformerLens-style weight processing: a copy of a model with the LayerNorms folded and the writing weights
centred, computing the same log-probabilities.

- `fold_ln`: each LayerNorm's weight and bias move into the linear layer that reads it (ln1 -> query_key_value,
  ln2 -> dense_h_to_4h, ln_final -> embed_out, which gains a bias: TransformerLens's b_U), whose weight is then
  centred over d_model. The LayerNorms are left with weight 1 and bias 0, i.e. TransformerLens's parameter-free
  "LNPre".
- `center_writing_weights`: everything writing to the residual stream (embed_in, each attention `dense` and MLP
  `dense_4h_to_h`, weights and biases) loses its mean over d_model. Every reader of the stream is a LayerNorm,
  which removes that mean anyway.
- `center_unembed`: W_U and b_U lose their mean over the vocabulary: logits move by a constant per position.
- `fold_value_biases`: the value bias moves into the output bias (attention rows sum to 1, so
  `pattern @ (1 b_V) W_O = b_V W_O`).

After it, the cache's `apply_ln` conventions coincide (the LayerNorm weight is 1) and TransformerLens's
`convention="transformer_lens"` attributions are exact.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn


def _bias(linear: nn.Linear) -> nn.Parameter:
    """The layer's bias, created as zeros where it has none (folding a LayerNorm bias needs one)."""
    if linear.bias is None:
        linear.bias = nn.Parameter(torch.zeros(linear.out_features, dtype=linear.weight.dtype,
                                               device=linear.weight.device))
    return linear.bias


def _fold(ln: nn.LayerNorm, linear: nn.Linear) -> None:
    """`linear(ln(x))` with ln's affine part inside `linear`: W' = W diag(w), b' = b + W b_ln; ln -> weight 1, bias 0.

    W' is then centred over its input (d_model) dimension, as TransformerLens's `fold_ln` does: what a
    parameter-free LayerNorm outputs has mean 0, so that mean never mattered.
    """
    w, b = linear.weight.double(), ln.bias.double()
    _bias(linear).copy_(linear.bias.double() + w @ b)
    w = w * ln.weight.double()
    linear.weight.copy_(w - w.mean(1, keepdim=True))  # [out, in]
    ln.weight.fill_(1.0)
    ln.bias.zero_()


def _center(param: nn.Parameter, dim: int) -> None:
    param.copy_(param.double() - param.double().mean(dim, keepdim=True))


@torch.no_grad()
def process_weights(
    model: Any,
    fold_ln: bool = True,
    center_writing_weights: bool = True,
    center_unembed: bool = True,
    fold_value_biases: bool = True,
) -> Any:
    """A processed copy of a workbench GPT-NeoX causal LM, as TransformerLens's `process_weights` (its defaults).

    The copy is a new model of the same class (same config, tokenizer, device and dtype; untied embeddings; no
    hooks), whose log-probabilities equal the original's; arithmetic is in float64. It is for analysis: where it
    gained biases the original lacks (embed_out after `fold_ln`, attention without `attention_bias`), its
    state_dict has keys transformers' GPT-NeoX does not load.

    Args:
        fold_ln: fold every LayerNorm's weight and bias into the next linear layer.
        center_writing_weights: centre the weights and biases writing to the residual stream.
        center_unembed: centre the unembedding over the vocabulary.
        fold_value_biases: fold the value biases into the attention output biases.

    Returns:
        the processed copy (its `weight_processing` attribute records the options).
    """
    if not hasattr(model, "embed_out"):
        raise TypeError(f"process_weights needs a causal LM (with embed_out), got {type(model).__name__}")
    out = type(model)(dataclasses.replace(model.config, tie_word_embeddings=False))
    out = out.to(device=model.device, dtype=model.dtype).eval()
    state, modules = model.state_dict(), dict(out.named_modules())
    for key in state:  # biases an earlier processing added
        path, _, name = key.rpartition(".")
        if name == "bias" and isinstance(modules.get(path), nn.Linear) and modules[path].bias is None:
            _bias(modules[path])
    out.load_state_dict(state)
    out.tokenizer = model.tokenizer
    base = out.base_model
    for layer in base.layers:
        attn, mlp = layer.attention, layer.mlp
        if fold_ln:
            _fold(layer.input_layernorm, attn.query_key_value)
            _fold(layer.post_attention_layernorm, mlp.dense_h_to_4h)
        if center_writing_weights:
            for linear in (attn.dense, mlp.dense_4h_to_h):
                _center(linear.weight, 0)  # [d_model, in]: centre each input's write over d_model
                if linear.bias is not None:
                    _center(linear.bias, 0)
        qkv_bias = attn.query_key_value.bias
        if fold_value_biases and qkv_bias is not None:
            h, dh = attn.num_heads, attn.head_size
            b_v = qkv_bias.view(h, 3, dh)[:, 2]  # [h, dh]: heads interleave q|k|v
            _bias(attn.dense).copy_(attn.dense.bias.double() + attn.dense.weight.double() @ b_v.reshape(-1).double())
            b_v.zero_()
    if fold_ln:
        _fold(base.final_layer_norm, out.embed_out)
    if center_writing_weights:
        _center(base.embed_in.weight, -1)
    if center_unembed:
        _center(out.embed_out.weight, 0)  # [vocab, d]
        if out.embed_out.bias is not None:
            _center(out.embed_out.bias, 0)
    out.weight_processing = dict(fold_ln=fold_ln, center_writing_weights=center_writing_weights,
                                 center_unembed=center_unembed, fold_value_biases=fold_value_biases)
    return out
