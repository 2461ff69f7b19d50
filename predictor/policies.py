"""Budget policies: each question's rung, chosen from its (predicted) success curve.

- ``price``: the rung that maximises P(correct | b) - lambda x tokens(b): lambda is what a token costs in
  units of one correct answer (lambda = 0.002: 500 tokens are worth one right answer);
- ``target``: the smallest rung whose P reaches ``share`` of the question's top-rung P;
- ``total``: one token total for a whole list of questions, spent greedily where the predicted gain in
  correct answers per token is largest (``allocate_curves``).

A chosen rung of 0 means the direct prompt (answer without reasoning); the top rung ``None`` vanilla CoT.
Standard library only, so the torch-free gateway can use them.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from predictor.curves import Curve
from reasoner.errors import ConfigError

PolicyKind = Literal["price", "target", "total"]
POLICY_KINDS: tuple[PolicyKind, ...] = ("price", "target", "total")


@dataclass(frozen=True)
class Policy:
    """A policy and its one setting: lambda (price), share (target) or mean tokens per question (total)."""

    kind: PolicyKind
    value: float

    def __post_init__(self) -> None:
        if self.kind not in POLICY_KINDS:
            raise ConfigError(f"policy must be one of {POLICY_KINDS}, got {self.kind!r}")
        if self.value < 0 or (self.kind == "target" and self.value > 1):
            raise ConfigError(f"{self.kind}: {self.value} is out of range ({'0..1' if self.kind == 'target' else '>= 0'})")

    def choose(self, curves: Sequence[Curve]) -> list[int]:
        """Each curve's chosen rung, as an index into its rungs."""
        if self.kind == "price":
            return [by_price(c, self.value) for c in curves]
        if self.kind == "target":
            return [by_target(c, self.value) for c in curves]
        return allocate_curves(curves, self.value * len(curves))

    def __str__(self) -> str:
        return f"{self.kind}={self.value:g}"


def parse_policy(text: str) -> Policy:
    """``"price=0.002"`` -> ``Policy("price", 0.002)``; a ``ConfigError`` naming the form otherwise."""
    kind, eq, value = text.strip().partition("=")
    try:
        number = float(value) if eq and kind in POLICY_KINDS else math.nan
    except ValueError:
        number = math.nan
    if not math.isfinite(number):
        raise ConfigError(f"{text!r}: a policy is price=LAMBDA, target=SHARE (0..1) or total=TOKENS, with a number after '='")
    return Policy(kind, number)  # type: ignore[arg-type]  (checked: one of POLICY_KINDS)


def by_price(curve: Curve, lam: float) -> int:
    """argmax_r P_r - lam * tokens_r; ties go to the cheaper rung."""
    values = [p - lam * t for p, t in zip(curve.success, curve.tokens)]
    best = max(values)
    return min((i for i, v in enumerate(values) if v >= best - 1e-12), key=lambda i: curve.tokens[i])


def by_target(curve: Curve, share: float) -> int:
    """The first rung whose P reaches ``share`` of the top rung's P."""
    goal = share * curve.success[-1]
    return next(i for i, p in enumerate(curve.success) if p >= goal - 1e-12)


def allocate_curves(curves: Sequence[Curve], total: float) -> list[int]:
    """Rungs whose expected tokens sum to at most ``total`` (when the cheapest rungs fit), bought where the
    expected gain in correct answers per token is largest.

    Each question starts at its cheapest rung; its moves up go along the upper concave hull of its
    (tokens, P) points, best gain per token first over all questions; a move that no longer fits ends
    that question's climb, the others go on (the greedy solution of a knapsack over concave curves)."""
    chosen = [min(range(len(c.tokens)), key=lambda i: (c.tokens[i], -c.success[i])) for c in curves]
    spent = sum(c.tokens[i] for c, i in zip(curves, chosen))
    hulls = [_hull(c, start) for c, start in zip(curves, chosen)]
    heap = [(-gain / cost, q, 0) for q, hull in enumerate(hulls) if hull for _, cost, gain in [hull[0]]]
    heapq.heapify(heap)
    while heap:
        _, q, k = heapq.heappop(heap)
        target, cost, _ = hulls[q][k]
        if spent + cost > total + 1e-9:
            continue
        spent += cost
        chosen[q] = target
        if k + 1 < len(hulls[q]):
            _, cost, gain = hulls[q][k + 1]
            heapq.heappush(heap, (-gain / cost, q, k + 1))
    return chosen


def _hull(curve: Curve, start: int) -> list[tuple[int, float, float]]:
    """(rung index, extra tokens, extra P) of the moves along the upper concave hull from ``start``."""
    points = sorted((t, p, i) for i, (p, t) in enumerate(zip(curve.success, curve.tokens))
                    if t > curve.tokens[start] and p > curve.success[start])
    hull = [(curve.tokens[start], curve.success[start], start)]
    for point in points:
        if point[1] <= hull[-1][1]:
            continue
        while len(hull) >= 2 and _slope(hull[-2], hull[-1]) <= _slope(hull[-2], point):
            hull.pop()
        hull.append(point)
    return [(b[2], b[0] - a[0], b[1] - a[1]) for a, b in zip(hull, hull[1:])]


def _slope(a: tuple[float, float, int], b: tuple[float, float, int]) -> float:
    return (b[1] - a[1]) / (b[0] - a[0])
