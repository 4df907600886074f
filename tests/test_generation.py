"""`model.generate`: greedy decoding token-identical to transformers' `generate`; reproducible sampling."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")

import workbench  # noqa: E402

VOCAB = 512
PAD, EOS = 1, 2


@pytest.fixture(scope="module", params=[{}, {"use_parallel_residual": False, "rotary_pct": 1.0}],
                ids=["pythia", "sequential"])
def pair(request, tmp_path_factory):
    """(transformers model, our model) loaded from one randomly initialised transformers checkpoint."""
    directory = tmp_path_factory.mktemp("gen")
    rope = {"rope_type": "default", "rope_theta": 10000.0,
            "partial_rotary_factor": request.param.get("rotary_pct", 0.25)}
    config = transformers.GPTNeoXConfig(
        vocab_size=VOCAB, hidden_size=64, num_hidden_layers=2, num_attention_heads=4, intermediate_size=128,
        max_position_embeddings=128, pad_token_id=PAD, eos_token_id=EOS, bos_token_id=0, rope_parameters=rope,
        use_parallel_residual=request.param.get("use_parallel_residual", True),
    )
    torch.manual_seed(0)
    model = transformers.GPTNeoXForCausalLM(config)
    with torch.no_grad():  # larger weights than the default init: confident, varied predictions, no argmax ties
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.3)
    model.save_pretrained(directory)
    hf = transformers.GPTNeoXForCausalLM.from_pretrained(directory).eval()
    return hf, workbench.GPTNeoXForCausalLM.from_pretrained(directory)


def left_padded_prompts() -> tuple[torch.Tensor, torch.Tensor]:
    """3 prompts of 9, 5 and 2 tokens, left-padded to 9. Returns input_ids and attention_mask `[3, 9]`."""
    gen = torch.Generator().manual_seed(7)
    ids = torch.randint(3, VOCAB, (3, 9), generator=gen)
    mask = torch.ones_like(ids)
    mask[1, :4] = 0
    mask[2, :7] = 0
    ids[mask == 0] = PAD
    return ids, mask


def hf_greedy(hf, ids, mask, new_tokens, **kwargs) -> torch.Tensor:
    return hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, do_sample=False,
                       pad_token_id=PAD, **kwargs)


def test_greedy_left_padded_batch_matches_transformers(pair):
    hf, ours = pair
    ids, mask = left_padded_prompts()
    expected = hf_greedy(hf, ids, mask, 32, eos_token_id=EOS)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=32)
    assert got.shape == expected.shape
    assert torch.equal(got, expected)
    assert len(set(got[0, 9:].tolist())) > 3  # a real continuation, not one token repeated


def test_each_row_as_generated_alone(pair):
    """Padding does not change a row's continuation."""
    _, ours = pair
    ids, mask = left_padded_prompts()
    batch = ours.generate(ids, attention_mask=mask, max_new_tokens=12)
    for row in range(3):
        alone = ours.generate(ids[row : row + 1, mask[row].bool()], max_new_tokens=12)
        assert torch.equal(batch[row, 9:], alone[0, -12:])


def test_per_row_stop_at_eos_matches_transformers(pair):
    """Choose as EOS a token that row 0 emits mid-way: that row stops and is padded, others go on."""
    hf, ours = pair
    ids, mask = left_padded_prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[])
    eos = int(free[0, 9 + 4])
    expected = hf_greedy(hf, ids, mask, 16, eos_token_id=eos)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=PAD)
    assert torch.equal(got, expected)
    first = (got[0, 9:] == eos).nonzero()[0, 0].item() + 9
    assert (got[0, first + 1 :] == PAD).all()


def test_max_length_counts_the_prompt(pair):
    hf, ours = pair
    ids, mask = left_padded_prompts()
    got = ours.generate(ids, attention_mask=mask, max_length=20)
    expected = hf.generate(ids, attention_mask=mask, max_length=20, do_sample=False, pad_token_id=PAD)
    assert got.shape[1] <= 20 and torch.equal(got, expected)


def test_sampling_is_reproducible_with_a_seed(pair):
    _, ours = pair
    ids, mask = left_padded_prompts()
    kwargs = dict(attention_mask=mask, max_new_tokens=16, do_sample=True, temperature=1.5, eos_token_id=[])
    a = ours.generate(ids, seed=123, **kwargs)
    b = ours.generate(ids, seed=123, **kwargs)
    c = ours.generate(ids, seed=124, **kwargs)
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert torch.equal(a[:, :9], ids)


def test_top_k_one_is_greedy(pair):
    _, ours = pair
    ids, mask = left_padded_prompts()
    greedy = ours.generate(ids, attention_mask=mask, max_new_tokens=10)
    sampled = ours.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=True, top_k=1, seed=0)
    assert torch.equal(greedy, sampled)


def test_right_padded_prompts_are_refused(pair):
    _, ours = pair
    ids, mask = left_padded_prompts()
    with pytest.raises(ValueError, match="right-padded"):
        ours.generate(ids, attention_mask=mask.flip(-1), max_new_tokens=2)


@pytest.mark.parametrize("kwargs, match", [
    (dict(temperature=0.0), r"temperature must be > 0, got 0.0"),
    (dict(top_p=1.5), r"top_p must be in \(0, 1\], got 1.5"),
    (dict(top_k=0), r"top_k must be a positive integer or None, got 0"),
])
def test_bad_sampling_arguments(pair, kwargs, match):
    _, ours = pair
    with pytest.raises(ValueError, match=match):
        ours.generate(torch.tensor([[5, 6]]), max_new_tokens=2, do_sample=True, **kwargs)


# ---------------------------------------------------------------------------------------------------- stop strings


class OneCharTokenizer:
    """A stand-in tokenizer for the random models: token i decodes to one character of `alphabet` (none is
    special: the random models emit PAD, EOS and BOS ids as any other)."""

    def __init__(self, alphabet: str) -> None:
        self.alphabet = alphabet

    def decode(self, ids, skip_special_tokens: bool = False) -> str:
        return "".join(self.alphabet[i % len(self.alphabet)] for i in ids)


def first_stop(tokenizer, continuation: list[int], stops: list[str]) -> int | None:
    """The number of tokens after which the decoded continuation first contains a stop string (decoding every
    prefix in full, the plain definition), or None."""
    for n in range(1, len(continuation) + 1):
        if any(s in tokenizer.decode(continuation[:n], skip_special_tokens=True) for s in stops):
            return n
    return None


@pytest.mark.parametrize("alphabet", ["abcdefghijklmnopqrstuvwxyz", "αβγδεζηθικλμνξοπρστυφχψω"], ids=["ascii", "greek"])
@pytest.mark.parametrize("which", ["one_token", "three_tokens"])
def test_stop_strings_stop_each_row_where_its_text_first_contains_one(pair, alphabet, which):
    """Rows stop (and are padded) at the first token after which their decoded continuation holds a stop string;
    stop strings spanning several tokens, and multi-byte characters (the greek alphabet), included."""
    _, ours = pair
    tok = OneCharTokenizer(alphabet)
    ids, mask = left_padded_prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=24, eos_token_id=[])[:, 9:].tolist()
    texts = [tok.decode(row, skip_special_tokens=True) for row in free]
    stops = [texts[0][6]] if which == "one_token" else [texts[1][9:12], texts[2][4:7]]
    expected = [first_stop(tok, row, stops) for row in free]
    assert sum(n is not None for n in expected) >= (1 if which == "one_token" else 2)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=24, eos_token_id=[], pad_token_id=PAD,
                        stop_strings=stops, tokenizer=tok)
    assert got.shape[1] == 9 + max(n or 24 for n in expected)  # generation ends when every row has stopped
    for r, n in enumerate(n or 24 for n in expected):
        assert got[r, 9 : 9 + n].tolist() == free[r][:n] and (got[r, 9 + n :] == PAD).all()


def test_stop_strings_with_eos_and_max_new_tokens(pair):
    """EOS and the token limit still stop rows that no stop string stops."""
    _, ours = pair
    tok = OneCharTokenizer("abcdefghijklmnopqrstuvwxyz")
    ids, mask = left_padded_prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[])
    eos = int(free[0, 9 + 3])
    stops = [tok.decode(free[1, 9 + 5 : 9 + 6].tolist())]
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=PAD,
                        stop_strings=stops, tokenizer=tok)
    by_eos = ours.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=eos, pad_token_id=PAD)
    for r in range(3):
        n = first_stop(tok, by_eos[r, 9:].tolist(), stops)
        if n is None:
            assert torch.equal(got[r, 9:], by_eos[r, 9 : got.shape[1]])
        else:
            assert torch.equal(got[r, 9 : 9 + n], by_eos[r, 9 : 9 + n]) and (got[r, 9 + n :] == PAD).all()


def test_text_output_is_cut_before_the_stop_string(model_dir):
    """String prompts: the continuation ends before the first stop string (lm-eval's `until`), and generation
    stops there instead of running to `max_new_tokens`."""
    from workbench.generation import cut_at_stop

    model = workbench.load(str(model_dir), dtype="float32")
    prompts = ["And God said, Let there be", "In the beginning"]
    free = model.generate(prompts, max_new_tokens=24, return_full_text=False)
    stops = [free[0][8:10], free[1][12:15]]
    got = model.generate(prompts, max_new_tokens=24, return_full_text=False, stop_strings=stops)
    assert got == [cut_at_stop(text, stops) for text in free]
    assert got[0] == free[0][: free[0].index(stops[0])] and all(len(g) < len(f) for g, f in zip(got, free))
    assert model.generate(prompts, max_new_tokens=24, stop_strings=stops) == [p + g for p, g in zip(prompts, got)]
    ids = model.tokenizer(prompts[:1], return_tensors="pt")["input_ids"]
    assert model.generate(ids, max_new_tokens=24, stop_strings=stops[:1]).shape[1] < ids.shape[1] + 24
    assert cut_at_stop("a.b,c", [",", "", "."]) == "a" == "a.b,c".split(",")[0].split(".")[0]
