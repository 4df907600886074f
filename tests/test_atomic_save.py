"""Checkpoint writes are atomic: a crash or a failing writer never leaves a directory that loads to anything but
the complete old or the complete new checkpoint, and leaves no stray temporary files behind for long."""

from __future__ import annotations

import errno
import signal
import subprocess
import sys
import textwrap

import pytest
import torch

import workbench
from workbench import GPTNeoXConfig, GPTNeoXForCausalLM
from workbench.checkpoint import save_pretrained

# ~134 M parameters: a 540 MB fp32 checkpoint, so a kill lands in the middle of real writes.
BIG = dict(vocab_size=50304, hidden_size=768, num_attention_heads=12, num_hidden_layers=8, intermediate_size=3072,
           rotary_pct=0.25, max_position_embeddings=256)
IDS = torch.arange(1, 17)[None] * 29  # ids < 512: fit every vocabulary here


def _model(seed: int, **config) -> GPTNeoXForCausalLM:
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(GPTNeoXConfig(**config)).eval()


def _logits(directory) -> torch.Tensor:
    with torch.no_grad():
        return GPTNeoXForCausalLM.from_pretrained(directory)(IDS).logits


def test_a_failing_writer_keeps_the_old_checkpoint(tmp_path, monkeypatch):
    small = dict(BIG, hidden_size=64, num_attention_heads=4, num_hidden_layers=2, intermediate_size=128, vocab_size=512)
    old, new = _model(0, **small), _model(1, **small)
    target = tmp_path / "ckpt"
    save_pretrained(old, target)
    (target / "README.md").write_text("my notes")  # a user's file in the checkpoint directory
    expected = _logits(target)
    import safetensors.torch

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full)
    with pytest.raises(OSError, match="No space left"):
        save_pretrained(new, target)
    monkeypatch.undo()
    assert torch.equal(_logits(target), expected)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ckpt"]  # no temporary directory left behind
    save_pretrained(new, target, max_shard_size="100KB")  # a sharded layout replaces the single file
    assert not (target / "model.safetensors").exists() and (target / "README.md").read_text() == "my notes"
    torch.testing.assert_close(_logits(target), _logits_of(new), rtol=0, atol=0)


def _logits_of(model) -> torch.Tensor:
    with torch.no_grad():
        return model(IDS).logits


CHILD = textwrap.dedent("""
    import sys, torch
    from workbench import GPTNeoXConfig, GPTNeoXForCausalLM
    torch.manual_seed(1)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**{config!r})).eval()
    print("saving", flush=True)
    model.save_pretrained(sys.argv[1])
    print("saved", flush=True)
""")


@pytest.mark.slow
def test_sigkill_during_a_save_leaves_the_old_or_the_new_checkpoint(tmp_path):
    target = tmp_path / "ckpt"
    old_logits = _save_and_logits(_model(0, **BIG), target)
    new_logits = _logits_of(_model(1, **BIG))
    outcomes = []
    for delay in (0.0, 0.05, 0.2, 0.5, 1.0, 2.0, 30.0):
        child = subprocess.Popen([sys.executable, "-c", CHILD.format(config=BIG), str(target)],
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "saving"
        try:
            child.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            child.send_signal(signal.SIGKILL)
            child.wait()
        logits = _logits(target)  # must load, whatever the moment of the kill
        is_old, is_new = torch.equal(logits, old_logits), torch.equal(logits, new_logits)
        assert is_old or is_new, f"killed after {delay}s: the checkpoint is neither the old nor the new one"
        outcomes.append("new" if is_new else "old")
        if is_new:
            old_logits = _save_and_logits(_model(0, **BIG), target)  # put the old one back for the next round
    assert outcomes[0] == "old" and outcomes[-1] == "new", outcomes  # both outcomes were really exercised
    leftovers = [p.name for p in tmp_path.iterdir() if p.name != "ckpt"]
    save_pretrained(_model(2, **dict(BIG, num_hidden_layers=1)), target)  # the next save cleans up after crashes
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"], leftovers


def _save_and_logits(model, target) -> torch.Tensor:
    save_pretrained(model, target)
    return _logits(target)


def test_workbench_load_of_a_saved_demo_round_trips(tmp_path):
    demo = workbench.load("demo")
    demo.save_pretrained(tmp_path / "demo")
    again = workbench.load(str(tmp_path / "demo"))
    with torch.no_grad():
        assert torch.equal(again(IDS).logits, demo(IDS).logits)


def test_saved_files_get_the_umask_mode(tmp_path):
    """safetensors' save_file creates 0600 files; a saved checkpoint must be readable as any new file is."""
    import os

    import workbench
    from tests.helpers import tiny_model

    umask = os.umask(0o022)
    try:
        tiny_model().save_pretrained(tmp_path / "ckpt")
    finally:
        os.umask(umask)
    modes = {p.name: p.stat().st_mode & 0o777 for p in (tmp_path / "ckpt").iterdir()}
    assert modes and all(m == 0o644 for m in modes.values()), modes
    assert workbench.load(tmp_path / "ckpt") is not None
