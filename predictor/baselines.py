"""Baselines a learned predictor has to beat: one constant budget, and TF-IDF + ridge.

``ConstantEstimator`` answers every question with the median training budget; it saves as JSON.
``TfidfRidgeEstimator`` is a scikit-learn ``Pipeline`` (TF-IDF of the question, plus its log word
count, into ``Ridge``) fitted on the natural-log budget; it saves with joblib, which is a pickle:
loading one runs code from the file, so load only directories you made or trust.
"""

from __future__ import annotations

import json
import logging
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from predictor import META_FILE, BudgetRange
from predictor.data import Example, fingerprint
from predictor.target import as_json
from reasoner.errors import ConfigError, InputError

logger = logging.getLogger(__name__)

PIPELINE_FILE = "pipeline.joblib"


def _write_meta(directory: Path, meta: dict[str, Any]) -> None:
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / META_FILE).write_text(json.dumps(meta, indent=2) + "\n")


def _read_meta(directory: Path, kind: str) -> dict[str, Any]:
    path = Path(directory) / META_FILE
    meta = json.loads(path.read_text())
    if meta.get("estimator") != kind:
        raise InputError(f"{path}: expected a {kind} estimator, got {meta.get('estimator')!r}")
    return meta


class ConstantEstimator:
    """Satisfies ``Estimator``: the same budget for every question."""

    def __init__(self, budget: int, *, n_train: int = 0, training_fingerprint: str = "") -> None:
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ConfigError(f"budget must be a positive integer, got {budget!r}")
        self.budget = budget
        self.n_train = n_train
        self.training_fingerprint = training_fingerprint

    @classmethod
    def fit(cls, examples: Sequence[Example], budget_range: BudgetRange = BudgetRange()) -> ConstantEstimator:
        """The median training budget (halves rounded to even), clamped into ``budget_range``."""
        if not examples:
            raise InputError("no training examples")
        median = statistics.median(e.budget for e in examples)
        return cls(budget_range.clamp(median), n_train=len(examples), training_fingerprint=fingerprint(examples))

    @property
    def budget_range(self) -> BudgetRange:
        return BudgetRange(min(BudgetRange().min, self.budget), max(BudgetRange().max, self.budget))

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        return [float(self.budget)] * len(questions)

    def predict(self, questions: Sequence[str]) -> list[int]:
        return [self.budget] * len(questions)

    def save(self, directory: Path) -> None:
        _write_meta(directory, {"estimator": "constant", "statistic": "median", "budget": self.budget,
                                "n_train": self.n_train, "training_fingerprint": self.training_fingerprint})

    @classmethod
    def load(cls, directory: Path) -> ConstantEstimator:
        meta = _read_meta(directory, "constant")
        return cls(meta["budget"], n_train=meta["n_train"], training_fingerprint=meta["training_fingerprint"])


@dataclass(frozen=True)
class TfidfRidgeConfig:
    """Settings of the TF-IDF + ridge baseline."""

    alpha: float = 1.0  # ridge L2 strength
    ngram_max: int = 2  # word n-grams of 1..ngram_max words
    min_df: int = 1  # drop terms found in fewer training questions than this
    length_feature: bool = True  # add ln(1 + words): TF-IDF rows have unit norm, so are blind to length
    budget_range: BudgetRange = field(default_factory=BudgetRange)  # predictions are clamped into it

    def __post_init__(self) -> None:
        if not self.alpha > 0:
            raise ConfigError(f"alpha must be > 0, got {self.alpha}")
        if self.ngram_max < 1 or self.min_df < 1:
            raise ConfigError(f"ngram_max and min_df must be >= 1, got {self.ngram_max}, {self.min_df}")


def log_word_count(questions: Sequence[str]) -> Any:
    """One column, ln(1 + words); module level so the pickled pipeline finds it by name."""
    import numpy as np

    return np.array([[math.log1p(len(q.split()))] for q in questions])


class TfidfRidgeEstimator:
    """Satisfies ``Estimator``: a ridge regression of the log budget on the question's TF-IDF."""

    def __init__(self, pipeline: Any, config: TfidfRidgeConfig, *, n_train: int = 0, training_fingerprint: str = "") -> None:
        self.pipeline = pipeline
        self.config = config
        self.n_train = n_train
        self.training_fingerprint = training_fingerprint

    @classmethod
    def fit(cls, examples: Sequence[Example], config: TfidfRidgeConfig = TfidfRidgeConfig()) -> TfidfRidgeEstimator:
        from sklearn.feature_extraction.text import TfidfVectorizer
        from sklearn.linear_model import Ridge
        from sklearn.pipeline import FeatureUnion, Pipeline
        from sklearn.preprocessing import FunctionTransformer

        if not examples:
            raise InputError("no training examples")
        tfidf = TfidfVectorizer(ngram_range=(1, config.ngram_max), min_df=config.min_df, sublinear_tf=True)
        features: Any = tfidf
        if config.length_feature:
            features = FeatureUnion([("tfidf", tfidf), ("length", FunctionTransformer(log_word_count))])
        pipeline = Pipeline([("features", features), ("ridge", Ridge(alpha=config.alpha))])
        pipeline.fit([e.question for e in examples], [math.log(e.budget) for e in examples])
        return cls(pipeline, config, n_train=len(examples), training_fingerprint=fingerprint(examples))

    def predict_float(self, questions: Sequence[str]) -> list[float]:
        """Budgets in tokens before rounding and clamping."""
        if not questions:
            return []
        return [math.exp(min(v, 700.0)) for v in self.pipeline.predict(list(questions))]

    @property
    def budget_range(self) -> BudgetRange:
        return self.config.budget_range

    def predict(self, questions: Sequence[str]) -> list[int]:
        return [self.budget_range.clamp(v) for v in self.predict_float(questions)]

    def save(self, directory: Path) -> None:
        import joblib
        import sklearn

        _write_meta(directory, {
            "estimator": "tfidf-ridge", "target_transform": "log", "pipeline": PIPELINE_FILE,
            "clamp_min": self.config.budget_range.min, "clamp_max": self.config.budget_range.max,
            "config": as_json(self.config), "n_train": self.n_train,
            "training_fingerprint": self.training_fingerprint, "sklearn": sklearn.__version__,
        })
        joblib.dump(self.pipeline, Path(directory) / PIPELINE_FILE)

    @classmethod
    def load(cls, directory: Path) -> TfidfRidgeEstimator:
        """Unpickles ``pipeline.joblib``: only for directories you trust."""
        import joblib
        import sklearn

        meta = _read_meta(directory, "tfidf-ridge")
        if meta["sklearn"] != sklearn.__version__:
            logger.warning("%s was saved with scikit-learn %s, this is %s", directory, meta["sklearn"], sklearn.__version__)
        c = meta["config"]
        config = TfidfRidgeConfig(alpha=c["alpha"], ngram_max=c["ngram_max"], min_df=c["min_df"],
                                  length_feature=c["length_feature"],
                                  budget_range=BudgetRange(meta["clamp_min"], meta["clamp_max"]))
        pipeline = joblib.load(Path(directory) / meta["pipeline"])
        return cls(pipeline, config, n_train=meta["n_train"], training_fingerprint=meta["training_fingerprint"])
