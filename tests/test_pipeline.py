"""``tale run`` end to end on tiny models: every stage, the resume, and a refused change of settings."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from tale.cli import main


def write_problems(path: Path, n: int, start: int = 0) -> Path:
    rows = [{"question": f"What is {i} + {i + 1}? Think about it.", "answer": str(2 * i + 1)} for i in range(start, start + n)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def test_run_every_stage_then_resume_skips_them(tiny_lm_dir: Path, tiny_bert_dir: Path, tmp_path: Path) -> None:
    train = write_problems(tmp_path / "train.jsonl", 6)
    test = write_problems(tmp_path / "test.jsonl", 3, start=6)  # other questions than the training ones
    out = tmp_path / "run"
    args = ["run", "--dataset", f"jsonl:{train}", "--eval-dataset", f"jsonl:{test}", "--questions", "6",
            "--eval-questions", "3", "--model", str(tiny_lm_dir), "--encoder", str(tiny_bert_dir), "--max-length", "64", "--epochs", "2",
            "--backend", "hf", "--device", "cpu",
            "--max-new-tokens", "6", "--calibration", "0", "--risk", "none", "--out", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "records: 6 questions" in result.output
    # a random tiny model answers nothing right: the regressor falls back to the infeasible records
    assert "regressor: trained on" in result.output and "infeasible ones included" in result.output
    assert (out / "predictor" / "tale_predictor.json").exists()
    assert (out / "predictor-onnx" / "model.int8.onnx").exists()
    # The trainer's loss lines are kept in the run directory, not printed as raw dicts on the console.
    assert "{'loss'" not in result.output and "'train_runtime'" not in result.output
    assert "'loss'" in (out / "train.log").read_text() and "predictor.bert" in (out / "train.log").read_text()
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert len(summary["runs"]) == 3  # vanilla CoT, the regressor's budgets, one constant at their mean
    table = result.output[result.output.index("| model | method"):]
    assert table.index("| vanilla CoT |") < table.index("| budget-aware, ONNX regressor budgets (uncalibrated) |")
    assert "against vanilla CoT on the same 3 questions" in result.output and "sign test p = " in result.output
    runs = {json.loads((run / "meta.json").read_text())["identity"]["budget_source"] or "vanilla":
            [json.loads(line) for line in (run / "rows.jsonl").open()] for run in (out / "eval" / "runs").iterdir()}
    assert len(runs) == 3 and sum(map(len, runs.values())) == 9
    learned = runs[f"onnx:{out / 'predictor-onnx'}"]
    constant = next(rows for source, rows in runs.items() if source.startswith("matched:"))
    assert len(learned) == 3 and all(8 <= r["budget"] <= 1024 for r in learned)
    mean_budget = round(sum(r["budget"] for r in learned) / 3)
    assert [r["budget"] for r in constant] == [mean_budget] * 3 and [r["id"] for r in constant] == [r["id"] for r in learned]
    assert table.index("| budget-aware, ONNX regressor budgets (uncalibrated) |") < table.index(
        f"| budget-aware, one constant budget of {mean_budget} (the regressor budgets' mean) |")
    assert "(uncalibrated) against one constant budget at their mean on the same 3 questions" in result.output
    config = json.loads((out / "config.json").read_text())["identity"]
    assert config["questions"] == 6 and config["regressor"]["encoder"] == str(tiny_bert_dir)
    assert (config["regressor"]["epochs"], config["regressor"]["max_length"]) == (2, 64) and "seed" not in config["regressor"]
    predictor_files = {p: p.stat().st_mtime_ns for p in (out / "predictor").iterdir()}

    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "skipped: records, predictor, export" in again.output
    assert {p: p.stat().st_mtime_ns for p in (out / "predictor").iterdir()} == predictor_files
    assert sum(1 for run in (out / "eval" / "runs").iterdir() for _ in (run / "rows.jsonl").open()) == 9

    changed = CliRunner().invoke(main, [*args[:-2], "--seed", "3", "--out", str(out)])
    assert changed.exit_code == 2 and "holds a run with other settings (seed: recorded 0, now 3)" in changed.output



def searched_record(i: int) -> dict[str, Any]:
    """A feasible record as ``tale build`` writes it (one line of records-00000-of-00001.jsonl)."""
    return {"id": f"q{i}", "source": "jsonl", "question": f"What is {i} + {i}?", "gold": str(2 * i), "kind": "cloze",
            "options": [], "language": "en", "feasible": True, "budget": 20 + i, "reasoning": f"{i} + {i} = {2 * i}. [[{2 * i}]]",
            "predicted": str(2 * i), "vanilla_text": f"Adding {i} and {i} gives {2 * i}. [[{2 * i}]]", "vanilla_tokens": 40,
            "vanilla_correct": True, "trace": [{"budget": None, "output_tokens": 40, "correct": True, "predicted": str(2 * i),
                                                "prompt_tokens": 30}],
            "calls": 1, "tokens_spent": 40, "model": "default", "backend": "hf", "prompt_version": "tale-prompts-v1",
            "search": "elastic", "seed": 0}


def test_run_calibrates_and_a_rerun_at_another_risk_keeps_the_stages(tiny_lm_dir: Path, tiny_bert_dir: Path,
                                                                     tmp_path: Path) -> None:
    out = tmp_path / "run"
    (out / "records").mkdir(parents=True)  # searched before: stage 1 skips
    (out / "records" / "records-00000-of-00001.jsonl").write_text(
        "".join(json.dumps(searched_record(i)) + "\n" for i in range(12)))
    test = write_problems(tmp_path / "test.jsonl", 2, start=20)
    args = ["run", "--dataset", "jsonl:unused.jsonl", "--eval-dataset", f"jsonl:{test}", "--questions", "12",
            "--eval-questions", "2", "--model", str(tiny_lm_dir), "--encoder", str(tiny_bert_dir), "--max-length", "64",
            "--epochs", "1", "--min-feasible", "1", "--backend", "hf", "--device", "cpu", "--max-new-tokens", "4",
            "--calibration", "0.5", "--out", str(out)]
    result = CliRunner().invoke(main, [*args, "--risk", "0.5"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    n = len(json.loads((out / "predictor" / "tale_calibration.json").read_text())["scores"])
    assert 1 <= n < 12 and f" records, calibrated on {n} others" in result.output
    calibrated = "| budget-aware, ONNX regressor budgets calibrated to suffice for 50% (risk 0.5) |"
    assert calibrated in result.output and "against vanilla CoT on the same 2 questions" in result.output
    manifest = json.loads((out / "predictor-onnx" / "tale_onnx.json").read_text())
    assert manifest["calibration"] is not None  # the export carries the calibration its budgets use
    assert "risk" not in json.loads((out / "config.json").read_text())["identity"]

    # the risk only picks the evaluated budgets: a rerun at another risk keeps every stage
    too_small = CliRunner().invoke(main, [*args, "--risk", "0.01"])
    assert too_small.exit_code == 2 and "Traceback" not in too_small.output
    assert f"calibrated on {n} records and risk 0.01 needs 99: rerun with --risk" in too_small.output
    again = CliRunner().invoke(main, [*args, "--risk", "none"], catch_exceptions=False)
    assert again.exit_code == 0 and "skipped: records, predictor, export" in again.output
    assert "| budget-aware, ONNX regressor budgets (uncalibrated) |" in again.output and calibrated in again.output
    # vanilla, then each risk's budgets with its own matched constant
    assert len(json.loads((out / "eval" / "summary.json").read_text())["runs"]) == 5
    assert again.output.count("against one constant budget at their mean on the same 2 questions") == 2


def test_run_needs_an_evaluation_set_for_a_given_data_set(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["run", "--dataset", f"jsonl:{tmp_path / 'x.jsonl'}", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2 and "eval_dataset" in result.output


def test_run_post_trains_on_the_records_and_evaluates_both_reasoners(tiny_lm_dir: Path, tiny_bert_dir: Path,
                                                                     tmp_path: Path) -> None:
    from data_builder.record import BudgetRecord
    from data_builder.records import RecordWriter

    out = tmp_path / "run"
    (out / "records").mkdir(parents=True)
    with RecordWriter(out / "records" / "records-00000-of-00001.jsonl") as writer:  # searched before: stage 1 skips
        for i in range(3):
            writer.write(BudgetRecord.from_json(searched_record(i)))
    test = write_problems(tmp_path / "test.jsonl", 2)
    result = CliRunner().invoke(main, [
        "run", "--dataset", "jsonl:unused.jsonl", "--eval-dataset", f"jsonl:{test}", "--questions", "3",
        "--eval-questions", "2", "--model", str(tiny_lm_dir), "--encoder", str(tiny_bert_dir), "--max-length", "64",
        "--epochs", "1", "--min-feasible", "1", "--post-train", "--backend", "hf", "--device", "cpu", "--max-new-tokens", "4",
        "--calibration", "0", "--risk", "none",
        "--out", str(out)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert "skipped: records" in result.output and "infeasible ones included" not in result.output
    train = json.loads((out / "reasoner-sft" / "tale_train.json").read_text())
    assert train["counts"]["kept"] == 3
    summary = json.loads((out / "eval" / "summary.json").read_text())
    assert len(summary["runs"]) == 6  # vanilla, budget-aware and the matched constant, for the base and the post-trained reasoner
    assert result.output.count("against one constant budget at their mean on the same 2 questions") == 2
    assert result.output.count(f"| {out / 'reasoner-sft'} |") == 3


def test_run_refuses_evaluation_problems_that_are_training_problems(tmp_path: Path) -> None:
    train = write_problems(tmp_path / "train.jsonl", 6)
    args = ["run", "--dataset", f"jsonl:{train}", "--questions", "6", "--eval-questions", "3", "--backend", "hf",
            "--out", str(tmp_path / "run")]
    same = CliRunner().invoke(main, [*args, "--eval-dataset", f"jsonl:{train}"])  # the same problems, the same ids
    assert same.exit_code == 2 and "3 of the 3 evaluation problems" in same.output and "are training problems" in same.output
    # other ids (other spacing and case), the same questions: refused by text
    rows = [json.loads(line) for line in train.read_text().splitlines()][:2]
    retyped = tmp_path / "retyped.jsonl"
    retyped.write_text("".join(json.dumps({**r, "question": "  " + r["question"].upper().replace(" ", "  ")}) + "\n"
                               for r in rows))
    by_text = CliRunner().invoke(main, [*args, "--eval-dataset", f"jsonl:{retyped}", "--out", str(tmp_path / "run2")])
    assert by_text.exit_code == 2 and "2 of the 2 evaluation problems" in by_text.output
    assert "Traceback" not in same.output + by_text.output and not (tmp_path / "run" / "records").exists()


def test_run_with_success_curves_ladder_curves_policy_then_resume(tiny_lm_dir: Path, tmp_path: Path) -> None:
    train = write_problems(tmp_path / "train.jsonl", 12)
    test = write_problems(tmp_path / "test.jsonl", 3, start=12)
    out = tmp_path / "run"
    args = ["run", "--search", "ladder", "--ladder", "direct,4,vanilla", "--dataset", f"jsonl:{train}", "--eval-dataset",
            f"jsonl:{test}", "--questions", "12", "--eval-questions", "3", "--model", str(tiny_lm_dir), "--backend", "hf",
            "--device", "cpu", "--max-new-tokens", "6", "--calibration", "0.5", "--threads", "1", "--out", str(out)]
    result = CliRunner().invoke(main, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    from data_builder.ladder import load_ladder

    calls = [json.loads(line) for log in (out / "ladder").glob("ladder-calls-*.jsonl") for line in log.open()]
    assert calls and all(call["threads"] == 1 for call in calls)  # the call log says what the engine ran on

    ladder = load_ladder(out / "ladder")
    assert len(ladder) == 12 and all([r.budget for r in rec.rungs] == [0, 4, None] for rec in ladder)
    assert all(len(r.samples) == 1 for rec in ladder for r in rec.rungs)  # greedy: one answer per rung
    assert "ladder: 12 questions; accuracy (mean output tokens) per rung: direct " in result.output
    chosen = json.loads((out / "curves" / "policy.json").read_text())
    assert chosen["policy"].startswith("price=") and chosen["fit"] + chosen["validation"] == 12 and chosen["validation"] >= 2
    assert f"{chosen['policy']} chosen on {chosen['validation']} of them" in result.output
    assert not (out / "records").exists() and not (out / "predictor").exists()  # no budget search, no regressor
    rows = [json.loads(line) for run in (out / "eval" / "runs").iterdir() for line in (run / "rows.jsonl").open()]
    budgeted = [r for r in rows if r["method"] == "budget"]
    assert len(rows) == 6 and len(budgeted) == 3 and all(r["budget"] in (0, 4, None) for r in budgeted)
    price = chosen["policy"].partition("=")[2]
    assert f"| budget-aware, success-curve budgets at price {price} per token |" in result.output
    assert json.loads((out / "config.json").read_text())["identity"]["ladder"] == ["direct", "4", "vanilla"]

    again = CliRunner().invoke(main, args, catch_exceptions=False)
    assert again.exit_code == 0, again.output
    assert "skipped: ladder, curves" in again.output
    assert sum(1 for run in (out / "eval" / "runs").iterdir() for _ in (run / "rows.jsonl").open()) == 6


def test_run_refuses_a_bad_ladder_and_post_training_on_curves(tmp_path: Path) -> None:
    base = ["run", "--search", "ladder", "--out", str(tmp_path / "run")]
    bad = CliRunner().invoke(main, [*base, "--ladder", "64,32"])
    assert bad.exit_code == 2 and "rungs must strictly increase" in bad.output and "Traceback" not in bad.output
    post = CliRunner().invoke(main, [*base, "--post-train"])
    assert post.exit_code == 2 and "post-training learns from budget-search records" in post.output
    assert not (tmp_path / "run").exists()
