"""`Tokenizer`: the GPT-NeoX byte-level BPE tokenizer over `tokenizers.Tokenizer`, behaving like transformers'.

It reproduces what `transformers.AutoTokenizer.from_pretrained` gives for a Pythia / GPT-NeoX checkpoint
(transformers 5: class `GPTNeoXTokenizer`, formerly `GPTNeoXTokenizerFast`):

- The normalizer (NFC), pre-tokenizer (byte-level, `add_prefix_space`) and decoder are rebuilt from the options,
  and the post-processor of tokenizer.json is *replaced* by one adding only what `add_bos_token` /
  `add_eos_token` ask for (both False by default, so no BOS/EOS is added even when tokenizer.json's own
  post-processor would add one). Like transformers 5, add_bos_token/add_eos_token found in tokenizer_config.json
  are ignored (transformers drops them when a tokenizer.json exists); pass them as arguments instead.
- bos/eos/unk default to `<|endoftext|>`; pad defaults to `<|padding|>`. Where the vocabulary lacks `<|padding|>`
  pad is None (transformers would grow the vocabulary by one token instead; we never resize it).
- `padding="max_length"` with no `max_length` (and no finite `model_max_length`) raises instead of silently
  not padding; ids outside the vocabulary raise instead of being dropped by `decode`.
- Text holding a lone surrogate (`"\ud800"`, not valid Unicode) raises a ValueError naming the text and index
  (transformers passes on the backend's bare TypeError); an empty batch with tensors gives `[0, 0]` tensors
  (transformers 5 raises IndexError).
"""

from __future__ import annotations

import json
import operator
import os
from pathlib import Path
from typing import Any

import tokenizers
from tokenizers import AddedToken, decoders, normalizers, pre_tokenizers, processors

ENDOFTEXT, PADDING = "<|endoftext|>", "<|padding|>"
VERY_LARGE_INTEGER = int(1e30)  # transformers' "no limit" model_max_length, written as-is to tokenizer_config.json
SPECIAL_KEYS = ("bos_token", "eos_token", "unk_token", "pad_token")
PADDING_CHOICES = (False, True, "do_not_pad", "longest", "max_length")
TRUNCATION_CHOICES = (None, False, True, "do_not_truncate", "longest_first", "only_first")
_DEFAULT = object()


class BatchEncoding(dict):
    """The tokenizer's output: a dict (`input_ids`, `attention_mask`) whose keys also read as attributes."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(f"BatchEncoding has no field {name!r}; fields: {list(self)}") from None

    def to(self, device: Any) -> BatchEncoding:
        """Move torch tensors to `device` (other values are kept as they are)."""
        return BatchEncoding({k: v.to(device) if hasattr(v, "to") else v for k, v in self.items()})


def _token_str(value: Any) -> str | None:
    # tokenizer_config.json stores tokens as strings or as serialised AddedToken dicts
    return value.get("content") if isinstance(value, dict) else value


def _is_choice(value: Any, choices: tuple) -> bool:
    # identity for True/False/None so that 1, 0.0 or "" are not taken for them
    return any(value is c or (isinstance(c, str) and isinstance(value, str) and value == c) for c in choices)


def _side(value: str, what: str) -> str:
    if value not in ("left", "right"):
        raise ValueError(f"{what} must be 'left' or 'right', got {value!r}")
    return value


class Tokenizer:
    """GPT-NeoX tokenizer with the call/encode/decode interface of transformers' fast tokenizers.

    Args:
        backend: a `tokenizers.Tokenizer` holding the BPE model (modified in place: normalizer, pre-tokenizer,
            decoder, post-processor and the special tokens are set as transformers' GPTNeoXTokenizer sets them).
        bos_token, eos_token, unk_token: special tokens; added to the vocabulary as special if missing (as
            transformers does).
        pad_token: defaults to `<|padding|>` when the vocabulary has it, else None; must be in the vocabulary.
        add_prefix_space: encode a leading space before the text, so the first word is tokenised as any other.
        add_bos_token, add_eos_token: put bos/eos around every sequence when `add_special_tokens=True`.
        padding_side, truncation_side: "left" or "right".
        model_max_length: length used by `truncation=True` / `padding="max_length"` without `max_length`.
        name_or_path: where it was loaded from (informational).
    """

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_token: str | None = ENDOFTEXT,
        eos_token: str | None = ENDOFTEXT,
        unk_token: str | None = ENDOFTEXT,
        pad_token: Any = _DEFAULT,
        add_prefix_space: bool = False,
        add_bos_token: bool = False,
        add_eos_token: bool = False,
        padding_side: str = "right",
        truncation_side: str = "right",
        model_max_length: int = VERY_LARGE_INTEGER,
        name_or_path: str = "",
    ) -> None:
        if not isinstance(backend, tokenizers.Tokenizer):
            raise TypeError(f"backend must be a tokenizers.Tokenizer, got {type(backend).__name__}")
        self._tk = backend
        self.name_or_path = name_or_path
        self.padding_side, self.truncation_side = padding_side, truncation_side
        self.model_max_length = int(model_max_length)
        self.bos_token, self.eos_token, self.unk_token = bos_token, eos_token, unk_token
        # Named special tokens become special added tokens (whole-match, skipped by skip_special_tokens), as
        # transformers' _post_init does; tokens already registered so are left untouched.
        named = [t for t in (bos_token, eos_token, unk_token) if t is not None]
        self._tk.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in dict.fromkeys(named)])
        if pad_token is _DEFAULT:
            pad_token = PADDING if self._tk.token_to_id(PADDING) is not None else None
        self.pad_token = pad_token
        self._tk.normalizer = normalizers.NFC()
        self.add_prefix_space = add_prefix_space
        self._add_bos, self._add_eos = bool(add_bos_token), bool(add_eos_token)
        self._update_post_processor()

    # ---- construction and saving -------------------------------------------------------------------------
    @classmethod
    def from_file(cls, path: str | os.PathLike, **kwargs: Any) -> Tokenizer:
        """Load a tokenizer.json (no sibling config files are read).

        Args:
            path: path to a `tokenizers` JSON file.
            **kwargs: constructor options (`add_prefix_space`, `pad_token`, `padding_side`, ...).

        Returns:
            The tokenizer.
        """
        path = Path(os.fspath(path)).expanduser()
        if not path.is_file():
            raise FileNotFoundError(f"tokenizer file {path} does not exist")
        kwargs.setdefault("name_or_path", str(path))
        return cls(tokenizers.Tokenizer.from_file(str(path)), **kwargs)

    @classmethod
    def from_pretrained(cls, name_or_path: str | os.PathLike, revision: str | None = None, **kwargs: Any) -> Tokenizer:
        """Load from a checkpoint directory, a tokenizer.json path, or a hub id (through the huggingface_hub cache).

        tokenizer_config.json and special_tokens_map.json beside tokenizer.json are read when present (the map
        overrides the config, as in transformers); explicit `kwargs` override both. As in transformers 5, the
        files' add_bos_token/add_eos_token are ignored: pass them as `kwargs`.

        Args:
            name_or_path: directory, path to tokenizer.json, or hub id such as `"EleutherAI/pythia-160m"`.
            revision: hub branch, tag or commit (e.g. `"step1000"`); ignored for local paths.
            **kwargs: constructor options.

        Returns:
            The tokenizer.
        """
        from workbench.hub import resolve_file

        file = resolve_file(name_or_path, "tokenizer.json", revision)
        options: dict[str, Any] = {}
        for name in ("tokenizer_config.json", "special_tokens_map.json"):
            if (file.parent / name).is_file():
                options.update(json.loads((file.parent / name).read_text(encoding="utf-8")))
        # add_bos_token/add_eos_token in the config files are ignored on purpose: transformers 5 drops them
        # whenever a tokenizer.json exists and GPTNeoXTokenizer then rebuilds a post-processor without bos/eos.
        known = SPECIAL_KEYS + ("add_prefix_space", "padding_side", "truncation_side", "model_max_length")
        options = {k: _token_str(v) if k in SPECIAL_KEYS else v for k, v in options.items() if k in known}
        options.update(kwargs)
        options.setdefault("name_or_path", os.fspath(name_or_path))
        return cls(tokenizers.Tokenizer.from_file(str(file)), **options)

    def save_pretrained(self, directory: str | os.PathLike) -> list[Path]:
        """Write tokenizer.json, tokenizer_config.json and special_tokens_map.json, loadable by
        `transformers.AutoTokenizer.from_pretrained(directory)` with identical behaviour.

        `add_bos_token` / `add_eos_token` are not saved: transformers 5 ignores them when loading a directory
        with a tokenizer.json, so pass them again when loading (with either library).

        Args:
            directory: created if missing.

        Returns:
            The paths written.
        """
        out = Path(os.fspath(directory))
        out.mkdir(parents=True, exist_ok=True)
        special = {k: getattr(self, k) for k in SPECIAL_KEYS}  # pad_token may be None: written as null on purpose
        config = {
            "tokenizer_class": "GPTNeoXTokenizer", **special, "add_prefix_space": self.add_prefix_space,
            "padding_side": self.padding_side,
            "truncation_side": self.truncation_side, "model_max_length": self.model_max_length,
            "clean_up_tokenization_spaces": False,
        }
        paths = [out / "tokenizer.json", out / "tokenizer_config.json", out / "special_tokens_map.json"]
        self._tk.save(str(paths[0]))
        paths[1].write_text(json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        smap = {k: v for k, v in special.items() if v is not None}
        paths[2].write_text(json.dumps(smap, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        return paths

    # ---- options ---------------------------------------------------------------------------------------------
    @property
    def backend_tokenizer(self) -> tokenizers.Tokenizer:
        """The underlying `tokenizers.Tokenizer`."""
        return self._tk

    @property
    def add_prefix_space(self) -> bool:
        return self._add_prefix_space

    @add_prefix_space.setter
    def add_prefix_space(self, value: bool) -> None:
        self._add_prefix_space = bool(value)
        self._tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=self._add_prefix_space, trim_offsets=True)
        self._tk.decoder = decoders.ByteLevel(add_prefix_space=self._add_prefix_space, trim_offsets=True)

    @property
    def padding_side(self) -> str:
        return self._padding_side

    @padding_side.setter
    def padding_side(self, value: str) -> None:
        self._padding_side = _side(value, "padding_side")

    @property
    def truncation_side(self) -> str:
        return self._truncation_side

    @truncation_side.setter
    def truncation_side(self, value: str) -> None:
        self._truncation_side = _side(value, "truncation_side")

    @property
    def pad_token(self) -> str | None:
        return self._pad_token

    @pad_token.setter
    def pad_token(self, value: str | None) -> None:
        value = _token_str(value)
        if value is not None and self._tk.token_to_id(value) is None:
            raise ValueError(f"pad_token {value!r} is not in the vocabulary; use an existing token, e.g. {ENDOFTEXT!r}")
        self._pad_token = value

    def _update_post_processor(self) -> None:
        bos = [f"{self.bos_token}:0"] if self._add_bos else []
        eos = [f"{self.eos_token}:0"] if self._add_eos else []
        used = [self.bos_token] * self._add_bos + [self.eos_token] * self._add_eos
        ids = {t: self._tk.token_to_id(t) for t in used}
        self._tk.post_processor = processors.TemplateProcessing(
            single=bos + ["$A:0"] + eos, pair=bos + ["$A:0"] + eos + ["$B:1"], special_tokens=list(ids.items())
        )

    # ---- vocabulary --------------------------------------------------------------------------------------
    def _id(self, token: str | None) -> int | None:
        return None if token is None else self._tk.token_to_id(token)

    bos_token_id = property(lambda self: self._id(self.bos_token))
    eos_token_id = property(lambda self: self._id(self.eos_token))
    unk_token_id = property(lambda self: self._id(self.unk_token))
    pad_token_id = property(lambda self: self._id(self.pad_token))

    @property
    def all_special_tokens(self) -> list[str]:
        """The named special tokens, without repeats (`['<|endoftext|>', '<|padding|>']` for GPT-NeoX)."""
        return list(dict.fromkeys(t for t in (self.bos_token, self.eos_token, self.unk_token, self.pad_token) if t))

    @property
    def all_special_ids(self) -> list[int]:
        return [self._tk.token_to_id(t) for t in self.all_special_tokens]

    @property
    def vocab_size(self) -> int:
        """Size of the BPE vocabulary without added tokens (50254 for GPT-NeoX-20B), as in transformers."""
        return self._tk.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        """Size of the full vocabulary, added tokens included (50277 for GPT-NeoX-20B)."""
        return self._tk.get_vocab_size(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """Token string -> id, added tokens included."""
        return self._tk.get_vocab(with_added_tokens=True)

    def __repr__(self) -> str:
        return (f"Tokenizer(name_or_path={self.name_or_path!r}, vocab={len(self)}, pad_token={self.pad_token!r}, "
                f"padding_side={self.padding_side!r}, add_prefix_space={self.add_prefix_space})")

    # ---- encoding ----------------------------------------------------------------------------------------
    def _strategies(self, padding: Any, truncation: Any, max_length: int | None) -> tuple[Any, ...]:
        """Resolve as transformers does -> (padding mode or None, truncation length or None, padding length)."""
        if not _is_choice(padding, PADDING_CHOICES):
            raise ValueError(f"unknown padding strategy {padding!r}; allowed: {PADDING_CHOICES}")
        if not _is_choice(truncation, TRUNCATION_CHOICES):
            raise ValueError(f"unknown truncation strategy {truncation!r}; allowed: {TRUNCATION_CHOICES}")
        if max_length is not None and (type(max_length) is not int or max_length < 1):
            raise ValueError(f"max_length must be a positive int or None, got {max_length!r}")
        if max_length is not None and padding is False and truncation is None:
            truncation = True  # transformers: a max_length alone means "truncate to it"
        pad = {True: "longest", "longest": "longest", "max_length": "max_length"}.get(padding)
        truncate = truncation not in (None, False, "do_not_truncate")
        limit = max_length if max_length is not None else (
            self.model_max_length if self.model_max_length < int(1e20) else None)
        if pad == "max_length" and limit is None:
            raise ValueError("padding='max_length' needs max_length=<int> (the tokenizer has no model_max_length)")
        if pad and self.pad_token is None:
            raise ValueError(
                "asking to pad but the tokenizer has no pad_token; "
                "set one, e.g. tokenizer.pad_token = tokenizer.eos_token"
            )
        return pad, (limit if truncate else None), (limit if pad == "max_length" else None)

    def __call__(
        self,
        text: str | list[str],
        *,
        add_special_tokens: bool = True,
        padding: bool | str = False,
        truncation: bool | str | None = None,
        max_length: int | None = None,
        padding_side: str | None = None,
        return_tensors: str | None = None,
        return_attention_mask: bool = True,
    ) -> BatchEncoding:
        """Tokenise one text or a batch.

        Args:
            text: a string, or a list/tuple of strings.
            add_special_tokens: add bos/eos where `add_bos_token` / `add_eos_token` say so.
            padding: False / "do_not_pad", True / "longest" (to the longest in the batch), "max_length".
            truncation: True / "longest_first" / "only_first" cut to `max_length` on `truncation_side`;
                None (default) truncates only when `max_length` is given and padding is off, as transformers.
            max_length: length for truncation and for `padding="max_length"`.
            padding_side: "left" / "right" for this call (default: `self.padding_side`).
            return_tensors: None (lists), "pt" (torch int64) or "np" (numpy int64).
            return_attention_mask: include `attention_mask` (1 = real token, 0 = padding).

        Returns:
            BatchEncoding with `input_ids` and `attention_mask`: `[pos]` lists for a single string without
            tensors, else `[batch, pos]` (tensors need equal lengths, i.e. padding).
        """
        batched = isinstance(text, (list, tuple))
        texts = list(text) if batched else [text]
        for i, item in enumerate(texts):
            if not isinstance(item, str):
                where = f"text[{i}]" if batched else "text"
                raise TypeError(f"{where} must be a str (or text a list of str), got {type(item).__name__}")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors must be None, 'pt' or 'np', got {return_tensors!r}")
        side = _side(padding_side, "padding_side") if padding_side is not None else self.padding_side
        pad, trunc_len, pad_len = self._strategies(padding, truncation, max_length)
        # Same mechanism as transformers: configure the Rust backend's truncation/padding, then encode the batch.
        if trunc_len is None:
            self._tk.no_truncation()
        else:
            self._tk.enable_truncation(trunc_len, strategy="longest_first", direction=self.truncation_side)
        if pad is None:
            self._tk.no_padding()
        else:
            self._tk.enable_padding(direction=side, pad_id=self.pad_token_id, pad_token=self.pad_token, length=pad_len)
        encodings = self._encode(texts, batched, add_special_tokens)
        out = {"input_ids": [e.ids for e in encodings]}
        if return_attention_mask:
            out["attention_mask"] = [e.attention_mask for e in encodings]
        if return_tensors is not None:
            lengths = {len(ids) for ids in out["input_ids"]}
            if len(lengths) > 1:
                raise ValueError("sequences have different lengths; pass padding=True to return tensors")
            # An empty batch is [0, 0] ([0, max_length] when padding to it); transformers 5 raises IndexError.
            shape = (len(texts), lengths.pop() if lengths else pad_len or 0)
            if return_tensors == "pt":
                import torch

                return BatchEncoding({k: torch.tensor(v, dtype=torch.long).view(shape) for k, v in out.items()})
            import numpy as np

            return BatchEncoding({k: np.array(v, dtype=np.int64).reshape(shape) for k, v in out.items()})
        return BatchEncoding(out if batched else {k: v[0] for k, v in out.items()})

    def _encode(self, texts: list[str], batched: bool, add_special_tokens: bool) -> list[tokenizers.Encoding]:
        """The backend's encodings of `texts`; a lone surrogate (not valid Unicode, so the backend refuses it
        with a bare TypeError) raises a ValueError naming the text and the position instead."""
        try:
            return self._tk.encode_batch(texts, add_special_tokens=add_special_tokens)
        except TypeError as error:
            for i, item in enumerate(texts):
                try:
                    item.encode("utf-8")
                except UnicodeEncodeError as bad:
                    where = f"text[{i}]" if batched else "text"
                    raise ValueError(
                        f"{where} holds a lone surrogate {item[bad.start]!r} at index {bad.start}: it is not valid "
                        "Unicode and cannot be tokenised; remove it or replace it, e.g. "
                        "text.encode('utf-8', 'replace').decode()") from error
            raise

    def encode(self, text: str, add_special_tokens: bool = True, **kwargs: Any) -> list[int]:
        """Token ids of one string (`**kwargs` as in `__call__`: truncation, max_length, padding)."""
        if not isinstance(text, str):
            raise TypeError(f"encode takes one str, got {type(text).__name__}; use tokenizer(list_of_str) for batches")
        return self(text, add_special_tokens=add_special_tokens, **kwargs)["input_ids"]

    def tokenize(self, text: str, add_special_tokens: bool = False) -> list[str]:
        """Token strings of one text (byte-level: a leading space shows as 'Ġ')."""
        if not isinstance(text, str):
            raise TypeError(f"tokenize takes a str, got {type(text).__name__}")
        self._tk.no_truncation()
        self._tk.no_padding()
        return self._encode([text], False, add_special_tokens)[0].tokens

    # ---- ids <-> tokens and decoding ---------------------------------------------------------------------
    def _check_ids(self, ids: Any) -> list[int]:
        """`[pos]` ids (a list, a 1-D tensor/array of any integer dtype, or one int) as a list of ints.

        Raises:
            TypeError: a batch, or ids that are not integers (floats, bools ...), naming the first.
            ValueError: ids outside the vocabulary.
        """
        if hasattr(ids, "tolist"):  # torch tensor / numpy array / numpy scalar
            ids = ids.tolist()
        if isinstance(ids, int):
            ids = [ids]
        if not isinstance(ids, (list, tuple)) or any(isinstance(i, (list, tuple)) for i in ids):
            raise TypeError(f"expected a sequence of token ids, got {type(ids).__name__}; use batch_decode for batches")
        ints = []
        for i in ids:
            try:
                if isinstance(i, bool):
                    raise TypeError
                ints.append(operator.index(i))  # numpy integers too
            except TypeError:
                raise TypeError(f"token ids must be ints, got {type(i).__name__} {i!r}") from None
        n = len(self)
        bad = [i for i in ints if not 0 <= i < n]
        if bad:
            raise ValueError(f"token ids {bad[:5]} are not ints in [0, {n}) (the vocabulary)")
        return ints

    def decode(self, ids: Any, skip_special_tokens: bool = False) -> str:
        """Text of a sequence of ids (list, 1-D tensor/array or a single int).

        Args:
            ids: token ids `[pos]`.
            skip_special_tokens: drop special added tokens (`<|endoftext|>`, `<|padding|>`).

        Returns:
            The decoded string.
        """
        return self._tk.decode(self._check_ids(ids), skip_special_tokens=skip_special_tokens)

    def batch_decode(self, sequences: Any, skip_special_tokens: bool = False) -> list[str]:
        """Texts of a batch of id sequences (`[batch, pos]` tensor/array or list of lists)."""
        if hasattr(sequences, "tolist"):
            sequences = sequences.tolist()
        if not isinstance(sequences, (list, tuple)):
            raise TypeError(f"batch_decode takes a list of id lists or a 2-D tensor, got {type(sequences).__name__}")
        return self._tk.decode_batch([self._check_ids(s) for s in sequences], skip_special_tokens=skip_special_tokens)

    def convert_ids_to_tokens(self, ids: int | list[int], skip_special_tokens: bool = False) -> str | list[str]:
        """Token string of an id, or token strings of a list of ids."""
        single = isinstance(ids, int) and not isinstance(ids, bool)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        tokens = [self._tk.id_to_token(i) for i in self._check_ids(ids) if i not in skip]
        return tokens[0] if single else tokens

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Id of a token string (or ids of a list); unknown tokens map to `unk_token_id`, as in transformers."""
        def one(token: str) -> int:
            if not isinstance(token, str):
                raise TypeError(f"tokens must be str, got {type(token).__name__}")
            found = self._tk.token_to_id(token)
            return self.unk_token_id if found is None else found

        return one(tokens) if isinstance(tokens, str) else [one(t) for t in tokens]
