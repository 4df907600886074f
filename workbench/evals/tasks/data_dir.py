"""Where the benchmark files live: `data_dir`, else `$WORKBENCH_DATA_DIR`, else `../shared/data/evals` beside the checkout."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

DATA_HELP = (
    "The benchmark files are described in shared/data/SOURCES.md (llm-foundry's local_data JSONL, LAMBADA's "
    "lambada_test.jsonl, the HellaSwag text dump, the MMLU CSVs). Put them under a data directory laid out as "
    "<data_dir>/<task>/<file> and pass data_dir=... (CLI: --data-dir) or set WORKBENCH_DATA_DIR. Without local "
    "files, a task reads lm-eval's dataset from the Hugging Face datasets hub when it is reachable or cached."
)


def default_data_dir() -> Path | None:
    """`$WORKBENCH_DATA_DIR` if set, else `../shared/data/evals` beside the checkout if it exists, else None."""
    env = os.environ.get("WORKBENCH_DATA_DIR")
    if env:
        return Path(env).expanduser()
    beside = Path(__file__).resolve().parents[4] / "shared" / "data" / "evals"  # <checkout>/workbench/evals/tasks/
    return beside if beside.is_dir() else None


def resolve_data_dir(data_dir: str | os.PathLike | None) -> Path | None:
    """The data directory to read from: `data_dir` when given, else `default_data_dir()`."""
    return Path(data_dir).expanduser() if data_dir is not None else default_data_dir()


def find_file(task: str, data_dir: Path | None, candidates: Sequence[str]) -> Path:
    """The first of `candidates` (paths relative to `data_dir`) that exists.

    Raises:
        FileNotFoundError: none exists (or there is no data directory); names every path tried and `DATA_HELP`.
    """
    if data_dir is None:
        raise FileNotFoundError(
            f"task {task!r}: no data directory (data_dir=None, WORKBENCH_DATA_DIR unset, no ../shared/data/evals "
            f"beside the checkout); looked for {list(candidates)}. {DATA_HELP}"
        )
    for rel in candidates:
        if (data_dir / rel).is_file():
            return data_dir / rel
    raise FileNotFoundError(
        f"task {task!r}: data file not found; looked for {[str(data_dir / c) for c in candidates]}. {DATA_HELP}"
    )
