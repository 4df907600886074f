"""The package's layering, from its import graph (ast): lower layers never import higher ones, and no cycles.

The layer order is written once, here. A module belongs to the first entry whose name prefixes its dotted name.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "workbench"

# Lowest first. Modules in one layer may import each other (without cycles); the application packages of
# the last-but-one layer are independent of one another.
LAYERS: list[list[str]] = [
    ["workbench.config", "workbench.kv_cache", "workbench.rotary", "workbench.tokenizer", "workbench.hub",
     "workbench.figures", "workbench.inputs", "workbench.hook_points", "workbench.data", "workbench.atomic",
     "workbench.threads", "workbench.memory", "workbench.fingerprint", "workbench.deferred",
     "workbench.huge_pages"],
    ["workbench.attention"],
    ["workbench.hooks", "workbench.activation_cache"],
    ["workbench.model", "workbench.checkpoint", "workbench.generation", "workbench.big_model", "workbench.loading",
     "workbench.hooked_transformer", "workbench.fast_decode"],
    ["workbench.analysis", "workbench.lens", "workbench.sae"],
    ["workbench.viz", "workbench.evals", "workbench.training"],
    ["workbench.dynamics"],
    ["workbench.cli", "workbench.train", "workbench.__main__", "workbench"],
]
INDEPENDENT = ["workbench.viz", "workbench.evals", "workbench.training"]  # never import one another
# Lazy (function-level) imports allowed to reach up, each with its reason.
ALLOWED_UPWARD = {
    ("workbench.model", "workbench.viz"): "model.show_attention/show_logit_lens/show_tokens: one-line lazy calls",
    ("workbench.hooks", "workbench.sae"): "model.saes/run_with_saes/run_with_cache_with_saes: one-line lazy calls",
}


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _group(module: str, groups: list[str]) -> str | None:
    """The longest entry of `groups` that is `module` or a package above it."""
    found = [g for g in groups if module == g or module.startswith(g + ".")]
    return max(found, key=len) if found else None


def _layer(module: str) -> int:
    entries = [e for layer in LAYERS for e in layer]
    entry = _group(module, entries)
    assert entry is not None, f"{module} is in no layer of tests/test_layers.py: add it to LAYERS"
    return next(i for i, layer in enumerate(LAYERS) if entry in layer)


def _imports(path: Path, module: str) -> list[tuple[str, bool]]:
    """(imported workbench module, imported at module level?) for every import in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    top_level = {id(node) for node in tree.body}
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg import sub` imports the submodule when there is one
            names = [f"{base}.{a.name}" if _exists(f"{base}.{a.name}") else base for a in node.names]
        else:
            continue
        found += [(n, id(node) in top_level) for n in names if n == "workbench" or n.startswith("workbench.")]
    return found


def _exists(module: str) -> bool:
    rel = Path(*module.split("."))
    return (PACKAGE.parent / rel).with_suffix(".py").is_file() or (PACKAGE.parent / rel / "__init__.py").is_file()


def _graph() -> dict[str, list[tuple[str, bool]]]:
    return {_module_name(p): _imports(p, _module_name(p)) for p in sorted(PACKAGE.rglob("*.py"))}


def test_every_module_has_a_layer():
    for module in _graph():
        _layer(module)


def test_no_import_reaches_a_higher_layer():
    bad = []
    for module, imports in _graph().items():
        for target, _ in imports:
            allowed = (_group(module, [a for a, _ in ALLOWED_UPWARD]), _group(target, [b for _, b in ALLOWED_UPWARD]))
            if _layer(target) > _layer(module) and allowed not in ALLOWED_UPWARD:
                bad.append(f"{module} -> {target}")
    assert not bad, "imports from a lower layer into a higher one:\n" + "\n".join(bad)


def test_application_packages_are_independent():
    bad = []
    for module, imports in _graph().items():
        mine = _group(module, INDEPENDENT)
        for target, _ in imports:
            theirs = _group(target, INDEPENDENT)
            if mine and theirs and mine != theirs:
                bad.append(f"{module} -> {target}")
    assert not bad, "viz, evals and training must not import each other:\n" + "\n".join(bad)


def test_allowed_upward_imports_are_lazy():
    for module, imports in _graph().items():
        for target, top_level in imports:
            if _layer(target) > _layer(module):
                assert not top_level, f"{module} imports {target} at import time"


def test_no_import_cycles():
    graph = {m: sorted({t for t, top in imports if top and t != m and t in _graph_modules()})
             for m, imports in _graph().items()}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in graph.get(node, []):
            if state.get(nxt) == 1:
                pytest.fail("import cycle: " + " -> ".join(path[path.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in graph:
        if node not in state:
            visit(node)


def _graph_modules() -> set[str]:
    return {_module_name(p) for p in PACKAGE.rglob("*.py")}


def test_the_checker_sees_a_violation(tmp_path):
    """The checks can fail: a planted upward import is found."""
    fake = tmp_path / "workbench" / "config.py"
    fake.parent.mkdir()
    fake.write_text("from workbench.evals import evaluate\n")
    assert _imports(fake, "workbench.config") == [("workbench.evals", True)]
    assert _layer("workbench.evals") > _layer("workbench.config")
