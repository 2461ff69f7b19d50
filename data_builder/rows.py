"""Reading data rows: JSONL lines, field checks, and the ``BadRowError`` that names a bad row.

The loaders in ``data_builder.sources`` turn rows into problems with the checks here; a check
that fails raises ``FieldError`` (field and reason only) and ``parse_rows`` adds the file and
line, so every message reads ``path:line: field 'name': reason``.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterable, Iterator
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, TypeVar

from reasoner.errors import TaleError
from reasoner.prompts import LETTERS

logger = logging.getLogger(__name__)

Row = dict[str, Any]
T = TypeVar("T")


class BadRowError(TaleError, ValueError):
    """A data row that cannot become a problem: ``path:line: field 'name': reason``."""

    def __init__(self, path: str, line: int | None, field: str | None, reason: str) -> None:
        self.path = path  # the file (or ``hub_id[split]``) as given to the loader
        self.line = line  # 1-based line (or row) number; None when the whole file is refused
        self.field = field  # the offending field; None when the line is not a JSON object
        self.reason = reason
        where = f"field {field!r}: " if field else ""
        super().__init__(f"{path}{'' if line is None else f':{line}'}: {where}{reason}")

    def __reduce__(self) -> tuple[Any, ...]:
        return type(self), (self.path, self.line, self.field, self.reason)


class FieldError(ValueError):
    """A failed field check; ``parse_rows`` adds the file and line to make a ``BadRowError``."""

    def __init__(self, field: str | None, reason: str) -> None:
        super().__init__(reason)
        self.field = field
        self.reason = reason


def read_jsonl(path: Path) -> Iterator[tuple[int, Any]]:
    """(line number, parsed JSON), blank lines left out; an unparsable line yields its error."""
    with path.open("rb") as lines:
        for number, raw in enumerate(lines, start=1):
            try:
                line = raw.decode("utf-8-sig" if number == 1 else "utf-8")
            except UnicodeDecodeError as err:
                yield number, BadRowError(str(path), number, None, f"not UTF-8 text (byte 0x{raw[err.start]:02x} at column {err.start + 1})")
                continue
            if not line.strip():
                continue
            try:
                yield number, json.loads(line)
            except json.JSONDecodeError as err:
                reason = f"invalid JSON: {err.msg} (column {err.colno})"
                yield number, BadRowError(str(path), number, None, reason)


def parse_rows(
    rows: Iterable[tuple[int, Any]], where: str, parse: Callable[[Row], T], skip_bad: bool
) -> tuple[list[T], list[BadRowError]]:
    """``parse`` every row; a bad one raises, or with ``skip_bad`` is logged and returned apart."""
    parsed: list[T] = []
    skipped: list[BadRowError] = []
    for number, row in rows:
        try:
            if isinstance(row, BadRowError):
                raise row
            if not isinstance(row, dict):
                reason = f"expected a JSON object, got {type(row).__name__}"
                raise BadRowError(where, number, None, reason)
            try:
                parsed.append(parse(row))
            except FieldError as err:
                raise BadRowError(where, number, err.field, err.reason) from None
        except BadRowError as err:
            if not skip_bad:
                raise
            logger.warning("skipping bad row: %s", err)
            skipped.append(err)
    return parsed, skipped


def required(row: Row, name: str) -> Any:
    if name not in row or row[name] is None:
        raise FieldError(name, "missing")
    return row[name]


def question_text(row: Row, name: str) -> str:
    value = required(row, name)
    if not isinstance(value, str) or not value.strip():
        raise FieldError(name, f"expected a non-empty string, got {short(value)}")
    return value.strip()


def option_texts(row: Row, name: str) -> tuple[str, ...]:
    value = required(row, name)
    if not isinstance(value, list) or not value:
        raise FieldError(name, f"expected a non-empty list of options, got {short(value)}")
    if len(value) > len(LETTERS):
        raise FieldError(name, f"at most {len(LETTERS)} options are supported, got {len(value)}")
    texts = tuple(v.strip() if isinstance(v, str) else number_text(v) or "" for v in value)
    if not all(texts):
        raise FieldError(name, f"options must be non-empty strings or numbers, got {short(value)}")
    return texts


def answer_text(row: Row, name: str, options: tuple[str, ...] = ()) -> str:
    """The gold answer: an upper-case letter among ``options`` if given, else text or a number."""
    value = required(row, name)
    text = value.strip() if isinstance(value, str) else number_text(value)
    if not text:
        raise FieldError(name, f"expected a non-empty string or a number, got {short(value)}")
    if not options:
        return text
    letters = LETTERS[: len(options)]
    if len(text) != 1 or text.upper() not in letters:
        reason = f"expected a letter in {letters[0]}..{letters[-1]}, got {short(value)}"
        raise FieldError(name, reason)
    return text.upper()


def number_text(value: Any) -> str | None:
    """A number as exact text: ``48.0`` -> ``"48"``, ``1.5`` -> ``"1.5"``; None if not a number.

    Never ``int()``: that would turn a gold of 1.5 into 1.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        return None
    try:
        # repr: the shortest text that reads back as this float, so 0.1 stays 0.1
        number = Decimal(repr(value) if isinstance(value, float) else str(value))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    if number == number.to_integral_value():
        return format(number.to_integral_value(), "f") if number else "0"
    return format(number.normalize(), "f")


def short(value: Any, width: int = 60) -> str:
    """``repr`` cut to ``width`` characters, for error messages."""
    text = repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."
