"""Regenerate workbench/evals/baselines.csv and baselines_curves.csv.gz from ../shared/data/baselines.

Kept for the old command; the build is `scripts/build_baselines.py` (same options).

Usage: python bench/make_baselines.py [--source DIR] [--mmlu DIR]
"""

from __future__ import annotations

import runpy
from pathlib import Path

if __name__ == "__main__":
    runpy.run_path(str(Path(__file__).resolve().parents[1] / "scripts" / "build_baselines.py"), run_name="__main__")
