"""lm-eval's `generation_kwargs` (a task's YAML, `--gen_kwargs`) checked and normalised for `RequestEngine`.

lm-eval's hf backend samples only when `do_sample` is true; `temperature: 0.0` (GSM8K's YAML) means greedy. The
same rules apply here, so a task's YAML decodes the same way on both backends.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# key -> (type, check, what is allowed)
_CHECKS: dict[str, tuple[type | tuple[type, ...], Any, str]] = {
    "max_gen_toks": (int, lambda v: v >= 1, "an int >= 1"),
    "do_sample": (bool, lambda v: True, "true or false"),
    "temperature": ((int, float), lambda v: v >= 0, "a number >= 0"),
    "top_p": ((int, float), lambda v: 0 < v <= 1, "a number in (0, 1]"),
    "top_k": (int, lambda v: v >= 1, "an int >= 1"),
    "seed": (int, lambda v: True, "an int"),
    "repetition_penalty": ((int, float), lambda v: v > 0, "a number > 0"),
    "no_repeat_ngram_size": (int, lambda v: v >= 0, "an int >= 0"),
    "min_new_tokens": (int, lambda v: v >= 0, "an int >= 0"),
}
ALLOWED = ("until", *_CHECKS)


def normalize(kwargs: Mapping[str, Any] | None, default_max: int = 256) -> dict[str, Any]:
    """Checked generation arguments with lm-eval's defaults filled in.

    Args:
        kwargs: `until` (a string or list of strings), `max_gen_toks`, `do_sample`, `temperature`, `top_p`, `top_k`,
            `seed`, `repetition_penalty`, `no_repeat_ngram_size`, `min_new_tokens`; None is `{}`.
        default_max: `max_gen_toks` when absent (lm-eval's 256).

    Returns:
        `{"until": [...], "max_gen_toks": n, "do_sample": bool, ...}`: sampling keys only when sampling.

    Raises:
        ValueError: an unknown key (lists the allowed ones), a value of the wrong type or range, or `do_sample`
            with temperature 0.
    """
    kw = dict(kwargs or {})
    unknown = sorted(set(kw) - set(ALLOWED))
    if unknown:
        raise ValueError(f"unknown generation argument(s) {unknown}; allowed: {', '.join(ALLOWED)}")
    until = kw.pop("until", None) or []
    until = [until] if isinstance(until, str) else list(until)
    if not all(isinstance(u, str) for u in until):
        raise ValueError(f"generation argument until must be a string or a list of strings, got {until!r}")
    for key, value in kw.items():
        types, ok, allowed = _CHECKS[key]
        if isinstance(value, bool) and types is not bool or not isinstance(value, types) or not ok(value):
            raise ValueError(f"generation argument {key} must be {allowed}, got {value!r}")
    out: dict[str, Any] = {"until": until, "max_gen_toks": int(kw.pop("max_gen_toks", default_max))}
    do_sample = bool(kw.pop("do_sample", False))
    sampling = {k: kw.pop(k) for k in ("temperature", "top_p", "top_k", "seed") if k in kw}
    if do_sample:
        if sampling.get("temperature", 1.0) == 0:
            raise ValueError("generation arguments do_sample=true and temperature=0 contradict each other "
                             "(temperature 0 is greedy decoding)")
        out.update(do_sample=True, **sampling)
    out.update(kw)  # repetition penalties apply to greedy decoding too
    return out
