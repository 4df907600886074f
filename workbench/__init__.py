"""NeoX Workbench: interpretability and evaluation for GPT-NeoX-family language models.

    import workbench
    model = workbench.load("demo")            # or a directory, or "EleutherAI/pythia-160m"
    model.generate("In the beginning", max_new_tokens=20)
"""

from __future__ import annotations

from .config import GPTNeoXConfig
from .hub import demo_path
from .kv_cache import KVCache
from .loading import load
from .model import (
    GPTNeoXForCausalLM,
    GPTNeoXForQuestionAnswering,
    GPTNeoXForSequenceClassification,
    GPTNeoXForTokenClassification,
    GPTNeoXModel,
)
from .tokenizer import Tokenizer

__version__ = "0.1.0"
__all__ = [
    "GPTNeoXConfig", "GPTNeoXModel", "GPTNeoXForCausalLM", "GPTNeoXForSequenceClassification",
    "GPTNeoXForTokenClassification", "GPTNeoXForQuestionAnswering", "KVCache", "Tokenizer", "load", "demo_path",
]
