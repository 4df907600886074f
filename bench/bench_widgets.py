"""Build time and page size of each widget on long prompts (a tiny random model with the GPT-NeoX-20B tokenizer).

For each length: seconds to build the view (`View(model, ids)`: the analysis it runs plus the view's own work;
the analysis alone is timed too), seconds for `to_html(max_bytes=...)` and the page's size at each budget, with the page's
notes (what it rounded or cut to fit).

    python bench/bench_widgets.py [--lengths 1000 5000] [--budgets 5000000 1000000] [--threads 1] [--repeats 3]
                                  [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.helpers import NEOX_TOKENIZER, random_model  # noqa: E402
from workbench.analysis import attention_patterns, residual_stack  # noqa: E402
from workbench.viz.attention import AttentionView  # noqa: E402
from workbench.viz.logit_lens import LogitLensView  # noqa: E402
from workbench.viz.token_view import TokenView  # noqa: E402

ANALYSIS = {  # the analysis each view's from_model runs, timed alone to split build time
    "AttentionView": lambda m, ids: attention_patterns(m, ids),
    "LogitLensView": lambda m, ids: residual_stack(m, ids),
    "TokenView": None,
}


def _timed(f):
    t = time.perf_counter()
    out = f()
    return out, time.perf_counter() - t


def _pages(view, budgets: list[int]) -> list[dict]:
    out = []
    for budget in budgets:
        page, secs = _timed(lambda: view.to_html(max_bytes=budget))
        notes = json.loads(re.search(r'id="wb-data">(.*?)</script>', page, re.S).group(1)).get("notes", [])
        out.append({"max_bytes": budget, "bytes": len(page.encode()), "to_html_s": round(secs, 2), "notes": notes})
    return out


def run(lengths: list[int], budgets: list[int], repeats: int) -> list[dict]:
    """Median build times over `repeats` rounds, interleaved (every view and length once per round); the pages
    come from the last round's views."""
    model = random_model(str(NEOX_TOKENIZER))
    prompts = {n: torch.randint(2, 50000, (n,), generator=torch.Generator().manual_seed(0)).tolist() for n in lengths}
    cases = [(n, cls) for n in lengths for cls in (AttentionView, LogitLensView, TokenView)]
    builds, spents, pages = {c: [] for c in cases}, {c: [] for c in cases}, {}
    for round_ in range(repeats):
        for n, cls in cases:
            ids, analysis = prompts[n], ANALYSIS[cls.__name__]
            if analysis:  # first, so that both runs find memory already mapped
                spents[(n, cls)].append(_timed(lambda: analysis(model, torch.tensor([ids])))[1])
            view, build = _timed(lambda: cls(model, ids))
            builds[(n, cls)].append(build)
            if round_ == repeats - 1:
                pages[(n, cls)] = _pages(view, budgets)
            del view
    rows = []
    for n, cls in cases:
        build = statistics.median(builds[(n, cls)])
        spent = statistics.median(spents[(n, cls)]) if spents[(n, cls)] else None
        rows.append({"view": cls.__name__, "tokens": n, "build_s": round(build, 2), "build_runs_s": builds[(n, cls)],
                     "analysis_s": None if spent is None else round(spent, 2), "pages": pages[(n, cls)]})
        split = "" if spent is None else f" (analysis alone {spent:.2f} s)"
        print(f"{cls.__name__:14s} {n:6d} tokens: build {build:6.2f} s{split}  (median of {repeats})")
        for p in pages[(n, cls)]:
            print(f"{'':22s}max_bytes {p['max_bytes']:>9,d}: page {p['bytes']:>9,d} B in {p['to_html_s']:.2f} s  "
                  + "; ".join(p["notes"]))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--budgets", type=int, nargs="+", default=[5_000_000, 1_000_000])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--repeats", type=int, default=3, help="interleaved rounds; build times are their median")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.lengths, args.budgets, args.repeats)
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, "repeats": args.repeats, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
