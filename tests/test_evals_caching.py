"""`CachingEngine` wraps the request engine (as lm-eval's `CachingLM` wraps an `LM`); sharding is an engine
argument; the former `RequestEngine(cache=...)` still works, with a deprecation warning."""

from __future__ import annotations

import pytest

REQUESTS = [
    ("Question: Which is heavier?\nAnswer:", " a kilogram of iron"),
    ("Question: Which is heavier?\nAnswer:", " A"),
    ("The cat sat on the ", "mat."),
    ("In the beginning", " God created the heaven and the earth."),
    ("In the beginning", " was the Word"),
    ("Once upon a time", " there was a king"),
]
GENERATIONS = [("Question: What is the capital of France?\nAnswer:", {"until": ["\n"], "max_gen_toks": 5}),
               ("Once upon a", {"until": ["."], "max_gen_toks": 4})]


@pytest.fixture(scope="module")
def model(model_dir):
    import workbench

    return workbench.load(str(model_dir), dtype="float32")


def test_caching_engine_answers_what_it_stored(model, tmp_path):
    from workbench.evals import CachingEngine, RequestCache, RequestEngine

    plain = RequestEngine(model, batch_size=2, progress=False)
    expected_ll, expected_gen = plain.loglikelihood(REQUESTS), plain.generate_until(GENERATIONS)
    first = CachingEngine(RequestEngine(model, batch_size=2, progress=False), RequestCache(tmp_path / "c.jsonl"))
    assert first.loglikelihood(REQUESTS) == expected_ll and first.generate_until(GENERATIONS) == expected_gen
    assert first.stats["computed"] == len(REQUESTS) + len(GENERATIONS) and first.stats["cached"] == 0
    assert len((tmp_path / "c.jsonl").read_text().splitlines()) == len(REQUESTS) + len(GENERATIONS)

    again = CachingEngine(RequestEngine(model, progress=False), RequestCache(tmp_path / "c.jsonl"))
    assert again.loglikelihood(REQUESTS) == expected_ll and again.generate_until(GENERATIONS) == expected_gen
    assert again.stats["computed"] == 0 and again.stats["cached"] == len(REQUESTS) + len(GENERATIONS)
    rolling = again.loglikelihood_rolling(["In the beginning God created the heaven and the earth."])
    assert rolling == pytest.approx(plain.loglikelihood_rolling(["In the beginning God created the heaven and the earth."]))
    assert again.max_length == plain.max_length and again.encode("Hi") == plain.encode("Hi")  # the engine's


def test_engine_cache_argument_is_deprecated_but_works(model, tmp_path):
    from workbench.evals import CachingEngine, RequestCache, RequestEngine

    with pytest.warns(DeprecationWarning, match="CachingEngine"):
        engine = RequestEngine(model, progress=False, cache=RequestCache(tmp_path / "c.jsonl"), model_id="mine")
    assert isinstance(engine, CachingEngine) and engine.model_id == "mine"
    engine.loglikelihood(REQUESTS[:2])
    assert len(engine.cache) == 2


def test_shards_compute_their_batches_and_together_all(model):
    from workbench.evals import RequestEngine

    whole = RequestEngine(model, batch_size=1, progress=False)
    expected = whole.loglikelihood(REQUESTS)
    parts = [whole.sharded(rank, 3).loglikelihood(REQUESTS) for rank in range(3)]
    for i, value in enumerate(expected):
        mine = [p[i] for p in parts if p[i] is not None]
        assert mine == [value]  # computed by exactly one shard, bitwise as in one process
    assert all(any(x is not None for x in p) for p in parts)
    assert whole.shard is None and whole.sharded(1, 3).stats is whole.stats  # a view: the counters are shared
    with pytest.raises(ValueError, match="shard must be"):
        RequestEngine(model, shard=(2, 2))
