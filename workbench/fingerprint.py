"""A model's identity for caches: class, config, dtype and a cheap digest of every parameter.

The eval request cache, the SAE trainer's resume check and the sweep's identical-weights warning all key on it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

import torch


def model_fingerprint(model: torch.nn.Module, extra: Any = None) -> str:
    """A short identity for a model: class, config, dtype and a cheap digest of every parameter.

    Two models with the same architecture but different weights get different fingerprints (the digest sums and
    samples every tensor), so a request cache is never reused across models.
    """
    h = hashlib.sha256()
    h.update(type(model).__name__.encode())
    cfg = getattr(model, "config", None)
    if cfg is not None:
        d = cfg.to_dict() if hasattr(cfg, "to_dict") else getattr(cfg, "__dict__", {})
        h.update(json.dumps(d, sort_keys=True, default=str).encode())
    with torch.no_grad():
        for name, p in model.named_parameters():
            flat = p.detach().reshape(-1)
            sample = flat[:: max(1, flat.numel() // 64)][:64].float().cpu()
            h.update(f"{name}{tuple(p.shape)}{p.dtype}{float(flat.float().sum()):.6e}".encode())
            h.update(sample.numpy().tobytes())
    h.update(json.dumps(extra, default=str).encode())
    return h.hexdigest()[:24]
