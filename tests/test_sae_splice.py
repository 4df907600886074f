"""Splicing SAEs into the demo model: exactness with the error term, cache names, feature hooks, padding,
generate, nesting with model.hooks, and the errors for an SAE that does not fit the model."""

from __future__ import annotations

import pytest
import torch

import workbench
from workbench import sae as wsae

SITE = "blocks.2.hook_resid_pre"
PROMPTS = ["And God said, Let there be light: and there was light.", "In the beginning"]


@pytest.fixture(scope="module")
def model():
    return workbench.load("demo")


def _sae(architecture: str = "topk", site: str = SITE, d_in: int = 128, seed: int = 0) -> wsae.SAE:
    cfg = wsae.SAEConfig(d_in=d_in, d_sae=256, architecture=architecture, hook_name=site,
                         k=8 if architecture == "topk" else None)
    sae = wsae.SAE(cfg, init="kaiming", generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        sae.b_enc.fill_(0.1) if sae.b_enc is not None else None
    return sae


@pytest.mark.parametrize("architecture", ["topk", "standard"])
def test_error_term_splice_gives_exactly_the_clean_logits(model, architecture):
    sae = _sae(architecture)
    ids, mask = model.to_tokens_and_mask(PROMPTS)  # padded batch
    clean = model(ids, attention_mask=mask).logits
    spliced = model.run_with_saes(ids, saes=[sae], use_error_term=True, attention_mask=mask).logits
    assert torch.equal(spliced, clean)
    logits, cache = model.run_with_cache_with_saes(PROMPTS, saes=[sae], use_error_term=True)
    assert torch.equal(logits, clean)
    assert cache[f"{SITE}.hook_sae_acts_post"].shape == (2, ids.shape[1], 256)
    assert (cache[f"{SITE}.hook_sae_acts_post"] != 0).any()
    # the error is exactly input - reconstruction of the unhooked SAE
    torch.testing.assert_close(cache[f"{SITE}.hook_sae_error"],
                               cache[f"{SITE}.hook_sae_input"] - cache[f"{SITE}.hook_sae_recons"], atol=1e-6, rtol=0)


def test_without_error_term_the_site_carries_the_reconstruction(model):
    sae = _sae()
    ids = model.to_tokens(PROMPTS[0])
    resid = model.run_with_cache(ids, names_filter=SITE)[1][SITE]
    _, cache = model.run_with_cache_with_saes(ids, saes=[sae], names_filter=[SITE, f"{SITE}.hook_sae_input"])
    torch.testing.assert_close(cache[SITE], sae(resid), atol=0, rtol=0)  # downstream hooks see the SAE output
    assert torch.equal(cache[f"{SITE}.hook_sae_input"], resid)
    clean = model(ids).logits
    assert not torch.equal(model.run_with_saes(ids, saes=sae).logits, clean)


def test_sae_names_exist_only_while_spliced(model):
    sae = _sae()
    before = model.hook_names()
    with model.saes(sae):
        names = model.hook_names()
        at = names.index(SITE)
        assert names[at + 1: at + 7] == [f"{SITE}.{h}" for h in ("hook_sae_input", "hook_sae_acts_pre",
                                                                 "hook_sae_acts_post", "hook_sae_recons",
                                                                 "hook_sae_error", "hook_sae_output")]
    assert model.hook_names() == before
    assert sae.hook_sae_acts_post.name == "hook_sae_acts_post"


def test_ablating_every_feature_leaves_the_decoder_bias(model):
    sae = _sae()
    ids = model.to_tokens(PROMPTS[1])
    fwd = [(f"{SITE}.hook_sae_acts_post", lambda acts, hook: torch.zeros_like(acts))]
    with model.saes(sae), model.hooks(fwd_hooks=fwd):
        _, cache = model.run_with_cache(ids, names_filter=SITE)
    assert torch.equal(cache[SITE], sae.b_dec.detach().expand_as(cache[SITE]))


def test_padding_positions_have_no_features_and_keep_the_activation(model):
    sae = _sae()
    ids, mask = model.to_tokens_and_mask(PROMPTS, padding_side="left")
    _, cache = model.run_with_cache_with_saes(ids, saes=[sae], attention_mask=mask,
                                              names_filter=lambda n: n.startswith(SITE))
    acts = cache[f"{SITE}.hook_sae_acts_post"]
    pad = mask == 0
    assert pad.any() and torch.equal(acts[pad], torch.zeros_like(acts[pad]))
    assert (acts[~pad] != 0).any(-1).all()
    assert torch.equal(cache[SITE][pad], cache[f"{SITE}.hook_sae_input"][pad])


def test_generate_with_a_spliced_sae(model):
    sae = _sae()
    plain = model.generate(PROMPTS[1], max_new_tokens=6)
    with model.saes(sae, use_error_term=True):
        assert model.generate(PROMPTS[1], max_new_tokens=6) == plain
    seen = []
    with model.saes(sae), model.hooks(fwd_hooks=[(f"{SITE}.hook_sae_acts_post",
                                                 lambda acts, hook: seen.append(acts.shape[1]))]):
        model.generate(PROMPTS[1], max_new_tokens=3)
    assert seen[0] == model.to_tokens(PROMPTS[1]).shape[1] and seen[1:] == [1, 1]  # prefill, then one per step


def test_outer_hooks_change_what_the_sae_reads(model):
    sae = _sae()
    ids = model.to_tokens(PROMPTS[1])
    double = [(SITE, lambda v, hook: v * 2)]
    with model.hooks(fwd_hooks=double), model.saes(sae):
        _, cache = model.run_with_cache(ids, names_filter=f"{SITE}.hook_sae_input")
    resid = model.run_with_cache(ids, names_filter=SITE)[1][SITE]
    assert torch.equal(cache[f"{SITE}.hook_sae_input"], resid * 2)


def test_two_saes_at_two_sites(model):
    first, second = _sae(), _sae(site="blocks.1.hook_mlp_out", seed=1)
    _, cache = model.run_with_cache_with_saes(PROMPTS[0], saes=[first, second], use_error_term=True)
    assert "blocks.1.hook_mlp_out.hook_sae_acts_post" in cache.keys() and f"{SITE}.hook_sae_acts_post" in cache.keys()
    with pytest.raises(ValueError, match="two SAEs at"):
        model.run_with_saes(PROMPTS[0], saes=[first, _sae(seed=2)])
    with model.saes(first), pytest.raises(ValueError, match=f"an SAE is already spliced at {SITE}"):
        model.run_with_saes(PROMPTS[0], saes=[_sae(seed=2)])


def test_hook_name_the_model_lacks_is_one_clear_error(model, tmp_path):
    wsae.save(_sae(site="blocks.9.hook_resid_pre"), tmp_path / "sae")
    sae = wsae.load(tmp_path / "sae")
    with pytest.raises(KeyError, match=r"cfg\.json.*field 'hook_name'.*blocks\.9\.hook_resid_pre.*closest"):
        model.run_with_saes(PROMPTS[0], saes=[sae])
    assert not any("hook_sae" in n for n in model.hook_names())


def test_d_in_that_does_not_fit_the_site_is_one_clear_error(model, tmp_path):
    wsae.save(_sae(d_in=64), tmp_path / "sae")
    with pytest.raises(wsae.SAEConfigError, match=r"cfg\.json: field 'd_in' = 64.*width 128"):
        model.run_with_saes(PROMPTS[0], saes=[wsae.load(tmp_path / "sae")])
    with pytest.raises(TypeError, match="workbench.sae.SAE"):
        model.run_with_saes(PROMPTS[0], saes=["not an sae"])


def test_error_term_is_exact_in_bf16_and_at_hook_z():
    model = workbench.load("demo", dtype="bfloat16")
    ids = model.to_tokens(PROMPTS[0])
    clean = model(ids).logits
    resid_sae = _sae()  # fp32 SAE on a bf16 model
    z_cfg = wsae.SAEConfig(d_in=128, d_sae=64, architecture="topk", k=4, hook_name="blocks.1.attn.hook_z",
                           reshape_activations="hook_z")
    z_sae = wsae.SAE(z_cfg, init="kaiming", generator=torch.Generator().manual_seed(3))
    logits, cache = model.run_with_cache_with_saes(ids, saes=[resid_sae, z_sae], use_error_term=True)
    assert torch.equal(logits, clean)
    assert cache["blocks.1.attn.hook_z.hook_sae_acts_post"].shape == (1, ids.shape[1], 64)
    recons = model.run_with_cache_with_saes(ids, saes=[z_sae], names_filter="blocks.1.attn.hook_z")[1]
    assert recons["blocks.1.attn.hook_z"].shape == (1, ids.shape[1], 4, 32)  # reshaped back to [.., head, d_head]


def test_clamped_scaled_or_ablated_feature_moves_the_site_along_its_decoder_direction(model):
    """Hooks on hook_sae_acts_post (here from workbench.sae.interventions) go through model.hooks; with the
    error term the site changes by exactly the edit times the feature's decoder row."""
    sae = _sae()
    ids = model.to_tokens(PROMPTS[0])
    name = f"{SITE}.hook_sae_acts_post"
    base_logits, base = model.run_with_cache_with_saes(ids, saes=[sae], use_error_term=True,
                                                       names_filter=[name, SITE])
    feature = int(base[name][0].sum(0).argmax())
    for hook, new in [(wsae.clamp_feature(sae, feature, 7.0), torch.full_like(base[name][..., feature], 7.0)),
                      (wsae.scale_feature(sae, feature, 3.0), base[name][..., feature] * 3),
                      (wsae.ablate_features(sae, [feature]), torch.zeros_like(base[name][..., feature]))]:
        assert hook[0] == name
        with model.saes(sae, use_error_term=True), model.hooks(fwd_hooks=[hook]):
            _, cache = model.run_with_cache(ids, names_filter=[name, SITE])
        assert torch.equal(cache[name][..., feature], new)
        expected = (new - base[name][..., feature])[..., None] * sae.W_dec[feature]
        torch.testing.assert_close(cache[SITE] - base[SITE], expected.detach(), atol=1e-4, rtol=1e-4)
        with model.saes(sae, use_error_term=True), model.hooks(fwd_hooks=[hook]):
            assert not torch.equal(model(ids).logits, base_logits)
    with pytest.raises(ValueError, match=r"features must be ints in \[0, d_sae=256\)"):
        wsae.clamp_feature(sae, 256, 1.0)


def test_numpy_and_tensor_feature_indices(model):
    """np.int64 (e.g. from argmax over a numpy array) and 0-d / 1-d tensors index features like ints."""
    import numpy as np

    sae = _sae()
    acts = torch.rand(1, 3, 256)
    for feature in (np.int64(3), torch.tensor(3)):
        name, fn = wsae.clamp_feature(sae, feature, 5.0)
        assert torch.equal(fn(acts, None), wsae.clamp_feature(sae, 3, 5.0)[1](acts, None))
        scaled = wsae.scale_feature(sae, feature, 2.0)[1](acts, None)
        assert torch.equal(scaled, wsae.scale_feature(sae, 3, 2.0)[1](acts, None))
    ablated = wsae.ablate_features(sae, torch.tensor([1, 4]))[1](acts, None)
    assert torch.equal(ablated, wsae.ablate_features(sae, [1, 4])[1](acts, None)) and (ablated[..., [1, 4]] == 0).all()
    assert torch.equal(wsae.ablate_features(sae, np.array([1, 4]))[1](acts, None), ablated)
    with pytest.raises(ValueError, match=r"features must be ints in \[0, d_sae=256\), got \[3\.0\]"):
        wsae.clamp_feature(sae, torch.tensor(3.0), 1.0)
    with pytest.raises(ValueError, match=r"feature must be one int"):
        wsae.clamp_feature(sae, [1, 2], 1.0)


def _hook_z_sae(reshape: str, d_in: int = 128) -> wsae.SAE:
    return wsae.SAE(wsae.SAEConfig(d_in=d_in, d_sae=64, architecture="topk", k=4, hook_name="blocks.1.attn.hook_z",
                                   reshape_activations=reshape))


@pytest.mark.parametrize("site", ["blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores"])
def test_a_site_without_a_feature_dimension_is_refused_naming_the_cfg_field(model, tmp_path, site):
    wsae.save(wsae.SAE(wsae.SAEConfig(d_in=16, d_sae=8, architecture="standard", hook_name=site)), tmp_path / "sae")
    with pytest.raises(wsae.SAEConfigError, match=rf"sae/cfg\.json: field 'hook_name': {site} has shape "
                                                  r"\[batch, head, query_pos, key_pos\]: no trailing feature"):
        model.run_with_saes(PROMPTS[0], saes=[wsae.load(tmp_path / "sae")])
    assert not any("hook_sae" in n for n in model.hook_names())


def test_hook_z_needs_its_reshape_and_other_sites_refuse_it(model, tmp_path):
    wsae.save(_hook_z_sae("none"), tmp_path / "z")  # heads flattened (d_in 128) but not told so
    with pytest.raises(wsae.SAEConfigError, match=r"z/cfg\.json: field 'reshape_activations' = 'none', but d_in = 128 "
                                                  r"is blocks\.1\.attn\.hook_z's head x 32.*set it to 'hook_z'"):
        model.run_with_saes(PROMPTS[0], saes=[wsae.load(tmp_path / "z")])
    per_head = _hook_z_sae("none", d_in=32)  # SAELens's other reading: one head's d_head vector at a time
    assert model.run_with_saes(PROMPTS[0], saes=[per_head]).logits.shape[-1] == model.config.vocab_size
    resid = wsae.SAE(wsae.SAEConfig(d_in=128, d_sae=64, architecture="topk", k=4, hook_name=SITE,
                                    reshape_activations="hook_z"))
    with pytest.raises(wsae.SAEConfigError, match=r"field 'reshape_activations' = 'hook_z', but blocks\.2\."
                                                  r"hook_resid_pre is \[batch, pos, d_model\].*allowed here"):
        model.run_with_saes(PROMPTS[0], saes=[resid])
