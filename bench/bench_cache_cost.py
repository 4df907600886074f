"""Where a full `run_with_cache` spends its time over a plain forward: subsets of the cache, read or not, and the
allocator.

One 160m-shaped random model per process (fp32, batch 4 x 256), interleaved repeats; each ratio is the median over
repeats of the ratio within a repeat. Each case is the plain forward or `run_with_cache` over a subset of the default
full cache, returned as is (attention scores / patterns and LayerNorm-normalised inputs deferred until read:
`workbench.deferred`) or with every entry read right away. The table is measured twice, in child processes: with
the workbench's memory policy (`workbench.memory`: freed memory retained, large blocks from the heap while a cache
fills) and with glibc's defaults (`WORKBENCH_RETAIN_MEMORY=0`).

    python bench/bench_cache_cost.py [--repeats 5] [--threads 1] [--out bench/results/cache_cost_t1.json]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

PYTHIA_160M = dict(vocab_size=50304, hidden_size=768, num_attention_heads=12, num_hidden_layers=12,
                   intermediate_size=3072, rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True)


def measure(repeats: int, threads: int) -> dict[str, list[float]]:
    """Seconds per case and repeat, cases interleaved within each repeat."""
    import torch

    from workbench import GPTNeoXConfig, GPTNeoXForCausalLM
    from workbench.hook_points import in_full_cache

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_160M)).eval()
    ids = torch.randint(0, PYTHIA_160M["vocab_size"], (4, 256))
    full = [n for n in model.hook_names() if in_full_cache(n)]
    probs = [n for n in full if n.endswith(("attn_scores", "pattern"))]
    ln = [n for n in full if ".ln" in n or n.startswith("ln_final")]
    def cached(names=None, read=False):
        def run():
            logits, cache = model.run_with_cache(ids, names_filter=names)
            if read:
                cache.values()  # computes every deferred entry
            return logits, cache
        return run

    cases = {
        "plain forward": lambda: model(ids, use_cache=False),
        "run_with_cache(), all": cached(),
        "all, every entry read": cached(read=True),
        "all but attention patterns/scores, read": cached([n for n in full if n not in probs], read=True),
        "all but LayerNorm internals, read": cached([n for n in full if n not in ln], read=True),
        "only attention patterns/scores, read": cached(probs, read=True),
        "only LayerNorm internals, read": cached(ln, read=True),
    }
    times = {name: [] for name in cases}
    with torch.no_grad():
        for fn in cases.values():
            fn()  # warm-up
        for _ in range(repeats):
            for name, fn in cases.items():
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--out", default=None)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.repeats, args.threads)))
        return
    results = {}
    for label, extra in (("workbench memory policy", {"WORKBENCH_RETAIN_MEMORY": "1"}),
                         ("glibc defaults", {"WORKBENCH_RETAIN_MEMORY": "0"})):
        child = subprocess.run([sys.executable, __file__, "--child", "--repeats", str(args.repeats),
                                "--threads", str(args.threads)], env={**os.environ, **extra},
                               capture_output=True, text=True, check=True)
        times = json.loads(child.stdout.strip().splitlines()[-1])
        plain = times["plain forward"]
        results[label] = {name: {"median_s": statistics.median(v),
                                 "over_plain": statistics.median(a / b for a, b in zip(v, plain)), "runs_s": v}
                          for name, v in times.items()}
    print(f"160m shape, fp32, 4 x 256, {args.threads} thread(s), median of {args.repeats} interleaved repeats")
    for label, rows in results.items():
        print(f"-- {label}")
        for name, row in rows.items():
            print(f"{name:40s} {row['median_s']:7.3f} s  {row['over_plain']:6.3f} x plain")
    out = Path(args.out or f"bench/results/cache_cost_t{args.threads}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats, "results": results}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
