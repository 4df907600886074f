"""Models too big for one device (GPT-NeoX-20B): accelerate's big-model inference.

A device map assigns each top-level block (embedding, each ``GPTNeoXLayer``, final norm, unembedding)
to a GPU, the CPU or the disk. accelerate then installs hooks that move every block's inputs to the
block's device, and for CPU/disk-offloaded blocks streams the weights to the execution device just for
their forward. A layer is never split across devices (``no_split_module_classes``), so its residual
additions never mix devices.

Two entry points:

- :func:`dispatch`: an already built model (weights in CPU memory) -> the same model, dispatched;
- :func:`load_dispatched`: build the model on the meta device (no memory), then load a checkpoint
  straight into its devices, so that a 20B model never needs 40 GB of CPU memory first.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any, Mapping

import torch
from torch import nn

NO_SPLIT = ("GPTNeoXLayer",)
DEVICE_MAP_STRATEGIES = ("auto", "balanced", "balanced_low_0", "sequential")
# Objects a forward passes along that must stay where they are: the KV cache keeps one buffer per layer
# on that layer's device, and the hooks would otherwise try to move it.
SKIP_KEYS = ["past_key_values", "cache"]
# Buffers that older GPT-NeoX checkpoints (Pythia, GPT-NeoX-20B) carry and that the model recomputes.
LEGACY_KEYS = re.compile(r"(^|\.)(attention\.bias|attention\.masked_bias|rotary_emb\.inv_freq)$")


def _require_accelerate():
    try:
        import accelerate  # noqa: F401
    except ImportError as error:  # pragma: no cover - accelerate is in the eval/test extras
        raise ImportError("device_map needs accelerate: pip install 'neox-workbench[eval]' (or accelerate)") from error
    return accelerate


def infer_device_map(
    model: nn.Module,
    device_map: str = "auto",
    max_memory: Mapping[int | str, int | str] | None = None,
    *,
    no_split_module_classes: tuple[str, ...] | list[str] = NO_SPLIT,
    dtype: torch.dtype | str | None = None,
) -> dict[str, int | str]:
    """Where each block of ``model`` goes, as transformers computes it for ``device_map="auto"``.

    Args:
        model: the model (its parameters may be on the meta device).
        device_map: "auto"/"balanced" (spread evenly over the GPUs), "balanced_low_0" (keep GPU 0 light
            for generation), "sequential" (fill GPU 0, then 1, ..., then CPU, then disk).
        max_memory: per-device budget, e.g. ``{0: "20GiB", 1: "20GiB", "cpu": "60GiB"}``; default: what
            is free. Blocks that fit nowhere go to "disk".
        no_split_module_classes: module classes kept whole on one device.
        dtype: the dtype the weights will have (sizes are computed for it).

    Returns:
        ``{module name: device}`` with devices as GPU indices, "cpu" or "disk".
    """
    accelerate = _require_accelerate()
    from accelerate.utils import get_balanced_memory

    if device_map not in DEVICE_MAP_STRATEGIES:
        raise ValueError(f"unknown device_map strategy {device_map!r}; known: {list(DEVICE_MAP_STRATEGIES)} or a dict")
    no_split = list(no_split_module_classes)
    max_memory = dict(max_memory) if max_memory is not None else None
    if device_map != "sequential":
        max_memory = get_balanced_memory(model, max_memory=max_memory, no_split_module_classes=no_split,
                                         dtype=dtype, low_zero=device_map == "balanced_low_0")
    return accelerate.infer_auto_device_map(model, max_memory=max_memory, no_split_module_classes=no_split, dtype=dtype)


def _check_map(device_map: Mapping[str, Any], offload_folder: str | os.PathLike | None) -> dict[str, Any]:
    allowed = "GPU index, 'cuda:N', 'cpu', 'disk', 'mps' or a torch.device"
    out = {}
    for name, device in device_map.items():
        if isinstance(device, torch.device):
            device = str(device)
        if not isinstance(device, (int, str)) or (isinstance(device, str) and device not in ("cpu", "disk", "mps")
                                                  and not device.startswith("cuda")):
            raise ValueError(f"device_map[{name!r}] = {device!r} is not a device; allowed: {allowed}")
        out[name] = device
    if "disk" in out.values() and offload_folder is None:
        disk = [n for n, d in out.items() if d == "disk"]
        more = "..." if len(disk) > 5 else ""
        raise ValueError(f"modules {disk[:5]}{more} are mapped to 'disk': pass offload_folder=")
    return out


def _resolve(model: nn.Module, device_map, max_memory, offload_folder, no_split, dtype) -> dict[str, Any]:
    if isinstance(device_map, str):
        device_map = infer_device_map(model, device_map, max_memory, no_split_module_classes=no_split, dtype=dtype)
    elif not isinstance(device_map, Mapping):
        raise TypeError(f"device_map must be one of {list(DEVICE_MAP_STRATEGIES)} or a dict, "
                        f"got {type(device_map).__name__}")
    device_map = _check_map(device_map, offload_folder)
    from accelerate.utils import check_device_map

    check_device_map(model, device_map)  # every parameter placed somewhere
    return device_map


def dispatch(
    model: nn.Module,
    device_map: str | Mapping[str, int | str | torch.device] = "auto",
    offload_folder: str | os.PathLike | None = None,
    max_memory: Mapping[int | str, int | str] | None = None,
    *,
    no_split_module_classes: tuple[str, ...] | list[str] = NO_SPLIT,
    offload_buffers: bool = False,
) -> nn.Module:
    """Spread a built model over GPUs, CPU and disk (in place) and return it.

    Args:
        model: a workbench (or transformers) GPT-NeoX model with its weights in CPU memory.
        device_map: a strategy ("auto", "balanced", "balanced_low_0", "sequential", see
            :func:`infer_device_map`) or an explicit ``{module name: device}`` map.
        offload_folder: where disk-offloaded weights are written (required when any block goes to disk).
        max_memory: per-device budget for the strategies, e.g. ``{0: "10GiB", "cpu": "30GiB"}``.
        no_split_module_classes: module classes never split across devices.
        offload_buffers: offload buffers too (with their modules' weights).

    Returns:
        The same model object, with ``model.hf_device_map`` set. Inputs go to the device of the first
        block (``model.hf_device_map`` of the embedding); outputs come back on the last block's device.
    """
    accelerate = _require_accelerate()
    device_map = _resolve(model, device_map, max_memory, offload_folder, no_split_module_classes, None)
    if offload_folder is not None:
        Path(offload_folder).mkdir(parents=True, exist_ok=True)
    model = accelerate.dispatch_model(model, device_map=device_map, offload_dir=offload_folder,
                                      offload_buffers=offload_buffers, skip_keys=SKIP_KEYS)
    model.hf_device_map = device_map
    return model


def checkpoint_keys(checkpoint: str | os.PathLike) -> set[str]:
    """Tensor names in a checkpoint, read from its index or headers (no tensor is loaded).

    Args:
        checkpoint: a folder (``*.safetensors.index.json``, ``model.safetensors``, ``pytorch_model*.bin``)
            or one ``.safetensors`` / ``.bin`` file.

    Returns:
        The set of tensor names.
    """
    path = Path(checkpoint)
    if path.is_dir():
        indexes = sorted(path.glob("*.index.json"))
        if indexes:
            return set(json.loads(indexes[0].read_text(encoding="utf-8"))["weight_map"])
        files = sorted(path.glob("*.safetensors")) or sorted(path.glob("pytorch_model*.bin"))
        if not files:
            raise FileNotFoundError(f"no *.safetensors, *.index.json or pytorch_model*.bin in {path}")
    elif path.is_file():
        files = [path]
    else:
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    keys: set[str] = set()
    for file in files:
        if file.suffix == ".safetensors":
            from safetensors import safe_open

            with safe_open(file, framework="pt") as f:
                keys.update(f.keys())
        else:  # mmap: the names without reading the tensors
            keys.update(torch.load(file, map_location="meta", mmap=True, weights_only=True).keys())
    return keys


def _check_keys(model: nn.Module, checkpoint: str | os.PathLike) -> None:
    """Refuse a checkpoint that lacks a weight of the model or holds weights the model does not have.

    accelerate's dispatched loading leaves a missing weight on the meta device without a word, and the
    first forward would fail far from the cause.
    """
    found = checkpoint_keys(checkpoint)
    # tied weights appear once; non-persistent buffers (rotary tables) are not in checkpoints
    every_parameter = {name for name, _ in model.named_parameters(remove_duplicate=False)}
    persistent_buffers = {name for name in model.state_dict() if name not in every_parameter}
    wanted = {name for name, _ in model.named_parameters()} | persistent_buffers
    missing = sorted(wanted - found)
    unexpected = sorted(k for k in found - set(model.state_dict()) if not LEGACY_KEYS.search(k))
    if missing or unexpected:
        raise ValueError(f"checkpoint {checkpoint} does not match {type(model).__name__}: missing {missing[:8]}"
                         f"{'...' if len(missing) > 8 else ''}, unexpected {unexpected[:8]}"
                         f"{'...' if len(unexpected) > 8 else ''}")


def load_dispatched(
    model_class: type[nn.Module],
    config: Any,
    checkpoint: str | os.PathLike,
    device_map: str | Mapping[str, int | str | torch.device] = "auto",
    offload_folder: str | os.PathLike | None = None,
    max_memory: Mapping[int | str, int | str] | None = None,
    *,
    dtype: torch.dtype | str | None = None,
    no_split_module_classes: tuple[str, ...] | list[str] = NO_SPLIT,
    offload_buffers: bool = False,
) -> nn.Module:
    """Build ``model_class(config)`` without allocating its weights, then load a checkpoint into its devices.

    Args:
        model_class: e.g. ``workbench.model.GPTNeoXForCausalLM``.
        config: its config.
        checkpoint: a checkpoint folder (``model.safetensors``, sharded safetensors with their
            ``.index.json``, or ``pytorch_model.bin`` files) or one weights file. Its keys must be the
            model's (transformers' GPT-NeoX names); legacy buffers (``attention.bias``,
            ``attention.masked_bias``, ``rotary_emb.inv_freq``) are ignored.
        device_map, offload_folder, max_memory, no_split_module_classes, offload_buffers: as in :func:`dispatch`.
        dtype: cast the weights to this dtype while loading (default: as stored).

    Returns:
        The model in eval mode, dispatched, with ``model.hf_device_map`` set.

    Raises:
        ValueError: the checkpoint lacks one of the model's weights or holds unknown ones (names listed).
    """
    accelerate = _require_accelerate()
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype, None) if dtype != "auto" else None
    with accelerate.init_empty_weights():
        model = model_class(config)
    _check_keys(model, checkpoint)
    device_map = _resolve(model, device_map, max_memory, offload_folder, no_split_module_classes, dtype)
    if offload_folder is not None:
        Path(offload_folder).mkdir(parents=True, exist_ok=True)
    model = accelerate.load_checkpoint_and_dispatch(
        model, os.fspath(checkpoint), device_map=device_map, offload_folder=offload_folder,
        offload_buffers=offload_buffers, dtype=dtype, skip_keys=SKIP_KEYS, strict=False,  # keys checked above
        no_split_module_classes=list(no_split_module_classes))
    model.hf_device_map = device_map
    return model.eval()


def first_device(model: nn.Module) -> torch.device:
    """The device inputs should be on: the embedding's device of a dispatched model ("cpu" for disk)."""
    device_map = getattr(model, "hf_device_map", None)
    if not device_map:
        return next(model.parameters()).device
    device = next(iter(device_map.values()))
    if device in ("disk", "cpu"):
        return torch.device("cpu")
    return torch.device("cuda", device) if isinstance(device, int) else torch.device(device)
