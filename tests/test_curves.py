"""Success curves: estimators, policies on hand-made curves, and the offline frontier against hand computation."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from data_builder.ladder import LadderRecord, LadderRung, Sample
from predictor.curves import CurveData, MarginalCurves, TfidfCurves, calibration, load_curves, monotone
from predictor.frontier import accuracy_at, compare_to_constants, frontier_points, tokens_at, upper_hull
from predictor.policies import Curve, Policy, allocate_curves, by_price, by_target

RUNGS = (0, 64, None)


def record(i: int, question: str, outcomes: list[list[tuple[bool, int]]]) -> LadderRecord:
    rungs = tuple(LadderRung(b, tuple(Sample(k, c, t, 10, None, "stop", "") for k, (c, t) in enumerate(samples)))
                  for b, samples in zip(RUNGS, outcomes))
    return LadderRecord(id=f"q{i}", source="test", question=question, gold="1", kind="cloze", options=(), language="en",
                        rungs=rungs, model="m", backend="b", prompt_version="v", temperature=0.7, max_new_tokens=384)


def test_monotone_pools_adjacent_violators() -> None:
    assert monotone([0.5, 0.1, 0.9]) == pytest.approx([0.3, 0.3, 0.9])
    assert monotone([0.0, 0.5, 1.0]) == [0.0, 0.5, 1.0]


def test_curve_data_and_the_marginal_curve(tmp_path: Path) -> None:
    records = [
        record(0, "easy", [[(True, 4), (True, 6)], [(True, 40), (True, 40)], [(True, 200), (True, 200)]]),
        record(1, "hard", [[(False, 4), (False, 4)], [(True, 60), (False, 60)], [(False, 300), (True, 300)]]),
    ]
    data = CurveData.of(records)
    assert data.success.tolist() == [[1, 1, 1], [0, 0.5, 0.5]]
    assert data.tokens.tolist() == [[5, 40, 200], [4, 60, 300]]
    marginal = MarginalCurves.fit(data)
    assert marginal.curve.success == (0.5, 0.75, 0.75) and marginal.curve.tokens == (4.5, 50, 250)
    marginal.save(tmp_path / "m")
    again = load_curves(tmp_path / "m")
    assert again.curves(["x", "y"]) == [marginal.curve] * 2 and again.rungs == RUNGS


def test_tfidf_curves_learn_which_questions_are_easy(tmp_path: Path) -> None:
    easy = [record(i, f"what is {i} plus one", [[(True, 5)] * 2, [(True, 30)] * 2, [(True, 150)] * 2]) for i in range(20)]
    hard = [record(20 + i, f"a train leaves the station at {i} and a second train follows {i} hours later; when do they meet",
                   [[(False, 5)] * 2, [(False, 60)] * 2, [(True, 300), (False, 320)]]) for i in range(20)]
    data = CurveData.of(easy + hard)
    model = TfidfCurves.fit(data)
    model.save(tmp_path / "t")
    model = load_curves(tmp_path / "t")
    [e, h] = model.curves(["what is 99 plus one", "a train leaves the station at 7 and a second train follows 2 hours later; when do they meet"])
    assert e.success[0] > 0.6 > h.success[0]
    assert all(a <= b for a, b in zip(h.success, h.success[1:]))  # monotone
    assert e.tokens[2] < h.tokens[2]
    # The ladder's success on held-out samples: better calibrated than the rung base rates on these questions.
    held = calibration(model.curves(list(data.questions)), data)
    base = calibration(MarginalCurves.fit(data).curves(list(data.questions)), data)
    assert held.brier < base.brier
    assert base.brier == pytest.approx(base.base_rate_brier)


def test_calibration_on_hand_made_numbers() -> None:
    data = CurveData.of([record(0, "q", [[(True, 1), (False, 1)], [(True, 1), (True, 1)], [(True, 1), (True, 1)]])])
    curve = Curve(RUNGS, (0.5, 1.0, 1.0), (1, 1, 1))
    result = calibration([curve], data, bins=2)
    # Brier: direct rung 0.25 on each of 2 samples, the others 0: 0.5 / 6.
    assert result.brier == pytest.approx(0.5 / 6)
    # Bins: p = 0.5 (2 samples, 1 right) lies in [0.5, 1]; p = 1 (4 samples, all right) too: mean p 5/6, observed 5/6.
    assert result.ece == pytest.approx(0.0)
    assert result.per_rung["direct"] == {"brier": 0.25, "mean_p": 0.5, "observed": 0.5}


def curve(success, tokens):
    return Curve(RUNGS, tuple(success), tuple(tokens))


def test_price_policy_on_hand_made_curves() -> None:
    c = curve([0.3, 0.6, 0.7], [5, 50, 250])
    assert by_price(c, 0.0) == 2  # free tokens: the most accurate rung
    assert by_price(c, 0.001) == 1  # 0.6 - 0.05 = 0.55 > 0.7 - 0.25 and > 0.3 - 0.005
    assert by_price(c, 0.01) == 0  # 0.3 - 0.05 = 0.25 > 0.6 - 0.5
    assert by_price(curve([0.5, 0.5, 0.5], [5, 50, 250]), 0.0) == 0  # a tie goes to the cheaper rung


def test_target_policy_on_hand_made_curves() -> None:
    c = curve([0.3, 0.6, 0.8], [5, 50, 250])
    assert by_target(c, 1.0) == 2
    assert by_target(c, 0.75) == 1  # 0.6 >= 0.75 * 0.8
    assert by_target(c, 0.3) == 0
    assert by_target(curve([0.0, 0.0, 0.0], [5, 50, 250]), 0.9) == 0  # nothing helps: the cheapest rung


def test_total_policy_buys_the_best_gain_per_token_first() -> None:
    a = curve([0.1, 0.9, 0.95], [5, 50, 250])  # +0.8 for 45 tokens
    b = curve([0.1, 0.2, 0.8], [5, 50, 250])  # hull from direct skips 64: +0.7 for 245 tokens
    assert allocate_curves([a, b], 10) == [0, 0]
    assert allocate_curves([a, b], 60) == [1, 0]  # 50 + 5
    assert allocate_curves([a, b], 300) == [1, 2]  # 50 + 250
    assert allocate_curves([a, b], 1000) == [2, 2]
    assert Policy("total", 30).choose([a, b]) == [1, 0]  # 30 tokens per question: 60 in all


def test_bad_policies_are_refused() -> None:
    with pytest.raises(ValueError, match="policy must be one of"):
        Policy("cheapest", 1)
    with pytest.raises(ValueError, match="out of range"):
        Policy("target", 1.5)


def test_hull_and_interpolation_by_hand() -> None:
    hull = upper_hull([5, 50, 250, 100], [0.2, 0.5, 0.6, 0.4])  # (100, 0.4) lies below the hull
    assert hull == [(5, 0.2), (50, 0.5), (250, 0.6)]
    assert accuracy_at(hull, 150) == pytest.approx(0.55)
    assert accuracy_at(hull, 1) == 0.2 and accuracy_at(hull, 999) == 0.6
    assert tokens_at(hull, 0.35) == pytest.approx(27.5)
    assert tokens_at(hull, 0.7) is None


def test_the_offline_frontier_equals_a_hand_computation() -> None:
    # Four questions. Rungs: direct, 64, vanilla. Easy questions are right everywhere; hard only at vanilla.
    easy = [[(True, 4)] * 2, [(True, 40)] * 2, [(True, 200)] * 2]
    hard = [[(False, 4)] * 2, [(False, 60)] * 2, [(True, 300)] * 2]
    data = CurveData.of([record(0, "a", easy), record(1, "b", easy), record(2, "c", hard), record(3, "d", hard)])
    points = frontier_points(data, {"oracle": [[0, 0, 2, 2]]})
    # Constants: direct 50% at 4 tokens, 64: 50% at 50, vanilla 100% at 250.
    assert [(p["accuracy"], p["tokens"]) for p in points["constant"]] == [(0.5, 4), (0.5, 50), (1.0, 250)]
    assert points["oracle"] == [{"accuracy": 1.0, "tokens": 152}]  # (4 + 4 + 300 + 300) / 4
    result = compare_to_constants(data, [0, 0, 2, 2], [[0, 0, 0, 0], [0, 0, 2, 2]], resamples=50)
    # The constants' hull at 152 tokens: 0.5 + 0.5 * (152 - 4) / (250 - 4).
    assert result["gain"]["value"] == pytest.approx(1 - (0.5 + 0.5 * 148 / 246))
    # The best constant (vanilla, 100% at 250); the sweep reaches 100% at 152 tokens: 39.2% fewer.
    assert result["saving"]["value"] == pytest.approx(1 - 152 / 250)
    assert result["best_constant_tokens"] == 250 and result["accuracy"] == 1.0
    assert result["gain"]["low"] <= result["gain"]["value"] <= result["gain"]["high"]
    assert np.isfinite(result["saving"]["low"])


def test_train_curves_and_frontier_commands_on_scripted_ladders(tmp_path: Path, tiny_lm_dir: Path) -> None:
    import json

    from click.testing import CliRunner
    from scripted import ScriptedBackend, make_problem

    from data_builder.ladder import LadderBuildConfig, LadderConfig, build_ladder
    from tale.cli import main

    def build(out: Path, first: int, n: int) -> None:
        problems = [make_problem(i) for i in range(first, first + n)]

        def script(i):  # even questions are right directly, odd ones need 64 tokens or more
            return lambda b: (4, i % 2 == 0) if b == 0 else (max(1, (b or 200) // 2), b is None or b >= 64 or i % 2 == 0)

        config = LadderBuildConfig(dataset="scripted", out=out, model="s", backend="s", ladder=LadderConfig(rungs=(0, 32, 64, None)))
        build_ladder(config, lambda: [(k, ScriptedBackend(problems, [script(i) for i in range(first, first + n)])) for k in (0, 1)],
                     problems)

    build(tmp_path / "train", 0, 40)
    build(tmp_path / "test", 100, 20)
    runner = CliRunner()
    result = runner.invoke(main, ["train-curves", "--ladder", str(tmp_path / "train"), "--out", str(tmp_path / "curves")])
    assert result.exit_code == 0, result.output
    assert "tfidf curves on 40 questions" in result.output and "direct 50.0%" in result.output
    result = runner.invoke(main, ["train-curves", "--ladder", str(tmp_path / "train"), "--estimator", "probe",
                                  "--probe-model", str(tiny_lm_dir), "--out", str(tmp_path / "probe")])
    assert result.exit_code == 0, result.output
    assert load_curves(tmp_path / "probe").rungs == (0, 32, 64, None)
    from predictor.baselines import ConstantEstimator

    ConstantEstimator(40).save(tmp_path / "constant")
    result = runner.invoke(main, ["frontier", "--train", str(tmp_path / "train"), "--test", str(tmp_path / "test"),
                                  "--out", str(tmp_path / "f"), "--resamples", "100", "--probe-model", str(tiny_lm_dir),
                                  "--budgets", f"constant:{tmp_path / 'constant'}"])
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "f" / "frontier.json").read_text())
    assert (tmp_path / "f" / "frontier.png").stat().st_size > 0 and (tmp_path / "f" / "reliability.png").exists()
    # Constants on the held-out half: direct 50%, 32 50%, 64 100%, vanilla 100%.
    assert [p["accuracy"] for p in report["points"]["constant"]] == [0.5, 0.5, 1.0, 1.0]
    ceiling = report["comparisons"]["ceiling (observed curves)"]
    # Knowing each curve: even questions direct (4 tokens), odd at 64 (32 tokens): 100% at 18 tokens, 43.75% fewer than the 64 rung.
    assert ceiling["saving"]["value"] == pytest.approx(1 - 18 / 32)
    assert report["comparisons"]["marginal price"]["gain"]["value"] <= 1e-9  # question-blind: never above the constants
    assert {"tfidf price", "tfidf target", "tfidf total", "probe price"} <= set(report["comparisons"])
    assert (tmp_path / "f" / "estimators" / "probe" / "probe.json").exists()
    # A constant budget of 40 lands every question on the 64 rung: the 64 constant's point.
    assert report["points"][f"budgets constant:{tmp_path / 'constant'}"] == [{"accuracy": 1.0, "tokens": 32.0}]
    result = runner.invoke(main, ["train-curves", "--ladder", str(tmp_path / "nothing-here")])
    assert result.exit_code == 2


def test_monotone_equals_scikit_learns_isotonic_regression() -> None:
    from sklearn.isotonic import isotonic_regression

    rng = np.random.default_rng(0)
    for _ in range(50):
        values = rng.random(rng.integers(1, 8)).tolist()
        assert monotone(values) == pytest.approx(isotonic_regression(values).tolist(), abs=1e-12)


def test_probe_curves_read_the_reasoner_and_round_trip_as_json(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from predictor.curves import ProbeCurves, fit_rungs, predict_rungs
    from predictor.probe import ProbeConfig, ReasonerFeatures

    easy = [record(i, f"what is {i} plus one", [[(True, 5)] * 2, [(True, 30)] * 2, [(True, 150)] * 2]) for i in range(10)]
    hard = [record(10 + i, f"a train leaves at {i} and another follows; when do they meet",
                   [[(False, 5)] * 2, [(False, 60)] * 2, [(True, 300), (False, 320)]]) for i in range(10)]
    data = CurveData.of(easy + hard)
    features = ReasonerFeatures(ProbeConfig(model=str(tiny_lm_dir)))
    model = ProbeCurves.fit(data, ProbeConfig(model=str(tiny_lm_dir)), c=1.0, features=features)
    curves = model.curves(list(data.questions))
    assert all(a <= b for c in curves for a, b in zip(c.success, c.success[1:]))
    assert np.mean([c.success[0] for c in curves[:10]]) > 0.5 > np.mean([c.success[0] for c in curves[10:]])
    # The JSON weights give what scikit-learn's fitted models give on the same standardized features.
    x = np.asarray(features(list(data.questions)))
    z = (x - x.mean(0)) / (x.std(0) + 1e-6)
    reference = predict_rungs(z, *fit_rungs(z, data, 1.0, 10.0), data.rungs)
    for got, want in zip(curves, reference):
        assert got.success == pytest.approx(want.success, abs=1e-9) and got.tokens == pytest.approx(want.tokens, rel=1e-9)
    model.save(tmp_path / "probe")
    again = load_curves(tmp_path / "probe")
    assert isinstance(again, ProbeCurves) and again.rungs == RUNGS
    for got, want in zip(again.curves(list(data.questions)), curves):
        assert got.success == pytest.approx(want.success, abs=1e-9)


def test_budgets_land_on_the_cheapest_rung_that_grants_them() -> None:
    from tale.eval.frontier import rung_for_budgets

    assert rung_for_budgets([8, 32, 33, 64, 200, 256, 300, 1024], (0, 32, 64, 128, 256, None)) == [1, 1, 2, 2, 4, 4, 5, 5]
    assert rung_for_budgets([500], (0, 32, 64)) == [2]  # no vanilla rung: the largest budget rung


def test_fit_priced_chooses_a_price_that_sends_easy_questions_to_a_direct_answer() -> None:
    from reasoner.errors import InputError
    from tale.eval.frontier import fit_priced, validation_split

    easy = [record(i, f"what is {i} plus one", [[(True, 5)] * 2, [(True, 30)] * 2, [(True, 150)] * 2]) for i in range(20)]
    hard = [record(20 + i, f"a train leaves the station at {i} and a second train follows {i} hours later; when do they meet",
                   [[(False, 5)] * 2, [(False, 60)] * 2, [(True, 300), (False, 320)]]) for i in range(20)]
    model, policy, counts = fit_priced(CurveData.of(easy + hard), 0.25)
    assert counts["fit"] + counts["validation"] == 40 and counts["validation"] >= 2
    # On validation, easy to direct and hard to vanilla CoT beats every constant rung at its tokens: a price under
    # 0.5 / 310 per token keeps the hard questions' chain, a higher one would send them to the direct answer too.
    assert policy.kind == "price" and policy.value < 0.5 / 310
    assert policy.choose(model.curves(["what is 99 plus one", hard[0].question])) == [0, 2]
    with pytest.raises(InputError, match="too few training questions to split for validation: 3"):
        validation_split(CurveData.of(easy[:3]), 0.25)
