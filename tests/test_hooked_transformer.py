"""The TransformerLens view (`model.as_transformer_lens()`) against TransformerLens itself on the same weights.

TL 4.x's reference is its `TransformerBridge` around a transformers GPT-NeoX holding our weights (`bridge_for`,
from the parity tests); TL's own tools (patching, head detector, test_prompt, the loss) run on both and must
agree. TransformerLens stays optional: the view is also tested with it blocked.
"""

from __future__ import annotations

import contextlib
import io
import subprocess
import sys
import textwrap

import pytest
import torch

from tests.helpers import REPO, random_tokens, tiny_model
from workbench.hooked_transformer import FactoredMatrix, factored_matrix, lm_cross_entropy_loss

WEIGHTS = ["W_E", "W_U", "b_U", "W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O", "W_in", "b_in", "W_out",
           "b_out"]
ATOL = 1e-5


@pytest.fixture(scope="module")
def tl_lib():
    return pytest.importorskip("transformer_lens")


@pytest.fixture(scope="module", params=[True, False], ids=["parallel", "sequential"])
def both(request, tl_lib):
    """(view, bridge, ids): a tiny random model seen through the view and through TransformerLens."""
    from tests.test_transformer_lens_parity import bridge_for

    model = tiny_model(parallel=request.param, seed=31)
    return model.as_transformer_lens(), bridge_for(model), random_tokens(batch=2, pos=6)


@pytest.fixture(scope="module")
def demo(tl_lib):
    """(view, bridge) of the demo model, the bridge with the demo tokenizer booted as TransformerLens boots it."""
    import transformers
    from transformer_lens.model_bridge.sources._bridge_builder import configure_tokenizer

    import workbench
    from tests.test_transformer_lens_parity import bridge_for

    model = workbench.load("demo").eval()
    bridge = bridge_for(model)
    bridge.tokenizer = configure_tokenizer(transformers.AutoTokenizer.from_pretrained(workbench.demo_path()),
                                           bridge.cfg)
    return model.as_transformer_lens(), bridge


# ---- weights and config -------------------------------------------------------------------------------------
def test_weights_match_transformer_lens(both):
    tl, bridge, _ = both
    for name in WEIGHTS:
        ours, theirs = getattr(tl, name), getattr(bridge, name)
        assert ours.shape == theirs.shape, name
        torch.testing.assert_close(ours, theirs, atol=0, rtol=0, msg=name)
    for l, block in enumerate(tl.blocks):
        for name in ("W_Q", "W_K", "W_V", "W_O", "b_Q", "b_K", "b_V", "b_O"):
            assert torch.equal(getattr(block.attn, name), getattr(bridge.blocks[l].attn, name)), (l, name)
        for name in ("W_in", "b_in", "W_out", "b_out"):
            assert torch.equal(getattr(block.mlp, name), getattr(tl, name)[l]), (l, name)


def test_per_layer_weights_are_views(both):
    tl, _, _ = both
    attn = tl.model.gpt_neox.layers[1].attention
    for name in ("W_Q", "W_K", "W_V", "b_Q", "b_V", "W_O"):
        assert getattr(tl.blocks[1].attn, name).untyped_storage().data_ptr() in (
            attn.query_key_value.weight.untyped_storage().data_ptr(),
            attn.query_key_value.bias.untyped_storage().data_ptr(), attn.dense.weight.untyped_storage().data_ptr())
    assert tl.W_E is tl.model.gpt_neox.embed_in.weight
    with torch.no_grad():  # an edit through the view is an edit of the model
        before = attn.query_key_value.weight.clone()
        tl.blocks[1].attn.W_K[2, 5, 3] += 1.0
        changed = (attn.query_key_value.weight != before).nonzero().tolist()
        tl.blocks[1].attn.W_K[2, 5, 3] -= 1.0
    assert changed == [[2 * 3 * 16 + 16 + 3, 5]]  # head 2's k rows follow its q rows (interleaved q|k|v)


def test_factored_circuits_match_transformer_lens(both, tl_lib):
    tl, bridge, _ = both
    for name in ("OV", "QK"):
        ours, theirs = getattr(tl, name), getattr(bridge, name)
        assert isinstance(ours, tl_lib.FactoredMatrix) and ours.shape == theirs.shape, name
        # equal factors; the products differ in rounding only (our factors are strided views)
        torch.testing.assert_close(ours.AB, theirs.AB, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours[2, 1].AB, theirs[2, 1].AB, atol=1e-6, rtol=0)
        torch.testing.assert_close(ours.norm(), theirs.norm(), atol=ATOL, rtol=0)
        torch.testing.assert_close(getattr(tl.blocks[2].attn, name).AB, theirs[2].AB, atol=1e-6, rtol=0)


def test_workbench_factored_matrix_matches_transformer_lens(tl_lib):
    g = torch.Generator().manual_seed(0)
    A, B = torch.randn(3, 2, 12, 5, generator=g), torch.randn(3, 2, 5, 12, generator=g)
    ours, theirs = FactoredMatrix(A, B), tl_lib.FactoredMatrix(A, B)
    m, v = torch.randn(12, 7, generator=g), torch.randn(12, generator=g)
    pairs = {"AB": (ours.AB, theirs.AB), "BA": (ours.BA, theirs.BA), "T": (ours.T.AB, theirs.T.AB),
             "[l, h]": (ours[1, 0].AB, theirs[1, 0].AB), "[l]": (ours[2].AB, theirs[2].AB),
             "@ matrix": ((ours @ m).AB, (theirs @ m).AB), "@ vector": (ours @ v, theirs @ v),
             "matrix @": ((m.T @ ours).AB, (m.T @ theirs).AB), "vector @": (v @ ours, v @ theirs),
             "@ factored": ((ours @ ours).AB, (theirs @ theirs).AB), "* 2": ((ours * 2).AB, (2 * theirs).AB),
             "S": (ours.S, theirs.S), "norm": (ours.norm(), theirs.norm()),
             "eigenvalues": (ours.eigenvalues, theirs.eigenvalues)}
    for name, (a, b) in pairs.items():
        torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-5, msg=name)
    U, S, V = ours.svd()
    torch.testing.assert_close(U @ torch.diag_embed(S) @ V.transpose(-2, -1), ours.AB, atol=1e-4, rtol=0)
    assert ours.shape == theirs.shape and ours.ndim == 4


def test_config_matches_transformer_lens(both):
    tl, bridge, _ = both
    for name in ("n_layers", "d_model", "n_heads", "d_head", "d_mlp", "d_vocab", "d_vocab_out", "n_ctx", "act_fn",
                 "eps", "normalization_type", "positional_embedding_type", "parallel_attn_mlp", "default_prepend_bos",
                 "n_key_value_heads", "device", "dtype", "attn_only", "gated_mlp"):
        assert getattr(tl.cfg, name) == getattr(bridge.cfg, name), name
    c = tl.model.config
    assert (tl.cfg.rotary_dim, tl.cfg.rotary_base) == (c.rotary_ndims, c.rotary_emb_base)
    assert tl.cfg.original_architecture == "GPTNeoXForCausalLM" and tl.cfg.to_dict()["n_layers"] == c.num_hidden_layers


def test_cfg_follows_dtype_and_mode():
    model = tiny_model(seed=2)
    tl = model.as_transformer_lens()
    tl.to(torch.float64)
    assert tl.cfg.dtype == torch.float64 == model.dtype and tl.W_Q.dtype == torch.float64
    tl.train()
    assert model.training and tl.training
    model.eval()
    assert not tl.training


# ---- forward -----------------------------------------------------------------------------------------------
def test_forward_return_types(both, tl_lib):
    tl, bridge, ids = both
    with torch.no_grad():
        logits = tl(ids)
        assert torch.is_tensor(logits) and torch.equal(logits, tl.model(ids).logits)
        torch.testing.assert_close(logits, bridge(ids), atol=ATOL, rtol=0)
        for per_token in (False, True):
            loss = tl(ids, return_type="loss", loss_per_token=per_token)
            theirs = bridge(ids, return_type="loss", loss_per_token=per_token)
            torch.testing.assert_close(loss, theirs, atol=ATOL, rtol=0)
            torch.testing.assert_close(loss, tl_lib.utilities.lm_cross_entropy_loss(logits, ids, per_token=per_token),
                                       atol=0, rtol=0)
        both_out = tl(ids, return_type="both")
        assert torch.equal(both_out[0], logits) and torch.equal(both_out[1], tl(ids, return_type="loss"))
        assert tl(ids, return_type=None) is None
        with pytest.raises(ValueError, match="return_type"):
            tl(ids, return_type="predictions")


def test_loss_with_padding_matches_transformer_lens(tl_lib):
    g = torch.Generator().manual_seed(3)
    logits, ids = torch.randn(2, 7, 11, generator=g), torch.randint(0, 11, (2, 7), generator=g)
    mask = torch.ones(2, 7, dtype=torch.long)
    mask[0, :2] = 0  # left padding
    mask[1, -3:] = 0  # right padding
    for per_token in (False, True):
        for m in (None, mask, mask.bool()):
            theirs = tl_lib.utilities.lm_cross_entropy_loss(logits, ids, m, per_token)
            torch.testing.assert_close(lm_cross_entropy_loss(logits, ids, m, per_token), theirs, atol=0, rtol=0)


def test_stop_at_layer_residuals_match_transformer_lens(both):
    tl, bridge, ids = both
    with torch.no_grad():
        _, cache = tl.run_with_cache(ids)
        for layer in (0, 1, 2, -1, -2):
            resid = tl(ids, stop_at_layer=layer)
            assert torch.equal(resid, cache["resid_pre", layer]), layer
            torch.testing.assert_close(resid, bridge(ids, stop_at_layer=layer), atol=ATOL, rtol=0)
        stopped, partial = tl.run_with_cache(ids, stop_at_layer=2)
        assert torch.equal(stopped, cache["resid_pre", 2])
        assert "blocks.1.hook_resid_post" in partial and "blocks.2.hook_resid_pre" not in partial


def test_start_at_layer_logits_match_transformer_lens(both):
    tl, bridge, ids = both
    with torch.no_grad():
        logits, cache = tl.run_with_cache(ids)
        for layer in (0, 1, 2, -1):
            resid = cache["resid_pre", layer]
            ours = tl(resid, start_at_layer=layer)
            torch.testing.assert_close(ours, logits, atol=ATOL, rtol=0)
            torch.testing.assert_close(ours, bridge(resid, start_at_layer=layer), atol=ATOL, rtol=0)
        loss = tl(cache["resid_pre", 1], start_at_layer=1, tokens=ids, return_type="loss")
        torch.testing.assert_close(loss, tl(ids, return_type="loss"), atol=ATOL, rtol=0)
        with pytest.raises(ValueError, match="tokens="):
            tl(cache["resid_pre", 1], start_at_layer=1, return_type="loss")


# ---- TransformerLens's tools ---------------------------------------------------------------------------------
def test_patching_matches_transformer_lens(both, tl_lib):
    tl, bridge, ids = both
    patching = tl_lib.patching
    clean, corrupted = ids[:1], ids[:1].clone()
    corrupted[0, 2] = (clean[0, 2] + 7) % tl.cfg.d_vocab

    def metric(logits):
        return logits[0, -1, 3] - logits[0, -1, 4]

    functions = [patching.get_act_patch_resid_pre, patching.get_act_patch_attn_out, patching.get_act_patch_mlp_out,
                 patching.get_act_patch_attn_head_out_by_pos, patching.get_act_patch_attn_head_out_all_pos,
                 patching.get_act_patch_attn_head_pattern_dest_src_pos, patching.get_act_patch_block_every,
                 patching.get_act_patch_attn_head_all_pos_every]
    if not tl.cfg.parallel_attn_mlp:
        functions.append(patching.get_act_patch_resid_mid)
    with torch.no_grad():
        _, clean_cache = tl.run_with_cache(clean)
        _, tl_clean_cache = bridge.run_with_cache(clean)
        for fn in functions:
            ours = fn(tl, corrupted, clean_cache, metric)
            theirs = fn(bridge, corrupted, tl_clean_cache, metric)
            name = getattr(fn, "__name__", None) or fn.keywords["activation_name"]
            assert ours.shape == theirs.shape, name
            torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0, msg=name)
        result = patching.get_act_patch_resid_pre(tl, corrupted, clean_cache, metric, baseline=True)
        torch.testing.assert_close(result.baseline, metric(tl(corrupted)).reshape(()), atol=0, rtol=0)


def test_detect_head_matches_transformer_lens(demo, tl_lib):
    tl, bridge = demo
    detect = tl_lib.head_detector.detect_head
    prompts = ["And the LORD spake unto Moses, saying, And the LORD spake unto Moses, saying",
               ["a b c d a b c d", "In the beginning God created. In the beginning God created."]]
    with torch.no_grad():
        for seq in prompts:
            for pattern in ("previous_token_head", "duplicate_token_head", "induction_head"):
                exclude_bos = pattern != "previous_token_head"
                ours, theirs = (detect(m, seq, pattern, exclude_bos=exclude_bos) for m in (tl, bridge))
                torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0, msg=pattern)
        _, cache = tl.run_with_cache(prompts[0], remove_batch_dim=True)
        cached = detect(tl, prompts[0], "induction_head", cache=cache)
        torch.testing.assert_close(cached, detect(tl, prompts[0], "induction_head"), atol=0, rtol=0)
        assert cached.shape == (tl.cfg.n_layers, tl.cfg.n_heads)


def _printed(fn, *args, **kwargs) -> str:
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        fn(*args, **kwargs)
    return out.getvalue()


def test_test_prompt_output_matches_transformer_lens(demo, tl_lib):
    tl, bridge = demo
    test_prompt = tl_lib.utilities.test_prompt
    cases = [("And God said, Let there be light: and there was", " light", {}),
             ("And Moses said unto the", "LORD", {"prepend_bos": True}),
             ("And Moses said unto the", ["LORD", " people"], {}),
             ("In the beginning God created the heaven and the", " earth and", {"top_k": 3})]
    with torch.no_grad():
        for prompt, answer, kwargs in cases:
            ours = _printed(test_prompt, prompt, answer, tl, **kwargs)
            assert ours == _printed(test_prompt, prompt, answer, bridge, **kwargs), (prompt, answer)
            assert "Ranks of the answer tokens" in ours


def test_tokenizer_helpers_match_transformer_lens(demo):
    tl, bridge = demo
    text, texts = "And Moses went up", ["And Moses went up", "Amen"]
    assert torch.equal(tl.to_tokens(text), bridge.to_tokens(text))
    assert tl.to_tokens(text)[0, 0] != tl.tokenizer.bos_token_id  # GPT-NeoX: no BOS by default (TL 4.x)
    for kwargs in ({"prepend_bos": True}, {"padding_side": "left"}, {"prepend_bos": True, "padding_side": "right"}):
        assert torch.equal(tl.to_tokens(texts, **kwargs), bridge.to_tokens(texts, **kwargs)), kwargs
    ids = tl.to_tokens(texts)
    for item in (text, texts, ids[0], ids[:1], ids[0].numpy(), ids[0, 1]):
        assert tl.to_str_tokens(item) == bridge.to_str_tokens(item), item
    assert tl.to_str_tokens(text, prepend_bos=True) == bridge.to_str_tokens(text, prepend_bos=True)
    assert tl.to_str_tokens(ids) == [tl.to_str_tokens(row) for row in ids]  # [b, p]: one list per row
    for item in (ids, ids[0], ids[0, 2]):
        assert tl.to_string(item) == bridge.to_string(item)
    assert tl.to_single_token(" Moses") == bridge.to_single_token(" Moses")
    assert tl.to_single_str_token(tl.to_single_token(" Moses")) == " Moses"
    with pytest.raises(AssertionError):
        tl.to_single_token(" Moses went")
    repeated = "Moses and Aaron and Moses"
    for mode in ("first", "last"):
        for kwargs in ({}, {"prepend_bos": True}):
            assert tl.get_token_position(" and", repeated, mode, **kwargs) == \
                bridge.get_token_position(" and", repeated, mode, **kwargs)
    ids = tl.to_tokens(repeated)
    assert tl.get_token_position(" and", ids, "last") == bridge.get_token_position(" and", ids, "last")
    tl.cfg.default_prepend_bos = True
    try:
        assert tl.to_tokens(text)[0, 0] == tl.tokenizer.bos_token_id
    finally:
        tl.cfg.default_prepend_bos = False


def test_text_input_padding_as_transformer_lens(demo):
    tl, bridge = demo
    texts = ["And Moses went up unto God", "Amen"]
    with torch.no_grad():
        for side in ("left", "right"):
            ids, mask = tl.model.to_tokens_and_mask(texts, padding_side=side)
            logits = tl(texts, padding_side=side)
            real = mask.bool()
            torch.testing.assert_close(logits[real], tl.model(ids, attention_mask=mask).logits[real], atol=ATOL, rtol=0)
            torch.testing.assert_close(logits[real], bridge(texts, padding_side=side)[real], atol=ATOL, rtol=1e-5)
            # TL masks left padding only: the loss of right-padded texts counts the padding
            loss = tl(texts, return_type="loss", padding_side=side)
            torch.testing.assert_close(loss, bridge(texts, return_type="loss", padding_side=side), atol=ATOL, rtol=1e-5)
            torch.testing.assert_close(loss, lm_cross_entropy_loss(logits, ids, mask if side == "left" else None),
                                       atol=0, rtol=0)
        masked = tl(ids, return_type="loss", attention_mask=mask)  # right-padded ids, mask given
        torch.testing.assert_close(masked, lm_cross_entropy_loss(tl.model(ids, attention_mask=mask).logits, ids, mask),
                                   atol=0, rtol=0)


# ---- hooks ---------------------------------------------------------------------------------------------------
def test_hooks_are_the_models():
    model = tiny_model(seed=4)
    tl = model.as_transformer_lens()
    ids = random_tokens(batch=1, pos=5)
    assert tl.hook_dict is model.hook_dict
    assert tl.mod_dict["blocks.1.attn.hook_z"] is model.hook_dict["blocks.1.attn.hook_z"]
    assert tl.mod_dict["blocks.1.attn"] is model.gpt_neox.layers[1].attention
    assert tl.blocks[1].attn.hook_z is model.hook_dict["blocks.1.attn.hook_z"]
    assert tl.blocks[0].ln1.w is model.gpt_neox.layers[0].input_layernorm.weight
    seen = []

    def record(tensor, hook):
        hook.ctx["shape"] = tuple(tensor.shape)
        seen.append(hook.name)

    def zero_head(z, hook):
        z[:, :, 0] = 0.0
        return z

    with torch.no_grad():
        plain = tl(ids)
        tl.add_hook("blocks.0.attn.hook_z", record, is_permanent=True)
        model(ids)  # a hook added through the view is on the model
        tl.reset_hooks()
        tl(ids)
        assert seen == ["blocks.0.attn.hook_z"] * 2  # permanent: reset_hooks() kept it
        assert model.hook_dict["blocks.0.attn.hook_z"].ctx == {"shape": (1, 5, 4, 16)}
        tl.reset_hooks(including_permanent=True)
        patched = tl.run_with_hooks(ids, fwd_hooks=[("blocks.1.attn.hook_z", zero_head)], return_type="loss")
        assert not torch.equal(patched, tl(ids, return_type="loss"))
        with tl.hooks(fwd_hooks=[(lambda n: n.endswith("hook_resid_pre"), record)], reset_hooks_end=False) as view:
            assert view is tl
        tl(ids)
        assert seen[-3:] == [f"blocks.{l}.hook_resid_pre" for l in range(3)]
        tl.reset_hooks()
        assert torch.equal(tl(ids), plain)
        _, cache = tl.run_with_cache(ids, names_filter="blocks.0.attn.hook_pattern", remove_batch_dim=True)
        assert list(cache) == ["blocks.0.attn.hook_pattern"] and cache["pattern", 0].shape == (4, 5, 5)
        _, plain_dict = tl.run_with_cache(ids, return_cache_object=False, names_filter="hook_embed")
        assert isinstance(plain_dict, dict) and list(plain_dict) == ["hook_embed"]
    # incl_bwd: gradients of TL's loss
    _, grads = tl.run_with_cache(ids, names_filter="blocks.2.hook_resid_post", incl_bwd=True)
    resid = grads["blocks.2.hook_resid_post"].clone().requires_grad_(True)
    loss = lm_cross_entropy_loss(model.embed_out(model.gpt_neox.final_layer_norm(resid)), ids)
    torch.testing.assert_close(grads["blocks.2.hook_resid_post_grad"], torch.autograd.grad(loss, resid)[0],
                               atol=1e-6, rtol=0)


def test_generate_delegates(demo):
    tl, _ = demo
    prompt = "And God said"
    greedy = tl.generate(prompt, max_new_tokens=5, do_sample=False)
    assert isinstance(greedy, str) and greedy == tl.model.generate(prompt, max_new_tokens=5)
    ids = tl.to_tokens(prompt)
    out = tl.generate(ids, max_new_tokens=5, do_sample=False)
    assert torch.equal(out, tl.model.generate(ids, max_new_tokens=5))
    assert tl.generate(prompt, max_new_tokens=3, seed=0) == tl.generate(prompt, max_new_tokens=3, seed=0)


# ---- TransformerLens optional ---------------------------------------------------------------------------------
def test_factored_matrix_falls_back_without_transformer_lens(monkeypatch):
    monkeypatch.setitem(sys.modules, "transformer_lens", None)  # `import transformer_lens` now fails
    assert type(factored_matrix(torch.ones(2, 3), torch.ones(3, 2))) is FactoredMatrix
    tl = tiny_model(seed=5).as_transformer_lens()
    assert type(tl.OV) is FactoredMatrix and type(tl.blocks[0].attn.QK) is FactoredMatrix
    torch.testing.assert_close(tl.OV[1, 2].AB, tl.W_V[1, 2] @ tl.W_O[1, 2], atol=0, rtol=0)


def test_view_works_without_transformer_lens():
    """In a fresh interpreter where transformer_lens cannot be imported at all."""
    script = textwrap.dedent("""
        import sys
        sys.modules["transformer_lens"] = None
        import torch
        from tests.helpers import random_tokens, tiny_model
        from workbench.hooked_transformer import FactoredMatrix
        tl = tiny_model(seed=6).as_transformer_lens()
        ids = random_tokens(batch=2, pos=5)
        with torch.no_grad():
            logits, cache = tl.run_with_cache(ids)
            assert torch.equal(logits, tl(ids)) and tl(ids, return_type="loss").ndim == 0
            assert torch.equal(tl(ids, stop_at_layer=1), cache["resid_pre", 1])
        assert type(tl.QK) is FactoredMatrix and tl.QK.shape == (3, 4, 64, 64) and tl.OV.norm().shape == (3, 4)
        assert "transformer_lens" not in {m.split(".")[0] for m in sys.modules if sys.modules[m] is not None}
        print("ok")
    """)
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "ok", run.stderr[-3000:]
