"""How good and how costly a budget estimator is, on held-out examples with searched budgets.

Against the searched budget beta* of each question:

- ``mae``: mean |predicted - beta*|, in tokens.
- ``median_abs_log_ratio``: median |ln(predicted / beta*)|; 0.69 means off by a factor 2.
- ``spearman``: rank correlation (scipy); None when either side is constant, where it is undefined.
- ``in_range_rate``: share with beta* <= predicted <= 2 * beta*. This is our reading of the paper's
  "ideal budget range": the halving search only pins the smallest feasible budget within a factor
  of 2 (beta* feasible, beta*/2 not, or not tried), so any budget from beta* up to twice it is one
  the search could have returned, and none below beta* is known to work.
- ``under_budget_rate``: share with predicted < beta*, budgets that risk a wrong answer.

Cost per question: wall time of ``predict`` over all the questions at once, divided by their
number, and for estimators that call an LLM (``SpendsTokens``) the tokens they spent.
"""

from __future__ import annotations

import json
import logging
import math
import re
import statistics
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

from predictor import Estimator
from predictor.data import Example, fingerprint, id_unit
from reasoner.errors import ConfigError, InputError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Scores:
    """Accuracy of predicted budgets against searched ones (see the module docstring)."""

    n: int
    mae: float
    median_abs_log_ratio: float
    spearman: float | None
    in_range_rate: float
    under_budget_rate: float


@dataclass(frozen=True)
class EstimatorResult:
    """One estimator on the held-out examples."""

    name: str
    scores: Scores
    seconds_per_question: float  # wall time of predict, per question
    tokens_per_question: float  # LLM tokens (prompt + output) per question; 0 without an LLM
    fallbacks: int | None  # replies answered with the default budget; None when not applicable
    predictions: tuple[int, ...]  # in the order of Evaluation.ids
    # True: trained on exactly the given training part; False: on other examples, so its held-out
    # scores may be inflated by questions it saw; None: not trained, or no training part given.
    trained_on_split: bool | None = None


@dataclass(frozen=True)
class Evaluation:
    """Several estimators on the same held-out examples."""

    ids: tuple[str, ...]
    targets: tuple[int, ...]  # searched budgets
    results: tuple[EstimatorResult, ...]
    folds: int = 0  # > 0: pooled predictions of a k-fold cross-validation; 0: one held-out split
    infeasible_trained_on: int = 0  # infeasible examples (vanilla tokens as budget) among the training data


@dataclass(frozen=True)
class ReportFiles:
    markdown: Path
    json: Path
    plots: dict[str, Path]  # estimator name -> its predicted-vs-searched scatter


def in_range(predicted: float, budget: int) -> bool:
    """The paper's ideal range, as we read it: beta* <= predicted <= 2 * beta*."""
    return budget <= predicted <= 2 * budget


def score(predicted: Sequence[int], targets: Sequence[int]) -> Scores:
    """The metrics of ``predicted`` budgets against searched ``targets`` (both positive)."""
    if len(predicted) != len(targets):
        raise ValueError(f"{len(predicted)} predictions for {len(targets)} targets")
    if not targets:
        raise InputError("no examples to score")
    if min(predicted) < 1 or min(targets) < 1:
        raise ValueError("budgets must be positive")
    n = len(targets)
    return Scores(
        n=n,
        mae=statistics.fmean(abs(p - t) for p, t in zip(predicted, targets)),
        median_abs_log_ratio=statistics.median(abs(math.log(p / t)) for p, t in zip(predicted, targets)),
        spearman=_spearman(predicted, targets),
        in_range_rate=sum(map(in_range, predicted, targets)) / n,
        under_budget_rate=sum(p < t for p, t in zip(predicted, targets)) / n,
    )


def _spearman(a: Sequence[int], b: Sequence[int]) -> float | None:
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return None
    from scipy.stats import spearmanr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        value = float(spearmanr(a, b).statistic)
    return None if math.isnan(value) else value


def evaluate(
    estimators: Mapping[str, Estimator], examples: Sequence[Example], train: Sequence[Example] | None = None
) -> Evaluation:
    """Every estimator on the same held-out ``examples``, one ``predict`` call each, timed.

    With ``train`` (the training part of the same split), each trained estimator's
    ``training_fingerprint`` is checked against it: a mismatch is logged and reported.
    """
    if not examples:
        raise InputError("no held-out examples to evaluate on")
    questions = [e.question for e in examples]
    targets = [e.budget for e in examples]
    expected = None if train is None else fingerprint(train)
    results = []
    for name, estimator in estimators.items():
        trained = getattr(estimator, "training_fingerprint", None)
        on_split = None if expected is None or trained is None else trained == expected
        if on_split is False:
            logger.warning("%s was trained on other examples than the training part of this split: "
                           "its held-out scores may include questions it was trained on", name)
        tokens_before = getattr(estimator, "tokens_spent", None)
        fallbacks_before = getattr(estimator, "fallbacks", None)
        start = time.perf_counter()
        predicted = estimator.predict(questions)
        seconds = time.perf_counter() - start
        if len(predicted) != len(questions):
            raise RuntimeError(f"estimator {name} returned {len(predicted)} budgets for {len(questions)} questions")
        tokens = 0 if tokens_before is None else estimator.tokens_spent - tokens_before
        fallbacks = None if fallbacks_before is None else estimator.fallbacks - fallbacks_before
        result = EstimatorResult(name, score(predicted, targets), seconds / len(questions),
                                 tokens / len(questions), fallbacks, tuple(predicted), on_split)
        logger.info("%s: %s", name, result.scores)
        results.append(result)
    infeasible = 0 if train is None else sum(not e.feasible for e in train)
    return Evaluation(tuple(e.id for e in examples), tuple(targets), tuple(results), infeasible_trained_on=infeasible)


FOLDS_SALT = "tale-folds"


def fold_of(example_id: str, folds: int) -> int:
    """The cross-validation fold of an id, fixed by the id alone."""
    return min(int(id_unit(example_id, FOLDS_SALT) * folds), folds - 1)


def cross_validate(
    factories: Mapping[str, Callable[[Sequence[Example]], Estimator]], examples: Sequence[Example], folds: int,
    on_fold: Callable[[int, str], None] | None = None,
) -> Evaluation:
    """K-fold cross-validation by problem id: each estimator is built (trained) on the other folds
    with ``factories[name](train)`` and predicts the examples of each fold, so every example is
    held out once and all estimators are scored on the same pooled predictions. For small record
    sets, where one held-out split leaves too few examples to compare estimators on.

    Infeasible examples (``Example.feasible`` False, loaded with ``include_infeasible``) are trained
    on where they fall in the other folds but never scored: they have no searched budget."""
    if folds < 2:
        raise ConfigError(f"cross-validation needs at least 2 folds, got {folds}")
    parts = [[e for e in examples if fold_of(e.id, folds) == k] for k in range(folds)]
    scored = [[e for e in part if e.feasible] for part in parts]
    if sum(1 for part in scored if part) < 2:
        raise InputError(f"{len(examples)} examples fill fewer than 2 of {folds} folds with feasible ones; add records")
    ordered = [e for part in scored for e in part]
    results = []
    for name, factory in factories.items():
        predicted: list[int] = []
        seconds = tokens = 0.0
        fallbacks: int | None = None
        for k, held_out in enumerate(scored):
            if not held_out:
                continue
            if on_fold:
                on_fold(k, name)
            estimator = factory([e for j, part in enumerate(parts) if j != k for e in part])
            fold = evaluate({name: estimator}, held_out).results[0]
            predicted += fold.predictions
            seconds += fold.seconds_per_question * len(held_out)
            tokens += fold.tokens_per_question * len(held_out)
            if fold.fallbacks is not None:
                fallbacks = (fallbacks or 0) + fold.fallbacks
        results.append(EstimatorResult(name, score(predicted, [e.budget for e in ordered]), seconds / len(ordered),
                                       tokens / len(ordered), fallbacks, tuple(predicted), True))
    return Evaluation(tuple(e.id for e in ordered), tuple(e.budget for e in ordered), tuple(results), folds,
                      sum(not e.feasible for e in examples))


def _cell(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def markdown_table(evaluation: Evaluation) -> str:
    head = ("| estimator | n | MAE (tokens) | median abs log ratio | Spearman | in range [b*, 2b*] "
            "| under budget | s / question | tokens / question | fallbacks | trained on split |")
    lines = [head, "|" + "---|" * 11]
    for r in evaluation.results:
        s = r.scores
        lines.append(
            f"| {r.name} | {s.n} | {s.mae:.1f} | {_cell(s.median_abs_log_ratio)} | {_cell(s.spearman)} "
            f"| {s.in_range_rate:.1%} | {s.under_budget_rate:.1%} | {r.seconds_per_question:.2g} "
            f"| {r.tokens_per_question:.1f} | {'' if r.fallbacks is None else r.fallbacks} "
            f"| {_TRAINED[r.trained_on_split]} |"
        )
    return "\n".join(lines) + "\n"


_TRAINED = {True: "yes", False: "NO: other data", None: ""}


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name).strip("_") or "estimator"


def scatter_plot(result: EstimatorResult, targets: Sequence[int], path: Path) -> Path:
    """Predicted against searched budget on log axes, with the [b*, 2b*] band shaded."""
    from matplotlib.figure import Figure  # no pyplot: no global backend state, renders with Agg
    from matplotlib.ticker import LogLocator, NullFormatter, ScalarFormatter

    figure = Figure(figsize=(5, 5), dpi=100)
    axes = figure.add_subplot()
    low = min(min(targets), min(result.predictions)) / 1.5
    high = max(max(targets), max(result.predictions)) * 1.5
    axes.fill_between([low, high], [low, high], [2 * low, 2 * high], color="tab:green", alpha=0.15,
                      label="ideal range [b*, 2b*]")
    axes.plot([low, high], [low, high], color="gray", linewidth=0.8)
    axes.scatter(targets, result.predictions, s=10, alpha=0.6)
    axes.set(xscale="log", yscale="log", xlim=(low, high), ylim=(low, high),
             xlabel="searched budget b* (tokens)", ylabel="predicted budget (tokens)",
             title=f"{result.name}: {result.scores.in_range_rate:.0%} in range")
    for axis in (axes.xaxis, axes.yaxis):  # 10, 20, 50, 100, ... rather than crowded 2x10^1 labels
        axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        axis.set_major_formatter(ScalarFormatter())
        axis.set_minor_formatter(NullFormatter())
    axes.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(path)
    return path


def write_report(evaluation: Evaluation, out: Path) -> ReportFiles:
    """``report.md`` (the table), ``report.json`` (everything) and ``scatter-<name>.png`` per estimator."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    markdown = out / "report.md"
    how = f"{evaluation.folds}-fold cross-validation" if evaluation.folds else "one held-out split"
    if evaluation.infeasible_trained_on:
        how += f"; {evaluation.infeasible_trained_on} infeasible records trained on, with their vanilla tokens"
    markdown.write_text(f"# Budget estimators on {len(evaluation.ids)} held-out questions ({how})\n\n"
                        + markdown_table(evaluation))
    data = {"ids": list(evaluation.ids), "targets": list(evaluation.targets), "folds": evaluation.folds,
            "infeasible_trained_on": evaluation.infeasible_trained_on, "results": [asdict(r) for r in evaluation.results]}
    report = out / "report.json"
    report.write_text(json.dumps(data, indent=2) + "\n")
    plots: dict[str, Path] = {}
    used: set[str] = set()
    for result in evaluation.results:
        stem = _slug(result.name)
        while stem in used:
            stem += "_"
        used.add(stem)
        plots[result.name] = scatter_plot(result, evaluation.targets, out / f"scatter-{stem}.png")
    return ReportFiles(markdown, report, plots)
