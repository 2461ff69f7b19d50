"""Problem loaders on small files written into tmp_path, and on the shared real data if present."""

from __future__ import annotations

import json
import logging
import pickle
import sys
import types
from pathlib import Path

import pytest

from data_builder.sources import (
    BadRowError,
    Problem,
    Problems,
    load_generated,
    load_gsm8k,
    load_gsm8k_zero,
    load_jsonl,
    load_mathbench,
    load_problems,
    problem_id,
)

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


def write_jsonl(path: Path, rows: list[object]) -> Path:
    """Dict rows are written as JSON, string rows as they are (blank and broken lines)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [row if isinstance(row, str) else json.dumps(row, ensure_ascii=False) for row in rows]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def gsm8k_row(question: str, final: str) -> dict[str, str]:
    return {"question": question, "answer": f"Some steps <<1+1=2>>.\n#### {final}"}


def zero_row(question: str, answer: object) -> dict[str, object]:
    return {"question": question, "answer": answer}


def cloze(question: str, answer: str) -> dict[str, str]:
    return {"question": question, "answer": answer, "topic": "Primary--Numbers"}


def choice(question: str, options: list[str], answer: str) -> dict[str, object]:
    return {"question": question, "options": options, "answer": answer, "topic": "Middle--Algebra"}


@pytest.fixture
def gsm8k_file(tmp_path: Path) -> Path:
    rows = [gsm8k_row(f"Question number {i}?", str(i * 10)) for i in range(20)]
    rows[3] = gsm8k_row("How many in all?", "1,000")
    rows[4] = gsm8k_row("How many dollars?", "109,200,000")
    return write_jsonl(tmp_path / "gsm8k" / "test.jsonl", rows)


@pytest.fixture
def mathbench_root(tmp_path: Path) -> Path:
    root = tmp_path / "mathbench"
    write_jsonl(root / "arithmetic" / "cloze_en.jsonl", [cloze("1+1=", "2"), cloze("2*3=", "6")])
    middle = root / "middle"
    write_jsonl(middle / "single_choice_en.jsonl", [choice("Pick 6.", ["5", "6", "7", "8"], "B")])
    write_jsonl(middle / "single_choice_cn.jsonl", [choice("哪个最大？", ["1", "2", "3", "4"], "d")])
    write_jsonl(middle / "cloze_cn.jsonl", [cloze("计算 3+4 的值。", "7")])
    (middle / "notes.jsonl").write_text("not MathBench\n", encoding="utf-8")
    return root


# --- GSM8K ---------------------------------------------------------------------------------------


def test_gsm8k_gold_after_hashes_without_thousands_separators(gsm8k_file: Path) -> None:
    problems = load_gsm8k(gsm8k_file)
    assert len(problems) == 20
    question = "Question number 0?"
    assert problems[0] == Problem(problem_id("gsm8k", question), question, "0", source="gsm8k", solution="Some steps .",
                                 equations=("1+1=2",))
    assert [p.gold for p in problems[3:5]] == ["1000", "109200000"]
    assert all(p.kind == "cloze" and p.language == "en" and p.options == () for p in problems)


def test_gsm8k_solution_is_the_worked_answer_without_calculator_annotations(tmp_path: Path) -> None:
    row = {"question": "How many clips?", "answer": "She sold 48/2 = <<48/2=24>>24 in May.\n48+24 = <<48+24=72>>72 in all.\n#### 72"}
    [problem] = load_gsm8k(write_jsonl(tmp_path / "g.jsonl", [row]))
    assert problem.solution == "She sold 48/2 = 24 in May.\n48+24 = 72 in all."
    assert problem.equations == ("48/2=24", "48+24=72")
    assert problem.gold == "72"
    assert load_gsm8k_zero(write_jsonl(tmp_path / "z.jsonl", [zero_row("How many?", 3)]))[0].solution == ""


def test_gsm8k_directory_takes_the_split(gsm8k_file: Path) -> None:
    write_jsonl(gsm8k_file.parent / "train.jsonl", [gsm8k_row("Train question?", "7")])
    assert len(load_problems(f"gsm8k:{gsm8k_file.parent}")) == 20
    assert [p.gold for p in load_problems(f"gsm8k:{gsm8k_file.parent}", split="train")] == ["7"]


def test_gsm8k_hub_id_goes_to_datasets(monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def load_dataset(name: str, config: str, split: str) -> list[dict[str, str]]:
        calls.append((name, config, split))
        return [gsm8k_row("Hub question?", "2,500")]

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    assert [p.gold for p in load_problems("gsm8k")] == ["2500"]
    assert [p.gold for p in load_problems("gsm8k:someone/gsm8k-copy", split="train")] == ["2500"]
    assert calls == [("openai/gsm8k", "main", "test"), ("someone/gsm8k-copy", "main", "train")]


def test_gsm8k_hub_offline_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    def load_dataset(*args: object, **kwargs: object) -> None:
        raise ConnectionError("Couldn't reach 'openai/gsm8k' on the Hub")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=load_dataset))
    with pytest.raises(RuntimeError, match=r"'openai/gsm8k'.*gsm8k:path/to/test\.jsonl") as info:
        load_problems("gsm8k:openai/gsm8k")
    assert isinstance(info.value.__cause__, ConnectionError)


def test_gsm8k_local_paths_are_never_taken_for_hub_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "datasets", None)  # any hub access would fail to import
    monkeypatch.chdir(tmp_path)
    with pytest.raises(FileNotFoundError, match="gsm8k file not found: data/test.jsonl"):
        load_problems("gsm8k:data/test.jsonl")
    (tmp_path / "local" / "gsm8k").mkdir(parents=True)  # an existing directory without test.jsonl
    with pytest.raises(FileNotFoundError, match="local/gsm8k/test.jsonl"):
        load_problems("gsm8k:local/gsm8k")


# --- GSM8K-Zero ----------------------------------------------------------------------------------


def test_gsm8k_zero_gold_is_the_exact_number(tmp_path: Path) -> None:
    answers = [48.0, 1.5, 0.85, -1.0, 400000.0, 7.22, 12, 1e16, 0.0, "2.50"]
    rows: list[object] = [zero_row(f"Q{i}?", a) for i, a in enumerate(answers)]
    problems = load_problems(f"gsm8k_zero:{write_jsonl(tmp_path / 'zero.jsonl', rows)}")
    golds = ["48", "1.5", "0.85", "-1", "400000", "7.22", "12", "10000000000000000", "0", "2.5"]
    assert [p.gold for p in problems] == golds
    assert {p.source for p in problems} == {"gsm8k_zero"}


@pytest.mark.parametrize("answer", ["abc", True, [1], float("nan"), "inf"])
def test_gsm8k_zero_non_numeric_answer_names_file_line_and_field(
    tmp_path: Path, answer: object
) -> None:
    rows: list[object] = [zero_row("Fine?", 1.0), "", zero_row("Bad?", answer)]
    path = write_jsonl(tmp_path / "gsm8k_zero.jsonl", rows)
    with pytest.raises(BadRowError) as info:
        load_gsm8k_zero(path)
    assert str(info.value) == f"{path}:3: field 'answer': expected a number, got {answer!r}"
    assert (info.value.path, info.value.line, info.value.field) == (str(path), 3, "answer")
    assert isinstance(info.value, ValueError)
    assert str(pickle.loads(pickle.dumps(info.value))) == str(info.value)


# --- MathBench -----------------------------------------------------------------------------------


def test_mathbench_level_directory_loads_every_file_sorted(mathbench_root: Path) -> None:
    problems = load_problems(f"mathbench:{mathbench_root / 'middle'}")
    # cloze_cn, single_choice_cn, single_choice_en: sorted file names; notes.jsonl is not MathBench
    assert [(p.kind, p.language, p.gold) for p in problems] == [
        ("cloze", "zh", "7"),
        ("choice", "zh", "D"),
        ("choice", "en", "B"),
    ]
    assert problems[1].question == "哪个最大？"
    assert problems[1].options == ("1", "2", "3", "4")
    assert {p.source for p in problems} == {"mathbench"}


def test_mathbench_root_loads_all_levels(mathbench_root: Path) -> None:
    problems = load_mathbench(mathbench_root)
    assert [p.question for p in problems[:2]] == ["1+1=", "2*3="]
    assert len(problems) == 5
    assert problems == load_mathbench(mathbench_root)


def test_mathbench_single_chinese_file(mathbench_root: Path) -> None:
    [problem] = load_problems(f"mathbench:{mathbench_root / 'middle' / 'cloze_cn.jsonl'}")
    assert (problem.question, problem.gold) == ("计算 3+4 的值。", "7")
    assert (problem.kind, problem.language) == ("cloze", "zh")


@pytest.mark.parametrize(
    ("row", "field", "reason"),
    [
        (choice("Q?", ["1", "2", "3", "4"], "E"), "answer", "expected a letter in A..D, got 'E'"),
        (choice("Q?", ["1", "2", "3", "4"], "AB"), "answer", "expected a letter in A..D"),
        (choice("Q?", ["1", "2"], "c"), "answer", "expected a letter in A..B"),
        ({"question": "Q?", "answer": "A"}, "options", "missing"),
        (choice("Q?", [], "A"), "options", "non-empty list"),
        (choice("Q?", ["1", ""], "A"), "options", "non-empty strings"),
        ({"options": ["1", "2"], "answer": "A"}, "question", "missing"),
        (choice("   ", ["1", "2"], "A"), "question", "non-empty string"),
        (choice("Q?", ["1", "2"], ""), "answer", "non-empty"),
    ],
)
def test_mathbench_bad_choice_rows(
    tmp_path: Path, row: dict[str, object], field: str, reason: str
) -> None:
    path = write_jsonl(tmp_path / "single_choice_en.jsonl", [choice("Fine?", ["1", "2"], "a"), row])
    with pytest.raises(BadRowError, match=reason) as info:
        load_mathbench(path)
    assert str(info.value).startswith(f"{path}:2: field '{field}': ")
    assert (info.value.line, info.value.field) == (2, field)


def test_mathbench_unknown_file_name_and_empty_directory(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="not a MathBench file name"):
        load_mathbench(write_jsonl(tmp_path / "questions.jsonl", [cloze("1+1=", "2")]))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no MathBench files"):
        load_problems(f"mathbench:{tmp_path / 'empty'}")


# --- any JSONL -----------------------------------------------------------------------------------


def test_jsonl_with_custom_fields(tmp_path: Path) -> None:
    rows: list[object] = [
        {"q": "Which?", "choices": ["x", "y"], "label": "b"},
        {"q": "Other?", "choices": ["x", "y", 3], "label": "C"},
    ]
    path = write_jsonl(tmp_path / "mine.jsonl", rows)
    problems = load_jsonl(
        path, question_field="q", answer_field="label", options_field="choices", source="mine"
    )
    assert [(p.kind, p.options, p.gold, p.source) for p in problems] == [
        ("choice", ("x", "y"), "B", "mine"),
        ("choice", ("x", "y", "3"), "C", "mine"),
    ]
    assert problems[0].id == problem_id("mine", "Which?")
    write_jsonl(path, [{"q": "No options?", "label": "A"}])
    with pytest.raises(BadRowError, match=r"mine\.jsonl:1: field 'choices': missing"):
        load_jsonl(path, question_field="q", answer_field="label", options_field="choices")


def test_jsonl_spec_is_cloze_with_text_or_number_answers(tmp_path: Path) -> None:
    rows: list[object] = [zero_row("A?", "3/4"), zero_row("B?", 2.0)]
    problems = load_problems(f"jsonl:{write_jsonl(tmp_path / 'plain.jsonl', rows)}")
    assert [(p.gold, p.kind, p.source) for p in problems] == [
        ("3/4", "cloze", "jsonl"),
        ("2", "cloze", "jsonl"),
    ]


# --- bad rows and skip_bad -----------------------------------------------------------------------


BAD_GSM8K_ROWS: list[object] = [
    gsm8k_row("Good one?", "1"),
    "{not json",
    {"answer": "#### 2"},
    "",
    {"question": "No answer?"},
    {"question": "No hashes?", "answer": "just 3"},
    "[1, 2]",
    gsm8k_row("Good two?", "4"),
]


@pytest.mark.parametrize(
    ("line", "field", "reason"),
    [
        (2, None, "invalid JSON"),
        (3, "question", "missing"),
        (5, "answer", "missing"),
        (6, "answer", "'#### <number>'"),
        (7, None, "expected a JSON object"),
    ],
)
def test_each_bad_row_is_named(tmp_path: Path, line: int, field: str | None, reason: str) -> None:
    good = [gsm8k_row(f"Good {i}?", "1") for i in range(line - 1)]
    path = write_jsonl(tmp_path / "bad.jsonl", [*good, BAD_GSM8K_ROWS[line - 1]])
    with pytest.raises(BadRowError, match=reason) as info:
        load_gsm8k(path)
    assert (info.value.line, info.value.field) == (line, field)
    assert str(info.value).startswith(f"{path}:{line}: ")


def test_skip_bad_counts_and_logs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = write_jsonl(tmp_path / "bad.jsonl", BAD_GSM8K_ROWS)
    with pytest.raises(BadRowError, match=r"bad\.jsonl:2: invalid JSON"):
        load_problems(f"gsm8k:{path}")
    with caplog.at_level(logging.WARNING):
        problems = load_problems(f"gsm8k:{path}", skip_bad=True)
    assert [p.gold for p in problems] == ["1", "4"]
    assert [(e.line, e.field) for e in problems.skipped] == [
        (2, None),
        (3, "question"),
        (5, "answer"),
        (6, "answer"),
        (7, None),
    ]
    messages = [r.getMessage() for r in caplog.records]
    assert sum(m.startswith(f"skipping bad row: {path}:") for m in messages) == 5
    assert messages[-1] == f"{path}: skipped 5 bad row(s)"


def test_skip_bad_count_survives_limit_and_directories(mathbench_root: Path) -> None:
    with (mathbench_root / "middle" / "single_choice_en.jsonl").open("a", encoding="utf-8") as f:
        f.write(json.dumps(choice("Bad?", ["1", "2"], "C")) + "\n")
    problems = load_problems(f"mathbench:{mathbench_root}", skip_bad=True, limit=2, seed=1)
    assert isinstance(problems, Problems) and isinstance(problems, list)
    assert len(problems) == 2
    assert [(Path(e.path).name, e.line, e.field) for e in problems.skipped] == [
        ("single_choice_en.jsonl", 2, "answer")
    ]
    assert load_mathbench(mathbench_root / "arithmetic").skipped == ()


# --- ids, limit and shuffling --------------------------------------------------------------------


def test_repeated_questions_are_kept_with_distinct_ids(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    rows: list[object] = [zero_row("Same?", 1.0), zero_row("Other?", 2.0), zero_row(" Same?", 1.0)]
    path = write_jsonl(tmp_path / "zero.jsonl", [*rows, rows[0]])
    with caplog.at_level(logging.WARNING):
        problems = load_gsm8k_zero(path)
    same, other = problem_id("gsm8k_zero", "Same?"), problem_id("gsm8k_zero", "Other?")
    assert [p.id for p in problems] == [same, other, f"{same}-2", f"{same}-3"]
    assert "2 repeated question(s)" in caplog.text
    # ids are given in file order, before shuffling, so a subset keeps them
    assert {p.id for p in load_problems(f"gsm8k_zero:{path}", seed=5)} == {p.id for p in problems}


def test_limit_keeps_file_order_without_seed(gsm8k_file: Path) -> None:
    assert load_problems(f"gsm8k:{gsm8k_file}", limit=5) == load_gsm8k(gsm8k_file)[:5]


def test_seeded_limit_is_a_deterministic_random_subset(gsm8k_file: Path) -> None:
    spec = f"gsm8k:{gsm8k_file}"
    everything = load_problems(spec)
    first = load_problems(spec, limit=5, seed=7)
    assert first == load_problems(spec, limit=5, seed=7)
    assert len(first) == 5 and set(first) <= set(everything)
    assert first != everything[:5]
    assert load_problems(spec, limit=5, seed=8) != first
    # a larger limit with the same seed extends the same order
    assert load_problems(spec, limit=10, seed=7)[:5] == first
    assert sorted(load_problems(spec, seed=7), key=everything.index) == everything


def test_spec_errors(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="unknown problem source 'gsm9k'"):
        load_problems("gsm9k:x.jsonl")
    with pytest.raises(ValueError, match="gsm8k_zero needs a path"):
        load_problems("gsm8k_zero")
    with pytest.raises(FileNotFoundError, match="missing.jsonl"):
        load_problems(f"gsm8k_zero:{tmp_path / 'missing.jsonl'}")
    with pytest.raises(FileNotFoundError, match="mathbench path not found"):
        load_problems(f"mathbench:{tmp_path / 'nothing'}")
    with pytest.raises(ValueError, match="limit must be a positive integer"):
        load_problems("generated", limit=0)


# --- generated problems --------------------------------------------------------------------------


def test_generated_problems_are_seeded() -> None:
    first = load_problems("generated", limit=8, seed=3)
    assert len(first) == 8 and len({p.id for p in first}) == 8
    assert first == load_problems("gsm_symbolic", limit=8, seed=3)
    assert load_problems("generated", limit=8, seed=4) != first
    assert all(p.source == "gsm_symbolic" and p.kind == "cloze" for p in first)
    assert all(p.gold.lstrip("-").isdigit() for p in first)
    assert not any(p.question.endswith("Do not include units.") for p in first)


def test_generated_default_size_and_seed() -> None:
    problems = load_problems("generated")
    assert len(problems) == 100
    assert problems == load_generated(100, seed=0)


# --- the real data, when the shared directory is present ----------------------------------------


@pytest.fixture
def shared_data() -> Path:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"real data not found at {SHARED_DATA} (the shared data beside the repository)")
    return SHARED_DATA


def test_real_gsm8k(shared_data: Path) -> None:
    test = load_problems(f"gsm8k:{shared_data / 'gsm8k' / 'test.jsonl'}")
    assert len(test) == 1319 and test[0].gold == "18"
    assert all(p.gold and "," not in p.gold for p in test)
    assert len(load_problems(f"gsm8k:{shared_data / 'gsm8k'}", split="train")) == 7473


def test_real_gsm8k_zero(shared_data: Path) -> None:
    problems = load_problems(f"gsm8k_zero:{shared_data / 'gsm8k_zero' / 'test.jsonl'}")
    assert len(problems) == 2978 and len({p.id for p in problems}) == 2978
    assert problems[0].gold == "48"
    assert "1.5" in {p.gold for p in problems}
    assert not any(p.gold.endswith(".0") for p in problems)


def test_real_mathbench(shared_data: Path) -> None:
    middle = load_problems(f"mathbench:{shared_data / 'mathbench' / 'middle'}")
    assert len(middle) == 150
    assert all(p.kind == "choice" and len(p.options) == 4 and p.gold in "ABCD" for p in middle)
    arithmetic = shared_data / "mathbench" / "arithmetic" / "cloze_en.jsonl"
    problems = load_problems(f"mathbench:{arithmetic}")
    assert len(problems) == 300 and {p.kind for p in problems} == {"cloze"}


def test_arithmetic_problems_alternate_generators_are_seeded_and_far_seeds_are_disjoint() -> None:
    from data_builder.sources import load_problems
    from tale.pipeline import EVAL_SEED_OFFSET, PipelineConfig

    first = load_problems("arithmetic", limit=6, seed=0)
    assert [p.id for p in first] == [p.id for p in load_problems("arithmetic", limit=6, seed=0)]
    assert [p.source for p in first] == ["basic_arithmetic", "chain_sum"] * 3
    assert all(p.gold.lstrip("-").isdigit() for p in first)
    evaluation = load_problems("arithmetic", limit=32, seed=EVAL_SEED_OFFSET)
    training = load_problems("arithmetic", limit=32, seed=0)
    assert not {p.id for p in training} & {p.id for p in evaluation}
    assert PipelineConfig().eval_spec == ("arithmetic", EVAL_SEED_OFFSET)
