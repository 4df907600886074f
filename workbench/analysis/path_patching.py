"""Path patching (Wang et al. 2022, "Interpretability in the Wild"): the effect of sender heads on the metric
*through* chosen receivers only.

1. the clean and the corrupted run are cached (head outputs `z`, MLP outputs when frozen); then, on the clean input,
2. the senders' `z` is taken from the corrupted run while every other head (`freeze="heads"`, the paper's
   setting; MLPs recompute) or every other head and MLP (`freeze="all"`: the direct path only) is held at its
   clean value; the receivers' inputs are recorded there: each receiver head's own q/k/v input
   (`blocks.L.hook_q_input` ..., the split-input sites) or an MLP's input (`blocks.L.hook_mlp_in`);
3. a clean run in which only the receivers read those recorded inputs; everything downstream recomputes.

With `receivers="resid_post"` (the residual stream at the end) run 2's logits are the answer.
`direct_path_patch` is TransformerLens's `get_act_patch_direct_path` (corrupted base run, the sender's clean output
along the direct path into one later head's q/k/v input at a time): `path_patch_receivers` with `freeze="all"`
and the roles of the two inputs exchanged.
"""

from __future__ import annotations

from typing import Any, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ._common import as_tokens
from .patching import Metric, _baselines, _frame

Head = tuple[int, int]
Receiver = tuple[int, "int | str"]  # (layer, head) or (layer, "mlp")
_FREEZE = ("heads", "all", "none")


class _PathRuns:
    """The cached clean and corrupted runs shared by every path-patching experiment of a sweep."""

    def __init__(self, model: Any, clean: Any, corrupted: Any, freeze: str) -> None:
        if freeze not in _FREEZE:
            raise ValueError(f"freeze must be one of {_FREEZE}, got {freeze!r}")
        self.model, self.freeze = model, freeze
        self.n_layers, self.n_heads = model.config.num_hidden_layers, model.config.num_attention_heads
        self.ids, self.mask = as_tokens(model, clean)
        x_ids, x_mask = as_tokens(model, corrupted)
        if self.ids.shape != x_ids.shape:
            raise ValueError(f"clean and corrupted must tokenise to the same shape, got {tuple(self.ids.shape)} "
                             f"and {tuple(x_ids.shape)}")
        z = [f"blocks.{l}.attn.hook_z" for l in range(self.n_layers)]
        mlp = [f"blocks.{l}.hook_mlp_out" for l in range(self.n_layers)] if freeze == "all" else []
        self.clean_logits, self.clean = model.run_with_cache(self.ids, names_filter=z + mlp, attention_mask=self.mask)
        self.corrupted_logits, self.corrupted = model.run_with_cache(x_ids, names_filter=z, attention_mask=x_mask)

    def _check_head(self, head: Any, what: str) -> Head:
        if not (isinstance(head, (tuple, list)) and len(head) == 2 and all(isinstance(i, int) for i in head)
                and 0 <= head[0] < self.n_layers and 0 <= head[1] < self.n_heads):
            raise ValueError(f"{what} must be (layer, head) pairs within ({self.n_layers}, {self.n_heads}), "
                             f"got {head!r}")
        return tuple(head)

    def _sender_hooks(self, senders: list[Head]) -> list:
        """Run 2's hooks: senders' z from the corrupted run, the frozen components at their clean values."""
        first = min(l for l, _ in senders)
        hooks = []
        for l in range(first, self.n_layers):
            name = f"blocks.{l}.attn.hook_z"
            heads = [h for sl, h in senders if sl == l]
            if heads or self.freeze != "none":

                def set_z(z: torch.Tensor, hook, name=name, heads=heads) -> torch.Tensor:
                    z = (z if self.freeze == "none" else self.clean[name]).clone()  # [b, p, head, d_head]
                    z[:, :, heads] = self.corrupted[name][:, :, heads]
                    return z

                hooks.append((name, set_z))
            if self.freeze == "all":
                hooks.append((f"blocks.{l}.hook_mlp_out", lambda out, hook, l=l: self.clean["mlp_out", l]))
        return hooks

    def _receiver_sites(self, receivers: Sequence[Receiver], receiver_input: str) -> dict[str, list[int] | None]:
        """Receiver hook name -> its receiving heads (None: the whole MLP input)."""
        if not receiver_input or set(receiver_input) - set("qkv"):
            raise ValueError(f"receiver_input must be 'q', 'k', 'v' or a combination such as 'qkv', "
                             f"got {receiver_input!r}")
        sites: dict[str, list[int] | None] = {}
        for r in receivers:
            if isinstance(r, (tuple, list)) and len(r) == 2 and r[1] == "mlp":
                if not (isinstance(r[0], int) and 0 <= r[0] < self.n_layers):
                    raise ValueError(f"MLP receiver layer out of range: {r!r}")
                sites[f"blocks.{r[0]}.hook_mlp_in"] = None
                continue
            layer, head = self._check_head(r, "receivers")
            for x in dict.fromkeys(receiver_input):
                sites.setdefault(f"blocks.{layer}.hook_{x}_input", []).append(head)
        return sites

    def reaches(self, senders: list[Head], receivers: Any) -> bool:
        """Whether any sender writes to the residual stream a receiver reads (else the result is the clean metric)."""
        if receivers == "resid_post":
            return True
        sequential = not self.model.config.use_parallel_residual
        first = min(l for l, _ in senders)
        return any(r[0] > first or (r[1] == "mlp" and sequential and r[0] == first) for r in receivers)

    def logits(self, senders: Sequence[Head], receivers: Any, receiver_input: str) -> torch.Tensor:
        """Logits of one path-patching experiment (runs 2 and 3)."""
        senders = [self._check_head(s, "senders") for s in senders]
        if not senders:
            raise ValueError("give at least one sender head")
        model, kwargs = self.model, dict(attention_mask=self.mask)
        if receivers == "resid_post":
            return model.run_with_hooks(self.ids, fwd_hooks=self._sender_hooks(senders), **kwargs).logits
        sites = self._receiver_sites(receivers, receiver_input)
        with model.hooks(self._sender_hooks(senders)):
            _, seen = model.run_with_cache(self.ids, names_filter=list(sites), **kwargs)

        def receive(act: torch.Tensor, hook) -> torch.Tensor:
            heads, new = sites[hook.name], seen[hook.name]
            if heads is None:
                return new
            act = act.clone()  # [b, p, head, d_model]
            act[:, :, heads] = new[:, :, heads]
            return act

        return model.run_with_hooks(self.ids, fwd_hooks=[(name, receive) for name in sites], **kwargs).logits


def _as_list(spec: Any) -> Any:
    """One (layer, head | "mlp") pair or a list of them -> a list ("resid_post" stays)."""
    if isinstance(spec, str) and spec == "resid_post":
        return spec
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], int):
        return [spec]
    return list(spec)


@torch.no_grad()
def path_patch(
    model: Any,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    senders: Head | Sequence[Head],
    receivers: Any = "resid_post",
    receiver_input: str = "q",
    freeze: str = "heads",
) -> float:
    """The metric with the senders' output taken from the corrupted run along the paths into the receivers only.

    Args:
        model: a causal LM.
        clean, corrupted: texts or ids of the same shape `[b, p]`.
        metric: logits `[b, p, v]` -> scalar.
        senders: a (layer, head) or a list of them, patched together at every position.
        receivers: "resid_post" (the residual stream at the end), or (layer, head) pairs (each head's
            `receiver_input`) and (layer, "mlp") entries (that MLP's input), all at every position.
        receiver_input: which inputs of the receiver heads: "q", "k", "v" or a combination ("kv", "qkv").
        freeze: "heads" (every other head held at its clean output, MLPs recompute: the IOI paper's setting),
            "all" (every other head and MLP held: the direct path only) or "none" (nothing held).

    Returns:
        the metric of the path-patched clean run (the clean metric exactly when no sender precedes a receiver).
    """
    runs = _PathRuns(model, clean, corrupted, freeze)
    return float(metric(runs.logits(_as_list(senders), _as_list(receivers), receiver_input)))


def _sweep(runs: _PathRuns, metric: Metric, experiments: list, desc: str, progress: bool
           ) -> tuple[torch.Tensor, pd.DataFrame]:
    """[layers, heads] metric values of one experiment per head; unreachable ones hold the clean metric."""
    clean_metric = float(metric(runs.clean_logits))
    out = torch.full((runs.n_layers, runs.n_heads), clean_metric)
    for (l, h), senders, receivers, receiver_input in tqdm(experiments, desc=desc, disable=not progress):
        if runs.reaches(senders, receivers):
            out[l, h] = float(metric(runs.logits(senders, receivers, receiver_input)))
    frame = _frame(("layer", "head"), out, runs.ids, runs.model, "metric")
    _baselines(frame, metric, runs.clean_logits, runs.corrupted_logits)
    return out, frame


@torch.no_grad()
def path_patch_senders(
    model: Any,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    receivers: Any = "resid_post",
    receiver_input: str = "q",
    freeze: str = "heads",
    progress: bool = True,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """`path_patch` with every head in turn as the only sender (the IOI paper's sweeps, e.g. into the name movers' q).

    Returns:
        metric values `[layers, heads]` (senders that precede no receiver hold the clean metric) and a frame
        (`layer`, `head`, `metric`; `frame.attrs`: `clean_metric`, `corrupted_metric`).
    """
    runs = _PathRuns(model, clean, corrupted, freeze)
    receivers = _as_list(receivers)
    heads = [(l, h) for l in range(runs.n_layers) for h in range(runs.n_heads)]
    experiments = [(head, [head], receivers, receiver_input) for head in heads]
    return _sweep(runs, metric, experiments, "path patching senders", progress)


@torch.no_grad()
def path_patch_receivers(
    model: Any,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    senders: Head | Sequence[Head],
    receiver_input: str = "q",
    freeze: str = "heads",
    progress: bool = True,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """`path_patch` from fixed senders with every head in turn as the only receiver.

    Returns:
        metric values `[layers, heads]` (heads at or before the senders' first layer hold the clean metric) and a
        frame as `path_patch_senders`'.
    """
    runs = _PathRuns(model, clean, corrupted, freeze)
    senders = _as_list(senders)
    heads = [(l, h) for l in range(runs.n_layers) for h in range(runs.n_heads)]
    experiments = [(head, senders, [head], receiver_input) for head in heads]
    return _sweep(runs, metric, experiments, "path patching receivers", progress)


def direct_path_patch(
    model: Any,
    clean: Any,
    corrupted: Any,
    metric: Metric,
    sender: Head,
    component: str = "q",
    progress: bool = True,
) -> tuple[torch.Tensor, pd.DataFrame]:
    """TransformerLens's `get_act_patch_direct_path`: the corrupted run with the sender's *clean* output added along
    the direct path into one later head's `component` input at a time (as `patch`, the clean value is put back).

    Returns:
        metric values `[layers, heads]` (TransformerLens's shape; heads at or before the sender's layer hold the
        corrupted metric, where TransformerLens writes 0.0 placeholders) and a frame as `path_patch_senders`'.
    """
    values, frame = path_patch_receivers(model, corrupted, clean, metric, sender, component, "all", progress)
    frame.attrs.update(clean_metric=frame.attrs["corrupted_metric"], corrupted_metric=frame.attrs["clean_metric"])
    return values, frame
