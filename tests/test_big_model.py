"""Big-model inference through accelerate: a model offloaded layer by layer to disk computes what it did in memory."""

from __future__ import annotations

import copy
import re

import pytest
import torch

pytest.importorskip("accelerate")

from workbench.big_model import dispatch, first_device, infer_device_map, load_dispatched  # noqa: E402
from workbench.config import GPTNeoXConfig  # noqa: E402
from workbench.model import GPTNeoXForCausalLM  # noqa: E402

# each layer holds ~0.2 MB of float32 weights: this budget keeps the embedding and a layer in memory
TINY_CPU_BUDGET = {"cpu": 500_000}


@pytest.fixture(scope="module")
def model() -> GPTNeoXForCausalLM:
    config = GPTNeoXConfig(vocab_size=256, hidden_size=64, num_hidden_layers=4, num_attention_heads=4,
                           intermediate_size=256, max_position_embeddings=64)
    torch.manual_seed(0)
    return GPTNeoXForCausalLM(config).eval()


@pytest.fixture(scope="module")
def inputs() -> tuple[torch.Tensor, torch.Tensor]:
    torch.manual_seed(1)
    ids = torch.randint(0, 256, (2, 12))
    mask = torch.ones_like(ids)
    mask[1, :4] = 0  # left padding on the second row
    return ids, mask


@torch.no_grad()
def _run(model, ids, mask):
    """Full forward with padding, and prefill + one cached decoding step."""
    full = model(ids, attention_mask=mask).logits
    prefill = model(ids[:, :8], attention_mask=mask[:, :8], use_cache=True)
    step = model(ids[:, 8:], attention_mask=mask, past_key_values=prefill.past_key_values).logits
    return full, prefill.logits, step


def _check_layers_whole(device_map: dict) -> None:
    for name in device_map:
        assert not re.match(r"gpt_neox\.layers\.\d+\.", name), f"{name}: a layer was split across devices"


def test_disk_offload_computes_the_same_logits(model, inputs, tmp_path):
    device_map = infer_device_map(model, "sequential", TINY_CPU_BUDGET)
    assert {"cpu", "disk"} <= set(device_map.values())
    _check_layers_whole(device_map)
    assert device_map["gpt_neox.layers.3"] == "disk" and device_map["gpt_neox.embed_in"] == "cpu"

    offloaded = dispatch(copy.deepcopy(model), "auto", offload_folder=tmp_path / "offload", max_memory=TINY_CPU_BUDGET)
    assert offloaded.hf_device_map == device_map
    assert list((tmp_path / "offload").glob("gpt_neox.layers.3.*.dat"))  # the weights really went to disk
    assert offloaded.gpt_neox.layers[3].mlp.dense_h_to_4h.weight.device.type == "meta"
    assert first_device(offloaded) == torch.device("cpu")
    for got, want in zip(_run(offloaded, *inputs), _run(model, *inputs)):
        assert torch.equal(got, want)


def test_load_dispatched_streams_a_checkpoint_onto_its_devices(model, inputs, tmp_path):
    checkpoint = tmp_path / "ckpt"
    model.save_pretrained(checkpoint, max_shard_size="150KB")
    assert (checkpoint / "model.safetensors.index.json").is_file()  # sharded, as big checkpoints are
    loaded = load_dispatched(GPTNeoXForCausalLM, model.config, checkpoint, "sequential",
                             offload_folder=tmp_path / "offload", max_memory=TINY_CPU_BUDGET)
    assert "disk" in loaded.hf_device_map.values() and not loaded.training
    assert loaded.embed_out.weight.device.type == "meta"  # never materialised in memory
    for got, want in zip(_run(loaded, *inputs), _run(model, *inputs)):
        assert torch.equal(got, want)


def test_checkpoint_keys_are_checked(model, inputs, tmp_path):
    from safetensors.torch import save_file

    weights = {k: v.contiguous() for k, v in model.state_dict().items()}
    # old GPT-NeoX checkpoints carry buffers the model recomputes: accepted
    legacy = dict(weights, **{"gpt_neox.layers.0.attention.masked_bias": torch.tensor(-1e9),
                              "gpt_neox.layers.0.attention.rotary_emb.inv_freq": torch.ones(4)})
    save_file(legacy, tmp_path / "legacy.safetensors")
    loaded = load_dispatched(GPTNeoXForCausalLM, model.config, tmp_path / "legacy.safetensors", {"": "cpu"})
    for got, want in zip(_run(loaded, *inputs), _run(model, *inputs)):
        assert torch.equal(got, want)
    # a missing weight would stay on the meta device without a word from accelerate: refused up front
    save_file({k: v for k, v in weights.items() if k != "gpt_neox.layers.1.mlp.dense_h_to_4h.bias"},
              tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match=r"missing \['gpt_neox.layers.1.mlp.dense_h_to_4h.bias'\]"):
        load_dispatched(GPTNeoXForCausalLM, model.config, tmp_path / "missing.safetensors", {"": "cpu"})
    save_file(dict(weights, **{"gpt_neox.extra.weight": torch.ones(2)}), tmp_path / "extra.safetensors")
    with pytest.raises(ValueError, match=r"unexpected \['gpt_neox.extra.weight'\]"):
        load_dispatched(GPTNeoXForCausalLM, model.config, tmp_path / "extra.safetensors", {"": "cpu"})


def test_explicit_device_map_and_errors(model, inputs, tmp_path):
    # every child of the model (hook points included), layers on disk
    explicit = {f"gpt_neox.{name}": "cpu" for name, _ in model.gpt_neox.named_children()}
    explicit.update({"gpt_neox.layers": "disk", "embed_out": "cpu"})
    with pytest.raises(ValueError, match="mapped to 'disk': pass offload_folder"):
        dispatch(copy.deepcopy(model), explicit)
    offloaded = dispatch(copy.deepcopy(model), explicit, offload_folder=tmp_path / "off")
    for got, want in zip(_run(offloaded, *inputs), _run(model, *inputs)):
        assert torch.equal(got, want)

    with pytest.raises(ValueError, match="unknown device_map strategy 'everywhere'.*balanced_low_0"):
        dispatch(copy.deepcopy(model), "everywhere")
    with pytest.raises(ValueError, match="is not a device"):
        dispatch(copy.deepcopy(model), {**explicit, "embed_out": "gpu7"}, offload_folder=tmp_path / "off2")
    with pytest.raises(TypeError, match="device_map must be"):
        dispatch(copy.deepcopy(model), 3)
