"""Checkpoint I/O in transformers' format: safetensors (single or sharded) and pytorch_model.bin.

Loading builds the model on the meta device and assigns each tensor, already in the target dtype and on the
target device, so no second full copy of the weights is ever made.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
from pathlib import Path
from typing import Iterator

import torch

from .atomic import atomic_directory
from .config import GPTNeoXConfig
from .hub import resolve_model_dir

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
# Buffers that old GPT-NeoX checkpoints saved; recomputed here, so skipped.
LEGACY_KEYS = re.compile(r"attention\.(bias|masked_bias|rotary_emb\.inv_freq)$|rotary_emb\.inv_freq$")
DTYPES = {
    "float32": torch.float32, "fp32": torch.float32, "float": torch.float32,
    "float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
    "bfloat16": torch.bfloat16, "bf16": torch.bfloat16,
}


class CheckpointMismatchError(ValueError):
    """The checkpoint's tensors don't fit the model built from its config."""


def parse_dtype(dtype: torch.dtype | str | None) -> torch.dtype | None:
    """torch.dtype, a name such as "bf16", or None/"auto" (keep the checkpoint's dtype)."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return None if dtype == "auto" else dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}; allowed: a torch.dtype, 'auto', or one of {', '.join(DTYPES)}")


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, safetensors first."""
    for index in (SAFE_INDEX, BIN_INDEX):
        if (directory / index).is_file():
            weight_map = json.loads((directory / index).read_text())["weight_map"]
            return [directory / name for name in sorted(set(weight_map.values()))]
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (directory / single).is_file():
            return [directory / single]
    raise FileNotFoundError(
        f"no weights in {directory}: expected model.safetensors, {SAFE_INDEX}, pytorch_model.bin or {BIN_INDEX}"
    )


def iter_tensors(files: list[Path], device: torch.device, dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time, each converted to `dtype` on `device`."""
    for path in files:
        if path.suffix == ".safetensors" and dtype is not None:
            # Converting: read tensor by tensor. Through a memory map every converted tensor's source pages
            # would stay resident, holding the whole file beside the converted model (2x for fp32 -> bf16).
            yield from _read_safetensors(path, device, dtype)
        elif path.suffix == ".safetensors":
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(path, framework="pt", device=str(device)) as f:
                    for name in f.keys():
                        tensor = f.get_tensor(name)
                        yield name, _convert(tensor, dtype)
            except SafetensorError as err:
                raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
        else:
            try:
                state = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            except Exception as err:  # torch raises several types for a damaged pickle/zip
                raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from None
            for name in list(state):
                yield name, _convert(state.pop(name), dtype).to(device)


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _read_safetensors(path: Path, device: torch.device, dtype: torch.dtype) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor in `dtype` on `device`) from a safetensors file with plain reads; only one
    tensor in the file's dtype is in memory at a time."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        try:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len > size - 8:
                raise ValueError(f"header of {header_len} bytes in a file of {size}")
            header = json.loads(f.read(header_len))
            header.pop("__metadata__", None)
            data_start = 8 + header_len
            end = max((info["data_offsets"][1] for info in header.values()), default=0)
            if data_start + end > size:
                raise ValueError(f"tensors need {data_start + end} bytes, the file has {size}")
            unknown = {info["dtype"] for info in header.values()} - set(_SAFETENSORS_DTYPES)
            if unknown:
                raise ValueError(f"unsupported tensor dtype(s) {sorted(unknown)}")
        except (ValueError, KeyError, TypeError, IndexError) as err:
            raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            begin, stop = info["data_offsets"]
            raw = torch.empty(stop - begin, dtype=torch.uint8)
            f.seek(data_start + begin)
            f.readinto(memoryview(raw.numpy()))
            tensor = _convert(raw.view(_SAFETENSORS_DTYPES[info["dtype"]]).reshape(info["shape"]), dtype).to(device)
            del raw  # free the file-dtype copy before the next tensor is read
            yield name, tensor


def _convert(tensor: torch.Tensor, dtype: torch.dtype | None) -> torch.Tensor:
    return tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor


def _model_key(name: str, model: torch.nn.Module) -> str | None:
    """Map a checkpoint key to this model's key (None: skip it)."""
    if LEGACY_KEYS.search(name):
        return None
    name = re.sub(r"^lm_head\.", "embed_out.", name)  # transformers 5.x's name for the unembedding
    prefix = model.base_model_prefix + "."
    is_base = model.base_model is model
    if is_base:
        if name.startswith(prefix):
            return name[len(prefix):]
        return name if "." in name and not name.startswith(("embed_out.", "score.", "classifier.", "qa_outputs.")) else None
    if not name.startswith(prefix) and not name.split(".")[0] in ("embed_out", "score", "classifier", "qa_outputs"):
        return prefix + name  # a base-model checkpoint loaded under a head
    return name


def load_pretrained(cls, name_or_path, revision=None, dtype=None, device=None, attn_implementation=None, config=None):
    """Build `cls` from a checkpoint; see `GPTNeoXPreTrainedModel.from_pretrained`."""
    directory = resolve_model_dir(name_or_path, revision=revision)
    config = config or GPTNeoXConfig.from_json_file(directory)
    if attn_implementation is not None:
        config.attn_implementation = attn_implementation
        config.validate()
    target_dtype = parse_dtype(dtype)
    device = torch.device(device) if device is not None else torch.device("cpu")
    if config.attn_implementation == "flash_attention_2":
        from .attention import require_flash_attention

        require_flash_attention(device, target_dtype)
    files = weight_files(directory)

    with torch.device("meta"), _skip_weight_init():
        model = cls(config)
    expected = model.state_dict()
    tied = {"embed_out.weight"} if config.tie_word_embeddings and hasattr(model, "embed_out") else set()
    loaded: dict[str, torch.Tensor] = {}
    unexpected, mismatched = [], []
    for name, tensor in iter_tensors(files, device, target_dtype):
        key = _model_key(name, model)
        if key is None:
            continue
        if key not in expected:
            if not (key == "embed_out.weight" and not hasattr(model, "embed_out")):  # LM head under another head
                unexpected.append(name)
            continue
        if tuple(tensor.shape) != tuple(expected[key].shape):
            mismatched.append(f"{name}: expected {tuple(expected[key].shape)}, found {tuple(tensor.shape)}")
            continue
        loaded[key] = tensor
    missing = [k for k in expected if k not in loaded and k not in tied]
    fresh = [k for k in missing if k.split(".")[0] in cls.head_modules]
    missing = [k for k in missing if k not in fresh]
    if missing or unexpected or mismatched:
        lines = [f"checkpoint {directory} does not fit {cls.__name__} built from its config.json:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointMismatchError("\n".join(lines))

    model.load_state_dict(loaded, strict=False, assign=True)
    if fresh:  # e.g. a classification head on top of a language-model checkpoint
        warnings.warn(f"{cls.__name__}: newly initialised (not in the checkpoint): {', '.join(fresh)}", stacklevel=3)
        like = next(iter(loaded.values()))
        for name in {k.split(".")[0] for k in fresh}:
            module = getattr(model, name).to_empty(device=device)
            module.to(like.dtype if target_dtype is None else target_dtype)
            module.apply(model._init_weights)
    model.tie_weights()
    model.eval()
    return attach_tokenizer(model, directory, name_or_path)


def attach_tokenizer(model, directory: Path, name_or_path) -> torch.nn.Module:
    """Set `model.tokenizer` from the checkpoint's tokenizer.json (if any) and remember where it came from."""
    if (directory / "tokenizer.json").is_file():
        from .tokenizer import Tokenizer

        model.tokenizer = Tokenizer.from_pretrained(directory)
    model.name_or_path = os.fspath(name_or_path)
    return model


@contextlib.contextmanager
def _skip_weight_init():
    """Build a model without initialising its weights: the checkpoint overwrites them all, and on the meta
    device the init functions only cost time (their first call pulls in torch's decomposition machinery)."""
    names = ("normal_", "uniform_", "kaiming_uniform_", "zeros_", "ones_", "trunc_normal_")
    saved = {name: getattr(torch.nn.init, name) for name in names}
    for name in names:
        setattr(torch.nn.init, name, lambda tensor, *args, **kwargs: tensor)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(torch.nn.init, name, fn)


def parse_size(size: int | str) -> int:
    """Bytes from an int or a string such as "5GB", "500MB", "10KiB"."""
    if isinstance(size, int):
        return size
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?i?B)\s*", str(size), re.IGNORECASE)
    if not match:
        raise ValueError(f"max_shard_size {size!r} is not a size such as 5GB, 500MB or an int of bytes")
    number, unit = float(match.group(1)), match.group(2).upper()
    base = 1024 if "I" in unit else 1000
    return int(number * base ** "BKMGT".index(unit[0]))


def save_pretrained(model, directory: str | os.PathLike, max_shard_size: int | str = "5GB") -> None:
    """Write config.json + safetensors (sharded with an index above `max_shard_size`) + the tokenizer, atomically:
    the directory holds the complete old checkpoint or the complete new one at every instant (`workbench.atomic`),
    other files in it are kept."""
    from safetensors.torch import save_file

    limit = parse_size(max_shard_size)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    if model.config.tie_word_embeddings:
        state.pop("embed_out.weight", None)  # stored once, as the embedding
    shards: list[dict[str, torch.Tensor]] = [{}]
    size = 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > limit:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    # Old weights of any layout are replaced, not kept: a stale shard would be loaded alongside the new ones.
    superseded = ("model*.safetensors", SAFE_INDEX, "pytorch_model*.bin", BIN_INDEX)
    with atomic_directory(directory, superseded) as tmp:
        metadata = {"format": "pt"}
        if len(shards) == 1:
            save_file(shards[0], tmp / "model.safetensors", metadata=metadata)
        else:
            weight_map = {}
            for i, shard in enumerate(shards, start=1):
                filename = f"model-{i:05d}-of-{len(shards):05d}.safetensors"
                save_file(shard, tmp / filename, metadata=metadata)
                weight_map.update({name: filename for name in shard})
            total = sum(t.numel() * t.element_size() for t in state.values())
            index = {"metadata": {"total_size": total}, "weight_map": weight_map}
            (tmp / SAFE_INDEX).write_text(json.dumps(index, indent=2, sort_keys=True) + "\n")
        config = model.config.to_dict()
        config["architectures"] = [type(model).__name__]
        config["torch_dtype"] = str(model.dtype).removeprefix("torch.")
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
        if getattr(model, "tokenizer", None) is not None:
            model.tokenizer.save_pretrained(tmp)
