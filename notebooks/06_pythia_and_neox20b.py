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
# # 06 · Pythia across training, and GPT-NeoX-20B on a GPU
#
# The Pythia suite publishes 154 checkpoints of every model (`step0`, `step1`, ..., `step143000`) as hub
# revisions, which makes it the place to watch circuits form. `workbench.load(name, revision="step3000")`
# fetches one through the huggingface_hub cache (so `HF_HUB_OFFLINE=1` works from the cache).
#
# Two parts need things a laptop may not have, and skip with a message otherwise:
#
# - **Pythia checkpoints** need the Hugging Face Hub (or a warm cache);
# - **GPT-NeoX-20B** needs a CUDA GPU with ~45 GB of memory (fp16 weights are 41 GB) and `flash-attn`.
#
# The comparison code runs offline on the demo model first, so the notebook is useful without either.

# %%
import importlib.util

import pandas as pd
import torch
from huggingface_hub.constants import HF_HUB_OFFLINE

import workbench
from workbench.analysis import head_detector_table, repeated_sequence_losses
from workbench.figures import new_figure
from workbench.hub import HubUnavailableError, hub_reachable

torch.set_grad_enabled(False)

HUB = not HF_HUB_OFFLINE and hub_reachable()
GPU = torch.cuda.is_available()
print(f"hub reachable: {HUB}; CUDA GPU: {GPU}" + (f" ({torch.cuda.get_device_name(0)})" if GPU else ""))


# %% [markdown]
# ## A head across checkpoints: the comparison, offline
#
# `head_report` scores every head of each model with the detectors and measures in-context learning on
# repeated random tokens. We run it on the demo model and on the same architecture freshly initialised, i.e.
# the demo's "step 0": its induction head does not exist yet.

# %%
def head_report(models: dict) -> pd.DataFrame:
    """Per model: the best induction and previous-token heads, and the loss on both copies of a repeated span."""
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
    """One head's three detector scores in every model."""
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

# %%
layer, head = (int(x) for x in offline.loc["demo, trained", "induction head"][1:].split("H"))
head_scores({"demo, initialisation": step0, "demo, trained": demo}, layer, head).round(3)

# %%
# check: training made the induction head, and with it in-context learning
trained, init = offline.loc["demo, trained"], offline.loc["demo, initialisation"]
assert trained["induction score"] >= 0.5 > init["induction score"] + 0.3
assert trained["loss, second copy"] < 0.8 * trained["loss, first copy"]
assert init["loss, second copy"] > 0.8 * init["loss, first copy"]

# %% [markdown]
# The demo's training log records the best induction score at every evaluation, so we can see *when* the head
# formed: the same question the Pythia checkpoints answer below for a real model.

# %%
log_file = workbench.demo_path() / "training_log.csv"
curve = None
if log_file.is_file():
    log = pd.read_csv(log_file)
    curve = log.dropna(subset=["induction_max"])[["step", "val_loss", "induction_max", "induction_head"]]
    fig = new_figure(6, 2.8)  # a PNG when it is the cell's value
    ax = fig.axes[0]
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

# %%
# check: the log ends where the checkpoint is (its last recorded score is the trained model's)
if curve is not None:
    assert abs(curve["induction_max"].iloc[-1] - offline.loc["demo, trained", "induction score"]) < 0.2
    assert curve["induction_max"].iloc[-1] > curve["induction_max"].iloc[0]

# %% [markdown]
# ## Pythia checkpoints from the hub
#
# The same report on `EleutherAI/pythia-70m` at a few training steps. Each revision is a separate download
# (~160 MB) kept in the huggingface_hub cache. The loading call is all it takes:
#
# ```python
# model = workbench.load("EleutherAI/pythia-70m", revision="step3000")
# ```

# %%
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

# %%
if HUB:
    final = pythia_report.loc["step143000"]
    layer, head = (int(x) for x in final["induction head"][1:].split("H"))
    across = head_scores(pythia, layer, head)
    fig = new_figure(6, 2.8)  # a PNG when it is the cell's value
    ax = fig.axes[0]
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


# %% [markdown]
# ## GPT-NeoX-20B in fp16 with flash-attention
#
# 20.6 B parameters: 41 GB of fp16 weights. On one 80 GB GPU, load it in fp16 with the `flash_attention_2`
# backend (fused kernels; attention patterns are still computed, eagerly, for the layers a hook or
# `run_with_cache` asks for). On smaller GPUs, `device_map="auto"` spreads the layers over GPUs, CPU and disk.

# %%
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

# %% [markdown]
# Without a big GPU, the same backend switch on the demo model shows what changes: fp16 weights and fused
# attention kernels give the same predictions as fp32 (run it on any CUDA GPU; `flash_attention_2` needs
# `flash-attn`, otherwise `sdpa` is used).

# %%
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
