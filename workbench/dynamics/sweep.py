"""`sweep`: run an analysis over a model's training checkpoints, one checkpoint in memory at a time.

    df = workbench.sweep("demo", analysis="heads")              # every revision, head detector scores
    df = workbench.sweep("EleutherAI/pythia-70m-deduped", ["step0", "step1000", "main"], fn=my_fn, name="mine")

Each (revision, analysis) result is a record in a cache folder, written atomically with a checksum, so a
rerun, or a sweep interrupted midway, computes only what is missing. Under torchrun the revisions are
sharded over the ranks (revision i on rank i % world_size) and every rank returns the whole frame.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import warnings
from pathlib import Path
from typing import Any, Callable, Sequence

import pandas as pd
import torch
from tqdm.auto import tqdm

from ..evals import distributed
from ..fingerprint import model_fingerprint
from ..checkpoint import weight_files
from ..hub import demo_path, list_revisions, local_revisions, resolve_model_dir, revision_step
from ..loading import load
from .analyses import ANALYSES, Analysis

# Pythia trains on 1,024 sequences of 2,048 tokens per step (the Pythia paper, table 1 / appendix).
PYTHIA_TOKENS_PER_STEP = 2_097_152
ID_COLUMNS = ["revision", "step", "tokens"]
RECORD_VERSION = 2


class IdenticalRevisionsWarning(UserWarning):
    """Two revisions of a sweep have identical weights (e.g. a hub branch serving the final model)."""


def sweep(
    model_name: str | os.PathLike,
    revisions: Sequence[str] | None = None,
    fn: Callable[[torch.nn.Module], Any] | None = None,
    *,
    analysis: str | None = None,
    name: str | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    dtype: torch.dtype | str | None = None,
    device: str | None = None,
    **analysis_kwargs: Any,
) -> pd.DataFrame:
    """Run `fn` (or a named `analysis`) on each revision of a model and gather a tidy DataFrame.

    Args:
        model_name: "demo", a local checkpoint with `revisions/`, or a hub id (e.g. a Pythia model).
        revisions: revision names (default: all of `workbench.revisions(model_name)`, aliases of the same
            weights once).
        fn: `fn(model) -> dict | list[dict] | DataFrame` of metric values; a dict is one row, a list or frame
            several (e.g. one per head). Give `name` so its cached results are told apart from other functions'.
        analysis: instead of `fn`, one of `ANALYSES` ("heads", "icl", "token_loss", "logit_lens", "eval");
            `analysis_kwargs` go to it (e.g. `text=` for token_loss, `task=` for eval).
        name: the cache key of `fn`'s results (default: the function's qualified name).
        cache_dir: where results are kept (default `$WORKBENCH_CACHE/sweeps/<model>`, `WORKBENCH_CACHE`
            defaulting to `~/.cache/workbench`); "" keeps nothing on disk.
        progress: a tqdm bar over revisions.
        dtype, device: passed to `workbench.load`.

    Returns:
        DataFrame with `revision, step, tokens` (tokens seen at that checkpoint; NaN where unknown) and the
        metric columns, in training order.

    Raises:
        ValueError: neither or both of `fn` and `analysis`; an unknown analysis (the message lists them); a
            revision the model lacks (the message lists the valid ones).
    """
    job = _job(fn, analysis, name, analysis_kwargs)
    job.key += f" | dtype={dtype} device={device}"  # results in another dtype or device are other results
    names = _revisions(model_name, revisions)
    cache = _cache_dir(model_name, cache_dir)
    rank, world = distributed.rank(), distributed.world_size()
    records: dict[str, dict] = {}
    for i in tqdm(distributed.shard_indices(len(names), rank, world), desc=f"sweep {job.key}", unit="revision",
                  disable=not progress or rank != 0):  # fmt: skip
        revision = names[i]
        weights = weights_identity(model_name, revision)
        record = _read_record(cache, revision, job) if cache is not None else None
        if record is not None and record.get("weights") != weights:
            record = None  # the revision's weights changed since (e.g. a retrained model): recompute
        if record is None:
            record = {**_compute(model_name, revision, job, dtype, device), "weights": weights}
            if cache is not None:
                _write_record(cache, revision, job, record)
        records[revision] = record
    if world > 1:
        gathered: list[dict] = [{} for _ in range(world)]
        torch.distributed.all_gather_object(gathered, records)
        records = {k: v for part in gathered for k, v in part.items()}
    _warn_identical(names, records)
    return _frame(names, records)


def _job(fn, analysis, name, kwargs) -> Analysis:
    if (fn is None) == (analysis is None):
        raise ValueError("give exactly one of fn= (your function) or analysis= (one of "
                         f"{', '.join(ANALYSES)})")  # fmt: skip
    if analysis is not None:
        if analysis not in ANALYSES:
            raise ValueError(f"unknown analysis {analysis!r}; choose from {', '.join(ANALYSES)}")
        return ANALYSES[analysis](**kwargs)
    if kwargs:
        raise ValueError(f"keyword arguments {sorted(kwargs)} are for named analyses; bind them into fn instead")
    # The code is part of the key: two lambdas, or a function edited since, never share cached results.
    key = f"{name or getattr(fn, '__qualname__', None) or type(fn).__name__}#{code_digest(fn)}"
    return Analysis(key, fn)


def code_digest(fn: Callable) -> str:
    """A digest of what a function computes: its bytecode, constants, names and closure values (nested code
    included), but not its file or line, so re-running a notebook cell keeps the key. A `functools.partial`
    adds its bound arguments, a callable object its attributes.

    Values are keyed by their repr when they are plain (numbers, strings, None), by their bytes when they are
    tensors, by `model_fingerprint` when they are modules (a reference model, an SAE: their weights), element by
    element in tuples, and otherwise only by their type (mutable lists and dicts too: a closure over a counter
    must not change the key as it counts): give `name=` a label that tells such functions apart.
    """
    h = hashlib.sha256()

    def add_code(code) -> None:
        h.update(code.co_code)
        h.update(repr(code.co_names).encode())
        for const in code.co_consts:
            add_code(const) if hasattr(const, "co_code") else h.update(repr(const).encode())

    def add_value(value: Any) -> None:
        h.update(type(value).__qualname__.encode())
        if isinstance(value, (int, float, str, bool, bytes, type(None))):
            h.update(repr(value).encode())
        elif torch.is_tensor(value):
            h.update(f"{value.dtype}{tuple(value.shape)}".encode() + value.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(value, torch.nn.Module):
            h.update(model_fingerprint(value).encode())
        elif isinstance(value, tuple):
            for item in value:
                add_value(item)

    while isinstance(fn, functools.partial):
        for value in (*fn.args, *sorted(fn.keywords.items())):
            add_value(value)
        fn = fn.func
    target = getattr(fn, "__func__", fn)  # bound methods
    code = getattr(target, "__code__", None)
    if code is None:  # a callable object: its class's __call__ and its attributes
        code = type(fn).__call__.__code__
        for key, value in sorted(getattr(fn, "__dict__", {}).items()):
            h.update(key.encode())
            add_value(value)
    add_code(code)
    for cell in getattr(target, "__closure__", None) or ():
        add_value(cell.cell_contents)
    return h.hexdigest()[:12]


def _revisions(model_name, revisions: Sequence[str] | None) -> list[str]:
    """The revisions to visit, in training order; by default all, a local alias of the same weights once."""
    available = list_revisions(model_name)
    if revisions is None:
        local = _local_root(model_name)
        if local is None:
            return available
        seen: dict[Path, str] = {}
        for rev, path in local_revisions(local).items():  # "stepN" aliases of main sort first: keep that name
            seen.setdefault(path.resolve(), rev)
        return list(seen.values())
    revisions = [revisions] if isinstance(revisions, str) else list(revisions)
    missing = [r for r in revisions if r not in available]
    if missing:
        raise ValueError(f"{os.fspath(model_name)} has no revision(s) {missing}; valid revisions: "
                         f"{', '.join(available)}")  # fmt: skip
    return list(dict.fromkeys(revisions))


def _local_root(model_name) -> Path | None:
    """The local checkpoint directory of "demo" or a path; None for a hub id."""
    name = os.fspath(model_name)
    if name == "demo":
        return demo_path()
    path = Path(name).expanduser()
    return path if path.is_dir() else None


def _cache_dir(model_name, cache_dir) -> Path | None:
    if cache_dir == "":
        return None
    if cache_dir is None:
        local = _local_root(model_name)
        slug = (os.fspath(model_name) if local is None or os.fspath(model_name) == "demo"
                else os.fspath(local.resolve())).strip("/").replace("/", "--")  # fmt: skip
        cache_dir = Path(os.environ.get("WORKBENCH_CACHE", Path.home() / ".cache" / "workbench")) / "sweeps" / slug
    path = Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


# ---- one revision ----------------------------------------------------------------------------------------


def _compute(model_name, revision: str, job: Analysis, dtype, device) -> dict:
    """Load one revision, run the job on it, and free the model before the next is loaded."""
    model = load(model_name, revision=revision, dtype=dtype, device=device)
    try:
        rows = job.rows(model)
        fingerprint = model_fingerprint(model)
    finally:
        del model
    step, tokens = revision_position(model_name, revision)
    return {"version": RECORD_VERSION, "key": job.key, "revision": revision, "step": step, "tokens": tokens,
            "fingerprint": fingerprint, "rows": rows}  # fmt: skip


def revision_position(model_name: str | os.PathLike, revision: str) -> tuple[int | None, int | None]:
    """(training step, tokens seen) of a revision; None where it can't be known.

    A local snapshot records both in its safetensors metadata; a local main's step is its alias's
    (`refs.json`) and its tokens come from the training log beside it; a Pythia hub revision's tokens are
    step x 2,097,152 (`main` is step 143,000).
    """
    name = os.fspath(model_name)
    step = revision_step(revision)
    local = _local_root(model_name)
    if local is not None:
        revisions = local_revisions(local)
        path = revisions[revision]
        if step is None:  # "main": the step of the alias that points at the same directory
            step = next((revision_step(r) for r, p in revisions.items() if p == path and revision_step(r) is not None), None)
        tokens = _metadata_tokens(path / "model.safetensors")
        if tokens is None and step is not None:
            tokens = _log_tokens(local, step)
        return step, tokens
    if "pythia" in name.lower():
        step = 143_000 if revision == "main" else step
        return step, None if step is None else step * PYTHIA_TOKENS_PER_STEP
    return step, None


def weights_identity(model_name: str | os.PathLike, revision: str) -> str:
    """A content identity of a revision's weight files, cheap enough to check before trusting a cached result.

    A hub snapshot's files link to blobs named by their hash, which is used as is; a local file is hashed
    (sha256; above 256 MB only its size, its first and last MB, so that a 40 GB checkpoint costs no full read).
    """
    h = hashlib.sha256()
    for file in weight_files(resolve_model_dir(model_name, revision=revision)):
        target = file.resolve()
        if file.is_symlink() and target.parent.name == "blobs":
            h.update(target.name.encode())
            continue
        size = target.stat().st_size
        h.update(str(size).encode())
        with target.open("rb") as f:
            if size <= 256 * 2**20:
                for chunk in iter(lambda: f.read(2**20), b""):
                    h.update(chunk)
            else:
                h.update(f.read(2**20))
                f.seek(size - 2**20)
                h.update(f.read(2**20))
    return h.hexdigest()[:24]


def _metadata_tokens(path: Path) -> int | None:
    if not path.is_file():
        return None
    from safetensors import safe_open

    with safe_open(path, "pt") as f:
        tokens = (f.metadata() or {}).get("tokens")
    return int(tokens) if tokens is not None else None


def _log_tokens(root: Path, step: int) -> int | None:
    """Tokens seen at `step` from a training log beside the checkpoint (the demo's, or a run's)."""
    import csv

    for log in (root / "training_log.csv", root / "log.csv"):
        if log.is_file():
            with log.open(newline="") as f:
                return next((int(r["tokens"]) for r in csv.DictReader(f) if int(r["step"]) == step), None)
    return None


# ---- the results cache -----------------------------------------------------------------------------------


def _record_path(cache: Path, revision: str, job: Analysis) -> Path:
    digest = hashlib.sha256(job.key.encode()).hexdigest()[:16]
    return cache / digest / f"{revision}.json"


def _checksum(record: dict) -> str:
    body = {k: v for k, v in record.items() if k != "checksum"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _read_record(cache: Path, revision: str, job: Analysis) -> dict | None:
    """The cached record, or None when absent; a damaged or stale one is reported and recomputed."""
    path = _record_path(cache, revision, job)
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
        ok = record.get("checksum") == _checksum(record) and record.get("key") == job.key
    except (ValueError, AttributeError):
        ok = False
    if not ok or record.get("version") != RECORD_VERSION:
        warnings.warn(f"sweep cache record {path} is damaged or from another version; recomputing it", stacklevel=3)
        return None
    return record


def _write_record(cache: Path, revision: str, job: Analysis, record: dict) -> None:
    path = _record_path(cache, revision, job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps({**record, "checksum": _checksum(record)}, sort_keys=True))
    os.replace(tmp, path)  # atomic: a killed sweep leaves the old record or the new one, never half of one


# ---- the frame -------------------------------------------------------------------------------------------


def _warn_identical(names: list[str], records: dict[str, dict]) -> None:
    """Warn once per group of revisions whose weights are identical (EleutherAI/pythia issue #205)."""
    groups: dict[str, list[str]] = {}
    for name in names:  # identical files, or identical parameters loaded from different files
        for identity in {records[name]["weights"], records[name]["fingerprint"]}:
            groups.setdefault(identity, []).append(name)
    for same in dict.fromkeys(tuple(g) for g in groups.values() if len(g) > 1):
        warnings.warn(
            f"revisions {', '.join(same)} have identical weights (same fingerprint): a flat curve between them is "
            "not a finding. Some Pythia step* branches serve the final weights (EleutherAI/pythia issue #205).",
            IdenticalRevisionsWarning, stacklevel=3,
        )  # fmt: skip


def _frame(names: list[str], records: dict[str, dict]) -> pd.DataFrame:
    """One row per result row of each revision, id columns first, in the order of `names`."""
    rows = [{"revision": name, "step": records[name]["step"], "tokens": records[name]["tokens"], **row}
            for name in names for row in records[name]["rows"]]  # fmt: skip
    frame = pd.DataFrame(rows, columns=None if rows else ID_COLUMNS)  # every revision may return no row
    for column in ("step", "tokens"):
        frame[column] = pd.to_numeric(frame[column]).astype("Int64")
    return frame
