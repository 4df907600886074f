"""The `workbench train` subcommand (found by `workbench.cli` through `add_cli`).

    workbench train --recipe demo --out runs/demo --threads 1
    workbench train --recipe demo --out runs/demo --export workbench/demo   # after (or to finish) training
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from .loop import train
from .recipes import DTYPES, RECIPES, recipe


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `workbench train` subcommand to `subparsers`; it sets `func` to run it."""
    p = subparsers.add_parser(
        "train",
        help="train a GPT-NeoX model from scratch (resumable); --recipe demo reproduces the embedded demo",
        description="Train or resume a run. Running the same command again resumes from the last checkpoint.",
    )
    p.add_argument("--recipe", default="demo", choices=sorted(RECIPES), help="model + optimisation + data preset")
    p.add_argument("--out", required=True, help="run directory (checkpoint, log.csv, final/)")
    p.add_argument("--model-config", help="JSON file with a GPT-NeoX config that replaces the recipe's model")
    p.add_argument("--data", nargs="+", help="text files / directories of *.txt instead of the recipe's corpus")
    p.add_argument("--steps", type=int, help="total optimizer steps (extends a finished run on resume)")
    p.add_argument("--dtype", choices=DTYPES, help="fp32, or bf16 autocast")
    p.add_argument("--seed", type=int)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--export", metavar="DIR", help="after training, write the HF directory and model card to DIR")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=_cli_main)


def _cli_main(args: argparse.Namespace) -> int:
    rec = recipe(args.recipe)
    model_config, train_cfg, data_cfg = rec["model"], rec["train"], rec["data"]
    if args.model_config:
        model_config = json.loads(Path(args.model_config).read_text())
    if args.data:
        data_cfg.source = list(args.data)
    if args.dtype:
        train_cfg.dtype = args.dtype
    if args.seed is not None:
        train_cfg.seed = args.seed
    result = train(args.out, model_config, train_cfg, data_cfg, threads=args.threads, progress=not args.no_progress,
                   steps=args.steps)  # fmt: skip
    print(f"{result.step} steps done in {result.run_dir}" + (f"; final model in {result.final_dir}" if result.final_dir else ""))
    if args.export:
        if result.final_dir is None:
            raise SystemExit("training is not finished; nothing to export")
        from .card import export_demo

        export_demo(result.run_dir, args.export)
        print(f"exported to {args.export}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """`python -m workbench.training.cli ARGS` = `workbench train ARGS`."""
    parser = argparse.ArgumentParser(prog="python -m workbench.training.cli")
    add_cli(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["train", *(sys.argv[1:] if argv is None else argv)])
    return args.func(args)


if __name__ == "__main__":
    raise SystemExit(main())
