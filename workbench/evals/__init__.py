"""Few-shot evaluation: request engine, benchmark tasks, metrics, lm-evaluation-harness bridge, reports.

    from workbench.evals import evaluate
    results = evaluate(model, ["piqa", "arc_easy"], num_fewshot=5, limit=500)
    results.table()

- `runner.evaluate`: tasks -> requests -> engine -> metrics -> `results.EvalResults`, written in lm-eval's
  results schema (`schema`: results JSON, `--log_samples` JSONL); `lm_eval_tasks`: any lm-eval task (its task
  manager, --include-path YAMLs) on the same engine.
- `engine.RequestEngine` scores requests (`prefix_tree`: shared prefixes run once); `caching.CachingEngine`
  wraps it with a resumable `RequestCache`; `distributed` shards it over processes.
- `tasks`: one module per task family, each a declarative `TaskSpec` list; `metrics`: lm-eval's definitions
  (bootstrapped standard errors included); `filters`: lm-eval's answer extraction; `generation_kwargs`: its
  generation arguments.
- `harness`: `WorkbenchLM` (registered with lm-eval as "workbench" when that module is imported) and the
  lm-eval YAML export of our tasks; `lm_eval_cli`: `workbench lm-eval ...`, lm-eval's CLI with it registered;
  `baselines`, `report`: published results and report pages.
"""

from workbench.evals.caching import CachingEngine, RequestCache
from workbench.evals.engine import RequestEngine
from workbench.evals.results import EvalResults
from workbench.evals.runner import evaluate
from workbench.evals.tasks import (
    GenerationTask,
    LoglikelihoodTask,
    MultipleChoiceTask,
    PartialScoringTask,
    RollingLoglikelihoodTask,
    Task,
    TaskSpec,
    get_tasks,
    known_tasks,
)

__all__ = [
    "CachingEngine",
    "EvalResults",
    "GenerationTask",
    "LoglikelihoodTask",
    "MultipleChoiceTask",
    "PartialScoringTask",
    "RequestCache",
    "RollingLoglikelihoodTask",
    "RequestEngine",
    "Task",
    "TaskSpec",
    "evaluate",
    "get_tasks",
    "known_tasks",
]
