"""TALE-PT training sets from budget records, in trl's conversational formats.

SFT rows are ``{"id", "prompt", "completion"}`` and DPO rows ``{"id", "prompt", "chosen", "rejected"}``,
where ``prompt`` is a list of chat messages and each completion is a one-message assistant list, so
trl renders both through the model's chat template and puts the loss on the completion only.

Three prompt modes:

- ``budget`` (budget-conditioned, the default): the budget-aware prompt with the searched budget
  beta* injected; at inference a budget predictor supplies the budget.
- ``hindsight`` (budget-conditioned, relabeled): the budget-aware prompt states the answer's own
  output tokens instead of beta*, so every example keeps to the budget it states (an answer searched
  under beta* is often longer than beta*). SFT also adds each kept record's vanilla answer, when it is
  correct and a different text, with its own token count as the budget: the same question at two
  budgets and two lengths. DPO: the prompt states the chosen answer's tokens.
  With ``slack`` above 1 the prompts state ``ceil(slack x tokens)`` instead, so that a model which
  learns to write what the prompt states keeps under it ("use less than N tokens") at inference.
- ``internalized`` (the paper's TALE-PT): the vanilla prompt without any budget; the model has to
  internalize how long an answer should be.

A record is a ``data_builder.record.BudgetRecord``; this module names only the fields it reads
(``Record``, a Protocol) so that the reasoner never imports the data builder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from typing import TYPE_CHECKING, Any, Literal, Protocol

from reasoner.errors import ConfigError, InputError
from reasoner.prompts import PROMPT_VERSION, Kind, Language, Prompt, reasoning_prompt

if TYPE_CHECKING:
    from datasets import Dataset

logger = logging.getLogger(__name__)

PromptMode = Literal["budget", "hindsight", "internalized"]
PROMPT_MODES: tuple[PromptMode, ...] = ("budget", "hindsight", "internalized")
PairRule = Literal["vanilla", "adherence", "both"]
PAIR_RULES: tuple[PairRule, ...] = ("vanilla", "adherence", "both")

class Step(Protocol):
    """A round of a record's search trace (``data_builder.search.Round``)."""

    @property
    def budget(self) -> int | None: ...
    @property
    def output_tokens(self) -> int: ...
    @property
    def correct(self) -> bool: ...


class Record(Protocol):
    """What training reads of a budget record (``data_builder.record.BudgetRecord``)."""

    @property
    def id(self) -> str: ...
    @property
    def question(self) -> str: ...
    @property
    def kind(self) -> Kind: ...
    @property
    def options(self) -> Sequence[str]: ...
    @property
    def language(self) -> Language: ...
    @property
    def feasible(self) -> bool: ...
    @property
    def budget(self) -> int | None: ...
    @property
    def reasoning(self) -> str | None: ...
    @property
    def vanilla_text(self) -> str | None: ...
    @property
    def vanilla_tokens(self) -> int | None: ...
    @property
    def vanilla_correct(self) -> bool | None: ...
    @property
    def trace(self) -> Sequence[Step]: ...
    @property
    def prompt_version(self) -> str: ...
    def to_json(self) -> dict[str, Any]: ...


class SkipReason(str, Enum):
    """Why a record gave no training example; checked in this order."""

    INFEASIBLE = "infeasible"  # no budget held: the vanilla answer was wrong
    NO_REASONING = "no_reasoning"  # marked feasible, but the budget or its output is missing
    NO_VANILLA = "no_vanilla"  # DPO: no vanilla output to reject
    SAME_AS_VANILLA = "same_as_vanilla"  # DPO: the searched budget's output is the vanilla one
    NO_TOKEN_COUNT = "no_token_count"  # DPO, hindsight: no correct trace round under the budget to count tokens
    NOT_SHORTER = "not_shorter"  # DPO: the budgeted output has no fewer tokens than the vanilla one
    NO_FAR_LONGER = "no_far_longer"  # DPO adherence: no correct answer of the question far over the stated budget


@dataclass(frozen=True)
class Counts:
    """What a builder kept and what it skipped, by reason."""

    kept: int
    skipped: Mapping[SkipReason, int] = field(default_factory=dict)
    examples: int | None = None  # training rows, when not one per kept record (hindsight SFT)

    @property
    def total(self) -> int:
        return self.kept + sum(self.skipped.values())

    def to_json(self) -> dict[str, Any]:
        return {"kept": self.kept, "examples": self.kept if self.examples is None else self.examples,
                "skipped": {r.value: n for r, n in self.skipped.items()}}

    def describe(self) -> str:
        skipped = ", ".join(f"{n} {r.value}" for r, n in sorted(self.skipped.items(), key=lambda x: -x[1]))
        examples = "" if self.examples in (None, self.kept) else f" ({self.examples} examples)"
        return f"{self.kept} of {self.total} records kept{examples}" + (f"; skipped: {skipped}" if skipped else "")


@dataclass(frozen=True)
class TrainingSet:
    """A trl-ready data set and how it was selected."""

    dataset: Dataset
    counts: Counts
    mode: PromptMode


def _prompt(record: Record, budget: int | None) -> Prompt:
    return reasoning_prompt(
        record.question,
        kind=record.kind,
        options=record.options,
        language=record.language,
        method="vanilla" if budget is None else "budget",
        budget=budget,
    )


def stated_budget(tokens: int, slack: float = 1.0) -> int:
    """What a hindsight prompt states for an answer of ``tokens`` output tokens."""
    return math.ceil(tokens * slack - 1e-9)


def training_prompt(record: Record, mode: PromptMode = "budget", slack: float = 1.0) -> Prompt:
    """The prompt of a record's training example: with its searched budget, with its answer's own
    output tokens (hindsight; times ``slack``, rounded up), or vanilla."""
    if mode not in PROMPT_MODES:
        raise ConfigError(f"prompt mode must be one of {PROMPT_MODES}, got {mode!r}")
    if mode == "internalized":
        return _prompt(record, None)
    if mode == "budget":
        return _prompt(record, record.budget)
    if (tokens := chosen_tokens(record)) is None:
        raise InputError(f"record {record.id!r}: no output token count for its answer under the searched budget")
    return _prompt(record, stated_budget(tokens, slack))


def sft_skip_reason(record: Record, mode: PromptMode = "budget") -> SkipReason | None:
    """None when the record makes an SFT example: a feasible budget and the correct output under it
    (hindsight: and that output's token count)."""
    if not record.feasible:
        return SkipReason.INFEASIBLE
    if record.budget is None or record.budget < 1 or not record.reasoning:
        return SkipReason.NO_REASONING
    if mode == "hindsight" and chosen_tokens(record) is None:
        return SkipReason.NO_TOKEN_COUNT
    return None


def chosen_tokens(record: Record) -> int | None:
    """Output tokens of the answer under the searched budget: its correct trace round, or the
    vanilla answer's when the budget is the vanilla token count (no smaller budget held)."""
    budget = record.budget
    for step in record.trace:
        if step.budget is not None and step.budget == budget and step.correct:
            return step.output_tokens
    if budget is not None and budget == record.vanilla_tokens:
        return budget
    return None


def _is_vanilla_answer(record: Record) -> bool:
    """The search's answer is the vanilla round itself (or an identical text)."""
    if record.reasoning == record.vanilla_text:
        return True
    return record.budget == record.vanilla_tokens and not any(
        s.budget is not None and s.budget == record.budget and s.correct for s in record.trace
    )


def dpo_skip_reason(record: Record) -> SkipReason | None:
    """None when the record makes a DPO pair: a correct budgeted output that is shorter than the
    vanilla output it is preferred to."""
    if (reason := sft_skip_reason(record)) is not None:
        return reason
    if not record.vanilla_text or record.vanilla_tokens is None:
        return SkipReason.NO_VANILLA
    if _is_vanilla_answer(record):
        return SkipReason.SAME_AS_VANILLA
    tokens = chosen_tokens(record)
    if tokens is None:
        return SkipReason.NO_TOKEN_COUNT
    if tokens >= record.vanilla_tokens:
        return SkipReason.NOT_SHORTER
    return None


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def _warn_prompt_versions(records: list[Record]) -> None:
    versions = Counter(r.prompt_version for r in records)
    others = {v: n for v, n in versions.items() if v != PROMPT_VERSION}
    if others:
        logger.warning("records from other prompt versions %s are trained with the current prompts (%s)",
                       others, PROMPT_VERSION)


def _second_length(record: Record) -> bool:
    """Hindsight SFT: the vanilla answer makes a second example (correct, counted, another text)."""
    return (bool(record.vanilla_correct) and bool(record.vanilla_text)
            and record.vanilla_tokens is not None and not _is_vanilla_answer(record))


def _build(records: Iterable[Record], mode: PromptMode, skip, examples) -> TrainingSet:
    """``examples(record)``: the training rows (prompt included) of one kept record."""
    from datasets import Dataset

    records = list(records)
    _warn_prompt_versions(records)
    rows, kept, skipped = [], 0, Counter()
    for record in records:
        if (reason := skip(record)) is not None:
            skipped[reason] += 1
            continue
        kept += 1
        rows.extend(examples(record))
    counts = Counts(kept=kept, skipped={r: skipped[r] for r in SkipReason if skipped[r]},
                    examples=None if len(rows) == kept else len(rows))
    logger.info("training set (%s prompts): %s", mode, counts.describe())
    return TrainingSet(dataset=Dataset.from_list(rows), counts=counts, mode=mode)


def build_sft_dataset(records: Iterable[Record], mode: PromptMode = "budget", slack: float = 1.0) -> TrainingSet:
    """Prompt-completion rows: the (budgeted or vanilla) prompt -> the correct output under beta*;
    hindsight adds the vanilla answer under its own token count (id ``ID#vanilla``)."""

    def examples(r: Record) -> list[dict[str, Any]]:
        rows = [{"id": r.id, "prompt": training_prompt(r, mode, slack).messages(), "completion": _assistant(r.reasoning)}]
        if mode == "hindsight" and _second_length(r):
            rows.append({"id": f"{r.id}#vanilla", "prompt": _prompt(r, stated_budget(r.vanilla_tokens, slack)).messages(),
                         "completion": _assistant(r.vanilla_text)})
        return rows

    return _build(records, mode, lambda r: sft_skip_reason(r, mode), examples)


def build_dpo_dataset(records: Iterable[Record], mode: PromptMode = "budget", slack: float = 1.0,
                      pairs: PairRule = "vanilla", over: float = 2.0) -> TrainingSet:
    """Preference rows. ``vanilla`` (the paper's): chosen = the correct, shorter output under beta*,
    rejected = the vanilla output. ``adherence``: ``build_adherence_pairs``. ``both``: the two sets."""
    if pairs not in PAIR_RULES:
        raise ConfigError(f"pair rule must be one of {PAIR_RULES}, got {pairs!r}")
    records = list(records)
    if pairs == "adherence":
        return build_adherence_pairs(records, slack, over)
    paper = _build(records, mode, dpo_skip_reason, lambda r: [{
        "id": r.id, "prompt": training_prompt(r, mode, slack).messages(),
        "chosen": _assistant(r.reasoning), "rejected": _assistant(r.vanilla_text)}])
    if pairs == "vanilla":
        return paper
    from datasets import concatenate_datasets

    adherence = build_adherence_pairs(records, slack, over)
    logger.info("DPO pairs: %d by the vanilla rule, %d by the adherence rule", len(paper.dataset), len(adherence.dataset))
    skipped = Counter(paper.counts.skipped) + Counter(adherence.counts.skipped)
    counts = Counts(kept=paper.counts.kept + adherence.counts.kept, skipped={r: skipped[r] for r in SkipReason if skipped[r]},
                    examples=len(paper.dataset) + len(adherence.dataset))
    return TrainingSet(dataset=concatenate_datasets([paper.dataset, adherence.dataset]), counts=counts, mode=mode)


def correct_answers(record: Record) -> list[tuple[str, int]]:
    """A record's correct answers with their output tokens: the one under beta*, and the vanilla one
    where it is correct and another text."""
    answers = []
    if record.feasible and record.reasoning and (tokens := chosen_tokens(record)) is not None:
        answers.append((record.reasoning, tokens))
    if _second_length(record):
        answers.append((record.vanilla_text, record.vanilla_tokens))
    return answers


def build_adherence_pairs(records: Iterable[Record], slack: float = 1.0, over: float = 2.0) -> TrainingSet:
    """Preference rows that teach keeping to the budget a prompt states, not only brevity: the prompt
    states the answer's own output tokens (times ``slack``, as hindsight SFT), chosen = that answer, and
    rejected = the longest correct answer of the same question (by problem id, from any of ``records``,
    e.g. worked equations, worked solutions and the reasoner's own searched answers) with more than
    ``over`` times the stated budget: right, but far over what the prompt asked."""
    records = list(records)
    answers: dict[str, list[tuple[str, int]]] = {}
    for record in records:
        answers.setdefault(record.id, []).extend(correct_answers(record))

    def rejected(record: Record) -> tuple[str, int] | None:
        budget = stated_budget(chosen_tokens(record), slack)
        return max((a for a in answers[record.id] if a[1] > over * budget), key=lambda a: a[1], default=None)

    def skip(record: Record) -> SkipReason | None:
        if (reason := sft_skip_reason(record, "hindsight")) is not None:
            return reason
        return SkipReason.NO_FAR_LONGER if rejected(record) is None else None

    return _build(records, "hindsight", skip, lambda r: [{
        "id": f"{r.id}#adherence", "prompt": _prompt(r, stated_budget(chosen_tokens(r), slack)).messages(),
        "chosen": _assistant(r.reasoning), "rejected": _assistant(rejected(r)[0])}])


def records_fingerprint(records: Iterable[Record]) -> str:
    """sha256 of the records in canonical JSON (``to_json``, keys sorted), in id order: the same records
    give the same hash whatever their shard layout or order."""
    digest = hashlib.sha256()
    for record in sorted(records, key=lambda r: r.id):
        digest.update(json.dumps(record.to_json(), sort_keys=True, ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()
