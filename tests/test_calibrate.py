"""Split-conformal calibration of budget estimators: the quantile rule, coverage, and refusal."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from predictor import BudgetRange
from predictor.calibrate import (
    CALIBRATION_FILE,
    Calibrated,
    Calibration,
    TooFewRecordsError,
    fit,
    rank,
    records_needed,
)


class Lookup:
    """An estimator whose unrounded budget per question is given."""

    training_fingerprint = "lookup"

    def __init__(self, budgets: dict[str, float]) -> None:
        self.budgets = budgets
        self.budget_range = BudgetRange(1, 10**6)

    def predict_float(self, questions):
        return [self.budgets[q] for q in questions]

    def predict(self, questions):
        return [round(b) for b in self.predict_float(questions)]


@pytest.mark.parametrize(("n", "alpha", "k"), [(9, 0.1, 9), (10, 0.1, 10), (11, 0.1, 11), (19, 0.1, 18), (20, 0.1, 19),
                                               (19, 0.05, 19), (1, 0.5, 1), (3, 0.5, 2), (4, 0.2, 4), (99, 0.01, 99)])
def test_rank_is_the_finite_sample_ceiling(n: int, alpha: float, k: int) -> None:
    assert rank(n, alpha) == k == math.ceil(round((n + 1) * (1 - alpha), 9))


@pytest.mark.parametrize(("alpha", "needed"), [(0.5, 1), (0.2, 4), (0.1, 9), (0.05, 19), (0.01, 99)])
def test_records_needed_is_the_edge_where_the_rank_fits(alpha: float, needed: int) -> None:
    assert records_needed(alpha) == needed
    assert rank(needed, alpha) <= needed and rank(needed - 1, alpha) > needed - 1


def test_quantile_on_hand_made_scores() -> None:
    calibration = Calibration(tuple(s / 10 for s in (9, 1, 5, 3, 7, 2, 8, 4, 6)))  # 0.1 .. 0.9, unsorted
    assert calibration.scores == tuple(s / 10 for s in range(1, 10))
    assert calibration.quantile(0.1) == 0.9  # k = ceil(10 * 0.9) = 9: the largest
    assert calibration.quantile(0.2) == 0.8  # k = 8
    assert calibration.quantile(0.5) == 0.5  # k = 5
    assert calibration.quantile(0.95) == 0.1  # k = ceil(0.5) = 1: the smallest
    assert calibration.factor(0.5) == pytest.approx(math.exp(0.5))
    with pytest.raises(TooFewRecordsError, match="risk 0.05 needs at least 19 calibration records, this calibration has 9"):
        calibration.quantile(0.05)
    with pytest.raises(ValueError, match=r"alpha must be a number in \(0, 1\)"):
        calibration.quantile(0)


def test_a_calibration_with_too_few_records_is_refused() -> None:
    estimator = Lookup({f"q{i}": 10.0 for i in range(8)})
    calibration = fit(estimator, [f"q{i}" for i in range(8)], [12] * 8)
    with pytest.raises(TooFewRecordsError, match="needs at least 9"):
        Calibrated(estimator, calibration, 0.1)
    with pytest.raises(TooFewRecordsError):
        fit(estimator, [], [])


def test_calibrated_budgets_are_the_estimate_times_exp_q() -> None:
    estimator = Lookup({"a": 10.0, "b": 40.0, "c": 100.0})
    # b* / e = 2, 0.5, 1.5: scores log 2, log 0.5, log 1.5
    calibration = fit(estimator, ["a", "b", "c"], [20, 20, 150], name="lookup")
    assert calibration.scores == pytest.approx((math.log(0.5), math.log(1.5), math.log(2)))
    wrapped = Calibrated(estimator, calibration, 0.5)  # k = ceil(4 * 0.5) = 2: factor 1.5
    assert wrapped.predict_float(["a", "b", "c"]) == pytest.approx([15.0, 60.0, 150.0])
    assert wrapped.predict(["a", "b", "c"]) == [15, 60, 150]
    clamped = Calibrated(estimator, calibration, 0.5, budget_range=BudgetRange(8, 100))
    assert clamped.predict(["c"]) == [100]


def test_coverage_on_exchangeable_data_over_many_seeded_splits() -> None:
    """Budgets b* = e * noise with the same noise law for every question: over 200 seeded
    calibration/test splits the mean test coverage at each alpha is k / (n + 1) (the exact
    expectation for continuous scores) within a binomial tolerance, and never far below 1 - alpha."""
    n_cal, n_test, seeds = 50, 200, 200
    for alpha in (0.5, 0.2, 0.1):
        coverages = []
        for seed in range(seeds):
            rng = random.Random(seed)
            estimates = {f"q{i}": rng.uniform(20, 400) for i in range(n_cal + n_test)}
            needed = {q: e * math.exp(rng.gauss(0.2, 0.6)) for q, e in estimates.items()}
            questions = list(estimates)
            rng.shuffle(questions)
            cal, test = questions[:n_cal], questions[n_cal:]
            estimator = Lookup(estimates)
            wrapped = Calibrated(estimator, fit(estimator, cal, [needed[q] for q in cal]), alpha)
            budgets = wrapped.predict_float(test)
            coverages.append(sum(needed[q] <= b for q, b in zip(test, budgets)) / n_test)
        expected = rank(n_cal, alpha) / (n_cal + 1)
        # per split the coverage is about Beta(k, n + 1 - k) plus test noise; 4 sigma of the mean of 200
        sigma = math.sqrt(expected * (1 - expected) * (1 / (n_cal + 2) + 1 / n_test) / seeds)
        mean = sum(coverages) / seeds
        assert abs(mean - expected) <= 4 * sigma, (alpha, mean, expected)
        assert mean >= 1 - alpha - 4 * sigma


def test_save_and_load_round_trip_and_bad_files_name_the_field(tmp_path: Path) -> None:
    calibration = Calibration((0.1, -0.2, 0.3), "tfidf:runs/tfidf", "abc", "def")
    path = calibration.save(tmp_path)
    assert path.name == CALIBRATION_FILE
    assert Calibration.load(tmp_path) == Calibration((-0.2, 0.1, 0.3), "tfidf:runs/tfidf", "abc", "def")
    raw = json.loads(path.read_text())
    raw["scores"] = [0.1, "x"]
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match=rf"{CALIBRATION_FILE}: field 'scores' must be a list of numbers"):
        Calibration.load(tmp_path)
    raw["scores"], raw["format_version"] = [0.1], 9
    path.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="field 'format_version' is 9"):
        Calibration.load(tmp_path)
    with pytest.raises(FileNotFoundError, match="tale calibrate"):
        Calibration.load(tmp_path / "elsewhere")


# --- calibrated estimators on disk: the regressor, its ONNX export, the commands ------------------


@pytest.fixture(scope="module")
def calibrated_dirs(tiny_bert_dir: Path, tmp_path_factory: pytest.TempPathFactory):
    """A tiny regressor calibrated on held-out synthetic examples, then exported to ONNX."""
    from test_predictor import synthetic
    from test_predictor_bert import tiny_config

    from export.onnx import ExportConfig, export_regressor
    from predictor.bert import BertRegressor

    regressor = BertRegressor.fit(synthetic(80), tiny_config(tiny_bert_dir))
    bert_dir = tmp_path_factory.mktemp("calibrated-bert")
    regressor.save(bert_dir)
    held = synthetic(30, seed=21)
    fit(regressor, [e.question for e in held], [e.budget for e in held], name=f"bert:{bert_dir}").save(bert_dir)
    onnx_dir = tmp_path_factory.mktemp("calibrated-onnx")
    export_regressor(bert_dir, onnx_dir, ExportConfig(int8=True))
    return bert_dir, onnx_dir


def test_the_onnx_runtime_gives_the_same_calibrated_budgets_as_torch(calibrated_dirs) -> None:
    from test_predictor import synthetic

    from export.manifest import ExportManifest
    from tale.eval.sources import build_estimator

    bert_dir, onnx_dir = calibrated_dirs
    assert ExportManifest.load(onnx_dir).calibration is not None
    questions = [e.question for e in synthetic(25, seed=33)]
    torch_budgets = build_estimator(f"bert:{bert_dir}%0.1").predict(questions)
    from export.manifest import RuntimeConfig
    from export.runtime import OnnxEstimator

    fp32 = OnnxEstimator.load(onnx_dir, RuntimeConfig(precision="fp32", threads=1))
    assert fp32.calibration == Calibration.load(bert_dir)
    assert Calibrated(fp32, fp32.calibration, 0.1).predict(questions) == torch_budgets
    plain = build_estimator(f"bert:{bert_dir}").predict_float(questions)
    factor = Calibration.load(bert_dir).factor(0.1)
    assert torch_budgets == [min(1024, max(8, round(b * factor))) for b in plain]


def test_the_manifest_pin_catches_a_changed_calibration_file(calibrated_dirs, tmp_path: Path) -> None:
    import shutil

    from export.runtime import CorruptExportError, OnnxEstimator

    copy = Path(shutil.copytree(calibrated_dirs[1], tmp_path / "copy"))
    raw = json.loads((copy / CALIBRATION_FILE).read_text())
    raw["scores"] = [s - 1.0 for s in raw["scores"]]  # budgets e^-1 times smaller: a real change
    (copy / CALIBRATION_FILE).write_text(json.dumps(raw))
    with pytest.raises(CorruptExportError, match=CALIBRATION_FILE):
        OnnxEstimator.load(copy)


def test_a_risk_needs_a_calibrated_directory_and_not_a_factor_too(calibrated_dirs, tmp_path: Path) -> None:
    from tale.eval.sources import build_estimator, check_source, split_risk

    bert_dir, _ = calibrated_dirs
    assert split_risk(f"onnx:{bert_dir}%0.05") == (f"onnx:{bert_dir}", 0.05)
    assert check_source(f"bert:{bert_dir}%0.1") == f"bert:{bert_dir}%0.1"
    for spec, message in ((f"bert:{bert_dir}%1.5", "a risk in"), ("tfidf%0.1", "calibrated estimator directory"),
                          (f"bert:{bert_dir}@1.41%0.1", "not both"), ("llm:default%0.1", "calibrated estimator directory")):
        with pytest.raises(ValueError, match=message):
            split_risk(spec)
    uncalibrated = tmp_path / "plain"
    from predictor.baselines import ConstantEstimator

    ConstantEstimator(40).save(uncalibrated)
    with pytest.raises(FileNotFoundError, match="tale calibrate"):
        build_estimator(f"constant:{uncalibrated}%0.1")


def test_calibrate_and_estimate_commands(calibrated_dirs, tmp_path: Path) -> None:
    """tale calibrate on records writes the calibration (pinned, for an export); estimate --risk
    applies it; budgets at a smaller risk are never smaller."""
    import shutil

    from click.testing import CliRunner
    from test_cli_predict import write_records

    from tale.cli import main

    records = write_records(tmp_path / "records", n=120)
    onnx_copy = Path(shutil.copytree(calibrated_dirs[1], tmp_path / "onnx"))
    runner = CliRunner()
    result = runner.invoke(main, ["calibrate", "--predictor", str(onnx_copy), "--records", str(records), "--all"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "calibrated onnx:" in result.output and "on 108 feasible records" in result.output  # 12 of 120 infeasible
    from export.runtime import OnnxEstimator

    assert OnnxEstimator.load(onnx_copy).calibration.n == 108  # loads: the new file is pinned
    budgets = {}
    for risk in ("0.5", "0.1"):
        out = runner.invoke(main, ["estimate", "--predictor", str(onnx_copy), "--risk", risk, "How many apples are there?",
                                   "How many apples and pears and pears are there in basket 7?"], catch_exceptions=False)
        assert out.exit_code == 0, out.output
        budgets[risk] = [json.loads(line)["budget"] for line in out.output.splitlines()]
    assert all(a <= b for a, b in zip(budgets["0.5"], budgets["0.1"]))
    few = runner.invoke(main, ["calibrate", "--predictor", str(onnx_copy), "--records",
                               str(write_records(tmp_path / "few", n=5)), "--all"])
    assert few.exit_code != 0 and "Traceback" not in few.output
    assert "risk 0.1 needs at least 9 calibration records, this calibration has 4" in few.output
    assert OnnxEstimator.load(onnx_copy).calibration.n == 108  # nothing written
    refused = runner.invoke(main, ["estimate", "--predictor", str(onnx_copy), "--risk", "0.005", "q"])
    assert refused.exit_code != 0 and "needs at least 199 calibration records, this calibration has 108" in refused.output


def test_train_predictor_holds_out_a_calibration_split(tiny_bert_dir: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner
    from test_cli_predict import write_records

    from predictor.data import ExampleConfig, load_examples, three_way_split
    from tale.cli import main

    records = write_records(tmp_path / "records", n=120)
    result = CliRunner().invoke(main, ["train-predictor", "--records", str(records), "--out", str(tmp_path / "bert"),
                                       "--encoder", str(tiny_bert_dir), "--epochs", "1", "--max-length", "32",
                                       "--calibration", "0.3"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    train, calibration, held_out = three_way_split(load_examples(records, ExampleConfig()), 0.2, 0.3)
    assert Calibration.load(tmp_path / "bert").n == len(calibration) > 0
    assert not {e.id for e in calibration} & ({e.id for e in train} | {e.id for e in held_out})
    meta = json.loads((tmp_path / "bert" / "tale_predictor.json").read_text())
    assert meta["n_train"] + meta["n_validation"] == len(train)  # the calibration ids stay out of training


def test_eval_predictor_reports_coverage_at_each_risk_on_the_test_split(tmp_path: Path) -> None:
    """Calibrated on one split, tested on another: per estimator and alpha, the coverage, what it
    costs, and the plot; with budgets that follow question length, TF-IDF pays less than the
    constant for the same coverage."""
    from click.testing import CliRunner
    from test_cli_predict import write_records

    from tale.cli import main

    records = write_records(tmp_path / "records", n=400)
    result = CliRunner().invoke(main, ["eval-predictor", "--records", str(records), "--out", str(tmp_path / "eval"),
                                       "--estimators", "constant,tfidf", "--calibration", "0.3", "--risks", "0.5,0.1,0.001"],
                                catch_exceptions=False)
    assert result.exit_code == 0, result.output
    rows = json.loads((tmp_path / "eval" / "coverage.json").read_text())
    assert (tmp_path / "eval" / "coverage.png").stat().st_size > 1000
    assert [(r["estimator"], r["alpha"]) for r in rows] == [(e, a) for e in ("constant", "tfidf") for a in (0.5, 0.1, 0.001)]
    tested = rows[0]["n_test"]
    for r in rows:
        if r["alpha"] == 0.001:  # needs 999 calibration records
            assert r["coverage"] is None and r["budgets"] == []
            continue
        assert r["coverage"] >= 1 - r["alpha"] - 3 * math.sqrt(r["alpha"] * (1 - r["alpha"]) / tested)
        assert len(r["budgets"]) == tested and math.isclose(sum(r["budgets"]) / tested, r["mean_budget"])  # per question, for paired tests
    by = {(r["estimator"], r["alpha"]): r for r in rows}
    assert by[("tfidf", 0.1)]["mean_budget"] < by[("constant", 0.1)]["mean_budget"]
    assert "needs 999 calibration records" in (tmp_path / "eval" / "coverage.md").read_text()


def test_calibrate_leaves_out_the_excluded_ids_as_eval_predictor_does(tmp_path: Path) -> None:
    """A baseline that eval-predictor fitted with --exclude, calibrated afterwards with the same --exclude,
    is calibrated on the very records eval-predictor calibrated it on: same count, same conformal factor."""
    from click.testing import CliRunner
    from test_cli_predict import write_records

    from predictor.data import ExampleConfig, load_examples, three_way_split
    from tale.cli import main

    records, excluded = write_records(tmp_path / "records", n=300), write_records(tmp_path / "excluded", n=60)
    runner = CliRunner()
    result = runner.invoke(main, ["eval-predictor", "--records", str(records), "--exclude", str(excluded), "--out",
                                  str(tmp_path / "eval"), "--estimators", "constant", "--calibration", "0.25", "--risks", "0.1"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    (row,) = json.loads((tmp_path / "eval" / "coverage.json").read_text())
    left = {e.id for e in load_examples(excluded, ExampleConfig())}
    wanted = [e for e in three_way_split(load_examples(records, ExampleConfig()), 0.2, 0.25)[1] if e.id not in left]
    args = ["calibrate", "--predictor", str(tmp_path / "eval" / "constant"), "--records", str(records), "--fraction", "0.25"]
    result = runner.invoke(main, [*args, "--exclude", str(excluded)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    calibration = Calibration.load(tmp_path / "eval" / "constant")
    assert calibration.n == len(wanted) == row["n_calibration"] and math.isclose(calibration.factor(0.1), row["factor"], rel_tol=1e-3)
    result = runner.invoke(main, args, catch_exceptions=False)  # without --exclude the excluded ids calibrate too
    assert result.exit_code == 0 and Calibration.load(tmp_path / "eval" / "constant").n > len(wanted)
