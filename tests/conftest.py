"""Shared fixtures: where the reference data lives, and a skip when it is absent."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
NEOX_TOKENIZER = SHARED_DATA / "tokenizer" / "gpt-neox-20b.tokenizer.json"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """`../shared/data` beside the checkout (reference tokenizer, benchmark data, baselines)."""
    if not SHARED_DATA.is_dir():
        pytest.skip(f"reference data folder {SHARED_DATA} is absent (it sits beside the checkout as ../shared/data)")
    return SHARED_DATA


@pytest.fixture(scope="session")
def neox_tokenizer_file(shared_data: Path) -> Path:
    """The real GPT-NeoX-20B tokenizer.json from ../shared/data."""
    if not NEOX_TOKENIZER.is_file():
        pytest.skip(f"GPT-NeoX-20B tokenizer {NEOX_TOKENIZER} is absent from ../shared/data")
    return NEOX_TOKENIZER


@pytest.fixture(autouse=True, scope="session")
def _one_torch_thread():
    """Tests use tiny models: with 2+ threads torch's workers spin-wait on each other on a shared 2-core
    machine (a tiny forward went from 9 ms to 210 ms), so the suite runs single-threaded."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def build_tiny_model(out: Path, tokenizer_file: Path) -> Path:
    """A random 2-layer GPT-NeoX saved with transformers, with the GPT-NeoX-20B tokenizer beside it."""
    import json
    import shutil

    import torch
    import transformers

    cfg = transformers.GPTNeoXConfig(
        vocab_size=50304, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=2048, rotary_pct=0.25, bos_token_id=0, eos_token_id=0, tie_word_embeddings=False,
    )
    torch.manual_seed(0)
    transformers.GPTNeoXForCausalLM(cfg).eval().save_pretrained(out)
    shutil.copy(tokenizer_file, out / "tokenizer.json")
    (out / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "GPTNeoXTokenizer", "bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>", "pad_token": "<|padding|>", "add_bos_token": False, "add_eos_token": False,
    }))
    return out


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory, neox_tokenizer_file) -> Path:
    """The evals tests' checkpoint: the embedded demo model, or a tiny random one where it is missing."""
    import workbench

    demo = workbench.demo_path()
    if (demo / "config.json").is_file():
        return demo
    return build_tiny_model(tmp_path_factory.mktemp("tiny_neox"), neox_tokenizer_file)
