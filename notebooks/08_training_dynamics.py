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
# # 08 · Induction heads form during training
#
# The Pythia suite publishes 154 checkpoints per model as hub revisions (`step0` ... `step143000`) so that
# researchers can watch behaviour form. The demo model ships its own training checkpoints the same way, so the
# whole workflow runs offline:
#
# 1. list the revisions and sweep the head detectors over them (one checkpoint in memory at a time, results
#    cached on disk: a rerun or an interrupted sweep computes only what is missing),
# 2. watch the induction and previous-token scores per head, and the in-context-learning score, change across
#    steps, next to the training loss,
# 3. point the same code at `EleutherAI/pythia-70m-deduped` (where the hub is reachable).
#
# The demo's recipe changes its data mix at two steps (the phase boundaries, dashed lines): from step 2,400 half
# the rows repeat a span of Bible text, which is when induction starts to pay.

# %%
import pandas as pd

import workbench
from workbench.dynamics import plot_head_scores, plot_metric_vs_step
from workbench.training.recipes import recipe

PHASES = [step for step, _ in recipe("demo")["data"].mix_schedule]
revisions = workbench.revisions("demo")
print(revisions)
print("phase boundaries:", PHASES)

# %% [markdown]
# ## Head detector scores across training
#
# `analysis="heads"` runs the three head detectors (previous-token, duplicate-token, induction) on repeated
# random tokens at every revision; the frame has one row per (revision, detector, head).

# %%
heads = workbench.sweep("demo", analysis="heads")
heads.head()

# %%
plot_head_scores(heads, "induction", phases=PHASES)

# %%
plot_head_scores(heads, "previous_token", phases=PHASES)

# %%
best = heads.groupby(["step", "detector"])["score"].max().unstack()
best

# %% [markdown]
# The best induction score per checkpoint, with the step at which it first crosses 0.3 (interpolated linearly
# between the two checkpoints either side):

# %%
induction = best["induction"]
above = induction[induction >= 0.3]
first = above.index[0]
before = induction.index[list(induction.index).index(first) - 1]
cross = before + (0.3 - induction[before]) / (induction[first] - induction[before]) * (first - before)
print(f"induction score {induction.iloc[0]:.3f} at step 0, {induction.iloc[-1]:.3f} at step {induction.index[-1]}")
print(f"it crosses 0.3 at about step {cross:.0f} (between the checkpoints at {before} and {first})")
assert induction.iloc[0] < 0.1 and induction.iloc[-1] >= 0.5

# %%
plot_metric_vs_step(heads[heads["detector"] == "induction"], "score", by=["layer", "head"], phases=PHASES,
                    title="induction score per head")

# %% [markdown]
# ## In-context learning and the training loss
#
# The in-context-learning score is the loss on the second copy of a repeated random sequence minus the loss on
# the first (nats per token): 0 for a model that cannot copy, strongly negative once induction heads work.

# %%
icl = workbench.sweep("demo", analysis="icl")
icl

# %%
plot_metric_vs_step(icl, "icl_score", phases=PHASES, title="in-context learning score (second copy - first)")

# %%
log = pd.read_csv(workbench.demo_path() / "training_log.csv")
log["smoothed loss"] = log["loss"].rolling(50, min_periods=1).mean()
plot_metric_vs_step(log, "smoothed loss", phases=PHASES, title="training loss (50-step mean)")

# %% [markdown]
# ## An eval across checkpoints, against Pythia's published curves
#
# `analysis="eval"` runs a benchmark task at every revision (here PIQA, first 200 questions, from the local
# data). `plot_vs_pythia` draws it against the per-checkpoint results EleutherAI published for the Pythia
# models, with tokens seen on x as the Pythia paper plots them. The demo is a 1.8 M-parameter Bible model: it
# stays near chance (0.5), where Pythia models were after their first few hundred million tokens.

# %%
from workbench.dynamics import plot_vs_pythia

piqa = workbench.sweep("demo", analysis="eval", task="piqa", limit=200)
plot_vs_pythia(piqa, "acc", "piqa", label="demo (first 200 questions)")

# %% [markdown]
# ## The same sweep on Pythia
#
# The sweep code does not change for a hub model: revisions are hub branches. This needs the hub (or those
# revisions already in the local huggingface_hub cache); offline it is skipped with a message. EleutherAI's
# pythia issue #205 reports that some `step*` branches serve the final weights: the sweep warns when two
# revisions' weights are identical rather than drawing a flat curve.

# %%
from workbench.hub import hub_reachable

PYTHIA = "EleutherAI/pythia-70m-deduped"
if hub_reachable():
    pythia = workbench.sweep(PYTHIA, ["step0", "step512", "step1000", "step2000", "step4000", "step8000",
                                      "step16000", "step143000"], analysis="heads")
    print(pythia.groupby(["step", "detector"])["score"].max().unstack())
else:
    print(f"skipped: the Hugging Face Hub is not reachable from here, so {PYTHIA}'s revisions can't be fetched")
