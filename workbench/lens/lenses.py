"""Logit lens and tuned lens behind one interface: decode the residual stream at any layer into logits.

Layers are numbered as `analysis.residual_stack` numbers its rows (and as the tuned-lens package numbers
its translators): layer `i < L` is `blocks.i.hook_resid_pre` (0 = the embeddings), layer `L` is the final
`blocks.{L-1}.hook_resid_post`, where every lens is the model's own prediction.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import torch

from workbench.analysis.logit_lens import lens_logits
from workbench.analysis.residual import residual_stack


class Lens:
    """A lens: per layer, a map of the residual stream into the space `ln_final` + unembedding decodes.

    Args:
        model: the workbench causal LM whose residual stream the lens reads.
    """

    kind = "lens"

    def __init__(self, model: Any) -> None:
        self.model = model
        self.num_layers = int(model.config.num_hidden_layers)
        self.d_model = int(model.config.hidden_size)

    def translate(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """The residual at `layer` mapped to a final-layer residual `[..., d]` (identity here)."""
        return hidden

    def layer_index(self, layer: int) -> int:
        """`layer` in 0..L (negative counts from the end, -1 = the final residual), or a ValueError."""
        n = self.num_layers + 1
        if isinstance(layer, bool) or not isinstance(layer, int) or not -n <= layer < n:
            raise ValueError(f"layer must be an int in 0..{self.num_layers} (or -{n}..-1), got {layer!r}")
        return layer % n

    def hidden(self, cache_or_hidden: Any, layer: int) -> torch.Tensor:
        """The residual `[..., d]` the lens reads at `layer`: the tensor itself, or from an ActivationCache
        (`blocks.{layer}.hook_resid_pre`, or the last `hook_resid_post` for layer L)."""
        layer = self.layer_index(layer)
        if torch.is_tensor(cache_or_hidden):
            hidden = cache_or_hidden
        elif hasattr(cache_or_hidden, "cache_dict"):
            last = layer == self.num_layers
            name = f"blocks.{layer - 1 if last else layer}.hook_resid_{'post' if last else 'pre'}"
            if name not in cache_or_hidden.cache_dict:
                raise KeyError(_missing_residual(cache_or_hidden.cache_dict, name, layer))
            hidden = cache_or_hidden.cache_dict[name]
        else:
            raise TypeError(f"expected an ActivationCache or a residual tensor [..., d], got {type(cache_or_hidden).__name__}")
        if hidden.shape[-1] != self.d_model:
            raise ValueError(f"the residual's last dimension is {hidden.shape[-1]}, the model's d_model is {self.d_model}")
        return hidden

    def logits(self, cache_or_hidden: Any, layer: int) -> torch.Tensor:
        """The lens's logits at one layer.

        Args:
            cache_or_hidden: an ActivationCache holding the layer's residual, or the residual `[..., d]`.
            layer: 0..L as in the module docstring (L = the model's own logits).

        Returns:
            logits `[..., v]` in the model's dtype (differentiable in the lens's parameters).
        """
        layer = self.layer_index(layer)
        return lens_logits(self.model, self.translate(self.hidden(cache_or_hidden, layer), layer))

    def log_probs(self, cache_or_hidden: Any, layer: int) -> torch.Tensor:
        """`log_softmax` of `logits`, float32 `[..., v]`."""
        return self.logits(cache_or_hidden, layer).float().log_softmax(-1)

    @torch.no_grad()
    def stack_log_probs(self, resid: torch.Tensor) -> torch.Tensor:
        """Log-probabilities of every layer at once.

        Args:
            resid: `[L + 1, ..., d]`, one residual per layer (`analysis.residual_stack`'s rows).

        Returns:
            float32 `[L + 1, ..., v]`.
        """
        if resid.shape[0] != self.num_layers + 1:
            raise ValueError(f"expected {self.num_layers + 1} layers of residuals, got {resid.shape[0]}")
        return torch.stack([self.log_probs(resid[i], i) for i in range(resid.shape[0])])

    @torch.no_grad()
    def run(self, inputs: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The lens on a text, texts or ids, through `run_with_cache` (so under active `model.hooks(...)`).

        Returns:
            log-probabilities `[L + 1, b, p, v]` (float32), ids `[b, p]`, attention mask (None without padding).
        """
        resid, _, ids, mask = residual_stack(self.model, inputs)  # [L + 1, b, p, d]
        return self.stack_log_probs(resid), ids, mask


def _missing_residual(cached: dict, name: str, layer: int) -> str:
    """Why layer `layer`'s residual `name` is not in a cache: a run stopped early, or names_filter."""
    blocks = [int(m.group(1)) for m in map(re.compile(r"blocks\.(\d+)\.").match, cached) if m]
    block = int(name.split(".")[1])
    last = max(blocks, default=-1)
    # a forward stopped early stores up to the last block's output and nothing after it
    if 0 <= last < block and f"blocks.{last}.hook_resid_post" in cached:
        return (f"layer {layer} needs {name!r}, but the cache ends at block {last}: it comes from "
                f"run_with_cache(..., stop_at_layer={last + 1}); run at least to stop_at_layer={block + 1} "
                "(or without stop_at_layer) for this layer")
    return (f"layer {layer} needs {name!r}, which was not cached: run_with_cache(names_filter=...) stored "
            f"{len(cached)} values; include it in names_filter")


class LogitLens(Lens):
    """The logit lens (nostalgebraist, 2020): `ln_final` + unembedding applied to the residual as it is."""

    kind = "logit"


class TunedLens(Lens):
    """A tuned lens (Belrose et al., 2023): per layer an affine translator, then `ln_final` + unembedding.

    The translator of layer `i < L` maps `h` to `h + W_i h + b_i` (the tuned-lens package's parametrisation:
    `W = b = 0` is the logit lens, and weight decay pulls towards it); the final layer has none. Saved and loaded
    in the package's format (`workbench.lens.save` / `workbench.lens.load`).

    Args:
        model: the workbench causal LM.
        translators: L `Linear(d, d)` modules (default: zeros, i.e. the identity translation).
        bias: whether new translators have a bias.
    """

    kind = "tuned"

    def __init__(self, model: Any, translators: torch.nn.ModuleList | None = None, bias: bool = True) -> None:
        super().__init__(model)
        if translators is None:
            dtype = model.embed_out.weight.dtype
            translators = torch.nn.ModuleList(
                [torch.nn.Linear(self.d_model, self.d_model, bias=bias, dtype=dtype) for _ in range(self.num_layers)]
            )
            for t in translators:
                torch.nn.init.zeros_(t.weight)
                if t.bias is not None:
                    torch.nn.init.zeros_(t.bias)
        if len(translators) != self.num_layers:
            raise ValueError(f"a tuned lens of a {self.num_layers}-layer model needs {self.num_layers} translators, "
                             f"got {len(translators)}")
        self.translators = translators.to(model.embed_out.weight.device)

    @property
    def bias(self) -> bool:
        """Whether the translators have a bias `b`."""
        return self.translators[0].bias is not None

    def translate(self, hidden: torch.Tensor, layer: int) -> torch.Tensor:
        """`h + W_layer h + b_layer` `[..., d]` (in the translators' dtype); the final residual as it is."""
        if layer == self.num_layers:
            return hidden
        h = hidden.to(self.translators[layer].weight.dtype)
        return h + self.translators[layer](h)

    def parameters(self) -> list[torch.nn.Parameter]:
        """The translators' parameters (what training updates)."""
        return list(self.translators.parameters())

    @classmethod
    def train(cls, model: Any, texts: Any, steps: int = 250, **kwargs: Any) -> "TunedLens":
        """Train a tuned lens on `model`: see `workbench.lens.training.train_tuned_lens` for the arguments."""
        from .training import train_tuned_lens  # lazy: training.py imports this module

        return train_tuned_lens(model, texts, steps=steps, **kwargs)

    def save(self, path: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
        """Write the lens in the tuned-lens package's format (`config.json` + `params.pt`): see `format.save`."""
        from .format import save  # lazy: format.load builds a TunedLens

        return save(self, path, base_model_name_or_path)


LENS_KINDS = ("logit", "tuned")


def _is_demo_model(name: str) -> bool:
    """Whether a model's name_or_path is the demo model: "demo" or its directory, however spelt."""
    from workbench.hub import demo_path

    return name == "demo" or (bool(name) and Path(name).expanduser().resolve() == demo_path().resolve())


def as_lens(model: Any, lens: Any = "logit") -> Lens:
    """A Lens on `model` from a name or a lens.

    Args:
        model: the workbench model the lens reads.
        lens: `"logit"`, `"tuned"` (the tuned lens shipped for the model: the demo model has one), or a Lens
            built for a model of the same shape.

    Raises:
        ValueError: an unknown name, `"tuned"` for a model without a shipped lens, or a lens of another shape.
    """
    if isinstance(lens, Lens):
        shape = (int(model.config.num_hidden_layers), int(model.config.hidden_size))
        if (lens.num_layers, lens.d_model) != shape:
            raise ValueError(f"the lens reads a model with {lens.num_layers} layers and d_model {lens.d_model}; "
                             f"this model has {shape[0]} and {shape[1]}")
        return lens
    if lens == "logit":
        return LogitLens(model)
    if lens == "tuned":
        name = str(getattr(model, "name_or_path", ""))
        if not _is_demo_model(name):
            raise ValueError(f"lens='tuned' loads the tuned lens shipped for the demo model; for {name or 'this model'!r} "
                             "pass lens=workbench.lens.load(path, model) or TunedLens.train(model, texts)")
        from .format import load

        return load("demo", model)
    raise ValueError(f"lens must be one of {LENS_KINDS} or a workbench.lens.Lens, got {lens!r}")
