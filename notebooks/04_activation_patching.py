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
# # 04 · Activation patching and attribution patching
#
# Two prompts that differ in one token: a *clean* one and a *corrupted* one, with different correct answers.
# Run the corrupted prompt, but put back one clean activation (one layer, one position or one head): where that
# restores the clean answer, that activation carries the information that differs.
#
# **Attribution patching** estimates all those numbers from one forward and one backward pass (a first-order
# Taylor expansion); we compare it with the exact patching.
#
# The task: the second time a sentence appears, complete it with the name the first one ended with. The demo
# model does this by induction (notebook 03).

# %%
import numpy as np
import pandas as pd
import torch

import workbench
from workbench.analysis import attribution_patch, induction_scores, logit_diff_metric, patch
from workbench.figures import new_figure
from workbench.viz import plot_patching_layer_head, plot_patching_layer_pos

model = workbench.load("demo")
cfg = model.config
n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads

# %%
template = "Jacob went up to Bethel, and there he saw {}. Jacob went up to Bethel, and there he saw"
answer, wrong = " Joseph", " Reuben"
clean, corrupted = template.format(answer.strip()), template.format(wrong.strip())
clean_ids, corrupted_ids = model.to_tokens(clean), model.to_tokens(corrupted)      # [1, pos]
assert clean_ids.shape == corrupted_ids.shape
answer_id, wrong_id = model.to_tokens(answer)[0, 0].item(), model.to_tokens(wrong)[0, 0].item()
diff_pos = int((clean_ids != corrupted_ids).nonzero()[0, 1])
tokens = model.to_str_tokens(clean)
print(f"{len(tokens)} tokens; they differ at position {diff_pos}: {tokens[diff_pos]!r} vs "
      f"{model.to_str_tokens(corrupted)[diff_pos]!r}")

metric = logit_diff_metric(answer_id, wrong_id)          # logit(answer) - logit(wrong) at the last position
with torch.no_grad():
    clean_metric = float(metric(model(clean_ids).logits))
    corrupted_metric = float(metric(model(corrupted_ids).logits))
print(f"clean: {clean_metric:.3f}   corrupted: {corrupted_metric:.3f}")

def normalise(values):
    """0 = the corrupted run, 1 = the clean run."""
    return (values - corrupted_metric) / (clean_metric - corrupted_metric)


# %%
# check: the model copies the name: the clean answer leads clearly, and the corrupted name cuts that lead
# (this small model does not flip to the corrupted name outright; patching measures how much of the lead returns)
assert clean_metric > 0 and clean_metric - corrupted_metric > 1.0

# %% [markdown]
# ## Layer x position: the residual stream
#
# Patching `resid_pre` of one layer at one position. At layer 0 only the position that differs matters; by the
# last layer the information has moved to the final position, where the answer is read out.

# %%
resid, resid_frame = patch(model, clean_ids, corrupted_ids, metric, hook="resid_pre", by=("layer", "pos"),
                           progress=False)           # [layers, pos]
plot_patching_layer_pos(normalise(resid), tokens, title="Patching resid_pre", metric="logit diff recovered")

# %%
# check: at layer 0 the residual stream is the embedding: patching the differing token turns the corrupted
# run into the clean one exactly, and patching any other (identical) token changes nothing
assert abs(float(resid[0, diff_pos]) - clean_metric) < 1e-3
others = [p for p in range(len(tokens)) if p != diff_pos]
assert torch.allclose(resid[0, others], torch.full((len(others),), corrupted_metric), atol=1e-3)
# check: the frame reports the same runs' metrics
assert abs(resid_frame.attrs["clean_metric"] - clean_metric) < 1e-4
assert abs(resid_frame.attrs["corrupted_metric"] - corrupted_metric) < 1e-4
# check: in the last layer the answer lives at the final position
assert float(normalise(resid[-1, -1])) > 0.5

# %% [markdown]
# ## Layer x head
#
# Patching one head's output (`hook_z`) at every position.

# %%
heads, heads_frame = patch(model, clean_ids, corrupted_ids, metric, hook="z", by=("layer", "head"), progress=False)
plot_patching_layer_head(normalise(heads), title="Patching attention heads (z)", metric="logit diff recovered")

# %%
best_layer, best_head = divmod(int(heads.argmax()), n_heads)
ind = induction_scores(model, batch=8, seq_len=50, seed=0)
print(f"most important head: L{best_layer}H{best_head}, recovers {float(normalise(heads[best_layer, best_head])):.0%}; "
      f"its induction score: {float(ind[best_layer, best_head]):.2f}")
# check: the head that carries the answer is an induction head
assert float(normalise(heads[best_layer, best_head])) > 0.2
assert float(ind[best_layer, best_head]) >= 0.3

# %% [markdown]
# ## Attribution patching against exact patching
#
# `attribution_patch` returns the *estimated change* of the metric for each patch, from the gradient on the
# corrupted run: `(clean_act - corrupted_act) . d metric / d act`. Exact patching needed one forward pass per
# cell; this needs two forwards and a backward for the whole grid.

# %%
est_resid, _ = attribution_patch(model, clean_ids, corrupted_ids, metric, hook="resid_pre", by=("layer", "pos"))
est_heads, _ = attribution_patch(model, clean_ids, corrupted_ids, metric, hook="z", by=("layer", "head"))
exact_resid, exact_heads = resid - corrupted_metric, heads - corrupted_metric   # exact changes

fig = new_figure(8, 3.4, nrows=1, ncols=2)  # a PNG when it is the cell's value
for ax, (name, exact, est) in zip(fig.axes, [("resid_pre, layer x position", exact_resid, est_resid),
                                                        ("heads (z)", exact_heads, est_heads)]):
    ax.scatter(exact.flatten(), est.flatten(), s=12)
    lim = float(max(exact.abs().max(), est.abs().max())) * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
    r = np.corrcoef(exact.flatten(), est.flatten())[0, 1]
    ax.set_title(f"{name}: r = {r:.2f}")
    ax.set_xlabel("exact patching: change in logit diff")
    ax.set_ylabel("attribution patching estimate")
fig

# %%
plot_patching_layer_head(est_heads / (clean_metric - corrupted_metric), title="Attribution patching (heads)",
                         metric="estimated logit diff recovered")

# %%
corr = lambda a, b: float(np.corrcoef(a.flatten(), b.flatten())[0, 1])
print(f"correlation, resid_pre: {corr(exact_resid, est_resid):.2f}; heads: {corr(exact_heads, est_heads):.2f}")
# check: where clean and corrupted activations are equal the estimate is exactly zero
assert torch.allclose(est_resid[0, others], torch.zeros(len(others)), atol=1e-6)
# check: the linear estimate tracks the exact effects and finds the same most important head
assert corr(exact_heads, est_heads) > 0.7
assert int(est_heads.argmax()) == int(heads.argmax())

# %% [markdown]
# ## TransformerLens code, unchanged
#
# `model.as_transformer_lens()` is a TransformerLens-compatible view of the same model (same modules, hook points
# and weights): `model(tokens)` returns logits, `model.cfg`, `model.to_single_token`, hook functions called as
# `fn(tensor, hook=...)`, and TransformerLens's own tools (`transformer_lens.patching`, `head_detector`,
# `utilities.test_prompt`) run on it.
#
# The next cells are the residual-stream activation patching of TransformerLens's
# [Main Demo](https://transformerlensorg.github.io/TransformerLens/generated/demos/Main_Demo.html) (the IOI
# logit difference, patched by layer and position), then the same with `transformer_lens.patching`, **unchanged
# apart from the model line**. The other differences: the prompts (the 4-layer demo model does not do IOI, so it
# is the name-copying task above); `import transformer_lens.utilities as utils` (TransformerLens 4 renamed
# `transformer_lens.utils`); and `imshow`, a plotly helper in the demo, is three lines of matplotlib here.

# %%
import tqdm
from functools import partial

from jaxtyping import Float
from transformer_lens import patching
from transformer_lens import utilities as utils
from transformer_lens.hook_points import HookPoint

from workbench.figures import new_figure

model = workbench.load("demo").as_transformer_lens()   # the demo: HookedTransformer.from_pretrained("gpt2-small")


def imshow(values, x, xaxis, yaxis, title):
    fig = new_figure(9, 2.8)
    ax = fig.axes[0]
    image = ax.imshow(values.detach().cpu(), cmap="RdBu", vmin=-1, vmax=1, aspect="auto")
    ax.set(xticks=range(len(x)), xlabel=xaxis, ylabel=yaxis, title=title)
    ax.set_xticklabels(x, rotation=90, fontsize=7)
    fig.colorbar(image, ax=ax)
    return fig


# %%
clean_prompt = "Jacob went up to Bethel, and there he saw Joseph. Jacob went up to Bethel, and there he saw"
corrupted_prompt = "Jacob went up to Bethel, and there he saw Reuben. Jacob went up to Bethel, and there he saw"

clean_tokens = model.to_tokens(clean_prompt)
corrupted_tokens = model.to_tokens(corrupted_prompt)

def logits_to_logit_diff(logits, correct_answer=" Joseph", incorrect_answer=" Reuben"):
    # model.to_single_token maps a string value of a single token to the token index for that token
    # If the string is not a single token, it raises an error.
    correct_index = model.to_single_token(correct_answer)
    incorrect_index = model.to_single_token(incorrect_answer)
    return logits[0, -1, correct_index] - logits[0, -1, incorrect_index]

# We run on the clean prompt with the cache so we store activations to patch in later.
clean_logits, clean_cache = model.run_with_cache(clean_tokens)
clean_logit_diff = logits_to_logit_diff(clean_logits)
print(f"Clean logit difference: {clean_logit_diff.item():.3f}")

# We don't need to cache on the corrupted prompt.
corrupted_logits = model(corrupted_tokens)
corrupted_logit_diff = logits_to_logit_diff(corrupted_logits)
print(f"Corrupted logit difference: {corrupted_logit_diff.item():.3f}")

# %%
# We define a residual stream patching hook
# We choose to act on the residual stream at the start of the layer, so we call it resid_pre
# The type annotations are a guide to the reader and are not necessary
def residual_stream_patching_hook(
    resid_pre: Float[torch.Tensor, "batch pos d_model"],
    hook: HookPoint,
    position: int
) -> Float[torch.Tensor, "batch pos d_model"]:
    # Each HookPoint has a name attribute giving the name of the hook.
    clean_resid_pre = clean_cache[hook.name]
    resid_pre[:, position, :] = clean_resid_pre[:, position, :]
    return resid_pre

# We make a tensor to store the results for each patching run. We put it on the model's device to avoid needing to move things between the GPU and CPU, which can be slow.
num_positions = len(clean_tokens[0])
ioi_patching_result = torch.zeros((model.cfg.n_layers, num_positions), device=model.cfg.device)

for layer in tqdm.tqdm(range(model.cfg.n_layers)):
    for position in range(num_positions):
        # Use functools.partial to create a temporary hook function with the position fixed
        temp_hook_fn = partial(residual_stream_patching_hook, position=position)
        # Run the model with the patching hook
        patched_logits = model.run_with_hooks(corrupted_tokens, fwd_hooks=[
            (utils.get_act_name("resid_pre", layer), temp_hook_fn)
        ])
        # Calculate the logit difference
        patched_logit_diff = logits_to_logit_diff(patched_logits).detach()
        # Store the result, normalizing by the clean and corrupted logit difference so it's between 0 and 1 (ish)
        ioi_patching_result[layer, position] = (patched_logit_diff - corrupted_logit_diff)/(clean_logit_diff - corrupted_logit_diff)

# %%
# Add the index to the end of the label, because plotly doesn't like duplicate labels
token_labels = [f"{token}_{index}" for index, token in enumerate(model.to_str_tokens(clean_tokens))]
imshow(ioi_patching_result, x=token_labels, xaxis="Position", yaxis="Layer", title="Normalized Logit Difference After Patching Residual Stream on the IOI Task")

# %% [markdown]
# `transformer_lens.patching` does the same sweep in one call (TransformerLens's activation-patching demo): the
# metric maps the patched logits to the normalised logit difference.

# %%
def ioi_metric(logits):
    return (logits_to_logit_diff(logits) - corrupted_logit_diff) / (clean_logit_diff - corrupted_logit_diff)

resid_pre_act_patch_results = patching.get_act_patch_resid_pre(model, corrupted_tokens, clean_cache, ioi_metric)
imshow(resid_pre_act_patch_results, x=token_labels, xaxis="Position", yaxis="Layer",
       title="resid_pre Activation Patching")

# %%
# check: TransformerLens's loop, TransformerLens's patching function and the workbench's own `patch` (first
# section, on the model itself) give the same numbers
assert torch.allclose(ioi_patching_result, resid_pre_act_patch_results, atol=1e-5)
assert torch.allclose(resid_pre_act_patch_results, normalise(resid), atol=1e-4)
assert abs(clean_logit_diff.item() - clean_metric) < 1e-4 and abs(corrupted_logit_diff.item() - corrupted_metric) < 1e-4
# check: the same story: at layer 0 only the differing name matters, at the end the final position carries it
assert float(resid_pre_act_patch_results[0, diff_pos]) > 0.99 and float(resid_pre_act_patch_results[-1, -1]) > 0.5

# %% [markdown]
# **Next:** `05_fewshot_eval.ipynb` measures the model on standard benchmarks.
