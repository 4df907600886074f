"""`workbench generate`: the streamed output is `model.generate`'s text, with the CLI's defaults and its flags."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

import workbench

PROMPT = "And God said"
# The CLI's defaults (workbench/cli.py), written out so that changing one shows up here.
DEFAULTS = dict(max_new_tokens=40, do_sample=False, repetition_penalty=1.5, no_repeat_ngram_size=3)


def run_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")  # the tests' thread count (conftest), so the same float sums
    return subprocess.run([sys.executable, "-m", "workbench.cli", "generate", *args], capture_output=True,
                          text=True, env=env, timeout=300)


@pytest.fixture(scope="module")
def demo():
    if not (workbench.demo_path() / "config.json").is_file():
        pytest.skip("the embedded demo checkpoint is absent")
    return workbench.load("demo")


def test_default_output_is_generate_with_the_defaults(demo):
    out = run_cli("demo", PROMPT)
    assert out.returncode == 0, out.stderr
    expected = demo.generate(PROMPT, **DEFAULTS)
    assert out.stdout == expected + "\n"
    words = expected.split()
    assert len(words) > 20 and all(a != b for a, b in zip(words, words[1:]))  # no "not not not"


def test_flags_reach_generate(demo):
    kwargs = dict(max_new_tokens=30, do_sample=True, temperature=0.8, top_p=0.9, top_k=40, repetition_penalty=1.2,
                  no_repeat_ngram_size=0, seed=3)
    free = demo.generate(PROMPT, **kwargs)
    stop = free[len(PROMPT) :][15:18]
    out = run_cli("demo", PROMPT, "--max-new-tokens", "30", "--do-sample", "--temperature", "0.8", "--top-p", "0.9",
                  "--top-k", "40", "--repetition-penalty", "1.2", "--no-repeat-ngram-size", "0", "--seed", "3",
                  "--stop", stop, "--stop", "\u2603")
    assert out.returncode == 0, out.stderr
    expected = demo.generate(PROMPT, stop_strings=[stop, "\u2603"], **kwargs)
    assert out.stdout == expected + "\n" and len(expected) < len(free)


def test_bad_values_are_reported():
    out = run_cli("demo", PROMPT, "--repetition-penalty", "0")
    assert out.returncode == 2 and "repetition_penalty must be a number > 0" in out.stderr
