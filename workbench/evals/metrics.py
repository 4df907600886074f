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


def perplexity_stderr(lls: Sequence[float]) -> float | None:
    """Delta-method standard error of `perplexity`: exp(-m) * stderr(m).

    lm-eval bootstraps this (random, 100k resamples); the delta method is deterministic and agrees with it to
    first order.
    """
    se = mean_stderr(lls)
    return None if se is None else perplexity(lls) * se


def word_perplexity(total_ll: float, n_words: int) -> float:
    """Rolling-loglikelihood perplexity per word: exp(-sum ll / words) (lm-eval's `word_perplexity`)."""
    return math.exp(-total_ll / n_words)


_PUNCT = re.compile("[" + re.escape(string.punctuation) + "]")


def normalize_answer(text: str, ignore_case: bool = True, ignore_punctuation: bool = True) -> str:
    """lm-eval's exact_match normalisation: optional lower-casing and punctuation removal, then strip."""
    if ignore_case:
        text = text.lower()
    if ignore_punctuation:
        text = _PUNCT.sub("", text)
    return text.strip()


def exact_match(prediction: str, references: Sequence[str], ignore_case: bool = True, ignore_punctuation: bool = True) -> float:
    """1.0 when the normalised prediction equals any normalised reference, else 0.0."""
    pred = normalize_answer(prediction, ignore_case, ignore_punctuation)
    return float(any(pred == normalize_answer(r, ignore_case, ignore_punctuation) for r in references))
