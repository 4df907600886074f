"""`GPTNeoXConfig`: defaults, config.json in the transformers 4.x and 5.x layouts, and what transformers reads back."""

from __future__ import annotations

import dataclasses
import json

import pytest

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")

import workbench  # noqa: E402

TINY = dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


def test_defaults_match_transformers():
    ours, theirs = workbench.GPTNeoXConfig(), transformers.GPTNeoXConfig()
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "hidden_act", "attention_dropout", "hidden_dropout", "classifier_dropout",
                 "max_position_embeddings", "initializer_range", "layer_norm_eps", "use_cache", "bos_token_id",
                 "eos_token_id", "pad_token_id", "tie_word_embeddings", "use_parallel_residual", "attention_bias",
                 "num_labels", "problem_type"):
        assert getattr(ours, name) == getattr(theirs, name), name
    assert ours.rotary_pct == theirs.rope_parameters["partial_rotary_factor"] == 0.25
    assert ours.rotary_emb_base == theirs.rope_parameters["rope_theta"] == 10000
    assert ours.rope_scaling is None and theirs.rope_parameters["rope_type"] == "default"


def test_reads_transformers_4x_layout(tmp_path):
    data = dict(TINY, model_type="gpt_neox", architectures=["GPTNeoXForCausalLM"], rotary_pct=0.5,
                rotary_emb_base=5000, rope_scaling={"type": "linear", "factor": 2}, transformers_version="4.40.0",
                torch_dtype="float16", use_parallel_residual=False)
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = workbench.GPTNeoXConfig.from_json_file(tmp_path)
    assert (config.rotary_pct, config.rotary_emb_base) == (0.5, 5000)
    assert config.rope_scaling == {"rope_type": "linear", "factor": 2.0}
    assert config.use_parallel_residual is False and config.head_size == 8 and config.rotary_ndims == 4


def test_reads_transformers_5x_layout(tmp_path):
    data = dict(TINY, model_type="gpt_neox", transformers_version="5.24.0", dtype="float32",
                rope_parameters={"rope_type": "dynamic", "factor": 3.0, "rope_theta": 20000.0,
                                 "partial_rotary_factor": 1.0})
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = workbench.GPTNeoXConfig.from_json_file(tmp_path / "config.json")
    assert (config.rotary_pct, config.rotary_emb_base) == (1.0, 20000.0)
    assert config.rope_scaling == {"rope_type": "dynamic", "factor": 3.0}


@pytest.mark.parametrize("scaling", [None, {"rope_type": "linear", "factor": 2.0}, {"rope_type": "dynamic", "factor": 4.0}])
def test_reads_what_transformers_writes(tmp_path, scaling):
    rope = {"rope_type": "default", "rope_theta": 7000.0, "partial_rotary_factor": 0.5, **(scaling or {})}
    transformers.GPTNeoXConfig(**TINY, rope_parameters=rope, pad_token_id=1, tie_word_embeddings=True,
                               attention_bias=False).save_pretrained(tmp_path)
    config = workbench.GPTNeoXConfig.from_json_file(tmp_path)
    assert (config.rotary_pct, config.rotary_emb_base) == (0.5, 7000.0)
    assert config.rope_scaling == scaling
    assert config.pad_token_id == 1 and config.tie_word_embeddings and config.attention_bias is False
    assert config.hidden_size == 32 and config.vocab_size == 300


@pytest.mark.parametrize("scaling", [None, {"type": "linear", "factor": 2.0}, {"type": "dynamic", "factor": 4.0}])
def test_transformers_reads_what_we_write(tmp_path, scaling):
    ours = workbench.GPTNeoXConfig(**TINY, rotary_pct=0.5, rotary_emb_base=7000, rope_scaling=scaling,
                                   use_parallel_residual=False, layer_norm_eps=1e-6, pad_token_id=1,
                                   hidden_act="gelu_new", max_position_embeddings=128)
    ours.save_pretrained(tmp_path)
    theirs = transformers.AutoConfig.from_pretrained(tmp_path)
    assert type(theirs).__name__ == "GPTNeoXConfig"
    assert theirs.rope_parameters["partial_rotary_factor"] == 0.5
    assert theirs.rope_parameters["rope_theta"] == 7000
    assert theirs.rope_parameters["rope_type"] == (scaling["type"] if scaling else "default")
    if scaling:
        assert theirs.rope_parameters["factor"] == scaling["factor"]
    for name in ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
                 "use_parallel_residual", "layer_norm_eps", "pad_token_id", "hidden_act", "max_position_embeddings",
                 "bos_token_id", "eos_token_id", "attention_bias", "tie_word_embeddings"):
        assert getattr(theirs, name) == getattr(ours, name), name


def test_round_trip_is_lossless(tmp_path):
    ours = workbench.GPTNeoXConfig(**TINY, rope_scaling={"type": "dynamic", "factor": 2}, num_labels=3,
                                   problem_type="single_label_classification", classifier_dropout=0.2)
    ours.save_pretrained(tmp_path)
    again = workbench.GPTNeoXConfig.from_json_file(tmp_path)
    for f in dataclasses.fields(ours):
        if f.name not in ("id2label", "extra"):
            assert getattr(again, f.name) == getattr(ours, f.name), f.name
    assert again.num_labels == 3


def test_unknown_fields_are_kept(tmp_path):
    data = dict(TINY, model_type="gpt_neox", my_custom_field=[1, 2])
    (tmp_path / "config.json").write_text(json.dumps(data))
    config = workbench.GPTNeoXConfig.from_json_file(tmp_path)
    config.save_pretrained(tmp_path / "out")
    assert json.loads((tmp_path / "out" / "config.json").read_text())["my_custom_field"] == [1, 2]


def test_rotary_ndims_like_transformers():
    """int(head_size * rotary_pct), as transformers truncates it."""
    config = workbench.GPTNeoXConfig(**dict(TINY, hidden_size=48, num_attention_heads=6), rotary_pct=0.5)
    model = transformers.GPTNeoXModel(transformers.GPTNeoXConfig(
        **dict(TINY, hidden_size=48, num_attention_heads=6), rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}))
    assert config.rotary_ndims == model.layers[0].attention.rotary_ndims == 4


def test_set_attn_implementation_validates():
    model = workbench.GPTNeoXForCausalLM(workbench.GPTNeoXConfig(**TINY))
    model.set_attn_implementation("eager")
    assert model.config.attn_implementation == "eager"
    with pytest.raises(ValueError, match="'flex'"):
        model.set_attn_implementation("flex")
