"""Ladder labels: the exact calls and records against scripted backends, resuming, reuse, bad ladders."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scripted import ScriptedBackend, make_problem, threshold_script

from data_builder.ladder import (
    DEFAULT_LADDER,
    LadderBuildConfig,
    LadderConfig,
    LadderError,
    LadderRecord,
    Observation,
    ask_ladder,
    build_ladder,
    load_ladder,
    observations,
    parse_ladder,
    reusable_vanilla,
    summarize_ladder,
)
from data_builder.record import RecordError
from data_builder.records import load_records
from data_builder.run_dir import RunMismatchError
from tale.cli import main


def curve(direct, cut, vanilla_tokens=200):
    """Right when direct (if ``direct``) and at every budget >= ``cut``; vanilla always right."""

    def script(budget):
        if budget is None:
            return vanilla_tokens, True
        if budget == 0:
            return 3, direct
        return budget // 2, budget >= cut

    return script


def scripted(problems, *per_sample):
    """One (seed, backend) per sample; ``per_sample[k]`` lists sample k's script per problem."""
    return [(seed, ScriptedBackend(problems, scripts)) for seed, scripts in enumerate(per_sample)]


def test_every_rung_every_sample_in_one_call_per_rung_and_sample() -> None:
    problems = [make_problem(0), make_problem(1)]
    backends = scripted(problems, [curve(True, 64), curve(False, 256)], [curve(False, 128), curve(False, 512)])
    results = dict((p.id, rungs) for p, rungs in ask_ladder(problems, backends, LadderConfig(samples=2)))
    # Each backend was asked once per rung, both questions together, rungs in ladder order (direct first).
    for _, backend in backends:
        assert backend.calls == [[(problems[0].id, rung), (problems[1].id, rung)] for rung in DEFAULT_LADDER]
    first = results[problems[0].id]
    assert [r.budget for r in first] == list(DEFAULT_LADDER)
    assert [[(s.seed, s.correct, s.output_tokens) for s in r.samples] for r in first] == [
        [(0, True, 3), (1, False, 3)],  # direct
        [(0, False, 16), (1, False, 16)],  # 32
        [(0, True, 32), (1, False, 32)],  # 64
        [(0, True, 64), (1, True, 64)],  # 128
        [(0, True, 128), (1, True, 128)],  # 256
        [(0, True, 200), (1, True, 200)],  # vanilla
    ]
    assert [r.success for r in results[problems[1].id]] == [0, 0, 0, 0, 0.5, 1]
    assert first[0].samples[0].predicted == "42" and first[1].samples[0].predicted == "421"


def test_together_asks_every_rung_of_a_sample_in_one_call_with_the_same_records() -> None:
    problems = [make_problem(0), make_problem(1)]
    scripts = ([curve(True, 64), curve(False, 256)], [curve(False, 128), curve(False, 512)])
    per_rung = list(ask_ladder(problems, scripted(problems, *scripts), LadderConfig(samples=2)))
    backends = scripted(problems, *scripts)
    labels = []
    together = list(ask_ladder(problems, backends, LadderConfig(samples=2), together=True,
                               on_batch=lambda label, k, generations, seconds: labels.append((label, k, len(generations)))))
    for _, backend in backends:  # one call per sample: every rung's prompts, rung by rung, both questions each
        assert backend.calls == [[(p.id, rung) for rung in DEFAULT_LADDER for p in problems]]
    assert labels == [("every rung", 0, 12), ("every rung", 1, 12)]
    assert together == per_rung
    with pytest.raises(ValueError, match="choose one"):
        list(ask_ladder(problems, backends, LadderConfig(samples=2), together=True, batch=4))


def test_chunks_of_pool_questions_are_finished_before_the_next_is_asked() -> None:
    problems = [make_problem(i) for i in range(3)]
    backends = scripted(problems, [threshold_script(100, 50)] * 3)
    stream = ask_ladder(problems, backends, LadderConfig(rungs=(0, 64, None), samples=1), pool=2)
    first, second = next(stream), next(stream)
    assert [first[0].id, second[0].id] == [problems[0].id, problems[1].id]
    assert len(backends[0][1].calls) == 3  # the first chunk's three rungs, nothing of the second yet
    [third] = list(stream)
    assert third[0].id == problems[2].id and backends[0][1].calls[3] == [(problems[2].id, 0)]


def test_reused_vanilla_samples_fill_the_top_rung_first() -> None:
    from data_builder.ladder import Sample

    problems = [make_problem(0), make_problem(1)]
    backends = scripted(problems, [curve(True, 64)] * 2, [curve(True, 64)] * 2)
    reused = Sample(7, False, 99, 10, "1", "stop", "old answer", "runs/old")
    results = dict((p.id, r) for p, r in ask_ladder(problems, backends, LadderConfig(rungs=(64, None), samples=2),
                                                     reuse={problems[0].id: [reused]}))
    # Vanilla: sample 0 asks only the question without a reused answer; sample 1 asks both.
    assert backends[0][1].calls[-1] == [(problems[1].id, None)]
    assert backends[1][1].calls[-1] == [(problems[0].id, None), (problems[1].id, None)]
    vanilla = results[problems[0].id][-1].samples
    assert [(s.seed, s.origin, s.output_tokens) for s in vanilla] == [(7, "runs/old", 99), (1, None, 200)]


def config(tmp_path: Path, **kw) -> LadderBuildConfig:
    return LadderBuildConfig(dataset="scripted", out=tmp_path / "ladder", model="scripted", backend="scripted",
                             ladder=LadderConfig(rungs=(0, 32, None), samples=2), **kw)


def test_build_writes_typed_records_and_resumes_where_it_stopped(tmp_path: Path) -> None:
    problems = [make_problem(i) for i in range(4)]
    scripts = [curve(i % 2 == 0, 32) for i in range(4)]
    built = []

    def backends():
        built.append(scripted(problems, scripts, scripts))
        return built[-1]

    build_ladder(config(tmp_path), backends, problems[:2])
    build_ladder(config(tmp_path), backends, problems)  # a larger limit grows the run
    assert [c[0][0] for c in built[1][0][1].calls] == [problems[2].id] * 3  # only the new questions were asked
    build_ladder(config(tmp_path), backends, problems)  # nothing left: no backend is even built
    assert len(built) == 2
    records = load_ladder(tmp_path / "ladder")
    assert [r.id for r in records] == [p.id for p in problems]
    assert all(isinstance(r, LadderRecord) and r.temperature == 0.7 and r.backend == "scripted" for r in records)
    assert summarize_ladder(records)[0] == {"rung": "direct", "questions": 4, "samples": 8, "accuracy": 0.5, "mean_output_tokens": 3}
    calls = [json.loads(line) for line in (tmp_path / "ladder" / "ladder-calls-00000-of-00001.jsonl").read_text().splitlines()]
    assert len(calls) == 2 * 3 * 2  # two builds that asked: 3 rungs x 2 samples each
    assert calls[0]["rung"] == "direct" and calls[0]["prompts"] == 2 and calls[0]["output_tokens"] == 6 and calls[0]["longest"] == 3
    meta = json.loads((tmp_path / "ladder" / "ladder-meta-00000-of-00001.json").read_text())
    assert meta["identity"]["ladder"] == ["direct", "32", "vanilla"] and meta["ladder_format"] == 1
    with pytest.raises(RunMismatchError, match="temperature"):
        build_ladder(config(tmp_path, temperature=0.5), backends, problems)


def test_a_bad_line_names_its_file_line_and_field(tmp_path: Path) -> None:
    problems = [make_problem(0)]
    build_ladder(config(tmp_path), lambda: scripted(problems, [curve(True, 32)], [curve(True, 32)]), problems)
    path = tmp_path / "ladder" / "ladder-00000-of-00001.jsonl"
    obj = json.loads(path.read_text())
    obj["rungs"][1]["samples"][0]["correct"] = "yes"
    path.write_text(json.dumps(obj) + "\n")
    with pytest.raises(RecordError, match=r"ladder-00000-of-00001.jsonl:1: field 'rungs\[1\].samples\[0\].correct'"):
        load_ladder(tmp_path / "ladder")
    obj["rungs"][1]["samples"][0]["correct"] = True
    obj["rungs"][0]["budget"], obj["rungs"][1]["budget"] = 32, 0
    path.write_text(json.dumps(obj) + "\n")
    with pytest.raises(RecordError, match="'rungs': --ladder: rungs must strictly increase"):
        load_ladder(tmp_path / "ladder")


@pytest.mark.parametrize(("text", "message"), [
    ("", "at least one rung"),
    (" , ", "at least one rung"),
    ("64,32", "strictly increase"),
    ("32,32", "strictly increase"),
    ("vanilla,64", "only come last"),
    ("-5,64", "not direct, vanilla"),
    ("fast", "not direct, vanilla"),
])
def test_bad_ladders_are_refused(text: str, message: str) -> None:
    with pytest.raises(LadderError, match=message):
        parse_ladder(text)


def test_ladders_parse() -> None:
    assert parse_ladder("direct,32,64,128,256,vanilla") == DEFAULT_LADDER
    assert parse_ladder("0, 100") == (0, 100)
    with pytest.raises(LadderError, match="positive integer"):
        LadderConfig(samples=0)
    with pytest.raises(LadderError, match="--temperature above 0"):
        LadderBuildConfig(dataset="x", out=Path("x"), temperature=0.0)


@pytest.mark.parametrize(("args", "needle"), [
    (("--ladder", ""), "at least one rung"),
    (("--ladder", "64,32,vanilla"), "strictly increase"),
    (("--samples", "0"), "--samples"),
    (("--temperature", "0"), "--temperature above 0"),
])
def test_bad_ladders_on_the_command_line_are_one_line_errors(args: tuple[str, ...], needle: str, tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["build", "--search", "ladder", "--dataset", "generated", "--out", str(tmp_path / "l"),
                                       "--temperature", "0.7", *args])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    assert needle in line
    assert not (tmp_path / "l").exists()  # refused before anything is written


def test_search_records_still_load_and_count_as_curve_observations() -> None:
    records = load_records(Path("artifacts/records/gsm8k-train-sft-lengths-elastic-2000"))
    assert len(records) == 2000
    record = next(r for r in records if r.feasible and r.calls > 2)
    points = observations(record)
    assert points[0] == Observation(None, record.trace[0].correct, record.trace[0].output_tokens)
    assert [p.budget for p in points[1:]] == [step.budget for step in record.trace[1:]]


def test_vanilla_answers_of_other_settings_are_not_reused(tmp_path: Path) -> None:
    greedy = Path("artifacts/records/gsm8k-train-sft-lengths-elastic-2000")  # ort:int8, temperature 0
    same = LadderBuildConfig(dataset="x", out=tmp_path, model="runs/reasoner-sft-lengths", backend="ort:int8",
                             temperature=0.0, ladder=LadderConfig(samples=1))
    found = reusable_vanilla([greedy], same)
    record = load_records(greedy)[0]
    [sample] = found[record.id]
    assert (sample.correct, sample.output_tokens, sample.text, sample.seed) == (
        record.vanilla_correct, record.vanilla_tokens, record.vanilla_text, None)
    with pytest.raises(RunMismatchError, match="temperature: 0.0 vs 0.7"):
        reusable_vanilla([greedy], LadderBuildConfig(dataset="x", out=tmp_path, model="runs/reasoner-sft-lengths",
                                                     backend="ort:int8", temperature=0.7))


def test_batches_group_questions_of_similar_expected_length() -> None:
    problems = [make_problem(i) for i in range(4)]
    at_64, vanilla = [60, 10, 50, 5], [100, 400, 200, 300]

    def script(n):
        return lambda budget: (3, True) if budget == 0 else (at_64[n], True) if budget == 64 else (vanilla[n], True)

    [(_, one), (_, two)] = scripted(problems, [script(n) for n in range(4)], [script(n) for n in range(4)])
    list(ask_ladder(problems, [(0, one), (1, two)], LadderConfig(rungs=(0, 64, None), samples=2), batch=2))
    ids = [p.id for p in problems]
    # Rung 64, sample 0: nothing known at 64 yet, the direct answers all had 3 tokens: file order.
    assert one.calls[2:4] == [[(ids[0], 64), (ids[1], 64)], [(ids[2], 64), (ids[3], 64)]]
    # Sample 1 at 64, by sample 0's answers there (5, 10 | 50, 60 tokens); vanilla sample 0 by the rung below (the same).
    assert two.calls[2:4] == [[(ids[3], 64), (ids[1], 64)], [(ids[2], 64), (ids[0], 64)]]
    assert one.calls[4:] == [[(ids[3], None), (ids[1], None)], [(ids[2], None), (ids[0], None)]]
    # Vanilla sample 1, by sample 0's vanilla answers (100, 200 | 300, 400 tokens).
    assert two.calls[4:] == [[(ids[0], None), (ids[2], None)], [(ids[3], None), (ids[1], None)]]
