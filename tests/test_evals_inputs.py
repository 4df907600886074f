"""Pieces of lm-eval reproduced by the workbench, each against lm-eval's own code; malformed inputs.

- answer filters (regex with GSM8K's strict and flexible patterns, take_first, remove_whitespace) and exact_match
  (regexes_to_ignore, case, punctuation) against lm-eval's filter ensembles and metric;
- the bootstrapped perplexity standard error against lm-eval's `bootstrap_stderr`, resample for resample;
- `WorkbenchLM.generate_until` honours do_sample / temperature / top_p / top_k / until / max_gen_toks;
- malformed data: each error names the file, line and field.
"""

from __future__ import annotations

import argparse
import json
import random

import pytest

lm_eval = pytest.importorskip("lm_eval")

RESPONSES = [
    " She has 3 + 4 = 7 apples.\n#### 7", " #### -1,250.5 and then 12", "  the answer is $1,000.", "no number",
    " #### 42.", " 5 apples and 6 pears: 11", "", "  Paris  ", " twelve, 12\n#### 12",
]
TARGETS = ["She has 3 + 4 = 7 apples.\n#### 7", "#### -1250.5", "#### 1000", "#### 3", "#### 42", "#### 11", "#### 0",
           "paris", "#### 12"]


@pytest.mark.parametrize("name", ["strict-match", "flexible-extract"])
def test_gsm8k_filters_and_exact_match_equal_lm_eval(name):
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters import build_filter_ensemble

    from workbench.evals import metrics as M
    from workbench.evals.filters import GSM8K_FILTERS, apply_pipeline

    pipeline = GSM8K_FILTERS[name]
    ensemble = build_filter_ensemble(name, [(step, kw or None) for step, kw in pipeline])
    theirs = list(_apply(ensemble, [[r] for r in RESPONSES]))
    ours = [apply_pipeline(pipeline, [r]) for r in RESPONSES]
    assert ours == theirs
    opts = dict(ignore_case=True, ignore_punctuation=False, regexes_to_ignore=[",", "\\$", "(?s).*#### ", "\\.$"])
    for answer, target in zip(ours, TARGETS):
        ref = exact_match_hf_evaluate(predictions=[answer], references=[target], **opts)["exact_match"]
        assert M.exact_match(answer, [target], **opts) == ref, (answer, target)
    assert {a for a in ours} != {"[invalid]"}  # the patterns do extract answers here


def test_whitespace_filter_and_triviaqa_match_equal_lm_eval():
    from lm_eval.api.metrics import exact_match_hf_evaluate
    from lm_eval.filters import build_filter_ensemble

    from workbench.evals import metrics as M
    from workbench.evals.filters import TRIVIAQA_FILTERS, apply_pipeline

    pipeline = TRIVIAQA_FILTERS["remove_whitespace"]
    theirs = list(_apply(build_filter_ensemble("remove_whitespace", [(s, kw or None) for s, kw in pipeline]),
                         [[r] for r in RESPONSES]))
    ours = [apply_pipeline(pipeline, [r]) for r in RESPONSES]
    assert ours == theirs
    for answer in ours:
        for ref in ["paris", "Paris!", "#### 7", "no number "]:
            want = exact_match_hf_evaluate(predictions=[answer], references=[ref], ignore_case=True,
                                           ignore_punctuation=True)["exact_match"]
            assert M.exact_match(answer, [ref]) == want, (answer, ref)


def _apply(ensemble, resps):
    # lm-eval's FilterEnsemble.apply works on Instances; its steps are the filters' `apply(resps, docs)`
    for f in ensemble.filters:
        resps = f().apply(resps, [None] * len(resps))
    return resps


@pytest.mark.parametrize("n,iters", [(7, 1000), (150, 3000)])
def test_bootstrap_stderr_is_lm_evals(monkeypatch, n, iters):
    from lm_eval.api import metrics as lm_metrics

    from workbench.evals import metrics as M

    monkeypatch.setenv("DISABLE_MULTIPROC", "1")
    rnd = random.Random(n)
    lls = [-rnd.expovariate(0.3) for _ in range(n)]
    assert M.perplexity_stderr(lls, iters) == lm_metrics.bootstrap_stderr(lm_metrics.perplexity, lls, iters)
    assert M.perplexity_stderr(lls[:1], iters) is None and M.perplexity_stderr(lls, 0) is None


def test_pooled_stderr_and_weighted_perplexity_are_lm_evals():
    from lm_eval.api import metrics as lm_metrics

    from workbench.evals import metrics as M

    assert M.pooled_sample_stderr([0.1, 0.05, 0.2], [10, 40, 5]) == pytest.approx(
        lm_metrics.pooled_sample_stderr([0.1, 0.05, 0.2], [10, 40, 5]), rel=1e-12)
    pairs = [(-120.5, 30), (-80.25, 17)]
    assert M.weighted_perplexity(pairs) == lm_metrics.weighted_perplexity(pairs)
    assert M.bits_per_byte(pairs) == lm_metrics.bits_per_byte(pairs)


class _Req:
    def __init__(self, *args):
        self.args = args


@pytest.fixture(scope="module")
def wb_lm():
    import workbench
    from workbench.evals.harness import WorkbenchLM

    return WorkbenchLM(pretrained=workbench.load("demo"), batch_size=1)


def test_generate_until_honours_sampling_arguments(wb_lm):
    from workbench.generation import cut_at_stop, generate

    model, ctx = wb_lm.model_engine.model, "And God said"
    greedy = wb_lm.generate_until([_Req(ctx, {"until": ["\n"], "max_gen_toks": 12, "do_sample": False,
                                              "temperature": 0.0})], disable_tqdm=True)
    ids = model.tokenizer(ctx, return_tensors="pt")["input_ids"]

    def direct(**kw):
        out = generate(model, ids, max_new_tokens=12, eos_token_id=0, pad_token_id=0, stop_strings=["\n"],
                       tokenizer=model.tokenizer, **kw)
        return cut_at_stop(model.tokenizer.decode(out[0, ids.shape[1]:]), ["\n"])

    assert greedy == [direct()]
    kw = {"until": ["\n"], "max_gen_toks": 12, "do_sample": True, "temperature": 1.3, "top_k": 20, "top_p": 0.9,
          "seed": 7}
    sampled = wb_lm.generate_until([_Req(ctx, kw)], disable_tqdm=True)
    assert sampled == [direct(do_sample=True, temperature=1.3, top_k=20, top_p=0.9, seed=7)]
    assert sampled != greedy  # temperature and seed reach the sampler
    assert wb_lm.generate_until([_Req(ctx, {**kw, "seed": 8})], disable_tqdm=True) != sampled
    short = wb_lm.generate_until([_Req(ctx, {"until": ["\n"], "max_gen_toks": 3})], disable_tqdm=True)[0]
    assert len(model.tokenizer(short)["input_ids"]) <= 3 and greedy[0].startswith(short)
    with pytest.raises(ValueError, match="do_sample=true and temperature=0"):
        wb_lm.generate_until([_Req(ctx, {"do_sample": True, "temperature": 0.0})], disable_tqdm=True)
    with pytest.raises(ValueError, match="unknown generation argument.*'beams'.*allowed: until"):
        wb_lm.generate_until([_Req(ctx, {"beams": 4})], disable_tqdm=True)


# ---- malformed inputs ------------------------------------------------------------------------------------


def _jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


@pytest.mark.parametrize("bad,message", [
    ({"query": "q", "choices": "ab", "gold": 0}, r"mc\.jsonl:3: field 'choices' is a string"),
    ({"query": "q", "choices": [], "gold": 0}, r"mc\.jsonl:3: field 'choices' must be a non-empty list"),
    ({"query": "q", "choices": ["a", ""], "gold": 0}, r"mc\.jsonl:3: field 'choices' has empty"),
    ({"query": "q", "choices": ["a", "b"], "gold": 2}, r"mc\.jsonl:3: field 'gold'=2 is not an index"),
])
def test_multiple_choice_errors_name_file_line_field(tmp_path, bad, message):
    from workbench.evals import MultipleChoiceTask

    good = {"query": "q", "choices": ["a", "b"], "gold": 1}
    path = _jsonl(tmp_path / "mc.jsonl", [good, "", bad])  # a blank line is skipped but counted
    with pytest.raises(ValueError, match=message):
        MultipleChoiceTask.from_jsonl(path).docs()


def test_empty_continuation_and_triviaqa_layouts(tmp_path):
    from workbench.evals import LoglikelihoodTask
    from workbench.evals.tasks.triviaqa import read_triviaqa, references

    path = _jsonl(tmp_path / "ll.jsonl", [{"context": "a", "continuation": " b"}, {"context": "a", "continuation": ""}])
    with pytest.raises(ValueError, match=r"ll\.jsonl:2: field 'continuation' must be a non-empty string"):
        LoglikelihoodTask.from_jsonl(path).docs()
    task = LoglikelihoodTask("ll", [{"context": "a", "continuation": ""}], context=lambda d: d["context"],
                             continuation=lambda d: d["continuation"])
    with pytest.raises(ValueError, match="'ll': empty continuation"):
        task.requests(task.docs()[0], "")
    # lm-eval's raw TriviaQA layout is scored against its aliases (never its dict keys)
    assert references({"question": "q", "answer": {"aliases": ["Paris", "paris"], "value": "Paris"}}) == ["Paris", "paris"]
    path = _jsonl(tmp_path / "tq.jsonl", [{"question": "q", "answer": {"aliases": ["x"]}},
                                          {"question": "q", "answer": {"value": "x"}}])
    with pytest.raises(ValueError, match=r"tq\.jsonl:2: .*field 'answer' is a dict without 'aliases'"):
        read_triviaqa(path)


def test_limit_as_a_fraction(tmp_path):
    import workbench
    from workbench.evals import MultipleChoiceTask, evaluate
    from workbench.evals.runner import limited

    assert limited(1838, 0.01) == 19 and limited(10, 3) == 3 and limited(10, None) == 10
    assert limited(5, 1.0) == 1  # as lm-eval: only a value below 1 is a fraction
    path = _jsonl(tmp_path / "mc.jsonl", [{"query": f"q{i}", "choices": ["a", "b"], "gold": i % 2} for i in range(9)])
    res = evaluate(workbench.load("demo"), MultipleChoiceTask.from_jsonl(path), limit=0.5, progress=False)
    assert res.counts["mc"]["n_docs"] == 5 and res.to_dict()["n-samples"]["mc"] == {"original": 9, "effective": 5}
    for bad in (0, -1, 1.5, "3", True):
        with pytest.raises(ValueError, match="limit must be"):
            evaluate(workbench.load("demo"), MultipleChoiceTask.from_jsonl(path), limit=bad, progress=False)


def test_cli_runs_a_jsonl_task_and_prints_lm_evals_table(tmp_path, capsys):
    from workbench.evals.cli import add_cli

    path = _jsonl(tmp_path / "mine.jsonl", [{"query": f"Is {i} odd?", "choices": ["no", "yes"], "gold": i % 2}
                                            for i in range(4)])
    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["eval", "--tasks", str(path), "--output", str(tmp_path / "out"), "--quiet",
                              "--no-report", "--log-samples", "--limit", "0.5"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "|mine |" in out and "|Tasks|Version|Filter|n-shot|Metric|" in out.replace(" ", "")
    (saved,) = (tmp_path / "out").rglob("results_*.json")
    assert json.loads(saved.read_text())["n-samples"]["mine"] == {"original": 4, "effective": 2}
    (samples,) = (tmp_path / "out").rglob("samples_mine_*.jsonl")
    line = json.loads(samples.read_text().splitlines()[0])
    assert line["arguments"]["gen_args_1"] == {"arg_0": "Is 0 odd?", "arg_1": " yes"} and line["target"] == "0"
    assert set(line) >= {"doc", "resps", "filtered_resps", "filter", "metrics", "doc_hash", "prompt_hash", "acc"}


def test_results_files_of_the_former_layout_still_read(tmp_path):
    from workbench.evals import EvalResults

    old = {"results": {"piqa": {"acc": 0.5, "acc_norm": 0.6}}, "stderr": {"piqa": {"acc": 0.1, "acc_norm": None}},
           "counts": {"piqa": {"n_docs": 20}}, "warnings": [], "config": {"model": "demo"}, "versions": {"torch": "2"}}
    (tmp_path / "results.json").write_text(json.dumps(old))
    res = EvalResults.from_json(tmp_path / "results.json")
    assert res.metrics == old["results"] and res.stderr == old["stderr"] and res.counts["piqa"]["n_docs"] == 20
    new = res.to_dict()  # rewritten in lm-eval's schema
    assert new["results"]["piqa"]["acc,none"] == 0.5 and new["results"]["piqa"]["acc_norm_stderr,none"] == "N/A"
    assert EvalResults.from_dict(new).metrics == res.metrics
