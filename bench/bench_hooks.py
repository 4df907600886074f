"""Cost of the hook machinery on a Pythia-160m-shaped random model (CPU, fp32, batch 4 x 256).

Ratios against a plain forward (the median over repeats of each repeat's ratio), measured three ways:
- `bare`: this model with every HookPoint swapped for a plain function (no module call at all);
- `transformers`: transformers' GPTNeoXForCausalLM (sdpa) holding the same weights;
- TransformerLens 4.x (`TransformerBridge` over that transformers model, eager attention as it forces).
A full cache's attention scores, patterns and LayerNorm-normalised inputs are computed when first read
(`workbench.deferred`): one case reads every entry right after the run, which is what a cache cost when they were computed during the forward.
Also the memory of a full cache against a filtered one: bytes by unique storage (what the cache really holds; an
entry that views another's storage counts once, on both sides), as returned and once every entry was read, the
sum over entries, and peak RSS growth
(sampled in separate, untimed runs: the sampling thread would slow the timed ones, and with glibc's default trim
threshold, so that memory a previous case freed doesn't hide the growth).

`run_with_cache` keeps freed memory in the process for the next cache (`workbench.memory`); every case then runs
in that state, and one extra case measures a full cache with memory handed back to the kernel before each run
(glibc's default), which is what a cache cost before.

    python bench/bench_hooks.py [--repeats 3] [--threads 1] [--out bench/results/hooks.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import threading
import time
from pathlib import Path

import psutil
import torch

from workbench import GPTNeoXConfig, GPTNeoXForCausalLM
from workbench.hook_points import HookPoint
from workbench.memory import ensure_retained, retain_freed_memory

PYTHIA_160M = dict(vocab_size=50304, hidden_size=768, num_attention_heads=12, num_hidden_layers=12,
                   intermediate_size=3072, rotary_pct=0.25, max_position_embeddings=2048, use_parallel_residual=True)


class _Bare:
    """Stands in for a HookPoint: a plain identity function that is never active."""

    def __call__(self, x):
        return x

    def is_active(self) -> bool:
        return False


def swap_hook_points(model, bare: bool) -> list:
    """Replace every HookPoint by `_Bare` (bare=True) or put them back; returns what it replaced."""
    swapped = []
    for owner in list(model.modules()):
        for name, child in list(owner._modules.items()):
            if isinstance(child, HookPoint):
                del owner._modules[name]
                object.__setattr__(owner, name, _Bare())
                swapped.append((owner, name, child))
    return swapped


def restore(swapped: list) -> None:
    for owner, name, child in swapped:
        object.__delattr__(owner, name)
        owner._modules[name] = child


def unique_storage_bytes(tensors) -> int:
    """Bytes of memory the tensors hold: each underlying storage counted once (TransformerLens's alias entries
    share storage with the hooks they alias, and q/k/v are views of one qkv output)."""
    storages = {}
    for t in tensors:
        storage = t.untyped_storage()
        storages[storage.data_ptr()] = storage.nbytes()
    return sum(storages.values())


def timed(fn) -> float:
    """Seconds of one call; its result is freed before returning (as `peak_rss_growth` frees it)."""
    gc.collect()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    del result
    return seconds


def peak_rss_growth(fn) -> tuple[float, int]:
    """(seconds, peak RSS growth in bytes over the start) of one call, RSS sampled every 2 ms."""
    proc = psutil.Process()
    gc.collect()
    start = proc.memory_info().rss
    peak, done = [start], threading.Event()

    def watch():
        while not done.is_set():
            peak[0] = max(peak[0], proc.memory_info().rss)
            time.sleep(0.002)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    t0 = time.perf_counter()
    result = fn()
    seconds = time.perf_counter() - t0
    done.set()
    thread.join()
    del result
    return seconds, peak[0] - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--pos", type=int, default=256)
    parser.add_argument("--no-tl", action="store_true", help="skip TransformerLens")
    parser.add_argument("--out", default="bench/results/hooks.json")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    model = GPTNeoXForCausalLM(GPTNeoXConfig(**PYTHIA_160M)).eval()
    ids = torch.randint(0, 50304, (args.batch, args.pos))  # read by the case closures at call time

    import transformers

    hf_cfg = transformers.GPTNeoXConfig(**PYTHIA_160M, attn_implementation="sdpa")
    hf = transformers.GPTNeoXForCausalLM(hf_cfg).eval()
    head = "lm_head.weight" if hasattr(hf, "lm_head") else "embed_out.weight"
    hf.load_state_dict({(head if k == "embed_out.weight" else k): v for k, v in model.state_dict().items()},
                       strict=False)
    bridge = None
    if not args.no_tl:
        from transformer_lens.model_bridge.sources._bridge_builder import build_bridge_from_module

        hf_tl = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**PYTHIA_160M,
                                                                           attn_implementation="eager")).eval()
        hf_tl.load_state_dict(hf.state_dict(), strict=False)
        bridge = build_bridge_from_module(hf_tl, "GPTNeoXForCausalLM", hf_config=hf_tl.config)

    filtered = ["blocks.6.hook_resid_post"]

    def ours_plain():
        return model(ids, use_cache=False).logits

    def ours_bare():
        swapped = swap_hook_points(model, True)
        try:
            return model(ids, use_cache=False).logits
        finally:
            restore(swapped)

    def ours_cache_fresh_memory():  # glibc's default: the freed memory went back to the kernel
        retain_freed_memory(0)
        try:
            return model.run_with_cache(ids)
        finally:
            retain_freed_memory()

    def ours_cache_read_all():  # then every deferred entry (attention scores and patterns) read once
        logits, cache = model.run_with_cache(ids)
        cache.values()
        return logits, cache

    ensure_retained()
    cases = {
        "bare (HookPoints removed)": ours_bare,
        "transformers forward (sdpa)": lambda: hf(ids, use_cache=False).logits,
        "workbench forward, no hooks": ours_plain,
        "workbench run_with_cache(), all": lambda: model.run_with_cache(ids),
        "workbench run_with_cache(), all, every entry read": ours_cache_read_all,
        "workbench run_with_cache(filtered)": lambda: model.run_with_cache(ids, names_filter=filtered),
        "workbench run_with_cache(), all, fresh memory": ours_cache_fresh_memory,
    }
    if bridge is not None:
        cases["transformer-lens forward"] = lambda: bridge(ids)
        cases["transformer-lens run_with_cache(), all"] = lambda: bridge.run_with_cache(ids)
        cases["transformer-lens run_with_cache(filtered)"] = lambda: bridge.run_with_cache(ids, names_filter=filtered)

    times = {name: [] for name in cases}
    peaks = {name: [] for name in cases}
    with torch.no_grad():
        full_ids = ids
        ids = full_ids[:, :16]  # warm-up on a short input: first-call costs without a full forward each
        for fn in cases.values():
            fn()
        ids = full_ids
        timed(lambda: model.run_with_cache(ids))  # the heap grows to a full cache once, before any timing
        for r in range(args.repeats):  # interleaved, so slow spells of a shared machine hit every case alike
            for name, fn in cases.items():
                times[name].append(timed(fn))
                if fn is ours_cache_fresh_memory:
                    timed(lambda: model.run_with_cache(ids))  # untimed: the next case finds the heap as before
        # Peak RSS in passes of their own: the sampling thread slows what it watches, most of all a full cache's
        # run, which faults in ~1 GB (4 x 256, one thread, on this busy machine: 1.98x a plain forward with the
        # sampler in the timed runs, 1.19x without, in runs hours apart), so no timing comes from these runs.
        retain_freed_memory(0)
        for name, fn in cases.items():
            peaks[name].append(peak_rss_growth(fn)[1])
            retain_freed_memory(0)  # (the fresh-memory case turns retention back on)
        retain_freed_memory()
        _, full = model.run_with_cache(ids)
        _, some = model.run_with_cache(ids, names_filter=filtered)
        returned_bytes = unique_storage_bytes(t for _, t in full.cache_dict.raw_items() if torch.is_tensor(t))
        full_bytes, some_bytes, n_full = unique_storage_bytes(full.values()), some.nbytes(), len(full)
        full_entry_bytes = full.nbytes()
        del full, some
        tl_full_bytes = tl_entry_bytes = None
        if bridge is not None:
            _, tl_full = bridge.run_with_cache(ids)
            tl_full_bytes = unique_storage_bytes(tl_full.cache_dict.values())
            tl_entry_bytes = sum(t.numel() * t.element_size() for t in tl_full.cache_dict.values())
            tl_entries = len(tl_full.cache_dict)
            del tl_full

    med = {name: statistics.median(v) for name, v in times.items()}

    def ratio(case: str, base: str) -> float:
        """Median over repeats of the ratio within each repeat: the cases of one repeat ran back to back, so a
        slow spell of a shared machine (this one's speed drifts by 20% over minutes) cancels out."""
        return statistics.median(a / b for a, b in zip(times[case], times[base]))

    bare, plain = med["bare (HookPoints removed)"], med["workbench forward, no hooks"]
    rows = []
    for name in cases:
        rows.append({"case": name, "median_s": med[name], "vs_bare": med[name] / bare,
                     "vs_transformers": med[name] / med["transformers forward (sdpa)"],
                     "peak_rss_growth_mb": max(peaks[name]) / 2**20, "runs_s": times[name]})
    plain_case = "workbench forward, no hooks"
    summary = {
        "hooks_no_hooks_over_bare": ratio(plain_case, "bare (HookPoints removed)"),
        "hooks_no_hooks_over_transformers": ratio(plain_case, "transformers forward (sdpa)"),
        "run_with_cache_all_over_plain": ratio("workbench run_with_cache(), all", plain_case),
        "run_with_cache_all_read_over_plain": ratio("workbench run_with_cache(), all, every entry read", plain_case),
        "run_with_cache_all_fresh_memory_over_plain": ratio("workbench run_with_cache(), all, fresh memory",
                                                            plain_case),
        "cache_full_returned_mb": returned_bytes / 2**20, "cache_full_mb": full_bytes / 2**20, "cache_full_entries_mb": full_entry_bytes / 2**20,
        "cache_filtered_mb": some_bytes / 2**20, "cache_full_entries": n_full,
    }
    if bridge is not None:
        summary.update({
            "tl_run_with_cache_all_over_tl_forward": ratio("transformer-lens run_with_cache(), all",
                                                           "transformer-lens forward"),
            "tl_run_with_cache_all_over_workbench_plain": ratio("transformer-lens run_with_cache(), all", plain_case),
            "tl_cache_full_mb": tl_full_bytes / 2**20, "tl_cache_full_entries_mb": tl_entry_bytes / 2**20,
            "tl_cache_full_entries": tl_entries,
        })
    print(f"Pythia-160m-shaped random model, CPU fp32, batch {args.batch} x {args.pos}, "
          f"{args.threads} thread(s), median of {args.repeats}")
    print(f"{'case':44s} {'median s':>9s} {'/bare':>7s} {'/hf':>7s} {'peak RSS +MB':>13s}")
    for row in rows:
        print(f"{row['case']:44s} {row['median_s']:9.3f} {row['vs_bare']:7.3f} {row['vs_transformers']:7.3f} "
              f"{row['peak_rss_growth_mb']:13.0f}")
    for key, value in summary.items():
        print(f"{key:44s} {value:.3f}" if isinstance(value, float) else f"{key:44s} {value}")
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"config": {**PYTHIA_160M, "batch": args.batch, "pos": args.pos,
                                          "threads": args.threads, "repeats": args.repeats,
                                          "torch": torch.__version__},
                               "rows": rows, "summary": summary}, indent=2))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
