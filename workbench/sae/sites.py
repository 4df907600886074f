"""Which hook sites an SAE can read, and how: the width of the vector it encodes at each token.

An SAE reads one vector per token, so a site needs a `[batch, pos, ..., d]` layout with a trailing feature
dimension. `[batch, pos, d]` sites (`hook_resid_pre`, `mlp.hook_post` ...) are read as they are
(`reshape_activations="none"`); per-head sites `[batch, pos, head, d]` (`attn.hook_z`, `hook_q` ...) are read
flattened to `head * d` (SAELens's `reshape_activations="hook_z"`) or, with "none", one head at a time.
Attention patterns and scores (`[batch, head, query_pos, key_pos]`) have no feature dimension: no SAE here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..hook_points import site_of


@dataclass(frozen=True)
class SiteLayout:
    """The layout of a site's activation.

    Attributes:
        shape: the site's shape string (`[batch, pos, head, d_head]`).
        width: the trailing dimension `d`.
        heads: the head dimension before it (None for `[batch, pos, d]` sites).
    """

    shape: str
    width: int
    heads: int | None

    def d_in(self, reshape: str) -> int:
        """The SAE input width for SAELens's `reshape_activations` value ("hook_z" flattens the heads)."""
        return self.width * self.heads if reshape == "hook_z" and self.heads else self.width

    @property
    def reshape(self) -> str:
        """The `reshape_activations` an SAE trained here gets (heads flattened, as `train` harvests them)."""
        return "hook_z" if self.heads else "none"


def site_layout(model: Any, hook_name: str) -> SiteLayout | None:
    """The layout of `hook_name` in `model` (None for a hook point not in `workbench.hook_points.SITES`).

    Raises:
        ValueError: a site without a trailing feature dimension (attention patterns / scores), naming it.
    """
    site, config = site_of(hook_name), model.config
    if site is None:
        return None
    dims = [d.strip() for d in site.shape.strip("[]").split(",")]
    if dims[:2] != ["batch", "pos"]:
        raise ValueError(f"{hook_name} has shape {site.shape}: no trailing feature dimension [batch, pos, ..., d] "
                         "for an SAE to read per token; use a site such as hook_resid_pre, attn.hook_z or "
                         "mlp.hook_post")
    heads = config.num_attention_heads if len(dims) == 4 and dims[2] == "head" else None
    width = {"d_model": config.hidden_size, "d_mlp": config.intermediate_size,
             "d_head": config.hidden_size // config.num_attention_heads}.get(dims[-1])
    if width is None:
        width = int(dims[-1])  # e.g. hook_scale's [.., 1]
    return SiteLayout(site.shape, width, heads)
