"""Head detectors: known answers on forced attention, brute-force loops on a random model, and transformers."""

from __future__ import annotations

import math
from types import SimpleNamespace

import pandas as pd
import pytest
import torch

from workbench.analysis.heads import (
    DETECTORS,
    detector_scores,
    duplicate_token_scores,
    head_detector_table,
    induction_scores,
    previous_token_scores,
    repeated_random_tokens,
    repeated_sequence_losses,
    scores_frame,
)
from tests.helpers import tiny_model
from workbench.model import GPTNeoXForCausalLM

SEQ = 12
VOCAB = 1009  # large enough that a random span of SEQ tokens rarely repeats a token


class ForcedAttention(torch.nn.Module):
    """A stand-in model whose attention patterns are built by hand, so every score is known exactly.

    Layer 0: head 0 attends to the previous token (position 0 to itself); head 1 is uniform over the causal prefix.
    Layer 1: head 0 is an induction head (second copy -> the token after the earlier occurrence, else position 0);
    head 1 is a duplicate-token head (second copy -> the same token earlier, else itself).
    Its logits copy perfectly: in the second copy they put all mass on the token `seq_len - 1` back.
    """

    def __init__(self, seq_len: int, vocab: int) -> None:
        super().__init__()
        self.config = SimpleNamespace(vocab_size=vocab, num_hidden_layers=2)
        self.seq_len = seq_len
        self.dummy = torch.nn.Parameter(torch.zeros(1))

    def forward(self, tokens: torch.Tensor, output_attentions: bool = False):
        b, n = tokens.shape
        second = n - self.seq_len
        prev = torch.zeros(n, n)
        prev[0, 0] = 1
        prev[torch.arange(1, n), torch.arange(0, n - 1)] = 1
        uniform = torch.tril(torch.ones(n, n))
        uniform = uniform / uniform.sum(-1, keepdim=True)
        induction = torch.zeros(n, n)
        duplicate = torch.eye(n)
        induction[:second, 0] = 1
        for q in range(second, n):
            induction[q, q - self.seq_len + 1] = 1
            duplicate[q] = 0
            duplicate[q, q - self.seq_len] = 1
        layers = (torch.stack([prev, uniform]), torch.stack([induction, duplicate]))
        attentions = tuple(p.expand(b, 2, n, n) for p in layers)  # per layer [b, h, q, k]
        logits = torch.zeros(b, n, self.config.vocab_size)
        for q in range(second - 1, n - 1):  # prediction of position q + 1, in the second copy
            logits[torch.arange(b), q, tokens[:, q + 1 - self.seq_len]] = 100.0
        return SimpleNamespace(attentions=attentions if output_attentions else None, logits=logits)

    def run_with_cache(self, tokens: torch.Tensor, names_filter=None, attention_mask=None, stop_at_layer=None):
        """The one hook-API call the detectors make: the patterns under their cache keys."""
        out = self(tokens, output_attentions=True)
        return out.logits, {("pattern", layer): a for layer, a in enumerate(out.attentions)}


def test_forced_attention_scores_are_the_known_answers():
    model = ForcedAttention(SEQ, VOCAB)
    prev = previous_token_scores(model, batch=3, seq_len=SEQ, seed=5)
    ind = induction_scores(model, batch=3, seq_len=SEQ, seed=5)
    dup = duplicate_token_scores(model, batch=3, seq_len=SEQ, seed=5)
    n = 1 + 2 * SEQ
    # uniform head: attention 1/(q+1) on q-1, averaged over q = 1..n-1
    uniform_prev = sum(1 / (q + 1) for q in range(1, n)) / (n - 1)
    uniform_copy = sum(1 / (q + 1) for q in range(n - SEQ, n)) / SEQ
    assert prev[0, 0] == pytest.approx(1.0)
    assert prev[0, 1] == pytest.approx(uniform_prev)
    assert ind[1, 0] == pytest.approx(1.0) and dup[1, 0] == pytest.approx(0.0)
    assert dup[1, 1] == pytest.approx(1.0) and ind[1, 1] == pytest.approx(0.0)
    assert ind[0, 1] == pytest.approx(uniform_copy) and dup[0, 1] == pytest.approx(uniform_copy)
    assert ind[0, 0] == pytest.approx(0.0)  # previous-token head: q-1 is never q-SEQ+1 for SEQ > 2


def test_repeated_sequence_losses_of_a_perfect_copier():
    first, second = repeated_sequence_losses(ForcedAttention(SEQ, VOCAB), batch=2, seq_len=SEQ)
    assert first == pytest.approx(math.log(VOCAB), abs=1e-5)  # zero logits: uniform over the vocabulary
    assert second < 1e-6


def _random_model(seed: int = 0) -> GPTNeoXForCausalLM:
    model = tiny_model(seed=seed, std=None, vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2,
                       intermediate_size=64, max_position_embeddings=64, attn_implementation="eager")
    # sharpen the attention so heads differ from one another (initial weights give nearly uniform patterns)
    with torch.no_grad():
        for layer in model.gpt_neox.layers:
            layer.attention.query_key_value.weight.mul_(8)
    return model


def test_scores_match_a_brute_force_loop_on_a_random_model():
    model = _random_model()
    tokens = repeated_random_tokens(batch=2, seq_len=SEQ, vocab_size=VOCAB, seed=4)
    assert all(len(set(row[1 : 1 + SEQ].tolist())) == SEQ for row in tokens)  # each earlier occurrence is unique
    with torch.no_grad():
        attentions = model(tokens, output_attentions=True).attentions
    n_layers, n_heads, n = len(attentions), attentions[0].shape[1], tokens.shape[1]
    expected = {d: torch.zeros(n_layers, n_heads) for d in DETECTORS}
    for layer in range(n_layers):
        for head in range(n_heads):
            prev = [attentions[layer][b, head, q, q - 1] for b in range(2) for q in range(1, n)]
            dup, ind = [], []
            for b in range(2):
                for q in range(n - SEQ, n):
                    # find the earlier occurrence of tokens[b, q] by search, not by offset arithmetic
                    earlier = [k for k in range(1, n - SEQ) if tokens[b, k] == tokens[b, q]][0]
                    dup.append(attentions[layer][b, head, q, earlier])
                    ind.append(attentions[layer][b, head, q, earlier + 1])
            expected["previous_token"][layer, head] = sum(prev) / len(prev)
            expected["duplicate_token"][layer, head] = sum(dup) / len(dup)
            expected["induction"][layer, head] = sum(ind) / len(ind)
    got = {
        "previous_token": previous_token_scores(model, batch=2, seq_len=SEQ, seed=4),
        "duplicate_token": duplicate_token_scores(model, batch=2, seq_len=SEQ, seed=4),
        "induction": induction_scores(model, batch=2, seq_len=SEQ, seed=4),
    }
    for name in DETECTORS:
        torch.testing.assert_close(got[name], expected[name], atol=1e-6, rtol=1e-5)
    assert expected["previous_token"].std() > 1e-3  # the heads really differ, so the comparison means something


def test_scores_agree_with_transformers_attention(tmp_path):
    transformers = pytest.importorskip("transformers")
    model = _random_model(seed=1)
    model.save_pretrained(tmp_path)
    reference = transformers.GPTNeoXForCausalLM.from_pretrained(tmp_path, attn_implementation="eager").eval()
    tokens = repeated_random_tokens(3, SEQ, VOCAB, seed=7)  # what the detectors draw for seed 7
    with torch.no_grad():
        theirs = detector_scores(torch.stack(reference(tokens, output_attentions=True).attentions), tokens, SEQ)
    for name, fn in zip(DETECTORS, (previous_token_scores, duplicate_token_scores, induction_scores)):
        torch.testing.assert_close(fn(model, batch=3, seq_len=SEQ, seed=7), theirs[name], atol=1e-5, rtol=1e-4)


def test_tidy_table_matches_the_tensors():
    model = _random_model()
    table = head_detector_table(model, batch=2, seq_len=SEQ, seed=0)
    assert list(table.columns) == ["detector", "layer", "head", "score"]
    assert len(table) == 3 * 2 * 4
    ind = induction_scores(model, batch=2, seq_len=SEQ, seed=0)
    rows = table[table.detector == "induction"].set_index(["layer", "head"])["score"]
    assert rows[(1, 2)] == pytest.approx(float(ind[1, 2]))
    frame = scores_frame(ind)
    assert isinstance(frame, pd.DataFrame) and list(frame.columns) == ["layer", "head", "score"]
    assert frame.score.tolist() == pytest.approx(ind.reshape(-1).tolist())


def test_bad_input():
    with pytest.raises(ValueError, match="seq_len"):
        repeated_random_tokens(batch=1, seq_len=1)
    with pytest.raises(ValueError, match="random-token range"):
        repeated_random_tokens(vocab_size=3)
    tokens = torch.randint(2, 50, (1, 1 + 2 * SEQ))  # not a repeated sequence
    with pytest.raises(ValueError, match="not \\[prefix\\] \\+ r \\+ r"):
        detector_scores(torch.zeros(1, 1, 1, tokens.shape[1], tokens.shape[1]), tokens, SEQ)
    with pytest.raises(ValueError, match="layer, head"):
        scores_frame(torch.zeros(3))
    assert repeated_random_tokens(2, 5, seed=1).equal(repeated_random_tokens(2, 5, seed=1))
