"""Build time and page size of each widget on long prompts (a tiny random model with the GPT-NeoX-20B tokenizer).

For each length: seconds to build the view (`View(model, ids)`: the analysis it runs plus the view's own work;
the analysis alone is timed too), seconds for `to_html(max_bytes=...)` and the page's size at each budget, with the page's
notes (what it rounded or cut to fit).

    python bench/bench_widgets.py [--lengths 1000 5000] [--budgets 5000000 1000000] [--threads 1] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import re
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


def run(lengths: list[int], budgets: list[int]) -> list[dict]:
    model = random_model(str(NEOX_TOKENIZER))
    rows = []
    for n in lengths:
        ids = torch.randint(2, 50000, (n,), generator=torch.Generator().manual_seed(0)).tolist()
        for cls in (AttentionView, LogitLensView, TokenView):
            analysis = ANALYSIS[cls.__name__]  # first, so that both runs find memory already mapped
            spent = _timed(lambda: analysis(model, torch.tensor([ids])))[1] if analysis else None
            view, build = _timed(lambda: cls(model, ids))
            row = {"view": cls.__name__, "tokens": n, "build_s": round(build, 2),
                   "analysis_s": None if spent is None else round(spent, 2), "pages": []}
            for budget in budgets:
                page, secs = _timed(lambda: view.to_html(max_bytes=budget))
                notes = json.loads(re.search(r'id="wb-data">(.*?)</script>', page, re.S).group(1)).get("notes", [])
                row["pages"].append({"max_bytes": budget, "bytes": len(page.encode()), "to_html_s": round(secs, 2),
                                     "notes": notes})
            rows.append(row)
            split = "" if spent is None else f" (analysis alone {spent:.2f} s)"
            print(f"{cls.__name__:14s} {n:6d} tokens: build {build:6.2f} s{split}")
            for p in row["pages"]:
                print(f"{'':22s}max_bytes {p['max_bytes']:>9,d}: page {p['bytes']:>9,d} B in {p['to_html_s']:.2f} s  "
                      + "; ".join(p["notes"]))
            del view
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--lengths", type=int, nargs="+", default=[1000, 5000])
    ap.add_argument("--budgets", type=int, nargs="+", default=[5_000_000, 1_000_000])
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    ap.add_argument("--out", type=Path, help="also write the rows as JSON")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    rows = run(args.lengths, args.budgets)
    if args.out:
        args.out.write_text(json.dumps({"threads": args.threads, "rows": rows}, indent=1) + "\n")


if __name__ == "__main__":
    main()
