"""Build the project's baseline tables from the published figures in ``../shared/data/baselines``.

The raw files (one per source, each in its own layout and units) are turned into one long table with
the columns of :data:`COLUMNS`: one row per (model, task, metric, num_fewshot[, step]), values as
fractions (accuracies) or plain numbers (perplexities), task names as the project's (``lambada_openai``,
``piqa``, ``arc_easy`` ...), and each row's source.

Two outputs:

- the compact project table (``baselines.csv``, shipped in the wheel): GPT-3 (Table H.1 of the paper,
  eight sizes, 0/1/few-shot), the OpenAI API models (Ada/Babbage/Curie/Davinci), GPT-J-6B, GPT-NeoX-20B,
  FairSeq and the other models of the GPT-J README, and the Pythia suite's final checkpoint (step 143000),
  zero- and five-shot, with MMLU per subject and aggregated;
- the Pythia learning curves (``baselines_curves.csv.gz``): every evaluated checkpoint of every Pythia
  size (standard and deduplicated), zero- and five-shot, on the headline tasks and the MMLU aggregate.

Run it to regenerate both after a change to the raw data (the package installed, e.g. ``pip install -e .``)::

    python scripts/build_baselines.py [--source DIR] [--mmlu DIR]
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import math
import re
from pathlib import Path
from typing import Iterator

import pandas as pd

from workbench.evals import baselines
from workbench.evals.baselines import BASELINES_CSV, COLUMNS, CURVE_COLUMNS, CURVES_CSV

REPO = Path(__file__).resolve().parents[1]

PYTHIA_REPO = "EleutherAI/pythia@a19eecb807ec2c79a39ebf18108816e6ffffc1d5 evals/"
PYTHIA_FINAL_STEP = 143000

# Architectures of the Pythia suite (Biderman et al. 2023, Table 1; vocab sizes from each model's
# config.json): (layers, d_model, padded vocab). The parameter count is derived from them rather than
# typed in, so that it is the exact count of a GPT-NeoX model with untied input/output embeddings.
PYTHIA_ARCH: dict[str, tuple[int, int, int]] = {
    "70m": (6, 512, 50304),
    "160m": (12, 768, 50304),
    "410m": (24, 1024, 50304),
    "1b": (16, 2048, 50304),
    "1.4b": (24, 2048, 50304),
    "2.8b": (32, 2560, 50304),
    "6.9b": (32, 4096, 50432),
    "12b": (36, 5120, 50688),
}

# Headline tasks kept for the learning curves (lm-eval v0.3 names in the Pythia JSON -> project names).
# crows_pairs_* (bias probes) are not project tasks and are dropped.
PYTHIA_TASKS = {
    "lambada_openai": "lambada_openai",
    "piqa": "piqa",
    "winogrande": "winogrande",
    "arc_easy": "arc_easy",
    "arc_challenge": "arc_challenge",
    "sciq": "sciq",
    "logiqa": "logiqa",
    "wsc": "wsc",
}
# lm-eval v0.3 called LAMBADA's perplexity "ppl"; lm-eval 0.4 (and this project) call it "perplexity".
METRIC_RENAMES = {"ppl": "perplexity"}
MMLU_PREFIX = "hendrycksTest-"

GPT3_SIZES: dict[str, tuple[str, float]] = {
    # column of Table H.1 -> (model name, parameters as in the paper's Table 2.1)
    "small_125m": ("GPT-3 125M", 125e6),
    "medium_350m": ("GPT-3 350M", 350e6),
    "large_760m": ("GPT-3 760M", 760e6),
    "xl_1.3b": ("GPT-3 1.3B", 1.3e9),
    "2.7b": ("GPT-3 2.7B", 2.7e9),
    "6.7b": ("GPT-3 6.7B", 6.7e9),
    "13b": ("GPT-3 13B", 13e9),
    "175b": ("GPT-3 175B", 175e9),
}
GPT3_TASKS = {
    "LAMBADA": "lambada_openai",
    "HellaSwag": "hellaswag",
    "StoryCloze": "storycloze_2016",
    "TriviaQA": "triviaqa",
    "Winograd": "wsc273",
    "Winogrande": "winogrande",
    "PIQA": "piqa",
    "ARC-Challenge": "arc_challenge",
    "ARC-Easy": "arc_easy",
    "OpenBookQA": "openbookqa",
    "WSC(SuperGLUE)": "wsc",
    "ANLI-R1": "anli_r1",
    "ANLI-R2": "anli_r2",
    "ANLI-R3": "anli_r3",
}
# How the GPT-3 paper scored each task (section 2.4), as the project's metric names (workbench.evals.metrics):
# most multiple-choice tasks compare per-token log-likelihoods (`acc_per_token`), ARC and OpenBookQA normalise
# by the unconditional "Answer:" likelihood (`acc_uncond`); LAMBADA and the Winograd-style tasks (partial
# scoring, as lm-eval's `acc`) are plain accuracy; TriviaQA is an exact match of a generated answer.
GPT3_METRICS = {
    "lambada_openai": "acc",
    "wsc273": "acc",
    "winogrande": "acc",
    "triviaqa": "exact_match",
    "arc_challenge": "acc_uncond",
    "arc_easy": "acc_uncond",
    "openbookqa": "acc_uncond",
}
GPT3_DEFAULT_METRIC = "acc_per_token"
GPT3_SETTINGS = {"zero": 0, "one": 1}  # "few" -> the K column

# Models of the GPT-J README and the GPT-NeoX-20B model card: name -> (project name, family, params, note).
# API model sizes were never published; the figures are EleutherAI's estimates (blog post "On the Sizes
# of OpenAI API Models", 2021), flagged in the note.
OTHER_MODELS: dict[str, tuple[str, str, float, str]] = {
    "GPT-3-Ada": ("GPT-3 Ada", "gpt3-api", 350e6, "params estimated"),
    "GPT-3-Babbage": ("GPT-3 Babbage", "gpt3-api", 1.3e9, "params estimated"),
    "GPT-3-Curie": ("GPT-3 Curie", "gpt3-api", 6.7e9, "params estimated"),
    "GPT-3-Davinci": ("GPT-3 Davinci", "gpt3-api", 175e9, "params estimated"),
    "GPT-3-DaVinci": ("GPT-3 Davinci", "gpt3-api", 175e9, "params estimated"),
    "GPT-2-1.5B": ("GPT-2 1.5B", "gpt2", 1.5e9, ""),
    "GPTNeo-1.3B": ("GPT-Neo 1.3B", "gpt-neo", 1.3e9, ""),
    "GPTNeo-2.7B": ("GPT-Neo 2.7B", "gpt-neo", 2.7e9, ""),
    "Megatron-2.5B": ("Megatron 2.5B", "megatron", 2.5e9, ""),
    "Megatron-8.3B": ("Megatron 8.3B", "megatron", 8.3e9, ""),
    "GPT-J-6B": ("GPT-J-6B", "gpt-j", 6_053_381_344, ""),
    "Gopher-230B": ("Gopher 280B", "gopher", 280e9, "the README labels it 230B; Gopher has 280B parameters"),
    "MT-NLG-530B": ("MT-NLG 530B", "mt-nlg", 530e9, ""),
    "FairSeq-6.7B": ("FairSeq 6.7B", "fairseq", 6.7e9, ""),
    "FairSeq-13B": ("FairSeq 13B", "fairseq", 13e9, ""),
    "GPT-NeoX-20B": ("GPT-NeoX-20B", "gpt-neox", 20_554_567_680, ""),
}


def pythia_params(size: str) -> int:
    """Total parameter count of a Pythia model (untied embeddings, LayerNorm and bias terms included).

    Args:
        size: the size tag, one of ``PYTHIA_ARCH`` ("70m" ... "12b").

    Returns:
        The exact number of parameters, e.g. 70,426,624 for "70m".
    """
    if size not in PYTHIA_ARCH:
        raise KeyError(f"unknown Pythia size {size!r}; known: {sorted(PYTHIA_ARCH)}")
    n_layers, d, vocab = PYTHIA_ARCH[size]
    # per layer: fused QKV (3d^2+3d), output projection (d^2+d), MLP (8d^2+5d), two LayerNorms (4d)
    per_layer = 12 * d * d + 13 * d
    return n_layers * per_layer + 2 * d + 2 * vocab * d


def _csv_rows(path: Path) -> list[dict[str, str]]:
    """Rows of a CSV whose leading ``#`` lines are comments (the raw baseline files carry their provenance there)."""
    text = path.read_text(encoding="utf-8")
    body = "\n".join(line for line in text.splitlines() if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(body)))


def _num(text: str) -> float | None:
    text = (text or "").strip()
    return float(text) if text else None


def _row(model, family, params, task, metric, k, value, stderr=None, step=None, source="", note="") -> dict:
    return dict(model=model, family=family, params=int(params), task=task, metric=metric, num_fewshot=int(k),
                value=float(value), stderr=None if stderr is None else float(stderr), step=step, source=source,
                note=note)


def gpt3_paper_rows(path: Path) -> Iterator[dict]:
    """GPT-3 paper Table H.1 (percentages -> fractions; perplexities unchanged)."""
    source = "Brown et al. 2020 (arXiv:2005.14165) Table H.1"
    for raw in _csv_rows(path):
        task = GPT3_TASKS.get(raw["task"])
        if task is None:
            raise ValueError(f"{path}: unknown GPT-3 task {raw['task']!r}; known: {sorted(GPT3_TASKS)}")
        k = GPT3_SETTINGS.get(raw["setting"], None)
        if k is None:
            if raw["setting"] != "few":
                raise ValueError(f"{path}: unknown setting {raw['setting']!r}; known: zero, one, few")
            k = int(raw["K"])
        metric = METRIC_RENAMES.get(raw["metric"], raw["metric"])
        if metric == "acc":
            metric = GPT3_METRICS.get(task, GPT3_DEFAULT_METRIC)
        notes = [f"split={raw['split']}"]
        if raw.get("note"):
            notes.append(raw["note"])
        for column, (model, params) in GPT3_SIZES.items():
            value = _num(raw[column])
            if value is None:
                continue
            if metric != "perplexity":
                value /= 100.0
            yield _row(model, "gpt3", params, task, metric, k, value, source=source, note="; ".join(notes))


def gptj_readme_rows(path: Path) -> Iterator[dict]:
    """GPT-J README zero-shot table; its GPT-3 paper rows duplicate Table H.1 and are left to that source."""
    source = "kingoflolz/mesh-transformer-jax README @f8315e3 (zero-shot table)"
    columns = {
        "lambada_ppl": ("lambada_openai", "perplexity"),
        "lambada_acc": ("lambada_openai", "acc"),
        "winogrande": ("winogrande", "acc"),
        "hellaswag": ("hellaswag", "acc"),
        "piqa": ("piqa", "acc"),
    }
    for raw in _csv_rows(path):
        if raw["source_kind"] == "GPT-3 paper":
            continue
        if raw["model"] not in OTHER_MODELS:
            raise ValueError(f"{path}: unknown model {raw['model']!r}; known: {sorted(OTHER_MODELS)}")
        model, family, params, model_note = OTHER_MODELS[raw["model"]]
        for column, (task, metric) in columns.items():
            value = _num(raw[column])
            if value is None:
                continue
            notes = [raw["source_kind"]]
            if model_note:
                notes.append(model_note)
            if metric == "acc":
                value /= 100.0
                if model == "GPT-J-6B":
                    # mesh-transformer-jax#257: the GPT-J row took the better of acc and acc_norm per task
                    if task == "hellaswag":
                        metric = "acc_norm"
                    elif task == "piqa":
                        notes.append("better of acc/acc_norm")
                elif task == "hellaswag":
                    notes.append("acc or acc_norm not stated")
            yield _row(model, family, params, task, metric, 0, value, source=source, note="; ".join(notes))


def neox_modelcard_rows(path: Path) -> Iterator[dict]:
    """GPT-NeoX-20B model card zero-shot table (fractions with standard errors)."""
    source = "EleutherAI/gpt-neox-20b model card (arXiv:2204.06745 Appendix D, abridged)"
    tasks = {"lambada_openai": "lambada", "sciq": "sciq", "piqa": "piqa", "triviaqa": "triviaqa",
             "arc_challenge": "arc_challenge"}
    for raw in _csv_rows(path):
        if raw["model"] not in OTHER_MODELS:
            raise ValueError(f"{path}: unknown model {raw['model']!r}; known: {sorted(OTHER_MODELS)}")
        model, family, params, model_note = OTHER_MODELS[raw["model"]]
        for task, stderr_prefix in tasks.items():
            # lm-eval v0.3's triviaqa "acc" is an exact match of the generated answer
            metric = "exact_match" if task == "triviaqa" else "acc"
            yield _row(model, family, params, task, metric, 0, _num(raw[f"{task}_acc"]),
                       stderr=_num(raw[f"{stderr_prefix}_stderr"]), source=source, note=model_note)


def _pythia_dirs(root: Path) -> Iterator[tuple[str, str, Path]]:
    """(model name, size, directory) for the standard and deduplicated Pythia runs.

    The batch-size ablations (``*MtokBS``) and the ``baseline``/``intervention`` runs are other models
    and are not baselines for the suite; the standard 1B exists only as the bf16 re-run.
    """
    for size in PYTHIA_ARCH:
        for suffix in ("", "-deduped"):
            name = f"pythia-{size}{suffix}"
            directory = root / ("pythia-1b-bf16" if name == "pythia-1b" else name)
            if not directory.is_dir():
                raise FileNotFoundError(f"Pythia results folder {directory} is missing")
            yield name, size, directory


_STEP = re.compile(r"_step(\d+)\.json$")


def pythia_results(root: Path) -> Iterator[tuple[str, str, int, int, str, dict]]:
    """Every Pythia result file: (model, size, num_fewshot, step, source path, lm-eval ``results``)."""
    for name, size, directory in _pythia_dirs(root):
        for shots_dir in ("zero-shot", "five-shot"):
            for path in sorted((directory / shots_dir).glob("*.json")):
                match = _STEP.search(path.name)
                if match is None:
                    raise ValueError(f"{path}: no _step<N> in the file name")
                data = json.loads(path.read_text(encoding="utf-8"))
                # The shot count comes from the run's own config: a few files sit in the wrong folder
                # (pythia-1b-bf16/zero-shot/1b-bf16-5shot_step*.json are 0-shot runs).
                k = int(data["config"]["num_fewshot"])
                rel = path.relative_to(root.parent).as_posix()
                yield name, size, k, int(match.group(1)), rel, data["results"]


def mmlu_test_sizes(mmlu_dir: Path) -> dict[str, int]:
    """Number of test questions per MMLU subject, counted in ``mmlu/test/<subject>_test.csv``."""
    sizes = {}
    for path in sorted((mmlu_dir / "test").glob("*_test.csv")):
        with path.open(encoding="utf-8", newline="") as f:
            sizes[path.name[: -len("_test.csv")]] = sum(1 for _ in csv.reader(f)) - 1
    if len(sizes) != 57:
        raise ValueError(f"expected 57 MMLU subjects in {mmlu_dir / 'test'}, found {len(sizes)}")
    return sizes


def aggregate_mmlu(results: dict, sizes: dict[str, int], metric: str) -> tuple[float, float]:
    """MMLU over its 57 subjects as lm-eval 0.4 aggregates a group: size-weighted mean, pooled stderr.

    Args:
        results: lm-eval ``results`` with ``hendrycksTest-<subject>`` entries.
        sizes: test questions per subject.
        metric: "acc" or "acc_norm".

    Returns:
        (value, stderr).
    """
    values, stderrs, ns = [], [], []
    for subject, n in sizes.items():
        entry = results.get(MMLU_PREFIX + subject)
        if entry is None:
            raise KeyError(f"MMLU subject {subject!r} missing from the results")
        values.append(entry[metric])
        stderrs.append(entry[f"{metric}_stderr"])
        ns.append(n)
    total = sum(ns)
    value = sum(v * n for v, n in zip(values, ns)) / total
    pooled_var = sum((n - 1) * s * s * n for s, n in zip(stderrs, ns)) / (total - len(ns))
    return value, math.sqrt(pooled_var / total)


def _pythia_metric_rows(results: dict, sizes: dict[str, int], per_subject: bool) -> Iterator[tuple]:
    """(task, metric, value, stderr) from one lm-eval v0.3 result dict."""
    for raw_task, task in PYTHIA_TASKS.items():
        entry = results.get(raw_task)
        if entry is None:
            continue
        for metric, value in entry.items():
            if metric.endswith("_stderr"):
                continue
            yield task, METRIC_RENAMES.get(metric, metric), value, entry.get(f"{metric}_stderr")
    if all(MMLU_PREFIX + s in results for s in sizes):
        for metric in ("acc", "acc_norm"):
            yield ("mmlu", metric, *aggregate_mmlu(results, sizes, metric))
        if per_subject:
            for subject in sizes:
                entry = results[MMLU_PREFIX + subject]
                yield f"mmlu_{subject}", "acc", entry["acc"], entry["acc_stderr"]


def pythia_rows(root: Path, mmlu_dir: Path) -> tuple[list[dict], list[dict]]:
    """(final-checkpoint rows for the project table, learning-curve rows) for the Pythia suite."""
    sizes = mmlu_test_sizes(mmlu_dir)
    final, curves = [], []
    for name, size, k, step, rel, results in pythia_results(root):
        source = PYTHIA_REPO + rel
        family = "pythia-deduped" if name.endswith("-deduped") else "pythia"
        note = "evaluated as pythia-v1.1-1b-bf16" if name == "pythia-1b" else ""
        for task, metric, value, stderr in _pythia_metric_rows(results, sizes, per_subject=step == PYTHIA_FINAL_STEP):
            if not task.startswith("mmlu_"):
                curves.append(dict(model=name, task=task, metric=metric, num_fewshot=k, step=step,
                                   value=value, stderr=stderr, source=source))
            if step == PYTHIA_FINAL_STEP:
                if task == "mmlu":
                    row_note = "size-weighted mean of the 57 hendrycksTest subjects, pooled stderr (lm-eval 0.4 group)"
                    row_note = f"{note}; {row_note}" if note else row_note
                else:
                    row_note = note
                final.append(_row(name, family, pythia_params(size), task, metric, k, value, stderr, step,
                                  source, row_note))
    return final, curves


def build_tables(baselines_dir: Path, mmlu_dir: Path | None = None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Build the project table and the Pythia learning curves from the raw baseline files.

    Args:
        baselines_dir: ``../shared/data/baselines`` (SOURCES.md, the CSVs, ``pythia-v1/``).
        mmlu_dir: the MMLU data (``test/<subject>_test.csv``), used for the subject sizes of the MMLU
            aggregate; default ``<baselines_dir>/../evals/mmlu``.

    Returns:
        (table with :data:`COLUMNS`, curves with :data:`CURVE_COLUMNS`), both in a stable row order.
    """
    baselines_dir = Path(baselines_dir)
    mmlu_dir = Path(mmlu_dir) if mmlu_dir is not None else baselines_dir.parent / "evals" / "mmlu"
    for required in ("gpt3_paper_tableH1_subset.csv", "gptj_readme_zero_shot.csv",
                     "gptneox20b_modelcard_zero_shot.csv", "pythia-v1"):
        if not (baselines_dir / required).exists():
            raise FileNotFoundError(f"{baselines_dir / required} is missing (see {baselines_dir / 'SOURCES.md'})")
    final, curves = pythia_rows(baselines_dir / "pythia-v1", mmlu_dir)
    # Order matters for duplicates (same model/task/metric/shots from two sources): the first one wins in
    # report.compare, so the GPT-NeoX-20B paper's own runs come before the GPT-J README's.
    rows: list[dict] = []
    rows += gpt3_paper_rows(baselines_dir / "gpt3_paper_tableH1_subset.csv")
    rows += neox_modelcard_rows(baselines_dir / "gptneox20b_modelcard_zero_shot.csv")
    rows += gptj_readme_rows(baselines_dir / "gptj_readme_zero_shot.csv")
    rows += final
    table = pd.DataFrame(rows, columns=COLUMNS)
    table["step"] = table["step"].astype("Int64")
    table["params"] = table["params"].astype("int64")
    curve_table = pd.DataFrame(curves, columns=CURVE_COLUMNS).sort_values(
        ["model", "num_fewshot", "task", "metric", "step"], kind="stable", ignore_index=True)
    return table, curve_table


def write_tables(table: pd.DataFrame, curves: pd.DataFrame, table_path: Path, curves_path: Path) -> None:
    """Write both tables as CSV (curves gzip-compressed, deterministically: no timestamp in the header)."""
    import gzip

    table.to_csv(table_path, index=False, float_format="%.10g", lineterminator="\n")
    text = curves.to_csv(index=False, float_format="%.10g", lineterminator="\n")
    with open(curves_path, "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0, filename="") as f:
        f.write(text.encode("utf-8"))


def regenerate(baselines_dir: str | Path, mmlu_dir: str | Path | None = None,
               table_path: str | Path = BASELINES_CSV, curves_path: str | Path = CURVES_CSV) -> tuple[Path, Path]:
    """Rebuild ``baselines.csv`` and ``baselines_curves.csv.gz`` from the raw published figures.

    Args:
        baselines_dir: ``../shared/data/baselines``.
        mmlu_dir: MMLU data for the subject sizes (default ``<baselines_dir>/../evals/mmlu``).
        table_path, curves_path: where to write (default: the package's tables).

    Returns:
        The two paths written.
    """
    table, curves = build_tables(Path(baselines_dir), None if mmlu_dir is None else Path(mmlu_dir))
    write_tables(table, curves, Path(table_path), Path(curves_path))
    baselines.reload_tables()
    return Path(table_path), Path(curves_path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Regenerate workbench/evals/baselines.csv and "
                                     "baselines_curves.csv.gz from ../shared/data/baselines.")
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "baselines",
                        help="folder with SOURCES.md, the published CSVs and pythia-v1/")
    parser.add_argument("--mmlu", type=Path, default=None, help="MMLU data folder (default: SOURCE/../evals/mmlu)")
    args = parser.parse_args(argv)
    table_path, curves_path = regenerate(args.source, args.mmlu)
    table, curves = baselines.load_baselines(), baselines.load_learning_curves()
    for path, frame in ((table_path, table), (curves_path, curves)):
        print(f"{path}: {len(frame)} rows, {path.stat().st_size / 1024:.0f} KiB")
    print(table.groupby("family")["model"].nunique().to_string())


if __name__ == "__main__":
    main()
