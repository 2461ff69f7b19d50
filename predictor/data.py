"""Training examples from budget records, the held-out split every estimator shares, and the
fingerprint that ties a trained estimator to the examples it saw.

A record becomes an ``Example`` (id, question, budget). Feasible records bring their searched
budget. Infeasible records (the vanilla answer was wrong, so no budget was searched) are left out
by default; with ``include_infeasible=True`` they bring their vanilla output tokens instead: the
length the model spends unconstrained, an upper bound that teaches "hard question, long budget"
rather than inventing a searched budget that does not exist.

A bad record (not a valid ``BudgetRecord``, or one without a question or a positive budget) raises
``BadRowError`` (``path:line: field 'name': reason``; ``RecordError`` is one) or, with
``skip_bad=True``, is logged, skipped and kept in the result's ``skipped`` tuple.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from data_builder.record import BudgetRecord
from data_builder.records import numbered_records, record_files
from data_builder.rows import BadRowError, short
from reasoner.errors import ConfigError

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
    exclude_ids: frozenset[str] = frozenset()  # problem ids left out of every split (e.g. the reasoner's own training questions)

    def __post_init__(self) -> None:
        if not 0 <= self.held_out_fraction < 1:
            raise ConfigError(f"held_out_fraction must be in [0, 1), got {self.held_out_fraction}")
        if not 0 <= self.calibration_fraction < 1:
            raise ConfigError(f"calibration_fraction must be in [0, 1), got {self.calibration_fraction}")


class Examples(list[Example]):
    """``load_examples``' result: the examples, plus what it left out and why."""

    def __init__(
        self, examples: Iterable[Example] = (), skipped: Sequence[BadRowError] = (), infeasible_left_out: int = 0,
        excluded: int = 0,
    ) -> None:
        super().__init__(examples)
        self.skipped = tuple(skipped)  # bad records skipped (skip_bad=True only)
        self.infeasible_left_out = infeasible_left_out  # infeasible records not used
        self.excluded = excluded  # records left out because their id is in ``ExampleConfig.exclude_ids``


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
    infeasible = excluded = 0
    seen: dict[str, str] = {}
    for directory in directories:
        for path in record_files(Path(directory)):
            for number, record in numbered_records(path):
                if not isinstance(record, BadRowError) and record.id in config.exclude_ids:
                    excluded += 1
                    continue
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
    if excluded:
        logger.info("left out %d records whose ids are excluded", excluded)
    return Examples(examples, skipped, infeasible, excluded)


def _example(record: BudgetRecord | BadRowError, path: str, line: int, include_infeasible: bool) -> Example | None:
    """The example of one record, None for an infeasible record that is left out."""

    def bad(field: str, reason: str) -> BadRowError:
        return BadRowError(path, line, field, reason)

    if isinstance(record, BadRowError):
        raise record
    if not record.id:
        raise bad("id", f"expected a non-empty string, got {short(record.id)}")
    if not record.feasible and not include_infeasible:
        return None
    if not record.question.strip():
        raise bad("question", f"expected a non-empty string, got {short(record.question)}")
    field = "budget" if record.feasible else "vanilla_tokens"
    budget = record.budget if record.feasible else record.vanilla_tokens
    if budget is None or budget < 1:
        raise bad(field, f"expected a positive integer, got {short(budget)}")
    return Example(record.id, record.question.strip(), budget, record.feasible)


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
