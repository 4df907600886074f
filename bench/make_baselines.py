"""Regenerate workbench/evals/baselines.csv and baselines_curves.csv.gz from ../shared/data/baselines.

Usage: python bench/make_baselines.py [--source DIR] [--mmlu DIR]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))  # run from a checkout without installing the package

from workbench.evals.baselines import load_baselines, load_learning_curves, regenerate  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--source", type=Path, default=REPO.parent / "shared" / "data" / "baselines",
                        help="folder with SOURCES.md, the published CSVs and pythia-v1/")
    parser.add_argument("--mmlu", type=Path, default=None, help="MMLU data folder (default: SOURCE/../evals/mmlu)")
    args = parser.parse_args()
    table_path, curves_path = regenerate(args.source, args.mmlu)
    table, curves = load_baselines(), load_learning_curves()
    for path, frame in ((table_path, table), (curves_path, curves)):
        print(f"{path}: {len(frame)} rows, {path.stat().st_size / 1024:.0f} KiB")
    print(table.groupby("family")["model"].nunique().to_string())


if __name__ == "__main__":
    main()
