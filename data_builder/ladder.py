"""Ladder labels: every question asked at a fixed ladder of budgets, K samples per rung, so each
record holds an observed success curve (docs/method.md, "Success curves").

A halving search records one noisy argmin per question; a ladder records the outcome at every rung:
rung 0 is the direct prompt (answer without reasoning), positive rungs are TALE-EP's budget-aware
prompt at that budget, and the top rung ``None`` is vanilla chain of thought. Questions are taken
``pool`` at a time; each rung's prompts (one budget, so similar answer lengths: little padding waste
in ort's static batches) go to the backend in one batched call per sample, and a chunk's records are
written once all its rungs are asked, so a killed build loses at most one chunk.

Sample ``k`` decodes with its own backend, seeded ``sampling_seed + k``; the seed is recorded with
each answer. Vanilla answers that existing search records hold for the same reasoner and settings
can be reused as vanilla samples (``reusable_vanilla``); they keep their own seed and origin.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from data_builder.record import BudgetRecord, RecordError, _checked
from data_builder.records import JsonlWriter, Shard, json_lines, load_records, problem_fields, record_files, write_meta
from data_builder.rows import short
from data_builder.run_dir import RunMismatchError, check_identity
from data_builder.sources import Problem, load_problems
from reasoner.backends import MAX_NEW_TOKENS, Backend, check_engine
from reasoner.errors import MissingInputError, TaleError
from reasoner.grading import grade
from reasoner.prompts import PROMPT_VERSION, Kind, Language, reasoning_prompt

logger = logging.getLogger(__name__)

LADDER_FORMAT = 1  # the layout of LadderRecord; a change of a field's name, type or meaning takes the next number
DIRECT = 0  # the rung that asks for the answer without reasoning
VANILLA = None  # the rung that asks for chain of thought with no budget
EVERY_RUNG = "every rung"  # the label of a backend call that asks all of a sample's rungs at once (ask_ladder's together)
Rung = int | None
DEFAULT_LADDER: tuple[Rung, ...] = (DIRECT, 32, 64, 128, 256, VANILLA)


class LadderError(TaleError, ValueError):
    """A ladder a user wrote that cannot be used (empty, not increasing, unknown rung)."""


def rung_name(rung: Rung) -> str:
    return "vanilla" if rung is VANILLA else "direct" if rung == DIRECT else str(rung)


def parse_ladder(text: str) -> tuple[Rung, ...]:
    """``direct,32,64,128,256,vanilla`` (``0`` also means direct) -> the rungs; refuses an empty
    ladder, a rung that is not a non-negative integer, and rungs that do not strictly increase
    (``vanilla`` can only be last)."""
    parts = [p.strip().lower() for p in text.split(",") if p.strip()]
    if not parts:
        raise LadderError(f"--ladder needs at least one rung, got {text!r}")
    rungs: list[Rung] = []
    for part in parts:
        if part == "vanilla":
            rungs.append(VANILLA)
        elif part == "direct":
            rungs.append(DIRECT)
        elif part.isdigit():
            rungs.append(int(part))
        else:
            raise LadderError(f"--ladder: rung {part!r} is not direct, vanilla or a non-negative integer budget")
    check_ladder(tuple(rungs))
    return tuple(rungs)


def check_ladder(rungs: Sequence[Rung]) -> None:
    if not rungs:
        raise LadderError("--ladder needs at least one rung")
    if VANILLA in rungs[:-1]:
        raise LadderError("--ladder: vanilla is the top rung, it can only come last")
    budgets = [r for r in rungs if r is not VANILLA]
    if any(isinstance(b, bool) or not isinstance(b, int) or b < 0 for b in budgets):
        raise LadderError(f"--ladder: budgets must be non-negative integers, got {list(rungs)}")
    if any(a >= b for a, b in zip(budgets, budgets[1:])):
        raise LadderError(f"--ladder: rungs must strictly increase, got {', '.join(map(rung_name, rungs))}")


@dataclass(frozen=True)
class LadderConfig:
    """What every question is asked."""

    rungs: tuple[Rung, ...] = DEFAULT_LADDER  # 0: direct; N: "use less than N tokens"; None: vanilla CoT (last)
    samples: int = 2  # answers per rung, each from its own sampling seed (needs temperature > 0 when above 1)
    max_new_tokens: int = MAX_NEW_TOKENS  # generation cap of every call

    def __post_init__(self) -> None:
        check_ladder(self.rungs)
        if isinstance(self.samples, bool) or not isinstance(self.samples, int) or self.samples < 1:
            raise LadderError(f"--samples must be a positive integer, got {self.samples!r}")
        if self.max_new_tokens < 1:
            raise LadderError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass(frozen=True)
class Sample:
    """One answer at one rung."""

    seed: int | None  # the sampling seed of the backend that wrote it (None: greedy)
    correct: bool
    output_tokens: int
    prompt_tokens: int
    predicted: str | None
    finish_reason: str  # stop or length
    text: str
    origin: str | None = None  # None: asked by this build; else the records directory it was reused from


@dataclass(frozen=True)
class LadderRung:
    """A rung's budget (0 direct, None vanilla) and its samples."""

    budget: int | None
    samples: tuple[Sample, ...]

    @property
    def success(self) -> float:
        return sum(s.correct for s in self.samples) / len(self.samples)

    @property
    def mean_tokens(self) -> float:
        return sum(s.output_tokens for s in self.samples) / len(self.samples)


@dataclass(frozen=True)
class LadderRecord:
    """One line of a ``ladder-*.jsonl`` file: a problem and its observed success curve."""

    id: str
    source: str
    question: str
    gold: str
    kind: Kind
    options: tuple[str, ...]
    language: Language
    rungs: tuple[LadderRung, ...]  # in ladder order, direct first where asked
    model: str
    backend: str  # the engine's identity: hf, openai or ort:PRECISION
    prompt_version: str
    temperature: float
    max_new_tokens: int

    def rung(self, budget: Rung) -> LadderRung:
        for rung in self.rungs:
            if rung.budget == budget:
                return rung
        raise KeyError(f"{self.id} was not asked at rung {rung_name(budget)}")

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["options"] = list(self.options)
        data["rungs"] = [{"budget": r.budget, "samples": [asdict(s) for s in r.samples]} for r in self.rungs]
        return data

    @classmethod
    def from_json(cls, obj: Any, path: str = "<ladder>", line: int | None = None) -> LadderRecord:
        """The record of a JSON object, every field checked; ``RecordError`` names ``path:line`` and the first bad field."""

        def bad(name: str | None, reason: str) -> RecordError:
            return RecordError(str(path), line, name, reason)

        values = _checked(obj, _LADDER_FIELDS, "", bad)
        rungs = values["rungs"]
        if not isinstance(rungs, list) or not rungs:
            raise bad("rungs", f"expected a non-empty list of rungs, got {short(rungs)}")
        parsed = []
        for i, rung in enumerate(rungs):
            raw = _checked(rung, _RUNG_FIELDS, f"rungs[{i}].", bad)
            if not isinstance(raw["samples"], list) or not raw["samples"]:
                raise bad(f"rungs[{i}].samples", f"expected a non-empty list of samples, got {short(raw['samples'])}")
            samples = tuple(Sample(**_checked(s, _SAMPLE_FIELDS, f"rungs[{i}].samples[{j}].", bad))
                            for j, s in enumerate(raw["samples"]))
            parsed.append(LadderRung(raw["budget"], samples))
        try:
            check_ladder([r.budget for r in parsed])
        except LadderError as error:
            raise bad("rungs", str(error)) from None
        values["rungs"] = tuple(parsed)
        values["options"] = tuple(values["options"])
        return cls(**values)


_LADDER_FIELDS = tuple(f for f in LadderRecord.__dataclass_fields__.values())
_RUNG_FIELDS = tuple(LadderRung.__dataclass_fields__.values())
_SAMPLE_FIELDS = tuple(Sample.__dataclass_fields__.values())


# --- the build ---------------------------------------------------------------------------------


def ladder_prompt(problem: Problem, rung: Rung):
    method = "vanilla" if rung is VANILLA else "direct" if rung == DIRECT else "budget"
    return reasoning_prompt(problem.question, kind=problem.kind, options=problem.options, language=problem.language,
                            method=method, budget=rung if method == "budget" else None)


def ask_ladder(
    problems: Iterable[Problem],
    backends: Sequence[tuple[int | None, Backend]],
    config: LadderConfig,
    *,
    pool: int = 64,
    batch: int | None = None,
    together: bool = False,
    reuse: Mapping[str, Sequence[Sample]] | None = None,
    on_call: Callable[[str, int, int], None] | None = None,
    on_batch: Callable[[str, int, Sequence[Any], float], None] | None = None,
) -> Iterator[tuple[Problem, tuple[LadderRung, ...]]]:
    """Each problem's rungs, ``pool`` problems at a time, each chunk yielded once all its rungs are asked.

    ``backends`` holds one (seed, backend) per sample. ``reuse`` maps a problem id to vanilla samples
    already written elsewhere; they fill the vanilla rung first and only the rest are asked. With ``batch``
    each rung's prompts go to the backend ``batch`` at a time, ordered by expected answer length (the
    question's answers at this rung so far, else at the rung below): for static-batch engines (ort). With
    ``together`` every rung's prompts of a sample go in one call (``EVERY_RUNG``), so an engine that batches
    continuously (vLLM, a server) stays full until the sample's last answer instead of each rung's.
    ``on_call(label, sample, n_prompts)`` is called before each rung's calls (the label is the rung's name), for
    progress display, and ``on_batch(label, sample, generations, seconds)`` after each backend call, for throughput.
    """
    if pool < 1:
        raise ValueError(f"pool must be >= 1, got {pool}")
    if len(backends) != config.samples:
        raise ValueError(f"{config.samples} samples need {config.samples} backends, got {len(backends)}")
    if together and batch is not None:
        raise ValueError("together asks every rung in one call; batch splits calls into static batches: choose one")
    reuse = reuse or {}
    queue = iter(problems)
    while chunk := [p for _, p in zip(range(pool), queue)]:
        answers: dict[tuple[int, Rung], list[Sample]] = {
            (i, rung): list(reuse.get(p.id, ()))[: config.samples] if rung is VANILLA else []
            for rung in config.rungs for i, p in enumerate(chunk)}

        def ask(backend: Backend, seed: int | None, k: int, label: str, asked: list[tuple[int, Rung]]) -> None:
            began = time.perf_counter()
            generations = backend.generate([ladder_prompt(chunk[i], rung) for i, rung in asked], config.max_new_tokens)
            if on_batch:
                on_batch(label, k, generations, time.perf_counter() - began)
            for (i, rung), g in zip(asked, generations, strict=True):
                graded = grade(g.text, chunk[i].gold, chunk[i].kind)
                answers[i, rung].append(Sample(seed, graded.correct, g.output_tokens, g.prompt_tokens, graded.predicted,
                                               g.finish_reason, g.text))

        if together:
            for k, (seed, backend) in enumerate(backends):
                asked = [(i, rung) for rung in config.rungs for i in range(len(chunk)) if len(answers[i, rung]) <= k]
                if asked:
                    if on_call:
                        on_call(EVERY_RUNG, k, len(asked))
                    ask(backend, seed, k, EVERY_RUNG, asked)
        else:
            for rung in config.rungs:
                for k, (seed, backend) in enumerate(backends):
                    waiting = [i for i in range(len(chunk)) if len(answers[i, rung]) <= k]
                    if not waiting:
                        continue
                    if on_call:
                        on_call(rung_name(rung), k, len(waiting))
                    for group in _groups(waiting, lambda i: _expected_length(answers, i, rung, config.rungs), batch):
                        ask(backend, seed, k, rung_name(rung), [(i, rung) for i in group])
        for i, p in enumerate(chunk):
            yield p, tuple(LadderRung(rung, tuple(answers[i, rung])) for rung in config.rungs)


def _expected_length(answers: Mapping[tuple[int, Rung], Sequence[Sample]], i: int, rung: Rung, rungs: Sequence[Rung]) -> float:
    """How long question ``i``'s next answer at ``rung`` will likely be: its answers at this rung so far,
    else at the rung below, else nothing known (0)."""
    for known in (answers.get((i, rung)), answers.get((i, rungs[rungs.index(rung) - 1])) if rungs.index(rung) else None):
        if known:
            return sum(s.output_tokens for s in known) / len(known)
    return 0.0


def _groups(asked: list[int], expected: Callable[[int], float], batch: int | None) -> list[list[int]]:
    """The backend calls for ``asked``: one call, or calls of ``batch`` questions of similar expected answer
    length (a static batch runs until its longest row ends, so mixing short and long answers wastes it)."""
    if batch is None or batch >= len(asked):
        return [asked]
    order = sorted(asked, key=expected)
    return [order[start : start + batch] for start in range(0, len(order), batch)]


def ladder_batching(engine_kind: str, batch_size: int | None) -> dict[str, Any]:
    """How a ladder build hands prompts to an engine: a server or vLLM batches continuously, so every rung of a sample
    goes in one call (``together``); ort and hf run static batches of ``batch_size`` prompts of similar expected
    length (``batch``)."""
    continuous = engine_kind in ("openai", "vllm")
    return {"batch": None if continuous else batch_size, "together": continuous}


@dataclass(frozen=True)
class LadderBuildConfig:
    """One ladder-label run (``tale build --search ladder``)."""

    dataset: str  # KIND[:PATH], as for load_problems
    out: Path  # the ladder directory
    model: str = "default"
    backend: str = "ort:int8"  # the engine's identity, as records name it (EngineOptions.identity)
    ladder: LadderConfig = field(default_factory=LadderConfig)
    limit: int | None = None  # problems before sharding; a larger limit later grows the run (with the same seed)
    seed: int | None = None  # shuffle before limit; None keeps file order
    split: str = "train"  # for hub data sets
    shard: Shard = field(default_factory=Shard)
    pool: int = 64  # questions per chunk: every rung of a chunk is asked before its records are written
    batch: int | None = None  # backend calls of this many prompts of similar expected length (ort's static batches); None: one call
    together: bool = False  # every rung of a sample in one call (continuous batching: vLLM, a server); not with batch
    temperature: float = 0.7  # sampling temperature; 0 (greedy) allows one sample only
    sampling_seed: int = 0  # sample k decodes with seed sampling_seed + k
    reuse: tuple[Path, ...] = ()  # search-record directories whose vanilla answers count as vanilla samples

    def __post_init__(self) -> None:
        if self.temperature < 0:
            raise LadderError(f"temperature must be >= 0, got {self.temperature}")
        if self.temperature == 0 and self.ladder.samples > 1:
            raise LadderError(f"--samples {self.ladder.samples} needs --temperature above 0 (for example 0.7): greedy samples "
                              "of one prompt are all the same; or ask --samples 1")

    @property
    def seeds(self) -> tuple[int | None, ...]:
        if self.temperature == 0:
            return (None,)
        return tuple(self.sampling_seed + k for k in range(self.ladder.samples))

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the records already written (not ``limit``: it may grow)."""
        return {
            "dataset": self.dataset, "split": self.split, "seed": self.seed, "model": self.model, "backend": self.backend,
            "temperature": self.temperature, "sampling_seed": self.sampling_seed, "prompt_version": PROMPT_VERSION,
            "search": "ladder", "ladder": [rung_name(r) for r in self.ladder.rungs], "samples": self.ladder.samples,
            "max_new_tokens": self.ladder.max_new_tokens, "shard": asdict(self.shard),
        }


def ladder_path(out: Path, shard: Shard) -> Path:
    return out / f"ladder-{shard.stem()}.jsonl"


def ladder_meta_path(out: Path, shard: Shard) -> Path:
    return out / f"ladder-meta-{shard.stem()}.json"


def read_ladder(path: Path) -> Iterator[LadderRecord]:
    """The records of one ladder file; the first bad line raises ``RecordError`` naming file, line and field."""
    meta = path.with_name(path.name.replace("ladder-", "ladder-meta-", 1).removesuffix(".jsonl") + ".json")
    if meta.exists():
        found = json.loads(meta.read_text()).get("ladder_format")
        if found != LADDER_FORMAT:
            raise RecordError(str(meta), None, "ladder_format", f"{found!r} is not supported: this version reads {LADDER_FORMAT}")
    for number, line in json_lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as error:
            raise RecordError(str(path), number, None, f"not valid JSON ({error.msg})") from None
        yield LadderRecord.from_json(obj, str(path), number)


def load_ladder(directory: Path) -> list[LadderRecord]:
    """Every ladder record of every shard in ``directory``."""
    files = sorted(Path(directory).glob("ladder-[0-9]*.jsonl"))
    if not files:
        raise MissingInputError(f"no ladder-*.jsonl files in {directory} (made by tale build --search ladder)")
    return [r for path in files for r in read_ladder(path)]


# The identity fields that make a search's vanilla answer a vanilla sample of this ladder.
_REUSE_KEYS = ("model", "backend", "temperature", "prompt_version")


def reusable_vanilla(directories: Sequence[Path], config: LadderBuildConfig) -> dict[str, list[Sample]]:
    """Problem id -> vanilla samples from search records made by the same reasoner with the same
    settings (model, backend, temperature, prompt version, generation cap); a directory of another
    run is refused, naming what differs."""
    want = config.identity()
    found: dict[str, list[Sample]] = {}
    for directory in directories:
        for path in record_files(Path(directory)):
            meta = path.with_name(path.name.replace("records-", "meta-", 1).removesuffix(".jsonl") + ".json")
            identity = json.loads(meta.read_text()).get("identity", {}) if meta.exists() else {}
            recorded = {k: identity.get(k, 0.0 if k == "temperature" else None) for k in _REUSE_KEYS}
            recorded["max_new_tokens"] = (identity.get("search") or {}).get("max_new_tokens") if isinstance(identity.get("search"), dict) else None
            differs = [k for k in (*_REUSE_KEYS, "max_new_tokens") if recorded[k] != want[k]]
            if differs:
                raise RunMismatchError(f"{directory}: its answers cannot be reused as this ladder's vanilla samples "
                                       f"(differs in {', '.join(f'{k}: {recorded[k]!r} vs {want[k]!r}' for k in differs)})")
            seed = identity.get("sampling_seed") if config.temperature > 0 else None
        for record in load_records(Path(directory)):
            if record.vanilla_text is None or record.vanilla_correct is None or record.vanilla_tokens is None:
                continue
            vanilla = record.trace[0]
            found.setdefault(record.id, []).append(Sample(
                seed, vanilla.correct, vanilla.output_tokens, vanilla.prompt_tokens, vanilla.predicted,
                "length" if vanilla.output_tokens >= config.ladder.max_new_tokens else "stop", record.vanilla_text, str(directory)))
    return found


def build_ladder(
    config: LadderBuildConfig,
    backends: Sequence[tuple[int | None, Backend]] | Callable[[], Sequence[tuple[int | None, Backend]]],
    problems: Sequence[Problem] | None = None,
    *,
    on_record: Callable[[LadderRecord], None] | None = None,
    on_call: Callable[[str, int, int], None] | None = None,
    threads: int | None = None,
) -> Path:
    """Ask (or resume asking) this shard's problems at every rung; returns the ladder file.

    ``backends`` may be a function, called only when some problem is left to ask. Every backend call is
    logged to ``ladder-calls-STEM.jsonl`` beside it (rung, prompts, output tokens, longest answer, seconds,
    ``threads`` and the load average): the build's throughput, for bench/ladder_throughput.py."""
    if problems is None:
        problems = load_problems(config.dataset, limit=config.limit, seed=config.seed, split=config.split)
    mine = [p for p in problems if config.shard.holds(p.id)]
    config.out.mkdir(parents=True, exist_ok=True)
    meta = ladder_meta_path(config.out, config.shard)
    check_identity(meta, config.identity())
    reuse = reusable_vanilla(config.reuse, config) if config.reuse else {}
    write_meta(meta, {"identity": config.identity(), "ladder_format": LADDER_FORMAT, "limit": config.limit, "pool": config.pool,
                      "problems": len(mine), "reuse": [str(p) for p in config.reuse]})
    path = ladder_path(config.out, config.shard)
    run = {"model": config.model, "backend": config.backend, "prompt_version": PROMPT_VERSION,
           "temperature": config.temperature, "max_new_tokens": config.ladder.max_new_tokens}
    with JsonlWriter(path, ids=lambda p: (r.id for r in read_ladder(p))) as writer:
        todo = [p for p in mine if p.id not in writer.done]
        logger.info("%d problems in shard %s, %d already done", len(mine), config.shard.stem(), len(mine) - len(todo))
        if not todo:
            return path
        asked = backends() if callable(backends) else backends
        for _, backend in asked:
            check_engine(config.backend, backend)
        if [seed for seed, _ in asked] != list(config.seeds):
            raise ValueError(f"the backends' seeds {[s for s, _ in asked]} are not the run's {list(config.seeds)}")
        ladder = config.ladder if config.temperature > 0 else LadderConfig(config.ladder.rungs, 1, config.ladder.max_new_tokens)
        with open(config.out / f"ladder-calls-{config.shard.stem()}.jsonl", "a", encoding="utf-8") as calls:

            def on_batch(label: str, sample: int, generations: Sequence[Any], seconds: float) -> None:
                calls.write(json.dumps({"rung": label, "sample": sample, "prompts": len(generations),
                                        "output_tokens": sum(g.output_tokens for g in generations),
                                        "longest": max(g.output_tokens for g in generations), "seconds": round(seconds, 3),
                                        "threads": threads, "load": os.getloadavg()[0]}) + "\n")
                calls.flush()

            for problem, rungs in ask_ladder(todo, asked, ladder, pool=config.pool, batch=config.batch, together=config.together,
                                             reuse=reuse,
                                                on_call=on_call, on_batch=on_batch):
                record = LadderRecord(**problem_fields(problem), rungs=rungs, **run)
                writer.append(record.to_json())
                if on_record:
                    on_record(record)
    return path


# --- curve observations ------------------------------------------------------------------------


@dataclass(frozen=True)
class Observation:
    """One answer as a point of a question's success curve."""

    budget: int | None  # 0 direct, None vanilla
    correct: bool
    output_tokens: int


def observations(record: LadderRecord | BudgetRecord) -> list[Observation]:
    """Every answer a record holds as a curve point: all samples of a ladder record; a search record's
    rounds (its vanilla round at the top rung, each budget round at its budget)."""
    if isinstance(record, LadderRecord):
        return [Observation(r.budget, s.correct, s.output_tokens) for r in record.rungs for s in r.samples]
    return [Observation(step.budget, step.correct, step.output_tokens) for step in record.trace]


def summarize_ladder(records: Sequence[LadderRecord]) -> list[dict[str, Any]]:
    """Per rung: questions, samples, accuracy over samples and mean output tokens (the marginal curve)."""
    if not records:
        return []
    rows = []
    for budget in [r.budget for r in records[0].rungs]:
        samples = [s for rec in records for s in rec.rung(budget).samples]
        rows.append({"rung": rung_name(budget), "questions": len(records), "samples": len(samples),
                     "accuracy": sum(s.correct for s in samples) / len(samples),
                     "mean_output_tokens": sum(s.output_tokens for s in samples) / len(samples)})
    return rows
