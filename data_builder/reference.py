"""Records from a data set's worked solutions: a human teacher in place of the budget search.

Searched with the reasoner itself, a record's reasoning is the model's own greedy text, which the
model already predicts, so budget-conditioned SFT on it changes little (README, "TALE-PT").
GSM8K ships a short worked solution with every question. A reference record takes that solution
(calculator annotations removed, closed by the answer line the prompts ask for) as the reasoning,
and its length in the reasoner's tokens as the budget, so every training example keeps to the
budget its prompt states. Nothing is generated: there is no vanilla answer, and the trace holds the
one round the solution stands for.

Two styles of the same solution: ``worked`` (the prose steps) and ``equations`` (only the
calculator annotations, one per line, ``48/2=24``: 41.7 tokens against 96.7 on 200 GSM8K questions). Built over the same
questions, the two give each question two budgets with an answer of matching length, which is what
teaches a model to read the number in its prompt (``tale train-reasoner --hindsight``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Literal

from data_builder.record import BudgetRecord, SearchRound
from data_builder.records import problem_fields
from data_builder.sources import Problem
from reasoner.errors import TaleError
from reasoner.prompts import answer_line

CountTokens = Callable[[str], int]
Style = Literal["worked", "equations"]
STYLES: tuple[Style, ...] = ("worked", "equations")
SEARCH_NAMES: dict[Style, str] = {"worked": "reference", "equations": "equations"}  # a record's "search" field


class NoSolutionError(TaleError, ValueError):
    """A problem without a worked solution cannot make a reference record."""


def reference_answer(problem: Problem, style: Style = "worked") -> str:
    """The worked solution as the reasoner should write it: the steps (or, in the ``equations``
    style, its calculator equations; a solution without any is kept whole), then ``Answer: [[gold]]``."""
    if style not in STYLES:
        raise ValueError(f"reference style must be one of {STYLES}, got {style!r}")
    if not problem.solution.strip():
        raise NoSolutionError(
            f"problem {problem.id} ({problem.source or 'unknown source'}) has no worked solution; reference "
            "records need a data set that ships one (gsm8k)")
    line = answer_line(problem.gold, kind=problem.kind, language=problem.language)
    steps = "\n".join(problem.equations) if style == "equations" and problem.equations else problem.solution.strip()
    return f"{steps}\n{line}"


def reference_record(problem: Problem, count_tokens: CountTokens, style: Style = "worked", **run: Any) -> BudgetRecord:
    """The record of a worked solution, as ``records.to_record`` lays out a search's: feasible, budget =
    the answer's tokens, no vanilla answer, one trace round (``run``: model, backend, prompt_version,
    search, seed)."""
    reasoning = reference_answer(problem, style)
    tokens = count_tokens(reasoning)
    if tokens < 1:
        raise ValueError(f"problem {problem.id}: the reference answer has no tokens")
    step = SearchRound(budget=tokens, output_tokens=tokens, correct=True, predicted=problem.gold, prompt_tokens=0)
    return BudgetRecord(
        **problem_fields(problem),
        feasible=True,
        budget=tokens,
        reasoning=reasoning,
        predicted=problem.gold,
        vanilla_text=None,
        vanilla_tokens=None,
        vanilla_correct=None,
        trace=(step,),
        calls=0,
        tokens_spent=0,
        **run,
    )


def tokenizer_counter(model: str) -> CountTokens:
    """Output tokens as the hf backend counts them for the local reasoner ``model``: the text's tokens
    plus the end-of-turn token that stops generation."""
    from transformers import AutoTokenizer

    from reasoner.models import resolve_model

    tokenizer = AutoTokenizer.from_pretrained(resolve_model(model))
    return lambda text: len(tokenizer(text, add_special_tokens=False)["input_ids"]) + 1
