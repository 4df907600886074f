"""Data-parallel evaluation: 2 gloo processes on CPU give exactly what one process gives."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest
import torch

from workbench.evals import distributed as D

N_DOCS = 6


def test_shards_partition_the_requests():
    for n in (0, 1, 5, 12):
        for world in (1, 2, 3):
            shards = [D.shard_indices(n, r, world) for r in range(world)]
            assert sorted(i for s in shards for i in s) == list(range(n))
            assert max(map(len, shards)) - min(map(len, shards)) <= 1
    with pytest.raises(ValueError, match="rank must be in"):
        D.shard_indices(4, 2, 2)
    with pytest.raises(ValueError, match="world_size"):
        D.shard_indices(4, 0, 0)


def test_single_process_is_a_plain_call():
    assert not D.is_distributed() and D.rank() == 0 and D.world_size() == 1 and D.is_main_process()
    assert D.init_from_env() is False or os.environ.get("WORLD_SIZE", "1") != "1"
    assert D.run_sharded([1, 2, 3], lambda xs: [x * 10 for x in xs]) == [10, 20, 30]
    with pytest.raises(ValueError, match="returned 2 results for 3 requests"):
        D.run_sharded([1, 2, 3], lambda xs: xs[:2])
    engine = object()
    assert D.wrap_engine(engine) is engine


# ---------------------------------------------------------------------------- the 2-process run

def _model_and_tokenizer(tokenizer_file: str):
    from workbench.config import GPTNeoXConfig
    from workbench.model import GPTNeoXForCausalLM
    from workbench.tokenizer import Tokenizer

    torch.manual_seed(0)  # the same weights in every process
    config = GPTNeoXConfig(vocab_size=50304, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64, max_position_embeddings=256)
    return GPTNeoXForCausalLM(config).eval(), Tokenizer.from_file(tokenizer_file)


def _requests(data_dir: str) -> list[tuple[str, str]]:
    from workbench.evals.tasks import get_tasks

    task = get_tasks(["piqa"], data_dir)[0]
    return [req for doc in task.docs()[:N_DOCS] for req in task.requests(doc, "")]


def _score_one(model, tokenizer, item) -> tuple[int, float]:
    """Log-likelihood of one (index, context, continuation), one request per forward."""
    index, context, continuation = item
    ctx, cont = tokenizer.encode(context), tokenizer.encode(continuation)
    ids = torch.tensor([ctx + cont])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)
    return index, float(logp[len(ctx) - 1 :].gather(1, torch.tensor(cont)[:, None]).sum())


def _worker(rank: int, world: int, port: int, tokenizer_file: str, data_dir: str, out_dir: str) -> None:
    # what torchrun sets for each process
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank), WORLD_SIZE=str(world),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    from workbench.evals.engine import CachingEngine, RequestCache, RequestEngine

    assert D.init_from_env(device="cpu")
    try:
        model, tokenizer = _model_and_tokenizer(tokenizer_file)
        items = [(i, c, x) for i, (c, x) in enumerate(_requests(data_dir))]
        computed: list[int] = []

        def compute(part):
            computed.extend(i for i, _, _ in part)
            return [_score_one(model, tokenizer, item) for item in part]

        gathered = D.run_sharded(items, compute)  # to rank 0 only
        everyone = D.run_sharded(items, lambda part: [i for i, _, _ in part], dst=None)
        engine = D.wrap_engine(RequestEngine(model, tokenizer, batch_size=3, progress=False))
        assert D.wrap_engine(engine) is engine
        lls = engine.loglikelihood([(c, x) for _, c, x in items])
        local_computed = engine.engine.stats["computed"]
        rolling = engine.loglikelihood_rolling([c for _, c, _ in items[::2]])
        # ranks with different request caches (rank 0 has some requests cached, rank 1 none) batch differently:
        # the requests that fall through every rank's share are computed afterwards, nothing is lost
        cached = D.wrap_engine(CachingEngine(RequestEngine(model, tokenizer, batch_size=3, progress=False),
                                             RequestCache(Path(out_dir, f"cache{rank}.jsonl")), model_id="tiny"))
        if rank == 0:
            cached.engine.loglikelihood([(c, x) for _, c, x in items[:5]])
        with_cache = cached.loglikelihood([(c, x) for _, c, x in items])
        try:  # ranks that disagree on the requests fail together instead of mixing results up
            D.run_sharded(items[: len(items) - rank], compute)
            mismatch = None
        except ValueError as error:
            mismatch = str(error)
        D.barrier()
        record = {"computed": computed, "gathered": gathered, "everyone": everyone, "lls": lls,
                  "local_computed": local_computed, "rolling": rolling, "stats": engine.stats, "with_cache": with_cache,
                  "resharded": cached.stats.get("resharded", 0), "cached_computed": cached.stats["computed"],
                  "mismatch": mismatch}
        Path(out_dir, f"rank{rank}.json").write_text(json.dumps(record))
    finally:
        D.cleanup()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_gloo_processes_equal_one_process(tmp_path, neox_tokenizer_file, shared_data):
    import torch.multiprocessing as mp

    from workbench.evals.engine import RequestEngine

    data_dir = shared_data / "evals"
    mp.spawn(_worker, args=(2, _free_port(), str(neox_tokenizer_file), str(data_dir), str(tmp_path)), nprocs=2,
             join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in range(2)]

    model, tokenizer = _model_and_tokenizer(str(neox_tokenizer_file))
    requests = _requests(str(data_dir))
    n = len(requests)
    assert n == 2 * N_DOCS

    # each rank computed its strided share, nothing twice, nothing left out
    assert ranks[0]["computed"] == list(range(0, n, 2)) and ranks[1]["computed"] == list(range(1, n, 2))
    # rank 0 holds every result in request order, identical to one process; rank 1 holds none
    single = [list(_score_one(model, tokenizer, (i, c, x))) for i, (c, x) in enumerate(requests)]
    assert ranks[0]["gathered"] == single
    assert ranks[1]["gathered"] is None
    assert ranks[0]["everyone"] == ranks[1]["everyone"] == list(range(n))

    # the request engine, sharded by batch: bitwise the log-likelihoods and greedy flags of one process
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: a thread count can change float reduction order
    try:
        reference = RequestEngine(model, tokenizer, batch_size=3, progress=False)
        expected = reference.loglikelihood(requests)
        expected_rolling = reference.loglikelihood_rolling([c for c, _ in requests[::2]])
    finally:
        torch.set_num_threads(threads)
    for r in ranks:
        assert [tuple(x) for x in r["lls"]] == expected
        # (other batches there, so equal up to float32 rounding)
        assert [g for _, g in r["with_cache"]] == [g for _, g in expected]
        assert [ll for ll, _ in r["with_cache"]] == pytest.approx([ll for ll, _ in expected], rel=1e-6)
        assert r["stats"]["computed"] == reference.stats["computed"]  # summed over the ranks
        # rolling log-likelihoods are split by text: other batches, so equal up to float32 rounding
        assert r["rolling"] == pytest.approx(expected_rolling, rel=1e-6)
    assert ranks[0]["local_computed"] + ranks[1]["local_computed"] == n
    assert ranks[0]["resharded"] == ranks[1]["resharded"] == 0  # cached requests no longer change the batches
    assert min(r["local_computed"] for r in ranks) > 0  # both ranks did work
    assert all("different numbers of requests" in r["mismatch"] for r in ranks)
