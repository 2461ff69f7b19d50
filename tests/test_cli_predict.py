"""tale train-predictor and eval-predictor on a tiny encoder and synthetic records."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner
from conftest import budget_record

from data_builder.sources import problem_id
from tale.cli import main


def write_records(out: Path, n: int = 40) -> Path:
    """Records whose budget follows question length, one infeasible in ten."""
    from data_builder.records import RecordWriter, Shard

    with RecordWriter(Shard().records_path(out)) as writer:
        for i in range(n):
            question = "How many apples " + "and pears " * (i % 12) + f"are there in basket {i}?"
            feasible = i % 10 != 0
            budget = 10 + 8 * (i % 12) if feasible else None
            writer.write(budget_record(problem_id("t", question), question=question, feasible=feasible, budget=budget,
                                       vanilla_tokens=200, gold="1"))
    return out


def test_train_then_compare_estimators(tiny_bert_dir: Path, tmp_path: Path) -> None:
    records = write_records(tmp_path / "records")
    runner = CliRunner()
    result = runner.invoke(main, ["train-predictor", "--records", str(records), "--out", str(tmp_path / "bert"),
                                  "--encoder", str(tiny_bert_dir), "--epochs", "2", "--max-length", "64"],
                           catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "trained on" in result.output
    meta = json.loads((tmp_path / "bert" / "tale_predictor.json").read_text())
    assert meta["n_train"] + meta["n_validation"] < 36  # the held-out ids stay out of training

    result = runner.invoke(main, ["eval-predictor", "--records", str(records), "--out", str(tmp_path / "eval"),
                                  "--estimators", f"bert:{tmp_path / 'bert'},constant,tfidf"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "eval" / "report.json").read_text())
    names = [r["name"] for r in report["results"]]
    assert names == [f"bert:{tmp_path / 'bert'}", "constant", "tfidf"]
    assert all(0 <= r["scores"]["in_range_rate"] <= 1 for r in report["results"])
    assert (tmp_path / "eval" / "report.md").read_text().count("|") > 10
    from predictor import load_estimator  # the fitted baselines are saved for evaluate and ablate

    constant = load_estimator(tmp_path / "eval" / "constant")
    assert constant.predict(["any question"]) == [report["results"][1]["predictions"][0]]

    result = runner.invoke(main, ["eval-predictor", "--records", str(records), "--out", str(tmp_path / "aimed"),
                                  "--estimators", "constant,constant@1.5,tfidf@1.5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    aimed = {r["name"]: r for r in json.loads((tmp_path / "aimed" / "report.json").read_text())["results"]}
    assert aimed["constant@1.5"]["predictions"] == [round(p * 1.5) for p in aimed["constant"]["predictions"]]
    assert aimed["tfidf@1.5"]["predictions"] != report["results"][2]["predictions"]
    assert all(r["trained_on_split"] for r in aimed.values())  # the wrapped estimator's training is checked
    bad = runner.invoke(main, ["eval-predictor", "--records", str(records), "--estimators", "constant@x"])
    assert bad.exit_code == 2 and "positive factor" in bad.output


def test_exclude_leaves_the_named_records_ids_out_of_training_and_scoring(tmp_path: Path) -> None:
    from data_builder.records import RecordWriter, Shard, load_records

    records = write_records(tmp_path / "records")
    every = load_records(records)
    trained_on = tmp_path / "reasoner-training"  # e.g. the questions the reasoner was post-trained on
    with RecordWriter(Shard().records_path(trained_on)) as writer:
        for r in every[:20]:
            writer.write(r)
    runner = CliRunner()
    full = runner.invoke(main, ["eval-predictor", "--records", str(records), "--out", str(tmp_path / "full"),
                                "--held-out", "0.5"], catch_exceptions=False)
    result = runner.invoke(main, ["eval-predictor", "--records", str(records), "--out", str(tmp_path / "kept"),
                                  "--held-out", "0.5", "--exclude", str(trained_on)], catch_exceptions=False)
    assert full.exit_code == 0 and result.exit_code == 0, result.output
    assert f"20 records left out: their ids are in {trained_on}" in result.output
    scored = {i for i in json.loads((tmp_path / "kept" / "report.json").read_text())["ids"]}
    before = set(json.loads((tmp_path / "full" / "report.json").read_text())["ids"])
    assert scored and scored == before - {r.id for r in every[:20]}


def test_test_records_score_another_data_set_with_the_estimators_trained_on_records(tmp_path: Path) -> None:
    from data_builder.records import RecordWriter, Shard, load_records

    records = write_records(tmp_path / "records")
    other = tmp_path / "other"  # another data set: longer questions; one of them is also in --records
    shared = load_records(records)[1]
    with RecordWriter(Shard().records_path(other)) as writer:
        writer.write(shared)
        for i in range(12):
            question = "A farmer has " + "many fields and " * (i % 6) + f"how many cows, case {i}?"
            feasible = i != 5
            writer.write(budget_record(problem_id("o", question), question=question, feasible=feasible,
                                       budget=20 + 10 * i if feasible else None, vanilla_tokens=300, gold="1"))
    runner = CliRunner()
    result = runner.invoke(main, ["eval-predictor", "--records", str(records), "--test-records", str(other), "--calibration", "0.3",
                                  "--risks", "0.5", "--estimators", "constant,tfidf", "--out", str(tmp_path / "cross")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert f"scoring on 11 feasible records of {other} (1 left out: in --records or --exclude)" in result.output
    report = json.loads((tmp_path / "cross" / "report.json").read_text())
    assert set(report["ids"]) == {r.id for r in load_records(other) if r.feasible} - {shared.id}
    assert report["targets"] == [20 + 10 * i for i in range(12) if i != 5]
    assert all(r["trained_on_split"] for r in report["results"])  # trained on --records' training split, as without it
    coverage = json.loads((tmp_path / "cross" / "coverage.json").read_text())
    assert all(r["n_test"] == 11 for r in coverage)
    folded = runner.invoke(main, ["eval-predictor", "--records", str(records), "--test-records", str(other), "--folds", "3"])
    assert folded.exit_code == 2 and "takes no --test-records" in folded.output


def test_cross_validated_comparison_trains_bert_per_fold(tiny_bert_dir: Path, tmp_path: Path, monkeypatch) -> None:
    from predictor.bert import BertRegressor

    fits = []
    fit = BertRegressor.fit.__func__
    monkeypatch.setattr(BertRegressor, "fit", classmethod(lambda cls, *a, **k: fits.append(1) or fit(cls, *a, **k)))
    records = write_records(tmp_path / "records")
    args = ["eval-predictor", "--records", str(records), "--out", str(tmp_path / "cv"), "--folds", "3",
            "--encoder", str(tiny_bert_dir), "--epochs", "1", "--max-length", "64"]
    result = CliRunner().invoke(main, [*args, "--estimators", "bert,constant,tfidf"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cv" / "report.json").read_text())
    assert report["folds"] == 3 and len(report["ids"]) == 36  # every feasible record, held out once
    assert [r["name"] for r in report["results"]] == ["bert", "constant", "tfidf"]
    assert all(len(r["predictions"]) == 36 and r["trained_on_split"] for r in report["results"])
    assert len(fits) == 3
    aimed = CliRunner().invoke(main, [*args, "--out", str(tmp_path / "cv-aimed"), "--estimators", "bert,bert@2"],
                               catch_exceptions=False)
    assert aimed.exit_code == 0, aimed.output
    assert len(fits) == 6  # bert and bert@2 share each fold's fit
    plain, doubled = json.loads((tmp_path / "cv-aimed" / "report.json").read_text())["results"]
    assert doubled["name"] == "bert@2" and len(doubled["predictions"]) == 36
    assert all(abs(d - 2 * p) <= 1 for p, d in zip(plain["predictions"], doubled["predictions"]))
    refused = CliRunner().invoke(main, [*args, "--estimators", f"bert:{tmp_path}"])
    assert refused.exit_code == 2 and "trained per fold" in refused.output


def test_unknown_estimator_is_a_usage_error(tmp_path: Path) -> None:
    records = write_records(tmp_path / "records")
    result = CliRunner().invoke(main, ["eval-predictor", "--records", str(records), "--estimators", "oracle"])
    assert result.exit_code == 2 and "unknown estimator 'oracle'" in result.output


def test_infeasible_records_can_be_trained_on_but_are_never_scored(tiny_bert_dir: Path, tmp_path: Path) -> None:
    import statistics

    from predictor.data import ExampleConfig, load_examples
    from predictor.metrics import fold_of

    records = write_records(tmp_path / "records")
    runner = CliRunner()
    cv = ["eval-predictor", "--records", str(records), "--folds", "3", "--estimators", "constant"]
    result = runner.invoke(main, [*cv, "--include-infeasible", "--out", str(tmp_path / "cv")], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    report = json.loads((tmp_path / "cv" / "report.json").read_text())
    examples = load_examples(records, ExampleConfig(include_infeasible=True))
    feasible = {e.id: e for e in examples if e.feasible}
    assert len(examples) == 40 and sorted(report["ids"]) == sorted(feasible)  # the 4 infeasible ones: trained on only
    assert report["infeasible_trained_on"] == 4
    assert "4 infeasible records trained on" in (tmp_path / "cv" / "report.md").read_text()
    [constant] = report["results"]
    for example_id, predicted in zip(report["ids"], constant["predictions"]):
        k = fold_of(example_id, 3)  # the median of the other folds, vanilla tokens (200) of infeasible records included
        assert predicted == round(statistics.median(e.budget for e in examples if fold_of(e.id, 3) != k))

    # One held-out split: a regressor trained with --include-infeasible is checked against the same training part.
    trained = runner.invoke(main, ["train-predictor", "--records", str(records), "--out", str(tmp_path / "bert"),
                                   "--encoder", str(tiny_bert_dir), "--epochs", "1", "--max-length", "64",
                                   "--include-infeasible"], catch_exceptions=False)
    assert trained.exit_code == 0, trained.output
    split = ["eval-predictor", "--records", str(records), "--estimators", f"bert:{tmp_path / 'bert'},constant"]
    for flag, on_split in (["--include-infeasible"], True), ([], False):
        result = runner.invoke(main, [*split, *flag, "--out", str(tmp_path / f"split{len(flag)}")], catch_exceptions=False)
        assert result.exit_code == 0, result.output
        report = json.loads((tmp_path / f"split{len(flag)}" / "report.json").read_text())
        assert set(report["ids"]) <= set(feasible) and report["ids"]
        assert report["results"][0]["trained_on_split"] is on_split
        assert (report["infeasible_trained_on"] > 0) is on_split
