"""The multi-sample label: the median of k searches, on hand-made records and through ``tale build --samples``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import budget_record

from data_builder.labels import median_label, median_records
from data_builder.records import RecordWriter, Shard, load_records
from tale.cli import main


def infeasible(id: str, **fields):
    return budget_record(id, feasible=False, budget=None, reasoning=None, predicted=None, vanilla_correct=False, **fields)


def test_the_label_is_the_low_median_search_and_keeps_its_quadruple() -> None:
    searches = [budget_record("q", budget=b, reasoning=f"answer under {b}") for b in (80, 20, 40, 160)]
    chosen = median_label(searches)
    assert chosen.budget == 40 and chosen.reasoning == "answer under 40"  # low median of 20, 40, 80, 160
    assert median_label(searches[:3]).budget == 40  # odd k: the median itself


def test_a_question_feasible_in_half_the_searches_or_fewer_is_infeasible() -> None:
    half = [budget_record("q", budget=30), infeasible("q", vanilla_tokens=7), budget_record("q", budget=50), infeasible("q")]
    label = median_label(half)
    assert not label.feasible and label.vanilla_tokens == 7  # the first infeasible search's record
    majority = [budget_record("q", budget=30), infeasible("q"), budget_record("q", budget=50)]
    assert median_label(majority).budget == 30  # low median of the 2 feasible searches
    with pytest.raises(ValueError, match="one question's records"):
        median_label([budget_record("a"), budget_record("b")])


def write(directory: Path, records) -> Path:
    with RecordWriter(Shard().records_path(directory)) as writer:
        for r in records:
            writer.write(r)
    return directory


def test_median_records_joins_directories_skipping_questions_not_every_search_reached(tmp_path: Path) -> None:
    a = write(tmp_path / "a", [budget_record("q1", budget=10), budget_record("q2", budget=100), budget_record("q3", budget=5)])
    b = write(tmp_path / "b", [budget_record("q2", budget=50), budget_record("q1", budget=30)])
    c = write(tmp_path / "c", [budget_record("q1", budget=20), budget_record("q2", budget=70), infeasible("q3")])
    out = tmp_path / "median"
    path, behind = median_records([a, b, c], out)
    assert behind == 1  # q3 is not in b yet
    assert [(r.id, r.budget) for r in load_records(out)] == [("q1", 20), ("q2", 70)]
    meta = json.loads(Shard().meta_path(out).read_text())
    assert meta["identity"]["label"] == "median of 3" and meta["problems"] == 2
    median_records([a, c], out)  # rewriting replaces the file instead of appending to it
    # low median of 2; q3 is feasible in 1 of its 2 searches, so it is not
    assert [(r.id, r.budget, r.feasible) for r in load_records(out)] == [("q1", 10, True), ("q2", 70, True), ("q3", None, False)]


def test_build_samples_searches_each_seed_and_writes_the_median(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text("".join(json.dumps({"question": q, "answer": a}) + "\n" for q, a in [("What is 2 + 3?", "5"), ("What is 6 * 7?", "42")]))
    out = tmp_path / "records"
    args = ["build", "--dataset", f"jsonl:{data}", "--model", str(tiny_lm_dir), "--backend", "hf", "--device", "cpu",
            "--max-new-tokens", "4", "--temperature", "1.0", "--sampling-seed", "5", "--samples", "2", "--out", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    for seed in (5, 6):
        meta = json.loads((out / "samples" / f"seed-{seed}" / "meta-00000-of-00001.json").read_text())
        assert meta["identity"]["sampling_seed"] == seed and meta["identity"]["temperature"] == 1.0
        assert len(load_records(out / "samples" / f"seed-{seed}")) == 2
    five, six = (load_records(out / "samples" / f"seed-{seed}") for seed in (5, 6))
    assert [r.vanilla_text for r in five] != [r.vanilla_text for r in six]  # each sample decoded with its own seed
    assert "median of 2 searches written to" in result.output and len(load_records(out)) == 2
    again = CliRunner().invoke(main, args, catch_exceptions=False)  # resumes: nothing left to search
    assert again.exit_code == 0 and "2 questions" in again.output
    greedy = CliRunner().invoke(main, [a if a != "1.0" else "0" for a in args])
    assert greedy.exit_code == 2 and "--samples above 1 needs" in greedy.output
