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
