"""Thread settings: forward, generation and evals of the demo model and a Pythia-160m-shaped model at 1 thread,
all cores, and the workbench's default policy (`workbench.threads`).

    python bench/bench_threads.py [--repeats 3] [--out bench/results/threads.json]

Each configuration is timed in the same process, the settings interleaved within each repeat so that machine
load affects them alike; the figure is the median over `--repeats`. Each work's op size (2 x tokens x hidden^2 of
one forward, the hidden x hidden product) is printed next to the times: with the model's width it is what
`workbench.threads.threads_for` decides on (`SMALL_OP_FLOPS`), with the cores other processes leave free. Run it once on a
quiet machine and once with another process holding a core (e.g.
`python -c "while True: pass" &`) to see both sides of the choice.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import workbench  # noqa: E402
from workbench import threads  # noqa: E402

PYTHIA_160M = dict(vocab_size=50304, hidden_size=768, num_hidden_layers=12, num_attention_heads=12,
                   intermediate_size=3072, max_position_embeddings=2048, bos_token_id=0, eos_token_id=0)  # fmt: skip


def _settings(all_cores: int) -> dict[str, Callable[[], None]]:
    def pin(n: int) -> Callable[[], None]:
        return lambda: threads.set_threads(n)

    def policy() -> None:
        threads.set_threads("auto")
        torch.set_num_threads(all_cores)

    settings = {"1 thread": pin(1), f"{all_cores} threads": pin(all_cores), "default (policy)": policy}
    return settings if all_cores > 1 else {"1 thread": pin(1), "default (policy)": policy}


def _workloads(data_dir: Path | None, eval_limit: int) -> dict[str, tuple[Callable[[], None], float]]:
    """name -> (function, op size of its typical forward in FLOPs: 2 x tokens x hidden^2)."""
    demo = workbench.load("demo")
    torch.manual_seed(0)
    big = workbench.GPTNeoXForCausalLM(workbench.GPTNeoXConfig(**PYTHIA_160M)).eval()
    big.tokenizer = demo.tokenizer  # generation needs one; ids stay below the demo's vocabulary
    h_demo, h_big = demo.config.hidden_size**2, big.config.hidden_size**2
    prompt = torch.randint(2, 4000, (1, 32), generator=torch.Generator().manual_seed(0))
    batch = torch.randint(2, 4000, (8, 128), generator=torch.Generator().manual_seed(1))

    def forward(model, ids):
        def run() -> None:
            with torch.no_grad():
                model(ids)

        return run

    def gen(model, ids, n=20):
        return lambda: model.generate(ids, max_new_tokens=n, min_new_tokens=n, do_sample=False)

    work = {
        "demo forward 8x128": (forward(demo, batch), 2 * h_demo * batch.numel()),
        "demo generate 20 tokens (batch 1)": (gen(demo, prompt), 2 * h_demo),
        "160m forward 1x128": (forward(big, batch[:1]), 2 * h_big * 128),
        "160m forward 8x128": (forward(big, batch), 2 * h_big * batch.numel()),
        "160m generate 20 tokens (batch 1)": (gen(big, prompt), 2 * h_big),
    }
    if data_dir is not None:
        from workbench.evals import evaluate

        work[f"demo evals piqa+arc_easy, limit {eval_limit}"] = (
            lambda: evaluate(demo, ["piqa", "arc_easy"], limit=eval_limit, data_dir=data_dir, progress=False),
            2 * h_demo * 1024,  # the CPU engine's token budget per batch
        )
    return work


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--eval-limit", type=int, default=100)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data" / "evals"))
    parser.add_argument("--out", default=str(REPO / "bench" / "results" / "threads.json"))
    parser.add_argument("--busy", action="store_true", help="keep one core busy (a spinning subprocess) meanwhile")
    args = parser.parse_args()
    all_cores = os.cpu_count() or 1
    data_dir = Path(args.data_dir) if Path(args.data_dir).is_dir() else None
    work = _workloads(data_dir, args.eval_limit)
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"]) if args.busy else None
    settings = _settings(all_cores)
    times: dict[str, dict[str, list[float]]] = {w: {s: [] for s in settings} for w in work}
    for name, (fn, _) in work.items():  # warm-up: first calls pay one-off initialisation
        fn()
    for _ in range(args.repeats):
        for name, (fn, _) in work.items():
            for setting, apply in settings.items():
                apply()
                t0 = time.perf_counter()
                fn()
                times[name][setting].append(time.perf_counter() - t0)
    threads.set_threads("auto")
    if spinner is not None:
        spinner.kill()
    rows = []
    print(f"| work | op FLOPs (2 x tokens x hidden^2) | {' | '.join(settings)} |")
    print("| --- | --- |" + " --- |" * len(settings))
    for name, (_, flops) in work.items():
        med = {s: statistics.median(t) for s, t in times[name].items()}
        rows.append({"work": name, "op_flops": flops, "median_s": med, "all_s": times[name]})
        print(f"| {name} | {flops:.2g} | " + " | ".join(f"{med[s] * 1e3:.1f} ms" for s in settings) + " |")
    out = {"machine": platform.processor() or platform.machine(), "cpu_count": all_cores, "repeats": args.repeats,
           "busy": args.busy,
           "torch": torch.__version__, "small_op_flops": threads.SMALL_OP_FLOPS, "busy_share": threads.BUSY_SHARE, "load_average": os.getloadavg(), "rows": rows}  # fmt: skip
    Path(args.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"written to {args.out}")


if __name__ == "__main__":
    main()
