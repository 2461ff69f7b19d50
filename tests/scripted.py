"""A scripted fake backend whose answers per budget are known, for asserting search traces exactly.

Run as a script it builds records with that backend, slowly, so a test can kill it mid-run:
``python tests/scripted.py OUT_DIR N_PROBLEMS DELAY_S``.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from data_builder.sources import Problem, problem_id
from reasoner.backends import Generation
from reasoner.prompts import Prompt

# Answer script of one question: budget (None = vanilla, 0 = the direct prompt) -> (output tokens, correct).
Script = Callable[[int | None], tuple[int, bool]]

_BUDGET = re.compile(r"use less than (\d+) tokens")
_QUESTION = re.compile(r"^Q: (.*)$", re.MULTILINE)
_DIRECT = "Answer the question directly"


class ScriptedBackend:
    """Answers each question as its script says; records every call's batch."""

    name = "scripted"

    def __init__(self, problems: Sequence[Problem], scripts: Sequence[Script], delay_s: float = 0.0) -> None:
        self._by_question = {p.question: (p, s) for p, s in zip(problems, scripts)}
        self.calls: list[list[tuple[str, int | None]]] = []
        self.delay_s = delay_s

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        time.sleep(self.delay_s)
        out, call = [], []
        for prompt in prompts:
            question = _QUESTION.search(prompt.user).group(1)
            match = _BUDGET.search(prompt.user)
            budget = int(match.group(1)) if match else 0 if _DIRECT in prompt.user else None
            problem, script = self._by_question[question]
            tokens, correct = script(budget)
            answer = problem.gold if correct else problem.gold + "1"
            out.append(Generation(f"reasoning... Answer: [[{answer}]]", 10, min(tokens, max_new_tokens), "stop"))
            call.append((problem.id, budget))
        self.calls.append(call)
        return out


def make_problem(i: int, gold: str = "42") -> Problem:
    question = f"Question number {i}: what is the answer?"
    return Problem(id=problem_id("test", question), question=question, gold=gold, source="test")


def threshold_script(vanilla_tokens: int, min_budget: int) -> Script:
    """Correct at every budget >= ``min_budget``, using about 80% of the budget."""

    def script(budget: int | None) -> tuple[int, bool]:
        if budget is None:
            return vanilla_tokens, True
        return max(1, budget * 4 // 5), budget >= min_budget

    return script


def problems_and_scripts(n: int) -> tuple[list[Problem], list[Script]]:
    problems = [make_problem(i) for i in range(n)]
    scripts = [threshold_script(100 + 10 * i, 10 + 7 * i) if i % 5 else (lambda b: (90, False)) for i in range(n)]
    return problems, scripts


if __name__ == "__main__":
    from data_builder.build import BuildConfig, build_records

    out, n, delay = Path(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    problems, scripts = problems_and_scripts(n)
    backend = ScriptedBackend(problems, scripts, delay_s=delay)
    config = BuildConfig(dataset="scripted", out=out, model="scripted", backend="scripted", pool=4)
    build_records(config, backend, problems)
