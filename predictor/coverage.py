"""What calibrated budgets cost and cover: per estimator and risk alpha, on a test split used for
neither training nor calibration.

- ``coverage``: share of test questions with b* <= the calibrated budget (the guarantee: >= 1 - alpha);
- ``mean_budget``, ``median_budget``: what that coverage costs, in budget tokens;
- ``in_range_rate``: share in [b*, 2b*], as ``predictor.metrics``.

At the same coverage a better estimator pays fewer tokens: a constant must be large to cover most
questions, an estimator that knows which questions are short can give those small budgets.
"""

from __future__ import annotations

import json
import statistics
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from predictor import BudgetRange
from predictor.calibrate import REPORTED_ALPHAS, Calibration, rank, records_needed
from predictor.metrics import in_range


@dataclass(frozen=True)
class CoverageRow:
    """One estimator at one risk."""

    estimator: str
    alpha: float
    n_calibration: int
    n_test: int
    factor: float | None  # exp(q); None: too few calibration records for this alpha
    coverage: float | None
    mean_budget: float | None
    median_budget: float | None
    in_range_rate: float | None
    budgets: tuple[int, ...] = ()  # the calibrated budget of each test question, in the test split's order (paired tests)


def coverage_rows(name: str, calibration_estimates: Sequence[float], calibration_budgets: Sequence[int],
                  test_estimates: Sequence[float], test_budgets: Sequence[int],
                  alphas: Sequence[float] = REPORTED_ALPHAS, budget_range: BudgetRange = BudgetRange()) -> list[CoverageRow]:
    """Calibrate on one split and measure on the other, at each alpha."""
    calibration = Calibration.from_estimates(calibration_estimates, calibration_budgets, estimator=name)
    rows = []
    for alpha in alphas:
        if rank(calibration.n, alpha) > calibration.n:
            rows.append(CoverageRow(name, alpha, calibration.n, len(test_budgets), None, None, None, None, None))
            continue
        factor = calibration.factor(alpha)
        budgets = [budget_range.clamp(e * factor) for e in test_estimates]
        rows.append(CoverageRow(
            estimator=name, alpha=alpha, n_calibration=calibration.n, n_test=len(test_budgets), factor=factor,
            coverage=sum(t <= b for t, b in zip(test_budgets, budgets)) / len(budgets),
            mean_budget=statistics.fmean(budgets), median_budget=statistics.median(budgets),
            in_range_rate=sum(map(in_range, budgets, test_budgets)) / len(budgets), budgets=tuple(budgets)))
    return rows


def coverage_table(rows: Sequence[CoverageRow]) -> str:
    lines = ["| estimator | alpha | target coverage | coverage | mean budget | median budget | in range | factor | n cal / test |",
             "|" + "---|" * 9]
    for r in rows:
        if r.coverage is None:
            lines.append(f"| {r.estimator} | {r.alpha:g} | {1 - r.alpha:.0%} | needs {records_needed(r.alpha)} calibration "
                         f"records | | | | | {r.n_calibration} / {r.n_test} |")
            continue
        lines.append(f"| {r.estimator} | {r.alpha:g} | {1 - r.alpha:.0%} | {r.coverage:.1%} | {r.mean_budget:.1f} "
                     f"| {r.median_budget:.0f} | {r.in_range_rate:.1%} | {r.factor:.2f} | {r.n_calibration} / {r.n_test} |")
    return "\n".join(lines) + "\n"


def coverage_plot(rows: Sequence[CoverageRow], path: Path) -> Path:
    """Coverage against mean budget, one line per estimator through its alphas."""
    from matplotlib.figure import Figure

    figure = Figure(figsize=(6, 4.5), dpi=100)
    axes = figure.add_subplot()
    for name in dict.fromkeys(r.estimator for r in rows):
        mine = [r for r in rows if r.estimator == name and r.coverage is not None]
        axes.plot([r.mean_budget for r in mine], [r.coverage for r in mine], marker="o", label=name)
    for alpha in sorted({r.alpha for r in rows}):
        axes.axhline(1 - alpha, color="gray", linewidth=0.6, linestyle=":")
    axes.set(xlabel="mean calibrated budget (tokens)", ylabel="coverage: share with b* <= budget",
             title="Calibrated budgets on the test split")
    axes.legend(loc="lower right", fontsize=8)
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_coverage(rows: Sequence[CoverageRow], out: Path) -> tuple[Path, Path, Path]:
    """``coverage.md``, ``coverage.json`` and ``coverage.png`` in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown, data, plot = out / "coverage.md", out / "coverage.json", out / "coverage.png"
    n_test = rows[0].n_test if rows else 0
    markdown.write_text(f"# Calibrated budgets on {n_test} test questions (split conformal)\n\n" + coverage_table(rows))
    data.write_text(json.dumps([{**asdict(r), "budgets": list(r.budgets)} for r in rows]) + "\n")
    coverage_plot(rows, plot)
    return markdown, data, plot
