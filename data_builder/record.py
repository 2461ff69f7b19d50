"""The budget record: one question, the budget searched for it, the output under that budget, the
vanilla answer, the search trace and the run that made it (docs/design.md, "Budget records").

On disk a record is one flat JSON line (``to_json``), so ``datasets.load_dataset("json", ...)``
reads a records directory as it is; ``from_json`` checks every field on the way back and names the
file, line and field of the first that is wrong. ``RECORD_FORMAT`` numbers the layout: each shard's
meta file states it, and a reader refuses a format it does not know.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import Field, asdict, dataclass, fields
from typing import Any, get_args

from data_builder.rows import BadRowError, short
from data_builder.search import Round
from reasoner.prompts import Kind, Language

RECORD_FORMAT = 1  # the layout below; a change of a field's name, type or meaning takes the next number

SearchRound = Round  # one step of the trace: the search's own round, recorded as it is


class RecordError(BadRowError):
    """A budget record that cannot be read: ``path:line: field 'name': reason`` (no line when the
    whole file is refused, as for a meta file of another record format)."""


@dataclass(frozen=True)
class BudgetRecord:
    """One line of a ``records-*.jsonl`` file; the fields in the order they are written."""

    id: str  # the problem's id (``data_builder.sources.problem_id``)
    source: str
    question: str
    gold: str
    kind: Kind
    options: tuple[str, ...]
    language: Language  # the problem ends here (its worked solution is not recorded)
    feasible: bool  # the vanilla answer was correct, so some budget works
    budget: int | None  # the searched budget beta*; None when infeasible
    reasoning: str | None  # the output under beta* (the vanilla output when no smaller budget held)
    predicted: str | None  # the answer extracted from ``reasoning``
    vanilla_text: str | None  # the vanilla chain-of-thought answer; None in reference records
    vanilla_tokens: int | None
    vanilla_correct: bool | None
    trace: tuple[SearchRound, ...]  # every call, the vanilla one (budget None) first
    calls: int  # calls the search made (0 for a reference record)
    tokens_spent: int  # prompt plus output tokens over the trace
    model: str
    backend: str  # the engine's identity: hf, openai or ort:PRECISION
    prompt_version: str
    search: str  # halving, elastic, bisect; reference or equations for records from worked solutions
    seed: int | None

    def to_json(self) -> dict[str, Any]:
        """The record's JSON object, keys in field order (the line ``RecordWriter`` writes)."""
        data = {f.name: getattr(self, f.name) for f in fields(self)}
        data["options"] = list(self.options)
        data["trace"] = [asdict(step) for step in self.trace]
        return data

    @classmethod
    def from_json(cls, obj: Any, path: str = "<record>", line: int | None = None) -> BudgetRecord:
        """The record of a JSON object, every field checked; ``RecordError`` names ``path:line`` and the
        first bad field: missing, of the wrong type, or unknown to this record format."""

        def bad(field: str | None, reason: str) -> RecordError:
            return RecordError(str(path), line, field, reason)

        values = _checked(obj, _RECORD_FIELDS, "", bad)
        trace = values["trace"]
        if not isinstance(trace, list) or not trace:
            raise bad("trace", f"expected a non-empty list of rounds, got {short(trace)}")
        values["trace"] = tuple(SearchRound(**_checked(step, _ROUND_FIELDS, f"trace[{i}].", bad))
                                for i, step in enumerate(trace))
        values["options"] = tuple(values["options"])
        return cls(**values)


def _integer(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _one_of(choices: tuple[str, ...]) -> tuple[Callable[[Any], bool], str]:
    return (lambda v: v in choices), " or ".join(map(repr, choices))


# A field's annotation (a string, under ``from __future__ import annotations``) -> its check and
# what the check wants, for the message.
_CHECKS: dict[str, tuple[Callable[[Any], bool], str]] = {
    "str": (lambda v: isinstance(v, str), "a string"),
    "str | None": (lambda v: v is None or isinstance(v, str), "a string or null"),
    "int": (_integer, "an integer"),
    "int | None": (lambda v: v is None or _integer(v), "an integer or null"),
    "bool": (lambda v: isinstance(v, bool), "true or false"),
    "bool | None": (lambda v: v is None or isinstance(v, bool), "true, false or null"),
    "tuple[str, ...]": (lambda v: isinstance(v, list) and all(isinstance(x, str) for x in v), "a list of strings"),
    "tuple[SearchRound, ...]": (lambda v: True, "a list of rounds"),  # checked round by round
    "float": (lambda v: isinstance(v, (int, float)) and not isinstance(v, bool), "a number"),
    # ladder records (data_builder.ladder): their rungs and samples are checked one by one
    "tuple[LadderRung, ...]": (lambda v: True, "a list of rungs"),
    "tuple[Sample, ...]": (lambda v: True, "a list of samples"),
    "Kind": _one_of(get_args(Kind)),
    "Language": _one_of(get_args(Language)),
}
_RECORD_FIELDS = fields(BudgetRecord)
_ROUND_FIELDS = fields(SearchRound)


def _checked(obj: Any, spec: tuple[Field, ...], prefix: str,
             bad: Callable[[str | None, str], RecordError]) -> dict[str, Any]:
    """``obj``'s values of the fields in ``spec``, each present and of its type, and nothing else."""
    if not isinstance(obj, dict):
        raise bad(prefix.rstrip(".") or None, f"expected a JSON object, got {short(obj)}")
    for f in spec:
        if f.name not in obj:
            raise bad(prefix + f.name, f"missing (every record of format {RECORD_FORMAT} has it)")
        check, wanted = _CHECKS[f.type]
        if not check(obj[f.name]):
            raise bad(prefix + f.name, f"expected {wanted}, got {short(obj[f.name])}")
    names = {f.name for f in spec}
    if unknown := [k for k in obj if k not in names]:
        raise bad(prefix + unknown[0], f"not a field of record format {RECORD_FORMAT}")
    return dict(obj)
