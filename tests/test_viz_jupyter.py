"""End to end: JupyterLab on 127.0.0.1 runs a notebook with AttentionView; the widget renders, a head
selection round-trips through the kernel, and a 2,000-token view draws its first head in under 2 s."""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import nbformat
import numpy as np
import pytest
import torch

from tests.helpers import REPO, browser, demo_or_random, run_cell_in_lab, run_notebook_in_lab, screenshot
from workbench.inputs import as_prompts

pytestmark = [pytest.mark.browser, pytest.mark.slow, browser]

TEXT = "When Mary and John went to the store, John gave a drink to"
LONG = 2000


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _notebook(path: Path, tokenizer: Path) -> None:
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}
    nb.cells = [
        nbformat.v4.new_code_cell(
            f"import sys\nsys.path[:0] = [{str(REPO)!r}]\n"
            "from tests.helpers import demo_or_random, random_model\n"
            "from workbench.viz import AttentionView\n"
            f"model = demo_or_random({str(tokenizer)!r})"
        ),
        nbformat.v4.new_code_cell(f"view = AttentionView(model, {TEXT!r})\nview"),
        nbformat.v4.new_code_cell(
            f"small = random_model({str(tokenizer)!r}, 2, 4, 32)\n"
            f"big = AttentionView(small, list(range(1000, {1000 + LONG})))\nbig"
        ),
        nbformat.v4.new_code_cell('print("selected", view.layer, view.head)'),
    ]
    nbformat.write(nb, path)


@pytest.fixture(scope="module")
def lab(tmp_path_factory, neox_tokenizer_file):
    """A JupyterLab server with its own config/data/runtime dirs, token auth, on a free port."""
    base = tmp_path_factory.mktemp("lab")
    root = base / "root"
    root.mkdir()
    _notebook(root / "viz.ipynb", neox_tokenizer_file)
    token, port = secrets.token_hex(16), _free_port()
    env = dict(os.environ)
    for var, sub in [("JUPYTER_CONFIG_DIR", "config"), ("JUPYTER_DATA_DIR", "data"), ("JUPYTER_RUNTIME_DIR", "runtime"), ("IPYTHONDIR", "ipython")]:
        env[var] = str(base / sub)
    env["JUPYTER_PLATFORM_DIRS"] = "1"
    # no build check (slow, and there is nothing to build) and no language servers
    (base / "config" / "labconfig").mkdir(parents=True)
    (base / "config" / "labconfig" / "page_config.json").write_text('{"buildCheck": false, "buildAvailable": false}')
    (base / "config" / "jupyter_server_config.json").write_text('{"ServerApp": {"jpserver_extensions": {"jupyter_lsp": false}}}')
    cmd = [
        sys.executable, "-m", "jupyterlab", "--no-browser", "--ServerApp.ip=127.0.0.1", f"--ServerApp.port={port}",
        "--ServerApp.port_retries=0", f"--IdentityProvider.token={token}", f"--ServerApp.root_dir={root}",
        "--LabApp.expose_app_in_browser=True", "--LabApp.news_url=None",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
        f"--LabApp.user_settings_dir={base / 'settings'}", f"--LabApp.workspaces_dir={base / 'workspaces'}",
        "--LabApp.extension_manager=readonly", "--ServerApp.terminals_enabled=False",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        cmd.append("--allow-root")  # CI containers run as root
    log = open(base / "server.log", "wb")
    proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=root)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240  # a loaded CI machine imports slowly
        while True:
            try:
                urllib.request.urlopen(f"{url}/api/status?token={token}", timeout=2)
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"JupyterLab did not start: {(base / 'server.log').read_text()[-3000:]}")
                time.sleep(0.5)
        _log("JupyterLab is up")
        yield url, token
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


def test_attention_view_in_jupyterlab(lab, neox_tokenizer_file):
    from playwright.sync_api import sync_playwright

    url, token = lab
    model = demo_or_random(str(neox_tokenizer_file))
    ids = as_prompts(model, TEXT)[0].ids
    with torch.no_grad():
        att = model(torch.tensor([ids]), output_attentions=True).attentions
    L, H = len(att) - 1, att[0].shape[1] - 1
    p = att[L][0, H].double().numpy()
    entropy = float(-(p * np.log(np.where(p > 0, p, 1))).sum(-1).mean())

    errors: list[str] = []
    with sync_playwright() as pw:
        _log("opening the notebook")
        page = run_notebook_in_lab(pw, url, token, "viz.ipynb", errors)
        _log("running all cells")
        first = page.locator(".wb-attn").nth(0)
        first.locator("xpath=.").and_(page.locator("[data-loaded='0:0:0']")).wait_for(timeout=120_000)
        _log("first widget rendered")
        assert first.get_attribute("data-source") == "kernel"
        assert first.locator(".wb-tok").count() == len(ids)
        assert first.locator(".wb-thumb").count() == len(att) * att[0].shape[1]
        # a head selection goes to the kernel and comes back with numbers only the kernel had
        first.locator(f".wb-thumb[data-layer='{L}'][data-head='{H}']").click()
        page.locator(f".wb-attn[data-loaded='0:{L}:{H}']").wait_for(timeout=30_000)
        assert float(first.get_attribute("data-entropy")) == pytest.approx(entropy, abs=1e-4)
        assert first.get_attribute("data-source") == "kernel"
        first.locator(".wb-tok[data-i='4']").hover()
        assert any(bg for bg in first.locator(".wb-tok").evaluate_all("es => es.map(e => e.style.backgroundColor)"))
        # the selection also synced back into the kernel's traits
        run_cell_in_lab(page, 3)
        page.get_by_text(f"selected {L} {H}").wait_for(timeout=30_000)
        # the 2,000-token view: first head drawn within 2 s of the widget's render call
        big = page.locator(".wb-attn").nth(1)
        page.locator(".wb-attn[data-first-head-ms]").nth(1).wait_for(timeout=120_000)
        assert big.get_attribute("data-loaded") == "0:0:0" and big.get_attribute("data-source") == "kernel"
        assert big.locator(".wb-tok").count() == LONG
        _log("2000-token widget rendered")
        first_head_ms = float(big.get_attribute("data-first-head-ms"))
        print(f"2000-token view: first head rendered {first_head_ms:.0f} ms after render()")
        assert first_head_ms < 2000
        first.scroll_into_view_if_needed()
        screenshot(page, "jupyterlab_attention_view")
        page.context.browser.close()
    assert errors == []
