"""Benchmark tasks over local files (or lm-eval's hub datasets), with lm-evaluation-harness's prompts.

- `base`: the task classes (documents -> requests -> scores -> metrics).
- `spec`: `TaskSpec`, one task's data, prompt and lm-eval template; `registry`: every spec, `get_tasks`.
- one module per task family (`piqa`, `arc`, `openbookqa`, `sciq`, `boolq`, `winogrande`, `lambada`, `hellaswag`,
  `mmlu`, `triviaqa`, `gsm8k`, `perplexity`), each a `SPECS` list; adding a family is adding such a module.
- `data_dir`, `readers`, `hub`: where the files are, reading them, the datasets-hub fallback.

Data files are the formats of `../shared/data/SOURCES.md` under a `data_dir` (default: `$WORKBENCH_DATA_DIR`,
else `../shared/data/evals` beside the checkout).
"""

from workbench.evals.tasks.base import GenerationTask, LoglikelihoodTask, MultipleChoiceTask, PartialScoringTask, Task
from workbench.evals.tasks.data_dir import DATA_HELP, default_data_dir, find_file, resolve_data_dir
from workbench.evals.tasks.hellaswag import hellaswag_preprocess, read_hellaswag_text
from workbench.evals.tasks.hub import HubSource
from workbench.evals.tasks.mmlu import MMLU_SUBJECTS, read_mmlu_csv
from workbench.evals.tasks.perplexity import RollingLoglikelihoodTask
from workbench.evals.tasks.readers import read_jsonl
from workbench.evals.tasks.registry import GROUPS, TASKS, get_tasks, known_tasks, register
from workbench.evals.tasks.spec import Loader, LmEvalTemplate, TaskSpec

BUILTIN = TASKS  # the former name: task name -> spec, and `BUILTIN[name](data_dir)` builds the task

__all__ = [
    "BUILTIN", "DATA_HELP", "GROUPS", "MMLU_SUBJECTS", "TASKS", "GenerationTask", "HubSource", "LmEvalTemplate",
    "Loader", "LoglikelihoodTask", "MultipleChoiceTask", "PartialScoringTask", "RollingLoglikelihoodTask", "Task",
    "TaskSpec", "default_data_dir", "find_file", "get_tasks", "hellaswag_preprocess", "known_tasks",
    "read_hellaswag_text", "read_jsonl",
    "read_mmlu_csv", "register", "resolve_data_dir",
]
