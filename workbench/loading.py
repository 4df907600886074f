"""`workbench.load`: a causal LM with its tokenizer, from "demo", a directory or a hub id (optionally dispatched)."""

from __future__ import annotations

import os

import torch

from .config import GPTNeoXConfig
from .model import GPTNeoXForCausalLM


def load(
    name_or_path: str | os.PathLike = "demo",
    revision: str | None = None,
    dtype: torch.dtype | str | None = None,
    device: torch.device | str | None = None,
    attn_implementation: str | None = None,
    device_map: str | dict | None = None,
    mmap: bool | None = None,
    **dispatch_kwargs,
) -> GPTNeoXForCausalLM:
    """Load a causal LM with its tokenizer attached (`model.tokenizer`), in eval mode.

    Args:
        name_or_path: `"demo"` (the embedded model), a checkpoint directory, or a hub id such as
            `"EleutherAI/pythia-160m"` (with `revision="step3000"` for a training checkpoint).
        dtype: "float32", "bfloat16", "float16", a torch.dtype, or None/"auto" for the checkpoint's dtype.
        device: where the weights go ("cpu", "cuda", ...).
        attn_implementation: "sdpa" (default), "eager" or "flash_attention_2".
        device_map: "auto" or an accelerate device map, to spread a model too big for one device over
            GPUs, CPU and disk (`offload_folder=...`, `max_memory=...` go to accelerate).
        mmap: without `device_map`: memory-map the weight files (True) or read CPU weights into huge pages (False);
            see `GPTNeoXForCausalLM.from_pretrained`.
    """
    if device_map is None:
        return GPTNeoXForCausalLM.from_pretrained(
            name_or_path, revision=revision, dtype=dtype, device=device, attn_implementation=attn_implementation,
            mmap=mmap,
        )
    if mmap is not None:
        raise ValueError("mmap= applies to loading without device_map; with device_map, accelerate places the weights")
    # Big models: build on the meta device and stream each tensor to its GPU, CPU or disk slot (accelerate),
    # so no full copy ever sits in CPU memory.
    from .big_model import load_dispatched
    from .checkpoint import attach_tokenizer, parse_dtype
    from .hub import resolve_model_dir

    directory = resolve_model_dir(name_or_path, revision=revision)
    config = GPTNeoXConfig.from_json_file(directory)
    if attn_implementation is not None:
        config.attn_implementation = attn_implementation
        config.validate()
    model = load_dispatched(GPTNeoXForCausalLM, config, directory, device_map, dtype=parse_dtype(dtype), **dispatch_kwargs)
    return attach_tokenizer(model, directory, name_or_path)
