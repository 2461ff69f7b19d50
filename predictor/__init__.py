"""Budget estimators: a question in, a token budget out.

``Estimator`` is the one seam: the fine-tuned BERT regressor (``predictor.bert``), the paper's
zero-shot LLM estimator (``predictor.llm``), the baselines (``predictor.baselines``) and the ONNX
runtime estimator (``export.runtime``) all satisfy it. Trainable estimators are built by a ``fit``
classmethod, written by ``save(directory)`` and read back by a ``load(directory)`` classmethod; every
saved directory holds a ``tale_predictor.json`` whose ``estimator`` key names its kind, so
``load_estimator(directory)`` opens any of them.

This module imports nothing heavy: the torch-free export runtime and ``tale --help`` import it.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from reasoner.errors import ConfigError, InputError, MissingInputError

META_FILE = "tale_predictor.json"  # in every saved estimator directory
# A point estimate b of the searched budget b* lies in the range [b*, 2b*] when b* lies in [b/2, b];
# for an error symmetric on a log scale that is most likely when the estimate is aimed at the
# range's log-centre, sqrt(2) times the point estimate (``Aimed``; ``SPEC@1.41`` on the command line).
RANGE_CENTRE = math.sqrt(2)


class Estimator(Protocol):
    """What every estimator offers, and all that its callers use: unrounded budgets, rounded and clamped budgets,
    and the range they are clamped into. (The zero-shot LLM estimator also reports what each estimate cost:
    ``SpendsTokens``.)"""

    budget_range: BudgetRange  # every predicted budget is clamped into it

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        """Budgets in tokens before rounding and clamping (what scaling and calibration multiply)."""
        ...

    def predict(self, questions: Sequence[str]) -> list[int]:
        """Budgets: ``predict_float`` rounded and clamped into ``budget_range``."""
        ...


class TrainableEstimator(Estimator, Protocol):
    @property
    def training_fingerprint(self) -> str:
        """``predictor.data.fingerprint`` of the examples it was fitted on."""
        ...

    def save(self, directory: Path) -> None: ...


class SpendsTokens(Protocol):
    """An estimator that pays for its estimates in LLM tokens (the zero-shot one)."""

    tokens_spent: int  # prompt + output tokens over every call so far
    fallbacks: int  # replies without a usable budget, answered with the default instead


@dataclass(frozen=True)
class BudgetRange:
    """The budgets an estimator may return; every prediction is clamped into it.

    8 is about the shortest answer that still states a result; below it a budget-aware prompt
    asks for nothing useful. 1024 is above the vanilla chain of thought of every data set in the
    paper (the longest mean is ~676 tokens), so it only catches runaway predictions.
    """

    min: int = 8  # smallest budget returned, in output tokens
    max: int = 1024  # largest budget returned, in output tokens

    def __post_init__(self) -> None:
        for name in ("min", "max"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int):
                raise ConfigError(f"budget range {name} must be an integer, got {value!r}")
        if not 1 <= self.min <= self.max:
            raise ConfigError(f"budget range must satisfy 1 <= min <= max, got [{self.min}, {self.max}]")

    def clamp(self, value: float) -> int:
        """``value`` rounded to the nearest integer (half to even) and clamped; NaN gives ``min``."""
        if math.isnan(value):
            return self.min
        if value >= self.max:  # also catches inf and values too large to round
            return self.max
        return max(self.min, min(self.max, round(value)))


class Scaled:
    """Satisfies ``Estimator``: another estimator's unrounded budgets (``predict_float`` where it has one) times
    ``factor``, rounded and clamped into the wrapped estimator's budget range. The one wrapper behind both suffixes
    of an estimator's name: ``@FACTOR`` (``Aimed``) and ``%ALPHA`` (``predictor.calibrate.Calibrated``, whose factor
    is the calibration's exp(q) at risk ALPHA)."""

    def __init__(self, estimator: Estimator, factor: float, budget_range: BudgetRange | None = None, *, why: str = "aim") -> None:
        if not (math.isfinite(factor) and factor > 0):
            raise ConfigError(f"an aim factor must be a positive number, got {factor!r}")
        if callable(getattr(estimator, "estimate", None)):  # the LLM estimator: its costs would go uncounted
            raise TypeError(f"{type(estimator).__name__} reports what each estimate costs (estimate()); a wrapper "
                            f"would hide it, so {why} only estimators without one")
        self.estimator = estimator
        self.factor = factor
        self.budget_range = budget_range or estimator.budget_range

    @property
    def training_fingerprint(self) -> str | None:
        """The wrapped estimator's, where it was trained (so comparisons can check the split)."""
        return getattr(self.estimator, "training_fingerprint", None)

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        return [b * self.factor for b in self.estimator.predict_float(list(questions))]

    def predict(self, questions: Sequence[str]) -> list[int]:
        return [self.budget_range.clamp(b) for b in self.predict_float(questions)]


def Aimed(estimator: Estimator, factor: float, budget_range: BudgetRange | None = None) -> Scaled:  # noqa: N802  (reads as a type)
    """``estimator``'s budgets times ``factor`` (``SPEC@FACTOR``). Trained estimators predict the centre of the
    searched budgets' spread, so about half of their budgets fall below the budget the question needs; ``factor``
    trades tokens for slack, the same for every estimator it wraps."""
    return Scaled(estimator, factor, budget_range)


def estimator_kind(directory: Path) -> str | None:
    """The ``estimator`` key of a saved estimator directory's meta file (``bert-regressor``, ``tfidf-ridge``,
    ``tfidf-linear``, ``constant``, ``reasoner-probe``, ``curves-*``); None without a meta file. The one place that
    tells which kind a directory is (``export.runtime.directory_kind`` adds ONNX exports)."""
    meta = Path(directory) / META_FILE
    if not meta.is_file():
        return None
    try:
        kind = json.loads(meta.read_text()).get("estimator")
    except (json.JSONDecodeError, AttributeError):
        raise InputError(f"{meta}: not a JSON object") from None
    return kind if isinstance(kind, str) else None


def load_estimator(directory: Path) -> TrainableEstimator:
    """Any saved estimator directory (BERT regressor, TF-IDF ridge or its linear export, constant, reasoner probe), by its meta file."""
    directory = Path(directory)
    meta = directory / META_FILE
    kind = estimator_kind(directory)
    if kind is None:
        raise MissingInputError(f"{directory} is not a saved estimator: no {META_FILE}")
    if kind == "bert-regressor":
        from predictor.bert import BertRegressor

        return BertRegressor.load(directory)
    if kind == "tfidf-ridge":
        from predictor.baselines import TfidfRidgeEstimator

        return TfidfRidgeEstimator.load(directory)
    if kind == "constant":
        from predictor.baselines import ConstantEstimator

        return ConstantEstimator.load(directory)
    if kind == "tfidf-linear":  # tale export of tfidf: its numbers, read without scikit-learn
        from predictor.linear import LinearEstimator

        return LinearEstimator.load(directory)
    if kind == "reasoner-probe":
        from predictor.probe import ProbeEstimator

        return ProbeEstimator.load(directory)
    raise InputError(f"{meta}: unknown estimator kind {kind!r}")
