"""The training subpackage's shape: the deprecated `workbench.train` shim, the CLI entry, and the data layer below it."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path

import pytest

import workbench.training as training

DATA_DIR = Path(__file__).resolve().parents[1] / "workbench" / "data"


def test_train_shim_warns_and_re_exports():
    sys.modules.pop("workbench.train", None)  # the warning fires on the first import only
    with pytest.warns(DeprecationWarning, match="workbench.training"):
        old = importlib.import_module("workbench.train")
    for name in ("TrainConfig", "DataConfig", "RECIPES", "recipe", "train", "TrainResult", "prepare_data",
                 "PreparedData", "evaluate_lm", "circuit_probes", "WarmupCosine", "make_optimizer",
                 "load_run_config", "build_model", "save_final", "LOG_COLUMNS", "DTYPES", "DEMO_MODEL"):  # fmt: skip
        assert getattr(old, name) is getattr(training, name), name
    from workbench.training.cli import add_cli

    assert old.add_cli is add_cli


def test_workbench_train_subcommand_is_unchanged():
    from workbench.cli import build_parser

    args = build_parser().parse_args(["train", "--recipe", "demo", "--out", "runs/demo", "--threads", "2"])
    assert (args.recipe, args.out, args.threads, args.export) == ("demo", "runs/demo", 2, None)
    assert args.func.__module__ == "workbench.training.cli"


def test_data_pipeline_does_not_import_training():
    for path in DATA_DIR.glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.ImportFrom):
                target = "." * node.level + (node.module or "")
                assert not target.startswith(("..train", "workbench.train")), f"{path.name} imports {target}"
            elif isinstance(node, ast.Import):
                assert not any(a.name.startswith("workbench.train") for a in node.names), path.name
