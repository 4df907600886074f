"""`GPTNeoXModel.forward(keep_last=n)`: the last block computes its queries, MLP and final LayerNorm at the last n
positions only; keys, values and the KV cache still cover every position."""

from __future__ import annotations

import pytest
import torch
import transformers

import workbench
from workbench.evals.engine import RequestEngine

from .helpers import tiny_model

P = 12


def _inputs():
    ids = torch.randint(3, 90, (3, P), generator=torch.Generator().manual_seed(0))
    mask = torch.ones(3, P, dtype=torch.long)
    mask[1, 9:] = 0  # right padding
    mask[2, :4] = 0  # left padding
    return ids, mask


@pytest.fixture(scope="module", params=[(True, "sdpa"), (False, "sdpa"), (True, "eager")],
                ids=["parallel-sdpa", "sequential-sdpa", "parallel-eager"])
def pair(request, tmp_path_factory):
    """(transformers model, our model) from one checkpoint transformers wrote."""
    parallel, attn = request.param
    model = tiny_model(parallel=parallel, vocab_size=100, hidden_size=32, num_attention_heads=4, intermediate_size=64)
    directory = tmp_path_factory.mktemp("keep")
    model.save_pretrained(directory)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(directory, attn_implementation=attn).eval()
    return hf, workbench.GPTNeoXForCausalLM.from_pretrained(directory, attn_implementation=attn)


@pytest.mark.parametrize("keep", [0, 1, 5, P, P + 3])
def test_kept_positions_match_transformers_and_the_cache_is_whole(pair, keep):
    hf, ours = pair
    ids, mask = _inputs()
    with torch.no_grad():
        full = ours.gpt_neox(ids, attention_mask=mask, use_cache=True)
        kept = ours.gpt_neox(ids, attention_mask=mask, use_cache=True, keep_last=keep)
        theirs = hf.gpt_neox(ids, attention_mask=mask).last_hidden_state
    n = min(keep, P)
    assert kept.last_hidden_state.shape == (3, n, 32)
    real = mask[:, P - n :].bool()  # padded positions' outputs are padding on both sides
    torch.testing.assert_close(kept.last_hidden_state[real], theirs[:, P - n :][real], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(kept.last_hidden_state, full.last_hidden_state[:, P - n :], atol=1e-5, rtol=1e-5)
    for a, b in zip(kept.past_key_values.keys + kept.past_key_values.values,
                    full.past_key_values.keys + full.past_key_values.values):
        assert torch.equal(a, b)  # every layer's keys and values at every position


def test_decoding_continues_from_a_cache_filled_with_keep_last_zero(pair):
    _, ours = pair
    ids, mask = _inputs()
    nxt = torch.randint(3, 90, (3, 1), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        prefix = ours.gpt_neox(ids, attention_mask=mask, use_cache=True, keep_last=0).past_key_values
        step = ours(nxt, attention_mask=torch.cat([mask, torch.ones_like(nxt)], 1), past_key_values=prefix).logits
        whole = ours(torch.cat([ids, nxt], 1), attention_mask=torch.cat([mask, torch.ones_like(nxt)], 1)).logits
    torch.testing.assert_close(step[:, -1], whole[:, -1], atol=1e-5, rtol=1e-5)


def test_a_hook_on_the_last_block_sees_every_position(pair):
    """Observation never sees less: a hooked last block runs whole, and the kept positions are then exactly the
    full forward's."""
    _, ours = pair
    ids, mask = _inputs()
    seen = []
    last = ours.config.num_hidden_layers - 1
    with torch.no_grad(), ours.hooks(fwd_hooks=[(f"blocks.{last}.hook_mlp_out", lambda x, hook: seen.append(x.shape[1]))]):
        kept = ours.gpt_neox(ids, attention_mask=mask, keep_last=2).last_hidden_state
    full = ours.gpt_neox(ids, attention_mask=mask).last_hidden_state
    assert seen == [P] and torch.equal(kept, full[:, -2:])


def test_a_torch_module_hook_on_the_last_block_sees_every_position(pair):
    _, ours = pair
    ids, mask = _inputs()
    seen = []
    handle = ours.gpt_neox.layers[-1].mlp.register_forward_hook(lambda m, i, out: seen.append(out.shape[1]))
    try:
        with torch.no_grad():
            kept = ours.gpt_neox(ids, attention_mask=mask, keep_last=2).last_hidden_state
    finally:
        handle.remove()
    assert seen == [P] and kept.shape[1] == 2


def test_hidden_states_stay_whole_under_keep_last(pair):
    _, ours = pair
    ids, mask = _inputs()
    with torch.no_grad():
        out = ours.gpt_neox(ids, attention_mask=mask, keep_last=3, output_hidden_states=True)
    assert [h.shape[1] for h in out.hidden_states] == [P] * (ours.config.num_hidden_layers + 1)
    assert torch.equal(out.last_hidden_state, out.hidden_states[-1][:, -3:])
    torch.stack(out.hidden_states)  # as transformers' under logits_to_keep: all the same shape


@pytest.mark.parametrize("bad", [-1, 1.5, True, "3"])
def test_bad_keep_last_is_refused(pair, bad):
    _, ours = pair
    with pytest.raises(ValueError, match=r"keep_last must be None or an int >= 0"):
        ours.gpt_neox(torch.ones(1, 3, dtype=torch.long), keep_last=bad)
    with pytest.raises(ValueError, match=r"without start_at_layer / stop_at_layer"):
        ours.gpt_neox(torch.ones(1, 3, dtype=torch.long), keep_last=1, stop_at_layer=1)


def test_the_engine_scores_the_same_with_and_without_keep_last():
    """The request engine passes keep_last (the first scored position on); its log-likelihoods agree with a run
    that computes the last block everywhere, to float rounding, with the same greedy flags."""
    model = workbench.load("demo")
    requests = [("The capital of France is", " Paris"), ("The capital of France is", " a city of many bridges"),
                ("Question: 2 + 2 =\nAnswer:", " 4"), ("Question: 2 + 2 =\nAnswer:", " 5"), ("And God said", ",")]
    engine = RequestEngine(model, progress=False)
    assert engine._keeps
    kept = engine.loglikelihood(requests)
    engine._keeps = False
    whole = engine.loglikelihood(requests)
    for (a, greedy_a), (b, greedy_b) in zip(kept, whole):
        assert a == pytest.approx(b, abs=1e-4) and greedy_a == greedy_b
