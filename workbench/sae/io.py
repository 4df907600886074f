"""Load and save SAEs: SAELens's directory format and EleutherAI sparsify's, from disk or the hub's cache.

    SAELens    cfg.json + sae_weights.safetensors (+ sparsity.safetensors: log10 feature densities)
    sparsify   cfg.json + sae.safetensors (encoder.weight [d_sae, d_in], encoder.bias, W_dec, b_dec), one
               subfolder per hookpoint (`layers.6`), whose name gives the hook (`blocks.6.hook_resid_post`)

`save` writes SAELens's format (atomically), which `sae_lens.SAE.load_from_disk` reads (where sae-lens imports:
with transformer-lens < 4).
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save as safetensors_bytes

from ..atomic import atomic_directory
from ..hub import HUB_PROBE_TIMEOUT_S, HubUnavailableError, hub_reachable
from .config import SAEConfig, SAEConfigError, read_json, sparsify_hook_name
from .sae import SAE

CFG, SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, SPARSITY = "cfg.json", "sae_weights.safetensors", "sae.safetensors", \
    "sparsity.safetensors"
DEMO_NAME = "demo"


def demo_sae_path() -> Path:
    """Directory of the SAE shipped with the package (trained on the demo model; see its README.md)."""
    return Path(__file__).resolve().parent / "demo"


def detect_format(directory: str | os.PathLike) -> str:
    """"saelens" or "sparsify", from the files of an SAE directory.

    Raises:
        FileNotFoundError: no cfg.json, or neither weights file; the message lists SAE subfolders if any.
    """
    directory = Path(directory)
    if (directory / CFG).is_file():
        if (directory / SAELENS_WEIGHTS).is_file():
            return "saelens"
        if (directory / SPARSIFY_WEIGHTS).is_file():
            return "sparsify"
        raise FileNotFoundError(f"{directory} has {CFG} but neither {SAELENS_WEIGHTS} (SAELens) nor "
                                f"{SPARSIFY_WEIGHTS} (sparsify)")
    subfolders = sorted(p.name for p in directory.iterdir() if (p / CFG).is_file()) if directory.is_dir() else []
    hint = f"; it holds one SAE per subfolder, pick one with subfolder=: {subfolders}" if subfolders else ""
    raise FileNotFoundError(f"no SAE in {directory}: expected {CFG} with {SAELENS_WEIGHTS} or {SPARSIFY_WEIGHTS}"
                            + hint)


def load(name_or_path: str | os.PathLike = DEMO_NAME, subfolder: str | None = None, *, hook_name: str | None = None,
         revision: str | None = None, device: str | torch.device | None = None, dtype: torch.dtype | None = None
         ) -> SAE:
    """Load an SAE, detecting its format.

    Args:
        name_or_path: "demo" (the SAE shipped for the demo model), a local directory, or a hub repo id.
        subfolder: the SAE's folder inside the directory or repo (sparsify: one per hookpoint, e.g. "layers.6").
        hook_name: override the hook name (else SAELens's `hook_name`, or the sparsify folder's site).
        revision: hub revision.
        device, dtype: where and in which dtype to put the parameters (default: cpu, the cfg's dtype).

    Returns:
        The `SAE`; `sae.log_sparsity` holds `sparsity.safetensors` (log10 densities `[d_sae]`) or None.

    Raises:
        FileNotFoundError: nothing loadable there. HubUnavailableError: a hub id, unreachable and uncached.
        SAEConfigError: a malformed cfg.json or weights that do not match it (naming the file and field), or a
            sparsify folder whose name is no hookpoint (without hook_name=).
    """
    name = os.fspath(name_or_path)
    if name == DEMO_NAME:
        root = demo_sae_path()
    else:
        root = Path(name).expanduser()
        if not root.exists():
            if name.startswith((".", "/", "~")) or name.count("/") != 1:
                raise FileNotFoundError(f"no SAE directory at {name!r}; pass a directory, 'demo' or a hub id "
                                        "'org/name'")
            root = _hub_snapshot(name, subfolder, revision)
    if root.is_file():  # a file inside an SAE directory (e.g. its cfg.json)
        root = root.parent
    directory = root / subfolder if subfolder else root
    fmt = detect_format(directory)
    if fmt == "sparsify" and hook_name is None and sparsify_hook_name(directory.name) is None:
        raise SAEConfigError(f"{directory}: folder name {directory.name!r} is not a sparsify hookpoint (allowed: "
                             "layers.N, layers.N.mlp, layers.N.attention, embed_tokens); sparsify names the site by "
                             "the folder: rename it or pass hook_name=")
    if fmt == "saelens":
        cfg = SAEConfig.from_saelens_dict(read_json(directory / CFG), source=str(directory / CFG))
        weights = _read_weights(directory / SAELENS_WEIGHTS)
        if "log_threshold" in weights:  # older SAELens JumpReLU checkpoints (converted as SAELens does)
            weights["threshold"] = weights.pop("log_threshold").exp()
    else:
        site = sparsify_hook_name(directory.name)
        cfg = SAEConfig.from_sparsify_dict(read_json(directory / CFG), site, source=str(directory / CFG))
        weights = _from_sparsify(_read_weights(directory / SPARSIFY_WEIGHTS), cfg)
        # sparsify's cfg.json has no dtype: the weights' is the SAE's
        cfg = cfg.replace(dtype=str(weights["W_dec"].dtype).removeprefix("torch."))
    if hook_name is not None:
        cfg = cfg.replace(hook_name=hook_name)
    if dtype is not None:
        cfg = cfg.replace(dtype=str(dtype).removeprefix("torch."))
    sae = from_state_dict(cfg, weights, str(directory / (SAELENS_WEIGHTS if fmt == "saelens" else SPARSIFY_WEIGHTS)))
    sparsity = directory / SPARSITY
    sae.log_sparsity = _read_weights(sparsity).get("sparsity") if sparsity.is_file() else None
    return sae.to(device) if device is not None else sae


def from_state_dict(cfg: SAEConfig, weights: dict[str, torch.Tensor], source: str = "state dict") -> SAE:
    """An SAE with `weights` (SAELens's parameter names), checked against `cfg`.

    Raises:
        SAEConfigError: a missing or unexpected parameter, or a shape that contradicts cfg's d_in / d_sae.
    """
    sae = SAE(cfg)
    expected = {name: tuple(p.shape) for name, p in sae.named_parameters()}
    missing = [n for n in expected if n not in weights]
    if missing:
        raise SAEConfigError(f"{source}: missing {missing} for architecture {cfg.architecture!r} "
                             f"(field 'architecture' in {cfg.source or CFG}; it needs {list(expected)})")
    for name, shape in expected.items():
        got = tuple(weights[name].shape)
        if got != shape:
            dims = _DIMS.get(name, ("d_sae",))
            field = next((d for d, g, e in zip(dims, got, shape) if g != e), dims[0])
            raise SAEConfigError(f"{source}: {name} has shape {got} but {cfg.source or CFG} says "
                                 f"d_in={cfg.d_in}, d_sae={cfg.d_sae} (expected {shape}): field {field!r} mismatch")
    with torch.no_grad():
        for name, param in sae.named_parameters():
            param.copy_(weights[name].to(param.dtype))
    return sae


_DIMS = {"W_enc": ("d_in", "d_sae"), "W_dec": ("d_sae", "d_in"), "b_dec": ("d_in",)}  # the rest: [d_sae]


def save(sae: SAE, path: str | os.PathLike, log_sparsity: torch.Tensor | None = None) -> Path:
    """Write `sae` in SAELens's format (cfg.json, sae_weights.safetensors, optional sparsity.safetensors),
    replacing `path` atomically.

    Args:
        log_sparsity: log10 feature densities `[d_sae]` (default: `sae.log_sparsity` if set).

    Returns:
        The directory.
    """
    path = Path(path)
    log_sparsity = log_sparsity if log_sparsity is not None else sae.log_sparsity
    with atomic_directory(path, superseded=[SPARSITY]) as tmp:
        tensors = {name: p.detach().contiguous().cpu() for name, p in sae.named_parameters()}
        # written as bytes through open(), so the files get the umask's mode (0644) as cfg.json does:
        # safetensors' save_file creates them 0600, unreadable to colleagues on a shared machine
        (tmp / SAELENS_WEIGHTS).write_bytes(safetensors_bytes(tensors))
        if log_sparsity is not None:
            sparsity = {"sparsity": log_sparsity.detach().float().contiguous().cpu()}
            (tmp / SPARSITY).write_bytes(safetensors_bytes(sparsity))
        (tmp / CFG).write_text(json.dumps(sae.cfg.to_saelens_dict(), indent=2) + "\n", encoding="utf-8")
    return path


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    try:
        with safe_open(str(path), framework="pt", device="cpu") as f:
            return {key: f.get_tensor(key) for key in f.keys()}
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise SAEConfigError(f"{path}: not a readable safetensors file ({type(err).__name__}: {err})") from err


def _from_sparsify(weights: dict[str, torch.Tensor], cfg: SAEConfig) -> dict[str, torch.Tensor]:
    """sparsify's parameters -> SAELens's names (W_enc is the transposed encoder weight)."""
    src = cfg.source or CFG
    for key in ("encoder.weight", "W_dec"):
        if key not in weights:
            raise SAEConfigError(f"{src}: the sparsify weights lack {key!r} (found {sorted(weights)})")
    out = {"W_enc": weights["encoder.weight"].T.contiguous(), "W_dec": weights["W_dec"]}
    out["b_enc"] = weights.get("encoder.bias", torch.zeros(cfg.d_sae, dtype=out["W_dec"].dtype))
    out["b_dec"] = weights.get("b_dec", torch.zeros(cfg.d_in, dtype=out["W_dec"].dtype))
    return out


def _hub_snapshot(repo_id: str, subfolder: str | None, revision: str | None) -> Path:
    """A hub repo's SAE files through huggingface_hub's cache (offline or unreachable hub: the cache alone)."""
    from huggingface_hub import constants, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError

    offline = constants.HF_HUB_OFFLINE or not hub_reachable()
    prefix = f"{subfolder.strip('/')}/" if subfolder else ""
    patterns = [prefix + p for p in (CFG, SAELENS_WEIGHTS, SPARSIFY_WEIGHTS, SPARSITY)]
    try:
        return Path(snapshot_download(repo_id, revision=revision, allow_patterns=patterns, local_files_only=offline))
    except RepositoryNotFoundError as err:
        raise FileNotFoundError(f"{repo_id!r} is neither a local SAE directory nor a hub repository: {err}") from err
    except (LocalEntryNotFoundError, HfHubHTTPError, OSError) as err:
        why = f"the hub at {constants.ENDPOINT} did not answer within {HUB_PROBE_TIMEOUT_S:g} s and " if (
            offline and not constants.HF_HUB_OFFLINE) else ""
        raise HubUnavailableError(
            f"could not fetch the SAE {repo_id}{'/' + subfolder if subfolder else ''} from the Hugging Face Hub: "
            f"{why}it is not in the local cache ({type(err).__name__}: {err}). Download it elsewhere and pass "
            "the local directory instead") from err
