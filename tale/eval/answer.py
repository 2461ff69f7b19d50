"""Ask a reasoner a set of problems with one prompting method and grade the answers."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from data_builder.sources import Problem
from reasoner.backends import MAX_NEW_TOKENS, Backend
from reasoner.grading import grade
from reasoner.prompts import PROMPT_VERSION, Method, reasoning_prompt

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Answer:
    """One graded answer, a line of the output JSONL."""

    id: str
    question: str
    gold: str
    predicted: str | None
    correct: bool
    output_tokens: int
    prompt_tokens: int
    finish_reason: str
    text: str
    method: str
    budget: int | None
    model: str
    prompt_version: str = PROMPT_VERSION
    seconds: float = 0.0  # this answer's share of its batch's generation wall time


@dataclass(frozen=True)
class Summary:
    n: int
    accuracy: float
    mean_output_tokens: float  # over all samples, not only the correct ones

    @classmethod
    def of(cls, answers: Sequence[Answer]) -> Summary:
        n = len(answers)
        if n == 0:
            return cls(0, 0.0, 0.0)
        return cls(n, sum(a.correct for a in answers) / n, sum(a.output_tokens for a in answers) / n)


def answer_problems(
    problems: Sequence[Problem],
    backend: Backend,
    *,
    method: Method = "vanilla",
    budget: int | None = None,
    budgets: Sequence[int | None] | None = None,
    max_new_tokens: int = MAX_NEW_TOKENS,
    chunk: int = 8,
) -> Iterator[Answer]:
    """Graded answers in problem order, ``chunk`` problems per backend call so progress shows.

    ``budgets`` (with method ``budget``) gives each problem its own budget; a problem whose budget
    is None is asked with the vanilla prompt, one whose budget is 0 with the direct prompt, and its
    answer says so (method ``vanilla`` or ``direct``).
    """
    if budgets is not None:
        if method != "budget" or budget is not None:
            raise ValueError("per-problem budgets need method 'budget' and no single budget")
        if len(budgets) != len(problems):
            raise ValueError(f"{len(budgets)} budgets for {len(problems)} problems")
    asked: list[tuple[Method, int | None]] = [
        (method, budget) if budgets is None else ("budget", b) if b else ("direct", None) if b == 0 else ("vanilla", None)
        for b in (budgets if budgets is not None else [budget] * len(problems))
    ]
    for start in range(0, len(problems), chunk):
        part = problems[start : start + chunk]
        how = asked[start : start + chunk]
        prompts = [
            reasoning_prompt(p.question, kind=p.kind, options=p.options, language=p.language, method=m, budget=b)
            for p, (m, b) in zip(part, how)
        ]
        began = time.perf_counter()
        generations = backend.generate(prompts, max_new_tokens)
        share = (time.perf_counter() - began) / len(part)
        for problem, (m, b), generation in zip(part, how, generations):
            graded = grade(generation.text, problem.gold, problem.kind)
            yield Answer(
                id=problem.id,
                question=problem.question,
                gold=problem.gold,
                predicted=graded.predicted,
                correct=graded.correct,
                output_tokens=generation.output_tokens,
                prompt_tokens=generation.prompt_tokens,
                finish_reason=generation.finish_reason,
                text=generation.text,
                method=m,
                budget=b,
                model=backend.name,
                seconds=share,
            )


def write_jsonl(path: Path, answers: Iterator[Answer]) -> Iterator[Answer]:
    """Pass answers through while appending each to ``path`` as soon as it exists."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", encoding="utf-8") as sink:
        for answer in answers:
            sink.write(json.dumps(asdict(answer), ensure_ascii=False) + "\n")
            sink.flush()
            yield answer
