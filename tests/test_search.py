"""Exact search traces against a scripted backend, for every search mode."""

from __future__ import annotations

import pytest
from scripted import ScriptedBackend, make_problem, threshold_script

from data_builder.search import Round, SearchConfig, search_budgets


def run(scripts, config=SearchConfig(), pool=32):
    problems = [make_problem(i) for i in range(len(scripts))]
    backend = ScriptedBackend(problems, scripts)
    results = {r.problem.id: r for r in search_budgets(problems, backend, config, pool=pool)}
    return [results[p.id] for p in problems], backend


def trace(result):
    return [(r.budget, r.output_tokens, r.correct) for r in result.trace]


def test_halving_feasible_stops_at_first_failure() -> None:
    [result], _ = run([threshold_script(vanilla_tokens=100, min_budget=20)])
    assert trace(result) == [(None, 100, True), (50, 40, True), (25, 20, True), (12, 9, False)]
    assert (result.feasible, result.budget, result.predicted) == (True, 25, "42")
    assert result.reasoning == "reasoning... Answer: [[42]]"
    assert result.calls == 4 and result.tokens_spent == 4 * 10 + 100 + 40 + 20 + 9


def test_wrong_vanilla_answer_is_infeasible_not_dropped() -> None:
    [result], backend = run([lambda budget: (80, False)])
    assert trace(result) == [(None, 80, False)]
    assert (result.feasible, result.budget, result.reasoning, result.predicted) == (False, None, None, None)
    assert result.vanilla_tokens == 80 and not result.vanilla_correct
    assert len(backend.calls) == 1


def test_first_budget_failing_keeps_the_vanilla_answer() -> None:
    [result], _ = run([threshold_script(vanilla_tokens=100, min_budget=60)])
    assert trace(result) == [(None, 100, True), (50, 40, False)]
    assert (result.budget, result.reasoning) == (100, result.vanilla_text)


def elastic_script(budget):
    """Correct everywhere, but below 50 the answer gets longer again (token elasticity)."""
    return {None: (100, True), 50: (60, True), 25: (70, True), 12: (20, True)}[budget]


def test_elastic_stops_when_tokens_rise_again() -> None:
    [result], _ = run([elastic_script], SearchConfig(mode="elastic"))
    assert trace(result) == [(None, 100, True), (50, 60, True), (25, 70, True)]
    assert result.budget == 50


def test_halving_ignores_elasticity() -> None:
    [result], _ = run([elastic_script], SearchConfig(mode="halving", floor=10))
    assert trace(result) == [(None, 100, True), (50, 60, True), (25, 70, True), (12, 20, True)]
    assert result.budget == 12


def test_bisect_converges_within_tolerance() -> None:
    [result], _ = run([threshold_script(vanilla_tokens=100, min_budget=30)], SearchConfig(mode="bisect", tolerance=4))
    assert [r.budget for r in result.trace] == [None, 50, 25, 37, 31, 28]
    assert [r.correct for r in result.trace] == [True, True, False, True, True, False]
    assert result.budget == 31  # the smallest feasible budget within 4 tokens of the true 30


def test_bisect_is_tighter_than_halving_for_more_calls() -> None:
    [halving], _ = run([threshold_script(200, 70)])
    [bisect], _ = run([threshold_script(200, 70)], SearchConfig(mode="bisect", tolerance=8))
    assert halving.budget == 100 and 70 <= bisect.budget < 80
    assert bisect.calls > halving.calls


def test_floor_and_round_limit() -> None:
    [floored], _ = run([threshold_script(100, 1)], SearchConfig(floor=10))
    assert [r.budget for r in floored.trace] == [None, 50, 25, 12]  # 6 would be below the floor
    [limited], _ = run([threshold_script(100, 1)], SearchConfig(max_rounds=2))
    assert [r.budget for r in limited.trace] == [None, 50, 25]


def test_each_round_is_one_batched_call_over_unfinished_questions() -> None:
    scripts = [threshold_script(100, 20), lambda b: (80, False), threshold_script(100, 60)]
    results, backend = run(scripts)
    ids = [r.problem.id for r in results]
    assert backend.calls == [
        [(ids[0], None), (ids[1], None), (ids[2], None)],
        [(ids[0], 50), (ids[2], 50)],
        [(ids[0], 25)],
        [(ids[0], 12)],
    ]


def test_pool_refills_as_questions_finish() -> None:
    scripts = [lambda b: (80, False), threshold_script(100, 60), threshold_script(100, 20)]
    results, backend = run(scripts, pool=2)
    ids = [r.problem.id for r in results]
    assert backend.calls[0] == [(ids[0], None), (ids[1], None)]
    assert backend.calls[1] == [(ids[1], 50), (ids[2], None)]  # question 0 finished, 2 joined
    assert all(len(call) <= 2 for call in backend.calls)
    assert [r.budget for r in results] == [None, 100, 25]


def test_round_records_are_typed() -> None:
    [result], _ = run([threshold_script(100, 60)])
    assert result.trace[0] == Round(budget=None, output_tokens=100, correct=True, predicted="42", prompt_tokens=10)


@pytest.mark.parametrize("field,value", [("mode", "linear"), ("floor", 0), ("max_rounds", 0), ("tolerance", 0)])
def test_bad_search_settings_are_refused(field, value) -> None:
    with pytest.raises(ValueError, match=field if field != "mode" else "search mode"):
        SearchConfig(**{field: value})
