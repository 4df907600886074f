"""Config validation (issue 15, item 3): every field is checked for type and range when a config is built or
loaded, with one error naming every bad field, its value and what is allowed; real config.json layouts load.

The property test feeds each field (and random sets of fields) values of every JSON type: each input either
builds a config that round-trips through config.json, or raises ValueError / TypeError naming the field."""

from __future__ import annotations

import dataclasses
import json
import re

import pytest

from workbench import GPTNeoXConfig
from workbench.config import ACTIVATIONS, ATTN_IMPLEMENTATIONS

TINY = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
SIZES = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
         "max_position_embeddings", "num_labels")

# config.json as the hub serves it (transformers 4.x era), nulls included.
PYTHIA_160M = {
    "architectures": ["GPTNeoXForCausalLM"], "bos_token_id": 0, "eos_token_id": 0, "hidden_act": "gelu",
    "hidden_size": 768, "initializer_range": 0.02, "intermediate_size": 3072, "layer_norm_eps": 1e-05,
    "max_position_embeddings": 2048, "model_type": "gpt_neox", "num_attention_heads": 12, "num_hidden_layers": 12,
    "rotary_emb_base": 10000, "rotary_pct": 0.25, "tie_word_embeddings": False, "torch_dtype": "float16",
    "transformers_version": "4.24.0", "use_cache": True, "use_parallel_residual": True, "vocab_size": 50304,
}
PYTHIA_LATER = {  # what transformers 4.3x-4.4x writes for the same model
    **PYTHIA_160M, "attention_bias": True, "attention_dropout": 0.0, "hidden_dropout": 0.0, "classifier_dropout": 0.1,
    "rope_scaling": None, "transformers_version": "4.40.0", "pad_token_id": None, "_name_or_path": "pythia-160m",
}
NEOX_20B = {
    "architectures": ["GPTNeoXForCausalLM"], "attention_probs_dropout_prob": 0, "bos_token_id": 0, "eos_token_id": 0,
    "hidden_act": "gelu_fast", "hidden_dropout_prob": 0, "hidden_size": 6144, "initializer_range": 0.02,
    "intermediate_size": 24576, "layer_norm_eps": 1e-05, "max_position_embeddings": 2048, "model_type": "gpt_neox",
    "num_attention_heads": 64, "num_hidden_layers": 44, "rotary_emb_base": 10000, "rotary_pct": 0.25,
    "tie_word_embeddings": False, "torch_dtype": "float16", "transformers_version": "4.21.0.dev0",
    "use_cache": True, "vocab_size": 50432,
}
TRANSFORMERS_5 = {  # transformers 5.x: rope_parameters, dtype, is_decoder
    **{k: v for k, v in PYTHIA_160M.items() if k not in ("rotary_pct", "rotary_emb_base", "torch_dtype")},
    "dtype": "float16", "is_decoder": False, "pad_token_id": None, "attention_bias": True,
    "rope_parameters": {"partial_rotary_factor": 0.25, "rope_theta": 10000.0, "rope_type": "default"},
}


def saved_fields(config: GPTNeoXConfig) -> dict:
    """The fields config.json keeps (id2label is written out in full, attn_implementation not at all)."""
    return {k: v for k, v in dataclasses.asdict(config).items() if k not in ("id2label", "attn_implementation")}


def write(tmp_path, data) -> object:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(data))
    return path


# ---- real layouts load ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [PYTHIA_160M, PYTHIA_LATER, NEOX_20B, TRANSFORMERS_5],
                         ids=["pythia", "pythia-4.40", "neox-20b", "transformers-5"])
def test_real_config_files_load(tmp_path, data):
    config = GPTNeoXConfig.from_json_file(write(tmp_path, data))
    assert (config.hidden_size, config.rotary_pct, config.rope_scaling) == (data["hidden_size"], 0.25, None)
    assert saved_fields(GPTNeoXConfig.from_dict(config.to_dict())) == saved_fields(config)


def test_eos_token_id_may_be_a_list():
    assert GPTNeoXConfig(**TINY, eos_token_id=[0, 2]).eos_token_id == [0, 2]


# ---- the cases ------------------------------------------------------------------------------------------
def test_string_bool_is_refused_not_coerced(tmp_path):
    """`"false"` used to tie the weights anyway (it is truthy)."""
    path = write(tmp_path, dict(PYTHIA_160M, tie_word_embeddings="false"))
    with pytest.raises(TypeError, match=r"config\.json: invalid config: tie_word_embeddings 'false' has type str; "
                                        r"allowed: a bool \(true or false\)"):
        GPTNeoXConfig.from_json_file(path)


@pytest.mark.parametrize("eps", [-1, 0, float("nan"), float("inf")])
def test_layer_norm_eps_must_be_positive(eps):
    with pytest.raises(ValueError, match=rf"layer_norm_eps {re.escape(repr(eps))} is invalid; allowed: a finite "
                                         rf"number > 0"):
        GPTNeoXConfig(**TINY, layer_norm_eps=eps)


@pytest.mark.parametrize("eps", ["1e-5", None, [1e-5]])
def test_non_numeric_layer_norm_eps(eps):
    with pytest.raises(TypeError, match=r"layer_norm_eps .* has type \w+; allowed: a finite number > 0"):
        GPTNeoXConfig(**TINY, layer_norm_eps=eps)


def test_rotary_pct_string():
    with pytest.raises(TypeError, match=r"rotary_pct '0\.25' has type str; allowed: a finite number in \(0, 1\]"):
        GPTNeoXConfig(**TINY, rotary_pct="0.25")


@pytest.mark.parametrize("pct", [0, 1.5, -0.25])
def test_rotary_pct_range(pct):
    with pytest.raises(ValueError, match=rf"rotary_pct {pct} is invalid; allowed: a finite number in \(0, 1\]"):
        GPTNeoXConfig(**TINY, rotary_pct=pct)


def test_rotary_pct_in_the_5x_layout_is_named_as_written(tmp_path):
    data = dict(TRANSFORMERS_5, rope_parameters={"partial_rotary_factor": "0.25", "rope_type": "default"})
    with pytest.raises(TypeError, match=r"rope_parameters\.partial_rotary_factor '0\.25' has type str"):
        GPTNeoXConfig.from_json_file(write(tmp_path, data))


@pytest.mark.parametrize("data, kind", [([TINY], "list"), ("config", "str"), (None, "NoneType"), (3, "int")])
def test_config_json_that_is_no_object(tmp_path, data, kind):
    path = write(tmp_path, data)
    with pytest.raises(TypeError, match=rf"{re.escape(str(path))}: config must be a JSON object .*got a {kind}$"):
        GPTNeoXConfig.from_json_file(path)


def test_config_json_that_is_not_json(tmp_path):
    (tmp_path / "config.json").write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        GPTNeoXConfig.from_json_file(tmp_path)


def test_hidden_size_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"hidden_size \(30\) must be divisible by num_attention_heads \(4\)"):
        GPTNeoXConfig(**dict(TINY, hidden_size=30))


def test_unknown_hidden_act_lists_the_allowed():
    with pytest.raises(ValueError, match=rf"hidden_act 'mish' is invalid; allowed: {', '.join(ACTIVATIONS)}$"):
        GPTNeoXConfig(**TINY, hidden_act="mish")


def test_unknown_attn_implementation_lists_the_allowed():
    with pytest.raises(ValueError, match=rf"attn_implementation 'flex' is invalid; allowed: "
                                         rf"{', '.join(ATTN_IMPLEMENTATIONS)}$"):
        GPTNeoXConfig(**TINY, attn_implementation="flex")


@pytest.mark.parametrize("name", SIZES)
@pytest.mark.parametrize("value", [0, -4, 2**31])
def test_sizes_must_be_positive_integers(name, value):
    with pytest.raises(ValueError, match=rf"{name} {value} is invalid; allowed: an integer from 1 to 2\*\*31 - 1"):
        GPTNeoXConfig(**dict(TINY, **{name: value}))


@pytest.mark.parametrize("value", [32.0, "32", True])
def test_sizes_must_be_integers_not_floats_strings_or_bools(value):
    with pytest.raises(TypeError, match=r"hidden_size .* has type \w+; allowed: an integer"):
        GPTNeoXConfig(**dict(TINY, hidden_size=value))


@pytest.mark.parametrize("name, value, allowed", [
    ("attention_dropout", 1.0, r"a finite number in \[0, 1\)"),
    ("initializer_range", -0.02, r"a finite number >= 0"),
    ("rotary_emb_base", 0, r"a finite number > 0"),
    ("pad_token_id", -1, r"None or a token id"),
    ("eos_token_id", [], r"None or a token id .* or a non-empty list of them"),
    ("problem_type", "ranking", r"None or regression, single_label_classification"),
    ("id2label", {"x": "A"}, r"None or a non-empty dict \{id: label\}"),
])
def test_other_ranges(name, value, allowed):
    with pytest.raises(ValueError, match=rf"{name} .* is invalid; allowed: {allowed}"):
        GPTNeoXConfig(**TINY, **{name: value})


def test_unknown_model_type(tmp_path):
    with pytest.raises(ValueError, match=r"model_type 'llama' is invalid; allowed: gpt_neox"):
        GPTNeoXConfig.from_json_file(write(tmp_path, dict(PYTHIA_160M, model_type="llama")))


def test_one_error_lists_every_bad_field(tmp_path):
    data = dict(PYTHIA_160M, tie_word_embeddings="false", layer_norm_eps=-1, rotary_pct="0.25", vocab_size=0)
    with pytest.raises(ValueError) as info:  # some problems are ranges, so a ValueError
        GPTNeoXConfig.from_json_file(write(tmp_path, data))
    message = str(info.value)
    for part in ("tie_word_embeddings 'false'", "layer_norm_eps -1", "rotary_pct '0.25'", "vocab_size 0"):
        assert part in message
    assert message.count("; allowed: ") == 4


def test_only_type_problems_give_a_type_error():
    with pytest.raises(TypeError) as info:
        GPTNeoXConfig(**TINY, use_cache="yes", layer_norm_eps="small")
    assert "use_cache 'yes'" in str(info.value) and "layer_norm_eps 'small'" in str(info.value)


def test_missing_fields_are_listed_with_the_others():
    with pytest.raises(ValueError, match=r"missing required field\(s\) num_hidden_layers; layer_norm_eps -1"):
        GPTNeoXConfig.from_dict({k: v for k, v in dict(TINY, layer_norm_eps=-1).items() if k != "num_hidden_layers"})


def test_extra_entries_may_not_shadow_fields():
    with pytest.raises(ValueError, match=r"extra \{'hidden_size': 8\} is invalid; allowed: a dict of further"):
        GPTNeoXConfig(**TINY, extra={"hidden_size": 8})


def test_validate_after_a_change():
    config = GPTNeoXConfig(**TINY)
    config.layer_norm_eps = "1e-5"
    with pytest.raises(TypeError, match="layer_norm_eps '1e-5'"):
        config.validate()


# ---- property: every input builds a config or names the field ----------------------------------------------------
hypothesis = pytest.importorskip("hypothesis", reason="hypothesis is a test dependency")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

FUZZ = settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
FIELDS = [f.name for f in dataclasses.fields(GPTNeoXConfig)]
FILE_KEYS = FIELDS + ["model_type", "rope_parameters", "partial_rotary_factor", "rope_theta", "_attn_implementation"]

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)
NEAR_VALID = st.one_of(
    st.integers(-3, 70), st.floats(-1.5, 2.5), st.sampled_from([0, 1, 0.25, 0.375, 0.5, 1e-5, "0.25", "false", "1e-5"]),
    st.sampled_from([*ACTIVATIONS, *ATTN_IMPLEMENTATIONS, "mish", "regression", "gpt_neox", "default"]),
    st.lists(st.integers(-2, 5), max_size=3),
    st.fixed_dictionaries({"type": st.sampled_from(["linear", "dynamic", "yarn", "default", 3]),
                           "factor": st.one_of(st.floats(-1, 5), st.integers(0, 4), st.text(max_size=3))}),
    st.dictionaries(st.sampled_from(["0", "1", "x", "-1"]) | st.integers(-1, 3), st.text(max_size=3) | st.integers(),
                    max_size=3),
    st.dictionaries(st.sampled_from([*FILE_KEYS, "label2id", "torch_dtype", "my_field"]), st.integers(0, 3),
                    max_size=2),  # e.g. `extra` entries named like fields
)
VALUES = NEAR_VALID | JSON


def check(build, names: list[str]) -> None:
    """`build()` gives a config that round-trips through config.json, or a ValueError / TypeError naming one of
    `names`; any other exception fails the test."""
    try:
        config = build()
    except (ValueError, TypeError) as err:
        assert any(re.search(rf"\b{re.escape(name)}\b", str(err)) for name in names), (names, str(err))
        return
    assert saved_fields(GPTNeoXConfig.from_dict(json.loads(json.dumps(config.to_dict())))) == saved_fields(config)


@FUZZ
@given(name=st.sampled_from(FIELDS), value=VALUES)
def test_any_value_of_one_field(name, value):
    check(lambda: GPTNeoXConfig(**{**TINY, name: value}), [name])


@FUZZ
@given(name=st.sampled_from(FILE_KEYS), value=VALUES)
def test_any_value_of_one_config_json_key(name, value):
    shown = {"partial_rotary_factor": "rotary_pct", "rope_theta": "rotary_emb_base"}  # shown as written, or ours
    check(lambda: GPTNeoXConfig.from_dict({**TINY, name: value}), [name, shown.get(name, name),
                                                                    "rope_scaling", "rope_parameters"])


@FUZZ
@given(fields=st.dictionaries(st.sampled_from(FIELDS), VALUES, min_size=2, max_size=5))
def test_any_values_of_several_fields(fields):
    check(lambda: GPTNeoXConfig(**{**TINY, **fields}), list(fields))
