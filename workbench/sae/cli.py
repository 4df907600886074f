"""The `workbench train-sae` subcommand (found by `workbench.cli` through `add_cli`).

    workbench train-sae --model demo --hook blocks.2.hook_resid_pre --out runs/sae-demo --threads 1
    workbench train-sae ... --export workbench/sae/demo        # then: metrics on held-out text + card

Text: `--data kjv` (the demo corpus) or text files / directories of *.txt; the chapters (files) that
`workbench.data.split_documents` holds out are never trained on and give the metrics. Rerunning the same
command resumes from `OUT/checkpoint.pt` (on the same model and data only: the checkpoint records both).
"""

from __future__ import annotations

import argparse
import json
import shlex
import time
from pathlib import Path

from ..atomic import atomic_write_bytes
from ..threads import set_threads

METRICS = "metrics.json"


def add_cli(subparsers: argparse._SubParsersAction) -> None:
    """Add the `workbench train-sae` subcommand to `subparsers`; it sets `func` to run it."""
    p = subparsers.add_parser("train-sae", help="train a sparse autoencoder (TopK by default) on a model's "
                              "activations (resumable)",
                              description="Train or resume an SAE run; the same command again resumes it.")
    p.add_argument("--model", default="demo", help="'demo', a checkpoint directory or a hub id (default demo)")
    p.add_argument("--hook", required=True, help="the site, a hook name such as blocks.2.hook_resid_pre")
    p.add_argument("--data", nargs="+", default=["kjv"], help="'kjv' (default) or text files / directories")
    p.add_argument("--out", required=True, help="run directory (checkpoint.pt, log.csv, sae/)")
    p.add_argument("--architecture", default="topk", choices=("topk", "standard"),
                   help="topk (default; AuxK, unit-norm decoder) or standard (ReLU + L1)")
    p.add_argument("--d-sae", type=int, default=1024, help="latents (default 1024)")
    p.add_argument("--k", type=int, default=16, help="active latents per token (default 16)")
    p.add_argument("--steps", type=int, default=2000, help="optimizer steps (default 2000)")
    p.add_argument("--batch-size", type=int, default=2048, help="tokens per step (default 2048)")
    p.add_argument("--context", type=int, default=128, help="tokens per row fed to the model (default 128)")
    p.add_argument("--lr", type=float, help="Adam learning rate (default 2e-4 / sqrt(d_sae / 16384))")
    p.add_argument("--auxk-alpha", type=float, default=1 / 32, help="AuxK loss weight (default 1/32)")
    p.add_argument("--l1-coefficient", type=float, default=1.0, help="L1 weight of a standard SAE (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, help="torch threads (default: torch's choice)")
    p.add_argument("--export", metavar="DIR", help="after training, write the SAE, its metrics and card to DIR")
    p.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    p.set_defaults(func=_cli_main)


def _cli_main(args: argparse.Namespace) -> int:
    import torch

    from ..data import load_corpus, split_documents
    from ..loading import load
    from .metrics import sae_metrics
    from .training import train

    if args.threads is not None:
        set_threads(args.threads)
    model = load(args.model)
    train_docs, val_docs = split_documents(load_corpus(args.data))
    start = time.perf_counter()
    result = train(model, args.hook, [d.text for d in train_docs], d_sae=args.d_sae, k=args.k, steps=args.steps,
                   run_dir=args.out, progress=not args.no_progress, batch_size=args.batch_size,
                   context=args.context, lr=args.lr, auxk_alpha=args.auxk_alpha, seed=args.seed,
                   architecture=args.architecture, l1_coefficient=args.l1_coefficient, model_name=args.model)
    wall = time.perf_counter() - start
    print(f"{result.step} steps done in {wall:.0f} s (this start, harvesting included); SAE in {result.sae_dir}")
    metrics = sae_metrics(model, result.sae, [d.text for d in val_docs], context=args.context,
                          progress=not args.no_progress)
    density = metrics.pop("feature_density")
    summary = {"model": args.model, "hook_name": args.hook, "held_out_documents": len(val_docs),
               "train_wall_s_last_start": round(wall, 1), "train_step_s": result.log[-1]["elapsed_s"], **metrics}
    atomic_write_bytes(Path(args.out) / METRICS, (json.dumps(summary, indent=2) + "\n").encode())
    print(json.dumps(summary, indent=2))
    if args.export:
        from .card import export_card
        from .io import save

        result.sae.log_sparsity = torch.log10(density + 1e-10)
        save(result.sae, args.export)
        export_card(args.out, args.export, summary, command=_command(args))
        print(f"exported to {args.export}")
    return 0


def _command(args: argparse.Namespace) -> str:
    """The `workbench train-sae` command line that reproduces this run (for the card)."""
    parts = ["workbench", "train-sae", "--model", args.model, "--hook", args.hook, "--data", *args.data,
             "--out", args.out, "--d-sae", args.d_sae, "--k", args.k, "--steps", args.steps,
             "--batch-size", args.batch_size, "--context", args.context, "--auxk-alpha", args.auxk_alpha,
             "--seed", args.seed]
    if args.architecture != "topk":
        parts += ["--architecture", args.architecture, "--l1-coefficient", args.l1_coefficient]
    if args.lr is not None:
        parts += ["--lr", args.lr]
    if args.threads is not None:
        parts += ["--threads", args.threads]
    return shlex.join(str(p) for p in parts + ["--export", args.export])
