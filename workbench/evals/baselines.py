"""Published few-shot results of GPT-3, GPT-J, GPT-NeoX-20B, FairSeq and the Pythia suite, as data.

``baselines.csv`` (shipped with the package) has one row per published figure:

=============  ==============================================================================
model          e.g. "GPT-3 6.7B", "GPT-3 Curie", "GPT-J-6B", "GPT-NeoX-20B", "pythia-1.4b-deduped"
family         see :data:`FAMILIES`
params         total parameter count (API models: EleutherAI's estimates, flagged in ``note``)
task           the project's task name (``lambada_openai``, ``piqa``, ``arc_easy``, ``mmlu`` ...)
metric         ``acc``, ``acc_norm``, ``perplexity``, ``exact_match``
num_fewshot    number of in-context examples
value          accuracies as fractions in [0, 1]; perplexities as they are
stderr         standard error where the source gives one
step           training step (Pythia: 143000, the final checkpoint); empty otherwise
source         the paper / file the figure comes from
note           how the figure was obtained where it differs from lm-eval's definition
=============  ==============================================================================

``baselines_curves.csv.gz`` holds the Pythia learning curves (every evaluated checkpoint). Both are
generated from ``../shared/data/baselines`` by the build script ``scripts/build_baselines.py``.

Caveats worth knowing before comparing: the GPT-3 paper's multiple-choice accuracies are per-token
length-normalised (ARC and OpenBookQA: normalised by the unconditional likelihood), not lm-eval's raw
``acc``; the Pythia numbers come from lm-eval v0.3 and may not reproduce exactly on lm-eval 0.4.
"""

from __future__ import annotations

import runpy
import warnings
from functools import lru_cache
from pathlib import Path
from typing import Iterable

import pandas as pd

# the columns of the two tables
COLUMNS = ["model", "family", "params", "task", "metric", "num_fewshot", "value", "stderr", "step", "source", "note"]
CURVE_COLUMNS = ["model", "task", "metric", "num_fewshot", "step", "value", "stderr", "source"]

BASELINES_CSV = Path(__file__).with_name("baselines.csv")
CURVES_CSV = Path(__file__).with_name("baselines_curves.csv.gz")

FAMILIES = ("gpt3", "gpt3-api", "gpt-j", "gpt-neox", "fairseq", "pythia", "pythia-deduped",
            "gpt2", "gpt-neo", "megatron", "gopher", "mt-nlg")
# Convenience aliases accepted by ``families=``.
FAMILY_ALIASES = {"pythia-all": ("pythia", "pythia-deduped"), "gpt3-all": ("gpt3", "gpt3-api")}


@lru_cache(maxsize=2)
def _read(path: Path, columns: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise FileNotFoundError(f"baseline table {path} is missing; regenerate it: python scripts/build_baselines.py")
    frame = pd.read_csv(path, dtype={"step": "Int64", "note": "string", "source": "string"}, keep_default_na=True)
    missing = set(columns) - set(frame.columns)
    if missing:
        raise ValueError(f"{path} lacks the columns {sorted(missing)}")
    if "note" in frame.columns:
        frame["note"] = frame["note"].fillna("")
    return frame[list(columns)]


def _as_list(value: str | Iterable[str] | None, what: str) -> list[str] | None:
    if value is None:
        return None
    if isinstance(value, str):
        return [value]
    try:
        items = list(value)
    except TypeError:
        raise TypeError(f"{what} must be a string or a list of strings, got {type(value).__name__}") from None
    if not all(isinstance(v, str) for v in items):
        raise TypeError(f"{what} must contain strings, got {items!r}")
    return items


def _expand_families(families: str | Iterable[str] | None) -> list[str] | None:
    names = _as_list(families, "families")
    if names is None:
        return None
    out: list[str] = []
    for name in names:
        if name in FAMILY_ALIASES:
            out.extend(FAMILY_ALIASES[name])
        elif name in FAMILIES:
            out.append(name)
        else:
            raise ValueError(f"unknown baseline family {name!r}; known: {list(FAMILIES) + list(FAMILY_ALIASES)}")
    return out


def _filter(frame: pd.DataFrame, column: str, wanted: list | None, what: str) -> pd.DataFrame:
    if wanted is None:
        return frame
    known = set(frame[column].unique())
    unknown = [w for w in wanted if w not in known]
    if unknown:
        raise ValueError(f"unknown baseline {what} {unknown}; known: {sorted(known, key=str)}")
    return frame[frame[column].isin(wanted)]


def load_baselines(
    families: str | Iterable[str] | None = None,
    tasks: str | Iterable[str] | None = None,
    *,
    metrics: str | Iterable[str] | None = None,
    models: str | Iterable[str] | None = None,
    num_fewshot: int | Iterable[int] | None = None,
) -> pd.DataFrame:
    """The published baselines, optionally filtered.

    Args:
        families: a family or a list of them (see :data:`FAMILIES`; "pythia-all" = standard + deduped,
            "gpt3-all" = the paper's sizes + the API models). None: all.
        tasks: project task names ("piqa", "lambada_openai", "mmlu", "mmlu_anatomy" ...). None: all.
        metrics: "acc", "acc_norm", "perplexity", "exact_match". None: all.
        models: model names as in the table ("GPT-3 175B", "pythia-410m"). None: all.
        num_fewshot: an int or a list of ints. None: all.

    Returns:
        A new DataFrame with the columns model, family, params, task, metric, num_fewshot, value, stderr,
        step, source, note; one row per published figure, in the table's order.

    Raises:
        ValueError: an unknown family, task, metric or model (the message lists the known ones).
    """
    frame = _read(BASELINES_CSV, tuple(COLUMNS))
    frame = _filter(frame, "family", _expand_families(families), "family")
    frame = _filter(frame, "task", _as_list(tasks, "tasks"), "task")
    frame = _filter(frame, "metric", _as_list(metrics, "metrics"), "metric")
    frame = _filter(frame, "model", _as_list(models, "models"), "model")
    if num_fewshot is not None:
        shots = [num_fewshot] if isinstance(num_fewshot, int) else list(num_fewshot)
        frame = frame[frame["num_fewshot"].isin(shots)]
    return frame.reset_index(drop=True).copy()


def load_learning_curves(
    models: str | Iterable[str] | None = None,
    tasks: str | Iterable[str] | None = None,
    *,
    metrics: str | Iterable[str] | None = None,
    num_fewshot: int | None = None,
) -> pd.DataFrame:
    """Pythia learning curves: scores at every evaluated checkpoint.

    Zero-shot runs cover steps 0, 1, 2, 4 ... 512, 1000 and every 10,000 to 143,000; five-shot runs every
    10,000 steps from 3,000. Tasks: lambada_openai, piqa, winogrande, arc_easy, arc_challenge, sciq,
    logiqa, wsc, mmlu (aggregate).

    Args:
        models: Pythia model names ("pythia-70m" ... "pythia-12b", "-deduped" variants). None: all.
        tasks: project task names. None: all.
        metrics: e.g. "acc". None: all.
        num_fewshot: 0 or 5. None: both.

    Returns:
        DataFrame with the columns model, family, params, task, metric, num_fewshot, step, value,
        stderr, source, sorted by model, num_fewshot, task, metric, step.
    """
    frame = _read(CURVES_CSV, tuple(CURVE_COLUMNS))
    frame = _filter(frame, "model", _as_list(models, "models"), "model")
    frame = _filter(frame, "task", _as_list(tasks, "tasks"), "task")
    frame = _filter(frame, "metric", _as_list(metrics, "metrics"), "metric")
    if num_fewshot is not None:
        frame = frame[frame["num_fewshot"] == num_fewshot]
    # family and params live once per model in the project table
    info = _read(BASELINES_CSV, tuple(COLUMNS))[["model", "family", "params"]].drop_duplicates("model")
    frame = frame.merge(info, on="model", how="left")
    return frame[["model", "family", "params", "task", "metric", "num_fewshot", "step", "value", "stderr",
                  "source"]].reset_index(drop=True)


def reload_tables() -> None:
    """Forget the tables read so far, so that the next call reads the files again (after a rebuild)."""
    _read.cache_clear()


def regenerate(baselines_dir: str | Path, mmlu_dir: str | Path | None = None,
               table_path: str | Path = BASELINES_CSV, curves_path: str | Path = CURVES_CSV) -> tuple[Path, Path]:
    """Deprecated: the build is ``scripts/build_baselines.py`` (``regenerate`` there, same arguments).

    Works from a source checkout only (the script is not part of the installed package).
    """
    warnings.warn("workbench.evals.baselines.regenerate is deprecated; run scripts/build_baselines.py",
                  DeprecationWarning, stacklevel=2)
    script = Path(__file__).resolve().parents[2] / "scripts" / "build_baselines.py"
    if not script.is_file():
        raise FileNotFoundError(f"{script} is missing: regenerating the baselines needs a source checkout")
    return runpy.run_path(str(script))["regenerate"](baselines_dir, mmlu_dir, table_path, curves_path)
