"""Loader gaps (issue 15, item 8): mixed dtypes load as transformers loads them, legacy pytorch_model.bin loads,
non-float weights, shard paths outside the checkpoint and absent devices get one clear error, and the CLI reports
each in one line with exit status 2."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")

import workbench  # noqa: E402
from workbench import cli  # noqa: E402
from workbench.checkpoint import CheckpointMismatchError  # noqa: E402

VOCAB = 300
TINY = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
IDS = torch.tensor([[1, 5, 9, 200, 7, 3, 3, 42]])


def hf_checkpoint(directory: Path) -> Path:
    """A random tiny GPT-NeoX saved by transformers (config.json carries `dtype: float32`)."""
    torch.manual_seed(0)
    transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**TINY)).eval().save_pretrained(directory)
    return directory


def logits(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits.float()


def edit_config(directory: Path, **changes) -> None:
    """Set (value) or drop (None) config.json keys."""
    config = json.loads((directory / "config.json").read_text())
    config.update(changes)
    (directory / "config.json").write_text(json.dumps({k: v for k, v in config.items() if v is not None}))


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return hf_checkpoint(tmp_path / "ckpt")


# ---- mixed fp16 / fp32: one dtype, chosen as transformers' dtype="auto" ----------------------------------------
@pytest.mark.parametrize("halved, config_dtype", [
    (1, None),  # every other tensor fp16, the first (by name) fp32, no dtype in config.json: fp32
    (0, None),  # the first fp16: fp16
    (1, "bfloat16"),  # config.json's dtype wins over the tensors'
    (0, "float32"),
], ids=["first-fp32", "first-fp16", "config-bf16", "config-fp32"])
def test_mixed_dtype_checkpoint_loads_as_transformers_does(checkpoint, halved, config_dtype):
    state = load_file(checkpoint / "model.safetensors")
    state = {k: v.half() if i % 2 == halved else v for i, (k, v) in enumerate(sorted(state.items()))}
    save_file(state, checkpoint / "model.safetensors", metadata={"format": "pt"})
    edit_config(checkpoint, dtype=config_dtype)
    theirs = transformers.GPTNeoXForCausalLM.from_pretrained(checkpoint).eval()
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)
    (expected,) = {p.dtype for p in theirs.parameters()}
    assert {p.dtype for p in ours.parameters()} == {expected}
    tol = 1e-5 if expected == torch.float32 else 5e-2
    assert (logits(ours) - logits(theirs)).abs().max() <= tol


def test_mixed_dtype_pytorch_model_bin(checkpoint):
    state = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    torch.save({k: v.half() if "layers.1" in k else v for k, v in state.items()}, checkpoint / "pytorch_model.bin")
    edit_config(checkpoint, dtype=None)
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)
    assert {p.dtype for p in ours.parameters()} == {torch.float32}
    logits(ours)  # the first forward used to fail on the dtype mix


def test_config_dtype_that_is_no_float_dtype(checkpoint):
    edit_config(checkpoint, dtype="int8")
    with pytest.raises(ValueError, match=r"config\.json: dtype 'int8' is not a floating-point torch dtype; allowed"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)


# ---- pytorch_model.bin: legacy format, not a state dict ---------------------------------------------------------
def test_legacy_pytorch_model_bin_loads(checkpoint):
    reference = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)
    state = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").unlink()
    torch.save(state, checkpoint / "pytorch_model.bin", _use_new_zipfile_serialization=False)
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)
    assert torch.equal(logits(ours), logits(reference))


def test_pytorch_model_bin_that_is_no_state_dict(checkpoint):
    (checkpoint / "model.safetensors").unlink()
    torch.save([torch.ones(2)], checkpoint / "pytorch_model.bin")
    with pytest.raises(ValueError, match=r"pytorch_model\.bin holds a list that is not a state dict"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)


# ---- integer weights ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("fmt, dtype", [("safetensors", None), ("safetensors", "bfloat16"), ("bin", None)])
def test_int32_weight_is_named(checkpoint, fmt, dtype):
    state = load_file(checkpoint / "model.safetensors")
    name = "gpt_neox.layers.0.attention.dense.weight"
    state[name] = state[name].to(torch.int32)
    (checkpoint / "model.safetensors").unlink()
    if fmt == "bin":
        torch.save(state, checkpoint / "pytorch_model.bin")
    else:
        save_file(state, checkpoint / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(CheckpointMismatchError,
                       match=rf"dtype mismatches \(1\): {name}: int32, expected a floating-point dtype"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint, dtype=dtype)


# ---- sharded index: files confined to the checkpoint directory --------------------------------------------------
def shard(checkpoint: Path, target: str) -> None:
    """Rewrite the checkpoint as one shard with an index whose every entry names `target`."""
    state = load_file(checkpoint / "model.safetensors")
    (checkpoint / "model.safetensors").rename(checkpoint.parent / "outside.safetensors")
    index = {"metadata": {}, "weight_map": {name: target for name in state}}
    (checkpoint / "model.safetensors.index.json").write_text(json.dumps(index))


@pytest.mark.parametrize("target", ["../outside.safetensors", "ABSOLUTE", "sub/../../outside.safetensors"])
def test_index_entry_outside_the_directory_is_refused(checkpoint, target):
    target = str(checkpoint.parent / "outside.safetensors") if target == "ABSOLUTE" else target
    shard(checkpoint, target)
    with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json: weight_map entry 'embed_out\.weight': "
                                         r".* is not a file name inside the checkpoint directory"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)


def test_index_entry_symlink_escaping_is_refused(checkpoint):
    shard(checkpoint, "model-00001-of-00001.safetensors")
    (checkpoint / "model-00001-of-00001.safetensors").symlink_to(checkpoint.parent / "outside.safetensors")
    with pytest.raises(ValueError, match=r"weight_map entry 'embed_out\.weight': 'model-00001-of-00001\.safetensors' "
                                         r"leads to .*outside\.safetensors, outside the checkpoint directory"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)


def test_index_entry_missing_file(checkpoint):
    shard(checkpoint, "model-00001-of-00002.safetensors")
    with pytest.raises(FileNotFoundError, match=r"weight_map entry 'embed_out\.weight'.*: no such file in"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)


@pytest.mark.parametrize("index", ['[1, 2]', '{"metadata": {}}', '{"weight_map": ["a"]}', "not json"])
def test_index_that_is_no_index(checkpoint, index):
    (checkpoint / "model.safetensors.index.json").write_text(index)
    with pytest.raises(ValueError, match=r"index\.json is not a checkpoint index \(a JSON object with a weight_map"):
        workbench.GPTNeoXForCausalLM.from_pretrained(checkpoint)


def test_hub_snapshot_links_into_blobs_load(tmp_path):
    """huggingface_hub's cache: snapshots/<rev>/<file> are symlinks to ../../blobs/<hash>; that is inside."""
    source = hf_checkpoint(tmp_path / "source")
    repo = tmp_path / "models--org--tiny"
    snapshot = repo / "snapshots" / "abc123"
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    index = {"metadata": {}, "weight_map": {k: "model-00001-of-00001.safetensors"
                                            for k in load_file(source / "model.safetensors")}}
    (source / "model.safetensors").rename(source / "model-00001-of-00001.safetensors")
    (source / "model.safetensors.index.json").write_text(json.dumps(index))
    for i, path in enumerate(sorted(source.iterdir())):
        path.rename(repo / "blobs" / f"blob{i}")
        (snapshot / path.name).symlink_to(Path("../../blobs") / f"blob{i}")
    model = workbench.GPTNeoXForCausalLM.from_pretrained(snapshot)
    assert torch.isfinite(logits(model)).all()


# ---- devices -----------------------------------------------------------------------------------------------------
@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a CUDA GPU")
def test_cuda_without_gpu_is_refused_before_any_work(tmp_path):
    with pytest.raises(ValueError, match=r"device 'cuda' is not available here: torch\.cuda\.is_available\(\) is "
                                         r"False; use device='cpu'"):
        workbench.load(tmp_path / "no-such-checkpoint", device="cuda")  # the device is checked first


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_without_mps_is_refused(checkpoint):
    with pytest.raises(ValueError, match=r"device 'mps' is not available here: torch\.mps\.is_available\(\) is False"):
        workbench.load(checkpoint, device="mps")


def test_cuda_index_beyond_the_gpus(checkpoint, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(ValueError, match=r"device 'cuda:3' is not available here: torch\.cuda\.device_count\(\) is 1"):
        workbench.load(checkpoint, device="cuda:3")


def test_unknown_device_name(checkpoint):
    with pytest.raises(ValueError, match=r"device 'gpu' is not usable here: .*; use device='cpu'"):
        workbench.load(checkpoint, device="gpu")


# ---- the CLI: exit status 2 and one line; tracebacks for bugs and with WORKBENCH_DEBUG=1 -----------------------
def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True,
                          env=dict(os.environ, OMP_NUM_THREADS="1", **env), timeout=300)


def test_cli_reports_a_bad_checkpoint_in_one_line(checkpoint):
    shard(checkpoint, "../outside.safetensors")
    out = run_cli("info", str(checkpoint))
    assert out.returncode == 2 and out.stdout == ""
    (line,) = out.stderr.splitlines()
    assert line.startswith("workbench: error: ") and "weight_map entry 'embed_out.weight'" in line


def test_cli_joins_a_multiline_error_into_one_line(checkpoint):
    edit_config(checkpoint, intermediate_size=96)  # CheckpointMismatchError spans several lines
    out = run_cli("info", str(checkpoint))
    assert out.returncode == 2
    (line,) = out.stderr.splitlines()
    assert line.startswith("workbench: error: checkpoint ") and "shape mismatches (6):" in line


def test_cli_debug_shows_the_traceback(checkpoint):
    edit_config(checkpoint, layer_norm_eps=-1)
    out = run_cli("info", str(checkpoint), WORKBENCH_DEBUG="1")
    assert out.returncode == 1 and "Traceback (most recent call last)" in out.stderr
    assert "ValueError:" in out.stderr and "layer_norm_eps -1 is invalid" in out.stderr


@pytest.mark.parametrize("error", [ValueError("bad\n  value"), TypeError("t"), KeyError("no such key"),
                                   FileNotFoundError("nothing here"), OSError("disk"), CheckpointMismatchError("m")])
def test_cli_known_errors_exit_2(monkeypatch, capsys, error):
    def fail(*args, **kwargs):
        raise error

    monkeypatch.setattr(workbench, "load", fail)
    monkeypatch.delenv("WORKBENCH_DEBUG", raising=False)
    assert cli.main(["info", "demo"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("workbench: error: ")
    if isinstance(error, KeyError):
        assert err == "workbench: error: no such key\n"  # not str(KeyError)'s quoted repr


def test_cli_unexpected_errors_keep_their_traceback(monkeypatch):
    def fail(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(workbench, "load", fail)
    with pytest.raises(RuntimeError, match="a bug"):
        cli.main(["info", "demo"])
