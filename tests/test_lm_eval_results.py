"""`from_lm_eval`: lm-eval's `simple_evaluate` output read into `EvalResults`."""

from __future__ import annotations

import math

import pytest
import torch

from workbench.evals import EvalResults
from workbench.evals.lm_eval_results import from_lm_eval


def lm_eval_output() -> dict:
    """A trimmed real output of lm-eval 0.4.13 (`WorkbenchLM` on the demo model, limit 5), plus a generation
    task with a second filter and a metric whose standard error lm-eval could not compute ("N/A")."""
    return {
        "results": {
            "arc_easy": {"name": "arc_easy", "alias": "arc_easy", "sample_len": 5, "acc,none": 0.0,
                         "acc_stderr,none": 0.0, "acc_norm,none": 0.2, "acc_norm_stderr,none": 0.20000000000000004},
            "lambada_openai": {"name": "lambada_openai", "alias": "lambada_openai", "sample_len": 5,
                               "perplexity,none": 27141810.56626823, "perplexity_stderr,none": 24098269394.783257,
                               "acc,none": 0.0, "acc_stderr,none": 0.0},
            "triviaqa": {"alias": "triviaqa", "exact_match,remove_whitespace": 0.25,
                         "exact_match_stderr,remove_whitespace": "N/A"},
        },
        "group_subtasks": {},
        "versions": {"arc_easy": 1.0, "lambada_openai": 1.0, "triviaqa": 3.0},
        "n-shot": {"arc_easy": 0, "lambada_openai": 0, "triviaqa": 0},
        "higher_is_better": {"arc_easy": {"acc": True, "acc_norm": True}, "lambada_openai": {"perplexity": False}},
        "n-samples": {"arc_easy": {"original": 2376, "effective": 5},
                      "lambada_openai": {"original": 5153, "effective": 5},
                      "triviaqa": {"original": 17944, "effective": 4}},
        "config": {"model": "WorkbenchLM", "model_args": None, "batch_size": None, "limit": 5, "bootstrap_iters": 100},
        "git_hash": None,
        "transformers_version": "5.24.0",
        "lm_eval_version": "0.4.13",
    }


def test_metrics_stderr_counts_and_config():
    res = from_lm_eval(lm_eval_output(), name="demo")
    assert isinstance(res, EvalResults)
    assert res.tasks == ["arc_easy", "lambada_openai", "triviaqa"]
    # "<metric>,none" -> "<metric>"; strings ("alias") and keys without a filter ("sample_len") are not metrics
    assert res.metrics["arc_easy"] == {"acc": 0.0, "acc_norm": 0.2}
    assert res.metrics["lambada_openai"] == {"perplexity": 27141810.56626823, "acc": 0.0}
    assert res.stderr["arc_easy"] == {"acc": 0.0, "acc_norm": pytest.approx(0.2)}
    assert res.stderr["lambada_openai"]["perplexity"] == pytest.approx(24098269394.783257)
    # another filter stays in the name; lm-eval's "N/A" standard error becomes None
    assert res.metrics["triviaqa"] == {"exact_match,remove_whitespace": 0.25}
    assert res.stderr["triviaqa"] == {"exact_match,remove_whitespace": None}
    assert res.counts == {"arc_easy": {"n_docs": 5}, "lambada_openai": {"n_docs": 5}, "triviaqa": {"n_docs": 4}}
    assert res.config == {"model": "demo", "num_params": None, "num_fewshot": 0, "limit": 5,
                          "tasks": ["arc_easy", "lambada_openai", "triviaqa"]}
    assert res.versions == {"lm-eval": "0.4.13", "transformers": "5.24.0"}
    assert res.samples == {}


def test_table_model_and_fewshot():
    out = lm_eval_output()
    out["n-shot"]["triviaqa"] = 5
    res = from_lm_eval(out, torch.nn.Linear(3, 2))
    assert res.config["model"] == "WorkbenchLM"              # lm-eval's name when none is given
    assert res.config["num_params"] == 3 * 2 + 2
    assert res.config["num_fewshot"] == {"arc_easy": 0, "lambada_openai": 0, "triviaqa": 5}
    table = res.table()
    assert len(table) == 5 and math.isnan(table.set_index("task").loc["triviaqa", "stderr"])
    assert res["lambada_openai"]["acc"] == 0.0
    # the JSON form reads back
    assert EvalResults.from_dict(res.to_dict()).metrics == res.metrics


def test_minimal_output():
    """Only `results` is required (an lm-eval results JSON trimmed by hand, say)."""
    res = from_lm_eval({"results": {"piqa": {"acc,none": 0.6}}})
    assert res.metrics == {"piqa": {"acc": 0.6}} and res.stderr == {"piqa": {"acc": None}}
    assert res.counts == {} and res.config["num_fewshot"] is None and res.config["model"] == "model"
