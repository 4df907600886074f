"""TransformerLens's habits on the native model: stop/start at a layer, string helpers, hook registration."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_model, random_tokens, tiny_model


@pytest.fixture(scope="module")
def model():
    return tiny_model(parallel=False, seed=2)


def test_stop_and_start_at_layer_compose_to_the_full_forward(model):
    ids = random_tokens()
    with torch.no_grad():
        full = model(ids).logits
        for layer in range(-2, 4):
            resid = model(ids, stop_at_layer=layer)
            assert resid.shape == (2, 9, 64)
            logits = model(inputs_embeds=resid, start_at_layer=layer).logits
            assert torch.equal(logits, full), layer
        _, cache = model.run_with_cache(ids)
        assert torch.equal(model(ids, stop_at_layer=2), cache["resid_pre", 2])
        assert torch.equal(model(ids, stop_at_layer=0), cache["hook_embed"])  # nothing but the embedding
        resid, early = model.run_with_cache(ids, stop_at_layer=1)
    assert torch.equal(resid, cache["resid_pre", 1])
    assert list(early)[-1] == "blocks.0.hook_resid_post" and "blocks.1.hook_resid_pre" not in early


@pytest.mark.parametrize("kwargs, match", [
    ({"stop_at_layer": 7}, "stop_at_layer must be an int in"),
    ({"stop_at_layer": 1.5}, "stop_at_layer must be an int in"),
    ({"start_at_layer": 1}, "needs the residual stream"),
    ({"stop_at_layer": 1, "use_cache": True}, "take no KV cache"),
])
def test_bad_layer_bounds_are_refused(model, kwargs, match):
    with pytest.raises(ValueError, match=match):
        model(random_tokens(), **kwargs)


def test_string_helpers(neox_tokenizer_file):
    m = random_model(str(neox_tokenizer_file))
    ids = m.to_tokens(["The cat sat", "A dog"])
    assert m.to_str_tokens(["The cat sat", "A dog"]) == [["The", " cat", " sat"], ["A", " dog"]]
    assert m.to_str_tokens(ids)[0] == ["The", " cat", " sat"] and len(m.to_str_tokens(ids)) == 2
    assert m.to_string(ids[0]) == "The cat sat" and m.to_string(ids[:1]) == ["The cat sat"]
    assert m.to_single_token(" cat") == m.tokenizer.encode(" cat")[0]
    with pytest.raises(ValueError, match=r"is 4 tokens \[. cat., .ap., .ult., .ed.\], not one"):
        m.to_single_token(" catapulted")


def test_hook_registration_as_transformer_lens(model):
    ids = random_tokens()
    order, seen = [], {}

    def tl_style(x, hook):  # TransformerLens passes the hook point by keyword
        order.append("tl")
        hook.ctx["shape"] = tuple(x.shape)

    model.add_hook("blocks.0.hook_resid_post", tl_style)
    model.add_hook("blocks.0.hook_resid_post", lambda x, h: order.append("first"), prepend=True)
    model.add_hook("blocks.1.hook_resid_post", lambda x, hook: seen.update(permanent=True), is_permanent=True)
    with torch.no_grad():
        model(ids)
    assert order == ["first", "tl"] and model.hook_dict["blocks.0.hook_resid_post"].ctx["shape"] == (2, 9, 64)
    model.reset_hooks()  # keeps the permanent hook, clears contexts
    assert not model.hook_dict["blocks.0.hook_resid_post"].is_active()
    assert model.hook_dict["blocks.1.hook_resid_post"].is_active()
    assert model.hook_dict["blocks.0.hook_resid_post"].ctx == {}
    model.reset_hooks(including_permanent=True)
    assert not any(p.is_active() for p in model.hook_dict.values())


def test_hooks_context_can_keep_its_hooks(model):
    ids = random_tokens()
    with model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: x * 0)], reset_hooks_end=False):
        pass
    with torch.no_grad():
        kept = model(ids).logits
    model.reset_hooks()
    with torch.no_grad():
        assert not torch.equal(kept, model(ids).logits)
    with pytest.raises(RuntimeError), model.hooks(fwd_hooks=[("hook_embed", lambda x, hook: None)],
                                                  reset_hooks_end=False):
        raise RuntimeError("an error removes the hooks anyway")
    assert not model.hook_dict["hook_embed"].is_active()
