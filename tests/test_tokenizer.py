"""Parity of workbench.tokenizer.Tokenizer with transformers' GPT-NeoX tokenizer on the real GPT-NeoX-20B vocabulary.

The reference is what `transformers.AutoTokenizer.from_pretrained` builds for a Pythia checkpoint directory
(tokenizer.json + the tokenizer_config.json / special_tokens_map.json Pythia repositories ship).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import unicodedata
from pathlib import Path

import numpy as np
import pytest
import torch
from tokenizers import Tokenizer as RawTokenizer
from tokenizers.models import BPE

from workbench.tokenizer import Tokenizer

transformers = pytest.importorskip("transformers")
AutoTokenizer = transformers.AutoTokenizer

# The tokenizer files of EleutherAI/pythia-* (and gpt-neox-20b) besides tokenizer.json.
PYTHIA_TOKENIZER_CONFIG = {
    "add_prefix_space": False,
    "bos_token": "<|endoftext|>",
    "eos_token": "<|endoftext|>",
    "unk_token": "<|endoftext|>",
    "name_or_path": "EleutherAI/gpt-neox-20b",
    "tokenizer_class": "GPTNeoXTokenizer",
}
PYTHIA_SPECIAL_TOKENS_MAP = {"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>"}

TEXTS = [
    "The quick brown fox jumps over the lazy dog.",
    "Hello world",
    " Hello world",
    "Crème brûlée à la française, naïve façade; Ærøskøbing; Straße",
    "e\u0301 vs \u00e9 (NFC)",  # decomposed accent: the NFC normalizer composes it
    "東京は日本の首都です。北京欢迎你",
    "Emoji: 🤗🚀👩‍👩‍👧‍👦 and flags 🇫🇷",
    "runs of spaces:  two,   three,      six,                                  many",
    "tabs\tand\t\tnewlines\n\n\nand\r\nwindows   \n  trailing   ",
    "def f(x):\n    return {'a': [x ** 2 for _ in range(3)]}  # comment\n",
    "<|endoftext|>special in the middle<|padding|> and <|endoftext|>",
    "",
    " ",
    "a",
]


@pytest.fixture(scope="module")
def pythia_dir(tmp_path_factory: pytest.TempPathFactory, neox_tokenizer_file: Path) -> Path:
    """A Pythia-like checkpoint directory with the real tokenizer (a temporary copy)."""
    folder = tmp_path_factory.mktemp("pythia")
    shutil.copy(neox_tokenizer_file, folder / "tokenizer.json")
    (folder / "tokenizer_config.json").write_text(json.dumps(PYTHIA_TOKENIZER_CONFIG))
    (folder / "special_tokens_map.json").write_text(json.dumps(PYTHIA_SPECIAL_TOKENS_MAP))
    (folder / "config.json").write_text(json.dumps({"model_type": "gpt_neox", "architectures": ["GPTNeoXForCausalLM"]}))
    return folder


@pytest.fixture(scope="module")
def ref(pythia_dir: Path):
    return AutoTokenizer.from_pretrained(pythia_dir)


@pytest.fixture(scope="module")
def tok(pythia_dir: Path) -> Tokenizer:
    return Tokenizer.from_pretrained(pythia_dir)


def assert_same_encoding(ours, theirs) -> None:
    assert set(ours) == {"input_ids", "attention_mask"}
    for key in ours:
        a, b = ours[key], theirs[key]
        if isinstance(b, torch.Tensor):
            assert a.dtype == b.dtype and torch.equal(a, b), key
        elif isinstance(b, np.ndarray):
            assert a.dtype == b.dtype and np.array_equal(a, b), key
        else:
            assert a == b, key


def test_reference_is_the_gpt_neox_tokenizer(ref) -> None:
    # Guards the premise of every parity test below.
    assert type(ref).__name__ == "GPTNeoXTokenizer" and ref.add_bos_token is False and ref.add_eos_token is False


def test_special_tokens_and_sizes_match(tok: Tokenizer, ref) -> None:
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(tok, name) == getattr(ref, name), name
        assert getattr(tok, name + "_id") == getattr(ref, name + "_id"), name
    assert tok.all_special_tokens == ref.all_special_tokens
    assert tok.all_special_ids == ref.all_special_ids
    assert (tok.vocab_size, len(tok)) == (ref.vocab_size, len(ref))
    assert tok.get_vocab() == ref.get_vocab()
    assert (tok.padding_side, tok.truncation_side) == (ref.padding_side, ref.truncation_side)
    assert tok.model_max_length == ref.model_max_length


def test_from_file_matches_from_pretrained(neox_tokenizer_file: Path, tok: Tokenizer) -> None:
    plain = Tokenizer.from_file(neox_tokenizer_file)
    assert plain.pad_token == tok.pad_token and plain.eos_token_id == tok.eos_token_id
    assert plain(TEXTS) == tok(TEXTS)


@pytest.mark.parametrize("text", TEXTS, ids=range(len(TEXTS)))
def test_encode_tokenize_decode_match(tok: Tokenizer, ref, text: str) -> None:
    assert_same_encoding(tok(text), ref(text))
    ids = tok.encode(text)
    assert ids == ref.encode(text)
    assert tok.tokenize(text) == ref.tokenize(text)
    assert tok.decode(ids) == ref.decode(ids)
    assert tok.decode(ids) == unicodedata.normalize("NFC", text)  # byte-level BPE is lossless up to NFC
    assert tok.decode(ids, skip_special_tokens=True) == ref.decode(ids, skip_special_tokens=True)
    assert_same_encoding(tok(text, return_tensors="pt"), ref(text, return_tensors="pt"))


def test_batch_encode_matches(tok: Tokenizer, ref) -> None:
    assert_same_encoding(tok(TEXTS), ref(TEXTS))
    assert_same_encoding(tok(tuple(TEXTS[:3])), ref(list(TEXTS[:3])))
    assert_same_encoding(tok(TEXTS, add_special_tokens=False), ref(TEXTS, add_special_tokens=False))
    assert tok(TEXTS, return_attention_mask=False) == {"input_ids": ref(TEXTS)["input_ids"]}


PADDING_CASES = [
    {"padding": True},
    {"padding": "longest"},
    {"padding": True, "truncation": True, "max_length": 5},
    {"padding": "max_length", "max_length": 40},
    {"padding": "max_length", "truncation": True, "max_length": 7},
    {"padding": True, "max_length": 3},  # no truncation: transformers ignores max_length here
]


@pytest.mark.filterwarnings("ignore:`max_length` is ignored when `padding`")
@pytest.mark.parametrize("side", ["left", "right"])
@pytest.mark.parametrize("kwargs", PADDING_CASES, ids=str)
def test_batch_padding_matches(tok: Tokenizer, ref, side: str, kwargs: dict) -> None:
    ours = tok(TEXTS, padding_side=side, return_tensors="pt", **kwargs)
    assert_same_encoding(ours, ref(TEXTS, padding_side=side, return_tensors="pt", **kwargs))
    assert_same_encoding(tok(TEXTS, padding_side=side, **kwargs), ref(TEXTS, padding_side=side, **kwargs))
    pad_column = ours.input_ids[:, 0] if side == "left" else ours.input_ids[:, -1]
    assert (ours.attention_mask[pad_column == tok.pad_token_id, 0 if side == "left" else -1] == 0).all()


def test_padding_side_attribute_and_numpy(pythia_dir: Path) -> None:
    ours, theirs = Tokenizer.from_pretrained(pythia_dir), AutoTokenizer.from_pretrained(pythia_dir)
    ours.padding_side = theirs.padding_side = "left"
    kw = {"padding": True, "return_tensors": "np"}
    assert_same_encoding(ours(TEXTS, **kw), theirs(TEXTS, **kw))


@pytest.mark.parametrize("kwargs", [{"max_length": 4}, {"truncation": True, "max_length": 4}], ids=str)
def test_truncation_matches_both_sides(pythia_dir: Path, tok: Tokenizer, ref, kwargs: dict) -> None:
    assert_same_encoding(tok(TEXTS, **kwargs), ref(TEXTS, **kwargs))
    left = Tokenizer.from_pretrained(pythia_dir, truncation_side="left")
    ref_left = AutoTokenizer.from_pretrained(pythia_dir, truncation_side="left")
    assert_same_encoding(left(TEXTS, **kwargs), ref_left(TEXTS, **kwargs))
    assert left(TEXTS[0], **kwargs)["input_ids"] == tok.encode(TEXTS[0])[-4:]


def test_add_bos_eos_tokens_match(pythia_dir: Path) -> None:
    opts = {"add_bos_token": True, "add_eos_token": True}
    ours, theirs = Tokenizer.from_pretrained(pythia_dir, **opts), AutoTokenizer.from_pretrained(pythia_dir, **opts)
    assert_same_encoding(ours(TEXTS), theirs(TEXTS))
    assert ours("a")["input_ids"] == [0, ours.encode("a", add_special_tokens=False)[0], 0]
    kw = {"padding": True, "truncation": True, "max_length": 6, "padding_side": "left"}
    assert_same_encoding(ours(TEXTS, **kw), theirs(TEXTS, **kw))


def test_batch_decode_skip_special_tokens(tok: Tokenizer, ref) -> None:
    batch = tok(TEXTS, padding=True, padding_side="left", return_tensors="pt")
    for skip in (False, True):
        assert tok.batch_decode(batch.input_ids, skip_special_tokens=skip) == ref.batch_decode(
            batch.input_ids, skip_special_tokens=skip
        )
    cleaned = tok.batch_decode(batch.input_ids.numpy(), skip_special_tokens=True)
    assert cleaned[0] == TEXTS[0] and cleaned[-1] == "a"
    assert tok.batch_decode(batch.input_ids.tolist()) == tok.batch_decode(batch.input_ids)
    assert tok.decode(batch.input_ids[0]) == ref.decode(batch.input_ids[0])


def test_token_id_conversions(tok: Tokenizer, ref) -> None:
    ids = tok.encode(TEXTS[10] + TEXTS[7])
    assert tok.convert_ids_to_tokens(ids) == ref.convert_ids_to_tokens(ids)
    skipped = ref.convert_ids_to_tokens(ids, skip_special_tokens=True)
    assert tok.convert_ids_to_tokens(ids, skip_special_tokens=True) == skipped and len(skipped) == len(ids) - 3
    assert tok.convert_ids_to_tokens(ids[3]) == ref.convert_ids_to_tokens(ids[3])
    tokens = tok.tokenize(TEXTS[3]) + ["<|padding|>", "definitely-not-a-token"]
    assert tok.convert_tokens_to_ids(tokens) == ref.convert_tokens_to_ids(tokens)
    assert tok.convert_tokens_to_ids("Hello") == ref.convert_tokens_to_ids("Hello")


def test_add_prefix_space_matches(pythia_dir: Path, tok: Tokenizer) -> None:
    ours = Tokenizer.from_pretrained(pythia_dir, add_prefix_space=True)
    theirs = AutoTokenizer.from_pretrained(pythia_dir, add_prefix_space=True)
    assert_same_encoding(ours(TEXTS), theirs(TEXTS))
    assert ours.encode("Hello world") == tok.encode(" Hello world") != tok.encode("Hello world")
    ids = ours.encode("Hello world")
    assert ours.decode(ids) == theirs.decode(ids)


@pytest.mark.parametrize(
    "options",
    [{}, {"padding_side": "left", "add_prefix_space": True, "truncation_side": "left"}],
    ids=["default", "custom"],
)
def test_save_pretrained_roundtrip_through_transformers(pythia_dir: Path, tmp_path: Path, options: dict) -> None:
    ours = Tokenizer.from_pretrained(pythia_dir, **options)
    files = ours.save_pretrained(tmp_path / "saved")
    assert sorted(p.name for p in files) == ["special_tokens_map.json", "tokenizer.json", "tokenizer_config.json"]
    reloaded = AutoTokenizer.from_pretrained(tmp_path / "saved")
    expected = AutoTokenizer.from_pretrained(pythia_dir, **options)
    assert reloaded.padding_side == expected.padding_side == ours.padding_side
    assert reloaded.truncation_side == expected.truncation_side == ours.truncation_side
    for name in ("bos_token", "eos_token", "unk_token", "pad_token"):
        assert getattr(reloaded, name) == getattr(ours, name), name
    kw = {"padding": True, "truncation": True, "max_length": 9, "return_tensors": "pt"}
    assert_same_encoding(ours(TEXTS, **kw), reloaded(TEXTS, **kw))
    assert_same_encoding(ours(TEXTS, **kw), expected(TEXTS, **kw))
    assert (len(reloaded), reloaded.vocab_size) == (len(ours), ours.vocab_size)
    again = Tokenizer.from_pretrained(tmp_path / "saved")
    assert again(TEXTS) == ours(TEXTS) and again.padding_side == ours.padding_side


def test_add_bos_eos_in_config_files_are_ignored_like_transformers(pythia_dir: Path, tmp_path: Path) -> None:
    # transformers 5 drops these keys when a tokenizer.json exists, so a saved add_eos_token does not round-trip.
    shutil.copy(pythia_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    config = {**PYTHIA_TOKENIZER_CONFIG, "add_bos_token": True, "add_eos_token": True}
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert_same_encoding(ours(TEXTS), theirs(TEXTS))
    assert ours("a")["input_ids"] == Tokenizer.from_pretrained(pythia_dir)("a")["input_ids"]


def test_pad_token_null_in_config(pythia_dir: Path, tmp_path: Path) -> None:
    shutil.copy(pythia_dir / "tokenizer.json", tmp_path / "tokenizer.json")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({**PYTHIA_TOKENIZER_CONFIG, "pad_token": None}))
    ours, theirs = Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(tmp_path)
    assert ours.pad_token is None and theirs.pad_token is None
    with pytest.raises(ValueError, match="pad_token"):
        ours(["a", "b c"], padding=True)
    ours.pad_token = ours.eos_token  # the usual fix suggested by the error
    theirs.pad_token = theirs.eos_token
    assert_same_encoding(ours(["a", "b c"], padding=True), theirs(["a", "b c"], padding=True))
    ours.save_pretrained(tmp_path / "saved")  # pad_token = eos survives the round trip
    assert AutoTokenizer.from_pretrained(tmp_path / "saved").pad_token == "<|endoftext|>"


def test_checkpoint_dir_and_file_inside_it(pythia_dir: Path, tmp_path: Path) -> None:
    ckpt = tmp_path / "ckpt"
    shutil.copytree(pythia_dir, ckpt)
    config = {**PYTHIA_TOKENIZER_CONFIG, "padding_side": "left", "add_prefix_space": True}
    (ckpt / "tokenizer_config.json").write_text(json.dumps(config))
    theirs = AutoTokenizer.from_pretrained(ckpt)
    for source in (ckpt, ckpt / "tokenizer.json", str(ckpt)):
        ours = Tokenizer.from_pretrained(source)
        assert (ours.padding_side, ours.add_prefix_space) == ("left", True)
        assert_same_encoding(ours(TEXTS, padding=True), theirs(TEXTS, padding=True))


def _fake_hub_repo(cache: Path, repo_id: str, refs: dict[str, dict[str, bytes]]) -> None:
    """Lay out huggingface_hub's cache: blobs/<sha256>, snapshots/<commit>/<file> -> blob link, refs/<name>."""
    repo = cache / f"models--{repo_id.replace('/', '--')}"
    for ref_name, files in refs.items():
        commit = hashlib.sha1(ref_name.encode()).hexdigest()
        (repo / "refs").mkdir(parents=True, exist_ok=True)
        (repo / "refs" / ref_name).write_text(commit)
        snapshot = repo / "snapshots" / commit
        snapshot.mkdir(parents=True)
        for name, data in files.items():
            blob = repo / "blobs" / hashlib.sha256(data).hexdigest()
            blob.parent.mkdir(exist_ok=True)
            blob.write_bytes(data)
            (snapshot / name).symlink_to(Path("..", "..", "blobs", blob.name))


def test_offline_hub_cache_and_revision(pythia_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import huggingface_hub.constants as hub_constants

    cache = tmp_path / "hub"
    tokenizer_json = (pythia_dir / "tokenizer.json").read_bytes()
    main_config = json.dumps(PYTHIA_TOKENIZER_CONFIG).encode()
    step_config = json.dumps({**PYTHIA_TOKENIZER_CONFIG, "padding_side": "left"}).encode()
    _fake_hub_repo(cache, "EleutherAI/pythia-14m", {
        "main": {"tokenizer.json": tokenizer_json, "tokenizer_config.json": main_config},
        "step1000": {"tokenizer.json": tokenizer_json, "tokenizer_config.json": step_config},
    })
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    # huggingface_hub reads both variables once, at import: patch the values it already holds too.
    monkeypatch.setattr(hub_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hub_constants, "HF_HUB_CACHE", str(cache))

    main = Tokenizer.from_pretrained("EleutherAI/pythia-14m")
    step = Tokenizer.from_pretrained("EleutherAI/pythia-14m", revision="step1000")
    assert main.padding_side == "right" and step.padding_side == "left"
    assert main(TEXTS) == step(TEXTS) == Tokenizer.from_pretrained(pythia_dir)(TEXTS)
    with pytest.raises(OSError, match="step999"):
        Tokenizer.from_pretrained("EleutherAI/pythia-14m", revision="step999")


def test_vocabulary_without_padding_token_has_no_pad() -> None:
    backend = RawTokenizer(BPE(vocab={"<|endoftext|>": 0, "a": 1, "b": 2, "Ġ": 3}, merges=[]))
    small = Tokenizer(backend)
    assert small.pad_token is None and small.pad_token_id is None and small.eos_token_id == 0
    assert small(["a b", "a"])["input_ids"] == [[1, 3, 2], [1]]
    with pytest.raises(ValueError, match="pad_token"):
        small(["a b", "a"], padding=True)


# ---- bad input: one test each ------------------------------------------------------------------------------
def test_non_str_item_raises(tok: Tokenizer) -> None:
    with pytest.raises(TypeError, match=r"text\[1\].*int"):
        tok(["fine", 3])
    with pytest.raises(TypeError, match="bytes"):
        tok(b"bytes")


def test_max_length_padding_without_max_length_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="max_length"):
        tok(["a", "b"], padding="max_length")


def test_unknown_padding_strategy_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="'longer'.*'longest'"):
        tok(["a"], padding="longer")
    with pytest.raises(ValueError, match="padding strategy 1"):
        tok(["a"], padding=1)


def test_unknown_truncation_strategy_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="'only_second'.*allowed"):
        tok(["a"], truncation="only_second", max_length=2)


def test_bad_max_length_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="max_length must be a positive int"):
        tok("a b", max_length=0)


def test_bad_padding_side_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="'left' or 'right'.*'middle'"):
        tok(["a"], padding=True, padding_side="middle")
    with pytest.raises(ValueError, match="truncation_side"):
        tok.truncation_side = "up"


def test_bad_return_tensors_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="'pt'.*'tf'"):
        tok("a", return_tensors="tf")


def test_ragged_batch_to_tensors_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="padding=True"):
        tok(["a", "a b c"], return_tensors="pt")


def test_pad_token_outside_vocabulary_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match="'<pad>' is not in the vocabulary"):
        tok.pad_token = "<pad>"
    assert tok.pad_token == "<|padding|>"


def test_decode_out_of_range_id_raises(tok: Tokenizer) -> None:
    with pytest.raises(ValueError, match=r"\[50277\].*\[0, 50277\)"):
        tok.decode([12092, len(tok)])
    with pytest.raises(TypeError, match="batch_decode"):
        tok.decode([[1, 2]])


def test_missing_file_raises() -> None:
    with pytest.raises(FileNotFoundError, match="does-not-exist"):
        Tokenizer.from_file("/does-not-exist/tokenizer.json")
