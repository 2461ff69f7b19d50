"""Problem sources: one ``Problem`` record and a loader per data set."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

from reasoner.prompts import Kind, Language


@dataclass(frozen=True)
class Problem:
    """One question with its gold answer."""

    id: str  # stable: derived from source and question (``problem_id``)
    question: str
    gold: str  # the gold answer as text: a number for cloze, a letter for choice
    kind: Kind = "cloze"
    options: tuple[str, ...] = ()  # single-choice options, in letter order
    source: str = ""  # gsm8k, gsm8k_zero, mathbench, gsm_symbolic, jsonl
    language: Language = "en"


def problem_id(source: str, question: str) -> str:
    digest = hashlib.sha256(f"{source}\n{question.strip()}".encode()).hexdigest()
    return f"{source}-{digest[:16]}"
