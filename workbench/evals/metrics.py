"""Metrics: per-document scores and their aggregation, defined as lm-evaluation-harness defines them.

Multiple choice (one log-likelihood per choice, `lls`):

- `acc`: argmax of the raw log-likelihoods.
- `acc_norm`: argmax of log-likelihood / *character* length of the choice text (without the target delimiter),
  exactly lm-eval's `acc_norm`.
- `acc_per_token`: argmax of log-likelihood / number of continuation tokens (GPT-3 paper's per-token norm).
- `acc_uncond`: argmax of log P(choice | context) - log P(choice | "Answer:"), the GPT-3 paper's
  unconditional normalisation used for ARC and OpenBookQA.

Ties go to the first choice (`numpy.argmax`), as in lm-eval.
"""

from __future__ import annotations

import math
import random
import re
import string
from collections.abc import Sequence

import numpy as np


def mc_predictions(
    lls: Sequence[float],
    choices: Sequence[str],
    n_tokens: Sequence[int] | None = None,
    lls_uncond: Sequence[float] | None = None,
) -> dict[str, int]:
    """Predicted choice index under each multiple-choice scoring rule.

    Args:
        lls: log P(choice_i | context) per choice.
        choices: the choice texts (character lengths for acc_norm).
        n_tokens: continuation token count per choice (per-token normalisation), optional.
        lls_uncond: log P(choice_i | "Answer:") per choice (unconditional normalisation), optional.

    Returns:
        `{"acc": i, "acc_norm": j, ...}` for the rules whose inputs were given.
    """
    lls_a = np.asarray(lls, dtype=np.float64)
    out = {
        "acc": int(np.argmax(lls_a)),
        "acc_norm": int(np.argmax(lls_a / np.array([float(len(c)) for c in choices]))),
    }
    if n_tokens is not None:
        out["acc_per_token"] = int(np.argmax(lls_a / np.asarray(n_tokens, dtype=np.float64)))
    if lls_uncond is not None:
        out["acc_uncond"] = int(np.argmax(lls_a - np.asarray(lls_uncond, dtype=np.float64)))
    return out


def mean(values: Sequence[float]) -> float:
    """Arithmetic mean."""
    return float(sum(values) / len(values))


def mean_stderr(values: Sequence[float]) -> float | None:
    """Standard error of the mean with the sample standard deviation (ddof=1), as lm-eval; None for n < 2."""
    n = len(values)
    if n < 2:
        return None
    mu = mean(values)
    return math.sqrt(sum((x - mu) ** 2 for x in values) / (n - 1)) / math.sqrt(n)


def perplexity(lls: Sequence[float]) -> float:
    """lm-eval's `perplexity` aggregation: exp(-mean log-likelihood per document).

    For lambada_openai each document's log-likelihood is that of its last word, so this is the per-word perplexity
    lm-eval reports.
    """
    return math.exp(-mean(lls))


def perplexity_stderr(lls: Sequence[float], iters: int = 100_000) -> float | None:
    """lm-eval's standard error of `perplexity`: its bootstrap (`bootstrap_stderr`) with `iters` resamples;
    None for fewer than 2 documents or `iters` = 0 (lm-eval's "N/A")."""
    if len(lls) < 2 or iters <= 0:
        return None
    return bootstrap_stderr(_perplexity_rows, lls, iters)


def _perplexity_rows(rows: np.ndarray) -> list[float]:
    """`perplexity` of each row of `rows` `[resamples, docs]`, the mean summed left to right as Python's `sum`
    does (so every value is bit-identical to lm-eval's)."""
    total = np.zeros(rows.shape[0])
    for j in range(rows.shape[1]):
        total += rows[:, j]
    return [math.exp(-t / rows.shape[1]) for t in total.tolist()]


def bootstrap_stderr(statistic, xs: Sequence[float], iters: int) -> float:
    """lm-eval's `bootstrap_stderr`, resample for resample: chunks of min(1000, iters) resamples, chunk i drawn by
    `random.Random(i).choices(xs, k=len(xs))`, then the sample standard deviation of the statistics.

    The draws are Python's Mersenne Twister stream reproduced in numpy (the same 53-bit `random()` values, hence
    the same indices), so 100,000 resamples of 5,000 documents take seconds instead of minutes.

    Args:
        statistic: the aggregation of each resample: float64 `[resamples, len(xs)]` -> one value per row.
        xs: per-document values.
        iters: resamples (lm-eval's `bootstrap_iters`; only whole chunks are drawn, as lm-eval does).

    Returns:
        The standard error (float).
    """
    x = np.asarray(xs, dtype=np.float64)
    n, chunk = len(x), min(1000, iters)
    stats = []
    for i in range(iters // chunk):
        state = random.Random(i).getstate()[1]
        bitgen = np.random.MT19937()
        bitgen.state = {"bit_generator": "MT19937", "state": {"key": np.array(state[:624], dtype=np.uint32),
                                                               "pos": state[624]}}
        raw = bitgen.random_raw(2 * n * chunk).astype(np.uint64).reshape(chunk, n, 2)
        # CPython's random(): (a >> 5) * 2**26 + (b >> 6), over 2**53; choices() takes floor(random() * n)
        u = ((raw[..., 0] >> 5) * 67108864 + (raw[..., 1] >> 6)).astype(np.float64) / 9007199254740992.0
        idx = np.floor(u * float(n)).astype(np.int64)
        stats += list(statistic(x[idx]))
    mu = sum(stats) / len(stats)
    return math.sqrt(sum((v - mu) ** 2 for v in stats) / (len(stats) - 1))


def weighted_perplexity(pairs: Sequence[tuple[float, int]]) -> float:
    """lm-eval's `weighted_perplexity`: exp(-sum ll / sum units) over `(loglikelihood, words or bytes)` pairs."""
    return math.exp(-sum(p[0] for p in pairs) / sum(p[1] for p in pairs))


def bits_per_byte(pairs: Sequence[tuple[float, int]]) -> float:
    """lm-eval's `bits_per_byte`: -sum ll / sum bytes / ln 2."""
    return -sum(p[0] for p in pairs) / sum(p[1] for p in pairs) / math.log(2)


def word_perplexity(total_ll: float, n_words: int) -> float:
    """Rolling-loglikelihood perplexity per word: exp(-sum ll / words) (lm-eval's `word_perplexity`)."""
    return math.exp(-total_ll / n_words)


def count_words(text: str) -> int:
    """lm-eval's word count for perplexity: `len(re.split(r"\\s+", text))`."""
    return len(re.split(r"\s+", text))


def count_bytes(text: str) -> int:
    """UTF-8 bytes (lm-eval's `count_bytes`)."""
    return len(text.encode("utf-8"))


def pooled_sample_stderr(stderrs: Sequence[float], sizes: Sequence[int]) -> float:
    """lm-eval's standard error of a size-weighted group mean from its subtasks' standard errors and sizes."""
    var = sum((n - 1) * se**2 * n for n, se in zip(sizes, stderrs)) / (sum(sizes) - len(sizes))
    return math.sqrt(var / sum(sizes))


_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")


def normalize_answer(text: str, ignore_case: bool = True, ignore_punctuation: bool = True,
                     regexes_to_ignore: Sequence[str] = (), ignore_numbers: bool = False) -> str:
    """lm-eval's exact_match normalisation (`exact_match_hf_evaluate`): each regex of `regexes_to_ignore` removed in
    turn, then optional lower-casing, punctuation and digit removal. No stripping: lm-eval does not strip either."""
    for pattern in regexes_to_ignore:
        text = re.sub(pattern, "", text)
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = text.translate(str.maketrans("", "", string.punctuation))
    if ignore_numbers:
        text = text.translate(str.maketrans("", "", string.digits))
    return text


def exact_match(prediction: str, references: Sequence[str], ignore_case: bool = True, ignore_punctuation: bool = True,
                regexes_to_ignore: Sequence[str] = (), ignore_numbers: bool = False) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0 (lm-eval's exact_match with
    several targets)."""
    opts = dict(ignore_case=ignore_case, ignore_punctuation=ignore_punctuation, regexes_to_ignore=regexes_to_ignore,
                ignore_numbers=ignore_numbers)
    pred = normalize_answer(prediction, **opts)
    return float(any(pred == normalize_answer(str(r), **opts) for r in references))
