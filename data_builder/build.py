"""The record-building job: load problems, take this shard's slice, search budgets, append records.

Rerunning the same command resumes: finished ids are skipped. A run whose identity (model,
backend, prompt version, search settings, data set, shard) differs from the one already in the
output directory is refused rather than mixed in.
"""

from __future__ import annotations

import json
import logging
import statistics
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_builder.record import RECORD_FORMAT, BudgetRecord
from data_builder.records import (
    RecordWriter,
    Shard,
    check_record_format,
    read_records,
    record_files,
    shard_meta,
    to_record,
    write_meta,
)
from data_builder.reference import SEARCH_NAMES, NoSolutionError, Style, reference_record
from data_builder.run_dir import RunMismatchError, check_identity
from data_builder.search import SearchConfig, search_budgets
from data_builder.sources import Problem, load_problems
from reasoner.backends import Backend, check_engine
from reasoner.errors import OutputExistsError
from reasoner.prompts import PROMPT_VERSION

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class BuildConfig:
    """One record-building run."""

    dataset: str  # KIND[:PATH], as for load_problems
    out: Path  # the records directory
    model: str = "default"
    backend: str = "hf"
    search: SearchConfig = field(default_factory=SearchConfig)
    limit: int | None = None  # problems before sharding
    seed: int | None = None  # shuffle before limit; None keeps file order
    split: str = "train"  # for hub data sets
    shard: Shard = field(default_factory=Shard)
    pool: int = 16  # questions in flight; each round is one batched call over them
    temperature: float = 0.0  # the backend's sampling temperature (0: greedy): it changes answers, so resumes must match
    sampling_seed: int = 0  # the backend's sampling seed; part of the identity only when sampling (temperature > 0)
    reference: Style | None = None  # no search: the data set's worked solutions in this style (data_builder.reference)

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the records already written."""
        return {
            "dataset": self.dataset,
            "split": self.split,
            "seed": self.seed,
            "model": self.model,
            "backend": self.backend,
            "temperature": self.temperature,
            "prompt_version": PROMPT_VERSION,
            "search": SEARCH_NAMES[self.reference] if self.reference else asdict(self.search),
            "shard": asdict(self.shard),
            **({"sampling_seed": self.sampling_seed} if self.temperature > 0 else {}),
        }


def in_shard(problem_id: str, shard: Shard) -> bool:
    """A deterministic slice by id hash, so shards do not depend on order or on --limit."""
    return shard.holds(problem_id)


def build_records(
    config: BuildConfig,
    backend: Backend | None,
    problems: Sequence[Problem] | None = None,
    *,
    on_record: Callable[[BudgetRecord], None] | None = None,
    on_round: Callable[[int, int], None] | None = None,
    count_tokens: Callable[[str], int] | None = None,
) -> Path:
    """Run (or resume) the search for this shard; returns the records file.

    With ``config.reference`` no backend is asked: ``count_tokens`` (the reasoner's token count)
    measures each worked solution instead."""
    if problems is None:
        problems = load_problems(config.dataset, limit=config.limit, seed=config.seed, split=config.split)
    mine = [p for p in problems if in_shard(p.id, config.shard)]
    if config.reference:
        if count_tokens is None:
            raise ValueError("reference records need count_tokens, the reasoner's token count")
        if missing := [p for p in mine if not p.solution.strip()]:
            raise NoSolutionError(f"{config.dataset}: {len(missing)} of {len(mine)} problems have no worked solution "
                                  f"(first: {missing[0].id}); reference records need a data set that ships them (gsm8k)")
    elif backend is None:
        raise ValueError("the budget search needs a backend")
    else:
        check_engine(config.backend, backend)
    config.out.mkdir(parents=True, exist_ok=True)
    meta_path = config.shard.meta_path(config.out)
    identity = config.identity()
    check_record_format(meta_path)
    check_identity(meta_path, identity)
    write_meta(meta_path, {"identity": identity, "record_format": RECORD_FORMAT, "limit": config.limit,
                           "pool": config.pool, "problems": len(mine)})
    run = {"model": config.model, "backend": config.backend, "prompt_version": PROMPT_VERSION,
           "search": SEARCH_NAMES[config.reference] if config.reference else config.search.mode, "seed": config.seed}
    path = config.shard.records_path(config.out)
    with RecordWriter(path) as writer:
        todo = [p for p in mine if p.id not in writer.done]
        logger.info("%d problems in shard %s, %d already done", len(mine), config.shard.stem(), len(mine) - len(todo))
        if config.reference:
            records = (reference_record(p, count_tokens, config.reference, **run) for p in todo)
        else:
            records = (to_record(r, **run) for r in search_budgets(todo, backend, config.search, pool=config.pool, on_round=on_round))
        for record in records:
            writer.write(record)
            if on_record:
                on_record(record)
    return path


def summarize(records: Sequence[BudgetRecord]) -> dict[str, float]:
    """Feasible share, searched budget against vanilla tokens, and search cost per question."""
    n = len(records)
    if n == 0:
        return {"questions": 0}
    feasible = [r for r in records if r.feasible]
    summary = {
        "questions": n,
        "feasible_share": len(feasible) / n,
        "calls_per_question": sum(r.calls for r in records) / n,
        "tokens_per_question": sum(r.tokens_spent for r in records) / n,
    }
    if feasible:
        summary["mean_budget"] = statistics.fmean(r.budget for r in feasible if r.budget is not None)
        vanilla = [r.vanilla_tokens for r in feasible if r.vanilla_tokens is not None]
        if vanilla:  # reference records have no vanilla answer
            summary["mean_vanilla_tokens_feasible"] = statistics.fmean(vanilla)
    return summary


def merge_shards(directories: Sequence[Path], out: Path) -> Path:
    """Join shard records into one file, refusing duplicates and runs that do not match."""
    identity: dict[str, Any] | None = None
    seen: dict[str, Path] = {}
    merged: list[BudgetRecord] = []
    for directory in directories:
        for path in record_files(directory):
            meta = json.loads(shard_meta(path).read_text())
            mine = {k: v for k, v in meta["identity"].items() if k != "shard"}
            if identity is None:
                identity = mine
            elif mine != identity:
                diff = sorted(k for k in mine if mine[k] != identity.get(k))
                raise RunMismatchError(f"{path} comes from a different run (differs in {', '.join(diff)})")
            for record in read_records(path):
                if record.id in seen:
                    raise ValueError(f"duplicate record {record.id} in {path} and {seen[record.id]}")
                seen[record.id] = path
                merged.append(record)
    assert identity is not None
    out.mkdir(parents=True, exist_ok=True)
    merged.sort(key=lambda r: r.id)
    target = Shard().records_path(out)
    if target.exists():
        raise OutputExistsError(f"{target} exists; merge into an empty directory")
    with RecordWriter(target) as writer:
        for record in merged:
            writer.write(record)
    write_meta(Shard().meta_path(out), {"identity": {**identity, "shard": asdict(Shard())}, "record_format": RECORD_FORMAT,
                                        "merged_from": [str(d) for d in directories], "problems": len(merged)})
    return target
