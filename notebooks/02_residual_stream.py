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
# # 02 · The residual stream and direct logit attribution
#
# Every layer of a transformer reads the residual stream and adds its output back to it; the unembedding reads
# the sum at the end. So a prediction can be taken apart:
#
# - **accumulated** residual: the stream as it stands before each layer (what the logit lens reads);
# - **decomposed** residual: the separate pieces that were added (embedding, each attention and MLP output);
# - **direct logit attribution** (DLA): how much each piece (down to single attention heads) pushes the logit
#   of the right answer above a wrong one.
#
# The demo model uses a *parallel* residual (as Pythia and GPT-NeoX-20B do): attention and MLP of a layer both
# read the same stream, so there is no `resid_mid`.

# %%
import pandas as pd
import torch

import workbench
from workbench.analysis import direct_logit_attribution
from workbench.figures import new_figure
from workbench.viz import plot_logit_diff_contributions, plot_patching_layer_head, plot_residual_norms

torch.set_grad_enabled(False)
model = workbench.load("demo")
cfg = model.config

# %% [markdown]
# ## A prediction to explain
#
# "I am the LORD thy God" (Exodus 20:2, and dozens of times after): right after "the LORD thy", a model that has
# read its Bible predicts " God"; " LORD" (already in the context) is the natural distractor.

# %%
prompt = "I am the LORD thy"
answer, wrong = " God", " LORD"

def single_token(s: str) -> int:
    ids = model.tokenizer.encode(s, add_special_tokens=False)
    assert len(ids) == 1, f"{s!r} is {len(ids)} tokens"
    return ids[0]

answer_id, wrong_id = single_token(answer), single_token(wrong)
logits, cache = model.run_with_cache(prompt)
probs = logits[0, -1].softmax(-1)
top = probs.topk(5)
print(pd.DataFrame({"token": model.to_str_tokens(top.indices), "prob": top.values.numpy().round(3)}))
logit_diff = float(logits[0, -1, answer_id] - logits[0, -1, wrong_id])
print(f"logit({answer!r}) - logit({wrong!r}) = {logit_diff:.3f}")

# %%
# check: the demo model knows its Exodus
assert int(probs.argmax()) == answer_id
assert logit_diff > 0

# %% [markdown]
# ## Accumulated residual: the logit difference layer by layer
#
# `cache.accumulated_resid(apply_ln=True)` stacks the stream before each layer plus the final one, each put
# through the final LayerNorm; projecting onto `W_U[answer] - W_U[wrong]` gives the logit difference the model
# would produce if it stopped there.

# %%
acc, acc_labels = cache.accumulated_resid(apply_ln=True, pos_slice=-1, return_labels=True)   # [layers + 1, batch, d]
acc_diff = cache.project_to_logits(acc, answer_id, wrong_id)[:, 0]                             # [layers + 1]

fig = new_figure(5, 2.8)  # a PNG when it is the cell's value
ax = fig.axes[0]
ax.plot(acc_labels, acc_diff.numpy(), marker="o")
ax.axhline(0, color="grey", lw=0.8)
ax.set_xlabel("residual stream before ...")
ax.set_ylabel("logit difference")
ax.set_title(f"{answer!r} vs {wrong!r}, accumulated")
fig

# %%
# residual-stream norm grows through the layers (at every position)
norms = cache.accumulated_resid()[:, 0].norm(dim=-1)          # [layers + 1, pos]
plot_residual_norms(norms, labels=acc_labels)

# %%
# check: the last accumulated entry is exactly the model's logit difference
assert abs(float(acc_diff[-1]) - logit_diff) < 1e-3

# %% [markdown]
# ## Decomposed residual
#
# `cache.decompose_resid()` returns what each component wrote: the embedding, then `L_attn_out` and `L_mlp_out`
# for every layer. They sum to the final residual stream. `cache.logit_attrs` applies the final LayerNorm (with
# the scale it had in this run) and projects each piece onto the logit difference; the LayerNorm's bias belongs
# to no component and is added separately.

# %%
comps, comp_labels = cache.decompose_resid(pos_slice=-1, return_labels=True)     # [components, batch, d]
attrs = cache.logit_attrs(comps, answer_id, wrong_id, pos_slice=-1)[:, 0]        # [components]
w_u = model.embed_out.weight
ln_bias_term = float(model.gpt_neox.final_layer_norm.bias @ (w_u[answer_id] - w_u[wrong_id]))
pd.Series(attrs.numpy(), index=comp_labels, name="logit diff").round(3)

# %%
# check: the components add up to the residual stream, and their attributions to the logit difference
assert torch.allclose(comps.sum(0), cache["resid_post", -1][:, -1], atol=1e-4)
assert abs(float(attrs.sum()) + ln_bias_term - logit_diff) < 1e-3

# %% [markdown]
# ## Direct logit attribution, down to the heads
#
# `workbench.analysis.direct_logit_attribution` splits every attention output into its heads (plus the output
# bias, which belongs to no head) and returns a tidy frame.

# %%
dla, frame = direct_logit_attribution(model, prompt, answer, wrong)
per_head = frame[frame["kind"] == "head"].pivot(index="layer", columns="head", values="attribution")
attn_bias = frame[frame["kind"] == "attn_bias"].set_index("layer")["attribution"]
attn = per_head.sum(axis=1) + attn_bias.reindex(per_head.index, fill_value=0.0)
mlp = frame[frame["kind"] == "mlp"].set_index("layer")["attribution"]
plot_logit_diff_contributions(attn.to_numpy(), mlp.to_numpy(), total=logit_diff)

# %%
plot_patching_layer_head(per_head.to_numpy(), title="Direct logit attribution per head", metric="logit difference")

# %%
frame.reindex(frame["attribution"].abs().sort_values(ascending=False).index).head(8)[
    ["component", "kind", "attribution"]]

# %%
# check: every component together (with the LayerNorm bias) is the logit difference
assert abs(frame["attribution"].sum() - logit_diff) < 1e-3
# check: two code paths agree: per-layer attention (heads + bias) and MLP match the decomposition above
by_label = dict(zip(comp_labels, attrs.tolist()))
for layer in range(cfg.num_hidden_layers):
    assert abs(attn[layer] - by_label[f"{layer}_attn_out"]) < 1e-3
    assert abs(mlp[layer] - by_label[f"{layer}_mlp_out"]) < 1e-3
# check: and the per-head numbers match the cache's own head stack
heads_stack, head_labels = cache.stack_head_results(pos_slice=-1, return_labels=True)   # [heads, batch, d]
head_attrs = cache.logit_attrs(heads_stack, answer_id, wrong_id, pos_slice=-1)[:, 0]
assert torch.allclose(head_attrs, torch.tensor(per_head.to_numpy().ravel(), dtype=head_attrs.dtype), atol=1e-3)

# %% [markdown]
# **Next:** `03_induction_heads.ipynb` finds the heads that copy from context.
