"""A TransformerLens-compatible view of a workbench GPT-NeoX: `HookedTransformer`'s API on the same modules.

    tl = model.as_transformer_lens()
    logits = tl(tokens)                                        # [batch, pos, d_vocab], a tensor
    tl.W_Q, tl.OV[3, 1].svd(), tl.cfg.n_heads                  # TL's weight shapes and config names
    transformer_lens.patching.get_act_patch_resid_pre(tl, corrupted, clean_cache, metric)

The view holds the model itself (`tl.model`): no weight is copied, its hook points *are* the model's (hooks added
through either are the other's), and every hook call goes to the model's own hook API (`workbench.hooks`).
What it adds is TransformerLens's surface: `forward(return_type=...)`, `cfg`, the `W_*`/`b_*` properties in TL's
shapes, `OV`/`QK` factored matrices, the tokenizer helpers with TL's `prepend_bos` default, `blocks[l].attn...`.

TransformerLens is optional: `OV`/`QK` are TL's `FactoredMatrix` when it is installed, else this module's
`FactoredMatrix` (the same methods); nothing else imports it.

Tokenization: TL 4.x's GPT-NeoX adapter sets `default_prepend_bos=False` ("NeoX/Pythia models were not trained
with BOS tokens"), so `tl.to_tokens(text)` adds no BOS by default; TL 3's `HookedTransformer` prepended one
(`default_prepend_bos=True`). Set `tl.cfg.default_prepend_bos = True` for the old behaviour.

Shapes: l layers, h heads, d d_model, dh d_head, m d_mlp, v d_vocab, b batch, p position.
"""

from __future__ import annotations

import contextlib
from dataclasses import asdict, dataclass
from functools import cached_property
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .activation_cache import ActivationCache
from .generation import generate
from .hook_points import COMPONENTS, HookPoint
from .inputs import is_text


# ---- loss -----------------------------------------------------------------------------------------------
def lm_cross_entropy_loss(logits: torch.Tensor, tokens: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          per_token: bool = False) -> torch.Tensor:
    """Next-token cross-entropy as `transformer_lens.utilities.lm_cross_entropy_loss` computes it.

    Args:
        logits: `[b, p, v]`.
        tokens: `[b, p]`; position i's logits predict token i + 1.
        attention_mask: `[b, p]` (1 = token); a prediction counts only where it and its target are tokens.
        per_token: return the loss of each prediction `[b, p - 1]` (masked ones 0) instead of their mean.
    """
    log_probs = F.log_softmax(logits, dim=-1)
    predicted = log_probs[..., :-1, :].gather(-1, tokens[..., 1:, None].to(logits.device))[..., 0]  # [b, p-1]
    n_tokens = predicted.numel()
    if attention_mask is not None:
        mask = attention_mask.to(logits.device).bool()
        counted = mask[:, :-1] & mask[:, 1:]
        predicted, n_tokens = predicted.masked_fill(~counted, 0.0), counted.sum()
    return -predicted if per_token else -predicted.sum() / n_tokens


# ---- factored matrices ------------------------------------------------------------------------------------
class FactoredMatrix:
    """`A @ B` kept as its factors: TransformerLens's `FactoredMatrix` core, used when TL is not installed.

    Args:
        A: `[..., ldim, mdim]`.
        B: `[..., mdim, rdim]` (leading dimensions broadcast with A's).
    """

    def __init__(self, A: torch.Tensor, B: torch.Tensor) -> None:
        if A.shape[-1] != B.shape[-2]:
            raise ValueError(f"factors must match on the inner dimension, got {tuple(A.shape)} and {tuple(B.shape)}")
        lead = torch.broadcast_shapes(A.shape[:-2], B.shape[:-2])
        self.A, self.B = A.broadcast_to(lead + A.shape[-2:]), B.broadcast_to(lead + B.shape[-2:])
        self.ldim, self.mdim, self.rdim = A.shape[-2], A.shape[-1], B.shape[-1]
        self.shape = torch.Size(lead + (self.ldim, self.rdim))

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def AB(self) -> torch.Tensor:
        """The product `[..., ldim, rdim]` (materialised)."""
        return self.A @ self.B

    @property
    def BA(self) -> torch.Tensor:
        """The reverse product `[..., mdim, mdim]` (square matrices only)."""
        if self.ldim != self.rdim:
            raise ValueError(f"BA needs a square matrix, shape is {tuple(self.shape)}")
        return self.B @ self.A

    @property
    def T(self) -> "FactoredMatrix":
        return FactoredMatrix(self.B.transpose(-2, -1), self.A.transpose(-2, -1))

    def __matmul__(self, other: "torch.Tensor | FactoredMatrix") -> "torch.Tensor | FactoredMatrix":
        if isinstance(other, FactoredMatrix):
            return (self @ other.A) @ other.B
        if other.ndim < 2:  # a vector: the product collapses
            return (self.A @ (self.B @ other.unsqueeze(-1))).squeeze(-1)
        return FactoredMatrix(self.A, self.B @ other)

    def __rmatmul__(self, other: torch.Tensor) -> "torch.Tensor | FactoredMatrix":
        if other.ndim < 2:
            return ((other.unsqueeze(-2) @ self.A) @ self.B).squeeze(-2)
        return FactoredMatrix(other @ self.A, self.B)

    def __mul__(self, scalar: float | torch.Tensor) -> "FactoredMatrix":
        return FactoredMatrix(self.A * scalar, self.B)

    __rmul__ = __mul__

    def __getitem__(self, idx: Any) -> "FactoredMatrix":
        """Index the leading dimensions only (`OV[layer, head]`)."""
        idx = idx if isinstance(idx, tuple) else (idx,)
        if len(idx) > self.ndim - 2:
            raise IndexError(f"only the {self.ndim - 2} leading dimensions of a {tuple(self.shape)} FactoredMatrix "
                             "can be indexed here (install transformer-lens for row/column indexing)")
        return FactoredMatrix(self.A[idx], self.B[idx])

    @cached_property
    def _svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        # SVD of each factor, then of the small middle matrix: never forms the [ldim, rdim] product.
        A, B = (x.float() if x.dtype in (torch.float16, torch.bfloat16) else x for x in (self.A, self.B))
        Ua, Sa, Vha = torch.linalg.svd(A, full_matrices=False)
        Ub, Sb, Vhb = torch.linalg.svd(B, full_matrices=False)
        middle = Sa[..., :, None] * Vha @ Ub * Sb[..., None, :]
        Um, Sm, Vhm = torch.linalg.svd(middle, full_matrices=False)
        return Ua @ Um, Sm, Vhb.transpose(-2, -1) @ Vhm.transpose(-2, -1)

    def svd(self) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """`(U [..., ldim, mdim], S [..., mdim], V [..., rdim, mdim])` with `U @ S.diag() @ V.T == AB`."""
        return self._svd

    @property
    def U(self) -> torch.Tensor:
        return self.svd()[0]

    @property
    def S(self) -> torch.Tensor:
        return self.svd()[1]

    @property
    def V(self) -> torch.Tensor:
        return self.svd()[2]

    @property
    def eigenvalues(self) -> torch.Tensor:
        """Eigenvalues `[..., mdim]` (complex) of AB, computed from the small BA (same non-zero spectrum)."""
        BA = self.BA
        return torch.linalg.eig(BA.float() if BA.dtype in (torch.float16, torch.bfloat16) else BA).eigenvalues

    def norm(self) -> torch.Tensor:
        """Frobenius norm `[...]`."""
        return self.S.pow(2).sum(-1).sqrt()

    def __repr__(self) -> str:
        return f"FactoredMatrix: Shape({tuple(self.shape)}), Hidden Dim({self.mdim})"


def factored_matrix(A: torch.Tensor, B: torch.Tensor) -> Any:
    """TransformerLens's `FactoredMatrix(A, B)` when transformer-lens is installed, else the workbench's."""
    try:
        from transformer_lens import FactoredMatrix as TLFactoredMatrix
    except ImportError:
        return FactoredMatrix(A, B)
    return TLFactoredMatrix(A, B)


# ---- config ---------------------------------------------------------------------------------------------
@dataclass
class HookedTransformerConfig:
    """TransformerLens's config names for a workbench GPT-NeoX (`HookedTransformerConfig` / `TransformerBridgeConfig`).

    TL 4.x removed `HookedTransformerConfig`; this is a plain dataclass with the fields TL's tools read. The
    `use_*` flags are informational: every workbench hook site fires whenever it is hooked.
    """

    n_layers: int
    d_model: int
    n_ctx: int
    d_head: int
    n_heads: int
    d_mlp: int
    d_vocab: int
    d_vocab_out: int
    act_fn: str
    eps: float
    rotary_dim: int
    rotary_base: float
    parallel_attn_mlp: bool
    default_prepend_bos: bool = False
    tokenizer_prepends_bos: bool = False
    model_name: str = "custom"
    original_architecture: str = "GPTNeoXForCausalLM"
    normalization_type: str = "LN"
    positional_embedding_type: str = "rotary"
    attention_dir: str = "causal"
    device: str = "cpu"
    dtype: torch.dtype = torch.float32
    n_key_value_heads: int | None = None  # no grouped-query attention
    attn_only: bool = False
    gated_mlp: bool = False
    final_rms: bool = False
    uses_rms_norm: bool = False
    tokenizer_appends_eos: bool = False
    use_attn_result: bool = False
    use_split_qkv_input: bool = False
    use_attn_in: bool = False
    use_hook_mlp_in: bool = False

    @classmethod
    def from_model(cls, model: nn.Module) -> "HookedTransformerConfig":
        """The config of a workbench `GPTNeoXForCausalLM` (its `config`, device, dtype and tokenizer)."""
        c = model.config
        tokenizer = getattr(model, "tokenizer", None)
        probe = tokenizer.encode("a") if tokenizer is not None else []  # TL's detection
        prepends = len(probe) > 1 and probe[0] == tokenizer.bos_token_id
        return cls(n_layers=c.num_hidden_layers, d_model=c.hidden_size, n_ctx=c.max_position_embeddings,
                   d_head=c.head_size, n_heads=c.num_attention_heads, d_mlp=c.intermediate_size,
                   d_vocab=c.vocab_size, d_vocab_out=model.embed_out.out_features, act_fn=c.hidden_act,
                   eps=c.layer_norm_eps, rotary_dim=c.rotary_ndims, rotary_base=c.rotary_emb_base,
                   parallel_attn_mlp=c.use_parallel_residual, tokenizer_prepends_bos=prepends,
                   model_name=getattr(model, "name_or_path", None) or "custom",
                   device=str(model.device), dtype=model.dtype)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


# ---- per-block weights --------------------------------------------------------------------------------------
class _ComponentView:
    """A module seen with TransformerLens's weight names; any other attribute (hook points ...) is the module's."""

    def __init__(self, module: nn.Module) -> None:
        self._module = module

    def __getattr__(self, name: str) -> Any:
        if name == "_module":  # not set yet (e.g. while unpickling): no recursion
            raise AttributeError(name)
        return getattr(self._module, name)


class _Circuits:
    """`OV` and `QK` of the class's `W_Q, W_K, W_V, W_O`: `[h, d, d]` per layer, `[l, h, d, d]` stacked."""

    @property
    def OV(self) -> Any:
        """`W_V @ W_O` of each head, factored."""
        return factored_matrix(self.W_V, self.W_O)

    @property
    def QK(self) -> Any:
        """`W_Q @ W_K.T` of each head, factored (rotary not included, as in TransformerLens)."""
        return factored_matrix(self.W_Q, self.W_K.transpose(-2, -1))


class AttentionView(_Circuits, _ComponentView):
    """`blocks[l].attn`: TL's per-layer attention weights as views of the interleaved `query_key_value`."""

    def _qkv(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        m = self._module  # query_key_value's rows are [head, q|k|v, d_head]
        h, dh = m.num_heads, m.head_size
        weight = m.query_key_value.weight.view(h, 3, dh, -1)[:, i].transpose(-2, -1)  # [h, d, dh]
        bias = m.query_key_value.bias
        return weight, (bias.view(h, 3, dh)[:, i] if bias is not None else weight.new_zeros(h, dh))

    W_Q = property(lambda self: self._qkv(0)[0], doc="`[h, d, dh]` (a view)")
    W_K = property(lambda self: self._qkv(1)[0], doc="`[h, d, dh]` (a view)")
    W_V = property(lambda self: self._qkv(2)[0], doc="`[h, d, dh]` (a view)")
    b_Q = property(lambda self: self._qkv(0)[1], doc="`[h, dh]` (a view; zeros without attention bias)")
    b_K = property(lambda self: self._qkv(1)[1], doc="`[h, dh]` (a view; zeros without attention bias)")
    b_V = property(lambda self: self._qkv(2)[1], doc="`[h, dh]` (a view; zeros without attention bias)")

    @property
    def W_O(self) -> torch.Tensor:
        """`[h, dh, d]` (a view of `dense.weight`)."""
        m = self._module
        return m.dense.weight.view(-1, m.num_heads, m.head_size).permute(1, 2, 0)

    @property
    def b_O(self) -> torch.Tensor:
        """`[d]`."""
        bias = self._module.dense.bias
        return bias if bias is not None else self._module.dense.weight.new_zeros(self._module.dense.out_features)


class MLPView(_ComponentView):
    """`blocks[l].mlp`: `W_in [d, m]`, `b_in [m]`, `W_out [m, d]`, `b_out [d]` (views)."""

    W_in = property(lambda self: self._module.dense_h_to_4h.weight.T)
    b_in = property(lambda self: self._module.dense_h_to_4h.bias)
    W_out = property(lambda self: self._module.dense_4h_to_h.weight.T)
    b_out = property(lambda self: self._module.dense_4h_to_h.bias)


class LayerNormView(_ComponentView):
    """`ln1`, `ln2`, `ln_final`: the LayerNorm with TL's `w` / `b` names (its hook points are its own)."""

    w = property(lambda self: self._module.weight)
    b = property(lambda self: self._module.bias)


class BlockView(_ComponentView):
    """`blocks[l]`: `attn`, `mlp`, `ln1`, `ln2`, and the layer's own hook points (`hook_resid_pre` ...)."""

    def __init__(self, layer: nn.Module) -> None:
        super().__init__(layer)
        self.attn, self.mlp = AttentionView(layer.attention), MLPView(layer.mlp)
        self.ln1, self.ln2 = LayerNormView(layer.input_layernorm), LayerNormView(layer.post_attention_layernorm)


def _stacked(component: str, attr: str, shape: str) -> property:
    """A property stacking `blocks[l].<component>.<attr>` over layers (a copy: layers are separate tensors)."""
    return property(lambda self: torch.stack([getattr(getattr(b, component), attr) for b in self.blocks]),
                    doc=f"`{shape}`, stacked over layers (a copy; `blocks[l].{component}.{attr}` is a view)")


# ---- the view -----------------------------------------------------------------------------------------------
class HookedTransformerView(_Circuits, nn.Module):
    """TransformerLens's `HookedTransformer` API over a workbench `GPTNeoXForCausalLM` (same modules, no copy).

    Args:
        model: the workbench model; it becomes `self.model` (so `.eval()`, `.to()`, `.parameters()` reach it).
    """

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.cfg = HookedTransformerConfig.from_model(model)
        base = model.base_model
        self.blocks = [BlockView(layer) for layer in base.layers]
        self.ln_final = LayerNormView(base.final_layer_norm)

    # The view has no state of its own: train/eval mode is the model's (TL's tools refuse a training model).
    training = property(lambda self: self._modules["model"].training if "model" in self._modules else False,
                        lambda self, mode: None)

    def _apply(self, fn: Callable, *args: Any, **kwargs: Any) -> "HookedTransformerView":
        out = super()._apply(fn, *args, **kwargs)  # .to() / .cuda() / .half(): keep cfg in step
        self.cfg.device, self.cfg.dtype = str(self.model.device), self.model.dtype
        return out

    # ---- weights ----------------------------------------------------------------------------------------
    @property
    def W_E(self) -> torch.Tensor:
        """`[v, d]` (the embedding weight itself)."""
        return self.model.base_model.embed_in.weight

    @property
    def W_U(self) -> torch.Tensor:
        """`[d, v]` (a view of `embed_out.weight`)."""
        return self.model.embed_out.weight.T

    @property
    def b_U(self) -> torch.Tensor:
        """`[v]` zeros: GPT-NeoX's unembedding has no bias."""
        return self.model.embed_out.weight.new_zeros(self.model.embed_out.out_features)

    W_Q = _stacked("attn", "W_Q", "[l, h, d, dh]")
    W_K = _stacked("attn", "W_K", "[l, h, d, dh]")
    W_V = _stacked("attn", "W_V", "[l, h, d, dh]")
    W_O = _stacked("attn", "W_O", "[l, h, dh, d]")
    b_Q = _stacked("attn", "b_Q", "[l, h, dh]")
    b_K = _stacked("attn", "b_K", "[l, h, dh]")
    b_V = _stacked("attn", "b_V", "[l, h, dh]")
    b_O = _stacked("attn", "b_O", "[l, d]")
    W_in = _stacked("mlp", "W_in", "[l, d, m]")
    b_in = _stacked("mlp", "b_in", "[l, m]")
    W_out = _stacked("mlp", "W_out", "[l, m, d]")
    b_out = _stacked("mlp", "b_out", "[l, d]")

    # ---- tokenizer --------------------------------------------------------------------------------------
    @property
    def tokenizer(self) -> Any:
        return self.model.tokenizer

    @tokenizer.setter
    def tokenizer(self, value: Any) -> None:
        self.model.tokenizer = value

    def _bos(self, prepend_bos: bool | None) -> bool:
        return self.cfg.default_prepend_bos if prepend_bos is None else bool(prepend_bos)

    def to_tokens(self, input: str | Sequence[str], prepend_bos: bool | None = None,
                  padding_side: str | None = None) -> torch.Tensor:
        """Token ids `[b, p]` of a string or list of strings (padded on `padding_side`, default the tokenizer's).

        Args:
            prepend_bos: default `cfg.default_prepend_bos` (False for GPT-NeoX, as TL 4.x; see the module doc).
        """
        return self.model.to_tokens(input, self._bos(prepend_bos), padding_side)

    def to_str_tokens(self, input: str | Sequence[str] | torch.Tensor | np.ndarray | Sequence[int],
                      prepend_bos: bool | None = None) -> list[str] | list[list[str]]:
        """Token strings of a text or of ids (squeezed as TL does: `[1, p]` gives one list); a list of texts or
        `[b, p]` ids give one list per row."""
        if torch.is_tensor(input) or isinstance(input, np.ndarray):
            ids = torch.as_tensor(input)
            input = ids.reshape(-1) if ids.dim() < 2 or ids.shape[0] == 1 else ids
        return self.model.to_str_tokens(input, self._bos(prepend_bos))

    def to_string(self, tokens: torch.Tensor | np.ndarray | Sequence[int]) -> str | list[str]:
        """Decode ids `[p]` (or a single id) to a string, `[b, p]` to a list of strings."""
        ids = torch.as_tensor(tokens)
        return self.model.to_string(ids.reshape(1) if ids.dim() == 0 else ids)

    def to_single_token(self, string: str) -> int:
        """The id of a one-token string (AssertionError otherwise, as in TransformerLens)."""
        try:
            return self.model.to_single_token(string)
        except ValueError as err:
            raise AssertionError(str(err)) from err

    def to_single_str_token(self, int_token: int) -> str:
        """The string of one token id."""
        return self.to_str_tokens(torch.tensor([int_token]))[0]

    def get_token_position(self, single_token: str | int, input: str | torch.Tensor, mode: str = "first",
                           prepend_bos: bool | None = None, padding_side: str | None = None) -> int:
        """Position of `single_token` in a text or in ids `[p]` / `[1, p]` (mode "first" or "last")."""
        tokens = self.to_tokens(input, prepend_bos, padding_side) if isinstance(input, str) else torch.as_tensor(input)
        if tokens.dim() == 2:
            assert tokens.shape[0] == 1, f"rank-2 tokens must have shape [1, pos], not {tuple(tokens.shape)}"
            tokens = tokens[0]
        token = self.to_single_token(single_token) if isinstance(single_token, str) else int(single_token)
        positions = (tokens == token).nonzero()[:, 0]
        assert len(positions) > 0, "The token does not occur in the prompt"
        if mode not in ("first", "last"):
            raise ValueError(f"mode must be 'first' or 'last', not {mode!r}")
        return int(positions[0 if mode == "first" else -1])

    # ---- running ----------------------------------------------------------------------------------------
    def _inputs(self, input: Any, prepend_bos: bool | None, padding_side: str | None, start_at_layer: int | None,
                tokens: torch.Tensor | None, attention_mask: torch.Tensor | None, stop_at_layer: int | None
                ) -> tuple[dict, torch.Tensor | None, torch.Tensor | None]:
        """TL's forward arguments -> (the model's keyword arguments, token ids for the loss, attention mask)."""
        if start_at_layer is not None:
            resid = torch.as_tensor(input)
            if not resid.is_floating_point():
                raise ValueError("start_at_layer takes the residual stream [batch, pos, d_model] entering that "
                                 "layer (e.g. cache['resid_pre', layer]); pass tokens= for the loss")
            kwargs = {"inputs_embeds": resid if resid.dim() == 3 else resid.unsqueeze(0),
                      "start_at_layer": start_at_layer}
        elif is_text(input):
            tokens, mask = self.model.to_tokens_and_mask(input, self._bos(prepend_bos), padding_side)
            # As TransformerLens: only left padding is masked (causal attention never reads right padding, but
            # the loss of right-padded texts then counts the padding; pass attention_mask= to leave it out).
            left = (padding_side or self.tokenizer.padding_side) == "left"
            attention_mask = mask if attention_mask is None and left and bool((mask == 0).any()) else attention_mask
            kwargs = {"input_ids": tokens}
        else:
            tokens = torch.as_tensor(input, device=self.model.device)
            tokens = tokens if tokens.dim() == 2 else tokens.unsqueeze(0)
            kwargs = {"input_ids": tokens}
        if attention_mask is not None:
            kwargs["attention_mask"] = attention_mask
        if stop_at_layer is not None:
            kwargs["stop_at_layer"] = stop_at_layer
        return kwargs, tokens, attention_mask

    @staticmethod
    def _result(out: torch.Tensor, return_type: str | None, loss_per_token: bool, tokens: torch.Tensor | None,
                mask: torch.Tensor | None, stopped: bool) -> Any:
        """Logits (or the residual, when stopped early) -> what `return_type` asks for."""
        if stopped or return_type == "logits":
            return out
        if return_type is None:
            return None
        if return_type not in ("loss", "both"):
            raise ValueError(f"return_type must be 'logits', 'loss', 'both' or None, got {return_type!r}")
        if tokens is None:
            raise ValueError("the loss needs token ids: pass tokens= along with start_at_layer")
        loss = lm_cross_entropy_loss(out, tokens, mask, loss_per_token)
        return loss if return_type == "loss" else (out, loss)

    def forward(
        self,
        input: str | Sequence[str] | torch.Tensor,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        start_at_layer: int | None = None,
        tokens: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        stop_at_layer: int | None = None,
    ) -> Any:
        """TransformerLens's forward.

        Args:
            input: a string, a list of strings (padded; left padding masked, as TL), token ids `[b, p]`, or with
                `start_at_layer` the residual stream `[b, p, d]` entering that layer.
            return_type: "logits" (`[b, p, v]`), "loss" (`lm_cross_entropy_loss`), "both" (`(logits, loss)`), None.
            loss_per_token: the loss `[b, p - 1]` of each prediction instead of the mean.
            prepend_bos, padding_side: for text input (default `cfg.default_prepend_bos`, the tokenizer's side).
            start_at_layer: run layers `start_at_layer..` on `input` (python-slice semantics, as TL).
            tokens: token ids `[b, p]` for the loss when `start_at_layer` is given.
            attention_mask: `[b, p]` (1 = token), for token-id input (texts make their own).
            stop_at_layer: return the residual stream `[b, p, d]` entering this layer (negative counts from the
                end; `n_layers` gives the last residual before `ln_final`, as `HookedTransformer` did).

        Returns:
            What `return_type` asks for, or the residual stream `[b, p, d]` with `stop_at_layer`.
        """
        kwargs, tokens, mask = self._inputs(input, prepend_bos, padding_side, start_at_layer, tokens,
                                            attention_mask, stop_at_layer)
        out = self.model(**kwargs, use_cache=False)
        logits = out if stop_at_layer is not None else out.logits
        return self._result(logits, return_type, loss_per_token, tokens, mask, stop_at_layer is not None)

    def run_with_cache(
        self,
        input: str | Sequence[str] | torch.Tensor,
        return_cache_object: bool = True,
        remove_batch_dim: bool = False,
        names_filter: Any = None,
        stop_at_layer: int | None = None,
        start_at_layer: int | None = None,
        pos_slice: Any = None,
        incl_bwd: bool = False,
        device: torch.device | str | None = None,
        return_type: str | None = "logits",
        loss_per_token: bool = False,
        prepend_bos: bool | None = None,
        padding_side: str | None = None,
        tokens: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
    ) -> tuple[Any, ActivationCache | dict[str, torch.Tensor]]:
        """TransformerLens's `run_with_cache`: the model's own (`workbench.hooks`), with TL's arguments.

        Args:
            return_cache_object: False returns the `{name: tensor}` dict (a `workbench.deferred.DeferredDict`:
                a dict whose scores / patterns / normalised inputs are computed when first read).
            remove_batch_dim: drop the batch dimension (batch size 1) from the cached values, not the output.
            names_filter, pos_slice, device: which activations to keep, where (see the model's `run_with_cache`).
            incl_bwd: also cache gradients (`name + "_grad"`) of the loss (`lm_cross_entropy_loss`).
            the rest: as in `forward`.

        Returns:
            (what `forward` returns, the workbench `ActivationCache`).
        """
        kwargs, tokens, mask = self._inputs(input, prepend_bos, padding_side, start_at_layer, tokens,
                                            attention_mask, stop_at_layer)
        if incl_bwd and tokens is not None:
            kwargs["backward_metric"] = lambda output: lm_cross_entropy_loss(output.logits, tokens, mask)
        out, cache = self.model.run_with_cache(None, names_filter, device=device, pos_slice=pos_slice,
                                               incl_bwd=incl_bwd, remove_batch_dim=remove_batch_dim, **kwargs)
        result = self._result(out, return_type, loss_per_token, tokens, mask, stop_at_layer is not None)
        return result, (cache if return_cache_object else cache.cache_dict)

    def run_with_hooks(
        self,
        input: str | Sequence[str] | torch.Tensor,
        fwd_hooks: Sequence[tuple[Any, Callable]] = (),
        bwd_hooks: Sequence[tuple[Any, Callable]] = (),
        reset_hooks_end: bool = True,
        clear_contexts: bool = False,
        **forward_kwargs: Any,
    ) -> Any:
        """`forward(input, **forward_kwargs)` with temporary hooks (`fn(tensor, hook=hook_point)`); see `hooks`."""
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            return self(input, **forward_kwargs)

    # ---- hooks: the model's own API -----------------------------------------------------------------------
    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[Any, Callable]] = (), bwd_hooks: Sequence[tuple[Any, Callable]] = (),
              reset_hooks_end: bool = True, clear_contexts: bool = False):
        """Context with these hooks attached (`model.hooks`); yields the view."""
        with self.model.hooks(fwd_hooks, bwd_hooks, reset_hooks_end, clear_contexts):
            yield self

    def add_hook(self, name: Any, hook: Callable, dir: str = "fwd", is_permanent: bool = False,
                 prepend: bool = False) -> list:
        """Attach `hook(tensor, hook=hook_point)` to a name, a list of names or a predicate (`model.add_hook`)."""
        return self.model.add_hook(name, hook, dir, is_permanent, prepend)

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False
                    ) -> None:
        """Remove hooks (`model.reset_hooks`)."""
        self.model.reset_hooks(clear_contexts, direction, including_permanent)

    @property
    def hook_dict(self) -> dict[str, HookPoint]:
        """TransformerLens name -> hook point, in forward order (the model's)."""
        return self.model.hook_dict

    @property
    def mod_dict(self) -> dict[str, nn.Module]:
        """TransformerLens name -> module: components (`blocks.0.attn`, `ln_final` ...) and hook points."""
        modules = dict(self.model.named_modules())
        out: dict[str, nn.Module] = {"embed": self.model.base_model.embed_in, "unembed": self.model.embed_out}
        for tl_name, path in COMPONENTS.values():
            if not tl_name:  # the base model (hook_embed's owner) has no TL name of its own
                continue
            for layer in range(self.cfg.n_layers) if "{L}" in tl_name else [None]:
                out[tl_name.replace("{L}", str(layer))] = modules[path.replace("{L}", str(layer))]
        return {**out, **self.hook_dict}

    def set_use_attn_result(self, use_attn_result: bool) -> None:
        """Informational: `hook_result` fires whenever it is hooked (TL's flag gates it)."""
        self.cfg.use_attn_result = use_attn_result

    def set_use_split_qkv_input(self, use_split_qkv_input: bool) -> None:
        """Informational: `blocks.L.hook_q_input` ... fire whenever they are hooked."""
        self.cfg.use_split_qkv_input = use_split_qkv_input

    # ---- generation -------------------------------------------------------------------------------------
    def generate(
        self,
        input: str | Sequence[str] | torch.Tensor = "",
        max_new_tokens: int = 10,
        stop_at_eos: bool = True,
        eos_token_id: int | None = None,
        do_sample: bool = True,
        top_k: int | None = None,
        top_p: float | None = None,
        temperature: float = 1.0,
        prepend_bos: bool | None = None,
        return_type: str = "input",
        verbose: bool = False,
        **kwargs: Any,
    ) -> str | list[str] | torch.Tensor:
        """TL's `generate` (sampling by default) through `workbench.generation.generate`, prompts left-padded.

        Args:
            return_type: "input" (strings for text input, ids for ids), "str" or "tokens".
            **kwargs: passed on (`seed`, `fwd_hooks`, `stop_strings` ...).

        Returns:
            ids `[b, prompt + new]`, or the decoded text (prompt included, as in TransformerLens).
        """
        if is_text(input):
            ids, mask = self.model.to_tokens_and_mask(input, self._bos(prepend_bos), "left")
        else:
            ids, mask = torch.as_tensor(input, device=self.model.device), None
        out = generate(self.model, ids, attention_mask=mask, max_new_tokens=max_new_tokens, do_sample=do_sample,
                       top_k=top_k, top_p=top_p, temperature=temperature, progress=verbose,
                       eos_token_id=eos_token_id if stop_at_eos else [], **kwargs)
        if return_type == "tokens" or (return_type == "input" and not is_text(input)):
            return out
        texts = self.to_string(out)
        return texts[0] if isinstance(input, str) else texts
