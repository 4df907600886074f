"""`SAEConfig`: what an SAE is (sizes, architecture, hook site, input handling), read from and written to
SAELens's `cfg.json` and read from EleutherAI sparsify's.

Every error names the file and the field at fault and the allowed values.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ARCHITECTURES = ("standard", "topk", "jumprelu", "gated")
# SAELens's input normalisations with a run-time effect here; "expected_average_only_in" is folded into the
# weights by SAELens's hub loader, so at inference it is the identity (as in SAELens's own SAE classes).
NORMALIZATIONS = ("none", "expected_average_only_in", "constant_norm_rescale", "layer_norm")
RESHAPES = ("none", "hook_z")
DTYPES = ("float32", "float64", "bfloat16", "float16")
# The SAELens config layout written by `to_saelens_dict` (>= 6.0: run-time metadata nested under "metadata").
SAELENS_FORMAT_VERSION = "6.0.0"
# Top-level keys of a SAELens cfg.json that describe the model side (SAELens's LLM_METADATA_KEYS, in part).
_METADATA_KEYS = ("model_name", "hook_name", "hook_head_index", "prepend_bos", "context_size", "dataset_path",
                  "neuronpedia_id", "model_class_name", "exclude_special_tokens", "seqpos_slice",
                  "model_from_pretrained_kwargs", "sae_lens_version", "sae_lens_training_version")


class SAEConfigError(ValueError):
    """A cfg.json (or weights file) an SAE cannot be built from; the message names the file and field."""


@dataclass
class SAEConfig:
    """An SAE's configuration.

    Attributes:
        d_in: width of the activation it reads (d_model for the residual stream).
        d_sae: number of latents (features).
        architecture: one of `ARCHITECTURES`: "standard" (ReLU), "topk", "jumprelu", "gated".
        hook_name: the model site it reads, a TransformerLens hook name (`blocks.2.hook_resid_pre`).
        k: active latents per token (TopK only).
        apply_b_dec_to_input: subtract the decoder bias from the input before encoding (SAELens's default).
        normalize_activations: one of `NORMALIZATIONS` (SAELens's meanings).
        rescale_acts_by_decoder_norm: TopK only: rank pre-activations scaled by the decoder row norms.
        reshape_activations: "hook_z" flattens `[..., head, d_head]` to `[..., head * d_head]` (SAELens).
        dtype: parameter dtype name (`DTYPES`).
        model_name: the model it was trained on (informational).
        metadata: other SAELens metadata, kept for a faithful round trip.
        source: the file it was read from (for error messages; not saved).
    """

    d_in: int
    d_sae: int
    architecture: str = "topk"
    hook_name: str | None = None
    k: int | None = None
    apply_b_dec_to_input: bool = True
    normalize_activations: str = "none"
    rescale_acts_by_decoder_norm: bool = False
    reshape_activations: str = "none"
    dtype: str = "float32"
    model_name: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    source: str | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        self.validate()

    def _error(self, field_name: str, message: str) -> SAEConfigError:
        where = self.source or "SAEConfig"
        return SAEConfigError(f"{where}: field {field_name!r}: {message}")

    def validate(self) -> None:
        """Check every field (SAEConfigError naming the file and field, with the allowed values)."""
        for name in ("d_in", "d_sae"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise self._error(name, f"must be a positive integer, got {value!r}")
        if self.architecture not in ARCHITECTURES:
            raise self._error("architecture", f"unknown architecture {self.architecture!r}; allowed: "
                                              f"{', '.join(ARCHITECTURES)}")
        if self.architecture == "topk":
            if isinstance(self.k, bool) or not isinstance(self.k, int) or not 1 <= self.k <= self.d_sae:
                raise self._error("k", f"a TopK SAE needs an integer k in [1, d_sae={self.d_sae}], got {self.k!r}")
        for name, allowed in (("normalize_activations", NORMALIZATIONS), ("reshape_activations", RESHAPES),
                              ("dtype", DTYPES)):
            if getattr(self, name) not in allowed:
                raise self._error(name, f"got {getattr(self, name)!r}; allowed: {', '.join(allowed)}")
        if self.hook_name is not None and not isinstance(self.hook_name, str):
            raise self._error("hook_name", f"must be a hook name string, got {self.hook_name!r}")

    # ---- SAELens ------------------------------------------------------------------------------------
    def to_saelens_dict(self) -> dict[str, Any]:
        """The cfg.json SAELens (>= 6) writes for this SAE."""
        metadata = {**self.metadata, "hook_name": self.hook_name, "model_name": self.model_name,
                    "sae_lens_version": self.metadata.get("sae_lens_version", SAELENS_FORMAT_VERSION)}
        out: dict[str, Any] = {
            "d_in": self.d_in, "d_sae": self.d_sae, "dtype": self.dtype, "device": "cpu",
            "apply_b_dec_to_input": self.apply_b_dec_to_input, "normalize_activations": self.normalize_activations,
            "reshape_activations": self.reshape_activations, "metadata": metadata, "architecture": self.architecture,
        }
        if self.architecture == "topk":
            out.update(k=self.k, rescale_acts_by_decoder_norm=self.rescale_acts_by_decoder_norm)
        return out

    @classmethod
    def from_saelens_dict(cls, raw: dict[str, Any], source: str | None = None) -> "SAEConfig":
        """Read a SAELens cfg.json: the >= 6 layout (metadata nested) or the older flat one (`hook_point`,
        `activation_fn_str: "topk"` + `activation_fn_kwargs.k`)."""
        where = source or "cfg.json"
        metadata = raw.get("metadata") or {}
        if not isinstance(metadata, dict):
            raise SAEConfigError(f"{where}: field 'metadata' must be a JSON object (hook_name, model_name ...), got "
                                 f"{metadata!r}")
        metadata = dict(metadata)
        flat = {k: raw[k] for k in _METADATA_KEYS if k in raw}
        metadata = {**flat, **metadata}
        if metadata.get("hook_head_index") is not None:
            raise SAEConfigError(f"{where}: field 'hook_head_index' = {metadata['hook_head_index']!r}: SAEs of one "
                                 "attention head are not supported (allowed: null)")
        hook_name = metadata.pop("hook_name", None) or raw.get("hook_point")
        model_name = metadata.pop("model_name", None)
        activation = raw.get("activation_fn", raw.get("activation_fn_str"))
        architecture = raw.get("architecture")
        kwargs = raw.get("activation_fn_kwargs") or {}
        if architecture is None:
            architecture = "topk" if activation == "topk" else "standard"
        k = raw.get("k", kwargs.get("k"))
        for name in ("d_in", "d_sae"):
            if name not in raw:
                raise SAEConfigError(f"{where}: field {name!r} is missing (an SAELens cfg.json has d_in and d_sae)")
        normalize = raw.get("normalize_activations", "none")
        if isinstance(normalize, bool) or normalize is None:  # SAELens < 6 wrote a bool
            normalize = "expected_average_only_in" if normalize else "none"
        return cls(d_in=raw["d_in"], d_sae=raw["d_sae"], architecture=architecture, hook_name=hook_name, k=k,
                   apply_b_dec_to_input=_flag(raw, "apply_b_dec_to_input", True, where),
                   normalize_activations=normalize,
                   rescale_acts_by_decoder_norm=_flag(raw, "rescale_acts_by_decoder_norm", False, where),
                   reshape_activations=raw.get("reshape_activations", "none"),
                   dtype=raw.get("dtype", "float32"), model_name=model_name, metadata=metadata, source=where)

    # ---- EleutherAI sparsify --------------------------------------------------------------------------
    @classmethod
    def from_sparsify_dict(cls, raw: dict[str, Any], hook_name: str | None, source: str | None = None
                           ) -> "SAEConfig":
        """Read a sparsify cfg.json (`d_in`, `k`, `num_latents` or `expansion_factor`, `activation`).

        Raises:
            SAEConfigError: a field this loader cannot honour (groupmax activation, a skip connection, a
                transcoder), naming the file and field.
        """
        where = source or "cfg.json"
        unsupported = {"activation": ("topk",), "skip_connection": (False,), "transcode": (False,)}
        for name, allowed in unsupported.items():
            if raw.get(name, allowed[0]) not in allowed:
                raise SAEConfigError(f"{where}: field {name!r} = {raw[name]!r} is not supported; allowed: "
                                     f"{', '.join(map(repr, allowed))}")
        if "d_in" not in raw:
            raise SAEConfigError(f"{where}: field 'd_in' is missing (sparsify's cfg.json stores it)")
        d_sae = raw.get("num_latents") or raw["d_in"] * raw.get("expansion_factor", 32)
        # sparsify subtracts b_dec before encoding and applies ReLU then TopK (= TopK then ReLU).
        return cls(d_in=raw["d_in"], d_sae=d_sae, architecture="topk", hook_name=hook_name, k=raw.get("k", 32),
                   apply_b_dec_to_input=True, source=where,
                   metadata={"sparsify": {k: v for k, v in raw.items() if k != "d_in"}})

    def replace(self, **changes: Any) -> "SAEConfig":
        """A copy with some fields changed (validated)."""
        return dataclasses.replace(self, **changes)


def _flag(raw: dict[str, Any], name: str, default: bool, where: str) -> bool:
    """A boolean field of a cfg.json: JSON true / false only (`bool("false")` would be True)."""
    value = raw.get(name)
    if value is None:  # absent or null: SAELens's default
        return default
    if not isinstance(value, bool):
        raise SAEConfigError(f"{where}: field {name!r} must be true or false (a JSON boolean), got {value!r}")
    return value


def read_json(path: str | os.PathLike) -> dict[str, Any]:
    """A JSON object from `path` (SAEConfigError naming the file for malformed JSON or a non-object)."""
    path = Path(path)
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise SAEConfigError(f"{path}: malformed JSON at line {err.lineno}, column {err.colno}: {err.msg}") from err
    if not isinstance(raw, dict):
        raise SAEConfigError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


_SPARSIFY_SITES = {"": "hook_resid_post", "mlp": "hook_mlp_out", "attention": "hook_attn_out",
                   "self_attn": "hook_attn_out", "attn": "hook_attn_out"}


def sparsify_hook_name(hookpoint: str) -> str | None:
    """sparsify's module-path hookpoint -> our TransformerLens hook name; None if it has no equivalent.

    `layers.6` -> `blocks.6.hook_resid_post` (a layer's output), `layers.6.mlp` -> `blocks.6.hook_mlp_out`,
    `layers.6.attention` -> `blocks.6.hook_attn_out`, `embed_tokens` / `embed_in` -> `hook_embed`; a leading
    `gpt_neox.` or `model.` is ignored.
    """
    name = re.sub(r"^(gpt_neox|model)\.", "", hookpoint)
    if name in ("embed_tokens", "embed_in"):
        return "hook_embed"
    match = re.fullmatch(r"layers[._](\d+)(?:\.(\w+))?", name)
    if match is None or (match.group(2) or "") not in _SPARSIFY_SITES:
        return None
    return f"blocks.{match.group(1)}.{_SPARSIFY_SITES[match.group(2) or '']}"
