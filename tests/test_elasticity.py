"""Token-elasticity curves from traces and from a budget sweep."""

from __future__ import annotations

from pathlib import Path

from scripted import ScriptedBackend, make_problem

from data_builder.build import BuildConfig, build_records
from data_builder.elasticity import curves_from_records, plot, sweep
from data_builder.records import load_records


def elastic(budget):
    """Saves tokens down to budget 40, then spends more again."""
    if budget is None:
        return 200, True
    return (budget * 3 // 4 if budget >= 40 else 60 - budget), budget >= 20


def test_sweep_and_trace_curves(tmp_path: Path) -> None:
    problems = [make_problem(0), make_problem(1)]
    backend = ScriptedBackend(problems, [elastic, elastic])
    build_records(BuildConfig(dataset="s", out=tmp_path, model="s", backend="s"), backend, problems)
    records = load_records(tmp_path)
    [from_trace, _] = curves_from_records(records)
    assert from_trace.budgets == (12, 25, 50, 100) and from_trace.tokens == (48, 35, 37, 75)
    calls_before = len(backend.calls)
    curves = sweep(records, backend, [80, 10, 20, 40], max_new_tokens=512)
    assert len(backend.calls) - calls_before == 4  # one batched call per budget
    assert [c.budgets for c in curves] == [(10, 20, 40, 80)] * 2
    assert curves[0].tokens == (50, 40, 30, 60) and curves[0].correct == (False, True, True, True)
    figure = plot(curves, tmp_path / "fig.png")
    assert figure.stat().st_size > 1000
