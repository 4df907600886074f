"""The hook API of the models: attach hooks by TransformerLens name, run with hooks, cache activations.

The hook points themselves and the table of sites are in `workbench.hook_points`; this module is what a
user calls: `model.add_hook`, `model.hooks(...)` (scoped), `run_with_hooks`, `run_with_cache`, `reset_hooks`.

The rule: a hook that only reads (returns None and edits nothing; every `run_with_cache`) leaves the forward
bit-identical to a plain one, in every dtype and backend: values off the forward's path are computed beside it
(`HookPoint.observe`). Only a hook that returns a replacement, edits its value in place, or takes its gradient
routes the forward through that value. When `run_with_cache` is the only listener at a site off the path (the
attention scores and pattern, LayerNorm's normalised input), the site hands the cache a value computed when first
read, from the tensors the forward used (`workbench.deferred`): bit-identical to what a hook would get then, and
free until read. Hook functions are called as TransformerLens calls them,
`fn(value, hook=point)` (positionally when `fn` has no `hook` parameter).

What a hook may return (forward and backward alike, checked by `_replacement`): None or the value itself (kept:
returning the very object it was given counts as "not replaced"), or a tensor of exactly the value's shape on
its device. A floating tensor of another dtype is cast back to the value's dtype (so a hook may compute in
float64 on a bf16 model); an integer, bool or complex tensor is refused, as are scalars and broadcastable
shapes (TransformerLens uses whatever is returned; a silent broadcast is a wrong result). Every error names the
hook point.
"""

from __future__ import annotations

import contextlib
import difflib
import inspect
import threading
from typing import Any, Callable, Sequence

import torch
from torch.utils.hooks import RemovableHandle

from .hook_points import HookPoint, hook_scope, in_full_cache, in_scope, position_dim, position_selector
from .inputs import as_token_batch, encode_texts, is_text, require_tokenizer, token_strings

HookFn = Callable[[torch.Tensor, "HookPoint"], "torch.Tensor | None"]


# ---- hook API ---------------------------------------------------------------------------------------


def _closest(name: str, valid: list[str], n: int = 5) -> list[str]:
    """Valid names most like `name` (difflib), falling back to those sharing its last component."""
    close = difflib.get_close_matches(name, valid, n=n, cutoff=0.5)
    if not close:
        tail = name.rsplit(".", 1)[-1]
        close = [v for v in valid if v.endswith(tail)][:n]
    return close


def unknown_hook_error(name: str, valid: list[str], what: str = "hook point") -> KeyError:
    """KeyError naming the closest valid names (never a silent no-op on a typo)."""
    close = _closest(name, valid)
    hint = f"closest valid names: {close}" if close else f"valid names look like {valid[:3]} ..."
    return KeyError(f"no {what} named {name!r}; {hint} (model.hook_names() lists all {len(valid)})")


class HookedModelMixin:
    """The hook API of every GPT-NeoX model class (run_with_cache, run_with_hooks, hooks(), reset_hooks).

    The model class must set `self.hook_dict` (name -> HookPoint, `hook_points.name_hook_points`); `self.tokenizer`
    (optional) lets string inputs through.
    """

    hook_dict: dict[str, HookPoint]

    # ---- names ----------------------------------------------------------------------------------------
    def hook_names(self) -> list[str]:
        """All hook point names of this model, in the order a (sequential-residual) forward reaches them."""
        return list(self.hook_dict)

    def resolve_hook_points(self, selector: Any) -> list[HookPoint]:
        """Hook points selected by a name, a list of names, or a predicate over names.

        Raises:
            KeyError: an unknown name (with the closest valid ones), or a predicate that selects nothing.
            TypeError: anything else.
        """
        if isinstance(selector, HookPoint):
            return [selector]
        if isinstance(selector, str):
            if selector not in self.hook_dict:
                error = unknown_hook_error(selector, self.hook_names())
                if selector.endswith("hook_resid_mid") and getattr(getattr(self, "config", None),
                                                                  "use_parallel_residual", False):
                    error = KeyError(f"{error.args[0]}. This model has a parallel residual "
                                     "(use_parallel_residual=True): attention and MLP both read resid_pre, "
                                     "so there is no resid_mid")
                raise error
            return [self.hook_dict[selector]]
        if isinstance(selector, (list, tuple, set, frozenset)):
            return [point for item in selector for point in self.resolve_hook_points(item)]
        if callable(selector):
            points = [point for name, point in self.hook_dict.items() if selector(name)]
            if not points:
                raise KeyError(f"the predicate {selector!r} selects no hook point; model.hook_names() lists them")
            return points
        raise TypeError(
            f"a hook is selected by a name (str), a list of names or a predicate name -> bool, "
            f"got {type(selector).__name__}"
        )

    # ---- attaching and removing ---------------------------------------------------------------------
    def _hook_handles(self) -> list[RemovableHandle]:
        handles = self.__dict__.get("_wb_hook_handles")
        if handles is None:
            handles = self.__dict__["_wb_hook_handles"] = []
        return handles

    def _handles_lock(self) -> threading.Lock:
        return self.__dict__.setdefault("_wb_hook_lock", threading.Lock())

    def add_hook(self, selector: Any, fn: HookFn, dir: str = "fwd", is_permanent: bool = False,
                 prepend: bool = False) -> list[RemovableHandle]:
        """Attach `fn(activation, hook) -> Tensor | None` to the selected hook points (TransformerLens's signature).

        A hook added here applies model-wide, in every thread, until removed; hooks given to `model.hooks(...)`,
        `run_with_hooks` or `run_with_cache` apply only inside that call, in its own thread or asyncio task.

        Args:
            selector: a hook name, a list of names or a predicate over names.
            fn: called as `fn(value, hook=hook_point)` (or positionally, if it has no `hook` parameter) with the
                activation (forward) or its gradient (backward); a returned tensor replaces the value.
            dir: "fwd" or "bwd".
            is_permanent: survive `reset_hooks()` (unless `including_permanent=True`) and scoped contexts.
            prepend: run before the hooks already on the point.

        Returns:
            The handles (also remembered by the model, so `reset_hooks()` removes them).
        """
        return self._attach(selector, fn, dir, None, is_permanent, prepend)

    def _attach(self, selector: Any, fn: HookFn, dir: str, scope: int | None, is_permanent: bool = False,
                prepend: bool = False) -> list[RemovableHandle]:
        if dir not in ("fwd", "bwd"):
            raise ValueError(f"dir must be 'fwd' or 'bwd', got {dir!r}")
        if not callable(fn):
            raise TypeError(f"a hook function must be callable, got {type(fn).__name__}")
        points = self.resolve_hook_points(selector)
        wrap = _forward_wrapper if dir == "fwd" else _backward_wrapper
        with self._handles_lock():
            handles = [point.register_forward_hook(wrap(fn, scope), prepend=prepend) for point in points]
            for handle in handles:
                handle.wb_dir, handle.wb_permanent = dir, is_permanent
            self._hook_handles().extend(handles)
        return handles

    def _detach(self, handles: list[RemovableHandle]) -> None:
        with self._handles_lock():
            for handle in handles:
                handle.remove()
            ids = {id(h) for h in handles}
            self._hook_handles()[:] = [h for h in self._hook_handles() if id(h) not in ids]

    def reset_hooks(self, clear_contexts: bool = True, direction: str = "both", including_permanent: bool = False
                    ) -> None:
        """Remove hooks from every hook point: those of `direction` ("fwd", "bwd" or "both"), permanent ones
        only with `including_permanent` (hooks attached outside this API count as non-permanent forward hooks).
        `clear_contexts` empties each point's `hook.ctx`."""
        if direction not in ("fwd", "bwd", "both"):
            raise ValueError(f"direction must be 'fwd', 'bwd' or 'both', got {direction!r}")
        with self._handles_lock():
            self._reset(clear_contexts, direction, including_permanent)

    def _reset(self, clear_contexts: bool, direction: str, including_permanent: bool) -> None:
        known = {h.id: h for h in self._hook_handles()}
        for point in self.hook_dict.values():
            for hook_id in list(point._forward_hooks):
                handle = known.get(hook_id)
                kind, permanent = (handle.wb_dir, handle.wb_permanent) if handle is not None else ("fwd", False)
                if direction in ("both", kind) and (including_permanent or not permanent):
                    del point._forward_hooks[hook_id]
                    known.pop(hook_id, None)
            if clear_contexts:
                point.ctx.clear()
        self._hook_handles()[:] = [h for h in self._hook_handles() if h.id in known]

    @contextlib.contextmanager
    def hooks(self, fwd_hooks: Sequence[tuple[Any, HookFn]] = (), bwd_hooks: Sequence[tuple[Any, HookFn]] = (),
              reset_hooks_end: bool = True, clear_contexts: bool = False):
        """Context in which the given hooks are attached; exactly those are removed on exit, also on error.

        Contexts nest: an inner context leaves the outer one's hooks in place.

            with model.hooks(fwd_hooks=[("blocks.0.hook_resid_pre", fn)]):
                model(tokens)

        Args:
            reset_hooks_end: False keeps the hooks after a normal exit (they are removed on an error anyway).
            clear_contexts: also empty every `hook.ctx` on exit.
        """
        added: list[RemovableHandle] = []
        ok = False
        # Kept hooks outlive the context, so they cannot be scoped to it: they apply model-wide.
        scoped = hook_scope() if reset_hooks_end else contextlib.nullcontext(None)
        with scoped as scope:
            try:
                for selector, fn in _pairs(fwd_hooks, "fwd_hooks"):
                    added += self._attach(selector, fn, "fwd", scope)
                # Backward hooks attach to the value as the forward pass left it (after any replacement).
                for selector, fn in _pairs(bwd_hooks, "bwd_hooks"):
                    added += self._attach(selector, fn, "bwd", scope)
                yield self
                ok = True
            finally:
                if reset_hooks_end or not ok:
                    self._detach(added)
                if clear_contexts:
                    for point in self.hook_dict.values():
                        point.ctx.clear()

    # ---- inputs -------------------------------------------------------------------------------------
    def to_tokens(self, text: str | Sequence[str], prepend_bos: bool = False, padding_side: str | None = None
                  ) -> torch.Tensor:
        """Token ids `[batch, pos]` of a string or a list of strings (padded; see `to_tokens_and_mask`)."""
        return self.to_tokens_and_mask(text, prepend_bos, padding_side)[0]

    def to_tokens_and_mask(self, text: str | Sequence[str], prepend_bos: bool = False,
                           padding_side: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """Tokenise with `model.tokenizer`: ids `[batch, pos]` and attention mask `[batch, pos]` (1 = token).

        Args:
            text: a string or a list of strings (padded to the longest, on `padding_side` or the tokenizer's).
            prepend_bos: put the tokenizer's bos token first (GPT-NeoX models were trained without it).
        """
        return encode_texts(require_tokenizer(self), text, padding_side, prepend_bos, self.device)

    def to_str_tokens(self, text: str | Sequence[str] | torch.Tensor | Sequence[int], prepend_bos: bool = False
                      ) -> list[str] | list[list[str]]:
        """The token strings of a text or of 1-D ids (a list); of a list of texts or 2-D ids, one list per row
        (padding dropped for texts), for labelling positions."""
        tokenizer = require_tokenizer(self)
        if is_text(text) and not isinstance(text, str):
            return [self.to_str_tokens(t, prepend_bos) for t in text]
        if isinstance(text, str):
            ids = self.to_tokens(text, prepend_bos=prepend_bos)[0]
        else:
            ids = torch.as_tensor(text)
            if ids.dim() == 2:
                return [token_strings(tokenizer, row) for row in ids]
            if ids.dim() != 1:
                raise ValueError(f"to_str_tokens takes 1-D or 2-D ids, got shape {tuple(ids.shape)}")
        return token_strings(tokenizer, ids)

    def to_string(self, tokens: torch.Tensor | Sequence[int] | Sequence[Sequence[int]]) -> str | list[str]:
        """Decode ids `[pos]` to a string, or `[batch, pos]` to one string per row."""
        tokenizer = require_tokenizer(self)
        ids = torch.as_tensor(tokens)
        if ids.dim() == 2:
            return [tokenizer.decode(row.tolist()) for row in ids]
        if ids.dim() != 1:
            raise ValueError(f"to_string takes 1-D or 2-D ids, got shape {tuple(ids.shape)}")
        return tokenizer.decode(ids.tolist())

    def to_single_token(self, string: str) -> int:
        """The id of a string that is exactly one token (ValueError naming its tokens otherwise)."""
        ids = require_tokenizer(self).encode(string, add_special_tokens=False)
        if len(ids) != 1:
            pieces = token_strings(self.tokenizer, ids)
            raise ValueError(f"{string!r} is {len(ids)} tokens {pieces}, not one")
        return int(ids[0])

    def _model_inputs(self, inputs: Any, forward_kwargs: dict) -> dict:
        """`inputs` (text, texts or ids) -> keyword arguments of the forward."""
        kwargs = dict(forward_kwargs)
        if inputs is None:
            if "input_ids" not in kwargs and "inputs_embeds" not in kwargs:
                raise ValueError("give inputs: a string, a list of strings or token ids [batch, pos]")
        elif is_text(inputs) and "attention_mask" in kwargs:
            raise ValueError("attention_mask is built from the texts; pass token ids to give your own")
        else:  # token ids keep the caller's attention_mask (it may also cover cached positions)
            kwargs["input_ids"], mask = as_token_batch(self, inputs)
            if mask is not None:
                kwargs["attention_mask"] = mask
        kwargs.setdefault("use_cache", False)  # no KV cache unless asked: it is memory, not analysis
        return kwargs

    # ---- running ------------------------------------------------------------------------------------
    def run_with_hooks(
        self,
        inputs: Any = None,
        fwd_hooks: Sequence[tuple[Any, HookFn]] = (),
        bwd_hooks: Sequence[tuple[Any, HookFn]] = (),
        reset_hooks_end: bool = True,
        **forward_kwargs: Any,
    ) -> Any:
        """One forward with temporary hooks.

        Args:
            inputs: a string, a list of strings (padded, mask applied) or token ids `[batch, pos]`.
            fwd_hooks, bwd_hooks: `[(name_or_predicate, fn), ...]`; fn(activation, hook) -> Tensor | None.
            reset_hooks_end: remove the hooks afterwards (False keeps them, e.g. to run backward yourself;
                they are removed anyway if the forward raises).
            **forward_kwargs: passed to the model's forward (attention_mask, labels, ...).

        Returns:
            The model's output (`.logits` `[batch, pos, vocab]`, `.loss`, ...).
        """
        kwargs = self._model_inputs(inputs, forward_kwargs)
        with self.hooks(fwd_hooks, bwd_hooks, reset_hooks_end=reset_hooks_end):
            return self(**kwargs)

    def run_with_cache(
        self,
        inputs: Any = None,
        names_filter: Any = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        pos_slice: int | slice | Sequence[int] | torch.Tensor | None = None,
        incl_bwd: bool = False,
        remove_batch_dim: bool = False,
        **forward_kwargs: Any,
    ):
        """Run the model and keep the activations of the selected hook points.

        Args:
            inputs: a string, a list of strings (padded, mask applied) or token ids `[batch, pos]`.
            names_filter: None (every hook point), a name, a list of names or a predicate name -> bool.
                Only the selected values are stored, and only the layers whose attention pattern/scores are
                selected compute attention eagerly.
            device, dtype: where and in which dtype to store the values (default: as computed).
            pos_slice: keep only these positions (the query position for scores/patterns); an int drops
                the position dimension.
            incl_bwd: also run backward and store gradients as `name + "_grad"`: from `labels=` (passed on)
                or, for a causal LM without labels, the next-token loss of the inputs (padding ignored);
                for other outputs pass `backward_metric=fn(output) -> scalar`.
            remove_batch_dim: drop the batch dimension of a batch-of-one run from every cached value.
            **forward_kwargs: passed to the forward (attention_mask, labels, `stop_at_layer`, ...).

        Observing never changes the computation: the logits are bit-identical to a plain forward's, whatever
        is cached (see `workbench.hook_points`). Attention scores / patterns and LayerNorm-normalised inputs are
        computed when first read (unless `incl_bwd`, `pos_slice` or `device` is given, another hook watches
        the site, the run is under `torch.inference_mode` or autocast, or, for attention, a KV cache is used),
        from the forward's own queries, keys and LayerNorm inputs, so they are bit-identical to what
        a hook receives, and a full cache costs about a plain forward until they are read; `cache.pending()`
        lists those not read yet (`workbench.deferred`). While the cache fills, large blocks come from the
        retained heap rather than from fresh mmaps (`workbench.memory.heap_allocations`). On Linux the process keeps freed memory (up to 2 GiB or an
        eighth of RAM) for the next cache instead of faulting in fresh pages each time, so the resident size
        stays up after a cache is dropped: `workbench.memory.release_freed_memory()` hands it back,
        `WORKBENCH_RETAIN_MEMORY=0` turns this off (see `workbench.memory`).

        Returns:
            `(logits, cache)`: logits `[batch, pos, vocab]` for causal LMs and the classification heads (the
            whole output for question answering), and an `ActivationCache`.
        """
        from .activation_cache import ActivationCache
        from .memory import ensure_retained, heap_allocations

        ensure_retained()  # a loop of caches reuses freed memory instead of faulting in fresh pages (workbench.memory)
        backward_metric = forward_kwargs.pop("backward_metric", None)
        kwargs = self._model_inputs(inputs, forward_kwargs)
        if names_filter is None:  # everything but the per-head copies (TransformerLens's default too)
            points = [name for name in self.hook_names() if in_full_cache(name)]
        else:
            points = [p.name for p in self.resolve_hook_points(names_filter)]
        store: dict[str, torch.Tensor] = {}
        live: dict[str, torch.Tensor] = {}  # undetached values, to take gradients with respect to
        keep = position_selector(pos_slice)

        def finish(value: torch.Tensor, name: str) -> torch.Tensor:
            if keep is not None:
                value = keep(value, position_dim(name))
            if dtype is not None or device is not None:
                value = value.to(device=device, dtype=dtype)
            return value

        def save(activation: torch.Tensor, hook: HookPoint) -> None:
            store[hook.name] = finish(activation.detach(), hook.name)
            if incl_bwd:
                live[hook.name] = activation

        save.wants_grad = incl_bwd  # gradients are taken w.r.t. these values: the forward must run through them
        save.reads_only = True  # under inference_mode (no version counters) this is how observe knows
        if not incl_bwd and keep is None and device is None:
            # Sites that cost a second computation beside the fused kernels (attention scores and patterns) may
            # hand over a `Deferred`: computed, bit-identical, when the entry is first read (workbench.deferred).
            # Not with position slices or another device: the deferral would hold the whole inputs, on the model's
            # device, to produce a smaller or a moved value.
            def save_deferred(value: Any, hook: HookPoint) -> None:
                store[hook.name] = value if dtype is None else value.map(lambda t: t.to(dtype))

            save.on_deferred = save_deferred

        if incl_bwd and backward_metric is None and "labels" not in kwargs and hasattr(self, "embed_out"):
            ids = kwargs.get("input_ids")
            if ids is None:
                raise ValueError("incl_bwd needs labels=, backward_metric= or token ids to take the loss of")
            labels = ids.clone()
            if kwargs.get("attention_mask") is not None:
                labels[kwargs["attention_mask"] == 0] = -100
            kwargs["labels"] = labels
        grad_context = torch.enable_grad() if incl_bwd else contextlib.nullcontext()
        with grad_context, heap_allocations(), self.hooks([(points, save)]):
            output = self(**kwargs)
            if incl_bwd:
                target = backward_metric(output) if backward_metric is not None else getattr(output, "loss", None)
                if target is None or not torch.is_tensor(target) or target.numel() != 1:
                    raise ValueError("incl_bwd needs a scalar to differentiate: pass labels= or backward_metric=")
                names = [n for n, t in live.items() if t.requires_grad]
                if not names:
                    raise ValueError("incl_bwd: no cached activation requires grad (are all parameters frozen?)")
                # autograd.grad, not backward(): parameters' .grad stay untouched.
                grads = torch.autograd.grad(target.reshape(()), [live[n] for n in names], allow_unused=True)
                for name, grad in zip(names, grads):
                    grad = torch.zeros_like(live[name]) if grad is None else grad
                    store[name + "_grad"] = finish(grad.detach(), name)
                live.clear()
        names = sorted(store, key=lambda n: n.endswith("_grad"))  # in firing order, gradients last
        cache = ActivationCache({n: store[n] for n in names}, self, has_batch_dim=True,
                                pos_sliced=keep is not None)
        if remove_batch_dim:
            cache.remove_batch_dim()
        logits = getattr(output, "logits", None)
        if incl_bwd and logits is not None:
            logits = logits.detach()
        return (logits if logits is not None else output), cache

    # ---- sparse autoencoders (workbench.sae.splice, imported on first use) ------------------------------
    def saes(self, saes: Any, use_error_term: bool = False):
        """Context splicing SAEs into their sites (nests with `hooks()`); see `workbench.sae.splice.saes`."""
        from .sae.splice import saes as splice

        return splice(self, saes, use_error_term=use_error_term)

    def run_with_saes(self, inputs: Any = None, saes: Any = (), use_error_term: bool = False, **kwargs: Any) -> Any:
        """One forward with SAEs spliced in; see `workbench.sae.splice.run_with_saes`."""
        from .sae.splice import run_with_saes

        return run_with_saes(self, inputs, saes=saes, use_error_term=use_error_term, **kwargs)

    def run_with_cache_with_saes(self, inputs: Any = None, saes: Any = (), use_error_term: bool = False,
                                 **kwargs: Any):
        """`run_with_cache` with SAEs spliced in; see `workbench.sae.splice.run_with_cache_with_saes`."""
        from .sae.splice import run_with_cache_with_saes

        return run_with_cache_with_saes(self, inputs, saes=saes, use_error_term=use_error_term, **kwargs)


def _pairs(hooks: Any, what: str) -> list[tuple[Any, HookFn]]:
    """Validate `[(selector, fn), ...]`."""
    if hooks is None:
        return []
    pairs = list(hooks)
    for i, pair in enumerate(pairs):
        if not (isinstance(pair, (tuple, list)) and len(pair) == 2 and callable(pair[1])):
            raise TypeError(f"{what}[{i}] must be a pair (name_or_predicate, fn), got {pair!r}")
    return pairs


def _caller(fn: HookFn) -> Callable[[torch.Tensor, HookPoint], Any]:
    """Call `fn(value, hook=point)` as TransformerLens does, or `fn(value, point)` if it has no `hook` parameter."""
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):  # builtins without a signature
        return lambda value, point: fn(value, point)
    if any(p.name == "hook" and p.kind is not p.POSITIONAL_ONLY or p.kind is p.VAR_KEYWORD for p in params):
        return lambda value, point: fn(value, hook=point)
    return lambda value, point: fn(value, point)


def _replacement(result: Any, value: torch.Tensor, point: HookPoint, what: str) -> torch.Tensor | None:
    """A hook's return value, checked against the `value` (activation or gradient) it was given.

    Returns:
        None or `value` itself (kept), or a tensor of `value`'s shape, device and dtype (another floating dtype
        is cast back to `value.dtype`).

    Raises:
        TypeError: neither a tensor nor None, or a non-floating tensor.
        ValueError: another shape (scalars included) or another device.
    """
    if result is None or result is value:
        return result
    where = f"hook function on {point.name}"
    if not torch.is_tensor(result):
        raise TypeError(f"{where} returned {type(result).__name__}; return a Tensor (to replace the {what}) or None")
    if result.shape != value.shape:
        raise ValueError(f"{where} returned shape {tuple(result.shape)}, but the {what} has shape "
                         f"{tuple(value.shape)}; return a tensor of the same shape (nothing is broadcast)")
    if result.device != value.device:
        raise ValueError(f"{where} returned a tensor on {result.device}, but the {what} is on {value.device}; "
                         f"move it there with .to('{value.device}')")
    if result.dtype != value.dtype:
        if not result.is_floating_point():
            raise TypeError(f"{where} returned dtype {result.dtype} for a {value.dtype} {what}; return a floating "
                            f"tensor (another floating dtype is cast back to {value.dtype})")
        result = result.to(value.dtype)
    return result


def _forward_wrapper(fn: HookFn, scope: int | None = None):
    """torch forward hook calling fn(output, hook=point) where `scope` is open; a returned tensor replaces the
    output (checked by `_replacement`)."""
    call = _caller(fn)

    def forward_hook(module: HookPoint, args: tuple, output: torch.Tensor) -> torch.Tensor | None:
        if not in_scope(scope):  # another thread's (or task's) hook
            return None
        return _replacement(call(output, module), output, module, "activation")

    forward_hook.wants_grad, forward_hook.scope = getattr(fn, "wants_grad", False), scope
    # A store that takes values computed when read (run_with_cache's) lets a site skip computing them now.
    forward_hook.on_deferred = getattr(fn, "on_deferred", None)
    forward_hook.reads_only = getattr(fn, "reads_only", False)  # never edits its value (run_with_cache's store)
    return forward_hook


def _backward_wrapper(fn: HookFn, scope: int | None = None):
    """Forward hook that registers fn(grad, hook=point) on the output's gradient where `scope` is open (a
    returned tensor replaces the gradient, checked by `_replacement`)."""
    call = _caller(fn)

    def forward_hook(module: HookPoint, args: tuple, output: torch.Tensor) -> None:
        if output.requires_grad and in_scope(scope):
            output.register_hook(lambda grad: _replacement(call(grad, module), grad, module, "gradient"))

    forward_hook.wants_grad, forward_hook.scope = True, scope  # the gradient must flow through this very value
    return forward_hook
