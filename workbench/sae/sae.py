"""The `SAE` module: encode, decode and forward of a sparse autoencoder, computed as SAELens computes them.

Architectures (SAELens's names and parameters):
    standard  acts = relu(x' @ W_enc + b_enc)
    topk      the k largest of x' @ W_enc + b_enc, then relu (sparsify: relu then top-k, the same values)
    jumprelu  acts = relu(pre) * (pre > threshold)
    gated     acts = (x' @ W_enc + b_gate > 0) * relu(x' @ (W_enc * exp(r_mag)) + b_mag)
with x' = normalise(x) - b_dec (the `- b_dec` only with `apply_b_dec_to_input`), and
    recons = acts @ W_dec + b_dec, denormalised.

Hook points (SAELens's names): `hook_sae_input`, `hook_sae_acts_pre`, `hook_sae_acts_post`, `hook_sae_recons`,
`hook_sae_error`, `hook_sae_output`. Spliced into a model (`workbench.sae.splice`) they are named under the
site, `blocks.2.hook_resid_pre.hook_sae_acts_post`, and take hooks through the model's hook API.
"""

from __future__ import annotations

import contextlib
from typing import Iterator

import torch
from torch import nn

from ..hook_points import HookPoint
from .config import SAEConfig

HOOK_NAMES = ("hook_sae_input", "hook_sae_acts_pre", "hook_sae_acts_post", "hook_sae_recons", "hook_sae_error",
              "hook_sae_output")
# Parameters of each architecture, as SAELens's state dict names them.
PARAMETERS = {
    "standard": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "topk": ("W_enc", "b_enc", "W_dec", "b_dec"),
    "jumprelu": ("W_enc", "b_enc", "W_dec", "b_dec", "threshold"),
    "gated": ("W_enc", "b_gate", "b_mag", "r_mag", "W_dec", "b_dec"),
}


class SAE(nn.Module):
    """A sparse autoencoder over one activation site.

    Args:
        cfg: its configuration (`SAEConfig`).
        init: "zeros" leaves the parameters zero (for loading); "kaiming" initialises them as SAELens does
            (W_dec rows kaiming-uniform, W_enc = W_dec.T, biases zero).
        generator: the random generator of the "kaiming" initialisation (default: torch's global one).

    Attributes:
        W_enc: `[d_in, d_sae]`; W_dec: `[d_sae, d_in]`; b_enc `[d_sae]` (None for gated, which has b_gate /
        b_mag / r_mag `[d_sae]`); b_dec `[d_in]`; threshold `[d_sae]` (jumprelu).

    One SAE object runs one forward at a time (it notes per forward whether a hook changed a value): to splice
    the same SAE in concurrent threads, give each its own `copy.deepcopy(sae)`.
    """

    def __init__(self, cfg: SAEConfig, init: str = "zeros", generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.cfg = cfg
        dtype = getattr(torch, cfg.dtype)
        shapes = {"W_enc": (cfg.d_in, cfg.d_sae), "W_dec": (cfg.d_sae, cfg.d_in), "b_dec": (cfg.d_in,)}
        self.b_enc: nn.Parameter | None = None
        for name in PARAMETERS[cfg.architecture]:
            setattr(self, name, nn.Parameter(torch.zeros(shapes.get(name, (cfg.d_sae,)), dtype=dtype)))
        for name in HOOK_NAMES:
            point = HookPoint()
            point.name = name
            setattr(self, name, point)
        self.log_sparsity: torch.Tensor | None = None  # log10 feature densities [d_sae] (sparsity.safetensors)
        self._hooks_on = True
        self._edited = False  # whether a hook replaced or edited a value in the current forward
        if init == "kaiming":
            with torch.no_grad():
                nn.init.kaiming_uniform_(self.W_dec, generator=generator)
                self.W_enc.copy_(self.W_dec.T)
        elif init != "zeros":
            raise ValueError(f"init must be 'zeros' or 'kaiming', got {init!r}")

    # ---- plumbing -----------------------------------------------------------------------------------
    @property
    def dtype(self) -> torch.dtype:
        return self.W_dec.dtype

    @property
    def device(self) -> torch.device:
        return self.W_dec.device

    def hook_points(self) -> dict[str, HookPoint]:
        """{SAELens hook name: HookPoint} of this SAE, in the order a forward reaches them."""
        return {name: getattr(self, name) for name in HOOK_NAMES}

    def _hook(self, point: HookPoint, value: torch.Tensor) -> torch.Tensor:
        """Run `point`'s hooks on `value` (unless hooks are off), noting whether they changed it."""
        if not self._hooks_on or not point.is_active():
            return value
        out, changed = point.observe(value)
        self._edited |= changed
        return out

    @contextlib.contextmanager
    def _hooks_disabled(self) -> Iterator[None]:
        previous, self._hooks_on = self._hooks_on, False
        try:
            yield
        finally:
            self._hooks_on = previous

    # ---- input handling -----------------------------------------------------------------------------
    def _normalise(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple | None]:
        """Run-time input normalisation (SAELens's); returns the normalised input and what undoes it."""
        how = self.cfg.normalize_activations
        if how == "constant_norm_rescale":
            coeff = (self.cfg.d_in ** 0.5) / x.norm(dim=-1, keepdim=True)
            return x * coeff, ("scale", coeff)
        if how == "layer_norm":
            mu = x.mean(dim=-1, keepdim=True)
            x = x - mu
            std = x.std(dim=-1, keepdim=True)
            return x / (std + 1e-5), ("ln", mu, std)
        return x, None

    @staticmethod
    def _denormalise(x: torch.Tensor, undo: tuple | None) -> torch.Tensor:
        if undo is None:
            return x
        if undo[0] == "scale":
            return x / undo[1]
        return x * undo[2] + undo[1]

    def _flatten(self, x: torch.Tensor) -> torch.Tensor:
        """`[..., head, d_head]` -> `[..., d_in]` for hook_z SAEs (SAELens's reshape_activations)."""
        if self.cfg.reshape_activations == "hook_z":
            return x.flatten(-2)
        return x

    # ---- encode / decode ----------------------------------------------------------------------------
    def _encode(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, tuple | None]:
        """acts `[..., d_sae]` and the normalisation to undo in decode."""
        sae_in = self._hook(self.hook_sae_input, self._flatten(x).to(self.dtype))
        sae_in, undo = self._normalise(sae_in)
        if self.cfg.apply_b_dec_to_input:
            sae_in = sae_in - self.b_dec
        arch = self.cfg.architecture
        if arch == "gated":
            gate = (sae_in @ self.W_enc + self.b_gate > 0).to(self.dtype)
            pre = self._hook(self.hook_sae_acts_pre, sae_in @ (self.W_enc * self.r_mag.exp()) + self.b_mag)
            acts = gate * torch.relu(pre)
        else:
            pre = self._hook(self.hook_sae_acts_pre, sae_in @ self.W_enc + self.b_enc)
            if arch == "standard":
                acts = torch.relu(pre)
            elif arch == "jumprelu":
                acts = torch.relu(pre) * (pre > self.threshold).to(self.dtype)
            else:
                acts = self._topk(pre)
        if mask is not None:  # padding positions have no features
            acts = acts * mask[..., None].to(acts.dtype)
        return self._hook(self.hook_sae_acts_post, acts), undo

    def _topk(self, pre: torch.Tensor) -> torch.Tensor:
        if self.cfg.rescale_acts_by_decoder_norm:
            pre = pre * self.W_dec.norm(dim=-1)
        values, indices = torch.topk(pre, k=self.cfg.k, dim=-1, sorted=False)
        return torch.zeros_like(pre).scatter_(-1, indices, values.relu())

    def _decode(self, acts: torch.Tensor, undo: tuple | None, shape: torch.Size | None = None) -> torch.Tensor:
        if self.cfg.architecture == "topk" and self.cfg.rescale_acts_by_decoder_norm:
            acts = acts / self.W_dec.norm(dim=-1)
        recons = self._hook(self.hook_sae_recons, acts @ self.W_dec + self.b_dec)
        recons = self._denormalise(recons, undo)
        if self.cfg.reshape_activations == "hook_z" and shape is not None:
            recons = recons.reshape(shape)
        return recons

    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Feature activations.

        Args:
            x: activations of the site  # [..., d_in] ([..., head, d_head] for a hook_z SAE)

        Returns:
            acts  # [..., d_sae]
        """
        return self._encode(x)[0]

    def decode(self, acts: torch.Tensor) -> torch.Tensor:
        """Reconstruction from feature activations (no input normalisation to undo).

        Args:
            acts: feature activations  # [..., d_sae]

        Returns:
            reconstruction  # [..., d_in]
        """
        return self._decode(acts.to(self.dtype), None)

    def forward(self, x: torch.Tensor, use_error_term: bool = False, mask: torch.Tensor | None = None
                ) -> torch.Tensor:
        """The SAE's output in place of `x`: its reconstruction, or with `use_error_term` the reconstruction
        plus the error of the unhooked SAE (`x - recons_clean`), as SAELens splices it.

        With `use_error_term` and no hook that changes a value, the output *is* `x` (bit for bit), so the
        model computes exactly what it computes without the SAE. Positions where `mask` is 0 (padding) get
        no features and keep `x`.

        Args:
            x: activations  # [..., d_in]
            use_error_term: add the reconstruction error back.
            mask: 1 for real tokens, 0 for padding  # [...] (x's shape without the last dimension)

        Returns:
            the output, in x's dtype  # [..., d_in]
        """
        if use_error_term and not (self._hooks_on and any(p.is_active() for p in self.hook_points().values())):
            return x  # nothing watches or changes the SAE: its output would be x itself
        self._edited = False
        acts, undo = self._encode(x, mask)
        recons = self._decode(acts, undo, x.shape)
        if use_error_term:
            if self._edited:  # the clean reconstruction, without hooks
                with torch.no_grad(), self._hooks_disabled():
                    clean_acts, clean_undo = self._encode(x, mask)
                    clean = self._decode(clean_acts, clean_undo, x.shape)
            else:
                clean = recons
            error = self._hook(self.hook_sae_error, x.to(self.dtype) - clean)
            out = recons + error if self._edited else x
        else:
            out = recons
        if mask is not None and out is not x:
            keep = mask.reshape(mask.shape + (1,) * (x.dim() - mask.dim())).bool()
            out = torch.where(keep, out, x.to(out.dtype))
        out = self._hook(self.hook_sae_output, out)
        return out if out is x else out.to(x.dtype)

    @torch.no_grad()
    def set_decoder_norm_to_unit_norm(self) -> None:
        """Rescale each W_dec row to norm 1 (the TopK training constraint)."""
        self.W_dec.div_(self.W_dec.norm(dim=-1, keepdim=True).clamp_min(torch.finfo(self.dtype).eps))

    def extra_repr(self) -> str:
        c = self.cfg
        k = f", k={c.k}" if c.architecture == "topk" else ""
        return f"{c.architecture}, d_in={c.d_in}, d_sae={c.d_sae}{k}, hook_name={c.hook_name!r}"
