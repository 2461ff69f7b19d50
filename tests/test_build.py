"""The record-building job: records on disk, resume after SIGKILL, refusal to mix runs, shards."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import pytest
from conftest import budget_record
from scripted import ScriptedBackend, problems_and_scripts

from data_builder.build import BuildConfig, build_records, merge_shards, summarize
from data_builder.record import RECORD_FORMAT, BudgetRecord, SearchRound
from data_builder.records import RecordWriter, Shard, load_records, read_records
from data_builder.reference import NoSolutionError, reference_answer
from data_builder.run_dir import RunMismatchError
from data_builder.search import SearchConfig
from data_builder.sources import Problem, problem_id
from reasoner.grading import grade

REPO = Path(__file__).resolve().parents[1]


def build(out: Path, n: int = 12, **overrides) -> list[BudgetRecord]:
    problems, scripts = problems_and_scripts(n)
    config = BuildConfig(**{"dataset": "scripted", "out": out, "model": "scripted", "backend": "scripted", "pool": 4, **overrides})
    build_records(config, ScriptedBackend(problems, scripts), problems)
    return load_records(out)


def by_id(records: list[BudgetRecord]) -> list[BudgetRecord]:
    return sorted(records, key=lambda r: r.id)


def test_records_hold_the_quadruple_trace_and_run_identity(tmp_path: Path) -> None:
    records = build(tmp_path / "out", n=5)
    assert len(records) == 5
    feasible = next(r for r in records if r.feasible)
    assert feasible.budget >= 1 and feasible.reasoning and feasible.predicted == feasible.gold == "42"
    assert feasible.trace[0].budget is None and feasible.trace[0].output_tokens == feasible.vanilla_tokens
    assert (feasible.model, feasible.backend, feasible.search, feasible.prompt_version) == (
        "scripted", "scripted", "halving", "tale-prompts-v1")
    infeasible = [r for r in records if not r.feasible]
    assert infeasible and all(r.budget is None and r.reasoning is None for r in infeasible)
    meta = json.loads((tmp_path / "out" / "meta-00000-of-00001.json").read_text())
    assert meta["identity"]["search"]["mode"] == "halving" and meta["problems"] == 5
    assert meta["record_format"] == RECORD_FORMAT


def test_datasets_reads_the_records(tmp_path: Path) -> None:
    import datasets

    build(tmp_path / "out", n=6)
    data = datasets.load_dataset("json", data_files=str(tmp_path / "out" / "records-*.jsonl"), split="train")
    assert data.num_rows == 6
    assert {"question", "budget", "reasoning", "gold", "predicted", "trace"} <= set(data.column_names)


def test_resume_after_sigkill_equals_an_uninterrupted_run(tmp_path: Path) -> None:
    expected = by_id(build(tmp_path / "whole", n=12))
    out = tmp_path / "killed"
    records = Shard().records_path(out)
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}"}
    script = [sys.executable, str(REPO / "tests" / "scripted.py"), str(out), "12", "0.25"]
    process = subprocess.Popen(script, env=env)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if records.exists() and records.read_text().count("\n") >= 3:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=30)
    assert process.returncode == -signal.SIGKILL
    partial = list(read_records(records))
    assert 3 <= len(partial) < 12
    with open(records, "a") as f:  # as if the kill had landed in the middle of a write
        f.write('{"id": "half-writ')
    subprocess.run([*script[:-1], "0"], env=env, check=True, timeout=60)
    resumed = by_id(load_records(out))
    assert resumed == expected
    assert records.read_text().count("\n") == 12 and records.read_text().endswith("\n")


def test_resuming_with_other_settings_is_refused(tmp_path: Path) -> None:
    build(tmp_path / "out", n=3)
    with pytest.raises(RunMismatchError, match="search"):
        build(tmp_path / "out", n=3, search=SearchConfig(mode="bisect"))
    assert len(load_records(tmp_path / "out")) == 3  # nothing written is lost
    # a sampled run does not silently resume a greedy one, nor another engine's
    with pytest.raises(RunMismatchError, match=r"temperature: recorded 0\.0, now 0\.7"):
        build(tmp_path / "out", n=3, temperature=0.7)
    with pytest.raises(RunMismatchError, match="backend: recorded 'scripted', now 'ort:int8'"):
        build(tmp_path / "out", n=3, backend="ort:int8")


def test_shards_partition_the_problems_and_merge_back(tmp_path: Path) -> None:
    whole = by_id(build(tmp_path / "whole", n=20))
    parts = [build(tmp_path / f"s{i}", n=20, shard=Shard(i, 3)) for i in range(3)]
    assert sum(len(p) for p in parts) == 20 and all(parts)
    merged = merge_shards([tmp_path / f"s{i}" for i in range(3)], tmp_path / "merged")
    assert list(read_records(merged)) == whole
    assert json.loads((tmp_path / "merged" / "meta-00000-of-00001.json").read_text())["record_format"] == RECORD_FORMAT
    with pytest.raises(ValueError, match="duplicate"):
        merge_shards([tmp_path / "s0", tmp_path / "s0"], tmp_path / "twice")
    build(tmp_path / "other", n=20, shard=Shard(1, 3), search=SearchConfig(mode="elastic"))
    with pytest.raises(RunMismatchError, match="search"):
        merge_shards([tmp_path / "s0", tmp_path / "other"], tmp_path / "mixed")


def test_writer_refuses_duplicates_and_names_bad_lines(tmp_path: Path) -> None:
    path = tmp_path / "records-00000-of-00001.jsonl"
    with RecordWriter(path) as writer:
        writer.write(budget_record("a"))
        with pytest.raises(ValueError, match="already"):
            writer.write(budget_record("a"))
    with open(path, "a") as f:
        f.write("not json\n")
    with pytest.raises(ValueError, match=r"records-00000-of-00001.jsonl:2"):
        list(read_records(path))


def test_summary_numbers() -> None:
    records = [
        budget_record("a", feasible=True, budget=20, vanilla_tokens=100, calls=4, tokens_spent=200),
        budget_record("b", feasible=False, budget=None, vanilla_tokens=80, calls=1, tokens_spent=90),
    ]
    assert summarize(records) == {
        "questions": 2, "feasible_share": 0.5, "calls_per_question": 2.5, "tokens_per_question": 145.0,
        "mean_budget": 20.0, "mean_vanilla_tokens_feasible": 100.0}


def test_real_search_on_a_tiny_model(tiny_lm_dir: Path, tmp_path: Path) -> None:
    """The search on a real (tiny, random) model, with gold answers set to what its vanilla answers say,
    so every vanilla answer is right and budget rounds run on the model too."""
    from data_builder.sources import Problem, problem_id
    from reasoner.backends.hf import HFBackend, HFConfig
    from reasoner.grading import extract_answer
    from reasoner.prompts import reasoning_prompt

    backend = HFBackend(HFConfig(model=str(tiny_lm_dir), device="cpu"))
    questions = [f"What is {i} + {i + 1}?" for i in range(4)]
    said = [extract_answer(g.text, "cloze") for g in backend.generate([reasoning_prompt(q) for q in questions], 16)]
    problems = [Problem(problem_id("t", q), q, gold, source="t") for q, gold in zip(questions, said) if gold is not None]
    assert problems, said  # the tiny model writes numbers: some vanilla answers have one
    config = BuildConfig(dataset="t", out=tmp_path, model=str(tiny_lm_dir), search=SearchConfig(max_new_tokens=16))
    build_records(config, backend, problems)
    records = load_records(tmp_path)
    assert sorted(r.id for r in records) == sorted(p.id for p in problems)
    for r in records:
        assert r.vanilla_correct and r.feasible and r.trace[0].prompt_tokens > 20
        assert r.calls >= 2, r.trace  # a budget round ran on the model
        assert r.trace[0].budget is None and r.trace[1].budget == r.vanilla_tokens // 2 and r.budget <= r.vanilla_tokens


# --- reference records (the data set's worked solutions) ------------------------------------------


def worked(i: int) -> Problem:
    question = f"What is {i} + {i}?"
    return Problem(problem_id("gsm8k", question), question, str(2 * i), source="gsm8k", solution=f"{i} + {i} = {2 * i}.")


def words(text: str) -> int:
    return len(text.split())


def test_reference_records_take_the_solution_and_its_length_as_the_budget(tmp_path: Path) -> None:
    config = BuildConfig(dataset="gsm8k:x", out=tmp_path / "ref", model="m", backend="hf", reference="worked")
    build_records(config, None, [worked(1), worked(2)], count_tokens=words)
    records = by_id(load_records(tmp_path / "ref"))
    first = next(r for r in records if r.gold == "2")
    assert first.reasoning == "1 + 1 = 2.\nAnswer: [[2]]"
    assert first.budget == words(first.reasoning) == 7
    assert first.feasible and first.predicted == "2" and first.search == "reference"
    assert first.trace == (SearchRound(budget=7, output_tokens=7, correct=True, predicted="2", prompt_tokens=0),)
    assert first.vanilla_text is None and first.calls == 0
    assert grade(first.reasoning, "2", "cloze").correct
    assert summarize(records) == {"questions": 2, "feasible_share": 1.0, "calls_per_question": 0.0,
                                  "tokens_per_question": 0.0, "mean_budget": 7.0}
    # the same run resumes; a search over the same directory is refused
    build_records(config, None, [worked(1), worked(2), worked(3)], count_tokens=words)
    assert len(load_records(tmp_path / "ref")) == 3
    with pytest.raises(RunMismatchError, match="search"):
        build(tmp_path / "ref", n=2)


def test_equations_records_keep_the_calculator_equations_and_their_own_budget(tmp_path: Path) -> None:
    config = BuildConfig(dataset="gsm8k:x", out=tmp_path / "eq", model="m", backend="hf", reference="equations")
    prose = Problem(problem_id("gsm8k", "Prose only?"), "Prose only?", "9", source="gsm8k", solution="Let x be 9 . So x = 9 .")
    two_steps = replace(worked(3), solution="She has 3 + 3 = 6 .\nThen 6 * 2 = 12 .", gold="12", equations=("3+3=6", "6*2=12"))
    build_records(config, None, [two_steps, prose], count_tokens=words)
    records = {r.id: r for r in load_records(tmp_path / "eq")}
    steps, kept_whole = records[two_steps.id], records[prose.id]
    assert steps.reasoning == "3+3=6\n6*2=12\nAnswer: [[12]]" and steps.budget == 4
    assert steps.search == "equations" and steps.feasible and grade(steps.reasoning, "12", "cloze").correct
    # a solution without calculator annotations is kept whole rather than dropped
    assert kept_whole.reasoning == "Let x be 9 . So x = 9 .\nAnswer: [[9]]"
    # the worked style over the same directory is another run
    with pytest.raises(RunMismatchError, match="search: recorded 'equations', now 'reference'"):
        build_records(replace(config, reference="worked"), None, [two_steps], count_tokens=words)
    with pytest.raises(ValueError, match="reference style must be one of"):
        reference_answer(two_steps, "terse")


def test_reference_records_refuse_problems_without_a_solution_before_writing(tmp_path: Path) -> None:
    config = BuildConfig(dataset="gsm8k_zero:z.jsonl", out=tmp_path / "ref", model="m", backend="hf", reference="worked")
    bare = Problem(problem_id("gsm8k_zero", "How many?"), "How many?", "3", source="gsm8k_zero")
    with pytest.raises(NoSolutionError, match=r"gsm8k_zero:z.jsonl: 1 of 2 problems have no worked solution \(first: gsm8k_zero-"):
        build_records(config, None, [worked(1), bare], count_tokens=words)
    assert not (tmp_path / "ref").exists()
