"""Budget records on disk: JSONL shards that ``datasets`` reads, a metadata file per shard, and
crash-safe appending so a killed job resumes where it stopped."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_builder.search import SearchResult
from data_builder.sources import Problem


@dataclass(frozen=True)
class Shard:
    """Which slice of the problems a run takes: ``index`` of ``count`` (0-based)."""

    index: int = 0
    count: int = 1

    def __post_init__(self) -> None:
        if not 0 <= self.index < self.count:
            raise ValueError(f"shard must be I/N with 0 <= I < N, got {self.index}/{self.count}")

    @classmethod
    def parse(cls, text: str) -> Shard:
        try:
            index, count = (int(x) for x in text.split("/"))
        except ValueError:
            raise ValueError(f"shard must look like I/N (e.g. 0/4), got {text!r}") from None
        return cls(index, count)

    def stem(self) -> str:
        return f"{self.index:05d}-of-{self.count:05d}"

    def records_path(self, out: Path) -> Path:
        return out / f"records-{self.stem()}.jsonl"

    def meta_path(self, out: Path) -> Path:
        return out / f"meta-{self.stem()}.json"


def problem_fields(p: Problem) -> dict[str, Any]:
    """A record's leading fields: the problem it answers (its worked solution is not recorded)."""
    return {"id": p.id, "source": p.source, "question": p.question, "gold": p.gold, "kind": p.kind,
            "options": list(p.options), "language": p.language}


def to_record(result: SearchResult, **run: Any) -> dict[str, Any]:
    """One flat JSON record: the quadruple, the vanilla answer, the trace and the run identity."""
    return {
        **problem_fields(result.problem),
        "feasible": result.feasible,
        "budget": result.budget,
        "reasoning": result.reasoning,
        "predicted": result.predicted,
        "vanilla_text": result.vanilla_text,
        "vanilla_tokens": result.vanilla_tokens,
        "vanilla_correct": result.vanilla_correct,
        "trace": [asdict(r) for r in result.trace],
        "calls": result.calls,
        "tokens_spent": result.tokens_spent,
        **run,
    }


class RecordError(ValueError):
    """A records file that cannot be read; the message names the file, line and field."""


def read_records(path: Path) -> Iterator[dict[str, Any]]:
    """The complete records of one JSONL file (a truncated last line, left by a crash, is skipped)."""
    with open(path, encoding="utf-8") as source:
        for number, line in enumerate(source, start=1):
            if not line.endswith("\n"):
                return  # an interrupted write; the writer drops it on resume
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as error:
                raise RecordError(f"{path}:{number}: not valid JSON ({error.msg})") from None
            if not isinstance(record, dict) or not isinstance(record.get("id"), str):
                raise RecordError(f"{path}:{number}: field 'id': missing or not a string")
            yield record


def record_files(directory: Path) -> list[Path]:
    files = sorted(directory.glob("records-*.jsonl"))
    if not files:
        raise FileNotFoundError(f"no records-*.jsonl files in {directory}")
    return files


def load_records(directory: Path) -> list[dict[str, Any]]:
    """Every record of every shard in ``directory``."""
    return [r for path in record_files(directory) for r in read_records(path)]


class RecordWriter:
    """Appends records one at a time, each flushed and synced before the next.

    Opening an existing file first cuts off a partial last line, so after a crash at any moment
    the file holds exactly the records that were fully written.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        self.done: set[str] = set()
        if path.exists():
            _drop_partial_line(path)
            self.done = {r["id"] for r in read_records(path)}
        self._file = open(path, "a", encoding="utf-8")

    def write(self, record: dict[str, Any]) -> None:
        if record["id"] in self.done:
            raise ValueError(f"record {record['id']} is already in {self.path}")
        self._file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self._file.flush()
        os.fsync(self._file.fileno())
        self.done.add(record["id"])

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _drop_partial_line(path: Path) -> None:
    with open(path, "rb+") as f:
        data = f.read()
        end = data.rfind(b"\n") + 1
        if end != len(data):
            f.truncate(end)


def write_meta(path: Path, meta: dict[str, Any]) -> None:
    """Write atomically: a crash leaves the old file or the new one, never half of one."""
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(meta, indent=2, sort_keys=True) + "\n")
    os.replace(tmp, path)
