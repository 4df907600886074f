"""`workbench lm-eval ...`: lm-evaluation-harness's own command line, with the workbench model registered.

lm-eval 0.4.13 finds models only in its registry (its built-in `MODEL_MAPPING`, or `@register_model` run by an
import); it loads no plugins through package entry points, so `lm_eval --model workbench` cannot see a
third-party model by itself. This command imports `workbench.evals.harness` (which registers "workbench") and
hands every argument, unchanged, to lm-eval's CLI:

    workbench lm-eval --model workbench --model_args pretrained=demo --tasks hellaswag --limit 10
    workbench lm-eval ls tasks
    workbench lm-eval --help            # lm-eval's help
"""

from __future__ import annotations

import argparse
import sys


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `lm-eval` subcommand (every argument after it goes to lm-eval untouched)."""
    # prefix_chars: no argument of ours starts with it, so "--model ..." and "--help" all land in `args`
    p = subparsers.add_parser("lm-eval", help="lm-eval's CLI with the workbench model ('--model workbench')",
                              add_help=False, prefix_chars="\0")
    p.add_argument("args", nargs=argparse.REMAINDER)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run lm-eval's CLI on `args.args`; returns its exit status."""
    try:
        import workbench.evals.harness  # noqa: F401  (registers "workbench" with lm-eval)
        from lm_eval.__main__ import cli_evaluate
    except ImportError as err:
        print(f"workbench lm-eval: error: lm-eval is not installed ({err}); pip install 'neox-workbench[eval]'",
              file=sys.stderr)
        return 2
    argv = sys.argv
    sys.argv = ["lm-eval", *args.args]
    try:
        cli_evaluate()
    except SystemExit as done:  # argparse's --help and errors, lm-eval's own exits
        return done.code if isinstance(done.code, int) else (0 if done.code is None else 1)
    finally:
        sys.argv = argv
    return 0
