"""The task registry: every `TaskSpec` of the family modules in this package, task groups, and name lookup.

A family module is any module of this package with a `SPECS` list; it is found and registered on import, so a
new family needs no edit here. `register` adds specs from elsewhere (a user's own family module).
"""

from __future__ import annotations

import importlib
import os
import pkgutil
from collections.abc import Sequence
from pathlib import Path

from workbench.evals.tasks.base import Task
from workbench.evals.tasks.data_dir import resolve_data_dir
from workbench.evals.tasks.spec import TaskSpec

TASKS: dict[str, TaskSpec] = {}  # task name -> spec
GROUPS: dict[str, list[str]] = {}  # group name -> its tasks, in registration order


def register(*specs: TaskSpec) -> None:
    """Add task specs (and their groups) to the registry.

    Raises:
        ValueError: a task or group name that is already taken.
    """
    for spec in specs:
        if spec.name in TASKS or spec.name in GROUPS:
            raise ValueError(f"task {spec.name!r} is registered already")
        if spec.group is not None and spec.group in TASKS:
            raise ValueError(f"group {spec.group!r} has the name of a task")
        TASKS[spec.name] = spec
        if spec.group is not None:
            GROUPS.setdefault(spec.group, []).append(spec.name)


def family_modules() -> list[str]:
    """Names of this package's modules that declare task families (`SPECS`), in file-name order."""
    names = []
    for info in sorted(pkgutil.iter_modules([str(Path(__file__).parent)]), key=lambda i: i.name):
        module = importlib.import_module(f"{__package__}.{info.name}")
        if hasattr(module, "SPECS"):
            names.append(module.__name__)
    return names


def known_tasks() -> list[str]:
    """Every registered task and group name."""
    return sorted(GROUPS) + sorted(TASKS)


def expand(names: Sequence[str]) -> list[str]:
    """Task names with groups replaced by their tasks (comma-separated strings are split).

    Raises:
        KeyError: an unknown name; the message lists the known ones.
    """
    out = []
    for name in [n.strip() for t in names for n in t.split(",") if n.strip()]:
        if name in GROUPS:
            out += GROUPS[name]
        elif name in TASKS:
            out.append(name)
        else:
            grouped = {t for members in GROUPS.values() for t in members}
            singles = ", ".join(n for n in sorted(TASKS) if n not in grouped)
            groups = "; ".join(f"{g} (or one of its {len(m)} tasks, e.g. {m[0]})" for g, m in sorted(GROUPS.items()))
            raise KeyError(f"unknown task {name!r}; known tasks: {singles}; groups: {groups}")
    return out


def get_tasks(tasks: str | Task | Sequence[str | Task], data_dir: str | os.PathLike | None = None) -> list[Task]:
    """Resolve task names (comma-separated string, list, or Task objects; groups such as "mmlu" expand).

    Raises:
        KeyError: an unknown name; the message lists the known ones.
        FileNotFoundError: a task's data file is missing (says where it looked and how to get the data).
    """
    if isinstance(tasks, (str, Task)):
        tasks = [tasks]
    d = resolve_data_dir(data_dir)
    out: list[Task] = []
    for t in tasks:
        if isinstance(t, Task):
            out.append(t)
        elif isinstance(t, str):
            out += [TASKS[name].build(d) for name in expand([t])]
        else:
            raise TypeError(f"tasks must be names or Task objects, got {type(t).__name__}")
    names = [t.name for t in out]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"task(s) {dup} given more than once")
    return out


for _name in family_modules():
    register(*importlib.import_module(_name).SPECS)
