"""Core benchmark: workbench's GPT-NeoX against transformers on the same random Pythia-160m-shaped checkpoint.

    python bench/bench_core.py [--repeats 5] [--threads 1,2] [--only forward,generate] [--new-tokens 64]
                               [--out bench/results/bench_core.json]

Measured side by side in one run, at each thread count of `--threads` (medians over `--repeats`, the two
implementations interleaved so that machine load affects both alike; each ratio is the median of the ratios
within a round):
- forward time, fp32 CPU, batch 4 x 256, per attention backend (sdpa, eager): workbench / transformers;
- greedy generation of `--new-tokens` new tokens from a 16-token prompt at batch 1 and batch 8: tokens/s
  workbench / transformers (and whether the tokens are identical), the workbench loaded as by default (weights
  read into transparent huge pages where the kernel offers them) and with `mmap=True` (the file memory-mapped). `--threads` sets torch's count; the
  workbench's generate then runs each forward on `workbench.threads`' choice (decode steps: torch's count,
  capped at the cores other processes leave free, unless `WORKBENCH_THREADS` pins one), transformers on the
  count set;
- peak RSS while loading (growth over the process's RSS before the load, in a fresh subprocess) / file size;
- on CUDA only: sdpa vs flash_attention_2 vs eager in fp16 and bf16 (skipped on CPU, with a note).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import transformers  # noqa: E402

import workbench  # noqa: E402

PYTHIA_160M = dict(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0)

PEAK_SCRIPT = textwrap.dedent("""
    import json, sys, torch
    def status(field):
        line = next(l for l in open("/proc/self/status") if l.startswith(field + ":"))
        return int(line.split()[1]) * 1024
    which, path = sys.argv[1], sys.argv[2]
    if which == "transformers":
        import transformers
    else:
        import workbench
    with torch.device("meta"):  # torch's one-off lazy initialisation is not part of loading
        torch.nn.Embedding(2, 2), torch.nn.Linear(2, 2)
    before = status("VmRSS")
    if which == "transformers":
        model = transformers.GPTNeoXForCausalLM.from_pretrained(path)
    else:
        model = workbench.GPTNeoXForCausalLM.from_pretrained(path)
    print(json.dumps({"before": before, "peak": status("VmHWM")}))
""")


def timed(fn, repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def interleaved(fns: dict, repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each function, run in turn `repeats` times after `warmup` rounds; the order reverses
    every round (A B, B A, ...), so neither side always runs right after the other. With two functions, also
    "paired": the median over rounds of the first's seconds / the second's within the round (this machine's
    speed drifts over minutes; a ratio within one round cancels the drift); with more, "times": every round's
    seconds per function."""
    times = {name: [] for name in fns}
    for _ in range(warmup):
        for fn in fns.values():
            fn()
    for r in range(repeats):
        for name, fn in (list(fns.items()) if r % 2 == 0 else list(fns.items())[::-1]):
            times[name] += timed(fn, 1)
    out = {name: statistics.median(t) for name, t in times.items()}
    if len(times) == 2:
        first, second = times.values()
        out["paired"] = statistics.median(a / b for a, b in zip(first, second))
    else:
        out["times"] = times
    return out


def write_checkpoint(directory: Path) -> Path:
    torch.manual_seed(0)
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25}
    model = transformers.GPTNeoXForCausalLM(transformers.GPTNeoXConfig(**PYTHIA_160M, rope_parameters=rope))
    model.save_pretrained(directory)
    return directory


def peak_rss(which: str, directory: Path) -> dict:
    if not Path("/proc/self/status").is_file():
        return {"skipped": "needs Linux /proc/self/status"}
    result = subprocess.run([sys.executable, "-c", PEAK_SCRIPT, which, str(directory)], capture_output=True,
                            text=True, check=True, cwd=REPO)
    stats = json.loads(result.stdout.strip().splitlines()[-1])
    size = sum(p.stat().st_size for p in directory.glob("*.safetensors"))
    growth = stats["peak"] - stats["before"]
    return {"growth_mb": growth / 1e6, "file_mb": size / 1e6, "ratio": growth / size}


def bench_forward(directory: Path, repeats: int) -> dict:
    ids = torch.randint(0, PYTHIA_160M["vocab_size"], (4, 256), generator=torch.Generator().manual_seed(0))
    results = {}
    for attn in ("sdpa", "eager"):
        ours = workbench.GPTNeoXForCausalLM.from_pretrained(directory, attn_implementation=attn)
        hf = transformers.GPTNeoXForCausalLM.from_pretrained(directory, attn_implementation=attn).eval()
        with torch.no_grad():
            diff = (ours(ids[:1, :64]).logits - hf(ids[:1, :64]).logits).abs().max().item()
            medians = interleaved({"workbench": lambda: ours(ids, use_cache=False),
                                   "transformers": lambda: hf(ids, use_cache=False)}, repeats)
        paired = medians.pop("paired")
        results[attn] = {**medians, "ratio": paired, "max_logit_diff": diff}
        del ours, hf
    return results


def bench_generate(directory: Path, repeats: int, new_tokens: int = 64, batch: int = 1) -> dict:
    """Greedy tokens/s of the workbench (weights read into huge pages where available, the default), of the
    workbench with the weights memory-mapped (`mmap=True`), and of transformers."""
    ours = workbench.GPTNeoXForCausalLM.from_pretrained(directory)
    mapped = workbench.GPTNeoXForCausalLM.from_pretrained(directory, mmap=True)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(directory).eval()
    prompt = torch.randint(0, PYTHIA_160M["vocab_size"], (batch, 16), generator=torch.Generator().manual_seed(1))
    outputs = {}

    def run(name, model):
        def go():
            outputs[name] = model.generate(prompt, max_new_tokens=new_tokens, eos_token_id=[])
        return go

    def run_hf():
        outputs["transformers"] = hf.generate(prompt, max_new_tokens=new_tokens, min_new_tokens=new_tokens,
                                              do_sample=False, pad_token_id=0)

    with torch.no_grad():
        medians = interleaved({"workbench": run("workbench", ours), "workbench_mmap": run("workbench_mmap", mapped),
                               "transformers": run_hf}, repeats)
    times = medians.pop("times")

    def speed_ratio(name: str) -> float:  # tokens/s name / transformers, the median of the rounds' ratios
        return statistics.median(h / w for w, h in zip(times[name], times["transformers"]))

    tps = {name: batch * new_tokens / seconds for name, seconds in medians.items()}
    return {"tokens_per_s": tps, "ratio": speed_ratio("workbench"), "ratio_mmap": speed_ratio("workbench_mmap"),
            "identical_tokens": all(torch.equal(outputs[n], outputs["transformers"]) for n in ("workbench", "workbench_mmap"))}


def bench_cuda(directory: Path, repeats: int) -> dict:
    if not torch.cuda.is_available():
        return {"skipped": "no CUDA device: sdpa vs flash_attention_2 vs eager in fp16/bf16 needs a GPU"}
    from workbench.attention import flash_attention_unavailable

    ids = torch.randint(0, PYTHIA_160M["vocab_size"], (4, 1024), device="cuda")
    results = {}
    for dtype in (torch.float16, torch.bfloat16):
        for attn in ("sdpa", "flash_attention_2", "eager"):
            key = f"{str(dtype).removeprefix('torch.')}/{attn}"
            reason = flash_attention_unavailable(torch.device("cuda"), dtype) if attn == "flash_attention_2" else None
            if reason:
                results[key] = {"skipped": reason}
                continue
            model = workbench.GPTNeoXForCausalLM.from_pretrained(directory, dtype=dtype, device="cuda",
                                                                 attn_implementation=attn)

            def run():
                model(ids, use_cache=False)
                torch.cuda.synchronize()

            with torch.no_grad():
                results[key] = {"workbench_s": interleaved({"w": run}, repeats, warmup=2)["w"]}
            del model
            torch.cuda.empty_cache()
    return results


def machine() -> dict:
    return {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg(),
            "torch": torch.__version__, "transformers": transformers.__version__}


def run_at(threads: int, directory: Path, args) -> dict:
    """Every selected measurement at `threads` torch threads."""
    torch.set_num_threads(threads)
    report = {"torch_threads": threads, "load_average_before": os.getloadavg()}
    if "forward" in args.only:
        report["forward_fp32_cpu_4x256"] = bench_forward(directory, args.repeats)
    if "generate" in args.only:
        for batch in (1, 8):
            report[f"generate_greedy_batch{batch}"] = bench_generate(directory, args.repeats, args.new_tokens, batch)
    return report


def print_table(report: dict) -> None:
    rows = [("metric", "workbench", "transformers", "workbench/transformers")]
    for attn, r in report.get("forward_fp32_cpu_4x256", {}).items():
        rows.append((f"forward 4x256 fp32 {attn} (s)", f"{r['workbench']:.3f}", f"{r['transformers']:.3f}",
                     f"{r['ratio']:.3f}"))
    for batch in (1, 8):
        g = report.get(f"generate_greedy_batch{batch}")
        if g:
            rows.append((f"greedy batch {batch} (tok/s, identical: {g['identical_tokens']})",
                         f"{g['tokens_per_s']['workbench']:.1f}", f"{g['tokens_per_s']['transformers']:.1f}",
                         f"{g['ratio']:.3f}"))
            rows.append((f"greedy batch {batch}, mmap=True (tok/s)", f"{g['tokens_per_s']['workbench_mmap']:.1f}",
                         f"{g['tokens_per_s']['transformers']:.1f}", f"{g['ratio_mmap']:.3f}"))
    p = report.get("peak_rss_loading", {})
    if "ratio" in p.get("workbench", {}):
        rows.append(("peak RSS loading / file size", f"{p['workbench']['ratio']:.2f}",
                     f"{p['transformers']['ratio']:.2f}", f"(file {p['workbench']['file_mb']:.0f} MB)"))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", default="1,2", help="comma-separated torch thread counts (default 1,2)")
    parser.add_argument("--only", default="forward,generate,memory,cuda",
                        help="comma-separated subset of forward, generate, memory, cuda")
    parser.add_argument("--new-tokens", type=int, default=64)
    parser.add_argument("--out", type=Path, default=REPO / "bench" / "results" / "bench_core.json")
    args = parser.parse_args()
    args.only = set(args.only.split(","))
    unknown = args.only - {"forward", "generate", "memory", "cuda"}
    if unknown:
        parser.error(f"--only: unknown part(s) {sorted(unknown)}; allowed: forward, generate, memory, cuda")
    threads = [int(t) for t in args.threads.split(",")]
    transformers.logging.set_verbosity_error()

    with tempfile.TemporaryDirectory() as tmp:
        directory = write_checkpoint(Path(tmp) / "pythia-160m-random")
        report = {"machine": machine(), "repeats": args.repeats, "new_tokens": args.new_tokens,
                  "by_threads": {str(t): run_at(t, directory, args) for t in threads}}
        if "memory" in args.only:
            report["peak_rss_loading"] = {which: peak_rss(which, directory) for which in ("workbench", "transformers")}
        if "cuda" in args.only:
            report["cuda_fp16_bf16_forward"] = bench_cuda(directory, args.repeats)

    for t, r in report["by_threads"].items():
        print(f"-- {t} thread(s), median of {args.repeats} interleaved repeats")
        print_table(r)
    if "peak_rss_loading" in report:
        print_table({"peak_rss_loading": report["peak_rss_loading"]})
    cuda = report.get("cuda_fp16_bf16_forward", {})
    if "skipped" in cuda:
        print(f"CUDA: skipped ({cuda['skipped']})")
    else:
        for key, r in cuda.items():
            print(f"CUDA forward 4x1024 {key}: " + (f"{r['workbench_s'] * 1e3:.1f} ms" if "workbench_s" in r
                                                   else f"skipped ({r['skipped']})"))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
