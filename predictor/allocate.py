"""Spending one total token budget over a list of questions.

Each question i has an estimate e_i (the regressor's unrounded budget). With a calibration (the sorted
conformal scores s_1 <= ... <= s_n of log(b*/e) on n calibration records), question i's budget x covers
its needed budget b* with estimated probability C_i(x) = #{k : e_i * exp(s_k) <= x} / (n + 1), the
conformal estimate of P(b* <= x). Two allocations:

- ``proportional``: budget_i proportional to e_i, scaled so the budgets sum to the total;
- ``greedy``: start every question at the smallest budget and buy coverage where it is cheapest: along
  each question's concave hull of C_i, the segment with the most coverage per token first, while the
  total allows (the greedy solution of a knapsack over concave curves), which maximises the expected
  number of covered questions but for the one segment that did not fit.

Standard library only: the torch-free gateway (``tale serve``) uses it.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Sequence
from dataclasses import dataclass

from predictor import BudgetRange

ALLOCATIONS = ("greedy", "proportional")


@dataclass(frozen=True)
class Allocation:
    budgets: list[int]
    expected_coverage: float | None  # mean estimated P(b* <= budget) over the questions (greedy, calibrated)

    @property
    def total(self) -> int:
        return sum(self.budgets)


def coverage(estimate: float, scores: Sequence[float], budget: int) -> float:
    """C(x): the share of calibration levels e * exp(s_k) at or below ``budget``, over n + 1."""
    return sum(estimate * math.exp(s) <= budget for s in scores) / (len(scores) + 1)


def proportional(estimates: Sequence[float], total: int, budget_range: BudgetRange) -> Allocation:
    """Budgets proportional to the estimates, floored so they never sum above ``total``."""
    _check(estimates, total, budget_range)
    weight = sum(estimates)
    budgets = [max(budget_range.min, min(budget_range.max, math.floor(total * e / weight))) for e in estimates]
    while sum(budgets) > total:  # the floor of budget_range.min can push the sum over: take from the largest
        i = max(range(len(budgets)), key=budgets.__getitem__)
        budgets[i] -= 1
    return Allocation(budgets, None)


def greedy(estimates: Sequence[float], scores: Sequence[float], total: int, budget_range: BudgetRange) -> Allocation:
    """Coverage bought at the best price first, while the total allows.

    Each question's coverage C_i(x) is a step function of its budget; its upper concave hull, from the
    smallest budget up, is a sequence of segments of falling price (tokens per unit of coverage). The
    segments of all questions are bought best price first; one that no longer fits ends its question
    (the later ones start where it ends), the others go on; what is left buys the cheapest single
    levels. With whole segments this is the greedy solution of a knapsack over concave curves."""
    _check(estimates, total, budget_range)
    if not scores:
        raise ValueError("a greedy allocation needs calibration scores")
    hulls = [_hull(sorted(budget_range.clamp(e * math.exp(s)) for s in scores), budget_range.min) for e in estimates]
    budgets = [budget_range.min] * len(estimates)
    spent = sum(budgets)
    heap = [(-gain / cost, i, 0) for i, hull in enumerate(hulls) if hull for cost, gain in [hull[0]]]
    heapq.heapify(heap)
    while heap:
        _, i, k = heapq.heappop(heap)
        cost, _ = hulls[i][k]
        if spent + cost > total:
            continue  # this question stops here; cheaper segments of others may still fit
        spent += cost
        budgets[i] += cost
        if k + 1 < len(hulls[i]):
            cost, gain = hulls[i][k + 1]
            heapq.heappush(heap, (-gain / cost, i, k + 1))
    _fill(budgets, [sorted({budget_range.clamp(e * math.exp(s)) for s in scores}) for e in estimates], total - spent)
    expected = sum(coverage(e, scores, b) for e, b in zip(estimates, budgets)) / len(estimates)
    return Allocation(budgets, expected)


def _fill(budgets: list[int], levels: list[list[int]], left: int) -> None:
    """What the hull segments left unspent: the cheapest single next levels, while they fit."""
    heap = [(level - budgets[i], i, level) for i, steps in enumerate(levels)
            for level in [next((x for x in steps if x > budgets[i]), None)] if level is not None]
    heapq.heapify(heap)
    while heap and heap[0][0] <= left:
        cost, i, level = heapq.heappop(heap)
        left -= cost
        budgets[i] = level
        following = next((x for x in levels[i] if x > level), None)
        if following is not None:
            heapq.heappush(heap, (following - level, i, following))


def _hull(levels: list[int], start: int) -> list[tuple[int, int]]:
    """(cost, levels gained) of the segments of the upper concave hull of the coverage steps, from
    ``start``: the points are (start, levels at or below it) and (level, levels at or below it)."""
    points = [(start, sum(level <= start for level in levels))]
    for level in levels:
        if level > start:
            count = sum(other <= level for other in levels)
            if points[-1][0] == level:
                points[-1] = (level, count)
            else:
                points.append((level, count))
    hull = [points[0]]
    for point in points[1:]:
        while len(hull) >= 2 and _slope(hull[-2], hull[-1]) <= _slope(hull[-2], point):
            hull.pop()
        hull.append(point)
    return [(b[0] - a[0], b[1] - a[1]) for a, b in zip(hull, hull[1:])]


def _slope(a: tuple[int, int], b: tuple[int, int]) -> float:
    return (b[1] - a[1]) / (b[0] - a[0])


def _check(estimates: Sequence[float], total: int, budget_range: BudgetRange) -> None:
    if not estimates:
        raise ValueError("no questions to allocate a total to")
    if total < budget_range.min * len(estimates):
        raise ValueError(f"total {total} is below {budget_range.min} tokens (the smallest budget) for each of the "
                         f"{len(estimates)} questions")
