"""lm-eval's command line and task manager on the workbench engine, offline:

- `workbench lm-eval --model workbench ...` (lm-eval 0.4.13 has no plugin entry points, so the workbench registers
  its model and forwards every argument to lm-eval's CLI) in a subprocess, on a local YAML task;
- `workbench eval --include-path DIR --tasks <lm-eval task>`: lm-eval's TaskManager with `WorkbenchLM`, the
  same numbers as the built-in task on the same file, the same results schema, sample logs;
- a YAML task with a bad template is refused naming the file, line and field.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

lm_eval = pytest.importorskip("lm_eval")

OFFLINE = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def piqa_yaml(tmp_path_factory, shared_data) -> Path:
    from workbench.evals.harness import export_lm_eval_tasks

    data = shared_data / "evals"
    if not (data / "piqa").is_dir():
        pytest.skip("piqa data is absent from ../shared/data/evals")
    out = tmp_path_factory.mktemp("yaml")
    export_lm_eval_tasks(["piqa"], out, data)
    return out


def _workbench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "workbench.cli", *args], capture_output=True, text=True,
                          env=OFFLINE, timeout=600)


@pytest.mark.slow
def test_lm_eval_cli_runs_the_workbench_model(tmp_path, piqa_yaml, model_dir, shared_data):
    import workbench
    from workbench.evals import evaluate

    r = _workbench("lm-eval", "--model", "workbench", "--model_args", f"pretrained={model_dir}", "--tasks",
                   "wb_piqa", "--include_path", str(piqa_yaml), "--limit", "4", "--device", "cpu",
                   "--output_path", str(tmp_path / "out"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert "wb_piqa" in r.stdout or "piqa" in r.stdout
    (path,) = (tmp_path / "out").rglob("results_*.json")
    theirs = json.loads(path.read_text())["results"]["wb_piqa"]
    ours = evaluate(workbench.load(str(model_dir)), "piqa", limit=4, data_dir=shared_data / "evals", progress=False)
    assert theirs["acc,none"] == ours["piqa"]["acc"] and theirs["acc_norm,none"] == ours["piqa"]["acc_norm"]


@pytest.mark.slow
def test_eval_runs_lm_eval_yaml_tasks_on_the_engine(tmp_path, piqa_yaml, model_dir, shared_data):
    import workbench
    from workbench.evals import evaluate

    r = _workbench("eval", "--model", str(model_dir), "--tasks", "wb_piqa", "--include-path", str(piqa_yaml),
                   "--limit", "4", "--output", str(tmp_path / "out"), "--log-samples", "--quiet", "--no-report")
    assert r.returncode == 0, r.stderr[-3000:]
    (path,) = (tmp_path / "out").rglob("results_*.json")
    saved = json.loads(path.read_text())
    ours = evaluate(workbench.load(str(model_dir)), "piqa", limit=4, data_dir=shared_data / "evals", progress=False)
    row = saved["results"]["wb_piqa"]
    assert row["acc,none"] == ours["piqa"]["acc"] and row["acc_stderr,none"] == pytest.approx(ours.stderr["piqa"]["acc"])
    assert saved["n-samples"]["wb_piqa"] == {"original": 1838, "effective": 4} and saved["versions"]["wb_piqa"] == 1.0
    assert saved["workbench"]["config"]["engine_stats"]["computed"] == 8  # the workbench engine answered
    (samples,) = (tmp_path / "out").rglob("samples_wb_piqa_*.jsonl")
    lines = [json.loads(x) for x in samples.read_text().splitlines()]
    # lm-eval writes responses as strings ("-326.07", "False")
    ll = [float(r[0]) for s in sorted(lines, key=lambda s: s["doc_id"]) for r in s["filtered_resps"]]
    assert ll == pytest.approx([x for rec in ours.samples["piqa"] for x in rec["loglikelihoods"]], abs=1e-5)
    assert lines[0]["arguments"]["gen_args_0"]["arg_0"].endswith("Answer:")


def test_yaml_task_with_a_bad_template_is_refused(tmp_path, model_dir):
    from workbench.evals.lm_eval_tasks import evaluate_lm_eval_tasks

    (tmp_path / "bad.yaml").write_text("task: bad\ndataset_path: json\noutput_type: multiple_choice\n"
                                       "doc_to_text: \"{{question\"\ndoc_to_target: 0\ndoc_to_choice: [a, b]\n")
    with pytest.raises(ValueError, match=r"bad\.yaml:4: field 'doc_to_text' is not a valid Jinja template"):
        evaluate_lm_eval_tasks(object(), ["bad"], include_path=tmp_path)
    (tmp_path / "bad.yaml").write_text("task: bad\n  doc_to_text: [\n")
    with pytest.raises(ValueError, match=r"bad\.yaml: not a valid lm-eval task YAML"):
        evaluate_lm_eval_tasks(object(), ["bad"], include_path=tmp_path)


def test_workbench_lm_eval_forwards_help():
    r = _workbench("lm-eval", "run", "--help")
    assert r.returncode == 0 and "--model_args" in r.stdout


@pytest.mark.slow
def test_lm_eval_wikitext_yaml_on_the_engine_equals_hf_backend(tmp_path, model_dir):
    """lm-eval's own wikitext.yaml (rolling log-likelihood, its detokenizer and word/byte counts), its dataset
    replaced by local pages (held-out KJV chapters): the workbench engine through lm-eval's task manager gives
    the hf backend's word/byte perplexity and bits per byte."""
    import re
    import shutil

    import lm_eval.tasks
    from lm_eval.tasks import TaskManager

    from workbench.evals.lm_eval_tasks import evaluate_lm_eval_tasks
    from workbench.evals.tasks import get_tasks

    src = Path(lm_eval.tasks.__file__).parent / "wikitext"
    pages = [{"page": d["text"][:3000]} for d in get_tasks("kjv_heldout")[0].docs()[:3]]
    data = tmp_path / "pages.jsonl"
    data.write_text("".join(json.dumps(p) + "\n" for p in pages))
    yaml = (src / "wikitext.yaml").read_text()
    yaml = re.sub(r"^dataset_path: .*$", "dataset_path: json", yaml, flags=re.M)
    yaml = re.sub(r"^dataset_name: .*$", f'dataset_kwargs: {{data_files: {{test: "{data}"}}}}', yaml, flags=re.M)
    yaml = re.sub(r"^(training|validation)_split: .*\n", "", yaml, flags=re.M).replace("task: wikitext",
                                                                                        "task: local_wikitext")
    (tmp_path / "yaml").mkdir()
    (tmp_path / "yaml" / "local_wikitext.yaml").write_text(yaml)
    shutil.copy(src / "preprocess_wikitext.py", tmp_path / "yaml")
    ours = evaluate_lm_eval_tasks(str(model_dir), ["local_wikitext"], include_path=tmp_path / "yaml", progress=False)
    theirs = lm_eval.simple_evaluate(
        model="hf", model_args=f"pretrained={model_dir},dtype=float32", tasks=["local_wikitext"], device="cpu",
        task_manager=TaskManager(include_path=str(tmp_path / "yaml"), include_defaults=False), batch_size=4)
    row = ours.to_dict()["results"]["local_wikitext"]
    for metric in ("word_perplexity", "byte_perplexity", "bits_per_byte"):
        assert row[f"{metric},none"] == pytest.approx(theirs["results"]["local_wikitext"][f"{metric},none"], rel=1e-5)
        assert row[f"{metric}_stderr,none"] == "N/A"
    assert ours.to_dict()["higher_is_better"]["local_wikitext"] == {m: False for m in
                                                                   ("word_perplexity", "byte_perplexity", "bits_per_byte")}
