"""Budget records on disk: JSONL shards of ``BudgetRecord`` lines that ``datasets`` reads, a metadata
file per shard (which states the record format), and crash-safe appending so a killed job resumes
where it stopped."""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from data_builder.record import RECORD_FORMAT, BudgetRecord, RecordError
from data_builder.run_dir import write_meta  # noqa: F401  (re-exported: the meta writer of every run directory)
from data_builder.search import SearchResult
from data_builder.sources import Problem
from reasoner.errors import ConfigError, MissingInputError


@dataclass(frozen=True)
class Shard:
    """Which slice of the problems a run takes: ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ConfigError(f"shard must be I/N with 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from None
        return cls(index, count)

    def holds(self, problem_id: str) -> bool:
        """A deterministic slice by id hash, so shards do not depend on order or on --limit."""
        return int(hashlib.sha256(problem_id.encode()).hexdigest()[:12], 16) % self.count == self.index

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"

    def stem(self) -> str:
        return f"{self.index:05d}-of-{self.count:05d}"

    def records_path(self, out: Path) -> Path:
        return out / f"records-{self.stem()}.jsonl"

    def meta_path(self, out: Path) -> Path:
        return out / f"meta-{self.stem()}.json"


def problem_fields(p: Problem) -> dict[str, Any]:
    """A record's leading fields: the problem it answers (its worked solution is not recorded)."""
    return {"id": p.id, "source": p.source, "question": p.question, "gold": p.gold, "kind": p.kind,
            "options": tuple(p.options), "language": p.language}


def to_record(result: SearchResult, **run: Any) -> BudgetRecord:
    """The record of one search: the quadruple, the vanilla answer, the trace and the run identity
    (``run``: model, backend, prompt_version, search, seed)."""
    return BudgetRecord(
        **problem_fields(result.problem),
        feasible=result.feasible,
        budget=result.budget,
        reasoning=result.reasoning,
        predicted=result.predicted,
        vanilla_text=result.vanilla_text,
        vanilla_tokens=result.vanilla_tokens,
        vanilla_correct=result.vanilla_correct,
        trace=result.trace,
        calls=result.calls,
        tokens_spent=result.tokens_spent,
        **run,
    )


def shard_meta(records_path: Path) -> Path | None:
    """The meta file beside a shard's ``records-STEM.jsonl`` (``meta-STEM.json``); None for other names."""
    name = records_path.name
    if not (name.startswith("records-") and name.endswith(".jsonl")):
        return None
    return records_path.with_name(f"meta-{name.removeprefix('records-').removesuffix('.jsonl')}.json")


def check_record_format(meta: Path | None) -> None:
    """Refuse a shard whose meta file states another record format. A meta written before formats
    were numbered states none: its records are format 1 if they pass ``BudgetRecord.from_json``."""
    if meta is None or not meta.exists():
        return
    try:
        found = json.loads(meta.read_text()).get("record_format", RECORD_FORMAT)
    except (json.JSONDecodeError, AttributeError):
        raise RecordError(str(meta), None, None, "not a JSON object") from None
    if found != RECORD_FORMAT:
        raise RecordError(str(meta), None, None, f"record format {found!r} is not supported: this version reads "
                          f"format {RECORD_FORMAT}; rebuild the records with it")


def json_lines(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, text) of each complete, non-blank line; a last line without its newline is an
    interrupted write (the writer drops it on resume) and is left out."""
    with open(path, encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if not line.endswith("\n"):
                return
            if line.strip():
                yield number, line


def _parsed(path: Path, number: int, line: str) -> Any:
    try:
        return json.loads(line)
    except json.JSONDecodeError as error:
        raise RecordError(str(path), number, None, f"not valid JSON ({error.msg})") from None


def numbered_records(path: Path) -> Iterator[tuple[int, BudgetRecord | RecordError]]:
    """(line number, the record or why that line is not one) for a caller that skips bad lines; a
    shard of another record format is refused (``RecordError``) before any line."""
    check_record_format(shard_meta(path))
    for number, line in json_lines(path):
        try:
            record: BudgetRecord | RecordError = BudgetRecord.from_json(_parsed(path, number, line), str(path), number)
        except RecordError as error:
            record = error
        yield number, record


def read_records(path: Path) -> Iterator[BudgetRecord]:
    """The records of one JSONL file; the first bad line raises ``RecordError``."""
    for _, record in numbered_records(path):
        if isinstance(record, RecordError):
            raise record
        yield record


def read_objects(path: Path) -> Iterator[dict[str, Any]]:
    """The JSON objects of a file ``JsonlWriter`` wrote, each with a string ``id`` (not budget records:
    those are ``read_records``)."""
    for number, line in json_lines(path):
        obj = _parsed(path, number, line)
        if not isinstance(obj, dict) or not isinstance(obj.get("id"), str):
            raise RecordError(str(path), number, "id", "missing or not a string")
        yield obj


def record_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("records-*.jsonl"))
    if not files:
        raise MissingInputError(f"no records-*.jsonl files in {directory}")
    return files


def load_records(directory: Path) -> list[BudgetRecord]:
    """Every record of every shard in ``directory``."""
    return [r for path in record_files(directory) for r in read_records(path)]


W = TypeVar("W", bound="JsonlWriter")


class JsonlWriter:
    """Appends JSON objects with a string ``id`` one at a time, each flushed and synced before the next.

    Opening an existing file first cuts off a partial last line, so after a crash at any moment
    the file holds exactly the objects that were fully written; ``done`` holds their ids.
    """

    def __init__(self, path: Path, ids: Callable[[Path], Iterable[str]] | None = None) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if path.exists():
            _drop_partial_line(path)
            self.done = set(ids(path) if ids else (obj["id"] for obj in read_objects(path)))
        self._file = open(path, "a", encoding="utf-8")

    def append(self, obj: Mapping[str, Any]) -> None:
        if obj["id"] in self.done:
            raise ValueError(f"record {obj['id']} is already in {self.path}")
        self._file.write(json.dumps(obj, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.add(obj["id"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self: W) -> W:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RecordWriter(JsonlWriter):
    """A shard's records file, appended to record by record; on resume the records already there are
    read, so checked, first."""

    def __init__(self, path: Path) -> None:
        super().__init__(path, ids=lambda p: (r.id for r in read_records(p)))

    def write(self, record: BudgetRecord) -> None:
        self.append(record.to_json())


def _drop_partial_line(path: Path) -> None:
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)
