"""The prefix forest: every input ends in exactly one node, its path spells it, short shared segments are not split."""

from __future__ import annotations

import random

import pytest

from workbench.evals.prefix_tree import PrefixNode, build_prefix_forest


def walk(nodes: list[PrefixNode], with_depth: bool = False):
    """(node, the tokens before it[, its depth]) for every node (iterative: forests can be deeper than the stack)."""
    stack = [(node, (), 1) for node in reversed(nodes)]
    while stack:
        node, before, depth = stack.pop()
        yield (node, before, depth) if with_depth else (node, before)
        stack += [(child, before + node.tokens, depth + 1) for child in reversed(node.children)]


def check_forest(inputs: list[tuple], forest: list[PrefixNode], min_shared: int) -> None:
    ends = {}
    for node, before in walk(forest):
        assert node.start == len(before) and node.tokens
        assert all(x[: node.stop] == before + node.tokens for x in node.inputs)  # the path spells every input below
        if node.children:  # only a segment worth sharing is split off from what follows it
            assert len(node.tokens) >= min_shared
        if node.ends is not None:
            assert node.ends == before + node.tokens and node.ends not in ends
            ends[node.ends] = node
        assert sorted({x for c in node.children for x in c.inputs} | ({node.ends} if node.ends else set())) == sorted(
            set(node.inputs)
        )
    assert set(ends) == set(inputs)  # every input ends in exactly one node


def test_few_shot_prompts_share_their_examples():
    shots = tuple(range(100, 140))  # 40 tokens of few-shot examples, then one question per input
    inputs = [shots + (200 + q, 201, 202 + q) for q in range(5)]
    forest = build_prefix_forest(inputs, min_shared=16)
    check_forest(inputs, forest, 16)
    assert len(forest) == 1 and forest[0].tokens == shots and len(forest[0].children) == 5


def test_nested_context_and_continuations():
    ctx = tuple(range(10, 30))
    inputs = [ctx, ctx + (1, 2), ctx + (1, 3), ctx + (4,)]  # the context itself is an input (one-token answer)
    forest = build_prefix_forest(inputs, min_shared=4)
    check_forest(inputs, forest, 4)
    (root,) = forest
    assert root.tokens == ctx and root.ends == ctx
    assert sorted(c.tokens for c in root.children) == [(1, 2), (1, 3), (4,)]  # (1,) is shorter than min_shared


def test_short_shared_prefix_is_recomputed():
    inputs = [(1, 2, 3, 10, 11), (1, 2, 3, 20, 21)]
    forest = build_prefix_forest(inputs, min_shared=8)
    assert sorted(n.tokens for n in forest) == sorted(inputs) and all(not n.children for n in forest)


def test_no_sharing_gives_one_leaf_per_input():
    rnd = random.Random(0)
    inputs = [tuple(rnd.randrange(3) for _ in range(rnd.randrange(1, 12))) for _ in range(200)]
    forest = build_prefix_forest(inputs, min_shared=10**9)
    assert sorted(n.tokens for n in forest) == sorted(set(inputs)) and all(not n.children for n in forest)


@pytest.mark.parametrize("min_shared", [1, 2, 5])
def test_random_inputs(min_shared):
    rnd = random.Random(min_shared)
    inputs = [tuple(rnd.randrange(3) for _ in range(rnd.randrange(1, 15))) for _ in range(300)]
    check_forest(inputs, build_prefix_forest(inputs, min_shared), min_shared)


@pytest.mark.parametrize("min_shared", [1, 16])
def test_long_chain_of_prefixes(min_shared):
    # every input is a prefix of the next: the deepest nesting the forest can have, deeper than Python's default
    inputs = [tuple(range(n)) for n in range(1, 1200)]
    forest = build_prefix_forest(inputs, min_shared)
    ends = [node.ends for node, before in walk(forest) if node.ends is not None and node.ends == before + node.tokens]
    assert sorted(ends) == inputs  # each input ends once, where its path spells it
    assert all(len(node.tokens) >= min_shared for node, _ in walk(forest) if node.children)
    levels = max(depth for _, _, depth in walk(forest, with_depth=True))
    assert levels == (1199 if min_shared == 1 else 1199 // 16 + 1)  # a level per shared 16-token segment at most


def test_bad_arguments():
    with pytest.raises(ValueError, match="min_shared must be >= 1"):
        build_prefix_forest([(1,)], min_shared=0)
    with pytest.raises(ValueError, match="empty input"):
        build_prefix_forest([(), (1,)], min_shared=1)
