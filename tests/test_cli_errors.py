"""Bad command-line input: a one-line error naming the option, exit code 2, no traceback."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from tale.cli import main


def run(*args: str):
    return CliRunner().invoke(main, list(args))


def one_line_error(result, *needles: str) -> None:
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)  # click's exit, nothing raised
    [line] = [line for line in result.output.splitlines() if line.startswith("Error:")]
    for needle in needles:
        assert needle in line, line


@pytest.mark.parametrize(("args", "needles"), [
    (("generate", "--dataset", "gsm8:x"), ("--dataset", "unknown problem source 'gsm8'")),
    (("generate", "--dataset", "mathbench"), ("--dataset", "mathbench needs a path")),
    (("generate", "--dataset", "generated", "--limit", "0"), ("--limit", "0 is not in the range")),
    (("build", "--dataset", "generated", "--out", "x", "--shard", "0/x"), ("--shard", "shard must look like I/N")),
    (("build", "--dataset", "generated", "--out", "x", "--shard", "4/4"), ("--shard",)),
    (("evaluate", "--dataset", "gsm8:x"), ("--dataset", "unknown problem source")),
    (("ablate", "--dataset", "jsonl"), ("--dataset", "jsonl needs a path")),
    (("run", "--eval-dataset", "gsm8:x"), ("--eval-dataset",)),
    (("generate", "--dataset", "generated", "--temperature", "-1"), ("--temperature",)),
    (("generate", "--dataset", "generated", "--threads", "0"), ("--threads",)),
])
def test_bad_options_are_one_line_errors(args: tuple[str, ...], needles: tuple[str, ...]) -> None:
    one_line_error(run(*args), *needles)


@pytest.mark.parametrize(("args", "needles"), [
    (("build", "--dataset", "generated", "--out", "{tmp}/b", "--floor", "0"), ("--floor", "0 is not in the range")),
    (("export", "--predictor", "/nonexistent", "--out", "{tmp}/x"), ("--predictor", "does not exist")),
    (("export", "--predictor", "{tmp}", "--out", "{tmp}/x", "--threads", "0"), ("--threads",)),
    (("estimate", "--predictor", "/nonexistent", "q"), ("--predictor", "does not exist")),
    (("calibrate", "--predictor", "{tmp}", "--records", "{tmp}", "--risk", "2"), ("--risk",)),
    (("calibrate", "--predictor", "{tmp}", "--records", "{tmp}", "--held-out", "1"), ("--held-out",)),
    (("run", "--risk", "1.5"), ("--risk", "expected a risk in (0, 1)")),
    (("run", "--risk", "abc"), ("--risk", "expected a risk in (0, 1)")),
    (("evaluate", "--budget-source", "bogus:x", "--dataset", "gsm8k:x"), ("--budget-source", "unknown budget source 'bogus:x'")),
    (("evaluate", "--budget-source", "fixed:0", "--dataset", "generated"), ("--budget-source", "fixed needs a positive integer")),
    (("evaluate", "--budget-source", "oracle:{tmp}/typo", "--dataset", "generated"), ("--budget-source", "typo: no such directory")),
    (("evaluate", "--budget-source", "onnx:{tmp}/typo%0.1", "--dataset", "generated"), ("--budget-source", "typo: no such directory")),
    (("ablate", "--dataset", "generated", "--budget-source", "bogus"), ("--budget-source", "unknown budget source")),
    (("ablate", "--dataset", "generated", "--methods", "vanilla,bogus"), ("--methods", "among direct, vanilla, budget")),
    (("rebuild-reasoner", "--from", "/nonexistent", "--out", "{tmp}/x"), ("--from", "does not exist")),
    (("rebuild-reasoner", "--from", "{tmp}", "--out", "{tmp}/x", "--threads", "-1"), ("--threads",)),
    (("train-predictor", "--records", "{tmp}", "--out", "{tmp}/p", "--threads", "-1"), ("--threads",)),
    (("train-reasoner", "sft", "--records", "{tmp}", "--out", "{tmp}/r", "--threads", "0"), ("--threads",)),
    (("eval-predictor", "--records", "{tmp}", "--risks", "0.1,abc"), ("--risks", "comma-separated risks in (0, 1)")),
    (("eval-predictor", "--records", "{tmp}", "--llm-default", "0"), ("--llm-default",)),
    (("eval-predictor", "--records", "{tmp}", "--model", "x"), ("No such option '--model'",)),  # llm:MODEL names it
    (("elasticity", "--records", "{tmp}", "--sweep", "8", "--questions", "0"), ("--questions",)),
])
def test_bad_values_are_refused_before_anything_loads(args: tuple[str, ...], needles: tuple[str, ...], tmp_path: Path) -> None:
    one_line_error(run(*(a.format(tmp=tmp_path) for a in args)), *needles)


def test_exporting_a_directory_without_a_regressor_names_what_is_missing(tmp_path: Path) -> None:
    one_line_error(run("export", "--predictor", str(tmp_path), "--out", str(tmp_path / "onnx")),
                   f"{tmp_path} is not a saved BERT regressor: no tale_predictor.json")


def test_a_bad_sweep_list_is_refused(tmp_path: Path) -> None:
    one_line_error(run("elasticity", "--records", str(tmp_path), "--out", str(tmp_path / "e.png"), "--sweep", "8,x"),
                   "--sweep", "comma-separated positive integers")


@pytest.mark.parametrize("backend", ["ort", "hf"])
def test_a_missing_local_model_is_refused_before_any_hub_lookup(backend: str, tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "runs").mkdir()  # runs/ exists, so runs/typo is a local path, not a hub id
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n")
    monkeypatch.chdir(tmp_path)
    result = run("generate", "--backend", backend, "--dataset", f"jsonl:{data}", "--model", "runs/typo", "--out", "a.jsonl")
    one_line_error(result, "--model", "runs/typo: no such model directory")


def test_a_changed_temperature_refuses_to_resume_a_search(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "p.jsonl"
    data.write_text(json.dumps({"question": "What is 2 + 3?", "answer": "5"}) + "\n")
    args = ["build", "--dataset", f"jsonl:{data}", "--model", str(tiny_lm_dir), "--backend", "hf", "--device", "cpu",
            "--threads", "1", "--max-new-tokens", "4", "--out", str(tmp_path / "records")]
    assert run(*args).exit_code == 0
    again = run(*args, "--temperature", "0.7")
    assert again.exit_code != 0 and "temperature: recorded 0.0, now 0.7" in again.output


def test_the_pipeline_refuses_evaluation_problems_it_trains_on(tmp_path: Path) -> None:
    rows = [{"question": f"What is {i} + 1?", "answer": str(i + 1)} for i in range(4)]
    train, test = tmp_path / "train.jsonl", tmp_path / "test.jsonl"
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    # the same question with other spacing and case, among new ones
    test.write_text(json.dumps({"question": "what is 2  + 1?", "answer": "3"}) + "\n"
                    + json.dumps({"question": "What is 9 + 9?", "answer": "18"}) + "\n")
    result = run("run", "--dataset", f"jsonl:{train}", "--eval-dataset", f"jsonl:{test}", "--questions", "4",
                 "--eval-questions", "2", "--out", str(tmp_path / "run"))
    assert result.exit_code != 0 and "1 of the 2 evaluation problems" in result.output and "Traceback" not in result.output


# --- the bad inputs a new user tried (issue 46): each one line through the group's one path, exit 2 ---


def test_a_data_set_file_that_is_not_utf8_names_its_line(tmp_path: Path) -> None:
    data = tmp_path / "latin1.jsonl"
    data.write_bytes(json.dumps({"question": "What is 1 + 1?", "answer": "2"}).encode() + b"\n"
                     + '{"question": "Combien coûte un café ?", "answer": "2"}\n'.encode("latin-1"))
    one_line_error(run("generate", "--dataset", f"jsonl:{data}"), f"{data}:2:", "not UTF-8 text (byte 0xfb at column 25)")


def test_an_empty_data_set_file_is_an_error_not_a_run_of_nothing(tmp_path: Path) -> None:
    data = tmp_path / "empty.jsonl"
    data.write_text("\n")
    out = tmp_path / "answers.jsonl"
    one_line_error(run("generate", "--dataset", f"jsonl:{data}", "--out", str(out)), f"jsonl:{data}: no problems in it")
    assert not out.exists()


def test_training_on_records_without_a_usable_example_names_the_records(tmp_path: Path) -> None:
    from conftest import budget_record

    from data_builder.records import RecordWriter, Shard

    with RecordWriter(Shard().records_path(tmp_path / "records")) as writer:
        for i in range(3):
            writer.write(budget_record(f"q{i}", feasible=False, budget=None))
    result = run("train-predictor", "--records", str(tmp_path / "records"), "--out", str(tmp_path / "p"))
    one_line_error(result, f"{tmp_path / 'records'}: no usable training examples", "3 infeasible records left out",
                   "--include-infeasible")


@pytest.mark.parametrize("upstream", ["notaurl", "ftp://127.0.0.1/v1", "http://"])
def test_serve_refuses_an_upstream_that_is_not_a_url_before_serving(upstream: str, tmp_path: Path) -> None:
    one_line_error(run("serve", "--predictor", str(tmp_path), "--upstream", upstream), "--upstream must be an http:// or https:// URL")


def test_only_errors_a_user_can_fix_become_one_line_a_bug_keeps_its_traceback(monkeypatch: pytest.MonkeyPatch) -> None:
    import data_builder.sources as sources
    from reasoner.errors import InputError

    def fixable(*args, **kwargs):
        raise InputError("x.jsonl:3: field 'answer': missing")

    monkeypatch.setattr(sources, "load_problems", fixable)
    one_line_error(run("generate", "--dataset", "jsonl:x.jsonl"), "x.jsonl:3: field 'answer': missing")

    def bug(*args, **kwargs):
        raise ValueError("a bug")

    monkeypatch.setattr(sources, "load_problems", bug)
    result = run("generate", "--dataset", "jsonl:x.jsonl")
    assert result.exit_code == 1 and isinstance(result.exception, ValueError)  # not turned into a user error
