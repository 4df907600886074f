"""The demo tuned lens's recipe: train on the demo corpus, measure on held-out chapters, write lens + card.

    python -m workbench.lens.recipe --out workbench/lens/demo --threads 1

Training text is the demo model's training split of the King James Bible (`workbench.data`, the same
chapters the model saw); the card's table is measured on the held-out chapters, which neither saw.
"""

from __future__ import annotations

import argparse
import csv
import io
import time
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from workbench.atomic import atomic_write_bytes
from workbench.data import load_corpus, split_documents

from .lenses import LogitLens, TunedLens
from .metrics import lens_metrics
from .training import train_tuned_lens
from ..threads import set_threads

RECIPE = {"steps": 250, "batch_size": 16, "seq_len": 128, "lr": 1.0, "momentum": 0.9, "weight_decay": 1e-3, "seed": 0}


def held_out_texts(source: str = "kjv") -> list[str]:
    """The demo corpus's validation chapters (`split_documents`), never trained on by the model or the lens."""
    return [d.text for d in split_documents(load_corpus(source))[1]]


def train_demo_lens(model: Any, out: Path, source: str = "kjv", progress: bool = True) -> tuple[TunedLens, pd.DataFrame]:
    """Train the demo lens with `RECIPE`, save it to `out` with a card (README.md) and its training log.

    Returns:
        the lens and its held-out `lens_metrics` frame (logit and tuned lens).
    """
    train_docs, val_docs = split_documents(load_corpus(source))
    start = time.perf_counter()
    lens = train_tuned_lens(model, [d.text for d in train_docs], progress=progress, **RECIPE)
    seconds = time.perf_counter() - start
    lens.save(out, base_model_name_or_path="demo")
    metrics = lens_metrics(model, [d.text for d in val_docs], {"logit": LogitLens(model), "tuned": lens},
                           seq_len=RECIPE["seq_len"])
    log = io.StringIO()
    writer = csv.writer(log)
    writer.writerow(["step"] + [f"kl_layer{i}" for i in range(lens.num_layers)])
    writer.writerows([[s + 1] + [f"{x:.5f}" for x in row] for s, row in enumerate(lens.history)])
    atomic_write_bytes(out / "training_log.csv", log.getvalue().encode())
    atomic_write_bytes(out / "README.md", card(metrics, seconds, torch.get_num_threads()).encode())
    return lens, metrics


def card(metrics: pd.DataFrame, seconds: float, threads: int) -> str:
    """The lens's card: recipe, command, held-out table."""
    wide = metrics.pivot(index=["layer", "label"], columns="lens", values=["kl", "perplexity"]).reset_index()
    rows = "\n".join(f"| {r[('label', '')]} | {r[('kl', 'logit')]:.3f} | {r[('kl', 'tuned')]:.3f} | "
                     f"{r[('perplexity', 'logit')]:.1f} | {r[('perplexity', 'tuned')]:.1f} |" for _, r in wide.iterrows())
    recipe = ", ".join(f"{k}={v}" for k, v in RECIPE.items())
    return f"""# Demo tuned lens

A tuned lens (Belrose et al., 2023, "Eliciting Latent Predictions from Transformers with the Tuned Lens") for the
workbench demo model (`workbench.load("demo")`), in the tuned-lens package's format (`config.json` + `params.pt`):
`workbench.lens.load("demo")`, or `tuned_lens.TunedLens.from_model_and_pretrained(hf_model, path)` with the demo
checkpoint loaded by transformers.

## Recipe

`python -m workbench.lens.recipe --out workbench/lens/demo --threads 1` ({seconds:.0f} s on {threads} thread(s)).
Translators `h + W h + b` per layer, started at the identity (`W = b = 0`), trained to minimise KL(final || lens)
summed over layers, with the tuned-lens package's optimiser (SGD, Nesterov momentum, linear decay to 0, gradient
norm clipped to 1): {recipe}. Text: the demo model's training chapters of the King James Bible
(`workbench.data.split_documents`), windows drawn at random; `training_log.csv` has each step's KL per layer.
At one thread the run is deterministic: a second run of the command wrote a bit-identical `params.pt` and
`training_log.csv`.

## Held-out result

{int(metrics['tokens'].iloc[0]):,} tokens of the held-out chapters (every 50th, never seen by the model or the lens).
Layer `embed` is the input of block 0; `Ln` the output of block n; the last row is the model's own prediction.

| layer | KL logit lens (nats) | KL tuned lens (nats) | perplexity logit lens | perplexity tuned lens |
| --- | --- | --- | --- | --- |
{rows}
"""


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="directory to write (config.json, params.pt, card)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (the shipped lens: 1)")
    parser.add_argument("--no-progress", action="store_true", help="no tqdm bar")
    args = parser.parse_args(argv)
    set_threads(args.threads)
    from workbench.loading import load

    _, metrics = train_demo_lens(load("demo"), args.out, progress=not args.no_progress)
    print(metrics.to_string(index=False))


if __name__ == "__main__":
    main()
