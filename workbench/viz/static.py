"""Find the front-end files (`widgets/`) and bundle them into one ES module without a build step.

In a checkout the files sit at the repository root (`widgets/`); in an installed wheel they are the package
`workbench.viz.widgets` (pyproject maps the folder there with `[tool.setuptools.package-dir]`).
Widget modules may `import { a } from "./common.js";`: browsers load them like that as they are, and
`bundle()` inlines those imports so anywidget (which loads one module from a string) and the standalone
HTML pages get a single self-contained module.
"""

from __future__ import annotations

import re
from functools import lru_cache
from pathlib import Path

_IMPORT = re.compile(r'^\s*import\s*\{([^}]*)\}\s*from\s*"\./([\w.-]+\.js)";\s*$', re.M)
_EXPORT = re.compile(r"^export\s+(?=(?:async\s+)?(?:function|const|let|class)\b)", re.M)


def widgets_dir() -> Path:
    """Directory holding the widget ES modules and CSS.

    Raises:
        FileNotFoundError: neither the installed package data nor a checkout's `widgets/` exists.
    """
    here = Path(__file__).resolve().parent
    for cand in (here / "widgets", here.parents[1] / "widgets"):
        if (cand / "common.js").is_file():
            return cand
    raise FileNotFoundError(
        f"widget front-end files not found in {here / 'widgets'} or {here.parents[1] / 'widgets'}; "
        "reinstall neox-workbench (the wheel ships them as workbench/viz/widgets)"
    )


@lru_cache(maxsize=None)
def bundle(entry: str) -> str:
    """One ES module: `entry` (e.g. "attention.js") with its relative imports inlined, dependencies first.

    Dependencies lose their `export` keywords (they become module-local); the entry keeps its exports.
    """
    root = widgets_dir()
    seen: list[str] = []

    def visit(name: str) -> None:
        if name in seen:
            return
        src = (root / name).read_text(encoding="utf-8")
        for _, dep in _IMPORT.findall(src):
            visit(dep)
        seen.append(name)

    visit(entry)
    parts = []
    for name in seen:
        src = _IMPORT.sub("", (root / name).read_text(encoding="utf-8"))
        if name != entry:
            src = _EXPORT.sub("", src)
        parts.append(f"// ---- {name}\n{src}")
    return "\n".join(parts)


@lru_cache(maxsize=None)
def css() -> str:
    """The shared stylesheet."""
    return (widgets_dir() / "workbench.css").read_text(encoding="utf-8")
