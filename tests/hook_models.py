"""Tiny random GPT-NeoX models shared by the hook, cache, analysis and TransformerLens-parity tests."""

from __future__ import annotations

import pytest
import torch

from workbench import GPTNeoXConfig, GPTNeoXForCausalLM


def tiny_config(parallel: bool = True, **overrides) -> GPTNeoXConfig:
    """3 layers, hidden 64, 4 heads, partial rotary: small enough for CPU, big enough to mean something."""
    kwargs = dict(vocab_size=128, hidden_size=64, num_attention_heads=4, num_hidden_layers=3,
                  intermediate_size=256, rotary_pct=0.25, max_position_embeddings=128,
                  use_parallel_residual=parallel, eos_token_id=0, bos_token_id=0)
    kwargs.update(overrides)
    return GPTNeoXConfig(**kwargs)


def tiny_model(parallel: bool = True, seed: int = 0, std: float = 0.15, **overrides) -> GPTNeoXForCausalLM:
    """A random model in eval mode, every parameter drawn N(0, std) (non-trivial biases and LayerNorm weights,
    so that a mistake in a bias or a LayerNorm weight cannot hide)."""
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(tiny_config(parallel, **overrides)).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, std)
        for name, p in model.named_parameters():
            if "layernorm" in name or "layer_norm" in name:
                p.add_(1.0 if name.endswith("weight") else 0.0)
    return model


def random_tokens(batch: int = 2, pos: int = 9, vocab: int = 128, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny models run fastest on one thread; on a shared, busy machine several threads spin-wait on each other
    (measured: 9 ms vs 210 ms per forward). Imported by the test modules, restored after each."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
