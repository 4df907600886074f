"""`ActivationCache`: the activations of one run, by TransformerLens name, and the residual-stream algebra on them.

Shapes: c components, b batch, p position, h heads, dh head size, d hidden, m MLP size, v vocabulary.

The model's weights are used as they are (no folding): `apply_ln` applies the cached LayerNorm scale *and*
the LayerNorm weight to components of one residual stream; the LayerNorm bias belongs to no component and is
reported separately (see `analysis.attribution`). `accumulated_resid(apply_ln=True)` entries are whole
residual streams, normalised each by the full LayerNorm, so its last entry @ W_U.T is exactly the logits.

TransformerLens leaves the LayerNorm weight out (it expects it folded into the next weights, see
`analysis.process_weights`): every method taking `apply_ln` also takes `convention="transformer_lens"` for that.
On a processed model (LayerNorm weight 1, bias 0) the two conventions coincide.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
import torch.nn.functional as F

from .deferred import Deferred, DeferredDict
from .hook_points import SITES, position_selector

# Shorthand -> component, from the site table: ("pattern", 3) is blocks.3.attn.hook_pattern.
_COMPONENT_OF = {s.attr.removeprefix("hook_"): s.component for s in SITES if s.component in ("attn", "mlp")}
_ALIASES = {"attn": "pattern", "attn_logits": "attn_scores", "key": "k", "query": "q", "value": "v",
            "mlp_pre": "pre", "mlp_post": "post"}
CONVENTIONS = ("workbench", "transformer_lens")
_LAYER_TYPES = {"a": "attn", "attention": "attn", "m": "mlp", "b": "", "block": "", "blocks": "",
                "ln1": "ln1", "ln2": "ln2", "attn": "attn", "mlp": "mlp", "": ""}


def _with_weight(convention: str) -> bool:
    """Whether `apply_ln` multiplies by the LayerNorm weight: yes in the workbench's convention, not in TL's."""
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS}, got {convention!r}")
    return convention == "workbench"


def act_name(name: str, layer: int | None = None, layer_type: str | None = None) -> str:
    """TransformerLens shorthand -> full hook name.

    `act_name("pattern", 3)` -> `blocks.3.attn.hook_pattern`; `act_name("resid_pre", 0)` ->
    `blocks.0.hook_resid_pre`; `act_name("scale", 2, "ln1")` -> `blocks.2.ln1.hook_scale`;
    `act_name("scale")` -> `ln_final.hook_scale`; `act_name("embed")` -> `hook_embed`. Full names pass through.
    """
    if "." in name or (name.startswith("hook_") and layer is None):
        return name
    name = _ALIASES.get(name, name)
    if name == "embed":
        return "hook_embed"
    if layer is None:
        if name in ("scale", "normalized"):
            return f"ln_final.hook_{name}"
        raise KeyError(f"{name!r} needs a layer, e.g. ({name!r}, 0)")
    if layer_type is None:
        layer_type = _COMPONENT_OF.get(name, "")
        if name in ("scale", "normalized"):
            raise KeyError(f"({name!r}, {layer}) needs the layer norm: ({name!r}, {layer}, 'ln1') or 'ln2'")
    elif layer_type not in _LAYER_TYPES:
        raise KeyError(f"unknown layer type {layer_type!r}; use one of {sorted(k for k in _LAYER_TYPES if k)}")
    else:
        layer_type = _LAYER_TYPES[layer_type]
    middle = f"{layer_type}." if layer_type else ""
    return f"blocks.{layer}.{middle}hook_{name}"


class ActivationCache:
    """Activations by hook name, from `model.run_with_cache`.

    Args:
        cache_dict: name -> tensor (gradients under `name + "_grad"`).
        model: the model that produced them (its config and weights serve the residual-stream methods).
        has_batch_dim: whether dimension 0 is the batch (False after `remove_batch_dim()`).
        pos_sliced: whether positions were sliced when caching (then LayerNorm scales are sliced alike).
    """

    def __init__(self, cache_dict: dict[str, torch.Tensor], model: Any, has_batch_dim: bool = True,
                 pos_sliced: bool = False) -> None:
        self.cache_dict = cache_dict  # kept as a DeferredDict (see the property)
        self.model = model
        self.has_batch_dim = has_batch_dim
        self.pos_sliced = pos_sliced

    # ---- dict-like ----------------------------------------------------------------------------------
    @property
    def cache_dict(self) -> DeferredDict:
        """name -> tensor. Attention scores / patterns cached by a full `run_with_cache` are computed when first
        read, by any route (`cache[...]`, `cache_dict[...]`, `values()`, `items()`, `dict(...)`, `torch.save`):
        see `workbench.deferred`. `pending()` lists those not read yet."""
        return self._cache_dict

    @cache_dict.setter
    def cache_dict(self, value: dict[str, Any]) -> None:
        self._cache_dict = value if isinstance(value, DeferredDict) else DeferredDict(value)

    def _map(self, fn: Callable[[torch.Tensor], torch.Tensor]) -> DeferredDict:
        """`fn` applied to every entry; entries not read yet stay deferred (`fn` is applied when they are)."""
        return DeferredDict({k: v.map(fn) if isinstance(v, Deferred) else fn(v) for k, v in self.cache_dict.raw_items()})

    def pending(self) -> list[str]:
        """Names of the entries that will be computed when first read (none are, unless read)."""
        return self.cache_dict.pending()

    @property
    def n_layers(self) -> int:
        return self.model.config.num_hidden_layers

    def _full_name(self, key: Any) -> str:
        if isinstance(key, str):
            return act_name(key) if key in ("embed", "scale", "normalized") else key
        if isinstance(key, tuple) and key and isinstance(key[0], str):
            name, layer = key[0], key[1] if len(key) > 1 else None
            layer_type = key[2] if len(key) > 2 else None
            if len(key) > 3:
                raise KeyError(f"cache keys are name or (name, layer[, layer_type]), got {key!r}")
            if layer is not None:
                if not isinstance(layer, int):
                    raise KeyError(f"layer must be an int, got {layer!r}")
                if not -self.n_layers <= layer < self.n_layers:
                    raise KeyError(f"layer {layer} is out of range for a {self.n_layers}-layer model")
                layer %= self.n_layers
            return act_name(name, layer, layer_type)
        raise KeyError(f"cache keys are a hook name or a tuple (name, layer[, layer_type]), got {key!r}")

    def __getitem__(self, key: Any) -> torch.Tensor:
        """`cache["blocks.0.hook_resid_pre"]`, `cache["pattern", 3]`, `cache["resid_pre", -1]`,
        `cache["scale", 2, "ln1"]`, `cache["scale"]` (ln_final)."""
        name = self._full_name(key)
        if name in self.cache_dict:
            return self.cache_dict[name]
        valid = list(self.cache_dict)
        hook_names = getattr(self.model, "hook_dict", {})
        if name.removesuffix("_grad") in hook_names:
            raise KeyError(f"{name!r} was not cached: run_with_cache(names_filter=...) stored {len(valid)} "
                           f"values; include it in names_filter (or pass incl_bwd=True for gradients)")
        close = difflib.get_close_matches(name, valid + list(hook_names), n=5, cutoff=0.5)
        raise KeyError(f"no activation named {name!r}; closest valid names: {close}")

    def __contains__(self, key: Any) -> bool:
        try:
            return self._full_name(key) in self.cache_dict
        except KeyError:
            return False

    def __iter__(self) -> Iterator[str]:
        return iter(self.cache_dict)

    def __len__(self) -> int:
        return len(self.cache_dict)

    def keys(self):
        return self.cache_dict.keys()

    def values(self):
        return self.cache_dict.values()

    def items(self):
        return self.cache_dict.items()

    def __repr__(self) -> str:
        return f"ActivationCache with keys {list(self.cache_dict)}"

    def nbytes(self, include_pending: bool = True) -> int:
        """Bytes of the stored tensors; with `include_pending`, entries not read yet count as the size they will
        have, else 0 (they hold no value yet, only references to what the forward used: its rotated queries and
        keys, a LayerNorm's input and statistics; a full cache holds those as `hook_rot_q/k` and the residual
        stream, a filtered one may not)."""
        pending = set(self.pending())
        return sum(v.shape.numel() * v.dtype.itemsize for k, v in self.cache_dict.raw_items()
                   if include_pending or k not in pending)

    def to(self, device: torch.device | str) -> "ActivationCache":
        """Move every stored tensor to `device` (in place); returns self."""
        self.cache_dict = {k: v.to(device) for k, v in self.cache_dict.items()}
        return self

    def remove_batch_dim(self) -> "ActivationCache":
        """Drop the batch dimension of a batch-of-one cache (in place); returns self."""
        if not self.has_batch_dim:
            return self
        sizes = {k: v.shape[0] for k, v in self.cache_dict.raw_items()}
        if any(s != 1 for s in sizes.values()):
            raise ValueError(f"remove_batch_dim needs batch size 1, got sizes {sorted(set(sizes.values()))}")
        self.cache_dict = self._map(lambda t: t[0])
        self.has_batch_dim = False
        return self

    def apply_slice_to_batch_dim(self, batch_slice: Any) -> "ActivationCache":
        """A new cache holding these batch rows (an int drops the batch dimension), sharing the model.

        Args:
            batch_slice: an int, a slice, or a list / 1-D tensor of row indices (a tuple too, as indices, like
                every `pos_slice` of the workbench; TransformerLens reads a tuple as slice arguments).
        """
        if not self.has_batch_dim:
            raise ValueError("this cache has no batch dimension to slice (remove_batch_dim() was applied)")
        sliced = self._map(lambda t: self._slice_pos(t, batch_slice, 0))
        return ActivationCache(sliced, self.model, has_batch_dim=not isinstance(batch_slice, int),
                               pos_sliced=self.pos_sliced)

    # ---- model pieces --------------------------------------------------------------------------------
    def _base(self):
        return self.model.base_model

    def _ln(self, layer: int | None, mlp_input: bool):
        """The LayerNorm module and its scale hook name reading the residual before `layer` (None: final)."""
        if layer is None or layer >= self.n_layers:
            return self._base().final_layer_norm, "ln_final.hook_scale"
        which = "ln2" if mlp_input else "ln1"
        block = self._base().layers[layer]
        module = block.post_attention_layernorm if mlp_input else block.input_layernorm
        return module, f"blocks.{layer}.{which}.hook_scale"

    def _norm_layer(self, layer: int | None) -> int:
        if layer is None or layer == -1:
            return self.n_layers
        if not 0 <= layer <= self.n_layers:
            raise ValueError(f"layer must be in [0, {self.n_layers}] or -1/None (all), got {layer}")
        return layer

    @staticmethod
    def _slice_pos(t: torch.Tensor, pos_slice: Any, dim: int) -> torch.Tensor:
        if pos_slice is None:
            return t
        return position_selector(pos_slice)(t, dim % t.dim())  # the hook API's rule: out-of-range positions raise

    # ---- layer norm on stacks ----------------------------------------------------------------------
    def apply_ln_to_stack(
        self,
        residual_stack: torch.Tensor,
        layer: int | None = None,
        mlp_input: bool = False,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        include_weight: bool | None = None,
        include_bias: bool = False,
        recompute_ln: bool = False,
        convention: str = "workbench",
    ) -> torch.Tensor:
        """Apply the LayerNorm reading the residual at `layer` to each component, with the cached scale.

        LayerNorm is linear once its scale is fixed: each component is centred, divided by the scale the
        whole residual had in this run, and multiplied by the LayerNorm weight (the workbench's convention; not
        in TransformerLens's, which expects the weight folded). Summing the components then gives the
        normalised residual minus the bias.

        Args:
            residual_stack: `[c, b, p, d]` (or `[c, p, d]` / `[c, b, d]` after slicing) residual components.
            layer: whose input LayerNorm: None/-1/n_layers is ln_final; with `mlp_input` the layer's ln2.
            pos_slice: the positions `residual_stack` was sliced to (the scale is sliced alike).
            batch_slice: the batch rows it was sliced to.
            include_weight: multiply by the LayerNorm weight (default: as `convention` says).
            include_bias: add the LayerNorm bias to every component (right only when each is a whole residual).
            recompute_ln: at ln_final, normalise each entry with its own statistics through the whole LayerNorm
                (weight and bias), for stacks of whole residuals (the logit lens), as TransformerLens's.
            convention: "workbench" (weight included) or "transformer_lens" (left out).

        Returns:
            `residual_stack`'s shape.
        """
        layer = self._norm_layer(layer)
        module, scale_name = self._ln(layer, mlp_input)
        if recompute_ln and layer == self.n_layers:
            dtype = residual_stack.dtype
            return F.layer_norm(residual_stack, module.normalized_shape, module.weight.detach().to(dtype),
                                module.bias.detach().to(dtype), module.eps)
        if include_weight is None:
            include_weight = _with_weight(convention)
        if scale_name not in self.cache_dict:
            raise KeyError(f"apply_ln needs {scale_name!r} in the cache; include it in names_filter")
        scale = self.cache_dict[scale_name]  # [b, p, 1]
        if batch_slice is not None and self.has_batch_dim and has_batch_dim:
            scale = scale[batch_slice] if not isinstance(batch_slice, int) else scale[batch_slice:batch_slice + 1]
        if not self.pos_sliced:
            scale = self._slice_pos(scale, pos_slice, -2)
        centred = residual_stack - residual_stack.mean(-1, keepdim=True)
        out = centred / scale.to(centred.dtype)
        if include_weight:
            out = out * module.weight.detach().to(out.dtype)
        if include_bias:
            out = out + module.bias.detach().to(out.dtype)
        return out

    # ---- residual stream ---------------------------------------------------------------------------
    def accumulated_resid(
        self,
        layer: int | None = None,
        incl_mid: bool = False,
        apply_ln: bool = False,
        pos_slice: Any = None,
        mlp_input: bool = False,
        return_labels: bool = False,
        convention: str = "workbench",
    ):
        """The residual stream as it stood before each layer: `resid_pre` 0..layer (and `final_post`).

        Args:
            layer: up to and including `resid_pre` of this layer; None/-1/n_layers: all of them plus the final
                `resid_post` (label `final_post`).
            incl_mid: also `resid_mid` of each layer (sequential-residual models only).
            apply_ln: apply the LayerNorm that reads the residual at `layer` (ln_final for all layers) to each
                entry, with the entry's own statistics, weight and bias included (the logit lens): the last
                entry then maps to the logits exactly. With `convention="transformer_lens"` the same at
                ln_final, but for `layer < n_layers` TransformerLens's: centred and divided by the cached scale
                of that layer's ln1/ln2, without weight or bias.
            pos_slice: keep these positions (an int drops the dimension).
            mlp_input: for `layer < n_layers`, include `resid_mid` of `layer` and use its ln2.
            return_labels: also return the labels (`0_pre`, `0_mid`, ..., `final_post`).
            convention: "workbench" or "transformer_lens" (see `apply_ln`).

        Returns:
            `[c, b, p, d]` (and the labels).
        """
        layer = self._norm_layer(layer)
        tl = not _with_weight(convention)
        parts, labels = [], []
        for l in range(layer + 1):
            if l == self.n_layers:
                parts.append(self["resid_post", self.n_layers - 1])
                labels.append("final_post")
                continue
            parts.append(self["resid_pre", l])
            labels.append(f"{l}_pre")
            if (incl_mid and l < layer) or (mlp_input and l == layer):
                parts.append(self[self._require_mid(l)])
                labels.append(f"{l}_mid")
        stack = self._slice_pos(torch.stack(parts), pos_slice, -2)
        if apply_ln and tl and layer < self.n_layers:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input, pos_slice, convention=convention)
        elif apply_ln:
            # Each entry is a whole residual stream: normalise it with its own statistics (as TransformerLens
            # does at ln_final), weight and bias included. The final entry is exactly what the unembedding reads.
            module, _ = self._ln(layer, mlp_input)
            stack = F.layer_norm(stack, module.normalized_shape, module.weight.detach(), module.bias.detach(),
                                 module.eps)
        return (stack, labels) if return_labels else stack

    def _require_mid(self, layer: int) -> str:
        name = f"blocks.{layer}.hook_resid_mid"
        if self.model.config.use_parallel_residual:
            raise ValueError("this model has a parallel residual: there is no resid_mid (hook_resid_mid)")
        return name

    def decompose_resid(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        mode: str = "all",
        apply_ln: bool = False,
        pos_slice: Any = None,
        incl_embeds: bool = True,
        return_labels: bool = False,
        convention: str = "workbench",
    ):
        """Split the residual stream before `layer` into what wrote it: `embed`, then `{L}_attn_out`,
        `{L}_mlp_out` for each earlier layer. The components sum to the residual (`resid_pre` of `layer`,
        or the final `resid_post`).

        Args:
            layer: None/-1/n_layers: everything, summing to the final residual.
            mlp_input: decompose what `layer`'s MLP reads: with a sequential residual that adds `layer`'s own
                attention output; with a parallel one it is `resid_pre` (TransformerLens adds it anyway).
            mode: "all", "attn" or "mlp": which layer outputs to include.
            apply_ln: apply the LayerNorm reading that residual (scale and weight, not the bias).
            pos_slice: keep these positions.
            incl_embeds: include the embedding.
            return_labels: also return the labels.
            convention: "workbench" or "transformer_lens" (`apply_ln` without the LayerNorm weight).

        Returns:
            `[c, b, p, d]` (and the labels).
        """
        if mode not in ("all", "attn", "mlp"):
            raise ValueError(f"mode must be 'all', 'attn' or 'mlp', got {mode!r}")
        layer = self._norm_layer(layer)
        parts, labels = [], []
        if incl_embeds:
            parts.append(self["hook_embed"])
            labels.append("embed")
        for l in range(layer):
            if mode in ("all", "attn"):
                parts.append(self["attn_out", l])
                labels.append(f"{l}_attn_out")
            if mode in ("all", "mlp"):
                parts.append(self["mlp_out", l])
                labels.append(f"{l}_mlp_out")
        if self._mlp_reads_attn(layer, mlp_input) and mode in ("all", "attn"):
            parts.append(self["attn_out", layer])
            labels.append(f"{layer}_attn_out")
        if not parts:
            raise ValueError("decompose_resid selected no component")
        stack = self._slice_pos(torch.stack(parts), pos_slice, -2)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input, pos_slice, convention=convention)
        return (stack, labels) if return_labels else stack

    def _mlp_reads_attn(self, layer: int, mlp_input: bool) -> bool:
        """Whether the MLP input of `layer` holds that layer's own attention output (sequential residual)."""
        return mlp_input and layer < self.n_layers and not self.model.config.use_parallel_residual

    # ---- heads and neurons -------------------------------------------------------------------------
    def head_results(self, layer: int) -> torch.Tensor:
        """Per-head outputs of `layer` `[b, p, h, d]`, before the output bias: `hook_result` if cached, else
        computed from `hook_z` and the output weight."""
        name = f"blocks.{layer}.attn.hook_result"
        if name in self.cache_dict:
            return self.cache_dict[name]
        z = self["z", layer]  # [b, p, h, dh]
        attn = self._base().layers[layer].attention
        w_out = attn.dense.weight.detach().view(-1, attn.num_heads, attn.head_size)  # [d, h, dh]
        return torch.einsum("...hf,dhf->...hd", z, w_out.to(z.dtype))

    def stack_head_results(
        self,
        layer: int = -1,
        return_labels: bool = False,
        incl_remainder: bool = False,
        pos_slice: Any = None,
        apply_ln: bool = False,
        convention: str = "workbench",
    ):
        """Every head's output to the residual stream, for the layers before `layer` (-1/None: all).

        Args:
            incl_remainder: add a `remainder` component: the residual before `layer` minus all heads.
            apply_ln: apply the LayerNorm reading the residual at `layer` (scale and weight; without the weight
                with `convention="transformer_lens"`).

        Returns:
            `[layers * heads (+1), b, p, d]` with labels `L{l}H{h}` (and `remainder`).
        """
        layer = self._norm_layer(layer)
        parts, labels = [], []
        for l in range(layer):
            result = self.head_results(l)  # [b, p, h, d]
            parts.append(result.movedim(-2, 0))
            labels += [f"L{l}H{h}" for h in range(result.shape[-2])]
        if not parts:
            raise ValueError("stack_head_results(layer=0) has no heads before layer 0")
        stack = torch.cat(parts)
        if incl_remainder:
            total = self.accumulated_resid(layer)[-1]
            stack = torch.cat([stack, (total - stack.sum(0))[None]])
            labels.append("remainder")
        stack = self._slice_pos(stack, pos_slice, -2)
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, convention=convention)
        return (stack, labels) if return_labels else stack

    def stack_neuron_results(
        self,
        layer: int,
        pos_slice: Any = None,
        neuron_slice: Any = None,
        return_labels: bool = False,
        incl_remainder: bool = False,
        apply_ln: bool = False,
        convention: str = "workbench",
    ):
        """Each MLP neuron's output to the residual stream (`post[n] * W_out[:, n]`), for layers before `layer`.

        Args:
            layer: layers 0..layer-1 (-1/None: all).
            neuron_slice: which neurons of each layer (int, slice or list; default all). Bias excluded.
            incl_remainder: add the residual before `layer` minus all neurons as `remainder`.
            apply_ln, convention: as `stack_head_results`.

        Returns:
            `[layers * neurons (+1), b, p, d]` with labels `L{l}N{n}`.
        """
        layer = self._norm_layer(layer)
        parts, labels = [], []
        m = self.model.config.intermediate_size
        index = torch.arange(m)
        if neuron_slice is not None:
            index = index[neuron_slice] if not isinstance(neuron_slice, (list, tuple)) else index[list(neuron_slice)]
            index = index.reshape(-1)
        for l in range(layer):
            post = self._slice_pos(self["post", l], pos_slice, -2)[..., index.to(self["post", l].device)]
            w = self._base().layers[l].mlp.dense_4h_to_h.weight.detach()[:, index]  # [d, n]
            parts.append(torch.einsum("...n,dn->n...d", post, w.to(post.dtype)))
            labels += [f"L{l}N{int(n)}" for n in index]
        if not parts:
            raise ValueError("stack_neuron_results(layer=0) has no neurons before layer 0")
        stack = torch.cat(parts)
        if incl_remainder:
            total = self._slice_pos(self.accumulated_resid(layer)[-1], pos_slice, -2)
            stack = torch.cat([stack, (total - stack.sum(0))[None]])
            labels.append("remainder")
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, pos_slice=pos_slice, convention=convention)
        return (stack, labels) if return_labels else stack

    def get_full_resid_decomposition(
        self,
        layer: int | None = None,
        mlp_input: bool = False,
        expand_neurons: bool = True,
        apply_ln: bool = False,
        pos_slice: Any = None,
        return_labels: bool = False,
        convention: str = "workbench",
    ):
        """The residual stream read at `layer` split as finely as it goes: every head's output (`L{l}H{h}`), every
        neuron's (`L{l}N{n}`, or each MLP's `{l}_mlp_out` without `expand_neurons`), `embed`, and `bias` (the
        attention and MLP output biases, which belong to no head or neuron); the components sum to that residual.
        Order and labels are TransformerLens's.

        Args:
            layer: the residual `layer` reads (None/-1/n_layers: the final one).
            mlp_input: what `layer`'s MLP reads: with a sequential residual that adds `layer`'s heads and output
                bias; with a parallel one it is `resid_pre` (TransformerLens adds the heads anyway).
            expand_neurons: one component per neuron (else one per MLP, its output bias included).
            apply_ln: apply the LayerNorm reading that residual, with its cached scale (and, in the workbench's
                convention, its weight; `convention="transformer_lens"` leaves the weight out).
            pos_slice: keep these positions.
            return_labels: also return the labels.

        Returns:
            `[c, b, p, d]` (and the labels).
        """
        layer = self._norm_layer(layer)
        with_attn = self._mlp_reads_attn(layer, mlp_input)
        parts, labels = [], []
        if layer + with_attn > 0:
            heads, head_labels = self.stack_head_results(layer + with_attn, return_labels=True, pos_slice=pos_slice)
            parts.append(heads)
            labels += head_labels
        if layer > 0 and expand_neurons:
            neurons, neuron_labels = self.stack_neuron_results(layer, pos_slice=pos_slice, return_labels=True)
        elif layer > 0:
            neurons, neuron_labels = self.decompose_resid(layer, mode="mlp", pos_slice=pos_slice, incl_embeds=False,
                                                          return_labels=True)
        if layer > 0:
            parts.append(neurons)
            labels += neuron_labels
        embed = self._slice_pos(self["hook_embed"], pos_slice, -2)[None]
        bias = torch.zeros(embed.shape[-1], dtype=embed.dtype, device=embed.device)
        for l in range(layer + with_attn):
            block = self._base().layers[l]
            written = [block.attention.dense.bias]
            if expand_neurons and l < layer:  # else each MLP's bias is in its `{l}_mlp_out`
                written.append(block.mlp.dense_4h_to_h.bias)
            bias = bias + sum(b.detach().to(embed.dtype) for b in written if b is not None)
        stack = torch.cat(parts + [embed, bias.expand_as(embed)])
        labels += ["embed", "bias"]
        if apply_ln:
            stack = self.apply_ln_to_stack(stack, layer, mlp_input, pos_slice, convention=convention)
        return (stack, labels) if return_labels else stack

    def compute_head_results(self) -> "ActivationCache":
        """Store every layer's per-head outputs `blocks.L.attn.hook_result` `[b, p, h, d]` (before the output bias),
        computed from `hook_z` and the output weight, as TransformerLens's (a full cache leaves them out: they
        are `heads` times the size of `hook_attn_out`). Results already cached stay. Returns self."""
        for l in range(self.n_layers):
            self.cache_dict.setdefault(f"blocks.{l}.attn.hook_result", self.head_results(l))
        return self

    def stack_activation(self, activation_name: str, layer: int = -1, sublayer_type: str | None = None
                         ) -> torch.Tensor:
        """One activation of every layer before `layer` (-1/None: all layers), stacked: `[layers, ...]`.

        Args:
            activation_name: a shorthand (`"pattern"`, `"resid_pre"`, `"scale"` ...) or a name `act_name` knows.
            sublayer_type: as in `act_name` (e.g. "ln1" for `"scale"`); usually inferred.
        """
        layer = self._norm_layer(layer)
        if layer == 0:
            raise ValueError("stack_activation(layer=0) stacks no layer; layers 0..layer-1 are stacked")
        return torch.stack([self[(activation_name, l, sublayer_type)] for l in range(layer)])

    # ---- logits -------------------------------------------------------------------------------------
    def unembedding(self) -> torch.Tensor:
        """W_U as stored: `[v, d]` (`embed_out.weight`)."""
        if not hasattr(self.model, "embed_out"):
            raise TypeError(f"{type(self.model).__name__} has no unembedding (embed_out); use a causal LM")
        return self.model.embed_out.weight.detach()

    def logit_attrs(
        self,
        residual_stack: torch.Tensor,
        tokens: int | str | torch.Tensor | Sequence[int],
        incorrect_tokens: int | str | torch.Tensor | Sequence[int] | None = None,
        pos_slice: Any = None,
        batch_slice: Any = None,
        has_batch_dim: bool = True,
        convention: str = "workbench",
    ) -> torch.Tensor:
        """Each component's direct contribution to the logit of `tokens` (minus that of `incorrect_tokens`).

        As in TransformerLens, the stack is taken raw and the final LayerNorm is applied here, with the cached
        scale (and, the weights being unfolded, the LayerNorm weight: with `convention="transformer_lens"` it is
        left out, which is right only on a processed model). The LayerNorm bias is no component's:
        `logit_attrs(decompose_resid(), t).sum(0) + ln_final.bias @ W_U[t]` is the logit.

        Args:
            residual_stack: `[c, b, p, d]` raw components (`[c, b, d]` etc. after `pos_slice`).
            tokens: an id or single-token string, or ids matching the stack's leading dims (`[b]`, `[b, p]`);
                `[b]` against a stack with positions applies to every position.
            incorrect_tokens: same form; the result is then a logit difference.
            pos_slice, batch_slice: how the stack was sliced (the cached scale is sliced alike).
            convention: "workbench" (the LayerNorm weight applied) or "transformer_lens" (left out).

        Returns:
            `[c, ...]`: `LN(residual_stack) @ (W_U[tokens] - W_U[incorrect_tokens])`.
        """
        scaled = self.apply_ln_to_stack(residual_stack, None, pos_slice=pos_slice, batch_slice=batch_slice,
                                        has_batch_dim=has_batch_dim, convention=convention)
        return self.project_to_logits(scaled, tokens, incorrect_tokens)

    def project_to_logits(
        self,
        normalized_stack: torch.Tensor,
        tokens: int | str | torch.Tensor | Sequence[int],
        incorrect_tokens: int | str | torch.Tensor | Sequence[int] | None = None,
    ) -> torch.Tensor:
        """`normalized_stack @ (W_U[tokens] - W_U[incorrect_tokens])` for an already normalised `[c, ..., d]`."""
        direction = self._direction(tokens)
        if incorrect_tokens is not None:
            wrong = self._direction(incorrect_tokens)
            if wrong.shape != direction.shape:
                raise ValueError(f"tokens and incorrect_tokens must have the same shape, got "
                                 f"{tuple(direction.shape[:-1])} and {tuple(wrong.shape[:-1])}")
            direction = direction - wrong
        lead = normalized_stack.dim() - 2  # dims between the component dim and d
        if direction.dim() - 1 > lead:
            raise ValueError(f"tokens of shape {tuple(direction.shape[:-1])} do not fit a stack of shape "
                             f"{tuple(normalized_stack.shape)}")
        while direction.dim() - 1 < lead and direction.dim() > 1:
            direction = direction.unsqueeze(-2)  # [b, d] -> [b, 1, d]: the same token at every position
        return (normalized_stack * direction.to(normalized_stack.dtype)).sum(-1)

    def _direction(self, tokens: Any) -> torch.Tensor:
        w_u = self.unembedding()
        return w_u[self._token_ids(tokens).to(w_u.device)]  # tokens.shape + [d]

    def _token_ids(self, tokens: Any) -> torch.Tensor:
        """Ids (any shape) from ids, or single-token strings (alone or in a list)."""
        if isinstance(tokens, (list, tuple)) and any(isinstance(t, str) for t in tokens):
            return torch.stack([self._token_ids(t) for t in tokens])
        if isinstance(tokens, str):
            tokenizer = getattr(self.model, "tokenizer", None)
            if tokenizer is None:
                raise ValueError("string tokens need model.tokenizer; pass token ids")
            ids = tokenizer.encode(tokens, add_special_tokens=False)
            if len(ids) != 1:
                raise ValueError(f"{tokens!r} is {len(ids)} tokens, not one: {ids}")
            tokens = ids[0]
        ids = torch.as_tensor(tokens, dtype=torch.long)
        vocab = self.unembedding().shape[0]
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= vocab):
            raise ValueError(f"token ids must be in [0, {vocab - 1}]")
        return ids

    def logit_lens(
        self,
        *,
        layers: Sequence[int] | None = None,
        incl_mid: bool = False,
        positions: Any = -1,
        batch_slice: Any = None,
        lens: Callable[[torch.Tensor, int], torch.Tensor] | None = None,
        apply_ln: bool = True,
        vocab: Sequence[int] | torch.Tensor | None = None,
        targets: Any = None,
        return_type: str = "logits",
        top_k: int | None = None,
        chunk_size: int = 64,
        enable_grad: bool = False,
    ) -> "LogitLensResult":
        """The logit lens over this cache, with TransformerLens 4.3's signature (`cache.logit_lens(...)`).

        Each entry of `accumulated_resid` goes through the whole final LayerNorm (its own statistics, weight and
        bias) and the unembedding (`embed_out`, with its bias if it has one), `chunk_size` rows at a time, so
        `[entries, b, p, v]` never exists unless the whole vocabulary is asked for. The last entry is the model's
        own logits.

        Args:
            layers: indices into the stack (negative allowed); None: every entry.
            incl_mid: include `resid_mid` entries (sequential residual).
            positions: which positions (an int drops the dimension; None: all).
            batch_slice: which batch rows.
            lens: `f(entry, index) -> entry` applied to each entry before the LayerNorm (e.g. a tuned lens).
            apply_ln: apply the final LayerNorm (False reads the raw stream).
            vocab, targets, top_k: at most one: keep these token ids; or report these tokens' values and ranks
                (an id / single-token string / list of them shared by every row, or a tensor of ids per row,
                right-aligned to `[entries, b, p]`); or keep the k largest.
            return_type: "logits", "log_probs" or "probs".
            enable_grad: keep autograd (default: no_grad).

        Returns:
            a `LogitLensResult`.
        """
        if return_type not in ("logits", "log_probs", "probs"):
            raise ValueError(f"return_type must be 'logits', 'log_probs' or 'probs', got {return_type!r}")
        if sum(x is not None for x in (vocab, targets, top_k)) > 1:
            raise ValueError("pass at most one of vocab, targets and top_k")
        stack, labels = self.accumulated_resid(incl_mid=incl_mid, pos_slice=positions, return_labels=True)
        keep = list(range(len(labels))) if layers is None else [int(l) for l in layers]
        if any(not -len(labels) <= l < len(labels) for l in keep):
            raise ValueError(f"layers index the stack's {len(labels)} entries {labels}, got {list(layers)}")
        keep = [l % len(labels) for l in keep]
        stack, labels = stack[keep], [labels[i] for i in keep]
        has_batch_dim = self.has_batch_dim
        if has_batch_dim and batch_slice is not None:
            stack = self._slice_pos(stack, batch_slice, 1)
            has_batch_dim = not isinstance(batch_slice, int)
        per_row = torch.is_tensor(targets) and targets.dim() >= 1  # else shared by every row
        target_ids = None if targets is None else self._token_ids(targets)
        if target_ids is not None and not per_row:
            target_ids = target_ids.reshape(-1)
        select = self._token_ids(vocab).reshape(-1) if vocab is not None else None if per_row else target_ids
        unembed = self.model.embed_out
        with torch.enable_grad() if enable_grad else torch.no_grad():
            if lens is not None:
                stack = torch.stack([lens(stack[i], keep[i]) for i in range(len(keep))])
            if apply_ln:
                stack = self.apply_ln_to_stack(stack, None, recompute_ln=True)
            lead = stack.shape[:-1]
            flat = stack.reshape(-1, stack.shape[-1]).to(unembed.weight.dtype)
            rows = target_ids.to(flat.device).expand(lead).reshape(-1, 1) if per_row else None  # right-aligned
            select = None if select is None else select.to(flat.device)
            values, entropy, ranks, tops = [], [], [], []
            for start in range(0, flat.shape[0], chunk_size):
                logits = unembed(flat[start:start + chunk_size])  # [n, v]
                log_probs = logits.float().log_softmax(-1)
                entropy.append(-(log_probs.exp() * log_probs).sum(-1))
                if return_type == "logits":
                    quantity = logits
                else:
                    quantity = log_probs if return_type == "log_probs" else log_probs.exp()
                if target_ids is not None:  # ranks count strictly larger logits (0 = the top)
                    cols = rows[start:start + chunk_size] if per_row else select.expand(len(logits), -1)  # [n, t]
                    ranks.append((logits.unsqueeze(1) > logits.gather(-1, cols).unsqueeze(-1)).sum(-1))
                    values.append(quantity.gather(-1, cols))
                elif top_k is not None:
                    tops.append(logits.topk(top_k, dim=-1).indices)
                    values.append(quantity.gather(-1, tops[-1]))
                else:
                    values.append(quantity if select is None else quantity[:, select])

        def cat(parts: list[torch.Tensor]) -> torch.Tensor | None:
            return torch.cat(parts).reshape(*lead, -1) if parts else None

        names = None
        if targets is not None and not per_row:
            names = [t if isinstance(t, str) else None for t in (targets if isinstance(targets, (list, tuple))
                                                                 else [targets])]
        return LogitLensResult(values=cat(values), labels=labels, return_type=return_type,
                               entropy=torch.cat(entropy).reshape(lead), has_batch_dim=has_batch_dim,
                               top_ids=cat(tops), vocab_ids=select if vocab is not None else None,
                               target_ids=target_ids, target_ranks=cat(ranks), per_row_targets=per_row,
                               target_names=names, applied_ln=apply_ln)


@dataclass
class LogitLensResult:
    """`ActivationCache.logit_lens`'s result: TransformerLens 4.3's `LogitLensResult` and its `LogitReadout` in one
    (`result.readout` is the result itself, so `result.readout.entropy` works as there).

    Attributes:
        values: `[entries, b, p, selected]` (b and p as `positions` / `batch_slice` left them): the targets
            (`[..., 1]` for per-row targets), the top k, the `vocab` subset, or the whole vocabulary.
        labels: each entry's label (`0_pre`, ..., `final_post`).
        return_type: "logits", "log_probs" or "probs".
        entropy: `[entries, b, p]` entropy of the whole-vocabulary softmax (nats).
        has_batch_dim: whether a batch dimension follows the entries.
        top_ids: `[entries, b, p, k]` with `top_k`; vocab_ids: the `vocab` subset.
        target_ids: `[t]` shared targets, or the per-row ids; target_ranks: `[..., t]` whole-vocabulary rank.
        per_row_targets: whether the targets were a tensor of per-row ids.
        target_names: the strings passed as shared targets (None where an id was passed).
        applied_ln: whether the final LayerNorm was applied.
    """

    values: torch.Tensor
    labels: list[str]
    return_type: str
    entropy: torch.Tensor
    has_batch_dim: bool
    top_ids: torch.Tensor | None = None
    vocab_ids: torch.Tensor | None = None
    target_ids: torch.Tensor | None = None
    target_ranks: torch.Tensor | None = None
    per_row_targets: bool = False
    target_names: list[str | None] | None = None
    applied_ln: bool = True

    @property
    def readout(self) -> "LogitLensResult":
        return self

    def rank_trajectory(self, target: int | str | None = None) -> torch.Tensor:
        """The rank of one target at every entry `[entries, b, p]` (None: the only target, or the per-row ones)."""
        if self.target_ranks is None:
            raise ValueError("rank_trajectory needs a lens run with targets=...")
        if target is None:
            if not self.per_row_targets and self.target_ids.numel() != 1:
                raise ValueError("pass target= when more than one target was requested")
            return self.target_ranks[..., 0]
        if self.per_row_targets:
            raise ValueError("per-row targets have one target per row; call rank_trajectory()")
        if isinstance(target, str):
            if target not in (self.target_names or []):
                raise ValueError(f"unknown target {target!r}; pass it as given to targets=, or its id")
            return self.target_ranks[..., self.target_names.index(target)]
        hits = (self.target_ids == int(target)).nonzero()
        if not len(hits):
            raise ValueError(f"token id {target} was not among the targets {self.target_ids.tolist()}")
        return self.target_ranks[..., int(hits[0])]
