"""Demo benchmark: how long `workbench.load("demo")` takes, in fresh processes (target: under 3 s).

    python bench/bench_demo.py [--repeats 5] [--out bench/results/demo_load.json]

Each repeat starts a new Python process and times, inside it, `import workbench` and the load separately
(import is paid once per session; the target is about the load). transformers' own load of the same directory
(`GPTNeoXForCausalLM.from_pretrained(workbench.demo_path())` plus `AutoTokenizer`) is timed the same way, as a peer.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

SCRIPT = textwrap.dedent("""
    import json, sys, time
    t0 = time.perf_counter()
    import workbench
    if sys.argv[1] == "transformers":
        import transformers
    t1 = time.perf_counter()
    if sys.argv[1] == "workbench":
        model = workbench.load("demo")
        assert model.tokenizer is not None
    else:
        model = transformers.GPTNeoXForCausalLM.from_pretrained(workbench.demo_path())
        transformers.AutoTokenizer.from_pretrained(workbench.demo_path())
    t2 = time.perf_counter()
    print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1}))
""")


def timed_run(which: str) -> dict:
    out = subprocess.run([sys.executable, "-c", SCRIPT, which], capture_output=True, text=True, check=True, cwd=REPO,
                         env={**os.environ, "HF_HUB_OFFLINE": "1"})  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--out", default="bench/results/demo_load.json")
    args = ap.parse_args(argv)
    runs: dict[str, list[dict]] = {"workbench": [], "transformers": []}
    for _ in range(args.repeats):  # interleaved, so machine load affects both alike
        for which in runs:
            runs[which].append(timed_run(which))
    result = {
        which: {key: statistics.median(r[key] for r in rs) for key in ("import_s", "load_s")} for which, rs in runs.items()
    }
    result["target_load_s"] = 3.0
    result["repeats"] = args.repeats
    result["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_average": os.getloadavg()}
    print(f"{'':14} {'import (s)':>10} {'load (s)':>9}")
    for which in runs:
        print(f"{which:14} {result[which]['import_s']:10.2f} {result[which]['load_s']:9.2f}")
    print(f"workbench.load('demo'): {result['workbench']['load_s']:.2f} s (target < 3 s)")
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
