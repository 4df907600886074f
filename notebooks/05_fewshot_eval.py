# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 05 · Few-shot evaluation and published baselines
#
# `workbench.evals.evaluate` runs benchmark tasks with lm-evaluation-harness's prompts and scoring (and agrees
# with it), then compares the result with the published numbers of GPT-3, GPT-NeoX-20B and the Pythia suite
# that ship with the package, in a table, a plot and a standalone HTML report.
#
# The benchmark files are read from a local data directory: `$WORKBENCH_DATA_DIR`, else `../shared/data/evals`
# beside the checkout (the layout is described in `shared/data/SOURCES.md`). Without local files the notebook
# tries lm-evaluation-harness's own task downloads from the Hugging Face Hub, and without those it says so and
# skips the evaluation cells.
#
# The demo model is tiny and trained on one book: expect chance-level scores on commonsense benchmarks. The
# point is the workflow; run it on `EleutherAI/pythia-160m` for numbers that mean something.

# %%
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd
import torch
from huggingface_hub.constants import HF_HUB_OFFLINE

import workbench
from workbench.evals import EvalResults, evaluate, report
from workbench.evals.baselines import load_baselines
from workbench.evals.lm_eval_results import from_lm_eval
from workbench.evals.tasks import default_data_dir, get_tasks
from workbench.hub import hub_reachable

# 4 significant digits: a column holding a perplexity (1e7 for the demo) and accuracies otherwise prints in
# scientific notation (1.500000e-01)
pd.set_option("display.float_format", "{:.4g}".format)

TASKS = ["lambada_openai", "arc_easy", "winogrande"]
LIMIT = 40                  # documents per task: enough to see the workflow on a CPU in seconds
model = workbench.load("demo")


# %%
def local_data_ok(data_dir, tasks):
    """Whether every task's data file is present locally (the loaders say which file is missing)."""
    if data_dir is None:
        return False, "no data directory ($WORKBENCH_DATA_DIR unset and no ../shared/data/evals beside the checkout)"
    from workbench.evals.tasks import get_tasks
    try:
        for task in get_tasks(tasks, data_dir):
            task.docs()
    except FileNotFoundError as err:
        return False, str(err)
    return True, f"local data in {data_dir}"


DATA_DIR = default_data_dir()
LOCAL, why = local_data_ok(DATA_DIR, TASKS)
SOURCE = "local" if LOCAL else ("hub" if not HF_HUB_OFFLINE and hub_reachable() else None)
print("benchmark data:", why if LOCAL else f"not local ({why})")
if SOURCE is None:
    print("SKIPPING the evaluation cells: no local benchmark files and the Hugging Face Hub is unreachable. "
          "Set WORKBENCH_DATA_DIR to a directory laid out as in shared/data/SOURCES.md to run them.")
elif SOURCE == "hub":
    print("no local files: evaluating through lm-evaluation-harness, which downloads the tasks from the Hub")

# %% [markdown]
# ## Evaluate
#
# Zero-shot (the setting of most published numbers), the first `LIMIT` documents of each task. Accuracy for
# the multiple-choice tasks, accuracy and perplexity for LAMBADA.

# %%
results = None
if SOURCE == "local":
    results = evaluate("demo", TASKS, num_fewshot=0, limit=LIMIT, progress=False)
elif SOURCE == "hub":
    import lm_eval
    from workbench.evals.harness import WorkbenchLM
    out = lm_eval.simple_evaluate(model=WorkbenchLM(pretrained=model), tasks=TASKS, num_fewshot=0, limit=LIMIT)
    results = from_lm_eval(out, model, name="demo")
if results is not None:
    display(results.table())

# %%
# check: sane accuracies, every document evaluated, and the aggregate is the mean of the per-document scores
if results is None:
    print("skipped: no benchmark data")
else:
    table = results.table()
    acc = table[table["metric"] == "acc"]
    assert set(acc["task"]) == set(TASKS) and acc["value"].between(0, 1).all()
    assert results["lambada_openai"]["perplexity"] > 1
    if SOURCE == "local":
        for task in TASKS:
            assert results.counts[task]["n_docs"] == LIMIT
            per_doc = [record["acc"] for record in results.samples[task]]
            assert abs(np.mean(per_doc) - results[task]["acc"]) < 1e-9
        # multiple choice: the prediction is the choice with the highest log-likelihood
        arc = get_tasks(["arc_easy"])[0]
        docs = arc.docs()
        for record in results.samples["arc_easy"]:
            k = len(arc.choices(docs[record["doc_id"]]))
            assert record["acc"] == float(int(np.argmax(record["loglikelihoods"][:k])) == record["gold"])

# %% [markdown]
# ## Compared with the published baselines
#
# `results.compare()` puts the run next to every published model with a figure for the same task, metric and
# shot count. Below: GPT-3 (the paper's sizes), GPT-NeoX-20B and the Pythia suite. Note the caveat in
# `workbench.evals.baselines`: the GPT-3 paper's multiple-choice accuracies are length-normalised, so they are
# not in the `acc` rows; the plot below uses the closest metric and says so in its legend.

# %%
baselines = load_baselines(families=["gpt3", "gpt-neox", "pythia"])
print(f"{len(baselines)} published figures, e.g.:")
display(baselines[baselines["task"] == "lambada_openai"].head(6)[["model", "params", "task", "metric", "num_fewshot", "value"]])
comparison = None
if results is not None:
    comparison = results.compare(families=["gpt3", "gpt-neox", "pythia"])
    display(comparison)

# %%
if results is not None:
    display(report.plot(results, "scaling", task="lambada_openai"))
    display(report.plot(results, "tasks", metric="acc"))

# %%
# check: the comparison lines the run up with the published GPT-NeoX-20B and Pythia numbers
if comparison is not None:
    row = comparison.set_index(["task", "metric"]).loc[("lambada_openai", "acc")]
    published = baselines.query("model == 'GPT-NeoX-20B' and task == 'lambada_openai' and metric == 'acc' "
                                "and num_fewshot == 0")
    assert abs(row["GPT-NeoX-20B"] - published["value"].iloc[0]) < 1e-12
    assert row["GPT-NeoX-20B"] > row["pythia-70m"] > row.iloc[0]        # 20B > 70M > the 4-layer demo
    assert abs(row.iloc[0] - results["lambada_openai"]["acc"]) < 1e-12  # the run's own column comes first

# %% [markdown]
# ## HTML report
#
# One self-contained page (tables and plots inlined, no network access), to share or archive with the run's
# JSON (`results.to_json(path)`).

# %%
report_dir = Path(tempfile.gettempdir()) / "workbench-reports"
if results is not None:
    page = results.to_html(report_dir / "demo_eval.html", max_scaling_plots=1)
    results.to_json(report_dir / "demo_eval.json")
    print("wrote", report_dir / "demo_eval.html", f"({len(page) / 1e3:.0f} kB)")

# %%
# check: the page is complete and the JSON reads back to the same numbers
if results is not None:
    assert page.startswith("<!DOCTYPE html>") and "Compared with published results" in page
    assert "GPT-NeoX-20B" in page and "data:image/png;base64," in page
    again = EvalResults.from_json(report_dir / "demo_eval.json")
    assert again.metrics == results.metrics
