"""Budget estimators without torch: examples from records, the shared split, metrics, the zero-shot
LLM estimator against a scripted backend, the baselines, and the evaluation report."""

from __future__ import annotations

import json
import math
import random
from collections.abc import Sequence
from pathlib import Path

import pytest
from conftest import budget_record

from data_builder.rows import BadRowError
from predictor import META_FILE, BudgetRange, load_estimator
from predictor.baselines import ConstantEstimator, TfidfRidgeConfig, TfidfRidgeEstimator
from predictor.data import Example, ExampleConfig, fingerprint, load_examples, split_by_id
from predictor.llm import LLMEstimator, LLMEstimatorConfig, parse_budget
from predictor.metrics import cross_validate, evaluate, fold_of, markdown_table, score, write_report
from reasoner.backends import Generation
from reasoner.prompts import Prompt, estimation_prompt

WORDS = "apples pears clips friends sold bought half many total each price cost more less dollars".split()


def record(i: int, *, feasible: bool = True, budget: int | None = 40, **fields) -> dict:
    """A budget record's JSON object; ``fields`` override (with any value, to make a bad one)."""
    good = budget_record(f"test-{i:04d}", question=f"Question {i}: how many apples?", feasible=feasible,
                         budget=budget if feasible else None, vanilla_tokens=200)
    return {**good.to_json(), **fields}


def write_records(directory: Path, records: Sequence[dict | str], name: str = "records-00000-of-00001.jsonl") -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in records))
    return path


def synthetic(n: int = 80, seed: int = 0) -> list[Example]:
    """Budget = 8 tokens per word, so question length alone predicts it."""
    rng = random.Random(seed)
    examples = []
    for i in range(n):
        words = rng.randint(3, 30)
        examples.append(Example(f"syn-{i}", " ".join(rng.choice(WORDS) for _ in range(words)), 8 * words))
    return examples


# --- examples from records -------------------------------------------------------------------


def test_examples_leave_out_infeasible_records_by_default(tmp_path: Path) -> None:
    write_records(tmp_path / "a", [record(0, budget=30), record(1, feasible=False), record(2, budget=50)])
    write_records(tmp_path / "b", [record(3, budget=70)], name="records-00000-of-00002.jsonl")
    examples = load_examples([tmp_path / "a", tmp_path / "b"])
    assert [(e.id, e.budget) for e in examples] == [("test-0000", 30), ("test-0002", 50), ("test-0003", 70)]
    assert examples.infeasible_left_out == 1 and examples.skipped == ()
    with_infeasible = load_examples(tmp_path / "a", ExampleConfig(include_infeasible=True))
    assert [(e.budget, e.feasible) for e in with_infeasible] == [(30, True), (200, False), (50, True)]


def test_excluded_ids_leave_every_split_and_are_counted(tmp_path: Path) -> None:
    write_records(tmp_path / "a", [record(i, budget=30 + i) for i in range(6)])
    examples = load_examples(tmp_path / "a", ExampleConfig(exclude_ids=frozenset({"test-0001", "test-0004", "elsewhere"})))
    assert [e.id for e in examples] == ["test-0000", "test-0002", "test-0003", "test-0005"] and examples.excluded == 2
    everything = load_examples(tmp_path / "a")
    kept = split_by_id(examples, 0.5)  # the split of the ids that stay is the one they had before
    assert {e.id for e in kept.held_out} == {e.id for e in split_by_id(everything, 0.5).held_out} - {"test-0001", "test-0004"}


def test_a_truncated_last_line_is_an_interrupted_write_not_an_error(tmp_path: Path) -> None:
    path = write_records(tmp_path, [record(0)])
    with open(path, "a") as f:
        f.write('{"id": "test-0001", "quest')
    assert [e.id for e in load_examples(tmp_path)] == ["test-0000"]


@pytest.mark.parametrize(
    "bad, field, reason",
    [
        (record(1, budget=None), "budget", "positive integer, got None"),
        (record(1, budget=0), "budget", "positive integer, got 0"),
        (record(1, budget=-3), "budget", "got -3"),
        (record(1, budget=12.5), "budget", "got 12.5"),
        (record(1, budget="40"), "budget", "got '40'"),
        (record(1, question="  "), "question", "non-empty string"),
        ({k: v for k, v in record(1).items() if k != "question"}, "question", "missing"),
        (record(1, feasible="yes"), "feasible", "true or false"),
        ({k: v for k, v in record(1).items() if k != "feasible"}, "feasible", "missing"),
        (record(1, id=""), "id", "non-empty string"),
        (record(0), "id", "duplicate id 'test-0000', first at"),
        ("{not json", None, "not valid JSON"),
        ("[1, 2]", None, "expected a JSON object"),
    ],
)
def test_a_bad_record_names_file_line_and_field(tmp_path: Path, bad, field, reason) -> None:
    path = write_records(tmp_path, [record(0), "", bad, record(2)])
    with pytest.raises(BadRowError) as caught:
        load_examples(tmp_path)
    error = caught.value
    assert (error.path, error.line, error.field) == (str(path), 3, field)
    assert reason in str(error) and str(error).startswith(f"{path}:3: ")


def test_an_included_infeasible_record_needs_its_vanilla_tokens(tmp_path: Path) -> None:
    path = write_records(tmp_path, [record(0, feasible=False, vanilla_tokens=None)])
    assert load_examples(tmp_path) == []  # left out, so never checked
    with pytest.raises(BadRowError, match=f"{path}:1: field 'vanilla_tokens'"):
        load_examples(tmp_path, ExampleConfig(include_infeasible=True))


def test_skip_bad_skips_and_counts(tmp_path: Path) -> None:
    write_records(tmp_path, [record(0), record(1, budget=0), "{oops", record(3, question=""), record(4), record(0)])
    examples = load_examples(tmp_path, ExampleConfig(skip_bad=True))
    assert [e.id for e in examples] == ["test-0000", "test-0004"]
    assert [(s.line, s.field) for s in examples.skipped] == [(2, "budget"), (3, None), (4, "question"), (6, "id")]


def test_the_held_out_split_depends_on_ids_only() -> None:
    examples = synthetic(400)
    split = split_by_id(examples, 0.25)
    shuffled = split_by_id(random.Random(1).sample(examples, len(examples)), 0.25)
    assert {e.id for e in split.held_out} == {e.id for e in shuffled.held_out}
    assert {e.id for e in split.train}.isdisjoint(e.id for e in split.held_out)
    assert len(split.train) + len(split.held_out) == 400 and 60 < len(split.held_out) < 140
    assert split_by_id(examples, 0.0).held_out == []
    other_salt = split_by_id(examples, 0.25, salt="validation")
    assert {e.id for e in other_salt.held_out} != {e.id for e in split.held_out}
    with pytest.raises(ValueError, match="fraction"):
        split_by_id(examples, 1.0)


def test_fingerprint_covers_ids_and_budgets_not_order() -> None:
    examples = synthetic(10)
    assert fingerprint(examples) == fingerprint(reversed(examples))
    changed = [Example(examples[0].id, examples[0].question, examples[0].budget + 1), *examples[1:]]
    assert fingerprint(changed) != fingerprint(examples)
    assert len(fingerprint(examples)) == 64


# --- metrics -----------------------------------------------------------------------------------


def test_metric_arithmetic_on_hand_made_numbers() -> None:
    s = score(predicted=[10, 30, 5, 100], targets=[10, 20, 10, 40])
    assert s.n == 4
    assert s.mae == (0 + 10 + 5 + 60) / 4
    # |ln ratio| = 0, ln 1.5, ln 2, ln 2.5: the median is the mean of the middle two
    assert s.median_abs_log_ratio == pytest.approx((math.log(1.5) + math.log(2)) / 2, abs=1e-12)
    # ranks [2, 3, 1, 4] against [1.5, 3, 1.5, 4] (a tie): r = 4.5 / sqrt(5 * 4.5) = sqrt(0.9)
    assert s.spearman == pytest.approx(math.sqrt(0.9), abs=1e-12)
    assert s.in_range_rate == 0.5  # 10 in [10, 20] and 30 in [20, 40]; 5 and 100 are not
    assert s.under_budget_rate == 0.25  # 5 < 10
    assert score([20, 20, 20], [1, 2, 3]).spearman is None  # undefined for a constant
    one = score([2], [1])  # 2 lies in [1, 2]: in range, and not under the budget
    assert (one.n, one.mae, one.spearman, one.in_range_rate, one.under_budget_rate) == (1, 1, None, 1.0, 0.0)
    assert one.median_abs_log_ratio == pytest.approx(math.log(2), abs=1e-12)
    with pytest.raises(ValueError, match="3 predictions for 2"):
        score([1, 2, 3], [1, 2])


# --- the zero-shot LLM estimator -----------------------------------------------------------------


class ReplyBackend:
    """Answers every estimation prompt with the reply scripted for its question."""

    name = "replies"

    def __init__(self, replies: dict[str, str]) -> None:
        self.replies = replies
        self.calls: list[tuple[list[Prompt], int]] = []

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        self.calls.append((list(prompts), max_new_tokens))
        out = []
        for prompt in prompts:
            question = prompt.user.rsplit("Question: ", 1)[1]
            reply = self.replies[question]
            out.append(Generation(reply, len(prompt.user.split()), len(reply.split()), "stop"))
        return out


def test_cross_validation_holds_each_example_out_once_and_trains_on_the_rest(tmp_path: Path) -> None:
    import statistics

    examples = [Example(id=f"q{i}", question=f"question {i}", budget=10 + 7 * i) for i in range(30)]
    seen: list[list[str]] = []

    def constant(train):
        seen.append(sorted(e.id for e in train))
        return ConstantEstimator.fit(train)

    evaluation = cross_validate({"constant": constant}, examples, folds=3)
    assert sorted(evaluation.ids) == sorted(e.id for e in examples) and evaluation.folds == 3
    by_id = {e.id: e for e in examples}
    folds = [[e for e in examples if fold_of(e.id, 3) == k] for k in range(3)]
    assert all(folds) and len(seen) == 3
    for k, held_out in enumerate(folds):  # each fold is predicted by the median of the other two
        train = [e for j, part in enumerate(folds) if j != k for e in part]
        assert seen[k] == sorted(e.id for e in train)
        expected = BudgetRange().clamp(statistics.median(e.budget for e in train))
        predicted = dict(zip(evaluation.ids, evaluation.results[0].predictions))
        assert all(predicted[e.id] == expected for e in held_out)
    assert list(evaluation.targets) == [by_id[i].budget for i in evaluation.ids]
    assert evaluation.results[0].trained_on_split is True
    report = write_report(evaluation, tmp_path)
    assert "3-fold cross-validation" in report.markdown.read_text()
    with pytest.raises(ValueError, match="at least 2 folds"):
        cross_validate({"constant": constant}, examples, folds=1)


@pytest.mark.parametrize(
    "reply, value, source",
    [
        ("Budget: [[120]]", 120, "brackets"),
        ("[[ 120 tokens ]]", 120, "brackets"),
        ("Budget: [[1,200]]", 1200, "brackets"),
        ("[[12.6]]", 12.6, "brackets"),
        ("First [[50]], on second thought [[80]].", 80, "brackets"),
        ("Budget: [[80]] and the answer is [[answer]]", 80, "brackets"),
        ("[[100-200]]", 200, "brackets"),
        ("[[-5]]", -5, "brackets"),
        ("Budget: 60", 60, "label"),
        ("I cannot tell.", None, "default"),
        ("Budget: [[budget]]", None, "default"),
        ("", None, "default"),
    ],
)
def test_parse_budget(reply: str, value: float | None, source: str) -> None:
    parsed = parse_budget(reply)
    assert (parsed.value, parsed.source) == (value, source)


def test_llm_estimator_defaults_counts_clamps_and_costs() -> None:
    replies = {"q1": "Budget: [[120]]", "q2": "no idea", "q3": "[[-40]]", "q4": "[[" + "9" * 400 + "]]",
               "q5": "[[0]]", "q6": "Budget: [[20]] ... final: [[ 64 tokens ]]"}
    backend = ReplyBackend(replies)
    config = LLMEstimatorConfig(max_new_tokens=16, default_budget=100, budget_range=BudgetRange(8, 512))
    estimator = LLMEstimator(backend, config)
    assert estimator.predict(list(replies)) == [120, 100, 8, 512, 8, 64]
    prompts, max_new_tokens = backend.calls[0]
    assert prompts == [estimation_prompt(q) for q in replies] and max_new_tokens == 16
    estimates = estimator.last_estimates
    assert [e.source for e in estimates] == ["brackets", "default", "brackets", "brackets", "brackets", "brackets"]
    assert [e.clamped for e in estimates] == [False, False, True, True, True, False]
    cost = estimator.last_cost
    assert cost.questions == 6 and cost.fallbacks == 1
    assert cost.prompt_tokens == sum(len(p.user.split()) for p in prompts)
    assert cost.output_tokens == sum(len(r.split()) for r in replies.values())
    assert estimator.tokens_spent == cost.tokens == cost.prompt_tokens + cost.output_tokens
    estimator.predict(["q2"])
    assert estimator.last_cost.questions == 1 and estimator.last_cost.fallbacks == 1
    assert estimator.total_cost.questions == 7 and estimator.fallbacks == 2
    assert estimator.tokens_spent == cost.tokens + estimator.last_cost.tokens
    assert estimator.predict([]) == [] and len(backend.calls) == 2  # no call for nothing


def test_bad_settings_are_refused() -> None:
    with pytest.raises(ValueError, match="default_budget"):
        LLMEstimatorConfig(default_budget=4)
    with pytest.raises(ValueError, match="max_new_tokens"):
        LLMEstimatorConfig(max_new_tokens=0)
    with pytest.raises(ValueError, match="language"):
        LLMEstimatorConfig(language="fr")
    with pytest.raises(ValueError, match="min <= max"):
        BudgetRange(100, 10)
    with pytest.raises(ValueError, match="integer"):
        BudgetRange(8.5, 100)
    with pytest.raises(ValueError, match="held_out_fraction"):
        ExampleConfig(held_out_fraction=1.0)


def test_budget_range_clamps_and_rounds() -> None:
    limits = BudgetRange(8, 100)
    assert [limits.clamp(v) for v in (-1e9, 0, 7.4, 8.5, 9.5, 55.5, 100.4, math.inf, math.nan)] == [
        8, 8, 8, 8, 10, 56, 100, 100, 8]


# --- baselines ---------------------------------------------------------------------------------


def test_constant_baseline_is_the_clamped_training_median(tmp_path: Path) -> None:
    examples = [Example(f"c{i}", "q", b) for i, b in enumerate([10, 40, 30, 1000])]
    constant = ConstantEstimator.fit(examples)
    assert constant.budget == 35 and constant.predict(["a", "b"]) == [35, 35]
    assert ConstantEstimator.fit(examples[:1], BudgetRange(16, 64)).budget == 16
    constant.save(tmp_path)
    assert json.loads((tmp_path / META_FILE).read_text())["estimator"] == "constant"
    loaded = load_estimator(tmp_path)
    assert isinstance(loaded, ConstantEstimator) and loaded.budget == 35
    assert loaded.training_fingerprint == fingerprint(examples) and loaded.n_train == 4


def test_tfidf_ridge_learns_length_and_survives_save_load(tmp_path: Path) -> None:
    from scipy.stats import spearmanr

    examples = synthetic(80)
    questions = [e.question for e in synthetic(40, seed=1)]
    targets = [e.budget for e in synthetic(40, seed=1)]
    ridge = TfidfRidgeEstimator.fit(examples, TfidfRidgeConfig(budget_range=BudgetRange(8, 200)))
    predicted = ridge.predict(questions)
    assert spearmanr(predicted, targets).statistic > 0.8  # on unseen questions
    assert all(8 <= p <= 200 for p in predicted) and max(predicted) == 200  # 30 words -> 240, clamped
    ridge.save(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pipeline.joblib", META_FILE]
    loaded = load_estimator(tmp_path)
    assert isinstance(loaded, TfidfRidgeEstimator)
    assert loaded.predict(questions) == predicted and loaded.predict_float(questions) == ridge.predict_float(questions)
    assert loaded.config == ridge.config and loaded.training_fingerprint == fingerprint(examples)
    without_length = TfidfRidgeEstimator.fit(examples, TfidfRidgeConfig(length_feature=False))
    assert 8 <= without_length.predict(["an unseen word"])[0] <= 1024


def test_aimed_scales_before_rounding_and_clamps_into_the_wrapped_range() -> None:
    from predictor import RANGE_CENTRE, Aimed

    examples = synthetic(80)
    ridge = TfidfRidgeEstimator.fit(examples, TfidfRidgeConfig(budget_range=BudgetRange(8, 200)))
    questions = [e.question for e in synthetic(20, seed=1)]
    aimed = Aimed(ridge, RANGE_CENTRE)
    expected = [min(200, max(8, round(v * RANGE_CENTRE))) for v in ridge.predict_float(questions)]
    assert aimed.predict(questions) == expected and aimed.budget_range == BudgetRange(8, 200)

    class Unrounded:  # 10.4 tokens: scaled then rounded is 16, rounded then scaled would be 15
        budget_range = BudgetRange()

        def predict(self, questions):
            return [10] * len(questions)

        def predict_float(self, questions):
            return [10.4] * len(questions)

    assert Aimed(Unrounded(), 1.5).predict(["a"]) == [16]
    # a constant: its budget, scaled, clamped into the default range
    assert Aimed(ConstantEstimator(35), 1.5).predict(["a", "b"]) == [52, 52]  # 52.5, half to even
    assert Aimed(ConstantEstimator(900), 2).predict(["a"]) == [BudgetRange().max]
    for factor in (0, -1.0, math.nan, math.inf):
        with pytest.raises(ValueError, match="aim factor must be a positive number"):
            Aimed(ConstantEstimator(35), factor)

    class Costed(ConstantEstimator):  # like the LLM estimator: estimate() carries the tokens and time spent
        def estimate(self, questions):
            raise AssertionError("not called")

    with pytest.raises(TypeError, match="a wrapper would hide it, so aim only"):
        Aimed(Costed(35), 1.5)


def test_load_estimator_refuses_what_it_does_not_know(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=META_FILE):
        load_estimator(tmp_path)
    (tmp_path / META_FILE).write_text('{"estimator": "crystal-ball"}')
    with pytest.raises(ValueError, match="crystal-ball"):
        load_estimator(tmp_path)


# --- evaluation and report ---------------------------------------------------------------------


def test_evaluate_and_report_several_estimators(tmp_path: Path) -> None:
    held_out = [Example("h1", "one two", 16), Example("h2", "one two three four", 32), Example("h3", "x", 8)]
    llm = LLMEstimator(ReplyBackend({"one two": "[[16]]", "one two three four": "hmm", "x": "[[4]]"}),
                       LLMEstimatorConfig(default_budget=50))
    llm.predict(["x"])  # spent before the evaluation: not counted in it
    before = llm.tokens_spent
    evaluation = evaluate({"constant": ConstantEstimator(20), "llm:scripted": llm}, held_out)
    assert evaluation.ids == ("h1", "h2", "h3") and evaluation.targets == (16, 32, 8)
    constant, zero_shot = evaluation.results
    assert constant.predictions == (20, 20, 20) and zero_shot.predictions == (16, 50, 8)
    assert constant.tokens_per_question == 0 and constant.fallbacks is None
    assert zero_shot.fallbacks == 1
    assert zero_shot.tokens_per_question == pytest.approx((llm.tokens_spent - before) / 3)
    assert zero_shot.scores == score([16, 50, 8], [16, 32, 8]) and zero_shot.scores.in_range_rate == 1.0
    assert constant.scores.under_budget_rate == pytest.approx(1 / 3)

    files = write_report(evaluation, tmp_path / "report")
    table = files.markdown.read_text()
    assert "| constant | 3 |" in table and "| llm:scripted | 3 |" in table and table == (
        f"# Budget estimators on 3 held-out questions (one held-out split)\n\n{markdown_table(evaluation)}")
    data = json.loads(files.json.read_text())
    assert data["targets"] == [16, 32, 8] and [r["name"] for r in data["results"]] == ["constant", "llm:scripted"]
    assert data["results"][1]["scores"]["in_range_rate"] == 1.0 and data["results"][0]["scores"]["spearman"] is None
    assert sorted(p.name for p in files.plots.values()) == ["scatter-constant.png", "scatter-llm_scripted.png"]
    assert all(p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in files.plots.values())
    assert all(r.trained_on_split is None for r in evaluation.results)  # no training part given


def test_evaluate_flags_estimators_trained_on_other_examples() -> None:
    split = split_by_id(synthetic(60), 0.25)
    estimators = {
        "constant": ConstantEstimator.fit(split.train),
        "tfidf": TfidfRidgeEstimator.fit(split.train),
        "constant:elsewhere": ConstantEstimator.fit(synthetic(60, seed=9)),
        "llm": LLMEstimator(ReplyBackend({e.question: "[[50]]" for e in split.held_out})),
    }
    evaluation = evaluate(estimators, split.held_out, train=split.train)
    assert [r.trained_on_split for r in evaluation.results] == [True, True, False, None]
    assert "| constant:elsewhere |" in markdown_table(evaluation) and "NO: other data" in markdown_table(evaluation)



def test_every_estimator_declares_the_contract_its_callers_use() -> None:
    """budget_range, predict_float and predict on every estimator class: callers use them, never probe for them."""
    from export.runtime import OnnxEstimator
    from predictor import Estimator, Scaled
    from predictor.bert import BertRegressor
    from predictor.linear import LinearEstimator
    from predictor.llm import LLMEstimator
    from predictor.probe import ProbeEstimator

    declared = [name for name in ("budget_range", "predict_float", "predict") if name in Estimator.__annotations__ or hasattr(Estimator, name)]
    assert declared == ["budget_range", "predict_float", "predict"]
    for cls in (ConstantEstimator, TfidfRidgeEstimator, BertRegressor, OnnxEstimator, LinearEstimator, ProbeEstimator, LLMEstimator):
        assert callable(getattr(cls, "predict_float", None)) and callable(getattr(cls, "predict", None)), cls
        assert "budget_range" in dir(cls) or "budget_range" in cls.__init__.__code__.co_names, cls
    ridge = TfidfRidgeEstimator.fit(synthetic(40))
    questions = [e.question for e in synthetic(5, seed=3)]
    for estimator in (ConstantEstimator(35), ridge, Scaled(ridge, 1.5)):
        assert isinstance(estimator.budget_range, BudgetRange)
        assert estimator.predict(questions) == [estimator.budget_range.clamp(b) for b in estimator.predict_float(questions)]
