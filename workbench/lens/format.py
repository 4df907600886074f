"""The tuned-lens package's on-disk format: a directory with `config.json` and `params.pt`.

`config.json` holds `TunedLensConfig` (`base_model_name_or_path`, `d_model`, `num_hidden_layers`, `bias`,
`base_model_revision`, `unembed_hash`, `lens_type`); `params.pt` is `torch.save` of the translators'
`ModuleList.state_dict()` (`"0.weight"`, `"0.bias"`, ...). A directory written here loads with
`tuned_lens.TunedLens.from_model_and_pretrained(model, path)` and the other way round.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from workbench.atomic import atomic_directory

CONFIG_FILE, PARAMS_FILE = "config.json", "params.pt"
LENS_TYPE = "linear_tuned_lens"
# field -> (allowed types, required): TunedLensConfig's fields
FIELDS: dict[str, tuple[tuple[type, ...], bool]] = {
    "base_model_name_or_path": ((str,), True),
    "d_model": ((int,), True),
    "num_hidden_layers": ((int,), True),
    "bias": ((bool,), False),
    "base_model_revision": ((str, type(None)), False),
    "unembed_hash": ((str, type(None)), False),
    "lens_type": ((str,), False),
}


def demo_lens_path() -> Path:
    """Directory of the tuned lens shipped for the demo model."""
    return Path(__file__).resolve().parent / "demo"


def unembed_hash(model: Any) -> str:
    """The tuned-lens package's fingerprint of the unembedding (`tuned_lens.utils.tensor_hash` of `W_U`), which
    it stores so that a lens loaded onto another model warns."""
    weight = model.embed_out.weight.detach().cpu().float().numpy()
    return hashlib.sha256(str.encode(np.array_str(weight, precision=1))).hexdigest()


def save(lens: Any, path: str | os.PathLike, base_model_name_or_path: str | None = None) -> Path:
    """Write a TunedLens atomically (`workbench.atomic`); other files in the directory (a card) are kept.

    Args:
        lens: a `workbench.lens.TunedLens`.
        path: the directory.
        base_model_name_or_path: recorded in config.json (default: the model's `name_or_path`).

    Returns:
        The directory.
    """
    name = base_model_name_or_path or str(getattr(lens.model, "name_or_path", "") or "")
    config = {
        "base_model_name_or_path": name, "d_model": lens.d_model, "num_hidden_layers": lens.num_layers,
        "bias": lens.bias, "base_model_revision": None, "unembed_hash": unembed_hash(lens.model), "lens_type": LENS_TYPE,
    }  # fmt: skip
    state = {k: v.detach().cpu().contiguous() for k, v in lens.translators.state_dict().items()}
    buffer = io.BytesIO()
    torch.save(state, buffer)
    path = Path(path)
    with atomic_directory(path) as tmp:
        (tmp / PARAMS_FILE).write_bytes(buffer.getvalue())
        (tmp / CONFIG_FILE).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    return path


def read_config(directory: Path) -> dict[str, Any]:
    """config.json checked field by field; unknown keys are ignored with a warning, as the package does.

    Raises:
        FileNotFoundError: no config.json. ValueError: invalid JSON, a missing or ill-typed field, or a lens type
            other than `linear_tuned_lens` (each naming the file and field).
    """
    file = directory / CONFIG_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: a tuned lens directory holds {CONFIG_FILE} and {PARAMS_FILE}")
    try:
        config = json.loads(file.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ValueError(f"{file} is not valid JSON: {err}") from err
    if not isinstance(config, dict):
        raise ValueError(f"{file} must hold a JSON object, got {type(config).__name__}")
    problems = []
    for field, (types, required) in FIELDS.items():
        if field not in config:
            if required:
                problems.append(f"{field}: missing (required)")
            continue
        value = config[field]
        ok = isinstance(value, types) and not (bool not in types and isinstance(value, bool))
        if not ok:
            allowed = " or ".join("null" if t is type(None) else t.__name__ for t in types)
            problems.append(f"{field}: {value!r} is not {allowed}")
    if config.get("lens_type", LENS_TYPE) != LENS_TYPE:
        problems.append(f"lens_type: {config['lens_type']!r} is not supported; allowed: {LENS_TYPE!r}")
    if problems:
        raise ValueError(f"{file}: invalid tuned-lens config:\n  " + "\n  ".join(problems))
    unknown = sorted(set(config) - set(FIELDS))
    if unknown:
        warnings.warn(f"{file}: ignoring unknown config keys {unknown}", stacklevel=3)
    return config


def read_translators(directory: Path, config: dict[str, Any]) -> torch.nn.ModuleList:
    """params.pt (loaded with `weights_only=True`) as `num_hidden_layers` `Linear(d_model, d_model)` modules.

    Raises:
        FileNotFoundError: no params.pt. ValueError: unreadable, or keys / shapes that do not match config.json.
    """
    file = directory / PARAMS_FILE
    if not file.is_file():
        raise FileNotFoundError(f"{file} does not exist: a tuned lens directory holds {CONFIG_FILE} and {PARAMS_FILE}")
    try:
        state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises pickle, zip and runtime errors alike
        raise ValueError(f"{file} is not a readable tuned-lens state dict: {err}") from err
    d, n, bias = config["d_model"], config["num_hidden_layers"], config.get("bias", True)
    names = ("weight", "bias") if bias else ("weight",)
    expected = {f"{i}.{p}": (d,) if p == "bias" else (d, d) for i in range(n) for p in names}
    if not isinstance(state, dict):
        raise ValueError(f"{file} must hold a state dict, got {type(state).__name__}")
    missing, extra = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    shapes = [f"{k}: {tuple(state[k].shape)} (expected {expected[k]})" for k in expected
              if k in state and (not torch.is_tensor(state[k]) or tuple(state[k].shape) != expected[k])]
    if missing or extra or shapes:
        raise ValueError(f"{file} does not match {CONFIG_FILE} (d_model={d}, num_hidden_layers={n}, bias={bias}): "
                         f"missing {missing}, unexpected {extra}, wrong shapes {shapes}")
    dtype = state["0.weight"].dtype if n else torch.float32
    translators = torch.nn.ModuleList([torch.nn.Linear(d, d, bias=bias, dtype=dtype) for _ in range(n)])
    translators.load_state_dict(state)
    return translators


def check_model(directory: Path, config: dict[str, Any], model: Any) -> None:
    """The lens fits `model` (d_model, layers: ValueError naming the field); a different unembedding warns."""
    ours = {"d_model": int(model.config.hidden_size), "num_hidden_layers": int(model.config.num_hidden_layers)}
    bad = [f"{k}={config[k]} (the model has {v})" for k, v in ours.items() if config[k] != v]
    if bad:
        raise ValueError(f"{directory / CONFIG_FILE} does not fit the model: " + ", ".join(bad))
    if config.get("unembed_hash") and config["unembed_hash"] != unembed_hash(model):
        warnings.warn(f"{directory / CONFIG_FILE}: unembed_hash differs from the model's unembedding; the lens "
                      "may have been trained on another model", stacklevel=3)


def load(name_or_path: str | os.PathLike = "demo", model: Any = None) -> Any:
    """Load a tuned lens written by the tuned-lens package or by `save`.

    Args:
        name_or_path: `"demo"` (the lens shipped for `workbench.load("demo")`) or a directory with config.json
            and params.pt.
        model: the workbench model it reads; default `workbench.load(config["base_model_name_or_path"])`
            (for `"demo"`, the demo model).

    Returns:
        A `workbench.lens.TunedLens` on `model`.

    Raises:
        FileNotFoundError: no such directory or a file missing from it. ValueError: as `read_config`,
            `read_translators`, `check_model`.
    """
    from .lenses import TunedLens

    directory = demo_lens_path() if os.fspath(name_or_path) == "demo" else Path(name_or_path).expanduser()
    if not directory.is_dir():
        raise FileNotFoundError(f"no tuned lens directory at {os.fspath(name_or_path)!r}: pass 'demo' or a directory "
                                f"holding {CONFIG_FILE} and {PARAMS_FILE} (the tuned-lens package's format)")
    config = read_config(directory)
    translators = read_translators(directory, config)
    if model is None:
        from workbench.loading import load as load_model

        if not config["base_model_name_or_path"]:
            raise ValueError(f"{directory / CONFIG_FILE}: base_model_name_or_path is empty; pass model=")
        model = load_model(config["base_model_name_or_path"])
    check_model(directory, config, model)
    return TunedLens(model, translators.to(model.embed_out.weight.dtype))
