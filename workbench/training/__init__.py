"""Training GPT-NeoX models from scratch (CPU or GPU): the loop behind the embedded demo checkpoint.

    recipes        TrainConfig, DataConfig, the named RECIPES (`demo`, `tiny`)
    data           prepare_data: corpus -> tokenizer -> token streams, validated before any step
    schedule       AdamW (decay on matrices only) and the warmup + cosine schedule
    evaluation     held-out loss (nats/token, bits/byte) and the circuit probes (induction, copying)
    checkpointing  the run directory: run.json, log.csv, checkpoint.pt (exact resume), final/
    loop           train(): one call trains or resumes a run
    card           export_demo: a finished run as an HF directory with a measured model card
    cli            the `workbench train` subcommand

Layering: this package builds on `workbench.data` (the data pipeline) and the model/analysis layers;
nothing below it imports it.
"""

from .checkpointing import LOG_COLUMNS, TrainState, load_run_config, save_final
from .data import PreparedData, prepare_data
from .evaluation import circuit_probes, evaluate_lm, probe_seq_len
from .loop import TrainResult, build_model, train
from .recipes import DEMO_MODEL, DTYPES, RECIPES, DataConfig, TrainConfig, recipe
from .schedule import WarmupCosine, make_optimizer, make_scheduler

__all__ = [
    "LOG_COLUMNS", "TrainState", "load_run_config", "save_final", "PreparedData", "prepare_data",
    "circuit_probes", "evaluate_lm", "probe_seq_len", "TrainResult", "build_model", "train", "DEMO_MODEL",
    "DTYPES", "RECIPES", "DataConfig", "TrainConfig", "recipe", "WarmupCosine", "make_optimizer", "make_scheduler",
]  # fmt: skip
