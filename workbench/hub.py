"""Resolve a model name to a local directory: a local path, the embedded demo, or a Hugging Face Hub id.

Hub ids go through huggingface_hub and its cache, so `HF_HUB_OFFLINE=1` resolves from the cache
alone and a revision (`"step3000"`) picks a Pythia training checkpoint.
"""

from __future__ import annotations

import json
import os
import re
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
# A local checkpoint's training snapshots (the demo's, a training run's): revisions/stepN/{config.json,
# model.safetensors}, named as Pythia's hub branches; refs.json maps other names to them ("step5000": "main").
REVISIONS_DIR, REFS_FILE = "revisions", "refs.json"


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
        return _local_revision(path, revision)
    path = Path(name).expanduser()
    if path.is_dir():
        return _local_revision(path, revision)
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


def local_revisions(root: str | os.PathLike) -> dict[str, Path]:
    """The revisions of a local checkpoint directory, `{name: directory}` in training order.

    "main" is the directory itself (or a training run's `final/`); `revisions/stepN/` are its training
    snapshots; `revisions/refs.json` adds aliases (e.g. the final step's name for "main").
    """
    root = Path(root)
    main = _main_dir(root)
    found = {p.name: p for p in (root / REVISIONS_DIR).glob("*") if (p / "config.json").is_file()}
    refs = root / REVISIONS_DIR / REFS_FILE
    if refs.is_file():
        found.update({alias: main if target == "main" else found[target]
                      for alias, target in json.loads(refs.read_text()).items() if target == "main" or target in found})
    ordered = dict(sorted(found.items(), key=lambda item: revision_sort_key(item[0])))
    return {**ordered, "main": main}


def _main_dir(root: Path) -> Path:
    """A local checkpoint's main weights: the directory, or a training run directory's `final/`."""
    final = root / "final"
    return final if not (root / "config.json").is_file() and (final / "config.json").is_file() else root


def revision_sort_key(name: str) -> tuple[int, int | str]:
    """Sort key putting `stepN` names in step order, before any other name (e.g. "main")."""
    match = re.fullmatch(r"step(\d+)", name)
    return (0, int(match.group(1))) if match else (1, name)


def revision_step(name: str) -> int | None:
    """N of a Pythia-style revision name `stepN`; None for any other name."""
    match = re.fullmatch(r"step(\d+)", name)
    return int(match.group(1)) if match else None


def _local_revision(root: Path, revision: str | None) -> Path:
    """The directory of `revision` of a local checkpoint (None: main).

    Raises:
        ValueError: the checkpoint has no such revision; the message lists the ones it has.
    """
    if revision is None:
        return _main_dir(root)
    revisions = local_revisions(root)
    if revision not in revisions:
        raise ValueError(f"{root} has no revision {revision!r}; valid revisions: {', '.join(revisions)}")
    return revisions[revision]


def tokenizer_dir(directory: str | os.PathLike) -> Path:
    """Where a checkpoint directory's tokenizer files are: the directory itself, or for a training snapshot
    (`<root>/revisions/stepN`) its checkpoint's (`<root>`, or `<root>/tokenizer` for a training run)."""
    directory = Path(directory)
    if (directory / "tokenizer.json").is_file() or directory.parent.name != REVISIONS_DIR:
        return directory
    root = directory.parent.parent
    return root / "tokenizer" if (root / "tokenizer" / "tokenizer.json").is_file() else root


def list_revisions(name_or_path: str | os.PathLike) -> list[str]:
    """The revisions of a model, in training order (`stepN` by N, then other names such as "main").

    Args:
        name_or_path: "demo", a local checkpoint directory (its `revisions/`), or a hub id, whose branches are
            listed by huggingface_hub's `list_repo_refs`, or, offline, read from the local cache's refs.

    Raises:
        HubUnavailableError: a hub id, the hub unreachable and no cached revision of it.
    """
    name = os.fspath(name_or_path)
    local = demo_path() if name == "demo" else Path(name).expanduser()
    if name == "demo" or local.is_dir():
        if not (_main_dir(local) / "config.json").is_file():
            raise FileNotFoundError(f"{local} is not a checkpoint directory (no config.json, nor final/config.json)")
        return list(local_revisions(local))
    from huggingface_hub import constants, list_repo_refs, scan_cache_dir

    if not constants.HF_HUB_OFFLINE and hub_reachable():
        return sorted((b.name for b in list_repo_refs(name).branches), key=revision_sort_key)
    cached = [repo for repo in scan_cache_dir().repos if repo.repo_id == name and repo.repo_type == "model"] \
        if Path(constants.HF_HUB_CACHE).is_dir() else []  # fmt: skip
    refs = {ref for repo in cached for rev in repo.revisions for ref in rev.refs}
    if not refs:
        raise HubUnavailableError(f"cannot list the revisions of {name!r}: the hub is unreachable and the local "
                                  f"cache ({constants.HF_HUB_CACHE}) holds no revision of it")  # fmt: skip
    return sorted(refs, key=revision_sort_key)


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
    if not file.is_file():  # a training snapshot shares its checkpoint's tokenizer files
        file = tokenizer_dir(folder) / filename
    if not file.is_file():
        raise FileNotFoundError(f"{filename} not found in {folder}")
    return file
