"""Write the tutorial notebooks (01 ... 06) from the cell sources below, without outputs.

    python notebooks/build.py                     # regenerate notebooks/*.ipynb
    python notebooks/build.py --check             # exit 1 if a committed notebook differs from this script
    python notebooks/build.py --model /some/ckpt --out /tmp/nb   # the same notebooks on another checkpoint

The notebooks are the product; this script only keeps their JSON tidy (no outputs, no execution counts,
stable cell ids) and lets them be regenerated after an API change. Edit cells here, then rebuild.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import nbformat

HERE = Path(__file__).resolve().parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3 (ipykernel)", "language": "python"}


def md(text: str) -> tuple[str, str]:
    return ("markdown", text.strip("\n"))


def code(text: str) -> tuple[str, str]:
    return ("code", text.strip("\n"))


# ---------------------------------------------------------------------------------------------------------------
# 01 quickstart

QUICKSTART = [
    md("""
# 01 · Quickstart

This notebook is the first stop after the README's set-up command. It loads the embedded **demo model** (a
4-layer Pythia-style GPT-NeoX trained on the King James Bible, shipped with the package, so nothing is
downloaded), then walks through the everyday tools:

1. loading a model and tokenizing text,
2. generating text (greedy and sampled),
3. `run_with_cache`: every activation of a forward pass, by TransformerLens name,
4. the attention view (an interactive widget),
5. the logit lens (as a table and as a widget).

Cells marked **check** assert on the results, so a run top to bottom is also a test. Everything here runs on
a CPU in a few seconds.
"""),
    code("""
import numpy as np
import torch

import workbench
from workbench.analysis import logit_lens
from workbench.viz import AttentionView, LogitLensView

torch.set_grad_enabled(False)  # analysis only: no gradients needed in this notebook
"""),
    md("""
## 1. Load the demo model

`workbench.load` takes `"demo"`, a checkpoint directory, or a Hugging Face Hub id such as
`"EleutherAI/pythia-160m"` (see notebook 06). The model comes back in eval mode with its tokenizer attached
as `model.tokenizer`.
"""),
    code("""
model = workbench.load("demo")
cfg = model.config
print(f"{cfg.num_hidden_layers} layers x {cfg.num_attention_heads} heads, d_model={cfg.hidden_size}, "
      f"vocab={cfg.vocab_size}, context={cfg.max_position_embeddings}, {model.num_parameters():,} parameters")
print("parallel residual:", cfg.use_parallel_residual, "| attention backend:", cfg.attn_implementation)
"""),
    md("""
## 2. Tokenize

`model.to_tokens` gives ids `[batch, pos]`; `model.to_str_tokens` the piece each position holds. GPT-NeoX
models are trained without a beginning-of-sequence token, so none is added by default.
"""),
    code("""
text = "And God said, Let there be light: and there was light."
ids = model.to_tokens(text)                    # [1, pos]
str_tokens = model.to_str_tokens(text)
print(ids.shape)
print(str_tokens)
"""),
    code("""
# check: the tokenizer round-trips the text, and the pieces are the tokens
assert model.tokenizer.decode(ids[0].tolist()) == text
assert "".join(str_tokens) == text
assert ids.shape == (1, len(str_tokens))
"""),
    md("""
## 3. Generate

`model.generate` takes a string (or a list of strings, left-padded into a batch, or token ids). Greedy by
default; `do_sample=True` samples, and `seed=` makes the sample reproducible without touching torch's global
random state.
"""),
    code("""
prompt = "In the beginning God created"
print(model.generate(prompt, max_new_tokens=30))
print("---")
for seed in range(2):
    print(model.generate(prompt, max_new_tokens=30, do_sample=True, temperature=0.8, top_p=0.95, seed=seed))
print("---")
for line in model.generate(["And Moses said unto", "The LORD is my"], max_new_tokens=12):
    print(line)
"""),
    code("""
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
"""),
    md("""
## 4. `run_with_cache`

One forward pass that keeps every activation. Keys are TransformerLens names (`blocks.0.attn.hook_pattern`),
and the cache accepts the usual shorthand: `cache["pattern", 0]`, `cache["resid_post", -1]`.
"""),
    code("""
logits, cache = model.run_with_cache(text)
print(f"{len(cache)} activations, {cache.nbytes() / 1e6:.1f} MB; the first few:")
for name in list(cache)[:8]:
    print(f"  {name:32s} {tuple(cache[name].shape)}")
pattern = cache["pattern", 0]                 # [batch, head, query, key]
print("pattern of layer 0:", tuple(pattern.shape))
"""),
    code("""
# check: attention patterns are causal probability distributions
n = ids.shape[1]
assert pattern.shape == (1, cfg.num_attention_heads, n, n)
assert torch.allclose(pattern.sum(-1), torch.ones(1, cfg.num_attention_heads, n), atol=1e-5)
assert torch.triu(pattern[0], diagonal=1).abs().max() == 0
# check: caching changes nothing, and the cached final residual stream gives the logits
assert torch.allclose(logits, model(ids).logits, atol=1e-5)
final = model.embed_out(model.gpt_neox.final_layer_norm(cache["resid_post", -1]))
assert torch.allclose(final, logits, atol=1e-4)
"""),
    md("""
## 5. The attention view

A layers x heads grid of thumbnails and one large pattern; click a thumbnail to pick a head, hover a token to
see what it attends to (blue) and what attends to it (orange). In JupyterLab the widget asks the kernel for
each head; where widgets can't run (nbviewer, a static export) the same view is embedded as a standalone
page. `view.to_html("attention.html")` writes that page to a file.
"""),
    code("""
view = AttentionView(model, text, title="demo model: " + text)
view
"""),
    code("""
# check: the view shows the model's patterns (stored as 8-bit probabilities, so within 1/255)
for layer in range(cfg.num_hidden_layers):
    for head in range(cfg.num_attention_heads):
        shown = view.pattern(layer=layer, head=head)                  # [query, key]
        assert np.abs(shown - cache["pattern", layer][0, head].numpy()).max() <= 1 / 255
"""),
    md("""
## 6. The logit lens

What would the model predict if it stopped early? The logit lens reads the residual stream before every layer
(and after the last) through the final LayerNorm and the unembedding. Rows are layers, columns positions; the
last row is the model's real prediction.
"""),
    code("""
log_probs, lens = logit_lens(model, text)    # log_probs: [layers + 1, batch, pos, vocab]
top1 = lens[lens["rank"] == 0]
table = top1.pivot(index="label", columns="pos", values="top_token")
table.columns = [repr(t) for t in str_tokens]
table
"""),
    code("""
# the probability of the actual next token, layer by layer, averaged over positions
next_prob = top1.dropna(subset=["target_prob"]).groupby("label")["target_prob"].mean()
next_prob
"""),
    code("""
# check: the lens's last row is exactly the model's output distribution
assert torch.allclose(log_probs[-1], torch.log_softmax(logits.float(), -1), atol=1e-4)
# check: the trained layers matter: the full model predicts the next token far better than the embedding alone
assert next_prob["final_post"] > 2 * next_prob["0_pre"], next_prob
"""),
    md("""
The same analysis as a widget: hover a cell for the top tokens, switch the colouring between the cell's own
top token, the model's final prediction and the actual next token, or type any token into the target box.
"""),
    code("""
lens_view = LogitLensView(model, text)
lens_view
"""),
    code("""
# check: the widget's numbers agree with `logit_lens` (two independent code paths)
grid = lens_view.grid(target="next")
widget_probs = np.array([[np.nan if p is None else p for p in row] for row in grid["target_prob"]])
frame_probs = top1.pivot(index="layer", columns="pos", values="target_prob").to_numpy()
assert widget_probs.shape[0] == cfg.num_hidden_layers + 1
assert np.allclose(widget_probs[:, :-1], frame_probs[:, :-1], atol=1e-4)
"""),
    md("""
**Next:** `02_residual_stream.ipynb` takes a single prediction apart, component by component.
"""),
]


# ---------------------------------------------------------------------------------------------------------------
# 02 residual stream

RESIDUAL = [
    md("""
# 02 · The residual stream and direct logit attribution

Every layer of a transformer reads the residual stream and adds its output back to it; the unembedding reads
the sum at the end. So a prediction can be taken apart:

- **accumulated** residual: the stream as it stands before each layer (what the logit lens reads);
- **decomposed** residual: the separate pieces that were added (embedding, each attention and MLP output);
- **direct logit attribution** (DLA): how much each piece (down to single attention heads) pushes the logit
  of the right answer above a wrong one.

The demo model uses a *parallel* residual (as Pythia and GPT-NeoX-20B do): attention and MLP of a layer both
read the same stream, so there is no `resid_mid`.
"""),
    code("""
import pandas as pd
import torch
from matplotlib.figure import Figure

import workbench
from workbench.analysis import direct_logit_attribution
from workbench.viz import plot_logit_diff_contributions, plot_patching_layer_head, plot_residual_norms

torch.set_grad_enabled(False)
model = workbench.load("demo")
cfg = model.config
"""),
    md("""
## A prediction to explain

"I am the LORD thy God" (Exodus 20:2, and dozens of times after): right after "the LORD thy", a model that has
read its Bible predicts " God"; " LORD" (already in the context) is the natural distractor.
"""),
    code("""
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
"""),
    code("""
# check: the demo model knows its Exodus
assert int(probs.argmax()) == answer_id
assert logit_diff > 0
"""),
    md("""
## Accumulated residual: the logit difference layer by layer

`cache.accumulated_resid(apply_ln=True)` stacks the stream before each layer plus the final one, each put
through the final LayerNorm; projecting onto `W_U[answer] - W_U[wrong]` gives the logit difference the model
would produce if it stopped there.
"""),
    code("""
acc, acc_labels = cache.accumulated_resid(apply_ln=True, pos_slice=-1, return_labels=True)   # [layers + 1, batch, d]
acc_diff = cache.project_to_logits(acc, answer_id, wrong_id)[:, 0]                             # [layers + 1]

fig = Figure(figsize=(5, 2.8), layout="constrained")
ax = fig.add_subplot()
ax.plot(acc_labels, acc_diff.numpy(), marker="o")
ax.axhline(0, color="grey", lw=0.8)
ax.set_xlabel("residual stream before ...")
ax.set_ylabel("logit difference")
ax.set_title(f"{answer!r} vs {wrong!r}, accumulated")
fig
"""),
    code("""
# residual-stream norm grows through the layers (at every position)
norms = cache.accumulated_resid()[:, 0].norm(dim=-1)          # [layers + 1, pos]
plot_residual_norms(norms, labels=acc_labels)
"""),
    code("""
# check: the last accumulated entry is exactly the model's logit difference
assert abs(float(acc_diff[-1]) - logit_diff) < 1e-3
"""),
    md("""
## Decomposed residual

`cache.decompose_resid()` returns what each component wrote: the embedding, then `L_attn_out` and `L_mlp_out`
for every layer. They sum to the final residual stream. `cache.logit_attrs` applies the final LayerNorm (with
the scale it had in this run) and projects each piece onto the logit difference; the LayerNorm's bias belongs
to no component and is added separately.
"""),
    code("""
comps, comp_labels = cache.decompose_resid(pos_slice=-1, return_labels=True)     # [components, batch, d]
attrs = cache.logit_attrs(comps, answer_id, wrong_id, pos_slice=-1)[:, 0]        # [components]
w_u = model.embed_out.weight
ln_bias_term = float(model.gpt_neox.final_layer_norm.bias @ (w_u[answer_id] - w_u[wrong_id]))
pd.Series(attrs.numpy(), index=comp_labels, name="logit diff").round(3)
"""),
    code("""
# check: the components add up to the residual stream, and their attributions to the logit difference
assert torch.allclose(comps.sum(0), cache["resid_post", -1][:, -1], atol=1e-4)
assert abs(float(attrs.sum()) + ln_bias_term - logit_diff) < 1e-3
"""),
    md("""
## Direct logit attribution, down to the heads

`workbench.analysis.direct_logit_attribution` splits every attention output into its heads (plus the output
bias, which belongs to no head) and returns a tidy frame.
"""),
    code("""
dla, frame = direct_logit_attribution(model, prompt, answer, wrong)
per_head = frame[frame["kind"] == "head"].pivot(index="layer", columns="head", values="attribution")
attn_bias = frame[frame["kind"] == "attn_bias"].set_index("layer")["attribution"]
attn = per_head.sum(axis=1) + attn_bias.reindex(per_head.index, fill_value=0.0)
mlp = frame[frame["kind"] == "mlp"].set_index("layer")["attribution"]
plot_logit_diff_contributions(attn.to_numpy(), mlp.to_numpy(), total=logit_diff)
"""),
    code("""
plot_patching_layer_head(per_head.to_numpy(), title="Direct logit attribution per head", metric="logit difference")
"""),
    code("""
frame.reindex(frame["attribution"].abs().sort_values(ascending=False).index).head(8)[
    ["component", "kind", "attribution"]]
"""),
    code("""
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
"""),
    md("""
**Next:** `03_induction_heads.ipynb` finds the heads that copy from context.
"""),
]


# ---------------------------------------------------------------------------------------------------------------
# 03 induction heads

INDUCTION = [
    md("""
# 03 · Induction heads

An *induction head* completes patterns: having seen `A B` earlier, at the next `A` it attends to the `B` and
copies it. It relies on a *previous-token head* in an earlier layer, which writes "the token before me was
`A`" into every position. Together they let a model continue text it has already seen in its context.

The demo model was trained with repeated spans mixed into its Bible text, so it learned this circuit. Here we

1. score every head with the head detectors (on repeated random tokens, where only copying can help),
2. look at the heads in the attention view,
3. ablate them and watch the loss on repeated text go up.
"""),
    code("""
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
"""),
    md("""
## 1. Head detectors

Each detector runs the model on `[bos] + r + r` (a random span repeated once) and measures how much attention
lands where its mechanism would look: the previous token, the earlier copy of the same token (duplicate), or
the token *after* the earlier copy (induction). Scores are mean attention probabilities, in [0, 1].
"""),
    code("""
table = head_detector_table(model, batch=8, seq_len=50, seed=0)
scores = {d: torch.tensor(table[table.detector == d].pivot(index="layer", columns="head", values="score").to_numpy())
          for d in DETECTORS}                               # each [layer, head]
table.pivot_table(index=["layer", "head"], columns="detector", values="score").round(3)
"""),
    code("""
plot_head_detector(scores["previous_token"], "previous_token")
"""),
    code("""
plot_head_detector(scores["induction"], "induction")
"""),
    code("""
ind_layer, ind_head = divmod(int(scores["induction"].argmax()), n_heads)
prev_scores = scores["previous_token"][:ind_layer]           # previous-token heads must come earlier
prev_layer, prev_head = divmod(int(prev_scores.argmax()), n_heads)
print(f"induction head: L{ind_layer}H{ind_head} (score {scores['induction'][ind_layer, ind_head]:.2f})")
print(f"previous-token head before it: L{prev_layer}H{prev_head} (score {scores['previous_token'][prev_layer, prev_head]:.2f})")
induction_heads = [(l, h) for l in range(n_layers) for h in range(n_heads) if scores["induction"][l, h] >= 0.3]
print("all heads with induction score >= 0.3:", [f"L{l}H{h}" for l, h in induction_heads])
"""),
    code("""
# check: the demo has a strong induction head, fed by a previous-token head in an earlier layer
assert scores["induction"][ind_layer, ind_head] >= 0.5
assert ind_layer >= 1
assert scores["previous_token"][prev_layer, prev_head] >= 0.3
"""),
    md("""
## 2. Look at them

A random span of 20 tokens, repeated. In the second copy the induction head's pattern is a stripe one step
*right* of the diagonal of the first copy ("attend to what came after me last time"); the previous-token head
is the sub-diagonal. Click between the two heads in the grid.
"""),
    code("""
span = 20
tokens = repeated_random_tokens(batch=1, seq_len=span, vocab_size=cfg.vocab_size, seed=1)    # [1, 1 + 2 * span]
view = AttentionView(model, tokens, layers=sorted({prev_layer, ind_layer}), title="repeated random tokens")
view.layer, view.head = ind_layer, ind_head
view
"""),
    code("""
# check: in the second copy the induction head puts most of its attention on the token after the earlier copy
pattern = torch.tensor(view.pattern(layer=ind_layer, head=ind_head))            # [query, key]
queries = torch.arange(1 + span, 1 + 2 * span)
stripe = pattern[queries, queries - span + 1].mean()
print(f"mean attention on the induction target: {stripe:.2f}")
assert stripe > 0.4
prev_pattern = torch.tensor(view.pattern(layer=prev_layer, head=prev_head))
assert prev_pattern[torch.arange(1, 1 + 2 * span), torch.arange(0, 2 * span)].mean() > 0.3
"""),
    md("""
## 3. Ablate them

`repeated_sequence_losses` measures the loss on the first copy (random tokens: nothing to predict them from,
about `ln(vocab)`) and on the second copy (predictable by copying). Zeroing a head's output (`hook_z`) inside
`model.hooks(...)` shows what it contributes. As a control we ablate the head with the *lowest* induction plus
previous-token score (a head outside the circuit: the previous-token head is part of it).
"""),
    code("""
def ablated(heads):
    \"\"\"Forward hooks zeroing the given (layer, head) pairs.\"\"\"
    by_layer = {}
    for layer, head in heads:
        by_layer.setdefault(layer, []).append(head)
    return [(f"blocks.{layer}.attn.hook_z", zero_ablate_heads(hs)) for layer, hs in by_layer.items()]

control = divmod(int((scores["induction"] + scores["previous_token"]).argmin()), n_heads)  # outside the circuit
settings = {"none": [], f"L{ind_layer}H{ind_head} (top induction)": [(ind_layer, ind_head)],
            "all induction heads": induction_heads, f"L{control[0]}H{control[1]} (control)": [control]}
rows = []
for name, heads in settings.items():
    with model.hooks(fwd_hooks=ablated(heads)):
        first, second = repeated_sequence_losses(model, batch=8, seq_len=50, seed=0)
    rows.append({"ablated": name, "first copy": first, "second copy": second})
losses = pd.DataFrame(rows).set_index("ablated")
losses.round(3)
"""),
    code("""
# check: copying works, and it goes through the induction head(s)
base, top, every, ctrl = losses["second copy"]
assert base < 0.8 * losses["first copy"]["none"]           # the second copy is clearly easier ...
assert top > base + 0.5 and every >= top - 0.1             # ... until the induction heads are gone
assert top - base > ctrl - base                            # and the control head matters less
"""),
    md("""
### Which heads does copying need? An ablation sweep

`ablate_heads` zero-ablates every head in turn and records a metric of the logits: here the loss on the
second copy.
"""),
    code("""
seq_len = 50
rep = repeated_random_tokens(batch=8, seq_len=seq_len, vocab_size=cfg.vocab_size, seed=0)
second_start = rep.shape[1] - seq_len

def second_copy_loss(logits):
    # predictions of positions second_start .. end come from positions second_start - 1 .. end - 1
    return F.cross_entropy(logits[:, second_start - 1 : -1].flatten(0, 1).float(), rep[:, second_start:].flatten())

sweep, sweep_frame = ablate_heads(model, rep, second_copy_loss, kind="zero", progress=False)
plot_patching_layer_head(sweep - second_copy_loss(model(rep).logits), title="Zero-ablating one head",
                         metric="second-copy loss change (nats)")
"""),
    code("""
# check: the top induction head is among the heads whose loss is hurt most by ablation
change = torch.tensor(sweep_frame["change"].to_numpy()).view(n_layers, n_heads)
worst = change.flatten().topk(3).indices.tolist()
assert ind_layer * n_heads + ind_head in worst, change
"""),
    md("""
## 4. On real text

The same effect on a verse repeated twice: the second time round the model can copy, so its per-token loss
drops, unless the induction heads are ablated. The token view colours each token by its loss (pick a neuron
or a component's direct logit attribution in its menu).
"""),
    code("""
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
"""),
    code("""
plot_token_loss(model.to_str_tokens(text)[1:], loss[0], title="Per-token loss, verse repeated")
"""),
    code("""
token_view = TokenView(model, text, kind="loss", title="per-token loss")
token_view
"""),
    code("""
# check: the model copies the repeated verse, and needs its induction heads for it
assert halves.loc["model", "second copy"] < 0.8 * halves.loc["model", "first copy"]
assert halves.loc["induction heads ablated", "second copy"] > halves.loc["model", "second copy"] + 0.5
# check: the token view shows the same per-token losses
shown = token_view.values("loss")["values"][0][1:]                  # the first token has no loss
assert torch.allclose(torch.tensor(shown, dtype=torch.float32), loss[0].float(), atol=1e-3)
"""),
    md("""
**Next:** `04_activation_patching.ipynb` localises a behaviour by swapping activations between two prompts.
"""),
]


# ---------------------------------------------------------------------------------------------------------------
# 04 activation patching

PATCHING = [
    md("""
# 04 · Activation patching and attribution patching

Two prompts that differ in one token: a *clean* one and a *corrupted* one, with different correct answers.
Run the corrupted prompt, but put back one clean activation (one layer, one position or one head): where that
restores the clean answer, that activation carries the information that differs.

**Attribution patching** estimates all those numbers from one forward and one backward pass (a first-order
Taylor expansion); we compare it with the exact patching.

The task: the second time a sentence appears, complete it with the name the first one ended with. The demo
model does this by induction (notebook 03).
"""),
    code("""
import numpy as np
import pandas as pd
import torch
from matplotlib.figure import Figure

import workbench
from workbench.analysis import attribution_patch, induction_scores, logit_diff_metric, patch
from workbench.viz import plot_patching_layer_head, plot_patching_layer_pos

model = workbench.load("demo")
cfg = model.config
n_layers, n_heads = cfg.num_hidden_layers, cfg.num_attention_heads
"""),
    code("""
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
    \"\"\"0 = the corrupted run, 1 = the clean run.\"\"\"
    return (values - corrupted_metric) / (clean_metric - corrupted_metric)
"""),
    code("""
# check: the model copies the name: the clean answer leads clearly, and the corrupted name cuts that lead
# (this small model does not flip to the corrupted name outright; patching measures how much of the lead returns)
assert clean_metric > 0 and clean_metric - corrupted_metric > 1.0
"""),
    md("""
## Layer x position: the residual stream

Patching `resid_pre` of one layer at one position. At layer 0 only the position that differs matters; by the
last layer the information has moved to the final position, where the answer is read out.
"""),
    code("""
resid, resid_frame = patch(model, clean_ids, corrupted_ids, metric, hook="resid_pre", by=("layer", "pos"),
                           progress=False)           # [layers, pos]
plot_patching_layer_pos(normalise(resid), tokens, title="Patching resid_pre", metric="logit diff recovered")
"""),
    code("""
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
"""),
    md("""
## Layer x head

Patching one head's output (`hook_z`) at every position.
"""),
    code("""
heads, heads_frame = patch(model, clean_ids, corrupted_ids, metric, hook="z", by=("layer", "head"), progress=False)
plot_patching_layer_head(normalise(heads), title="Patching attention heads (z)", metric="logit diff recovered")
"""),
    code("""
best_layer, best_head = divmod(int(heads.argmax()), n_heads)
ind = induction_scores(model, batch=8, seq_len=50, seed=0)
print(f"most important head: L{best_layer}H{best_head}, recovers {float(normalise(heads[best_layer, best_head])):.0%}; "
      f"its induction score: {float(ind[best_layer, best_head]):.2f}")
# check: the head that carries the answer is an induction head
assert float(normalise(heads[best_layer, best_head])) > 0.2
assert float(ind[best_layer, best_head]) >= 0.3
"""),
    md("""
## Attribution patching against exact patching

`attribution_patch` returns the *estimated change* of the metric for each patch, from the gradient on the
corrupted run: `(clean_act - corrupted_act) . d metric / d act`. Exact patching needed one forward pass per
cell; this needs two forwards and a backward for the whole grid.
"""),
    code("""
est_resid, _ = attribution_patch(model, clean_ids, corrupted_ids, metric, hook="resid_pre", by=("layer", "pos"))
est_heads, _ = attribution_patch(model, clean_ids, corrupted_ids, metric, hook="z", by=("layer", "head"))
exact_resid, exact_heads = resid - corrupted_metric, heads - corrupted_metric   # exact changes

fig = Figure(figsize=(8, 3.4), layout="constrained")
for ax, (name, exact, est) in zip(fig.subplots(1, 2), [("resid_pre, layer x position", exact_resid, est_resid),
                                                        ("heads (z)", exact_heads, est_heads)]):
    ax.scatter(exact.flatten(), est.flatten(), s=12)
    lim = float(max(exact.abs().max(), est.abs().max())) * 1.05
    ax.plot([-lim, lim], [-lim, lim], color="grey", lw=0.8, ls="--")
    r = np.corrcoef(exact.flatten(), est.flatten())[0, 1]
    ax.set_title(f"{name}: r = {r:.2f}")
    ax.set_xlabel("exact patching: change in logit diff")
    ax.set_ylabel("attribution patching estimate")
fig
"""),
    code("""
plot_patching_layer_head(est_heads / (clean_metric - corrupted_metric), title="Attribution patching (heads)",
                         metric="estimated logit diff recovered")
"""),
    code("""
corr = lambda a, b: float(np.corrcoef(a.flatten(), b.flatten())[0, 1])
print(f"correlation, resid_pre: {corr(exact_resid, est_resid):.2f}; heads: {corr(exact_heads, est_heads):.2f}")
# check: where clean and corrupted activations are equal the estimate is exactly zero
assert torch.allclose(est_resid[0, others], torch.zeros(len(others)), atol=1e-6)
# check: the linear estimate tracks the exact effects and finds the same most important head
assert corr(exact_heads, est_heads) > 0.7
assert int(est_heads.argmax()) == int(heads.argmax())
"""),
    md("""
**Next:** `05_fewshot_eval.ipynb` measures the model on standard benchmarks.
"""),
]


# ---------------------------------------------------------------------------------------------------------------
# 05 few-shot evaluation

EVAL = [
    md("""
# 05 · Few-shot evaluation and published baselines

`workbench.evals.evaluate` runs benchmark tasks with lm-evaluation-harness's prompts and scoring (and agrees
with it), then compares the result with the published numbers of GPT-3, GPT-NeoX-20B and the Pythia suite
that ship with the package, in a table, a plot and a standalone HTML report.

The benchmark files are read from a local data directory: `$WORKBENCH_DATA_DIR`, else `../shared/data/evals`
beside the checkout (the layout is described in `shared/data/SOURCES.md`). Without local files the notebook
tries lm-evaluation-harness's own task downloads from the Hugging Face Hub, and without those it says so and
skips the evaluation cells.

The demo model is tiny and trained on one book: expect chance-level scores on commonsense benchmarks. The
point is the workflow; run it on `EleutherAI/pythia-160m` for numbers that mean something.
"""),
    code("""
import os
import tempfile
from pathlib import Path

import numpy as np
import torch

import workbench
from workbench.evals import EvalResults, evaluate, report
from workbench.evals.baselines import load_baselines
from workbench.evals.tasks import default_data_dir, get_tasks

TASKS = ["lambada_openai", "arc_easy", "winogrande"]
LIMIT = 40                  # documents per task: enough to see the workflow on a CPU in seconds
model = workbench.load("demo")
"""),
    code("""
def local_data_ok(data_dir, tasks):
    \"\"\"Whether every task's data file is present locally (the loaders say which file is missing).\"\"\"
    if data_dir is None:
        return False, "no data directory ($WORKBENCH_DATA_DIR unset and no ../shared/data/evals beside the checkout)"
    from workbench.evals.tasks import get_tasks
    try:
        for task in get_tasks(tasks, data_dir):
            task.docs()
    except FileNotFoundError as err:
        return False, str(err)
    return True, f"local data in {data_dir}"


def hub_reachable(timeout=5.0):
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        import socket
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()  # fails fast offline
        import huggingface_hub
        huggingface_hub.dataset_info("allenai/ai2_arc", timeout=timeout)
        return True
    except Exception:
        return False


DATA_DIR = default_data_dir()
LOCAL, why = local_data_ok(DATA_DIR, TASKS)
SOURCE = "local" if LOCAL else ("hub" if hub_reachable() else None)
print("benchmark data:", why if LOCAL else f"not local ({why})")
if SOURCE is None:
    print("SKIPPING the evaluation cells: no local benchmark files and the Hugging Face Hub is unreachable. "
          "Set WORKBENCH_DATA_DIR to a directory laid out as in shared/data/SOURCES.md to run them.")
elif SOURCE == "hub":
    print("no local files: evaluating through lm-evaluation-harness, which downloads the tasks from the Hub")
"""),
    md("""
## Evaluate

Zero-shot (the setting of most published numbers), the first `LIMIT` documents of each task. Accuracy for
the multiple-choice tasks, accuracy and perplexity for LAMBADA.
"""),
    code("""
def from_lm_eval(out, model, num_fewshot, limit):
    \"\"\"lm-eval's simple_evaluate output -> EvalResults (metric "acc,none" -> "acc").\"\"\"
    res = EvalResults()
    for task, values in out["results"].items():
        metric_values = {k.split(",")[0]: v for k, v in values.items()
                         if "," in k and "_stderr" not in k and isinstance(v, (int, float))}
        res.metrics[task] = metric_values
        res.stderr[task] = {m: values.get(f"{m}_stderr,none") for m in metric_values}
        res.counts[task] = {"n_docs": limit}
    res.config = {"model": "demo", "num_params": model.num_parameters(), "num_fewshot": num_fewshot, "limit": limit}
    return res


results = None
if SOURCE == "local":
    results = evaluate("demo", TASKS, num_fewshot=0, limit=LIMIT, progress=False)
elif SOURCE == "hub":
    import lm_eval
    from workbench.evals.harness import WorkbenchLM
    out = lm_eval.simple_evaluate(model=WorkbenchLM(pretrained=model), tasks=TASKS, num_fewshot=0, limit=LIMIT)
    results = from_lm_eval(out, model, 0, LIMIT)
if results is not None:
    display(results.table().round(4))
"""),
    code("""
# check: sane accuracies, every document evaluated, and the aggregate is the mean of the per-document scores
if results is None:
    print("skipped: no benchmark data")
else:
    table = results.table()
    acc = table[table["metric"] == "acc"]
    assert set(acc["task"]) == set(TASKS) and acc["value"].between(0, 1).all()
    assert results["lambada_openai"]["perplexity"] > 1
    if SOURCE == "local":
        for task in TASKS:
            assert results.counts[task]["n_docs"] == LIMIT
            per_doc = [record["acc"] for record in results.samples[task]]
            assert abs(np.mean(per_doc) - results[task]["acc"]) < 1e-9
        # multiple choice: the prediction is the choice with the highest log-likelihood
        arc = get_tasks(["arc_easy"])[0]
        docs = arc.docs()
        for record in results.samples["arc_easy"]:
            k = len(arc.choices(docs[record["doc_id"]]))
            assert record["acc"] == float(int(np.argmax(record["loglikelihoods"][:k])) == record["gold"])
"""),
    md("""
## Compared with the published baselines

`results.compare()` puts the run next to every published model with a figure for the same task, metric and
shot count. Below: GPT-3 (the paper's sizes), GPT-NeoX-20B and the Pythia suite. Note the caveat in
`workbench.evals.baselines`: the GPT-3 paper's multiple-choice accuracies are length-normalised, so they are
not in the `acc` rows; the plot below uses the closest metric and says so in its legend.
"""),
    code("""
baselines = load_baselines(families=["gpt3", "gpt-neox", "pythia"])
print(f"{len(baselines)} published figures, e.g.:")
display(baselines[baselines["task"] == "lambada_openai"].head(6)[["model", "params", "task", "metric", "num_fewshot", "value"]])
comparison = None
if results is not None:
    comparison = results.compare(families=["gpt3", "gpt-neox", "pythia"])
    display(comparison.round(3))
"""),
    code("""
if results is not None:
    display(report.plot(results, "scaling", task="lambada_openai"))
    display(report.plot(results, "tasks", metric="acc"))
"""),
    code("""
# check: the comparison lines the run up with the published GPT-NeoX-20B and Pythia numbers
if comparison is not None:
    row = comparison.set_index(["task", "metric"]).loc[("lambada_openai", "acc")]
    published = baselines.query("model == 'GPT-NeoX-20B' and task == 'lambada_openai' and metric == 'acc' "
                                "and num_fewshot == 0")
    assert abs(row["GPT-NeoX-20B"] - published["value"].iloc[0]) < 1e-12
    assert row["GPT-NeoX-20B"] > row["pythia-70m"] > row.iloc[0]        # 20B > 70M > the 4-layer demo
    assert abs(row.iloc[0] - results["lambada_openai"]["acc"]) < 1e-12  # the run's own column comes first
"""),
    md("""
## HTML report

One self-contained page (tables and plots inlined, no network access), to share or archive with the run's
JSON (`results.to_json(path)`).
"""),
    code("""
report_dir = Path(tempfile.gettempdir()) / "workbench-reports"
if results is not None:
    page = results.to_html(report_dir / "demo_eval.html", max_scaling_plots=1)
    results.to_json(report_dir / "demo_eval.json")
    print("wrote", report_dir / "demo_eval.html", f"({len(page) / 1e3:.0f} kB)")
"""),
    code("""
# check: the page is complete and the JSON reads back to the same numbers
if results is not None:
    assert page.startswith("<!DOCTYPE html>") and "Compared with published results" in page
    assert "GPT-NeoX-20B" in page and "data:image/png;base64," in page
    again = EvalResults.from_json(report_dir / "demo_eval.json")
    assert again.metrics == results.metrics
"""),
]


# ---------------------------------------------------------------------------------------------------------------
# 06 Pythia and GPT-NeoX-20B

PYTHIA = [
    md("""
# 06 · Pythia across training, and GPT-NeoX-20B on a GPU

The Pythia suite publishes 154 checkpoints of every model (`step0`, `step1`, ..., `step143000`) as hub
revisions, which makes it the place to watch circuits form. `workbench.load(name, revision="step3000")`
fetches one through the huggingface_hub cache (so `HF_HUB_OFFLINE=1` works from the cache).

Two parts need things a laptop may not have, and skip with a message otherwise:

- **Pythia checkpoints** need the Hugging Face Hub (or a warm cache);
- **GPT-NeoX-20B** needs a CUDA GPU with ~45 GB of memory (fp16 weights are 41 GB) and `flash-attn`.

The comparison code runs offline on the demo model first, so the notebook is useful without either.
"""),
    code("""
import importlib.util
import os
import socket

import pandas as pd
import torch
from matplotlib.figure import Figure

import workbench
from workbench.analysis import head_detector_table, repeated_sequence_losses
from workbench.hub import HubUnavailableError

torch.set_grad_enabled(False)


def hub_reachable(repo="EleutherAI/pythia-70m", timeout=5.0):
    \"\"\"True when the Hugging Face Hub answers (HF_HUB_OFFLINE=1 means no). A plain socket first: the hub
    client retries for over a minute before giving up on a machine without network.\"\"\"
    if os.environ.get("HF_HUB_OFFLINE", "0") not in ("0", "", "false", "False"):
        return False
    try:
        socket.create_connection(("huggingface.co", 443), timeout=timeout).close()
        import huggingface_hub
        huggingface_hub.model_info(repo, timeout=timeout)
        return True
    except Exception:
        return False


HUB = hub_reachable()
GPU = torch.cuda.is_available()
print(f"hub reachable: {HUB}; CUDA GPU: {GPU}" + (f" ({torch.cuda.get_device_name(0)})" if GPU else ""))
"""),
    md("""
## A head across checkpoints: the comparison, offline

`head_report` scores every head of each model with the detectors and measures in-context learning on
repeated random tokens. We run it on the demo model and on the same architecture freshly initialised, i.e.
the demo's "step 0": its induction head does not exist yet.
"""),
    code("""
def head_report(models: dict) -> pd.DataFrame:
    \"\"\"Per model: the best induction and previous-token heads, and the loss on both copies of a repeated span.\"\"\"
    rows = []
    for name, m in models.items():
        table = head_detector_table(m, batch=4, seq_len=40, seed=0)
        best = {d: table[table.detector == d].sort_values("score").iloc[-1] for d in ("induction", "previous_token")}
        name_of = lambda row: f"L{int(row['layer'])}H{int(row['head'])}"
        first, second = repeated_sequence_losses(m, batch=4, seq_len=40, seed=0)
        rows.append({"checkpoint": name,
                     "induction head": name_of(best["induction"]), "induction score": best["induction"]["score"],
                     "previous-token head": name_of(best["previous_token"]),
                     "previous-token score": best["previous_token"]["score"],
                     "loss, first copy": first, "loss, second copy": second})
    return pd.DataFrame(rows).set_index("checkpoint")


def head_scores(models: dict, layer: int, head: int) -> pd.DataFrame:
    \"\"\"One head's three detector scores in every model.\"\"\"
    out = {}
    for name, m in models.items():
        table = head_detector_table(m, batch=4, seq_len=40, seed=0)
        out[name] = table[(table.layer == layer) & (table.head == head)].set_index("detector")["score"]
    return pd.DataFrame(out).T


demo = workbench.load("demo")
torch.manual_seed(0)
step0 = workbench.GPTNeoXForCausalLM(demo.config).eval()     # same architecture, freshly initialised weights
step0.tokenizer = demo.tokenizer
offline = head_report({"demo, initialisation": step0, "demo, trained": demo})
offline.round(3)
"""),
    code("""
layer, head = (int(x) for x in offline.loc["demo, trained", "induction head"][1:].split("H"))
head_scores({"demo, initialisation": step0, "demo, trained": demo}, layer, head).round(3)
"""),
    code("""
# check: training made the induction head, and with it in-context learning
trained, init = offline.loc["demo, trained"], offline.loc["demo, initialisation"]
assert trained["induction score"] >= 0.5 > init["induction score"] + 0.3
assert trained["loss, second copy"] < 0.8 * trained["loss, first copy"]
assert init["loss, second copy"] > 0.8 * init["loss, first copy"]
"""),
    md("""
The demo's training log records the best induction score at every evaluation, so we can see *when* the head
formed: the same question the Pythia checkpoints answer below for a real model.
"""),
    code("""
log_file = workbench.demo_path() / "training_log.csv"
curve = None
if log_file.is_file():
    log = pd.read_csv(log_file)
    curve = log.dropna(subset=["induction_max"])[["step", "val_loss", "induction_max", "induction_head"]]
    fig = Figure(figsize=(6, 2.8), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(curve["step"], curve["induction_max"], marker=".", label="best induction score")
    ax2 = ax.twinx()
    ax2.plot(curve["step"], curve["val_loss"], color="#e66101", label="validation loss")
    ax.set_xlabel("training step")
    ax.set_ylabel("induction score")
    ax2.set_ylabel("validation loss (nats)")
    ax.set_title("The demo model's induction head forming")
    display(fig)
else:
    print(f"no training log at {log_file}; skipping the training curve")
"""),
    code("""
# check: the log ends where the checkpoint is (its last recorded score is the trained model's)
if curve is not None:
    assert abs(curve["induction_max"].iloc[-1] - offline.loc["demo, trained", "induction score"]) < 0.2
    assert curve["induction_max"].iloc[-1] > curve["induction_max"].iloc[0]
"""),
    md("""
## Pythia checkpoints from the hub

The same report on `EleutherAI/pythia-70m` at a few training steps. Each revision is a separate download
(~160 MB) kept in the huggingface_hub cache. The loading call is all it takes:

```python
model = workbench.load("EleutherAI/pythia-70m", revision="step3000")
```
"""),
    code("""
REVISIONS = ["step512", "step2000", "step8000", "step143000"]
pythia = {}
if HUB:
    for revision in REVISIONS:
        pythia[revision] = workbench.load("EleutherAI/pythia-70m", revision=revision)
    pythia_report = head_report(pythia)
    display(pythia_report.round(3))
else:
    print("SKIPPING Pythia checkpoints: the Hugging Face Hub is not reachable (or HF_HUB_OFFLINE=1). Without it, "
          "workbench.load serves revisions already in the huggingface_hub cache and raises "
          f"{HubUnavailableError.__name__} (an OSError naming the repository and revision) for the others.")
"""),
    code("""
if HUB:
    final = pythia_report.loc["step143000"]
    layer, head = (int(x) for x in final["induction head"][1:].split("H"))
    across = head_scores(pythia, layer, head)
    fig = Figure(figsize=(6, 2.8), layout="constrained")
    ax = fig.add_subplot()
    steps = [int(r.removeprefix("step")) for r in across.index]
    for detector in across.columns:
        ax.plot(steps, across[detector], marker="o", label=detector)
    ax.set_xscale("log")
    ax.set_xlabel("training step")
    ax.set_ylabel("score")
    ax.set_title(f"pythia-70m L{layer}H{head} across training")
    ax.legend()
    display(fig)
    # check: the final model's induction head was not one at step 512, and in-context learning came with it
    assert across.loc["step143000", "induction"] >= 0.3 > across.loc["step512", "induction"]
    assert final["loss, second copy"] < pythia_report.loc["step512", "loss, second copy"]
"""),
    md("""
## GPT-NeoX-20B in fp16 with flash-attention

20.6 B parameters: 41 GB of fp16 weights. On one 80 GB GPU, load it in fp16 with the `flash_attention_2`
backend (fused kernels; attention patterns are still computed, eagerly, for the layers a hook or
`run_with_cache` asks for). On smaller GPUs, `device_map="auto"` spreads the layers over GPUs, CPU and disk.
"""),
    code("""
def gpu_memory_gb():
    return torch.cuda.get_device_properties(0).total_memory / 2**30 if torch.cuda.is_available() else 0.0

HAS_FLASH = importlib.util.find_spec("flash_attn") is not None
ready = HUB and GPU and HAS_FLASH and gpu_memory_gb() >= 45
if ready:
    neox = workbench.load("EleutherAI/gpt-neox-20b", dtype="float16", device="cuda",
                          attn_implementation="flash_attention_2")
    print(neox.generate("GPT-NeoX-20B is a 20 billion parameter", max_new_tokens=30))
    logits, cache = neox.run_with_cache("The capital of France is", names_filter=lambda n: n.endswith("hook_pattern"))
    print("top prediction:", repr(neox.tokenizer.decode([int(logits[0, -1].argmax())])))
    assert neox.config.num_hidden_layers == 44 and next(neox.parameters()).dtype == torch.float16
    assert neox.tokenizer.decode([int(logits[0, -1].argmax())]).strip() == "Paris"
else:
    missing = [what for what, ok in [("the Hugging Face Hub", HUB), ("a CUDA GPU", GPU),
                                     ("the flash-attn package (pip install -e '.[gpu]')", HAS_FLASH),
                                     (">= 45 GB of GPU memory", gpu_memory_gb() >= 45)] if not ok]
    print("SKIPPING GPT-NeoX-20B: needs " + ", ".join(missing) + ".")
"""),
    md("""
Without a big GPU, the same backend switch on the demo model shows what changes: fp16 weights and fused
attention kernels give the same predictions as fp32 (run it on any CUDA GPU; `flash_attention_2` needs
`flash-attn`, otherwise `sdpa` is used).
"""),
    code("""
if GPU:
    backend = "flash_attention_2" if HAS_FLASH else "sdpa"
    fast = workbench.load("demo", dtype="float16", device="cuda", attn_implementation=backend)
    text = "And God said, Let there be light: and there was light."
    ids = demo.to_tokens(text)
    ref = demo(ids).logits[0].float()
    got = fast(ids.cuda()).logits[0].float().cpu()
    print(f"{backend} fp16 vs fp32 CPU: max |logit diff| {float((got - ref).abs().max()):.4f}")
    assert (got.argmax(-1) == ref.argmax(-1)).float().mean() > 0.9
else:
    print("SKIPPING the GPU comparison: no CUDA GPU.")
"""),
]


NOTEBOOKS = {
    "01_quickstart.ipynb": QUICKSTART,
    "02_residual_stream.ipynb": RESIDUAL,
    "03_induction_heads.ipynb": INDUCTION,
    "04_activation_patching.ipynb": PATCHING,
    "05_fewshot_eval.ipynb": EVAL,
    "06_pythia_and_neox20b.ipynb": PYTHIA,
}


def build(name: str, cells: list[tuple[str, str]], model: str = "demo") -> nbformat.NotebookNode:
    """One notebook, without outputs; cell ids are stable (`<notebook>-<index>`) so rebuilds diff cleanly."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    nb.metadata["language_info"] = {"name": "python", "pygments_lexer": "ipython3"}
    stem = name.split("_")[0]
    for i, (kind, source) in enumerate(cells):
        if model != "demo":
            for call in ("workbench.load(", "evaluate("):
                source = source.replace(f'{call}"demo"', f"{call}{model!r}")
        cell = nbformat.v4.new_markdown_cell(source) if kind == "markdown" else nbformat.v4.new_code_cell(source)
        cell["id"] = f"nb{stem}-{i:02d}"
        nb.cells.append(cell)
    nbformat.validate(nb)
    return nb


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=HERE, help="directory to write the notebooks to")
    parser.add_argument("--model", default="demo", help="checkpoint the notebooks load instead of 'demo'")
    parser.add_argument("--check", action="store_true", help="only compare with the notebooks in --out")
    args = parser.parse_args(argv)
    stale = []
    for name, cells in NOTEBOOKS.items():
        text = nbformat.writes(build(name, cells, args.model)) + "\n"
        path = args.out / name
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(name)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    if stale:
        print("out of date (run python notebooks/build.py):", ", ".join(stale), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
