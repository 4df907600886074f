"""Checkpoint I/O in transformers' format: safetensors (single or sharded) and pytorch_model.bin.

Loading builds the model on the meta device and assigns each tensor, already in the target dtype and on the
target device, so no second full copy of the weights is ever made. Without a dtype asked for, every floating-point
tensor is cast to one dtype chosen as transformers' `dtype="auto"` does (see `default_dtype`). The files an index
names must lie inside the checkpoint directory; pytorch_model.bin is read with `weights_only=True`.

Safetensors weights bound for the CPU are read with plain reads into memory of transparent huge pages where the
kernel offers them (`workbench.huge_pages`: a decode step streams every weight, and 2 MB pages made batch-1
generation faster than the file's memory map, see the README); with `mmap=True`, or where huge pages aren't
available, the file is memory-mapped instead (instant, pages read on first use and shared between processes).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import warnings
import zipfile
from pathlib import Path, PurePath
from typing import Iterator

import torch

from . import huge_pages
from .atomic import atomic_directory
from .config import GPTNeoXConfig
from .hub import resolve_model_dir, tokenizer_dir

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
    """torch.dtype, a name such as "bf16", or None/"auto" (None: the checkpoint's dtype, see `default_dtype`)."""
    if dtype is None or dtype == "auto" or isinstance(dtype, torch.dtype):
        return None if dtype == "auto" else dtype
    if isinstance(dtype, str) and dtype.removeprefix("torch.") in DTYPES:
        return DTYPES[dtype.removeprefix("torch.")]
    raise ValueError(f"unknown dtype {dtype!r}; allowed: a torch.dtype, 'auto', or one of {', '.join(DTYPES)}")


def parse_device(device: torch.device | str | int | None) -> torch.device:
    """The device to load onto (None: the CPU), refused before any work when this machine lacks it.

    Raises:
        ValueError: not a device, or one torch can't reach here (e.g. "cuda" without a GPU, "mps" off a Mac).
    """
    try:
        parsed = torch.device("cpu" if device is None else device)
    except (RuntimeError, TypeError) as err:
        raise ValueError(f"device {device!r} is not usable here: {err}; use device='cpu'") from None
    backend = getattr(torch, parsed.type, None)
    if parsed.type in ("cpu", "meta") or not hasattr(backend, "is_available"):
        return parsed
    if not backend.is_available():
        raise ValueError(f"device {str(device)!r} is not available here: torch.{parsed.type}.is_available() is "
                         f"False; use device='cpu'")
    count = backend.device_count() if hasattr(backend, "device_count") else None
    if parsed.index is not None and count is not None and parsed.index >= count:
        raise ValueError(f"device {str(device)!r} is not available here: torch.{parsed.type}.device_count() is {count}")
    return parsed


def weight_files(directory: Path) -> list[Path]:
    """The weight files of a checkpoint directory, safetensors first."""
    for index in (SAFE_INDEX, BIN_INDEX):
        if (directory / index).is_file():
            return index_files(directory / index)
    for single in ("model.safetensors", "pytorch_model.bin"):
        if (directory / single).is_file():
            return [directory / single]
    raise FileNotFoundError(
        f"no weights in {directory}: expected model.safetensors, {SAFE_INDEX}, pytorch_model.bin or {BIN_INDEX}"
    )


def index_files(index: Path) -> list[Path]:
    """The weight files a sharded checkpoint's index names (its `weight_map` values), sorted.

    Raises:
        ValueError: the index is not a JSON object with a `weight_map` dict, or an entry names a file outside the
            index's directory (`../x`, an absolute path, a symlink leading out); the message names the entry.
        FileNotFoundError: an entry names a file that does not exist.
    """
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError(f"weight_map is a {type(weight_map).__name__}")
    except (ValueError, KeyError, TypeError) as err:
        raise ValueError(f"{index} is not a checkpoint index (a JSON object with a weight_map dict): {err}") from None
    return sorted({_shard_path(index.parent, filename, f"{index.name}: weight_map entry {name!r}: {filename!r}")
                   for name, filename in weight_map.items()})


def _shard_path(directory: Path, filename: object, entry: str) -> Path:
    """`directory / filename`, refused unless it is a file inside `directory` once symlinks are followed (a
    huggingface_hub snapshot's links into its repository's blobs/ count as inside)."""
    parts = PurePath(filename).parts if isinstance(filename, str) and filename else None
    if not parts or PurePath(filename).is_absolute() or ".." in parts:
        raise ValueError(f"{entry} is not a file name inside the checkpoint directory {directory}; "
                         f"shard names must be relative paths below it")
    path = directory / filename
    try:
        target, root = path.resolve(), directory.resolve()
    except (OSError, RuntimeError) as err:  # a symlink loop
        raise ValueError(f"{entry} can't be resolved: {err}") from None
    roots = [root, root.parent.parent / "blobs"] if root.parent.name == "snapshots" else [root]
    if not any(target.is_relative_to(r) for r in roots):
        raise ValueError(f"{entry} leads to {target}, outside the checkpoint directory {directory} (a symlink?); "
                         f"shards must lie inside it")
    if not path.is_file():
        raise FileNotFoundError(f"{entry}: no such file in {directory}")
    return path


def default_dtype(directory: Path, files: list[Path]) -> torch.dtype | None:
    """The dtype a checkpoint loads in when none is asked for, as transformers' `dtype="auto"`: config.json's
    `dtype` (or `torch_dtype`), else that of the first floating-point tensor of the first weight file (tensors in
    name order for safetensors, stored order for .bin); None when that file holds none.

    Raises:
        ValueError: config.json's dtype is not the name of a floating-point torch dtype.
    """
    path = directory / "config.json"
    raw = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    key = next((k for k in ("dtype", "torch_dtype") if isinstance(raw, dict) and raw.get(k) is not None), None)
    if key is None:
        return _first_float_dtype(files[0])
    name = raw[key]
    dtype = getattr(torch, name.removeprefix("torch."), None) if isinstance(name, str) else None
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise ValueError(f"{path}: {key} {name!r} is not a floating-point torch dtype; allowed: e.g. 'float32', "
                         f"'float16', 'bfloat16', or null")
    return dtype


def _first_float_dtype(path: Path) -> torch.dtype | None:
    """dtype of the first floating-point tensor of one weight file (as transformers' `get_state_dict_dtype`)."""
    if path.suffix == ".safetensors":
        dtypes = (_SAFETENSORS_DTYPES.get(info["dtype"]) for _, info in sorted(_safetensors_header(path)[0].items()))
    else:
        dtypes = (tensor.dtype for tensor in _load_bin(path, map_location="meta").values())
    return next((dtype for dtype in dtypes if dtype is not None and dtype.is_floating_point), None)


def iter_tensors(files: list[Path], device: torch.device, dtype: torch.dtype | None,
                 mmap: bool = True) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor) one at a time, each on `device`, floating-point ones converted to `dtype`; with
    `mmap=False`, CPU tensors of safetensors files are read into huge-page memory (`huge_pages.empty`)."""
    for path in files:
        if path.suffix != ".safetensors":
            state = _load_bin(path)
            for name in list(state):
                yield name, _convert(state.pop(name), dtype).to(device)
        elif _needs_conversion(path, dtype) or (device.type == "cpu" and not mmap):
            # Converting: read tensor by tensor. Through a memory map every converted tensor's source pages
            # would stay resident, holding the whole file beside the converted model (2x for fp32 -> bf16).
            yield from _read_safetensors(path, device, dtype)
        else:
            from safetensors import SafetensorError, safe_open

            try:
                with safe_open(path, framework="pt", device=str(device)) as f:
                    for name in f.keys():
                        yield name, f.get_tensor(name)
            except SafetensorError as err:
                raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None


def _load_bin(path: Path, map_location: str = "cpu") -> dict[str, torch.Tensor]:
    """The state dict in a pytorch_model.bin, read with `weights_only=True`: memory-mapped in the zip format,
    whole in the legacy one (`torch.save(..., _use_new_zipfile_serialization=False)`, which can't be mapped)."""
    try:
        state = torch.load(path, map_location=map_location, weights_only=True, mmap=zipfile.is_zipfile(path))
    except Exception as err:  # torch raises several types for a damaged pickle/zip
        raise ValueError(f"{path} is not a readable PyTorch checkpoint (truncated or corrupt?): {err}") from None
    if not isinstance(state, dict) or not all(isinstance(k, str) and torch.is_tensor(v) for k, v in state.items()):
        raise ValueError(f"{path} holds a {type(state).__name__} that is not a state dict (a dict of name -> tensor)")
    return state


_SAFETENSORS_DTYPES = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool,
}


def _safetensors_header(path: Path) -> tuple[dict[str, dict], int]:
    """A safetensors file's header ({name: {"dtype", "shape", "data_offsets"}}) and where its data starts.

    Raises:
        ValueError: the file is truncated or is no safetensors file.
    """
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            header_len = int.from_bytes(f.read(8), "little")
            if header_len > size - 8:
                raise ValueError(f"header of {header_len} bytes in a file of {size}")
            header = json.loads(f.read(header_len))
        header.pop("__metadata__", None)
        end = max((info["data_offsets"][1] for info in header.values()), default=0)
        if 8 + header_len + end > size:
            raise ValueError(f"tensors need {8 + header_len + end} bytes, the file has {size}")
        if not all(isinstance(info["dtype"], str) and isinstance(info["shape"], list) for info in header.values()):
            raise ValueError("a tensor's dtype or shape is malformed")
    except (ValueError, KeyError, TypeError, IndexError, AttributeError) as err:
        raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {err}") from None
    return header, 8 + header_len


def _needs_conversion(path: Path, dtype: torch.dtype | None) -> bool:
    """Whether a safetensors file holds a floating-point tensor (or one of a dtype we can't name) not in `dtype`."""
    stored = {_SAFETENSORS_DTYPES.get(info["dtype"]) for info in _safetensors_header(path)[0].values()}
    return dtype is not None and any(d is None or (d.is_floating_point and d != dtype) for d in stored)


def _read_safetensors(path: Path, device: torch.device, dtype: torch.dtype | None) -> Iterator[tuple[str, torch.Tensor]]:
    """Yield (name, tensor in `dtype` (None: the file's) on `device`) from a safetensors file with plain reads;
    only one tensor in the file's dtype is in memory at a time. CPU tensors land in `huge_pages.empty` memory."""
    header, data_start = _safetensors_header(path)
    unknown = {info["dtype"] for info in header.values()} - set(_SAFETENSORS_DTYPES)
    if unknown:
        raise ValueError(f"{path} holds tensors of dtype(s) {sorted(unknown)}, which this loader can't convert; "
                         f"supported: {', '.join(_SAFETENSORS_DTYPES)}")
    with open(path, "rb") as f:
        for name, info in sorted(header.items(), key=lambda item: item[1]["data_offsets"][0]):
            begin, stop = info["data_offsets"]
            stored, shape = _SAFETENSORS_DTYPES[info["dtype"]], info["shape"]
            target = dtype if dtype is not None and stored.is_floating_point else stored
            direct = device.type == "cpu" and target == stored  # read straight into the final tensor
            tensor = huge_pages.empty(shape, stored) if direct else torch.empty(shape, dtype=stored)
            f.seek(data_start + begin)
            if stop > begin and f.readinto(memoryview(tensor.view(-1).view(torch.uint8).numpy())) != stop - begin:
                raise ValueError(f"{path} is not a readable safetensors file (truncated or corrupt?): {name} is cut short")
            if not direct:
                out = huge_pages.empty(shape, target) if device.type == "cpu" else None
                tensor = out.copy_(tensor) if out is not None else tensor.to(device=device, dtype=target)
            yield name, tensor  # the file-dtype copy of a converted tensor is freed before the next one is read


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


def load_pretrained(cls, name_or_path, revision=None, dtype=None, device=None, attn_implementation=None, config=None,
                    mmap=None):
    """Build `cls` from a checkpoint; see `GPTNeoXPreTrainedModel.from_pretrained`."""
    device, target_dtype = parse_device(device), parse_dtype(dtype)  # refused before any work
    if mmap is not None and not isinstance(mmap, bool):
        raise ValueError(f"mmap must be True, False or None (read into huge pages where available), got {mmap!r}")
    if mmap is None:
        mmap = not huge_pages.available()
    directory = resolve_model_dir(name_or_path, revision=revision)
    config = config or GPTNeoXConfig.from_json_file(directory)
    if attn_implementation is not None:
        config.attn_implementation = attn_implementation
        config.validate()
    files = weight_files(directory)
    if target_dtype is None:
        target_dtype = default_dtype(directory, files)
    if config.attn_implementation == "flash_attention_2":
        from .attention import require_flash_attention

        require_flash_attention(device, target_dtype)

    with torch.device("meta"), _skip_weight_init():
        model = cls(config)
    loaded, fresh = _fit(model, iter_tensors(files, device, target_dtype, mmap), directory)
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


def _fit(model: torch.nn.Module, tensors: Iterator[tuple[str, torch.Tensor]],
         directory: Path) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Match a checkpoint's tensors to the (meta-device) model's keys.

    Returns:
        ({model key: tensor}, the head keys the checkpoint lacks, to be initialised fresh).

    Raises:
        CheckpointMismatchError: listing every missing key, unexpected key, shape mismatch and non-floating-point
            tensor for a floating-point weight (e.g. int32), each by name.
    """
    expected = model.state_dict()
    tied = {"embed_out.weight"} if model.config.tie_word_embeddings and hasattr(model, "embed_out") else set()
    loaded: dict[str, torch.Tensor] = {}
    unexpected, mismatched, wrong_dtype = [], [], []
    for name, tensor in tensors:
        key = _model_key(name, model)
        if key is None:
            continue
        if key not in expected:
            if not (key == "embed_out.weight" and not hasattr(model, "embed_out")):  # LM head under another head
                unexpected.append(name)
        elif tuple(tensor.shape) != tuple(expected[key].shape):
            mismatched.append(f"{name}: expected {tuple(expected[key].shape)}, found {tuple(tensor.shape)}")
        elif expected[key].is_floating_point() and not tensor.is_floating_point():
            wrong_dtype.append(f"{name}: {str(tensor.dtype).removeprefix('torch.')}, expected a floating-point "
                               f"dtype (float32, float16, bfloat16)")
        else:
            loaded[key] = tensor
    missing = [k for k in expected if k not in loaded and k not in tied]
    fresh = [k for k in missing if k.split(".")[0] in type(model).head_modules]
    missing = [k for k in missing if k not in fresh]
    if missing or unexpected or mismatched or wrong_dtype:
        lines = [f"checkpoint {directory} does not fit {type(model).__name__} built from its config.json:"]
        for title, items in (("missing keys", missing), ("unexpected keys", unexpected),
                             ("shape mismatches", mismatched), ("dtype mismatches", wrong_dtype)):
            if items:
                lines.append(f"  {title} ({len(items)}): " + "; ".join(items[:20]) + (" ..." if len(items) > 20 else ""))
        raise CheckpointMismatchError("\n".join(lines))
    return loaded, fresh


def attach_tokenizer(model, directory: Path, name_or_path) -> torch.nn.Module:
    """Set `model.tokenizer` from the checkpoint's tokenizer.json (if any) and remember where it came from."""
    directory = tokenizer_dir(directory)
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
