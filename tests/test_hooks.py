"""Hook API: names, firing, replacement, removal (also on error), nesting, caching, generation."""

from __future__ import annotations

from collections import Counter

import pytest
import torch

import workbench.model as model_module
from tests.helpers import random_tokens, tiny_model
from workbench.hook_points import in_full_cache
from workbench import Tokenizer

EXPECTED_SHAPES = {  # b=2, p=9, h=4, dh=16, d=64, m=256
    "hook_embed": (2, 9, 64), "blocks.1.hook_resid_pre": (2, 9, 64), "blocks.1.ln1.hook_scale": (2, 9, 1),
    "blocks.1.ln1.hook_normalized": (2, 9, 64), "blocks.1.attn.hook_q": (2, 9, 4, 16),
    "blocks.1.attn.hook_k": (2, 9, 4, 16), "blocks.1.attn.hook_v": (2, 9, 4, 16),
    "blocks.1.attn.hook_rot_q": (2, 9, 4, 16), "blocks.1.attn.hook_rot_k": (2, 9, 4, 16),
    "blocks.1.attn.hook_attn_scores": (2, 4, 9, 9), "blocks.1.attn.hook_pattern": (2, 4, 9, 9),
    "blocks.1.attn.hook_z": (2, 9, 4, 16), "blocks.1.attn.hook_result": (2, 9, 4, 64),
    "blocks.1.hook_attn_out": (2, 9, 64), "blocks.1.ln2.hook_scale": (2, 9, 1),
    "blocks.1.ln2.hook_normalized": (2, 9, 64), "blocks.1.mlp.hook_pre": (2, 9, 256),
    "blocks.1.mlp.hook_post": (2, 9, 256), "blocks.1.hook_mlp_out": (2, 9, 64),
    "blocks.1.hook_resid_post": (2, 9, 64), "ln_final.hook_scale": (2, 9, 1), "ln_final.hook_normalized": (2, 9, 64),
}


@pytest.fixture(scope="module")
def model():
    return tiny_model(parallel=True)


@pytest.fixture(scope="module")
def seq_model():
    return tiny_model(parallel=False, seed=3)


def no_hooks_left(model) -> bool:
    return not any(point.is_active() for point in model.hook_dict.values())


def test_no_hooks_is_bit_identical(model):
    ids = random_tokens()
    with torch.no_grad():
        plain = model(ids).logits
        assert torch.equal(model.run_with_hooks(ids).logits, plain)
        model.run_with_cache(ids)  # attaches and removes hooks everywhere (eager attention, LN internals)
        assert no_hooks_left(model)
        assert torch.equal(model(ids).logits, plain)


@pytest.mark.parametrize("parallel", [True, False])
def test_every_hook_point_fires_once_with_the_documented_shape(parallel, model, seq_model):
    m = model if parallel else seq_model
    counts, shapes = Counter(), {}

    def count(act, hook):
        counts[hook.name] += 1
        shapes[hook.name] = tuple(act.shape)

    with torch.no_grad():
        m.run_with_hooks(random_tokens(), fwd_hooks=[(lambda name: True, count)])
    assert set(counts) == set(m.hook_names())
    assert set(counts.values()) == {1}
    for name, shape in EXPECTED_SHAPES.items():
        assert shapes[name] == shape, name
    assert ("blocks.1.hook_resid_mid" in shapes) == (not parallel)
    if not parallel:
        assert shapes["blocks.1.hook_resid_mid"] == (2, 9, 64)
    for name in ("attn_in", "q_input", "k_input", "v_input"):  # the split inputs: resid_pre, one copy per head
        assert shapes[f"blocks.1.hook_{name}"] == (2, 9, 4, 64)
    assert shapes["blocks.1.hook_mlp_in"] == (2, 9, 64)
    # 3 blocks of 19 sites + the 5 split-input ones (+resid_mid), embed, ln_final x2
    assert len(counts) == 3 * (24 if parallel else 25) + 3


def test_hook_names_are_in_forward_order(seq_model):
    names = seq_model.hook_names()
    assert names[0] == "hook_embed" and names[-1] == "ln_final.hook_normalized"
    block = [n.removeprefix("blocks.0.") for n in names if n.startswith("blocks.0.")]
    assert block.index("hook_resid_pre") < block.index("attn.hook_q") < block.index("hook_resid_mid") \
        < block.index("mlp.hook_pre") < block.index("hook_resid_post")


def test_unknown_names_raise_with_suggestions(model):
    ids = random_tokens()
    with pytest.raises(KeyError, match="blocks.0.attn.hook_pattern"):
        model.run_with_hooks(ids, fwd_hooks=[("blocks.0.attn.hook_patern", lambda a, h: None)])
    with pytest.raises(KeyError, match="parallel residual"):
        model.run_with_cache(ids, names_filter="blocks.0.hook_resid_mid")
    with pytest.raises(KeyError, match="selects no hook point"):
        model.run_with_hooks(ids, fwd_hooks=[(lambda name: name.endswith("nothing"), lambda a, h: None)])
    with pytest.raises(TypeError, match="pair"):
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed",)])
    with pytest.raises(KeyError):
        with model.hooks(fwd_hooks=[("hook_embed", lambda a, h: None), ("blocks.9.hook_resid_pre", lambda a, h: None)]):
            pass
    assert no_hooks_left(model)  # the valid first hook of a failed context is not left behind


def test_returned_tensor_replaces_activation_and_hook_knows_its_name(model):
    ids = random_tokens()
    seen = []

    def zero_mlp(act, hook):
        seen.append((hook.name, hook.layer()))
        return torch.zeros_like(act)

    with torch.no_grad():
        plain = model(ids).logits
        observed = model.run_with_hooks(ids, fwd_hooks=[("blocks.2.hook_mlp_out", lambda a, h: None)]).logits
        changed = model.run_with_hooks(ids, fwd_hooks=[("blocks.2.hook_mlp_out", zero_mlp)]).logits
        _, cache = model.run_with_cache(ids, names_filter=["blocks.2.hook_mlp_out", "blocks.2.hook_resid_post",
                                                          "blocks.2.hook_resid_pre", "blocks.2.hook_attn_out"])
    assert torch.equal(observed, plain)
    assert seen == [("blocks.2.hook_mlp_out", 2)]
    assert not torch.allclose(changed, plain)
    assert model.hook_dict["hook_embed"].layer() is None
    # what the layer would give without its MLP output, carried to the logits by hand
    resid = cache["blocks.2.hook_resid_pre"] + cache["blocks.2.hook_attn_out"]
    expected = model.embed_out(model.gpt_neox.final_layer_norm(resid))
    torch.testing.assert_close(changed, expected, atol=1e-5, rtol=0)


def test_a_hook_that_raises_leaves_no_hook_attached(model):
    ids = random_tokens()

    def boom(act, hook):
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda a, h: None), ("blocks.1.attn.hook_pattern", boom)])
    assert no_hooks_left(model)
    with pytest.raises(RuntimeError, match="boom"):
        model.run_with_hooks(ids, fwd_hooks=[("blocks.1.hook_mlp_out", boom)], reset_hooks_end=False)
    assert no_hooks_left(model)
    with pytest.raises(ValueError, match="inside"):
        with model.hooks(fwd_hooks=[("hook_embed", lambda a, h: None)]):
            assert not no_hooks_left(model)
            raise ValueError("inside")
    assert no_hooks_left(model)
    with pytest.raises(TypeError, match="return a Tensor"):
        model.run_with_hooks(ids, fwd_hooks=[("hook_embed", lambda a, h: 3.0)])
    assert no_hooks_left(model)


def test_reset_hooks_end_false_keeps_hooks_until_reset(model):
    calls = []
    with torch.no_grad():
        model.run_with_hooks(random_tokens(), fwd_hooks=[("hook_embed", lambda a, h: calls.append(1))],
                             reset_hooks_end=False)
        model(random_tokens())
    assert len(calls) == 2
    model.reset_hooks()
    assert no_hooks_left(model)


def test_contexts_nest(model):
    fired = []
    outer = [("hook_embed", lambda a, h: fired.append("outer"))]
    inner = [("hook_embed", lambda a, h: fired.append("inner"))]
    ids = random_tokens()
    with torch.no_grad(), model.hooks(fwd_hooks=outer):
        with model.hooks(fwd_hooks=inner):
            model(ids)
        assert fired == ["outer", "inner"]
        model(ids)
        assert fired == ["outer", "inner", "outer"]
        with model.hooks(fwd_hooks=inner):
            model.reset_hooks()  # clears everything, the outer context's hook too
            model(ids)
        assert fired == ["outer", "inner", "outer"]
    assert no_hooks_left(model)


def test_hooks_stay_active_through_generate(model):
    ids = random_tokens(batch=2, pos=5)
    target = 7
    push = model.embed_out.weight[target].detach() * 50  # drives every prediction towards `target`

    def steer(act, hook):
        return act + push

    lengths = []
    hooks = [("blocks.2.hook_resid_post", steer), ("hook_embed", lambda a, h: lengths.append(a.shape[1]))]
    out = model.generate(ids, max_new_tokens=4, fwd_hooks=hooks)
    assert out[:, 5:].eq(target).all()
    assert lengths[0] == 5 and set(lengths[1:]) == {1} and len(lengths) >= 4  # prefill, then cached steps
    assert no_hooks_left(model)
    with model.hooks(fwd_hooks=[("blocks.2.hook_resid_post", steer)]):
        again = model.generate(ids, max_new_tokens=4)
    assert torch.equal(out, again)
    # the same continuation without the KV cache, step by step through run_with_hooks
    seq = ids
    with torch.no_grad():
        for _ in range(4):
            logits = model.run_with_hooks(seq, fwd_hooks=[("blocks.2.hook_resid_post", steer)]).logits
            seq = torch.cat([seq, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    assert torch.equal(seq, out)
    assert no_hooks_left(model)


def test_pattern_hooks_observe_beside_the_fused_kernel(monkeypatch):
    model = tiny_model(parallel=True)
    assert model.config.attn_implementation == "sdpa"
    fused_calls = []
    real = model_module.sdpa_attention
    monkeypatch.setattr(model_module, "sdpa_attention", lambda *a, **k: fused_calls.append(1) or real(*a, **k))
    ids = random_tokens()
    with torch.no_grad():
        plain = model(ids).logits
        assert len(fused_calls) == 3
        fused_calls.clear()
        logits, cache = model.run_with_cache(ids, names_filter="blocks.1.attn.hook_pattern")
        assert len(fused_calls) == 3  # every layer stays on the fused kernel; the pattern is computed beside it
        assert torch.equal(logits, plain)
        eager = tiny_model(parallel=True, attn_implementation="eager")
        out = eager(ids, output_attentions=True)
    torch.testing.assert_close(cache["blocks.1.attn.hook_pattern"], out.attentions[1], atol=1e-6, rtol=0)
    torch.testing.assert_close(out.logits, plain, atol=1e-5, rtol=0)


def test_names_filter_stores_only_what_was_asked(model):
    ids = random_tokens()
    with torch.no_grad():
        _, full = model.run_with_cache(ids)
        wanted = ["blocks.0.attn.hook_pattern", "blocks.2.hook_resid_post"]
        _, some = model.run_with_cache(ids, names_filter=wanted)
        _, pred = model.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_z"))
    assert list(some.keys()) == wanted
    assert list(pred.keys()) == [f"blocks.{l}.attn.hook_z" for l in range(3)]
    assert set(full.keys()) == {n for n in model.hook_names() if in_full_cache(n)}
    assert "blocks.0.attn.hook_result" not in full and "blocks.0.hook_q_input" not in full  # as in TransformerLens
    expected_bytes = sum(full[n].numel() * full[n].element_size() for n in wanted)
    assert some.nbytes() == expected_bytes
    assert some.nbytes() * 10 < full.nbytes()
    for name in wanted:  # the full cache hooks LayerNorm internals (explicit LayerNorm): rounding differs
        torch.testing.assert_close(some[name], full[name], atol=1e-5, rtol=0)


def test_pos_slice_device_dtype(model):
    ids = random_tokens()
    with torch.no_grad():
        _, full = model.run_with_cache(ids)
        _, last = model.run_with_cache(ids, pos_slice=-1, dtype=torch.float64, device="cpu")
        _, span = model.run_with_cache(ids, pos_slice=slice(2, 5))
    for name in full.keys():
        dim = 2 if name.endswith(("pattern", "attn_scores")) else 1
        assert torch.equal(last[name], full[name].select(dim, -1).double()), name
        assert torch.equal(span[name], full[name].narrow(dim, 2, 3)), name


def test_incl_bwd_gradients_match_autograd_and_leave_parameters_alone(model):
    ids = random_tokens()
    names = ["blocks.0.hook_resid_pre", "blocks.1.attn.hook_z", "ln_final.hook_normalized"]
    _, cache = model.run_with_cache(ids, names_filter=names, incl_bwd=True)
    assert all(p.grad is None for p in model.parameters())
    assert list(cache.keys()) == names + [n + "_grad" for n in names]
    kept = {}  # the reference: gradients seen by backward hooks (tensor.register_hook), through loss.backward()
    out = model.run_with_hooks(ids, bwd_hooks=[(names, lambda g, hook: kept.__setitem__(hook.name, g))], labels=ids)
    out.loss.backward()
    model.zero_grad(set_to_none=True)
    for name in names:
        torch.testing.assert_close(cache[name + "_grad"], kept[name], atol=1e-7, rtol=1e-5)


def test_backward_hooks_see_and_replace_gradients(model):
    ids = random_tokens()
    grads = {}
    out = model.run_with_hooks(ids, labels=ids, fwd_hooks=[], bwd_hooks=[
        ("blocks.1.hook_resid_pre", lambda g, h: grads.setdefault(h.name, g.clone())),
        ("hook_embed", lambda g, h: torch.zeros_like(g))], reset_hooks_end=False)
    out.loss.backward()
    model.reset_hooks()
    assert grads["blocks.1.hook_resid_pre"].shape == (2, 9, 64)
    assert model.gpt_neox.embed_in.weight.grad.abs().sum() == 0  # the zeroed gradient reached the embedding
    assert model.embed_out.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
    assert no_hooks_left(model)


def test_text_inputs_are_padded_and_masked(neox_tokenizer_file):
    model = tiny_model(vocab_size=50304)
    model.tokenizer = Tokenizer.from_file(neox_tokenizer_file)
    texts = ["The quick brown fox jumps", "Hello"]
    with torch.no_grad():
        logits, cache = model.run_with_cache(texts, names_filter="blocks.2.hook_resid_post")
        alone_logits, alone = model.run_with_cache(texts[1], names_filter="blocks.2.hook_resid_post")
    n = alone_logits.shape[1]
    assert model.to_tokens(texts[1]).shape == (1, n)
    assert model.to_str_tokens("Hello world") == ["Hello", " world"]
    side = model.tokenizer.padding_side
    rows = slice(0, n) if side == "right" else slice(logits.shape[1] - n, None)
    torch.testing.assert_close(logits[1, rows], alone_logits[0], atol=1e-5, rtol=0)
    torch.testing.assert_close(cache["resid_post", 2][1, rows], alone["resid_post", 2][0], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="tokenizer"):
        tiny_model().run_with_cache("no tokenizer here")
