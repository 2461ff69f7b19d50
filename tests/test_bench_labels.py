"""The label-noise and estimator-study scripts in bench/, on hand-made records and numbers."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import budget_record
from test_labels import infeasible, write

REPO = Path(__file__).resolve().parents[1]


def test_label_noise_scores_one_search_against_another_and_the_median_leave_one_out(tmp_path: Path) -> None:
    budgets = {"seed-0": [10, 40, 100, None], "seed-1": [15, 100, 100, 30], "seed-2": [40, 40, 150, None]}
    dirs = []
    for name, row in budgets.items():
        dirs.append(write(tmp_path / name, [budget_record(f"q{i}", budget=b) if b else infeasible(f"q{i}") for i, b in enumerate(row)]))
    out = tmp_path / "noise.json"
    args = [sys.executable, str(REPO / "bench" / "label_noise.py"), *(f"--records={d}" for d in dirs), f"--out={out}"]
    subprocess.run(args, check=True, capture_output=True, cwd=REPO)
    result = json.loads(out.read_text())
    assert result["questions"] == 4 and result["feasible_share"] == [0.75, 1.0, 0.75]
    pair = next(p for p in result["pairs"] if p["estimate"].endswith("seed-0") and p["label"].endswith("seed-1"))
    # q0..q2 feasible in both: 15<=10? no; 100<=40? no; 100<=100<=200 yes
    assert pair["n"] == 3 and pair["in_range"] == 0.333 and pair["under"] == 0.667 and pair["feasibility_agreement"] == 0.75
    low, high = pair["in_range_95ci"]
    assert 0.0 < low < 0.333 < high < 1.0  # Wilson: never the degenerate [0.333, 0.333] of a normal approximation
    # seed-1's labels there are 15, 100, 100: the constant 100 is in range of two of them, no constant of all three
    assert pair["best_constant"] == 100 and pair["best_constant_in_range"] == 0.667
    loo = result["leave_one_out"]
    assert set(loo) == {"sampled_searches", "one_search", "median_of_2"} and loo["one_search"]["n"] is not None


def test_estimator_study_saving_and_tests(tmp_path: Path) -> None:
    sys.path.insert(0, str(REPO / "bench"))
    from estimator_study import compare

    targets = [10, 20, 30, 40]
    result = compare([20, 20, 40, 40], [40, 40, 40, 40], targets, draws=200)
    assert result["saving"] == 0.25 and result["smaller"] == 2 and result["larger"] == 0
    assert result["coverage"] == 1.0 and result["baseline_coverage"] == 1.0 and result["coverage_sign_p"] == 1.0
    assert result["saving_95ci"][0] <= 0.25 <= result["saving_95ci"][1]
    worse = compare([5, 20, 30, 40], [40, 40, 40, 40], targets, draws=200)
    assert worse["covered_only_by_baseline"] == 1 and worse["covered_only_here"] == 0


def test_length_profile_counts_answers_at_the_limit_and_short_ones(tmp_path: Path) -> None:
    run = tmp_path / "run"
    run.mkdir()
    rows = [(384, True), (381, False), (379, True), (120, True), (40, False), (200, False)]
    (run / "rows.jsonl").write_text("".join(json.dumps({"id": f"q{i}", "correct": c, "output_tokens": t, "prompt_tokens": 9,
                                                        "method": "vanilla"}) + "\n" for i, (t, c) in enumerate(rows)))
    out = tmp_path / "profile.json"
    script = str(REPO / "bench" / "length_profile.py")
    subprocess.run([sys.executable, script, f"--run={run}", f"--out={out}"], check=True, capture_output=True, cwd=REPO)
    (result,) = json.loads(out.read_text())["runs"]
    assert result["n"] == 6 and result["accuracy"] == 0.5 and result["mean_tokens"] == 250.7
    assert (result["at_least_380"], result["at_least_380_right"]) == (2, 1)
    assert (result["at_most_120"], result["at_most_120_right"]) == (2, 1)
    bad = subprocess.run([sys.executable, script, f"--run={run}", "--training=ppo:x:3"], capture_output=True, text=True, cwd=REPO)
    assert bad.returncode == 2 and "sft|dpo:RECORDS_DIR:N" in bad.stderr and "Traceback" not in bad.stderr


def _run_dir(path: Path, rows: list[tuple[str, bool, int]]) -> Path:
    path.mkdir(parents=True)
    lines = [json.dumps({"id": i, "correct": c, "output_tokens": t, "prompt_tokens": 10, "method": "vanilla"}) for i, c, t in rows]
    (path / "rows.jsonl").write_text("\n".join(lines) + "\n")
    return path


def test_paired_runs_pools_one_pair_per_data_set_into_one_sign_test(tmp_path: Path) -> None:
    # data set x: the run gains q1 and q2; data set y: it gains q3 and loses q4; pooled 3 gained, 1 lost
    ax = _run_dir(tmp_path / "ax", [("x1", True, 10), ("x2", True, 20)])
    bx = _run_dir(tmp_path / "bx", [("x1", False, 30), ("x2", False, 40)])
    ay = _run_dir(tmp_path / "ay", [("y3", True, 50), ("y4", False, 50)])
    by = _run_dir(tmp_path / "by", [("y3", False, 50), ("y4", True, 70)])
    out = tmp_path / "pooled.json"
    script = [sys.executable, str(REPO / "bench" / "paired_runs.py")]
    subprocess.run([*script, "--run", ax, "--against", bx, "--run", ay, "--against", by, "--out", out], check=True,
                   capture_output=True, cwd=REPO)
    pooled = json.loads(out.read_text())
    assert pooled["n"] == 4 and (pooled["gained"], pooled["lost"]) == (3, 1) and pooled["sign_test_p"] == 0.625
    assert pooled["run_tokens"] == 32.5 and pooled["against_tokens"] == 47.5 and pooled["run"] == [str(ax), str(ay)]
    subprocess.run([*script, "--run", ax, "--against", bx, "--out", out], check=True, capture_output=True, cwd=REPO)
    assert json.loads(out.read_text())["run"] == str(ax) and json.loads(out.read_text())["n"] == 2  # one pair, as before
    unpaired = subprocess.run([*script, "--run", ax, "--against", bx, "--run", ay], capture_output=True, text=True, cwd=REPO)
    assert unpaired.returncode == 2 and "one --against for each --run" in unpaired.stderr
    twice = subprocess.run([*script, "--run", ax, "--against", bx, "--run", ax, "--against", bx], capture_output=True, text=True, cwd=REPO)
    assert twice.returncode == 1 and "questions of an earlier --run" in twice.stderr


def test_paired_runs_keeps_a_small_p_value_nonzero(tmp_path: Path) -> None:
    # 20 questions the run gains and none it loses: p = 2 / 2**20, about 1.9e-6, which 3 decimals would make 0.0
    a = _run_dir(tmp_path / "a", [(f"q{i}", True, 10) for i in range(20)])
    b = _run_dir(tmp_path / "b", [(f"q{i}", False, 10) for i in range(20)])
    out = tmp_path / "p.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "paired_runs.py"), "--run", a, "--against", b, "--out", out],
                   check=True, capture_output=True, cwd=REPO)
    assert json.loads(out.read_text())["sign_test_p"] == 1.91e-06


def test_paired_runs_pairs_only_the_shared_questions_when_asked(tmp_path: Path) -> None:
    # a 2-question run against a 3-question one: refused as different questions, paired on the 2 with --shared
    a = _run_dir(tmp_path / "a", [("q1", True, 10), ("q2", False, 20)])
    b = _run_dir(tmp_path / "b", [("q1", False, 30), ("q2", False, 40), ("q3", True, 50)])
    out = tmp_path / "p.json"
    script = [sys.executable, str(REPO / "bench" / "paired_runs.py"), "--run", a, "--against", b]
    different = subprocess.run(script, capture_output=True, text=True, cwd=REPO)
    assert different.returncode == 1 and "hold different questions" in different.stderr
    subprocess.run([*script, "--shared", "--out", out], check=True, capture_output=True, cwd=REPO)
    paired = json.loads(out.read_text())
    assert paired["n"] == 2 and (paired["gained"], paired["lost"]) == (1, 0) and paired["against_tokens"] == 35.0


def test_static_batch_waste_counts_steps_as_a_hand_computation(tmp_path: Path) -> None:
    """Answers of 10, 1, 1 and 10 tokens (prompts of 10) in batches of 2: as asked, [10, 1] and [1, 10] run 20 steps;
    sorted by true length, [1, 1] and [10, 10] run 11; the hint run's budgets (5, 1, 1, 5) sort the same way. Cut every
    4 steps with the unfinished rows requeued in front: 4 + 4 + 4 + 4 + 2 = 18 steps, prefilling again 10 + 4, 10 + 8,
    10 + 4 and 10 + 8 tokens (64, 16 a row)."""
    run = _run_dir(tmp_path / "run", [("a", True, 10), ("b", True, 1), ("c", False, 1), ("d", True, 10)])
    hint = tmp_path / "hint"
    hint.mkdir()
    (hint / "rows.jsonl").write_text("".join(json.dumps({"id": i, "correct": True, "output_tokens": b, "prompt_tokens": 10,
                                                         "method": "budget", "budget": b}) + "\n"
                                             for i, b in zip("abcd", (5, 1, 1, 5))))
    out = tmp_path / "waste.json"
    subprocess.run([sys.executable, str(REPO / "bench" / "static_batch_waste.py"), "--runs", run, "--hint-run", hint, "--batch", "2",
                    "--chunk", "4", "--segments", "4", "--out", out], check=True, capture_output=True, cwd=REPO)
    entry = json.loads(out.read_text())["runs"][0]
    assert entry["steps_in_order"] == 20 and entry["busy_share_in_order"] == round(22 / 40, 3)
    assert entry["by_expected_length"] == entry["by_actual_length"] == 0.55
    assert entry["segmented"]["4"] == {"steps": 0.9, "prefilled_again_per_row": 16.0}
