"""`model.generate`: greedy decoding token-identical to transformers' `generate`; reproducible sampling."""

from __future__ import annotations

import pytest
import torch

transformers = pytest.importorskip("transformers", reason="transformers is the reference implementation")

import workbench  # noqa: E402
from workbench import fast_decode  # noqa: E402
from workbench.fast_decode import DecodeStep  # noqa: E402
from workbench.kv_cache import KVCache  # noqa: E402

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


# ----------------------------------------------------------- logits processors and streamers, against transformers


def hf_generate(hf, ids, mask, new_tokens, seed=None, **kwargs) -> torch.Tensor:
    """transformers' generate; sampling draws from torch's global generator, seeded as ours seeds its own."""
    if seed is not None:
        torch.manual_seed(seed)
    return hf.generate(ids, attention_mask=mask, max_new_tokens=new_tokens, pad_token_id=PAD, eos_token_id=EOS,
                       **kwargs)


PROCESSORS = {
    "penalty_1.3": dict(repetition_penalty=1.3),
    "penalty_0.7": dict(repetition_penalty=0.7),  # < 1 favours repeats: rows lock onto a loop
    "ngram_2": dict(no_repeat_ngram_size=2),
    "ngram_3": dict(no_repeat_ngram_size=3),
    "all": dict(repetition_penalty=1.2, no_repeat_ngram_size=3, min_new_tokens=20),
}


@pytest.mark.parametrize("kwargs", PROCESSORS.values(), ids=PROCESSORS)
def test_processors_match_transformers_greedy(pair, kwargs):
    hf, ours = pair
    ids, mask = left_padded_prompts()
    expected = hf_generate(hf, ids, mask, 32, do_sample=False, **kwargs)
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=32, eos_token_id=EOS, **kwargs)
    assert torch.equal(got, expected)
    plain = ours.generate(ids, attention_mask=mask, max_new_tokens=32, eos_token_id=EOS)
    assert not torch.equal(got, plain)  # the processor changed the continuation


@pytest.mark.parametrize("kwargs", [dict(temperature=1.5), dict(temperature=0.8, top_k=20, top_p=0.9),
                                    dict(temperature=1.2, top_p=0.95, repetition_penalty=1.3, no_repeat_ngram_size=2)],
                         ids=["temperature", "top_k_top_p", "with_processors"])
def test_seeded_sampling_matches_transformers(pair, kwargs):
    """Same seed, same draws: transformers seeded through torch.manual_seed, ours through `seed=`. (transformers'
    GenerationConfig samples with top_k=50 unless told otherwise; ours has no top-k by default: top_k=0 is off.)"""
    hf, ours = pair
    ids, mask = left_padded_prompts()
    expected = hf_generate(hf, ids, mask, 24, seed=5, do_sample=True, **{"top_k": 0, **kwargs})
    got = ours.generate(ids, attention_mask=mask, max_new_tokens=24, eos_token_id=EOS, do_sample=True, seed=5, **kwargs)
    assert torch.equal(got, expected)


def test_ngram_ban_holds_in_the_output(pair):
    _, ours = pair
    ids, mask = left_padded_prompts()
    out = ours.generate(ids[:1], max_new_tokens=40, eos_token_id=[], no_repeat_ngram_size=2, repetition_penalty=0.5)
    row = out[0].tolist()
    bigrams = list(zip(row, row[1:]))
    assert len(bigrams) == len(set(bigrams))


def test_min_new_tokens_delays_eos_as_transformers_does(pair):
    """EOS := a token row 0 emits at step 3: without min_new_tokens it stops there; with 10 it cannot."""
    hf, ours = pair
    ids, mask = left_padded_prompts()
    free = ours.generate(ids, attention_mask=mask, max_new_tokens=16, eos_token_id=[])
    eos = int(free[0, 9 + 3])
    kwargs = dict(attention_mask=mask, max_new_tokens=16, pad_token_id=PAD, eos_token_id=eos, min_new_tokens=10)
    got = ours.generate(ids, **kwargs)
    assert torch.equal(got, hf.generate(ids, do_sample=False, **kwargs))
    assert eos not in got[:, 9 : 9 + 10].tolist()[0]


class Recorder:
    """A streamer that records what it is given."""

    def __init__(self) -> None:
        self.calls: list = []

    def put(self, value: torch.Tensor) -> None:
        self.calls.append(value.clone())

    def end(self) -> None:
        self.calls.append("end")


def test_streamer_receives_what_transformers_sends(pair):
    hf, ours = pair
    ids, mask = left_padded_prompts()
    theirs, mine = Recorder(), Recorder()
    hf_generate(hf, ids, mask, 12, do_sample=False, streamer=theirs)
    out = ours.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=EOS, streamer=mine)
    assert len(mine.calls) == len(theirs.calls) == 1 + 12 + 1 and mine.calls[-1] == "end"
    for a, b in zip(mine.calls[:-1], theirs.calls[:-1]):
        assert torch.equal(a, b)
    assert torch.equal(torch.cat([mine.calls[0]] + [t[:, None] for t in mine.calls[1:-1]], 1), out)


def test_transformers_text_streamer_and_ours_print_the_text(model_dir, capsys):
    """Both print generate's text output (here: with a multi-byte character and a stop string in the prompt)."""
    from workbench.generation import TextStreamer

    model = workbench.load(str(model_dir), dtype="float32")
    prompt = "And God said — «Let"
    text = model.generate(prompt, max_new_tokens=30, repetition_penalty=1.3)
    for streamer, printed in [(transformers.TextStreamer(model.tokenizer), text),
                              (TextStreamer(model.tokenizer), text),
                              (TextStreamer(model.tokenizer, skip_prompt=True), text[len(prompt) :])]:
        model.generate(prompt, max_new_tokens=30, repetition_penalty=1.3, streamer=streamer)
        assert capsys.readouterr().out == printed + "\n"
    continuation = text[len(prompt) :]
    stops = [continuation[10:13], "«"]  # the prompt's own "«" does not stop it
    cut = model.generate(prompt, max_new_tokens=30, repetition_penalty=1.3, stop_strings=stops)
    assert len(cut) < len(text)
    model.generate(prompt, max_new_tokens=30, repetition_penalty=1.3, stop_strings=stops,
                   streamer=TextStreamer(model.tokenizer, stop_strings=stops))
    assert capsys.readouterr().out == cut + "\n"


def test_text_streamer_prints_as_tokens_arrive():
    """Each piece is printed once final: a half multi-byte character and a possible stop-string start wait."""
    from workbench.generation import TextStreamer

    class Bytes:  # token i is byte i
        def decode(self, ids, skip_special_tokens=True):
            return bytes(ids).decode("utf-8", errors="replace")

    class Log:
        def __init__(self):
            self.parts = []

        def write(self, s):
            self.parts.append(s)

        def flush(self):
            pass

    log = Log()
    streamer = TextStreamer(Bytes(), stop_strings=["END"], file=log)
    streamer.put(torch.tensor([list(b"Hi ")]))
    for b in "é E EN ok EN".encode():
        streamer.put(torch.tensor([b]))
    assert "".join(log.parts) == "Hi é E EN ok " and "\ufffd" not in "".join(log.parts)
    streamer.put(torch.tensor([ord("D")]))
    streamer.put(torch.tensor([ord("!")]))  # after the stop string: not printed
    streamer.end()
    assert "".join(log.parts) == "Hi é E EN ok \n"


@pytest.mark.parametrize("kwargs, match", [
    (dict(repetition_penalty=0.0), r"repetition_penalty must be a number > 0 \(1.0: no penalty\), got 0.0"),
    (dict(repetition_penalty=-1), r"repetition_penalty must be a number > 0"),
    (dict(no_repeat_ngram_size=-1), r"no_repeat_ngram_size must be a non-negative integer \(0: off\), got -1"),
    (dict(no_repeat_ngram_size=2.5), r"no_repeat_ngram_size must be a non-negative integer"),
    (dict(min_new_tokens=3), r"min_new_tokens must be an integer in \[0, 2\] \(the new-token count\), got 3"),
    (dict(min_new_tokens=-1), r"min_new_tokens must be an integer in \[0, 2\]"),
])
def test_bad_processor_arguments(pair, kwargs, match):
    _, ours = pair
    with pytest.raises(ValueError, match=match):
        ours.generate(torch.tensor([[5, 6]]), max_new_tokens=2, **kwargs)
    with pytest.raises(TypeError, match="streamer must have put"):
        ours.generate(torch.tensor([[5, 6]]), max_new_tokens=2, streamer=print)


# ---- the fast decode step (workbench.fast_decode) ------------------------------------------------------
def _eager_pair(pair):
    """The pair's checkpoint loaded again with the eager attention backend on both sides."""
    hf, _ = pair
    directory = hf.config._name_or_path
    hf_eager = transformers.GPTNeoXForCausalLM.from_pretrained(directory, attn_implementation="eager").eval()
    return hf_eager, workbench.GPTNeoXForCausalLM.from_pretrained(directory, attn_implementation="eager")


def test_decode_step_only_when_nothing_observes(pair):
    _, ours = pair
    assert DecodeStep.for_model(ours, 3) is not None
    with ours.hooks(fwd_hooks=[("blocks.1.attn.hook_pattern", lambda x, hook: None)]):
        assert DecodeStep.for_model(ours, 3) is None  # hooks must see every step
    ours.train()
    try:
        assert DecodeStep.for_model(ours, 3) is None  # dropout
    finally:
        ours.eval()


@pytest.mark.parametrize("written_out", [False, True], ids=["backend_attention", "written_out"])
@pytest.mark.parametrize("onednn_everywhere", [False, True], ids=["size_rule", "onednn_everywhere"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_decode_step_logits_equal_the_full_forward(pair, attn, onednn_everywhere, written_out, monkeypatch):
    """Prefill a left-padded batch, decode 4 tokens with the step; each step's logits are the full forward's
    at that position (to fp32 rounding: oneDNN sums in another order), with the same argmax. `written_out`: the
    attention of steps that may run on several threads (wide models), forced here for this narrow one."""
    if onednn_everywhere:
        monkeypatch.setattr(fast_decode, "ONEDNN_MIN_ELEMENTS", 0)
    _, ours = _eager_pair(pair) if attn == "eager" else pair
    if written_out:
        monkeypatch.setattr(fast_decode, "is_small_work", lambda hidden, n: False)
    step = DecodeStep.for_model(ours, 3)
    assert step.eager == (written_out or attn == "eager")
    ids, mask = left_padded_prompts()
    new = torch.randint(3, VOCAB, (3, 4), generator=torch.Generator().manual_seed(3))
    cache = KVCache.for_config(ours.config).reserve(13)
    with torch.no_grad():
        ours.gpt_neox(ids, attention_mask=mask, past_key_values=cache, use_cache=True)
        full_ids, full_mask = torch.cat([ids, new], 1), torch.cat([mask, torch.ones_like(new)], 1)
        full = ours(full_ids, attention_mask=full_mask).logits  # [3, 13, vocab]
        positions = mask.sum(-1)
        for i in range(4):
            logits = step(new[:, i], positions + i, cache, full_mask.bool()[:, : 10 + i])
            torch.testing.assert_close(logits, full[:, 9 + i], atol=1e-4, rtol=1e-4)
            assert torch.equal(logits.argmax(-1), full[:, 9 + i].argmax(-1))
    assert cache.length == 13


@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_greedy_through_onednn_matches_transformers(pair, attn, monkeypatch):
    """Every projection through oneDNN (the rule sends only large weights there), attention written out as for
    a wide model: tokens still transformers'."""
    monkeypatch.setattr(fast_decode, "ONEDNN_MIN_ELEMENTS", 0)
    monkeypatch.setattr(fast_decode, "is_small_work", lambda hidden, n: False)
    hf, ours = _eager_pair(pair) if attn == "eager" else pair
    ids, mask = left_padded_prompts()
    expected = hf_greedy(hf, ids, mask, 32, eos_token_id=EOS)
    assert torch.equal(ours.generate(ids, attention_mask=mask, max_new_tokens=32), expected)


def test_observed_generation_runs_the_hooked_forward_with_the_same_tokens(pair):
    _, ours = pair
    ids, mask = left_padded_prompts()
    lengths = []
    hook = ("blocks.0.hook_resid_post", lambda x, hook: lengths.append(x.shape[1]))
    watched = ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[], fwd_hooks=[hook])
    assert lengths == [9] + [1] * 7  # the prefill, then every decode step went through the hook point
    assert torch.equal(watched, ours.generate(ids, attention_mask=mask, max_new_tokens=8, eos_token_id=[]))


def test_onednn_only_where_it_runs_and_only_for_large_weights():
    assert not fast_decode.onednn_works(torch.device("cpu"), torch.float64)  # oneDNN has no fp64 linear
    big = torch.empty(fast_decode.ONEDNN_MIN_ELEMENTS + 1, 1)
    small = torch.empty(fast_decode.ONEDNN_MIN_ELEMENTS, 1)
    assert fast_decode.linear_for(small, True) is torch.nn.functional.linear
    assert fast_decode.linear_for(big, False) is torch.nn.functional.linear
    if fast_decode.onednn_works(torch.device("cpu"), torch.float32):
        assert fast_decode.linear_for(big, True) is not torch.nn.functional.linear


def test_decode_kernels_do_not_depend_on_the_thread_count(pair, monkeypatch):
    """`for_model` picks the same products (oneDNN where it runs) and written-out attention on 1 and 2 threads,
    pinned or not: the thread count never changes which kernels a decode step runs."""
    _, ours = pair
    monkeypatch.setattr(fast_decode, "ONEDNN_MIN_ELEMENTS", 0)
    threads = torch.get_num_threads()
    steps = []
    try:
        for n in (1, 2):
            torch.set_num_threads(n)
            steps.append(DecodeStep.for_model(ours, 1))
    finally:
        torch.set_num_threads(threads)
    assert steps[0].signature() == steps[1].signature()
    projections = [p for plan in steps[1].layers for p in plan if isinstance(p, fast_decode._Proj)] + [steps[1].unembed]
    assert len(projections) == 4 * ours.config.num_hidden_layers + 1
    onednn = fast_decode.onednn_works(torch.device("cpu"), torch.float32)
    assert all((p.linear is not torch.nn.functional.linear) == onednn for p in projections)
