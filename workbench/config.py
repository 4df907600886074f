"""`GPTNeoXConfig`: the model's hyperparameters, read from and written to transformers' config.json.

Both layouts of config.json are understood: transformers 4.x (`rotary_pct`, `rotary_emb_base`, `rope_scaling`)
and 5.x (`rope_parameters` with `partial_rotary_factor`, `rope_theta`, `rope_type`, `factor`). Files are
written with both, so either major version of transformers reads them.

Every field is checked for type and range whenever a config is built (constructor, `from_dict`,
`from_json_file`): one error lists every bad field with its value and what is allowed, a TypeError when every
problem is a wrong type, else a ValueError. Nothing is coerced (`"false"` is not a bool, `"1e-5"` not a number).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import re
from dataclasses import dataclass, field
from numbers import Integral, Real
from pathlib import Path
from typing import Any, Callable, Mapping, NamedTuple

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
        self.validate()
        if self.id2label is not None:
            self.id2label = {int(k): v for k, v in self.id2label.items()}
            self.num_labels = len(self.id2label)
        self.rope_scaling = _normalise_rope_scaling(self.rope_scaling)

    # ---- derived values -------------------------------------------------------------------------
    @property
    def head_size(self) -> int:
        return self.hidden_size // self.num_attention_heads

    @property
    def rotary_ndims(self) -> int:
        return _rotary_ndims(self.hidden_size, self.num_attention_heads, self.rotary_pct)

    @property
    def label2id(self) -> dict[str, int]:
        labels = self.id2label or {i: f"LABEL_{i}" for i in range(self.num_labels)}
        return {v: k for k, v in labels.items()}

    # ---- validation -----------------------------------------------------------------------------
    def validate(self) -> None:
        """Check every field's type and range, and the fields against one another.

        Raises:
            TypeError: every problem is a value of the wrong type (the message lists each field and value).
            ValueError: some value is out of range (the message lists every bad field, its value, what is allowed).
        """
        _raise(_problems({f.name: getattr(self, f.name) for f in dataclasses.fields(self)}))

    # ---- serialisation --------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> "GPTNeoXConfig":
        """Build a config from a config.json dictionary in the transformers 4.x or 5.x layout.

        Raises:
            TypeError: `data` is not a dict, or every problem found is a value of the wrong type.
            ValueError: a required field is missing or a value is out of range; one error lists every problem,
                naming the field as config.json spells it (e.g. `rope_parameters.partial_rotary_factor`).
        """
        if not isinstance(data, Mapping):
            raise TypeError(f"config must be a JSON object (a dict of fields), got a {type(data).__name__}")
        data = dict(data)
        missing = [name for name in REQUIRED_FIELDS if name not in data]
        problems = [_Problem(f"missing required field(s) {', '.join(missing)}", False)] if missing else []
        problems += _field_problems(data, {}, _FILE_CHECKS).values()
        shown = _translate_5x_layout(data)
        data.pop("label2id", None)
        names = {f.name for f in dataclasses.fields(cls)} - {"extra"}
        known = {k: v for k, v in data.items() if k in names}
        extra = {k: v for k, v in data.items() if k not in names and k not in _METADATA_KEYS}
        defaults = {f.name: f.default for f in dataclasses.fields(cls)
                    if f.default is not dataclasses.MISSING and f.name not in REQUIRED_FIELDS}
        _raise(problems + _problems({**defaults, **known, "extra": extra}, shown))
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
        """Read a config.json file (or the config.json inside a directory).

        Raises:
            FileNotFoundError: no such file.
            ValueError, TypeError: not JSON, or as `from_dict`; the message starts with the file's path.
        """
        path = Path(path)
        if path.is_dir():
            path = path / "config.json"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise FileNotFoundError(f"no config.json at {path}") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            raise ValueError(f"{path} is not valid JSON: {err}") from None
        try:
            return cls.from_dict(data)
        except (ValueError, TypeError) as err:
            raise type(err)(f"{path}: {err}") from None

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


_5X_NAMES = (("partial_rotary_factor", "rotary_pct"), ("rope_theta", "rotary_emb_base"))


def _translate_5x_layout(data: dict[str, Any]) -> dict[str, str]:
    """Rewrite transformers 5.x spellings in `data` as our fields, in place (4.x spellings win where both are
    given). Returns {our field: the config.json name its value came from}, for error messages."""
    shown: dict[str, str] = {}

    def take(name: str, value: Any, source: str) -> None:
        if name not in data:
            data[name], shown[name] = value, source

    rope = data.pop("rope_parameters", None)
    if isinstance(rope, dict):  # another type is reported by _FILE_CHECKS
        for key, name in _5X_NAMES:
            if key in rope:
                take(name, rope[key], f"rope_parameters.{key}")
        if rope.get("rope_type", "default") != "default" and not data.get("rope_scaling"):
            data.pop("rope_scaling", None)
            take("rope_scaling", {"rope_type": rope["rope_type"], "factor": rope.get("factor")}, "rope_parameters")
    for key, name in (*_5X_NAMES, ("_attn_implementation", "attn_implementation")):  # flat 5.x spellings
        if key in data:
            take(name, data.pop(key), key)
    if data.get("attn_implementation") is None:
        data.pop("attn_implementation", None)
    return shown


# ---- field checks ---------------------------------------------------------------------------------
_MAX_INT = 2**31 - 1


class _Problem(NamedTuple):
    message: str
    is_type: bool  # the value has the wrong type (TypeError when every problem is one)


def _show(value: Any) -> str:
    """repr of a value, cut to a readable length."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_finite(value: Real) -> bool:
    try:
        return math.isfinite(value)
    except OverflowError:  # an int beyond float's range
        return False


@dataclass(frozen=True)
class _Rule:
    """What one field accepts: a value of `types` (a bool is never taken for a number) for which `ok` holds,
    or None when `optional`; `allowed` says so in words."""

    types: tuple[type, ...]
    allowed: str
    ok: Callable[[Any], bool] = lambda value: True
    optional: bool = False

    def __call__(self, name: str, value: Any) -> _Problem | None:
        if value is None and self.optional:
            return None
        allowed = f"None or {self.allowed}" if self.optional else self.allowed
        if not isinstance(value, self.types) or (isinstance(value, bool) and bool not in self.types):
            return _Problem(f"{name} {_show(value)} has type {type(value).__name__}; allowed: {allowed}", True)
        if not self.ok(value):
            return _Problem(f"{name} {_show(value)} is invalid; allowed: {allowed}", False)
        return None


def _integer(low: int) -> _Rule:
    return _Rule((Integral,), f"an integer from {low} to 2**31 - 1", lambda v: low <= v <= _MAX_INT)


def _number(allowed: str, ok: Callable[[Real], bool]) -> _Rule:
    return _Rule((Real,), f"a finite number {allowed}", lambda v: _is_finite(v) and ok(v))


def _choice(options: tuple[str, ...], optional: bool = False) -> _Rule:
    return _Rule((str,), ", ".join(options), lambda v: v in options, optional)


def _is_token_id(value: Any) -> bool:
    return isinstance(value, Integral) and not isinstance(value, bool) and 0 <= value <= _MAX_INT


def _is_id2label(mapping: dict) -> bool:
    """Non-empty, labels are strings, ids are distinct integers >= 0 (or their decimal strings, as in JSON)."""
    ids = [int(k) if isinstance(k, str) and re.fullmatch(r"[0-9]{1,10}", k) else k for k in mapping]
    return bool(ids) and all(map(_is_token_id, ids)) and len(set(ids)) == len(ids) \
        and all(isinstance(v, str) for v in mapping.values())


def _rope_scaling_problem(name: str, scaling: Any) -> _Problem | None:
    """None, or a dict `{"type" | "rope_type": "linear" | "dynamic" | "default", "factor": number > 1}`."""
    if scaling is None:
        return None
    if not isinstance(scaling, dict):
        return _Problem(f"{name} must be None or a dict like {{'type': 'linear', 'factor': 2.0}}, got "
                        f"{_show(scaling)} of type {type(scaling).__name__}", True)
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind in (None, "default"):
        return None
    if kind not in ROPE_SCALING_TYPES:
        return _Problem(f"{name} type {_show(kind)} is not supported; allowed: {', '.join(ROPE_SCALING_TYPES)}", False)
    factor = scaling.get("factor")
    if not isinstance(factor, Real) or isinstance(factor, bool) or not _is_finite(factor) or factor <= 1.0:
        return _Problem(f"{name} factor must be a number > 1, got {_show(factor)}", False)
    return None


# Keys to_dict writes or from_dict reads: an `extra` entry of one of these names would overwrite it in config.json.
_OUR_KEYS = {f.name for f in dataclasses.fields(GPTNeoXConfig)} | _METADATA_KEYS | {
    "label2id", "rope_parameters", "partial_rotary_factor", "rope_theta", "_attn_implementation"}
_TOKEN_ID = "a token id (an integer from 0 to 2**31 - 1)"
_CHECKS: dict[str, Callable[[str, Any], _Problem | None]] = {
    **{name: _integer(1) for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads",
                                      "intermediate_size", "max_position_embeddings", "num_labels")},
    "hidden_act": _choice(ACTIVATIONS),
    "attn_implementation": _choice(ATTN_IMPLEMENTATIONS),
    "problem_type": _choice(PROBLEM_TYPES, optional=True),
    "rotary_pct": _number("in (0, 1]", lambda v: 0 < v <= 1),
    "rotary_emb_base": _number("> 0", lambda v: v > 0),
    **{name: _number("in [0, 1)", lambda v: 0 <= v < 1)
       for name in ("attention_dropout", "hidden_dropout", "classifier_dropout")},
    "initializer_range": _number(">= 0", lambda v: v >= 0),
    "layer_norm_eps": _number("> 0", lambda v: v > 0),
    **{name: _Rule((bool,), "a bool (true or false)")
       for name in ("use_cache", "tie_word_embeddings", "use_parallel_residual", "attention_bias")},
    "bos_token_id": _Rule((Integral,), _TOKEN_ID, _is_token_id, optional=True),
    "pad_token_id": _Rule((Integral,), _TOKEN_ID, _is_token_id, optional=True),
    "eos_token_id": _Rule((Integral, list), f"{_TOKEN_ID} or a non-empty list of them",
                          lambda v: _is_token_id(v) or (isinstance(v, list) and bool(v) and all(map(_is_token_id, v))),
                          optional=True),
    "id2label": _Rule((dict,), "a non-empty dict {id: label} with distinct integer ids >= 0 (or their strings) "
                               "and string labels", _is_id2label, optional=True),
    "rope_scaling": _rope_scaling_problem,
    "extra": _Rule((dict,), "a dict of further config.json fields, keyed by names that are no field or key of ours",
                   lambda d: all(isinstance(k, str) and k not in _OUR_KEYS for k in d)),
}
# Keys of config.json that are no field of ours but are checked before they are translated or dropped.
_FILE_CHECKS: dict[str, Callable[[str, Any], _Problem | None]] = {
    "model_type": _choice(("gpt_neox",)),
    "rope_parameters": _Rule((dict,), "a dict with rope_type, rope_theta, partial_rotary_factor (and factor)",
                             optional=True),
}


def _rotary_ndims(hidden_size: int, num_attention_heads: int, rotary_pct: float) -> int:
    """int(head_size * rotary_pct), truncated as transformers does."""
    return int(hidden_size // num_attention_heads * rotary_pct)


def _field_problems(values: Mapping[str, Any], shown: Mapping[str, str],
                    checks: Mapping[str, Callable[[str, Any], _Problem | None]]) -> dict[str, _Problem]:
    """{field: its problem} for each field of `values` that `checks` refuses, named as `shown` spells it."""
    return {name: problem for name, check in checks.items()
            if name in values and (problem := check(shown.get(name, name), values[name]))}


def _problems(values: Mapping[str, Any], shown: Mapping[str, str] | None = None) -> list[_Problem]:
    """Every problem of the field values given: each field alone, then (once all of them are there and valid)
    their agreement."""
    found = _field_problems(values, shown or {}, _CHECKS)
    involved = ("hidden_size", "num_attention_heads", "rotary_pct")
    if found.keys() & set(involved) or not set(involved) <= values.keys():
        return list(found.values())
    return list(found.values()) + _shape_problems(*(values[name] for name in involved))


def _shape_problems(hidden_size: int, num_attention_heads: int, rotary_pct: float) -> list[_Problem]:
    """Head and rotary sizes that the three (each valid) fields imply but a model can't have."""
    if hidden_size % num_attention_heads:
        return [_Problem(f"hidden_size ({hidden_size}) must be divisible by num_attention_heads "
                         f"({num_attention_heads})", False)]
    head_size, ndims = hidden_size // num_attention_heads, _rotary_ndims(hidden_size, num_attention_heads, rotary_pct)
    if ndims % 2:
        return [_Problem(
            f"rotary dimension int(head_size * rotary_pct) = int({head_size} * {rotary_pct}) = {ndims} is odd "
            f"(head_size = hidden_size // num_attention_heads = {hidden_size} // {num_attention_heads}); rotary "
            f"embeddings rotate pairs of dimensions, so it must be even", False)]
    return []


def _raise(problems: list[_Problem]) -> None:
    """One error listing every problem: TypeError when each is a wrong type, else ValueError."""
    if problems:
        error = TypeError if all(p.is_type for p in problems) else ValueError
        raise error("invalid config: " + "; ".join(p.message for p in problems))


def _normalise_rope_scaling(scaling: dict | None) -> dict | None:
    """A valid `rope_scaling` (see `_rope_scaling_problem`) as `{"rope_type", "factor"}`, or None."""
    kind = (scaling or {}).get("rope_type", (scaling or {}).get("type"))
    if kind in (None, "default"):
        return None
    return {"rope_type": kind, "factor": float(scaling["factor"])}
