"""Problem sources: one ``Problem`` record and a loader per data set.

``load_problems("KIND[:PATH]")`` is the entry point; the per-format loaders take a path (or a hub
id) and return every problem in file order. Blank lines are ignored; any other line that cannot
become a problem raises ``BadRowError`` (file, 1-based line, field; see ``data_builder.rows``),
unless ``skip_bad=True``: then it is logged, skipped and kept in the result's ``skipped`` tuple.

A question repeated within one load is kept every time (published sizes count repeats: GSM8K-Zero
has 24, MathBench arithmetic 2), with a warning; repeats get the ids ``<problem_id>-2``, ``-3``, ...
"""

from __future__ import annotations

import hashlib
import logging
import random
import re
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any

from data_builder.rows import (
    BadRowError,
    FieldError,
    Row,
    answer_text,
    number_text,
    option_texts,
    parse_rows,
    question_text,
    read_jsonl,
    required,
    short,
)
from reasoner.errors import ConfigError, InputError, MissingInputError
from reasoner.prompts import Kind, Language

__all__ = [
    "GENERATED_SIZE",
    "GSM8K_HUB_ID",
    "BadRowError",
    "Problem",
    "Problems",
    "load_generated",
    "load_gsm8k",
    "load_gsm8k_zero",
    "load_jsonl",
    "load_mathbench",
    "load_problems",
    "problem_id",
]

logger = logging.getLogger(__name__)

GSM8K_HUB_ID = "openai/gsm8k"
GENERATED_SIZE = 100  # problems generated when no limit is given
_GSM_SYMBOLIC_SUFFIX = " Give the result as your final answer. Do not include units."
_HUB_ID = re.compile(r"[\w.-]+/[\w.-]+")
_MATHBENCH_FILE = re.compile(r"(cloze|single_choice)_(en|cn)\.jsonl")
_MATHBENCH_NAMES = "cloze_en.jsonl, single_choice_cn.jsonl, ..."


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
    solution: str = ""  # the data set's worked solution, where it has one (GSM8K), without its answer line
    equations: tuple[str, ...] = ()  # the worked solution's calculator annotations, in order ("48/2=24")


def problem_id(source: str, question: str) -> str:
    digest = hashlib.sha256(f"{source}\n{question.strip()}".encode()).hexdigest()
    return f"{source}-{digest[:16]}"


class Problems(list[Problem]):
    """A loader's result: the problems, plus the bad rows it skipped (``skip_bad=True`` only)."""

    def __init__(self, problems: Iterable[Problem] = (), skipped: Sequence[BadRowError] = ()):
        super().__init__(problems)
        self.skipped = tuple(skipped)  # len(result.skipped) is the skipped-row count


RowParser = Callable[[Row], Problem]


# --- the entry point ---------------------------------------------------------------------------


SOURCE_KINDS = ("arithmetic", "generated", "gsm8k", "gsm8k_zero", "gsm_symbolic", "jsonl", "mathbench")
GENERATED_KINDS = ("arithmetic", "generated", "gsm_symbolic")  # made by reasoning-gym from a seed, no file
PATHLESS_KINDS = (*GENERATED_KINDS, "gsm8k")  # gsm8k alone: the hub's openai/gsm8k


def check_spec(spec: str) -> str:
    """``spec`` if it names a problem source, ``KIND[:PATH]``, else ``ValueError`` (nothing is read)."""
    kind, _, target = spec.partition(":")
    kind = kind.strip().lower()
    if kind not in SOURCE_KINDS:
        raise ConfigError(f"unknown problem source {kind!r} in {spec!r}; expected one of: {', '.join(SOURCE_KINDS)}")
    if kind not in PATHLESS_KINDS and not target.strip():
        raise ConfigError(f"{kind} needs a path: '{kind}:PATH'")
    return spec


def load_problems(
    spec: str,
    *,
    limit: int | None = None,
    seed: int | None = None,
    split: str = "test",
    skip_bad: bool = False,
) -> Problems:
    """Load the problems named by ``spec``, ``KIND[:PATH]``.

    Kinds: ``gsm8k[:FILE|DIR|HUB_ID]`` (no path: the hub's ``openai/gsm8k``; a directory:
    its ``{split}.jsonl``), ``gsm8k_zero:FILE``, ``mathbench:FILE|LEVEL_DIR|ROOT_DIR``,
    ``jsonl:FILE`` (``question``/``answer`` fields) and ``generated`` or ``gsm_symbolic``.
    With ``seed`` the problems are shuffled by ``random.Random(seed)`` before ``limit`` keeps the
    first ones, so a limit takes a reproducible random subset; without it, file order is kept.
    Generated problems are ``limit`` (default ``GENERATED_SIZE``) fresh ones from generator seed
    ``seed`` (default 0), in generation order. ``split`` applies to GSM8K only.
    """
    if limit is not None and (isinstance(limit, bool) or limit < 1):
        raise ConfigError(f"limit must be a positive integer or None, got {limit!r}")
    kind, _, target = spec.partition(":")
    kind, target = kind.strip().lower(), target.strip()

    def need_path() -> str:
        if not target:
            raise ConfigError(f"{kind} needs a path: '{kind}:PATH'")
        return target

    def generated() -> Problems:
        return load_generated(limit or GENERATED_SIZE, seed=0 if seed is None else seed)

    def arithmetic() -> Problems:
        return load_arithmetic(limit or GENERATED_SIZE, seed=0 if seed is None else seed)

    loaders: dict[str, Callable[[], Problems]] = {
        "gsm8k": lambda: load_gsm8k(target or GSM8K_HUB_ID, split=split, skip_bad=skip_bad),
        "gsm8k_zero": lambda: load_gsm8k_zero(need_path(), skip_bad=skip_bad),
        "mathbench": lambda: load_mathbench(need_path(), skip_bad=skip_bad),
        "jsonl": lambda: load_jsonl(need_path(), skip_bad=skip_bad),
        "generated": generated,
        "gsm_symbolic": generated,
        "arithmetic": arithmetic,
    }
    if kind not in loaders:
        known = ", ".join(sorted(loaders))
        raise ConfigError(f"unknown problem source {kind!r} in {spec!r}; expected one of: {known}")
    problems = loaders[kind]()
    if kind in GENERATED_KINDS:
        return problems
    picked = list(problems)
    if not picked:
        skipped = f" ({len(problems.skipped)} bad rows skipped)" if problems.skipped else ""
        raise InputError(f"{spec}: no problems in it{skipped}")
    if seed is not None:
        random.Random(seed).shuffle(picked)
    return Problems(picked[:limit], problems.skipped)


# --- per-format loaders ------------------------------------------------------------------------


def load_gsm8k(
    source: str | Path, *, split: str = "test", config: str = "main", skip_bad: bool = False
) -> Problems:
    """GSM8K from a JSONL file, a directory holding ``{split}.jsonl``, or a hub dataset id.

    Gold is the text after the last ``####`` of the worked answer, thousands separators removed.
    A hub id (``owner/name``, not a local path) is read with ``datasets.load_dataset``.
    """
    path, name = Path(source), str(source)
    if not path.exists() and _HUB_ID.fullmatch(name) and not name.endswith((".jsonl", ".json")):
        where = f"{name}[{split}]"
        rows = _hub_rows(name, config, split)
        return _finish(*parse_rows(rows, where, _gsm8k_row, skip_bad), where)
    if path.is_dir():
        path = path / f"{split}.jsonl"
    return _load_file(path, _gsm8k_row, "gsm8k", skip_bad)


def load_gsm8k_zero(path: str | Path, *, skip_bad: bool = False) -> Problems:
    """GSM8K-Zero: numeric answers (``48.0``), kept exactly as text (``"48"``, ``"1.5"``)."""
    return _load_file(Path(path), _gsm8k_zero_row, "gsm8k_zero", skip_bad)


def load_mathbench(path: str | Path, *, skip_bad: bool = False) -> Problems:
    """MathBench ``cloze_{en,cn}.jsonl`` and ``single_choice_{en,cn}.jsonl`` files.

    ``path`` is one such file, a level directory (``mathbench/middle``) or the root holding the
    levels: every matching file below it is loaded, in sorted path order. Kind and language come
    from the file name (``_cn`` is Chinese, ``zh``).
    """
    path = Path(path)
    if not path.exists():
        raise MissingInputError(f"mathbench path not found: {path}")
    if path.is_file():
        files = [path]
    else:
        files = sorted(p for p in path.rglob("*.jsonl") if _MATHBENCH_FILE.fullmatch(p.name))
    if not files:
        raise MissingInputError(f"no MathBench files ({_MATHBENCH_NAMES}) under {path}")
    problems: list[Problem] = []
    skipped: list[BadRowError] = []
    for file in files:
        match = _MATHBENCH_FILE.fullmatch(file.name)
        if match is None:
            raise InputError(f"{file}: not a MathBench file name; expected {_MATHBENCH_NAMES}")
        kind: Kind = "choice" if match[1] == "single_choice" else "cloze"
        language: Language = "zh" if match[2] == "cn" else "en"
        parse = partial(_mathbench_row, kind=kind, language=language)
        part, bad = parse_rows(read_jsonl(file), str(file), parse, skip_bad)
        problems += part
        skipped += bad
    return _finish(problems, skipped, str(path))


def load_jsonl(
    path: str | Path,
    *,
    question_field: str = "question",
    answer_field: str = "answer",
    options_field: str | None = None,
    source: str = "jsonl",
    language: Language = "en",
    skip_bad: bool = False,
) -> Problems:
    """Any JSONL with a question and an answer per row (a string or a number).

    With ``options_field`` every row is a single-choice question: its options (a list) are
    required and its answer is a letter within them; without it every row is cloze.
    """

    def parse(row: Row) -> Problem:
        options = option_texts(row, options_field) if options_field else ()
        question = question_text(row, question_field)
        gold = answer_text(row, answer_field, options)
        kind: Kind = "choice" if options_field else "cloze"
        return _problem(source, question, gold, kind=kind, options=options, language=language)

    return _load_file(Path(path), parse, source, skip_bad)


# The main job's default problems: short arithmetic that the embedded 0.5B reasoner solves about 40% of the
# time (38% and 46% of 24 each, vanilla CoT), with reasoning from about 50 to 380 tokens.
ARITHMETIC_GENERATORS = (
    ("basic_arithmetic", {"min_terms": 2, "max_terms": 4, "min_digits": 1, "max_digits": 2}),
    ("chain_sum", {"min_terms": 2, "max_terms": 5, "min_digits": 1, "max_digits": 2}),
)


def load_arithmetic(size: int = GENERATED_SIZE, *, seed: int = 0) -> Problems:
    """Alternately reasoning-gym's ``basic_arithmetic`` and ``chain_sum`` with small numbers (the
    ``ARITHMETIC_GENERATORS`` settings): same seed, same problems. As with ``load_generated``, problem
    ``i`` of a generator is drawn from ``seed + i``, so sets whose seeds are less than ``size`` apart overlap."""
    import reasoning_gym  # heavy: imports every generator

    per = [list(reasoning_gym.create_dataset(name, size=(size + 1 - k) // 2 or 1, seed=seed, **options))
           for k, (name, options) in enumerate(ARITHMETIC_GENERATORS)]
    problems = []
    for i in range(size):
        name = ARITHMETIC_GENERATORS[i % 2][0]
        item = per[i % 2][i // 2]
        problems.append(_problem(name, item["question"], str(item["answer"]).strip()))
    return _finish(problems, (), f"arithmetic(size={size}, seed={seed})")


def load_generated(size: int = GENERATED_SIZE, *, seed: int = 0) -> Problems:
    """GSM-style problems from reasoning_gym's ``gsm_symbolic`` generator: same seed, same problems.

    Problem ``i`` is drawn with ``Random(seed + i)``, so two sets whose seeds are less than
    ``size`` apart share draws and can share problems; for disjoint sets, split one set (or keep
    seeds ``size`` apart, and still check: rare identical problems also arise by chance).
    """
    import reasoning_gym  # heavy: imports every generator

    dataset = reasoning_gym.create_dataset("gsm_symbolic", size=size, seed=seed)
    problems = []
    for item in dataset:
        # our prompts state the answer form; drop the generator's own instruction
        question = item["question"].removesuffix(_GSM_SYMBOLIC_SUFFIX)
        problems.append(_problem("gsm_symbolic", question, str(item["answer"]).strip()))
    return _finish(problems, (), f"gsm_symbolic(size={size}, seed={seed})")


# --- row parsers ---------------------------------------------------------------------------------


def _gsm8k_row(row: Row) -> Problem:
    answer = required(row, "answer")
    if not isinstance(answer, str) or "####" not in answer:
        reason = f"expected a worked answer ending in '#### <number>', got {short(answer)}"
        raise FieldError("answer", reason)
    worked, gold = answer.rsplit("####", 1)
    gold = gold.strip().replace(",", "")
    if not gold:
        raise FieldError("answer", "nothing after '####'")
    return _problem("gsm8k", question_text(row, "question"), gold, solution=gsm8k_solution(worked),
                    equations=gsm8k_equations(worked))


_CALCULATOR = re.compile(r"<<([^<>]*)>>")


def gsm8k_solution(worked: str) -> str:
    """A GSM8K worked answer as prose: the calculator annotations (``<<48/2=24>>``) removed."""
    return _CALCULATOR.sub("", worked).strip()


def gsm8k_equations(worked: str) -> tuple[str, ...]:
    """A GSM8K worked answer's calculator annotations, in order: ``("48/2=24", "48+24=72")``."""
    return tuple(e.strip() for e in _CALCULATOR.findall(worked) if e.strip())


def _gsm8k_zero_row(row: Row) -> Problem:
    value = required(row, "answer")
    gold = number_text(value)
    if gold is None:
        raise FieldError("answer", f"expected a number, got {short(value)}")
    return _problem("gsm8k_zero", question_text(row, "question"), gold)


def _mathbench_row(row: Row, *, kind: Kind, language: Language) -> Problem:
    options = option_texts(row, "options") if kind == "choice" else ()
    gold = answer_text(row, "answer", options)
    question = question_text(row, "question")
    return _problem("mathbench", question, gold, kind=kind, options=options, language=language)


def _problem(source: str, question: str, gold: str, **fields: Any) -> Problem:
    return Problem(problem_id(source, question), question, gold, source=source, **fields)


# --- reading -------------------------------------------------------------------------------------


def _load_file(path: Path, parse: RowParser, kind: str, skip_bad: bool) -> Problems:
    if not path.is_file():
        raise MissingInputError(f"{kind} file not found: {path}")
    return _finish(*parse_rows(read_jsonl(path), str(path), parse, skip_bad), str(path))


def _hub_rows(hub_id: str, config: str, split: str) -> Iterator[tuple[int, Any]]:
    import datasets  # heavy, and only needed for the hub

    try:
        rows = datasets.load_dataset(hub_id, config, split=split)
    except Exception as err:  # offline, unknown id, bad split: datasets raises many kinds
        raise RuntimeError(
            f"could not load {hub_id!r} (config {config!r}, split {split!r}) from the Hugging "
            f"Face Hub: {type(err).__name__}: {err}. There is no local file of that name either; "
            "without network access pass a JSONL file, e.g. 'gsm8k:path/to/test.jsonl'."
        ) from err
    yield from enumerate(rows, start=1)


def _finish(problems: Iterable[Problem], skipped: Sequence[BadRowError], where: str) -> Problems:
    """Close a load: report skipped rows; give each repeated question its own id (``<id>-2``)."""
    if skipped:
        logger.warning("%s: skipped %d bad row(s)", where, len(skipped))
    seen: Counter[str] = Counter()
    unique = []
    for problem in problems:
        seen[problem.id] += 1
        count = seen[problem.id]
        unique.append(problem if count == 1 else replace(problem, id=f"{problem.id}-{count}"))
    repeats = sum(count - 1 for count in seen.values())
    if repeats:
        logger.warning("%s: %d repeated question(s) kept, ids suffixed <id>-2, ...", where, repeats)
    return Problems(unique, skipped)
