"""Paired comparison of two evaluation runs on the same questions: gained, lost and a sign test.

Two methods asked the same questions are compared question by question: a question one answers and
the other does not is a discordant pair, and under "no difference" each discordant pair goes either
way with probability 1/2, so the two-sided exact sign test on them is the test this toolkit reports.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from math import comb
from typing import Any, Protocol


class _Row(Protocol):
    correct: bool
    output_tokens: int


def sign_test(gained: int, lost: int) -> float:
    """Two-sided exact sign test on the discordant pairs (1.0 when there are none)."""
    n = gained + lost
    return min(1.0, 2 * sum(comb(n, i) for i in range(min(gained, lost) + 1)) / 2**n) if n else 1.0


@dataclass(frozen=True)
class Paired:
    """Run A against run B on the questions both hold."""

    n: int
    gained: int  # A right, B wrong
    lost: int  # B right, A wrong
    shorter: int  # A's answer has fewer output tokens
    longer: int

    @property
    def p_value(self) -> float:
        return sign_test(self.gained, self.lost)

    def describe(self, alpha: float = 0.05) -> str:
        verdict = (f"a significant difference (p < {alpha:g})" if self.p_value < alpha
                   else f"within the noise of {self.n} questions")
        return (f"{self.gained} gained, {self.lost} lost (sign test p = {self.p_value:.2f}: {verdict}); "
                f"{self.shorter} answers shorter, {self.longer} longer")

    def to_json(self) -> dict[str, Any]:
        return {"n": self.n, "gained": self.gained, "lost": self.lost, "sign_test_p": round(self.p_value, 3),
                "shorter": self.shorter, "longer": self.longer}


def paired(a: Mapping[str, _Row], b: Mapping[str, _Row]) -> Paired:
    """Compare rows keyed by question id; only the ids both runs hold count."""
    shared = [k for k in a if k in b]
    return Paired(n=len(shared),
                  gained=sum(a[k].correct and not b[k].correct for k in shared),
                  lost=sum(b[k].correct and not a[k].correct for k in shared),
                  shorter=sum(a[k].output_tokens < b[k].output_tokens for k in shared),
                  longer=sum(a[k].output_tokens > b[k].output_tokens for k in shared))
