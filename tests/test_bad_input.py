"""Bad input gets a clear exception naming the problem and the offending value, one test per case."""

from __future__ import annotations

import json
import re

import pytest
import torch

import workbench
from workbench.checkpoint import CheckpointMismatchError

VOCAB = 300
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return workbench.GPTNeoXForCausalLM(workbench.GPTNeoXConfig(**TINY)).eval()


@pytest.fixture
def checkpoint(tmp_path, model):
    model.save_pretrained(tmp_path)
    return tmp_path


def test_token_id_too_large(model):
    with pytest.raises(ValueError, match=rf"token id 300 .*\[0, {VOCAB - 1}\]"):
        model(torch.tensor([[1, 2, VOCAB]]))


def test_token_id_negative(model):
    with pytest.raises(ValueError, match=rf"token id -5 .*\[0, {VOCAB - 1}\]"):
        model(torch.tensor([[1, -5, 2]]))


def test_float_input_ids(model):
    with pytest.raises(TypeError, match=r"integer token ids.*float32"):
        model(torch.tensor([[1.0, 2.0]]))


def test_one_dimensional_input_ids(model):
    with pytest.raises(ValueError, match=r"2-D \[batch, pos\].*\(3,\)"):
        model(torch.tensor([1, 2, 3]))


def test_three_dimensional_input_ids(model):
    with pytest.raises(ValueError, match=r"2-D \[batch, pos\].*\(1, 2, 3\)"):
        model(torch.ones(1, 2, 3, dtype=torch.long))


def test_attention_mask_of_another_shape(model):
    with pytest.raises(ValueError, match=r"attention_mask has shape \(2, 4\), expected \(2, 5\)"):
        model(torch.ones(2, 5, dtype=torch.long), attention_mask=torch.ones(2, 4, dtype=torch.long))


def test_both_input_ids_and_inputs_embeds(model):
    with pytest.raises(ValueError, match=r"exactly one of input_ids and inputs_embeds.*both"):
        model(torch.ones(1, 3, dtype=torch.long), inputs_embeds=torch.zeros(1, 3, 32))


def test_neither_input_ids_nor_inputs_embeds(model):
    with pytest.raises(ValueError, match=r"exactly one of input_ids and inputs_embeds.*neither"):
        model()


def test_empty_sequence(model):
    with pytest.raises(ValueError, match=r"empty.*\(1, 0\)"):
        model(torch.ones(1, 0, dtype=torch.long))


def test_past_key_values_of_another_model(model):
    other = workbench.GPTNeoXForCausalLM(workbench.GPTNeoXConfig(**dict(TINY, num_attention_heads=2))).eval()
    with torch.no_grad():
        cache = other(torch.ones(1, 3, dtype=torch.long), use_cache=True).past_key_values
    with pytest.raises(ValueError, match=r"another model.*\(2, 2, 16\).*\(2, 4, 8\)"):
        model(torch.ones(1, 1, dtype=torch.long), past_key_values=cache)


def test_past_key_values_of_another_batch(model):
    with torch.no_grad():
        cache = model(torch.ones(2, 3, dtype=torch.long), use_cache=True).past_key_values
    with pytest.raises(ValueError, match=r"batch of 2 rows.*1"):
        model(torch.ones(1, 1, dtype=torch.long), past_key_values=cache)


@pytest.mark.parametrize("dtype", [None, "bfloat16"], ids=["mmap", "converting"])
def test_truncated_safetensors(checkpoint, dtype):
    weights = checkpoint / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file \(truncated"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, dtype=dtype)


def test_truncated_pytorch_model_bin(tmp_path, model):
    model.config.save_pretrained(tmp_path)
    torch.save(model.state_dict(), tmp_path / "pytorch_model.bin")
    data = (tmp_path / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is not a readable PyTorch checkpoint"):
        workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path)


def test_config_missing_required_field(checkpoint):
    config = json.loads((checkpoint / "config.json").read_text())
    del config["hidden_size"]
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"config\.json.*missing required field.*hidden_size"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)


def test_weights_contradicting_config(checkpoint):
    """One error that lists every shape mismatch (name, expected, found), and missing/unexpected keys too."""
    config = json.loads((checkpoint / "config.json").read_text())
    config["intermediate_size"] = 96
    (checkpoint / "config.json").write_text(json.dumps(config))
    with pytest.raises(CheckpointMismatchError) as info:
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)
    message = str(info.value)
    assert isinstance(info.value, ValueError)
    assert "shape mismatches (6)" in message  # 2 layers x (h_to_4h weight and bias, 4h_to_h weight), in one error
    for layer in (0, 1):
        assert f"gpt_neox.layers.{layer}.mlp.dense_h_to_4h.weight: expected (96, 32), found (64, 32)" in message
        assert f"gpt_neox.layers.{layer}.mlp.dense_4h_to_h.weight: expected (32, 96), found (32, 64)" in message


def test_missing_and_unexpected_keys_listed(checkpoint):
    from safetensors.torch import load_file, save_file

    state = load_file(checkpoint / "model.safetensors")
    state["gpt_neox.layers.0.attention.extra.weight"] = state.pop("gpt_neox.layers.1.attention.dense.weight")
    save_file(state, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError) as info:
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)
    message = str(info.value)
    assert re.search(r"missing keys \(1\): gpt_neox\.layers\.1\.attention\.dense\.weight", message)
    assert re.search(r"unexpected keys \(1\): gpt_neox\.layers\.0\.attention\.extra\.weight", message)


def test_hidden_size_not_divisible_by_heads():
    with pytest.raises(ValueError, match=r"hidden_size \(30\).*num_attention_heads \(4\)"):
        workbench.GPTNeoXConfig(**dict(TINY, hidden_size=30))


def test_unknown_hidden_act():
    with pytest.raises(ValueError, match=r"hidden_act 'mish'.*allowed: gelu"):
        workbench.GPTNeoXConfig(**TINY, hidden_act="mish")


def test_rope_scaling_unknown_type():
    with pytest.raises(ValueError, match=r"rope_scaling type 'yarn'.*linear, dynamic"):
        workbench.GPTNeoXConfig(**TINY, rope_scaling={"type": "yarn", "factor": 2.0})


@pytest.mark.parametrize("factor", [1.0, 0.5])
def test_rope_scaling_factor_not_above_one(factor):
    with pytest.raises(ValueError, match=rf"rope_scaling factor must be a number > 1, got {factor}"):
        workbench.GPTNeoXConfig(**TINY, rope_scaling={"type": "linear", "factor": factor})


def test_odd_rotary_dimension():
    # head_size 8, rotary_pct 0.375 -> 3 rotary dims
    with pytest.raises(ValueError, match=r"rotary dimension.*= 3 is odd"):
        workbench.GPTNeoXConfig(**TINY, rotary_pct=0.375)


def test_flash_attention_2_refused_on_cpu_fp32(checkpoint):
    with pytest.raises(ValueError) as info:
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, attn_implementation="flash_attention_2")
    message = str(info.value)
    assert "flash_attention_2" in message and "'sdpa'" in message
    # the reason: the package is missing here, or CPU / fp32 where it is installed
    assert re.search(r"flash_attn package is not installed|CUDA devices only|float16 or bfloat16", message)


def test_flash_attention_2_reason_without_package(monkeypatch):
    """With the package importable, CPU and fp32 are the reasons given."""
    import sys
    import types

    from workbench.attention import flash_attention_unavailable

    monkeypatch.setitem(sys.modules, "flash_attn", types.ModuleType("flash_attn"))
    assert "CUDA devices only" in flash_attention_unavailable(torch.device("cpu"), torch.float16)
    assert "float16 or bfloat16" in flash_attention_unavailable(torch.device("cuda"), torch.float32)
    monkeypatch.setitem(sys.modules, "flash_attn", None)  # import fails
    assert "not installed" in flash_attention_unavailable(torch.device("cuda"), torch.float16)


def test_unknown_attn_implementation(checkpoint):
    with pytest.raises(ValueError, match=r"attn_implementation 'flex'.*eager, sdpa"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, attn_implementation="flex")


def test_unknown_dtype_name(checkpoint):
    with pytest.raises(ValueError, match=r"unknown dtype 'float8'"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, dtype="float8")


def test_position_ids_of_another_shape(model):
    with pytest.raises(ValueError, match=r"position_ids has shape \(1, 2\), expected \(1, 3\)"):
        model(torch.ones(1, 3, dtype=torch.long), position_ids=torch.tensor([[0, 1]]))


def test_head_mask_of_another_shape(model):
    with pytest.raises(ValueError, match=r"head_mask must have shape \(4,\) or \(2, 4\), got \(3,\)"):
        model(torch.ones(1, 3, dtype=torch.long), head_mask=torch.ones(3))
