"""Any lm-eval task on the workbench engine: names from lm-eval's task zoo, or YAML tasks of your own
(`include_path`), run by lm-eval's `simple_evaluate` with `WorkbenchLM` (so `RequestEngine`'s prefix sharing and the
resumable request cache apply), returned as `EvalResults` in the same results schema as the built-in tasks.

    res = evaluate_lm_eval_tasks(model, ["my_task"], include_path="my_tasks/", limit=100)
    res.write("out", log_samples=True)

Malformed YAML tasks fail before any request runs, with an error naming the YAML file and the field.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any
from unittest import mock

from workbench.evals.results import EvalResults


def evaluate_lm_eval_tasks(
    model: Any,
    tasks: Sequence[str],
    include_path: str | os.PathLike | None = None,
    num_fewshot: int | None = None,
    limit: int | float | None = None,
    batch_size: int | str = "auto",
    seed: int = 1234,
    cache: str | os.PathLike | None = None,
    progress: bool = True,
    bootstrap_iters: int = 100_000,
    task_manager: Any = None,
) -> EvalResults:
    """Evaluate `model` on lm-eval tasks through lm-eval's task manager.

    Args:
        model: a workbench model (or a name for `workbench.load`).
        tasks: lm-eval task or group names (those of `include_path` included), or paths of task YAML files
            (as lm-eval's `--tasks path/task.yaml`).
        include_path: a folder of lm-eval task YAMLs (lm-eval's --include_path); lm-eval's own tasks stay visible.
        num_fewshot: shots (None: each task's own `num_fewshot`, as lm-eval).
        limit, batch_size, seed, bootstrap_iters: as `workbench.evals.evaluate` (the seed goes to all four of
            lm-eval's seeds).
        cache: a request cache path (JSONL), reused by a rerun.
        task_manager: the `TaskManager` of `resolve_lm_eval_tasks` (default: built here).
        progress: progress bars; False also silences lm-eval's and `datasets`' bars and logs (`quiet_lm_eval`).

    Returns:
        `EvalResults` (metrics, lm-eval's metadata and per-document records).

    Raises:
        KeyError: a task name lm-eval does not know. ValueError: a malformed task YAML (file, line, field).
        FileNotFoundError: `include_path` is not a folder, a `.yaml` path is not a file.
    """
    import lm_eval

    from workbench.evals.harness import WorkbenchLM
    from workbench.evals.lm_eval_results import from_lm_eval
    from workbench.evals.runner import check_limit, versions

    check_limit(limit)
    manager, task_list = resolve_lm_eval_tasks(tasks, include_path, task_manager)
    lm = WorkbenchLM(pretrained=model, batch_size=batch_size, cache=os.fspath(cache) if cache else None, seed=seed)
    lm.progress = progress
    t0 = time.time()
    with quiet_lm_eval(not progress):
        out = lm_eval.simple_evaluate(
            model=lm, tasks=task_list, num_fewshot=num_fewshot, limit=limit,
            bootstrap_iters=bootstrap_iters, task_manager=manager, log_samples=True, random_seed=seed,
            numpy_random_seed=seed, torch_random_seed=seed, fewshot_random_seed=seed,
        )
    res = from_lm_eval(out, lm.model_engine.model)
    res.config.update({"seed": seed, "batch_size": batch_size, "bootstrap_iters": bootstrap_iters,
                       "include_path": os.fspath(include_path) if include_path else None,
                       "device": str(lm.model_engine.device), "engine_stats": dict(lm.engine.stats),
                       "wall_time_s": round(time.time() - t0, 3), "cache": os.fspath(cache) if cache else None})
    res.versions = versions()
    return res


def resolve_lm_eval_tasks(tasks: Sequence[str], include_path: str | os.PathLike | None = None,
                          task_manager: Any = None) -> tuple[Any, list[str | dict]]:
    """lm-eval's task manager for `tasks` and the task list for `simple_evaluate` (names, and the configs of
    `.yaml` paths), every task checked before any request runs.

    Args:
        tasks: lm-eval task or group names, or task `.yaml` paths.
        include_path: a folder of task YAMLs (checked with `check_yaml_tasks`).
        task_manager: a `TaskManager` to use (else one over `include_path`, plus lm-eval's own tasks only when
            a name is not in `include_path`: lm-eval's index takes seconds to build).

    Returns:
        `(task_manager, [name or config dict, ...])`.

    Raises:
        KeyError: a name neither built in nor known to lm-eval (lists the built-in tasks).
        FileNotFoundError: `include_path` is not a folder, a `.yaml` path is not a file.
        ValueError: a malformed task YAML (file, line, field).
    """
    from lm_eval.tasks import TaskManager

    from workbench.evals.tasks import known_tasks

    if include_path is not None:
        include_path = Path(include_path)
        if not include_path.is_dir():
            raise FileNotFoundError(f"--include-path {include_path} is not a folder of lm-eval task YAMLs")
        check_yaml_tasks(include_path)
    names = [t for t in tasks if not str(t).endswith(".yaml")]
    configs = yaml_task_configs([t for t in tasks if str(t).endswith(".yaml")])
    manager = task_manager
    if manager is None and include_path is not None:
        manager = TaskManager(include_path=str(include_path), include_defaults=False)
        if any(t not in manager.all_tasks for t in names):
            manager = TaskManager(include_path=str(include_path))
    elif manager is None and names:
        manager = TaskManager()
    elif manager is None:  # YAML files only: their own folders (for their includes and !function modules)
        manager = TaskManager(include_path=sorted({str(Path(t).parent.absolute()) for t in tasks}),
                              include_defaults=False)
    unknown = [t for t in names if t not in manager.all_tasks]
    if unknown:
        where = f" or in {include_path}" if include_path else " (add --include-path DIR for your own YAML tasks)"
        raise KeyError(f"unknown task(s) {unknown}: neither built in (known tasks: {', '.join(known_tasks())}; "
                       f"`--tasks list`) nor an lm-eval task{where}")
    return manager, [*names, *configs]


def yaml_task_configs(paths: Sequence[str | os.PathLike]) -> list[dict]:
    """lm-eval task configs of YAML files given as tasks (as lm-eval's CLI reads `--tasks path/task.yaml`:
    `load_yaml(path, resolve_func=True)`), each checked by `check_yaml_tasks` first.

    Raises:
        FileNotFoundError: a path that is not a file. ValueError: a malformed YAML (file, line, field).
    """
    from lm_eval.tasks._yaml_loader import load_yaml

    out = []
    for path in map(Path, paths):
        if not path.is_file():
            raise FileNotFoundError(f"task YAML {path} does not exist")
        check_yaml_tasks(path)
        out.append(load_yaml(path.absolute(), resolve_func=True))
    return out


@contextlib.contextmanager
def quiet_lm_eval(quiet: bool = True) -> Iterator[None]:
    """While active (when `quiet`): no `datasets` progress bars ("Generating test split"), no lm-eval progress
    bars (its request building), lm-eval's INFO logs off, and lm-eval's git-hash probe without git's
    "fatal: not a git repository" on stderr. Everything is restored on exit."""
    if not quiet:
        yield
        return
    import datasets
    import lm_eval.api.task
    import lm_eval.evaluator
    from lm_eval.loggers.utils import get_commit_from_path
    from tqdm import tqdm

    def git_hash() -> str | None:  # lm-eval's get_git_commit_hash, git's stderr discarded
        try:
            out = subprocess.check_output(["git", "describe", "--always"], stderr=subprocess.DEVNULL)  # noqa: S607
            return out.strip().decode()
        except (subprocess.CalledProcessError, FileNotFoundError):
            return get_commit_from_path(os.getcwd())

    bars = datasets.is_progress_bar_enabled()
    logger = logging.getLogger("lm_eval")
    level = logger.level
    datasets.disable_progress_bars()
    logger.setLevel(logging.WARNING)
    try:
        with mock.patch.object(lm_eval.api.task, "tqdm", functools.partial(tqdm, disable=True)), \
                mock.patch.object(lm_eval.evaluator, "get_git_commit_hash", git_hash):
            yield
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()


def check_yaml_tasks(folder: Path) -> None:
    """Parse every task YAML under `folder` (or the one YAML file `folder`) as lm-eval does and check its Jinja
    templates.

    Raises:
        ValueError: a file that is not YAML, or a template (`doc_to_text`, `doc_to_target`, `doc_to_choice`, ...)
            with a Jinja syntax error; the message names the file, the line and the field.
    """
    import jinja2
    from lm_eval.tasks._yaml_loader import load_yaml

    env = jinja2.Environment()
    for path in [folder] if folder.is_file() else sorted(folder.rglob("*.yaml")):
        try:
            config = load_yaml(path, resolve_func=False)
        except Exception as err:  # yaml.YAMLError, a missing include ...
            raise ValueError(f"{path}: not a valid lm-eval task YAML ({err})") from None
        if not isinstance(config, dict):
            continue
        text = path.read_text(encoding="utf-8").splitlines()
        for field in ("doc_to_text", "doc_to_target", "doc_to_choice", "description", "gen_prefix"):
            value = config.get(field)
            if not isinstance(value, str):
                continue
            try:
                env.parse(value)
            except jinja2.TemplateSyntaxError as err:
                line = next((i for i, t in enumerate(text, 1) if t.lstrip().startswith(field + ":")), None)
                raise ValueError(f"{path}:{line}: field {field!r} is not a valid Jinja template ({err.message}): "
                                 f"{value!r}") from None
