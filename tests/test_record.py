"""The budget record: a lossless JSON round trip, bad lines named by file, line and field, and shards of
another record format refused, in the library and at the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import budget_record
from scripted import ScriptedBackend, problems_and_scripts

from data_builder.build import BuildConfig, build_records
from data_builder.record import RECORD_FORMAT, BudgetRecord, RecordError
from data_builder.records import RecordWriter, Shard, load_records, read_records
from data_builder.reference import reference_record
from data_builder.sources import Problem
from tale.cli import main

REPO = Path(__file__).resolve().parents[1]
COMMITTED = sorted((REPO / "artifacts" / "records").glob("*/records-*.jsonl"))


def lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").splitlines()


def test_built_records_round_trip_to_the_same_line(tmp_path: Path) -> None:
    problems, scripts = problems_and_scripts(6)
    config = BuildConfig(dataset="scripted", out=tmp_path, model="scripted", backend="scripted", pool=3)
    path = build_records(config, ScriptedBackend(problems, scripts), problems)
    records = list(read_records(path))
    assert len(records) == 6 and any(r.feasible for r in records) and any(not r.feasible for r in records)
    for record, line in zip(records, lines(path)):
        assert json.dumps(record.to_json(), ensure_ascii=False) == line
        assert BudgetRecord.from_json(json.loads(line)) == record
    assert json.loads((tmp_path / "meta-00000-of-00001.json").read_text())["record_format"] == RECORD_FORMAT


def test_a_reference_record_round_trips() -> None:
    problem = Problem("gsm8k-1", "What is 1 + 1?", "2", source="gsm8k", solution="1 + 1 = 2.")
    record = reference_record(problem, lambda text: 9, model="m", backend="hf", prompt_version="v", search="reference",
                              seed=None)
    assert record.vanilla_text is None and record.trace[0].budget == record.budget == 9
    assert BudgetRecord.from_json(json.loads(json.dumps(record.to_json()))) == record


@pytest.mark.parametrize("path", COMMITTED, ids=lambda p: p.parent.name)
def test_committed_records_load_and_write_back_byte_identical(path: Path) -> None:
    records = list(read_records(path))  # their meta files predate record_format: the records validate instead
    assert records and [json.dumps(r.to_json(), ensure_ascii=False) for r in records] == lines(path)


def write(directory: Path, rows: list[dict | str], meta: dict | None = None) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = Shard().records_path(directory)
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    if meta is not None:
        Shard().meta_path(directory).write_text(json.dumps(meta))
    return path


def good(i: int) -> dict:
    return budget_record(f"q{i}").to_json()


def without(row: dict, field: str) -> dict:
    return {k: v for k, v in row.items() if k != field}


def with_step(row: dict, index: int, **step) -> dict:
    trace = [dict(s) for s in row["trace"]]
    trace[index].update(step)
    return {**row, "trace": trace}


@pytest.mark.parametrize(("bad", "message"), [
    ({**good(2), "budget": "abc"}, "field 'budget': expected an integer or null, got 'abc'"),
    ({**good(2), "budget": 12.0}, "field 'budget': expected an integer or null, got 12.0"),
    ({**good(2), "feasible": 1}, "field 'feasible': expected true or false, got 1"),
    ({**good(2), "kind": "essay"}, "field 'kind': expected 'cloze' or 'choice', got 'essay'"),
    ({**good(2), "options": "AB"}, "field 'options': expected a list of strings, got 'AB'"),
    (without(good(2), "calls"), f"field 'calls': missing (every record of format {RECORD_FORMAT} has it)"),
    ({**good(2), "trace": []}, "field 'trace': expected a non-empty list of rounds, got []"),
    (with_step(good(2), 1, output_tokens=None), "field 'trace[1].output_tokens': expected an integer, got None"),
    ({**good(2), "trace": [good(2)["trace"][0], 7]}, "field 'trace[1]': expected a JSON object, got 7"),
    ({**good(2), "budgets": 40}, f"field 'budgets': not a field of record format {RECORD_FORMAT}"),
    ("[1, 2]", "expected a JSON object, got [1, 2]"),
    ('{"id": "q2", "budget":', "not valid JSON (Expecting value)"),
])
def test_a_bad_line_names_file_line_and_field(tmp_path: Path, bad: dict | str, message: str) -> None:
    path = write(tmp_path, [good(0), "", bad, good(3)])
    with pytest.raises(RecordError) as caught:
        load_records(tmp_path)
    assert str(caught.value) == f"{path}:3: {message}"
    assert caught.value.line == 3


@pytest.mark.parametrize("found", [0, 99, "1"])
def test_a_shard_of_another_record_format_is_refused(tmp_path: Path, found) -> None:
    write(tmp_path, [good(0)], meta={"identity": {}, "record_format": found})
    with pytest.raises(RecordError, match=rf"meta-00000-of-00001.json: record format {found!r} is not supported: "
                                          rf"this version reads format {RECORD_FORMAT}"):
        load_records(tmp_path)
    with pytest.raises(RecordError, match="is not supported"):  # nor appended to
        RecordWriter(Shard().records_path(tmp_path))


def test_a_meta_without_a_format_is_format_1_only_if_its_records_are(tmp_path: Path) -> None:
    write(tmp_path / "new", [good(0)], meta={"identity": {}})
    assert [r.id for r in load_records(tmp_path / "new")] == ["q0"]
    old = {k: good(0)[k] for k in ("id", "question", "feasible", "budget", "reasoning", "trace")}  # an older layout
    path = write(tmp_path / "old", [old], meta={"identity": {}})
    with pytest.raises(RecordError, match=rf"^{path}:1: field 'source': missing"):
        load_records(tmp_path / "old")


def test_a_build_into_a_directory_of_another_format_is_refused_before_anything_is_written(tmp_path: Path) -> None:
    problems, scripts = problems_and_scripts(2)
    meta = {"identity": {}, "record_format": 99}
    write(tmp_path, [good(0)], meta=meta)
    config = BuildConfig(dataset="scripted", out=tmp_path, model="scripted", backend="scripted")
    with pytest.raises(RecordError, match="record format 99 is not supported"):
        build_records(config, ScriptedBackend(problems, scripts), problems)
    assert json.loads(Shard().meta_path(tmp_path).read_text()) == meta


@pytest.mark.parametrize("command", [
    ["eval-predictor", "--estimators", "constant", "--out", "{out}"],
    ["train-predictor", "--out", "{out}"],
    ["elasticity", "--out", "{out}/e.png"],
])
def test_the_cli_prints_one_line_and_exits_2(tmp_path: Path, command: list[str]) -> None:
    path = write(tmp_path / "records", [good(0), {**good(1), "budget": "abc"}])
    args = [a.format(out=tmp_path / "out") for a in command] + ["--records", str(tmp_path / "records")]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output and isinstance(result.exception, SystemExit)
    assert result.output.strip().splitlines() == [
        f"Error: {path}:2: field 'budget': expected an integer or null, got 'abc'"]
