"""Plain helpers for the tests: the one tiny-model factory, token makers, the browser. Fixtures: conftest.py.

Imported as `from tests.helpers import ...` (tests/ is a package). Everything here builds *workbench* objects;
nothing falls back to another implementation, so a test of the workbench tests the workbench.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import tempfile
from pathlib import Path

import pytest
import torch

from workbench import GPTNeoXConfig, GPTNeoXForCausalLM, Tokenizer

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO.parent / "shared" / "data").resolve()
NEOX_TOKENIZER = SHARED_DATA / "tokenizer" / "gpt-neox-20b.tokenizer.json"
DEMO = REPO / "workbench" / "demo" / "config.json"


def tiny_config(parallel: bool = True, **overrides) -> GPTNeoXConfig:
    """3 layers, hidden 64, 4 heads, partial rotary: small enough for CPU, big enough to mean something."""
    kwargs = dict(vocab_size=128, hidden_size=64, num_attention_heads=4, num_hidden_layers=3,
                  intermediate_size=256, rotary_pct=0.25, max_position_embeddings=128,
                  use_parallel_residual=parallel, eos_token_id=0, bos_token_id=0)
    kwargs.update(overrides)
    return GPTNeoXConfig(**kwargs)


def tiny_model(parallel: bool = True, seed: int = 0, std: float | None = 0.15, tokenizer_file: str | Path | None = None,
               **overrides) -> GPTNeoXForCausalLM:
    """A random workbench model in eval mode.

    Args:
        std: every parameter drawn N(0, std), LayerNorm weights around 1 (non-trivial biases and LayerNorm
            weights, so that a mistake in one cannot hide); None keeps transformers' initialisation.
        tokenizer_file: attach this tokenizer.json as `model.tokenizer` (the vocabulary then defaults to its size).
        **overrides: GPTNeoXConfig fields.
    """
    tokenizer = Tokenizer.from_file(str(tokenizer_file)) if tokenizer_file is not None else None
    if tokenizer is not None:
        overrides.setdefault("vocab_size", tokenizer.vocab_size)
    torch.manual_seed(seed)
    model = GPTNeoXForCausalLM(tiny_config(parallel, **overrides)).eval()
    if std is not None:
        with torch.no_grad():
            for name, p in model.named_parameters():
                p.normal_(0.0, std)
                if ("layernorm" in name or "layer_norm" in name) and name.endswith("weight"):
                    p.add_(1.0)
    model.tokenizer = tokenizer
    return model


@functools.lru_cache(maxsize=None)
def random_model(tokenizer_file: str, n_layers: int = 2, n_heads: int = 4, d_model: int = 32, seed: int = 0):
    """A tiny random model with the real tokenizer (transformers' initialisation), cached per shape."""
    return tiny_model(seed=seed, std=None, tokenizer_file=tokenizer_file, num_hidden_layers=n_layers,
                      num_attention_heads=n_heads, hidden_size=d_model, intermediate_size=4 * d_model,
                      max_position_embeddings=4096, rotary_pct=0.5, eos_token_id=None, bos_token_id=None)


@functools.lru_cache(maxsize=None)
def demo_or_random(tokenizer_file: str):
    """The embedded demo model when it exists (workbench/demo/config.json), else a tiny random one."""
    if DEMO.is_file():
        import workbench

        return workbench.load("demo").eval()
    return random_model(tokenizer_file)


def random_tokens(batch: int = 2, pos: int = 9, vocab: int = 128, seed: int = 1) -> torch.Tensor:
    return torch.randint(1, vocab, (batch, pos), generator=torch.Generator().manual_seed(seed))


def build_tiny_checkpoint(out: Path, tokenizer_file: Path) -> Path:
    """A random 2-layer GPT-NeoX saved *by transformers*, with the GPT-NeoX-20B tokenizer beside it."""
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


def lm_eval_tasks(include_path: str | Path, names: list[str]) -> dict:
    """lm-eval's Task objects by name, from the YAMLs in `include_path` (lm-eval's own tasks left out)."""
    from lm_eval.tasks import TaskManager

    manager = TaskManager(include_path=str(include_path), include_defaults=False)
    if hasattr(manager, "load"):  # newer lm-eval, which deprecates get_task_dict
        return manager.load(names)["tasks"]
    from lm_eval.tasks import get_task_dict

    return get_task_dict(names, manager)


# ---- the browser ------------------------------------------------------------------------------------
CHROMIUM = Path(os.environ.get("WORKBENCH_CHROMIUM", "/usr/bin/chromium"))
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]  # fmt: skip
# Screenshots go to a temporary folder, so a test run leaves the tree clean; WORKBENCH_SCREENSHOTS=docs/screenshots
# refreshes the README's pictures.
SCREENSHOTS = Path(os.environ.get("WORKBENCH_SCREENSHOTS", Path(tempfile.gettempdir()) / "workbench-screenshots"))

browser = pytest.mark.skipif(
    not CHROMIUM.is_file(),
    reason=f"headless Chromium not found at {CHROMIUM} (apt-get install -y chromium, or set WORKBENCH_CHROMIUM)",
)


def launch_browser(playwright):
    return playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True)


def run_notebook_in_lab(playwright, url: str, token: str, notebook: str, errors: list[str]):
    """Open `notebook` in a running JupyterLab, wait for its kernel and run all cells; returns the page.

    Page errors and console errors of the widgets (`wb`, anywidget) are appended to `errors`.
    """
    page = launch_browser(playwright).new_page(viewport={"width": 1280, "height": 1000})
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" and ("wb" in m.text or "anywidget" in m.text.lower()) else None)
    page.goto(f"{url}/lab/tree/{notebook}?token={token}", wait_until="commit", timeout=180_000)
    page.wait_for_function("() => window.jupyterapp?.shell?.currentWidget?.sessionContext", timeout=240_000)
    page.evaluate(
        """async () => {
            const w = window.jupyterapp.shell.currentWidget;
            const late = new Promise((_, no) => setTimeout(() => no(new Error("kernel not ready in 240 s")), 240000));
            await Promise.race([w.sessionContext.ready, late]);
            await window.jupyterapp.commands.execute('notebook:run-all-cells');
        }"""
    )
    return page


def run_cell_in_lab(page, index: int) -> None:
    """Run cell `index` of the notebook open in JupyterLab (`run_notebook_in_lab`'s page)."""
    page.evaluate(
        """async (index) => {
            const nb = window.jupyterapp.shell.currentWidget.content;
            nb.activeCellIndex = index;
            await window.jupyterapp.commands.execute('notebook:run-cell');
        }""",
        index,
    )


def screenshot(page, name: str, locator=None) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    (locator or page).screenshot(path=str(path))
    return path
