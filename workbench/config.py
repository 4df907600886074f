"""`GPTNeoXConfig`: the model's hyperparameters, read from and written to transformers' config.json.

Both layouts of config.json are understood: transformers 4.x (`rotary_pct`, `rotary_emb_base`, `rope_scaling`)
and 5.x (`rope_parameters` with `partial_rotary_factor`, `rope_theta`, `rope_type`, `factor`). Files are
written with both, so either major version of transformers reads them.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

ACTIVATIONS = ("gelu", "gelu_new", "gelu_fast", "gelu_pytorch_tanh", "quick_gelu", "relu", "silu", "swish", "tanh")
ROPE_SCALING_TYPES = ("linear", "dynamic")
ATTN_IMPLEMENTATIONS = ("eager", "sdpa", "flash_attention_2")
PROBLEM_TYPES = ("regression", "single_label_classification", "multi_label_classification")
# A config.json without these cannot describe a model; every other field has the reference's default.
REQUIRED_FIELDS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads")
# Written by transformers but not hyperparameters of ours; accepted and dropped on read.
_METADATA_KEYS = {"model_type", "architectures", "transformers_version", "torch_dtype", "dtype", "_name_or_path"}


@dataclass
class GPTNeoXConfig:
    """Hyperparameters of a GPT-NeoX model, with transformers' defaults (those of GPT-NeoX-20B).

    Derived values: `head_size = hidden_size // num_attention_heads`, `rotary_ndims = int(head_size * rotary_pct)`.
    `attn_implementation` ("eager", "sdpa" or "flash_attention_2") is a runtime choice and is not saved.
    """

    vocab_size: int = 50432
    hidden_size: int = 6144
    num_hidden_layers: int = 44
    num_attention_heads: int = 64
    intermediate_size: int = 24576
    hidden_act: str = "gelu"
    rotary_pct: float = 0.25
    rotary_emb_base: float = 10000
    attention_dropout: float = 0.0
    hidden_dropout: float = 0.0
    classifier_dropout: float = 0.1
    max_position_embeddings: int = 2048
    initializer_range: float = 0.02
    layer_norm_eps: float = 1e-5
    use_cache: bool = True
    bos_token_id: int | None = 0
    eos_token_id: int | None = 2
    pad_token_id: int | None = None
    tie_word_embeddings: bool = False
    use_parallel_residual: bool = True
    rope_scaling: dict | None = None
    attention_bias: bool = True
    num_labels: int = 2
    problem_type: str | None = None
    id2label: dict[int, str] | None = None
    attn_implementation: str = "sdpa"
    extra: dict[str, Any] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if self.id2label is not None:
            self.id2label = {int(k): v for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        self.rope_scaling = _normalise_rope_scaling(self.rope_scaling)
        self.validate()

    # ---- derived values -------------------------------------------------------------------------
    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_ndims(self) -> int:
        return int(self.head_size * self.rotary_pct)

    @property
    def label2id(self) -> dict[str, int]:
        labels = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        return {v: k for k, v in labels.items()}

    # ---- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise ValueError naming the first field whose value can't describe a model."""
        for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_attention_heads "
                f"({self.num_attention_heads})"
            )
        if self.hidden_act not in ACTIVATIONS:
            raise ValueError(f"hidden_act {self.hidden_act!r} is not supported; allowed: {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.rotary_pct <= 1.0:
            raise ValueError(f"rotary_pct must be in [0, 1], got {self.rotary_pct}")
        if self.rotary_ndims % 2:
            raise ValueError(
                f"rotary dimension int(head_size * rotary_pct) = int({self.head_size} * {self.rotary_pct}) = "
                f"{self.rotary_ndims} is odd; rotary embeddings rotate pairs of dimensions, so it must be even"
            )
        if self.attn_implementation not in ATTN_IMPLEMENTATIONS:
            raise ValueError(
                f"attn_implementation {self.attn_implementation!r} is not supported; "
                f"allowed: {', '.join(ATTN_IMPLEMENTATIONS)}"
            )
        if self.problem_type is not None and self.problem_type not in PROBLEM_TYPES:
            raise ValueError(f"problem_type {self.problem_type!r} is not one of {', '.join(PROBLEM_TYPES)}")
        for name in ("attention_dropout", "hidden_dropout", "classifier_dropout"):
            if not 0.0 <= float(getattr(self, name)) < 1.0:
                raise ValueError(f"{name} must be in [0, 1), got {getattr(self, name)}")

    # ---- serialisation --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "GPTNeoXConfig":
        """Build a config from a config.json dictionary in the transformers 4.x or 5.x layout.

        Raises:
            ValueError: a required field is missing, or a value is invalid (the message names the field).
        """
        data = dict(data)
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        if missing:
            raise ValueError(f"config is missing required field(s) {', '.join(missing)}")
        if data.get("model_type", "gpt_neox") != "gpt_neox":
            raise ValueError(f"model_type is {data['model_type']!r}; this is a GPT-NeoX ('gpt_neox') implementation")
        rope = data.pop("rope_parameters", None) or {}
        if rope:  # transformers 5.x layout
            data.setdefault("rotary_pct", rope.get("partial_rotary_factor", 0.25))
            data.setdefault("rotary_emb_base", rope.get("rope_theta", 10000))
            if rope.get("rope_type", "default") != "default" and not data.get("rope_scaling"):
                data["rope_scaling"] = {"rope_type": rope["rope_type"], "factor": rope.get("factor")}
        for key in ("partial_rotary_factor", "rope_theta"):  # flat 5.x spellings
            if key in data:
                data.setdefault("rotary_pct" if key == "partial_rotary_factor" else "rotary_emb_base", data[key])
                data.pop(key)
        if "attn_implementation" not in data and "_attn_implementation" in data:
            data["attn_implementation"] = data.pop("_attn_implementation")
        if data.get("attn_implementation") is None:
            data.pop("attn_implementation", None)
        data.pop("label2id", None)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k not in _METADATA_KEYS}
        return cls(**known, extra=extra)

    def to_dict(self) -> dict[str, Any]:
        """config.json contents readable by transformers 4.x and 5.x alike."""
        out: dict[str, Any] = {"architectures": ["GPTNeoXForCausalLM"], "model_type": "gpt_neox"}
        for f in dataclasses.fields(self):
            if f.name not in ("extra", "attn_implementation", "id2label"):
                out[f.name] = getattr(self, f.name)
        out["id2label"] = {str(k): v for k, v in (self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}).items()}
        out["label2id"] = self.label2id
        scaling = self.rope_scaling or {}
        if scaling:  # 4.x spelling, which 5.x also accepts
            out["rope_scaling"] = {"type": scaling["rope_type"], "factor": scaling["factor"]}
        out["rope_parameters"] = {
            "rope_type": scaling.get("rope_type", "default"),
            "rope_theta": self.rotary_emb_base,
            "partial_rotary_factor": self.rotary_pct,
            **({"factor": scaling["factor"]} if scaling else {}),
        }
        out.update(self.extra)
        return out

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "GPTNeoXConfig":
        """Read a config.json file (or the config.json inside a directory)."""
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no config.json at {path}") from None
        except json.JSONDecodeError as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ValueError(f"{path}: {err}") from None

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None) -> "GPTNeoXConfig":
        """Config of a checkpoint: a directory, `"demo"`, or a hub id."""
        from .hub import resolve_model_dir

        return cls.from_json_file(resolve_model_dir(name_or_path, revision=revision))

    def save_pretrained(self, directory: str | os.PathLike) -> Path:
        """Write `config.json` into `directory` (created if needed); returns its path."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "config.json"
        path.write_text(json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n", encoding="utf-8")
        return path


def _normalise_rope_scaling(scaling: dict | None) -> dict | None:
    """Accept `{"type"| "rope_type": ..., "factor": ...}`; return `{"rope_type", "factor"}` or None."""
    if not scaling:
        return None
    if not isinstance(scaling, dict):
        raise ValueError(f"rope_scaling must be a dict like {{'type': 'linear', 'factor': 2.0}}, got {scaling!r}")
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return None
    if kind not in ROPE_SCALING_TYPES:
        raise ValueError(f"rope_scaling type {kind!r} is not supported; allowed: {', '.join(ROPE_SCALING_TYPES)}")
    factor = scaling.get("factor")
    if not isinstance(factor, (int, float)) or isinstance(factor, bool) or factor <= 1.0:
        raise ValueError(f"rope_scaling factor must be a number > 1, got {factor!r}")
    return {"rope_type": kind, "factor": float(factor)}
