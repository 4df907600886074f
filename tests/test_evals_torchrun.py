"""`torchrun ... workbench eval` writes the same lm-eval results file as one process: the same values, standard
errors, n-samples and warnings (the truncation counter counted once, not once per process)."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_writes_the_single_process_results(tmp_path, shared_data):
    pytest.importorskip("lm_eval")
    data = shared_data / "evals"
    if not (data / "boolq").is_dir():
        pytest.skip("boolq data is absent from ../shared/data/evals")
    args = ["eval", "--model", "demo", "--tasks", "boolq,lambada_openai", "--limit", "3", "--device", "cpu",
            "--data-dir", str(data), "--quiet", "--no-report", "--no-cache", "--bootstrap-iters", "100"]
    runs = {
        "one": [sys.executable, "-m", "workbench.cli"],
        "two": [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                str(_port()), "-m", "workbench.cli"],
    }
    saved = {}
    for name, launcher in runs.items():
        r = subprocess.run(launcher + args + ["--output", str(tmp_path / name)], capture_output=True, text=True,
                           env=ENV, timeout=600)
        assert r.returncode == 0, r.stderr[-3000:]
        (path,) = (tmp_path / name).rglob("results_*.json")
        saved[name] = json.loads(path.read_text())
    one, two = saved["one"], saved["two"]
    for key in ("results", "n-samples", "n-shot", "higher_is_better", "versions"):
        assert one[key] == two[key], key
    assert one["workbench"]["warnings"] == two["workbench"]["warnings"]
    assert any("boolq: 2 of 6 requests" in w for w in two["workbench"]["warnings"])
    assert two["workbench"]["counts"]["boolq"]["n_truncated"] == 2
