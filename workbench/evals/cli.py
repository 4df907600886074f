"""`workbench eval ...`: run benchmarks, print lm-eval's results table, write lm-eval's results JSON and a report;
`workbench lm-eval ...`: lm-eval's own command line with the workbench model registered (`lm_eval_cli`).

    workbench eval --model demo --tasks piqa,arc_easy --num-fewshot 5 --limit 500 --batch-size auto \\
        --device cuda --data-dir DIR --output DIR [--log-samples]

Tasks: built-in names and groups, a `.jsonl` path (a multiple-choice task of `{query, choices, gold}` records),
any lm-eval task name (with `--include-path DIR` for YAML tasks of your own) or a task `.yaml` path, mixed freely
in one run (the lm-eval ones run through lm-eval's task manager with the workbench engine underneath). Without
--num-fewshot each task runs at lm-eval's default (gsm8k: 5 shots, the others 0).
Output, as lm-eval's `--output_path`: `<output>/<model>/results_<date>.json` and, with --log-samples,
`samples_<task>_<date>.jsonl`; reruns never overwrite. An interrupted run resumes when started again with the same
--output: finished requests are read back from `<output>/requests_cache.jsonl` (disable with --no-cache). Results
are written only when every task finished.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from workbench.threads import add_threads_arg


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `eval` subcommand."""
    p = subparsers.add_parser(
        "eval",
        help="few-shot evaluation on benchmark tasks",
        description="Evaluate a model on benchmark tasks (lm-evaluation-harness prompts and metrics).",
    )
    p.add_argument("--model", default="demo", help="'demo', a checkpoint directory or a hub id (default: demo)")
    p.add_argument("--tasks", default=None, help="comma-separated task names (e.g. piqa,arc_easy,mmlu), .jsonl "
                   "paths, lm-eval task names or task .yaml paths, mixed freely; 'list' prints the built-in tasks")
    p.add_argument("--include-path", default=None, help="a folder of lm-eval task YAMLs (as lm_eval --include_path)")
    p.add_argument("--num-fewshot", type=int, default=None, help="examples in each prompt (default: each task's "
                   "lm-eval num_fewshot, e.g. gsm8k 5, else 0)")
    p.add_argument("--limit", type=_limit, default=None, help="evaluate the first N documents of each task, or "
                   "(0 < N < 1) that fraction of them")
    p.add_argument("--log-samples", action="store_true", help="also write per-document logs (lm-eval's "
                   "samples_<task>_<date>.jsonl) next to the results")
    p.add_argument("--bootstrap-iters", type=int, default=100_000, help="resamples for bootstrapped standard errors "
                   "(default 100000, as lm-eval; 0: none)")
    p.add_argument("--batch-size", default="auto", help="'auto' or sequences per batch")
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda when available)")
    p.add_argument("--dtype", default="auto", choices=["auto", "float32", "bfloat16", "float16"],
                   help="weights dtype (auto: bfloat16 on CUDA, float32 on CPU)")
    p.add_argument("--seed", type=int, default=1234, help="seed of few-shot sampling, sampled generation and the "
                   "random generators (default 1234, lm-eval's few-shot seed)")
    p.add_argument("--data-dir", default=None, help="benchmark data (default $WORKBENCH_DATA_DIR or "
                   "../shared/data/evals)")
    p.add_argument("--output", default=None, help="folder for the timestamped results, sample logs, report and "
                   "the request cache")
    p.add_argument("--no-cache", action="store_true", help="do not keep a resumable request cache")
    p.add_argument("--no-report", action="store_true", help="skip the HTML report")
    p.add_argument("--quiet", action="store_true", help="no progress bars (also lm-eval's and datasets') and no "
                   "lm-eval info logs")
    add_threads_arg(p)
    p.set_defaults(func=run)
    from workbench.evals.lm_eval_cli import add_cli as add_lm_eval_cli

    add_lm_eval_cli(subparsers)


def _limit(value: str) -> int | float:
    try:
        x = float(value)
    except ValueError:
        x = 0.0
    if x <= 0 or (x >= 1 and not x.is_integer()):
        raise argparse.ArgumentTypeError(f"must be a positive integer or a fraction in (0, 1), got {value!r}")
    return int(x) if x >= 1 else x


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
    from workbench.evals.runner import default_cache_path, load_model
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
        results = _evaluate(args, model, cache)
    except (KeyError, ValueError, TypeError, FileNotFoundError) as err:
        msg = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"workbench eval: error: {msg}", file=sys.stderr)
        return 2
    if dist and not dist.is_main_process():
        return 0
    results.config["model"] = args.model
    results.config["num_params"] = sum(p.numel() for p in model.parameters())
    print(_table(results))
    for w in results.warnings:
        print("warning:", w, file=sys.stderr)
    if out is not None:
        paths = results.write(out, log_samples=args.log_samples)
        print(f"results: {paths['results']}")
        for path in paths["samples"].values():
            print(f"samples: {path}")
        if not args.no_report:
            report = paths["results"].with_name(paths["results"].name.replace("results_", "report_")
                                                ).with_suffix(".html")
            try:
                results.to_html(report)
                print(f"report: {report}")
            except Exception as err:  # the report is a convenience; the results are already safe on disk
                print(f"warning: no HTML report ({type(err).__name__}: {err})", file=sys.stderr)
    return 0


def _evaluate(args: argparse.Namespace, model, cache):
    """Built-in tasks and .jsonl files natively; any other name or .yaml path through lm-eval's task manager with
    the workbench engine (`workbench.evals.lm_eval_tasks`), in the same run (`evaluate` routes and merges)."""
    from workbench.evals.runner import evaluate

    names = [n.strip() for n in args.tasks.split(",") if n.strip()]
    return evaluate(model, names, num_fewshot=args.num_fewshot, limit=args.limit, data_dir=args.data_dir,
                    include_path=args.include_path, batch_size=_batch_size(args.batch_size), seed=args.seed,
                    cache=cache, progress=not args.quiet, bootstrap_iters=args.bootstrap_iters)


def _table(results) -> str:
    """lm-eval's markdown results table, else (without lm-eval) the workbench's plain one."""
    try:
        return results.markdown_table()
    except ImportError:
        return results.table().to_string(index=False)


def _distributed(device: str | None):
    """The distributed helpers when launched by torchrun (WORLD_SIZE > 1), else None."""
    import os

    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    from workbench.evals import distributed

    distributed.init_from_env(device=device)
    return distributed
