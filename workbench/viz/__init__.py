"""Notebook widgets (anywidget) and static matplotlib figures.

Widgets: `AttentionView`, `LogitLensView`, `TokenView`, `FeatureView` (SAE features) (each has `.to_html(path)`). Like CircuitsVis's
functions they take plain data (tokens, arrays, labels); `View.from_model(model, text)` computes that data
with `workbench.analysis` (through the hook system, so under any active `model.hooks(...)`), and
`View.from_cache(cache, ...)` reads it from a cached run. Plots: `plot_*` in
`workbench.viz.plots`. Convenience: `show_attention(model, text)`, `show_logit_lens`, `show_tokens`.
Widgets import anywidget lazily, so the plots work without the notebook extra.
"""

from __future__ import annotations

from typing import Any

from workbench.viz.lens_plots import plot_lens_comparison
from workbench.viz.plots import (
    plot_head_detector,
    plot_logit_diff_contributions,
    plot_patching_layer_head,
    plot_patching_layer_pos,
    plot_residual_norms,
    plot_token_loss,
)
from workbench.viz.sae_plots import plot_feature_density, plot_l0_loss_tradeoff

_WIDGETS = {"AttentionView": "attention", "LogitLensView": "logit_lens", "TokenView": "token_view", "FeatureView": "feature_view"}

__all__ = [
    "AttentionView", "LogitLensView", "TokenView", "show_attention", "show_logit_lens", "show_tokens",
    "plot_head_detector", "plot_logit_diff_contributions", "plot_patching_layer_head", "plot_patching_layer_pos",
    "plot_residual_norms", "plot_token_loss", "plot_lens_comparison",
    "FeatureView", "plot_feature_density", "plot_l0_loss_tradeoff",
]  # fmt: skip


def __getattr__(name: str) -> Any:
    if name in _WIDGETS:
        import importlib

        return getattr(importlib.import_module(f"workbench.viz.{_WIDGETS[name]}"), name)
    raise AttributeError(f"module 'workbench.viz' has no attribute {name!r}")


def show_attention(model: Any, text_or_tokens: Any, **kwargs: Any) -> Any:
    """`AttentionView.from_model(model, text_or_tokens, **kwargs)` (shows itself when it is a cell's last expression)."""
    from workbench.viz.attention import AttentionView

    return AttentionView.from_model(model, text_or_tokens, **kwargs)


def show_logit_lens(model: Any, text_or_tokens: Any, **kwargs: Any) -> Any:
    """`LogitLensView.from_model(model, text_or_tokens, **kwargs)`."""
    from workbench.viz.logit_lens import LogitLensView

    return LogitLensView.from_model(model, text_or_tokens, **kwargs)


def show_tokens(model: Any, texts: Any, **kwargs: Any) -> Any:
    """`TokenView.from_model(model, texts, **kwargs)`."""
    from workbench.viz.token_view import TokenView

    return TokenView.from_model(model, texts, **kwargs)
