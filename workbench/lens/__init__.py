"""Logit lens and tuned lens: decode the residual stream at every layer, in one interface.

`LogitLens(model)` reads each layer through the final LayerNorm and the unembedding; `TunedLens` adds a trained
affine translator per layer (`TunedLens.train(model, texts, steps=...)`). Both give `lens.logits(cache_or_hidden,
layer)`. Tuned lenses load and save in the tuned-lens package's format (`load`, `save`); `load("demo")` is the one
shipped for the demo model. `lens_metrics` measures each layer's KL to the final distribution and perplexity.
"""

from .format import demo_lens_path, load, save
from .lenses import LENS_KINDS, Lens, LogitLens, TunedLens, as_lens
from .metrics import lens_metrics
from .training import kl_to_final, train_tuned_lens
from .windows import token_windows

__all__ = [
    "Lens", "LogitLens", "TunedLens", "LENS_KINDS", "as_lens", "load", "save", "demo_lens_path", "lens_metrics", "kl_to_final",
    "train_tuned_lens", "token_windows",
]  # fmt: skip
