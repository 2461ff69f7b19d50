"""Training examples from budget records, the held-out split every estimator shares, and the
fingerprint that ties a trained estimator to the examples it saw.

A record becomes an ``Example`` (id, question, budget). Feasible records bring their searched
budget. Infeasible records (the vanilla answer was wrong, so no budget was searched) are left out
by default; with ``include_infeasible=True`` they bring their vanilla output tokens instead: the
length the model spends unconstrained, an upper bound that teaches "hard question, long budget"
rather than inventing a searched budget that does not exist.

A bad record raises ``BadRowError`` (``path:line: field 'name': reason``) or, with
``skip_bad=True``, is logged, skipped and kept in the result's ``skipped`` tuple.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from data_builder.records import record_files
from data_builder.rows import BadRowError, short

logger = logging.getLogger(__name__)

HELD_OUT_SALT = "tale-held-out"  # the split between training and evaluation
VALIDATION_SALT = "tale-validation"  # the split inside training, for early stopping
CALIBRATION_SALT = "tale-calibration"  # the split inside training, for conformal calibration


@dataclass(frozen=True)
class Example:
    """One question with the budget an estimator should predict for it."""

    id: str
    question: str
    budget: int  # the searched budget, or the vanilla output tokens of an included infeasible record
    feasible: bool = True


@dataclass(frozen=True)
class ExampleConfig:
    """How records become examples."""

    include_infeasible: bool = False  # True: infeasible records count, with their vanilla tokens as budget
    skip_bad: bool = False  # True: log and skip bad records instead of stopping at the first
    held_out_fraction: float = 0.2  # share of ids (by hash) kept out of training, for evaluation
    calibration_fraction: float = 0.0  # share of the remaining ids (by hash) kept out of training to calibrate budgets

    def __post_init__(self) -> None:
        if not 0 <= self.held_out_fraction < 1:
            raise ValueError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        if not 0 <= self.calibration_fraction < 1:
            raise ValueError(f"calibration_fraction must be in [0, 1), got {self.calibration_fraction}")


class Examples(list[Example]):
    """``load_examples``' result: the examples, plus what it left out and why."""

    def __init__(
        self, examples: Iterable[Example] = (), skipped: Sequence[BadRowError] = (), infeasible_left_out: int = 0
    ) -> None:
        super().__init__(examples)
        self.skipped = tuple(skipped)  # bad records skipped (skip_bad=True only)
        self.infeasible_left_out = infeasible_left_out  # infeasible records not used


@dataclass(frozen=True)
class Split:
    """Training and held-out examples, divided by a hash of the id."""

    train: list[Example]
    held_out: list[Example]


def load_examples(directories: Path | Sequence[Path], config: ExampleConfig = ExampleConfig()) -> Examples:
    """The examples of every ``records-*.jsonl`` file in ``directories``, in file order.

    An id seen twice (in one file or across directories) is a bad record: the second one names
    where the first was.
    """
    if isinstance(directories, (str, Path)):
        directories = [Path(directories)]
    examples: list[Example] = []
    skipped: list[BadRowError] = []
    infeasible = 0
    seen: dict[str, str] = {}
    for directory in directories:
        for path in record_files(Path(directory)):
            for number, record in _numbered_records(path):
                try:
                    example = _example(record, str(path), number, config.include_infeasible)
                    if example is None:
                        infeasible += 1
                        continue
                    if example.id in seen:
                        raise BadRowError(str(path), number, "id", f"duplicate id {example.id!r}, first at {seen[example.id]}")
                    seen[example.id] = f"{path}:{number}"
                    examples.append(example)
                except BadRowError as error:
                    if not config.skip_bad:
                        raise
                    logger.warning("skipping bad record: %s", error)
                    skipped.append(error)
    if infeasible:
        logger.info("left out %d infeasible records (include_infeasible=False)", infeasible)
    return Examples(examples, skipped, infeasible)


def _numbered_records(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON or the BadRowError of an unparsable line); blank lines left out.

    Like ``data_builder.records.read_records``, a last line without its newline is an interrupted
    write and is ignored.
    """
    with open(path, encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if not line.endswith("\n"):
                return
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as error:
                yield number, BadRowError(str(path), number, None, f"not valid JSON ({error.msg})")


def _example(record: Any, path: str, line: int, include_infeasible: bool) -> Example | None:
    """The example of one record, None for an infeasible record that is left out."""

    def bad(field: str | None, reason: str) -> BadRowError:
        return BadRowError(path, line, field, reason)

    if isinstance(record, BadRowError):
        raise record
    if not isinstance(record, dict):
        raise bad(None, f"expected a JSON object, got {type(record).__name__}")
    record_id = record.get("id")
    if not isinstance(record_id, str) or not record_id:
        raise bad("id", f"expected a non-empty string, got {short(record_id)}")
    feasible = record.get("feasible")
    if not isinstance(feasible, bool):
        raise bad("feasible", f"expected true or false, got {short(feasible)}")
    if not feasible and not include_infeasible:
        return None
    question = record.get("question")
    if not isinstance(question, str) or not question.strip():
        raise bad("question", f"expected a non-empty string, got {short(question)}")
    field = "budget" if feasible else "vanilla_tokens"
    budget = _positive_int(record.get(field))
    if budget is None:
        raise bad(field, f"expected a positive integer, got {short(record.get(field))}")
    return Example(record_id, question.strip(), budget, feasible)


def _positive_int(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, float) and not value.is_integer():
        return None
    return int(value) if value > 0 else None


def id_unit(example_id: str, salt: str) -> float:
    """A number in [0, 1) fixed by the id alone: no dependence on order, shards or --limit."""
    digest = hashlib.sha256(f"{salt}\n{example_id}".encode()).hexdigest()
    return int(digest[:13], 16) / 16**13


def split_by_id(examples: Sequence[Example], fraction: float, salt: str = HELD_OUT_SALT) -> Split:
    """Examples whose id hashes below ``fraction`` go to ``held_out``, the rest to ``train``.

    Every estimator trained and evaluated through this split sees the same held-out questions,
    however the records are ordered or sharded.
    """
    if not 0 <= fraction < 1:
        raise ValueError(f"fraction must be in [0, 1), got {fraction}")
    train: list[Example] = []
    held_out: list[Example] = []
    for example in examples:
        (held_out if id_unit(example.id, salt) < fraction else train).append(example)
    return Split(train, held_out)


def three_way_split(examples: Sequence[Example], held_out_fraction: float, calibration_fraction: float
                    ) -> tuple[list[Example], list[Example], list[Example]]:
    """(train, calibration, held_out), disjoint by problem id: ``held_out`` as ``split_by_id``, then
    ``calibration_fraction`` of the rest (by another hash) for calibration, and the rest to train on.
    Only feasible examples calibrate: an infeasible record has no searched budget to cover."""
    split = split_by_id(examples, held_out_fraction)
    inner = split_by_id(split.train, calibration_fraction, CALIBRATION_SALT)
    return inner.train, [e for e in inner.held_out if e.feasible], split.held_out


def fingerprint(examples: Iterable[Example]) -> str:
    """sha256 over the sorted (id, budget) pairs: equal iff two trainings saw the same targets."""
    digest = hashlib.sha256()
    for example_id, budget in sorted((e.id, e.budget) for e in examples):
        digest.update(f"{example_id}\t{budget}\n".encode())
    return digest.hexdigest()
