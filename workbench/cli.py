"""The `workbench` command: `info`, `generate`, and the subcommands that modules register (`train`, `eval`).

Each module with a subcommand exposes `add_cli(subparsers)`, which adds its parser and sets `func`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import sys

from .threads import add_threads_arg

SUBCOMMAND_MODULES = ("workbench.training.cli", "workbench.evals.cli", "workbench.sae.cli")


def _info(args: argparse.Namespace) -> int:
    import workbench

    model = workbench.load(args.model, revision=args.revision, dtype=args.dtype, device=args.device)
    config = model.config.to_dict()
    nbytes = sum(p.numel() * p.element_size() for p in {id(p): p for p in model.parameters()}.values())
    summary = {
        "model": args.model,
        "class": type(model).__name__,
        "parameters": model.num_parameters(),
        "dtype": str(model.dtype).removeprefix("torch."),
        "device": str(model.device),
        "memory_mb": round(nbytes / 2**20, 2),
        "attn_implementation": model.config.attn_implementation,
        "hook_points": len(model.hook_dict),
        "tokenizer_vocab": len(model.tokenizer) if model.tokenizer is not None else None,
    }
    if args.json:
        print(json.dumps({**summary, "config": config}, indent=2))
        return 0
    width = max(map(len, summary))
    for key, value in summary.items():
        print(f"{key:<{width}}  {value:,}" if isinstance(value, int) else f"{key:<{width}}  {value}")
    print("config:")
    for key in sorted(config):
        print(f"  {key}: {config[key]}")
    return 0


def _generate(args: argparse.Namespace) -> int:
    import workbench
    from workbench.generation import TextStreamer

    model = workbench.load(args.model, revision=args.revision, dtype=args.dtype, device=args.device)
    stops = args.stop or []
    model.generate(  # the streamer prints the text as it comes, then a newline
        args.prompt, max_new_tokens=args.max_new_tokens, do_sample=args.do_sample, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, repetition_penalty=args.repetition_penalty,
        no_repeat_ngram_size=args.no_repeat_ngram_size, seed=args.seed, stop_strings=stops,
        streamer=TextStreamer(model.tokenizer, stop_strings=stops),
    )
    return 0


def _add_generate_args(gen: argparse.ArgumentParser) -> None:
    # Defaults chosen by reading the demo's output: plain greedy loops ("I am not not not not"), seeded sampling
    # from a model this small is word salad; greedy with these two penalties reads as sentences.
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, default=40, help="tokens to generate (default 40)")
    gen.add_argument("--do-sample", "--sample", dest="do_sample", action="store_true",
                     help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0, help="sampling temperature (default 1.0)")
    gen.add_argument("--top-k", type=int, help="sample among the k most likely tokens")
    gen.add_argument("--top-p", type=float, help="sample from the smallest set of tokens with this much probability")
    gen.add_argument("--repetition-penalty", type=float, default=1.5,
                     help="> 0; penalises tokens already in the text (default 1.5; 1 turns it off)")
    gen.add_argument("--no-repeat-ngram-size", type=int, default=3,
                     help="never repeat an n-gram of this size (default 3; 0 turns it off)")
    gen.add_argument("--seed", type=int, help="seed for sampling (reproducible output)")
    gen.add_argument("--stop", action="append", metavar="TEXT",
                     help="stop once the continuation contains TEXT, printed up to it (repeatable)")
    gen.set_defaults(func=_generate)


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="'demo', a checkpoint directory, or a hub id such as EleutherAI/pythia-160m")
    parser.add_argument("--revision", help="hub revision, e.g. step3000 for a Pythia training checkpoint")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 or auto (default: the checkpoint's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")
    add_threads_arg(parser)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="NeoX Workbench command line")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameters, config, dtype and memory of a model")
    _add_model_args(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    gen = sub.add_parser("generate", help="continue a prompt, printing the text as it is generated")
    _add_model_args(gen)
    _add_generate_args(gen)

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_cli(sub)
    return parser


# Errors that describe a bad input (an argument, a file, a checkpoint): reported in one line, exit status 2.
# Anything else is a bug and keeps its traceback; WORKBENCH_DEBUG=1 keeps it for these too.
USER_ERRORS = (ValueError, TypeError, KeyError, OSError)


def main(argv: list[str] | None = None) -> int:
    """Run the `workbench` command; returns the exit status (2, with one line `workbench: error: ...` on
    stderr, for a bad input)."""
    args = build_parser().parse_args(argv)
    try:
        from .threads import pinned_threads, set_threads

        if getattr(args, "threads", None) is not None:
            set_threads(args.threads)
        pinned_threads()  # a bad WORKBENCH_THREADS is reported before any work (or output) starts
        return int(args.func(args) or 0)
    except USER_ERRORS as err:
        if os.environ.get("WORKBENCH_DEBUG", "") not in ("", "0"):
            raise
        message = err.args[0] if isinstance(err, KeyError) and len(err.args) == 1 else err  # KeyError quotes str()
        print("workbench: error: " + (" ".join(str(message).split()) or type(err).__name__), file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
