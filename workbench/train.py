"""Deprecated: the training code lives in `workbench.training` (recipes, data, schedule, evaluation,
checkpointing, loop, card, cli). This module re-exports its old names; `python -m workbench.train ARGS`
still runs `workbench train ARGS`.
"""

from __future__ import annotations

import warnings

from .training import (  # noqa: F401
    DEMO_MODEL,
    DTYPES,
    LOG_COLUMNS,
    RECIPES,
    DataConfig,
    PreparedData,
    TrainConfig,
    TrainResult,
    WarmupCosine,
    build_model,
    circuit_probes,
    evaluate_lm,
    load_run_config,
    make_optimizer,
    prepare_data,
    recipe,
    save_final,
    train,
)
from .training.cli import add_cli, main  # noqa: F401

warnings.warn("workbench.train is deprecated; import from workbench.training instead",
              DeprecationWarning, stacklevel=2)  # fmt: skip

if __name__ == "__main__":
    raise SystemExit(main())
