"""Hook points and the one table of hook sites.

`SITES` is the single declaration of every activation the workbench exposes: its TransformerLens name, the
module that owns it, its shape, which dimension is the position, and when it fires. Everything else is built
from it: the `HookPoint` attributes each module creates (`add_hook_points`), their names (`name_hook_points`),
the forward order of `model.hook_names()`, the cache's shorthand keys (`cache["pattern", 1]`), position slicing
and the hook table in docs/HOOKS.md (`sites_markdown`). Adding a hook point = one row here + one call in the
module's forward.

A `HookPoint` is an identity module: it does nothing until a hook is attached, so an unhooked model runs at
full speed. Sites whose values cost extra to produce ask `is_active()` and only compute them when something
listens (the `fires` column says which).

Observing never changes the computation: a site that is not on the forward's own path (attention scores and
pattern under sdpa/flash, per-head results, LayerNorm internals, the split inputs) is computed *beside* the
forward and handed to its hooks through `HookPoint.observe`; the forward keeps its fused kernels unless a hook
returns a replacement (or takes the gradient), and only then runs through the hooked value. A cached run is
therefore bit-identical to a plain one, in every dtype. Where `run_with_cache` alone listens, such a site may hand
it a value computed when first read instead (`HookPoint.defers` / `observe_deferred`, `workbench.deferred`).
"""

from __future__ import annotations

import contextlib
import contextvars
import itertools
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterator

import torch
from torch import nn


def has_module_hooks(module: nn.Module) -> bool:
    """Whether torch forward, pre-forward or backward hooks, or accelerate's dispatch hook (`_hf_hook`), are on
    `module` (a `HookPoint`'s hooks included: `HookPoint.is_active`)."""
    return bool(hasattr(module, "_hf_hook") or module._forward_hooks or module._forward_pre_hooks
                or module._backward_hooks)


class HookPoint(nn.Module):
    """Identity module marking one activation; `name` is its TransformerLens name (e.g. `blocks.3.attn.hook_z`)."""

    def __init__(self) -> None:
        super().__init__()
        self.name: str = ""
        self.ctx: dict = {}  # scratch space for hook functions (TransformerLens's hook.ctx)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def is_active(self) -> bool:
        """Whether any forward or backward hook is attached (the value must then be computed)."""
        return has_module_hooks(self)

    def wants_grad(self) -> bool:
        """Whether a hook (of this thread's scopes) takes this value's gradient: then the forward must run
        through the hooked value."""
        return any(getattr(h, "wants_grad", False) and in_scope(getattr(h, "scope", None))
                   for h in self._forward_hooks.values())

    def observe(self, value: torch.Tensor) -> tuple[torch.Tensor, bool]:
        """Run the hooks on a value computed *beside* the forward (not on its path).

        Returns:
            (the value after the hooks, whether the forward must use it): True only when a hook returned a
            replacement, edited the value in place, or takes its gradient. Otherwise the forward keeps its own
            (fused) computation, so watching never changes what the model computes.
        """
        try:
            version = value._version  # bumped by in-place edits (`pattern[:, head] = 0; return pattern`)
        except RuntimeError:  # an inference-mode tensor has no version counter: an in-place edit can't be seen,
            version = None    # so unless every hook is known to only read, assume one edited
        out = self(value)
        if version is None:
            edited = not all(getattr(h, "reads_only", False) for h in self._forward_hooks.values()
                             if in_scope(getattr(h, "scope", None)))
        else:
            edited = value._version != version
        return out, out is not value or edited or self.wants_grad()

    def defers(self) -> bool:
        """Whether every hook that applies here (this thread's scopes) takes a `Deferred` value, computed when
        read (`run_with_cache`'s store does); then the site need not compute it during the forward."""
        if self._forward_pre_hooks or self._backward_hooks:
            return False
        if torch.is_inference_mode_enabled() or any(torch.is_autocast_enabled(d) for d in ("cpu", "cuda")):
            # inference tensors have no version counter (edits before the read would go unseen), and autocast
            # would have to be replayed at read time: compute now
            return False
        return all(getattr(h, "on_deferred", None) is not None
                   for h in self._forward_hooks.values() if in_scope(getattr(h, "scope", None)))

    def observe_deferred(self, value: Any) -> None:
        """Hand a `workbench.deferred.Deferred` to the hooks (only when `defers()`): it is not on the forward's
        path, and nobody can return a replacement for it."""
        for hook in list(self._forward_hooks.values()):
            if in_scope(getattr(hook, "scope", None)):
                hook.on_deferred(value, self)

    def remove_hooks(self) -> None:
        """Detach every hook from this point (permanent ones included)."""
        self._forward_hooks.clear()
        self._forward_pre_hooks.clear()
        self._backward_hooks.clear()

    def layer(self) -> int | None:
        """Block index of this hook point (None for `hook_embed` and `ln_final.*`)."""
        match = re.match(r"blocks\.(\d+)\.", self.name)
        return int(match.group(1)) if match else None

    def __repr__(self) -> str:
        return f"HookPoint({self.name!r})"


# ---- hook scopes: a hook attached by `model.hooks(...)` fires only in the thread / asyncio task that is inside
# that context (a contextvar holds the open scopes), so concurrent users of one model never see each other's
# hooks. Hooks attached with a plain `add_hook` have no scope and fire everywhere.
_OPEN_SCOPES: contextvars.ContextVar[frozenset[int]] = contextvars.ContextVar("workbench_hook_scopes",
                                                                              default=frozenset())
_SCOPE_IDS = itertools.count(1)


def in_scope(scope: int | None) -> bool:
    """Whether a hook of `scope` applies here (None: a model-wide hook, always)."""
    return scope is None or scope in _OPEN_SCOPES.get()


@contextlib.contextmanager
def hook_scope() -> Iterator[int]:
    """Open a new scope in the current context (thread or task) for as long as the `with` block runs."""
    scope = next(_SCOPE_IDS)
    token = _OPEN_SCOPES.set(_OPEN_SCOPES.get() | {scope})
    try:
        yield scope
    finally:
        _OPEN_SCOPES.reset(token)


# Where each component's hook points live: TransformerLens prefix -> transformers module path (the checkpoint
# layout, so state_dict keys stay transformers'). "{L}" is the layer index.
COMPONENTS = {
    "embed": ("", "gpt_neox"),
    "block": ("blocks.{L}", "gpt_neox.layers.{L}"),
    "ln1": ("blocks.{L}.ln1", "gpt_neox.layers.{L}.input_layernorm"),
    "attn": ("blocks.{L}.attn", "gpt_neox.layers.{L}.attention"),
    "ln2": ("blocks.{L}.ln2", "gpt_neox.layers.{L}.post_attention_layernorm"),
    "mlp": ("blocks.{L}.mlp", "gpt_neox.layers.{L}.mlp"),
    "ln_final": ("ln_final", "gpt_neox.final_layer_norm"),
}
# The module class that creates each component's hook points (ln1, ln2 and ln_final are all `LayerNorm`).
MODULE_KINDS = {"embed": "model", "block": "layer", "ln1": "ln", "ln2": "ln", "ln_final": "ln", "attn": "attn",
                "mlp": "mlp"}


@dataclass(frozen=True)
class HookSite:
    """One activation site.

    Attributes:
        component: a key of `COMPONENTS` (where it lives).
        attr: the HookPoint attribute on that module, e.g. `hook_pattern`.
        shape: its shape, e.g. `[batch, head, query_pos, key_pos]`.
        pos_dim: the dimension holding the (query) position, which `pos_slice` cuts.
        fires: when it fires: `always`, `when hooked` (computed only for a listener under a fused backend),
            or `sequential residual` (exists only without the parallel residual).
        doc: what the value is.
        in_full_cache: whether `run_with_cache()` without a filter stores it (False for the per-head copies,
            as in TransformerLens: name them to cache them; `cache.compute_head_results()` derives hook_result).
    """

    component: str
    attr: str
    shape: str
    pos_dim: int
    fires: str
    doc: str
    in_full_cache: bool = True

    @property
    def per_layer(self) -> bool:
        return "{L}" in COMPONENTS[self.component][0]

    def name(self, layer: int | None = None) -> str:
        """TransformerLens name, e.g. `blocks.3.attn.hook_z`."""
        prefix = COMPONENTS[self.component][0].replace("{L}", str(layer))
        return f"{prefix}.{self.attr}" if prefix else self.attr

    def module_path(self, layer: int | None = None) -> str:
        """Path of the HookPoint module, e.g. `gpt_neox.layers.3.attention.hook_z`."""
        return COMPONENTS[self.component][1].replace("{L}", str(layer)) + "." + self.attr

    @property
    def key(self) -> str:
        """The name with the layer left out (`attn.hook_z`), as within a block."""
        return self.name(0).removeprefix("blocks.0.")


_BP = "[batch, pos, "
# Forward order: the order of this tuple is the order in which a (sequential-residual) forward reaches them.
SITES: tuple[HookSite, ...] = (
    HookSite("embed", "hook_embed", _BP + "d_model]", 1, "always", "token embeddings"),
    HookSite("block", "hook_resid_pre", _BP + "d_model]", 1, "always", "residual stream entering the block"),
    HookSite("block", "hook_attn_in", _BP + "head, d_model]", 1, "when hooked",
             "resid_pre, copied per head: what each head's q, k and v read (before ln1)", False),
    HookSite("block", "hook_q_input", _BP + "head, d_model]", 1, "when hooked", "each head's query input", False),
    HookSite("block", "hook_k_input", _BP + "head, d_model]", 1, "when hooked", "each head's key input", False),
    HookSite("block", "hook_v_input", _BP + "head, d_model]", 1, "when hooked", "each head's value input", False),
    HookSite("ln1", "hook_scale", _BP + "1]", 1, "when hooked", "attention LayerNorm's scale (std + eps)"),
    HookSite("ln1", "hook_normalized", _BP + "d_model]", 1, "when hooked",
             "centred, rescaled input before the LayerNorm weight and bias"),
    HookSite("attn", "hook_q", _BP + "head, d_head]", 1, "always", "queries before rotary"),
    HookSite("attn", "hook_k", _BP + "head, d_head]", 1, "always", "keys before rotary"),
    HookSite("attn", "hook_v", _BP + "head, d_head]", 1, "always", "values"),
    HookSite("attn", "hook_rot_q", _BP + "head, d_head]", 1, "always", "queries after rotary"),
    HookSite("attn", "hook_rot_k", _BP + "head, d_head]", 1, "always", "keys after rotary"),
    HookSite("attn", "hook_attn_scores", "[batch, head, query_pos, key_pos]", 2, "when hooked",
             "scaled, masked attention logits"),
    HookSite("attn", "hook_pattern", "[batch, head, query_pos, key_pos]", 2, "when hooked",
             "attention probabilities"),
    HookSite("attn", "hook_z", _BP + "head, d_head]", 1, "always", "pattern-weighted values"),
    HookSite("attn", "hook_result", _BP + "head, d_model]", 1, "when hooked",
             "each head's output (z through its slice of W_O), before the bias", False),
    HookSite("block", "hook_attn_out", _BP + "d_model]", 1, "always", "attention output"),
    HookSite("block", "hook_resid_mid", _BP + "d_model]", 1, "sequential residual",
             "residual stream between attention and MLP"),
    HookSite("block", "hook_mlp_in", _BP + "d_model]", 1, "when hooked", "the MLP's input residual (before ln2)", False),
    HookSite("ln2", "hook_scale", _BP + "1]", 1, "when hooked", "MLP LayerNorm's scale (std + eps)"),
    HookSite("ln2", "hook_normalized", _BP + "d_model]", 1, "when hooked",
             "centred, rescaled input before the LayerNorm weight and bias"),
    HookSite("mlp", "hook_pre", _BP + "d_mlp]", 1, "always", "MLP pre-activations"),
    HookSite("mlp", "hook_post", _BP + "d_mlp]", 1, "always", "MLP activations (after the nonlinearity)"),
    HookSite("block", "hook_mlp_out", _BP + "d_model]", 1, "always", "MLP output"),
    HookSite("block", "hook_resid_post", _BP + "d_model]", 1, "always", "residual stream leaving the block"),
    HookSite("ln_final", "hook_scale", _BP + "1]", 1, "when hooked", "final LayerNorm's scale (std + eps)"),
    HookSite("ln_final", "hook_normalized", _BP + "d_model]", 1, "when hooked",
             "centred, rescaled input before the final LayerNorm weight and bias"),
)
del _BP


#: The block's split-input sites (TransformerLens's use_attn_in / use_split_qkv_input): attention reads them
#: only when one of them is hooked.
SPLIT_INPUT_HOOKS = ("hook_attn_in", "hook_q_input", "hook_k_input", "hook_v_input")


def site_attrs(kind: str) -> list[str]:
    """HookPoint attribute names that a module of `kind` (see `MODULE_KINDS`) creates."""
    return list(dict.fromkeys(s.attr for s in SITES if MODULE_KINDS[s.component] == kind))


def add_hook_points(module: nn.Module, kind: str, skip: tuple[str, ...] = ()) -> None:
    """Create the module's HookPoint attributes from `SITES` (its own modules never declare them by hand).

    Args:
        module: the module that owns the sites.
        kind: its kind in `MODULE_KINDS` ("model", "layer", "ln", "attn", "mlp").
        skip: attributes this instance has no such site for (e.g. `hook_resid_mid` with a parallel residual).
    """
    for attr in site_attrs(kind):
        if attr not in skip:
            setattr(module, attr, HookPoint())


def iter_sites(n_layers: int) -> Iterator[tuple[str, HookSite, int | None]]:
    """(TransformerLens name, site, layer) of every site of an `n_layers` model, in forward order."""
    blocks = [s for s in SITES if s.per_layer]
    yield from ((s.name(), s, None) for s in SITES[: SITES.index(blocks[0])])
    for layer in range(n_layers):
        yield from ((s.name(layer), s, layer) for s in blocks)
    yield from ((s.name(), s, None) for s in SITES[SITES.index(blocks[-1]) + 1:])


def name_hook_points(model: nn.Module, n_layers: int) -> dict[str, HookPoint]:
    """Name every HookPoint of `model` from `SITES`; return TransformerLens name -> hook point, in forward order.

    Raises:
        ValueError: a HookPoint in the model that `SITES` does not declare (it would sort and resolve wrong).
    """
    modules = dict(model.named_modules())
    points: dict[str, HookPoint] = {}
    root = "gpt_neox." if "gpt_neox" in modules else ""  # a bare GPTNeoXModel's paths have no "gpt_neox."
    for name, site, layer in iter_sites(n_layers):
        point = modules.get(root + site.module_path(layer).removeprefix("gpt_neox."))
        if point is not None:
            point.name = name
            points[name] = point
    stray = [path for path, m in modules.items() if isinstance(m, HookPoint) and not m.name]
    if stray:
        raise ValueError(f"HookPoint(s) {stray} are not declared in workbench.hook_points.SITES; add a row there")
    return points


_BY_NAME_TAIL = {s.key: s for s in SITES}


def site_of(name: str) -> HookSite | None:
    """The site of a full hook name (`blocks.3.attn.hook_pattern` -> its HookSite), None if unknown."""
    return _BY_NAME_TAIL.get(re.sub(r"^blocks\.\d+\.", "", name))


def in_full_cache(name: str) -> bool:
    """Whether `run_with_cache()` without a filter stores `name` (unknown names: yes)."""
    site = site_of(name)
    return site is None or site.in_full_cache


def position_dim(name: str) -> int:
    """The dimension of `name`'s activation that holds the (query) position (1 for unknown names)."""
    site = site_of(name)
    return site.pos_dim if site is not None else 1


def sites_markdown() -> str:
    """The hook table as Markdown (docs/HOOKS.md is this text; a test keeps them equal)."""
    rows = ["| name | module (transformers path) | shape | position dim | fires | in a full cache | what |",
            "| --- | --- | --- | --- | --- | --- | --- |"]
    for site in SITES:
        layer = "L" if site.per_layer else None
        rows.append(f"| `{site.name(layer)}` | `{site.module_path(layer)}` | `{site.shape}` | {site.pos_dim} | "
                    f"{site.fires} | {'yes' if site.in_full_cache else 'no'} | {site.doc} |")
    return ("# Hook points\n\nGenerated from `workbench/hook_points.py` (`SITES`) by `sites_markdown()`; "
            "`L` is the layer. Names are TransformerLens's.\n\n" + "\n".join(rows) + "\n")


def position_selector(pos_slice: Any) -> Callable[[torch.Tensor, int], torch.Tensor] | None:
    """pos_slice -> fn(tensor, dim) keeping those positions of `dim` (an int drops the dimension).

    Args:
        pos_slice: None, an int, a slice (step >= 1), or 1-D integer positions (list, tuple, tensor, array);
            negative positions count from the end.

    Raises:
        TypeError: anything else (floats, bools, strings ...).
        ValueError: a slice step < 1, or positions that are not 1-D.
        IndexError (when applied): a position outside [-n, n) for a dimension of n positions.
    """
    if pos_slice is None:
        return None
    if isinstance(pos_slice, slice):
        parts = (pos_slice.start, pos_slice.stop, pos_slice.step)
        if any(p is not None and (isinstance(p, bool) or not isinstance(p, int)) for p in parts):
            raise TypeError(f"pos_slice {pos_slice!r}: a slice's start, stop and step must be ints or None")
        if pos_slice.step is not None and pos_slice.step < 1:
            raise ValueError(f"pos_slice {pos_slice!r}: the step must be >= 1")
        return lambda t, dim: t[(slice(None),) * (dim % t.dim()) + (pos_slice,)]
    index = _positions(pos_slice)

    def keep(t: torch.Tensor, dim: int) -> torch.Tensor:
        n = t.shape[dim]
        bad = index[(index < -n) | (index >= n)]
        if bad.numel():
            shown = int(index) if index.dim() == 0 else bad.tolist()[:5]
            raise IndexError(f"pos_slice {shown} is out of range for {n} positions (allowed: -{n} to {n - 1})")
        wrapped = torch.where(index < 0, index + n, index)
        return t.select(dim, int(wrapped)) if index.dim() == 0 else t.index_select(dim, wrapped.to(t.device))

    return keep


def _positions(pos_slice: Any) -> torch.Tensor:
    """An int (0-d) or 1-D integer positions as a CPU long tensor (TypeError / ValueError naming pos_slice)."""
    allowed = "an int, a slice or a 1-D list of int positions"
    if isinstance(pos_slice, (bool, str, bytes)):
        raise TypeError(f"pos_slice must be {allowed}, got {pos_slice!r}")
    try:
        index = torch.as_tensor(pos_slice, device="cpu")
    except (TypeError, ValueError, RuntimeError) as error:
        raise TypeError(f"pos_slice must be {allowed}, got {type(pos_slice).__name__}") from error
    if index.numel() == 0 and index.dim() == 1:
        return index.long()  # [] is float32 to torch
    if index.dtype == torch.bool or index.is_floating_point() or index.is_complex():
        raise TypeError(f"pos_slice must be {allowed}, got dtype {index.dtype}")
    if index.dim() > 1:
        raise ValueError(f"pos_slice must be {allowed}, got shape {tuple(index.shape)}")
    return index.long()
