"""The shipped baseline tables: generated from the published figures, complete, and correctly converted."""

from __future__ import annotations

import csv
import importlib.util
import io
import json
from pathlib import Path

import pandas as pd
import pytest

from workbench.evals import baselines as B


def _load_build_script():
    """scripts/build_baselines.py (build tooling, outside the package), imported by path."""
    path = Path(__file__).resolve().parents[1] / "scripts" / "build_baselines.py"
    spec = importlib.util.spec_from_file_location("build_baselines", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


build = _load_build_script()
PYTHIA_ARCH, build_tables, pythia_params = build.PYTHIA_ARCH, build.build_tables, build.pythia_params

PYTHIA_SIZES = ["70m", "160m", "410m", "1b", "1.4b", "2.8b", "6.9b", "12b"]


@pytest.fixture(scope="module")
def raw(shared_data: Path) -> Path:
    folder = shared_data / "baselines"
    if not (folder / "pythia-v1").is_dir():
        pytest.skip(f"{folder} lacks the published baseline files")
    return folder


@pytest.fixture(scope="module")
def built(raw: Path) -> tuple[pd.DataFrame, pd.DataFrame]:
    return build_tables(raw)


def _rows(path: Path) -> list[dict]:
    text = "\n".join(line for line in path.read_text().splitlines() if not line.startswith("#"))
    return list(csv.DictReader(io.StringIO(text)))


def test_shipped_tables_are_what_the_generator_makes(built):
    """No hand edits: the CSVs in the package equal a fresh build from ../shared/data/baselines."""
    table, curves = built
    shipped = B.load_baselines()
    assert len(shipped) == len(table)
    pd.testing.assert_frame_equal(
        shipped.drop(columns=["value", "stderr", "note", "source", "step"]),
        table.drop(columns=["value", "stderr", "note", "source", "step"]), check_dtype=False)
    assert list(shipped["source"]) == list(table["source"])
    assert list(shipped["note"]) == list(table["note"])
    pd.testing.assert_series_equal(shipped["value"], table["value"], rtol=1e-8, check_dtype=False)
    pd.testing.assert_series_equal(shipped["stderr"], table["stderr"].astype(float), rtol=1e-8, check_dtype=False)
    shipped_curves = B.load_learning_curves()
    assert len(shipped_curves) == len(curves)
    key = ["model", "task", "metric", "num_fewshot", "step"]
    merged = shipped_curves.merge(curves, on=key, suffixes=("", "_built"), validate="one_to_one")
    assert len(merged) == len(curves)
    pd.testing.assert_series_equal(merged["value"], merged["value_built"], rtol=1e-8, check_names=False)


def test_package_table_is_compact():
    assert B.BASELINES_CSV.stat().st_size < 1_000_000
    assert B.CURVES_CSV.stat().st_size < 1_000_000


def test_pythia_final_checkpoint_matches_the_summary_file(raw):
    """Every figure of the independently derived final-checkpoint summary is in the project table."""
    table = B.load_baselines(families="pythia-all")
    index = {(r.model, r.task, r.metric, r.num_fewshot): (r.value, r.stderr) for r in table.itertuples()}
    checked = 0
    for row in _rows(raw / "pythia_final_step143000_summary.csv"):
        shots = int(row["shots"])
        assert int(row["num_fewshot_cfg"]) == shots
        for column, text in row.items():
            if "." not in column or column.endswith("_stderr") or not text:
                continue
            task, metric = column.split(".")
            metric = {"ppl": "perplexity"}.get(metric, metric)
            value, stderr = index[(row["model"], task, metric, shots)]
            assert value == pytest.approx(float(text), rel=1e-8), (row["model"], column)
            assert stderr == pytest.approx(float(row[column + "_stderr"]), rel=1e-8)
            checked += 1
    assert checked > 16 * 2 * 10


def test_pythia_curve_points_equal_the_raw_json(raw):
    path = raw / "pythia-v1" / "pythia-410m-deduped" / "zero-shot" / "410m-deduped_step13000.json"
    results = json.loads(path.read_text())["results"]
    curve = B.load_learning_curves(models="pythia-410m-deduped", num_fewshot=0)
    at = curve[curve["step"] == 13000].set_index(["task", "metric"])["value"]
    assert at[("piqa", "acc_norm")] == pytest.approx(results["piqa"]["acc_norm"], rel=1e-8)
    assert at[("lambada_openai", "perplexity")] == pytest.approx(results["lambada_openai"]["ppl"], rel=1e-8)
    assert at[("winogrande", "acc")] == pytest.approx(results["winogrande"]["acc"], rel=1e-8)


def test_learning_curves_cover_every_checkpoint_and_end_at_the_final_value():
    curves = B.load_learning_curves(tasks="piqa", metrics="acc")
    assert set(curves["model"]) == {f"pythia-{s}{d}" for s in PYTHIA_SIZES for d in ("", "-deduped")}
    zero = curves[(curves["model"] == "pythia-70m") & (curves["num_fewshot"] == 0)]
    steps = sorted(zero["step"])
    assert steps[:4] == [0, 1, 2, 4] and steps[-1] == 143000 and len(steps) == 27
    final = B.load_baselines(tasks="piqa", metrics="acc", models="pythia-70m", num_fewshot=0)
    assert zero.loc[zero["step"] == 143000, "value"].item() == pytest.approx(final["value"].item())
    assert (curves["params"] > 0).all()


def test_gpt3_paper_numbers_agree_across_the_two_sources(raw):
    """The GPT-J README quotes the GPT-3 paper: its rows must equal our Table H.1 conversion."""
    sizes = {"GPT-3-1.3B": "GPT-3 1.3B", "GPT-3-2.7B": "GPT-3 2.7B", "GPT-3-6.7B": "GPT-3 6.7B",
             "GPT-3-13B": "GPT-3 13B", "GPT-3-175B": "GPT-3 175B"}
    gpt3 = B.load_baselines(families="gpt3", num_fewshot=0)
    value = {(r.model, r.task, r.metric): r.value for r in gpt3.itertuples()}
    quoted = [r for r in _rows(raw / "gptj_readme_zero_shot.csv") if r["source_kind"] == "GPT-3 paper"]
    assert len(quoted) == 5
    for row in quoted:
        model = sizes[row["model"]]
        assert value[(model, "lambada_openai", "perplexity")] == pytest.approx(float(row["lambada_ppl"]))
        assert value[(model, "lambada_openai", "acc")] == pytest.approx(float(row["lambada_acc"]) / 100)
        assert value[(model, "winogrande", "acc")] == pytest.approx(float(row["winogrande"]) / 100)
        # the paper's multiple-choice accuracies are per-token normalised
        assert value[(model, "hellaswag", "acc_per_token")] == pytest.approx(float(row["hellaswag"]) / 100)
        assert value[(model, "piqa", "acc_per_token")] == pytest.approx(float(row["piqa"]) / 100)


def test_coverage_of_models_tasks_and_shots():
    table = B.load_baselines()
    models = set(table["model"])
    gpt3 = ["125M", "350M", "760M", "1.3B", "2.7B", "6.7B", "13B", "175B"]
    assert {f"GPT-3 {s}" for s in gpt3} <= models
    assert {"GPT-3 Ada", "GPT-3 Babbage", "GPT-3 Curie", "GPT-3 Davinci", "GPT-J-6B", "GPT-NeoX-20B",
            "FairSeq 6.7B", "FairSeq 13B"} <= models
    pythia = table[table["family"].isin(["pythia", "pythia-deduped"])]
    assert set(pythia["step"]) == {143000}
    for model, group in pythia.groupby("model"):
        assert set(group["num_fewshot"]) == {0, 5}, model
        assert {"lambada_openai", "piqa", "arc_easy", "arc_challenge", "winogrande", "mmlu"} <= set(group["task"])
        assert len({t for t in group["task"] if t.startswith("mmlu_")}) == 57
    assert {"hellaswag", "openbookqa", "triviaqa"} <= set(table["task"])
    acc = table[table["metric"].str.startswith("acc")]
    assert acc["value"].between(0, 1).all()
    assert table["source"].str.len().gt(0).all()
    # GPT-3 paper few-shot rows carry the paper's K
    few = table[(table["model"] == "GPT-3 175B") & (table["task"] == "lambada_openai") & (table["metric"] == "acc")]
    assert set(few["num_fewshot"]) == {0, 1, 15}


def test_pythia_parameter_counts_equal_built_models():
    """The derived count equals that of a GPT-NeoX model built with the architecture (workbench's model has
    transformers' modules and is checked against transformers in its own tests). The same formula serves
    every size; building one (70m) keeps the test cheap."""
    from workbench.config import GPTNeoXConfig
    from workbench.model import GPTNeoXForCausalLM

    layers, d, vocab = PYTHIA_ARCH["70m"]
    config = GPTNeoXConfig(vocab_size=vocab, hidden_size=d, num_hidden_layers=layers,
                           num_attention_heads=8, intermediate_size=4 * d)
    model = GPTNeoXForCausalLM(config)
    assert pythia_params("70m") == sum(p.numel() for p in model.parameters())
    table = B.load_baselines(models="pythia-70m")
    assert set(table["params"]) == {70_426_624}


def test_mmlu_aggregate_is_lm_eval_group_aggregation(raw, shared_data):
    """The mmlu row is lm-eval's size-weighted group mean (and pooled stderr) of the 57 subjects."""
    metrics = pytest.importorskip("lm_eval.api.metrics")
    subjects = B.load_baselines(models="pythia-1.4b", num_fewshot=5, metrics="acc")
    subjects = subjects[subjects["task"].str.startswith("mmlu_")].sort_values("task")
    sizes = []
    for task in subjects["task"]:
        with open(shared_data / "evals" / "mmlu" / "test" / f"{task[5:]}_test.csv", newline="") as f:
            sizes.append(sum(1 for _ in csv.reader(f)) - 1)
    assert sum(sizes) == 14042
    expected = metrics.aggregate_subtask_metrics(list(subjects["value"]), sizes, weight_by_size=True)
    expected_se = metrics.pooled_sample_stderr(list(subjects["stderr"]), sizes)
    row = B.load_baselines(models="pythia-1.4b", num_fewshot=5, metrics="acc", tasks="mmlu")
    assert row["value"].item() == pytest.approx(expected, rel=1e-7)
    assert row["stderr"].item() == pytest.approx(expected_se, rel=1e-6)


def test_filters_and_errors():
    both = B.load_baselines(families="pythia-all", tasks=["piqa"], metrics="acc", num_fewshot=0)
    assert len(both) == 16 and set(both["family"]) == {"pythia", "pythia-deduped"}
    assert set(B.load_baselines(families=["gpt3-api"])["model"]) == {
        "GPT-3 Ada", "GPT-3 Babbage", "GPT-3 Curie", "GPT-3 Davinci"}
    with pytest.raises(ValueError, match="unknown baseline family 'gpt5'.*gpt3"):
        B.load_baselines(families="gpt5")
    with pytest.raises(ValueError, match="unknown baseline task.*piqa"):
        B.load_baselines(tasks=["no_such_task"])
    with pytest.raises(ValueError, match="unknown baseline model"):
        B.load_learning_curves(models="GPT-3 175B")
    with pytest.raises(TypeError, match="families"):
        B.load_baselines(families=3)
    # a returned frame is a copy: editing it leaves the cached table alone
    frame = B.load_baselines(tasks="piqa")
    frame.loc[:, "value"] = -1.0
    assert (B.load_baselines(tasks="piqa")["value"] >= 0).all()


def test_build_script_writes_the_shipped_files_byte_for_byte(raw, tmp_path):
    table, curves = build.regenerate(raw, table_path=tmp_path / "b.csv", curves_path=tmp_path / "c.csv.gz")
    assert table.read_bytes() == B.BASELINES_CSV.read_bytes()
    assert curves.read_bytes() == B.CURVES_CSV.read_bytes()
    # the former entry point still works, with a deprecation warning
    with pytest.warns(DeprecationWarning, match="scripts/build_baselines.py"):
        again, _ = B.regenerate(raw, table_path=tmp_path / "b2.csv", curves_path=tmp_path / "c2.csv.gz")
    assert again.read_bytes() == table.read_bytes()
