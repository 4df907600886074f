"""`workbench eval ...`: run benchmarks, write results JSON (config, versions, per-sample log-likelihoods) and a report.

    workbench eval --model demo --tasks piqa,arc_easy --num-fewshot 5 --limit 500 --batch-size auto \\
        --device cuda --data-dir DIR --output DIR

An interrupted run resumes when started again with the same --output: finished requests are read back from
`<output>/requests_cache.jsonl` (disable with --no-cache). `results.json` is written only when every task finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="few-shot evaluation on benchmark tasks",
        description="Evaluate a model on benchmark tasks (lm-evaluation-harness prompts and metrics).",
    )
    p.add_argument("--model", default="demo", help="'demo', a checkpoint directory or a hub id (default: demo)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (e.g. piqa,arc_easy,mmlu); "
                   "'list' prints the known tasks")
    p.add_argument("--num-fewshot", type=int, default=0, help="examples in each prompt (default 0)")
    p.add_argument("--limit", type=int, default=None, help="evaluate the first N documents of each task")
    p.add_argument("--batch-size", default="auto", help="'auto' or sequences per batch")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--seed", type=int, default=1234, help="few-shot sampling seed (default 1234, as lm-eval)")
    p.add_argument("--data-dir", default=None, help="benchmark data (default $WORKBENCH_DATA_DIR or "
                   "../shared/data/evals)")
    p.add_argument("--output", default=None, help="folder for results.json, the report and the request cache")
    p.add_argument("--no-cache", action="store_true", help="do not keep a resumable request cache")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _batch_size(value: str) -> int | str:
    if value == "auto":
        return value
    try:
        n = int(value)
    except ValueError:
        n = 0
    if n < 1:
        raise ValueError(f"--batch-size must be 'auto' or a positive integer, got {value!r}")
    return n


def run(args: argparse.Namespace) -> int:
    """Execute `workbench eval` with parsed arguments; returns the exit status."""
    from workbench.evals.runner import default_cache_path, evaluate, load_model
    from workbench.evals.tasks import known_tasks

    if args.tasks in (None, "", "list"):
        print("known tasks:", ", ".join(known_tasks()))
        return 0 if args.tasks == "list" else 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        dist = _distributed(args.device)
        device = dist.local_device(args.device) if dist else args.device
        model = load_model(args.model, dtype=args.dtype, device=str(device) if device else None)
        out = Path(args.output) if args.output else None
        cache = None if (args.no_cache or out is None) else default_cache_path(out)
        results = evaluate(
            model, args.tasks, num_fewshot=args.num_fewshot, limit=args.limit, batch_size=_batch_size(args.batch_size),
            seed=args.seed, data_dir=args.data_dir, cache=cache, progress=not args.quiet,
        )
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"workbench eval: error: {msg}", file=sys.stderr)
        return 2
    if dist and not dist.is_main_process():
        return 0
    results.config["model"] = args.model
    results.config["num_params"] = sum(p.numel() for p in model.parameters())
    print(results.table().to_string(index=False))
    for w in results.warnings:
        print("warning:", w, file=sys.stderr)
    if out is not None:
        path = results.to_json(out / "results.json")
        print(f"results: {path}")
        if not args.no_report:
            try:
                results.to_html(out / "report.html")
                print(f"report: {out / 'report.html'}")
            except Exception as err:  # the report is a convenience; results.json is already safe on disk
                print(f"warning: no HTML report ({type(err).__name__}: {err})", file=sys.stderr)
    return 0


def _distributed(device: str | None):
    """The distributed helpers when launched by torchrun (WORLD_SIZE > 1), else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from workbench.evals import distributed

    distributed.init_from_env(device=device)
    return distributed
