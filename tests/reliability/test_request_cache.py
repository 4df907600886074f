"""The eval request cache has an integrity check (issue 15, item 4): tampered, cut, foreign or non-finite records
are recomputed, with one warning naming the file and the count, so a damaged cache gives the uninterrupted run's
metrics. Also `evaluate(max_length=)` is checked (item 10)."""

from __future__ import annotations

import json
import math
import random
import warnings
from pathlib import Path

import pytest

import workbench
from workbench.evals import evaluate
from workbench.evals.caching import RequestCache, _checksum

KW = dict(num_fewshot=0, limit=12, batch_size=4, progress=False)


@pytest.fixture(scope="module")
def model(model_dir):
    return workbench.load(str(model_dir), dtype="float32")


@pytest.fixture(scope="module")
def reference(model, shared_data):
    """The uninterrupted run, without a cache."""
    return evaluate(model, ["piqa"], data_dir=shared_data / "evals", **KW)


def _run(model, path: Path, shared_data: Path):
    """A cached run and the request-cache warnings it gave."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = evaluate(model, ["piqa"], cache=path, data_dir=shared_data / "evals", **KW)
    return res, [str(w.message) for w in caught if "request cache" in str(w.message)]


def _same_as(res, reference) -> None:
    assert res.metrics == reference.metrics
    for a, b in zip(reference.samples["piqa"], res.samples["piqa"]):  # float32 rounding only (see `evaluate`)
        assert a["loglikelihoods"] == pytest.approx(b["loglikelihoods"], rel=5e-7, abs=1e-5)


def _with_value(line: str, value, forge: bool = False) -> str:
    """The record with another value; `forge`: with that value's correct checksum (only the type check is left)."""
    rec = json.loads(line)
    rec["v"] = value
    if forge:
        rec["c"] = _checksum(rec["k"], rec["m"], rec["t"], value)
    return json.dumps(rec)


def _swap_values(lines: list[str]) -> list[str]:
    a, b = json.loads(lines[0]), json.loads(lines[1])
    assert a["v"] != b["v"]
    a["v"], b["v"] = b["v"], a["v"]
    return [json.dumps(a), json.dumps(b)] + lines[2:]


def _random_bytes(n: int) -> str:
    return bytes(random.Random(n).randrange(256) for _ in range(n)).decode("latin-1")  # written back as latin-1


# case -> (damage to the cache's lines, how many records it spoils)
CASES = {
    "[0.0, true]": (lambda ls: [_with_value(ls[0], [0.0, True])] + ls[1:], 1),
    "wrong type, checksum forged": (lambda ls: [_with_value(ls[0], [0, "yes"], forge=True)] + ls[1:], 1),
    "too long, checksum forged": (lambda ls: [_with_value(ls[0], [-1.0, True, 3], forge=True)] + ls[1:], 1),
    "NaN": (lambda ls: [ls[0].replace(json.dumps(json.loads(ls[0])["v"][0]), "NaN", 1)] + ls[1:], 1),
    "overflowing number": (lambda ls: [ls[0].replace(json.dumps(json.loads(ls[0])["v"][0]), "-1e999", 1)] + ls[1:], 1),
    "cut line": (lambda ls: ls[:-1] + [ls[-1][: len(ls[-1]) // 2]], 1),
    "random bytes": (lambda ls: ls[:3] + [_random_bytes(200).replace("\n", " ")] + ls[4:], 1),
    "swapped records": (_swap_values, 2),
    "old format": (lambda ls: [json.dumps({"k": json.loads(x)["k"], "v": json.loads(x)["v"]}) for x in ls[:3]] + ls[3:], 3),
}


@pytest.mark.parametrize("case", list(CASES))
def test_a_damaged_cache_gives_the_uninterrupted_metrics(model, reference, shared_data, tmp_path, case):
    path = tmp_path / "requests.jsonl"
    first, messages = _run(model, path, shared_data)
    _same_as(first, reference)
    assert messages == []
    lines = path.read_text(encoding="latin-1").splitlines()
    damage, spoilt = CASES[case]
    path.write_text("\n".join(damage(lines)) + "\n", encoding="latin-1")
    again, messages = _run(model, path, shared_data)
    _same_as(again, reference)
    assert len(messages) == 1 and str(path) in messages[0] and f"{spoilt} of {len(lines)} records ignored" in messages[0]
    assert again.counts["piqa"]["n_computed"] == spoilt and again.counts["piqa"]["n_cached"] == len(lines) - spoilt


def test_a_file_of_random_bytes_is_recomputed_with_a_warning(model, reference, shared_data, tmp_path):
    path = tmp_path / "requests.jsonl"
    path.write_bytes(_random_bytes(4000).encode("latin-1"))
    res, messages = _run(model, path, shared_data)
    _same_as(res, reference)
    assert len(messages) == 1 and str(path) in messages[0] and "records ignored" in messages[0]
    assert res.counts["piqa"]["n_cached"] == 0


def test_after_a_cut_line_the_next_record_is_not_glued_on(model, reference, shared_data, tmp_path):
    path = tmp_path / "requests.jsonl"
    _run(model, path, shared_data)
    lines = path.read_text().splitlines()
    path.write_text("\n".join(lines[:-1]) + "\n" + lines[-1][:10])  # killed mid-record: no newline
    _run(model, path, shared_data)  # recomputes the cut record and appends it on a line of its own
    after = path.read_text().splitlines()
    # (the value may differ in the last float32 digits: alone in its batch now, see `evaluate`)
    assert after[-2] == lines[-1][:10] and json.loads(after[-1])["k"] == json.loads(lines[-1])["k"]
    third, messages = _run(model, path, shared_data)
    _same_as(third, reference)
    assert third.counts["piqa"]["n_computed"] == 0  # nothing lost
    assert len(messages) == 1 and f"1 of {len(lines) + 1} records ignored" in messages[0]  # the stub only


def test_another_models_cache_is_not_used(model, reference, shared_data, tmp_path, model_dir):
    import torch

    path = tmp_path / "requests.jsonl"
    other = workbench.load(str(model_dir), dtype="float32")
    with torch.no_grad():
        next(other.parameters()).add_(0.5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        evaluate(other, ["piqa"], cache=path, data_dir=shared_data / "evals", **KW)
    n = len(path.read_text().splitlines())
    res, messages = _run(model, path, shared_data)
    _same_as(res, reference)
    assert res.counts["piqa"]["n_cached"] == 0
    assert len(messages) == 1 and str(path) in messages[0] and f"{n} of {n} records" in messages[0]
    assert "another model" in messages[0]


def test_a_non_finite_loglikelihood_is_never_cached(tmp_path):
    cache = RequestCache(tmp_path / "c.jsonl")
    with pytest.warns(UserWarning, match="not caching non-finite"):
        stored = cache.put_many([("a", (1.0, True)), ("b", (math.nan, False)), ("c", (-math.inf, True))], kind="ll")
    cache.close()
    assert stored == 1 and len((tmp_path / "c.jsonl").read_text().splitlines()) == 1
    again = RequestCache(tmp_path / "c.jsonl")
    assert again.get("a", "ll") == [1.0, True] and "b" not in again and "c" not in again
    with pytest.raises(ValueError, match="kind must be"):
        again.put_many([("d", 1.0)], kind="loglikelihood")


def test_each_batch_is_fsynced(model, shared_data, tmp_path, monkeypatch):
    import workbench.evals.caching as caching

    synced, batches = [], []
    monkeypatch.setattr(caching.os, "fsync", lambda fd: synced.append(fd))
    computed = [0]

    def count(stats: dict) -> None:  # batches that finished requests
        batches.append(stats["computed"] > computed[0])
        computed[0] = stats["computed"]

    evaluate(model, ["piqa"], cache=tmp_path / "c.jsonl", data_dir=shared_data / "evals", on_batch=count, **KW)
    assert len(synced) == sum(batches) > 1


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "512"])
def test_max_length_is_checked(model, shared_data, bad):
    with pytest.raises(ValueError, match=r"max_length must be None \(the model's max_position_embeddings\) or an "
                                         r"int >= 1, got"):
        evaluate(model, ["piqa"], max_length=bad, data_dir=shared_data / "evals", **KW)
