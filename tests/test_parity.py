"""Parity with transformers' GPT-NeoX on randomly initialised checkpoints written by its `save_pretrained`.

Every comparison loads the same directory into both implementations and runs them on the same inputs.
transformers 5.x does not derive position_ids from the attention mask, so left-padded comparisons pass it
the positions explicitly, and only real (non-pad) positions are compared.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")

import workbench  # noqa: E402

VOCAB = 512
PAD = 1
FP32_TOL = 1e-5

# Config variants of the acceptance list; each is a tiny model (2 layers, hidden 48-64).
VARIANTS = {
    "pythia": dict(),
    "sequential": dict(use_parallel_residual=False),
    "rotary_full": dict(rotary_pct=1.0),
    "no_attention_bias": dict(attention_bias=False),
    "tied": dict(tie_word_embeddings=True),
    "rope_linear": dict(rope_scaling={"rope_type": "linear", "factor": 2.0}),
    "rope_dynamic": dict(rope_scaling={"rope_type": "dynamic", "factor": 2.0}),
    "six_heads": dict(hidden_size=48, num_attention_heads=6, rotary_pct=0.5),
}


def hf_config(**overrides) -> "transformers.GPTNeoXConfig":
    """A tiny transformers config; `rope_scaling` and `rotary_pct` go into 5.x's rope_parameters."""
    rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": overrides.pop("rotary_pct", 0.25)}
    scaling = overrides.pop("rope_scaling", None)
    if scaling:
        rope.update(scaling)
    kwargs = dict(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=32, pad_token_id=PAD, rope_parameters=rope,
    )
    kwargs.update(overrides)
    return transformers.GPTNeoXConfig(**kwargs)


def randomise(model: torch.nn.Module, seed: int) -> None:
    """Spread every parameter (layer norms and biases included) so that no term is trivially zero or one."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            noise = torch.randn(p.shape, generator=gen) * 0.1
            p.copy_(1.0 + noise if name.endswith("layernorm.weight") or name.endswith("norm.weight") else noise * 2)


def write_checkpoint(directory: Path, hf_cls_name: str, seed: int = 0, attn: str = "eager", **overrides) -> Path:
    """Save a randomly initialised transformers model of class `hf_cls_name` into `directory`."""
    torch.manual_seed(seed)
    model = getattr(transformers, hf_cls_name)(hf_config(**overrides))
    randomise(model, seed)
    model.save_pretrained(directory)
    return directory


def load_hf(directory: Path, hf_cls_name: str, attn: str) -> torch.nn.Module:
    return getattr(transformers, hf_cls_name).from_pretrained(directory, attn_implementation=attn).eval()


def load_ours(directory: Path, cls_name: str, attn: str) -> torch.nn.Module:
    return getattr(workbench, cls_name).from_pretrained(directory, attn_implementation=attn)


def padded_batch(side: str, seed: int = 1, length: int = 12) -> tuple[torch.Tensor, torch.Tensor]:
    """A batch of 3 rows of lengths `length`, length-4 and length-7, padded with PAD on `side`.

    Returns: input_ids `[3, length]`, attention_mask `[3, length]` (1 for real tokens).
    """
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, VOCAB, (3, length), generator=gen)
    mask = torch.ones(3, length, dtype=torch.long)
    for row, n_pad in ((1, 4), (2, 7)):
        if side == "left":
            mask[row, :n_pad] = 0
        else:
            mask[row, length - n_pad:] = 0
    ids[mask == 0] = PAD
    return ids, mask


def positions_from_mask(mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens (what transformers' generate passes for left padding)."""
    return (mask.cumsum(-1) - 1).clamp(min=0)


def max_diff(a: torch.Tensor, b: torch.Tensor, keep: torch.Tensor | None = None) -> float:
    """Largest absolute difference, over positions where `keep` `[b, p]` is true (all if None)."""
    if keep is not None:
        a, b = a[keep.bool()], b[keep.bool()]
    return (a.float() - b.float()).abs().max().item()


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Lazily written causal-LM checkpoints, one per variant, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("parity")
    made: dict[str, Path] = {}

    def get(variant: str) -> Path:
        if variant not in made:
            made[variant] = write_checkpoint(root / variant, "GPTNeoXForCausalLM", seed=len(made), **VARIANTS[variant])
        return made[variant]

    return get


@pytest.fixture(scope="module")
def models(checkpoints):
    """`models(variant, attn)` -> (transformers model, our model) for a causal-LM variant, loaded once.

    Dynamic rope in transformers keeps state between calls, so that variant always gets a fresh reference.
    """
    loaded: dict[tuple[str, str], tuple] = {}

    def get(variant: str, attn: str):
        key = (variant, attn)
        if key not in loaded or variant == "rope_dynamic":
            directory = checkpoints(variant)
            loaded[key] = (load_hf(directory, "GPTNeoXForCausalLM", attn),
                           load_ours(directory, "GPTNeoXForCausalLM", attn))
        return loaded[key]

    return get


# ---- causal LM over all config variants, both backends, both padding sides ----------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_causal_lm_logits_and_loss(models, variant, attn):
    hf, ours = models(variant, attn)
    # Dynamic NTK only differs from the default beyond max_position_embeddings (32): go past it.
    length = 40 if variant == "rope_dynamic" else 16
    ids = torch.randint(2, VOCAB, (2, length), generator=torch.Generator().manual_seed(5))
    labels = ids.clone()
    labels[0, :3] = -100
    with torch.no_grad():
        expected = hf(ids, labels=labels)
        got = ours(ids, labels=labels)
    assert max_diff(got.logits, expected.logits) <= FP32_TOL
    assert got.loss.item() == pytest.approx(expected.loss.item(), abs=1e-6)


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("variant", ["pythia", "sequential", "six_heads", "rope_linear"])
def test_padded_batch(models, variant, side, attn):
    hf, ours = models(variant, attn)
    ids, mask = padded_batch(side)
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).logits
        got = ours(ids, attention_mask=mask).logits  # ours derives the positions from the mask itself
    assert max_diff(got, expected, keep=mask) <= FP32_TOL
    # Each row equals that row run alone without padding.
    with torch.no_grad():
        for row in range(ids.shape[0]):
            alone = ours(ids[row : row + 1, mask[row].bool()]).logits[0]
            assert max_diff(got[row][mask[row].bool()], alone) <= FP32_TOL


def test_dynamic_rope_beyond_trained_length_each_length(checkpoints):
    """Dynamic NTK rescales with the sequence length; compare several lengths, a fresh reference model for each
    (transformers' dynamic rope keeps state between calls)."""
    directory = checkpoints("rope_dynamic")
    ours = load_ours(directory, "GPTNeoXForCausalLM", "sdpa")
    for length in (20, 33, 48):
        hf = load_hf(directory, "GPTNeoXForCausalLM", "sdpa")
        ids = torch.randint(2, VOCAB, (1, length), generator=torch.Generator().manual_seed(length))
        with torch.no_grad():
            assert max_diff(ours(ids).logits, hf(ids).logits) <= FP32_TOL, length


def test_dynamic_rope_really_scales(checkpoints):
    """Guard against a test that can't fail: beyond the trained length dynamic NTK must differ from no scaling."""
    directory = checkpoints("rope_dynamic")
    ours = load_ours(directory, "GPTNeoXForCausalLM", "sdpa")
    plain_config = workbench.GPTNeoXConfig.from_json_file(directory)
    plain_config.rope_scaling = None
    plain = workbench.GPTNeoXForCausalLM.from_pretrained(directory, config=plain_config)
    ids = torch.randint(2, VOCAB, (1, 40), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        assert max_diff(ours(ids).logits[:, :32], plain(ids).logits[:, :32]) > 1e-4  # whole-sequence base change
        short = ids[:, :20]
        assert max_diff(ours(short).logits, plain(short).logits) <= FP32_TOL


@pytest.mark.parametrize("variant", ["pythia", "sequential"])
def test_hidden_states_and_attentions(checkpoints, variant):
    directory = checkpoints(variant)
    hf = load_hf(directory, "GPTNeoXForCausalLM", "eager")
    ids, mask = padded_batch("left")
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                      output_hidden_states=True, output_attentions=True)
        for attn in ("eager", "sdpa"):  # output_attentions computes probabilities whatever the backend
            got = load_ours(directory, "GPTNeoXForCausalLM", attn)(
                ids, attention_mask=mask, output_hidden_states=True, output_attentions=True
            )
            assert len(got.hidden_states) == len(expected.hidden_states) == 3
            for a, b in zip(got.hidden_states, expected.hidden_states):
                assert max_diff(a, b, keep=mask) <= FP32_TOL
            assert len(got.attentions) == len(expected.attentions) == 2
            query_keep = mask.bool()  # rows of real queries; their probabilities over all keys must agree
            for a, b in zip(got.attentions, expected.attentions):
                assert a.shape == b.shape == (3, 4, 12, 12)
                assert max_diff(a.transpose(1, 2), b.transpose(1, 2), keep=query_keep) <= FP32_TOL


def test_return_dict_false_gives_tuple(models):
    ours = models("pythia", "sdpa")[1]
    ids = torch.randint(2, VOCAB, (1, 8))
    with torch.no_grad():
        out = ours(ids, labels=ids, return_dict=False)
        ref = ours(ids, labels=ids)
    assert isinstance(out, tuple)
    assert torch.equal(out[0], ref.loss) and torch.equal(out[1], ref.logits)


# ---- incremental decoding -------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
@pytest.mark.parametrize("variant", ["pythia", "rope_dynamic", "tied"])
def test_incremental_decoding_equals_full_forward(models, variant, attn):
    """Prefill 6 tokens then feed one at a time with the cache: logits equal the full forward's."""
    ours = models(variant, attn)[1]
    length = 40 if variant == "rope_dynamic" else 14
    ids = torch.randint(2, VOCAB, (2, length), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        full = ours(ids).logits
        out = ours(ids[:, :6], use_cache=True)
        steps = [out.logits]
        for i in range(6, length):
            out = ours(ids[:, i : i + 1], past_key_values=out.past_key_values, use_cache=True)
            steps.append(out.logits)
    if variant == "rope_dynamic":  # dynamic NTK's base depends on the length seen so far; compare within it
        full_prefix = ours(ids[:, :32]).logits
        assert max_diff(torch.cat(steps, 1)[:, :32], full_prefix) <= FP32_TOL
    else:
        assert max_diff(torch.cat(steps, 1), full) <= FP32_TOL


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_incremental_decoding_left_padded(models, attn):
    """A left-padded batch decoded with the cache and an extended mask matches transformers' full forward."""
    hf, ours = models("pythia", attn)
    ids, mask = padded_batch("left")
    nxt = torch.randint(2, VOCAB, (3, 5), generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        out = ours(ids, attention_mask=mask, use_cache=True)
        full_mask = torch.cat([mask, torch.ones(3, 5, dtype=mask.dtype)], 1)
        full = ours(torch.cat([ids, nxt], 1), attention_mask=full_mask).logits
        hf_full = hf(torch.cat([ids, nxt], 1), attention_mask=full_mask,
                     position_ids=positions_from_mask(full_mask)).logits
        cache, cur_mask = out.past_key_values, mask
        for i in range(5):
            cur_mask = torch.cat([cur_mask, torch.ones(3, 1, dtype=mask.dtype)], 1)
            step = ours(nxt[:, i : i + 1], attention_mask=cur_mask, past_key_values=cache, use_cache=True)
            cache = step.past_key_values
            assert max_diff(step.logits[:, 0], full[:, ids.shape[1] + i]) <= FP32_TOL
            assert max_diff(step.logits[:, 0], hf_full[:, ids.shape[1] + i]) <= FP32_TOL


def test_legacy_tuple_cache(models):
    """transformers' legacy (key, value) tuples work as past_key_values."""
    ours = models("pythia", "sdpa")[1]
    ids = torch.randint(2, VOCAB, (2, 10), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        legacy = ours(ids[:, :7], use_cache=True).past_key_values.to_legacy()
        step = ours(ids[:, 7:], past_key_values=legacy).logits
        assert max_diff(step, ours(ids).logits[:, 7:]) <= FP32_TOL


# ---- the task heads -------------------------------------------------------------------------------------
@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_base_model(tmp_path, attn):
    directory = write_checkpoint(tmp_path, "GPTNeoXModel", seed=11)
    hf, ours = load_hf(directory, "GPTNeoXModel", attn), load_ours(directory, "GPTNeoXModel", attn)
    ids, mask = padded_batch("left")
    with torch.no_grad():
        expected = hf(ids, attention_mask=mask, position_ids=positions_from_mask(mask)).last_hidden_state
        got = ours(ids, attention_mask=mask).last_hidden_state
    assert got.shape == (3, 12, 64)
    assert max_diff(got, expected, keep=mask) <= FP32_TOL


SEQ_CLS_CASES = {
    "regression": (1, "regression", lambda g: torch.randn(3, generator=g)),
    "single_label": (3, "single_label_classification", lambda g: torch.randint(0, 3, (3,), generator=g)),
    "multi_label": (3, "multi_label_classification", lambda g: torch.randint(0, 2, (3, 3), generator=g).float()),
    "inferred_single": (3, None, lambda g: torch.randint(0, 3, (3,), generator=g)),
}


@pytest.mark.parametrize("side", ["right", "left"])
@pytest.mark.parametrize("case", list(SEQ_CLS_CASES))
def test_sequence_classification(tmp_path, case, side):
    num_labels, problem_type, make_labels = SEQ_CLS_CASES[case]
    directory = write_checkpoint(tmp_path, "GPTNeoXForSequenceClassification", seed=12, num_labels=num_labels,
                                 problem_type=problem_type)
    labels = make_labels(torch.Generator().manual_seed(2))
    ids, mask = padded_batch(side)
    for attn in ("eager", "sdpa"):
        hf = load_hf(directory, "GPTNeoXForSequenceClassification", attn)
        ours = load_ours(directory, "GPTNeoXForSequenceClassification", attn)
        with torch.no_grad():
            expected = hf(ids, attention_mask=mask, position_ids=positions_from_mask(mask), labels=labels)
            got = ours(ids, attention_mask=mask, labels=labels)
        assert got.logits.shape == (3, num_labels)
        assert max_diff(got.logits, expected.logits) <= FP32_TOL  # pooled at the rightmost non-pad token
        assert got.loss.item() == pytest.approx(expected.loss.item(), abs=1e-6)
        assert ours.config.problem_type == hf.config.problem_type


def test_token_classification(tmp_path):
    directory = write_checkpoint(tmp_path, "GPTNeoXForTokenClassification", seed=13, num_labels=5)
    ids, mask = padded_batch("right")
    labels = torch.randint(0, 5, ids.shape, generator=torch.Generator().manual_seed(1))
    labels[mask == 0] = -100
    for attn in ("eager", "sdpa"):
        hf = load_hf(directory, "GPTNeoXForTokenClassification", attn)
        ours = load_ours(directory, "GPTNeoXForTokenClassification", attn)
        with torch.no_grad():
            expected = hf(ids, attention_mask=mask, labels=labels)
            got = ours(ids, attention_mask=mask, labels=labels)
        assert got.logits.shape == (3, 12, 5)
        assert max_diff(got.logits, expected.logits, keep=mask) <= FP32_TOL
        assert got.loss.item() == pytest.approx(expected.loss.item(), abs=1e-6)


def test_question_answering(tmp_path):
    directory = write_checkpoint(tmp_path, "GPTNeoXForQuestionAnswering", seed=14)
    ids, mask = padded_batch("right")
    start = torch.tensor([1, 3, 40])  # 40 is outside the sequence: ignored by both
    end = torch.tensor([4, 6, 2])
    for attn in ("eager", "sdpa"):
        hf = load_hf(directory, "GPTNeoXForQuestionAnswering", attn)
        ours = load_ours(directory, "GPTNeoXForQuestionAnswering", attn)
        with torch.no_grad():
            # Pad positions enter the QA softmax: give transformers the same (mask-derived) positions.
            expected = hf(ids, attention_mask=mask, position_ids=positions_from_mask(mask),
                          start_positions=start, end_positions=end)
            got = ours(ids, attention_mask=mask, start_positions=start, end_positions=end)
        assert got.start_logits.shape == got.end_logits.shape == (3, 12)
        assert max_diff(got.start_logits, expected.start_logits, keep=mask) <= FP32_TOL
        assert max_diff(got.end_logits, expected.end_logits, keep=mask) <= FP32_TOL
        assert got.loss.item() == pytest.approx(expected.loss.item(), abs=1e-6)


def test_head_over_language_model_checkpoint(checkpoints):
    """A causal-LM checkpoint loads under the base model with the same hidden states (LM head dropped)."""
    directory = checkpoints("pythia")
    hf = load_hf(directory, "GPTNeoXModel", "sdpa")
    ours = load_ours(directory, "GPTNeoXModel", "sdpa")
    ids = torch.randint(2, VOCAB, (2, 9))
    with torch.no_grad():
        assert max_diff(ours(ids).last_hidden_state, hf(ids).last_hidden_state) <= FP32_TOL
