"""NeoX Workbench: interpretability and evaluation for GPT-NeoX-family language models.

    import workbench
    model = workbench.load("demo")            # or a directory, or "EleutherAI/pythia-160m"
    model.generate("In the beginning", max_new_tokens=20)
"""

from __future__ import annotations

from .config import GPTNeoXConfig
from .hub import demo_path
from .kv_cache import KVCache
from .hub import list_revisions as revisions
from .loading import load
from .model import (
    GPTNeoXForCausalLM,
    GPTNeoXForQuestionAnswering,
    GPTNeoXForSequenceClassification,
    GPTNeoXForTokenClassification,
    GPTNeoXModel,
)
from .threads import set_threads
from .tokenizer import Tokenizer

__version__ = "0.1.0"


def sweep(*args, **kwargs):
    """`workbench.dynamics.sweep`: an analysis over a model's training checkpoints (imported on first use)."""
    from .dynamics import sweep as run

    return run(*args, **kwargs)


# Subpackages imported on first use (`workbench.sae.load("demo")` after a plain `import workbench`), so that
# `import workbench` stays as fast as it was.
_LAZY_SUBPACKAGES = ("sae",)


def __getattr__(name: str):
    if name in _LAZY_SUBPACKAGES:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'workbench' has no attribute {name!r}")


__all__ = [
    "GPTNeoXConfig", "GPTNeoXModel", "GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification",
    "GPTNeoXForTokenClassification", "GPTNeoXForQuestionAnswering", "KVCache", "Tokenizer", "load", "demo_path",
    "revisions", "sweep", "sae", "set_threads",
]
