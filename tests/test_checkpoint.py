"""Checkpoint round trips with transformers: safetensors (single, sharded), pytorch_model.bin, dtypes, memory."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")

import workbench  # noqa: E402

VOCAB = 512


def our_config(**overrides) -> workbench.GPTNeoXConfig:
    kwargs = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=64)
    kwargs.update(overrides)
    return workbench.GPTNeoXConfig(**kwargs)


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(1.0 + noise if name.endswith("norm.weight") else noise * 2)
    return model.eval()


def hf_model(seed: int = 0, **overrides):
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    kwargs = dict(vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                  intermediate_size=128, max_position_embeddings=64, rope_parameters=rope)
    kwargs.update(overrides)
    torch.manual_seed(seed)
    return randomise(transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**kwargs)), seed)


def ids(batch: int = 2, length: int = 16, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, VOCAB, (batch, length), generator=torch.Generator().manual_seed(seed))


def logits(model, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(x).logits.float()


# ---- both directions ----------------------------------------------------------------------------------
@pytest.mark.parametrize("overrides", [{}, {"tie_word_embeddings": True},
                                       {"rope_scaling": {"type": "linear", "factor": 2.0}, "rotary_pct": 1.0}],
                         ids=["pythia", "tied", "linear_rope"])
def test_workbench_save_transformers_load(tmp_path, overrides):
    ours = randomise(workbench.GPTNeoXForCausalLM(our_config(**overrides)))
    ours.save_pretrained(tmp_path)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path).eval()
    x = ids()
    assert (logits(hf, x) - logits(ours, x)).abs().max() <= 1e-5
    if overrides.get("tie_word_embeddings"):
        assert hf.get_output_embeddings().weight.data_ptr() == hf.get_input_embeddings().weight.data_ptr()


def test_transformers_save_workbench_load(tmp_path):
    hf = hf_model(seed=1)
    hf.save_pretrained(tmp_path)
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path)
    x = ids()
    assert (logits(hf, x) - logits(ours, x)).abs().max() <= 1e-5
    # and back again: ours -> transformers
    ours.save_pretrained(tmp_path / "again")
    back = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path / "again").eval()
    assert torch.equal(logits(back, x), logits(hf, x))


def test_sharded_save_loads_in_transformers(tmp_path):
    ours = randomise(workbench.GPTNeoXForCausalLM(our_config()))
    ours.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    shards = sorted(tmp_path.glob("model-*-of-*.safetensors"))
    assert len(shards) > 2 and set(index["weight_map"].values()) == {p.name for p in shards}
    assert not (tmp_path / "model.safetensors").exists()
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path).eval()
    again = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path)
    x = ids()
    assert (logits(hf, x) - logits(ours, x)).abs().max() <= 1e-5
    assert torch.equal(logits(again, x), logits(ours, x))


def test_resave_unsharded_removes_stale_shards(tmp_path):
    ours = randomise(workbench.GPTNeoXForCausalLM(our_config()))
    ours.save_pretrained(tmp_path, max_shard_size="100KB")
    ours.save_pretrained(tmp_path)
    assert not list(tmp_path.glob("model-*.safetensors")) and not (tmp_path / "model.safetensors.index.json").exists()
    assert torch.equal(logits(workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path), ids()), logits(ours, ids()))


def test_transformers_sharded_checkpoint_loads(tmp_path):
    hf = hf_model(seed=2)
    hf.save_pretrained(tmp_path, max_shard_size="100KB")
    assert (tmp_path / "model.safetensors.index.json").is_file()
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path)
    assert (logits(hf, ids()) - logits(ours, ids())).abs().max() <= 1e-5


def test_pytorch_model_bin(tmp_path):
    """transformers 5.24 has no safe_serialization=False: write the .bin with torch.save of its state dict."""
    hf = hf_model(seed=3)
    hf.config.save_pretrained(tmp_path)
    state = {k: v.clone() for k, v in hf.state_dict().items()}
    state["gpt_neox.layers.0.attention.rotary_emb.inv_freq"] = torch.ones(4)  # legacy buffers are skipped
    state["gpt_neox.layers.0.attention.bias"] = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    torch.save(state, tmp_path / "pytorch_model.bin")
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path)
    assert (logits(hf, ids()) - logits(ours, ids())).abs().max() <= 1e-5


def test_lm_head_name_of_transformers_5(tmp_path):
    """A checkpoint naming the unembedding `lm_head.weight` loads into `embed_out`."""
    from safetensors.torch import save_file

    hf = hf_model(seed=4)
    hf.save_pretrained(tmp_path)
    state = {("lm_head.weight" if k == "embed_out.weight" else k): v.contiguous() for k, v in hf.state_dict().items()}
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path)
    assert (logits(hf, ids()) - logits(ours, ids())).abs().max() <= 1e-5


# ---- dtypes ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype, tol", [(torch.float16, 2e-2), (torch.bfloat16, 1e-1)])
def test_low_precision_load_matches_transformers(tmp_path, dtype, tol):
    hf_model(seed=5).save_pretrained(tmp_path)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path, dtype=dtype).eval()
    ref = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path).eval()  # fp32 truth
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path, dtype=dtype)
    assert ours.dtype == dtype and all(p.dtype == dtype for p in ours.parameters())
    x = ids(length=24)
    got, theirs, truth = logits(ours, x), logits(hf, x), logits(ref, x)
    assert (got - theirs).abs().max() <= tol
    # not worse than transformers at the same precision (with a little slack for rounding luck)
    assert (got - truth).abs().max() <= (theirs - truth).abs().max() * 1.5 + 1e-3


def test_dtype_by_name(tmp_path):
    hf_model(seed=6).save_pretrained(tmp_path)
    assert workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path, dtype="bf16").dtype == torch.bfloat16
    assert workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path, dtype="float16").dtype == torch.float16


def test_bfloat16_checkpoint_keeps_dtype_and_saves(tmp_path):
    ours = randomise(workbench.GPTNeoXForCausalLM(our_config())).to(torch.bfloat16)
    ours.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["torch_dtype"] == "bfloat16"
    again = workbench.GPTNeoXForCausalLM.from_pretrained(tmp_path)
    assert again.dtype == torch.bfloat16
    assert torch.equal(logits(again, ids()), logits(ours, ids()))


def test_rotary_angles_stay_exact_in_bfloat16():
    """After model.to(bfloat16), rotated q/k equal the rotation with fp32 angles (at positions where bf16
    angles would be far off: position 1500 in bf16 is only known to +-4)."""
    model = randomise(workbench.GPTNeoXForCausalLM(our_config(rotary_pct=1.0, max_position_embeddings=2048)))
    model = model.to(torch.bfloat16)
    seen = {}
    attn = model.gpt_neox.layers[0].attention
    handles = [attn.hook_q.register_forward_hook(lambda m, i, o: seen.__setitem__("q", o)),
               attn.hook_rot_q.register_forward_hook(lambda m, i, o: seen.__setitem__("rot_q", o))]
    positions = torch.tensor([[0, 7, 300, 1500, 2040]])
    with torch.no_grad():
        model(ids(1, 5), position_ids=positions)
    for h in handles:
        h.remove()
    q = seen["q"].double()  # [b, p, h, dh]
    dim = q.shape[-1]
    inv_freq = 1.0 / (10000.0 ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)).float()
    angles = (positions[..., None].float() * inv_freq).double()  # fp32 angles, as transformers in fp32
    angles = torch.cat([angles, angles], -1)[:, :, None, :]
    half = dim // 2
    rotated = torch.cat([-q[..., half:], q[..., :half]], -1)
    expected = (q * angles.cos() + rotated * angles.sin()).to(torch.bfloat16)
    got = seen["rot_q"]
    assert got.dtype == torch.bfloat16
    # equal up to one bf16 rounding of the result (2^-8 relative)
    assert ((got.double() - expected.double()).abs() <= expected.double().abs() * 2**-7 + 1e-6).all()


# ---- memory while loading -------------------------------------------------------------------------------
PEAK_SCRIPT = textwrap.dedent("""
    import json, sys
    import torch, workbench
    def status(field):  # kB -> bytes; VmHWM is this process's own peak (ru_maxrss would include pytest's, from before exec)
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    with torch.device("meta"):  # torch's one-off lazy initialisation (~70 MB, any model size) is not loading
        torch.nn.Embedding(2, 2), torch.nn.Linear(2, 2)
    before = status("VmRSS")
    model = workbench.GPTNeoXForCausalLM.from_pretrained(sys.argv[1], dtype=sys.argv[2] if sys.argv[2] != "auto" else None,
                                                         mmap={"default": None, "mmap": True, "read": False}[sys.argv[3]])
    n = sum(p.numel() for p in model.parameters())
    print(json.dumps({"before": before, "peak": status("VmHWM"), "params": n, "dtype": str(model.dtype)}))
""")

@pytest.fixture(scope="module")
def big_checkpoint(tmp_path_factory) -> Path:
    """A ~105 MB fp32 checkpoint (vocab 50304, hidden 256, 2 layers) written straight with safetensors."""
    from safetensors.torch import save_file

    directory = tmp_path_factory.mktemp("big")
    config = workbench.GPTNeoXConfig(vocab_size=50304, hidden_size=256, num_hidden_layers=2, num_attention_heads=4,
                                     intermediate_size=1024)
    with torch.device("meta"):
        shapes = {k: v.shape for k, v in workbench.GPTNeoXForCausalLM(config).state_dict().items()}
    gen = torch.Generator().manual_seed(0)
    save_file({k: torch.randn(s, generator=gen) * 0.02 for k, s in shapes.items()},
              directory / "model.safetensors", metadata={"format": "pt"})
    config.save_pretrained(directory)
    return directory


@pytest.mark.parametrize("mmap", ["default", "mmap", "read"])
@pytest.mark.parametrize("dtype", ["auto", "bfloat16"])
def test_peak_rss_while_loading(big_checkpoint, dtype, mmap):
    """Peak RSS growth while loading <= 1.3x the checkpoint file (a measured property, in a fresh process), whether
    the weights are read into memory (huge pages where available) or memory-mapped."""
    size = (big_checkpoint / "model.safetensors").stat().st_size
    assert 100e6 < size < 200e6
    if not Path("/proc/self/status").is_file():
        pytest.skip("needs Linux's /proc/self/status (VmHWM) to measure a process's own peak memory")
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, str(big_checkpoint), dtype, mmap],
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    assert stats["params"] * 4 <= size  # the model really was built from this file
    growth = stats["peak"] - stats["before"]
    assert growth <= 1.3 * size, f"loading grew RSS by {growth / 1e6:.0f} MB for a {size / 1e6:.0f} MB file"
