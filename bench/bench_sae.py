"""SAE costs on the demo model (CPU, fp32): training throughput, and a spliced forward against a plain one.

- training: `workbench.sae.train` steps (TopK + AuxK, d_sae x k as the demo SAE) in tokens/s of step time, and
  of wall time including harvesting the activations;
- splicing: a forward of batch x context tokens plain, with the SAE spliced (reconstruction), with the error
  term (exact), and `run_with_cache_with_saes` caching the SAE's latents; each a ratio to the plain forward.

Each figure is the median of `--repeats` rounds, the variants interleaved within a round (in a rotated order);
a forward's time in a round is the fastest of `--calls` calls, a ratio the median of the per-round ratios.

    python bench/bench_sae.py [--repeats 3] [--threads 1] [--steps 16] [--calls 5] [--out bench/results/sae_t1.json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

import workbench
from workbench import sae as wsae

SITE = "blocks.2.hook_resid_pre"


def _timed(fn, calls: int) -> float:
    """Seconds of the fastest of `calls` calls of `fn` (the least disturbed by other load on the machine)."""
    best = float("inf")
    for _ in range(calls):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best


def bench_training(model, stream: torch.Tensor, steps: int, d_sae: int, k: int, batch_size: int) -> dict:
    """One short training run: tokens/s of step time and of wall time (harvesting included)."""
    start = time.perf_counter()
    result = wsae.train(model, SITE, stream, d_sae=d_sae, k=k, steps=steps, batch_size=batch_size, progress=False,
                        warmup_steps=1, log_every=1)
    wall = time.perf_counter() - start
    step_time = result.log[-1]["elapsed_s"]
    tokens = steps * batch_size
    return {"tokens_per_s_step": tokens / step_time, "tokens_per_s_wall": tokens / wall}


def bench_splice(model, sae, ids: torch.Tensor, calls: int, round_index: int) -> dict[str, float]:
    """Seconds of a forward of `ids` for each variant (variants in a rotated order each round)."""
    name = f"{SITE}.hook_sae_acts_post"
    variants = {
        "plain": lambda: model(ids),
        "spliced": lambda: model.run_with_saes(ids, saes=[sae]),
        "spliced_error_term": lambda: model.run_with_saes(ids, saes=[sae], use_error_term=True),
        "cache_with_saes": lambda: model.run_with_cache_with_saes(ids, saes=[sae], names_filter=name),
    }
    with torch.no_grad():
        for fn in variants.values():  # warm-up
            fn()
        keys = list(variants)
        keys = keys[round_index % len(keys):] + keys[:round_index % len(keys)]
        timings = {key: _timed(variants[key], calls) for key in keys}
    return {key: timings[key] for key in variants}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--steps", type=int, default=16, help="training steps per repeat (16 = one harvested block)")
    parser.add_argument("--batch", type=int, default=16, help="rows of the spliced forward")
    parser.add_argument("--context", type=int, default=128)
    parser.add_argument("--calls", type=int, default=5, help="forwards per variant and round (the fastest counts)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    model = workbench.load("demo")
    sae = wsae.load("demo")
    gen = torch.Generator().manual_seed(0)
    # a token stream of real text would only change the token ids; the cost is the same
    stream = torch.randint(2, model.config.vocab_size, (256 * 128 * 2,), generator=gen)
    ids = torch.randint(2, model.config.vocab_size, (args.batch, args.context), generator=gen)
    training, splice = [], []
    for round_index in range(args.repeats):  # interleaved: each round measures every variant
        training.append(bench_training(model, stream, args.steps, sae.cfg.d_sae, sae.cfg.k, 2048))
        splice.append(bench_splice(model, sae, ids, args.calls, round_index))
    median = lambda rows, key: statistics.median(r[key] for r in rows)  # noqa: E731
    results = {
        "threads": args.threads, "repeats": args.repeats, "torch": torch.__version__,
        "sae": {"hook_name": SITE, "d_in": sae.cfg.d_in, "d_sae": sae.cfg.d_sae, "k": sae.cfg.k},
        "training": {"steps": args.steps, "batch_tokens": 2048,
                     **{key: median(training, key) for key in training[0]}},
        "forward": {"tokens": args.batch * args.context, **{f"{key}_s": median(splice, key) for key in splice[0]}},
    }
    results["forward_ratio_to_plain"] = {key: statistics.median(r[key] / r["plain"] for r in splice)
                                         for key in splice[0] if key != "plain"}  # median of per-round ratios
    print(json.dumps(results, indent=2))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
