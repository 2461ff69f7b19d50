"""tale.eval.evaluate and tale.eval.ablate: the metric arithmetic, resuming, budget sources, choice problems, the grid."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import replace
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import budget_record

from data_builder.records import RecordWriter, Shard
from data_builder.run_dir import RunMismatchError
from data_builder.sources import Problem, load_problems, problem_id
from reasoner.backends import Generation
from reasoner.prompts import Prompt
from tale.cli.eval import ablate as ablate_command
from tale.cli.eval import evaluate as evaluate_command
from tale.eval.ablate import accuracy_figure, legend_label, markdown_report, row_label, row_labels
from tale.eval.evaluate import EvalConfig, EvalResult, Prices, collect, evaluate, summarize
from tale.eval.runs import EvalRow, dataset_label, load_rows, run_dirs
from tale.eval.sources import EstimatorBudget, FixedBudget, build_source

# --- a fake reasoner whose tokens and correctness are known -------------------------------------

# (question, method, budget) -> (correct, output tokens)
Script = Callable[[str, str, "int | None"], "tuple[bool, int]"]

_QUESTION = re.compile(r"^(?:Q: |问题：)(.*)$", re.MULTILINE)
_BUDGET = re.compile(r"(?:use less than|使用少于) (\d+)")
PROMPT_TOKENS, ESTIMATE_PROMPT_TOKENS, ESTIMATE_OUTPUT_TOKENS = 10, 20, 5


class FakeBackend:
    """Answers by script, states budget ``estimate`` when asked for one, records every prompt."""

    def __init__(self, problems: Sequence[Problem], script: Script, *, estimate: int | None = 40,
                 fail_on_call: int | None = None) -> None:
        self.name = "fake"
        self.problems = {p.question: p for p in problems}
        self.script = script
        self.estimate = estimate
        self.fail_on_call = fail_on_call
        self.prompts: list[str] = []
        self.calls = 0

    def generate(self, prompts: Sequence[Prompt], max_new_tokens: int) -> list[Generation]:
        self.calls += 1
        if self.calls == self.fail_on_call:
            raise KeyboardInterrupt  # the job is killed mid-run
        out = []
        for prompt in prompts:
            text = prompt.user
            self.prompts.append(text)
            if text.startswith(("Task:", "任务：")):
                reply = "I cannot say." if self.estimate is None else f"Budget: [[{self.estimate}]]"
                out.append(Generation(reply, ESTIMATE_PROMPT_TOKENS, ESTIMATE_OUTPUT_TOKENS, "stop"))
                continue
            problem = self.problems[_QUESTION.search(text).group(1)]
            match = _BUDGET.search(text)
            method = "budget" if match else "direct" if ("directly" in text or "直接" in text) else "vanilla"
            correct, tokens = self.script(problem.question, method, int(match.group(1)) if match else None)
            answer = problem.gold if correct else _wrong(problem)
            label = "Choice" if problem.kind == "choice" else "Answer"
            out.append(Generation(f"some steps. {label}: [[{answer}]]", PROMPT_TOKENS, min(tokens, max_new_tokens), "stop"))
        return out


def _wrong(problem: Problem) -> str:
    if problem.kind == "choice":
        return next(letter for letter in "ABCD" if letter != problem.gold)
    return problem.gold + "1"


def make_problems(n: int, source: str = "t") -> list[Problem]:
    questions = [f"How many apples are in basket {i} of {source}?" for i in range(n)]
    return [Problem(problem_id(source, q), q, str(10 + i), source=source) for i, q in enumerate(questions)]


def half_budget_script(question: str, method: str, budget: int | None) -> tuple[bool, int]:
    """Vanilla: 100 tokens, right. Direct: 5, wrong. Budget b: b // 2 + 10 tokens, right when b >= 20."""
    if method == "vanilla":
        return True, 100
    if method == "direct":
        return False, 5
    assert budget is not None
    return budget >= 20, budget // 2 + 10


def strip_times(rows: Sequence[EvalRow]) -> list[EvalRow]:
    return [replace(r, seconds=0.0, estimator_seconds=0.0) for r in rows]


# --- the metric arithmetic ------------------------------------------------------------------------


def test_summary_arithmetic_exactly() -> None:
    rows = [
        EvalRow("a", True, 40, 100, "budget", budget=50, estimator_prompt_tokens=30, estimator_output_tokens=5,
                estimator_seconds=0.1, seconds=1.0),
        EvalRow("b", False, 60, 100, "budget", budget=50, estimator_prompt_tokens=30, estimator_output_tokens=5,
                estimator_seconds=0.1, seconds=1.0),
        EvalRow("c", True, 20, 80, "vanilla", fallback="no-budget", seconds=0.5),
        EvalRow("d", True, 30, 120, "budget", budget=30, estimator_prompt_tokens=30, estimator_output_tokens=5,
                estimator_seconds=0.1, seconds=0.5, fallback="default-budget"),
    ]
    vanilla = [EvalRow(i, True, 100, 90, "vanilla") for i in "dcbaz"]
    s = summarize(rows, prices=Prices(2.0, 8.0), baseline=vanilla)
    assert (s.n, s.accuracy) == (4, 0.75)
    assert s.mean_output_tokens == 37.5  # over all 4 samples; over the correct ones it would be 30
    assert s.mean_prompt_tokens == 100
    assert s.estimator_tokens == 26.25  # 3 estimation calls of 35 tokens, over 4 questions
    assert (s.input_tokens, s.output_tokens, s.total_tokens) == (490, 165, 655)
    assert s.budgeted == 3 and s.budget_adherence == pytest.approx(2 / 3)  # 40 <= 50, 60 > 50, 30 <= 30
    assert (s.no_budget_fallbacks, s.default_budgets) == (1, 1)
    assert s.wall_seconds == pytest.approx(3.3)
    assert s.token_reduction == pytest.approx(1 - 150 / 400)
    assert s.total_token_reduction == pytest.approx(1 - 655 / 760)
    assert s.expense == pytest.approx((490 * 2 + 165 * 8) / 1e6)
    assert s.expense_per_sample == pytest.approx(s.expense / 4)

    partial = summarize(rows, baseline=vanilla[:2])
    assert partial.token_reduction is None and partial.expense is None
    assert summarize([]).n == 0
    plain = summarize([EvalRow("x", False, 7, 3, "vanilla")])
    assert plain.budget_adherence is None and plain.budgeted == 0


def test_row_labels_name_the_estimators_model() -> None:
    def label(**kwargs: str) -> str:
        return row_label(EvalConfig(dataset="generated", out=Path("x"), **kwargs))

    assert label(method="vanilla") == "Vanilla CoT"
    assert label(method="budget", budget_source="oracle:runs/records") == "TALE-EP (oracle:records)"
    # A bare llm is the reasoner estimating its own budgets: the same estimator as llm:<that model>.
    assert label(method="budget", budget_source="llm") == label(method="budget", budget_source="llm:default", model="runs/sft")
    assert label(method="budget", budget_source="llm") == "TALE-EP (llm:default)"
    assert label(method="budget", budget_source="llm", model="runs/sft") == "TALE-EP (llm:sft)"


def test_oracle_runs_share_one_row_unless_two_fill_one_cell() -> None:
    def result(dataset: str, records: str, correct: bool) -> EvalResult:
        config = EvalConfig(dataset=dataset, out=Path("x"), model="runs/sft", method="budget",
                            budget_source=f"oracle:runs/{records}")
        rows = (EvalRow("q", correct, 10, 5, "budget", budget=12),)
        return EvalResult(config, config.run_dir, rows, summarize(rows), questions=1)

    gsm8k, zero = result("gsm8k", "gsm8k-test", True), result("gsm8k_zero", "zero-test", False)
    assert set(row_labels([gsm8k, zero]).values()) == {"TALE-EP (oracle)"}
    table = markdown_report([gsm8k, zero], None)
    # one row, both data sets, and the average of the two
    assert "| TALE-EP (oracle) | sft | 100.00% / 10.00 / n/a | 0.00% / 10.00 / n/a | 50.00% / 10.00 / n/a |" in table

    halving = result("gsm8k", "gsm8k-halving", False)  # a second oracle on gsm8k: named by its records
    assert row_labels([gsm8k, zero, halving]) == {
        gsm8k.run_dir: "TALE-EP (oracle:gsm8k-test)", zero.run_dir: "TALE-EP (oracle:zero-test)",
        halving.run_dir: "TALE-EP (oracle:gsm8k-halving)"}
    table = markdown_report([gsm8k, zero, halving], None)
    assert "| TALE-EP (oracle:gsm8k-test) | sft | 100.00%" in table
    assert "| TALE-EP (oracle:gsm8k-halving) | sft | 0.00%" in table


def test_config_is_validated() -> None:
    with pytest.raises(ValueError, match="needs a budget source"):
        EvalConfig(dataset="generated", out=Path("x"), method="budget")
    with pytest.raises(ValueError, match="only it takes one"):
        EvalConfig(dataset="generated", out=Path("x"), method="vanilla", budget_source="fixed:8")
    with pytest.raises(ValueError, match="unknown budget source"):
        EvalConfig(dataset="generated", out=Path("x"), method="budget", budget_source="magic:8")
    with pytest.raises(ValueError, match="positive integer"):
        EvalConfig(dataset="generated", out=Path("x"), method="budget", budget_source="fixed:0")
    with pytest.raises(ValueError, match="needs an argument"):
        EvalConfig(dataset="generated", out=Path("x"), method="budget", budget_source="oracle")
    aimed = EvalConfig(dataset="generated", out=Path("x"), method="budget", budget_source="tfidf:runs/t@1.41")
    assert aimed.identity()["budget_source"] == "tfidf:runs/t@1.41"  # its own run, beside the unscaled one
    assert aimed.run_dir != EvalConfig(dataset="generated", out=Path("x"), method="budget", budget_source="tfidf:runs/t").run_dir
    for spec, reason in [("tfidf:runs/t@", "positive factor"), ("tfidf:runs/t@-2", "positive factor"),
                         ("llm@2", "only bert, onnx, constant, tfidf"), ("fixed:8@2", "only bert, onnx, constant, tfidf"),
                         ("oracle:runs/r@1.41", "only bert, onnx, constant, tfidf")]:
        with pytest.raises(ValueError, match=reason):
            EvalConfig(dataset="generated", out=Path("x"), method="budget", budget_source=spec)


# --- runs, resume, baselines ---------------------------------------------------------------------


def test_resume_after_interruption_matches_an_uninterrupted_run(tmp_path: Path) -> None:
    problems = make_problems(7)
    config = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path / "whole", method="budget", budget_source="fixed:16",
                        chunk=2, max_new_tokens=64)
    whole = evaluate(config, FakeBackend(problems, half_budget_script), FixedBudget(16), problems=problems)

    broken = replace(config, out=tmp_path / "broken")
    with pytest.raises(KeyboardInterrupt):
        evaluate(broken, FakeBackend(problems, half_budget_script, fail_on_call=3), FixedBudget(16), problems=problems)
    rows_file = broken.run_dir / "rows.jsonl"
    assert len(rows_file.read_text().splitlines()) == 4  # two chunks written before the kill
    with open(rows_file, "a") as f:
        f.write('{"id": "half a line')  # the kill landed mid-write
    again = FakeBackend(problems, half_budget_script)
    resumed = evaluate(broken, again, FixedBudget(16), problems=problems)
    assert again.calls == 2 and len(again.prompts) == 3  # only the 3 missing questions were asked
    ids = [r.id for r in load_rows(broken.run_dir)]
    assert len(ids) == len(set(ids)) == 7
    assert strip_times(resumed.rows) == strip_times(whole.rows)
    assert replace(resumed.summary, wall_seconds=0) == replace(whole.summary, wall_seconds=0)
    assert [r.budget for r in whole.rows] == [16] * 7 and whole.summary.accuracy == 0  # 16 < 20: all wrong

    # a rerun with other settings is refused, not mixed in
    with pytest.raises(RunMismatchError, match="max_new_tokens"):
        evaluate(replace(broken, max_new_tokens=32), FakeBackend(problems, half_budget_script), FixedBudget(16),
                 problems=problems)


def test_a_larger_limit_grows_the_same_run_and_asks_only_the_new_questions(tmp_path: Path, shared_data: Path) -> None:
    dataset = f"gsm8k:{shared_data / 'gsm8k' / 'test.jsonl'}"
    first, grown = (load_problems(dataset, limit=n, seed=0) for n in (4, 7))
    assert [p.id for p in grown[:4]] == [p.id for p in first]  # the seeded order does not depend on the limit
    config = EvalConfig(dataset=dataset, out=tmp_path, method="budget", budget_source="fixed:40", limit=4, seed=0)
    evaluate(config, FakeBackend(grown, half_budget_script), FixedBudget(40), problems=first)
    bigger = replace(config, limit=7)
    assert bigger.run_dir == config.run_dir
    again = FakeBackend(grown, half_budget_script)
    result = evaluate(bigger, again, FixedBudget(40), problems=grown)
    assert len(again.prompts) == 3 and [r.id for r in result.rows] == [p.id for p in grown]
    meta = json.loads((config.run_dir / "meta.json").read_text())
    assert meta["limit"] == 7 and meta["ids"] == [p.id for p in grown]


def test_reduction_against_the_vanilla_run_in_the_same_directory(tmp_path: Path) -> None:
    problems = make_problems(4)
    backend = FakeBackend(problems, half_budget_script)
    vanilla = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path, model="fake")
    budget = replace(vanilla, method="budget", budget_source="fixed:40")
    alone = evaluate(budget, backend, FixedBudget(40), problems=problems)
    assert alone.summary.token_reduction is None  # no vanilla run yet
    evaluate(vanilla, backend, problems=problems)
    result = evaluate(budget, backend, FixedBudget(40), problems=problems)  # resumes: nothing to ask
    assert result.summary.token_reduction == pytest.approx(1 - 30 / 100)
    assert result.summary.accuracy == 1 and result.summary.budget_adherence == 1
    summary = json.loads((budget.run_dir / "summary.json").read_text())
    assert summary["baseline"].endswith(vanilla.run_dir.name) and summary["complete"] is True


def test_oracle_budgets_from_records_with_fallback_for_questions_without_one(tmp_path: Path) -> None:
    problems = make_problems(3)
    with RecordWriter(Shard().records_path(tmp_path / "records")) as writer:
        writer.write(budget_record(problems[0].id, question=problems[0].question, feasible=True, budget=24, model="fake"))
        writer.write(budget_record(problems[1].id, question=problems[1].question, feasible=False, budget=None,
                                   model="fake"))  # problems[2] has no record at all
    config = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path / "eval", method="budget", model="fake",
                        budget_source=f"oracle:{tmp_path / 'records'}", prices=Prices(1.0, 4.0))
    backend = FakeBackend(problems, half_budget_script)
    result = evaluate(config, backend, problems=problems)  # the source is built from the config
    assert [(r.method, r.budget, r.fallback) for r in result.rows] == [
        ("budget", 24, None), ("vanilla", None, "no-budget"), ("vanilla", None, "no-budget")]
    assert sum("use less than 24 tokens" in p for p in backend.prompts) == 1
    s = result.summary
    assert (s.no_budget_fallbacks, s.budgeted, s.budget_adherence) == (2, 1, 1.0)  # 22 tokens <= 24
    assert s.mean_output_tokens == pytest.approx((22 + 100 + 100) / 3) and s.estimator_tokens == 0
    assert s.expense == pytest.approx((3 * PROMPT_TOKENS * 1.0 + 222 * 4.0) / 1e6)


def test_zero_shot_estimator_tokens_and_default_budget_are_counted(tmp_path: Path) -> None:
    problems = make_problems(3)
    backend = FakeBackend(problems, half_budget_script, estimate=None)  # states no budget: the default
    source = build_source("llm", reasoner=backend, backend_for=lambda m: backend, llm_default=30)
    assert isinstance(source, EstimatorBudget)
    config = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path, method="budget", budget_source="llm",
                        llm_default=30, prices=Prices(1.0, 1.0))
    s = evaluate(config, backend, source, problems=problems).summary
    assert s.default_budgets == 3 and s.budgeted == 3
    assert s.estimator_tokens == ESTIMATE_PROMPT_TOKENS + ESTIMATE_OUTPUT_TOKENS
    assert s.input_tokens == 3 * (PROMPT_TOKENS + ESTIMATE_PROMPT_TOKENS)
    assert s.output_tokens == 3 * (25 + ESTIMATE_OUTPUT_TOKENS)  # 30 // 2 + 10 per answer
    assert s.expense == pytest.approx(s.total_tokens / 1e6)


# --- MathBench single choice, English and Chinese --------------------------------------------------


def write_mathbench(root: Path) -> Path:
    level = root / "mathbench" / "middle"
    level.mkdir(parents=True)
    en = [{"question": "What is 8-(2+5) minus (8-2+5)?", "options": ["6", "-10", "-6", "10"], "answer": "B"},
          {"question": "Which number is prime?", "options": ["4", "6", "7", "9"], "answer": "C"}]
    cn = [{"question": "3 的平方是多少？", "options": ["6", "9", "12", "27"], "answer": "B"}]
    for name, rows in (("single_choice_en.jsonl", en), ("single_choice_cn.jsonl", cn)):
        (level / name).write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows))
    return level


def test_single_choice_end_to_end_in_english_and_chinese(tmp_path: Path) -> None:
    spec = f"mathbench:{write_mathbench(tmp_path)}"
    problems = load_problems(spec)
    assert {(p.kind, p.language) for p in problems} == {("choice", "en"), ("choice", "zh")}
    backend = FakeBackend(problems, lambda q, m, b: (not q.startswith("Which"), 30), estimate=40)
    config = EvalConfig(dataset=spec, out=tmp_path / "eval", method="budget", budget_source="llm", model="fake")
    result = evaluate(config, backend)  # loads the problems from the spec
    by_question = {r.question: r for r in result.rows}
    chinese = by_question["3 的平方是多少？"]
    assert chinese.language == "zh" and chinese.predicted == "B" and chinese.correct and chinese.gold == "B"
    wrong = by_question["Which number is prime?"]
    assert wrong.predicted == "A" and not wrong.correct
    assert result.summary.accuracy == pytest.approx(2 / 3) and result.summary.budgeted == 3
    prompts = "\n".join(backend.prompts)
    assert "A. 6\nB. -10\nC. -6\nD. 10" in prompts and "[[choice]]" in prompts
    assert "问题：3 的平方是多少？\nA. 6\nB. 9" in prompts and "使用少于 40 个 token" in prompts
    assert sum(p.startswith("任务：") for p in backend.prompts) == 1  # its budget is asked in Chinese
    assert sum(p.startswith("Task:") for p in backend.prompts) == 2


# --- the commands, on the tiny hf model --------------------------------------------------------------


def invoke(command, *args: str):
    return CliRunner().invoke(command, [str(a) for a in args], catch_exceptions=False)


HF = ("--backend", "hf", "--dtype", "float32", "--device", "cpu", "--threads", "1", "--max-new-tokens", "4")


def write_jsonl(path: Path, pairs: Sequence[tuple[str, str]]) -> str:
    path.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in pairs))
    return f"jsonl:{path}"


@pytest.mark.parametrize("command", [evaluate_command, ablate_command])
def test_help_has_an_example(command) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0 and f"Example: tale {command.name} " in result.output.replace("\n", " ")


def test_ablation_grid_writes_table_summary_and_plot(tiny_lm_dir: Path, tmp_path: Path) -> None:
    from predictor.baselines import ConstantEstimator

    first = write_jsonl(tmp_path / "first.jsonl", [("What is 2 + 3?", "5"), ("What is 6 * 7?", "42")])
    second = write_jsonl(tmp_path / "second.jsonl", [("What is 10 - 4?", "6"), ("What is 9 / 3?", "3")])
    ConstantEstimator(24).save(tmp_path / "constant")
    out = tmp_path / "ablate"
    args = ["--dataset", first, "--dataset", second, "--budget-source", "fixed:16",
            "--budget-source", f"constant:{tmp_path / 'constant'}", "--model", tiny_lm_dir, *HF,
            "--price-in", "1", "--price-out", "4", "--out", out]
    result = invoke(ablate_command, *args)
    assert result.exit_code == 0, result.output
    assert "8 configurations" in result.output

    table = (out / "table.md").read_text()
    header = next(line for line in table.splitlines() if line.startswith("| method |"))
    assert "| jsonl:first | jsonl:second | average |" in header
    for label in ("Direct", "Vanilla CoT", "TALE-EP (fixed:16)", "TALE-EP (constant:constant)"):
        assert f"| {label} | {tiny_lm_dir.name} |" in table
    assert re.search(r"\| \d+\.\d\d% / \d+\.\d\d / \d+\.\d\d \|", table)  # accuracy / tokens / expense

    summary = json.loads((out / "summary.json").read_text())
    assert len(summary["runs"]) == 8 and summary["prices"] == {"input_per_million": 1.0, "output_per_million": 4.0}
    budgeted = [r for r in summary["runs"] if r["config"]["method"] == "budget"]
    assert len(budgeted) == 4 and all(r["summary"]["token_reduction"] is not None for r in budgeted)
    assert all(r["summary"]["n"] == 2 and r["summary"]["expense"] > 0 for r in summary["runs"])
    assert (out / "accuracy_vs_tokens.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    results = [collect(d) for d in run_dirs(out)]
    figure = accuracy_figure(results)  # what the PNG shows: a panel per data set, a point per configuration
    assert [axes.get_title() for axes in figure.axes] == ["jsonl:first", "jsonl:second"]
    for axes in figure.axes:
        points = sorted(tuple(float(v) for v in c.get_offsets()[0]) for c in axes.collections)
        expected = sorted((r.summary.mean_output_tokens, 100 * r.summary.accuracy) for r in results
                          if dataset_label(r.config.dataset) == axes.get_title())
        assert len(points) == len(expected) == 4
        assert [v for p in points for v in p] == pytest.approx([v for p in expected for v in p])
    assert [len(legend.legend_handles) for legend in figure.legends] == [4, 1]  # methods, models
    budgets = {r["label"]: {row.budget for row in load_rows(Path(r["baseline"]).parent / r["run"])}
               for r in budgeted}
    assert budgets == {"fixed:16": {16}, f"constant:{tmp_path / 'constant'}": {24}}

    again = invoke(ablate_command, *args)  # everything is done: resumes without asking, no duplicates
    assert again.exit_code == 0, again.output
    assert all(len(load_rows(d)) == 2 for d in (out / "runs").iterdir())


def test_evaluate_command_on_choice_problems(tiny_lm_dir: Path, tmp_path: Path) -> None:
    spec = f"mathbench:{write_mathbench(tmp_path)}"
    out = tmp_path / "eval"
    result = invoke(evaluate_command, "--dataset", spec, "--budget-source", "fixed:12", "--model", tiny_lm_dir, *HF,
                    "--out", out)
    assert result.exit_code == 0, result.output
    assert "3 questions, fixed:12" in result.output and "within budget" in result.output
    (run,) = (out / "runs").iterdir()
    rows = load_rows(run)
    assert {r.kind for r in rows} == {"choice"} and {r.language for r in rows} == {"en", "zh"}
    assert all(r.budget == 12 and 1 <= r.output_tokens <= 4 for r in rows)
    assert (out / "table.md").exists() and (out / "accuracy_vs_tokens.png").exists()

    from tale.cli import main  # through the group: its one error path turns a user's error into one line, exit 2

    mismatch = CliRunner().invoke(main, ["evaluate", "--dataset", spec, "--budget-source", "fixed:12", "--model",
                                         str(tiny_lm_dir), *HF[:-1], "8", "--out", str(out)])
    assert mismatch.exit_code == 2 and "Error: " in mismatch.output and "holds a run with other settings" in mismatch.output
    unknown = CliRunner().invoke(evaluate_command, ["--dataset", spec, "--budget-source", "magic:3"])
    assert unknown.exit_code == 2 and "unknown budget source" in unknown.output


class Varied:
    """A budget source giving three questions budgets 10, 20 and 31."""

    name = "varied"

    def assign(self, problems):
        from tale.eval.sources import Assignment

        return [Assignment(b) for b in (10, 20, 31)[: len(problems)]]


def test_matched_is_a_constant_at_another_runs_mean_budget(tmp_path: Path) -> None:
    problems = make_problems(3)
    config = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path, method="budget", budget_source="fixed:1", max_new_tokens=64)
    evaluate(config, FakeBackend(problems, half_budget_script), Varied(), problems=problems)
    matched = build_source(f"matched:{config.run_dir}", reasoner=None, backend_for=None)
    assert isinstance(matched, FixedBudget) and matched.budget == 20  # mean 20.3, rounded
    vanilla = replace(config, method="vanilla", budget_source=None)
    evaluate(vanilla, FakeBackend(problems, half_budget_script), None, problems=problems)
    with pytest.raises(ValueError, match="no budgeted evaluation rows"):
        build_source(f"matched:{vanilla.run_dir}", reasoner=None, backend_for=None)


def test_replay_gives_each_question_its_budget_in_another_run(tmp_path: Path) -> None:
    from tale.eval.sources import ReplayedBudget

    problems = make_problems(4)
    config = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path, method="budget", budget_source="fixed:1", max_new_tokens=64)
    evaluate(config, FakeBackend(problems, half_budget_script), Varied(), problems=problems[:3])
    replay = build_source(f"replay:{config.run_dir}", reasoner=None, backend_for=None)
    assert isinstance(replay, ReplayedBudget)
    # by problem id, in any order; the fourth question was not in that run: no budget
    assigned = replay.assign([problems[3], problems[2], problems[0], problems[1]])
    assert [a.budget for a in assigned] == [None, 31, 10, 20] and assigned[0].fallback == "no-budget"
    replayed = replace(config, out=tmp_path / "again", budget_source=f"replay:{config.run_dir}")
    evaluate(replayed, FakeBackend(problems, half_budget_script), replay, problems=problems[:3])
    from tale.eval.runs import load_rows

    assert [r.budget for r in load_rows(replayed.run_dir)] == [r.budget for r in load_rows(config.run_dir)]
    vanilla = replace(config, method="vanilla", budget_source=None)
    evaluate(vanilla, FakeBackend(problems, half_budget_script), None, problems=problems)
    with pytest.raises(ValueError, match="no budgeted evaluation rows to replay"):
        build_source(f"replay:{vanilla.run_dir}", reasoner=None, backend_for=None)


def test_the_sampling_seed_is_part_of_a_sampled_runs_identity(tmp_path: Path) -> None:
    greedy = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path, max_new_tokens=64)
    assert replace(greedy, sampling_seed=5).run_dir == greedy.run_dir  # greedy: the seed changes nothing
    assert "sampling_seed" not in greedy.identity()  # so greedy runs keep the names they had
    sampled = replace(greedy, method="budget", budget_source="fixed:12", temperature=0.7)
    assert replace(sampled, sampling_seed=1).identity() != sampled.identity()
    problems = make_problems(2)
    evaluate(sampled, FakeBackend(problems, half_budget_script), build_source("fixed:12", reasoner=None, backend_for=None),
             problems=problems)
    with pytest.raises(RunMismatchError, match="sampling_seed"):  # another sample is not a resume of this one
        evaluate(replace(sampled, sampling_seed=1), FakeBackend(problems, half_budget_script),
                 build_source("fixed:12", reasoner=None, backend_for=None), problems=problems)


def test_a_shard_takes_the_slice_the_build_takes_and_names_its_run(tmp_path: Path) -> None:
    from data_builder.build import in_shard

    questions = [(f"How many pears are in crate {i}?", str(i)) for i in range(40)]
    spec = write_jsonl(tmp_path / "t.jsonl", questions)
    whole = EvalConfig(dataset=spec, out=tmp_path / "eval", method="budget", budget_source="fixed:12", max_new_tokens=64)
    halves = [replace(whole, shard=f"{i}/2") for i in range(2)]
    every = whole.problems()
    for i, half in enumerate(halves):  # the id-hash slice of tale build --shard I/2, in file order
        assert [p.id for p in half.problems()] == [p.id for p in every if in_shard(p.id, Shard(i, 2))]
    assert 0 < len(halves[0].problems()) < 40
    assert sorted(p.id for h in halves for p in h.problems()) == sorted(p.id for p in every)
    assert "shard" not in whole.identity() and replace(whole, shard="0/1").run_dir == whole.run_dir  # old names kept
    assert halves[1].identity()["shard"] == "1/2" and len({whole.run_dir, *(h.run_dir for h in halves)}) == 3
    assert "-1-2__" in halves[1].run_dir.name and halves[1].data == f"{spec}#1/2"
    assert dataset_label(halves[1].data) == "jsonl:t#1/2"
    with pytest.raises(ValueError, match="shard must be I/N"):
        replace(whole, shard="2/2")

    fixed = build_source("fixed:12", reasoner=None, backend_for=None)
    for half in halves:
        evaluate(half, FakeBackend(every, half_budget_script), fixed)
    assert {r.id for r in load_rows(halves[1].run_dir)} == {p.id for p in halves[1].problems()}
    assert collect(halves[1].run_dir).config.shard == "1/2"  # rebuilt from the run's meta
    vanilla = replace(halves[1], method="vanilla", budget_source=None)
    evaluate(vanilla, FakeBackend(every, half_budget_script), None)
    assert collect(halves[1].run_dir).summary.token_reduction is not None  # its baseline: the same shard's vanilla run
    assert collect(halves[0].run_dir).summary.token_reduction is None  # not the other shard's
    header = next(line for line in markdown_report([collect(d) for d in run_dirs(whole.out)], None).splitlines()
                  if line.startswith("| method |"))
    assert "| jsonl:t#0/2 | jsonl:t#1/2 | average |" in header


def test_evaluate_command_takes_a_shard_and_refuses_a_bad_one(tiny_lm_dir: Path, tmp_path: Path) -> None:
    spec = write_jsonl(tmp_path / "t.jsonl", [(f"What is {i} + 1?", str(i + 1)) for i in range(6)])
    out = tmp_path / "eval"
    result = invoke(evaluate_command, "--dataset", spec, "--shard", "1/2", "--model", tiny_lm_dir, *HF, "--out", out)
    assert result.exit_code == 0, result.output
    (run,) = (out / "runs").iterdir()
    wanted = [p.id for p in load_problems(spec) if Shard(1, 2).holds(p.id)]
    assert [r.id for r in load_rows(run)] == wanted and f"{len(wanted)} questions, vanilla" in result.output
    bad = CliRunner().invoke(evaluate_command, ["--dataset", spec, "--shard", "2/2", "--out", str(out)])
    assert bad.exit_code == 2 and "--shard" in bad.output and "Traceback" not in bad.output


def test_legend_labels_are_cut_in_the_middle_and_keep_the_run_hash() -> None:
    assert legend_label("TALE-EP (tfidf:tfidf%0.1)") == "TALE-EP (tfidf:tfidf%0.1)"
    long = "TALE-EP (matched:gsm8k_zero-test__reasoner-sft-lengths__llm-default__9bcda38a)"
    other = long.replace("9bcda38a", "0f00d1e5")
    short = legend_label(long)
    assert len(short) == 48 and short.startswith("TALE-EP (matched:") and short.endswith("9bcda38a)") and "…" in short
    assert legend_label(other) != short


def test_a_curve_policy_sends_each_question_to_direct_a_budget_or_vanilla(tmp_path: Path) -> None:
    import numpy as np

    from data_builder.ladder import LadderRecord, LadderRung, Sample
    from predictor.curves import CurveData, TfidfCurves

    problems = make_problems(3)
    texts = ["what is 42 plus 42", "what is 7 plus 7", "a long train journey with 99 stops and fares"]
    problems = [replace(p, question=q, id=problem_id("t", q)) for p, q in zip(problems, texts)]
    # Training curves: sums are right directly; journeys only with vanilla CoT.
    outcomes = {"sum": [True, True, True], "journey": [False, False, True]}

    def ladder(i, question, kind):
        rungs = tuple(LadderRung(b, (Sample(0, c, t, 10, None, "stop", ""),) * 2)
                      for b, c, t in zip((0, 64, None), outcomes[kind], (5, 40, 200)))
        return LadderRecord(f"l{i}", "t", question, "1", "cloze", (), "en", rungs, "m", "b", "v", 0.7, 384)

    train = [ladder(i, f"what is {i} plus {i}", "sum") for i in range(10)]
    train += [ladder(10 + i, f"a long train journey with {i} stops and fares", "journey") for i in range(10)]
    TfidfCurves.fit(CurveData.of(train)).save(tmp_path / "curves")
    config = EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path / "eval", method="budget", model="fake",
                        budget_source=f"price=0.001:{tmp_path / 'curves'}")
    backend = FakeBackend(problems, half_budget_script)
    rows = evaluate(config, backend, problems=problems).rows
    assert [(r.method, r.budget) for r in rows] == [("direct", None), ("direct", None), ("vanilla", None)]
    assert sum("directly" in p for p in backend.prompts) == 2 and all(r.fallback is None for r in rows)
    assert np.isclose(rows[0].output_tokens, 5)
    with pytest.raises(ValueError, match="a number after '='"):
        EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path, method="budget", budget_source="price=cheap:x")
    with pytest.raises(ValueError, match="needs a curve estimator directory"):
        EvalConfig(dataset="jsonl:t.jsonl", out=tmp_path, method="budget", budget_source="target=0.9")
