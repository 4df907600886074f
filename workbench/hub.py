"""Resolve a model name to a local directory: a local path, the embedded demo, or a Hugging Face Hub id.

Hub ids go through huggingface_hub and its cache, so `HF_HUB_OFFLINE=1` resolves from the cache
alone and a revision (`"step3000"`) picks a Pythia training checkpoint.
"""

from __future__ import annotations

import os
from pathlib import Path

# Files a GPT-NeoX checkpoint directory may need; weights are chosen after listing what exists.
CHECKPOINT_PATTERNS = [
    "config.json",
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "*.safetensors",
    "model.safetensors.index.json",
]
BIN_PATTERNS = ["pytorch_model*.bin", "pytorch_model.bin.index.json"]


# A hub that accepts connections but never answers would otherwise hang huggingface_hub for minutes.
HUB_PROBE_TIMEOUT_S = 5.0


class HubUnavailableError(OSError):
    """The Hugging Face Hub could not be reached and the files are not in the local cache."""


def demo_path() -> Path:
    """Directory of the project's embedded demo checkpoint (config.json, model.safetensors, tokenizer.json)."""
    return Path(__file__).resolve().parent / "demo"


def resolve_model_dir(name_or_path: str | os.PathLike, revision: str | None = None, allow_bin: bool = True) -> Path:
    """Return a local directory holding the checkpoint `name_or_path`.

    Args:
        name_or_path: `"demo"`, a local directory, or a hub id such as `"EleutherAI/pythia-160m"`.
        revision: hub branch, tag or commit (Pythia checkpoints: `"step3000"`); ignored for local paths.
        allow_bin: also fetch `pytorch_model*.bin` when the repository has no safetensors.

    Returns:
        Path to a directory (for hub ids, a snapshot inside the huggingface_hub cache).

    Raises:
        HubUnavailableError: the hub can't be reached and nothing is cached; the message suggests a local path.
        FileNotFoundError: a local-looking path that does not exist.
    """
    name = os.fspath(name_or_path)
    if name == "demo":
        path = demo_path()
        if not (path / "config.json").is_file():
            raise FileNotFoundError(f"the embedded demo model is missing from {path}; reinstall neox-workbench")
        return path
    path = Path(name).expanduser()
    if path.is_dir():
        return path
    if path.exists():
        return path.parent  # a file inside a checkpoint directory (e.g. config.json)
    if name.startswith((".", "/", "~")) or name.count("/") != 1:
        raise FileNotFoundError(
            f"no checkpoint directory at {name!r}; pass an existing directory, 'demo', or a hub id 'org/name'"
        )
    return _snapshot(name, revision, allow_bin)


def hub_reachable(timeout: float | None = None) -> bool:
    """Whether the hub endpoint (`HF_ENDPOINT`) answers an HTTP request within `timeout` seconds.

    Any HTTP status counts as an answer; a refused, failed or silent connection does not. The request goes
    through huggingface_hub's own session, so its proxy and header settings apply. `timeout` defaults to
    `HUB_PROBE_TIMEOUT_S`.
    """
    from huggingface_hub import constants, get_session

    try:
        get_session().head(constants.ENDPOINT, timeout=HUB_PROBE_TIMEOUT_S if timeout is None else timeout)
    except Exception:  # httpx's connect/read/timeout errors and OSError alike: no answer
        return False
    return True


def _snapshot(repo_id: str, revision: str | None, allow_bin: bool) -> Path:
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    # Unreachable hub: resolve from the cache alone (as HF_HUB_OFFLINE=1 would) instead of waiting on retries.
    offline = constants.HF_HUB_OFFLINE or not hub_reachable()
    try:
        folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=CHECKPOINT_PATTERNS,
                                        local_files_only=offline))  # fmt: skip
        has_safetensors = any(folder.glob("*.safetensors"))
        if allow_bin and not has_safetensors:
            folder = Path(snapshot_download(repo_id, revision=revision, local_files_only=offline,
                                            allow_patterns=CHECKPOINT_PATTERNS + BIN_PATTERNS))  # fmt: skip
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"{repo_id!r} is neither a local directory nor a hub repository: {err}") from err
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        where = f"{repo_id}" + (f" at revision {revision!r}" if revision else "")
        why = f"the hub at {constants.ENDPOINT} did not answer within {HUB_PROBE_TIMEOUT_S:g} s and " if (
            offline and not constants.HF_HUB_OFFLINE) else ""
        raise HubUnavailableError(
            f"could not fetch {where} from the Hugging Face Hub: {why}it is not in the local cache "
            f"({type(err).__name__}: {err}). Download it elsewhere and pass the local directory instead, "
            f"e.g. workbench.load('/path/to/{repo_id.split('/')[-1]}')"
        ) from err
    return folder


def resolve_file(name_or_path: str | os.PathLike, filename: str, revision: str | None = None) -> Path:
    """Path of one file (e.g. `tokenizer.json`) of a checkpoint; a path to the file itself is accepted too."""
    path = Path(os.fspath(name_or_path)).expanduser()
    if path.is_file():
        return path
    folder = resolve_model_dir(name_or_path, revision=revision, allow_bin=False)
    file = folder / filename
    if not file.is_file():
        raise FileNotFoundError(f"{filename} not found in {folder}")
    return file
