"""The wheel carries what `pip install neox-workbench` users need offline: the demo model, widgets, baselines."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_wheel_ships_demo_widgets_and_baselines(tmp_path):
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", str(tmp_path), str(REPO)],
        check=True, capture_output=True, timeout=600,
    )
    (wheel,) = tmp_path.glob("neox_workbench-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for required in (
        "workbench/demo/config.json", "workbench/demo/model.safetensors", "workbench/demo/tokenizer.json",
        "workbench/viz/widgets/attention.js", "workbench/viz/widgets/workbench.css",
        "workbench/evals/baselines.csv", "workbench/evals/baselines_curves.csv.gz",
        "workbench/viz/widgets/feature_view.js",
        "workbench/demo/revisions/refs.json", "workbench/demo/revisions/step1000/model.safetensors",
        "workbench/sae/demo/cfg.json", "workbench/sae/demo/sae_weights.safetensors",
        "workbench/lens/demo/config.json", "workbench/lens/demo/params.pt",
    ):
        assert required in names, f"{required} missing from {wheel.name}"
    assert not any(name.startswith(("tests/", "notebooks/", "runs/")) for name in names)
