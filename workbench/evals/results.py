"""`EvalResults`: what `workbench.evals.evaluate` returns, and its JSON form.

Layout (also the JSON layout, see `to_dict`):

- `metrics`: `{task: {metric: value}}`; `stderr`: `{task: {metric: stderr or None}}`.
- `samples`: `{task: [per-document record]}`: doc index, gold, the requests' log-likelihoods and is-greedy
  flags, the prediction and per-document metric values.
- `config`: model identity, num_fewshot, limit, seed, batch size, device, dtype, data_dir ...
- `versions`: workbench, torch, python (and lm-eval when installed).
- `counts`: `{task: {"n_docs": ..., "n_requests": ..., "n_truncated": ...}}`; `warnings`: recorded warnings.

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

    def to_dict(self, samples: bool = True) -> dict[str, Any]:
        """Plain-JSON form (what `to_json` writes); `samples=False` drops the per-sample records."""
        out = {
            "results": self.metrics,
            "stderr": self.stderr,
            "counts": self.counts,
            "warnings": self.warnings,
            "config": self.config,
            "versions": self.versions,
        }
        if samples:
            out["samples"] = self.samples
        return out

    def to_json(self, path: str | os.PathLike, samples: bool = True) -> Path:
        """Write `to_dict()` to `path` atomically (a temp file renamed into place) so a crash never leaves a
        half-written file that looks like a result.

        Returns:
            The path written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(self.to_dict(samples=samples), f, indent=1, default=_json_default)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        return path

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EvalResults:
        """Inverse of `to_dict`."""
        if "results" not in data:
            raise ValueError(f"not an EvalResults dict: keys {sorted(data)} lack 'results'")
        return cls(
            metrics=data["results"],
            stderr=data.get("stderr", {}),
            samples=data.get("samples", {}),
            config=data.get("config", {}),
            versions=data.get("versions", {}),
            counts=data.get("counts", {}),
            warnings=list(data.get("warnings", [])),
        )

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
