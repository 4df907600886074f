"""The eval request cache has an integrity check: tampered, cut, foreign or non-finite records are recomputed
(one warning naming the file and the count), so a damaged cache gives the uninterrupted run's metrics."""

from __future__ import annotations

import json
import math
import os
import warnings

import pytest

import workbench
from workbench.evals import evaluate

KW = dict(num_fewshot=0, limit=12, progress=False)


@pytest.fixture(scope="module")
def model(model_dir):
    return workbench.load(str(model_dir))


@pytest.fixture(scope="module")
def reference(model, shared_data):
    res = evaluate(model, ["piqa"], **KW)
    return res.metrics["piqa"]


def _cached_run(model, path):
    return evaluate(model, ["piqa"], cache=path, **KW)


def _lines(path) -> list[str]:
    return path.read_text().splitlines()


def _rewrite(path, lines) -> None:
    path.write_text("\n".join(lines) + "\n")


def _tamper_value(line: str, value) -> str:
    rec = json.loads(line)
    rec["v"] = value
    return json.dumps(rec)


def _swap_values(lines: list[str]) -> list[str]:
    a, b = json.loads(lines[0]), json.loads(lines[1])
    a["v"], b["v"] = b["v"], a["v"]
    return [json.dumps(a), json.dumps(b)] + lines[2:]


CASES = {
    "wrong type": lambda ls: [_tamper_value(ls[0], [0.0, True, "x"])] + ls[1:],
    "flipped flag": lambda ls: [_tamper_value(ls[0], [json.loads(ls[0])["v"][0], not json.loads(ls[0])["v"][1]])] + ls[1:],
    "NaN": lambda ls: [ls[0].replace(json.dumps(json.loads(ls[0])["v"][0]), "NaN", 1)] + ls[1:],
    "cut line": lambda ls: ls[:-1] + [ls[-1][: len(ls[-1]) // 2]],
    "random bytes": lambda ls: ls[:3] + ["\x00\xff garbage \x9c"] + ls[4:],  # a record overwritten
    "swapped records": _swap_values,
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_cache_gives_the_uninterrupted_metrics(model, reference, tmp_path, case):
    path = tmp_path / "requests.jsonl"
    first = _cached_run(model, path)
    assert first.metrics["piqa"] == reference
    lines = _lines(path)
    assert len(lines) > 4
    _rewrite(path, CASES[case](lines))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        again = _cached_run(model, path)
    assert again.metrics["piqa"] == reference, case
    messages = [str(w.message) for w in caught if "request cache" in str(w.message)]
    assert len(messages) == 1 and str(path) in messages[0] and "ignored" in messages[0], messages
    assert sum(c["n_computed"] for c in again.counts.values()) >= 1  # the damaged records were recomputed


def test_after_a_cut_line_the_next_record_is_not_glued_on(model, reference, tmp_path):
    path = tmp_path / "requests.jsonl"
    _cached_run(model, path)
    lines = _lines(path)
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # killed mid-record, no newline
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _cached_run(model, path)  # recomputes the cut record and appends it
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        third = _cached_run(model, path)
    assert third.metrics["piqa"] == reference
    assert sum(c["n_computed"] for c in third.counts.values()) == 0  # everything intact now
    assert [w for w in caught if "request cache" in str(w.message)] == [] or all(
        "1 of" in str(w.message) for w in caught if "request cache" in str(w.message))  # only the old stub


def test_another_models_cache_is_not_used(model, reference, tmp_path, model_dir):
    import torch

    path = tmp_path / "requests.jsonl"
    _cached_run(model, path)
    other = workbench.load(str(model_dir))
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    res = evaluate(other, ["piqa"], cache=path, **KW)
    assert sum(c["n_computed"] for c in res.counts.values()) > 0  # nothing of the first model's was reused
    assert evaluate(other, ["piqa"], **KW).metrics["piqa"] == res.metrics["piqa"]


def test_a_non_finite_loglikelihood_is_never_cached(tmp_path):
    from workbench.evals.caching import RequestCache

    cache = RequestCache(tmp_path / "c.jsonl")
    cache.put_many([("a", [1.0, True]), ("b", [math.nan, False]), ("c", [math.inf, True])], kind="ll")
    cache.close()
    again = RequestCache(tmp_path / "c.jsonl")
    assert "a" in again and "b" not in again and "c" not in again
    assert os.path.getsize(tmp_path / "c.jsonl") > 0


@pytest.mark.parametrize("bad", [0, -3, 2.5, "512"])
def test_max_length_is_checked(model, bad):
    with pytest.raises(ValueError, match="max_length must be"):
        evaluate(model, ["piqa"], max_length=bad, **KW)
