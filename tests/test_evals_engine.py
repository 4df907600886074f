"""Request engine, resume from the on-disk cache, task formatting and bad input.

Reference values come from transformers' GPT-NeoX (a plain full-sequence forward per request, lm-eval's
tokenisation rules re-derived here), never from the engine itself.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers")

from tests.helpers import build_tiny_checkpoint


@pytest.fixture(scope="module")
def model(model_dir):
    import workbench

    return workbench.load(str(model_dir), dtype="float32")


@pytest.fixture(scope="module")
def hf(model_dir):
    m = transformers.GPTNeoXForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    return m, transformers.AutoTokenizer.from_pretrained(model_dir)


@pytest.fixture(scope="module")
def data_dir(shared_data) -> Path:
    return shared_data / "evals"


def _reference_ll(hf, context: str, continuation: str, max_length: int) -> tuple[float, bool]:
    """lm-eval's HFLM rules, spelled out: whitespace to the continuation, split of the joint encoding, left cut."""
    m, tok = hf
    n = len(context) - len(context.rstrip())
    if n:
        context, continuation = context[:-n], context[-n:] + continuation
    whole, ctx = tok.encode(context + continuation), tok.encode(context)
    cont = whole[len(ctx):]
    inp = (ctx + cont)[-(max_length + 1):][:-1]
    with torch.no_grad():
        logp = torch.log_softmax(m(torch.tensor([inp])).logits[0].float(), -1)[-len(cont):]
    t = torch.tensor(cont)
    return float(logp.gather(1, t[:, None]).sum()), bool((logp.argmax(-1) == t).all())


REQUESTS = [
    ("Question: Which is heavier?\nAnswer:", " a kilogram of iron"),
    ("Question: Which is heavier?\nAnswer:", " a kilogram of feathers, obviously"),
    ("Question: Which is heavier?\nAnswer:", " A"),
    ("Question: Which is heavier?\nAnswer:", " B"),
    ("The cat sat on the ", "mat."),  # trailing space moves to the continuation
    ("In the beginning", " God created the heaven and the earth."),
    ("In the beginning", " was the Word"),  # a second shared context, shorter: left padding in the shared batch
]


@pytest.mark.parametrize("share", [True, False], ids=["shared_kv", "plain"])
@pytest.mark.parametrize("batch_size", ["auto", 1])
def test_loglikelihood_matches_transformers(model, hf, share, batch_size):
    from workbench.evals import RequestEngine

    eng = RequestEngine(model, batch_size=batch_size, share_context_kv=share, progress=False)
    got = eng.loglikelihood(REQUESTS)
    for (c, x), (ll, greedy) in zip(REQUESTS, got):
        ref_ll, ref_greedy = _reference_ll(hf, c, x, eng.max_length)
        assert ll == pytest.approx(ref_ll, abs=1e-4)
        assert greedy == ref_greedy
    # the four continuations of one context: a shared-context forward or the one-token group, not four forwards
    assert eng.stats["forwards"] < len(REQUESTS)


def test_left_truncation_counted(model, hf):
    from workbench.evals import RequestEngine

    eng = RequestEngine(model, max_length=16, progress=False)
    long_ctx = " ".join(["word"] * 40)
    (ll, greedy), = eng.loglikelihood([(long_ctx, " end of it")])
    ref = _reference_ll(hf, long_ctx, " end of it", 16)
    assert ll == pytest.approx(ref[0], abs=1e-4) and greedy == ref[1]
    assert eng.stats["truncated"] == 1


def test_empty_context_uses_prefix_token(model, hf):
    from workbench.evals import RequestEngine

    eng = RequestEngine(model, progress=False)
    ctx, cont = eng.encode_pair("", "Hello world")
    assert ctx == [0] and cont == hf[1].encode("Hello world")


def test_rolling_windows_cover_every_token_once(model, hf):
    from workbench.evals import RequestEngine
    from workbench.evals.engine import rolling_windows

    lm_utils = pytest.importorskip("lm_eval.utils")
    toks = list(range(100, 137))
    ours = rolling_windows(toks, 0, 8)
    theirs = [lm_utils.make_disjoint_window(w) for w in lm_utils.get_rolling_token_windows(toks, 0, 8, 1)]
    assert [(list(a), list(b)) for a, b in theirs] == ours
    eng = RequestEngine(model, max_length=8, progress=False)
    text = "Perplexity is the exponential of the average negative log-likelihood per token."
    total = eng.loglikelihood_rolling([text])[0]
    m, tok = hf
    ref = 0.0
    for ctx, pred in rolling_windows(tok.encode(text), 0, 8):
        inp = (ctx + pred)[:-1]
        with torch.no_grad():
            logp = torch.log_softmax(m(torch.tensor([inp])).logits[0].float(), -1)[-len(pred):]
        ref += float(logp.gather(1, torch.tensor(pred)[:, None]).sum())
    assert total == pytest.approx(ref, abs=1e-3)


def test_generate_until_matches_transformers_greedy(model, hf):
    from workbench.evals import RequestEngine

    m, tok = hf
    eng = RequestEngine(model, progress=False)
    prompts = ["Question: What is the capital of France?\nAnswer:", "Once upon a"]
    outs = eng.generate_until([(p, {"until": ["\n"], "max_gen_toks": 6}) for p in prompts])
    for p, o in zip(prompts, outs):
        ids = tok(p, return_tensors="pt").input_ids
        g = m.generate(ids, max_new_tokens=6, do_sample=False, pad_token_id=0)
        ref = tok.decode(g[0, ids.shape[1]:], skip_special_tokens=True).split("\n")[0]
        assert o == ref


# ---------------------------------------------------------------------------------------------------- resume


class Interrupt(Exception):
    pass


def test_resume_after_interrupt_recomputes_nothing_finished(model, data_dir, tmp_path):
    from workbench.evals import evaluate

    cache = tmp_path / "requests.jsonl"
    kw = dict(num_fewshot=1, limit=30, data_dir=data_dir, batch_size=4, progress=False)
    full = evaluate(model, ["arc_easy", "winogrande"], **kw)

    seen = []

    def kill_after_three(stats):
        seen.append(stats["computed"])
        if len(seen) == 3:
            raise Interrupt

    with pytest.raises(Interrupt):
        evaluate(model, ["arc_easy", "winogrande"], cache=cache, on_batch=kill_after_three, **kw)
    finished = seen[-1]
    lines = cache.read_text().splitlines()
    assert len(lines) == finished > 0

    resumed = evaluate(model, ["arc_easy", "winogrande"], cache=cache, **kw)
    total = sum(c["n_requests"] for c in resumed.counts.values())
    assert sum(c["n_cached"] for c in resumed.counts.values()) == finished
    assert sum(c["n_computed"] for c in resumed.counts.values()) == total - finished
    assert resumed.metrics == full.metrics
    for t in full.samples:
        for a, b in zip(full.samples[t], resumed.samples[t]):
            # the resumed run forms the uninterrupted run's batches: bit-identical log-likelihoods
            assert a["loglikelihoods"] == b["loglikelihoods"]
    # a third run computes nothing
    again = evaluate(model, ["arc_easy", "winogrande"], cache=cache, **kw)
    assert sum(c["n_computed"] for c in again.counts.values()) == 0


def test_cache_ignores_a_line_cut_short(tmp_path):
    from workbench.evals.engine import RequestCache

    c = RequestCache(tmp_path / "c.jsonl")
    c.put_many([("a", [1.0, True]), ("b", [2.0, False])])
    c.close()
    with open(tmp_path / "c.jsonl", "a") as f:
        f.write('{"k": "c", "v": [3.0')  # killed mid-write
    again = RequestCache(tmp_path / "c.jsonl")
    assert len(again) == 2 and again.get("b") == [2.0, False] and "c" not in again


def test_cache_keys_differ_between_models(model, tmp_path, neox_tokenizer_file):
    import workbench
    from workbench.evals.engine import model_fingerprint

    other = workbench.load(str(build_tiny_checkpoint(tmp_path / "other", neox_tokenizer_file)))
    with torch.no_grad():
        next(other.parameters()).add_(0.01)
    assert model_fingerprint(model) != model_fingerprint(other)


# ---------------------------------------------------------------------------------------------------- bad input


def test_unknown_task_lists_known_ones(data_dir):
    from workbench.evals import get_tasks

    with pytest.raises(KeyError) as e:
        get_tasks("piqaa", data_dir)
    assert "piqaa" in str(e.value) and "arc_easy" in str(e.value) and "hellaswag" in str(e.value)


def test_missing_data_file_says_where_it_looked(tmp_path):
    from workbench.evals import get_tasks

    with pytest.raises(FileNotFoundError) as e:
        get_tasks("piqa", tmp_path)
    msg = str(e.value)
    assert str(tmp_path / "piqa") in msg and "WORKBENCH_DATA_DIR" in msg and "SOURCES.md" in msg


def test_malformed_jsonl_names_file_and_line(tmp_path):
    from workbench.evals import MultipleChoiceTask

    p = tmp_path / "mine.jsonl"
    p.write_text('{"query": "Q1", "choices": ["a", "b"], "gold": 0}\n{"query": "Q2", "choices": ["a", "b"], gold: 1}\n')
    task = MultipleChoiceTask.from_jsonl(p)
    with pytest.raises(ValueError, match=r"mine\.jsonl:2: malformed JSON"):
        task.docs()
    p.write_text('{"query": "Q1", "choices": ["a", "b"]}\n')
    with pytest.raises(KeyError, match=r"mine\.jsonl:1: record lacks \['gold'\]"):
        MultipleChoiceTask.from_jsonl(p).docs()


def test_num_fewshot_larger_than_pool(model, data_dir, tmp_path):
    from workbench.evals import evaluate

    with pytest.raises(ValueError, match="num_fewshot=6 exceeds the 5 documents of the few-shot split"):
        evaluate(model, "mmlu_anatomy", num_fewshot=6, limit=2, data_dir=data_dir, progress=False)
    p = tmp_path / "three.jsonl"
    p.write_text("".join(json.dumps({"query": f"Q{i}", "choices": ["a", "b"], "gold": i % 2}) + "\n" for i in range(3)))
    from workbench.evals import MultipleChoiceTask

    with pytest.raises(ValueError, match="num_fewshot=3 exceeds the 2 documents"):
        evaluate(model, MultipleChoiceTask.from_jsonl(p), num_fewshot=3, progress=False)


def test_user_tasks_from_jsonl(model, hf, tmp_path):
    from workbench.evals import LoglikelihoodTask, MultipleChoiceTask, evaluate

    mc = tmp_path / "mc.jsonl"
    mc.write_text(json.dumps({"q": "Question: 2+2?\nAnswer:", "opts": ["4", "five"], "label": 0}) + "\n")
    ll = tmp_path / "ll.jsonl"
    ll.write_text(json.dumps({"c": "The sky is", "x": " blue"}) + "\n")
    tasks = [MultipleChoiceTask.from_jsonl(mc, query="q", choices="opts", gold="label"),
             LoglikelihoodTask.from_jsonl(ll, context="c", continuation="x")]
    res = evaluate(model, tasks, progress=False)
    ref = [_reference_ll(hf, "Question: 2+2?\nAnswer:", " " + o, 2048)[0] for o in ["4", "five"]]
    assert res.samples["mc"][0]["loglikelihoods"] == pytest.approx(ref, abs=1e-4)
    assert res.metrics["mc"]["acc"] == float(ref[0] > ref[1])
    ref_ll = _reference_ll(hf, "The sky is", " blue", 2048)
    assert res.samples["ll"][0]["perplexity"] == pytest.approx(ref_ll[0], abs=1e-4)
    table = res.table()
    assert list(table.columns) == ["task", "metric", "value", "stderr"]
    out = res.to_json(tmp_path / "r.json")
    from workbench.evals import EvalResults

    assert EvalResults.from_json(out).metrics == res.metrics


def test_overlong_context_recorded_in_results(model, tmp_path):
    from workbench.evals import LoglikelihoodTask, evaluate

    p = tmp_path / "long.jsonl"
    p.write_text(json.dumps({"context": " ".join(["word"] * 60), "continuation": " end"}) + "\n"
                 + json.dumps({"context": "short", "continuation": " end"}) + "\n")
    res = evaluate(model, LoglikelihoodTask.from_jsonl(p), max_length=32, progress=False)
    assert res.counts["long"]["n_truncated"] == 1
    assert any("left-truncated" in w for w in res.warnings)


def test_cli_bad_input_writes_no_result(model_dir, data_dir, tmp_path):
    out = tmp_path / "out"
    cmd = [sys.executable, "-c", "import sys, argparse; from workbench.evals.cli import add_cli; "
           "p = argparse.ArgumentParser(); s = p.add_subparsers(); add_cli(s); a = p.parse_args(sys.argv[1:]); "
           "sys.exit(a.func(a))"]
    r = subprocess.run(cmd + ["eval", "--model", str(model_dir), "--tasks", "piqa,nosuchtask", "--data-dir",
                              str(data_dir), "--output", str(out), "--quiet"], capture_output=True, text=True)
    assert r.returncode == 2 and "nosuchtask" in r.stderr and "known tasks" in r.stderr
    assert not list(out.rglob("results_*.json"))
    run = cmd + ["eval", "--model", str(model_dir), "--tasks", "arc_easy", "--limit", "3", "--data-dir", str(data_dir),
                 "--output", str(out), "--quiet", "--no-report", "--log-samples"]
    r = subprocess.run(run, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert "|arc_easy|" in r.stdout.replace(" ", "")  # lm-eval's markdown table
    (saved_path,) = out.rglob("results_*.json")
    saved = json.loads(saved_path.read_text())
    assert saved["config"]["limit"] == 3 and "torch" in saved["workbench"]["versions"]
    assert saved["n-samples"]["arc_easy"]["effective"] == 3
    lines = [json.loads(x) for x in next(out.rglob("samples_arc_easy_*.jsonl")).read_text().splitlines()]
    assert len(lines) == 3 and len(lines[0]["resps"]) == 4  # lm-eval's 4 choices (not GPT-3's unconditional ones)
    # a rerun writes new timestamped files beside the first ones
    assert subprocess.run(run, capture_output=True, text=True).returncode == 0
    assert len(list(out.rglob("results_*.json"))) == 2


def test_shared_few_shot_prefix_matches_transformers_and_runs_once(model, hf):
    from workbench.evals import RequestEngine

    shots = "".join(f"Question: What comes after {n}?\nAnswer: {n + 1}\n\n" for n in range(1, 6))
    requests = [
        (shots + f"Question: What comes after {q}?\nAnswer:", cont)
        for q in (7, 11, 20)
        for cont in (" 8", " 12", " twenty one", " 21 and more")  # one-token and multi-token answers
    ]
    plain = RequestEngine(model, share_context_kv=False, progress=False)
    shared = RequestEngine(model, progress=False)
    got_plain, got_shared = plain.loglikelihood(requests), shared.loglikelihood(requests)
    for (c, x), (ll_p, g_p), (ll_s, g_s) in zip(requests, got_plain, got_shared):
        ref_ll, ref_greedy = _reference_ll(hf, c, x, shared.max_length)
        assert ll_s == pytest.approx(ref_ll, abs=1e-4) and ll_p == pytest.approx(ref_ll, abs=1e-4)
        assert g_s == g_p == ref_greedy
    # the five examples are run once, not once per question and answer
    shot_tokens = len(shared.encode(shots))
    assert shared.stats["tokens"] < plain.stats["tokens"] - 2 * shot_tokens
