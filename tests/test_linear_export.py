"""The TF-IDF baseline exported as numbers (``export.linear``) gives the scikit-learn pipeline's budgets
without scikit-learn, carries its calibration, and loads wherever an estimator directory is named."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from click.testing import CliRunner
from test_predictor import synthetic

from predictor import BudgetRange
from predictor.baselines import TfidfRidgeConfig, TfidfRidgeEstimator
from predictor.data import Example
from tale.cli import main

ODD = ["", "   ", "!!! ???", "Ünïcödé café naïve résumé 12 34", "the the the the THE The", "a b c d e f",
       "x" * 3000, "What is 6 * 7? " * 40, "tab\tseparated\nnew-line question_with_underscores"]


def gsm8k(shared: Path, n: int) -> list[Example]:
    rows = [json.loads(line) for line in (shared / "gsm8k" / "train.jsonl").read_text().splitlines()[:n]]
    return [Example(f"gsm8k-{i}", r["question"], 20 + len(r["answer"]) // 4) for i, r in enumerate(rows)]


def exported(source: TfidfRidgeEstimator, tmp_path: Path, name: str):
    from export.linear import export_tfidf

    source.save(tmp_path / name)
    return export_tfidf(tmp_path / name, tmp_path / f"{name}-linear")


@pytest.mark.parametrize("config", [TfidfRidgeConfig(), TfidfRidgeConfig(ngram_max=1, length_feature=False),
                                    TfidfRidgeConfig(ngram_max=3, min_df=2, alpha=0.3, budget_range=BudgetRange(16, 300))])
def test_the_export_gives_the_pipelines_budgets_on_real_questions(shared_data: Path, tmp_path: Path, config) -> None:
    examples = gsm8k(shared_data, 500)
    source = TfidfRidgeEstimator.fit(examples[:300], config)
    linear = exported(source, tmp_path, "tfidf")
    questions = [e.question for e in examples[300:]] + ODD
    want, got = source.predict_float(questions), linear.predict_float(questions)
    assert max(abs(math.log(g / w)) for g, w in zip(got, want)) < 1e-9
    assert linear.predict(questions) == source.predict(questions)
    assert len({round(v) for v in got}) > 20  # the budgets differ by question: the check is not of a constant
    assert linear.training_fingerprint == source.training_fingerprint and linear.calibration is None


def test_calibration_travels_with_the_export_and_names_resolve(tmp_path: Path) -> None:
    from predictor.calibrate import fit
    from tale.eval.sources import build_estimator

    source = TfidfRidgeEstimator.fit(synthetic(80))
    source.save(tmp_path / "tfidf")
    held = synthetic(40, seed=7)
    fit(source, [e.question for e in held], [e.budget for e in held], name="tfidf").save(tmp_path / "tfidf")
    from export.linear import export_tfidf

    linear = export_tfidf(tmp_path / "tfidf", tmp_path / "linear")
    assert linear.calibration is not None and linear.calibration.scores
    questions = [e.question for e in synthetic(30, seed=9)]
    for suffix in ("", "%0.1", "%0.2", "@1.41"):
        assert (build_estimator(f"tfidf:{tmp_path / 'linear'}{suffix}").predict(questions)
                == build_estimator(f"tfidf:{tmp_path / 'tfidf'}{suffix}").predict(questions)), suffix


def test_tale_export_and_estimate_on_a_tfidf_directory(tmp_path: Path) -> None:
    source = TfidfRidgeEstimator.fit(synthetic(80))
    source.save(tmp_path / "tfidf")
    runner = CliRunner()
    result = runner.invoke(main, ["export", "--predictor", str(tmp_path / "tfidf"), "--out", str(tmp_path / "linear")])
    assert result.exit_code == 0, result.output
    assert "not calibrated" in result.output
    questions = [e.question for e in synthetic(12, seed=3)]
    result = runner.invoke(main, ["estimate", "--predictor", str(tmp_path / "linear"), *questions])
    assert result.exit_code == 0, result.output
    assert [json.loads(line)["budget"] for line in result.output.splitlines()] == source.predict(questions)

    refused = runner.invoke(main, ["export", "--predictor", str(tmp_path / "tfidf"), "--out", str(tmp_path / "x"), "--int8"])
    assert refused.exit_code == 2 and "--int8 is for the BERT regressor" in refused.output


@pytest.mark.parametrize(("edit", "needle"), [
    (lambda raw: raw.pop("intercept"), "field 'intercept' is missing"),
    (lambda raw: raw.update(format_version=9), "field 'format_version' is 9"),
    (lambda raw: raw["idf"].pop(), "fields 'terms', 'idf' and 'coef' differ in length"),
    (lambda raw: raw.update(length_weight="heavy"), "a field has the wrong type or value"),
])
def test_a_damaged_export_is_refused_in_one_line(tmp_path: Path, edit, needle: str) -> None:
    from predictor.linear import LINEAR_FILE

    exported(TfidfRidgeEstimator.fit(synthetic(40)), tmp_path, "tfidf")
    path = tmp_path / "tfidf-linear" / LINEAR_FILE
    raw = json.loads(path.read_text())
    edit(raw)
    path.write_text(json.dumps(raw))
    result = CliRunner().invoke(main, ["estimate", "--predictor", str(path.parent), "What is 6 * 7?"])
    assert result.exit_code == 2, result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # click's exit, nothing raised
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert str(path) in line and needle in line


def test_tale_calibrate_writes_into_the_export_what_calibrating_the_source_gives(tmp_path: Path) -> None:
    from test_cli_predict import write_records

    from predictor.calibrate import Calibration
    from predictor.linear import LinearEstimator

    records = write_records(tmp_path / "records", n=120)
    runner = CliRunner()
    exported(TfidfRidgeEstimator.fit(synthetic(80)), tmp_path, "tfidf")
    for directory in (tmp_path / "tfidf", tmp_path / "tfidf-linear"):
        result = runner.invoke(main, ["calibrate", "--predictor", str(directory), "--records", str(records), "--all"])
        assert result.exit_code == 0, result.output
        assert f"calibrated tfidf:{directory} on 108 feasible records" in result.output
    assert "tale_linear.json" in result.output
    linear = LinearEstimator.load(tmp_path / "tfidf-linear")
    assert linear.calibration.scores == pytest.approx(Calibration.load(tmp_path / "tfidf").scores, abs=1e-9)
    assert not (tmp_path / "tfidf-linear" / "tale_calibration.json").exists()  # one file holds the export
