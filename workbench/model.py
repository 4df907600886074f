"""GPT-NeoX: the base model and its causal-LM, sequence/token classification and question-answering heads.

Numerically the same as transformers' GPT-NeoX, with its module paths (so checkpoints load as they are) and a
`HookPoint` at every activation (named as in TransformerLens: `blocks.L.attn.hook_pattern` ...).
Shapes: b batch, p position, h head, dh head size, d hidden size, m MLP size, v vocabulary.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass, fields
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from .attention import (
    AttentionMask,
    ObservedAttention,
    attention_probs,
    attention_scores,
    flash_attention,
    require_flash_attention,
    sdpa_attention,
)
from .config import GPTNeoXConfig
from .deferred import Deferred
from .hook_points import SPLIT_INPUT_HOOKS, add_hook_points, has_module_hooks, name_hook_points
from .hooks import HookedModelMixin
from .kv_cache import KVCache
from .rotary import apply_rotary, rotary_tables
from .threads import forward_threads

ACT_FNS = {
    "gelu": F.gelu,
    "gelu_new": lambda x: 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0)))),
    "gelu_fast": lambda x: 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x))),
    "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh"),
    "quick_gelu": lambda x: x * torch.sigmoid(1.702 * x),
    "relu": F.relu,
    "silu": F.silu,
    "swish": F.silu,
    "tanh": torch.tanh,
}


# ---- outputs ----------------------------------------------------------------------------------------
class ModelOutput:
    """Named outputs; `to_tuple()` (what `return_dict=False` returns) drops the fields that are None."""

    def to_tuple(self) -> tuple:
        return tuple(getattr(self, f.name) for f in fields(self) if getattr(self, f.name) is not None)

    def __getitem__(self, key: int | str | slice) -> Any:
        return getattr(self, key) if isinstance(key, str) else self.to_tuple()[key]


@dataclass
class BaseModelOutputWithPast(ModelOutput):
    last_hidden_state: torch.Tensor  # [b, p, d]
    past_key_values: KVCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None  # input of each layer, then the final normed output
    attentions: tuple[torch.Tensor, ...] | None = None  # per layer [b, h, q, k]


@dataclass
class CausalLMOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [b, p, v]
    past_key_values: KVCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class SequenceClassifierOutputWithPast(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [b, num_labels]
    past_key_values: KVCache | None = None
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class TokenClassifierOutput(ModelOutput):
    loss: torch.Tensor | None = None
    logits: torch.Tensor | None = None  # [b, p, num_labels]
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


@dataclass
class QuestionAnsweringModelOutput(ModelOutput):
    loss: torch.Tensor | None = None
    start_logits: torch.Tensor | None = None  # [b, p]
    end_logits: torch.Tensor | None = None  # [b, p]
    hidden_states: tuple[torch.Tensor, ...] | None = None
    attentions: tuple[torch.Tensor, ...] | None = None


# ---- building blocks ------------------------------------------------------------------------------
class LayerNorm(nn.LayerNorm):
    """LayerNorm whose scale and normalised input are hook points, observed beside the fused kernel."""

    def __init__(self, size: int, eps: float) -> None:
        super().__init__(size, eps=eps)
        add_hook_points(self, "ln")  # hook_scale [b, p, 1], hook_normalized [b, p, d]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (self.hook_scale.is_active() or self.hook_normalized.is_active()):
            return F.layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        # The same kernel as F.layer_norm, which also hands back the statistics it used: [b, p, 1] each.
        out, mean, rstd = torch.native_layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)
        scale, use_scale = self.hook_scale.observe(rstd.reciprocal())
        if not use_scale and self.hook_normalized.is_active() and self.hook_normalized.defers():
            # Only a cache listens: it gets the value computed when first read, from this x (workbench.deferred).
            meta = torch.empty(x.shape, dtype=x.dtype, device="meta")
            self.hook_normalized.observe_deferred(Deferred(
                lambda: normalized_input(x, mean, rstd), meta, (x,), self.hook_normalized.name, x.device,
                "the LayerNorm's input: the residual stream (hook_resid_pre / hook_resid_mid / the last "
                "hook_resid_post), or hidden states passed with start_at_layer"))
            return out
        normalized = normalized_input(x, mean, None if use_scale else rstd, scale)
        normalized, use_normalized = self.hook_normalized.observe(normalized)
        return normalized * self.weight + self.bias if use_scale or use_normalized else out


def normalized_input(x: torch.Tensor, mean: torch.Tensor, rstd: torch.Tensor | None,
                     scale: torch.Tensor | None = None) -> torch.Tensor:
    """TransformerLens's hook_normalized: `x` `[b, p, d]` centred and rescaled, before LayerNorm's weight and bias;
    divided by `scale` `[b, p, 1]` (a hooked one) when given, else multiplied by the kernel's `rstd`."""
    centred = x.float() - mean
    return (centred / scale if rstd is None else centred.mul_(rstd)).to(x.dtype)


class GPTNeoXAttention(nn.Module):
    """Multi-head self-attention with partial rotary embeddings and a fused qkv projection."""

    def __init__(self, config: GPTNeoXConfig, layer_idx: int) -> None:
        super().__init__()
        self.config, self.layer_idx = config, layer_idx
        self.num_heads, self.head_size = config.num_attention_heads, config.head_size
        self.scale = self.head_size**-0.5
        self.query_key_value = nn.Linear(config.hidden_size, 3 * config.hidden_size, bias=config.attention_bias)
        self.dense = nn.Linear(config.hidden_size, config.hidden_size, bias=config.attention_bias)
        add_hook_points(self, "attn")  # hook_q ... hook_result (workbench.hook_points.SITES)

    def needs_probs(self, output_attentions: bool, head_mask: torch.Tensor | None) -> bool:
        """Whether the forward itself needs the probabilities (else a fused kernel runs; hooks only observe)."""
        return output_attentions or head_mask is not None or self.config.attn_implementation == "eager"

    def forward(
        self,
        x: torch.Tensor,
        rotary: tuple[torch.Tensor, torch.Tensor],
        mask: AttentionMask,
        cache: KVCache | None = None,
        head_mask: torch.Tensor | None = None,
        output_attentions: bool = False,
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Args: x `[b, p, d]` (normed; or per-head (q, k, v) inputs `[b, p, h, d]`), rotary `(cos, sin)`
        `[b, 1, p, rotary_ndims]`, head_mask `[h]`.

        Only the last `mask.query_len` positions query (all of them, except for `GPTNeoXModel.forward`'s
        `keep_last`); keys and values are those of every position.

        Returns: attention output `[b, q, d]` and the probabilities `[b, h, q, k]` if they were computed.
        """
        q, k, v = self._project(x)  # each [b, p, h, dh]
        b, d = q.shape[0], self.dense.in_features
        q, k, v = self.hook_q(q), self.hook_k(k), self.hook_v(v)
        # Rotate in [b, h, p, dh]: the rotated q and k come out contiguous in the layout the matmuls want.
        q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        q = self.hook_rot_q(apply_rotary(q, *rotary).transpose(1, 2)).transpose(1, 2)  # hooked as [b, p, h, dh]
        k = self.hook_rot_k(apply_rotary(k, *rotary).transpose(1, 2)).transpose(1, 2)
        if cache is not None:
            k, v = cache.update(self.layer_idx, k, v)
        q = q[:, :, q.shape[2] - mask.query_len :]  # [b, h, q, dh]: the querying positions
        p = q.shape[2]
        dropout = self.config.attention_dropout if self.training else 0.0

        probs = None
        if p == 0:  # no query (keep_last=0: only the cache was wanted); kernels may refuse empty launches
            z = q.new_zeros(q.shape)
        elif self.needs_probs(output_attentions, head_mask):
            probs = attention_probs(attention_scores(q, k, mask, self.scale), q.dtype)
            z = self._weigh(probs, v, head_mask, dropout)
        elif self.config.attn_implementation == "flash_attention_2":
            z = flash_attention(q, k, v, mask, self.scale, dropout)
        else:
            z = sdpa_attention(q, k, v, mask, self.scale, dropout)
        sites = [p for p in (self.hook_attn_scores, self.hook_pattern) if p.is_active()]
        if sites and cache is None and all(p.defers() for p in sites):
            # Only a cache listens: it gets the scores / pattern as values computed when first read (from these
            # very q and k, by the same functions as below), so caching everything costs no second attention.
            observed = ObservedAttention(q, k, mask, self.scale, keep_scores=self.hook_attn_scores in sites)
            for point in sites:
                point.observe_deferred(observed.deferred(point))
        elif sites:
            # Observed beside the forward; the forward runs through them only if a hook replaced one.
            observed = ObservedAttention(q, k, mask, self.scale, keep_scores=False)
            scores, use_scores = self.hook_attn_scores.observe(observed.scores())
            pattern, use_pattern = self.hook_pattern.observe(observed.pattern(scores))
            if use_scores or use_pattern:
                probs, z = pattern, self._weigh(pattern, v, head_mask, dropout)
        z = self.hook_z(z.transpose(1, 2))  # [b, p, h, dh]
        out = self.dense(z.reshape(b, p, d))
        if self.hook_result.is_active():  # per-head outputs, only when someone asks
            w_out = self.dense.weight.view(d, self.num_heads, self.head_size)
            result, use_result = self.hook_result.observe(torch.einsum("bphe,dhe->bphd", z, w_out))  # [b, p, h, d]
            if use_result:
                out = result.sum(dim=2) + (self.dense.bias if self.dense.bias is not None else 0.0)
        return out, probs

    def _project(self, x: torch.Tensor | tuple[torch.Tensor, ...]) -> tuple[torch.Tensor, ...]:
        """q, k, v `[b, p, h, dh]` from the normed input `[b, p, d]` (the fused projection), or from each head's
        own (q, k, v) inputs `[b, p, h, d]` (the split-input path)."""
        h, dh = self.num_heads, self.head_size
        if torch.is_tensor(x):
            qkv = self.query_key_value(x).view(*x.shape[:2], h, 3 * dh)
            return qkv.chunk(3, dim=-1)  # heads interleave q|k|v in the checkpoint
        weight = self.query_key_value.weight.view(h, 3, dh, -1)  # [h, q|k|v, dh, d]
        bias = self.query_key_value.bias
        out = []
        for i, xi in enumerate(x):
            yi = torch.einsum("bphd,hed->bphe", xi, weight[:, i])
            out.append(yi + bias.view(h, 3, dh)[:, i] if bias is not None else yi)
        return tuple(out)

    def _weigh(self, probs: torch.Tensor, v: torch.Tensor, head_mask: torch.Tensor | None, dropout: float) -> torch.Tensor:
        """`probs @ v` `[b, h, q, dh]`, after dropout and the head mask."""
        weights = F.dropout(probs, dropout, self.training)
        if head_mask is not None:
            weights = weights * head_mask.to(weights.dtype).view(1, -1, 1, 1)
        return torch.matmul(weights, v)


class GPTNeoXMLP(nn.Module):
    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        self.dense_h_to_4h = nn.Linear(config.hidden_size, config.intermediate_size)
        self.dense_4h_to_h = nn.Linear(config.intermediate_size, config.hidden_size)
        self.act = ACT_FNS[config.hidden_act]
        add_hook_points(self, "mlp")  # hook_pre, hook_post [b, p, m]: before and after the activation

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.hook_pre(self.dense_h_to_4h(x))
        return self.dense_4h_to_h(self.hook_post(self.act(pre)))


class GPTNeoXLayer(nn.Module):
    """One block: attention and MLP side by side (parallel residual, Pythia/NeoX-20B) or one after the other."""

    def __init__(self, config: GPTNeoXConfig, layer_idx: int) -> None:
        super().__init__()
        self.use_parallel_residual = config.use_parallel_residual
        self.input_layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.post_attention_layernorm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.post_attention_dropout = nn.Dropout(config.hidden_dropout)
        self.post_mlp_dropout = nn.Dropout(config.hidden_dropout)
        self.attention = GPTNeoXAttention(config, layer_idx)
        self.mlp = GPTNeoXMLP(config)
        # hook_resid_mid exists only where there is a mid-block residual
        add_hook_points(self, "layer", skip=("hook_resid_mid",) if config.use_parallel_residual else ())

    def forward(self, x: torch.Tensor, rotary, mask, cache=None, head_mask=None, output_attentions=False):
        """x `[b, p, d]` -> (`[b, q, d]`, attention probabilities or None): the block's output at the last
        `mask.query_len` positions (all p, except under `GPTNeoXModel.forward`'s `keep_last`)."""
        x = self.hook_resid_pre(x)
        attn_out, probs = self.attention(self._attention_input(x), rotary, mask, cache, head_mask, output_attentions)
        attn_out = self.hook_attn_out(self.post_attention_dropout(attn_out))
        x = x[:, x.shape[1] - mask.query_len :]  # the residual of the querying positions
        if self.use_parallel_residual:
            mlp_out = self.hook_mlp_out(self.post_mlp_dropout(self.mlp(self._mlp_input(x))))
            out = mlp_out + attn_out + x
        else:
            mid = self.hook_resid_mid(attn_out + x)
            mlp_out = self.hook_mlp_out(self.post_mlp_dropout(self.mlp(self._mlp_input(mid))))
            out = mlp_out + mid
        return self.hook_resid_post(out), probs

    def _attention_input(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, ...]:
        """ln1(x) `[b, p, d]`; or, when a split-input hook replaced one, each head's normed (q, k, v) input
        `[b, p, h, d]` (TransformerLens's split inputs, for path patching; ln1's own hooks don't fire then)."""
        if not any(getattr(self, name).is_active() for name in SPLIT_INPUT_HOOKS):
            return self.input_layernorm(x)
        attn_in, replaced = self.hook_attn_in.observe(x.unsqueeze(2).repeat(1, 1, self.attention.num_heads, 1))
        split = [getattr(self, f"hook_{n}_input").observe(attn_in.clone()) for n in "qkv"]
        if not (replaced or any(use for _, use in split)):
            return self.input_layernorm(x)
        ln = self.input_layernorm
        return tuple(F.layer_norm(t, ln.normalized_shape, ln.weight, ln.bias, ln.eps) for t, _ in split)

    def _mlp_input(self, resid: torch.Tensor) -> torch.Tensor:
        """ln2 of the MLP's input residual (or of what `hook_mlp_in` replaced it with)."""
        if self.hook_mlp_in.is_active():
            mlp_in, replaced = self.hook_mlp_in.observe(resid.clone())
            if replaced:
                return self.post_attention_layernorm(mlp_in)
        return self.post_attention_layernorm(resid)


# ---- models ---------------------------------------------------------------------------------------

class GPTNeoXPreTrainedModel(HookedModelMixin, nn.Module):
    """Shared by all GPT-NeoX classes: config, weight init, checkpoint I/O and the hook API."""

    base_model_prefix = "gpt_neox"
    head_modules: tuple[str, ...] = ()  # created fresh when loading a checkpoint of another head

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__()
        if not isinstance(config, GPTNeoXConfig):
            raise TypeError(f"config must be a GPTNeoXConfig, got {type(config).__name__}")
        if config.attn_implementation == "flash_attention_2":
            require_flash_attention(None, None)
        self.config = config
        self.tokenizer = None

    def __call__(self, *args, **kwargs):
        """`nn.Module.__call__` on the CPU thread count `workbench.threads` picks for this much work (one thread
        for a forward whose ops are too short to split, torch's setting for larger ones, capped at the free
        cores for a model at most 128 wide; see `workbench.threads`)."""
        ids = kwargs.get("input_ids", args[0] if args else None)
        ids = kwargs.get("inputs_embeds") if ids is None else ids
        tokens = ids.shape[0] * ids.shape[1] if torch.is_tensor(ids) and ids.dim() >= 2 else 1
        param = next(self.parameters(), None)
        if param is None:
            return super().__call__(*args, **kwargs)
        with forward_threads(self.config.hidden_size, tokens, param.device):
            return super().__call__(*args, **kwargs)

    def post_init(self) -> None:
        """Initialise weights as transformers does (the base model initialises itself), tie, name hooks."""
        for name, child in self.named_children():
            if name != self.base_model_prefix:
                child.apply(self._init_weights)
        self.tie_weights()
        self.hook_dict = name_hook_points(self, self.config.num_hidden_layers)

    def _init_weights(self, module: nn.Module) -> None:
        std = self.config.initializer_range
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=std)
        if isinstance(module, nn.Linear) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, nn.LayerNorm):
            nn.init.ones_(module.weight)
            nn.init.zeros_(module.bias)

    def tie_weights(self) -> None:
        """Share the unembedding with the embedding when `tie_word_embeddings`."""
        if self.config.tie_word_embeddings and hasattr(self, "embed_out"):
            self.embed_out.weight = self.base_model.embed_in.weight

    @property
    def base_model(self) -> "GPTNeoXModel":
        return getattr(self, self.base_model_prefix, self)

    @property
    def device(self) -> torch.device:
        return next(self.parameters()).device

    @property
    def dtype(self) -> torch.dtype:
        return next(self.parameters()).dtype

    def num_parameters(self) -> int:
        return sum(p.numel() for p in {id(p): p for p in self.parameters()}.values())

    def set_attn_implementation(self, name: str) -> None:
        """Switch the attention backend ("eager", "sdpa", "flash_attention_2") in place."""
        if name not in ("eager", "sdpa", "flash_attention_2"):
            raise ValueError(f"attn_implementation {name!r} is not one of 'eager', 'sdpa', 'flash_attention_2'")
        if name == "flash_attention_2":
            require_flash_attention(self.device, self.dtype)
        self.config.attn_implementation = name

    @classmethod
    def from_pretrained(
        cls,
        name_or_path: str | os.PathLike,
        revision: str | None = None,
        dtype: torch.dtype | str | None = None,
        device: torch.device | str | None = None,
        attn_implementation: str | None = None,
        config: GPTNeoXConfig | None = None,
        mmap: bool | None = None,
    ):
        """Load a checkpoint: a directory, `"demo"`, or a hub id (`"EleutherAI/pythia-160m"`, `revision="step3000"`).

        Args:
            dtype: target dtype (torch.dtype, "float32"/"bf16"/..., or "auto"/None for the checkpoint's own).
            device: target device; weights go there directly, without a second full copy.
            attn_implementation: "eager", "sdpa" (default) or "flash_attention_2".
            mmap: for CPU weights in safetensors files: True memory-maps the file (instant; pages are read on first
                use, shared with other processes that map it and reclaimable under memory pressure; a dtype
                conversion reads tensor by tensor all the same), False reads the weights into this process's
                memory, in transparent huge pages where the kernel offers them (faster decoding, see
                `workbench.huge_pages` and the README's core table). None (default): False where huge pages are
                available, else True. Several processes loading one model on one machine: pass True to share.
        """
        from .checkpoint import load_pretrained

        return load_pretrained(cls, name_or_path, revision, dtype, device, attn_implementation, config, mmap)

    def save_pretrained(self, directory: str | os.PathLike, max_shard_size: int | str = "5GB") -> None:
        """Write config.json and safetensors weights (sharded above `max_shard_size`), plus the tokenizer if any."""
        from .checkpoint import save_pretrained

        save_pretrained(self, directory, max_shard_size)


class GPTNeoXModel(GPTNeoXPreTrainedModel):
    """Embedding, the stack of layers and the final layer norm; returns the last hidden state."""

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__(config)
        self.embed_in = nn.Embedding(config.vocab_size, config.hidden_size)
        self.emb_dropout = nn.Dropout(config.hidden_dropout)
        add_hook_points(self, "model")  # hook_embed
        self.layers = nn.ModuleList(GPTNeoXLayer(config, i) for i in range(config.num_hidden_layers))
        self.final_layer_norm = LayerNorm(config.hidden_size, config.layer_norm_eps)
        self.post_init()

    def forward(
        self,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        head_mask: torch.Tensor | None = None,
        past_key_values: KVCache | tuple | None = None,
        use_cache: bool | None = None,
        output_attentions: bool = False,
        output_hidden_states: bool = False,
        return_dict: bool = True,
        start_at_layer: int | None = None,
        stop_at_layer: int | None = None,
        keep_last: int | None = None,
    ) -> BaseModelOutputWithPast | tuple:
        """Args:
            input_ids: `[b, p]` token ids (or `inputs_embeds` `[b, p, d]`, not both).
            attention_mask: `[b, past + p]`, 1 for tokens and 0 for padding (left or right).
            position_ids: `[b, p]`; by default counted over the unpadded tokens of each row.
            head_mask: `[h]` or `[layers, h]` multipliers of the attention probabilities (1 keeps a head).
            past_key_values: a `KVCache` (or transformers' legacy tuple) from an earlier call of this model.
            use_cache: return the cache extended by this call (default: `config.use_cache` in eval mode).
            start_at_layer: run layers from this one on, with `inputs_embeds` the residual stream entering it
                (no embedding); python-slice semantics over the layers, as TransformerLens.
            stop_at_layer: stop before this layer: `last_hidden_state` is then the residual stream entering it
                (no final LayerNorm), e.g. to harvest activations of early layers cheaply.
            keep_last: `last_hidden_state` of the last `keep_last` positions only (0 to p), as transformers'
                `logits_to_keep` for the head; the last block then runs its attention (past the fused q/k/v
                projection and the rotation, which cover every position), its output projection, MLP and the
                final LayerNorm at those positions alone, while the keys and values, and the KV cache, still
                cover every position: what a scorer that reads a few positions saves. The values equal the
                full forward's to float rounding, not bit for bit (a product of fewer rows may sum in another
                order). Where a hook on the last block or the final LayerNorm (a hook point's or a torch module
                hook), `output_hidden_states` or `output_attentions` asks for every position, the full forward
                runs and is sliced, so an observed run can differ from an unobserved one by that rounding.
        """
        layers = _layer_range(start_at_layer, stop_at_layer, len(self.layers))
        partial = start_at_layer is not None or stop_at_layer is not None
        if keep_last is not None and (partial or isinstance(keep_last, bool) or not isinstance(keep_last, int)
                                      or keep_last < 0):
            raise ValueError(f"keep_last must be None or an int >= 0 (positions), without start_at_layer / "
                             f"stop_at_layer; got {keep_last!r}")
        if partial and (past_key_values is not None or use_cache):
            raise ValueError("start_at_layer / stop_at_layer run part of the model: they take no KV cache "
                             "(pass use_cache=False and no past_key_values)")
        if start_at_layer is not None and inputs_embeds is None:
            raise ValueError("start_at_layer needs the residual stream entering that layer as inputs_embeds "
                             "[batch, pos, hidden]")
        cache = self._prepare_cache(past_key_values, False if partial else use_cache, input_ids, inputs_embeds)
        past = cache.length if cache is not None else 0
        starts_at_embedding = start_at_layer is None or layers.start == 0
        if inputs_embeds is None:
            inputs_embeds = self.embed_in(input_ids)
        b, p, _ = inputs_embeds.shape
        attention_mask = _check_attention_mask(attention_mask, b, past + p)
        position_ids = _position_ids(position_ids, attention_mask, b, past, p, inputs_embeds.device)
        head_masks = _per_layer_head_mask(head_mask, self.config)

        mask = AttentionMask.build(attention_mask, p, past + p, inputs_embeds.device)
        keep = None if keep_last is None else min(keep_last, p)
        pruned = keep is not None and keep < p and not (output_hidden_states or output_attentions or self._last_observed())
        last_mask = AttentionMask.build(attention_mask, keep, past + p, inputs_embeds.device) if pruned else mask
        rotary = rotary_tables(self.config, position_ids)
        x = self.emb_dropout(self.hook_embed(inputs_embeds)) if starts_at_embedding else inputs_embeds  # [b, p, d]
        hidden_states, attentions = [], []
        for i in layers:
            if output_hidden_states:
                hidden_states.append(x)
            layer_mask = last_mask if i == len(self.layers) - 1 else mask  # [b, keep, d] out of the last block
            x, probs = self.layers[i](x, rotary, layer_mask, cache, head_masks[i], output_attentions)
            if output_attentions:
                attentions.append(probs)
        if stop_at_layer is None:
            x = self.final_layer_norm(x)
        if output_hidden_states:
            hidden_states.append(x)  # every position, as transformers' hidden states under logits_to_keep
        if keep is not None and not pruned:
            x = x[:, p - keep :]
        out = BaseModelOutputWithPast(
            last_hidden_state=x,
            past_key_values=cache,
            hidden_states=tuple(hidden_states) if output_hidden_states else None,
            attentions=tuple(attentions) if output_attentions else None,
        )
        return out if return_dict else out.to_tuple()

    def _last_observed(self) -> bool:
        """Whether anything hooks the last block or the final LayerNorm (a hook point's hook, a torch module hook,
        accelerate's): it must see every position."""
        return any(has_module_hooks(m) for part in (self.layers[-1], self.final_layer_norm) for m in part.modules())

    def _prepare_cache(self, past, use_cache, input_ids, inputs_embeds) -> KVCache | None:
        _check_inputs(input_ids, inputs_embeds, self.config)
        if use_cache is None:
            use_cache = self.config.use_cache and not self.training
        if past is None:
            return KVCache.for_config(self.config) if use_cache else None
        if isinstance(past, (tuple, list)):
            past = KVCache.from_legacy(past, self.config.num_attention_heads, self.config.head_size)
        if not isinstance(past, KVCache):
            raise TypeError(f"past_key_values must be a KVCache or a legacy tuple, got {type(past).__name__}")
        batch = (input_ids if input_ids is not None else inputs_embeds).shape[0]
        c = self.config
        past.check_compatible(c.num_hidden_layers, c.num_attention_heads, c.head_size, batch)
        return past


class GPTNeoXForCausalLM(GPTNeoXPreTrainedModel):
    """GPT-NeoX with its unembedding (`embed_out`): next-token logits, loss, generation."""

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.embed_out = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, head_mask=None,
                past_key_values=None, labels=None, use_cache=None, output_attentions=False,
                output_hidden_states=False, return_dict=True, start_at_layer=None, stop_at_layer=None
                ) -> CausalLMOutputWithPast | tuple | torch.Tensor:
        """`labels` `[b, p]`: the loss is next-token cross-entropy, positions labelled -100 ignored.

        `start_at_layer` / `stop_at_layer` as in `GPTNeoXModel.forward`; with `stop_at_layer` the return value
        is the residual stream `[b, p, d]` entering that layer, as TransformerLens returns it.

        Returns `logits` `[b, p, v]` (and `loss`, `past_key_values`, `hidden_states`, `attentions`).
        """
        base = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds, head_mask, past_key_values,
                             use_cache, output_attentions, output_hidden_states, start_at_layer=start_at_layer,
                             stop_at_layer=stop_at_layer)
        if stop_at_layer is not None:
            return base.last_hidden_state
        logits = self.embed_out(base.last_hidden_state)
        loss = None
        if labels is not None:
            shifted = F.pad(labels, (0, 1), value=-100)[..., 1:].to(logits.device)
            loss = F.cross_entropy(logits.float().flatten(0, -2), shifted.flatten(), ignore_index=-100)
        out = CausalLMOutputWithPast(loss, logits, base.past_key_values, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()

    def generate(self, inputs=None, **kwargs):
        """Greedy or sampled continuation; see `workbench.generation.generate` for the arguments."""
        from .generation import generate

        return generate(self, inputs, **kwargs)

    def as_transformer_lens(self):
        """A TransformerLens-compatible view of this model (`HookedTransformer`'s API, same modules and weights)."""
        from .hooked_transformer import HookedTransformerView

        return HookedTransformerView(self)

    # Notebook views: lazy one-line calls, so importing the model never imports the widgets (a higher layer).
    def show_attention(self, text_or_tokens, **kwargs):
        """`workbench.viz.AttentionView.from_model(self, text_or_tokens, **kwargs)`."""
        from .viz import show_attention  # lazy (allowed in tests/test_layers.py): no import-time dependency

        return show_attention(self, text_or_tokens, **kwargs)

    def show_logit_lens(self, text, **kwargs):
        """`workbench.viz.LogitLensView.from_model(self, text, **kwargs)`."""
        from .viz import show_logit_lens  # lazy (allowed in tests/test_layers.py): no import-time dependency

        return show_logit_lens(self, text, **kwargs)

    def show_tokens(self, texts, **kwargs):
        """`workbench.viz.TokenView.from_model(self, texts, **kwargs)`."""
        from .viz import show_tokens  # lazy (allowed in tests/test_layers.py): no import-time dependency

        return show_tokens(self, texts, **kwargs)


class GPTNeoXForSequenceClassification(GPTNeoXPreTrainedModel):
    """Classifies a sequence from the hidden state of its rightmost non-padding token."""

    head_modules = ("score",)

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.score = nn.Linear(config.hidden_size, config.num_labels, bias=False)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, position_ids=None, inputs_embeds=None, head_mask=None,
                past_key_values=None, labels=None, use_cache=None, output_attentions=False,
                output_hidden_states=False, return_dict=True) -> SequenceClassifierOutputWithPast | tuple:
        """`labels`: `[b]` class ids, `[b]`/`[b, 1]` floats (regression) or `[b, num_labels]` (multi-label)."""
        base = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds, head_mask, past_key_values,
                             use_cache, output_attentions, output_hidden_states)
        logits = self.score(base.last_hidden_state)  # [b, p, num_labels]
        batch = logits.shape[0]
        pad = self.config.pad_token_id
        if pad is None and batch != 1:
            raise ValueError("cannot pool a batch of several sequences without config.pad_token_id; set it")
        if pad is None or input_ids is None:
            last = torch.full((batch,), logits.shape[1] - 1, device=logits.device)
        else:  # rightmost non-pad token, for left and right padding alike
            positions = torch.arange(input_ids.shape[-1], device=logits.device)
            last = (positions * (input_ids != pad).to(logits.device)).argmax(-1)
        pooled = logits[torch.arange(batch, device=logits.device), last]  # [b, num_labels]
        loss = None if labels is None else self._loss(pooled, labels.to(pooled.device))
        out = SequenceClassifierOutputWithPast(loss, pooled, base.past_key_values, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()

    def _loss(self, pooled: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        kind = self.config.problem_type
        if kind is None:  # inferred as transformers does, and remembered
            if self.config.num_labels == 1:
                kind = "regression"
            elif labels.dtype in (torch.long, torch.int):
                kind = "single_label_classification"
            else:
                kind = "multi_label_classification"
            self.config.problem_type = kind
        if kind == "regression":
            if self.config.num_labels == 1:
                return F.mse_loss(pooled.squeeze(), labels.squeeze().to(pooled.dtype))
            return F.mse_loss(pooled, labels.to(pooled.dtype))
        if kind == "single_label_classification":
            return F.cross_entropy(pooled.view(-1, self.config.num_labels), labels.view(-1))
        return F.binary_cross_entropy_with_logits(pooled, labels.to(pooled.dtype))


class GPTNeoXForTokenClassification(GPTNeoXPreTrainedModel):
    """Per-token labels from each hidden state (dropout, then a linear classifier)."""

    head_modules = ("classifier",)

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.dropout = nn.Dropout(config.classifier_dropout)
        self.classifier = nn.Linear(config.hidden_size, config.num_labels)
        self.post_init()

    def forward(self, input_ids=None, past_key_values=None, attention_mask=None, token_type_ids=None,
                position_ids=None, inputs_embeds=None, head_mask=None, labels=None, use_cache=None,
                output_attentions=False, output_hidden_states=False, return_dict=True) -> TokenClassifierOutput | tuple:
        """`labels` `[b, p]` class ids (-100 ignored). `token_type_ids` is accepted and ignored, as in transformers."""
        base = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds, head_mask, past_key_values,
                             use_cache, output_attentions, output_hidden_states)
        logits = self.classifier(self.dropout(base.last_hidden_state))
        loss = None
        if labels is not None:
            flat = logits.float().view(-1, self.config.num_labels)
            loss = F.cross_entropy(flat, labels.view(-1).to(logits.device), ignore_index=-100)
        out = TokenClassifierOutput(loss, logits, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()


class GPTNeoXForQuestionAnswering(GPTNeoXPreTrainedModel):
    """Extractive QA: start and end logits per position."""

    head_modules = ("qa_outputs",)

    def __init__(self, config: GPTNeoXConfig) -> None:
        super().__init__(config)
        self.gpt_neox = GPTNeoXModel(config)
        self.qa_outputs = nn.Linear(config.hidden_size, 2)
        self.post_init()

    def forward(self, input_ids=None, attention_mask=None, token_type_ids=None, position_ids=None,
                head_mask=None, inputs_embeds=None, start_positions=None, end_positions=None,
                output_attentions=False, output_hidden_states=False, return_dict=True
                ) -> QuestionAnsweringModelOutput | tuple:
        """`start_positions`/`end_positions` `[b]`: positions outside the sequence are ignored in the loss."""
        base = self.gpt_neox(input_ids, attention_mask, position_ids, inputs_embeds, head_mask, None, False,
                             output_attentions, output_hidden_states)
        start, end = self.qa_outputs(base.last_hidden_state).split(1, dim=-1)
        start, end = start.squeeze(-1).contiguous(), end.squeeze(-1).contiguous()  # [b, p]
        loss = None
        if start_positions is not None and end_positions is not None:
            ignored = start.shape[1]
            s = start_positions.view(-1).clamp(0, ignored).to(start.device)
            e = end_positions.view(-1).clamp(0, ignored).to(end.device)
            loss = (F.cross_entropy(start.float(), s, ignore_index=ignored)
                    + F.cross_entropy(end.float(), e, ignore_index=ignored)) / 2
        out = QuestionAnsweringModelOutput(loss, start, end, base.hidden_states, base.attentions)
        return out if return_dict else out.to_tuple()


# ---- input checks: clear errors instead of index errors deep inside torch -------------------------------
def _check_inputs(input_ids: torch.Tensor | None, inputs_embeds: torch.Tensor | None, config: GPTNeoXConfig) -> None:
    if (input_ids is None) == (inputs_embeds is None):
        raise ValueError("pass exactly one of input_ids and inputs_embeds" +
                         (" (both were given)" if input_ids is not None else " (neither was given)"))
    if input_ids is not None:
        if not torch.is_tensor(input_ids):
            raise TypeError(f"input_ids must be a torch.Tensor of token ids, got {type(input_ids).__name__}")
        if input_ids.is_floating_point() or input_ids.is_complex() or input_ids.dtype == torch.bool:
            raise TypeError(f"input_ids must hold integer token ids, got dtype {input_ids.dtype}")
        if input_ids.dim() != 2:
            raise ValueError(f"input_ids must be 2-D [batch, pos], got shape {tuple(input_ids.shape)}")
        if input_ids.shape[1] == 0 or input_ids.shape[0] == 0:
            raise ValueError(f"input_ids is empty (shape {tuple(input_ids.shape)}): give at least one token per row")
        low, high = torch.aminmax(input_ids.long())  # int8/uint8 ids would wrap or overflow the comparison
        if low < 0 or high >= config.vocab_size:
            bad = int(low) if low < 0 else int(high)
            raise ValueError(f"token id {bad} is out of range: ids must be in [0, {config.vocab_size - 1}]")
    else:
        if not torch.is_tensor(inputs_embeds) or inputs_embeds.dim() != 3 or inputs_embeds.shape[-1] != config.hidden_size:
            shape = tuple(inputs_embeds.shape) if torch.is_tensor(inputs_embeds) else type(inputs_embeds).__name__
            raise ValueError(f"inputs_embeds must be [batch, pos, {config.hidden_size}], got {shape}")
        if inputs_embeds.shape[1] == 0:
            raise ValueError("inputs_embeds is empty: give at least one position")


def _check_attention_mask(mask: torch.Tensor | None, batch: int, total: int) -> torch.Tensor | None:
    if mask is None:
        return None
    if not torch.is_tensor(mask):
        raise TypeError(f"attention_mask must be a torch.Tensor, got {type(mask).__name__}")
    if tuple(mask.shape) != (batch, total):
        raise ValueError(
            f"attention_mask has shape {tuple(mask.shape)}, expected ({batch}, {total}) = "
            "(batch, cached positions + new positions)"
        )
    return mask


def _position_ids(position_ids, attention_mask, batch: int, past: int, length: int, device) -> torch.Tensor:
    """`[b, p]` positions; with padding, counted over each row's real tokens (left padding starts at 0)."""
    if position_ids is not None:
        if position_ids.dim() == 1:
            position_ids = position_ids.unsqueeze(0)
        if position_ids.shape[-1] != length or position_ids.shape[0] not in (1, batch):
            raise ValueError(f"position_ids has shape {tuple(position_ids.shape)}, expected ({batch}, {length})")
        return position_ids.to(device).expand(batch, length)
    if attention_mask is None or bool(attention_mask.all()):
        return torch.arange(past, past + length, device=device).expand(batch, length)
    counted = attention_mask.to(device=device, dtype=torch.long).cumsum(-1) - 1
    return counted.clamp(min=0)[:, -length:]


def _layer_range(start: int | None, stop: int | None, n_layers: int) -> range:
    """The layers a forward runs: `range(n_layers)[start:stop]`, with each bound checked."""
    for name, value in (("start_at_layer", start), ("stop_at_layer", stop)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int) or not -n_layers <= value <= n_layers):
            raise ValueError(f"{name} must be an int in [-{n_layers}, {n_layers}] or None, got {value!r}")
    return range(n_layers)[start:stop]


def _per_layer_head_mask(head_mask: torch.Tensor | None, config: GPTNeoXConfig) -> list[torch.Tensor | None]:
    layers, heads = config.num_hidden_layers, config.num_attention_heads
    if head_mask is None:
        return [None] * layers
    head_mask = torch.as_tensor(head_mask)
    if head_mask.dim() == 1 and head_mask.shape[0] == heads:
        return [head_mask] * layers
    if head_mask.dim() == 2 and tuple(head_mask.shape) == (layers, heads):
        return list(head_mask)
    raise ValueError(f"head_mask must have shape ({heads},) or ({layers}, {heads}), got {tuple(head_mask.shape)}")
