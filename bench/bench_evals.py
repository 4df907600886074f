"""Benchmark: wall time of lm-evaluation-harness's hf backend / wall time of workbench.evals, same model and tasks.

Tasks: arc_easy + piqa + 10 MMLU subjects, 0-shot and 5-shot, over the local data (lm-eval reads the task YAMLs
that `workbench.evals.harness.export_lm_eval_tasks` writes over the same files). Both sides run in this process on
an already-loaded model (model loading excluded, data loading and prompt building included), float32 on CPU.

    python bench/bench_evals.py                       # demo model, full tasks
    python bench/bench_evals.py --model DIR --limit 100 --shots 0 --output bench/evals_bench.json
    python bench/bench_evals.py --limit 100 --threads 1  # both sides pinned to one thread

Each side runs `--repeats` times (default 3), the two interleaved (lm-eval first in even repeats, the workbench
first in odd ones) so that machine load affects both alike; figures are medians. `--threads default` leaves each
side at its own default: torch's (all cores) for lm-eval, the workbench's work-size policy (`workbench.threads`)
for the workbench; an int pins both. The speed-up is the median over repeats of the speed-up within a repeat.

Prints a table and writes JSON (timings, speed-ups, accuracies of both sides, machine, versions).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

MMLU10 = [
    "abstract_algebra", "anatomy", "astronomy", "business_ethics", "clinical_knowledge", "college_biology",
    "college_chemistry", "college_computer_science", "college_mathematics", "college_medicine",
]
TASKS = ["arc_easy", "piqa"] + [f"mmlu_{s}" for s in MMLU10]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="demo", help="'demo' or a checkpoint directory (transformers layout)")
    ap.add_argument("--data-dir", default=None, help="benchmark data (default ../shared/data/evals)")
    ap.add_argument("--limit", type=int, default=None, help="documents per task (default: all)")
    ap.add_argument("--shots", default="0,5", help="comma-separated few-shot counts (default 0,5)")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--hf-batch-size", type=int, default=16, help="lm-eval hf backend batch size (default 16)")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved runs of each side (median reported)")
    ap.add_argument("--threads", default="default", help="'default' (each side's own) or an int for both")
    ap.add_argument("--output", default="bench/evals_bench.json")
    args = ap.parse_args(argv)

    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    logging.disable(logging.WARNING)
    import lm_eval
    import torch
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    import workbench
    from workbench.evals import evaluate
    from workbench.evals.harness import export_lm_eval_tasks
    from workbench.evals.tasks import resolve_data_dir

    model_dir = str(workbench.demo_path()) if args.model == "demo" else args.model
    data_dir = resolve_data_dir(args.data_dir)
    yaml_dir = Path(tempfile.mkdtemp(prefix="wb_bench_tasks_"))
    export_lm_eval_tasks(TASKS, yaml_dir, data_dir)
    tm = TaskManager(include_path=str(yaml_dir), include_defaults=False)

    hf = HFLM(pretrained=model_dir, device=args.device, batch_size=args.hf_batch_size, dtype="float32")
    ours_model = workbench.load(model_dir, dtype="float32", device=args.device)
    from workbench.threads import set_threads

    all_cores = torch.get_num_threads()
    pinned = None if args.threads == "default" else int(args.threads)
    torch.set_num_threads(pinned or all_cores)

    def run_hf(shots: int):
        set_threads(pinned or "auto")  # lm-eval's forwards are not the workbench's: torch's setting applies
        return lm_eval.simple_evaluate(model=hf, tasks=["wb_" + t for t in TASKS], num_fewshot=shots,
                                       limit=args.limit, task_manager=tm, bootstrap_iters=0)  # fmt: skip

    def run_wb(shots: int):
        set_threads(pinned or "auto")
        return evaluate(ours_model, TASKS, num_fewshot=shots, limit=args.limit, data_dir=data_dir, progress=False)

    rows = []
    for shots in [int(s) for s in args.shots.split(",")]:
        times: dict[str, list[float]] = {"hf": [], "wb": []}
        for repeat in range(args.repeats):
            order = [("hf", run_hf), ("wb", run_wb)] if repeat % 2 == 0 else [("wb", run_wb), ("hf", run_hf)]
            for side, fn in order:
                t0 = time.perf_counter()
                result = fn(shots)
                times[side].append(time.perf_counter() - t0)
                if side == "hf":
                    theirs = result
                else:
                    ours = result
        t_hf, t_wb = statistics.median(times["hf"]), statistics.median(times["wb"])
        # the speed-up within each repeat (this machine's speed drifts over minutes), then the median
        speedup = statistics.median(h / w for h, w in zip(times["hf"], times["wb"]))
        acc_hf = {t: theirs["results"]["wb_" + t]["acc,none"] for t in TASKS}
        acc_wb = {t: ours.metrics[t]["acc"] for t in TASKS}
        rows.append({
            "num_fewshot": shots, "lm_eval_hf_s": round(t_hf, 2), "workbench_s": round(t_wb, 2),
            "speedup": round(speedup, 2), "acc_equal": acc_hf == acc_wb, "repeats": args.repeats,
            "lm_eval_hf_all_s": [round(t, 2) for t in times["hf"]], "workbench_all_s": [round(t, 2) for t in times["wb"]],
            "acc_lm_eval": acc_hf, "acc_workbench": acc_wb,
            "n_requests": sum(c["n_requests"] for c in ours.counts.values()),
        })  # fmt: skip
        print(f"{shots}-shot: lm-eval hf {t_hf:8.1f} s   workbench {t_wb:8.1f} s   speed-up {speedup:5.2f}x   "
              f"acc identical: {acc_hf == acc_wb}   (medians of {args.repeats})", flush=True)

    n_params = sum(p.numel() for p in ours_model.parameters())
    print()
    print(f"model {model_dir} ({n_params / 1e6:.1f}M params), tasks {', '.join(TASKS[:2])} + {len(MMLU10)} MMLU "
          f"subjects, limit {args.limit}, device {args.device}, threads {args.threads} ({all_cores} cores)")
    print(f"{'shots':>5} | {'lm-eval hf (s)':>14} | {'workbench (s)':>13} | {'speed-up':>8}")
    for r in rows:
        print(f"{r['num_fewshot']:>5} | {r['lm_eval_hf_s']:>14.1f} | {r['workbench_s']:>13.1f} | {r['speedup']:>7.2f}x")
    out = {
        "model": model_dir, "num_params": n_params, "tasks": TASKS, "limit": args.limit, "device": args.device,
        "hf_batch_size": args.hf_batch_size, "workbench_batch_size": "auto", "rows": rows,
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count(), "threads": args.threads},
        "versions": {"python": sys.version.split()[0], "torch": torch.__version__, "lm_eval": lm_eval.__version__},
    }
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    Path(args.output).write_text(json.dumps(out, indent=1))
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
