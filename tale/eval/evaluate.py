"""Evaluate one method over one data set: accuracy, output tokens, estimation cost and dollars.

A configuration (``EvalConfig``) is a data set, a reasoner model and a method: ``direct``, ``vanilla``
(chain of thought) or ``budget`` (TALE-EP) with a budget source (``tale.eval.sources``). Each writes
one directory, ``OUT/runs/<name>/``:

- ``rows.jsonl``: one ``EvalRow`` per question, appended and synced as it is graded, so a killed run
  resumes where it stopped (finished ids are skipped). A rerun whose settings differ is refused.
- ``meta.json``: the settings that must match on resume (``identity``) and this run's problem ids.
- ``summary.json``: the ``Summary`` over those ids.

Tokens are the reasoner's own counts (its tokenizer or the server's usage). The estimation call is
not free: its prompt and output tokens and its time are kept per question and enter the totals and
the expense. Means are over all questions, correct or not.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from data_builder.records import JsonlWriter, Shard, write_meta
from data_builder.run_dir import check_identity
from data_builder.sources import Problem, load_problems
from reasoner.backends import MAX_NEW_TOKENS, Backend, check_engine
from reasoner.errors import ConfigError
from reasoner.prompts import PROMPT_VERSION, Method
from tale.eval.answer import answer_problems
from tale.eval.runs import META_FILE, ROWS_FILE, SUMMARY_FILE, EvalRow, data_spec, find_baseline, load_rows, read_meta, run_name
from tale.eval.sources import Assignment, BudgetSource, OracleBudget, build_source, check_source

logger = logging.getLogger(__name__)

METHODS: tuple[Method, ...] = ("direct", "vanilla", "budget")


@dataclass(frozen=True)
class Prices:
    """What tokens cost, in $ per million; input covers reasoner and estimator prompts, output both replies."""

    input_per_million: float
    output_per_million: float

    def __post_init__(self) -> None:
        if not (self.input_per_million >= 0 and self.output_per_million >= 0):
            raise ConfigError(f"prices must be >= 0, got {self.input_per_million}, {self.output_per_million}")

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        return (input_tokens * self.input_per_million + output_tokens * self.output_per_million) / 1e6

@dataclass(frozen=True)
class EvalConfig:
    """One configuration: a data set, a model, a method and (for ``budget``) a budget source."""

    dataset: str  # KIND[:PATH], as for load_problems
    out: Path  # the evaluation directory; this configuration writes OUT/runs/<run_name>/
    method: Method = "vanilla"
    budget_source: str | None = None  # method budget only: oracle:DIR, fixed:N, llm[:MODEL], bert:DIR, ...
    model: str = "default"  # the reasoner, as the backend names it: 'default', a path, a hub id, a served name
    backend: str = "hf"
    split: str = "test"  # for hub data sets
    limit: int | None = None  # the first N problems (after shuffling with seed)
    seed: int | None = None  # shuffle before limit; None keeps file order
    shard: str | None = None  # "I/N": the id-hash slice `tale build --shard` takes (after limit); None: all
    max_new_tokens: int = MAX_NEW_TOKENS  # per answer
    temperature: float = 0.0  # recorded: it changes answers, so a resume must match it
    sampling_seed: int = 0  # the backend's sampling seed; part of the identity only when sampling (temperature > 0)
    llm_default: int | None = None  # zero-shot estimator's budget for a reply with none (None: its config's)
    chunk: int = 8  # questions estimated and answered per call, and written before the next
    prices: Prices | None = None  # for the expense; None leaves it out

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"method must be one of {METHODS}, got {self.method!r}")
        if (self.method == "budget") != (self.budget_source is not None):
            raise ConfigError("method 'budget' needs a budget source, and only it takes one")
        if self.budget_source is not None:
            object.__setattr__(self, "budget_source", check_source(self.budget_source))
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"limit must be >= 1, got {self.limit}")
        if self.shard is not None:  # normalized, and 0/1 (everything) is no shard, so such runs keep their names
            shard = Shard.parse(str(self.shard))
            object.__setattr__(self, "shard", None if shard.count == 1 else str(shard))
        if self.max_new_tokens < 1 or self.chunk < 1:
            raise ConfigError(f"max_new_tokens and chunk must be >= 1, got {self.max_new_tokens}, {self.chunk}")

    def identity(self) -> dict[str, Any]:
        """What a resumed run must share with the rows already written (``limit`` may grow)."""
        return {"dataset": self.dataset, "split": self.split, "seed": self.seed, "model": self.model,
                "backend": self.backend, "method": self.method, "budget_source": self.budget_source,
                "max_new_tokens": self.max_new_tokens, "temperature": self.temperature,
                "llm_default": self.llm_default, "prompt_version": PROMPT_VERSION,
                **({"sampling_seed": self.sampling_seed} if self.temperature > 0 else {}),
                **({"shard": self.shard} if self.shard else {})}

    @property
    def label(self) -> str:
        return self.budget_source or self.method

    @property
    def data(self) -> str:
        """The data set spec, with the shard when the run takes one: what a report's columns group by."""
        return data_spec(self.dataset, self.shard)

    def problems(self) -> list[Problem]:
        """The configuration's problems: the first ``limit`` after shuffling with ``seed``, then its shard."""
        problems = load_problems(self.dataset, limit=self.limit, seed=self.seed, split=self.split)
        if self.shard is None:
            return list(problems)
        shard = Shard.parse(self.shard)
        return [p for p in problems if shard.holds(p.id)]

    @property
    def run_dir(self) -> Path:
        return self.out / "runs" / run_name(self.identity())

@dataclass(frozen=True)
class Summary:
    """A configuration's numbers; every mean is over all ``n`` questions."""

    n: int
    accuracy: float
    mean_output_tokens: float  # reasoner output per question
    mean_prompt_tokens: float  # reasoner input per question
    estimator_tokens: float  # estimation prompt + output per question
    estimator_seconds: float  # estimation wall time per question
    input_tokens: int  # reasoner + estimator prompts, all questions
    output_tokens: int  # reasoner + estimator outputs, all questions
    total_tokens: int  # input_tokens + output_tokens
    budgeted: int  # questions asked with a budget in the prompt
    budget_adherence: float | None  # share of budgeted questions with output_tokens <= budget
    no_budget_fallbacks: int  # budget method, asked with the vanilla prompt (oracle had no budget)
    default_budgets: int  # zero-shot replies without a budget, given the default
    wall_seconds: float  # reasoner + estimator time, summed over questions
    token_reduction: float | None = None  # 1 - mean output tokens / vanilla's, on the same questions
    total_token_reduction: float | None = None  # the same for total tokens (estimation included)
    expense: float | None = None  # $ for all n questions
    expense_per_sample: float | None = None  # $


def summarize(rows: Sequence[EvalRow], *, prices: Prices | None = None,
              baseline: Sequence[EvalRow] | None = None) -> Summary:
    """The numbers of ``rows``; ``baseline`` (vanilla rows) gives the reductions when it covers every id."""
    n = len(rows)
    if n == 0:
        return Summary(0, 0.0, 0.0, 0.0, 0.0, 0.0, 0, 0, 0, 0, None, 0, 0, 0.0)
    input_tokens = sum(r.prompt_tokens + r.estimator_prompt_tokens for r in rows)
    output_tokens = sum(r.output_tokens + r.estimator_output_tokens for r in rows)
    budgeted = [r for r in rows if r.budget is not None]
    reduction = total_reduction = None
    if baseline is not None:
        base = {r.id: r for r in baseline}
        if all(r.id in base for r in rows):
            same = [base[r.id] for r in rows]
            base_output = sum(r.output_tokens for r in same)
            base_total = sum(r.prompt_tokens + r.output_tokens + r.estimator_tokens for r in same)
            reduction = 1 - sum(r.output_tokens for r in rows) / base_output if base_output else None
            total_reduction = 1 - (input_tokens + output_tokens) / base_total if base_total else None
        else:
            logger.warning("the vanilla baseline lacks %d of %d questions: no token reduction",
                           sum(r.id not in base for r in rows), n)
    expense = None if prices is None else prices.cost(input_tokens, output_tokens)
    return Summary(
        n=n,
        accuracy=sum(r.correct for r in rows) / n,
        mean_output_tokens=sum(r.output_tokens for r in rows) / n,
        mean_prompt_tokens=sum(r.prompt_tokens for r in rows) / n,
        estimator_tokens=sum(r.estimator_tokens for r in rows) / n,
        estimator_seconds=sum(r.estimator_seconds for r in rows) / n,
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        budgeted=len(budgeted),
        budget_adherence=sum(r.output_tokens <= r.budget for r in budgeted) / len(budgeted) if budgeted else None,
        no_budget_fallbacks=sum(r.fallback == "no-budget" for r in rows),
        default_budgets=sum(r.fallback == "default-budget" for r in rows),
        wall_seconds=sum(r.seconds + r.estimator_seconds for r in rows),
        token_reduction=reduction,
        total_token_reduction=total_reduction,
        expense=expense,
        expense_per_sample=None if expense is None else expense / n,
    )


@dataclass(frozen=True)
class EvalResult:
    config: EvalConfig
    run_dir: Path
    rows: tuple[EvalRow, ...]  # this run's problems, in problem order
    summary: Summary
    questions: int  # problems the run asks (its meta's ids); rows holds fewer while it is unfinished

    @property
    def complete(self) -> bool:
        return len(self.rows) == self.questions


def evaluate(
    config: EvalConfig,
    backend: Backend,
    source: BudgetSource | None = None,
    *,
    problems: Sequence[Problem] | None = None,
    baseline: Path | None = None,
    on_row: Callable[[EvalRow], None] | None = None,
) -> EvalResult:
    """Run (or resume) one configuration and write its rows, meta and summary.

    ``source`` assigns the budgets of method ``budget``; without one it is built from the config with
    ``backend`` as the only model at hand. ``baseline`` is a vanilla run directory for the token
    reduction; without it a vanilla run of the same data set and model in ``config.out`` is used.
    """
    check_engine(config.backend, backend)
    if problems is None:
        problems = config.problems()
    if config.method == "budget" and source is None:
        assert config.budget_source is not None
        source = build_source(config.budget_source, reasoner=backend, backend_for=_only(backend, config.model),
                              llm_default=config.llm_default)
    if isinstance(source, OracleBudget) and source.models and config.model not in source.models:
        logger.warning("oracle budgets were searched with %s, the reasoner is %s", ", ".join(source.models), config.model)
    run_dir = config.run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    identity = config.identity()
    check_identity(run_dir / META_FILE, identity)
    write_meta(run_dir / META_FILE, {"identity": identity, "label": config.label, "limit": config.limit,
                                     "baseline": None if baseline is None else str(baseline),
                                     "ids": [p.id for p in problems]})
    with JsonlWriter(run_dir / ROWS_FILE) as writer:
        todo = [p for p in problems if p.id not in writer.done]
        logger.info("%s: %d questions, %d already done", run_dir.name, len(problems), len(problems) - len(todo))
        for start in range(0, len(todo), config.chunk):
            part = todo[start : start + config.chunk]
            for row in _answer(part, backend, config, source):
                writer.append(asdict(row))
                if on_row:
                    on_row(row)
    return collect(run_dir, prices=config.prices, config=config)


def _answer(part: Sequence[Problem], backend: Backend, config: EvalConfig, source: BudgetSource | None) -> list[EvalRow]:
    if config.method == "budget":
        assert source is not None
        assigned = source.assign(part)
        budgets: Sequence[int | None] | None = [a.budget for a in assigned]
    else:
        assigned, budgets = [Assignment(None)] * len(part), None
    answers = answer_problems(part, backend, method=config.method, budgets=budgets,
                              max_new_tokens=config.max_new_tokens, chunk=len(part))
    return [
        EvalRow(id=a.id, correct=a.correct, output_tokens=a.output_tokens, prompt_tokens=a.prompt_tokens,
                method=a.method, budget=a.budget, estimator_prompt_tokens=cost.prompt_tokens,
                estimator_output_tokens=cost.output_tokens, estimator_seconds=cost.seconds, seconds=a.seconds,
                fallback=cost.fallback, predicted=a.predicted, gold=a.gold, kind=p.kind, language=p.language,
                finish_reason=a.finish_reason, question=a.question, text=a.text)
        for p, cost, a in zip(part, assigned, answers)
    ]


def _only(backend: Backend, model: str) -> Callable[[str], Backend]:
    def backend_for(name: str) -> Backend:
        if name not in (model, "self"):
            raise ValueError(f"no backend for estimator model {name!r}: pass evaluate() a budget source")
        return backend

    return backend_for


def collect(run_dir: Path, *, prices: Prices | None = None, config: EvalConfig | None = None) -> EvalResult:
    """A run directory's rows for its current problems, summarized (with its baseline), and its summary.json
    rewritten; ``config`` defaults to one rebuilt from the directory's meta."""
    meta = read_meta(run_dir)
    if config is None:
        fields_ = {k: v for k, v in meta["identity"].items() if k != "prompt_version"}
        config = EvalConfig(out=Path(run_dir).parent.parent, limit=meta.get("limit"), prices=prices, **fields_)
    by_id = {r.id: r for r in load_rows(run_dir)}
    rows = tuple(by_id[i] for i in meta["ids"] if i in by_id)
    base_dir = Path(meta["baseline"]) if meta.get("baseline") else find_baseline(config.out, meta["identity"])
    baseline = load_rows(base_dir) if base_dir is not None else None
    result = EvalResult(config, Path(run_dir), rows, summarize(rows, prices=prices, baseline=baseline), len(meta["ids"]))
    report = {"run": Path(run_dir).name, "label": config.label, "config": meta["identity"],
              "questions": result.questions, "complete": result.complete,
              "baseline": None if base_dir is None else str(base_dir),
              "prices": None if prices is None else asdict(prices), "summary": asdict(result.summary)}
    write_meta(Path(run_dir) / SUMMARY_FILE, report)
    return result
