# ---
# jupyter:
#   jupytext:
#     formats: ipynb,py:percent
#     notebook_metadata_filter: -jupytext.text_representation.jupytext_version
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 07 · Features: sparse autoencoders and the tuned lens
#
# A *sparse autoencoder* (SAE) rewrites one activation site of the model as a sparse sum of learned directions,
# its *features*, which are often easier to interpret than single neurons. The workbench ships an SAE trained on
# the demo model's residual stream; here we
#
# 1. load it and splice it into the model, and check how much of the model's loss it keeps (CE loss recovered),
# 2. look at its sparsity (L0, feature densities),
# 3. browse its features: top-activating contexts, activation histograms, logit effects (`FeatureView`),
# 4. steer the model with one feature,
# 5. read the residual stream with the logit lens and the tuned lens, and compare the two.

# %%
import dataclasses
import tempfile

import numpy as np
import torch

import workbench
from workbench import sae as wsae
from workbench.analysis.features import feature_stats
from workbench.analysis.steering import steering_hook
from workbench.data.corpus import load_kjv, split_documents
from workbench.lens import LogitLens, lens_metrics
from workbench.lens import load as load_lens
from workbench.viz import FeatureView, LogitLensView, plot_feature_density, plot_l0_loss_tradeoff, plot_lens_comparison

torch.set_grad_enabled(False)
model = workbench.load("demo")
_, held_out_docs = split_documents(load_kjv())          # the chapters the model (and the SAE) never trained on
held_out = [d.text for d in held_out_docs]

sae = wsae.load("demo")
site = sae.cfg.hook_name
print(sae.cfg.architecture, f"k={sae.cfg.k}", f"d_in={sae.cfg.d_in}", f"d_sae={sae.cfg.d_sae}", "at", site)

# %% [markdown]
# ## 1. Splicing the SAE in
#
# `run_with_cache_with_saes` replaces the site's activation by the SAE's reconstruction and caches the SAE's own
# hook points under SAELens's names. With `use_error_term=True` the reconstruction error is added back, so the
# model computes exactly its clean output while the feature activations are still observable.

# %%
text = "And God said, Let there be light: and there was light."
ids = model.to_tokens(text)
logits, cache = model.run_with_cache_with_saes(ids, saes=[sae])
acts = cache[f"{site}.hook_sae_acts_post"]              # [batch, pos, d_sae]
print("feature activations", tuple(acts.shape), "| active per token:", (acts > 0).sum(-1).tolist()[0])

clean = model(ids).logits
exact = model.run_with_saes(ids, saes=[sae], use_error_term=True).logits
assert torch.equal(exact, clean)                        # the error term makes the splice invisible
assert not torch.equal(logits, clean)                   # without it the model runs on the reconstruction

# %% [markdown]
# How much of the model's next-token loss survives the splice? *CE loss recovered* compares the spliced loss
# with the clean loss (1) and with the loss when the site is zero-ablated (0), as SAELens scores it. The
# checks below are the demo SAE's targets (its card, `workbench/sae/demo/README.md`, has the same numbers).

# %%
metrics = wsae.sae_metrics(model, sae, held_out, context=128)  # every held-out chapter: about 21,000 tokens
{k: round(float(v), 4) for k, v in metrics.items() if k != "feature_density"}

# %%
assert metrics["ce_loss_recovered"] >= 0.85 and metrics["explained_variance"] >= 0.75
assert metrics["dead_fraction"] <= 0.10

# %% [markdown]
# ## 2. Sparsity
#
# Each feature's *density* is the fraction of tokens on which it fires. A healthy dictionary has most features
# between one in a thousand and one in ten tokens, few dead ones and few dense ones.

# %%
plot_feature_density(metrics["feature_density"])

# %% [markdown]
# A TopK SAE keeps the `k` largest latents per token. Evaluating the same dictionary with a smaller or larger
# `k` traces the trade-off between sparsity (L0) and fidelity (the spliced loss).

# %%
def with_k(k: int) -> wsae.SAE:
    """The same dictionary keeping the k largest latents per token."""
    other = wsae.SAE(dataclasses.replace(sae.cfg, k=k))
    other.load_state_dict(sae.state_dict())
    return other


points = []
for k in (sae.cfg.k // 4, sae.cfg.k // 2, sae.cfg.k, 2 * sae.cfg.k):
    m = wsae.sae_metrics(model, with_k(k), held_out[:3], context=128)
    points.append((m["l0"], m["ce_loss_spliced"], f"k={k}"))
l0s, losses, labels = zip(*points)
assert list(losses) == sorted(losses, reverse=True)   # more active features, lower loss
plot_l0_loss_tradeoff(l0s, losses, labels, clean_loss=metrics["ce_loss_clean"], zero_loss=metrics["ce_loss_zero_ablated"])

# %% [markdown]
# ## 3. Browsing features
#
# `FeatureView.from_sae` runs the held-out text through the model in batches (only up to the SAE's layer), keeps
# each feature's top-activating contexts, a histogram of its activations and how often it fires, and computes
# its logit effects, `W_dec @ W_U`: the tokens its direction promotes and suppresses when read straight off
# the residual stream. The corpus pass is cached on disk (`cache_dir`), keyed by the weights and the corpus.
#
# In the view: search the list by index (`#12`) or by a boosted token, click a feature to see it, click a
# token of a prompt to list the features active there (and click one of those to jump to it).

# %%
cache_dir = tempfile.mkdtemp(prefix="features-")
prompts = ["And God said, Let there be light: and there was light.", "And the LORD spake unto Moses, saying,"]
view = FeatureView.from_sae(sae, model, held_out, prompts=prompts, ctx_len=64, max_contexts=192, cache_dir=cache_dir)
view

# %% [markdown]
# The view's data is also there for Python. Which features fire on " LORD" in the second prompt? The strongest
# are often broad ones that fire on a large share of all tokens (positional or syntactic features); the rarer
# ones tend to be specific, so we pick the rarest of them.

# %%
lord = view.prompts[1]["tokens"].index(" LORD")
active = dict(view.token_features(1, lord))             # feature -> activation, strongest first
density = {f: view.feature_data(f)["density"] for f in active}
print({f: f"{a:.1f} ({100 * density[f]:.2f}% of tokens)" for f, a in active.items()})
feature = min((f for f in active if density[f] > 0.005), key=density.get)
view.feature = feature                                  # the browser follows
info = view.feature_data(feature)
print(f"feature {feature}: fires on {100 * info['density']:.2f}% of tokens, max {info['max']:.2f}")
print("boosts:", [t for t, _ in info["boosted"]])
for c in info["contexts"][:4]:
    print(f"{c['score']:6.2f}", "".join(c["tokens"][: c["center"] + 1]).replace("\n", " "))

# %%
# the same numbers by other paths: the spliced run's cache, and the corpus pass (read back from the disk cache)
_, spliced = model.run_with_cache_with_saes(prompts[1], saes=[sae])
assert np.isclose(float(spliced[f"{site}.hook_sae_acts_post"][0, lord, feature]), active[feature], atol=1e-4)
stats = feature_stats(model, sae, held_out, ctx_len=64, max_contexts=192, cache_dir=cache_dir)
assert np.isclose(info["contexts"][0]["score"], stats.max_act[feature], atol=1e-5)

# %% [markdown]
# ## 4. Steering with a feature
#
# Adding a multiple of the feature's decoder direction to the residual stream at the SAE's site should push the
# model toward the tokens the feature boosts. We steer every position (prompt and generated tokens) and compare
# with the unsteered model (greedy, with the demo's repetition penalty).

# %%
direction = sae.W_dec[feature]                          # [d_model]
scale = 2.0 * float(stats.max_act[feature])
prompt = model.to_tokens("And he said unto them,")
sampling = dict(max_new_tokens=24, repetition_penalty=1.5, no_repeat_ngram_size=3)
with model.hooks([(site, steering_hook(direction, scale))]):
    steered_logits = model(prompt).logits[0, -1]
    steered = model.generate(prompt, **sampling)
baseline_logits = model(prompt).logits[0, -1]
baseline = model.generate(prompt, **sampling)
print("baseline:", model.to_string(baseline[0]))
print("steered: ", model.to_string(steered[0]))

# %%
boosted_ids = [model.tokenizer.encode(t)[0] for t, _ in info["boosted"][:5]]
shift = steered_logits.log_softmax(-1) - baseline_logits.log_softmax(-1)
print("log-prob change of the boosted tokens:", shift[boosted_ids].round(decimals=2).tolist())
assert float(shift[boosted_ids].mean()) > float(shift.mean()) + 1  # the steer promotes what the feature boosts

# %% [markdown]
# ## 5. Logit lens and tuned lens
#
# The logit lens reads each layer's residual stream through the final LayerNorm and the unembedding. The tuned
# lens first applies a small affine *translator* per layer, trained so that each layer's reading matches the
# model's final distribution; it reads early layers far better. The workbench ships one for the demo model.

# %%
tuned = load_lens("demo", model)
comparison = lens_metrics(model, held_out[:4], {"logit": LogitLens(model), "tuned": tuned}, seq_len=128)
table = comparison.pivot(index="label", columns="lens", values="kl").loc[comparison["label"].unique()]
table

# %%
kl = comparison.pivot(index="layer", columns="lens", values="kl")
assert (kl["tuned"].iloc[:-1] < kl["logit"].iloc[:-1]).all()   # every layer but the last, which both read exactly

# %%
plot_lens_comparison(comparison)

# %%
LogitLensView(model, "And God said, Let there be light: and there was", lens="tuned")
