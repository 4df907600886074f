"""Training batches: plain corpus windows mixed with rows that repeat a span.

Why repeated spans: a small model trained on a few million tokens of prose forms induction heads late
or not at all, because prose rarely rewards copying. Rows that repeat a span (the corpus's own text, or
uniformly random tokens, whose second copy can *only* be predicted by copying) make the previous-token ->
induction circuit pay off early. Random-token rows are the strongest signal; their first copy is pure
noise, so its targets are masked out of the loss. Span lengths vary from row to row, so that copying can
only be done by matching content (an induction head), not by attending a fixed distance back.

Every batch is a pure function of `(seed, step)`: resuming at step `s` needs nothing but `s`.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

IGNORE_INDEX = -100  # target value excluded from the loss (as in torch's cross_entropy)

ROW_KINDS = ("text", "repeat_text", "repeat_random")


@dataclass(frozen=True)
class MixConfig:
    """Share of each row kind in a batch, and the span lengths of repeated rows.

    Args:
        text: share of plain corpus windows.
        repeat_text: share of rows `[eos] + span + span + ...` with `span` a corpus window.
        repeat_random: share of rows `[eos] + span + span + ...` with `span` uniform random tokens.
        half_row_share: among repeated rows, the share whose span is exactly half the row (two copies);
            the others draw the span length uniformly from `[min_span, half the row]`. Keep it at 0 for
            training: with a fixed period the model learns a positional shortcut (attend `seq_len // 2`
            back) instead of an induction head, and copies nothing at any other period.
        min_span: shortest repeated span, in tokens.
    """

    text: float = 0.5
    repeat_text: float = 0.2
    repeat_random: float = 0.3
    half_row_share: float = 0.0
    min_span: int = 8

    def __post_init__(self) -> None:
        shares = (self.text, self.repeat_text, self.repeat_random)
        if any(s < 0 for s in shares) or sum(shares) <= 0:
            raise ValueError(f"mix shares must be >= 0 and not all zero, got text/repeat_text/repeat_random={shares}")
        if not 0 <= self.half_row_share <= 1:
            raise ValueError(f"half_row_share must be in [0, 1], got {self.half_row_share}")
        if self.min_span < 1:
            raise ValueError(f"min_span must be >= 1, got {self.min_span}")

    def to_dict(self) -> dict:
        return asdict(self)


class BatchSampler:
    """Draws training batches from a token stream and a mix of row kinds.

    Args:
        stream: the training corpus as one token stream, documents separated by `eos_token_id`.  # [n_tokens]
        seq_len: context length; rows hold `seq_len + 1` tokens (inputs plus the shifted targets).
        batch_size: rows per batch.
        mix: row-kind shares.
        vocab_low / vocab_high: random tokens are drawn from `[vocab_low, vocab_high)` (skips special tokens).
        eos_token_id: token that opens repeated rows (a document boundary, as between corpus documents).
        seed: base seed; batch `step` uses generator seed `seed * 1_000_003 + step`.
    """

    def __init__(
        self,
        stream: torch.Tensor,
        seq_len: int,
        batch_size: int,
        mix: MixConfig,
        vocab_low: int,
        vocab_high: int,
        eos_token_id: int = 0,
        seed: int = 0,
    ) -> None:
        if stream.numel() < seq_len + 2:
            raise ValueError(
                f"the training corpus has {stream.numel()} tokens, fewer than one row of seq_len+1={seq_len + 1}; "
                "use more text or a shorter context"
            )
        if mix.min_span > seq_len // 2:
            raise ValueError(f"min_span={mix.min_span} exceeds half the context ({seq_len // 2})")
        if vocab_high - vocab_low < 2:
            raise ValueError(f"random-token range [{vocab_low}, {vocab_high}) is too small")
        self.stream = stream.long()
        self.seq_len = seq_len
        self.batch_size = batch_size
        self.mix = mix
        self.vocab_low, self.vocab_high = vocab_low, vocab_high
        self.eos_token_id = eos_token_id
        self.seed = seed
        self._shares = torch.tensor([mix.text, mix.repeat_text, mix.repeat_random], dtype=torch.float64)

    def batch(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The batch for training step `step` (0-based); the same on every call and machine.

        Returns:
            input_ids  # [batch, seq_len]
            targets    # [batch, seq_len], next tokens; IGNORE_INDEX where there is nothing to learn
        """
        gen = torch.Generator().manual_seed(self.seed * 1_000_003 + step)
        kinds = torch.multinomial(self._shares, self.batch_size, replacement=True, generator=gen)
        rows, masks = [], []
        for kind in kinds.tolist():
            row, mask = self._row(ROW_KINDS[kind], gen)
            rows.append(row)
            masks.append(mask)
        rows_t = torch.stack(rows)  # [batch, seq_len + 1]
        targets = rows_t[:, 1:].clone()
        targets[torch.stack(masks)[:, 1:]] = IGNORE_INDEX
        return rows_t[:, :-1], targets

    def _window(self, length: int, gen: torch.Generator) -> torch.Tensor:
        start = int(torch.randint(0, self.stream.numel() - length + 1, (1,), generator=gen))
        return self.stream[start : start + length]

    def _span_length(self, gen: torch.Generator) -> int:
        half = self.seq_len // 2  # the row has 1 + seq_len tokens: eos, then two copies of `half` tokens
        if float(torch.rand((), generator=gen)) < self.mix.half_row_share:
            return half
        return int(torch.randint(self.mix.min_span, half + 1, (1,), generator=gen))

    def _row(self, kind: str, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """One row of `seq_len + 1` tokens and a mask of target positions to ignore."""
        n = self.seq_len + 1
        mask = torch.zeros(n, dtype=torch.bool)
        if kind == "text":
            return self._window(n, gen), mask
        span_len = self._span_length(gen)
        if kind == "repeat_text":
            span = self._window(span_len, gen)
        else:
            span = torch.randint(self.vocab_low, self.vocab_high, (span_len,), generator=gen)
            mask[: 1 + span_len] = True  # the first copy of random tokens cannot be predicted
        copies = (n - 1 + span_len - 1) // span_len
        row = torch.cat([torch.tensor([self.eos_token_id]), span.repeat(copies)])[:n]
        return row, mask


def validation_windows(stream: torch.Tensor, seq_len: int) -> torch.Tensor:
    """Cut a token stream into non-overlapping rows of `seq_len + 1` tokens that overlap by one token,
    so every token but the first is predicted exactly once (the tail shorter than a row is dropped).

    Returns:
        rows  # [n_rows, seq_len + 1]
    """
    n_rows = (stream.numel() - 1) // seq_len
    if n_rows < 1:
        raise ValueError(f"validation text has {stream.numel()} tokens, fewer than one row of {seq_len + 1}")
    idx = torch.arange(n_rows)[:, None] * seq_len + torch.arange(seq_len + 1)[None, :]
    return stream.long()[idx]
