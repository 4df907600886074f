"""The task registry: every `TaskSpec` of the family modules in this package, task groups, and name lookup.

A family module is any module of this package with a `SPECS` list; it is found and registered on import, so a
new family needs no edit here. `register` adds specs from elsewhere (a user's own family module). A family may
also declare `GROUP_META = {group: {"alias": ..., "version": ...}}` for its groups (lm-eval's `group_alias` and
`metadata.version`).
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
GROUPS: dict[str, list[str]] = {}  # group name -> its tasks (every leaf, also those of subgroups), in order
PARENT: dict[str, str] = {}  # subgroup -> the group that contains it ("mmlu_stem" -> "mmlu")
GROUP_META: dict[str, dict] = {}  # group -> {"alias": ..., "version": ...}


def register(*specs: TaskSpec) -> None:
    """Add task specs (and their groups) to the registry.

    Raises:
        ValueError: a task or group name that is already taken.
    """
    for spec in specs:
        if spec.name in TASKS or spec.name in GROUPS:
            raise ValueError(f"task {spec.name!r} is registered already")
        if any(g in TASKS for g in spec.groups):
            raise ValueError(f"a group of {spec.name!r} ({spec.groups}) has the name of a task")
        TASKS[spec.name] = spec
        for outer, inner in zip(spec.groups, spec.groups[1:]):
            if PARENT.setdefault(inner, outer) != outer:
                raise ValueError(f"group {inner!r} is inside both {PARENT[inner]!r} and {outer!r}")
        for g in spec.groups:
            GROUPS.setdefault(g, []).append(spec.name)


def subgroups(group: str) -> list[str]:
    """The groups directly inside `group`, in registration order ("mmlu" -> its four categories)."""
    return [g for g in GROUPS if PARENT.get(g) == group]


def group_tree(names: Sequence[str]) -> dict[str, list[str]]:
    """lm-eval's `group_subtasks` for the requested names: every group among them (or inside one of them) ->
    its direct members (subgroups, else tasks), in registration order."""
    wanted = {n.strip() for t in names for n in t.split(",") if n.strip()}
    out: dict[str, list[str]] = {}

    def visit(group: str) -> None:
        subs = subgroups(group)
        out[group] = subs or [t for t in GROUPS[group] if TASKS[t].groups[-1] == group]
        for s in subs:
            visit(s)

    for g in GROUPS:
        if g in wanted and g not in out:
            visit(g)
    return out


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
    _module = importlib.import_module(_name)
    register(*_module.SPECS)
    GROUP_META.update(getattr(_module, "GROUP_META", {}))
