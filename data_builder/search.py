"""The TALE budget search (paper Algorithm 1 and 2, plus a true bisection), batched per round.

Every question starts with a vanilla chain-of-thought answer whose output tokens are the upper
bound. A wrong vanilla answer means no budget is feasible for this model: the question is recorded
as infeasible. Then each round asks every unfinished question at its next budget in one batched
backend call:

- ``halving`` (the paper's default): ``beta = right // 2``; feasible (correct) moves ``right`` to
  ``beta``; the first infeasible budget ends the search. Finds the smallest feasible budget only
  within a factor of two.
- ``elastic`` (the authors' token-elasticity variant): as ``halving``, but a round is feasible only
  if the answer is correct *and* used fewer tokens than the last feasible round.
- ``bisect``: keeps a left bound too; ``beta = (left + right) // 2``, an infeasible budget moves
  ``left`` up, and the search ends when ``right - left <= tolerance``. A few more calls, a tighter
  budget.

All modes stop below ``floor`` and after ``max_rounds`` budget-aware rounds.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from data_builder.sources import Problem
from reasoner.backends import MAX_NEW_TOKENS, Backend, Generation
from reasoner.errors import ConfigError
from reasoner.grading import grade
from reasoner.prompts import reasoning_prompt

logger = logging.getLogger(__name__)

SearchMode = Literal["halving", "elastic", "bisect"]
SEARCH_MODES: tuple[SearchMode, ...] = ("halving", "elastic", "bisect")


@dataclass(frozen=True)
class SearchConfig:
    """How budgets are searched."""

    mode: SearchMode = "halving"
    floor: int = 4  # no budget below this is tried
    max_rounds: int = 10  # budget-aware rounds after the vanilla one
    tolerance: int = 8  # bisect: stop when right - left <= tolerance (tokens)
    max_new_tokens: int = MAX_NEW_TOKENS  # generation cap of every call, vanilla included

    def __post_init__(self) -> None:
        if self.mode not in SEARCH_MODES:
            raise ConfigError(f"search mode must be one of {SEARCH_MODES}, got {self.mode!r}")
        for name in ("floor", "max_rounds", "tolerance", "max_new_tokens"):
            if getattr(self, name) < 1:
                raise ConfigError(f"{name} must be >= 1, got {getattr(self, name)}")


@dataclass(frozen=True)
class Round:
    """One call of the search: the budget asked for (None: vanilla), what came back."""

    budget: int | None
    output_tokens: int
    correct: bool
    predicted: str | None
    prompt_tokens: int


@dataclass
class _State:
    """A question's search in progress."""

    problem: Problem
    rounds: list[Round] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    left: int = 0
    right: int = 0  # the smallest budget found feasible so far (vanilla tokens at first)
    best: int | None = None  # index into rounds of the answer under ``right``
    done: bool = False


@dataclass(frozen=True)
class SearchResult:
    """The outcome for one question: the TALE quadruple and everything that led to it."""

    problem: Problem
    feasible: bool  # the vanilla answer was correct, so some budget works
    budget: int | None  # the searched budget beta*; None when infeasible
    reasoning: str | None  # the output under beta* (the vanilla output when no smaller budget held)
    predicted: str | None  # the answer extracted from ``reasoning``
    vanilla_text: str
    vanilla_tokens: int
    vanilla_correct: bool
    trace: tuple[Round, ...]

    @property
    def calls(self) -> int:
        return len(self.trace)

    @property
    def tokens_spent(self) -> int:
        return sum(r.prompt_tokens + r.output_tokens for r in self.trace)


def _next_budget(state: _State, config: SearchConfig) -> int | None:
    """The budget to try next, or None when the search is over."""
    if len(state.rounds) > config.max_rounds:
        return None
    if config.mode == "bisect":
        if state.right - state.left <= config.tolerance:
            return None
        beta = (state.left + state.right) // 2
    else:
        beta = state.right // 2
    return beta if beta >= config.floor else None


def _record(state: _State, budget: int | None, generation: Generation) -> Round:
    graded = grade(generation.text, state.problem.gold, state.problem.kind)
    step = Round(budget, generation.output_tokens, graded.correct, graded.predicted, generation.prompt_tokens)
    state.rounds.append(step)
    state.texts.append(generation.text)
    return step


def _step(state: _State, budget: int | None, generation: Generation, config: SearchConfig) -> None:
    step = _record(state, budget, generation)
    if budget is None:  # the vanilla round
        if step.correct:
            state.right, state.best = step.output_tokens, 0
        else:
            state.done = True
        return
    feasible = step.correct
    if config.mode == "elastic":
        feasible = feasible and step.output_tokens < state.rounds[state.best].output_tokens
    if feasible:
        state.right, state.best = budget, len(state.rounds) - 1
    elif config.mode == "bisect":
        state.left = budget
    else:
        state.done = True


def _result(state: _State) -> SearchResult:
    vanilla = state.rounds[0]
    best = None if state.best is None else state.rounds[state.best]
    return SearchResult(
        problem=state.problem,
        feasible=best is not None,
        budget=None if best is None else state.right,
        reasoning=None if best is None else state.texts[state.best],
        predicted=None if best is None else best.predicted,
        vanilla_text=state.texts[0],
        vanilla_tokens=vanilla.output_tokens,
        vanilla_correct=vanilla.correct,
        trace=tuple(state.rounds),
    )


def search_budgets(
    problems: Iterable[Problem],
    backend: Backend,
    config: SearchConfig = SearchConfig(),
    *,
    pool: int = 32,
    on_round: Callable[[int, int], None] | None = None,
) -> Iterator[SearchResult]:
    """Search every problem's budget; yields each result as soon as its search ends.

    Up to ``pool`` questions are in flight; each round asks all of them in one batched backend
    call (new questions join with their vanilla round as others finish), so a long job writes
    results steadily and a killed one loses only the questions in flight.
    ``on_round(round_index, n_asked)`` is called before each round, for progress display.
    """
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    queue = iter(problems)
    active: list[tuple[_State, int | None]] = []
    round_index = 0
    while True:
        while len(active) < pool and (problem := next(queue, None)) is not None:
            active.append((_State(problem), None))
        if not active:
            return
        if on_round:
            on_round(round_index, len(active))
        prompts = [
            reasoning_prompt(
                s.problem.question,
                kind=s.problem.kind,
                options=s.problem.options,
                language=s.problem.language,
                method="vanilla" if budget is None else "budget",
                budget=budget,
            )
            for s, budget in active
        ]
        generations = backend.generate(prompts, config.max_new_tokens)
        asked, active = active, []
        for (state, budget), generation in zip(asked, generations, strict=True):
            _step(state, budget, generation, config)
            following = None if state.done else _next_budget(state, config)
            if following is None:
                yield _result(state)
            else:
                active.append((state, following))
        round_index += 1
