"""Hooks are local to the context that made them: concurrent threads and asyncio tasks on one model each see
only their own scoped hooks; a plain `add_hook` applies model-wide."""

from __future__ import annotations

import asyncio
import threading

import torch

from tests.helpers import random_tokens, tiny_model


def test_two_threads_with_different_hooks_never_see_each_other():
    model = tiny_model(parallel=True, seed=4)
    ids = random_tokens()
    with torch.no_grad():
        clean = model(ids).logits
        zeroed = model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda x, hook: torch.zeros_like(x))]).logits
    assert not torch.equal(clean, zeroed)
    wrong = {"A": 0, "B": 0, "B_cache": 0, "B_gen": 0}
    barrier = threading.Barrier(2)

    def thread_a():  # zeroes the embedding inside its own context, over and over
        barrier.wait()
        for _ in range(100):
            with torch.no_grad(), model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: torch.zeros_like(x))]):
                wrong["A"] += not torch.equal(model(ids).logits, zeroed)

    def thread_b():  # attaches nothing to the embedding: must always get the clean model
        barrier.wait()
        for i in range(100):
            with torch.no_grad():
                wrong["B"] += not torch.equal(model(ids).logits, clean)
                logits, cache = model.run_with_cache(ids, names_filter="hook_embed")
                wrong["B_cache"] += not torch.equal(logits, clean) or bool((cache["hook_embed"] == 0).all())
                if i % 10 == 0:
                    out = model.generate(ids[:1, :4], max_new_tokens=3)
                    wrong["B_gen"] += not torch.equal(out, _greedy(model, ids[:1, :4], 3))

    threads = [threading.Thread(target=thread_a), threading.Thread(target=thread_b)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == {"A": 0, "B": 0, "B_cache": 0, "B_gen": 0}
    assert not model.hook_dict["hook_embed"].is_active()


def _greedy(model, prompt: torch.Tensor, n: int) -> torch.Tensor:
    seq = prompt
    with torch.no_grad():
        for _ in range(n):
            seq = torch.cat([seq, model(seq).logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    return seq


def test_asyncio_tasks_have_their_own_hooks():
    model = tiny_model(parallel=True, seed=4)
    ids = random_tokens()
    with torch.no_grad():
        clean = model(ids).logits

    async def hooked(started: asyncio.Event, release: asyncio.Event):
        with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: x * 0)]):
            started.set()
            await release.wait()  # the other task runs while this context is open
            with torch.no_grad():
                return torch.equal(model(ids).logits, clean)

    async def plain(started: asyncio.Event, release: asyncio.Event):
        await started.wait()
        with torch.no_grad():
            same = torch.equal(model(ids).logits, clean)
        release.set()
        return same

    async def main():
        started, release = asyncio.Event(), asyncio.Event()
        return await asyncio.gather(hooked(started, release), plain(started, release))

    hooked_same, plain_same = asyncio.run(main())
    assert plain_same and not hooked_same


def test_add_hook_outside_a_context_is_model_wide():
    model = tiny_model(parallel=True, seed=4)
    ids = random_tokens()
    model.add_hook("hook_embed", lambda x, hook: x * 0)
    seen = []
    thread = threading.Thread(target=lambda: seen.append(bool((model.run_with_cache(ids, names_filter="hook_embed")[1]
                                                                ["hook_embed"] == 0).all())))
    thread.start()
    thread.join()
    model.reset_hooks()
    assert seen == [True]
