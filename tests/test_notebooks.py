"""The tutorial notebooks: committed clean, in sync with their generator, and running top to bottom.

Each notebook carries its own assertion cells, so executing it (nbclient, the `python3` kernel of this
interpreter) checks its results, not just that it ran.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOKS_DIR = REPO / "notebooks"
NOTEBOOKS = [
    "01_quickstart.ipynb",
    "02_residual_stream.ipynb",
    "03_induction_heads.ipynb",
    "04_activation_patching.ipynb",
    "05_fewshot_eval.ipynb",
    "06_pythia_and_neox20b.ipynb",
]
DEMO_CONFIG = REPO / "workbench" / "demo" / "config.json"


def test_notebooks_are_committed_without_outputs():
    """No outputs, execution counts or widget state in the repository: diffs stay readable."""
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:
        nb = json.loads((NOTEBOOKS_DIR / name).read_text(encoding="utf-8"))
        assert nb["metadata"]["kernelspec"]["name"] == "python3", name
        assert "widgets" not in nb["metadata"], f"{name} carries saved widget state"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, name
        for cell in code:
            assert cell["outputs"] == [], f"{name}: a cell has outputs: {''.join(cell['source'])[:80]!r}"
            assert cell["execution_count"] is None, f"{name}: a cell has an execution count"
        # every notebook checks its results
        assert any("assert " in "".join(c["source"]) for c in code), f"{name} has no assertion cell"


def test_notebooks_match_their_generator():
    """notebooks/build.py is the source; the committed JSON must be what it writes."""
    sys.path.insert(0, str(NOTEBOOKS_DIR))
    try:
        import build
    finally:
        sys.path.remove(str(NOTEBOOKS_DIR))
    assert build.main(["--check", "--out", str(NOTEBOOKS_DIR)]) == 0, "run: python notebooks/build.py"


@pytest.fixture(scope="module")
def kernel_python() -> str:
    """The kernel must be this interpreter (the venv with workbench installed), not some other python3."""
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    from jupyter_client.kernelspec import KernelSpecManager
    from jupyter_client.manager import KernelManager

    spec = KernelSpecManager().get_kernel_spec("python3")
    argv = KernelManager(kernel_name="python3").format_kernel_cmd() if spec else []
    assert argv and os.path.realpath(argv[0]) == os.path.realpath(sys.executable), (
        f"the python3 kernel runs {argv[:1]}, not {sys.executable}: "
        f"{sys.executable} -m ipykernel install --sys-prefix"
    )
    return argv[0]


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, kernel_python: str):
    """Execute the notebook in notebooks/ (its working directory), as a reader would."""
    if not DEMO_CONFIG.is_file():
        pytest.skip(f"the demo model is absent ({DEMO_CONFIG} missing); the notebooks load workbench.load('demo')")
    import nbclient
    import nbformat

    nb = nbformat.read(NOTEBOOKS_DIR / name, as_version=4)
    env_note = {"HF_HUB_DISABLE_PROGRESS_BARS": "1", "TQDM_DISABLE": "1"}
    old = {k: os.environ.get(k) for k in env_note}
    os.environ.update(env_note)
    try:
        client = nbclient.NotebookClient(nb, timeout=600, kernel_name="python3",
                                         resources={"metadata": {"path": str(NOTEBOOKS_DIR)}})
        try:
            client.execute()
        except nbclient.exceptions.CellExecutionError as err:
            pytest.fail(f"{name} failed:\n{err}", pytrace=False)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
