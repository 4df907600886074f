"""A run directory on disk: its recipe, its log, its resumable checkpoint and its final HF export.

    run.json          the full recipe (model config, optimisation, data, mix), fixed at the first start
    tokenizer/        tokenizer.json + tokenizer_config.json, trained at the first start
    log.csv           one row per step (LOG_COLUMNS)
    checkpoint.pt     latest state: model, optimizer, scheduler, RNG, data position (written atomically)
    revisions/stepN/  snapshots at the recipe's `revision_steps` (config.json + model.safetensors), loadable as
                      `workbench.load(run_dir, revision="stepN")`
    final/            HF-format directory (config.json, model.safetensors, tokenizer files) at the end
"""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import random
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator

import torch
from tokenizers import Tokenizer

from ..data import MixConfig, save_tokenizer
from ..hub import REFS_FILE, REVISIONS_DIR  # one name for the layout, shared with the loader
from .recipes import DataConfig, TrainConfig

RUN_CONFIG, TOKENIZER_DIR, LOG, CHECKPOINT, FINAL_DIR = "run.json", "tokenizer", "log.csv", "checkpoint.pt", "final"
PROVENANCE_FILE = "provenance.json"
LOG_COLUMNS = [
    "step", "tokens", "lr", "loss", "grad_norm", "tokens_per_s", "elapsed_s",
    "val_loss", "val_bits_per_byte", "induction_max", "induction_head", "copy_loss_ratio",
]  # fmt: skip


@dataclass
class TrainState:
    """Everything a step changes; with the RNG state, what `checkpoint.pt` holds."""

    model: torch.nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    step: int = 0  # steps completed
    tokens: int = 0  # tokens trained on
    elapsed_s: float = 0.0  # step time, summed over all starts


def atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


# ---- recipe ----------------------------------------------------------------------------------------------


def run_config(model_config: dict, train_cfg: TrainConfig, data_cfg: DataConfig) -> dict:
    """The JSON-able recipe written to `run.json`."""
    return {
        "model": dict(model_config),
        "train": dataclasses.asdict(train_cfg),
        "data": {"source": data_cfg.source, "tokenizer_vocab_size": data_cfg.tokenizer_vocab_size,
                 "mix": data_cfg.mix.to_dict(),
                 "mix_schedule": [[step, mix.to_dict()] for step, mix in data_cfg.mix_schedule]},
    }  # fmt: skip


def load_run_config(run_dir: str | os.PathLike) -> tuple[dict, TrainConfig, DataConfig]:
    """Read `run.json` of a run directory back into (model config dict, TrainConfig, DataConfig).

    Raises:
        FileNotFoundError: `run_dir` has no `run.json`.
    """
    path = Path(run_dir) / RUN_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist: {run_dir} is not a training run directory")
    raw = json.loads(path.read_text())
    data = raw["data"]
    return (
        raw["model"],
        TrainConfig(**raw["train"]),
        DataConfig(data["source"], data["tokenizer_vocab_size"], MixConfig(**data["mix"]),
                   [(step, MixConfig(**mix)) for step, mix in data.get("mix_schedule", [])]),
    )


def start_run_dir(
    out: Path, model_config: dict, train_cfg: TrainConfig, data_cfg: DataConfig, tok: Tokenizer, model_max_length: int
) -> None:
    """Create the run directory, write `run.json`, and save the tokenizer unless an earlier start did."""
    out.mkdir(parents=True, exist_ok=True)
    (out / RUN_CONFIG).write_text(json.dumps(run_config(model_config, train_cfg, data_cfg), indent=2) + "\n")
    if not (out / TOKENIZER_DIR / "tokenizer.json").is_file():
        save_tokenizer(tok, out / TOKENIZER_DIR, model_max_length)


# ---- log -------------------------------------------------------------------------------------------------


def read_log_rows(path: Path, upto_step: int | None = None) -> list[dict[str, str]]:
    """Rows of a `log.csv` as written (strings; "" where not evaluated), up to `upto_step`; [] if absent."""
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if upto_step is None or int(r["step"]) <= upto_step]


def truncate_log(path: Path, step: int) -> list[dict[str, str]]:
    """Drop the rows after `step` (the checkpoint's: later steps are recomputed) and return the rest."""
    rows = read_log_rows(path, step)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)
    return rows


@contextmanager
def log_appender(path: Path) -> Iterator[Callable[[dict[str, Any]], None]]:
    """A function that appends one row to `log.csv` and flushes it (a crash loses no finished step)."""
    with path.open("a", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)

        def append(row: dict[str, Any]) -> None:
            writer.writerow(row)
            f.flush()

        yield append


# ---- checkpoint ------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, state: TrainState, cfg: TrainConfig) -> None:
    """Write `checkpoint.pt` atomically: model, optimizer, scheduler, RNG, and where the data stream is."""
    atomic_save(
        {
            "step": state.step, "tokens": state.tokens, "elapsed_s": state.elapsed_s,
            "model": state.model.state_dict(), "optimizer": state.optimizer.state_dict(),
            "scheduler": state.scheduler.state_dict(),
            "rng": {"torch": torch.get_rng_state(), "python": _to_list(random.getstate())},
            "data_position": {"seed": cfg.seed, "next_step": state.step, "rows_seen": state.step * cfg.batch_size},
        },
        path,
    )  # fmt: skip


def resume(path: Path, state: TrainState, cfg: TrainConfig) -> bool:
    """Load `checkpoint.pt` into `state` (in place) if it exists; batches need only the step, as they are a
    pure function of (seed, step).

    The schedule's horizon stays the one of `cfg` (`steps` may have changed since the checkpoint).

    Returns:
        whether a checkpoint was loaded.

    Raises:
        ValueError: the checkpoint was written with another seed than `cfg.seed`.
    """
    if not path.is_file():
        return False
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    state.model.load_state_dict(ckpt["model"])
    state.optimizer.load_state_dict(ckpt["optimizer"])
    # LambdaLR.load_state_dict writes the saved schedule's attributes into the live one: keep the config's
    horizon = [dict(vars(fn)) for fn in state.scheduler.lr_lambdas]
    state.scheduler.load_state_dict(ckpt["scheduler"])
    for fn, attrs in zip(state.scheduler.lr_lambdas, horizon):
        vars(fn).update(attrs)
    torch.set_rng_state(ckpt["rng"]["torch"])
    random.setstate(_to_tuple(ckpt["rng"]["python"]))
    state.step, state.tokens, state.elapsed_s = ckpt["step"], ckpt["tokens"], ckpt["elapsed_s"]
    if ckpt["data_position"]["seed"] != cfg.seed:
        raise ValueError("checkpoint was written with another seed than run.json's")
    return True


def save_revision(model: torch.nn.Module, directory: Path, dtype: str, step: int, tokens: int) -> None:
    """A training-checkpoint snapshot: weights stored in `dtype` (exactly upcast on load: config.json says
    float32), step and tokens seen in the safetensors metadata. Written atomically."""
    from safetensors.torch import save_file

    from ..checkpoint import DTYPES
    from ..atomic import atomic_directory

    store = DTYPES[dtype]
    state = {k: v.detach().to(store).contiguous() for k, v in model.state_dict().items()}
    config = model.config.to_dict()
    config.update(architectures=[type(model).__name__], torch_dtype="float32")
    with atomic_directory(directory) as tmp:
        save_file(state, tmp / "model.safetensors", metadata={"format": "pt", "step": str(step), "tokens": str(tokens)})
        (tmp / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def numerics_provenance() -> dict[str, Any]:
    """What float32 training results depend on beyond the recipe: torch, the CPU and its kernels, the threads.

    Bit-identical re-runs are promised on a machine where all of these match; another CPU type can round
    differently (e.g. other MKL kernels) and the runs drift apart from the first steps on."""
    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "unknown") if Path("/proc/cpuinfo").is_file() else "unknown"  # fmt: skip
    return {"torch": torch.__version__, "cpu": model, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
            "threads": torch.get_num_threads()}  # fmt: skip


def write_provenance(revisions_dir: Path) -> None:
    """Record `numerics_provenance()` beside a run's snapshots (`provenance.json`)."""
    revisions_dir.mkdir(parents=True, exist_ok=True)
    tmp = revisions_dir / (PROVENANCE_FILE + ".tmp")
    tmp.write_text(json.dumps(numerics_provenance(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, revisions_dir / PROVENANCE_FILE)


def write_revision_refs(revisions_dir: Path, refs: dict[str, str]) -> None:
    """Write `refs.json` (alias -> snapshot name or "main"), read by `workbench.hub.local_revisions`."""
    revisions_dir.mkdir(parents=True, exist_ok=True)
    tmp = revisions_dir / (REFS_FILE + ".tmp")
    tmp.write_text(json.dumps(refs, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, revisions_dir / REFS_FILE)


def save_final(model: torch.nn.Module, tok: Tokenizer, directory: Path, model_max_length: int) -> None:
    """HF-format directory: `model.save_pretrained` plus the tokenizer files."""
    model.save_pretrained(directory)
    save_tokenizer(tok, directory, model_max_length)


def _to_list(x: Any) -> Any:
    """Python RNG state as nested lists (torch.load(weights_only=True) accepts them)."""
    return [_to_list(v) for v in x] if isinstance(x, tuple) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x
