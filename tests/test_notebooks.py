"""The tutorial notebooks: committed clean, in sync with their jupytext `.py` source, and running top to bottom.

Each notebook carries its own assertion cells, so executing it (nbclient, the `python3` kernel of this
interpreter) checks its results, not just that it ran.
"""

from __future__ import annotations

import json
import os
import re
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
    "07_features.ipynb",
    "08_training_dynamics.ipynb",
]
DEMO_CONFIG = REPO / "workbench" / "demo" / "config.json"
SYNC = "jupytext --sync notebooks/*.py"
# a call of a plot helper (`plot_logit_lens(...)`, `report.plot(...)`), not matplotlib's `ax.plot(...)`
PLOT_CALL = re.compile(r"(?<![\w.])(?!ax\d*\.)(?:\w+\.)?plot(?:_\w+)?\(")


def test_notebooks_are_committed_without_outputs():
    """No outputs, execution counts or widget state in the repository: diffs stay readable."""
    assert sorted(p.name for p in NOTEBOOKS_DIR.glob("*.ipynb")) == NOTEBOOKS
    for name in NOTEBOOKS:
        nb = json.loads((NOTEBOOKS_DIR / name).read_text(encoding="utf-8"))
        assert nb["metadata"]["kernelspec"]["name"] == "python3", name
        assert nb["metadata"]["jupytext"]["formats"] == "ipynb,py:percent", f"{name} is not paired with its .py"
        assert "widgets" not in nb["metadata"], f"{name} carries saved widget state"
        code = [c for c in nb["cells"] if c["cell_type"] == "code"]
        assert code, name
        for cell in code:
            assert cell["outputs"] == [], f"{name}: a cell has outputs: {''.join(cell['source'])[:80]!r}"
            assert cell["execution_count"] is None, f"{name}: a cell has an execution count"
        # every notebook checks its results
        assert any("assert " in "".join(c["source"]) for c in code), f"{name} has no assertion cell"


def test_notebooks_match_their_py_source():
    """The percent-format `.py` beside each notebook is its source; the `.ipynb` must hold the same cells."""
    import jupytext

    assert sorted(NOTEBOOKS_DIR.glob("*.py")) == [NOTEBOOKS_DIR / Path(n).with_suffix(".py") for n in NOTEBOOKS]
    for name in NOTEBOOKS:
        py = jupytext.read(NOTEBOOKS_DIR / Path(name).with_suffix(".py"))
        nb = jupytext.read(NOTEBOOKS_DIR / name)
        assert py.metadata["kernelspec"] == nb.metadata["kernelspec"], f"{name}: kernelspec differs; run: {SYNC}"
        ours, theirs = ([(c.cell_type, c.source) for c in x.cells] for x in (py, nb))
        first = next((i for i, (a, b) in enumerate(zip(ours, theirs)) if a != b), min(len(ours), len(theirs)))
        assert ours == theirs, f"{name} differs from its .py from cell {first} on; run: {SYNC}"


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


def _execute(name: str):
    """Run the notebook in notebooks/ (its working directory), as a reader would.

    Returns:
        The executed notebook, and the failing cell's error (None when every cell ran).
    """
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
            return nb, str(err)
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    return nb, None


@pytest.fixture(scope="module")
def executed(kernel_python: str):
    """`executed(name)`: that notebook run once for this module's tests, as `(notebook, error or None)`."""
    if not DEMO_CONFIG.is_file():
        pytest.skip(f"the demo model is absent ({DEMO_CONFIG} missing); the notebooks load workbench.load('demo')")
    runs: dict[str, tuple] = {}

    def run(name: str):
        if name not in runs:
            runs[name] = _execute(name)
        return runs[name]

    return run


def _pngs(cell) -> int:
    return sum("image/png" in out.get("data", {}) for out in cell.get("outputs", []))


def _figure_as_text(cell) -> bool:
    """Whether the cell displayed a matplotlib figure without a PNG form (`<Figure size 500x280 with 1 Axes>`)."""
    texts = ("".join(out.get("data", {}).get("text/plain", "")) for out in cell.get("outputs", []))
    return any(text.startswith("<Figure") for text in texts)


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_runs(name: str, executed):
    """Every cell runs, assertion cells included; prints how many image/png outputs the run displayed."""
    nb, error = executed(name)
    if error is not None:
        pytest.fail(f"{name} failed:\n{error}", pytrace=False)
    code = [c for c in nb.cells if c.cell_type == "code"]
    errors = [o for c in code for o in c.get("outputs", []) if o.get("output_type") == "error"]
    assert not errors, errors
    print(f"{name}: {sum(map(_pngs, code))} image/png outputs")


@pytest.mark.slow
@pytest.mark.parametrize("name", NOTEBOOKS)
def test_plot_cells_show_a_png(name: str, executed):
    """A cell calling a plot helper, or showing a figure, displays a PNG (not `<Figure size ...>` as text)."""
    nb, error = executed(name)
    if error is not None:
        pytest.skip(f"{name} did not run (see test_notebook_runs)")
    bare = [c.source.splitlines()[0] for c in nb.cells
            if c.cell_type == "code" and (PLOT_CALL.search(c.source) or _figure_as_text(c)) and not _pngs(c)]
    assert not bare, f"{name}: plot cells without an image/png output: {bare}"
