"""Answer grading, driven by tests/data/grading_cases.jsonl."""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from reasoner.grading import Graded, extract_answer, grade, is_correct

CASES_FILE = Path(__file__).parent / "data" / "grading_cases.jsonl"
CASES = [json.loads(line) for line in CASES_FILE.read_text(encoding="utf-8").splitlines() if line.strip()]


def test_cases_file_is_well_formed() -> None:
    assert len(CASES) >= 70
    notes = [case["note"] for case in CASES]
    assert len(set(notes)) == len(notes), "notes are the test ids, so they must be unique"
    for case in CASES:
        assert set(case) == {"text", "gold", "kind", "predicted", "correct", "note"}
        assert case["kind"] in ("cloze", "choice")


@pytest.mark.parametrize("case", CASES, ids=[case["note"] for case in CASES])
def test_case(case: dict) -> None:
    assert extract_answer(case["text"], case["kind"]) == case["predicted"]
    assert grade(case["text"], case["gold"], case["kind"]) == Graded(case["predicted"], case["correct"])


def test_grade_from_worker_threads_matches_main_thread() -> None:
    # math_verify's signal-based timeouts raise outside the main thread; grading must not.
    with ThreadPoolExecutor(max_workers=8) as pool:
        graded = list(pool.map(lambda c: grade(c["text"], c["gold"], c["kind"]), CASES * 3))
    assert graded == [Graded(c["predicted"], c["correct"]) for c in CASES * 3]


@pytest.mark.parametrize("kind", ["cloze", "choice"])
def test_none_is_never_correct(kind: str) -> None:
    assert is_correct(None, "18", kind) is False
    assert is_correct(None, "", kind) is False


def test_empty_prediction_is_not_correct_against_empty_gold() -> None:
    assert is_correct("", "", "cloze") is False
    assert is_correct("", "", "choice") is False


def test_unknown_kind_raises() -> None:
    with pytest.raises(ValueError, match="kind"):
        extract_answer("Answer: [[18]]", "open")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        is_correct("18", "18", "open")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        is_correct(None, "18", "open")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="kind"):
        grade("Answer: [[18]]", "18", "open")  # type: ignore[arg-type]


def test_math_verify_failure_counts_as_wrong(monkeypatch: pytest.MonkeyPatch) -> None:
    import math_verify
    from math_verify.errors import TimeoutException

    def timing_out(*args: object, **kwargs: object) -> bool:
        raise TimeoutException("Operation timed out!")  # a BaseException, not an Exception

    monkeypatch.setattr(math_verify, "verify", timing_out)
    assert is_correct("2\\sqrt{2}", "\\sqrt{8}", "cloze") is False
    # Plain numbers never reach math_verify.
    assert is_correct("48.00", "48", "cloze") is True


def test_graded_is_frozen() -> None:
    graded = grade("Answer: [[18]]", "18", "cloze")
    with pytest.raises(dataclasses.FrozenInstanceError):
        graded.correct = False  # type: ignore[misc]
