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
# # 01 · Quickstart
#
# This notebook is the first stop after the README's set-up command. It loads the embedded **demo model** (a
# 4-layer Pythia-style GPT-NeoX trained on the King James Bible, shipped with the package, so nothing is
# downloaded), then walks through the everyday tools:
#
# 1. loading a model and tokenizing text,
# 2. generating text (greedy and sampled),
# 3. `run_with_cache`: every activation of a forward pass, by TransformerLens name,
# 4. the attention view (an interactive widget),
# 5. the logit lens (as a table and as a widget).
#
# Cells marked **check** assert on the results, so a run top to bottom is also a test. Everything here runs on
# a CPU in a few seconds.

# %%
import numpy as np
import torch

import workbench
from workbench.analysis import logit_lens
from workbench.viz import AttentionView, LogitLensView

torch.set_grad_enabled(False)  # analysis only: no gradients needed in this notebook

# %% [markdown]
# ## 1. Load the demo model
#
# `workbench.load` takes `"demo"`, a checkpoint directory, or a Hugging Face Hub id such as
# `"EleutherAI/pythia-160m"` (see notebook 06). The model comes back in eval mode with its tokenizer attached
# as `model.tokenizer`.

# %%
model = workbench.load("demo")
cfg = model.config
print(f"{cfg.num_hidden_layers} layers x {cfg.num_attention_heads} heads, d_model={cfg.hidden_size}, "
      f"vocab={cfg.vocab_size}, context={cfg.max_position_embeddings}, {model.num_parameters():,} parameters")
print("parallel residual:", cfg.use_parallel_residual, "| attention backend:", cfg.attn_implementation)

# %% [markdown]
# ## 2. Tokenize
#
# `model.to_tokens` gives ids `[batch, pos]`; `model.to_str_tokens` the piece each position holds. GPT-NeoX
# models are trained without a beginning-of-sequence token, so none is added by default.

# %%
text = "And God said, Let there be light: and there was light."
ids = model.to_tokens(text)                    # [1, pos]
str_tokens = model.to_str_tokens(text)
print(ids.shape)
print(str_tokens)

# %%
# check: the tokenizer round-trips the text, and the pieces are the tokens
assert model.tokenizer.decode(ids[0].tolist()) == text
assert "".join(str_tokens) == text
assert ids.shape == (1, len(str_tokens))

# %% [markdown]
# ## 3. Generate
#
# `model.generate` takes a string (or a list of strings, left-padded into a batch, or token ids). Greedy by
# default; `do_sample=True` samples, and `seed=` makes the sample reproducible without touching torch's global
# random state.

# %%
prompt = "In the beginning God created"
print(model.generate(prompt, max_new_tokens=30))
print("---")
for seed in range(2):
    print(model.generate(prompt, max_new_tokens=30, do_sample=True, temperature=0.8, top_p=0.95, seed=seed))
print("---")
for line in model.generate(["And Moses said unto", "The LORD is my"], max_new_tokens=12):
    print(line)

# %%
# check: greedy decoding picks the arg-max of the model's own logits, token after token
prompt_ids = model.to_tokens(prompt)
out_ids = model.generate(prompt_ids, max_new_tokens=8)                 # [1, prompt + 8]
for step in range(8):
    context = out_ids[:, : prompt_ids.shape[1] + step]
    assert out_ids[0, context.shape[1]] == model(context).logits[0, -1].argmax()
# check: the same seed gives the same sample
a = model.generate(prompt, max_new_tokens=20, do_sample=True, seed=7)
b = model.generate(prompt, max_new_tokens=20, do_sample=True, seed=7)
assert a == b and a.startswith(prompt)

# %% [markdown]
# ## 4. `run_with_cache`
#
# One forward pass that keeps every activation. Keys are TransformerLens names (`blocks.0.attn.hook_pattern`),
# and the cache accepts the usual shorthand: `cache["pattern", 0]`, `cache["resid_post", -1]`.

# %%
logits, cache = model.run_with_cache(text)
print(f"{len(cache)} activations, {cache.nbytes() / 1e6:.1f} MB; the first few:")
for name in list(cache)[:8]:
    print(f"  {name:32s} {tuple(cache[name].shape)}")
pattern = cache["pattern", 0]                 # [batch, head, query, key]
print("pattern of layer 0:", tuple(pattern.shape))

# %%
# check: attention patterns are causal probability distributions
n = ids.shape[1]
assert pattern.shape == (1, cfg.num_attention_heads, n, n)
assert torch.allclose(pattern.sum(-1), torch.ones(1, cfg.num_attention_heads, n), atol=1e-5)
assert torch.triu(pattern[0], diagonal=1).abs().max() == 0
# check: caching changes nothing, and the cached final residual stream gives the logits
assert torch.allclose(logits, model(ids).logits, atol=1e-5)
final = model.embed_out(model.gpt_neox.final_layer_norm(cache["resid_post", -1]))
assert torch.allclose(final, logits, atol=1e-4)

# %% [markdown]
# ## 5. The attention view
#
# A layers x heads grid of thumbnails and one large pattern; click a thumbnail to pick a head, hover a token to
# see what it attends to (blue) and what attends to it (orange). In JupyterLab the widget asks the kernel for
# each head; where widgets can't run (nbviewer, a static export) the same view is embedded as a standalone
# page. `view.to_html("attention.html")` writes that page to a file.

# %%
view = AttentionView(model, text, title="demo model: " + text)
view

# %%
# check: the view shows the model's patterns (stored as 8-bit probabilities, so within 1/255)
for layer in range(cfg.num_hidden_layers):
    for head in range(cfg.num_attention_heads):
        shown = view.pattern(layer=layer, head=head)                  # [query, key]
        assert np.abs(shown - cache["pattern", layer][0, head].numpy()).max() <= 1 / 255

# %% [markdown]
# ## 6. The logit lens
#
# What would the model predict if it stopped early? The logit lens reads the residual stream before every layer
# (and after the last) through the final LayerNorm and the unembedding. Rows are layers, columns positions; the
# last row is the model's real prediction.

# %%
log_probs, lens = logit_lens(model, text)    # log_probs: [layers + 1, batch, pos, vocab]
top1 = lens[lens["rank"] == 0]
table = top1.pivot(index="label", columns="pos", values="top_token")
table.columns = [repr(t) for t in str_tokens]
table

# %%
# the probability of the actual next token, layer by layer, averaged over positions
next_prob = top1.dropna(subset=["target_prob"]).groupby("label")["target_prob"].mean()
next_prob

# %%
# check: the lens's last row is exactly the model's output distribution
assert torch.allclose(log_probs[-1], torch.log_softmax(logits.float(), -1), atol=1e-4)
# check: the trained layers matter: the full model predicts the next token far better than the embedding alone
assert next_prob["final_post"] > 2 * next_prob["0_pre"], next_prob

# %% [markdown]
# The same analysis as a widget: hover a cell for the top tokens, switch the colouring between the cell's own
# top token, the model's final prediction and the actual next token, or type any token into the target box.

# %%
lens_view = LogitLensView(model, text)
lens_view

# %%
# check: the widget's numbers agree with `logit_lens` (two independent code paths)
grid = lens_view.grid(target="next")
widget_probs = np.array([[np.nan if p is None else p for p in row] for row in grid["target_prob"]])
frame_probs = top1.pivot(index="layer", columns="pos", values="target_prob").to_numpy()
assert widget_probs.shape[0] == cfg.num_hidden_layers + 1
assert np.allclose(widget_probs[:, :-1], frame_probs[:, :-1], atol=1e-4)

# %% [markdown]
# **Next:** `02_residual_stream.ipynb` takes a single prediction apart, component by component.
