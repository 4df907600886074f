"""A prefix forest over model inputs, so that a token prefix shared by several inputs is run once.

Few-shot prompts share long prefixes: MMLU's five dev-set examples open every question of a subject, and the
answer choices of one question share its whole context. In the forest, the path from a root to a node spells a
prefix common to every input below it; each node holds one segment of tokens, which the engine runs once with its
parent's KV cache. A shared segment shorter than `min_shared` tokens is not split off: the inputs below recompute
it, which costs less than one more batched forward.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass, field

Tokens = tuple[int, ...]


@dataclass
class PrefixNode:
    """One segment of the forest.

    Attributes:
        start: position of the segment's first token in every input below (= the length of the prefix before it).
        tokens: the segment.
        inputs: every input whose path passes through this node (sorted).
        children: nodes that continue the prefix, each with a different next token (or a short shared segment).
        ends: the input that ends in this node (its last token is the segment's last), or None.
    """

    start: int
    tokens: Tokens
    inputs: list[Tokens]
    children: list[PrefixNode] = field(default_factory=list)
    ends: Tokens | None = None

    @property
    def stop(self) -> int:
        """Position after the segment's last token (the prefix length including this segment)."""
        return self.start + len(self.tokens)


def build_prefix_forest(inputs: Iterable[Tokens], min_shared: int) -> list[PrefixNode]:
    """The forest of the distinct non-empty `inputs`; every input ends in exactly one node.

    Args:
        inputs: token tuples.
        min_shared: shortest segment worth sharing (>= 1); a very large value gives one leaf per input.

    Returns:
        The root nodes.
    """
    if min_shared < 1:
        raise ValueError(f"min_shared must be >= 1, got {min_shared}")
    unique = sorted(set(inputs))
    if not unique:
        return []
    if not unique[0]:
        raise ValueError("empty input: every input needs at least one token")
    # Nesting grows by at most two calls per token of the longest input (a chain of inputs that are prefixes of
    # one another); a 2,048-token window can need more than Python's default limit of 1,000.
    needed = 2 * max(map(len, unique)) + 100
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(max(limit, needed))
    try:
        return _build(unique, 0, min_shared)
    finally:
        sys.setrecursionlimit(limit)


def _build(inputs: list[Tokens], depth: int, min_shared: int) -> list[PrefixNode]:
    """Nodes for sorted `inputs` that all share their first `depth` tokens, starting at `depth`."""
    first, last = inputs[0], inputs[-1]
    common = _common_length(first, last, depth)  # sorted: the first and last differ earliest
    end = first if len(first) == common else None  # sorted: an input that is a prefix of the others comes first
    runs = _runs_by_token(inputs[1:] if end is not None else inputs, common)
    if len(runs) + (end is not None) == 1 or common - depth >= min_shared:
        children = [node for run in runs for node in _build(run, common, min_shared)]
        return [PrefixNode(depth, first[depth:common], inputs, children, end)]
    # too short to share: each branch starts at `depth` and recomputes the short segment
    nodes = [PrefixNode(depth, end[depth:], [end], [], end)] if end is not None else []
    for run in runs:
        nodes += _build(run, depth, min_shared)
    return nodes


def _common_length(a: Tokens, b: Tokens, start: int) -> int:
    """Length of the common prefix of `a` and `b`, known to agree before `start`."""
    n = min(len(a), len(b))
    i = start
    while i < n and a[i] == b[i]:
        i += 1
    return i


def _runs_by_token(inputs: list[Tokens], position: int) -> list[list[Tokens]]:
    """Consecutive groups of sorted `inputs` with the same token at `position` (all are longer than it)."""
    runs: list[list[Tokens]] = []
    for x in inputs:
        if runs and runs[-1][0][position] == x[position]:
            runs[-1].append(x)
        else:
            runs.append([x])
    return runs
