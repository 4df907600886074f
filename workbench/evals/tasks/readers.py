"""Reading JSON-lines benchmark files, with errors that name the file and line."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

Record = dict[str, Any]
Reader = Callable[[Path], list[Record]]  # a data file -> its records


def read_jsonl(path: str | os.PathLike, required: Sequence[str] = ()) -> list[Record]:
    """Read a JSON-lines file; blank lines are skipped.

    Raises:
        ValueError: a line that is not a JSON object, naming the file and 1-based line number.
        KeyError: a record lacking one of `required`, naming file, line and the keys present.
    """
    path = Path(path)
    records = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as err:
                raise ValueError(f"{path}:{lineno}: malformed JSON line ({err.msg} at column {err.colno})") from None
            if not isinstance(rec, dict):
                raise ValueError(f"{path}:{lineno}: expected a JSON object, got {type(rec).__name__}")
            missing = [k for k in required if k not in rec]
            if missing:
                raise KeyError(f"{path}:{lineno}: record lacks {missing}; it has keys {sorted(rec)}")
            records.append(rec)
    if not records:
        raise ValueError(f"{path}: no records")
    return records


def line_numbers(path: str | os.PathLike) -> list[int]:
    """The 1-based numbers of the non-blank lines of `path`: the line of each record `read_jsonl` returns."""
    return [i for i, line in enumerate(Path(path).read_text(encoding="utf-8").split("\n"), 1) if line.strip()]


def jsonl_reader(*required: str) -> Reader:
    """A reader of JSON-lines files whose records must have the keys `required`."""
    return functools.partial(read_jsonl, required=required)


# llm-foundry's multiple-choice records `{query, choices, gold}` (piqa, arc, openbookqa, sciq, boolq)
read_mc_jsonl = jsonl_reader("query", "choices", "gold")
# the prompt fields of those records, as `MultipleChoiceTask` arguments
MC_FIELDS: dict[str, Callable[[Record], Any]] = {"choices": lambda d: d["choices"], "gold": lambda d: int(d["gold"])}
