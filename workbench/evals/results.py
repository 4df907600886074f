"""`EvalResults`: what `workbench.evals.evaluate` returns, and its JSON form (lm-eval's results schema,
`workbench.evals.schema`).

In memory:

- `metrics`: `{task: {metric: value}}`; `stderr`: `{task: {metric: stderr or None}}`.
- `samples`: `{task: [per-document record]}`: doc index, gold, the requests' log-likelihoods and is-greedy
  flags, the prediction and per-document metric values.
- `config`: model identity, num_fewshot, limit, seed, batch size, device, dtype, data_dir ...
- `versions`: workbench, torch, python (and lm-eval when installed).
- `counts`: `{task: {"n_docs": ..., "n_requests": ..., "n_truncated": ...}}`; `warnings`: recorded warnings.
- `info`: lm-eval's metadata per task and group (alias, version, n-shot, higher_is_better, metric keys and
  filters, config); `group_subtasks`: lm-eval's group -> members.

On disk (`to_json`, `write`): lm-eval's results JSON with the workbench's own block under "workbench"; per-sample
logs as lm-eval's `samples_<task>_<date>.jsonl` (`write(..., log_samples=True)`).

Reports (`compare`, plots, `to_html`, `to_markdown`) live in `workbench.evals.report` and are reached through
the methods below, so that this module stays free of plotting imports.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass
class EvalResults:
    """Aggregated metrics, per-sample records and the run's configuration."""

    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    stderr: dict[str, dict[str, float | None]] = field(default_factory=dict)
    samples: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    versions: dict[str, str] = field(default_factory=dict)
    counts: dict[str, dict[str, int]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    info: dict[str, dict[str, Any]] = field(default_factory=dict)
    group_subtasks: dict[str, list[str]] = field(default_factory=dict)

    @property
    def tasks(self) -> list[str]:
        """Task names in evaluation order."""
        return list(self.metrics)

    def __getitem__(self, task: str) -> dict[str, float]:
        if task not in self.metrics:
            raise KeyError(f"no results for task {task!r}; tasks evaluated: {self.tasks}")
        return self.metrics[task]

    def table(self):
        """One row per (task, metric).

        Returns:
            pandas.DataFrame with columns task, metric, value, stderr (NaN where no stderr exists).
        """
        import pandas as pd

        rows = []
        for task, metrics in self.metrics.items():
            for metric, value in metrics.items():
                err = self.stderr.get(task, {}).get(metric)
                rows.append({"task": task, "metric": metric, "value": value, "stderr": math.nan if err is None else err})
        return pd.DataFrame(rows, columns=["task", "metric", "value", "stderr"])

    def to_dict(self, samples: bool = False) -> dict[str, Any]:
        """lm-eval's results schema (`workbench.evals.schema.to_lm_eval`); `samples=True` adds the workbench's
        per-document records under "samples" (read back by `from_dict`)."""
        from workbench.evals.schema import to_lm_eval

        out = to_lm_eval(self)
        if samples:
            out["samples"] = self.samples
        return out

    def to_json(self, path: str | os.PathLike, samples: bool = False) -> Path:
        """Write `to_dict()` to `path` atomically, so a crash never leaves a half-written file that looks like a
        result.

        Returns:
            The path written.
        """
        from workbench.atomic import atomic_write_bytes

        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        text = json.dumps(self.to_dict(samples=samples), indent=1, default=_json_default)
        atomic_write_bytes(path, text.encode("utf-8"))
        return path

    def write(self, output: str | os.PathLike, log_samples: bool = False, date_id: str | None = None) -> dict:
        """Write the results as lm-eval's `--output_path` does: `<output>/<model>/results_<date>.json`, and with
        `log_samples` one `samples_<task>_<date>.jsonl` per task beside it. Timestamped, so reruns never overwrite.

        Args:
            output: the output folder.
            log_samples: also write the per-document logs (lm-eval's layout and value types,
                `schema.sample_records` through `schema.as_written`).
            date_id: the timestamp in the names (default now, lm-eval's `isoformat` with ":" -> "-").

        Returns:
            `{"results": path, "samples": {task: path}}`.
        """
        from datetime import datetime

        from workbench.atomic import atomic_write_bytes
        from workbench.evals.schema import as_written, sample_records, sanitize_model_name

        date_id = date_id or datetime.now().isoformat().replace(":", "-")
        folder = Path(output) / sanitize_model_name(str(self.config.get("model", "model")))
        folder.mkdir(parents=True, exist_ok=True)
        paths: dict[str, Any] = {"results": folder / f"results_{date_id}.json", "samples": {}}
        if log_samples:
            for task, records in self.samples.items():
                if records:
                    lines = "".join(json.dumps(as_written(r), default=_json_default, ensure_ascii=False) + "\n"
                                    for r in sample_records(self, task))
                    paths["samples"][task] = folder / f"samples_{task}_{date_id}.jsonl"
                    atomic_write_bytes(paths["samples"][task], lines.encode("utf-8"))
        self.to_json(paths["results"])
        return paths

    def markdown_table(self) -> str:
        """lm-eval's results table (its own `make_table`, as the lm_eval CLI prints it), plus its groups table.

        Raises:
            ImportError: lm-eval (with pytablewriter) is not installed.
        """
        from lm_eval.utils import make_table

        d = self.to_dict()
        table = make_table(d)
        return table + ("\n" + make_table(d, "groups") if "groups" in d else "")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResults:
        """Inverse of `to_dict`: lm-eval's schema (also a results file lm-eval wrote), or the workbench's former
        layout (`results` of plain metric names beside a top-level `stderr`)."""
        if "results" not in data:
            raise ValueError(f"not a results dict: keys {sorted(data)} lack 'results'")
        if "stderr" in data and "workbench" not in data:  # the former layout
            return cls(metrics=data["results"], stderr=data.get("stderr", {}), samples=data.get("samples", {}),
                       config=data.get("config", {}), versions=data.get("versions", {}),
                       counts=data.get("counts", {}), warnings=list(data.get("warnings", [])))
        from workbench.evals.schema import from_lm_eval_dict

        return cls(samples=data.get("samples", {}) if "workbench" in data else {}, **from_lm_eval_dict(data))

    @classmethod
    def from_json(cls, path: str | os.PathLike) -> EvalResults:
        """Read a results file written by `to_json` (or `workbench eval --output`)."""
        with open(path, encoding="utf-8") as f:
            return cls.from_dict(json.load(f))

    # Reports live in workbench.evals.report (pandas, matplotlib), which does not import this module; imported
    # here when asked for, so that results load without them.
    def compare(self, *args: Any, **kwargs: Any):
        """Side by side with published baselines; see `workbench.evals.report.compare`."""
        from workbench.evals.report import compare

        return compare(self, *args, **kwargs)

    def to_html(self, *args: Any, **kwargs: Any):
        """Self-contained HTML report; see `workbench.evals.report.to_html`."""
        from workbench.evals.report import to_html

        return to_html(self, *args, **kwargs)

    def to_markdown(self, *args: Any, **kwargs: Any):
        """Markdown report; see `workbench.evals.report.to_markdown`."""
        from workbench.evals.report import to_markdown

        return to_markdown(self, *args, **kwargs)

    def __repr__(self) -> str:
        parts = [f"{t}: " + ", ".join(f"{m}={v:.4g}" for m, v in ms.items()) for t, ms in self.metrics.items()]
        return "EvalResults(" + "; ".join(parts) + ")"


def _json_default(obj: Any) -> Any:
    # numpy scalars and paths appear in configs and samples
    if hasattr(obj, "item"):
        return obj.item()
    if isinstance(obj, os.PathLike):
        return os.fspath(obj)
    raise TypeError(f"cannot write {type(obj).__name__} to results JSON")
