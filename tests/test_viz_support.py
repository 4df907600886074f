"""Shared helpers for the viz tests: models, the browser, and where screenshots go (no tests here)."""

from __future__ import annotations

import functools
import os
import shutil
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DEMO = REPO / "workbench" / "demo" / "config.json"
CHROMIUM = Path(os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
SCREENSHOTS = REPO / "docs" / "screenshots"

browser = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"headless Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set WORKBENCH_CHROMIUM)",
)


def tiny_config(n_layers: int, n_heads: int, d_model: int, vocab: int) -> dict:
    return dict(
        vocab_size=vocab, hidden_size=d_model, num_hidden_layers=n_layers, num_attention_heads=n_heads,
        intermediate_size=4 * d_model, max_position_embeddings=4096, rotary_pct=0.5, use_parallel_residual=True,
        layer_norm_eps=1e-5, tie_word_embeddings=False, hidden_act="gelu",
    )  # fmt: skip


def _attach_tokenizer(model, tokenizer_file: Path):
    try:
        from workbench.tokenizer import Tokenizer  # the project's own, once it exists

        model.tokenizer = Tokenizer.from_file(str(tokenizer_file))
    except (ImportError, AttributeError):
        from tokenizers import Tokenizer as RawTokenizer

        model.tokenizer = RawTokenizer.from_file(str(tokenizer_file))
    return model


@functools.lru_cache(maxsize=None)
def random_model(tokenizer_file: str, n_layers: int = 2, n_heads: int = 4, d_model: int = 32, seed: int = 0):
    """A tiny random GPT-NeoX with the real tokenizer: a workbench model when `workbench.load` works,
    else transformers' (same module paths and outputs), eager attention so patterns are materialised."""
    import torch

    torch.manual_seed(seed)
    from tokenizers import Tokenizer as RawTokenizer

    vocab = RawTokenizer.from_file(tokenizer_file).get_vocab_size()
    cfg = tiny_config(n_layers, n_heads, d_model, vocab)
    try:
        import workbench

        from workbench.config import GPTNeoXConfig
        from workbench.model import GPTNeoXForCausalLM

        model = GPTNeoXForCausalLM(GPTNeoXConfig(**cfg))
        folder = Path(tempfile.mkdtemp(prefix="viz-model-"))
        model.save_pretrained(folder)
        shutil.copy(tokenizer_file, folder / "tokenizer.json")
        loaded = workbench.load(str(folder))
        loaded.eval()
        return loaded
    except (ImportError, AttributeError, TypeError):
        from transformers import GPTNeoXConfig as HFConfig
        from transformers import GPTNeoXForCausalLM as HFModel

        model = HFModel(HFConfig(**cfg, attn_implementation="eager")).eval()
        return _attach_tokenizer(model, Path(tokenizer_file))


@functools.lru_cache(maxsize=None)
def demo_or_random(tokenizer_file: str):
    """The embedded demo model when it exists (workbench/demo/config.json), else a tiny random one."""
    if DEMO.is_file():
        import workbench

        return workbench.load("demo").eval()
    return random_model(tokenizer_file)


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def screenshot(page, name: str, locator=None) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    (locator or page).screenshot(path=str(path))
    return path
