"""The tale command line, end to end on tiny models and small files."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner
from scripted import ScriptedBackend, problems_and_scripts

from tale.cli import main


def invoke(*args: str):
    result = CliRunner().invoke(main, list(args), catch_exceptions=False)
    return result


@pytest.mark.parametrize("command", sorted(main.commands))
def test_every_command_has_help(command: str) -> None:
    result = invoke(command, "--help")
    assert result.exit_code == 0
    assert "Example: tale " + command in result.output.replace("\n", " ")


def write_problems(path: Path) -> Path:
    rows = [{"question": "What is 2 + 3?", "answer": "5"}, {"question": "What is 6 * 7?", "answer": "42"},
            {"question": "What is 10 - 4?", "answer": "6"}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_generate_prints_lines_and_summary_and_writes_jsonl(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = write_problems(tmp_path / "p.jsonl")
    out = tmp_path / "answers.jsonl"
    result = invoke("generate", "--dataset", f"jsonl:{data}", "--model", str(tiny_lm_dir), "--dtype", "float32",
                    "--backend", "hf", "--device", "cpu", "--budget", "30", "--max-new-tokens", "5", "--out", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.count(" tokens  predicted=") == 3
    assert "3 questions, method budget" in result.output and "mean output tokens" in result.output
    answers = [json.loads(line) for line in out.read_text().splitlines()]
    assert [a["gold"] for a in answers] == ["5", "42", "6"]
    assert all(a["budget"] == 30 and a["method"] == "budget" and 1 <= a["output_tokens"] <= 5 for a in answers)


def test_generate_refuses_budget_with_direct(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["generate", "--dataset", "generated", "--budget", "5", "--direct"])
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_build_then_resume_with_other_search_is_refused(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = write_problems(tmp_path / "p.jsonl")
    args = ["build", "--dataset", f"jsonl:{data}", "--model", str(tiny_lm_dir), "--dtype", "float32", "--backend", "hf", "--device", "cpu",
            "--max-new-tokens", "4", "--out", str(tmp_path / "records")]
    result = invoke(*args)
    assert result.exit_code == 0, result.output
    assert "3 questions, feasible share" in result.output and "calls" in result.output
    again = CliRunner().invoke(main, [*args, "--search", "bisect"])
    assert again.exit_code == 2 and "holds a run with other settings" in again.output


def test_build_reference_records_from_gsm8k_solutions(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "gsm8k.jsonl"
    rows = [{"question": "What is 2 + 3?", "answer": "2 + 3 = <<2+3=5>>5\n#### 5"},
            {"question": "What is 6 * 7?", "answer": "6 * 7 = <<6*7=42>>42\n#### 42"}]
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    out = tmp_path / "ref"
    result = invoke("build", "--dataset", f"gsm8k:{data}", "--search", "reference", "--model", str(tiny_lm_dir), "--out", str(out))
    assert result.exit_code == 0, result.output
    assert "2 questions, feasible share 100.0%" in result.output and "mean budget" in result.output
    records = [json.loads(line) for line in (out / "records-00000-of-00001.jsonl").read_text().splitlines()]
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_lm_dir)
    assert [r["reasoning"] for r in records] == ["2 + 3 = 5\nAnswer: [[5]]", "6 * 7 = 42\nAnswer: [[42]]"]
    # the budget is the answer's tokens plus the end-of-turn token, as the hf backend counts output
    assert [r["budget"] for r in records] == [len(tokenizer(r["reasoning"], add_special_tokens=False)["input_ids"]) + 1
                                              for r in records]
    equations = invoke("build", "--dataset", f"gsm8k:{data}", "--search", "equations", "--model", str(tiny_lm_dir), "--out", str(tmp_path / "eq"))
    assert equations.exit_code == 0, equations.output
    terse = [json.loads(line) for line in (tmp_path / "eq" / "records-00000-of-00001.jsonl").read_text().splitlines()]
    assert [r["reasoning"] for r in terse] == ["2+3=5\nAnswer: [[5]]", "6*7=42\nAnswer: [[42]]"]
    assert all(r["search"] == "equations" and r["budget"] < s["budget"] for r, s in zip(terse, records))
    zero = tmp_path / "zero.jsonl"
    zero.write_text(json.dumps({"question": "How many?", "answer": 3}) + "\n")
    refused = CliRunner().invoke(main, ["build", "--dataset", f"gsm8k_zero:{zero}", "--search", "reference",
                                        "--model", str(tiny_lm_dir), "--out", str(tmp_path / "zero-ref")])
    assert refused.exit_code == 2 and "have no worked solution" in refused.output and "Traceback" not in refused.output
    remote = CliRunner().invoke(main, ["build", "--dataset", f"gsm8k:{data}", "--search", "reference", "--backend", "openai",
                                       "--out", str(tmp_path / "remote")])
    assert remote.exit_code == 2 and "local tokenizer" in remote.output


def test_merge_and_elasticity(tmp_path: Path) -> None:
    from data_builder.build import BuildConfig, build_records
    from data_builder.records import Shard

    problems, scripts = problems_and_scripts(10)
    for i in range(2):
        config = BuildConfig(dataset="scripted", out=tmp_path / f"s{i}", model="scripted", backend="scripted", shard=Shard(i, 2))
        build_records(config, ScriptedBackend(problems, scripts), problems)
    result = invoke("merge", str(tmp_path / "s0"), str(tmp_path / "s1"), "--out", str(tmp_path / "all"))
    assert result.exit_code == 0 and "merged 10 records" in result.output
    figure = tmp_path / "fig.png"
    result = invoke("elasticity", "--records", str(tmp_path / "all"), "--out", str(figure))
    assert result.exit_code == 0, result.output
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    curves = json.loads(figure.with_suffix(".json").read_text())
    assert len(curves) == 8  # the two infeasible questions have no budget-aware rounds
    assert all(c["budgets"] == sorted(c["budgets"]) for c in curves)


def test_generate_names_a_bad_row_or_skips_it(tiny_lm_dir: Path, tmp_path: Path) -> None:
    data = write_problems(tmp_path / "p.jsonl")
    data.write_text(data.read_text() + '{"question": "No answer here?"}\n')
    args = ["generate", "--dataset", f"jsonl:{data}", "--model", str(tiny_lm_dir), "--backend", "hf", "--device", "cpu",
            "--max-new-tokens", "2", "--out", str(tmp_path / "a.jsonl")]
    failed = CliRunner().invoke(main, args)
    assert failed.exit_code == 2 and "p.jsonl:4" in failed.output and "answer" in failed.output
    result = CliRunner().invoke(main, [*args, "--skip-bad"], catch_exceptions=False)
    assert result.exit_code == 0 and "skipped 1 bad rows" in result.output and "3 questions" in result.output
