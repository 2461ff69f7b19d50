"""The paper's zero-shot estimator: ask a reasoner for its own budget and read ``[[N]]``.

The prompt is ``reasoner.prompts.estimation_prompt`` through any ``Backend``. The reply's budget is
the integer in the last ``[[...]]`` that holds one (``[[120]]``, ``Budget: [[ 120 tokens ]]``,
``[[1,200]]``); a reply with no bracketed number but a ``Budget: N`` line is read from that line.
A reply with neither gets the configured default budget and is counted in ``fallbacks``: never
budget -1, the defect of the authors' code. Every budget is clamped into the budget range.

The estimation call is not free: the tokens it spends (prompt and output, as the backend counted
them) and its wall time are kept per call (``last_cost``) and in total (``total_cost``).
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Literal

from predictor import BudgetRange
from reasoner.backends import Backend
from reasoner.errors import ConfigError
from reasoner.prompts import LANGUAGES, Language, estimation_prompt

logger = logging.getLogger(__name__)

_NUMBER = r"(?<!\d)[-+]?\d[\d,]*(?:\.\d+)?"  # a sign only where no digit precedes: 100-200 is 100, 200
_BRACKETS = re.compile(r"\[\[(.*?)\]\]", re.DOTALL)
_IN_BRACKETS = re.compile(_NUMBER)
_LABELLED = re.compile(rf"budget\s*[:=]\s*({_NUMBER})", re.IGNORECASE)

Source = Literal["brackets", "label", "default"]


@dataclass(frozen=True)
class LLMEstimatorConfig:
    """Settings of the zero-shot estimator."""

    max_new_tokens: int = 32  # for the estimation reply; "Budget: [[120]]" takes ~8, a cut-off reply falls back
    default_budget: int = 128  # given (and counted) when a reply states no budget
    language: Language = "en"  # of the estimation prompt: "en" or "zh"
    budget_range: BudgetRange = field(default_factory=BudgetRange)  # stated budgets are clamped into it

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.language not in LANGUAGES:
            raise ConfigError(f"language must be one of {LANGUAGES}, got {self.language!r}")
        if not self.budget_range.min <= self.default_budget <= self.budget_range.max:
            raise ConfigError(
                f"default_budget must lie in the budget range [{self.budget_range.min}, "
                f"{self.budget_range.max}], got {self.default_budget}"
            )


@dataclass(frozen=True)
class ParsedBudget:
    """What a reply said, before the default and the clamp."""

    value: float | None  # None: no budget found
    source: Source  # "brackets" ([[N]]), "label" (Budget: N without brackets) or "default"


@dataclass(frozen=True)
class BudgetEstimate:
    """One question's estimate and what it cost."""

    budget: int  # clamped; the default when the reply stated none
    reply: str
    source: Source
    clamped: bool  # the stated budget lay outside the budget range
    prompt_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class EstimationCost:
    """What estimation spent: one ``predict`` call (``last_cost``) or all of them (``total_cost``)."""

    questions: int = 0
    prompt_tokens: int = 0
    output_tokens: int = 0
    seconds: float = 0.0  # wall time of the backend calls
    fallbacks: int = 0  # replies without a budget, given the default

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.output_tokens

    def __add__(self, other: EstimationCost) -> EstimationCost:
        return EstimationCost(
            self.questions + other.questions,
            self.prompt_tokens + other.prompt_tokens,
            self.output_tokens + other.output_tokens,
            self.seconds + other.seconds,
            self.fallbacks + other.fallbacks,
        )


def parse_budget(reply: str) -> ParsedBudget:
    """The budget a reply states: the last ``[[...]]`` holding a number, else a ``Budget: N`` line."""
    for inside in reversed(_BRACKETS.findall(reply)):
        numbers = _IN_BRACKETS.findall(inside)
        if numbers:
            return ParsedBudget(_number(numbers[-1]), "brackets")
    labelled = _LABELLED.findall(reply)
    if labelled:
        return ParsedBudget(_number(labelled[-1]), "label")
    return ParsedBudget(None, "default")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


class LLMEstimator:
    """Satisfies ``Estimator`` (and ``SpendsTokens``) by asking ``backend`` for each budget."""

    def __init__(self, backend: Backend, config: LLMEstimatorConfig = LLMEstimatorConfig()) -> None:
        self.backend = backend
        self.config = config
        self.last_cost = EstimationCost()
        self.total_cost = EstimationCost()
        self.last_estimates: list[BudgetEstimate] = []

    @property
    def tokens_spent(self) -> int:
        return self.total_cost.tokens

    @property
    def fallbacks(self) -> int:
        return self.total_cost.fallbacks

    def estimate(self, questions: Sequence[str]) -> list[BudgetEstimate]:
        """One estimate per question, from one batched backend call."""
        if not questions:
            return []
        prompts = [estimation_prompt(q, language=self.config.language) for q in questions]
        start = time.perf_counter()
        generations = self.backend.generate(prompts, self.config.max_new_tokens)
        seconds = time.perf_counter() - start
        if len(generations) != len(prompts):
            raise RuntimeError(f"backend {self.backend.name} returned {len(generations)} replies for {len(prompts)} prompts")
        estimates = [self._estimate(g.text, g.prompt_tokens, g.output_tokens) for g in generations]
        fallbacks = sum(e.source == "default" for e in estimates)
        if fallbacks:
            logger.warning("%d of %d estimation replies stated no budget; used the default %d",
                           fallbacks, len(estimates), self.config.default_budget)
        self.last_cost = EstimationCost(
            questions=len(questions),
            prompt_tokens=sum(e.prompt_tokens for e in estimates),
            output_tokens=sum(e.output_tokens for e in estimates),
            seconds=seconds,
            fallbacks=fallbacks,
        )
        self.total_cost = self.total_cost + self.last_cost
        self.last_estimates = estimates
        return estimates

    def _estimate(self, reply: str, prompt_tokens: int, output_tokens: int) -> BudgetEstimate:
        parsed = parse_budget(reply)
        limits = self.config.budget_range
        if parsed.value is None:
            budget, clamped = self.config.default_budget, False
        else:
            budget = limits.clamp(parsed.value)
            clamped = not limits.min <= parsed.value <= limits.max  # a huge number parses as inf: clamped
        return BudgetEstimate(budget, reply, parsed.source, clamped, prompt_tokens, output_tokens)

    @property
    def budget_range(self) -> BudgetRange:
        return self.config.budget_range

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        """The stated budgets (already whole numbers, clamped): a reply is one number, with nothing finer behind it."""
        return [float(b) for b in self.predict(questions)]

    def predict(self, questions: Sequence[str]) -> list[int]:
        return [e.budget for e in self.estimate(questions)]
