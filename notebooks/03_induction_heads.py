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
# # 03 · Induction heads
#
# An *induction head* completes patterns: having seen `A B` earlier, at the next `A` it attends to the `B` and
# copies it. It relies on a *previous-token head* in an earlier layer, which writes "the token before me was
# `A`" into every position. Together they let a model continue text it has already seen in its context.
#
# The demo model was trained with repeated spans mixed into its Bible text, so it learned this circuit. Here we
#
# 1. score every head with the head detectors (on repeated random tokens, where only copying can help),
# 2. look at the heads in the attention view,
# 3. ablate them and watch the loss on repeated text go up.

# %%
import pandas as pd
import torch
import torch.nn.functional as F

import workbench
from workbench.analysis import (
    DETECTORS, ablate_heads, head_detector_table, per_token_loss, repeated_random_tokens,
    repeated_sequence_losses, zero_ablate_heads,
)
from workbench.viz import AttentionView, TokenView, plot_head_detector, plot_patching_layer_head, plot_token_loss

torch.set_grad_enabled(False)
model = workbench.load("demo")
cfg = model.config
n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads

# %% [markdown]
# ## 1. Head detectors
#
# Each detector runs the model on `[bos] + r + r` (a random span repeated once) and measures how much attention
# lands where its mechanism would look: the previous token, the earlier copy of the same token (duplicate), or
# the token *after* the earlier copy (induction). Scores are mean attention probabilities, in [0, 1].

# %%
table = head_detector_table(model, batch=8, seq_len=50, seed=0)
scores = {d: torch.tensor(table[table.detector == d].pivot(index="layer", columns="head", values="score").to_numpy())
          for d in DETECTORS}                               # each [layer, head]
table.pivot_table(index=["layer", "head"], columns="detector", values="score").round(3)

# %%
plot_head_detector(scores["previous_token"], "previous_token")

# %%
plot_head_detector(scores["induction"], "induction")

# %%
ind_layer, ind_head = divmod(int(scores["induction"].argmax()), n_heads)
prev_scores = scores["previous_token"][:ind_layer]           # previous-token heads must come earlier
prev_layer, prev_head = divmod(int(prev_scores.argmax()), n_heads)
print(f"induction head: L{ind_layer}H{ind_head} (score {scores['induction'][ind_layer, ind_head]:.2f})")
print(f"previous-token head before it: L{prev_layer}H{prev_head} (score {scores['previous_token'][prev_layer, prev_head]:.2f})")
induction_heads = [(l, h) for l in range(n_layers) for h in range(n_heads) if scores["induction"][l, h] >= 0.3]
print("all heads with induction score >= 0.3:", [f"L{l}H{h}" for l, h in induction_heads])

# %%
# check: the demo has a strong induction head, fed by a previous-token head in an earlier layer
assert scores["induction"][ind_layer, ind_head] >= 0.5
assert ind_layer >= 1
assert scores["previous_token"][prev_layer, prev_head] >= 0.3

# %% [markdown]
# ## 2. Look at them
#
# A random span of 20 tokens, repeated. In the second copy the induction head's pattern is a stripe one step
# *right* of the diagonal of the first copy ("attend to what came after me last time"); the previous-token head
# is the sub-diagonal. Click between the two heads in the grid.

# %%
span = 20
tokens = repeated_random_tokens(batch=1, seq_len=span, vocab_size=cfg.vocab_size, seed=1)    # [1, 1 + 2 * span]
view = AttentionView(model, tokens, layers=sorted({prev_layer, ind_layer}), title="repeated random tokens")
view.layer, view.head = ind_layer, ind_head
view

# %%
# check: in the second copy the induction head puts most of its attention on the token after the earlier copy
pattern = torch.tensor(view.pattern(layer=ind_layer, head=ind_head))            # [query, key]
queries = torch.arange(1 + span, 1 + 2 * span)
stripe = pattern[queries, queries - span + 1].mean()
print(f"mean attention on the induction target: {stripe:.2f}")
assert stripe > 0.4
prev_pattern = torch.tensor(view.pattern(layer=prev_layer, head=prev_head))
assert prev_pattern[torch.arange(1, 1 + 2 * span), torch.arange(0, 2 * span)].mean() > 0.3


# %% [markdown]
# ## 3. Ablate them
#
# `repeated_sequence_losses` measures the loss on the first copy (random tokens: nothing to predict them from,
# about `ln(vocab)`) and on the second copy (predictable by copying). Zeroing a head's output (`hook_z`) inside
# `model.hooks(...)` shows what it contributes. As a control we ablate the head with the *lowest* induction plus
# previous-token score among the heads from the induction layer on that are not induction heads (a head outside
# the circuit; layer-0 heads are no control, as every later head reads what they write).

# %%
def ablated(heads):
    """Forward hooks zeroing the given (layer, head) pairs."""
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return [(f"blocks.{layer}.attn.hook_z", zero_ablate_heads(hs)) for layer, hs in by_layer.items()]

outside = (scores["induction"] + scores["previous_token"]).clone()  # [layer, head]
outside[:ind_layer] = float("inf")
for layer, head in induction_heads:
    outside[layer, head] = float("inf")
control = divmod(int(outside.argmin()), n_heads)  # outside the circuit
settings = {"none": [], f"L{ind_layer}H{ind_head} (top induction)": [(ind_layer, ind_head)],
            "all induction heads": induction_heads, f"L{control[0]}H{control[1]} (control)": [control]}
rows = []
for name, heads in settings.items():
    with model.hooks(fwd_hooks=ablated(heads)):
        first, second = repeated_sequence_losses(model, batch=8, seq_len=50, seed=0)
    rows.append({"ablated": name, "first copy": first, "second copy": second})
losses = pd.DataFrame(rows).set_index("ablated")
losses.round(3)

# %%
# check: copying works, and it goes through the induction head(s)
base, top, every, ctrl = losses["second copy"]
assert base < 0.8 * losses["first copy"]["none"]           # the second copy is clearly easier ...
assert top > base + 0.5 and every >= top - 0.1             # ... until the induction heads are gone
assert top - base > ctrl - base                            # and the control head matters less

# %% [markdown]
# ### Which heads does copying need? An ablation sweep
#
# `ablate_heads` zero-ablates every head in turn and records a metric of the logits: here the loss on the
# second copy.

# %%
seq_len = 50
rep = repeated_random_tokens(batch=8, seq_len=seq_len, vocab_size=cfg.vocab_size, seed=0)
second_start = rep.shape[1] - seq_len

def second_copy_loss(logits):
    # predictions of positions second_start .. end come from positions second_start - 1 .. end - 1
    return F.cross_entropy(logits[:, second_start - 1 : -1].flatten(0, 1).float(), rep[:, second_start:].flatten())

sweep, sweep_frame = ablate_heads(model, rep, second_copy_loss, kind="zero", progress=False)
plot_patching_layer_head(sweep - second_copy_loss(model(rep).logits), title="Zero-ablating one head",
                         metric="second-copy loss change (nats)")

# %%
# check: the top induction head is among the heads whose loss is hurt most by ablation
change = torch.tensor(sweep_frame["change"].to_numpy()).view(n_layers, n_heads)
worst = change.flatten().topk(3).indices.tolist()
assert ind_layer * n_heads + ind_head in worst, change

# %% [markdown]
# ## 4. On real text
#
# The same effect on a verse repeated twice: the second time round the model can copy, so its per-token loss
# drops, unless the induction heads are ablated. The token view colours each token by its loss (pick a neuron
# or a component's direct logit attribution in its menu).

# %%
verse = ("And the LORD spake unto Moses, saying, Speak unto the children of Israel, that they bring me an "
         "offering: of every man that giveth it willingly with his heart ye shall take my offering.")
text = verse + " " + verse
loss, loss_frame = per_token_loss(model, text)                       # [1, pos - 1]
with model.hooks(fwd_hooks=ablated(induction_heads)):
    loss_ablated, _ = per_token_loss(model, text)
n_first = len(model.to_tokens(verse)[0])
halves = pd.DataFrame({
    "first copy": [loss[0, : n_first - 1].mean().item(), loss_ablated[0, : n_first - 1].mean().item()],
    "second copy": [loss[0, n_first:].mean().item(), loss_ablated[0, n_first:].mean().item()],
}, index=["model", "induction heads ablated"])
halves.round(3)

# %%
plot_token_loss(model.to_str_tokens(text)[1:], loss[0], title="Per-token loss, verse repeated")

# %%
token_view = TokenView(model, text, kind="loss", title="per-token loss")
token_view

# %%
# check: the model copies the repeated verse, and needs its induction heads for it
assert halves.loc["model", "second copy"] < 0.8 * halves.loc["model", "first copy"]
assert halves.loc["induction heads ablated", "second copy"] > halves.loc["model", "second copy"] + 0.5
# check: the token view shows the same per-token losses
shown = token_view.values("loss")["values"][0][1:]                  # the first token has no loss
assert torch.allclose(torch.tensor(shown, dtype=torch.float32), loss[0].float(), atol=1e-3)

# %% [markdown]
# **Next:** `04_activation_patching.ipynb` localises a behaviour by swapping activations between two prompts.
