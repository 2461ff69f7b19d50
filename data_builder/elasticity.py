"""Token elasticity (paper Fig. 2): the budget asked for against the tokens actually spent.

Below some budget a model stops saving tokens and may spend more again. The recorded search
traces already hold (budget, output tokens) pairs; an optional sweep asks a reasoner at a fixed
grid of budgets for a denser curve.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from data_builder.record import BudgetRecord
from reasoner.backends import MAX_NEW_TOKENS, Backend
from reasoner.grading import grade
from reasoner.prompts import reasoning_prompt


@dataclass(frozen=True)
class Curve:
    """One question's points: budgets asked (ascending) and the output tokens spent at each."""

    id: str
    budgets: tuple[int, ...]
    tokens: tuple[int, ...]
    correct: tuple[bool, ...]
    vanilla_tokens: int | None  # None for a reference record (no vanilla answer)


def curves_from_records(records: Sequence[BudgetRecord]) -> list[Curve]:
    """The budget-aware rounds of each record's trace (questions without any are left out)."""
    curves = []
    for r in records:
        rounds = sorted((t for t in r.trace if t.budget is not None), key=lambda t: t.budget)
        if rounds:
            curves.append(Curve(r.id, tuple(t.budget for t in rounds), tuple(t.output_tokens for t in rounds),
                                tuple(t.correct for t in rounds), r.vanilla_tokens))
    return curves


def sweep(records: Sequence[BudgetRecord], backend: Backend, budgets: Sequence[int],
          max_new_tokens: int = MAX_NEW_TOKENS) -> list[Curve]:
    """Ask every record's question at every budget, in one batched call per budget."""
    budgets = sorted(set(budgets))
    tokens: dict[str, list[int]] = {r.id: [] for r in records}
    correct: dict[str, list[bool]] = {r.id: [] for r in records}
    for budget in budgets:
        prompts = [reasoning_prompt(r.question, kind=r.kind, options=r.options, language=r.language,
                                    method="budget", budget=budget) for r in records]
        for r, g in zip(records, backend.generate(prompts, max_new_tokens)):
            tokens[r.id].append(g.output_tokens)
            correct[r.id].append(grade(g.text, r.gold, r.kind).correct)
    return [Curve(r.id, tuple(budgets), tuple(tokens[r.id]), tuple(correct[r.id]), r.vanilla_tokens) for r in records]


def plot(curves: Sequence[Curve], out: Path, title: str = "Token elasticity") -> Path:
    """Budget against actual output tokens per question, log-log, with the y = x line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.8), dpi=120)
    for c in curves:
        line, = ax.plot(c.budgets, c.tokens, "-", alpha=0.5, linewidth=1)
        colour = line.get_color()
        for b, t, ok in zip(c.budgets, c.tokens, c.correct):
            ax.plot(b, t, "o" if ok else "x", color=colour, markersize=4)
    if curves:
        low = min(min(c.budgets) for c in curves)
        high = max(max(c.budgets) for c in curves)
        ax.plot([low, high], [low, high], "k--", linewidth=0.8, label="output = budget")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("token budget in the prompt")
    ax.set_ylabel("actual output tokens")
    ax.set_title(f"{title} ({len(curves)} questions; o correct, x wrong)")
    ax.legend(loc="upper left")
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out)
    plt.close(fig)
    return out
