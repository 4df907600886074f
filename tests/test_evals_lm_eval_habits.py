"""lm-eval habits that carry over (review R1 of issue 14, items 3, 8, 9, 10, 11, 12, 19):

- a sampled generation task's samples follow the run's seed, as with lm-eval's hf backend (which samples from
  torch's generator, seeded by `torch_random_seed`);
- `evaluate(model_object)` names the model as the CLI does (`model.name_or_path`, "demo");
- gsm8k runs with lm-eval's default num_fewshot (5) when none is given, as `lm_eval --tasks gsm8k`;
- built-in and lm-eval tasks (names from `--include-path`, `.yaml` paths) mix in one run, from the CLI and
  from `evaluate`;
- quiet runs print no `datasets` / lm-eval progress bars and no git "fatal:" line;
- sample logs on disk have lm-eval's value types (`resps` and `filtered_resps` as strings, `target` a string).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

from tests.test_evals_agreement import data_dir  # noqa: E402, F401  (the benchmark-data fixture)
from tests.test_evals_lm_eval_schema import _run_lm_eval, gsm8k_dir, lm_eval_gsm8k_yaml  # noqa: E402, F401

GEN_YAML = """task: my_gen
dataset_path: json
dataset_kwargs: {{data_files: {{test: "{data}"}}}}
test_split: test
output_type: generate_until
doc_to_text: "{{{{question}}}}"
doc_to_target: "{{{{answer}}}}"
generation_kwargs: {{do_sample: true, temperature: 1.5, top_k: 40, top_p: 0.95, max_gen_toks: 12, until: ["\\n\\n"]}}
metric_list:
  - metric: exact_match
metadata:
  version: 1.0
"""


@pytest.fixture(scope="module")
def gen_yaml(tmp_path_factory) -> Path:
    """A local sampled-generation YAML task (do_sample, temperature, top_k, top_p), lm-eval's format."""
    d = tmp_path_factory.mktemp("gen_yaml")
    data = d / "gen.jsonl"
    data.write_text("".join(json.dumps({"question": f"And God said, let there be {w}", "answer": "light"}) + "\n"
                            for w in ("light", "a firmament", "lights")))
    (d / "gen.yaml").write_text(GEN_YAML.format(data=data))
    return d


@pytest.fixture(scope="module")
def demo():
    import workbench

    return workbench.load("demo", dtype="float32")


def _generations(out: dict) -> list[str]:
    return [s["resps"][0][0] for s in sorted(out["samples"]["my_gen"], key=lambda s: s["doc_id"])]


@pytest.mark.slow
def test_sampled_generations_follow_the_run_seed_as_hf_backend(gen_yaml, model_dir, demo):
    from lm_eval.tasks import TaskManager

    from workbench.evals.harness import WorkbenchLM
    from workbench.evals.lm_eval_tasks import evaluate_lm_eval_tasks

    logging.getLogger("lm_eval").setLevel(logging.ERROR)

    def run(model, seed: int) -> list[str]:
        return _generations(lm_eval.simple_evaluate(
            model=model, model_args=f"pretrained={model_dir},dtype=float32" if model == "hf" else None,
            tasks=["my_gen"], task_manager=TaskManager(include_path=str(gen_yaml), include_defaults=False),
            device="cpu", batch_size=3, log_samples=True, random_seed=seed, numpy_random_seed=seed,
            torch_random_seed=seed, fewshot_random_seed=seed))

    # lm-eval's own behaviour: the hf backend's samples depend on the seed, and repeat with it
    hf1, hf2 = run("hf", 1), run("hf", 2)
    assert hf1 != hf2 and run("hf", 1) == hf1
    # the same through lm-eval's simple_evaluate with the workbench model (`workbench lm-eval --seed`)
    wb1, wb2 = run(WorkbenchLM(pretrained=demo), 1), run(WorkbenchLM(pretrained=demo), 2)
    assert wb1 != wb2 and run(WorkbenchLM(pretrained=demo), 1) == wb1
    # and through `workbench eval --include-path ... --seed N`
    ours = {s: [r["resps"][0][0] for r in evaluate_lm_eval_tasks(demo, ["my_gen"], include_path=gen_yaml, seed=s,
                                                                 progress=False).samples["my_gen"]]
            for s in (1, 2)}
    assert ours[1] != ours[2]
    assert ours[1] == [r["resps"][0][0] for r in evaluate_lm_eval_tasks(
        demo, ["my_gen"], include_path=gen_yaml, seed=1, progress=False).samples["my_gen"]]


def test_python_api_names_the_model_as_the_cli(tmp_path, demo):
    from workbench.evals import MultipleChoiceTask, evaluate

    path = tmp_path / "mine.jsonl"
    path.write_text("".join(json.dumps({"query": f"Is {i} odd?", "choices": ["no", "yes"], "gold": i % 2}) + "\n"
                            for i in range(2)))
    res = evaluate(demo, [MultipleChoiceTask.from_jsonl(path)], progress=False)
    paths = res.write(tmp_path / "out")
    assert demo.name_or_path == "demo"  # what `workbench eval --model demo` writes as the model's name
    assert paths["results"].parent.name == "demo"
    assert json.loads(paths["results"].read_text())["config"]["model"] == "demo"


@pytest.mark.slow
def test_gsm8k_uses_lm_evals_default_num_fewshot(tmp_path, model_dir, gsm8k_dir):  # noqa: F811
    """No num_fewshot: lm-eval's gsm8k.yaml runs 5-shot; so does the built-in gsm8k, with the same prompt."""
    from lm_eval.tasks import TaskManager

    import workbench
    from workbench.evals import evaluate
    from workbench.evals.schema import sample_records

    lm_eval_gsm8k_yaml(tmp_path / "yaml", gsm8k_dir)
    logging.getLogger("lm_eval").setLevel(logging.ERROR)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["wb_gsm8k"], limit=1,
        task_manager=TaskManager(include_path=str(tmp_path / "yaml"), include_defaults=False), device="cpu",
        batch_size=1, bootstrap_iters=0, log_samples=True)
    res = evaluate(workbench.load(str(model_dir), dtype="float32"), "gsm8k", limit=1, data_dir=gsm8k_dir,
                   progress=False, bootstrap_iters=0)
    ours = res.to_dict()
    assert ours["n-shot"]["gsm8k"] == theirs["n-shot"]["wb_gsm8k"] == 5
    assert ours["configs"]["gsm8k"]["num_fewshot"] == 5
    mine = sample_records(res, "gsm8k")[0]
    assert mine["arguments"]["gen_args_0"]["arg_0"] == theirs["samples"]["wb_gsm8k"][0]["arguments"][0][0]
    for key in ("exact_match,strict-match", "exact_match,flexible-extract"):
        assert ours["results"]["gsm8k"][key] == theirs["results"]["wb_gsm8k"][key]
    # the configs block has lm-eval's task config: data, templates, generation settings, filters, metric options
    mine, lm = json.loads(json.dumps(ours["configs"]["gsm8k"])), json.loads(json.dumps(theirs["configs"]["wb_gsm8k"]))
    for key in ("dataset_path", "test_split", "fewshot_split", "doc_to_text", "doc_to_target", "output_type",
                "target_delimiter", "fewshot_delimiter", "num_fewshot", "generation_kwargs", "filter_list",
                "metric_list"):
        assert mine[key] == lm[key], (key, mine[key], lm[key])
    assert mine["metadata"]["version"] == lm["metadata"]["version"]
    assert mine["dataset_kwargs"]["data_files"] == lm["dataset_kwargs"]["data_files"]


@pytest.fixture(scope="module")
def arc_yaml(tmp_path_factory, data_dir) -> Path:  # noqa: F811
    from workbench.evals.harness import export_lm_eval_tasks

    out = tmp_path_factory.mktemp("arc_yaml")
    export_lm_eval_tasks(["arc_easy"], out, data_dir)
    return out


@pytest.mark.slow
def test_cli_mixes_built_in_and_lm_eval_tasks(tmp_path, arc_yaml, data_dir, capsys):  # noqa: F811
    from workbench.evals.cli import add_cli

    parser = argparse.ArgumentParser()
    add_cli(parser.add_subparsers())
    args = parser.parse_args(["eval", "--tasks", "arc_easy,wb_arc_easy", "--include-path", str(arc_yaml),
                              "--data-dir", str(data_dir), "--limit", "3", "--output", str(tmp_path / "out"),
                              "--quiet", "--no-report", "--log-samples"])
    assert args.func(args) == 0, capsys.readouterr().err
    (path,) = (tmp_path / "out").rglob("results_*.json")
    saved = json.loads(path.read_text())
    # the same documents and prompts both ways: the same numbers, both rows in lm-eval's schema
    for key in ("acc,none", "acc_norm,none"):
        assert saved["results"]["arc_easy"][key] == saved["results"]["wb_arc_easy"][key]
    assert saved["n-samples"]["arc_easy"]["effective"] == saved["n-samples"]["wb_arc_easy"]["effective"] == 3
    # the built-in task's configs block says what lm-eval's (of the exported YAML) says about the prompt
    mine, lm = saved["configs"]["arc_easy"], saved["configs"]["wb_arc_easy"]
    for key in ("doc_to_text", "doc_to_target", "doc_to_choice", "output_type", "target_delimiter",
                "fewshot_delimiter", "num_fewshot", "test_split"):
        assert mine[key] == lm[key], (key, mine[key], lm[key])
    # both parts ran on the engine and the run's request cache: the lm-eval part's requests (the built-in ones,
    # without ARC's unconditional "Answer:" ones) were all answered from the cache
    stats, n = saved["workbench"]["config"]["engine_stats"], saved["workbench"]["counts"]["arc_easy"]["n_requests"]
    assert stats["computed"] == n and 0 < stats["cached"] < n
    assert len(list((tmp_path / "out").rglob("samples_*.jsonl"))) == 2


@pytest.mark.slow
def test_evaluate_routes_lm_eval_names_and_yaml_paths(arc_yaml, data_dir, demo):  # noqa: F811
    from workbench.evals import evaluate
    from workbench.evals.lm_eval_tasks import evaluate_lm_eval_tasks

    direct = evaluate_lm_eval_tasks(demo, ["wb_arc_easy"], include_path=arc_yaml, limit=3, progress=False)
    by_path = evaluate(demo, str(arc_yaml / "wb_arc_easy.yaml"), limit=3, progress=False)
    by_name = evaluate(demo, ["arc_easy", "wb_arc_easy"], include_path=arc_yaml, limit=3, data_dir=data_dir,
                       progress=False)
    assert by_path.to_dict()["results"]["wb_arc_easy"] == direct.to_dict()["results"]["wb_arc_easy"]
    assert by_name["wb_arc_easy"] == direct["wb_arc_easy"]
    assert {m: by_name["arc_easy"][m] for m in ("acc", "acc_norm")} == by_name["wb_arc_easy"]
    assert by_path.config["model"] == by_name.config["model"] == "demo"
    with pytest.raises(KeyError, match=r"unknown task\(s\) \['no_such_task'\].*known tasks: .*piqa"):
        evaluate(demo, ["arc_easy", "no_such_task"], include_path=arc_yaml, progress=False)
    with pytest.raises(FileNotFoundError, match=r"nowhere\.yaml does not exist"):
        evaluate(demo, "/nowhere.yaml", progress=False)


@pytest.mark.slow
def test_quiet_lm_eval_run_prints_no_bars_and_no_git_probe(tmp_path, monkeypatch, capfd, demo, arc_yaml):
    from workbench.evals.lm_eval_tasks import evaluate_lm_eval_tasks

    monkeypatch.chdir(tmp_path)  # not a git repository: lm-eval's git probe prints "fatal: ..." here
    # a fresh copy of the data, so that `datasets` generates (and would show) its split again
    yaml = tmp_path / "yaml"
    yaml.mkdir()
    data = tmp_path / "arc.jsonl"
    src = (arc_yaml / "wb_arc_easy.yaml").read_text()
    old = src.split('test: "', 1)[1].split('"', 1)[0]
    data.write_text(Path(old).read_text())
    (yaml / "wb_arc_easy.yaml").write_text(src.replace(old, str(data)))
    capfd.readouterr()
    evaluate_lm_eval_tasks(demo, ["wb_arc_easy"], include_path=yaml, limit=2, progress=True)
    loud = capfd.readouterr().err
    assert "%|" in loud  # the bars this test looks for are there when progress is on
    data.write_text(data.read_text() + "\n")  # new content: `datasets` regenerates the split
    evaluate_lm_eval_tasks(demo, ["wb_arc_easy"], include_path=yaml, limit=2, progress=False)
    quiet = capfd.readouterr().err
    assert "%|" not in quiet and "Generating" not in quiet and "fatal" not in quiet, quiet[-2000:]


@pytest.mark.slow
def test_sample_logs_on_disk_have_lm_evals_value_types(tmp_path, model_dir, data_dir):  # noqa: F811
    """Our samples_<task>_<date>.jsonl against lm-eval's own writer (`EvaluationTracker.save_results_samples`)
    on the hf backend's samples: the same fields with the same JSON types, and the same values."""
    from lm_eval.loggers import EvaluationTracker

    import workbench
    from workbench.evals import evaluate
    from workbench.evals.harness import export_lm_eval_tasks

    tasks = ["arc_easy", "kjv_heldout"]  # multiple choice (resps of (ll, is_greedy)), rolling log-likelihood
    export_lm_eval_tasks(tasks, tmp_path / "yaml", data_dir)
    theirs = _run_lm_eval(model_dir, tmp_path / "yaml", ["wb_" + t for t in tasks], 0, 2)
    tracker = EvaluationTracker(output_path=str(tmp_path / "theirs" / "results.json"))
    tracker.date_id = "d"
    res = evaluate(workbench.load(str(model_dir), dtype="float32"), tasks, limit=2, data_dir=data_dir,
                   progress=False, bootstrap_iters=0)
    res.write(tmp_path / "ours", log_samples=True, date_id="d")

    def shape(x):
        return [shape(v) for v in x] if isinstance(x, list) else type(x).__name__

    for task in tasks:
        tracker.save_results_samples("wb_" + task, theirs["samples"]["wb_" + task])
        lm = [json.loads(x) for x in (tmp_path / "theirs" / f"samples_wb_{task}_d.jsonl").read_text().splitlines()]
        ours = next((tmp_path / "ours").rglob(f"samples_{task}_d.jsonl"))
        wb = [json.loads(x) for x in ours.read_text().splitlines()]
        assert len(lm) == len(wb) > 0
        for a, b in zip(sorted(wb, key=lambda s: s["doc_id"]), sorted(lm, key=lambda s: s["doc_id"])):
            for key in ("resps", "filtered_resps", "target", "doc_id", "arguments", "doc_hash"):
                assert shape(a[key]) == shape(b[key]), (task, key, a[key], b[key])
            assert set(b["metrics"]) <= set(a["metrics"])  # ours adds ARC's GPT-3 normalisations
            assert all(type(a[m]) is type(b[m]) for m in b["metrics"])
            assert a["target"] == b["target"] and a["arguments"] == b["arguments"]
            for x, y in zip(json.dumps(a["resps"]).split('"'), json.dumps(b["resps"]).split('"')):
                assert x == y or float(x) == pytest.approx(float(y), rel=1e-5, abs=1e-4), (task, x, y)
