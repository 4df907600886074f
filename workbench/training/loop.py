"""The training loop: `train(out_dir, ...)` trains or resumes a run directory (see `checkpointing`).

Starting the same call again resumes from `checkpoint.pt` and continues the loss curve exactly: every batch
is a pure function of (seed, step), and everything else that changes is in the checkpoint.
"""

from __future__ import annotations

import copy
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from ..config import GPTNeoXConfig
from ..data import IGNORE_INDEX, BatchSampler
from ..model import GPTNeoXForCausalLM
from .checkpointing import (
    CHECKPOINT,
    FINAL_DIR,
    LOG,
    REVISIONS_DIR,
    RUN_CONFIG,
    TOKENIZER_DIR,
    TrainState,
    load_run_config,
    log_appender,
    resume,
    save_checkpoint,
    save_final,
    save_revision,
    write_provenance,
    write_revision_refs,
    start_run_dir,
    truncate_log,
)
from .data import PreparedData, prepare_data
from .evaluation import circuit_probes, evaluate_lm, probe_seq_len
from .recipes import DataConfig, TrainConfig, recipe
from .schedule import make_optimizer, make_scheduler
from ..threads import set_threads


@dataclass
class TrainResult:
    """What a call to `train` leaves behind."""

    run_dir: Path
    step: int  # steps completed
    losses: list[float]  # training loss of every completed step (this and earlier starts)
    final_dir: Path | None  # HF-format directory, once all steps are done
    val_loss: float | None = None
    unigram_loss: float | None = None


def build_model(model_config: dict[str, Any], seed: int) -> torch.nn.Module:
    """A freshly initialised workbench `GPTNeoXForCausalLM`, weights drawn under `torch.manual_seed(seed)`."""
    config = GPTNeoXConfig.from_dict(dict(model_config))
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


def train(
    out_dir: str | os.PathLike,
    model_config: dict[str, Any] | None = None,
    train_cfg: TrainConfig | None = None,
    data_cfg: DataConfig | None = None,
    stop_after: int | None = None,
    threads: int | None = None,
    progress: bool = True,
    steps: int | None = None,
) -> TrainResult:
    """Train (or resume) a run in `out_dir`.

    With a `run.json` already in `out_dir` the run resumes with the stored recipe (the configs passed in are
    ignored); only `steps` may change it (the cosine schedule then stretches to the new end).

    Args:
        out_dir: run directory (created).
        model_config: GPT-NeoX config dict (transformers field names); default: the demo recipe's.
        train_cfg / data_cfg: settings; default: the demo recipe's.
        stop_after: stop once this many steps are done in total (a simulated interruption; no extra checkpoint).
        threads: pin this process's CPU threads (`workbench.threads.set_threads`; others may share the machine).
        progress: show a tqdm bar.
        steps: total steps, overriding the recipe's (also on resume, to extend or shorten a run).

    Returns:
        TrainResult with the loss of every completed step.

    Raises:
        FileNotFoundError / ValueError: bad data source, empty corpus, vocabulary or context that does not
        fit the model config, all before any training step.
    """
    out = Path(out_dir)
    model_config, train_cfg, data_cfg = _resolve_recipe(out, model_config, train_cfg, data_cfg, steps)
    if threads is not None:
        set_threads(threads)
    max_pos = int(model_config.get("max_position_embeddings", 2048))
    if train_cfg.seq_len > max_pos:
        raise ValueError(f"seq_len={train_cfg.seq_len} exceeds the config's max_position_embeddings={max_pos}")
    data = prepare_data(data_cfg, train_cfg.seq_len, int(model_config["vocab_size"]), out / TOKENIZER_DIR)
    model = build_model(model_config, train_cfg.seed)  # validates the config too

    # Everything checked: from here on the run directory is written.
    start_run_dir(out, model_config, train_cfg, data_cfg, data.tokenizer, max_pos)
    samplers = _samplers(data, train_cfg, data_cfg)
    optimizer = make_optimizer(model, train_cfg)
    state = TrainState(model, optimizer, make_scheduler(optimizer, train_cfg))
    resume(out / CHECKPOINT, state, train_cfg)
    losses = [float(r["loss"]) for r in truncate_log(out / LOG, state.step)]
    end = train_cfg.steps if stop_after is None else min(train_cfg.steps, stop_after)
    val_loss = _run_steps(out, state, samplers, data, train_cfg, end, losses, progress)

    final_dir = None
    if state.step >= train_cfg.steps:
        final_dir = out / FINAL_DIR
        save_final(model, data.tokenizer, final_dir, max_pos)
        if train_cfg.revision_steps:  # the final step's revision name is the main weights, as on the hub
            write_revision_refs(out / REVISIONS_DIR, {f"step{train_cfg.steps}": "main"})
    return TrainResult(out, state.step, losses, final_dir, val_loss, data.unigram_nats)


def _resolve_recipe(
    out: Path, model_config: dict | None, train_cfg: TrainConfig | None, data_cfg: DataConfig | None, steps: int | None
) -> tuple[dict, TrainConfig, DataConfig]:
    """The run's recipe: `run.json`'s when resuming, else the arguments, else the demo's; `steps` overrides."""
    demo = recipe("demo")
    if (out / RUN_CONFIG).is_file():
        model_config, train_cfg, data_cfg = load_run_config(out)
    model_config = dict(model_config if model_config is not None else demo["model"])
    train_cfg = copy.deepcopy(train_cfg if train_cfg is not None else demo["train"])
    data_cfg = data_cfg if data_cfg is not None else demo["data"]
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        train_cfg.steps = steps
    return model_config, train_cfg, data_cfg


def _samplers(data: PreparedData, cfg: TrainConfig, data_cfg: DataConfig) -> list[tuple[int, BatchSampler]]:
    """`[(first step, sampler), ...]`, one per data phase."""
    return [
        (first, BatchSampler(
            data.train_stream, cfg.seq_len, cfg.batch_size, mix,
            vocab_low=2, vocab_high=data.tokenizer.get_vocab_size(), eos_token_id=0, seed=cfg.seed,
        ))
        for first, mix in data_cfg.mix_phases()
    ]  # fmt: skip


def _run_steps(
    out: Path,
    state: TrainState,
    samplers: list[tuple[int, BatchSampler]],
    data: PreparedData,
    cfg: TrainConfig,
    end: int,
    losses: list[float],
    progress: bool,
) -> float | None:
    """Steps `state.step + 1 .. end`: train, log each step, evaluate and checkpoint on schedule.

    Appends each step's loss to `losses`; returns the last validation loss measured (None if none was).
    """
    autocast = torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16,
                              enabled=cfg.dtype == "bf16")  # fmt: skip
    device = next(state.model.parameters()).device
    bar = tqdm(total=cfg.steps, initial=state.step, disable=not progress, desc="train", dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)  # fmt: skip
    val_loss = None
    state.model.train()
    if state.step == 0 and cfg.revision_steps:
        write_provenance(out / REVISIONS_DIR)
    if state.step == 0 and 0 in cfg.revision_steps:
        _save_revision(out, state, cfg)
    with bar, log_appender(out / LOG) as append_row:
        while state.step < end:
            t0 = time.perf_counter()
            x, y = next(s for first, s in reversed(samplers) if state.step >= first).batch(state.step)
            loss, grad_norm, lr = _optimizer_step(state, x.to(device), y.to(device), autocast, cfg.grad_clip)
            dt = time.perf_counter() - t0
            state.step, state.tokens, state.elapsed_s = state.step + 1, state.tokens + x.numel(), state.elapsed_s + dt
            row: dict[str, Any] = {
                "step": state.step, "tokens": state.tokens, "lr": f"{lr:.6g}", "loss": repr(loss),
                "grad_norm": f"{grad_norm:.4f}", "tokens_per_s": f"{x.numel() / dt:.0f}",
                "elapsed_s": f"{state.elapsed_s:.1f}",
            }  # fmt: skip
            if state.step % cfg.eval_every == 0 or state.step == cfg.steps:
                val_loss, metrics = _evaluate(state.model, data, cfg, state.step)
                row.update(metrics)
            append_row(row)
            losses.append(loss)
            bar.update(1)
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{x.numel() / dt:.0f}")
            if state.step in cfg.revision_steps:
                _save_revision(out, state, cfg)
            if state.step % cfg.checkpoint_every == 0 or state.step == cfg.steps:
                save_checkpoint(out / CHECKPOINT, state, cfg)
    return val_loss


def _save_revision(out: Path, state: TrainState, cfg: TrainConfig) -> None:
    save_revision(state.model, out / REVISIONS_DIR / f"step{state.step}", cfg.revision_dtype, state.step, state.tokens)


def _optimizer_step(
    state: TrainState, x: torch.Tensor, y: torch.Tensor, autocast: torch.autocast, grad_clip: float
) -> tuple[float, float, float]:
    """One forward, backward, clip, AdamW and schedule step on batch `x` `[batch, seq_len]` -> targets `y`.

    Returns:
        (loss, gradient norm before clipping (nan when clipping is off), the lr this step used)
    """
    loss = _step_loss(state.model, x, y, autocast)
    loss.backward()
    grad_norm = (torch.nn.utils.clip_grad_norm_(state.model.parameters(), grad_clip)
                 if grad_clip > 0 else torch.tensor(float("nan")))  # fmt: skip
    lr = state.optimizer.param_groups[0]["lr"]
    state.optimizer.step()
    state.scheduler.step()
    state.optimizer.zero_grad(set_to_none=True)
    return float(loss.detach()), float(grad_norm), lr


def _step_loss(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, autocast: torch.autocast) -> torch.Tensor:
    """Mean next-token loss over the targets that count.

    The unembedding (`hidden x vocab`) is the largest matmul of a small model, so it is applied only at
    positions whose target is not ignored (the first copy of random-token rows is), saving ~15% per step.

    Args:
        x: input ids  # [batch, seq_len]
        y: targets, IGNORE_INDEX where not scored  # [batch, seq_len]
    """
    keep = y != IGNORE_INDEX  # [batch, seq_len]
    with autocast:
        hidden = model.gpt_neox(x, use_cache=False).last_hidden_state  # [batch, seq_len, d_model]
        logits = model.embed_out(hidden[keep])  # [n_kept, vocab]
    return F.cross_entropy(logits.float(), y[keep])


def _evaluate(model: torch.nn.Module, data: PreparedData, cfg: TrainConfig, step: int) -> tuple[float, dict[str, str]]:
    """Validation loss and circuit probes, printed and returned as log columns: (val_loss, columns)."""
    rows = data.val_rows if cfg.eval_rows is None else data.val_rows[: cfg.eval_rows]
    val_loss, val_bpb = evaluate_lm(model, rows, data.byte_lengths)
    ind, head, copy_ratio = circuit_probes(model, seq_len=probe_seq_len(cfg.seq_len))
    tqdm.write(f"step {step}: val {val_loss:.3f} nats/token ({val_bpb:.3f} bits/byte; unigram "
               f"{data.unigram_nats:.3f}), best induction {ind:.3f} at {head}, "
               f"copy loss ratio {copy_ratio:.3f}", file=sys.stderr)  # fmt: skip
    return val_loss, {
        "val_loss": f"{val_loss:.5f}", "val_bits_per_byte": f"{val_bpb:.5f}", "induction_max": f"{ind:.4f}",
        "induction_head": head, "copy_loss_ratio": f"{copy_ratio:.4f}",
    }  # fmt: skip
