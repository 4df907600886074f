"""Patching at TransformerLens's granularities and path patching, against `transformer_lens.patching` on a bridge
holding the same weights (parallel and sequential residual), and against hand-built interventions."""

from __future__ import annotations

import pytest
import torch

from tests.helpers import random_tokens, tiny_model
from workbench.analysis import (
    attribution_patch,
    direct_path_patch,
    patch,
    patch_block_every,
    patch_heads_every,
    path_patch,
    path_patch_receivers,
    path_patch_senders,
)

pytest.importorskip("transformers")
pytest.importorskip("transformer_lens")
from transformer_lens import patching as tl_patching  # noqa: E402

from tests.test_transformer_lens_parity import bridge_for  # noqa: E402

ATOL = 1e-5


def metric(logits: torch.Tensor) -> torch.Tensor:
    return (logits[:, -1, 3] - logits[:, -1, 4]).mean()


@pytest.fixture(scope="module", params=[True, False], ids=["parallel", "sequential"])
def both(request):
    model = tiny_model(parallel=request.param, seed=31)
    bridge = bridge_for(model)
    clean = random_tokens(batch=2, pos=5, seed=4)
    corrupted = clean.clone()
    corrupted[:, 2] = (clean[:, 2] + 9) % 128
    with torch.no_grad():
        _, clean_cache = bridge.run_with_cache(clean)
        _, corrupted_cache = bridge.run_with_cache(corrupted)
    return model, bridge, clean, corrupted, clean_cache, corrupted_cache


def _close(ours: torch.Tensor, theirs: torch.Tensor) -> None:
    assert ours.shape == theirs.shape
    torch.testing.assert_close(ours, theirs.float(), atol=ATOL, rtol=0)


def test_block_every_matches(both):
    model, bridge, clean, corrupted, clean_cache, _ = both
    ours, frame = patch_block_every(model, clean, corrupted, metric, progress=False)
    _close(ours, tl_patching.get_act_patch_block_every(bridge, corrupted, clean_cache, metric))
    assert ours.shape == (3, 3, 5) and len(frame) == 45
    assert list(frame["component"].unique()) == ["resid_pre", "attn_out", "mlp_out"]
    assert {"layer", "pos", "token", "metric"} <= set(frame.columns) and "clean_metric" in frame.attrs
    if not model.config.use_parallel_residual:
        mid, _ = patch(model, clean, corrupted, metric, "resid_mid", ("layer", "pos"), progress=False)
        mlp_in, _ = patch(model, clean, corrupted, metric, "mlp_in", ("layer", "pos"), progress=False)
        assert (mid - mlp_in).abs().max() > 1e-3
        # The bridge's hook_resid_mid is an alias of ln2.hook_in: a replaced value reaches only the MLP (our
        # hook_mlp_in). Under no_grad TransformerLens edits the activation in place instead, which also changes
        # the residual itself, as patching resid_mid means (and as HookedTransformer did).
        with torch.no_grad():
            _close(mid, tl_patching.get_act_patch_resid_mid(bridge, corrupted, clean_cache, metric))
        _close(mlp_in, tl_patching.get_act_patch_resid_mid(bridge, corrupted, clean_cache, metric))


def test_heads_every_matches(both):
    """out (z), q, k, v by (layer, pos, head) and pattern by (layer, dest, head), then all positions at once."""
    model, bridge, clean, corrupted, clean_cache, _ = both
    by_pos, frame = patch_heads_every(model, clean, corrupted, metric, by_pos=True, progress=False)
    _close(by_pos, tl_patching.get_act_patch_attn_head_by_pos_every(bridge, corrupted, clean_cache, metric))
    assert by_pos.shape == (5, 3, 5, 4) and set(frame["component"]) == {"out", "q", "k", "v", "pattern"}
    all_pos, _ = patch_heads_every(model, clean, corrupted, metric, progress=False)
    _close(all_pos, tl_patching.get_act_patch_attn_head_all_pos_every(bridge, corrupted, clean_cache, metric))
    # single sweeps in TransformerLens's own axis order
    ours, frame = patch(model, clean, corrupted, metric, "pattern", ("layer", "head", "dest"), progress=False)
    _close(ours, tl_patching.get_act_patch_attn_head_pattern_by_pos(bridge, corrupted, clean_cache, metric))
    assert list(frame.columns) == ["layer", "head", "dest", "dest_token", "metric"]
    ours, _ = patch(model, clean, corrupted, metric, "v", ("layer", "pos", "head"), progress=False)
    _close(ours, tl_patching.get_act_patch_attn_head_v_by_pos(bridge, corrupted, clean_cache, metric))


def test_pattern_dest_src_matches(both):
    model, bridge, clean, corrupted, clean_cache, _ = both
    ours, frame = patch(model, clean, corrupted, metric, "pattern", ("layer", "head", "dest", "src"), progress=False)
    theirs = tl_patching.get_act_patch_attn_head_pattern_dest_src_pos(bridge, corrupted, clean_cache, metric)
    _close(ours, theirs)
    assert ours.shape == (3, 4, 5, 5) and len(frame) == 300
    # a key position after the query is masked: patching it changes nothing
    corrupted_metric = frame.attrs["corrupted_metric"]
    torch.testing.assert_close(ours[:, :, 0, 1:], torch.full((3, 4, 4), corrupted_metric), atol=ATOL, rtol=0)


def test_split_input_sites_patch_like_their_projections(both):
    """A head's clean q input put back == its clean queries put back (q = W_Q ln1(q_input) per head)."""
    model, _, clean, corrupted, _, _ = both
    by_input, _ = patch(model, clean, corrupted, metric, "q_input", ("layer", "pos", "head"), progress=False)
    by_q, _ = patch(model, clean, corrupted, metric, "q", ("layer", "pos", "head"), progress=False)
    torch.testing.assert_close(by_input, by_q, atol=ATOL, rtol=0)


def test_by_validation(both):
    model, _, clean, corrupted, _, _ = both
    with pytest.raises(ValueError, match="start with 'layer'"):
        patch(model, clean, corrupted, metric, "z", ("head", "layer"), progress=False)
    with pytest.raises(ValueError, match="head dimension"):
        patch(model, clean, corrupted, metric, "resid_pre", ("layer", "pos", "head"), progress=False)
    with pytest.raises(ValueError, match="src"):
        patch(model, clean, corrupted, metric, "z", ("layer", "head", "src"), progress=False)
    with pytest.raises(ValueError, match="dest"):
        patch(model, clean, corrupted, metric, "pattern", ("layer", "pos", "dest"), progress=False)


def test_attribution_patch_granularities_add_up(both):
    """A finer attribution summed over an axis is the coarser one (the estimate is linear in the spots)."""
    model, _, clean, corrupted, _, _ = both
    fine, frame = attribution_patch(model, clean, corrupted, metric, "z", ("layer", "pos", "head"))
    heads, _ = attribution_patch(model, clean, corrupted, metric, "z", ("layer", "head"))
    assert fine.shape == (3, 5, 4) and list(frame.columns) == ["layer", "pos", "head", "token", "estimate"]
    torch.testing.assert_close(fine.sum(1), heads, atol=ATOL, rtol=0)
    cells, _ = attribution_patch(model, clean, corrupted, metric, "pattern", ("layer", "head", "dest", "src"))
    rows, _ = attribution_patch(model, clean, corrupted, metric, "pattern", ("layer", "dest", "head"))
    torch.testing.assert_close(cells.sum(-1).transpose(1, 2), rows, atol=ATOL, rtol=0)


# ---- path patching ---------------------------------------------------------------------------------------
def test_direct_path_matches(both):
    model, bridge, clean, corrupted, clean_cache, corrupted_cache = both
    for component in "qkv":
        ours, frame = direct_path_patch(model, clean, corrupted, metric, (0, 2), component, progress=False)
        theirs = tl_patching.get_act_patch_direct_path(bridge, corrupted, clean_cache, corrupted_cache, metric,
                                                       src_layer=0, src_head=2, component=component, verbose=False)
        _close(ours[1:], theirs[1:])  # rows at or before the sender: TransformerLens's 0.0 placeholders
        assert torch.equal(ours[0], torch.full((4,), frame.attrs["corrupted_metric"]))
    later, _ = direct_path_patch(model, clean, corrupted, metric, (1, 0), "k", progress=False)
    theirs = tl_patching.get_act_patch_direct_path(bridge, corrupted, clean_cache, corrupted_cache, metric,
                                                   src_layer=1, src_head=0, component="k", verbose=False)
    _close(later[2:], theirs[2:])


def test_path_to_the_end_is_the_direct_effect(both):
    """freeze="all" into the final residual: the clean logits moved by the sender's change through the unembedding."""
    model, _, clean, corrupted, _, _ = both
    layer, head = 1, 3
    with torch.no_grad():
        _, c = model.run_with_cache(clean)
        _, x = model.run_with_cache(corrupted, names_filter=f"blocks.{layer}.attn.hook_z")
        delta = c.head_results(layer).clone()
        delta = (x.head_results(layer) - delta)[:, :, head]  # [b, p, d]
        ln = model.gpt_neox.final_layer_norm
        resid = c["resid_post", 2] + delta
        logits = torch.nn.functional.layer_norm(resid, (64,), ln.weight, ln.bias, ln.eps) @ model.embed_out.weight.T
    ours = path_patch(model, clean, corrupted, metric, (layer, head), "resid_post", freeze="all")
    assert ours == pytest.approx(float(metric(logits)), abs=ATOL)


def test_split_input_route_equals_patching_the_queries(both):
    """Run 3 through `hook_q_input` == putting the recorded *queries* back (ARENA's formulation)."""
    model, _, clean, corrupted, _, _ = both
    senders, receivers = [(0, 1), (1, 2)], [(2, 0), (2, 3)]
    ours = path_patch(model, clean, corrupted, metric, senders, receivers, "q", freeze="heads")
    with torch.no_grad():
        _, c = model.run_with_cache(clean, names_filter=lambda n: n.endswith("hook_z"))
        _, x = model.run_with_cache(corrupted, names_filter=lambda n: n.endswith("hook_z"))

        def freeze(z, hook):
            l = int(hook.name.split(".")[1])
            z = c[hook.name].clone()
            for sl, sh in senders:
                if sl == l:
                    z[:, :, sh] = x[hook.name][:, :, sh]
            return z

        with model.hooks([(lambda n: n.endswith("hook_z"), freeze)]):
            _, seen = model.run_with_cache(clean, names_filter="blocks.2.attn.hook_q")

        def put_q(q, hook):
            q = q.clone()
            q[:, :, [0, 3]] = seen[hook.name][:, :, [0, 3]]
            return q

        manual = metric(model.run_with_hooks(clean, fwd_hooks=[("blocks.2.attn.hook_q", put_q)]).logits)
    assert ours == pytest.approx(float(manual), abs=ATOL)


def test_freezing_modes(both):
    model, _, clean, corrupted, _, _ = both
    heads = path_patch(model, clean, corrupted, metric, (0, 0), [(1, 1)], "v", freeze="heads")
    everything = path_patch(model, clean, corrupted, metric, (0, 0), [(1, 1)], "v", freeze="all")
    if model.config.use_parallel_residual:  # layer 0's MLP reads resid_pre: no path through it into layer 1
        assert heads == pytest.approx(everything, abs=ATOL)
    else:  # it reads resid_mid, which holds the sender
        assert abs(heads - everything) > 1e-4
        # so layer 0's own MLP is a receiver of a layer-0 head (and of nothing with a parallel residual)
        clean_metric = path_patch(model, clean, clean, metric, (0, 0), [(0, "mlp")])
        assert abs(path_patch(model, clean, corrupted, metric, (0, 0), [(0, "mlp")]) - clean_metric) > 1e-4
    # nothing frozen, into the end: plain patching of that head's z (corrupted into the clean run)
    free, _ = path_patch_senders(model, clean, corrupted, metric, freeze="none", progress=False)
    plain, _ = patch(model, corrupted, clean, metric, "z", ("layer", "head"), progress=False)
    torch.testing.assert_close(free, plain, atol=ATOL, rtol=0)


def test_sweeps(both):
    model, _, clean, corrupted, _, _ = both
    receivers = [(2, 1), (2, 2)]
    values, frame = path_patch_senders(model, clean, corrupted, metric, receivers, "kv", progress=False)
    clean_metric = frame.attrs["clean_metric"]
    assert values.shape == (3, 4) and list(frame.columns) == ["layer", "head", "metric"]
    assert torch.equal(values[2], torch.full((4,), clean_metric))  # a layer-2 sender reaches no layer-2 receiver
    assert (values[:2] - clean_metric).abs().max() > 1e-4
    assert values[0, 3] == pytest.approx(path_patch(model, clean, corrupted, metric, (0, 3), receivers, "kv"), abs=ATOL)
    by_receiver, _ = path_patch_receivers(model, clean, corrupted, metric, [(0, 1)], "q", progress=False)
    assert torch.equal(by_receiver[0], torch.full((4,), clean_metric))
    assert by_receiver[2, 1] == pytest.approx(path_patch(model, clean, corrupted, metric, (0, 1), (2, 1)), abs=ATOL)


def test_path_patching_validation(both):
    model, _, clean, corrupted, _, _ = both
    with pytest.raises(ValueError, match="freeze"):
        path_patch(model, clean, corrupted, metric, (0, 0), freeze="mlps")
    with pytest.raises(ValueError, match="receiver_input"):
        path_patch(model, clean, corrupted, metric, (0, 0), [(1, 0)], receiver_input="z")
    with pytest.raises(ValueError, match="senders"):
        path_patch(model, clean, corrupted, metric, (0, 9))
    with pytest.raises(ValueError, match="same shape"):
        path_patch(model, clean, corrupted[:, :3], metric, (0, 0))
