"""Observing never changes the computation: a cached run is bit-identical to a plain one, at every hook site, in
every dtype and backend; a hook that modifies a value (returned or in place) still changes the output."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_tokens, tiny_model
from workbench.hook_points import iter_sites

DTYPES = [torch.float32, torch.bfloat16, torch.float16]
SIDE_SITES = ["attn.hook_attn_scores", "attn.hook_pattern", "attn.hook_result", "ln1.hook_scale",
              "ln1.hook_normalized", "ln2.hook_scale", "ln2.hook_normalized", "hook_attn_in", "hook_q_input",
              "hook_k_input", "hook_v_input", "hook_mlp_in"]  # computed beside the forward, not on its path


def _model(parallel: bool, backend: str, dtype: torch.dtype):
    return tiny_model(parallel=parallel, seed=7, attn_implementation=backend).to(dtype)


def _inputs(padded: bool) -> dict:
    ids = random_tokens(batch=2, pos=9)
    if not padded:
        return {"input_ids": ids}
    mask = torch.ones_like(ids)
    mask[1, :3] = 0  # left padding on the second row
    return {"input_ids": ids, "attention_mask": mask}


@pytest.mark.parametrize("dtype", DTYPES, ids=lambda d: str(d).removeprefix("torch."))
@pytest.mark.parametrize("backend", ["sdpa", "eager"])
@pytest.mark.parametrize("parallel", [True, False], ids=["parallel", "sequential"])
def test_caching_any_site_leaves_the_logits_bit_identical(parallel, backend, dtype):
    model = _model(parallel, backend, dtype)
    for padded in (False, True):
        kwargs = _inputs(padded)
        with torch.no_grad():
            plain = model(**kwargs).logits
            names = model.hook_names()
            for name in names:
                logits, cache = model.run_with_cache(kwargs["input_ids"], names_filter=name,
                                                     attention_mask=kwargs.get("attention_mask"))
                assert torch.equal(logits, plain), f"caching {name} changed the logits ({dtype}, {backend})"
                assert list(cache) == [name]
            full, _ = model.run_with_cache(kwargs["input_ids"], attention_mask=kwargs.get("attention_mask"))
            everything, _ = model.run_with_cache(kwargs["input_ids"], names_filter=lambda n: True,
                                                 attention_mask=kwargs.get("attention_mask"))
        assert torch.equal(full, plain) and torch.equal(everything, plain)


@pytest.mark.parametrize("site", SIDE_SITES)
@pytest.mark.parametrize("in_place", [False, True], ids=["returned", "in_place"])
def test_a_modifying_hook_still_changes_the_output(site, in_place):
    model = _model(parallel=False, backend="sdpa", dtype=torch.float32)
    ids = random_tokens()

    def shift(x, hook):  # a shift, not a scale: LayerNorm would undo a scaled input
        offset = torch.linspace(-1.0, 1.0, x.shape[-1], dtype=x.dtype)
        if in_place:
            x.add_(offset)
            return None
        return x + offset

    with torch.no_grad():
        plain = model(ids).logits
        hooked = model.run_with_hooks(ids, fwd_hooks=[(f"blocks.1.{site}", shift)]).logits
    assert not torch.allclose(hooked, plain, atol=1e-4), f"shifting {site} did not change the output"


def test_a_replaced_pattern_runs_through_the_forward():
    """Patching the pattern of one head to uniform gives exactly what the eager formula gives with it."""
    model = _model(parallel=True, backend="sdpa", dtype=torch.float32)
    ids = random_tokens()

    def uniform(pattern, hook):
        causal = torch.tril(torch.ones(pattern.shape[-2:]))
        pattern[:, 2] = causal / causal.sum(-1, keepdim=True)
        return pattern

    z_seen = {}
    with torch.no_grad():
        model.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_pattern", uniform),
                                             ("blocks.1.attn.hook_v", lambda v, hook: z_seen.__setitem__("v", v)),
                                             ("blocks.1.attn.hook_z", lambda z, hook: z_seen.__setitem__("z", z))])
    v = z_seen["v"][:, :, 2]  # [b, p, dh] values of head 2 (no rotary on v)
    causal = torch.tril(torch.ones(ids.shape[1], ids.shape[1]))
    expected = (causal / causal.sum(-1, keepdim=True)) @ v
    torch.testing.assert_close(z_seen["z"][:, :, 2], expected, atol=1e-6, rtol=1e-6)


def test_attention_scores_hook_masks_as_transformer_lens():
    """Masked positions are -inf; a padding query that sees no real key has a row of -inf and a zero pattern."""
    model = _model(parallel=True, backend="sdpa", dtype=torch.float32)
    kwargs = _inputs(padded=True)
    with torch.no_grad():
        _, cache = model.run_with_cache(kwargs["input_ids"], attention_mask=kwargs["attention_mask"],
                                        names_filter=lambda n: n.endswith(("hook_attn_scores", "hook_pattern")))
    scores, pattern = cache["attn_scores", 0], cache["pattern", 0]
    future = torch.triu(torch.ones(9, 9, dtype=torch.bool), 1)
    assert torch.isneginf(scores[:, :, future]).all() and not torch.isinf(scores[0][:, ~future]).any()
    assert torch.isneginf(scores[1, :, :, :3]).all()  # padded keys, for every query
    assert torch.equal(pattern[1, :, :3], torch.zeros_like(pattern[1, :, :3]))  # padding queries: no key, all 0
    torch.testing.assert_close(pattern[1, :, 3:].sum(-1), torch.ones(4, 6))
    assert [n for n, _, _ in iter_sites(1)]  # the table is non-empty (sanity for the parametrisation above)
