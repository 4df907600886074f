"""Attention scores and patterns cached by `run_with_cache` are computed when first read (`workbench.deferred`):
the values equal what an eager hook sees, bit for bit, whichever route reads them; edits of their inputs are
refused; the cases that can't defer (gradients, position slices, another device, other hooks) compute eagerly."""

from __future__ import annotations

import io
import pickle

import pytest
import torch

from tests.helpers import random_tokens, tiny_model
from workbench.deferred import Deferred, DeferredDict

ATTN = ("attn.hook_attn_scores", "attn.hook_pattern")
DEFERRED = ATTN + ("hook_normalized",)  # every site a full cache defers


def _inputs(padded: bool) -> dict:
    ids = random_tokens(batch=2, pos=9)
    mask = torch.ones_like(ids)
    if padded:
        mask[1, :3] = 0
    return {"input_ids": ids, "attention_mask": mask if padded else None}


def _eager_values(model, kwargs, sites: tuple[str, ...] = ATTN) -> dict[str, torch.Tensor]:
    """The values of `sites` as a reading hook (which never defers) receives them."""
    seen = {}

    def record(value, hook):
        seen[hook.name] = value.clone()

    with torch.no_grad(), model.hooks([(lambda n: n.endswith(sites), record)]):
        model(**kwargs)
    return seen


def _raw(cache, name):
    return dict(cache.cache_dict.raw_items())[name]


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=lambda d: str(d)[6:])
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("padded", [False, True], ids=["unpadded", "padded"])
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
def test_a_full_cache_defers_patterns_and_normalized_inputs_equal_to_the_eager_values(dtype, backend, padded,
                                                                                       parallel):
    model = tiny_model(parallel=parallel, seed=3, attn_implementation=backend).to(dtype)
    kwargs = _inputs(padded)
    eager = _eager_values(model, kwargs, DEFERRED)
    with torch.no_grad():
        plain = model(**kwargs).logits
        logits, cache = model.run_with_cache(kwargs["input_ids"], attention_mask=kwargs["attention_mask"])
    assert torch.equal(logits, plain)
    n = model.config.num_hidden_layers
    assert sorted(cache.pending()) == sorted(eager) and len(eager) == 2 * n + 2 * n + 1  # + ln1, ln2, ln_final
    for name, value in eager.items():
        deferred = _raw(cache, name)
        assert isinstance(deferred, Deferred)
        assert deferred.shape == value.shape and deferred.dtype == value.dtype  # known before computing
        assert torch.equal(cache[name], value), name
        assert torch.is_tensor(_raw(cache, name))  # replaced by its tensor once read
    assert cache.pending() == []


def test_every_route_out_of_the_cache_computes_the_deferred_entries():
    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    eager = _eager_values(model, {"input_ids": ids})
    name = "blocks.1.attn.hook_pattern"
    routes = {
        "cache_dict[]": lambda c: c.cache_dict[name],
        "get": lambda c: c.cache_dict.get(name),
        "values": lambda c: dict(zip(c.keys(), c.values()))[name],
        "items": lambda c: dict(c.items())[name],
        "dict()": lambda c: dict(c.cache_dict)[name],
        "**": lambda c: {**c.cache_dict}[name],
        "copy": lambda c: c.cache_dict.copy()[name],
        "pop": lambda c: c.cache_dict.pop(name),
        "pickle": lambda c: pickle.loads(pickle.dumps(c.cache_dict))[name],
        "torch.save": lambda c: _save_load(c.cache_dict)[name],
        "to": lambda c: c.to("cpu")[name],
        "stack_activation": lambda c: c.stack_activation("pattern")[1],
    }
    for route, read in routes.items():
        _, cache = model.run_with_cache(ids)
        assert name in cache.pending()
        value = read(cache)
        assert torch.is_tensor(value) and torch.equal(value, eager[name]), route


def _save_load(d: dict) -> dict:
    buf = io.BytesIO()
    torch.save(d, buf)
    buf.seek(0)
    return torch.load(buf)  # weights_only: the saved object holds only tensors and an OrderedDict


def test_batch_operations_stay_deferred_and_apply_when_read():
    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    eager = _eager_values(model, {"input_ids": ids})
    _, cache = model.run_with_cache(ids)
    rows = cache.apply_slice_to_batch_dim([1])
    assert "blocks.0.attn.hook_pattern" in rows.pending()
    assert torch.equal(rows["pattern", 0], eager["blocks.0.attn.hook_pattern"][[1]])
    _, one = model.run_with_cache(ids[:1], remove_batch_dim=True)
    assert _raw(one, "blocks.0.attn.hook_pattern").shape == (model.config.num_attention_heads, 9, 9)
    assert torch.equal(one["pattern", 0], _eager_values(model, {"input_ids": ids[:1]})["blocks.0.attn.hook_pattern"][0])
    _, cast = model.run_with_cache(ids, dtype=torch.bfloat16)
    assert _raw(cast, "blocks.0.attn.hook_attn_scores").dtype == torch.bfloat16
    assert torch.equal(cast["attn_scores", 0], eager["blocks.0.attn.hook_attn_scores"].bfloat16())


def test_nbytes_counts_pending_entries_at_their_size_unless_asked_not_to():
    model = tiny_model(seed=3)
    _, cache = model.run_with_cache(random_tokens(batch=2, pos=9))
    pattern = 2 * model.config.num_attention_heads * 9 * 9 * 4  # [batch, head, query, key] fp32
    normalized = 2 * 9 * model.config.hidden_size * 4  # [batch, pos, d_model] fp32
    n = model.config.num_hidden_layers
    assert cache.nbytes() - cache.nbytes(include_pending=False) == 2 * n * pattern + (2 * n + 1) * normalized
    for name in list(cache.pending()):
        cache[name]
    assert cache.nbytes(include_pending=False) == cache.nbytes()


def test_editing_the_inputs_in_place_before_reading_is_refused_with_a_way_out():
    model = tiny_model(seed=3)
    _, cache = model.run_with_cache(random_tokens(batch=2, pos=9))
    cache["rot_k", 0].mul_(2.0)
    with pytest.raises(RuntimeError, match=r"blocks\.0\.attn\.hook_attn_scores was deferred.*clone"):
        cache["attn_scores", 0]
    cache["pattern", 1]  # another layer's inputs are untouched: still readable
    cache["resid_pre", 1].add_(1.0)
    with pytest.raises(RuntimeError, match=r"blocks\.1\.ln1\.hook_normalized was deferred.*LayerNorm's input"):
        cache["normalized", 1, "ln1"]


@pytest.mark.parametrize("case", ["incl_bwd", "pos_slice", "device", "another_hook", "kv_cache"])
def test_cases_that_cannot_defer_compute_eagerly_and_agree(case):
    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    eager = _eager_values(model, {"input_ids": ids})
    names = list(eager)
    kwargs = {"incl_bwd": {"incl_bwd": True}, "pos_slice": {"pos_slice": slice(None)}, "device": {"device": "cpu"},
              "another_hook": {}, "kv_cache": {"use_cache": True}}[case]
    if case == "another_hook":
        with model.hooks([(names[0], lambda value, hook: None)]):
            _, cache = model.run_with_cache(ids, names_filter=names)
        # The hooked site's layer computes both eagerly; the other layers still defer.
        assert cache.pending() == [n for n in names if not n.startswith("blocks.0.")] != []
    else:
        _, cache = model.run_with_cache(ids, names_filter=names, **kwargs)
        assert cache.pending() == []
    if case == "incl_bwd":  # the forward runs through the pattern (its gradient is taken): later layers' inputs
        names = names[:2]   # round differently from sdpa's, so only layer 0 compares bitwise
    for name in names:
        assert torch.equal(cache[name], eager[name]), (case, name)


def test_a_deferred_value_is_computed_at_the_forwards_thread_count():
    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    _, cache = model.run_with_cache(ids)
    deferred = _raw(cache, "blocks.0.attn.hook_pattern")
    threads_seen = []
    compute = deferred._compute
    deferred._compute = lambda: threads_seen.append(torch.get_num_threads()) or compute()
    before = torch.get_num_threads()
    torch.set_num_threads(2 if deferred._threads == 1 else 1)
    try:
        cache["pattern", 0]
    finally:
        torch.set_num_threads(before)
    assert threads_seen == [deferred._threads]


def test_the_deferred_dict_is_a_dict_of_tensors_to_its_readers():
    d = DeferredDict({"a": torch.ones(2)})
    meta = torch.empty(3, device="meta")
    d["b"] = Deferred(lambda: torch.arange(3.0), meta, (), "b", torch.device("cpu"))
    assert isinstance(d, dict) and list(d) == ["a", "b"] and d.pending() == ["b"]
    assert "Deferred('b'" in repr(d)  # the repr shows what is not computed, without computing it
    assert torch.equal(d["b"], torch.arange(3.0)) and d.pending() == []


def test_under_inference_mode_or_autocast_caches_compute_eagerly_and_in_place_edits_still_take_effect():
    """Inference tensors have no version counter (an edit before a deferred read would go unseen) and autocast
    would have to be replayed at read time, so there the cache computes eagerly; a hook that edits its value in
    place (undetectable under inference mode) still routes the forward through it."""
    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    eager = _eager_values(model, {"input_ids": ids}, DEFERRED)
    with torch.no_grad():
        plain = model(ids).logits
    with torch.inference_mode():
        logits, cache = model.run_with_cache(ids)
        with model.hooks([("blocks.0.attn.hook_pattern", lambda value, hook: value.mul_(0.5))]):
            edited = model(ids).logits
    assert torch.equal(logits, plain) and cache.pending() == []
    assert all(torch.equal(cache[n], v) for n, v in eager.items())
    assert not torch.equal(edited, plain)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        eager_bf16 = _eager_values(model, {"input_ids": ids}, DEFERRED)
        _, cache = model.run_with_cache(ids)
    assert cache.pending() == [] and all(torch.equal(cache[n], v) for n, v in eager_bf16.items())


def test_a_deferred_read_inside_autocast_computes_as_the_forward_did():
    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    eager = _eager_values(model, {"input_ids": ids})
    _, cache = model.run_with_cache(ids)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = cache["attn_scores", 0]
    assert value.dtype == torch.float32 and torch.equal(value, eager["blocks.0.attn.hook_attn_scores"])


def test_editing_read_scores_does_not_change_a_pattern_read_later():
    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    eager = _eager_values(model, {"input_ids": ids})
    _, cache = model.run_with_cache(ids)
    cache["attn_scores", 0][:] = 0.0  # an ablation of the cached scores, after reading them
    assert torch.equal(cache["pattern", 0], eager["blocks.0.attn.hook_pattern"])


def test_copies_of_a_cache_keep_its_type_and_a_failed_pop_keeps_the_entry():
    import copy

    model = tiny_model(seed=3)
    ids = random_tokens(batch=2, pos=9)
    eager = _eager_values(model, {"input_ids": ids})
    _, cache = model.run_with_cache(ids)
    shallow = copy.copy(cache.cache_dict)
    assert isinstance(shallow, DeferredDict) and shallow.pending()  # (a deep copy computes every entry)
    deep = copy.deepcopy(cache.cache_dict)
    assert isinstance(deep, DeferredDict) and deep.pending() == []
    assert torch.equal(shallow["blocks.0.attn.hook_pattern"], eager["blocks.0.attn.hook_pattern"])
    assert torch.equal(deep["blocks.1.attn.hook_pattern"], eager["blocks.1.attn.hook_pattern"])
    _, cache = model.run_with_cache(ids)  # a fresh one: the deep copy computed every entry of the first
    cache["rot_q", 1].mul_(2.0)
    with pytest.raises(RuntimeError, match="edited in place"):
        cache.cache_dict.pop("blocks.1.attn.hook_pattern")
    assert "blocks.1.attn.hook_pattern" in cache
