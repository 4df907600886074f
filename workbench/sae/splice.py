"""Splice SAEs into a model: the site's activation is replaced by the SAE's output, through the hook API.

    with model.saes(sae):                          # nests with model.hooks(...)
        logits = model(tokens).logits
    model.run_with_saes(tokens, saes=[sae], use_error_term=True)
    logits, cache = model.run_with_cache_with_saes(tokens, saes=[sae])
    cache["blocks.2.hook_resid_pre.hook_sae_acts_post"]                # [batch, pos, d_sae]

While spliced, the SAE's hook points are hook points of the model, named under the site as SAELens names them
(`<site>.hook_sae_input`, `.hook_sae_acts_pre`, `.hook_sae_acts_post`, `.hook_sae_recons`, `.hook_sae_error`,
`.hook_sae_output`): `model.hooks(fwd_hooks=[(name, fn)])` ablates, clamps or steers a feature and
`run_with_cache` stores them. The splice hook on the site is attached when the context opens, so hooks on the
site attached before it (outer contexts) see the clean activation and change what the SAE reads; hooks
attached inside see the SAE's output. Like `model.hooks`, the splice applies only in the thread / task that
opened it; the names are visible model-wide while it is open, so a site takes one SAE at a time.

Padding positions (attention mask 0, read from the forward's `attention_mask`, also during `generate`) get no
features and keep the model's activation. With `use_error_term=True` and nothing changing a value, the site's
value is passed on untouched, so the logits are exactly the clean run's.
"""

from __future__ import annotations

import contextlib
import contextvars
from typing import Any, Iterator, Sequence

import torch

from ..hook_points import HookPoint, site_of
from ..hooks import unknown_hook_error
from .config import SAEConfigError
from .sae import SAE
from .sites import SiteLayout, site_layout

# The attention mask of the forward now running in this thread / task ([batch, past + pos] or None).
_MASK: contextvars.ContextVar[torch.Tensor | None] = contextvars.ContextVar("workbench_sae_mask", default=None)


def _as_list(saes: SAE | Sequence[SAE]) -> list[SAE]:
    items = [saes] if isinstance(saes, SAE) else list(saes)
    for i, item in enumerate(items):
        if not isinstance(item, SAE):
            raise TypeError(f"saes[{i}] must be a workbench.sae.SAE (load one with workbench.sae.load), "
                            f"got {type(item).__name__}")
    return items


def _check(model: Any, sae: SAE, taken: set[str]) -> str:
    """The site of `sae` in `model`, checked (errors name the SAE's cfg file and field)."""
    cfg, where = sae.cfg, sae.cfg.source or "the SAE's config"
    if not cfg.hook_name:
        raise SAEConfigError(f"{where}: field 'hook_name' is empty; set sae.cfg.hook_name or load(..., hook_name=)")
    if cfg.hook_name not in model.hook_dict or site_of(cfg.hook_name) is None:
        error = unknown_hook_error(cfg.hook_name, [n for n in model.hook_names() if site_of(n) is not None])
        raise KeyError(f"{where}: field 'hook_name': {error.args[0]}")
    try:
        layout = site_layout(model, cfg.hook_name)
    except ValueError as err:
        raise SAEConfigError(f"{where}: field 'hook_name': {err}") from None
    if layout is not None:
        _check_width(cfg, layout, where)
    if cfg.hook_name in taken:
        raise ValueError(f"two SAEs at {cfg.hook_name}: splice one SAE per hook point")
    if f"{cfg.hook_name}.hook_sae_input" in model.hook_dict:
        raise ValueError(f"an SAE is already spliced at {cfg.hook_name} (an enclosing model.saes context): "
                         "splice one SAE per hook point")
    taken.add(cfg.hook_name)
    return cfg.hook_name


def _check_width(cfg: Any, layout: SiteLayout, where: str) -> None:
    """d_in and reshape_activations against the site's layout (SAEConfigError naming the field)."""
    if cfg.reshape_activations == "hook_z" and layout.heads is None:
        raise SAEConfigError(f"{where}: field 'reshape_activations' = 'hook_z', but {cfg.hook_name} is "
                             f"{layout.shape}, without a head dimension to flatten; allowed here: 'none'")
    width = layout.d_in(cfg.reshape_activations)
    if cfg.d_in == width:
        return
    if layout.heads and cfg.d_in == layout.d_in("hook_z"):
        raise SAEConfigError(f"{where}: field 'reshape_activations' = {cfg.reshape_activations!r}, but d_in = "
                             f"{cfg.d_in} is {cfg.hook_name}'s head x {layout.width} ({layout.shape}) flattened: "
                             "set it to 'hook_z'")
    raise SAEConfigError(f"{where}: field 'd_in' = {cfg.d_in}, but the model's {cfg.hook_name} ({layout.shape}, "
                         f"reshape_activations={cfg.reshape_activations!r}) has width {width}: this SAE was trained "
                         "for another model or site")


def _record_mask(module: torch.nn.Module, args: tuple, kwargs: dict) -> None:
    """Forward pre-hook on the base model (`GPTNeoXModel.forward(input_ids, attention_mask, ...)`, which the
    heads and `generate` call positionally or by keyword): remember the attention mask for the splice hooks."""
    mask = kwargs.get("attention_mask", args[1] if len(args) > 1 else None)
    _MASK.set(mask if torch.is_tensor(mask) and mask.dim() == 2 else None)


def _splice_hook(sae: SAE, use_error_term: bool):
    def splice(value: torch.Tensor, hook: HookPoint) -> torch.Tensor:
        mask = _MASK.get()
        rows = value.shape[0]
        if mask is not None and mask.shape[0] == rows and mask.shape[1] >= value.shape[1]:
            mask = mask[:, -value.shape[1]:].to(value.device)  # this call's positions (a KV cache holds the rest)
        else:
            mask = None
        return sae(value, use_error_term=use_error_term, mask=mask)

    return splice


def _rename(sae: SAE, site: str | None) -> None:
    for attr, point in sae.hook_points().items():
        point.name = f"{site}.{attr}" if site else attr


@contextlib.contextmanager
def saes(model: Any, saes: SAE | Sequence[SAE], use_error_term: bool = False) -> Iterator[Any]:
    """Context in which `saes` replace their sites' activations (see the module docstring).

    Args:
        model: a workbench model.
        saes: one SAE or a list (at most one per hook point); each reads `sae.cfg.hook_name`.
        use_error_term: add each SAE's reconstruction error back (the model then computes exactly its clean
            output unless a hook changes an SAE value).

    Raises:
        KeyError: an SAE's hook_name the model lacks (naming the SAE's cfg file and the closest names).
        SAEConfigError: an SAE whose d_in / reshape_activations do not fit the site's layout (`sae.sites`), a
            site without a trailing feature dimension (attention patterns), or no hook_name.
        ValueError: two SAEs at one site.
    """
    items, taken = _as_list(saes), set()
    sites = [_check(model, sae, taken) for sae in items]
    base = getattr(model, "gpt_neox", model)
    mask_handle = base.register_forward_pre_hook(_record_mask, with_kwargs=True)
    originals = dict(model.hook_dict)
    try:
        _register_points(model, items, sites)
        with model.hooks(fwd_hooks=[(site, _splice_hook(sae, use_error_term)) for sae, site in zip(items, sites)]):
            yield model
    finally:
        mask_handle.remove()
        for sae in items:
            for point in sae.hook_points().values():
                point.remove_hooks()  # hooks attached by name die with the names
            _rename(sae, None)
        model.hook_dict.clear()
        model.hook_dict.update(originals)


def _register_points(model: Any, items: list[SAE], sites: list[str]) -> None:
    """Put each SAE's hook points into `model.hook_dict` right after its site (forward order)."""
    after = {}
    for sae, site in zip(items, sites):
        _rename(sae, site)
        after[site] = {point.name: point for point in sae.hook_points().values()}
    entries = []
    for name, point in model.hook_dict.items():
        entries.append((name, point))
        entries.extend(after.get(name, {}).items())
    model.hook_dict.clear()
    model.hook_dict.update(entries)


def run_with_saes(model: Any, inputs: Any = None, saes: SAE | Sequence[SAE] = (), use_error_term: bool = False,
                  **kwargs: Any) -> Any:
    """One forward with `saes` spliced in (and `fwd_hooks` / `bwd_hooks` / forward arguments as for
    `model.run_with_hooks`).

    Returns:
        The model's output (`.logits` `[batch, pos, vocab]`), as `run_with_hooks` returns it.
    """
    with model.saes(saes, use_error_term=use_error_term):
        return model.run_with_hooks(inputs, **kwargs)


def run_with_cache_with_saes(model: Any, inputs: Any = None, saes: SAE | Sequence[SAE] = (),
                             use_error_term: bool = False, **kwargs: Any) -> tuple[Any, Any]:
    """`model.run_with_cache` with `saes` spliced in: the cache also holds the SAEs' hook points under
    SAELens's names (`blocks.2.hook_resid_pre.hook_sae_acts_post` `[batch, pos, d_sae]`).

    Returns:
        `(logits, cache)` as `run_with_cache` returns them.
    """
    with model.saes(saes, use_error_term=use_error_term):
        return model.run_with_cache(inputs, **kwargs)
