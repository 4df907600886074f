"""lm-eval's request types over one primitive, as lm-eval's `TemplateLM` builds them on `_loglikelihood_tokens`.

An engine (the model-backed `RequestEngine`, the `CachingEngine` wrapper) provides `encode_pairs`,
`loglikelihood_tokens`, `tok`, `prefix_id` and `max_length`; `TokenRequests` adds `loglikelihood` and
`loglikelihood_rolling` on top, so every engine answers them the same way.
"""

from __future__ import annotations

from collections.abc import Sequence


class TokenRequests:
    """`loglikelihood` and `loglikelihood_rolling` in terms of the engine's `loglikelihood_tokens`."""

    def loglikelihood(self, requests: Sequence[tuple[str, str]], desc: str = "loglikelihood") -> list[tuple[float, bool]]:
        """Sum of log-probabilities of each continuation given its context, and whether it is the greedy one.

        Args:
            requests: `(context, continuation)` strings.

        Returns:
            `(logprob, is_greedy)` per request, in order.
        """
        return self.loglikelihood_tokens(self.encode_pairs(requests), desc=desc)

    def loglikelihood_rolling(self, texts: Sequence[str], desc: str = "rolling loglikelihood") -> list[float]:
        """Log-likelihood of whole texts (perplexity), in maximal-context windows as lm-eval computes it.

        Returns:
            One summed log-probability per text (conditioned on the prefix token for the first token).
        """
        windows, owner = [], []
        for i, tokens in enumerate(self.tok.encode(texts)):
            for ctx, pred in rolling_windows(tokens, self.prefix_id, self.max_length):
                windows.append((ctx, pred))
                owner.append(i)
        totals = [0.0] * len(texts)
        for i, (ll, _) in zip(owner, self.loglikelihood_tokens(windows, desc=desc)):
            totals[i] += ll
        return totals


def rolling_windows(tokens: list[int], prefix_token: int, max_len: int) -> list[tuple[list[int], list[int]]]:
    """lm-eval's disjoint rolling windows (context_len=1): `(context ids, predicted ids)` covering every token once,
    each prediction with as much context as the window allows."""
    out = []
    if not tokens:
        return out
    first = min(max_len, len(tokens))
    out.append(([prefix_token], tokens[:first]))
    done = first
    while done < len(tokens):
        n = min(len(tokens) - done, max_len)
        end = done + n
        window = tokens[end - max_len - 1 : end - 1]
        out.append((window[: len(window) - (n - 1)], tokens[end - n : end]))
        done = end
    return out
