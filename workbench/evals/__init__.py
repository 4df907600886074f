"""Few-shot evaluation: request engine, benchmark tasks, metrics, lm-evaluation-harness bridge, reports.

    from workbench.evals import evaluate
    results = evaluate(model, ["piqa", "arc_easy"], num_fewshot=5, limit=500)
    results.table()

- `runner.evaluate`: tasks -> requests -> engine -> metrics -> `results.EvalResults`.
- `engine.RequestEngine` scores requests (`prefix_tree`: shared prefixes run once); `caching.CachingEngine`
  wraps it with a resumable `RequestCache`; `distributed` shards it over processes.
- `tasks`: one module per task family, each a declarative `TaskSpec` list; `metrics`: lm-eval's definitions.
- `harness`: `WorkbenchLM` (registered with lm-eval as "workbench" when that module is imported) and the
  lm-eval YAML export of our tasks; `baselines`, `report`: published results and report pages.
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
    "RequestEngine",
    "Task",
    "TaskSpec",
    "evaluate",
    "get_tasks",
    "known_tasks",
]
