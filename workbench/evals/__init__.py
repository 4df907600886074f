"""Few-shot evaluation: request engine, benchmark tasks, metrics, lm-evaluation-harness bridge, reports.

    from workbench.evals import evaluate
    results = evaluate(model, ["piqa", "arc_easy"], num_fewshot=5, limit=500)
    results.table()

`workbench.evals.harness.WorkbenchLM` is registered with lm-eval as "workbench" when that module is imported.
"""

from workbench.evals.engine import RequestCache, RequestEngine
from workbench.evals.results import EvalResults
from workbench.evals.runner import evaluate
from workbench.evals.tasks import (
    GenerationTask,
    LoglikelihoodTask,
    MultipleChoiceTask,
    PartialScoringTask,
    Task,
    get_tasks,
    known_tasks,
)

__all__ = [
    "EvalResults",
    "GenerationTask",
    "LoglikelihoodTask",
    "MultipleChoiceTask",
    "PartialScoringTask",
    "RequestCache",
    "RequestEngine",
    "Task",
    "evaluate",
    "get_tasks",
    "known_tasks",
]
