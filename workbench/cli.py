"""The `workbench` command: `info`, `generate`, and the subcommands that modules register (`train`, `eval`).

Each module with a subcommand exposes `add_cli(subparsers)`, which adds its parser and sets `func`.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

SUBCOMMAND_MODULES = ("workbench.training.cli", "workbench.evals.cli")


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

    model = workbench.load(args.model, revision=args.revision, dtype=args.dtype, device=args.device)
    text = model.generate(
        args.prompt, max_new_tokens=args.max_new_tokens, do_sample=args.sample, temperature=args.temperature,
        top_k=args.top_k, top_p=args.top_p, seed=args.seed,
    )
    print(text)
    return 0


def _add_model_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("model", help="'demo', a checkpoint directory, or a hub id such as EleutherAI/pythia-160m")
    parser.add_argument("--revision", help="hub revision, e.g. step3000 for a Pythia training checkpoint")
    parser.add_argument("--dtype", help="float32, bfloat16, float16 or auto (default: the checkpoint's)")
    parser.add_argument("--device", help="cpu, cuda, cuda:1 ... (default: cpu)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="workbench", description="NeoX Workbench command line")
    sub = parser.add_subparsers(dest="command", required=True)

    info = sub.add_parser("info", help="parameters, config, dtype and memory of a model")
    _add_model_args(info)
    info.add_argument("--json", action="store_true", help="print JSON")
    info.set_defaults(func=_info)

    gen = sub.add_parser("generate", help="continue a prompt")
    _add_model_args(gen)
    gen.add_argument("prompt")
    gen.add_argument("--max-new-tokens", type=int, default=40)
    gen.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    gen.add_argument("--temperature", type=float, default=1.0)
    gen.add_argument("--top-k", type=int)
    gen.add_argument("--top-p", type=float)
    gen.add_argument("--seed", type=int)
    gen.set_defaults(func=_generate)

    for module in SUBCOMMAND_MODULES:
        importlib.import_module(module).add_cli(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, TypeError, FileNotFoundError, OSError, KeyError) as err:
        print(f"workbench {args.command}: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
